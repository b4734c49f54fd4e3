//! Corruption never goes unnoticed and never panics or hangs: every single-bit flip of a
//! small reference database (file header, transaction headers, user and description,
//! every record type — block raw/zstd/hole, catalog entry, tombstone, names marker —,
//! padding, payloads, trailers) is reported by fsck; open + reads on each flipped file
//! either fail with an error or show exactly the data of a real commit (never wrong data);
//! each probe takes < 1 s. Likewise every truncation, random garbage files, every bit of
//! the index checkpoint (open ignores a bad one and reads right) and the lock file's
//! header and reader slots (no meaning: open, commit and the reader table still work).
//! Every probe opens and reads in each `Verify` mode; under `Verify::Off` (which trusts
//! raw payloads) a flip inside a raw block's payload may be shown, and fsck reports it.

mod reliability_util;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use reliability_util::*;
use wdb::db::{Db, Durability, Key, Options};
use wdb::{Tid, Verify};

const MODES: [Verify; 3] = [Verify::OncePerBoot, Verify::OncePerProcess, Verify::Off];

/// File ranges of the raw block payloads of the database at `p` (what `Verify::Off`
/// trusts).
fn raw_payloads(p: &Path) -> Vec<std::ops::Range<u64>> {
    let db = Db::open_with(p, Options::default().read_only(true)).unwrap();
    let gen = db.store().current();
    let all = gen.with_index(|ix| ix.all_versions()).unwrap();
    all.iter()
        .filter(|(k, _)| matches!(k, Key::Block { .. }))
        .flat_map(|(_, vs)| vs.iter())
        .filter(|v| v.encoding == wdb::format::Encoding::Raw)
        .map(|v| v.payload_off()..v.payload_off() + u64::from(v.stored_len))
        .collect()
}

/// The reference database: every record type, a user and description, several commits.
/// Returns its bytes and the model at each tid.
fn reference(dir: &Path) -> (Vec<u8>, BTreeMap<Tid, Model>) {
    let p = dir.join("ref.wdb");
    let db = Db::open(&p).unwrap();
    let mut models = BTreeMap::new();
    models.insert(Tid::ZERO, Model::new());
    let mut m = Model::new();
    // 1: create a (zstd) with a compressible block and b (no compression) with a raw page.
    let tx = db.begin().unwrap();
    let a = tx.create_array_raw(spec("a", 2, true)).unwrap().id;
    let b = tx.create_array_raw(spec("b", 2, false)).unwrap().id;
    let mut za = vec![0u8; BS];
    za[..3000]
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i % 5) as u8 + 1);
    tx.write_block(a, 0, &za).unwrap();
    let mut rb = vec![0u8; BS];
    Rng::new(5).fill(&mut rb[..4096]);
    tx.write_block(b, 1, &rb).unwrap();
    let t = tx.commit_with("alice", "first").unwrap();
    let mut ma = ModelArray {
        shape: vec![2 * BS as u64],
        blocks: BTreeMap::new(),
    };
    ma.blocks.insert(0, za.clone());
    m.insert("a".into(), ma);
    let mut mb = ModelArray {
        shape: vec![2 * BS as u64],
        blocks: BTreeMap::new(),
    };
    mb.blocks.insert(1, rb);
    m.insert("b".into(), mb);
    models.insert(t, m.clone());
    // 2: overwrite a's block with zeros (a hole) and resize a.
    let tx = db.begin().unwrap();
    tx.write_block(a, 0, &vec![0u8; BS]).unwrap();
    tx.set_shape("a", &[BS as u64 + 5]).unwrap();
    let t = tx.commit().unwrap();
    let e = m.get_mut("a").unwrap();
    e.blocks.insert(0, vec![0u8; BS]);
    e.shape = vec![BS as u64 + 5];
    models.insert(t, m.clone());
    // 3: delete b (tombstone + names marker), write a's block 1.
    let tx = db.begin().unwrap();
    tx.delete_array("b").unwrap();
    let mut z2 = vec![0u8; BS];
    z2[100..200].fill(9);
    tx.write_block(a, 1, &z2).unwrap();
    let t = tx.commit_with("", "delete b").unwrap();
    m.remove("b");
    m.get_mut("a").unwrap().blocks.insert(1, z2);
    models.insert(t, m.clone());
    drop(db);
    (std::fs::read(&p).unwrap(), models)
}

#[derive(Debug, Default)]
struct Tally {
    probes: u64,
    fsck_reported: u64,
    fsck_error: u64,
    fsck_silent: Vec<(usize, u8)>,
    open_failed: u64,
    open_ok_data_of_a_commit: u64,
    slowest: Duration,
}

/// Remove everything in `dir` but the lock file.
fn clean(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().ends_with(".lock") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Put `bytes` at `dir/p.wdb`, run fsck, then open + read everything in each `Verify`
/// mode. Returns whether fsck reported a problem (or refused with an error). Panics if
/// open succeeds and shows data that is not that of a real commit — except under
/// `Verify::Off` when `in_raw` (the change lies inside a raw payload) and fsck reported.
fn probe(
    dir: &Path,
    bytes: &[u8],
    models: &BTreeMap<Tid, Model>,
    t: &mut Tally,
    what: &str,
    in_raw: bool,
) -> bool {
    clean(dir);
    let p = dir.join("p.wdb");
    std::fs::write(&p, bytes).unwrap();
    let start = Instant::now();
    let reported = match Db::fsck_path(&p) {
        Ok(rep) => !rep.is_clean(),
        Err(_) => {
            t.fsck_error += 1;
            true
        }
    };
    for mode in MODES {
        // The first open as a user would (it may cut a torn tail and writes a
        // checkpoint at close), the others read-only (no sync at close: fast).
        let ro = mode != MODES[0];
        match Db::open_with(&p, Options::default().verify(mode).read_only(ro)) {
            Err(_) => t.open_failed += 1,
            Ok(db) => {
                let head = db.last_tid().unwrap();
                match models.get(&head) {
                    Some(m) => {
                        // Reads may fail (a bad payload is found on read), never lie.
                        if let Err(e) = check_state(&db, None, m) {
                            let trusted = mode == Verify::Off && in_raw && reported;
                            assert!(
                                e.contains("read") || e.contains("snapshot") || trusted,
                                "{what}, {mode:?}: wrong data after open: {e}"
                            );
                        }
                        t.open_ok_data_of_a_commit += 1;
                    }
                    None => {
                        panic!("{what}, {mode:?}: open shows tid {head}, which was never committed")
                    }
                }
            }
        }
    }
    let el = start.elapsed();
    t.slowest = t.slowest.max(el);
    assert!(el < Duration::from_secs(1), "{what}: took {el:?}");
    t.probes += 1;
    reported
}

#[test]
fn every_bit_flip_of_the_log_is_reported_and_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, models) = reference(dir.path());
    let raw = raw_payloads(&dir.path().join("ref.wdb"));
    assert!(!raw.is_empty(), "the reference holds a raw block");
    let work = fast_tempdir();
    let mut t = Tally::default();
    for i in 0..bytes.len() {
        let in_raw = raw.iter().any(|r| r.contains(&(i as u64)));
        for bit in 0..8u8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if probe(
                work.path(),
                &b,
                &models,
                &mut t,
                &format!("byte {i} bit {bit}"),
                in_raw,
            ) {
                t.fsck_reported += 1;
            } else {
                t.fsck_silent.push((i, bit));
            }
        }
    }
    eprintln!(
        "corruption bit flips: {} bytes, {} flips, reported {}, fsck errors {}, silent {}, \
         open failed {}, opened showing a real commit {}, slowest {:?}",
        bytes.len(),
        t.probes,
        t.fsck_reported,
        t.fsck_error,
        t.fsck_silent.len(),
        t.open_failed,
        t.open_ok_data_of_a_commit,
        t.slowest
    );
    assert!(
        t.fsck_silent.is_empty(),
        "flips fsck did not report: {:?}",
        t.fsck_silent
    );
}

#[test]
fn every_truncation_and_random_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, models) = reference(dir.path());
    let work = fast_tempdir();
    let mut t = Tally::default();
    // Every truncation length. A cut exactly after a transaction is a valid database
    // with fewer commits (probe checks that it shows exactly one of them); any other is
    // reported.
    let ends = tx_ends(&dir.path().join("ref.wdb"));
    for len in 0..bytes.len() {
        let reported = probe(
            work.path(),
            &bytes[..len],
            &models,
            &mut t,
            &format!("cut at {len}"),
            false,
        );
        let boundary = ends.contains(&(len as u64));
        assert!(
            reported != boundary,
            "cut at {len} of {}: reported {reported}",
            bytes.len()
        );
    }
    let cuts = t.probes;
    // Random garbage, with and without a valid file header in front.
    let mut rng = Rng::new(99);
    let n = scale(2000, 50_000);
    for i in 0..n {
        let len = rng.below(20_000) as usize;
        let mut g = vec![0u8; len];
        rng.fill(&mut g);
        if i % 2 == 0 && len > 4096 {
            g[..4096].copy_from_slice(&bytes[..4096]);
            if i % 4 == 0 {
                // A valid first transaction, then garbage.
                let k = len.min(bytes.len()).min(4096 + rng.below(8192) as usize);
                g[..k].copy_from_slice(&bytes[..k]);
            }
        }
        probe(
            work.path(),
            &g,
            &models,
            &mut t,
            &format!("garbage {i}"),
            false,
        );
    }
    eprintln!(
        "corruption truncations: {cuts} cuts, all reported but the {} at transaction ends \
         (valid shorter databases); {n} garbage files; open failed {}, opened {}, slowest {:?}",
        ends.iter().filter(|&&e| e < bytes.len() as u64).count(),
        t.open_failed,
        t.open_ok_data_of_a_commit,
        t.slowest
    );
}

#[test]
fn every_bit_flip_of_the_checkpoint_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, models) = reference(dir.path());
    let idx = std::fs::read(dir.path().join("ref.wdb.idx")).expect("close writes a checkpoint");
    let head = *models.keys().last().unwrap();
    let work = fast_tempdir();
    let p = work.path().join("p.wdb");
    let mut n = 0;
    for i in 0..idx.len() {
        for bit in 0..8 {
            clean(work.path());
            std::fs::write(&p, &bytes).unwrap();
            let mut b = idx.clone();
            b[i] ^= 1 << bit;
            std::fs::write(work.path().join("p.wdb.idx"), &b).unwrap();
            let db = Db::open(&p).unwrap_or_else(|e| panic!("idx byte {i} bit {bit}: {e}"));
            assert_eq!(db.last_tid().unwrap(), head);
            check_state(&db, None, &models[&head])
                .unwrap_or_else(|e| panic!("idx byte {i} bit {bit}: {e}"));
            n += 1;
        }
    }
    eprintln!(
        "corruption checkpoint: {n} flips of a {}-byte checkpoint, all ignored",
        idx.len()
    );
}

#[test]
fn lock_file_bytes_carry_no_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, models) = reference(dir.path());
    let lock = std::fs::read(dir.path().join("ref.wdb.lock")).unwrap();
    let head = *models.keys().last().unwrap();
    let work = fast_tempdir();
    let p = work.path().join("p.wdb");
    // The header page's meaningful bytes (lock bytes, magic) and the first four slots
    // (magic, pid, tid of a reader), every bit; a slot full of a dead reader's data.
    let offsets: Vec<usize> = (0..16).chain(4096..4096 + 4 * 32).collect();
    let mut n = 0;
    for &i in &offsets {
        for bit in 0..8 {
            clean(work.path());
            std::fs::write(&p, &bytes).unwrap();
            let mut b = lock.clone();
            b[i] ^= 1 << bit;
            std::fs::write(work.path().join("p.wdb.lock"), &b).unwrap();
            let db = Db::open_with(&p, Options::default().durability(Durability::Buffered))
                .unwrap_or_else(|e| panic!("lock byte {i} bit {bit}: {e}"));
            check_state(&db, None, &models[&head]).unwrap();
            assert!(
                db.info().unwrap().live_readers.is_empty(),
                "lock byte {i} bit {bit}: a flipped unlocked slot counts as a reader"
            );
            let tx = db.begin().unwrap();
            let a = tx.array_info("a").unwrap().id;
            tx.write_block(a, 1, &vec![1u8; BS]).unwrap();
            tx.commit()
                .unwrap_or_else(|e| panic!("lock byte {i} bit {bit}: {e}"));
            n += 1;
        }
    }
    eprintln!("corruption lock file: {n} flips, open/read/commit unaffected");
}
