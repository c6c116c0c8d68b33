#!/bin/bash
# Runs every test: unit tests, then the privileged end-to-end tests (real kernel probes, real
# dockerd, real Prometheus), then format and lint checks. As root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --locked
scripts/images.sh
# One thread: the end-to-end tests share the kernel, dockerd and the machine's two CPUs.
cargo test --release --workspace --locked --no-fail-fast -- --test-threads=1
cargo fmt --all --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
