//! The index checkpoint (version 3) is read lazily: open reads its header page, lookups
//! the pages they need (storage-format.md §7). These tests check that
//! - every answer of an index opened from a checkpoint (plus the log after it) equals the
//!   answer of the index rebuilt from the log alone, for random commits, deltas, array
//!   deletions, compactions and reopenings (block versions and chains at every tid,
//!   contents, catalog, history, changed blocks, statistics, info);
//! - open reads one page and a lookup a few;
//! - a damaged page (bad CRC, or a valid CRC over impossible values) is caught by the
//!   lookup that reads it, and the store answers from an index rebuilt from the log, then
//!   replaces the checkpoint; a header with hostile counts is ignored at open;
//! - a version-2 checkpoint written by the code before version 3 still opens and is used;
//! - a commit by another process is seen by a process that opened from a checkpoint, at
//!   its next snapshot, and conflicts with its older transactions.

mod child_util;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use wdb::db::{ArraySpec, ChangeSet, Compression, Db, Durability, HistoryEntry, Options, Order};
use wdb::format::checkpoint::{self, Checkpoint, Header3, Version, SLOT_SIZE};
use wdb::format::Key;
use wdb::format::PAGE;
use wdb::store::{checkpoint_path, Store, StoreOptions};
use wdb::Tid;

const BS: usize = 64 << 10;
const BLOCKS: u64 = 24;
const NAMES: [&str; 3] = ["a0", "a1", "a2"];

fn spec(name: &str, blocks: u64, c: Compression) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: b"<u1".to_vec(),
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![BS as u64 * blocks],
        order: Order::C,
        block_size: BS as u32,
        compression: c,
    }
}

fn compression(i: usize) -> Compression {
    if i == 2 {
        Compression::Zstd { level: 1 }
    } else {
        Compression::None
    }
}

fn noise(seed: u64, b: &mut [u8]) {
    let mut x = seed | 1;
    for c in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = c.len();
        c.copy_from_slice(&x.to_le_bytes()[..n]);
    }
}

fn writer(p: &Path, checkpoint_bytes: u64) -> Db {
    let so = StoreOptions {
        read_only: false,
        sync: false,
        checkpoint_bytes,
        ..StoreOptions::default()
    };
    Db::from_store(
        Store::open(p, so).unwrap(),
        Options::default().durability(Durability::Buffered),
    )
}

fn read_only(p: &Path) -> Db {
    Db::open_with(p, Options::default().read_only(true)).unwrap()
}

/// Pages of the checkpoint part of `db`'s index: (read so far, total); None if it has
/// none (no checkpoint, an older version read whole, or rebuilt from the log).
fn ckpt_pages(db: &Db) -> Option<(u64, u64)> {
    db.store().current().index.read().checkpoint_pages()
}

/// At one tid: array names, (key, chain) of every key that has a version there, and the
/// changes from the tid before.
type AtTid = (Tid, Vec<String>, Vec<(Key, Vec<Version>)>, ChangeSet);

/// Everything a reader can ask, at every tid the file keeps.
#[derive(Debug)]
struct Answers {
    last: Tid,
    first: Tid,
    base: Tid,
    transactions: u64,
    history: Vec<HistoryEntry>,
    per_tid: Vec<AtTid>,
    /// Changes over longer ranges (reaching into what a checkpoint covers).
    ranges: Vec<ChangeSet>,
    /// At the last tid: per live array, stats and every block's bytes.
    contents: Vec<(String, wdb::db::ArrayStats, Vec<Vec<u8>>)>,
}

fn answers(db: &Db, max_id: u64) -> Answers {
    let info = db.info().unwrap();
    let gen = db.store().current();
    let mut per_tid = Vec::new();
    let lo = info.base_tid.max(info.first_tid).max(Tid(1));
    for t in lo.0..=info.last_tid.0 {
        let t = Tid(t);
        let s = db.snapshot_at(t).unwrap();
        let mut names = s.array_names().unwrap();
        names.sort();
        let mut keys = vec![Key::Names];
        for a in 0..=max_id {
            keys.push(Key::Meta { array: a });
            keys.extend((0..BLOCKS).map(|blk| Key::Block { array: a, blk }));
        }
        let chains: Vec<(Key, Vec<Version>)> = keys
            .into_iter()
            .filter_map(|k| gen.chain_at(&k, t).unwrap().map(|c| (k, c)))
            .collect();
        // The public lookup agrees with the chain's newest version.
        for (k, c) in &chains {
            if let Key::Block { array, blk } = k {
                assert_eq!(
                    s.block_version(*array, *blk).unwrap(),
                    c.last().map(|v| v.tid)
                );
            }
        }
        let ch = db.changed_blocks(Tid(t.0 - 1), t).unwrap();
        per_tid.push((t, names, chains, ch));
    }
    let last = info.last_tid;
    let ranges = [Tid::ZERO, Tid(last.0 / 3), Tid(last.0 / 2)]
        .into_iter()
        .map(|from| db.changed_blocks(from, last).unwrap())
        .collect();
    let s = db.snapshot().unwrap();
    let mut names = s.array_names().unwrap();
    names.sort();
    let contents = names
        .iter()
        .map(|n| {
            let id = s.array_info(n).unwrap().id;
            let blocks = (0..BLOCKS)
                .map(|b| {
                    let mut buf = vec![0u8; BS];
                    s.read_block(id, b, &mut buf).unwrap();
                    buf
                })
                .collect();
            (n.clone(), s.array_stats(n).unwrap(), blocks)
        })
        .collect();
    Answers {
        last,
        first: info.first_tid,
        base: info.base_tid,
        transactions: info.transactions,
        history: db.history().unwrap(),
        per_tid,
        ranges,
        contents,
    }
}

/// Where two sets of answers first differ (short: a failing case prints this, not them).
fn diff(a: &Answers, b: &Answers) -> Option<String> {
    let heads = |x: &Answers| (x.last, x.first, x.base, x.transactions);
    if heads(a) != heads(b) {
        return Some(format!(
            "(last, first, base, transactions) {:?} vs {:?}",
            heads(a),
            heads(b)
        ));
    }
    if a.history != b.history {
        return Some(format!("history {:?} vs {:?}", a.history, b.history));
    }
    for (x, y) in a.per_tid.iter().zip(&b.per_tid) {
        if x.1 != y.1 || x.3 != y.3 {
            return Some(format!(
                "at {:?}: names/changes {:?} {:?} vs {:?} {:?}",
                x.0, x.1, x.3, y.1, y.3
            ));
        }
        if x.2 != y.2 {
            let d = x.2.iter().zip(&y.2).find(|(p, q)| p != q);
            return Some(format!(
                "at {:?}: {} vs {} keys, first differing {:?}",
                x.0,
                x.2.len(),
                y.2.len(),
                d
            ));
        }
    }
    if a.ranges != b.ranges {
        return Some(format!(
            "changes over ranges {:?} vs {:?}",
            a.ranges, b.ranges
        ));
    }
    if a.contents.len() != b.contents.len() {
        return Some("number of arrays".into());
    }
    for (x, y) in a.contents.iter().zip(&b.contents) {
        if x.0 != y.0 || x.1 != y.1 {
            return Some(format!("array {} {:?} vs {} {:?}", x.0, x.1, y.0, y.1));
        }
        if let Some(i) = (0..x.2.len()).find(|&i| x.2[i] != y.2[i]) {
            return Some(format!("array {} block {i} differs", x.0));
        }
    }
    None
}

/// The answers from the log alone: a copy of the log without its checkpoint.
fn eager_answers(p: &Path, max_id: u64) -> Answers {
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("eager.wdb");
    std::fs::copy(p, &q).unwrap();
    let db = read_only(&q);
    assert_eq!(ckpt_pages(&db), None);
    answers(&db, max_id)
}

#[derive(Debug, Clone)]
enum Op {
    /// One transaction: (array, block, kind, seed); kind 0 zeros, 1 noise, 2 one page
    /// of the current value changed (a delta), 3 a few bytes in every page.
    Tx(Vec<(usize, u64, u8, u64)>),
    /// Delete array i and create it again (a new id).
    Recreate(usize),
    Compact,
    Reopen,
    Check,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..3usize, 0..BLOCKS, 0..4u8, any::<u64>()), 1..5).prop_map(Op::Tx),
        1 => (0..3usize).prop_map(Op::Recreate),
        1 => Just(Op::Compact),
        2 => Just(Op::Reopen),
        2 => Just(Op::Check),
    ]
}

fn run(ops: &[Op], checkpoint_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.wdb");
    let mut db = writer(&p, checkpoint_bytes);
    let tx = db.begin().unwrap();
    let mut max_id = 0;
    for (i, n) in NAMES.iter().enumerate() {
        max_id = tx
            .create_array_raw(spec(n, BLOCKS, compression(i)))
            .unwrap()
            .id;
    }
    tx.commit().unwrap();
    let mut checkpointed = false;
    let mut lazy_checks = 0;
    let check = |db: &Db, max_id: u64, checkpointed: bool| -> bool {
        let want = eager_answers(&p, max_id);
        assert_eq!(diff(&answers(db, max_id), &want), None, "the writer");
        let r = read_only(&p);
        let lazy = ckpt_pages(&r);
        if checkpointed {
            assert!(lazy.is_some(), "a checkpoint was written: open must use it");
        }
        assert_eq!(
            diff(&answers(&r, max_id), &want),
            None,
            "a reader opened from the checkpoint"
        );
        assert!(ckpt_pages(&r).is_none() == lazy.is_none(), "not rebuilt");
        lazy.is_some()
    };
    for o in ops {
        match o {
            Op::Tx(ws) => {
                let tx = db.begin().unwrap();
                for &(a, blk, kind, seed) in ws {
                    let id = tx.array_info(NAMES[a]).unwrap().id;
                    let mut b = vec![0u8; BS];
                    match kind {
                        0 => {}
                        1 => noise(seed, &mut b),
                        2 => {
                            tx.read_block(id, blk, &mut b).unwrap();
                            let pg = (seed % (BS as u64 / 4096)) as usize * 4096;
                            noise(seed, &mut b[pg..pg + 4096]);
                        }
                        _ => {
                            tx.read_block(id, blk, &mut b).unwrap();
                            for pg in b.chunks_mut(4096) {
                                pg[(seed % 4000) as usize] ^= 1;
                            }
                        }
                    }
                    tx.write_block(id, blk, &b).unwrap();
                }
                tx.commit().unwrap();
            }
            Op::Recreate(a) => {
                let tx = db.begin().unwrap();
                tx.delete_array(NAMES[*a]).unwrap();
                max_id = tx
                    .create_array_raw(spec(NAMES[*a], BLOCKS, compression(*a)))
                    .unwrap()
                    .id;
                tx.commit().unwrap();
            }
            Op::Compact => {
                db.compact().unwrap();
                checkpointed = true;
            }
            Op::Reopen => {
                drop(db);
                db = writer(&p, checkpoint_bytes);
                checkpointed = true;
            }
            Op::Check => {
                lazy_checks += usize::from(check(&db, max_id, checkpointed));
            }
        }
        checkpointed |= checkpoint_path(&p).exists();
    }
    lazy_checks += usize::from(check(&db, max_id, checkpointed));
    drop(db);
    lazy_checks += usize::from(check(&writer(&p, checkpoint_bytes), max_id, true));
    assert!(lazy_checks > 0);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Lookups after reopen equal those of the index rebuilt from the log.
    #[test]
    fn lazy_index_answers_as_the_log_does(
        ops in prop::collection::vec(op(), 5..30),
        small in any::<bool>(),
    ) {
        // A small threshold makes the writer write checkpoints between commits.
        run(&ops, if small { 256 << 10 } else { 64 << 20 });
    }
}

/// A database of `n` blocks of one array (raw, holes, zstd mixed) with a version-3
/// checkpoint of many pages; returns its path and every block's value.
fn many_blocks(dir: &Path, n: u64) -> (PathBuf, Vec<Vec<u8>>) {
    let p = dir.join("k.wdb");
    let db = writer(&p, 64 << 20);
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(spec("A", n, Compression::Zstd { level: 1 }))
        .unwrap()
        .id;
    tx.commit().unwrap();
    let mut want = Vec::new();
    for chunk in 0..n.div_ceil(256) {
        let tx = db.begin().unwrap();
        for blk in chunk * 256..((chunk + 1) * 256).min(n) {
            let mut b = vec![0u8; BS];
            match blk % 3 {
                0 => {}
                1 => noise(blk, &mut b[..4096]),
                _ => b.fill(blk as u8),
            }
            tx.write_block(id, blk, &b).unwrap();
            want.push(b);
        }
        tx.commit().unwrap();
    }
    // Some blocks with several versions.
    for round in 0..3u8 {
        let tx = db.begin().unwrap();
        for blk in (0..n).step_by(97) {
            let b = vec![round + 1; BS];
            tx.write_block(id, blk, &b).unwrap();
            want[blk as usize] = b;
        }
        tx.commit().unwrap();
    }
    drop(db);
    (p, want)
}

fn read_all(db: &Db, n: u64) -> Vec<Vec<u8>> {
    let s = db.snapshot().unwrap();
    let id = s.array_info("A").unwrap().id;
    (0..n)
        .map(|b| {
            let mut buf = vec![0u8; BS];
            s.read_block(id, b, &mut buf).unwrap();
            buf
        })
        .collect()
}

#[test]
fn open_reads_one_page_and_a_lookup_a_few() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let (p, want) = many_blocks(dir.path(), n);
    let db = read_only(&p);
    let (read, pages) = ckpt_pages(&db).expect("opened from the checkpoint");
    assert_eq!(read, 1, "open reads the header page only");
    assert!(pages > 40, "{pages} pages");
    let s = db.snapshot().unwrap();
    let id = s.array_info("A").unwrap().id;
    let after_snapshot = ckpt_pages(&db).unwrap().0;
    assert!(
        after_snapshot <= 16,
        "a snapshot read {after_snapshot} pages"
    );
    assert_eq!(s.block_version(id, 1234).unwrap(), Some(Tid(6)));
    let after_lookup = ckpt_pages(&db).unwrap().0;
    assert!(
        after_lookup - after_snapshot <= 16,
        "a lookup read {} pages",
        after_lookup - after_snapshot
    );
    assert_eq!(read_all(&db, n), want);
}

/// Rewrite slot `s` bytes `field..field + 8` with `v` and reseal its page's CRC.
fn poke_slot(idx: &mut [u8], s: u64, field: usize, v: u64) {
    let h = Header3::decode(&idx[..4096.min(idx.len())], idx.len() as u64).unwrap();
    let (p, off) = checkpoint::slot_place(s);
    let at = p as usize * PAGE;
    let len = h.page_len(p);
    idx[at + off + field..at + off + field + 8].copy_from_slice(&v.to_le_bytes());
    let crc = checkpoint::page_crc(p, &idx[at..at + len - 4]);
    idx[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_damaged_page_is_caught_at_lookup_and_the_index_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2000;
    let (p, want) = many_blocks(dir.path(), n);
    let idx = std::fs::read(checkpoint_path(&p)).unwrap();
    let h = Header3::decode(&idx[..4096], idx.len() as u64).unwrap();
    assert!(Checkpoint::decode(&idx).is_ok());
    let log = std::fs::read(&p).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for page in [1, h.n_pages() / 2, h.n_pages() - 1] {
        let mut b = idx.clone();
        b[page as usize * PAGE + 100] ^= 0x20;
        cases.push((format!("bit flip in page {page}"), b));
    }
    let mut b = idx.clone();
    poke_slot(&mut b, h.version_slot(h.n_versions / 2), 8, h.covered_end);
    cases.push(("a version past the covered end".into(), b));
    let mut b = idx.clone();
    poke_slot(&mut b, h.key_slot(h.n_keys / 3), 24, h.n_versions);
    cases.push(("a key's versions past the table".into(), b));
    // A key entry pointing at other keys' versions, still in range: caught by the
    // contiguity check of its page (key 130, in the middle of page 1), or by the lookup
    // (key 250, the first of page 2, whose previous key is on page 1: its versions made
    // to start at 0 and end where the next key's start, so page 2 alone looks right).
    let mut b = idx.clone();
    poke_slot(&mut b, h.key_slot(130), 24, 0);
    cases.push(("key 130's versions overlapping another's".into(), b));
    assert_eq!(checkpoint::slot_place(h.key_slot(250)).1, 0);
    let next = {
        let (p, off) = checkpoint::slot_place(h.key_slot(251));
        let at = p as usize * PAGE + off;
        checkpoint::decode_key_slot(idx[at..at + 32].try_into().unwrap()).unwrap()
    };
    let mut b = idx.clone();
    poke_slot(
        &mut b,
        h.key_slot(250),
        0,
        u64::from(b'B') | (next.first << 32),
    );
    poke_slot(&mut b, h.key_slot(250), 24, 0);
    cases.push(("key 250's versions overlapping others'".into(), b));
    for (what, bad) in cases {
        for ro in [true, false] {
            std::fs::write(&p, &log).unwrap();
            std::fs::write(checkpoint_path(&p), &bad).unwrap();
            let db = if ro {
                read_only(&p)
            } else {
                writer(&p, 64 << 20)
            };
            assert_eq!(
                ckpt_pages(&db).map(|x| x.0),
                Some(1),
                "{what}: opened lazily"
            );
            // The reader walks every key first (history), the writer looks keys up
            // first (reads): each way finds the damage by itself.
            if ro {
                assert_eq!(db.history().unwrap().len(), 12, "{what}");
                assert_eq!(ckpt_pages(&db), None, "{what}: rebuilt from the log");
                assert_eq!(read_all(&db, n), want, "{what}");
            } else {
                assert_eq!(read_all(&db, n), want, "{what}");
                assert_eq!(ckpt_pages(&db), None, "{what}: rebuilt from the log");
                assert_eq!(db.history().unwrap().len(), 12, "{what}");
            }
            drop(db);
            let now = std::fs::read(checkpoint_path(&p)).unwrap();
            if ro {
                assert_eq!(now, bad, "{what}: a reader does not write");
            } else {
                // The writer replaced the damaged checkpoint by a good one.
                assert_eq!(
                    Checkpoint::decode(&now).unwrap(),
                    Checkpoint::decode(&idx).unwrap()
                );
                let db = read_only(&p);
                assert_eq!(read_all(&db, n), want, "{what}");
                assert!(ckpt_pages(&db).is_some());
            }
        }
    }
}

#[test]
fn hostile_header_counts_are_ignored_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (p, want) = many_blocks(dir.path(), 300);
    let idx = std::fs::read(checkpoint_path(&p)).unwrap();
    for (field, v) in [(48, 1u64 << 60), (56, u64::MAX), (64, 1 << 40), (64, 1)] {
        let mut b = idx.clone();
        b[field..field + 8].copy_from_slice(&v.to_le_bytes());
        let len = 4096.min(b.len());
        let crc = checkpoint::page_crc(0, &b[..len - 4]);
        b[len - 4..len].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(checkpoint_path(&p), &b).unwrap();
        let t = std::time::Instant::now();
        let db = read_only(&p);
        assert_eq!(ckpt_pages(&db), None, "field {field} = {v}: ignored");
        assert_eq!(read_all(&db, 300), want);
        assert!(t.elapsed().as_secs() < 20);
    }
    // Sanity: the slot size the pokes above assume.
    assert_eq!(SLOT_SIZE, 32);
}

#[test]
fn a_version_2_checkpoint_still_opens_and_is_used() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let old = std::fs::read(data.join("v2-small.wdb.idx")).unwrap();
    assert_eq!(checkpoint::version_of(&old).unwrap(), 2);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.wdb");
    std::fs::copy(data.join("v2-small.wdb"), &p).unwrap();
    // The reference: the same log without its checkpoint.
    let want = eager_answers(&p, 5);
    std::fs::write(checkpoint_path(&p), &old).unwrap();
    {
        let db = writer(&p, 64 << 20);
        assert_eq!(ckpt_pages(&db), None, "read whole, into the overlay");
        assert_eq!(diff(&answers(&db, 5), &want), None);
    }
    // Used, so it was up to date: closing without a commit does not rewrite it.
    assert_eq!(std::fs::read(checkpoint_path(&p)).unwrap(), old);
    {
        let db = writer(&p, 64 << 20);
        let tx = db.begin().unwrap();
        let id = tx.array_info("signal").unwrap().id;
        let bs = tx.array_info("signal").unwrap().block_size as usize;
        tx.write_block(id, 0, &vec![0u8; bs]).unwrap();
        tx.commit().unwrap();
    }
    let new = std::fs::read(checkpoint_path(&p)).unwrap();
    assert_eq!(checkpoint::version_of(&new).unwrap(), 3);
    let db = read_only(&p);
    assert!(ckpt_pages(&db).is_some());
    assert_eq!(diff(&answers(&db, 5), &eager_answers(&p, 5)), None);
}

/// Not a test of its own: the body of the child process.
#[test]
fn child_entry() {
    let Some((role, path)) = child_util::role() else {
        return;
    };
    assert_eq!(role, "commit");
    let db = writer(Path::new(&path), 64 << 20);
    let tx = db.begin().unwrap();
    let id = tx.array_info("A").unwrap().id;
    for blk in [5u64, 777, 1999] {
        tx.write_block(id, blk, &vec![0xAB; BS]).unwrap();
    }
    tx.commit().unwrap();
    // Closing writes a new checkpoint over the one the parent has open.
}

#[test]
fn another_process_commit_is_seen_after_refresh() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = 2000;
    let (p, mut want) = many_blocks(dir.path(), n);
    let db = writer(&p, 64 << 20);
    assert!(ckpt_pages(&db).is_some());
    let before = db.snapshot().unwrap();
    let tx = db.begin().unwrap();
    let id = tx.array_info("A").unwrap().id;
    child_util::run_child_ok("commit", &p);
    // The old snapshot still reads its tid; a new one sees the child's commit.
    let old: Vec<Vec<u8>> = (0..n)
        .map(|b| {
            let mut buf = vec![0u8; BS];
            before.read_block(id, b, &mut buf).unwrap();
            buf
        })
        .collect();
    assert_eq!(old, want);
    for blk in [5usize, 777, 1999] {
        want[blk] = vec![0xAB; BS];
    }
    assert_eq!(read_all(&db, n), want);
    assert_eq!(
        db.snapshot().unwrap().block_version(id, 777).unwrap(),
        Some(db.last_tid().unwrap())
    );
    // A transaction from before the child's commit conflicts on a block it wrote, and
    // not on one it did not.
    tx.write_block(id, 777, &vec![1u8; BS]).unwrap();
    assert!(matches!(tx.commit(), Err(wdb::Error::Conflict { .. })));
    let tx = db.begin().unwrap();
    tx.write_block(id, 778, &vec![1u8; BS]).unwrap();
    tx.commit().unwrap();
    want[778] = vec![1u8; BS];
    assert_eq!(read_all(&db, n), want);
    assert!(ckpt_pages(&db).is_some(), "never needed a rebuild");
    drop(db);
    assert_eq!(read_all(&read_only(&p), n), want);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}
