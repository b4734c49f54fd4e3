//! `wdbtool copy SRC DST [--at TID]`: a consistent copy of one snapshot of SRC into
//! DST, any location to any other (file, `file://`, `s3://`), while writers keep
//! committing to SRC (a snapshot never changes). The arrays are written under
//! temporary names, in commits of `--commit-mib`, then renamed to their names in one
//! last commit: DST shows the whole snapshot at once or, if the copy fails, nothing
//! of it (the temporary arrays are deleted).

use std::path::Path;

use wdb::db::{ArrayOptions, Transaction};
use wdb::{Error, Result, Tid};

use crate::blocks::{dtype_of, open_ro, open_rw, snapshot};
use crate::output::{human, Progress, BYTES};

/// The command: copy, with a progress bar, then one summary line.
pub fn run(
    src: &Path,
    dst: &Path,
    at: Option<u64>,
    commit_mib: u64,
) -> Result<std::process::ExitCode> {
    let commit_bytes = commit_mib
        .checked_mul(1 << 20)
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("--commit-mib {commit_mib}: expected 1 or more"))
        })?;
    let bar = Progress::new("copying", BYTES);
    let rep = copy(src, dst, at, commit_bytes, &mut |done, total| {
        bar.update(done, total)
    })?;
    bar.finish();
    println!(
        "copied {} at tid {} to {} at tid {}: {} array(s), {} in {} commit(s)",
        src.display(),
        rep.src_tid,
        dst.display(),
        rep.dst_tid,
        rep.arrays,
        human(rep.bytes),
        rep.commits
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// What a copy did.
#[derive(Debug)]
pub struct CopyReport {
    /// The snapshot of SRC that was copied.
    pub src_tid: Tid,
    /// The commit of DST that made the copy visible.
    pub dst_tid: Tid,
    /// Arrays copied.
    pub arrays: usize,
    /// Bytes of blocks written (all-zero blocks are not).
    pub bytes: u64,
    /// Commits made in DST.
    pub commits: u64,
}

/// Copy the snapshot of `src` at `at` (the latest if None) into `dst` (created if
/// missing; it must not hold arrays of the same names).
pub fn copy(
    src: &Path,
    dst: &Path,
    at: Option<u64>,
    commit_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    let s = open_ro(src)?;
    let snap = snapshot(&s, at)?;
    let d = open_rw(dst)?;
    let names = snap.array_names()?;
    let existing = d.snapshot()?.array_names()?;
    if let Some(n) = names.iter().find(|n| existing.contains(n)) {
        return Err(Error::AlreadyExists(format!(
            "array {n:?} in {} (copy into a database without arrays of the same names)",
            dst.display()
        )));
    }
    let mut infos = Vec::new();
    let mut total = 0u64;
    for n in &names {
        let i = snap.array_info(n)?;
        total += i.byte_len().unwrap_or(0);
        infos.push(i);
    }
    let tmp = |n: &str| format!("{n}.copying-{}", std::process::id());
    let (mut commits, mut bytes, mut done) = (0u64, 0u64, 0u64);
    let result = (|| -> Result<Tid> {
        let mut tx: Transaction = d.begin()?;
        let mut staged = 0u64;
        for info in &infos {
            let dtype = dtype_of(info)?;
            let opts = ArrayOptions {
                order: info.order,
                block_size: Some(info.block_size),
                compression: info.compression,
            };
            let di = tx.create_array_dtype(&tmp(&info.name), &dtype, &info.shape, opts)?;
            let bs = usize::try_from(info.block_size)
                .map_err(|_| Error::OutOfRange("block size".into()))?;
            let mut buf = vec![0u8; bs];
            let n_blocks = info
                .n_blocks()
                .ok_or_else(|| Error::OutOfRange(format!("array {:?}: size", info.name)))?;
            for blk in 0..n_blocks {
                done += bs as u64;
                if snap.block_version(info.id, blk)?.is_none() {
                    continue;
                }
                snap.read_block(info.id, blk, &mut buf)?;
                if buf.iter().all(|&b| b == 0) {
                    continue;
                }
                tx.write_block(di.id, blk, &buf)?;
                staged += bs as u64;
                bytes += bs as u64;
                progress(done.min(total), total);
                if staged >= commit_bytes {
                    tx.commit_with("", "wdbtool copy (in progress)")?;
                    commits += 1;
                    tx = d.begin()?;
                    staged = 0;
                }
            }
        }
        for info in &infos {
            tx.rename_array(&tmp(&info.name), &info.name)?;
        }
        let desc = format!("wdbtool copy of {} at tid {}", src.display(), snap.tid());
        let t = tx.commit_with("", &desc)?;
        commits += 1;
        Ok(t)
    })();
    match result {
        Ok(dst_tid) => Ok(CopyReport {
            src_tid: snap.tid(),
            dst_tid,
            arrays: infos.len(),
            bytes,
            commits,
        }),
        Err(e) => {
            // Take back what earlier commits of this copy made visible.
            if let Ok(tx) = d.begin() {
                let mine: Vec<String> = tx
                    .array_names()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| infos.iter().any(|i| *n == tmp(&i.name)))
                    .collect();
                if !mine.is_empty() {
                    for n in &mine {
                        let _ = tx.delete_array(n);
                    }
                    let _ = tx.commit();
                }
            }
            Err(e)
        }
    }
}
