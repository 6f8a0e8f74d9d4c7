#!/usr/bin/env python3
"""Fault injection with real processes (run through .ci/faults.sh).

a. SIGTERM while clients ingest: every acknowledged event is stored.
b. PostgreSQL stopped and restarted while clients ingest: 503 with
   Retry-After while it is down, /health/ready 503 then 200, every
   acknowledged event stored, no server restart.
c. Redis stopped: /health degraded, login and verify keep answering, a token
   revoked while Redis is down never passes, and all is normal once it is back.
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from blackbox import check, request, start as start_server

BIN = os.environ.get("PLATFORM_BIN", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "debug", "platform-server"))
KEY = "faults-key"
PORT = 18107
BASE = f"http://127.0.0.1:{PORT}"
DB = os.environ["FAULTS_DATABASE_URL"]
REDIS = os.environ["FAULTS_REDIS_URL"]


def call(method, path, body=None, token=None, timeout=10):
    try:
        return request(BASE, KEY, method, path, body, token, timeout)
    except Exception as e:  # connection refused while stopping
        return 0, {"detail": str(e)}, {}


def start(extra=None):
    env = {"PATH": os.environ["PATH"], "API_KEY": KEY, "PORT": str(PORT), "METRICS_ENABLED": "false",
           "BIND_ADDRESS": "127.0.0.1", "DATABASE_URL": DB, "REDIS_URL": REDIS, "LOG_LEVEL": "WARNING",
           "INGEST_WAIT_TIMEOUT": "3", "DATABASE_ACQUIRE_TIMEOUT": "2"}
    env.update(extra or {})
    log = open(os.path.join(tempfile.gettempdir(), "faults-server.log"), "a")
    return start_server(BIN, env, log, lambda: call("GET", "/health/live")[0] == 200)


class Clients:
    """Threads posting events with unique ids, recording acknowledged ones."""

    def __init__(self, n, tag):
        self.acked, self.codes, self.retry_after_ok, self.stop = [], {}, True, False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(f"{tag}-{i}",)) for i in range(n)]
        for t in self.threads:
            t.start()

    def loop(self, name):
        i = 0
        while not self.stop:
            i += 1
            eid = f"{name}-{i}"
            code, body, headers = call("POST", "/analytics/events", {"event_type": "fault", "event_id": eid}, timeout=15)
            with self.lock:
                self.codes[code] = self.codes.get(code, 0) + 1
                if code == 200:
                    self.acked.append(eid)
                elif code == 503 and "Retry-After" not in headers and "retry-after" not in headers:
                    self.retry_after_ok = False
            if code == 0:
                time.sleep(0.05)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()


def stored(event_ids):
    out = subprocess.run(["psql", "-tA", DB, "-c", "SELECT event_id FROM platform_analytics_events WHERE event_id IS NOT NULL"],
                         capture_output=True, text=True, check=True).stdout.split()
    have = set(out)
    return [e for e in event_ids if e not in have]


def sigterm():
    print("a. SIGTERM during ingestion")
    p = start()
    c = Clients(8, "term")
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=60)
    c.finish()
    missing = stored(c.acked)
    check(code == 0, f"server exited 0 after SIGTERM (got {code})")
    check(len(c.acked) > 0 and not missing, f"{len(c.acked)} acknowledged, {len(missing)} missing")


def postgres_restart(pg_stop, pg_start):
    print("b. PostgreSQL stopped and restarted during ingestion")
    p = start()
    c = Clients(8, "pg")
    time.sleep(1)
    subprocess.run(pg_stop, shell=True, check=True)
    time.sleep(4)
    ready_down = call("GET", "/health/ready")[0]
    health_down = call("GET", "/health")[0]
    with c.lock:
        saw_503 = c.codes.get(503, 0)
    subprocess.run(pg_start, shell=True, check=True)
    ready_up = 0
    for _ in range(100):
        ready_up = call("GET", "/health/ready")[0]
        if ready_up == 200:
            break
        time.sleep(0.1)
    time.sleep(2)
    c.finish()
    after = call("POST", "/analytics/events", {"event_type": "after"})[0]
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    missing = stored(c.acked)
    check(ready_down == 503 and health_down == 503, f"/health/ready and /health answer 503 while down ({ready_down}, {health_down})")
    check(saw_503 > 0 and c.retry_after_ok, f"ingestion answered 503 with Retry-After while down ({saw_503} times)")
    check(ready_up == 200 and after == 200, "recovered without a restart")
    check(not missing, f"{len(c.acked)} acknowledged, {len(missing)} missing; codes {c.codes}")


def redis_down(redis_stop, redis_start):
    print("c. Redis stopped")
    p = start()
    email = f"faults{time.time_ns()}@example.com"
    code, reg, _ = call("POST", "/auth/register", {"email": email, "password": "password123"})
    token = reg["access_token"]
    check(call("GET", "/auth/verify", token=token)[0] == 200, "verify before the outage (caches the session)")
    subprocess.run(redis_stop, shell=True, check=True)
    time.sleep(0.5)
    status, health, _ = call("GET", "/health")
    check(status == 200 and health.get("status") == "degraded", f"/health says degraded ({status}, {health.get('status')})")
    status, login, _ = call("POST", "/auth/login", {"email": email, "password": "password123"})
    check(status == 200, f"login works without Redis ({status})")
    second = login.get("access_token")
    check(call("GET", "/auth/verify", token=second)[0] == 200, "verify works without Redis")
    check(call("POST", "/auth/logout", token=token)[0] == 200, "logout works without Redis")
    check(call("GET", "/auth/verify", token=token)[0] == 401, "the revoked token fails while Redis is down")
    subprocess.run(redis_start, shell=True, check=True)
    time.sleep(2.5)
    status, health, _ = call("GET", "/health")
    check(health.get("status") == "healthy", f"/health healthy again ({health.get('status')})")
    check(call("GET", "/auth/verify", token=token)[0] == 401, "the revoked token still fails once Redis is back")
    check(call("GET", "/auth/verify", token=second)[0] == 200, "other sessions verify once Redis is back")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def main():
    sigterm()
    postgres_restart(os.environ["PG_STOP"], os.environ["PG_START"])
    redis_down(os.environ["REDIS_STOP"], os.environ["REDIS_START"])
    if check.failed:
        sys.exit("fault checks failed")
    print("all fault checks passed")


if __name__ == "__main__":
    main()
