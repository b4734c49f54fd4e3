//! The object store as synchronous calls: a small tokio runtime owned by the database
//! runs `object_store`'s futures; callers (user threads, page-fault service, readahead)
//! wait on a channel, never inside the runtime, so a caller that is itself async code
//! touching a view does not nest runtimes. Idempotent requests are retried here (on
//! top of `object_store`'s own retries) with backoff; errors come back as
//! [`crate::Error`] naming the key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as OPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::{Error, Result};

/// Attempts of an idempotent request before its error is returned.
const ATTEMPTS: u32 = 5;
/// Longest wait for one request (beyond it the request counts as failed).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a create-if-absent PUT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was created by this call.
    Yes,
    /// An object was already at the key.
    AlreadyExists,
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// A future started on the runtime by [`Remote::start`].
#[derive(Debug)]
pub struct Started<T>(std::sync::mpsc::Receiver<T>);

impl<T> Started<T> {
    /// Wait (from a non-runtime thread) for the future's output; an error when the
    /// runtime dropped it unfinished (it stopped, or the future panicked).
    pub fn wait(self) -> Result<T> {
        self.0
            .recv()
            .map_err(|_| Error::Io(std::io::Error::other("object store runtime stopped")))
    }
}

/// An object store and the runtime that drives it.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    /// Always `Some` but in `drop`.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Remote {
    /// The last reference to the database's state may be dropped by one of the
    /// runtime's own tasks (a background fetch of a closed database): a plain drop of
    /// the runtime there waits for its blocking pool to stop, this thread included,
    /// for ever (or panics on a worker thread), and the state (its cache slot) stays
    /// held. From inside any runtime (this one, or a caller's async code, where
    /// dropping a runtime panics) it is shut down without waiting.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            }
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.store)
    }
}

/// A transport or server error of a request for `key`.
pub fn io_err(key: &str, what: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("object {key}: {what}")))
}

impl Remote {
    /// Drive `store` from a runtime of two worker threads.
    pub fn new(store: Arc<dyn ObjectStore>) -> Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wdb-s3")
            .enable_all()
            .build()?;
        Ok(Remote { store, rt: Some(rt) })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime is taken only in drop")
    }

    /// Run `fut` on the runtime and wait for it from this (non-runtime) thread.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        self.start(fut).wait()
    }

    /// Start `fut` on the runtime; [`Started::wait`] gives its output.
    pub fn start<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Started<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt().spawn(async move {
            let _ = tx.send(fut.await);
        });
        Started(rx)
    }

    /// Start `fut` in the background.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.rt().spawn(fut);
    }

    /// GET a whole object; None if there is none.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let store = self.store.clone();
        let k = key.to_string();
        self.run(async move { get_async(&store, &k).await })?
    }

    /// Create-if-absent (`If-None-Match: *`), one attempt: a failed request's outcome
    /// is unknown to this call (the caller reads the key to learn it).
    pub fn put_create(&self, key: &str, bytes: Bytes) -> Result<Created> {
        let store = self.store.clone();
        let k = key.to_string();
        self.run(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let r = tokio::time::timeout(
                REQUEST_TIMEOUT,
                store.put_opts(&OPath::from(k.as_str()), PutPayload::from(bytes), opts),
            )
            .await;
            match r {
                Ok(Ok(_)) => Ok(Created::Yes),
                Ok(Err(object_store::Error::AlreadyExists { .. })) => Ok(Created::AlreadyExists),
                Ok(Err(e)) => Err(io_err(&k, e)),
                Err(_) => Err(io_err(&k, "request timed out")),
            }
        })?
    }

    /// Every object under `prefix` whose key is greater than `after` (all if None),
    /// sorted by key.
    pub fn list(&self, prefix: &str, after: Option<&str>) -> Result<Vec<Listed>> {
        let store = self.store.clone();
        let p = prefix.to_string();
        let a = after.map(str::to_string);
        self.run(async move {
            let mut last = None;
            for attempt in 0..ATTEMPTS {
                let pp = OPath::from(p.as_str());
                let stream = match &a {
                    Some(a) => store.list_with_offset(Some(&pp), &OPath::from(a.as_str())),
                    None => store.list(Some(&pp)),
                };
                let r = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    stream.collect::<Vec<object_store::Result<object_store::ObjectMeta>>>(),
                )
                .await;
                match r {
                    Ok(items) => {
                        match items.into_iter().collect::<object_store::Result<Vec<_>>>() {
                            Ok(v) => {
                                let mut out: Vec<Listed> = v
                                    .into_iter()
                                    .map(|m| Listed {
                                        key: m.location.to_string(),
                                        size: m.size,
                                        modified: m.last_modified.into(),
                                    })
                                    .collect();
                                out.sort_by(|x, y| x.key.cmp(&y.key));
                                return Ok(out);
                            }
                            Err(e) => last = Some(e.to_string()),
                        }
                    }
                    Err(_) => last = Some("request timed out".into()),
                }
                backoff(attempt).await;
            }
            Err(io_err(
                &p,
                format!("listing failed: {}", last.unwrap_or_default()),
            ))
        })?
    }

    /// Delete objects (a missing one is not an error), retried.
    pub fn delete(&self, keys: Vec<String>) -> Result<()> {
        let store = self.store.clone();
        self.run(async move {
            let results = futures::stream::iter(keys)
                .map(|k| {
                    let store = store.clone();
                    async move {
                        let mut last = String::new();
                        for attempt in 0..ATTEMPTS {
                            match store.delete(&OPath::from(k.as_str())).await {
                                Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
                                Err(e) => last = e.to_string(),
                            }
                            backoff(attempt).await;
                        }
                        Err(io_err(&k, format!("delete failed: {last}")))
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<Result<()>>>()
                .await;
            results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
        })?
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20u64 << attempt.min(6))).await;
}

/// A piece of a body streamed by [`Remote::get_streamed`].
#[derive(Debug)]
pub enum Piece {
    /// A request's body begins (again, after a failed attempt: what came before it is
    /// void).
    Start,
    /// The next bytes of the body.
    Bytes(Bytes),
}

/// What the runtime's task sends a streamed GET's reader.
enum Streamed {
    Piece(Piece),
    /// The last message: the object was found and all of it sent (`Ok(true)`), it is
    /// missing (`Ok(false)`), or every attempt failed.
    Done(Result<bool>),
}

impl Remote {
    /// GET `key`, its body handed to `sink` on this thread as it arrives, so that no
    /// copy of the whole body is held: [`Piece::Start`] before each attempt's first
    /// piece (a request that fails midway is retried from the start, with backoff, as
    /// [`get_async`] retries), then its pieces. `Ok(false)` if the object is missing. An
    /// error of `sink` ends the request and is returned.
    pub fn get_streamed(
        &self,
        key: &str,
        mut sink: impl FnMut(Piece) -> Result<()>,
    ) -> Result<bool> {
        // Unbounded: the sender is a runtime task, which must not block; the reader
        // (cache file writes) outpaces the network, so little waits in it.
        let (tx, rx) = std::sync::mpsc::channel::<Streamed>();
        let store = self.store.clone();
        let k = key.to_string();
        self.spawn(async move {
            let send = |m| tx.send(m).is_ok();
            let mut last = String::new();
            for attempt in 0..ATTEMPTS {
                let p = OPath::from(k.as_str());
                let r = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let g = match store.get(&p).await {
                        Ok(g) => g,
                        Err(object_store::Error::NotFound { .. }) => return Ok(Some(false)),
                        Err(e) => return Err(e),
                    };
                    if !send(Streamed::Piece(Piece::Start)) {
                        return Ok(None);
                    }
                    let mut body = g.into_stream();
                    while let Some(b) = body.next().await {
                        if !send(Streamed::Piece(Piece::Bytes(b?))) {
                            return Ok(None);
                        }
                    }
                    Ok(Some(true))
                })
                .await;
                match r {
                    // The reader is gone: nothing to tell.
                    Ok(Ok(None)) => return,
                    Ok(Ok(Some(found))) => {
                        send(Streamed::Done(Ok(found)));
                        return;
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "request timed out".into(),
                }
                backoff(attempt).await;
            }
            send(Streamed::Done(Err(io_err(&k, format!("GET failed: {last}")))));
        });
        loop {
            match rx.recv() {
                Ok(Streamed::Piece(p)) => sink(p)?,
                Ok(Streamed::Done(r)) => return r,
                Err(_) => return Err(io_err(key, "object store runtime stopped")),
            }
        }
    }
}

/// GET with retries; None for a missing object.
pub async fn get_async(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Option<Bytes>> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        let p = OPath::from(key);
        let r = tokio::time::timeout(REQUEST_TIMEOUT, async {
            match store.get(&p).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await;
        match r {
            Ok(Ok(b)) => return Ok(b),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "request timed out".into(),
        }
        backoff(attempt).await;
    }
    Err(io_err(key, format!("GET failed: {last}")))
}

/// PUT (overwrite) with retries.
pub async fn put_async(store: &Arc<dyn ObjectStore>, key: &str, bytes: Bytes) -> Result<()> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        let p = OPath::from(key);
        let r = tokio::time::timeout(
            REQUEST_TIMEOUT,
            store.put(&p, PutPayload::from(bytes.clone())),
        )
        .await;
        match r {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "request timed out".into(),
        }
        backoff(attempt).await;
    }
    Err(io_err(key, format!("PUT failed: {last}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last reference to a `Remote`, dropped by one of its own tasks (a blocking
    /// one, as a background fetch is, or an async one), is dropped without that task
    /// waiting for itself.
    #[test]
    fn a_remote_dropped_by_its_own_task_does_not_wait_for_itself() {
        for blocking in [true, false] {
            let store = Arc::new(object_store::memory::InMemory::new()) as Arc<dyn ObjectStore>;
            let remote = Arc::new(Remote::new(store).unwrap());
            let (tx, rx) = std::sync::mpsc::channel();
            let last = remote.clone();
            if blocking {
                remote.spawn(async move {
                    let _ = tokio::task::spawn_blocking(move || {
                        drop(last);
                        let _ = tx.send(());
                    })
                    .await;
                });
            } else {
                remote.spawn(async move {
                    drop(last);
                    let _ = tx.send(());
                });
            }
            // The task holds the last reference from here on.
            drop(remote);
            assert!(
                rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok(),
                "the task that dropped the last reference finished (blocking: {blocking})"
            );
        }
    }
}
