#!/usr/bin/env python3
"""Dashboard and unique-user latency of two builds on the same loaded
database, alternating.

    DASH_A=/path/to/old-binary DASH_B=target/release/platform-server \\
    DASH_ROWS=3000000 DASH_DAYS=2 BENCH_DRIVER=dashboard_ab.py .ci/bench.sh

Loads DASH_ROWS events and as many metrics over DASH_DAYS days (fewer days,
denser hours), then runs `GET /analytics/dashboard?hours=24` with each build
in turn, DASH_ROUNDS times, and prints each round with the median of seven
`/analytics/uniques` calls over 24 hours and over 7 days (cut mid-hour). The dashboard's cost
depends on the minute of the hour (the window's ragged first hour), so only
rounds of one run compare.
"""

import datetime
import os
import signal
import time
import urllib.parse

import bench as B

db_url = os.environ["BENCH_DATABASE_URL"]
backends = {"DATABASE_URL": db_url, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
rows = int(os.environ.get("DASH_ROWS", "3000000"))
days = int(os.environ.get("DASH_DAYS", "2"))
builds = {"A": os.environ["DASH_A"], "B": os.environ.get("DASH_B", B.BIN)}


def uniques_ms(hours):
    now = datetime.datetime.now(datetime.timezone.utc)
    query = urllib.parse.urlencode({"from": (now - datetime.timedelta(hours=hours, minutes=17)).isoformat(),
                                    "to": (now - datetime.timedelta(minutes=11)).isoformat()})
    took = []
    for _ in range(7):
        t0 = time.perf_counter()
        B.http("GET", f"/analytics/uniques?{query}")
        took.append((time.perf_counter() - t0) * 1000)
    return sorted(took)[3]


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
                  f"p99 {r['p99_ms']} ms, errors {r['errors']}; active users {d['active_users']}; "
                  f"uniques 24 h {uniques_ms(24):.1f} ms, 7 days {uniques_ms(168):.1f} ms", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
