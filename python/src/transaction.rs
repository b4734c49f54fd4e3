//! `wdb.Transaction` and `wdb.Snapshot`: the two ways to see the arrays of a database,
//! read-write at the latest commit or read-only at a given one.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use wdb::db::owned::{SharedSnapshot, SharedTransaction, TxOutcome};
use wdb::db::ArrayOptions;

use crate::args::{compression_of, order_of, shape_of};
use crate::array::{Owner, PyArray};
use crate::db::tid_of;
use crate::dtype::{descr_of, dtype_of};
use crate::errors::{closed, OrPy};

/// A read-write transaction (`Db.begin()`). `with db.begin() as tx:` commits at the end
/// of the block, or aborts if the block raised. Dropping an open transaction aborts it.
#[pyclass(module = "wdb", name = "Transaction", frozen)]
pub(crate) struct PyTransaction {
    pub(crate) tx: Arc<SharedTransaction>,
}

impl PyTransaction {
    /// The array names, sorted (a `ClosedError` once the transaction has ended).
    fn names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.check_open(py)?;
        self.tx.array_names().py(py)
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        match self.tx.outcome() {
            None => Ok(()),
            Some(o) => Err(closed(
                py,
                &format!("the transaction has ended ({})", outcome_text(o)),
            )),
        }
    }
}

/// `iter(tx)` / `iter(snap)`: an iterator over the array names.
fn iter_names(py: Python<'_>, names: Vec<String>) -> PyResult<Bound<'_, PyAny>> {
    PyList::new(py, names)?.try_iter().map(|i| i.into_any())
}

fn outcome_text(o: TxOutcome) -> String {
    match o {
        TxOutcome::Committed(t) => format!("committed at tid {t}"),
        TxOutcome::Aborted => "aborted".into(),
        TxOutcome::Failed => "its commit failed".into(),
    }
}

#[pymethods]
impl PyTransaction {
    /// Create array `name` of `shape` (all zeros, costs no RAM) and element type `dtype`
    /// (anything `numpy.dtype()` accepts: integers, float32/64, structured dtypes of
    /// those). `order` is "C" (axis 0 is the major axis) or "F" (the last axis is).
    #[pyo3(signature = (name, shape, dtype, order="C", *, block_size=None, compression=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_array(
        &self,
        py: Python<'_>,
        name: &str,
        shape: &Bound<'_, PyAny>,
        dtype: &Bound<'_, PyAny>,
        order: &str,
        block_size: Option<u32>,
        compression: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyArray> {
        self.check_open(py)?;
        let shape = shape_of(py, shape)?;
        let (dt, descr) = dtype_of(py, dtype)?;
        let mut opts = ArrayOptions::default().order(order_of(py, order)?);
        if let Some(b) = block_size {
            opts = opts.block_size(b);
        }
        if let Some(c) = compression {
            opts = opts.compression(compression_of(py, c)?);
        }
        let a = self.tx.create_array(name, &dt, &shape, opts).py(py)?;
        Ok(PyArray::new(a, descr.unbind(), Owner::Tx(self.tx.clone())))
    }

    /// The array `name`, writable in this transaction.
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<PyArray> {
        self.check_open(py)?;
        let a = self.tx.array(name).py(py)?;
        let descr = descr_of(py, a.dtype())?;
        Ok(PyArray::new(a, descr.unbind(), Owner::Tx(self.tx.clone())))
    }

    /// Delete array `name`. ndarrays of it still alive read zeros from then on.
    fn __delitem__(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.check_open(py)?;
        self.tx.delete_array(name).py(py)
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        Ok(self.names(py)?.iter().any(|n| n == name))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        iter_names(py, self.names(py)?)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.names(py)?.len())
    }

    /// Names of the arrays, sorted.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.names(py)
    }

    /// Commit atomically; returns the new tid (the snapshot's tid if nothing changed).
    /// The transaction ends, whatever the outcome.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        self.check_open(py)?;
        let tx = self.tx.clone();
        py.detach(move || tx.commit()).py(py).map(tid_of)
    }

    /// Drop every change. Nothing happens if the transaction has already ended.
    fn abort(&self, py: Python<'_>) {
        let tx = self.tx.clone();
        py.detach(move || tx.abort());
    }

    /// The tid of the commit, once committed; None before (and after an abort).
    #[getter]
    fn tid(&self) -> Option<u64> {
        match self.tx.outcome() {
            Some(TxOutcome::Committed(t)) => Some(t.get()),
            _ => None,
        }
    }

    /// The snapshot this transaction reads.
    #[getter]
    fn snapshot_tid(&self) -> u64 {
        self.tx.snapshot_tid().get()
    }

    /// "open", "committed", "aborted" or "failed".
    #[getter]
    fn state(&self) -> &'static str {
        match self.tx.outcome() {
            None => "open",
            Some(TxOutcome::Committed(_)) => "committed",
            Some(TxOutcome::Aborted) => "aborted",
            Some(TxOutcome::Failed) => "failed",
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if self.tx.outcome().is_some() {
            return Ok(false);
        }
        if exc_type.is_none() {
            self.commit(py)?;
        } else {
            self.abort(py);
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<wdb.Transaction at snapshot {} ({})>",
            self.tx.snapshot_tid(),
            self.state()
        )
    }
}

/// A read-only snapshot (`Db.snapshot()`): `snap[name]` gives read-only arrays that
/// show the same data whatever is committed meanwhile, by this process or another.
#[pyclass(module = "wdb", name = "Snapshot", frozen)]
pub(crate) struct PySnapshot {
    pub(crate) snap: Arc<SharedSnapshot>,
}

impl PySnapshot {
    /// The array names, sorted (a `ClosedError` once the snapshot is closed).
    fn names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.check_open(py)?;
        self.snap.array_names().py(py)
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.snap.is_open() {
            Ok(())
        } else {
            Err(closed(py, "the snapshot is closed"))
        }
    }
}

#[pymethods]
impl PySnapshot {
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<PyArray> {
        self.check_open(py)?;
        let a = self.snap.array(name).py(py)?;
        let descr = descr_of(py, a.dtype())?;
        Ok(PyArray::new(
            a,
            descr.unbind(),
            Owner::Snap(self.snap.clone()),
        ))
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        Ok(self.names(py)?.iter().any(|n| n == name))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        iter_names(py, self.names(py)?)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.names(py)?.len())
    }

    /// Names of the arrays, sorted.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.names(py)
    }

    /// The commit it shows.
    #[getter]
    fn tid(&self) -> u64 {
        self.snap.tid().get()
    }

    /// Close: no more arrays can be opened from it; ndarrays already obtained keep
    /// showing the snapshot until they are dropped.
    fn close(&self) {
        self.snap.close();
    }

    #[getter]
    fn closed(&self) -> bool {
        !self.snap.is_open()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.snap.is_open() { "" } else { " (closed)" };
        format!("<wdb.Snapshot at tid {}{state}>", self.snap.tid())
    }
}
