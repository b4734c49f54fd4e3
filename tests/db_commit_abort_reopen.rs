//! Commit makes changes durable and visible after reopen; abort and drop discard them;
//! the catalog (create/rename/delete/list), history, time travel and change sets.

use wdb::db::{ArraySpec, Compression, Db, Options, Order};
use wdb::{Error, Tid};

const BS: usize = 64 << 10;

fn spec(name: &str) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: b"<f8".to_vec(),
        dtype_name: "f64".into(),
        elem_size: 8,
        shape: vec![100_000],
        order: Order::C,
        block_size: BS as u32,
        compression: Compression::Zstd { level: 3 },
    }
}

fn block(v: u8) -> Vec<u8> {
    (0..BS).map(|i| v.wrapping_add((i % 251) as u8)).collect()
}

#[test]
fn committed_blocks_survive_reopen_and_aborted_ones_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.wdb");
    let t1;
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        let a = tx.create_array_raw(spec("A")).unwrap();
        tx.write_block(a.id, 0, &block(1)).unwrap();
        tx.write_block(a.id, 5, &block(2)).unwrap();
        let mut buf = vec![0u8; BS];
        tx.read_block(a.id, 5, &mut buf).unwrap();
        assert_eq!(buf, block(2), "a transaction reads its own writes");
        t1 = tx.commit().unwrap();
        assert!(t1 > Tid::ZERO);

        let tx = db.begin().unwrap();
        tx.write_block(a.id, 0, &block(9)).unwrap();
        tx.abort();
        {
            let tx = db.begin().unwrap();
            tx.write_block(a.id, 0, &block(8)).unwrap();
            // dropped: aborts
        }
        assert_eq!(db.last_tid().unwrap(), t1);
    }
    let db = Db::open(&p).unwrap();
    assert_eq!(db.last_tid().unwrap(), t1);
    let s = db.snapshot().unwrap();
    let a = s.array_info("A").unwrap();
    assert_eq!(a.shape, vec![100_000]);
    let mut buf = vec![0u8; BS];
    s.read_block(a.id, 0, &mut buf).unwrap();
    assert_eq!(buf, block(1));
    s.read_block(a.id, 3, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0),
        "never-written blocks read as zeros"
    );
    assert_eq!(s.block_version(a.id, 5).unwrap(), Some(t1));
    assert_eq!(s.block_version(a.id, 4).unwrap(), None);
    assert!(db.fsck().unwrap().is_clean());
}

#[test]
fn catalog_create_rename_delete_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("c.wdb")).unwrap();
    let tx = db.begin().unwrap();
    let a = tx.create_array_raw(spec("A")).unwrap();
    tx.create_array_raw(spec("B")).unwrap();
    assert!(matches!(
        tx.create_array_raw(spec("A")),
        Err(Error::AlreadyExists(_))
    ));
    tx.write_block(a.id, 1, &block(3)).unwrap();
    let t1 = tx.commit().unwrap();

    let tx = db.begin().unwrap();
    tx.rename_array("A", "A2").unwrap();
    tx.delete_array("B").unwrap();
    tx.set_shape("A2", &[5]).unwrap();
    assert_eq!(tx.array_names().unwrap(), vec!["A2".to_string()]);
    let t2 = tx.commit().unwrap();

    let now = db.snapshot().unwrap();
    assert_eq!(now.array_names().unwrap(), vec!["A2".to_string()]);
    assert_eq!(now.array_info("A2").unwrap().shape, vec![5]);
    assert!(matches!(now.array_info("B"), Err(Error::NotFound(_))));
    let old = db.snapshot_at(t1).unwrap();
    assert_eq!(
        old.array_names().unwrap(),
        vec!["A".to_string(), "B".to_string()]
    );
    assert!(matches!(
        db.snapshot_at(Tid(t2.0 + 10)),
        Err(Error::SnapshotGone { .. })
    ));

    let h = db.history().unwrap();
    assert_eq!(h.iter().map(|e| e.tid).collect::<Vec<_>>(), vec![t1, t2]);
    assert!(h[0].arrays.contains(&"A2".to_string()) && h[0].bytes > 0);

    let cs = db.changed_blocks(Tid::ZERO, t1).unwrap();
    assert_eq!(cs.blocks, vec![(a.id, 1)]);
    let cs = db.changed_blocks(t1, t2).unwrap();
    assert!(cs.blocks.is_empty() && cs.names_changed && cs.arrays.contains(&a.id));
    let info = db.info().unwrap();
    assert_eq!(
        (info.first_tid, info.last_tid, info.transactions),
        (t1, t2, 2)
    );
}

#[test]
fn read_only_database_refuses_writes_and_bad_arguments_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.wdb");
    assert!(matches!(
        Db::open_with(&p, Options::default().read_only(true)),
        Err(Error::NotFound(_))
    ));
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        let mut bad = spec("X");
        bad.block_size = 1000;
        assert!(matches!(
            tx.create_array_raw(bad),
            Err(Error::InvalidArgument(_))
        ));
        let mut huge = spec("Y");
        huge.shape = vec![u64::MAX, 4];
        assert!(matches!(
            tx.create_array_raw(huge),
            Err(Error::OutOfRange(_))
        ));
        let a = tx.create_array_raw(spec("A")).unwrap();
        assert!(matches!(
            tx.write_block(a.id, 0, &[1, 2, 3]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            tx.write_block(a.id + 7, 0, &block(1)),
            Err(Error::NotFound(_))
        ));
        tx.commit().unwrap();
    }
    let db = Db::open_with(&p, Options::default().read_only(true)).unwrap();
    assert!(matches!(db.begin(), Err(Error::ReadOnly(_))));
    assert!(matches!(db.compact(), Err(Error::ReadOnly(_))));
    assert_eq!(
        db.snapshot().unwrap().array_names().unwrap(),
        vec!["A".to_string()]
    );
}

#[test]
fn db_is_send_sync_and_transactions_are_send() {
    fn ss<T: Send + Sync>() {}
    fn s<T: Send>() {}
    ss::<Db>();
    s::<wdb::db::Transaction>();
    s::<wdb::db::Snapshot>();
}

#[test]
fn reopen_uses_the_index_checkpoint_and_rebuilds_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.wdb");
    let mut tids = Vec::new();
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        let a = tx.create_array_raw(spec("A")).unwrap();
        tids.push(tx.commit().unwrap());
        for i in 0..5u8 {
            let tx = db.begin().unwrap();
            tx.write_block(a.id, u64::from(i), &block(i)).unwrap();
            tids.push(tx.commit().unwrap());
        }
    }
    let idx = wdb::store::checkpoint_path(&p);
    assert!(idx.exists(), "closing writes a checkpoint");
    let stale = std::fs::read(&idx).unwrap();
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        tx.write_block(1, 9, &block(7)).unwrap();
        tids.push(tx.commit().unwrap());
    }
    // An older checkpoint: still valid for its prefix, the tail is read from the log.
    std::fs::write(&idx, &stale).unwrap();
    let db = Db::open(&p).unwrap();
    assert_eq!(db.last_tid().unwrap(), *tids.last().unwrap());
    drop(db);
    // A garbage checkpoint is ignored and the index rebuilt from the log.
    std::fs::write(&idx, b"garbage").unwrap();
    let db = Db::open(&p).unwrap();
    let s = db.snapshot().unwrap();
    let mut buf = vec![0u8; BS];
    s.read_block(1, 9, &mut buf).unwrap();
    assert_eq!(buf, block(7));
}

#[test]
fn zero_block_size_and_zstd_level_take_the_database_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(
        dir.path().join("d.wdb"),
        Options::default().block_size(1 << 17).zstd_level(7),
    )
    .unwrap();
    let tx = db.begin().unwrap();
    let mut s = spec("A");
    s.block_size = 0;
    s.compression = Compression::Zstd { level: 0 };
    let a = tx.create_array_raw(s).unwrap();
    assert_eq!(a.block_size, 1 << 17);
    assert_eq!(a.compression, Compression::Zstd { level: 7 });
}
