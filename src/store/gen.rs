//! The read path: a generation ([`Gen`]) is one log file and its index; it loads a
//! key's version at a tid, resolves delta chains, reads single pages, and gives the
//! raw blocks that can be mapped instead of read, checking stored bytes as `verify`
//! says.

use std::sync::Arc;

use parking_lot::RwLock;

use super::index::Index;
use crate::format::checkpoint::Version;
use crate::format::{self, Encoding, Key, PAGE};
use crate::log::Log;
use crate::verify::{self, BootTable, Checked, Stored, Verify};
use crate::{Error, Result, Tid};

/// The stored payload of version `v`, as `verify` names it.
fn stored_of(v: &Version) -> Stored {
    Stored {
        offset: v.payload_off(),
        len: u64::from(v.stored_len),
        crc: v.data_crc,
    }
}

/// One log file and its index.
#[derive(Debug)]
pub struct Gen {
    /// The log file.
    pub log: Log,
    /// Its index.
    pub index: RwLock<Index>,
    /// When stored versions of this file need a CRC check, and which this process
    /// (or, `Verify::OncePerBoot`, this boot) already checked.
    pub(super) checked: Checked,
}

impl Gen {
    /// The generation of `log` with index `index`, checking raw versions as `verify`
    /// says (sharing what was checked through `table` under `Verify::OncePerBoot`).
    pub fn new(log: Log, index: Index, verify: Verify, table: Option<Arc<BootTable>>) -> Gen {
        let checked = Checked::new(verify, log.holder(), table);
        Gen {
            log,
            index: RwLock::new(index),
            checked,
        }
    }

    /// Run `f` on the index (under its read lock). If the index's checkpoint part turns
    /// out damaged (a page fails its CRC or holds impossible values, or cannot be read),
    /// rebuild the index from the log and run `f` again on that: a damaged checkpoint
    /// costs a scan of the log, never a wrong answer. Errors of `f` that are not the
    /// checkpoint's are returned as they are.
    pub fn with_index<R>(&self, mut f: impl FnMut(&Index) -> Result<R>) -> Result<R> {
        {
            let ix = self.index.read();
            match f(&ix) {
                Err(e) if ix.ckpt_failed() => {
                    tracing::warn!(error = %e, "index checkpoint damaged; rebuilding the index from the log");
                }
                r => return r,
            }
        }
        self.rebuild_index()?;
        f(&self.index.read())
    }

    /// Replace an index whose checkpoint part failed by one built from the log's
    /// transaction headers up to the index's end (under the index's write lock, so
    /// readers wait for the scan: this is the rare path). The new index has no
    /// checkpoint part and counts as not checkpointed, so the next checkpoint written
    /// replaces the damaged file.
    fn rebuild_index(&self) -> Result<()> {
        let mut ix = self.index.write();
        if !ix.ckpt_failed() {
            // Another thread rebuilt it meanwhile.
            return Ok(());
        }
        let (end, last) = (ix.end, ix.last_tid);
        let scan = self
            .log
            .scan_to(format::FILE_HEADER_SIZE, Tid::ZERO, false, end)?;
        let mut nix = Index::empty();
        for tx in &scan.txs {
            nix.apply(tx);
        }
        if nix.end != end || nix.last_tid != last {
            return Err(scan.stop.unwrap_or_else(|| {
                Error::corruption(
                    nix.end,
                    format!(
                        "rebuilding the index: the log's transactions end at {} (tid {}), not at {end} (tid {last})",
                        nix.end, nix.last_tid
                    ),
                )
            }));
        }
        nix.checkpointed_end = format::FILE_HEADER_SIZE;
        *ix = nix;
        Ok(())
    }

    /// The version of `key` visible at `at` (the newest with tid ≤ at).
    pub fn version_at(&self, key: &Key, at: Tid) -> Result<Option<Version>> {
        self.with_index(|ix| ix.version_at(key, at))
    }

    /// The chain of the version of `key` visible at `at` ([`Index::chain_at`]).
    pub fn chain_at(&self, key: &Key, at: Tid) -> Result<Option<Vec<Version>>> {
        self.with_index(|ix| ix.chain_at(key, at))
    }

    /// Load the value of `key` visible at `at` into `buf` (zero-filled past the stored
    /// value). Returns the tid of that version, or None if the key had no version (buf
    /// is then all zeros). The CRC of the stored bytes is checked on every read.
    /// A delta version is resolved through its chain (base, then each delta), every
    /// record's CRCs checked.
    pub fn load(&self, key: &Key, at: Tid, buf: &mut [u8]) -> Result<Option<Version>> {
        let chain = self.chain_at(key, at)?;
        let Some(chain) = chain else {
            buf.fill(0);
            return Ok(None);
        };
        self.read_chain(&chain, buf)?;
        Ok(chain.last().copied())
    }

    /// Read a chain (as [`Index::chain_at`] returns it) into `buf`, a whole block
    /// (zero-filled past the value).
    pub fn read_chain(&self, chain: &[Version], buf: &mut [u8]) -> Result<()> {
        let (base, deltas) = chain
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("empty chain".into()))?;
        // A raw base is trusted under `Verify::Off`; what deltas add is checked.
        self.read_full(base, buf, self.checked.mode() != Verify::Off)?;
        let mut cur = usize::try_from(base.logical_len)
            .map_err(|_| Error::corruption(base.rec_off, "logical length"))?;
        let mut prev = base.rec_off;
        for d in deltas {
            let payload = self.read_delta(d, prev)?;
            let dp = format::DeltaPayload::decode(&payload, d.payload_off())?;
            dp.apply(buf, cur, d.rec_off)?;
            cur = usize::try_from(dp.result_len)
                .map_err(|_| Error::corruption(d.rec_off, "delta result length"))?;
            prev = d.rec_off;
        }
        Ok(())
    }

    /// Resolve a chain to the value's bytes, cut to its logical length (for
    /// compaction, which does not know block sizes).
    pub fn resolve_chain(&self, chain: &[Version]) -> Result<Vec<u8>> {
        let (base, deltas) = chain
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("empty chain".into()))?;
        let mut buf = vec![
            0u8;
            usize::try_from(base.logical_len)
                .map_err(|_| Error::corruption(base.rec_off, "logical length"))?
        ];
        self.read_version(base, &mut buf)?;
        let mut prev = base.rec_off;
        for d in deltas {
            let payload = self.read_delta(d, prev)?;
            let dp = format::DeltaPayload::decode(&payload, d.payload_off())?;
            let cur = buf.len();
            let new_len = usize::try_from(dp.result_len)
                .map_err(|_| Error::corruption(d.rec_off, "delta result length"))?;
            buf.resize(cur.max(new_len), 0);
            dp.apply(&mut buf, cur, d.rec_off)?;
            buf.truncate(new_len);
            prev = d.rec_off;
        }
        Ok(buf)
    }

    /// Read a delta record (header and payload, one read) whose base is the record at
    /// `base_off`: checks the header CRC, that it matches the index and points back to
    /// that base, and the payload CRC; returns the delta payload (decompressed).
    pub fn read_delta(&self, d: &Version, base_off: u64) -> Result<Vec<u8>> {
        let stored = usize::try_from(d.stored_len)
            .map_err(|_| Error::corruption(d.rec_off, "stored length"))?;
        let hs = format::RECORD_HEADER_SIZE;
        let mut b = vec![0u8; hs + stored];
        self.log.read_exact_at(&mut b, d.rec_off)?;
        let rh = format::RecordHeader::decode(&b[..hs], d.rec_off)?;
        if rh.encoding != d.encoding
            || rh.stored_len != d.stored_len
            || rh.logical_len != d.logical_len
            || rh.data_crc != d.data_crc
        {
            return Err(Error::corruption(
                d.rec_off,
                "delta record header does not match the index",
            ));
        }
        if rh.prev_off != base_off {
            return Err(Error::corruption(
                d.rec_off + 24,
                format!(
                    "delta back pointer {} but the previous version of its block is at {base_off}",
                    rh.prev_off
                ),
            ));
        }
        if crate::verify::crc32(&b[hs..]) != rh.data_crc {
            return Err(Error::corruption(
                d.payload_off(),
                format!("data CRC mismatch (delta of tid {})", d.tid),
            ));
        }
        match d.encoding {
            Encoding::DeltaZstd => {
                let mut out =
                    vec![
                        0u8;
                        usize::try_from(d.logical_len)
                            .map_err(|_| Error::corruption(d.rec_off, "logical length"))?
                    ];
                super::encode::decompress_into(&b[hs..], &mut out, d.payload_off())?;
                Ok(out)
            }
            _ => {
                b.drain(..hs);
                Ok(b)
            }
        }
    }

    /// How many of `samples` pages spread evenly over the block differ between `data`
    /// (a whole block) and the raw full version `v`, reading only those pages. A hint
    /// for choosing between a delta and a full block, so the pages are not
    /// CRC-checked here (a delta is always computed from a checked read).
    pub fn sample_raw_diffs(&self, v: &Version, data: &[u8], samples: usize) -> Result<usize> {
        if v.encoding != Encoding::Raw {
            return Err(Error::InvalidArgument("not a raw version".into()));
        }
        let pages = data.len() / PAGE;
        let stored = usize::try_from(v.logical_len).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; PAGE];
        let mut diffs = 0;
        for k in 0..samples.min(pages) {
            let i = (2 * k + 1) * pages / (2 * samples.min(pages));
            let new = &data[i * PAGE..(i + 1) * PAGE];
            let same = if (i + 1) * PAGE <= stored {
                self.log
                    .read_pages_at(&mut buf, v.payload_off() + (i * PAGE) as u64)?;
                new == &buf[..]
            } else {
                new.iter().all(|&b| b == 0)
            };
            diffs += usize::from(!same);
        }
        Ok(diffs)
    }

    /// Small writes: pages `pages` (4 KiB each, any order) of the value a chain (as
    /// [`Index::chain_at`] returns it) resolves to, into `out` (4 KiB per entry, in
    /// order), reading only what they need: each page comes from the newest delta that
    /// carries it, else from the full version, zeros past a version's length. Every
    /// record read is CRC-checked: the deltas as they are read; a raw full version once
    /// per process through a mapping of the file (the check zero-copy reads make, shared
    /// with them), then only its pages are read; other full versions are read whole.
    pub fn read_pages(&self, chain: &[Version], pages: &[u32], out: &mut [u8]) -> Result<()> {
        if out.len() != pages.len() * PAGE {
            return Err(Error::InvalidArgument(format!(
                "{} bytes for {} pages",
                out.len(),
                pages.len()
            )));
        }
        let (base, deltas) = chain
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("empty chain".into()))?;
        let mut payloads = Vec::with_capacity(deltas.len());
        let mut prev = base.rec_off;
        for d in deltas {
            payloads.push((self.read_delta(d, prev)?, d.payload_off()));
            prev = d.rec_off;
        }
        let decoded = payloads
            .iter()
            .map(|(p, off)| format::DeltaPayload::decode(p, *off))
            .collect::<Result<Vec<_>>>()?;
        let mut from_base: Vec<(usize, u32)> = Vec::new();
        'pages: for (k, (&i, dst)) in pages.iter().zip(out.chunks_exact_mut(PAGE)).enumerate() {
            let at = u64::from(i) * PAGE as u64;
            for dp in decoded.iter().rev() {
                if at >= u64::from(dp.result_len) {
                    dst.fill(0);
                    continue 'pages;
                }
                if let Some((_, bytes)) = dp.pages().find(|&(j, _)| j == i) {
                    dst.copy_from_slice(bytes);
                    continue 'pages;
                }
            }
            from_base.push((k, i));
        }
        if from_base.is_empty() {
            return Ok(());
        }
        let stored = usize::try_from(base.stored_len)
            .map_err(|_| Error::corruption(base.rec_off, "stored length"))?;
        let logical = usize::try_from(base.logical_len)
            .map_err(|_| Error::corruption(base.rec_off, "logical length"))?;
        match base.encoding {
            Encoding::Hole => {
                for (k, _) in from_base {
                    out[k * PAGE..(k + 1) * PAGE].fill(0);
                }
            }
            Encoding::Raw => {
                // Read only the pages asked, checked: not at all when the payload is
                // known checked (or trusted), else against the page CRC table
                // (storage-format.md §2.7) when it has one, else by the whole
                // payload's CRC, read through the file and recorded.
                let off = base.payload_off();
                let sv = stored_of(base);
                let table = if !self.checked.needs_check(&sv, None) {
                    None
                } else if base.has_page_crcs() {
                    Some(
                        self.page_table(base)?
                            .ok_or_else(|| Error::corruption(base.rec_off, "page CRC table"))?,
                    )
                } else {
                    self.check_range(&sv, None)?;
                    None
                };
                for (k, i) in from_base {
                    let dst = &mut out[k * PAGE..(k + 1) * PAGE];
                    let at = usize::try_from(i)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(PAGE);
                    let n = stored.min(logical).saturating_sub(at).min(PAGE);
                    if n > 0 {
                        self.log.read_pages_at(&mut dst[..n], off + at as u64)?;
                        // Pages past the stored bytes are zeros (n == 0); a stored
                        // page is checked against its table entry.
                        if let Some(table) = &table {
                            if verify::check_pages(&dst[..n], &table[at / PAGE..]).is_some() {
                                return Err(Error::corruption(
                                    off + at as u64,
                                    format!(
                                        "data CRC mismatch in page {} (version of tid {})",
                                        at / PAGE,
                                        base.tid
                                    ),
                                ));
                            }
                        }
                    }
                    dst[n..].fill(0);
                }
            }
            _ => {
                // Compressed: read (and check) the value whole.
                let mut buf = vec![0u8; logical];
                self.read_version(base, &mut buf)?;
                for (k, i) in from_base {
                    let dst = &mut out[k * PAGE..(k + 1) * PAGE];
                    let at = usize::try_from(i)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(PAGE);
                    let n = logical.saturating_sub(at).min(PAGE);
                    if n > 0 {
                        dst[..n].copy_from_slice(&buf[at..at + n]);
                    }
                    dst[n..].fill(0);
                }
            }
        }
        Ok(())
    }

    /// Zero-copy reads of a delta-chained block: the raw base version of the chain of
    /// `key` at `at` as a file slice (checked like [`Gen::map_source`]: its CRC once per
    /// process), with the pages its deltas change as overlay pages (read and checked
    /// through [`Gen::read_pages`]). None when the version is not a delta on a raw,
    /// page-aligned base, or a delta cuts the value shorter than the base (the pages
    /// past its end would need zeroing too).
    pub fn map_chain(
        self: &Arc<Self>,
        key: &Key,
        at: Tid,
        block_size: usize,
        fetch: bool,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        let Some(chain) = self.chain_at(key, at)? else {
            return Ok(None);
        };
        let (base, deltas) = match chain.split_first() {
            Some((b, d)) if !d.is_empty() && b.encoding == Encoding::Raw => (b, d),
            _ => return Ok(None),
        };
        let page = rustix::param::page_size() as u64;
        let off = base.payload_off();
        let stored = u64::from(base.stored_len);
        let Some(file) = self.log.map_fd(off, stored, fetch) else {
            return Ok(None);
        };
        if page != PAGE as u64
            || off % page != 0
            || stored % page != 0
            || stored > block_size as u64
            || u64::from(base.logical_len) > block_size as u64
            || stored > u64::from(base.logical_len)
        {
            return Ok(None);
        }
        let mut prev = base.rec_off;
        let mut idx: Vec<u32> = Vec::new();
        for d in deltas {
            let p = self.read_delta(d, prev)?;
            let dp = format::DeltaPayload::decode(&p, d.payload_off())?;
            if u64::from(dp.result_len) < u64::from(base.logical_len)
                || u64::from(dp.result_len) > block_size as u64
            {
                return Ok(None);
            }
            idx.extend(dp.pages().map(|(i, _)| i));
            prev = d.rec_off;
        }
        idx.sort_unstable();
        idx.dedup();
        let sv = stored_of(base);
        if self.checked.needs_check(&sv, file.cache_file) {
            self.check_range(&sv, file.cache_file)?;
        }
        let mut bytes = vec![0u8; idx.len() * PAGE];
        self.read_pages(&chain, &idx, &mut bytes)?;
        let pages: Vec<(u32, Box<[u8]>)> = idx
            .iter()
            .zip(bytes.chunks_exact(PAGE))
            .map(|(&i, b)| (i, Box::from(b)))
            .collect();
        Ok(Some(crate::bigfile::FileSlice {
            fd: file.fd,
            keep: file.keep.unwrap_or_else(|| self.clone()),
            offset: off,
            len: stored as usize,
            pages: Some(pages.into()),
            crc: None,
            page_crcs: None,
            cache_file: file.cache_file,
        }))
    }

    /// The logical length of the value a chain resolves to: the full version's, or the
    /// result length of its newest delta (read and checked).
    pub fn chain_len(&self, chain: &[Version]) -> Result<u64> {
        match chain {
            [] => Err(Error::InvalidArgument("empty chain".into())),
            [only] => Ok(u64::from(only.logical_len)),
            [.., prev, last] => {
                let p = self.read_delta(last, prev.rec_off)?;
                Ok(u64::from(
                    format::DeltaPayload::decode(&p, last.payload_off())?.result_len,
                ))
            }
        }
    }

    /// Zero-copy reads of any version that has them: [`Gen::map_source`] for a raw
    /// block, else [`Gen::map_chain`] for a delta chain over a raw base. `fetch`: see
    /// [`LogIo::map_fd`](crate::log::io::LogIo::map_fd).
    pub fn map_block(
        self: &Arc<Self>,
        key: &Key,
        at: Tid,
        block_size: usize,
        fetch: bool,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        match self.map_source(key, at, block_size, fetch)? {
            Some(s) => Ok(Some(s)),
            None => self.map_chain(key, at, block_size, fetch),
        }
    }

    /// Zero-copy reads: the file bytes of the version of `key` visible at `at`, if it is
    /// a full raw block of `block_size` bytes stored page-aligned (storage-format.md
    /// §2.2) in a real file; None for a hole, a compressed or delta version, a key never
    /// written, or a log that is not a file. Until [`Gen::mark_checked`] records that
    /// this process checked the bytes, the slice carries the data CRC for the caller to
    /// check (virtmem does, through the mapping that serves the block); afterwards it
    /// carries none: committed bytes never change.
    pub fn map_source(
        self: &Arc<Self>,
        key: &Key,
        at: Tid,
        block_size: usize,
        fetch: bool,
    ) -> Result<Option<crate::bigfile::FileSlice>> {
        let Some(v) = self.version_at(key, at)? else {
            return Ok(None);
        };
        if v.encoding != Encoding::Raw {
            return Ok(None);
        }
        let page = rustix::param::page_size() as u64;
        let off = v.payload_off();
        let stored = u64::from(v.stored_len);
        let Some(file) = self.log.map_fd(off, stored, fetch) else {
            return Ok(None);
        };
        if off % page != 0
            || stored % page != 0
            || stored > block_size as u64
            || u64::from(v.logical_len) > block_size as u64
            || stored > u64::from(v.logical_len)
        {
            return Ok(None);
        }
        let crc = self
            .checked
            .needs_check(&stored_of(&v), file.cache_file)
            .then_some(v.data_crc);
        let page_crcs = match crc {
            Some(_) => self.page_table(&v)?.map(Arc::from),
            None => None,
        };
        Ok(Some(crate::bigfile::FileSlice {
            fd: file.fd,
            keep: file.keep.unwrap_or_else(|| self.clone()),
            offset: off,
            len: stored as usize,
            pages: None,
            crc,
            page_crcs,
            cache_file: file.cache_file,
        }))
    }

    /// The page CRC table of version `v` (storage-format.md §2.7), read and checked
    /// (its own CRC; a mismatch is `Corruption`, the table is never trusted); None if
    /// the record has none.
    pub fn page_table(&self, v: &Version) -> Result<Option<Vec<u32>>> {
        if !v.has_page_crcs() {
            return Ok(None);
        }
        let len = usize::try_from(v.table_len())
            .map_err(|_| Error::corruption(v.rec_off, "page CRC table length"))?;
        let mut b = vec![0u8; len];
        self.log.read_exact_at(&mut b, v.rec_off + v.table_rel())?;
        format::decode_page_table(&b, v.stored_len, v.rec_off).map(Some)
    }

    /// The mapped bytes of `src` (from [`Gen::map_source`] or [`Gen::map_chain`])
    /// matched their CRC: record it (`verify`).
    pub fn mark_checked(&self, src: &crate::bigfile::FileSlice) {
        if let Some(crc) = src.crc {
            self.checked.record(
                &Stored {
                    offset: src.offset,
                    len: src.len as u64,
                    crc,
                },
                src.cache_file,
            );
        }
    }

    /// About to check the mapped bytes of `src` whole: `false` if another process
    /// checked them meanwhile ([`Checked::claim`]).
    pub fn claim_check(&self, src: &crate::bigfile::FileSlice) -> bool {
        match src.crc {
            Some(crc) => self.checked.claim(
                &Stored {
                    offset: src.offset,
                    len: src.len as u64,
                    crc,
                },
                src.cache_file,
            ),
            None => false,
        }
    }

    /// Check the whole stored payload `v` read through the file (in pieces) against
    /// its CRC, and record the match.
    fn check_range(&self, v: &Stored, file: Option<verify::Inode>) -> Result<()> {
        let got = verify::crc_of_range(|b, o| self.log.read_exact_at(b, o), v.offset, v.len)?;
        if got != v.crc {
            return Err(Error::corruption(
                v.offset,
                format!("data CRC mismatch ({got:#010x}, recorded {:#010x})", v.crc),
            ));
        }
        self.checked.record(v, file);
        Ok(())
    }

    /// The verification mode of this file's reads.
    #[cfg(any(test, feature = "internals"))]
    pub fn verify_mode(&self) -> Verify {
        self.checked.mode()
    }

    /// Read one full version into `buf` (which must be at least its logical length),
    /// its CRC checked whatever the verification mode (compaction, the catalog). A
    /// delta version is read with [`Gen::load`] or [`Gen::read_chain`].
    pub fn read_version(&self, v: &Version, buf: &mut [u8]) -> Result<()> {
        self.read_full(v, buf, true)
    }

    /// [`Gen::read_version`]; `check_raw`: check a raw payload's CRC (compressed ones
    /// are always checked, as they are decompressed).
    fn read_full(&self, v: &Version, buf: &mut [u8], check_raw: bool) -> Result<()> {
        let logical = usize::try_from(v.logical_len)
            .map_err(|_| Error::corruption(v.rec_off, "logical length"))?;
        if logical > buf.len() {
            return Err(Error::corruption(
                v.rec_off,
                format!(
                    "value of {logical} bytes does not fit a buffer of {}",
                    buf.len()
                ),
            ));
        }
        let stored = usize::try_from(v.stored_len)
            .map_err(|_| Error::corruption(v.rec_off, "stored length"))?;
        match v.encoding {
            Encoding::DeltaRaw | Encoding::DeltaZstd => {
                return Err(Error::corruption(
                    v.rec_off,
                    "a delta record read as a full value",
                ))
            }
            Encoding::Hole => buf.fill(0),
            Encoding::Raw => {
                self.log
                    .read_exact_at(&mut buf[..stored], v.payload_off())?;
                if check_raw && crate::verify::crc32(&buf[..stored]) != v.data_crc {
                    return Err(Error::corruption(
                        v.payload_off(),
                        format!("data CRC mismatch (version of tid {})", v.tid),
                    ));
                }
                buf[stored..].fill(0);
            }
            Encoding::Zstd => {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                SCRATCH.with(|s| -> Result<()> {
                    let mut s = s.borrow_mut();
                    s.clear();
                    s.resize(stored, 0);
                    self.log.read_exact_at(&mut s, v.payload_off())?;
                    if crate::verify::crc32(&s) != v.data_crc {
                        return Err(Error::corruption(
                            v.payload_off(),
                            format!("data CRC mismatch (version of tid {})", v.tid),
                        ));
                    }
                    super::encode::decompress_into(&s, &mut buf[..logical], v.payload_off())
                })?;
                buf[logical..].fill(0);
            }
        }
        Ok(())
    }

    /// Last committed tid known to this generation.
    pub fn last_tid(&self) -> Tid {
        self.index.read().last_tid
    }

    /// Oldest tid whose snapshot is complete in this file.
    pub fn base_tid(&self) -> Tid {
        self.log.base_tid()
    }
}
