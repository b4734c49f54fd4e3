//! Arbitrary bytes as a database file: fsck, open, reads at every tid, fsck again.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    harness::open_db(dir.path(), data);
});
