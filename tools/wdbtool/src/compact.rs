//! `wdbtool compact DB [--keep-history TID] [--keep-age AGE]`: rewrite the file keeping
//! only the block versions still needed — by the latest snapshot, by live readers, and
//! by the snapshots the options ask to keep. On an `s3://` URL: retention (the
//! snapshots asked for and the head are kept; there is no reader table across
//! machines) and garbage collection of objects no commit names.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wdb::db::CompactOptions;
use wdb::{Error, Result, Tid};

use crate::output::{human, Progress};

/// The command.
pub fn run(db: &Path, keep_history: Option<u64>, keep_age: Option<Duration>) -> Result<ExitCode> {
    if !crate::blocks::exists(db) {
        return Err(Error::NotFound(format!("database {}", db.display())));
    }
    let d = crate::blocks::open_rw(db)?;
    let keep_history = match keep_age {
        None => keep_history,
        Some(age) => {
            let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
            let by_age = d
                .history()?
                .iter()
                .find(|h| h.time >= cutoff)
                .map(|h| h.tid.get());
            match (keep_history, by_age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    };
    let bar = Progress::new("compacting", "{pos}/{len} versions");
    let rep = d.compact_with(
        CompactOptions {
            keep_history: keep_history.map(Tid),
        },
        &mut |done, total| bar.update(done, total),
    )?;
    bar.finish();
    println!(
        "compacted {}: {} → {} ({} versions kept, {} dropped; snapshots before tid {} dropped)",
        db.display(),
        human(rep.old_size),
        human(rep.new_size),
        rep.versions_kept,
        rep.versions_dropped,
        rep.base_tid
    );
    Ok(ExitCode::SUCCESS)
}

/// Parse an age: a number followed by `s`, `m`, `h` or `d`.
pub fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not an age like 90s, 30m, 12h or 7d"))?;
    Ok(Duration::from_secs(secs))
}
