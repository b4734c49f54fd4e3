//! Proves the owned handles for bindings (`wdb::db::owned`): a `Region` keeps its
//! memory reserved and served after its array, transaction, snapshot and `Db` are gone,
//! and shows what the module docs say after commit, abort, a failed commit, a delete
//! and a shrink — without ever changing committed data.

use std::sync::Arc;

use wdb::db::owned::{Region, SharedSnapshot, SharedTransaction, TxOutcome};
use wdb::db::{ArrayOptions, Db, Options};
use wdb::{DType, Error, Order};

const BS: u32 = 64 << 10;
const N: u64 = 100_000; // f64: 800 KB, 13 blocks of 64 KiB

fn f64t() -> DType {
    wdb::array::element_dtype::<f64>().unwrap()
}

fn db(dir: &tempfile::TempDir) -> Db {
    Db::open_with(dir.path().join("o.wdb"), Options::default().block_size(BS)).unwrap()
}

fn read(r: &Region, i: usize) -> f64 {
    assert!((i + 1) * 8 <= r.len());
    // SAFETY: inside the region, which is alive and served by the fault handler.
    unsafe { std::ptr::read_volatile(r.as_ptr().cast::<f64>().add(i)) }
}

fn write(r: &Region, i: usize, v: f64) {
    assert!((i + 1) * 8 <= r.len());
    // SAFETY: as in `read`; a transaction's region is writable.
    unsafe { std::ptr::write_volatile(r.as_ptr().cast::<f64>().add(i), v) }
}

fn sum(r: &Region) -> f64 {
    (0..r.len() / 8).map(|i| read(r, i)).sum()
}

/// A database whose array "A" holds `N` ones.
fn filled(dir: &tempfile::TempDir) -> Db {
    let db = db(dir);
    let tx = SharedTransaction::begin(&db).unwrap();
    let a = tx
        .create_array("A", &f64t(), &[N], ArrayOptions::default())
        .unwrap();
    let ones: Vec<u8> = (0..N).flat_map(|_| 1.0f64.to_le_bytes()).collect();
    a.write_from(0..N, &ones).unwrap();
    tx.commit().unwrap();
    db
}

fn committed_sum(db: &Db) -> f64 {
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    a.to_vec(..).unwrap().iter().sum()
}

#[test]
fn region_after_commit_shows_the_committed_data_and_writes_stay_private() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(&dir);
    let tx = SharedTransaction::begin(&db).unwrap();
    let r = tx.array("A").unwrap().region(0..N).unwrap();
    write(&r, 5, 2.0);
    let t = tx.commit().unwrap();
    assert_eq!(tx.outcome(), Some(TxOutcome::Committed(t)));
    // A later commit by another transaction does not show through r.
    let t2 = SharedTransaction::begin(&db).unwrap();
    t2.array("A")
        .unwrap()
        .write_from(5..6, &3.0f64.to_le_bytes())
        .unwrap();
    t2.commit().unwrap();
    assert_eq!(read(&r, 5), 2.0);
    assert_eq!(sum(&r), N as f64 + 1.0);
    write(&r, 0, 100.0);
    assert_eq!(read(&r, 0), 100.0);
    assert_eq!(committed_sum(&db), N as f64 + 2.0);
    drop(tx);
    drop(db);
    assert_eq!(read(&r, 5), 2.0);
}

#[test]
fn region_after_abort_and_failed_commit_shows_the_start_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(&dir);
    let tx = SharedTransaction::begin(&db).unwrap();
    let r = tx.array("A").unwrap().region(0..N).unwrap();
    write(&r, 1, 9.0);
    tx.abort();
    assert_eq!(read(&r, 1), 1.0);
    assert_eq!(sum(&r), N as f64);

    let t1 = SharedTransaction::begin(&db).unwrap();
    let t2 = SharedTransaction::begin(&db).unwrap();
    t1.array("A")
        .unwrap()
        .write_from(0..1, &5.0f64.to_le_bytes())
        .unwrap();
    let r2 = t2.array("A").unwrap().region(0..N).unwrap();
    write(&r2, 1, 7.0);
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict { .. })));
    assert_eq!(t2.outcome(), Some(TxOutcome::Failed));
    assert_eq!((read(&r2, 0), read(&r2, 1)), (1.0, 1.0));
    assert_eq!(committed_sum(&db), N as f64 + 4.0);
}

#[test]
fn region_of_a_created_then_aborted_or_deleted_array_reads_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(&dir);
    let tx = SharedTransaction::begin(&db).unwrap();
    let b = tx
        .create_array("B", &f64t(), &[1000], ArrayOptions::default())
        .unwrap();
    let rb = b.region(0..1000).unwrap();
    write(&rb, 3, 1.5);
    let ra = tx.array("A").unwrap().region(0..N).unwrap();
    tx.delete_array("A").unwrap();
    assert_eq!(sum(&ra), 0.0);
    write(&ra, 0, 4.0);
    tx.abort();
    assert_eq!(sum(&rb), 0.0);
    assert!(matches!(b.shape(), Err(Error::InvalidArgument(_))));
    assert_eq!(committed_sum(&db), N as f64);
}

#[test]
fn regions_survive_remaps_and_a_shrink_cannot_leak() {
    let dir = tempfile::tempdir().unwrap();
    let db = filled(&dir);
    let tx = SharedTransaction::begin(&db).unwrap();
    let a = tx.array("A").unwrap();
    let old = a.region(0..N).unwrap();
    let more: Vec<u8> = (0..20 * N).flat_map(|_| 2.0f64.to_le_bytes()).collect();
    a.append(&more).unwrap(); // past the reservation: the core remaps
    let new = a.region(0..21 * N).unwrap();
    assert_ne!(old.as_ptr(), new.as_ptr());
    write(&old, 7, 8.0);
    assert_eq!(read(&new, 7), 8.0);
    a.resize(&[10]).unwrap();
    write(&new, 50, 6.0); // past the new end
    write(&new, 20 * N as usize, 6.0);
    tx.commit().unwrap();
    let t2 = SharedTransaction::begin(&db).unwrap();
    let a2 = t2.array("A").unwrap();
    a2.resize(&[21 * N]).unwrap();
    let r = a2.region(0..21 * N).unwrap();
    assert_eq!(read(&r, 7), 8.0);
    assert_eq!((read(&r, 50), read(&r, 20 * N as usize)), (0.0, 0.0));
    assert_eq!(sum(&r), 9.0 + 8.0);
}

#[test]
fn snapshot_regions_outlive_close_and_bytes_cores_match_typed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    // An F-order 2-D array written through the typed API, read back as bytes.
    let tx = db.begin().unwrap();
    {
        let opts = ArrayOptions::default().order(Order::F);
        let mut a = tx.create_array_with::<i32>("F", &[3, 5], opts).unwrap();
        let v: Vec<i32> = (0..15).collect();
        a.write_from(.., &v).unwrap();
    }
    tx.commit().unwrap();
    let s: Arc<SharedSnapshot> = SharedSnapshot::new(&db, None).unwrap();
    let f = s.array("F").unwrap();
    assert_eq!(f.shape().unwrap(), vec![3, 5]);
    assert_eq!(f.order(), Order::F);
    assert!(!f.writable());
    assert!(matches!(f.append(&[0; 12]), Err(Error::ReadOnly(_))));
    let r = f.region(1..3).unwrap(); // columns 1 and 2
    assert_eq!(r.len(), 2 * 3 * 4);
    s.close();
    drop(s);
    drop(f);
    drop(db);
    // SAFETY: inside the live region.
    let got: Vec<i32> = (0..6)
        .map(|i| unsafe { std::ptr::read_volatile(r.as_ptr().cast::<i32>().add(i)) })
        .collect();
    assert_eq!(got, vec![3, 4, 5, 6, 7, 8]);
}
