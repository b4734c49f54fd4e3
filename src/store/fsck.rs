//! The checker behind `wdbtool fsck`: reads every byte of a log file and names each
//! problem with its offset and record. The checks are listed in storage-format.md,
//! section "fsck".

use std::collections::HashMap;
use std::path::Path;

use crate::format::{self, Encoding, Key, TxHeader};
use crate::log::Log;
use crate::{Error, Result, Tid};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File offset of the bad record or field.
    pub offset: u64,
    /// Which record (e.g. `tx 5`, `tx 5 record 2 (Block { array: 1, blk: 0 })`, `file header`).
    pub record: String,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offset {}: {}: {}", self.offset, self.record, self.what)
    }
}

/// What fsck found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Problems, in file order.
    pub problems: Vec<Problem>,
    /// Valid transactions checked.
    pub transactions: u64,
    /// Data records checked.
    pub records: u64,
    /// File length.
    pub file_len: u64,
    /// Offset of a torn tail (bytes after the last valid transaction that are not
    /// followed by any valid one), if any. `--repair` cuts exactly this.
    pub torn_tail: Option<u64>,
    /// Last valid tid.
    pub last_tid: Tid,
}

impl FsckReport {
    /// No problems?
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for FsckReport {
    /// One summary line, then one line per problem.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.is_clean() { "clean" } else { "PROBLEMS" };
        write!(
            f,
            "{verdict}: {} transactions, {} records, {} bytes, last tid {}",
            self.transactions, self.records, self.file_len, self.last_tid
        )?;
        if !self.problems.is_empty() {
            write!(f, ", {} problems", self.problems.len())?;
        }
        for p in &self.problems {
            write!(f, "\n  offset {}: {}: {}", p.offset, p.record, p.what)?;
        }
        Ok(())
    }
}

pub(crate) fn problem_of(e: Error, record: String) -> Problem {
    match e {
        Error::Corruption { offset, what } => Problem {
            offset,
            record,
            what,
        },
        other => Problem {
            offset: 0,
            record,
            what: other.to_string(),
        },
    }
}

/// Find the next offset ≥ `from` where a valid transaction starts (8-aligned), reading
/// the file in chunks; None if there is none.
fn resync(log: &Log, from: u64, file_len: u64) -> Option<u64> {
    let mut scratch = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut pos = format::align_up(from, format::RECORD_ALIGN);
    while pos + format::TX_HEADER_SIZE as u64 <= file_len {
        let n = usize::try_from((file_len - pos).min(1 << 20)).ok()?;
        log.read_exact_at(&mut chunk[..n], pos).ok()?;
        let mut i = 0usize;
        while i + format::TX_HEADER_SIZE <= n {
            if chunk[i] == format::TAG_TX && chunk[i + 1] == format::RECORD_VERSION {
                let at = pos + i as u64;
                if TxHeader::decode(&chunk[i..i + format::TX_HEADER_SIZE], at).is_ok()
                    && log.read_tx(at, file_len, false, &mut scratch).is_ok()
                {
                    return Some(at);
                }
            }
            i += 8;
        }
        pos += u64::try_from(n.saturating_sub(format::TX_HEADER_SIZE).max(8) & !7).ok()?;
    }
    None
}

/// Read, decompress and decode the payload of the delta record at `off`.
fn check_delta_payload(log: &Log, off: u64, rh: &format::RecordHeader) -> Result<()> {
    let at = off + rh.payload_rel();
    let mut s = vec![0u8; usize::try_from(rh.stored_len).unwrap_or(0)];
    log.read_exact_at(&mut s, at)?;
    if crate::verify::crc32(&s) != rh.data_crc {
        return Err(Error::corruption(at, "data CRC mismatch in a delta record"));
    }
    let payload = if rh.encoding == Encoding::DeltaZstd {
        let mut d = vec![0u8; usize::try_from(rh.logical_len).unwrap_or(0)];
        super::encode::decompress_into(&s, &mut d, at)?;
        d
    } else {
        s
    };
    format::DeltaPayload::decode(&payload, at).map(|_| ())
}

/// Check the log file at `path` (read-only; never modifies it). A tail that looks torn
/// may be a commit in flight in another process: then the check is repeated under the
/// writer lock (when the lock file can be opened), so only a real torn tail is reported.
pub fn check_path(path: &Path) -> Result<FsckReport> {
    let rep = check_path_unlocked(path)?;
    if rep.torn_tail.is_none() || !crate::log::lock::lock_path(path).exists() {
        return Ok(rep);
    }
    match crate::log::lock::LockFile::open(path, true) {
        Ok(lock) => match lock.writer() {
            Ok(_w) => check_path_unlocked(path),
            Err(_) => Ok(rep),
        },
        Err(_) => Ok(rep),
    }
}

/// Check without consulting the writer lock (for a caller that holds it).
pub fn check_path_unlocked(path: &Path) -> Result<FsckReport> {
    let mut rep = FsckReport::default();
    let log = match Log::open(path, true) {
        Ok(l) => l,
        Err(Error::Corruption { offset, what }) => {
            rep.problems.push(Problem {
                offset,
                record: "file header".into(),
                what,
            });
            rep.file_len = std::fs::metadata(path)?.len();
            return Ok(rep);
        }
        Err(e) => return Err(e),
    };
    let durable = durable_end(path, &log);
    check_log(&log, durable, &mut rep)?;
    Ok(rep)
}

/// The end of the log that the index checkpoint, written after those transactions
/// were committed, vouches for (the file header's end if there is no valid checkpoint
/// of this log). Bytes before it were acknowledged commits: a bad transaction there is
/// corruption, never a torn tail to cut.
fn durable_end(path: &Path, log: &Log) -> u64 {
    match (super::ckpt::open(path).map(|c| c.describes()), log.len()) {
        (Some((uuid, end, _, _)), Ok(len)) if uuid == log.header().uuid && end <= len => end,
        _ => format::FILE_HEADER_SIZE,
    }
}

/// Check an open log; `durable_end` as computed by this module's `durable_end` function.
pub fn check_log(log: &Log, durable_end: u64, rep: &mut FsckReport) -> Result<()> {
    let file_len = log.len()?;
    rep.file_len = file_len;
    let mut pos = format::FILE_HEADER_SIZE;
    let mut last = Tid::ZERO;
    let mut keys = KeyChecks::new(log.header().base_tid);
    let mut scratch = Vec::new();
    while pos < file_len {
        let tx = match log.read_tx(pos, file_len, true, &mut scratch) {
            Ok(tx) => tx,
            Err(e) => match skip_bad_tx(log, pos, file_len, durable_end, e, rep) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => break,
            },
        };
        let tid = tx.header.tid;
        let name = format!("tx {tid}");
        if tid <= last {
            rep.problems.push(Problem {
                offset: pos,
                record: name.clone(),
                what: format!("tid {tid} does not increase (previous {last})"),
            });
        }
        last = last.max(tid);
        for (i, (off, rh)) in tx.records.iter().enumerate() {
            let rname = format!("{name} record {i} ({:?})", rh.key);
            keys.check_record(log, *off, rh, &rname, rep);
            rep.records += 1;
        }
        keys.check_catalog_refs(tid, &name, &tx.records, rep);
        rep.transactions += 1;
        rep.last_tid = last;
        pos += tx.header.total_len;
    }
    keys.flush(rep);
    Ok(())
}

/// A transaction at `pos` failed to read (`e`): report it and return where the scan goes
/// on — the next valid transaction, or past the bytes the checkpoint vouches for — or
/// `None` for a torn tail (recorded in `rep.torn_tail`), which ends the scan.
fn skip_bad_tx(
    log: &Log,
    pos: u64,
    file_len: u64,
    durable_end: u64,
    e: Error,
    rep: &mut FsckReport,
) -> Option<u64> {
    match resync(log, pos + 8, file_len) {
        Some(next) => {
            rep.problems
                .push(problem_of(e, format!("transaction at {pos}")));
            Some(next)
        }
        None if pos < durable_end => {
            // Committed bytes the checkpoint vouches for: corruption to report, not a
            // tail to cut; scan on after them.
            rep.problems.push(problem_of(
                e,
                format!("committed transaction at {pos} (covered by the index checkpoint)"),
            ));
            Some(durable_end)
        }
        None => {
            let what = format!(
                "torn tail of {} bytes after the last valid transaction ({e})",
                file_len - pos
            );
            rep.problems.push(Problem {
                offset: pos,
                record: "tail".into(),
                what,
            });
            rep.torn_tail = Some(pos);
            None
        }
    }
}

/// What the scan remembers of the keys seen so far, to check each record against the
/// versions before it and each block against the catalog.
struct KeyChecks {
    /// Offset of the newest record of each key, to check back pointers.
    newest: HashMap<Key, u64>,
    /// Deltas between the newest record of each block key and its full version.
    depth: HashMap<Key, usize>,
    /// Array id → is its catalog entry live (created and not deleted)?
    live: HashMap<u64, bool>,
    /// A compacted file is complete only from its base tid: the catalog entry a block of
    /// an earlier transaction belongs to may have been superseded and dropped. Those
    /// blocks only need some catalog entry (live or deleted) at or before the base tid.
    base: Tid,
    /// Blocks of transactions before `base`: (array, offset, record name).
    deferred: Vec<(u64, u64, String)>,
}

impl KeyChecks {
    fn new(base: Tid) -> KeyChecks {
        KeyChecks {
            newest: HashMap::new(),
            depth: HashMap::new(),
            live: HashMap::new(),
            base,
            deferred: Vec::new(),
        }
    }

    /// Check the record `rname` at `off`: its back pointer, its delta chain, its payload
    /// (a zstd frame decompresses, a delta payload decodes, a raw block is aligned).
    fn check_record(
        &mut self,
        log: &Log,
        off: u64,
        rh: &format::RecordHeader,
        rname: &str,
        rep: &mut FsckReport,
    ) {
        let expect = self.newest.get(&rh.key).copied().unwrap_or(0);
        if rh.prev_off != expect {
            rep.problems.push(Problem {
                offset: off,
                record: rname.into(),
                what: format!(
                    "back pointer {} but the previous version of this key is at {expect}",
                    rh.prev_off
                ),
            });
        }
        let d = if rh.encoding.is_delta() {
            self.check_delta(log, off, rh, expect, rname, rep)
        } else {
            0
        };
        self.depth.insert(rh.key, d);
        self.newest.insert(rh.key, off);
        if rh.encoding == Encoding::Zstd {
            // Decompress to prove the payload is a frame of exactly logical_len bytes.
            let mut s = vec![0u8; usize::try_from(rh.stored_len).unwrap_or(0)];
            let mut d = vec![0u8; usize::try_from(rh.logical_len).unwrap_or(0)];
            let r = log
                .read_exact_at(&mut s, off + rh.payload_rel())
                .and_then(|_| super::encode::decompress_into(&s, &mut d, off + rh.payload_rel()));
            if let Err(e) = r {
                rep.problems.push(problem_of(e, rname.into()));
            }
        }
        if rh.encoding == Encoding::Raw
            && rh.key.tag() == format::TAG_BLOCK
            && (off + rh.payload_rel()) % format::PAGE as u64 != 0
        {
            rep.problems.push(Problem {
                offset: off,
                record: rname.into(),
                what: "raw block payload is not page-aligned".into(),
            });
        }
        if let Key::Meta { array } = rh.key {
            self.live
                .insert(array, rh.flags & format::FLAG_DELETED == 0);
        }
    }

    /// A delta record at `off` whose key's previous version is at `expect`: it rests on
    /// a version of its block in this file, the chain stays within `MAX_DELTA_CHAIN`,
    /// and its payload is well formed. Returns its depth (deltas down to the full
    /// version).
    fn check_delta(
        &self,
        log: &Log,
        off: u64,
        rh: &format::RecordHeader,
        expect: u64,
        rname: &str,
        rep: &mut FsckReport,
    ) -> usize {
        let below = if expect == 0 {
            rep.problems.push(Problem {
                offset: off,
                record: rname.into(),
                what: "delta record without a base version in this file".into(),
            });
            0
        } else {
            self.depth.get(&rh.key).copied().unwrap_or(0)
        };
        if below + 1 > format::MAX_DELTA_CHAIN {
            rep.problems.push(Problem {
                offset: off,
                record: rname.into(),
                what: format!(
                    "delta chain of {} records (at most {})",
                    below + 1,
                    format::MAX_DELTA_CHAIN
                ),
            });
        }
        if let Err(e) = check_delta_payload(log, off, rh) {
            rep.problems.push(problem_of(e, rname.into()));
        }
        below + 1
    }

    /// Catalog references of transaction `tid`: every block written belongs to an array
    /// that exists after it (checked later, at the base tid, for transactions before
    /// the base of a compacted file).
    fn check_catalog_refs(
        &mut self,
        tid: Tid,
        name: &str,
        records: &[(u64, format::RecordHeader)],
        rep: &mut FsckReport,
    ) {
        if tid < self.base {
            for (off, rh) in records {
                if let Key::Block { array, blk } = rh.key {
                    self.deferred
                        .push((array, *off, format!("{name} block {blk} of array {array}")));
                }
            }
            return;
        }
        self.flush(rep);
        for (off, rh) in records {
            if let Key::Block { array, blk } = rh.key {
                if self.live.get(&array) != Some(&true) {
                    rep.problems.push(Problem {
                        offset: *off,
                        record: format!("{name} block {blk} of array {array}"),
                        what: format!("array {array} has no live catalog entry"),
                    });
                }
            }
        }
    }

    /// Report the deferred blocks whose array never had a catalog entry.
    fn flush(&mut self, rep: &mut FsckReport) {
        for (array, off, record) in self.deferred.drain(..) {
            if !self.live.contains_key(&array) {
                rep.problems.push(Problem {
                    offset: off,
                    record,
                    what: format!("array {array} has no catalog entry"),
                });
            }
        }
    }
}
