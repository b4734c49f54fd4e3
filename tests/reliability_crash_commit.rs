//! A crash at any I/O call of a commit (process death with a torn write, power loss
//! dropping unsynced writes, or power loss keeping a random subset of 512-byte sectors)
//! loses no acknowledged commit and exposes no partial one: after reopen the head is the
//! last acknowledged commit (or the interrupted one, complete), every kept snapshot equals
//! the model, fsck is clean and the database takes new commits.
//!
//! Workloads mix create, block writes (holes, raw, zstd), resize, delete, commit, abort,
//! clean reopen and compaction. `WDB_SOAK=1` runs 20,000 workloads; `WDB_RELIAB_N=n` any.

mod reliability_util;

use std::collections::BTreeMap;
use std::path::Path;

use reliability_util::*;
use wdb::db::Db;
use wdb::store::{Store, StoreOptions};

/// Crashes injected during the torn-tail cut of a recovery.
static RECOVERY_CRASHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
use wdb::Tid;

struct Run {
    /// Mutating I/O calls made (while armed).
    ops: u64,
    /// (tid, model) of each acknowledged commit, oldest first.
    acked: Vec<(Tid, Model)>,
    /// The model the crashed commit would have produced.
    inflight: Option<Model>,
    disk: SimDisk,
    crashed_in: &'static str,
}

/// Run workload `seed`; crash at armed I/O call `crash_at` (0 = never).
fn run(dir: &Path, seed: u64, crash_at: u64) -> Run {
    let path = dir.join("c.wdb");
    drop(Db::open(&path).unwrap());
    let mut rng = Rng::new(seed);
    let (mut db, mut disk) = open_sim(&path).unwrap();
    let mut ops_before = 0u64;
    let arm = |disk: &SimDisk, ops_before: u64| {
        let mut d = disk.0.lock();
        d.armed = true;
        d.crash_at = crash_at.saturating_sub(ops_before);
    };
    arm(&disk, ops_before);
    let mut acked: Vec<(Tid, Model)> = Vec::new();
    let mut model = Model::new();
    let mut inflight = None;
    let n_tx = 4 + rng.below(10);
    for _ in 0..n_tx {
        match rng.below(100) {
            0..=6 => {
                // Clean close and reopen: the page cache reaches the file.
                ops_before += disk.0.lock().ops;
                drop(db);
                let cur = disk.0.lock().cur.clone();
                std::fs::write(&path, cur).unwrap();
                (db, disk) = open_sim(&path).unwrap();
                arm(&disk, ops_before);
            }
            7..=12 => {
                // Compaction writes a new real file and switches to it (its own crash
                // cases are in reliability_crash_compaction.rs); continue on the new file.
                db.compact().unwrap();
                ops_before += disk.0.lock().ops;
                drop(db);
                (db, disk) = open_sim(&path).unwrap();
                arm(&disk, ops_before);
            }
            _ => match random_tx(&db, &model, &mut rng) {
                Ok(TxOutcome::Committed(t, m)) => {
                    acked.push((t, m.clone()));
                    model = m;
                }
                Ok(TxOutcome::Aborted) => {}
                Ok(TxOutcome::Failed(e, m)) => {
                    assert!(
                        disk.0.lock().crashed,
                        "seed {seed}: commit failed without a fault: {e}"
                    );
                    assert!(
                        matches!(e, wdb::Error::Io(_)),
                        "seed {seed}: a crashed commit reports the I/O error, got {e}"
                    );
                    inflight = Some(m);
                    break;
                }
                Err(e) => panic!("seed {seed}: unexpected error {e}"),
            },
        }
    }
    let ops = ops_before + disk.0.lock().ops;
    let crashed_in = disk.0.lock().crashed_in;
    // The process is gone: no more I/O, no checkpoint on close (the store is poisoned
    // after a failed commit; without a crash every commit was synced).
    disk.0.lock().crashed = true;
    drop(db);
    Run {
        ops,
        acked,
        inflight,
        disk,
        crashed_in,
    }
}

/// Write the crash image, reopen, and check everything the contract promises.
fn check_after_crash(dir: &Path, seed: u64, r: &Run, kind: CrashKind, rng: &mut Rng) -> bool {
    let path = dir.join("c.wdb");
    let img = r.disk.crash_image(kind, rng);
    std::fs::write(&path, img).unwrap();
    let mut ctx = format!("seed {seed} kind {kind:?} crashed in {:?}", r.crashed_in);
    if rng.chance(30) {
        // A second crash, during recovery: the torn-tail cut (truncate, then sync).
        let disk = SimDisk::new(std::fs::read(&path).unwrap());
        {
            let mut d = disk.0.lock();
            d.armed = true;
            d.crash_at = 1 + rng.below(2);
        }
        let opened = Store::open_with_io(&path, Box::new(disk.clone()), StoreOptions::default());
        let crashed = disk.0.lock().crashed;
        assert!(
            crashed || opened.is_ok(),
            "{ctx}: recovery failed without a fault: {:?}",
            opened.err()
        );
        disk.0.lock().crashed = true;
        drop(opened);
        if crashed {
            let k2 = KINDS[rng.below(3) as usize];
            std::fs::write(&path, disk.crash_image(k2, rng)).unwrap();
            ctx.push_str(&format!(", then crashed ({k2:?}) while recovering"));
            RECOVERY_CRASHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let db = Db::open(&path).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let head = db.last_tid().unwrap();
    let (last_tid, last_model) = r.acked.last().cloned().unwrap_or((Tid::ZERO, Model::new()));
    let inflight_visible = match &r.inflight {
        Some(m) if head == Tid(last_tid.0 + 1) => {
            check_state(&db, None, m).unwrap_or_else(|e| panic!("{ctx}: in-flight commit: {e}"));
            true
        }
        _ => {
            assert_eq!(
                head, last_tid,
                "{ctx}: head is not the last acknowledged commit"
            );
            check_state(&db, None, &last_model).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            false
        }
    };
    // Older acknowledged snapshots that compaction kept are intact too (the last three).
    let base = db.info().unwrap().base_tid;
    for (t, m) in r.acked.iter().rev().take(3) {
        if *t >= base {
            check_state(&db, Some(*t), m).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        }
    }
    fsck_clean(&path).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    // It takes new commits and they persist.
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(spec("after-crash", 1, true))
        .unwrap()
        .id;
    tx.write_block(id, 0, &vec![7u8; BS]).unwrap();
    let t = tx
        .commit()
        .unwrap_or_else(|e| panic!("{ctx}: commit after recovery: {e}"));
    drop(db);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.last_tid().unwrap(), t, "{ctx}");
    fsck_clean(&path).unwrap_or_else(|e| panic!("{ctx}: after a new commit: {e}"));
    inflight_visible
}

#[derive(Default, Debug)]
struct Stats {
    workloads: u64,
    commits_acked: u64,
    by_call: BTreeMap<&'static str, u64>,
    by_kind: BTreeMap<String, u64>,
    inflight_visible: u64,
    inflight_absent: u64,
}

fn one(seed: u64, crash_at: Option<u64>, kind: CrashKind, st: &mut Stats) {
    let dir = fast_tempdir();
    let crash_at = match crash_at {
        Some(n) => n,
        None => {
            let dry = run(dir.path(), seed, 0);
            let mut pick = Rng::new(seed ^ 0xC0FFEE);
            1 + pick.below(dry.ops + 1)
        }
    };
    let dir = fast_tempdir();
    let r = run(dir.path(), seed, crash_at);
    let mut rng = Rng::new(seed.wrapping_add(crash_at));
    let vis = check_after_crash(dir.path(), seed, &r, kind, &mut rng);
    st.workloads += 1;
    st.commits_acked += r.acked.len() as u64;
    *st.by_call
        .entry(if r.crashed_in.is_empty() {
            "after the last call"
        } else {
            r.crashed_in
        })
        .or_default() += 1;
    *st.by_kind.entry(format!("{kind:?}")).or_default() += 1;
    if r.inflight.is_some() {
        if vis {
            st.inflight_visible += 1;
        } else {
            st.inflight_absent += 1;
        }
    }
}

const KINDS: [CrashKind; 3] = [
    CrashKind::Process,
    CrashKind::PowerLoss,
    CrashKind::TornSectors,
];

#[test]
fn random_workloads_crashed_at_a_random_io_call() {
    let n = scale(500, 20_000);
    let mut st = Stats::default();
    for seed in 0..n {
        one(seed, None, KINDS[(seed % 3) as usize], &mut st);
    }
    eprintln!(
        "crash_commit random: {st:?}, second crashes during recovery so far: {}",
        RECOVERY_CRASHES.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(st.workloads, n);
    assert!(st.by_call.contains_key("write") && st.by_call.contains_key("sync"));
}

#[test]
fn a_few_workloads_crashed_at_every_io_call() {
    let seeds = scale(6, 60).min(60);
    let mut st = Stats::default();
    for seed in 1000..1000 + seeds {
        let dir = fast_tempdir();
        let total = run(dir.path(), seed, 0).ops;
        for at in 1..=total + 1 {
            for kind in KINDS {
                one(seed, Some(at), kind, &mut st);
            }
        }
    }
    eprintln!("crash_commit every call: {st:?}");
    assert!(st.workloads > 0);
}
