//! wdbtool — inspect, check and compact wdb databases, print arrays, and move them in
//! and out as NumPy `.npy` files. Uses only wdb's public API.
//!
//! Exit codes: 0 success (fsck: clean), 1 fsck found problems, 2 bad arguments or an
//! error (unreadable file, not a database, ...).

mod bench;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use clap::{Parser, Subcommand};
use indicatif::ProgressBar;
use wdb::db::{CompactOptions, Compression, Db, Order};
use wdb::Tid;

mod blocks;
mod cat;
mod npy_cmds;

use blocks::{dtype_of, human, open_ro};

#[derive(Parser, Debug)]
#[command(
    name = "wdbtool",
    version,
    about = "Inspect, check and compact wdb databases; print arrays; export and import NumPy .npy files"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One phase of the benchmark workloads (shared/workloads.md); JSON lines on stdout.
    Bench(bench::BenchArgs),
    /// Format version, file size, first and last tid, arrays, live readers.
    Info {
        /// Database file.
        db: PathBuf,
    },
    /// Each array: element type (and record fields), shape, order, logical size,
    /// stored size, compression ratio.
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
        /// Also keep every snapshot committed within this age (e.g. 90s, 30m, 12h, 7d).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        keep_age: Option<std::time::Duration>,
    },
    /// Print rows of an array (RANGE over the major axis: 10..20, 10.., ..3, 5, 2..=4;
    /// default the first 10 rows).
    Cat {
        /// Database file.
        db: PathBuf,
        /// Array name.
        array: String,
        /// Rows to print.
        range: Option<String>,
        /// Read the snapshot at this tid instead of the latest.
        #[arg(long, value_name = "TID")]
        at: Option<u64>,
    },
    /// Write an array to a NumPy .npy file (streamed: any size).
    Export {
        /// Database file.
        db: PathBuf,
        /// Array name.
        array: String,
        /// Output .npy file (overwritten).
        file: PathBuf,
        /// Export the snapshot at this tid instead of the latest.
        #[arg(long, value_name = "TID")]
        at: Option<u64>,
    },
    /// Create an array from a NumPy .npy file (streamed: any size; C or F order;
    /// structured dtypes become records).
    Import {
        /// Database file (created if missing).
        db: PathBuf,
        /// Name of the new array.
        array: String,
        /// Input .npy file.
        file: PathBuf,
        /// Block size of the new array: a power of two from 64K to 1G (default: the
        /// database's, 2M).
        #[arg(long, value_name = "B", value_parser = npy_cmds::parse_size)]
        block_size: Option<u64>,
        /// Block compression: none, zstd or zstd:LEVEL.
        #[arg(long, value_name = "C", default_value = "zstd", value_parser = npy_cmds::parse_compression)]
        compression: Compression,
    },
}

fn run(cli: Cli) -> wdb::Result<ExitCode> {
    match cli.cmd {
        Cmd::Bench(b) => {
            if let Err(e) = bench::run(&b) {
                eprintln!("wdbtool bench: error: {e}");
                return Ok(ExitCode::from(2));
            }
        }
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
                "{:<24} {:<12} {:<20} {:>5} {:>9} {:>11} {:>11} {:>7}  compression",
                "name", "type", "shape", "order", "block", "logical", "stored", "ratio"
            );
            for name in s.array_names()? {
                let i = s.array_info(&name)?;
                let st = s.array_stats(&name)?;
                let ratio = if st.stored_bytes == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", st.logical_bytes as f64 / st.stored_bytes as f64)
                };
                let comp = match i.compression {
                    Compression::None => "none".to_string(),
                    Compression::Zstd { level } => format!("zstd {level}"),
                };
                let order = match i.order {
                    Order::C => "C",
                    Order::F => "F",
                };
                // Records get a short type here and their fields on the next line.
                let (ty, fields) = match dtype_of(&i) {
                    Ok(wdb::DType::Record { size, fields }) => (
                        format!("record({size} B)"),
                        Some(
                            fields
                                .iter()
                                .map(|f| format!("{}: {} @{}", f.name, f.dtype, f.offset))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                    ),
                    _ => (i.dtype_name.clone(), None),
                };
                println!(
                    "{:<24} {:<12} {:<20} {:>5} {:>9} {:>11} {:>11} {:>7}  {comp} ({} raw, {} zstd, {} hole, {} delta blocks)",
                    name,
                    ty,
                    format!("{:?}", i.shape),
                    order,
                    human(u64::from(i.block_size)),
                    human(st.logical_bytes),
                    human(st.stored_bytes),
                    ratio,
                    st.raw_blocks,
                    st.zstd_blocks,
                    st.hole_blocks,
                    st.delta_blocks
                );
                if let Some(f) = fields {
                    println!("    fields: {f}");
                }
            }
        }
        Cmd::Cat {
            db,
            array,
            range,
            at,
        } => {
            cat::cat(&db, &array, range.as_deref(), at)?;
        }
        Cmd::Export {
            db,
            array,
            file,
            at,
        } => {
            let bar = progress_bar("exporting");
            let rep = npy_cmds::export(&db, &array, &file, at, &mut |done, total| {
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                }
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!(
                "exported {array:?} at tid {} to {}: {}, shape {:?}, order {}, {}",
                rep.tid,
                file.display(),
                rep.header.dtype,
                rep.header.shape,
                if rep.header.fortran_order { "F" } else { "C" },
                human(rep.file_bytes)
            );
        }
        Cmd::Import {
            db,
            array,
            file,
            block_size,
            compression,
        } => {
            let block_size = block_size
                .map(|b| {
                    u32::try_from(b).map_err(|_| {
                        wdb::Error::InvalidArgument(format!(
                            "block size {b} is too large (at most 1G)"
                        ))
                    })
                })
                .transpose()?;
            let opts = npy_cmds::ImportOptions {
                block_size,
                compression,
            };
            let bar = progress_bar("importing");
            let rep = npy_cmds::import(&db, &array, &file, opts, &mut |done, total| {
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                }
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!(
                "imported {} as {array:?} at tid {} (one transaction, {} through its spill file): {}, shape {:?}, order {}",
                file.display(),
                rep.tid,
                human(rep.spilled),
                rep.header.dtype,
                rep.header.shape,
                if rep.header.fortran_order { "F" } else { "C" },
            );
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
        Cmd::Compact {
            db,
            keep_history,
            keep_age,
        } => {
            if !db.exists() {
                return Err(wdb::Error::NotFound(format!("database {}", db.display())));
            }
            let d = Db::open(&db)?;
            let keep_history = match keep_age {
                None => keep_history,
                Some(age) => {
                    let cutoff = std::time::SystemTime::now()
                        .checked_sub(age)
                        .unwrap_or(std::time::UNIX_EPOCH);
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

/// Parse an age: a number followed by `s`, `m`, `h` or `d`.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
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
    Ok(std::time::Duration::from_secs(secs))
}

/// A byte progress bar on stderr when it is a terminal.
fn progress_bar(what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{bytes}}/{{total_bytes}} ({{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
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
