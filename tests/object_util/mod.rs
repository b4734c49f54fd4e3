//! Helpers of the object-store tests: a fault-injecting `ObjectStore` wrapper, the
//! real gateway's store from the environment (or why a test skips), and child
//! processes playing "other machines".
#![allow(dead_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path as OPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// What the next armed requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 (a generic server error).
    ServerError,
    /// Hang this long, then fail as a timed-out request.
    Timeout(Duration),
    /// GETs return the body cut short (other requests pass).
    Truncate,
}

/// The armed faults of a [`Faulty`] store.
#[derive(Debug, Default)]
pub struct Plan {
    /// Requests still to fail.
    pub remaining: AtomicU32,
    /// Requests whose key contains this text are affected (empty: all).
    pub filter: parking_lot::Mutex<String>,
    fault: parking_lot::Mutex<Option<Fault>>,
    /// Requests that were faulted so far.
    pub fired: AtomicU64,
    /// Before a PUT whose key contains this text: create the marker file and hang
    /// forever (a writer to kill -9 between its data and its commit object).
    pub hang_on_put: parking_lot::Mutex<Option<(String, PathBuf)>>,
    /// Every request, as (method, key): `PUT`, `GET`, `LIST` (its offset), in order.
    pub log: parking_lot::Mutex<Vec<(&'static str, String)>>,
}

impl Plan {
    /// The requests logged so far whose method is `method` and key contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|(m, k)| *m == method && k.contains(part))
            .count()
    }

    fn note(&self, method: &'static str, key: &OPath) {
        self.log.lock().push((method, key.to_string()));
    }

    /// The next `n` requests on keys containing `filter` get `fault`.
    pub fn arm(&self, fault: Fault, n: u32, filter: &str) {
        *self.fault.lock() = Some(fault);
        *self.filter.lock() = filter.to_string();
        self.remaining.store(n, Ordering::SeqCst);
    }

    fn take(&self, key: &OPath) -> Option<Fault> {
        let f = (*self.fault.lock())?;
        if !key.as_ref().contains(self.filter.lock().as_str()) {
            return None;
        }
        let r = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
        r.ok().map(|_| {
            self.fired.fetch_add(1, Ordering::SeqCst);
            f
        })
    }
}

/// An `ObjectStore` that injects the faults armed in its [`Plan`].
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn ObjectStore>,
    pub plan: Arc<Plan>,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: what.to_string().into(),
    }
}

impl Faulty {
    async fn fault(&self, key: &OPath, is_get: bool) -> Result<bool> {
        let taken = self.plan.take(key);
        let hang = self.plan.hang_on_put.lock().clone();
        if let Some((filter, marker)) = hang.filter(|_| !is_get) {
            if key.as_ref().contains(&filter) {
                std::fs::write(&marker, b"hanging").unwrap();
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        }
        match taken {
            Some(Fault::ServerError) => Err(injected("injected 500 Internal Server Error")),
            Some(Fault::Timeout(d)) => {
                tokio::time::sleep(d).await;
                Err(injected("injected timeout"))
            }
            Some(Fault::Truncate) if is_get => Ok(true),
            Some(Fault::Truncate) => {
                // Not a GET: put the fault back for the next GET.
                self.plan.remaining.fetch_add(1, Ordering::SeqCst);
                self.plan.fired.fetch_sub(1, Ordering::SeqCst);
                Ok(false)
            }
            None => Ok(false),
        }
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(&self, l: &OPath, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.plan.note("PUT", l);
        self.fault(l, false).await?;
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &OPath,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.fault(l, false).await?;
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &OPath, o: GetOptions) -> Result<GetResult> {
        self.plan.note("GET", l);
        let truncate = self.fault(l, true).await?;
        let r = self.inner.get_opts(l, o).await?;
        if truncate {
            let b = r.bytes().await?;
            let cut = Bytes::copy_from_slice(&b[..b.len() / 2]);
            let meta = ObjectMeta {
                size: cut.len() as u64,
                ..self.inner.head(l).await?
            };
            return Ok(GetResult {
                range: 0..cut.len() as u64,
                payload: GetResultPayload::Stream(futures::stream::iter([Ok(cut)]).boxed()),
                meta,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        Ok(r)
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<OPath>>,
    ) -> BoxStream<'static, Result<OPath>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&OPath>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_with_offset(
        &self,
        prefix: Option<&OPath>,
        offset: &OPath,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.plan.note("LIST", offset);
        let truncating = *self.plan.fault.lock() == Some(Fault::Truncate);
        if !truncating && self.plan.take(offset).is_some() {
            return futures::stream::iter([Err(injected("injected 503 Slow Down"))]).boxed();
        }
        self.inner.list_with_offset(prefix, offset)
    }
    async fn list_with_delimiter(&self, prefix: Option<&OPath>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &OPath, to: &OPath, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

use object_store::ObjectStoreExt as _;

/// The gateway's store and a fresh prefix for one test, or None (with the reason
/// printed) when the gateway's variables are not set.
pub fn gateway(test: &str) -> Option<(Arc<dyn ObjectStore>, String, String)> {
    let Ok(url) = std::env::var("WDB_S3_TEST_URL") else {
        eprintln!(
            "{test}: skipped: WDB_S3_TEST_URL and the AWS_* variables of an S3 gateway are not set (.ci/ceph-start.sh prints them)"
        );
        return None;
    };
    let bucket = url
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("t-{test}-{}-{nanos}", std::process::id());
    Some((Arc::new(store), format!("s3://{bucket}/{prefix}"), prefix))
}

/// A runtime for the tests' own requests to a store.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A "machine": the database under prefix `db1` of the shared in-memory `store`, with
/// its own local cache (`opts` names it).
pub fn mem_machine(
    store: &Arc<object_store::memory::InMemory>,
    opts: wdb::db::Options,
) -> wdb::db::Db {
    wdb::db::Db::open_object_store(
        "mem://test",
        store.clone() as Arc<dyn ObjectStore>,
        "db1",
        opts,
    )
    .unwrap()
}

/// Keys under `prefix` of `store`.
pub fn keys(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    rt().block_on(async {
        store
            .list(Some(&OPath::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
}

/// Start this test binary's `child_entry` as `role` on database `url`, with its own
/// cache directory `cache` and extra environment.
pub fn spawn_child(
    role: &str,
    url: &str,
    cache: &Path,
    env: &[(&str, String)],
) -> std::process::Child {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("WDB_CHILD", role)
        .env("WDB_CHILD_DB", url)
        .env("WDB_CHILD_CACHE", cache)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Wait for a child and return its stdout, failing the test if it failed.
pub fn finish(c: std::process::Child, role: &str) -> String {
    let out = c.wait_with_output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {role} failed: {so}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// A number printed by a child as `NAME=value` on its own line.
pub fn reported(out: &str, name: &str) -> u64 {
    out.lines()
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {out}"))
        .trim()
        .parse()
        .unwrap()
}

/// Wait (at most 10 s) until no process holds the lock of a cache slot.
pub fn slot_released(lock: &std::path::Path) {
    let f = std::fs::File::open(lock).unwrap();
    for _ in 0..1000 {
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the cache slot {} is still held", lock.display());
}
