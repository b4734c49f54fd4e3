//! wdbtool — inspect, check and compact wdb databases. Uses only wdb's public API.
//!
//! Exit codes: 0 success (fsck: clean), 1 fsck found problems, 2 bad arguments or an
//! error (unreadable file, not a database, ...).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use clap::{Parser, Subcommand};
use wdb::db::{CompactOptions, Compression, Db, Options, Order};
use wdb::Tid;

#[derive(Parser, Debug)]
#[command(
    name = "wdbtool",
    version,
    about = "Inspect, check and compact wdb databases"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Format version, file size, first and last tid, arrays, live readers.
    Info {
        /// Database file.
        db: PathBuf,
    },
    /// Each array: type, shape, logical size, stored size, compression ratio.
    Ls {
        /// Database file.
        db: PathBuf,
    },
    /// The commit history: tid, time, size, arrays touched.
    Log {
        /// Database file.
        db: PathBuf,
    },
    /// Check every byte of the file; exit 0 when clean, 1 when not.
    Fsck {
        /// Database file.
        db: PathBuf,
        /// Cut a torn tail (only that), saving the cut bytes to a side file.
        #[arg(long)]
        repair: bool,
    },
    /// Rewrite the file keeping only the versions still needed.
    Compact {
        /// Database file.
        db: PathBuf,
        /// Also keep every snapshot at or after this tid.
        #[arg(long, value_name = "TID")]
        keep_history: Option<u64>,
    },
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn open_ro(p: &PathBuf) -> wdb::Result<Db> {
    if !p.exists() {
        return Err(wdb::Error::NotFound(format!("database {}", p.display())));
    }
    Db::open_with(p, Options::default().read_only(true))
}

fn run(cli: Cli) -> wdb::Result<ExitCode> {
    match cli.cmd {
        Cmd::Info { db } => {
            let d = open_ro(&db)?;
            let i = d.info()?;
            println!("path:            {}", i.path.display());
            println!("format version:  {}", i.format_version);
            println!(
                "file size:       {} ({} bytes)",
                human(i.file_size),
                i.file_size
            );
            println!("transactions:    {}", i.transactions);
            println!("first tid:       {}", i.first_tid);
            println!("last tid:        {}", i.last_tid);
            println!("oldest snapshot: {}", i.base_tid);
            println!("arrays:          {}", i.arrays.len());
            for a in &i.arrays {
                println!("  {} ({}, shape {:?})", a.name, a.dtype_name, a.shape);
            }
            println!("live readers:    {}", i.live_readers.len());
            for (pid, tid) in &i.live_readers {
                println!("  pid {pid} at tid {tid}");
            }
        }
        Cmd::Ls { db } => {
            let d = open_ro(&db)?;
            let s = d.snapshot()?;
            println!(
                "{:<24} {:<8} {:<20} {:>6} {:>12} {:>12} {:>7}  compression",
                "name", "type", "shape", "order", "logical", "stored", "ratio"
            );
            for name in s.array_names()? {
                let i = s.array_info(&name)?;
                let st = s.array_stats(&name)?;
                let ratio = if st.stored_bytes == 0 {
                    f64::INFINITY
                } else {
                    st.logical_bytes as f64 / st.stored_bytes as f64
                };
                let comp = match i.compression {
                    Compression::None => "none".to_string(),
                    Compression::Zstd { level } => format!("zstd {level}"),
                };
                let order = match i.order {
                    Order::C => "C",
                    Order::F => "F",
                };
                println!(
                    "{:<24} {:<8} {:<20} {:>6} {:>12} {:>12} {:>7.2}  {comp} ({} raw, {} zstd, {} hole, {} delta blocks)",
                    name,
                    i.dtype_name,
                    format!("{:?}", i.shape),
                    order,
                    human(st.logical_bytes),
                    human(st.stored_bytes),
                    ratio,
                    st.raw_blocks,
                    st.zstd_blocks,
                    st.hole_blocks,
                    st.delta_blocks
                );
            }
        }
        Cmd::Log { db } => {
            let d = open_ro(&db)?;
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
        }
        Cmd::Fsck { db, repair } => {
            if !db.exists() {
                return Err(wdb::Error::NotFound(format!("database {}", db.display())));
            }
            let rep = if repair {
                let (rep, cut) = Db::repair_path(&db)?;
                if let Some((at, side)) = cut {
                    println!(
                        "repaired: cut {} bytes of torn tail at offset {at}, saved to {}",
                        rep.file_len - at,
                        side.display()
                    );
                    let after = Db::fsck_path(&db)?;
                    report(&after);
                    return Ok(if after.is_clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    });
                }
                rep
            } else {
                Db::fsck_path(&db)?
            };
            report(&rep);
            return Ok(if rep.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Cmd::Compact { db, keep_history } => {
            if !db.exists() {
                return Err(wdb::Error::NotFound(format!("database {}", db.display())));
            }
            let d = Db::open(&db)?;
            let bar = if std::io::stderr().is_terminal() {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} compacting [{bar:40}] {pos}/{len} versions ({eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                Some(b)
            } else {
                None
            };
            let rep = d.compact_with(
                CompactOptions {
                    keep_history: keep_history.map(Tid),
                },
                &mut |done, total| {
                    if let Some(b) = &bar {
                        b.set_length(total);
                        b.set_position(done);
                    }
                },
            )?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!(
                "compacted {}: {} → {} ({} versions kept, {} dropped; snapshots before tid {} dropped)",
                db.display(),
                human(rep.old_size),
                human(rep.new_size),
                rep.versions_kept,
                rep.versions_dropped,
                rep.base_tid
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(rep: &wdb::db::FsckReport) {
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wdbtool: error: {e}");
            ExitCode::from(2)
        }
    }
}
