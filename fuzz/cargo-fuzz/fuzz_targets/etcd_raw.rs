//! libFuzzer entry for `ballast_fuzz::etcd_raw` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::etcd_raw(data));
