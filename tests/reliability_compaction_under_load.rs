//! Compaction under load: while a writer commits and readers hold old snapshots (each on
//! its own `Db` handle, as separate processes would), compaction runs again and again;
//! every pinned snapshot keeps reading exactly what it read when it was taken, every new
//! snapshot is consistent (data matches the checksum committed with it), the writer never
//! fails, and the file is fsck-clean at the end. (A crash at each compaction step:
//! reliability_crash_compaction.rs.)

mod reliability_util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use reliability_util::*;
use wdb::db::{Db, Snapshot};

const DATA_BLOCKS: u64 = 4;

/// CRC of the data blocks of snapshot `s`, and the CRC its sum block records.
fn digest(s: &Snapshot) -> (u32, u32) {
    let d = s.array_info("data").unwrap().id;
    let c = s.array_info("sum").unwrap().id;
    let mut buf = vec![0u8; BS];
    let mut h = crc32fast::Hasher::new();
    for blk in 0..DATA_BLOCKS {
        s.read_block(d, blk, &mut buf).unwrap();
        h.update(&buf);
    }
    s.read_block(c, 0, &mut buf).unwrap();
    (
        h.finalize(),
        u32::from_le_bytes(buf[..4].try_into().unwrap()),
    )
}

#[test]
fn pinned_snapshots_stay_readable_while_compaction_runs_under_commits() {
    let commits = scale(500, 5000);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.wdb");
    let setup = Db::open(&p).unwrap();
    let tx = setup.begin().unwrap();
    tx.create_array_raw(spec("data", DATA_BLOCKS, true))
        .unwrap();
    let c = tx.create_array_raw(spec("sum", 1, false)).unwrap().id;
    let mut h = crc32fast::Hasher::new();
    (0..DATA_BLOCKS).for_each(|_| h.update(&vec![0u8; BS]));
    let mut sb = vec![0u8; BS];
    sb[..4].copy_from_slice(&h.finalize().to_le_bytes());
    tx.write_block(c, 0, &sb).unwrap();
    tx.commit().unwrap();
    drop(setup);

    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let writer = {
        let (p, done) = (p.clone(), done.clone());
        std::thread::spawn(move || {
            let db = Db::open(&p).unwrap();
            let mut rng = Rng::new(1);
            let mut blocks = vec![vec![0u8; BS]; DATA_BLOCKS as usize];
            for _ in 0..commits {
                let tx = db.begin().unwrap();
                let d = tx.array_info("data").unwrap().id;
                let c = tx.array_info("sum").unwrap().id;
                let blk = rng.below(DATA_BLOCKS);
                blocks[blk as usize] = random_block(&mut rng);
                tx.write_block(d, blk, &blocks[blk as usize]).unwrap();
                let mut h = crc32fast::Hasher::new();
                blocks.iter().for_each(|b| h.update(b));
                let mut sb = vec![0u8; BS];
                sb[..4].copy_from_slice(&h.finalize().to_le_bytes());
                tx.write_block(c, 0, &sb).unwrap();
                tx.commit().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..3u64)
        .map(|i| {
            let (p, done, checks) = (p.clone(), done.clone(), checks.clone());
            std::thread::spawn(move || {
                let db = Db::open(&p).unwrap();
                let mut rng = Rng::new(100 + i);
                // Pinned snapshots and what each read when taken.
                let mut pinned: Vec<(Snapshot, u32)> = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let s = db.snapshot().unwrap();
                    let (got, want) = digest(&s);
                    assert_eq!(got, want, "snapshot {} is inconsistent", s.tid());
                    pinned.push((s, got));
                    for (s, d) in &pinned {
                        assert_eq!(digest(s).0, *d, "pinned snapshot {} changed", s.tid());
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                    if pinned.len() > 4 || rng.chance(20) {
                        pinned.remove(rng.below(pinned.len() as u64) as usize);
                    }
                }
            })
        })
        .collect();
    let db = Db::open(&p).unwrap();
    let (mut compactions, mut busy, mut shrunk) = (0u64, 0u64, 0u64);
    while !done.load(Ordering::SeqCst) {
        match db.compact() {
            Ok(r) => {
                compactions += 1;
                if r.new_size < r.old_size {
                    shrunk += 1;
                }
            }
            Err(wdb::Error::Busy(_)) => busy += 1,
            Err(e) => panic!("compaction under load: {e}"),
        }
    }
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let (got, want) = digest(&db.snapshot().unwrap());
    assert_eq!(got, want);
    drop(db);
    fsck_clean(&p).unwrap();
    eprintln!(
        "compaction under load: {commits} commits, {compactions} compactions ({shrunk} shrank \
         the file, {busy} busy), {} pinned-snapshot re-reads, all unchanged",
        checks.load(Ordering::Relaxed)
    );
    assert!(compactions >= 3, "compaction ran under load");
}
