#!/usr/bin/env bash
# E2B SDK conformance: runs the official, unmodified E2B SDKs (Python `e2b` 2.63.0 +
# `e2b-code-interpreter` 2.11.5, JS `e2b` 2.51.0 + `@e2b/code-interpreter` 2.8.0) against a
# Platinum server, one Python script and one Node script per flow.
#
#   evals/e2b/run.sh --install            install the pinned SDKs (idempotent), run nothing
#   evals/e2b/run.sh [--python|--js] [flow ...]
#
# Flows: lifecycle commands terminal files code_interpreter concurrency snapshots templates
# volumes egress_secrets (default: all).
# Needs E2B_API_URL and either E2B_API_KEY (a Platinum API key in E2B's form, `e2b_` + hex: the
# SDKs refuse any other form; `platinum keys create --name NAME --format e2b` makes one) or
# PLATINUM_API_KEY (any Platinum key: the run creates an e2b-form key with it through
# `POST /v1/keys` and revokes that key when it ends). E2B_SANDBOX_URL and E2B_VOLUME_API_URL
# (the volume content API) default to E2B_API_URL (one port serves all three). E2B_FLOW_UPLOAD_LIMIT (bytes) enables the oversized-upload
# checks. The SDKs live in $PLATINUM_CACHE_DIR/sdk/e2b (a venv and an npm prefix), never globally.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${PLATINUM_CACHE_DIR:-$HOME/.cache/platinum}"
sdk="$cache/sdk/e2b"
py="$sdk/py/bin/python"
node_dir="$sdk/node"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_python() {
  if [ -x "$py" ] && "$py" - "$here/requirements.txt" <<'PY' 2>/dev/null; then return 0; fi
import importlib.metadata as m, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        assert m.version(name) == version, name
PY
  log "installing the Python E2B SDKs into $sdk/py"
  python3 -m venv "$sdk/py"
  "$py" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
}

install_node() {
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$major" -lt 20 ]; then
    echo "the JS E2B SDKs need Node >= 20 (found $(node --version))" >&2
    exit 1
  fi
  mkdir -p "$node_dir"
  if cmp -s "$here/package.json" "$node_dir/package.json" \
    && node -e '
      const p = require(process.argv[1]);
      for (const [n, v] of Object.entries(p.dependencies))
        if (require(`${process.argv[2]}/node_modules/${n}/package.json`).version !== v) process.exit(1)
    ' "$here/package.json" "$node_dir" 2>/dev/null; then
    return 0
  fi
  log "installing the JS E2B SDKs into $node_dir"
  cp "$here/package.json" "$node_dir/package.json"
  (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >&2)
}

languages=(python js)
flows=()
install_only=false
for arg in "$@"; do
  case "$arg" in
    --install) install_only=true ;;
    --python) languages=(python) ;;
    --js) languages=(js) ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) flows+=("$arg") ;;
  esac
done
[ ${#flows[@]} -gt 0 ] || flows=(lifecycle commands terminal files code_interpreter concurrency snapshots templates volumes egress_secrets)

install_python
install_node
$install_only && exit 0

: "${E2B_API_URL:?set E2B_API_URL to the Platinum server, e.g. http://127.0.0.1:7070}"
if [ -z "${E2B_API_KEY:-}" ] && [ -n "${PLATINUM_API_KEY:-}" ]; then
  # A key for this run, in E2B's form, made through the API; revoked when the run ends.
  keys_api() { # METHOD PATH [JSON BODY] -> response body on stdout
    python3 - "$@" <<'PY'
import json, os, sys, urllib.request
method, path = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(
    os.environ["E2B_API_URL"].rstrip("/") + path, data=body, method=method,
    headers={"Authorization": "Bearer " + os.environ["PLATINUM_API_KEY"],
             "Content-Type": "application/json"})
with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30) as r:
    print(r.read().decode())
PY
  }
  created="$(keys_api POST /v1/keys '{"name": "e2b-conformance", "format": "e2b"}')"
  E2B_API_KEY="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' <<<"$created")"
  e2b_key_id="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$created")"
  export E2B_API_KEY
  trap 'keys_api DELETE "/v1/keys/$e2b_key_id" >/dev/null || echo "revoking API key $e2b_key_id failed" >&2' EXIT
  log "created API key $e2b_key_id (e2b form) for this run"
fi
: "${E2B_API_KEY:?set E2B_API_KEY to an e2b-form Platinum API key, or PLATINUM_API_KEY to any Platinum API key}"
if ! [[ "$E2B_API_KEY" =~ ^e2b_[0-9a-f]+$ ]]; then
  echo "E2B_API_KEY is not in E2B's form (e2b_ followed by hex digits), which the SDKs require;" >&2
  echo "create one with: platinum keys create --name e2b --format e2b" >&2
  exit 2
fi
export E2B_SANDBOX_URL="${E2B_SANDBOX_URL:-$E2B_API_URL}"
export E2B_VOLUME_API_URL="${E2B_VOLUME_API_URL:-$E2B_API_URL}"
unset E2B_DOMAIN E2B_DEBUG
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# Node resolves packages from the script's directory upwards, so the flows run from a copy
# inside the npm prefix.
mkdir -p "$node_dir/flows"
cp "$here"/*.mjs "$node_dir/flows/"

failed=()
for flow in "${flows[@]}"; do
  for lang in "${languages[@]}"; do
    started=$SECONDS
    log "$flow ($lang)"
    if [ "$lang" = python ]; then
      cmd=("$py" "$here/$flow.py")
    else
      cmd=(node "$node_dir/flows/$flow.mjs")
    fi
    if "${cmd[@]}"; then
      echo "PASS $flow ($lang) $((SECONDS - started))s"
    else
      echo "FAIL $flow ($lang) $((SECONDS - started))s"
      failed+=("$flow ($lang)")
    fi
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "E2B conformance failures: ${failed[*]}" >&2
  exit 1
fi
echo "E2B conformance: all flows passed"
