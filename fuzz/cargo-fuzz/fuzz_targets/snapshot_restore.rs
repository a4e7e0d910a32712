//! libFuzzer entry for `ballast_fuzz::snapshot_restore` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::snapshot_restore(data));
