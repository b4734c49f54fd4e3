//! Thin wrappers over the memory system calls `virtmem` needs: reserving address space,
//! the RAM pool (anonymous huge-page slots, and a memfd for pages mapped at several
//! addresses, see [`Pool`]), mapping a page slot at a view address or moving its
//! page-table entries there and back (`mremap` with `MREMAP_DONTUNMAP`, Linux 5.13 or
//! later for shared mappings; where it fails a memfd slot is mapped a second time
//! instead, which is correct but counts the block twice in RSS), changing protection.
//! Every raw pointer that leaves this file is an address (`usize`); the only slices made
//! here are of the pool mappings, under the contract stated on [`Pool::slot_mut`] and
//! [`Pool::slot`].
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{
    madvise, mmap, mmap_anonymous, mprotect, mremap_fixed, munmap, Advice, MapFlags, MprotectFlags,
    MremapFlags, ProtFlags,
};

use crate::{Error, Result};

/// The OS page size.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

fn io(e: rustix::io::Errno, what: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::Error::from(e).kind(),
        format!("{what}: {e}"),
    ))
}

/// Alignment of reserved ranges and of the RAM pool for a block size: 2 MiB for blocks
/// of 2 MiB or more, so that where the kernel backs the memfd with huge pages
/// (`shmem_enabled` = advise/within_size/always) a block is mapped by one page-table
/// entry; the page size otherwise.
pub(crate) fn align_for(block_size: usize) -> usize {
    if block_size >= HUGE {
        HUGE
    } else {
        page_size()
    }
}

/// `MREMAP_DONTUNMAP` (value 4, Linux 5.7). rustix defines the flag only in its
/// `linux_raw` backend; under Miri (or with `--cfg rustix_use_libc`) rustix uses its libc
/// backend, which passes the bits through unchanged but lacks the constant, so the crate
/// did not compile there. Same bits either way.
const DONTUNMAP: MremapFlags = MremapFlags::from_bits_retain(libc::MREMAP_DONTUNMAP as _);

const HUGE: usize = 2 << 20;

/// Reserve `len` bytes of address space aligned to `align` (a power of two multiple of
/// the page size), `PROT_NONE`, not inherited by `fork` children. Returns the start.
pub(crate) fn reserve(len: usize, align: usize) -> Result<usize> {
    let extra = align - page_size().min(align);
    let total = len
        .checked_add(extra)
        .ok_or_else(|| Error::OutOfRange("reservation size overflows".into()))?;
    // SAFETY: a new anonymous mapping at an address the kernel chooses aliases nothing.
    let p = unsafe {
        mmap_anonymous(
            ptr::null_mut(),
            total,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }
    .map_err(|e| io(e, "reserving address space"))?;
    let raw = p as usize;
    let addr = (raw + align - 1) & !(align - 1);
    // Give back the unaligned head and the tail beyond len.
    if addr > raw {
        // SAFETY: [raw, addr) is part of the mapping we just made, unreferenced.
        let _ = unsafe { munmap(raw as *mut _, addr - raw) };
    }
    let tail = raw + total - (addr + len);
    if tail > 0 {
        // SAFETY: [addr+len, raw+total) is part of the mapping we just made.
        let _ = unsafe { munmap((addr + len) as *mut _, tail) };
    }
    if let Err(e) = dont_fork(addr, len) {
        // SAFETY: we just mapped [addr, addr+len) and nothing refers to it yet.
        let _ = unsafe { munmap(addr as *mut _, len) };
        return Err(e);
    }
    Ok(addr)
}

fn dont_fork(addr: usize, len: usize) -> Result<()> {
    // SAFETY: madvise(DONTFORK) changes only what fork copies; the range is ours.
    unsafe { madvise(addr as *mut _, len, Advice::LinuxDontFork) }
        .map_err(|e| io(e, "madvise(MADV_DONTFORK)"))
}

/// Release a reserved range.
///
/// Contract (held by `Mapping`'s drop, the only caller): `[addr, addr+len)` is a range
/// returned by [`reserve`] that no live reference points into (views borrow their
/// mapping, so they are gone when it is dropped) and no fault will be served in any
/// more (it was unregistered and forgotten by the state machine first).
pub(crate) fn release_range(addr: usize, len: usize) {
    // SAFETY: by the contract above the range is ours, unreferenced and unregistered.
    let _ = unsafe { munmap(addr as *mut _, len) };
}

/// Turn `[addr, addr+len)` of a reserved range back into `PROT_NONE` reserved space,
/// dropping whatever page was mapped there (the next access faults).
///
/// Memory-safety rests on the caller: the range lies inside a reserved range owned by a
/// live mapping (checked by the VM state machine, invariant 5 in `state.rs`). No Rust
/// reference can point into a view's bytes across this call without the view being
/// user-visible memory, whose contents we are allowed to take away as a fault would.
pub(crate) fn reset(addr: usize, len: usize) -> Result<()> {
    // SAFETY: MAP_FIXED over a range inside our own reservation replaces only our
    // mapping (the caller guarantees the range is inside a live reservation).
    unsafe {
        mmap_anonymous(
            addr as *mut _,
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
        )
    }
    .map_err(|e| io(e, "resetting a view to PROT_NONE"))?;
    dont_fork(addr, len)
}

/// Map a clean block straight from a file at view address `addr` (a block of `bs`
/// bytes of a live reservation): `src.len` bytes of the file read-only and private
/// (`MAP_PRIVATE | PROT_READ`: the page cache's pages, shared with every process that
/// maps or reads them), then anonymous read-only zero pages for the trimmed tail.
/// `populate`: fill the page tables at once (a scan reads the whole block) instead of
/// leaving them to the kernel's fault-around (a random read touches a page or two).
pub(crate) fn map_file(
    addr: usize,
    bs: usize,
    src: &crate::bigfile::FileSlice,
    populate: bool,
) -> Result<()> {
    let len = src.len.min(bs);
    // A delta chain's pages go over the mapping while the block is still PROT_NONE, so
    // that no thread reads the base's bytes where a page replaces them (a concurrent
    // access faults and waits for the VM lock, held by the caller).
    let prot = if src.pages.is_some() {
        ProtFlags::empty()
    } else {
        ProtFlags::READ
    };
    if len > 0 {
        // SAFETY: `src.fd` is open while `src.keep` lives (FileSlice contract).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src.fd) };
        let flags = if populate && src.pages.is_none() {
            MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::POPULATE
        } else {
            MapFlags::PRIVATE | MapFlags::FIXED
        };
        // SAFETY: MAP_FIXED over a block of our own reservation (caller's contract)
        // replaces only our own mapping there.
        unsafe {
            mmap(
                addr as *mut _,
                len,
                prot,
                flags & !MapFlags::POPULATE,
                fd,
                src.offset,
            )
        }
        .map_err(|e| io(e, "mapping a block of the log file into a view"))?;
        want_huge_folios(addr, len);
        if flags.contains(MapFlags::POPULATE) {
            populate_read(addr, len);
        }
    }
    map_zero_tail(addr, bs, len, prot)?;
    if let Some(pages) = &src.pages {
        overlay_pages(addr, pages)?;
        protect(addr, bs, false)?;
    }
    Ok(())
}

/// Ask for 2 MiB page-cache folios where a file mapping of `len` bytes at `addr` reads
/// the file from the disk (`MADV_HUGEPAGE`, with `MADV_RANDOM`): a read fault that misses the page cache
/// then reads the 2 MiB around it into one folio, which the kernel maps with one
/// page-table entry when the mapping and the file offset are congruent modulo 2 MiB
/// (format version 4, storage-format.md §2.8). Without it, a mapping of 2 MiB reads a
/// cold file in small folios, which stay small for every later mapping of those bytes.
/// Best effort: a kernel without transparent huge pages refuses it, harmlessly.
fn want_huge_folios(addr: usize, len: usize) {
    if len >= HUGE {
        // SAFETY: advice on a mapping the caller just made; it changes no contents.
        let _ = unsafe { madvise(addr as *mut _, len, Advice::LinuxHugepage) };
        // A miss then reads its own 2 MiB only: without this the kernel also reads the
        // 2 MiB after it, which in a version-4 file is the next record's header and
        // the hole before its payload (zero folios, no data). Measured on a cold 1 GiB
        // scan: 1.26–1.63 GB/s with it, 0.44–0.78 GB/s without (docs/verification.md).
        // SAFETY: as above.
        let _ = unsafe { madvise(addr as *mut _, len, Advice::Random) };
    }
}

/// Fill the page tables of the file mapping `[addr, addr + len)` (read faults, with the
/// folios `want_huge_folios` asked for): `MADV_POPULATE_READ` (Linux 5.14).
fn populate_read(addr: usize, len: usize) {
    // SAFETY: the range is a readable file mapping the caller just made; populating
    // reads, it changes no contents.
    let _ = unsafe { madvise(addr as *mut _, len, Advice::LinuxPopulateRead) };
}

/// Anonymous zero pages (protection `prot`) over `[addr + len, addr + bs)` of a view block, then
/// the whole block not inherited by `fork` children.
fn map_zero_tail(addr: usize, bs: usize, len: usize, prot: ProtFlags) -> Result<()> {
    if len < bs {
        // SAFETY: MAP_FIXED inside a block of our own reservation (caller's contract).
        unsafe {
            mmap_anonymous(
                (addr + len) as *mut _,
                bs - len,
                prot,
                MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
            )
        }
        .map_err(|e| io(e, "mapping the zero tail of a file block into a view"))?;
    }
    dont_fork(addr, bs)
}

/// Check pages `[at, at + len)` (page-aligned, within `src.len`) of a file block
/// against `src.page_crcs`, read from the file (the file's committed bytes never
/// change, so a view mapping them later shows the same bytes). A mismatch, or no page
/// CRCs, is `Corruption`.
pub(crate) fn check_file_pages(
    src: &crate::bigfile::FileSlice,
    at: usize,
    len: usize,
) -> Result<()> {
    let pg = crate::bigfile::PAGE;
    let crcs = src
        .page_crcs
        .as_deref()
        .ok_or_else(|| Error::corruption(src.offset, "no page CRCs to check pages by"))?;
    let len = len.min(src.len.saturating_sub(at));
    if len == 0 {
        return Ok(());
    }
    if at % pg != 0 || crcs.len() < (at + len).div_ceil(pg) {
        return Err(Error::corruption(
            src.offset,
            format!("{} page CRCs for bytes {at}..{}", crcs.len(), at + len),
        ));
    }
    // A copy from the page cache (the pages a view maps next): cheaper for a few
    // pages than a mapping of their own, made and torn down.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let bad = BUF.with(|b| -> Result<Option<usize>> {
        let mut b = b.borrow_mut();
        b.resize(len, 0);
        // SAFETY: `src.fd` is open while `src.keep` lives (FileSlice contract).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src.fd) };
        let mut done = 0;
        while done < len {
            let n = rustix::io::pread(fd, &mut b[done..len], src.offset + (at + done) as u64)
                .map_err(|e| io(e, "reading pages of the log file to check their CRCs"))?;
            if n == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the log file is shorter than a block mapped from it",
                )));
            }
            done += n;
        }
        Ok(crate::verify::check_pages(&b[..len], &crcs[at / pg..]))
    })?;
    match bad {
        None => Ok(()),
        Some(i) => Err(Error::corruption(
            src.offset + (at + i * pg) as u64,
            format!("data CRC mismatch in page {} of a raw block", at / pg + i),
        )),
    }
}

/// Map a partially checked file block (`state.rs` invariant 15) at view block `addr` of
/// `bs` bytes (showing nothing: caller's contract, invariant 5): the file bytes
/// `PROT_NONE` but for the checked window `[at, at + len)`, readable, then zeros for the
/// trimmed tail. Mapped `PROT_NONE` first, so no unchecked byte is ever readable.
pub(crate) fn map_file_window(
    addr: usize,
    bs: usize,
    src: &crate::bigfile::FileSlice,
    at: usize,
    len: usize,
) -> Result<()> {
    let flen = src.len.min(bs);
    if flen > 0 {
        // SAFETY: `src.fd` is open while `src.keep` lives (FileSlice contract).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src.fd) };
        // SAFETY: MAP_FIXED over a block of our own reservation (caller's contract)
        // replaces only our own mapping there.
        unsafe {
            mmap(
                addr as *mut _,
                flen,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::FIXED,
                fd,
                src.offset,
            )
        }
        .map_err(|e| io(e, "mapping a block of the log file into a view"))?;
    }
    map_zero_tail(addr, bs, flen, ProtFlags::READ)?;
    show_window(addr, src, at, len)
}

/// Make the checked window `[at, at + len)` of a partially checked file block mapped at
/// view block `addr` readable (invariant 15; the part past the file bytes already is).
pub(crate) fn show_window(
    addr: usize,
    src: &crate::bigfile::FileSlice,
    at: usize,
    len: usize,
) -> Result<()> {
    let len = len.min(src.len.saturating_sub(at));
    if len == 0 {
        return Ok(());
    }
    protect(addr + at, len, false)
}

/// A file block mapped read-only at a private address no view shows: its bytes can be
/// checked (CRC) there, filling its page tables, before [`Staged::move_into`] moves the
/// same mapping — entries included, a page table at a time where both addresses are
/// 2 MiB aligned — into a view block. So a block is read from the page cache once and
/// its entries are made once, and a view never shows bytes that were not checked.
/// Dropped unmoved, it is unmapped.
///
/// The entries are made by the reads' own page faults (the kernel maps 16 pages per
/// fault around the faulting one), not by `MAP_POPULATE`: page faults take the VMA's
/// own lock, while populating holds the process's `mmap_lock` for the whole block and
/// so stalls every `mmap`/`mprotect` of the other threads (the scan's own faults) for
/// as long.
pub(crate) struct Staged {
    addr: usize,
    len: usize,
}

impl Staged {
    /// Map `src`'s bytes at a new address aligned like a view block of `bs` bytes.
    pub(crate) fn new(src: &crate::bigfile::FileSlice, bs: usize) -> Result<Staged> {
        let len = src.len.min(bs);
        if len == 0 {
            return Ok(Staged { addr: 0, len: 0 });
        }
        let addr = reserve(len, align_for(bs))?;
        // SAFETY: `src.fd` is open while `src.keep` lives (FileSlice contract).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src.fd) };
        // SAFETY: MAP_FIXED over the range we just reserved, which nothing refers to.
        let r = unsafe {
            mmap(
                addr as *mut _,
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE | MapFlags::FIXED,
                fd,
                src.offset,
            )
        };
        if let Err(e) = r {
            // SAFETY: our own reservation, unreferenced.
            let _ = unsafe { munmap(addr as *mut _, len) };
            return Err(io(e, "mapping a block of the log file"));
        }
        want_huge_folios(addr, len);
        Ok(Staged { addr, len })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `[addr, addr+len)` maps readable file bytes until `self` is dropped or
        // moved (both take `self`, so the slice cannot outlive the mapping); committed
        // log bytes are never truncated (storage-format.md), so no access faults with
        // SIGBUS.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// Move the mapping to view block `addr` of `bs` bytes (a block of a live
    /// reservation showing nothing: caller's contract, invariant 5), then zeros for the
    /// trimmed tail. The view block's previous contents are replaced atomically.
    pub(crate) fn move_into(mut self, addr: usize, bs: usize) -> Result<()> {
        let len = std::mem::take(&mut self.len);
        if len > 0 {
            // SAFETY: [self.addr, +len) is our staging mapping, which nothing refers to
            // (`bytes` borrows self, consumed here); [addr, +len) is inside a block of
            // our own reservation, whose PROT_NONE space MREMAP_FIXED replaces. The
            // staging range is left unmapped: it is ours no more.
            let r = unsafe {
                mremap_fixed(
                    self.addr as *mut _,
                    len,
                    len,
                    MremapFlags::MAYMOVE,
                    addr as *mut _,
                )
            };
            if let Err(e) = r {
                self.len = len; // unmapped by drop
                return Err(io(e, "moving a block of the log file into a view"));
            }
        }
        map_zero_tail(addr, bs, len, ProtFlags::READ)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the staging mapping is ours and `bytes` slices borrowed `self`.
            let _ = unsafe { munmap(self.addr as *mut _, self.len) };
        }
    }
}

/// Readahead's marker (see `readahead.rs`): make the first page of a view block that
/// shows a file block `PROT_NONE` (`armed`) or readable again, so that a scanner's first
/// touch of the block faults once and tells where it is.
pub(crate) fn arm(addr: usize, armed: bool) -> Result<()> {
    let f = if armed {
        MprotectFlags::empty()
    } else {
        MprotectFlags::READ
    };
    // SAFETY: the page is the start of a view block that maps a read-only file block
    // (caller's contract, invariant 14 in `state.rs`); protection changes move nothing.
    unsafe { mprotect(addr as *mut _, page_size(), f) }.map_err(|e| io(e, "mprotect"))
}

/// Fill `dst` (a block) with the block `src` describes: its file bytes, then zeros.
pub(crate) fn read_file_block(src: &crate::bigfile::FileSlice, dst: &mut [u8]) -> Result<()> {
    let len = src.len.min(dst.len());
    // SAFETY: `src.fd` is open while `src.keep` lives (FileSlice contract).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src.fd) };
    let mut done = 0;
    while done < len {
        let n = rustix::io::pread(fd, &mut dst[done..len], src.offset + done as u64)
            .map_err(|e| io(e, "reading a mapped block of the log file"))?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the log file is shorter than a block mapped from it",
            )));
        }
        done += n;
    }
    dst[len..].fill(0);
    Ok(())
}

/// Report a failed memory call that leaves the mappings inconsistent, and abort.
fn fatal_os(what: &str, e: &Error) -> ! {
    eprintln!("wdb: fatal: {what}: {e}");
    std::process::abort();
}

/// Change the protection of a mapped block of a view.
pub(crate) fn protect(addr: usize, len: usize, writable: bool) -> Result<()> {
    let f = if writable {
        MprotectFlags::READ | MprotectFlags::WRITE
    } else {
        MprotectFlags::READ
    };
    // SAFETY: the range is a block of a live reservation with a slot mapped there
    // (caller's contract, invariant 5); protection changes do not move memory.
    unsafe { mprotect(addr as *mut _, len, f) }.map_err(|e| io(e, "mprotect"))
}

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
    /// anonymous slot cannot be mapped twice: it is promoted first (caller's contract).
    pub(crate) fn map_at(&self, slot: usize, addr: usize, writable: bool) -> Result<()> {
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
        // SAFETY: MAP_FIXED over a block of our own reservation (caller's contract)
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
    pub(crate) fn move_to_view(&self, slot: usize, addr: usize, writable: bool) -> Result<()> {
        let home = self.addr(slot);
        if !writable {
            protect(home, self.slot_size, false)?;
        }
        // SAFETY: [home, home+slot_size) is the slot's part of our pool mapping (at home,
        // caller's state); [addr, addr+slot_size) is a block of our own reservation,
        // whose current contents (PROT_NONE space or another slot's mapping) MREMAP_FIXED
        // replaces. No slice of the slot is alive (the caller holds the VM lock and the
        // page is neither Loading nor Storing), and the home stays mapped.
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
                protect(home, self.slot_size, true)?;
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
    #[must_use]
    pub(crate) fn move_home(&self, slot: usize, addr: usize, writable: bool) -> bool {
        let home = self.addr(slot);
        let anon = self.is_anon(slot);
        if anon {
            // MREMAP_DONTUNMAP leaves a private anonymous source mapped but empty: another
            // thread reading the view block during the move would get zero pages, not
            // the block (a memfd source maps the same bytes again instead). So the view
            // block goes PROT_NONE first: a concurrent access faults and waits for the
            // VM lock, which the caller holds, and finds the block gone.
            // SAFETY: [addr, addr+slot_size) is a block of our own reservation holding
            // the slot's mapping (as below); a protection change moves nothing.
            let r = unsafe { mprotect(addr as *mut _, self.slot_size, MprotectFlags::empty()) };
            if let Err(e) = r {
                fatal_os(
                    "cannot protect a view block before moving its page home",
                    &io(e, "mprotect"),
                );
            }
        }
        // SAFETY: [addr, addr+slot_size) holds exactly the slot's mapping, moved there by
        // move_to_view (caller's state, invariant 9); [home, +slot_size) is the slot's
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
            fatal_os("cannot move a RAM page back to its pool", &io(e, "mremap"));
        }
        self.away[slot].store(false, Ordering::Release);
        if !anon {
            if let Err(e) = self.reset_view(addr) {
                fatal_os("cannot reset a view block to PROT_NONE", &e);
            }
        }
        if !writable || anon {
            if let Err(e) = protect(home, self.slot_size, true) {
                fatal_os("cannot make a RAM pool slot writable again", &e);
            }
        }
        anon
    }

    /// [`reset`] a view block of this pool's block size in one system call instead of
    /// two: a copy of the spare block's mapping is moved over it (`MREMAP_DONTUNMAP`
    /// leaves the spare in place), which is `PROT_NONE` reserved space not inherited by
    /// `fork`, as `reset` makes it, and merges with the reserved space around it.
    fn reset_view(&self, addr: usize) -> Result<()> {
        // SAFETY: [spare, +slot_size) is our own never-accessed PROT_NONE reservation;
        // [addr, +slot_size) is a block of a live reservation (caller's contract, as for
        // `reset`), whose current mapping MREMAP_FIXED replaces.
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
            Err(_) => reset(addr, self.slot_size),
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
    /// Caller's contract (the VM lock, invariant 3): no thread reads or writes the slot
    /// through its home during the call (it is neither `Loading` nor `Storing`); a
    /// writable view block is write-protected before the copy, so a user write waits in
    /// the fault handler for the VM lock. A failure after the copy would leave the view
    /// showing a stale copy: the process stops instead.
    pub(crate) fn promote(&self, slot: usize, view: Option<(usize, bool)>) -> bool {
        assert!(self.is_anon(slot), "promoting a memfd slot");
        let ahome = self.addr(slot);
        let mhome = self.base + slot * self.slot_size;
        let src = view.map_or(ahome, |v| v.0);
        if let Some((addr, true)) = view {
            // A writer of the view must not change the block behind the copy: it faults
            // (and waits for the VM lock) until the view maps the memfd copy, writable.
            // One entry to change for a huge page.
            if let Err(e) = protect(addr, self.slot_size, false) {
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
        if let Err(e) = protect(ahome, self.slot_size, true) {
            fatal_os("cannot make a RAM pool slot writable again", &e);
        }
        if self.move_to_view(slot, addr, writable).is_ok() {
            return true;
        }
        if let Err(e) = self.map_at(slot, addr, writable) {
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
    pub(crate) fn punch(&self, slot: usize) {
        let a = self.bytes_addr(slot);
        // MADV_REMOVE frees a memfd range's pages; DONTNEED frees private anonymous ones.
        let advice = if self.is_anon(slot) {
            Advice::LinuxDontNeed
        } else {
            Advice::LinuxRemove
        };
        // SAFETY: advice on our pool mapping of a slot that is free (caller's contract),
        // so no one reads or writes it.
        let _ = unsafe { madvise(a as *mut _, self.slot_size, advice) };
    }

    /// The bytes of a slot, writable.
    ///
    /// Contract (held by the state machine, invariant 3 in `state.rs`): the caller owns
    /// the slot exclusively — it is `Loading` (loader), or freshly allocated and not yet
    /// published (copy target) — so no other reference to these bytes exists and no
    /// view maps the slot writable; and the slot is at home (invariant 9), so its home
    /// is writable.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn slot_mut(&self, slot: usize) -> &mut [u8] {
        let a = self.bytes_addr(slot);
        // SAFETY: [a, a+slot_size) is inside the pool mapping, which lives as long as
        // `self`; exclusivity is the caller's contract above.
        unsafe { std::slice::from_raw_parts_mut(a as *mut u8, self.slot_size) }
    }

    /// The bytes of a slot, read-only.
    ///
    /// Contract (invariants 3 and 11): nobody writes the slot while the slice lives — it
    /// is clean (mapped read-only everywhere) or `Storing` (views write-protected
    /// first) — and an anonymous slot is at home (checked).
    pub(crate) fn slot(&self, slot: usize) -> &[u8] {
        let a = self.bytes_addr(slot);
        // SAFETY: inside the pool mapping; no concurrent writer by the contract above.
        unsafe { std::slice::from_raw_parts(a as *const u8, self.slot_size) }
    }

    /// Copy anonymous slot `slot`, moved to view address `addr`, into `dst` (its
    /// length at most the slot size).
    ///
    /// Contract (the VM lock, invariants 3 and 11): `move_to_view` put the slot at
    /// `addr` and it is still there, mapped readable, and nobody writes it during the
    /// call (its views are write-protected).
    pub(crate) fn copy_from_view(&self, slot: usize, addr: usize, dst: &mut [u8]) {
        assert!(self.is_away(slot) && dst.len() <= self.slot_size);
        // SAFETY: [addr, addr+len) maps the slot's pages readable and is not written
        // meanwhile (contract above); `dst` is a distinct, exclusively borrowed buffer.
        unsafe { ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copy slot `from` into slot `to` (`to` owned exclusively and at home, `from` not
    /// written and, if anonymous, at home).
    pub(crate) fn copy(&self, from: usize, to: usize) {
        assert_ne!(from, to);
        let (s, d) = (self.bytes_addr(from), self.bytes_addr(to));
        // SAFETY: distinct slots do not overlap; both inside the pool mapping; the
        // ownership contract is the one of `slot` / `slot_mut`.
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

/// Copy `dst.len()` bytes of a view at `addr` into `dst`.
///
/// Contract (held by the state machine, `subpage.rs`): `[addr, addr+dst.len())` lies in
/// a block of a live reservation that is mapped readable there (a partly dirty block's
/// file mapping and its written pages, or a clean RAM page moved there, read-only),
/// and the caller holds the VM lock, so the block
/// is not remapped meanwhile; a view may write the bytes concurrently only through a
/// page the caller has write-protected first.
pub(crate) fn copy_from_view(addr: usize, dst: &mut [u8]) {
    // SAFETY: readable mapped bytes by the contract above; `dst` is a distinct Rust
    // buffer, so the ranges do not overlap.
    unsafe { ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) }
}

/// Write 4 KiB pages over a block of a view that maps a file privately (`map_file`):
/// each page is made writable, written (the kernel copies just that page), and made
/// read-only again. `addr` is the block's view address (a block of a live reservation,
/// caller's contract); each page index lies inside the block.
pub(crate) fn overlay_pages(addr: usize, pages: &[(u32, Box<[u8]>)]) -> Result<()> {
    for (i, bytes) in pages {
        let at = addr + *i as usize * bytes.len();
        protect(at, bytes.len(), true)?;
        // SAFETY: [at, at+len) is one page of the caller's view block, mapped writable
        // just above; `bytes` is a distinct Rust buffer; no reference into the view
        // block exists while the VM lock is held and the block is being mapped.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
        protect(at, bytes.len(), false)?;
    }
    Ok(())
}
