//! Backward compatibility: a small database written by format version 1
//! (`tests/data/v1-small.wdb`) opens, reads back exactly and checks clean — forever.
//! Regenerate (only when starting a new format version's file) with
//! `WDB_WRITE_GOLDEN=1 cargo test --test format_golden_v1`.

use std::path::{Path, PathBuf};

use wdb::db::{ArraySpec, Compression, Db, Options, Order};
use wdb::Tid;

const BS: usize = 64 << 10;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-small.wdb")
}

fn blocks() -> Vec<(&'static str, u64, Vec<u8>)> {
    let mut trimmed = vec![0u8; BS];
    trimmed[..5000]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 241) as u8 + 1);
    vec![
        ("raw", 0, (0..BS).map(|i| (i * 31 % 256) as u8).collect()),
        ("raw", 1, trimmed),
        ("zst", 0, vec![42u8; BS]),
        ("zst", 3, vec![0u8; BS]),
    ]
}

fn spec(name: &str, c: Compression, order: Order) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: b"<u1".to_vec(),
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![4, BS as u64],
        order,
        block_size: BS as u32,
        compression: c,
    }
}

fn write(p: &Path) {
    let db = Db::open(p).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array_raw(spec("raw", Compression::None, Order::C))
        .unwrap();
    tx.create_array_raw(spec("zst", Compression::Zstd { level: 3 }, Order::F))
        .unwrap();
    tx.create_array_raw(spec("doomed", Compression::None, Order::C))
        .unwrap();
    tx.commit_with("golden", "create").unwrap();
    let tx = db.begin().unwrap();
    for (name, blk, data) in blocks() {
        let id = tx.array_info(name).unwrap().id;
        tx.write_block(id, blk, &data).unwrap();
    }
    tx.delete_array("doomed").unwrap();
    tx.commit_with("golden", "blocks").unwrap();
}

#[test]
fn format_v1_database_reads_back() {
    if std::env::var_os("WDB_WRITE_GOLDEN").is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.wdb");
        write(&p);
        std::fs::copy(&p, golden()).unwrap();
    }
    // Work on a copy: opening creates a lock file and may write a checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("g.wdb");
    std::fs::copy(golden(), &p).unwrap();
    let db = Db::open_with(&p, Options::default().read_only(true)).unwrap();
    assert_eq!(db.last_tid().unwrap(), Tid(2));
    let s = db.snapshot().unwrap();
    assert_eq!(
        s.array_names().unwrap(),
        vec!["raw".to_string(), "zst".to_string()]
    );
    assert_eq!(s.array_info("zst").unwrap().order, Order::F);
    assert_eq!(
        s.array_info("zst").unwrap().compression,
        Compression::Zstd { level: 3 }
    );
    let mut buf = vec![0u8; BS];
    for (name, blk, data) in blocks() {
        let id = s.array_info(name).unwrap().id;
        s.read_block(id, blk, &mut buf).unwrap();
        assert!(buf == data, "{name} block {blk}");
    }
    let h = db.history().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        db.snapshot_at(Tid(1)).unwrap().array_names().unwrap().len(),
        3
    );
    let rep = Db::fsck_path(&p).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}
