//! The commit path: what a commit asks for ([`CommitRequest`]), the conflict check and
//! encoding every storage shares ([`encode_commit`]), and the append of a local store
//! under the writer lock (invariants 4 and 5 of the module docs of `store`).

use super::{is_tombstone, Encoded, Gen, Store};
use crate::format::{self, Encoding, Key, RecordIn};
use crate::log::ScannedTx;
use crate::{Error, Result, Tid};

/// One value to commit.
#[derive(Debug, Clone)]
pub struct Write {
    /// Key.
    pub key: Key,
    /// Encoded value.
    pub value: Encoded,
    /// `FLAG_DELETED` for a catalog tombstone.
    pub flags: u8,
}

/// A commit to append.
#[derive(Debug)]
pub struct CommitRequest<'a> {
    /// The snapshot the transaction read at (conflict base).
    pub snapshot: Tid,
    /// The values written, in the order to write them.
    pub writes: &'a [Write],
    /// User name for the history.
    pub user: &'a str,
    /// Description for the history.
    pub desc: &'a str,
    /// Arrays whose blocks are written: the commit conflicts if one was deleted after
    /// the snapshot (its META key's newest version is a tombstone newer than it).
    pub must_exist: &'a [u64],
}

impl Store {
    pub(super) fn poison(&self, e: &Error) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(e.to_string());
        }
    }

    /// Commit: under the writer lock, catch up with the log, fail with `Conflict` if a
    /// written key has a version newer than the snapshot, append one transaction and
    /// (with `sync`) fdatasync it. `name` renders a key for the conflict message.
    pub fn commit(&self, req: &CommitRequest<'_>, name: &dyn Fn(&Key) -> String) -> Result<Tid> {
        if self.opts.read_only {
            return Err(Error::ReadOnly("the database was opened read-only".into()));
        }
        self.check_poisoned()?;
        if let Some(r) = &self.remote {
            return r.commit(self, req, name);
        }
        let _w = self.lock.writer()?;
        self.check_poisoned()?;
        let gen = self.refresh_inner(true)?;
        gen.index.read().assert_invariants();
        let (len, end) = (gen.log.len()?, gen.index.read().end);
        if len < end {
            // Committed bytes this process has seen are gone (the file was truncated or
            // replaced behind wdb's back): appending would leave a hole. Refuse.
            return Err(Error::corruption(
                len,
                format!("the log is {len} bytes but its committed transactions end at {end}"),
            ));
        }
        // Under the lock, an invalid tail is a torn write of a writer that failed or died.
        if gen.log.len()? != gen.index.read().end {
            let end = gen.index.read().end;
            let scan = gen.log.scan(end, gen.last_tid(), false)?;
            if scan.txs.is_empty() && scan.stop.is_some() {
                if gen.log.valid_tx_after(end, scan.file_len) {
                    return Err(Error::corruption(
                        end,
                        "committed transactions follow a bad one; run `wdbtool fsck`",
                    ));
                }
                gen.log.cut_tail(end)?;
            }
        }
        let wall = now_ns();
        let (tid, enc) = encode_commit(&gen, req, name, wall)?;
        let start = gen.index.read().end;
        if let Err(e) = gen.log.append(start, &enc, self.opts.sync) {
            self.poison(&e);
            // Never acknowledged, so not committed: take the bytes back (best effort; if
            // this fails too, recovery cuts them as a torn tail or, if they were
            // written completely, they appear as a commit the caller was told failed —
            // the fsync-failure case storage-format.md describes).
            let _ = gen.log.truncate_unacknowledged(start);
            return Err(e);
        }
        // Acknowledged: let other processes see it.
        if let Err(e) = self
            .lock
            .publish(gen.log.header().uuid, start + enc.total_len)
        {
            tracing::warn!(error = %e, "could not publish the commit in the lock file");
        }
        let scanned = ScannedTx {
            off: start,
            header: format::TxHeader {
                n_records: enc.end.n_records,
                total_len: enc.total_len,
                tid,
                wall_ns: wall,
                user_len: 0,
                desc_len: 0,
            },
            user: String::new(),
            desc: String::new(),
            records: enc
                .record_offsets
                .iter()
                .copied()
                .zip(enc.headers.iter().copied())
                .collect(),
            end: enc.end,
        };
        let need_ckpt = {
            let mut ix = gen.index.write();
            // A concurrent refresh in this process may already have read it from the file.
            if ix.last_tid < tid {
                ix.apply(&scanned);
            }
            ix.end - ix.checkpointed_end >= self.opts.checkpoint_bytes
        };
        if need_ckpt {
            // A checkpoint is an optimisation: failing to write one does not fail the commit.
            if let Err(e) = self.write_checkpoint() {
                tracing::warn!(error = %e, "could not write the index checkpoint");
            }
        }
        Ok(tid)
    }

}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The middle of every commit, whatever the storage: against the index of `gen` (which
/// the caller brought up to date with everything committed), fail with `Conflict` if a
/// written key has a version newer than the snapshot (or an array written to was deleted
/// since), then encode the transaction with the next tid at the end of the log, back
/// pointers to the keys' newest versions. `name` renders a key for the conflict message.
pub(crate) fn encode_commit<'a>(
    gen: &Gen,
    req: &'a CommitRequest<'a>,
    name: &dyn Fn(&Key) -> String,
    wall: u64,
) -> Result<(Tid, format::EncodedTx<'a>)> {
    // The newest version of each key written and of each array that must exist: the
    // checkpoint part is needed too, not only for back pointers — a snapshot may
    // predate the checkpoint of a file that compaction switched to since.
    let (latest, metas, last_tid, end) = gen.with_index(|ix| {
        let latest = req
            .writes
            .iter()
            .map(|w| ix.latest(&w.key))
            .collect::<Result<Vec<_>>>()?;
        let metas = req
            .must_exist
            .iter()
            .map(|&a| ix.latest(&Key::Meta { array: a }))
            .collect::<Result<Vec<_>>>()?;
        Ok((latest, metas, ix.last_tid, ix.end))
    })?;
    for (w, l) in req.writes.iter().zip(&latest) {
        if let Some(v) = l {
            if v.tid > req.snapshot {
                return Err(Error::Conflict {
                    what: name(&w.key),
                    snapshot: req.snapshot,
                    by: v.tid,
                });
            }
        }
        // A delta was computed against the version at the snapshot, which is
        // (no conflict) the newest one, and becomes its back pointer below.
        if w.value.encoding.is_delta()
            && (gen.log.header().version < format::DELTA_FORMAT_VERSION || l.is_none())
        {
            return Err(Error::InvalidArgument(format!(
                "delta record for {} without a base version in a format version {} file",
                name(&w.key),
                gen.log.header().version
            )));
        }
    }
    for (&a, m) in req.must_exist.iter().zip(&metas) {
        if let Some(v) = m {
            if v.tid > req.snapshot && is_tombstone(v) {
                return Err(Error::Conflict {
                    what: format!("{} (deleted)", name(&Key::Meta { array: a })),
                    snapshot: req.snapshot,
                    by: v.tid,
                });
            }
        }
    }
    let tid = Tid(last_tid
        .0
        .checked_add(1)
        .ok_or_else(|| Error::OutOfRange("tid space exhausted".into()))?);
    let recs: Vec<RecordIn<'_>> = req
        .writes
        .iter()
        .zip(&latest)
        .map(|(w, l)| RecordIn {
            key: w.key,
            encoding: w.value.encoding,
            // Version 4 files get 2 MiB-aligned raw payloads (§2.8).
            flags: w.flags
                | format::layout_flags(
                    gen.log.header().version,
                    &w.key,
                    w.value.encoding,
                    w.value.payload.len(),
                ),
            prev_off: l.map(|v| v.rec_off).unwrap_or(0),
            logical_len: w.value.logical_len,
            payload: w.value.payload.src(),
            data_crc: w.value.data_crc,
            // A file keeps its format version (storage-format.md §2.7): only
            // version 3 files get page CRC tables.
            page_crcs: w.value.table_src().filter(|_| {
                matches!(w.key, Key::Block { .. })
                    && w.value.encoding == Encoding::Raw
                    && gen.log.header().version >= format::PAGE_CRC_FORMAT_VERSION
            }),
        })
        .collect();
    let enc = format::encode_tx(end, tid, wall, req.user, req.desc, &recs)?;
    Ok((tid, enc))
}
