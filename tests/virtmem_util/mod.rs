//! Helpers shared by the virtmem test binaries.
#![allow(dead_code)]

use std::sync::Arc;

use wdb::bigfile::MemFile;
use wdb::virtmem::{FileHandle, Mapping, VirtMem};

/// Small blocks keep the tests fast: 64 KiB.
pub const BS: usize = 64 << 10;

/// A VirtMem of `budget_blocks` blocks, a MemFile whose block `b` is filled with
/// `pattern(b)`, and a handle on it.
pub fn setup(budget_blocks: u64, shared_keys: bool) -> (Arc<VirtMem>, Arc<MemFile>, FileHandle) {
    let vm = VirtMem::new(budget_blocks * BS as u64).unwrap();
    let f = Arc::new(if shared_keys {
        MemFile::new_shared("t", BS)
    } else {
        MemFile::new("t", BS)
    });
    for b in 0..64 {
        f.set_block(b, &vec![pattern(b); BS]).unwrap();
    }
    let h = vm.open(f.clone()).unwrap();
    (vm, f, h)
}

/// The byte block `b` holds in `setup`'s file.
pub fn pattern(b: u64) -> u8 {
    (b as u8).wrapping_mul(7).wrapping_add(1)
}

pub fn rd(m: &Mapping, off: usize) -> u8 {
    assert!(off < m.len());
    // SAFETY: inside the mapping; the fault handler makes it readable.
    unsafe { std::ptr::read_volatile(m.as_ptr().add(off)) }
}

pub fn wr(m: &Mapping, off: usize, v: u8) {
    assert!(off < m.len());
    // SAFETY: inside the mapping; the fault handler makes it writable.
    unsafe { std::ptr::write_volatile(m.as_ptr().add(off), v) }
}

/// Run the test `name` of this binary again in a child process with `WDB_CHILD=name`;
/// the test does its dangerous part only when that variable names it.
pub fn run_child(name: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("WDB_CHILD", name)
        .output()
        .unwrap()
}

pub fn in_child(name: &str) -> bool {
    std::env::var("WDB_CHILD").as_deref() == Ok(name)
}

/// The signal that ended a child, if any.
pub fn signal_of(o: &std::process::Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal()
}
