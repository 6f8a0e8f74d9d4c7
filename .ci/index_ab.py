#!/usr/bin/env python3
"""Batch ingest and `psql \\copy` with the metrics table's `timestamp` index
as a B-tree and as BRIN, alternating.

    BENCH_DRIVER=index_ab.py .ci/bench.sh

Each round swaps the index on the partitioned table, checkpoints, runs
1,000-metric batches for AB_SECONDS (10) with 4 connections, then copies
as many rows with `psql \\copy` into a scratch copy of the table (same
indexes), and prints both rates and their ratio; AB_ROUNDS (3) rounds,
the order flipped every round, and the means at the end.
"""

import os

import bench as B

SECS = int(os.environ.get("AB_SECONDS", "10"))
ROUNDS = int(os.environ.get("AB_ROUNDS", "3"))


def timestamp_index(db, kind):
    """The metrics table's `timestamp` index, rebuilt as `kind`."""
    B.psql(db, "DROP INDEX IF EXISTS ix_metrics_timestamp; CREATE INDEX ix_metrics_timestamp "
               f'ON platform_analytics_metrics USING {kind} ("timestamp")')


def main():
    db = os.environ["BENCH_DATABASE_URL"]
    proc = B.start_server({"DATABASE_URL": db, "REDIS_URL": os.environ["BENCH_REDIS_URL"]})
    try:
        uid = B.register("ab")["user"]["id"]
        script = B.batch_script(uid)
        B.wrk("/analytics/metrics/batch", script, 3, conns=4)  # warm-up
        res = {"btree": [], "brin": []}
        for r in range(ROUNDS):
            for kind in ("btree", "brin") if r % 2 == 0 else ("brin", "btree"):
                timestamp_index(db, kind)
                B.psql(db, "CHECKPOINT")
                rate, copy, w = B.batches_then_copy(db, uid, script, SECS)
                res[kind].append((rate, copy))
                print(f"round {r + 1}, {kind}: batches {rate:.0f} metrics/s (p99 {w['p99_ms']} ms), "
                      f"psql \\copy {copy:.0f} rows/s, ratio {rate / copy:.0%}", flush=True)
        for kind, v in res.items():
            rate, copy = (sum(x[i] for x in v) / len(v) for i in (0, 1))
            print(f"{kind}: batches {rate:.0f}, copy {copy:.0f} on average; ratio {rate / copy:.0%}")
        # Back to the table as the server defines it.
        timestamp_index(db, "btree")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
