#!/usr/bin/env bash
# The chaos soak: three Ballast members on their own network namespaces under
# a seeded stream of faults for BALLAST_CHAOS_SECS seconds (default 600), then
# the histories are checked. Prints the summary (faults by kind, operations
# checked, anomalies). Needs root (network namespaces).
#   scripts/chaos-soak.sh [SECONDS] [SEED]
# Replay a run with the seed it printed: scripts/chaos-soak.sh 600 <seed>.
set -euo pipefail
cd "$(dirname "$0")/.."

export BALLAST_CHAOS_SECS="${1:-${BALLAST_CHAOS_SECS:-600}}"
if [ -n "${2:-}" ]; then
  export BALLAST_SEED="$2"
fi
if [ "$(id -u)" != 0 ]; then
  echo "chaos-soak: needs root (it creates network namespaces with ip netns)" >&2
  exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/ballast/target}"
cargo build --release -p ballast --bin ballast
exec cargo test --release --workspace --test e2e -- --ignored chaos::soak --nocapture
