//! Bytes ⇄ records of the log file (normative spec: `storage-format.md` at the repo root).
//!
//! Pure functions, no I/O. Every decoder reads through [`cursor::Reader`] and returns
//! `Error::Corruption { offset, what }` on bad input; nothing here panics on any input,
//! and every length read is bounded (by a constant limit and by the bytes available)
//! before it sizes an allocation. Offsets of fields are built from the constants below;
//! the tests check each record's total size against the spec.

pub mod checkpoint;
pub mod cursor;

use crate::{Error, Result, Tid};
use cursor::{Reader, Writer};

/// Magic bytes at offset 0 of a log file.
pub const MAGIC: [u8; 8] = *b"wdb-log\n";
/// The format version this code writes (new files) and the newest it reads.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this code reads. Older files are read and appended to in
/// their own version (no record their version does not define is written into them);
/// compaction upgrades them.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// The first format version whose files may hold delta records (tag `D`).
pub const DELTA_FORMAT_VERSION: u32 = 2;
/// The first format version whose raw `B` records may carry a page CRC table
/// ([`FLAG_PAGE_CRCS`], storage-format.md §2.7).
pub const PAGE_CRC_FORMAT_VERSION: u32 = 3;
/// The first format version whose raw `B` records may have their payload at a
/// [`HUGE_ALIGN`]-aligned offset ([`FLAG_ALIGNED`], storage-format.md §2.8).
pub const ALIGNED_FORMAT_VERSION: u32 = 4;
/// Alignment of a [`FLAG_ALIGNED`] payload: 2 MiB, the size of the page cache's large
/// folios and of a huge page, so that a view block (2 MiB-aligned in memory) and its
/// file bytes are congruent and the kernel can map a whole folio with one entry.
pub const HUGE_ALIGN: u64 = 2 << 20;
/// 4 KiB, the page of every format, whatever the OS page size: the alignment of raw
/// block payloads and the size of the file header, the unit of delta records and of
/// page CRC tables, the page of a checkpoint, and the unit of small writes
/// (`bigfile::SubBlockPages`).
pub const PAGE: usize = 4096;
/// The file header occupies the first page; the first transaction starts at `PAGE`.
pub const FILE_HEADER_SIZE: u64 = PAGE as u64;
/// Bytes of the file header that carry fields (the rest of the page is zero).
pub const FILE_HEADER_FIELDS: usize = 8 + 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
/// Zero bytes after the fields, up to `FILE_HEADER_SIZE`.
pub const FILE_HEADER_PADDING: usize = PAGE - FILE_HEADER_FIELDS;

/// Record tags (first byte of every record). New record types get new tags; a reader
/// that meets an unknown tag inside a committed transaction reports corruption naming
/// the tag (the format version in the header is bumped when a tag is added).
pub const TAG_TX: u8 = b'T';
/// Transaction end (trailer).
pub const TAG_TX_END: u8 = b'E';
/// Data record of a block: key (array id, block index).
pub const TAG_BLOCK: u8 = b'B';
/// Data record of an array's catalog entry: key (array id).
pub const TAG_META: u8 = b'M';
/// Data record marking a change to the set of array names: key (catalog).
pub const TAG_NAMES: u8 = b'N';
/// Data record of a block version given as its previous version plus some 4 KiB pages
/// (format version 2): key (array id, block index), like `B`.
pub const TAG_DELTA: u8 = b'D';
/// Version byte of every record type in format version 1.
pub const RECORD_VERSION: u8 = 1;

/// Transaction header: tag u8, version u8, flags u16, n_records u32, total_len u64,
/// tid u64, wall_ns u64, user_len u16, reserved u16, desc_len u32, crc u32, reserved u32.
pub const TX_HEADER_SIZE: usize = 1 + 1 + 2 + 4 + 8 + 8 + 8 + 2 + 2 + 4 + 4 + 4;
/// Offset of the header CRC inside the transaction header.
pub const TX_HEADER_CRC_AT: usize = TX_HEADER_SIZE - 8;
/// Record header: tag u8, version u8, encoding u8, flags u8, pad u16, reserved u16,
/// array u64, blk u64, prev_off u64, logical_len u32, stored_len u32, data_crc u32, crc u32.
pub const RECORD_HEADER_SIZE: usize = 1 + 1 + 1 + 1 + 2 + 2 + 8 + 8 + 8 + 4 + 4 + 4 + 4;
/// Offset of the header CRC inside a record header.
pub const RECORD_HEADER_CRC_AT: usize = RECORD_HEADER_SIZE - 4;
/// Transaction trailer: tag u8, version u8, flags u16, n_records u32, total_len u64,
/// tid u64, tx_crc u32, end magic u32.
pub const TX_END_SIZE: usize = 1 + 1 + 2 + 4 + 8 + 8 + 4 + 4;
/// Offset of the transaction CRC inside the trailer.
pub const TX_END_CRC_AT: usize = TX_END_SIZE - 8;
/// Last four bytes of every transaction.
pub const TX_END_MAGIC: u32 = u32::from_le_bytes(*b"WDB!");
/// Records (and transactions) start at multiples of 8.
pub const RECORD_ALIGN: u64 = 8;

/// Largest logical length of one block or catalog value (1 GiB).
pub const MAX_LOGICAL_LEN: u32 = 1 << 30;
/// Largest catalog (meta) value.
pub const MAX_META_LEN: u32 = 1 << 20;
/// Largest user name in a transaction header.
pub const MAX_USER_LEN: usize = u16::MAX as usize;
/// Largest description in a transaction header.
pub const MAX_DESC_LEN: usize = 1 << 20;
/// Flag on a META record: the array is deleted (a tombstone, encoding hole).
pub const FLAG_DELETED: u8 = 1;
/// Record flag: a page CRC table follows the record header (only on a raw `B` record,
/// format version 3; storage-format.md §2.7).
pub const FLAG_PAGE_CRCS: u8 = 2;
/// Record flag: the payload starts at the next multiple of [`HUGE_ALIGN`] after the
/// header and page CRC table (the header's pad field is 0; only on a raw `B` record
/// whose stored length is a nonzero multiple of `HUGE_ALIGN`, format version 4;
/// storage-format.md §2.8).
pub const FLAG_ALIGNED: u8 = 4;

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

/// How a value's bytes are stored. The delta variants are the records of tag `D`: their
/// payload is a delta (see [`DeltaPayload`]), stored raw or as one zstd frame; they are
/// distinct variants so that no code can mistake a delta payload for block bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No bytes stored: the value is all zeros (or, for META with `FLAG_DELETED`, gone).
    Hole,
    /// The first `stored_len` bytes stored as they are; the rest up to `logical_len` is zero.
    Raw,
    /// One zstd frame that decompresses to `logical_len` bytes.
    Zstd,
    /// A delta record (tag `D`) whose delta payload is stored as it is.
    DeltaRaw,
    /// A delta record (tag `D`) whose delta payload is one zstd frame.
    DeltaZstd,
}

impl Encoding {
    fn from_u8(v: u8, delta: bool, off: u64) -> Result<Encoding> {
        match (v, delta) {
            (0, false) => Ok(Encoding::Hole),
            (1, false) => Ok(Encoding::Raw),
            (2, false) => Ok(Encoding::Zstd),
            (1, true) => Ok(Encoding::DeltaRaw),
            (2, true) => Ok(Encoding::DeltaZstd),
            _ => Err(Error::corruption(off, format!("unknown encoding {v}"))),
        }
    }
    /// The encoding byte of the record header (0 hole, 1 raw, 2 zstd).
    pub fn disk_byte(self) -> u8 {
        match self {
            Encoding::Hole => 0,
            Encoding::Raw | Encoding::DeltaRaw => 1,
            Encoding::Zstd | Encoding::DeltaZstd => 2,
        }
    }
    /// Is this a delta record?
    pub fn is_delta(self) -> bool {
        matches!(self, Encoding::DeltaRaw | Encoding::DeltaZstd)
    }
    /// Is the payload one zstd frame?
    #[cfg(any(test, feature = "internals"))]
    pub fn is_zstd(self) -> bool {
        matches!(self, Encoding::Zstd | Encoding::DeltaZstd)
    }
}

/// The key of a data record: what the value is a version of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Block `blk` of array `array`.
    Block {
        /// Array id.
        array: u64,
        /// Block index.
        blk: u64,
    },
    /// The catalog entry of array `array`.
    Meta {
        /// Array id.
        array: u64,
    },
    /// The set of array names (its versions mark changes to it; the payload is empty).
    Names,
}

impl Key {
    /// The record tag of this key.
    pub fn tag(&self) -> u8 {
        match self {
            Key::Block { .. } => TAG_BLOCK,
            Key::Meta { .. } => TAG_META,
            Key::Names => TAG_NAMES,
        }
    }
    fn fields(&self) -> (u64, u64) {
        match *self {
            Key::Block { array, blk } => (array, blk),
            Key::Meta { array } => (array, 0),
            Key::Names => (0, 0),
        }
    }
    /// The array this key belongs to, if any.
    pub fn array(&self) -> Option<u64> {
        match *self {
            Key::Block { array, .. } | Key::Meta { array } => Some(array),
            Key::Names => None,
        }
    }
}

/// The file header (first page of the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Format version (1).
    pub version: u32,
    /// Alignment of raw payloads (`PAGE`).
    pub align: u32,
    /// Random id of this file; a compacted copy gets a new one. The index checkpoint
    /// and readers use it to know which file they describe.
    pub uuid: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Snapshots at tids below this were dropped by compaction (0: all kept).
    pub base_tid: Tid,
}

impl FileHeader {
    /// Encode into a full page.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&MAGIC);
        w.u32(self.version);
        w.u32(u32::try_from(FILE_HEADER_SIZE).unwrap_or(u32::MAX));
        w.u32(self.align);
        w.u32(0); // flags
        w.u64(self.uuid);
        w.u64(self.created_ns);
        w.u64(self.base_tid.0);
        w.u64(0); // reserved
        w.u32(0); // reserved
        let crc = crate::verify::crc32(&w.buf);
        w.u32(crc);
        debug_assert_eq!(w.buf.len(), FILE_HEADER_FIELDS);
        w.buf.resize(FILE_HEADER_FIELDS + FILE_HEADER_PADDING, 0);
        w.buf
    }

    /// Decode from at least `FILE_HEADER_SIZE` bytes read at offset 0.
    pub fn decode(b: &[u8]) -> Result<FileHeader> {
        let mut r = Reader::new(b, 0);
        let magic: [u8; 8] = r.array("file magic")?;
        if magic != MAGIC {
            return Err(Error::corruption(0, "not a wdb log file (bad magic)"));
        }
        let version = r.u32("format version")?;
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::corruption(
                8,
                format!(
                    "format version {version} is not supported (this build reads {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
                ),
            ));
        }
        let hsize = r.u32("header size")?;
        if u64::from(hsize) != FILE_HEADER_SIZE {
            return Err(Error::corruption(12, format!("header size {hsize}")));
        }
        let align = r.u32("alignment")?;
        if u64::from(align) != PAGE as u64 {
            return Err(Error::corruption(16, format!("alignment {align}")));
        }
        r.zeros(4, "header flags")?;
        let uuid = r.u64("uuid")?;
        let created_ns = r.u64("creation time")?;
        let base_tid = Tid(r.u64("base tid")?);
        r.zeros(12, "header reserved")?;
        let crc_at = r.pos();
        let crc = r.u32("header crc")?;
        if crc != crate::verify::crc32(&b[..crc_at]) {
            return Err(Error::corruption(crc_at as u64, "file header CRC mismatch"));
        }
        r.zeros(FILE_HEADER_PADDING, "header padding")?;
        Ok(FileHeader {
            version,
            align,
            uuid,
            created_ns,
            base_tid,
        })
    }
}

/// A decoded transaction header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxHeader {
    /// Number of data records.
    pub n_records: u32,
    /// Bytes from the header's first byte to the trailer's last.
    pub total_len: u64,
    /// Transaction id.
    pub tid: Tid,
    /// Commit wall time, ns since the Unix epoch.
    pub wall_ns: u64,
    /// Bytes of user name following the header.
    pub user_len: u16,
    /// Bytes of description following the user name.
    pub desc_len: u32,
}

impl TxHeader {
    /// Bytes of header + user + description + zero padding to `RECORD_ALIGN`.
    pub fn prefix_len(&self) -> u64 {
        align_up(
            TX_HEADER_SIZE as u64 + u64::from(self.user_len) + u64::from(self.desc_len),
            RECORD_ALIGN,
        )
    }

    /// Decode the fixed part at file offset `off`. The CRC covers user and description
    /// too, so it is checked by [`TxHeader::check_prefix`].
    pub fn decode(b: &[u8], off: u64) -> Result<TxHeader> {
        let mut r = Reader::new(b, off);
        let tag = r.u8("tx tag")?;
        if tag != TAG_TX {
            return Err(Error::corruption(
                off,
                format!("expected a transaction (tag 'T'), found tag {tag:#04x}"),
            ));
        }
        let ver = r.u8("tx version")?;
        if ver != RECORD_VERSION {
            return Err(Error::corruption(
                off + 1,
                format!("transaction record version {ver}"),
            ));
        }
        r.zeros(2, "tx flags")?;
        let n_records = r.u32("record count")?;
        let total_len = r.u64("tx length")?;
        let tid = Tid(r.u64("tid")?);
        let wall_ns = r.u64("wall time")?;
        let user_len = r.u16("user length")?;
        r.zeros(2, "tx reserved")?;
        let desc_len = r.u32("description length")?;
        if usize::try_from(desc_len).map_or(true, |d| d > MAX_DESC_LEN) {
            return Err(Error::corruption(
                off + 36,
                format!("description length {desc_len}"),
            ));
        }
        let _crc = r.u32("tx header crc")?; // checked with user and description in check_prefix
        r.zeros(4, "tx reserved")?;
        let h = TxHeader {
            n_records,
            total_len,
            tid,
            wall_ns,
            user_len,
            desc_len,
        };
        let min =
            h.prefix_len() + TX_END_SIZE as u64 + u64::from(n_records) * RECORD_HEADER_SIZE as u64;
        if total_len < min || total_len % RECORD_ALIGN != 0 {
            return Err(Error::corruption(
                off + 8,
                format!("transaction length {total_len} (at least {min}, a multiple of 8)"),
            ));
        }
        if tid == Tid::ZERO {
            return Err(Error::corruption(off + 16, "transaction id 0"));
        }
        Ok(h)
    }

    /// Check the header CRC over `prefix` (the `prefix_len()` bytes from the header's
    /// start) and return (user, description).
    pub fn check_prefix(&self, prefix: &[u8], off: u64) -> Result<(String, String)> {
        let mut r = Reader::new(prefix, off);
        let head = r.bytes(TX_HEADER_CRC_AT, "tx header")?;
        let crc = r.u32("tx header crc")?;
        r.zeros(4, "tx header reserved")?;
        let user = r.bytes(usize::from(self.user_len), "user")?;
        let desc = r.bytes(
            usize::try_from(self.desc_len).unwrap_or(usize::MAX),
            "description",
        )?;
        let mut h = crate::verify::Crc32::new();
        h.update(head);
        h.update(user);
        h.update(desc);
        if h.finalize() != crc {
            return Err(Error::corruption(
                off + TX_HEADER_CRC_AT as u64,
                "transaction header CRC mismatch",
            ));
        }
        let pad = prefix.len().saturating_sub(r.pos());
        r.zeros(pad, "tx header padding")?;
        let user = String::from_utf8(user.to_vec())
            .map_err(|_| Error::corruption(off, "user is not UTF-8"))?;
        let desc = String::from_utf8(desc.to_vec())
            .map_err(|_| Error::corruption(off, "description is not UTF-8"))?;
        Ok((user, desc))
    }
}

/// A decoded data record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// What this is a version of.
    pub key: Key,
    /// How the payload is stored.
    pub encoding: Encoding,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Zero bytes between the header (and page CRC table) and the payload: page-aligns
    /// raw payloads, 2 MiB-aligns them with [`FLAG_ALIGNED`] (then derived from the
    /// record's offset; 0 on disk).
    pub pad: u32,
    /// File offset of the previous version of the same key (0: none).
    pub prev_off: u64,
    /// Length of the value (a block: its trimmed length; zeros follow up to block size).
    pub logical_len: u32,
    /// Bytes stored in the file.
    pub stored_len: u32,
    /// CRC32 of the stored bytes.
    pub data_crc: u32,
}

impl RecordHeader {
    /// Bytes from the record header's first byte to the next record (8-aligned).
    pub fn span(&self) -> u64 {
        align_up(
            self.payload_rel() + u64::from(self.stored_len),
            RECORD_ALIGN,
        )
    }
    /// Bytes of the page CRC table after the header (0 if none).
    pub fn table_len(&self) -> u64 {
        page_table_len(self.flags, self.stored_len)
    }
    /// Offset of the payload relative to the record's first byte: after the header, the
    /// page CRC table (if any) and the pad.
    pub fn payload_rel(&self) -> u64 {
        RECORD_HEADER_SIZE as u64 + self.table_len() + u64::from(self.pad)
    }

    /// Encode (the CRC is computed here).
    pub fn encode(&self) -> [u8; RECORD_HEADER_SIZE] {
        let (array, blk) = self.key.fields();
        let mut w = Writer::new();
        w.u8(if self.encoding.is_delta() {
            TAG_DELTA
        } else {
            self.key.tag()
        });
        w.u8(RECORD_VERSION);
        w.u8(self.encoding.disk_byte());
        w.u8(self.flags);
        // An aligned record's pad follows from its offset: 0 on disk.
        w.u16(if self.flags & FLAG_ALIGNED != 0 {
            0
        } else {
            u16::try_from(self.pad).unwrap_or(u16::MAX)
        });
        w.u16(0);
        w.u64(array);
        w.u64(blk);
        w.u64(self.prev_off);
        w.u32(self.logical_len);
        w.u32(self.stored_len);
        w.u32(self.data_crc);
        let crc = crate::verify::crc32(&w.buf);
        w.u32(crc);
        let mut out = [0u8; RECORD_HEADER_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Decode a record header read at file offset `off`; checks its CRC and every bound
    /// that does not need the rest of the transaction.
    pub fn decode(b: &[u8], off: u64) -> Result<RecordHeader> {
        let mut r = Reader::new(b, off);
        let tag = r.u8("record tag")?;
        let ver = r.u8("record version")?;
        let enc = r.u8("encoding")?;
        let flags = r.u8("record flags")?;
        let disk_pad = r.u16("pad")?;
        r.zeros(2, "record reserved")?;
        let array = r.u64("array id")?;
        let blk = r.u64("block index")?;
        let prev_off = r.u64("back pointer")?;
        let logical_len = r.u32("logical length")?;
        let stored_len = r.u32("stored length")?;
        let data_crc = r.u32("data crc")?;
        let crc = r.u32("record header crc")?;
        if crc != crate::verify::crc32(&b[..RECORD_HEADER_CRC_AT]) {
            return Err(Error::corruption(off, "record header CRC mismatch"));
        }
        if ver != RECORD_VERSION {
            return Err(Error::corruption(off + 1, format!("record version {ver}")));
        }
        let encoding = Encoding::from_u8(enc, tag == TAG_DELTA, off + 2)?;
        let key = match tag {
            TAG_BLOCK | TAG_DELTA => Key::Block { array, blk },
            TAG_META if blk == 0 => Key::Meta { array },
            TAG_NAMES if array == 0 && blk == 0 => Key::Names,
            TAG_META | TAG_NAMES => {
                return Err(Error::corruption(
                    off + 8,
                    "key fields must be zero for this record type",
                ))
            }
            _ => {
                return Err(Error::corruption(
                    off,
                    format!("unknown record tag {tag:#04x}"),
                ))
            }
        };
        if key.array() == Some(0) {
            return Err(Error::corruption(off + 8, "array id 0"));
        }
        let allowed_flags = match tag {
            TAG_META => FLAG_DELETED,
            TAG_BLOCK if enc == Encoding::Raw.disk_byte() => FLAG_PAGE_CRCS | FLAG_ALIGNED,
            _ => 0,
        };
        if flags & !allowed_flags != 0 {
            return Err(Error::corruption(
                off + 3,
                format!("record flags {flags:#x}"),
            ));
        }
        let max = if tag == TAG_BLOCK || tag == TAG_DELTA {
            MAX_LOGICAL_LEN
        } else {
            MAX_META_LEN
        };
        if logical_len > max {
            return Err(Error::corruption(
                off + 32,
                format!("logical length {logical_len} > limit {max}"),
            ));
        }
        let aligned = flags & FLAG_ALIGNED != 0;
        if aligned && (disk_pad != 0 || stored_len == 0 || u64::from(stored_len) % HUGE_ALIGN != 0)
        {
            return Err(Error::corruption(
                off + 3,
                format!("aligned payload of {stored_len} bytes with pad {disk_pad}"),
            ));
        }
        let pad = disk_pad;
        let ok = match encoding {
            Encoding::Hole => stored_len == 0 && pad == 0 && data_crc == 0,
            Encoding::Raw => stored_len == logical_len,
            Encoding::Zstd => stored_len <= logical_len && stored_len > 0 && pad == 0,
            // A delta is never padded and holds at least its payload header.
            Encoding::DeltaRaw => stored_len == logical_len && pad == 0,
            Encoding::DeltaZstd => stored_len <= logical_len && stored_len > 0 && pad == 0,
        } && (!encoding.is_delta()
            || usize::try_from(logical_len).is_ok_and(|l| l >= DELTA_HEADER_SIZE));
        if !ok {
            return Err(Error::corruption(
                off + 36,
                format!("stored length {stored_len} / pad {pad} / crc do not fit encoding {encoding:?} with logical length {logical_len}"),
            ));
        }
        if u64::from(pad) >= PAGE as u64 || (flags & FLAG_DELETED != 0 && encoding != Encoding::Hole) {
            return Err(Error::corruption(off + 4, "bad pad or tombstone"));
        }
        // A delta rests on the previous version of its block, which lies before it.
        if encoding.is_delta() && (prev_off < FILE_HEADER_SIZE || prev_off >= off) {
            return Err(Error::corruption(
                off + 24,
                format!("delta record with back pointer {prev_off}: its base must precede it"),
            ));
        }
        let table_end = off
            .checked_add(RECORD_HEADER_SIZE as u64 + page_table_len(flags, stored_len))
            .ok_or_else(|| Error::corruption(off, "record offset"))?;
        let pad = u32::try_from(pad_of(flags, disk_pad, table_end))
            .map_err(|_| Error::corruption(off, "pad"))?;
        Ok(RecordHeader {
            key,
            encoding,
            flags,
            pad,
            prev_off,
            logical_len,
            stored_len,
            data_crc,
        })
    }
}

/// A decoded transaction trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxEnd {
    /// Must equal the header's.
    pub n_records: u32,
    /// Must equal the header's; lets a backward scan find the header.
    pub total_len: u64,
    /// Must equal the header's.
    pub tid: Tid,
    /// CRC32 of the header prefix, every record header and the trailer up to this field.
    pub tx_crc: u32,
}

impl TxEnd {
    /// Encode; `crc` must already include the header prefix and record headers;
    /// this adds the trailer's own fields.
    pub fn encode(&self, mut crc: crate::verify::Crc32) -> [u8; TX_END_SIZE] {
        let mut w = Writer::new();
        w.u8(TAG_TX_END);
        w.u8(RECORD_VERSION);
        w.u16(0);
        w.u32(self.n_records);
        w.u64(self.total_len);
        w.u64(self.tid.0);
        crc.update(&w.buf);
        w.u32(crc.finalize());
        w.u32(TX_END_MAGIC);
        let mut out = [0u8; TX_END_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Decode a trailer read at `off` (the tx CRC is checked by the caller, who has the
    /// running hash; `crc_so_far` is that hash before the trailer).
    pub fn decode(b: &[u8], off: u64, crc_so_far: Option<crate::verify::Crc32>) -> Result<TxEnd> {
        let mut r = Reader::new(b, off);
        let tag = r.u8("trailer tag")?;
        if tag != TAG_TX_END {
            return Err(Error::corruption(
                off,
                format!("expected a transaction trailer (tag 'E'), found {tag:#04x}"),
            ));
        }
        let ver = r.u8("trailer version")?;
        if ver != RECORD_VERSION {
            return Err(Error::corruption(off + 1, format!("trailer version {ver}")));
        }
        r.zeros(2, "trailer flags")?;
        let n_records = r.u32("trailer record count")?;
        let total_len = r.u64("trailer tx length")?;
        let tid = Tid(r.u64("trailer tid")?);
        let tx_crc = r.u32("tx crc")?;
        let magic = r.u32("trailer magic")?;
        if magic != TX_END_MAGIC {
            return Err(Error::corruption(off + 28, "bad trailer magic"));
        }
        if let Some(mut h) = crc_so_far {
            h.update(&b[..TX_END_CRC_AT]);
            if h.finalize() != tx_crc {
                return Err(Error::corruption(
                    off + TX_END_CRC_AT as u64,
                    "transaction CRC mismatch",
                ));
            }
        }
        Ok(TxEnd {
            n_records,
            total_len,
            tid,
            tx_crc,
        })
    }
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

/// Round `v` up to a multiple of `a` (a power of two); saturates instead of overflowing.
pub fn align_up(v: u64, a: u64) -> u64 {
    v.saturating_add(a - 1) & !(a - 1)
}

/// One data record to encode into a transaction.
#[derive(Debug, Clone)]
pub struct RecordIn<'a> {
    /// Key.
    pub key: Key,
    /// Encoding of `payload`.
    pub encoding: Encoding,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Offset of the previous version of the key (0: none).
    pub prev_off: u64,
    /// Logical length.
    pub logical_len: u32,
    /// The stored bytes, in memory or in another file.
    pub payload: PayloadSrc<'a>,
    /// CRC32 of `payload` (computed once when the block was staged).
    pub data_crc: u32,
    /// The page CRCs of a raw block payload ([`page_crcs`]): written as its page CRC
    /// table, with [`FLAG_PAGE_CRCS`] set. Only in format version 3 files.
    pub page_crcs: Option<TableSrc<'a>>,
}

/// Bytes `[off, off + len)` of another open file (a transaction's spill file, or the
/// file being compacted): a payload the append copies into the log without bringing it
/// into memory (`Part::Copy`). Only a descriptor and numbers: nothing here reads it.
#[derive(Debug, Clone, Copy)]
pub struct FileRange<'a> {
    /// The file, open for reading.
    pub file: &'a std::fs::File,
    /// Offset of the first byte.
    pub off: u64,
    /// Length in bytes.
    pub len: u32,
    /// The source bytes are not needed after the copy: the append may give their disk
    /// space back (a spill file's range, never a log's).
    pub release: bool,
}

/// Where a record's page CRC table comes from.
#[derive(Debug, Clone, Copy)]
pub enum TableSrc<'a> {
    /// The page CRCs, encoded by the append ([`encode_page_table`]).
    Crcs(&'a [u32]),
    /// The table of this many page CRCs, already encoded ([`encode_page_table`]), in
    /// another file (a spilled block's, so that a transaction bigger than RAM does not
    /// hold its tables in memory): copied like a payload.
    File(FileRange<'a>, usize),
}

impl TableSrc<'_> {
    /// Number of page CRCs.
    pub fn n(&self) -> usize {
        match self {
            TableSrc::Crcs(c) => c.len(),
            TableSrc::File(_, n) => *n,
        }
    }
}

impl<'a> From<&'a [u32]> for TableSrc<'a> {
    fn from(c: &'a [u32]) -> Self {
        TableSrc::Crcs(c)
    }
}

impl<'a> From<&'a Vec<u32>> for TableSrc<'a> {
    fn from(c: &'a Vec<u32>) -> Self {
        TableSrc::Crcs(c)
    }
}

/// Where a record's payload is: in memory, or a range of another file.
#[derive(Debug, Clone, Copy)]
pub enum PayloadSrc<'a> {
    /// Bytes in memory.
    Mem(&'a [u8]),
    /// Bytes of another file, copied by the append.
    File(FileRange<'a>),
}

impl PayloadSrc<'_> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            PayloadSrc::Mem(b) => b.len(),
            PayloadSrc::File(r) => r.len as usize,
        }
    }
    /// No bytes?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<&'a [u8]> for PayloadSrc<'a> {
    fn from(b: &'a [u8]) -> Self {
        PayloadSrc::Mem(b)
    }
}

impl<'a> From<&'a Vec<u8>> for PayloadSrc<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        PayloadSrc::Mem(b)
    }
}

/// A piece of an encoded transaction, written in order.
#[derive(Debug)]
pub enum Part<'a> {
    /// Headers and padding.
    Own(Vec<u8>),
    /// A payload, borrowed to avoid a copy.
    Borrowed(&'a [u8]),
    /// A payload in another file, copied into the log by the append.
    Copy(FileRange<'a>),
    /// A page CRC table, encoded by the append ([`encode_page_table`]): a big
    /// transaction's tables are not copied into memory all at once.
    Table(&'a [u32]),
    /// This many zero bytes of padding, whole pages, left as a hole (not written: the
    /// file reads zeros there once the bytes after it are written).
    Hole(u64),
}

impl Part<'_> {
    /// The bytes, if they are in memory as such (`None` for [`Part::Copy`],
    /// [`Part::Table`] and [`Part::Hole`]).
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Part::Own(v) => Some(v),
            Part::Borrowed(b) => Some(b),
            Part::Copy(_) | Part::Table(_) | Part::Hole(_) => None,
        }
    }

    /// Its length in the file.
    pub fn len(&self) -> u64 {
        match self {
            Part::Own(v) => v.len() as u64,
            Part::Borrowed(b) => b.len() as u64,
            Part::Copy(r) => u64::from(r.len),
            Part::Table(c) => 4 * c.len() as u64 + 4,
            Part::Hole(n) => *n,
        }
    }

    /// Has it no bytes?
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes the parts cover in the file.
fn total_of(parts: &[Part<'_>]) -> u64 {
    parts.iter().map(Part::len).sum()
}

impl EncodedTx<'_> {
    /// The whole transaction as it reads back from the file (holes as zeros), for a
    /// transaction whose payloads are all in memory: a [`Part::Copy`] reads as zeros
    /// here, its bytes being in another file.
    #[cfg(any(test, feature = "internals"))]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for p in &self.parts {
            match p {
                Part::Table(c) => v.extend_from_slice(&encode_page_table(c)),
                Part::Hole(_) | Part::Copy(_) => {
                    v.resize(v.len() + usize::try_from(p.len()).unwrap_or(0), 0)
                }
                Part::Own(b) => v.extend_from_slice(b),
                Part::Borrowed(b) => v.extend_from_slice(b),
            }
        }
        v
    }
}

/// A transaction encoded for appending at `start`.
#[derive(Debug)]
pub struct EncodedTx<'a> {
    /// The bytes, in order.
    pub parts: Vec<Part<'a>>,
    /// Total length (sum of the parts).
    pub total_len: u64,
    /// File offset of each record header, in input order.
    pub record_offsets: Vec<u64>,
    /// The record headers as written.
    pub headers: Vec<RecordHeader>,
    /// The trailer as written.
    pub end: TxEnd,
}

/// Encode a transaction to be appended at file offset `start` (a multiple of 8).
/// Raw payloads are placed at page-aligned file offsets (the record's `pad`).
pub fn encode_tx<'a>(
    start: u64,
    tid: Tid,
    wall_ns: u64,
    user: &str,
    desc: &str,
    records: &[RecordIn<'a>],
) -> Result<EncodedTx<'a>> {
    if start % RECORD_ALIGN != 0 {
        return Err(Error::InvalidArgument(format!(
            "transaction start {start} not 8-aligned"
        )));
    }
    if user.len() > MAX_USER_LEN || desc.len() > MAX_DESC_LEN {
        return Err(Error::InvalidArgument(
            "user or description too long".into(),
        ));
    }
    let n_records = u32::try_from(records.len())
        .map_err(|_| Error::InvalidArgument("too many records".into()))?;
    let user_len =
        u16::try_from(user.len()).map_err(|_| Error::InvalidArgument("user too long".into()))?;
    let desc_len = u32::try_from(desc.len())
        .map_err(|_| Error::InvalidArgument("description too long".into()))?;
    let h = TxHeader {
        n_records,
        total_len: 0,
        tid,
        wall_ns,
        user_len,
        desc_len,
    };
    // First pass: layout, so total_len is known before the header is written.
    let mut pos = start + h.prefix_len();
    let mut headers = Vec::with_capacity(records.len());
    let mut record_offsets = Vec::with_capacity(records.len());
    for rec in records {
        let stored_len = u32::try_from(rec.payload.len())
            .map_err(|_| Error::InvalidArgument("payload too long".into()))?;
        let flags = match rec.page_crcs {
            Some(c) => {
                let bad_file =
                    matches!(c, TableSrc::File(r, n) if u64::from(r.len) != 4 * n as u64 + 4);
                if c.n() as u64 != u64::from(stored_len).div_ceil(PAGE as u64) || bad_file {
                    return Err(Error::InvalidArgument(format!(
                        "{} page CRCs for a payload of {stored_len} bytes",
                        c.n()
                    )));
                }
                rec.flags | FLAG_PAGE_CRCS
            }
            None => rec.flags & !FLAG_PAGE_CRCS,
        };
        let table = page_table_len(flags, stored_len);
        let table_end = pos + RECORD_HEADER_SIZE as u64 + table;
        let pad = if flags & FLAG_ALIGNED != 0 {
            pad_of(flags, 0, table_end)
        } else if rec.encoding == Encoding::Raw {
            (PAGE as u64 - table_end % PAGE as u64) % PAGE as u64
        } else {
            0
        };
        let pad = u32::try_from(pad).map_err(|_| Error::InvalidArgument("pad".into()))?;
        let rh = RecordHeader {
            key: rec.key,
            encoding: rec.encoding,
            flags,
            pad,
            prev_off: rec.prev_off,
            logical_len: rec.logical_len,
            stored_len,
            data_crc: rec.data_crc,
        };
        // Validate what we write with the same rules as what we read.
        RecordHeader::decode(&rh.encode(), pos)?;
        record_offsets.push(pos);
        pos += rh.span();
        headers.push(rh);
    }
    let total_len = pos + TX_END_SIZE as u64 - start;
    let h = TxHeader { total_len, ..h };

    let mut w = Writer::new();
    w.u8(TAG_TX);
    w.u8(RECORD_VERSION);
    w.u16(0);
    w.u32(n_records);
    w.u64(total_len);
    w.u64(tid.0);
    w.u64(wall_ns);
    w.u16(user_len);
    w.u16(0);
    w.u32(desc_len);
    let mut hc = crate::verify::Crc32::new();
    hc.update(&w.buf);
    hc.update(user.as_bytes());
    hc.update(desc.as_bytes());
    w.u32(hc.finalize());
    w.u32(0);
    w.bytes(user.as_bytes());
    w.bytes(desc.as_bytes());
    let prefix =
        usize::try_from(h.prefix_len()).map_err(|_| Error::InvalidArgument("prefix".into()))?;
    w.zeros(prefix - w.buf.len());
    let mut txcrc = crate::verify::Crc32::new();
    txcrc.update(&w.buf);

    let mut parts = Vec::new();
    let mut cur = w.buf;
    for (rec, rh) in records.iter().zip(&headers) {
        let hb = rh.encode();
        txcrc.update(&hb);
        cur.extend_from_slice(&hb);
        if let Some(c) = rec.page_crcs {
            parts.push(Part::Own(std::mem::take(&mut cur)));
            parts.push(match c {
                TableSrc::Crcs(c) => Part::Table(c),
                TableSrc::File(r, _) => Part::Copy(r),
            });
        }
        // Padding: zeros to the next page, then whole pages as a hole (never written:
        // an aligned payload's padding takes no disk blocks).
        let at = start + total_of(&parts) + cur.len() as u64;
        let zeros = (PAGE as u64 - at % PAGE as u64) % PAGE as u64;
        let zeros = zeros.min(u64::from(rh.pad));
        cur.resize(cur.len() + usize::try_from(zeros).unwrap_or(0), 0);
        let hole = u64::from(rh.pad) - zeros;
        if hole > 0 {
            parts.push(Part::Own(std::mem::take(&mut cur)));
            parts.push(Part::Hole(hole));
        }
        if !rec.payload.is_empty() {
            parts.push(Part::Own(std::mem::take(&mut cur)));
            parts.push(match rec.payload {
                PayloadSrc::Mem(b) => Part::Borrowed(b),
                PayloadSrc::File(r) => Part::Copy(r),
            });
        }
        let tail = rh.span() - rh.payload_rel() - u64::from(rh.stored_len);
        cur.resize(cur.len() + usize::try_from(tail).unwrap_or(0), 0);
    }
    let end = TxEnd {
        n_records,
        total_len,
        tid,
        tx_crc: 0,
    };
    let eb = end.encode(txcrc);
    let end = TxEnd::decode(&eb, pos, None)?;
    cur.extend_from_slice(&eb);
    parts.push(Part::Own(cur));
    debug_assert_eq!(total_of(&parts), total_len);
    Ok(EncodedTx {
        parts,
        total_len,
        record_offsets,
        headers,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_match_the_spec() {
        assert_eq!(FILE_HEADER_FIELDS, 64);
        assert_eq!(
            (FILE_HEADER_FIELDS + FILE_HEADER_PADDING) as u64,
            FILE_HEADER_SIZE
        );
        assert_eq!(TX_HEADER_SIZE, 48);
        assert_eq!(RECORD_HEADER_SIZE, 48);
        assert_eq!(TX_END_SIZE, 32);
        assert_eq!(
            FileHeader {
                version: 1,
                align: 4096,
                uuid: 1,
                created_ns: 2,
                base_tid: Tid(0)
            }
            .encode()
            .len(),
            4096
        );
        let rh = RecordHeader {
            key: Key::Block { array: 1, blk: 2 },
            encoding: Encoding::Hole,
            flags: 0,
            pad: 0,
            prev_off: 0,
            logical_len: 0,
            stored_len: 0,
            data_crc: 0,
        };
        assert_eq!(rh.encode().len(), RECORD_HEADER_SIZE);
        assert_eq!(rh.span(), 48);
    }

    #[test]
    fn file_header_roundtrip_and_bitflips() {
        let h = FileHeader {
            version: 1,
            align: 4096,
            uuid: 77,
            created_ns: 5,
            base_tid: Tid(3),
        };
        let b = h.encode();
        assert_eq!(FileHeader::decode(&b).unwrap(), h);
        for bit in 0..FILE_HEADER_FIELDS * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(FileHeader::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn raw_payloads_are_page_aligned() {
        let data = vec![7u8; 5000];
        let recs = [
            RecordIn {
                key: Key::Names,
                encoding: Encoding::Hole,
                flags: 0,
                prev_off: 0,
                logical_len: 0,
                payload: PayloadSrc::Mem(&[]),
                data_crc: 0,
                page_crcs: None,
            },
            RecordIn {
                key: Key::Block { array: 1, blk: 0 },
                encoding: Encoding::Raw,
                flags: 0,
                prev_off: 0,
                logical_len: 5000,
                payload: PayloadSrc::Mem(&data),
                data_crc: crate::verify::crc32(&data),
                page_crcs: None,
            },
        ];
        let tx = encode_tx(4096, Tid(1), 0, "u", "d", &recs).unwrap();
        let off = tx.record_offsets[1] + tx.headers[1].payload_rel();
        assert_eq!(off % PAGE, 0);
        let bytes: Vec<u8> = tx.to_bytes();
        assert_eq!(bytes.len() as u64, tx.total_len);
        let h = TxHeader::decode(&bytes, 4096).unwrap();
        assert_eq!(h.tid, Tid(1));
        let p = usize::try_from(h.prefix_len()).unwrap();
        assert_eq!(
            h.check_prefix(&bytes[..p], 4096).unwrap(),
            ("u".into(), "d".into())
        );
        let end_at = bytes.len() - TX_END_SIZE;
        assert_eq!(
            TxEnd::decode(&bytes[end_at..], 0, None).unwrap().total_len,
            tx.total_len
        );
    }

    #[test]
    fn delta_payload_roundtrip_apply_and_bounds() {
        let page = PAGE as usize;
        let p1 = vec![1u8; page];
        let p3 = vec![3u8; page];
        let b = DeltaPayload::encode(4 * PAGE as u32, &[(1, &p1), (3, &p3)]);
        assert_eq!(b.len(), DELTA_HEADER_SIZE + 2 * DELTA_PAGE_COST);
        let d = DeltaPayload::decode(&b, 0).unwrap();
        assert_eq!((d.result_len, d.n_pages()), (4 * PAGE as u32, 2));
        // Base of 6 pages of 9s, applied: pages 1 and 3 replaced, pages 4.. cut to zero.
        let mut blk = vec![9u8; 8 * page];
        blk[6 * page..].fill(0);
        d.apply(&mut blk, 6 * page, 0).unwrap();
        assert!(blk[..page].iter().all(|&x| x == 9));
        assert!(blk[page..2 * page].iter().all(|&x| x == 1));
        assert!(blk[3 * page..4 * page].iter().all(|&x| x == 3));
        assert!(blk[4 * page..].iter().all(|&x| x == 0));
        // Growing past the base's length zero-fills the gap.
        let mut blk = vec![7u8; 8 * page];
        d.apply(&mut blk, page, 0).unwrap();
        assert!(blk[2 * page..3 * page].iter().all(|&x| x == 0));
        // Too long for the block.
        assert!(d.apply(&mut vec![0u8; 2 * page], 0, 0).is_err());
        // Every bad header field, length, order and range is an error, never a panic.
        // (Bytes 5 and 6 of the result length can flip to another valid length: the
        // record's data CRC catches those.)
        for i in (0..DELTA_HEADER_SIZE + 8).filter(|i| ![5, 6].contains(i)) {
            let mut c = b.clone();
            c[i] ^= 0x80;
            assert!(DeltaPayload::decode(&c, 0).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(DeltaPayload::decode(&b[..n], 0).is_err());
        }
        let unsorted = DeltaPayload::encode(4 * PAGE as u32, &[(3, &p3), (1, &p1)]);
        assert!(DeltaPayload::decode(&unsorted, 0).is_err());
        let odd_len = DeltaPayload::encode(4 * PAGE as u32 + 1, &[]);
        assert!(DeltaPayload::decode(&odd_len, 0).is_err());
        assert!(DeltaPayload::decode(&DeltaPayload::encode(0, &[]), 0).is_ok());
    }

    #[test]
    fn delta_record_headers_follow_their_rules() {
        let rh = RecordHeader {
            key: Key::Block { array: 1, blk: 2 },
            encoding: Encoding::DeltaRaw,
            flags: 0,
            pad: 0,
            prev_off: 4096,
            logical_len: 16,
            stored_len: 16,
            data_crc: 5,
        };
        let b = rh.encode();
        assert_eq!(b[0], TAG_DELTA);
        assert_eq!(RecordHeader::decode(&b, 8192).unwrap(), rh);
        // The base must lie before the record, a delta is never padded, holds its header.
        assert!(RecordHeader::decode(&b, 4096).is_err());
        for bad in [
            RecordHeader { prev_off: 0, ..rh },
            RecordHeader { pad: 8, ..rh },
            RecordHeader {
                logical_len: 8,
                stored_len: 8,
                ..rh
            },
            RecordHeader {
                encoding: Encoding::DeltaZstd,
                stored_len: 17,
                ..rh
            },
        ] {
            assert!(
                RecordHeader::decode(&bad.encode(), 8192).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn page_crc_tables_combine_roundtrip_and_reject_corruption() {
        for len in [0usize, 100, 4096, 4097, 3 * 4096, 2 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            let (crcs, whole) = page_crcs(&data);
            assert_eq!(whole, crate::verify::crc32(&data), "len {len}");
            assert_eq!(combine_page_crcs(&crcs, len as u32), whole);
            assert_eq!(crcs.len() as u64, (len as u64).div_ceil(PAGE));
            let t = encode_page_table(&crcs);
            assert_eq!(t.len() as u64, page_table_len(FLAG_PAGE_CRCS, len as u32));
            assert_eq!(decode_page_table(&t, len as u32, 0).unwrap(), crcs);
            for bit in [0, t.len() * 8 - 1, t.len() * 4] {
                let mut bad = t.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_page_table(&bad, len as u32, 0).is_err());
            }
        }
        assert_eq!(page_table_len(0, 1 << 30), 0);
        assert_eq!(page_table_len(FLAG_PAGE_CRCS, 1 << 30), (1 << 20) + 4);
    }

    #[test]
    fn raw_records_with_page_tables_align_and_check() {
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        let (crcs, whole) = page_crcs(&data);
        let recs = [RecordIn {
            key: Key::Block { array: 1, blk: 0 },
            encoding: Encoding::Raw,
            flags: 0,
            prev_off: 0,
            logical_len: data.len() as u32,
            payload: PayloadSrc::Mem(&data),
            data_crc: whole,
            page_crcs: Some(TableSrc::Crcs(&crcs)),
        }];
        let tx = encode_tx(4096, Tid(1), 1, "u", "d", &recs).unwrap();
        let bytes: Vec<u8> = tx.to_bytes();
        let rh = tx.headers[0];
        assert_eq!(rh.flags, FLAG_PAGE_CRCS);
        let at = (tx.record_offsets[0] - 4096) as usize;
        assert_eq!((4096 + at as u64 + rh.payload_rel()) % PAGE, 0);
        let t0 = at + RECORD_HEADER_SIZE;
        let table = &bytes[t0..t0 + rh.table_len() as usize];
        let p0 = at + rh.payload_rel() as usize;
        let payload = &bytes[p0..p0 + data.len()];
        assert_eq!(payload, &data[..]);
        check_payload(&rh, 0, table, payload).unwrap();
        let mut bad = payload.to_vec();
        bad[5000] ^= 1;
        let e = check_payload(&rh, 0, table, &bad).unwrap_err().to_string();
        assert!(e.contains("page 1"), "{e}");
        let mut badt = table.to_vec();
        badt[2] ^= 1;
        let e = check_payload(&rh, 0, &badt, payload)
            .unwrap_err()
            .to_string();
        assert!(e.contains("table"), "{e}");
        // A wrong number of page CRCs is refused by the writer; the flag only on raw B.
        let mut r2 = recs.clone();
        r2[0].page_crcs = Some(TableSrc::Crcs(&crcs[..2]));
        assert!(encode_tx(4096, Tid(1), 1, "", "", &r2).is_err());
        let mut h = rh;
        h.encoding = Encoding::Zstd;
        h.pad = 0;
        assert!(RecordHeader::decode(&h.encode(), 0).is_err());
    }

    #[test]
    fn decoders_never_panic_on_short_or_garbage_input() {
        for n in 0..64 {
            let b = vec![0xA5u8; n];
            let _ = FileHeader::decode(&b);
            let _ = TxHeader::decode(&b, 0);
            let _ = RecordHeader::decode(&b, 0);
            let _ = TxEnd::decode(&b, 0, Some(crate::verify::Crc32::new()));
            let _ = DeltaPayload::decode(&b, 0);
        }
    }
}
