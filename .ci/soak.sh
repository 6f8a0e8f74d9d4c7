#!/usr/bin/env bash
# Soak: mixed load on a release build against real PostgreSQL (fsync on) and
# Redis for SOAK_MINUTES (default 10); reports RSS, p99 and errors per
# window. A script for a quiet machine, not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT=${PG_PORT:-55832}
REDIS_PORT=${REDIS_PORT:-56779}
PG_EXTRA_OPTS="-c fsync=on -c shared_buffers=512MB"
. .ci/services.sh
install_services
command -v wrk >/dev/null || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null; }
trap stop_services EXIT
cargo build --release --quiet
start_postgres
start_redis
BENCH_DATABASE_URL="$TEST_DATABASE_URL" BENCH_REDIS_URL="$TEST_REDIS_URL" python3 .ci/soak.py "$@"
