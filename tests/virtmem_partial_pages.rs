//! Random reads of raw blocks with page CRC tables (storage-format.md §2.7, state.rs
//! invariant 15): a random read fault maps its block partially, checking and showing
//! only a 16 KiB window around the fault, charged that window; a corrupt page is
//! reported (an `Err` from a checked load, an abort inside a fault) while the other
//! pages of its block read fine; a corrupt table is corruption; a write, a checked
//! load or a scan completes a partial block; fsck finds a bad page or table.
//!
//! The child processes are this test binary re-run with `WDB_CHILD` set to the role.

mod child_util;

use std::path::Path;

use wdb::{ArrayOptions, Compression, Db, Options};

const BS: usize = 2 << 20;
const BLK: u64 = (BS / 8) as u64; // f64 elements in one block
const N_BLKS: u64 = 8;
const WINDOW: u64 = 16 << 10; // state.rs PART_WINDOW

fn raw() -> ArrayOptions {
    ArrayOptions {
        compression: Compression::None,
        ..ArrayOptions::default()
    }
}

fn value(i: u64) -> f64 {
    (i % 1_000_003) as f64 + 1.0
}

/// `N_BLKS` full raw blocks, committed.
fn make(path: &Path, budget: u64) -> Db {
    let db = Db::open_with(path, Options::default().ram_budget(budget)).unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx
        .create_array_with::<f64>("A", &[N_BLKS * BLK], raw())
        .unwrap();
    {
        let mut v = a.view_mut(..).unwrap();
        for (i, x) in v.iter_mut().enumerate() {
            *x = value(i as u64);
        }
    }
    drop(a);
    tx.commit().unwrap();
    db
}

/// File offset of block `b`'s payload (page aligned, found by its content).
fn payload_of(bytes: &[u8], b: u64) -> usize {
    let first = value(b * BLK).to_le_bytes();
    let second = value(b * BLK + 1).to_le_bytes();
    (0..bytes.len() - 16)
        .step_by(4096)
        .rfind(|&o| bytes[o..o + 8] == first && bytes[o + 8..o + 16] == second)
        .expect("the block's payload is in the file, page aligned")
}

fn flip(path: &Path, off: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off as u64).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, off as u64).unwrap();
}

/// Flip a byte of block `b`'s payload at `at`.
fn corrupt_page(path: &Path, b: u64, at: usize) {
    let bytes = std::fs::read(path).unwrap();
    flip(path, payload_of(&bytes, b) + at);
}

/// Flip a byte of block `b`'s page CRC table (2052 bytes before the zero padding that
/// page-aligns the payload).
fn corrupt_table(path: &Path, b: u64) {
    let bytes = std::fs::read(path).unwrap();
    let p = payload_of(&bytes, b);
    let last = (0..p).rev().find(|&o| bytes[o] != 0).unwrap();
    flip(path, last - 1000);
}

#[test]
fn random_reads_check_and_charge_only_their_windows() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.wdb");
    drop(make(&path, 64 << 20));
    // A budget of two blocks: eight blocks read at random stay resident.
    let db = Db::open_with(&path, Options::default().ram_budget(2 * BS as u64)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    let before = db.memory_stats().unwrap();
    // Descending: no block after the one read before (that would look like a scan,
    // and readahead would map the blocks after it whole).
    let order = [7u64, 6, 5, 4, 3, 2, 1, 0];
    for &b in &order {
        let i = (b * BLK + 5) as usize;
        assert_eq!(v[[i]], value(i as u64));
    }
    let st = db.memory_stats().unwrap();
    assert_eq!(st.evictions, before.evictions, "{st:?}");
    assert_eq!(st.loads, before.loads, "mapped, not copied: {st:?}");
    assert_eq!(st.ram_used, N_BLKS * WINDOW, "one window per block: {st:?}");
    // Another window of block 5 (in its middle): one more window charged.
    let i = (5 * BLK + BLK / 2 + 3) as usize;
    assert_eq!(v[[i]], value(i as u64));
    // The bytes just before and after the windows read are right too (each fault
    // shows its own window).
    let i = (5 * BLK + BLK / 2 - 1) as usize;
    assert_eq!(v[[i]], value(i as u64));
    assert_eq!(
        db.memory_stats().unwrap().ram_used,
        (N_BLKS + 2) * WINDOW,
        "{:?}",
        db.memory_stats().unwrap()
    );
}

#[test]
fn many_partial_blocks_stay_within_the_budget() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.wdb");
    drop(make(&path, 64 << 20));
    // A budget of one block (128 windows): 3 windows in each of the 8 blocks fit, and
    // the budget is never exceeded on the way.
    let budget = BS as u64;
    let db = Db::open_with(&path, Options::default().ram_budget(budget.max(BS as u64))).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    for round in 0..3u64 {
        for b in (0..N_BLKS).rev() {
            let i = (b * BLK + round * (BLK / 3) + 11) as usize;
            assert_eq!(v[[i]], value(i as u64));
            let st = db.memory_stats().unwrap();
            assert!(st.ram_used <= st.budget, "{st:?}");
        }
    }
    let st = db.memory_stats().unwrap();
    assert_eq!(
        st.ram_used,
        24 * WINDOW,
        "24 windows fit a 2 MiB budget: {st:?}"
    );
    assert_eq!(st.evictions, 0, "{st:?}");
    // 8 × 20 windows do not: partial blocks are evicted whole, in LRU order.
    for round in 0..20u64 {
        for b in (0..N_BLKS).rev() {
            let i = (b * BLK + round * (BLK / 20) + 11) as usize;
            assert_eq!(v[[i]], value(i as u64));
            let st = db.memory_stats().unwrap();
            assert!(st.ram_used <= st.budget, "{st:?}");
        }
    }
    let st = db.memory_stats().unwrap();
    assert!(st.evictions > 0, "{st:?}");
    // What was evicted reads right again.
    for i in (0..N_BLKS * BLK).step_by(BLK as usize / 3 + 1) {
        assert_eq!(v[[i as usize]], value(i));
    }
}

#[test]
fn partial_windows_are_bounded_over_all_blocks() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    // 9216 windows (more than the bound of 8192, state.rs MAX_PART_WINDOWS) in 72
    // blocks: partial pages are evicted, least recently used first, to stay in bound,
    // though the budget would hold them all.
    const BLKS: u64 = 72;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.wdb");
    {
        let db = Db::open(&path).unwrap();
        let tx = db.begin().unwrap();
        let mut a = tx
            .create_array_with::<f64>("A", &[BLKS * BLK], raw())
            .unwrap();
        let chunk: Vec<f64> = (0..BLK).map(value).collect();
        for b in 0..BLKS {
            a.write_from(b * BLK..(b + 1) * BLK, &chunk).unwrap();
        }
        drop(a);
        tx.commit().unwrap();
    }
    let db = Db::open_with(&path, Options::default().ram_budget(1 << 30)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    let per = BS as u64 / WINDOW;
    // Even windows, then odd ones: never the window after the one read before.
    let order: Vec<u64> = (0..per).step_by(2).chain((1..per).step_by(2)).collect();
    for b in (0..BLKS).rev() {
        for &w in &order {
            let i = b * BLK + w * WINDOW / 8 + 3;
            assert_eq!(v[[i as usize]], value(i % BLK));
        }
    }
    let st = db.memory_stats().unwrap();
    assert!(st.evictions > 0, "{st:?}");
    assert!(st.ram_used <= 8192 * WINDOW, "{st:?}");
    // Evicted blocks read right again.
    for b in 0..BLKS {
        let i = b * BLK + BLK / 2 + 1;
        assert_eq!(v[[i as usize]], value(i % BLK));
    }
}

#[test]
fn a_partial_block_completes_on_write_load_and_scan() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.wdb");
    let db = make(&path, 64 << 20);
    drop(db);
    let db = Db::open_with(&path, Options::default().ram_budget(64 << 20)).unwrap();
    // A write through the view that read the block at random.
    let tx = db.begin().unwrap();
    {
        let mut a = tx.array_mut::<f64>("A").unwrap();
        let mut v = a.view_mut(..).unwrap();
        let i = (3 * BLK + 7) as usize;
        assert_eq!(v[[i]], value(i as u64));
        let used = db.memory_stats().unwrap().ram_used;
        assert_eq!(used, WINDOW);
        let j = (3 * BLK + BLK / 2) as usize;
        v[[j]] = -1.0;
        assert_eq!(v[[i]], value(i as u64));
        assert_eq!(v[[j]], -1.0);
        let k = (3 * BLK + BLK - 1) as usize;
        assert_eq!(v[[k]], value(k as u64));
    }
    tx.commit().unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    // A checked load of a partial block: the whole block is checked and charged.
    let i = (6 * BLK + 9) as usize;
    assert_eq!(v[[i]], value(i as u64));
    let used = db.memory_stats().unwrap().ram_used;
    a.load(6 * BLK..7 * BLK).unwrap();
    assert_eq!(
        db.memory_stats().unwrap().ram_used,
        used - WINDOW + BS as u64,
        "{:?}",
        db.memory_stats().unwrap()
    );
    // A scan after random reads reads every byte right.
    let i = (BLK + 9) as usize;
    assert_eq!(v[[i]], value(i as u64));
    for (k, &x) in v.iter().enumerate() {
        let want = if k as u64 == 3 * BLK + BLK / 2 {
            -1.0
        } else {
            value(k as u64)
        };
        assert_eq!(x, want, "element {k}");
    }
}

#[test]
fn a_corrupt_page_is_reported_and_the_other_pages_read() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.wdb");
    drop(make(&path, 64 << 20));
    corrupt_page(&path, 1, 1000);
    let rep = Db::fsck_path(&path).unwrap();
    assert!(
        rep.to_string().contains("data CRC mismatch in page 0"),
        "{rep}"
    );
    {
        let db = Db::open(&path).unwrap();
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("A").unwrap();
        let v = a.view(..).unwrap();
        // Pages of block 1 in other windows read fine.
        for i in [BLK + BLK / 2, 2 * BLK - 1, BLK + WINDOW / 8] {
            assert_eq!(v[[i as usize]], value(i));
        }
        // The checked load of the whole block reports the bad page.
        let e = a.load(BLK..2 * BLK).unwrap_err();
        assert!(e.to_string().contains("CRC"), "{e}");
        a.load(2 * BLK..).unwrap();
    }
    // Inside a page fault: the good page reads, then the bad one stops the process.
    let out = child_util::run_child("bad_page", &path);
    assert!(!out.status.success(), "the child survived a corrupt page");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("good page read"), "child stdout: {stdout}");
    assert!(!stdout.contains("bad page read"), "child stdout: {stdout}");
    assert!(
        err.contains("wdb: fatal") && err.contains("CRC"),
        "child stderr: {err}"
    );
}

#[test]
fn a_corrupt_table_is_corruption() {
    if std::env::var("WDB_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.wdb");
    drop(make(&path, 64 << 20));
    corrupt_table(&path, 2);
    let rep = Db::fsck_path(&path).unwrap();
    assert!(
        rep.to_string().contains("page CRC table CRC mismatch"),
        "{rep}"
    );
    {
        let db = Db::open(&path).unwrap();
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("A").unwrap();
        let e = a.load(2 * BLK..3 * BLK).unwrap_err();
        assert!(e.to_string().contains("table"), "{e}");
        a.load(3 * BLK..).unwrap();
    }
    let out = child_util::run_child("bad_table", &path);
    assert!(!out.status.success(), "the child survived a corrupt table");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wdb: fatal") && err.contains("table"),
        "child stderr: {err}"
    );
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
    let v = a.view(..).unwrap();
    match role.as_str() {
        "bad_page" => {
            let i = BLK + BLK / 2;
            assert_eq!(v[[i as usize]], value(i));
            println!("good page read");
            let x = v[[(BLK + 100) as usize]];
            println!("bad page read: {x}");
        }
        "bad_table" => {
            let x = v[[(2 * BLK + 100) as usize]];
            println!("read {x} through a corrupt table");
        }
        other => panic!("unknown role {other}"),
    }
}
