//! libFuzzer entry for `ballast_fuzz::wal_replay` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::wal_replay(data));
