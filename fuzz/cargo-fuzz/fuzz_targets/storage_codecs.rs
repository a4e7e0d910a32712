//! libFuzzer entry for `ballast_fuzz::storage_codecs` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::storage_codecs(data));
