//! Backward compatibility: a small database written by format version 3
//! (`tests/data/v3-small.wdb`: typed arrays, a record array, raw blocks with page CRC
//! tables, zstd, hole and trimmed blocks, a delta chain, a deleted array) opens, reads
//! back exactly at every tid and checks clean — forever. Regenerate (only when starting a new format version's file)
//! with `WDB_WRITE_GOLDEN=1 cargo test --test format_golden_v3`.

use std::path::{Path, PathBuf};

use wdb::db::{ArrayOptions, Compression, Db, Options};
use wdb::Tid;

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Sample { pub t: i64, pub v: f32, pub q: u32 }
}

const BS: u32 = 64 << 10;
const N: u64 = 4 * (BS as u64) / 8; // f64 elements in 4 blocks

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v3-small.wdb")
}

fn signal(i: u64) -> f64 {
    (i as f64 * 0.001).sin()
}

fn write(p: &Path) {
    let db = Db::open(p).unwrap();
    let raw = ArrayOptions::default()
        .block_size(BS)
        .compression(Compression::None);
    let zst = ArrayOptions::default()
        .block_size(BS)
        .compression(Compression::Zstd { level: 3 });
    let tx = db.begin().unwrap();
    let mut a = tx.create_array_with::<f64>("signal", &[N], raw).unwrap();
    let v: Vec<f64> = (0..N / 2).map(signal).collect(); // blocks 0, 1; 2, 3 stay holes
    a.write_from(0..N / 2, &v).unwrap();
    drop(a);
    let mut c = tx.create_array_with::<u16>("counts", &[N], zst).unwrap();
    c.view_mut(..).unwrap().fill(7); // compresses
    drop(c);
    let mut r = tx.create_array_with::<Sample>("table", &[3], raw).unwrap();
    r.write_from(
        ..,
        &[
            Sample { t: 1, v: 0.5, q: 9 },
            Sample { t: 2, v: 1.5, q: 8 },
            Sample {
                t: 3,
                v: -2.0,
                q: 7,
            },
        ],
    )
    .unwrap();
    drop(r);
    tx.create_array_with::<u8>("doomed", &[10], raw).unwrap();
    tx.commit_with("golden", "create").unwrap();
    // tid 2: one element of block 0 changes: a delta record.
    let tx = db.begin().unwrap();
    tx.array_mut::<f64>("signal")
        .unwrap()
        .view_mut(5..6)
        .unwrap()
        .fill(-1.0);
    tx.delete_array("doomed").unwrap();
    tx.commit_with("golden", "small change").unwrap();
    // tid 3: a second delta in the same chain, and an append (trimmed block).
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("signal").unwrap();
    a.view_mut(700..701).unwrap().fill(-2.0);
    a.append(&[42.0]).unwrap();
    drop(a);
    tx.commit_with("golden", "second change").unwrap();
}

fn expect_signal(tid: u64, i: u64) -> f64 {
    match i {
        5 if tid >= 2 => -1.0,
        700 if tid >= 3 => -2.0,
        i if i == N && tid >= 3 => 42.0,
        i if i < N / 2 => signal(i),
        _ => 0.0,
    }
}

#[test]
fn format_v3_database_reads_back() {
    if std::env::var_os("WDB_WRITE_GOLDEN").is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.wdb");
        write(&p);
        std::fs::copy(&p, golden()).unwrap();
    }
    let bytes = std::fs::read(golden()).unwrap();
    assert_eq!(&bytes[0..8], b"wdb-log\n");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    // Raw blocks carry page CRC tables: some record header has flag bit 1 (page CRCs).
    assert!(
        (4096..bytes.len() - 48).step_by(8).any(|o| bytes[o] == b'B'
            && bytes[o + 1] == 1
            && bytes[o + 2] == 1
            && bytes[o + 3] == 2),
        "no raw block record with a page CRC table"
    );
    // Work on a copy: opening creates a lock file and may write a checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("g.wdb");
    std::fs::copy(golden(), &p).unwrap();
    let db = Db::open_with(&p, Options::default().read_only(true)).unwrap();
    assert_eq!(db.last_tid().unwrap(), Tid(3));
    for tid in 1..=3u64 {
        let s = db.snapshot_at(Tid(tid)).unwrap();
        let a = s.array::<f64>("signal").unwrap();
        let len = if tid >= 3 { N + 1 } else { N };
        assert_eq!(a.len(), len);
        let got = a.to_vec(..).unwrap();
        for (i, &x) in got.iter().enumerate() {
            assert_eq!(x, expect_signal(tid, i as u64), "tid {tid} element {i}");
        }
        let c = s.array::<u16>("counts").unwrap();
        assert!(c.view(..).unwrap().iter().all(|&x| x == 7));
        let t = s.array::<Sample>("table").unwrap();
        assert_eq!(t.to_vec(1..2).unwrap(), vec![Sample { t: 2, v: 1.5, q: 8 }]);
        assert_eq!(s.array_names().unwrap().len(), if tid == 1 { 4 } else { 3 });
    }
    let stats = db.snapshot().unwrap().array_stats("counts").unwrap();
    assert!(stats.zstd_blocks > 0, "{stats:?}");
    let stats = db.snapshot().unwrap().array_stats("signal").unwrap();
    assert!(
        stats.delta_blocks > 0 && stats.hole_blocks + stats.raw_blocks > 0,
        "{stats:?}"
    );
    let rep = Db::fsck_path(&p).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}
