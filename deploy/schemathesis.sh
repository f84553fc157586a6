#!/usr/bin/env bash
# Fuzzes the running service through its own OpenAPI document with schemathesis (PyPI, pinned):
# no response may be a 5xx or break the documented schema. Starts what it needs: a nats-server
# of its own, a database of its own, and `funnel serve` on a free port.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FUNNEL_ROOT"

SCHEMATHESIS_VERSION="4.32.5"
venv="$FUNNEL_ROOT/.tools/schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$venv/bin/schemathesis" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into .tools/"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

ensure_nats_server
ensure_postgres
work="$(mktemp -d -t funnel-schemathesis.XXXXXX)"
nats_port="$(free_port)"
http_port="$(free_port)"
database="funnel_test_schemathesis_$$"
write_nats_config "$work/nats.conf" "$nats_port" "$work/js" "funnel_schemathesis"
"$NATS_SERVER_BIN" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
nats_pid=$!
service_pid=""
cleanup() {
  [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
  kill "$nats_pid" 2>/dev/null || true
  wait "$nats_pid" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_for_port "$nats_port" 30 || die "nats-server did not start"

cargo build --locked -p funnel --bin funnel
export FUNNEL_NATS_URL="nats://127.0.0.1:$nats_port"
export FUNNEL_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
export FUNNEL_HTTP_ADDR="127.0.0.1:$http_port"
export FUNNEL_STREAM="SCHEMATHESIS"
export RUST_LOG="${RUST_LOG:-warn}"
target/debug/funnel migrate
token="$(target/debug/funnel token create --role admin --name schemathesis)"
target/debug/funnel serve >"$work/service.log" 2>&1 &
service_pid=$!
wait_for_port "$http_port" 60 || { cat "$work/service.log" >&2; die "the service did not start"; }

log "schemathesis $SCHEMATHESIS_VERSION against http://127.0.0.1:$http_port/openapi.json"
# No example database: a seeded run depends on nothing left by an earlier one.
run_schemathesis() {
  "$venv/bin/schemathesis" run "http://127.0.0.1:$http_port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
    --seed 20261130 \
    --generation-database none \
    --workers 2 \
    --no-color 2>&1 | tee "$work/schemathesis.out"
}
status=0
run_schemathesis || status=$?
# schemathesis itself sometimes crashes while generating (a Python "Runtime Error" with no
# failing response, e.g. CPython's "AST constructor recursion depth mismatch"): that says
# nothing about the API, so such a run is repeated once. A run with a failing check never is.
if [ "$status" -ne 0 ] && grep -q "Runtime Error" "$work/schemathesis.out" \
  && ! grep -q "FAILURES" "$work/schemathesis.out"; then
  log "schemathesis crashed without finding a failure; running it once more"
  status=0
  run_schemathesis || status=$?
fi
if [ "$status" -ne 0 ]; then
  log "service log (last 50 lines):"
  tail -n 50 "$work/service.log" >&2
fi
exit "$status"
