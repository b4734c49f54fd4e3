//! I/O errors are clean failures: EIO or ENOSPC injected (by strace, into the real
//! syscall) at every call of every file-changing syscall of a commit and of a compaction
//! gives an `Err` naming the I/O error, never a panic; after a failed commit write or
//! fsync the writer stays poisoned; after reopen the state is the last acknowledged
//! commit and fsck is clean. The same with the fault-injecting `LogIo` at every write and
//! sync of a many-write commit. And a real full filesystem (a 1 MiB tmpfs, when this
//! process may mount one): commits fail cleanly and succeed again once space is freed.

mod reliability_util;

use std::path::Path;

use reliability_util::*;
use wdb::db::{Db, Options};
use wdb::log::io::{Fault, FaultyIo, FileIo};
use wdb::store::{Store, StoreOptions};
use wdb::{Error, Tid};

/// Three incompressible blocks: a commit of several separate writes.
fn payload(seed: u64) -> Vec<Vec<u8>> {
    let mut r = Rng::new(seed);
    (0..3)
        .map(|_| {
            let mut b = vec![0u8; BS];
            r.fill(&mut b);
            b
        })
        .collect()
}

fn write_payload(tx: &wdb::db::Transaction, seed: u64) {
    let id = tx.array_info("a0").map(|i| i.id).unwrap_or_else(|_| {
        tx.create_array_raw(spec("a0", MAX_BLOCKS, false))
            .unwrap()
            .id
    });
    for (i, b) in payload(seed).iter().enumerate() {
        tx.write_block(id, i as u64, b).unwrap();
    }
}

fn with_payload(m: &Model, seed: u64) -> Model {
    let mut m = m.clone();
    let a = m.entry("a0".into()).or_insert_with(|| ModelArray {
        shape: vec![MAX_BLOCKS * BS as u64],
        ..ModelArray::default()
    });
    for (i, b) in payload(seed).into_iter().enumerate() {
        a.blocks.insert(i as u64, b);
    }
    m
}

fn child(role: &str) {
    let db = Db::open(std::env::var("WDB_RELIAB_DB").unwrap()).unwrap();
    let _ = std::fs::metadata(MARKER);
    let r = if role == "commit" {
        let tx = db.begin().unwrap();
        write_payload(&tx, 77);
        tx.commit().map(|t| t.0)
    } else {
        db.compact().map(|r| r.new_size)
    };
    match r {
        Ok(v) => println!("RESULT OK {v}"),
        Err(e) => {
            println!("RESULT ERR {e}");
            if role == "commit" {
                let second = db.begin().and_then(|tx| {
                    write_payload(&tx, 78);
                    tx.commit()
                });
                match second {
                    Err(Error::Poisoned(_)) => println!("SECOND POISONED"),
                    Err(e) => println!("SECOND ERR {e}"),
                    Ok(t) => println!("SECOND OK {t}"),
                }
            }
        }
    }
}

const TEST: &str = "eio_and_enospc_at_every_syscall_of_commit_and_compaction";

#[test]
fn eio_and_enospc_at_every_syscall_of_commit_and_compaction() {
    if let Ok(role) = std::env::var(ROLE) {
        return child(&role);
    }
    if !have_strace() {
        eprintln!("SKIPPED: strace is not available; the LogIo and tmpfs tests still run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("ref.wdb");
    let m = build_reference(&pristine, 21);
    let head = Db::open(&pristine).unwrap().last_tid().unwrap();
    let db = dir.path().join("d.wdb");
    let (mut runs, mut failed, mut poisoned) = (0, 0, 0);
    for role in ["commit", "compact"] {
        restore(&pristine, &db);
        let counts = count_calls(TEST, role, &db, &dir.path().join("trace"));
        // `write` is only the child's stdout (files are written with pwrite64).
        for (sys, before, n) in counts.iter().filter(|c| c.0 != "write") {
            for k in 1..=*n {
                for errno in ["EIO", "ENOSPC"] {
                    restore(&pristine, &db);
                    let inj = format!("inject={sys}:error={errno}:when={}", before + k);
                    let out = strace_child(
                        TEST,
                        role,
                        &db,
                        &["-e".into(), inj, "-o".into(), "/dev/null".into()],
                    );
                    let so = String::from_utf8_lossy(&out.stdout);
                    let ctx = format!("{role}: {errno} at {sys} #{k} of {n}: {so}");
                    assert!(out.status.success(), "{ctx}: the child failed (panic?)");
                    let res = so
                        .lines()
                        .find_map(|l| l.split_once("RESULT ").map(|x| x.1));
                    let res = res.unwrap_or_else(|| panic!("{ctx}: no result"));
                    let ok = res.starts_with("OK");
                    if !ok {
                        failed += 1;
                        assert!(
                            res.contains("I/O error") || res.contains("busy"),
                            "{ctx}: unclear error"
                        );
                        if role == "commit" && (*sys == "pwrite64" || *sys == "fdatasync") {
                            assert!(so.contains("SECOND POISONED"), "{ctx}: not poisoned");
                            poisoned += 1;
                        }
                    }
                    // The state is the last acknowledged commit.
                    let want = if role == "commit" && ok {
                        with_payload(&m, 77)
                    } else {
                        m.clone()
                    };
                    let want_head = if role == "commit" && ok {
                        Tid(head.0 + 1)
                    } else {
                        head
                    };
                    let d = Db::open(&db).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
                    assert_eq!(d.last_tid().unwrap(), want_head, "{ctx}");
                    check_state(&d, None, &want).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    drop(d);
                    fsck_clean(&db).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    runs += 1;
                }
            }
        }
        eprintln!("io_errors {role}: calls after the marker {counts:?}");
    }
    eprintln!(
        "io_errors strace: {runs} injected errors, {failed} operations failed cleanly, \
         {poisoned} writers poisoned"
    );
    assert!(failed >= 10 && poisoned >= 2);
}

#[test]
fn eio_enospc_and_torn_writes_at_every_write_and_sync_of_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.wdb");
    let m0 = build_reference(&p, 31);
    let pristine = dir.path().join("pristine.wdb");
    std::fs::copy(&p, &pristine).unwrap();
    let head = Db::open(&p).unwrap().last_tid().unwrap();
    let mut cases = 0;
    for fault in [
        Fault::WriteEio,
        Fault::WriteEnospc,
        Fault::TearWrite(3000),
        Fault::SyncEio,
    ] {
        for nth in 1..=8u64 {
            restore(&pristine, &p);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap();
            let (io, plan) = FaultyIo::new(FileIo(f));
            let store = Store::open_with_io(&p, Box::new(io), StoreOptions::default()).unwrap();
            let db = Db::from_store(store, Options::default());
            plan.arm(fault, nth);
            let tx = db.begin().unwrap();
            write_payload(&tx, 5);
            let r = tx.commit();
            let fired = plan.at.load(std::sync::atomic::Ordering::SeqCst) != 0
                && match fault {
                    Fault::SyncEio => plan.syncs.load(std::sync::atomic::Ordering::SeqCst) >= nth,
                    _ => plan.writes.load(std::sync::atomic::Ordering::SeqCst) >= nth,
                };
            let ctx = format!("{fault:?} at call {nth}");
            let want = match r {
                Ok(t) => {
                    assert!(!fired, "{ctx}: the fault fired but the commit succeeded");
                    assert_eq!(t, Tid(head.0 + 1));
                    (t, with_payload(&m0, 5))
                }
                Err(e) => {
                    assert!(matches!(e, Error::Io(_)), "{ctx}: {e}");
                    let msg = e.to_string();
                    assert!(msg.contains("I/O error"), "{ctx}: {msg}");
                    plan.disarm();
                    let again = db.begin().map(|_| ());
                    assert!(matches!(again, Err(Error::Poisoned(_))), "{ctx}: {again:?}");
                    (head, m0.clone())
                }
            };
            drop(db);
            let db = Db::open(&p).unwrap();
            assert_eq!(db.last_tid().unwrap(), want.0, "{ctx}");
            check_state(&db, None, &want.1).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            drop(db);
            fsck_clean(&p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            cases += 1;
        }
    }
    eprintln!("io_errors LogIo: {cases} injected faults");
}

#[test]
fn a_full_filesystem_fails_commits_cleanly_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mount_tmpfs(dir.path(), "1m") else {
        eprintln!(
            "SKIPPED: cannot mount a small tmpfs here (needs root); the LogIo test covers ENOSPC"
        );
        return;
    };
    let mnt = m.0.clone();
    let p = mnt.join("full.wdb");
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 300 << 10]).unwrap();
    let db = Db::open(&p).unwrap();
    let mut model = Model::new();
    let mut last = Tid::ZERO;
    let mut seed = 0;
    let err = loop {
        seed += 1;
        let tx = db.begin().unwrap();
        write_payload(&tx, seed);
        match tx.commit() {
            Ok(t) => {
                last = t;
                model = with_payload(&model, seed);
            }
            Err(e) => break e,
        }
        assert!(seed < 100, "the 1 MiB filesystem never filled");
    };
    let msg = err.to_string();
    assert!(msg.contains("No space left"), "ENOSPC is named: {msg}");
    assert!(matches!(db.begin().map(|_| ()), Err(Error::Poisoned(_))));
    drop(db);
    std::fs::remove_file(&filler).unwrap();
    let db = Db::open(&p).unwrap();
    assert_eq!(
        db.last_tid().unwrap(),
        last,
        "the failed commit is not there"
    );
    check_state(&db, None, &model).unwrap();
    let tx = db.begin().unwrap();
    write_payload(&tx, 1000);
    let t = tx
        .commit()
        .expect("commits succeed again once space is freed");
    assert_eq!(t, Tid(last.0 + 1));
    drop(db);
    fsck_clean(&p).unwrap();
    eprintln!(
        "io_errors tmpfs: {} commits filled 1 MiB, the next failed with: {msg}",
        last.0
    );
    let _ = Path::new(&p);
}
