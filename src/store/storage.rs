//! The seam between MVCC and where transactions live (docs/architecture.md: the
//! layers). The embedded implementation is the log file with its lock file, built into
//! [`Store`] itself: a writer lock orders commits, appends and `fdatasync`
//! make them durable, the lock file publishes them to other processes. A [`Storage`]
//! replaces exactly those parts for a log that is not one local file — the object
//! store of `store::object`, where commits are ordered by create-if-absent of numbered
//! commit objects and there is no lock service. Everything above it is shared: the
//! index (`Index`, checkpoints), the record codecs, the read paths of [`Gen`]
//! (`load`, delta chains, zero-copy slices), conflict detection (`store::encode_commit`).

use std::sync::Arc;

use super::compact::CompactReport;
use super::fsck::FsckReport;
use super::{CommitRequest, Gen, Store};
use crate::format::Key;
use crate::{Result, Tid};

/// A log that is not one local file: how commits are ordered, made durable and seen by
/// other processes and machines. Called by [`Store`] in place of its file protocol.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Bring `gen`'s index up to the newest commit (other writers' included). Must not
    /// change what any snapshot at a tid already known reads.
    fn refresh(&self, gen: &Arc<Gen>) -> Result<()>;

    /// Commit `req` atomically with the next tid after everything committed; conflicts
    /// are checked with `store::encode_commit` against an index brought up to date
    /// first. On success the commit is in `store.current()`'s index.
    fn commit(
        &self,
        store: &Store,
        req: &CommitRequest<'_>,
        name: &dyn Fn(&Key) -> String,
    ) -> Result<Tid>;

    /// Persist an index checkpoint of `gen` if it is worth it (`force`: whenever it
    /// covers a commit the last one does not). Failure does not lose data.
    fn checkpoint(&self, gen: &Gen, force: bool) -> Result<()>;

    /// Compaction by retention: drop what no snapshot at or after the head (or
    /// `keep_history`) needs, and what dead writers left behind.
    fn compact(
        &self,
        store: &Store,
        keep_history: Option<Tid>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CompactReport>;

    /// Check everything stored.
    fn fsck(&self, store: &Store) -> Result<FsckReport>;
}
