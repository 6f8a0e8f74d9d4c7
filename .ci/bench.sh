#!/usr/bin/env bash
# Benchmarks: builds the release binary, starts a throwaway PostgreSQL (with
# fsync on: acknowledged means durable) and Redis on loopback, runs the
# scenarios with wrk. Pass --quick for a few seconds per scenario.
# BENCH_DRIVER picks another driver in .ci/ (soak.sh runs soak.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT=${PG_PORT:-25532}
REDIS_PORT=${REDIS_PORT:-26479}
PG_EXTRA_OPTS=${PG_EXTRA_OPTS:-"-c fsync=on -c shared_buffers=512MB"}
. .ci/services.sh
install_services
command -v wrk >/dev/null || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null; }
trap stop_services EXIT
cargo build --release --quiet
start_postgres
# BENCH_REPLICA=1: a streaming replica beside it (scale.sh reads from it).
if [ -n "${BENCH_REPLICA:-}" ]; then start_replica; export BENCH_REPLICA_URL="$TEST_REPLICA_URL"; fi
start_redis
BENCH_DATABASE_URL="$TEST_DATABASE_URL" BENCH_REDIS_URL="$TEST_REDIS_URL" python3 ".ci/${BENCH_DRIVER:-bench.py}" "$@"
