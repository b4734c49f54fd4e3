//! Delta records (tag `D`): the payload that gives a block version as its previous
//! version plus some 4 KiB pages, and the policy that bounds delta chains — the one
//! place that decides whether a block version is written as a delta or in full.

use super::cursor::{Reader, Writer};
use super::checkpoint::Version;
use super::{MAX_LOGICAL_LEN, PAGE};
use crate::{Error, Result};

/// Delta payload header: version u8, reserved 3 bytes, result length u32, page count u32,
/// reserved u32. Page indexes (u32 each) and the pages follow.
pub const DELTA_HEADER_SIZE: usize = 1 + 3 + 4 + 4 + 4;
/// Version byte of the delta payload.
pub const DELTA_VERSION: u8 = 1;
/// Bytes one changed page takes in a delta payload: its index and its bytes.
pub const DELTA_PAGE_COST: usize = 4 + PAGE;
/// Longest delta chain: at most this many delta records between a reader and the full
/// (`B`) version they rest on. A writer that would exceed it writes a full block.
pub const MAX_DELTA_CHAIN: usize = 8;
/// Bound on the pages a chain carries: the pages of all the deltas of one chain (each
/// delta's page count, summed, repeated pages counted again) stay at or below
/// `block pages / MAX_DELTA_PAGES_DIVISOR`; beyond it the writer writes a full block.
/// So a chain costs a reader at most 1/4 more bytes than the block, in ≤ 9 reads.
pub const MAX_DELTA_PAGES_DIVISOR: u64 = 4;

/// Pages carried by a delta version (from its logical length; 0 for a full version).
pub fn delta_pages(v: &Version) -> u64 {
    if !v.encoding.is_delta() {
        return 0;
    }
    u64::from(v.logical_len).saturating_sub(DELTA_HEADER_SIZE as u64) / DELTA_PAGE_COST as u64
}

/// The pages all the deltas of one chain may carry in a block of `block_size` bytes:
/// `block pages / MAX_DELTA_PAGES_DIVISOR`. Also the most pages one delta over a full
/// version may carry, so virtmem tracks at most this many dirty pages of a block as a
/// patch (stored as one delta) and a block with more whole.
pub fn max_delta_pages(block_size: usize) -> usize {
    block_size / PAGE / MAX_DELTA_PAGES_DIVISOR as usize
}

/// Delta or full block: the pages a new delta record over `chain` may carry in a block
/// of `block_size` bytes, 0 when the next version must be written in full. `chain` is
/// the version the delta would rest on as a reader resolves it (its full version, then
/// its deltas, oldest first: `Index::chain_at`); the new delta keeps the chain within
/// [`MAX_DELTA_CHAIN`] deltas and [`max_delta_pages`] pages. A writer writes a delta of
/// `n` pages only when `0 < n <= delta_room(..)`.
pub fn delta_room(block_size: usize, chain: &[Version]) -> usize {
    if chain.len() > MAX_DELTA_CHAIN {
        return 0;
    }
    let carried: u64 = chain.iter().map(delta_pages).sum();
    let room = (max_delta_pages(block_size) as u64).saturating_sub(carried);
    usize::try_from(room).unwrap_or(0)
}

/// The logical bytes of a delta record (tag `D`): the block version it gives is its base
/// (the previous version of the block, found by the record's back pointer) with the
/// listed 4 KiB pages replaced, then cut to `result_len` (zeros follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaPayload<'a> {
    /// Logical length of the resulting block version (a multiple of `PAGE`).
    pub result_len: u32,
    /// Page indexes, u32 little-endian each, strictly ascending, each < result_len / PAGE.
    indexes: &'a [u8],
    /// The pages, `PAGE` bytes each, in the order of `indexes`.
    pages: &'a [u8],
}

impl<'a> DeltaPayload<'a> {
    /// Encode a delta: `result_len` and the changed pages as (index, `PAGE` bytes),
    /// ascending. The caller guarantees the bounds the decoder checks.
    pub fn encode(result_len: u32, pages: &[(u32, &[u8])]) -> Vec<u8> {
        let n = pages.len();
        let mut w = Writer::new();
        w.buf.reserve(DELTA_HEADER_SIZE + n * DELTA_PAGE_COST);
        w.u8(DELTA_VERSION);
        w.zeros(3);
        w.u32(result_len);
        w.u32(u32::try_from(n).unwrap_or(u32::MAX));
        w.u32(0);
        for (i, _) in pages {
            w.u32(*i);
        }
        for (_, p) in pages {
            w.bytes(p);
        }
        w.buf
    }

    /// Decode and check a delta payload read at file offset `off`: version, reserved
    /// bytes, exact length, result length a multiple of `PAGE` within the limit, page
    /// indexes strictly ascending and inside the result.
    pub fn decode(b: &'a [u8], off: u64) -> Result<DeltaPayload<'a>> {
        let mut r = Reader::new(b, off);
        let ver = r.u8("delta version")?;
        if ver != DELTA_VERSION {
            return Err(Error::corruption(off, format!("delta version {ver}")));
        }
        r.zeros(3, "delta reserved")?;
        let result_len = r.u32("delta result length")?;
        let n = r.u32("delta page count")?;
        r.zeros(4, "delta reserved")?;
        if result_len > MAX_LOGICAL_LEN || u64::from(result_len) % PAGE as u64 != 0 {
            return Err(Error::corruption(
                off + 4,
                format!("delta result length {result_len} (a multiple of 4096 up to 1 GiB)"),
            ));
        }
        let n = usize::try_from(n).map_err(|_| Error::corruption(off + 8, "page count"))?;
        let want = n
            .checked_mul(DELTA_PAGE_COST)
            .and_then(|x| x.checked_add(DELTA_HEADER_SIZE));
        if want != Some(b.len()) {
            return Err(Error::corruption(
                off + 8,
                format!("delta of {n} pages in a payload of {} bytes", b.len()),
            ));
        }
        let indexes = r.bytes(4 * n, "delta page indexes")?;
        let pages = r.bytes(n * DELTA_PAGE_COST - 4 * n, "delta pages")?;
        let limit = u64::from(result_len) / PAGE as u64;
        let mut prev: Option<u32> = None;
        for (k, c) in indexes.chunks_exact(4).enumerate() {
            let i = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if u64::from(i) >= limit || prev.is_some_and(|p| p >= i) {
                return Err(Error::corruption(
                    off + (DELTA_HEADER_SIZE + 4 * k) as u64,
                    format!(
                        "delta page index {i} (not ascending or past the result's {limit} pages)"
                    ),
                ));
            }
            prev = Some(i);
        }
        Ok(DeltaPayload {
            result_len,
            indexes,
            pages,
        })
    }

    /// Number of pages.
    #[cfg(any(test, feature = "internals"))]
    pub fn n_pages(&self) -> usize {
        self.indexes.len() / 4
    }

    /// The (index, bytes) of each page.
    pub fn pages(&self) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        self.indexes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .zip(self.pages.chunks_exact(PAGE))
    }

    /// Apply to `dst`, whose first `cur_len` bytes hold the base version (bytes past
    /// `cur_len` may be anything): afterwards `dst[..result_len]` is the new version
    /// and `dst[result_len..max(cur_len, result_len)]` is zero. `off` names the record
    /// in errors.
    pub fn apply(&self, dst: &mut [u8], cur_len: usize, off: u64) -> Result<()> {
        let new_len = usize::try_from(self.result_len)
            .map_err(|_| Error::corruption(off, "delta result length"))?;
        if new_len > dst.len() || cur_len > dst.len() {
            return Err(Error::corruption(
                off,
                format!(
                    "delta result of {new_len} bytes does not fit a block of {} bytes",
                    dst.len()
                ),
            ));
        }
        if new_len > cur_len {
            dst[cur_len..new_len].fill(0);
        } else {
            dst[new_len..cur_len].fill(0);
        }
        for (i, p) in self.pages() {
            let at = usize::try_from(i)
                .unwrap_or(usize::MAX)
                .saturating_mul(PAGE);
            // Indexes were checked against result_len at decode.
            dst[at..at + PAGE].copy_from_slice(p);
        }
        Ok(())
    }
}
