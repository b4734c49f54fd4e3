//! The golden database files' shared content (`tests/data/vN-small.wdb`): what the
//! writer of each format version put in them and how they must read back. Every
//! version's file has the same content, so one writer and one check serve them all.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wdb::db::{ArrayOptions, Compression, Db, Options};
use wdb::Tid;

/// The golden file `tests/data/{name}`.
pub fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Sample { pub t: i64, pub v: f32, pub q: u32 }
}

pub const BS: u32 = 64 << 10;
pub const N: u64 = 4 * (BS as u64) / 8; // f64 elements in 4 blocks

pub fn signal(i: u64) -> f64 {
    (i as f64 * 0.001).sin()
}

pub fn write(p: &Path) {
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

pub fn expect_signal(tid: u64, i: u64) -> f64 {
    match i {
        5 if tid >= 2 => -1.0,
        700 if tid >= 3 => -2.0,
        i if i == N && tid >= 3 => 42.0,
        i if i < N / 2 => signal(i),
        _ => 0.0,
    }
}

/// Block size of the array "wide" that version-4 files add (tid 4): one whole 2 MiB
/// raw block, the payload that version 4 aligns to 2 MiB.
pub const WIDE_BS: u32 = 2 << 20;

/// Element `i` of "wide" (simple enough that the golden file packs small in git).
pub fn wide(i: u64) -> u32 {
    (i % 1000) as u32
}

/// The content every version from 4 on adds: tid 4 creates "wide" (u32, one full raw
/// 2 MiB block, then 10 elements of a trimmed second block).
pub fn write_wide(p: &Path) {
    let db = Db::open(p).unwrap();
    let raw = ArrayOptions::default()
        .block_size(WIDE_BS)
        .compression(Compression::None);
    let tx = db.begin().unwrap();
    let n = u64::from(WIDE_BS) / 4 + 10;
    let mut a = tx.create_array_with::<u32>("wide", &[0], raw).unwrap();
    let v: Vec<u32> = (0..n).map(wide).collect();
    a.append(&v).unwrap();
    drop(a);
    tx.commit_with("golden", "a wide array").unwrap();
}

/// Check the content [`write_wide`] adds.
pub fn check_wide(db: &Db) {
    let s = db.snapshot_at(Tid(4)).unwrap();
    let a = s.array::<u32>("wide").unwrap();
    let got = a.to_vec(..).unwrap();
    assert_eq!(got.len() as u64, u64::from(WIDE_BS) / 4 + 10);
    assert!(got.iter().enumerate().all(|(i, &x)| x == wide(i as u64)));
    let stats = s.array_stats("wide").unwrap();
    assert_eq!(stats.raw_blocks, 2, "{stats:?}");
}

/// Rewrite golden file `name` with this build's writer when `WDB_WRITE_GOLDEN` is set
/// (with the content of version 4 on when `wide`). Only the newest format version's
/// test calls it (when that version's file is started): an older version's file is
/// never rewritten.
pub fn regenerate_if_asked(name: &str, wide: bool) {
    if std::env::var_os("WDB_WRITE_GOLDEN").is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("g.wdb");
        write(&p);
        if wide {
            write_wide(&p);
        }
        std::fs::copy(&p, golden(name)).unwrap();
    }
}

/// The bytes of golden file `name`, after checking its magic and format version.
pub fn golden_bytes(name: &str, version: u32) -> Vec<u8> {
    let bytes = std::fs::read(golden(name)).unwrap();
    assert_eq!(&bytes[0..8], b"wdb-log\n");
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        version
    );
    bytes
}

/// Open a copy of golden file `name` read-only and check every array at every tid, the
/// block kinds it holds, and that fsck finds it clean.
pub fn check_reads_back(name: &str) {
    check_reads_back_with(name, false)
}

/// [`check_reads_back`]; `wide`: the file also holds what [`write_wide`] adds.
pub fn check_reads_back_with(name: &str, wide: bool) {
    // Work on a copy: opening creates a lock file and may write a checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("g.wdb");
    std::fs::copy(golden(name), &p).unwrap();
    let db = Db::open_with(&p, Options::default().read_only(true)).unwrap();
    assert_eq!(db.last_tid().unwrap(), Tid(if wide { 4 } else { 3 }));
    if wide {
        check_wide(&db);
    }
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
