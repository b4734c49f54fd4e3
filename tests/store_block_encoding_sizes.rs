//! Storage size: an all-zero block costs no payload, trailing zeros are not stored,
//! compressible blocks are stored zstd and incompressible ones raw, and every kind
//! reads back exactly.

use wdb::db::{ArraySpec, Compression, Db, Order};

const BS: usize = 1 << 20;

fn spec(name: &str, c: Compression) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![BS as u64 * 8],
        order: Order::C,
        block_size: BS as u32,
        compression: c,
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn holes_trimmed_compressed_and_raw_blocks_take_the_expected_space() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let z = tx
        .create_array_raw(spec("Z", Compression::Zstd { level: 3 }))
        .unwrap()
        .id;
    let r = tx
        .create_array_raw(spec("R", Compression::None))
        .unwrap()
        .id;
    tx.commit().unwrap();
    let size0 = std::fs::metadata(&p).unwrap().len();

    let hole = vec![0u8; BS];
    let mut trimmed = vec![0u8; BS];
    trimmed[..10_000].copy_from_slice(&noise(10_000, 1));
    let compressible: Vec<u8> = (0..BS).map(|i| (i / 1000) as u8).collect();
    let random = noise(BS, 2);

    let tx = db.begin().unwrap();
    tx.write_block(z, 0, &hole).unwrap();
    tx.write_block(z, 1, &compressible).unwrap();
    tx.write_block(z, 2, &random).unwrap();
    tx.write_block(r, 0, &hole).unwrap();
    tx.write_block(r, 1, &trimmed).unwrap();
    tx.write_block(r, 2, &compressible).unwrap();
    tx.commit().unwrap();
    let grown = std::fs::metadata(&p).unwrap().len() - size0;

    let s = db.snapshot().unwrap();
    let zs = s.array_stats("Z").unwrap();
    let rs = s.array_stats("R").unwrap();
    assert_eq!(
        (zs.hole_blocks, zs.zstd_blocks, zs.raw_blocks),
        (1, 1, 1),
        "{zs:?}"
    );
    assert_eq!(
        (rs.hole_blocks, rs.zstd_blocks, rs.raw_blocks),
        (1, 0, 2),
        "{rs:?}"
    );
    // Trimmed to whole pages: 10,000 bytes → 12,288 stored.
    assert_eq!(rs.stored_bytes, 12_288 + BS as u64);
    assert!(zs.stored_bytes < BS as u64 + BS as u64 / 8, "{zs:?}");
    // The file grew by the stored bytes plus headers and page alignment only.
    let stored = zs.stored_bytes + rs.stored_bytes;
    assert!(
        grown >= stored && grown < stored + 6 * 4096 + 1024,
        "grew {grown} for {stored} stored"
    );

    let mut buf = vec![1u8; BS];
    for (id, blk, want) in [
        (z, 0, &hole),
        (z, 1, &compressible),
        (z, 2, &random),
        (r, 0, &hole),
        (r, 1, &trimmed),
        (r, 2, &compressible),
    ] {
        s.read_block(id, blk, &mut buf).unwrap();
        assert!(buf == *want, "array {id} block {blk} reads back wrong");
    }
    assert!(db.fsck().unwrap().is_clean());
}
