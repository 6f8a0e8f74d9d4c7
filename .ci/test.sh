#!/usr/bin/env bash
# The test command: formatting, lints, then the whole suite twice, on the
# embedded defaults (SQLite + in-process cache) and on PostgreSQL + Redis,
# and the API tests a third time with a Redis Cluster as the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/services.sh

install_services
trap stop_services EXIT

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --workspace -- -D warnings

echo "==> suite on SQLite + in-process cache (tests that need Postgres or Redis are ignored)"
env -u TEST_DATABASE_URL -u TEST_REDIS_URL cargo test --workspace

start_postgres
start_replica
start_redis
echo "==> suite on PostgreSQL (with a streaming replica) + Redis (with the tests that need them)"
# The replica test runs alone after it: with the whole suite creating
# databases, the replica's replay has fallen a minute behind.
cargo test --workspace -- --include-ignored --skip replicas::
cargo test --test api -- --include-ignored replicas::

start_redis_cluster
echo "==> API tests on PostgreSQL + Redis Cluster (three masters with a replica each)"
cargo test --test api -- --include-ignored --skip replicas::
