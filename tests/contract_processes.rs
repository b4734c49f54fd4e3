//! Through the public contract, across processes: a snapshot keeps reading its own tid's
//! data after its pages were reclaimed and another process committed; another process's
//! append shows as a new shape at the next snapshot, without reopening.
//!
//! The child processes are this test binary re-run with `WDB_CHILD` set to the role.

mod child_util;

use wdb::{Db, Options};

const N: u64 = 4 << 20; // 32 MiB of f64: 4x the budget below

/// Not a test of its own: the body of the child processes.
#[test]
fn child_entry() {
    let Some((role, path)) = child_util::role() else {
        return;
    };
    let db = Db::open(&path).unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    match role.as_str() {
        "overwrite" => a.view_mut(..).unwrap().fill(2.0),
        "append" => a.append(&vec![5.0; 1000]).unwrap(),
        other => panic!("unknown role {other}"),
    }
    drop(a);
    tx.commit().unwrap();
}

#[test]
fn snapshot_survives_reclaim_and_foreign_commits() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wdb");
    let db = Db::open_with(&path, Options::default().ram_budget(8 << 20)).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array::<f64>("A", &[0]).unwrap();
    tx.commit().unwrap();
    // Dirty blocks cannot be reclaimed: fill in commits of a quarter of the budget.
    let chunk = vec![1.0; (N / 16) as usize];
    for _ in 0..16 {
        let tx = db.begin().unwrap();
        tx.array_mut::<f64>("A").unwrap().append(&chunk).unwrap();
        tx.commit().unwrap();
    }

    let old = db.snapshot().unwrap();
    let a = old.array::<f64>("A").unwrap();
    assert_eq!(a.view(..).unwrap().sum(), N as f64);
    child_util::run_child_ok("overwrite", &path);
    child_util::run_child_ok("append", &path);
    // The whole array was scanned through an 8 MiB budget, so most pages were reclaimed
    // and reload now: they must come from the old snapshot, not from the head.
    assert_eq!(a.len(), N);
    assert_eq!(a.view(..).unwrap().sum(), N as f64);

    let new = db.snapshot().unwrap();
    let b = new.array::<f64>("A").unwrap();
    assert_eq!(b.len(), N + 1000);
    assert_eq!(b.view(..N).unwrap().sum(), 2.0 * N as f64);
    assert_eq!(b.view(N..).unwrap().sum(), 5000.0);
    let tx = db.begin().unwrap();
    assert_eq!(tx.array::<f64>("A").unwrap().len(), N + 1000);
}
