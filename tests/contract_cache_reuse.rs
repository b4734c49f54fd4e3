//! Through the public contract: pages loaded by one transaction or snapshot are reused
//! by a later one in the same process for every block that did not change in between —
//! a commit that changes one block (and the shape) reloads only that block.

use wdb::{Db, Options};

const BLK: u64 = (2 << 20) / 8; // f64 elements in one 2 MiB block

#[test]
fn later_snapshots_reload_only_changed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(
        dir.path().join("c.wdb"),
        Options::default().ram_budget(256 << 20),
    )
    .unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.create_array::<f64>("A", &[8 * BLK]).unwrap();
    a.view_mut(..).unwrap().fill(1.0);
    drop(a);
    tx.commit().unwrap();

    let loads = || db.memory_stats().unwrap().loads;
    let s1 = db.snapshot().unwrap();
    assert_eq!(
        s1.array::<f64>("A").unwrap().view(..).unwrap().sum(),
        8.0 * BLK as f64
    );
    let after_first = loads();

    // Change block 3 and grow the array by a few rows.
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    a.view_mut(3 * BLK..3 * BLK + 1).unwrap().fill(5.0);
    a.append(&[2.0; 4]).unwrap();
    drop(a);
    tx.commit().unwrap();
    let after_commit = loads();

    let s2 = db.snapshot().unwrap();
    let a = s2.array::<f64>("A").unwrap();
    assert_eq!(a.len(), 8 * BLK + 4);
    assert_eq!(a.view(..).unwrap().sum(), 8.0 * BLK as f64 + 4.0 + 8.0);
    let reloaded = loads() - after_commit;
    // Block 3 and the new block 8 changed; the 7 unchanged blocks come from RAM.
    assert!(
        reloaded <= 2,
        "{reloaded} blocks loaded again, expected at most 2"
    );
    assert!(
        after_first >= 8,
        "the first scan loads every block ({after_first})"
    );
    drop(s1);
}
