//! libFuzzer entry for `ballast_fuzz::h2_authority` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::h2_authority(data));
