//! Zero-copy reads: a clean raw block is mapped straight from the log
//! file into a view (read-only, private) instead of being copied into a RAM page. The
//! data reads right (zero tail included), a first write moves the block to RAM, mapped
//! blocks are reclaimed under the budget, a corrupt payload is an `Err` from the
//! checked load and an abort inside a fault, compaction does not disturb an old
//! snapshot's mapped blocks, and a second process reads the same bytes.
//!
//! The child processes are this test binary re-run with `WDB_CHILD` set to the role.

mod child_util;

use std::path::Path;

use wdb::{ArrayOptions, Compression, Db, Options};

const BS: usize = 2 << 20;
const BLK: u64 = (BS / 8) as u64; // f64 elements in one block

fn raw() -> ArrayOptions {
    ArrayOptions {
        compression: Compression::None,
        ..ArrayOptions::default()
    }
}

fn value(i: u64) -> f64 {
    // Not zero anywhere in the first half of each block; the second half of the last
    // block is left zero (a trimmed tail).
    (i % 1_000_003) as f64 + 1.0
}

/// 4 full blocks and a half-filled 5th one, raw, committed.
fn make(path: &Path, budget: u64) -> Db {
    let db = Db::open_with(path, Options::default().ram_budget(budget)).unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.create_array_with::<f64>("A", &[5 * BLK], raw()).unwrap();
    {
        let mut v = a.view_mut(..).unwrap();
        for (i, x) in v.iter_mut().enumerate() {
            let i = i as u64;
            *x = if i >= 4 * BLK + BLK / 2 {
                0.0
            } else {
                value(i)
            };
        }
    }
    drop(a);
    tx.commit().unwrap();
    db
}

fn expect(i: u64) -> f64 {
    if i >= 4 * BLK + BLK / 2 {
        0.0
    } else {
        value(i)
    }
}

fn check_all(a: &wdb::Array<'_, f64>) {
    let v = a.view(..).unwrap();
    for (i, &x) in v.iter().enumerate() {
        if x != expect(i as u64) {
            panic!("element {i}: {x} != {}", expect(i as u64));
        }
    }
}

fn maps_file(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    maps.lines()
        .any(|l| l.ends_with(name) && l.contains(" r--p "))
}

#[test]
fn raw_blocks_map_the_log_file() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.wdb");
    let db = make(&path, 64 << 20);
    let before = db.memory_stats().unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    check_all(&a);
    let st = db.memory_stats().unwrap();
    assert!(
        st.file_maps - before.file_maps >= 5,
        "every raw block is mapped from the file: {st:?}"
    );
    assert_eq!(st.loads, before.loads, "no block is copied: {st:?}");
    assert!(maps_file(&path), "the log file is mapped read-only");
    // Mapped blocks count against the budget like RAM pages.
    assert!(st.ram_used >= 5 * BS as u64, "{st:?}");
    // The checked load maps them too, and reads the same.
    a.load(..).unwrap();
    assert_eq!(
        a.to_vec(4 * BLK..5 * BLK).unwrap()[..],
        (4 * BLK..5 * BLK).map(expect).collect::<Vec<_>>()[..]
    );
}

#[test]
fn first_write_moves_the_block_to_ram_commit_and_abort() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.wdb");
    let db = make(&path, 64 << 20);

    // Abort: read (mapped), write, abort — nothing changes.
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    assert_eq!(a.view(..).unwrap()[[7]], expect(7));
    a.view_mut(..).unwrap()[[7]] = -1.0;
    assert_eq!(a.view(..).unwrap()[[7]], -1.0);
    assert_eq!(
        a.view(..).unwrap()[[8]],
        expect(8),
        "the rest of the block was copied"
    );
    assert_eq!(a.view(..).unwrap()[[(4 * BLK + BLK - 1) as usize]], 0.0);
    drop(a);
    tx.abort();
    check_all(&db.snapshot().unwrap().array::<f64>("A").unwrap());

    // Commit: read, write into the mapped block and into its zero tail, commit.
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    check_all(&a);
    {
        let mut v = a.view_mut(..).unwrap();
        v[[(BLK + 3) as usize]] = -2.0;
        v[[(5 * BLK - 1) as usize]] = -3.0;
    }
    drop(a);
    tx.commit().unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    for (i, &x) in v.iter().enumerate() {
        let i = i as u64;
        let want = match i {
            i if i == BLK + 3 => -2.0,
            i if i == 5 * BLK - 1 => -3.0,
            i => expect(i),
        };
        assert_eq!(x, want, "element {i}");
    }
    drop(v);
    drop(a);
    drop(s);
    // And after a reopen.
    drop(db);
    let db = Db::open(&path).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    assert_eq!(a.view(..).unwrap()[[(BLK + 3) as usize]], -2.0);
    assert_eq!(a.view(..).unwrap()[[(5 * BLK - 1) as usize]], -3.0);
    assert_eq!(a.view(..).unwrap()[[(BLK + 4) as usize]], expect(BLK + 4));
}

#[test]
fn mapped_blocks_are_reclaimed_under_a_small_budget() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.wdb");
    // The budget holds 2 of the 5 blocks.
    drop(make(&path, 64 << 20));
    let db = Db::open_with(&path, Options::default().ram_budget(2 * BS as u64)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    for _ in 0..3 {
        check_all(&a);
        let st = db.memory_stats().unwrap();
        assert!(st.ram_used <= st.budget, "{st:?}");
    }
    let st = db.memory_stats().unwrap();
    assert!(st.evictions >= 3, "{st:?}");
    assert_eq!(st.loads, 0, "{st:?}");
    // A write under the same budget: the block goes to RAM.
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    check_all(&a);
    a.view_mut(..).unwrap()[[(2 * BLK) as usize]] = 9.0;
    drop(a);
    tx.commit().unwrap();
    let s = db.snapshot().unwrap();
    assert_eq!(
        s.array::<f64>("A").unwrap().view(..).unwrap()[[(2 * BLK) as usize]],
        9.0
    );
}

/// Flip one byte of block 1's payload on disk (found by its content).
fn corrupt_block_1(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let first = value(BLK).to_le_bytes();
    let second = value(BLK + 1).to_le_bytes();
    let mut off = None;
    for o in (0..bytes.len() - 16).step_by(4096) {
        if bytes[o..o + 8] == first && bytes[o + 8..o + 16] == second {
            off = Some(o);
        }
    }
    let off = off.expect("block 1's payload is in the file, page aligned") + 1000;
    let mut b = [0u8];
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.read_exact_at(&mut b, off as u64).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, off as u64).unwrap();
}

#[test]
fn a_corrupt_raw_payload_is_an_error_or_an_abort() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.wdb");
    drop(make(&path, 64 << 20));
    corrupt_block_1(&path);
    let db = Db::open(&path).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    a.load(..BLK).unwrap();
    let e = a.load(BLK..2 * BLK).unwrap_err();
    assert!(e.to_string().contains("CRC"), "{e}");
    a.load(2 * BLK..).unwrap();
    drop(a);
    drop(s);
    drop(db);
    // Inside a page fault: the process stops with the usual message.
    let out = child_util::run_child("fault_read", &path);
    assert!(!out.status.success(), "the child survived a corrupt block");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wdb: fatal") && err.contains("CRC"),
        "child stderr: {err}"
    );
}

#[test]
fn compaction_keeps_an_old_snapshots_mapped_blocks_right() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.wdb");
    let db = make(&path, 64 << 20);
    let old = db.snapshot().unwrap();
    let a_old = old.array::<f64>("A").unwrap();
    check_all(&a_old);
    // Overwrite two blocks, compact, read both snapshots.
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    a.view_mut(0..2 * BLK).unwrap().fill(4.0);
    drop(a);
    tx.commit().unwrap();
    db.compact().unwrap();
    check_all(&a_old);
    let new = db.snapshot().unwrap();
    let a_new = new.array::<f64>("A").unwrap();
    let v = a_new.view(..).unwrap();
    for (i, &x) in v.iter().enumerate() {
        let i = i as u64;
        assert_eq!(x, if i < 2 * BLK { 4.0 } else { expect(i) }, "element {i}");
    }
    drop(v);
    // A fresh handle on the old snapshot after compaction maps its blocks again.
    drop(a_old);
    check_all(&old.array::<f64>("A").unwrap());
}

#[test]
fn two_processes_read_the_same_blocks() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wdb");
    let db = make(&path, 64 << 20);
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    check_all(&a);
    let out = child_util::run_child("check", &path);
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_all(&a);
}

/// Not a test of its own: the body of the child processes.
#[test]
fn child_entry() {
    let Some((role, path)) = child_util::role() else {
        return;
    };
    let db = Db::open(&path).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    match role.as_str() {
        "fault_read" => {
            let v = a.view(..).unwrap();
            let x: f64 = v.iter().sum();
            println!("read {x} from a corrupt array");
        }
        "check" => {
            check_all(&a);
            assert!(db.memory_stats().unwrap().file_maps >= 5);
            assert!(maps_file(Path::new(&path)));
        }
        other => panic!("unknown role {other}"),
    }
}
