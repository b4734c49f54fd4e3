//! The staged blocks of a transaction: encoded values waiting for commit, kept in
//! memory up to a share of the RAM budget and in the transaction's spill file past it
//! (`store::spill`), so that a transaction bigger than RAM holds only its most recent
//! payloads in memory.
//!
//! The share is [`ram_share`]: 1/8 of `ram_budget`, at most [`MAX_STAGED_RAM`]. A value
//! that would take the payloads in memory past it is written to the spill file before
//! it is staged (outside the transaction's lock); its payload then reads back from there
//! (`read_staged`), maps into views when it is raw (`map_source`), and is copied into
//! the log by the commit (`copy_file_range`, storage-format.md "Spill files").

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bigfile::FileSlice;
use crate::format::{Encoding, PAGE};
use crate::store::encode::{self, check_spilled, Encoded, Payload};
use crate::store::spill::SpillFile;
use crate::verify::Verify;
use crate::{Error, Result};

/// Most bytes of staged payloads a transaction keeps in memory, whatever its budget:
/// enough that a commit of a few blocks (W1's appends of up to 8 MiB touch up to five
/// 2 MiB blocks) never creates a spill file, small beside any useful budget.
pub const MAX_STAGED_RAM: u64 = 16 << 20;

/// Bytes of staged payloads a transaction with RAM budget `budget` keeps in memory.
pub fn ram_share(budget: u64) -> u64 {
    (budget / 8).min(MAX_STAGED_RAM)
}

/// Staged blocks by (array id, block), and the bytes of their payloads in memory.
#[derive(Debug, Default)]
pub(super) struct Staging {
    blocks: BTreeMap<(u64, u64), Encoded>,
    ram: u64,
}

fn mem_len(e: &Encoded) -> u64 {
    e.payload.in_memory().map_or(0, |b| b.len() as u64)
}

impl Staging {
    /// Would one more payload of `len` bytes in memory pass `share`?
    pub(super) fn over(&self, len: usize, share: u64) -> bool {
        self.ram + len as u64 > share
    }

    /// Stage `e` for `key`, replacing what was staged there.
    pub(super) fn insert(&mut self, key: (u64, u64), e: Encoded) {
        self.ram += mem_len(&e);
        if let Some(old) = self.blocks.insert(key, e) {
            self.ram -= mem_len(&old);
        }
    }

    pub(super) fn get(&self, key: &(u64, u64)) -> Option<&Encoded> {
        self.blocks.get(key)
    }

    pub(super) fn contains_key(&self, key: &(u64, u64)) -> bool {
        self.blocks.contains_key(key)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Drop every staged block of array `id`.
    pub(super) fn remove_array(&mut self, id: u64) {
        let gone: Vec<(u64, u64)> = self
            .blocks
            .range((id, 0)..=(id, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(old) = self.blocks.remove(&k) {
                self.ram -= mem_len(&old);
            }
        }
    }

    /// One past the last block of array `id` staged at or past `from` (0: none).
    pub(super) fn end_from(&self, id: u64, from: u64) -> u64 {
        self.blocks
            .range((id, from)..=(id, u64::MAX))
            .next_back()
            .map_or(0, |((_, b), _)| b + 1)
    }

    /// Bytes of staged payloads in memory.
    pub(super) fn ram(&self) -> u64 {
        self.ram
    }

    /// Everything staged, in key order (for the commit).
    pub(super) fn into_blocks(self) -> BTreeMap<(u64, u64), Encoded> {
        self.blocks
    }
}

/// Move the payload of `e` into `file` (a slot of the block's size, so that a raw one
/// starts on a block boundary and can be mapped).
pub(super) fn spill(file: &Arc<SpillFile>, e: &mut Encoded, block_size: usize) -> Result<()> {
    let Payload::Mem(bytes) = &e.payload else {
        return Ok(());
    };
    let slot_size = crate::store::compact::spill_slot_size(bytes.len().max(block_size));
    let slot = file.write(bytes, slot_size)?;
    e.payload = Payload::Spilled(slot);
    Ok(())
}

/// Move the page CRC table of `e`, a block whose payload is in `file`, there too: a
/// transaction bigger than RAM then holds no per-page state in memory (its tables are
/// 4 bytes per 4 KiB written, 16 MiB for 16 GiB). The commit copies the encoded table
/// into the log in front of the payload, as it copies the payload.
pub(super) fn spill_table(file: &Arc<SpillFile>, e: &mut Encoded) -> Result<()> {
    if e.page_crcs.is_empty() || !matches!(e.payload, Payload::Spilled(_)) {
        return Ok(());
    }
    let table = crate::format::encode_page_table(&e.page_crcs);
    let slot = file.write(&table, crate::store::compact::spill_slot_size(table.len()))?;
    e.page_table = Some(slot);
    e.page_crcs = Vec::new();
    Ok(())
}

/// Read a staged full block into `buf` (a staged delta is read with its base, by
/// `TxInner::read_staged_delta`): a spilled payload is read back and checked against
/// its CRC.
pub(super) fn read_staged(e: &Encoded, buf: &mut [u8]) -> Result<()> {
    let n = usize::try_from(e.logical_len)
        .ok()
        .filter(|&n| n <= buf.len())
        .ok_or_else(|| Error::OutOfRange("staged length".into()))?;
    match e.encoding {
        Encoding::DeltaRaw | Encoding::DeltaZstd => {
            return Err(Error::InvalidArgument(
                "a staged delta needs its base".into(),
            ))
        }
        Encoding::Hole => buf.fill(0),
        Encoding::Raw => {
            match &e.payload {
                Payload::Mem(p) => buf[..n].copy_from_slice(p),
                Payload::Spilled(s) => {
                    s.read(&mut buf[..n])?;
                    check_spilled(s, &buf[..n], e.data_crc)?;
                }
            }
            buf[n..].fill(0);
        }
        Encoding::Zstd => {
            let p = e.payload.to_vec(e.data_crc)?;
            encode::decompress_into(&p, &mut buf[..n], 0)?;
            buf[n..].fill(0);
        }
    }
    Ok(())
}

/// Zero-copy reads of a staged block: a raw payload in a spill file maps into views
/// like a raw block of the log, under the same rule of `verify`: shown once checked
/// against its CRC (once per process under both `OncePerBoot` and `OncePerProcess`,
/// since no other process can open the unnamed spill file), or as stored under
/// `Verify::Off`. The bytes were written by this process, but from there they went
/// through the page cache and possibly the disk like any log block; the check is what
/// vouches for them, as for the log (docs/verification.md).
pub(super) fn map_staged(e: &Encoded, block_size: usize, verify: Verify) -> Option<FileSlice> {
    let Payload::Spilled(s) = &e.payload else {
        return None;
    };
    if e.encoding != Encoding::Raw || s.len() > block_size || s.len() % PAGE != 0 || s.is_empty() {
        return None;
    }
    Some(FileSlice {
        fd: s.file().raw_fd(),
        keep: s.clone(),
        offset: s.offset(),
        len: s.len(),
        pages: None,
        crc: (verify != Verify::Off && !s.checked()).then_some(e.data_crc),
        page_crcs: None,
        cache_file: None,
    })
}
