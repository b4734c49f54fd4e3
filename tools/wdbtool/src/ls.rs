//! `wdbtool ls DB`: each array of the latest snapshot — element type (and record
//! fields), shape, order, block size, logical and stored size, compression ratio, and
//! how its blocks are stored.

use std::path::Path;
use std::process::ExitCode;

use wdb::db::{Compression, Order};
use wdb::Result;

use crate::blocks::{dtype_of, open_ro};
use crate::output::human;

/// The command.
pub fn run(db: &Path) -> Result<ExitCode> {
    let d = open_ro(db)?;
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
    Ok(ExitCode::SUCCESS)
}
