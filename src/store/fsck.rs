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
    // Offset of the newest record of each key, to check back pointers.
    let mut newest: HashMap<Key, u64> = HashMap::new();
    // Deltas between the newest record of each block key and its full version.
    let mut depth: HashMap<Key, usize> = HashMap::new();
    // Array id → is its catalog entry live (created and not deleted)?
    let mut live: HashMap<u64, bool> = HashMap::new();
    let mut scratch = Vec::new();
    // A compacted file is complete only from its base tid: the catalog entry a block of
    // an earlier transaction belongs to may have been superseded and dropped. Those
    // blocks only need some catalog entry (live or deleted) at or before the base tid.
    let base = log.header().base_tid;
    let mut deferred: Vec<(u64, u64, String)> = Vec::new();
    let flush = |deferred: &mut Vec<(u64, u64, String)>,
                 live: &HashMap<u64, bool>,
                 rep: &mut FsckReport| {
        for (array, off, record) in deferred.drain(..) {
            if !live.contains_key(&array) {
                rep.problems.push(Problem {
                    offset: off,
                    record,
                    what: format!("array {array} has no catalog entry"),
                });
            }
        }
    };
    while pos < file_len {
        let tx = match log.read_tx(pos, file_len, true, &mut scratch) {
            Ok(tx) => tx,
            Err(e) => {
                match resync(log, pos + 8, file_len) {
                    Some(next) => {
                        rep.problems
                            .push(problem_of(e, format!("transaction at {pos}")));
                        pos = next;
                    }
                    None if pos < durable_end => {
                        // Committed bytes the checkpoint vouches for: corruption to
                        // report, not a tail to cut; scan on after them.
                        rep.problems.push(problem_of(
                            e,
                            format!(
                                "committed transaction at {pos} (covered by the index checkpoint)"
                            ),
                        ));
                        pos = durable_end;
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
                        break;
                    }
                }
                continue;
            }
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
            let expect = newest.get(&rh.key).copied().unwrap_or(0);
            if rh.prev_off != expect {
                rep.problems.push(Problem {
                    offset: *off,
                    record: rname.clone(),
                    what: format!(
                        "back pointer {} but the previous version of this key is at {expect}",
                        rh.prev_off
                    ),
                });
            }
            // Delta chains: a delta rests on a version of its block in this file, the
            // chain stays within MAX_DELTA_CHAIN, and its payload is well formed.
            let d = if rh.encoding.is_delta() {
                let below = if expect == 0 {
                    rep.problems.push(Problem {
                        offset: *off,
                        record: rname.clone(),
                        what: "delta record without a base version in this file".into(),
                    });
                    0
                } else {
                    depth.get(&rh.key).copied().unwrap_or(0)
                };
                if below + 1 > format::MAX_DELTA_CHAIN {
                    rep.problems.push(Problem {
                        offset: *off,
                        record: rname.clone(),
                        what: format!(
                            "delta chain of {} records (at most {})",
                            below + 1,
                            format::MAX_DELTA_CHAIN
                        ),
                    });
                }
                if let Err(e) = check_delta_payload(log, *off, rh) {
                    rep.problems.push(problem_of(e, rname.clone()));
                }
                below + 1
            } else {
                0
            };
            depth.insert(rh.key, d);
            newest.insert(rh.key, *off);
            if rh.encoding == Encoding::Zstd {
                // Decompress to prove the payload is a frame of exactly logical_len bytes.
                let mut s = vec![0u8; usize::try_from(rh.stored_len).unwrap_or(0)];
                let mut d = vec![0u8; usize::try_from(rh.logical_len).unwrap_or(0)];
                let r = log
                    .read_exact_at(&mut s, off + rh.payload_rel())
                    .and_then(|_| {
                        super::encode::decompress_into(&s, &mut d, off + rh.payload_rel())
                    });
                if let Err(e) = r {
                    rep.problems.push(problem_of(e, rname.clone()));
                }
            }
            if rh.encoding == Encoding::Raw
                && rh.key.tag() == format::TAG_BLOCK
                && (off + rh.payload_rel()) % format::PAGE as u64 != 0
            {
                rep.problems.push(Problem {
                    offset: *off,
                    record: rname.clone(),
                    what: "raw block payload is not page-aligned".into(),
                });
            }
            if let Key::Meta { array } = rh.key {
                live.insert(array, rh.flags & format::FLAG_DELETED == 0);
            }
            rep.records += 1;
        }
        // Catalog references: every block written belongs to an array that exists after
        // this transaction.
        if tid < base {
            for (off, rh) in &tx.records {
                if let Key::Block { array, blk } = rh.key {
                    deferred.push((array, *off, format!("{name} block {blk} of array {array}")));
                }
            }
        } else {
            flush(&mut deferred, &live, rep);
        }
        for (off, rh) in tx.records.iter().filter(|_| tid >= base) {
            if let Key::Block { array, blk } = rh.key {
                if live.get(&array) != Some(&true) {
                    rep.problems.push(Problem {
                        offset: *off,
                        record: format!("{name} block {blk} of array {array}"),
                        what: format!("array {array} has no live catalog entry"),
                    });
                }
            }
        }
        rep.transactions += 1;
        rep.last_tid = last;
        pos += tx.header.total_len;
    }
    flush(&mut deferred, &live, rep);
    Ok(())
}
