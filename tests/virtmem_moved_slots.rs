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
            assert_eq!(
                rd(&b, blk as usize * BS + 5),
                want,
                "round {round} blk {blk}"
            );
            assert_eq!(
                rd(&b, blk as usize * BS + BS - 1),
                pattern(blk),
                "round {round}"
            );
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

/// Huge-page sized blocks (the default 2 MiB), where a RAM slot is one anonymous huge
/// page (invariant 11): a slot reused for another block shows only that block, read-only,
/// on every page; a second view promotes the page to the memfd and stays coherent; and a
/// store of a slot living in a view stores its bytes.
#[test]
fn reused_huge_slots_show_only_their_new_block_read_only() {
    const HB: usize = wdb::bigfile::DEFAULT_BLOCK_SIZE;
    let vm = wdb::virtmem::VirtMem::new(2 * HB as u64).unwrap();
    let f = std::sync::Arc::new(wdb::bigfile::MemFile::new("huge", HB));
    for b in 0..4u64 {
        f.set_block(b, &vec![pattern(b); HB]).unwrap();
    }
    let h = vm.open(f.clone()).unwrap();
    let m = h.mmap(0, 4).unwrap();
    let page_sum = |m: &wdb::virtmem::Mapping, blk: usize| -> Vec<u8> {
        (0..HB)
            .step_by(4096)
            .map(|off| rd(m, blk * HB + off))
            .collect()
    };
    // Blocks 0, 1, 2, 3 in turn with room for 2: each load after the second reuses the
    // slot of the block loaded two steps before.
    for round in 0..2 {
        for blk in 0..4usize {
            let want = pattern(blk as u64);
            assert!(
                page_sum(&m, blk).iter().all(|&b| b == want),
                "round {round}: block {blk} shows only its own bytes"
            );
            assert!(h.dirty_blocks().is_empty(), "reads dirty nothing");
        }
    }
    assert!(vm.stats().evictions >= 6);
    let loads = f.loads();
    // The reused slot is mapped read-only: the first write faults and dirties exactly it.
    assert_eq!(rd(&m, 3 * HB + 100), pattern(3));
    assert_eq!(f.loads(), loads, "block 3 is resident");
    wr(&m, 3 * HB + 100, 0xA5);
    assert_eq!(h.dirty_blocks(), vec![3]);
    // Block 0 was evicted: its view block faults and loads again.
    assert_eq!(rd(&m, 5), pattern(0));
    assert_eq!(f.loads(), loads + 1);
    // A second view of the dirty block promotes its page; the two stay coherent.
    let m2 = h.mmap(3, 1).unwrap();
    assert_eq!(rd(&m2, 100), 0xA5);
    assert_eq!(rd(&m2, HB - 1), pattern(3));
    wr(&m2, 200, 0x5A);
    assert_eq!(rd(&m, 3 * HB + 200), 0x5A);
    wr(&m, 3 * HB + 300, 0x77);
    assert_eq!(rd(&m2, 300), 0x77);
    drop(m2);
    // Write out a block whose (anonymous) slot lives in its view, then the promoted one.
    wr(&m, 7, 0x11);
    assert_eq!(h.dirty_blocks(), vec![0, 3]);
    h.writeout().unwrap();
    assert!(h.dirty_blocks().is_empty());
    let b0 = f.block(0);
    assert_eq!((b0[6], b0[7], b0[8]), (pattern(0), 0x11, pattern(0)));
    let b3 = f.block(3);
    assert_eq!((b3[100], b3[200], b3[300]), (0xA5, 0x5A, 0x77));
    assert!(b3[301..].iter().all(|&b| b == pattern(3)));
    // Clean and read-only again after the store.
    wr(&m, 8, 0x22);
    assert_eq!(h.dirty_blocks(), vec![0]);
}

/// Eviction of a huge-page block whose anonymous slot lives in a view, while other
/// threads read that block: a reader must see the block's bytes or fault and wait, never
/// the empty mapping the slot's move home leaves behind (which would read as zeros).
/// Two threads keep re-reading blocks 0 and 1 (a block read without faulting is not
/// touched in the LRU, so it becomes the eviction victim) while two others cycle through
/// blocks 2..8 under a budget of 4 blocks, so their loads evict blocks being read. The
/// race is narrow: the scene is played 20 times.
#[test]
fn readers_never_see_a_huge_slot_leaving_their_view() {
    for _ in 0..20 {
        huge_slot_eviction_under_readers();
    }
}

fn huge_slot_eviction_under_readers() {
    const HB: usize = wdb::bigfile::DEFAULT_BLOCK_SIZE;
    let vm = wdb::virtmem::VirtMem::new(4 * HB as u64).unwrap();
    let f = std::sync::Arc::new(wdb::bigfile::MemFile::new("race", HB));
    for b in 0..8u64 {
        f.set_block(b, &vec![pattern(b); HB]).unwrap();
    }
    let h = vm.open(f.clone()).unwrap();
    let m = std::sync::Arc::new(h.mmap(0, 8).unwrap());
    let ts: Vec<_> = (0..4usize)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for round in 0..150usize {
                    let blk = if t < 2 { t } else { 2 + (round * 2 + t) % 6 };
                    for off in (0..HB).step_by(512) {
                        let got = rd(&m, blk * HB + off);
                        assert_eq!(
                            got,
                            pattern(blk as u64),
                            "thread {t} round {round}: block {blk} at {off}"
                        );
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert!(vm.stats().evictions > 0, "the budget forced evictions");
}

/// Kernel mappings (lines of `/proc/self/maps`) overlapping `[base, base + len)`.
fn kernel_mappings_in(base: usize, len: usize) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| {
            let r = l.split_whitespace().next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            a < base + len && b > base
        })
        .count()
}

/// A slot moved home leaves its view block as a `PROT_NONE` mapping of its own, reset
/// later (invariant 16): when a neighbour's slot leaves (a scan), or in batches. Either
/// way a view keeps a bounded number of kernel mappings (without the resets, two per
/// evicted block), and every evicted block faults and loads its own bytes again.
#[test]
fn evicted_view_blocks_are_reset_in_batches() {
    const N: u64 = 400;
    let vm = wdb::virtmem::VirtMem::new(2 * BS as u64).unwrap();
    let f = std::sync::Arc::new(wdb::bigfile::MemFile::new("scan", BS));
    for b in 0..N {
        f.set_block(b, &vec![pattern(b); BS]).unwrap();
    }
    let h = vm.open(f.clone()).unwrap();
    let m = h.mmap(0, N).unwrap();
    let mappings = || kernel_mappings_in(m.as_ptr() as usize, m.len());
    // A scan: each evicted block is reset when its neighbour leaves.
    for blk in 0..N as usize {
        assert_eq!(rd(&m, blk * BS + 7), pattern(blk as u64), "scan");
    }
    let n = mappings();
    assert!(n <= 8, "after a scan: {n} kernel mappings");
    // Every other block: no neighbour leaves, the batches bound the untidy blocks: at
    // most 32 (each with the reserved piece before it), the two resident blocks, and
    // the reserved space around them.
    for round in 0..2 {
        for blk in (0..N as usize).step_by(2) {
            assert_eq!(rd(&m, blk * BS + 7), pattern(blk as u64), "round {round}");
        }
        let n = mappings();
        assert!(
            n <= 2 * 32 + 2 * 2 + 1,
            "round {round}: {n} kernel mappings"
        );
    }
    assert_eq!(f.loads(), N + N);
}
