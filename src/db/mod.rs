//! The database: `Db`, `Transaction`, `Snapshot`, the catalog of named arrays and
//! `Options`. Block-level API; the typed array API is joined on top of it.
//!
//! A `Transaction` reads at its snapshot tid (through the `Gen` it started on) and
//! stages writes in memory, already encoded (hole/trim/zstd), so that commit holds the
//! writer lock only to check conflicts, append and sync. Dropping it aborts.

mod arrays;
pub mod catalog;
mod handles;
pub mod owned;
mod staging;
mod url;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

pub use crate::array::Order;
internal! { pub use crate::format::Key; }
use crate::format::{Encoding, FLAG_DELETED};
use crate::log::lock::ReaderSlot;
pub use crate::store::compact::CompactReport;
use crate::store::encode::{self, Encoded};
pub use crate::store::fsck::{FsckReport, Problem};
use crate::store::spill::SpillFile;
use crate::store::{is_tombstone, CommitRequest, Gen, Store, StoreOptions, Write};
use crate::verify::{TablePlace, Verify};
use crate::virtmem::{VirtMem, VmStats};
use crate::{Error, Result, Tid};
pub use arrays::{Array, ArrayMut};
pub use catalog::{ArrayInfo, ArraySpec, Catalog, Compression};
pub use handles::{ArrayOptions, Snapshot, Transaction};
pub use staging::{ram_share, MAX_STAGED_RAM};

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
            db: self.clone(),
            gen,
            tid,
            _slot: slot,
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
            db: self.clone(),
            gen,
            tid,
            _slot: slot,
            catalog,
        }))
    }

    /// A read-only snapshot of commit `tid` (any tid compaction has not dropped).
    pub fn snapshot_at(&self, tid: Tid) -> Result<Snapshot> {
        let (gen, tid, slot, catalog) = self.open_view(Some(tid))?;
        Ok(Snapshot::new(SnapInner {
            db: self.clone(),
            gen,
            tid,
            _slot: slot,
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

#[derive(Debug, Default)]
struct TxState {
    /// The catalog as this transaction sees it (snapshot + own changes).
    catalog: Catalog,
    /// Set when a create/delete/rename happened.
    names_changed: bool,
    /// Arrays whose catalog entry changed (value: Some = new entry, None = deleted).
    meta_changed: BTreeMap<u64, Option<Arc<ArrayInfo>>>,
    /// Staged blocks (payloads in memory up to the transaction's share of RAM, then in
    /// its spill file).
    blocks: staging::Staging,
    /// Next array id to hand out.
    next_id: u64,
}

/// The state of a transaction, shared with the files of its arrays.
#[derive(Debug)]
pub(crate) struct TxInner {
    db: Db,
    gen: Arc<Gen>,
    tid: Tid,
    _slot: Option<ReaderSlot>,
    state: Mutex<TxState>,
    /// The spill file of staged payloads past the transaction's share of RAM, created
    /// on first use.
    spill: Mutex<Option<Arc<SpillFile>>>,
}

/// Deltas of fewer pages than this, built from small writes, are not compressed.
const SMALL_DELTA_PAGES: usize = 16;

fn check_buf(info: &ArrayInfo, len: usize) -> Result<()> {
    if u64::try_from(len).ok() != Some(u64::from(info.block_size)) {
        return Err(Error::InvalidArgument(format!(
            "block buffer of {len} bytes for array {:?} whose block size is {}",
            info.name, info.block_size
        )));
    }
    Ok(())
}

fn name_key(cat: &Catalog, k: &Key) -> String {
    let n = |a: u64| {
        cat.by_id
            .get(&a)
            .map(|i| format!("array {:?}", i.name))
            .unwrap_or_else(|| format!("array #{a}"))
    };
    match *k {
        Key::Block { array, blk } => format!("{} block {blk}", n(array)),
        Key::Meta { array } => format!("{} metadata", n(array)),
        Key::Names => "the set of array names".into(),
    }
}

impl TxInner {
    /// The snapshot tid this transaction reads at.
    pub fn snapshot_tid(&self) -> Tid {
        self.tid
    }

    /// Create an array (all zeros); fails with `AlreadyExists` if the name is taken.
    /// A `block_size` of 0 takes `Options::block_size`; `Compression::Zstd { level: 0 }`
    /// takes `Options::zstd_level`.
    pub fn create_array_raw(&self, spec: ArraySpec) -> Result<ArrayInfo> {
        let mut st = self.state.lock();
        if st.catalog.by_name.contains_key(&spec.name) {
            return Err(Error::AlreadyExists(format!("array {:?}", spec.name)));
        }
        let mut spec = spec;
        if spec.block_size == 0 {
            spec.block_size = self.db.inner.opts.block_size;
        }
        if let Compression::Zstd { level: 0 } = spec.compression {
            spec.compression = Compression::Zstd {
                level: self.db.inner.opts.zstd_level,
            };
        }
        let id = st.next_id;
        let info = ArrayInfo::from_spec(id, spec);
        catalog::validate(&info)?;
        info.encode()?;
        st.next_id += 1;
        let info = Arc::new(info);
        st.catalog.insert(info.clone());
        st.meta_changed.insert(id, Some(info.clone()));
        st.names_changed = true;
        Ok((*info).clone())
    }

    /// The catalog entry of array `name`.
    pub fn array_info(&self, name: &str) -> Result<ArrayInfo> {
        Ok((*self.state.lock().catalog.get(name)?).clone())
    }

    /// The catalog entry of array `id`.
    pub fn array_info_by_id(&self, id: u64) -> Result<ArrayInfo> {
        Ok((*self.state.lock().catalog.get_id(id)?).clone())
    }

    /// Change an array's shape (a metadata change: conflicts with another transaction
    /// that changes the same array's metadata). Blocks past the new end are not erased
    /// here; the array layer zeroes what it exposes again.
    pub fn set_shape(&self, name: &str, shape: &[u64]) -> Result<()> {
        let mut st = self.state.lock();
        let old = st.catalog.get(name)?;
        let mut info = (*old).clone();
        info.shape = shape.to_vec();
        catalog::validate(&info)?;
        let info = Arc::new(info);
        st.catalog.insert(info.clone());
        st.meta_changed.insert(info.id, Some(info));
        Ok(())
    }

    /// Delete an array.
    pub fn delete_array(&self, name: &str) -> Result<()> {
        let mut st = self.state.lock();
        let info = st.catalog.get(name)?;
        st.catalog.remove(info.id);
        st.meta_changed.insert(info.id, None);
        st.blocks.remove_array(info.id);
        st.names_changed = true;
        Ok(())
    }

    /// Rename an array.
    pub fn rename_array(&self, from: &str, to: &str) -> Result<()> {
        catalog::validate_name(to)?;
        let mut st = self.state.lock();
        if st.catalog.by_name.contains_key(to) {
            return Err(Error::AlreadyExists(format!("array {to:?}")));
        }
        let mut info = (*st.catalog.get(from)?).clone();
        info.name = to.to_string();
        let info = Arc::new(info);
        st.catalog.insert(info.clone());
        st.meta_changed.insert(info.id, Some(info));
        st.names_changed = true;
        Ok(())
    }

    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        Ok(self.state.lock().catalog.by_name.keys().cloned().collect())
    }

    /// Read block `blk` of array `array_id` into `buf` (len = the array's block size):
    /// this transaction's own write if any, else the version at its snapshot.
    pub fn read_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        let staged = {
            let st = self.state.lock();
            let info = st.catalog.get_id(array_id)?;
            check_buf(&info, buf.len())?;
            match st.blocks.get(&(array_id, blk)) {
                Some(e) if e.encoding.is_delta() => e.clone(),
                Some(e) => return staging::read_staged(e, buf),
                None => {
                    drop(st);
                    self.gen.load(
                        &Key::Block {
                            array: array_id,
                            blk,
                        },
                        self.tid,
                        buf,
                    )?;
                    return Ok(());
                }
            }
        };
        self.read_staged_delta(array_id, blk, &staged, buf)
    }

    /// A staged delta applies to the block's version at the snapshot.
    fn read_staged_delta(
        &self,
        array_id: u64,
        blk: u64,
        e: &Encoded,
        buf: &mut [u8],
    ) -> Result<()> {
        self.gen.load(
            &Key::Block {
                array: array_id,
                blk,
            },
            self.tid,
            buf,
        )?;
        let stored = e.payload.to_vec(e.data_crc)?;
        let payload = if e.encoding == Encoding::DeltaZstd {
            let mut out = vec![
                0u8;
                usize::try_from(e.logical_len)
                    .map_err(|_| Error::OutOfRange("length".into()))?
            ];
            encode::decompress_into(&stored, &mut out, 0)?;
            out
        } else {
            stored.into_owned()
        };
        let dp = crate::format::DeltaPayload::decode(&payload, 0)?;
        // `load` zero-filled the block past the base's value.
        let all = buf.len();
        dp.apply(buf, all, 0)
    }

    /// Stage block `blk` of array `array_id` (len = the array's block size) for commit.
    /// It is encoded now, outside the commit lock: as a delta on the block's version at
    /// the snapshot when few of its pages changed ([`TxInner::encode_as_delta`]), else
    /// as a full block (hole / trimmed / zstd).
    pub fn write_block(&self, array_id: u64, blk: u64, data: &[u8]) -> Result<()> {
        let info = self.state.lock().catalog.get_id(array_id)?;
        check_buf(&info, data.len())?;
        let level = match info.compression {
            Compression::None => None,
            Compression::Zstd { level } => Some(level),
        };
        let e = match self.encode_as_delta(array_id, blk, data, level) {
            Ok(Some(d)) => d,
            Ok(None) => self.encode_full(&info, data, level)?,
            // A full block does not need the old version: a damaged or unreadable base
            // costs this block its delta, not the commit.
            Err(e) => {
                tracing::warn!(error = %e, array_id, blk, "cannot read the block's previous version; storing it whole");
                self.encode_full(&info, data, level)?
            }
        };
        self.stage(&info, blk, e)
    }

    /// `encode_block`, a raw payload written straight from `data` to the spill file
    /// when it would not stay in memory ([`TxInner::stage`]).
    fn encode_full(&self, info: &ArrayInfo, data: &[u8], level: Option<i32>) -> Result<Encoded> {
        let share = ram_share(self.db.inner.opts.ram_budget);
        encode::encode_block_with(data, level, |body| {
            if !self.state.lock().blocks.over(body.len(), share) {
                return Ok(encode::Payload::Mem(body.to_vec()));
            }
            let bs = usize::try_from(info.block_size)
                .map_err(|_| Error::OutOfRange("block size".into()))?;
            let slot = self
                .spill_file()?
                .write(body, crate::store::compact::spill_slot_size(bs))?;
            Ok(encode::Payload::Spilled(slot))
        })
    }

    /// Stage `e` as block `blk` of array `info`: in memory while the transaction's
    /// staged payloads stay within its share of RAM ([`ram_share`]), else first written
    /// to its spill file (without the state lock). An error (the spill file cannot be
    /// created or written) stages nothing; the transaction stays usable.
    fn stage(&self, info: &ArrayInfo, blk: u64, mut e: Encoded) -> Result<()> {
        let share = ram_share(self.db.inner.opts.ram_budget);
        let len = e.payload.len();
        if len > 0 && self.state.lock().blocks.over(len, share) {
            let file = self.spill_file()?;
            let bs = usize::try_from(info.block_size)
                .map_err(|_| Error::OutOfRange("block size".into()))?;
            staging::spill(&file, &mut e, bs)?;
        }
        if matches!(e.payload, encode::Payload::Spilled(_)) && !e.page_crcs.is_empty() {
            staging::spill_table(&self.spill_file()?, &mut e)?;
        }
        let mut st = self.state.lock();
        // The array may have been deleted by another thread meanwhile.
        st.catalog.get_id(info.id)?;
        st.blocks.insert((info.id, blk), e);
        Ok(())
    }

    /// The transaction's spill file, created on first use.
    fn spill_file(&self) -> Result<Arc<SpillFile>> {
        let mut g = self.spill.lock();
        if let Some(f) = &*g {
            return Ok(f.clone());
        }
        let f = self.db.inner.store.create_spill()?;
        *g = Some(f.clone());
        Ok(f)
    }

    /// Bytes of staged payloads in memory, and bytes written to the spill file so far.
    pub(crate) fn staged_bytes(&self) -> StagedBytes {
        StagedBytes {
            in_memory: self.state.lock().blocks.ram(),
            spill_file: self.spill.lock().as_ref().map_or(0, |f| f.bytes_written()),
        }
    }

    /// Small writes: 4 KiB pages `pages` of block `blk` as this transaction sees it
    /// (its own staged write if any, else the version at its snapshot), reading only
    /// those pages where the version allows it ([`Gen::read_pages`]); CRC-checked.
    pub(crate) fn read_pages(
        &self,
        array_id: u64,
        blk: u64,
        pages: &[u32],
        out: &mut [u8],
    ) -> Result<()> {
        let (bs, staged) = {
            let st = self.state.lock();
            let info = st.catalog.get_id(array_id)?;
            (
                usize::try_from(info.block_size)
                    .map_err(|_| Error::OutOfRange("block size".into()))?,
                st.blocks.contains_key(&(array_id, blk)),
            )
        };
        let key = Key::Block {
            array: array_id,
            blk,
        };
        let chain = if staged {
            None
        } else {
            self.gen.chain_at(&key, self.tid)?
        };
        match chain {
            Some(chain) => self.gen.read_pages(&chain, pages, out),
            None if !staged => {
                // Never written: zeros.
                out.fill(0);
                Ok(())
            }
            None => crate::bigfile::with_block_scratch(bs, |buf| {
                self.read_block(array_id, blk, buf)?;
                crate::bigfile::copy_pages_out(buf, pages, out)
            }),
        }
    }

    /// Small writes: stage block `blk` of array `array_id` as its version at the
    /// snapshot with `pages` (index, 4 KiB; ascending) replaced — as a delta record
    /// built from the pages alone, without reading or comparing the block, when the
    /// chain bounds allow one more delta of that many pages (`MAX_DELTA_CHAIN`,
    /// `MAX_DELTA_PAGES_DIVISOR`). Otherwise (no version at the snapshot, staged here
    /// already, a format version 1 file, bounds exceeded) the block is resolved,
    /// patched and staged whole through [`TxInner::write_block`].
    pub(crate) fn write_pages(
        &self,
        array_id: u64,
        blk: u64,
        pages: &[(u32, &[u8])],
    ) -> Result<()> {
        use crate::format::{DELTA_FORMAT_VERSION, MAX_DELTA_CHAIN, MAX_DELTA_PAGES_DIVISOR, PAGE};
        let (info, staged) = {
            let st = self.state.lock();
            (
                st.catalog.get_id(array_id)?,
                st.blocks.contains_key(&(array_id, blk)),
            )
        };
        let bs =
            usize::try_from(info.block_size).map_err(|_| Error::OutOfRange("block size".into()))?;
        let mut prev: Option<u32> = None;
        for &(i, p) in pages {
            let end = (u64::from(i) + 1) * PAGE as u64;
            if p.len() != PAGE || end > u64::from(info.block_size) || prev.is_some_and(|q| q >= i) {
                return Err(Error::InvalidArgument(format!(
                    "page {i} ({} bytes) of a block of {bs} bytes, or pages not ascending",
                    p.len()
                )));
            }
            prev = Some(i);
        }
        let level = match info.compression {
            Compression::None => None,
            Compression::Zstd { level } => Some(level),
        };
        let key = Key::Block {
            array: array_id,
            blk,
        };
        let chain = if staged || self.gen.log.header().version < DELTA_FORMAT_VERSION {
            None
        } else {
            self.gen.chain_at(&key, self.tid)?
        };
        let delta = match chain {
            Some(chain) if chain.len() <= MAX_DELTA_CHAIN && !pages.is_empty() => {
                let carried: u64 = chain.iter().map(crate::store::delta_pages).sum();
                let budget = (bs as u64 / PAGE as u64 / MAX_DELTA_PAGES_DIVISOR).saturating_sub(carried);
                if pages.len() as u64 <= budget {
                    let cur = crate::format::align_up(self.gen.chain_len(&chain)?, PAGE as u64);
                    let last = pages.last().map_or(0, |&(i, _)| (u64::from(i) + 1) * PAGE as u64);
                    let result_len = u32::try_from(cur.max(last))
                        .map_err(|_| Error::OutOfRange("block length".into()))?;
                    // A delta of a few pages is stored raw: compressing it costs more
                    // time than the few KiB it could save.
                    let level = level.filter(|_| pages.len() >= SMALL_DELTA_PAGES);
                    Some(encode::encode_delta_pages(result_len, pages, level)?)
                } else {
                    None
                }
            }
            _ => None,
        };
        let Some(e) = delta else {
            return crate::bigfile::with_block_scratch(bs, |buf| {
                self.read_block(array_id, blk, buf)?;
                crate::bigfile::apply_pages(buf, pages)?;
                self.write_block(array_id, blk, buf)
            });
        };
        let st = self.state.lock();
        // The array may have been deleted by another thread meanwhile.
        st.catalog.get_id(array_id)?;
        if st.blocks.contains_key(&(array_id, blk)) {
            // Staged by another thread meanwhile: the delta's base is no longer the
            // block as this transaction sees it.
            drop(st);
            return crate::bigfile::with_block_scratch(bs, |buf| {
                self.read_block(array_id, blk, buf)?;
                crate::bigfile::apply_pages(buf, pages)?;
                self.write_block(array_id, blk, buf)
            });
        }
        drop(st);
        self.stage(&info, blk, e)
    }

    /// The commit-time comparison: `data` as a delta on the block's version at the
    /// snapshot, if that version exists, the chain bounds allow one more delta
    /// (`MAX_DELTA_CHAIN`, `MAX_DELTA_PAGES_DIVISOR`) and at most the remaining page
    /// budget differs. Bulk writes stay cheap: a block new since the snapshot has no
    /// base and is not compared; a full base whose value is shorter than the new data
    /// is first checked without any read (pages past its value that now hold data all
    /// differ), and a raw one by sampling 8 of its pages; the comparison stops at the
    /// first page over the budget.
    fn encode_as_delta(
        &self,
        array_id: u64,
        blk: u64,
        data: &[u8],
        level: Option<i32>,
    ) -> Result<Option<Encoded>> {
        use crate::format::{DELTA_FORMAT_VERSION, MAX_DELTA_CHAIN, MAX_DELTA_PAGES_DIVISOR, PAGE};
        if self.gen.log.header().version < DELTA_FORMAT_VERSION {
            return Ok(None);
        }
        let key = Key::Block {
            array: array_id,
            blk,
        };
        let Some(chain) = self.gen.chain_at(&key, self.tid)? else {
            return Ok(None);
        };
        if chain.len() > MAX_DELTA_CHAIN {
            return Ok(None);
        }
        let block_pages = (data.len() / PAGE) as u64;
        let carried: u64 = chain.iter().map(crate::store::delta_pages).sum();
        let budget = (block_pages / MAX_DELTA_PAGES_DIVISOR).saturating_sub(carried);
        let Ok(budget) = usize::try_from(budget) else {
            return Ok(None);
        };
        if budget == 0 {
            return Ok(None);
        }
        if let [base] = chain.as_slice() {
            let from = usize::try_from(base.logical_len)
                .unwrap_or(usize::MAX)
                .div_ceil(PAGE)
                .saturating_mul(PAGE)
                .min(data.len());
            let grown = data[from..]
                .chunks(PAGE)
                .filter(|p| p.iter().any(|&b| b != 0))
                .take(budget + 1)
                .count();
            if grown > budget {
                return Ok(None);
            }
            // A raw base can be sampled before it is read whole: a block rewritten
            // throughout differs on most sampled pages, and is then stored whole after
            // a few page reads instead of a read of the block.
            const SAMPLES: usize = 8;
            if base.encoding == Encoding::Raw
                && self.gen.sample_raw_diffs(base, data, SAMPLES)? > SAMPLES / 2
            {
                return Ok(None);
            }
        }
        thread_local! {
            static BASE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BASE.with(|b| {
            let mut b = b.borrow_mut();
            b.resize(data.len(), 0);
            let r = self
                .gen
                .read_chain(&chain, &mut b)
                .and_then(|()| encode::encode_delta(&b, data, budget, level));
            if b.capacity() > 64 << 20 {
                *b = Vec::new();
            }
            r
        })
    }

    /// Zero-copy reads: the log bytes of block `blk` as this transaction sees it, if
    /// that is a full raw version (not staged here, not a hole, compressed or delta).
    pub(crate) fn map_source(
        &self,
        array_id: u64,
        blk: u64,
        block_size: usize,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        if !self.db.inner.opts.zero_copy {
            return Ok(None);
        }
        if let Some(e) = self.state.lock().blocks.get(&(array_id, blk)) {
            // The transaction's own write: a raw payload in its spill file maps.
            return Ok(staging::map_staged(
                e,
                block_size,
                self.db.inner.opts.verify,
            ));
        }
        let key = Key::Block {
            array: array_id,
            blk,
        };
        self.gen.map_block(&key, self.tid, block_size)
    }
    /// Zero-copy reads: about to check the bytes of `src` whole. A slice of this
    /// transaction's spill file is checked here and now (no other process can see the
    /// file, so there is nobody to share the check with); a slice of the log claims the
    /// check in the per-boot table.
    pub(crate) fn claim_check(&self, src: &crate::bigfile::FileSlice) -> bool {
        if let Some(f) = &*self.spill.lock() {
            if f.raw_fd() == src.fd {
                return src.crc.is_some();
            }
        }
        self.gen.claim_check(src)
    }
    /// Zero-copy reads: the bytes of a slice from `map_source` matched their CRC.
    pub(crate) fn source_checked(&self, src: &crate::bigfile::FileSlice) {
        if let Some(f) = &*self.spill.lock() {
            if f.raw_fd() == src.fd {
                f.mark_checked(src.offset);
                return;
            }
        }
        self.gen.mark_checked(src);
    }

    /// The tid of the version of a block this transaction would read, or None for a
    /// block never written (zeros) — or written by this transaction (not shareable).
    pub fn block_version(&self, array_id: u64, blk: u64) -> Result<Option<Tid>> {
        if self.state.lock().blocks.contains_key(&(array_id, blk)) {
            return Ok(None);
        }
        Ok(self
            .gen
            .version_at(
                &Key::Block {
                    array: array_id,
                    blk,
                },
                self.tid,
            )?
            .map(|v| v.tid))
    }

    /// Stage a hole for every block of array `array_id` at or past `from` that may hold
    /// data (below its extent at the snapshot, or staged here), except `keep`: the
    /// blocks a shrink cut off read as zeros from then on.
    pub(crate) fn stage_holes_from(&self, array_id: u64, from: u64, keep: &[u64]) -> Result<()> {
        let at_snapshot = match self.db.catalog_at(&self.gen, self.tid)?.get_id(array_id) {
            Ok(info) => info.n_blocks().unwrap_or(0),
            Err(_) => 0,
        };
        let mut st = self.state.lock();
        let staged_end = st.blocks.end_from(array_id, from);
        let hole = encode::encode_plain(&[])?;
        for blk in from..at_snapshot.max(staged_end) {
            if keep.binary_search(&blk).is_ok() {
                continue;
            }
            let stored = st.blocks.contains_key(&(array_id, blk))
                || self
                    .gen
                    .version_at(
                        &Key::Block {
                            array: array_id,
                            blk,
                        },
                        self.tid,
                    )?
                    .is_some_and(|v| v.encoding != Encoding::Hole);
            if stored {
                st.blocks.insert((array_id, blk), hole.clone());
            }
        }
        Ok(())
    }

    /// Does this transaction have changes to commit?
    pub fn is_dirty(&self) -> bool {
        let st = self.state.lock();
        st.names_changed || !st.meta_changed.is_empty() || !st.blocks.is_empty()
    }

    /// Commit atomically; returns the new tid (or the snapshot tid if nothing changed).
    /// `Error::Conflict` if another transaction committed a change to a key written here
    /// after this transaction's snapshot.
    /// Commit with a user name and a description recorded in the history.
    pub fn commit_with(&self, user: &str, desc: &str) -> Result<Tid> {
        let st = std::mem::take(&mut *self.state.lock());
        if !st.names_changed && st.meta_changed.is_empty() && st.blocks.is_empty() {
            return Ok(self.tid);
        }
        let mut writes = Vec::with_capacity(st.blocks.len() + st.meta_changed.len() + 1);
        if st.names_changed {
            writes.push(Write {
                key: Key::Names,
                value: encode::encode_plain(&[])?,
                flags: 0,
            });
        }
        for (id, m) in &st.meta_changed {
            let (value, flags) = match m {
                Some(info) => (encode::encode_plain(&info.encode()?)?, 0),
                None => (encode::encode_plain(&[])?, FLAG_DELETED),
            };
            writes.push(Write {
                key: Key::Meta { array: *id },
                value,
                flags,
            });
        }
        let mut must_exist: Vec<u64> = Vec::new();
        for ((a, b), e) in st.blocks.into_blocks() {
            if must_exist.last() != Some(&a) {
                must_exist.push(a);
            }
            writes.push(Write {
                key: Key::Block { array: a, blk: b },
                value: e,
                flags: 0,
            });
        }
        let cat = st.catalog;
        let req = CommitRequest {
            snapshot: self.tid,
            writes: &writes,
            user,
            desc,
            must_exist: &must_exist,
        };
        self.db.inner.store.commit(&req, &|k| name_key(&cat, k))
    }
}

/// The state of a snapshot, shared with the files of its arrays.
#[derive(Debug)]
pub(crate) struct SnapInner {
    db: Db,
    gen: Arc<Gen>,
    tid: Tid,
    _slot: Option<ReaderSlot>,
    catalog: Catalog,
}

impl SnapInner {
    /// The commit it shows.
    pub fn tid(&self) -> Tid {
        self.tid
    }
    /// The catalog entry of array `name`.
    pub fn array_info(&self, name: &str) -> Result<ArrayInfo> {
        Ok((*self.catalog.get(name)?).clone())
    }
    /// The catalog entry of array `id`.
    pub fn array_info_by_id(&self, id: u64) -> Result<ArrayInfo> {
        Ok((*self.catalog.get_id(id)?).clone())
    }
    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        Ok(self.catalog.by_name.keys().cloned().collect())
    }
    /// Read block `blk` of array `array_id` into `buf` (len = the array's block size).
    pub fn read_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        let info = self.catalog.get_id(array_id)?;
        check_buf(&info, buf.len())?;
        self.gen.load(
            &Key::Block {
                array: array_id,
                blk,
            },
            self.tid,
            buf,
        )?;
        Ok(())
    }
    /// Zero-copy reads: the log bytes of block `blk` at this snapshot, if that is a
    /// full raw version.
    pub(crate) fn map_source(
        &self,
        array_id: u64,
        blk: u64,
        block_size: usize,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        if !self.db.inner.opts.zero_copy {
            return Ok(None);
        }
        let key = Key::Block {
            array: array_id,
            blk,
        };
        self.gen.map_block(&key, self.tid, block_size)
    }
    /// Zero-copy reads: the bytes of a slice from `map_source` matched their CRC.
    pub(crate) fn source_checked(&self, src: &crate::bigfile::FileSlice) {
        self.gen.mark_checked(src);
    }

    /// The tid of the version of a block visible here (None: never written, zeros).
    pub fn block_version(&self, array_id: u64, blk: u64) -> Result<Option<Tid>> {
        Ok(self
            .gen
            .version_at(
                &Key::Block {
                    array: array_id,
                    blk,
                },
                self.tid,
            )?
            .map(|v| v.tid))
    }
    /// Storage statistics of array `name` at this snapshot.
    pub fn array_stats(&self, name: &str) -> Result<ArrayStats> {
        let info = self.catalog.get(name)?;
        let mut s = ArrayStats {
            logical_bytes: info.byte_len().unwrap_or(u64::MAX),
            ..ArrayStats::default()
        };
        let blocks = self.gen.with_index(|ix| {
            ix.range_versions(
                &Key::Block {
                    array: info.id,
                    blk: 0,
                },
                &Key::Block {
                    array: info.id,
                    blk: u64::MAX,
                },
            )
        })?;
        for (_, vs) in &blocks {
            let i = vs.partition_point(|v| v.tid <= self.tid);
            let Some(v) = i.checked_sub(1).map(|i| vs[i]) else {
                continue;
            };
            s.stored_bytes += u64::from(v.stored_len);
            match v.encoding {
                Encoding::DeltaRaw | Encoding::DeltaZstd => s.delta_blocks += 1,
                Encoding::Hole => s.hole_blocks += 1,
                Encoding::Raw => s.raw_blocks += 1,
                Encoding::Zstd => s.zstd_blocks += 1,
            }
        }
        Ok(s)
    }
    /// The database it belongs to.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

impl TxInner {
    /// The database it belongs to.
    pub fn db(&self) -> &Db {
        &self.db
    }
}
