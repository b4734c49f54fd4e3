//! fsck names a flipped bit in every field class (file header, transaction header,
//! user/description, record header, payload, padding, trailer), and neither fsck nor
//! open panics on random, truncated or mutated files.

use proptest::prelude::*;
use wdb::db::{ArraySpec, Compression, Db, Order};
use wdb::format::{self, TxHeader, RECORD_HEADER_SIZE, TX_END_SIZE, TX_HEADER_SIZE};

const BS: usize = 64 << 10;

fn spec(name: &str, c: Compression) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![BS as u64 * 4],
        order: Order::C,
        block_size: BS as u32,
        compression: c,
    }
}

/// A small database: tx 1 creates R (raw) and Z (zstd) and writes a block of each;
/// tx 2 rewrites R's block. Returns the file bytes.
fn reference(dir: &std::path::Path) -> Vec<u8> {
    let p = dir.join("ref.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    let r = tx
        .create_array_raw(spec("R", Compression::None))
        .unwrap()
        .id;
    let z = tx
        .create_array_raw(spec("Z", Compression::Zstd { level: 3 }))
        .unwrap()
        .id;
    let raw: Vec<u8> = (0..5000u32)
        .map(|i| (i * 7 % 256) as u8)
        .chain(std::iter::repeat_n(0, BS - 5000))
        .collect();
    tx.write_block(r, 0, &raw).unwrap();
    tx.write_block(z, 0, &vec![5u8; BS]).unwrap();
    tx.commit_with("alice", "first").unwrap();
    let tx = db.begin().unwrap();
    tx.write_block(r, 0, &vec![9u8; BS]).unwrap();
    tx.commit().unwrap();
    drop(db);
    std::fs::read(&p).unwrap()
}

fn fsck_bytes(dir: &std::path::Path, bytes: &[u8]) -> wdb::db::FsckReport {
    let p = dir.join("case.wdb");
    std::fs::write(&p, bytes).unwrap();
    Db::fsck_path(&p).unwrap()
}

#[test]
fn a_flipped_bit_in_each_field_class_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let good = reference(dir.path());
    assert!(fsck_bytes(dir.path(), &good).is_clean());
    // Find the field classes of transaction 1 from the bytes.
    let t1 = format::FILE_HEADER_SIZE as usize;
    let h = TxHeader::decode(&good[t1..t1 + TX_HEADER_SIZE], t1 as u64).unwrap();
    let rec0 = t1 + h.prefix_len() as usize; // the NAMES record header
    let t1_end = t1 + h.total_len as usize;
    // The first raw block record: its payload is page-aligned after zero padding.
    let raw_payload = (rec0..t1_end)
        .step_by(4096)
        .map(|o| o / 4096 * 4096 + 4096)
        .find(|&o| good[o] != 0)
        .unwrap();
    let cases: Vec<(&str, usize)> = vec![
        ("file header magic", 3),
        ("file header uuid", 24),
        ("file header padding", 1000),
        ("tx header tid", t1 + 16),
        ("tx header length", t1 + 8),
        ("user name", t1 + TX_HEADER_SIZE),
        ("description", t1 + TX_HEADER_SIZE + 6),
        ("record header tag", rec0),
        ("record header back pointer", rec0 + 24),
        ("record header crc", rec0 + RECORD_HEADER_SIZE - 1),
        ("record pad", raw_payload - 1),
        ("raw payload", raw_payload + 10),
        ("trailer crc", t1_end - 8),
        ("trailer magic", t1_end - 1),
        ("trailer length", t1_end - TX_END_SIZE + 8),
        ("last tx trailer", good.len() - 5),
        ("last tx payload", good.len() - TX_END_SIZE - 100),
    ];
    for (what, off) in cases {
        for bit in [0u8, 3, 7] {
            let mut bad = good.clone();
            bad[off] ^= 1 << bit;
            let rep = fsck_bytes(dir.path(), &bad);
            assert!(
                !rep.is_clean(),
                "flip of bit {bit} in {what} at {off} not reported"
            );
            let p = &rep.problems[0];
            assert!(!p.record.is_empty() && !p.what.is_empty(), "{what}: {p}");
        }
    }
    // Every 5th byte of transaction 1 (which is followed by a valid one), so every field
    // of every header and stretches of every payload: reported.
    for off in (t1..t1_end).step_by(5) {
        let mut bad = good.clone();
        bad[off] ^= 0x10;
        assert!(
            !fsck_bytes(dir.path(), &bad).is_clean(),
            "flip at {off} not reported"
        );
    }
}

#[test]
fn a_corrupt_committed_transaction_is_not_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = reference(dir.path());
    bad[format::FILE_HEADER_SIZE as usize + 16] ^= 1; // tid of tx 1, tx 2 follows
    let p = dir.path().join("c.wdb");
    std::fs::write(&p, &bad).unwrap();
    let e = Db::open(&p).unwrap_err();
    assert!(matches!(e, wdb::Error::Corruption { .. }), "{e}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        bad,
        "open must not modify a corrupt file"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000), with_magic in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bytes;
        if with_magic && b.len() >= 8 {
            b[..8].copy_from_slice(&format::MAGIC);
        }
        let p = dir.path().join("r.wdb");
        std::fs::write(&p, &b).unwrap();
        let _ = Db::fsck_path(&p);
        let _ = Db::open(&p).and_then(|db| db.snapshot().map(|_| ()));
    }

    #[test]
    fn truncated_and_mutated_files_never_panic(cut in 0usize..20000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = reference(dir.path());
        b.truncate(cut.min(b.len()));
        let n = b.len();
        for (i, x) in flips {
            if n > 0 {
                b[i % n] ^= x;
            }
        }
        let p = dir.path().join("m.wdb");
        std::fs::write(&p, &b).unwrap();
        let _ = Db::fsck_path(&p);
        if let Ok(db) = Db::open(&p) {
            if let Ok(s) = db.snapshot() {
                let mut buf = vec![0u8; BS];
                for name in s.array_names().unwrap_or_default() {
                    if let Ok(i) = s.array_info(&name) {
                        let _ = s.read_block(i.id, 0, &mut buf);
                    }
                }
            }
            let _ = db.fsck();
        }
    }
}

/// A flipped payload bit in the last transaction of a closed database is corruption of
/// an acknowledged commit (the index checkpoint written at close covers it), not a torn
/// tail: fsck reports it and does not offer it for cutting.
#[test]
fn corruption_in_the_last_committed_transaction_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("last.wdb");
    {
        let db = Db::open(&p).unwrap();
        let tx = db.begin().unwrap();
        let id = tx
            .create_array_raw(spec("R", Compression::None))
            .unwrap()
            .id;
        tx.write_block(id, 0, &vec![0x5Au8; BS]).unwrap();
        tx.commit().unwrap();
    }
    assert!(
        wdb::store::checkpoint_path(&p).exists(),
        "closing writes the index checkpoint"
    );
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.iter().rposition(|&b| b == 0x5A).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    let rep = Db::fsck_path(&p).unwrap();
    assert!(!rep.is_clean(), "the flipped bit is reported");
    assert_eq!(rep.torn_tail, None, "committed data is never a tail to cut");
}
