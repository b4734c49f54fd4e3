//! `wdbtool log DB`: the commit history — tid, time, size in the log, arrays touched
//! (`[catalog]` when the commit created, deleted or renamed arrays).

use std::path::Path;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use wdb::Result;

use crate::blocks::open_ro;
use crate::output::human;

/// The command.
pub fn run(db: &Path) -> Result<ExitCode> {
    let d = open_ro(db)?;
    println!(
        "{:>10}  {:<30} {:>12}  arrays",
        "tid", "time (UTC, s since epoch)", "size"
    );
    for h in d.history()? {
        let t = h
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut arrays = h.arrays.join(", ");
        if h.names_changed {
            arrays.push_str(" [catalog]");
        }
        println!(
            "{:>10}  {:<30.3} {:>12}  {arrays}",
            h.tid,
            t,
            human(h.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
