//! What transactions and snapshots share: reading the committed blocks of one
//! generation at one tid ([`ReadAt`]), and the snapshot's state ([`SnapInner`]).

use std::sync::Arc;

use super::{ArrayInfo, ArrayStats, Catalog, Db};
use crate::bigfile::FileSlice;
use crate::format::{Encoding, Key};
use crate::log::lock::ReaderSlot;
use crate::store::Gen;
use crate::{Error, Result, Tid};

/// The committed state a transaction or snapshot reads: generation `gen` at commit
/// `tid`, registered as a reader (`_slot`) so compaction keeps what it needs.
#[derive(Debug)]
pub(crate) struct ReadAt {
    pub(super) db: Db,
    pub(super) gen: Arc<Gen>,
    pub(super) tid: Tid,
    pub(super) _slot: Option<ReaderSlot>,
}

impl ReadAt {
    /// Read block `blk` of array `array_id` as committed at `tid` into `buf`.
    pub(super) fn load_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        self.gen.load(&block_key(array_id, blk), self.tid, buf)?;
        Ok(())
    }

    /// Zero-copy reads: the log bytes of block `blk` at `tid`, if that is a full raw
    /// version and the database maps blocks (`Options::zero_copy`).
    pub(super) fn map_block(
        &self,
        array_id: u64,
        blk: u64,
        block_size: usize,
        fetch: bool,
    ) -> Result<Option<FileSlice>> {
        if !self.db.inner.opts.zero_copy {
            return Ok(None);
        }
        self.gen
            .map_block(&block_key(array_id, blk), self.tid, block_size, fetch)
    }

    /// The tid of the version of a block visible at `tid` (None: never written, zeros).
    pub(super) fn block_version(&self, array_id: u64, blk: u64) -> Result<Option<Tid>> {
        Ok(self
            .gen
            .version_at(&block_key(array_id, blk), self.tid)?
            .map(|v| v.tid))
    }

    /// Zero-copy reads: about to check the bytes of `src` (a slice of the log) whole;
    /// `false` if another process checked them meanwhile.
    pub(super) fn claim_check(&self, src: &FileSlice) -> bool {
        self.gen.claim_check(src)
    }

    /// Zero-copy reads: the bytes of a slice of the log matched their CRC.
    pub(super) fn source_checked(&self, src: &FileSlice) {
        self.gen.mark_checked(src);
    }
}

/// The key of block `blk` of array `array_id`.
pub(super) fn block_key(array_id: u64, blk: u64) -> Key {
    Key::Block {
        array: array_id,
        blk,
    }
}

pub(super) fn check_buf(info: &ArrayInfo, len: usize) -> Result<()> {
    if u64::try_from(len).ok() != Some(u64::from(info.block_size)) {
        return Err(Error::InvalidArgument(format!(
            "block buffer of {len} bytes for array {:?} whose block size is {}",
            info.name, info.block_size
        )));
    }
    Ok(())
}

/// The state of a snapshot, shared with the files of its arrays.
#[derive(Debug)]
pub(crate) struct SnapInner {
    /// What it reads.
    pub(super) at: ReadAt,
    pub(super) catalog: Catalog,
}

impl SnapInner {
    /// The commit it shows.
    pub fn tid(&self) -> Tid {
        self.at.tid
    }
    /// The catalog entry of array `name`.
    pub fn array_info(&self, name: &str) -> Result<ArrayInfo> {
        Ok((*self.catalog.get(name)?).clone())
    }
    /// The catalog entry of array `id`.
    pub fn array_info_by_id(&self, id: u64) -> Result<ArrayInfo> {
        Ok((*self.catalog.get_id(id)?).clone())
    }
    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        Ok(self.catalog.by_name.keys().cloned().collect())
    }
    /// Read block `blk` of array `array_id` into `buf` (len = the array's block size).
    pub fn read_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        let info = self.catalog.get_id(array_id)?;
        check_buf(&info, buf.len())?;
        self.at.load_block(array_id, blk, buf)
    }
    /// Storage statistics of array `name` at this snapshot.
    pub fn array_stats(&self, name: &str) -> Result<ArrayStats> {
        let info = self.catalog.get(name)?;
        let mut s = ArrayStats {
            logical_bytes: info.byte_len().unwrap_or(u64::MAX),
            ..ArrayStats::default()
        };
        let blocks = self.at.gen.with_index(|ix| {
            ix.range_versions(
                &Key::Block {
                    array: info.id,
                    blk: 0,
                },
                &Key::Block {
                    array: info.id,
                    blk: u64::MAX,
                },
            )
        })?;
        for (_, vs) in &blocks {
            let i = vs.partition_point(|v| v.tid <= self.at.tid);
            let Some(v) = i.checked_sub(1).map(|i| vs[i]) else {
                continue;
            };
            s.stored_bytes += u64::from(v.stored_len);
            match v.encoding {
                Encoding::DeltaRaw | Encoding::DeltaZstd => s.delta_blocks += 1,
                Encoding::Hole => s.hole_blocks += 1,
                Encoding::Raw => s.raw_blocks += 1,
                Encoding::Zstd => s.zstd_blocks += 1,
            }
        }
        Ok(s)
    }
    /// The database it belongs to.
    pub fn db(&self) -> &Db {
        &self.at.db
    }
}
