//! A version-3 index checkpoint read lazily: open reads and checks only its first page
//! (the header); a lookup reads the 4 KiB pages it needs, each checked
//! ([`checkpoint::check_page`]: CRC and values) the first time this process reads it
//! and kept in memory from then on. Layout in `storage-format.md` §7.
//!
//! A page that fails its check, or cannot be read, marks the whole checkpoint failed:
//! every later use of it fails too, and the store answers from an index rebuilt from the
//! log instead ([`super::Gen::with_index`]). So a damaged checkpoint costs time, never a
//! wrong answer.
//!
//! What the page checks cannot see (the order of keys across pages, of versions within
//! a key) is checked locally where a lookup depends on it: a binary search verifies the
//! key it lands on and its neighbours, a chain walk that versions ascend.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::format::checkpoint::{
    self, Header3, KeySlot, TxEntry, Version, page_offset, HEADER_SLOTS, SLOTS_PER_PAGE, SLOT_SIZE,
};
use crate::format::{Key, PAGE};
use crate::{Error, Result};

/// An open version-3 checkpoint.
pub struct LazyCheckpoint {
    file: File,
    path: PathBuf,
    /// Its header (checked at open).
    pub h: Header3,
    /// Pages read and checked so far (page 0 at open).
    pages: Box<[OnceLock<Box<[u8]>>]>,
    /// The first key of each page that holds key entries, as (tag, array, block),
    /// filled as pages are read: the top levels of every binary search, dense in memory
    /// (a search then touches one key page, not one per level).
    fence: Box<[OnceLock<(u8, u64, u64)>]>,
    failed: AtomicBool,
}

impl std::fmt::Debug for LazyCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCheckpoint")
            .field("path", &self.path)
            .field("h", &self.h)
            .field("failed", &self.failed())
            .finish_non_exhaustive()
    }
}

impl LazyCheckpoint {
    /// Open `file` (at `path`, `len` bytes), whose first bytes (its first page, or the
    /// whole file if shorter) are `first`: checks the header and the first page.
    pub fn open(file: File, path: &Path, first: Vec<u8>, len: u64) -> Result<LazyCheckpoint> {
        let h = Header3::decode(&first, len)?;
        let n = usize::try_from(h.n_pages())
            .map_err(|_| Error::corruption(0, "checkpoint page count"))?;
        let pages: Box<[OnceLock<Box<[u8]>>]> = (0..n).map(|_| OnceLock::new()).collect();
        let key_pages = match h.n_keys {
            0 => 0,
            k => checkpoint::slot_place(h.key_slot(k - 1)).0 + 1,
        };
        let fence = (0..key_pages).map(|_| OnceLock::new()).collect();
        let mut first = first;
        first.truncate(h.page_len(0));
        if let Some(p0) = pages.first() {
            let _ = p0.set(first.into_boxed_slice());
        }
        Ok(LazyCheckpoint {
            file,
            path: path.to_path_buf(),
            h,
            pages,
            fence,
            failed: AtomicBool::new(false),
        })
    }

    /// How many pages have been read (and passed their check) so far.
    #[cfg(any(test, feature = "internals"))]
    pub fn pages_read(&self) -> u64 {
        self.pages.iter().filter(|p| p.get().is_some()).count() as u64
    }

    /// Did a page of this checkpoint fail its check (or its read)?
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Mark the checkpoint failed and describe why.
    fn fail(&self, off: u64, what: impl std::fmt::Display) -> Error {
        self.failed.store(true, Ordering::Release);
        Error::corruption(
            off,
            format!("index checkpoint {}: {what}", self.path.display()),
        )
    }

    /// Page `p`, read and checked on first use.
    fn page(&self, p: u64) -> Result<&[u8]> {
        if self.failed() {
            return Err(self.fail(page_offset(p), "failed an earlier check"));
        }
        let cell = usize::try_from(p)
            .ok()
            .and_then(|i| self.pages.get(i))
            .ok_or_else(|| self.fail(page_offset(p), format!("no page {p}")))?;
        if let Some(b) = cell.get() {
            return Ok(b);
        }
        let mut buf = vec![0u8; self.h.page_len(p)];
        if let Err(e) = self.file.read_exact_at(&mut buf, page_offset(p)) {
            return Err(self.fail(page_offset(p), format!("reading page {p}: {e}")));
        }
        if let Err(e) = checkpoint::check_page(&self.h, p, &buf) {
            return Err(self.fail(page_offset(p), e));
        }
        // Another thread may have read it meanwhile: same bytes, either copy serves.
        let _ = cell.set(buf.into_boxed_slice());
        cell.get()
            .map(|b| &b[..])
            .ok_or_else(|| self.fail(page_offset(p), "page cache"))
    }

    /// Slot `s` (from a checked page).
    fn slot(&self, s: u64) -> Result<&[u8; SLOT_SIZE]> {
        let (p, off) = checkpoint::slot_place(s);
        self.page(p)?
            .get(off..off + SLOT_SIZE)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.fail(page_offset(p) + off as u64, format!("no slot {s}")))
    }

    /// Key entry `i` (< `h.n_keys`).
    pub fn key(&self, i: u64) -> Result<KeySlot> {
        if i >= self.h.n_keys {
            return Err(self.fail(0, format!("no key {i}")));
        }
        checkpoint::decode_key_slot(self.slot(self.h.key_slot(i))?)
            .ok_or_else(|| self.fail(0, format!("key entry {i}")))
    }

    /// Version entry `i` (< `h.n_versions`).
    pub fn version(&self, i: u64) -> Result<Version> {
        if i >= self.h.n_versions {
            return Err(self.fail(0, format!("no version {i}")));
        }
        checkpoint::decode_version_slot(self.slot(self.h.version_slot(i))?)
            .ok_or_else(|| self.fail(0, format!("version entry {i}")))
    }

    /// Transaction entry `i` (< `h.n_tx`).
    pub fn tx(&self, i: u64) -> Result<TxEntry> {
        if i >= self.h.n_tx {
            return Err(self.fail(0, format!("no transaction {i}")));
        }
        Ok(checkpoint::decode_tx_slot(self.slot(self.h.tx_slot(i))?))
    }

    /// The key entries in page `p`: `lo..hi`.
    fn keys_in_page(&self, p: u64) -> (u64, u64) {
        let lo = (p * SLOTS_PER_PAGE).saturating_sub(HEADER_SLOTS);
        let hi = ((p + 1) * SLOTS_PER_PAGE - HEADER_SLOTS).min(self.h.n_keys);
        (lo, hi)
    }

    /// The first key entry of page `p` as (tag, array, block).
    fn fence_key(&self, p: u64) -> Result<(u8, u64, u64)> {
        let cell = usize::try_from(p)
            .ok()
            .and_then(|i| self.fence.get(i))
            .ok_or_else(|| self.fail(page_offset(p), format!("no key page {p}")))?;
        if let Some(k) = cell.get() {
            return Ok(*k);
        }
        let k = checkpoint::key_slot_sort(self.slot(self.h.key_slot(self.keys_in_page(p).0))?);
        let _ = cell.set(k);
        Ok(k)
    }

    /// The index of the first key entry not below `key` (`h.n_keys` if none): a binary
    /// search over the pages' first keys, then one over the entries of one page. Checks
    /// that the entries around the answer are in order (the search relies on the whole
    /// table being sorted; pages are only checked to be sorted inside).
    pub fn lower_bound(&self, key: &Key) -> Result<u64> {
        let want = checkpoint::key_sort(key);
        // Pages whose first key is below `want`: 0..lo.
        let (mut lo, mut hi) = (0u64, self.fence.len() as u64);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.fence_key(mid)? < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut at = 0;
        if let Some(p) = lo.checked_sub(1) {
            let page = self.page(p)?;
            let sort_at = |i: u64| -> Result<(u8, u64, u64)> {
                let off = checkpoint::slot_place(self.h.key_slot(i)).1;
                page.get(off..off + SLOT_SIZE)
                    .and_then(|b| b.try_into().ok())
                    .map(checkpoint::key_slot_sort)
                    .ok_or_else(|| self.fail(page_offset(p), format!("no key {i}")))
            };
            let (mut l, mut h) = self.keys_in_page(p);
            // Blocks of an array are mostly consecutive: try where block numbers say
            // the key is before searching (one probe instead of seven).
            let first = self.fence_key(p)?;
            let guess = (first.0 == want.0 && first.1 == want.1 && want.2 >= first.2)
                .then(|| l.checked_add(want.2 - first.2))
                .flatten()
                .filter(|&g| g < h);
            match guess {
                Some(g) if sort_at(g)? == want => at = g,
                _ => {
                    while l < h {
                        let mid = l + (h - l) / 2;
                        if sort_at(mid)? < want {
                            l = mid + 1;
                        } else {
                            h = mid;
                        }
                    }
                    at = l;
                }
            }
        }
        let sort_of = |i: u64| -> Result<(u8, u64, u64)> {
            Ok(checkpoint::key_slot_sort(self.slot(self.h.key_slot(i))?))
        };
        if at > 0 && sort_of(at - 1)? >= want {
            return Err(self.fail(0, format!("key entries out of order around key {at}")));
        }
        if at < self.h.n_keys && sort_of(at)? < want {
            return Err(self.fail(0, format!("key entries out of order around key {at}")));
        }
        Ok(at)
    }

    /// The key entry of `key`, if the checkpoint has it. Checks that its versions
    /// follow the previous key's and precede the next key's (pages are checked for that
    /// only inside themselves): a key never answers with another key's versions.
    pub fn find(&self, key: &Key) -> Result<Option<KeySlot>> {
        let i = self.lower_bound(key)?;
        if i >= self.h.n_keys {
            return Ok(None);
        }
        let k = self.key(i)?;
        if k.key != *key {
            return Ok(None);
        }
        let after_prev = match i.checked_sub(1) {
            Some(j) => self.key(j).map(|p| p.first + p.count)?,
            None => 0,
        };
        let next_first = if i + 1 < self.h.n_keys {
            self.key(i + 1)?.first
        } else {
            self.h.n_versions
        };
        if k.first != after_prev || k.first + k.count != next_first {
            return Err(self.fail(0, format!("versions of key {i} overlap its neighbours'")));
        }
        Ok(Some(k))
    }

    /// Every transaction entry, ascending (reads every transaction page).
    pub fn all_txs(&self) -> Result<Vec<TxEntry>> {
        (0..self.h.n_tx).map(|i| self.tx(i)).collect()
    }

    /// The key entries from index `i` on, in order, for as long as `go` accepts them;
    /// each one read (the one `go` refuses too) is checked against the one before it
    /// (ascending keys, contiguous version ranges: what pages check only inside
    /// themselves).
    pub fn keys_from(&self, i: u64, mut go: impl FnMut(&KeySlot) -> bool) -> Result<Vec<KeySlot>> {
        let mut prev = match i.checked_sub(1) {
            Some(j) if j < self.h.n_keys => Some(self.key(j)?),
            _ => None,
        };
        let mut out = Vec::new();
        for j in i..self.h.n_keys {
            let k = self.key(j)?;
            let after_prev = prev.map_or(0, |p| p.first + p.count);
            if prev.is_some_and(|p| checkpoint::key_sort(&p.key) >= checkpoint::key_sort(&k.key))
                || k.first != after_prev
            {
                return Err(self.fail(0, format!("key entries out of order at key {j}")));
            }
            if !go(&k) {
                break;
            }
            prev = Some(k);
            out.push(k);
        }
        Ok(out)
    }

    /// Every key with its versions, in key order (reads every key and version page,
    /// and checks what pages alone do not: keys ascend and versions ascend per key).
    pub fn all_keys(&self) -> Result<Vec<(Key, Vec<Version>)>> {
        self.keys_from(0, |_| true)?
            .iter()
            .map(|k| Ok((k.key, self.versions_of(k)?)))
            .collect()
    }

    /// The versions of a key entry, checked ascending.
    pub fn versions_of(&self, k: &KeySlot) -> Result<Vec<Version>> {
        let mut vs: Vec<Version> = Vec::new();
        for j in k.first..k.first + k.count {
            let v = self.version(j)?;
            if vs.last().is_some_and(|p| p.tid >= v.tid) {
                return Err(self.fail(0, format!("versions of {:?} out of order", k.key)));
            }
            vs.push(v);
        }
        Ok(vs)
    }

    /// Fail with a description (for an inconsistency a caller found).
    pub fn inconsistent(&self, what: impl std::fmt::Display) -> Error {
        self.fail(0, what)
    }
}

/// A checkpoint file as opened: version 3 lazily, older versions read whole.
#[derive(Debug)]
pub enum Opened {
    /// Version 3: header page checked, the rest read on demand.
    Lazy(LazyCheckpoint),
    /// Version 1 or 2, read and checked whole.
    Whole(checkpoint::Checkpoint),
}

impl Opened {
    /// (log uuid, covered end, last tid, its transaction CRC).
    pub fn describes(&self) -> (u64, u64, crate::Tid, u32) {
        match self {
            Opened::Lazy(c) => (c.h.log_uuid, c.h.covered_end, c.h.last_tid, c.h.last_tx_crc),
            Opened::Whole(c) => (c.log_uuid, c.covered_end, c.last_tid, c.last_tx_crc),
        }
    }
}

/// Open the checkpoint of database `db`, if it has one that passes its checks (for
/// version 3: the header page; older versions: all of it).
pub fn open(db: &Path) -> Option<Opened> {
    let path = super::checkpoint_path(db);
    let f = File::open(&path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut first = vec![0u8; usize::try_from(len.min(PAGE as u64)).ok()?];
    f.read_exact_at(&mut first, 0).ok()?;
    if checkpoint::version_of(&first).ok()? >= 3 {
        return LazyCheckpoint::open(f, &path, first, len)
            .ok()
            .map(Opened::Lazy);
    }
    // Bounded by the file's size; versions 1 and 2 have no pages to read separately.
    let mut all = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact_at(&mut all, 0).ok()?;
    checkpoint::Checkpoint::decode(&all).ok().map(Opened::Whole)
}
