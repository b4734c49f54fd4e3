//! ndarrays over wdb memory: the `Memory` object that is the `base` of every ndarray
//! handed out (it keeps the address range reserved and served), the construction of
//! such an ndarray, and the bytes of a contiguous ndarray handed to wdb.

use numpy::npyffi::{self, npy_intp, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use wdb::db::owned::Region;
use wdb::Order;

/// The wdb memory an ndarray points into (its `base`): keeps the address range
/// reserved and served while the ndarray, or anything derived from it, lives.
#[pyclass(module = "wdb", name = "Memory", frozen)]
pub(crate) struct Memory {
    region: Region,
    writable: bool,
}

#[pymethods]
impl Memory {
    /// Bytes of the range.
    fn __len__(&self) -> usize {
        self.region.len()
    }

    /// Can it be written (memory of a transaction's array)?
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }

    fn __repr__(&self) -> String {
        format!(
            "<wdb.Memory {:#x}, {} bytes{}>",
            self.region.as_ptr() as usize,
            self.region.len(),
            if self.writable { "" } else { ", read-only" }
        )
    }
}

/// The strides of a contiguous array of `dims` with elements of `elem` bytes, in
/// `order`.
pub(crate) fn contiguous_strides(dims: &[npy_intp], elem: usize, order: Order) -> Vec<npy_intp> {
    let mut strides = vec![0 as npy_intp; dims.len()];
    let mut acc = elem as npy_intp;
    let axes: Vec<usize> = match order {
        Order::C => (0..dims.len()).rev().collect(),
        Order::F => (0..dims.len()).collect(),
    };
    for i in axes {
        strides[i] = acc;
        acc = acc.saturating_mul(dims[i].max(1));
    }
    strides
}

/// A `numpy.ndarray` of `descr` with `dims` and `strides` over the bytes of `region`,
/// writable if `writable`; its base is a [`Memory`] holding `region`.
///
/// `dims` and `strides` describe an array whose every element lies inside `region`
/// (the region is cut to exactly the rows they describe).
pub(crate) fn ndarray_over<'py>(
    py: Python<'py>,
    region: Region,
    mut dims: Vec<npy_intp>,
    mut strides: Vec<npy_intp>,
    descr: Bound<'py, PyArrayDescr>,
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    assert_eq!(dims.len(), strides.len(), "one stride per axis");
    let data = region.as_ptr();
    let mem = Bound::new(py, Memory { region, writable })?;
    let flags = if writable { NPY_ARRAY_WRITEABLE } else { 0 };
    // SAFETY: `descr` is a valid dtype (NewFromDescr steals the reference made by
    // into_dtype_ptr); `dims`/`strides` have `nd` entries and describe a
    // contiguous array of `region.len()` bytes at `data` (the region was cut to
    // exactly these rows); the memory stays valid for as long as `mem` lives,
    // which the new array holds as its base (SetBaseObject steals the reference).
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            descr.into_dtype_ptr(),
            dims.len() as std::os::raw::c_int,
            dims.as_mut_ptr(),
            strides.as_mut_ptr(),
            data.cast(),
            flags,
            std::ptr::null_mut(),
        );
        if ptr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let arr = Bound::from_owned_ptr(py, ptr);
        if PY_ARRAY_API.PyArray_SetBaseObject(py, ptr.cast(), mem.into_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(arr)
    }
}

/// The bytes of `a`, a C- or F-contiguous ndarray: its elements in memory order.
pub(crate) fn contiguous_bytes<'a>(a: &'a Bound<'_, PyUntypedArray>) -> PyResult<&'a [u8]> {
    if !a.is_contiguous() {
        return Err(PyValueError::new_err("a contiguous ndarray is needed"));
    }
    let len = a.len() * a.dtype().itemsize();
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: as_array_ptr is the live PyArrayObject of `a`, which is contiguous: its
    // data pointer starts `len` bytes (elements × element size) that stay valid while
    // `a` lives (the borrow ties the slice to it), and no Python code runs (the GIL is
    // held) while the slice is used.
    Ok(unsafe { std::slice::from_raw_parts((*a.as_array_ptr()).fields.data.cast::<u8>(), len) })
}
