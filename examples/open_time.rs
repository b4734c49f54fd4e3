//! Open time against database size (the target: open costs the same for a 1 GiB
//! and a 100 GiB database). Makes two databases of one f64 array each, 1 GiB (512
//! blocks of 2 MiB) and 100 GiB (51,200 blocks), whose blocks hold a constant that
//! zstd shrinks to a few bytes, so that the 100 GiB one fits on a small disk while its
//! index has the 51,200 entries of a real 100 GiB array. Then times, 20 times each
//! alternating, what a reader does before its first byte: `Db::open` (read-only, from
//! the index checkpoint that closing the writer left), a snapshot, the array, a view of
//! all of it; and then, separately, the first read: one element of a block in the middle
//! of the array (a different block each time), which looks its version up in the index
//! and loads it. Prints the medians and their ratios.
//!
//!     cargo run --release --example open_time [DIR]
//!
//! DIR (default: a new directory under /tmp) gets the two databases and loses them at
//! the end. Writing 100 GiB of blocks takes a minute or two.

use std::path::Path;
use std::time::{Duration, Instant};

use wdb::{ArrayOptions, Compression, Db, Options};

const BS: u64 = 2 << 20;
const ROWS_PER_BLOCK: u64 = BS / 8;

fn make(path: &Path, blocks: u64) -> Duration {
    let t = Instant::now();
    let db = Db::open_with(path, Options::default().ram_budget(1 << 30)).unwrap();
    let opts = ArrayOptions {
        compression: Compression::Zstd { level: 0 },
        ..ArrayOptions::default()
    };
    let chunk = vec![1.5f64; (ROWS_PER_BLOCK * 128) as usize];
    let mut done = 0;
    while done < blocks {
        let n = (blocks - done).min(128);
        let tx = db.begin().unwrap();
        {
            let mut a = if done == 0 {
                tx.create_array_with::<f64>("A", &[0], opts).unwrap()
            } else {
                tx.array_mut::<f64>("A").unwrap()
            };
            a.append(&chunk[..(n * ROWS_PER_BLOCK) as usize]).unwrap();
        }
        tx.commit().unwrap();
        done += n;
    }
    t.elapsed()
}

/// (open + snapshot + array + view, first read of block `blk`).
fn open_once(path: &Path, blk: u64) -> (Duration, Duration) {
    let t = Instant::now();
    let db = Db::open_with(path, Options::default().read_only(true)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    let d = t.elapsed();
    assert_eq!(v.len() as u64 % ROWS_PER_BLOCK, 0);
    let row = usize::try_from(blk * ROWS_PER_BLOCK + 17).unwrap();
    let t = Instant::now();
    let x = v[[row]];
    let r = t.elapsed();
    assert_eq!(x, 1.5);
    (d, r)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = match std::env::args().nth(1) {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    };
    let small = dir.path().join("1GiB.wdb");
    let big = dir.path().join("100GiB.wdb");
    for (p, blocks) in [(&small, 512u64), (&big, 51_200)] {
        let d = make(p, blocks);
        println!(
            "made {} ({} blocks, {} bytes on disk) in {:.1} s",
            p.display(),
            blocks,
            std::fs::metadata(p).unwrap().len(),
            d.as_secs_f64()
        );
    }
    let (mut ts, mut tb, mut rs, mut rb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..20u64 {
        let (o, r) = open_once(&small, 256 + i);
        ts.push(o);
        rs.push(r);
        let (o, r) = open_once(&big, 25_600 + 997 * i);
        tb.push(o);
        rb.push(r);
    }
    for (what, s, b) in [
        ("open + snapshot + array + view", median(ts), median(tb)),
        ("first read (one element)", median(rs), median(rb)),
    ] {
        println!(
            "{what}, median of 20: 1 GiB {:.3} ms, 100 GiB {:.3} ms, ratio {:.2}",
            s.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            b.as_secs_f64() / s.as_secs_f64()
        );
    }
}
