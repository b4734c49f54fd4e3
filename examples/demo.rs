//! The README demo: an array several times bigger than the RAM budget is created by
//! appending chunks with a commit after each, reopened, scanned through ndarray views,
//! changed and aborted, changed and committed, read back at the old tid, and checked.
//! At the end it prints the memory figures: the peak of the RAM wdb held for array
//! data (sampled after every commit and every 4 MiB scanned) must stay within the budget.
//!
//!     cargo run --release --example demo -- [--ram-budget-mib 64] [--size-mib 256] [--path FILE]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use wdb::{Db, Options, VmStats};

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

/// Element `i` of the benchmark signal (docs/benchmarks.md): a sine wave plus noise.
fn element(i: u64) -> f64 {
    let noise = ((i.wrapping_mul(2654435761) % (1 << 32)) as f64 / 4294967296.0) - 0.5;
    (2.0 * std::f64::consts::PI * i as f64 / 65536.0).sin() + 1e-3 * noise
}

/// Peaks of the memory figures, sampled after every commit and every 4 MiB scanned.
#[derive(Default)]
struct Peak {
    /// wdb's RAM for array data (`VmStats::ram_used`).
    ram_used: u64,
    dirty: u64,
    /// The process's proportional set size, where /proc/self/smaps_rollup exists.
    pss: u64,
}

impl Peak {
    fn sample(&mut self, db: &Db) -> Result<VmStats, wdb::Error> {
        let s = db.memory_stats()?;
        self.ram_used = self.ram_used.max(s.ram_used);
        self.dirty = self.dirty.max(s.dirty);
        if let Some(pss) = pss() {
            self.pss = self.pss.max(pss);
        }
        Ok(s)
    }
}

/// Pss in bytes. PSS, not RSS: a page mapped at two addresses (a RAM page shown in two
/// views) is counted twice by RSS, once by PSS.
fn pss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    };
    field("Pss:")
}

/// `[-0.0005, 0.0002, ...]` with 4 decimals.
fn show(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", items.join(", "))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.ram_budget_mib == 0 || args.size_mib == Some(0) {
        return Err("--ram-budget-mib and --size-mib must be at least 1".into());
    }
    let total = Instant::now();
    let mut peak = Peak::default();
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
    if tx.array_names()?.iter().any(|n| n == "signal") {
        // A file given with --path that an earlier run filled: start over.
        println!("   (replacing the array \"signal\" of an earlier run in this file)");
        tx.delete_array("signal")?;
    }
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
        peak.sample(&db)?;
        tx.commit()?;
        peak.sample(&db)?;
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
    // One view over the whole array, bigger than the budget: blocks load as the scan
    // reaches them and the oldest clean ones are reclaimed behind it.
    let view = a.view(..)?;
    let (mut sum, mut sumsq, mut min, mut max) = (0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
    let data = view.as_slice().ok_or("a 1-D view is contiguous")?;
    for chunk in data.chunks(1 << 19) {
        for &x in chunk {
            sum += x;
            sumsq += x * x;
            min = min.min(x);
            max = max.max(x);
        }
        peak.sample(&db)?;
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
    let t = Instant::now();
    let tx = db.begin()?;
    {
        let mut a = tx.array_mut::<f64>("signal")?;
        a.view_mut(0..1000)?.fill(-7.0);
        peak.sample(&db)?;
        let label = "3. set a[0..1000] = -7 in a transaction:";
        println!("{label:<52} a[0..4] = {}", show(&a.to_vec(0..4)?));
    }
    tx.abort();
    let now = db.snapshot()?.array::<f64>("signal")?.to_vec(0..4)?;
    let label = format!(
        "   aborted ({:.1} ms), the change is gone:",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("{label:<52} a[0..4] = {}", show(&now));
    if now != first {
        return Err("abort must restore the committed data".into());
    }

    // 4. Change it again and commit; read the old value back through snapshot_at.
    let t = Instant::now();
    let tx = db.begin()?;
    tx.array_mut::<f64>("signal")?.view_mut(0..1000)?.fill(42.0);
    peak.sample(&db)?;
    let tid = tx.commit()?;
    let commit_ms = t.elapsed().as_secs_f64() * 1e3;
    let new = db.snapshot()?.array::<f64>("signal")?.to_vec(0..4)?;
    let t = Instant::now();
    let old = db
        .snapshot_at(fill_tid)?
        .array::<f64>("signal")?
        .to_vec(0..4)?;
    let old_ms = t.elapsed().as_secs_f64() * 1e3;
    let label = format!("4. set a[0..1000] = 42, committed tid {tid} ({commit_ms:.1} ms):");
    println!("{label:<52} a[0..4] = {}", show(&new));
    let label = format!("   snapshot_at({fill_tid}) still reads the old data ({old_ms:.1} ms):");
    println!("{label:<52} a[0..4] = {}", show(&old));
    if old != first {
        return Err("time travel must show the old data".into());
    }

    // 5. Check every byte of the file.
    let t = Instant::now();
    let report = db.fsck()?;
    println!("5. fsck in {:.2} s: {}", t.elapsed().as_secs_f64(), report);
    if !report.is_clean() {
        return Err("fsck found problems".into());
    }

    // 6. Memory: what wdb held for array data never exceeded the budget.
    let now = peak.sample(&db)?;
    println!(
        "6. memory: budget {:.1} MiB; peak RAM for array data {:.1} MiB ({:.0}% of the budget), peak dirty {:.1} MiB; now {:.1} MiB held, {} block loads, {} evictions",
        mib(now.budget),
        mib(peak.ram_used),
        100.0 * peak.ram_used as f64 / now.budget.max(1) as f64,
        mib(peak.dirty),
        mib(now.ram_used),
        now.loads,
        now.evictions
    );
    if peak.pss > 0 {
        println!(
            "   process peak PSS {:.1} MiB: wdb's array data (at most the budget: RAM pages and log pages mapped zero-copy), heap (commit buffers, the 8 MiB fill buffer) and code",
            mib(peak.pss)
        );
    }
    if peak.ram_used > now.budget {
        return Err(format!(
            "RAM for array data peaked at {} bytes, over the budget of {} bytes",
            peak.ram_used, now.budget
        )
        .into());
    }
    println!("done in {:.1} s.", total.elapsed().as_secs_f64());
    Ok(())
}
