//! Snapshot isolation between two processes: a reader process keeps seeing its
//! snapshot while the writer process commits, sees the new commit at its next
//! snapshot (reading only the new log tail), and is listed in the reader table.
//! The test spawns this test binary itself as the child.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wdb::db::{ArraySpec, Compression, Db, Order};

const BS: usize = 64 << 10;

fn wait_for(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn child(dir: &Path) {
    let db = Db::open(dir.join("i.wdb")).unwrap();
    let snap = db.snapshot().unwrap();
    let id = snap.array_info("A").unwrap().id;
    let mut buf = vec![0u8; BS];
    snap.read_block(id, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 1));
    std::fs::write(dir.join("ready"), b"").unwrap();
    wait_for(&dir.join("go"));
    // The other process committed 2 meanwhile: this snapshot still sees 1.
    snap.read_block(id, 0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 1),
        "snapshot changed under a reader"
    );
    let s2 = db.snapshot().unwrap();
    assert!(s2.tid() > snap.tid());
    s2.read_block(id, 0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 2),
        "new snapshot does not see the other process's commit"
    );
}

#[test]
fn reader_process_keeps_its_snapshot_and_sees_new_commits_at_next_snapshot() {
    if let Ok(dir) = std::env::var("WDB_ISOLATION_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("i.wdb")).unwrap();
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(ArraySpec {
            name: "A".into(),
            dtype: vec![],
            dtype_name: "u8".into(),
            elem_size: 1,
            shape: vec![BS as u64 * 4],
            order: Order::C,
            block_size: BS as u32,
            compression: Compression::Zstd { level: 3 },
        })
        .unwrap()
        .id;
    tx.write_block(id, 0, &vec![1u8; BS]).unwrap();
    let t1 = tx.commit().unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut ch = Command::new(exe)
        .args([
            "--exact",
            "reader_process_keeps_its_snapshot_and_sees_new_commits_at_next_snapshot",
            "--nocapture",
        ])
        .env("WDB_ISOLATION_CHILD", dir.path())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("ready"));
    let readers = db.info().unwrap().live_readers;
    assert!(
        readers.contains(&(u64::from(ch.id()), t1)),
        "child's snapshot not in the reader table: {readers:?}"
    );
    let tx = db.begin().unwrap();
    tx.write_block(id, 0, &vec![2u8; BS]).unwrap();
    tx.commit().unwrap();
    std::fs::write(dir.path().join("go"), b"").unwrap();
    assert!(ch.wait().unwrap().success(), "child failed");
    // The child exited: its slot is free again (dead or released).
    let readers = db.info().unwrap().live_readers;
    assert!(
        !readers.iter().any(|(pid, _)| *pid == u64::from(ch.id())),
        "{readers:?}"
    );
}

/// Child for the kill test: hold a snapshot and wait to be killed.
fn holding_child(dir: &Path) {
    let db = Db::open(dir.join("k.wdb")).unwrap();
    let _snap = db.snapshot().unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_readers_slot_is_detected_as_dead_and_reused() {
    if let Ok(dir) = std::env::var("WDB_HOLDING_CHILD") {
        holding_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("k.wdb")).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array_raw(ArraySpec {
        name: "A".into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![1],
        order: Order::C,
        block_size: BS as u32,
        compression: Compression::None,
    })
    .unwrap();
    tx.commit().unwrap();
    let mut ch = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_readers_slot_is_detected_as_dead_and_reused",
        ])
        .env("WDB_HOLDING_CHILD", dir.path())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("ready"));
    let pid = u64::from(ch.id());
    assert!(db
        .info()
        .unwrap()
        .live_readers
        .iter()
        .any(|(p, _)| *p == pid));
    ch.kill().unwrap(); // SIGKILL: no destructor runs, the slot keeps its pid and tid
    ch.wait().unwrap();
    assert!(
        !db.info()
            .unwrap()
            .live_readers
            .iter()
            .any(|(p, _)| *p == pid),
        "dead reader still listed"
    );
    // Its slot is free again: many snapshots can register.
    let snaps: Vec<_> = (0..8).map(|_| db.snapshot().unwrap()).collect();
    assert_eq!(db.info().unwrap().live_readers.len(), snaps.len());
}
