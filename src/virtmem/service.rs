//! The fault service (a child module of `state.rs`, which holds the numbered
//! invariants): [`ensure`] makes a block of a view accessible, for the SIGSEGV handler
//! and for checked loads alike. It classifies the access once (a scan or a random read,
//! and whether it continues a scan through a partial page), then looks at the block's
//! state in a loop and hands it to the one function that serves that state, until the
//! block is mapped as asked; a function that dropped the lock (invariant 8) asks for
//! another look. Also here: the `Loaded` → `Dirty` transition of a write, and the
//! loads into RAM pages that readahead runs ahead of a scan.
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use parking_lot::{Condvar, MutexGuard};

use super::filemap::map_neighbours;
use super::filepage::{add_window, complete_file, fetch_file, fetch_partial};
use super::os::{self, Pool};
use super::{load_error, BlockState, Guard, HandleId, MapId, PageId, VmState, NIL, PART_WINDOW};
use crate::bigfile::{BigFile, FileSlice};
use crate::{Error, Result};

/// What [`ensure`] learned about an access before it looks at the block's state.
struct Access {
    mid: MapId,
    blk: u64,
    write: bool,
    /// The byte of the block a fault hit (None for a checked load).
    at: Option<usize>,
    /// A scan: this view's previous fault was at most a readahead window before this
    /// one (readahead's markers make a scan fault every half window).
    seq: bool,
    /// A scan, or a fault on readahead's marker: a partial file page (invariant 15) is
    /// for random reads only.
    scan: bool,
    /// The fault continues a scan through a partial file page (invariant 15).
    scan_on: bool,
}

/// What the file says about a block: a file range to map (zero-copy, invariant 10) and,
/// when there is none, the content key.
type Source = (Option<FileSlice>, Option<(u64, u64)>);

/// A [`Source`] asked for without the lock, with the handle's `invalidations` count it
/// was read at (stale once that moved).
type Probe = (Source, u64);

/// What [`ensure`] does after a page-state step.
enum Next {
    /// The block is mapped as asked.
    Done,
    /// Look at the block's state again (it changed, or the lock was dropped).
    Again,
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
    let a = classify(g, mid, blk, write, at);
    if !write && a.scan {
        // A scan is at `blk` (or reached a block readahead prepared): have the blocks
        // after it prepared. (Not for writes: a writer that fills new space would have
        // zeros loaded ahead of it for nothing.)
        g.ra.want(mid, blk);
    }
    // Whether this scan may still help readahead instead of waiting for it (below).
    let mut may_help = a.seq && !write;
    let mut probed: Option<Probe> = None;
    loop {
        let Some(m) = g.maps.get(&mid) else {
            return Err(Error::Busy(
                "the mapping was unmapped during the access".into(),
            ));
        };
        let h = m.handle;
        let next = match g.state(h, blk) {
            BlockState::Loading { .. } | BlockState::LoadingInvalidated { .. } if may_help => {
                // A scan reached a block another thread (readahead) is still loading:
                // rather than wait, fetch a later block of the window that nobody has
                // started, so the two threads share the checks and decompression by
                // need. Then look again.
                may_help = help_ahead(g, cv, mid, blk);
                Next::Again
            }
            BlockState::Loading { .. }
            | BlockState::LoadingInvalidated { .. }
            | BlockState::Storing { .. } => {
                cv.wait(g);
                Next::Again
            }
            BlockState::PartDirty => on_part_dirty(g, cv, &a, h)?,
            BlockState::Loaded { page } if g.pages[page as usize].part.is_some() => {
                on_partial(g, cv, &a, h, page)?
            }
            BlockState::Loaded { page } => on_loaded(g, cv, &a, h, page)?,
            BlockState::Dirty { page } => {
                g.dlru_touch(page);
                g.map_view(mid, blk, page, true)?;
                Next::Done
            }
            BlockState::Spilled => {
                // The file holds its content (invariant 17): load it like any block.
                g.set_state(h, blk, BlockState::Empty);
                Next::Again
            }
            BlockState::Empty => on_empty(g, cv, &a, h, &mut probed)?,
        };
        if let Next::Done = next {
            g.assert_invariants();
            return Ok(());
        }
    }
}

/// Classify an access to block `blk` of view `mid` before serving it, and record it as
/// the view's last fault: a scan or a random read, and whether it continues a scan
/// through a partial file page.
fn classify(g: &mut Guard<'_>, mid: MapId, blk: u64, write: bool, at: Option<usize>) -> Access {
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
            let pp = crate::bigfile::PAGE;
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
    Access {
        mid,
        blk,
        write,
        at,
        seq,
        scan,
        scan_on,
    }
}

/// A `PartDirty` block (invariant 12): a write fault in its view makes one more 4 KiB
/// page writable, a read in its view is served; anything else (another view, a
/// whole-block write, over the bound) turns the written pages into a patch first.
fn on_part_dirty(g: &mut Guard<'_>, cv: &Condvar, a: &Access, h: HandleId) -> Result<Next> {
    let own = if a.write {
        match a.at {
            Some(off) => {
                let r = g.extend_part(a.mid, h, a.blk, off);
                match VmState::alloc_or_wait(g, cv, r)? {
                    Some(own) => own,
                    None => return Ok(Next::Again),
                }
            }
            None => false,
        }
    } else {
        g.is_mapped(a.mid, a.blk)
    };
    if own {
        return Ok(Next::Done);
    }
    // Another view, a whole-block write or over the bound: a patch now.
    g.demote_part(h, a.blk);
    Ok(Next::Again)
}

/// A partial file page (invariant 15): a random read in the view that shows it checks
/// one more window; anything else completes it first.
fn on_partial(
    g: &mut Guard<'_>,
    cv: &Condvar,
    a: &Access,
    h: HandleId,
    page: PageId,
) -> Result<Next> {
    let shown_here = g.maps[&a.mid].mapped.get(&a.blk) == Some(&(page, false));
    if let (false, false, true, Some(off)) = (a.write, a.scan, shown_here, a.at) {
        let r = add_window(g, cv, a.mid, (h, a.blk), page, off, a.scan_on);
        if VmState::alloc_or_wait(g, cv, r)? == Some(true) {
            return Ok(Next::Done);
        }
    } else {
        let r = complete_file(g, cv, h, a.blk, page);
        VmState::alloc_or_wait(g, cv, r)?;
    }
    Ok(Next::Again)
}

/// A `Loaded` block (a RAM page or a whole file page): a read maps it read-only; a write
/// to a file page dirties just the 4 KiB page it hit where it can (invariant 12), else
/// makes the block `Dirty` and maps it writable.
fn on_loaded(
    g: &mut Guard<'_>,
    cv: &Condvar,
    a: &Access,
    h: HandleId,
    page: PageId,
) -> Result<Next> {
    let (mid, blk) = (a.mid, a.blk);
    if let (true, Some(off)) = (a.write, a.at) {
        if g.pages[page as usize].file.is_some() {
            // Map the file first (a write may be the block's first access).
            g.map_view(mid, blk, page, false)?;
            if g.start_part(mid, h, blk, page, off)? {
                return Ok(Next::Done);
            }
        }
    }
    if a.write {
        let r = g.make_dirty(h, blk, page);
        let Some(p) = VmState::alloc_or_wait(g, cv, r)? else {
            return Ok(Next::Again);
        };
        g.map_view(mid, blk, p, true)?;
    } else {
        g.lru_touch(page);
        g.map_view(mid, blk, page, false)?;
    }
    Ok(Next::Done)
}

/// An `Empty` block: ask the file about it without the lock (`probed`, kept while no
/// block of the handle is invalidated), then show it from the file, share another
/// handle's clean page of the same content, or load it into a RAM page. A patched
/// block always gets a private page with the patch applied (invariant 11).
fn on_empty(
    g: &mut Guard<'_>,
    cv: &Condvar,
    a: &Access,
    h: HandleId,
    probed: &mut Option<Probe>,
) -> Result<Next> {
    let inval = g.handles[&h].invalidations;
    let (src, key) = match &*probed {
        _ if g.has_patch(h, a.blk) => (None, None),
        Some(((src, k), at)) if *at == inval => (src.clone(), *k),
        _ => {
            *probed = Some((probe(g, h, a.blk)?, inval));
            return Ok(Next::Again); // the state may have changed while unlocked
        }
    };
    if let Some(src) = src {
        return from_file(g, cv, a, h, src, probed);
    }
    if let Some(k) = key {
        if share_cached(g, h, a.blk, k) {
            return Ok(Next::Again);
        }
    }
    load(g, cv, a, h, key, probed)
}

/// Ask `h`'s file, without the lock, for block `blk`'s file range (`map_source`) and,
/// when it has none, its content key.
fn probe(
    g: &mut Guard<'_>,
    h: HandleId,
    blk: u64,
) -> Result<Source> {
    let file = g.handles[&h].file.clone();
    let r = MutexGuard::unlocked(g, || {
        let src = file.map_source(blk, true)?;
        Ok::<_, Error>((
            src.is_none().then(|| file.content_key(blk)).flatten(),
            src,
        ))
    });
    match r {
        Ok((k, src)) => Ok((src, k)),
        Err(e) => Err(load_error(&*file, blk, e)),
    }
}

/// An `Empty` block whose bytes are clean raw bytes in a file (`src`): show them with no
/// RAM page and no copy (invariant 10).
fn from_file(
    g: &mut Guard<'_>,
    cv: &Condvar,
    a: &Access,
    h: HandleId,
    src: FileSlice,
    probed: &mut Option<Probe>,
) -> Result<Next> {
    let (mid, blk) = (a.mid, a.blk);
    let pi = g.handles[&h].pool;
    if src.crc.is_none() && src.pages.is_none() && !a.write {
        // Needs no check (`filemap.rs`): map it straight from the file, and its
        // neighbours that need none either.
        let r = g.map_checked(mid, (h, blk), pi, src, (false, a.seq));
        if VmState::alloc_or_wait(g, cv, r)?.is_none() {
            return Ok(Next::Again);
        }
        map_neighbours(g, mid, blk, a.seq);
        return Ok(Next::Done);
    }
    if src.crc.is_none() {
        // Checked before and written to, or a delta chain (checked by `map_source`; its
        // pages go over the view's mapping in `map_view`): map it now, page tables on
        // touch.
        let r = g.alloc_file(pi, src);
        let Some(page) = VmState::alloc_or_wait(g, cv, r)? else {
            return Ok(Next::Again);
        };
        g.pages[page as usize].users.push((h, blk));
        g.set_state(h, blk, BlockState::Loaded { page });
        g.lru_touch(page);
        return Ok(Next::Again); // map it (and copy it to RAM if this is a write)
    }
    // A random read of a block with page CRCs: check and show one window of it
    // (invariant 15).
    let window = a
        .at
        .filter(|_| !a.write && !a.scan && src.page_crcs.is_some());
    let r = match window {
        Some(off) => fetch_partial(g, cv, mid, h, blk, src, off),
        None => fetch_file(g, cv, mid, h, blk, src, false),
    };
    if VmState::alloc_or_wait(g, cv, r)? == Some(false) {
        *probed = None; // invalidated meanwhile
    }
    Ok(Next::Again)
}

/// A clean page another handle loaded for the same content `k` of block `blk`: make
/// `(h, blk)` one more of its users. `false` if there is none.
fn share_cached(g: &mut Guard<'_>, h: HandleId, blk: u64, k: (u64, u64)) -> bool {
    let Some(&p) = g.cache.get(&(blk, k)) else {
        return false;
    };
    if !g.pages[p as usize].users.is_empty() {
        // A second user: the page must be mappable twice (inv 13).
        g.promote(p);
    }
    g.pages[p as usize].users.push((h, blk));
    g.set_state(h, blk, BlockState::Loaded { page: p });
    g.lru_touch(p);
    true
}

/// Load an `Empty` block into a new RAM page: `Empty` → `Loading` → `Loaded`, the page
/// in the content cache under `key`; `load_blk` runs without the lock (invariant 8).
/// An error leaves the block `Empty`; an invalidation meanwhile throws the data away.
fn load(
    g: &mut Guard<'_>,
    cv: &Condvar,
    a: &Access,
    h: HandleId,
    key: Option<(u64, u64)>,
    probed: &mut Option<Probe>,
) -> Result<Next> {
    let (mid, blk) = (a.mid, a.blk);
    let hs = &g.handles[&h];
    let (pi, file) = (hs.pool, hs.file.clone());
    let r = g.alloc(pi);
    let Some(page) = VmState::alloc_or_wait(g, cv, r)? else {
        return Ok(Next::Again);
    };
    g.pages[page as usize].users.push((h, blk));
    g.set_state(h, blk, BlockState::Loading { page });
    g.handles.get_mut(&h).expect("live").inflight += 1;
    g.maps.get_mut(&mid).expect("live").inflight += 1;
    let zero = std::mem::replace(&mut g.pages[page as usize].zero, false);
    let slot = g.pages[page as usize].slot;
    let pool = g.pools[pi].os.clone();
    g.assert_invariants();
    // SAFETY: the slot is ours alone while Loading (invariant 3): at home (a new or
    // freed page), in no view, read and written by nobody else.
    let res = MutexGuard::unlocked(g, || unsafe { load_slot(&pool, slot, zero, &*file, blk) });
    g.counters.loads += 1;
    g.handles.get_mut(&h).expect("live").inflight -= 1;
    if let Some(m) = g.maps.get_mut(&mid) {
        m.inflight -= 1;
    }
    match (g.state(h, blk), res) {
        (BlockState::Loading { page: p }, Ok(())) if p == page => {
            // SAFETY: still ours alone (Loading, invariant 3): show the patch.
            unsafe { g.apply_patch(h, blk, page) };
            g.set_state(h, blk, BlockState::Loaded { page });
            if let Some(k) = key {
                if let std::collections::hash_map::Entry::Vacant(e) = g.cache.entry((blk, k)) {
                    e.insert(page);
                    g.pages[page as usize].key = Some((blk, k));
                }
            }
            g.lru_touch(page);
            cv.notify_all();
            // Look again: map it (and make it dirty if this is a write).
            Ok(Next::Again)
        }
        (BlockState::Loading { page: p }, Err(e)) if p == page => {
            g.drop_loading(h, blk, page);
            cv.notify_all();
            g.assert_invariants();
            Err(load_error(&*file, blk, e))
        }
        (s, _) => {
            // Invalidated while loading: throw the data away and load again.
            debug_assert_eq!(s, BlockState::LoadingInvalidated { page });
            g.drop_loading(h, blk, page);
            *probed = None;
            cv.notify_all();
            Ok(Next::Again)
        }
    }
}

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
        // SAFETY: `new` was just allocated under the VM lock: at home, no user, no view;
        // `p` is clean, mapped read-only everywhere, so nobody writes it (invariant 3).
        unsafe { os.copy(self.pages[p as usize].slot, self.pages[new as usize].slot) };
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
        // SAFETY: `new` was just allocated under the VM lock: at home, no user, no view,
        // so this is the only reference to its slot (invariant 3).
        let dst = unsafe { os.slot_mut(slot) };
        if let Err(e) = os::read_file_block(&src, dst) {
            self.free_page(new);
            return Err(e);
        }
        if let Some(pages) = &src.pages {
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

/// Load block `blk` of `file` into `slot`; called without the VM lock. A never-used
/// slot (`zero`) is faulted in at once and reads as zeros; a reused one is zeroed first
/// unless the file writes the whole block.
///
/// # Safety
/// The caller owns the slot, as for `Pool::slot_mut`: it is the slot of a `Loading`
/// page (invariant 3).
unsafe fn load_slot(
    pool: &Pool,
    slot: usize,
    zero: bool,
    file: &dyn BigFile,
    blk: u64,
) -> Result<()> {
    // SAFETY: the caller owns the slot (the contract above).
    let dst = unsafe { pool.slot_mut(slot) };
    if zero {
        pool.populate(slot);
    } else if !file.load_writes_whole_block() {
        dst.fill(0);
    }
    file.load_blk(blk, dst)
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
    // SAFETY: the slot is ours alone while Loading (invariant 3), even if the handle is
    // closed meanwhile (close_handle leaves it to us).
    let res = MutexGuard::unlocked(g, || unsafe { load_slot(&pool, slot, zero, &*file, blk) });
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

/// For a scan of view `mid` that found block `pos` still loading: fetch the first block
/// after it in the readahead window that is `Empty`, as readahead would, and return
/// whether one was fetched. A block of the copy path (compressed or delta:
/// `map_source` is None) is loaded into a RAM page (`load_ahead`); a raw block that
/// needs a check is staged, checked and moved into the view (`fetch_file`). A raw block
/// that needs no check, or a delta chain over one, is left to readahead or to its own
/// fault, which map it without a check. Evicts nothing the scan has yet to reach
/// (`room_ahead`). Runs in the fault, whose mapping keeps the view and the handle alive.
fn help_ahead(g: &mut Guard<'_>, cv: &Condvar, mid: MapId, pos: u64) -> bool {
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
        let inval = g.handles[&h].invalidations;
        let src = MutexGuard::unlocked(g, || file.map_source(b, true));
        return match src {
            Ok(None) => matches!(load_ahead(g, cv, h, b, pos), Ok(true)),
            Ok(Some(src)) => {
                let bs = g.block_size_of(h) as u64;
                if src.crc.is_none()
                    || src.pages.is_some()
                    || g.handles.get(&h).is_none_or(|hs| hs.invalidations != inval)
                    || g.state(h, b) != BlockState::Empty
                    || g.has_patch(h, b)
                    || !g.room_ahead(bs, h, pos)
                {
                    return false;
                }
                matches!(
                    fetch_file(g, cv, mid, h, b, src, false),
                    Ok(true)
                )
            }
            Err(_) => false,
        };
    }
    false
}
