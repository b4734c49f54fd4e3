//! A version-2 file stays version 2 (storage-format.md §2.7, compatibility): wdb appends
//! raw blocks without page CRC tables to it, so version-2 readers keep reading it, and
//! reads (random ones included: whole-block checks) work; compaction upgrades it to
//! the newest version, with tables.

use std::path::Path;

use wdb::db::{ArrayOptions, Compression, Db};

fn header_version(p: &Path) -> u32 {
    let b = std::fs::read(p).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

/// Record headers of raw `B` records with the page CRC flag (bit 1).
fn tables(p: &Path) -> usize {
    let b = std::fs::read(p).unwrap();
    (4096..b.len() - 48)
        .step_by(8)
        .filter(|&o| b[o] == b'B' && b[o + 1] == 1 && b[o + 2] == 1 && b[o + 3] & 2 != 0)
        .count()
}

#[test]
fn a_version_2_file_gets_no_tables_until_compaction_upgrades_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.wdb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2-small.wdb"),
        &p,
    )
    .unwrap();
    assert_eq!(header_version(&p), 2);
    let db = Db::open(&p).unwrap();
    let bs = 256u64 << 10;
    let n = 4 * bs / 8;
    let tx = db.begin().unwrap();
    let opts = ArrayOptions {
        compression: Compression::None,
        block_size: Some(bs as u32),
        ..ArrayOptions::default()
    };
    let mut a = tx.create_array_with::<f64>("fresh", &[n], opts).unwrap();
    let data: Vec<f64> = (0..n).map(|i| (i * 7919 % 1000) as f64 + 0.5).collect();
    a.write_from(0..n, &data).unwrap();
    drop(a);
    tx.commit().unwrap();
    assert_eq!(header_version(&p), 2);
    assert_eq!(tables(&p), 0, "a page CRC table in a version-2 file");
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    // Reads at random (through a view) and whole.
    {
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("fresh").unwrap();
        let v = a.view(..).unwrap();
        for i in [3 * n / 4 + 5, n / 4 + 9, n - 1, 17] {
            assert_eq!(v[[i as usize]], data[i as usize]);
        }
        assert_eq!(a.to_vec(..).unwrap(), data);
    }
    db.compact().unwrap();
    assert_eq!(header_version(&p), wdb::format::FORMAT_VERSION);
    assert!(tables(&p) >= 4, "compaction writes page CRC tables");
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
    drop(db);
    let db = Db::open(&p).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("fresh").unwrap();
    let v = a.view(..).unwrap();
    for i in [3 * n / 4 + 5, n / 4 + 9, n - 1, 17] {
        assert_eq!(v[[i as usize]], data[i as usize]);
    }
    assert_eq!(a.to_vec(..).unwrap(), data);
}
