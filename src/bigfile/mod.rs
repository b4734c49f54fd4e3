//! The `BigFile` trait: a file of fixed-size blocks, the only thing `virtmem` knows about
//! where data comes from and goes to. The db layer adapts a store snapshot to it; tests
//! use [`MemFile`], an in-memory fake that counts loads and stores and injects errors.

mod memfile;

pub use memfile::{Hook, MemFile};

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::Result;

/// Bytes of an open file that virtmem may map read-only (`MAP_PRIVATE`) in place of a
/// block: see [`BigFile::map_source`].
#[derive(Clone)]
pub struct FileSlice {
    /// The file descriptor, open as long as `keep` is alive.
    pub fd: RawFd,
    /// Keeps `fd` open (the db passes its store generation).
    pub keep: Arc<dyn Send + Sync>,
    /// File offset of the block's first byte: a multiple of the OS page size.
    pub offset: u64,
    /// Bytes mapped from the file: a multiple of the OS page size, at most the block
    /// size. The rest of the block reads as zeros.
    pub len: usize,
    /// `Some(crc)` while this process has not yet checked the bytes: virtmem computes
    /// their CRC-32 through the mapping that will serve the block, before any view shows
    /// it, and reports a mismatch as a load error (the bytes are never exposed); a match
    /// is reported with [`BigFile::source_checked`]. `None`: already checked.
    pub crc: Option<u32>,
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("fd", &self.fd)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("crc", &self.crc)
            .finish()
    }
}

/// Default block size: 2 MiB (one huge page; large enough that a fault's fixed cost is
/// small beside the copy of the block).
pub const DEFAULT_BLOCK_SIZE: usize = 2 << 20;

/// A file of fixed-size blocks. Every block index exists; a block never stored reads as
/// zeros (that is the implementation's business: `load_blk` gets a zeroed buffer).
pub trait BigFile: Send + Sync + std::fmt::Debug {
    /// Block size in bytes: a power of two, a multiple of the OS page size.
    fn block_size(&self) -> usize;
    /// Fill `buf` (len == block_size, arrives zeroed) with block `blk`.
    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()>;
    /// Store block `blk` (len == block_size).
    fn store_blk(&self, blk: u64, data: &[u8]) -> Result<()>;
    /// Name for messages (e.g. the array name): used in fault-abort messages and Error::Load.
    fn name(&self) -> &str;
    /// Identity of a clean block's *content*, for sharing RAM pages between handles of
    /// different snapshots in one process: two handles whose files return the same
    /// Some(key) for a block may share one clean RAM page for it. None = never share.
    /// The db layer returns (array id, tid of the version visible at the snapshot).
    fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        let _ = blk;
        None
    }
    /// `true` if `load_blk` writes every byte of `buf` (zeros included): virtmem then
    /// skips zeroing a reused RAM page before the load, which saves a write of the whole
    /// block per load. The default, `false`, keeps the "arrives zeroed" promise above.
    fn load_writes_whole_block(&self) -> bool {
        false
    }
    /// Zero-copy reads: `Ok(Some(slice))` if block `blk` is clean content that reads
    /// exactly as `slice`'s file bytes followed by zeros, and those bytes stay unchanged
    /// for as long as `slice.keep` is alive. virtmem then maps them into views instead
    /// of loading the block into a RAM page. Unless `slice.crc` is `None`, virtmem
    /// checks the bytes against it before a view shows them. An error is reported like
    /// a `load_blk` error. Default: `Ok(None)` (always load). Called without the VM lock,
    /// like `load_blk`; cheap (no I/O): the readahead thread calls it for blocks ahead.
    fn map_source(&self, blk: u64) -> Result<Option<FileSlice>> {
        let _ = blk;
        Ok(None)
    }
    /// The bytes of `src` (from [`BigFile::map_source`]) matched `src.crc`: later
    /// `map_source` calls for them may return `crc: None`. Called without the VM lock.
    fn source_checked(&self, src: &FileSlice) {
        let _ = src;
    }
}
