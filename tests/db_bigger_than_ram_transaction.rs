//! Proves that one transaction may write more than the RAM budget: filling a `f64`
//! array 4× the budget through one `view_mut` (without stopping the process in a page
//! fault), appending 16× the budget, resizing then filling, reading spilled blocks
//! back before commit (raw ones mapped from the spill file, compressed ones decoded),
//! rewriting them, and filling from two threads at once each commit and read back after
//! reopen — with dirty pages within the budget all along and the staged payloads in
//! memory within the transaction's share of it. An abort leaves the database byte for
//! byte as it was and closes the spill file; a conflict at commit too.

use std::path::Path;

use wdb::db::{ram_share, ArrayOptions, Db, Options};
use wdb::Error;

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 8 * MIB;

fn open(p: &Path) -> Db {
    Db::open_with(p, Options::default().ram_budget(BUDGET)).unwrap()
}

/// Incompressible but exact values: element `i` of pass `k`.
fn val(k: u64, i: u64) -> f64 {
    let mut z = (i ^ (k << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    (z >> 11) as f64
}

/// Files in `dir` other than the database's own.
fn strays(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".wdb") && !n.ends_with(".idx") && !n.ends_with(".lock"))
        .collect()
}

/// Open file descriptors of this process that point into `dir` (a spill file shows
/// as `dir/#<inode> (deleted)` or `dir/<name> (deleted)`).
fn fds_into(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|t| t.starts_with(&dir) && t.to_string_lossy().ends_with("(deleted)"))
        .count()
}

/// Disk space taken by the deleted files this process holds open in `dir` (each file
/// once, however many descriptors it has).
fn spill_allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|fd| {
            std::fs::read_link(fd)
                .is_ok_and(|t| t.starts_with(&dir) && t.to_string_lossy().ends_with("(deleted)"))
        })
        .filter_map(|fd| std::fs::metadata(fd).ok())
        .map(|m| (m.ino(), m.blocks() * 512))
        .collect::<std::collections::BTreeMap<u64, u64>>()
        .values()
        .sum()
}

/// Do the deleted files this process holds open in `dir` close within a second?
fn closes_within_a_second(dir: &Path) -> bool {
    let t0 = std::time::Instant::now();
    while fds_into(dir) > 0 {
        if t0.elapsed() > std::time::Duration::from_secs(1) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    true
}

#[test]
fn a_fill_four_times_the_budget_commits_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.wdb");
    let db = open(&p);
    let tx = db.begin().unwrap();
    let n = (32 * MIB / 8) as usize;
    let mut a = tx.create_array::<f64>("A", &[n as u64]).unwrap();
    a.view_mut(..).unwrap().fill(1.0);
    let s = db.memory_stats().unwrap();
    assert!(s.ram_used <= s.budget && s.dirty <= s.budget, "{s:?}");
    assert!(s.spill_writes >= 12, "{s:?}");
    assert!(s.spilled >= 16 * MIB, "{s:?}");
    // 1.0 everywhere compresses: the spilled blocks are small.
    let st = tx.staged_bytes();
    assert!(st.in_memory <= ram_share(BUDGET) + 2 * MIB, "{st:?}");
    drop(a);
    tx.commit().unwrap();
    assert_eq!(
        db.memory_stats().unwrap().spilled,
        0,
        "the handles are gone"
    );
    drop(db);
    let db = open(&p);
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    assert_eq!(a.view(..).unwrap().sum(), n as f64);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
    assert!(strays(dir.path()).is_empty(), "{:?}", strays(dir.path()));
}

#[test]
fn spilled_blocks_read_back_before_commit_and_rewrite_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rw.wdb");
    let db = open(&p);
    let tx = db.begin().unwrap();
    let n = 4 * MIB; // 32 MiB of f64
    let mut a = tx.create_array::<f64>("R", &[n]).unwrap();
    let mut allocated = 0;
    for pass in 0..2u64 {
        {
            let mut v = a.view_mut(..).unwrap();
            for (i, x) in v.iter_mut().enumerate() {
                *x = val(pass, i as u64);
            }
        }
        let s = db.memory_stats().unwrap();
        assert!(s.dirty <= BUDGET && s.spilled >= 16 * MIB, "{s:?}");
        // Read everything back through a view: the early blocks come from the spill
        // file (raw: mapped like log blocks), the late ones are still dirty in RAM.
        let v = a.view(..).unwrap();
        for i in (0..n).step_by(4099) {
            assert_eq!(v[[i as usize]], val(pass, i), "pass {pass} element {i}");
        }
        assert!(
            db.memory_stats().unwrap().file_maps > 0,
            "raw spilled blocks map"
        );
        let now = spill_allocated(dir.path());
        if pass == 0 {
            allocated = now;
            assert!(allocated >= 16 * MIB, "{allocated}");
        } else {
            // The second pass reused the first one's slots (a few more are taken while
            // a block's old and new payloads coexist): the file did not double.
            assert!(now <= allocated + allocated / 2, "{now} after {allocated}");
        }
    }
    let st = tx.staged_bytes();
    assert!(st.spill_file >= 48 * MIB, "{st:?}");
    drop(a);
    let t = tx.commit().unwrap();
    drop(db);
    let db = open(&p);
    assert_eq!(db.last_tid().unwrap(), t);
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("R").unwrap();
    let v = a.view(..).unwrap();
    for i in (0..n).step_by(997) {
        assert_eq!(v[[i as usize]], val(1, i));
    }
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}

#[test]
fn appends_sixteen_times_the_budget_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.wdb");
    let db = open(&p);
    let tx = db.begin().unwrap();
    let chunk = (MIB / 8) as usize; // 1 MiB of f64
    let chunks = 128u64;
    {
        let mut a = tx.create_array::<f64>("L", &[0]).unwrap();
        let mut buf = vec![0.0; chunk];
        for c in 0..chunks {
            for (j, x) in buf.iter_mut().enumerate() {
                *x = val(7, c * chunk as u64 + j as u64);
            }
            a.append(&buf).unwrap();
            let s = db.memory_stats().unwrap();
            assert!(s.ram_used <= BUDGET && s.dirty <= BUDGET, "{s:?}");
            let st = tx.staged_bytes();
            assert!(st.in_memory <= ram_share(BUDGET) + 2 * MIB, "{st:?}");
        }
        assert_eq!(a.len(), chunks * chunk as u64);
    }
    tx.commit().unwrap();
    drop(db);
    let db = open(&p);
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("L").unwrap();
    assert_eq!(a.len(), chunks * chunk as u64);
    let v = a.view(..).unwrap();
    for i in (0..chunks * chunk as u64).step_by(10_007) {
        assert_eq!(v[[i as usize]], val(7, i));
    }
}

#[test]
fn resize_then_fill_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rs.wdb");
    let db = open(&p);
    {
        let tx = db.begin().unwrap();
        tx.create_array::<u32>("U", &[10])
            .unwrap()
            .view_mut(..)
            .unwrap()
            .fill(5);
        tx.commit().unwrap();
    }
    let tx = db.begin().unwrap();
    let n = 16 * MIB; // 64 MiB of u32
    {
        let mut a = tx.array_mut::<u32>("U").unwrap();
        a.resize(&[n]).unwrap();
        for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
            *x = (i as u32).wrapping_mul(2_654_435_761);
        }
        // Shrink and grow again within the transaction: the cut-off part reads zeros,
        // spilled or not.
        a.resize(&[n / 2]).unwrap();
        a.resize(&[n]).unwrap();
        assert_eq!(
            a.view(n / 2..).unwrap().iter().filter(|&&x| x != 0).count(),
            0
        );
    }
    tx.commit().unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<u32>("U").unwrap();
    let v = a.view(..).unwrap();
    for i in (0..n / 2).step_by(4093) {
        assert_eq!(v[[i as usize]], (i as u32).wrapping_mul(2_654_435_761));
    }
    assert_eq!(
        v.slice(ndarray::s![n as usize / 2..])
            .iter()
            .filter(|&&x| x != 0)
            .count(),
        0
    );
    drop(v);
    drop(a);
    drop(snap);
    drop(db);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}

#[test]
fn two_threads_fill_halves_of_one_view() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mt.wdb");
    let db = open(&p);
    let tx = db.begin().unwrap();
    let n = 6 * MIB as usize; // 48 MiB
    {
        let mut a = tx.create_array::<f64>("M", &[n as u64]).unwrap();
        let mut v = a.view_mut(..).unwrap();
        let s = v.as_slice_mut().unwrap();
        let (lo, hi) = s.split_at_mut(n / 2);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for (i, x) in lo.iter_mut().enumerate() {
                    *x = val(3, i as u64);
                }
            });
            sc.spawn(|| {
                for (i, x) in hi.iter_mut().enumerate() {
                    *x = val(3, (n / 2 + i) as u64);
                }
            });
        });
    }
    tx.commit().unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("M").unwrap();
    let v = a.view(..).unwrap();
    for i in (0..n).step_by(3001) {
        assert_eq!(v[[i]], val(3, i as u64));
    }
}

#[test]
fn an_abort_leaves_the_file_unchanged_and_closes_the_spill_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ab.wdb");
    let db = open(&p);
    {
        let tx = db.begin().unwrap();
        tx.create_array_with::<f64>("A", &[MIB], ArrayOptions::default())
            .unwrap()
            .view_mut(..)
            .unwrap()
            .fill(2.0);
        tx.commit().unwrap();
    }
    let before = std::fs::read(&p).unwrap();
    let tx = db.begin().unwrap();
    {
        let mut a = tx.array_mut::<f64>("A").unwrap();
        a.resize(&[8 * MIB]).unwrap();
        for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
            *x = val(9, i as u64);
        }
    }
    let st = tx.staged_bytes();
    assert!(st.spill_file >= 32 * MIB, "{st:?}");
    assert!(fds_into(dir.path()) > 0, "the spill file is open, unnamed");
    tx.abort();
    // A spill in flight on the write-behind thread holds the file until its store
    // returns: within a second (in practice a few milliseconds) it is closed.
    assert!(
        closes_within_a_second(dir.path()),
        "the spill file is closed: its space is free"
    );
    assert_eq!(
        fds_into(dir.path()),
        0,
        "the spill file is closed: its space is free"
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        before,
        "the database is unchanged"
    );
    assert!(strays(dir.path()).is_empty());
    let snap = db.snapshot().unwrap();
    assert_eq!(
        snap.array::<f64>("A").unwrap().view(..).unwrap().sum(),
        2.0 * MIB as f64
    );
}

#[test]
fn a_conflicting_commit_with_spilled_blocks_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cf.wdb");
    let db = open(&p);
    {
        let tx = db.begin().unwrap();
        tx.create_array::<f64>("A", &[4 * MIB]).unwrap();
        tx.commit().unwrap();
    }
    let big = db.begin().unwrap();
    let small = db.begin().unwrap();
    {
        let mut a = big.array_mut::<f64>("A").unwrap();
        for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
            *x = val(1, i as u64);
        }
    }
    small.array_mut::<f64>("A").unwrap().view_mut(0..1).unwrap()[[0]] = -1.0;
    let t = small.commit().unwrap();
    let before = std::fs::read(&p).unwrap();
    match big.commit() {
        Err(Error::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(std::fs::read(&p).unwrap(), before);
    assert!(closes_within_a_second(dir.path()));
    assert_eq!(db.last_tid().unwrap(), t);
    // The database takes the next transaction as usual.
    let tx = db.begin().unwrap();
    tx.array_mut::<f64>("A").unwrap().view_mut(1..2).unwrap()[[0]] = 3.0;
    tx.commit().unwrap();
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}

#[test]
fn spilled_raw_payloads_land_at_the_aligned_offsets_of_the_format() {
    // Whole 2 MiB raw blocks, 4× the budget in one transaction: the commit copies them
    // from the spill file into the log, each at a 2 MiB-aligned offset behind a hole
    // (storage-format.md §2.8), exactly where a commit from memory puts them.
    use wdb::db::{Compression, Key};
    const HUGE: u64 = 2 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("al.wdb");
    let db = open(&p);
    let tx = db.begin().unwrap();
    let n = 4 * BUDGET / 8;
    let o = ArrayOptions::default()
        .block_size(HUGE as u32)
        .compression(Compression::None);
    {
        let mut a = tx.create_array_with::<f64>("A", &[n], o).unwrap();
        for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
            *x = val(5, i as u64);
        }
    }
    assert!(
        tx.staged_bytes().spill_file >= 16 * MIB,
        "{:?}",
        tx.staged_bytes()
    );
    tx.commit().unwrap();
    let s = db.snapshot().unwrap();
    let id = s.array_info("A").unwrap().id;
    let gen = db.store().current();
    let offs: Vec<(u64, u32)> = (0..n * 8 / HUGE)
        .map(|blk| {
            let v = gen
                .version_at(&Key::Block { array: id, blk }, s.tid())
                .unwrap()
                .unwrap();
            (v.payload_off(), v.stored_len)
        })
        .collect();
    assert_eq!(offs.len(), 16);
    for (off, len) in &offs {
        assert_eq!(u64::from(*len), HUGE);
        assert_eq!(off % HUGE, 0, "payload at {off}: {offs:?}");
    }
    let v = s.array::<f64>("A").unwrap().to_vec(..).unwrap();
    assert!(v.iter().enumerate().all(|(i, x)| *x == val(5, i as u64)));
    drop(s);
    drop(db);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
    assert!(strays(dir.path()).is_empty());
}
