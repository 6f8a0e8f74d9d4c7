#!/usr/bin/env bash
# Soak: mixed load on a release build against real PostgreSQL (fsync on) and
# Redis for SOAK_MINUTES (default 10); reports RSS, p99 and errors per
# window. A script for a quiet machine, not part of CI. Same set-up as the
# benchmarks, on ports of its own.
export PG_PORT=${PG_PORT:-25832} REDIS_PORT=${REDIS_PORT:-26779} BENCH_DRIVER=soak.py
exec "$(dirname "$0")/bench.sh" "$@"
