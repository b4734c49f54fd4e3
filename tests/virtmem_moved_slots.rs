//! A RAM page's slot moves into the first view that maps it (invariant 9 in
//! `virtmem/state.rs`) and back to the pool when it leaves: data stays right through
//! aliases, unmapping the owning view, eviction and reuse of the slot, copies of shared
//! pages and writeout.

mod virtmem_util;

use virtmem_util::*;

#[test]
fn unmapping_the_view_that_owns_a_slot_keeps_the_page_for_other_views() {
    let (vm, f, h) = setup(4, false);
    let a = h.mmap(0, 8).unwrap();
    let b = h.mmap(0, 8).unwrap();
    // a maps block 1 first (the slot moves to a); b maps the same page again.
    assert_eq!(rd(&a, BS + 5), pattern(1));
    assert_eq!(rd(&b, BS + 5), pattern(1));
    wr(&b, BS + 5, 0x55);
    assert_eq!(rd(&a, BS + 5), 0x55, "aliases stay coherent");
    drop(a);
    assert_eq!(rd(&b, BS + 5), 0x55, "the page survives its owner view");
    // Cycle more blocks than the budget through b: slots are reused after going home.
    h.writeout().unwrap();
    for round in 0..3 {
        for blk in 0..8u64 {
            let want = if blk == 1 { 0x55 } else { pattern(blk) };
            assert_eq!(rd(&b, blk as usize * BS + 5), want, "round {round} blk {blk}");
            assert_eq!(rd(&b, blk as usize * BS + BS - 1), pattern(blk), "round {round}");
        }
    }
    assert!(vm.stats().evictions > 0);
    assert_eq!(f.block(1)[5], 0x55);
}

#[test]
fn writes_through_a_moved_slot_are_tracked_and_stored() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    for blk in 0..8u64 {
        let off = blk as usize * BS;
        assert_eq!(rd(&m, off), pattern(blk));
        wr(&m, off, blk as u8 + 100);
        assert_eq!(h.dirty_blocks(), vec![blk]);
        h.writeout().unwrap();
        // Clean again and read-only: the next write faults and dirties it again.
        assert!(h.dirty_blocks().is_empty());
        assert_eq!(rd(&m, off), blk as u8 + 100);
        wr(&m, off + 1, 7);
        assert_eq!(h.dirty_blocks(), vec![blk]);
        h.writeout().unwrap();
    }
    for blk in 0..8u64 {
        let b = f.block(blk);
        assert_eq!((b[0], b[1], b[2]), (blk as u8 + 100, 7, pattern(blk)));
    }
    assert!(vm.stats().evictions > 0);
}

#[test]
fn copy_of_a_shared_moved_page_leaves_the_other_handle_intact() {
    let (vm, f, h1) = setup(6, true);
    let h2 = vm.open(f.clone()).unwrap();
    let m1 = h1.mmap(0, 4).unwrap();
    let m2 = h2.mmap(0, 4).unwrap();
    assert_eq!(rd(&m1, 9), pattern(0)); // slot moves to m1
    assert_eq!(rd(&m2, 9), pattern(0)); // same page, mapped again in m2
    assert_eq!(f.loads(), 1);
    wr(&m1, 9, 0xEE); // h1 gets a private copy, read from the moved slot
    assert_eq!(rd(&m1, 9), 0xEE);
    assert_eq!(rd(&m2, 9), pattern(0));
    h1.invalidate(0);
    h2.invalidate(0);
    assert_eq!(rd(&m2, 9), pattern(0));
    assert_eq!(rd(&m1, 9), pattern(0), "invalidate dropped h1's change");
}
