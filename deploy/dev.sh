#!/usr/bin/env bash
# The local run: installs the pinned nats-server if needed, starts it with JetStream on loopback
# (store under .data/, kept across runs), checks PostgreSQL, builds the service, applies
# migrations, provisions the stream and serves at http://127.0.0.1:8080 until Ctrl-C, with a
# live demo: a seeded recruitment simulation posting through the API (FUNNEL_DEMO=0: none).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FUNNEL_ROOT"

NATS_PORT="${FUNNEL_DEV_NATS_PORT:-14222}"
DATA_DIR="$FUNNEL_ROOT/.data"
export FUNNEL_NATS_URL="${FUNNEL_NATS_URL:-nats://127.0.0.1:$NATS_PORT}"
export FUNNEL_DATABASE_URL="${FUNNEL_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/funnel}"
export FUNNEL_HTTP_ADDR="${FUNNEL_HTTP_ADDR:-127.0.0.1:8080}"
# Per-item queue logs would drown the demo's console: they stay at warn here.
export RUST_LOG="${RUST_LOG:-info,funnel_api::routes::queues=warn}"

ensure_nats_server
ensure_postgres

mkdir -p "$DATA_DIR/nats"
pidfile="$DATA_DIR/nats/nats-server.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  log "stopping the nats-server left running by an earlier run"
  kill "$(cat "$pidfile")" && while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.1; done
fi
write_nats_config "$DATA_DIR/nats/nats.conf" "$NATS_PORT" "$DATA_DIR/nats/jetstream" "funnel_dev"
log "starting nats-server $NATS_SERVER_VERSION on 127.0.0.1:$NATS_PORT (store: .data/nats)"
"$NATS_SERVER_BIN" -c "$DATA_DIR/nats/nats.conf" -P "$pidfile" >>"$DATA_DIR/nats/nats.log" 2>&1 &
nats_pid=$!
trap 'kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true' EXIT
wait_for_port "$NATS_PORT" 30 || { tail -n 20 "$DATA_DIR/nats/nats.log" >&2; die "nats-server did not start"; }

log "building the service (release)"
cargo build --release --locked -p funnel --bin funnel
funnel="${CARGO_TARGET_DIR:-target}/release/funnel"

log "applying migrations and provisioning the stream"
"$funnel" migrate
"$funnel" stream provision

# An admin token for trying the API, created once and kept (readable by this user only).
token_file="$DATA_DIR/admin-token"
if [ ! -s "$token_file" ]; then
  (umask 077; "$funnel" token create --role admin --name "local admin" >"$token_file")
fi
"$funnel" serve &
serve_pid=$!
# Stops, in order, the simulation (it hands its work items back to the service), the service
# (it drains what it has in flight) and nats-server.
stop_all() {
  local pid
  for pid in "${sim_pid:-}" "$serve_pid" "$nats_pid"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT
# The service and the simulation run in the background: Ctrl-C (or SIGTERM) ends the script,
# and with it, through the EXIT trap, everything it started.
trap 'exit 130' INT TERM
http_port="${FUNNEL_HTTP_ADDR##*:}"
wait_for_port "$http_port" 60 || die "the service did not start"

if [ "${FUNNEL_DEMO:-1}" != "0" ]; then
  # The demo: two studies with their sites and campaigns, referrals arriving at 8 a second, agents
  # working the queues, sites of varying responsiveness; a simulated day passes every 2 seconds.
  "$funnel" simulate --url "http://$FUNNEL_HTTP_ADDR" --seed "$(date +%s)" \
    --studies 2 --sites 100-160 --rate 8 --progress-every 30s >>"$DATA_DIR/simulate.log" 2>&1 &
  sim_pid=$!
fi

log "serving at http://$FUNNEL_HTTP_ADDR  (health: /health, metrics: /metrics, API: /openapi.json)"
log "admin token (kept in .data/admin-token): $(cat "$token_file")"
if [ -n "${sim_pid:-}" ]; then
  log "live demo: open http://$FUNNEL_HTTP_ADDR/ui/ and sign in with the admin token; the simulation's log is .data/simulate.log"
fi
log "Ctrl-C stops it all"
wait "$serve_pid"
