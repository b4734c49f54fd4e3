//! Delta records: a block rewritten with few changed pages is stored as "previous
//! version + these pages", reads back exactly (through the chain, after reopening, with
//! or without the index checkpoint, at every old snapshot), chains are bounded (a full
//! block is written past `MAX_DELTA_CHAIN` deltas or past a quarter of the block's pages),
//! and compaction folds chains while pinned snapshots stay readable.

use std::path::Path;

use wdb::db::{ArraySpec, Compression, Db, Order};
use wdb::format::{MAX_DELTA_CHAIN, PAGE};
use wdb::Tid;

const PG: usize = PAGE;

fn spec(name: &str, bs: usize, blocks: u64, c: Compression) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: b"<u1".to_vec(),
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![bs as u64 * blocks],
        order: Order::C,
        block_size: bs as u32,
        compression: c,
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = (self.next() >> 24) as u8;
        }
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn stats(db: &Db, name: &str) -> wdb::ArrayStats {
    db.snapshot().unwrap().array_stats(name).unwrap()
}

#[test]
fn a_one_page_change_is_stored_as_a_delta_and_reads_back() {
    for c in [Compression::None, Compression::Zstd { level: 3 }] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.wdb");
        let bs = 256 << 10;
        let mut rng = Rng(7);
        let mut block = vec![0u8; bs];
        rng.fill(&mut block);
        let id = {
            let db = Db::open(&p).unwrap();
            let tx = db.begin().unwrap();
            let id = tx.create_array_raw(spec("A", bs, 2, c)).unwrap().id;
            tx.write_block(id, 0, &block).unwrap();
            tx.commit().unwrap();
            let before = size(&p);
            let tx = db.begin().unwrap();
            block[5 * PG + 17] ^= 0xFF;
            tx.write_block(id, 0, &block).unwrap();
            // The transaction reads its own staged delta.
            let mut back = vec![0u8; bs];
            tx.read_block(id, 0, &mut back).unwrap();
            assert!(back == block, "staged delta reads back");
            tx.commit().unwrap();
            let grew = size(&p) - before;
            assert!(
                grew < 2 * PG as u64,
                "a one-page change grew the file by {grew}"
            );
            let st = stats(&db, "A");
            assert_eq!((st.delta_blocks, st.raw_blocks + st.zstd_blocks), (1, 0));
            db.snapshot().unwrap().read_block(id, 0, &mut back).unwrap();
            assert!(back == block);
            id
        };
        // Reopen from the checkpoint, then from a scan of the log.
        for drop_idx in [false, true] {
            if drop_idx {
                std::fs::remove_file(wdb::store::checkpoint_path(&p)).unwrap();
            }
            let db = Db::open(&p).unwrap();
            let mut back = vec![0u8; bs];
            db.snapshot().unwrap().read_block(id, 0, &mut back).unwrap();
            assert!(back == block, "after reopen (drop idx: {drop_idx})");
            assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
        }
    }
}

/// Random commits of small and large changes to a few blocks; every snapshot, old and
/// new, reads what a model of the blocks says.
#[test]
fn chains_across_many_commits_match_a_model_at_every_tid() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.wdb");
    let bs = 64 << 10;
    let nb = 4u64;
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(spec("A", bs, nb, Compression::Zstd { level: 1 }))
        .unwrap()
        .id;
    let t0 = tx.commit().unwrap();
    let mut model = vec![vec![0u8; bs]; nb as usize];
    let mut history: Vec<(Tid, Vec<Vec<u8>>)> = vec![(t0, model.clone())];
    let mut rng = Rng(99);
    let mut deltas_seen = 0;
    for _ in 0..120 {
        let tx = db.begin().unwrap();
        for _ in 0..1 + rng.below(3) {
            let b = rng.below(nb) as usize;
            let blk = &mut model[b];
            match rng.below(10) {
                // Whole block rewritten.
                0 => rng.fill(blk),
                // Tail cut to zeros (the new version is shorter).
                1 => {
                    let from = rng.below(16) as usize * PG;
                    blk[from..].fill(0);
                }
                // Some compressible pages.
                2 => {
                    let pg = rng.below(16) as usize;
                    blk[pg * PG..(pg + 1) * PG].fill(rng.next() as u8);
                }
                // A few bytes on 1..3 pages.
                _ => {
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(bs as u64) as usize;
                        blk[at] = rng.next() as u8;
                    }
                }
            }
            tx.write_block(id, b as u64, &model[b]).unwrap();
        }
        let tid = tx.commit().unwrap();
        history.push((tid, model.clone()));
        deltas_seen += stats(&db, "A").delta_blocks;
    }
    assert!(deltas_seen > 50, "few deltas were written ({deltas_seen})");
    let check = |db: &Db| {
        let mut buf = vec![0u8; bs];
        for (tid, m) in &history {
            let s = db.snapshot_at(*tid).unwrap();
            for (b, want) in m.iter().enumerate() {
                s.read_block(id, b as u64, &mut buf).unwrap();
                assert!(buf == *want, "tid {tid} block {b}");
            }
        }
    };
    check(&db);
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    drop(db);
    std::fs::remove_file(wdb::store::checkpoint_path(&p)).unwrap();
    check(&Db::open(&p).unwrap());
}

/// Commit one changed page at a time and report whether the visible version is a delta.
fn one_page_commits(bs: usize, n: usize) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(spec("A", bs, 1, Compression::None))
        .unwrap()
        .id;
    let mut block = vec![1u8; bs];
    tx.write_block(id, 0, &block).unwrap();
    tx.commit().unwrap();
    let mut out = Vec::new();
    for k in 0..n {
        let tx = db.begin().unwrap();
        block[(k % (bs / PG)) * PG] = k as u8 + 2;
        tx.write_block(id, 0, &block).unwrap();
        tx.commit().unwrap();
        out.push(stats(&db, "A").delta_blocks == 1);
        let mut back = vec![0u8; bs];
        db.snapshot().unwrap().read_block(id, 0, &mut back).unwrap();
        assert!(back == block, "commit {k}");
    }
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    out
}

#[test]
fn a_chain_longer_than_the_bound_is_rewritten_as_a_full_block() {
    // 1 MiB blocks: 256 pages, a page budget of 64 — the depth bound comes first.
    let k = MAX_DELTA_CHAIN;
    let got = one_page_commits(1 << 20, 2 * (k + 1));
    let mut want = vec![true; k];
    want.push(false);
    want.extend(vec![true; k]);
    want.push(false);
    assert_eq!(got, want);
}

#[test]
fn a_chain_carrying_a_quarter_of_the_block_is_rewritten_as_a_full_block() {
    // 64 KiB blocks: 16 pages, so 4 pages per chain.
    let got = one_page_commits(64 << 10, 10);
    assert_eq!(
        got,
        vec![true, true, true, true, false, true, true, true, true, false]
    );
}

#[test]
fn a_block_mostly_rewritten_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.wdb");
    let db = Db::open(&p).unwrap();
    let bs = 64 << 10;
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(spec("A", bs, 2, Compression::None))
        .unwrap()
        .id;
    let mut rng = Rng(3);
    let mut block = vec![0u8; bs];
    rng.fill(&mut block[..bs / 2]);
    tx.write_block(id, 0, &block).unwrap();
    tx.commit().unwrap();
    // Half the block appended past the old value: no delta.
    rng.fill(&mut block[bs / 2..]);
    let tx = db.begin().unwrap();
    tx.write_block(id, 0, &block).unwrap();
    tx.commit().unwrap();
    assert_eq!(stats(&db, "A").delta_blocks, 0);
    // Every page changed: no delta.
    rng.fill(&mut block);
    let tx = db.begin().unwrap();
    tx.write_block(id, 0, &block).unwrap();
    tx.commit().unwrap();
    assert_eq!(stats(&db, "A").delta_blocks, 0);
    let mut back = vec![0u8; bs];
    db.snapshot().unwrap().read_block(id, 0, &mut back).unwrap();
    assert!(back == block);
}

#[test]
fn compaction_folds_chains_and_pinned_snapshots_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.wdb");
    let db = Db::open(&p).unwrap();
    let bs = 256 << 10;
    let tx = db.begin().unwrap();
    let z = tx
        .create_array_raw(spec("Z", bs, 3, Compression::Zstd { level: 3 }))
        .unwrap()
        .id;
    let r = tx
        .create_array_raw(spec("R", bs, 3, Compression::None))
        .unwrap()
        .id;
    let mut rng = Rng(11);
    let mut blocks: Vec<Vec<u8>> = (0..3)
        .map(|b| {
            let mut v = vec![0u8; bs];
            if b == 1 {
                v.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = (i / 999) as u8);
            } else {
                rng.fill(&mut v);
            }
            v
        })
        .collect();
    for (b, v) in blocks.iter().enumerate() {
        tx.write_block(z, b as u64, v).unwrap();
        tx.write_block(r, b as u64, v).unwrap();
    }
    tx.commit().unwrap();
    let mut history = Vec::new();
    for k in 0..6 {
        let tx = db.begin().unwrap();
        for (b, v) in blocks.iter_mut().enumerate() {
            v[(k * 7 + b) % bs] ^= 0x5A;
            tx.write_block(z, b as u64, v).unwrap();
            tx.write_block(r, b as u64, v).unwrap();
        }
        history.push((tx.commit().unwrap(), blocks.clone()));
    }
    assert_eq!(stats(&db, "Z").delta_blocks, 3);
    // Pin a snapshot in the middle of the chains.
    let (pin_tid, pin_blocks) = history[2].clone();
    let pinned = db.snapshot_at(pin_tid).unwrap();
    let rep = db.compact().unwrap();
    assert!(rep.versions_dropped > 0);
    let read = |s: &wdb::Snapshot, want: &[Vec<u8>]| {
        let mut buf = vec![0u8; bs];
        for id in [z, r] {
            for (b, w) in want.iter().enumerate() {
                s.read_block(id, b as u64, &mut buf).unwrap();
                assert!(buf == *w, "array {id} block {b}");
            }
        }
    };
    read(&pinned, &pin_blocks);
    read(&db.snapshot().unwrap(), &blocks);
    // The new file holds no chains.
    let st = stats(&db, "Z");
    assert_eq!((st.delta_blocks, st.zstd_blocks), (0, 1));
    assert_eq!(stats(&db, "R").delta_blocks, 0);
    drop(pinned);
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    // New small changes are deltas on the compacted (current version) file again.
    let tx = db.begin().unwrap();
    blocks[0][3] ^= 1;
    tx.write_block(z, 0, &blocks[0]).unwrap();
    tx.write_block(r, 0, &blocks[0]).unwrap();
    tx.commit().unwrap();
    assert_eq!(stats(&db, "Z").delta_blocks, 1);
    drop(db);
    let db = Db::open(&p).unwrap();
    read(&db.snapshot().unwrap(), &blocks);
    assert_eq!(
        db.info().unwrap().format_version,
        wdb::format::FORMAT_VERSION
    );
}

#[test]
fn conflicts_stay_at_block_level_with_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.wdb");
    let db = Db::open(&p).unwrap();
    let bs = 256 << 10;
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(spec("A", bs, 1, Compression::None))
        .unwrap()
        .id;
    let base = vec![1u8; bs];
    tx.write_block(id, 0, &base).unwrap();
    tx.commit().unwrap();
    // Two transactions change different pages of the same block.
    let (t1, t2) = (db.begin().unwrap(), db.begin().unwrap());
    let (mut b1, mut b2) = (base.clone(), base.clone());
    b1[0] = 7;
    b2[10 * PG] = 9;
    t1.write_block(id, 0, &b1).unwrap();
    t2.write_block(id, 0, &b2).unwrap();
    t1.commit().unwrap();
    match t2.commit() {
        Err(wdb::Error::Conflict { .. }) => {}
        other => panic!("second writer of the block got {other:?}"),
    }
    let mut back = vec![0u8; bs];
    db.snapshot().unwrap().read_block(id, 0, &mut back).unwrap();
    assert!(back == b1);
    assert_eq!(stats(&db, "A").delta_blocks, 1);
}
