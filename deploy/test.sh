#!/usr/bin/env bash
# Runs the whole test suite against real services: a pinned nats-server of its own (own port,
# temporary store, fsync on every write) and the local PostgreSQL (started when down). Each test
# makes its own stream and database, so the suite runs in parallel.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FUNNEL_ROOT"

ensure_nats_server
ensure_postgres
# The browser tests (tests/e2e/browser.rs) drive Debian's headless Chromium through chromedriver.
[ -x /usr/bin/chromedriver ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

store="$(mktemp -d -t funnel-test-nats.XXXXXX)"
port="$(free_port)"
write_nats_config "$store/nats.conf" "$port" "$store/js" "funnel_test"
"$NATS_SERVER_BIN" -c "$store/nats.conf" >"$store/nats.log" 2>&1 &
nats_pid=$!
# Each test makes a database of its own and leaves it behind (a failed test's data is there to
# look at); a passing run drops them all at the end, and every run drops earlier runs' first.
drop_test_databases() {
  psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
    "SELECT 'DROP DATABASE IF EXISTS \"' || datname || '\" WITH (FORCE);' FROM pg_database WHERE datname LIKE 'funnel\_test\_%'" \
    | psql -h 127.0.0.1 -U postgres -d postgres -q >/dev/null || true
}
cleanup() {
  local status=$?
  kill "$nats_pid" 2>/dev/null || true
  wait "$nats_pid" 2>/dev/null || true
  rm -rf "$store"
  [ "$status" -ne 0 ] || drop_test_databases
}
trap cleanup EXIT
wait_for_port "$port" 30 || { cat "$store/nats.log" >&2; die "nats-server did not start"; }

drop_test_databases

export FUNNEL_TEST_NATS_URL="nats://127.0.0.1:$port"
export FUNNEL_NATS_SERVER_BIN="$NATS_SERVER_BIN"
export FUNNEL_TEST_DATABASE_URL="${FUNNEL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
log "running the test suite (nats-server $NATS_SERVER_VERSION on :$port, PostgreSQL on :5432)"
cargo test --workspace --locked "$@" 2>&1 | tee "$store/cargo-test.log"

# The API fuzzed through its own OpenAPI document: no 5xx, no response outside the schema. The
# service's /metrics is scraped at the end of the run, for the checks below.
FUNNEL_METRICS_OUT="$store/metrics.prom" bash "$FUNNEL_ROOT/deploy/schemathesis.sh"

# The Prometheus configuration, alert rules (and their unit tests), the Grafana dashboard's
# queries, and `promtool check metrics` on that scrape. Counted in the closing line; a failure
# fails the run once that line is printed.
promtool_status=0
bash "$FUNNEL_ROOT/deploy/promtool.sh" --metrics "$store/metrics.prom" 2>&1 \
  | tee "$store/promtool.log" || promtool_status=$?

# One closing line for the whole suite (the fuzzing run above ends with its own summary).
awk '/^test result:/ { passed += $4; failed += $6 }
     /^promtool: [0-9]+ passed, [0-9]+ failed$/ { passed += $2; failed += $4 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' \
  "$store/cargo-test.log" "$store/promtool.log"
exit "$promtool_status"
