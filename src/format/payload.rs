//! Where a record's payload sits and how its bytes are checked: the layout flags and
//! pad before it, and the page CRC table (storage-format.md §2.7, §2.8).

use super::cursor::Writer;
use super::{
    Encoding, Key, RecordHeader, ALIGNED_FORMAT_VERSION, RECORD_HEADER_SIZE, FLAG_ALIGNED, FLAG_PAGE_CRCS, HUGE_ALIGN,
    PAGE,
};
use crate::{Error, Result};


/// The flags a writer adds to a record of `key`, `encoding` and `stored` bytes in a
/// file of format `version`: [`FLAG_ALIGNED`] on raw blocks of whole 2 MiB units.
pub fn layout_flags(version: u32, key: &Key, encoding: Encoding, stored: usize) -> u8 {
    let huge = stored > 0 && stored as u64 % HUGE_ALIGN == 0;
    if version >= ALIGNED_FORMAT_VERSION
        && matches!(key, Key::Block { .. })
        && encoding == Encoding::Raw
        && huge
    {
        FLAG_ALIGNED
    } else {
        0
    }
}

/// Zero bytes between the end of a record's header and page CRC table at file offset
/// `table_end` and its payload: to the next multiple of `HUGE_ALIGN` with
/// [`FLAG_ALIGNED`], else the header's pad.
pub fn pad_of(flags: u8, disk_pad: u16, table_end: u64) -> u64 {
    if flags & FLAG_ALIGNED != 0 {
        table_end.next_multiple_of(HUGE_ALIGN) - table_end
    } else {
        u64::from(disk_pad)
    }
}

/// Bytes of the page CRC table of a record with `flags` and stored length `stored`: one
/// CRC-32 per 4096-byte page of the payload (the last page may be partial), then the
/// CRC-32 of those entries. 0 without [`FLAG_PAGE_CRCS`].
pub fn page_table_len(flags: u8, stored: u32) -> u64 {
    if flags & FLAG_PAGE_CRCS == 0 {
        return 0;
    }
    4 * u64::from(stored).div_ceil(PAGE as u64) + 4
}

/// The CRC-32 of each 4096-byte page of `payload` (the last one may be partial) and the
/// CRC-32 of the whole payload, derived from them (`crate::verify::Crc32::combine`: one
/// pass over the bytes).
pub fn page_crcs(payload: &[u8]) -> (Vec<u32>, u32) {
    let mut whole = crate::verify::Crc32::new();
    let crcs = payload
        .chunks(PAGE)
        .map(|p| {
            let c = crate::verify::crc32(p);
            whole.combine(&crate::verify::Crc32::new_with_initial_len(
                c,
                p.len() as u64,
            ));
            c
        })
        .collect();
    (crcs, whole.finalize())
}

/// The CRC-32 of the whole payload from its page CRCs, `stored` bytes in all.
#[cfg(any(test, feature = "internals"))]
pub fn combine_page_crcs(crcs: &[u32], stored: u32) -> u32 {
    let mut whole = crate::verify::Crc32::new();
    let mut left = u64::from(stored);
    for &c in crcs {
        let n = left.min(PAGE as u64);
        whole.combine(&crate::verify::Crc32::new_with_initial_len(c, n));
        left -= n;
    }
    whole.finalize()
}

/// Encode a page CRC table (storage-format.md §2.7).
pub fn encode_page_table(crcs: &[u32]) -> Vec<u8> {
    let mut w = Writer::new();
    for &c in crcs {
        w.u32(c);
    }
    let crc = crate::verify::crc32(&w.buf);
    w.u32(crc);
    w.buf
}

/// Check a record's stored bytes: `table` (its page CRC table, empty if none) and
/// `payload` (its S stored bytes) for the record at `off` with header `rh`. With a
/// table: its own CRC, each page's CRC, and that the page CRCs combine to the header's
/// data CRC; without one, the data CRC over the payload.
pub fn check_payload(rh: &RecordHeader, off: u64, table: &[u8], payload: &[u8]) -> Result<()> {
    if rh.flags & FLAG_PAGE_CRCS == 0 {
        if crate::verify::crc32(payload) != rh.data_crc {
            return Err(Error::corruption(
                off + rh.payload_rel(),
                format!("data CRC mismatch in the record of {:?}", rh.key),
            ));
        }
        return Ok(());
    }
    let want = decode_page_table(table, rh.stored_len, off)?;
    let (got, whole) = page_crcs(payload);
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        return Err(Error::corruption(
            off + rh.payload_rel() + (i * PAGE) as u64,
            format!(
                "data CRC mismatch in page {i} of the record of {:?}",
                rh.key
            ),
        ));
    }
    if whole != rh.data_crc {
        return Err(Error::corruption(
            off + rh.payload_rel(),
            format!(
                "data CRC mismatch in the record of {:?} (its page CRCs match)",
                rh.key
            ),
        ));
    }
    Ok(())
}

/// Decode and check the page CRC table `b` (exactly [`page_table_len`] bytes) of a
/// record at `off` with stored length `stored`: a table whose own CRC does not match is
/// `Corruption`, never trusted.
pub fn decode_page_table(b: &[u8], stored: u32, off: u64) -> Result<Vec<u32>> {
    let n = usize::try_from(u64::from(stored).div_ceil(PAGE as u64))
        .map_err(|_| Error::corruption(off, "page CRC table length"))?;
    if b.len() != 4 * n + 4 {
        return Err(Error::corruption(
            off,
            format!("page CRC table of {} bytes for {n} pages", b.len()),
        ));
    }
    let (entries, crc) = b.split_at(4 * n);
    let want = u32::from_le_bytes(
        crc.try_into()
            .map_err(|_| Error::corruption(off, "table"))?,
    );
    if crate::verify::crc32(entries) != want {
        return Err(Error::corruption(
            off + RECORD_HEADER_SIZE as u64,
            "page CRC table CRC mismatch",
        ));
    }
    Ok(entries
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
