//! The userspace virtual memory manager: file handles over [`BigFile`]s, views as
//! reserved address ranges, RAM pages from a memfd, the SIGSEGV handler, dirty
//! tracking, LRU reclaim of clean pages under a RAM budget, and spilling of the least
//! recently used dirty blocks through their file when only dirty blocks are left.
//!
//! - [`VirtMem`] — one per `Db`: the RAM pages (one memfd pool per block size, slots
//!   reused, never freed and re-allocated) and the LRU, under `ram_budget`.
//! - [`FileHandle`] — one snapshot of a file plus its local dirty blocks: `mmap`,
//!   `dirty_blocks`, `writeout`, `discard`, `invalidate`.
//! - [`Mapping`] — a reserved `PROT_NONE` range for a run of blocks; views are
//!   sub-slices of it. Several mappings of one handle share its pages (the memfd slot is
//!   mapped `MAP_SHARED` at each address), so they are coherent aliases.
//!
//! **RSS**: a block's pages are mapped once. A load writes the slot through the pool
//! mapping, then the first view of the block gets the slot's page-table entries *moved*
//! to it (`mremap`, invariant 9 in `state.rs`) and gives them back when the block leaves
//! the view; only further views of the same page map it a second time. So the process's
//! resident memory stays within `ram_budget` plus a small constant, and a first access
//! costs no page faults beyond the load's own.
//!
//! Files:
//!
//! - `state.rs` — the page states, the types the VM lock protects, the numbered
//!   invariants and which file keeps each; its child modules hold the state machine's
//!   parts: `service.rs` (the fault service, `ensure`), `budget.rs` (RAM budget, LRU,
//!   eviction), `views.rs` (view mappings), `filepage.rs` and `filemap.rs` (file pages,
//!   checked and unchecked), `subpage.rs` (small writes), `spill.rs` (spilling),
//!   `writeout.rs` (writeout, invalidate, discard) and `invariants.rs` (the checker).
//! - `fault.rs` — the SIGSEGV handler, and `fault::fatal`, the one non-allocating way
//!   virtmem stops the process on a condition it cannot recover from.
//! - `os.rs` and its child `pool.rs` — the memory system calls, as `unsafe fn`s where
//!   their soundness rests on the caller.
//! - `readahead.rs` — the thread that maps file blocks ahead of a sequential scan, and
//!   `prefetch.rs` — the I/O threads that read the blocks it will check into the page cache;
//!   `writeback.rs` — the thread that spills dirty blocks ahead of need.
//!
//! **Lock order**: `VmShared::state` (the VM lock) → the fault handler's registry lock.
//! A `BigFile`'s own locks are never taken with the VM lock held (invariant 8).
//!
//! **fork**: reserved ranges and the RAM pool are `MADV_DONTFORK`, so a child process
//! does not inherit them: in the child, the address range of every view is unmapped, an
//! access to it is a plain SIGSEGV (the handler chains faults in a process other than
//! the one that registered the range), and every checked call (`Mapping::load`,
//! `FileHandle::mmap`, `writeout`) returns `Error::InvalidArgument`. The parent's pages
//! and state are never touched by the child. A child that needs data opens its own `Db`.

mod fault;
mod os;
mod prefetch;
mod readahead;
mod state;
mod writeback;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex, MutexGuard};

use self::fault::{FaultTarget, InWdb};
use self::state::{HandleId, HandleState, MapId, VmState};
use crate::bigfile::BigFile;

use crate::{Error, Result};

/// Make sure wdb's `SIGSEGV` handler is installed and on top: if other code installed
/// its own handler since (Python's `faulthandler.enable()`, a JVM, another engine), put
/// wdb's back on top, chaining the faults that are not wdb's to that handler (see
/// `fault.rs`). Mapping a view does this by itself; bindings call it before they hand
/// out memory of an existing mapping, since a handler installed in between would take
/// wdb's page faults for crashes. One `sigaction` call when nothing changed.
pub fn ensure_fault_handler() -> Result<()> {
    fault::ensure_installed()
}

/// Largest mapping, in bytes (2^46 = 64 TiB: well inside the 47-bit user address space).
pub const MAX_MAPPING_LEN: u64 = 1 << 46;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Memory figures of a database's virtual memory manager ([`Db::memory_stats`]).
///
/// [`Db::memory_stats`]: crate::Db::memory_stats
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmStats {
    /// The RAM budget in bytes.
    pub budget: u64,
    /// Bytes of RAM pages in use (loading, clean, dirty, and cached clean pages).
    pub ram_used: u64,
    /// Bytes held by dirty blocks.
    pub dirty: u64,
    /// `load_blk` calls made.
    pub loads: u64,
    /// `store_blk` calls made.
    pub stores: u64,
    /// Clean pages reclaimed to make room.
    pub evictions: u64,
    /// Blocks mapped straight from a file into a view (zero-copy reads of raw blocks;
    /// each view maps on its own, so one block may count once per view).
    pub file_maps: u64,
    /// Bytes of dirty blocks spilled (stored through their file to free RAM, because
    /// the budget was full and only dirty blocks were left) and not loaded back since.
    /// Not part of `ram_used` or `dirty`.
    pub spilled: u64,
    /// Spill writes made: dirty blocks (and small-write patches) stored through their
    /// file to make room.
    pub spill_writes: u64,
}

struct VmShared {
    /// The VM lock. Lock order: this, then the fault registry's lock.
    state: Mutex<VmState>,
    /// Signalled whenever a load or store ends or a block is invalidated: threads
    /// waiting for a `Loading` or `Storing` block re-check.
    cv: Condvar,
    /// The process that created this VirtMem (a forked child may not use it).
    pid: u32,
    /// The readahead thread, once started (taken before the VM lock, never inside it).
    ra_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The readahead thread waits on this one, with the VM lock.
    ra_cv: Condvar,
    /// The write-behind thread, once started (taken before the VM lock, never inside it).
    wb_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The write-behind thread waits on this one, with the VM lock.
    wb_cv: Condvar,
}

impl VmShared {
    /// Take the VM lock, marking this thread as in wdb code (see `fault.rs`).
    fn lock(&self) -> Result<(InWdb, MutexGuard<'_, VmState>)> {
        if fault::process_id() != self.pid {
            return Err(Error::InvalidArgument(
                "wdb memory cannot be used in a forked child process; open the database again there"
                    .into(),
            ));
        }
        let w = InWdb::enter();
        Ok((w, self.state.lock()))
    }
}

/// Start a background thread of `vm` (readahead, write-behind) running `run`, unless it
/// runs, was stopped, or is not wanted: `flags` gives its `(started, stop)` flags in the
/// VM state, or None when it is off; `slot` keeps its join handle. Called outside the
/// fault handler: spawning allocates. When no thread can be made, the work it would do
/// is done by the threads that need it.
fn start_worker(
    vm: &Arc<VmShared>,
    slot: &Mutex<Option<std::thread::JoinHandle<()>>>,
    flags: fn(&mut VmState) -> Option<(&mut bool, &mut bool)>,
    name: &str,
    run: fn(&VmShared),
) {
    let mut t = slot.lock();
    {
        let mut g = vm.state.lock();
        match flags(&mut g) {
            Some((started, stop)) if !*started && !*stop => *started = true,
            _ => return,
        }
    }
    let v = vm.clone();
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&v))
    {
        Ok(j) => *t = Some(j),
        Err(_) => {
            if let Some((started, _)) = flags(&mut vm.state.lock()) {
                *started = false;
            }
        }
    }
}

/// Stop a background thread of `vm` (its stop flag set by `stop`, woken on `cv`) and
/// wait for it — unless this is that thread: it dropped the last reference to the
/// database, and exits when it is back in its loop.
fn stop_worker(
    vm: &VmShared,
    slot: &Mutex<Option<std::thread::JoinHandle<()>>>,
    cv: &Condvar,
    stop: fn(&mut VmState),
) {
    stop(&mut vm.state.lock());
    cv.notify_all();
    if let Some(j) = slot.lock().take() {
        if j.thread().id() != std::thread::current().id() {
            let _ = j.join();
        }
    }
}

/// The RAM pages and LRU of one database, shared by its file handles.
pub struct VirtMem {
    shared: Arc<VmShared>,
}

impl std::fmt::Debug for VirtMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtMem")
            .field("stats", &self.stats())
            .finish()
    }
}

impl VirtMem {
    /// A virtual memory with `ram_budget` bytes for loaded and dirty blocks.
    pub fn new(ram_budget: u64) -> Result<Arc<VirtMem>> {
        if ram_budget == 0 {
            return Err(Error::InvalidArgument("ram_budget must not be 0".into()));
        }
        Ok(Arc::new(VirtMem {
            shared: Arc::new(VmShared {
                state: Mutex::new(VmState::new(ram_budget)),
                cv: Condvar::new(),
                pid: fault::process_id(),
                ra_thread: Mutex::new(None),
                ra_cv: Condvar::new(),
                wb_thread: Mutex::new(None),
                wb_cv: Condvar::new(),
            }),
        }))
    }

    /// A handle on `file` with no dirty blocks. The block size must be a power of two,
    /// a multiple of the OS page size, and fit in the budget.
    pub fn open(self: &Arc<Self>, file: Arc<dyn BigFile>) -> Result<FileHandle> {
        let bs = file.block_size();
        if !bs.is_power_of_two() || bs % os::page_size() != 0 {
            return Err(Error::InvalidArgument(format!(
                "block size {bs} of {:?} is not a power of two multiple of the page size {}",
                file.name(),
                os::page_size()
            )));
        }
        let (_w, mut g) = self.shared.lock()?;
        let pool = g.pool_for(bs)?;
        let id = next_id();
        g.handles.insert(
            id,
            HandleState {
                file: file.clone(),
                pool,
                blocks: Default::default(),
                maps: Vec::new(),
                inflight: 0,
                invalidations: 0,
                patches: Default::default(),
            },
        );
        Ok(FileHandle {
            inner: Arc::new(HandleInner {
                id,
                vm: self.shared.clone(),
                file,
                bs,
            }),
        })
    }

    /// Spill ahead of need on a background thread once dirty blocks outgrow the budget
    /// (`writeback.rs`; off by default). Takes effect for mappings made from now on.
    pub fn set_write_behind(&self, on: bool) {
        let mut g = self.shared.state.lock();
        g.wb.on = on;
        if !g.wb.on {
            g.wb.armed = false;
        }
    }

    /// Turn the readahead of sequential scans (`readahead.rs`) on (the default) or off
    /// (every block then faults on its own; for comparing).
    pub fn set_readahead(&self, on: bool) {
        self.shared.state.lock().ra.off = !on;
    }

    /// Budget, RAM in use, dirty bytes, loads, stores, evictions, spills.
    pub fn stats(&self) -> VmStats {
        let g = self.shared.state.lock();
        VmStats {
            budget: g.budget,
            ram_used: g.used,
            dirty: g.dirty,
            loads: g.counters.loads,
            stores: g.counters.stores,
            evictions: g.counters.evictions,
            file_maps: g.counters.file_maps,
            spilled: g.spilled,
            spill_writes: g.counters.spill_writes,
        }
    }
}

impl Drop for VirtMem {
    fn drop(&mut self) {
        // Handles and mappings may outlive the VirtMem: they fault without readahead.
        if std::process::id() == self.shared.pid {
            readahead::stop(&self.shared);
            writeback::stop(&self.shared);
        }
    }
}

struct HandleInner {
    id: HandleId,
    vm: Arc<VmShared>,
    file: Arc<dyn BigFile>,
    bs: usize,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // Mappings and in-flight loads hold this alive, so nothing is in flight here.
        // A forked child leaves the parent's state alone (its lock may have been held
        // by another thread at fork time).
        if let Ok((_w, mut g)) = self.vm.lock() {
            g.close_handle(self.id);
        }
    }
}

/// One snapshot of a file plus its local dirty blocks. `Send + Sync`.
pub struct FileHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle")
            .field("file", &self.inner.file.name())
            .field("block_size", &self.inner.bs)
            .finish()
    }
}

impl FileHandle {
    /// Reserve address space for blocks `[first_blk, first_blk + n_blks)`. Costs no RAM;
    /// blocks load on first access. Dirty blocks of this handle show up at once.
    pub fn mmap(&self, first_blk: u64, n_blks: u64) -> Result<Mapping> {
        if n_blks == 0 {
            return Err(Error::InvalidArgument("cannot map 0 blocks".into()));
        }
        first_blk.checked_add(n_blks).ok_or_else(|| {
            Error::OutOfRange(format!("blocks {first_blk} + {n_blks} overflow u64"))
        })?;
        let len = n_blks
            .checked_mul(self.inner.bs as u64)
            .filter(|&l| l <= MAX_MAPPING_LEN)
            .ok_or_else(|| {
                Error::OutOfRange(format!(
                    "a mapping of {n_blks} blocks of {} bytes exceeds {MAX_MAPPING_LEN} bytes",
                    self.inner.bs
                ))
            })?;
        let len =
            usize::try_from(len).map_err(|_| Error::OutOfRange("mapping too large".into()))?;
        let vm = &self.inner.vm;
        // Checked before reserving anything (forked child).
        drop(vm.lock()?);
        readahead::start(vm);
        writeback::start(vm);
        let base = os::reserve(len, os::align_for(self.inner.bs))?;
        let id = next_id();
        let shared = Arc::new(MapShared {
            id,
            base,
            len,
            first_blk,
            handle: self.inner.clone(),
        });
        let (_w, mut g) = vm.lock()?;
        g.add_map(id, self.inner.id, base, first_blk, n_blks);
        let weak: Weak<dyn FaultTarget> = Arc::downgrade(&(shared.clone() as Arc<dyn FaultTarget>));
        if let Err(e) = fault::register(id, base, len, weak) {
            g.remove_map(id);
            drop(g);
            // MapShared's drop releases the reserved range.
            drop(shared);
            return Err(e);
        }
        drop(g);
        Ok(Mapping { shared })
    }

    /// Dirty blocks, ascending (none in a forked child).
    #[cfg(any(test, feature = "internals"))]
    pub fn dirty_blocks(&self) -> Vec<u64> {
        match self.inner.vm.lock() {
            Ok((_w, g)) => g.dirty_blocks(self.inner.id),
            Err(_) => Vec::new(),
        }
    }

    /// Store each dirty block with `store_blk` in ascending order, then mark it clean
    /// and read-only. A store error leaves that block and the following ones dirty and
    /// the handle usable (call again to retry).
    pub fn writeout(&self) -> Result<()> {
        let vm = &self.inner.vm;
        let (_w, mut g) = vm.lock()?;
        state::writeout(&mut g, &vm.cv, self.inner.id)
    }

    /// Drop every dirty block: the next access reloads it from the file. A block already
    /// spilled is in the file: it is not taken back (a file whose stores are not final,
    /// like the db's transaction, drops them itself). (Does nothing in a forked child.)
    #[cfg(any(test, feature = "internals"))]
    pub fn discard(&self) {
        let vm = &self.inner.vm;
        if let Ok((_w, mut g)) = vm.lock() {
            g.discard(&vm.cv, self.inner.id);
        }
    }

    /// Drop the changes of every block at or after `first_blk` (dirty, patched or
    /// spilled): the next access reloads them from the file. A spill of one of them in
    /// flight on another thread is waited for first, so that no store of such a block
    /// reaches the file after this returns (the caller may then treat what the file holds
    /// past `first_blk` as it likes: `ArrayCore`'s shrink hides it). (Does nothing in a
    /// forked child.)
    pub fn discard_from(&self, first_blk: u64) {
        let vm = &self.inner.vm;
        if let Ok((_w, mut g)) = vm.lock() {
            state::discard_from(&mut g, &vm.cv, self.inner.id, first_blk);
        }
    }

    /// Forget block `blk` (it changed in the file underneath): a clean copy is dropped,
    /// a dirty one's changes are dropped, and a load in flight for it throws its data
    /// away. Never waits for a load or store in flight. (Does nothing in a forked
    /// child.)
    pub fn invalidate(&self, blk: u64) {
        let vm = &self.inner.vm;
        if let Ok((_w, mut g)) = vm.lock() {
            g.invalidate(&vm.cv, self.inner.id, blk);
        }
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.inner.bs
    }

    /// The file this handle reads.
    #[cfg(any(test, feature = "internals"))]
    pub fn file(&self) -> &Arc<dyn BigFile> {
        &self.inner.file
    }

    /// Close the handle now. Refused with `Error::Busy` (the handle is given back)
    /// while a load or a writeout of it is in flight on another thread. Dropping a
    /// handle is always safe: its pages are released when its last mapping is gone.
    #[cfg(any(test, feature = "internals"))]
    pub fn close(self) -> std::result::Result<(), (FileHandle, Error)> {
        let busy = match self.inner.vm.lock() {
            Ok((_w, g)) => g.handles.get(&self.inner.id).map_or(0, |h| h.inflight),
            Err(_) => 0,
        };
        if busy > 0 {
            return Err((
                self,
                Error::Busy(format!("{busy} loads or stores of this file are in flight")),
            ));
        }
        drop(self);
        Ok(())
    }
}

struct MapShared {
    id: MapId,
    base: usize,
    len: usize,
    first_blk: u64,
    handle: Arc<HandleInner>,
}

impl MapShared {
    fn blk_of(&self, off: usize) -> u64 {
        self.first_blk + (off / self.handle.bs) as u64
    }
}

impl FaultTarget for MapShared {
    fn service(&self, addr: usize, write: bool) -> Result<bool> {
        let vm = &self.handle.vm;
        if fault::process_id() != vm.pid || addr < self.base || addr >= self.base + self.len {
            return Ok(false);
        }
        let blk = self.blk_of(addr - self.base);
        let mut g = vm.state.lock();
        // Without the CPU's read/write bit, a fault on a block this view already maps
        // can only be a write to a read-only page.
        let write = write || (!fault::WRITE_BIT_KNOWN && g.is_mapped(self.id, blk));
        let off = (addr - self.base) % self.handle.bs;
        let r = state::ensure(&mut g, &vm.cv, self.id, blk, write, Some(off));
        readahead::kick(&mut g, vm);
        writeback::kick(&mut g, vm);
        r.map(|()| true)
    }
}

// Releases the view range: `os::release_range` is an unsafe fn.
#[allow(unsafe_code)]
impl Drop for MapShared {
    fn drop(&mut self) {
        let vm = &self.handle.vm;
        if fault::process_id() == vm.pid {
            let _w = InWdb::enter();
            let mut g = vm.state.lock();
            g.remove_map(self.id);
            fault::unregister(self.id);
        }
        // SAFETY: [base, base+len) came from os::reserve in FileHandle::mmap. The range
        // is unregistered and forgotten by the state machine (so no loader maps into it
        // any more), and views borrow the Mapping, so none is alive.
        unsafe { os::release_range(self.base, self.len) };
    }
}

/// Keeps a [`Mapping`]'s address range reserved and served by the fault handler after
/// the `Mapping` itself is dropped or replaced, for as long as any clone of the guard
/// lives: for memory handed to code that holds raw pointers with a lifetime of its own
/// (a Python `numpy.ndarray`). The range keeps showing its file handle's blocks (the
/// handle's pages, its dirty blocks, loads through its `BigFile`); the guard gives no
/// access to the bytes itself. `Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct MappingGuard {
    shared: Arc<MapShared>,
}

impl std::fmt::Debug for MappingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingGuard")
            .field("addr", &(self.shared.base as *const u8))
            .field("len", &self.shared.len)
            .finish()
    }
}

impl MappingGuard {
    /// Start of the range.
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared.base as *mut u8
    }

    /// Length of the range in bytes.
    #[cfg(any(test, feature = "internals"))]
    pub fn len(&self) -> usize {
        self.shared.len
    }

    /// Never true (a mapping has at least one block).
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.shared.len == 0
    }
}

/// A reserved address range showing blocks `[first_blk, first_blk + n)` of a file
/// handle. Views are sub-slices of it. `Send + Sync`. Dropping it unmaps the range; the
/// handle keeps its dirty blocks.
pub struct Mapping {
    shared: Arc<MapShared>,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("addr", &(self.shared.base as *const u8))
            .field("len", &self.shared.len)
            .field("first_blk", &self.shared.first_blk)
            .finish()
    }
}

impl Mapping {
    /// Start of block `first_blk`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared.base as *mut u8
    }

    /// Length in bytes: `n_blks * block_size`.
    pub fn len(&self) -> usize {
        self.shared.len
    }

    /// Never true (a mapping has at least one block); present for clippy's
    /// `len_without_is_empty`.
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.shared.len == 0
    }

    /// First block shown.
    #[cfg(any(test, feature = "internals"))]
    pub fn first_blk(&self) -> u64 {
        self.shared.first_blk
    }

    /// Number of blocks shown.
    pub fn n_blks(&self) -> u64 {
        (self.shared.len / self.shared.handle.bs) as u64
    }

    /// Checked load: make bytes `[off, off+len)` of the mapping resident (and writable
    /// if `write`, which marks their blocks dirty), returning load errors and spill
    /// errors (the file could not store a dirty block spilled to make room) as `Err`
    /// instead of faulting. With a range larger than the budget, early blocks may be
    /// reclaimed, or spilled, again by the later ones.
    pub fn load(&self, off: usize, len: usize, write: bool) -> Result<()> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.shared.len)
            .ok_or_else(|| {
                Error::OutOfRange(format!(
                    "bytes {off}..{off}+{len} of a mapping of {} bytes",
                    self.shared.len
                ))
            })?;
        if len == 0 {
            return Ok(());
        }
        let vm = &self.shared.handle.vm;
        let (_w, mut g) = vm.lock()?;
        let mut r = Ok(());
        for blk in self.shared.blk_of(off)..=self.shared.blk_of(end - 1) {
            r = state::ensure(&mut g, &vm.cv, self.shared.id, blk, write, None);
            readahead::kick(&mut g, vm);
            writeback::kick(&mut g, vm);
            if r.is_err() {
                break;
            }
        }
        r
    }

    /// Small writes: copy `data` to bytes `[off, off + data.len())` of the mapping as
    /// dirty 4 KiB pages of their blocks, without a fault and without loading or
    /// dirtying whole blocks (see `subpage.rs`): a partly written page gets its other
    /// bytes from the block's clean page or from `BigFile::read_pages` (checked).
    /// Views and checked loads see the bytes at once; `writeout` stores them with
    /// `BigFile::store_pages`. Returns `Ok(false)`, having written nothing, when the
    /// range's block is to be tracked whole — it is dirty whole already, the range
    /// covers all of it, or it would carry more than a quarter of its pages — then
    /// write through the mapping after [`Mapping::load`] for write. The range must lie
    /// inside one block.
    pub fn write_pages(&self, off: usize, data: &[u8]) -> Result<bool> {
        let bs = self.shared.handle.bs;
        let end = off
            .checked_add(data.len())
            .filter(|&e| e <= self.shared.len)
            .ok_or_else(|| {
                Error::OutOfRange(format!(
                    "bytes {off}..{off}+{} of a mapping of {} bytes",
                    data.len(),
                    self.shared.len
                ))
            })?;
        if data.is_empty() {
            return Ok(true);
        }
        if off / bs != (end - 1) / bs {
            return Err(Error::InvalidArgument(format!(
                "write_pages of bytes {off}..{end} spans more than one block"
            )));
        }
        let vm = &self.shared.handle.vm;
        let (_w, mut g) = vm.lock()?;
        let r = state::write_patch(
            &mut g,
            &vm.cv,
            self.shared.id,
            self.shared.blk_of(off),
            off % bs,
            data,
        );
        writeback::kick(&mut g, vm);
        r
    }

    /// A guard that keeps this range reserved and served after the `Mapping` is gone
    /// (see [`MappingGuard`]).
    pub fn guard(&self) -> MappingGuard {
        MappingGuard {
            shared: self.shared.clone(),
        }
    }

    /// Unmap now. Refused with `Error::Busy` (the mapping is given back) while a load
    /// into it is in flight on another thread. Dropping is always safe: a load that
    /// ends after the drop does not map into the released range.
    #[cfg(any(test, feature = "internals"))]
    pub fn unmap(self) -> std::result::Result<(), (Mapping, Error)> {
        let busy = match self.shared.handle.vm.lock() {
            Ok((_w, g)) => g.maps.get(&self.shared.id).map_or(0, |m| m.inflight),
            Err(_) => 0,
        };
        if busy > 0 {
            return Err((
                self,
                Error::Busy(format!("{busy} loads into this mapping are in flight")),
            ));
        }
        drop(self);
        Ok(())
    }
}
