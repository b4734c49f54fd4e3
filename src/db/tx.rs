//! The state of a transaction ([`TxInner`], shared with the files of its arrays): reads
//! of its own staged writes over its snapshot, staging of whole blocks and of small
//! writes (as delta records where [`crate::format::delta_room`] allows), zero-copy
//! reads of raw blocks, and commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::read::{check_buf, ReadAt};
use super::staging::{self, ram_share};
use super::{ArrayInfo, ArraySpec, Catalog, Compression, Db, StagedBytes};
use crate::format::{Encoding, Key, FLAG_DELETED};
use crate::store::encode::{self, Encoded};
use crate::store::spill::SpillFile;
use crate::store::{CommitRequest, Write};
use crate::{Error, Result, Tid};

#[derive(Debug, Default)]
pub(super) struct TxState {
    /// The catalog as this transaction sees it (snapshot + own changes).
    pub(super) catalog: Catalog,
    /// Set when a create/delete/rename happened.
    pub(super) names_changed: bool,
    /// Arrays whose catalog entry changed (value: Some = new entry, None = deleted).
    pub(super) meta_changed: BTreeMap<u64, Option<Arc<ArrayInfo>>>,
    /// Staged blocks (payloads in memory up to the transaction's share of RAM, then in
    /// its spill file).
    pub(super) blocks: staging::Staging,
    /// Next array id to hand out.
    pub(super) next_id: u64,
}

/// The state of a transaction, shared with the files of its arrays.
#[derive(Debug)]
pub(crate) struct TxInner {
    /// What it reads: its snapshot.
    pub(super) at: ReadAt,
    pub(super) state: Mutex<TxState>,
    /// The spill file of staged payloads past the transaction's share of RAM, created
    /// on first use.
    pub(super) spill: Mutex<Option<Arc<SpillFile>>>,
}

/// Deltas of fewer pages than this, built from small writes, are not compressed.
const SMALL_DELTA_PAGES: usize = 16;

fn name_key(cat: &Catalog, k: &Key) -> String {
    let n = |a: u64| {
        cat.by_id
            .get(&a)
            .map(|i| format!("array {:?}", i.name))
            .unwrap_or_else(|| format!("array #{a}"))
    };
    match *k {
        Key::Block { array, blk } => format!("{} block {blk}", n(array)),
        Key::Meta { array } => format!("{} metadata", n(array)),
        Key::Names => "the set of array names".into(),
    }
}

impl TxInner {
    /// The snapshot tid this transaction reads at.
    pub fn snapshot_tid(&self) -> Tid {
        self.at.tid
    }

    /// Create an array (all zeros); fails with `AlreadyExists` if the name is taken.
    /// A `block_size` of 0 takes `Options::block_size`; `Compression::Zstd { level: 0 }`
    /// takes `Options::zstd_level`.
    pub fn create_array_raw(&self, spec: ArraySpec) -> Result<ArrayInfo> {
        let mut st = self.state.lock();
        if st.catalog.by_name.contains_key(&spec.name) {
            return Err(Error::AlreadyExists(format!("array {:?}", spec.name)));
        }
        let mut spec = spec;
        if spec.block_size == 0 {
            spec.block_size = self.at.db.inner.opts.block_size;
        }
        if let Compression::Zstd { level: 0 } = spec.compression {
            spec.compression = Compression::Zstd {
                level: self.at.db.inner.opts.zstd_level,
            };
        }
        let id = st.next_id;
        let info = ArrayInfo::from_spec(id, spec);
        super::catalog::validate(&info)?;
        info.encode()?;
        st.next_id += 1;
        let info = Arc::new(info);
        st.catalog.insert(info.clone());
        st.meta_changed.insert(id, Some(info.clone()));
        st.names_changed = true;
        Ok((*info).clone())
    }

    /// The catalog entry of array `name`.
    pub fn array_info(&self, name: &str) -> Result<ArrayInfo> {
        Ok((*self.state.lock().catalog.get(name)?).clone())
    }

    /// The catalog entry of array `id`.
    pub fn array_info_by_id(&self, id: u64) -> Result<ArrayInfo> {
        Ok((*self.state.lock().catalog.get_id(id)?).clone())
    }

    /// Change an array's shape (a metadata change: conflicts with another transaction
    /// that changes the same array's metadata). Blocks past the new end are not erased
    /// here; the array layer zeroes what it exposes again.
    pub fn set_shape(&self, name: &str, shape: &[u64]) -> Result<()> {
        let mut st = self.state.lock();
        let old = st.catalog.get(name)?;
        let mut info = (*old).clone();
        info.shape = shape.to_vec();
        super::catalog::validate(&info)?;
        let info = Arc::new(info);
        st.catalog.insert(info.clone());
        st.meta_changed.insert(info.id, Some(info));
        Ok(())
    }

    /// Delete an array.
    pub fn delete_array(&self, name: &str) -> Result<()> {
        let mut st = self.state.lock();
        let info = st.catalog.get(name)?;
        st.catalog.remove(info.id);
        st.meta_changed.insert(info.id, None);
        st.blocks.remove_array(info.id);
        st.names_changed = true;
        Ok(())
    }

    /// Rename an array.
    pub fn rename_array(&self, from: &str, to: &str) -> Result<()> {
        super::catalog::validate_name(to)?;
        let mut st = self.state.lock();
        if st.catalog.by_name.contains_key(to) {
            return Err(Error::AlreadyExists(format!("array {to:?}")));
        }
        let mut info = (*st.catalog.get(from)?).clone();
        info.name = to.to_string();
        let info = Arc::new(info);
        st.catalog.insert(info.clone());
        st.meta_changed.insert(info.id, Some(info));
        st.names_changed = true;
        Ok(())
    }

    /// Names of the arrays, sorted.
    pub fn array_names(&self) -> Result<Vec<String>> {
        Ok(self.state.lock().catalog.by_name.keys().cloned().collect())
    }

    /// Read block `blk` of array `array_id` into `buf` (len = the array's block size):
    /// this transaction's own write if any, else the version at its snapshot.
    pub fn read_block(&self, array_id: u64, blk: u64, buf: &mut [u8]) -> Result<()> {
        let staged = {
            let st = self.state.lock();
            let info = st.catalog.get_id(array_id)?;
            check_buf(&info, buf.len())?;
            match st.blocks.get(&(array_id, blk)) {
                Some(e) if e.encoding.is_delta() => e.clone(),
                Some(e) => return staging::read_staged(e, buf),
                None => {
                    drop(st);
                    return self.at.load_block(array_id, blk, buf);
                }
            }
        };
        self.read_staged_delta(array_id, blk, &staged, buf)
    }

    /// A staged delta applies to the block's version at the snapshot.
    fn read_staged_delta(
        &self,
        array_id: u64,
        blk: u64,
        e: &Encoded,
        buf: &mut [u8],
    ) -> Result<()> {
        self.at.load_block(array_id, blk, buf)?;
        let stored = e.payload.to_vec(e.data_crc)?;
        let payload = if e.encoding == Encoding::DeltaZstd {
            let mut out = vec![
                0u8;
                usize::try_from(e.logical_len)
                    .map_err(|_| Error::OutOfRange("length".into()))?
            ];
            encode::decompress_into(&stored, &mut out, 0)?;
            out
        } else {
            stored.into_owned()
        };
        let dp = crate::format::DeltaPayload::decode(&payload, 0)?;
        // `load` zero-filled the block past the base's value.
        let all = buf.len();
        dp.apply(buf, all, 0)
    }

    /// Stage block `blk` of array `array_id` (len = the array's block size) for commit.
    /// It is encoded now, outside the commit lock: as a delta on the block's version at
    /// the snapshot when few of its pages changed ([`TxInner::encode_as_delta`]), else
    /// as a full block (hole / trimmed / zstd).
    pub fn write_block(&self, array_id: u64, blk: u64, data: &[u8]) -> Result<()> {
        let info = self.state.lock().catalog.get_id(array_id)?;
        check_buf(&info, data.len())?;
        let level = match info.compression {
            Compression::None => None,
            Compression::Zstd { level } => Some(level),
        };
        let e = match self.encode_as_delta(array_id, blk, data, level) {
            Ok(Some(d)) => d,
            Ok(None) => self.encode_full(&info, data, level)?,
            // A full block does not need the old version: a damaged or unreadable base
            // costs this block its delta, not the commit.
            Err(e) => {
                tracing::warn!(error = %e, array_id, blk, "cannot read the block's previous version; storing it whole");
                self.encode_full(&info, data, level)?
            }
        };
        self.stage(&info, blk, e)
    }

    /// `encode_block`, a raw payload written straight from `data` to the spill file
    /// when it would not stay in memory ([`TxInner::stage`]).
    fn encode_full(&self, info: &ArrayInfo, data: &[u8], level: Option<i32>) -> Result<Encoded> {
        let share = ram_share(self.at.db.inner.opts.ram_budget);
        encode::encode_block_with(data, level, |body| {
            if !self.state.lock().blocks.over(body.len(), share) {
                return Ok(encode::Payload::Mem(body.to_vec()));
            }
            let bs = usize::try_from(info.block_size)
                .map_err(|_| Error::OutOfRange("block size".into()))?;
            let slot = self
                .spill_file()?
                .write(body, crate::store::compact::spill_slot_size(bs))?;
            Ok(encode::Payload::Spilled(slot))
        })
    }

    /// Stage `e` as block `blk` of array `info`: in memory while the transaction's
    /// staged payloads stay within its share of RAM ([`ram_share`]), else first written
    /// to its spill file (without the state lock). An error (the spill file cannot be
    /// created or written) stages nothing; the transaction stays usable.
    fn stage(&self, info: &ArrayInfo, blk: u64, mut e: Encoded) -> Result<()> {
        let share = ram_share(self.at.db.inner.opts.ram_budget);
        let len = e.payload.len();
        if len > 0 && self.state.lock().blocks.over(len, share) {
            let file = self.spill_file()?;
            let bs = usize::try_from(info.block_size)
                .map_err(|_| Error::OutOfRange("block size".into()))?;
            staging::spill(&file, &mut e, bs)?;
        }
        if matches!(e.payload, encode::Payload::Spilled(_)) && !e.page_crcs.is_empty() {
            staging::spill_table(&self.spill_file()?, &mut e)?;
        }
        let mut st = self.state.lock();
        // The array may have been deleted by another thread meanwhile.
        st.catalog.get_id(info.id)?;
        st.blocks.insert((info.id, blk), e);
        Ok(())
    }

    /// The transaction's spill file, created on first use.
    fn spill_file(&self) -> Result<Arc<SpillFile>> {
        let mut g = self.spill.lock();
        if let Some(f) = &*g {
            return Ok(f.clone());
        }
        let f = self.at.db.inner.store.create_spill()?;
        *g = Some(f.clone());
        Ok(f)
    }

    /// Bytes of staged payloads in memory, and bytes written to the spill file so far.
    pub(crate) fn staged_bytes(&self) -> StagedBytes {
        StagedBytes {
            in_memory: self.state.lock().blocks.ram(),
            spill_file: self.spill.lock().as_ref().map_or(0, |f| f.bytes_written()),
        }
    }

    /// Small writes: 4 KiB pages `pages` of block `blk` as this transaction sees it
    /// (its own staged write if any, else the version at its snapshot), reading only
    /// those pages where the version allows it ([`Gen::read_pages`]); CRC-checked.
    pub(crate) fn read_pages(
        &self,
        array_id: u64,
        blk: u64,
        pages: &[u32],
        out: &mut [u8],
    ) -> Result<()> {
        let (bs, staged) = {
            let st = self.state.lock();
            let info = st.catalog.get_id(array_id)?;
            (
                usize::try_from(info.block_size)
                    .map_err(|_| Error::OutOfRange("block size".into()))?,
                st.blocks.contains_key(&(array_id, blk)),
            )
        };
        let key = Key::Block {
            array: array_id,
            blk,
        };
        let chain = if staged {
            None
        } else {
            self.at.gen.chain_at(&key, self.at.tid)?
        };
        match chain {
            Some(chain) => self.at.gen.read_pages(&chain, pages, out),
            None if !staged => {
                // Never written: zeros.
                out.fill(0);
                Ok(())
            }
            None => crate::bigfile::with_block_scratch(bs, |buf| {
                self.read_block(array_id, blk, buf)?;
                crate::bigfile::copy_pages_out(buf, pages, out)
            }),
        }
    }

    /// Small writes: stage block `blk` of array `array_id` as its version at the
    /// snapshot with `pages` (index, 4 KiB; ascending) replaced — as a delta record
    /// built from the pages alone, without reading or comparing the block, when the
    /// chain bounds allow one more delta of that many pages ([`crate::format::delta_room`]).
    /// Otherwise (no version at the snapshot, staged here
    /// already, a format version 1 file, bounds exceeded) the block is resolved,
    /// patched and staged whole through [`TxInner::write_block`].
    pub(crate) fn write_pages(
        &self,
        array_id: u64,
        blk: u64,
        pages: &[(u32, &[u8])],
    ) -> Result<()> {
        use crate::format::{delta_room, DELTA_FORMAT_VERSION, PAGE};
        let (info, staged) = {
            let st = self.state.lock();
            (
                st.catalog.get_id(array_id)?,
                st.blocks.contains_key(&(array_id, blk)),
            )
        };
        let bs =
            usize::try_from(info.block_size).map_err(|_| Error::OutOfRange("block size".into()))?;
        let mut prev: Option<u32> = None;
        for &(i, p) in pages {
            let end = (u64::from(i) + 1) * PAGE as u64;
            if p.len() != PAGE || end > u64::from(info.block_size) || prev.is_some_and(|q| q >= i) {
                return Err(Error::InvalidArgument(format!(
                    "page {i} ({} bytes) of a block of {bs} bytes, or pages not ascending",
                    p.len()
                )));
            }
            prev = Some(i);
        }
        let level = match info.compression {
            Compression::None => None,
            Compression::Zstd { level } => Some(level),
        };
        let key = Key::Block {
            array: array_id,
            blk,
        };
        let chain = if staged || self.at.gen.log.header().version < DELTA_FORMAT_VERSION {
            None
        } else {
            self.at.gen.chain_at(&key, self.at.tid)?
        };
        let delta = match chain {
            Some(chain) if !pages.is_empty() => {
                if pages.len() <= delta_room(bs, &chain) {
                    let cur = crate::format::align_up(self.at.gen.chain_len(&chain)?, PAGE as u64);
                    let last = pages
                        .last()
                        .map_or(0, |&(i, _)| (u64::from(i) + 1) * PAGE as u64);
                    let result_len = u32::try_from(cur.max(last))
                        .map_err(|_| Error::OutOfRange("block length".into()))?;
                    // A delta of a few pages is stored raw: compressing it costs more
                    // time than the few KiB it could save.
                    let level = level.filter(|_| pages.len() >= SMALL_DELTA_PAGES);
                    Some(encode::encode_delta_pages(result_len, pages, level)?)
                } else {
                    None
                }
            }
            _ => None,
        };
        let Some(e) = delta else {
            return crate::bigfile::with_block_scratch(bs, |buf| {
                self.read_block(array_id, blk, buf)?;
                crate::bigfile::apply_pages(buf, pages)?;
                self.write_block(array_id, blk, buf)
            });
        };
        let st = self.state.lock();
        // The array may have been deleted by another thread meanwhile.
        st.catalog.get_id(array_id)?;
        if st.blocks.contains_key(&(array_id, blk)) {
            // Staged by another thread meanwhile: the delta's base is no longer the
            // block as this transaction sees it.
            drop(st);
            return crate::bigfile::with_block_scratch(bs, |buf| {
                self.read_block(array_id, blk, buf)?;
                crate::bigfile::apply_pages(buf, pages)?;
                self.write_block(array_id, blk, buf)
            });
        }
        drop(st);
        self.stage(&info, blk, e)
    }

    /// The commit-time comparison: `data` as a delta on the block's version at the
    /// snapshot, if that version exists, the chain bounds allow one more delta
    /// ([`crate::format::delta_room`]) and at most the remaining page
    /// budget differs. Bulk writes stay cheap: a block new since the snapshot has no
    /// base and is not compared; a full base whose value is shorter than the new data
    /// is first checked without any read (pages past its value that now hold data all
    /// differ), and a raw one by sampling 8 of its pages; the comparison stops at the
    /// first page over the budget.
    fn encode_as_delta(
        &self,
        array_id: u64,
        blk: u64,
        data: &[u8],
        level: Option<i32>,
    ) -> Result<Option<Encoded>> {
        use crate::format::{delta_room, DELTA_FORMAT_VERSION, PAGE};
        if self.at.gen.log.header().version < DELTA_FORMAT_VERSION {
            return Ok(None);
        }
        let key = Key::Block {
            array: array_id,
            blk,
        };
        let Some(chain) = self.at.gen.chain_at(&key, self.at.tid)? else {
            return Ok(None);
        };
        let budget = delta_room(data.len(), &chain);
        if budget == 0 {
            return Ok(None);
        }
        if let [base] = chain.as_slice() {
            let from = usize::try_from(base.logical_len)
                .unwrap_or(usize::MAX)
                .div_ceil(PAGE)
                .saturating_mul(PAGE)
                .min(data.len());
            let grown = data[from..]
                .chunks(PAGE)
                .filter(|p| p.iter().any(|&b| b != 0))
                .take(budget + 1)
                .count();
            if grown > budget {
                return Ok(None);
            }
            // A raw base can be sampled before it is read whole: a block rewritten
            // throughout differs on most sampled pages, and is then stored whole after
            // a few page reads instead of a read of the block.
            const SAMPLES: usize = 8;
            if base.encoding == Encoding::Raw
                && self.at.gen.sample_raw_diffs(base, data, SAMPLES)? > SAMPLES / 2
            {
                return Ok(None);
            }
        }
        thread_local! {
            static BASE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BASE.with(|b| {
            let mut b = b.borrow_mut();
            b.resize(data.len(), 0);
            let r = self
                .at
                .gen
                .read_chain(&chain, &mut b)
                .and_then(|()| encode::encode_delta(&b, data, budget, level));
            if b.capacity() > 64 << 20 {
                *b = Vec::new();
            }
            r
        })
    }

    /// Zero-copy reads: the log bytes of block `blk` as this transaction sees it, if
    /// that is a full raw version (not staged here, not a hole, compressed or delta).
    pub(crate) fn map_source(
        &self,
        array_id: u64,
        blk: u64,
        block_size: usize,
        fetch: bool,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        if !self.at.db.inner.opts.zero_copy {
            return Ok(None);
        }
        if let Some(e) = self.state.lock().blocks.get(&(array_id, blk)) {
            // The transaction's own write: a raw payload in its spill file maps.
            return Ok(staging::map_staged(
                e,
                block_size,
                self.at.db.inner.opts.verify,
            ));
        }
        self.at.map_block(array_id, blk, block_size, fetch)
    }
    /// Zero-copy reads: about to check the bytes of `src` whole. A slice of this
    /// transaction's spill file is checked here and now (no other process can see the
    /// file, so there is nobody to share the check with); a slice of the log claims the
    /// check in the per-boot table.
    pub(crate) fn claim_check(&self, src: &crate::bigfile::FileSlice) -> bool {
        if let Some(f) = &*self.spill.lock() {
            if f.raw_fd() == src.fd {
                return src.crc.is_some();
            }
        }
        self.at.claim_check(src)
    }
    /// Zero-copy reads: the bytes of a slice from `map_source` matched their CRC.
    pub(crate) fn source_checked(&self, src: &crate::bigfile::FileSlice) {
        if let Some(f) = &*self.spill.lock() {
            if f.raw_fd() == src.fd {
                f.mark_checked(src.offset);
                return;
            }
        }
        self.at.source_checked(src);
    }

    /// The tid of the version of a block this transaction would read, or None for a
    /// block never written (zeros) — or written by this transaction (not shareable).
    pub fn block_version(&self, array_id: u64, blk: u64) -> Result<Option<Tid>> {
        if self.state.lock().blocks.contains_key(&(array_id, blk)) {
            return Ok(None);
        }
        self.at.block_version(array_id, blk)
    }

    /// Stage a hole for every block of array `array_id` at or past `from` that may hold
    /// data (below its extent at the snapshot, or staged here), except `keep`: the
    /// blocks a shrink cut off read as zeros from then on.
    pub(crate) fn stage_holes_from(&self, array_id: u64, from: u64, keep: &[u64]) -> Result<()> {
        let at_snapshot = match self
            .at
            .db
            .catalog_at(&self.at.gen, self.at.tid)?
            .get_id(array_id)
        {
            Ok(info) => info.n_blocks().unwrap_or(0),
            Err(_) => 0,
        };
        let mut st = self.state.lock();
        let staged_end = st.blocks.end_from(array_id, from);
        let hole = encode::encode_plain(&[])?;
        for blk in from..at_snapshot.max(staged_end) {
            if keep.binary_search(&blk).is_ok() {
                continue;
            }
            let stored = st.blocks.contains_key(&(array_id, blk))
                || self
                    .at
                    .gen
                    .version_at(
                        &Key::Block {
                            array: array_id,
                            blk,
                        },
                        self.at.tid,
                    )?
                    .is_some_and(|v| v.encoding != Encoding::Hole);
            if stored {
                st.blocks.insert((array_id, blk), hole.clone());
            }
        }
        Ok(())
    }

    /// Does this transaction have changes to commit?
    pub fn is_dirty(&self) -> bool {
        let st = self.state.lock();
        st.names_changed || !st.meta_changed.is_empty() || !st.blocks.is_empty()
    }

    /// Commit atomically; returns the new tid (or the snapshot tid if nothing changed).
    /// `Error::Conflict` if another transaction committed a change to a key written here
    /// after this transaction's snapshot.
    /// Commit with a user name and a description recorded in the history.
    pub fn commit_with(&self, user: &str, desc: &str) -> Result<Tid> {
        let st = std::mem::take(&mut *self.state.lock());
        if !st.names_changed && st.meta_changed.is_empty() && st.blocks.is_empty() {
            return Ok(self.at.tid);
        }
        let mut writes = Vec::with_capacity(st.blocks.len() + st.meta_changed.len() + 1);
        if st.names_changed {
            writes.push(Write {
                key: Key::Names,
                value: encode::encode_plain(&[])?,
                flags: 0,
            });
        }
        for (id, m) in &st.meta_changed {
            let (value, flags) = match m {
                Some(info) => (encode::encode_plain(&info.encode()?)?, 0),
                None => (encode::encode_plain(&[])?, FLAG_DELETED),
            };
            writes.push(Write {
                key: Key::Meta { array: *id },
                value,
                flags,
            });
        }
        let mut must_exist: Vec<u64> = Vec::new();
        for ((a, b), e) in st.blocks.into_blocks() {
            if must_exist.last() != Some(&a) {
                must_exist.push(a);
            }
            writes.push(Write {
                key: Key::Block { array: a, blk: b },
                value: e,
                flags: 0,
            });
        }
        let cat = st.catalog;
        let req = CommitRequest {
            snapshot: self.at.tid,
            writes: &writes,
            user,
            desc,
            must_exist: &must_exist,
        };
        self.at.db.inner.store.commit(&req, &|k| name_key(&cat, k))
    }
}

impl TxInner {
    /// The database it belongs to.
    pub fn db(&self) -> &Db {
        &self.at.db
    }
}
