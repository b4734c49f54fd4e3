//! Thin wrappers over the memory system calls `virtmem` needs: reserving address space,
//! the RAM pool (anonymous huge-page slots, and a memfd for pages mapped at several
//! addresses, see [`Pool`]), mapping a page slot at a view address or moving its
//! page-table entries there and back (`mremap` with `MREMAP_DONTUNMAP`, Linux 5.13 or
//! later for shared mappings; where it fails a memfd slot is mapped a second time
//! instead, which is correct but counts the block twice in RSS), changing protection.
//! The pool lives in the child module `pool.rs`.
//!
//! Every raw pointer that leaves this file is an address (`usize`); the only slices made
//! here are of the pool mappings, under the contract stated on [`Pool::slot_mut`] and
//! [`Pool::slot`]. A function whose soundness rests on its caller — an address that must
//! be a block of a live view reservation, a slot the caller must own — is an `unsafe fn`
//! whose `# Safety` section states that contract; each call site says, in a `// SAFETY:`
//! comment, which invariant of `state.rs` makes it hold there. A failure that would
//! leave the mappings inconsistent stops the process through `fault::fatal`.
#![allow(unsafe_code)]

use std::ptr;

use rustix::mm::{
    madvise, mmap, mmap_anonymous, mprotect, mremap_fixed, munmap, Advice, MapFlags, MprotectFlags,
    MremapFlags, ProtFlags,
};

use crate::{Error, Result};

#[path = "pool.rs"]
mod pool;
pub(crate) use pool::Pool;

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

pub(super) const HUGE: usize = 2 << 20;

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
/// # Safety
/// `[addr, addr+len)` is a range returned by [`reserve`] that no live reference points
/// into and in which no fault will be served any more (it was unregistered and
/// forgotten by the state machine first).
pub(crate) unsafe fn release_range(addr: usize, len: usize) {
    // SAFETY: by the contract above the range is ours, unreferenced and unregistered.
    let _ = unsafe { munmap(addr as *mut _, len) };
}

/// Turn `[addr, addr+len)` of a reserved range back into `PROT_NONE` reserved space,
/// dropping whatever page was mapped there (the next access faults).
///
/// # Safety
/// The range lies inside the reservation of a live view (invariant 5 in `state.rs`),
/// and the state machine keeps what its blocks show: the next access faults and is
/// served the blocks' current content, so a reference into the view (user-visible
/// memory) reads the same bytes after the call as before.
pub(crate) unsafe fn reset(addr: usize, len: usize) -> Result<()> {
    // SAFETY: MAP_FIXED over a range inside our own reservation replaces only our
    // mapping there (the contract above).
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
///
/// # Safety
/// `addr` is a block of `bs` bytes of a live view reservation whose current mapping the
/// caller lets go (invariant 5), and `src`'s bytes need no check or were checked
/// (invariant 10).
pub(crate) unsafe fn map_file(
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
        // SAFETY: MAP_FIXED over a block of our own reservation (the contract above)
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
    // SAFETY: a block of a live view reservation that the caller maps (its contract).
    unsafe { map_zero_tail(addr, bs, len, prot) }?;
    if let Some(pages) = &src.pages {
        // SAFETY: the block is mapped privately from the file just above, PROT_NONE and
        // so shown to no reader yet; the chain's page indexes lie inside the block.
        unsafe { overlay_pages(addr, pages) }?;
        // SAFETY: the block's own file mapping, made above: read-only now.
        unsafe { protect(addr, bs, false) }?;
    }
    Ok(())
}

/// The bytes of `src` with a duplicate of its descriptor of their own: a slice that
/// keeps the open file (not `src.keep`, which may hold a whole database) and carries
/// nothing to check or overlay. None if the descriptor cannot be duplicated.
pub(crate) fn detached(src: &crate::bigfile::FileSlice) -> Option<crate::bigfile::FileSlice> {
    // SAFETY: `src.fd` is open while `src.keep` lives (FileSlice contract), and `src`
    // is borrowed for this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(src.fd) };
    let own = fd.try_clone_to_owned().ok()?;
    Some(crate::bigfile::FileSlice {
        fd: std::os::fd::AsRawFd::as_raw_fd(&own),
        keep: std::sync::Arc::new(own),
        offset: src.offset,
        len: src.len,
        pages: None,
        crc: None,
        page_crcs: None,
        cache_file: None,
    })
}

/// `cachestat(2)`'s number: 451 on every architecture (the syscall table is unified
/// from 424 on); `libc` does not name it for x86-64.
const SYS_CACHESTAT: libc::c_long = 451;

/// Is every page of the file bytes `src` describes in the page cache? False when it
/// cannot tell (see [`cached_pages`]).
pub(crate) fn resident(src: &crate::bigfile::FileSlice) -> bool {
    // `cachestat` counts the kernel's pages.
    let page = page_size() as u64;
    let pages = (src.offset + src.len as u64).div_ceil(page) - src.offset / page;
    cached_pages(src).is_some_and(|n| n >= pages)
}

/// How many pages of the file bytes `src` describes the page cache holds, by
/// `cachestat(2)` (Linux 6.5), which reads the page cache's index and neither maps
/// nor reads the file. None on an older kernel or an error.
fn cached_pages(src: &crate::bigfile::FileSlice) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range {
        off: src.offset,
        len: src.len as u64,
    };
    let mut st = Stat::default();
    // SAFETY: `cachestat(fd, range, cstat, flags)` reads `range` and writes `st`, both
    // live locals of the layouts the kernel defines (`struct cachestat_range`,
    // `struct cachestat`); `src.fd` is open while `src.keep` lives (FileSlice contract).
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            src.fd,
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    (r == 0).then_some(st.nr_cache)
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
///
/// # Safety
/// `[addr, addr + bs)` is a block of a live view reservation that the caller is mapping:
/// nothing there is to be kept.
unsafe fn map_zero_tail(addr: usize, bs: usize, len: usize, prot: ProtFlags) -> Result<()> {
    if len < bs {
        // SAFETY: MAP_FIXED inside a block of our own reservation (the contract above).
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
/// `bs` bytes: the file bytes `PROT_NONE` but for the checked window `[at, at + len)`,
/// readable, then zeros for the trimmed tail. Mapped `PROT_NONE` first, so no unchecked
/// byte is ever readable.
///
/// # Safety
/// `addr` is a block of `bs` bytes of a live view reservation that shows nothing
/// (invariant 5), and the window `[at, at + len)` of `src` was checked against its page
/// CRCs.
pub(crate) unsafe fn map_file_window(
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
        // SAFETY: MAP_FIXED over a block of our own reservation (the contract above)
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
    // SAFETY: the block of a live view reservation being mapped (the contract above).
    unsafe { map_zero_tail(addr, bs, flen, ProtFlags::READ) }?;
    // SAFETY: `src` was mapped at `addr` just above, and the window is checked (the
    // contract above).
    unsafe { show_window(addr, src, at, len) }
}

/// Make the checked window `[at, at + len)` of a partially checked file block mapped at
/// view block `addr` readable (invariant 15; the part past the file bytes already is).
///
/// # Safety
/// `src` is mapped at view block `addr` of a live reservation (`map_file_window`), and
/// the window's bytes were checked against their page CRCs.
pub(crate) unsafe fn show_window(
    addr: usize,
    src: &crate::bigfile::FileSlice,
    at: usize,
    len: usize,
) -> Result<()> {
    let len = len.min(src.len.saturating_sub(at));
    if len == 0 {
        return Ok(());
    }
    // SAFETY: a window of the view block's own file mapping (the contract above),
    // made read-only: never writable.
    unsafe { protect(addr + at, len, false) }
}

/// A file block mapped read-only at a private address no view shows: its bytes can be
/// checked (CRC) there, filling its page tables, before [`Staged::move_into`] moves the
/// same mapping — entries included, a page table at a time where both addresses are
/// 2 MiB aligned — into a view block. So a block is read from the page cache once and
/// its entries are made once, and a view never shows bytes that were not checked.
/// Dropped unmoved, it is unmapped. The readahead thread stages in an [`Arena`]
/// instead, whose slots are unmapped eight at a time: its checked blocks are mapped
/// into the view anew ([`Staged::show`]), so that moving or unmapping each does not
/// interrupt the scanning core.
///
/// The entries are made by the reads' own page faults (the kernel maps 16 pages per
/// fault around the faulting one), not by `MAP_POPULATE`: page faults take the VMA's
/// own lock, while populating holds the process's `mmap_lock` for the whole block and
/// so stalls every `mmap`/`mprotect` of the other threads (the scan's own faults) for
/// as long.
pub(crate) struct Staged {
    addr: usize,
    len: usize,
    /// In a slot of this thread's [`Arena`].
    arena: bool,
}

/// Slots of a thread's staging arena: 16 MiB of 2 MiB blocks.
const ARENA_SLOTS: usize = 8;

/// A thread's staging arena (the readahead thread's, [`use_arena`]): a reservation of
/// [`ARENA_SLOTS`] 2 MiB slots, used in order. A block checked in a slot is shown by a
/// new mapping of the file ([`Staged::show`]) and its staging mapping stays until the
/// slots are recycled all at once ([`arena_recycle`]: one `mmap` over the used slots).
/// Unmapping a mapping a thread has touched interrupts every other core running the
/// process to flush its TLB, as moving it into a view does (`Staged::move_into`): once
/// per eight blocks instead of once per block. The slots' file pages stay mapped (and
/// counted in the RSS, at most 16 MiB) until then; the readahead thread recycles
/// before it waits for work, so nothing stays mapped while it is idle.
struct Arena {
    base: usize,
    /// Slots used since the last recycle.
    next: usize,
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the arena is this thread's own reservation, and the thread is
        // exiting: nothing refers to its slots.
        let _ = unsafe { munmap(self.base as *mut _, ARENA_SLOTS * HUGE) };
    }
}

thread_local! {
    /// This thread stages 2 MiB blocks in an arena ([`use_arena`]).
    static USE_ARENA: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static ARENA: std::cell::RefCell<Option<Arena>> = const { std::cell::RefCell::new(None) };
}

/// Stage this thread's 2 MiB blocks in an arena (see [`Arena`]).
pub(crate) fn use_arena() {
    USE_ARENA.with(|u| u.set(true));
}

/// Unmap every slot of this thread's arena used since the last recycle, in one call.
pub(crate) fn arena_recycle() {
    ARENA.with(|a| {
        if let Some(a) = a.borrow_mut().as_mut().filter(|a| a.next > 0) {
            // SAFETY: the used slots of this thread's own reservation hold staging
            // mappings that were shown or dropped: nothing refers to them.
            let r = unsafe {
                mmap_anonymous(
                    a.base as *mut _,
                    a.next * HUGE,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
                )
            };
            if r.is_ok() {
                a.next = 0;
            }
        }
    });
}

/// The next free slot of this thread's arena (recycled first when all are used), or
/// None when this thread has none.
fn arena_slot() -> Option<usize> {
    if !USE_ARENA.with(|u| u.get()) {
        return None;
    }
    if ARENA.with(|a| a.borrow().as_ref().is_some_and(|a| a.next == ARENA_SLOTS)) {
        arena_recycle();
    }
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        if a.is_none() {
            *a = Some(Arena {
                base: reserve(ARENA_SLOTS * HUGE, HUGE).ok()?,
                next: 0,
            });
        }
        let a = a.as_mut()?;
        (a.next < ARENA_SLOTS).then(|| {
            a.next += 1;
            a.base + (a.next - 1) * HUGE
        })
    })
}

impl Staged {
    /// Map `src`'s bytes at a new address aligned like a view block of `bs` bytes.
    pub(crate) fn new(src: &crate::bigfile::FileSlice, bs: usize) -> Result<Staged> {
        let len = src.len.min(bs);
        if len == 0 {
            return Ok(Staged {
                addr: 0,
                len: 0,
                arena: false,
            });
        }
        let slot = if bs == HUGE { arena_slot() } else { None };
        let arena = slot.is_some();
        let addr = match slot {
            Some(a) => a,
            None => reserve(len, align_for(bs))?,
        };
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
            if !arena {
                // SAFETY: our own reservation, unreferenced.
                let _ = unsafe { munmap(addr as *mut _, len) };
            }
            return Err(io(e, "mapping a block of the log file"));
        }
        want_huge_folios(addr, len);
        Ok(Staged { addr, len, arena })
    }

    /// In a slot of this thread's [`Arena`]: shown by [`Staged::show`], not moved.
    pub(crate) fn in_arena(&self) -> bool {
        self.arena
    }

    /// Map `src` (the staged bytes, checked) at view block `addr` of `bs` bytes straight
    /// from the file, page tables filled, and leave the staging mapping to the arena's
    /// next recycle. The view shows the same page-cache pages the check read: committed
    /// log bytes never change (storage-format.md).
    ///
    /// # Safety
    /// As [`Staged::move_into`].
    pub(crate) unsafe fn show(mut self, addr: usize, bs: usize, src: &crate::bigfile::FileSlice) -> Result<()> {
        self.len = 0;
        // SAFETY: the caller's contract.
        unsafe { map_file(addr, bs, src, true) }
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

    /// Move the mapping to view block `addr` of `bs` bytes, then zeros for the trimmed
    /// tail. The view block's previous contents are replaced atomically.
    ///
    /// # Safety
    /// `addr` is a block of `bs` bytes of a live view reservation that shows nothing
    /// (invariant 5), and the staged bytes were checked if they need a check
    /// (invariant 10).
    pub(crate) unsafe fn move_into(mut self, addr: usize, bs: usize) -> Result<()> {
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
        // SAFETY: the view block being mapped (the contract above).
        unsafe { map_zero_tail(addr, bs, len, ProtFlags::READ) }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.len > 0 && self.arena {
            // Back to reserved space (a failed check; rare), the slot itself used.
            // SAFETY: our arena slot, unreferenced (`bytes` borrowed self).
            let _ = unsafe {
                mmap_anonymous(
                    self.addr as *mut _,
                    HUGE,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
                )
            };
        } else if self.len > 0 {
            // SAFETY: the staging mapping is ours and `bytes` slices borrowed `self`.
            let _ = unsafe { munmap(self.addr as *mut _, self.len) };
        }
    }
}

/// Readahead's marker (see `readahead.rs`): make the first page of a view block that
/// shows a file block `PROT_NONE` (`armed`) or readable again, so that a scanner's first
/// touch of the block faults once and tells where it is.
///
/// # Safety
/// `addr` is the start of a view block of a live reservation that maps a file block
/// read-only (invariant 14 in `state.rs`).
pub(crate) unsafe fn arm(addr: usize, armed: bool) -> Result<()> {
    let f = if armed {
        MprotectFlags::empty()
    } else {
        MprotectFlags::READ
    };
    // SAFETY: the page is the start of a view block that maps a read-only file block
    // (the contract above); protection changes move nothing.
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

/// Report a failed memory call that leaves the mappings inconsistent, and abort
/// ([`fatal`](super::fault::fatal): no allocation, no lock).
fn fatal_os(what: &str, e: &dyn std::fmt::Display) -> ! {
    super::fault::fatal(format_args!("{what}: {e}"))
}

/// Change the protection of a mapped block of a view (or of a pool slot's home).
///
/// # Safety
/// `[addr, addr+len)` lies in a mapping of virtmem's own that has a page mapped there: a
/// block of a live view reservation, or a pool slot's home. Made writable only where the
/// state machine lets the bytes be written: a `Dirty` block's view (invariant 5), a page
/// of a `PartDirty` block (invariant 12), a slot's home while it is at home
/// (invariant 9).
pub(crate) unsafe fn protect(addr: usize, len: usize, writable: bool) -> Result<()> {
    let f = if writable {
        MprotectFlags::READ | MprotectFlags::WRITE
    } else {
        MprotectFlags::READ
    };
    // SAFETY: a range of our own mappings (the contract above); protection changes do
    // not move memory.
    unsafe { mprotect(addr as *mut _, len, f) }.map_err(|e| io(e, "mprotect"))
}

/// Copy `dst.len()` bytes of a view at `addr` into `dst`.
///
/// # Safety
/// `[addr, addr+dst.len())` lies in a block of a live reservation that is mapped
/// readable there (a partly dirty block's file mapping and its written pages, or a
/// clean RAM page moved there, read-only), and the caller holds the VM lock, so the
/// block is not remapped meanwhile; nobody writes the bytes during the call (a view
/// page that was writable is write-protected first).
pub(crate) unsafe fn copy_from_view(addr: usize, dst: &mut [u8]) {
    // SAFETY: readable mapped bytes by the contract above; `dst` is a distinct Rust
    // buffer, so the ranges do not overlap.
    unsafe { ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) }
}

/// Write 4 KiB pages over a block of a view that maps a file privately (`map_file`):
/// each page is made writable, written (the kernel copies just that page), and made
/// read-only again.
///
/// # Safety
/// `addr` is a view block of a live reservation that maps a file privately and that
/// no reader is shown yet (`PROT_NONE`, the VM lock held); each page index lies inside
/// the block.
unsafe fn overlay_pages(addr: usize, pages: &[(u32, Box<[u8]>)]) -> Result<()> {
    for (i, bytes) in pages {
        let at = addr + *i as usize * bytes.len();
        // SAFETY: a page of the block's private file mapping (the contract above),
        // written only by the copy below.
        unsafe { protect(at, bytes.len(), true) }?;
        // SAFETY: [at, at+len) is one page of the caller's view block, mapped writable
        // just above; `bytes` is a distinct Rust buffer; no reference into the view
        // block exists while the VM lock is held and the block is being mapped.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
        // SAFETY: the same page, read-only again.
        unsafe { protect(at, bytes.len(), false) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn resident_tells_written_bytes_from_a_hole() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&vec![7u8; 2 << 20], 0).unwrap();
        f.set_len(8 << 20).unwrap();
        let slice = |offset: u64| crate::bigfile::FileSlice {
            fd: std::os::fd::AsRawFd::as_raw_fd(&f),
            keep: std::sync::Arc::new(()),
            offset,
            len: 2 << 20,
            pages: None,
            crc: None,
            page_crcs: None,
            cache_file: None,
        };
        if cached_pages(&slice(0)).is_none() {
            eprintln!("skipped: this kernel has no cachestat(2)");
            return;
        }
        // Just written: in the page cache. A hole nobody read: not.
        assert!(resident(&slice(0)));
        assert_eq!(cached_pages(&slice(4 << 20)), Some(0));
        assert!(!resident(&slice(4 << 20)));
        // Half in the page cache is not resident.
        assert!(!resident(&crate::bigfile::FileSlice {
            len: 4 << 20,
            ..slice(0)
        }));
    }
}
