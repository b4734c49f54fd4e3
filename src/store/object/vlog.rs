//! The virtual log: the bytes of an object-store database seen as one wdb log file
//! (storage-format.md §12.1). Offset 0 holds the header object; commit object `t`
//! places transaction `t` at `start..start + total_len`, right after commit `t − 1`.
//! [`VirtualLog`] implements [`LogIo`] over it, so the log, index, checkpoint, read
//! paths and fsck of a file work unchanged on it; it serves
//!
//! - inline bytes (headers, page CRC tables, small payloads) from the commit objects,
//!   kept in memory once loaded (from the cache or the store);
//! - payloads from data objects, fetched whole, checked (trailer, CRC) and kept in the
//!   local cache ([`Cache`]) as sparse files at their virtual offsets, so that
//!   [`LogIo::map_fd`] can hand a cached raw block to virtmem exactly like a raw block of
//!   a local log. A run of misses on consecutive data objects (a scan) starts
//!   background fetches of the next ones.
//!
//! Errors from here are `wdb` errors carried through `io::Error` (the log unwraps
//! them): `Corruption` naming the object key, `SnapshotGone` for a data object that
//! retention collected.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use super::cache::Cache;
use super::layout::{self, CommitObject, Segment};
use super::remote::Remote;
use crate::log::io::{write_gathered_at, write_in_pieces, Keep, LogIo, MapFile};
use crate::store::ckpt::LazyCheckpoint;
use crate::verify::{self, BootTable};
use crate::{Error, Result, Tid};

/// Data bytes fetched ahead of a scan's misses, at most. With [`PREFETCH_OBJECTS`]:
/// a cold 512 MiB scan on the loopback gateway runs at 0.32–0.37 GB/s with 48 MiB and
/// 12, 0.27–0.31 GB/s with 32 MiB and 8 (seven alternating rounds each); a fetch
/// waits for its cache file's `fdatasync` (6–8 ms a block there), so more must be in
/// flight than the network alone needs. 96 MiB and 24 ran 7 % faster (median 0.45
/// against 0.42 GB/s, seven alternating rounds) but peaked at 317–340 MiB at a 256 MiB
/// budget against 306–317 (three rounds on a slower gateway), over budget + 64 MiB.
/// 64 MiB and 16 ran at 0.84× parallel range GETs against 0.80× (medians of sixteen
/// alternating rounds) and peaked at 296–318 MiB against 294–310, but with one core
/// kept busy by another process at 307–328 against 302–314: over the bound again. The
/// memory beyond the budget is the bodies in flight and the allocator's keeping of
/// their freed buffers (docs/object-storage.md, "Peak memory of a cold scan").
const PREFETCH_BYTES: u64 = 48 << 20;
/// Data objects fetched at once in the background, at most: the bodies held in memory
/// while they are checked and written.
const PREFETCH_OBJECTS: usize = 12;
/// Commit objects loaded ahead of a scan of whole commits, at most.
const PREFETCH_COMMITS: u64 = 8;
/// A whole commit's blob (its transaction) is kept in memory only up to this size;
/// larger ones are read from their cache file.
const BLOB_IN_MEMORY: usize = 256 << 10;

/// A commit object with the virtual offset of each segment.
#[derive(Debug)]
pub struct Loaded {
    /// The object (the blob of a large whole commit is dropped: see `in_memory`).
    pub obj: CommitObject,
    /// Virtual offset of each segment.
    pub seg_at: Vec<u64>,
    /// Is `obj.blob` held? (Else it is read from the commit's cache file.)
    pub in_memory: bool,
}

impl Loaded {
    /// Index the segments of `obj`; with `cached`, a large whole commit's blob is
    /// dropped from memory (its cache file holds it).
    pub fn new(mut obj: CommitObject, cached: bool) -> Loaded {
        let in_memory = !(cached
            && obj.is_whole()
            && (obj.blob.len() > BLOB_IN_MEMORY || obj.blob.len() as u64 != obj.total_len));
        if !in_memory {
            obj.blob = Vec::new();
        }
        let mut at = obj.start;
        let seg_at = obj
            .segments
            .iter()
            .map(|s| {
                let a = at;
                at += s.len();
                a
            })
            .collect();
        Loaded {
            obj,
            seg_at,
            in_memory,
        }
    }

    /// The segment holding virtual offset `pos` (index, its virtual offset).
    fn segment_at(&self, pos: u64) -> Option<(usize, u64)> {
        let i = self.seg_at.partition_point(|&a| a <= pos).checked_sub(1)?;
        let a = self.seg_at[i];
        (pos < a + self.obj.segments[i].len()).then_some((i, a))
    }
}

/// What one fetch of a data object gave.
#[derive(Debug, Clone)]
enum Fetched {
    /// In the cache, at its virtual offset.
    Cached(Arc<std::fs::File>),
    /// Too big for the cache: the payload itself.
    Memory(Bytes),
}

type FetchResult = std::result::Result<Fetched, (ErrKind, String)>;

#[derive(Debug, Clone, Copy)]
enum ErrKind {
    Corrupt,
    Gone(Tid),
    Io,
}

fn to_err(kind: ErrKind, s: String) -> Error {
    match kind {
        ErrKind::Corrupt => Error::corruption(0, s),
        ErrKind::Gone(tid) => Error::SnapshotGone { tid, why: s },
        ErrKind::Io => Error::Io(std::io::Error::other(s)),
    }
}

fn from_err(e: &Error) -> (ErrKind, String) {
    match e {
        Error::Corruption { what, .. } => (ErrKind::Corrupt, what.clone()),
        Error::SnapshotGone { tid, why } => (ErrKind::Gone(*tid), why.clone()),
        other => (ErrKind::Io, other.to_string()),
    }
}

/// A fetch in flight, waited for by every reader of the same object.
#[derive(Debug, Default)]
struct Inflight {
    done: Mutex<Option<FetchResult>>,
    cv: Condvar,
}

/// State shared by the virtual log, its storage and background fetches.
#[derive(Debug)]
pub struct Shared {
    /// The object store.
    pub remote: Remote,
    /// Key prefix (empty or ending in `/`).
    pub prefix: String,
    /// The local cache.
    pub cache: Cache,
    /// The header object's bytes (virtual offset 0).
    pub header: Vec<u8>,
    /// The virtual log's uuid.
    pub uuid: u64,
    /// Commit objects loaded, by start offset.
    pub commits: RwLock<BTreeMap<u64, Arc<Loaded>>>,
    /// End of the newest commit known (the virtual log's length).
    pub end: AtomicU64,
    /// Retention base: snapshots below are gone.
    pub base: AtomicU64,
    /// The checkpoint the index was opened from (finds commits older than the loaded ones).
    pub ckpt: RwLock<Option<Arc<LazyCheckpoint>>>,
    inflight: Mutex<HashMap<String, Arc<Inflight>>>,
    /// End of the last data object fetched on a miss (scan detection).
    last_miss_end: AtomicU64,
    /// Next virtual offset a background prefetch has reached.
    prefetched_to: AtomicU64,
    /// Newest tid known to be committed.
    pub known_tid: AtomicU64,
    /// Last commit object fetched from the store on a miss (scan detection).
    last_commit_miss: AtomicU64,
    /// Newest tid a background prefetch of commit objects has started.
    prefetched_tid: AtomicU64,
    /// `Verify::OncePerBoot` with a usable table: where fetched payloads are published
    /// as checked, and the key of their names.
    checks: Option<(Arc<BootTable>, verify::Holder)>,
}

impl Shared {
    /// Shared state over `remote`.
    pub fn new(
        remote: Remote,
        prefix: String,
        cache: Cache,
        (header, uuid): (Vec<u8>, u64),
        checks: Option<(Arc<BootTable>, verify::Holder)>,
    ) -> Shared {
        Shared {
            remote,
            prefix,
            cache,
            header,
            uuid,
            commits: RwLock::new(BTreeMap::new()),
            end: AtomicU64::new(crate::format::FILE_HEADER_SIZE),
            base: AtomicU64::new(0),
            ckpt: RwLock::new(None),
            inflight: Mutex::new(HashMap::new()),
            last_miss_end: AtomicU64::new(0),
            prefetched_to: AtomicU64::new(0),
            known_tid: AtomicU64::new(0),
            last_commit_miss: AtomicU64::new(0),
            prefetched_tid: AtomicU64::new(0),
            checks,
        }
    }

    /// Cache entry name of commit object `tid`.
    fn commit_entry(&self, tid: Tid) -> String {
        format!("c-{:016x}-{:016x}", self.uuid, tid.0)
    }

    /// Cache entry name of the data payload at virtual offset `at`.
    fn data_entry(&self, at: u64) -> String {
        format!("d-{:016x}-{at:016x}", self.uuid)
    }

    /// Commit object `tid`: from memory, the cache, or the store (then cached). Checked:
    /// CRC, uuid and tid.
    pub fn load_commit(self: &Arc<Self>, tid: Tid) -> Result<Arc<Loaded>> {
        if let Some(o) = self.cached_commit(tid) {
            return Ok(Arc::new(Loaded::new(o, true)));
        }
        // Misses on consecutive commits: a scan of whole commits; load the next ones.
        let prev = self.last_commit_miss.swap(tid.0, Ordering::AcqRel);
        if prev != 0 && tid.0 == prev + 1 {
            self.prefetch_commits(tid.0 + 1);
        }
        let key = layout::commit_key(&self.prefix, tid);
        let (b, o) = self.fetch_commit(tid, &key)?;
        let cached = self.cache_commit(&o, &b);
        Ok(Arc::new(Loaded::new(o, cached)))
    }

    /// Commit object `tid` from the cache; a bad entry is dropped. A whole commit's
    /// head only (its transaction stays in the cache file, read where needed); any
    /// other is read and checked whole (CRC, uuid, tid).
    pub fn cached_commit(&self, tid: Tid) -> Option<CommitObject> {
        let name = self.commit_entry(tid);
        let f = self.cache.get(&name)?;
        let key = layout::commit_key(&self.prefix, tid);
        let r = (|| -> Result<CommitObject> {
            // A whole commit is written at its virtual offset in a sparse file: skip the hole.
            let from = rustix::fs::seek(&*f, rustix::fs::SeekFrom::Data(0)).unwrap_or(0);
            let len = f.metadata()?.len();
            let mut head =
                vec![0u8; usize::try_from((len - from.min(len)).min(1 << 16)).unwrap_or(0)];
            f.read_exact_at(&mut head, from)?;
            // The head read reached the end of the file: it is the whole object.
            let all = from + head.len() as u64 == len;
            let skip = head.iter().position(|&x| x != 0).unwrap_or(0);
            let at = from + skip as u64;
            head.drain(..skip);
            if let Some(o) = CommitObject::decode_head(&head, &key)? {
                if o.is_whole()
                    && o.cache_offset() == at
                    && at + o.header_len() + o.total_len + 4 == len
                {
                    return Ok(o);
                }
            }
            if all {
                return CommitObject::decode(&head, &key);
            }
            let mut b = vec![0u8; usize::try_from(len - at).unwrap_or(0)];
            f.read_exact_at(&mut b, at)?;
            CommitObject::decode(&b, &key)
        })();
        match r {
            Ok(o) if o.tid == tid && o.uuid == self.uuid => Some(o),
            _ => {
                self.cache.remove(&name);
                None
            }
        }
    }

    /// Keep the bytes `b` of commit object `o` in the cache (best effort); true if it is.
    pub fn cache_commit(&self, o: &CommitObject, b: &[u8]) -> bool {
        let at = o.cache_offset();
        matches!(
            self.cache
                .insert(&self.commit_entry(o.tid), b.len() as u64, |f| f
                    .write_all_at(b, at)),
            Ok(Some(_))
        )
    }

    /// Keep `payload`, the payload of the data segment at virtual offset `at` that this
    /// process uploaded, in the cache (best effort); true if it is.
    pub fn cache_data(&self, at: u64, payload: &[u8]) -> bool {
        matches!(
            self.cache
                .insert(&self.data_entry(at), payload.len() as u64, |f| {
                    write_in_pieces(f, payload, at)
                }),
            Ok(Some(_))
        )
    }

    /// Read inline bytes `pos..pos + dst.len()` of whole commit `c`, whose blob is not in
    /// memory, from its cache file (the transaction at its virtual offsets); fetched
    /// again if the cache dropped it.
    fn read_inline(&self, c: &Loaded, pos: u64, dst: &mut [u8]) -> Result<()> {
        let name = self.commit_entry(c.obj.tid);
        for _ in 0..2 {
            if let Some(f) = self.cache.get(&name) {
                f.read_exact_at(dst, pos)?;
                return Ok(());
            }
            let key = layout::commit_key(&self.prefix, c.obj.tid);
            let (b, o) = self.fetch_commit(c.obj.tid, &key)?;
            if !self.cache_commit(&o, &b) {
                let s = usize::try_from(pos - o.start).unwrap_or(usize::MAX);
                let src = o
                    .blob
                    .get(s..s + dst.len())
                    .ok_or_else(|| Error::corruption(pos, format!("object {key}: short blob")))?;
                dst.copy_from_slice(src);
                return Ok(());
            }
        }
        Err(Error::Io(std::io::Error::other(format!(
            "object {}: the cache drops it as soon as it is written",
            layout::commit_key(&self.prefix, c.obj.tid)
        ))))
    }

    /// Load commit objects `from..` (up to [`PREFETCH_COMMITS`], not past the newest
    /// known) in the background, and the data objects they name.
    fn prefetch_commits(self: &Arc<Self>, from: u64) {
        let last = self.known_tid.load(Ordering::Acquire);
        let until = (from + PREFETCH_COMMITS).min(last + 1);
        let start = self
            .prefetched_tid
            .fetch_max(until, Ordering::AcqRel)
            .max(from);
        for t in start..until {
            let me = self.clone();
            self.remote.spawn(async move {
                let _ = tokio::task::spawn_blocking(move || {
                    if me.cached_commit(Tid(t)).is_some() {
                        return;
                    }
                    let key = layout::commit_key(&me.prefix, Tid(t));
                    if let Ok((b, o)) = me.fetch_commit(Tid(t), &key) {
                        me.cache_commit(&o, &b);
                    }
                })
                .await;
            });
        }
    }

    /// GET commit object `tid` and check it (fetched again, up to twice, when the body
    /// fails its check: it may have been cut in transit).
    pub fn fetch_commit(&self, tid: Tid, key: &str) -> Result<(Bytes, CommitObject)> {
        let mut attempt = 0;
        loop {
            let b = self
                .remote
                .get(key)?
                .ok_or_else(|| Error::corruption(0, format!("object {key} is missing")))?;
            match self.check_commit(&b, tid, key) {
                Ok(o) => return Ok((b, o)),
                Err(e) if attempt >= 2 => return Err(e),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "commit object failed its check; fetching it again")
                }
            }
            attempt += 1;
        }
    }

    /// Decode commit object bytes and check that they are commit `tid` of this log.
    pub fn check_commit(&self, b: &[u8], tid: Tid, key: &str) -> Result<CommitObject> {
        let o = CommitObject::decode(b, key)?;
        if o.tid != tid || o.uuid != self.uuid {
            return Err(Error::corruption(
                o.start,
                format!(
                    "object {key}: commit {} of log {:016x}, expected commit {tid} of log {:016x}",
                    o.tid, o.uuid, self.uuid
                ),
            ));
        }
        Ok(o)
    }

    /// Remember a commit known to be committed.
    pub fn add_commit(&self, l: Arc<Loaded>) {
        let end = l.obj.end();
        self.known_tid.fetch_max(l.obj.tid.0, Ordering::AcqRel);
        self.base.fetch_max(l.obj.base_tid.0, Ordering::AcqRel);
        self.commits.write().insert(l.obj.start, l);
        self.end.fetch_max(end, Ordering::AcqRel);
    }

    /// The commit holding virtual offset `pos`, loading it if needed (older commits are
    /// found through the checkpoint's transaction entries).
    fn commit_at(self: &Arc<Self>, pos: u64) -> Result<Arc<Loaded>> {
        if let Some((_, l)) = self.commits.read().range(..=pos).next_back() {
            if pos < l.obj.end() {
                return Ok(l.clone());
            }
        }
        let tid = self.tid_at(pos)?;
        let l = self.load_commit(tid)?;
        if !(l.obj.start..l.obj.end()).contains(&pos) {
            return Err(Error::corruption(
                pos,
                format!(
                    "object {}: holds {}..{}, not virtual offset {pos}",
                    layout::commit_key(&self.prefix, tid),
                    l.obj.start,
                    l.obj.end()
                ),
            ));
        }
        self.commits.write().insert(l.obj.start, l.clone());
        Ok(l)
    }

    /// The tid of the commit holding `pos`, from the checkpoint's transaction entries.
    pub fn tid_at(&self, pos: u64) -> Result<Tid> {
        let ck = self.ckpt.read().clone();
        let none = || Error::corruption(pos, "no commit holds this virtual log offset");
        let Some(c) = ck else {
            return Err(none());
        };
        let (mut lo, mut hi) = (0, c.h.n_tx);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = c.tx(mid)?;
            if t.off + t.len <= pos {
                lo = mid + 1;
            } else if t.off > pos {
                hi = mid;
            } else {
                return Ok(t.tid);
            }
        }
        Err(none())
    }

    /// Read virtual bytes `off..off + buf.len()`.
    pub fn read(self: &Arc<Self>, buf: &mut [u8], off: u64) -> Result<()> {
        let end = off
            .checked_add(buf.len() as u64)
            .ok_or_else(|| Error::corruption(off, "read past 2^64"))?;
        if end > self.end.load(Ordering::Acquire) {
            return Err(Error::Io(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )));
        }
        let mut pos = off;
        while pos < end {
            let dst = &mut buf[(pos - off) as usize..];
            let hs = self.header.len() as u64;
            if pos < hs {
                let n = (hs - pos).min(dst.len() as u64) as usize;
                dst[..n].copy_from_slice(&self.header[pos as usize..pos as usize + n]);
                pos += n as u64;
                continue;
            }
            let c = self.commit_at(pos)?;
            let (i, at) = c
                .segment_at(pos)
                .ok_or_else(|| Error::corruption(pos, "no segment holds this offset"))?;
            let seg = c.obj.segments[i];
            let within = pos - at;
            let n = (seg.len() - within).min(dst.len() as u64) as usize;
            match seg {
                Segment::Inline { at: b, .. } if c.in_memory => {
                    let s = (b + within) as usize;
                    dst[..n].copy_from_slice(&c.obj.blob[s..s + n]);
                }
                Segment::Inline { .. } => self.read_inline(&c, pos, &mut dst[..n])?,
                Segment::Zeros { .. } => dst[..n].fill(0),
                Segment::Data { writer, seq, len } => {
                    match self.fetch_data(&c, writer, seq, at, len, true)? {
                        Fetched::Cached(f) => f.read_exact_at(&mut dst[..n], pos)?,
                        Fetched::Memory(b) => {
                            dst[..n].copy_from_slice(&b[within as usize..within as usize + n])
                        }
                    }
                }
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// The data object of segment (`writer`, `seq`) at virtual offset `at`: from the
    /// cache, or fetched (once, whatever the number of readers), checked and cached.
    fn fetch_data(
        self: &Arc<Self>,
        c: &Loaded,
        writer: u64,
        seq: u64,
        at: u64,
        len: u64,
        wait: bool,
    ) -> Result<Fetched> {
        let name = self.data_entry(at);
        if let Some(f) = self.cache.get(&name) {
            return Ok(Fetched::Cached(f));
        }
        let (fl, mine) = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&name) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Inflight::default());
                    inflight.insert(name.clone(), f.clone());
                    (f, true)
                }
            }
        };
        if !mine {
            if !wait {
                return Err(Error::Busy("fetch in flight".into()));
            }
            let mut d = fl.done.lock();
            while d.is_none() {
                fl.cv.wait(&mut d);
            }
            return d
                .clone()
                .unwrap_or(Err((ErrKind::Io, "fetch".into())))
                .map_err(|(k, s)| to_err(k, s));
        }
        // A miss right after the previous one's object: a scan; fetch ahead of it.
        let prev = self.last_miss_end.swap(at + len, Ordering::AcqRel);
        if wait && prev != 0 && at >= prev && at - prev <= 64 << 20 {
            self.prefetch(at + len);
        }
        let key = layout::data_key(&self.prefix, writer, seq);
        // A body that fails its check may have been cut in transit: fetch it again
        // before calling the object corrupt.
        let mut r = Err(Error::Busy("no fetch".into()));
        for attempt in 0..3 {
            r = self.fetch_to_cache(&key, &name, at, len, c.obj.tid);
            match &r {
                Err(Error::Corruption { what, .. }) if attempt < 2 && !what.contains("missing") => {
                    tracing::warn!(key = %key, error = %what, "data object failed its check; fetching it again");
                }
                _ => break,
            }
        }
        self.finish(&name, &fl, r.as_ref().map(|f| f.clone()).map_err(from_err));
        r
    }

    /// Fetch data object `key` (payload of `len` bytes at virtual offset `at`, of
    /// commit `tid`) into cache entry `name`, streamed: its payload written to a new
    /// cache file as it arrives while its CRC is computed, the file kept only if the
    /// trailer and CRC match (`Cache::insert` drops it otherwise). An object the cache
    /// cannot hold, or a file the cache failed to write or keep (a full disk), is
    /// fetched whole and served from memory (`store_data`).
    fn fetch_to_cache(&self, key: &str, name: &str, at: u64, len: u64, tid: Tid) -> Result<Fetched> {
        let mut outcome: Option<Result<Option<u32>>> = None;
        let mut write_failed = false;
        let r = self.cache.insert(name, len, |f| {
            let res = self.stream_data(f, key, at, len, &mut write_failed);
            let ok = matches!(res, Ok(Some(_)));
            outcome = Some(res);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::other("the fetch failed"))
            }
        });
        match (r, outcome) {
            (Ok(Some(f)), Some(Ok(Some(crc)))) => {
                self.publish_checked(&f, at, len, crc);
                Ok(Fetched::Cached(f))
            }
            // Cached meanwhile by another fetch of the same entry.
            (Ok(Some(f)), None) => Ok(Fetched::Cached(f)),
            (_, Some(Ok(None))) => self.store_data(None, key, name, at, len, tid),
            (_, Some(Err(e))) if !write_failed => Err(match e {
                Error::Corruption { what, .. } => Error::corruption(at, what),
                e => e,
            }),
            // Too big for the cache, or its file could not be written or kept.
            _ => {
                let b = self.remote.get(key)?;
                self.store_data(b, key, name, at, len, tid)
            }
        }
    }

    /// Stream data object `key` into cache file `f` (see `fetch_to_cache`): the
    /// payload's CRC, or None if the object is missing; `write_failed` is set when
    /// writing `f` failed (the error returned). The payload is written in pieces of
    /// `WRITE_PIECE` at their virtual offsets, as `write_in_pieces` does (one folio per
    /// piece), each gathered from the received buffers themselves (`pwritev`): no copy
    /// and no buffer of its own, whose fresh pages cost a fault each for every fetch.
    fn stream_data(
        &self,
        f: &File,
        key: &str,
        at: u64,
        len: u64,
        write_failed: &mut bool,
    ) -> Result<Option<u32>> {
        use super::remote::Piece;
        use crate::log::io::WRITE_PIECE;
        use crate::verify::Crc32;
        let piece = usize::try_from(len).unwrap_or(usize::MAX).min(WRITE_PIECE);
        let mut trailer = Vec::new();
        // Received payload bytes not yet written (`pos - written` of them), as they came.
        let mut pending = Vec::<Bytes>::new();
        // Payload bytes received, of them written to `f`, their CRC.
        let (mut pos, mut written, mut crc) = (0u64, 0u64, Crc32::new());
        let found = self.remote.get_streamed(key, |p| {
            let b = match p {
                Piece::Start => {
                    trailer.clear();
                    pending.clear();
                    (pos, written, crc) = (0, 0, Crc32::new());
                    return Ok(());
                }
                Piece::Bytes(b) => b,
            };
            let n = usize::try_from(len - pos).unwrap_or(usize::MAX).min(b.len());
            if trailer.len() + (b.len() - n) > layout::DATA_TRAILER {
                return Err(Error::corruption(
                    at,
                    format!("object {key}: longer than its payload of {len} bytes and trailer"),
                ));
            }
            trailer.extend_from_slice(&b[n..]);
            let mut rest = b.slice(..n);
            crc.update(&rest);
            while !rest.is_empty() {
                let filled = (pos - written) as usize;
                let k = rest.len().min(piece - filled);
                pending.push(rest.split_to(k));
                pos += k as u64;
                if filled + k == piece {
                    write_gathered_at(f, &pending, at + written)
                        .inspect_err(|_| *write_failed = true)?;
                    written = pos;
                    pending.clear();
                }
            }
            Ok(())
        })?;
        if !found {
            return Ok(None);
        }
        write_gathered_at(f, &pending, at + written).inspect_err(|_| *write_failed = true)?;
        layout::check_trailer(&trailer, pos, crc.finalize(), len, key).map(Some)
    }

    /// Check a fetched data object and put its payload in the cache.
    fn store_data(
        &self,
        b: Option<Bytes>,
        key: &str,
        name: &str,
        at: u64,
        len: u64,
        tid: Tid,
    ) -> Result<Fetched> {
        let Some(b) = b else {
            let base = Tid(self.base.load(Ordering::Acquire));
            if tid < base {
                return Err(Error::SnapshotGone {
                    tid,
                    why: format!(
                        "object {key} was collected (snapshots before {base} are not kept)"
                    ),
                });
            }
            return Err(Error::corruption(at, format!("object {key} is missing")));
        };
        let (payload, crc) = layout::check_data(&b, len, key).map_err(|e| match e {
            Error::Corruption { what, .. } => Error::corruption(at, what),
            e => e,
        })?;
        match self
            .cache
            // In pieces, as the log writes payloads: one write per 2 MiB-aligned block
            // builds a 2 MiB page-cache folio, slowly.
            .insert(name, len, |f| write_in_pieces(f, payload, at))
        {
            Ok(Some(f)) => {
                self.publish_checked(&f, at, len, crc);
                Ok(Fetched::Cached(f))
            }
            Ok(None) => Ok(Fetched::Memory(b.slice(..payload.len()))),
            Err(e) => {
                tracing::warn!(error = %e, "could not cache a data object; serving it from memory");
                Ok(Fetched::Memory(b.slice(..payload.len())))
            }
        }
    }

    /// `Verify::OncePerBoot`: the payload of `len` bytes at `at` that cache file `f`
    /// now holds matched `crc` before it was written: name that file's version checked
    /// in the per-boot table, so that no reader of this boot checks it again.
    fn publish_checked(&self, f: &File, at: u64, len: u64, crc: u32) {
        let Some((table, holder)) = &self.checks else {
            return;
        };
        let file = f.metadata().ok().map(|md| verify::inode_of(&md));
        if let Some(id) = holder.name(file) {
            table.insert(
                &id,
                &verify::Stored {
                    offset: at,
                    len,
                    crc,
                },
            );
        }
    }

    fn finish(&self, name: &str, fl: &Inflight, r: FetchResult) {
        *fl.done.lock() = Some(r);
        fl.cv.notify_all();
        self.inflight.lock().remove(name);
    }

    /// Fetch in the background the data objects after virtual offset `from`, up to
    /// [`PREFETCH_BYTES`] (commit objects on the way are loaded too).
    fn prefetch(self: &Arc<Self>, from: u64) {
        let reached = self.prefetched_to.load(Ordering::Acquire);
        let from = from.max(reached);
        let until = from + PREFETCH_BYTES;
        if from >= self.end.load(Ordering::Acquire) {
            return;
        }
        self.prefetched_to.fetch_max(until, Ordering::AcqRel);
        let me = self.clone();
        // Walking the commits may read commit objects: do it off the caller's thread.
        std::thread::spawn(move || {
            let mut todo = Vec::new();
            let mut pos = from;
            let end = me.end.load(Ordering::Acquire);
            while pos < until.min(end) && todo.len() < 64 {
                let Ok(c) = me.commit_at(pos) else { return };
                let Some((mut i, mut at)) = c.segment_at(pos) else {
                    return;
                };
                while i < c.obj.segments.len() && at < until {
                    if let Segment::Data { writer, seq, len } = c.obj.segments[i] {
                        todo.push((c.clone(), writer, seq, at, len));
                    }
                    at += c.obj.segments[i].len();
                    i += 1;
                }
                pos = c.obj.end();
            }
            let sem = Arc::new(tokio::sync::Semaphore::new(PREFETCH_OBJECTS));
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            for (c, writer, seq, at, len) in todo {
                let (me2, sem, tx) = (me.clone(), sem.clone(), tx.clone());
                me.remote.spawn(async move {
                    let me = me2;
                    let Ok(_permit) = sem.acquire_owned().await else {
                        return;
                    };
                    let me2 = me.clone();
                    // The fetch itself blocks (cache file writes): off the runtime's
                    // worker threads.
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = me2.fetch_data(&c, writer, seq, at, len, false);
                    })
                    .await;
                    drop(tx);
                });
            }
            drop(tx);
            let _ = rx.recv();
        });
    }

    /// Zero-copy reads: the cache file holding `off..off + len`, when it is one data
    /// object or one whole commit object; None otherwise. If that object is not cached:
    /// with `fetch` it is fetched (or its fetch in flight awaited) and cached on this
    /// thread, without it None is returned at once and the object fetched in the
    /// background (no remote request on the caller's thread: at most a commit object
    /// read from the local cache). A fetch that fails is None: the caller's read of the
    /// same bytes meets the error.
    fn map(self: &Arc<Self>, off: u64, len: u64, fetch: bool) -> Option<MapFile> {
        // A cached data object that starts at `off`: found by its name alone, with no
        // commit object read. Data entries are written only for committed objects, at
        // their virtual offsets, which are never reused (the virtual log only grows).
        if let Some(f) = self.cache.get(&self.data_entry(off)) {
            if let Ok(md) = f.metadata() {
                if md.len() >= off.saturating_add(len) {
                    return Some(cache_map(f, Some(&md)));
                }
            }
        }
        let loaded = self
            .commits
            .read()
            .range(..=off)
            .next_back()
            .map(|(_, c)| c.clone())
            .filter(|c| off < c.obj.end());
        let loaded = loaded.or_else(|| {
            // Not loaded (a commit the checkpoint covers): from the cache if it holds it,
            // a local read.
            let o = self.cached_commit(self.tid_at(off).ok()?)?;
            let l = Arc::new(Loaded::new(o, true));
            (l.obj.start..l.obj.end()).contains(&off).then(|| {
                self.commits.write().insert(l.obj.start, l.clone());
                l
            })
        });
        let c = match loaded {
            Some(c) => c,
            None if fetch => self.commit_at(off).ok()?,
            None => {
                // Not in the cache either: load it in the background.
                if let Ok(tid) = self.tid_at(off) {
                    let me = self.clone();
                    self.remote.spawn(async move {
                        let _ = tokio::task::spawn_blocking(move || {
                            if let Ok(l) = me.load_commit(tid) {
                                me.commits.write().insert(l.obj.start, l);
                            }
                        })
                        .await;
                    });
                }
                return None;
            }
        };
        let (i, at) = c.segment_at(off)?;
        let seg = c.obj.segments[i];
        if off + len > at + seg.len() {
            return None;
        }
        let (name, data) = match seg {
            Segment::Data { writer, seq, len } => (self.data_entry(at), Some((writer, seq, len))),
            Segment::Inline { .. } if c.obj.is_whole() => (self.commit_entry(c.obj.tid), None),
            _ => return None,
        };
        let file = match self.cache.get(&name) {
            Some(f) => f,
            None if fetch => {
                self.fetch_entry(&c, at, data, true);
                self.cache.get(&name)?
            }
            None => {
                let me = self.clone();
                self.remote.spawn(async move {
                    let _ = tokio::task::spawn_blocking(move || {
                        me.fetch_entry(&c, at, data, false);
                    })
                    .await;
                });
                return None;
            }
        };
        let md = file.metadata().ok();
        Some(cache_map(file, md.as_ref()))
    }

    /// Fetch into the cache the object behind a segment of commit `c` at virtual
    /// offset `at`: data object `data` (writer, seq, length), or the whole commit
    /// object. Best effort: a failure leaves it uncached. `wait`: wait for a fetch of
    /// the same object already in flight rather than return.
    fn fetch_entry(self: &Arc<Self>, c: &Loaded, at: u64, data: Option<(u64, u64, u64)>, wait: bool) {
        match data {
            Some((writer, seq, len)) => {
                let _ = self.fetch_data(c, writer, seq, at, len, wait);
            }
            None => {
                let key = layout::commit_key(&self.prefix, c.obj.tid);
                if let Ok((b, o)) = self.fetch_commit(c.obj.tid, &key) {
                    self.cache_commit(&o, &b);
                }
            }
        }
    }
}

/// [`LogIo`] over the virtual log of an object-store database (read-only: commits go
/// through the storage's commit protocol, not through writes to the log).
#[derive(Debug)]
pub struct VirtualLog(pub Arc<Shared>);

/// A cache file to map, named in the per-boot table by its metadata (a file without
/// metadata is mapped all the same, but named nowhere).
fn cache_map(file: Arc<File>, md: Option<&std::fs::Metadata>) -> MapFile {
    MapFile {
        fd: file.as_raw_fd(),
        cache_file: md.map(crate::verify::inode_of),
        keep: Some(file as Keep),
    }
}

fn wrap(e: Error) -> std::io::Error {
    match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => e,
        e => std::io::Error::other(e),
    }
}

impl LogIo for VirtualLog {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.0.read(buf, off).map_err(wrap)
    }
    fn write_at(&self, _buf: &[u8], _off: u64) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "the virtual log of an object-store database is not written in place",
        ))
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.end.load(Ordering::Acquire))
    }
    fn truncate(&self, _len: u64) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "the virtual log of an object-store database is never truncated",
        ))
    }
    fn map_fd(&self, off: u64, len: u64, fetch: bool) -> Option<MapFile> {
        self.0.map(off, len, fetch)
    }
    /// Every cache file is written after its writer checked the bytes it writes: a
    /// fetched data object against its CRC (`store_data`), a fetched commit object
    /// against its own (`check_commit`), or the writer's own commit (`cache_commit`).
    fn in_cache_files(&self) -> bool {
        true
    }
    fn base_tid(&self) -> Option<Tid> {
        Some(Tid(self.0.base.load(Ordering::Acquire)))
    }
}
