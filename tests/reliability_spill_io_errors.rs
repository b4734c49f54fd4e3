//! A spill that cannot be written is a clean failure: ENOSPC or EIO injected into a
//! transaction's spill file (through the fault-injecting `LogIo`) makes `write_from`,
//! `append`, `load`, `load_mut` and `commit` return an `Err` naming the spill file and
//! the cause; the transaction stays usable (its dirty blocks are intact: once the disk
//! takes writes again it commits everything) or can be aborted, and the database is not
//! poisoned: the next transaction commits, reopen shows the last commit, fsck is clean.
//! A page fault whose spill fails stops the process with a message naming the cause.
//! And a real full filesystem (a small tmpfs, when this process may mount one) gives
//! the same `Err` and recovers once space is freed.

mod child_util;
mod reliability_util;

use std::path::Path;
use std::sync::Arc;

use wdb::db::{ArrayOptions, Db, Options, Transaction};
use wdb::log::io::{Fault, FaultPlan, FaultyIo, FileIo, LogIo};
use wdb::store::spill::SpillIoFactory;
use wdb::Error;

/// Small blocks and a budget of 16 of them: every test spills quickly.
const BS: u64 = 64 << 10;
const BUDGET: u64 = 16 * BS;
/// Elements (u64) per block.
const PER: u64 = BS / 8;

/// Without write-behind, every spill runs in the call that needs the room: the n-th
/// spill-file write is the call's own.
fn opts() -> Options {
    Options::default().ram_budget(BUDGET).write_behind(false)
}

fn aopts() -> ArrayOptions {
    ArrayOptions::default().block_size(BS as u32)
}

/// Open `p` with spill files under a shared fault plan.
fn open_faulty(p: &Path) -> (Db, Arc<FaultPlan>) {
    let db = Db::open_with(p, opts()).unwrap();
    let plan = Arc::new(FaultPlan::default());
    let pl = plan.clone();
    let f: SpillIoFactory =
        Arc::new(move |io: FileIo| Box::new(FaultyIo::with_plan(io, pl.clone())) as Box<dyn LogIo>);
    db.store().set_spill_io(Some(f));
    (db, plan)
}

/// Incompressible values (raw blocks: no payload stays small).
fn val(i: u64) -> u64 {
    let z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^ (z >> 31)
}

fn values(lo: u64, n: u64) -> Vec<u64> {
    (lo..lo + n).map(val).collect()
}

fn is_spill_error(e: &Error, cause: &str) -> bool {
    let m = e.to_string();
    matches!(e, Error::Io(_)) && m.contains("spill file") && m.contains(cause)
}

/// Write 18 whole blocks of array "A": blocks 0 and 1 are spilled into the
/// transaction's share of RAM (2 blocks), the other 16 fill the budget. From then on
/// every spill writes to the spill file.
fn fill_budget(tx: &Transaction) {
    let mut a = tx
        .create_array_with::<u64>("A", &[64 * PER], aopts())
        .unwrap();
    a.write_from(0..18 * PER, &values(0, 18 * PER)).unwrap();
    let st = tx.staged_bytes();
    assert_eq!((st.in_memory, st.spill_file), (2 * BS, 0), "{st:?}");
}

fn check_no_poison_and_fsck(db: Db, p: &Path, want_last: wdb::Tid) {
    let tx = db.begin().unwrap();
    tx.create_array_with::<u8>("after", &[10], aopts()).unwrap();
    let t = tx.commit().unwrap();
    assert!(t > want_last);
    drop(db);
    let db = Db::open_with(p, opts()).unwrap();
    assert_eq!(db.last_tid().unwrap(), t);
    drop(db);
    assert!(Db::fsck_path(p).unwrap().is_clean());
}

#[test]
fn write_from_append_load_and_load_mut_return_the_spill_error() {
    for fault in [Fault::WriteEnospc, Fault::WriteEio] {
        let cause = if fault == Fault::WriteEnospc {
            "No space left on device"
        } else {
            "Input/output error"
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.wdb");
        let (db, plan) = open_faulty(&p);
        let head = db.last_tid().unwrap();
        let tx = db.begin().unwrap();
        fill_budget(&tx);
        {
            let mut a = tx.array_mut::<u64>("A").unwrap();
            // write_from past the budget: its block needs room, the spill fails.
            plan.arm(fault, 1);
            let e = a
                .write_from(20 * PER..21 * PER, &values(20 * PER, PER))
                .unwrap_err();
            assert!(is_spill_error(&e, cause), "{fault:?} write_from: {e}");
            // append
            plan.arm(fault, 1);
            let e = a.append(&values(0, 2 * PER)).unwrap_err();
            assert!(is_spill_error(&e, cause), "{fault:?} append: {e}");
            assert_eq!(a.len(), 64 * PER, "a failed append changes nothing");
            // load_mut
            plan.arm(fault, 1);
            let e = a.load_mut(21 * PER..22 * PER).unwrap_err();
            assert!(is_spill_error(&e, cause), "{fault:?} load_mut: {e}");
            // load (read-only: a clean block needs room too)
            plan.arm(fault, 1);
            let e = a.load(30 * PER..31 * PER).unwrap_err();
            assert!(is_spill_error(&e, cause), "{fault:?} load: {e}");
            let s = db.memory_stats().unwrap();
            assert_eq!((s.dirty, s.spilled), (BUDGET, 2 * BS), "{s:?}");
            assert_eq!(tx.staged_bytes().spill_file, 0, "nothing reached the file");
            // The dirty blocks are intact (reading the spilled ones back spills others,
            // which the disarmed plan lets through).
            plan.disarm();
            assert_eq!(a.to_vec(0..18 * PER).unwrap(), values(0, 18 * PER));
        }
        // Writes pass again: the same transaction goes on and commits everything.
        {
            let mut a = tx.array_mut::<u64>("A").unwrap();
            a.write_from(18 * PER..64 * PER, &values(18 * PER, 46 * PER))
                .unwrap();
            assert!(db.memory_stats().unwrap().spill_writes > 0);
        }
        let t = tx.commit().unwrap();
        let snap = db.snapshot().unwrap();
        assert_eq!(
            snap.array::<u64>("A").unwrap().to_vec(..).unwrap(),
            values(0, 64 * PER)
        );
        drop(snap);
        assert!(t > head);
        check_no_poison_and_fsck(db, &p, t);
    }
}

#[test]
fn a_commit_whose_spill_fails_is_an_err_and_the_transaction_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.wdb");
    let (db, plan) = open_faulty(&p);
    let head = db.last_tid().unwrap();
    let before = std::fs::read(&p).unwrap();
    let tx = db.begin().unwrap();
    fill_budget(&tx);
    // The commit stores the 16 dirty blocks: past the transaction's share of RAM they
    // go to its spill file, whose first write fails.
    plan.arm(Fault::WriteEnospc, 1);
    let e = tx.commit().unwrap_err();
    assert!(is_spill_error(&e, "No space left on device"), "{e}");
    plan.disarm();
    assert_eq!(std::fs::read(&p).unwrap(), before, "nothing was appended");
    assert_eq!(db.last_tid().unwrap(), head);
    check_no_poison_and_fsck(db, &p, head);
}

#[test]
fn an_aborted_transaction_after_a_failed_spill_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.wdb");
    let (db, plan) = open_faulty(&p);
    let head = db.last_tid().unwrap();
    let tx = db.begin().unwrap();
    fill_budget(&tx);
    plan.arm(Fault::TearWrite(1000), 1);
    {
        let mut a = tx.array_mut::<u64>("A").unwrap();
        let e = a
            .write_from(18 * PER..40 * PER, &values(0, 22 * PER))
            .unwrap_err();
        assert!(is_spill_error(&e, "Input/output error"), "{e}");
    }
    tx.abort();
    plan.disarm();
    let s = db.memory_stats().unwrap();
    assert_eq!((s.dirty, s.spilled), (0, 0), "{s:?}");
    assert_eq!(db.last_tid().unwrap(), head);
    check_no_poison_and_fsck(db, &p, head);
}

#[test]
fn child_entry() {
    let Some((role, path)) = child_util::role() else {
        return;
    };
    assert_eq!(role, "fault");
    let (db, plan) = open_faulty(Path::new(&path));
    let tx = db.begin().unwrap();
    let mut a = tx
        .create_array_with::<u64>("A", &[64 * PER], aopts())
        .unwrap();
    let mut v = a.view_mut(..).unwrap();
    plan.arm(Fault::WriteEnospc, 1);
    for (i, x) in v.iter_mut().enumerate() {
        *x = val(i as u64);
    }
    unreachable!("the fault must stop the process");
}

#[test]
fn a_page_fault_whose_spill_fails_stops_the_process_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.wdb");
    let out = child_util::run_child("fault", &p);
    let err = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(
        err.contains("page fault")
            && err.contains("spill file")
            && err.contains("No space left on device"),
        "{err}"
    );
    // The database the child never committed to opens clean.
    let db = Db::open(&p).unwrap();
    assert_eq!(db.last_tid().unwrap(), wdb::Tid::ZERO);
    drop(db);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}

#[test]
fn a_full_filesystem_fails_the_spill_cleanly_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = reliability_util::mount_tmpfs(dir.path(), "1m") else {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root); the injected faults cover ENOSPC");
        return;
    };
    let mnt = m.0.clone();
    let p = mnt.join("full.wdb");
    let db = Db::open_with(&p, opts()).unwrap();
    let tx = db.begin().unwrap();
    let e = {
        let mut a = tx
            .create_array_with::<u64>("A", &[64 * PER], aopts())
            .unwrap();
        // 4 MiB of incompressible blocks do not fit beside the database in 1 MiB.
        a.write_from(.., &values(0, 64 * PER)).unwrap_err()
    };
    assert!(is_spill_error(&e, "No space left on device"), "{e}");
    tx.abort();
    // The spill file's space is back once the last reference to the aborted
    // transaction's spill file is gone (a background writeback may hold one for a few
    // milliseconds): a transaction that fits commits. Its writes and its commit both
    // spill, so either may still meet the space held until then.
    let mut tries = 0;
    loop {
        let tx = db.begin().unwrap();
        let r = {
            let mut a = tx
                .create_array_with::<u64>("A", &[8 * PER], aopts())
                .unwrap();
            a.write_from(.., &values(0, 8 * PER))
        };
        let r = r.and_then(|()| tx.commit().map(drop));
        match r {
            Ok(()) => break,
            Err(e) if tries < 200 && is_spill_error(&e, "No space left on device") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("the space of the aborted spill file did not come back: {e}"),
        }
    }
    drop(db);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}
