//! File blocks that need no check before they are shown (their `FileSlice` has no CRC:
//! checked before, by this process or — `Verify::OncePerBoot` — another one, or trusted
//! under `Verify::Off`): mapped straight from the file into a view, with no staging
//! mapping, no CRC pass and no copy (a child module of `state.rs`: it keeps the numbered
//! invariants there; such a block is a whole file page, invariant 10).
//!
//! A fault on such a block also maps its neighbours that need no check either, in the
//! same fault, as far as the budget has room without evicting anything: the blocks
//! after it for a scan, the aligned group of blocks around it for a random read. So a
//! reader meets a wdb fault once per group of blocks, and the kernel's own fault (one
//! 2 MiB entry where the payload is 2 MiB-aligned in the file and its page cache holds
//! large folios, storage-format.md §2.8) once per block — what a plain memory map of
//! the file pays. Neighbours are mapped without filling their page tables: a random
//! reader touches few of them, and an untouched mapping costs no memory.

// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use parking_lot::MutexGuard;

use super::{os, BlockState, HandleId, MapId, PageId, VmState};
use crate::bigfile::FileSlice;
use crate::Result;

/// Blocks a random read fault maps around the block it hit (the aligned group of this
/// many, at most what the budget holds without evicting): 128 MiB of 2 MiB blocks. Each
/// costs one `mmap` with the VM lock held (a few µs) in a fault that happens once per
/// group.
const RANDOM_GROUP: u64 = 64;

impl VmState {
    /// Show `(h, blk)` — `Empty`, `src` needing no check and carrying no delta pages —
    /// as a file page mapped straight into view `mid`, its page tables filled at once if
    /// `populate` (a scan). `arm`: with readahead's marker (invariant 14). The block is `Loaded` even if the mapping fails (the next access
    /// maps it again); the error is returned.
    pub(super) fn map_checked(
        &mut self,
        mid: MapId,
        (h, blk): (HandleId, u64),
        pi: usize,
        src: FileSlice,
        (arm, populate): (bool, bool),
    ) -> Result<PageId> {
        debug_assert!(src.crc.is_none() && src.pages.is_none());
        let page = self.alloc_file(pi, src)?;
        self.pages[page as usize].users.push((h, blk));
        self.set_state(h, blk, BlockState::Loaded { page });
        self.lru_touch(page);
        self.map_file_page(
            mid,
            blk,
            page,
            &self.pages[page as usize].file.clone().expect("a file page"),
            populate,
        )?;
        if arm {
            let addr = self.view_addr(&self.maps[&mid], blk);
            // SAFETY: the block of registered view `mid` that maps file page `page`
            // read-only, just above.
            if unsafe { os::arm(addr, true) }.is_ok() {
                self.maps
                    .get_mut(&mid)
                    .expect("mapped above")
                    .armed
                    .insert(blk);
            }
        }
        Ok(page)
    }
}

impl VmState {
    /// Map file page `p` (`src`) at view block `blk` of `mid`, which shows another page
    /// or nothing there (invariant 10), filling its page tables if `populate`.
    pub(super) fn map_file_page(
        &mut self,
        mid: MapId,
        blk: u64,
        p: PageId,
        src: &FileSlice,
        populate: bool,
    ) -> Result<()> {
        let addr = self.view_addr(&self.maps[&mid], blk);
        let bs = self.bs(p) as usize;
        // SAFETY: a block of registered view `mid`, reserved while it is registered; no
        // slot lives there (`map_view` sends one home first, `map_checked` maps an
        // `Empty` block); `src` needs no check or was checked (a file page, inv 10).
        unsafe { os::map_file(addr, bs, src, populate) }?;
        let m = self.maps.get_mut(&mid).expect("a live view");
        m.armed.remove(&blk);
        m.untidy.remove(&blk);
        m.mapped.insert(blk, (p, false));
        self.counters.file_maps += 1;
        Ok(())
    }
}

/// After a read fault mapped `(h, blk)` (a block needing no check) into view `mid`, map
/// the neighbours that need no check either (see the module doc): the next readahead
/// window for a scan (`seq`), the aligned group of [`RANDOM_GROUP`] around `blk` for a
/// random read. Only blocks that are `Empty`, unpatched and fit in the budget without
/// an eviction; the file is asked without the VM lock (invariant 8), and nothing is
/// mapped if a block of the handle was invalidated meanwhile. Best effort: a block
/// that cannot be mapped is left `Empty` for its own fault.
pub(super) fn map_neighbours(g: &mut MutexGuard<'_, VmState>, mid: MapId, blk: u64, seq: bool) {
    let Some(m) = g.maps.get(&mid) else { return };
    let (h, first, end) = (m.handle, m.first_blk, m.first_blk + m.n_blks);
    let bs = g.block_size_of(h) as u64;
    let room = g.budget.saturating_sub(g.used) / bs;
    let (lo, hi) = if seq {
        // The window less one: the scan's next fault, on the block after these, is then
        // within a window of this one, which tells it is a scan.
        let k = super::super::readahead::window(g.budget, bs);
        (blk + 1, blk.saturating_add(k))
    } else {
        let lo = blk - blk % RANDOM_GROUP;
        (lo, lo.saturating_add(RANDOM_GROUP))
    };
    let want: Vec<u64> = (lo.max(first)..hi.min(end))
        .filter(|&b| b != blk && g.state(h, b) == BlockState::Empty && !g.has_patch(h, b))
        .take(usize::try_from(room).unwrap_or(usize::MAX))
        .collect();
    if want.is_empty() {
        return;
    }
    let hs = &g.handles[&h];
    let (file, pi, inval) = (hs.file.clone(), hs.pool, hs.invalidations);
    let found: Vec<(u64, FileSlice)> = MutexGuard::unlocked(g, || {
        want.iter()
            .filter_map(|&b| match file.map_source(b, false) {
                Ok(Some(s)) if s.crc.is_none() && s.pages.is_none() => Some((b, s)),
                _ => None,
            })
            .collect()
    });
    for (b, src) in found {
        let still = g
            .handles
            .get(&h)
            .is_some_and(|hs| hs.invalidations == inval)
            && g.maps.contains_key(&mid)
            && g.state(h, b) == BlockState::Empty
            && !g.has_patch(h, b);
        if !still || g.used + bs > g.budget {
            return;
        }
        if g.map_checked(mid, (h, b), pi, src, (false, false)).is_err() {
            return;
        }
    }
}
