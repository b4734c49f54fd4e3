//! [`ArrayCore`]: a typed N-d array on one virtmem file handle.
//!
//! The core owns a `FileHandle` and one `Mapping` that reserves the array's extent plus
//! room to grow; views are sub-slices of the mapping and load lazily. It knows nothing
//! of storage: the db layer hands it a `BigFile` (a store snapshot plus the
//! transaction's own writes) and, at commit, reads back [`ArrayCore::shape`],
//! [`ArrayCore::dirty_blocks`] / [`ArrayCore::writeout`] and
//! [`ArrayCore::holes_from`].
//!
//! ## Invariants
//!
//! 1. `map` shows blocks `[0, map.n_blks())` and covers the extent:
//!    `byte_size() <= map.len()`.
//! 2. **Zero tail**: every byte at or past `byte_size()` reads as zero through the
//!    handle once it becomes part of the array again. Within the last partial block this
//!    is kept by writing zeros (shrink, failed append). Whole blocks past the end load as
//!    zeros because the core wraps the file in a [`ZeroTail`] that answers `load_blk` for
//!    blocks `>= zero_from` with zeros (unless the block was stored since).
//!    `zero_from <= ceil(byte_size / block_size)` at all times; it starts there on open
//!    (so stray bytes past the end of a stored array never show) and only goes down
//!    (shrink).
//! 3. **Stale pages**: after a shrink the handle may still hold *clean* pages of blocks
//!    that were cut off (their old content). Such blocks all lie in
//!    `[ceil(byte_size / block_size), stale_end)`; growing (resize or append)
//!    invalidates the ones it re-exposes before anything reads them — or, when they are
//!    more than [`MAX_EXPOSE_INVALIDATIONS`], stores the dirty blocks through the file
//!    (`writeout`) and replaces the handle by a fresh one, which holds no pages at all
//!    (so `store_blk` may be called before commit; the db stages it). Dirty pages of
//!    blocks cut off are dropped at the shrink itself (they must not be written out),
//!    found through `dirty_blocks()` (blocks spilled through the file included: the
//!    zero tail hides what the file holds of them, and commit stages holes over it).
//! 4. **Holes**: `holes_from` is `None` until a shrink; then `Some(b)`, the lowest block
//!    a shrink cut off. In this core's version of the file, every block `>= b` that was
//!    not written since (not dirty, not stored through `writeout`) is all zeros; the db
//!    layer must make such blocks holes at commit.
//! 5. No view is alive during a `&mut self` method, so remapping, invalidating and
//!    discarding never change bytes under a view.
//!
//! Costs: append is O(bytes appended): it loads for write and copies only the blocks it
//! touches. Resize touches no data: a shrink zeroes the tail of at most one block and
//! drops the dirty blocks it cuts off (O(dirty blocks)); a grow is O(1), except when it
//! re-exposes blocks an earlier shrink of this core cut off: then it invalidates up to
//! [`MAX_EXPOSE_INVALIDATIONS`] of them, or writes out the dirty blocks and starts a
//! fresh handle (O(dirty blocks)).

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::ops::{Range, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ndarray::{ArrayViewD, ArrayViewMutD};
use parking_lot::Mutex;

use super::dtype::{element_dtype, DType, Element};
use super::layout::{Layout, Order};
#[cfg(any(test, feature = "internals"))]
use super::npy::NpyHeader;
use super::view::{mapping_bytes, mapping_bytes_mut, mapping_view, mapping_view_mut};
use crate::bigfile::{BigFile, ContentKeys, DirectMap, FileSlice, SubBlockPages};
use crate::virtmem::{FileHandle, Mapping, MappingGuard, VirtMem, MAX_MAPPING_LEN};
use crate::{Error, Result};

/// Smallest reservation, in blocks: small arrays can grow a little without a remap.
pub const MIN_RESERVE_BLKS: u64 = 8;

/// A grow re-exposing at most this many possibly stale blocks invalidates them one by
/// one (well under a millisecond); more, and the core starts a fresh handle instead
/// (see [`ArrayCore::resize`]), so that a grow never costs more than this bound plus
/// the dirty blocks.
pub const MAX_EXPOSE_INVALIDATIONS: u64 = 4096;

/// The file the core's handle reads: the db's file, with blocks past the array's end
/// reading as zeros (invariant 2).
#[derive(Debug)]
pub struct ZeroTail {
    inner: Arc<dyn BigFile>,
    /// Blocks `>= zero_from` read as zeros unless in `stored`.
    zero_from: AtomicU64,
    /// Blocks `>= zero_from` stored through this file since they were cut off: they read
    /// from `inner` again (which returns the transaction's own writes first).
    stored: Mutex<BTreeSet<u64>>,
}

impl ZeroTail {
    fn cut(&self, blk: u64) -> bool {
        blk >= self.zero_from.load(Ordering::Acquire) && !self.stored.lock().contains(&blk)
    }

    /// The wrapped file.
    #[cfg(any(test, feature = "internals"))]
    pub fn inner(&self) -> &Arc<dyn BigFile> {
        &self.inner
    }
}

impl BigFile for ZeroTail {
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }

    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        if self.cut(blk) {
            buf.fill(0);
            return Ok(());
        }
        self.inner.load_blk(blk, buf)
    }

    fn store_blk(&self, blk: u64, data: &[u8]) -> Result<()> {
        self.inner.store_blk(blk, data)?;
        if blk >= self.zero_from.load(Ordering::Acquire) {
            self.stored.lock().insert(blk);
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn load_writes_whole_block(&self) -> bool {
        // A cut block is filled with zeros whole; any other is `inner`'s load.
        self.inner.load_writes_whole_block()
    }

    fn content_keys(&self) -> Option<&dyn ContentKeys> {
        self.inner.content_keys().map(|_| self as &dyn ContentKeys)
    }

    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages> {
        // Cut blocks need this file's own answer even when `inner` has no pages.
        Some(self)
    }

    fn direct_map(&self) -> Option<&dyn DirectMap> {
        self.inner.direct_map().map(|_| self as &dyn DirectMap)
    }
}

impl ContentKeys for ZeroTail {
    fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        // Past zero_from the content is zeros or this core's own writes, not the
        // snapshot's block: never share it with other handles.
        if blk >= self.zero_from.load(Ordering::Acquire) {
            return None;
        }
        self.inner.content_key(blk)
    }
}

impl SubBlockPages for ZeroTail {
    fn read_pages(&self, blk: u64, pages: &[u32], out: &mut [u8]) -> Result<()> {
        if self.cut(blk) {
            out.fill(0);
            return Ok(());
        }
        self.inner.read_pages(blk, pages, out)
    }

    fn store_pages(&self, blk: u64, pages: &[(u32, &[u8])]) -> Result<()> {
        if self.cut(blk) {
            // The block reads as zeros here, whatever `inner` holds: store it whole.
            return crate::bigfile::with_block_scratch(self.block_size(), |buf| {
                buf.fill(0);
                crate::bigfile::apply_pages(buf, pages)?;
                self.store_blk(blk, buf)
            });
        }
        self.inner.store_pages(blk, pages)
    }
}

// SAFETY: every slice comes from `inner`'s `DirectMap`, whose promise holds for it;
// blocks past `zero_from` (zeros or this core's own writes) are never mapped.
#[allow(unsafe_code)]
unsafe impl DirectMap for ZeroTail {
    fn map_source(&self, blk: u64, fetch: bool) -> Result<Option<FileSlice>> {
        // Past zero_from the content is zeros or this core's own writes: load them.
        if blk >= self.zero_from.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.inner.map_source(blk, fetch)
    }

    fn claim_check(&self, src: &FileSlice) -> bool {
        self.inner.claim_check(src)
    }

    fn source_checked(&self, src: &FileSlice) {
        self.inner.source_checked(src)
    }
}

/// A typed N-d array on a virtmem file handle. See the module docs for the invariants.
pub struct ArrayCore<T: Element> {
    layout: Layout,
    dtype: DType,
    vm: Arc<VirtMem>,
    file: Arc<ZeroTail>,
    handle: FileHandle,
    map: Mapping,
    holes_from: Option<u64>,
    /// Invariant 3: end (exclusive) of the blocks that may hold stale clean pages.
    stale_end: u64,
    /// [`MAX_EXPOSE_INVALIDATIONS`], lowered by tests to exercise the fresh-handle path.
    expose_limit: u64,
    _elem: PhantomData<fn() -> T>,
}

impl<T: Element> std::fmt::Debug for ArrayCore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayCore")
            .field("name", &self.file.name())
            .field("dtype", &self.dtype.to_string())
            .field("shape", &self.layout.shape())
            .field("order", &self.layout.order())
            .field("reserved", &self.map.len())
            .field("holes_from", &self.holes_from)
            .finish()
    }
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| Error::OutOfRange(format!("{v} bytes do not fit in the address space")))
}

fn to_u64(v: usize) -> u64 {
    // usize is at most 64 bits on every supported target.
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl<T: Element> ArrayCore<T> {
    /// Open an array of `shape` (in `order`) stored in `file`, whose catalog says it
    /// holds `stored`. `T` must be that type ([`Error::TypeMismatch`] otherwise). Costs
    /// no RAM and no I/O: data loads when views touch it.
    pub fn open(
        vm: &Arc<VirtMem>,
        file: Arc<dyn BigFile>,
        stored: &DType,
        shape: &[u64],
        order: Order,
    ) -> Result<Self> {
        let dtype = element_dtype::<T>()?;
        stored.check::<T>(file.name())?;
        let layout = Layout::new(shape, order, std::mem::size_of::<T>())?;
        let zt = Arc::new(ZeroTail {
            inner: file,
            // Set below, once the block size is known; nothing loads before that.
            zero_from: AtomicU64::new(u64::MAX),
            stored: Mutex::new(BTreeSet::new()),
        });
        let handle = vm.open(zt.clone())?;
        let bs = to_u64(handle.block_size());
        let end_blk = layout.byte_size().div_ceil(bs);
        zt.zero_from.store(end_blk, Ordering::Release);
        let map = handle.mmap(0, reserve_blocks(end_blk, bs)?)?;
        Ok(ArrayCore {
            layout,
            dtype,
            vm: vm.clone(),
            file: zt,
            handle,
            map,
            holes_from: None,
            stale_end: 0,
            expose_limit: MAX_EXPOSE_INVALIDATIONS,
            _elem: PhantomData,
        })
    }

    /// Address range of the current mapping, kept reserved and served for as long as
    /// the guard lives, even after the core remaps (resize, append) or is dropped. Row 0
    /// starts at `guard.as_ptr()`; the array's bytes are `layout().byte_range(..)` of
    /// it. Reading through the guard's pointer follows the rules of the views; for
    /// bindings whose arrays hold raw pointers with a lifetime of their own.
    pub fn mapping_guard(&self) -> MappingGuard {
        self.map.guard()
    }

    /// Never replace the file handle: a grow that re-exposes many blocks a shrink cut
    /// off invalidates them one by one instead of starting a fresh handle (see
    /// [`ArrayCore::resize`]), so that every [`MappingGuard`] handed out keeps showing
    /// the core's current data.
    pub fn pin_handle(&mut self) {
        self.expose_limit = u64::MAX;
    }

    /// Make every byte past the end of the array read as zero again and drop every
    /// page of the blocks past it, whatever was written there through a
    /// [`MappingGuard`] taken before a shrink (invariants 2 and 3 for bindings). Costs
    /// one check of the last partial block and one invalidation per reserved block
    /// past the end.
    pub fn clear_past_end(&mut self) -> Result<()> {
        let end = self.layout.byte_size();
        self.clear_tail(end, to_u64(self.map.len()))?;
        let bs = to_u64(self.block_size());
        for blk in end.div_ceil(bs)..self.map.n_blks() {
            self.handle.invalidate(blk);
        }
        self.stale_end = 0;
        Ok(())
    }

    /// The shape.
    pub fn shape(&self) -> &[u64] {
        self.layout.shape()
    }

    /// Number of rows (extent of the major axis).
    pub fn len(&self) -> u64 {
        self.layout.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }

    /// Shape, order and element size.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The element type.
    pub fn dtype(&self) -> &DType {
        &self.dtype
    }

    /// The `.npy` header describing this array (for export).
    #[cfg(any(test, feature = "internals"))]
    pub fn npy_header(&self) -> NpyHeader {
        NpyHeader::new(self.dtype.clone(), self.layout.shape(), self.layout.order())
    }

    /// Block size of the file.
    pub fn block_size(&self) -> usize {
        self.handle.block_size()
    }

    /// Bytes of address space reserved (the array can grow to this without a remap).
    pub fn reserved_bytes(&self) -> usize {
        self.map.len()
    }

    /// Read-only view of `rows` (a range over the major axis). Lazy: costs no RAM until
    /// read. Rows out of range are [`Error::OutOfRange`].
    pub fn view(&self, rows: impl RangeBounds<u64>) -> Result<ArrayViewD<'_, T>> {
        let rows = self.layout.rows(rows)?;
        mapping_view(&self.map, &self.layout, rows)
    }

    /// Read-write view of `rows`. Writes mark their blocks dirty.
    pub fn view_mut(&mut self, rows: impl RangeBounds<u64>) -> Result<ArrayViewMutD<'_, T>> {
        let rows = self.layout.rows(rows)?;
        mapping_view_mut(&mut self.map, &self.layout, rows)
    }

    fn bytes_of(&self, rows: impl RangeBounds<u64>) -> Result<(Range<u64>, Range<usize>)> {
        let rows = self.layout.rows(rows)?;
        let b = self.layout.byte_range(&rows)?;
        Ok((rows, to_usize(b.start)?..to_usize(b.end)?))
    }

    /// Load `rows` ahead, returning load errors (and spill errors: a dirty block that
    /// could not be stored to make room) as `Err` rather than stopping the process in a
    /// fault. With more rows than the RAM budget holds, early
    /// blocks may be reclaimed again.
    pub fn load(&self, rows: impl RangeBounds<u64>) -> Result<()> {
        let (_, b) = self.bytes_of(rows)?;
        self.map.load(b.start, b.len(), false)
    }

    /// Like [`ArrayCore::load`], and make the blocks writable (dirty), so that writes
    /// through a view cannot fail in a fault.
    pub fn load_mut(&mut self, rows: impl RangeBounds<u64>) -> Result<()> {
        let (_, b) = self.bytes_of(rows)?;
        self.map.load(b.start, b.len(), true)
    }

    fn check_count(&self, rows: &Range<u64>, n: usize) -> Result<()> {
        let want = (rows.end - rows.start).saturating_mul(self.layout.row_elems());
        if to_u64(n) != want {
            return Err(Error::InvalidArgument(format!(
                "rows {rows:?} hold {want} elements, the slice has {n}"
            )));
        }
        Ok(())
    }

    /// Copy `rows` into `out` (elements in the array's order). Each block is loaded
    /// checked before it is copied, so load errors are `Err`.
    pub fn read_into(&self, rows: impl RangeBounds<u64>, out: &mut [T]) -> Result<()> {
        let (rows, b) = self.bytes_of(rows)?;
        self.check_count(&rows, out.len())?;
        let out: &mut [u8] = bytemuck::cast_slice_mut(out);
        let bs = self.block_size();
        let mut done = 0;
        while done < out.len() {
            let at = b.start + done;
            let n = (out.len() - done).min(bs - at % bs);
            self.map.load(at, n, false)?;
            out[done..done + n].copy_from_slice(mapping_bytes(&self.map, at..at + n)?);
            done += n;
        }
        Ok(())
    }

    /// Copy `data` (elements in the array's order) into `rows`. A block written in
    /// part is recorded as dirty 4 KiB pages (`Mapping::write_pages`): no fault, no
    /// whole block held in RAM, and a commit that stores just those pages. A block
    /// written whole, already dirty whole, or with more than a quarter of its pages
    /// written is loaded for write and tracked whole. On `Err` a prefix of the rows may
    /// have been written.
    pub fn write_from(&mut self, rows: impl RangeBounds<u64>, data: &[T]) -> Result<()> {
        let (rows, b) = self.bytes_of(rows)?;
        self.check_count(&rows, data.len())?;
        let src: &[u8] = bytemuck::cast_slice(data);
        let bs = self.block_size();
        let mut done = 0;
        while done < src.len() {
            let at = b.start + done;
            let n = (src.len() - done).min(bs - at % bs);
            let part = &src[done..done + n];
            if !self.map.write_pages(at, part)? {
                self.map.load(at, n, true)?;
                mapping_bytes_mut(&mut self.map, at..at + n)?.copy_from_slice(part);
            }
            done += n;
        }
        Ok(())
    }

    /// Copy `src` to byte `off` of the mapping, block by block, each loaded for write
    /// first. On error, returns how many bytes were copied.
    fn copy_in(&mut self, off: usize, src: &[u8]) -> std::result::Result<(), (usize, Error)> {
        let bs = self.block_size();
        let mut done = 0;
        while done < src.len() {
            let at = off + done;
            let n = (src.len() - done).min(bs - at % bs);
            self.map.load(at, n, true).map_err(|e| (done, e))?;
            mapping_bytes_mut(&mut self.map, at..at + n)
                .map_err(|e| (done, e))?
                .copy_from_slice(&src[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Make sure the mapping covers `bytes` (invariant 1), remapping to a larger
    /// reservation if needed. Called only from `&mut self` methods (invariant 5).
    fn reserve(&mut self, bytes: u64) -> Result<()> {
        let bs = to_u64(self.block_size());
        let need = bytes.div_ceil(bs);
        if need <= self.map.n_blks() {
            return Ok(());
        }
        let map = self.handle.mmap(0, reserve_blocks(need, bs)?)?;
        // The old mapping drops here; the handle keeps its pages and dirty blocks.
        self.map = map;
        Ok(())
    }

    /// Append whole rows (elements in the array's order; a row is `row_elems()`
    /// elements). Touches only the blocks it writes. On `Err` the array is unchanged.
    pub fn append(&mut self, rows: &[T]) -> Result<()> {
        let per_row = self.layout.row_elems();
        let n_elems = to_u64(rows.len());
        if n_elems == 0 {
            return Ok(());
        }
        if per_row == 0 || n_elems % per_row != 0 {
            return Err(Error::InvalidArgument(format!(
                "append of {n_elems} elements to rows of {per_row} elements: not a whole number of rows"
            )));
        }
        let new_len = self
            .layout
            .len()
            .checked_add(n_elems / per_row)
            .ok_or_else(|| Error::OutOfRange("length overflows u64".into()))?;
        let new_layout = self.layout.with_len(new_len)?;
        self.reserve(new_layout.byte_size())?;
        self.expose(new_layout.byte_size())?;
        let start = to_usize(self.layout.byte_size())?;
        match self.copy_in(start, bytemuck::cast_slice(rows)) {
            Ok(()) => {
                self.layout = new_layout;
                Ok(())
            }
            Err((written, e)) => {
                // Restore the zero tail (invariant 2) over what was written past the end.
                let from = to_u64(start);
                let _ = self.clear_tail(from, from.saturating_add(to_u64(written)));
                Err(e)
            }
        }
    }

    /// Change the extent of the major axis: `shape` must equal the current shape except
    /// on the major axis ([`Error::InvalidArgument`] otherwise). Growing reads zeros;
    /// shrinking drops the rows cut off, and growing again reads zeros, not old data.
    pub fn resize(&mut self, shape: &[u64]) -> Result<()> {
        let major = self.layout.major_axis();
        let same_rows = shape.len() == self.layout.ndim()
            && shape
                .iter()
                .zip(self.layout.shape())
                .enumerate()
                .all(|(i, (a, b))| i == major || a == b);
        if !same_rows {
            return Err(Error::InvalidArgument(format!(
                "resize from {:?} to {shape:?}: only the major axis (axis {major}) can change",
                self.layout.shape()
            )));
        }
        let new_layout = self.layout.with_len(shape[major])?;
        let (old_bytes, new_bytes) = (self.layout.byte_size(), new_layout.byte_size());
        if new_bytes > old_bytes {
            self.reserve(new_bytes)?;
            self.expose(new_bytes)?;
        } else if new_bytes < old_bytes {
            self.clear_tail(new_bytes, old_bytes)?;
            let cut = new_bytes.div_ceil(to_u64(self.block_size()));
            self.holes_from = Some(self.holes_from.map_or(cut, |h| h.min(cut)));
        }
        self.layout = new_layout;
        Ok(())
    }

    /// Before growing to `new_bytes`: invalidate the blocks that become part of the
    /// array again and may hold stale clean pages (invariant 3), so they load through
    /// [`ZeroTail`] as zeros.
    fn expose(&mut self, new_bytes: u64) -> Result<()> {
        let bs = to_u64(self.block_size());
        let from = self.layout.byte_size().div_ceil(bs);
        let to = new_bytes.div_ceil(bs).min(self.stale_end);
        if to.saturating_sub(from) <= self.expose_limit {
            for blk in from..to {
                self.handle.invalidate(blk);
            }
            return Ok(());
        }
        // Too many to visit: keep the local changes by storing them through the file,
        // then drop every page by starting a fresh handle on the same file.
        self.handle.writeout()?;
        let handle = self.vm.open(self.file.clone())?;
        let map = handle.mmap(0, self.map.n_blks())?;
        self.map = map;
        self.handle = handle;
        self.stale_end = 0;
        Ok(())
    }

    /// Make bytes `[from, to)` (now past the end) read as zero: zero them in the partial
    /// block, lower `zero_from` so the whole blocks load as zeros, drop their dirty pages
    /// and remember that clean pages of them may be stale (invariants 2, 3).
    fn clear_tail(&mut self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let bs = to_u64(self.block_size());
        let first_whole = from.div_ceil(bs);
        let partial_end = to.min(first_whole.saturating_mul(bs));
        if from < partial_end {
            let r = to_usize(from)?..to_usize(partial_end)?;
            self.map.load(r.start, r.len(), false)?;
            // Write (and so dirty the block) only if there is something to clear.
            if mapping_bytes(&self.map, r.clone())?.iter().any(|&b| b != 0) {
                self.map.load(r.start, r.len(), true)?;
                mapping_bytes_mut(&mut self.map, r)?.fill(0);
            }
        }
        // The changes of the blocks cut off go first, a spill of one of them in flight
        // on another thread included (it would store the block through the file after
        // the zero tail is set, and `stored` would show it again).
        self.handle.discard_from(first_whole);
        let zf = &self.file.zero_from;
        zf.store(
            zf.load(Ordering::Acquire).min(first_whole),
            Ordering::Release,
        );
        self.file.stored.lock().retain(|&b| b < first_whole);
        self.stale_end = self.stale_end.max(to.div_ceil(bs));
        Ok(())
    }

    /// Testing hook: use `n` instead of [`MAX_EXPOSE_INVALIDATIONS`].
    #[doc(hidden)]
    #[cfg(any(test, feature = "internals"))]
    pub fn set_expose_limit(&mut self, n: u64) {
        self.expose_limit = n;
    }

    /// Blocks changed locally and not yet stored, ascending (for commit).
    #[cfg(any(test, feature = "internals"))]
    pub fn dirty_blocks(&self) -> Vec<u64> {
        self.handle.dirty_blocks()
    }

    /// Store every dirty block through the file (`store_blk`), ascending (for commit).
    pub fn writeout(&self) -> Result<()> {
        self.handle.writeout()
    }

    /// After a shrink, `Some(b)`: every block `>= b` that is not dirty and was not
    /// stored through [`ArrayCore::writeout`] since is all zeros in this array's
    /// version; at commit the db must make such blocks holes (invariant 4). `None` if
    /// the array was never shrunk.
    pub fn holes_from(&self) -> Option<u64> {
        self.holes_from
    }

    /// Blocks at or past [`ArrayCore::holes_from`] stored through the file since a
    /// shrink cut them off, ascending: they hold data again (invariant 3); every other
    /// block past `holes_from` that is not dirty reads as zeros.
    pub fn stored_since_cut(&self) -> Vec<u64> {
        self.file.stored.lock().iter().copied().collect()
    }

    /// The file handle, for operations that can change bytes under views (`discard`,
    /// `invalidate`): hence `&mut self`, so that no view is alive.
    pub fn handle_mut(&mut self) -> &FileHandle {
        &self.handle
    }
}

impl ArrayCore<u8> {
    /// Open an array of any element type as bytes, for code that knows the element
    /// type only at run time (bindings): the core's layout is `shape` with one more
    /// axis, the `stored.size()` bytes of an element — last in C order, first in F
    /// order — so that rows, append (whole rows of bytes) and resize work as for the
    /// typed core and the bytes are the same. [`ArrayCore::dtype`] is `stored`.
    pub fn open_bytes(
        vm: &Arc<VirtMem>,
        file: Arc<dyn BigFile>,
        stored: &DType,
        shape: &[u64],
        order: Order,
    ) -> Result<Self> {
        stored.validate()?;
        let mut core = ArrayCore::<u8>::open(
            vm,
            file,
            &DType::Scalar(super::dtype::Scalar::U8),
            &bytes_shape(shape, order, stored.size())?,
            order,
        )?;
        core.dtype = stored.clone();
        Ok(core)
    }
}

/// The shape of an array of `elem_size`-byte elements seen as bytes: one more axis of
/// length `elem_size`, last in C order and first in F order (so it is never the major
/// axis and every row keeps its bytes).
pub fn bytes_shape(shape: &[u64], order: Order, elem_size: usize) -> Result<Vec<u64>> {
    let e = u64::try_from(elem_size).map_err(|_| Error::OutOfRange("element size".into()))?;
    if shape.is_empty() {
        return Err(Error::InvalidArgument(
            "an array has at least one dimension".into(),
        ));
    }
    let mut v = Vec::with_capacity(shape.len() + 1);
    match order {
        Order::C => {
            v.extend_from_slice(shape);
            v.push(e);
        }
        Order::F => {
            v.push(e);
            v.extend_from_slice(shape);
        }
    }
    Ok(v)
}

/// Blocks to reserve for an extent of `need` blocks: the next power of two, at least
/// [`MIN_RESERVE_BLKS`], at most what a mapping may span. An extent larger than that is
/// [`Error::OutOfRange`] (it does not fit the address space wdb reserves).
fn reserve_blocks(need: u64, bs: u64) -> Result<u64> {
    let cap = MAX_MAPPING_LEN / bs.max(1);
    if need > cap {
        return Err(Error::OutOfRange(format!(
            "an array of {need} blocks of {bs} bytes exceeds the {MAX_MAPPING_LEN} bytes of address space one array may reserve"
        )));
    }
    let want = need
        .max(MIN_RESERVE_BLKS)
        .checked_next_power_of_two()
        .unwrap_or(cap);
    Ok(want.min(cap).max(need).max(1))
}
