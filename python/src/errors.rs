//! Errors: every `wdb::Error` becomes an exception of `wdb._errors` (one class per
//! variant, all under `wdb.Error`) carrying the Rust error's message.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static M: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    M.get_or_try_init(py, || Ok::<_, PyErr>(py.import("wdb._errors")?.unbind()))
        .map(|m| m.bind(py))
}

/// An exception of class `class` (a name in `wdb._errors`) with message `msg`.
pub(crate) fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match errors_module(py).and_then(|m| m.getattr(class)) {
        Ok(c) => match c.cast_into::<PyType>() {
            Ok(t) => PyErr::from_type(t, msg),
            Err(_) => PyValueError::new_err(msg),
        },
        Err(e) => e,
    }
}

/// An `InvalidArgumentError` with message `msg`.
pub(crate) fn invalid(py: Python<'_>, msg: String) -> PyErr {
    raise(py, "InvalidArgumentError", msg)
}

/// The Python exception for a wdb error: its class is named after the variant.
pub(crate) fn err(py: Python<'_>, e: wdb::Error) -> PyErr {
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

/// A `ClosedError`: the database, transaction or snapshot `what` speaks of has ended.
pub(crate) fn closed(py: Python<'_>, what: &str) -> PyErr {
    raise(py, "ClosedError", what.to_string())
}

/// `wdb::Result` into `PyResult`, through [`err`].
pub(crate) trait OrPy<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrPy<T> for wdb::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| err(py, e))
    }
}
