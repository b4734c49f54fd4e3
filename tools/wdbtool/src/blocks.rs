//! Byte-level reading of any array, whatever its element type: the element type from
//! the catalog, and the array's bytes read block by block through the public
//! [`Snapshot::read_block`], one block in memory at a time.
//!
//! An array's bytes are its elements in its own order (C or F), laid end to end and
//! cut into blocks of `info.block_size`; an element may straddle two blocks. Bytes of
//! the last block past the logical size are not part of the array and are never read.

use std::path::Path;

use wdb::array::{DType, Scalar};
use wdb::db::{ArrayInfo, Db, Options, Snapshot};
use wdb::{Error, Result, Tid};

/// Open an existing database read-only (a missing file is `NotFound`, not created).
pub fn open_ro(p: &Path) -> Result<Db> {
    if !exists(p) {
        return Err(Error::NotFound(format!("database {}", p.display())));
    }
    Db::open_url(url_of(p)?, Options::default().read_only(true))
}

/// Open (or create) the database at `p` (a path or a URL) for writing.
pub fn open_rw(p: &Path) -> Result<Db> {
    Db::open_url(url_of(p)?, Options::default())
}

/// Is `p` a URL (`s3://…`, `file://…`) rather than a path?
pub fn is_url(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.contains("://"))
}

/// Does the database at `p` exist? (A URL is asked when it is opened.)
pub fn exists(p: &Path) -> bool {
    if let Some(f) = p.to_str().and_then(|s| s.strip_prefix("file://")) {
        return Path::new(f).exists();
    }
    is_url(p) || p.exists()
}

fn url_of(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| {
        Error::InvalidArgument(format!("database path {} is not UTF-8", p.display()))
    })
}

/// The latest snapshot, or the one at `at`.
pub fn snapshot(db: &Db, at: Option<u64>) -> Result<Snapshot> {
    match at {
        Some(t) => db.snapshot_at(Tid(t)),
        None => db.snapshot(),
    }
}

/// The element type of an array. The catalog's bytes are decoded; an entry whose bytes
/// do not decode (written by the block-level API with no descriptor) falls back to its
/// type name when that names a scalar of the right size. The element size must agree
/// with the catalog's.
pub fn dtype_of(info: &ArrayInfo) -> Result<DType> {
    let d = match DType::decode(&info.dtype) {
        Ok(d) => d,
        Err(e) => scalar_named(&info.dtype_name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "array {:?}: its element type {:?} cannot be decoded ({e})",
                info.name, info.dtype_name
            ))
        })?,
    };
    if u32::try_from(d.size()).ok() != Some(info.elem_size) {
        return Err(Error::InvalidArgument(format!(
            "array {:?}: element type {d} is {} bytes but the catalog says {}",
            info.name,
            d.size(),
            info.elem_size
        )));
    }
    Ok(d)
}

fn scalar_named(name: &str) -> Option<DType> {
    let s = match name {
        "i8" => Scalar::I8,
        "i16" => Scalar::I16,
        "i32" => Scalar::I32,
        "i64" => Scalar::I64,
        "i128" => Scalar::I128,
        "u8" => Scalar::U8,
        "u16" => Scalar::U16,
        "u32" => Scalar::U32,
        "u64" => Scalar::U64,
        "u128" => Scalar::U128,
        "f32" => Scalar::F32,
        "f64" => Scalar::F64,
        _ => return None,
    };
    Some(DType::Scalar(s))
}

/// Reads any byte range of one array of one snapshot, keeping one block in memory.
pub struct ByteReader<'a> {
    snap: &'a Snapshot,
    id: u64,
    block_size: u64,
    /// Logical size in bytes.
    len: u64,
    /// The block held in `buf`.
    cached: Option<u64>,
    buf: Vec<u8>,
}

impl<'a> ByteReader<'a> {
    /// A reader of array `info` of `snap`.
    pub fn new(snap: &'a Snapshot, info: &ArrayInfo) -> Result<ByteReader<'a>> {
        let len = info.byte_len().ok_or_else(|| {
            Error::OutOfRange(format!(
                "array {:?} of shape {:?}: size overflows",
                info.name, info.shape
            ))
        })?;
        let bs =
            usize::try_from(info.block_size).map_err(|_| Error::OutOfRange("block size".into()))?;
        Ok(ByteReader {
            snap,
            id: info.id,
            block_size: u64::from(info.block_size),
            len,
            cached: None,
            buf: vec![0; bs],
        })
    }

    /// Fill `out` with the array's bytes starting at byte `off`.
    pub fn read_at(&mut self, off: u64, out: &mut [u8]) -> Result<()> {
        let n = u64::try_from(out.len()).map_err(|_| Error::OutOfRange("read size".into()))?;
        let end = off
            .checked_add(n)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::OutOfRange(format!(
                    "bytes {off}..{} of an array of {} bytes",
                    off.saturating_add(n),
                    self.len
                ))
            })?;
        let mut at = off;
        let mut done = 0usize;
        while at < end {
            let blk = at / self.block_size;
            if self.cached != Some(blk) {
                self.cached = None;
                self.snap.read_block(self.id, blk, &mut self.buf)?;
                self.cached = Some(blk);
            }
            let in_blk = at % self.block_size;
            let take = (self.block_size - in_blk).min(end - at);
            let as_usize =
                |v: u64| usize::try_from(v).map_err(|_| Error::OutOfRange("offset".into()));
            let (s, t) = (as_usize(in_blk)?, as_usize(take)?);
            out[done..done + t].copy_from_slice(&self.buf[s..s + t]);
            done += t;
            at += take;
        }
        Ok(())
    }
}
