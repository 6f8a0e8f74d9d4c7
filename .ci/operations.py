#!/usr/bin/env python3
"""Many replicas run and failed for real (run through .ci/operations.sh).

a. Redis Cluster failover: two servers on one Postgres and a Redis Cluster
   (three masters, a replica each) under logins and verifies; a master is
   killed with SIGKILL. After the failover login and verify work on both
   servers, every token logged out (answered 200) stays refused, and no
   request answers 5xx outside a bounded window, which is measured.
b. Three servers behind nginx on one Postgres and Redis under mixed load
   (logins, verifies, events with `event_id`, metrics); one is killed with
   SIGKILL mid-run. Every event answered 200 is stored, an unanswered event
   retried by the client is stored once, every metric answered 200 is
   stored, a logout on one replica is refused by the others, and the jobs
   keep running on the survivors (their advisory lock is taken over). A
   live-stream subscriber through nginx sees each event once, whichever
   replica commits it, and reconnects with Last-Event-ID when its own
   replica dies; a resume from its first id replays every stored event.

Figures are printed as `figure name=value` lines for the README.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from blackbox import check, request, start as start_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PLATFORM_BIN", os.path.join(ROOT, "target", "debug", "platform-server"))
KEY = "ops-key"
DB = os.environ["OPS_DATABASE_URL"]
REDIS = os.environ["OPS_REDIS_URL"]
CLUSTER = os.environ["OPS_REDIS_CLUSTER_NODES"]
CLUSTER_DIR = os.environ["OPS_REDIS_CLUSTER_DIR"]
PASSWORD = "password-123"
# Past this, a 5xx after the kill is a failure: node timeout (1 s) plus the
# replica's election plus the clients' slot-map refresh, with room to spare.
FAILOVER_BOUND_S = 10.0


def call(base, method, path, body=None, token=None, timeout=10):
    try:
        return request(base, KEY, method, path, body, token, timeout)[:2]
    except Exception as e:  # refused or reset: no answer
        return 0, {"detail": str(e)}


class Server:
    def __init__(self, name, port, env):
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.metrics = f"http://127.0.0.1:{port + 100}/metrics"
        full = {"PATH": os.environ["PATH"], "API_KEY": KEY, "PORT": str(port),
                "METRICS_PORT": str(port + 100), "BIND_ADDRESS": "127.0.0.1", "DATABASE_URL": DB,
                "LOG_LEVEL": "WARNING", "PASSWORD_HASH_ROUNDS": "4",
                "USAGE_ROLLUP_INTERVAL": "1", "INGEST_WAIT_TIMEOUT": "5"}
        full.update(env)
        log = open(os.path.join(tempfile.gettempdir(), f"ops-{name}.log"), "a")
        self.proc = start_server(BIN, full, log, lambda: call(self.base, "GET", "/health/live")[0] == 200)

    def counter(self, name, labels):
        """One sample of this server's own Prometheus endpoint, or None."""
        import urllib.request
        try:
            text = urllib.request.urlopen(self.metrics, timeout=5).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def psql(sql):
    return subprocess.run(["psql", "-tA", DB, "-c", sql], capture_output=True, text=True, check=True).stdout.split()


def register_users(base, n, tag):
    users = []
    for i in range(n):
        email = f"{tag}{i}-{time.time_ns()}@example.com"
        code, body = call(base, "POST", "/auth/register", {"email": email, "password": PASSWORD})
        assert code == 201, (code, body)
        users.append((email, body["access_token"]))
    return users


class Log:
    """(time, operation, status) of every request the load made."""

    def __init__(self):
        self.rows, self.lock = [], threading.Lock()

    def add(self, op, status, started=None):
        now = time.monotonic()
        with self.lock:
            self.rows.append((now, op, status, now - (started or now)))

    def slowest(self, since, until=float("inf")):
        return max((r[3] for r in self.rows if since <= r[0] < until), default=0.0)

    def errors(self, since=0.0):
        return [r for r in self.rows if r[0] >= since and (r[2] >= 500 or r[2] == 0)]

    def codes(self):
        out = {}
        for _, op, status, _ in self.rows:
            out[(op, status)] = out.get((op, status), 0) + 1
        return dict(sorted(out.items()))


def cluster_nodes(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "nodes"], capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def cluster_failover():
    print("a. Redis Cluster: a master killed under logins and verifies")
    env = {"REDIS_CLUSTER_NODES": CLUSTER}
    servers = [Server("cluster-a", 18521, env), Server("cluster-b", 18522, env)]
    users = register_users(servers[0].base, 12, "cl")
    log, stop = Log(), threading.Event()
    revoked, revoked_lock = [], threading.Lock()

    def load(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            server = rnd.choice(servers)
            email, _ = rnd.choice(users)
            t = time.monotonic()
            code, body = call(server.base, "POST", "/auth/login", {"email": email, "password": PASSWORD})
            log.add("login", code, t)
            if code != 200:
                time.sleep(0.02)
                continue
            token = body["access_token"]
            t = time.monotonic()
            log.add("verify", call(rnd.choice(servers).base, "GET", "/auth/verify", token=token)[0], t)
            # A third of the sessions are ended; those acknowledged must stay ended.
            if rnd.random() < 0.33:
                t = time.monotonic()
                code = call(rnd.choice(servers).base, "POST", "/auth/logout", token=token)[0]
                log.add("logout", code, t)
                if code == 200:
                    with revoked_lock:
                        revoked.append(token)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)
    # The master serving slot 0, wherever `--cluster create` put it.
    seed = int(CLUSTER.split(",")[0].rsplit(":", 1)[1])
    victim = next(int(n[1].split("@")[0].rsplit(":", 1)[1]) for n in cluster_nodes(seed)
                  if "master" in n[2] and any(r.split("-")[0] == "0" for r in n[8:]))
    survivor = next(int(n[1].split("@")[0].rsplit(":", 1)[1]) for n in cluster_nodes(seed)
                    if "master" in n[2] and not n[1].startswith(f"127.0.0.1:{victim}@"))
    pid = int(open(os.path.join(CLUSTER_DIR, str(victim), "redis.pid")).read())
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    print(f"  killed the master on port {victim}")
    promoted_after = None
    while time.monotonic() - killed_at < 30:
        nodes = cluster_nodes(survivor)
        dead = [n for n in nodes if n[1].startswith(f"127.0.0.1:{victim}@")]
        masters = [n for n in nodes if "master" in n[2] and "fail" not in n[2] and len(n) > 8]
        if dead and "fail" in dead[0][2] and len(masters) == 3:
            promoted_after = time.monotonic() - killed_at
            break
        time.sleep(0.05)
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    errors = log.errors()
    before = [e for e in errors if e[0] < killed_at]
    window = max((e[0] - killed_at for e in errors if e[0] >= killed_at), default=0.0)
    print(f"  figure cluster_promotion_s={promoted_after and round(promoted_after, 2)}")
    print(f"  figure cluster_5xx={len(errors)} cluster_5xx_window_s={window:.2f} requests={len(log.rows)}"
          f" slowest_before_s={log.slowest(0, killed_at):.3f} slowest_after_s={log.slowest(killed_at):.3f}")
    print(f"  codes {log.codes()}")
    check(promoted_after is not None, f"a replica took over the killed master's slots ({promoted_after})")
    check(not before, f"no 5xx before the kill ({len(before)})")
    check(window <= FAILOVER_BOUND_S, f"5xx only within {FAILOVER_BOUND_S:.0f} s of the kill (last at {window:.2f} s)")
    email, _ = users[0]
    for server in servers:
        code, body = call(server.base, "POST", "/auth/login", {"email": email, "password": PASSWORD})
        check(code == 200, f"{server.name}: login after the failover ({code})")
        token = body.get("access_token")
        check(call(server.base, "GET", "/auth/verify", token=token)[0] == 200, f"{server.name}: verify after the failover")
    passed = [t for t in revoked for s in servers if call(s.base, "GET", "/auth/verify", token=t)[0] != 401]
    check(len(revoked) > 0 and not passed, f"{len(revoked)} logged-out sessions stay refused on both servers ({len(passed)} pass)")
    for s in servers:
        s.stop()


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream platform {{
    server 127.0.0.1:18531 max_fails=1 fail_timeout=5s;
    server 127.0.0.1:18532 max_fails=1 fail_timeout=5s;
    server 127.0.0.1:18533 max_fails=1 fail_timeout=5s;
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:18530;
    location / {{
      proxy_pass http://platform;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_connect_timeout 1s;
      proxy_read_timeout 15s;
    }}
  }}
}}
"""


def read_stream(base, query, last_id, until, on_event):
    """Reads the live stream until `until()` is true, reconnecting with
    Last-Event-ID whenever it ends; `on_event(id, body)` per event.
    Each message's `id:` is the largest event id sent so far (the resume
    point); the event's own id is in its body. Answers how many times it
    reconnected."""
    import json
    import urllib.request
    reconnects = 0
    while not until():
        headers = {"X-API-Key": KEY}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        try:
            req = urllib.request.Request(base + "/analytics/events/stream" + query, headers=headers)
            with urllib.request.urlopen(req, timeout=5) as r:
                msg = {}
                for raw in r:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("id: "):
                        msg["id"] = int(line[4:])
                    elif line.startswith("data: "):
                        msg["data"] = json.loads(line[6:])
                    elif not line and "id" in msg:
                        last_id = msg["id"]
                        on_event(msg["data"]["id"], msg["data"])
                        msg = {}
                    elif not line:
                        msg = {}
                    if until():
                        return reconnects
        except OSError:
            pass
        reconnects += 1
        time.sleep(0.2)
    return reconnects


def behind_nginx():
    print("b. three servers behind nginx; one killed with SIGKILL under mixed load")
    work = tempfile.mkdtemp(prefix="ops-nginx-")
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=work))
    nginx = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    lb = "http://127.0.0.1:18530"
    # Heartbeats every second: a stream through a dead replica ends quickly.
    env = {"REDIS_URL": REDIS, "TRUSTED_PROXIES": "127.0.0.1", "STREAM_HEARTBEAT": "1"}
    servers = [Server(f"replica-{i}", 18531 + i, env) for i in range(3)]
    for _ in range(100):
        if call(lb, "GET", "/health/live")[0] == 200:
            break
        time.sleep(0.05)
    users = register_users(lb, 8, "lb")

    # A logout on one replica is refused by the others, before the kill too.
    def logout_seen(alive):
        email, _ = users[0]
        code, body = call(alive[0].base, "POST", "/auth/login", {"email": email, "password": PASSWORD})
        token = body.get("access_token")
        warmed = all(call(s.base, "GET", "/auth/verify", token=token)[0] == 200 for s in alive)
        out = call(alive[-1].base, "POST", "/auth/logout", token=token)[0]
        refused = [call(s.base, "GET", "/auth/verify", token=token)[0] for s in alive]
        return code == 200 and warmed and out == 200 and all(c == 401 for c in refused)

    check(logout_seen(servers), "a logout on one replica is refused by the other two")

    log, stop = Log(), threading.Event()
    acked, retried, metrics_acked = [], [], []
    lock = threading.Lock()

    def events(name):
        i = 0
        while not stop.is_set():
            i += 1
            eid = f"{name}-{i}"
            attempts = 0
            while True:
                attempts += 1
                code = call(lb, "POST", "/analytics/events", {"event_type": "ops", "event_id": eid}, timeout=15)[0]
                log.add("event", code)
                if code in (200, 201):
                    with lock:
                        acked.append(eid)
                        if attempts > 1:
                            retried.append(eid)
                    break
                # No answer, or the balancer's 502/504: the client retries the same id.
                time.sleep(0.05)

    def metrics(name):
        i = 0
        while not stop.is_set():
            i += 1
            seq = f"{name}-{i}"
            code = call(lb, "POST", "/analytics/metrics", {"metric_name": "ops", "metric_value": 1, "labels": {"seq": seq}})[0]
            log.add("metric", code)
            if code in (200, 201):
                with lock:
                    metrics_acked.append(seq)

    def auth(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            email, _ = rnd.choice(users)
            code, body = call(lb, "POST", "/auth/login", {"email": email, "password": PASSWORD})
            log.add("login", code)
            if code == 200:
                log.add("verify", call(lb, "GET", "/auth/verify", token=body["access_token"])[0])

    # A subscriber through the balancer: whichever replica it lands on, it
    # sees the events every replica commits, and resumes when its own dies.
    streamed, stream_done, box = [], threading.Event(), {}

    def subscriber():
        box["reconnects"] = read_stream(lb, "?event_type=ops", None, stream_done.is_set,
                                        lambda i, body: streamed.append((i, body["event_id"])))

    listener = threading.Thread(target=subscriber)
    listener.start()
    time.sleep(0.5)
    threads = ([threading.Thread(target=events, args=(f"ev{time.time_ns()}-{i}",)) for i in range(6)]
               + [threading.Thread(target=metrics, args=(f"me{time.time_ns()}-{i}",)) for i in range(2)]
               + [threading.Thread(target=auth, args=(i,)) for i in range(2)])
    for t in threads:
        t.start()
    time.sleep(3)
    runs_before = [s.counter("job_runs_total", {"job": "rollup", "result": "ok"}) for s in servers[1:]]
    killed_at_wall = psql("SELECT now()")[0:2]
    servers[0].proc.send_signal(signal.SIGKILL)
    servers[0].proc.wait()
    print("  killed replica-0 with SIGKILL")
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(1)
    stream_done.set()
    listener.join()
    survivors = servers[1:]
    check(logout_seen(survivors), "after the kill, a logout on one survivor is refused by the other")
    stored_ids = {int(i): e for i, e in (row.split("|") for row in
                  psql("SELECT id || '|' || event_id FROM platform_analytics_events WHERE event_type = 'ops'"))}
    seen = [i for i, _ in streamed]
    live_missing = set(stored_ids) - set(seen)
    check(len(seen) > 0 and len(seen) == len(set(seen)) and set(seen) <= set(stored_ids),
          f"the stream through nginx delivered {len(seen)} events, each once and each stored "
          f"({box.get('reconnects', 0)} reconnects with Last-Event-ID)")
    # What it did not see live (committed by the killed replica between its
    # commit and its publish) a resume from before them replays.
    first = min(seen) - 1 if seen else 0
    replayed, deadline = [], time.monotonic() + 30
    read_stream(survivors[0].base, "?event_type=ops", first,
                lambda: len(replayed) >= sum(1 for i in stored_ids if i > first) or time.monotonic() > deadline,
                lambda i, body: replayed.append(i))
    check(sorted(replayed) == sorted(i for i in stored_ids if i > first),
          f"a resume from the first id replays all {len(replayed)} stored events "
          f"({len(live_missing)} had not been seen live)")
    print(f"  figure stream_events_live={len(seen)} stream_missed_live={len(live_missing)} "
          f"stream_reconnects={box.get('reconnects', 0)}")
    missing = set(acked) - set(psql("SELECT event_id FROM platform_analytics_events WHERE event_type = 'ops'"))
    dupes = psql("SELECT event_id FROM platform_analytics_events WHERE event_type = 'ops' GROUP BY event_id HAVING count(*) > 1")
    stored_retried = set(retried) - missing
    check(len(acked) > 0 and not missing, f"{len(acked)} events answered 200, {len(missing)} missing")
    check(not dupes, f"each event_id stored once ({len(retried)} retried after no answer, {len(dupes)} duplicated)")
    check(stored_retried == set(retried), "every retried event is stored")
    have = set(psql("SELECT labels->>'seq' FROM platform_analytics_metrics WHERE metric_name = 'ops'"))
    lost = [m for m in metrics_acked if m not in have]
    check(len(metrics_acked) > 0 and not lost, f"{len(metrics_acked)} metrics answered 200, {len(lost)} missing")
    since = " ".join(killed_at_wall)
    ran = psql(f"SELECT count(*) FROM platform_jobs WHERE name = 'rollup' AND last_success_at > '{since}'::timestamptz AT TIME ZONE 'UTC'")
    runs_after = [s.counter("job_runs_total", {"job": "rollup", "result": "ok"}) for s in survivors]
    check(ran == ["1"], f"the rollup ran after the kill ({ran})")
    check(any(a is not None and b is not None and a > b for a, b in zip(runs_after, runs_before)),
          f"a survivor ran it (runs before {runs_before}, after {runs_after})")
    errors = log.errors()
    print(f"  figure lb_requests={len(log.rows)} lb_unanswered_or_5xx={len(errors)} lb_retried_events={len(retried)}")
    print(f"  codes {log.codes()}")
    for s in survivors:
        s.stop()
    nginx.send_signal(signal.SIGQUIT)
    nginx.wait(timeout=30)


def main():
    cluster_failover()
    behind_nginx()
    if check.failed:
        sys.exit("operations checks failed")
    print("all operations checks passed")


if __name__ == "__main__":
    main()
