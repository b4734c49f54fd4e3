//! `wdbtool export` and `wdbtool import`: arrays ⇄ NumPy `.npy` files, streamed.
//!
//! An array's bytes in its own order are exactly the data section of a `.npy` file with
//! the same shape and `fortran_order` (see `blocks.rs`), so both commands copy bytes
//! block by block and hold one block in memory. That works for every element type the
//! catalog can hold — scalars and records (structured dtypes) alike — with no per-type
//! code, and for arrays bigger than RAM.
//!
//! Import is one transaction, whatever the file's size: `NAME` appears whole or not at
//! all, and an error or a crash leaves nothing. The transaction keeps a share of its
//! staged blocks in memory and the rest in its spill file beside the database (see
//! `wdb::db::ram_share`), which the commit copies into the log.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use wdb::array::npy::{read_header, NpyHeader};
use wdb::db::{ArrayOptions, Compression, Db};
use wdb::{Error, Result};

use crate::blocks::{dtype_of, open_ro, snapshot};

/// Buffer size of the file reader and writer.
const IO_BUF: usize = 1 << 20;

/// An I/O error that names the file.
fn file_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

/// What `export` did.
#[derive(Debug)]
pub struct ExportReport {
    /// The header as written.
    pub header: NpyHeader,
    /// Bytes written (header and data).
    pub file_bytes: u64,
    /// The tid exported.
    pub tid: u64,
}

/// Write array `name` of database `db_path` (at tid `at`, default the latest) to the
/// `.npy` file `out`. A partly written file is removed on error.
pub fn export(
    db_path: &Path,
    name: &str,
    out: &Path,
    at: Option<u64>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport> {
    let db = open_ro(db_path)?;
    let snap = snapshot(&db, at)?;
    let info = snap.array_info(name)?;
    let dtype = dtype_of(&info)?;
    let header = NpyHeader::new(dtype, &info.shape, info.order);
    let head = header.to_bytes().map_err(|e| match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!(
            "array {name:?} ({}) cannot be written as .npy: {m}",
            info.dtype_name
        )),
        e => e,
    })?;
    let data_len = header.data_len()?;
    let f = File::create(out).map_err(|e| file_err(out, "cannot create", e))?;
    let mut w = BufWriter::with_capacity(IO_BUF, f);
    let r = (|| -> Result<()> {
        w.write_all(&head)
            .map_err(|e| file_err(out, "cannot write", e))?;
        let bs = u64::from(info.block_size);
        let mut buf = vec![
            0u8;
            usize::try_from(info.block_size)
                .map_err(|_| Error::OutOfRange("block size".into()))?
        ];
        let mut done = 0u64;
        let mut blk = 0u64;
        while done < data_len {
            let n = bs.min(data_len - done);
            snap.read_block(info.id, blk, &mut buf)?;
            let n_us = usize::try_from(n).map_err(|_| Error::OutOfRange("block".into()))?;
            w.write_all(&buf[..n_us])
                .map_err(|e| file_err(out, "cannot write", e))?;
            done += n;
            blk += 1;
            progress(done, data_len);
        }
        w.flush().map_err(|e| file_err(out, "cannot write", e))?;
        Ok(())
    })();
    if let Err(e) = r {
        drop(w);
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    let file_bytes = u64::try_from(head.len())
        .unwrap_or(u64::MAX)
        .saturating_add(data_len);
    Ok(ExportReport {
        header,
        file_bytes,
        tid: snap.tid().get(),
    })
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

    let db = Db::open(db_path)?;
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
