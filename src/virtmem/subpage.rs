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
//!   block (a view write, a patch growing past [`MAX_PATCH_DIVISOR`]) loads it, applies
//!   the patch, makes it `Dirty` and drops the patch (`make_dirty`).
//! - A patched block that is `Loaded` has a private page (one user, no cache key, not a
//!   file page) holding file content + patch: `ensure` builds it when a view or a
//!   checked load reads the block, so views and `read_into` see the written bytes. It is
//!   clean (reclaimable): eviction drops it and the patch stays; the next access builds
//!   it again.
//! - Patch pages count in `used` and `dirty` (`PATCH_PAGE` bytes each) and are never
//!   reclaimed; recording one that does not fit evicts clean pages first, like `alloc`.
//! - `writeout` stores a patch with `BigFile::store_pages` (the db stores it as a delta
//!   record built from the pages alone); `invalidate`, `discard` and closing the handle
//!   drop it.
//!
//! Base bytes (the unwritten part of a page a write covers partly) come from the
//! block's clean page when one is loaded, else from `BigFile::read_pages`, which checks
//! the block's CRC like a load — never from unchecked bytes.

use std::collections::BTreeMap;

use parking_lot::{Condvar, MutexGuard};

use super::{BlockState, HandleId, MapId, PageId, VmState};
use crate::bigfile::PATCH_PAGE;
use crate::{Error, Result};

/// A block with more than `block pages / MAX_PATCH_DIVISOR` dirty pages is tracked whole
/// (the bound of one delta record's pages, storage-format.md).
pub(in crate::virtmem) const MAX_PATCH_DIVISOR: usize = 4;

/// The dirty pages of one block.
#[derive(Debug, Default)]
pub(in crate::virtmem) struct Patch {
    /// Page index → its `PATCH_PAGE` bytes.
    pages: BTreeMap<u32, Box<[u8]>>,
    /// Bumped by every write, so that `writeout` keeps a patch written during its store.
    gen: u64,
}

/// The patches of one handle, by block.
pub(in crate::virtmem) type Patches = BTreeMap<u64, Patch>;

const PP: u64 = PATCH_PAGE as u64;

impl VmState {
    pub(super) fn has_patch(&self, h: HandleId, blk: u64) -> bool {
        self.handles
            .get(&h)
            .is_some_and(|hs| hs.patches.contains_key(&blk))
    }

    /// Bytes held by the patches of every handle (invariants 1 and 6).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(super) fn patch_bytes(&self) -> u64 {
        self.handles
            .values()
            .flat_map(|hs| hs.patches.values())
            .map(|p| p.pages.len() as u64 * PP)
            .sum()
    }

    /// Blocks of `h` with a patch.
    pub(super) fn patched_blocks(&self, h: HandleId) -> impl Iterator<Item = u64> + '_ {
        self.handles
            .get(&h)
            .into_iter()
            .flat_map(|hs| hs.patches.keys().copied())
    }

    /// Drop the patch of `(h, blk)`, if any, giving back its bytes.
    pub(super) fn drop_patch(&mut self, h: HandleId, blk: u64) {
        let Some(p) = self
            .handles
            .get_mut(&h)
            .and_then(|hs| hs.patches.remove(&blk))
        else {
            return;
        };
        let n = p.pages.len() as u64 * PP;
        self.used -= n;
        self.dirty -= n;
    }

    /// Write the patch of `(h, blk)` over the bytes of page `p`'s slot, which the caller
    /// owns (a `Loading` page: at home, no view maps it, invariant 3).
    pub(super) fn apply_patch(&self, h: HandleId, blk: u64, p: PageId) {
        let Some(patch) = self.handles.get(&h).and_then(|hs| hs.patches.get(&blk)) else {
            return;
        };
        let pg = &self.pages[p as usize];
        let dst = self.pools[pg.pool].os.slot_mut(pg.slot);
        for (&i, bytes) in &patch.pages {
            let at = i as usize * PATCH_PAGE;
            dst[at..at + PATCH_PAGE].copy_from_slice(bytes);
        }
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
            for (&blk, p) in &hs.patches {
                assert!(!p.pages.is_empty(), "inv 11: empty patch");
                assert!(
                    p.pages.len() <= bs / PATCH_PAGE / MAX_PATCH_DIVISOR,
                    "inv 11: patch over the bound"
                );
                assert!(
                    p.pages.keys().all(|&i| (i as usize + 1) * PATCH_PAGE <= bs),
                    "inv 11: page inside the block"
                );
                match self.state(h, blk) {
                    BlockState::Dirty { .. } | BlockState::Storing { .. } => {
                        panic!("inv 11: patched block {blk} is dirty whole")
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
/// [`MAX_PATCH_DIVISOR`] — and the caller writes through the mapping after a
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
            BlockState::Empty | BlockState::Loaded { .. } => {}
        }
        let first = (off / PATCH_PAGE) as u32;
        let last = ((end - 1) / PATCH_PAGE) as u32;
        let hs = &g.handles[&h];
        let patch = hs.patches.get(&blk);
        let have = |i: u32| patch.is_some_and(|p| p.pages.contains_key(&i));
        let new: Vec<u32> = (first..=last).filter(|&i| !have(i)).collect();
        let n_after = patch.map_or(0, |p| p.pages.len()) + new.len();
        if n_after > bs / PATCH_PAGE / MAX_PATCH_DIVISOR {
            return Ok(false);
        }
        // New pages the write covers only partly need their base bytes.
        let covered = |i: u32| {
            let a = i as usize * PATCH_PAGE;
            off <= a && a + PATCH_PAGE <= end
        };
        let need: Vec<u32> = new.iter().copied().filter(|&i| !covered(i)).collect();
        let inval = hs.invalidations;
        let mut base: Vec<u8> = Vec::new();
        if !need.is_empty() {
            match state {
                BlockState::Loaded { page } if g.pages[page as usize].file.is_none() => {
                    // A clean RAM page: its bytes are the block (with the patch, if it
                    // is the patched block's private page, invariant 11).
                    let pg = &g.pages[page as usize];
                    let os = &g.pools[pg.pool].os;
                    let src = os.slot(pg.slot);
                    for &i in &need {
                        let a = i as usize * PATCH_PAGE;
                        base.extend_from_slice(&src[a..a + PATCH_PAGE]);
                    }
                    if pg.at_view.is_some() {
                        os.drop_entries(pg.slot);
                    }
                }
                _ => match fetched.take() {
                    Some((at, pages, bytes)) if at == inval && pages == need => base = bytes,
                    _ => {
                        // Not loaded (or mapped from a file): read the pages, checked,
                        // without the lock, then look again.
                        let file = g.handles[&h].file.clone();
                        g.handles.get_mut(&h).expect("live").inflight += 1;
                        let mut bytes = vec![0u8; need.len() * PATCH_PAGE];
                        let r = MutexGuard::unlocked(g, || file.read_pages(blk, &need, &mut bytes));
                        g.handles.get_mut(&h).expect("live").inflight -= 1;
                        cv.notify_all();
                        if let Err(e) = r {
                            return Err(Error::Load {
                                file: file.name().to_string(),
                                blk,
                                cause: e.to_string(),
                            });
                        }
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
        g.reserve_patch(new.len() as u64 * PP)?;
        let hs = g.handles.get_mut(&h).expect("live");
        let patch = hs.patches.entry(blk).or_default();
        let mut base = base.chunks_exact(PATCH_PAGE);
        for &i in &new {
            let bytes = if covered(i) {
                vec![0u8; PATCH_PAGE].into_boxed_slice()
            } else {
                Box::from(base.next().expect("one base page per needed page"))
            };
            patch.pages.insert(i, bytes);
        }
        for i in first..=last {
            let a = i as usize * PATCH_PAGE;
            let (lo, hi) = (off.max(a), end.min(a + PATCH_PAGE));
            let p = patch.pages.get_mut(&i).expect("inserted above");
            p[lo - a..hi - a].copy_from_slice(&data[lo - off..hi - off]);
        }
        patch.gen += 1;
        g.assert_invariants();
        return Ok(true);
    }
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
    let Some(p) = g.handles.get(&h).and_then(|hs| hs.patches.get(&blk)) else {
        return Ok(());
    };
    let gen = p.gen;
    let pages: Vec<(u32, Box<[u8]>)> = p.pages.iter().map(|(&i, b)| (i, b.clone())).collect();
    let hs = g.handles.get_mut(&h).expect("live");
    hs.inflight += 1;
    let file = hs.file.clone();
    let refs: Vec<(u32, &[u8])> = pages.iter().map(|(i, b)| (*i, &b[..])).collect();
    let res = MutexGuard::unlocked(g, || file.store_pages(blk, &refs));
    g.handles.get_mut(&h).expect("live").inflight -= 1;
    g.counters.stores += 1;
    cv.notify_all();
    res?;
    let same = g
        .handles
        .get(&h)
        .and_then(|hs| hs.patches.get(&blk))
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
