//! The fuzz corpus (`fuzz/corpus/<target>/*`) replayed on stable through the same harness
//! the cargo-fuzz targets run: every input returns without a panic and within a second.
//! `WDB_WRITE_FUZZ_SEEDS=1` (re)writes the seed inputs: real databases and their parts.

mod reliability_util;

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reliability_util::*;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn write_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.wdb");
    build_reference(&p, 1);
    let db = std::fs::read(&p).unwrap();
    let idx = std::fs::read(dir.path().join("s.wdb.idx")).unwrap();
    let o = corpus("open_db");
    std::fs::create_dir_all(&o).unwrap();
    std::fs::write(o.join("reference.wdb"), &db).unwrap();
    std::fs::write(o.join("header-only.wdb"), &db[..4096]).unwrap();
    std::fs::write(o.join("first-tx.wdb"), &db[..db.len().min(4096 + 600)]).unwrap();
    let d = corpus("decoders");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("file-header"), &db[..64]).unwrap();
    std::fs::write(d.join("tx-and-records"), &db[4096..4096 + 512]).unwrap();
    std::fs::write(d.join("checkpoint"), &idx).unwrap();
    std::fs::write(d.join("trailer"), &db[db.len() - 32..]).unwrap();
}

fn replay(target: &str, run: &dyn Fn(&[u8])) -> usize {
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(corpus(target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let t = Instant::now();
        run(&data);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{}: slow",
            f.display()
        );
        n += 1;
    }
    n
}

#[test]
fn the_fuzz_corpus_replays_without_panics() {
    if std::env::var_os("WDB_WRITE_FUZZ_SEEDS").is_some() {
        write_seeds();
    }
    let a = replay("decoders", &harness::decoders);
    let dir = fast_tempdir();
    let b = replay("open_db", &|d| harness::open_db(dir.path(), d));
    eprintln!("fuzz corpus: {a} decoder inputs, {b} database inputs replayed");
    assert!(a >= 4 && b >= 3, "the seed corpus is missing");
}
