//! Proves LRU reclaim under the RAM budget: with RAM for 3 pages the 4th evicts the
//! least recently used clean page, never a dirty one; an evicted page reloads; when
//! only dirty pages are left the checked API says RamExhausted and a fault aborts with
//! a message naming the budget and the dirty size.

mod virtmem_util;

use virtmem_util::*;
use wdb::Error;

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
fn only_dirty_pages_left_is_ram_exhausted_in_the_checked_api() {
    let (vm, _f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    for b in 0..3 {
        wr(&m, b * BS, 1);
    }
    match m.load(3 * BS, 1, false) {
        Err(Error::RamExhausted { budget, dirty }) => {
            assert_eq!(budget, 3 * BS as u64);
            assert_eq!(dirty, 3 * BS as u64);
        }
        other => panic!("expected RamExhausted, got {other:?}"),
    }
    // Still usable: after a writeout the pages are clean and reclaimable.
    h.writeout().unwrap();
    m.load(3 * BS, 1, false).unwrap();
    assert_eq!(rd(&m, 3 * BS), pattern(3));
    assert_eq!(vm.stats().ram_used, 3 * BS as u64);
}

#[test]
fn fault_with_only_dirty_pages_left_aborts_naming_budget_and_dirty() {
    const NAME: &str = "fault_with_only_dirty_pages_left_aborts_naming_budget_and_dirty";
    if in_child(NAME) {
        let (_vm, _f, h) = setup(3, false);
        let m = h.mmap(0, 8).unwrap();
        for b in 0..3 {
            wr(&m, b * BS, 1);
        }
        rd(&m, 3 * BS);
        unreachable!("the fault must abort");
    }
    let o = run_child(NAME);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(signal_of(&o), Some(libc::SIGABRT), "{err}");
    let budget = format!("budget {} bytes", 3 * BS);
    let dirty = format!("{} bytes dirty", 3 * BS);
    assert!(err.contains(&budget) && err.contains(&dirty), "{err}");
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
