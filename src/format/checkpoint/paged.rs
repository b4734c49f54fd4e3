//! The version-3 layout: 4 KiB pages of 32-byte slots, each page with its own CRC. The
//! header ([`Header3`]), where each slot lives, the decoders of single slots, and the
//! check a page passes before a lookup uses it ([`check_page`]).

use super::*;

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
pub(super) fn slot_offset(s: u64) -> u64 {
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
    pub(super) fn encode(&self) -> Vec<u8> {
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
                    .checked_add(RECORD_HEADER_SIZE as u64 + v.table_len() + crate::format::HUGE_ALIGN)
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
