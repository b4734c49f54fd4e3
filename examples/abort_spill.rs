//! Measures what an abort gives back: writes SIZE bytes (default 1 GiB) of `f64` in one
//! transaction at a RAM budget of BUDGET (default 32 MiB), so that nearly all of it goes
//! to the transaction's spill file, then aborts, and prints
//!
//! - the spill file's disk space before the abort (from its descriptor),
//! - how long until its last descriptor is closed after the abort (its space is free),
//! - the filesystem's free space before the transaction, before the abort and after,
//! - whether the database file is byte for byte what it was before the transaction.
//!
//!     cargo run --release --example abort_spill -- DIR [SIZE [BUDGET]]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use wdb::db::{Db, Options};

/// (descriptors, bytes on disk) of the deleted files this process holds open in `dir`.
fn spill_files(dir: &Path) -> (usize, u64) {
    let dir = dir.canonicalize().unwrap();
    let mut fds = 0;
    let mut inodes = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd = e.unwrap().path();
        let Ok(t) = std::fs::read_link(&fd) else {
            continue;
        };
        if t.starts_with(&dir) && t.to_string_lossy().ends_with("(deleted)") {
            fds += 1;
            if let Ok(m) = std::fs::metadata(&fd) {
                inodes.insert(m.ino(), m.blocks() * 512);
            }
        }
    }
    (fds, inodes.values().sum())
}

fn free_bytes(dir: &Path) -> u64 {
    let s = rustix::fs::statvfs(dir).unwrap();
    s.f_bavail * s.f_frsize
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: abort_spill DIR [SIZE [BUDGET]]");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let size: u64 = args.get(2).map_or(1 << 30, |s| s.parse().unwrap());
    let budget: u64 = args.get(3).map_or(32 << 20, |s| s.parse().unwrap());
    let p = dir.join("abort.wdb");
    let db = Db::open_with(&p, Options::default().ram_budget(budget)).unwrap();
    {
        let tx = db.begin().unwrap();
        tx.create_array::<f64>("A", &[1 << 20])
            .unwrap()
            .view_mut(..)
            .unwrap()
            .fill(1.0);
        tx.commit().unwrap();
    }
    let before = std::fs::read(&p).unwrap();
    let free0 = free_bytes(dir);
    let tx = db.begin().unwrap();
    {
        let n = size / 8;
        let mut a = tx.array_mut::<f64>("A").unwrap();
        a.resize(&[n]).unwrap();
        for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
            let z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            *x = (z >> 11) as f64;
        }
    }
    let (fds, spill) = spill_files(dir);
    let free1 = free_bytes(dir);
    let t0 = Instant::now();
    tx.abort();
    let mut closed = None;
    while t0.elapsed() < Duration::from_secs(10) {
        if spill_files(dir).0 == 0 {
            closed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let free_closed = free_bytes(dir);
    // When the filesystem counts the freed blocks (a journal commit may come first).
    let mut back = None;
    while t0.elapsed() < Duration::from_secs(1) {
        if back.is_none() && free_bytes(dir) >= free1 + spill * 9 / 10 {
            back = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let free_1s = free_bytes(dir);
    let dir_s = dir.canonicalize().unwrap().to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir_s) && l.contains("(deleted)"))
        .count();
    let same = std::fs::read(&p).unwrap() == before;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "wrote {:.0} MiB in one transaction at a {:.0} MiB budget; spill file: {:.1} MiB on disk ({fds} descriptors)",
        mib(size),
        mib(budget),
        mib(spill)
    );
    match closed {
        Some(d) => println!(
            "after abort: spill file closed in {:.3} ms",
            d.as_secs_f64() * 1e3
        ),
        None => println!("after abort: spill file still open after 10 s"),
    }
    println!(
        "free space: {:.1} MiB before the transaction, {:.1} MiB before the abort, {:.1} MiB when the spill file is closed, {:.1} MiB 1 s after the abort; {maps} mappings of deleted files in DIR left",
        mib(free0),
        mib(free1),
        mib(free_closed),
        mib(free_1s),
    );
    match back {
        Some(d) => println!(
            "the filesystem counted 90 % of the spill file's space free again {:.3} s after the abort",
            d.as_secs_f64()
        ),
        None => println!("the filesystem did not count the space free within 1 s"),
    }
    println!("database file byte for byte unchanged: {same}");
    drop(db);
    let _ = std::fs::remove_file(&p);
}
