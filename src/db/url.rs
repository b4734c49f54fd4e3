//! Opening a database by URL: a local path or `file://` URL, or `s3://bucket/prefix`
//! (object storage, with the `s3` cargo feature).

use super::{Db, Durability, Options};
use crate::store::StoreOptions;
use crate::{Error, Result};

impl Db {
    /// Open or create the database at `url`: `s3://bucket/prefix` (an S3-compatible
    /// object store; endpoint and credentials from the `AWS_*` environment as
    /// `object_store`'s `AmazonS3Builder::from_env` reads it: `AWS_ENDPOINT`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
    /// `AWS_ALLOW_HTTP=true` for an http endpoint), a `file://` URL or a plain path.
    /// `Options::cache_dir` and `Options::cache_size` bound the local cache of an
    /// object-store database.
    pub fn open_url(url: &str, o: Options) -> Result<Db> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(Error::InvalidArgument(format!("{url:?}: no path")));
            }
            return Db::open_with(path, o);
        }
        if url.starts_with("s3://") {
            return open_s3(url, o);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Error::InvalidArgument(format!(
                    "{url:?}: unsupported URL scheme {scheme:?} (s3://, file:// or a path)"
                )));
            }
        }
        Db::open_with(url, o)
    }

    /// Open or create an object-store database under `prefix` of `store` (tests use
    /// an in-memory store or a fault-injecting wrapper); `name` names it in messages.
    #[cfg(feature = "s3")]
    pub fn open_object_store(
        name: &str,
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        prefix: &str,
        o: Options,
    ) -> Result<Db> {
        let (oo, so) = object_options(name, &o);
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let store = crate::store::object::open_store(name, store, &prefix, &oo, so)?;
        Ok(Db::from_store(store, o))
    }
}

#[cfg(feature = "s3")]
fn object_options(url: &str, o: &Options) -> (crate::store::object::ObjectOptions, StoreOptions) {
    (
        crate::store::object::ObjectOptions {
            read_only: o.read_only,
            cache_dir: o
                .cache_dir
                .clone()
                .unwrap_or_else(|| crate::store::object::default_cache_dir(url)),
            cache_size: o.cache_size,
            gc_grace: o.gc_grace,
        },
        StoreOptions {
            read_only: o.read_only,
            sync: o.durability == Durability::Full,
            verify: o.verify,
            table: o.verify_table.clone(),
            ..StoreOptions::default()
        },
    )
}

#[cfg(feature = "s3")]
fn open_s3(url: &str, o: Options) -> Result<Db> {
    let (oo, so) = object_options(url, &o);
    let store = crate::store::object::open_s3(url, &oo, so)?;
    Ok(Db::from_store(store, o))
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str, _o: Options) -> Result<Db> {
    let _ = (StoreOptions::default(), Durability::Full);
    Err(Error::InvalidArgument(format!(
        "{url:?}: s3:// URLs need wdb built with the `s3` cargo feature"
    )))
}
