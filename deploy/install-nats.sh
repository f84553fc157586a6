#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/ (the tests and the local run use it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_nats_server
echo "$NATS_SERVER_BIN"
