#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test.
# Everything builds in the release profile, once (RocksDB's C++ dominates).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
# The cross-crate tests run the `ballast` binary; `cargo test` alone does not
# build a binary for another package's tests.
cargo build --release -p ballast --locked
cargo test --release --workspace --locked
