//! Bytes ⇄ records of the log file (normative spec: `storage-format.md` at the repo root).
//!
//! Pure functions, no I/O. Every decoder reads through [`cursor::Reader`] and returns
//! `Error::Corruption { offset, what }` on bad input; nothing here panics on any input,
//! and every length read is bounded (by a constant limit and by the bytes available)
//! before it sizes an allocation. Offsets of fields are built from the constants below;
//! the tests check each record's total size against the spec.
//!
//! Files: `mod.rs` the constants (tags, sizes, flags, [`PAGE`]), [`Key`] and
//! [`Encoding`]; `records.rs` the file header, transaction header and trailer, record
//! header; `payload.rs` where a payload sits and the page CRC table; `delta.rs` delta
//! payloads and the delta policy ([`delta_room`]: delta or full block); `tx.rs`
//! encoding a transaction for appending; [`checkpoint`] the index checkpoint file;
//! [`cursor`] the checked little-endian reader and writer.

pub mod checkpoint;
pub mod cursor;
mod delta;
mod payload;
mod records;
#[cfg(test)]
mod tests;
mod tx;

pub use delta::{delta_room, max_delta_pages, DeltaPayload, DELTA_HEADER_SIZE, MAX_DELTA_CHAIN};
#[cfg(any(test, feature = "internals"))]
pub use payload::combine_page_crcs;
pub use payload::{
    check_payload, decode_page_table, encode_page_table, layout_flags, pad_of, page_crcs,
    page_table_len,
};
pub use records::{FileHeader, RecordHeader, TxEnd, TxHeader};
pub use tx::{encode_tx, EncodedTx, FileRange, PayloadSrc, RecordIn, TableSrc, TxPiece};

use crate::{Error, Result, Tid};

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

/// Round `v` up to a multiple of `a` (a power of two); saturates instead of overflowing.
pub fn align_up(v: u64, a: u64) -> u64 {
    v.saturating_add(a - 1) & !(a - 1)
}
