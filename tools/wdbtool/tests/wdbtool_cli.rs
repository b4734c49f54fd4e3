//! wdbtool on real files: info/ls/log/fsck/compact succeed on a good database, fsck
//! exits 1 naming the offset of a problem, --repair cuts a torn tail, and bad
//! arguments or files give a message and exit 2, never a panic.

use std::path::Path;
use std::process::{Command, Output};

use wdb::db::{ArraySpec, Compression, Db, Order};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wdbtool"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn make(p: &Path) {
    let db = Db::open(p).unwrap();
    let tx = db.begin().unwrap();
    let id = tx
        .create_array_raw(ArraySpec {
            name: "temps".into(),
            dtype: vec![],
            dtype_name: "f64".into(),
            elem_size: 8,
            shape: vec![1 << 16],
            order: Order::C,
            block_size: 64 << 10,
            compression: Compression::Zstd { level: 3 },
        })
        .unwrap()
        .id;
    tx.write_block(id, 0, &vec![7u8; 64 << 10]).unwrap();
    tx.commit().unwrap();
    for v in 0..3u8 {
        let tx = db.begin().unwrap();
        tx.write_block(id, 1, &vec![v + 1; 64 << 10]).unwrap();
        tx.commit().unwrap();
    }
}

#[test]
fn commands_work_on_a_good_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.wdb");
    make(&p);
    let ps = p.to_str().unwrap();
    let o = tool(&["info", ps]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("last tid:        4"), "{}", text(&o));
    let o = tool(&["ls", ps]);
    assert!(
        o.status.success() && text(&o).contains("temps") && text(&o).contains("f64"),
        "{}",
        text(&o)
    );
    let o = tool(&["log", ps]);
    assert!(
        o.status.success() && text(&o).lines().count() == 5,
        "{}",
        text(&o)
    );
    let o = tool(&["fsck", ps]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = tool(&["compact", ps]);
    assert!(
        o.status.success() && text(&o).contains("compacted"),
        "{}",
        text(&o)
    );
    let o = tool(&["compact", "--keep-history", "2", ps]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(tool(&["fsck", ps]).status.code(), Some(0));
}

#[test]
fn fsck_names_problems_and_repair_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.wdb");
    make(&p);
    let ps = p.to_str().unwrap();
    let mut b = std::fs::read(&p).unwrap();
    let len = b.len();
    b.extend_from_slice(b"garbage");
    std::fs::write(&p, &b).unwrap();
    let o = tool(&["fsck", ps]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&format!("offset {len}")), "{}", text(&o));
    let o = tool(&["fsck", "--repair", ps]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("cut 7 bytes"), "{}", text(&o));
    // A flipped bit in the first transaction (followed by others): exit 1, not repaired.
    b.truncate(len);
    b[4096 + 20] ^= 4;
    std::fs::write(&p, &b).unwrap();
    let o = tool(&["fsck", "--repair", ps]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("transaction at 4096"), "{}", text(&o));
}

#[test]
fn bad_arguments_and_bad_files_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(tool(&[]).status.code(), Some(2));
    assert_eq!(tool(&["frobnicate"]).status.code(), Some(2));
    let o = tool(&["info", dir.path().join("missing.wdb").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("not found"), "{}", text(&o));
    let junk = dir.path().join("junk.wdb");
    std::fs::write(&junk, b"this is not a database").unwrap();
    for cmd in ["info", "ls", "log", "compact"] {
        let o = tool(&[cmd, junk.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{cmd}: {}", text(&o));
    }
    let o = tool(&["fsck", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("file header"), "{}", text(&o));
    assert_eq!(
        tool(&["compact", "--keep-history", "abc", junk.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn compact_keep_age_keeps_recent_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.wdb");
    make(&p);
    let ps = p.to_str().unwrap();
    let o = tool(&["compact", "--keep-age", "1d", ps]);
    assert!(o.status.success(), "{}", text(&o));
    // Every commit is younger than a day: the oldest snapshots are still there.
    assert!(Db::open(&p).unwrap().snapshot_at(wdb::Tid(2)).is_ok());
    let o = tool(&["compact", ps]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(matches!(
        Db::open(&p).unwrap().snapshot_at(wdb::Tid(2)),
        Err(wdb::Error::SnapshotGone { .. })
    ));
    for bad in ["7x", "d", "-1h", "99999999999999999999d"] {
        let o = tool(&["compact", "--keep-age", bad, ps]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
    }
    assert_eq!(tool(&["fsck", ps]).status.code(), Some(0));
}
