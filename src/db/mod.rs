//! The database: `Db`, `Transaction`, `Snapshot`, the catalog of named arrays and
//! `Options`. Block-level API; the typed array API is joined on top of it.
//!
//! A `Transaction` reads at its snapshot tid (through the `Gen` it started on) and
//! stages writes in memory, already encoded (hole/trim/zstd), so that commit holds the
//! writer lock only to check conflicts, append and sync. Dropping it aborts.
//!
//! Files: `mod.rs` `Db` and `Options`; `handles.rs` the public `Transaction` and
//! `Snapshot`; `read.rs` what both read through (`ReadAt`: a generation at a tid) and
//! the snapshot's state; `tx.rs` the transaction's state (staging, small writes as
//! deltas, commit); `staging.rs` staged payloads; `arrays.rs` the `BigFile` of one array
//! and the typed array handles; `owned.rs` arrays that own their transaction;
//! `catalog.rs` the catalog of named arrays; `url.rs` database URLs.

mod arrays;
pub mod catalog;
mod handles;
pub mod owned;
mod read;
mod staging;
mod tx;
mod url;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

pub use crate::array::Order;
internal! { pub use crate::format::Key; }
use crate::log::lock::ReaderSlot;
pub use crate::store::compact::CompactReport;
pub use crate::store::fsck::{FsckReport, Problem};
use crate::store::{is_tombstone, Gen, Store, StoreOptions};
use crate::verify::{TablePlace, Verify};
use crate::virtmem::{VirtMem, VmStats};
use crate::{Error, Result, Tid};
pub use arrays::{Array, ArrayMut};
pub use catalog::{ArrayInfo, ArraySpec, Catalog, Compression};
pub use handles::{ArrayOptions, Snapshot, Transaction};
use read::ReadAt;
pub(crate) use read::SnapInner;
pub use staging::{ram_share, MAX_STAGED_RAM};
pub(crate) use tx::TxInner;
use tx::TxState;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `commit` returns after fdatasync: survives power loss.
    #[default]
    Full,
    /// `commit` returns after the write: survives a process crash, not power loss.
    /// For bulk loads.
    Buffered,
}

/// Options of [`Db::open_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes of RAM for loaded and dirty blocks (used by the memory layer).
    pub ram_budget: u64,
    /// Open read-only: no transactions, no tail recovery writes.
    pub read_only: bool,
    /// Commit durability.
    pub durability: Durability,
    /// zstd level used when an array asks for `Compression::Zstd { level: 0 }`.
    pub zstd_level: i32,
    /// Default block size for new arrays.
    pub block_size: u32,
    /// When a transaction's dirty blocks outgrow `ram_budget`, spill them on a
    /// background thread ahead of need (write-behind), so that the writing thread does
    /// not wait for the spill writes. Off: each allocation that finds no room spills by
    /// itself.
    pub write_behind: bool,
    /// Object-store databases: root of the local cache of fetched objects (None: a
    /// directory under the user's cache directory, named after the URL).
    pub cache_dir: Option<PathBuf>,
    /// Object-store databases: bytes the local cache may hold.
    pub cache_size: u64,
    /// Object-store databases: how old a data object that no commit names (its writer
    /// died before committing) must be before compaction deletes it. A writer gives up
    /// a commit that takes longer than half of it, so that a slow live writer is never
    /// robbed. Default: one hour.
    pub gc_grace: std::time::Duration,
    /// When a stored block's CRC is checked before its bytes are shown (see
    /// [`Verify`]).
    pub verify: Verify,
    /// Map raw blocks straight from the file into views (zero-copy reads); `false`
    /// copies every block into RAM pages instead (for comparing the two paths).
    pub zero_copy: bool,
    /// Map the blocks ahead of a sequential scan on a background thread; `false` lets
    /// every block fault on its own (for comparing).
    pub readahead: bool,
    /// Where the table of blocks checked since boot lives, and which boot this is
    /// (`Verify::OncePerBoot`). Tests point it elsewhere to simulate a reboot or a
    /// damaged table.
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub verify_table: TablePlace,
    #[cfg(not(feature = "internals"))]
    pub(crate) verify_table: TablePlace,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ram_budget: 1 << 30,
            read_only: false,
            durability: Durability::Full,
            zstd_level: 3,
            block_size: 2 << 20,
            write_behind: true,
            cache_dir: None,
            cache_size: 4 << 30,
            gc_grace: std::time::Duration::from_secs(3600),
            verify: Verify::default(),
            zero_copy: true,
            readahead: true,
            verify_table: TablePlace::default(),
        }
    }
}

impl Options {
    /// Set `ram_budget`.
    pub fn ram_budget(mut self, v: u64) -> Self {
        self.ram_budget = v;
        self
    }
    /// Set `read_only`.
    pub fn read_only(mut self, v: bool) -> Self {
        self.read_only = v;
        self
    }
    /// Set `durability`.
    pub fn durability(mut self, v: Durability) -> Self {
        self.durability = v;
        self
    }
    /// Set `zstd_level`.
    pub fn zstd_level(mut self, v: i32) -> Self {
        self.zstd_level = v;
        self
    }
    /// Set `block_size`.
    pub fn block_size(mut self, v: u32) -> Self {
        self.block_size = v;
        self
    }
    /// Set `write_behind`.
    pub fn write_behind(mut self, v: bool) -> Self {
        self.write_behind = v;
        self
    }
    /// Set `cache_dir` (the local cache of an object-store database).
    pub fn cache_dir(mut self, v: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(v.into());
        self
    }
    /// Set `cache_size` (bytes the local cache of an object-store database may hold).
    pub fn cache_size(mut self, v: u64) -> Self {
        self.cache_size = v;
        self
    }
    /// Set `gc_grace` (object-store databases).
    pub fn gc_grace(mut self, v: std::time::Duration) -> Self {
        self.gc_grace = v;
        self
    }
    /// Set `verify`.
    pub fn verify(mut self, v: Verify) -> Self {
        self.verify = v;
        self
    }
    /// Set `zero_copy`.
    pub fn zero_copy(mut self, v: bool) -> Self {
        self.zero_copy = v;
        self
    }
    /// Set `readahead`.
    pub fn readahead(mut self, v: bool) -> Self {
        self.readahead = v;
        self
    }
    /// Set `verify_table`.
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub fn verify_table(mut self, v: TablePlace) -> Self {
        self.verify_table = v;
        self
    }
}

/// One commit in [`Db::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its tid.
    pub tid: Tid,
    /// When it was committed.
    pub time: SystemTime,
    /// Bytes it takes in the log.
    pub bytes: u64,
    /// Arrays it touched (name at the head, or `#id` if deleted since).
    pub arrays: Vec<String>,
    /// Did it create, delete or rename arrays?
    pub names_changed: bool,
}

/// What changed between two tids ([`Db::changed_blocks`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// (array id, block) written.
    pub blocks: Vec<(u64, u64)>,
    /// Arrays whose catalog entry changed (created, resized, renamed, deleted).
    pub arrays: Vec<u64>,
    /// Whether the set of names changed.
    pub names_changed: bool,
}

/// [`Db::info`].
#[derive(Debug, Clone)]
pub struct DbInfo {
    /// Database path.
    pub path: PathBuf,
    /// Format version of the file.
    pub format_version: u32,
    /// File size in bytes.
    pub file_size: u64,
    /// First tid in the file (0 if none).
    pub first_tid: Tid,
    /// Last committed tid.
    pub last_tid: Tid,
    /// Snapshots below this tid were dropped by compaction.
    pub base_tid: Tid,
    /// Number of transactions in the file.
    pub transactions: u64,
    /// Arrays at the head.
    pub arrays: Vec<ArrayInfo>,
    /// Live snapshots: (pid, tid).
    pub live_readers: Vec<(u64, Tid)>,
}

/// Storage statistics of one array at a snapshot ([`Snapshot::array_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrayStats {
    /// Logical bytes (shape × element size).
    pub logical_bytes: u64,
    /// Bytes stored for the visible block versions.
    pub stored_bytes: u64,
    /// Visible blocks stored raw.
    pub raw_blocks: u64,
    /// Visible blocks stored zstd-compressed.
    pub zstd_blocks: u64,
    /// Visible blocks that are holes (written as zeros).
    pub hole_blocks: u64,
    /// Visible blocks stored as a delta on an earlier version (`stored_bytes` counts
    /// the delta record only).
    pub delta_blocks: u64,
}

/// Where a transaction's staged blocks are ([`Transaction::staged_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedBytes {
    /// Bytes of staged payloads held in memory: at most [`ram_share`] of the budget
    /// (plus the one being staged by each thread).
    pub in_memory: u64,
    /// Bytes written to the transaction's spill file so far (the rest).
    pub spill_file: u64,
}

/// Options of [`Db::compact_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CompactOptions {
    /// Also keep every snapshot at or after this tid.
    pub keep_history: Option<Tid>,
}

#[derive(Debug)]
struct DbInner {
    store: Store,
    opts: Options,
    /// Decoded catalog entries by (array id, version tid).
    meta_cache: Mutex<HashMap<(u64, Tid), Arc<ArrayInfo>>>,
    /// The RAM pages of every array handle of this `Db`, under `opts.ram_budget`;
    /// created on first use, so tools that only read blocks never make one.
    vm: std::sync::OnceLock<Arc<VirtMem>>,
}

/// An open database. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

fn tx_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

impl Db {
    /// Open the database at `path`, creating it if missing, with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, Options::default())
    }

    /// Open with options.
    pub fn open_with(path: impl AsRef<Path>, o: Options) -> Result<Db> {
        let so = StoreOptions {
            read_only: o.read_only,
            sync: o.durability == Durability::Full,
            verify: o.verify,
            table: o.verify_table.clone(),
            ..StoreOptions::default()
        };
        let store = Store::open(path.as_ref(), so)?;
        Ok(Db::from_store(store, o))
    }

    internal! {
        /// Wrap an already opened store (tests open stores over fault-injecting I/O).
        pub fn from_store(store: Store, opts: Options) -> Db {
            Db {
                inner: Arc::new(DbInner {
                    store,
                    opts,
                    meta_cache: Mutex::new(HashMap::new()),
                    vm: std::sync::OnceLock::new(),
                }),
            }
        }
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        self.inner.store.path()
    }

    internal! {
        /// The underlying store.
        pub fn store(&self) -> &Store {
            &self.inner.store
        }
    }

    /// The virtual memory manager of this database's array handles.
    pub(crate) fn vm(&self) -> Result<Arc<VirtMem>> {
        if let Some(vm) = self.inner.vm.get() {
            return Ok(vm.clone());
        }
        let vm = VirtMem::new(self.inner.opts.ram_budget)?;
        // A transaction bigger than the budget spills on another core.
        vm.set_write_behind(self.inner.opts.write_behind);
        vm.set_readahead(self.inner.opts.readahead);
        Ok(self.inner.vm.get_or_init(|| vm).clone())
    }

    /// RAM used by array data: budget, bytes resident, bytes dirty, loads, evictions,
    /// and what transactions bigger than the budget spilled (`spilled` bytes now in
    /// spill files or staged, `spill_writes`).
    pub fn memory_stats(&self) -> Result<VmStats> {
        Ok(self.vm()?.stats())
    }

    fn catalog_at(&self, gen: &Gen, tid: Tid) -> Result<Catalog> {
        let metas = gen.with_index(|ix| ix.metas_at(tid))?;
        let mut c = Catalog::default();
        for (a, v) in metas {
            if is_tombstone(&v) {
                continue;
            }
            if let Some(i) = self.inner.meta_cache.lock().get(&(a, v.tid)) {
                c.insert(i.clone());
                continue;
            }
            let mut buf = vec![
                0u8;
                usize::try_from(v.logical_len)
                    .map_err(|_| Error::corruption(v.rec_off, "meta length"))?
            ];
            gen.read_version(&v, &mut buf)?;
            let info = Arc::new(ArrayInfo::decode(&buf, v.payload_off())?);
            if info.id != a {
                return Err(Error::corruption(
                    v.payload_off(),
                    format!("catalog entry of array {a} names id {}", info.id),
                ));
            }
            self.inner
                .meta_cache
                .lock()
                .insert((a, v.tid), info.clone());
            c.insert(info);
        }
        Ok(c)
    }

    fn open_view(&self, at: Option<Tid>) -> Result<(Arc<Gen>, Tid, Option<ReaderSlot>, Catalog)> {
        let gen = self.inner.store.refresh()?;
        let last = gen.last_tid();
        let tid = match at {
            None => last,
            Some(t) if t > last => {
                return Err(Error::SnapshotGone {
                    tid: t,
                    why: format!("the last commit is {last}"),
                })
            }
            Some(t) if t < gen.base_tid() => {
                return Err(Error::SnapshotGone {
                    tid: t,
                    why: format!("compaction dropped snapshots before {}", gen.base_tid()),
                })
            }
            Some(t) => t,
        };
        let slot = self.inner.store.register_reader(tid)?;
        let cat = self.catalog_at(&gen, tid)?;
        Ok((gen, tid, slot, cat))
    }

    /// Begin a read-write transaction at the latest commit.
    pub fn begin(&self) -> Result<Transaction> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly("the database was opened read-only".into()));
        }
        self.inner.store.check_poisoned()?;
        let (gen, tid, slot, cat) = self.open_view(None)?;
        let next_id = gen.index.read().max_array + 1;
        Ok(Transaction::new(TxInner {
            at: ReadAt {
                db: self.clone(),
                gen,
                tid,
                _slot: slot,
            },
            state: Mutex::new(TxState {
                catalog: cat,
                next_id,
                ..TxState::default()
            }),
            spill: Mutex::new(None),
        }))
    }

    /// A read-only snapshot of the latest commit.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let (gen, tid, slot, catalog) = self.open_view(None)?;
        Ok(Snapshot::new(SnapInner {
            at: ReadAt {
                db: self.clone(),
                gen,
                tid,
                _slot: slot,
            },
            catalog,
        }))
    }

    /// A read-only snapshot of commit `tid` (any tid compaction has not dropped).
    pub fn snapshot_at(&self, tid: Tid) -> Result<Snapshot> {
        let (gen, tid, slot, catalog) = self.open_view(Some(tid))?;
        Ok(Snapshot::new(SnapInner {
            at: ReadAt {
                db: self.clone(),
                gen,
                tid,
                _slot: slot,
            },
            catalog,
        }))
    }

    /// The newest commit (reading other processes' new commits first).
    pub fn last_tid(&self) -> Result<Tid> {
        Ok(self.inner.store.refresh()?.last_tid())
    }

    /// Every commit in the file, oldest first, with time, size and arrays touched.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let commits = self.inner.store.history()?;
        let gen = self.inner.store.current();
        let cat = self.catalog_at(&gen, gen.last_tid())?;
        Ok(commits
            .into_iter()
            .map(|c| HistoryEntry {
                tid: c.tid,
                time: tx_time(c.wall_ns),
                bytes: c.bytes,
                arrays: c
                    .arrays
                    .iter()
                    .map(|a| {
                        cat.by_id
                            .get(a)
                            .map(|i| i.name.clone())
                            .unwrap_or_else(|| format!("#{a}"))
                    })
                    .collect(),
                names_changed: c.names_changed,
            })
            .collect())
    }

    /// Blocks and catalog entries written by commits in `(from, to]`.
    pub fn changed_blocks(&self, from: Tid, to: Tid) -> Result<ChangeSet> {
        let mut cs = ChangeSet::default();
        let mut arrays = BTreeSet::new();
        for k in self.inner.store.changed(from, to)? {
            match k {
                Key::Block { array, blk } => cs.blocks.push((array, blk)),
                Key::Meta { array } => {
                    arrays.insert(array);
                }
                Key::Names => cs.names_changed = true,
            }
        }
        cs.arrays = arrays.into_iter().collect();
        Ok(cs)
    }

    /// Check every byte of the database file.
    pub fn fsck(&self) -> Result<FsckReport> {
        self.inner.store.fsck()
    }

    /// Check the database file at `path` without opening it as a database (works on
    /// files too damaged to open).
    pub fn fsck_path(path: impl AsRef<Path>) -> Result<FsckReport> {
        crate::store::fsck::check_path(path.as_ref())
    }

    /// Check `path` and cut a torn tail if that is its only kind of problem; returns
    /// the report before the repair and (offset, side file) of what was cut.
    pub fn repair_path(path: impl AsRef<Path>) -> Result<(FsckReport, Option<(u64, PathBuf)>)> {
        let path = path.as_ref();
        let lock = crate::log::lock::LockFile::open(path, false)?;
        let _w = lock.writer()?;
        let rep = crate::store::fsck::check_path_unlocked(path)?;
        let Some(at) = rep.torn_tail else {
            return Ok((rep, None));
        };
        let log = crate::log::Log::open(path, false)?;
        let side = log.cut_tail(at)?;
        Ok((rep, side.map(|s| (at, s))))
    }

    /// Compact the file, keeping what live readers need.
    pub fn compact(&self) -> Result<CompactReport> {
        self.compact_with(CompactOptions::default(), &mut |_, _| {})
    }

    /// Compact with options and a progress callback `(done, total)` in versions.
    pub fn compact_with(
        &self,
        o: CompactOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport> {
        self.inner.store.compact(o.keep_history, progress)
    }

    /// Facts about the database.
    pub fn info(&self) -> Result<DbInfo> {
        let gen = self.inner.store.refresh()?;
        let (first, n, last) = gen.with_index(|ix| {
            Ok((
                ix.first_tid()?.unwrap_or(Tid::ZERO),
                ix.tx_count(),
                ix.last_tid,
            ))
        })?;
        let cat = self.catalog_at(&gen, last)?;
        Ok(DbInfo {
            path: self.path().to_path_buf(),
            format_version: gen.log.header().version,
            file_size: gen.log.len()?,
            first_tid: first,
            last_tid: last,
            base_tid: gen.base_tid(),
            transactions: n,
            arrays: cat.by_name.values().map(|i| (**i).clone()).collect(),
            live_readers: self.inner.store.lock_file().live_readers()?,
        })
    }
}
