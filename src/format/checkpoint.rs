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

/// The header of a version-3 checkpoint (its first 128 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header3 {
    /// uuid of the log file it describes.
    pub log_uuid: u64,
    /// End of the last transaction it covers.
    pub covered_end: u64,
    /// tid of that transaction (0: none).
    pub last_tid: Tid,
    /// Its transaction CRC.
    pub last_tx_crc: u32,
    /// Transactions T.
    pub n_tx: u64,
    /// Keys K.
    pub n_keys: u64,
    /// Versions V (of all keys).
    pub n_versions: u64,
    /// Largest array id of any key (0 if none).
    pub max_array: u64,
}

/// What a version-3 slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Header,
    Key(u64),
    Version(u64),
    Tx(u64),
}

/// (page, byte offset in the page) of slot `s`.
pub fn slot_place(s: u64) -> (u64, usize) {
    (
        s / SLOTS_PER_PAGE,
        (s % SLOTS_PER_PAGE) as usize * SLOT_SIZE,
    )
}

/// File offset of slot `s` (for error messages).
fn slot_offset(s: u64) -> u64 {
    let (p, off) = slot_place(s);
    page_offset(p) + off as u64
}

/// CRC of page `p` whose bytes before the CRC are `body`: CRC-32 of the page number (u64)
/// then the body, so that a page copied to another place does not pass.
pub fn page_crc(p: u64, body: &[u8]) -> u32 {
    let mut h = crate::verify::Crc32::new();
    h.update(&p.to_le_bytes());
    h.update(body);
    h.finalize()
}

impl Header3 {
    /// The 128 header bytes.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&CHECKPOINT_MAGIC);
        w.u32(3);
        w.u32(0);
        w.u64(self.log_uuid);
        w.u64(self.covered_end);
        w.u64(self.last_tid.0);
        w.u32(self.last_tx_crc);
        w.u32(0);
        w.u64(self.n_tx);
        w.u64(self.n_keys);
        w.u64(self.n_versions);
        w.u64(self.max_array);
        w.zeros(HEADER_SLOTS as usize * SLOT_SIZE - 80);
        w.buf
    }

    /// Decode and check the header from the first bytes of a checkpoint file (at least
    /// its first page, or the whole file if shorter) of `file_len` bytes: fields,
    /// counts against each other and the file's length, and the first page whole
    /// ([`check_page`]). Counts are bounded by the file's length before any use.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Header3> {
        if version_of(b)? != 3 {
            return Err(Error::corruption(8, "not a version 3 checkpoint"));
        }
        let hb = b
            .get(..HEADER_SLOTS as usize * SLOT_SIZE)
            .ok_or_else(|| Error::corruption(0, "checkpoint too short"))?;
        let mut r = Reader::new(hb, 0);
        r.array::<12>("magic and version")?;
        r.zeros(4, "reserved")?;
        let h = Header3 {
            log_uuid: r.u64("log uuid")?,
            covered_end: r.u64("covered end")?,
            last_tid: Tid(r.u64("last tid")?),
            last_tx_crc: r.u32("last tx crc")?,
            n_tx: {
                r.zeros(4, "reserved")?;
                r.u64("tx count")?
            },
            n_keys: r.u64("key count")?,
            n_versions: r.u64("version count")?,
            max_array: r.u64("max array")?,
        };
        r.zeros(r.remaining(), "reserved")?;
        let bad = |what: &str| Err(Error::corruption(0, format!("checkpoint header: {what}")));
        if h.covered_end < FILE_HEADER_SIZE {
            return bad("covered end inside the log header");
        }
        if (h.n_tx == 0) != (h.last_tid == Tid::ZERO)
            || (h.n_tx == 0 && (h.n_versions != 0 || h.covered_end != FILE_HEADER_SIZE))
        {
            return bad("transaction count, last tid and covered end disagree");
        }
        if (h.n_keys == 0) != (h.n_versions == 0) || h.n_keys > h.n_versions {
            return bad("key and version counts disagree");
        }
        if h.file_len() != Some(file_len) {
            return bad(&format!(
                "its counts need {:?} bytes, the file has {file_len}",
                h.file_len()
            ));
        }
        let p0 = b
            .get(..h.page_len(0))
            .ok_or_else(|| Error::corruption(0, "checkpoint first page short"))?;
        check_page(&h, 0, p0)?;
        Ok(h)
    }

    /// Slots in the file: header, keys, versions, transactions (None if that overflows).
    pub fn total_slots(&self) -> Option<u64> {
        HEADER_SLOTS
            .checked_add(self.n_keys)?
            .checked_add(self.n_versions)?
            .checked_add(self.n_tx)
    }

    /// The file's length these counts give (None if it overflows).
    pub fn file_len(&self) -> Option<u64> {
        let s = self.total_slots()?;
        let full = (s - 1) / SLOTS_PER_PAGE;
        let last = s - full * SLOTS_PER_PAGE;
        full.checked_mul(PAGE as u64)?
            .checked_add(last * SLOT_SIZE as u64 + 4)
    }

    /// Pages in the file.
    pub fn n_pages(&self) -> u64 {
        self.total_slots()
            .unwrap_or(u64::MAX)
            .div_ceil(SLOTS_PER_PAGE)
    }

    /// Length of page `p`: 4096, the last one its slots and CRC.
    pub fn page_len(&self, p: u64) -> usize {
        let n = self.slots_in_page(p);
        if n == SLOTS_PER_PAGE && p + 1 < self.n_pages() {
            PAGE
        } else {
            n as usize * SLOT_SIZE + 4
        }
    }

    fn slots_in_page(&self, p: u64) -> u64 {
        let total = self.total_slots().unwrap_or(0);
        total
            .saturating_sub(p.saturating_mul(SLOTS_PER_PAGE))
            .min(SLOTS_PER_PAGE)
    }

    /// Slot of key `i`.
    pub fn key_slot(&self, i: u64) -> u64 {
        HEADER_SLOTS + i
    }
    /// Slot of version `i`.
    pub fn version_slot(&self, i: u64) -> u64 {
        HEADER_SLOTS + self.n_keys + i
    }
    /// Slot of transaction `i`.
    pub fn tx_slot(&self, i: u64) -> u64 {
        HEADER_SLOTS + self.n_keys + self.n_versions + i
    }

    fn kind(&self, s: u64) -> SlotKind {
        if s < HEADER_SLOTS {
            SlotKind::Header
        } else if s - HEADER_SLOTS < self.n_keys {
            SlotKind::Key(s - HEADER_SLOTS)
        } else if s - HEADER_SLOTS - self.n_keys < self.n_versions {
            SlotKind::Version(s - HEADER_SLOTS - self.n_keys)
        } else {
            SlotKind::Tx(s - HEADER_SLOTS - self.n_keys - self.n_versions)
        }
    }
}

/// A key entry: the key and where its versions are (versions `first..first + count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlot {
    /// The key.
    pub key: Key,
    /// Index of its oldest version.
    pub first: u64,
    /// Number of versions (≥ 1 in a checked page).
    pub count: u64,
}

fn le64(b: &[u8; SLOT_SIZE], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8; SLOT_SIZE], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The (tag, array, block) of a key slot, undecoded: the binary search's comparison key.
pub fn key_slot_sort(b: &[u8; SLOT_SIZE]) -> (u8, u64, u64) {
    (b[0], le64(b, 8), le64(b, 16))
}

/// Decode a key slot (None if its tag, reserved bytes or key fields are impossible).
pub fn decode_key_slot(b: &[u8; SLOT_SIZE]) -> Option<KeySlot> {
    if b[1..4] != [0, 0, 0] {
        return None;
    }
    let (array, blk) = (le64(b, 8), le64(b, 16));
    let key = match b[0] {
        TAG_BLOCK => Key::Block { array, blk },
        TAG_META if blk == 0 => Key::Meta { array },
        TAG_NAMES if array == 0 && blk == 0 => Key::Names,
        _ => return None,
    };
    Some(KeySlot {
        key,
        first: le64(b, 24),
        count: u64::from(le32(b, 4)),
    })
}

/// Decode a version slot (None for an unknown encoding).
pub fn decode_version_slot(b: &[u8; SLOT_SIZE]) -> Option<Version> {
    let encoding = match b[16] {
        0 => Encoding::Hole,
        1 => Encoding::Raw,
        2 => Encoding::Zstd,
        3 => Encoding::DeltaRaw,
        4 => Encoding::DeltaZstd,
        _ => return None,
    };
    Some(Version {
        tid: Tid(le64(b, 0)),
        rec_off: le64(b, 8),
        encoding,
        flags: b[17],
        pad: u16::from_le_bytes([b[18], b[19]]),
        logical_len: le32(b, 20),
        stored_len: le32(b, 24),
        data_crc: le32(b, 28),
    })
}

/// Decode a transaction slot.
pub fn decode_tx_slot(b: &[u8; SLOT_SIZE]) -> TxEntry {
    TxEntry {
        tid: Tid(le64(b, 0)),
        off: le64(b, 8),
        len: le64(b, 16),
        wall_ns: le64(b, 24),
    }
}

/// Check page `p` of a version-3 checkpoint with header `h`: its length and CRC, zero
/// padding, and every entry in it — key entries well formed, ascending and with
/// contiguous version ranges (against the previous key entry of the page; the first and
/// last keys against the counts), versions with a tid among the covered ones and a
/// record within the covered log, transactions ascending, contiguous and within the
/// covered log (the first at the log's first transaction offset, the last ending at the
/// covered end with the last tid). The header's own fields are checked by
/// [`Header3::decode`].
pub fn check_page(h: &Header3, p: u64, page: &[u8]) -> Result<()> {
    let base = page_offset(p);
    let len = h.page_len(p);
    if p >= h.n_pages() || page.len() != len || len < 4 {
        return Err(Error::corruption(
            base,
            format!("checkpoint page {p}: {} bytes, expected {len}", page.len()),
        ));
    }
    let (body, crc) = page.split_at(len - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if page_crc(p, body) != crc {
        return Err(Error::corruption(
            base,
            format!("checkpoint page {p} CRC mismatch"),
        ));
    }
    let n = h.slots_in_page(p);
    let used = n as usize * SLOT_SIZE;
    if body
        .get(used..)
        .is_some_and(|pad| pad.iter().any(|&x| x != 0))
    {
        return Err(Error::corruption(
            base + used as u64,
            "nonzero padding in a checkpoint page",
        ));
    }
    let mut prev_key: Option<KeySlot> = None;
    let mut prev_tx: Option<TxEntry> = None;
    for (j, chunk) in body[..used].chunks_exact(SLOT_SIZE).enumerate() {
        let s = p * SLOTS_PER_PAGE + j as u64;
        let b: &[u8; SLOT_SIZE] = chunk
            .try_into()
            .map_err(|_| Error::corruption(base, "checkpoint slot"))?;
        let bad = |what: &str| {
            Err(Error::corruption(
                slot_offset(s),
                format!("checkpoint {what}"),
            ))
        };
        match h.kind(s) {
            SlotKind::Header => {}
            SlotKind::Key(i) => {
                let Some(k) = decode_key_slot(b) else {
                    return bad("key entry malformed");
                };
                if k.count == 0
                    || k.first
                        .checked_add(k.count)
                        .is_none_or(|e| e > h.n_versions)
                    || k.key.array().is_some_and(|a| a > h.max_array)
                    || (i == 0 && k.first != 0)
                    || (i + 1 == h.n_keys && k.first + k.count != h.n_versions)
                {
                    return bad("key entry out of range");
                }
                if let Some(pk) = prev_key {
                    if key_sort(&pk.key) >= key_sort(&k.key) || pk.first + pk.count != k.first {
                        return bad("key entries not in order");
                    }
                }
                prev_key = Some(k);
            }
            SlotKind::Version(_) => {
                let Some(v) = decode_version_slot(b) else {
                    return bad("version entry: unknown encoding");
                };
                let end = v
                    .rec_off
                    .checked_add(RECORD_HEADER_SIZE as u64 + v.table_len() + super::HUGE_ALIGN)
                    .and_then(|_| v.payload_off().checked_add(u64::from(v.stored_len)));
                if v.tid == Tid::ZERO
                    || v.tid > h.last_tid
                    || v.rec_off < FILE_HEADER_SIZE
                    || end.is_none_or(|e| e > h.covered_end)
                {
                    return bad("version entry out of range");
                }
            }
            SlotKind::Tx(i) => {
                let t = decode_tx_slot(b);
                let end = t.off.checked_add(t.len);
                if t.tid == Tid::ZERO
                    || t.tid > h.last_tid
                    || t.len == 0
                    || end.is_none_or(|e| e > h.covered_end)
                    || (i == 0 && t.off != FILE_HEADER_SIZE)
                    || (i + 1 == h.n_tx && (t.tid != h.last_tid || end != Some(h.covered_end)))
                {
                    return bad("transaction entry out of range");
                }
                if prev_tx.is_some_and(|pt| pt.tid >= t.tid || pt.off + pt.len != t.off) {
                    return bad("transaction entries not in order");
                }
                prev_tx = Some(t);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_roundtrip() {
        assert_eq!(CHECKPOINT_HEADER_SIZE, 64);
        assert_eq!(VERSION_ENTRY_SIZE, 32);
        assert_eq!(KEY_ENTRY_SIZE, 32);
        let c = Checkpoint {
            log_uuid: 9,
            covered_end: 4296,
            last_tid: Tid(1),
            last_tx_crc: 5,
            txs: vec![TxEntry {
                tid: Tid(1),
                off: 4096,
                len: 200,
                wall_ns: 3,
            }],
            keys: vec![(
                Key::Block { array: 1, blk: 4 },
                vec![Version {
                    tid: Tid(1),
                    rec_off: 4144,
                    encoding: Encoding::Raw,
                    flags: 0,
                    pad: 3,
                    logical_len: 9,
                    stored_len: 9,
                    data_crc: 1,
                }],
            )],
        };
        let v2 = c.encode_v2().unwrap();
        assert_eq!(v2.len(), 64 + 32 + 32 + 32 + 4);
        let v3 = c.encode().unwrap();
        assert_eq!(v3.len(), 128 + 32 + 32 + 32 + 4);
        for b in [v2, v3] {
            assert_eq!(Checkpoint::decode(&b).unwrap(), c);
            for i in 0..b.len() {
                let mut x = b.clone();
                x[i] ^= 0x10;
                assert!(Checkpoint::decode(&x).is_err());
                assert!(Checkpoint::decode(&b[..i]).is_err());
            }
        }
    }

    /// A checkpoint of `n` keys with 1..=3 versions each over `n` transactions, as the
    /// store would write it.
    fn big(n: u64) -> Checkpoint {
        let txs: Vec<TxEntry> = (0..n)
            .map(|i| TxEntry {
                tid: Tid(i + 1),
                off: 4096 + 1000 * i,
                len: 1000,
                wall_ns: i,
            })
            .collect();
        let keys = (0..n)
            .map(|i| {
                let key = if i + 1 == n {
                    Key::Names
                } else if i % 10 == 0 {
                    Key::Meta { array: i }
                } else {
                    Key::Block {
                        array: i / 10,
                        blk: i,
                    }
                };
                let vs = (0..=(i % 3))
                    .map(|j| Version {
                        tid: Tid((i + j) % n + 1).max(Tid(j + 1)),
                        rec_off: 4096 + 1000 * ((i + j) % n) + 48,
                        encoding: Encoding::Raw,
                        flags: 0,
                        pad: 0,
                        logical_len: 10,
                        stored_len: 10,
                        data_crc: 7,
                    })
                    .collect::<Vec<_>>();
                (key, vs)
            })
            .map(|(k, mut vs)| {
                vs.sort_by_key(|v| v.tid);
                vs.dedup_by_key(|v| v.tid);
                (k, vs)
            })
            .collect::<Vec<_>>();
        let mut keys = keys;
        keys.sort_by_key(|(k, _)| *k);
        Checkpoint {
            log_uuid: 5,
            covered_end: 4096 + 1000 * n,
            last_tid: Tid(n),
            last_tx_crc: 1,
            txs,
            keys,
        }
    }

    #[test]
    fn pages_check_each_by_itself() {
        let c = big(700);
        let b = c.encode().unwrap();
        let h = Header3::decode(&b[..4096], b.len() as u64).unwrap();
        assert!(h.n_pages() > 10, "{} pages", h.n_pages());
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
        for p in 0..h.n_pages() {
            let at = p as usize * PAGE;
            let page = &b[at..at + h.page_len(p)];
            check_page(&h, p, page).unwrap();
            // Every page is its own: a flip anywhere in it fails it, and only it.
            for i in [0, 31, 77, page.len() - 5, page.len() - 1] {
                let mut x = page.to_vec();
                x[i] ^= 4;
                assert!(check_page(&h, p, &x).is_err(), "page {p} byte {i}");
            }
            // A page moved to another place fails (its number is in its CRC).
            if p > 0 && h.page_len(p) == h.page_len(p - 1) {
                assert!(check_page(&h, p - 1, page).is_err());
            }
        }
        // The header checks the counts against the file's length.
        assert!(Header3::decode(&b[..4096], b.len() as u64 - 32).is_err());
        // Keys are found where the header says, in order.
        let mut prev = None;
        for i in 0..h.n_keys {
            let (p, off) = slot_place(h.key_slot(i));
            let at = p as usize * PAGE + off;
            let k = decode_key_slot(b[at..at + 32].try_into().unwrap()).unwrap();
            assert_eq!(k.key, c.keys[i as usize].0);
            assert!(prev < Some(key_sort(&k.key)));
            prev = Some(key_sort(&k.key));
        }
    }

    #[test]
    fn a_page_that_passes_its_crc_but_holds_impossible_values_fails() {
        let c = big(300);
        let b = c.encode().unwrap();
        let h = Header3::decode(&b[..4096], b.len() as u64).unwrap();
        // Rewrite one slot of each kind with a bad value and a matching CRC.
        let reseal = |p: u64, page: &mut Vec<u8>| {
            let n = page.len() - 4;
            let crc = page_crc(p, &page[..n]);
            page[n..].copy_from_slice(&crc.to_le_bytes());
        };
        let cases: Vec<(u64, usize, u64)> = vec![
            (h.version_slot(3), 0, u64::MAX),      // tid past the last
            (h.version_slot(5), 8, c.covered_end), // record past the covered end
            (h.key_slot(2), 24, h.n_versions),     // versions past the table
            (h.key_slot(2), 8, u64::MAX),          // array past the largest
            (h.tx_slot(1), 8, 1),                  // transaction inside the log header
        ];
        for (s, field, val) in cases {
            let (p, off) = slot_place(s);
            let at = p as usize * PAGE;
            let mut page = b[at..at + h.page_len(p)].to_vec();
            page[off + field..off + field + 8].copy_from_slice(&val.to_le_bytes());
            reseal(p, &mut page);
            assert!(check_page(&h, p, &page).is_err(), "slot {s} field {field}");
        }
    }
}
