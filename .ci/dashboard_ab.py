#!/usr/bin/env python3
"""Dashboard latency of two builds on the same loaded database, alternating.

    DASH_A=/path/to/old-binary DASH_B=target/release/platform-server \\
    DASH_ROWS=3000000 DASH_DAYS=2 BENCH_DRIVER=dashboard_ab.py .ci/bench.sh

Loads DASH_ROWS events and as many metrics over DASH_DAYS days (fewer days,
denser hours), then runs `GET /analytics/dashboard?hours=24` with each build
in turn, DASH_ROUNDS times, and prints each round. The dashboard's cost
depends on the minute of the hour (the window's ragged first hour), so only
rounds of one run compare.
"""

import os
import signal
import time

import bench as B

db_url = os.environ["BENCH_DATABASE_URL"]
backends = {"DATABASE_URL": db_url, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
rows = int(os.environ.get("DASH_ROWS", "3000000"))
days = int(os.environ.get("DASH_DAYS", "2"))
builds = {"A": os.environ["DASH_A"], "B": os.environ.get("DASH_B", B.BIN)}


def serve(binary):
    B.BIN = binary
    return B.start_server(backends)


proc = serve(builds["B"])
try:
    t0 = time.time()
    B.load_rows(db_url, rows, rows, 1000, days)
    B.settle(db_url)
    print(f"loaded {rows} events and {rows} metrics over {days} days in {time.time() - t0:.0f} s", flush=True)
finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
for rnd in range(int(os.environ.get("DASH_ROUNDS", "3"))):
    for name, binary in builds.items():
        proc = serve(binary)
        try:
            time.sleep(1)
            B.wrk("/analytics/dashboard?hours=24", B.lua("GET"), 2, conns=2)  # warm-up
            r = B.wrk("/analytics/dashboard?hours=24", B.lua("GET"), 10, conns=2)
            d = B.http("GET", "/analytics/dashboard?hours=24")
            print(f"round {rnd} {name}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, "
                  f"p99 {r['p99_ms']} ms, errors {r['errors']}; active users {d['active_users']}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
