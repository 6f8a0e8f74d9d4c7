#!/usr/bin/env python3
"""Durable single events for two or more builds, side by side: each round
starts a fresh server per build (order alternated) on one database, forces
a CHECKPOINT, warms up for 2 s and runs POST /analytics/events for SECS
(10) with wrk -t1 -c64, as the benchmark does. Prints each round and the
averages. Not part of CI:
`BINS=before=/path/a,after=/path/b BENCH_DRIVER=events_ab.py .ci/bench.sh`."""
import os

import bench as B

SECS = int(os.environ.get("SECS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
BINS = B.builds()

db = B.fresh_database(os.environ["BENCH_DATABASE_URL"], "events_ab")
env = {"DATABASE_URL": db, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
res = {name: [] for name, _ in BINS}
for r, name, _ in B.alternated(BINS, ROUNDS):
    with B.serving(env):
        uid = B.register("e")["user"]["id"]
        script = B.lua("POST", B.event_body(uid))
        B.psql(db, "CHECKPOINT")
        B.wrk("/analytics/events", script, 2, conns=64)
        out = B.wrk("/analytics/events", script, SECS, conns=64)
    assert out["errors"] == 0, out
    res[name].append(out["rps"])
    print(f"round {r} {name}: {out['rps']:.0f} events/s, p99 {out['p99_ms']} ms", flush=True)
for name, rates in res.items():
    print(f"{name}: {sum(rates) / len(rates):.0f} events/s on average "
          f"(rounds {', '.join(f'{x:.0f}' for x in rates)})")
