#!/usr/bin/env bash
# Postgres at scale: SCALE_ROWS events and as many metrics (default 50
# million each) in the time partitions; ingest against the empty and the
# full tables, dashboard and usage latency, retention dropping a day.
# BENCH_REPLICA=1 adds a streaming replica and reads the dashboard from it
# while ingest runs at full rate. Needs about 45 GB of disk per 100 million
# rows (twice that with the replica). A script for a quiet machine, not
# part of CI.
export PG_PORT=${PG_PORT:-25732} REDIS_PORT=${REDIS_PORT:-26679} BENCH_DRIVER=scale.py
# No wal_compression: with lz4 one 50-million-row run here was slower
# throughout (README, fourth run). One run cannot tell that from this
# machine's swing, so the settings stay those of the earlier runs.
export PG_EXTRA_OPTS=${PG_EXTRA_OPTS:-"-c fsync=on -c shared_buffers=512MB -c max_wal_size=4GB"}
exec "$(dirname "$0")/bench.sh" "$@"
