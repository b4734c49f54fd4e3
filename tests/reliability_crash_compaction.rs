//! A crash at any step of compaction leaves exactly one valid database with the same
//! contents: (1) a process running `Db::compact` is killed (SIGKILL injected by strace)
//! at every call of every file-changing syscall it makes; (2) every on-disk state a power
//! loss can leave — the old file with any prefix or sector subset of the new file beside
//! it and either checkpoint, or the new file with either checkpoint — opens to the same
//! head, reads the same data and is fsck-clean.

mod reliability_util;

use std::path::Path;

use reliability_util::*;
use wdb::db::Db;

fn child_compact() {
    let db = Db::open(std::env::var("WDB_RELIAB_DB").unwrap()).unwrap();
    let _ = std::fs::metadata(MARKER);
    match db.compact() {
        Ok(r) => println!("RESULT OK {}", r.new_size),
        Err(e) => println!("RESULT ERR {e}"),
    }
}

fn check_same(path: &Path, m: &Model, head: wdb::Tid, ctx: &str) {
    let db = Db::open(path).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    assert_eq!(db.last_tid().unwrap(), head, "{ctx}");
    check_state(&db, None, m).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    drop(db);
    fsck_clean(path).unwrap_or_else(|e| panic!("{ctx}: {e}"));
}

#[test]
fn killed_at_every_syscall_of_compaction() {
    if std::env::var(ROLE).as_deref() == Ok("compact") {
        return child_compact();
    }
    if !have_strace() {
        eprintln!("SKIPPED: strace is not available; the power-loss test still runs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("ref.wdb");
    let m = build_reference(&pristine, 7);
    let head = Db::open(&pristine).unwrap().last_tid().unwrap();
    let db = dir.path().join("d.wdb");
    restore(&pristine, &db);
    let trace = dir.path().join("trace");
    let test = "killed_at_every_syscall_of_compaction";
    let counts = count_calls(test, "compact", &db, &trace);
    let (mut kills, mut died) = (0, 0);
    for (sys, before, n) in &counts {
        for k in 1..=*n {
            restore(&pristine, &db);
            let inj = format!("inject={sys}:signal=KILL:when={}", before + k);
            let out = strace_child(
                test,
                "compact",
                &db,
                &["-e".into(), inj, "-o".into(), "/dev/null".into()],
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let ctx = format!("killed at {sys} #{k} of {n} after the marker");
            assert!(
                !out.status.success() || stdout.contains("RESULT OK"),
                "{ctx}: {stdout}"
            );
            check_same(&db, &m, head, &ctx);
            kills += 1;
            if !out.status.success() {
                died += 1;
            }
        }
    }
    eprintln!(
        "crash_compaction: {kills} injected kills, {died} children died (in the others the call numbering \
         shifted past the last call), calls after the marker: {counts:?}"
    );
    assert!(died >= 20, "too few kills landed: {counts:?}");
}

#[test]
fn every_power_loss_state_of_compaction_opens_to_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.wdb");
    let m = build_reference(&p, 11);
    let head;
    let (old, old_idx) = {
        let db = Db::open(&p).unwrap();
        head = db.last_tid().unwrap();
        drop(db);
        (
            std::fs::read(&p).unwrap(),
            std::fs::read(dir.path().join("p.wdb.idx")).ok(),
        )
    };
    {
        let db = Db::open(&p).unwrap();
        db.compact().unwrap();
    }
    let new = std::fs::read(&p).unwrap();
    let new_idx = std::fs::read(dir.path().join("p.wdb.idx")).ok();
    assert!(
        new.len() < old.len(),
        "the reference has something to compact"
    );
    let tmp = dir.path().join("p.wdb.compact.4242");
    let idx = dir.path().join("p.wdb.idx");
    let put_idx = |i: &Option<Vec<u8>>| match i {
        Some(b) => std::fs::write(&idx, b).unwrap(),
        None => {
            let _ = std::fs::remove_file(&idx);
        }
    };
    let mut rng = Rng::new(3);
    let mut states = 0;
    // Before the rename is durable: the old file, any part of the new one beside it, and
    // the old or the new checkpoint (written before the rename).
    for cut in (0..=new.len()).step_by(512).chain([new.len()]) {
        for (which, i) in [("old", &old_idx), ("new", &new_idx)] {
            std::fs::write(&p, &old).unwrap();
            let mut part = new[..cut].to_vec();
            if rng.chance(30) {
                // Unsynced sectors of the copy that never arrived.
                for s in part.chunks_mut(512) {
                    if rng.chance(30) {
                        s.fill(0);
                    }
                }
            }
            std::fs::write(&tmp, &part).unwrap();
            put_idx(i);
            check_same(
                &p,
                &m,
                head,
                &format!("old file, {cut} bytes of the copy, {which} checkpoint"),
            );
            states += 1;
        }
    }
    // After the rename: the new file with either checkpoint or none.
    for (which, i) in [("old", &old_idx), ("new", &new_idx), ("no", &None)] {
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(&p, &new).unwrap();
        put_idx(i);
        check_same(&p, &m, head, &format!("new file, {which} checkpoint"));
        states += 1;
    }
    eprintln!(
        "crash_compaction power loss: {states} states, old {} bytes, new {} bytes",
        old.len(),
        new.len()
    );
}
