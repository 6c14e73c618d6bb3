#!/usr/bin/env bash
# Builds the guest agent as a static x86_64 binary (glibc, crt-static; no musl target needed) and
# prints the path of the result. Used by the initramfs builder.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -p platinum-guest --release --target x86_64-unknown-linux-gnu >&2
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
echo "$target_dir/x86_64-unknown-linux-gnu/release/platinum-guest"
