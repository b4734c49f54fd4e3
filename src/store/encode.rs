//! How a value is turned into stored bytes and back: holes, trailing-zero trimming, zstd
//! where it saves at least 1/8, raw otherwise. zstd contexts are per thread and reused.

use std::cell::RefCell;
use std::sync::Arc;

use super::spill::SpillSlot;
use crate::format::{Encoding, PayloadSrc, TableSrc, PAGE};
use crate::{Error, Result};

/// A value encoded for storage (staged in a transaction until commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// How it is stored.
    pub encoding: Encoding,
    /// Bytes up to the last page holding a nonzero byte (zeros follow up to the block size).
    pub logical_len: u32,
    /// The stored bytes (empty for a hole), in memory or in a spill file.
    pub payload: Payload,
    /// CRC32 of `payload`.
    pub data_crc: u32,
    /// CRC32 of each 4096-byte page of a raw payload (empty for other encodings):
    /// the page CRC table of format version 3 (storage-format.md §2.7).
    pub page_crcs: Vec<u32>,
    /// The page CRC table, encoded, in a slot of a spill file instead of `page_crcs`
    /// (a spilled raw block's: the commit copies it into the log like the payload).
    pub page_table: Option<Arc<SpillSlot>>,
}

impl Encoded {
    /// Where a commit takes the page CRC table from (None: the value has none).
    pub fn table_src(&self) -> Option<TableSrc<'_>> {
        match &self.page_table {
            Some(t) => Some(TableSrc::File(t.range(), t.len().saturating_sub(4) / 4)),
            None => (!self.page_crcs.is_empty()).then_some(TableSrc::Crcs(&self.page_crcs)),
        }
    }
}

/// Where the stored bytes of an [`Encoded`] value are.
#[derive(Debug, Clone)]
pub enum Payload {
    /// In memory.
    Mem(Vec<u8>),
    /// In a slot of a transaction's spill file (`spill.rs`).
    Spilled(Arc<SpillSlot>),
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Payload::Mem(a), Payload::Mem(b)) => a == b,
            (Payload::Spilled(a), Payload::Spilled(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Payload {}

impl Payload {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Mem(b) => b.len(),
            Payload::Spilled(s) => s.len(),
        }
    }

    /// No bytes?
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if they are in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Payload::Mem(b) => Some(b),
            Payload::Spilled(_) => None,
        }
    }

    /// Where a commit takes the bytes from.
    pub fn src(&self) -> PayloadSrc<'_> {
        match self {
            Payload::Mem(b) => PayloadSrc::Mem(b),
            Payload::Spilled(s) => PayloadSrc::File(s.range()),
        }
    }

    /// The bytes, read back from the spill file if they are there (checked against
    /// `crc`, the value's data CRC).
    pub fn to_vec(&self, crc: u32) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Payload::Mem(b) => Ok(std::borrow::Cow::Borrowed(b)),
            Payload::Spilled(s) => {
                let mut v = vec![0u8; s.len()];
                s.read(&mut v)?;
                check_spilled(s, &v, crc)?;
                Ok(std::borrow::Cow::Owned(v))
            }
        }
    }
}

/// A spilled payload read back must match the CRC computed when it was encoded.
pub fn check_spilled(s: &SpillSlot, bytes: &[u8], crc: u32) -> Result<()> {
    let got = crate::verify::crc32(bytes);
    if got != crc {
        return Err(Error::corruption(
            s.offset(),
            format!("data CRC mismatch in a payload read back from a spill file ({got:#010x}, written {crc:#010x})"),
        ));
    }
    Ok(())
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Encode a block: all zeros → hole; else trim trailing zero pages; then zstd at `level`
/// (when `Some`) if the result is at most 7/8 of the trimmed length, else raw.
pub fn encode_block(data: &[u8], level: Option<i32>) -> Result<Encoded> {
    encode_block_with(data, level, |body| Ok(Payload::Mem(body.to_vec())))
}

/// [`encode_block`], with the payload of a raw block made by `raw` from the trimmed
/// bytes (a transaction writes it straight to its spill file, without a copy in
/// memory).
pub fn encode_block_with(
    data: &[u8],
    level: Option<i32>,
    raw: impl FnOnce(&[u8]) -> Result<Payload>,
) -> Result<Encoded> {
    // Trim to whole pages, so a raw payload also ends on a page boundary (so that a view maps it).
    let Some(trimmed) = trimmed_len(data) else {
        return Ok(Encoded {
            encoding: Encoding::Hole,
            logical_len: 0,
            payload: Payload::Mem(Vec::new()),
            data_crc: 0,
            page_crcs: Vec::new(),
            page_table: None,
        });
    };
    let body = &data[..trimmed];
    let logical_len = u32::try_from(trimmed)
        .map_err(|_| Error::OutOfRange(format!("block of {} bytes is too large", data.len())))?;
    if let Some(out) = level
        .map(|l| compress_if_it_pays(body, l))
        .transpose()?
        .flatten()
    {
        let data_crc = crate::verify::crc32(&out);
        return Ok(Encoded {
            encoding: Encoding::Zstd,
            logical_len,
            payload: Payload::Mem(out),
            data_crc,
            page_crcs: Vec::new(),
            page_table: None,
        });
    }
    let (page_crcs, data_crc) = crate::format::page_crcs(body);
    Ok(Encoded {
        encoding: Encoding::Raw,
        logical_len,
        payload: raw(body)?,
        data_crc,
        page_crcs,
        page_table: None,
    })
}

/// Bytes of each of the [`SAMPLES`] slices a large body's compressibility is judged by.
const SAMPLE: usize = 16 << 10;
/// Slices sampled, spread evenly over the body.
const SAMPLES: usize = 4;

/// One zstd frame of `body` at `level` if it is at most 7/8 of `body`, else None.
///
/// A body larger than 4 × the samples is first judged by [`SAMPLES`] slices of
/// [`SAMPLE`] bytes spread over it (1/32 of the work for 2 MiB): unless they save 1/8
/// together, the body is not compressed at all. Incompressible data (the low bits of
/// measured floats are noise) then costs a fraction of a full compression. A body that
/// compresses only in parts the samples miss is stored raw, which is always valid.
fn compress_if_it_pays(body: &[u8], level: i32) -> Result<Option<Vec<u8>>> {
    if body.len() > 4 * SAMPLES * SAMPLE {
        let stride = (body.len() - SAMPLE) / (SAMPLES - 1);
        let mut sample = Vec::with_capacity(SAMPLES * SAMPLE);
        for k in 0..SAMPLES {
            let at = k * stride;
            sample.extend_from_slice(&body[at..at + SAMPLE]);
        }
        if compress_if_it_pays(&sample, level)?.is_none() {
            return Ok(None);
        }
    }
    let limit = body.len() - body.len() / 8;
    let mut out = Vec::with_capacity(limit);
    let ok = COMPRESSOR.with(|c| -> Result<bool> {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, comp) = c
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("zstd".into()))?;
        // A destination of `limit` bytes: zstd fails when the output would not fit,
        // which is exactly "does not save 1/8", without compressing twice.
        Ok(comp.compress_to_buffer(body, &mut out).is_ok())
    })?;
    Ok((ok && !out.is_empty() && out.len() <= limit).then_some(out))
}

/// Length of `data` trimmed of trailing zero pages (capped at its length); None if it
/// is all zeros.
pub fn trimmed_len(data: &[u8]) -> Option<usize> {
    let last = data.iter().rposition(|&b| b != 0)?;
    Some(((last + 1).div_ceil(PAGE) * PAGE).min(data.len()))
}

/// Encode block `data` as a delta record on `base` (the block's version it replaces,
/// a whole block, zero past its value): the pages of `data`'s trimmed length that
/// differ from `base`. None — write a full block — when more than `max_pages` differ
/// (the comparison stops there), when `data` is all zeros (a hole is smaller), or when
/// the lengths differ. The payload is zstd-compressed (at `level`) where that saves 1/8.
pub fn encode_delta(
    base: &[u8],
    data: &[u8],
    max_pages: usize,
    level: Option<i32>,
) -> Result<Option<Encoded>> {
    if base.len() != data.len() {
        return Ok(None);
    }
    let Some(trimmed) = trimmed_len(data) else {
        return Ok(None);
    };
    let result_len = u32::try_from(trimmed)
        .map_err(|_| Error::OutOfRange(format!("block of {} bytes is too large", data.len())))?;
    let mut changed: Vec<(u32, &[u8])> = Vec::new();
    for (i, (new, old)) in data[..trimmed]
        .chunks(PAGE)
        .zip(base[..trimmed].chunks(PAGE))
        .enumerate()
    {
        if new != old {
            if changed.len() >= max_pages {
                return Ok(None);
            }
            let i = u32::try_from(i).map_err(|_| Error::OutOfRange("page index".into()))?;
            changed.push((i, new));
        }
    }
    encode_delta_pages(result_len, &changed, level).map(Some)
}

/// Encode the delta payload "the previous version, cut or zero-extended to
/// `result_len`, with these pages replaced" (`pages` ascending, each inside
/// `result_len`), zstd-compressed at `level` where that saves 1/8.
pub fn encode_delta_pages(
    result_len: u32,
    changed: &[(u32, &[u8])],
    level: Option<i32>,
) -> Result<Encoded> {
    let payload = crate::format::DeltaPayload::encode(result_len, changed);
    let logical_len = u32::try_from(payload.len())
        .map_err(|_| Error::OutOfRange("delta payload too large".into()))?;
    if let Some(out) = level
        .map(|l| compress_if_it_pays(&payload, l))
        .transpose()?
        .flatten()
    {
        let data_crc = crate::verify::crc32(&out);
        return Ok(Encoded {
            encoding: Encoding::DeltaZstd,
            logical_len,
            payload: Payload::Mem(out),
            data_crc,
            page_crcs: Vec::new(),
            page_table: None,
        });
    }
    let data_crc = crate::verify::crc32(&payload);
    Ok(Encoded {
        encoding: Encoding::DeltaRaw,
        logical_len,
        payload: Payload::Mem(payload),
        data_crc,
        page_crcs: Vec::new(),
        page_table: None,
    })
}

/// Encode a catalog value (never compressed, never trimmed).
pub fn encode_plain(data: &[u8]) -> Result<Encoded> {
    let logical_len =
        u32::try_from(data.len()).map_err(|_| Error::OutOfRange("value too large".into()))?;
    if data.is_empty() {
        return Ok(Encoded {
            encoding: Encoding::Hole,
            logical_len: 0,
            payload: Payload::Mem(Vec::new()),
            data_crc: 0,
            page_crcs: Vec::new(),
            page_table: None,
        });
    }
    Ok(Encoded {
        encoding: Encoding::Raw,
        logical_len,
        payload: Payload::Mem(data.to_vec()),
        data_crc: crate::verify::crc32(data),
        page_crcs: Vec::new(),
        page_table: None,
    })
}

/// Decompress one zstd frame straight into `dst`, which must receive exactly its length.
pub fn decompress_into(src: &[u8], dst: &mut [u8], off: u64) -> Result<()> {
    let n = DECOMPRESSOR.with(|d| -> Result<usize> {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        let dec = d
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("zstd".into()))?;
        dec.decompress_to_buffer(src, dst)
            .map_err(|e| Error::corruption(off, format!("zstd payload does not decompress: {e}")))
    })?;
    if n != dst.len() {
        return Err(Error::corruption(
            off,
            format!(
                "zstd payload decompressed to {n} bytes, expected {}",
                dst.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_trim_and_compress() {
        let z = vec![0u8; 1 << 16];
        assert_eq!(encode_block(&z, Some(3)).unwrap().encoding, Encoding::Hole);
        let mut t = vec![0u8; 1 << 16];
        t[5000] = 1;
        let e = encode_block(&t, None).unwrap();
        assert_eq!((e.encoding, e.logical_len), (Encoding::Raw, 8192));
        let c = encode_block(&vec![9u8; 1 << 16], Some(3)).unwrap();
        assert_eq!(c.encoding, Encoding::Zstd);
        let mut back = vec![0u8; 1 << 16];
        decompress_into(c.payload.in_memory().unwrap(), &mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 9));
        // Incompressible data is stored raw.
        let mut x = 0x1234_5678u32;
        let r: Vec<u8> = (0..1 << 16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(encode_block(&r, Some(3)).unwrap().encoding, Encoding::Raw);
    }

    #[test]
    fn large_blocks_are_judged_by_samples() {
        // 2 MiB of a compressible pattern: the samples compress, so the block does.
        let c: Vec<u8> = (0..2 << 20).map(|i| (i / 64 % 7) as u8 + 1).collect();
        assert_eq!(encode_block(&c, Some(3)).unwrap().encoding, Encoding::Zstd);
        // Noise everywhere: raw, and the samples alone decided it.
        let mut x = 0x9E37_79B9u32;
        let r: Vec<u8> = (0..2 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(encode_block(&r, Some(3)).unwrap().encoding, Encoding::Raw);
    }
}
