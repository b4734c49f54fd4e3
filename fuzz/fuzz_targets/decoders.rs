//! Every decoder of the storage format on arbitrary bytes: no panic, no hang.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::decoders(data));
