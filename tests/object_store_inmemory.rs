//! An object-store database behaves like a local one (transactions, snapshots,
//! conflicts across "machines", history, retention, fsck), checked against
//! `object_store`'s in-memory store: two `Db`s over one store with separate caches
//! stand for two machines.
#![cfg(feature = "s3")]

mod object_util;

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as OPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use wdb::db::{Db, Options};
use wdb::{Error, Tid};

fn opts(cache: &std::path::Path) -> Options {
    Options::default()
        .cache_dir(cache)
        .cache_size(64 << 20)
        .ram_budget(64 << 20)
}

fn machine(store: &Arc<InMemory>, dir: &tempfile::TempDir, name: &str) -> Db {
    object_util::mem_machine(store, opts(&dir.path().join(name)))
}

fn keys(store: &Arc<InMemory>, prefix: &str) -> Vec<String> {
    object_util::keys(&(store.clone() as Arc<dyn ObjectStore>), prefix)
}

#[test]
fn two_machines_see_each_others_commits_and_snapshots_hold() {
    let store = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let a = machine(&store, &dir, "a");
    let b = machine(&store, &dir, "b");
    let tx = a.begin().unwrap();
    let mut x = tx.create_array::<f64>("x", &[1 << 20]).unwrap();
    x.view_mut(..).unwrap().fill(1.5);
    drop(x);
    let t1 = tx.commit().unwrap();
    assert_eq!(t1, Tid(1));
    // b sees it at its next snapshot.
    let s1 = b.snapshot().unwrap();
    assert_eq!(s1.tid(), t1);
    let v = s1.array::<f64>("x").unwrap();
    assert_eq!(v.view(..).unwrap().sum(), 1.5 * (1 << 20) as f64);
    drop(v);
    // b commits; a's old snapshot does not change; a's new one sees it.
    let old = a.snapshot().unwrap();
    let tx = b.begin().unwrap();
    let mut x = tx.array_mut::<f64>("x").unwrap();
    x.view_mut(0..10).unwrap().fill(7.0);
    x.append(&[3.0; 100]).unwrap();
    drop(x);
    let t2 = tx.commit().unwrap();
    assert_eq!(t2, Tid(2));
    assert_eq!(old.array::<f64>("x").unwrap().view(0..1).unwrap()[[0]], 1.5);
    let new = a.snapshot().unwrap();
    let x = new.array::<f64>("x").unwrap();
    assert_eq!(x.len(), (1 << 20) + 100);
    assert_eq!(x.view(0..1).unwrap()[[0]], 7.0);
    assert_eq!(x.view((1 << 20)..).unwrap().sum(), 300.0);
    drop(x);
    assert_eq!(a.history().unwrap().len(), 2);
    let at1 = a.snapshot_at(t1).unwrap();
    assert_eq!(at1.array::<f64>("x").unwrap().len(), 1 << 20);
    // A third process opening from scratch reads the same.
    let c = machine(&store, &dir, "c");
    assert_eq!(c.last_tid().unwrap(), t2);
    assert_eq!(
        c.snapshot()
            .unwrap()
            .array::<f64>("x")
            .unwrap()
            .view(..)
            .unwrap()
            .sum(),
        x_sum(&a)
    );
    assert!(c.fsck().unwrap().is_clean(), "{}", c.fsck().unwrap());
}

fn x_sum(d: &Db) -> f64 {
    d.snapshot()
        .unwrap()
        .array::<f64>("x")
        .unwrap()
        .view(..)
        .unwrap()
        .sum()
}

#[test]
fn conflicts_between_machines_are_per_block() {
    let store = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let a = machine(&store, &dir, "a");
    let b = machine(&store, &dir, "b");
    let tx = a.begin().unwrap();
    tx.create_array::<u64>("c", &[1 << 20]).unwrap(); // 4 blocks of 2 MiB
    tx.commit().unwrap();
    // Disjoint blocks: both commit (the second one loses the number race and retries).
    let ta = a.begin().unwrap();
    let tb = b.begin().unwrap();
    ta.array_mut::<u64>("c")
        .unwrap()
        .view_mut(0..1)
        .unwrap()
        .fill(1);
    tb.array_mut::<u64>("c")
        .unwrap()
        .view_mut(600_000..600_001)
        .unwrap()
        .fill(2);
    let t1 = ta.commit().unwrap();
    let t2 = tb.commit().unwrap();
    assert_eq!((t1, t2), (Tid(2), Tid(3)));
    // Same block: the second gets Conflict, and nothing of it is visible.
    let ta = a.begin().unwrap();
    let tb = b.begin().unwrap();
    ta.array_mut::<u64>("c")
        .unwrap()
        .view_mut(5..6)
        .unwrap()
        .fill(10);
    tb.array_mut::<u64>("c")
        .unwrap()
        .view_mut(6..7)
        .unwrap()
        .fill(20);
    ta.commit().unwrap();
    match tb.commit() {
        Err(Error::Conflict { by, .. }) => assert_eq!(by, Tid(4)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let s = b.snapshot().unwrap();
    let c = s.array::<u64>("c").unwrap();
    let v = c.view(0..8).unwrap();
    assert_eq!(
        v.iter().copied().collect::<Vec<_>>(),
        vec![1, 0, 0, 0, 0, 10, 0, 0]
    );
    assert_eq!(c.view(600_000..600_001).unwrap()[[0]], 2);
}

#[test]
fn corrupt_or_truncated_objects_are_corruption_naming_the_key() {
    let store = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let a = machine(&store, &dir, "a");
    // 24 MiB in one commit: its payloads go to data objects (a commit of at most
    // 64 KiB of payloads is one commit object).
    let tx = a.begin().unwrap();
    let mut x = tx
        .create_array_with::<u64>(
            "x",
            &[3 << 20],
            wdb::db::ArrayOptions::default().compression(wdb::db::Compression::None),
        )
        .unwrap();
    x.view_mut(..).unwrap().fill(9);
    drop(x);
    tx.commit().unwrap();
    let data = keys(&store, "db1/wdb/d");
    assert_eq!(data.len(), 12);
    let key = OPath::from(data[0].as_str());
    let bytes =
        object_util::rt().block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
    for (i, bad) in [bytes.slice(..bytes.len() - 7).to_vec(), {
        let mut v = bytes.to_vec();
        v[100] ^= 1;
        v
    }]
    .into_iter()
    .enumerate()
    {
        object_util::rt()
            .block_on(store.put(&key, PutPayload::from(bad)))
            .unwrap();
        // A fresh machine (empty cache) reads it.
        let b = machine(&store, &dir, &format!("b{i}"));
        let s = b.snapshot().unwrap();
        let x = s.array::<u64>("x").unwrap();
        let e = x.load(..).unwrap_err().to_string();
        assert!(e.contains(&data[0]), "{e}");
        let f = b.fsck().unwrap();
        assert!(!f.is_clean());
        assert!(f.to_string().contains(&data[0]), "{f}");
    }
    // A commit object that fails its check: open says which.
    let c1 = OPath::from("db1/wdb/c/0000000000000001");
    let cb =
        object_util::rt().block_on(async { store.get(&c1).await.unwrap().bytes().await.unwrap() });
    let mut v = cb.to_vec();
    v[90] ^= 4;
    object_util::rt()
        .block_on(store.put(&c1, PutPayload::from(v)))
        .unwrap();
    let e = Db::open_object_store(
        "mem://test",
        store.clone() as Arc<dyn ObjectStore>,
        "db1",
        opts(&dir.path().join("c")),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("db1/wdb/c/0000000000000001"), "{e}");
}

#[test]
fn open_url_without_a_scheme_opens_a_file_and_rejects_unknown_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.wdb");
    let d = Db::open_url(&format!("file://{}", p.display()), Options::default()).unwrap();
    let tx = d.begin().unwrap();
    tx.create_array::<u8>("a", &[10]).unwrap();
    tx.commit().unwrap();
    drop(d);
    let d = Db::open_url(p.to_str().unwrap(), Options::default()).unwrap();
    assert_eq!(d.last_tid().unwrap(), Tid(1));
    assert!(matches!(
        Db::open_url("gopher://x/y", Options::default()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_reopened_cache_serves_every_raw_block_zero_copy_even_below_the_checkpoint() {
    use wdb::db::{ArrayOptions, Compression};
    const BS: usize = 64 << 10;
    const COMMITS: usize = 70;
    let store = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let a = machine(&store, &dir, "a");
    for k in 0..COMMITS {
        let tx = a.begin().unwrap();
        {
            let mut x = if k == 0 {
                let o = ArrayOptions::default()
                    .compression(Compression::None)
                    .block_size(BS as u32);
                tx.create_array_with::<u8>("x", &[0], o).unwrap()
            } else {
                tx.array_mut::<u8>("x").unwrap()
            };
            x.append(&vec![k as u8 + 1; BS]).unwrap();
        }
        tx.commit().unwrap();
    }
    // More commits than a checkpoint object covers: an open starts from it and loads
    // only the later commit objects.
    assert!(
        !keys(&store, "db1/wdb/k/").is_empty(),
        "a checkpoint object was written"
    );
    let sum = |d: &Db| -> u64 {
        let s = d.snapshot().unwrap();
        let x = s.array::<u8>("x").unwrap();
        let v = x.view(..).unwrap();
        v.iter().map(|&b| u64::from(b)).sum()
    };
    let want: u64 = (1..=COMMITS as u64).map(|k| k * BS as u64).sum();
    // The first reader fills its cache, mapping each block from its cache file once
    // fetched (a fault or readahead waits for the fetch); the second one, from that
    // cache, maps every block too: none is copied into RAM.
    let b = machine(&store, &dir, "b");
    assert_eq!(sum(&b), want);
    let st = b.memory_stats().unwrap();
    assert_eq!(
        (st.loads, st.file_maps),
        (0, COMMITS as u64),
        "every block mapped once fetched: {st:?}"
    );
    drop(b);
    // Background fetches of the closed database finish, then release its cache slot;
    // the next open takes that slot (a slot still held would be another, empty one).
    object_util::slot_released(&dir.path().join("b").join("slot-0").join("slot.lock"));
    let b = machine(&store, &dir, "b");
    assert_eq!(sum(&b), want);
    let st = b.memory_stats().unwrap();
    assert_eq!(
        (st.loads, st.file_maps),
        (0, COMMITS as u64),
        "every block mapped from the cache: {st:?}"
    );
}
