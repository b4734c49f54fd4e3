//! Element types: the Rust types an array can hold and their descriptors.
//!
//! An [`Element`] is a plain-data type (`bytemuck::Pod`: every bit pattern is a valid
//! value, no padding, no pointers) that describes itself with a [`DType`]. The `DType`
//! is what the catalog stores (as the opaque bytes of [`DType::encode`]), what
//! `wdbtool` prints ([`Display`](std::fmt::Display): `f64`, `{x: f64, y: i32}`) and what
//! `.npy` files carry ([`DType::to_descr`] / [`DType::from_descr`]).
//!
//! Invariants of a valid `DType` (checked by [`DType::validate`], which
//! [`DType::decode`], [`DType::from_descr`] and [`element_dtype`] all run):
//!
//! 1. a record has 1..=[`MAX_FIELDS`] fields in total (nested ones counted), nests at
//!    most [`MAX_DEPTH`] deep, and its size is 1..=[`MAX_ELEM_SIZE`] bytes;
//! 2. field names are non-empty, at most [`MAX_NAME_LEN`] bytes and unique in their
//!    record;
//! 3. fields are in ascending offset order, do not overlap and end within the record
//!    (a record may have gaps — NumPy padding — but Rust records never do).
//!
//! Equality of `DType`s is structural and includes field names: an array of
//! `{x: f64, y: f64}` is not an array of `{a: f64, b: f64}`. That is what makes a wrong
//! element type an [`Error::TypeMismatch`] and never a reinterpretation.

use std::fmt;

use crate::{Error, Result};

/// Largest element size in bytes (a record; scalars are at most 16 bytes).
pub const MAX_ELEM_SIZE: usize = 1 << 24;
/// Largest number of fields in one element type, nested fields included.
pub const MAX_FIELDS: usize = 4096;
/// Deepest nesting of records (a scalar is depth 0, a flat record depth 1).
pub const MAX_DEPTH: usize = 8;
/// Longest field name in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;

/// Version byte that starts every [`DType::encode`] output.
const ENCODING_VERSION: u8 = 1;
const TAG_SCALAR: u8 = 1;
const TAG_RECORD: u8 = 2;

/// A plain-data type that an array can hold.
///
/// This is a *safe* trait on purpose: soundness of the views never depends on
/// [`Element::dtype`]. The view code computes every byte size and alignment from
/// `size_of::<T>()` / `align_of::<T>()`, and `bytemuck::Pod` already guarantees that any
/// bytes are a valid `T`. A wrong `dtype()` can therefore only mislabel data, and even
/// that is caught: [`element_dtype`] validates the descriptor and checks that its size
/// equals `size_of::<T>()` before an array is created or opened.
///
/// Implemented for `i8`..`i128`, `u8`..`u128`, `f32`, `f64`; records get it from
/// [`record!`](crate::record).
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The descriptor of this type.
    fn dtype() -> DType;
}

/// The scalar element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `i128` (no NumPy equivalent)
    I128,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `u128` (no NumPy equivalent)
    U128,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// A NumPy `bool` (one byte, 0 or 1; no Rust element type: any byte is not a valid
    /// `bool`, so typed views refuse it; the byte-level API and bindings handle it)
    Bool,
    /// IEEE half precision, NumPy `float16` (no Rust element type)
    F16,
    /// Two `f32` (real, imaginary), NumPy `complex64` (no Rust element type)
    C64,
    /// Two `f64` (real, imaginary), NumPy `complex128` (no Rust element type)
    C128,
}

/// All scalars, in the order of their on-disk codes (see [`Scalar::code`]).
const SCALARS: [Scalar; 16] = [
    Scalar::I8,
    Scalar::I16,
    Scalar::I32,
    Scalar::I64,
    Scalar::I128,
    Scalar::U8,
    Scalar::U16,
    Scalar::U32,
    Scalar::U64,
    Scalar::U128,
    Scalar::F32,
    Scalar::F64,
    Scalar::Bool,
    Scalar::F16,
    Scalar::C64,
    Scalar::C128,
];

impl Scalar {
    /// Size in bytes.
    pub fn size(self) -> usize {
        match self {
            Scalar::I8 | Scalar::U8 | Scalar::Bool => 1,
            Scalar::I16 | Scalar::U16 | Scalar::F16 => 2,
            Scalar::I32 | Scalar::U32 | Scalar::F32 => 4,
            Scalar::I64 | Scalar::U64 | Scalar::F64 | Scalar::C64 => 8,
            Scalar::I128 | Scalar::U128 | Scalar::C128 => 16,
        }
    }

    /// The Rust name: `i8`, `u64`, `f32`, ...
    pub fn name(self) -> &'static str {
        match self {
            Scalar::I8 => "i8",
            Scalar::I16 => "i16",
            Scalar::I32 => "i32",
            Scalar::I64 => "i64",
            Scalar::I128 => "i128",
            Scalar::U8 => "u8",
            Scalar::U16 => "u16",
            Scalar::U32 => "u32",
            Scalar::U64 => "u64",
            Scalar::U128 => "u128",
            Scalar::F32 => "f32",
            Scalar::F64 => "f64",
            Scalar::Bool => "bool",
            Scalar::F16 => "f16",
            Scalar::C64 => "c64",
            Scalar::C128 => "c128",
        }
    }

    /// The stable one-byte code used by [`DType::encode`]. Never renumber.
    fn code(self) -> u8 {
        match self {
            Scalar::I8 => 0,
            Scalar::I16 => 1,
            Scalar::I32 => 2,
            Scalar::I64 => 3,
            Scalar::I128 => 4,
            Scalar::U8 => 5,
            Scalar::U16 => 6,
            Scalar::U32 => 7,
            Scalar::U64 => 8,
            Scalar::U128 => 9,
            Scalar::F32 => 10,
            Scalar::F64 => 11,
            Scalar::Bool => 12,
            Scalar::F16 => 13,
            Scalar::C64 => 14,
            Scalar::C128 => 15,
        }
    }

    fn from_code(code: u8) -> Option<Scalar> {
        SCALARS.get(usize::from(code)).copied()
    }

    /// NumPy kind character: `i`, `u`, `f`, `b` or `c`.
    fn numpy_kind(self) -> char {
        match self {
            Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64 | Scalar::I128 => 'i',
            Scalar::U8 | Scalar::U16 | Scalar::U32 | Scalar::U64 | Scalar::U128 => 'u',
            Scalar::F16 | Scalar::F32 | Scalar::F64 => 'f',
            Scalar::Bool => 'b',
            Scalar::C64 | Scalar::C128 => 'c',
        }
    }

    /// The NumPy type string (`<f8`, `|u1`), or an error for types NumPy lacks.
    pub fn numpy_typestr(self) -> Result<String> {
        match self {
            Scalar::I128 | Scalar::U128 => Err(Error::InvalidArgument(format!(
                "{} has no NumPy equivalent",
                self.name()
            ))),
            Scalar::I8 | Scalar::U8 | Scalar::Bool => Ok(format!("|{}1", self.numpy_kind())),
            _ => Ok(format!("<{}{}", self.numpy_kind(), self.size())),
        }
    }

    /// Parse a NumPy type string such as `<f8`, `|i1`, `=u4`, `i8`, `|b1`, `<f2`, `<c16`.
    /// Little-endian only.
    pub fn from_numpy_typestr(s: &str) -> Result<Scalar> {
        let unsupported =
            |why: &str| Error::InvalidArgument(format!("NumPy type {s:?} is not supported: {why}"));
        let (order, rest) = match s.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, &s[1..]),
            _ => ('=', s),
        };
        let mut chars = rest.chars();
        let kind = chars
            .next()
            .ok_or_else(|| unsupported("empty type string"))?;
        let size: usize = chars
            .as_str()
            .parse()
            .map_err(|_| unsupported("expected a kind letter and a size, like <f8"))?;
        let scalar = SCALARS
            .iter()
            .copied()
            .find(|sc| {
                sc.numpy_kind() == kind
                    && sc.size() == size
                    && !matches!(sc, Scalar::I128 | Scalar::U128)
            })
            .ok_or_else(|| {
                unsupported(
                    "only bool, signed/unsigned integers of 1..8 bytes, f2, f4, f8, c8, c16",
                )
            })?;
        // Byte order matters only for multi-byte types; NumPy writes `|` for 1-byte ones.
        // wdb stores little-endian data and runs on little-endian targets only.
        if size > 1 && order == '>' {
            return Err(unsupported("big-endian data"));
        }
        Ok(scalar)
    }
}

/// One named field of a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// Field name (the Rust field name for [`record!`](crate::record) types).
    pub name: String,
    /// Byte offset inside the record.
    pub offset: usize,
    /// Type of the field.
    pub dtype: DType,
}

impl Field {
    /// A field.
    pub fn new(name: impl Into<String>, offset: usize, dtype: DType) -> Field {
        Field {
            name: name.into(),
            offset,
            dtype,
        }
    }
}

/// The descriptor of an element type: a scalar or a record of named fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// A scalar.
    Scalar(Scalar),
    /// A record (a `#[repr(C)]` struct, or a NumPy structured dtype).
    Record {
        /// Size of the record in bytes (fields plus any gaps).
        size: usize,
        /// Fields in ascending offset order.
        fields: Vec<Field>,
    },
}

impl DType {
    /// A record type, validated (see the module invariants).
    pub fn record(size: usize, fields: Vec<Field>) -> Result<DType> {
        let d = DType::Record { size, fields };
        d.validate()?;
        Ok(d)
    }

    /// Size of one element in bytes.
    pub fn size(&self) -> usize {
        match self {
            DType::Scalar(s) => s.size(),
            DType::Record { size, .. } => *size,
        }
    }

    /// Natural alignment: a scalar's size, a record's largest field alignment. This is
    /// informational (what a C compiler or NumPy's `align=True` would use); views check
    /// the real `align_of::<T>()` of the Rust type.
    pub fn align(&self) -> usize {
        match self {
            DType::Scalar(s) => s.size(),
            DType::Record { fields, .. } => {
                fields.iter().map(|f| f.dtype.align()).max().unwrap_or(1)
            }
        }
    }

    /// Check the module invariants; [`Error::InvalidArgument`] names the first violation.
    pub fn validate(&self) -> Result<()> {
        let mut total_fields = 0usize;
        self.validate_at(0, &mut total_fields)
            .map_err(|what| Error::InvalidArgument(format!("element type: {what}")))
    }

    fn validate_at(
        &self,
        depth: usize,
        total_fields: &mut usize,
    ) -> std::result::Result<(), String> {
        let DType::Record { size, fields } = self else {
            return Ok(());
        };
        if depth >= MAX_DEPTH {
            return Err(format!("records nest deeper than {MAX_DEPTH}"));
        }
        if *size == 0 || *size > MAX_ELEM_SIZE {
            return Err(format!("record size {size} is not in 1..={MAX_ELEM_SIZE}"));
        }
        if fields.is_empty() {
            return Err("a record needs at least one field".into());
        }
        let mut end_of_previous = 0usize;
        for (i, f) in fields.iter().enumerate() {
            *total_fields = total_fields.saturating_add(1);
            if *total_fields > MAX_FIELDS {
                return Err(format!("more than {MAX_FIELDS} fields"));
            }
            if f.name.is_empty() || f.name.len() > MAX_NAME_LEN {
                return Err(format!(
                    "field name {:?} is empty or longer than {MAX_NAME_LEN} bytes",
                    f.name
                ));
            }
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(format!("field name {:?} appears twice", f.name));
            }
            if f.offset < end_of_previous {
                return Err(format!(
                    "field {:?} at offset {} overlaps the previous field or is out of order",
                    f.name, f.offset
                ));
            }
            f.dtype.validate_at(depth + 1, total_fields)?;
            let end = f.offset.checked_add(f.dtype.size()).filter(|e| e <= size);
            end_of_previous = end.ok_or_else(|| {
                format!(
                    "field {:?} at offset {} of size {} ends past the record size {size}",
                    f.name,
                    f.offset,
                    f.dtype.size()
                )
            })?;
        }
        Ok(())
    }

    /// Check that `self` (the type an array holds) is `T`'s type; otherwise
    /// [`Error::TypeMismatch`] naming `array`.
    pub fn check<T: Element>(&self, array: &str) -> Result<()> {
        let asked = T::dtype();
        if *self == asked && self.size() == std::mem::size_of::<T>() {
            Ok(())
        } else {
            Err(Error::TypeMismatch {
                array: array.to_string(),
                stored: self.to_string(),
                asked: asked.to_string(),
            })
        }
    }

    /// The bytes the catalog stores. Format (little-endian):
    ///
    /// ```text
    /// dtype  := version:u8 (= 1) node
    /// node   := 1:u8 scalar_code:u8
    ///         | 2:u8 size:u32 n_fields:u16 field*n_fields
    /// field  := name_len:u8 name:[u8; name_len] (UTF-8) offset:u32 node
    /// ```
    ///
    /// Panic-free for any `DType`; a `DType` outside the module invariants is an
    /// [`Error::InvalidArgument`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut out = vec![ENCODING_VERSION];
        self.encode_node(&mut out)?;
        Ok(out)
    }

    fn encode_node(&self, out: &mut Vec<u8>) -> Result<()> {
        let too_big = |what: &str| {
            Error::InvalidArgument(format!("element type: {what} too large to encode"))
        };
        match self {
            DType::Scalar(s) => {
                out.push(TAG_SCALAR);
                out.push(s.code());
            }
            DType::Record { size, fields } => {
                out.push(TAG_RECORD);
                out.extend_from_slice(
                    &u32::try_from(*size)
                        .map_err(|_| too_big("size"))?
                        .to_le_bytes(),
                );
                out.extend_from_slice(
                    &u16::try_from(fields.len())
                        .map_err(|_| too_big("field count"))?
                        .to_le_bytes(),
                );
                for f in fields {
                    out.push(u8::try_from(f.name.len()).map_err(|_| too_big("field name"))?);
                    out.extend_from_slice(f.name.as_bytes());
                    out.extend_from_slice(
                        &u32::try_from(f.offset)
                            .map_err(|_| too_big("offset"))?
                            .to_le_bytes(),
                    );
                    f.dtype.encode_node(out)?;
                }
            }
        }
        Ok(())
    }

    /// Decode bytes written by [`DType::encode`]. Never panics; every length is bounded
    /// before use. Bad bytes are [`Error::Corruption`] whose `offset` is the position in
    /// `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<DType> {
        let mut cur = Cursor { bytes, pos: 0 };
        let version = cur.u8("version")?;
        if version != ENCODING_VERSION {
            return Err(Error::corruption(
                0,
                format!("dtype: unknown encoding version {version}"),
            ));
        }
        let mut total_fields = 0usize;
        let d = cur.node(0, &mut total_fields)?;
        if cur.pos != bytes.len() {
            return Err(Error::corruption(
                u64::try_from(cur.pos).unwrap_or(u64::MAX),
                "dtype: trailing bytes",
            ));
        }
        d.validate()
            .map_err(|e| Error::corruption(0, format!("dtype: {e}")))?;
        Ok(d)
    }

    /// The NumPy `descr` as Python literal text: `'<f8'` or
    /// `[('x', '<f8'), ('y', '<i4')]` (gaps become `('', '|V4')` as NumPy writes them).
    /// 128-bit integers have no NumPy equivalent: [`Error::InvalidArgument`].
    pub fn to_descr(&self) -> Result<String> {
        let mut out = String::new();
        self.write_descr(&mut out)?;
        Ok(out)
    }

    fn write_descr(&self, out: &mut String) -> Result<()> {
        match self {
            DType::Scalar(s) => super::pylit::write_str(out, &s.numpy_typestr()?),
            DType::Record { size, fields } => {
                out.push('[');
                let mut at = 0usize;
                let mut first = true;
                let mut sep = |out: &mut String| {
                    if !first {
                        out.push_str(", ");
                    }
                    first = false;
                };
                for f in fields {
                    if f.offset > at {
                        sep(out);
                        out.push_str(&format!("('', '|V{}')", f.offset - at));
                    }
                    sep(out);
                    out.push('(');
                    super::pylit::write_str(out, &f.name);
                    out.push_str(", ");
                    f.dtype.write_descr(out)?;
                    out.push(')');
                    at = f.offset.saturating_add(f.dtype.size());
                }
                if *size > at {
                    sep(out);
                    out.push_str(&format!("('', '|V{}')", size - at));
                }
                out.push(']');
            }
        }
        Ok(())
    }

    /// Format one element from its little-endian bytes, for printing without knowing
    /// the Rust type (`wdbtool cat`): `1.5`, `-3`, `{x: 1.5, y: 2}`. `bytes` shorter or
    /// longer than [`DType::size`] is [`Error::InvalidArgument`].
    pub fn format_value(&self, bytes: &[u8]) -> Result<String> {
        if bytes.len() != self.size() {
            return Err(Error::InvalidArgument(format!(
                "{} bytes given for an element of {} bytes",
                bytes.len(),
                self.size()
            )));
        }
        let mut out = String::new();
        self.format_into(bytes, &mut out, 0)?;
        Ok(out)
    }

    fn format_into(&self, b: &[u8], out: &mut String, depth: usize) -> Result<()> {
        use std::fmt::Write as _;
        let arr = |n: usize| -> Result<[u8; 16]> {
            let mut a = [0u8; 16];
            let src = b
                .get(..n)
                .ok_or_else(|| Error::InvalidArgument("element bytes too short".into()))?;
            a[..n].copy_from_slice(src);
            Ok(a)
        };
        let r = match self {
            DType::Scalar(s) => {
                let a = arr(s.size())?;
                let [a0, a1, a2, a3, a4, a5, a6, a7, ..] = a;
                let (b2, b4, b8) = ([a0, a1], [a0, a1, a2, a3], [a0, a1, a2, a3, a4, a5, a6, a7]);
                match s {
                    Scalar::I8 => write!(out, "{}", i8::from_le_bytes([a0])),
                    Scalar::I16 => write!(out, "{}", i16::from_le_bytes(b2)),
                    Scalar::I32 => write!(out, "{}", i32::from_le_bytes(b4)),
                    Scalar::I64 => write!(out, "{}", i64::from_le_bytes(b8)),
                    Scalar::I128 => write!(out, "{}", i128::from_le_bytes(a)),
                    Scalar::U8 => write!(out, "{a0}"),
                    Scalar::U16 => write!(out, "{}", u16::from_le_bytes(b2)),
                    Scalar::U32 => write!(out, "{}", u32::from_le_bytes(b4)),
                    Scalar::U64 => write!(out, "{}", u64::from_le_bytes(b8)),
                    Scalar::U128 => write!(out, "{}", u128::from_le_bytes(a)),
                    Scalar::F32 => write!(out, "{}", f32::from_le_bytes(b4)),
                    Scalar::F64 => write!(out, "{}", f64::from_le_bytes(b8)),
                    Scalar::Bool => write!(out, "{}", a0 != 0),
                    Scalar::F16 => write!(out, "{}", f16_to_f32(u16::from_le_bytes(b2))),
                    Scalar::C64 => {
                        let [_, _, _, _, i0, i1, i2, i3, ..] = a;
                        let (re, im) =
                            (f32::from_le_bytes(b4), f32::from_le_bytes([i0, i1, i2, i3]));
                        write!(out, "({re}{im:+}j)")
                    }
                    Scalar::C128 => {
                        let mut im = [0u8; 8];
                        im.copy_from_slice(&a[8..16]);
                        let (re, im) = (f64::from_le_bytes(b8), f64::from_le_bytes(im));
                        write!(out, "({re}{im:+}j)")
                    }
                }
            }
            DType::Record { fields, .. } => {
                if depth >= MAX_DEPTH {
                    return Err(Error::InvalidArgument(format!(
                        "records nest deeper than {MAX_DEPTH}"
                    )));
                }
                out.push('{');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&f.name);
                    out.push_str(": ");
                    let end = f.offset.checked_add(f.dtype.size());
                    let fb = end.and_then(|e| b.get(f.offset..e)).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "field {:?} lies outside the element",
                            f.name
                        ))
                    })?;
                    f.dtype.format_into(fb, out, depth + 1)?;
                }
                out.push('}');
                Ok(())
            }
        };
        r.map_err(|_| Error::InvalidArgument("formatting failed".into()))
    }

    /// Parse a NumPy `descr` given as Python literal text (as in a `.npy` header).
    pub fn from_descr(text: &str) -> Result<DType> {
        let value = super::pylit::parse(text)?;
        DType::from_descr_value(&value)
    }

    /// Convert a parsed `descr` value. Supported: little-endian bool, integer, float
    /// (2, 4, 8 bytes) and complex (8, 16 bytes) type strings, and lists of
    /// `(name, descr)` pairs (nested lists for nested records, `('', '|Vn')` for
    /// padding). Subarray fields, titles, strings, dates and object types are
    /// [`Error::InvalidArgument`].
    pub(crate) fn from_descr_value(value: &super::pylit::Value) -> Result<DType> {
        let d = descr_node(value, 0)?;
        d.validate()?;
        Ok(d)
    }
}

fn descr_node(value: &super::pylit::Value, depth: usize) -> Result<DType> {
    use super::pylit::Value;
    let bad = |what: String| Error::InvalidArgument(format!("NumPy descr: {what}"));
    if depth > MAX_DEPTH {
        return Err(bad(format!("records nest deeper than {MAX_DEPTH}")));
    }
    match value {
        Value::Str(s) => Ok(DType::Scalar(Scalar::from_numpy_typestr(s)?)),
        Value::List(items) => {
            let mut fields = Vec::new();
            let mut at = 0usize;
            for item in items {
                let Value::Tuple(parts) = item else {
                    return Err(bad(
                        "a structured descr is a list of (name, type) tuples".into()
                    ));
                };
                let (name, ty) = match parts.as_slice() {
                    [Value::Str(name), ty] => (name, ty),
                    [_, _, _] => return Err(bad("subarray fields are not supported".into())),
                    [Value::Tuple(_), _] => {
                        return Err(bad("field titles are not supported".into()))
                    }
                    _ => return Err(bad("a field is a (name, type) tuple".into())),
                };
                if name.is_empty() {
                    // Padding as NumPy writes it: ('', '|Vn').
                    let n = match ty {
                        Value::Str(t) => t
                            .strip_prefix("|V")
                            .or_else(|| t.strip_prefix('V'))
                            .and_then(|n| n.parse::<usize>().ok()),
                        _ => None,
                    }
                    .ok_or_else(|| bad("an unnamed field must be padding ('', '|Vn')".into()))?;
                    at = at
                        .checked_add(n)
                        .filter(|&a| a <= MAX_ELEM_SIZE)
                        .ok_or_else(|| bad("record too large".into()))?;
                    continue;
                }
                let dtype = descr_node(ty, depth + 1)?;
                let size = dtype.size();
                fields.push(Field::new(name.clone(), at, dtype));
                if fields.len() > MAX_FIELDS {
                    return Err(bad(format!("more than {MAX_FIELDS} fields")));
                }
                at = at
                    .checked_add(size)
                    .filter(|&a| a <= MAX_ELEM_SIZE)
                    .ok_or_else(|| bad("record too large".into()))?;
            }
            Ok(DType::Record { size: at, fields })
        }
        _ => Err(bad("expected a type string or a list of fields".into())),
    }
}

/// An IEEE half (binary16) as f32, exactly (every half is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man * 2^-24, exactly representable as an f32.
        (0, m) => {
            let v = m as f32 / 16_777_216.0;
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

impl fmt::Display for DType {
    /// `f64`, `{x: f64, y: i32}`, `{p: {x: f64, y: f64}, t: i64}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::Scalar(s) => f.write_str(s.name()),
            DType::Record { fields, .. } => {
                f.write_str("{")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}", field.name, field.dtype)?;
                }
                f.write_str("}")
            }
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `T::dtype()`, validated and checked against `size_of::<T>()`: what an array stores
/// for `T`. An [`Element`] impl whose descriptor does not describe `T` is
/// [`Error::InvalidArgument`].
pub fn element_dtype<T: Element>() -> Result<DType> {
    let d = T::dtype();
    d.validate()?;
    if d.size() != std::mem::size_of::<T>() {
        return Err(Error::InvalidArgument(format!(
            "element type {d} describes {} bytes but the Rust type {} has {}",
            d.size(),
            std::any::type_name::<T>(),
            std::mem::size_of::<T>()
        )));
    }
    Ok(d)
}

macro_rules! scalar_elements {
    ($($t:ty => $s:ident),* $(,)?) => {
        $(impl Element for $t {
            fn dtype() -> DType {
                DType::Scalar(Scalar::$s)
            }
        })*
    };
}

scalar_elements!(
    i8 => I8, i16 => I16, i32 => I32, i64 => I64, i128 => I128,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64, u128 => U128,
    f32 => F32, f64 => F64,
);

/// Checked little-endian reader over the dtype bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn err(&self, what: &str) -> Error {
        Error::corruption(
            u64::try_from(self.pos).unwrap_or(u64::MAX),
            format!("dtype: {what}"),
        )
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.err(&format!("truncated {what}")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn usize32(&mut self, what: &str) -> Result<usize> {
        let v = self.u32(what)?;
        usize::try_from(v).map_err(|_| self.err(&format!("{what} does not fit in usize")))
    }

    fn node(&mut self, depth: usize, total_fields: &mut usize) -> Result<DType> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("records nest deeper than {MAX_DEPTH}")));
        }
        match self.u8("tag")? {
            TAG_SCALAR => {
                let code = self.u8("scalar code")?;
                Scalar::from_code(code)
                    .map(DType::Scalar)
                    .ok_or_else(|| self.err(&format!("unknown scalar code {code}")))
            }
            TAG_RECORD => {
                let size = self.usize32("record size")?;
                if size == 0 || size > MAX_ELEM_SIZE {
                    return Err(self.err(&format!("record size {size} out of range")));
                }
                let n = usize::from(self.u16("field count")?);
                *total_fields = total_fields.saturating_add(n);
                if n == 0 || *total_fields > MAX_FIELDS {
                    return Err(self.err(&format!("field count {n} out of range")));
                }
                let mut fields = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = usize::from(self.u8("field name length")?);
                    let name_at = self.err("field name is not UTF-8");
                    let name = std::str::from_utf8(self.take(len, "field name")?)
                        .map_err(|_| name_at)?
                        .to_string();
                    let offset = self.usize32("field offset")?;
                    let dtype = self.node(depth + 1, total_fields)?;
                    fields.push(Field {
                        name,
                        offset,
                        dtype,
                    });
                }
                Ok(DType::Record { size, fields })
            }
            tag => Err(self.err(&format!("unknown tag {tag}"))),
        }
    }
}
