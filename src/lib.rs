//! wdb — an embedded engine for persistent, transactional, out-of-core N-d arrays.
//!
//! Two towers joined at the top (see `storage-format.md` and the module docs):
//!
//! ```text
//!         db            Db, Transaction, Snapshot, catalog; adapts a store snapshot to BigFile
//!       /    \
//!   store     array     MVCC over the log  |  typed N-d arrays, views, append, resize
//!     |         |
//!   log       virtmem   append-only file   |  reserved ranges, RAM pages, SIGSEGV, LRU
//!     |         |
//!   format    bigfile   bytes <-> records  |  the BigFile trait (block-addressed file)
//!       \      /
//!        verify         the CRC function and when a stored block's CRC is checked
//! ```
//!
//! Lower layers never name upper ones. Unsafe code lives only in `virtmem::os`,
//! `virtmem::fault` and `array::view`; everywhere else it is denied.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

mod error;
mod tid;

pub mod array;
pub mod bigfile;
pub mod db;
pub mod format;
pub mod log;
pub mod store;
pub mod verify;
pub mod virtmem;

pub use error::{Error, Result};
pub use tid::Tid;

pub use array::{DType, Element, Order};
pub use db::{
    Array, ArrayInfo, ArrayMut, ArrayOptions, ArrayStats, CompactOptions, CompactReport,
    Compression, Db, DbInfo, Durability, FsckReport, HistoryEntry, Options, Problem, Snapshot,
    Transaction,
};
pub use verify::Verify;
pub use virtmem::VmStats;

/// The code blocks of README.md, compiled and run as doc tests (`cargo test --doc`), so
/// that the README's examples always build against this API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
