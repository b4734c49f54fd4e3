//! The one error type of wdb.

use crate::Tid;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wdb. Each `Display` says what a user can act on.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another transaction committed a change to the same block (or the same array's
    /// metadata) after this transaction's snapshot. Retry the transaction.
    #[error("conflict: {what} was changed by transaction {by} after this transaction's snapshot {snapshot}")]
    Conflict {
        /// What was written by both, e.g. `array "A" block 3` or `array "A" metadata`.
        what: String,
        /// The snapshot tid of the transaction that failed to commit.
        snapshot: Tid,
        /// The committed transaction that wrote it first.
        by: Tid,
    },

    /// A named thing (array, snapshot, file) does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// A named thing already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),

    /// The array holds another element type than the one asked for.
    #[error("type mismatch: array {array:?} holds {stored}, asked for {asked}")]
    TypeMismatch {
        /// Array name.
        array: String,
        /// Element type stored in the catalog.
        stored: String,
        /// Element type the caller asked for.
        asked: String,
    },

    /// An index, range, shape or size is outside what is allowed.
    #[error("out of range: {0}")]
    OutOfRange(String),

    /// A write was attempted on a read-only database or snapshot.
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// The file holds bytes that do not decode. `offset` is the file offset of the
    /// record (or field) that is bad.
    #[error("corruption at offset {offset}: {what}")]
    Corruption {
        /// File offset of the bad record or field.
        offset: u64,
        /// What is wrong.
        what: String,
    },

    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The RAM budget cannot hold the pages one access needs at once: nothing is left
    /// to reclaim (clean pages), to spill (dirty blocks are stored through their file
    /// to make room) or to wait for (pages other threads load or store).
    #[error("RAM budget exhausted: budget {budget} bytes, {dirty} bytes dirty, and no page can be reclaimed or spilled; raise ram_budget")]
    RamExhausted {
        /// The configured budget in bytes.
        budget: u64,
        /// Bytes held by dirty blocks.
        dirty: u64,
    },

    /// A write or fsync failed earlier; the writer refuses further commits until the
    /// database is reopened (a failed fsync is never retried).
    #[error("database is poisoned after a failed write or fsync ({0}); reopen it")]
    Poisoned(String),

    /// The snapshot asked for was dropped by compaction (or never existed).
    #[error("snapshot {tid} is not available: {why}")]
    SnapshotGone {
        /// The tid asked for.
        tid: Tid,
        /// Why it is not there.
        why: String,
    },

    /// An argument is malformed (bad name, bad option, bad shape).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The operation cannot run now because of other work in flight (for example,
    /// unmapping a view while one of its blocks is loading).
    #[error("busy: {0}")]
    Busy(String),

    /// Loading a block failed; names the file, block and cause.
    #[error("cannot load block {blk} of {file}: {cause}")]
    Load {
        /// The file (array) name.
        file: String,
        /// Block index.
        blk: u64,
        /// The underlying error, as text.
        cause: String,
    },
}

impl Error {
    /// Shorthand for a corruption error.
    pub fn corruption(offset: u64, what: impl Into<String>) -> Error {
        Error::Corruption {
            offset,
            what: what.into(),
        }
    }
}
