#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what a fresh Debian machine lacks (apt-get),
# checks formatting and lints, then runs every test with ROUTED_E2E=1: tests that need a daemon
# (etcd, and later BIRD, FRR, GoBGP, containerd, network namespaces) run for real and fail when a
# prerequisite is missing. Each etcd test starts its own etcd on free loopback ports and stops it
# by pid when done; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
need() { command -v "$1" >/dev/null || need_pkgs+=("$2"); }
need etcd etcd-server
need etcdctl etcd-client
need protoc protobuf-compiler
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_pkgs+=(libprotobuf-dev)
need cc build-essential
need ip iproute2
need nft nftables
need ping iputils-ping
need containerd containerd
need runc runc
need busybox busybox-static
need bird bird2
# Observability tests (tests/observability.rs): promtool + the Prometheus server, bird_exporter.
need promtool prometheus
need prometheus-bird-exporter prometheus-bird-exporter
need /usr/lib/frr/bgpd frr
need gobgpd gobgpd
need tcpdump tcpdump
need curl curl
need jq jq
# The IPIP tests boot a VM (tests/vm/run.sh installs these itself too; see docs/testing.md).
need qemu-system-x86_64 qemu-system-x86
[ -x /usr/lib/cni/ptp ] || need_pkgs+=(containernetworking-plugins)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "==> installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> tests (ROUTED_E2E=1)"
export ROUTED_E2E=1
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/routed-test-$$.log
status=${PIPESTATUS[0]}
passed=$(grep -Eo '[0-9]+ passed' /tmp/routed-test-$$.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' /tmp/routed-test-$$.log | awk '{s+=$1} END {print s+0}')
rm -f /tmp/routed-test-$$.log
echo "routed: $passed passed, $failed failed"
exit "$status"
