//! The RAM budget and the clean LRU (invariants 1, 2 and 4; a child module of
//! `state.rs`, which holds the numbered invariants): allocating RAM pages, evicting
//! clean pages in LRU order to make room, freeing pages, and keeping the RAM the pool
//! slots hold within the budget.
// Calls `os`'s unsafe fns; each call says why their contract holds there.
#![allow(unsafe_code)]

use super::{BlockState, HandleId, Page, PageId, VmState, MAX_PART_WINDOWS, NIL, PART_WINDOW};
use crate::{Error, Result};

impl VmState {
    pub(super) fn lru_remove(&mut self, p: PageId) {
        if !self.pages[p as usize].in_lru {
            return;
        }
        let (prev, next) = {
            let pg = &self.pages[p as usize];
            (pg.lru_prev, pg.lru_next)
        };
        if prev == NIL {
            self.lru_head = next;
        } else {
            self.pages[prev as usize].lru_next = next;
        }
        if next == NIL {
            self.lru_tail = prev;
        } else {
            self.pages[next as usize].lru_prev = prev;
        }
        let pg = &mut self.pages[p as usize];
        pg.in_lru = false;
        pg.lru_prev = NIL;
        pg.lru_next = NIL;
    }

    /// Put `p` at the most-recently-used end.
    pub(super) fn lru_touch(&mut self, p: PageId) {
        self.lru_remove(p);
        let tail = self.lru_tail;
        {
            let pg = &mut self.pages[p as usize];
            pg.lru_prev = tail;
            pg.lru_next = NIL;
            pg.in_lru = true;
        }
        if tail == NIL {
            self.lru_head = p;
        } else {
            self.pages[tail as usize].lru_next = p;
        }
        self.lru_tail = p;
    }

    /// Get a free page of pool `pi`, reclaiming clean pages in LRU order when the budget
    /// is reached. Errors with `RamExhausted` when only unreclaimable pages are left.
    pub(super) fn alloc(&mut self, pi: usize) -> Result<PageId> {
        let bs = self.pools[pi].os.slot_size() as u64;
        loop {
            if self.used + bs <= self.budget {
                if let Some(p) = self.pools[pi].free.pop() {
                    let pg = &mut self.pages[p as usize];
                    if pg.punched {
                        pg.punched = false;
                        self.resident += bs;
                    }
                    pg.in_use = true;
                    self.used += bs;
                    self.trim_resident(pi);
                    return Ok(p);
                }
                let pool = &mut self.pools[pi];
                if pool.created < pool.os.cap() {
                    let slot = pool.created;
                    pool.created += 1;
                    let id = PageId::try_from(self.pages.len())
                        .map_err(|_| Error::OutOfRange("too many RAM pages".into()))?;
                    self.pages.push(Page {
                        pool: pi,
                        slot,
                        in_use: true,
                        users: Vec::new(),
                        key: None,
                        lru_prev: NIL,
                        lru_next: NIL,
                        in_lru: false,
                        zero: true,
                        punched: false,
                        at_view: None,
                        file: None,
                        part: None,
                        dlru_prev: NIL,
                        dlru_next: NIL,
                        in_dlru: false,
                    });
                    self.used += bs;
                    self.resident += bs;
                    self.trim_resident(pi);
                    return Ok(id);
                }
            }
            let victim = self.lru_head;
            if victim == NIL {
                return Err(self.ram_exhausted());
            }
            self.evict(victim);
        }
    }

    /// Bytes page `p` counts in `used`: its block size, or a partial file page's
    /// checked windows (invariant 15).
    pub(super) fn charge(&self, p: PageId) -> u64 {
        match &self.pages[p as usize].part {
            Some(_) => self.windows(p) * PART_WINDOW as u64,
            None => self.bs(p),
        }
    }

    /// Checked windows of page `p` if it is a partial file page, else 0.
    pub(super) fn windows(&self, p: PageId) -> u64 {
        self.pages[p as usize]
            .part
            .as_ref()
            .map_or(0, |b| b.iter().map(|w| u64::from(w.count_ones())).sum())
    }

    /// Reclaim clean pages in LRU order, never `keep`, until `need` more bytes fit in
    /// the budget.
    /// Make room for one more checked window under [`MAX_PART_WINDOWS`]: evict partial
    /// file pages other than `keep`, least recently used first. `false` if there is
    /// none to evict (the caller then checks whole blocks).
    pub(super) fn make_part_room(&mut self, keep: PageId) -> bool {
        while self.part_windows >= MAX_PART_WINDOWS {
            let mut p = self.lru_head;
            while p != NIL && (p == keep || self.pages[p as usize].part.is_none()) {
                p = self.pages[p as usize].lru_next;
            }
            if p == NIL {
                return false;
            }
            self.evict(p);
        }
        true
    }

    pub(super) fn make_room(&mut self, need: u64, keep: PageId) -> Result<()> {
        let was = self.pages[keep as usize].in_lru;
        self.lru_remove(keep);
        let mut r = Ok(());
        while self.used + need > self.budget {
            let victim = self.lru_head;
            if victim == NIL {
                r = Err(self.ram_exhausted());
                break;
            }
            self.evict(victim);
        }
        if was {
            self.lru_touch(keep);
        }
        r
    }

    /// Keep the RAM held by slots within the budget when several block sizes are in use:
    /// punch free slots of other pools.
    pub(super) fn trim_resident(&mut self, keep_pool: usize) {
        let mut i = 0;
        while self.resident > self.budget && i < self.pools.len() {
            if i != keep_pool {
                for k in 0..self.pools[i].free.len() {
                    if self.resident <= self.budget {
                        break;
                    }
                    let p = self.pools[i].free[k] as usize;
                    if !self.pages[p].punched {
                        // SAFETY: a page of a free list: no user, no view, no slice
                        // of its slot alive (invariant 2).
                        unsafe { self.pools[i].os.punch(self.pages[p].slot) };
                        self.pages[p].punched = true;
                        self.pages[p].zero = true;
                        self.resident -= self.pools[i].os.slot_size() as u64;
                    }
                }
            }
            i += 1;
        }
    }

    /// Return an in-use page without users to its pool.
    pub(super) fn free_page(&mut self, p: PageId) {
        debug_assert!(self.pages[p as usize].users.is_empty());
        self.home(p);
        self.lru_remove(p);
        if let Some(k) = self.pages[p as usize].key.take() {
            if self.cache.get(&k) == Some(&p) {
                self.cache.remove(&k);
            }
        }
        let bs = self.charge(p);
        let windows = self.windows(p);
        let pg = &mut self.pages[p as usize];
        if pg.in_use {
            pg.in_use = false;
            pg.part = None;
            self.part_windows -= windows;
            self.used -= bs;
            if pg.file.take().is_some() {
                self.file_free.push(p);
            } else {
                let pool = pg.pool;
                self.pools[pool].free.push(p);
            }
        }
    }

    /// Drop a clean page from every handle that uses it (their blocks become `Empty`,
    /// their views `PROT_NONE`) and free it.
    pub(super) fn evict(&mut self, p: PageId) {
        let users = std::mem::take(&mut self.pages[p as usize].users);
        for (h, blk) in users {
            self.set_state(h, blk, BlockState::Empty);
            self.reset_views(h, blk);
        }
        self.counters.evictions += 1;
        self.free_page(p);
    }

    /// Let go of `page`, the `Loading` (or `LoadingInvalidated`) page of `(h, blk)`, after
    /// a load that failed or was invalidated: the block becomes `Empty`, the page free.
    pub(super) fn drop_loading(&mut self, h: HandleId, blk: u64, page: PageId) {
        self.set_state(h, blk, BlockState::Empty);
        self.pages[page as usize].users.clear();
        self.free_page(page);
    }

    /// Remove `(h, blk)` from the users of `p`; free `p` if nobody uses or caches it.
    pub(super) fn detach(&mut self, p: PageId, h: HandleId, blk: u64) {
        let pg = &mut self.pages[p as usize];
        pg.users.retain(|&u| u != (h, blk));
        if pg.users.is_empty() && pg.key.is_none() {
            self.free_page(p);
        }
    }

    /// Make room for one more block of `bs` bytes for readahead, evicting clean pages
    /// in LRU order, but never one that holds block `pos` of handle `h` (where its scan
    /// is) or a later one (blocks the scan has still to reach): readahead must not evict
    /// what the scan needs next in favour of what it needs later. `false`: no room.
    pub(in crate::virtmem) fn room_ahead(&mut self, bs: u64, h: HandleId, pos: u64) -> bool {
        while self.used + bs > self.budget {
            let victim = self.lru_head;
            if victim == NIL
                || self.pages[victim as usize]
                    .users
                    .iter()
                    .any(|&(uh, b)| uh == h && b >= pos)
            {
                return false;
            }
            self.evict(victim);
        }
        true
    }
}
