//! Writing dirty blocks out and dropping them (a child module of `state.rs`, which
//! holds the numbered invariants): `writeout` stores every dirty block of a handle
//! (`Dirty` → `Storing` → `Loaded`, invariant 3), `invalidate`, `discard` and
//! `discard_from` drop changes, `close_handle` releases what a handle holds.
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use parking_lot::{Condvar, MutexGuard};

use super::{store_patch, BlockState, Guard, HandleId, VmState};
use crate::Result;

impl VmState {
    /// Forget `(h, blk)`: a clean page is let go, a dirty one's changes are dropped, an
    /// in-flight load is told to throw its data away, an in-flight store's page is freed
    /// by the writer when it returns.
    pub(in crate::virtmem) fn invalidate(&mut self, cv: &Condvar, h: HandleId, blk: u64) {
        if let Some(hs) = self.handles.get_mut(&h) {
            hs.invalidations += 1;
        }
        self.drop_patch(h, blk);
        match self.state(h, blk) {
            BlockState::Empty | BlockState::LoadingInvalidated { .. } => {}
            BlockState::Spilled => self.set_state(h, blk, BlockState::Empty),
            BlockState::PartDirty => {
                self.drop_part(h, blk);
                self.set_state(h, blk, BlockState::Empty);
                self.reset_views(h, blk);
            }
            BlockState::Loading { page } => {
                self.set_state(h, blk, BlockState::LoadingInvalidated { page })
            }
            BlockState::Loaded { page } => {
                self.set_state(h, blk, BlockState::Empty);
                self.reset_views(h, blk);
                self.detach(page, h, blk);
            }
            BlockState::Dirty { page } => {
                self.set_state(h, blk, BlockState::Empty);
                self.reset_views(h, blk);
                self.dirty -= self.bs(page);
                self.detach(page, h, blk);
            }
            BlockState::Storing { page } => {
                // The writer still reads the slot: detach, and let it free the page.
                self.set_state(h, blk, BlockState::Empty);
                self.reset_views(h, blk);
                self.dirty -= self.bs(page);
                self.pages[page as usize].users.retain(|&u| u != (h, blk));
            }
        }
        cv.notify_all();
        self.assert_invariants();
    }

    /// Drop every dirty block of `h`.
    #[cfg(any(test, feature = "internals"))]
    pub(in crate::virtmem) fn discard(&mut self, cv: &Condvar, h: HandleId) {
        let dirty = self.dirty_blocks(h);
        for blk in dirty {
            self.invalidate(cv, h, blk);
        }
    }

    /// Blocks of `h` that are dirty whole, patched (invariant 11) or spilled (invariant
    /// 17), ascending.
    pub(in crate::virtmem) fn dirty_blocks(&self, h: HandleId) -> Vec<u64> {
        let mut v: Vec<u64> = self.handles[&h]
            .blocks
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    BlockState::Dirty { .. }
                        | BlockState::Storing { .. }
                        | BlockState::PartDirty
                        | BlockState::Spilled
                )
            })
            .map(|(&b, _)| b)
            .chain(self.patched_blocks(h))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Release everything a handle holds (it has no mappings and nothing in flight).
    pub(in crate::virtmem) fn close_handle(&mut self, h: HandleId) {
        let blocks: Vec<(u64, BlockState)> = match self.handles.get(&h) {
            Some(hs) => hs.blocks.iter().map(|(&b, &s)| (b, s)).collect(),
            None => return,
        };
        let patched: Vec<u64> = self.patched_blocks(h).collect();
        for blk in patched {
            self.drop_patch(h, blk);
        }
        for (blk, s) in blocks {
            match s {
                BlockState::Dirty { page } => {
                    self.dirty -= self.bs(page);
                    self.set_state(h, blk, BlockState::Empty);
                    self.detach(page, h, blk);
                }
                // Only a spill stores a block of a handle without holding the handle: it
                // still reads the page, and frees it when the store returns.
                BlockState::Storing { page } => {
                    self.dirty -= self.bs(page);
                    self.pages[page as usize].users.retain(|&u| u != (h, blk));
                }
                BlockState::Spilled => self.set_state(h, blk, BlockState::Empty),
                BlockState::Loaded { page } => self.detach(page, h, blk),
                // Only readahead loads without holding the handle: its page is left to
                // it (the slot is still being written), and freed when it returns.
                BlockState::Loading { page } | BlockState::LoadingInvalidated { page } => {
                    self.pages[page as usize].users.retain(|&u| u != (h, blk))
                }
                BlockState::PartDirty => self.drop_part(h, blk),
                BlockState::Empty => {}
            }
        }
        self.handles.remove(&h);
        self.assert_invariants();
    }
}

thread_local! {
    /// The buffer a store of an anonymous slot living in a view reads from (see
    /// `writeout`); kept per thread so that its pages are faulted in once. Taken out
    /// while in use, so a nested writeout (from inside a store) gets a fresh one.
    static BOUNCE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Store every dirty block of `h` in ascending order, then mark it clean and read-only
/// (a spilled block was stored by its spill: it is marked clean only). A store error
/// leaves that block (and the later ones) dirty and returns the error.
pub(in crate::virtmem) fn writeout(g: &mut Guard<'_>, cv: &Condvar, h: HandleId) -> Result<()> {
    let blocks = g.dirty_blocks(h);
    for blk in blocks {
        let page = loop {
            match g.state(h, blk) {
                BlockState::Storing { .. } => cv.wait(g),
                BlockState::Dirty { page } => break Some(page),
                _ => break None,
            }
        };
        let Some(page) = page else {
            if g.state(h, blk) == BlockState::Spilled {
                // Stored by its spill already: clean now, like the blocks stored here.
                g.set_state(h, blk, BlockState::Empty);
            }
            store_patch(g, cv, h, blk)?;
            continue;
        };
        g.set_state(h, blk, BlockState::Storing { page });
        if let Err(e) = g.protect_views(h, blk) {
            g.set_state(h, blk, BlockState::Dirty { page });
            return Err(e);
        }
        // The store reads the slot through its pool address; if a memfd slot lives in a
        // view, the entries that creates are dropped afterwards (invariant 9). An
        // anonymous slot living in a view has no pages at home (invariant 13): its bytes
        // are copied out of the view (write-protected now, so they are the bytes to store)
        // into this thread's bounce buffer and stored from there, so that an invalidate
        // may reset the view while the store runs. (One copy of the block: less than the
        // page-table work of reading a moved memfd slot at home and dropping it again.)
        let pi = g.handles[&h].pool;
        let pool = g.pools[pi].os.clone();
        let slot = g.pages[page as usize].slot;
        let moved = g.pages[page as usize].at_view;
        let bounce = match moved {
            Some((mid, vblk)) if pool.is_anon(slot) => {
                let addr = g.view_addr(&g.maps[&mid], vblk);
                let mut buf = BOUNCE.take();
                buf.resize(pool.slot_size(), 0);
                // SAFETY: the slot lives in this view block (`at_view`, invariant 9),
                // mapped there, and write-protected above (`protect_views`), so nobody
                // writes it during the copy.
                unsafe { pool.copy_from_view(slot, addr, &mut buf) };
                Some(buf)
            }
            _ => None,
        };
        let hs = g.handles.get_mut(&h).expect("live");
        hs.inflight += 1;
        let file = hs.file.clone();
        g.assert_invariants();
        let res = MutexGuard::unlocked(g, || match &bounce {
            Some(buf) => file.store_blk(blk, buf),
            None => {
                // SAFETY: nobody writes the slot while Storing: its views are
                // write-protected above (invariant 3).
                let r = file.store_blk(blk, unsafe { pool.slot(slot) });
                if moved.is_some() {
                    pool.drop_entries(slot);
                }
                r
            }
        });
        if let Some(buf) = bounce {
            BOUNCE.set(buf);
        }
        g.handles.get_mut(&h).expect("live").inflight -= 1;
        g.counters.stores += 1;
        cv.notify_all();
        match g.state(h, blk) {
            BlockState::Storing { page: p } if p == page => match res {
                Ok(()) => {
                    g.set_state(h, blk, BlockState::Loaded { page });
                    g.dirty -= g.bs(page);
                    g.lru_touch(page);
                }
                Err(e) => {
                    g.set_state(h, blk, BlockState::Dirty { page });
                    g.assert_invariants();
                    return Err(e);
                }
            },
            _ => {
                // Invalidated or discarded during the store: the page is ours to free.
                if g.pages[page as usize].users.is_empty() {
                    g.free_page(page);
                }
            }
        }
        g.assert_invariants();
    }
    Ok(())
}

/// Drop the changes of the blocks of `h` at or after `first`, once no store of one of
/// them is in flight (a spill by another thread, invariant 17): the lock is held from
/// the last wait to the end, so no new store of them starts meanwhile.
pub(in crate::virtmem) fn discard_from(g: &mut Guard<'_>, cv: &Condvar, h: HandleId, first: u64) {
    let in_flight = |g: &VmState| {
        g.handles.get(&h).is_some_and(|hs| {
            hs.blocks
                .range(first..)
                .any(|(_, s)| matches!(s, BlockState::Storing { .. }))
        })
    };
    while in_flight(g) {
        cv.wait(g);
    }
    let blocks: Vec<u64> = g
        .dirty_blocks(h)
        .into_iter()
        .filter(|&b| b >= first)
        .collect();
    for blk in blocks {
        g.invalidate(cv, h, blk);
    }
}
