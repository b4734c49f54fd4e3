//! Proves spilling of dirty blocks under the RAM budget: the victim is the least
//! recently used dirty block (a fault on a dirty block makes it recent again); another
//! handle's allocation spills too; small-write patches are stored when they alone fill
//! the budget; a spilled block that is invalidated is forgotten; a handle dropped while
//! one of its blocks is being spilled by another thread leaves nothing behind; and
//! threads writing far more than the budget at once end with every byte in the file.
//! Write-behind spills ahead of need once dirty data outgrows the budget, and never
//! before.

mod virtmem_util;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use virtmem_util::*;
use wdb::bigfile::MemFile;
use wdb::virtmem::VirtMem;

#[test]
fn the_victim_is_the_least_recently_used_dirty_block() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    wr(&m, 0, 1);
    wr(&m, BS, 2);
    wr(&m, 2 * BS, 3);
    // A view of its own faults on block 0 again: block 0 becomes the most recent.
    let m2 = h.mmap(0, 8).unwrap();
    assert_eq!(rd(&m2, 0), 1);
    m.load(3 * BS, 1, false).unwrap();
    assert_eq!(
        f.store_log(),
        vec![1],
        "block 1 was the least recently used"
    );
    m.load(4 * BS, 1, false).unwrap();
    // Block 3 is clean: it goes before any dirty block.
    assert_eq!(f.store_log(), vec![1]);
    assert_eq!(vm.stats().evictions, 1);
    wr(&m, 4 * BS, 5);
    m.load(5 * BS, 1, false).unwrap();
    assert_eq!(f.store_log(), vec![1, 2]);
    assert_eq!(vm.stats().spilled, 2 * BS as u64);
}

#[test]
fn another_handle_needing_room_spills() {
    let vm = VirtMem::new(3 * BS as u64).unwrap();
    let a = Arc::new(MemFile::new("a", BS));
    let b = Arc::new(MemFile::new("b", BS));
    let (ha, hb) = (vm.open(a.clone()).unwrap(), vm.open(b.clone()).unwrap());
    let (ma, mb) = (ha.mmap(0, 4).unwrap(), hb.mmap(0, 4).unwrap());
    for k in 0..3 {
        wr(&ma, k * BS, 7);
    }
    assert_eq!(rd(&mb, 0), 0);
    assert_eq!(a.store_log(), vec![0]);
    assert!(b.store_log().is_empty());
    assert_eq!(ha.dirty_blocks(), vec![0, 1, 2]);
    assert_eq!(rd(&ma, 0), 7, "read back from the file");
}

#[test]
fn patches_are_stored_when_they_alone_fill_the_budget() {
    // A budget of 2 blocks of 64 KiB = 32 pages; a patch holds at most 4 pages.
    let (vm, f, h) = setup(2, false);
    let m = h.mmap(0, 64).unwrap();
    for b in 0..12u64 {
        for page in 0..3usize {
            assert!(m
                .write_pages(b as usize * BS + page * 4096, &[b as u8 + 1; 100])
                .unwrap());
        }
        let s = vm.stats();
        assert!(s.ram_used <= 2 * BS as u64, "{s:?}");
    }
    let stored = f.store_log();
    assert!(!stored.is_empty(), "some patches were stored to make room");
    assert!(vm.stats().spill_writes >= stored.len() as u64);
    // Every byte written is there, from a patch or from the file.
    for b in 0..12u64 {
        for page in 0..3usize {
            let off = b as usize * BS + page * 4096;
            assert_eq!(rd(&m, off), b as u8 + 1);
            assert_eq!(rd(&m, off + 100), pattern(b));
        }
    }
}

#[test]
fn an_invalidated_spilled_block_is_forgotten() {
    let (vm, f, h) = setup(3, false);
    let m = h.mmap(0, 8).unwrap();
    for k in 0..4 {
        wr(&m, k * BS, 9);
    }
    assert_eq!(f.store_log(), vec![0]);
    assert_eq!(vm.stats().spilled, BS as u64);
    f.set_block(0, &vec![42u8; BS]).unwrap();
    h.invalidate(0);
    assert_eq!(vm.stats().spilled, 0);
    assert_eq!(h.dirty_blocks(), vec![1, 2, 3]);
    assert_eq!(rd(&m, 0), 42);
}

#[test]
fn a_handle_dropped_during_its_spill_leaves_nothing() {
    let vm = VirtMem::new(3 * BS as u64).unwrap();
    let a = Arc::new(MemFile::new("a", BS));
    let b = Arc::new(MemFile::new("b", BS));
    let ha = vm.open(a.clone()).unwrap();
    let ma = ha.mmap(0, 4).unwrap();
    for k in 0..3 {
        wr(&ma, k * BS, 3);
    }
    // The spill of a's block 0 (by b's reader) waits in the store until a is gone.
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    {
        let (entered, release) = (entered.clone(), release.clone());
        a.set_store_hook(Some(Arc::new(move |_| {
            entered.wait();
            release.wait();
        })));
    }
    let hb = vm.open(b.clone()).unwrap();
    let mb = Arc::new(hb.mmap(0, 4).unwrap());
    let reader = {
        let mb = mb.clone();
        std::thread::spawn(move || rd(&mb, 0))
    };
    entered.wait();
    drop(ma);
    drop(ha);
    release.wait();
    assert_eq!(reader.join().unwrap(), 0);
    let s = vm.stats();
    assert_eq!((s.dirty, s.spilled), (0, 0), "{s:?}");
    assert_eq!(s.ram_used, BS as u64, "only b's block is resident: {s:?}");
    assert_eq!(a.block(0)[0], 3, "the store finished");
}

#[test]
fn threads_writing_eight_times_the_budget_end_with_every_byte_stored() {
    let (vm, f, h) = setup(4, false);
    let m = Arc::new(h.mmap(0, 32).unwrap());
    let ts: Vec<_> = (0..4u64)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for round in 0..3u8 {
                    for k in 0..8 {
                        let blk = (t * 8 + k) as usize;
                        for off in (0..BS).step_by(4096) {
                            wr(&m, blk * BS + off, round * 50 + t as u8 + k as u8);
                        }
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert!(vm.stats().ram_used <= 4 * BS as u64);
    assert!(vm.stats().spill_writes > 0);
    h.writeout().unwrap();
    for t in 0..4u64 {
        for k in 0..8u64 {
            let want = 100 + t as u8 + k as u8;
            let blk = f.block(t * 8 + k);
            assert!(
                blk.chunks(4096).all(|p| p[0] == want),
                "block {} of thread {t}",
                t * 8 + k
            );
        }
    }
}

#[test]
fn write_behind_spills_ahead_once_dirty_data_outgrows_the_budget() {
    // 32 blocks of budget: the reserve write-behind keeps is 2 blocks (1/16).
    let (vm, f, h) = setup(32, false);
    vm.set_write_behind(true);
    let m = h.mmap(0, 64).unwrap();
    // Within the budget: nothing is ever spilled, early or late.
    for k in 0..32 {
        wr(&m, k * BS, 1);
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(f.store_log().is_empty(), "no spill while the data fits");
    // One block more: the fault spills one, and arms write-behind, which spills ahead
    // until 2 blocks are free or clean.
    wr(&m, 32 * BS, 1);
    let t0 = std::time::Instant::now();
    while vm.stats().dirty > 30 * BS as u64 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = vm.stats();
    assert!(s.dirty <= 30 * BS as u64, "{s:?}");
    assert!(s.spill_writes >= 2, "{s:?}");
    // The oldest first.
    assert_eq!(&f.store_log()[..2], &[0, 1]);
}
