//! The page-state machine of the virtual memory: every transition of a block's state
//! happens in this file or its child modules `subpage.rs` (small writes) and
//! `spill.rs` (spilling dirty blocks), under the VM lock.
//!
//! ## States of a (file handle, block)
//!
//! ```text
//!                 invalidate                      load ok (re-check)
//!   Empty ──fault──▶ Loading ─────────▶ LoadingInvalidated ──▶ (page freed) ──▶ Empty, retry
//!     │ ╲  (or readahead) │ load ok / file block staged and checked (inv 10)
//!     │  ╲ fault, map_source = Some, checked before, random access:
//!     │   ╲ a file page mapped at once (inv 10)
//!     │    ╲──────────▶│
//!     │  evict /       ▼                first write
//!     ├─invalidate── Loaded ─────────────────────────────▶ Dirty ◀─┐ store error
//!     │                ▲   (claim the page, or copy it       │     │
//!     │                │    when other handles share it;     │     │
//!     │                │    a file page: always copy it      │     │
//!     │                │    from the file into a RAM page)   │ writeout
//!     │                └────────── store ok ─────────── Storing ───┘
//!     └──────────── invalidate / discard (Dirty, Storing: changes dropped) ───┘
//!
//!   Spilling (spill.rs, invariant 17): no clean page left to reclaim:
//!   Dirty (head of the dirty LRU) ──views reset──▶ Storing ──store ok──▶ Spilled (no
//!                                                     │        page: the file holds it)
//!                                                     └──store error──▶ Dirty
//!   Spilled ──access──▶ Empty ──▶ Loading ──▶ Loaded (the spilled content)
//!   Spilled ──invalidate / discard / writeout / close──▶ Empty
//!
//!   Small writes (subpage.rs, invariants 11 and 12):
//!   Loaded (file page, the handle's one view) ──view write fault──▶ PartDirty
//!   PartDirty ──another view, whole-block write, write_from, writeout, unmap──▶
//!       Empty + patch (the written pages copied out of the view)
//!   Empty / Loaded ──write_from of part of the block──▶ Empty + patch
//!   Empty + patch ──fault──▶ Loading ──▶ Loaded (private page, patch applied)
//!       ──first write──▶ Dirty (the patch is dropped: the page holds it)
//!   patch ──writeout: BigFile::store_pages──▶ (patch dropped)
//! ```
//!
//! ## Invariants (checked by [`VmState::assert_invariants`] in debug builds)
//!
//! 1. `used` = the sum of the block sizes of in-use pages, and `used <= budget`.
//! 2. Every page is either free (in exactly one free list of its pool) or in use; an
//!    in-use page is referenced by the block entries listed in its `users`, or has no
//!    users and is a clean page kept in the content cache.
//! 3. Slot exclusivity: a `Loading`/`LoadingInvalidated` page has exactly one user, its
//!    loader writes the slot without the lock, and no view maps it (a readahead load
//!    whose handle is closed meanwhile keeps its page with no user, out of the LRU,
//!    and frees it when the load returns). A `Dirty`/`Storing`
//!    page has exactly one user. A page with several users is clean and mapped only
//!    read-only. A `Storing` page is mapped only read-only (views write-protected
//!    before the store starts), so the store reads bytes nobody writes.
//! 4. The LRU list holds exactly the clean in-use pages (all users `Loaded`, or none):
//!    never a loading, dirty or storing one. Eviction takes its head.
//! 5. A view block records the page mapped there: `mapped[blk] = (page, writable)` means
//!    the handle's entry for `blk` refers to `page`, and `writable` implies `Dirty`.
//!    Every other block of a view is `PROT_NONE` reserved space.
//! 6. `dirty` = the sum of the block sizes of `Dirty` and `Storing` entries. `Spilled`
//!    entries hold no page and count in neither `used` nor `dirty` (invariant 17).
//! 7. `cache[(blk, key)] == p` iff `pages[p].key == Some((blk, key))`; such a page is
//!    clean and holds block `blk` of a file whose `content_key(blk)` is `key`.
//! 8. The VM lock is never held across a `BigFile` call (`load_blk`, `store_blk`,
//!    `content_key`, `map_source`, `source_checked`) nor across the staging and CRC
//!    check of a file block: the lock is dropped, the work runs, the lock is retaken
//!    and the state re-checked (that is why `LoadingInvalidated` exists).
//!
//! 9. A page's slot is either *at home* in the pool mapping or *moved* to exactly one
//!    view block: `at_view == Some((mid, blk))` means the slot's page-table entries were
//!    moved there by `mremap` and `maps[mid].mapped[blk]` refers to the page. The pool
//!    address of a moved slot still maps the slot, without entries (`MREMAP_DONTUNMAP`,
//!    possibly read-only): it may be read (a store, a copy source — the entries this
//!    creates are dropped again afterwards) but never written. So a page is at home
//!    whenever it is free, `Loading` or a copy target. A moved block is mapped once in
//!    the process, so it counts once in RSS; the first view of a page gets it moved,
//!    further views of it map the memfd again.
//!
//! 10. A *file page* (`Page::file` is `Some`) has no pool slot: its block is clean bytes
//!     of a file (`BigFile::map_source`: a raw block of the log), mapped
//!     `MAP_PRIVATE | PROT_READ` into each view that shows it, the trimmed tail as
//!     anonymous read-only zeros. Its users are all `Loaded`, except while it is
//!     fetched (`fetch_file`): then it has one `Loading`/`LoadingInvalidated` user and
//!     the fetcher maps the bytes at a staging address no view shows, checks their CRC
//!     there without the lock, and moves that mapping into one view block; a mismatch
//!     frees the page, so unchecked bytes are never shown. Bytes that need no check
//!     (`FileSlice::crc` is None) are mapped straight into the view, and a read fault on
//!     such a block maps its neighbours that need none either (`filemap.rs`). A `Loaded` file page is in
//!     the LRU, counts its block size in `used` like a RAM page (from the fetch on), is
//!     never in the content cache, never moved (`at_view` is None) and never mapped
//!     writable. Eviction maps the views `PROT_NONE` again, as for a RAM page. A
//!     write copies the block from the file into a new RAM page, which becomes the
//!     handle's `Dirty` page (`make_dirty_from_file`); the file page loses that user
//!     and is freed when it has none. Free file-page entries wait in `file_free`, not
//!     in a pool. A delta chain's file page (`FileSlice::pages`, checked when
//!     `map_source` built it) is never fetched: `map_view` maps it with the chain's 4 KiB
//!     pages written over the private mapping while the block is still `PROT_NONE`.
//!
//! 11. *Patches* (small writes, `subpage.rs`): a handle may hold dirty 4 KiB pages of a
//!     block beside its state — at most `bigfile::max_delta_pages(block size)` per block,
//!     counted in `used` and `dirty` (so 1 and 6 read "in-use pages plus patch pages").
//!     A patched block is never `Dirty`/`Storing` (the transition to `Dirty` folds the
//!     patch into the page and drops it); when it is `Loaded`, its page is private (one
//!     user, no cache key, not a file page) and holds the block with the patch applied.
//!
//! 12. A `PartDirty` block (a view wrote a few pages of a clean file page) has no page:
//!     exactly one view of its handle maps it (the handle's only view when it started),
//!     with the file's private mapping (`mapped[blk] == (NIL, true)`) and just the
//!     written 4 KiB pages writable (the kernel copied them on write); the written pages, at most
//!     `bigfile::max_delta_pages(block size)`, count in `used` and `dirty`, the block's
//!     other bytes in nothing. It is never patched. Any other access to it (another
//!     view, a whole-block write, `write_from`, `writeout`, the view going away) first
//!     copies the written pages into a patch and resets the view (`demote_part`).
//!
//! 13. A RAM page's slot is *anonymous* (the default: private anonymous memory, one
//!     huge page per 2 MiB block where the kernel allows, see `os::Pool`) or *memfd*.
//!     An anonymous page has at most one user and is mapped in at most one view block,
//!     the one its slot is moved to (`at_view`); while moved, its home has no pages, so
//!     it is read or written only at home (a store of a moved anonymous page brings it
//!     home first). Before a page gets a second user (a content-cache hit) or a second
//!     view, it is *promoted* (`VmState::promote`): its bytes are copied into its memfd
//!     range, which serves it as in invariant 9 from then on.
//!
//! 14. `armed` ⊆ the blocks a view maps, each with a file page: the block's first OS
//!     page is `PROT_NONE` (readahead's marker, `readahead.rs`). The first touch faults;
//!     `ensure` makes the page readable and passes the position to readahead.
//!
//! 15. A *partial* file page (`Page::part` is `Some`: a random read fault on a block
//!     whose `FileSlice` has page CRCs, `fetch_file`) has checked only some
//!     [`PART_WINDOW`]-byte windows of its file bytes, those whose bit is set. It has
//!     exactly one user, is never armed, and is shown in at most one view block
//!     (`mapped[blk] == (page, false)` of the view that faulted), which maps the whole
//!     block from the file with every unchecked window `PROT_NONE`: a byte is readable
//!     only once its window's pages matched their CRCs. It counts its checked windows
//!     in `used`, not its block size (invariant 1 reads "the sum of the pages' charges"),
//!     and the checked windows of all partial pages are at most `MAX_PART_WINDOWS`
//!     (each may split the view's mapping: the kernel bounds a process's areas).
//!     A later random read fault in that view checks one more window and makes it
//!     readable (`add_window`); any other access (another view, a write, a checked
//!     load, a scan) first *completes* it (`complete_file`: the rest checked, the
//!     whole block charged and readable), then goes on as for a whole file page.
//!     Both check the file's bytes read into a buffer of their own (`os::check_file_pages`,
//!     the same committed bytes the view maps), without the lock, and re-check the
//!     state after (invariant 8). The diagram's `Loaded` covers partial pages.
//!
//! 16. `untidy` ⊆ the blocks a view does not map, at most [`UNTIDY_MAX`] per view: an
//!     anonymous slot moved home from there left its own entry-less `PROT_NONE` mapping
//!     (`Pool::move_home`), not inherited by `fork` (the pool's flags), which faults
//!     like the reserved space around it but is a kernel mapping of its own. It is not
//!     reset when the slot leaves — that `mremap` would be a third of a read fault cycle's
//!     system calls — but replaced by the next page mapped there (mapping removes the
//!     block from `untidy`) or reset with one call per run of adjacent blocks
//!     ([`VmState::tidy`]): when the view has more than `UNTIDY_MAX` of them, which
//!     bounds the process's kernel mappings (`vm.max_map_count`), and before a slot
//!     leaves a block beside one (`VmState::tidy_beside`: the kernel would merge the
//!     two mappings and split them again).
//!
//! 17. *Spilling* (`spill.rs`): the *dirty LRU* lists exactly the pages of `Dirty`
//!     entries (each has one user), ordered by when the block became dirty or was last
//!     faulted on; [`VmState::set_state`] keeps it. An allocation that finds the budget
//!     full and the clean LRU empty spills its head: the block's views are reset (a slot
//!     living in a view comes home), it is `Storing` while `BigFile::store_blk` runs
//!     without the lock, then `Spilled` and its page freed — or `Dirty` again if the
//!     store failed, and the error is the allocation's. With no dirty page left, a
//!     patch or partly dirty block is stored instead (`store_patch`). A `Spilled` entry
//!     has no page, no patch, is mapped in no view, and `spilled` is the sum of their
//!     block sizes; it is listed by `dirty_blocks` (a change of the handle, in the file
//!     now) and becomes `Empty` on any access (then loads from the file), invalidate,
//!     discard, writeout or close. So `used <= budget` holds at every step, and an
//!     allocation fails with `RamExhausted` only when nothing is clean, dirty or in
//!     flight to give room. A `Storing` page of a closed or invalidated handle has no
//!     user; its spiller frees it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Condvar, MutexGuard};

use super::os::{self, Pool};
use crate::bigfile::{BigFile, FileSlice};
use crate::{Error, Result};
use filemap::map_neighbours;
pub(super) use spill::spill_ahead;
pub(super) use subpage::{store_patch, write_patch, Patches};

#[path = "filemap.rs"]
mod filemap;
#[path = "spill.rs"]
mod spill;
#[path = "subpage.rs"]
mod subpage;

pub(super) type PageId = u32;
pub(super) type HandleId = u64;
pub(super) type MapId = u64;
const NIL: PageId = PageId::MAX;
/// `(blk, BigFile::content_key(blk))`.
type CacheKey = (u64, (u64, u64));

/// The state of one block of one file handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockState {
    /// No RAM page: the next access loads the block (not stored in the block table).
    Empty,
    /// A thread runs `load_blk` into `page` without the VM lock; others wait on the
    /// condvar. The page is in no view and not in the LRU.
    Loading { page: PageId },
    /// As `Loading`, but the block was invalidated meanwhile: the loader throws the data
    /// away, frees the page, and whoever needs the block loads it again.
    LoadingInvalidated { page: PageId },
    /// Clean file content, mapped read-only where accessed; may be shared with other
    /// handles (same content key); reclaimable in LRU order.
    Loaded { page: PageId },
    /// Written since load or writeout; private to this handle; never reclaimed.
    Dirty { page: PageId },
    /// Dirty and being stored by `writeout` without the lock; views are read-only, a
    /// writer waits until the store ends.
    Storing { page: PageId },
    /// Some 4 KiB pages written through the one view, which maps the rest from the file
    /// (invariant 12, `subpage.rs`); never reclaimed.
    PartDirty,
    /// Written, then stored through the file to free its page when only dirty blocks
    /// were left under the budget (a *spill*, `spill.rs`, invariant 17): no page; the
    /// file holds the block's content, and the next access loads it from there.
    Spilled,
}

impl BlockState {
    /// The page of a state that has one (for the invariant checks of debug builds).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn page(self) -> Option<PageId> {
        match self {
            BlockState::Empty | BlockState::PartDirty | BlockState::Spilled => None,
            BlockState::Loading { page }
            | BlockState::LoadingInvalidated { page }
            | BlockState::Loaded { page }
            | BlockState::Dirty { page }
            | BlockState::Storing { page } => Some(page),
        }
    }
}

/// A RAM page: one slot of a pool.
#[derive(Debug)]
struct Page {
    pool: usize,
    slot: usize,
    in_use: bool,
    /// Block entries `(handle, blk)` that refer to this page.
    users: Vec<(HandleId, u64)>,
    /// Cache key `(blk, content key)` under which the page is in the cache (invariant
    /// 7). The block index is part of it: the db layer's content key is (array id,
    /// tid of the version), the same for every block written by one transaction.
    key: Option<CacheKey>,
    lru_prev: PageId,
    lru_next: PageId,
    in_lru: bool,
    /// The slot reads as zeros (never used, or punched).
    zero: bool,
    /// The slot's RAM was given back to the kernel (free pages only).
    punched: bool,
    /// The view block the slot's pool mapping was moved to, if any (invariant 9).
    at_view: Option<(MapId, u64)>,
    /// A *file page* (invariant 10): no pool slot (`slot == usize::MAX`); the block is
    /// these bytes of a file, mapped read-only and private into every view that shows
    /// it. Counts its block size in `used` like a RAM page, unless partial.
    file: Option<FileSlice>,
    /// A partial file page (invariant 15): one bit per [`PART_WINDOW`] of its file
    /// bytes, set when that window was checked and made readable.
    part: Option<Box<[u64]>>,
    /// Links of the dirty LRU (invariant 17): the pages of `Dirty` entries, least
    /// recently made dirty or faulted on first.
    dlru_prev: PageId,
    dlru_next: PageId,
    in_dlru: bool,
}

/// Bytes a random read fault on a block with page CRCs checks and shows (invariant 15).
/// Measured on W3 (random 4 KiB reads, docs/benchmarks.md): 16 KiB gave the lowest
/// median and p99 of 4, 16, 64, 256 and 512 KiB; below that, a fault's fixed cost
/// dominates and more reads fault, above it the check does. More than one 4 KiB page,
/// so that a scan through a block (faults on a window's first page) can be told from
/// a random read straddling two windows (`ensure`).
pub(super) const PART_WINDOW: usize = 16 << 10;
/// At most this many checked windows over all partial file pages (invariant 15). Each
/// window may split its view's mapping in two more areas, and the kernel allows a
/// process about 65,000 (`vm.max_map_count`): past the bound, the least recently used
/// partial page is evicted first.
const MAX_PART_WINDOWS: u64 = 8192;

const _: () = assert!(
    PART_WINDOW > crate::bigfile::PAGE && PART_WINDOW % crate::bigfile::PAGE == 0
);

/// Windows of a file page's bytes (`len` file bytes).
fn n_windows(len: usize) -> usize {
    len.div_ceil(PART_WINDOW)
}

const NO_SLOT: usize = usize::MAX;

/// Untidy blocks a view may hold before they are reset (invariant 16): enough that a
/// scan resets a run of them in one call, few enough that a process with many views
/// stays far below `vm.max_map_count` (each untidy block is up to two kernel mappings).
pub(super) const UNTIDY_MAX: usize = 32;

#[derive(Debug)]
struct PoolState {
    os: Arc<Pool>,
    free: Vec<PageId>,
    created: usize,
}

#[derive(Debug)]
pub(super) struct HandleState {
    pub(super) file: Arc<dyn BigFile>,
    pub(super) pool: usize,
    pub(super) blocks: BTreeMap<u64, BlockState>,
    pub(super) maps: Vec<MapId>,
    /// Loads and stores of this handle running without the lock.
    pub(super) inflight: u32,
    /// Bumped by every `invalidate` of one of its blocks: what `ensure` learned from the
    /// file without the lock (`map_source`, `content_key`) is stale when it moved.
    pub(super) invalidations: u64,
    /// Dirty 4 KiB pages of blocks written by small writes (invariant 11).
    pub(super) patches: Patches,
}

#[derive(Debug)]
pub(super) struct MapState {
    pub(super) handle: HandleId,
    pub(super) base: usize,
    pub(super) first_blk: u64,
    /// Blocks the view spans (checked by the invariants of debug builds).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(super) n_blks: u64,
    /// Blocks with a page mapped: blk → (page, writable) (invariant 5).
    mapped: HashMap<u64, (PageId, bool)>,
    /// Mapped file blocks whose first page is readahead's marker (invariant 14).
    armed: std::collections::HashSet<u64>,
    /// Blocks left `PROT_NONE` by a slot moved home, not yet reset (invariant 16).
    untidy: std::collections::BTreeSet<u64>,
    /// The block of this view's last fault (for telling a scan from random reads).
    last_fault: Option<u64>,
    /// The byte of its block the last fault hit (None for a checked load): tells a scan
    /// through a partial file page from random reads (invariant 15).
    last_at: Option<usize>,
    /// Loads for this mapping running without the lock.
    pub(super) inflight: u32,
}

/// Counters and sizes, see `VmStats`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) loads: u64,
    pub(super) stores: u64,
    pub(super) evictions: u64,
    /// Blocks mapped from a file into a view (zero-copy reads).
    pub(super) file_maps: u64,
    /// Dirty blocks (and patches) stored through their file to make room (spills).
    pub(super) spill_writes: u64,
}

/// Everything the VM lock protects.
#[derive(Debug)]
pub(super) struct VmState {
    pub(super) budget: u64,
    pub(super) used: u64,
    pub(super) dirty: u64,
    /// Bytes of slots holding RAM (in use, or free and not punched).
    resident: u64,
    pages: Vec<Page>,
    pools: Vec<PoolState>,
    /// Free page entries of file pages (invariant 10).
    file_free: Vec<PageId>,
    lru_head: PageId,
    lru_tail: PageId,
    cache: HashMap<CacheKey, PageId>,
    pub(super) handles: HashMap<HandleId, HandleState>,
    pub(super) maps: HashMap<MapId, MapState>,
    pub(super) counters: Counters,
    /// Checked windows of all partial file pages (invariant 15).
    part_windows: u64,
    /// The dirty LRU (invariant 17).
    dlru_head: PageId,
    dlru_tail: PageId,
    /// Bytes of `Spilled` entries (invariant 17).
    pub(super) spilled: u64,
    /// The readahead thread's work (`readahead.rs`).
    pub(super) ra: super::readahead::RaState,
    /// The write-behind thread's state (`writeback.rs`).
    pub(super) wb: super::writeback::WbState,
}

type Guard<'a> = MutexGuard<'a, VmState>;

impl VmState {
    pub(super) fn new(budget: u64) -> VmState {
        VmState {
            budget,
            used: 0,
            dirty: 0,
            resident: 0,
            pages: Vec::new(),
            pools: Vec::new(),
            file_free: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            cache: HashMap::new(),
            handles: HashMap::new(),
            maps: HashMap::new(),
            counters: Counters::default(),
            part_windows: 0,
            dlru_head: NIL,
            dlru_tail: NIL,
            spilled: 0,
            ra: Default::default(),
            wb: Default::default(),
        }
    }

    /// The pool for a block size, created on first use with room for as many slots as
    /// fit in the budget.
    pub(super) fn pool_for(&mut self, bs: usize) -> Result<usize> {
        if let Some(i) = self.pools.iter().position(|p| p.os.slot_size() == bs) {
            return Ok(i);
        }
        let cap = usize::try_from(self.budget / bs as u64).unwrap_or(usize::MAX);
        if cap == 0 {
            return Err(Error::InvalidArgument(format!(
                "ram_budget of {} bytes is smaller than one block of {bs} bytes",
                self.budget
            )));
        }
        self.pools.push(PoolState {
            os: Arc::new(Pool::new(bs, cap)?),
            free: Vec::new(),
            created: 0,
        });
        Ok(self.pools.len() - 1)
    }

    pub(super) fn ram_exhausted(&self) -> Error {
        Error::RamExhausted {
            budget: self.budget,
            dirty: self.dirty,
        }
    }

    /// `r`, an allocation's result, unless it failed for want of a page and room could
    /// be made (a dirty block spilled, or a page in flight waited for, `spill.rs`): then
    /// `None`, and the caller looks at the block's state again.
    fn alloc_or_wait<T>(g: &mut Guard<'_>, cv: &Condvar, r: Result<T>) -> Result<Option<T>> {
        spill::or_make_way(g, cv, r)
    }

    pub(super) fn state(&self, h: HandleId, blk: u64) -> BlockState {
        self.handles
            .get(&h)
            .and_then(|hs| hs.blocks.get(&blk).copied())
            .unwrap_or(BlockState::Empty)
    }

    /// The one place a block entry changes: it also keeps the dirty LRU and `spilled`
    /// (invariant 17).
    fn set_state(&mut self, h: HandleId, blk: u64, s: BlockState) {
        let hs = self
            .handles
            .get_mut(&h)
            .expect("handle of a live block entry");
        let bs = self.pools[hs.pool].os.slot_size() as u64;
        let old = if s == BlockState::Empty {
            hs.blocks.remove(&blk)
        } else {
            hs.blocks.insert(blk, s)
        };
        if old == Some(s) {
            return;
        }
        match old {
            Some(BlockState::Dirty { page }) => self.dlru_remove(page),
            Some(BlockState::Spilled) => self.spilled -= bs,
            _ => {}
        }
        match s {
            BlockState::Dirty { page } => self.dlru_touch(page),
            BlockState::Spilled => self.spilled += bs,
            _ => {}
        }
    }

    fn bs(&self, p: PageId) -> u64 {
        self.pools[self.pages[p as usize].pool].os.slot_size() as u64
    }

    // ---- LRU (invariant 4) -------------------------------------------------------

    fn lru_remove(&mut self, p: PageId) {
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
    fn lru_touch(&mut self, p: PageId) {
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

    // ---- pages --------------------------------------------------------------------

    /// Get a free page of pool `pi`, reclaiming clean pages in LRU order when the budget
    /// is reached. Errors with `RamExhausted` when only unreclaimable pages are left.
    fn alloc(&mut self, pi: usize) -> Result<PageId> {
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

    /// Get a file page for a block of pool `pi`'s size showing `src`, reclaiming clean
    /// pages in LRU order when the budget is reached (invariant 10).
    fn alloc_file(&mut self, pi: usize, src: FileSlice) -> Result<PageId> {
        self.alloc_file_part(pi, src, None)
    }

    /// [`VmState::alloc_file`], partial (invariant 15) when `part` is given: then it
    /// counts the windows set in `part`, not the block size.
    fn alloc_file_part(
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

    /// Bytes page `p` counts in `used`: its block size, or a partial file page's
    /// checked windows (invariant 15).
    fn charge(&self, p: PageId) -> u64 {
        match &self.pages[p as usize].part {
            Some(_) => self.windows(p) * PART_WINDOW as u64,
            None => self.bs(p),
        }
    }

    /// Checked windows of page `p` if it is a partial file page, else 0.
    fn windows(&self, p: PageId) -> u64 {
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
    fn make_part_room(&mut self, keep: PageId) -> bool {
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

    fn make_room(&mut self, need: u64, keep: PageId) -> Result<()> {
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
    fn trim_resident(&mut self, keep_pool: usize) {
        let mut i = 0;
        while self.resident > self.budget && i < self.pools.len() {
            if i != keep_pool {
                for k in 0..self.pools[i].free.len() {
                    if self.resident <= self.budget {
                        break;
                    }
                    let p = self.pools[i].free[k] as usize;
                    if !self.pages[p].punched {
                        self.pools[i].os.punch(self.pages[p].slot);
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
    fn free_page(&mut self, p: PageId) {
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
    fn evict(&mut self, p: PageId) {
        let users = std::mem::take(&mut self.pages[p as usize].users);
        for (h, blk) in users {
            self.set_state(h, blk, BlockState::Empty);
            self.reset_views(h, blk);
        }
        self.counters.evictions += 1;
        self.free_page(p);
    }

    /// Remove `(h, blk)` from the users of `p`; free `p` if nobody uses or caches it.
    fn detach(&mut self, p: PageId, h: HandleId, blk: u64) {
        let pg = &mut self.pages[p as usize];
        pg.users.retain(|&u| u != (h, blk));
        if pg.users.is_empty() && pg.key.is_none() {
            self.free_page(p);
        }
    }

    // ---- views (invariant 5) ------------------------------------------------------

    fn view_addr(&self, m: &MapState, blk: u64) -> usize {
        let bs = self.pools[self.handles[&m.handle].pool].os.slot_size();
        m.base + (blk - m.first_blk) as usize * bs
    }

    /// Make every view of `h` that maps `blk` `PROT_NONE` there again.
    fn reset_views(&mut self, h: HandleId, blk: u64) {
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
                    if let Err(e) = os::reset(addr, bs) {
                        eprintln!("wdb: fatal: cannot reset a view block to PROT_NONE: {e}");
                        std::process::abort();
                    }
                    continue;
                }
                if self.pages[p as usize].at_view == Some((mid, blk)) {
                    // The slot itself lives here: move it back to the pool (invariant 9).
                    self.tidy_beside(mid, blk);
                    let pg = &mut self.pages[p as usize];
                    pg.at_view = None;
                    if self.pools[pg.pool].os.move_home(pg.slot, addr, w) {
                        self.mark_untidy(mid, blk);
                    }
                    continue;
                }
                // A failure here would leave a stale page visible; the kernel fails a
                // MAP_FIXED over our own reservation only when out of memory for VMAs.
                // Going on would show stale data, so stop the process instead.
                if let Err(e) = os::reset(addr, bs) {
                    eprintln!("wdb: fatal: cannot reset a view block to PROT_NONE: {e}");
                    std::process::abort();
                }
            }
        }
    }

    /// Make page `p`'s slot a memfd slot, so that it can get a second user or a second
    /// view (invariant 13). If its slot lives in a view, it stays there (the memfd copy
    /// is moved in its place) unless the kernel cannot move shared mappings, in which
    /// case the view maps the memfd range and the slot is at home.
    fn promote(&mut self, p: PageId) {
        let pg = &self.pages[p as usize];
        let os = self.pools[pg.pool].os.clone();
        if pg.slot == NO_SLOT || !os.is_anon(pg.slot) {
            return;
        }
        let view = pg.at_view.map(|(mid, blk)| {
            let m = &self.maps[&mid];
            (self.view_addr(m, blk), m.mapped[&blk].1)
        });
        if !os.promote(pg.slot, view) {
            self.pages[p as usize].at_view = None;
        }
    }

    /// Bring page `p`'s slot back to its pool address if it was moved to a view; that
    /// view block becomes `PROT_NONE` and faults again on its next access (invariant 9).
    fn home(&mut self, p: PageId) {
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
        if self.pools[pg.pool].os.move_home(pg.slot, addr, writable) {
            self.mark_untidy(mid, blk);
        }
    }

    /// Before a slot leaves view block `blk` of `mid`: reset the view's untidy blocks if
    /// one of them is beside `blk` (invariant 16). An untidy neighbour has the flags of
    /// a pool mapping, so the kernel would merge the block being made `PROT_NONE` into
    /// it and split them again to move the slot out: two mapping changes more than the
    /// reset saves. (A scan evicts neighbours one after the other: it resets each block
    /// when the next one leaves, as many calls as without untidy blocks.)
    fn tidy_beside(&mut self, mid: MapId, blk: u64) {
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
    fn mark_untidy(&mut self, mid: MapId, blk: u64) {
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
    pub(super) fn tidy(&mut self, mid: MapId) {
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
            if let Err(e) = os::reset(addr, (last - first + 1) as usize * bs) {
                eprintln!("wdb: fatal: cannot reset view blocks to PROT_NONE: {e}");
                std::process::abort();
            }
        }
    }

    /// Write-protect `blk` in every view of `h` that maps it (before a store).
    fn protect_views(&mut self, h: HandleId, blk: u64) -> Result<()> {
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
                    os::protect(m.base + (blk - m.first_blk) as usize * bs, bs, false)?;
                    e.1 = false;
                }
            }
        }
        Ok(())
    }

    /// Map page `p` at `blk` of view `mid`, read-only or writable.
    fn map_view(&mut self, mid: MapId, blk: u64, p: PageId, writable: bool) -> Result<()> {
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
                    os::arm(addr, false)?;
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
            Some((q, _)) if q == p => os::protect(addr, self.pools[pool].os.slot_size(), writable)?,
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
                if self.pages[p as usize].at_view.is_none()
                    && os.move_to_view(slot, addr, writable).is_ok()
                {
                    self.pages[p as usize].at_view = Some((mid, blk));
                } else {
                    self.promote(p);
                    os.map_at(slot, addr, writable)?;
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
    pub(super) fn is_mapped(&self, mid: MapId, blk: u64) -> bool {
        self.maps
            .get(&mid)
            .is_some_and(|m| m.mapped.contains_key(&blk) && !m.armed.contains(&blk))
    }

    /// Does view `mid` show `blk` with readahead's marker armed (invariant 14)?
    pub(super) fn is_armed(&self, mid: MapId, blk: u64) -> bool {
        self.maps.get(&mid).is_some_and(|m| m.armed.contains(&blk))
    }

    // ---- transitions ---------------------------------------------------------------

    /// `Loaded` → `Dirty` for `(h, blk)`: claim `p` if no other handle uses it, else copy
    /// it into a new private page. Returns the dirty page.
    fn make_dirty(&mut self, h: HandleId, blk: u64, p: PageId) -> Result<PageId> {
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
        os.copy(self.pages[p as usize].slot, self.pages[new as usize].slot);
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
    fn make_dirty_from_file(
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
        if let Err(e) = os::read_file_block(&src, os.slot_mut(slot)) {
            self.free_page(new);
            return Err(e);
        }
        if let Some(pages) = &src.pages {
            let dst = os.slot_mut(slot);
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

    /// Forget `(h, blk)`: a clean page is let go, a dirty one's changes are dropped, an
    /// in-flight load is told to throw its data away, an in-flight store's page is freed
    /// by the writer when it returns.
    pub(super) fn invalidate(&mut self, cv: &Condvar, h: HandleId, blk: u64) {
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
    pub(super) fn discard(&mut self, cv: &Condvar, h: HandleId) {
        let dirty = self.dirty_blocks(h);
        for blk in dirty {
            self.invalidate(cv, h, blk);
        }
    }

    /// Blocks of `h` that are dirty whole, patched (invariant 11) or spilled (invariant
    /// 17), ascending.
    pub(super) fn dirty_blocks(&self, h: HandleId) -> Vec<u64> {
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
    pub(super) fn close_handle(&mut self, h: HandleId) {
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

    /// Forget a mapping's state (its range is unmapped by the caller).
    pub(super) fn remove_map(&mut self, mid: MapId) {
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

    pub(super) fn add_map(
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

    // ---- debug checks -------------------------------------------------------------

    /// Check the numbered invariants at the top of this file (debug builds only; the
    /// cost is linear in pages and block entries).
    pub(super) fn assert_invariants(&self) {
        #[cfg(debug_assertions)]
        self.check_all();
    }

    #[cfg(debug_assertions)]
    fn check_all(&self) {
        // 1
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
        // 2
        let mut free_count = vec![0u32; self.pages.len()];
        for pool in &self.pools {
            for &p in &pool.free {
                free_count[p as usize] += 1;
            }
        }
        for &p in &self.file_free {
            free_count[p as usize] += 1;
        }
        let mut dirty = 0;
        for (p, pg) in self.pages.iter().enumerate() {
            let p = p as PageId;
            assert_eq!(
                free_count[p as usize],
                u32::from(!pg.in_use),
                "inv 2: free list"
            );
            // 9
            if pg.slot != NO_SLOT {
                let os = &self.pools[pg.pool].os;
                assert_eq!(os.is_away(pg.slot), pg.at_view.is_some(), "inv 9: moved");
                if os.is_anon(pg.slot) {
                    assert!(pg.users.len() <= 1, "inv 13: anonymous page shared");
                }
            }
            // 9
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
            if !pg.in_use {
                assert!(pg.users.is_empty() && !pg.in_lru && pg.key.is_none());
                assert!(pg.at_view.is_none(), "inv 9: free page at home");
                continue;
            }
            let states: Vec<BlockState> = pg.users.iter().map(|&(h, b)| self.state(h, b)).collect();
            for s in &states {
                assert_eq!(s.page(), Some(p), "inv 2: user entry refers to its page");
            }
            let clean = states
                .iter()
                .all(|s| matches!(s, BlockState::Loaded { .. }));
            // 10
            if pg.file.is_some() {
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
            // 15
            if let Some(bits) = &pg.part {
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
        for hs in self.handles.values() {
            for s in hs.blocks.values() {
                if let BlockState::Dirty { page } | BlockState::Storing { page } = *s {
                    dirty += self.bs(page);
                }
            }
        }
        // 6
        assert_eq!(dirty + self.patch_bytes(), self.dirty, "inv 6: dirty");
        // 11
        self.check_patches();
        // 17
        self.check_spill();
        // 5
        for (&mid, m) in &self.maps {
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
        // 4: list integrity
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

/// Make block `blk` of mapping `mid` accessible (writable if `write`): the one path
/// behind both the fault handler and the checked `Mapping::load`. Drops the lock for
/// `content_key`, `load_blk` and the zeroing of a reused slot (invariant 8).
///
/// `at`: the byte of the block a write fault hit (None for a checked load): a write to a
/// clean file page then dirties that 4 KiB page only (`PartDirty`, invariant 12).
pub(super) fn ensure(
    g: &mut Guard<'_>,
    cv: &Condvar,
    mid: MapId,
    blk: u64,
    write: bool,
    at: Option<usize>,
) -> Result<()> {
    // What the file said about the block without the lock: a file range to map
    // (zero-copy, invariant 10), and the content key.
    type Probe = (Option<FileSlice>, Option<(u64, u64)>);
    let mut probed: Option<(Probe, u64)> = None;
    // A scan: this view's previous fault was at most a readahead window before this
    // one (readahead's markers make a scan fault every half window).
    let (seq, scan_on) = match g.maps.get(&mid).map(|m| m.handle) {
        Some(h) => {
            let w = super::readahead::window(g.budget, g.block_size_of(h) as u64);
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
    if !write && (seq || g.is_armed(mid, blk)) {
        // A scan is at `blk` (or reached a block readahead prepared): have the blocks
        // after it prepared. (Not for writes: a writer that fills new space would have
        // zeros loaded ahead of it for nothing.)
        g.ra.want(mid, blk);
    }
    // Whether this scan may still help readahead instead of waiting for it (below).
    let mut may_help = seq && !write;
    loop {
        let Some(m) = g.maps.get(&mid) else {
            return Err(Error::Busy(
                "the mapping was unmapped during the access".into(),
            ));
        };
        let h = m.handle;
        let hs = &g.handles[&h];
        let file = hs.file.clone();
        let pi = hs.pool;
        match g.state(h, blk) {
            BlockState::Loading { .. } | BlockState::LoadingInvalidated { .. } if may_help => {
                // A scan reached a block another thread (readahead) is still loading:
                // rather than wait, load a later block of the window that nobody has
                // started, so the two threads share the decompression by need, not by
                // block number alone. Then look again.
                may_help = help_ahead(g, cv, mid, blk);
            }
            BlockState::Loading { .. }
            | BlockState::LoadingInvalidated { .. }
            | BlockState::Storing { .. } => {
                cv.wait(g);
            }
            BlockState::PartDirty => {
                let own = if write {
                    match at {
                        Some(off) => {
                            let r = g.extend_part(mid, h, blk, off);
                            match VmState::alloc_or_wait(g, cv, r)? {
                                Some(own) => own,
                                None => continue,
                            }
                        }
                        None => false,
                    }
                } else {
                    g.is_mapped(mid, blk)
                };
                if own {
                    g.assert_invariants();
                    return Ok(());
                }
                // Another view, a whole-block write or over the bound: a patch now.
                g.demote_part(h, blk);
            }
            BlockState::Loaded { page } if g.pages[page as usize].part.is_some() => {
                // A partial file page (invariant 15): a random read in the view that
                // shows it checks one more window; anything else completes it first.
                let shown_here = g.maps[&mid].mapped.get(&blk) == Some(&(page, false));
                if let (false, false, true, Some(off)) = (write, scan, shown_here, at) {
                    let r = add_window(g, cv, mid, (h, blk), page, off, scan_on);
                    if VmState::alloc_or_wait(g, cv, r)? == Some(true) {
                        g.assert_invariants();
                        return Ok(());
                    }
                } else {
                    let r = complete_file(g, cv, h, blk, page);
                    VmState::alloc_or_wait(g, cv, r)?;
                }
            }
            BlockState::Loaded { page } => {
                if let (true, Some(off)) = (write, at) {
                    if g.pages[page as usize].file.is_some() {
                        // Map the file first (a write may be the block's first access).
                        g.map_view(mid, blk, page, false)?;
                        if g.start_part(mid, h, blk, page, off)? {
                            g.assert_invariants();
                            return Ok(());
                        }
                    }
                }
                if write {
                    let r = g.make_dirty(h, blk, page);
                    let Some(p) = VmState::alloc_or_wait(g, cv, r)? else {
                        continue;
                    };
                    g.map_view(mid, blk, p, true)?;
                } else {
                    g.lru_touch(page);
                    g.map_view(mid, blk, page, false)?;
                }
                g.assert_invariants();
                return Ok(());
            }
            BlockState::Dirty { page } => {
                g.dlru_touch(page);
                g.map_view(mid, blk, page, true)?;
                g.assert_invariants();
                return Ok(());
            }
            BlockState::Spilled => {
                // The file holds its content (invariant 17): load it like any block.
                g.set_state(h, blk, BlockState::Empty);
            }
            BlockState::Empty => {
                let inval = g.handles[&h].invalidations;
                let (src, key) = match &probed {
                    // Still valid: no block of the handle was invalidated meanwhile.
                    // Patched: a private page with the patch applied (invariant 11).
                    _ if g.has_patch(h, blk) => (None, None),
                    Some(((src, k), at)) if *at == inval => (src.clone(), *k),
                    _ => {
                        let r = MutexGuard::unlocked(g, || {
                            let src = file.map_source(blk)?;
                            Ok::<_, Error>((
                                src.is_none().then(|| file.content_key(blk)).flatten(),
                                src,
                            ))
                        });
                        match r {
                            Ok((k, src)) => probed = Some(((src, k), inval)),
                            Err(e) => {
                                return Err(Error::Load {
                                    file: file.name().to_string(),
                                    blk,
                                    cause: e.to_string(),
                                })
                            }
                        }
                        continue; // the state may have changed while unlocked
                    }
                };
                // Clean raw bytes in a file: map them, no RAM page, no copy (inv 10).
                if let Some(src) = src {
                    if src.crc.is_none() && src.pages.is_none() && !write {
                        // Needs no check (`filemap.rs`): map it straight from the file,
                        // and its neighbours that need none either.
                        let r = g.map_checked(mid, (h, blk), pi, src, (false, seq));
                        if VmState::alloc_or_wait(g, cv, r)?.is_none() {
                            continue;
                        }
                        map_neighbours(g, mid, blk, seq);
                        g.assert_invariants();
                        return Ok(());
                    }
                    if src.crc.is_none() {
                        // Checked before and written to, or a delta chain (checked by
                        // `map_source`; its pages go over the view's mapping in
                        // `map_view`): map it now, page tables on touch.
                        let r = g.alloc_file(pi, src);
                        let Some(page) = VmState::alloc_or_wait(g, cv, r)? else {
                            continue;
                        };
                        g.pages[page as usize].users.push((h, blk));
                        g.set_state(h, blk, BlockState::Loaded { page });
                        g.lru_touch(page);
                        continue; // map it (and copy it to RAM if this is a write)
                    }
                    // A random read of a block with page CRCs: check and show one
                    // window of it (invariant 15).
                    let window = at.filter(|_| !write && !scan && src.page_crcs.is_some());
                    let r = match window {
                        Some(off) => fetch_partial(g, cv, mid, h, blk, src, off),
                        None => fetch_file(g, cv, mid, h, blk, src, false),
                    };
                    if VmState::alloc_or_wait(g, cv, r)? == Some(false) {
                        probed = None; // invalidated meanwhile
                    }
                    continue;
                }
                // A clean page another handle loaded for the same content?
                if let Some(k) = key {
                    if let Some(&p) = g.cache.get(&(blk, k)) {
                        if !g.pages[p as usize].users.is_empty() {
                            // A second user: the page must be mappable twice (inv 13).
                            g.promote(p);
                        }
                        g.pages[p as usize].users.push((h, blk));
                        g.set_state(h, blk, BlockState::Loaded { page: p });
                        g.lru_touch(p);
                        continue;
                    }
                }
                let r = g.alloc(pi);
                let Some(page) = VmState::alloc_or_wait(g, cv, r)? else {
                    continue;
                };
                g.pages[page as usize].users.push((h, blk));
                g.set_state(h, blk, BlockState::Loading { page });
                g.handles.get_mut(&h).expect("live").inflight += 1;
                g.maps.get_mut(&mid).expect("live").inflight += 1;
                let zero = std::mem::replace(&mut g.pages[page as usize].zero, false);
                let slot = g.pages[page as usize].slot;
                let pool = g.pools[pi].os.clone();
                g.assert_invariants();
                // The slot is ours alone while Loading (invariant 3).
                let res = MutexGuard::unlocked(g, || load_slot(&pool, slot, zero, &*file, blk));
                g.counters.loads += 1;
                g.handles.get_mut(&h).expect("live").inflight -= 1;
                if let Some(m) = g.maps.get_mut(&mid) {
                    m.inflight -= 1;
                }
                match (g.state(h, blk), res) {
                    (BlockState::Loading { page: p }, Ok(())) if p == page => {
                        // Still ours alone (Loading, invariant 3): show the patch.
                        g.apply_patch(h, blk, page);
                        g.set_state(h, blk, BlockState::Loaded { page });
                        if let Some(k) = key {
                            if let std::collections::hash_map::Entry::Vacant(e) =
                                g.cache.entry((blk, k))
                            {
                                e.insert(page);
                                g.pages[page as usize].key = Some((blk, k));
                            }
                        }
                        g.lru_touch(page);
                        cv.notify_all();
                        // Loop: map it (and make it dirty if this is a write).
                    }
                    (BlockState::Loading { page: p }, Err(e)) if p == page => {
                        g.set_state(h, blk, BlockState::Empty);
                        g.pages[page as usize].users.clear();
                        g.free_page(page);
                        cv.notify_all();
                        g.assert_invariants();
                        return Err(Error::Load {
                            file: file.name().to_string(),
                            blk,
                            cause: e.to_string(),
                        });
                    }
                    (s, _) => {
                        // Invalidated while loading: throw the data away and load again.
                        debug_assert_eq!(s, BlockState::LoadingInvalidated { page });
                        g.set_state(h, blk, BlockState::Empty);
                        g.pages[page as usize].users.clear();
                        g.free_page(page);
                        probed = None;
                        cv.notify_all();
                    }
                }
            }
        }
    }
}

thread_local! {
    /// The buffer a store of an anonymous slot living in a view reads from (see
    /// `writeout`); kept per thread so that its pages are faulted in once. Taken out
    /// while in use, so a nested writeout (from inside a store) gets a fresh one.
    static BOUNCE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Fetch file block `blk` of handle `h` (`Empty`, `src` from `map_source`) as a file
/// page and show it in view `mid` (invariant 10): `Empty` → `Loading` → `Loaded`. The
/// bytes are mapped, their page tables filled, at a staging address without the lock
/// and checked against `src.crc` there, then the same mapping is moved into the view
/// (with readahead's marker if `arm`). Bytes that need no check (`src.crc` is None)
/// are mapped straight into the view instead (`filemap.rs`). Returns `Ok(false)` if the
/// block was invalidated
/// (or its handle closed) meanwhile; an error (a CRC mismatch, an I/O error) leaves the
/// block `Empty`, never shown. A fault holds its mapping, so its handle and view stay
/// alive; the readahead thread holds neither and copes with both going away.
pub(super) fn fetch_file(
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
                if let Err(e) = st.move_into(addr, bs) {
                    // The block stays Loaded, unmapped: the next access maps it again.
                    if let Err(e2) = os::reset(addr, bs) {
                        eprintln!("wdb: fatal: {e}; then cannot reset a view block: {e2}");
                        std::process::abort();
                    }
                } else {
                    g.counters.file_maps += 1;
                    let m = g.maps.get_mut(&mid).expect("checked above");
                    m.mapped.insert(blk, (page, false));
                    if arm && os::arm(addr, true).is_ok() {
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
            g.set_state(h, blk, BlockState::Empty);
            g.pages[page as usize].users.clear();
            g.free_page(page);
            cv.notify_all();
            g.assert_invariants();
            Err(Error::Load {
                file: file.name().to_string(),
                blk,
                cause: e.to_string(),
            })
        }
        (s, _) => {
            // Invalidated meanwhile: throw the mapping away.
            debug_assert_eq!(s, BlockState::LoadingInvalidated { page });
            g.set_state(h, blk, BlockState::Empty);
            g.pages[page as usize].users.clear();
            g.free_page(page);
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
fn fetch_partial(
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
        return Err(Error::Load {
            file: file.name().to_string(),
            blk,
            cause: e.to_string(),
        });
    }
    let Some(m) = g.maps.get(&mid) else {
        drop_page(g);
        return Ok(false);
    };
    // The view block shows nothing: the entry was not Loaded (invariant 5).
    let addr = g.view_addr(m, blk);
    let mapped = os::map_file_window(addr, bs, &src, w * PART_WINDOW, PART_WINDOW);
    // Either way below the block's mapping is replaced (invariant 16).
    g.maps
        .get_mut(&mid)
        .expect("checked above")
        .untidy
        .remove(&blk);
    if let Err(e) = mapped {
        if let Err(e2) = os::reset(addr, bs) {
            eprintln!("wdb: fatal: {e}; then cannot reset a view block: {e2}");
            std::process::abort();
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
fn add_window(
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
    res.map_err(|e| Error::Load {
        file: file.name().to_string(),
        blk,
        cause: e.to_string(),
    })?;
    if is_set(g) {
        return Ok(true);
    }
    if !g.make_part_room(page) {
        complete_file(g, cv, h, blk, page)?;
        return Ok(false);
    }
    g.make_room(PART_WINDOW as u64, page)?;
    let addr = g.view_addr(&g.maps[&mid], blk);
    if os::show_window(addr, &src, w * PART_WINDOW, PART_WINDOW).is_err() {
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
fn complete_file(
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
    res.map_err(|e| Error::Load {
        file: file.name().to_string(),
        blk,
        cause: e.to_string(),
    })?;
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
        os::show_window(addr, &src, 0, bs as usize)?;
    }
    g.used += extra;
    g.part_windows -= g.windows(page);
    g.pages[page as usize].part = None;
    g.assert_invariants();
    Ok(())
}

/// Readahead of block `blk` of handle `h` on the copy path (`map_source` gave none: a
/// compressed or delta block) that has stored content (a content key): load it into a RAM page, `Empty` → `Loading` → `Loaded`,
/// in the LRU and the content cache but in no view: the scan's fault on it moves the
/// slot into its view (invariant 9), no copy. Room is made as `room_ahead` does for
/// a scan at `pos`. `Ok(false)`: nothing loaded (no room, the block is not `Empty`,
/// another handle holds its content, it was invalidated or its handle closed meanwhile,
/// or the load failed: the scan's own fault loads it again and reports the error).
pub(super) fn load_ahead(
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
    // The slot is ours alone while Loading (invariant 3), even if the handle is closed
    // meanwhile (close_handle leaves it to us).
    let res = MutexGuard::unlocked(g, || load_slot(&pool, slot, zero, &*file, blk));
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

/// For a scan of view `mid` that found block `pos` still loading: load the first block
/// after it in the readahead window that is `Empty` and of the copy path (compressed or
/// delta: `map_source` is None) into a RAM page, as readahead would (`load_ahead`), and
/// return whether one was loaded. Raw blocks are left to readahead, which maps them
/// without a load. Runs in the fault, whose mapping keeps the view and the handle alive.
fn help_ahead(g: &mut Guard<'_>, cv: &Condvar, mid: MapId, pos: u64) -> bool {
    let Some(m) = g.maps.get(&mid) else {
        return false;
    };
    let (h, end) = (m.handle, m.first_blk + m.n_blks);
    let k = super::readahead::window(g.budget, g.block_size_of(h) as u64);
    if k == 1 {
        // No page to spare (see `readahead::ahead`).
        return false;
    }
    let file = g.handles[&h].file.clone();
    for b in pos + 1..=pos.saturating_add(k).min(end - 1) {
        if g.state(h, b) != BlockState::Empty || g.has_patch(h, b) {
            continue;
        }
        let src = MutexGuard::unlocked(g, || file.map_source(b));
        if !matches!(src, Ok(None)) {
            return false;
        }
        return matches!(load_ahead(g, cv, h, b, pos), Ok(true));
    }
    false
}

impl VmState {
    /// Make room for one more block of `bs` bytes for readahead, evicting clean pages
    /// in LRU order, but never one that holds block `pos` of handle `h` (where its scan
    /// is) or a later one (blocks the scan has still to reach): readahead must not evict
    /// what the scan needs next in favour of what it needs later. `false`: no room.
    pub(super) fn room_ahead(&mut self, bs: u64, h: HandleId, pos: u64) -> bool {
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

    /// The block size of handle `h`'s file.
    pub(super) fn block_size_of(&self, h: HandleId) -> usize {
        self.pools[self.handles[&h].pool].os.slot_size()
    }
}

/// Load block `blk` of `file` into `slot`, which the caller owns (a `Loading` page,
/// invariant 3); called without the VM lock. A never-used slot (`zero`) is faulted in
/// at once and reads as zeros; a reused one is zeroed first unless the file writes the
/// whole block.
fn load_slot(pool: &Pool, slot: usize, zero: bool, file: &dyn BigFile, blk: u64) -> Result<()> {
    if zero {
        pool.populate(slot);
    } else if !file.load_writes_whole_block() {
        pool.slot_mut(slot).fill(0);
    }
    file.load_blk(blk, pool.slot_mut(slot))
}

/// Drop the changes of the blocks of `h` at or after `first`, once no store of one of
/// them is in flight (a spill by another thread, invariant 17): the lock is held from
/// the last wait to the end, so no new store of them starts meanwhile.
pub(super) fn discard_from(g: &mut Guard<'_>, cv: &Condvar, h: HandleId, first: u64) {
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

/// Store every dirty block of `h` in ascending order, then mark it clean and read-only
/// (a spilled block was stored by its spill: it is marked clean only). A store error
/// leaves that block (and the later ones) dirty and returns the error.
pub(super) fn writeout(g: &mut Guard<'_>, cv: &Condvar, h: HandleId) -> Result<()> {
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
                pool.copy_from_view(slot, addr, &mut buf);
                Some(buf)
            }
            _ => None,
        };
        let hs = g.handles.get_mut(&h).expect("live");
        hs.inflight += 1;
        let file = hs.file.clone();
        g.assert_invariants();
        // Nobody writes the slot while Storing (invariant 3).
        let res = MutexGuard::unlocked(g, || match &bounce {
            Some(buf) => file.store_blk(blk, buf),
            None => {
                let r = file.store_blk(blk, pool.slot(slot));
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
