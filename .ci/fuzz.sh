#!/usr/bin/env bash
# Fuzzing against the spec: schemathesis (from PyPI) drives every operation
# in openapi.yaml against a live server on PostgreSQL + Redis, with the API
# key and a valid bearer token. Fails on any 5xx and on any status, body,
# content type or header the spec does not declare. Bounded in time.
#
# Operations that end the caller's own session (logout, deactivating or
# deleting oneself) run in a second pass with a token of their own, so they
# cannot turn every later request of the first pass into a 401.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_PORT=${PG_PORT:-25732}
REDIS_PORT=${REDIS_PORT:-26679}
PORT=${FUZZ_PORT:-18500}
EXAMPLES=${FUZZ_MAX_EXAMPLES:-200}
# A fixed seed keeps CI reproducible; FUZZ_SEED=random explores anew.
SEED=${FUZZ_SEED:-20261121}
. .ci/services.sh
install_services
python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
command -v curl >/dev/null || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq curl >/dev/null; }
cargo build --quiet
start_postgres
start_redis
scratch=$(mktemp -d)
server=
cleanup() {
  status=$?
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  if [ "$status" != 0 ] || [ -n "${FUZZ_SHOW_ERRORS:-}" ]; then
    echo "server errors:" >&2
    grep -E 'ERROR|panicked' -A4 "$scratch/server.log" | head -80 >&2 || true
  fi
  stop_services
}
trap cleanup EXIT

export API_KEY=fuzz-api-key PORT METRICS_PORT=$((PORT + 1)) BIND_ADDRESS=127.0.0.1 \
  DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" \
  PASSWORD_HASH_ROUNDS=4 LOG_LEVEL=ERROR
bin=target/debug/platform-server
"$bin" migrate up >/dev/null
# Users the fuzzer makes up ids for (small numbers first) are not ours.
psql "$TEST_DATABASE_URL" -qAt -c "SELECT setval('platform_users_id_seq', 900000)" >/dev/null
ADMIN_EMAIL=fuzz-admin@example.com ADMIN_PASSWORD=fuzz-admin-password "$bin" serve > "$scratch/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done

token() { # email password [register]
  local path=/auth/login
  [ "${3:-}" = register ] && path=/auth/register
  curl -sf -H "X-API-Key: $API_KEY" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" "http://127.0.0.1:$PORT$path" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

checks=not_a_server_error,negative_data_rejection,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
enders=(logout put_profile legacy_put_profile delete_user)
# The live stream never ends, so every valid request would time out; its
# bad inputs (422) and bounds (429) are tested in tests/api/stream.rs.
endless=(stream_events)
seed=
[ "$SEED" = random ] || seed="--seed $SEED"
st() {
  timeout 600 schemathesis run openapi.yaml --url "http://127.0.0.1:$PORT" \
    --checks "$checks" --max-examples "$EXAMPLES" --request-timeout 10 \
    --header "X-API-Key: $API_KEY" --no-color $seed "$@"
}

echo "==> pass 1: every other operation, as an admin"
admin=$(token fuzz-admin@example.com fuzz-admin-password)
st --header "Authorization: Bearer $admin" $(printf -- '--exclude-operation-id %s ' "${enders[@]}" "${endless[@]}")
echo "==> pass 2: operations that end the caller's session, as a user"
user=$(token fuzz-user@example.com fuzz-user-password register)
st --header "Authorization: Bearer $user" $(printf -- '--include-operation-id %s ' "${enders[@]}")
if grep -q panicked "$scratch/server.log"; then
  echo "the server panicked:" >&2; grep -A3 panicked "$scratch/server.log" >&2; exit 1
fi
