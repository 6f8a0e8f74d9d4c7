#!/usr/bin/env python3
"""1,000-metric batches against `psql \\copy` for two or more builds, side by
side, each build on a database of its own loaded with PRELOAD metrics
(3,000,000, over the last day, by bench.load_rows) so the table has the size
a benchmark leaves behind. Each round
starts a fresh server per build (order alternated), runs the batch scenario
for SECS (10) with wrk -t1 -c4 (CONNS_<name>), then, with the server still up as in
bench.py, copies as many rows with `psql \\copy` into a scratch copy of the
metrics table, and prints both rates and their ratio. ENV_<name>="K=V ..."
gives a build extra settings and CONNS_<name> its wrk connections (the same
binary twice, configured or loaded two ways).
Not part of CI:
`BINS=before=/path/a,after=/path/b BENCH_DRIVER=batch_ab.py .ci/bench.sh`."""
import os

import bench as B

SECS = int(os.environ.get("SECS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
PRELOAD = int(os.environ.get("PRELOAD", "3000000"))
BINS = B.builds()
ADMIN = os.environ["BENCH_DATABASE_URL"]


def settings(name, db):
    env = {"DATABASE_URL": db, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
    env.update(kv.split("=", 1) for kv in os.environ.get(f"ENV_{name}", "").split())
    return env


dbs = {}
for _, name, _ in B.alternated(BINS, 1):
    dbs[name] = B.fresh_database(ADMIN, f"batch_ab_{name}")
    with B.serving(settings(name, dbs[name])):
        B.load_rows(dbs[name], 0, PRELOAD, 1, days=1)
        # The rollup catches up with the loaded rows before the rounds.
        B.settle(dbs[name])
res = {name: [] for name, _ in BINS}
for r, name, _ in B.alternated(BINS, ROUNDS):
    db = dbs[name]
    with B.serving(settings(name, db)):
        uid = B.register("b")["user"]["id"]
        script = B.batch_script(uid)
        B.wrk("/analytics/metrics/batch", script, 2, conns=4)
        rate, copy, out = B.batches_then_copy(db, uid, script, SECS, int(os.environ.get(f"CONNS_{name}", "4")))
    res[name].append((rate, copy))
    print(f"round {r} {name}: batches {rate:.0f} metrics/s (p99 {out['p99_ms']} ms), "
          f"psql \\copy {copy:.0f} rows/s, ratio {rate / copy:.0%}", flush=True)
for name, rounds in res.items():
    rate, copy = (sum(x[i] for x in rounds) / len(rounds) for i in (0, 1))
    print(f"{name}: batches {rate:.0f}, copy {copy:.0f} on average; ratio {rate / copy:.0%} "
          f"(rounds {', '.join(f'{a / b:.0%}' for a, b in rounds)})")
