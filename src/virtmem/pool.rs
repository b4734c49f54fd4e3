//! The RAM pool of one block size ([`Pool`]): page slots with an anonymous home and a
//! memfd home, mapped into views by moving their page-table entries or mapping the
//! memfd again (a child module of `os.rs`: the same thin wrappers over memory system
//! calls, under the same rules).
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{
    madvise, mmap, mmap_anonymous, mprotect, mremap_fixed, munmap, Advice, MapFlags, MprotectFlags,
    MremapFlags, ProtFlags,
};

use super::{align_for, dont_fork, fatal_os, io, protect, reserve, reset, DONTUNMAP, HUGE};
use crate::{Error, Result};

/// The RAM pages of one block size: `cap` slots, each with two homes.
///
/// - Its **anonymous** home (the default): private anonymous memory in a range at
///   `abase`, advised for transparent huge pages. Where the kernel gives them (anonymous
///   THP `enabled` = madvise or always), a 2 MiB block is one huge page: one page-table
///   entry to move into a view, to write-protect or to make writable again, instead of
///   512 (each such walk of 512 entries costs about as much as copying the block). Such
///   a slot's pages can be at one address only: mapped into at most one view block, by
///   moving its entries there ([`Pool::move_to_view`]), and while moved its home has no
///   pages (reading it there would read zeros).
/// - Its **memfd** home: the slot's range of a memfd mapped read-write at `base`, so
///   that one page can be mapped at several addresses (two views of one block, or
///   handles sharing a clean page). Shared-memory pages are 4 KiB here (the kernel's
///   `shmem_enabled` decides, and MADV_HUGEPAGE is ignored when it is `never`).
///
/// A slot starts anonymous and is [promoted](Pool::promote) (its bytes copied into its
/// memfd range) the first time its page needs a second address; it stays a memfd slot
/// from then on. Loads, copies and stores go through the slot's current home, an
/// address that user code never sees.
#[derive(Debug)]
pub(crate) struct Pool {
    fd: OwnedFd,
    base: usize,
    abase: usize,
    slot_size: usize,
    cap: usize,
    /// Per slot: its bytes live in its anonymous home (else in its memfd range). Changed
    /// only by `promote`, under the VM lock, while no thread reads the slot unlocked.
    anon: Box<[AtomicBool]>,
    /// Per slot: its page-table entries are moved to a view (`move_to_view`).
    away: Box<[AtomicBool]>,
    /// A reserved block (`PROT_NONE`, never touched, not inherited by `fork`) whose
    /// mapping is copied over a view block to reset it (see `reset_view`).
    spare: usize,
}

impl Pool {
    /// A pool of `cap` slots of `slot_size` bytes. Address space is reserved for both
    /// homes at once; RAM is taken only for pages that are touched.
    pub(crate) fn new(slot_size: usize, cap: usize) -> Result<Pool> {
        let len = slot_size
            .checked_mul(cap)
            .ok_or_else(|| Error::OutOfRange("RAM pool size overflows".into()))?;
        let fd = memfd_create("wdb-ram", MemfdFlags::CLOEXEC).map_err(|e| io(e, "memfd_create"))?;
        ftruncate(&fd, len as u64).map_err(|e| io(e, "ftruncate(memfd)"))?;
        let base = reserve(len, align_for(slot_size))?;
        // SAFETY: MAP_FIXED of our new memfd over the range we just reserved.
        let mapped = unsafe {
            mmap(
                base as *mut _,
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &fd,
                0,
            )
        };
        let fail = |e: Error| {
            // SAFETY: the range is ours and nothing refers to it yet.
            let _ = unsafe { munmap(base as *mut _, len) };
            e
        };
        mapped.map_err(|e| fail(io(e, "mapping the RAM pool")))?;
        dont_fork(base, len).map_err(fail)?;
        // Ask for huge pages where the kernel allows them for shmem (ignored otherwise).
        // SAFETY: advice on our own mapping; contents are unchanged.
        let _ = unsafe { madvise(base as *mut _, len, Advice::LinuxHugepage) };
        let abase = reserve(len, align_for(slot_size)).map_err(fail)?;
        let afail = |e: Error| {
            // SAFETY: both ranges are ours and nothing refers to them yet.
            let _ = unsafe { munmap(abase as *mut _, len) };
            fail(e)
        };
        // SAFETY: MAP_FIXED over the range we just reserved: a new private anonymous
        // mapping, which aliases nothing.
        unsafe {
            mmap_anonymous(
                abase as *mut _,
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
            )
        }
        .map_err(|e| afail(io(e, "mapping the anonymous RAM pool")))?;
        dont_fork(abase, len).map_err(afail)?;
        if slot_size % HUGE == 0 {
            // Only for slots of whole huge pages: a huge page spanning several smaller
            // slots would take 2 MiB of RAM for the first of them and be split again by
            // the first protection change of one.
            // SAFETY: advice on our own mapping; contents are unchanged.
            let _ = unsafe { madvise(abase as *mut _, len, Advice::LinuxHugepage) };
        }
        let spare = reserve(slot_size, align_for(slot_size)).map_err(afail)?;
        Ok(Pool {
            fd,
            base,
            abase,
            spare,
            slot_size,
            cap,
            anon: (0..cap).map(|_| AtomicBool::new(true)).collect(),
            away: (0..cap).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Are slot `slot`'s page-table entries moved to a view?
    pub(crate) fn is_away(&self, slot: usize) -> bool {
        self.away[slot].load(Ordering::Acquire)
    }

    /// Does slot `slot` live in its anonymous home (one address only)?
    pub(crate) fn is_anon(&self, slot: usize) -> bool {
        self.anon[slot].load(Ordering::Acquire)
    }

    /// The slot's current home address.
    fn addr(&self, slot: usize) -> usize {
        assert!(slot < self.cap, "slot {slot} out of pool of {}", self.cap);
        if self.is_anon(slot) {
            self.abase + slot * self.slot_size
        } else {
            self.base + slot * self.slot_size
        }
    }

    /// The slot's home address for reading or writing its bytes there: an anonymous
    /// slot has no pages at home while it is moved to a view (invariant 13 in
    /// `state.rs`), so reaching it there is a bug, not a read of zeros.
    fn bytes_addr(&self, slot: usize) -> usize {
        assert!(
            !(self.is_anon(slot) && self.away[slot].load(Ordering::Acquire)),
            "anonymous RAM slot {slot} read at home while it lives in a view"
        );
        self.addr(slot)
    }

    /// Map memfd slot `slot` at view address `addr` (a block of a live reservation,
    /// invariant 5), read-only or read-write. A writable mapping gets its page tables
    /// filled at once (MAP_POPULATE: one call instead of a write fault per 4 KiB page,
    /// which shared file mappings do not batch); a read-only one is filled lazily by the
    /// kernel's fault-around (16 pages per minor fault), which is cheaper than
    /// populating through get_user_pages and costs nothing for pages never read. An
    /// anonymous slot cannot be mapped twice: it is promoted first (checked).
    ///
    /// # Safety
    /// `addr` is a block of a live view reservation whose current mapping the caller
    /// lets go (invariant 5), and `writable` only for the one view of a `Dirty` page.
    pub(crate) unsafe fn map_at(&self, slot: usize, addr: usize, writable: bool) -> Result<()> {
        assert!(slot < self.cap);
        assert!(
            !self.is_anon(slot),
            "an anonymous RAM slot mapped a second time"
        );
        let off = (slot * self.slot_size) as u64;
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: MAP_FIXED over a block of our own reservation (the contract above)
        // replaces only our PROT_NONE space or an older mapping of a slot there.
        unsafe {
            mmap(
                addr as *mut _,
                self.slot_size,
                prot,
                if writable {
                    MapFlags::SHARED | MapFlags::FIXED | MapFlags::POPULATE
                } else {
                    MapFlags::SHARED | MapFlags::FIXED
                },
                &self.fd,
                off,
            )
        }
        .map_err(|e| io(e, "mapping a RAM page into a view"))?;
        dont_fork(addr, self.slot_size)
    }

    /// Move slot `slot`'s page-table entries from its home to view address `addr` (a
    /// block of a live reservation, invariant 5), read-only or read-write.
    ///
    /// This is how the first view of a freshly loaded block gets it: the kernel moves
    /// the entries the load created (a whole page table, or one huge-page entry, where
    /// both addresses are 2 MiB aligned) instead of the view faulting them in again, and
    /// the block's pages stay mapped once, so they count once in the process's RSS.
    /// Until [`Pool::move_home`] the slot must not be written through its home, nor read
    /// there if it is anonymous (invariants 9 and 11 in `state.rs`).
    ///
    /// No address is ever left unmapped (another thread's `mmap` could take it):
    /// `MREMAP_DONTUNMAP` keeps the slot's home mapped (without entries), and the view
    /// block's previous contents are replaced atomically. The protection is set before
    /// the move, at home, so that the view never shows the block writable when it should
    /// not. An error leaves the slot at home, the view as it was.
    ///
    /// # Safety
    /// `addr` is a block of a live view reservation whose current mapping the caller
    /// lets go (invariant 5); the slot is at home and no slice of it is alive (the VM
    /// lock is held and its page is neither `Loading` nor `Storing`, invariant 3);
    /// `writable` only for the one view of a `Dirty` page.
    pub(crate) unsafe fn move_to_view(
        &self,
        slot: usize,
        addr: usize,
        writable: bool,
    ) -> Result<()> {
        let home = self.addr(slot);
        if !writable {
            // SAFETY: the slot's home, which has its pages (it is at home); read-only.
            unsafe { protect(home, self.slot_size, false) }?;
        }
        // SAFETY: [home, home+slot_size) is the slot's part of our pool mapping (at home,
        // the contract above); [addr, addr+slot_size) is a block of our own reservation,
        // whose current contents (PROT_NONE space or another slot's mapping) MREMAP_FIXED
        // replaces. No slice of the slot is alive, and the home stays mapped.
        let r = unsafe {
            mremap_fixed(
                home as *mut _,
                self.slot_size,
                self.slot_size,
                MremapFlags::MAYMOVE | DONTUNMAP,
                addr as *mut _,
            )
        };
        if let Err(e) = r {
            if !writable {
                // SAFETY: the slot is still at home (the move failed): writable again.
                unsafe { protect(home, self.slot_size, true) }?;
            }
            return Err(io(e, "moving a RAM page into a view"));
        }
        self.away[slot].store(true, Ordering::Release);
        Ok(())
    }

    /// Move slot `slot`'s page-table entries back from view address `addr` (where
    /// [`Pool::move_to_view`] put them) to its home, read-write, and leave `PROT_NONE`
    /// reserved space at `addr`; no address is ever left unmapped. A failure would
    /// leave the pool with a hole or a view showing a stale page: the process stops
    /// instead.
    ///
    /// The view block keeps its protection while it moves: a read-only one stays
    /// read-only, and a writable one (a `Dirty` block, invariant 5) is moved home only
    /// when its changes are dropped (invalidate, discard, a freed page) or when no view
    /// of it is alive (its mapping is being released), so a write that lands during the
    /// move loses nothing that is kept. Making the home writable again is free when it
    /// already is, and one entry to change for a huge page.
    /// `writable` is the view block's current protection: a writable memfd block
    /// arrives home writable, and the home then needs no `mprotect`; an anonymous one is
    /// made `PROT_NONE` before it moves (see the body), so its home always needs one.
    ///
    /// Returns whether the view block is left *untidy* (invariant 16 in `state.rs`): an
    /// anonymous slot leaves behind its own entry-less `PROT_NONE` mapping, which faults
    /// like reserved space but is a separate kernel mapping until [`reset`] (or the next
    /// page moved there) replaces it; that call is left to the caller, which batches it.
    /// A memfd slot's view block is reset here (an entry-less shared mapping would
    /// refault the slot's bytes).
    ///
    /// # Safety
    /// [`Pool::move_to_view`] moved the slot to `addr` and it is still there
    /// (invariant 9); `writable` is that view block's protection; the state machine
    /// forgets the block's mapping, so the next access faults and is served again.
    #[must_use]
    pub(crate) unsafe fn move_home(&self, slot: usize, addr: usize, writable: bool) -> bool {
        let home = self.addr(slot);
        let anon = self.is_anon(slot);
        if anon {
            // MREMAP_DONTUNMAP leaves a private anonymous source mapped but empty: another
            // thread reading the view block during the move would get zero pages, not
            // the block (a memfd source maps the same bytes again instead). So the view
            // block goes PROT_NONE first: a concurrent access faults and waits for the
            // VM lock, which the caller holds, and finds the block gone.
            // SAFETY: [addr, addr+slot_size) is a block of our own reservation holding
            // the slot's mapping (the contract above); a protection change moves nothing.
            let r = unsafe { mprotect(addr as *mut _, self.slot_size, MprotectFlags::empty()) };
            if let Err(e) = r {
                fatal_os(
                    "cannot protect a view block before moving its page home: mprotect",
                    &e,
                );
            }
        }
        // SAFETY: [addr, addr+slot_size) holds exactly the slot's mapping, moved there by
        // move_to_view (the contract above, invariant 9); [home, +slot_size) is the slot's
        // entry-less mapping inside our pool range, which MREMAP_FIXED replaces.
        let r = unsafe {
            mremap_fixed(
                addr as *mut _,
                self.slot_size,
                self.slot_size,
                MremapFlags::MAYMOVE | DONTUNMAP,
                home as *mut _,
            )
        };
        if let Err(e) = r {
            fatal_os("cannot move a RAM page back to its pool: mremap", &e);
        }
        self.away[slot].store(false, Ordering::Release);
        if !anon {
            // SAFETY: the view block of a live reservation the slot just left; the
            // state machine forgets its mapping (the contract above).
            if let Err(e) = unsafe { self.reset_view(addr) } {
                fatal_os("cannot reset a view block to PROT_NONE", &e);
            }
        }
        if !writable || anon {
            // SAFETY: the slot's home, where its pages are again (moved just above).
            if let Err(e) = unsafe { protect(home, self.slot_size, true) } {
                fatal_os("cannot make a RAM pool slot writable again", &e);
            }
        }
        anon
    }

    /// [`reset`] a view block of this pool's block size in one system call instead of
    /// two: a copy of the spare block's mapping is moved over it (`MREMAP_DONTUNMAP`
    /// leaves the spare in place), which is `PROT_NONE` reserved space not inherited by
    /// `fork`, as `reset` makes it, and merges with the reserved space around it.
    ///
    /// # Safety
    /// As for [`reset`], for the block of this pool's size at `addr`.
    unsafe fn reset_view(&self, addr: usize) -> Result<()> {
        // SAFETY: [spare, +slot_size) is our own never-accessed PROT_NONE reservation;
        // [addr, +slot_size) is a block of a live reservation (the contract of `reset`),
        // whose current mapping MREMAP_FIXED replaces.
        let r = unsafe {
            mremap_fixed(
                self.spare as *mut _,
                self.slot_size,
                self.slot_size,
                MremapFlags::MAYMOVE | DONTUNMAP,
                addr as *mut _,
            )
        };
        match r {
            Ok(_) => Ok(()),
            // SAFETY: the same block, under the same contract.
            Err(_) => unsafe { reset(addr, self.slot_size) },
        }
    }

    /// Turn anonymous slot `slot` into a memfd slot, so that its page can be mapped at
    /// several addresses: its bytes are copied into its memfd range, and its anonymous
    /// pages are given back. If it lives in a view (`view = Some((addr, writable))`,
    /// where `move_to_view` put it), the memfd copy's entries are moved there in its
    /// place, with the same protection (the anonymous pages they replace are freed), so
    /// the slot is still moved to that view. Returns whether it is (the move can fail
    /// only on kernels without `MREMAP_DONTUNMAP` for shared mappings; the view then maps
    /// the memfd range instead).
    ///
    /// A writable view block is write-protected before the copy, so a user write waits
    /// in the fault handler for the VM lock. A failure after the copy would leave the
    /// view showing a stale copy: the process stops instead.
    ///
    /// # Safety
    /// No thread reads or writes the slot through its home during the call (the VM lock
    /// is held and its page is neither `Loading` nor `Storing`, invariant 3); `view`, if
    /// given, is the view block [`Pool::move_to_view`] moved the slot to, with that
    /// block's protection.
    pub(crate) unsafe fn promote(&self, slot: usize, view: Option<(usize, bool)>) -> bool {
        assert!(self.is_anon(slot), "promoting a memfd slot");
        let ahome = self.addr(slot);
        let mhome = self.base + slot * self.slot_size;
        let src = view.map_or(ahome, |v| v.0);
        if let Some((addr, true)) = view {
            // A writer of the view must not change the block behind the copy: it faults
            // (and waits for the VM lock) until the view maps the memfd copy, writable.
            // One entry to change for a huge page.
            // SAFETY: the view block the slot lives in (the contract above); read-only.
            if let Err(e) = unsafe { protect(addr, self.slot_size, false) } {
                fatal_os("cannot write-protect a view block", &e);
            }
        }
        // SAFETY: advice on our own pool mapping; it does not change its contents.
        let _ = unsafe { madvise(mhome as *mut _, self.slot_size, Advice::LinuxPopulateWrite) };
        // SAFETY: `src` maps the slot's bytes readable (its anonymous home, or the view
        // block it was moved to); [mhome, +slot_size) is its memfd range in our pool
        // mapping, read-write and not mapped anywhere else (the slot was anonymous); the
        // two do not overlap. Nobody writes either meanwhile (contract above).
        unsafe {
            ptr::copy_nonoverlapping(src as *const u8, mhome as *mut u8, self.slot_size);
        }
        self.anon[slot].store(false, Ordering::Release);
        self.away[slot].store(false, Ordering::Release);
        let Some((addr, writable)) = view else {
            // SAFETY: DONTNEED on the slot's private anonymous home frees its pages; its
            // bytes now live in the memfd range, and nothing refers to the old ones.
            let _ = unsafe { madvise(ahome as *mut _, self.slot_size, Advice::LinuxDontNeed) };
            return false;
        };
        // The anonymous home was left entry-less (and maybe read-only) by the move out.
        // SAFETY: the slot's anonymous home, no longer its home (its bytes are in the
        // memfd range now): nothing reads it.
        if let Err(e) = unsafe { protect(ahome, self.slot_size, true) } {
            fatal_os("cannot make a RAM pool slot writable again", &e);
        }
        // SAFETY: the view block the slot lived in (the contract above), whose mapping
        // (the anonymous pages, copied) is let go; the memfd slot is at home, no slice
        // of it alive; writable as the view block was.
        if unsafe { self.move_to_view(slot, addr, writable) }.is_ok() {
            return true;
        }
        // SAFETY: as above; a memfd slot now.
        if let Err(e) = unsafe { self.map_at(slot, addr, writable) } {
            fatal_os("cannot map a promoted RAM page into its view", &e);
        }
        false
    }

    /// Drop the page-table entries of a memfd slot's home, keeping its RAM and its
    /// contents: for a `MAP_SHARED` memfd mapping `MADV_DONTNEED` only unmaps. Used after
    /// reading a slot whose entries live in a view (invariant 9), so that its pages are
    /// not left mapped twice. Nothing to do for an anonymous slot, whose home is not
    /// read while it is moved (invariant 13).
    pub(crate) fn drop_entries(&self, slot: usize) {
        if self.is_anon(slot) {
            return;
        }
        // SAFETY: advice on our own pool mapping; for a shared mapping DONTNEED drops
        // entries only, so any reader of the slot refaults the same bytes.
        let _ = unsafe {
            madvise(
                self.addr(slot) as *mut _,
                self.slot_size,
                Advice::LinuxDontNeed,
            )
        };
    }

    /// Fault in a never-used slot's pages in one call (cheaper than a fault per 4 KiB
    /// page; for an anonymous slot, one huge page where the kernel has one). Best
    /// effort: kernels before 5.14 lack MADV_POPULATE_WRITE.
    pub(crate) fn populate(&self, slot: usize) {
        // SAFETY: advice on our own pool mapping; it does not change its contents.
        let _ = unsafe {
            madvise(
                self.bytes_addr(slot) as *mut _,
                self.slot_size,
                Advice::LinuxPopulateWrite,
            )
        };
    }

    /// Give a free slot's RAM back to the kernel; it reads as zeros afterwards.
    ///
    /// # Safety
    /// The slot is free: no slice of it is alive and no view maps it (invariant 2).
    pub(crate) unsafe fn punch(&self, slot: usize) {
        let a = self.bytes_addr(slot);
        // MADV_REMOVE frees a memfd range's pages; DONTNEED frees private anonymous ones.
        let advice = if self.is_anon(slot) {
            Advice::LinuxDontNeed
        } else {
            Advice::LinuxRemove
        };
        // SAFETY: advice on our pool mapping of a slot that is free (the contract above),
        // so no one reads or writes it.
        let _ = unsafe { madvise(a as *mut _, self.slot_size, advice) };
    }

    /// The bytes of a slot, writable.
    ///
    /// # Safety
    /// The caller owns the slot exclusively while the slice lives (invariant 3 in
    /// `state.rs`) — it is `Loading` (loader), or freshly allocated and not yet
    /// published (copy target) — so no other reference to these bytes exists and no
    /// view maps the slot writable; and the slot is at home (invariant 9), so its home
    /// is writable.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slot_mut(&self, slot: usize) -> &mut [u8] {
        let a = self.bytes_addr(slot);
        // SAFETY: [a, a+slot_size) is inside the pool mapping, which lives as long as
        // `self`; exclusivity is the contract above.
        unsafe { std::slice::from_raw_parts_mut(a as *mut u8, self.slot_size) }
    }

    /// The bytes of a slot, read-only.
    ///
    /// # Safety
    /// Nobody writes the slot while the slice lives (invariant 3): it is clean (mapped
    /// read-only everywhere) or `Storing` (views write-protected first). (An anonymous
    /// slot read while it lives in a view is caught: it panics.)
    pub(crate) unsafe fn slot(&self, slot: usize) -> &[u8] {
        let a = self.bytes_addr(slot);
        // SAFETY: inside the pool mapping, which lives as long as `self`; no concurrent
        // writer by the contract above.
        unsafe { std::slice::from_raw_parts(a as *const u8, self.slot_size) }
    }

    /// Copy anonymous slot `slot`, moved to view address `addr`, into `dst` (its
    /// length at most the slot size).
    ///
    /// # Safety
    /// [`Pool::move_to_view`] put the slot at `addr` and it is still there, mapped
    /// readable, and nobody writes it during the call (its views are write-protected,
    /// invariant 3).
    pub(crate) unsafe fn copy_from_view(&self, slot: usize, addr: usize, dst: &mut [u8]) {
        assert!(self.is_away(slot) && dst.len() <= self.slot_size);
        // SAFETY: [addr, addr+len) maps the slot's pages readable and is not written
        // meanwhile (contract above); `dst` is a distinct, exclusively borrowed buffer.
        unsafe { ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copy slot `from` into slot `to`.
    ///
    /// # Safety
    /// `to` is owned exclusively and at home, as for [`Pool::slot_mut`]; nobody writes
    /// `from` during the call, as for [`Pool::slot`].
    pub(crate) unsafe fn copy(&self, from: usize, to: usize) {
        assert_ne!(from, to);
        let (s, d) = (self.bytes_addr(from), self.bytes_addr(to));
        // SAFETY: distinct slots do not overlap; both inside the pool mapping; the
        // ownership contract above.
        unsafe { ptr::copy_nonoverlapping(s as *const u8, d as *mut u8, self.slot_size) }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the pool is dropped with its VirtMem, after every mapping and handle
        // (they hold the VirtMem alive), so no slice of it is alive.
        let _ = unsafe { munmap(self.base as *mut _, self.slot_size * self.cap) };
        // SAFETY: as above, for the anonymous homes.
        let _ = unsafe { munmap(self.abase as *mut _, self.slot_size * self.cap) };
        // SAFETY: the spare block is ours and never referred to.
        let _ = unsafe { munmap(self.spare as *mut _, self.slot_size) };
    }
}
