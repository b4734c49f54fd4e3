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
//!
//! **The public API is closed.** This crate exports the user API only: [`db`] (databases,
//! transactions, snapshots, arrays, options, reports), [`array`](mod@array) (element types, records,
//! `.npy`), [`Error`], [`Tid`], [`Verify`], [`VmStats`] and [`ensure_fault_handler`]. The
//! layers below `db` are `pub(crate)`, and so is every method that takes or returns one
//! of their types; the `internals` feature, which only this crate's tests, benches and
//! examples enable (a dev-dependency on itself), makes them `pub` and `#[doc(hidden)]`
//! under the same paths. Declare such an item with `internal!`, never plain `pub`.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

/// Declares an item of the engine's internals `pub` and `#[doc(hidden)]` with the
/// `internals` feature and `pub(crate)` without it: `internal! { pub mod store; }`.
macro_rules! internal {
    ($(#[$m:meta])* pub $($item:tt)*) => {
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        $(#[$m])*
        pub $($item)*
        #[cfg(not(feature = "internals"))]
        $(#[$m])*
        pub(crate) $($item)*
    };
}

mod error;
mod tid;

pub mod array;
pub mod db;

// The layers below `db`.
internal! { pub mod bigfile; }
internal! { pub mod format; }
internal! { pub mod log; }
internal! { pub mod store; }
internal! { pub mod verify; }
internal! { pub mod virtmem; }

pub use error::{Error, Result};
pub use tid::Tid;

pub use array::{DType, Element, Order};
pub use db::{
    Array, ArrayInfo, ArrayMut, ArrayOptions, ArrayStats, CompactOptions, CompactReport,
    Compression, Db, DbInfo, Durability, FsckReport, HistoryEntry, Options, Problem, Snapshot,
    Transaction,
};
pub use verify::Verify;
pub use virtmem::{ensure_fault_handler, VmStats};

/// The code blocks of README.md, compiled and run as doc tests (`cargo test --doc`), so
/// that the README's examples always build against this API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
