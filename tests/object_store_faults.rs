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

/// Data objects are streamed into cache files as they arrive: a body cut short is
/// fetched again; one cut every time is a clear corruption error naming the object,
/// and leaves no cache file behind (the same database reads right once the store
/// serves whole bodies again).
#[test]
fn truncated_data_objects_are_fetched_again_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, _plan, db) = setup(&dir, "a");
    write_blocks(&db, 3, 4).unwrap();
    drop(db);
    let plan = Arc::new(Plan::default());
    plan.arm(Fault::Truncate, 2, "/wdb/d/");
    let (db, plan) = open_with(&mem, &dir, "b", plan).unwrap();
    check_blocks(&db, 3, 4);
    assert_eq!(plan.fired.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(db);
    let plan = Arc::new(Plan::default());
    plan.arm(Fault::Truncate, 1000, "/wdb/d/");
    let (db, plan) = open_with(&mem, &dir, "c", plan).unwrap();
    let s = db.snapshot().unwrap();
    let x = s.array::<u64>("big").unwrap();
    let e = x.to_vec(0..8).unwrap_err().to_string();
    assert!(e.contains("/wdb/d/") && e.contains("truncated"), "{e}");
    plan.arm(Fault::Truncate, 0, "");
    assert_eq!(
        x.to_vec(0..8).unwrap(),
        (0..8).map(|i| i * 3 + 4).collect::<Vec<u64>>()
    );
    check_blocks(&db, 3, 4);
}

/// Commit objects are created in order, so a `begin` with nothing new costs one GET of
/// the next commit object and no LIST; another machine's commits are seen all the same.
#[test]
fn a_begin_with_nothing_new_is_one_get_and_new_commits_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, plan, db) = setup(&dir, "a");
    write(&db, 1).unwrap();
    plan.log.lock().clear();
    drop(db.begin().unwrap());
    assert_eq!(plan.count("GET", "/wdb/c/0000000000000002"), 1);
    assert_eq!(plan.count("LIST", ""), 0);
    assert_eq!(plan.log.lock().len(), 1, "{:?}", plan.log.lock());
    let (other, _) = open(&mem, &dir, "b");
    write(&other, 2).unwrap();
    write(&other, 3).unwrap();
    plan.log.lock().clear();
    assert_eq!(value(&db), (Tid(3), 3, 3));
    assert_eq!(plan.count("LIST", "/wdb/c/"), 1);
    // Commit 2 came with the probe: only commit 3 is fetched on top of it.
    assert_eq!(plan.count("GET", "/wdb/c/0000000000000002"), 1);
    assert_eq!(plan.count("GET", "/wdb/c/0000000000000003"), 1);
}

/// A reopen reads the commit objects its cache holds and asks the store only for the one
/// after them: no LIST when there is nothing new; the commits another machine made
/// meanwhile are listed and fetched, and the cached ones are not fetched again.
#[test]
fn a_reopen_reads_its_cached_commits_and_lists_only_when_there_are_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, _plan, db) = setup(&dir, "a");
    for v in 1..=3 {
        write(&db, v).unwrap();
    }
    // A reader fetches the three commit objects, and caches them.
    let (r, _) = open(&mem, &dir, "r");
    assert_eq!(value(&r), (Tid(3), 3, 3));
    drop(r);
    let (r, plan) = open(&mem, &dir, "r");
    assert_eq!(plan.count("LIST", "/wdb/c/"), 0, "{:?}", plan.log.lock());
    assert_eq!(plan.count("GET", "/wdb/c/"), 1, "{:?}", plan.log.lock());
    assert_eq!(plan.count("GET", "/wdb/c/0000000000000004"), 1);
    assert_eq!(value(&r), (Tid(3), 3, 3));
    drop(r);
    write(&db, 4).unwrap();
    write(&db, 5).unwrap();
    let (r, plan) = open(&mem, &dir, "r");
    assert_eq!(value(&r), (Tid(5), 5, 5));
    assert_eq!(plan.count("LIST", "/wdb/c/"), 1, "{:?}", plan.log.lock());
    for t in 1..=3 {
        assert_eq!(plan.count("GET", &format!("/wdb/c/{t:016x}")), 0);
    }
    assert!(r.fsck().unwrap().is_clean());
}

fn write_blocks(db: &Db, blocks: u64, v: u64) -> wdb::Result<Tid> {
    let tx = db.begin()?;
    let n = blocks << 18;
    let mut x = match tx.array_mut::<u64>("big") {
        Ok(x) => x,
        Err(_) => tx.create_array_with::<u64>(
            "big",
            &[n],
            ArrayOptions::default().compression(Compression::None),
        )?,
    };
    let vals: Vec<u64> = (0..n).map(|i| i * 3 + v).collect();
    x.write_from(0..n, &vals)?;
    drop(x);
    tx.commit()
}

fn check_blocks(db: &Db, blocks: u64, v: u64) {
    let s = db.snapshot().unwrap();
    let x = s.array::<u64>("big").unwrap();
    let view = x.view(..).unwrap();
    for i in (0..blocks << 18).step_by(4093) {
        assert_eq!(view[[i as usize]], i * 3 + v, "element {i}");
    }
}

/// One data object of a commit of many (more than are uploaded at once) fails for
/// good: the commit returns an `Err` naming it, the objects that did go up are deleted,
/// another machine sees the last acknowledged commit, and the writer goes on.
#[test]
fn a_failed_data_object_mid_commit_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, plan, db) = setup(&dir, "a");
    write(&db, 1).unwrap();
    let data =
        |m: &Arc<InMemory>| object_util::keys(&(m.clone() as Arc<dyn ObjectStore>), "f/wdb/d/");
    let before = data(&mem);
    plan.arm(Fault::ServerError, 1000, "-0000000000000007");
    let e = write_blocks(&db, 12, 5).unwrap_err();
    assert!(e.to_string().contains("wdb/d/"), "{e}");
    plan.arm(Fault::ServerError, 0, "");
    assert_eq!(
        data(&mem),
        before,
        "the failed commit's data objects are deleted"
    );
    let (other, _) = open(&mem, &dir, "b");
    assert_eq!(value(&other), (Tid(1), 1, 1));
    assert!(other.fsck().unwrap().is_clean());
    assert_eq!(write_blocks(&db, 12, 6).unwrap(), Tid(2));
    check_blocks(&other, 12, 6);
    assert!(other.fsck().unwrap().is_clean());
}

/// A transaction larger than its RAM share spills its blocks; their uploads still
/// overlap, and another machine reads them back whole.
#[test]
fn spilled_payloads_are_uploaded_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(InMemory::new());
    let o = Options::default()
        .cache_dir(dir.path().join("a"))
        .cache_size(64 << 20)
        .ram_budget(8 << 20);
    let db = Db::open_object_store("mem://spill", mem.clone(), "f", o).unwrap();
    assert_eq!(write_blocks(&db, 16, 9).unwrap(), Tid(1));
    let (other, _) = open(&mem, &dir, "b");
    check_blocks(&other, 16, 9);
    assert!(other.fsck().unwrap().is_clean());
}

/// The writer keeps the last block it wrote of an array in its cache: the next append,
/// which continues that block, reads no data object from the store; the result reads
/// back from another machine with an empty cache.
#[test]
fn an_append_reads_the_tail_block_from_the_writers_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, plan, db) = setup(&dir, "a");
    let chunk =
        |k: u64| -> Vec<f64> { (0..(3 << 17)).map(|i| (k * 1_000_000 + i) as f64).collect() };
    let tx = db.begin().unwrap();
    tx.create_array_with::<f64>(
        "s",
        &[0],
        ArrayOptions::default().compression(Compression::None),
    )
    .unwrap()
    .append(&chunk(0))
    .unwrap();
    tx.commit().unwrap();
    // The cache copy is written off the commit's path: wait for it.
    let slot = dir.path().join("a").join("slot-0").join("o");
    let t = std::time::Instant::now();
    while !std::fs::read_dir(&slot).unwrap().any(|e| {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        n.starts_with("d-") && !n.contains(".tmp")
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the tail block was not cached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    plan.log.lock().clear();
    let tx = db.begin().unwrap();
    tx.array_mut::<f64>("s").unwrap().append(&chunk(1)).unwrap();
    tx.commit().unwrap();
    assert_eq!(plan.count("GET", "/wdb/d/"), 0, "{:?}", plan.log.lock());
    let (other, _) = open(&mem, &dir, "b");
    let s = other.snapshot().unwrap();
    let a = s.array::<f64>("s").unwrap();
    let v = a.view(..).unwrap();
    assert_eq!(v.len(), 3 << 18);
    for (i, x) in v.iter().enumerate() {
        let (k, j) = ((i / (3 << 17)) as u64, (i % (3 << 17)) as u64);
        assert_eq!(*x, (k * 1_000_000 + j) as f64, "element {i}");
    }
}
