//! Proves the basic fault behaviour: a block loads exactly once on first read, loaded
//! pages are read-only until the first write, which dirties exactly that block; a first
//! access that is a write dirties at once; aliases of one handle are coherent; dirty
//! blocks survive unmapping; bad arguments are clear errors.

mod virtmem_util;

use std::sync::Arc;

use virtmem_util::*;
use wdb::bigfile::{BigFile, MemFile};
use wdb::virtmem::VirtMem;
use wdb::Error;

#[test]
fn first_read_loads_exactly_once() {
    let (vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    assert_eq!(f.loads(), 0, "mmap costs no load");
    assert_eq!(rd(&m, 0), pattern(0));
    assert_eq!(rd(&m, BS - 1), pattern(0));
    assert_eq!(rd(&m, 100), pattern(0));
    assert_eq!(f.load_count(0), 1);
    assert_eq!(rd(&m, 2 * BS + 5), pattern(2));
    assert_eq!(f.load_count(2), 1);
    assert_eq!(f.loads(), 2);
    assert_eq!(vm.stats().loads, 2);
    assert_eq!(vm.stats().ram_used, 2 * BS as u64);
    assert!(h.dirty_blocks().is_empty(), "reads dirty nothing");
}

#[test]
fn first_write_after_read_dirties_exactly_that_block() {
    let (vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    for b in 0..4 {
        assert_eq!(rd(&m, b * BS), pattern(b as u64));
    }
    wr(&m, 2 * BS + 7, 0xAB);
    assert_eq!(h.dirty_blocks(), vec![2]);
    assert_eq!(rd(&m, 2 * BS + 7), 0xAB);
    assert_eq!(rd(&m, 2 * BS + 8), pattern(2));
    wr(&m, 2 * BS + 9, 0xCD);
    assert_eq!(h.dirty_blocks(), vec![2]);
    assert_eq!(f.loads(), 4, "the write reused the loaded page");
    assert_eq!(vm.stats().dirty, BS as u64);
    assert_eq!(f.block(2)[7], pattern(2), "nothing stored before writeout");
}

#[test]
fn first_access_write_loads_and_dirties_at_once() {
    let (_vm, f, h) = setup(8, false);
    let m = h.mmap(10, 2).unwrap();
    wr(&m, BS + 1, 9);
    assert_eq!(h.dirty_blocks(), vec![11]);
    assert_eq!(f.load_count(11), 1);
    assert_eq!(
        rd(&m, BS),
        pattern(11),
        "the rest of the block is the file's"
    );
    assert_eq!(rd(&m, BS + 1), 9);
}

#[test]
fn aliases_of_one_handle_are_coherent() {
    let (_vm, f, h) = setup(8, false);
    let a = h.mmap(0, 4).unwrap();
    let b = h.mmap(2, 4).unwrap(); // overlaps a on blocks 2, 3
    assert_eq!(rd(&a, 2 * BS), pattern(2));
    assert_eq!(rd(&b, 0), pattern(2));
    wr(&b, 5, 42);
    assert_eq!(
        rd(&a, 2 * BS + 5),
        42,
        "a write through one alias is seen through the other"
    );
    wr(&a, 3 * BS, 43);
    assert_eq!(rd(&b, BS), 43);
    assert_eq!(f.load_count(2), 1);
    assert_eq!(f.load_count(3), 1);
    assert_eq!(h.dirty_blocks(), vec![2, 3]);
}

#[test]
fn dirty_blocks_survive_unmap() {
    let (_vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    wr(&m, BS + 3, 77);
    drop(m);
    assert_eq!(h.dirty_blocks(), vec![1]);
    let m2 = h.mmap(1, 1).unwrap();
    assert_eq!(rd(&m2, 3), 77);
    assert_eq!(f.load_count(1), 1, "found again, not reloaded");
    m2.unmap().unwrap();
}

#[test]
fn checked_load_maps_without_faulting_and_reports_load_errors() {
    let (vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    m.load(BS / 2, BS, false).unwrap(); // blocks 0 and 1
    assert_eq!(f.loads(), 2);
    m.load(3 * BS, 1, true).unwrap();
    assert_eq!(h.dirty_blocks(), vec![3]);
    f.fail_load(2, Some("disk on fire"));
    match m.load(2 * BS, 10, false) {
        Err(Error::Load { file, blk, cause }) => {
            assert_eq!(file, "t");
            assert_eq!(blk, 2);
            assert!(cause.contains("disk on fire"), "{cause}");
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    f.fail_load(2, None);
    m.load(2 * BS, 10, false).unwrap();
    assert_eq!(rd(&m, 2 * BS), pattern(2));
    assert_eq!(vm.stats().ram_used, 4 * BS as u64);
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let vm = VirtMem::new(8 * BS as u64).unwrap();
    assert!(matches!(VirtMem::new(0), Err(Error::InvalidArgument(_))));
    for bad in [0usize, 1000, 4096 * 3, 3 << 20] {
        let f: Arc<dyn BigFile> = Arc::new(MemFile::new("bad", bad));
        assert!(
            matches!(vm.open(f), Err(Error::InvalidArgument(_))),
            "block size {bad}"
        );
    }
    let too_big: Arc<dyn BigFile> = Arc::new(MemFile::new("big", 16 * BS));
    assert!(
        matches!(vm.open(too_big), Err(Error::InvalidArgument(_))),
        "block over budget"
    );
    let h = vm.open(Arc::new(MemFile::new("ok", BS))).unwrap();
    assert!(matches!(h.mmap(0, 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(h.mmap(u64::MAX, 2), Err(Error::OutOfRange(_))));
    assert!(matches!(h.mmap(0, 1 << 40), Err(Error::OutOfRange(_))));
    let m = h.mmap(0, 2).unwrap();
    assert!(matches!(
        m.load(0, 2 * BS + 1, false),
        Err(Error::OutOfRange(_))
    ));
    assert!(matches!(
        m.load(usize::MAX, 2, false),
        Err(Error::OutOfRange(_))
    ));
    m.load(2 * BS, 0, false).unwrap();
    assert_eq!(m.len(), 2 * BS);
    assert_eq!(m.n_blks(), 2);
    assert_eq!(h.block_size(), BS);
}

#[test]
fn errno_is_kept_across_a_fault() {
    let (_vm, _f, h) = setup(8, false);
    let m = h.mmap(0, 1).unwrap();
    // SAFETY: setting this thread's errno.
    unsafe { *libc::__errno_location() = libc::EAGAIN };
    assert_eq!(rd(&m, 0), pattern(0));
    // SAFETY: reading this thread's errno.
    assert_eq!(unsafe { *libc::__errno_location() }, libc::EAGAIN);
}
