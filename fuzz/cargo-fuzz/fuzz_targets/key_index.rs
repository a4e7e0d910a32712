//! libFuzzer entry for `ballast_fuzz::key_index` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::key_index(data));
