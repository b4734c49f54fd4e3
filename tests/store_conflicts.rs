//! Optimistic commit: the same block (or one array's metadata) written by two
//! transactions → the second gets Conflict naming it; different blocks both commit.

use wdb::db::{ArraySpec, Compression, Db, Order};
use wdb::Error;

const BS: usize = 64 << 10;

fn spec(name: &str) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![1 << 20],
        order: Order::C,
        block_size: BS as u32,
        compression: Compression::None,
    }
}

fn setup() -> (tempfile::TempDir, Db, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("x.wdb")).unwrap();
    let tx = db.begin().unwrap();
    let id = tx.create_array_raw(spec("A")).unwrap().id;
    tx.commit().unwrap();
    (dir, db, id)
}

#[test]
fn same_block_conflicts_and_names_array_and_block() {
    let (_d, db, id) = setup();
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.write_block(id, 3, &vec![1u8; BS]).unwrap();
    t2.write_block(id, 3, &vec![2u8; BS]).unwrap();
    let won = t1.commit().unwrap();
    match t2.commit() {
        Err(Error::Conflict { what, by, .. }) => {
            assert_eq!(what, "array \"A\" block 3");
            assert_eq!(by, won);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut buf = vec![0u8; BS];
    db.snapshot().unwrap().read_block(id, 3, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 1));
}

#[test]
fn different_blocks_both_commit() {
    let (_d, db, id) = setup();
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.write_block(id, 0, &vec![1u8; BS]).unwrap();
    t2.write_block(id, 1, &vec![2u8; BS]).unwrap();
    t1.commit().unwrap();
    t2.commit().unwrap();
    let s = db.snapshot().unwrap();
    let mut buf = vec![0u8; BS];
    s.read_block(id, 0, &mut buf).unwrap();
    assert_eq!(buf[0], 1);
    s.read_block(id, 1, &mut buf).unwrap();
    assert_eq!(buf[0], 2);
}

#[test]
fn two_shape_changes_of_one_array_conflict() {
    let (_d, db, _id) = setup();
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.set_shape("A", &[10]).unwrap();
    t2.set_shape("A", &[20]).unwrap();
    t1.commit().unwrap();
    match t2.commit() {
        Err(Error::Conflict { what, .. }) => assert_eq!(what, "array \"A\" metadata"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        db.snapshot().unwrap().array_info("A").unwrap().shape,
        vec![10]
    );
}

#[test]
fn writing_blocks_of_an_array_deleted_meanwhile_conflicts() {
    let (_d, db, id) = setup();
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.delete_array("A").unwrap();
    t2.write_block(id, 0, &vec![1u8; BS]).unwrap();
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict { .. })));
    let r = db.fsck().unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
}

#[test]
fn threads_committing_disjoint_blocks_all_succeed() {
    let (_d, db, id) = setup();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..5u64 {
                    let tx = db.begin().unwrap();
                    tx.write_block(id, t * 100 + i, &vec![(t + 1) as u8; BS])
                        .unwrap();
                    tx.commit().unwrap();
                }
            });
        }
    });
    assert_eq!(db.history().unwrap().len(), 21);
    assert!(db.fsck().unwrap().is_clean());
}
