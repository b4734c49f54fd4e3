//! Proves the fork rule: a child process does not inherit wdb's memory (MADV_DONTFORK).
//! In the child, a view's address is unmapped — an access is a plain SIGSEGV — and the
//! checked API returns an error (discard/invalidate do nothing); the parent's pages,
//! dirty data and state are untouched.

mod virtmem_util;

use virtmem_util::*;

/// Fork; run `child` in the child and `_exit` with its code; return the wait status.
fn fork_and_wait(child: impl FnOnce() -> i32) -> libc::c_int {
    // SAFETY: the child runs only `child` (no lock of another thread is needed by it:
    // it touches memory and calls the checked API, which fails fast) and then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = child();
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
fn child_sees_no_wdb_memory_and_parent_is_untouched() {
    let (vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    assert_eq!(rd(&m, 0), pattern(0));
    wr(&m, BS, 42);
    let before = vm.stats();

    // Reading a view in the child: SIGSEGV, as for unmapped memory.
    let st = fork_and_wait(|| {
        rd(&m, 0);
        0
    });
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
        "status {st:#x}"
    );

    // Writing a view in the child: SIGSEGV too; the parent's dirty byte is unchanged.
    let st = fork_and_wait(|| {
        wr(&m, BS, 7);
        0
    });
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
        "status {st:#x}"
    );

    // The checked API refuses in the child.
    let st = fork_and_wait(|| {
        let refused = matches!(m.load(0, 1, false), Err(wdb::Error::InvalidArgument(_)))
            && matches!(h.mmap(0, 1), Err(wdb::Error::InvalidArgument(_)))
            && matches!(h.writeout(), Err(wdb::Error::InvalidArgument(_)));
        // State-changing calls without a Result do nothing in the child.
        h.discard();
        h.invalidate(1);
        if refused && h.dirty_blocks().is_empty() {
            0
        } else {
            3
        }
    });
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "status {st:#x}"
    );

    assert_eq!(rd(&m, 0), pattern(0));
    assert_eq!(rd(&m, BS), 42);
    assert_eq!(h.dirty_blocks(), vec![1]);
    assert_eq!(vm.stats(), before);
    h.writeout().unwrap();
    assert_eq!(f.block(1)[0], 42);
}
