#!/usr/bin/env bash
# Fault injection against real processes: SIGTERM, PostgreSQL restart and a
# Redis outage during load; then accounts as a black-box client sees them
# (mail through aiosmtpd, SMTP down across a SIGKILL and restart).
# Uses the debug binary (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT=${PG_PORT:-25632}
REDIS_PORT=${REDIS_PORT:-26579}
. .ci/services.sh
install_services
trap stop_services EXIT
cargo build --quiet
start_postgres
start_redis
export FAULTS_DATABASE_URL="$TEST_DATABASE_URL" FAULTS_REDIS_URL="$TEST_REDIS_URL"
export SERVICES_DIR PG_PORT REDIS_PORT
export PG_STOP="bash -c '. .ci/services.sh; stop_postgres'"
export PG_START="bash -c '. .ci/services.sh; restart_postgres'"
export REDIS_STOP="redis-cli -p $REDIS_PORT shutdown nosave"
export REDIS_START="redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --pidfile $SERVICES_DIR/redis.pid --dir $SERVICES_DIR"
python3 .ci/faults.py
ACCOUNTS_DATABASE_URL="$TEST_DATABASE_URL" ACCOUNTS_REDIS_URL="$TEST_REDIS_URL" python3 .ci/accounts.py
