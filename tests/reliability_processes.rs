//! Many processes on one database: reader processes check every snapshot they open
//! against a checksum committed in the same transaction as the data (0 inconsistencies)
//! while a writer commits; readers killed with SIGKILL while holding snapshots lose their
//! reader-table slots, so compaction is not blocked by them; two writer processes on
//! different blocks both make progress, and on the same block the losers get `Conflict`,
//! retry, and no increment is lost.
//!
//! Default: 4 readers × 200 commits, 2 writers × 100 increments; `WDB_SOAK=1`: 8 × 1,000
//! and 2 × 1,000.

mod reliability_util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reliability_util::*;
use wdb::db::Db;
use wdb::{Error, Tid};

const DATA_BLOCKS: u64 = 4;

fn spawn(test: &str, role: &str, db: &std::path::Path, extra: &[(&str, String)]) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("WDB_RELIAB_DB", db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Find `PREFIX value` in the child's output lines (libtest may share the first line).
fn field<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.find(prefix).map(|i| line[i + prefix.len()..].trim())
}

fn sum_block(tid: u64, crc: u32) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    b[..8].copy_from_slice(&tid.to_le_bytes());
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reader role: check snapshots until one shows `WDB_FINAL`; print the counts.
fn reader() {
    let db = Db::open(std::env::var("WDB_RELIAB_DB").unwrap()).unwrap();
    let fin: u64 = std::env::var("WDB_FINAL").unwrap().parse().unwrap();
    let (mut snaps, mut bad, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut buf = vec![0u8; BS];
    loop {
        let t = Instant::now();
        let s = db.snapshot().unwrap();
        slowest = slowest.max(t.elapsed());
        let (Ok(d), Ok(c)) = (s.array_info("data"), s.array_info("sum")) else {
            continue;
        };
        let mut h = crc32fast::Hasher::new();
        for blk in 0..DATA_BLOCKS {
            s.read_block(d.id, blk, &mut buf).unwrap();
            h.update(&buf);
        }
        s.read_block(c.id, 0, &mut buf).unwrap();
        if buf != sum_block(s.tid().0, h.finalize()) {
            bad += 1;
        }
        snaps += 1;
        if s.tid().0 >= fin {
            break;
        }
    }
    println!("READER {snaps} {bad} {}", slowest.as_micros());
}

/// Holder role: pin a snapshot, say which, and wait to be killed.
fn holder() {
    let db = Db::open(std::env::var("WDB_RELIAB_DB").unwrap()).unwrap();
    let s = db.snapshot().unwrap();
    println!("HOLD {}", s.tid().0);
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(s);
}

const READERS_TEST: &str =
    "readers_see_only_consistent_snapshots_and_killed_readers_free_their_slots";

/// A database at `p` with the zeroed array "data" and "sum", whose block holds the tid
/// and the CRC of all of "data": the database, the two array ids and the tid.
fn create_data_and_sum(p: &std::path::Path) -> (Db, u64, u64, u64) {
    let db = Db::open(p).unwrap();
    let tx = db.begin().unwrap();
    let d = tx
        .create_array_raw(spec("data", DATA_BLOCKS, true))
        .unwrap()
        .id;
    let c = tx.create_array_raw(spec("sum", 1, false)).unwrap().id;
    let t1 = tx.snapshot_tid().0 + 1;
    tx.write_block(
        c,
        0,
        &sum_block(t1, {
            let mut h = crc32fast::Hasher::new();
            for _ in 0..DATA_BLOCKS {
                h.update(&vec![0u8; BS]);
            }
            h.finalize()
        }),
    )
    .unwrap();
    assert_eq!(tx.commit().unwrap().0, t1);
    (db, d, c, t1)
}

/// A holder process on `p`, once it holds its snapshot: the child and the snapshot's tid.
fn spawn_holder(p: &std::path::Path) -> (Child, u64) {
    let mut h = spawn(READERS_TEST, "holder", p, &[]);
    let mut out = BufReader::new(h.stdout.take().unwrap());
    let mut line = String::new();
    while field(&line, "HOLD ").is_none() {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "holder died");
    }
    let t: u64 = field(&line, "HOLD ").unwrap().parse().unwrap();
    (h, t)
}

/// Wait for the reader processes: snapshots checked, inconsistent ones, and the
/// slowest `snapshot()` in µs, over all of them.
fn reader_totals(readers: Vec<Child>) -> (u64, u64, u64) {
    let (mut snaps, mut bad, mut slowest) = (0u64, 0u64, 0u64);
    for r in readers {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "a reader failed");
        let s = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = s
            .lines()
            .find_map(|l| field(l, "READER "))
            .unwrap()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        snaps += f[0];
        bad += f[1];
        slowest = slowest.max(f[2]);
    }
    (snaps, bad, slowest)
}

/// The pids of the processes registered as readers of `db`.
fn live_pids(db: &Db) -> Vec<u64> {
    db.info()
        .unwrap()
        .live_readers
        .iter()
        .map(|r| r.0)
        .collect()
}

#[test]
fn readers_see_only_consistent_snapshots_and_killed_readers_free_their_slots() {
    match std::env::var(ROLE).as_deref() {
        Ok("reader") => return reader(),
        Ok("holder") => return holder(),
        _ => {}
    }
    let n_readers = scale(4, 8);
    let commits = if soak() { 1000 } else { 200 };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.wdb");
    let (db, d, c, t1) = create_data_and_sum(&p);
    let fin = t1 + commits;
    let readers: Vec<Child> = (0..n_readers)
        .map(|_| {
            spawn(
                READERS_TEST,
                "reader",
                &p,
                &[("WDB_FINAL", fin.to_string())],
            )
        })
        .collect();
    let mut holders: Vec<(Child, u64)> = Vec::new();
    let mut rng = Rng::new(8);
    let mut blocks: Vec<Vec<u8>> = vec![vec![0u8; BS]; DATA_BLOCKS as usize];
    for i in 0..commits {
        if i % 50 == 10 {
            holders.push(spawn_holder(&p));
        }
        let tx = db.begin().unwrap();
        for _ in 0..1 + rng.below(2) {
            let blk = rng.below(DATA_BLOCKS);
            blocks[blk as usize] = random_block(&mut rng);
            tx.write_block(d, blk, &blocks[blk as usize]).unwrap();
        }
        let mut h = crc32fast::Hasher::new();
        blocks.iter().for_each(|b| h.update(b));
        let t = tx.snapshot_tid().0 + 1;
        tx.write_block(c, 0, &sum_block(t, h.finalize())).unwrap();
        assert_eq!(tx.commit().unwrap().0, t);
    }
    // Holders are alive and registered; kill them (SIGKILL: no clean-up runs).
    let pids: Vec<u64> = holders.iter().map(|(h, _)| u64::from(h.id())).collect();
    let live = live_pids(&db);
    for pid in &pids {
        assert!(live.contains(pid), "holder {pid} is registered while alive");
    }
    for (h, _) in &mut holders {
        h.kill().unwrap();
        h.wait().unwrap();
    }
    let (snaps, bad, slowest) = reader_totals(readers);
    let live = live_pids(&db);
    for pid in &pids {
        assert!(
            !live.contains(pid),
            "killed holder {pid} still holds a reader slot"
        );
    }
    // Compaction is not held back by the dead holders: their snapshots are dropped.
    let rep = db.compact().unwrap();
    assert!(rep.versions_dropped > 0 && rep.base_tid == Tid(fin));
    for (_, t) in &holders {
        assert!(matches!(
            db.snapshot_at(Tid(*t)),
            Err(Error::SnapshotGone { .. })
        ));
    }
    drop(db);
    fsck_clean(&p).unwrap();
    eprintln!(
        "processes: {n_readers} readers × {commits} commits: {snaps} snapshots checked, {bad} \
         inconsistent, slowest snapshot() {slowest} µs; {} holders killed, slots reclaimed, \
         compaction dropped {} versions",
        holders.len(),
        rep.versions_dropped
    );
    assert_eq!(bad, 0);
}

/// Writer role: `WDB_N` commits of block `WDB_BLOCK` of array "w": read the counter in
/// bytes 0..8, add one, commit; retry on `Conflict`.
fn writer() {
    let db = Db::open(std::env::var("WDB_RELIAB_DB").unwrap()).unwrap();
    let n: u64 = std::env::var("WDB_N").unwrap().parse().unwrap();
    let blk: u64 = std::env::var("WDB_BLOCK").unwrap().parse().unwrap();
    let mut conflicts = 0u64;
    let mut buf = vec![0u8; BS];
    for _ in 0..n {
        loop {
            let tx = db.begin().unwrap();
            let id = tx.array_info("w").unwrap().id;
            tx.read_block(id, blk, &mut buf).unwrap();
            let v = u64::from_le_bytes(buf[..8].try_into().unwrap()) + 1;
            buf[..8].copy_from_slice(&v.to_le_bytes());
            tx.write_block(id, blk, &buf).unwrap();
            match tx.commit() {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    println!("WRITER {conflicts}");
}

const WRITERS_TEST: &str = "two_writer_processes_progress_and_same_block_losers_retry";

#[test]
fn two_writer_processes_progress_and_same_block_losers_retry() {
    if std::env::var(ROLE).as_deref() == Ok("writer") {
        return writer();
    }
    let n = scale(100, 1000);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let id = tx.create_array_raw(spec("w", 2, false)).unwrap().id;
    tx.commit().unwrap();
    let mut report = Vec::new();
    for (case, blocks) in [("different blocks", [0u64, 1]), ("same block", [0, 0])] {
        let before = {
            let s = db.snapshot().unwrap();
            let mut b = vec![0u8; BS];
            [0u64, 1].map(|k| {
                s.read_block(id, k, &mut b).unwrap();
                u64::from_le_bytes(b[..8].try_into().unwrap())
            })
        };
        let ws: Vec<Child> = blocks
            .iter()
            .map(|b| {
                spawn(
                    WRITERS_TEST,
                    "writer",
                    &p,
                    &[("WDB_N", n.to_string()), ("WDB_BLOCK", b.to_string())],
                )
            })
            .collect();
        let mut conflicts = 0;
        for w in ws {
            let out = w.wait_with_output().unwrap();
            assert!(out.status.success(), "{case}: a writer failed");
            let s = String::from_utf8_lossy(&out.stdout);
            conflicts += s
                .lines()
                .find_map(|l| field(l, "WRITER "))
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
        let s = db.snapshot().unwrap();
        let mut b = vec![0u8; BS];
        let after = [0u64, 1].map(|k| {
            s.read_block(id, k, &mut b).unwrap();
            u64::from_le_bytes(b[..8].try_into().unwrap())
        });
        if blocks[0] != blocks[1] {
            assert_eq!(
                conflicts, 0,
                "{case}: writers of different blocks never conflict"
            );
            assert_eq!(
                [after[0] - before[0], after[1] - before[1]],
                [n, n],
                "{case}"
            );
        } else {
            assert_eq!(after[0] - before[0], 2 * n, "{case}: no increment is lost");
        }
        report.push(format!(
            "{case}: 2 × {n} commits, {conflicts} conflicts retried"
        ));
    }
    drop(db);
    fsck_clean(&p).unwrap();
    eprintln!("processes writers: {}", report.join("; "));
}
