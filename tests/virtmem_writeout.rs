//! Proves writeout stores dirty blocks in ascending order and leaves them clean and
//! read-only; a store error leaves blocks dirty and the handle usable for a retry;
//! discard drops changes so the next access reloads; writes after writeout re-dirty.

mod virtmem_util;

use virtmem_util::*;

#[test]
fn writeout_stores_ascending_then_clean_and_read_only() {
    let (vm, f, h) = setup(16, false);
    let m = h.mmap(0, 8).unwrap();
    for b in [5usize, 1, 7, 3] {
        wr(&m, b * BS + 1, b as u8 + 100);
    }
    assert_eq!(h.dirty_blocks(), vec![1, 3, 5, 7]);
    h.writeout().unwrap();
    assert_eq!(f.store_log(), vec![1, 3, 5, 7]);
    assert!(h.dirty_blocks().is_empty());
    assert_eq!(vm.stats().dirty, 0);
    assert_eq!(f.block(5)[1], 105);
    assert_eq!(rd(&m, 5 * BS + 1), 105);
    // Clean and read-only again: the next write faults and re-dirties only its block.
    wr(&m, 3 * BS, 1);
    assert_eq!(h.dirty_blocks(), vec![3]);
    h.writeout().unwrap();
    assert_eq!(f.store_log(), vec![1, 3, 5, 7, 3]);
    assert_eq!(f.loads(), 4, "writeout does not reload");
}

#[test]
fn store_error_leaves_blocks_dirty_and_retry_succeeds() {
    let (_vm, f, h) = setup(16, false);
    let m = h.mmap(0, 8).unwrap();
    for b in [2usize, 4, 6] {
        wr(&m, b * BS, 9);
    }
    f.fail_store(4, Some("ENOSPC"));
    let e = h.writeout().unwrap_err();
    assert!(e.to_string().contains("ENOSPC"), "{e}");
    assert_eq!(f.store_log(), vec![2]);
    assert_eq!(
        h.dirty_blocks(),
        vec![4, 6],
        "the failed block and the later ones stay dirty"
    );
    // The handle is usable: write more, then retry.
    wr(&m, 4 * BS + 1, 10);
    assert_eq!(rd(&m, 4 * BS), 9);
    f.fail_store(4, None);
    h.writeout().unwrap();
    assert_eq!(f.store_log(), vec![2, 4, 6]);
    assert_eq!(f.block(4)[1], 10);
    assert!(h.dirty_blocks().is_empty());
}

#[test]
fn discard_drops_changes_and_next_access_reloads() {
    let (vm, f, h) = setup(16, false);
    let m = h.mmap(0, 4).unwrap();
    assert_eq!(rd(&m, 0), pattern(0));
    wr(&m, 0, 1);
    wr(&m, 2 * BS, 2);
    h.discard();
    assert!(h.dirty_blocks().is_empty());
    assert_eq!(vm.stats().dirty, 0);
    assert_eq!(rd(&m, 0), pattern(0));
    assert_eq!(rd(&m, 2 * BS), pattern(2));
    assert_eq!(f.load_count(0), 2);
    assert_eq!(f.load_count(2), 2);
    assert_eq!(f.stores(), 0);
}

#[test]
fn dropping_a_handle_with_dirty_blocks_frees_their_ram() {
    let (vm, _f, h) = setup(16, false);
    let m = h.mmap(0, 4).unwrap();
    wr(&m, 0, 1);
    wr(&m, BS, 1);
    assert_eq!(vm.stats().ram_used, 2 * BS as u64);
    drop(m);
    drop(h);
    assert_eq!(vm.stats().ram_used, 0);
    assert_eq!(vm.stats().dirty, 0);
}

#[test]
fn a_write_during_the_store_of_its_block_waits_and_redirties() {
    use std::sync::{Arc, Barrier};
    let (_vm, f, h) = setup(16, false);
    let h = Arc::new(h);
    let m = Arc::new(h.mmap(0, 2).unwrap());
    wr(&m, 0, 1);
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    {
        let (entered, release) = (entered.clone(), release.clone());
        f.set_store_hook(Some(Arc::new(move |_| {
            entered.wait();
            release.wait();
        })));
    }
    let writer = {
        let h = h.clone();
        std::thread::spawn(move || h.writeout())
    };
    entered.wait(); // block 0 is being stored; its views are read-only
    let w2 = {
        let m = m.clone();
        std::thread::spawn(move || wr(&m, 0, 2)) // faults and waits for the store
    };
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(
        rd(&m, 0),
        1,
        "the waiting write has not landed during the store"
    );
    release.wait();
    writer.join().unwrap().unwrap();
    w2.join().unwrap();
    f.set_store_hook(None);
    assert_eq!(f.block(0)[0], 1, "the store saw the bytes at its start");
    assert_eq!(rd(&m, 0), 2);
    assert_eq!(
        h.dirty_blocks(),
        vec![0],
        "the later write made the block dirty again"
    );
    h.writeout().unwrap();
    assert_eq!(f.block(0)[0], 2);
}

#[test]
fn handles_and_mappings_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<wdb::virtmem::VirtMem>();
    check::<wdb::virtmem::FileHandle>();
    check::<wdb::virtmem::Mapping>();
}
