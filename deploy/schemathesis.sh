#!/usr/bin/env bash
# Fuzzes the running service through its own OpenAPI document with schemathesis (PyPI, pinned):
# no response may be a 5xx or break the documented schema. Starts what it needs: a nats-server
# of its own, a database of its own, and `funnel serve` on a free port (lib.sh's
# start_service_under_test). With FUNNEL_METRICS_OUT=FILE it leaves the service's /metrics after
# the run in FILE (deploy/test.sh lints it with deploy/promtool.sh).
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

work="$(mktemp -d -t funnel-schemathesis.XXXXXX)"
trap 'stop_service_under_test; rm -rf "$work"' EXIT
start_service_under_test "$work" schemathesis

log "schemathesis $SCHEMATHESIS_VERSION against $SUT_URL/openapi.json"
# No example database: a seeded run depends on nothing left by an earlier one. One worker:
# with two threads, CPython 3.11's `ast` module (which hypothesis uses to describe lambdas)
# can fail with "AST constructor recursion depth mismatch", a thread-safety bug of the
# interpreter (fixed in later CPython releases), crashing the tool mid-run.
run_schemathesis() {
  "$venv/bin/schemathesis" run "$SUT_URL/openapi.json" \
    --header "Authorization: Bearer $SUT_TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
    --seed 20261130 \
    --generation-database none \
    --workers 1 \
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
# For deploy/promtool.sh (run by deploy/test.sh): the service's /metrics after fuzzing, when
# every route has seen requests (and an append has gone through: fuzzed input rarely makes
# one), so that `promtool check metrics` lints series with samples.
if [ -n "${FUNNEL_METRICS_OUT:-}" ]; then
  exercise_and_scrape "$FUNNEL_METRICS_OUT" || { log "could not scrape $SUT_URL/metrics"; status=1; }
fi
if [ "$status" -ne 0 ]; then
  log "service log (last 50 lines):"
  tail -n 50 "$SUT_LOG" >&2
fi
exit "$status"
