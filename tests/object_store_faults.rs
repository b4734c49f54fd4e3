//! Injected faults of the object store (an `ObjectStore` wrapper over the in-memory
//! store): server errors, timeouts and truncated bodies are retried; when they do not
//! stop, the commit returns a clear `Err` and nothing of it is visible — never a
//! partial commit, never wrong data.
#![cfg(feature = "s3")]

mod object_util;

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::ObjectStore;
use object_util::{Fault, Faulty, Plan};
use wdb::db::{ArrayOptions, Compression, Db, Options};
use wdb::Tid;

fn setup(dir: &tempfile::TempDir, name: &str) -> (Arc<InMemory>, Arc<Plan>, Db) {
    let mem = Arc::new(InMemory::new());
    let (db, plan) = open(&mem, dir, name);
    (mem, plan, db)
}

fn open(mem: &Arc<InMemory>, dir: &tempfile::TempDir, name: &str) -> (Db, Arc<Plan>) {
    open_with(mem, dir, name, Arc::new(Plan::default())).unwrap()
}

fn open_with(
    mem: &Arc<InMemory>,
    dir: &tempfile::TempDir,
    name: &str,
    plan: Arc<Plan>,
) -> wdb::Result<(Db, Arc<Plan>)> {
    let store = Arc::new(Faulty {
        inner: mem.clone(),
        plan: plan.clone(),
    }) as Arc<dyn ObjectStore>;
    let o = Options::default()
        .cache_dir(dir.path().join(name))
        .cache_size(64 << 20)
        .ram_budget(64 << 20);
    Ok((Db::open_object_store("mem://faults", store, "f", o)?, plan))
}

fn write(db: &Db, v: u64) -> wdb::Result<Tid> {
    let tx = db.begin()?;
    let mut x = match tx.array_mut::<u64>("x") {
        Ok(x) => x,
        Err(_) => tx.create_array_with::<u64>(
            "x",
            &[1 << 18],
            ArrayOptions::default().compression(Compression::None),
        )?,
    };
    x.view_mut(..)?.fill(v);
    drop(x);
    tx.commit()
}

fn value(db: &Db) -> (Tid, u64, u64) {
    let s = db.snapshot().unwrap();
    let x = s.array::<u64>("x").unwrap();
    let v = x.view(..).unwrap();
    (s.tid(), v[[0]], v[[(1 << 18) - 1]])
}

#[test]
fn transient_errors_and_timeouts_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (_mem, plan, db) = setup(&dir, "a");
    write(&db, 1).unwrap();
    // 5xx on the commit object and on the listing; timeouts on the data object.
    plan.arm(Fault::ServerError, 3, "/wdb/c/");
    assert_eq!(write(&db, 2).unwrap(), Tid(2));
    plan.arm(Fault::Timeout(Duration::from_millis(100)), 2, "/wdb/c/");
    assert_eq!(write(&db, 3).unwrap(), Tid(3));
    assert!(plan.fired.load(std::sync::atomic::Ordering::SeqCst) >= 5);
    assert_eq!(value(&db), (Tid(3), 3, 3));
    assert!(db.fsck().unwrap().is_clean());
}

#[test]
fn persistent_errors_give_a_clear_err_and_no_partial_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, plan, db) = setup(&dir, "a");
    write(&db, 1).unwrap();
    // Every commit object request fails: the data objects went up, the commit did not.
    plan.arm(Fault::ServerError, 1000, "/wdb/c/");
    let e = write(&db, 2).unwrap_err();
    assert!(e.to_string().contains("wdb/c/"), "{e}");
    plan.arm(Fault::ServerError, 0, "");
    // Another machine sees the last acknowledged commit, whole.
    let (other, _) = open(&mem, &dir, "b");
    assert_eq!(value(&other), (Tid(1), 1, 1));
    assert!(other.fsck().unwrap().is_clean());
    // The writer itself goes on (nothing of its failed commit was published).
    let t = write(&db, 5);
    match t {
        Ok(t) => {
            assert_eq!(t, Tid(2));
            assert_eq!(value(&other), (Tid(2), 5, 5));
        }
        Err(wdb::Error::Poisoned(_)) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn truncated_bodies_are_fetched_again_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, _plan, db) = setup(&dir, "a");
    write(&db, 7).unwrap();
    drop(db);
    // A fresh cache: the reads go to the store; two cut bodies, then a whole one.
    // (Open reads the commit objects.)
    let plan = Arc::new(Plan::default());
    plan.arm(Fault::Truncate, 2, "/wdb/c/");
    let (db, plan) = open_with(&mem, &dir, "b", plan).unwrap();
    assert_eq!(value(&db), (Tid(1), 7, 7));
    assert_eq!(plan.fired.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(db);
    // Bodies cut every time: a clear corruption error naming the object.
    let plan = Arc::new(Plan::default());
    plan.arm(Fault::Truncate, 1000, "/wdb/c/");
    let e = open_with(&mem, &dir, "c", plan).unwrap_err().to_string();
    assert!(e.contains("/wdb/c/") && e.contains("truncated"), "{e}");
}
