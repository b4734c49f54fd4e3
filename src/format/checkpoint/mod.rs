//! The index checkpoint file (`<db>.idx`): a persisted copy of the store's index up to a
//! log offset, so that open time does not grow with the log. Byte layout in
//! `storage-format.md`, section "Index checkpoint".
//!
//! Version 3 (written) is laid out to be used without reading it whole: 4 KiB pages, each
//! with its own CRC, made of 32-byte slots that never straddle a page — a 128-byte header
//! (the first 4 slots), the keys sorted for binary search, the versions of each key, the
//! transactions. A reader checks the header page when it opens the file and every other
//! page when it first reads it ([`check_page`]): a page that passes holds only values a
//! lookup can use (offsets within the covered log, tids within the covered ones, keys
//! ascending within the page). Versions 1 and 2 (one CRC over the whole file) are still
//! decoded, whole.

use super::cursor::{Reader, Writer};
use super::{
    Encoding, Key, RecordHeader, FILE_HEADER_SIZE, RECORD_HEADER_SIZE, TAG_BLOCK, TAG_META,
    TAG_NAMES, PAGE,
};
use crate::{Error, Result, Tid};

mod paged;
use paged::slot_offset;
#[cfg(test)]
mod tests;

pub use paged::{
    check_page, decode_key_slot, decode_tx_slot, decode_version_slot, key_slot_sort, page_crc,
    slot_place, Header3, KeySlot,
};

/// Magic bytes of a checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"wdb-idx\n";
/// Checkpoint format version written. Version 3 is paged (read lazily); version 2 adds
/// the delta encodings (3, 4) to the version entries; versions 1 and 2 are still read.
pub const CHECKPOINT_VERSION: u32 = 3;
/// File offset of version-3 page `p`: pages are [`PAGE`] bytes (the last page of a file
/// may be shorter).
pub fn page_offset(p: u64) -> u64 {
    p.saturating_mul(PAGE as u64)
}
/// Size of a version-3 slot (header quarter, key, version or transaction entry).
pub const SLOT_SIZE: usize = 32;
/// Slots in a version-3 page: 127 × 32 = 4064 bytes, then zeros to byte 4092, then the
/// page's CRC.
pub const SLOTS_PER_PAGE: u64 = 127;
/// Slots taken by the version-3 header (128 bytes).
pub const HEADER_SLOTS: u64 = 4;
/// Fixed header of versions 1 and 2: magic, version u32, reserved u32, log uuid u64, covered_end u64,
/// last_tid u64, last_tx_crc u32, reserved u32, n_tx u64, n_keys u64.
pub const CHECKPOINT_HEADER_SIZE: usize = 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4 + 8 + 8;
/// One transaction entry: tid, offset, length, wall time.
pub const TX_ENTRY_SIZE: usize = 8 * 4;
/// One key entry: tag u8, 7 zero bytes, array u64, blk u64, n_versions u32, reserved u32.
pub const KEY_ENTRY_SIZE: usize = 1 + 7 + 8 + 8 + 4 + 4;
/// One version entry: tid u64, rec_off u64, encoding u8, flags u8, pad u16,
/// logical_len u32, stored_len u32, data_crc u32.
pub const VERSION_ENTRY_SIZE: usize = 8 + 8 + 1 + 1 + 2 + 4 + 4 + 4;

/// Where one version of a key lives in the log, and what is needed to load it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Transaction that wrote it.
    pub tid: Tid,
    /// File offset of its record header.
    pub rec_off: u64,
    /// Encoding of the payload.
    pub encoding: Encoding,
    /// Record flags (`FLAG_DELETED`).
    pub flags: u8,
    /// The record header's pad field: zero bytes between header (and page CRC table)
    /// and payload, or 0 with `FLAG_ALIGNED` (see [`Version::payload_off`]).
    pub pad: u16,
    /// Logical length.
    pub logical_len: u32,
    /// Stored length.
    pub stored_len: u32,
    /// CRC of the stored bytes.
    pub data_crc: u32,
}

impl Version {
    /// Build from a decoded record header.
    pub fn from_header(tid: Tid, rec_off: u64, h: &RecordHeader) -> Version {
        Version {
            tid,
            rec_off,
            encoding: h.encoding,
            flags: h.flags,
            // < PAGE unless aligned (then 0 on disk), so it fits.
            pad: if h.flags & super::FLAG_ALIGNED != 0 {
                0
            } else {
                u16::try_from(h.pad).unwrap_or(u16::MAX)
            },
            logical_len: h.logical_len,
            stored_len: h.stored_len,
            data_crc: h.data_crc,
        }
    }
    /// File offset of the payload.
    pub fn payload_off(&self) -> u64 {
        let table_end = self.rec_off + self.table_rel() + self.table_len();
        table_end + super::pad_of(self.flags, self.pad, table_end)
    }
    /// Offset of the page CRC table relative to the record (right after its header).
    pub fn table_rel(&self) -> u64 {
        super::RECORD_HEADER_SIZE as u64
    }
    /// Bytes of the record's page CRC table (0 if none; storage-format.md §2.7).
    pub fn table_len(&self) -> u64 {
        super::page_table_len(self.flags, self.stored_len)
    }
    /// Has the record a page CRC table?
    pub fn has_page_crcs(&self) -> bool {
        self.flags & super::FLAG_PAGE_CRCS != 0
    }
}

/// A transaction as listed in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxEntry {
    /// Its tid.
    pub tid: Tid,
    /// File offset of its header.
    pub off: u64,
    /// Its total length.
    pub len: u64,
    /// Commit wall time (ns since the epoch).
    pub wall_ns: u64,
}

/// A decoded checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// uuid of the log file it describes.
    pub log_uuid: u64,
    /// Log offset up to which it is complete (end of the last transaction it covers).
    pub covered_end: u64,
    /// tid of the last covered transaction.
    pub last_tid: Tid,
    /// tx CRC of the last covered transaction (checked against the log's trailer).
    pub last_tx_crc: u32,
    /// Every covered transaction, ascending.
    pub txs: Vec<TxEntry>,
    /// Every key with its versions, oldest first.
    pub keys: Vec<(Key, Vec<Version>)>,
}

impl Checkpoint {
    /// Encode in the current layout (version 3, paged).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let n_versions: u64 = self.keys.iter().map(|(_, vs)| vs.len() as u64).sum();
        let h = Header3 {
            log_uuid: self.log_uuid,
            covered_end: self.covered_end,
            last_tid: self.last_tid,
            last_tx_crc: self.last_tx_crc,
            n_tx: self.txs.len() as u64,
            n_keys: self.keys.len() as u64,
            n_versions,
            max_array: self
                .keys
                .iter()
                .filter_map(|(k, _)| k.array())
                .max()
                .unwrap_or(0),
        };
        let total = h
            .total_slots()
            .ok_or_else(|| Error::InvalidArgument("checkpoint too large".into()))?;
        let mut slots = Writer::new();
        slots.bytes(&h.encode());
        let mut first = 0u64;
        for (k, vs) in &self.keys {
            let (a, b) = k.fields();
            slots.u8(k.tag());
            slots.zeros(3);
            slots.u32(
                u32::try_from(vs.len())
                    .map_err(|_| Error::InvalidArgument("too many versions".into()))?,
            );
            slots.u64(a);
            slots.u64(b);
            slots.u64(first);
            first += vs.len() as u64;
        }
        for v in self.keys.iter().flat_map(|(_, vs)| vs) {
            slots.u64(v.tid.0);
            slots.u64(v.rec_off);
            slots.u8(encoding_byte(v.encoding));
            slots.u8(v.flags);
            slots.u16(v.pad);
            slots.u32(v.logical_len);
            slots.u32(v.stored_len);
            slots.u32(v.data_crc);
        }
        for t in &self.txs {
            slots.u64(t.tid.0);
            slots.u64(t.off);
            slots.u64(t.len);
            slots.u64(t.wall_ns);
        }
        let slots = slots.buf;
        debug_assert_eq!(slots.len() as u64, total * SLOT_SIZE as u64);
        let per_page = SLOTS_PER_PAGE as usize * SLOT_SIZE;
        let mut out = Vec::with_capacity(usize::try_from(h.file_len().unwrap_or(0)).unwrap_or(0));
        let n_pages = slots.len().div_ceil(per_page);
        for (p, chunk) in slots.chunks(per_page).enumerate() {
            let start = out.len();
            out.extend_from_slice(chunk);
            if p + 1 < n_pages {
                out.resize(start + PAGE - 4, 0);
            }
            let crc = page_crc(p as u64, &out[start..]);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        debug_assert_eq!(Some(out.len() as u64), h.file_len());
        Ok(out)
    }

    /// Decode a whole checkpoint file of any version, checking everything (every page
    /// of version 3, and that its keys ascend, its version ranges follow each other and
    /// the versions of each key ascend). Offsets in errors are offsets in that file.
    pub fn decode(b: &[u8]) -> Result<Checkpoint> {
        if version_of(b)? < 3 {
            return Checkpoint::decode_v12(b);
        }
        let h = Header3::decode(b, b.len() as u64)?;
        for p in 0..h.n_pages() {
            let start = usize::try_from(page_offset(p))
                .map_err(|_| Error::corruption(0, "checkpoint too large"))?;
            let len = h.page_len(p);
            let page = b
                .get(start..start + len)
                .ok_or_else(|| Error::corruption(start as u64, "checkpoint page past the end"))?;
            check_page(&h, p, page)?;
        }
        let slot = |s: u64| -> Result<&[u8; SLOT_SIZE]> {
            let (p, off) = slot_place(s);
            usize::try_from(page_offset(p) + off as u64)
                .ok()
                .and_then(|at| b.get(at..at + SLOT_SIZE))
                .and_then(|x| x.try_into().ok())
                .ok_or_else(|| Error::corruption(page_offset(p), "checkpoint slot past the end"))
        };
        let n_keys = usize::try_from(h.n_keys).map_err(|_| Error::corruption(56, "key count"))?;
        let mut keys: Vec<(Key, Vec<Version>)> = Vec::with_capacity(n_keys);
        let mut next = 0u64;
        for i in 0..h.n_keys {
            let at = h.key_slot(i);
            let k = decode_key_slot(slot(at)?)
                .ok_or_else(|| Error::corruption(slot_offset(at), "checkpoint key entry"))?;
            if keys
                .last()
                .is_some_and(|(p, _)| key_sort(p) >= key_sort(&k.key))
            {
                return Err(Error::corruption(
                    slot_offset(at),
                    "checkpoint keys not ascending",
                ));
            }
            if k.first != next {
                return Err(Error::corruption(
                    slot_offset(at),
                    "checkpoint version ranges not contiguous",
                ));
            }
            next = k.first + k.count;
            let mut vs: Vec<Version> = Vec::new();
            for j in k.first..next {
                let vat = h.version_slot(j);
                let v = decode_version_slot(slot(vat)?)
                    .ok_or_else(|| Error::corruption(slot_offset(vat), "checkpoint version"))?;
                if vs.last().is_some_and(|p| p.tid >= v.tid) {
                    return Err(Error::corruption(
                        slot_offset(vat),
                        "checkpoint versions of a key not ascending",
                    ));
                }
                vs.push(v);
            }
            keys.push((k.key, vs));
        }
        if next != h.n_versions {
            return Err(Error::corruption(64, "checkpoint version count"));
        }
        let mut txs: Vec<TxEntry> = Vec::new();
        for i in 0..h.n_tx {
            let at = h.tx_slot(i);
            let t = decode_tx_slot(slot(at)?);
            if txs
                .last()
                .is_some_and(|p| p.tid >= t.tid || p.off + p.len != t.off)
            {
                return Err(Error::corruption(
                    slot_offset(at),
                    "checkpoint transactions",
                ));
            }
            txs.push(t);
        }
        Ok(Checkpoint {
            log_uuid: h.log_uuid,
            covered_end: h.covered_end,
            last_tid: h.last_tid,
            last_tx_crc: h.last_tx_crc,
            txs,
            keys,
        })
    }

    /// Encode in the version-2 layout (one CRC of everything as the last 4 bytes). Not
    /// written by the store any more; kept so that tests can check that such files still
    /// open.
    #[cfg(any(test, feature = "internals"))]
    pub fn encode_v2(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.bytes(&CHECKPOINT_MAGIC);
        w.u32(2);
        w.u32(0);
        w.u64(self.log_uuid);
        w.u64(self.covered_end);
        w.u64(self.last_tid.0);
        w.u32(self.last_tx_crc);
        w.u32(0);
        w.u64(self.txs.len() as u64);
        w.u64(self.keys.len() as u64);
        for t in &self.txs {
            w.u64(t.tid.0);
            w.u64(t.off);
            w.u64(t.len);
            w.u64(t.wall_ns);
        }
        for (k, vs) in &self.keys {
            let (a, b) = k.fields();
            w.u8(k.tag());
            w.zeros(7);
            w.u64(a);
            w.u64(b);
            w.u32(
                u32::try_from(vs.len())
                    .map_err(|_| Error::InvalidArgument("too many versions".into()))?,
            );
            w.u32(0);
            for v in vs {
                w.u64(v.tid.0);
                w.u64(v.rec_off);
                w.u8(encoding_byte(v.encoding));
                w.u8(v.flags);
                w.u16(v.pad);
                w.u32(v.logical_len);
                w.u32(v.stored_len);
                w.u32(v.data_crc);
            }
        }
        let crc = crate::verify::crc32(&w.buf);
        w.u32(crc);
        Ok(w.buf)
    }

    /// Decode a whole version 1 or 2 checkpoint file.
    fn decode_v12(b: &[u8]) -> Result<Checkpoint> {
        if b.len() < CHECKPOINT_HEADER_SIZE + 4 {
            return Err(Error::corruption(0, "checkpoint too short"));
        }
        let body_len = b.len() - 4;
        let mut cr = Reader::new(&b[body_len..], body_len as u64);
        if cr.u32("checkpoint crc")? != crate::verify::crc32(&b[..body_len]) {
            return Err(Error::corruption(
                body_len as u64,
                "checkpoint CRC mismatch",
            ));
        }
        let mut r = Reader::new(&b[..body_len], 0);
        if r.array::<8>("checkpoint magic")? != CHECKPOINT_MAGIC {
            return Err(Error::corruption(0, "not a wdb index checkpoint"));
        }
        let ver = r.u32("checkpoint version")?;
        if !(1..=2).contains(&ver) {
            return Err(Error::corruption(8, format!("checkpoint version {ver}")));
        }
        r.zeros(4, "reserved")?;
        let log_uuid = r.u64("log uuid")?;
        let covered_end = r.u64("covered end")?;
        let last_tid = Tid(r.u64("last tid")?);
        let last_tx_crc = r.u32("last tx crc")?;
        r.zeros(4, "reserved")?;
        let n_tx = r.u64("tx count")?;
        let n_keys = r.u64("key count")?;
        // Bound counts by the bytes present before allocating.
        let fits = |n: u64, size: usize, rem: usize| {
            n.checked_mul(size as u64).is_some_and(|t| t <= rem as u64)
        };
        if !fits(n_tx, TX_ENTRY_SIZE, r.remaining()) || !fits(n_keys, KEY_ENTRY_SIZE, r.remaining())
        {
            return Err(Error::corruption(
                r.offset(),
                "checkpoint counts exceed the file",
            ));
        }
        let n_tx = usize::try_from(n_tx).map_err(|_| Error::corruption(48, "tx count"))?;
        let n_keys = usize::try_from(n_keys).map_err(|_| Error::corruption(56, "key count"))?;
        let mut txs = Vec::with_capacity(n_tx);
        for _ in 0..n_tx {
            txs.push(TxEntry {
                tid: Tid(r.u64("tid")?),
                off: r.u64("tx offset")?,
                len: r.u64("tx length")?,
                wall_ns: r.u64("wall time")?,
            });
        }
        let mut keys = Vec::with_capacity(n_keys);
        for _ in 0..n_keys {
            let at = r.offset();
            let tag = r.u8("key tag")?;
            r.zeros(7, "key reserved")?;
            let array = r.u64("array")?;
            let blk = r.u64("blk")?;
            let key = match tag {
                TAG_BLOCK => Key::Block { array, blk },
                TAG_META => Key::Meta { array },
                TAG_NAMES => Key::Names,
                _ => return Err(Error::corruption(at, format!("key tag {tag:#04x}"))),
            };
            let n = r.u32("version count")?;
            r.zeros(4, "reserved")?;
            if !fits(u64::from(n), VERSION_ENTRY_SIZE, r.remaining()) {
                return Err(Error::corruption(at, "version count exceeds the file"));
            }
            let mut vs = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n {
                let vat = r.offset();
                let tid = Tid(r.u64("tid")?);
                let rec_off = r.u64("record offset")?;
                let encoding = match r.u8("encoding")? {
                    0 => Encoding::Hole,
                    1 => Encoding::Raw,
                    2 => Encoding::Zstd,
                    3 if ver >= 2 => Encoding::DeltaRaw,
                    4 if ver >= 2 => Encoding::DeltaZstd,
                    e => return Err(Error::corruption(vat, format!("encoding {e}"))),
                };
                vs.push(Version {
                    tid,
                    rec_off,
                    encoding,
                    flags: r.u8("flags")?,
                    pad: r.u16("pad")?,
                    logical_len: r.u32("logical length")?,
                    stored_len: r.u32("stored length")?,
                    data_crc: r.u32("data crc")?,
                });
            }
            keys.push((key, vs));
        }
        if r.remaining() != 0 {
            return Err(Error::corruption(
                r.offset(),
                "trailing bytes in checkpoint",
            ));
        }
        Ok(Checkpoint {
            log_uuid,
            covered_end,
            last_tid,
            last_tx_crc,
            txs,
            keys,
        })
    }
}

/// The version-checkpoint byte of an encoding (0 hole, 1 raw, 2 zstd, 3 delta raw, 4
/// delta zstd).
fn encoding_byte(e: Encoding) -> u8 {
    match e {
        Encoding::Hole => 0,
        Encoding::Raw => 1,
        Encoding::Zstd => 2,
        Encoding::DeltaRaw => 3,
        Encoding::DeltaZstd => 4,
    }
}

/// The checkpoint version of a file from its first bytes (checks the magic only).
pub fn version_of(b: &[u8]) -> Result<u32> {
    if b.get(..8) != Some(&CHECKPOINT_MAGIC[..]) {
        return Err(Error::corruption(0, "not a wdb index checkpoint"));
    }
    let v = b
        .get(8..12)
        .and_then(|x| x.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| Error::corruption(8, "checkpoint too short"))?;
    if !(1..=CHECKPOINT_VERSION).contains(&v) {
        return Err(Error::corruption(8, format!("checkpoint version {v}")));
    }
    Ok(v)
}

/// The sort order of keys in a checkpoint: (tag, array, block), which is also `Key`'s
/// own order (`B` < `M` < `N`).
pub fn key_sort(k: &Key) -> (u8, u64, u64) {
    let (a, b) = k.fields();
    (k.tag(), a, b)
}
