#!/usr/bin/env bash
# Runs every test: installs the CUDA client toolchains from PyPI (cached in .cache/),
# builds the workspace, then runs unit, property, corpus and end-to-end tests with nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-cuda.sh --python
cargo build --locked -p remora -p remora-shim -p remora-nvjitlink-off -p remora-nvrtc -p remora-nvrtc13 -p remora-nvml
cargo build --locked -p remora-benches --bin remora-relay
# Benches are built (not run) so they do not rot.
cargo bench --locked --no-run -p remora-benches
cargo nextest run --locked --workspace --no-fail-fast "$@"
