//! The public transaction and snapshot handles (README's concepts), with the
//! typed array API on top of the block-level state in [`TxInner`] / [`SnapInner`].

use std::sync::Arc;

use super::arrays::{check_shape, check_shape_of, snap_file, tx_file, Array, ArrayMut, Registry};
use super::{
    ArrayInfo, ArraySpec, ArrayStats, Compression, Db, Order, SnapInner, StagedBytes, TxInner,
};
use crate::array::{element_dtype, DType, Element};
use crate::{Error, Result, Tid};

/// How to create an array ([`Transaction::create_array_with`]). `Default`: C order, the
/// database's default block size, zstd at the database's default level (blocks are
/// stored compressed only where that saves at least 1/8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayOptions {
    /// Memory order: C (axis 0 is major) or F (the last axis is major).
    pub order: Order,
    /// Block size in bytes (a power of two, at least 64 KiB); `None`: the database's default.
    pub block_size: Option<u32>,
    /// How blocks are compressed.
    pub compression: Compression,
}

impl Default for ArrayOptions {
    fn default() -> Self {
        ArrayOptions {
            order: Order::C,
            block_size: None,
            compression: Compression::Zstd { level: 0 },
        }
    }
}

impl ArrayOptions {
    /// Set `order`.
    pub fn order(mut self, v: Order) -> Self {
        self.order = v;
        self
    }
    /// Set `block_size`.
    pub fn block_size(mut self, v: u32) -> Self {
        self.block_size = Some(v);
        self
    }
    /// Set `compression`.
    pub fn compression(mut self, v: Compression) -> Self {
        self.compression = v;
        self
    }
}

/// A read-write transaction at the latest commit when it began. Reads see that
/// snapshot plus the transaction's own changes; `commit` writes the dirty blocks and the
/// catalog changes as one atomic log transaction; `abort` or drop discards them.
/// `Send + Sync`.
#[derive(Debug)]
pub struct Transaction {
    inner: Arc<TxInner>,
    arrays: Registry,
}

impl Transaction {
    pub(crate) fn new(inner: TxInner) -> Transaction {
        Transaction {
            inner: Arc::new(inner),
            arrays: Registry::default(),
        }
    }

    /// Create an array of `shape` (all zeros, costs no RAM) with default options.
    pub fn create_array<T: Element>(&self, name: &str, shape: &[u64]) -> Result<ArrayMut<'_, T>> {
        self.create_array_with(name, shape, ArrayOptions::default())
    }

    /// Create an array with options (order, block size, compression).
    pub fn create_array_with<T: Element>(
        &self,
        name: &str,
        shape: &[u64],
        opts: ArrayOptions,
    ) -> Result<ArrayMut<'_, T>> {
        check_shape::<T>(shape, opts.order)?;
        let dtype = element_dtype::<T>()?;
        let info = self.create_array_dtype(name, &dtype, shape, opts)?;
        match self.open_mut::<T>(&info) {
            Ok(a) => Ok(a),
            Err(e) => {
                // Not created after all: the catalog change is undone.
                let _ = self.inner.delete_array(name);
                Err(e)
            }
        }
    }

    /// Byte-level API, for code that handles element types known only at run time
    /// (`wdbtool import`): create array `name` of element type `dtype` with the same
    /// checks and catalog entry as [`Transaction::create_array_with`] for the Rust type
    /// that `dtype` describes, and return its catalog entry. Fill it with
    /// [`Transaction::write_block`] (the array's bytes in its own order, cut into
    /// blocks of `info.block_size`); the typed API reads it like any other array.
    pub fn create_array_dtype(
        &self,
        name: &str,
        dtype: &DType,
        shape: &[u64],
        opts: ArrayOptions,
    ) -> Result<ArrayInfo> {
        check_shape_of(shape, opts.order, dtype.size())?;
        let elem_size =
            u32::try_from(dtype.size()).map_err(|_| Error::OutOfRange("element size".into()))?;
        self.inner.create_array_raw(ArraySpec {
            name: name.to_string(),
            dtype: dtype.encode()?,
            dtype_name: dtype.to_string(),
            elem_size,
            shape: shape.to_vec(),
            order: opts.order,
            block_size: opts.block_size.unwrap_or(0),
            compression: opts.compression,
        })
    }

    fn open_mut<T: Element>(&self, info: &ArrayInfo) -> Result<ArrayMut<'_, T>> {
        let vm = self.inner.db().vm()?;
        let file = tx_file(&self.inner, info)?;
        let core = self.arrays.exclusive::<T>(&vm, info, || file)?;
        Ok(ArrayMut::new(core, &self.arrays, info.id))
    }

    /// A read-only handle on array `name` as this transaction sees it (own changes
    /// included). Any number may be alive at once, but not together with an `ArrayMut`
    /// of the same array ([`Error::Busy`]).
    pub fn array<T: Element>(&self, name: &str) -> Result<Array<'_, T>> {
        let info = self.inner.array_info(name)?;
        let vm = self.inner.db().vm()?;
        let file = tx_file(&self.inner, &info)?;
        Ok(Array::new(self.arrays.shared::<T>(&vm, &info, || file)?))
    }

    /// The writable handle on array `name`: one at a time, and not while `Array` handles
    /// of it are alive ([`Error::Busy`]).
    pub fn array_mut<T: Element>(&self, name: &str) -> Result<ArrayMut<'_, T>> {
        let info = self.inner.array_info(name)?;
        self.open_mut::<T>(&info)
    }

    /// Delete array `name` (its handles must be dropped first).
    pub fn delete_array(&self, name: &str) -> Result<()> {
        let info = self.inner.array_info(name)?;
        if self.arrays.in_use(info.id) {
            return Err(Error::Busy(format!(
                "array {name:?} has handles alive in this transaction"
            )));
        }
        self.arrays.forget(info.id);
        self.inner.delete_array(name)
    }

    /// Rename an array.
    pub fn rename_array(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename_array(from, to)
    }

    /// Names of the arrays as this transaction sees them, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        self.inner.array_names()
    }

    /// The catalog entry of array `name` (its shape as of the last commit or explicit
    /// [`Transaction::set_shape`]; an open `ArrayMut` knows its current shape).
    pub fn array_info(&self, name: &str) -> Result<ArrayInfo> {
        self.inner.array_info(name)
    }

    /// The catalog entry of array `id`.
    pub fn array_info_by_id(&self, id: u64) -> Result<ArrayInfo> {
        self.inner.array_info_by_id(id)
    }

    /// The snapshot this transaction reads.
    pub fn snapshot_tid(&self) -> Tid {
        self.inner.snapshot_tid()
    }

    /// Commit atomically: the dirty blocks and shape changes of every array, and the
    /// catalog changes, as one log transaction. Returns the new tid (the snapshot's tid
    /// if nothing changed). [`Error::Conflict`] if another transaction committed a
    /// change to a block or to the metadata of an array written here, after this
    /// transaction's snapshot.
    pub fn commit(self) -> Result<Tid> {
        self.commit_with("", "")
    }

    /// Commit with a user name and a description recorded in the history.
    pub fn commit_with(self, user: &str, desc: &str) -> Result<Tid> {
        for (id, core) in self.arrays.take_all() {
            let info = self.inner.array_info_by_id(id)?;
            let shape = core.shape();
            if shape != info.shape {
                self.inner.set_shape(&info.name, &shape)?;
            }
            if let Some(from) = core.holes_from() {
                // Blocks cut off by a shrink and not written since read as zeros in
                // this transaction: store them as holes (before writeout, which stores
                // the ones written again over them).
                self.inner
                    .stage_holes_from(id, from, &core.stored_since_cut())?;
            }
            core.writeout()?;
        }
        self.inner.commit_with(user, desc)
    }

    /// Drop every change (the same as dropping the transaction).
    pub fn abort(self) {}

    /// Where its staged blocks are: bytes held in memory (at most a share of the RAM
    /// budget, [`crate::db::ram_share`]) and bytes written to its spill file, beside
    /// the database, removed at commit or abort. Dirty blocks of open arrays are staged
    /// when they are spilled to make room, and at commit.
    pub fn staged_bytes(&self) -> StagedBytes {
        self.inner.staged_bytes()
    }

    /// Does this transaction have changes to commit? (Dirty blocks of open arrays count
    /// only once they are written out at commit; this reports catalog changes and
    /// staged blocks.)
    pub fn is_dirty(&self) -> bool {
        self.inner.is_dirty()
    }

    /// Block-level access for tools: read block `blk` of array `array_id` as this
    /// transaction sees it, bypassing the memory manager.
    pub fn read_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_block(array_id, blk, buf)
    }

    /// Block-level access for tools: stage block `blk` of array `array_id`. Do not mix
    /// with an open `ArrayMut` of the same array, whose dirty blocks win at commit.
    pub fn write_block(&self, array_id: u64, blk: u64, data: &[u8]) -> Result<()> {
        self.inner.write_block(array_id, blk, data)
    }

    /// Block-level catalog access for tools: create an array from a raw spec.
    pub fn create_array_raw(&self, spec: ArraySpec) -> Result<ArrayInfo> {
        self.inner.create_array_raw(spec)
    }

    /// Block-level catalog access for tools: set an array's shape.
    pub fn set_shape(&self, name: &str, shape: &[u64]) -> Result<()> {
        let info = self.inner.array_info(name)?;
        if self.arrays.in_use(info.id) {
            return Err(Error::Busy(format!(
                "array {name:?} has handles alive in this transaction"
            )));
        }
        self.arrays.forget(info.id);
        self.inner.set_shape(name, shape)
    }

    /// The tid of the version of a block this transaction would read (None: zeros or
    /// written by this transaction).
    pub fn block_version(&self, array_id: u64, blk: u64) -> Result<Option<Tid>> {
        self.inner.block_version(array_id, blk)
    }

    /// The database it belongs to.
    pub fn db(&self) -> &Db {
        self.inner.db()
    }

    /// The shared state its arrays' files read and stage into.
    pub(crate) fn inner(&self) -> &Arc<TxInner> {
        &self.inner
    }
}

/// A read-only view of one commit: keeps reading the same data whatever is committed,
/// reclaimed or compacted meanwhile, in this process or any other. `Send + Sync`.
#[derive(Debug)]
pub struct Snapshot {
    inner: Arc<SnapInner>,
    arrays: Registry,
}

impl Snapshot {
    pub(crate) fn new(inner: SnapInner) -> Snapshot {
        Snapshot {
            inner: Arc::new(inner),
            arrays: Registry::default(),
        }
    }

    /// A read-only handle on array `name` at this snapshot.
    pub fn array<T: Element>(&self, name: &str) -> Result<Array<'_, T>> {
        let info = self.inner.array_info(name)?;
        let vm = self.inner.db().vm()?;
        let file = snap_file(&self.inner, &info)?;
        Ok(Array::new(self.arrays.shared::<T>(&vm, &info, || file)?))
    }

    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        self.inner.array_names()
    }

    /// The commit it shows.
    pub fn tid(&self) -> Tid {
        self.inner.tid()
    }

    /// The catalog entry of array `name`.
    pub fn array_info(&self, name: &str) -> Result<ArrayInfo> {
        self.inner.array_info(name)
    }

    /// The catalog entry of array `id`.
    pub fn array_info_by_id(&self, id: u64) -> Result<ArrayInfo> {
        self.inner.array_info_by_id(id)
    }

    /// Storage statistics of array `name` at this snapshot.
    pub fn array_stats(&self, name: &str) -> Result<ArrayStats> {
        self.inner.array_stats(name)
    }

    /// Block-level access for tools: read block `blk` of array `array_id`.
    pub fn read_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_block(array_id, blk, buf)
    }

    /// The tid of the version of a block visible here (None: never written, zeros).
    pub fn block_version(&self, array_id: u64, blk: u64) -> Result<Option<Tid>> {
        self.inner.at.block_version(array_id, blk)
    }

    /// The database it belongs to.
    pub fn db(&self) -> &Db {
        self.inner.db()
    }

    /// The shared state its arrays' files read.
    pub(crate) fn inner(&self) -> &Arc<SnapInner> {
        &self.inner
    }
}
