//! Spilling: when an allocation finds the budget full and no clean page to reclaim, the
//! least recently used dirty block is stored through its file (`BigFile::store_blk`,
//! the same call as `writeout`) and its page freed, so that a transaction can write
//! more than RAM (a child module of `state.rs`: it keeps the numbered invariants there,
//! invariant 17 in particular).
//!
//! ```text
//!   Dirty ──spill: views reset, page at home──▶ Storing ──store ok──▶ Spilled (page freed)
//!     ▲                                            │ store error
//!     └────────────────────────────────────────────┘  (views map it again on access)
//!   Spilled ──access──▶ Empty ──▶ Loading ──▶ Loaded (the file gives the spilled content)
//!   Spilled ──invalidate / discard / close──▶ Empty
//! ```
//!
//! The victim is the head of the *dirty LRU*: the pages of `Dirty` entries ordered by
//! when they became dirty or were last faulted on. Its views are reset before the
//! store (a thread touching the block faults and waits for the store to end, as for
//! `writeout`), which also moves an anonymous slot living in a view home, so the store
//! reads the page where it is, without a copy. When no whole dirty block is left,
//! patches and partly dirty blocks (small writes, `subpage.rs`) are stored instead.
//!
//! What a spill stores is the file's business: the db layer stages the block in its
//! transaction (in memory up to a share of the budget, in the transaction's spill file
//! past it), so the spilled content reads back through `load_blk` / `map_source` and is
//! committed with the rest; a spilled block is listed by `dirty_blocks` and nothing is
//! stored for it again at `writeout`. A file whose stores are final (the test `MemFile`)
//! simply receives the block before `writeout`; `discard` cannot take back a block
//! already spilled.
//!
//! A spill that fails (the file's `store_blk` error: disk full, I/O error) leaves the
//! block `Dirty` and returns the error: an `Err` from the checked calls, and from a page
//! fault the process stops with a message naming it. Spilling runs in the thread that
//! needs the room — a fault, a checked load, a small write — never in the readahead
//! thread (readahead only takes room that is free or clean).
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use parking_lot::{Condvar, MutexGuard};

use super::{BlockState, PageId, VmState, NIL};
use crate::{Error, Result};

type Guard<'a> = MutexGuard<'a, VmState>;

impl VmState {
    /// Take `p` out of the dirty LRU (invariant 17).
    pub(super) fn dlru_remove(&mut self, p: PageId) {
        if !self.pages[p as usize].in_dlru {
            return;
        }
        let (prev, next) = {
            let pg = &self.pages[p as usize];
            (pg.dlru_prev, pg.dlru_next)
        };
        if prev == NIL {
            self.dlru_head = next;
        } else {
            self.pages[prev as usize].dlru_next = next;
        }
        if next == NIL {
            self.dlru_tail = prev;
        } else {
            self.pages[next as usize].dlru_prev = prev;
        }
        let pg = &mut self.pages[p as usize];
        pg.in_dlru = false;
        pg.dlru_prev = NIL;
        pg.dlru_next = NIL;
    }

    /// Put `p` at the most recently used end of the dirty LRU.
    pub(super) fn dlru_touch(&mut self, p: PageId) {
        self.dlru_remove(p);
        let tail = self.dlru_tail;
        {
            let pg = &mut self.pages[p as usize];
            pg.dlru_prev = tail;
            pg.dlru_next = NIL;
            pg.in_dlru = true;
        }
        if tail == NIL {
            self.dlru_head = p;
        } else {
            self.pages[tail as usize].dlru_next = p;
        }
        self.dlru_tail = p;
    }

    /// Is a page being loaded, fetched or stored right now? Its thread soon frees it
    /// or makes it clean and reclaimable, so an allocation that found every page taken
    /// and nothing to spill can wait for it: more threads faulting at once than the
    /// budget has blocks is not RAM exhaustion. Scans the pages: only called when an
    /// allocation failed.
    fn pages_in_flight(&self) -> bool {
        self.pages.iter().any(|pg| {
            pg.in_use
                && pg.users.iter().any(|&(h, b)| {
                    matches!(
                        self.state(h, b),
                        BlockState::Loading { .. }
                            | BlockState::LoadingInvalidated { .. }
                            | BlockState::Storing { .. }
                    )
                })
        })
    }

    /// Debug check of invariant 17.
    #[cfg(debug_assertions)]
    pub(super) fn check_spill(&self) {
        let mut n = 0;
        let mut p = self.dlru_head;
        let mut prev = NIL;
        while p != NIL {
            let pg = &self.pages[p as usize];
            assert!(pg.in_dlru, "inv 17: listed page flagged");
            assert_eq!(pg.dlru_prev, prev, "inv 17: links");
            assert_eq!(pg.users.len(), 1, "inv 17: a dirty page has one user");
            let (h, b) = pg.users[0];
            assert_eq!(
                self.state(h, b),
                BlockState::Dirty { page: p },
                "inv 17: the dirty LRU holds Dirty pages"
            );
            prev = p;
            p = pg.dlru_next;
            n += 1;
        }
        assert_eq!(prev, self.dlru_tail, "inv 17: tail");
        let mut dirty_pages = 0;
        let mut spilled = 0;
        for hs in self.handles.values() {
            let bs = self.pools[hs.pool].os.slot_size() as u64;
            for (&blk, s) in &hs.blocks {
                match s {
                    BlockState::Dirty { .. } => dirty_pages += 1,
                    BlockState::Spilled => {
                        spilled += bs;
                        assert!(
                            hs.patches
                                .first_block()
                                .is_none_or(|_| !hs.patches.holds(blk)),
                            "inv 17: a spilled block has no patch"
                        );
                        for mid in &hs.maps {
                            assert!(
                                !self.maps[mid].mapped.contains_key(&blk),
                                "inv 17: a spilled block is mapped nowhere"
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(n, dirty_pages, "inv 17: every Dirty page is listed");
        assert_eq!(
            n,
            self.pages.iter().filter(|pg| pg.in_dlru).count(),
            "inv 17: flags"
        );
        assert_eq!(spilled, self.spilled, "inv 17: spilled bytes");
    }
}

/// `r`, the result of a step that needed RAM, unless it failed for want of it and room
/// could be made ([`make_way`]): then `None`, and the caller looks at the block's state
/// again (the lock was dropped meanwhile).
pub(super) fn or_make_way<T>(g: &mut Guard<'_>, cv: &Condvar, r: Result<T>) -> Result<Option<T>> {
    match r {
        Err(Error::RamExhausted { .. }) => {
            if make_way(g, cv)? {
                Ok(None)
            } else {
                Err(g.ram_exhausted())
            }
        }
        r => r.map(Some),
    }
}

/// The budget is full and no clean page is left: spill the least recently used dirty
/// block (or a patch), or else wait for a page in flight. `Ok(true)`: something changed,
/// look again; `Ok(false)`: nothing can free RAM. A failed spill is the error.
pub(super) fn make_way(g: &mut Guard<'_>, cv: &Condvar) -> Result<bool> {
    if spill_one(g, cv)? {
        // Dirty data outgrows the budget: from now on the write-behind thread (if on)
        // spills ahead of the allocations.
        if g.wb.on {
            g.wb.armed = true;
        }
        return Ok(true);
    }
    if g.pages_in_flight() {
        cv.wait(g);
        return Ok(true);
    }
    Ok(false)
}

/// The write-behind thread's spill (`writeback.rs`): the head of the dirty LRU, never a
/// patch. `Ok(false)`: no dirty block.
pub(in crate::virtmem) fn spill_ahead(g: &mut Guard<'_>, cv: &Condvar) -> Result<bool> {
    if g.dlru_head == NIL {
        return Ok(false);
    }
    spill_one(g, cv)
}

/// Spill the head of the dirty LRU (see the module docs). `Ok(false)`: no dirty page,
/// and no patch either.
pub(super) fn spill_one(g: &mut Guard<'_>, cv: &Condvar) -> Result<bool> {
    let page = g.dlru_head;
    if page == NIL {
        return spill_patch(g, cv);
    }
    let (h, blk) = g.pages[page as usize].users[0];
    g.set_state(h, blk, BlockState::Storing { page });
    // No view shows the block while it is stored (a writer would change bytes being
    // stored, a reader waits); a slot living in a view comes home, where the store
    // reads it (invariants 9 and 13).
    g.reset_views(h, blk);
    g.home(page);
    let pi = g.pages[page as usize].pool;
    let pool = g.pools[pi].os.clone();
    let slot = g.pages[page as usize].slot;
    let hs = g
        .handles
        .get_mut(&h)
        .expect("a dirty page's handle is live");
    hs.inflight += 1;
    let file = hs.file.clone();
    g.assert_invariants();
    // Nobody writes the slot while Storing and unmapped (invariant 3). The file is
    // dropped without the lock too: when the handle is closed meanwhile it may be the
    // last reference to its database, whose drop takes the VM lock (`VirtMem::drop`).
    let res = MutexGuard::unlocked(g, move || {
        // SAFETY: nobody writes the slot while Storing and unmapped (invariant 3).
        let r = file.store_blk(blk, unsafe { pool.slot(slot) });
        drop(file);
        r
    });
    g.counters.stores += 1;
    g.counters.spill_writes += 1;
    cv.notify_all();
    let live = match g.handles.get_mut(&h) {
        Some(hs) => {
            hs.inflight -= 1;
            true
        }
        None => false,
    };
    let bs = g.bs(page);
    if live && g.state(h, blk) == (BlockState::Storing { page }) {
        if let Err(e) = res {
            // Still dirty: views map it again on their next access.
            g.set_state(h, blk, BlockState::Dirty { page });
            g.assert_invariants();
            return Err(e);
        }
        g.dirty -= bs;
        g.set_state(h, blk, BlockState::Spilled);
        g.detach(page, h, blk);
    } else if g.pages[page as usize].users.is_empty() {
        // Invalidated, discarded or closed during the store: the page is ours to free.
        g.free_page(page);
    }
    g.assert_invariants();
    Ok(true)
}

/// Store one patch or partly dirty block through its file (`store_patch`), the small
/// writes' share of the budget. `Ok(false)`: there is none.
fn spill_patch(g: &mut Guard<'_>, cv: &Condvar) -> Result<bool> {
    let found = g
        .handles
        .iter()
        .find_map(|(&h, hs)| hs.patches.first_block().map(|blk| (h, blk)));
    let Some((h, blk)) = found else {
        return Ok(false);
    };
    g.counters.spill_writes += 1;
    super::store_patch(g, cv, h, blk)?;
    Ok(true)
}
