//! Proves LRU reclaim under the RAM budget: with RAM for 3 pages the 4th evicts the
//! least recently used clean page, never a dirty one; an evicted page reloads. When
//! only dirty pages are left, the least recently used one is spilled (stored through
//! the file) instead and reads back from there; a spill the file cannot store is an
//! `Err` from the checked API that leaves the block dirty, and stops a faulting process
//! with a message naming the cause.

mod virtmem_util;

use virtmem_util::*;

#[test]
fn fourth_page_evicts_least_recently_used_clean_page() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    assert_eq!(rd(&m, 0), pattern(0));
    assert_eq!(rd(&m, BS), pattern(1));
    assert_eq!(rd(&m, 2 * BS), pattern(2));
    m.load(0, 1, false).unwrap(); // touch block 0: block 1 is now the LRU
    assert_eq!(rd(&m, 3 * BS), pattern(3));
    let s = vm.stats();
    assert_eq!(s.evictions, 1);
    assert_eq!(s.ram_used, 3 * BS as u64);
    // Block 1 was evicted: reading it reloads (and evicts block 2, now the LRU).
    assert_eq!(rd(&m, BS + 1), pattern(1));
    assert_eq!(f.load_count(1), 2);
    assert_eq!(f.load_count(0), 1, "block 0 stayed");
    assert_eq!(rd(&m, 0), pattern(0));
    assert_eq!(f.load_count(0), 1);
}

#[test]
fn dirty_pages_are_never_reclaimed() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    wr(&m, 0, 11); // dirty, and the oldest
    assert_eq!(rd(&m, BS), pattern(1));
    assert_eq!(rd(&m, 2 * BS), pattern(2));
    assert_eq!(rd(&m, 3 * BS), pattern(3)); // evicts 1, not 0
    assert_eq!(rd(&m, 4 * BS), pattern(4)); // evicts 2
    assert_eq!(rd(&m, 0), 11);
    assert_eq!(f.load_count(0), 1);
    assert_eq!(h.dirty_blocks(), vec![0]);
    assert_eq!(vm.stats().evictions, 2);
}

#[test]
fn only_dirty_pages_left_spills_the_least_recently_used_one() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    for b in 0..3 {
        wr(&m, b * BS, 10 + b as u8);
    }
    m.load(3 * BS, 1, false).unwrap();
    assert_eq!(rd(&m, 3 * BS), pattern(3));
    let s = vm.stats();
    assert_eq!((s.spill_writes, s.spilled), (1, BS as u64));
    assert_eq!(s.ram_used, 3 * BS as u64);
    assert_eq!(s.dirty, 2 * BS as u64);
    // Block 0, the least recently dirtied, is in the file now, with the write.
    assert_eq!(f.store_log(), vec![0]);
    assert_eq!(f.block(0)[0], 10);
    assert_eq!(f.block(0)[1], pattern(0));
    assert_eq!(
        h.dirty_blocks(),
        vec![0, 1, 2],
        "a spilled block is still a change"
    );
    // Reading it back loads the spilled content; the clean block 3 makes room.
    assert_eq!(rd(&m, 0), 10);
    assert_eq!(
        f.load_count(0),
        2,
        "loaded for the first write, then after the spill"
    );
    assert_eq!(f.store_log(), vec![0]);
    assert_eq!(vm.stats().spilled, 0, "loaded back");
    assert_eq!(h.dirty_blocks(), vec![1, 2]);
    // A write to block 3 evicts the clean block 0; then only dirty blocks are left,
    // and block 4 spills block 1.
    wr(&m, 3 * BS, 13);
    assert_eq!(rd(&m, 4 * BS), pattern(4));
    assert_eq!(f.store_log(), vec![0, 1]);
    assert_eq!(vm.stats().spilled, BS as u64);
    assert_eq!(rd(&m, BS), 11);
    // Writeout stores what is still dirty; spilled blocks are clean from then on.
    h.writeout().unwrap();
    assert_eq!(h.dirty_blocks(), Vec::<u64>::new());
    assert_eq!(vm.stats().spilled, 0);
    for b in 0..4 {
        assert_eq!(f.block(b as u64)[0], 10 + b as u8);
    }
}

#[test]
fn a_failed_spill_is_an_err_of_the_checked_api_and_leaves_the_block_dirty() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    for b in 0..3 {
        wr(&m, b * BS, 1);
    }
    f.fail_store(0, Some("no space left (injected)"));
    let e = m.load(3 * BS, 1, false).unwrap_err();
    assert!(e.to_string().contains("no space left (injected)"), "{e}");
    let s = vm.stats();
    assert_eq!(
        (s.dirty, s.spilled, s.ram_used),
        (3 * BS as u64, 0, 3 * BS as u64)
    );
    assert_eq!(h.dirty_blocks(), vec![0, 1, 2]);
    assert_eq!(rd(&m, 0), 1, "the block is still dirty in RAM");
    // Once the file can store again, the next spill goes through.
    f.fail_store(0, None);
    m.load(3 * BS, 1, false).unwrap();
    assert_eq!(rd(&m, 3 * BS), pattern(3));
    assert_eq!(vm.stats().spill_writes, 2, "the failed attempt counts too");
}

#[test]
fn fault_whose_spill_fails_aborts_naming_the_cause() {
    const NAME: &str = "fault_whose_spill_fails_aborts_naming_the_cause";
    if in_child(NAME) {
        let (_vm, f, h) = setup(3, false);
        let m = h.mmap(0, 8).unwrap();
        for b in 0..3 {
            wr(&m, b * BS, 1);
        }
        f.fail_store(0, Some("no space left (injected)"));
        rd(&m, 3 * BS);
        unreachable!("the fault must abort");
    }
    let o = run_child(NAME);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(signal_of(&o), Some(libc::SIGABRT), "{err}");
    assert!(
        err.contains("page fault") && err.contains("no space left (injected)"),
        "{err}"
    );
}

#[test]
fn scanning_more_than_the_budget_stays_within_it() {
    let (vm, f, h) = setup(4, false);
    let m = h.mmap(0, 64).unwrap();
    for round in 0..2 {
        for b in 0..64 {
            assert_eq!(rd(&m, b * BS + round), pattern(b as u64));
            assert!(vm.stats().ram_used <= 4 * BS as u64);
        }
    }
    assert_eq!(f.loads(), 128);
}
