#!/usr/bin/env bash
# README's quick start, block 2, and all of CI (.ci/run runs this and nothing else): install
# what the tests need, check formatting and lints, run every test. As root, from the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential iproute2 nftables iputils-ping curl python3 procps conntrack \
  containernetworking-plugins iptables postgresql tcpdump iperf3 python3-scapy \
  clang libbpf1 protobuf-compiler containerd busybox-static dnsutils >/dev/null

# netavark (podman 5's network backend) drives weft-netavark's tests and bench; Debian 12's
# podman 4 has no netavark with plugins. Skipped when this version is already installed.
NETAVARK_VERSION=2.1.0
if ! "${CARGO_HOME:-$HOME/.cargo}/bin/netavark" --version 2>/dev/null | grep -q " $NETAVARK_VERSION\$"; then
  nv_start=$(date +%s)
  cargo install --locked --quiet "netavark@$NETAVARK_VERSION"
  echo "netavark $NETAVARK_VERSION installed in $(( $(date +%s) - nv_start )) s"
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# A throwaway PostgreSQL for the controller's tests (stopped on exit).
if [ -x crates/weft-controller/ci/postgres.sh ]; then
  eval "$(crates/weft-controller/ci/postgres.sh)"
  trap 'crates/weft-controller/ci/postgres.sh stop "${WEFT_TEST_POSTGRES_DIR:-}" >/dev/null 2>&1 || true' EXIT
fi

cargo test --workspace
