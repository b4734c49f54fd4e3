//! Format version 4 places raw payloads of whole 2 MiB blocks at 2 MiB-aligned file
//! offsets behind a hole (storage-format.md §2.8): such payloads are aligned, the
//! padding takes no disk blocks, fsck checks every padding byte that is not a hole
//! (a nonzero byte written into one is reported), and a version-3 file stays version 3
//! (no aligned records) until compaction upgrades it.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use wdb::db::{ArrayOptions, Compression, Db, Key};

const HUGE: u64 = 2 << 20;

fn header_version(p: &Path) -> u32 {
    let b = std::fs::read(p).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

fn data(n: u64) -> Vec<f64> {
    (0..n).map(|i| (i * 7919 % 1000) as f64 + 0.25).collect()
}

/// Create "big" (f64, 2 MiB raw blocks) holding `data(n)` in one commit.
fn write_big(db: &Db, n: u64) {
    let tx = db.begin().unwrap();
    let o = ArrayOptions::default()
        .block_size(HUGE as u32)
        .compression(Compression::None);
    let mut a = tx.create_array_with::<f64>("big", &[0], o).unwrap();
    a.append(&data(n)).unwrap();
    drop(a);
    tx.commit().unwrap();
}

/// Payload offsets and stored lengths of the visible blocks of "big".
fn payloads(db: &Db) -> Vec<(u64, u32)> {
    let s = db.snapshot().unwrap();
    let id = s.array_info("big").unwrap().id;
    let gen = db.store().current();
    (0..)
        .map_while(|blk| {
            gen.version_at(&Key::Block { array: id, blk }, s.tid())
                .unwrap()
        })
        .map(|v| (v.payload_off(), v.stored_len))
        .collect()
}

fn reads_back(db: &Db, n: u64) {
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("big").unwrap();
    assert_eq!(a.to_vec(..).unwrap(), data(n));
    let v = a.view(..).unwrap();
    for i in [0, n / 3, n - 1] {
        assert_eq!(v[[i as usize]], data(n)[i as usize]);
    }
}

#[test]
fn whole_2mib_payloads_are_aligned_behind_holes_and_fsck_checks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.wdb");
    let db = Db::open(&p).unwrap();
    let n = 3 * HUGE / 8 + 1000; // three whole blocks and a trimmed one
    write_big(&db, n);
    assert_eq!(header_version(&p), 4);
    let pl = payloads(&db);
    assert_eq!(pl.len(), 4);
    for &(off, len) in &pl[..3] {
        assert_eq!((off % HUGE, u64::from(len)), (0, HUGE));
    }
    assert_eq!(
        pl[3].0 % 4096,
        0,
        "a trimmed payload is page-aligned, as in version 3"
    );
    let md = std::fs::metadata(&p).unwrap();
    let allocated = md.blocks() * 512;
    assert!(
        allocated + 3 * (HUGE - (64 << 10)) <= md.len(),
        "padding is a hole: {allocated} bytes allocated of {}",
        md.len()
    );
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    reads_back(&db, n);
    drop(db);
    // Reopen without the checkpoint (open then checks the whole log, padding too).
    std::fs::remove_file(dir.path().join("d.wdb.idx")).unwrap();
    let db = Db::open(&p).unwrap();
    reads_back(&db, n);
    // A nonzero byte in the middle of the padding (the hole now holds a block).
    let at = pl[1].0 - HUGE / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(&[1], at)
        .unwrap();
    let rep = db.fsck().unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|q| q.what.contains("nonzero padding")),
        "{rep}"
    );
}

#[test]
fn a_version_3_file_stays_version_3_until_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.wdb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v3-small.wdb"),
        &p,
    )
    .unwrap();
    assert_eq!(header_version(&p), 3);
    let db = Db::open(&p).unwrap();
    let n = 2 * HUGE / 8;
    write_big(&db, n);
    assert_eq!(header_version(&p), 3);
    assert!(
        payloads(&db).iter().all(|&(off, _)| off % HUGE != 0),
        "no aligned payload in a version-3 file"
    );
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    reads_back(&db, n);
    db.compact().unwrap();
    assert_eq!(header_version(&p), 4);
    assert!(payloads(&db).iter().all(|&(off, _)| off % HUGE == 0));
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    reads_back(&db, n);
}
