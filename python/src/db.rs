//! `wdb.Db` and `wdb.open`: an open database, the source of transactions and snapshots.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use wdb::db::owned::{SharedSnapshot, SharedTransaction};
use wdb::db::Options;
use wdb::Tid;

use crate::args::{durability_of, verify_of};
use crate::errors::{closed, invalid, OrPy};
use crate::transaction::{PySnapshot, PyTransaction};

/// An open wdb database (`wdb.open`). A context manager: `with wdb.open(p) as db:`
/// closes it at the end of the block.
#[pyclass(module = "wdb", name = "Db", frozen)]
pub(crate) struct PyDb {
    db: Mutex<Option<wdb::Db>>,
    path: String,
}

impl PyDb {
    fn get(&self, py: Python<'_>) -> PyResult<wdb::Db> {
        self.db
            .lock()
            .clone()
            .ok_or_else(|| closed(py, "the database is closed"))
    }
}

/// open(path, *, ram_budget=None, read_only=False, durability="full", verify=None,
/// block_size=None, zstd_level=None) -> Db
#[pyfunction]
#[pyo3(signature = (path, *, ram_budget=None, read_only=false, durability="full", verify=None, block_size=None, zstd_level=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn open(
    py: Python<'_>,
    path: String,
    ram_budget: Option<u64>,
    read_only: bool,
    durability: &str,
    verify: Option<&str>,
    block_size: Option<u32>,
    zstd_level: Option<i32>,
) -> PyResult<PyDb> {
    if path.contains("://") {
        return Err(invalid(
            py,
            format!("{path:?}: this build of wdb opens local paths only"),
        ));
    }
    let mut o = Options::default()
        .read_only(read_only)
        .durability(durability_of(py, durability)?);
    if let Some(b) = ram_budget {
        o = o.ram_budget(b);
    }
    if let Some(v) = verify {
        o = o.verify(verify_of(py, v)?);
    }
    if let Some(b) = block_size {
        o = o.block_size(b);
    }
    if let Some(z) = zstd_level {
        o = o.zstd_level(z);
    }
    let p = path.clone();
    let db = py.detach(move || wdb::Db::open_with(&p, o)).py(py)?;
    Ok(PyDb {
        db: Mutex::new(Some(db)),
        path,
    })
}

pub(crate) fn tid_of(t: Tid) -> u64 {
    t.get()
}

#[pymethods]
impl PyDb {
    /// Begin a read-write transaction at the latest commit.
    fn begin(&self, py: Python<'_>) -> PyResult<PyTransaction> {
        let db = self.get(py)?;
        let tx = py.detach(|| SharedTransaction::begin(&db)).py(py)?;
        Ok(PyTransaction { tx })
    }

    /// A read-only snapshot of the latest commit, or of commit `at` (time travel).
    #[pyo3(signature = (at=None))]
    fn snapshot(&self, py: Python<'_>, at: Option<u64>) -> PyResult<PySnapshot> {
        let db = self.get(py)?;
        let at = at.map(Tid);
        let s = py.detach(|| SharedSnapshot::new(&db, at)).py(py)?;
        Ok(PySnapshot { snap: s })
    }

    /// The newest commit's tid (reading other processes' commits first).
    #[getter]
    fn last_tid(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.get(py)?;
        py.detach(|| db.last_tid()).py(py).map(tid_of)
    }

    /// Every commit, oldest first: a list of dicts with `tid`, `time` (seconds since
    /// the epoch), `bytes`, `arrays` (names touched) and `names_changed`.
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let db = self.get(py)?;
        let h = py.detach(|| db.history()).py(py)?;
        let out = PyList::empty(py);
        for e in h {
            let d = PyDict::new(py);
            d.set_item("tid", e.tid.get())?;
            let secs = e
                .time
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            d.set_item("time", secs)?;
            d.set_item("bytes", e.bytes)?;
            d.set_item("arrays", e.arrays)?;
            d.set_item("names_changed", e.names_changed)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// RAM of array data: a dict with `budget`, `ram_used`, `dirty`, `loads`,
    /// `stores`, `evictions`, `file_maps`.
    fn memory_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get(py)?.memory_stats().py(py)?;
        let d = PyDict::new(py);
        d.set_item("budget", s.budget)?;
        d.set_item("ram_used", s.ram_used)?;
        d.set_item("dirty", s.dirty)?;
        d.set_item("loads", s.loads)?;
        d.set_item("stores", s.stores)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("file_maps", s.file_maps)?;
        Ok(d)
    }

    /// The path it was opened with.
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// Close: no new transactions or snapshots. Those already begun keep working until
    /// they end; the file is released when the last of them (and of their ndarrays) is
    /// gone.
    fn close(&self) {
        self.db.lock().take();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.db.lock().is_none()
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
        let state = if self.closed() { " (closed)" } else { "" };
        format!("<wdb.Db {:?}{state}>", self.path)
    }
}
