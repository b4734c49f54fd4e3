//! Proves the in-memory fake BigFile counts loads and stores, records store order,
//! injects errors per block, runs hooks, and gives content keys that change on store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wdb::bigfile::{BigFile, ContentKeys, MemFile, DEFAULT_BLOCK_SIZE};

#[test]
fn memfile_counts_errors_hooks_and_keys() {
    assert_eq!(DEFAULT_BLOCK_SIZE, 2 << 20);
    let f = MemFile::new_shared("m", 4096);
    let mut buf = vec![0u8; 4096];
    f.load_blk(5, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0),
        "never-written blocks are zeros"
    );
    f.set_block(5, &[1, 2, 3]).unwrap();
    assert!(f.set_block(5, &[0; 5000]).is_err());
    f.load_blk(5, &mut buf).unwrap();
    assert_eq!(&buf[..4], &[1, 2, 3, 0]);
    let k1 = f.content_key(5).unwrap();
    f.store_blk(5, &[9; 4096]).unwrap();
    assert_ne!(f.content_key(5).unwrap(), k1, "a store changes the key");
    assert!(f.store_blk(6, &[9; 10]).is_err(), "wrong length");
    f.fail_load(7, Some("bad"));
    assert!(f
        .load_blk(7, &mut buf)
        .unwrap_err()
        .to_string()
        .contains("bad"));
    f.fail_store(8, Some("full"));
    assert!(f.store_blk(8, &[0; 4096]).is_err());
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    f.set_load_hook(Some(Arc::new(move |b| s2.store(b + 100, Ordering::SeqCst))));
    f.load_blk(1, &mut buf).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 101);
    assert_eq!(f.loads(), 4);
    assert_eq!(f.load_count(5), 2);
    assert_eq!(f.stores(), 3);
    assert_eq!(f.store_log(), vec![5]);
    assert_eq!(f.name(), "m");
    assert_eq!(MemFile::new("n", 4096).content_key(0), None);
}
