//! The fixed records of the log file: the file header, the transaction header and
//! trailer, and the data record header (storage-format.md §2). Each decoder checks
//! every field it reads and returns `Error::Corruption` naming the offset.

use super::cursor::{Reader, Writer};
use super::*;

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
