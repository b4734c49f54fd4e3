//! Through the public contract: two transactions that wrote different blocks both commit;
//! the same block, or the shape of one array, makes the second commit fail with Conflict.

use wdb::{Db, Error, Options};

const BLOCK_F64: u64 = (2 << 20) / 8; // elements of f64 in one default 2 MiB block

fn setup(dir: &tempfile::TempDir) -> Db {
    let db = Db::open_with(
        dir.path().join("c.wdb"),
        Options::default().ram_budget(64 << 20),
    )
    .unwrap();
    let tx = db.begin().unwrap();
    tx.create_array::<f64>("A", &[4 * BLOCK_F64]).unwrap();
    tx.commit().unwrap();
    db
}

#[test]
fn different_blocks_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir);
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.array_mut::<f64>("A")
        .unwrap()
        .view_mut(0..1)
        .unwrap()
        .fill(1.0);
    t2.array_mut::<f64>("A")
        .unwrap()
        .view_mut(BLOCK_F64..BLOCK_F64 + 1)
        .unwrap()
        .fill(2.0);
    t1.commit().unwrap();
    t2.commit().unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    assert_eq!(a.view(0..1).unwrap()[[0]], 1.0);
    assert_eq!(a.view(BLOCK_F64..BLOCK_F64 + 1).unwrap()[[0]], 2.0);
}

#[test]
fn same_block_second_commit_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir);
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.array_mut::<f64>("A")
        .unwrap()
        .view_mut(3..4)
        .unwrap()
        .fill(1.0);
    t2.array_mut::<f64>("A")
        .unwrap()
        .view_mut(7..8)
        .unwrap()
        .fill(2.0);
    t1.commit().unwrap();
    let err = t2.commit().unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(
        err.to_string().contains("A"),
        "conflict names the array: {err}"
    );
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    assert_eq!(a.view(3..4).unwrap()[[0]], 1.0);
    assert_eq!(a.view(7..8).unwrap()[[0]], 0.0);
}

#[test]
fn concurrent_resize_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir);
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.array_mut::<f64>("A")
        .unwrap()
        .append(&[1.0; 10])
        .unwrap();
    t2.array_mut::<f64>("A").unwrap().resize(&[3]).unwrap();
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict { .. })));
    assert_eq!(
        db.snapshot().unwrap().array::<f64>("A").unwrap().len(),
        4 * BLOCK_F64 + 10
    );
}

#[test]
fn snapshot_is_isolated_from_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir);
    let before = db.snapshot().unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    a.view_mut(..).unwrap().fill(3.0);
    a.append(&[4.0; 5]).unwrap();
    drop(a);
    let tid = tx.commit().unwrap();
    let a = before.array::<f64>("A").unwrap();
    assert_eq!(a.len(), 4 * BLOCK_F64);
    assert!(a.view(..).unwrap().iter().all(|&x| x == 0.0));
    assert!(before.tid() < tid);
    let now = db.snapshot().unwrap();
    assert_eq!(now.tid(), tid);
    assert!(now
        .array::<f64>("A")
        .unwrap()
        .view(..)
        .unwrap()
        .iter()
        .all(|&x| x != 0.0));
}
