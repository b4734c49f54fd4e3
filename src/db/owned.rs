//! Owned, reference-counted transactions, snapshots and arrays, for language bindings.
//!
//! The typed Rust API ties lifetimes together with borrows: a view borrows its handle,
//! the handle borrows the transaction, and `commit` consumes the transaction, so no view
//! outlives it. A binding cannot express that: a Python `numpy.ndarray` lives as long as
//! anything refers to it, and its element type is known only at run time. This module
//! gives such callers:
//!
//! - [`SharedTransaction`] and [`SharedSnapshot`], shared (`Arc`) and usable from any
//!   thread, whose `commit`/`abort`/`close` take `&self`;
//! - [`SharedArray`], one per opened array of a transaction or snapshot (asking twice
//!   gives the same one), holding the array as bytes (`ArrayCore<u8>`,
//!   `ArrayCore::open_bytes`) of any [`DType`];
//! - [`Region`], the memory of a range of rows, which keeps its address range reserved
//!   and served (a `MappingGuard`) for as long as it lives, whatever happens to the
//!   array, the transaction or the `Db` meanwhile.
//!
//! ## What a region shows, during and after its transaction
//!
//! A region is a window on its array's file handle: while the transaction is open it
//! reads and writes exactly what the transaction sees (its own writes included, from
//! any region or method of the same array), like a Rust view. A region taken before a
//! resize keeps its address range: rows still inside the array stay live; rows a
//! shrink cut off read unspecified bytes, and whatever is written there is dropped at
//! commit (it never reaches the database). When the transaction or snapshot ends, a
//! region still alive keeps working as follows — it never faults outside wdb's ranges,
//! and never changes the database:
//!
//! | end | reads show | writes |
//! |---|---|---|
//! | `commit` succeeded at tid T | the data committed at T (its snapshot holds it) | stay in that region's pages; never stored |
//! | `abort`, drop, failed commit | the snapshot the transaction began at (zeros for an array created in it, and for rows the transaction added to or cut from an array) | as above |
//! | array deleted in the transaction | zeros | as above |
//! | snapshot closed | the snapshot, unchanged | as above |
//!
//! Writes after the end are private to the pages of that array's ended handle: the other
//! regions of the same array (of the same transaction) may see them, nothing else does,
//! and they are gone when the last region is dropped. They count against the RAM budget
//! like any dirty block. A region keeps its snapshot registered as a reader (so
//! compaction keeps its data) until it is dropped.
//!
//! Writes from another thread that race with `commit` may or may not be committed.
//!
//! ## How
//!
//! Each array's handle reads through a `SwitchFile`: the transaction's file while it
//! is open. At the end, if regions of the array are alive, the switch points the handle
//! at the snapshot above and drops the pages that may differ from it (after a commit,
//! the blocks changed since the transaction began; otherwise all of them). The switch
//! is held for writing across the commit itself, so that a fault on another thread
//! never loads from the transaction once its staged writes are gone. Then the core is
//! dropped; the regions keep its mappings, handle and snapshot alive.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use super::arrays::{check_shape_of, snap_file, tx_file};
use super::handles::{ArrayOptions, Snapshot, Transaction};
use super::{ArrayInfo, Db, Order};
use crate::array::{bytes_shape, ArrayCore, DType};
use crate::bigfile::{BigFile, ContentKeys, DirectMap, FileSlice, SubBlockPages};
use crate::format::Key;
use crate::virtmem::MappingGuard;
use crate::{Error, Result, Tid};

/// A `BigFile` that forwards to a file that can be replaced ([`SharedArray`]'s handle
/// reads the transaction, then a snapshot or zeros). Its own locks are leaves: held
/// only to clone the current target, or by [`SharedTransaction::commit`] across the
/// commit and the switch.
#[derive(Debug)]
struct SwitchFile {
    name: String,
    block_size: usize,
    target: RwLock<Arc<dyn BigFile>>,
}

impl SwitchFile {
    fn current(&self) -> Arc<dyn BigFile> {
        self.target.read().clone()
    }
}

impl BigFile for SwitchFile {
    fn block_size(&self) -> usize {
        self.block_size
    }
    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        self.current().load_blk(blk, buf)
    }
    fn store_blk(&self, blk: u64, data: &[u8]) -> Result<()> {
        self.current().store_blk(blk, data)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn load_writes_whole_block(&self) -> bool {
        // Both targets (an ArrayFile, Zeros) fill the whole buffer; answered without
        // a lock since virtmem may ask with its own lock held.
        true
    }
    // The target changes at a switch: each capability forwards to the target current
    // at the call, which answers with its own capability or the fallback.
    fn content_keys(&self) -> Option<&dyn ContentKeys> {
        Some(self)
    }
    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages> {
        Some(self)
    }
    fn direct_map(&self) -> Option<&dyn DirectMap> {
        Some(self)
    }
}

impl ContentKeys for SwitchFile {
    fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        self.current().content_key(blk)
    }
}

impl SubBlockPages for SwitchFile {
    fn read_pages(&self, blk: u64, pages: &[u32], out: &mut [u8]) -> Result<()> {
        self.current().read_pages(blk, pages, out)
    }
    fn store_pages(&self, blk: u64, pages: &[(u32, &[u8])]) -> Result<()> {
        self.current().store_pages(blk, pages)
    }
}

// SAFETY: every slice comes from the `DirectMap` of the current target, whose promise
// holds for as long as the slice's `keep` lives, whatever this file forwards to later.
#[allow(unsafe_code)]
unsafe impl DirectMap for SwitchFile {
    fn map_source(&self, blk: u64, fetch: bool) -> Result<Option<FileSlice>> {
        self.current().map_source(blk, fetch)
    }
    fn claim_check(&self, src: &FileSlice) -> bool {
        self.current().claim_check(src)
    }
    fn source_checked(&self, src: &FileSlice) {
        self.current().source_checked(src)
    }
}

/// A file of zeros that refuses stores: what an ended array reads where no snapshot
/// holds it.
#[derive(Debug)]
struct Zeros {
    name: String,
    block_size: usize,
}

impl BigFile for Zeros {
    fn block_size(&self) -> usize {
        self.block_size
    }
    fn load_blk(&self, _blk: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn store_blk(&self, _blk: u64, _data: &[u8]) -> Result<()> {
        Err(Error::ReadOnly(format!(
            "array {:?} belongs to a transaction that has ended",
            self.name
        )))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn load_writes_whole_block(&self) -> bool {
        true
    }
    fn content_keys(&self) -> Option<&dyn ContentKeys> {
        None
    }
    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages> {
        None
    }
    fn direct_map(&self) -> Option<&dyn DirectMap> {
        None
    }
}

/// How a [`SharedTransaction`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// Committed at this tid (the snapshot's tid when nothing changed).
    Committed(Tid),
    /// Aborted (explicitly or by dropping the transaction).
    Aborted,
    /// `commit` returned an error; nothing was committed.
    Failed,
}

fn ended(what: &str) -> Error {
    Error::InvalidArgument(format!("{what} has ended"))
}

/// One array of a [`SharedTransaction`] or [`SharedSnapshot`], as bytes. See the module
/// docs for what its [`Region`]s show.
#[derive(Debug)]
pub struct SharedArray {
    id: u64,
    name: String,
    dtype: DType,
    order: Order,
    writable: bool,
    file: Arc<SwitchFile>,
    /// `None` once the transaction or snapshot ended.
    core: Mutex<Option<ArrayCore<u8>>>,
    /// Cloned into every [`Region`]: more than one strong count = regions are alive.
    exported: Arc<()>,
    /// "transaction" or "snapshot", for messages.
    owner: &'static str,
}

/// The memory of rows of a [`SharedArray`]: `len` bytes at `as_ptr()`, laid out as the
/// array's rows in its order. Keeps the address range reserved and served while it
/// lives (see the module docs for what it shows). `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Region {
    guard: MappingGuard,
    _exported: Arc<()>,
    offset: usize,
    len: usize,
}

impl Region {
    /// First byte of the rows. Valid for reads (and writes, for a transaction's array)
    /// of `len()` bytes for as long as this region lives; the fault handler serves the
    /// accesses, so the bytes must not be touched from inside a wdb `BigFile`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.guard.as_ptr().wrapping_add(self.offset)
    }
    /// Bytes of the rows.
    pub fn len(&self) -> usize {
        self.len
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SharedArray {
    fn open(
        db: &Db,
        info: &ArrayInfo,
        file: Arc<dyn BigFile>,
        writable: bool,
        owner: &'static str,
    ) -> Result<Arc<SharedArray>> {
        let dtype = DType::decode(&info.dtype)?;
        let switch = Arc::new(SwitchFile {
            name: info.name.clone(),
            block_size: file.block_size(),
            target: RwLock::new(file),
        });
        let mut core =
            ArrayCore::open_bytes(&db.vm()?, switch.clone(), &dtype, &info.shape, info.order)?;
        core.pin_handle();
        Ok(Arc::new(SharedArray {
            id: info.id,
            name: info.name.clone(),
            dtype,
            order: info.order,
            writable,
            file: switch,
            core: Mutex::new(Some(core)),
            exported: Arc::new(()),
            owner,
        }))
    }

    fn with_core<R>(&self, f: impl FnOnce(&mut ArrayCore<u8>) -> Result<R>) -> Result<R> {
        let mut g = self.core.lock();
        let core = g.as_mut().ok_or_else(|| ended(self.owner))?;
        f(core)
    }

    fn writable_core<R>(&self, f: impl FnOnce(&mut ArrayCore<u8>) -> Result<R>) -> Result<R> {
        if !self.writable {
            return Err(Error::ReadOnly(format!(
                "array {:?} of a snapshot cannot be written",
                self.name
            )));
        }
        self.with_core(f)
    }

    /// The shape without the bytes axis.
    fn logical_shape(&self, core: &ArrayCore<u8>) -> Vec<u64> {
        let s = core.shape();
        match self.order {
            Order::C => s[..s.len() - 1].to_vec(),
            Order::F => s[1..].to_vec(),
        }
    }

    /// Array id.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Name when opened.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Element type.
    pub fn dtype(&self) -> &DType {
        &self.dtype
    }
    /// Memory order.
    pub fn order(&self) -> Order {
        self.order
    }
    /// Writable (an array of a transaction)?
    pub fn writable(&self) -> bool {
        self.writable
    }
    /// Is its transaction or snapshot still open?
    pub fn is_open(&self) -> bool {
        self.core.lock().is_some()
    }

    /// The current shape.
    pub fn shape(&self) -> Result<Vec<u64>> {
        self.with_core(|c| Ok(self.logical_shape(c)))
    }

    /// The memory of `rows` of the major axis (checked against the current length).
    /// Costs no I/O: blocks load when first touched. Puts wdb's fault handler back on
    /// top if other code displaced it.
    pub fn region(&self, rows: Range<u64>) -> Result<Region> {
        crate::virtmem::ensure_fault_handler()?;
        self.with_core(|c| {
            let rows = c.layout().rows(rows)?;
            let b = c.layout().byte_range(&rows)?;
            let to_usize =
                |v: u64| usize::try_from(v).map_err(|_| Error::OutOfRange("offset".into()));
            Ok(Region {
                guard: c.mapping_guard(),
                _exported: self.exported.clone(),
                offset: to_usize(b.start)?,
                len: to_usize(b.end - b.start)?,
            })
        })
    }

    /// Load `rows` now (writable ones for write if `write`), returning load errors as
    /// `Err` instead of stopping the process in a fault.
    pub fn load(&self, rows: Range<u64>, write: bool) -> Result<()> {
        if write {
            self.writable_core(|c| c.load_mut(rows))
        } else {
            self.with_core(|c| c.load(rows))
        }
    }

    /// Copy `rows` into `out` (their bytes, in the array's order).
    pub fn read_into(&self, rows: Range<u64>, out: &mut [u8]) -> Result<()> {
        self.with_core(|c| c.read_into(rows, out))
    }

    /// Copy `data` (the rows' bytes in the array's order) into `rows`. Small writes are
    /// kept as dirty 4 KiB pages, without loading whole blocks.
    pub fn write_from(&self, rows: Range<u64>, data: &[u8]) -> Result<()> {
        self.writable_core(|c| c.write_from(rows, data))
    }

    /// Append whole rows (`data`: their bytes in the array's order).
    pub fn append(&self, data: &[u8]) -> Result<()> {
        self.writable_core(|c| c.append(data))
    }

    /// Change the extent of the major axis.
    pub fn resize(&self, shape: &[u64]) -> Result<()> {
        let size = self.dtype.size();
        self.writable_core(|c| c.resize(&bytes_shape(shape, self.order, size)?))
    }

    /// Are regions of it alive?
    fn exported(&self) -> bool {
        Arc::strong_count(&self.exported) > 1
    }
}

/// Point an ended array's handle at `target`, with the switch's write lock held by the
/// caller, then drop the pages of `blocks` (None: every reserved block) and the core.
fn retire(
    arr: &SharedArray,
    core: &mut Option<ArrayCore<u8>>,
    lock: Option<RwLockWriteGuard<'_, Arc<dyn BigFile>>>,
    target: Arc<dyn BigFile>,
    blocks: Option<&[u64]>,
) {
    let Some(mut c) = core.take() else { return };
    let mut lock = lock.unwrap_or_else(|| arr.file.target.write());
    *lock = target;
    drop(lock);
    let n = (c.reserved_bytes() / c.block_size().max(1)) as u64;
    let h = c.handle_mut();
    match blocks {
        Some(bs) => bs.iter().for_each(|&b| h.invalidate(b)),
        None => (0..n).for_each(|b| h.invalidate(b)),
    }
}

fn zeros_of(arr: &SharedArray) -> Arc<dyn BigFile> {
    Arc::new(Zeros {
        name: arr.name.clone(),
        block_size: arr.file.block_size,
    })
}

/// The file of array `arr` at snapshot `snap`, or zeros if it does not exist there.
fn file_at(snap: Option<&Snapshot>, arr: &SharedArray) -> Arc<dyn BigFile> {
    let f = snap.and_then(|s| {
        let info = s.array_info_by_id(arr.id).ok()?;
        (info.block_size as usize == arr.file.block_size)
            .then(|| snap_file(s.inner(), &info).ok())
            .flatten()
    });
    match f {
        Some(f) => Arc::new(f),
        None => zeros_of(arr),
    }
}

/// The arrays opened in a transaction or snapshot, by id.
type Opened = BTreeMap<u64, Arc<SharedArray>>;

/// An array with its core locked, for commit and abort.
type LockedCore<'a> = (
    &'a Arc<SharedArray>,
    parking_lot::MutexGuard<'a, Option<ArrayCore<u8>>>,
);

enum TxSlot {
    Open {
        tx: Transaction,
        arrays: BTreeMap<u64, Arc<SharedArray>>,
    },
    Ended(TxOutcome),
}

/// A read-write transaction that bindings can share between threads and objects; see
/// the module docs. Dropping the last reference to an open one aborts it.
pub struct SharedTransaction {
    db: Db,
    start: Tid,
    state: Mutex<TxSlot>,
}

impl std::fmt::Debug for SharedTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTransaction")
            .field("snapshot", &self.start)
            .field("outcome", &self.outcome())
            .finish()
    }
}

impl SharedTransaction {
    /// Begin a transaction at the latest commit ([`Db::begin`]).
    pub fn begin(db: &Db) -> Result<Arc<SharedTransaction>> {
        let tx = db.begin()?;
        Ok(Arc::new(SharedTransaction {
            db: db.clone(),
            start: tx.snapshot_tid(),
            state: Mutex::new(TxSlot::Open {
                tx,
                arrays: BTreeMap::new(),
            }),
        }))
    }

    /// The snapshot it reads.
    pub fn snapshot_tid(&self) -> Tid {
        self.start
    }

    /// `None` while open, then how it ended.
    pub fn outcome(&self) -> Option<TxOutcome> {
        match &*self.state.lock() {
            TxSlot::Open { .. } => None,
            TxSlot::Ended(o) => Some(*o),
        }
    }

    fn open<R>(
        &self,
        f: impl FnOnce(&Transaction, &mut BTreeMap<u64, Arc<SharedArray>>) -> Result<R>,
    ) -> Result<R> {
        match &mut *self.state.lock() {
            TxSlot::Open { tx, arrays } => f(tx, arrays),
            TxSlot::Ended(_) => Err(ended("transaction")),
        }
    }

    /// Create array `name` of element type `dtype` (all zeros) and open it.
    pub fn create_array(
        &self,
        name: &str,
        dtype: &DType,
        shape: &[u64],
        opts: ArrayOptions,
    ) -> Result<Arc<SharedArray>> {
        self.open(|tx, arrays| {
            // The bytes view has one more axis: check that it fits as well.
            check_shape_of(
                &bytes_shape(shape, opts.order, dtype.size())?,
                opts.order,
                1,
            )?;
            let info = tx.create_array_dtype(name, dtype, shape, opts)?;
            let file = Arc::new(tx_file(tx.inner(), &info)?);
            match SharedArray::open(&self.db, &info, file, true, "transaction") {
                Ok(a) => {
                    arrays.insert(info.id, a.clone());
                    Ok(a)
                }
                Err(e) => {
                    let _ = tx.delete_array(name);
                    Err(e)
                }
            }
        })
    }

    /// Array `name` as this transaction sees it, writable. The same [`SharedArray`]
    /// every time.
    pub fn array(&self, name: &str) -> Result<Arc<SharedArray>> {
        self.open(|tx, arrays| {
            let info = tx.array_info(name)?;
            if let Some(a) = arrays.get(&info.id) {
                return Ok(a.clone());
            }
            let file = Arc::new(tx_file(tx.inner(), &info)?);
            let a = SharedArray::open(&self.db, &info, file, true, "transaction")?;
            arrays.insert(info.id, a.clone());
            Ok(a)
        })
    }

    /// Delete array `name`. Its regions still alive read zeros from now on.
    pub fn delete_array(&self, name: &str) -> Result<()> {
        self.open(|tx, arrays| {
            let info = tx.array_info(name)?;
            tx.delete_array(name)?;
            if let Some(a) = arrays.remove(&info.id) {
                let mut core = a.core.lock();
                retire(&a, &mut core, None, zeros_of(&a), None);
            }
            Ok(())
        })
    }

    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        self.open(|tx, _| tx.array_names())
    }

    /// Commit: every array's changes and the catalog changes, atomically. Any error
    /// ends the transaction too ([`TxOutcome::Failed`]: nothing committed).
    pub fn commit(&self) -> Result<Tid> {
        let (tx, arrays) =
            match std::mem::replace(&mut *self.state.lock(), TxSlot::Ended(TxOutcome::Failed)) {
                TxSlot::Open { tx, arrays } => (tx, arrays),
                TxSlot::Ended(o) => {
                    *self.state.lock() = TxSlot::Ended(o);
                    return Err(ended("transaction"));
                }
            };
        let mut cores: Vec<_> = arrays.values().map(|a| (a, a.core.lock())).collect();
        let r = Self::write_arrays(&tx, &mut cores).map(|()| {
            // Faults on other threads wait here until their array reads its snapshot.
            let locks: Vec<_> = cores
                .iter()
                .map(|(a, _)| a.exported().then(|| a.file.target.write()))
                .collect();
            (tx.commit(), locks)
        });
        let (r, locks) = match r {
            Ok((r, locks)) => (r, locks),
            Err(e) => (Err(e), cores.iter().map(|_| None).collect()),
        };
        let outcome = match &r {
            Ok(tid) => TxOutcome::Committed(*tid),
            Err(_) => TxOutcome::Failed,
        };
        self.retire_all(&mut cores, locks, outcome);
        *self.state.lock() = TxSlot::Ended(outcome);
        r
    }

    /// Shapes, holes and dirty blocks of every array, staged in `tx`.
    fn write_arrays(tx: &Transaction, cores: &mut [LockedCore<'_>]) -> Result<()> {
        for (a, core) in cores.iter_mut() {
            let Some(core) = core.as_mut() else { continue };
            if core.holes_from().is_some() {
                // Writes past the end through regions taken before a shrink.
                core.clear_past_end()?;
            }
            let info = tx.array_info_by_id(a.id)?;
            let shape = a.logical_shape(core);
            if shape != info.shape {
                tx.set_shape(&info.name, &shape)?;
            }
            if let Some(from) = core.holes_from() {
                tx.inner()
                    .stage_holes_from(a.id, from, &core.stored_since_cut())?;
            }
            core.writeout()?;
        }
        Ok(())
    }

    /// Point the arrays whose regions are alive at what they show after `outcome`, and
    /// drop every core.
    fn retire_all(
        &self,
        cores: &mut [LockedCore<'_>],
        locks: Vec<Option<RwLockWriteGuard<'_, Arc<dyn BigFile>>>>,
        outcome: TxOutcome,
    ) {
        let any = cores.iter().any(|(a, _)| a.exported());
        let (snap, changed) = if !any {
            (None, Vec::new())
        } else {
            match outcome {
                TxOutcome::Committed(tid) => (
                    self.db.snapshot_at(tid).ok(),
                    self.db.store().changed(self.start, tid).unwrap_or_default(),
                ),
                _ => (self.db.snapshot_at(self.start).ok(), Vec::new()),
            }
        };
        for ((a, core), lock) in cores.iter_mut().zip(locks) {
            if !a.exported() {
                drop(lock);
                core.take();
                continue;
            }
            let target = file_at(snap.as_ref(), a);
            match (outcome, &snap) {
                (TxOutcome::Committed(_), Some(_)) => {
                    let blocks: Vec<u64> = changed
                        .iter()
                        .filter_map(|k| match *k {
                            Key::Block { array, blk } if array == a.id => Some(blk),
                            _ => None,
                        })
                        .collect();
                    retire(a, core, lock, target, Some(&blocks));
                }
                _ => retire(a, core, lock, target, None),
            }
        }
    }

    /// Drop every change. Regions still alive read the snapshot the transaction began
    /// at.
    pub fn abort(&self) {
        let mut st = self.state.lock();
        let (tx, arrays) = match std::mem::replace(&mut *st, TxSlot::Ended(TxOutcome::Aborted)) {
            TxSlot::Open { tx, arrays } => (tx, arrays),
            // Already ended: keep the first outcome.
            TxSlot::Ended(o) => {
                *st = TxSlot::Ended(o);
                return;
            }
        };
        drop(st);
        let mut cores: Vec<_> = arrays.values().map(|a| (a, a.core.lock())).collect();
        let locks = cores.iter().map(|_| None).collect();
        self.retire_all(&mut cores, locks, TxOutcome::Aborted);
        drop(cores);
        drop(tx);
    }
}

impl Drop for SharedTransaction {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A read-only snapshot that bindings can share; see the module docs.
#[derive(Debug)]
pub struct SharedSnapshot {
    db: Db,
    tid: Tid,
    /// `None` once closed.
    state: Mutex<Option<(Snapshot, Opened)>>,
}

impl SharedSnapshot {
    /// A snapshot of the latest commit, or of commit `at`.
    pub fn new(db: &Db, at: Option<Tid>) -> Result<Arc<SharedSnapshot>> {
        let snap = match at {
            None => db.snapshot()?,
            Some(t) => db.snapshot_at(t)?,
        };
        Ok(Arc::new(SharedSnapshot {
            db: db.clone(),
            tid: snap.tid(),
            state: Mutex::new(Some((snap, BTreeMap::new()))),
        }))
    }

    /// The commit it shows.
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// Is it open?
    pub fn is_open(&self) -> bool {
        self.state.lock().is_some()
    }

    fn open<R>(
        &self,
        f: impl FnOnce(&Snapshot, &mut BTreeMap<u64, Arc<SharedArray>>) -> Result<R>,
    ) -> Result<R> {
        match &mut *self.state.lock() {
            Some((s, arrays)) => f(s, arrays),
            None => Err(ended("snapshot")),
        }
    }

    /// Array `name` (read-only); the same [`SharedArray`] every time.
    pub fn array(&self, name: &str) -> Result<Arc<SharedArray>> {
        self.open(|s, arrays| {
            let info = s.array_info(name)?;
            if let Some(a) = arrays.get(&info.id) {
                return Ok(a.clone());
            }
            let file = Arc::new(snap_file(s.inner(), &info)?);
            let a = SharedArray::open(&self.db, &info, file, false, "snapshot")?;
            arrays.insert(info.id, a.clone());
            Ok(a)
        })
    }

    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        self.open(|s, _| s.array_names())
    }

    /// Close: no more arrays can be opened; regions alive keep showing the snapshot.
    pub fn close(&self) {
        let st = self.state.lock().take();
        if let Some((_, arrays)) = st {
            for a in arrays.values() {
                a.core.lock().take();
            }
        }
    }
}
