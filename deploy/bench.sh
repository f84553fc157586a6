#!/usr/bin/env bash
# The benchmarks as docs/benchmarks.md records them: `bash deploy/bench.sh [NAME] [FLAGS...]`
# runs `funnel bench NAME` (default `ingest`). Starts two scratch nats-servers from the pinned
# binary on free loopback ports, one with `sync_interval: always` (the durable mode every
# deployment runs) and one with the default sync interval (the fast mode, for comparison only),
# checks PostgreSQL, builds the release binary and runs the benchmark with `--nats-url` (durable),
# `--database-url` and, for `ingest`, `--fast-nats-url`; every further flag is passed on
# (e.g. --events 50000). The servers and their stores are removed when it ends.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FUNNEL_ROOT"

bench=ingest
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
  bench="$1"
  shift
fi

ensure_nats_server
ensure_postgres

work="$(mktemp -d -t funnel-bench.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_nats() { # name sync(always|default) -> prints the port
  local name="$1" port
  port="$(free_port)"
  mkdir -p "$work/$name"
  write_nats_config "$work/$name/nats.conf" "$port" "$work/$name/jetstream" "bench_$name"
  if [ "$2" = default ]; then
    sed -i '/sync_interval/d' "$work/$name/nats.conf"
  fi
  "$NATS_SERVER_BIN" -c "$work/$name/nats.conf" >"$work/$name/nats.log" 2>&1 &
  pids+=("$!")
  wait_for_port "$port" 30 || { tail -n 20 "$work/$name/nats.log" >&2; die "nats-server $name did not start"; }
  echo "$port"
}

# Not in $(...): the server must be a child of this shell for the trap to stop it.
start_nats durable always >"$work/durable.port"
start_nats fast default >"$work/fast.port"
durable_port="$(cat "$work/durable.port")"
fast_port="$(cat "$work/fast.port")"
log "nats-server $NATS_SERVER_VERSION: durable (sync_interval: always) on $durable_port, fast (default sync) on $fast_port"

log "building the service (release)"
cargo build --release --locked -p funnel --bin funnel

flags=(--nats-url "nats://127.0.0.1:$durable_port"
  --database-url "${FUNNEL_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}")
if [ "$bench" = ingest ]; then
  flags+=(--fast-nats-url "nats://127.0.0.1:$fast_port")
fi
RUST_LOG="${RUST_LOG:-warn}" "${CARGO_TARGET_DIR:-target}/release/funnel" bench "$bench" \
  "${flags[@]}" "$@"
