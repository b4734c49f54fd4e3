//! Proves the SIGSEGV handler behaves like a device driver: a segfault outside wdb's
//! ranges and a stack overflow still crash as without wdb (checked in child processes),
//! a load error inside a fault stops the process naming file, block and cause, and a
//! load that touches managed memory (a fault inside a fault) is reported, not a deadlock.

mod virtmem_util;

use std::sync::Arc;

use virtmem_util::*;

/// Install the handler (mapping a view does) and fault on it once.
fn with_wdb_installed() -> (
    std::sync::Arc<wdb::virtmem::VirtMem>,
    wdb::virtmem::FileHandle,
    wdb::virtmem::Mapping,
) {
    let (vm, _f, h) = setup(4, false);
    let m = h.mmap(0, 2).unwrap();
    assert_eq!(rd(&m, 0), pattern(0));
    (vm, h, m)
}

#[test]
fn foreign_segfault_still_kills_with_sigsegv() {
    const NAME: &str = "foreign_segfault_still_kills_with_sigsegv";
    if in_child(NAME) {
        let _keep = with_wdb_installed();
        // SAFETY: deliberately not safe: a read of an unmapped address must crash.
        unsafe { std::ptr::read_volatile(16 as *const u8) };
        unreachable!();
    }
    let o = run_child(NAME);
    assert_eq!(
        signal_of(&o),
        Some(libc::SIGSEGV),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn segfault_on_a_dropped_view_is_a_plain_sigsegv() {
    const NAME: &str = "segfault_on_a_dropped_view_is_a_plain_sigsegv";
    if in_child(NAME) {
        let (_vm, h, m) = with_wdb_installed();
        let addr = m.as_ptr() as usize;
        drop(m);
        let _keep = h;
        // SAFETY: deliberately not safe: the range was released.
        unsafe { std::ptr::read_volatile(addr as *const u8) };
        unreachable!();
    }
    let o = run_child(NAME);
    assert_eq!(
        signal_of(&o),
        Some(libc::SIGSEGV),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    std::hint::black_box(&buf);
    recurse(n + 1) + buf[3]
}

#[test]
fn stack_overflow_still_prints_rusts_message() {
    const NAME: &str = "stack_overflow_still_prints_rusts_message";
    if in_child(NAME) {
        let _keep = with_wdb_installed();
        let t = std::thread::spawn(|| recurse(0));
        let _ = t.join();
        unreachable!();
    }
    let o = run_child(NAME);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(signal_of(&o), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("has overflowed its stack"), "{err}");
}

#[test]
fn load_error_inside_a_fault_aborts_naming_file_block_and_cause() {
    const NAME: &str = "load_error_inside_a_fault_aborts_naming_file_block_and_cause";
    if in_child(NAME) {
        let (_vm, f, h) = setup(4, false);
        let m = h.mmap(0, 4).unwrap();
        f.fail_load(3, Some("checksum mismatch"));
        rd(&m, 3 * BS);
        unreachable!();
    }
    let o = run_child(NAME);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(signal_of(&o), Some(libc::SIGABRT), "{err}");
    assert!(
        err.contains("cannot load block 3 of t") && err.contains("checksum mismatch"),
        "{err}"
    );
}

#[test]
fn load_touching_managed_memory_is_reported_not_a_deadlock() {
    const NAME: &str = "load_touching_managed_memory_is_reported_not_a_deadlock";
    if in_child(NAME) {
        let (_vm, f, h) = setup(4, false);
        let m = Arc::new(h.mmap(0, 4).unwrap());
        let addr = m.as_ptr() as usize;
        // The load of block 1 reads block 0 of the same mapping: a fault inside a fault.
        f.set_load_hook(Some(Arc::new(move |blk| {
            if blk == 1 {
                // SAFETY: deliberately wrong: a load must not touch managed memory.
                unsafe { std::ptr::read_volatile(addr as *const u8) };
            }
        })));
        rd(&m, BS);
        unreachable!();
    }
    let o = run_child(NAME);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(signal_of(&o), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("fault inside a fault"), "{err}");
}

fn deep(n: u32) -> u64 {
    // ~16 KiB of stack per level, kept alive by black_box.
    let buf = [u64::from(n); 2048];
    std::hint::black_box(&buf);
    if n == 0 {
        buf[1]
    } else {
        deep(n - 1) + buf[7]
    }
}

#[test]
fn a_load_needing_a_deep_stack_runs_on_the_threads_own_stack() {
    // Rust gives each thread an alternate signal stack of a few KiB; a load that needs
    // ~128 KiB of stack works because the handler serves the fault on the faulting
    // thread's own stack.
    let (_vm, f, h) = setup(4, false);
    f.set_load_hook(Some(Arc::new(|blk| {
        std::hint::black_box(deep(8) + blk);
    })));
    let m = Arc::new(h.mmap(0, 4).unwrap());
    assert_eq!(rd(&m, 0), pattern(0));
    let t = {
        let m = m.clone();
        std::thread::spawn(move || rd(&m, 2 * BS))
    };
    assert_eq!(t.join().unwrap(), pattern(2));
}
