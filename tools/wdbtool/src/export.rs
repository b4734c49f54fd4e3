//! `wdbtool export DB ARRAY FILE [--at TID]`: write an array to a NumPy `.npy` file,
//! streamed (see `npy_io.rs`): any size, C or F order, records as structured dtypes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use wdb::array::npy::NpyHeader;
use wdb::{Error, Result};

use crate::blocks::{dtype_of, open_ro, snapshot};
use crate::npy_io::{file_err, IO_BUF};
use crate::output::{human, Progress, BYTES};

/// The command: export, then print what was written.
pub fn run(db: &Path, array: &str, file: &Path, at: Option<u64>) -> Result<ExitCode> {
    let bar = Progress::new("exporting", BYTES);
    let rep = export(db, array, file, at, &mut |done, total| {
        bar.update(done, total)
    })?;
    bar.finish();
    println!(
        "exported {array:?} at tid {} to {}: {}, shape {:?}, order {}, {}",
        rep.tid,
        file.display(),
        rep.header.dtype,
        rep.header.shape,
        if rep.header.fortran_order { "F" } else { "C" },
        human(rep.file_bytes)
    );
    Ok(ExitCode::SUCCESS)
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
