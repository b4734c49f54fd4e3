//! MVCC over the log: the index `key → versions`, `load(key, at)`, optimistic commit with
//! key-level conflicts, refresh from other processes' commits, the index checkpoint,
//! changes between tids, compaction and the checker behind fsck. Knows nothing of memory.
//!
//! State: a `Store` holds the current [`Gen`] (one log file and its index). Compaction
//! replaces the current `Gen`; snapshots keep the `Arc<Gen>` they started on, so they
//! keep reading the file they began with.
//!
//! ```text
//!   open ──► Gen(file A) ──commit/refresh──► Gen(file A, longer index)
//!                  │ compact (copy, catch up, rename)
//!                  ▼
//!            Gen(file B)     (old snapshots still hold Gen(file A))
//! ```
//!
//! The index is the checkpoint it was opened from (version 3, read lazily page by page:
//! [`ckpt`]) plus an overlay in memory of the transactions read from the log after it.
//! Open reads the checkpoint's header page and the log past its covered end, so its cost
//! does not grow with the database.
//!
//! Invariants (checked by `Index::assert_invariants` at the top of commit in debug builds,
//! for the overlay and its relation to the checkpoint part; the checkpoint part's pages
//! are checked as they are read, storage-format.md §7):
//! 1. Each key's versions — the checkpoint part's, then the overlay's — are sorted by
//!    strictly increasing tid, all ≤ `last_tid`; the overlay's are all newer than the
//!    checkpoint part's last tid.
//! 2. The transactions — the checkpoint part's, then the overlay's `txs` — are sorted by
//!    tid; the last one ends at `end`, and `last_tid` is its tid.
//! 3. Every overlay version's tid is one of the overlay's `txs`, and `by_tid` lists each
//!    key under each tid that wrote it.
//! 4. Appends happen only at `end`, only under the writer lock, and after refreshing the
//!    index to the file's last committed transaction (so `end` is the file's).
//! 5. After a failed append or fsync the store is poisoned: no further commit until reopen.
//!
//! Files: `mod.rs` opening, recovery from the checkpoint and the log, refresh, history;
//! [`index`](Index) the index (invariants 1–3); [`gen`](Gen) the read path (versions,
//! delta chains, single pages, mapped raw blocks); `commit.rs` the commit (conflict
//! check, encoding, append; invariants 4–5); [`ckpt`] the lazily read checkpoint;
//! [`compact`], [`fsck`], [`spill`], [`encode`] (payload encodings) and [`storage`] (the
//! trait a log that is not one local file implements).
//!
//! Lock order: `Store::commit_lock`/writer lock (lock file) → `Store::gen` → `Gen::index`.
//! Readers take only `Gen::index` (shared, briefly) and never wait for an append (they
//! wait only while a damaged checkpoint is replaced by an index rebuilt from the log).

pub mod ckpt;
mod commit;
pub mod compact;
pub mod encode;
pub mod fsck;
mod gen;
mod index;
#[cfg(feature = "s3")]
pub mod object;
pub mod spill;
pub mod storage;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::format::checkpoint::Version;
use crate::format::{self, Key, FLAG_DELETED};
#[cfg(any(test, feature = "internals"))]
use crate::log::io::LogIo;
use crate::log::lock::{LockFile, ReaderSlot};
use crate::log::Log;
use crate::verify::{self, BootTable, TablePlace, Verify};
use crate::{Error, Result, Tid};
#[cfg(feature = "s3")]
pub(crate) use commit::{encode_commit, now_ns};
pub use commit::{CommitRequest, Write};
pub use encode::Encoded;
pub use gen::Gen;
pub use index::Index;

/// Path of the index checkpoint of database `db`.
pub fn checkpoint_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

/// Store options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Open read-only (no commits, no tail cutting).
    pub read_only: bool,
    /// fdatasync each commit before it returns.
    pub sync: bool,
    /// Write a checkpoint when this many log bytes are not covered by the last one.
    pub checkpoint_bytes: u64,
    /// When a stored raw block's CRC is checked before it is shown.
    pub verify: Verify,
    /// Where the table of versions checked this boot lives (`Verify::OncePerBoot`).
    pub table: TablePlace,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            read_only: false,
            sync: true,
            checkpoint_bytes: 64 << 20,
            verify: Verify::default(),
            table: TablePlace::default(),
        }
    }
}

impl StoreOptions {
    /// The per-boot table of checked versions a store opened with these options shares
    /// (`Verify::OncePerBoot`, when the table is usable).
    pub fn boot_table(&self) -> Option<Arc<BootTable>> {
        match self.verify {
            Verify::OncePerBoot => verify::boot_table(&self.table),
            _ => None,
        }
    }
}

/// A commit in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Its tid.
    pub tid: Tid,
    /// Wall time, ns since the epoch.
    pub wall_ns: u64,
    /// Bytes it takes in the log.
    pub bytes: u64,
    /// Arrays whose blocks or metadata it changed.
    pub arrays: Vec<u64>,
    /// Did it change the set of names?
    pub names_changed: bool,
}

/// The MVCC store of one database path.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    opts: StoreOptions,
    lock: Arc<LockFile>,
    gen: RwLock<Arc<Gen>>,
    poisoned: Mutex<Option<String>>,
    refresh_lock: Mutex<()>,
    /// Wraps the I/O of new spill files (tests inject faults this way).
    spill_io: spill::SpillIoHook,
    /// Spill files are created beside this path: the database file, or for a database
    /// in object storage, its local cache (beside the cache's lock file).
    spill_at: PathBuf,
    /// Where the log lives when it is not the local file at `path` (None: the file).
    remote: Option<Arc<dyn storage::Storage>>,
    /// The per-boot table of checked versions (`Verify::OncePerBoot`, when usable).
    table: Option<Arc<BootTable>>,
}

/// The index a checkpoint of `log` gives, if there is one and it matches the log
/// (storage-format.md §7): a version-3 one opened lazily (its header page read and
/// checked, the rest read by lookups), an older one read and checked whole.
fn load_checkpoint(path: &Path, log: &Log) -> Option<Index> {
    let c = ckpt::open(path)?;
    let (uuid, covered_end, last_tid, tx_crc) = c.describes();
    if !matches_log(log, uuid, covered_end, last_tid, tx_crc) {
        return None;
    }
    match c {
        ckpt::Opened::Lazy(c) => Some(Index::from_lazy(c)),
        ckpt::Opened::Whole(c) => (c.txs.last().map_or(Tid::ZERO, |t| t.tid) == c.last_tid)
            .then(|| Index::from_checkpoint(c)),
    }
}

/// Does a checkpoint (log uuid, covered end, last tid and its transaction CRC) describe
/// `log`? The covered end must be within the file and, unless the checkpoint covers no
/// transaction, just after a trailer of that tid and CRC (storage-format.md §7).
fn matches_log(log: &Log, uuid: u64, covered_end: u64, last_tid: Tid, tx_crc: u32) -> bool {
    if uuid != log.header().uuid
        || covered_end < format::FILE_HEADER_SIZE
        || log.len().map_or(true, |l| covered_end > l)
    {
        return false;
    }
    if last_tid == Tid::ZERO {
        return covered_end == format::FILE_HEADER_SIZE;
    }
    let mut eb = [0u8; format::TX_END_SIZE];
    let Some(at) = covered_end.checked_sub(format::TX_END_SIZE as u64) else {
        return false;
    };
    if log.read_exact_at(&mut eb, at).is_err() {
        return false;
    }
    format::TxEnd::decode(&eb, 0, None).is_ok_and(|end| end.tid == last_tid && end.tx_crc == tx_crc)
}

impl Store {
    /// Open or create the database at `path`.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        if opts.read_only && !path.exists() {
            return Err(Error::NotFound(format!("database {}", path.display())));
        }
        let lock = Arc::new(LockFile::open(path, opts.read_only)?);
        let log = match Log::open(path, opts.read_only) {
            Ok(l) => l,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !opts.read_only => {
                let _w = lock.writer()?;
                match Log::create(path, Tid::ZERO) {
                    Ok(l) => l,
                    Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Log::open(path, false)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("database {}", path.display())))
            }
            // A crash during creation can leave a file without a valid header (and so
            // without transactions): finish creating it, under the writer lock (the
            // creator may still be writing the header).
            Err(Error::Corruption { .. })
                if !opts.read_only
                    && std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX)
                        <= format::FILE_HEADER_SIZE =>
            {
                let _w = lock.writer()?;
                match Log::reinit_if_headerless(path)? {
                    Some(l) => l,
                    None => Log::open(path, false)?,
                }
            }
            Err(e) => return Err(e),
        };
        Store::open_log(path, log, lock, opts)
    }

    /// Open over a given I/O implementation of the (existing) log file.
    #[cfg(any(test, feature = "internals"))]
    pub fn open_with_io(path: &Path, io: Box<dyn LogIo>, opts: StoreOptions) -> Result<Store> {
        let lock = Arc::new(LockFile::open(path, opts.read_only)?);
        let log = Log::open_io(path, io)?;
        Store::open_log(path, log, lock, opts)
    }

    fn open_log(path: &Path, log: Log, lock: Arc<LockFile>, opts: StoreOptions) -> Result<Store> {
        let table = opts.boot_table();
        let gen = Store::load_gen(log, &lock, opts.read_only, (opts.verify, table.clone()))?;
        Ok(Store::assemble(path, path, (gen, table), lock, None, opts))
    }

    /// A store over an opened generation; its transactions spill beside `spill_at`,
    /// whose leftovers of dead processes a writer removes first.
    fn assemble(
        name: &Path,
        spill_at: &Path,
        (gen, table): (Gen, Option<Arc<BootTable>>),
        lock: Arc<LockFile>,
        remote: Option<Arc<dyn storage::Storage>>,
        opts: StoreOptions,
    ) -> Store {
        if !opts.read_only {
            spill::remove_leftovers(spill_at);
        }
        Store {
            path: name.to_path_buf(),
            opts,
            lock,
            gen: RwLock::new(Arc::new(gen)),
            poisoned: Mutex::new(None),
            refresh_lock: Mutex::new(()),
            spill_io: spill::SpillIoHook::default(),
            spill_at: spill_at.to_path_buf(),
            remote,
            table,
        }
    }

    /// A store whose log lives in `remote` (named `name` in messages and `Db::path`),
    /// opened at `gen` (made with `table`, from [`StoreOptions::boot_table`]); `lock` is
    /// a local lock file (its reader table lists this machine's snapshots).
    #[cfg(any(test, feature = "internals", feature = "s3"))]
    pub fn with_storage(
        name: &Path,
        (gen, table): (Gen, Option<Arc<BootTable>>),
        lock: Arc<LockFile>,
        remote: Arc<dyn storage::Storage>,
        opts: StoreOptions,
    ) -> Store {
        let spill_at = lock.path().with_extension("");
        Store::assemble(name, &spill_at, (gen, table), lock, Some(remote), opts)
    }

    /// The storage of a store whose log is not a local file.
    pub fn storage(&self) -> Option<&Arc<dyn storage::Storage>> {
        self.remote.as_ref()
    }

    /// Check everything stored ([`fsck::check_path`] for a log file).
    pub fn fsck(&self) -> Result<fsck::FsckReport> {
        match &self.remote {
            Some(r) => r.fsck(self),
            None => fsck::check_path(&self.path),
        }
    }

    /// Build the index of `log`: from the checkpoint when it matches, then the tail,
    /// fully verified (data CRCs too). A torn tail is cut under the writer lock.
    fn load_gen(
        log: Log,
        lock: &LockFile,
        read_only: bool,
        (verify, table): (Verify, Option<Arc<BootTable>>),
    ) -> Result<Gen> {
        let mut ix = load_checkpoint(log.path(), &log).unwrap_or_else(Index::empty);
        let scan = log.scan(ix.end, ix.last_tid, true)?;
        for tx in &scan.txs {
            ix.apply(tx);
        }
        if let Some(err) = scan.stop {
            if log.valid_tx_after(scan.end, scan.file_len) {
                return Err(Error::corruption(
                    scan.end,
                    format!("committed transactions follow a bad one ({err}); run `wdbtool fsck`"),
                ));
            }
            if !read_only {
                // Under the writer lock no append is in flight, so what does not form a
                // valid transaction now is a torn tail.
                let _w = lock.writer()?;
                let again = log.scan(ix.end, ix.last_tid, true)?;
                for tx in &again.txs {
                    ix.apply(tx);
                }
                if again.stop.is_some() {
                    log.cut_tail(again.end)?;
                }
                lock.publish(log.header().uuid, ix.end)?;
            }
        }
        Ok(Gen::new(log, ix, verify, table))
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The verification mode and per-boot table a new generation is made with.
    fn verify_with(&self) -> (Verify, Option<Arc<BootTable>>) {
        (self.opts.verify, self.table.clone())
    }
    /// The lock file.
    pub fn lock_file(&self) -> &Arc<LockFile> {
        &self.lock
    }
    /// Is the store read-only?
    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    /// The current generation, without reading the log.
    pub fn current(&self) -> Arc<Gen> {
        self.gen.read().clone()
    }

    /// See other processes' commits: switch files if compaction replaced ours, then read
    /// the new tail of the log (headers only; an incomplete tail is an append in flight
    /// and is left alone). Returns the current generation.
    pub fn refresh(&self) -> Result<Arc<Gen>> {
        self.refresh_inner(false)
    }

    /// `locked`: the caller holds the writer lock, so every complete transaction in the
    /// file counts, published or not (a writer may have died between its write and its
    /// publish). Otherwise the log is read only up to the end published after the
    /// last acknowledged commit, so a commit is never seen before it is durable.
    fn refresh_inner(&self, locked: bool) -> Result<Arc<Gen>> {
        let _r = self.refresh_lock.lock();
        let gen = self.current();
        if let Some(r) = &self.remote {
            r.refresh(&gen)?;
            return Ok(gen);
        }
        if gen.log.path_switched() {
            let log = Log::open(&self.path, self.opts.read_only)?;
            let new = Arc::new(Store::load_gen(log, &self.lock, true, self.verify_with())?);
            *self.gen.write() = new.clone();
            return Ok(new);
        }
        let (end, last) = {
            let ix = gen.index.read();
            (ix.end, ix.last_tid)
        };
        let limit = match self.lock.published() {
            Some((uuid, pend)) if !locked && uuid == gen.log.header().uuid => pend,
            _ => u64::MAX,
        };
        if gen.log.len()?.min(limit) > end {
            let scan = gen.log.scan_to(end, last, false, limit)?;
            if !scan.txs.is_empty() {
                let mut ix = gen.index.write();
                // Another thread may have committed meanwhile; apply only what is new.
                for tx in &scan.txs {
                    if tx.header.tid > ix.last_tid && tx.off == ix.end {
                        ix.apply(tx);
                    }
                }
            }
        }
        Ok(gen)
    }

    /// Register a reader at `tid` in the lock file's reader table.
    pub fn register_reader(&self, tid: Tid) -> Result<Option<ReaderSlot>> {
        self.lock.register_reader(tid)
    }

    /// A new spill file beside the database, for a transaction's staged payloads that
    /// do not fit in RAM (or for compaction's).
    pub fn create_spill(&self) -> Result<Arc<spill::SpillFile>> {
        spill::SpillFile::create(&self.spill_at, self.spill_io.0.lock().as_ref())
    }

    /// Wrap the I/O of spill files created from now on (`None`: the plain file). For
    /// tests that inject faults into spill writes and reads.
    #[cfg(any(test, feature = "internals"))]
    pub fn set_spill_io(&self, f: Option<spill::SpillIoFactory>) {
        *self.spill_io.0.lock() = f;
    }

    /// Fail if poisoned.
    pub fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Persist the index of the current generation (atomically: temp file + rename).
    pub fn write_checkpoint(&self) -> Result<()> {
        if self.opts.read_only {
            return Ok(());
        }
        let gen = self.current();
        if let Some(r) = &self.remote {
            return r.checkpoint(&gen, true);
        }
        let (c, end) =
            gen.with_index(|ix| Ok((ix.to_checkpoint(gen.log.header().uuid)?, ix.end)))?;
        let bytes = c.encode()?;
        let dst = checkpoint_path(&self.path);
        write_atomically(&dst, &bytes)?;
        gen.index.write().checkpointed_end = end;
        Ok(())
    }

    /// Keys changed by commits in `(from, to]` (refreshing first).
    pub fn changed(&self, from: Tid, to: Tid) -> Result<Vec<Key>> {
        let gen = self.refresh()?;
        if from < gen.base_tid() && from < to {
            // Compaction dropped some of the commits in the range: report every key.
            return gen
                .with_index(|ix| Ok(ix.all_versions()?.into_iter().map(|(k, _)| k).collect()));
        }
        let by_tid = gen.with_index(|ix| ix.keys_by_tid(from, to))?;
        let mut out: Vec<Key> = by_tid.into_values().flatten().collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The commits, oldest first.
    pub fn history(&self) -> Result<Vec<Commit>> {
        let gen = self.refresh()?;
        let (txs, by_tid) =
            gen.with_index(|ix| Ok((ix.all_txs()?, ix.keys_by_tid(Tid::ZERO, ix.last_tid)?)))?;
        Ok(txs
            .iter()
            .map(|t| {
                let keys = by_tid.get(&t.tid).map(|v| v.as_slice()).unwrap_or(&[]);
                let mut arrays: Vec<u64> = keys.iter().filter_map(|k| k.array()).collect();
                arrays.sort_unstable();
                arrays.dedup();
                Commit {
                    tid: t.tid,
                    wall_ns: t.wall_ns,
                    bytes: t.len,
                    arrays,
                    names_changed: keys.contains(&Key::Names),
                }
            })
            .collect())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.opts.read_only || self.poisoned.lock().is_some() {
            return;
        }
        let gen = self.current();
        if let Some(r) = &self.remote {
            if let Err(e) = r.checkpoint(&gen, false) {
                tracing::warn!(error = %e, "could not write the index checkpoint on close");
            }
            return;
        }
        let stale = {
            let ix = gen.index.read();
            ix.end != ix.checkpointed_end
        };
        if stale {
            if let Err(e) = self.write_checkpoint() {
                tracing::warn!(error = %e, "could not write the index checkpoint on close");
            }
        }
    }
}

/// Write `bytes` to `dst` durably and atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomically(dst: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = dst.as_os_str().to_owned();
    // Unique per process and call: two handles in one process may write at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp.push(format!(".tmp.{}.{seq}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let f = std::fs::File::create(&tmp)?;
        std::os::unix::fs::FileExt::write_all_at(&f, bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dst)?;
    crate::log::sync_dir(dst)?;
    Ok(())
}

/// Is this META version a tombstone?
pub fn is_tombstone(v: &Version) -> bool {
    v.flags & FLAG_DELETED != 0
}
