//! Compaction drops versions no snapshot needs and shrinks the file, keeps pinned
//! snapshots readable (in this process and for new snapshots of kept tids), keeps
//! history newer than --keep-history, and leaves a file fsck finds clean.

use wdb::db::{ArraySpec, CompactOptions, Compression, Db, Order};
use wdb::{Error, Tid};

const BS: usize = 64 << 10;

fn spec() -> ArraySpec {
    ArraySpec {
        name: "A".into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![BS as u64 * 4],
        order: Order::C,
        block_size: BS as u32,
        compression: Compression::None,
    }
}

fn fill(v: u8) -> Vec<u8> {
    (0..BS).map(|i| v ^ (i % 13) as u8 | 1).collect()
}

fn read(s: &wdb::db::Snapshot, id: u64, blk: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    s.read_block(id, blk, &mut b).unwrap();
    b
}

#[test]
fn compaction_shrinks_the_file_and_pinned_snapshots_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let id = tx.create_array_raw(spec()).unwrap().id;
    tx.commit().unwrap();
    let mut tids = Vec::new();
    for v in 1..=10u8 {
        let tx = db.begin().unwrap();
        tx.write_block(id, 0, &fill(v)).unwrap();
        tx.write_block(id, 1, &fill(v + 100)).unwrap();
        tids.push(tx.commit().unwrap());
    }
    let pinned = db.snapshot_at(tids[2]).unwrap();
    let del = db.begin().unwrap();
    del.create_array_raw(ArraySpec {
        name: "gone".into(),
        ..spec()
    })
    .unwrap();
    let gid = del.array_info("gone").unwrap().id;
    del.write_block(gid, 0, &fill(7)).unwrap();
    del.commit().unwrap();
    let del = db.begin().unwrap();
    del.delete_array("gone").unwrap();
    del.commit().unwrap();

    let before = std::fs::metadata(&p).unwrap().len();
    let mut calls = 0;
    let rep = db
        .compact_with(CompactOptions::default(), &mut |d, t| {
            calls += 1;
            assert!(d <= t);
        })
        .unwrap();
    assert!(calls > 0);
    let after = std::fs::metadata(&p).unwrap().len();
    assert_eq!((rep.old_size, rep.new_size), (before, after));
    // 10 versions of 2 blocks → head + the pinned snapshot's: 4 blocks instead of 20.
    assert!(after * 3 < before, "{before} → {after}");
    assert!(rep.versions_dropped >= 16);

    // The pinned snapshot (holding the old file) reads what it read.
    assert_eq!(read(&pinned, id, 0), fill(3));
    assert_eq!(read(&pinned, id, 1), fill(103));
    let head = db.snapshot().unwrap();
    assert_eq!(read(&head, id, 0), fill(10));
    assert!(matches!(head.array_info("gone"), Err(Error::NotFound(_))));
    // Old tids below the new base are gone for new snapshots, with a clear error.
    assert!(matches!(
        db.snapshot_at(tids[0]),
        Err(Error::SnapshotGone { .. })
    ));
    let rep = db.fsck().unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);

    // Commits continue on the new file, and another handle (as another process would)
    // switches to it at its next snapshot.
    let tx = db.begin().unwrap();
    tx.write_block(id, 2, &fill(50)).unwrap();
    let t = tx.commit().unwrap();
    drop(head);
    drop(pinned);
    drop(db);
    let db2 = Db::open(&p).unwrap();
    assert_eq!(db2.last_tid().unwrap(), t);
    assert_eq!(read(&db2.snapshot().unwrap(), id, 2), fill(50));
}

#[test]
fn keep_history_keeps_every_snapshot_from_that_tid() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("h.wdb")).unwrap();
    let tx = db.begin().unwrap();
    let id = tx.create_array_raw(spec()).unwrap().id;
    tx.commit().unwrap();
    let mut tids = Vec::new();
    for v in 1..=6u8 {
        let tx = db.begin().unwrap();
        tx.write_block(id, 0, &fill(v)).unwrap();
        tids.push(tx.commit().unwrap());
    }
    db.compact_with(
        CompactOptions {
            keep_history: Some(tids[3]),
        },
        &mut |_, _| {},
    )
    .unwrap();
    for (i, &t) in tids.iter().enumerate().skip(3) {
        assert_eq!(
            read(&db.snapshot_at(t).unwrap(), id, 0),
            fill(i as u8 + 1),
            "tid {t}"
        );
    }
    assert!(db.snapshot_at(tids[2]).is_err());
    assert!(db.snapshot_at(Tid(0)).is_err());
    // Changes since a dropped tid: everything counts as changed.
    let cs = db.changed_blocks(tids[0], *tids.last().unwrap()).unwrap();
    assert!(cs.blocks.contains(&(id, 0)) && cs.names_changed);
    let cs = db.changed_blocks(tids[4], tids[5]).unwrap();
    assert_eq!(cs.blocks, vec![(id, 0)]);
    assert!(db.fsck().unwrap().is_clean());
}

#[test]
fn another_handle_sees_the_compacted_file_and_a_live_reader_of_another_handle_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.wdb");
    let a = Db::open(&p).unwrap();
    let b = Db::open(&p).unwrap(); // its own lock-file description, like another process
    let tx = a.begin().unwrap();
    let id = tx.create_array_raw(spec()).unwrap().id;
    tx.commit().unwrap();
    for v in 1..=4u8 {
        let tx = a.begin().unwrap();
        tx.write_block(id, 0, &fill(v)).unwrap();
        tx.commit().unwrap();
    }
    let pinned_b = b.snapshot().unwrap();
    let t_pinned = pinned_b.tid();
    let tx = a.begin().unwrap();
    tx.write_block(id, 0, &fill(9)).unwrap();
    tx.commit().unwrap();
    a.compact().unwrap();
    // b's reader was registered: its versions are in the new file too.
    assert_eq!(read(&pinned_b, id, 0), fill(4));
    let tx = b.begin().unwrap();
    assert_eq!(read(&b.snapshot().unwrap(), id, 0), fill(9));
    tx.write_block(id, 1, &fill(1)).unwrap();
    tx.commit().unwrap();
    assert!(t_pinned > Tid(0));
    assert!(a.fsck().unwrap().is_clean());
}

#[test]
fn compaction_runs_while_a_writer_and_readers_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("busy.wdb");
    let db = Db::open(&p).unwrap();
    let other = Db::open(&p).unwrap(); // another handle, as another process would have
    let tx = db.begin().unwrap();
    let id = tx.create_array_raw(spec()).unwrap().id;
    tx.commit().unwrap();
    for v in 1..=20u8 {
        let tx = db.begin().unwrap();
        tx.write_block(id, u64::from(v % 4), &fill(v)).unwrap();
        tx.commit().unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|s| {
        let w = s.spawn(|| {
            let mut last = Vec::new();
            let mut v = 100u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || last.len() < 5 {
                let tx = other.begin().unwrap();
                tx.write_block(id, u64::from(v % 4), &fill(v)).unwrap();
                last.push((tx.commit().unwrap(), v));
                v = v.wrapping_add(1);
            }
            last
        });
        let r = s.spawn(|| {
            for _ in 0..20 {
                let snap = other.snapshot().unwrap();
                let mut b = vec![0u8; BS];
                snap.read_block(id, 0, &mut b).unwrap();
            }
        });
        for _ in 0..3 {
            db.compact().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r.join().unwrap();
        w.join().unwrap()
    });
    // Every acknowledged commit is in the compacted file, newest value per block.
    let s = db.snapshot().unwrap();
    assert_eq!(s.tid(), written.last().unwrap().0);
    for blk in 0..4u64 {
        if let Some((_, v)) = written.iter().rev().find(|(_, v)| u64::from(v % 4) == blk) {
            assert_eq!(read(&s, id, blk), fill(*v), "block {blk}");
        }
    }
    let rep = db.fsck().unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}
