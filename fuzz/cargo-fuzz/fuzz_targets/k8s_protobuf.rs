//! libFuzzer entry for `ballast_fuzz::k8s_protobuf` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::k8s_protobuf(data));
