//! Through the public contract: wrong element types, out-of-range views, hostile shapes,
//! borrow-rule violations and writes to read-only databases are clear errors, not panics.

use wdb::{Db, Error, Options};

fn db(dir: &tempfile::TempDir) -> Db {
    Db::open_with(
        dir.path().join("e.wdb"),
        Options::default().ram_budget(32 << 20),
    )
    .unwrap()
}

#[test]
fn wrong_element_type_is_type_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let tx = db.begin().unwrap();
    tx.create_array::<f64>("A", &[10]).unwrap();
    tx.commit().unwrap();
    let snap = db.snapshot().unwrap();
    assert!(matches!(
        snap.array::<i64>("A"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        snap.array::<f32>("A"),
        Err(Error::TypeMismatch { .. })
    ));
    let tx = db.begin().unwrap();
    assert!(matches!(
        tx.array_mut::<u64>("A"),
        Err(Error::TypeMismatch { .. })
    ));
}

#[test]
fn out_of_range_views_and_overflowing_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let tx = db.begin().unwrap();
    let mut a = tx.create_array::<f64>("A", &[10, 3]).unwrap();
    assert!(matches!(a.view(5..11), Err(Error::OutOfRange(_))));
    assert!(matches!(a.view_mut(11..12), Err(Error::OutOfRange(_))));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = a.view(7..3);
    assert!(matches!(backwards, Err(Error::OutOfRange(_))));
    assert!(matches!(
        a.append(&[1.0, 2.0]),
        Err(Error::OutOfRange(_) | Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.resize(&[10, 4]),
        Err(Error::OutOfRange(_) | Error::InvalidArgument(_))
    ));
    assert_eq!(a.view(10..10).unwrap().len(), 0);
    drop(a);
    assert!(matches!(
        tx.create_array::<f64>("B", &[u64::MAX, 2]),
        Err(Error::OutOfRange(_))
    ));
    assert!(matches!(
        tx.create_array::<f64>("C", &[1 << 62]),
        Err(Error::OutOfRange(_))
    ));
    let mut b = tx.create_array::<f64>("D", &[4]).unwrap();
    assert!(matches!(b.resize(&[u64::MAX]), Err(Error::OutOfRange(_))));
}

#[test]
fn second_array_mut_in_one_transaction_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let tx = db.begin().unwrap();
    let a = tx.create_array::<u8>("A", &[10]).unwrap();
    assert!(tx.array_mut::<u8>("A").is_err());
    assert!(tx.array::<u8>("A").is_err());
    drop(a);
    let r1 = tx.array::<u8>("A").unwrap();
    let r2 = tx.array::<u8>("A").unwrap();
    assert!(tx.array_mut::<u8>("A").is_err());
    assert_eq!(r1.len(), r2.len());
    drop((r1, r2));
    assert!(tx.array_mut::<u8>("A").is_ok());
}

#[test]
fn missing_array_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let tx = db.begin().unwrap();
    assert!(matches!(tx.array::<u8>("nope"), Err(Error::NotFound(_))));
    assert!(tx.create_array::<u8>("", &[1]).is_err());
    assert!(matches!(
        db.snapshot_at(wdb::Tid(999)),
        Err(wdb::Error::SnapshotGone { .. })
    ));
}

#[test]
fn read_only_database_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.wdb");
    {
        let db = Db::open(&path).unwrap();
        let tx = db.begin().unwrap();
        tx.create_array::<u8>("A", &[10]).unwrap();
        tx.commit().unwrap();
    }
    let db = Db::open_with(&path, Options::default().read_only(true)).unwrap();
    let snap = db.snapshot().unwrap();
    assert_eq!(snap.array::<u8>("A").unwrap().len(), 10);
    let r = db.begin().and_then(|tx| {
        tx.create_array::<u8>("B", &[1])?;
        tx.commit()
    });
    assert!(matches!(r, Err(Error::ReadOnly(_))), "{r:?}");
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.wdb");
    std::fs::write(
        &path,
        b"this is not a wdb database file at all, just some text",
    )
    .unwrap();
    assert!(Db::open(&path).is_err());
}
