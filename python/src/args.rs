//! Keyword arguments: the Python spellings of orders, durabilities, verify modes,
//! compressions and shapes, each checked into its wdb value with an
//! `InvalidArgumentError` that lists what is accepted.

use pyo3::prelude::*;
use wdb::db::{Compression, Durability};
use wdb::{Order, Verify};

use crate::errors::invalid;

/// The value `key` names in `table` (a name → value table); otherwise an
/// `InvalidArgumentError` "`what` must be "a", "b" or "c", not `given`".
fn choice<T: Copy>(
    py: Python<'_>,
    what: &str,
    key: &str,
    given: &str,
    table: &[(&str, T)],
) -> PyResult<T> {
    if let Some((_, v)) = table.iter().find(|(name, _)| *name == key) {
        return Ok(*v);
    }
    let names: Vec<String> = table.iter().map(|(n, _)| format!("{n:?}")).collect();
    let listed = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(invalid(
        py,
        format!("{what} must be {listed}, not {given:?}"),
    ))
}

/// `order=`: "C" (axis 0 is the major axis) or "F" (the last axis is), either case.
pub(crate) fn order_of(py: Python<'_>, order: &str) -> PyResult<Order> {
    let key = order.to_ascii_uppercase();
    choice(
        py,
        "order",
        &key,
        order,
        &[("C", Order::C), ("F", Order::F)],
    )
}

/// `durability=`: "full" or "buffered".
pub(crate) fn durability_of(py: Python<'_>, s: &str) -> PyResult<Durability> {
    let table = [
        ("full", Durability::Full),
        ("buffered", Durability::Buffered),
    ];
    choice(py, "durability", s, s, &table)
}

/// The mode of a `verify=` value (`Options::verify`: when a stored block's CRC is
/// checked); `-` and `_` are the same.
pub(crate) fn verify_of(py: Python<'_>, s: &str) -> PyResult<Verify> {
    let table = [
        ("once-per-boot", Verify::OncePerBoot),
        ("once-per-process", Verify::OncePerProcess),
        ("off", Verify::Off),
    ];
    choice(py, "verify", &s.replace('_', "-"), s, &table)
}

/// `compression=`: "zstd", "none" or a zstd level.
pub(crate) fn compression_of(py: Python<'_>, c: &Bound<'_, PyAny>) -> PyResult<Compression> {
    if let Ok(level) = c.extract::<i32>() {
        return Ok(Compression::Zstd { level });
    }
    match c.extract::<String>()?.as_str() {
        "none" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd { level: 0 }),
        other => Err(invalid(
            py,
            format!("compression must be \"zstd\", \"none\" or a zstd level, not {other:?}"),
        )),
    }
}

/// A shape: an int (one axis) or an iterable of ints, none negative.
pub(crate) fn shape_of(py: Python<'_>, shape: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    let dim =
        |n: i128| u64::try_from(n).map_err(|_| invalid(py, format!("negative dimension {n}")));
    if let Ok(n) = shape.extract::<i128>() {
        return Ok(vec![dim(n)?]);
    }
    let mut v = Vec::new();
    for d in shape.try_iter()? {
        v.push(dim(d?.extract()?)?);
    }
    Ok(v)
}
