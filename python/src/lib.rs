//! `wdb._wdb`: the native part of the `wdb` Python package.
//!
//! Python objects own reference-counted wdb state ([`wdb::db::owned`]): a `Db` (an
//! `Arc` inside), a `Transaction` ([`SharedTransaction`]), a `Snapshot`
//! ([`SharedSnapshot`]) and an `Array` ([`SharedArray`]). The ndarrays handed out are
//! real `numpy.ndarray` objects whose data pointer is wdb memory (reserved address
//! space served by wdb's page-fault handler) and whose `base` is a [`Memory`] object
//! holding a [`Region`]: the address range stays reserved and served for as long as the
//! ndarray (or anything derived from it) lives. What such an array shows after its
//! transaction or snapshot ended is described in `docs/python.md` and in
//! `wdb::db::owned`.
//!
//! Errors become the exception classes of `wdb._errors` (one per `wdb::Error` variant,
//! all under `wdb.Error`), with the Rust error's message. Long operations (open,
//! commit, checked loads) run with the GIL released.

use std::ops::Range;
use std::sync::Arc;

use numpy::npyffi::{self, npy_intp, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PySlice, PySliceMethods, PyTuple, PyType};
use wdb::db::owned::{Region, SharedArray, SharedSnapshot, SharedTransaction, TxOutcome};
use wdb::db::{ArrayOptions, Compression, Durability, Options};
use wdb::Verify;
use wdb::{DType, Order, Tid};

// ---------------------------------------------------------------------------------------
// Errors

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static M: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    M.get_or_try_init(py, || Ok::<_, PyErr>(py.import("wdb._errors")?.unbind()))
        .map(|m| m.bind(py))
}

fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match errors_module(py).and_then(|m| m.getattr(class)) {
        Ok(c) => match c.cast_into::<PyType>() {
            Ok(t) => PyErr::from_type(t, msg),
            Err(_) => PyValueError::new_err(msg),
        },
        Err(e) => e,
    }
}

/// The Python exception for a wdb error: its class is named after the variant.
fn err(py: Python<'_>, e: wdb::Error) -> PyErr {
    use wdb::Error as E;
    let class = match &e {
        E::Conflict { .. } => "ConflictError",
        E::NotFound(_) => "NotFoundError",
        E::AlreadyExists(_) => "AlreadyExistsError",
        E::TypeMismatch { .. } => "TypeMismatchError",
        E::OutOfRange(_) => "OutOfRangeError",
        E::ReadOnly(_) => "ReadOnlyError",
        E::Corruption { .. } => "CorruptionError",
        E::Io(_) => "IoError",
        E::RamExhausted { .. } => "RamExhaustedError",
        E::Poisoned(_) => "PoisonedError",
        E::SnapshotGone { .. } => "SnapshotGoneError",
        E::InvalidArgument(_) => "InvalidArgumentError",
        E::Busy(_) => "BusyError",
        E::Load { .. } => "LoadError",
        _ => "Error",
    };
    raise(py, class, e.to_string())
}

fn closed(py: Python<'_>, what: &str) -> PyErr {
    raise(py, "ClosedError", what.to_string())
}

trait OrPy<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrPy<T> for wdb::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| err(py, e))
    }
}

// ---------------------------------------------------------------------------------------
// Element types: numpy dtype <-> wdb DType, through the `.npy` descr both understand.

fn np_format(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static M: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    M.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("numpy.lib.format")?.unbind())
    })
    .map(|m| m.bind(py))
}

/// The wdb element type of a numpy dtype (anything `numpy.dtype()` accepts).
fn dtype_of<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<(DType, Bound<'py, PyArrayDescr>)> {
    let descr = PyArrayDescr::new(py, obj)?;
    if descr.has_object() {
        return Err(raise(
            py,
            "InvalidArgumentError",
            format!("dtype {descr} holds Python objects: wdb stores fixed-size plain data only"),
        ));
    }
    let d = np_format(py)?.call_method1("dtype_to_descr", (&descr,))?;
    let text: String = d.repr()?.extract()?;
    let dt = DType::from_descr(&text).map_err(|e| {
        raise(
            py,
            "InvalidArgumentError",
            format!(
                "dtype {descr} is not supported: {e}. wdb stores bool, little-endian \
                 integers (1..8 bytes), float16/32/64, complex64/128 and structured dtypes \
                 of those"
            ),
        )
    })?;
    Ok((dt, descr))
}

/// The numpy dtype of a wdb element type.
fn descr_of<'py>(py: Python<'py>, dt: &DType) -> PyResult<Bound<'py, PyArrayDescr>> {
    let text = dt.to_descr().py(py)?;
    let value = py.import("ast")?.call_method1("literal_eval", (text,))?;
    let d = np_format(py)?.call_method1("descr_to_dtype", (value,))?;
    Ok(d.cast_into::<PyArrayDescr>()?)
}

fn parse_order(py: Python<'_>, order: &str) -> PyResult<Order> {
    match order {
        "C" | "c" => Ok(Order::C),
        "F" | "f" => Ok(Order::F),
        _ => Err(raise(
            py,
            "InvalidArgumentError",
            format!("order must be \"C\" or \"F\", not {order:?}"),
        )),
    }
}

fn shape_of(py: Python<'_>, shape: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(n) = shape.extract::<i128>() {
        return Ok(vec![u64::try_from(n).map_err(|_| {
            raise(
                py,
                "InvalidArgumentError",
                format!("negative dimension {n}"),
            )
        })?]);
    }
    let mut v = Vec::new();
    for d in shape.try_iter()? {
        let n: i128 = d?.extract()?;
        v.push(u64::try_from(n).map_err(|_| {
            raise(
                py,
                "InvalidArgumentError",
                format!("negative dimension {n}"),
            )
        })?);
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Db

/// An open wdb database (`wdb.open`). A context manager: `with wdb.open(p) as db:`
/// closes it at the end of the block.
#[pyclass(module = "wdb", name = "Db", frozen)]
struct PyDb {
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

fn durability_of(py: Python<'_>, s: &str) -> PyResult<Durability> {
    match s {
        "full" => Ok(Durability::Full),
        "buffered" => Ok(Durability::Buffered),
        _ => Err(raise(
            py,
            "InvalidArgumentError",
            format!("durability must be \"full\" or \"buffered\", not {s:?}"),
        )),
    }
}

/// The mode of a `verify=` value (`Options::verify`: when a stored block's CRC is
/// checked); `-` and `_` are the same.
fn verify_of(py: Python<'_>, s: &str) -> PyResult<Verify> {
    match s.replace('_', "-").as_str() {
        "once-per-boot" => Ok(Verify::OncePerBoot),
        "once-per-process" => Ok(Verify::OncePerProcess),
        "off" => Ok(Verify::Off),
        _ => Err(raise(
            py,
            "InvalidArgumentError",
            format!("verify must be \"once-per-boot\", \"once-per-process\" or \"off\", not {s:?}"),
        )),
    }
}

/// open(path, *, ram_budget=None, read_only=False, durability="full", verify=None,
/// block_size=None, zstd_level=None) -> Db
#[pyfunction]
#[pyo3(signature = (path, *, ram_budget=None, read_only=false, durability="full", verify=None, block_size=None, zstd_level=None))]
#[allow(clippy::too_many_arguments)]
fn open(
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
        return Err(raise(
            py,
            "InvalidArgumentError",
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

fn tid_of(t: Tid) -> u64 {
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

// ---------------------------------------------------------------------------------------
// Transaction

/// A read-write transaction (`Db.begin()`). `with db.begin() as tx:` commits at the end
/// of the block, or aborts if the block raised. Dropping an open transaction aborts it.
#[pyclass(module = "wdb", name = "Transaction", frozen)]
struct PyTransaction {
    tx: Arc<SharedTransaction>,
}

fn compression_of(py: Python<'_>, c: &Bound<'_, PyAny>) -> PyResult<Compression> {
    if let Ok(level) = c.extract::<i32>() {
        return Ok(Compression::Zstd { level });
    }
    match c.extract::<String>()?.as_str() {
        "none" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd { level: 0 }),
        other => Err(raise(
            py,
            "InvalidArgumentError",
            format!("compression must be \"zstd\", \"none\" or a zstd level, not {other:?}"),
        )),
    }
}

impl PyTransaction {
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
        let mut opts = ArrayOptions::default().order(parse_order(py, order)?);
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
        self.check_open(py)?;
        Ok(self.tx.array_names().py(py)?.iter().any(|n| n == name))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_open(py)?;
        let names = self.tx.array_names().py(py)?;
        PyList::new(py, names)?.try_iter().map(|i| i.into_any())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.check_open(py)?;
        Ok(self.tx.array_names().py(py)?.len())
    }

    /// Names of the arrays, sorted.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.check_open(py)?;
        self.tx.array_names().py(py)
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

// ---------------------------------------------------------------------------------------
// Snapshot

/// A read-only snapshot (`Db.snapshot()`): `snap[name]` gives read-only arrays that
/// show the same data whatever is committed meanwhile, by this process or another.
#[pyclass(module = "wdb", name = "Snapshot", frozen)]
struct PySnapshot {
    snap: Arc<SharedSnapshot>,
}

impl PySnapshot {
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
        self.check_open(py)?;
        Ok(self.snap.array_names().py(py)?.iter().any(|n| n == name))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_open(py)?;
        let names = self.snap.array_names().py(py)?;
        PyList::new(py, names)?.try_iter().map(|i| i.into_any())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.check_open(py)?;
        Ok(self.snap.array_names().py(py)?.len())
    }

    /// Names of the arrays, sorted.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.check_open(py)?;
        self.snap.array_names().py(py)
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

// ---------------------------------------------------------------------------------------
// Memory: the base object of every ndarray handed out

/// The wdb memory an ndarray points into (its `base`): keeps the address range
/// reserved and served while the ndarray, or anything derived from it, lives.
#[pyclass(module = "wdb", name = "Memory", frozen)]
struct Memory {
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

// ---------------------------------------------------------------------------------------
// Array

/// An array of a transaction (writable) or a snapshot (read-only). Indexing gives real
/// `numpy.ndarray` views of wdb memory: no copy, loaded lazily, bigger than RAM if need
/// be. Indexing follows NumPy (`a[i]`, `a[i:j]`, `a[i, j]`, `a[..., k]`; fancy
/// indexing copies, as in NumPy). `append` and `resize` act on the major axis (axis 0
/// in C order, the last axis in F order).
#[pyclass(module = "wdb", name = "Array", frozen, sequence)]
struct PyArray {
    arr: Arc<SharedArray>,
    descr: Py<PyArrayDescr>,
    elem: usize,
    /// Keeps the transaction (open) or snapshot alive while the array object lives.
    _owner: Owner,
}

/// What an array belongs to.
enum Owner {
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
    fn new(arr: Arc<SharedArray>, descr: Py<PyArrayDescr>, owner: Owner) -> PyArray {
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
        let region = match self.arr.region(rows.clone()) {
            Ok(r) => r,
            Err(e) if !self.arr.is_open() => {
                let _ = e;
                return Err(self.closed_err(py));
            }
            Err(e) => return Err(err(py, e)),
        };
        let major = self.major(shape.len());
        let mut dims: Vec<npy_intp> = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            let d = if i == major { rows.end - rows.start } else { d };
            dims.push(npy_intp::try_from(d).map_err(|_| {
                raise(py, "OutOfRangeError", format!("dimension {d} is too large"))
            })?);
        }
        // Contiguous strides in the array's order.
        let mut strides = vec![0 as npy_intp; dims.len()];
        let mut acc = self.elem as npy_intp;
        let order: Vec<usize> = match self.arr.order() {
            Order::C => (0..dims.len()).rev().collect(),
            Order::F => (0..dims.len()).collect(),
        };
        for i in order {
            strides[i] = acc;
            acc = acc.saturating_mul(dims[i].max(1));
        }
        if drop_axis {
            dims.remove(major);
            strides.remove(major);
        }
        let writable = self.arr.writable();
        let data = region.as_ptr();
        let mem = Bound::new(py, Memory { region, writable })?;
        let descr = self.descr.bind(py).clone();
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
        if key.is_instance_of::<pyo3::types::PyBool>() {
            return Ok(None);
        }
        if let Ok(i) = key.extract::<i64>() {
            // Only Python ints and NumPy integer scalars (not 0-d arrays or floats).
            if !key.is_instance_of::<pyo3::types::PyInt>() && !key.hasattr("__index__")? {
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

    /// The array's dtype (owned reference).
    fn np_dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.descr.bind(py).clone()
    }
}

/// The bytes of a Python `int`/`float` (or NumPy scalar) as one element of a numeric
/// scalar type, when the conversion is exact or a float rounding (as NumPy does it);
/// `None` for anything else, which then goes through NumPy's own conversion (and its
/// errors). The fast path of `a[i] = v`.
fn scalar_bytes(dt: &DType, value: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
    use wdb::array::Scalar as S;
    let DType::Scalar(s) = dt else { return None };
    let is_float = value.is_instance_of::<pyo3::types::PyFloat>();
    let is_int = value.is_instance_of::<pyo3::types::PyInt>()
        && !value.is_instance_of::<pyo3::types::PyBool>();
    if !is_float && !is_int {
        return None;
    }
    macro_rules! int {
        ($t:ty) => {{
            if !is_int {
                return None;
            }
            let v: i128 = value.extract().ok()?;
            <$t>::try_from(v).ok()?.to_le_bytes().to_vec()
        }};
    }
    Some(match s {
        S::F64 => value.extract::<f64>().ok()?.to_le_bytes().to_vec(),
        S::F32 => (value.extract::<f64>().ok()? as f32).to_le_bytes().to_vec(),
        S::I8 => int!(i8),
        S::I16 => int!(i16),
        S::I32 => int!(i32),
        S::I64 => int!(i64),
        S::U8 => int!(u8),
        S::U16 => int!(u16),
        S::U32 => int!(u32),
        S::U64 => int!(u64),
        _ => return None,
    })
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
            let shape = self.shape(py)?;
            let map_err = |e: wdb::Error| {
                if self.arr.is_open() {
                    err(py, e)
                } else {
                    self.closed_err(py)
                }
            };
            if one && shape.len() == 1 {
                if let Some(b) = scalar_bytes(self.arr.dtype(), value) {
                    return self.arr.write_from(rows, &b).map_err(map_err);
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
                let len = part.len() * self.elem;
                // SAFETY: `part` is a contiguous ndarray of this array's dtype owned by
                // this frame; its `len` bytes stay valid while it lives, and no Python
                // code runs (the GIL is held) while the slice is used.
                let bytes = unsafe {
                    std::slice::from_raw_parts((*part.as_array_ptr()).fields.data.cast::<u8>(), len)
                };
                self.arr
                    .write_from(rows.start + lo..rows.start + hi, bytes)
                    .map_err(map_err)?;
                lo = hi;
            }
            return Ok(());
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
            return Err(raise(
                py,
                "InvalidArgumentError",
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
        let n = v.len() * self.elem;
        // SAFETY: as_array_ptr is the live PyArrayObject of `v`.
        let data = unsafe { (*v.as_array_ptr()).fields.data };
        // SAFETY: `v` is a contiguous ndarray of this array's dtype that we own a
        // reference to; its `n` bytes (elements × element size) stay valid while it
        // lives, and nothing else runs Python code while we hold the GIL here.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), n) };
        self.arr.append(bytes).map_err(|e| {
            if self.arr.is_open() {
                err(py, e)
            } else {
                self.closed_err(py)
            }
        })
    }

    /// Change the shape: only the major axis can change. Growing reads zeros, in O(1).
    fn resize(&self, py: Python<'_>, shape: &Bound<'_, PyAny>) -> PyResult<()> {
        let s = shape_of(py, shape)?;
        self.arr.resize(&s).map_err(|e| {
            if self.arr.is_open() {
                err(py, e)
            } else {
                self.closed_err(py)
            }
        })
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

// ---------------------------------------------------------------------------------------
// Module

/// Put wdb's SIGSEGV handler back on top if other code (faulthandler.enable()) replaced
/// it; faults that are not wdb's go on to that handler.
#[pyfunction]
fn _ensure_fault_handler(py: Python<'_>) -> PyResult<()> {
    wdb::virtmem::ensure_fault_handler().py(py)
}

#[pymodule]
fn _wdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(_ensure_fault_handler, m)?)?;
    m.add_class::<PyDb>()?;
    m.add_class::<PyTransaction>()?;
    m.add_class::<PySnapshot>()?;
    m.add_class::<PyArray>()?;
    m.add_class::<Memory>()?;
    Ok(())
}
