//! `wdbtool bench`: the workloads of docs/benchmarks.md, one phase per call, on wdb or
//! (with `--baseline`) on a plain `memmap2` mapping of a raw file.
//!
//! Every figure goes to stdout as one JSON object per line; human text goes to stderr.
//! Only wdb calls (or, for the baseline, the file and map calls) are timed: data and
//! positions are generated before the clock starts.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use wdb::db::{ArrayOptions, Compression, Db, Options};

/// Name of the array every phase works on.
pub const ARRAY: &str = "bench";
/// File of the wdb peer under `--dir`.
pub const DB_FILE: &str = "wdb.db";
/// File of the `memmap2` baseline under `--dir`.
pub const RAW_FILE: &str = "baseline.raw";
/// Elements read per random read (W3).
pub const READ_ELEMS: u64 = 512;
/// Random reads (W3).
pub const READS: u64 = 10_000;
/// Scattered writes (W4).
pub const SPARSE_WRITES: u64 = 1_000;
/// Small commits (W5).
pub const SMALL_COMMITS: u64 = 100;

/// One phase of the benchmark protocol.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// W1: create, append in chunks, commit after each append.
    Ingest,
    /// W2: open and sum the whole array.
    Scan,
    /// W3: 10,000 reads of 512 elements at random offsets.
    Randread,
    /// W4: 1,000 scattered element writes, one commit.
    Sparse,
    /// W5: 100 times one element write and a commit.
    Small,
    /// W7: in a fresh DIR, one transaction creates the array and writes every element
    /// through one `view_mut` over the whole array, then commits (a transaction bigger
    /// than `--ram-budget` when N is).
    Bigtx,
}

/// How the array's blocks are compressed (chosen at creation, in `ingest`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    /// Raw blocks.
    None,
    /// zstd at the database's default level, where it saves at least 1/8.
    Zstd,
}

/// When wdb checks a stored block's CRC before it shows it ([`wdb::Verify`]).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyArg {
    /// Once per machine and boot: blocks another process checked are shown unchecked.
    OncePerBoot,
    /// Each process checks every block it shows.
    OncePerProcess,
    /// Raw blocks are trusted as stored.
    Off,
}

impl From<VerifyArg> for wdb::Verify {
    fn from(v: VerifyArg) -> Self {
        match v {
            VerifyArg::OncePerBoot => wdb::Verify::OncePerBoot,
            VerifyArg::OncePerProcess => wdb::Verify::OncePerProcess,
            VerifyArg::Off => wdb::Verify::Off,
        }
    }
}

/// Arguments of `wdbtool bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// ingest, scan, randread, sparse or small (run in that order on one DIR); bigtx
    /// alone, on its own DIR.
    #[arg(long, value_enum)]
    pub phase: Phase,
    /// Directory holding everything (DIR/wdb.db, or DIR/baseline.raw with --baseline).
    /// Must exist; empty before ingest.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Array size in bytes: a multiple of 8, at least 4096 (n = N/8 f64 elements).
    #[arg(long, value_name = "N")]
    pub size_bytes: u64,
    /// Seed of the positions (splitmix64).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// RAM budget of wdb's loaded and dirty blocks [default: min(1 GiB, RAM/4)].
    #[arg(long, value_name = "BYTES")]
    pub ram_budget: Option<u64>,
    /// Block compression of the array, set at creation (ingest).
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: Comp,
    /// Block size of the array in bytes, set at creation (ingest) [default: the database's].
    #[arg(long, value_name = "BYTES")]
    pub block_size: Option<u32>,
    /// Run the phase on a plain memmap2 mapping of DIR/baseline.raw instead of wdb.
    #[arg(long)]
    pub baseline: bool,
    /// When wdb checks a stored block's CRC before it shows it.
    #[arg(long, value_enum, default_value = "once-per-boot")]
    pub verify: VerifyArg,
    /// scan: keep the array mapped this many milliseconds after printing the figures
    /// (for a harness that measures the memory of concurrent scans, tools/procs.sh).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub hold_ms: u64,
    /// Object storage (`--dir s3://bucket/prefix`): the local cache's directory (an
    /// empty one for a cold run) [default: under the user's cache directory].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Object storage: bytes the local cache may hold [default: 4 GiB].
    #[arg(long, value_name = "BYTES")]
    pub cache_size: Option<u64>,
}

/// An error of the benchmark: bad arguments or a failed call.
#[derive(Debug)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<wdb::Error> for BenchError {
    fn from(e: wdb::Error) -> Self {
        BenchError(e.to_string())
    }
}

pub(crate) type R<T> = Result<T, BenchError>;

pub(crate) fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(BenchError(msg.into()))
}

fn io_ctx<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> BenchError + 'a {
    let what = what.to_string();
    move |e| BenchError(format!("{what} {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Data and positions (workloads.md, "reproduce exactly")

/// Element `i`: `sin(2π·i/65536) + 1e-3·((((i·2654435761) mod 2³²) / 2³²) − 0.5)`,
/// the integer part on u64 with wrapping, evaluated left to right.
pub fn element(i: u64) -> f64 {
    let h = (i.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
    (2.0 * std::f64::consts::PI * i as f64 / 65_536.0).sin() + 1e-3 * (h - 0.5)
}

/// Fill `out` with elements `lo..lo + out.len()`.
pub fn fill_elements(lo: u64, out: &mut [f64]) {
    for (k, v) in out.iter_mut().enumerate() {
        *v = element(lo + k as u64);
    }
}

/// Seconds that computing the `n` elements of the data formula takes, measured on the
/// first 2²⁵ (256 MiB) into a 1 MiB buffer and scaled to `n`.
pub fn generation_secs(n: u64) -> f64 {
    let sample = n.min(1 << 25);
    if sample == 0 {
        return 0.0;
    }
    let mut buf = vec![0.0f64; 1 << 17];
    let t = std::time::Instant::now();
    let mut lo = 0;
    while lo < sample {
        let k = (sample - lo).min(buf.len() as u64) as usize;
        fill_elements(lo, &mut buf[..k]);
        std::hint::black_box(&buf);
        lo += k as u64;
    }
    t.elapsed().as_secs_f64() * n as f64 / sample as f64
}

/// `splitmix64(seed, count)`: for k = 1..=count, `z = seed + k·0x9E3779B97F4A7C15`,
/// `z = (z ^ z>>30)·0xBF58476D1CE4E5B9`, `z = (z ^ z>>27)·0x94D049BB133111EB`,
/// yield `z ^ z>>31` (all wrapping).
pub fn splitmix64(seed: u64, count: u64) -> Vec<u64> {
    (1..=count)
        .map(|k| {
            let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// Elements in ingest chunk `k`: `(2 + k mod 7)·2²⁰/8`.
pub fn chunk_elems(k: u64) -> u64 {
    (2 + k % 7) * (1 << 20) / 8
}

/// W3 offsets: `splitmix64(seed+1, 10000) mod (n − 511)`.
pub fn randread_offsets(seed: u64, n: u64) -> Vec<u64> {
    splitmix64(seed.wrapping_add(1), READS)
        .into_iter()
        .map(|z| z % (n - (READ_ELEMS - 1)))
        .collect()
}

/// W4 positions: sorted unique of `splitmix64(seed+2, 1000) mod n`.
pub fn sparse_positions(seed: u64, n: u64) -> Vec<u64> {
    let mut p: Vec<u64> = splitmix64(seed.wrapping_add(2), SPARSE_WRITES)
        .into_iter()
        .map(|z| z % n)
        .collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// W5 positions: `splitmix64(seed+3, 100)[k] mod n`.
pub fn small_positions(seed: u64, n: u64) -> Vec<u64> {
    splitmix64(seed.wrapping_add(3), SMALL_COMMITS)
        .into_iter()
        .map(|z| z % n)
        .collect()
}

/// The sum of W2, the same arithmetic for both peers: eight running sums over the
/// elements `i ≡ j (mod 8)` of the leading multiple of 8, combined as
/// `((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))`, then the tail added in order.
pub fn sum(x: &[f64]) -> f64 {
    let mut s = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            s[j] += c[j];
        }
    }
    let mut t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for v in chunks.remainder() {
        t += v;
    }
    t
}

// ---------------------------------------------------------------------------------------
// Figures

pub(crate) struct Out {
    pub(crate) peer: &'static str,
}

impl Out {
    pub(crate) fn fig(&self, workload: &str, metric: &str, value: f64, unit: &str) -> R<()> {
        if !value.is_finite() {
            return err(format!(
                "{workload} {metric} is not a finite number: {value}"
            ));
        }
        // f64's Display is the shortest text that reads back to the same value, and
        // never uses an exponent: a valid JSON number.
        let line = format!(
            "{{\"peer\": \"{}\", \"workload\": \"{workload}\", \"metric\": \"{metric}\", \"value\": {value}, \"unit\": \"{unit}\"}}\n",
            self.peer
        );
        let mut o = std::io::stdout().lock();
        o.write_all(line.as_bytes())
            .and_then(|_| o.flush())
            .map_err(|e| BenchError(format!("writing to stdout: {e}")))
    }

    // The figures of each phase, the same for both peers.

    /// W1: `size` bytes ingested in `s` seconds.
    fn ingest(&self, size: u64, s: f64) -> R<()> {
        self.fig("W1", "ingest_MBps", size as f64 / 1e6 / s, "MB/s")?;
        self.fig("W1", "ingest_s", s, "s")
    }

    /// W2: `size` bytes scanned in `s` seconds, summing to `total`.
    fn scan(&self, size: u64, s: f64, total: f64) -> R<()> {
        self.fig("W2", "scan_GBps", size as f64 / 1e9 / s, "GB/s")?;
        self.fig("W2", "sum", total, "")
    }

    /// W4: the sparse writes took `update`, their commit `commit`.
    fn sparse(&self, update: Duration, commit: Duration) -> R<()> {
        self.fig("W4", "total_ms", ms(update + commit), "ms")?;
        self.fig("W4", "update_ms", ms(update), "ms")?;
        self.fig("W4", "commit_ms", ms(commit), "ms")
    }

    /// W7: `size` bytes written in one transaction in `s` seconds.
    fn bigtx(&self, size: u64, s: f64) -> R<()> {
        self.fig("W7", "bigtx_MBps", size as f64 / 1e6 / s, "MB/s")?;
        self.fig("W7", "bigtx_s", s, "s")
    }
}

/// The error of a phase that creates `p` when `p` exists already.
fn already_exists(p: &Path, phase: &str) -> R<()> {
    err(format!(
        "{} already exists: {phase} needs an empty --dir",
        p.display()
    ))
}

/// The process's `FilePmdMapped` (file bytes mapped by 2 MiB page-table entries) and
/// `Rss`, in KiB, from /proc/self/smaps_rollup: a note for stderr after a scan.
fn pmd_note() -> String {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let kb = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "FilePmdMapped {} kB, Rss {} kB, CRC-checked {} bytes",
        kb("FilePmdMapped:"),
        kb("Rss:"),
        wdb::Verify::bytes_checked()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median of `v` (mean of the two middle values for an even count).
/// W3 for either peer: copy `READ_ELEMS` elements at each offset out of `slice`, timing
/// each copy, and print the median and p99.
fn time_reads(slice: &[f64], offsets: &[u64], peer: &str, out: &Out) -> R<()> {
    let mut buf = vec![0.0f64; READ_ELEMS as usize];
    let mut times = Vec::with_capacity(offsets.len());
    for &off in offsets {
        let off = off as usize;
        let t = Instant::now();
        buf.copy_from_slice(&slice[off..off + READ_ELEMS as usize]);
        black_box(&mut buf);
        times.push(t.elapsed());
    }
    let med = median(&mut times);
    let p99 = percentile(&times, 99.0);
    eprintln!("{peer} randread: {} reads", times.len());
    out.fig("W3", "median_us", us(med), "us")?;
    out.fig("W3", "p99_us", us(p99), "us")
}

pub fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    let m = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2
    } else {
        v[m]
    }
}

/// Nearest-rank percentile `p` (0 < p ≤ 100) of sorted `v`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------
// Entry

/// Run one phase; figures on stdout, notes on stderr.
pub fn run(a: &BenchArgs) -> R<()> {
    if a.size_bytes % 8 != 0 {
        return err(format!(
            "--size-bytes {} is not a multiple of 8 (the array holds f64 elements)",
            a.size_bytes
        ));
    }
    if a.size_bytes < READ_ELEMS * 8 {
        return err(format!(
            "--size-bytes {} is too small: at least {} (512 elements, one random read)",
            a.size_bytes,
            READ_ELEMS * 8
        ));
    }
    let url = crate::blocks::is_url(&a.dir);
    if !url && !a.dir.is_dir() {
        return err(format!(
            "--dir {}: not an existing directory",
            a.dir.display()
        ));
    }
    if let Some(b) = a.block_size {
        if !b.is_power_of_two() || b < (64 << 10) {
            return err(format!(
                "--block-size {b}: must be a power of two of at least 65536"
            ));
        }
    }
    if let Some(0) = a.ram_budget {
        return err("--ram-budget 0: the scan needs some RAM");
    }
    let n = a.size_bytes / 8;
    if usize::try_from(a.size_bytes).is_err() {
        return err("--size-bytes does not fit in this machine's address space");
    }
    if a.baseline && url {
        #[cfg(feature = "s3")]
        return crate::bench_s3::run(a, n);
        #[cfg(not(feature = "s3"))]
        return err("--baseline on an s3:// --dir needs wdbtool built with the s3 feature");
    }
    if a.baseline {
        baseline::run(a, n)
    } else {
        wdbpeer::run(a, n)
    }
}

/// `min(1 GiB, MemTotal/4)`, or 1 GiB when /proc/meminfo cannot be read.
pub fn default_ram_budget() -> u64 {
    let gib = 1u64 << 30;
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| (kb * 1024 / 4).clamp(64 << 20, gib))
        .unwrap_or(gib)
}

mod wdbpeer {
    use super::*;

    fn options(a: &BenchArgs) -> Options {
        let mut o = Options::default()
            .ram_budget(a.ram_budget.unwrap_or_else(default_ram_budget))
            .verify(a.verify.into());
        if let Some(c) = &a.cache_dir {
            o = o.cache_dir(c);
        }
        if let Some(c) = a.cache_size {
            o = o.cache_size(c);
        }
        o
    }

    /// Does the database exist? (On object storage: does it hold the array?)
    fn exists(a: &BenchArgs, p: &Path) -> bool {
        if !crate::blocks::is_url(p) {
            return p.exists();
        }
        open_db(p, options(a).read_only(true))
            .and_then(|d| d.snapshot()?.array::<f64>(ARRAY).map(|_| ()))
            .is_ok()
    }

    fn open_db(p: &Path, o: Options) -> wdb::Result<Db> {
        Db::open_url(
            p.to_str()
                .ok_or_else(|| wdb::Error::InvalidArgument("path is not UTF-8".into()))?,
            o,
        )
    }

    fn path(a: &BenchArgs) -> PathBuf {
        a.dir.join(DB_FILE)
    }

    /// An error opening the benchmark array, with a hint when it is missing.
    fn array_err(e: wdb::Error, p: &Path) -> BenchError {
        let hint = if matches!(e, wdb::Error::NotFound(_)) {
            " (run the ingest phase first)"
        } else {
            ""
        };
        BenchError(format!("array {ARRAY:?} in {}: {e}{hint}", p.display()))
    }

    /// Open an existing benchmark database and check the array's length.
    fn open(a: &BenchArgs, n: u64, read_only: bool) -> R<Db> {
        let p = path(a);
        if !exists(a, &p) {
            return err(format!(
                "{} does not exist: run `wdbtool bench --phase ingest` on this --dir first",
                p.display()
            ));
        }
        let db = open_db(&p, options(a).read_only(read_only))?;
        {
            let s = db.snapshot()?;
            let arr = s.array::<f64>(ARRAY).map_err(|e| array_err(e, &p))?;
            if arr.len() != n {
                return err(format!(
                    "array {ARRAY:?} in {} has {} elements, not --size-bytes/8 = {n}",
                    p.display(),
                    arr.len()
                ));
            }
        }
        Ok(db)
    }

    pub fn run(a: &BenchArgs, n: u64) -> R<()> {
        let out = Out { peer: "wdb" };
        match a.phase {
            Phase::Ingest => ingest(a, n, &out),
            Phase::Scan => scan(a, n, &out),
            Phase::Randread => randread(a, n, &out),
            Phase::Sparse => sparse(a, n, &out),
            Phase::Small => small(a, n, &out),
            Phase::Bigtx => bigtx(a, n, &out),
        }
    }

    /// The array options of `--compression` and `--block-size`.
    fn array_options(a: &BenchArgs) -> ArrayOptions {
        let mut opts = ArrayOptions::default().compression(match a.compression {
            Comp::None => Compression::None,
            Comp::Zstd => Compression::Zstd { level: 0 },
        });
        if let Some(b) = a.block_size {
            opts = opts.block_size(b);
        }
        opts
    }

    fn ingest(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
        let p = path(a);
        if exists(a, &p) {
            return already_exists(&p, "ingest");
        }
        let opts = array_options(a);
        let mut buf = vec![0.0f64; chunk_elems(6) as usize];
        let mut timed = Duration::ZERO;
        let t = Instant::now();
        let db = open_db(&p, options(a))?;
        timed += t.elapsed();
        let (mut lo, mut k) = (0u64, 0u64);
        while lo < n {
            let len = chunk_elems(k).min(n - lo);
            let chunk = &mut buf[..len as usize];
            fill_elements(lo, chunk);
            let t = Instant::now();
            let tx = db.begin()?;
            {
                let mut arr = if k == 0 {
                    tx.create_array_with::<f64>(ARRAY, &[0], opts)?
                } else {
                    tx.array_mut::<f64>(ARRAY)?
                };
                arr.append(chunk)?;
            }
            tx.commit()?;
            timed += t.elapsed();
            lo += len;
            k += 1;
        }
        let t = Instant::now();
        drop(db);
        timed += t.elapsed();
        let s = timed.as_secs_f64();
        eprintln!("wdb ingest: {n} elements in {k} commits, {s:.3} s");
        out.ingest(a.size_bytes, s)
    }

    /// W7: open, create the array in one transaction, write element `i` at `i` through
    /// one `view_mut` over the whole array, commit; everything from open to the end of
    /// the commit is timed (the data formula included: it is computed in place).
    fn bigtx(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
        let p = path(a);
        if p.exists() {
            return already_exists(&p, "bigtx");
        }
        let opts = array_options(a);
        let t = Instant::now();
        let db = Db::open_with(&p, options(a))?;
        let tx = db.begin()?;
        {
            let mut arr = tx.create_array_with::<f64>(ARRAY, &[n], opts)?;
            let mut view = arr.view_mut(..)?;
            let slice = view
                .as_slice_mut()
                .ok_or_else(|| BenchError("the view of a 1-D array is not contiguous".into()))?;
            fill_elements(0, slice);
        }
        let stats = db.memory_stats()?;
        let filled = t.elapsed().as_secs_f64();
        tx.commit()?;
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "wdb bigtx: {n} elements in one transaction, {s:.3} s ({filled:.3} s to fill, {:.3} s to commit); before commit: {} bytes spilled in {} spill writes, {} bytes dirty, budget {}",
            s - filled, stats.spilled, stats.spill_writes, stats.dirty, stats.budget
        );
        // The timed fill computes the elements (W1 times only wdb calls): what computing
        // them costs alone, from the first 256 MiB in a buffer of 1 MiB, scaled to n.
        let gen = generation_secs(n);
        eprintln!(
            "wdb bigtx: computing the elements alone takes about {gen:.3} s; without it {:.3} s",
            s - gen
        );
        out.bigtx(a.size_bytes, s)
    }

    fn scan(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
        let p = path(a);
        if !exists(a, &p) {
            return err(format!(
                "{} does not exist: run `wdbtool bench --phase ingest` on this --dir first",
                p.display()
            ));
        }
        let t = Instant::now();
        let db = open_db(&p, options(a).read_only(true))?;
        let snap = db.snapshot()?;
        let arr = snap.array::<f64>(ARRAY).map_err(|e| array_err(e, &p))?;
        if arr.len() != n {
            return err(format!(
                "array {ARRAY:?} has {} elements, not --size-bytes/8 = {n}",
                arr.len()
            ));
        }
        let view = arr.view(..)?;
        let slice = view
            .as_slice()
            .ok_or_else(|| BenchError("the view of a 1-D array is not contiguous".into()))?;
        let total = sum(slice);
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "wdb scan: {} bytes in {s:.3} s; {}",
            a.size_bytes,
            pmd_note()
        );
        if let Ok(st) = db.memory_stats() {
            eprintln!("wdb scan: {st:?}");
        }
        out.scan(a.size_bytes, s, total)?;
        std::thread::sleep(Duration::from_millis(a.hold_ms));
        Ok(())
    }

    fn randread(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
        let offsets = randread_offsets(a.seed, n);
        let db = open(a, n, true)?;
        let snap = db.snapshot()?;
        let arr = snap.array::<f64>(ARRAY)?;
        let view = arr.view(..)?;
        let slice = view
            .as_slice()
            .ok_or_else(|| BenchError("the view of a 1-D array is not contiguous".into()))?;
        time_reads(slice, &offsets, "wdb", out)
    }

    fn sparse(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
        let pos = sparse_positions(a.seed, n);
        let db = open(a, n, false)?;
        let t = Instant::now();
        let tx = db.begin()?;
        {
            // write_from rather than a view: a block that cannot be loaded (RAM budget
            // full of dirty blocks, I/O) is an Err here, not a stop inside a fault.
            let mut arr = tx.array_mut::<f64>(ARRAY)?;
            for &p in &pos {
                arr.write_from(p..p + 1, &[-(p as f64)])?;
            }
        }
        let update = t.elapsed();
        let t = Instant::now();
        tx.commit()?;
        let commit = t.elapsed();
        eprintln!("wdb sparse: {} positions", pos.len());
        out.sparse(update, commit)
    }

    fn small(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
        let pos = small_positions(a.seed, n);
        let db = open(a, n, false)?;
        let mut times = Vec::with_capacity(pos.len());
        for (k, &p) in pos.iter().enumerate() {
            let v = [1e6 + k as f64];
            let t = Instant::now();
            let tx = db.begin()?;
            {
                let mut arr = tx.array_mut::<f64>(ARRAY)?;
                arr.write_from(p..p + 1, &v)?;
            }
            tx.commit()?;
            times.push(t.elapsed());
        }
        let med = median(&mut times);
        eprintln!("wdb small: {} commits", times.len());
        out.fig("W5", "median_ms", ms(med), "ms")
    }
}

mod baseline;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_pinned() {
        // The reference splitmix64 seeded with 0 (Vigna) starts with 0xE220A8397B1DCDAF.
        assert_eq!(splitmix64(0, 1), vec![0xE220_A839_7B1D_CDAF]);
        let v = splitmix64(42, 3);
        assert_eq!(v, SM42.to_vec());
        // A prefix of a longer sequence is the shorter one.
        assert_eq!(&splitmix64(42, 100)[..3], &v[..]);
        assert!(splitmix64(7, 0).is_empty());
    }

    // Cross-checked with an independent Python implementation of workloads.md.
    const SM42: [u64; 3] = [
        13679457532755275413,
        2949826092126892291,
        5139283748462763858,
    ];

    #[test]
    fn elements_pinned() {
        assert_eq!(element(0), -0.0005);
        // Bit patterns, cross-checked with Python (math.sin): -0.0005,
        // 0.0002139077858674566, -7.218442914633822e-05, 0.0006417233540773643.
        let want: [u64; 4] = [
            0xbf40624dd2f1a9fc,
            0x3f2c098de3aa8a6a,
            0xbf12ec370cc359a6,
            0x3f45072a68cfce1a,
        ];
        let got: Vec<u64> = (0..4).map(|i| element(i).to_bits()).collect();
        assert_eq!(
            got,
            want.to_vec(),
            "{:?}",
            (0..4).map(element).collect::<Vec<_>>()
        );
        // A quarter period: sin = 1, and the hash term of 16384.
        let h = ((16384u64 * 2_654_435_761) % (1 << 32)) as f64 / 4_294_967_296.0;
        assert!((element(16384) - (1.0 + 1e-3 * (h - 0.5))).abs() < 1e-15);
        // Wrapping on u64 does not panic.
        assert!(element(u64::MAX).is_finite());
    }

    #[test]
    fn chunks_and_positions() {
        assert_eq!(chunk_elems(0), 2 * 131_072);
        assert_eq!(chunk_elems(6), 8 * 131_072);
        assert_eq!(chunk_elems(7), 2 * 131_072);
        let n = 1 << 20;
        assert!(randread_offsets(42, n).iter().all(|&o| o + 512 <= n));
        assert_eq!(randread_offsets(42, n).len(), 10_000);
        let s = sparse_positions(42, n);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s.len() <= 1000 && s.len() > 990);
        assert_eq!(small_positions(42, n).len(), 100);
        assert_eq!(small_positions(42, n)[0], splitmix64(45, 1)[0] % n);
    }

    #[test]
    fn sum_order() {
        let x: Vec<f64> = (0..21).map(|i| i as f64).collect();
        assert_eq!(sum(&x), 210.0);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn stats() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(median(&mut v), Duration::from_nanos(50_500));
        assert_eq!(percentile(&v, 99.0), Duration::from_micros(99));
        let mut w = vec![Duration::from_micros(3)];
        assert_eq!(median(&mut w), Duration::from_micros(3));
    }
}
