#!/usr/bin/env bash
# Platinum's two entry points on a Debian 12 machine (run as root):
#
#   ./platinum.sh up [platinum up flags]   build everything, then `platinum up`: installs the host
#                                          dependencies, builds the guest image, serves on
#                                          127.0.0.1:7070 and starts a demo sandbox.
#   ./platinum.sh test                     everything CI runs (.ci/run calls this).
#
# Builds are cached under ~/.cache/platinum (cargo target dir, installed tools, guest images).
set -euo pipefail
cd "$(dirname "$0")"

CACHE="${PLATINUM_CACHE_DIR:-$HOME/.cache/platinum}"
export PLATINUM_CACHE_DIR="$CACHE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export CARGO_INSTALL_ROOT="$CACHE/tools"
export PATH="$CARGO_INSTALL_ROOT/bin:$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Phase timing: `phase NAME` closes the previous phase and opens NAME; `phase_table` prints them.
PHASES=()
PHASE_NAME=""
PHASE_START=$(date +%s)
RUN_START=$PHASE_START
phase() {
  local now; now=$(date +%s)
  [ -n "$PHASE_NAME" ] && PHASES+=("$(printf '%-58s %6ss' "$PHASE_NAME" $((now - PHASE_START)))")
  PHASE_NAME="$1"; PHASE_START=$now
  [ -n "$1" ] && log "$1"
  return 0
}
phase_table() {
  phase ""
  printf '\n%-58s %7s\n' "phase" "time" >&2
  printf '%s\n' "${PHASES[@]}" >&2
  printf '%-58s %6ss\n' "total" $(( $(date +%s) - RUN_START )) >&2
  if [ -s "${TEST_LOG:-}" ]; then
    printf '\n%-58s %7s\n' "test binaries (3 s or more; two run at a time)" "time" >&2
    test_binary_times "$TEST_LOG" >&2
  fi
}

# Each test binary's own time, from `cargo test` output: its name (from the `Running` line) and
# the `finished in` of its result line, longest first.
test_binary_times() {
  awk '
    /^ *Running / {
      if (match($0, /\([^)]*\)/)) {
        n = split(substr($0, RSTART + 1, RLENGTH - 2), parts, "/")
        name = parts[n]; sub(/-[0-9a-f]+$/, "", name)
        if ($2 == "unittests") name = name " (unit tests)"
      }
      next
    }
    /^ *Doc-tests / { name = "doc tests of " $2; next }
    /^test result:/ && match($0, /finished in [0-9.]+s/) {
      secs = substr($0, RSTART + 12, RLENGTH - 13) + 0
      if (secs >= 3) printf "%d\t%-58s %6.0fs\n", secs, "  " name, secs
    }' "$1" | sort -rn | cut -f2-
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "run this as root (it installs Debian packages and runs VMs)" >&2
    exit 1
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    log "installing Rust (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
}

ensure_backports() {
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/platinum-backports.list
  fi
}

# Host packages: QEMU 10 from backports, image tools, and the test helpers.
host_packages() {
  ensure_backports
  if ! dpkg -s qemu-system-x86 >/dev/null 2>&1 || ! qemu-system-x86_64 --version | grep -qE 'version (9|[1-9][0-9])\.'; then
    apt-get update -q
    log "installing QEMU from bookworm-backports"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
  fi
  apt_install nftables iproute2 mmdebstrap kmod e2fsprogs xfsprogs busybox-static pkg-config libseccomp-dev libcap-ng-dev curl ca-certificates
}

# Test-only packages: the OCI registry the template-build tests start on loopback. Its package
# would start a registry service; a policy-rc.d that refuses service starts keeps it stopped.
test_packages() {
  dpkg -s docker-registry >/dev/null 2>&1 && return 0
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; created=1; fi
  apt_install docker-registry
  if [ "$created" = 1 ]; then rm -f "$policy"; fi
}

ensure_vsock_daemon() {
  if ! command -v vhost-device-vsock >/dev/null; then
    log "cargo install vhost-device-vsock (cached in $CARGO_INSTALL_ROOT)"
    cargo install --locked --quiet vhost-device-vsock
  fi
}

# virtiofsd serves each sandbox's host share (/mnt/dnah-share); 1.11+ migrates its state, which
# pause to disk needs.
VIRTIOFSD_VERSION=1.14.0
ensure_virtiofsd() {
  if ! virtiofsd --version 2>/dev/null | grep -q "$VIRTIOFSD_VERSION"; then
    log "cargo install virtiofsd $VIRTIOFSD_VERSION (cached in $CARGO_INSTALL_ROOT)"
    cargo install --locked --quiet virtiofsd --version "$VIRTIOFSD_VERSION"
  fi
}

# Test-only: the S3-compatible server the archive tests start on loopback (s3s-fs keeps objects
# as files; 0.14 is the newest release that builds with this project's Rust).
S3S_FS_VERSION=0.14.1
ensure_s3_server() {
  if ! s3s-fs --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
    log "cargo install s3s-fs $S3S_FS_VERSION (cached in $CARGO_INSTALL_ROOT)"
    cargo install --locked --quiet s3s-fs --version "$S3S_FS_VERSION" --features binary
  fi
}

# Cargo rebuilds a crate when a source file is newer than its last build, and a fresh clone makes
# every file new. In CI (`.ci/run`: a clean clone each time, builds only through this script),
# each tracked file whose content is what the last successful build saw gets an old fixed time,
# so a warm run rebuilds only what changed; changed and new files keep the clone's time.
# `BUILT_SOURCES` records (git blob, path) of what was built; it is written after a build.
BUILT_SOURCES="$CACHE/built-sources.$(pwd | cksum | cut -d' ' -f1)"
# "blob<TAB>path" of every tracked file, when the tree is a CI clone exactly as committed (the
# index is then what is on disk); nothing otherwise.
source_blobs() {
  [ "${PLATINUM_CI:-}" = 1 ] && [ -d .git ] || return 0
  [ -z "$(git status --porcelain --untracked-files=no)" ] || return 0
  git ls-files -s | awk -F'\t' '{ split($1, a, " "); print a[2] "\t" $2 }'
}
reuse_unchanged_builds() {
  [ -s "$BUILT_SOURCES" ] || return 0
  local unchanged
  unchanged=$(source_blobs | grep -Fxf "$BUILT_SOURCES" | cut -f2-) || true
  [ -n "$unchanged" ] || return 0
  printf '%s\n' "$unchanged" | tr '\n' '\0' | xargs -0 -r touch -h -d @946684800
  log "$(printf '%s\n' "$unchanged" | wc -l) of $(git ls-files | wc -l) files unchanged since the last build"
}
record_built_sources() {
  local blobs
  blobs=$(source_blobs)
  [ -z "$blobs" ] || printf '%s\n' "$blobs" > "$BUILT_SOURCES"
}

build() {
  local profile="$1"
  log "building the guest agent (static)"
  guest/build-static.sh >/dev/null
  log "building platinum ($profile)"
  if [ "$profile" = release ]; then cargo build --release -p platinum; else cargo build --workspace --all-targets; fi
}

cmd_up() {
  need_root
  ensure_rust
  host_packages
  ensure_vsock_daemon
  ensure_virtiofsd
  build release
  # Where a new shell finds it, so every hint `up` prints works as printed.
  ln -sf "$CARGO_TARGET_DIR/release/platinum" /usr/local/bin/platinum
  log "installed /usr/local/bin/platinum ($(/usr/local/bin/platinum --version))"
  exec "$CARGO_TARGET_DIR/release/platinum" up "$@"
}

cmd_test() {
  need_root
  ensure_rust
  # The table is printed however the run ends (a failing phase included).
  trap phase_table EXIT
  phase "host packages (apt, QEMU from backports)"
  host_packages
  test_packages
  phase "vhost-device-vsock, virtiofsd, s3s-fs (cargo install, cached)"
  ensure_vsock_daemon
  ensure_virtiofsd
  ensure_s3_server
  phase "format and lint"
  reuse_unchanged_builds
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
  phase "build (guest agent, workspace)"
  build debug
  record_built_sources
  phase "guest images (base, code-interpreter-v1)"
  "$CARGO_TARGET_DIR/debug/platinum" image build
  # The E2B code interpreter's default template (its flows create sandboxes from it).
  "$CARGO_TARGET_DIR/debug/platinum" image build --template code-interpreter-v1
  phase "E2B SDK installs (pinned Python and JS)"
  evals/e2b/run.sh --install
  phase "MCP and OpenAPI clients (MCP SDK, Inspector, validators, skills)"
  evals/mcp/setup.sh
  phase "cargo test --workspace (real VMs)"
  # VM-booting tests share two cores; run test binaries' tests two at a time.
  TEST_LOG=$(mktemp)
  # Every test binary runs even after one fails, so a red run lists every failure.
  cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$TEST_LOG"
  phase "Daytona SDK conformance (pinned Python and TypeScript SDKs, real VMs)"
  PLATINUM_BIN="$CARGO_TARGET_DIR/debug/platinum" evals/daytona/run.sh
  phase "benchmarks (figures only, no thresholds)"
  # The binary the workspace build made: `cargo run -p platinum-evals` would resolve the
  # dependencies' features for that package alone and build a second copy of the workspace.
  "$CARGO_TARGET_DIR/debug/platinum-evals" --iterations 5
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  test) shift; cmd_test "$@" ;;
  *) echo "usage: $0 up [flags] | test" >&2; exit 2 ;;
esac
