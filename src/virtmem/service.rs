//! The fault service (a child module of `state.rs`, which holds the numbered
//! invariants): [`ensure`] makes a block of a view accessible, for the SIGSEGV handler
//! and for checked loads alike. It classifies the access once (a scan or a random read,
//! and whether it continues a scan through a partial page), then looks at the block's
//! state in a loop and hands it to the one function that serves that state, until the
//! block is mapped as asked; a function that dropped the lock (invariant 8) asks for
//! another look. Also here: the `Loaded` → `Dirty` transition of a write, and the
//! loads into RAM pages that readahead runs ahead of a scan.

use parking_lot::{Condvar, MutexGuard};

use super::filemap::map_neighbours;
use super::filepage::{add_window, complete_file, fetch_file, fetch_partial};
use super::os::{self, Pool};
use super::{BlockState, Guard, HandleId, MapId, PageId, VmState, NIL, PART_WINDOW};
use crate::bigfile::{BigFile, FileSlice};
use crate::{Error, Result};

impl VmState {
    /// `Loaded` → `Dirty` for `(h, blk)`: claim `p` if no other handle uses it, else copy
    /// it into a new private page. Returns the dirty page.
    pub(super) fn make_dirty(&mut self, h: HandleId, blk: u64, p: PageId) -> Result<PageId> {
        let bs = self.bs(p);
        if let Some(src) = self.pages[p as usize].file.clone() {
            return self.make_dirty_from_file(h, blk, p, src);
        }
        if self.pages[p as usize].users.len() == 1 {
            self.lru_remove(p);
            if let Some(k) = self.pages[p as usize].key.take() {
                self.cache.remove(&k);
            }
            self.set_state(h, blk, BlockState::Dirty { page: p });
            self.dirty += bs;
            // The page holds the block with its patch applied (invariant 11).
            self.drop_patch(h, blk);
            return Ok(p);
        }
        // Out of the LRU while we allocate, so that the copy source is not reclaimed.
        self.lru_remove(p);
        let pi = self.pages[p as usize].pool;
        let new = self.alloc(pi);
        self.lru_touch(p);
        let new = new?;
        // The new page is at home (invariant 9); the source, shared and so a memfd slot
        // (invariant 13), is read through its pool address, whose entries are dropped
        // again if its slot lives in a view.
        let os = &self.pools[pi].os;
        os.copy(self.pages[p as usize].slot, self.pages[new as usize].slot);
        if self.pages[p as usize].at_view.is_some() {
            os.drop_entries(self.pages[p as usize].slot);
        }
        self.pages[new as usize].zero = false;
        self.pages[p as usize].users.retain(|&u| u != (h, blk));
        self.pages[new as usize].users.push((h, blk));
        self.set_state(h, blk, BlockState::Dirty { page: new });
        self.dirty += bs;
        // Views of this handle still show the shared page: make them fault again.
        self.reset_views(h, blk);
        Ok(new)
    }

    /// `make_dirty` of a file page `p` (invariant 10): the block is read from the file
    /// into a new RAM page, which becomes this handle's `Dirty` page; `p` loses this
    /// user. When `(h, blk)` is its only user, `p` is let go first, so that a write needs
    /// no more budget than one block (an allocation failure then leaves the block
    /// `Empty`). The read runs under the VM lock: it is a copy from the page cache (the
    /// file bytes were read when the page was checked), not a `BigFile` call.
    pub(super) fn make_dirty_from_file(
        &mut self,
        h: HandleId,
        blk: u64,
        p: PageId,
        src: FileSlice,
    ) -> Result<PageId> {
        let bs = self.bs(p);
        let pi = self.pages[p as usize].pool;
        let new = if self.pages[p as usize].users.len() == 1 {
            self.set_state(h, blk, BlockState::Empty);
            self.reset_views(h, blk);
            self.detach(p, h, blk);
            self.alloc(pi)?
        } else {
            self.lru_remove(p);
            let new = self.alloc(pi);
            self.lru_touch(p);
            let new = new?;
            self.pages[p as usize].users.retain(|&u| u != (h, blk));
            self.set_state(h, blk, BlockState::Empty);
            self.reset_views(h, blk);
            new
        };
        let os = self.pools[pi].os.clone();
        let slot = self.pages[new as usize].slot;
        if self.pages[new as usize].zero {
            os.populate(slot);
        }
        self.pages[new as usize].zero = false;
        if let Err(e) = os::read_file_block(&src, os.slot_mut(slot)) {
            self.free_page(new);
            return Err(e);
        }
        if let Some(pages) = &src.pages {
            let dst = os.slot_mut(slot);
            for (i, b) in pages.iter() {
                let at = *i as usize * b.len();
                dst[at..at + b.len()].copy_from_slice(b);
            }
        }
        self.pages[new as usize].users.push((h, blk));
        self.set_state(h, blk, BlockState::Dirty { page: new });
        self.dirty += bs;
        Ok(new)
    }
}

/// Make block `blk` of mapping `mid` accessible (writable if `write`): the one path
/// behind both the fault handler and the checked `Mapping::load`. Drops the lock for
/// `content_key`, `load_blk` and the zeroing of a reused slot (invariant 8).
///
/// `at`: the byte of the block a write fault hit (None for a checked load): a write to a
/// clean file page then dirties that 4 KiB page only (`PartDirty`, invariant 12).
pub(in crate::virtmem) fn ensure(
    g: &mut Guard<'_>,
    cv: &Condvar,
    mid: MapId,
    blk: u64,
    write: bool,
    at: Option<usize>,
) -> Result<()> {
    // What the file said about the block without the lock: a file range to map
    // (zero-copy, invariant 10), and the content key.
    type Probe = (Option<FileSlice>, Option<(u64, u64)>);
    let mut probed: Option<(Probe, u64)> = None;
    // A scan: this view's previous fault was at most a readahead window before this
    // one (readahead's markers make a scan fault every half window).
    let (seq, scan_on) = match g.maps.get(&mid).map(|m| m.handle) {
        Some(h) => {
            let w = super::super::readahead::window(g.budget, g.block_size_of(h) as u64);
            let m = g.maps.get_mut(&mid).expect("checked");
            let prev = m.last_fault.replace(blk);
            let prev_at = std::mem::replace(&mut m.last_at, at);
            // Random reads leave partial file pages behind them (invariant 15); a scan
            // leaves whole blocks. Without this, a few percent of random reads (those
            // a little after the one before) would look like a scan and have whole
            // blocks checked, here or by readahead. (The next block is a scan still.)
            let prev_page = prev.and_then(|l| m.mapped.get(&l)).map(|e| e.0);
            let after_partial =
                prev_page.is_some_and(|p| p != NIL && g.pages[p as usize].part.is_some());
            // A scan through a partial page: the previous fault at the first page of
            // the window before, this one at the first page of its window. (A random
            // read straddling two windows starts in the last page of the first.)
            let pp = crate::bigfile::PATCH_PAGE;
            let scan_on = prev == Some(blk)
                && at.zip(prev_at).is_some_and(|(a, p)| {
                    a % PART_WINDOW < pp
                        && p % PART_WINDOW < pp
                        && p / PART_WINDOW + 1 == a / PART_WINDOW
                });
            let next = prev.is_some_and(|l| blk == l + 1);
            (
                next || (!after_partial && prev.is_some_and(|l| blk > l && blk - l <= w)),
                scan_on,
            )
        }
        None => (false, false),
    };
    // A partial file page (invariant 15) is for random reads: a fault a little after
    // the previous fault's block (a whole one, or the very next), or on readahead's
    // marker, is a scan.
    let scan = seq || g.is_armed(mid, blk);
    if !write && (seq || g.is_armed(mid, blk)) {
        // A scan is at `blk` (or reached a block readahead prepared): have the blocks
        // after it prepared. (Not for writes: a writer that fills new space would have
        // zeros loaded ahead of it for nothing.)
        g.ra.want(mid, blk);
    }
    // Whether this scan may still help readahead instead of waiting for it (below).
    let mut may_help = seq && !write;
    loop {
        let Some(m) = g.maps.get(&mid) else {
            return Err(Error::Busy(
                "the mapping was unmapped during the access".into(),
            ));
        };
        let h = m.handle;
        let hs = &g.handles[&h];
        let file = hs.file.clone();
        let pi = hs.pool;
        match g.state(h, blk) {
            BlockState::Loading { .. } | BlockState::LoadingInvalidated { .. } if may_help => {
                // A scan reached a block another thread (readahead) is still loading:
                // rather than wait, load a later block of the window that nobody has
                // started, so the two threads share the decompression by need, not by
                // block number alone. Then look again.
                may_help = help_ahead(g, cv, mid, blk);
            }
            BlockState::Loading { .. }
            | BlockState::LoadingInvalidated { .. }
            | BlockState::Storing { .. } => {
                cv.wait(g);
            }
            BlockState::PartDirty => {
                let own = if write {
                    match at {
                        Some(off) => {
                            let r = g.extend_part(mid, h, blk, off);
                            match VmState::alloc_or_wait(g, cv, r)? {
                                Some(own) => own,
                                None => continue,
                            }
                        }
                        None => false,
                    }
                } else {
                    g.is_mapped(mid, blk)
                };
                if own {
                    g.assert_invariants();
                    return Ok(());
                }
                // Another view, a whole-block write or over the bound: a patch now.
                g.demote_part(h, blk);
            }
            BlockState::Loaded { page } if g.pages[page as usize].part.is_some() => {
                // A partial file page (invariant 15): a random read in the view that
                // shows it checks one more window; anything else completes it first.
                let shown_here = g.maps[&mid].mapped.get(&blk) == Some(&(page, false));
                if let (false, false, true, Some(off)) = (write, scan, shown_here, at) {
                    let r = add_window(g, cv, mid, (h, blk), page, off, scan_on);
                    if VmState::alloc_or_wait(g, cv, r)? == Some(true) {
                        g.assert_invariants();
                        return Ok(());
                    }
                } else {
                    let r = complete_file(g, cv, h, blk, page);
                    VmState::alloc_or_wait(g, cv, r)?;
                }
            }
            BlockState::Loaded { page } => {
                if let (true, Some(off)) = (write, at) {
                    if g.pages[page as usize].file.is_some() {
                        // Map the file first (a write may be the block's first access).
                        g.map_view(mid, blk, page, false)?;
                        if g.start_part(mid, h, blk, page, off)? {
                            g.assert_invariants();
                            return Ok(());
                        }
                    }
                }
                if write {
                    let r = g.make_dirty(h, blk, page);
                    let Some(p) = VmState::alloc_or_wait(g, cv, r)? else {
                        continue;
                    };
                    g.map_view(mid, blk, p, true)?;
                } else {
                    g.lru_touch(page);
                    g.map_view(mid, blk, page, false)?;
                }
                g.assert_invariants();
                return Ok(());
            }
            BlockState::Dirty { page } => {
                g.dlru_touch(page);
                g.map_view(mid, blk, page, true)?;
                g.assert_invariants();
                return Ok(());
            }
            BlockState::Spilled => {
                // The file holds its content (invariant 17): load it like any block.
                g.set_state(h, blk, BlockState::Empty);
            }
            BlockState::Empty => {
                let inval = g.handles[&h].invalidations;
                let (src, key) = match &probed {
                    // Still valid: no block of the handle was invalidated meanwhile.
                    // Patched: a private page with the patch applied (invariant 11).
                    _ if g.has_patch(h, blk) => (None, None),
                    Some(((src, k), at)) if *at == inval => (src.clone(), *k),
                    _ => {
                        let r = MutexGuard::unlocked(g, || {
                            let src = file.map_source(blk)?;
                            Ok::<_, Error>((
                                src.is_none().then(|| file.content_key(blk)).flatten(),
                                src,
                            ))
                        });
                        match r {
                            Ok((k, src)) => probed = Some(((src, k), inval)),
                            Err(e) => {
                                return Err(Error::Load {
                                    file: file.name().to_string(),
                                    blk,
                                    cause: e.to_string(),
                                })
                            }
                        }
                        continue; // the state may have changed while unlocked
                    }
                };
                // Clean raw bytes in a file: map them, no RAM page, no copy (inv 10).
                if let Some(src) = src {
                    if src.crc.is_none() && src.pages.is_none() && !write {
                        // Needs no check (`filemap.rs`): map it straight from the file,
                        // and its neighbours that need none either.
                        let r = g.map_checked(mid, (h, blk), pi, src, (false, seq));
                        if VmState::alloc_or_wait(g, cv, r)?.is_none() {
                            continue;
                        }
                        map_neighbours(g, mid, blk, seq);
                        g.assert_invariants();
                        return Ok(());
                    }
                    if src.crc.is_none() {
                        // Checked before and written to, or a delta chain (checked by
                        // `map_source`; its pages go over the view's mapping in
                        // `map_view`): map it now, page tables on touch.
                        let r = g.alloc_file(pi, src);
                        let Some(page) = VmState::alloc_or_wait(g, cv, r)? else {
                            continue;
                        };
                        g.pages[page as usize].users.push((h, blk));
                        g.set_state(h, blk, BlockState::Loaded { page });
                        g.lru_touch(page);
                        continue; // map it (and copy it to RAM if this is a write)
                    }
                    // A random read of a block with page CRCs: check and show one
                    // window of it (invariant 15).
                    let window = at.filter(|_| !write && !scan && src.page_crcs.is_some());
                    let r = match window {
                        Some(off) => fetch_partial(g, cv, mid, h, blk, src, off),
                        None => fetch_file(g, cv, mid, h, blk, src, false),
                    };
                    if VmState::alloc_or_wait(g, cv, r)? == Some(false) {
                        probed = None; // invalidated meanwhile
                    }
                    continue;
                }
                // A clean page another handle loaded for the same content?
                if let Some(k) = key {
                    if let Some(&p) = g.cache.get(&(blk, k)) {
                        if !g.pages[p as usize].users.is_empty() {
                            // A second user: the page must be mappable twice (inv 13).
                            g.promote(p);
                        }
                        g.pages[p as usize].users.push((h, blk));
                        g.set_state(h, blk, BlockState::Loaded { page: p });
                        g.lru_touch(p);
                        continue;
                    }
                }
                let r = g.alloc(pi);
                let Some(page) = VmState::alloc_or_wait(g, cv, r)? else {
                    continue;
                };
                g.pages[page as usize].users.push((h, blk));
                g.set_state(h, blk, BlockState::Loading { page });
                g.handles.get_mut(&h).expect("live").inflight += 1;
                g.maps.get_mut(&mid).expect("live").inflight += 1;
                let zero = std::mem::replace(&mut g.pages[page as usize].zero, false);
                let slot = g.pages[page as usize].slot;
                let pool = g.pools[pi].os.clone();
                g.assert_invariants();
                // The slot is ours alone while Loading (invariant 3).
                let res = MutexGuard::unlocked(g, || load_slot(&pool, slot, zero, &*file, blk));
                g.counters.loads += 1;
                g.handles.get_mut(&h).expect("live").inflight -= 1;
                if let Some(m) = g.maps.get_mut(&mid) {
                    m.inflight -= 1;
                }
                match (g.state(h, blk), res) {
                    (BlockState::Loading { page: p }, Ok(())) if p == page => {
                        // Still ours alone (Loading, invariant 3): show the patch.
                        g.apply_patch(h, blk, page);
                        g.set_state(h, blk, BlockState::Loaded { page });
                        if let Some(k) = key {
                            if let std::collections::hash_map::Entry::Vacant(e) =
                                g.cache.entry((blk, k))
                            {
                                e.insert(page);
                                g.pages[page as usize].key = Some((blk, k));
                            }
                        }
                        g.lru_touch(page);
                        cv.notify_all();
                        // Loop: map it (and make it dirty if this is a write).
                    }
                    (BlockState::Loading { page: p }, Err(e)) if p == page => {
                        g.set_state(h, blk, BlockState::Empty);
                        g.pages[page as usize].users.clear();
                        g.free_page(page);
                        cv.notify_all();
                        g.assert_invariants();
                        return Err(Error::Load {
                            file: file.name().to_string(),
                            blk,
                            cause: e.to_string(),
                        });
                    }
                    (s, _) => {
                        // Invalidated while loading: throw the data away and load again.
                        debug_assert_eq!(s, BlockState::LoadingInvalidated { page });
                        g.set_state(h, blk, BlockState::Empty);
                        g.pages[page as usize].users.clear();
                        g.free_page(page);
                        probed = None;
                        cv.notify_all();
                    }
                }
            }
        }
    }
}

/// Load block `blk` of `file` into `slot`, which the caller owns (a `Loading` page,
/// invariant 3); called without the VM lock. A never-used slot (`zero`) is faulted in
/// at once and reads as zeros; a reused one is zeroed first unless the file writes the
/// whole block.
pub(super) fn load_slot(pool: &Pool, slot: usize, zero: bool, file: &dyn BigFile, blk: u64) -> Result<()> {
    if zero {
        pool.populate(slot);
    } else if !file.load_writes_whole_block() {
        pool.slot_mut(slot).fill(0);
    }
    file.load_blk(blk, pool.slot_mut(slot))
}

/// Readahead of block `blk` of handle `h` on the copy path (`map_source` gave none: a
/// compressed or delta block) that has stored content (a content key): load it into a RAM page, `Empty` → `Loading` → `Loaded`,
/// in the LRU and the content cache but in no view: the scan's fault on it moves the
/// slot into its view (invariant 9), no copy. Room is made as `room_ahead` does for
/// a scan at `pos`. `Ok(false)`: nothing loaded (no room, the block is not `Empty`,
/// another handle holds its content, it was invalidated or its handle closed meanwhile,
/// or the load failed: the scan's own fault loads it again and reports the error).
pub(in crate::virtmem) fn load_ahead(
    g: &mut Guard<'_>,
    cv: &Condvar,
    h: HandleId,
    blk: u64,
    pos: u64,
) -> Result<bool> {
    // Readahead asked `map_source` without the lock: the handle may be closed since.
    let Some(hs) = g.handles.get(&h) else {
        return Ok(false);
    };
    let (pi, file, inval) = (hs.pool, hs.file.clone(), hs.invalidations);
    let bs = g.pools[pi].os.slot_size() as u64;
    let key = MutexGuard::unlocked(g, || file.content_key(blk));
    let Some(k) = key else {
        // No stored content to share (a block never written, or local writes): not
        // worth a load ahead of the scan.
        return Ok(false);
    };
    if g.handles.get(&h).is_none_or(|hs| hs.invalidations != inval)
        || g.state(h, blk) != BlockState::Empty
        || g.has_patch(h, blk)
        || g.cache.contains_key(&(blk, k))
        || !g.room_ahead(bs, h, pos)
    {
        return Ok(false);
    }
    let page = g.alloc(pi)?;
    g.pages[page as usize].users.push((h, blk));
    g.set_state(h, blk, BlockState::Loading { page });
    let zero = std::mem::replace(&mut g.pages[page as usize].zero, false);
    let slot = g.pages[page as usize].slot;
    let pool = g.pools[pi].os.clone();
    g.assert_invariants();
    // The slot is ours alone while Loading (invariant 3), even if the handle is closed
    // meanwhile (close_handle leaves it to us).
    let res = MutexGuard::unlocked(g, || load_slot(&pool, slot, zero, &*file, blk));
    g.counters.loads += 1;
    let ok = g.handles.contains_key(&h)
        && res.is_ok()
        && g.state(h, blk) == BlockState::Loading { page };
    if ok {
        g.set_state(h, blk, BlockState::Loaded { page });
        if let std::collections::hash_map::Entry::Vacant(e) = g.cache.entry((blk, k)) {
            e.insert(page);
            g.pages[page as usize].key = Some((blk, k));
        }
        g.lru_touch(page);
    } else {
        if g.handles.contains_key(&h) {
            g.set_state(h, blk, BlockState::Empty);
        }
        g.pages[page as usize].users.clear();
        g.free_page(page);
    }
    cv.notify_all();
    g.assert_invariants();
    Ok(ok)
}

/// For a scan of view `mid` that found block `pos` still loading: load the first block
/// after it in the readahead window that is `Empty` and of the copy path (compressed or
/// delta: `map_source` is None) into a RAM page, as readahead would (`load_ahead`), and
/// return whether one was loaded. Raw blocks are left to readahead, which maps them
/// without a load. Runs in the fault, whose mapping keeps the view and the handle alive.
pub(super) fn help_ahead(g: &mut Guard<'_>, cv: &Condvar, mid: MapId, pos: u64) -> bool {
    let Some(m) = g.maps.get(&mid) else {
        return false;
    };
    let (h, end) = (m.handle, m.first_blk + m.n_blks);
    let k = super::super::readahead::window(g.budget, g.block_size_of(h) as u64);
    if k == 1 {
        // No page to spare (see `readahead::ahead`).
        return false;
    }
    let file = g.handles[&h].file.clone();
    for b in pos + 1..=pos.saturating_add(k).min(end - 1) {
        if g.state(h, b) != BlockState::Empty || g.has_patch(h, b) {
            continue;
        }
        let src = MutexGuard::unlocked(g, || file.map_source(b));
        if !matches!(src, Ok(None)) {
            return false;
        }
        return matches!(load_ahead(g, cv, h, b, pos), Ok(true));
    }
    false
}
