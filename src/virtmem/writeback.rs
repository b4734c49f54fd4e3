//! Write-behind: one background thread per [`VirtMem`](super::VirtMem) that spills the
//! least recently used dirty blocks *before* an allocation needs their room, once the
//! dirty blocks have outgrown the budget, so that a transaction bigger than RAM writes
//! its spills on another core while the writing thread goes on computing — the same
//! split readahead makes for scans.
//!
//! - **Arming.** The thread does nothing until an allocation had to spill to make room
//!   (`spill::make_way`): the sign that dirty data outgrows the budget. A transaction
//!   that fits the budget never spills, early or late. The thread disarms itself once
//!   dirty bytes fall under half the budget (a commit or an abort dropped them).
//! - **Work.** While armed, it spills (`spill::spill_one`, the same transition as a
//!   spill in a fault) until dirty bytes are at most the budget less [`reserve`]: that
//!   many bytes stay free or clean for the writing thread's next allocations. When it
//!   falls behind, the writing thread's own allocations spill as before, so both cores
//!   write.
//! - **Errors.** A spill that fails leaves its block dirty and disarms the thread: the
//!   writing thread's next spill meets the error and reports it (an `Err` from a checked
//!   call, the process stopped in a fault).
//! - **Lifetime.** Started with the first mapping of a `VirtMem` that has it on
//!   ([`VirtMem::set_write_behind`](super::VirtMem::set_write_behind)), stopped and
//!   joined when the `VirtMem` is dropped. It holds the VM lock except around the store.

use std::sync::Arc;

use super::state::{self, VmState};
use super::VmShared;

/// The write-behind thread's state, under the VM lock.
#[derive(Debug, Default)]
pub(super) struct WbState {
    /// Write-behind is on for this `VirtMem`.
    pub(super) on: bool,
    /// An allocation had to spill and dirty bytes have not fallen under half the
    /// budget since.
    pub(super) armed: bool,
    /// The thread was started.
    pub(super) started: bool,
    /// Set when the `VirtMem` is dropped: the thread exits.
    pub(super) stop: bool,
}

/// Bytes the thread keeps free or clean under the budget: 1/16 of it, at most 32 MiB.
pub(super) fn reserve(budget: u64) -> u64 {
    (budget / 16).min(32 << 20)
}

/// Does the armed thread have work: dirty bytes past the budget less the reserve?
fn behind(g: &VmState) -> bool {
    g.wb.armed && g.dirty + reserve(g.budget) > g.budget
}

/// After a fault or a checked load, with the VM lock held: wake the thread if it has
/// work, disarm it if dirty bytes fell under half the budget.
pub(super) fn kick(g: &mut VmState, vm: &VmShared) {
    if !g.wb.armed {
        return;
    }
    if g.dirty < g.budget / 2 {
        g.wb.armed = false;
    } else if behind(g) {
        vm.wb_cv.notify_one();
    }
}

/// Start the thread of `vm` if write-behind is on and it does not run yet. Called
/// outside the fault handler: spawning allocates. (No thread: allocations spill by
/// themselves, as without write-behind.)
pub(super) fn start(vm: &Arc<VmShared>) {
    super::start_worker(
        vm,
        &vm.wb_thread,
        |g| g.wb.on.then_some((&mut g.wb.started, &mut g.wb.stop)),
        "wdb-writeback",
        run,
    );
}

/// Stop the thread of `vm` and wait for it (unless this is that thread).
pub(super) fn stop(vm: &VmShared) {
    super::stop_worker(vm, &vm.wb_thread, &vm.wb_cv, |g| g.wb.stop = true);
}

fn run(vm: &VmShared) {
    let _w = super::fault::InWdb::enter();
    let mut g = vm.state.lock();
    loop {
        if g.wb.stop {
            return;
        }
        if behind(&g) {
            match state::spill_ahead(&mut g, &vm.cv) {
                Ok(true) => continue,
                Ok(false) => g.wb.armed = false,
                Err(e) => {
                    tracing::debug!(error = %e, "write-behind spill failed; the writer's own spill reports it");
                    g.wb.armed = false;
                }
            }
        }
        vm.wb_cv.wait(&mut g);
    }
}
