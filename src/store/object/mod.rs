//! A database in an S3-compatible object store: the same MVCC, index, record codecs
//! and read paths as a local log, over a *virtual log* assembled from immutable
//! objects ([`vlog`]), with commits ordered by create-if-absent of numbered commit
//! objects and no lock service. Layout and protocol: storage-format.md §12 (normative)
//! and docs/object-storage.md.
//!
//! Commit (one writer, any number of machines):
//! ```text
//!   refresh (GET c/<last+1>, LIST if any) ─► conflict check ─► PUT data objects
//!        ▲                                                         │
//!        │ lost: another writer made commit t                      ▼
//!        └──────────── PUT c/<t> If-None-Match: * ◄── encode tx at the log's end (t = last + 1)
//!                            │ created
//!                            ▼
//!                        committed: in the index, visible to every next refresh
//! ```
//! Invariants:
//! 1. Commit object `t` exists only if commit objects `1..t` exist, and its transaction
//!    starts where commit `t − 1`'s ends (a writer creates `t` only after reading `t − 1`).
//! 2. Every data object a commit object names was completely written before the commit
//!    object was created; objects are never rewritten (keys are unique per writer).
//! 3. A writer re-encodes (never re-uploads data) when it loses a number, and checks
//!    conflicts against every commit up to the number it tries.
//! 4. Data objects are deleted only by compaction: those no kept snapshot needs, and
//!    those no commit names that are older than the grace period (a writer gives up a
//!    commit that takes longer than half of it).

pub mod cache;
pub mod layout;
pub mod remote;
pub mod vlog;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use parking_lot::Mutex;

use super::compact::CompactReport;
use super::encode::Payload;
use super::fsck::FsckReport;
use super::storage::Storage;
use super::{encode_commit, now_ns, CommitRequest, Gen, Index, Store, StoreOptions};
use crate::format::{self, FileHeader, Key, TxPiece};
use crate::log::lock::LockFile;
use crate::log::Log;
use crate::{Error, Result, Tid};
use cache::Cache;
use layout::{CommitObject, Segment};
use remote::{get_async, Created, Remote};
use vlog::{Loaded, Shared, VirtualLog};

/// A checkpoint object is written after this many commits it does not cover.
const CHECKPOINT_EVERY: u64 = 64;
/// Checkpoint objects kept (older ones are deleted when a new one is written).
const CHECKPOINTS_KEPT: usize = 3;
/// Data object PUTs of one commit in flight at once, at most.
const UPLOADS_IN_FLIGHT: usize = 8;

/// How to open an object-store database.
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    /// No commits; a missing database is `NotFound`.
    pub read_only: bool,
    /// Root of the local cache (a slot directory under it is taken per process).
    pub cache_dir: PathBuf,
    /// Bytes the cache may hold.
    pub cache_size: u64,
    /// Data objects no commit names are collected by compaction only when older than
    /// this; a commit that takes longer than half of it gives up.
    pub gc_grace: Duration,
}

/// `s3://bucket/prefix` → (bucket, prefix: empty or ending in `/`).
pub fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::InvalidArgument(format!("{url:?} is not an s3:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::InvalidArgument(format!("{url:?}: no bucket")));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|s| s == "." || s == "..") {
        return Err(Error::InvalidArgument(format!("{url:?}: bad prefix")));
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// The default cache root of database `url`: `$XDG_CACHE_HOME/wdb/<name>` (or
/// `~/.cache/wdb/<name>`), `<name>` made of the URL and the endpoint.
pub fn default_cache_dir(url: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let endpoint = std::env::var("AWS_ENDPOINT")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint.bytes().chain([0]).chain(url.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let readable: String = url
        .trim_start_matches("s3://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    base.join("wdb").join(format!("{readable}-{h:016x}"))
}

/// Open (or create) the database at `url` (`s3://bucket/prefix`), the store's endpoint
/// and credentials from the `AWS_*` environment (`AmazonS3Builder::from_env`).
pub fn open_s3(url: &str, o: &ObjectOptions, so: StoreOptions) -> Result<Store> {
    let (bucket, prefix) = parse_s3_url(url)?;
    let b = object_store::aws::AmazonS3Builder::from_env();
    let static_keys = has_static_keys(&b);
    let s3 = without_tls_roots_if_unused(b)
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("{url}: {e}")))?;
    open_store(url, Arc::new(s3), &prefix, o, so).map_err(|e| credentials_hint(e, static_keys))
}

/// Does `b` hold an access key and its secret (no credential service to call)?
fn has_static_keys(b: &object_store::aws::AmazonS3Builder) -> bool {
    use object_store::aws::AmazonS3ConfigKey as K;
    b.get_config_value(&K::AccessKeyId).is_some()
        && b.get_config_value(&K::SecretAccessKey).is_some()
}

/// A request error of an open without static keys, told where the keys come from: the
/// client then asks a credential service (the instance metadata address), whose refusal
/// alone says little to a user who forgot to export them.
fn credentials_hint(e: Error, static_keys: bool) -> Error {
    match e {
        Error::Io(io) if !static_keys => Error::Io(std::io::Error::new(
            io.kind(),
            format!(
                "{io} (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set, so \
                 credentials were asked of the environment's credential service)"
            ),
        )),
        e => e,
    }
}

/// `b`, told not to load the system's root certificates when it makes no TLS connection:
/// an `http://` endpoint and static keys (no credential service to call). Loading them
/// reads every file of `/etc/ssl/certs`, a third of a warm open's time on a loopback
/// gateway (docs/object-storage.md, "Open").
fn without_tls_roots_if_unused(
    b: object_store::aws::AmazonS3Builder,
) -> object_store::aws::AmazonS3Builder {
    use object_store::aws::AmazonS3ConfigKey as K;
    use object_store::ClientConfigKey as C;
    let endpoint = b
        .get_config_value(&K::S3Endpoint)
        .or_else(|| b.get_config_value(&K::Endpoint));
    let plain_http = endpoint.is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
    if plain_http && has_static_keys(&b) {
        b.with_config(K::Client(C::NoSystemCertificates), "true")
    } else {
        b
    }
}

/// Open (or create) the database under `prefix` of `store` (tests pass an in-memory
/// store or a fault-injecting wrapper). `name` names it in messages.
pub fn open_store(
    name: &str,
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    o: &ObjectOptions,
    so: StoreOptions,
) -> Result<Store> {
    let remote = Remote::new(store)?;
    let cache = Cache::open(&o.cache_dir, o.cache_size)?;
    let hkey = layout::header_key(prefix);
    // The header never changes: a cached copy (checked like a fetched one) saves a request.
    let hentry = format!("h-{:016x}", fnv(name.as_bytes()));
    let cached = cache
        .read(&hentry)
        .filter(|b| FileHeader::decode(b).is_ok());
    let header = match cached {
        Some(b) => b,
        None => {
            let b = match remote.get(&hkey)? {
                Some(b) => b.to_vec(),
                None if o.read_only => return Err(Error::NotFound(format!("database {name}"))),
                None => create_header(&remote, &hkey)?,
            };
            if FileHeader::decode(&b).is_ok() {
                let _ = cache.insert(&hentry, b.len() as u64, |f| {
                    std::os::unix::fs::FileExt::write_all_at(f, &b, 0)
                });
            }
            b
        }
    };
    let fh = FileHeader::decode(&header)
        .map_err(|e| Error::corruption(0, format!("object {hkey}: {e}")))?;
    let lock = Arc::new(LockFile::open(&cache.dir().join("db"), false)?);
    let table = so.boot_table();
    let checks = match (&table, so.verify) {
        (Some(t), crate::Verify::OncePerBoot) => Some((
            t.clone(),
            crate::verify::Holder::CacheFiles {
                uuid: fh.uuid,
                created_ns: fh.created_ns,
            },
        )),
        _ => None,
    };
    let sh = Arc::new(Shared::new(
        remote,
        prefix.to_string(),
        cache,
        (header, fh.uuid),
        checks,
    ));

    // What `refresh_gen` asks the store for when the cache holds every commit from the
    // checkpoint's on (the usual case): the number after the newest it holds. Asked
    // now, while the checkpoint and those commits are read from the cache.
    let early = sh
        .cache
        .last_with_prefix(&format!("c-{:016x}-", fh.uuid))
        .and_then(|n| u64::from_str_radix(n.get(19..)?, 16).ok())
        .map(|t| {
            let tid = Tid(t.saturating_add(1));
            let store = sh.remote.store().clone();
            let key = layout::commit_key(prefix, tid);
            (tid, sh.remote.start(async move { get_async(&store, &key).await }))
        });

    // The newest checkpoint of this log — one already in the cache if there is one (an
    // older checkpoint only means more commit objects to read after it) — then the
    // commits after it.
    let mut ix = Index::empty();
    let mut ck_tid = Tid::ZERO;
    let local: Vec<String> = sh
        .cache
        .names_with_prefix(&format!("k-{:016x}-", fh.uuid))
        .into_iter()
        .filter_map(|n| {
            let stem = n.strip_suffix(".idx")?.get(19..)?.to_string();
            Some(format!("{}{stem}", layout::checkpoint_dir(prefix)))
        })
        .collect();
    let ckpts = if local.is_empty() {
        sh.remote
            .list(&layout::checkpoint_dir(prefix), None)?
            .into_iter()
            .map(|l| l.key)
            .collect()
    } else {
        local
    };
    for key in ckpts.iter().rev() {
        let Some((tid, base)) = layout::parse_checkpoint_name(key) else {
            continue;
        };
        match load_checkpoint(&sh, key, tid) {
            Ok(Some(c)) => {
                ix = c;
                ck_tid = tid;
                sh.known_tid.store(tid.0, Ordering::Release);
                sh.base.store(base.0, Ordering::Release);
                *sh.ckpt.write() = ix.ckpt.clone();
                sh.end.store(ix.end, Ordering::Release);
                break;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, key = %key, "skipping a checkpoint object"),
        }
    }
    let log = Log::open_virtual(Path::new(name), Box::new(VirtualLog(sh.clone())))?;
    let gen = Gen::new(log, ix, so.verify, table.clone());
    let storage = Arc::new(ObjectStorage {
        sh,
        writer: crate::log::new_uuid(),
        seq: AtomicU64::new(0),
        nonce: AtomicU64::new(0),
        read_only: o.read_only,
        grace: o.gc_grace,
        ckpt_tid: AtomicU64::new(ck_tid.0),
        commit_lock: Mutex::new(()),
        refresh_lock: Mutex::new(()),
    });
    storage.refresh_with(&gen, early)?;
    let so = StoreOptions {
        read_only: o.read_only,
        ..so
    };
    Ok(Store::with_storage(
        Path::new(name),
        (gen, table),
        lock,
        storage,
        so,
    ))
}

/// FNV-1a of `b`.
fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Create the header object of a new database (or read the one another process
/// created meanwhile).
fn create_header(remote: &Remote, hkey: &str) -> Result<Vec<u8>> {
    let h = FileHeader {
        version: format::FORMAT_VERSION,
        align: u32::try_from(format::PAGE).unwrap_or(4096),
        uuid: crate::log::new_uuid(),
        created_ns: now_ns(),
        base_tid: Tid::ZERO,
    };
    let b = h.encode();
    match remote.put_create(hkey, Bytes::from(b.clone()))? {
        Created::Yes => Ok(b),
        Created::AlreadyExists => Ok(remote
            .get(hkey)?
            .ok_or_else(|| Error::corruption(0, format!("object {hkey} vanished")))?
            .to_vec()),
    }
}

/// Checkpoint object `key` (covering commits up to `tid`) as the index it gives, via
/// the cache. None if it is not a checkpoint of this log.
fn load_checkpoint(sh: &Shared, key: &str, tid: Tid) -> Result<Option<Index>> {
    let entry = format!(
        "k-{:016x}-{}.idx",
        sh.uuid,
        key.rsplit('/').next().unwrap_or("x")
    );
    if sh.cache.get(&entry).is_none() {
        let b = sh
            .remote
            .get(key)?
            .ok_or_else(|| Error::corruption(0, format!("object {key} vanished")))?;
        if sh
            .cache
            .insert(&entry, b.len() as u64, |f| {
                std::os::unix::fs::FileExt::write_all_at(f, &b, 0)
            })?
            .is_none()
        {
            return Ok(None);
        }
    }
    let p = sh.cache.entry_path(&entry);
    let db = p.with_extension("");
    let Some(super::ckpt::Opened::Lazy(c)) = super::ckpt::open(&db) else {
        sh.cache.remove(&entry);
        return Err(Error::corruption(
            0,
            format!("object {key}: not a checkpoint"),
        ));
    };
    if c.h.log_uuid != sh.uuid || c.h.last_tid != tid {
        return Ok(None);
    }
    Ok(Some(Index::from_lazy(c)))
}

/// A commit being published: what to encode, and its payloads already uploaded.
struct Pending<'a> {
    req: &'a CommitRequest<'a>,
    name: &'a dyn Fn(&Key) -> String,
    wall: u64,
    base_tid: Tid,
    up: Uploads,
}

/// The data objects a commit uploaded before its commit object, and where its payloads
/// went.
struct Uploads {
    /// The whole commit fits in its commit object (no data objects).
    whole: bool,
    /// `(writer, seq)` of every data object uploaded.
    uploaded: Vec<(u64, u64)>,
    /// The data object of an in-memory payload, by its address and length.
    by_ptr: HashMap<(usize, usize), (u64, u64)>,
    /// The data object of a spilled payload, by its offset and length in the spill file.
    by_slot: HashMap<(u64, u32), (u64, u64)>,
    /// The uploaded bytes of the last block written of each array, by data object: kept
    /// in the cache once committed, since an append reads that block back.
    tails: HashMap<(u64, u64), Bytes>,
}

impl Uploads {
    /// The segments and inline bytes of a commit object holding `pieces`: payloads
    /// uploaded as data objects are referenced, the rest is kept inline.
    fn segments(&self, pieces: &[TxPiece<'_>]) -> Result<(Vec<Segment>, Vec<u8>)> {
        let whole = self.whole;
        let mut segments = Vec::new();
        let mut blob = Vec::new();
        for p in pieces {
            match p {
                TxPiece::Own(b) if whole => layout::push_inline(&mut segments, &mut blob, b),
                TxPiece::Own(b) => layout::push_own(&mut segments, &mut blob, b),
                TxPiece::Borrowed(b) => match self.by_ptr.get(&(b.as_ptr() as usize, b.len())) {
                    Some(&(writer, seq)) if b.len() >= layout::INLINE_MAX => {
                        segments.push(Segment::Data {
                            writer,
                            seq,
                            len: b.len() as u64,
                        })
                    }
                    _ => layout::push_inline(&mut segments, &mut blob, b),
                },
                // Alignment padding (storage-format.md §2.8): zeros, no bytes stored.
                TxPiece::Hole(n) => segments.push(Segment::Zeros { len: *n }),
                TxPiece::Table(c) => {
                    layout::push_own(&mut segments, &mut blob, &format::encode_page_table(c))
                }
                // A spilled payload (uploaded above) or a spilled page CRC table
                // (small: read back and kept in the commit object).
                TxPiece::Copy(r) => match self.by_slot.get(&(r.off, r.len)) {
                    Some(&(writer, seq)) => segments.push(Segment::Data {
                        writer,
                        seq,
                        len: u64::from(r.len),
                    }),
                    None => {
                        let mut b = vec![0u8; r.len as usize];
                        std::os::unix::fs::FileExt::read_exact_at(r.file, &mut b, r.off)?;
                        if whole {
                            layout::push_inline(&mut segments, &mut blob, &b)
                        } else {
                            layout::push_own(&mut segments, &mut blob, &b)
                        }
                    }
                },
            }
        }
        Ok((segments, blob))
    }
}

/// What became of a commit object this writer tried to create.
enum Outcome {
    Won,
    Lost,
    NotThere,
}

/// The [`Storage`] of an object-store database.
#[derive(Debug)]
pub struct ObjectStorage {
    sh: Arc<Shared>,
    /// This process's writer id (data object keys, commit objects).
    writer: u64,
    seq: AtomicU64,
    nonce: AtomicU64,
    read_only: bool,
    grace: Duration,
    /// Tid covered by the newest checkpoint object known.
    ckpt_tid: AtomicU64,
    commit_lock: Mutex<()>,
    refresh_lock: Mutex<()>,
}

impl ObjectStorage {
    /// Read the commit objects after the index's last tid and apply them.
    fn refresh_gen(&self, gen: &Gen) -> Result<()> {
        self.refresh_with(gen, None)
    }

    /// [`Self::refresh_gen`], given the GET of commit object `early.0` started since
    /// the caller began (so it sees every commit acknowledged before): used if that is
    /// the number to ask for.
    fn refresh_with(
        &self,
        gen: &Gen,
        early: Option<(Tid, remote::Started<Result<Option<Bytes>>>)>,
    ) -> Result<()> {
        let _r = self.refresh_lock.lock();
        let last = gen.last_tid();
        let p = &self.sh.prefix;
        // Commit objects are created in order, without gaps (invariant 1), and never
        // change: the run of them the cache holds from `last + 1` on is read locally,
        // and the first number after that run is asked of the store with one GET (a
        // third of a LIST's time on the gateway, and it brings the object when there is
        // one). When the store lacks it, no later one exists either and the run is all
        // there is; the LIST runs only when the store has commits the cache lacks.
        let next = Tid(last.0 + 1);
        let mut got: HashMap<Tid, Arc<Loaded>> = HashMap::new();
        let mut probe = next;
        while let Some(o) = self.sh.cached_commit(probe) {
            got.insert(probe, Arc::new(Loaded::new(o, true)));
            probe = Tid(probe.0 + 1);
        }
        let mut tids: Vec<Tid> = (next.0..probe.0).map(Tid).collect();
        let probed = match early {
            Some((t, started)) if t == probe => started.wait()??,
            _ => self.sh.remote.get(&layout::commit_key(p, probe))?,
        };
        if probed.is_some() {
            let listed = self
                .sh
                .remote
                .list(&layout::commit_dir(p), Some(&layout::commit_key(p, probe)))?;
            tids.push(probe);
            // A listing that lags behind the GET: what it lacks is simply not read yet.
            tids.extend(
                listed
                    .iter()
                    .filter_map(|l| layout::parse_commit_name(&l.key))
                    .filter(|&t| t > probe),
            );
            for (i, t) in tids.iter().enumerate() {
                if t.0 != next.0 + i as u64 {
                    return Err(Error::corruption(
                        0,
                        format!(
                            "object {}: commit objects {}..{} are missing",
                            layout::commit_key(p, *t),
                            next.0 + i as u64,
                            t.0
                        ),
                    ));
                }
            }
        }
        if tids.is_empty() {
            return self.apply_new(gen);
        }
        // The others are fetched four at a time (a whole commit holds its payloads: this
        // bounds the memory) and cached; a large blob is then dropped from memory (the
        // cache file holds it).
        let missing: Vec<Tid> = tids.iter().copied().filter(|t| !got.contains_key(t)).collect();
        let mut keep = |t: Tid, b: Result<Option<Bytes>>| -> Result<()> {
            let key = layout::commit_key(p, t);
            let b = b?.ok_or_else(|| Error::corruption(0, format!("object {key} vanished")))?;
            let (b, o) = match self.sh.check_commit(&b, t, &key) {
                Ok(o) => (b, o),
                // Cut in transit? Fetch it again before calling it corrupt.
                Err(_) => self.sh.fetch_commit(t, &key)?,
            };
            let in_cache = self.sh.cache_commit(&o, &b);
            got.insert(t, Arc::new(Loaded::new(o, in_cache)));
            Ok(())
        };
        let mut missing = &missing[..];
        if let (Some(b), Some(&t)) = (probed, missing.first()) {
            if t == probe {
                keep(t, Ok(Some(b)))?;
                missing = &missing[1..];
            }
        }
        for batch in missing.chunks(4) {
            let keys: Vec<String> = batch.iter().map(|&t| layout::commit_key(p, t)).collect();
            let store = self.sh.remote.store().clone();
            let fetched = self.sh.remote.run(async move {
                futures::future::join_all(keys.iter().map(|k| remote::get_async(&store, k))).await
            })?;
            for (&t, b) in batch.iter().zip(fetched) {
                keep(t, b)?;
            }
        }
        let mut end = gen.index.read().end;
        for t in &tids {
            let key = layout::commit_key(p, *t);
            let l = got
                .remove(t)
                .ok_or_else(|| Error::corruption(0, format!("object {key}: not read")))?;
            let o = &l.obj;
            if o.start != end {
                return Err(Error::corruption(
                    o.start,
                    format!(
                        "object {key}: starts at {}, the previous commit ends at {end}",
                        o.start
                    ),
                ));
            }
            end = o.end();
            self.sh.add_commit(l);
        }
        self.apply_new(gen)
    }

    /// Apply to `gen`'s index the transactions of the commits known past its end.
    fn apply_new(&self, gen: &Gen) -> Result<()> {
        let (end, last) = {
            let ix = gen.index.read();
            (ix.end, ix.last_tid)
        };
        let vend = self.sh.end.load(Ordering::Acquire);
        if vend <= end {
            return Ok(());
        }
        let scan = gen.log.scan_to(end, last, false, vend)?;
        if let Some(e) = scan.stop {
            return Err(e);
        }
        let commits = self.sh.commits.read();
        let mut ix = gen.index.write();
        for tx in &scan.txs {
            let c = commits.get(&tx.off).map(|c| c.obj.tid);
            if c != Some(tx.header.tid)
                || tx.off + tx.header.total_len != commits[&tx.off].obj.end()
            {
                return Err(Error::corruption(
                    tx.off,
                    format!(
                        "object {}: holds transaction {} of another length or tid",
                        layout::commit_key(&self.sh.prefix, tx.header.tid),
                        tx.header.tid
                    ),
                ));
            }
            if tx.header.tid > ix.last_tid && tx.off == ix.end {
                ix.apply(tx);
            }
        }
        Ok(())
    }

    /// The payloads of `tails` that committed object `obj` names, with their virtual
    /// offsets.
    fn tail_payloads(
        &self,
        obj: &CommitObject,
        tails: &HashMap<(u64, u64), Bytes>,
    ) -> Vec<(u64, Bytes)> {
        let mut at = obj.start;
        let mut out = Vec::new();
        for s in &obj.segments {
            if let Segment::Data { writer, seq, len } = *s {
                if let Some(b) = tails.get(&(writer, seq)) {
                    let n = usize::try_from(len).unwrap_or(usize::MAX).min(b.len());
                    out.push((at, b.slice(..n)));
                }
            }
            at += s.len();
        }
        out
    }

    /// Write to the cache, on a thread of its own (best effort: without one, nothing is
    /// cached), a committed split commit object and payloads at their virtual offsets.
    /// Not on the runtime: the thread may hold the last reference to the runtime's owner.
    fn cache_later(&self, commit: Option<(CommitObject, Vec<u8>)>, payloads: Vec<(u64, Bytes)>) {
        if commit.is_none() && payloads.is_empty() {
            return;
        }
        let sh = self.sh.clone();
        let _ = std::thread::Builder::new()
            .name("wdb-cache".into())
            .spawn(move || {
                if let Some((o, b)) = commit {
                    sh.cache_commit(&o, &b);
                }
                for (at, b) in payloads {
                    sh.cache_data(at, &b);
                }
            });
    }

    /// Best effort: delete data objects of a commit that did not happen.
    fn discard(&self, data: &[(u64, u64)]) {
        let keys = data
            .iter()
            .map(|&(w, s)| layout::data_key(&self.sh.prefix, w, s))
            .collect();
        if let Err(e) = self.sh.remote.delete(keys) {
            tracing::warn!(error = %e, "could not delete the data objects of a failed commit (compaction collects them)");
        }
    }

    /// Is commit object `key` the one this writer made with `nonce`?
    fn whose(&self, key: &str, nonce: u64) -> Result<Outcome> {
        match self.sh.remote.get(key)? {
            None => Ok(Outcome::NotThere),
            Some(b) => {
                let o = CommitObject::decode(&b, key)?;
                Ok(if o.writer == self.writer && o.nonce == nonce {
                    Outcome::Won
                } else {
                    Outcome::Lost
                })
            }
        }
    }

    fn commit_inner(
        &self,
        store: &Store,
        req: &CommitRequest<'_>,
        name: &dyn Fn(&Key) -> String,
        base_tid: Tid,
    ) -> Result<Tid> {
        if self.read_only {
            return Err(Error::ReadOnly("the database was opened read-only".into()));
        }
        let _c = self.commit_lock.lock();
        let gen = store.current();
        // No refresh first: the create of the next number fails if another commit took
        // it, and only then are the new commits read (one request saved per commit;
        // `begin` refreshed already). Conflicts known now fail before any upload.
        let wall = now_ns();
        encode_commit(&gen, req, name, wall)?;
        let started = Instant::now();
        let pending = Pending {
            req,
            name,
            wall,
            base_tid,
            up: self.upload_payloads(req)?,
        };
        let mut failures = 0;
        let mut first = true;
        let (tid, obj, bytes) = loop {
            if !first {
                if let Err(e) = self.refresh_gen(&gen) {
                    self.discard(&pending.up.uploaded);
                    return Err(e);
                }
            }
            first = false;
            if started.elapsed() > self.grace / 2 {
                self.discard(&pending.up.uploaded);
                return Err(Error::Io(std::io::Error::other(format!(
                    "commit gave up after {:?}: its data objects would become collectable (grace period {:?})",
                    started.elapsed(),
                    self.grace
                ))));
            }
            if let Some(won) = self.try_publish(store, &gen, &pending, &mut failures)? {
                break won;
            }
        };
        // The cache file is where a large whole commit's blob is read from; a split
        // commit object stays in memory, and its cache copy (for later opens) is written
        // off the commit's path, with the tail blocks an append reads back.
        let in_cache = obj.is_whole() && self.sh.cache_commit(&obj, &bytes);
        let split = (!obj.is_whole()).then(|| (obj.clone(), bytes));
        self.cache_later(split, self.tail_payloads(&obj, &pending.up.tails));
        self.sh.add_commit(Arc::new(Loaded::new(obj, in_cache)));
        self.apply_new(&gen)?;
        if let Err(e) = self.checkpoint(&gen, false) {
            tracing::warn!(error = %e, "could not write a checkpoint object");
        }
        Ok(tid)
    }

    /// Uploads the data objects of a commit. A commit of small payloads is one object
    /// (one PUT); a larger one puts its payloads of 64 KiB or more in data objects first
    /// (retention deletes those of dropped versions) and keeps only the small parts in
    /// its commit object, which is then cheap to make again under another number.
    ///
    /// The uploads are a pipeline of [`UPLOADS_IN_FLIGHT`] PUTs: each starts as soon as
    /// its object's bytes are ready (a spilled payload read back and checked against its
    /// CRC), so the first request leaves before the last payload is copied and memory
    /// holds at most that many payloads whatever the size of the transaction. On an
    /// error, the requests in flight are awaited and every object this commit started is
    /// deleted (best effort: compaction collects what remains) before the error returns.
    fn upload_payloads(&self, req: &CommitRequest<'_>) -> Result<Uploads> {
        let payloads: u64 = req
            .writes
            .iter()
            .map(|w| w.value.payload.len() as u64)
            .sum();
        let whole = payloads <= layout::WHOLE_MAX;
        let mut up = Uploads {
            whole,
            uploaded: Vec::new(),
            by_ptr: HashMap::new(),
            by_slot: HashMap::new(),
            tails: HashMap::new(),
        };
        if whole {
            return Ok(up);
        }
        let mut in_flight: std::collections::VecDeque<remote::Started<Result<()>>> =
            std::collections::VecDeque::new();
        let mut failed: Option<Error> = None;
        let settle = |s: remote::Started<Result<()>>, failed: &mut Option<Error>| {
            if let (Err(e), None) = (s.wait().and_then(|r| r), &*failed) {
                *failed = Some(e);
            }
        };
        let mut last_blk: HashMap<u64, u64> = HashMap::new();
        for w in req.writes.iter() {
            if let Key::Block { array, blk } = w.key {
                let b = last_blk.entry(array).or_insert(blk);
                *b = (*b).max(blk);
            }
        }
        for w in req.writes.iter() {
            if w.value.payload.len() < layout::INLINE_MAX {
                continue;
            }
            while in_flight.len() >= UPLOADS_IN_FLIGHT {
                if let Some(s) = in_flight.pop_front() {
                    settle(s, &mut failed);
                }
            }
            if failed.is_some() {
                break;
            }
            let body = match &w.value.payload {
                Payload::Mem(b) => Ok(layout::encode_data(b)),
                Payload::Spilled(_) => w
                    .value
                    .payload
                    .to_vec(w.value.data_crc)
                    .map(|b| layout::seal_data(b.into_owned())),
            };
            let body = match body {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let id = (self.writer, seq);
            up.uploaded.push(id);
            match &w.value.payload {
                Payload::Mem(b) => {
                    up.by_ptr.insert((b.as_ptr() as usize, b.len()), id);
                }
                Payload::Spilled(slot) => {
                    up.by_slot
                        .insert((slot.offset(), slot.len() as u32), id);
                }
            }
            if let Key::Block { array, blk } = w.key {
                if last_blk.get(&array) == Some(&blk) {
                    up.tails.insert(id, body.clone());
                }
            }
            let key = layout::data_key(&self.sh.prefix, self.writer, seq);
            let store = self.sh.remote.store().clone();
            in_flight.push_back(
                self.sh
                    .remote
                    .start(async move { remote::put_async(&store, &key, body).await }),
            );
        }
        for s in in_flight {
            settle(s, &mut failed);
        }
        match failed {
            None => Ok(up),
            Some(e) => {
                self.discard(&up.uploaded);
                Err(e)
            }
        }
    }

    /// One attempt to create the commit object under the next tid: `Some` when this
    /// writer made it, `None` when another writer took that tid (or the create failed
    /// and can be tried again), `Err` when the commit fails.
    fn try_publish(
        &self,
        store: &Store,
        gen: &Gen,
        p: &Pending<'_>,
        failures: &mut u32,
    ) -> Result<Option<(Tid, CommitObject, Vec<u8>)>> {
        let uploaded = &p.up.uploaded;
        let (tid, enc) = match encode_commit(gen, p.req, p.name, p.wall) {
            Ok(x) => x,
            Err(e) => {
                self.discard(uploaded);
                return Err(e);
            }
        };
        let start = gen.index.read().end;
        let (segments, blob) = match p.up.segments(&enc.pieces) {
            Ok(x) => x,
            Err(e) => {
                self.discard(uploaded);
                return Err(e);
            }
        };
        let obj = CommitObject {
            uuid: self.sh.uuid,
            tid,
            start,
            total_len: enc.total_len,
            base_tid: p.base_tid,
            writer: self.writer,
            nonce: self.nonce.fetch_add(1, Ordering::Relaxed),
            segments,
            blob,
        };
        let bytes = obj.encode()?;
        let key = layout::commit_key(&self.sh.prefix, tid);
        let outcome = match self.sh.remote.put_create(&key, Bytes::from(bytes.clone())) {
            Ok(Created::Yes) => Outcome::Won,
            Ok(Created::AlreadyExists) => self.whose(&key, obj.nonce)?,
            Err(e) => match self.whose(&key, obj.nonce) {
                Ok(Outcome::NotThere) => {
                    *failures += 1;
                    if *failures >= 3 {
                        self.discard(uploaded);
                        return Err(e);
                    }
                    Outcome::NotThere
                }
                Ok(o) => o,
                Err(e2) => {
                    // Neither the create nor a read of its key answered: the commit
                    // may or may not have landed. Refuse further commits.
                    let e = Error::Io(std::io::Error::other(format!(
                        "commit {tid}: outcome unknown ({e}; then {e2}); reopen the database"
                    )));
                    store.poison(&e);
                    return Err(e);
                }
            },
        };
        Ok(match outcome {
            Outcome::Won => Some((tid, obj, bytes)),
            Outcome::Lost | Outcome::NotThere => None,
        })
    }

    /// Every commit object from 1 to `last`, loaded (compaction and fsck walk them).
    fn all_commits(&self, last: Tid) -> Result<Vec<Arc<Loaded>>> {
        let mut out = Vec::new();
        let known: HashMap<Tid, Arc<Loaded>> = self
            .sh
            .commits
            .read()
            .values()
            .map(|l| (l.obj.tid, l.clone()))
            .collect();
        for t in 1..=last.0 {
            match known.get(&Tid(t)) {
                Some(l) => out.push(l.clone()),
                None => out.push(self.sh.load_commit(Tid(t))?),
            }
        }
        Ok(out)
    }
}

impl Storage for ObjectStorage {
    fn refresh(&self, gen: &Arc<Gen>) -> Result<()> {
        self.refresh_gen(gen)
    }

    fn commit(
        &self,
        store: &Store,
        req: &CommitRequest<'_>,
        name: &dyn Fn(&Key) -> String,
    ) -> Result<Tid> {
        self.commit_inner(store, req, name, Tid::ZERO)
    }

    fn checkpoint(&self, gen: &Gen, force: bool) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let last = gen.last_tid();
        let covered = self.ckpt_tid.load(Ordering::Acquire);
        if last.0 <= covered || (!force && last.0 - covered < CHECKPOINT_EVERY) {
            return Ok(());
        }
        let c = gen.with_index(|ix| ix.to_checkpoint(self.sh.uuid))?;
        let bytes = c.encode()?;
        let base = Tid(self.sh.base.load(Ordering::Acquire));
        let p = &self.sh.prefix;
        let key = layout::checkpoint_key(p, last, base);
        self.sh.remote.put_create(&key, Bytes::from(bytes))?;
        self.ckpt_tid.fetch_max(last.0, Ordering::AcqRel);
        let all = self.sh.remote.list(&layout::checkpoint_dir(p), None)?;
        let old: Vec<String> = all
            .iter()
            .filter(|l| layout::parse_checkpoint_name(&l.key).is_some())
            .map(|l| l.key.clone())
            .rev()
            .skip(CHECKPOINTS_KEPT)
            .collect();
        if !old.is_empty() {
            self.sh.remote.delete(old)?;
        }
        Ok(())
    }

    fn compact(
        &self,
        store: &Store,
        keep_history: Option<Tid>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport> {
        gc::compact(self, store, keep_history, progress)
    }

    fn fsck(&self, store: &Store) -> Result<FsckReport> {
        gc::fsck(self, store)
    }
}

mod gc;

/// Keys of every data object named by `commits`, with the virtual range each holds.
fn data_refs(prefix: &str, commits: &[Arc<Loaded>]) -> Vec<(String, u64, u64, Tid)> {
    let mut out = Vec::new();
    for c in commits {
        let mut at = c.obj.start;
        for s in &c.obj.segments {
            if let Segment::Data { writer, seq, len } = *s {
                out.push((layout::data_key(prefix, writer, seq), at, len, c.obj.tid));
            }
            at += s.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as K};
    use object_store::ClientConfigKey as C;

    fn skips_roots(endpoint: &str, keys: bool) -> bool {
        let mut b = AmazonS3Builder::new().with_config(K::Endpoint, endpoint);
        if keys {
            b = b
                .with_config(K::AccessKeyId, "AK")
                .with_config(K::SecretAccessKey, "SK");
        }
        super::without_tls_roots_if_unused(b)
            .get_config_value(&K::Client(C::NoSystemCertificates))
            .as_deref()
            == Some("true")
    }

    #[test]
    fn root_certificates_are_skipped_only_where_no_tls_connection_is_made() {
        assert!(skips_roots("http://127.0.0.1:7480", true));
        assert!(skips_roots("HTTP://gateway:80", true));
        assert!(!skips_roots("https://s3.example.com", true));
        // Without static keys a credential service (STS over https) may be called.
        assert!(!skips_roots("http://127.0.0.1:7480", false));
    }

    #[test]
    fn a_request_error_without_static_keys_says_where_credentials_came_from() {
        let io = || crate::Error::Io(std::io::Error::other("object p/wdb/header: 403"));
        let e = super::credentials_hint(io(), false).to_string();
        assert!(e.contains("403") && e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        // With keys, or for an error that is not a request's, the error is left alone.
        assert!(!super::credentials_hint(io(), true)
            .to_string()
            .contains("AWS_ACCESS_KEY_ID"));
        let nf = crate::Error::NotFound("database s3://b/p".into());
        assert!(matches!(
            super::credentials_hint(nf, false),
            crate::Error::NotFound(_)
        ));
    }
}
