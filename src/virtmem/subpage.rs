//! Small writes: dirty 4 KiB pages of a block kept beside the page-state machine, so
//! that writing a few bytes of many blocks holds a few pages per block in RAM, not whole
//! blocks (a child module of `state.rs`: it keeps the numbered invariants there).
//!
//! A *patch* of `(handle, blk)` is a set of 4 KiB pages — base bytes with the written
//! bytes over them — recorded by [`write_patch`] (`Mapping::write_pages`, behind
//! `ArrayCore::write_from`) without a fault and without loading the block. It stands for
//! the block's current content together with the file: file content with the patch's
//! pages replaced. Rules (invariant 11 in `state.rs`):
//!
//! - A patched block is never `Dirty`/`Storing`: the first write that needs the whole
//!   block (a view write, a patch growing past [`max_delta_pages`]) loads it, applies
//!   the patch, makes it `Dirty` and drops the patch (`make_dirty`).
//! - A patched block that is `Loaded` has a private page (one user, no cache key, not a
//!   file page) holding file content + patch: `ensure` builds it when a view or a
//!   checked load reads the block, so views and `read_into` see the written bytes. It is
//!   clean (reclaimable): eviction drops it and the patch stays; the next access builds
//!   it again.
//! - Patch pages count in `used` and `dirty` (`PAGE` bytes each) and are never
//!   reclaimed; recording one that does not fit evicts clean pages first, like `alloc`.
//! - `writeout` stores a patch with `BigFile::store_pages` (the db stores it as a delta
//!   record built from the pages alone); `invalidate`, `discard` and closing the handle
//!   drop it.
//!
//! Base bytes (the unwritten part of a page a write covers partly) come from the
//! block's clean page when one is loaded, else from `BigFile::read_pages`, which checks
//! the block's CRC like a load — never from unchecked bytes.
//!
//! Writes through a view take the same road when the block is a clean *file page*
//! (invariant 10) of the handle's only view: the write fault makes just that 4 KiB page
//! of the view's private file mapping writable and the kernel copies it on write
//! ([`VmState::start_part`], [`VmState::extend_part`]); the block is `PartDirty`
//! (invariant 12) and its written pages live in the view until anything else needs the
//! block, which turns them into a patch first ([`VmState::demote_part`]).
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use std::collections::BTreeMap;

use parking_lot::{Condvar, MutexGuard};

use super::{load_error, BlockState, HandleId, MapId, PageId, VmState};
// A block with more than `max_delta_pages(block size)` dirty pages is tracked whole: a
// patch is stored as one delta record, and that is the most pages one may carry.
use crate::bigfile::{max_delta_pages, PAGE};
use crate::{Error, Result};

/// The dirty pages of one block.
#[derive(Debug, Default)]
pub(in crate::virtmem) struct Patch {
    /// Page index → its `PAGE` bytes.
    pages: BTreeMap<u32, Box<[u8]>>,
    /// Bumped by every write, so that `writeout` keeps a patch written during its store.
    gen: u64,
}

/// Pages of a `PartDirty` block written through its one view (sorted).
#[derive(Debug)]
pub(in crate::virtmem) struct Part {
    /// The view whose private file mapping holds the written pages.
    mid: MapId,
    /// Page indexes written, ascending.
    written: Vec<u32>,
}

/// The small-write state of one handle: patches and partly dirty blocks, by block.
#[derive(Debug, Default)]
pub(in crate::virtmem) struct Patches {
    blocks: BTreeMap<u64, Patch>,
    parts: BTreeMap<u64, Part>,
}

const PP: u64 = PAGE as u64;

impl Patches {
    /// A block with a patch or partly dirty, if there is one (a spill's victim when no
    /// whole dirty block is left).
    pub(in crate::virtmem) fn first_block(&self) -> Option<u64> {
        self.blocks
            .keys()
            .next()
            .or_else(|| self.parts.keys().next())
            .copied()
    }

    /// Does block `blk` have a patch or written pages?
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(in crate::virtmem) fn holds(&self, blk: u64) -> bool {
        self.blocks.contains_key(&blk) || self.parts.contains_key(&blk)
    }
}

impl VmState {
    pub(in crate::virtmem) fn has_patch(&self, h: HandleId, blk: u64) -> bool {
        self.handles
            .get(&h)
            .is_some_and(|hs| hs.patches.blocks.contains_key(&blk))
    }

    /// Bytes held by the patches of every handle (invariants 1 and 6).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(super) fn patch_bytes(&self) -> u64 {
        self.handles
            .values()
            .flat_map(|hs| {
                let a = hs.patches.blocks.values().map(|p| p.pages.len());
                let b = hs.patches.parts.values().map(|p| p.written.len());
                a.chain(b)
            })
            .map(|n| n as u64 * PP)
            .sum()
    }

    /// Blocks of `h` with a patch.
    pub(super) fn patched_blocks(&self, h: HandleId) -> impl Iterator<Item = u64> + '_ {
        self.handles
            .get(&h)
            .into_iter()
            .flat_map(|hs| hs.patches.blocks.keys().copied())
    }

    /// Drop the patch of `(h, blk)`, if any, giving back its bytes.
    pub(super) fn drop_patch(&mut self, h: HandleId, blk: u64) {
        let Some(p) = self
            .handles
            .get_mut(&h)
            .and_then(|hs| hs.patches.blocks.remove(&blk))
        else {
            return;
        };
        let n = p.pages.len() as u64 * PP;
        self.used -= n;
        self.dirty -= n;
    }

    /// Write the patch of `(h, blk)` over the bytes of page `p`'s slot.
    ///
    /// # Safety
    /// The caller owns the slot, as for `Pool::slot_mut`: `p` is its `Loading` page (at
    /// home, no view maps it, nobody else reads or writes it, invariant 3).
    pub(super) unsafe fn apply_patch(&self, h: HandleId, blk: u64, p: PageId) {
        let Some(patch) = self
            .handles
            .get(&h)
            .and_then(|hs| hs.patches.blocks.get(&blk))
        else {
            return;
        };
        let pg = &self.pages[p as usize];
        // SAFETY: the caller owns the slot (the contract above).
        let dst = unsafe { self.pools[pg.pool].os.slot_mut(pg.slot) };
        for (&i, bytes) in &patch.pages {
            let at = i as usize * PAGE;
            dst[at..at + PAGE].copy_from_slice(bytes);
        }
    }

    /// A write fault at byte `off` of a clean file page `p` (invariant 10) of
    /// `(h, blk)`, mapped read-only in view `mid`: when `mid` is the handle's only view
    /// and the OS page is 4 KiB, make just that page writable — the kernel copies it on
    /// write (`MAP_PRIVATE`), nothing else of the block is copied — and track the block
    /// as `PartDirty` (invariant 12). The file page is let go: the view keeps its file
    /// mapping, and the block counts only its written pages. `Ok(false)`: not possible
    /// here, the caller makes the block `Dirty` whole.
    pub(super) fn start_part(
        &mut self,
        mid: MapId,
        h: HandleId,
        blk: u64,
        p: PageId,
        off: usize,
    ) -> Result<bool> {
        let hs = &self.handles[&h];
        let bs = self.pools[hs.pool].os.slot_size();
        if super::os::page_size() != PAGE
            || hs.maps.as_slice() != [mid]
            || hs.patches.blocks.contains_key(&blk)
            || self.pages[p as usize].users.as_slice() != [(h, blk)]
            || self.maps[&mid].mapped.get(&blk) != Some(&(p, false))
            || off >= bs
        {
            return Ok(false);
        }
        let i = (off / PAGE) as u32;
        let base = self.view_addr(&self.maps[&mid], blk);
        if self.maps[&mid].armed.contains(&blk) {
            // Readahead's marker goes (invariant 14 holds for file pages only): the
            // block's first page is readable again before it becomes PartDirty.
            // SAFETY: an armed block maps a file page read-only (invariant 14): `p`.
            unsafe { super::os::arm(base, false) }?;
            self.maps
                .get_mut(&mid)
                .expect("checked above")
                .armed
                .remove(&blk);
        }
        let addr = base + i as usize * PAGE;
        // SAFETY: a page of the block view `mid` maps from the file privately (checked
        // above); it becomes the written page of a `PartDirty` block (invariant 12).
        unsafe { super::os::protect(addr, PAGE, true) }?;
        self.set_state(h, blk, BlockState::PartDirty);
        self.maps
            .get_mut(&mid)
            .expect("checked above")
            .mapped
            .insert(blk, (super::NIL, true));
        self.pages[p as usize].users.clear();
        self.free_page(p);
        self.handles
            .get_mut(&h)
            .expect("live")
            .patches
            .parts
            .insert(
                blk,
                Part {
                    mid,
                    written: vec![i],
                },
            );
        // The block's size was given back just above: one page always fits.
        self.used += PP;
        self.dirty += PP;
        Ok(true)
    }

    /// A write fault at byte `off` of `PartDirty` block `(h, blk)` in view `mid`: make
    /// that page writable too. `Ok(false)`: another view, or over the bound — the caller
    /// demotes the block ([`VmState::demote_part`]) and goes on as for a patched block.
    pub(super) fn extend_part(
        &mut self,
        mid: MapId,
        h: HandleId,
        blk: u64,
        off: usize,
    ) -> Result<bool> {
        let hs = &self.handles[&h];
        let bs = self.pools[hs.pool].os.slot_size();
        let Some(part) = hs.patches.parts.get(&blk) else {
            return Ok(false);
        };
        let i = (off / PAGE) as u32;
        if part.mid != mid || off >= bs {
            return Ok(false);
        }
        let k = match part.written.binary_search(&i) {
            // Written already: the page is writable; nothing to do.
            Ok(_) => return Ok(true),
            Err(k) => k,
        };
        if part.written.len() + 1 > max_delta_pages(bs) {
            return Ok(false);
        }
        self.reserve_patch(PP)?;
        let addr = self.view_addr(&self.maps[&mid], blk) + i as usize * PAGE;
        // SAFETY: a page of the `PartDirty` block's private file mapping in its one view
        // (invariant 12), which becomes one more of its written pages.
        if let Err(e) = unsafe { super::os::protect(addr, PAGE, true) } {
            self.used -= PP;
            self.dirty -= PP;
            return Err(e);
        }
        self.handles
            .get_mut(&h)
            .expect("live")
            .patches
            .parts
            .get_mut(&blk)
            .expect("checked above")
            .written
            .insert(k, i);
        Ok(true)
    }

    /// `PartDirty` → `Empty` with a patch: write-protect the view's block (a concurrent
    /// writer faults and waits for the lock), copy the written pages out of the view
    /// into patch pages (their bytes stay counted), and reset the view block.
    pub(super) fn demote_part(&mut self, h: HandleId, blk: u64) {
        let Some(part) = self
            .handles
            .get_mut(&h)
            .and_then(|hs| hs.patches.parts.remove(&blk))
        else {
            return;
        };
        let bs = self.pools[self.handles[&h].pool].os.slot_size();
        let base = self.view_addr(&self.maps[&part.mid], blk);
        // SAFETY: the `PartDirty` block's file mapping in its one view (invariant 12);
        // made read-only.
        if let Err(e) = unsafe { super::os::protect(base, bs, false) } {
            // Copying a page another thread is writing could tear it.
            crate::virtmem::fault::fatal(format_args!(
                "cannot write-protect a partly dirty block: {e}"
            ));
        }
        let mut patch = Patch::default();
        for &i in &part.written {
            let mut b = vec![0u8; PAGE].into_boxed_slice();
            // SAFETY: a written page of the block's mapping in view `part.mid`, live and
            // readable; write-protected above, so nobody writes it meanwhile.
            unsafe { super::os::copy_from_view(base + i as usize * PAGE, &mut b) };
            patch.pages.insert(i, b);
        }
        patch.gen = 1;
        self.set_state(h, blk, BlockState::Empty);
        self.reset_views(h, blk);
        self.handles
            .get_mut(&h)
            .expect("live")
            .patches
            .blocks
            .insert(blk, patch);
    }

    /// Forget the written pages of a `PartDirty` block (invalidate, discard, close).
    pub(super) fn drop_part(&mut self, h: HandleId, blk: u64) {
        let Some(part) = self
            .handles
            .get_mut(&h)
            .and_then(|hs| hs.patches.parts.remove(&blk))
        else {
            return;
        };
        let n = part.written.len() as u64 * PP;
        self.used -= n;
        self.dirty -= n;
    }

    /// `PartDirty` blocks shown by view `mid` (demoted before the view goes away).
    pub(super) fn parts_of_view(&self, mid: MapId) -> Vec<(HandleId, u64)> {
        let Some(m) = self.maps.get(&mid) else {
            return Vec::new();
        };
        self.handles[&m.handle]
            .patches
            .parts
            .iter()
            .filter(|(_, p)| p.mid == mid)
            .map(|(&b, _)| (m.handle, b))
            .collect()
    }

    /// Count `n` more bytes of patches in `used` and `dirty`, reclaiming clean pages in
    /// LRU order while they do not fit.
    fn reserve_patch(&mut self, n: u64) -> Result<()> {
        while self.used + n > self.budget {
            let victim = self.lru_head;
            if victim == super::NIL {
                return Err(self.ram_exhausted());
            }
            self.evict(victim);
        }
        self.used += n;
        self.dirty += n;
        Ok(())
    }

    /// Debug check of invariant 11.
    #[cfg(debug_assertions)]
    pub(super) fn check_patches(&self) {
        for (&h, hs) in &self.handles {
            let bs = self.pools[hs.pool].os.slot_size();
            for (&blk, part) in &hs.patches.parts {
                assert_eq!(
                    self.state(h, blk),
                    BlockState::PartDirty,
                    "inv 12: a part has its state"
                );
                assert!(!hs.patches.blocks.contains_key(&blk), "inv 12: not patched");
                assert!(
                    !part.written.is_empty()
                        && part.written.windows(2).all(|w| w[0] < w[1])
                        && part.written.len() <= max_delta_pages(bs),
                    "inv 12: written pages"
                );
                assert!(
                    hs.maps
                        .iter()
                        .all(|&m| m == part.mid || !self.maps[&m].mapped.contains_key(&blk)),
                    "inv 12: no other view maps it"
                );
                assert_eq!(
                    self.maps[&part.mid].mapped.get(&blk),
                    Some(&(super::NIL, true)),
                    "inv 12: mapped from the file"
                );
            }
            for (&blk, p) in &hs.patches.blocks {
                assert!(!p.pages.is_empty(), "inv 11: empty patch");
                assert!(
                    p.pages.len() <= max_delta_pages(bs),
                    "inv 11: patch over the bound"
                );
                assert!(
                    p.pages.keys().all(|&i| (i as usize + 1) * PAGE <= bs),
                    "inv 11: page inside the block"
                );
                match self.state(h, blk) {
                    BlockState::Dirty { .. }
                    | BlockState::Storing { .. }
                    | BlockState::PartDirty
                    | BlockState::Spilled => {
                        panic!("inv 11: patched block {blk} is dirty whole or spilled")
                    }
                    BlockState::Loaded { page } => {
                        let pg = &self.pages[page as usize];
                        assert!(
                            pg.users.len() == 1 && pg.key.is_none() && pg.file.is_none(),
                            "inv 11: a patched block's clean page is private"
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Record `data`, written at byte `off` of block `blk` of mapping `mid` (inside one
/// block), as dirty pages of the block's patch. `Ok(false)`: the block is tracked whole
/// instead — it is `Dirty` already, `data` covers all of it, or the patch would pass
/// [`max_delta_pages`] — and the caller writes through the mapping after a
/// `Mapping::load` for write (which folds an existing patch into the dirty page). Drops
/// the lock for `BigFile::read_pages` (invariant 8).
pub(in crate::virtmem) fn write_patch(
    g: &mut MutexGuard<'_, VmState>,
    cv: &Condvar,
    mid: MapId,
    blk: u64,
    off: usize,
    data: &[u8],
) -> Result<bool> {
    if data.is_empty() {
        return Ok(true);
    }
    // Base pages read without the lock: valid while no block of the handle was
    // invalidated since (the `invalidations` counter they were read at).
    let mut fetched: Option<(u64, Vec<u32>, Vec<u8>)> = None;
    loop {
        let Some(m) = g.maps.get(&mid) else {
            return Err(Error::Busy(
                "the mapping was unmapped during the write".into(),
            ));
        };
        let h = m.handle;
        let hs = &g.handles[&h];
        let bs = g.pools[hs.pool].os.slot_size();
        let end = off
            .checked_add(data.len())
            .filter(|&e| e <= bs)
            .ok_or_else(|| Error::OutOfRange(format!("write of {} bytes at {off}", data.len())))?;
        if off == 0 && end == bs {
            return Ok(false);
        }
        let state = g.state(h, blk);
        match state {
            BlockState::Loading { .. }
            | BlockState::LoadingInvalidated { .. }
            | BlockState::Storing { .. } => {
                cv.wait(g);
                continue;
            }
            BlockState::Dirty { .. } => return Ok(false),
            BlockState::PartDirty => {
                g.demote_part(h, blk);
                continue;
            }
            BlockState::Spilled => {
                // Its content is the file's again (invariant 17): patch over that.
                g.set_state(h, blk, BlockState::Empty);
                continue;
            }
            BlockState::Empty | BlockState::Loaded { .. } => {}
        }
        let first = (off / PAGE) as u32;
        let last = ((end - 1) / PAGE) as u32;
        let hs = &g.handles[&h];
        let patch = hs.patches.blocks.get(&blk);
        let have = |i: u32| patch.is_some_and(|p| p.pages.contains_key(&i));
        let new: Vec<u32> = (first..=last).filter(|&i| !have(i)).collect();
        let n_after = patch.map_or(0, |p| p.pages.len()) + new.len();
        if n_after > max_delta_pages(bs) {
            return Ok(false);
        }
        // New pages the write covers only partly need their base bytes.
        let covered = |i: u32| {
            let a = i as usize * PAGE;
            off <= a && a + PAGE <= end
        };
        let need: Vec<u32> = new.iter().copied().filter(|&i| !covered(i)).collect();
        let inval = hs.invalidations;
        let mut base: Vec<u8> = Vec::new();
        if !need.is_empty() {
            match state {
                BlockState::Loaded { page } if g.pages[page as usize].file.is_none() => {
                    base = base_from_page(g, page, &need);
                }
                _ => match fetched.take() {
                    Some((at, pages, bytes)) if at == inval && pages == need => base = bytes,
                    _ => {
                        // Not loaded (or mapped from a file): read the pages, checked,
                        // without the lock, then look again.
                        let bytes = read_base(g, cv, h, blk, &need)?;
                        fetched = Some((inval, need, bytes));
                        continue;
                    }
                },
            }
        }
        // The block's clean page (shared, mapped from a file, or the private page of an
        // older patch) no longer shows the block: let it go (views fault again).
        if let BlockState::Loaded { page } = state {
            g.set_state(h, blk, BlockState::Empty);
            g.reset_views(h, blk);
            g.detach(page, h, blk);
        }
        let r = g.reserve_patch(new.len() as u64 * PP);
        if super::spill::or_make_way(g, cv, r)?.is_none() {
            // Room was made by a spill (the lock was dropped): look again.
            fetched = None;
            continue;
        }
        record(g, (h, blk), off, data, &new, &base);
        g.assert_invariants();
        return Ok(true);
    }
}

/// Base bytes of pages `need` (in order) of a block whose clean RAM page is `page`: its
/// bytes are the block (with the patch, if it is the patched block's private page,
/// invariant 11).
fn base_from_page(g: &VmState, page: PageId, need: &[u32]) -> Vec<u8> {
    let mut base = Vec::with_capacity(need.len() * PAGE);
    let pg = &g.pages[page as usize];
    let os = &g.pools[pg.pool].os;
    if os.is_anon(pg.slot) && os.is_away(pg.slot) {
        // An anonymous slot living in a view has no pages at home (invariant 13): read
        // its bytes where it lives.
        let (mid, vblk) = pg.at_view.expect("an away slot is in a view");
        let at = g.view_addr(&g.maps[&mid], vblk);
        for &i in need {
            let a = i as usize * PAGE;
            let mut b = [0u8; PAGE];
            // SAFETY: the clean page's slot lives in this view block (`at_view`), mapped
            // read-only there (a clean page is never writable, invariant 5), and the VM
            // lock keeps it there.
            unsafe { super::os::copy_from_view(at + a, &mut b) };
            base.extend_from_slice(&b);
        }
    } else {
        // SAFETY: a clean page (`Loaded`), mapped read-only everywhere: nobody writes
        // its slot while the VM lock is held (invariants 3 and 5).
        let src = unsafe { os.slot(pg.slot) };
        for &i in need {
            let a = i as usize * PAGE;
            base.extend_from_slice(&src[a..a + PAGE]);
        }
        if pg.at_view.is_some() {
            os.drop_entries(pg.slot);
        }
    }
    base
}

/// Read pages `need` of block `blk` of `h` through its file (`BigFile::read_pages`,
/// checked like a load) without the lock (invariant 8).
fn read_base(
    g: &mut MutexGuard<'_, VmState>,
    cv: &Condvar,
    h: HandleId,
    blk: u64,
    need: &[u32],
) -> Result<Vec<u8>> {
    let file = g.handles[&h].file.clone();
    g.handles.get_mut(&h).expect("live").inflight += 1;
    let mut bytes = vec![0u8; need.len() * PAGE];
    let r = MutexGuard::unlocked(g, || file.read_pages(blk, need, &mut bytes));
    g.handles.get_mut(&h).expect("live").inflight -= 1;
    cv.notify_all();
    match r {
        Ok(()) => Ok(bytes),
        Err(e) => Err(load_error(&*file, blk, e)),
    }
}

/// Add pages `new` to the patch of `(h, blk)` — zeros where `data` covers the whole
/// page, else the next page of `base` — and copy `data`, written at byte `off`, over
/// the pages it covers. Room for the new pages is reserved by the caller.
fn record(
    g: &mut VmState,
    (h, blk): (HandleId, u64),
    off: usize,
    data: &[u8],
    new: &[u32],
    base: &[u8],
) {
    let end = off + data.len();
    let covered = |i: u32| {
        let a = i as usize * PAGE;
        off <= a && a + PAGE <= end
    };
    let hs = g.handles.get_mut(&h).expect("live");
    let patch = hs.patches.blocks.entry(blk).or_default();
    let mut base = base.chunks_exact(PAGE);
    for &i in new {
        let bytes = if covered(i) {
            vec![0u8; PAGE].into_boxed_slice()
        } else {
            Box::from(base.next().expect("one base page per needed page"))
        };
        patch.pages.insert(i, bytes);
    }
    let (first, last) = ((off / PAGE) as u32, ((end - 1) / PAGE) as u32);
    for i in first..=last {
        let a = i as usize * PAGE;
        let (lo, hi) = (off.max(a), end.min(a + PAGE));
        let p = patch.pages.get_mut(&i).expect("inserted above");
        p[lo - a..hi - a].copy_from_slice(&data[lo - off..hi - off]);
    }
    patch.gen += 1;
}

/// `writeout` of a patched block: store its pages with `BigFile::store_pages` without
/// the lock, then drop the patch unless it was written meanwhile. The block's private
/// clean page (if any) still shows the block as stored. A load in flight for the block
/// read the file before the store: it is told to throw its data away.
pub(in crate::virtmem) fn store_patch(
    g: &mut MutexGuard<'_, VmState>,
    cv: &Condvar,
    h: HandleId,
    blk: u64,
) -> Result<()> {
    if g.state(h, blk) == BlockState::PartDirty {
        g.demote_part(h, blk);
    }
    let Some(p) = g.handles.get(&h).and_then(|hs| hs.patches.blocks.get(&blk)) else {
        return Ok(());
    };
    let gen = p.gen;
    let pages: Vec<(u32, Box<[u8]>)> = p.pages.iter().map(|(&i, b)| (i, b.clone())).collect();
    let hs = g.handles.get_mut(&h).expect("live");
    hs.inflight += 1;
    let file = hs.file.clone();
    let refs: Vec<(u32, &[u8])> = pages.iter().map(|(i, b)| (*i, &b[..])).collect();
    // The file is dropped without the lock (see `spill_one`).
    let res = MutexGuard::unlocked(g, move || {
        let r = file.store_pages(blk, &refs);
        drop(file);
        r
    });
    // A spill may store a patch of a handle that is closed meanwhile.
    if let Some(hs) = g.handles.get_mut(&h) {
        hs.inflight -= 1;
    }
    g.counters.stores += 1;
    cv.notify_all();
    res?;
    let same = g
        .handles
        .get(&h)
        .and_then(|hs| hs.patches.blocks.get(&blk))
        .is_some_and(|p| p.gen == gen);
    if same {
        g.drop_patch(h, blk);
    }
    if let BlockState::Loading { page } = g.state(h, blk) {
        g.set_state(h, blk, BlockState::LoadingInvalidated { page });
    }
    g.assert_invariants();
    Ok(())
}
