//! ndarray views of a range of rows of an array stored in a contiguous byte region.
//!
//! The region is the array's bytes from row 0 on: a `Vec<u8>` in tests, a virtmem
//! `Mapping` (reserved virtual memory, loaded lazily by the fault handler) in real use.
//! Because the region is contiguous *virtual* memory, a range of rows is a plain slice
//! whatever its alignment to blocks, and an element that straddles two blocks needs no
//! special care: each half faults in its own block.
//!
//! Construction is checked and safe for byte slices: the rows' bytes are cast to `&[T]`
//! with `bytemuck` (which checks size and alignment; `T: Pod` makes any bytes a valid
//! `T`) and handed to ndarray's checked `from_shape` with the C or F shape. The only
//! unsafe code is [`view_raw`] / [`view_raw_mut`], which turn a raw pointer into that
//! slice; the array core calls them with its `Mapping`'s pointer.
#![allow(unsafe_code)]

use std::ops::Range;

use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder};

use super::dtype::Element;
use super::layout::{Layout, Order};
use crate::{Error, Result};

/// Checks shared by all constructors; returns the byte range of `rows` as `usize` and
/// the view's shape.
fn plan<T: Element>(
    layout: &Layout,
    rows: &Range<u64>,
    region_len: usize,
) -> Result<(Range<usize>, Vec<usize>)> {
    let size = std::mem::size_of::<T>();
    if layout.elem_size() != size {
        return Err(Error::InvalidArgument(format!(
            "layout has {}-byte elements, {} has {size}",
            layout.elem_size(),
            std::any::type_name::<T>()
        )));
    }
    let bytes = layout.byte_range(rows)?;
    let to_usize = |v: u64| {
        usize::try_from(v).map_err(|_| {
            Error::OutOfRange(format!("byte offset {v} does not fit in the address space"))
        })
    };
    let bytes = to_usize(bytes.start)?..to_usize(bytes.end)?;
    if bytes.end > region_len {
        return Err(Error::OutOfRange(format!(
            "rows {rows:?} end at byte {} but the region has {region_len} bytes",
            bytes.end
        )));
    }
    let shape = layout
        .view_shape(rows)
        .into_iter()
        .map(|d| {
            usize::try_from(d)
                .map_err(|_| Error::OutOfRange(format!("axis length {d} does not fit in usize")))
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok((bytes, shape))
}

fn cast_err<T>(e: bytemuck::PodCastError) -> Error {
    Error::InvalidArgument(format!(
        "region cannot hold {} elements (alignment {}): {e:?}",
        std::any::type_name::<T>(),
        std::mem::align_of::<T>()
    ))
}

fn shape_err(e: ndarray::ShapeError) -> Error {
    Error::OutOfRange(format!("view shape: {e}"))
}

fn dims(shape: Vec<usize>, order: Order) -> ndarray::StrideShape<IxDyn> {
    match order {
        Order::C => IxDyn(&shape).into(),
        Order::F => IxDyn(&shape).f().into(),
    }
}

/// A read-only view of `rows` of the array laid out by `layout` in `region` (the
/// array's bytes from row 0; it may be longer). Errors: rows out of range or past the
/// region ([`Error::OutOfRange`]); element size or alignment of `region` wrong for `T`
/// ([`Error::InvalidArgument`]).
pub fn view<'a, T: Element>(
    region: &'a [u8],
    layout: &Layout,
    rows: Range<u64>,
) -> Result<ArrayViewD<'a, T>> {
    let (bytes, shape) = plan::<T>(layout, &rows, region.len())?;
    let elems: &[T] = bytemuck::try_cast_slice(&region[bytes]).map_err(cast_err::<T>)?;
    ArrayViewD::from_shape(dims(shape, layout.order()), elems).map_err(shape_err)
}

/// A read-write view of `rows`; see [`view`].
pub fn view_mut<'a, T: Element>(
    region: &'a mut [u8],
    layout: &Layout,
    rows: Range<u64>,
) -> Result<ArrayViewMutD<'a, T>> {
    let (bytes, shape) = plan::<T>(layout, &rows, region.len())?;
    let elems: &mut [T] =
        bytemuck::try_cast_slice_mut(&mut region[bytes]).map_err(cast_err::<T>)?;
    ArrayViewMutD::from_shape(dims(shape, layout.order()), elems).map_err(shape_err)
}

/// [`view`] of a region given by pointer and length (a virtmem mapping).
///
/// # Safety
///
/// For the whole lifetime `'a` chosen by the caller, the `region_len` bytes at `base`
/// must be valid for reads — mapped memory, or reserved memory whose accesses a fault
/// handler resolves to the right bytes, as a virtmem `Mapping` does — must stay
/// reserved (the mapping is neither dropped nor replaced), and the bytes of `rows` must
/// not be written through any pointer or reference other than views made from this
/// same region that are themselves read-only (that is: no live [`view_raw_mut`] of
/// these rows). `region_len` must be at most `isize::MAX`.
pub unsafe fn view_raw<'a, T: Element>(
    base: *const u8,
    region_len: usize,
    layout: &Layout,
    rows: Range<u64>,
) -> Result<ArrayViewD<'a, T>> {
    let (bytes, _) = plan::<T>(layout, &rows, region_len)?;
    if base.is_null() {
        return Err(Error::InvalidArgument("null region pointer".into()));
    }
    // SAFETY: `plan` checked bytes.end <= region_len, so [base+start, base+end) lies in
    // the region, which the caller guarantees is valid for reads and not mutated for
    // 'a; `base` is non-null (checked) and u8 needs no alignment; the length is at most
    // region_len <= isize::MAX (caller's guarantee).
    let rows_bytes: &'a [u8] =
        unsafe { std::slice::from_raw_parts(base.add(bytes.start), bytes.len()) };
    // The slice starts at row `rows.start`: view it as rows 0..n of the same layout.
    let n = rows.end - rows.start;
    // `plan` checked rows ⊆ 0..len, so rows 0..n exist in `layout` too.
    view(rows_bytes, layout, 0..n)
}

/// [`view_mut`] of a region given by pointer and length (a virtmem mapping).
///
/// # Safety
///
/// As for [`view_raw`], and in addition the bytes of `rows` must be valid for writes
/// and must not be read or written through any other pointer or reference (no other
/// view of these rows) during `'a`.
pub unsafe fn view_raw_mut<'a, T: Element>(
    base: *mut u8,
    region_len: usize,
    layout: &Layout,
    rows: Range<u64>,
) -> Result<ArrayViewMutD<'a, T>> {
    let (bytes, _) = plan::<T>(layout, &rows, region_len)?;
    if base.is_null() {
        return Err(Error::InvalidArgument("null region pointer".into()));
    }
    // SAFETY: in bounds of the region by `plan`, non-null, length <= isize::MAX as in
    // `view_raw`; the caller guarantees the bytes are valid for writes and not aliased
    // by any other access for 'a, which is what `&'a mut [u8]` requires.
    let rows_bytes: &'a mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(base.add(bytes.start), bytes.len()) };
    let n = rows.end - rows.start;
    view_mut(rows_bytes, layout, 0..n)
}

/// Check that `range` lies in a region of `region_len` bytes at `base`.
fn check_raw(base: *const u8, region_len: usize, range: &Range<usize>) -> Result<()> {
    if base.is_null() {
        return Err(Error::InvalidArgument("null region pointer".into()));
    }
    if range.start > range.end || range.end > region_len {
        return Err(Error::OutOfRange(format!(
            "bytes {range:?} of a region of {region_len} bytes"
        )));
    }
    Ok(())
}

/// The bytes `range` of a region given by pointer and length, for copies that do not
/// need a typed view (a byte copy also handles elements split across chunks).
///
/// # Safety
///
/// As for [`view_raw`], for the bytes of `range` instead of the bytes of rows.
pub unsafe fn raw_bytes<'a>(
    base: *const u8,
    region_len: usize,
    range: Range<usize>,
) -> Result<&'a [u8]> {
    check_raw(base, region_len, &range)?;
    // SAFETY: `range` lies in the region (checked) and `base` is non-null; the caller
    // guarantees the region is valid for reads and not written by others for 'a, and
    // that region_len <= isize::MAX.
    Ok(unsafe { std::slice::from_raw_parts(base.add(range.start), range.len()) })
}

/// Mutable bytes `range` of a region; see [`raw_bytes`].
///
/// # Safety
///
/// As for [`view_raw_mut`], for the bytes of `range` instead of the bytes of rows.
pub unsafe fn raw_bytes_mut<'a>(
    base: *mut u8,
    region_len: usize,
    range: Range<usize>,
) -> Result<&'a mut [u8]> {
    check_raw(base, region_len, &range)?;
    // SAFETY: in bounds and non-null (checked); the caller guarantees the bytes are valid
    // for writes and accessed through nothing else for 'a.
    Ok(unsafe { std::slice::from_raw_parts_mut(base.add(range.start), range.len()) })
}

// Views of a virtmem `Mapping`, for `ArrayCore` only.
//
// Why these safe functions are sound: a `Mapping`'s address range stays reserved while
// it is alive, and borrowing it for 'a keeps it alive; the fault handler resolves every
// access to the handle's bytes. Exclusivity follows the borrow of the `Mapping` because
// of rules the array module keeps (and only it can call these):
// (a) each `Mapping` is owned by one `ArrayCore`, and a core has at most one mapping of
//     its handle in use for views (a remap happens in `&mut self` methods, when no view
//     is alive);
// (b) the handle operations that change bytes without a write through a view
//     (`discard`, `invalidate`) are reachable only through `&mut ArrayCore`.
// So `&Mapping` gives shared, unchanging bytes, and `&mut Mapping` exclusive ones.

use crate::virtmem::Mapping;

/// Read-only view of `rows` of `layout`, whose row 0 is the start of `map`.
pub(super) fn mapping_view<'a, T: Element>(
    map: &'a Mapping,
    layout: &Layout,
    rows: Range<u64>,
) -> Result<ArrayViewD<'a, T>> {
    // SAFETY: the mapping's range is valid for reads (fault handler) and reserved for 'a
    // (borrowed); no mutable access exists during 'a by rules (a) and (b) above;
    // its length is at most virtmem::MAX_MAPPING_LEN < isize::MAX.
    unsafe { view_raw(map.as_ptr(), map.len(), layout, rows) }
}

/// Read-write view of `rows`; see [`mapping_view`].
pub(super) fn mapping_view_mut<'a, T: Element>(
    map: &'a mut Mapping,
    layout: &Layout,
    rows: Range<u64>,
) -> Result<ArrayViewMutD<'a, T>> {
    // SAFETY: as in `mapping_view`; the `&mut` borrow of the mapping makes this the only
    // access to its bytes during 'a (rules (a) and (b)); writes fault the block in as
    // dirty, so the range is valid for writes.
    unsafe { view_raw_mut(map.as_ptr(), map.len(), layout, rows) }
}

/// Bytes `range` of `map`.
pub(super) fn mapping_bytes(map: &Mapping, range: Range<usize>) -> Result<&[u8]> {
    // SAFETY: as in `mapping_view`.
    unsafe { raw_bytes(map.as_ptr(), map.len(), range) }
}

/// Mutable bytes `range` of `map`.
pub(super) fn mapping_bytes_mut(map: &mut Mapping, range: Range<usize>) -> Result<&mut [u8]> {
    // SAFETY: as in `mapping_view_mut`.
    unsafe { raw_bytes_mut(map.as_ptr(), map.len(), range) }
}
