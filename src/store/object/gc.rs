//! Compaction (retention and garbage collection) and fsck of an object-store database
//! (storage-format.md §12.6, §12.7).
//!
//! There is no reader table across machines, so compaction keeps what retention says:
//! the versions visible at the head and, with `keep_history` K, at every tid ≥ K
//! (plus the full versions their delta chains rest on). It first makes the new base
//! visible — a *retention commit*, an empty transaction whose commit object carries
//! the base tid — so that from then on snapshots below it get `SnapshotGone`, then
//! deletes the data objects only dropped versions name, and the data objects no commit
//! names that are older than the grace period (left by writers that died before their
//! commit object). Commit objects (headers only) are kept: the virtual log stays whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::{data_refs, layout, ObjectStorage};
use crate::format::checkpoint::Version;
use crate::format::{Encoding, Key};
use crate::store::compact::{retain, CompactReport};
use crate::store::fsck::{check_log, problem_of as problem, FsckReport, Problem};
use crate::store::{CommitRequest, Gen, Store};
use crate::{Error, Result, Tid};

/// Payload offsets of the versions that snapshots at or after `base` (and the head)
/// need, and of the full versions under their delta chains; and how many versions
/// that is and is not.
fn kept_payloads(
    versions: &[(Key, Vec<Version>)],
    head: Tid,
    keep: Option<Tid>,
) -> (HashSet<u64>, u64, u64) {
    let mut offs = HashSet::new();
    let (mut kept, mut dropped) = (0, 0);
    retain(versions, head, &[], keep, |_, vs, i, keep| {
        if !keep {
            dropped += 1;
            return;
        }
        kept += 1;
        offs.insert(vs[i].payload_off());
        // A delta needs its chain, down to the full version.
        let mut j = i;
        while vs[j].encoding.is_delta() && j > 0 {
            j -= 1;
            offs.insert(vs[j].payload_off());
        }
    });
    (offs, kept, dropped)
}

/// Compaction by retention (see the module doc).
pub fn compact(
    s: &ObjectStorage,
    store: &Store,
    keep_history: Option<Tid>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CompactReport> {
    if s.read_only {
        return Err(Error::ReadOnly("the database was opened read-only".into()));
    }
    let p = s.sh.prefix.clone();
    let gen = store.refresh()?;
    let (head, versions) = gen.with_index(|ix| Ok((ix.last_tid, ix.all_versions()?)))?;
    let old_base = gen.base_tid();
    let base = keep_history
        .map(|k| k.min(head))
        .unwrap_or(head)
        .max(old_base);
    let keep = Some(base);
    let (keep_offs, kept, dropped) = kept_payloads(&versions, head, keep);
    let listed = s.sh.remote.list(&layout::data_dir(&p), None)?;
    let old_size: u64 = listed.iter().map(|l| l.size).sum();
    let commits = s.all_commits(head)?;
    let refs = data_refs(&p, &commits);
    // Make the base visible before anything it drops is deleted.
    if base > old_base {
        let req = CommitRequest {
            snapshot: head,
            writes: &[],
            user: "",
            desc: "retention",
            must_exist: &[],
        };
        s.commit_inner(store, &req, &|k| format!("{k:?}"), base)?;
    }
    let mut doomed: Vec<String> = refs
        .iter()
        .filter(|(_, at, _, _)| !keep_offs.contains(at))
        .map(|(k, ..)| k.clone())
        .collect();
    // Data objects no commit names: a dead writer's, once older than the grace period.
    // Commits made since the head name objects too.
    let gen = store.refresh()?;
    let newer = s.all_commits(gen.last_tid())?;
    let named: HashSet<String> = data_refs(&p, &newer).into_iter().map(|r| r.0).collect();
    let now = SystemTime::now();
    let mut orphans = 0u64;
    for l in &listed {
        let old = now
            .duration_since(l.modified)
            .is_ok_and(|age| age > s.grace);
        if !named.contains(&l.key) && old && layout::parse_data_name(&l.key).is_some() {
            doomed.push(l.key.clone());
            orphans += 1;
        }
    }
    let sizes: HashMap<&str, u64> = listed.iter().map(|l| (l.key.as_str(), l.size)).collect();
    let freed: u64 = doomed.iter().filter_map(|k| sizes.get(k.as_str())).sum();
    let total = doomed.len() as u64;
    for (i, chunk) in doomed.chunks(256).enumerate() {
        s.sh.remote.delete(chunk.to_vec())?;
        progress(((i + 1) * 256).min(doomed.len()) as u64, total);
    }
    tracing::info!(deleted = total, orphans, "object-store compaction");
    if let Err(e) = crate::store::storage::Storage::checkpoint(s, &gen, true) {
        tracing::warn!(error = %e, "could not write a checkpoint object after compaction");
    }
    Ok(CompactReport {
        old_size,
        new_size: old_size.saturating_sub(freed),
        versions_kept: kept,
        versions_dropped: dropped,
        base_tid: base,
    })
}

/// Check everything stored: every commit object (CRC, numbering, placement), every
/// transaction of the virtual log, and the payload of every version a kept snapshot
/// needs (all of them while nothing was collected). Data objects no commit names are
/// not problems (a writer may be uploading); they are counted in the log.
pub fn fsck(s: &ObjectStorage, store: &Store) -> Result<FsckReport> {
    let p = s.sh.prefix.clone();
    let gen = store.refresh()?;
    let last = gen.last_tid();
    let mut rep = FsckReport::default();
    let mut end = crate::format::FILE_HEADER_SIZE;
    for t in 1..=last.0 {
        let key = layout::commit_key(&p, Tid(t));
        match s.sh.load_commit(Tid(t)) {
            Ok(l) if l.obj.start == end => end = l.obj.end(),
            Ok(l) => {
                rep.problems.push(Problem {
                    offset: l.obj.start,
                    record: format!("commit object {key}"),
                    what: format!(
                        "starts at {}, the previous commit ends at {end}",
                        l.obj.start
                    ),
                });
                end = l.obj.end();
            }
            Err(e) => rep
                .problems
                .push(problem(e, format!("commit object {key}"))),
        }
    }
    if !rep.problems.is_empty() {
        rep.last_tid = last;
        return Ok(rep);
    }
    let base = gen.base_tid();
    if base <= Tid(1) {
        check_log(&gen.log, gen.log.len()?, &mut rep)?;
        return Ok(rep);
    }
    // Retention dropped versions: check the structure, then what is kept.
    let scan = gen
        .log
        .scan(crate::format::FILE_HEADER_SIZE, Tid::ZERO, false)?;
    if let Some(e) = scan.stop {
        rep.problems.push(problem(e, "transaction".into()));
    }
    rep.transactions = scan.txs.len() as u64;
    rep.records = scan.txs.iter().map(|t| t.records.len() as u64).sum();
    rep.file_len = gen.log.len()?;
    rep.last_tid = last;
    let versions = gen.with_index(|ix| ix.all_versions())?;
    let (keep_offs, _, _) = kept_payloads(&versions, last, Some(base));
    for (k, vs) in &versions {
        for v in vs.iter().filter(|v| keep_offs.contains(&v.payload_off())) {
            if let Err(e) = check_version(&gen, k, v) {
                rep.problems
                    .push(problem(e, format!("tx {} record ({k:?})", v.tid)));
            }
        }
    }
    Ok(rep)
}

/// Read and check one stored version (its chain, for a delta).
fn check_version(gen: &Arc<Gen>, k: &Key, v: &Version) -> Result<()> {
    if v.encoding.is_delta() {
        let chain = gen
            .chain_at(k, v.tid)?
            .ok_or_else(|| Error::corruption(v.rec_off, "delta without its chain"))?;
        gen.resolve_chain(&chain).map(|_| ())
    } else if v.encoding == Encoding::Hole {
        Ok(())
    } else {
        let n = usize::try_from(v.logical_len)
            .map_err(|_| Error::corruption(v.rec_off, "logical length"))?;
        gen.read_version(v, &mut vec![0u8; n])
    }
}
