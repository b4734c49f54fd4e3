//! Readahead: a sequential scan of raw blocks gets the blocks after it
//! mapped by a background thread (compressed blocks: decompressed into RAM pages),
//! random reads get nothing ahead, a corrupt block is never shown even when the thread
//! is the one that checks it, the RAM budget holds with readahead running, and the
//! thread stops when its database is dropped, even when it holds the last reference.
//!
//! The tests of this file run one at a time: one of them counts the process's threads.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wdb::{ArrayOptions, Compression, Db, Options};

const BS: usize = 2 << 20;
const BLK: u64 = (BS / 8) as u64; // f64 elements in one block
const N_BLKS: u64 = 32;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn value(i: u64) -> f64 {
    (i % 1_000_003) as f64 + 1.0
}

/// `N_BLKS` raw blocks, committed, in a database closed again.
fn make(path: &Path) {
    let db = Db::open_with(path, Options::default().ram_budget(2 * N_BLKS * BS as u64)).unwrap();
    let tx = db.begin().unwrap();
    let opts = ArrayOptions {
        compression: Compression::None,
        ..ArrayOptions::default()
    };
    let mut a = tx
        .create_array_with::<f64>("A", &[N_BLKS * BLK], opts)
        .unwrap();
    for b in 0..N_BLKS {
        let mut v = a.view_mut(b * BLK..(b + 1) * BLK).unwrap();
        for (i, x) in v.iter_mut().enumerate() {
            *x = value(b * BLK + i as u64);
        }
    }
    drop(a);
    tx.commit().unwrap();
}

fn open(path: &Path, budget_blocks: u64) -> Db {
    Db::open_with(
        path,
        Options::default().ram_budget(budget_blocks * BS as u64),
    )
    .unwrap()
}

/// Wait until `f` holds (up to 5 s); whether it does.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

fn readahead_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "wdb-readahead")
        .count()
}

#[test]
fn a_scan_gets_the_blocks_ahead_mapped() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.wdb");
    make(&path);
    let db = open(&path, 64);
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    // Three blocks read in order: a scan.
    for b in 0..3u64 {
        assert_eq!(v[[(b * BLK) as usize]], value(b * BLK));
    }
    // The first read is not yet a scan: it maps one 16 KiB window of block 0. The
    // second starts readahead over blocks 2..=9, which maps every one the scan has not
    // fetched itself. At least blocks 1..=9 are then mapped: nine blocks, seven of them
    // past the scan (every other one would be five).
    let ahead = eventually(|| db.memory_stats().unwrap().ram_used >= 9 * BS as u64);
    let st = db.memory_stats().unwrap();
    assert!(
        ahead,
        "blocks after the scan are mapped in the background: {st:?}"
    );
    assert_eq!(st.loads, 0, "raw blocks are mapped, not copied: {st:?}");
    // What readahead mapped reads right, to the end.
    let mut n = 0;
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x, value(i as u64), "element {i}");
        n += 1;
    }
    assert_eq!(n, N_BLKS * BLK);
}

#[test]
fn random_reads_get_nothing_ahead() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.wdb");
    make(&path);
    let db = open(&path, 64);
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    // Each block more than a readahead window (8 blocks) after the one read before, or
    // before it; 21 follows a block the view holds, but not the last one read.
    let blocks = [20u64, 3, 12, 28, 1, 21];
    for &b in &blocks {
        assert_eq!(v[[(b * BLK + 5) as usize]], value(b * BLK + 5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = db.memory_stats().unwrap();
    // A random read maps its block partially: one checked 16 KiB window each (the
    // log's page CRC tables, state.rs invariant 15).
    assert_eq!(
        st.ram_used,
        blocks.len() as u64 * (16 << 10),
        "only the blocks read are mapped: {st:?}"
    );
}

/// Flip one byte of block `blk`'s payload on disk (found by its content).
fn corrupt(path: &Path, blk: u64) {
    let bytes = std::fs::read(path).unwrap();
    let first = value(blk * BLK).to_le_bytes();
    let second = value(blk * BLK + 1).to_le_bytes();
    let off = (0..bytes.len() - 16)
        .step_by(4096)
        .find(|&o| bytes[o..o + 8] == first && bytes[o + 8..o + 16] == second)
        .expect("the block's payload is in the file, page aligned")
        + 5000;
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

#[test]
fn a_corrupt_block_checked_by_readahead_is_never_shown() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.wdb");
    make(&path);
    corrupt(&path, 6);
    let db = open(&path, 64);
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    // A scan of blocks 0..=2: readahead checks the blocks of its window, 3..=9 at
    // least (it may map block 2 before the scan loads it, and then serve no later
    // position than 1, whose window ends at 9), block 6 among them.
    for b in 0..3u64 {
        a.load(b * BLK..(b + 1) * BLK).unwrap();
    }
    // Blocks 0..=5 and 7..=9: readahead went past the corrupt block.
    let past = eventually(|| db.memory_stats().unwrap().ram_used >= 9 * BS as u64);
    assert!(past, "{:?}", db.memory_stats().unwrap());
    let e = a.load(6 * BLK..7 * BLK).unwrap_err();
    assert!(e.to_string().contains("CRC"), "{e}");
    // Again (the failed check is not remembered as a success), and the blocks around
    // it read right.
    assert!(a.load(6 * BLK..7 * BLK).is_err());
    assert_eq!(
        a.to_vec(5 * BLK..5 * BLK + 3).unwrap()[2],
        value(5 * BLK + 2)
    );
    assert_eq!(
        a.to_vec(7 * BLK..7 * BLK + 3).unwrap()[2],
        value(7 * BLK + 2)
    );
}

#[test]
fn the_budget_holds_while_readahead_runs() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.wdb");
    make(&path);
    let budget = 8 * BS as u64;
    let db = open(&path, 8);
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    for round in 0..2 {
        let v = a.view(..).unwrap();
        let sl = v.as_slice().unwrap();
        let mut sum = 0.0;
        for b in 0..N_BLKS as usize {
            sum += sl[b * BLK as usize..(b + 1) * BLK as usize]
                .iter()
                .sum::<f64>();
            let st = db.memory_stats().unwrap();
            assert!(st.ram_used <= budget, "round {round}, block {b}: {st:?}");
        }
        let want: f64 = (0..N_BLKS * BLK).map(value).sum();
        assert!((sum - want).abs() <= want * 1e-12, "{sum} != {want}");
    }
    let st = db.memory_stats().unwrap();
    assert!(st.evictions > 0 && st.ram_used <= budget, "{st:?}");
}

#[test]
fn the_thread_stops_with_its_database() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.wdb");
    make(&path);
    assert!(
        eventually(|| readahead_threads() == 0),
        "the thread of the database `make` closed is gone"
    );
    let db = open(&path, 64);
    {
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("A").unwrap();
        let v = a.view(..).unwrap();
        assert_eq!(v[[BLK as usize]], value(BLK));
        // (The thread names itself once it runs.)
        assert!(eventually(|| readahead_threads() == 1), "a thread");
        let v2 = a.view(..).unwrap();
        assert_eq!(v2[[0]], value(0));
        assert_eq!(readahead_threads(), 1, "one thread per database");
    }
    drop(db);
    // Joined in the drop: gone at once.
    assert_eq!(readahead_threads(), 0);
}

#[test]
fn dropping_everything_while_readahead_works_does_not_hang() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.wdb");
    make(&path);
    // The thread may hold the last reference to the database when everything else is
    // dropped; its drop then stops the thread from the thread itself.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        for _ in 0..20 {
            let db = open(&p, 64);
            let s = db.snapshot().unwrap();
            let a = s.array::<f64>("A").unwrap();
            let v = a.view(..).unwrap();
            for b in 0..3u64 {
                assert_eq!(v[[(b * BLK) as usize]], value(b * BLK));
            }
            drop(v);
            drop(a);
            drop(s);
            drop(db);
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("opening and dropping databases while readahead runs hung");
    assert!(
        eventually(|| readahead_threads() == 0),
        "every thread stopped"
    );
}

#[test]
fn a_scan_of_compressed_blocks_gets_them_decompressed_ahead() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.wdb");
    {
        let db = Db::open_with(&path, Options::default().ram_budget(64 * BS as u64)).unwrap();
        let tx = db.begin().unwrap();
        let opts = ArrayOptions {
            compression: Compression::Zstd { level: 0 },
            ..ArrayOptions::default()
        };
        let mut a = tx
            .create_array_with::<f64>("A", &[N_BLKS * BLK], opts)
            .unwrap();
        // Block b holds b + 1 everywhere: zstd shrinks it to a few bytes.
        for b in 0..N_BLKS {
            a.view_mut(b * BLK..(b + 1) * BLK)
                .unwrap()
                .fill((b + 1) as f64);
        }
        drop(a);
        tx.commit().unwrap();
    }
    let db = open(&path, 64);
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    for b in 0..3u64 {
        assert_eq!(v[[(b * BLK) as usize]], (b + 1) as f64);
    }
    // The scan's three, and 3..=9 decompressed ahead of it (by readahead, or by the
    // scan where it found readahead busy with the block it wanted).
    let ahead = eventually(|| db.memory_stats().unwrap().loads >= 10);
    let st = db.memory_stats().unwrap();
    assert!(
        ahead,
        "blocks after the scan are loaded in the background: {st:?}"
    );
    assert_eq!(st.file_maps, 0, "compressed blocks are not mapped: {st:?}");
    for b in 0..N_BLKS {
        assert_eq!(v[[(b * BLK + 7) as usize]], (b + 1) as f64, "block {b}");
    }
}
