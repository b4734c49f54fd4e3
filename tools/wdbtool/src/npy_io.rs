//! What `export` and `import` share: both stream an array's bytes to or from a NumPy
//! `.npy` file block by block.
//!
//! An array's bytes in its own order are exactly the data section of a `.npy` file with
//! the same shape and `fortran_order` (see `blocks.rs`), so both commands copy bytes
//! and hold one block in memory (import: a share of the budget of staged blocks, the rest in the transaction's spill
//! file). That
//! works for every element type the catalog can hold — scalars and records (structured
//! dtypes) alike — with no per-type code, and for arrays bigger than RAM.

use std::path::Path;

use wdb::Error;

/// Buffer size of the file reader and writer.
pub const IO_BUF: usize = 1 << 20;

/// An I/O error that names the file.
pub fn file_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}
