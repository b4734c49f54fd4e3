//! wdbtool — inspect, check and compact wdb databases, print arrays, move them in and
//! out as NumPy `.npy` files, and run the benchmark workloads. Uses only wdb's public
//! API.
//!
//! This file holds the command line (clap) and the dispatch; each command lives in the
//! module of its name (`info.rs`, `ls.rs`, `log.rs`, `fsck.rs`, `compact.rs`, `cat.rs`,
//! `export.rs`, `import.rs`, `copy.rs`, `bench.rs`). Wherever a command takes a database
//! it takes a path, a `file://` URL or an `s3://bucket/prefix` URL (object storage).
//!
//! Exit codes, the same for every command:
//! - 0: success (`fsck`: the file is clean; `--help`, `--version`);
//! - 1: `fsck` found problems;
//! - 2: bad arguments, or an error (a missing or unreadable file, not a database, a
//!   missing array, a bad range, a corrupt record, …), with a message on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wdb::db::Compression;

mod bench;
#[cfg(feature = "s3")]
mod bench_s3;
mod blocks;
mod cat;
mod compact;
mod copy;
mod export;
mod fsck;
mod import;
mod info;
mod log;
mod ls;
mod npy_io;
mod output;

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
    /// One phase of the benchmark workloads (docs/benchmarks.md); JSON lines on stdout.
    Bench(bench::BenchArgs),
    /// Format version, file size, first and last tid, arrays, live readers.
    Info {
        /// Database file (or file:// or s3:// URL).
        db: PathBuf,
    },
    /// Each array: element type (and record fields), shape, order, logical size,
    /// stored size, compression ratio.
    Ls {
        /// Database file (or file:// or s3:// URL).
        db: PathBuf,
    },
    /// The commit history: tid, time, size, arrays touched.
    Log {
        /// Database file (or file:// or s3:// URL).
        db: PathBuf,
    },
    /// Check every byte of the file; exit 0 when clean, 1 when not.
    Fsck {
        /// Database file (or file:// or s3:// URL).
        db: PathBuf,
        /// Cut a torn tail (only that), saving the cut bytes to a side file.
        #[arg(long)]
        repair: bool,
    },
    /// Rewrite the file keeping only the versions still needed.
    Compact {
        /// Database file (or file:// or s3:// URL).
        db: PathBuf,
        /// Also keep every snapshot at or after this tid.
        #[arg(long, value_name = "TID")]
        keep_history: Option<u64>,
        /// Also keep every snapshot committed within this age (e.g. 90s, 30m, 12h, 7d).
        #[arg(long, value_name = "AGE", value_parser = compact::parse_age)]
        keep_age: Option<std::time::Duration>,
    },
    /// Copy one snapshot of a database to another location, consistently, while
    /// writers keep committing (file → s3://, s3:// → file, file → file, s3:// → s3://).
    /// DST (created if missing) shows the whole copy at once.
    Copy {
        /// Source database (path, file:// or s3:// URL).
        src: PathBuf,
        /// Destination database (path, file:// or s3:// URL).
        dst: PathBuf,
        /// Copy the snapshot at this tid instead of the latest.
        #[arg(long, value_name = "TID")]
        at: Option<u64>,
        /// Commit after staging this many MiB of blocks (the arrays appear under their
        /// names only at the last commit).
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        commit_mib: u64,
    },
    /// Print rows of an array (RANGE over the major axis: 10..20, 10.., ..3, 5, 2..=4;
    /// default the first 10 rows).
    Cat {
        /// Database file (or file:// or s3:// URL).
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
        /// Database file (or file:// or s3:// URL).
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
        /// Database file or URL (created if missing).
        db: PathBuf,
        /// Name of the new array.
        array: String,
        /// Input .npy file.
        file: PathBuf,
        /// Block size of the new array: a power of two from 64K to 1G (default: the
        /// database's, 2M).
        #[arg(long, value_name = "B", value_parser = import::parse_size)]
        block_size: Option<u64>,
        /// Block compression: none, zstd or zstd:LEVEL.
        #[arg(long, value_name = "C", default_value = "zstd", value_parser = import::parse_compression)]
        compression: Compression,
    },
}

/// Run one command. An `Err` is reported by `main` with exit code 2.
fn run(cli: Cli) -> wdb::Result<ExitCode> {
    match cli.cmd {
        Cmd::Bench(b) => match bench::run(&b) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("wdbtool bench: error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Cmd::Info { db } => info::run(&db),
        Cmd::Ls { db } => ls::run(&db),
        Cmd::Log { db } => log::run(&db),
        Cmd::Fsck { db, repair } => fsck::run(&db, repair),
        Cmd::Compact {
            db,
            keep_history,
            keep_age,
        } => compact::run(&db, keep_history, keep_age),
        Cmd::Copy {
            src,
            dst,
            at,
            commit_mib,
        } => copy::run(&src, &dst, at, commit_mib),
        Cmd::Cat {
            db,
            array,
            range,
            at,
        } => cat::run(&db, &array, range.as_deref(), at),
        Cmd::Export {
            db,
            array,
            file,
            at,
        } => export::run(&db, &array, &file, at),
        Cmd::Import {
            db,
            array,
            file,
            block_size,
            compression,
        } => import::run(&db, &array, &file, block_size, compression),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 2.
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
