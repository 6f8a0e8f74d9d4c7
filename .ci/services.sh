# Sourced by .ci scripts: installs (if missing), starts and stops a throwaway
# PostgreSQL and Redis on loopback. Exports TEST_DATABASE_URL, TEST_REDIS_URL.
# Ports can be moved with PG_PORT / REDIS_PORT.

PG_PORT=${PG_PORT:-25432}
REDIS_PORT=${REDIS_PORT:-26379}
if [ -z "${SERVICES_DIR:-}" ]; then
  SERVICES_DIR=$(mktemp -d /tmp/platform-services.XXXXXX)
  SERVICES_DIR_OWNED=1
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install_services() {
  local need=()
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
  if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # Debian's postgresql package starts a cluster of its own; ours is separate.
  id postgres >/dev/null 2>&1 || as_root useradd --system --home "$SERVICES_DIR" postgres
  # The mail tests read from a real SMTP server (Python's aiosmtpd); the
  # black-box account checks compute TOTP codes with pyotp.
  if ! python3 -c 'import aiosmtpd, pyotp' >/dev/null 2>&1; then
    echo "==> installing aiosmtpd, pyotp"
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd pyotp >/dev/null 2>&1 ||
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages aiosmtpd pyotp
  fi
}

# Runs a command as the postgres user (the server refuses to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin; bin=$(pg_bin)
  mkdir -p "$SERVICES_DIR/pg"
  [ "$(id -u)" = 0 ] && chown -R postgres "$SERVICES_DIR"
  chmod 755 "$SERVICES_DIR"
  # UTF8 whatever the caller's locale: without LANG, initdb picks SQL_ASCII,
  # where varchar(100) counts bytes and 100 emoji no longer fit (the fuzzer
  # found it in CI's bare environment).
  as_pg "$bin/initdb" -D "$SERVICES_DIR/pg" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
  as_pg "$bin/pg_ctl" -D "$SERVICES_DIR/pg" -l "$SERVICES_DIR/pg.log" -w \
    -o "-p $PG_PORT -k $SERVICES_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 ${PG_EXTRA_OPTS:--c fsync=off}" start >/dev/null
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "==> postgres on 127.0.0.1:$PG_PORT ($SERVICES_DIR/pg)"
}

stop_postgres() {
  local bin; bin=$(pg_bin)
  [ -d "$SERVICES_DIR/pg" ] && as_pg "$bin/pg_ctl" -D "$SERVICES_DIR/pg" -m fast -w stop >/dev/null 2>&1 || true
}

restart_postgres() {
  local bin; bin=$(pg_bin)
  as_pg "$bin/pg_ctl" -D "$SERVICES_DIR/pg" -l "$SERVICES_DIR/pg.log" -w \
    -o "-p $PG_PORT -k $SERVICES_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 ${PG_EXTRA_OPTS:--c fsync=off}" start >/dev/null
}

# A streaming replica of the primary (pg_basebackup -R) on the next port.
# Its settings live in its own postgresql.auto.conf, so a test can stop it
# and start it again with pg_ctl alone. Exports TEST_REPLICA_URL and
# TEST_REPLICA_DATADIR.
start_replica() {
  local bin; bin=$(pg_bin)
  local port=${REPLICA_PORT:-$((PG_PORT + 1))}
  rm -rf "$SERVICES_DIR/replica"
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$SERVICES_DIR/replica" \
    -R -X stream -c fast --no-sync
  cat >>"$SERVICES_DIR/replica/postgresql.auto.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SERVICES_DIR'
max_connections = 400
fsync = off
CONF
  as_pg "$bin/pg_ctl" -D "$SERVICES_DIR/replica" -l "$SERVICES_DIR/replica.log" -w start >/dev/null
  export TEST_REPLICA_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export TEST_REPLICA_DATADIR="$SERVICES_DIR/replica"
  echo "==> streaming replica on 127.0.0.1:$port ($SERVICES_DIR/replica)"
}

stop_replica() {
  local bin; bin=$(pg_bin)
  [ -d "$SERVICES_DIR/replica" ] && as_pg "$bin/pg_ctl" -D "$SERVICES_DIR/replica" -m fast -w stop >/dev/null 2>&1 || true
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log" \
    --dir "$SERVICES_DIR"
  for _ in $(seq 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  echo "==> redis on 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
  [ -f "$SERVICES_DIR/redis.pid" ] && kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null || true
}

# A Redis Cluster on loopback: three masters with a replica each, on
# REDIS_CLUSTER_PORT .. +5, and their bus ports 10000 above: all below the
# kernel's ephemeral range (32768-60999), where a test's outgoing connection
# can hold a port a server then fails to bind (CI lost a cluster node so).
# Exports TEST_REDIS_CLUSTER_NODES (the seeds).
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-17001}
start_redis_cluster() {
  local port nodes=() urls=()
  for i in 0 1 2 3 4 5; do
    port=$((REDIS_CLUSTER_PORT + i))
    mkdir -p "$SERVICES_DIR/cluster/$port"
    # A short node timeout so a failover is seconds, not the default 15 s.
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-node-timeout 1000 --repl-diskless-sync-delay 0 \
      --cluster-config-file "$SERVICES_DIR/cluster/$port/nodes.conf" \
      --daemonize yes --pidfile "$SERVICES_DIR/cluster/$port/redis.pid" \
      --logfile "$SERVICES_DIR/cluster/$port/redis.log" --dir "$SERVICES_DIR/cluster/$port"
    nodes+=("127.0.0.1:$port")
    urls+=("redis://127.0.0.1:$port")
  done
  for n in "${nodes[@]}"; do
    for _ in $(seq 50); do redis-cli -p "${n#*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "${n#*:}" ping >/dev/null 2>&1 \
      || { echo "redis cluster node $n did not start:" >&2; tail -5 "$SERVICES_DIR/cluster/${n#*:}/redis.log" >&2; return 1; }
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$SERVICES_DIR/cluster/create.log" 2>&1 \
    || { echo "redis cluster create failed (ports in use?):" >&2; cat "$SERVICES_DIR/cluster/create.log" >&2; return 1; }
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_CLUSTER_PORT" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  # A replica that never synced is not allowed to take over its master.
  for n in "${nodes[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "${n#*:}" info replication | grep -q 'role:master\|master_link_status:up' && break
      sleep 0.1
    done
  done
  TEST_REDIS_CLUSTER_NODES=$(IFS=,; echo "${urls[*]:0:3}")
  export TEST_REDIS_CLUSTER_NODES
  echo "==> redis cluster on 127.0.0.1:$REDIS_CLUSTER_PORT-$((REDIS_CLUSTER_PORT + 5))"
}

stop_redis_cluster() {
  local pid
  for pid in "$SERVICES_DIR"/cluster/*/redis.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
}

# Also removes the data directory this script made (a benchmark's Postgres
# holds gigabytes); one passed in through SERVICES_DIR is left alone, and
# SERVICES_KEEP=1 keeps it (a 50-million-row database to work on after a
# scale run: restart it with SERVICES_DIR set to the printed directory).
stop_services() {
  stop_replica
  stop_postgres
  stop_redis
  stop_redis_cluster
  if [ -n "${SERVICES_KEEP:-}" ]; then
    echo "==> kept $SERVICES_DIR (SERVICES_KEEP)"
  elif [ -n "${SERVICES_DIR_OWNED:-}" ]; then
    sleep 0.2
    rm -rf "$SERVICES_DIR"
  fi
}
