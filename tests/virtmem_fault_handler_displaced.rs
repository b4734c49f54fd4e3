//! Proves wdb's SIGSEGV handler coexists with another handler installed after it (as
//! Python's `faulthandler.enable()` does) or before it: `ensure_fault_handler` puts
//! wdb's back on top so views keep faulting in, and a real segfault still runs the
//! other handler exactly once and then kills the process with SIGSEGV (child processes).

mod virtmem_util;

use virtmem_util::*;

/// The action the foreign handler found (and restores before re-raising), as
/// faulthandler keeps it.
static mut PREV_ACTION: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::uninit();

/// A handler written like CPython's faulthandler: report, restore the previous action,
/// re-raise.
extern "C" fn foreign(sig: libc::c_int) {
    let msg = b"foreign handler ran\n";
    // SAFETY: write, sigaction and raise are async-signal-safe; PREV_ACTION was written
    // before this handler was installed.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::sigaction(sig, (&raw const PREV_ACTION).cast(), std::ptr::null_mut());
        libc::raise(sig);
    }
}

fn install_foreign() {
    // SAFETY: installing a valid handler and saving the previous action first.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = foreign as *const () as usize;
        sa.sa_flags = libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, &sa, (&raw mut PREV_ACTION).cast()),
            0
        );
    }
}

fn crash() -> ! {
    // SAFETY: deliberately not safe: a read of an unmapped address must crash.
    unsafe { std::ptr::read_volatile(16 as *const u8) };
    unreachable!();
}

fn check_crash_report(name: &str) {
    let o = run_child(name);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(signal_of(&o), Some(libc::SIGSEGV), "{err}");
    assert_eq!(err.matches("foreign handler ran").count(), 1, "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("views served"),
        "{err}"
    );
}

#[test]
fn handler_installed_after_wdb_is_put_below_it() {
    const NAME: &str = "handler_installed_after_wdb_is_put_below_it";
    if in_child(NAME) {
        let (_vm, _f, h) = setup(4, false);
        let m = h.mmap(0, 4).unwrap();
        assert_eq!(rd(&m, 0), pattern(0));
        install_foreign();
        // Without this, the next fault on `m` would reach the foreign handler first.
        wdb::virtmem::ensure_fault_handler().unwrap();
        assert_eq!(rd(&m, BS), pattern(1));
        // A new mapping checks the handler by itself too.
        install_foreign();
        let m2 = h.mmap(0, 4).unwrap();
        assert_eq!(rd(&m2, 2 * BS), pattern(2));
        assert_eq!(rd(&m, 3 * BS), pattern(3));
        println!("views served");
        crash();
    }
    check_crash_report(NAME);
}

#[test]
fn handler_installed_before_wdb_is_chained() {
    const NAME: &str = "handler_installed_before_wdb_is_chained";
    if in_child(NAME) {
        install_foreign();
        let (_vm, _f, h) = setup(4, false);
        let m = h.mmap(0, 2).unwrap();
        assert_eq!(rd(&m, BS), pattern(1));
        println!("views served");
        crash();
    }
    check_crash_report(NAME);
}

#[test]
fn ensure_is_idempotent_when_on_top() {
    let (_vm, _f, h) = setup(4, false);
    let m = h.mmap(0, 2).unwrap();
    for _ in 0..100 {
        wdb::virtmem::ensure_fault_handler().unwrap();
    }
    assert_eq!(rd(&m, BS), pattern(1));
}
