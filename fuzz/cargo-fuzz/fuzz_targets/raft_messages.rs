//! libFuzzer entry for `ballast_fuzz::raft_messages` (invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ballast_fuzz::raft_messages(data));
