//! Through the public contract: committed array data survives reopening, aborted (or
//! dropped) transactions leave no trace, repeatedly, and holes read as zeros.

use wdb::{Db, Error, Options};

fn small() -> Options {
    Options::default().ram_budget(64 << 20)
}

#[test]
fn commit_then_reopen_reads_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.wdb");
    let data: Vec<f64> = (0..300_000).map(|i| i as f64 * 0.5).collect();
    {
        let db = Db::open_with(&path, small()).unwrap();
        let tx = db.begin().unwrap();
        let mut a = tx.create_array::<f64>("A", &[data.len() as u64]).unwrap();
        a.view_mut(..)
            .unwrap()
            .as_slice_mut()
            .unwrap()
            .copy_from_slice(&data);
        drop(a);
        let tid = tx.commit().unwrap();
        assert_eq!(db.last_tid().unwrap(), tid);
    }
    let db = Db::open_with(&path, small()).unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    assert_eq!(a.shape(), &[data.len() as u64]);
    assert_eq!(a.len(), data.len() as u64);
    assert_eq!(a.view(..).unwrap().as_slice().unwrap(), &data[..]);
    assert_eq!(
        a.view(1000..1003)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![500.0, 500.5, 501.0]
    );
}

#[test]
fn abort_restores_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("a.wdb"), small()).unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.create_array::<i32>("A", &[1 << 20]).unwrap();
    a.view_mut(5..10).unwrap().fill(5);
    drop(a);
    tx.commit().unwrap();
    for round in 0..5 {
        let tx = db.begin().unwrap();
        let mut a = tx.array_mut::<i32>("A").unwrap();
        a.view_mut(..).unwrap().fill(round + 100);
        a.append(&[1, 2, 3]).unwrap();
        assert_eq!(a.len(), (1 << 20) + 3);
        drop(a);
        if round % 2 == 0 {
            tx.abort();
        } else {
            drop(tx); // dropping a transaction aborts it
        }
        let snap = db.snapshot().unwrap();
        let a = snap.array::<i32>("A").unwrap();
        assert_eq!(a.len(), 1 << 20);
        let v = a.view(0..12).unwrap().iter().copied().collect::<Vec<_>>();
        assert_eq!(v, vec![0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 0, 0], "round {round}");
    }
}

#[test]
fn holes_read_as_zeros_and_created_array_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("a.wdb"), small()).unwrap();
    let tx = db.begin().unwrap();
    // 1 TiB of u8: a view of it costs no RAM; only touched blocks are materialised.
    let mut a = tx.create_array::<u8>("huge", &[1 << 40]).unwrap();
    a.view_mut((1 << 39)..(1 << 39) + 1).unwrap().fill(9);
    drop(a);
    tx.commit().unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<u8>("huge").unwrap();
    assert_eq!(
        a.view(0..4).unwrap().iter().copied().collect::<Vec<_>>(),
        vec![0, 0, 0, 0]
    );
    assert_eq!(
        a.view((1 << 39) - 1..(1 << 39) + 2)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![0, 9, 0]
    );
}

#[test]
fn shrink_then_grow_reads_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("a.wdb"), small()).unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.create_array::<u64>("A", &[1000]).unwrap();
    a.view_mut(..).unwrap().fill(7);
    a.resize(&[10]).unwrap();
    a.resize(&[1000]).unwrap();
    assert_eq!(
        a.view(8..12).unwrap().iter().copied().collect::<Vec<_>>(),
        vec![7, 7, 0, 0]
    );
    drop(a);
    tx.commit().unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<u64>("A").unwrap();
    a.resize(&[3]).unwrap();
    drop(a);
    tx.commit().unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<u64>("A").unwrap();
    a.resize(&[1000]).unwrap();
    assert_eq!(a.view(..).unwrap().iter().filter(|&&x| x == 7).count(), 3);
    drop(a);
    tx.commit().unwrap();
}

#[test]
fn delete_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("a.wdb"), small()).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array::<f32>("x", &[3]).unwrap();
    tx.create_array::<f32>("y", &[3, 4]).unwrap();
    assert!(matches!(
        tx.create_array::<f32>("x", &[3]),
        Err(Error::AlreadyExists(_))
    ));
    tx.commit().unwrap();
    let tx = db.begin().unwrap();
    let mut names = tx.array_names().unwrap();
    names.sort();
    assert_eq!(names, vec!["x".to_string(), "y".to_string()]);
    tx.delete_array("x").unwrap();
    tx.commit().unwrap();
    let snap = db.snapshot().unwrap();
    assert_eq!(snap.array_names().unwrap(), vec!["y".to_string()]);
    assert!(matches!(snap.array::<f32>("x"), Err(Error::NotFound(_))));
}
