#!/usr/bin/env bash
# Migrating a populated database (PARTITION_ROWS events and metrics, default
# 5 million each) to time partitions while writers insert: time, longest
# insert wait, every row and id kept. A script for a quiet machine, not part
# of CI. Same set-up as the benchmarks, on ports of its own.
export PG_PORT=${PG_PORT:-25632} REDIS_PORT=${REDIS_PORT:-26579} BENCH_DRIVER=partition_migration.py
exec "$(dirname "$0")/bench.sh" "$@"
