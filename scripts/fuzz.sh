#!/usr/bin/env bash
# Fuzzes one target of ballast-fuzz (fuzz/src) with real libFuzzer.
#   scripts/fuzz.sh <target> [seconds]          (default 60 seconds)
#   scripts/fuzz.sh list                         the targets
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Without
# them it falls back to the bounded stable run of the same target (the one CI
# runs) with BALLAST_FUZZ_MUTATIONS scaled to the time asked for.
# New inputs libFuzzer finds go to fuzz/cargo-fuzz/corpus/<target> (not
# committed); crashes to fuzz/cargo-fuzz/artifacts/<target>/. The committed
# seeds in fuzz/corpus/<target> are read, never written.
# Reproduce a crash: scripts/fuzz.sh <target> repro <artifact file>.
set -euo pipefail
cd "$(dirname "$0")/.."

storage_targets="etcd_request etcd_raw storage_codecs key_index snapshot_restore h2_authority raft_messages raft_snapshot wal_replay"
all_targets="$storage_targets object_json patch selectors k8s_protobuf kubelet_api"

target="${1:-}"
if [ -z "$target" ] || [ "$target" = list ]; then
  echo "targets: $all_targets"
  [ -z "$target" ] && exit 2 || exit 0
fi
case " $all_targets " in
  *" $target "*) ;;
  *) echo "fuzz.sh: unknown target '$target' (one of: $all_targets)" >&2; exit 2 ;;
esac

features=()
case " $storage_targets " in
  *" $target "*) features=(--features storage) ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain or cargo-fuzz; running the bounded stable run instead" >&2
  secs="${2:-60}"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/ballast/target}"
  case "$target" in
    etcd_request|etcd_raw) test_name=etcd_requests_and_raw_bodies; per_sec=20 ;;
    snapshot_restore|kubelet_api|raft_messages) test_name=$target; per_sec=500 ;;
    raft_snapshot) test_name=$target; per_sec=200 ;;
    wal_replay) test_name=$target; per_sec=20 ;;
    *) test_name=$target; per_sec=5000 ;;
  esac
  BALLAST_FUZZ_MUTATIONS=$((secs * per_sec)) BALLAST_FUZZ_SEED="${BALLAST_FUZZ_SEED:-$RANDOM$RANDOM}" \
    exec cargo test --release -p ballast-fuzz --test bounded -- --exact "$test_name" --nocapture
fi

# Resolve dependencies as the main workspace does (same versions, no surprises).
[ -f fuzz/cargo-fuzz/Cargo.lock ] || cp Cargo.lock fuzz/cargo-fuzz/Cargo.lock
# Its own target directory: libFuzzer builds use nightly with coverage
# instrumentation, so nothing is shared with the stable release build.
fuzz=(cargo +nightly fuzz run --fuzz-dir fuzz/cargo-fuzz -O
  --target-dir "${BALLAST_FUZZ_TARGET_DIR:-/root/.cache/ballast/fuzz-target}" "${features[@]}" "$target")

if [ "${2:-}" = repro ]; then
  exec "${fuzz[@]}" "${3:?artifact file}"
fi

secs="${2:-60}"
mkdir -p "fuzz/cargo-fuzz/corpus/$target"
# Crashes are errors; leaks from the process-wide member (etcd targets) and
# RocksDB's caches are not what this looks for.
exec "${fuzz[@]}" "fuzz/cargo-fuzz/corpus/$target" "fuzz/corpus/$target" -- \
  -max_total_time="$secs" -detect_leaks=0 -timeout=30 -rss_limit_mb=4096
