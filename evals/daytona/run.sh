#!/usr/bin/env bash
# Daytona SDK conformance: runs the unmodified, pinned Daytona SDKs (Python sync + async and
# TypeScript) through every flow in py/ and ts/ against real Platinum servers with real VMs: each
# SDK gets a server of its own and the two run at once.
#
#   evals/daytona/run.sh [flow ...]     flows: quickstart files sessions git pty interpreter lsp lifecycle
#                                       snapshots warm_pools images volumes egress_secrets (default: all)
#
# Environment:
#   PLATINUM_BIN        the platinum binary (default: target/debug/platinum of this checkout)
#   DAYTONA_API_URL     use a server that is already running instead of starting one
#   DAYTONA_API_KEY     its API key (required with DAYTONA_API_URL)
#   DAYTONA_EVAL_SKIP_AUTOSTOP=1   skip the one flow step that waits a real minute for auto-stop
#
# The SDKs are installed once into ~/.cache/platinum/sdk (a venv and an npm prefix), never into
# the repository. Exit status: 0 when every flow passed.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
ROOT=$(cd ../.. && pwd)

PY_SDK_VERSION=0.226.1
TS_SDK_VERSION=0.218.0
SDK_DIR="${PLATINUM_CACHE_DIR:-$HOME/.cache/platinum}/sdk"
VENV="$SDK_DIR/py"
NPM_PREFIX="$SDK_DIR/npm"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_sdks() {
  mkdir -p "$SDK_DIR"
  if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('daytona') != '$PY_SDK_VERSION')" 2>/dev/null; then
    log "installing Python daytona==$PY_SDK_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "daytona==$PY_SDK_VERSION"
  fi
  if [ "$(node -p "require('$NPM_PREFIX/node_modules/@daytonaio/sdk/package.json').version" 2>/dev/null)" != "$TS_SDK_VERSION" ]; then
    log "installing @daytonaio/sdk@$TS_SDK_VERSION into $NPM_PREFIX"
    mkdir -p "$NPM_PREFIX"
    npm install --silent --no-audit --no-fund --prefix "$NPM_PREFIX" "@daytonaio/sdk@$TS_SDK_VERSION"
  fi
}

SERVER_PID=
DATA=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$DATA" ]; then rm -rf "$DATA"; fi
}

# start_server [BRIDGE SUBNET]: a server of its own (two at once need two bridges and subnets).
start_server() {
  local bin="${PLATINUM_BIN:-$ROOT/target/debug/platinum}"
  [ -x "$bin" ] || { echo "no platinum binary at $bin (build it, or set PLATINUM_BIN)" >&2; exit 2; }
  DATA=$(mktemp -d "${TMPDIR:-/tmp}/pt-daytona-XXXXXX")
  local port net=()
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ $# -eq 2 ]; then net=(--bridge "$1" --subnet "$2"); fi
  export DAYTONA_API_KEY="pt_daytona_eval_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  log "starting platinum on 127.0.0.1:$port (log: $DATA/server.log)"
  PLATINUM_API_KEY="$DAYTONA_API_KEY" "$bin" up --listen "127.0.0.1:$port" --data-dir "$DATA/data" \
    --no-demo --no-install "${net[@]}" >"$DATA/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/server.log" >&2; exit 2; }
    sleep 1
  done
  export DAYTONA_API_URL="http://127.0.0.1:$port/api"
}

install_sdks
export DAYTONA_TARGET=local NO_PROXY="127.0.0.1,localhost" DAYTONA_SDK_NODE_MODULES="$NPM_PREFIX/node_modules"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy

flows=("$@")
[ ${#flows[@]} -gt 0 ] || flows=(quickstart files sessions git pty interpreter lsp lifecycle snapshots warm_pools images volumes egress_secrets)

# run_lane LANG FAILED: every flow in one SDK, in order; each failing flow is a line of FAILED.
run_lane() {
  local lang=$1 fails=$2 flow
  for flow in "${flows[@]}"; do
    log "$lang: $flow"
    case $lang in
      python) (cd "$HERE/py" && "$VENV/bin/python" "$flow.py") || echo "$lang $flow" >>"$fails" ;;
      typescript) (cd "$HERE/ts" && node "$flow.mjs") || echo "$lang $flow" >>"$fails" ;;
    esac
  done
}

LANES=$(mktemp -d "${TMPDIR:-/tmp}/pt-daytona-lanes-XXXXXX")
trap 'rm -rf "$LANES"' EXIT
if [ -n "${DAYTONA_API_URL:-}" ]; then
  # A server that is already running: one SDK after the other on it.
  : "${DAYTONA_API_KEY:?set DAYTONA_API_KEY with DAYTONA_API_URL}"
  for lang in python typescript; do run_lane "$lang" "$LANES/failed"; done
else
  # Each SDK against a server of its own, both at once: no flow sees the other's sandboxes, and
  # the waits (auto-stop, builds) overlap. Each lane's output is printed when it ends, with its
  # server's last log lines when a flow failed.
  lane() {
    trap stop_server EXIT
    start_server "$2" "$3"
    run_lane "$1" "$LANES/failed"
    if grep -q "^$1 " "$LANES/failed" 2>/dev/null; then tail -50 "$DATA/server.log"; fi
  }
  (lane python pt-dyt-py 10.44.0.0/16) >"$LANES/python.log" 2>&1 &
  py=$!
  (lane typescript pt-dyt-ts 10.45.0.0/16) >"$LANES/typescript.log" 2>&1 &
  ts=$!
  wait "$py" || echo "python lane (exit $?)" >>"$LANES/failed"
  wait "$ts" || echo "typescript lane (exit $?)" >>"$LANES/failed"
  for lang in python typescript; do
    log "---- $lang lane ----"
    cat "$LANES/$lang.log" >&2
  done
fi
failed=()
if [ -s "$LANES/failed" ]; then mapfile -t failed <"$LANES/failed"; fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
log "all Daytona SDK flows passed"
