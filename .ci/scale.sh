#!/usr/bin/env bash
# Postgres at scale: SCALE_ROWS events and as many metrics (default 50
# million each) in the time partitions; ingest against the empty and the
# full tables, dashboard and usage latency, retention dropping a day.
# BENCH_REPLICA=1 adds a streaming replica and reads the dashboard from it
# while ingest runs at full rate. Needs about 45 GB of disk per 100 million
# rows (twice that with the replica). A script for a quiet machine, not
# part of CI.
export PG_PORT=${PG_PORT:-25732} REDIS_PORT=${REDIS_PORT:-26679} BENCH_DRIVER=scale.py
# wal_compression as the README advises for production: it shrinks the
# full-page images written after each checkpoint, which a streaming replica
# receives and replays too.
export PG_EXTRA_OPTS=${PG_EXTRA_OPTS:-"-c fsync=on -c shared_buffers=512MB -c max_wal_size=4GB -c wal_compression=lz4"}
exec "$(dirname "$0")/bench.sh" "$@"
