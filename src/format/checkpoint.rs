//! The index checkpoint file (`<db>.idx`): a persisted copy of the store's index up to a
//! log offset, so that open time does not grow with the log. Byte layout in
//! `storage-format.md`, section "Index checkpoint".

use super::cursor::{Reader, Writer};
use super::{Encoding, Key, RecordHeader, TAG_BLOCK, TAG_META, TAG_NAMES};
use crate::{Error, Result, Tid};

/// Magic bytes of a checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"wdb-idx\n";
/// Checkpoint format version written. Version 2 adds the delta encodings (3, 4) to the
/// version entries; version 1 checkpoints (which cannot hold them) are still read.
pub const CHECKPOINT_VERSION: u32 = 2;
/// Fixed header: magic, version u32, reserved u32, log uuid u64, covered_end u64,
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
    /// Pad between header and payload.
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
            pad: h.pad,
            logical_len: h.logical_len,
            stored_len: h.stored_len,
            data_crc: h.data_crc,
        }
    }
    /// File offset of the payload.
    pub fn payload_off(&self) -> u64 {
        self.rec_off + self.table_rel() + self.table_len() + u64::from(self.pad)
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
    /// Encode, with a CRC32 of everything as the last 4 bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.bytes(&CHECKPOINT_MAGIC);
        w.u32(CHECKPOINT_VERSION);
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
                w.u8(match v.encoding {
                    Encoding::Hole => 0,
                    Encoding::Raw => 1,
                    Encoding::Zstd => 2,
                    Encoding::DeltaRaw => 3,
                    Encoding::DeltaZstd => 4,
                });
                w.u8(v.flags);
                w.u16(v.pad);
                w.u32(v.logical_len);
                w.u32(v.stored_len);
                w.u32(v.data_crc);
            }
        }
        let crc = crc32fast::hash(&w.buf);
        w.u32(crc);
        Ok(w.buf)
    }

    /// Decode a whole checkpoint file. Offsets in errors are offsets in that file.
    pub fn decode(b: &[u8]) -> Result<Checkpoint> {
        if b.len() < CHECKPOINT_HEADER_SIZE + 4 {
            return Err(Error::corruption(0, "checkpoint too short"));
        }
        let body_len = b.len() - 4;
        let mut cr = Reader::new(&b[body_len..], body_len as u64);
        if cr.u32("checkpoint crc")? != crc32fast::hash(&b[..body_len]) {
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
        if !(1..=CHECKPOINT_VERSION).contains(&ver) {
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
            covered_end: 8192,
            last_tid: Tid(2),
            last_tx_crc: 5,
            txs: vec![TxEntry {
                tid: Tid(1),
                off: 4096,
                len: 100,
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
        let b = c.encode().unwrap();
        assert_eq!(b.len(), 64 + 32 + 32 + 32 + 4);
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x10;
            assert!(Checkpoint::decode(&x).is_err());
            assert!(Checkpoint::decode(&b[..i]).is_err());
        }
    }
}
