//! The page-state machine of the virtual memory: this file holds its types (the state
//! of a block, a page, a handle, a view, and [`VmState`], everything the VM lock
//! protects), its constants and its numbered invariants; every transition of a block's
//! state happens under the VM lock in this file or one of its child modules:
//!
//! | file            | responsibility                                                    |
//! |-----------------|-------------------------------------------------------------------|
//! | `service.rs`    | the fault service `ensure` (classify the access, then one function per page state), `Loaded` → `Dirty`, readahead's loads into RAM pages |
//! | `budget.rs`     | the RAM budget: allocating and freeing pages, the clean LRU, eviction |
//! | `views.rs`      | what each view block maps: mapping, resetting, moving slots, promoting, untidy blocks |
//! | `filepage.rs`   | file pages checked before they are shown: whole (`fetch_file`) or by window (`fetch_partial`, `add_window`, `complete_file`) |
//! | `filemap.rs`    | file pages that need no check, and their neighbours                |
//! | `subpage.rs`    | small writes: patches and `PartDirty` blocks                        |
//! | `spill.rs`      | spilling dirty blocks through their file, the dirty LRU            |
//! | `writeout.rs`   | `writeout`, `invalidate`, `discard`, closing a handle              |
//! | `invariants.rs` | the checker of the invariants below (debug builds)                 |
//!
//! Which file keeps each numbered invariant (below), and which check of
//! `invariants.rs` (or of the named module) asserts it:
//!
//! | inv | kept by                                                           | checked by |
//! |-----|-------------------------------------------------------------------|------------|
//! | 1   | `budget.rs` (`alloc`, `free_page`, `make_room`), `filepage.rs`, `subpage.rs` | `check_budget` |
//! | 2   | `budget.rs` (`alloc`, `free_page`, `detach`)                       | `check_free_lists`, `check_page` |
//! | 3   | `service.rs` (`load`), `filepage.rs`, `writeout.rs`, `spill.rs`    | `check_page` |
//! | 4   | `budget.rs` (`lru_remove`, `lru_touch`, `evict`)                   | `check_page`, `check_lru_list` |
//! | 5   | `views.rs` (`map_view`, `reset_views`, `protect_views`)            | `check_view` |
//! | 6   | `service.rs` (`make_dirty`), `writeout.rs`, `spill.rs`, `subpage.rs` | `check_dirty` |
//! | 7   | `service.rs` (`load`, `share_cached`), `budget.rs` (`free_page`)   | `check_page` |
//! | 8   | every function that calls a `BigFile` or checks file bytes: `service.rs`, `filepage.rs`, `filemap.rs`, `writeout.rs`, `spill.rs`, `subpage.rs` | by construction (`MutexGuard::unlocked`) |
//! | 9   | `views.rs` (`map_view`, `home`, `promote`), `os.rs`/`pool.rs`      | `check_slot` |
//! | 10  | `filepage.rs`, `filemap.rs`, `service.rs` (`make_dirty_from_file`) | `check_file_page` |
//! | 11  | `subpage.rs`                                                      | `subpage.rs` (`check_patches`) |
//! | 12  | `subpage.rs`                                                      | `check_view`, `check_patches` |
//! | 13  | `views.rs` (`promote`, `map_view`), `pool.rs`                     | `check_slot`, `check_view` |
//! | 14  | `filepage.rs`, `filemap.rs`, `views.rs` (`map_view`)              | `check_view` |
//! | 15  | `filepage.rs`, `budget.rs` (`make_part_room`)                     | `check_budget`, `check_partial` |
//! | 16  | `views.rs` (`tidy`, `tidy_beside`, `mark_untidy`)                 | `check_view` |
//! | 17  | `spill.rs`, `set_state` (this file)                               | `spill.rs` (`check_spill`) |
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
pub(super) use filepage::fetch_file;
pub(super) use service::{ensure, load_ahead};
pub(super) use spill::spill_ahead;
pub(super) use subpage::{store_patch, write_patch, Patches};
pub(super) use writeout::{discard_from, writeout};

#[path = "budget.rs"]
mod budget;
#[path = "filemap.rs"]
mod filemap;
#[path = "filepage.rs"]
mod filepage;
#[path = "invariants.rs"]
mod invariants;
#[path = "service.rs"]
mod service;
#[path = "spill.rs"]
mod spill;
#[path = "subpage.rs"]
mod subpage;
#[path = "views.rs"]
mod views;
#[path = "writeout.rs"]
mod writeout;

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

/// The error of a failed load (or check) of block `blk` of `file`.
fn load_error(file: &dyn BigFile, blk: u64, e: Error) -> Error {
    Error::Load {
        file: file.name().to_string(),
        blk,
        cause: e.to_string(),
    }
}

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

    /// The block size of handle `h`'s file.
    pub(super) fn block_size_of(&self, h: HandleId) -> usize {
        self.pools[self.handles[&h].pool].os.slot_size()
    }
}
