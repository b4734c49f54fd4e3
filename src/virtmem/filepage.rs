//! File pages that are checked before they are shown (invariants 10 and 15; a child
//! module of `state.rs`, which holds the numbered invariants): a whole block staged,
//! checked against its CRC and moved into a view (`fetch_file`), or, for a random read
//! of a block with page CRCs, one [`PART_WINDOW`] at a time (`fetch_partial`,
//! `add_window`) until something needs the whole block (`complete_file`). File blocks
//! that need no check are mapped by `filemap.rs`.
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use parking_lot::{Condvar, MutexGuard};

use super::{
    load_error, n_windows, os, BlockState, Guard, HandleId, MapId, Page, PageId, VmState,
    NIL, NO_SLOT, PART_WINDOW,
};
use crate::bigfile::FileSlice;
use crate::virtmem::fault::fatal;
use crate::{Error, Result};

impl VmState {
    /// Get a file page for a block of pool `pi`'s size showing `src`, reclaiming clean
    /// pages in LRU order when the budget is reached (invariant 10).
    pub(super) fn alloc_file(&mut self, pi: usize, src: FileSlice) -> Result<PageId> {
        self.alloc_file_part(pi, src, None)
    }

    /// [`VmState::alloc_file`], partial (invariant 15) when `part` is given: then it
    /// counts the windows set in `part`, not the block size.
    pub(super) fn alloc_file_part(
        &mut self,
        pi: usize,
        src: FileSlice,
        part: Option<Box<[u64]>>,
    ) -> Result<PageId> {
        let windows = part.as_ref().map_or(0, |b| {
            b.iter().map(|w| u64::from(w.count_ones())).sum::<u64>()
        });
        let bs = match &part {
            Some(_) => windows * PART_WINDOW as u64,
            None => self.pools[pi].os.slot_size() as u64,
        };
        while self.used + bs > self.budget {
            let victim = self.lru_head;
            if victim == NIL {
                return Err(self.ram_exhausted());
            }
            self.evict(victim);
        }
        self.used += bs;
        self.part_windows += windows;
        if let Some(p) = self.file_free.pop() {
            let pg = &mut self.pages[p as usize];
            pg.in_use = true;
            pg.pool = pi;
            pg.file = Some(src);
            pg.part = part;
            return Ok(p);
        }
        let id = PageId::try_from(self.pages.len())
            .map_err(|_| Error::OutOfRange("too many RAM pages".into()))?;
        self.pages.push(Page {
            pool: pi,
            slot: NO_SLOT,
            in_use: true,
            users: Vec::new(),
            key: None,
            lru_prev: NIL,
            lru_next: NIL,
            in_lru: false,
            zero: false,
            punched: false,
            at_view: None,
            file: Some(src),
            part,
            dlru_prev: NIL,
            dlru_next: NIL,
            in_dlru: false,
        });
        Ok(id)
    }
}

/// Fetch file block `blk` of handle `h` (`Empty`, `src` from `map_source`) as a file
/// page and show it in view `mid` (invariant 10): `Empty` → `Loading` → `Loaded`. The
/// bytes are mapped, their page tables filled, at a staging address without the lock
/// and checked against `src.crc` there, then the same mapping is moved into the view
/// (with readahead's marker if `arm`); the readahead thread maps the checked bytes
/// into the view anew instead and leaves its staging mapping to its arena
/// (`os::Staged::show`). Bytes that need no check (`src.crc` is None)
/// are mapped straight into the view instead (`filemap.rs`). Returns `Ok(false)` if the
/// block was invalidated
/// (or its handle closed) meanwhile; an error (a CRC mismatch, an I/O error) leaves the
/// block `Empty`, never shown. A fault holds its mapping, so its handle and view stay
/// alive; the readahead thread holds neither and copes with both going away.
pub(in crate::virtmem) fn fetch_file(
    g: &mut Guard<'_>,
    cv: &Condvar,
    mid: MapId,
    h: HandleId,
    blk: u64,
    src: FileSlice,
    arm: bool,
) -> Result<bool> {
    debug_assert!(src.pages.is_none(), "a delta chain is mapped by map_view");
    let hs = &g.handles[&h];
    let (pi, file) = (hs.pool, hs.file.clone());
    let bs = g.pools[pi].os.slot_size();
    if src.crc.is_none() {
        // Nothing to check: straight into the view, page tables filled (`filemap.rs`).
        let r = g.map_checked(mid, (h, blk), pi, src, (arm, true));
        cv.notify_all();
        g.assert_invariants();
        return r.map(|_| true);
    }
    let page = g.alloc_file(pi, src.clone())?;
    g.pages[page as usize].users.push((h, blk));
    g.set_state(h, blk, BlockState::Loading { page });
    g.assert_invariants();
    let res = MutexGuard::unlocked(g, || {
        let st = os::Staged::new(&src, bs)?;
        // Another process may be checking the same bytes: wait for it (briefly).
        if let Some(want) = src.crc.filter(|_| file.claim_check(&src)) {
            crate::verify::check_crc(st.bytes(), want, src.offset, "a raw block")?;
            file.source_checked(&src);
        }
        Ok::<_, Error>(st)
    });
    if !g.handles.contains_key(&h) {
        // Closed meanwhile: `close_handle` left the page to us.
        g.free_page(page);
        cv.notify_all();
        return Ok(false);
    }
    match (g.state(h, blk), res) {
        (BlockState::Loading { page: p }, Ok(st)) if p == page => {
            g.set_state(h, blk, BlockState::Loaded { page });
            g.lru_touch(page);
            if let Some(m) = g.maps.get(&mid) {
                // The view block shows nothing: the entry was not Loaded (invariant 5).
                let addr = g.view_addr(m, blk);
                let shown = if st.in_arena() {
                    // SAFETY: a block of registered view `mid` showing nothing, and
                    // the staged bytes of `src` matched their CRC above.
                    unsafe { st.show(addr, bs, &src) }
                } else {
                    // SAFETY: a block of registered view `mid` showing nothing, and the
                    // staged bytes matched their CRC above (or need no check).
                    unsafe { st.move_into(addr, bs) }
                };
                if let Err(e) = shown {
                    // The block stays Loaded, unmapped: the next access maps it again.
                    // SAFETY: the same block, which records no mapping: it faults.
                    if let Err(e2) = unsafe { os::reset(addr, bs) } {
                        fatal(format_args!("{e}; then cannot reset a view block: {e2}"));
                    }
                } else {
                    g.counters.file_maps += 1;
                    let m = g.maps.get_mut(&mid).expect("checked above");
                    m.mapped.insert(blk, (page, false));
                    // SAFETY: the view block the checked file bytes were just moved into.
                    if arm && unsafe { os::arm(addr, true) }.is_ok() {
                        m.armed.insert(blk);
                    }
                }
                // Either way the block's mapping was replaced (invariant 16).
                if let Some(m) = g.maps.get_mut(&mid) {
                    m.untidy.remove(&blk);
                }
            }
            cv.notify_all();
            g.assert_invariants();
            Ok(true)
        }
        (BlockState::Loading { page: p }, Err(e)) if p == page => {
            g.drop_loading(h, blk, page);
            cv.notify_all();
            g.assert_invariants();
            Err(load_error(&*file, blk, e))
        }
        (s, _) => {
            // Invalidated meanwhile: throw the mapping away.
            debug_assert_eq!(s, BlockState::LoadingInvalidated { page });
            g.drop_loading(h, blk, page);
            cv.notify_all();
            g.assert_invariants();
            Ok(false)
        }
    }
}

/// `fetch_file` for a random read fault at byte `off` of block `blk`, whose `src` has
/// page CRCs: only the [`PART_WINDOW`] around `off` is checked (without the lock) and
/// made readable, the block becomes a partial file page (invariant 15) charged that
/// window. `Ok(false)`: invalidated, closed or unmapped meanwhile (nothing shown).
pub(super) fn fetch_partial(
    g: &mut Guard<'_>,
    cv: &Condvar,
    mid: MapId,
    h: HandleId,
    blk: u64,
    src: FileSlice,
    off: usize,
) -> Result<bool> {
    let hs = &g.handles[&h];
    let (pi, file) = (hs.pool, hs.file.clone());
    let bs = g.pools[pi].os.slot_size();
    let w = off / PART_WINDOW;
    if w >= n_windows(src.len.min(bs)) {
        // The fault is in the zero tail: nothing to check there.
        return fetch_file(g, cv, mid, h, blk, src, false);
    }
    if !g.make_part_room(NIL) {
        return fetch_file(g, cv, mid, h, blk, src, false);
    }
    let mut bits = vec![0u64; n_windows(src.len.min(bs)).div_ceil(64)].into_boxed_slice();
    bits[w / 64] |= 1 << (w % 64);
    let page = g.alloc_file_part(pi, src.clone(), Some(bits))?;
    g.pages[page as usize].users.push((h, blk));
    g.set_state(h, blk, BlockState::Loading { page });
    g.assert_invariants();
    let res = MutexGuard::unlocked(g, || {
        os::check_file_pages(&src, w * PART_WINDOW, PART_WINDOW)
    });
    let drop_page = |g: &mut Guard<'_>| {
        if g.handles.contains_key(&h) {
            g.set_state(h, blk, BlockState::Empty);
        }
        g.pages[page as usize].users.clear();
        g.free_page(page);
        cv.notify_all();
        g.assert_invariants();
    };
    if !g.handles.contains_key(&h) || g.state(h, blk) != (BlockState::Loading { page }) {
        // Closed or invalidated meanwhile.
        drop_page(g);
        return Ok(false);
    }
    if let Err(e) = res {
        drop_page(g);
        return Err(load_error(&*file, blk, e));
    }
    let Some(m) = g.maps.get(&mid) else {
        drop_page(g);
        return Ok(false);
    };
    // The view block shows nothing: the entry was not Loaded (invariant 5).
    let addr = g.view_addr(m, blk);
    // SAFETY: a block of registered view `mid` showing nothing, and window `w` of `src`
    // matched its page CRCs above.
    let mapped = unsafe { os::map_file_window(addr, bs, &src, w * PART_WINDOW, PART_WINDOW) };
    // Either way below the block's mapping is replaced (invariant 16).
    g.maps
        .get_mut(&mid)
        .expect("checked above")
        .untidy
        .remove(&blk);
    if let Err(e) = mapped {
        // SAFETY: the same block, which records no mapping: it faults.
        if let Err(e2) = unsafe { os::reset(addr, bs) } {
            fatal(format_args!("{e}; then cannot reset a view block: {e2}"));
        }
        drop_page(g);
        return Err(e);
    }
    g.counters.file_maps += 1;
    g.maps
        .get_mut(&mid)
        .expect("checked above")
        .mapped
        .insert(blk, (page, false));
    g.set_state(h, blk, BlockState::Loaded { page });
    g.lru_touch(page);
    cv.notify_all();
    g.assert_invariants();
    Ok(true)
}

/// A random read fault at byte `off` of partial file page `page` of `(h, blk)`, shown
/// in view `mid` (invariant 15): check the window of `off` without the lock, then
/// charge it and make it readable. `scan_on`: the fault continues a scan through the
/// block: the block is completed instead.
/// `Ok(false)`: the state changed meanwhile (the caller looks again).
pub(super) fn add_window(
    g: &mut Guard<'_>,
    cv: &Condvar,
    mid: MapId,
    (h, blk): (HandleId, u64),
    page: PageId,
    off: usize,
    scan_on: bool,
) -> Result<bool> {
    let src = g.pages[page as usize]
        .file
        .clone()
        .expect("inv 15: a file page");
    let w = off / PART_WINDOW;
    let is_set = |g: &Guard<'_>| {
        g.pages[page as usize]
            .part
            .as_ref()
            .is_none_or(|b| b.get(w / 64).is_none_or(|x| x & (1 << (w % 64)) != 0))
    };
    if is_set(g) {
        // Checked by another thread meanwhile, or in the zero tail: readable.
        return Ok(true);
    }
    if scan_on {
        // A scan through the block, not a random read.
        complete_file(g, cv, h, blk, page)?;
        return Ok(false);
    }
    let file = g.handles[&h].file.clone();
    let res = MutexGuard::unlocked(g, || {
        os::check_file_pages(&src, w * PART_WINDOW, PART_WINDOW)
    });
    if g.state(h, blk) != (BlockState::Loaded { page })
        || g.pages[page as usize].part.is_none()
        || g.maps.get(&mid).and_then(|m| m.mapped.get(&blk)) != Some(&(page, false))
    {
        return Ok(false);
    }
    res.map_err(|e| load_error(&*file, blk, e))?;
    if is_set(g) {
        return Ok(true);
    }
    if !g.make_part_room(page) {
        complete_file(g, cv, h, blk, page)?;
        return Ok(false);
    }
    g.make_room(PART_WINDOW as u64, page)?;
    let addr = g.view_addr(&g.maps[&mid], blk);
    // SAFETY: view `mid` shows `src` at this block (checked above, invariant 15), and
    // window `w` matched its page CRCs above.
    if unsafe { os::show_window(addr, &src, w * PART_WINDOW, PART_WINDOW) }.is_err() {
        // Out of memory areas (each window may split the view's mapping): make the
        // whole block readable instead, one area again.
        complete_file(g, cv, h, blk, page)?;
        return Ok(false);
    }
    g.used += PART_WINDOW as u64;
    g.part_windows += 1;
    let bits = g.pages[page as usize].part.as_mut().expect("checked above");
    bits[w / 64] |= 1 << (w % 64);
    g.lru_touch(page);
    Ok(true)
}

/// Complete partial file page `page` of `(h, blk)` (invariant 15): check its unchecked
/// windows without the lock, then charge the whole block and make it readable in the
/// view that shows it; from then on it is a whole file page. Returns when done or when
/// the state changed meanwhile (the caller looks again either way).
pub(super) fn complete_file(
    g: &mut Guard<'_>,
    cv: &Condvar,
    h: HandleId,
    blk: u64,
    page: PageId,
) -> Result<()> {
    let src = g.pages[page as usize]
        .file
        .clone()
        .expect("inv 15: a file page");
    let bits = g.pages[page as usize]
        .part
        .clone()
        .expect("inv 15: partial");
    let file = g.handles[&h].file.clone();
    let bs = g.bs(page);
    let nw = n_windows(src.len.min(bs as usize));
    g.handles.get_mut(&h).expect("live").inflight += 1;
    let res = MutexGuard::unlocked(g, || {
        for w in (0..nw).filter(|&w| bits[w / 64] & (1 << (w % 64)) == 0) {
            os::check_file_pages(&src, w * PART_WINDOW, PART_WINDOW)?;
        }
        file.source_checked(&src);
        Ok::<_, Error>(())
    });
    g.handles.get_mut(&h).expect("live").inflight -= 1;
    cv.notify_all();
    res.map_err(|e| load_error(&*file, blk, e))?;
    if g.state(h, blk) != (BlockState::Loaded { page }) || g.pages[page as usize].part.is_none() {
        return Ok(());
    }
    let extra = bs - g.charge(page);
    g.make_room(extra, page)?;
    let shown: Vec<usize> = g
        .maps
        .values()
        .filter(|m| m.handle == h && m.mapped.get(&blk) == Some(&(page, false)))
        .map(|m| g.view_addr(m, blk))
        .collect();
    for addr in shown {
        // SAFETY: a view block that shows `src` (filtered above, invariant 15), and
        // every window of it matched its page CRCs above.
        unsafe { os::show_window(addr, &src, 0, bs as usize) }?;
    }
    g.used += extra;
    g.part_windows -= g.windows(page);
    g.pages[page as usize].part = None;
    g.assert_invariants();
    Ok(())
}
