//! Encoding a transaction for appending: its records laid out (headers, page CRC
//! tables, padding to aligned payloads) and emitted as pieces written in order, the
//! payloads borrowed or copied from another file, never gathered into one buffer.

use super::cursor::Writer;
use super::*;

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
/// into memory (`TxPiece::Copy`). Only a descriptor and numbers: nothing here reads it.
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
pub enum TxPiece<'a> {
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

impl TxPiece<'_> {
    /// The bytes, if they are in memory as such (`None` for [`TxPiece::Copy`],
    /// [`TxPiece::Table`] and [`TxPiece::Hole`]).
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            TxPiece::Own(v) => Some(v),
            TxPiece::Borrowed(b) => Some(b),
            TxPiece::Copy(_) | TxPiece::Table(_) | TxPiece::Hole(_) => None,
        }
    }

    /// Its length in the file.
    pub fn len(&self) -> u64 {
        match self {
            TxPiece::Own(v) => v.len() as u64,
            TxPiece::Borrowed(b) => b.len() as u64,
            TxPiece::Copy(r) => u64::from(r.len),
            TxPiece::Table(c) => 4 * c.len() as u64 + 4,
            TxPiece::Hole(n) => *n,
        }
    }

    /// Has it no bytes?
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes the pieces cover in the file.
fn total_of(pieces: &[TxPiece<'_>]) -> u64 {
    pieces.iter().map(TxPiece::len).sum()
}

impl EncodedTx<'_> {
    /// The whole transaction as it reads back from the file (holes as zeros), for a
    /// transaction whose payloads are all in memory: a [`TxPiece::Copy`] reads as zeros
    /// here, its bytes being in another file.
    #[cfg(any(test, feature = "internals"))]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for p in &self.pieces {
            match p {
                TxPiece::Table(c) => v.extend_from_slice(&encode_page_table(c)),
                TxPiece::Hole(_) | TxPiece::Copy(_) => {
                    v.resize(v.len() + usize::try_from(p.len()).unwrap_or(0), 0)
                }
                TxPiece::Own(b) => v.extend_from_slice(b),
                TxPiece::Borrowed(b) => v.extend_from_slice(b),
            }
        }
        v
    }
}

/// A transaction encoded for appending at `start`.
#[derive(Debug)]
pub struct EncodedTx<'a> {
    /// The bytes, in order.
    pub pieces: Vec<TxPiece<'a>>,
    /// Total length (sum of the pieces).
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
    // Layout first, so total_len is known before the header is written.
    let (headers, record_offsets, end_at) = layout_records(start + h.prefix_len(), records)?;
    let total_len = end_at + TX_END_SIZE as u64 - start;
    let h = TxHeader { total_len, ..h };
    let prefix = encode_prefix(&h, user, desc)?;
    let mut txcrc = crate::verify::Crc32::new();
    txcrc.update(&prefix);
    let (mut pieces, mut cur) = emit_records(start, prefix, records, &headers, &mut txcrc);
    let end = TxEnd {
        n_records,
        total_len,
        tid,
        tx_crc: 0,
    };
    let eb = end.encode(txcrc);
    let end = TxEnd::decode(&eb, end_at, None)?;
    cur.extend_from_slice(&eb);
    pieces.push(TxPiece::Own(cur));
    debug_assert_eq!(total_of(&pieces), total_len);
    Ok(EncodedTx {
        pieces,
        total_len,
        record_offsets,
        headers,
        end,
    })
}

/// Lay out `records` from file offset `pos` on: their headers as written (flags, pad),
/// the offset of each, and the offset where the trailer goes.
fn layout_records(
    mut pos: u64,
    records: &[RecordIn<'_>],
) -> Result<(Vec<RecordHeader>, Vec<u64>, u64)> {
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
    Ok((headers, record_offsets, pos))
}

/// The transaction header with its CRC, the user name and description, and zeros to
/// `h.prefix_len()`.
fn encode_prefix(h: &TxHeader, user: &str, desc: &str) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    w.u8(TAG_TX);
    w.u8(RECORD_VERSION);
    w.u16(0);
    w.u32(h.n_records);
    w.u64(h.total_len);
    w.u64(h.tid.0);
    w.u64(h.wall_ns);
    w.u16(h.user_len);
    w.u16(0);
    w.u32(h.desc_len);
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
    Ok(w.buf)
}

/// The pieces of the records laid out as `headers` of a transaction at `start` whose
/// first bytes are `prefix`, and the bytes after the last piece not yet pushed (for the
/// trailer to follow). Adds the headers to `txcrc` (the transaction CRC covers the
/// prefix and the record headers).
fn emit_records<'a>(
    start: u64,
    prefix: Vec<u8>,
    records: &[RecordIn<'a>],
    headers: &[RecordHeader],
    txcrc: &mut crate::verify::Crc32,
) -> (Vec<TxPiece<'a>>, Vec<u8>) {
    let mut pieces = Vec::new();
    let mut cur = prefix;
    for (rec, rh) in records.iter().zip(headers) {
        let hb = rh.encode();
        txcrc.update(&hb);
        cur.extend_from_slice(&hb);
        if let Some(c) = rec.page_crcs {
            pieces.push(TxPiece::Own(std::mem::take(&mut cur)));
            pieces.push(match c {
                TableSrc::Crcs(c) => TxPiece::Table(c),
                TableSrc::File(r, _) => TxPiece::Copy(r),
            });
        }
        // Padding: zeros to the next page, then whole pages as a hole (never written:
        // an aligned payload's padding takes no disk blocks).
        let at = start + total_of(&pieces) + cur.len() as u64;
        let zeros = (PAGE as u64 - at % PAGE as u64) % PAGE as u64;
        let zeros = zeros.min(u64::from(rh.pad));
        cur.resize(cur.len() + usize::try_from(zeros).unwrap_or(0), 0);
        let hole = u64::from(rh.pad) - zeros;
        if hole > 0 {
            pieces.push(TxPiece::Own(std::mem::take(&mut cur)));
            pieces.push(TxPiece::Hole(hole));
        }
        if !rec.payload.is_empty() {
            pieces.push(TxPiece::Own(std::mem::take(&mut cur)));
            pieces.push(match rec.payload {
                PayloadSrc::Mem(b) => TxPiece::Borrowed(b),
                PayloadSrc::File(r) => TxPiece::Copy(r),
            });
        }
        let tail = rh.span() - rh.payload_rel() - u64::from(rh.stored_len);
        cur.resize(cur.len() + usize::try_from(tail).unwrap_or(0), 0);
    }
    (pieces, cur)
}
