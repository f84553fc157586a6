#!/usr/bin/env bash
# Checks the observability files and the service's /metrics with a pinned promtool (installed
# into .tools/ from Debian's `prometheus` package, see lib.sh's ensure_promtool):
#
#   - promtool check config deploy/prometheus/prometheus.yml
#   - promtool check rules  deploy/prometheus/alerts.yml
#   - promtool test rules   deploy/prometheus/alerts_test.yml
#   - deploy/grafana/funnel-dashboard.json is valid JSON and every query in it parses as PromQL
#   - every funnel_* metric the alerts and the dashboard use is one the service registers
#   - promtool check metrics on a live /metrics scrape, which must hold every metric family the
#     alerts and the dashboard rely on
#
# Usage: bash deploy/promtool.sh [--metrics FILE]
#   --metrics FILE  lint that scrape (deploy/test.sh passes the one schemathesis.sh took after
#                   fuzzing the service); without it a service is started (a nats-server and a
#                   database of its own), sent a few requests, and scraped.
# Prints one line per check and closes with `promtool: N passed, N failed`; exits 1 on a failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FUNNEL_ROOT"

metrics_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --metrics) metrics_file="${2:?--metrics needs a file}"; shift 2 ;;
    *) die "unknown argument: $1 (usage: bash deploy/promtool.sh [--metrics FILE])" ;;
  esac
done

ensure_promtool
work="$(mktemp -d -t funnel-promtool.XXXXXX)"
trap 'stop_service_under_test; rm -rf "$work"' EXIT

passed=0
failed=0
# Runs one check, showing its output; a failure is counted and the other checks still run.
check() { # name command...
  local name="$1"
  shift
  printf -- '--- %s\n' "$name"
  if "$@"; then
    passed=$((passed + 1))
    printf 'ok: %s\n' "$name"
  else
    failed=$((failed + 1))
    printf 'FAILED: %s\n' "$name"
  fi
}

check "promtool check config deploy/prometheus/prometheus.yml" \
  "$PROMTOOL_BIN" check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/alerts.yml" \
  "$PROMTOOL_BIN" check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" \
  "$PROMTOOL_BIN" test rules deploy/prometheus/alerts_test.yml

# The dashboard's queries, with Grafana's variables given values, as recording rules: `promtool
# check rules` parses each of them.
dashboard_queries() {
  python3 - deploy/grafana/funnel-dashboard.json "$work/dashboard-rules.yml" <<'PY' || return 1
import json, sys
with open(sys.argv[1]) as f:
    dashboard = json.load(f)
assert dashboard.get("schemaVersion", 0) >= 36, "schemaVersion"
variables = {v["name"] for v in dashboard["templating"]["list"]}
assert "datasource" in variables, "the dashboard needs a datasource variable"
rules = []
def walk(panels):
    for panel in panels:
        walk(panel.get("panels", []))
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h")
                    .replace("$job", ".+"))
            assert "$" not in expr, f"unknown variable in {expr!r}"
            rules.append((f"dashboard:panel_{panel['id']}_{target['refId']}", expr))
walk(dashboard["panels"])
assert rules, "the dashboard has no queries"
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for name, expr in rules:
        out.write(f"      - record: {name}\n        expr: {json.dumps(expr)}\n")
print(f"{len(rules)} queries in {len(dashboard['panels'])} panels")
PY
  "$PROMTOOL_BIN" check rules "$work/dashboard-rules.yml"
}
check "deploy/grafana/funnel-dashboard.json: JSON and PromQL" dashboard_queries

# Names registered in the Rust sources (the `Opts::new("funnel_...")` literals and the like).
registered_names() {
  grep -rhoE '"funnel_[a-z0-9_]+"' crates/*/src | tr -d '"' | sort -u
}
used_names_are_registered() {
  registered_names >"$work/registered.txt"
  python3 - "$work/registered.txt" deploy/prometheus/alerts.yml deploy/grafana/funnel-dashboard.json <<'PY'
import re, sys
registered = set(open(sys.argv[1]).read().split())
missing = []
for path in sys.argv[2:]:
    for name in sorted(set(re.findall(r"\bfunnel_[a-z0-9_]+", open(path).read()))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in registered and base not in registered:
            missing.append(f"{path}: {name}")
if missing:
    print("not registered by the service:\n  " + "\n  ".join(missing))
    sys.exit(1)
print(f"{len(registered)} metric names registered; every one the alerts and the dashboard use is among them")
PY
}
check "alerts and dashboard use only registered metrics" used_names_are_registered

# A live scrape: the one given, or one of a service started here and sent a few requests.
if [ -z "$metrics_file" ]; then
  metrics_file="$work/metrics.prom"
  # Not through `check`: a step that fails here (the build, say) must stop the script.
  start_service_under_test "$work" promtool
  log "sending a few requests to $SUT_URL, then scraping /metrics"
  exercise_and_scrape "$metrics_file"
fi

lint_scrape() {
  [ -s "$metrics_file" ] || { echo "no scrape in $metrics_file"; return 1; }
  echo "$(grep -c '^# TYPE ' "$metrics_file") metric families, $(grep -vc '^#' "$metrics_file") samples in the scrape"
  "$PROMTOOL_BIN" check metrics <"$metrics_file"
}
check "promtool check metrics on the live /metrics scrape" lint_scrape

# What the alerts and the dashboard rely on must be exported once the service has served a few
# requests (funnel_projection_retries_total appears with the first restart only).
scrape_has_families() {
  local missing=()
  for family in funnel_http_requests_total funnel_http_request_duration_seconds \
    funnel_eventlog_appends_total funnel_eventlog_append_duration_seconds \
    funnel_eventlog_events_appended_total funnel_nats_connected \
    funnel_projection_position funnel_projection_lag_events funnel_projection_lag_seconds \
    funnel_projection_events_applied_total funnel_projection_failed \
    funnel_queue_depth funnel_queue_sla_breaches; do
    grep -q "^# TYPE $family " "$metrics_file" || missing+=("$family")
  done
  [ ${#missing[@]} -eq 0 ] || { echo "missing from the scrape: ${missing[*]}"; return 1; }
  grep -q '^funnel_nats_connected 1$' "$metrics_file" || { echo "funnel_nats_connected is not 1"; return 1; }
  echo "every metric family the alerts and the dashboard use is in the scrape"
}
check "the scrape holds the families the alerts and dashboard use" scrape_has_families

echo "promtool: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
