//! Views and their mappings (invariants 5, 9, 13, 14 and 16; a child module of
//! `state.rs`, which holds the numbered invariants): which page a view block shows,
//! moving a slot into a view and home again, promoting an anonymous slot to the memfd,
//! write-protecting views before a store, and resetting untidy blocks.
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use std::collections::HashMap;

use super::{os, HandleId, MapId, MapState, PageId, VmState, NIL, NO_SLOT, UNTIDY_MAX};
use crate::virtmem::fault::fatal;
use crate::Result;

impl VmState {
    pub(super) fn view_addr(&self, m: &MapState, blk: u64) -> usize {
        let bs = self.pools[self.handles[&m.handle].pool].os.slot_size();
        m.base + (blk - m.first_blk) as usize * bs
    }

    /// Make every view of `h` that maps `blk` `PROT_NONE` there again.
    pub(super) fn reset_views(&mut self, h: HandleId, blk: u64) {
        let Some(hs) = self.handles.get(&h) else {
            return;
        };
        let bs = self.pools[hs.pool].os.slot_size();
        for i in 0..hs.maps.len() {
            let mid = self.handles[&h].maps[i];
            let m = self
                .maps
                .get_mut(&mid)
                .expect("handle's mapping is registered");
            if let Some((p, w)) = m.mapped.remove(&blk) {
                m.armed.remove(&blk);
                let addr = m.base + (blk - m.first_blk) as usize * bs;
                if p == NIL {
                    // A PartDirty block's file mapping (invariant 12).
                    // SAFETY: a block of view `mid`, registered and so reserved; its
                    // entry was removed above, so its next access faults and is served
                    // the block again.
                    if let Err(e) = unsafe { os::reset(addr, bs) } {
                        fatal(format_args!(
                            "cannot reset a view block to PROT_NONE: {e}"
                        ));
                    }
                    continue;
                }
                if self.pages[p as usize].at_view == Some((mid, blk)) {
                    // The slot itself lives here: move it back to the pool (invariant 9).
                    self.tidy_beside(mid, blk);
                    let pg = &mut self.pages[p as usize];
                    pg.at_view = None;
                    // SAFETY: the slot was moved to this block (`at_view`, invariant 9)
                    // with protection `w` (invariant 5); the entry is removed above.
                    if unsafe { self.pools[pg.pool].os.move_home(pg.slot, addr, w) } {
                        self.mark_untidy(mid, blk);
                    }
                    continue;
                }
                // A failure here would leave a stale page visible; the kernel fails a
                // MAP_FIXED over our own reservation only when out of memory for VMAs.
                // Going on would show stale data, so stop the process instead.
                // SAFETY: a block of registered view `mid`, whose entry is removed above.
                if let Err(e) = unsafe { os::reset(addr, bs) } {
                    fatal(format_args!("cannot reset a view block to PROT_NONE: {e}"));
                }
            }
        }
    }

    /// Make page `p`'s slot a memfd slot, so that it can get a second user or a second
    /// view (invariant 13). If its slot lives in a view, it stays there (the memfd copy
    /// is moved in its place) unless the kernel cannot move shared mappings, in which
    /// case the view maps the memfd range and the slot is at home.
    pub(super) fn promote(&mut self, p: PageId) {
        let pg = &self.pages[p as usize];
        let os = self.pools[pg.pool].os.clone();
        if pg.slot == NO_SLOT || !os.is_anon(pg.slot) {
            return;
        }
        let view = pg.at_view.map(|(mid, blk)| {
            let m = &self.maps[&mid];
            (self.view_addr(m, blk), m.mapped[&blk].1)
        });
        // SAFETY: the VM lock is held and the page is in use and not `Loading` or
        // `Storing` (callers promote a `Loaded` page or a new user's), so nobody reads
        // or writes its slot meanwhile; `view` is the block `at_view` records, with the
        // protection `mapped` records (invariants 5 and 9).
        if !unsafe { os.promote(pg.slot, view) } {
            self.pages[p as usize].at_view = None;
        }
    }

    /// Bring page `p`'s slot back to its pool address if it was moved to a view; that
    /// view block becomes `PROT_NONE` and faults again on its next access (invariant 9).
    pub(super) fn home(&mut self, p: PageId) {
        let Some((mid, blk)) = self.pages[p as usize].at_view.take() else {
            return;
        };
        let m = self
            .maps
            .get_mut(&mid)
            .expect("a moved page's view is registered");
        let removed = m.mapped.remove(&blk);
        debug_assert_eq!(removed.map(|e| e.0), Some(p), "inv 9");
        let writable = removed.is_some_and(|e| e.1);
        let addr = self.view_addr(&self.maps[&mid], blk);
        self.tidy_beside(mid, blk);
        let pg = &self.pages[p as usize];
        // SAFETY: the slot was moved to this block (`at_view`, invariant 9) with
        // protection `writable` (invariant 5); the block's entry is removed above.
        if unsafe { self.pools[pg.pool].os.move_home(pg.slot, addr, writable) } {
            self.mark_untidy(mid, blk);
        }
    }

    /// Before a slot leaves view block `blk` of `mid`: reset the view's untidy blocks if
    /// one of them is beside `blk` (invariant 16). An untidy neighbour has the flags of
    /// a pool mapping, so the kernel would merge the block being made `PROT_NONE` into
    /// it and split them again to move the slot out: two mapping changes more than the
    /// reset saves. (A scan evicts neighbours one after the other: it resets each block
    /// when the next one leaves, as many calls as without untidy blocks.)
    pub(super) fn tidy_beside(&mut self, mid: MapId, blk: u64) {
        let Some(m) = self.maps.get(&mid) else {
            return;
        };
        let near = |b: Option<u64>| b.is_some_and(|b| m.untidy.contains(&b));
        if near(blk.checked_sub(1)) || near(blk.checked_add(1)) {
            self.tidy(mid);
        }
    }

    /// Record that view block `blk` of `mid` was left untidy (invariant 16), and reset
    /// the view's untidy blocks once there are more than `UNTIDY_MAX`.
    pub(super) fn mark_untidy(&mut self, mid: MapId, blk: u64) {
        let m = self
            .maps
            .get_mut(&mid)
            .expect("a moved page's view is registered");
        m.untidy.insert(blk);
        if m.untidy.len() > UNTIDY_MAX {
            self.tidy(mid);
        }
    }

    /// Reset every untidy block of view `mid` to reserved space (invariant 16): one
    /// `mmap` (and its `madvise`) per run of adjacent blocks, which also merges them
    /// with the reserved space around them into one kernel mapping again.
    pub(in crate::virtmem) fn tidy(&mut self, mid: MapId) {
        let Some(m) = self.maps.get_mut(&mid) else {
            return;
        };
        let untidy = std::mem::take(&mut m.untidy);
        let m = &self.maps[&mid];
        let bs = self.pools[self.handles[&m.handle].pool].os.slot_size();
        let mut it = untidy.into_iter().peekable();
        while let Some(first) = it.next() {
            let mut last = first;
            while it.peek() == Some(&(last + 1)) {
                last += 1;
                it.next();
            }
            let addr = self.view_addr(m, first);
            // As in `reset_views`: a failure is out of memory for mappings, and the
            // blocks stay PROT_NONE either way; but the bound on mappings is lost, so
            // stop rather than run into `vm.max_map_count` later.
            // SAFETY: untidy blocks of registered view `mid`, which maps nothing there
            // (invariant 16): they fault before and after.
            if let Err(e) = unsafe { os::reset(addr, (last - first + 1) as usize * bs) } {
                fatal(format_args!("cannot reset view blocks to PROT_NONE: {e}"));
            }
        }
    }

    /// Write-protect `blk` in every view of `h` that maps it (before a store).
    pub(super) fn protect_views(&mut self, h: HandleId, blk: u64) -> Result<()> {
        let Some(hs) = self.handles.get(&h) else {
            return Ok(());
        };
        let bs = self.pools[hs.pool].os.slot_size();
        for &mid in &hs.maps {
            let m = self
                .maps
                .get_mut(&mid)
                .expect("handle's mapping is registered");
            if let Some(e) = m.mapped.get_mut(&blk) {
                if e.1 {
                    let addr = m.base + (blk - m.first_blk) as usize * bs;
                    // SAFETY: a block of registered view `mid` with a page mapped there
                    // (`mapped`, invariant 5); made read-only.
                    unsafe { os::protect(addr, bs, false) }?;
                    e.1 = false;
                }
            }
        }
        Ok(())
    }

    /// Map page `p` at `blk` of view `mid`, read-only or writable.
    pub(super) fn map_view(&mut self, mid: MapId, blk: u64, p: PageId, writable: bool) -> Result<()> {
        let m = &self.maps[&mid];
        let addr = self.view_addr(m, blk);
        let cur = m.mapped.get(&blk).copied();
        // Page tables at once when this view shows the block before (a scan), on touch
        // otherwise (a random read).
        let seq = blk > m.first_blk && m.mapped.contains_key(&(blk - 1));
        let pool = self.pages[p as usize].pool;
        let slot = self.pages[p as usize].slot;
        if let Some(src) = self.pages[p as usize].file.as_ref() {
            let src = src.clone();
            // A file page (invariant 10): mapped read-only from the file in every view.
            debug_assert!(!writable, "inv 10: a file page is never writable");
            if cur.map(|e| e.0) == Some(p) {
                if self.maps[&mid].armed.contains(&blk) {
                    // SAFETY: an armed block of registered view `mid`, mapping file page
                    // `p` read-only (invariant 14).
                    unsafe { os::arm(addr, false) }?;
                    self.maps.get_mut(&mid).expect("checked").armed.remove(&blk);
                }
            } else {
                if let Some((q, _)) = cur.filter(|e| e.0 != NIL) {
                    if self.pages[q as usize].at_view == Some((mid, blk)) {
                        self.home(q);
                    }
                }
                self.map_file_page(mid, blk, p, &src, seq)?;
            }
            return Ok(());
        }
        match cur {
            Some((q, w)) if q == p && w == writable => return Ok(()),
            Some((q, _)) if q == p => {
                // SAFETY: the block of registered view `mid` already maps page `p`;
                // writable only when the caller made it `Dirty` (invariant 5).
                unsafe { os::protect(addr, self.pools[pool].os.slot_size(), writable) }?
            }
            _ => {
                if let Some((q, _)) = cur.filter(|e| e.0 != NIL) {
                    if self.pages[q as usize].at_view == Some((mid, blk)) {
                        // Another page's slot lives here: send it home first.
                        self.home(q);
                    }
                }
                let os = self.pools[pool].os.clone();
                // The first view of a page gets the slot itself (invariant 9); others
                // map the memfd again, after promoting an anonymous slot (inv 13).
                let at_home = self.pages[p as usize].at_view.is_none();
                // SAFETY: a block of registered view `mid` that shows no slot of its own
                // any more (sent home above); the slot is at home (`at_view` is None)
                // and, its page `Loaded` or `Dirty` under the VM lock, read or written
                // by nobody; writable only when the caller made it `Dirty` (inv 5).
                if at_home && unsafe { os.move_to_view(slot, addr, writable) }.is_ok() {
                    self.pages[p as usize].at_view = Some((mid, blk));
                } else {
                    self.promote(p);
                    // SAFETY: the same view block; a memfd slot now (promoted).
                    unsafe { os.map_at(slot, addr, writable) }?;
                }
            }
        }
        // A RAM page replaced the whole block, readahead's marker included (inv 14),
        // and an untidy mapping left there (inv 16).
        let m = self.maps.get_mut(&mid).expect("checked above");
        m.armed.remove(&blk);
        m.untidy.remove(&blk);
        m.mapped.insert(blk, (p, writable));
        Ok(())
    }

    /// Does view `mid` map a page at `blk`?
    /// (An armed block counts as not mapped: its fault is a read of the marker.)
    pub(in crate::virtmem) fn is_mapped(&self, mid: MapId, blk: u64) -> bool {
        self.maps
            .get(&mid)
            .is_some_and(|m| m.mapped.contains_key(&blk) && !m.armed.contains(&blk))
    }

    /// Does view `mid` show `blk` with readahead's marker armed (invariant 14)?
    pub(in crate::virtmem) fn is_armed(&self, mid: MapId, blk: u64) -> bool {
        self.maps.get(&mid).is_some_and(|m| m.armed.contains(&blk))
    }

    pub(in crate::virtmem) fn add_map(
        &mut self,
        mid: MapId,
        h: HandleId,
        base: usize,
        first_blk: u64,
        n_blks: u64,
    ) {
        self.maps.insert(
            mid,
            MapState {
                handle: h,
                base,
                first_blk,
                n_blks,
                mapped: HashMap::new(),
                armed: Default::default(),
                untidy: Default::default(),
                last_fault: None,
                last_at: None,
                inflight: 0,
            },
        );
        self.handles
            .get_mut(&h)
            .expect("live handle")
            .maps
            .push(mid);
    }

    /// Forget a mapping's state (its range is unmapped by the caller).
    pub(in crate::virtmem) fn remove_map(&mut self, mid: MapId) {
        // Pages written into this view's file mappings are copied out first (inv 12).
        for (h, blk) in self.parts_of_view(mid) {
            self.demote_part(h, blk);
        }
        // Slots moved into this view go home before its range is released (invariant 9).
        let moved: Vec<PageId> = self.maps.get(&mid).map_or_else(Vec::new, |m| {
            m.mapped
                .iter()
                .filter(|(&blk, &(p, _))| {
                    p != NIL && self.pages[p as usize].at_view == Some((mid, blk))
                })
                .map(|(_, &(p, _))| p)
                .collect()
        });
        for p in moved {
            self.home(p);
        }
        if let Some(m) = self.maps.remove(&mid) {
            if let Some(hs) = self.handles.get_mut(&m.handle) {
                hs.maps.retain(|&x| x != mid);
            }
        }
    }
}
