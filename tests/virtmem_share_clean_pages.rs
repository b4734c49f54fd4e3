//! Proves clean pages are shared between handles whose file gives the same content key
//! (one load for both), and that a write makes a private copy (or claims the page when
//! no other handle uses it) without the other handle seeing the change.

mod virtmem_util;

use virtmem_util::*;

#[test]
fn handles_with_same_content_key_share_one_clean_page() {
    let (vm, f, h1) = setup(8, true);
    let h2 = vm.open(f.clone()).unwrap();
    let (m1, m2) = (h1.mmap(0, 4).unwrap(), h2.mmap(0, 4).unwrap());
    assert_eq!(rd(&m1, BS), pattern(1));
    assert_eq!(rd(&m2, BS), pattern(1));
    assert_eq!(f.load_count(1), 1, "the second handle reused the page");
    assert_eq!(vm.stats().ram_used, BS as u64);
}

#[test]
fn write_to_a_shared_page_copies_it_and_other_handle_keeps_old_content() {
    let (vm, f, h1) = setup(8, true);
    let h2 = vm.open(f.clone()).unwrap();
    let (m1, m2) = (h1.mmap(0, 4).unwrap(), h2.mmap(0, 4).unwrap());
    let m1b = h1.mmap(1, 1).unwrap(); // an alias in h1
    assert_eq!(rd(&m1, BS), pattern(1));
    assert_eq!(rd(&m1b, 0), pattern(1));
    assert_eq!(rd(&m2, BS), pattern(1));
    wr(&m1, BS, 0xEE);
    assert_eq!(rd(&m1b, 0), 0xEE, "h1's alias sees h1's write");
    assert_eq!(rd(&m2, BS), pattern(1), "h2 does not");
    assert_eq!(h1.dirty_blocks(), vec![1]);
    assert!(h2.dirty_blocks().is_empty());
    assert_eq!(vm.stats().ram_used, 2 * BS as u64);
    assert_eq!(f.load_count(1), 1);
}

#[test]
fn write_to_an_unshared_cached_page_claims_it() {
    let (vm, f, h1) = setup(8, true);
    let m1 = h1.mmap(0, 2).unwrap();
    assert_eq!(rd(&m1, 0), pattern(0));
    wr(&m1, 0, 1);
    assert_eq!(vm.stats().ram_used, BS as u64, "claimed, not copied");
    // The claimed page left the cache: a new handle loads the file's content.
    let h2 = vm.open(f.clone()).unwrap();
    let m2 = h2.mmap(0, 1).unwrap();
    assert_eq!(rd(&m2, 0), pattern(0));
    assert_eq!(f.load_count(0), 2);
}

#[test]
fn a_later_handle_reuses_pages_of_a_closed_one() {
    let (vm, f, h1) = setup(8, true);
    let m1 = h1.mmap(0, 4).unwrap();
    for b in 0..4 {
        rd(&m1, b * BS);
    }
    drop(m1);
    drop(h1);
    let h2 = vm.open(f.clone()).unwrap();
    let m2 = h2.mmap(0, 4).unwrap();
    for b in 0..4 {
        assert_eq!(rd(&m2, b * BS), pattern(b as u64));
    }
    assert_eq!(f.loads(), 4, "kept as cached clean pages and reused");
    // A block stored meanwhile has a new key: not reused.
    h2.mmap(0, 1).map(|m| wr(&m, 0, 3)).unwrap();
    h2.writeout().unwrap();
    let h3 = vm.open(f.clone()).unwrap();
    let m3 = h3.mmap(0, 1).unwrap();
    assert_eq!(rd(&m3, 0), 3);
    assert_eq!(f.load_count(0), 2);
}

#[test]
fn evicting_a_shared_page_drops_it_from_every_handle() {
    let (vm, f, h1) = setup(2, true);
    let h2 = vm.open(f.clone()).unwrap();
    let (m1, m2) = (h1.mmap(0, 4).unwrap(), h2.mmap(0, 4).unwrap());
    assert_eq!(rd(&m1, 0), pattern(0));
    assert_eq!(rd(&m2, 0), pattern(0)); // shared
    assert_eq!(rd(&m1, BS), pattern(1));
    assert_eq!(rd(&m1, 2 * BS), pattern(2)); // evicts the shared block 0 page
    assert_eq!(vm.stats().evictions, 1);
    assert_eq!(rd(&m2, 0), pattern(0), "h2 reloads it");
    assert_eq!(f.load_count(0), 2);
}
