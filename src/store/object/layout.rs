//! The bytes of an object-store database (storage-format.md §12): object keys, the
//! commit object that places a transaction in the virtual log, and the data object
//! trailer. Pure functions, no I/O; decoders never panic and bound every count by the
//! object's length before using it. Errors name the object key.

use crate::{Error, Result, Tid};

/// Magic of a commit object.
pub const COMMIT_MAGIC: &[u8; 8] = b"wdb-cmt\n";
/// Version of the commit object layout.
pub const COMMIT_VERSION: u32 = 1;
/// Bytes of a commit object's fixed header.
pub const COMMIT_HEADER: usize = 80;
/// Bytes of one segment entry.
pub const SEGMENT_SIZE: usize = 32;
/// Magic at the end of a data object.
pub const DATA_MAGIC: &[u8; 4] = b"wdbD";
/// Bytes of a data object's trailer.
pub const DATA_TRAILER: usize = 16;
/// Payloads at least this long go to their own data object; shorter ones are inline.
pub const INLINE_MAX: usize = 64 << 10;
/// Zero runs at least this long inside headers and padding are stored as a zeros segment.
pub const ZERO_RUN: usize = 4096;
/// A commit whose payloads total at most this is one object: its blob is the whole
/// transaction (one PUT, no data objects). Larger payloads go to data objects, so that
/// retention can delete what dropped versions hold (commit objects are kept).
pub const WHOLE_MAX: u64 = 64 << 10;

/// Key of the virtual log's header object.
pub fn header_key(prefix: &str) -> String {
    format!("{prefix}wdb/header")
}
/// Prefix of the commit objects.
pub fn commit_dir(prefix: &str) -> String {
    format!("{prefix}wdb/c/")
}
/// Key of the commit object of `tid`.
pub fn commit_key(prefix: &str, tid: Tid) -> String {
    format!("{prefix}wdb/c/{:016x}", tid.0)
}
/// Prefix of the checkpoint objects.
pub fn checkpoint_dir(prefix: &str) -> String {
    format!("{prefix}wdb/k/")
}
/// Key of the checkpoint object covering commits up to `tid`, with retention base `base`.
pub fn checkpoint_key(prefix: &str, tid: Tid, base: Tid) -> String {
    format!("{prefix}wdb/k/{:016x}-{:016x}", tid.0, base.0)
}
/// Prefix of the data objects.
pub fn data_dir(prefix: &str) -> String {
    format!("{prefix}wdb/d/")
}
/// Key of data object `seq` of writer `writer`.
pub fn data_key(prefix: &str, writer: u64, seq: u64) -> String {
    format!("{prefix}wdb/d/{writer:016x}-{seq:016x}")
}

fn hex_u64(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok())?
}

/// The tid of a commit object key's last segment (`…/c/<16 hex>`).
pub fn parse_commit_name(name: &str) -> Option<Tid> {
    hex_u64(name.rsplit('/').next()?).map(Tid)
}
/// (tid, base) of a checkpoint object key's last segment (`…/k/<16 hex>-<16 hex>`).
pub fn parse_checkpoint_name(name: &str) -> Option<(Tid, Tid)> {
    let (t, b) = name.rsplit('/').next()?.split_once('-')?;
    Some((Tid(hex_u64(t)?), Tid(hex_u64(b)?)))
}
/// (writer, seq) of a data object key's last segment (`…/d/<16 hex>-<16 hex>`).
pub fn parse_data_name(name: &str) -> Option<(u64, u64)> {
    let (w, s) = name.rsplit('/').next()?.split_once('-')?;
    Some((hex_u64(w)?, hex_u64(s)?))
}

/// One piece of a transaction's bytes in the virtual log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// `len` bytes of the commit object's blob, from `at`.
    Inline { at: u64, len: u64 },
    /// `len` zero bytes.
    Zeros { len: u64 },
    /// The payload of data object (`writer`, `seq`), `len` bytes.
    Data { writer: u64, seq: u64, len: u64 },
}

impl Segment {
    /// Its length in the virtual log.
    pub fn len(&self) -> u64 {
        match *self {
            Segment::Inline { len, .. } | Segment::Zeros { len } | Segment::Data { len, .. } => len,
        }
    }
    /// Is it empty?
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A commit object: transaction `tid` occupies the virtual log's bytes
/// `start..start + total_len`, given by `segments` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitObject {
    /// uuid of the virtual log (its header's).
    pub uuid: u64,
    /// The commit's tid (= its number).
    pub tid: Tid,
    /// Virtual offset of the transaction header (= the previous commit's end).
    pub start: u64,
    /// Length of the transaction in the virtual log.
    pub total_len: u64,
    /// Retention: snapshots below this tid are gone from here on (0: no change).
    pub base_tid: Tid,
    /// The writer's random id.
    pub writer: u64,
    /// The writer's attempt number: tells a writer its own object from another's.
    pub nonce: u64,
    /// The pieces, in order; their lengths sum to `total_len`.
    pub segments: Vec<Segment>,
    /// Bytes of the inline segments.
    pub blob: Vec<u8>,
}

fn bad(key: &str, what: impl std::fmt::Display) -> Error {
    Error::corruption(0, format!("object {key}: {what}"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

impl CommitObject {
    /// The object's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let n = u32::try_from(self.segments.len())
            .map_err(|_| Error::InvalidArgument("too many segments".into()))?;
        let blen = u32::try_from(self.blob.len())
            .map_err(|_| Error::InvalidArgument("commit object blob over 4 GiB".into()))?;
        let mut b = Vec::with_capacity(
            COMMIT_HEADER + SEGMENT_SIZE * self.segments.len() + self.blob.len() + 4,
        );
        b.extend_from_slice(COMMIT_MAGIC);
        b.extend_from_slice(&COMMIT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for v in [
            self.uuid,
            self.tid.0,
            self.start,
            self.total_len,
            self.base_tid.0,
            self.writer,
            self.nonce,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&blen.to_le_bytes());
        debug_assert_eq!(b.len(), COMMIT_HEADER);
        for s in &self.segments {
            let (kind, len, a, c) = match *s {
                Segment::Inline { at, len } => (1u8, len, at, 0),
                Segment::Zeros { len } => (2, len, 0, 0),
                Segment::Data { writer, seq, len } => (3, len, writer, seq),
            };
            b.push(kind);
            b.extend_from_slice(&[0u8; 7]);
            for v in [len, a, c] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.blob);
        let crc = crate::verify::crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decode and check the commit object stored at `key`.
    pub fn decode(b: &[u8], key: &str) -> Result<CommitObject> {
        if b.len() < COMMIT_HEADER + 4 {
            return Err(bad(key, format!("truncated: {} bytes", b.len())));
        }
        let body = b.len() - 4;
        if crate::verify::crc32(&b[..body]) != u32_at(b, body) {
            return Err(bad(key, "CRC mismatch (corrupt or truncated)"));
        }
        if &b[..8] != COMMIT_MAGIC {
            return Err(bad(key, "not a commit object (magic)"));
        }
        if u32_at(b, 8) != COMMIT_VERSION || u32_at(b, 12) != 0 {
            return Err(bad(
                key,
                format!("unknown commit object version {} or flags", u32_at(b, 8)),
            ));
        }
        let n = u64::from(u32_at(b, 72));
        let blen = u64::from(u32_at(b, 76));
        let want = (COMMIT_HEADER as u64) + n * SEGMENT_SIZE as u64 + blen + 4;
        if want != b.len() as u64 {
            return Err(bad(
                key,
                format!(
                    "{n} segments and a blob of {blen} bytes in {} bytes",
                    b.len()
                ),
            ));
        }
        let seg_end = COMMIT_HEADER + SEGMENT_SIZE * n as usize;
        let mut segments = Vec::with_capacity(n as usize);
        let mut total = 0u64;
        for i in 0..n as usize {
            let s = &b[COMMIT_HEADER + i * SEGMENT_SIZE..][..SEGMENT_SIZE];
            if s[1..8].iter().any(|&x| x != 0) {
                return Err(bad(key, format!("segment {i}: nonzero reserved bytes")));
            }
            let (len, a, c) = (u64_at(s, 8), u64_at(s, 16), u64_at(s, 24));
            let seg = match s[0] {
                1 if c == 0 && a.checked_add(len).is_some_and(|e| e <= blen) => {
                    Segment::Inline { at: a, len }
                }
                2 if a == 0 && c == 0 => Segment::Zeros { len },
                3 if len <= 1 << 30 => Segment::Data {
                    writer: a,
                    seq: c,
                    len,
                },
                k => return Err(bad(key, format!("segment {i}: bad kind {k} or fields"))),
            };
            total = total
                .checked_add(len)
                .ok_or_else(|| bad(key, "segment lengths overflow"))?;
            segments.push(seg);
        }
        let o = CommitObject {
            uuid: u64_at(b, 16),
            tid: Tid(u64_at(b, 24)),
            start: u64_at(b, 32),
            total_len: u64_at(b, 40),
            base_tid: Tid(u64_at(b, 48)),
            writer: u64_at(b, 56),
            nonce: u64_at(b, 64),
            segments,
            blob: b[seg_end..body].to_vec(),
        };
        if total != o.total_len {
            return Err(bad(
                key,
                format!(
                    "segments of {total} bytes for a transaction of {}",
                    o.total_len
                ),
            ));
        }
        if o.start % crate::format::RECORD_ALIGN != 0 || o.start.checked_add(o.total_len).is_none()
        {
            return Err(bad(key, format!("bad start {}", o.start)));
        }
        Ok(o)
    }

    /// The head (fixed header and segment table, no blob, no CRC check) of a *whole*
    /// commit object whose first bytes are `head`: for a whole commit kept in the local
    /// cache, whose transaction is read from the cache file where needed (the cache
    /// syncs its files before they appear; the transaction's own CRCs are checked as
    /// for a log file). None if `head` is not the head of a whole commit.
    pub fn decode_head(head: &[u8], key: &str) -> Result<Option<CommitObject>> {
        let need = COMMIT_HEADER + SEGMENT_SIZE;
        if head.len() < need || u32_at(head, 72) != 1 {
            return Ok(None);
        }
        if &head[..8] != COMMIT_MAGIC || u32_at(head, 8) != COMMIT_VERSION || u32_at(head, 12) != 0
        {
            return Err(bad(key, "not a commit object (magic, version or flags)"));
        }
        let s = &head[COMMIT_HEADER..need];
        let total = u64_at(head, 40);
        let (len, a, c) = (u64_at(s, 8), u64_at(s, 16), u64_at(s, 24));
        if s[0] != 1 || s[1..8].iter().any(|&x| x != 0) || a != 0 || c != 0 || len != total {
            return Ok(None);
        }
        if u64::from(u32_at(head, 76)) != total {
            return Err(bad(key, "blob length does not match the transaction"));
        }
        let start = u64_at(head, 32);
        if start % crate::format::RECORD_ALIGN != 0 || start.checked_add(total).is_none() {
            return Err(bad(key, format!("bad start {start}")));
        }
        Ok(Some(CommitObject {
            uuid: u64_at(head, 16),
            tid: Tid(u64_at(head, 24)),
            start,
            total_len: total,
            base_tid: Tid(u64_at(head, 48)),
            writer: u64_at(head, 56),
            nonce: u64_at(head, 64),
            segments: vec![Segment::Inline { at: 0, len: total }],
            blob: Vec::new(),
        }))
    }

    /// Virtual offset just past the transaction.
    pub fn end(&self) -> u64 {
        self.start + self.total_len
    }

    /// Is the blob the whole transaction (one inline segment from blob offset 0)?
    pub fn is_whole(&self) -> bool {
        matches!(self.segments.as_slice(), [Segment::Inline { at: 0, len }] if *len == self.total_len)
    }

    /// Bytes before the blob in the encoded object.
    pub fn header_len(&self) -> u64 {
        (COMMIT_HEADER + SEGMENT_SIZE * self.segments.len()) as u64
    }

    /// Where the cache writes this object in its (sparse) file: for a whole commit, so
    /// that its blob — the transaction — sits at its virtual offsets (mappable like a
    /// log); otherwise at 0.
    pub fn cache_offset(&self) -> u64 {
        if self.is_whole() {
            self.start.saturating_sub(self.header_len())
        } else {
            0
        }
    }
}

/// Append `bytes` (headers and padding of a transaction) to `segs`/`blob`, long zero
/// runs as zeros segments.
pub fn push_own(segs: &mut Vec<Segment>, blob: &mut Vec<u8>, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        // Find the next zero run of at least ZERO_RUN bytes, on 8-byte steps.
        let mut j = i;
        let mut run_at = None;
        while j < bytes.len() {
            if bytes[j] == 0 {
                let e = bytes[j..]
                    .iter()
                    .position(|&x| x != 0)
                    .map_or(bytes.len(), |p| j + p);
                if e - j >= ZERO_RUN {
                    run_at = Some((j, e));
                    break;
                }
                j = e;
            } else {
                j += 1;
            }
        }
        let (lit_end, run) = match run_at {
            Some((a, e)) => (a, Some(e - a)),
            None => (bytes.len(), None),
        };
        if lit_end > i {
            push_inline(segs, blob, &bytes[i..lit_end]);
        }
        match run {
            Some(len) => {
                push_zeros(segs, len as u64);
                i = lit_end + len;
            }
            None => i = lit_end,
        }
    }
}

/// Append inline bytes, merging with a preceding inline segment.
pub fn push_inline(segs: &mut Vec<Segment>, blob: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let at = blob.len() as u64;
    blob.extend_from_slice(bytes);
    if let Some(Segment::Inline { at: a, len }) = segs.last_mut() {
        if *a + *len == at {
            *len += bytes.len() as u64;
            return;
        }
    }
    segs.push(Segment::Inline {
        at,
        len: bytes.len() as u64,
    });
}

/// Append a run of zeros, merging with a preceding zeros segment.
pub fn push_zeros(segs: &mut Vec<Segment>, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(Segment::Zeros { len: l }) = segs.last_mut() {
        *l += len;
        return;
    }
    segs.push(Segment::Zeros { len });
}

/// A data object's bytes: the payload, then its trailer (length, CRC, magic).
pub fn encode_data(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + DATA_TRAILER);
    b.extend_from_slice(payload);
    seal_data(b)
}

/// The data object of `payload`, its trailer appended in place.
pub fn seal_data(mut payload: Vec<u8>) -> Vec<u8> {
    let n = payload.len() as u64;
    let crc = crate::verify::crc32(&payload);
    payload.reserve_exact(DATA_TRAILER);
    payload.extend_from_slice(&n.to_le_bytes());
    payload.extend_from_slice(&crc.to_le_bytes());
    payload.extend_from_slice(DATA_MAGIC);
    payload
}

/// Check a data object's bytes (`want` payload bytes expected): its trailer and CRC.
/// Returns the payload and its CRC-32 (the data CRC of the record whose payload it is).
pub fn check_data<'a>(b: &'a [u8], want: u64, key: &str) -> Result<(&'a [u8], u32)> {
    let Some(body) = b.len().checked_sub(DATA_TRAILER) else {
        return Err(bad(key, format!("truncated: {} bytes", b.len())));
    };
    let crc = check_trailer(&b[body..], body as u64, crate::verify::crc32(&b[..body]), want, key)?;
    Ok((&b[..body], crc))
}

/// Check the trailer of a data object whose payload of `body` bytes has CRC-32 `crc`
/// (`want` payload bytes expected; `trailer` is what followed the payload, at most
/// [`DATA_TRAILER`] bytes): its magic, length and CRC. Returns the CRC.
pub fn check_trailer(trailer: &[u8], body: u64, crc: u32, want: u64, key: &str) -> Result<u32> {
    if trailer.len() != DATA_TRAILER {
        return Err(bad(
            key,
            format!("truncated: {} bytes", body + trailer.len() as u64),
        ));
    }
    if &trailer[12..16] != DATA_MAGIC {
        return Err(bad(key, "not a data object, or truncated (trailer magic)"));
    }
    let len = u64_at(trailer, 0);
    if len != body || len != want {
        return Err(bad(
            key,
            format!(
                "payload of {body} bytes, trailer says {len}, commit expects {want} (truncated?)"
            ),
        ));
    }
    if crc != u32_at(trailer, 8) {
        return Err(bad(key, "data CRC mismatch"));
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_object_round_trip_and_rejects_flips() {
        let mut segs = Vec::new();
        let mut blob = Vec::new();
        let mut own = vec![7u8; 100];
        own.extend_from_slice(&[0u8; 9000]);
        own.extend_from_slice(&[1u8; 20]);
        push_own(&mut segs, &mut blob, &own);
        segs.push(Segment::Data {
            writer: 5,
            seq: 9,
            len: 1 << 21,
        });
        let total = segs.iter().map(|s| s.len()).sum();
        let c = CommitObject {
            uuid: 11,
            tid: Tid(3),
            start: 8192,
            total_len: total,
            base_tid: Tid(0),
            writer: 5,
            nonce: 1,
            segments: segs,
            blob,
        };
        assert_eq!(c.segments.len(), 4);
        let b = c.encode().unwrap();
        assert_eq!(CommitObject::decode(&b, "k").unwrap(), c);
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x10;
            assert!(CommitObject::decode(&x, "k").is_err(), "flip at {i}");
        }
        for n in 0..b.len() {
            let e = CommitObject::decode(&b[..n], "some/key").unwrap_err();
            assert!(e.to_string().contains("some/key"), "{e}");
        }
    }

    #[test]
    fn data_object_checks() {
        let d = encode_data(b"hello world");
        assert_eq!(check_data(&d, 11, "k").unwrap().0, b"hello world");
        assert!(check_data(&d[..d.len() - 1], 11, "k").is_err());
        assert!(check_data(&d, 12, "k").is_err());
        let mut x = d.clone();
        x[0] ^= 1;
        assert!(check_data(&x, 11, "d/key")
            .unwrap_err()
            .to_string()
            .contains("d/key"));
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_commit_name(&commit_key("p/", Tid(42))), Some(Tid(42)));
        assert_eq!(
            parse_checkpoint_name(&checkpoint_key("", Tid(9), Tid(4))),
            Some((Tid(9), Tid(4)))
        );
        assert_eq!(parse_data_name(&data_key("x/", 3, 4)), Some((3, 4)));
        assert_eq!(parse_commit_name("wdb/c/xyz"), None);
    }
}
