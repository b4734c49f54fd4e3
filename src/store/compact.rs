//! Compaction: copy the versions still needed into a new file, catch up with commits
//! made meanwhile, and switch atomically by rename. Protocol and crash cases in
//! storage-format.md, section "Compaction".
//!
//! A version of a key (written at t, superseded at n, or never) is kept iff some needed
//! snapshot s has t ≤ s < n: s = the head, any live reader's tid, or (with keep-history
//! K) any s ≥ K. Blocks of an array count as superseded when the array is deleted.
//! Every kept delta version is folded into a full block (its base may not be kept, and
//! the new file's offsets differ), so a compacted file starts with no delta chains.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::encode::{self, Encoded, Payload};
use super::spill::SpillFile;
use super::{checkpoint_path, is_tombstone, write_atomically, Gen, Index, Store};
use crate::format::checkpoint::Version;
use crate::format::{self, Encoding, FileRange, Key, PayloadSrc, RecordIn};
use crate::log::Log;
use crate::{Error, Result, Tid};

/// What compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// File size before.
    pub old_size: u64,
    /// File size after.
    pub new_size: u64,
    /// Versions copied.
    pub versions_kept: u64,
    /// Versions dropped.
    pub versions_dropped: u64,
    /// Snapshots older than this are no longer available (except live readers').
    pub base_tid: Tid,
}

/// Is a version written at `t` and superseded at `next` (or never) needed by the
/// head, one of `readers`, or (with `keep`) a snapshot at or after `keep`?
fn needed(
    t: Tid,
    next: Option<Tid>,
    head: Tid,
    readers: &[Tid],
    keep: Option<Tid>,
) -> bool {
    let visible = |s: Tid| t <= s && next.is_none_or(|n| s < n);
    visible(head)
        || readers.iter().any(|&r| visible(r))
        || keep.is_some_and(|k| next.is_none_or(|n| n > k))
}

/// Walks every version of `versions` (each key's versions oldest first) and calls
/// `f(key, the key's versions, index, kept)`: a version is kept iff it is [`needed`] by
/// the head, one of `readers` or, with `keep`, a snapshot at or after it. The
/// deletion of an array supersedes its blocks (see the module doc).
pub(crate) fn retain(
    versions: &[(Key, Vec<Version>)],
    head: Tid,
    readers: &[Tid],
    keep: Option<Tid>,
    mut f: impl FnMut(&Key, &[Version], usize, bool),
) {
    // Deletion tids of arrays, to end their blocks' lifetimes.
    let mut deleted: HashMap<u64, Vec<Tid>> = HashMap::new();
    for (k, vs) in versions {
        if let Key::Meta { array } = k {
            deleted.insert(
                *array,
                vs.iter()
                    .filter(|v| is_tombstone(v))
                    .map(|v| v.tid)
                    .collect(),
            );
        }
    }
    for (k, vs) in versions {
        for (i, v) in vs.iter().enumerate() {
            let mut next = vs.get(i + 1).map(|n| n.tid);
            if let Key::Block { array, .. } = k {
                if let Some(d) = deleted
                    .get(array)
                    .and_then(|ds| ds.iter().find(|&&d| d > v.tid))
                {
                    next = Some(next.map_or(*d, |n| n.min(*d)));
                }
            }
            f(k, vs, i, needed(v.tid, next, head, readers, keep));
        }
    }
}

/// Folded delta payloads of one transaction kept in memory up to this many bytes; past
/// it they go to a spill file, so that compacting a transaction bigger than RAM holds a
/// block or two in memory, not the transaction.
const FOLD_RAM: usize = 32 << 20;

/// One kept version, ready to be written: its encoded value, and where its payload
/// comes from when that is the source log itself.
struct Kept {
    value: Encoded,
    /// `(offset, length)` of the verified payload in the source log, copied from there
    /// by the append (the value's own payload is then empty).
    from_log: Option<(u64, u32)>,
}

impl Kept {
    /// Length of the payload as stored in the new file.
    fn stored_len(&self) -> usize {
        match self.from_log {
            Some((_, len)) => len as usize,
            None => self.value.payload.len(),
        }
    }
}

/// The spill slot for a payload of `len` bytes: the next power of two, at least a page.
pub(crate) fn spill_slot_size(len: usize) -> u64 {
    (len as u64).max(format::PAGE as u64).next_power_of_two()
}

/// Fold the delta version `v` of `key` into a full block: resolve its chain in `src`
/// (every CRC checked) and encode the result — zstd (level 3, where it saves 1/8) when
/// the chain's full version was zstd, else raw (or a hole if all zeros).
fn fold(src: &Gen, key: &Key, v: &Version) -> Result<Encoded> {
    let chain = src
        .chain_at(key, v.tid)?
        .ok_or_else(|| Error::corruption(v.rec_off, "delta version missing from the index"))?;
    if chain.last() != Some(v) {
        return Err(Error::corruption(
            v.rec_off,
            "delta version is not the key's version at its tid",
        ));
    }
    let bytes = src.resolve_chain(&chain)?;
    let level = (chain[0].encoding == Encoding::Zstd).then_some(3);
    encode::encode_block(&bytes, level)
}

/// What a compaction copies, decided from the index of the generation it starts at.
struct Plan {
    /// The newest tid of that generation: commits after it are caught up with.
    head: Tid,
    /// The new file's base tid.
    base_tid: Tid,
    /// The kept versions, by the tid of the transaction that wrote them (sorted by key).
    by_tid: BTreeMap<Tid, Vec<(Key, Version)>>,
    /// Versions kept and dropped.
    kept: u64,
    dropped: u64,
    /// `(start, end)` in the source log of every transaction, by tid.
    src_txs: HashMap<Tid, (u64, u64)>,
}

/// The new file while it is written: its log, where the next transaction goes, and the
/// offset of each key's newest record in it (the back pointers of the next ones).
struct Target {
    dst: Log,
    end: u64,
    new_off: HashMap<Key, u64>,
}

impl Target {
    /// Copy `items` (all of `tid`) from `src` as one transaction at the end of the new file. Payloads are
    /// checked against their CRC one at a time and copied from the source log by the
    /// append (in the kernel where both are plain files); folded deltas are encoded here and
    /// spilled past [`FOLD_RAM`]. So memory holds a block at a time, whatever the size of
    /// the transaction.
    fn copy_tx(
        &mut self,
        store: &Store,
        src: &Gen,
        tid: Tid,
        items: &[(Key, Version)],
        src_txs: &HashMap<Tid, (u64, u64)>,
    ) -> Result<()> {
        let mut scratch = Vec::new();
        let (user, desc, wall) = match src_txs.get(&tid) {
            Some(&(off, limit)) => {
                let tx = src.log.read_tx(off, limit, false, &mut scratch)?;
                (tx.user, tx.desc, tx.header.wall_ns)
            }
            None => (String::new(), String::new(), 0),
        };
        let src_file = src.log.file();
        let mut spill: Option<Arc<SpillFile>> = None;
        let mut in_ram = 0usize;
        let mut kept = Vec::with_capacity(items.len());
        for (k, v) in items {
            if v.encoding.is_delta() {
                let mut e = fold(src, k, v)?;
                if in_ram + e.payload.len() > FOLD_RAM {
                    let file = match &spill {
                        Some(f) => f.clone(),
                        None => spill.insert(store.create_spill()?).clone(),
                    };
                    let bytes = e.payload.to_vec(e.data_crc)?;
                    let slot = file.write(&bytes, spill_slot_size(bytes.len()))?;
                    drop(bytes);
                    e.payload = Payload::Spilled(slot);
                } else {
                    in_ram += e.payload.len();
                }
                kept.push(Kept {
                    value: e,
                    from_log: None,
                });
                continue;
            }
            scratch.clear();
            scratch.resize(
                usize::try_from(v.stored_len)
                    .map_err(|_| Error::corruption(v.rec_off, "stored length"))?,
                0,
            );
            src.log.read_exact_at(&mut scratch, v.payload_off())?;
            // A raw block gets its page CRC table in the new (current version) file: the
            // page CRCs are computed in the pass that checks the data CRC.
            let (page_crcs, crc) = if v.encoding == Encoding::Raw && matches!(k, Key::Block { .. }) {
                format::page_crcs(&scratch)
            } else {
                (Vec::new(), crate::verify::crc32(&scratch))
            };
            if crc != v.data_crc {
                return Err(Error::corruption(
                    v.payload_off(),
                    format!(
                        "data CRC mismatch while compacting (version of tid {})",
                        v.tid
                    ),
                ));
            }
            let (payload, from_log) = match src_file {
                Some(_) => (Vec::new(), Some((v.payload_off(), v.stored_len))),
                None => (scratch.clone(), None),
            };
            kept.push(Kept {
                value: Encoded {
                    encoding: v.encoding,
                    logical_len: v.logical_len,
                    payload: Payload::Mem(payload),
                    data_crc: v.data_crc,
                    page_crcs,
                    page_table: None,
                },
                from_log,
            });
        }
        drop(scratch);
        let recs: Vec<RecordIn<'_>> = items
            .iter()
            .zip(&kept)
            .map(|((k, v), p)| RecordIn {
                key: *k,
                encoding: p.value.encoding,
                // The new file is of the current version: its own layout flags.
                flags: (v.flags & !format::FLAG_ALIGNED)
                    | format::layout_flags(format::FORMAT_VERSION, k, p.value.encoding, p.stored_len()),
                prev_off: self.new_off.get(k).copied().unwrap_or(0),
                logical_len: p.value.logical_len,
                payload: match (p.from_log, src_file) {
                    (Some((off, len)), Some(file)) => PayloadSrc::File(FileRange {
                        file,
                        off,
                        len,
                        release: false,
                    }),
                    _ => p.value.payload.src(),
                },
                data_crc: p.value.data_crc,
                page_crcs: p.value.table_src(),
            })
            .collect();
        let enc = format::encode_tx(self.end, tid, wall, &user, &desc, &recs)?;
        self.dst.append(self.end, &enc, false)?;
        for ((k, _), off) in items.iter().zip(&enc.record_offsets) {
            self.new_off.insert(*k, *off);
        }
        self.end += enc.total_len;
        Ok(())
    }
}

impl Store {
    /// Compact the database file. `keep_history`: also keep every snapshot ≥ this tid.
    /// `progress(done, total)` is called as versions are copied.
    pub fn compact(
        &self,
        keep_history: Option<Tid>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport> {
        if self.read_only() {
            return Err(Error::ReadOnly("the database was opened read-only".into()));
        }
        self.check_poisoned()?;
        if let Some(r) = self.storage() {
            return r.compact(self, keep_history, progress);
        }
        let _c = self.lock_file().try_compaction()?;
        let gen = self.refresh()?;
        let old_size = gen.log.len()?;
        let plan = self.compaction_plan(&gen, keep_history)?;
        let (versions_dropped, base_tid) = (plan.dropped, plan.base_tid);
        let mut tmp = self.path().as_os_str().to_owned();
        tmp.push(format!(".compact.{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let result = self.write_compacted(&gen, &tmp, plan, progress).map(
            |(new_size, versions_kept)| CompactReport {
                old_size,
                new_size,
                versions_kept,
                versions_dropped,
                base_tid,
            },
        );
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Which versions of `gen` a compaction keeps (see the module doc).
    fn compaction_plan(&self, gen: &Gen, keep_history: Option<Tid>) -> Result<Plan> {
        // The whole index (all of its checkpoint part read: compaction is O(versions)).
        let (head, versions, txs) =
            gen.with_index(|ix| Ok((ix.last_tid, ix.all_versions()?, ix.all_txs()?)))?;
        let readers: Vec<Tid> = self
            .lock_file()
            .live_readers()?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let base_tid = keep_history
            .map(|k| k.min(head))
            .unwrap_or(head)
            .max(gen.base_tid());
        let mut by_tid: BTreeMap<Tid, Vec<(Key, Version)>> = BTreeMap::new();
        let (mut kept, mut dropped) = (0u64, 0u64);
        retain(&versions, head, &readers, keep_history, |k, vs, i, keep| {
            if keep {
                by_tid.entry(vs[i].tid).or_default().push((*k, vs[i]));
                kept += 1;
            } else {
                dropped += 1;
            }
        });
        for items in by_tid.values_mut() {
            items.sort_by_key(|(k, _)| *k);
        }
        let src_txs = txs
            .iter()
            .map(|t| (t.tid, (t.off, t.off + t.len)))
            .collect();
        Ok(Plan {
            head,
            base_tid,
            by_tid,
            kept,
            dropped,
            src_txs,
        })
    }

    /// Write the compacted file at `tmp`, catch up and switch to it: the new file's
    /// size and the versions copied.
    fn write_compacted(
        &self,
        gen: &Arc<Gen>,
        tmp: &std::path::Path,
        mut plan: Plan,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(u64, u64)> {
        let mut target = Target {
            dst: Log::create(tmp, plan.base_tid)?,
            end: format::FILE_HEADER_SIZE,
            new_off: HashMap::new(),
        };
        let (mut done, total) = (0u64, plan.kept);
        for (tid, items) in &plan.by_tid {
            target.copy_tx(self, gen, *tid, items, &plan.src_txs)?;
            done += items.len() as u64;
            progress(done, total);
        }
        // Catch up under the writer lock with commits made while copying, then switch.
        let _w = self.lock_file().writer()?;
        let caught = self.catch_up(gen, &mut target, &mut plan)?;
        let new_size = self.switch_to(target.dst, tmp)?;
        Ok((new_size, plan.kept + caught))
    }

    /// Copy the commits made after `plan.head` (the writer lock held): how many
    /// versions they wrote.
    fn catch_up(&self, gen: &Arc<Gen>, target: &mut Target, plan: &mut Plan) -> Result<u64> {
        let gen2 = self.refresh()?;
        if !Arc::ptr_eq(gen, &gen2) {
            return Err(Error::Busy(
                "the database file was switched during compaction".into(),
            ));
        }
        let new_txs = gen2.with_index(|ix| ix.txs_after(plan.head))?;
        plan.src_txs
            .extend(new_txs.iter().map(|t| (t.tid, (t.off, t.off + t.len))));
        let mut caught = 0u64;
        for t in &new_txs {
            let mut scratch = Vec::new();
            let tx = gen2
                .log
                .read_tx(t.off, t.off + t.len, false, &mut scratch)?;
            let items: Vec<(Key, Version)> = tx
                .records
                .iter()
                .map(|(off, rh)| (rh.key, Version::from_header(t.tid, *off, rh)))
                .collect();
            target.copy_tx(self, &gen2, t.tid, &items, &plan.src_txs)?;
            caught += items.len() as u64;
        }
        Ok(caught)
    }

    /// Make the complete compacted file `dst` (at `tmp`) the database: its index, then
    /// its checkpoint, then the rename and the new generation. Returns its size.
    fn switch_to(&self, dst: Log, tmp: &std::path::Path) -> Result<u64> {
        dst.sync()?;
        let scan = dst.scan(format::FILE_HEADER_SIZE, Tid::ZERO, false)?;
        if let Some(e) = scan.stop {
            return Err(e);
        }
        let mut nix = Index::empty();
        for tx in &scan.txs {
            nix.apply(tx);
        }
        nix.checkpointed_end = nix.end;
        write_atomically(
            &checkpoint_path(self.path()),
            &nix.to_checkpoint(dst.header().uuid)?.encode()?,
        )?;
        std::fs::rename(tmp, self.path())?;
        crate::log::sync_dir(self.path())?;
        let new_log = Log::open(self.path(), false)?;
        self.lock_file().publish(new_log.header().uuid, nix.end)?;
        let new_size = new_log.len()?;
        let (verify, table) = self.verify_with();
        *self.gen.write() = Arc::new(Gen::new(new_log, nix, verify, table));
        Ok(new_size)
    }
}
