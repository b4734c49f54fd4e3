//! MVCC over the log: the index `key → versions`, `load(key, at)`, optimistic commit with
//! key-level conflicts, refresh from other processes' commits, the index checkpoint,
//! changes between tids, compaction and the checker behind fsck. Knows nothing of memory.
//!
//! State: a `Store` holds the current [`Gen`] (one log file and its index). Compaction
//! replaces the current `Gen`; snapshots keep the `Arc<Gen>` they started on, so they
//! keep reading the file they began with.
//!
//! ```text
//!   open ──► Gen(file A) ──commit/refresh──► Gen(file A, longer index)
//!                  │ compact (copy, catch up, rename)
//!                  ▼
//!            Gen(file B)     (old snapshots still hold Gen(file A))
//! ```
//!
//! The index is the checkpoint it was opened from (version 3, read lazily page by page:
//! [`ckpt`]) plus an overlay in memory of the transactions read from the log after it.
//! Open reads the checkpoint's header page and the log past its covered end, so its cost
//! does not grow with the database.
//!
//! Invariants (checked by `Index::assert_invariants` at the top of commit in debug builds,
//! for the overlay and its relation to the checkpoint part; the checkpoint part's pages
//! are checked as they are read, storage-format.md §7):
//! 1. Each key's versions — the checkpoint part's, then the overlay's — are sorted by
//!    strictly increasing tid, all ≤ `last_tid`; the overlay's are all newer than the
//!    checkpoint part's last tid.
//! 2. The transactions — the checkpoint part's, then the overlay's `txs` — are sorted by
//!    tid; the last one ends at `end`, and `last_tid` is its tid.
//! 3. Every overlay version's tid is one of the overlay's `txs`, and `by_tid` lists each
//!    key under each tid that wrote it.
//! 4. Appends happen only at `end`, only under the writer lock, and after refreshing the
//!    index to the file's last committed transaction (so `end` is the file's).
//! 5. After a failed append or fsync the store is poisoned: no further commit until reopen.
//!
//! Lock order: `Store::commit_lock`/writer lock (lock file) → `Store::gen` → `Gen::index`.
//! Readers take only `Gen::index` (shared, briefly) and never wait for an append (they
//! wait only while a damaged checkpoint is replaced by an index rebuilt from the log).

pub mod ckpt;
pub mod compact;
pub mod encode;
pub mod fsck;
#[cfg(feature = "s3")]
pub mod object;
pub mod spill;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::format::checkpoint::{Checkpoint, KeySlot, TxEntry, Version};
use crate::format::{self, Encoding, Key, RecordIn, FLAG_DELETED, PAGE};
#[cfg(any(test, feature = "internals"))]
use crate::log::io::LogIo;
use crate::log::lock::{LockFile, ReaderSlot};
use crate::log::{Log, ScannedTx};
use crate::verify::{self, BootTable, Checked, Stored, TablePlace, Verify};
use crate::{Error, Result, Tid};
use ckpt::LazyCheckpoint;
pub use encode::Encoded;

/// Path of the index checkpoint of database `db`.
pub fn checkpoint_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

/// Store options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Open read-only (no commits, no tail cutting).
    pub read_only: bool,
    /// fdatasync each commit before it returns.
    pub sync: bool,
    /// Write a checkpoint when this many log bytes are not covered by the last one.
    pub checkpoint_bytes: u64,
    /// When a stored raw block's CRC is checked before it is shown.
    pub verify: Verify,
    /// Where the table of versions checked this boot lives (`Verify::OncePerBoot`).
    pub table: TablePlace,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            read_only: false,
            sync: true,
            checkpoint_bytes: 64 << 20,
            verify: Verify::default(),
            table: TablePlace::default(),
        }
    }
}

impl StoreOptions {
    /// The per-boot table of checked versions a store opened with these options shares
    /// (`Verify::OncePerBoot`, when the table is usable).
    pub fn boot_table(&self) -> Option<Arc<BootTable>> {
        match self.verify {
            Verify::OncePerBoot => verify::boot_table(&self.table),
            _ => None,
        }
    }
}

/// The index of one log file: the versions of each key and the committed transactions.
///
/// Two parts: the checkpoint it was opened from, when that is a version-3 one, read
/// lazily ([`LazyCheckpoint`]: open reads its header only, lookups the pages they need),
/// and an overlay in memory of everything read from the log after it (or of everything,
/// when there was no usable checkpoint or an older version, read whole). A key's
/// versions are the checkpoint's, then the overlay's, which are all newer (invariant 1).
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// The checkpoint part (None: everything is in the overlay).
    ckpt: Option<Arc<LazyCheckpoint>>,
    /// Overlay: versions of each key, oldest first.
    versions: HashMap<Key, Vec<Version>>,
    /// Overlay: committed transactions, ascending.
    txs: Vec<TxEntry>,
    /// Overlay: keys written by each transaction.
    by_tid: BTreeMap<Tid, Vec<Key>>,
    /// Overlay: ids of arrays that have a catalog (META) key.
    arrays: BTreeSet<u64>,
    /// End of the last committed transaction.
    pub end: u64,
    /// tid of the last committed transaction (0 if none).
    pub last_tid: Tid,
    /// tx CRC of the last committed transaction.
    pub last_tx_crc: u32,
    /// Largest array id ever used.
    pub max_array: u64,
    /// Log offset covered by the last checkpoint written or read.
    pub checkpointed_end: u64,
}

/// The versions of one key: the checkpoint's (its entry's `first..first + count`), then
/// the overlay's.
struct KeyVersions<'a> {
    ck: Option<(&'a LazyCheckpoint, KeySlot)>,
    ov: &'a [Version],
}

impl KeyVersions<'_> {
    fn ck_len(&self) -> u64 {
        self.ck.map_or(0, |(_, k)| k.count)
    }

    fn get(&self, i: u64) -> Result<Version> {
        match self.ck {
            Some((c, k)) if i < k.count => c.version(k.first + i),
            _ => usize::try_from(i - self.ck_len())
                .ok()
                .and_then(|j| self.ov.get(j))
                .copied()
                .ok_or_else(|| Error::InvalidArgument(format!("no version {i}"))),
        }
    }

    /// How many versions have a tid ≤ `at` (the visible one is the last of them).
    fn count_at(&self, at: Tid) -> Result<u64> {
        let n = self.ck_len();
        if self.ov.first().is_some_and(|v| v.tid <= at) {
            return Ok(n + self.ov.partition_point(|v| v.tid <= at) as u64);
        }
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid)?.tid <= at {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The chain ending at version `i`: back to the nearest full version, at most
    /// `MAX_DELTA_CHAIN` deltas (a delta's base is the previous version of its key).
    fn chain_ending(&self, i: u64) -> Result<Vec<Version>> {
        let mut out = vec![self.get(i)?];
        let mut j = i;
        while let Some(&v) = out.last().filter(|v| v.encoding.is_delta()) {
            if i - j >= format::MAX_DELTA_CHAIN as u64 {
                return Err(Error::corruption(
                    out[0].rec_off,
                    format!(
                        "delta chain longer than {} records",
                        format::MAX_DELTA_CHAIN
                    ),
                ));
            }
            j = j.checked_sub(1).ok_or_else(|| {
                Error::corruption(
                    v.rec_off,
                    "delta record without a base version in this file",
                )
            })?;
            let p = self.get(j)?;
            if p.tid >= v.tid {
                // Only checkpoint entries can be out of order (the overlay is built in
                // tid order, after the checkpoint's last tid).
                return Err(match self.ck {
                    Some((c, k)) => c.inconsistent(format!("versions of {:?} out of order", k.key)),
                    None => Error::corruption(v.rec_off, "versions out of order"),
                });
            }
            out.push(p);
        }
        out.reverse();
        Ok(out)
    }
}

impl Index {
    fn empty() -> Index {
        Index {
            end: format::FILE_HEADER_SIZE,
            ..Index::default()
        }
    }

    fn apply(&mut self, tx: &ScannedTx) {
        let tid = tx.header.tid;
        let mut keys = Vec::with_capacity(tx.records.len());
        for (off, rh) in &tx.records {
            self.versions
                .entry(rh.key)
                .or_default()
                .push(Version::from_header(tid, *off, rh));
            if let Some(a) = rh.key.array() {
                self.max_array = self.max_array.max(a);
            }
            if let Key::Meta { array } = rh.key {
                self.arrays.insert(array);
            }
            keys.push(rh.key);
        }
        self.by_tid.insert(tid, keys);
        self.txs.push(TxEntry {
            tid,
            off: tx.off,
            len: tx.header.total_len,
            wall_ns: tx.header.wall_ns,
        });
        self.end = tx.off + tx.header.total_len;
        self.last_tid = tid;
        self.last_tx_crc = tx.end.tx_crc;
    }

    /// An index holding a (version 1 or 2) checkpoint read whole, in its overlay.
    fn from_checkpoint(c: Checkpoint) -> Index {
        let mut ix = Index {
            end: c.covered_end,
            last_tid: c.last_tid,
            last_tx_crc: c.last_tx_crc,
            checkpointed_end: c.covered_end,
            txs: c.txs,
            ..Index::default()
        };
        for (k, vs) in c.keys {
            if let Some(a) = k.array() {
                ix.max_array = ix.max_array.max(a);
            }
            if let Key::Meta { array } = k {
                ix.arrays.insert(array);
            }
            for v in &vs {
                ix.by_tid.entry(v.tid).or_default().push(k);
            }
            ix.versions.insert(k, vs);
        }
        for t in &ix.txs {
            ix.by_tid.entry(t.tid).or_default();
        }
        ix
    }

    /// An index over a version-3 checkpoint, read lazily, with an empty overlay.
    fn from_lazy(c: LazyCheckpoint) -> Index {
        Index {
            end: c.h.covered_end,
            last_tid: c.h.last_tid,
            last_tx_crc: c.h.last_tx_crc,
            checkpointed_end: c.h.covered_end,
            max_array: c.h.max_array,
            ckpt: Some(Arc::new(c)),
            ..Index::default()
        }
    }

    /// Did the checkpoint part fail a check? (Then this index must be rebuilt from the
    /// log: [`Gen::with_index`].)
    pub fn ckpt_failed(&self) -> bool {
        self.ckpt.as_ref().is_some_and(|c| c.failed())
    }

    /// (pages read so far, pages) of the checkpoint part, None without one (for tests
    /// and diagnostics: open reads one page, a lookup a few).
    #[cfg(any(test, feature = "internals"))]
    pub fn checkpoint_pages(&self) -> Option<(u64, u64)> {
        self.ckpt.as_ref().map(|c| (c.pages_read(), c.h.n_pages()))
    }

    /// The tid of the checkpoint part's last transaction (0 without one).
    fn ckpt_tid(&self) -> Tid {
        self.ckpt.as_ref().map_or(Tid::ZERO, |c| c.h.last_tid)
    }

    fn overlay(&self, key: &Key) -> &[Version] {
        self.versions.get(key).map_or(&[], |v| v.as_slice())
    }

    fn key_versions(&self, key: &Key) -> Result<KeyVersions<'_>> {
        let ck = match &self.ckpt {
            Some(c) => c.find(key)?.map(|k| (&**c, k)),
            None => None,
        };
        Ok(KeyVersions {
            ck,
            ov: self.overlay(key),
        })
    }

    /// The whole index as a checkpoint of log `uuid` (reads all of the checkpoint part).
    fn to_checkpoint(&self, uuid: u64) -> Result<Checkpoint> {
        Ok(Checkpoint {
            log_uuid: uuid,
            covered_end: self.end,
            last_tid: self.last_tid,
            last_tx_crc: self.last_tx_crc,
            txs: self.all_txs()?,
            keys: self.all_versions()?,
        })
    }

    /// The version of `key` visible at `at` (the newest with tid ≤ at).
    pub fn version_at(&self, key: &Key, at: Tid) -> Result<Option<Version>> {
        let ov = self.overlay(key);
        if let Some(i) = ov.partition_point(|v| v.tid <= at).checked_sub(1) {
            return Ok(Some(ov[i]));
        }
        let kv = self.key_versions(key)?;
        match kv.count_at(at)?.checked_sub(1) {
            Some(i) => kv.get(i).map(Some),
            None => Ok(None),
        }
    }

    /// The chain of the version of `key` visible at `at`: the full version it rests on,
    /// then the deltas to apply to it, oldest first (just the version itself when it is
    /// not a delta). None if the key has no version at `at`.
    pub fn chain_at(&self, key: &Key, at: Tid) -> Result<Option<Vec<Version>>> {
        let ov = self.overlay(key);
        if let Some(i) = ov.partition_point(|v| v.tid <= at).checked_sub(1) {
            // Most chains end in the overlay without reaching back past it.
            let from_overlay = KeyVersions { ck: None, ov };
            let base = (i.saturating_sub(format::MAX_DELTA_CHAIN)..=i)
                .rev()
                .find(|&j| !ov[j].encoding.is_delta());
            if base.is_some() || i >= format::MAX_DELTA_CHAIN {
                return from_overlay.chain_ending(i as u64).map(Some);
            }
        }
        let kv = self.key_versions(key)?;
        match kv.count_at(at)?.checked_sub(1) {
            Some(i) => kv.chain_ending(i).map(Some),
            None => Ok(None),
        }
    }

    /// The newest version of `key`.
    pub fn latest(&self, key: &Key) -> Result<Option<Version>> {
        if let Some(v) = self.overlay(key).last() {
            return Ok(Some(*v));
        }
        let kv = self.key_versions(key)?;
        match kv.ck_len().checked_sub(1) {
            Some(i) => kv.get(i).map(Some),
            None => Ok(None),
        }
    }

    /// The catalog (META) versions visible at `tid`, by array id.
    pub fn metas_at(&self, tid: Tid) -> Result<Vec<(u64, Version)>> {
        let mut ids: BTreeMap<u64, Option<KeySlot>> =
            self.arrays.iter().map(|&a| (a, None)).collect();
        if let Some(c) = &self.ckpt {
            let from = c.lower_bound(&Key::Meta { array: 0 })?;
            for k in c.keys_from(from, |k| matches!(k.key, Key::Meta { .. }))? {
                if let Key::Meta { array } = k.key {
                    ids.insert(array, Some(k));
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for (a, slot) in ids {
            let kv = KeyVersions {
                ck: slot.and_then(|k| Some((&**self.ckpt.as_ref()?, k))),
                ov: self.overlay(&Key::Meta { array: a }),
            };
            if let Some(i) = kv.count_at(tid)?.checked_sub(1) {
                out.push((a, kv.get(i)?));
            }
        }
        Ok(out)
    }

    /// Every key in `lo..=hi` with all its versions, in key order (reads the
    /// checkpoint's entries in that range).
    pub fn range_versions(&self, lo: &Key, hi: &Key) -> Result<Vec<(Key, Vec<Version>)>> {
        let mut out: BTreeMap<Key, Vec<Version>> = BTreeMap::new();
        if let Some(c) = &self.ckpt {
            for k in c.keys_from(c.lower_bound(lo)?, |k| k.key <= *hi)? {
                out.insert(k.key, c.versions_of(&k)?);
            }
        }
        for (k, vs) in &self.versions {
            if lo <= k && k <= hi {
                out.entry(*k).or_default().extend_from_slice(vs);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every key with all its versions, in key order (reads the whole checkpoint).
    pub fn all_versions(&self) -> Result<Vec<(Key, Vec<Version>)>> {
        self.range_versions(&Key::Block { array: 0, blk: 0 }, &Key::Names)
    }

    /// Every committed transaction, ascending.
    pub fn all_txs(&self) -> Result<Vec<TxEntry>> {
        let mut out = match &self.ckpt {
            Some(c) => c.all_txs()?,
            None => Vec::new(),
        };
        out.extend_from_slice(&self.txs);
        Ok(out)
    }

    /// The committed transactions with tids above `t`, ascending (reads the checkpoint
    /// only when `t` is older than its last transaction).
    pub fn txs_after(&self, t: Tid) -> Result<Vec<TxEntry>> {
        if t >= self.ckpt_tid() {
            return Ok(self.txs.iter().filter(|x| x.tid > t).copied().collect());
        }
        Ok(self.all_txs()?.into_iter().filter(|x| x.tid > t).collect())
    }

    /// The number of committed transactions.
    pub fn tx_count(&self) -> u64 {
        self.ckpt.as_ref().map_or(0, |c| c.h.n_tx) + self.txs.len() as u64
    }

    /// The tid of the first committed transaction (None if there is none).
    pub fn first_tid(&self) -> Result<Option<Tid>> {
        match &self.ckpt {
            Some(c) if c.h.n_tx > 0 => Ok(Some(c.tx(0)?.tid)),
            _ => Ok(self.txs.first().map(|t| t.tid)),
        }
    }

    /// The keys written by each transaction with a tid in `(from, to]` (reads the whole
    /// checkpoint when `from` is older than its last transaction).
    pub fn keys_by_tid(&self, from: Tid, to: Tid) -> Result<BTreeMap<Tid, Vec<Key>>> {
        let range = (
            std::ops::Bound::Excluded(from),
            std::ops::Bound::Included(to),
        );
        let mut out: BTreeMap<Tid, Vec<Key>> = BTreeMap::new();
        if from < to && from < self.ckpt_tid() {
            if let Some(c) = &self.ckpt {
                for t in c.all_txs()? {
                    if t.tid > from && t.tid <= to {
                        out.insert(t.tid, Vec::new());
                    }
                }
                for (k, vs) in c.all_keys()? {
                    for v in vs {
                        if let Some(ks) = out.get_mut(&v.tid) {
                            ks.push(k);
                        }
                    }
                }
            }
        }
        if from < to {
            for (t, ks) in self.by_tid.range(range) {
                out.insert(*t, ks.clone());
            }
        }
        Ok(out)
    }

    /// Debug check of the numbered invariants 1–3 (of the overlay, and of its relation
    /// to the checkpoint part, which is not read: its pages are checked as they are).
    pub fn assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let floor = self.ckpt_tid();
        for (k, vs) in &self.versions {
            assert!(
                vs.windows(2).all(|w| w[0].tid < w[1].tid),
                "versions of {k:?} not ascending"
            );
            assert!(
                vs.iter().all(|v| v.tid <= self.last_tid && v.tid > floor),
                "version of {k:?} newer than last tid or not newer than the checkpoint"
            );
        }
        assert!(
            self.txs.windows(2).all(|w| w[0].tid < w[1].tid),
            "txs not ascending"
        );
        assert!(self.txs.first().is_none_or(|t| t.tid > floor));
        if let Some(t) = self.txs.last() {
            assert_eq!(t.off + t.len, self.end, "last tx does not end at end");
            assert_eq!(t.tid, self.last_tid);
        } else if let Some(c) = &self.ckpt {
            assert_eq!((c.h.covered_end, c.h.last_tid), (self.end, self.last_tid));
        }
        assert_eq!(self.by_tid.len(), self.txs.len());
    }
}

/// Pages carried by a delta version (from its logical length; 0 for a full version).
pub fn delta_pages(v: &Version) -> u64 {
    if !v.encoding.is_delta() {
        return 0;
    }
    u64::from(v.logical_len).saturating_sub(format::DELTA_HEADER_SIZE as u64)
        / format::DELTA_PAGE_COST as u64
}

/// The stored payload of version `v`, as `verify` names it.
fn stored_of(v: &Version) -> Stored {
    Stored {
        offset: v.payload_off(),
        len: u64::from(v.stored_len),
        crc: v.data_crc,
    }
}

/// One log file and its index.
#[derive(Debug)]
pub struct Gen {
    /// The log file.
    pub log: Log,
    /// Its index.
    pub index: RwLock<Index>,
    /// When stored versions of this file need a CRC check, and which this process
    /// (or, `Verify::OncePerBoot`, this boot) already checked.
    checked: Checked,
}

impl Gen {
    /// The generation of `log` with index `index`, checking raw versions as `verify`
    /// says (sharing what was checked through `table` under `Verify::OncePerBoot`).
    pub fn new(log: Log, index: Index, verify: Verify, table: Option<Arc<BootTable>>) -> Gen {
        let checked = Checked::new(verify, log.identity(), table);
        Gen {
            log,
            index: RwLock::new(index),
            checked,
        }
    }

    /// Run `f` on the index (under its read lock). If the index's checkpoint part turns
    /// out damaged (a page fails its CRC or holds impossible values, or cannot be read),
    /// rebuild the index from the log and run `f` again on that: a damaged checkpoint
    /// costs a scan of the log, never a wrong answer. Errors of `f` that are not the
    /// checkpoint's are returned as they are.
    pub fn with_index<R>(&self, mut f: impl FnMut(&Index) -> Result<R>) -> Result<R> {
        {
            let ix = self.index.read();
            match f(&ix) {
                Err(e) if ix.ckpt_failed() => {
                    tracing::warn!(error = %e, "index checkpoint damaged; rebuilding the index from the log");
                }
                r => return r,
            }
        }
        self.rebuild_index()?;
        f(&self.index.read())
    }

    /// Replace an index whose checkpoint part failed by one built from the log's
    /// transaction headers up to the index's end (under the index's write lock, so
    /// readers wait for the scan: this is the rare path). The new index has no
    /// checkpoint part and counts as not checkpointed, so the next checkpoint written
    /// replaces the damaged file.
    fn rebuild_index(&self) -> Result<()> {
        let mut ix = self.index.write();
        if !ix.ckpt_failed() {
            // Another thread rebuilt it meanwhile.
            return Ok(());
        }
        let (end, last) = (ix.end, ix.last_tid);
        let scan = self
            .log
            .scan_to(format::FILE_HEADER_SIZE, Tid::ZERO, false, end)?;
        let mut nix = Index::empty();
        for tx in &scan.txs {
            nix.apply(tx);
        }
        if nix.end != end || nix.last_tid != last {
            return Err(scan.stop.unwrap_or_else(|| {
                Error::corruption(
                    nix.end,
                    format!(
                        "rebuilding the index: the log's transactions end at {} (tid {}), not at {end} (tid {last})",
                        nix.end, nix.last_tid
                    ),
                )
            }));
        }
        nix.checkpointed_end = format::FILE_HEADER_SIZE;
        *ix = nix;
        Ok(())
    }

    /// The version of `key` visible at `at` (the newest with tid ≤ at).
    pub fn version_at(&self, key: &Key, at: Tid) -> Result<Option<Version>> {
        self.with_index(|ix| ix.version_at(key, at))
    }

    /// The chain of the version of `key` visible at `at` ([`Index::chain_at`]).
    pub fn chain_at(&self, key: &Key, at: Tid) -> Result<Option<Vec<Version>>> {
        self.with_index(|ix| ix.chain_at(key, at))
    }

    /// Load the value of `key` visible at `at` into `buf` (zero-filled past the stored
    /// value). Returns the tid of that version, or None if the key had no version (buf
    /// is then all zeros). The CRC of the stored bytes is checked on every read.
    /// A delta version is resolved through its chain (base, then each delta), every
    /// record's CRCs checked.
    pub fn load(&self, key: &Key, at: Tid, buf: &mut [u8]) -> Result<Option<Version>> {
        let chain = self.chain_at(key, at)?;
        let Some(chain) = chain else {
            buf.fill(0);
            return Ok(None);
        };
        self.read_chain(&chain, buf)?;
        Ok(chain.last().copied())
    }

    /// Read a chain (as [`Index::chain_at`] returns it) into `buf`, a whole block
    /// (zero-filled past the value).
    pub fn read_chain(&self, chain: &[Version], buf: &mut [u8]) -> Result<()> {
        let (base, deltas) = chain
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("empty chain".into()))?;
        // A raw base is trusted under `Verify::Off`; what deltas add is checked.
        self.read_full(base, buf, self.checked.mode() != Verify::Off)?;
        let mut cur = usize::try_from(base.logical_len)
            .map_err(|_| Error::corruption(base.rec_off, "logical length"))?;
        let mut prev = base.rec_off;
        for d in deltas {
            let payload = self.read_delta(d, prev)?;
            let dp = format::DeltaPayload::decode(&payload, d.payload_off())?;
            dp.apply(buf, cur, d.rec_off)?;
            cur = usize::try_from(dp.result_len)
                .map_err(|_| Error::corruption(d.rec_off, "delta result length"))?;
            prev = d.rec_off;
        }
        Ok(())
    }

    /// Resolve a chain to the value's bytes, cut to its logical length (for
    /// compaction, which does not know block sizes).
    pub fn resolve_chain(&self, chain: &[Version]) -> Result<Vec<u8>> {
        let (base, deltas) = chain
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("empty chain".into()))?;
        let mut buf = vec![
            0u8;
            usize::try_from(base.logical_len)
                .map_err(|_| Error::corruption(base.rec_off, "logical length"))?
        ];
        self.read_version(base, &mut buf)?;
        let mut prev = base.rec_off;
        for d in deltas {
            let payload = self.read_delta(d, prev)?;
            let dp = format::DeltaPayload::decode(&payload, d.payload_off())?;
            let cur = buf.len();
            let new_len = usize::try_from(dp.result_len)
                .map_err(|_| Error::corruption(d.rec_off, "delta result length"))?;
            buf.resize(cur.max(new_len), 0);
            dp.apply(&mut buf, cur, d.rec_off)?;
            buf.truncate(new_len);
            prev = d.rec_off;
        }
        Ok(buf)
    }

    /// Read a delta record (header and payload, one read) whose base is the record at
    /// `base_off`: checks the header CRC, that it matches the index and points back to
    /// that base, and the payload CRC; returns the delta payload (decompressed).
    pub fn read_delta(&self, d: &Version, base_off: u64) -> Result<Vec<u8>> {
        let stored = usize::try_from(d.stored_len)
            .map_err(|_| Error::corruption(d.rec_off, "stored length"))?;
        let hs = format::RECORD_HEADER_SIZE;
        let mut b = vec![0u8; hs + stored];
        self.log.read_exact_at(&mut b, d.rec_off)?;
        let rh = format::RecordHeader::decode(&b[..hs], d.rec_off)?;
        if rh.encoding != d.encoding
            || rh.stored_len != d.stored_len
            || rh.logical_len != d.logical_len
            || rh.data_crc != d.data_crc
        {
            return Err(Error::corruption(
                d.rec_off,
                "delta record header does not match the index",
            ));
        }
        if rh.prev_off != base_off {
            return Err(Error::corruption(
                d.rec_off + 24,
                format!(
                    "delta back pointer {} but the previous version of its block is at {base_off}",
                    rh.prev_off
                ),
            ));
        }
        if crate::verify::crc32(&b[hs..]) != rh.data_crc {
            return Err(Error::corruption(
                d.payload_off(),
                format!("data CRC mismatch (delta of tid {})", d.tid),
            ));
        }
        match d.encoding {
            Encoding::DeltaZstd => {
                let mut out =
                    vec![
                        0u8;
                        usize::try_from(d.logical_len)
                            .map_err(|_| Error::corruption(d.rec_off, "logical length"))?
                    ];
                encode::decompress_into(&b[hs..], &mut out, d.payload_off())?;
                Ok(out)
            }
            _ => {
                b.drain(..hs);
                Ok(b)
            }
        }
    }

    /// How many of `samples` pages spread evenly over the block differ between `data`
    /// (a whole block) and the raw full version `v`, reading only those pages. A hint
    /// for choosing between a delta and a full block, so the pages are not
    /// CRC-checked here (a delta is always computed from a checked read).
    pub fn sample_raw_diffs(&self, v: &Version, data: &[u8], samples: usize) -> Result<usize> {
        if v.encoding != Encoding::Raw {
            return Err(Error::InvalidArgument("not a raw version".into()));
        }
        let pages = data.len() / PAGE;
        let stored = usize::try_from(v.logical_len).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; PAGE];
        let mut diffs = 0;
        for k in 0..samples.min(pages) {
            let i = (2 * k + 1) * pages / (2 * samples.min(pages));
            let new = &data[i * PAGE..(i + 1) * PAGE];
            let same = if (i + 1) * PAGE <= stored {
                self.log
                    .read_exact_at(&mut buf, v.payload_off() + (i * PAGE) as u64)?;
                new == &buf[..]
            } else {
                new.iter().all(|&b| b == 0)
            };
            diffs += usize::from(!same);
        }
        Ok(diffs)
    }

    /// Small writes: pages `pages` (4 KiB each, any order) of the value a chain (as
    /// [`Index::chain_at`] returns it) resolves to, into `out` (4 KiB per entry, in
    /// order), reading only what they need: each page comes from the newest delta that
    /// carries it, else from the full version, zeros past a version's length. Every
    /// record read is CRC-checked: the deltas as they are read; a raw full version once
    /// per process through a mapping of the file (the check zero-copy reads make, shared
    /// with them), then only its pages are read; other full versions are read whole.
    pub fn read_pages(&self, chain: &[Version], pages: &[u32], out: &mut [u8]) -> Result<()> {
        if out.len() != pages.len() * PAGE {
            return Err(Error::InvalidArgument(format!(
                "{} bytes for {} pages",
                out.len(),
                pages.len()
            )));
        }
        let (base, deltas) = chain
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("empty chain".into()))?;
        let mut payloads = Vec::with_capacity(deltas.len());
        let mut prev = base.rec_off;
        for d in deltas {
            payloads.push((self.read_delta(d, prev)?, d.payload_off()));
            prev = d.rec_off;
        }
        let decoded = payloads
            .iter()
            .map(|(p, off)| format::DeltaPayload::decode(p, *off))
            .collect::<Result<Vec<_>>>()?;
        let mut from_base: Vec<(usize, u32)> = Vec::new();
        'pages: for (k, (&i, dst)) in pages.iter().zip(out.chunks_exact_mut(PAGE)).enumerate() {
            let at = u64::from(i) * PAGE as u64;
            for dp in decoded.iter().rev() {
                if at >= u64::from(dp.result_len) {
                    dst.fill(0);
                    continue 'pages;
                }
                if let Some((_, bytes)) = dp.pages().find(|&(j, _)| j == i) {
                    dst.copy_from_slice(bytes);
                    continue 'pages;
                }
            }
            from_base.push((k, i));
        }
        if from_base.is_empty() {
            return Ok(());
        }
        let stored = usize::try_from(base.stored_len)
            .map_err(|_| Error::corruption(base.rec_off, "stored length"))?;
        let logical = usize::try_from(base.logical_len)
            .map_err(|_| Error::corruption(base.rec_off, "logical length"))?;
        match base.encoding {
            Encoding::Hole => {
                for (k, _) in from_base {
                    out[k * PAGE..(k + 1) * PAGE].fill(0);
                }
            }
            Encoding::Raw => {
                // Read only the pages asked, checked: not at all when the payload is
                // known checked (or trusted), else against the page CRC table
                // (storage-format.md §2.7) when it has one, else by the whole
                // payload's CRC, read through the file and recorded.
                let off = base.payload_off();
                let sv = stored_of(base);
                let table = if !self.checked.needs_check(&sv) {
                    None
                } else if base.has_page_crcs() {
                    Some(
                        self.page_table(base)?
                            .ok_or_else(|| Error::corruption(base.rec_off, "page CRC table"))?,
                    )
                } else {
                    self.check_range(&sv)?;
                    None
                };
                for (k, i) in from_base {
                    let dst = &mut out[k * PAGE..(k + 1) * PAGE];
                    let at = usize::try_from(i)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(PAGE);
                    let n = stored.min(logical).saturating_sub(at).min(PAGE);
                    if n > 0 {
                        self.log.read_exact_at(&mut dst[..n], off + at as u64)?;
                        // Pages past the stored bytes are zeros (n == 0); a stored
                        // page is checked against its table entry.
                        if let Some(table) = &table {
                            if verify::check_pages(&dst[..n], &table[at / PAGE..]).is_some() {
                                return Err(Error::corruption(
                                    off + at as u64,
                                    format!(
                                        "data CRC mismatch in page {} (version of tid {})",
                                        at / PAGE,
                                        base.tid
                                    ),
                                ));
                            }
                        }
                    }
                    dst[n..].fill(0);
                }
            }
            _ => {
                // Compressed: read (and check) the value whole.
                let mut buf = vec![0u8; logical];
                self.read_version(base, &mut buf)?;
                for (k, i) in from_base {
                    let dst = &mut out[k * PAGE..(k + 1) * PAGE];
                    let at = usize::try_from(i)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(PAGE);
                    let n = logical.saturating_sub(at).min(PAGE);
                    if n > 0 {
                        dst[..n].copy_from_slice(&buf[at..at + n]);
                    }
                    dst[n..].fill(0);
                }
            }
        }
        Ok(())
    }

    /// Zero-copy reads of a delta-chained block: the raw base version of the chain of
    /// `key` at `at` as a file slice (checked like [`Gen::map_source`]: its CRC once per
    /// process), with the pages its deltas change as overlay pages (read and checked
    /// through [`Gen::read_pages`]). None when the version is not a delta on a raw,
    /// page-aligned base, or a delta cuts the value shorter than the base (the pages
    /// past its end would need zeroing too).
    pub fn map_chain(
        self: &Arc<Self>,
        key: &Key,
        at: Tid,
        block_size: usize,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        let Some(chain) = self.chain_at(key, at)? else {
            return Ok(None);
        };
        let (base, deltas) = match chain.split_first() {
            Some((b, d)) if !d.is_empty() && b.encoding == Encoding::Raw => (b, d),
            _ => return Ok(None),
        };
        let page = rustix::param::page_size() as u64;
        let off = base.payload_off();
        let stored = u64::from(base.stored_len);
        let Some((fd, keep)) = self.log.map_fd(off, stored) else {
            return Ok(None);
        };
        if page != PAGE as u64
            || off % page != 0
            || stored % page != 0
            || stored > block_size as u64
            || u64::from(base.logical_len) > block_size as u64
            || stored > u64::from(base.logical_len)
        {
            return Ok(None);
        }
        let mut prev = base.rec_off;
        let mut idx: Vec<u32> = Vec::new();
        for d in deltas {
            let p = self.read_delta(d, prev)?;
            let dp = format::DeltaPayload::decode(&p, d.payload_off())?;
            if u64::from(dp.result_len) < u64::from(base.logical_len)
                || u64::from(dp.result_len) > block_size as u64
            {
                return Ok(None);
            }
            idx.extend(dp.pages().map(|(i, _)| i));
            prev = d.rec_off;
        }
        idx.sort_unstable();
        idx.dedup();
        let sv = stored_of(base);
        if self.checked.needs_check(&sv) {
            self.check_range(&sv)?;
        }
        let mut bytes = vec![0u8; idx.len() * PAGE];
        self.read_pages(&chain, &idx, &mut bytes)?;
        let pages: Vec<(u32, Box<[u8]>)> = idx
            .iter()
            .zip(bytes.chunks_exact(PAGE))
            .map(|(&i, b)| (i, Box::from(b)))
            .collect();
        Ok(Some(crate::bigfile::FileSlice {
            fd,
            keep: keep.unwrap_or_else(|| self.clone()),
            offset: off,
            len: stored as usize,
            pages: Some(pages.into()),
            crc: None,
            page_crcs: None,
        }))
    }

    /// The logical length of the value a chain resolves to: the full version's, or the
    /// result length of its newest delta (read and checked).
    pub fn chain_len(&self, chain: &[Version]) -> Result<u64> {
        match chain {
            [] => Err(Error::InvalidArgument("empty chain".into())),
            [only] => Ok(u64::from(only.logical_len)),
            [.., prev, last] => {
                let p = self.read_delta(last, prev.rec_off)?;
                Ok(u64::from(
                    format::DeltaPayload::decode(&p, last.payload_off())?.result_len,
                ))
            }
        }
    }

    /// Zero-copy reads of any version that has them: [`Gen::map_source`] for a raw
    /// block, else [`Gen::map_chain`] for a delta chain over a raw base.
    pub fn map_block(
        self: &Arc<Self>,
        key: &Key,
        at: Tid,
        block_size: usize,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        match self.map_source(key, at, block_size)? {
            Some(s) => Ok(Some(s)),
            None => self.map_chain(key, at, block_size),
        }
    }

    /// Zero-copy reads: the file bytes of the version of `key` visible at `at`, if it is
    /// a full raw block of `block_size` bytes stored page-aligned (storage-format.md
    /// §2.2) in a real file; None for a hole, a compressed or delta version, a key never
    /// written, or a log that is not a file. Until [`Gen::mark_checked`] records that
    /// this process checked the bytes, the slice carries the data CRC for the caller to
    /// check (virtmem does, through the mapping that serves the block); afterwards it
    /// carries none: committed bytes never change.
    pub fn map_source(
        self: &Arc<Self>,
        key: &Key,
        at: Tid,
        block_size: usize,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        let Some(v) = self.version_at(key, at)? else {
            return Ok(None);
        };
        if v.encoding != Encoding::Raw {
            return Ok(None);
        }
        let page = rustix::param::page_size() as u64;
        let off = v.payload_off();
        let stored = u64::from(v.stored_len);
        let Some((fd, keep)) = self.log.map_fd(off, stored) else {
            return Ok(None);
        };
        if off % page != 0
            || stored % page != 0
            || stored > block_size as u64
            || u64::from(v.logical_len) > block_size as u64
            || stored > u64::from(v.logical_len)
        {
            return Ok(None);
        }
        let crc = self
            .checked
            .needs_check(&stored_of(&v))
            .then_some(v.data_crc);
        let page_crcs = match crc {
            Some(_) => self.page_table(&v)?.map(Arc::from),
            None => None,
        };
        Ok(Some(crate::bigfile::FileSlice {
            fd,
            keep: keep.unwrap_or_else(|| self.clone()),
            offset: off,
            len: stored as usize,
            pages: None,
            crc,
            page_crcs,
        }))
    }

    /// The page CRC table of version `v` (storage-format.md §2.7), read and checked
    /// (its own CRC; a mismatch is `Corruption`, the table is never trusted); None if
    /// the record has none.
    pub fn page_table(&self, v: &Version) -> Result<Option<Vec<u32>>> {
        if !v.has_page_crcs() {
            return Ok(None);
        }
        let len = usize::try_from(v.table_len())
            .map_err(|_| Error::corruption(v.rec_off, "page CRC table length"))?;
        let mut b = vec![0u8; len];
        self.log.read_exact_at(&mut b, v.rec_off + v.table_rel())?;
        format::decode_page_table(&b, v.stored_len, v.rec_off).map(Some)
    }

    /// The mapped bytes of `src` (from [`Gen::map_source`] or [`Gen::map_chain`])
    /// matched their CRC: record it (`verify`).
    pub fn mark_checked(&self, src: &crate::bigfile::FileSlice) {
        if let Some(crc) = src.crc {
            self.checked.record(&Stored {
                offset: src.offset,
                len: src.len as u64,
                crc,
            });
        }
    }

    /// About to check the mapped bytes of `src` whole: `false` if another process
    /// checked them meanwhile ([`Checked::claim`]).
    pub fn claim_check(&self, src: &crate::bigfile::FileSlice) -> bool {
        match src.crc {
            Some(crc) => self.checked.claim(&Stored {
                offset: src.offset,
                len: src.len as u64,
                crc,
            }),
            None => false,
        }
    }

    /// Check the whole stored payload `v` read through the file (in pieces) against
    /// its CRC, and record the match.
    fn check_range(&self, v: &Stored) -> Result<()> {
        let got = verify::crc_of_range(|b, o| self.log.read_exact_at(b, o), v.offset, v.len)?;
        if got != v.crc {
            return Err(Error::corruption(
                v.offset,
                format!("data CRC mismatch ({got:#010x}, recorded {:#010x})", v.crc),
            ));
        }
        self.checked.record(v);
        Ok(())
    }

    /// The verification mode of this file's reads.
    #[cfg(any(test, feature = "internals"))]
    pub fn verify_mode(&self) -> Verify {
        self.checked.mode()
    }

    /// Read one full version into `buf` (which must be at least its logical length),
    /// its CRC checked whatever the verification mode (compaction, the catalog). A
    /// delta version is read with [`Gen::load`] or [`Gen::read_chain`].
    pub fn read_version(&self, v: &Version, buf: &mut [u8]) -> Result<()> {
        self.read_full(v, buf, true)
    }

    /// [`Gen::read_version`]; `check_raw`: check a raw payload's CRC (compressed ones
    /// are always checked, as they are decompressed).
    fn read_full(&self, v: &Version, buf: &mut [u8], check_raw: bool) -> Result<()> {
        let logical = usize::try_from(v.logical_len)
            .map_err(|_| Error::corruption(v.rec_off, "logical length"))?;
        if logical > buf.len() {
            return Err(Error::corruption(
                v.rec_off,
                format!(
                    "value of {logical} bytes does not fit a buffer of {}",
                    buf.len()
                ),
            ));
        }
        let stored = usize::try_from(v.stored_len)
            .map_err(|_| Error::corruption(v.rec_off, "stored length"))?;
        match v.encoding {
            Encoding::DeltaRaw | Encoding::DeltaZstd => {
                return Err(Error::corruption(
                    v.rec_off,
                    "a delta record read as a full value",
                ))
            }
            Encoding::Hole => buf.fill(0),
            Encoding::Raw => {
                self.log
                    .read_exact_at(&mut buf[..stored], v.payload_off())?;
                if check_raw && crate::verify::crc32(&buf[..stored]) != v.data_crc {
                    return Err(Error::corruption(
                        v.payload_off(),
                        format!("data CRC mismatch (version of tid {})", v.tid),
                    ));
                }
                buf[stored..].fill(0);
            }
            Encoding::Zstd => {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                SCRATCH.with(|s| -> Result<()> {
                    let mut s = s.borrow_mut();
                    s.clear();
                    s.resize(stored, 0);
                    self.log.read_exact_at(&mut s, v.payload_off())?;
                    if crate::verify::crc32(&s) != v.data_crc {
                        return Err(Error::corruption(
                            v.payload_off(),
                            format!("data CRC mismatch (version of tid {})", v.tid),
                        ));
                    }
                    encode::decompress_into(&s, &mut buf[..logical], v.payload_off())
                })?;
                buf[logical..].fill(0);
            }
        }
        Ok(())
    }

    /// Last committed tid known to this generation.
    pub fn last_tid(&self) -> Tid {
        self.index.read().last_tid
    }

    /// Oldest tid whose snapshot is complete in this file.
    pub fn base_tid(&self) -> Tid {
        self.log.base_tid()
    }
}

/// One value to commit.
#[derive(Debug, Clone)]
pub struct Write {
    /// Key.
    pub key: Key,
    /// Encoded value.
    pub value: Encoded,
    /// `FLAG_DELETED` for a catalog tombstone.
    pub flags: u8,
}

/// A commit to append.
#[derive(Debug)]
pub struct CommitRequest<'a> {
    /// The snapshot the transaction read at (conflict base).
    pub snapshot: Tid,
    /// The values written, in the order to write them.
    pub writes: &'a [Write],
    /// User name for the history.
    pub user: &'a str,
    /// Description for the history.
    pub desc: &'a str,
    /// Arrays whose blocks are written: the commit conflicts if one was deleted after
    /// the snapshot (its META key's newest version is a tombstone newer than it).
    pub must_exist: &'a [u64],
}

/// A commit in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Its tid.
    pub tid: Tid,
    /// Wall time, ns since the epoch.
    pub wall_ns: u64,
    /// Bytes it takes in the log.
    pub bytes: u64,
    /// Arrays whose blocks or metadata it changed.
    pub arrays: Vec<u64>,
    /// Did it change the set of names?
    pub names_changed: bool,
}

/// The MVCC store of one database path.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    opts: StoreOptions,
    lock: Arc<LockFile>,
    gen: RwLock<Arc<Gen>>,
    poisoned: Mutex<Option<String>>,
    refresh_lock: Mutex<()>,
    /// Wraps the I/O of new spill files (tests inject faults this way).
    spill_io: spill::SpillIoHook,
    /// Spill files are created beside this path: the database file, or for a database
    /// in object storage, its local cache (beside the cache's lock file).
    spill_at: PathBuf,
    /// Where the log lives when it is not the local file at `path` (None: the file).
    remote: Option<Arc<dyn storage::Storage>>,
    /// The per-boot table of checked versions (`Verify::OncePerBoot`, when usable).
    table: Option<Arc<BootTable>>,
}

/// The index a checkpoint of `log` gives, if there is one and it matches the log
/// (storage-format.md §7): a version-3 one opened lazily (its header page read and
/// checked, the rest read by lookups), an older one read and checked whole.
fn load_checkpoint(path: &Path, log: &Log) -> Option<Index> {
    let c = ckpt::open(path)?;
    let (uuid, covered_end, last_tid, tx_crc) = c.describes();
    if !matches_log(log, uuid, covered_end, last_tid, tx_crc) {
        return None;
    }
    match c {
        ckpt::Opened::Lazy(c) => Some(Index::from_lazy(c)),
        ckpt::Opened::Whole(c) => (c.txs.last().map_or(Tid::ZERO, |t| t.tid) == c.last_tid)
            .then(|| Index::from_checkpoint(c)),
    }
}

/// Does a checkpoint (log uuid, covered end, last tid and its transaction CRC) describe
/// `log`? The covered end must be within the file and, unless the checkpoint covers no
/// transaction, just after a trailer of that tid and CRC (storage-format.md §7).
fn matches_log(log: &Log, uuid: u64, covered_end: u64, last_tid: Tid, tx_crc: u32) -> bool {
    if uuid != log.header().uuid
        || covered_end < format::FILE_HEADER_SIZE
        || log.len().map_or(true, |l| covered_end > l)
    {
        return false;
    }
    if last_tid == Tid::ZERO {
        return covered_end == format::FILE_HEADER_SIZE;
    }
    let mut eb = [0u8; format::TX_END_SIZE];
    let Some(at) = covered_end.checked_sub(format::TX_END_SIZE as u64) else {
        return false;
    };
    if log.read_exact_at(&mut eb, at).is_err() {
        return false;
    }
    format::TxEnd::decode(&eb, 0, None).is_ok_and(|end| end.tid == last_tid && end.tx_crc == tx_crc)
}

impl Store {
    /// Open or create the database at `path`.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        if opts.read_only && !path.exists() {
            return Err(Error::NotFound(format!("database {}", path.display())));
        }
        let lock = Arc::new(LockFile::open(path, opts.read_only)?);
        let log = match Log::open(path, opts.read_only) {
            Ok(l) => l,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !opts.read_only => {
                let _w = lock.writer()?;
                match Log::create(path, Tid::ZERO) {
                    Ok(l) => l,
                    Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Log::open(path, false)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("database {}", path.display())))
            }
            // A crash during creation can leave a file without a valid header (and so
            // without transactions): finish creating it, under the writer lock (the
            // creator may still be writing the header).
            Err(Error::Corruption { .. })
                if !opts.read_only
                    && std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX)
                        <= format::FILE_HEADER_SIZE =>
            {
                let _w = lock.writer()?;
                match Log::reinit_if_headerless(path)? {
                    Some(l) => l,
                    None => Log::open(path, false)?,
                }
            }
            Err(e) => return Err(e),
        };
        Store::open_log(path, log, lock, opts)
    }

    /// Open over a given I/O implementation of the (existing) log file.
    #[cfg(any(test, feature = "internals"))]
    pub fn open_with_io(path: &Path, io: Box<dyn LogIo>, opts: StoreOptions) -> Result<Store> {
        let lock = Arc::new(LockFile::open(path, opts.read_only)?);
        let log = Log::open_io(path, io)?;
        Store::open_log(path, log, lock, opts)
    }

    fn open_log(path: &Path, log: Log, lock: Arc<LockFile>, opts: StoreOptions) -> Result<Store> {
        let table = opts.boot_table();
        let gen = Store::load_gen(log, &lock, opts.read_only, (opts.verify, table.clone()))?;
        Ok(Store::assemble(path, path, (gen, table), lock, None, opts))
    }

    /// A store over an opened generation; its transactions spill beside `spill_at`,
    /// whose leftovers of dead processes a writer removes first.
    fn assemble(
        name: &Path,
        spill_at: &Path,
        (gen, table): (Gen, Option<Arc<BootTable>>),
        lock: Arc<LockFile>,
        remote: Option<Arc<dyn storage::Storage>>,
        opts: StoreOptions,
    ) -> Store {
        if !opts.read_only {
            spill::remove_leftovers(spill_at);
        }
        Store {
            path: name.to_path_buf(),
            opts,
            lock,
            gen: RwLock::new(Arc::new(gen)),
            poisoned: Mutex::new(None),
            refresh_lock: Mutex::new(()),
            spill_io: spill::SpillIoHook::default(),
            spill_at: spill_at.to_path_buf(),
            remote,
            table,
        }
    }

    /// A store whose log lives in `remote` (named `name` in messages and `Db::path`),
    /// opened at `gen` (made with `table`, from [`StoreOptions::boot_table`]); `lock` is
    /// a local lock file (its reader table lists this machine's snapshots).
    #[cfg(any(test, feature = "internals", feature = "s3"))]
    pub fn with_storage(
        name: &Path,
        (gen, table): (Gen, Option<Arc<BootTable>>),
        lock: Arc<LockFile>,
        remote: Arc<dyn storage::Storage>,
        opts: StoreOptions,
    ) -> Store {
        let spill_at = lock.path().with_extension("");
        Store::assemble(name, &spill_at, (gen, table), lock, Some(remote), opts)
    }

    /// The storage of a store whose log is not a local file.
    pub fn storage(&self) -> Option<&Arc<dyn storage::Storage>> {
        self.remote.as_ref()
    }

    /// Check everything stored ([`fsck::check_path`] for a log file).
    pub fn fsck(&self) -> Result<fsck::FsckReport> {
        match &self.remote {
            Some(r) => r.fsck(self),
            None => fsck::check_path(&self.path),
        }
    }

    /// Build the index of `log`: from the checkpoint when it matches, then the tail,
    /// fully verified (data CRCs too). A torn tail is cut under the writer lock.
    fn load_gen(
        log: Log,
        lock: &LockFile,
        read_only: bool,
        (verify, table): (Verify, Option<Arc<BootTable>>),
    ) -> Result<Gen> {
        let mut ix = load_checkpoint(log.path(), &log).unwrap_or_else(Index::empty);
        let scan = log.scan(ix.end, ix.last_tid, true)?;
        for tx in &scan.txs {
            ix.apply(tx);
        }
        if let Some(err) = scan.stop {
            if log.valid_tx_after(scan.end, scan.file_len) {
                return Err(Error::corruption(
                    scan.end,
                    format!("committed transactions follow a bad one ({err}); run `wdbtool fsck`"),
                ));
            }
            if !read_only {
                // Under the writer lock no append is in flight, so what does not form a
                // valid transaction now is a torn tail.
                let _w = lock.writer()?;
                let again = log.scan(ix.end, ix.last_tid, true)?;
                for tx in &again.txs {
                    ix.apply(tx);
                }
                if again.stop.is_some() {
                    log.cut_tail(again.end)?;
                }
                lock.publish(log.header().uuid, ix.end)?;
            }
        }
        Ok(Gen::new(log, ix, verify, table))
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The verification mode and per-boot table a new generation is made with.
    fn verify_with(&self) -> (Verify, Option<Arc<BootTable>>) {
        (self.opts.verify, self.table.clone())
    }
    /// The lock file.
    pub fn lock_file(&self) -> &Arc<LockFile> {
        &self.lock
    }
    /// Is the store read-only?
    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    /// The current generation, without reading the log.
    pub fn current(&self) -> Arc<Gen> {
        self.gen.read().clone()
    }

    /// See other processes' commits: switch files if compaction replaced ours, then read
    /// the new tail of the log (headers only; an incomplete tail is an append in flight
    /// and is left alone). Returns the current generation.
    pub fn refresh(&self) -> Result<Arc<Gen>> {
        self.refresh_inner(false)
    }

    /// `locked`: the caller holds the writer lock, so every complete transaction in the
    /// file counts, published or not (a writer may have died between its write and its
    /// publish). Otherwise the log is read only up to the end published after the
    /// last acknowledged commit, so a commit is never seen before it is durable.
    fn refresh_inner(&self, locked: bool) -> Result<Arc<Gen>> {
        let _r = self.refresh_lock.lock();
        let gen = self.current();
        if let Some(r) = &self.remote {
            r.refresh(&gen)?;
            return Ok(gen);
        }
        if gen.log.path_switched() {
            let log = Log::open(&self.path, self.opts.read_only)?;
            let new = Arc::new(Store::load_gen(log, &self.lock, true, self.verify_with())?);
            *self.gen.write() = new.clone();
            return Ok(new);
        }
        let (end, last) = {
            let ix = gen.index.read();
            (ix.end, ix.last_tid)
        };
        let limit = match self.lock.published() {
            Some((uuid, pend)) if !locked && uuid == gen.log.header().uuid => pend,
            _ => u64::MAX,
        };
        if gen.log.len()?.min(limit) > end {
            let scan = gen.log.scan_to(end, last, false, limit)?;
            if !scan.txs.is_empty() {
                let mut ix = gen.index.write();
                // Another thread may have committed meanwhile; apply only what is new.
                for tx in &scan.txs {
                    if tx.header.tid > ix.last_tid && tx.off == ix.end {
                        ix.apply(tx);
                    }
                }
            }
        }
        Ok(gen)
    }

    /// Register a reader at `tid` in the lock file's reader table.
    pub fn register_reader(&self, tid: Tid) -> Result<Option<ReaderSlot>> {
        self.lock.register_reader(tid)
    }

    /// A new spill file beside the database, for a transaction's staged payloads that
    /// do not fit in RAM (or for compaction's).
    pub fn create_spill(&self) -> Result<Arc<spill::SpillFile>> {
        spill::SpillFile::create(&self.spill_at, self.spill_io.0.lock().as_ref())
    }

    /// Wrap the I/O of spill files created from now on (`None`: the plain file). For
    /// tests that inject faults into spill writes and reads.
    #[cfg(any(test, feature = "internals"))]
    pub fn set_spill_io(&self, f: Option<spill::SpillIoFactory>) {
        *self.spill_io.0.lock() = f;
    }

    /// Fail if poisoned.
    pub fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&self, e: &Error) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(e.to_string());
        }
    }

    /// Commit: under the writer lock, catch up with the log, fail with `Conflict` if a
    /// written key has a version newer than the snapshot, append one transaction and
    /// (with `sync`) fdatasync it. `name` renders a key for the conflict message.
    pub fn commit(&self, req: &CommitRequest<'_>, name: &dyn Fn(&Key) -> String) -> Result<Tid> {
        if self.opts.read_only {
            return Err(Error::ReadOnly("the database was opened read-only".into()));
        }
        self.check_poisoned()?;
        if let Some(r) = &self.remote {
            return r.commit(self, req, name);
        }
        let _w = self.lock.writer()?;
        self.check_poisoned()?;
        let gen = self.refresh_inner(true)?;
        gen.index.read().assert_invariants();
        let (len, end) = (gen.log.len()?, gen.index.read().end);
        if len < end {
            // Committed bytes this process has seen are gone (the file was truncated or
            // replaced behind wdb's back): appending would leave a hole. Refuse.
            return Err(Error::corruption(
                len,
                format!("the log is {len} bytes but its committed transactions end at {end}"),
            ));
        }
        // Under the lock, an invalid tail is a torn write of a writer that failed or died.
        if gen.log.len()? != gen.index.read().end {
            let end = gen.index.read().end;
            let scan = gen.log.scan(end, gen.last_tid(), false)?;
            if scan.txs.is_empty() && scan.stop.is_some() {
                if gen.log.valid_tx_after(end, scan.file_len) {
                    return Err(Error::corruption(
                        end,
                        "committed transactions follow a bad one; run `wdbtool fsck`",
                    ));
                }
                gen.log.cut_tail(end)?;
            }
        }
        let wall = now_ns();
        let (tid, enc) = encode_commit(&gen, req, name, wall)?;
        let start = gen.index.read().end;
        if let Err(e) = gen.log.append(start, &enc, self.opts.sync) {
            self.poison(&e);
            // Never acknowledged, so not committed: take the bytes back (best effort; if
            // this fails too, recovery cuts them as a torn tail or, if they were
            // written completely, they appear as a commit the caller was told failed —
            // the fsync-failure case storage-format.md describes).
            let _ = gen.log.truncate_unacknowledged(start);
            return Err(e);
        }
        // Acknowledged: let other processes see it.
        if let Err(e) = self
            .lock
            .publish(gen.log.header().uuid, start + enc.total_len)
        {
            tracing::warn!(error = %e, "could not publish the commit in the lock file");
        }
        let scanned = ScannedTx {
            off: start,
            header: format::TxHeader {
                n_records: enc.end.n_records,
                total_len: enc.total_len,
                tid,
                wall_ns: wall,
                user_len: 0,
                desc_len: 0,
            },
            user: String::new(),
            desc: String::new(),
            records: enc
                .record_offsets
                .iter()
                .copied()
                .zip(enc.headers.iter().copied())
                .collect(),
            end: enc.end,
        };
        let need_ckpt = {
            let mut ix = gen.index.write();
            // A concurrent refresh in this process may already have read it from the file.
            if ix.last_tid < tid {
                ix.apply(&scanned);
            }
            ix.end - ix.checkpointed_end >= self.opts.checkpoint_bytes
        };
        if need_ckpt {
            // A checkpoint is an optimisation: failing to write one does not fail the commit.
            if let Err(e) = self.write_checkpoint() {
                tracing::warn!(error = %e, "could not write the index checkpoint");
            }
        }
        Ok(tid)
    }

    /// Persist the index of the current generation (atomically: temp file + rename).
    pub fn write_checkpoint(&self) -> Result<()> {
        if self.opts.read_only {
            return Ok(());
        }
        let gen = self.current();
        if let Some(r) = &self.remote {
            return r.checkpoint(&gen, true);
        }
        let (c, end) =
            gen.with_index(|ix| Ok((ix.to_checkpoint(gen.log.header().uuid)?, ix.end)))?;
        let bytes = c.encode()?;
        let dst = checkpoint_path(&self.path);
        write_atomically(&dst, &bytes)?;
        gen.index.write().checkpointed_end = end;
        Ok(())
    }

    /// Keys changed by commits in `(from, to]` (refreshing first).
    pub fn changed(&self, from: Tid, to: Tid) -> Result<Vec<Key>> {
        let gen = self.refresh()?;
        if from < gen.base_tid() && from < to {
            // Compaction dropped some of the commits in the range: report every key.
            return gen
                .with_index(|ix| Ok(ix.all_versions()?.into_iter().map(|(k, _)| k).collect()));
        }
        let by_tid = gen.with_index(|ix| ix.keys_by_tid(from, to))?;
        let mut out: Vec<Key> = by_tid.into_values().flatten().collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The commits, oldest first.
    pub fn history(&self) -> Result<Vec<Commit>> {
        let gen = self.refresh()?;
        let (txs, by_tid) =
            gen.with_index(|ix| Ok((ix.all_txs()?, ix.keys_by_tid(Tid::ZERO, ix.last_tid)?)))?;
        Ok(txs
            .iter()
            .map(|t| {
                let keys = by_tid.get(&t.tid).map(|v| v.as_slice()).unwrap_or(&[]);
                let mut arrays: Vec<u64> = keys.iter().filter_map(|k| k.array()).collect();
                arrays.sort_unstable();
                arrays.dedup();
                Commit {
                    tid: t.tid,
                    wall_ns: t.wall_ns,
                    bytes: t.len,
                    arrays,
                    names_changed: keys.contains(&Key::Names),
                }
            })
            .collect())
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The middle of every commit, whatever the storage: against the index of `gen` (which
/// the caller brought up to date with everything committed), fail with `Conflict` if a
/// written key has a version newer than the snapshot (or an array written to was deleted
/// since), then encode the transaction with the next tid at the end of the log, back
/// pointers to the keys' newest versions. `name` renders a key for the conflict message.
pub(crate) fn encode_commit<'a>(
    gen: &Gen,
    req: &'a CommitRequest<'a>,
    name: &dyn Fn(&Key) -> String,
    wall: u64,
) -> Result<(Tid, format::EncodedTx<'a>)> {
    // The newest version of each key written and of each array that must exist: the
    // checkpoint part is needed too, not only for back pointers — a snapshot may
    // predate the checkpoint of a file that compaction switched to since.
    let (latest, metas, last_tid, end) = gen.with_index(|ix| {
        let latest = req
            .writes
            .iter()
            .map(|w| ix.latest(&w.key))
            .collect::<Result<Vec<_>>>()?;
        let metas = req
            .must_exist
            .iter()
            .map(|&a| ix.latest(&Key::Meta { array: a }))
            .collect::<Result<Vec<_>>>()?;
        Ok((latest, metas, ix.last_tid, ix.end))
    })?;
    for (w, l) in req.writes.iter().zip(&latest) {
        if let Some(v) = l {
            if v.tid > req.snapshot {
                return Err(Error::Conflict {
                    what: name(&w.key),
                    snapshot: req.snapshot,
                    by: v.tid,
                });
            }
        }
        // A delta was computed against the version at the snapshot, which is
        // (no conflict) the newest one, and becomes its back pointer below.
        if w.value.encoding.is_delta()
            && (gen.log.header().version < format::DELTA_FORMAT_VERSION || l.is_none())
        {
            return Err(Error::InvalidArgument(format!(
                "delta record for {} without a base version in a format version {} file",
                name(&w.key),
                gen.log.header().version
            )));
        }
    }
    for (&a, m) in req.must_exist.iter().zip(&metas) {
        if let Some(v) = m {
            if v.tid > req.snapshot && is_tombstone(v) {
                return Err(Error::Conflict {
                    what: format!("{} (deleted)", name(&Key::Meta { array: a })),
                    snapshot: req.snapshot,
                    by: v.tid,
                });
            }
        }
    }
    let tid = Tid(last_tid
        .0
        .checked_add(1)
        .ok_or_else(|| Error::OutOfRange("tid space exhausted".into()))?);
    let recs: Vec<RecordIn<'_>> = req
        .writes
        .iter()
        .zip(&latest)
        .map(|(w, l)| RecordIn {
            key: w.key,
            encoding: w.value.encoding,
            // Version 4 files get 2 MiB-aligned raw payloads (§2.8).
            flags: w.flags
                | format::layout_flags(
                    gen.log.header().version,
                    &w.key,
                    w.value.encoding,
                    w.value.payload.len(),
                ),
            prev_off: l.map(|v| v.rec_off).unwrap_or(0),
            logical_len: w.value.logical_len,
            payload: w.value.payload.src(),
            data_crc: w.value.data_crc,
            // A file keeps its format version (storage-format.md §2.7): only
            // version 3 files get page CRC tables.
            page_crcs: w.value.table_src().filter(|_| {
                matches!(w.key, Key::Block { .. })
                    && w.value.encoding == Encoding::Raw
                    && gen.log.header().version >= format::PAGE_CRC_FORMAT_VERSION
            }),
        })
        .collect();
    let enc = format::encode_tx(end, tid, wall, req.user, req.desc, &recs)?;
    Ok((tid, enc))
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.opts.read_only || self.poisoned.lock().is_some() {
            return;
        }
        let gen = self.current();
        if let Some(r) = &self.remote {
            if let Err(e) = r.checkpoint(&gen, false) {
                tracing::warn!(error = %e, "could not write the index checkpoint on close");
            }
            return;
        }
        let stale = {
            let ix = gen.index.read();
            ix.end != ix.checkpointed_end
        };
        if stale {
            if let Err(e) = self.write_checkpoint() {
                tracing::warn!(error = %e, "could not write the index checkpoint on close");
            }
        }
    }
}

/// Write `bytes` to `dst` durably and atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomically(dst: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = dst.as_os_str().to_owned();
    // Unique per process and call: two handles in one process may write at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp.push(format!(".tmp.{}.{seq}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let f = std::fs::File::create(&tmp)?;
        std::os::unix::fs::FileExt::write_all_at(&f, bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dst)?;
    crate::log::sync_dir(dst)?;
    Ok(())
}

/// Is this META version a tombstone?
pub fn is_tombstone(v: &Version) -> bool {
    v.flags & FLAG_DELETED != 0
}
