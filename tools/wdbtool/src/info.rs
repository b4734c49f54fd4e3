//! `wdbtool info DB`: format version, file size, first and last tid, the oldest
//! snapshot kept, arrays, live readers.

use std::path::Path;
use std::process::ExitCode;

use wdb::Result;

use crate::blocks::open_ro;
use crate::output::human;

/// The command.
pub fn run(db: &Path) -> Result<ExitCode> {
    let d = open_ro(db)?;
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
    Ok(ExitCode::SUCCESS)
}
