//! `wdbtool import DB ARRAY FILE`: create an array from a NumPy `.npy` file, streamed
//! (see `npy_io.rs`): any size, C or F order, structured dtypes as records.
//!
//! Import is one transaction, whatever the file's size: `NAME` appears whole or not at
//! all, and an error or a crash leaves nothing. The transaction keeps a share of its
//! staged blocks in memory and the rest in its spill file beside the database (see
//! `wdb::db::ram_share`), which the commit copies into the log.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;
use std::process::ExitCode;

use wdb::array::npy::{read_header, NpyHeader};
use wdb::db::{ArrayOptions, Compression};
use wdb::{Error, Result};

use crate::npy_io::{file_err, IO_BUF};
use crate::output::{human, Progress, BYTES};

/// The command: check the options, import, then print what was created.
pub fn run(
    db: &Path,
    array: &str,
    file: &Path,
    block_size: Option<u64>,
    compression: Compression,
) -> Result<ExitCode> {
    let block_size = block_size
        .map(|b| {
            u32::try_from(b).map_err(|_| {
                Error::InvalidArgument(format!("block size {b} is too large (at most 1G)"))
            })
        })
        .transpose()?;
    let opts = ImportOptions {
        block_size,
        compression,
    };
    let bar = Progress::new("importing", BYTES);
    let rep = import(db, array, file, opts, &mut |done, total| {
        bar.update(done, total)
    })?;
    bar.finish();
    println!(
        "imported {} as {array:?} at tid {} (one transaction, {} through its spill file): {}, shape {:?}, order {}",
        file.display(),
        rep.tid,
        human(rep.spilled),
        rep.header.dtype,
        rep.header.shape,
        if rep.header.fortran_order { "F" } else { "C" },
    );
    Ok(ExitCode::SUCCESS)
}

/// How to import.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Block size of the new array (`None`: the database's default).
    pub block_size: Option<u32>,
    /// Compression of the new array.
    pub compression: Compression,
}

/// What `import` did.
#[derive(Debug)]
pub struct ImportReport {
    /// The header read.
    pub header: NpyHeader,
    /// The tid of the commit.
    pub tid: u64,
    /// Bytes of staged blocks the transaction wrote to its spill file (0 when they fit
    /// its share of memory).
    pub spilled: u64,
}

/// Parse `none`, `zstd` or `zstd:LEVEL`.
pub fn parse_compression(s: &str) -> std::result::Result<Compression, String> {
    match s {
        "none" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd { level: 0 }),
        _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
            Some(Ok(level)) if (1..=22).contains(&level) => Ok(Compression::Zstd { level }),
            _ => Err(format!(
                "{s:?}: expected none, zstd or zstd:LEVEL (LEVEL 1..=22)"
            )),
        },
    }
}

/// Parse a byte size: `65536`, `64K`, `64KiB`, `2M`, `2MiB`, `1G`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 65536, 64K or 2M"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Read `buf.len()` bytes, or say how many the file was short of.
fn read_data(r: &mut impl Read, buf: &mut [u8], file: &Path, want: u64, done: u64) -> Result<()> {
    let mut got = 0usize;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                let have = done.saturating_add(u64::try_from(got).unwrap_or(u64::MAX));
                return Err(Error::InvalidArgument(format!(
                    "{} is truncated: its header promises {want} data bytes, it holds {have}",
                    file.display()
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(file_err(file, "cannot read", e)),
        }
    }
    Ok(())
}

/// Create array `name` in database `db_path` (created if missing) from the `.npy` file
/// `file`: its shape, order and element type (a structured dtype becomes a record).
pub fn import(
    db_path: &Path,
    name: &str,
    file: &Path,
    opts: ImportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ImportReport> {
    let f = File::open(file).map_err(|e| file_err(file, "cannot open", e))?;
    let mut r = BufReader::with_capacity(IO_BUF, f);
    let header = read_header(&mut r).map_err(|e| match e {
        Error::Io(e) => file_err(file, "cannot read", e),
        Error::Corruption { offset, what } => Error::InvalidArgument(format!(
            "{} is not a valid .npy file: {what} (at byte {offset})",
            file.display()
        )),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{}: {m}", file.display())),
        e => e,
    })?;
    if header.shape.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds a 0-d array (shape ()); wdb arrays have at least one axis",
            file.display()
        )));
    }
    let data_len = header.data_len()?;

    let db = crate::blocks::open_rw(db_path)?;
    match db.snapshot()?.array_info(name) {
        Ok(_) => {
            return Err(Error::AlreadyExists(format!(
                "array {name:?} in {} (delete it first or import under another name)",
                db_path.display()
            )))
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let aopts = ArrayOptions {
        order: header.order(),
        block_size: opts.block_size,
        compression: opts.compression,
    };
    let desc = format!("import {}", file.display());
    let tx = db.begin()?;
    let info = tx.create_array_dtype(name, &header.dtype, &header.shape, aopts)?;
    let bs = u64::from(info.block_size);
    let mut buf = vec![
        0u8;
        usize::try_from(info.block_size)
            .map_err(|_| Error::OutOfRange("block size".into()))?
    ];
    let (mut done, mut blk) = (0u64, 0u64);
    while done < data_len {
        let n = bs.min(data_len - done);
        let n_us = usize::try_from(n).map_err(|_| Error::OutOfRange("block".into()))?;
        read_data(&mut r, &mut buf[..n_us], file, data_len, done)?;
        buf[n_us..].fill(0);
        // The new array reads zeros: a block of zeros need not be written.
        if buf.iter().any(|&b| b != 0) {
            tx.write_block(info.id, blk, &buf)?;
        }
        done += n;
        blk += 1;
        progress(done, data_len);
    }
    let mut extra = [0u8; 1];
    loop {
        match r.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{} has bytes after the {data_len} data bytes its header describes",
                    file.display()
                )))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(file_err(file, "cannot read", e)),
        }
    }
    let spilled = tx.staged_bytes().spill_file;
    let tid = tx.commit_with("wdbtool", &desc)?;
    Ok(ImportReport {
        header,
        tid: tid.get(),
        spilled,
    })
}
