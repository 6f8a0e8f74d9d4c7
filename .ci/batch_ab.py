#!/usr/bin/env python3
"""1,000-metric batches against `psql \\copy` for two or more builds, side by
side, each build on a database of its own preloaded with PRELOAD metrics
(3,000,000) so the table has the size a benchmark leaves behind. Each round
starts a fresh server per build (order alternated), runs the batch scenario
for SECS (10) with wrk -t1 -c4 (CONNS_<name>), then, with the server still up as in
bench.py, copies as many rows with `psql \\copy` into a scratch copy of the
metrics table, and prints both rates and their ratio. ENV_<name>="K=V ..."
gives a build extra settings and CONNS_<name> its wrk connections (the same
binary twice, configured or loaded two ways).
Not part of CI:
`BINS=before=/path/a,after=/path/b BENCH_DRIVER=batch_ab.py .ci/bench.sh`."""
import os
import subprocess
import time

import bench as B

SECS = int(os.environ.get("SECS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
PRELOAD = int(os.environ.get("PRELOAD", "3000000"))
BINS = [pair.split("=", 1) for pair in os.environ.get("BINS", f"head={B.BIN}").split(",")]
ADMIN = os.environ["BENCH_DATABASE_URL"]


def settings(name, db):
    env = {"DATABASE_URL": db, "REDIS_URL": os.environ["BENCH_REDIS_URL"]}
    env.update(kv.split("=", 1) for kv in os.environ.get(f"ENV_{name}", "").split())
    return env


def database(name):
    """A fresh database for one build (its server migrates it)."""
    B.psql(ADMIN, f"DROP DATABASE IF EXISTS {name}")
    B.psql(ADMIN, f"CREATE DATABASE {name}")
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def preload(db):
    try:
        insert(db)
    except subprocess.CalledProcessError as e:
        print(f"preload failed once ({e.stderr.strip()}); again", flush=True)
        insert(db)
    B.psql(db, "VACUUM ANALYZE platform_analytics_metrics")
    B.psql(db, "CHECKPOINT")


def insert(db):
    B.psql(db, "INSERT INTO platform_analytics_metrics (metric_name, metric_value, metric_type, user_id, "
               "endpoint, labels, timestamp) SELECT 'api_calls', 1, 'counter', 1, '/x', '{}', "
               f"now() AT TIME ZONE 'utc' - interval '1 second' * (i % 3600) FROM generate_series(1, {PRELOAD}) i")


dbs = {}
for _, name, _ in B.alternated(BINS, 1):
    dbs[name] = database(f"batch_ab_{name}")
    with B.serving(settings(name, dbs[name])):
        preload(dbs[name])
        # The rollup catches up with the preloaded rows before the rounds.
        B.http("POST", "/analytics/jobs/rollup", {}, timeout=600)
res = {name: [] for name, _ in BINS}
for r, name, _ in B.alternated(BINS, ROUNDS):
    db = dbs[name]
    with B.serving(settings(name, db)):
        uid = B.http("POST", "/auth/register", {"email": f"b{time.time_ns()}@example.com",
                                                "password": "bench-Quartz-4417-violin"})["user"]["id"]
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
