//! The index of one log file: each key's versions and the committed transactions, as
//! the checkpoint it was opened from (read lazily) plus an overlay of what was read from
//! the log after it. Invariants 1–3 of the module docs of `store` hold here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::ckpt::LazyCheckpoint;
use crate::format::checkpoint::{Checkpoint, KeySlot, TxEntry, Version};
use crate::format::{self, Key};
use crate::log::ScannedTx;
use crate::{Error, Result, Tid};

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
    pub(super) ckpt: Option<Arc<LazyCheckpoint>>,
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
    pub(super) fn empty() -> Index {
        Index {
            end: format::FILE_HEADER_SIZE,
            ..Index::default()
        }
    }

    pub(super) fn apply(&mut self, tx: &ScannedTx) {
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
    pub(super) fn from_checkpoint(c: Checkpoint) -> Index {
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
    pub(super) fn from_lazy(c: LazyCheckpoint) -> Index {
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
    pub(super) fn to_checkpoint(&self, uuid: u64) -> Result<Checkpoint> {
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
