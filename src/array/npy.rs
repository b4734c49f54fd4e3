//! NumPy `.npy` headers: read any of format 1.0, 2.0, 3.0; write what NumPy writes.
//!
//! A `.npy` file is a header followed by the raw elements in C or F order. This module
//! reads and writes the header only; the caller (wdbtool export/import) streams the
//! data in chunks, so arrays bigger than RAM work. [`NpyHeader::data_len`] says how
//! many data bytes follow.
//!
//! The header, as NumPy's `numpy.lib.format` defines it:
//!
//! ```text
//! "\x93NUMPY" major:u8 minor:u8 header_len:(u16 in 1.0, u32 in 2.0/3.0, LE) header
//! header = Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...), }
//!          padded with spaces and a final '\n' so the data starts at a multiple of 64;
//!          latin-1 text in 1.0/2.0, UTF-8 in 3.0.
//! ```
//!
//! Reading is bounded ([`MAX_HEADER_LEN`]) and never panics: malformed headers are
//! [`Error::Corruption`] (offset = file offset), well-formed ones that wdb cannot hold
//! (big-endian, object, string, complex dtypes, subarrays) are
//! [`Error::InvalidArgument`]. Writing reproduces NumPy's bytes exactly: keys sorted,
//! Python `repr` of each value, the spare spaces NumPy leaves for the growth axis, and
//! the oldest format version that can hold the header.

use std::io::{Read, Write};

use super::dtype::DType;
use super::layout::{Layout, Order};
use super::pylit::{self, Value};
use crate::{Error, Result};

/// The magic bytes that start a `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Longest header accepted by [`read_header`] (NumPy's own reader refuses more than
/// 10 000 bytes unless told otherwise; structured dtypes with many fields need more).
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// Alignment of the data start that NumPy pads the header to.
const ARRAY_ALIGN: usize = 64;

/// Spare header space NumPy leaves so that the growth axis can be rewritten in place:
/// `len(str(8 * 2**64 - 1))`.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// What a `.npy` header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Shape (empty for a NumPy 0-d array, which holds one element).
    pub shape: Vec<u64>,
    /// `true` for F (column-major) order.
    pub fortran_order: bool,
}

impl NpyHeader {
    /// A header.
    pub fn new(dtype: DType, shape: &[u64], order: Order) -> NpyHeader {
        NpyHeader {
            dtype,
            shape: shape.to_vec(),
            fortran_order: order == Order::F,
        }
    }

    /// The storage order.
    pub fn order(&self) -> Order {
        if self.fortran_order {
            Order::F
        } else {
            Order::C
        }
    }

    /// Number of elements (1 for a 0-d array); overflow is [`Error::OutOfRange`].
    pub fn num_elems(&self) -> Result<u64> {
        self.shape.iter().try_fold(1u64, |acc, &d| {
            acc.checked_mul(d).ok_or_else(|| {
                Error::OutOfRange(format!("shape {:?} has too many elements", self.shape))
            })
        })
    }

    /// Number of data bytes after the header; overflow is [`Error::OutOfRange`].
    pub fn data_len(&self) -> Result<u64> {
        let size = u64::try_from(self.dtype.size())
            .map_err(|_| Error::OutOfRange("element size".into()))?;
        self.num_elems()?
            .checked_mul(size)
            .ok_or_else(|| Error::OutOfRange(format!("shape {:?} has too many bytes", self.shape)))
    }

    /// The layout of the data: shape, order and the element size of `dtype`. A 0-d
    /// header (shape `()`) is [`Error::InvalidArgument`]: wdb arrays have at least one
    /// axis.
    pub fn layout(&self) -> Result<Layout> {
        Layout::new(&self.shape, self.order(), self.dtype.size())
    }

    /// The header text NumPy would write, before padding (dict, then the growth spaces).
    fn text(&self) -> Result<String> {
        let mut t = String::from("{'descr': ");
        t.push_str(&self.dtype.to_descr()?);
        t.push_str(", 'fortran_order': ");
        t.push_str(if self.fortran_order { "True" } else { "False" });
        t.push_str(", 'shape': ");
        pylit::write_int_tuple(&mut t, &self.shape);
        t.push_str(", }");
        if !self.shape.is_empty() {
            let growth = if self.fortran_order {
                self.shape[self.shape.len() - 1]
            } else {
                self.shape[0]
            };
            let digits = growth.to_string().len();
            t.extend(std::iter::repeat_n(
                ' ',
                GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
            ));
        }
        Ok(t)
    }

    /// The complete header bytes (magic to the final `'\n'`), exactly as NumPy writes
    /// them: format 1.0 when the header fits in 65535 bytes and is latin-1, 2.0 when it
    /// is longer, 3.0 (UTF-8) when a field name is not latin-1.
    /// A shape whose data size overflows 64 bits is [`Error::OutOfRange`].
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.data_len()?;
        let text = self.text()?;
        let latin1: Option<Vec<u8>> = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect();
        let (body, versions): (Vec<u8>, &[u8]) = match latin1 {
            Some(bytes) => (bytes, &[1, 2]),
            None => (text.into_bytes(), &[3]),
        };
        for &major in versions {
            let len_size = if major == 1 { 2 } else { 4 };
            let hlen = body.len() + 1; // the final '\n'
            let pad = ARRAY_ALIGN - (MAGIC.len() + 2 + len_size + hlen) % ARRAY_ALIGN;
            let total = hlen + pad;
            let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_size + total);
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&[major, 0]);
            if major == 1 {
                match u16::try_from(total) {
                    Ok(n) => out.extend_from_slice(&n.to_le_bytes()),
                    Err(_) => continue,
                }
            } else {
                let n = u32::try_from(total).map_err(|_| {
                    Error::InvalidArgument(format!("npy header of {total} bytes is too long"))
                })?;
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&body);
            out.extend(std::iter::repeat_n(b' ', pad));
            out.push(b'\n');
            return Ok(out);
        }
        Err(Error::InvalidArgument("npy header too long".into()))
    }
}

/// Write the header of `h` (see [`NpyHeader::to_bytes`]); the caller writes
/// [`NpyHeader::data_len`] bytes of data after it.
pub fn write_header(w: &mut impl Write, h: &NpyHeader) -> Result<()> {
    w.write_all(&h.to_bytes()?)?;
    Ok(())
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            Error::corruption(offset, format!("npy: truncated {what}"))
        }
        _ => Error::Io(e),
    })
}

/// Read a `.npy` header, leaving `r` at the first data byte.
pub fn read_header(r: &mut impl Read) -> Result<NpyHeader> {
    let mut pre = [0u8; 8];
    read_exact_or(r, &mut pre, 0, "magic")?;
    if &pre[..6] != MAGIC {
        return Err(Error::InvalidArgument(
            "not a NumPy .npy file (bad magic)".into(),
        ));
    }
    let (major, minor) = (pre[6], pre[7]);
    let len_size: usize = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)"
            )))
        }
    };
    let mut len_bytes = [0u8; 4];
    read_exact_or(r, &mut len_bytes[..len_size], 8, "header length")?;
    let header_len = u32::from_le_bytes(len_bytes);
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|&n| n <= MAX_HEADER_LEN)
        .ok_or_else(|| {
            Error::corruption(
                8,
                format!("npy: header length {header_len} exceeds {MAX_HEADER_LEN}"),
            )
        })?;
    let start = 8 + len_size;
    let start_u64 = u64::try_from(start).unwrap_or(u64::MAX);
    let mut raw = vec![0u8; header_len];
    read_exact_or(r, &mut raw, start_u64, "header")?;
    let text: String = if major == 3 {
        String::from_utf8(raw).map_err(|e| {
            Error::corruption(
                start_u64.saturating_add(u64::try_from(e.utf8_error().valid_up_to()).unwrap_or(0)),
                "npy: header is not UTF-8",
            )
        })?
    } else {
        // latin-1: every byte is the code point of the same value.
        raw.iter().map(|&b| char::from(b)).collect()
    };
    // Parse errors carry byte offsets into `text`; adding `start` makes them file
    // offsets (exact for ASCII headers, which is all NumPy writes unless a field name
    // is not ASCII).
    let value = pylit::parse(&text).map_err(|e| match e {
        Error::Corruption { offset, what } => Error::Corruption {
            offset: offset.saturating_add(start_u64),
            what: format!("npy header: {what}"),
        },
        e => e,
    })?;
    parse_dict(&value, start_u64)
}

fn parse_dict(value: &Value, at: u64) -> Result<NpyHeader> {
    let bad = |what: &str| Error::corruption(at, format!("npy header: {what}"));
    let Value::Dict(items) = value else {
        return Err(bad("not a dict"));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (k, v) in items {
        let Value::Str(k) = k else {
            return Err(bad("a key is not a string"));
        };
        let slot = match k.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err(bad(&format!("unexpected key {k:?}"))),
        };
        if slot.replace(v).is_some() {
            return Err(bad(&format!("key {k:?} appears twice")));
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(bad("the keys must be 'descr', 'fortran_order' and 'shape'"));
    };
    let Value::Bool(fortran_order) = *fortran else {
        return Err(bad("'fortran_order' is not True or False"));
    };
    let Value::Tuple(dims) = shape else {
        return Err(bad("'shape' is not a tuple"));
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Value::Int(n) => Ok(*n),
            _ => Err(bad(
                "'shape' holds something other than non-negative integers",
            )),
        })
        .collect::<Result<Vec<u64>>>()?;
    let dtype = DType::from_descr_value(descr)?;
    let h = NpyHeader {
        dtype,
        shape,
        fortran_order,
    };
    h.data_len().map_err(|_| {
        bad(&format!(
            "shape {:?} of {} has more bytes than fit in 64 bits",
            h.shape, h.dtype
        ))
    })?;
    Ok(h)
}
