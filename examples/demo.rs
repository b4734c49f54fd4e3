//! The README demo: an array several times bigger than the RAM budget is created by
//! appending chunks with a commit after each, reopened, scanned through ndarray views,
//! changed and aborted, changed and committed, read back at the old tid, and checked.
//!
//!     cargo run --release --example demo -- [--ram-budget-mib 64] [--size-mib 256] [--path FILE]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use wdb::{Db, Options};

#[derive(Parser, Debug)]
#[command(about = "wdb demo: an out-of-core, transactional f64 array")]
struct Args {
    /// RAM budget for loaded and dirty blocks, in MiB.
    #[arg(long, default_value_t = 64)]
    ram_budget_mib: u64,
    /// Array size in MiB (default: 4x the budget).
    #[arg(long)]
    size_mib: Option<u64>,
    /// Database file (default: a fresh file in the system's temp directory, removed at the end).
    #[arg(long)]
    path: Option<PathBuf>,
}

/// Element `i` of the benchmark signal (../shared/workloads.md): a sine wave plus noise.
fn element(i: u64) -> f64 {
    let noise = ((i.wrapping_mul(2654435761) % (1 << 32)) as f64 / 4294967296.0) - 0.5;
    (2.0 * std::f64::consts::PI * i as f64 / 65536.0).sin() + 1e-3 * noise
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let budget = args.ram_budget_mib << 20;
    let size = args.size_mib.unwrap_or(4 * args.ram_budget_mib) << 20;
    let n = size / 8;
    let tmp;
    let path = match &args.path {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("demo.wdb")
        }
    };
    let opts = || Options::default().ram_budget(budget);
    println!(
        "wdb demo: {} MiB array of f64 ({} elements), RAM budget {} MiB, file {}",
        size >> 20,
        n,
        budget >> 20,
        path.display()
    );

    // 1. Create and fill by appending chunks, one commit per chunk.
    let t = Instant::now();
    let db = Db::open_with(&path, opts())?;
    let tx = db.begin()?;
    tx.create_array::<f64>("signal", &[0])?;
    tx.commit()?;
    let chunk = (8u64 << 20) / 8;
    let bar = ProgressBar::new(n);
    bar.set_style(ProgressStyle::with_template(
        "  filling [{bar:40}] {bytes_per_sec:>12} {percent:>3}%",
    )?);
    let mut buf = Vec::with_capacity(chunk as usize);
    let mut lo = 0;
    let mut commits = 0;
    while lo < n {
        let hi = (lo + chunk).min(n);
        buf.clear();
        buf.extend((lo..hi).map(element));
        let tx = db.begin()?;
        tx.array_mut::<f64>("signal")?.append(&buf)?;
        tx.commit()?;
        commits += 1;
        bar.inc(hi - lo);
        lo = hi;
    }
    bar.finish_and_clear();
    let fill_s = t.elapsed().as_secs_f64();
    let fill_tid = db.last_tid()?;
    println!(
        "1. filled {} MiB in {commits} commits in {fill_s:.2} s ({:.0} MB/s), last tid {fill_tid}",
        size >> 20,
        size as f64 / 1e6 / fill_s
    );
    drop(db);

    // 2. Reopen and compute statistics through ndarray views.
    let t = Instant::now();
    let db = Db::open_with(&path, opts())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let snap = db.snapshot()?;
    let a = snap.array::<f64>("signal")?;
    let view = a.view(..)?;
    let (mut sum, mut sumsq, mut min, mut max) = (0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
    for &x in view.iter() {
        sum += x;
        sumsq += x * x;
        min = min.min(x);
        max = max.max(x);
    }
    let mean = sum / n as f64;
    let std = (sumsq / n as f64 - mean * mean).max(0.0).sqrt();
    let scan_s = t.elapsed().as_secs_f64();
    println!(
        "2. reopened in {open_ms:.1} ms; scanned {} elements in {scan_s:.2} s ({:.2} GB/s): mean {mean:.6}, std {std:.6}, min {min:.6}, max {max:.6}",
        a.len(),
        size as f64 / 1e9 / scan_s
    );
    let first = a.to_vec(0..4)?;
    drop(view);
    drop(a);
    drop(snap);

    // 3. Change a slice and abort: the change is gone.
    let tx = db.begin()?;
    {
        let mut a = tx.array_mut::<f64>("signal")?;
        a.view_mut(0..1000)?.fill(-7.0);
        println!("3. in a transaction, a[0..4] = {:?}", a.to_vec(0..4)?);
    }
    tx.abort();
    let now = db.snapshot()?.array::<f64>("signal")?.to_vec(0..4)?;
    println!("   after abort,      a[0..4] = {now:?}");
    assert_eq!(now, first, "abort must restore the committed data");

    // 4. Change it again and commit; read the old value back through snapshot_at.
    let t = Instant::now();
    let tx = db.begin()?;
    tx.array_mut::<f64>("signal")?.view_mut(0..1000)?.fill(42.0);
    let tid = tx.commit()?;
    let commit_ms = t.elapsed().as_secs_f64() * 1e3;
    let new = db.snapshot()?.array::<f64>("signal")?.to_vec(0..4)?;
    let old = db
        .snapshot_at(fill_tid)?
        .array::<f64>("signal")?
        .to_vec(0..4)?;
    println!("4. committed tid {tid} in {commit_ms:.1} ms: a[0..4] = {new:?}");
    println!("   snapshot_at({fill_tid}):          a[0..4] = {old:?}");
    assert_eq!(old, first, "time travel must show the old data");

    // 5. Check every byte of the file.
    let t = Instant::now();
    let report = db.fsck()?;
    println!("5. fsck in {:.2} s: {}", t.elapsed().as_secs_f64(), report);
    if !report.is_clean() {
        return Err("fsck found problems".into());
    }
    println!("done.");
    Ok(())
}
