//! The `BigFile` seam: a file of fixed-size blocks, the only thing `virtmem` knows about
//! where data comes from and goes to. The db layer adapts a store snapshot to it; tests
//! use [`MemFile`], an in-memory fake that counts loads and stores and injects errors.
//!
//! The seam is a core trait plus capability traits:
//!
//! | trait                  | methods                                              | a file without it      |
//! |------------------------|------------------------------------------------------|------------------------|
//! | [`BigFile`] (core)     | `block_size`, `load_blk`, `store_blk`, `name`, `load_writes_whole_block` | —  |
//! | [`ContentKeys`]        | `content_key`                                        | never shares clean pages |
//! | [`SubBlockPages`]      | `read_pages`, `store_pages`                          | small writes load (and store) the whole block |
//! | [`DirectMap`] (unsafe) | `map_source`, `claim_check`, `source_checked`        | every block is loaded into RAM |
//!
//! A file states its capabilities through [`BigFile::content_keys`],
//! [`BigFile::sub_block_pages`] and [`BigFile::direct_map`], which have no default: a
//! decorator (a file wrapping another) must answer for each capability of the file it
//! wraps, so it cannot drop one without saying so. virtmem reaches the capabilities
//! through the methods of `dyn BigFile` (`content_key`, `map_source`, `claim_check`,
//! `source_checked`, `read_pages`, `store_pages`), which use the capability when the
//! file has it and the fallback in the table otherwise.
//!
//! [`DirectMap`] is an `unsafe trait`: its promise that mapped bytes stay unchanged is
//! what makes views of directly mapped blocks (`&[T]`) sound, and an implementation
//! that breaks it breaks memory safety, not only correctness.

#[cfg(any(test, feature = "internals"))]
mod memfile;

#[cfg(any(test, feature = "internals"))]
pub use memfile::{Hook, MemFile};

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::Result;

/// Bytes of an open file that virtmem may map read-only (`MAP_PRIVATE`) in place of a
/// block: see [`DirectMap::map_source`].
#[derive(Clone)]
pub struct FileSlice {
    /// The file descriptor, open as long as `keep` is alive.
    pub fd: RawFd,
    /// Keeps `fd` open (the db passes its store generation): held, never read.
    #[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
    pub keep: Arc<dyn Send + Sync>,
    /// File offset of the block's first byte: a multiple of the OS page size.
    pub offset: u64,
    /// Bytes mapped from the file: a multiple of the OS page size, at most the block
    /// size. The rest of the block reads as zeros.
    pub len: usize,
    /// 4 KiB pages `(index, PAGE bytes)`, ascending, that replace the block's
    /// bytes there (a delta chain resolved over a raw base): virtmem writes them over
    /// each view's private mapping of the file, so only they take RAM. None: the block
    /// is the file's bytes alone.
    pub pages: Option<Arc<[OverlayPage]>>,
    /// `Some(crc)` while this process has not yet checked the bytes: virtmem computes
    /// their CRC-32 through the mapping that will serve the block, before any view shows
    /// it, and reports a mismatch as a load error (the bytes are never exposed); a match
    /// is reported with [`DirectMap::source_checked`]. `None`: already checked.
    pub crc: Option<u32>,
    /// With `crc`, when the file has them: the CRC-32 of each 4 KiB page of the `len`
    /// mapped bytes (`len / 4096` entries, whose combination is `crc`). virtmem may then
    /// check and show only some pages of the block (a random read), the rest checked
    /// when first shown. `None`: only the whole-block `crc` (or nothing) to check.
    pub page_crcs: Option<Arc<[u32]>>,
    /// For bytes held in a cache file (object storage): the file's device, inode and
    /// birth time, which name it when the check is recorded. virtmem never reads it.
    pub cache_file: Option<(u64, u64, u64)>,
}

/// A 4 KiB page `(index in the block, PAGE bytes)` over a [`FileSlice`].
pub type OverlayPage = (u32, Box<[u8]>);

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("fd", &self.fd)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("pages", &self.pages.as_ref().map(|p| p.len()))
            .field("crc", &self.crc)
            .field("page_crcs", &self.page_crcs.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// Default block size: 2 MiB (one huge page; large enough that a fault's fixed cost is
/// small beside the copy of the block).
#[cfg(any(test, feature = "internals"))]
pub const DEFAULT_BLOCK_SIZE: usize = 2 << 20;

/// A file of fixed-size blocks: the core of the seam (see the module docs for the
/// capabilities). Every block index exists; a block never stored reads as zeros (that is
/// the implementation's business: `load_blk` gets a zeroed buffer unless
/// [`BigFile::load_writes_whole_block`]).
pub trait BigFile: Send + Sync + std::fmt::Debug {
    /// Block size in bytes: a power of two, a multiple of the OS page size.
    fn block_size(&self) -> usize;
    /// Fill `buf` (len == block_size) with block `blk`. `buf` arrives zeroed unless
    /// [`BigFile::load_writes_whole_block`] says `load_blk` writes every byte.
    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()>;
    /// Store block `blk` (len == block_size).
    fn store_blk(&self, blk: u64, data: &[u8]) -> Result<()>;
    /// Name for messages (e.g. the array name): used in fault-abort messages and Error::Load.
    fn name(&self) -> &str;
    /// `true` if `load_blk` writes every byte of `buf` (zeros included): virtmem then
    /// skips zeroing a reused RAM page before the load, which saves a write of the whole
    /// block per load. `false` asks for the zeroed buffer. Answered without taking a
    /// lock: virtmem may ask with its own lock held.
    fn load_writes_whole_block(&self) -> bool;
    /// The file's [`ContentKeys`], if it has them (`None`: clean pages are never shared).
    fn content_keys(&self) -> Option<&dyn ContentKeys>;
    /// The file's [`SubBlockPages`], if it has them (`None`: small writes read and store
    /// whole blocks through `load_blk` and `store_blk`).
    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages>;
    /// The file's [`DirectMap`], if it has one (`None`: every block is loaded).
    fn direct_map(&self) -> Option<&dyn DirectMap>;
}

/// Capability: identity of a clean block's *content*, for sharing RAM pages between
/// handles of different snapshots in one process.
pub trait ContentKeys {
    /// Two handles whose files return the same `Some(key)` for a block may share one
    /// clean RAM page for it. `None` = never share this block. The db layer returns
    /// (array id, tid of the version visible at the snapshot).
    fn content_key(&self, blk: u64) -> Option<(u64, u64)>;
}

/// Capability: small writes, 4 KiB pages ([`PAGE`]) of a block read and stored without
/// the whole block.
pub trait SubBlockPages {
    /// Fill `out` (`PAGE` bytes per entry of `pages`, in order) with those 4 KiB pages
    /// of block `blk` as `load_blk` would give them, checked the same way (CRC). Called
    /// without the VM lock.
    fn read_pages(&self, blk: u64, pages: &[u32], out: &mut [u8]) -> Result<()>;
    /// Store block `blk` as its current content (what `load_blk` gives) with the listed
    /// 4 KiB pages (index, `PAGE` bytes; ascending) replaced, without reading the block
    /// where the file can ("previous version plus these pages"). Called without the VM
    /// lock, like `store_blk`.
    fn store_pages(&self, blk: u64, pages: &[(u32, &[u8])]) -> Result<()>;
}

/// Capability: zero-copy reads, blocks mapped from a file instead of loaded into RAM.
///
/// # Safety
///
/// An implementation promises that whenever [`DirectMap::map_source`] returns
/// `Ok(Some(slice))`, the `slice.len` bytes of `slice.fd` at `slice.offset` exist and
/// stay unchanged (never written, the file never truncated below them) for as long as
/// `slice.keep` is alive. virtmem maps those bytes into views and hands out `&[T]` over
/// them; a change under a live view would be a data race on memory Rust treats as
/// immutable, and a truncation a `SIGBUS` on access.
#[allow(unsafe_code)]
pub unsafe trait DirectMap {
    /// `Ok(Some(slice))` if block `blk` is clean content that reads exactly as
    /// `slice`'s file bytes followed by zeros (and `slice.pages` over them). Unless
    /// `slice.crc` is `None`, virtmem checks the bytes against it before a view shows
    /// them. `Ok(None)`: load this block. An error is reported like a `load_blk` error.
    /// Called without the VM lock, like `load_blk`. Cheap (no I/O) unless `fetch`: a
    /// file whose bytes are fetched into local files before they can be mapped (an
    /// object-store database's cache) fetches them first with `fetch` (the caller is
    /// the block's reader: a fault, or readahead ahead of a scan), and without it
    /// returns `Ok(None)` for bytes not fetched yet (random reads' neighbours).
    fn map_source(&self, blk: u64, fetch: bool) -> Result<Option<FileSlice>>;
    /// About to check the bytes of `src` (from `map_source`, with a CRC) whole: `false`
    /// when they no longer need a check (another process checked them meanwhile),
    /// `true` to check them. May wait briefly for another process checking the same
    /// bytes. Called without the VM lock.
    fn claim_check(&self, src: &FileSlice) -> bool;
    /// The bytes of `src` (from `map_source`) matched `src.crc`: later `map_source`
    /// calls for them may return `crc: None`. Called without the VM lock.
    fn source_checked(&self, src: &FileSlice);
}

/// The capabilities as virtmem calls them: each uses the file's capability when it has
/// one and the fallback of the module docs' table otherwise. Inherent, so no file can
/// change what they do except through its capabilities.
impl dyn BigFile + '_ {
    /// [`ContentKeys::content_key`], or `None` without the capability.
    pub fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        self.content_keys()?.content_key(blk)
    }

    /// [`DirectMap::map_source`], or `Ok(None)` (load the block) without the capability.
    pub fn map_source(&self, blk: u64, fetch: bool) -> Result<Option<FileSlice>> {
        match self.direct_map() {
            Some(d) => d.map_source(blk, fetch),
            None => Ok(None),
        }
    }

    /// [`DirectMap::claim_check`]; `true` (check) without the capability.
    pub fn claim_check(&self, src: &FileSlice) -> bool {
        self.direct_map().is_none_or(|d| d.claim_check(src))
    }

    /// [`DirectMap::source_checked`]; nothing without the capability.
    pub fn source_checked(&self, src: &FileSlice) {
        if let Some(d) = self.direct_map() {
            d.source_checked(src);
        }
    }

    /// [`SubBlockPages::read_pages`], or the pages copied out of the whole block loaded
    /// into a scratch buffer without the capability.
    pub fn read_pages(&self, blk: u64, pages: &[u32], out: &mut [u8]) -> Result<()> {
        if let Some(p) = self.sub_block_pages() {
            return p.read_pages(blk, pages, out);
        }
        with_block_scratch(self.block_size(), |buf| {
            self.load_into(blk, buf)?;
            copy_pages_out(buf, pages, out)
        })
    }

    /// [`SubBlockPages::store_pages`], or the whole block loaded, patched and stored
    /// without the capability.
    pub fn store_pages(&self, blk: u64, pages: &[(u32, &[u8])]) -> Result<()> {
        if let Some(p) = self.sub_block_pages() {
            return p.store_pages(blk, pages);
        }
        with_block_scratch(self.block_size(), |buf| {
            self.load_into(blk, buf)?;
            apply_pages(buf, pages)?;
            self.store_blk(blk, buf)
        })
    }

    /// `load_blk` into a buffer of unspecified contents (zeroed first unless the file
    /// writes the whole block).
    fn load_into(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        if !self.load_writes_whole_block() {
            buf.fill(0);
        }
        self.load_blk(blk, buf)
    }
}

/// Granularity of small writes ([`SubBlockPages`]): the 4 KiB page of the formats, the
/// page of delta records, whatever the OS page size.
pub use crate::format::PAGE;
/// The most 4 KiB pages [`SubBlockPages::store_pages`] is given for one block (the pages
/// one delta record may carry); a block with more dirty pages is stored whole.
pub use crate::format::max_delta_pages;

/// Run `f` on a block-sized scratch buffer of this thread (contents unspecified).
pub fn with_block_scratch<R>(bs: usize, f: impl FnOnce(&mut [u8]) -> Result<R>) -> Result<R> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        // A nested call (a file whose load_blk reads pages) gets its own buffer.
        let Ok(mut b) = s.try_borrow_mut() else {
            return f(&mut vec![0u8; bs]);
        };
        b.resize(bs, 0);
        let r = f(&mut b[..bs]);
        if b.capacity() > 64 << 20 {
            *b = Vec::new();
        }
        r
    })
}

fn page_range(block_len: usize, i: u32) -> Result<std::ops::Range<usize>> {
    let at = usize::try_from(i)
        .ok()
        .and_then(|i| i.checked_mul(PAGE))
        .filter(|&a| a.checked_add(PAGE).is_some_and(|e| e <= block_len))
        .ok_or_else(|| {
            crate::Error::OutOfRange(format!("page {i} of a block of {block_len} bytes"))
        })?;
    Ok(at..at + PAGE)
}

/// Copy pages `pages` of `block` into `out` (`PAGE` bytes each, in order).
pub fn copy_pages_out(block: &[u8], pages: &[u32], out: &mut [u8]) -> Result<()> {
    if out.len() != pages.len() * PAGE {
        return Err(crate::Error::InvalidArgument(format!(
            "{} bytes for {} pages",
            out.len(),
            pages.len()
        )));
    }
    for (&i, dst) in pages.iter().zip(out.chunks_exact_mut(PAGE)) {
        dst.copy_from_slice(&block[page_range(block.len(), i)?]);
    }
    Ok(())
}

/// Replace pages of `block` by `pages` (index, `PAGE` bytes).
pub fn apply_pages(block: &mut [u8], pages: &[(u32, &[u8])]) -> Result<()> {
    for &(i, p) in pages {
        let r = page_range(block.len(), i)?;
        if p.len() != PAGE {
            return Err(crate::Error::InvalidArgument(format!(
                "a page of {} bytes",
                p.len()
            )));
        }
        block[r].copy_from_slice(p);
    }
    Ok(())
}
