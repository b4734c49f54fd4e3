//! Shape arithmetic: how an N-d array of fixed-size elements lies in a flat byte range.
//!
//! The *major axis* is axis 0 in C order and the last axis in F order. A *row* is one
//! index along the major axis: the `row_elems()` elements of all other axes, stored
//! contiguously in either order. So any range of rows is a contiguous byte range, and
//! `len()`, append and the ranges of views all count rows.
//!
//! Invariants of a [`Layout`] (established by [`Layout::new`], kept by every method):
//!
//! 1. `1 <= ndim <= MAX_DIMS` and `elem_size >= 1`;
//! 2. the byte size of the product of the *non-zero* axis lengths is at most
//!    [`MAX_BYTES`] (`isize::MAX`): every element offset and byte offset of the array
//!    fits in `isize`/`usize`, which is what pointer arithmetic and ndarray require, and
//!    no arithmetic below can overflow.

use std::ops::{Bound, Range, RangeBounds};

use crate::{Error, Result};

/// Most dimensions an array may have (NumPy's limit is 32 or 64).
pub const MAX_DIMS: usize = 32;

/// Largest byte size of an array: what a pointer offset can span.
pub const MAX_BYTES: u64 = isize::MAX as u64;

/// Storage order of an N-d array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Order {
    /// Row-major (C, NumPy's default): the last axis varies fastest; axis 0 is major.
    #[default]
    C,
    /// Column-major (Fortran): the first axis varies fastest; the last axis is major.
    F,
}

/// Shape, order and element size of an array, with checked size arithmetic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Vec<u64>,
    order: Order,
    elem_size: usize,
    /// Product of the non-major axes.
    row_elems: u64,
}

impl Layout {
    /// Validate and build. A shape with no axes, more than [`MAX_DIMS`], or an element
    /// size of 0 is [`Error::InvalidArgument`]; a shape whose byte size overflows or
    /// exceeds [`MAX_BYTES`] is [`Error::OutOfRange`].
    pub fn new(shape: &[u64], order: Order, elem_size: usize) -> Result<Layout> {
        if shape.is_empty() || shape.len() > MAX_DIMS {
            return Err(Error::InvalidArgument(format!(
                "an array has 1..={MAX_DIMS} dimensions, shape {shape:?} has {}",
                shape.len()
            )));
        }
        if elem_size == 0 {
            return Err(Error::InvalidArgument("element size is 0".into()));
        }
        let too_big = || {
            Error::OutOfRange(format!(
                "shape {shape:?} of {elem_size}-byte elements is larger than the address space ({MAX_BYTES} bytes)"
            ))
        };
        // Invariant 2: bound the non-zero product, so that even a shape like
        // [0, u64::MAX] (zero elements) cannot make strides or offsets overflow.
        let mut bytes = u64::try_from(elem_size).map_err(|_| too_big())?;
        for &d in shape.iter().filter(|&&d| d != 0) {
            bytes = bytes.checked_mul(d).ok_or_else(too_big)?;
        }
        if bytes > MAX_BYTES {
            return Err(too_big());
        }
        let major = Self::major_of(shape.len(), order);
        let row_elems = shape
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != major)
            .map(|(_, &d)| d)
            .product();
        Ok(Layout {
            shape: shape.to_vec(),
            order,
            elem_size,
            row_elems,
        })
    }

    fn major_of(ndim: usize, order: Order) -> usize {
        match order {
            Order::C => 0,
            Order::F => ndim.saturating_sub(1),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Bytes per element.
    pub fn elem_size(&self) -> usize {
        self.elem_size
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Index of the major axis: 0 in C order, the last in F order.
    pub fn major_axis(&self) -> usize {
        Self::major_of(self.shape.len(), self.order)
    }

    /// Extent of the major axis (number of rows).
    pub fn len(&self) -> u64 {
        self.shape[self.major_axis()]
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements per row (the product of the other axes; 1 for a 1-d array).
    pub fn row_elems(&self) -> u64 {
        self.row_elems
    }

    /// Bytes per row. Cannot overflow (invariant 2) unless the array has no rows, in
    /// which case it saturates; it is then only ever multiplied by 0.
    pub fn row_bytes(&self) -> u64 {
        self.row_elems.saturating_mul(self.elem_size_u64())
    }

    /// Number of elements.
    pub fn num_elems(&self) -> u64 {
        self.row_elems.saturating_mul(self.len())
    }

    /// Size of the whole array in bytes (at most [`MAX_BYTES`]).
    pub fn byte_size(&self) -> u64 {
        self.num_elems().saturating_mul(self.elem_size_u64())
    }

    fn elem_size_u64(&self) -> u64 {
        // usize is at most 64 bits on every supported target.
        u64::try_from(self.elem_size).unwrap_or(u64::MAX)
    }

    /// The same layout with `len` rows (append, resize of the major axis).
    pub fn with_len(&self, len: u64) -> Result<Layout> {
        let mut shape = self.shape.clone();
        shape[self.major_axis()] = len;
        Layout::new(&shape, self.order, self.elem_size)
    }

    /// Resolve a range of rows against `len()`. Ranges past the end, reversed ranges
    /// and `..=u64::MAX` are [`Error::OutOfRange`].
    pub fn rows(&self, range: impl RangeBounds<u64>) -> Result<Range<u64>> {
        let len = self.len();
        let bad = || {
            Error::OutOfRange(format!(
                "rows ({:?}, {:?}) of an array of {len} rows",
                range.start_bound(),
                range.end_bound()
            ))
        };
        let start = match range.start_bound() {
            Bound::Unbounded => 0,
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1).ok_or_else(bad)?,
        };
        let end = match range.end_bound() {
            Bound::Unbounded => len,
            Bound::Included(&e) => e.checked_add(1).ok_or_else(bad)?,
            Bound::Excluded(&e) => e,
        };
        if start > end || end > len {
            return Err(bad());
        }
        Ok(start..end)
    }

    /// Shape of the view of `rows`: the array's shape with the major axis replaced by
    /// the number of rows.
    pub fn view_shape(&self, rows: &Range<u64>) -> Vec<u64> {
        let mut shape = self.shape.clone();
        shape[self.major_axis()] = rows.end.saturating_sub(rows.start);
        shape
    }

    /// Byte range of `rows` (from [`Layout::rows`], or any range within `len()`).
    pub fn byte_range(&self, rows: &Range<u64>) -> Result<Range<u64>> {
        if rows.start > rows.end || rows.end > self.len() {
            return Err(Error::OutOfRange(format!(
                "rows {rows:?} of an array of {} rows",
                self.len()
            )));
        }
        // Bounded by byte_size() <= MAX_BYTES (invariant 2), so no overflow.
        let rb = self.row_bytes();
        Ok(rows.start.saturating_mul(rb)..rows.end.saturating_mul(rb))
    }

    /// Blocks of `block_size` bytes that hold any byte of `rows` (empty for no rows).
    pub fn block_range(&self, rows: &Range<u64>, block_size: usize) -> Result<Range<u64>> {
        blocks_of(&self.byte_range(rows)?, block_size)
    }

    /// Strides in elements for this shape and order (C: the last axis has stride 1;
    /// F: the first axis has stride 1).
    pub fn strides(&self) -> Vec<u64> {
        let mut strides = vec![0u64; self.shape.len()];
        let mut acc = 1u64;
        let mut set = |i: usize| {
            strides[i] = acc;
            acc = acc.saturating_mul(self.shape[i]);
        };
        match self.order {
            Order::C => (0..self.shape.len()).rev().for_each(&mut set),
            Order::F => (0..self.shape.len()).for_each(&mut set),
        }
        strides
    }
}

/// Blocks of `block_size` bytes that hold any byte of `bytes` (empty for an empty
/// range). A `block_size` of 0 is [`Error::InvalidArgument`].
pub fn blocks_of(bytes: &Range<u64>, block_size: usize) -> Result<Range<u64>> {
    let bs = u64::try_from(block_size)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| Error::InvalidArgument(format!("block size {block_size}")))?;
    if bytes.start >= bytes.end {
        let b = bytes.start / bs;
        return Ok(b..b);
    }
    Ok(bytes.start / bs..bytes.end.div_ceil(bs))
}
