//! Catalog entries: what an array is (name, element type, shape, order, block size,
//! compression), and their bytes in META records (storage-format.md, "Catalog entry").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::format::cursor::{Reader, Writer};
use crate::{Error, Result};

/// Most dimensions an array may have.
pub const MAX_DIMS: usize = 32;
/// Longest array name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 64 << 10;
/// Largest block size (`format::MAX_LOGICAL_LEN`).
pub const MAX_BLOCK_SIZE: u32 = crate::format::MAX_LOGICAL_LEN;
const MAX_DTYPE_LEN: usize = 64 << 10;
const CATALOG_VERSION: u8 = 1;

pub use crate::array::Order;

/// How an array's blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Never compressed (still hole-detected and trimmed).
    None,
    /// zstd at `level` (1..=22) when it saves at least 1/8.
    Zstd {
        /// zstd level.
        level: i32,
    },
}

/// What to create: an [`ArrayInfo`] without its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    /// Unique name.
    pub name: String,
    /// Element type description, opaque to the db layer (the array layer encodes it).
    pub dtype: Vec<u8>,
    /// Element type name for messages and tools (e.g. `f64`).
    pub dtype_name: String,
    /// Bytes per element.
    pub elem_size: u32,
    /// Shape.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Block size in bytes: a power of two, 64 KiB ..= 1 GiB (0: the database default).
    pub block_size: u32,
    /// Compression (`Zstd { level: 0 }`: the database's default level).
    pub compression: Compression,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayInfo {
    /// Array id (never reused).
    pub id: u64,
    /// Unique name.
    pub name: String,
    /// Element type description (opaque here).
    pub dtype: Vec<u8>,
    /// Element type name.
    pub dtype_name: String,
    /// Bytes per element.
    pub elem_size: u32,
    /// Shape.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Block size in bytes.
    pub block_size: u32,
    /// Compression.
    pub compression: Compression,
}

impl ArrayInfo {
    /// Build from a spec and an id.
    pub fn from_spec(id: u64, s: ArraySpec) -> ArrayInfo {
        ArrayInfo {
            id,
            name: s.name,
            dtype: s.dtype,
            dtype_name: s.dtype_name,
            elem_size: s.elem_size,
            shape: s.shape,
            order: s.order,
            block_size: s.block_size,
            compression: s.compression,
        }
    }

    /// Logical size in bytes (product of the shape times the element size), if it fits.
    pub fn byte_len(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(u64::from(self.elem_size), |a, &d| a.checked_mul(d))
    }

    /// Number of blocks the logical size spans.
    pub fn n_blocks(&self) -> Option<u64> {
        Some(self.byte_len()?.div_ceil(u64::from(self.block_size)))
    }

    /// Encode as a META payload.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(CATALOG_VERSION);
        w.u64(self.id);
        w.blob(self.name.as_bytes(), MAX_NAME_LEN, "array name")?;
        w.blob(&self.dtype, MAX_DTYPE_LEN, "dtype")?;
        w.blob(self.dtype_name.as_bytes(), MAX_NAME_LEN, "dtype name")?;
        w.u32(self.elem_size);
        w.u32(u32::try_from(self.shape.len()).map_err(|_| Error::InvalidArgument("shape".into()))?);
        for &d in &self.shape {
            w.u64(d);
        }
        w.u8(match self.order {
            Order::C => 0,
            Order::F => 1,
        });
        w.u32(self.block_size);
        match self.compression {
            Compression::None => {
                w.u8(0);
                w.u32(0);
            }
            Compression::Zstd { level } => {
                w.u8(1);
                w.bytes(&level.to_le_bytes());
            }
        }
        Ok(w.buf)
    }

    /// Decode a META payload read at file offset `off`.
    pub fn decode(b: &[u8], off: u64) -> Result<ArrayInfo> {
        let mut r = Reader::new(b, off);
        let v = r.u8("catalog version")?;
        if v != CATALOG_VERSION {
            return Err(Error::corruption(off, format!("catalog entry version {v}")));
        }
        let id = r.u64("array id")?;
        let name = r.string(MAX_NAME_LEN, "array name")?;
        let dtype = r.blob(MAX_DTYPE_LEN, "dtype")?;
        let dtype_name = r.string(MAX_NAME_LEN, "dtype name")?;
        let elem_size = r.u32("element size")?;
        let ndim = r.len_u32(MAX_DIMS, "number of dimensions")?;
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.u64("dimension")?);
        }
        let order = match r.u8("order")? {
            0 => Order::C,
            1 => Order::F,
            o => return Err(Error::corruption(r.offset(), format!("order {o}"))),
        };
        let block_size = r.u32("block size")?;
        let compression = match r.u8("compression")? {
            0 => {
                r.u32("reserved")?;
                Compression::None
            }
            1 => Compression::Zstd {
                level: i32::from_le_bytes(r.array("zstd level")?),
            },
            c => return Err(Error::corruption(r.offset(), format!("compression {c}"))),
        };
        if r.remaining() != 0 {
            return Err(Error::corruption(
                r.offset(),
                "trailing bytes in a catalog entry",
            ));
        }
        let info = ArrayInfo {
            id,
            name,
            dtype,
            dtype_name,
            elem_size,
            shape,
            order,
            block_size,
            compression,
        };
        validate(&info)
            .map_err(|e| Error::corruption(off, format!("invalid catalog entry: {e}")))?;
        Ok(info)
    }
}

/// Check an entry's fields against the limits.
pub fn validate(i: &ArrayInfo) -> Result<()> {
    validate_name(&i.name)?;
    if i.elem_size == 0 {
        return Err(Error::InvalidArgument("element size 0".into()));
    }
    if !i.block_size.is_power_of_two()
        || i.block_size < MIN_BLOCK_SIZE
        || i.block_size > MAX_BLOCK_SIZE
    {
        return Err(Error::InvalidArgument(format!(
            "block size {} must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}",
            i.block_size
        )));
    }
    if i.shape.len() > MAX_DIMS {
        return Err(Error::OutOfRange(format!(
            "{} dimensions (at most {MAX_DIMS})",
            i.shape.len()
        )));
    }
    if i.byte_len().is_none() {
        return Err(Error::OutOfRange(format!(
            "shape {:?} overflows 64 bits of bytes",
            i.shape
        )));
    }
    if let Compression::Zstd { level } = i.compression {
        if !(1..=22).contains(&level) {
            return Err(Error::InvalidArgument(format!(
                "zstd level {level} (1..=22)"
            )));
        }
    }
    Ok(())
}

/// Check an array name.
pub fn validate_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > MAX_NAME_LEN || n.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "array name {n:?}: 1..={MAX_NAME_LEN} bytes, no NUL"
        )));
    }
    Ok(())
}

/// The arrays visible in a snapshot or transaction.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// By name.
    pub by_name: BTreeMap<String, Arc<ArrayInfo>>,
    /// By id.
    pub by_id: HashMap<u64, Arc<ArrayInfo>>,
}

impl Catalog {
    /// Add or replace an entry.
    pub fn insert(&mut self, i: Arc<ArrayInfo>) {
        if let Some(old) = self.by_id.get(&i.id) {
            self.by_name.remove(&old.name);
        }
        self.by_name.insert(i.name.clone(), i.clone());
        self.by_id.insert(i.id, i);
    }
    /// Remove an entry.
    pub fn remove(&mut self, id: u64) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_name.remove(&old.name);
        }
    }
    /// Entry by name.
    pub fn get(&self, name: &str) -> Result<Arc<ArrayInfo>> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("array {name:?}")))
    }
    /// Entry by id.
    pub fn get_id(&self, id: u64) -> Result<Arc<ArrayInfo>> {
        self.by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("array id {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let i = ArrayInfo {
            id: 3,
            name: "A".into(),
            dtype: vec![1, 2],
            dtype_name: "f64".into(),
            elem_size: 8,
            shape: vec![10, 20],
            order: Order::F,
            block_size: 1 << 21,
            compression: Compression::Zstd { level: 3 },
        };
        let b = i.encode().unwrap();
        assert_eq!(ArrayInfo::decode(&b, 0).unwrap(), i);
        for n in 0..b.len() {
            assert!(ArrayInfo::decode(&b[..n], 0).is_err());
        }
    }
}
