//! fsck accepts a compacted file in which a kept block version is older than the
//! catalog entry kept for its array (the older entry was superseded by a resize), and
//! still reports blocks whose array never has a live entry.

use wdb::db::{ArraySpec, Compression, Db, Order};

const BS: usize = 64 << 10;

fn spec(name: &str) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: b"|u1".to_vec(),
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![4 * BS as u64],
        order: Order::C,
        block_size: BS as u32,
        compression: Compression::Zstd { level: 1 },
    }
}

#[test]
fn resize_after_write_then_compact_is_fsck_clean() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let id = tx.create_array_raw(spec("A")).unwrap().id;
    tx.write_block(id, 0, &vec![5u8; BS]).unwrap();
    tx.commit().unwrap();
    let tx = db.begin().unwrap();
    tx.set_shape("A", &[2 * BS as u64]).unwrap();
    tx.commit().unwrap();
    let tx = db.begin().unwrap();
    tx.rename_array("A", "B").unwrap();
    tx.commit().unwrap();
    db.compact().unwrap();
    let rep = db.fsck().unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
    let s = db.snapshot().unwrap();
    let mut buf = vec![0u8; BS];
    s.read_block(id, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 5));
}
