//! Retention on an object-store database (in-memory store): compaction keeps the
//! snapshots asked for, later ones read the same, earlier ones are `SnapshotGone`
//! (never wrong data), and data objects that no commit names (a writer that died
//! before its commit object) are collected once older than the grace period.
#![cfg(feature = "s3")]

mod object_util;

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as OPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use wdb::db::{CompactOptions, Db, Options};
use wdb::{Error, Tid};

fn opts(cache: &std::path::Path) -> Options {
    Options::default()
        .cache_dir(cache)
        .cache_size(64 << 20)
        .ram_budget(64 << 20)
        // Objects of no commit are collected once a second old.
        .gc_grace(std::time::Duration::from_secs(1))
}

fn machine(store: &Arc<InMemory>, dir: &tempfile::TempDir, name: &str) -> Db {
    object_util::mem_machine(store, opts(&dir.path().join(name)))
}

fn keys(store: &Arc<InMemory>, prefix: &str) -> Vec<String> {
    object_util::keys(&(store.clone() as Arc<dyn ObjectStore>), prefix)
}

#[test]
fn retention_drops_old_snapshots_and_collects_garbage() {
    let store = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let a = machine(&store, &dir, "a");
    for k in 0..5u64 {
        let tx = a.begin().unwrap();
        let mut x = if k == 0 {
            tx.create_array_with::<u64>(
                "x",
                &[1 << 18],
                wdb::db::ArrayOptions::default().compression(wdb::db::Compression::None),
            )
            .unwrap()
        } else {
            tx.array_mut::<u64>("x").unwrap()
        };
        x.view_mut(..).unwrap().fill(k + 100);
        drop(x);
        tx.commit().unwrap();
    }
    // A dead writer's data object, never named by a commit.
    object_util::rt()
        .block_on(store.put(
            &OPath::from("db1/wdb/d/00000000000000ab-0000000000000001"),
            PutPayload::from(vec![1u8; 100]),
        ))
        .unwrap();
    let before = keys(&store, "db1/wdb/d").len();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let rep = a
        .compact_with(
            CompactOptions {
                keep_history: Some(Tid(4)),
            },
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(rep.base_tid, Tid(4));
    let after = keys(&store, "db1/wdb/d");
    assert!(
        !after.iter().any(|k| k.contains("00000000000000ab")),
        "{after:?}"
    );
    assert_eq!(after.len(), before - 1 - 3, "{after:?}");
    // Snapshots before the base are gone, never wrong; kept ones read.
    let b = machine(&store, &dir, "b");
    assert!(matches!(
        b.snapshot_at(Tid(2)),
        Err(Error::SnapshotGone { .. })
    ));
    let s4 = b.snapshot_at(Tid(4)).unwrap();
    assert_eq!(s4.array::<u64>("x").unwrap().view(0..1).unwrap()[[0]], 103);
    assert_eq!(x_sum_u64(&b), 104 * (1 << 18));
    let f = b.fsck().unwrap();
    assert!(f.is_clean(), "{f}");
}

fn x_sum_u64(d: &Db) -> u64 {
    d.snapshot()
        .unwrap()
        .array::<u64>("x")
        .unwrap()
        .view(..)
        .unwrap()
        .sum()
}
