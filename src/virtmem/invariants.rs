//! The checker of the numbered invariants of `state.rs` (debug builds only; a child
//! module of `state.rs`), one function per group of invariants; each assertion names
//! the invariant it checks.

use super::VmState;
#[cfg(debug_assertions)]
use super::{
    n_windows, BlockState, MapId, MapState, Page, PageId, MAX_PART_WINDOWS, NIL, NO_SLOT,
    UNTIDY_MAX,
};

impl VmState {
    /// Check the numbered invariants of `state.rs` (debug builds only; the cost is
    /// linear in pages and block entries).
    pub(in crate::virtmem) fn assert_invariants(&self) {
        #[cfg(debug_assertions)]
        self.check_all();
    }
}

#[cfg(debug_assertions)]
impl VmState {
    fn check_all(&self) {
        self.check_budget();
        self.check_free_lists();
        for p in 0..self.pages.len() {
            self.check_page(p as PageId);
        }
        self.check_dirty();
        // 11
        self.check_patches();
        // 17
        self.check_spill();
        for (&mid, m) in &self.maps {
            self.check_view(mid, m);
        }
        self.check_lru_list();
    }

    /// Invariant 1 (`used` and the budget) and the window counts of invariant 15.
    fn check_budget(&self) {
        let used: u64 = (0..self.pages.len() as PageId)
            .filter(|&p| self.pages[p as usize].in_use)
            .map(|p| self.charge(p))
            .sum::<u64>()
            + self.patch_bytes();
        assert_eq!(used, self.used, "inv 1: used");
        let windows: u64 = (0..self.pages.len() as PageId)
            .filter(|&p| self.pages[p as usize].in_use)
            .map(|p| self.windows(p))
            .sum();
        assert_eq!(windows, self.part_windows, "inv 15: windows");
        assert!(windows <= MAX_PART_WINDOWS, "inv 15: bound");
        assert!(self.used <= self.budget, "inv 1: budget");
    }

    /// Invariant 2: a page is in exactly one free list iff it is not in use.
    fn check_free_lists(&self) {
        let mut free_count = vec![0u32; self.pages.len()];
        for pool in &self.pools {
            for &p in &pool.free {
                free_count[p as usize] += 1;
            }
        }
        for &p in &self.file_free {
            free_count[p as usize] += 1;
        }
        for (pg, n) in self.pages.iter().zip(free_count) {
            assert_eq!(n, u32::from(!pg.in_use), "inv 2: free list");
        }
    }

    /// Invariants 2, 3, 4, 7, 9, 10, 13 and 15 for page `p`.
    fn check_page(&self, p: PageId) {
        let pg = &self.pages[p as usize];
        self.check_slot(p, pg);
        if !pg.in_use {
            assert!(pg.users.is_empty() && !pg.in_lru && pg.key.is_none());
            assert!(pg.at_view.is_none(), "inv 9: free page at home");
            return;
        }
        let states: Vec<BlockState> = pg.users.iter().map(|&(h, b)| self.state(h, b)).collect();
        for s in &states {
            assert_eq!(s.page(), Some(p), "inv 2: user entry refers to its page");
        }
        let clean = states
            .iter()
            .all(|s| matches!(s, BlockState::Loaded { .. }));
        if pg.file.is_some() {
            check_file_page(pg, &states, clean);
        }
        if let Some(bits) = &pg.part {
            self.check_partial(p, pg, bits);
        }
        if pg.users.is_empty() {
            // A Storing page detached by invalidate is freed by its writer.
            assert!(pg.key.is_some() || !pg.in_lru, "inv 2: orphan page");
        }
        // 9
        if states.iter().any(|s| {
            matches!(
                s,
                BlockState::Loading { .. }
                    | BlockState::LoadingInvalidated { .. }
                    | BlockState::Storing { .. }
            )
        }) {
            assert!(
                pg.at_view.is_none() || matches!(states[0], BlockState::Storing { .. }),
                "inv 9: loading page at home"
            );
        }
        // 3
        if !clean {
            assert_eq!(pg.users.len(), 1, "inv 3: private page");
        }
        // 4
        let want_lru = clean && (!pg.users.is_empty() || pg.key.is_some());
        assert_eq!(
            pg.in_lru, want_lru,
            "inv 4: LRU membership of page {p}: {states:?}"
        );
        // 7
        if let Some(k) = pg.key {
            assert_eq!(self.cache.get(&k), Some(&p), "inv 7");
            assert!(clean, "inv 7: cached page is clean");
        }
    }

    /// Invariants 9 and 13 for the slot of page `p`: moved iff it records a view, which
    /// maps it; an anonymous slot has at most one user.
    fn check_slot(&self, p: PageId, pg: &Page) {
        if pg.slot != NO_SLOT {
            let os = &self.pools[pg.pool].os;
            assert_eq!(os.is_away(pg.slot), pg.at_view.is_some(), "inv 9: moved");
            if os.is_anon(pg.slot) {
                assert!(pg.users.len() <= 1, "inv 13: anonymous page shared");
            }
        }
        if let Some((mid, blk)) = pg.at_view {
            assert_eq!(
                self.maps
                    .get(&mid)
                    .and_then(|m| m.mapped.get(&blk))
                    .map(|e| e.0),
                Some(p),
                "inv 9: a moved slot is mapped by its view"
            );
        }
    }

    /// Invariant 15 for partial file page `p` (window bitmap `bits`).
    fn check_partial(&self, p: PageId, pg: &Page, bits: &[u64]) {
        let src = pg
            .file
            .as_ref()
            .expect("inv 15: a partial page is a file page");
        assert!(src.page_crcs.is_some(), "inv 15: page CRCs");
        assert_eq!(
            bits.len(),
            n_windows(src.len).div_ceil(64),
            "inv 15: bitmap"
        );
        assert_eq!(pg.users.len(), 1, "inv 15: one user");
        let (h, b) = pg.users[0];
        let views: Vec<_> = self
            .maps
            .iter()
            .filter(|(_, m)| m.mapped.get(&b).is_some_and(|e| e.0 == p))
            .map(|(&mid, m)| (mid, m.armed.contains(&b), m.handle))
            .collect();
        if matches!(self.state(h, b), BlockState::Loaded { .. }) {
            assert!(views.len() <= 1, "inv 15: shown in at most one view block");
            for v in &views {
                assert!(!v.1, "inv 15: never armed");
                assert_eq!(v.2, h, "inv 15: a view of its handle");
            }
        }
    }

    /// Invariant 6: `dirty` is the bytes of `Dirty` and `Storing` entries and patches.
    fn check_dirty(&self) {
        let mut dirty = 0;
        for hs in self.handles.values() {
            for s in hs.blocks.values() {
                if let BlockState::Dirty { page } | BlockState::Storing { page } = *s {
                    dirty += self.bs(page);
                }
            }
        }
        assert_eq!(dirty + self.patch_bytes(), self.dirty, "inv 6: dirty");
    }

    /// Invariants 5, 12, 13, 14 and 16 for view `mid`.
    fn check_view(&self, mid: MapId, m: &MapState) {
        // 16
        assert!(m.untidy.len() <= UNTIDY_MAX, "inv 16: untidy bound");
        for blk in &m.untidy {
            assert!(
                !m.mapped.contains_key(blk) && *blk - m.first_blk < m.n_blks,
                "inv 16: an untidy block is not mapped"
            );
        }
        for blk in &m.armed {
            let e = m.mapped.get(blk);
            assert!(
                e.is_some_and(|e| e.0 != NIL && self.pages[e.0 as usize].file.is_some()),
                "inv 14: an armed block maps a file page"
            );
        }
        for (&blk, &(p, w)) in &m.mapped {
            assert!(
                blk >= m.first_blk && blk - m.first_blk < m.n_blks,
                "inv 5: in range"
            );
            let s = self.state(m.handle, blk);
            if p == NIL {
                assert_eq!(s, BlockState::PartDirty, "inv 12: a file mapping");
                continue;
            }
            assert_eq!(s.page(), Some(p), "inv 5: view maps the entry's page");
            let pg = &self.pages[p as usize];
            if pg.slot != NO_SLOT && self.pools[pg.pool].os.is_anon(pg.slot) {
                assert_eq!(pg.at_view, Some((mid, blk)), "inv 13: one view");
            }
            if w {
                assert!(
                    matches!(s, BlockState::Dirty { .. }),
                    "inv 5: writable => Dirty (or PartDirty, inv 12)"
                );
                assert!(self.pages[p as usize].file.is_none(), "inv 10: read-only");
            }
        }
    }

    /// Invariant 4: the LRU list is well linked and holds exactly the pages marked in it.
    fn check_lru_list(&self) {
        let mut n = 0;
        let mut p = self.lru_head;
        let mut prev = NIL;
        while p != NIL {
            assert!(self.pages[p as usize].in_lru);
            assert_eq!(self.pages[p as usize].lru_prev, prev);
            prev = p;
            p = self.pages[p as usize].lru_next;
            n += 1;
        }
        assert_eq!(prev, self.lru_tail);
        assert_eq!(
            n,
            self.pages.iter().filter(|pg| pg.in_lru).count(),
            "inv 4: list"
        );
    }
}

/// Invariant 10 for a file page: `Loaded`, or fetched by one user; never cached, moved
/// or given a slot.
#[cfg(debug_assertions)]
fn check_file_page(pg: &Page, states: &[BlockState], clean: bool) {
    let fetching = states.len() == 1
        && matches!(
            states[0],
            BlockState::Loading { .. } | BlockState::LoadingInvalidated { .. }
        );
    assert!(
        clean || fetching,
        "inv 10: a file page is Loaded or fetched"
    );
    assert!(pg.key.is_none() && pg.at_view.is_none(), "inv 10");
    assert_eq!(pg.slot, NO_SLOT, "inv 10: no slot");
}
