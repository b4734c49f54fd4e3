//! Through the public contract: scanning an array 8x the RAM budget keeps the process's
//! resident memory within the budget plus a small constant.

use wdb::{Db, Options};

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn scan_of_8x_budget_stays_within_budget() {
    let budget: u64 = 32 << 20;
    let size: u64 = 8 * budget;
    let n = size / 8;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rss.wdb");
    {
        let db = Db::open_with(&path, Options::default().ram_budget(budget)).unwrap();
        let tx = db.begin().unwrap();
        tx.create_array::<f64>("A", &[0]).unwrap();
        tx.commit().unwrap();
        let chunk: Vec<f64> = (0..(1u64 << 20)).map(|i| (i % 1000) as f64).collect();
        let mut done = 0;
        while done < n {
            let tx = db.begin().unwrap();
            tx.array_mut::<f64>("A").unwrap().append(&chunk).unwrap();
            tx.commit().unwrap();
            done += chunk.len() as u64;
        }
    }
    let db = Db::open_with(&path, Options::default().ram_budget(budget)).unwrap();
    let base = rss_bytes();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    let mut peak = 0;
    let mut sum = 0.0;
    let step = 1 << 18;
    let mut lo = 0;
    while lo < n {
        let hi = (lo + step).min(n);
        sum += a.view(lo..hi).unwrap().sum();
        peak = peak.max(rss_bytes());
        lo = hi;
    }
    let chunk_sum: u64 = (0..(1u64 << 20)).map(|i| i % 1000).sum();
    let expected = (chunk_sum * (n >> 20)) as f64;
    assert!(
        (sum - expected).abs() < 1e-6 * expected,
        "sum {sum} expected {expected}"
    );
    let slack = 24 << 20;
    assert!(
        peak <= base + budget + slack,
        "peak RSS {} MiB over base {} MiB + budget {} MiB + {} MiB",
        peak >> 20,
        base >> 20,
        budget >> 20,
        slack >> 20
    );
}
