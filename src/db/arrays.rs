//! Typed arrays of a transaction or a snapshot: where the two towers meet.
//!
//! Each array opened in a transaction (or snapshot) gets one [`ArrayCore`] on a virtmem
//! file handle whose [`BigFile`] is an [`ArrayFile`]: `load_blk` reads the block as the
//! transaction sees it (its own staged writes first, then the version at its snapshot),
//! `store_blk` stages the block in the transaction, and `content_key` names the stored
//! version (array id, tid), so that RAM pages loaded by one transaction are reused by a
//! later one in the same process whenever the block did not change in between — only
//! the blocks that changed load again, whatever happened to the shape.
//!
//! ## Borrow rules
//!
//! In one transaction an array has either any number of [`Array`] handles or one
//! [`ArrayMut`]. The registry keeps one entry per opened array:
//!
//! ```text
//!   (absent) --array()/array_mut()/create_array()--> Idle(core) / Lent
//!   Idle(core): Arc held by the registry; every Array handle holds a clone.
//!               array()     -> clone the Arc              (any number)
//!               array_mut() -> only if no Array is alive (strong count 1): take the
//!                              core out -> Lent
//!   Lent:       an ArrayMut owns the core; array()/array_mut() -> Error::Busy.
//!               ArrayMut::drop -> Idle(core)
//! ```
//!
//! Views borrow their handle and handles borrow the transaction, and `commit`/`abort`
//! consume it: at commit every entry is Idle and no view is alive, so the cores can be
//! written out and dropped.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::{Deref, RangeBounds};
use std::sync::Arc;

use ndarray::{ArrayViewD, ArrayViewMutD};
use parking_lot::Mutex;

use super::{ArrayInfo, SnapInner, TxInner};
use crate::array::{ArrayCore, DType, Element, Layout};
use crate::bigfile::{BigFile, ContentKeys, DirectMap, FileSlice, SubBlockPages};
use crate::virtmem::{VirtMem, MAX_MAPPING_LEN};
use crate::{Error, Result};

/// Where an [`ArrayFile`] reads and stores blocks.
#[derive(Debug)]
enum Source {
    Tx(Arc<TxInner>),
    Snap(Arc<SnapInner>),
}

/// One array of one transaction or snapshot, as a file of blocks for virtmem.
#[derive(Debug)]
pub(crate) struct ArrayFile {
    src: Source,
    id: u64,
    name: String,
    block_size: usize,
}

impl BigFile for ArrayFile {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        match &self.src {
            Source::Tx(t) => t.read_block(self.id, blk, buf),
            Source::Snap(s) => s.read_block(self.id, blk, buf),
        }
    }

    fn store_blk(&self, blk: u64, data: &[u8]) -> Result<()> {
        match &self.src {
            Source::Tx(t) => t.write_block(self.id, blk, data),
            Source::Snap(_) => Err(Error::ReadOnly(format!(
                "array {:?} of a snapshot cannot be written",
                self.name
            ))),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn load_writes_whole_block(&self) -> bool {
        // read_block fills the whole buffer: the stored (trimmed) bytes, then zeros.
        true
    }

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

impl ContentKeys for ArrayFile {
    fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        // A block never written has no version (None): it reads zeros and is not worth
        // sharing. A block staged by the transaction is its own (None as well).
        let v = match &self.src {
            Source::Tx(t) => t.block_version(self.id, blk),
            Source::Snap(s) => s.at.block_version(self.id, blk),
        };
        match v {
            Ok(Some(tid)) => Some((self.id, tid.get())),
            _ => None,
        }
    }
}

impl SubBlockPages for ArrayFile {
    fn read_pages(&self, blk: u64, pages: &[u32], out: &mut [u8]) -> Result<()> {
        match &self.src {
            Source::Tx(t) => t.read_pages(self.id, blk, pages, out),
            Source::Snap(s) => crate::bigfile::with_block_scratch(self.block_size, |buf| {
                s.read_block(self.id, blk, buf)?;
                crate::bigfile::copy_pages_out(buf, pages, out)
            }),
        }
    }

    fn store_pages(&self, blk: u64, pages: &[(u32, &[u8])]) -> Result<()> {
        match &self.src {
            Source::Tx(t) => t.write_pages(self.id, blk, pages),
            Source::Snap(_) => Err(Error::ReadOnly(format!(
                "array {:?} of a snapshot cannot be written",
                self.name
            ))),
        }
    }
}

// SAFETY: `map_source` returns the slices of the store (`Generation::map_source`):
// bytes of committed records in the log or a checkpoint, which the store never
// rewrites while a generation that reaches them is alive; `slice.keep` holds that
// generation.
#[allow(unsafe_code)]
unsafe impl DirectMap for ArrayFile {
    fn map_source(&self, blk: u64, fetch: bool) -> Result<Option<FileSlice>> {
        match &self.src {
            Source::Tx(t) => t.map_source(self.id, blk, self.block_size, fetch),
            Source::Snap(s) => s.at.map_block(self.id, blk, self.block_size, fetch),
        }
    }

    fn claim_check(&self, src: &FileSlice) -> bool {
        match &self.src {
            Source::Tx(t) => t.claim_check(src),
            Source::Snap(s) => s.at.claim_check(src),
        }
    }

    fn source_checked(&self, src: &FileSlice) {
        match &self.src {
            Source::Tx(t) => t.source_checked(src),
            Source::Snap(s) => s.at.source_checked(src),
        }
    }
}

/// The type-erased operations commit needs on a core of any element type.
pub(crate) trait AnyCore: Send + Sync + 'static {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn shape(&self) -> Vec<u64>;
    fn writeout(&self) -> Result<()>;
    fn holes_from(&self) -> Option<u64>;
    fn stored_since_cut(&self) -> Vec<u64>;
}

impl<T: Element> AnyCore for ArrayCore<T> {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
    fn shape(&self) -> Vec<u64> {
        ArrayCore::shape(self).to_vec()
    }
    fn writeout(&self) -> Result<()> {
        ArrayCore::writeout(self)
    }
    fn holes_from(&self) -> Option<u64> {
        ArrayCore::holes_from(self)
    }
    fn stored_since_cut(&self) -> Vec<u64> {
        ArrayCore::stored_since_cut(self)
    }
}

/// An opened array of a transaction or snapshot (see the module docs).
pub(crate) enum Entry {
    /// Held here; `Array` handles hold clones of the `Arc`.
    Idle(Arc<dyn AnyCore>),
    /// Lent to an `ArrayMut`.
    Lent,
}

/// The opened arrays of one transaction or snapshot, by array id.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) entries: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.entries.lock();
        f.debug_struct("Registry").field("open", &g.len()).finish()
    }
}

fn downcast<T: Element>(core: Arc<dyn AnyCore>, name: &str) -> Result<Arc<ArrayCore<T>>> {
    core.into_any()
        .downcast::<ArrayCore<T>>()
        .map_err(|_| Error::TypeMismatch {
            array: name.to_string(),
            stored: "another Rust type with the same layout".into(),
            asked: std::any::type_name::<T>().into(),
        })
}

fn busy(name: &str, why: &str) -> Error {
    Error::Busy(format!("array {name:?} {why} in this transaction"))
}

/// Check that `T` is what the catalog says and that the shape fits what one array may
/// reserve; return the decoded element type.
pub(crate) fn check_type<T: Element>(info: &ArrayInfo) -> Result<DType> {
    let stored = DType::decode(&info.dtype)?;
    stored.check::<T>(&info.name)?;
    Ok(stored)
}

/// Check a shape for an array of `T` before anything is written to the catalog.
pub(crate) fn check_shape<T: Element>(shape: &[u64], order: crate::array::Order) -> Result<()> {
    check_shape_of(shape, order, std::mem::size_of::<T>())
}

/// [`check_shape`] for elements of `elem_size` bytes (the byte-level API).
pub(crate) fn check_shape_of(
    shape: &[u64],
    order: crate::array::Order,
    elem_size: usize,
) -> Result<()> {
    let layout = Layout::new(shape, order, elem_size)?;
    if layout.byte_size() > MAX_MAPPING_LEN {
        return Err(Error::OutOfRange(format!(
            "an array of shape {shape:?} is {} bytes, more than the {MAX_MAPPING_LEN} bytes one array may span",
            layout.byte_size()
        )));
    }
    Ok(())
}

impl Registry {
    /// Open (or find) the array for shared reading.
    pub(crate) fn shared<T: Element>(
        &self,
        vm: &Arc<VirtMem>,
        info: &ArrayInfo,
        file: impl FnOnce() -> ArrayFile,
    ) -> Result<Arc<ArrayCore<T>>> {
        let stored = check_type::<T>(info)?;
        let mut g = self.entries.lock();
        match g.get(&info.id) {
            Some(Entry::Lent) => Err(busy(&info.name, "is borrowed by an ArrayMut")),
            Some(Entry::Idle(core)) => downcast::<T>(core.clone(), &info.name),
            None => {
                let core = Arc::new(ArrayCore::<T>::open(
                    vm,
                    Arc::new(file()),
                    &stored,
                    &info.shape,
                    info.order,
                )?);
                g.insert(info.id, Entry::Idle(core.clone()));
                Ok(core)
            }
        }
    }

    /// Open (or take) the array for writing: no other handle may be alive.
    pub(crate) fn exclusive<T: Element>(
        &self,
        vm: &Arc<VirtMem>,
        info: &ArrayInfo,
        file: impl FnOnce() -> ArrayFile,
    ) -> Result<ArrayCore<T>> {
        let stored = check_type::<T>(info)?;
        let mut g = self.entries.lock();
        match g.remove(&info.id) {
            Some(Entry::Lent) => {
                g.insert(info.id, Entry::Lent);
                Err(busy(&info.name, "is already borrowed by an ArrayMut"))
            }
            Some(Entry::Idle(core)) => {
                if Arc::strong_count(&core) > 1 {
                    g.insert(info.id, Entry::Idle(core));
                    return Err(busy(&info.name, "has Array handles alive"));
                }
                let typed = match downcast::<T>(core.clone(), &info.name) {
                    Ok(t) => t,
                    Err(e) => {
                        g.insert(info.id, Entry::Idle(core));
                        return Err(e);
                    }
                };
                drop(core);
                let core = Arc::try_unwrap(typed)
                    .map_err(|_| busy(&info.name, "has Array handles alive"))?;
                g.insert(info.id, Entry::Lent);
                Ok(core)
            }
            None => {
                let core =
                    ArrayCore::<T>::open(vm, Arc::new(file()), &stored, &info.shape, info.order)?;
                g.insert(info.id, Entry::Lent);
                Ok(core)
            }
        }
    }

    /// Give back a core taken by [`Registry::exclusive`].
    fn give_back<T: Element>(&self, id: u64, core: ArrayCore<T>) {
        self.entries.lock().insert(id, Entry::Idle(Arc::new(core)));
    }

    /// Is array `id` open (Idle with handles, or Lent)?
    pub(crate) fn in_use(&self, id: u64) -> bool {
        match self.entries.lock().get(&id) {
            None => false,
            Some(Entry::Lent) => true,
            Some(Entry::Idle(c)) => Arc::strong_count(c) > 1,
        }
    }

    /// Forget array `id` (deleted): its pages and dirty blocks go with it.
    pub(crate) fn forget(&self, id: u64) {
        self.entries.lock().remove(&id);
    }

    /// Every opened core, for commit. Call only when no handle is alive.
    pub(crate) fn take_all(&self) -> Vec<(u64, Arc<dyn AnyCore>)> {
        self.entries
            .lock()
            .drain()
            .filter_map(|(id, e)| match e {
                Entry::Idle(c) => Some((id, c)),
                Entry::Lent => None,
            })
            .collect()
    }
}

pub(crate) fn tx_file(tx: &Arc<TxInner>, info: &ArrayInfo) -> Result<ArrayFile> {
    Ok(ArrayFile {
        src: Source::Tx(tx.clone()),
        id: info.id,
        name: info.name.clone(),
        block_size: usize::try_from(info.block_size)
            .map_err(|_| Error::OutOfRange("block size".into()))?,
    })
}

pub(crate) fn snap_file(s: &Arc<SnapInner>, info: &ArrayInfo) -> Result<ArrayFile> {
    Ok(ArrayFile {
        src: Source::Snap(s.clone()),
        id: info.id,
        name: info.name.clone(),
        block_size: usize::try_from(info.block_size)
            .map_err(|_| Error::OutOfRange("block size".into()))?,
    })
}

/// A read-only typed array of a transaction or snapshot. Views borrow it; it borrows
/// the transaction or snapshot, so no view outlives them.
pub struct Array<'a, T: Element> {
    core: Arc<ArrayCore<T>>,
    _owner: PhantomData<&'a ()>,
}

/// A writable typed array of a transaction: everything [`Array`] has (through `Deref`)
/// plus `view_mut`, `append`, `resize` and `write_from`. At most one per array per
/// transaction, and not while `Array` handles of it are alive.
pub struct ArrayMut<'a, T: Element> {
    /// `Some` until dropped, when the core goes back to the registry.
    core: Option<Array<'a, T>>,
    registry: &'a Registry,
    id: u64,
}

impl<'a, T: Element> Array<'a, T> {
    pub(crate) fn new(core: Arc<ArrayCore<T>>) -> Self {
        Array {
            core,
            _owner: PhantomData,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[u64] {
        self.core.shape()
    }

    /// Extent of the major axis (axis 0 in C order, the last axis in F order).
    pub fn len(&self) -> u64 {
        self.core.len()
    }

    /// Is the major axis empty?
    pub fn is_empty(&self) -> bool {
        self.core.is_empty()
    }

    /// The element type as stored in the catalog.
    pub fn dtype(&self) -> &DType {
        self.core.dtype()
    }

    /// Memory order.
    pub fn order(&self) -> crate::array::Order {
        self.core.layout().order()
    }

    /// A view of `rows` of the major axis. Costs no RAM and no I/O: blocks load when the
    /// view is first read. A block that fails to load inside a page fault stops the
    /// process; call [`Array::load`] first to get such failures as an `Err`.
    pub fn view(&self, rows: impl RangeBounds<u64>) -> Result<ArrayViewD<'_, T>> {
        self.core.view(rows)
    }

    /// Load `rows` now, returning load errors (I/O, checksum, RAM budget) as `Err`.
    pub fn load(&self, rows: impl RangeBounds<u64>) -> Result<()> {
        self.core.load(rows)
    }

    /// Copy `rows` into `out` (whose length must be the number of elements of `rows`).
    pub fn read_into(&self, rows: impl RangeBounds<u64>, out: &mut [T]) -> Result<()> {
        self.core.read_into(rows, out)
    }

    /// Copy `rows` into a new `Vec`, in the array's order.
    pub fn to_vec(&self, rows: impl RangeBounds<u64>) -> Result<Vec<T>> {
        let r = self.core.layout().rows(rows)?;
        let n = (r.end - r.start)
            .checked_mul(self.core.layout().row_elems())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::OutOfRange(format!("rows {r:?} do not fit in memory")))?;
        let mut v = vec![T::zeroed(); n];
        self.core.read_into(r, &mut v)?;
        Ok(v)
    }
}

impl<'a, T: Element> ArrayMut<'a, T> {
    pub(crate) fn new(core: ArrayCore<T>, registry: &'a Registry, id: u64) -> Self {
        ArrayMut {
            core: Some(Array::new(Arc::new(core))),
            registry,
            id,
        }
    }

    fn core_mut(&mut self) -> &mut ArrayCore<T> {
        let a = self.core.as_mut().expect("present until drop");
        Arc::get_mut(&mut a.core).expect("an ArrayMut's core is never shared")
    }

    /// A writable view of `rows` of the major axis: the first write to each block marks
    /// it dirty; commit writes only dirty blocks.
    pub fn view_mut(&mut self, rows: impl RangeBounds<u64>) -> Result<ArrayViewMutD<'_, T>> {
        self.core_mut().view_mut(rows)
    }

    /// Append whole rows (elements in the array's own order). Costs O(appended).
    pub fn append(&mut self, rows: &[T]) -> Result<()> {
        self.core_mut().append(rows)
    }

    /// Change the extent of the major axis (the other axes cannot change). O(1) to grow;
    /// growing again after a shrink reads zeros, not the old data.
    pub fn resize(&mut self, shape: &[u64]) -> Result<()> {
        self.core_mut().resize(shape)
    }

    /// Copy `data` into `rows` (its length must be the number of elements of `rows`).
    pub fn write_from(&mut self, rows: impl RangeBounds<u64>, data: &[T]) -> Result<()> {
        self.core_mut().write_from(rows, data)
    }

    /// Load `rows` for writing now, returning load errors and `RamExhausted` as `Err`.
    pub fn load_mut(&mut self, rows: impl RangeBounds<u64>) -> Result<()> {
        self.core_mut().load_mut(rows)
    }
}

impl<'a, T: Element> Deref for ArrayMut<'a, T> {
    type Target = Array<'a, T>;
    fn deref(&self) -> &Array<'a, T> {
        self.core.as_ref().expect("present until drop")
    }
}

impl<T: Element> Drop for ArrayMut<'_, T> {
    fn drop(&mut self) {
        if let Some(a) = self.core.take() {
            match Arc::try_unwrap(a.core) {
                Ok(core) => self.registry.give_back(self.id, core),
                // Unreachable: the Arc is never cloned. Dropping the core would lose
                // its dirty blocks, so keep it shared instead.
                Err(shared) => {
                    self.registry
                        .entries
                        .lock()
                        .insert(self.id, Entry::Idle(shared));
                }
            }
        }
    }
}

impl<T: Element> std::fmt::Debug for Array<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<T: Element> std::fmt::Debug for ArrayMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.core {
            Some(a) => a.fmt(f),
            None => f.write_str("ArrayMut(dropped)"),
        }
    }
}
