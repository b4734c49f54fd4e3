//! What a reader of an object-store database waits for before its first byte:
//! `Db::open_url` (read-only) and its first snapshot, timed in this process and
//! printed in milliseconds. Run it in fresh processes, alternating builds, to compare
//! them (docs/object-storage.md, "Open").
//!
//!     cargo run --release --features s3 --example open_url_time -- URL CACHE_DIR
//!
//! URL is an `s3://bucket/prefix` database (credentials and endpoint from the
//! environment, as for `Db::open_url`); CACHE_DIR the local cache directory to use.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [url, cache] = a.as_slice() else {
        return Err("usage: open_url_time URL CACHE_DIR".into());
    };
    let t = Instant::now();
    let db = wdb::Db::open_url(
        url,
        wdb::Options::default().read_only(true).cache_dir(cache),
    )?;
    let open = t.elapsed();
    let snap = db.snapshot()?;
    let both = t.elapsed();
    std::hint::black_box(&snap);
    println!(
        "open {:.3} ms, open + snapshot {:.3} ms",
        open.as_secs_f64() * 1e3,
        both.as_secs_f64() * 1e3
    );
    Ok(())
}
