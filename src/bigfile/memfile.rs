//! [`MemFile`]: an in-memory [`BigFile`] for tests of `virtmem` and of the array layer.
//!
//! It counts loads and stores (per block and in total), records the order of stores,
//! injects load and store errors per block, and runs an optional hook at the start of
//! every load or store so that a test can block a load (to race `invalidate` with it),
//! delay it, or take a lock inside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{BigFile, ContentKeys, DirectMap, SubBlockPages};
use crate::{Error, Result};

/// A hook run at the start of `load_blk` / `store_blk` with the block index.
pub type Hook = Arc<dyn Fn(u64) + Send + Sync>;

/// Distinguishes the content keys of different `MemFile`s.
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(1);

/// An in-memory file of blocks; blocks never written read as zeros.
pub struct MemFile {
    name: String,
    block_size: usize,
    /// `Some(id)`: `content_key(blk)` is `(id, version of blk)`, so handles of this one
    /// file share clean pages. `None`: no sharing.
    key_id: Option<u64>,
    inner: Mutex<Inner>,
    loads: AtomicU64,
    stores: AtomicU64,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<u64, Vec<u8>>,
    /// Bumped on every store or `set_block` of a block: the content version.
    versions: HashMap<u64, u64>,
    load_counts: HashMap<u64, u64>,
    store_log: Vec<u64>,
    load_errors: HashMap<u64, String>,
    store_errors: HashMap<u64, String>,
    load_hook: Option<Hook>,
    store_hook: Option<Hook>,
}

impl std::fmt::Debug for MemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemFile")
            .field("name", &self.name)
            .field("block_size", &self.block_size)
            .field("loads", &self.loads())
            .field("stores", &self.stores())
            .finish()
    }
}

impl MemFile {
    /// A file of zeros with the given block size (checked by `VirtMem::open`, not here,
    /// so that tests can also build files with bad block sizes).
    pub fn new(name: &str, block_size: usize) -> MemFile {
        MemFile {
            name: name.to_string(),
            block_size,
            key_id: None,
            inner: Mutex::new(Inner::default()),
            loads: AtomicU64::new(0),
            stores: AtomicU64::new(0),
        }
    }

    /// Like [`MemFile::new`], and `content_key` returns `Some` so that several handles of
    /// this file share clean RAM pages.
    pub fn new_shared(name: &str, block_size: usize) -> MemFile {
        let mut f = MemFile::new(name, block_size);
        f.key_id = Some(NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed));
        f
    }

    /// Set the content of a block directly (not counted as a store). `data` shorter than
    /// a block is zero-padded; longer is an error.
    pub fn set_block(&self, blk: u64, data: &[u8]) -> Result<()> {
        if data.len() > self.block_size {
            return Err(Error::InvalidArgument(format!(
                "block data of {} bytes is larger than the block size {}",
                data.len(),
                self.block_size
            )));
        }
        let mut v = vec![0u8; self.block_size];
        v[..data.len()].copy_from_slice(data);
        let mut g = self.inner.lock();
        g.blocks.insert(blk, v);
        *g.versions.entry(blk).or_insert(0) += 1;
        Ok(())
    }

    /// The stored content of a block (zeros if never stored).
    pub fn block(&self, blk: u64) -> Vec<u8> {
        let g = self.inner.lock();
        g.blocks
            .get(&blk)
            .cloned()
            .unwrap_or_else(|| vec![0u8; self.block_size])
    }

    /// Total number of `load_blk` calls (failed ones included).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }

    /// Total number of `store_blk` calls (failed ones included).
    pub fn stores(&self) -> u64 {
        self.stores.load(Ordering::SeqCst)
    }

    /// Number of `load_blk` calls for one block.
    pub fn load_count(&self, blk: u64) -> u64 {
        self.inner
            .lock()
            .load_counts
            .get(&blk)
            .copied()
            .unwrap_or(0)
    }

    /// Blocks in the order `store_blk` succeeded for them.
    pub fn store_log(&self) -> Vec<u64> {
        self.inner.lock().store_log.clone()
    }

    /// Make `load_blk(blk)` fail with `cause` (`None` clears it).
    pub fn fail_load(&self, blk: u64, cause: Option<&str>) {
        let mut g = self.inner.lock();
        match cause {
            Some(c) => g.load_errors.insert(blk, c.to_string()),
            None => g.load_errors.remove(&blk),
        };
    }

    /// Make `store_blk(blk)` fail with `cause` (`None` clears it).
    pub fn fail_store(&self, blk: u64, cause: Option<&str>) {
        let mut g = self.inner.lock();
        match cause {
            Some(c) => g.store_errors.insert(blk, c.to_string()),
            None => g.store_errors.remove(&blk),
        };
    }

    /// Run `hook(blk)` at the start of every `load_blk` (`None` removes it).
    pub fn set_load_hook(&self, hook: Option<Hook>) {
        self.inner.lock().load_hook = hook;
    }

    /// Run `hook(blk)` at the start of every `store_blk` (`None` removes it).
    pub fn set_store_hook(&self, hook: Option<Hook>) {
        self.inner.lock().store_hook = hook;
    }
}

impl BigFile for MemFile {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        // The hook runs without our own lock so that it may block or take other locks.
        let hook = {
            let mut g = self.inner.lock();
            *g.load_counts.entry(blk).or_insert(0) += 1;
            g.load_hook.clone()
        };
        if let Some(h) = hook {
            h(blk);
        }
        let g = self.inner.lock();
        if let Some(cause) = g.load_errors.get(&blk) {
            return Err(Error::Io(std::io::Error::other(cause.clone())));
        }
        if buf.len() != self.block_size {
            return Err(Error::InvalidArgument(format!(
                "load buffer of {} bytes, block size {}",
                buf.len(),
                self.block_size
            )));
        }
        if let Some(data) = g.blocks.get(&blk) {
            buf.copy_from_slice(data);
        }
        Ok(())
    }

    fn store_blk(&self, blk: u64, data: &[u8]) -> Result<()> {
        self.stores.fetch_add(1, Ordering::SeqCst);
        let hook = self.inner.lock().store_hook.clone();
        if let Some(h) = hook {
            h(blk);
        }
        let mut g = self.inner.lock();
        if let Some(cause) = g.store_errors.get(&blk) {
            return Err(Error::Io(std::io::Error::other(cause.clone())));
        }
        if data.len() != self.block_size {
            return Err(Error::InvalidArgument(format!(
                "store of {} bytes, block size {}",
                data.len(),
                self.block_size
            )));
        }
        g.blocks.insert(blk, data.to_vec());
        *g.versions.entry(blk).or_insert(0) += 1;
        g.store_log.push(blk);
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn load_writes_whole_block(&self) -> bool {
        // A block never stored is left as the zeroed buffer.
        false
    }

    fn content_keys(&self) -> Option<&dyn ContentKeys> {
        self.key_id.map(|_| self as &dyn ContentKeys)
    }

    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages> {
        None
    }

    fn direct_map(&self) -> Option<&dyn DirectMap> {
        None
    }
}

impl ContentKeys for MemFile {
    fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        let id = self.key_id?;
        let v = self.inner.lock().versions.get(&blk).copied().unwrap_or(0);
        Some((id, v))
    }
}
