//! `wdb.Array`: an array of a transaction or a snapshot, indexed as NumPy indexes
//! (views of wdb memory, see [`crate::view`]), written through checked copies, grown
//! along its major axis.

use std::ops::Range;
use std::sync::Arc;

use numpy::npyffi::npy_intp;
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PySlice, PySliceMethods, PyTuple};
use wdb::db::owned::{SharedArray, SharedSnapshot, SharedTransaction};
use wdb::Order;

use crate::args::shape_of;
use crate::dtype::scalar_bytes;
use crate::errors::{closed, err, invalid, raise, OrPy};
use crate::view::{contiguous_bytes, contiguous_strides, ndarray_over};

/// An array of a transaction (writable) or a snapshot (read-only). Indexing gives real
/// `numpy.ndarray` views of wdb memory: no copy, loaded lazily, bigger than RAM if need
/// be. Indexing follows NumPy (`a[i]`, `a[i:j]`, `a[i, j]`, `a[..., k]`; fancy
/// indexing copies, as in NumPy). `append` and `resize` act on the major axis (axis 0
/// in C order, the last axis in F order).
#[pyclass(module = "wdb", name = "Array", frozen, sequence)]
pub(crate) struct PyArray {
    arr: Arc<SharedArray>,
    descr: Py<PyArrayDescr>,
    elem: usize,
    /// Keeps the transaction (open) or snapshot alive while the array object lives.
    _owner: Owner,
}

/// What an array belongs to.
pub(crate) enum Owner {
    Tx(#[allow(dead_code)] Arc<SharedTransaction>),
    Snap(#[allow(dead_code)] Arc<SharedSnapshot>),
}

/// `a[i] = v` / `a[i:j] = v` on a C-order array copy the value in with `write_from`
/// (checked loads; small writes kept as dirty 4 KiB pages, without a fault) in chunks of
/// about this many bytes.
const SMALL_WRITE: usize = 1 << 20;

/// A key on the major axis of a C-order array that maps to a contiguous row range.
enum RowKey {
    /// One row (the view drops the axis).
    Row(u64),
    /// Rows `[start, stop)`.
    Rows(Range<u64>),
}

impl PyArray {
    pub(crate) fn new(arr: Arc<SharedArray>, descr: Py<PyArrayDescr>, owner: Owner) -> PyArray {
        let elem = arr.dtype().size();
        PyArray {
            arr,
            descr,
            elem,
            _owner: owner,
        }
    }

    fn shape(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        self.arr.shape().map_err(|_| self.closed_err(py))
    }

    fn closed_err(&self, py: Python<'_>) -> PyErr {
        let owner = if self.arr.writable() {
            "transaction"
        } else {
            "snapshot"
        };
        closed(
            py,
            &format!("array {:?}: its {owner} has ended", self.arr.name()),
        )
    }

    /// The exception for `e` from an operation on the array: a `ClosedError` once its
    /// transaction or snapshot has ended, else the error's own class.
    fn wdb_err(&self, py: Python<'_>, e: wdb::Error) -> PyErr {
        if self.arr.is_open() {
            err(py, e)
        } else {
            self.closed_err(py)
        }
    }

    fn major(&self, ndim: usize) -> usize {
        match self.arr.order() {
            Order::C => 0,
            Order::F => ndim - 1,
        }
    }

    fn len_major(&self, py: Python<'_>) -> PyResult<u64> {
        let s = self.shape(py)?;
        Ok(s[self.major(s.len())])
    }

    /// An ndarray over `rows` of the major axis; `drop_axis` removes that axis (one row).
    fn ndarray<'py>(
        &self,
        py: Python<'py>,
        rows: Range<u64>,
        drop_axis: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shape = self.shape(py)?;
        let region = self
            .arr
            .region(rows.clone())
            .map_err(|e| self.wdb_err(py, e))?;
        let major = self.major(shape.len());
        let mut dims: Vec<npy_intp> = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            let d = if i == major { rows.end - rows.start } else { d };
            dims.push(npy_intp::try_from(d).map_err(|_| {
                raise(py, "OutOfRangeError", format!("dimension {d} is too large"))
            })?);
        }
        let mut strides = contiguous_strides(&dims, self.elem, self.arr.order());
        if drop_axis {
            dims.remove(major);
            strides.remove(major);
        }
        let descr = self.descr.bind(py).clone();
        ndarray_over(py, region, dims, strides, descr, self.arr.writable())
    }

    /// The whole array as one ndarray.
    fn full<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let n = self.len_major(py)?;
        self.ndarray(py, 0..n, false)
    }

    /// A key that selects rows of a C-order array directly (int, or slice of step 1).
    fn row_key(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<RowKey>> {
        if self.arr.order() != Order::C {
            return Ok(None);
        }
        if let Ok(s) = key.cast::<PySlice>() {
            let n = self.len_major(py)?;
            let n = isize::try_from(n)
                .map_err(|_| raise(py, "OutOfRangeError", "array too long".into()))?;
            let ix = s.indices(n)?;
            if ix.step != 1 {
                return Ok(None);
            }
            let (a, b) = (ix.start.max(0) as u64, ix.stop.max(ix.start).max(0) as u64);
            return Ok(Some(RowKey::Rows(a..b)));
        }
        if key.is_instance_of::<PyBool>() {
            return Ok(None);
        }
        if let Ok(i) = key.extract::<i64>() {
            // Only Python ints and NumPy integer scalars (not 0-d arrays or floats).
            if !key.is_instance_of::<PyInt>() && !key.hasattr("__index__")? {
                return Ok(None);
            }
            let n = self.len_major(py)?;
            let j = if i < 0 { i + n as i64 } else { i };
            if j < 0 || j as u64 >= n {
                return Err(raise(
                    py,
                    "OutOfRangeError",
                    format!("index {i} is out of bounds for axis 0 with size {n}"),
                ));
            }
            return Ok(Some(RowKey::Row(j as u64)));
        }
        Ok(None)
    }

    /// `a[rows] = value` on a C-order array; `one` says the key was a single row (whose
    /// axis the value does not have).
    fn write_rows(
        &self,
        py: Python<'_>,
        rows: Range<u64>,
        one: bool,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let shape = self.shape(py)?;
        if one && shape.len() == 1 {
            if let Some(b) = scalar_bytes(self.arr.dtype(), value) {
                return self
                    .arr
                    .write_from(rows, &b)
                    .map_err(|e| self.wdb_err(py, e));
            }
        }
        // The value broadcast to the rows' shape (a view), copied in in chunks of
        // about SMALL_WRITE bytes: each is converted by NumPy and written checked,
        // so a write larger than the RAM budget is a RamExhaustedError, not a stop
        // inside a page fault.
        let n = rows.end - rows.start;
        let mut target = shape.clone();
        target[0] = n;
        let np = py.import("numpy")?;
        let v = np.call_method1("asarray", (value, self.np_dtype(py)))?;
        let v = if one {
            let row = np.call_method1("broadcast_to", (v, PyTuple::new(py, &target[1..])?))?;
            np.call_method1("expand_dims", (row, 0))?
        } else {
            np.call_method1("broadcast_to", (v, PyTuple::new(py, &target)?))?
        };
        let row_bytes = (shape[1..].iter().product::<u64>() * self.elem as u64).max(1);
        let per = (SMALL_WRITE as u64 / row_bytes).max(1);
        let mut lo = 0;
        while lo < n {
            let hi = (lo + per).min(n);
            let part = v.get_item(PySlice::new(py, lo as isize, hi as isize, 1))?;
            let part = np
                .call_method1("ascontiguousarray", (part,))?
                .cast_into::<PyUntypedArray>()?;
            self.arr
                .write_from(rows.start + lo..rows.start + hi, contiguous_bytes(&part)?)
                .map_err(|e| self.wdb_err(py, e))?;
            lo = hi;
        }
        Ok(())
    }

    /// The array's dtype (owned reference).
    fn np_dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.descr.bind(py).clone()
    }
}

#[pymethods]
impl PyArray {
    /// The shape (a tuple).
    #[getter(shape)]
    fn get_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.shape(py)?)
    }

    /// The numpy dtype.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.np_dtype(py)
    }

    #[getter]
    fn ndim(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.shape(py)?.len())
    }

    /// Number of elements.
    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.shape(py)?.iter().product())
    }

    /// Bytes of the elements.
    #[getter]
    fn nbytes(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.size(py)? * self.elem as u64)
    }

    /// "C" or "F".
    #[getter]
    fn order(&self) -> &'static str {
        match self.arr.order() {
            Order::C => "C",
            Order::F => "F",
        }
    }

    #[getter]
    fn name(&self) -> String {
        self.arr.name().to_string()
    }

    /// True for an array of a transaction, False for one of a snapshot.
    #[getter]
    fn writable(&self) -> bool {
        self.arr.writable()
    }

    /// Length of axis 0 (as for an ndarray).
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let s = self.shape(py)?;
        Ok(s[0] as usize)
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.row_key(py, key)? {
            Some(RowKey::Row(i)) => return self.ndarray(py, i..i + 1, true),
            Some(RowKey::Rows(r)) => return self.ndarray(py, r, false),
            None => {}
        }
        if let Ok(t) = key.cast::<PyTuple>() {
            if t.len() >= 1 {
                if let Some(k) = self.row_key(py, &t.get_item(0)?)? {
                    let rest = t.get_slice(1, t.len());
                    let v = match k {
                        RowKey::Row(i) => self.ndarray(py, i..i + 1, true)?,
                        RowKey::Rows(r) => {
                            // Keep axis 0 with a full slice for the remaining indices.
                            let v = self.ndarray(py, r, false)?;
                            let full = PySlice::full(py);
                            let mut items: Vec<Bound<'_, PyAny>> = vec![full.into_any()];
                            items.extend(rest.iter());
                            return v.get_item(PyTuple::new(py, items)?);
                        }
                    };
                    return v.get_item(rest);
                }
            }
        }
        self.full(py)?.get_item(key)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !self.arr.writable() {
            return Err(raise(
                py,
                "ReadOnlyError",
                format!(
                    "read-only: array {:?} of a snapshot cannot be written",
                    self.arr.name()
                ),
            ));
        }
        if let Some(k) = self.row_key(py, key)? {
            let (rows, one) = match k {
                RowKey::Row(i) => (i..i + 1, true),
                RowKey::Rows(r) => (r, false),
            };
            return self.write_rows(py, rows, one, value);
        }
        self.full(py)?.set_item(key, value)
    }

    /// The whole array as an ndarray (no copy unless `dtype` differs or `copy=True`).
    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        &self,
        py: Python<'py>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut a = self.full(py)?;
        if let Some(d) = dtype {
            if !d.is_none() {
                let d = PyArrayDescr::new(py, d)?;
                if !d.is_equiv_to(&self.np_dtype(py)) {
                    if copy == Some(false) {
                        return Err(PyValueError::new_err(
                            "a copy is needed to convert to the requested dtype",
                        ));
                    }
                    return a.call_method1("astype", (d,));
                }
            }
        }
        if copy == Some(true) {
            a = a.call_method0("copy")?;
        }
        Ok(a)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.full(py)?.try_iter()?.into_any())
    }

    /// Append rows along the major axis: `rows` has the shape of the array except on
    /// the major axis (or, for a 1-D array, any 1-D sequence). Costs O(rows appended).
    fn append(&self, py: Python<'_>, rows: &Bound<'_, PyAny>) -> PyResult<()> {
        let shape = self.shape(py)?;
        let np = py.import("numpy")?;
        let v = np.call_method1("asarray", (rows, self.np_dtype(py)))?;
        let vnd: usize = v.getattr("ndim")?.extract()?;
        let major = self.major(shape.len());
        let v = if vnd + 1 == shape.len() {
            // One row without the major axis.
            np.call_method1("expand_dims", (v, major))?
        } else {
            v
        };
        let vshape: Vec<u64> = v.getattr("shape")?.extract()?;
        let ok = vshape.len() == shape.len()
            && vshape
                .iter()
                .zip(&shape)
                .enumerate()
                .all(|(i, (a, b))| i == major || a == b);
        if !ok {
            return Err(invalid(
                py,
                format!(
                    "append of shape {vshape:?} to an array of shape {shape:?}: all axes but \
                     the major one (axis {major}) must match"
                ),
            ));
        }
        let v = match self.arr.order() {
            Order::C => np.call_method1("ascontiguousarray", (v,))?,
            Order::F => np.call_method1("asfortranarray", (v,))?,
        };
        let v = v.cast_into::<PyUntypedArray>()?;
        self.arr
            .append(contiguous_bytes(&v)?)
            .map_err(|e| self.wdb_err(py, e))
    }

    /// Change the shape: only the major axis can change. Growing reads zeros, in O(1).
    fn resize(&self, py: Python<'_>, shape: &Bound<'_, PyAny>) -> PyResult<()> {
        let s = shape_of(py, shape)?;
        self.arr.resize(&s).map_err(|e| self.wdb_err(py, e))
    }

    /// Load rows `[start, stop)` of the major axis now (the GIL released), so that load
    /// errors (I/O, checksum, RAM budget) are exceptions instead of stopping the
    /// process inside a page fault. `write=True` also makes them writable (dirty).
    #[pyo3(signature = (start=None, stop=None, *, write=false))]
    fn load(
        &self,
        py: Python<'_>,
        start: Option<u64>,
        stop: Option<u64>,
        write: bool,
    ) -> PyResult<()> {
        let n = self.len_major(py)?;
        let r = start.unwrap_or(0)..stop.unwrap_or(n);
        let arr = self.arr.clone();
        py.detach(move || arr.load(r, write)).py(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = match self.shape(py) {
            Ok(s) => format!("shape={s:?}"),
            Err(_) => "ended".to_string(),
        };
        format!(
            "<wdb.Array {:?} {state} dtype={} order={}{}>",
            self.arr.name(),
            self.descr.bind(py),
            self.order(),
            if self.arr.writable() {
                ""
            } else {
                " read-only"
            }
        )
    }
}
