//! Shared by the `reliability_*` suites: a deterministic RNG, a simulated disk behind the
//! log's I/O trait that can crash (tear a write, drop unsynced writes, lose sectors), a
//! random block-level workload and the in-memory model it is checked against.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use wdb::db::{ArraySpec, Compression, Db, Options, Order};
use wdb::log::io::LogIo;
use wdb::store::{Store, StoreOptions};
use wdb::{Error, Tid};

/// Block size of every array the workloads create (the minimum).
pub const BS: usize = 64 << 10;
/// Blocks per array the workloads touch.
pub const MAX_BLOCKS: u64 = 6;
/// Arrays the workloads create.
pub const NAMES: [&str; 3] = ["a0", "a1", "a2"];

/// Is the soak setting on?
pub fn soak() -> bool {
    std::env::var_os("WDB_SOAK").is_some_and(|v| v != "0")
}

/// `default`, or `soak` under `WDB_SOAK=1`; `WDB_RELIAB_N` overrides both.
pub fn scale(default: u64, soak_n: u64) -> u64 {
    if let Some(n) = std::env::var("WDB_RELIAB_N")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if soak() {
        soak_n
    } else {
        default
    }
}

/// xorshift64* — deterministic, seedable, good enough to pick workloads.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A block's content, made to exercise every encoding: holes, trimmed raw pages,
/// compressible (zstd) data, and incompressible data.
pub fn random_block(rng: &mut Rng) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    match rng.below(5) {
        0 => {} // a hole
        1 => {
            // compressible pages
            let pages = 1 + rng.below(3) as usize;
            let v = rng.next() as u8;
            for (i, x) in b[..pages * 4096].iter_mut().enumerate() {
                *x = v.wrapping_add((i % 7) as u8);
            }
        }
        2 => {
            // incompressible: stored raw, page-aligned
            let pages = 1 + rng.below(2) as usize;
            rng.fill(&mut b[..pages * 4096]);
        }
        3 => {
            // a few bytes somewhere (trimmed to their page)
            let at = rng.below((BS - 16) as u64) as usize;
            rng.fill(&mut b[at..at + 16]);
        }
        _ => {
            // the whole block, compressible
            let v = rng.next() as u8;
            for (i, x) in b.iter_mut().enumerate() {
                *x = v ^ ((i / 1000) as u8);
            }
        }
    }
    b
}

pub fn spec(name: &str, blocks: u64, zstd: bool) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: b"|u1".to_vec(),
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![blocks * BS as u64],
        order: Order::C,
        block_size: BS as u32,
        compression: if zstd {
            Compression::Zstd { level: 1 }
        } else {
            Compression::None
        },
    }
}

// ---------------------------------------------------------------------------------------
// The model

/// One array as the model sees it: its shape and the blocks written (others are zeros).
/// Blocks keep their content across shape changes, as the block-level API does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelArray {
    pub shape: Vec<u64>,
    pub blocks: BTreeMap<u64, Vec<u8>>,
}

/// The whole database as of one commit.
pub type Model = BTreeMap<String, ModelArray>;

/// Check that snapshot `tid` of `db` equals `m`: names, shapes, every block.
pub fn check_state(db: &Db, tid: Option<Tid>, m: &Model) -> Result<(), String> {
    let s = match tid {
        Some(t) => db.snapshot_at(t),
        None => db.snapshot(),
    }
    .map_err(|e| format!("snapshot {tid:?}: {e}"))?;
    let names = s.array_names().map_err(|e| e.to_string())?;
    let want: Vec<String> = m.keys().cloned().collect();
    if names != want {
        return Err(format!("at {}: names {names:?}, want {want:?}", s.tid()));
    }
    let mut buf = vec![0u8; BS];
    for (name, a) in m {
        let info = s.array_info(name).map_err(|e| e.to_string())?;
        if info.shape != a.shape {
            return Err(format!(
                "at {}: {name} shape {:?}, want {:?}",
                s.tid(),
                info.shape,
                a.shape
            ));
        }
        for blk in 0..MAX_BLOCKS {
            s.read_block(info.id, blk, &mut buf)
                .map_err(|e| format!("at {}: read {name}[{blk}]: {e}", s.tid()))?;
            let ok = match a.blocks.get(&blk) {
                Some(want) => buf == *want,
                None => buf.iter().all(|&x| x == 0),
            };
            if !ok {
                return Err(format!("at {}: {name} block {blk} differs", s.tid()));
            }
        }
    }
    Ok(())
}

/// What one random transaction did.
pub enum TxOutcome {
    /// Committed: its tid and the model after it.
    Committed(Tid, Model),
    /// Aborted on purpose (or had nothing to commit).
    Aborted,
    /// `commit` failed with this error; the model it would have produced.
    Failed(Error, Model),
}

/// Run one random transaction on `db` from model `m`.
pub fn random_tx(db: &Db, m: &Model, rng: &mut Rng) -> Result<TxOutcome, Error> {
    let tx = db.begin()?;
    let mut next = m.clone();
    let n_ops = 1 + rng.below(4);
    for _ in 0..n_ops {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        match (next.contains_key(name), rng.below(10)) {
            (false, _) => {
                let blocks = 1 + rng.below(MAX_BLOCKS);
                let sp = spec(name, blocks, rng.chance(50));
                tx.create_array_raw(sp.clone())?;
                next.insert(
                    name.to_string(),
                    ModelArray {
                        shape: sp.shape,
                        blocks: BTreeMap::new(),
                    },
                );
            }
            (true, 0) if rng.chance(30) => {
                tx.delete_array(name)?;
                next.remove(name);
            }
            (true, 0..=1) => {
                let blocks = 1 + rng.below(MAX_BLOCKS);
                let shape = vec![blocks * BS as u64 - rng.below(100)];
                tx.set_shape(name, &shape)?;
                next.get_mut(name).unwrap().shape = shape;
            }
            (true, _) => {
                let id = tx.array_info(name)?.id;
                let blk = rng.below(MAX_BLOCKS);
                let data = random_block(rng);
                tx.write_block(id, blk, &data)?;
                next.get_mut(name).unwrap().blocks.insert(blk, data);
            }
        }
    }
    if rng.chance(15) {
        if rng.chance(50) {
            tx.abort();
        } else {
            drop(tx);
        }
        return Ok(TxOutcome::Aborted);
    }
    match tx.commit() {
        Ok(t) => Ok(TxOutcome::Committed(t, next)),
        Err(e) => Ok(TxOutcome::Failed(e, next)),
    }
}

// ---------------------------------------------------------------------------------------
// The simulated disk

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// One mutation not yet made durable by a sync.
#[derive(Debug, Clone)]
pub enum Pending {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

/// How the machine goes down at the crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// The process dies: everything it wrote before is in the page cache and survives;
    /// the interrupted write left a random prefix of itself.
    Process,
    /// Power loss: every write since the last successful sync is gone.
    PowerLoss,
    /// Power loss where each 512-byte sector written since the last sync independently
    /// did or did not reach the disk (writes reordered and torn by the device).
    TornSectors,
}

/// The shared state of a [`SimDisk`]: what reads see (the page cache), what survived the
/// last sync, the mutations in between, and the crash trigger.
#[derive(Debug, Default)]
pub struct Disk {
    pub cur: Vec<u8>,
    pub durable: Vec<u8>,
    pub pending: Vec<Pending>,
    /// Mutating calls (write, sync, truncate) seen while armed.
    pub ops: u64,
    /// Crash on this (1-based) armed call; 0 = never.
    pub crash_at: u64,
    pub armed: bool,
    pub crashed: bool,
    /// Kind of the call that crashed: "write", "sync" or "truncate".
    pub crashed_in: &'static str,
    /// The interrupted write, if the crash hit a write.
    pub interrupted: Option<(u64, Vec<u8>)>,
}

/// A [`LogIo`] over memory with crash semantics. After the crash every call fails with
/// EIO, as nothing happens in a dead process.
#[derive(Debug, Clone)]
pub struct SimDisk(pub Arc<Mutex<Disk>>);

impl SimDisk {
    /// A disk holding `bytes`, all durable.
    pub fn new(bytes: Vec<u8>) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(Disk {
            durable: bytes.clone(),
            cur: bytes,
            ..Disk::default()
        })))
    }

    /// The bytes on the platter after a crash of `kind` (random choices from `rng`).
    pub fn crash_image(&self, kind: CrashKind, rng: &mut Rng) -> Vec<u8> {
        let d = self.0.lock();
        match kind {
            CrashKind::Process => {
                let mut img = d.cur.clone();
                if let Some((off, data)) = &d.interrupted {
                    let k = rng.below(data.len() as u64 + 1) as usize;
                    write_into(&mut img, *off, &data[..k]);
                }
                img
            }
            CrashKind::PowerLoss => d.durable.clone(),
            CrashKind::TornSectors => {
                let mut img = d.durable.clone();
                let interrupted = d
                    .interrupted
                    .iter()
                    .map(|(o, b)| Pending::Write(*o, b.clone()));
                for p in d.pending.iter().cloned().chain(interrupted) {
                    match p {
                        Pending::Truncate(len) => {
                            if rng.chance(50) {
                                img.resize(usize::try_from(len).unwrap(), 0);
                            }
                        }
                        Pending::Write(off, data) => {
                            // Sectors are 512-byte aligned in the file.
                            let mut pos = off;
                            let end = off + data.len() as u64;
                            while pos < end {
                                let sec_end = ((pos / 512) + 1) * 512;
                                let to = sec_end.min(end);
                                if rng.chance(50) {
                                    let s = usize::try_from(pos - off).unwrap();
                                    let e = usize::try_from(to - off).unwrap();
                                    write_into(&mut img, pos, &data[s..e]);
                                }
                                pos = to;
                            }
                        }
                    }
                }
                img
            }
        }
    }

    fn tick(&self, d: &mut Disk, what: &'static str) -> bool {
        if d.crashed {
            return true;
        }
        if !d.armed {
            return false;
        }
        d.ops += 1;
        if d.ops == d.crash_at {
            d.crashed = true;
            d.crashed_in = what;
            return true;
        }
        false
    }
}

fn write_into(img: &mut Vec<u8>, off: u64, data: &[u8]) {
    let off = usize::try_from(off).unwrap();
    if img.len() < off + data.len() {
        img.resize(off + data.len(), 0);
    }
    img[off..off + data.len()].copy_from_slice(data);
}

impl LogIo for SimDisk {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let d = self.0.lock();
        if d.crashed {
            return Err(eio());
        }
        let off = usize::try_from(off).map_err(|_| eio())?;
        if off + buf.len() > d.cur.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&d.cur[off..off + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut d = self.0.lock();
        if self.tick(&mut d, "write") {
            if d.interrupted.is_none() && d.crashed_in == "write" {
                d.interrupted = Some((off, buf.to_vec()));
            }
            return Err(eio());
        }
        write_into(&mut d.cur, off, buf);
        d.pending.push(Pending::Write(off, buf.to_vec()));
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.0.lock();
        if self.tick(&mut d, "sync") {
            return Err(eio());
        }
        d.durable = d.cur.clone();
        d.pending.clear();
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        let d = self.0.lock();
        if d.crashed {
            return Err(eio());
        }
        Ok(d.cur.len() as u64)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut d = self.0.lock();
        if self.tick(&mut d, "truncate") {
            return Err(eio());
        }
        d.cur.resize(usize::try_from(len).map_err(|_| eio())?, 0);
        d.pending.push(Pending::Truncate(len));
        Ok(())
    }
}

/// Open the database at `path` (which must exist) over a simulated disk holding the
/// file's current bytes. The real file stays in place: the log checks its inode.
pub fn open_sim(path: &Path) -> wdb::Result<(Db, SimDisk)> {
    let disk = SimDisk::new(std::fs::read(path)?);
    let store = Store::open_with_io(path, Box::new(disk.clone()), StoreOptions::default())?;
    Ok((Db::from_store(store, Options::default()), disk))
}

/// fsck `path` and fail with the problems if there are any.
pub fn fsck_clean(path: &Path) -> Result<(), String> {
    let rep = Db::fsck_path(path).map_err(|e| format!("fsck: {e}"))?;
    if rep.is_clean() {
        Ok(())
    } else {
        Err(format!("fsck: {:?}", rep.problems))
    }
}

// ---------------------------------------------------------------------------------------
// Child processes under strace: crash or fail at the N-th call of a syscall

/// The environment variable that gives a re-run test binary its child role.
pub const ROLE: &str = "WDB_RELIAB_ROLE";
/// A path the child stats right before the work under test, so the trace shows where
/// the calls to count begin.
pub const MARKER: &str = "/wdb-reliab-marker-begin";
/// The syscalls that change files.
pub const MUTATING: [&str; 11] = [
    "openat",
    "pwrite64",
    "write",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
];

/// Is strace usable here (installed, and ptrace allowed)?
pub fn have_strace() -> bool {
    Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

use std::process::{Command, Output};

/// Run test `test` of this binary as child `role` on database `db` under strace with
/// `extra` strace arguments.
pub fn strace_child(test: &str, role: &str, db: &Path, extra: &[String]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new("strace");
    c.args(["-f", "-qq"]).args(extra).arg(exe).args([
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
    ]);
    c.env(ROLE, role).env("WDB_RELIAB_DB", db).output().unwrap()
}

/// Calls of each mutating syscall a child makes after the marker: a dry run traced to a
/// file. Returns (syscall, calls before the marker, calls after it).
pub fn count_calls(test: &str, role: &str, db: &Path, trace: &Path) -> Vec<(String, u64, u64)> {
    let set = format!("trace={},newfstatat,statx", MUTATING.join(","));
    let out = strace_child(
        test,
        role,
        db,
        &["-e".into(), set, "-o".into(), trace.display().to_string()],
    );
    assert!(
        out.status.success(),
        "dry run failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(trace).unwrap();
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut after = false;
    for line in text.lines() {
        if line.contains(MARKER) {
            after = true;
            continue;
        }
        // "<pid> name(args" or "<pid> <... name resumed>": count the starts only.
        let body = line
            .split_once(' ')
            .map(|(_, b)| b)
            .unwrap_or(line)
            .trim_start();
        if body.starts_with("<...") {
            continue;
        }
        let Some((name, _)) = body.split_once('(') else {
            continue;
        };
        if !MUTATING.contains(&name) {
            continue;
        }
        let e = counts.entry(name.to_string()).or_default();
        if after {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    assert!(after, "the child never reached the marker");
    counts.into_iter().map(|(k, (b, a))| (k, b, a)).collect()
}

/// Copy the database files `db` and `db.idx` to `to` (`to.idx`); remove side files of a
/// previous run (torn tails, compaction leftovers, temporary checkpoints).
pub fn restore(from: &Path, db: &Path) {
    let dir = db.parent().unwrap();
    let stem = db.file_name().unwrap().to_str().unwrap().to_string();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with(&stem) && n != stem && !n.ends_with(".lock") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::fs::copy(from, db).unwrap();
    let mut fi = from.as_os_str().to_owned();
    fi.push(".idx");
    let mut ti = db.as_os_str().to_owned();
    ti.push(".idx");
    if Path::new(&fi).exists() {
        std::fs::copy(&fi, &ti).unwrap();
    }
}

/// A small database with history worth compacting: arrays created, written, overwritten,
/// resized, renamed and deleted. Returns the model at its head.
pub fn build_reference(path: &Path, seed: u64) -> Model {
    let db = Db::open(path).unwrap();
    let mut rng = Rng::new(seed);
    let mut m = Model::new();
    let mut n = 0;
    while n < 12 {
        if let Ok(TxOutcome::Committed(_, next)) = random_tx(&db, &m, &mut rng) {
            m = next;
            n += 1;
        }
    }
    m
}

/// A temporary directory on tmpfs when the machine has `/dev/shm` (the probes test logic,
/// not the disk, and run many thousand opens), else in the default temp dir.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// File offsets just after each committed transaction of the log at `path` (and 4096,
/// the empty log): the lengths at which a cut file is a valid, shorter database.
pub fn tx_ends(path: &Path) -> Vec<u64> {
    let log = wdb::log::Log::open(path, true).unwrap();
    let scan = log.scan(4096, Tid::ZERO, false).unwrap();
    let mut v = vec![4096];
    v.extend(scan.txs.iter().map(|t| t.off + t.header.total_len));
    v
}

/// A small tmpfs mounted for a test, unmounted on drop.
pub struct Mount(pub std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Mount a tmpfs of `size` (mount's syntax: `1m`) at `dir/mnt`, or None when this
/// process may not (the test then says it skipped that part).
pub fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).ok()?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(Mount(mnt))
}

/// What one kill -9 round saw of its child ([`kill_after_acks`]).
pub struct Killed {
    /// The last `ACK <n>` the child printed (or the `acked` passed in).
    pub acked: u64,
    /// Every line it printed.
    pub lines: Vec<String>,
    /// Its standard error.
    pub stderr: String,
}

/// The number of an `ACK <n>` line. The first one shares its line with libtest's
/// `test <name> ... `, which has no newline.
pub fn ack_of(line: &str) -> Option<u64> {
    line.find("ACK ")
        .and_then(|i| line[i + 4..].trim().parse().ok())
}

/// Run test `test` of this test binary as a child with `env`, wait until it printed
/// `wait_acks` lines `ACK <n>`, wait `delay` more (spinning when it is short, so that
/// the kill lands inside a short operation), kill -9 it, and return what it acknowledged and printed.
pub fn kill_after_acks(
    test: &str,
    env: &[(&str, &std::ffi::OsStr)],
    dir: &Path,
    acked: u64,
    wait_acks: u64,
    delay: std::time::Duration,
) -> Killed {
    use std::io::{BufRead, BufReader, Read};
    let err_path = dir.join("child.err");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut ch = cmd.spawn().unwrap();
    let mut out = BufReader::new(ch.stdout.take().unwrap());
    let (mut acked, mut lines, mut seen) = (acked, Vec::new(), 0);
    while seen < wait_acks {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!(
                "the child exited early: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        if let Some(t) = ack_of(&line) {
            acked = t;
            seen += 1;
        }
        lines.push(line);
    }
    if delay > std::time::Duration::from_millis(2) {
        std::thread::sleep(delay);
    } else {
        let s = std::time::Instant::now();
        while s.elapsed() < delay {
            std::hint::spin_loop();
        }
    }
    ch.kill().unwrap();
    ch.wait().unwrap();
    // Everything the child acknowledged before it died is in the pipe.
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    for l in rest.lines() {
        if let Some(t) = ack_of(l) {
            acked = t;
        }
        lines.push(l.to_string());
    }
    Killed {
        acked,
        lines,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
