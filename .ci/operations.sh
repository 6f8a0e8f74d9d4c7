#!/usr/bin/env bash
# Many replicas run and failed for real: a Redis Cluster master killed under
# load, and three servers behind nginx with one killed (see operations.py).
# Uses the debug binary (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT=${PG_PORT:-25732}
REDIS_PORT=${REDIS_PORT:-26679}
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-17101}
. .ci/services.sh
install_services
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
# The package starts its own daemon on port 80; this run needs none.
(systemctl stop nginx || service nginx stop) >/dev/null 2>&1 || true
trap stop_services EXIT
cargo build --quiet
start_postgres
start_redis
start_redis_cluster
OPS_DATABASE_URL="$TEST_DATABASE_URL" OPS_REDIS_URL="$TEST_REDIS_URL" \
  OPS_REDIS_CLUSTER_NODES="$TEST_REDIS_CLUSTER_NODES" OPS_REDIS_CLUSTER_DIR="$SERVICES_DIR/cluster" \
  python3 .ci/operations.py
