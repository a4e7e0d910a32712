//! libFuzzer entry for `ballast_fuzz::kubelet_api` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::kubelet_api(data));
