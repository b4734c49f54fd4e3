//! Compatibility of format version 2 with version 1 files: the version-1 golden file
//! (`tests/data/v1-small.wdb`) is read, a small change committed to it is appended as
//! a full block — never a delta record, so version-1 readers can still read the file —
//! and compaction rewrites it as a version-2 file, after which small changes are deltas.

use std::path::Path;

use wdb::Db;

const BS: usize = 64 << 10;

fn header_version(p: &Path) -> u32 {
    let b = std::fs::read(p).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

#[test]
fn a_version_1_file_gets_full_blocks_until_compaction_upgrades_it() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-small.wdb");
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("g.wdb");
    std::fs::copy(golden, &p).unwrap();
    assert_eq!(header_version(&p), 1);
    let db = Db::open(&p).unwrap();
    assert_eq!(db.info().unwrap().format_version, 1);
    let id = db.snapshot().unwrap().array_info("raw").unwrap().id;
    let mut block = vec![0u8; BS];
    db.snapshot()
        .unwrap()
        .read_block(id, 0, &mut block)
        .unwrap();

    let change = |db: &Db, block: &mut Vec<u8>, at: usize| {
        block[at] ^= 0x55;
        let tx = db.begin().unwrap();
        tx.write_block(id, 0, block).unwrap();
        tx.commit().unwrap();
        let mut back = vec![0u8; BS];
        db.snapshot().unwrap().read_block(id, 0, &mut back).unwrap();
        assert!(back == *block);
        db.snapshot()
            .unwrap()
            .array_stats("raw")
            .unwrap()
            .delta_blocks
    };
    assert_eq!(
        change(&db, &mut block, 100),
        0,
        "a delta in a version-1 file"
    );
    assert_eq!(header_version(&p), 1);
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());

    db.compact().unwrap();
    assert_eq!(header_version(&p), wdb::format::FORMAT_VERSION);
    assert_eq!(
        db.info().unwrap().format_version,
        wdb::format::FORMAT_VERSION
    );
    assert_eq!(change(&db, &mut block, 200), 1);
    assert!(db.fsck().unwrap().is_clean(), "{}", db.fsck().unwrap());
}
