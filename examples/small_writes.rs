//! The workloads of ../shared/workloads.md that issue 6 is about, timed in one process:
//! W1 ingest (append + commit per chunk), W2 warm scan, W4 sparse (1,000 scattered
//! element writes + one commit), W5 small (100 × one element + commit), then W2 again
//! (with delta chains present), with the file's growth after each phase. A stand-in for
//! `wdbtool bench --phase …` until that lands; same data, positions and seeds.
//!
//! `cargo run --release --example small_writes -- --dir DIR --size-mib 2048 [--ingest-only]`

use std::time::Instant;

use wdb::{Db, Options};

fn splitmix64(seed: u64, count: usize) -> Vec<u64> {
    (1..=count as u64)
        .map(|k| {
            let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

fn elem(i: u64) -> f64 {
    let noise = (i.wrapping_mul(2_654_435_761) % (1 << 32)) as f64 / 4_294_967_296.0 - 0.5;
    (2.0 * std::f64::consts::PI * i as f64 / 65536.0).sin() + 1e-3 * noise
}

fn fig(workload: &str, metric: &str, value: f64, unit: &str) {
    println!(
        "{{\"peer\": \"wdb\", \"workload\": \"{workload}\", \"metric\": \"{metric}\", \"value\": {value:.3}, \"unit\": \"{unit}\"}}"
    );
}

fn main() -> wdb::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let size_mib: u64 = arg("--size-mib").map_or(512, |s| s.parse().expect("--size-mib"));
    let dir = arg("--dir").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.wdb");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(wdb::store::checkpoint_path(&path));
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let n = size_mib * (1 << 20) / 8;
    // W4 dirties ~630 blocks of 2 MiB at 2 GiB: dirty blocks stay in RAM until commit.
    let budget_mib: u64 = arg("--ram-budget-mib").map_or(4096, |s| s.parse().expect("budget"));
    let opts = Options::default().ram_budget(budget_mib << 20);
    let seed = 42u64;

    // W1: ingest.
    let mut t = std::time::Duration::ZERO;
    let mut lo = 0u64;
    let mut k = 0u64;
    let s = Instant::now();
    let db = Db::open_with(&path, opts.clone())?;
    {
        let tx = db.begin()?;
        tx.create_array::<f64>("A", &[0])?;
        tx.commit()?;
    }
    t += s.elapsed();
    while lo < n {
        let hi = (lo + (2 + k % 7) * (1 << 20) / 8).min(n);
        let chunk: Vec<f64> = (lo..hi).map(elem).collect();
        let s = Instant::now();
        let tx = db.begin()?;
        let mut a = tx.array_mut::<f64>("A")?;
        a.append(&chunk)?;
        drop(a);
        tx.commit()?;
        t += s.elapsed();
        lo = hi;
        k += 1;
    }
    let s = Instant::now();
    drop(db);
    t += s.elapsed();
    fig(
        "W1",
        "ingest_MBps",
        (n * 8) as f64 / 1e6 / t.as_secs_f64(),
        "MB/s",
    );
    fig("W1", "ingest_s", t.as_secs_f64(), "s");
    fig("W1", "file_bytes", size() as f64, "B");
    if args.iter().any(|a| a == "--ingest-only") {
        return Ok(());
    }

    let scan = |label: &str| -> wdb::Result<()> {
        let s = Instant::now();
        let db = Db::open_with(&path, opts.clone())?;
        let snap = db.snapshot()?;
        let a = snap.array::<f64>("A")?;
        let sum: f64 = a.view(..)?.sum();
        let dt = s.elapsed().as_secs_f64();
        fig(label, "scan_GBps", (n * 8) as f64 / 1e9 / dt, "GB/s");
        fig(label, "sum", sum, "");
        Ok(())
    };
    scan("W2")?;

    // W4: sparse.
    let before = size();
    let db = Db::open_with(&path, opts.clone())?;
    let mut pos: Vec<u64> = splitmix64(seed + 2, 1000).iter().map(|z| z % n).collect();
    pos.sort_unstable();
    pos.dedup();
    let s = Instant::now();
    let tx = db.begin()?;
    let mut a = tx.array_mut::<f64>("A")?;
    for &p in &pos {
        a.view_mut(p..p + 1)?[[0]] = -(p as f64);
    }
    drop(a);
    let upd = s.elapsed();
    tx.commit()?;
    let total = s.elapsed();
    fig("W4", "total_ms", total.as_secs_f64() * 1e3, "ms");
    fig("W4", "update_ms", upd.as_secs_f64() * 1e3, "ms");
    fig("W4", "commit_ms", (total - upd).as_secs_f64() * 1e3, "ms");
    fig("W4", "growth_bytes", (size() - before) as f64, "B");
    drop(db);

    // W5: small.
    let before = size();
    let db = Db::open_with(&path, opts.clone())?;
    let mut times = Vec::new();
    for (k, z) in splitmix64(seed + 3, 100).iter().enumerate() {
        let p = z % n;
        let s = Instant::now();
        let tx = db.begin()?;
        let mut a = tx.array_mut::<f64>("A")?;
        a.view_mut(p..p + 1)?[[0]] = 1e6 + k as f64;
        drop(a);
        tx.commit()?;
        times.push(s.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    fig("W5", "median_ms", times[50], "ms");
    fig("W5", "growth_bytes", (size() - before) as f64, "B");
    drop(db);

    scan("W2-after")?;
    Ok(())
}
