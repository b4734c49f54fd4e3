//! Readahead: one background thread per [`VirtMem`](super::VirtMem) that keeps the
//! file blocks ahead of a sequential scan mapped, checked and with their page tables
//! filled, so that the scanning thread runs over those without a fault and most of the
//! CRC checks and page-table work run on another core, in parallel with the scan.
//!
//! - **Detection.** `ensure` passes a position `(view, blk)` ([`RaState::want`]) when a
//!   read fault of a view comes at most a window after that view's previous fault (a
//!   scan), or touches a block readahead armed. Faults at random positions pass
//!   nothing, so random access starts no readahead and a scan that turns random lets it
//!   stop after its window. Write faults pass nothing either.
//! - **Work.** For a position `pos`, the next [`window`] blocks of the view are fetched
//!   (`state::fetch_file`: staged in the thread's arena, `os::Arena`, checked, mapped
//!   into the view), one in every half window with its first page armed as a marker
//!   (invariant 14 in `state.rs`): the
//!   scan's first touch of it faults once, which disarms it and passes the new position
//!   on. Blocks of the copy path (compressed, delta) are loaded into RAM pages
//!   (`state::load_ahead`) and left unmapped: the scan's fault on each moves it into
//!   the view (no copy) and passes the position on. The work is shared by need: this
//!   thread takes every block of the window nobody has started, and a scan that
//!   reaches a block this thread is still on does not wait idle: it checks or loads
//!   the next block of the window nobody has started (`state::help_ahead`), and a scan
//!   that reaches a block nobody started fetches it itself. Checking a block costs
//!   about what summing it does, so the scan's core then mostly reads and this one
//!   mostly checks; when this thread is the slower one (its core shared, its blocks
//!   harder) the scan takes more of the work. On a cold page cache the fetches' own
//!   faults make the kernel read the file ahead (`read_ahead_kb`), in large folios. The window is not announced with
//!   `fadvise(WILLNEED)`: that fills the page cache with 4 KiB folios, which every later
//!   mapping of the file (each warm scan) then maps and unmaps a page at a time, at
//!   about half the speed of large folios.
//! - **Reads.** Before it fetches, the thread hands the window's blocks that need a
//!   check to the prefetch threads (`prefetch.rs`), each block once: their reads are
//!   then in flight together while this thread and the scan check the blocks before
//!   them, instead of one read per checking thread at a time.
//! - **Budget.** Fetched blocks are file pages: counted in `used` and in the LRU like
//!   any page. Readahead evicts only pages that do not hold the scan's current block or
//!   one after it (`VmState::room_ahead`): when the budget is full of blocks the scan
//!   has yet to reach it waits for the next position. The window is at most a quarter
//!   of the budget.
//! - **Errors.** A block readahead cannot fetch (a CRC mismatch, an I/O error) is left
//!   `Empty`: the scan's own fault fetches it again and reports the error there.
//! - **Lifetime.** The thread starts with the first mapping of a `VirtMem` and stops
//!   when the `VirtMem` is dropped (it is joined there). It holds the VM lock except
//!   around `map_source` and the fetch (invariant 8), and touches neither a
//!   handle's nor a mapping's in-flight counts: it copes with either going away.
//!
//! [`VirtMem::set_readahead`](super::VirtMem::set_readahead) turns it off (for measuring
//! without it; `Options::readahead` of the database).

use std::sync::Arc;

use parking_lot::MutexGuard;

use super::state::{self, BlockState, MapId};
use super::VmShared;

/// Bytes mapped ahead of a scan, at most (and at most a quarter of the budget).
const AHEAD_BYTES: u64 = 16 << 20;

/// The readahead thread's work, under the VM lock.
#[derive(Debug, Default)]
pub(super) struct RaState {
    /// The latest scan position `(view, block)` not yet served.
    request: Option<(MapId, u64)>,
    /// Set when the `VirtMem` is dropped: the thread exits.
    pub(super) stop: bool,
    /// The thread was started.
    pub(super) started: bool,
    /// A request was made since the thread was last woken ([`kick`]).
    kick: bool,
    /// Readahead is turned off: no request is made, no thread started.
    pub(super) off: bool,
    /// The last block of view `.0` handed to the prefetch threads (`prefetch.rs`).
    prefetched: Option<(MapId, u64)>,
}

impl RaState {
    /// A scan of view `mid` is at block `blk`: map the blocks after it. The caller
    /// wakes the thread with [`kick`] once its fault is served.
    pub(super) fn want(&mut self, mid: MapId, blk: u64) {
        if !self.off {
            self.request = Some((mid, blk));
            self.kick = true;
        }
    }
}

/// Wake the thread if a request was made: after a fault is served, with the VM lock
/// held. The thread waits on its own condvar, so that the many notifications of the
/// VM condvar (every load and store) do not wake it for nothing.
pub(super) fn kick(g: &mut state::VmState, vm: &VmShared) {
    if std::mem::take(&mut g.ra.kick) {
        vm.ra_cv.notify_one();
    }
}

/// Blocks mapped ahead of a scan: `AHEAD_BYTES`, at most a quarter of the budget, at
/// least one block.
pub(super) fn window(budget: u64, bs: u64) -> u64 {
    (AHEAD_BYTES / bs).min(budget / bs / 4).max(1)
}

/// Start the thread of `vm` unless it runs (or the `VirtMem` is gone, or readahead is
/// off). Called outside the fault handler: spawning allocates.
pub(super) fn start(vm: &Arc<VmShared>) {
    super::start_worker(
        vm,
        &vm.ra_thread,
        |g| {
            if g.ra.off {
                None
            } else {
                Some((&mut g.ra.started, &mut g.ra.stop))
            }
        },
        "wdb-readahead",
        run,
    );
}

/// Stop the thread of `vm` and wait for it (unless this is that thread: it dropped the
/// last reference to the database, and exits when it is back in its loop).
pub(super) fn stop(vm: &VmShared) {
    super::stop_worker(vm, &vm.ra_thread, &vm.ra_cv, |g| g.ra.stop = true);
}

fn run(vm: &VmShared) {
    let _w = super::fault::InWdb::enter();
    super::os::use_arena();
    let mut g = vm.state.lock();
    loop {
        if g.ra.stop {
            return;
        }
        match g.ra.request.take() {
            Some((mid, pos)) => {
                // This reference outlives every clone of the file `ahead` drops with the
                // VM lock held, and is dropped without it: the last reference to a
                // file may hold the last one to its database, whose drop drops the
                // VirtMem, which takes the VM lock to stop this thread.
                let file = g
                    .maps
                    .get(&mid)
                    .and_then(|m| g.handles.get(&m.handle))
                    .map(|hs| hs.file.clone());
                ahead(&mut g, vm, mid, pos);
                MutexGuard::unlocked(&mut g, || drop(file));
            }
            None => {
                super::os::arena_recycle();
                vm.ra_cv.wait(&mut g)
            }
        }
    }
}

/// Fetch the window of blocks after `pos` in view `mid`.
fn ahead(g: &mut MutexGuard<'_, state::VmState>, vm: &VmShared, mid: MapId, pos: u64) {
    let Some(m) = g.maps.get(&mid) else { return };
    let (h, end) = (m.handle, m.first_blk + m.n_blks);
    let file = g.handles[&h].file.clone();
    let bs = g.block_size_of(h) as u64;
    let k = window(g.budget, bs);
    let last = pos.saturating_add(k).min(end - 1);
    prefetch(g, mid, h, pos, last);
    // Every block nobody has started; the scan helps where it catches up (see the
    // module doc). A window of one block (a budget under eight blocks) is left to the
    // scan whole: such a budget has no page to spare (an allocation that meets the page
    // still `Loading` fails with `RamExhausted`).
    for b in pos + 1..=last {
        if g.ra.stop || g.ra.request.is_some_and(|(m2, p2)| m2 != mid || p2 >= b) {
            // Dropped, or a newer position: serve that one.
            return;
        }
        if !g.maps.contains_key(&mid) || !g.handles.contains_key(&h) {
            return;
        }
        if g.state(h, b) != BlockState::Empty {
            continue;
        }
        if k == 1 {
            continue;
        }
        let inval = g.handles[&h].invalidations;
        let src = MutexGuard::unlocked(g, || file.map_source(b, true));
        let src = match src {
            Ok(Some(src)) => src,
            Ok(None) => {
                // A block of the copy path (compressed, delta): decompress it into a
                // RAM page ahead of the scan.
                if let Ok(false) | Err(_) = state::load_ahead(g, &vm.cv, h, b, pos) {
                    if g.used + bs > g.budget {
                        return; // no room: wait for the scan to move on
                    }
                }
                continue;
            }
            // The scan's own fault meets the error.
            Err(_) => continue,
        };
        if g.handles.get(&h).is_none_or(|hs| hs.invalidations != inval)
            || !g.maps.contains_key(&mid)
            || g.state(h, b) != BlockState::Empty
            || g.has_patch(h, b)
            || src.pages.is_some()
        {
            // Changed meanwhile, patched (a private page shows it), or a delta chain
            // (its pages go over the view's mapping: the scan's own fault maps it).
            continue;
        }
        if !g.room_ahead(bs, h, pos) {
            return;
        }
        // A marker every half window: the scan's position is known that often, at the
        // cost of one fault (and two mprotect calls) per marker.
        let arm = (b - pos) % (k / 2).max(1) == 0;
        // An error leaves the block Empty: the scan meets it in its own fault.
        let _ = state::fetch_file(g, &vm.cv, mid, h, b, src, arm);
    }
}

/// Hand the blocks `..=last` of view `mid` (handle `h`) after `pos` that are `Empty`,
/// need a check and were not handed over before to the prefetch threads. Blocks that
/// need no check are left to the faults that map them, as a memory map's are.
fn prefetch(g: &mut MutexGuard<'_, state::VmState>, mid: MapId, h: state::HandleId, pos: u64, last: u64) {
    // Go on after the last block handed over while it lies in this window; a scan that
    // starts again before it (a second pass, a jump back) starts a new run.
    let from = match g.ra.prefetched {
        Some((m, p)) if m == mid && p > pos && p <= last => p + 1,
        _ => pos + 1,
    };
    if from > last {
        return;
    }
    g.ra.prefetched = Some((mid, last));
    let want: Vec<u64> = (from..=last)
        .filter(|&b| g.state(h, b) == BlockState::Empty && !g.has_patch(h, b))
        .collect();
    if want.is_empty() {
        return;
    }
    let file = g.handles[&h].file.clone();
    let bs = g.block_size_of(h);
    MutexGuard::unlocked(g, || {
        for b in want {
            if let Ok(Some(src)) = file.map_source(b, false) {
                if src.crc.is_some() && src.pages.is_none() {
                    super::prefetch::prefetch(&src, bs);
                }
            }
        }
        drop(file);
    });
}
