#!/usr/bin/env bash
# Installs the pinned Cloud Hypervisor release for Platinum's production VMM driver: the static
# x86_64 binary from the upstream GitHub release, verified against its SHA-256 before anything
# is installed.
#
#   scripts/install-cloud-hypervisor.sh [DEST_DIR]      # default /usr/local/bin (needs root)
#
# Run it on a host whose KVM can boot a stock guest; `platinum doctor` then picks Cloud
# Hypervisor over QEMU. The pin: asset `cloud-hypervisor-static` of release v53.0 (7,062,256
# bytes). To move it, change CH_VERSION and CH_SHA256 together, after checking the new asset's
# digest, and run `cargo test -p platinum-hostagent --test cloud_hypervisor_install`.
set -euo pipefail

CH_VERSION="v53.0"
CH_SHA256="448af3d4e59b22c2987f7df94c213ad40fb53a10d437e42b5ee6c4fce7c29ecc"
CH_URL="https://github.com/cloud-hypervisor/cloud-hypervisor/releases/download/${CH_VERSION}/cloud-hypervisor-static"

dest_dir="${1:-/usr/local/bin}"

if [ "$(uname -m)" != x86_64 ]; then
    echo "install-cloud-hypervisor: the pinned binary is for x86_64, this is $(uname -m)" >&2
    exit 1
fi
for tool in curl sha256sum install; do
    command -v "$tool" >/dev/null || { echo "install-cloud-hypervisor: $tool is missing" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "Downloading Cloud Hypervisor ${CH_VERSION}..."
curl --fail --location --proto '=https' --retry 3 --output "$tmp/cloud-hypervisor" "$CH_URL"
echo "${CH_SHA256}  $tmp/cloud-hypervisor" | sha256sum --check --strict -

install -d "$dest_dir"
install -m 0755 "$tmp/cloud-hypervisor" "$dest_dir/cloud-hypervisor"
"$dest_dir/cloud-hypervisor" --version
