//! `wdbtool fsck DB [--repair]`: check every byte of the file; exit 0 when clean, 1
//! when not. `--repair` cuts a torn tail (and only that), saving the cut bytes to a
//! side file, then checks again. On an `s3://` URL it checks every object (commit
//! objects, the virtual log, the payloads of the kept versions).

use std::path::Path;
use std::process::ExitCode;

use wdb::db::{Db, FsckReport};
use wdb::{Error, Result};

/// The command.
pub fn run(db: &Path, repair: bool) -> Result<ExitCode> {
    if !crate::blocks::exists(db) {
        return Err(Error::NotFound(format!("database {}", db.display())));
    }
    let rep = if crate::blocks::is_url(db) {
        if repair {
            return Err(Error::InvalidArgument(
                "--repair cuts a torn tail of a local file; an object-store database has none (each commit is a whole object)".into(),
            ));
        }
        crate::blocks::open_ro(db)?.fsck()?
    } else if repair {
        let (rep, cut) = Db::repair_path(db)?;
        match cut {
            Some((at, side)) => {
                println!(
                    "repaired: cut {} bytes of torn tail at offset {at}, saved to {}",
                    rep.file_len - at,
                    side.display()
                );
                Db::fsck_path(db)?
            }
            None => rep,
        }
    } else {
        Db::fsck_path(db)?
    };
    report(&rep);
    Ok(if rep.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Print each problem and a summary line.
fn report(rep: &FsckReport) {
    for p in &rep.problems {
        println!("problem: {p}");
    }
    if let Some(at) = rep.torn_tail {
        println!(
            "note: the problem at offset {at} is a torn tail; `wdbtool fsck --repair` cuts it"
        );
    }
    println!(
        "{}: {} transactions, {} records, {} bytes, last tid {}, {} problem(s)",
        if rep.is_clean() { "clean" } else { "NOT clean" },
        rep.transactions,
        rep.records,
        rep.file_len,
        rep.last_tid,
        rep.problems.len()
    );
}
