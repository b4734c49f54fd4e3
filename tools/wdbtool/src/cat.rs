//! `wdbtool cat DB ARRAY [RANGE]`: print rows of an array, whatever its element type.
//!
//! RANGE counts rows of the major axis (axis 0 in C order, the last axis in F order),
//! like the ranges of `Array::view`: `10..20`, `10..`, `..3`, `5`, `2..=4`, `..`
//! (default: the first [`DEFAULT_ROWS`]). Output: a `#` line describing the array, then
//! one line per row, `INDEX: VALUE` — a scalar for a 1-D array, otherwise the row's
//! elements nested by axis like NumPy prints them (`[[1, 2], [3, 4]]`), records as
//! `{x: 1.5, y: 2}`.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::ExitCode;

use wdb::db::Order;
use wdb::{Error, Result};

use crate::blocks::{dtype_of, open_ro, snapshot, ByteReader};

/// Rows printed when no RANGE is given.
pub const DEFAULT_ROWS: u64 = 10;

/// Largest row printed (bytes): a row is read whole to print it in logical order.
const MAX_ROW_BYTES: u64 = 16 << 20;

/// Parse RANGE against an array of `len` rows into `start..end`.
pub fn parse_range(s: Option<&str>, len: u64) -> Result<(u64, u64)> {
    let Some(s) = s else {
        return Ok((0, len.min(DEFAULT_ROWS)));
    };
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "range {s:?}: {why} (expected like 10..20, 10.., ..3, 5 or 2..=4)"
        ))
    };
    let num = |t: &str| -> Result<u64> {
        t.trim()
            .parse::<u64>()
            .map_err(|_| bad(&format!("{t:?} is not a row number")))
    };
    let (start, end) = if let Some((a, b)) = s.split_once("..") {
        let start = if a.trim().is_empty() { 0 } else { num(a)? };
        let end = if let Some(b) = b.strip_prefix('=') {
            num(b)?.checked_add(1).ok_or_else(|| bad("end too large"))?
        } else if b.trim().is_empty() {
            len
        } else {
            num(b)?
        };
        (start, end)
    } else {
        let i = num(s)?;
        (i, i.checked_add(1).ok_or_else(|| bad("row too large"))?)
    };
    if start > end {
        return Err(Error::OutOfRange(format!(
            "range {s:?}: start {start} is after end {end}"
        )));
    }
    if end > len {
        return Err(Error::OutOfRange(format!(
            "range {s:?}: the array has {len} rows (0..{len})"
        )));
    }
    Ok((start, end))
}

/// The command.
pub fn run(db: &Path, array: &str, range: Option<&str>, at: Option<u64>) -> Result<ExitCode> {
    cat(db, array, range, at)?;
    Ok(ExitCode::SUCCESS)
}

/// Print `range` of array `name` to stdout. A closed pipe (`| head`) ends quietly.
fn cat(db_path: &Path, name: &str, range: Option<&str>, at: Option<u64>) -> Result<()> {
    let db = open_ro(db_path)?;
    let snap = snapshot(&db, at)?;
    let info = snap.array_info(name)?;
    let dtype = dtype_of(&info)?;
    let ndim = info.shape.len();
    if ndim == 0 {
        return Err(Error::corruption(0, format!("array {name:?} has no axes")));
    }
    let major = match info.order {
        Order::C => 0,
        Order::F => ndim - 1,
    };
    let len = info.shape[major];
    let (start, end) = parse_range(range, len)?;

    // The axes of one row, in logical order, and their strides in elements.
    let dims: Vec<u64> = info
        .shape
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != major)
        .map(|(_, &d)| d)
        .collect();
    let mut strides = vec![0u64; dims.len()];
    let mut acc = 1u64;
    let idx: Vec<usize> = match info.order {
        Order::C => (0..dims.len()).rev().collect(),
        Order::F => (0..dims.len()).collect(),
    };
    for i in idx {
        strides[i] = acc;
        acc = acc.saturating_mul(dims[i]);
    }
    let esz = u64::from(info.elem_size);
    let row_bytes = acc
        .checked_mul(esz)
        .ok_or_else(|| Error::OutOfRange("row size overflows".into()))?;
    if row_bytes > MAX_ROW_BYTES && end > start {
        return Err(Error::OutOfRange(format!(
            "a row of {name:?} is {row_bytes} bytes, more than cat prints ({MAX_ROW_BYTES}); export it instead"
        )));
    }
    let mut reader = ByteReader::new(&snap, &info)?;
    let row_len = usize::try_from(row_bytes).map_err(|_| Error::OutOfRange("row".into()))?;
    let mut row = vec![0u8; row_len];

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let order = match info.order {
        Order::C => "C",
        Order::F => "F",
    };
    let mut w = |line: String| -> Result<bool> {
        match writeln!(out, "{line}") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Error::Io(e)),
        }
    };
    if !w(format!(
        "# {name}: {dtype}, shape {:?}, order {order}, rows {start}..{end} of {len}, tid {}",
        info.shape,
        snap.tid()
    ))? {
        return Ok(());
    }
    let esz_us = usize::try_from(esz).map_err(|_| Error::OutOfRange("element".into()))?;
    for i in start..end {
        reader.read_at(i * row_bytes, &mut row)?;
        let mut line = format!("{i}: ");
        format_nested(&dtype, &row, &dims, &strides, esz_us, 0, 0, &mut line)?;
        if !w(line)? {
            return Ok(());
        }
    }
    match out.flush() {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(Error::Io(e)),
        _ => Ok(()),
    }
}

/// Append the elements of `row` over axes `axis..` (element offset `base`) to `out`.
#[allow(clippy::too_many_arguments)]
fn format_nested(
    dtype: &wdb::DType,
    row: &[u8],
    dims: &[u64],
    strides: &[u64],
    esz: usize,
    axis: usize,
    base: u64,
    out: &mut String,
) -> Result<()> {
    if axis == dims.len() {
        let at = usize::try_from(base)
            .ok()
            .and_then(|b| b.checked_mul(esz))
            .ok_or_else(|| Error::OutOfRange("element offset".into()))?;
        let bytes = row
            .get(at..at + esz)
            .ok_or_else(|| Error::OutOfRange("element offset".into()))?;
        out.push_str(&dtype.format_value(bytes)?);
        return Ok(());
    }
    out.push('[');
    for k in 0..dims[axis] {
        if k > 0 {
            out.push_str(", ");
        }
        format_nested(
            dtype,
            row,
            dims,
            strides,
            esz,
            axis + 1,
            base + k * strides[axis],
            out,
        )?;
    }
    out.push(']');
    Ok(())
}
