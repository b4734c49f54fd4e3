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
//!
//! | module          | holds                                                          |
//! |-----------------|----------------------------------------------------------------|
//! | [`db`]          | `wdb.Db` and `wdb.open`                                        |
//! | [`transaction`] | `wdb.Transaction` and `wdb.Snapshot`                           |
//! | [`array`]       | `wdb.Array`: indexing, writes, `append`, `resize`, `load`      |
//! | [`view`]        | `wdb.Memory` and the ndarrays over wdb memory                  |
//! | [`dtype`]       | numpy dtype ↔ wdb `DType`; a Python number as element bytes    |
//! | [`args`]        | keyword arguments (order, durability, verify, compression, shape) |
//! | [`errors`]      | `wdb::Error` → the exception classes of `wdb._errors`          |
//!
//! [`SharedTransaction`]: wdb::db::owned::SharedTransaction
//! [`SharedSnapshot`]: wdb::db::owned::SharedSnapshot
//! [`SharedArray`]: wdb::db::owned::SharedArray
//! [`Region`]: wdb::db::owned::Region
//! [`Memory`]: view::Memory

use pyo3::prelude::*;

mod args;
mod array;
mod db;
mod dtype;
mod errors;
mod transaction;
mod view;

use errors::OrPy;

/// Put wdb's SIGSEGV handler back on top if other code (faulthandler.enable()) replaced
/// it; faults that are not wdb's go on to that handler.
#[pyfunction]
fn _ensure_fault_handler(py: Python<'_>) -> PyResult<()> {
    wdb::ensure_fault_handler().py(py)
}

#[pymodule]
fn _wdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(db::open, m)?)?;
    m.add_function(wrap_pyfunction!(_ensure_fault_handler, m)?)?;
    m.add_class::<db::PyDb>()?;
    m.add_class::<transaction::PyTransaction>()?;
    m.add_class::<transaction::PySnapshot>()?;
    m.add_class::<array::PyArray>()?;
    m.add_class::<view::Memory>()?;
    Ok(())
}
