#!/usr/bin/env bash
# The main job: builds Ballast and starts a whole cluster on this machine
# (`ballast up`; pass its flags through, e.g. --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -p ballast
exec target/release/ballast up "$@"
