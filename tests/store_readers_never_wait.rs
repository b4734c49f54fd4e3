//! Readers never wait for the writer: while another handle holds the writer lock (as a
//! commit in flight does), snapshots open and read, and a new commit becomes visible to
//! them only once complete.

use std::time::{Duration, Instant};

use wdb::db::{ArraySpec, Compression, Db, Order};

const BS: usize = 64 << 10;

#[test]
fn snapshots_open_and_read_while_the_writer_lock_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.wdb");
    let writer = Db::open(&p).unwrap();
    let reader = Db::open(&p).unwrap();
    let tx = writer.begin().unwrap();
    let id = tx
        .create_array_raw(ArraySpec {
            name: "A".into(),
            dtype: vec![],
            dtype_name: "u8".into(),
            elem_size: 1,
            shape: vec![BS as u64],
            order: Order::C,
            block_size: BS as u32,
            compression: Compression::None,
        })
        .unwrap()
        .id;
    tx.write_block(id, 0, &vec![1u8; BS]).unwrap();
    let t1 = tx.commit().unwrap();

    let guard = writer.store().lock_file().writer().unwrap();
    let start = Instant::now();
    let s = reader.snapshot().unwrap();
    let mut buf = vec![0u8; BS];
    s.read_block(id, 0, &mut buf).unwrap();
    assert_eq!(s.tid(), t1);
    assert!(buf.iter().all(|&b| b == 1));
    assert!(reader.begin().is_ok());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a reader waited for the writer lock"
    );
    drop(guard);
}
