//! Through the public API: arrays of records (`wdb::record!`) are stored, survive reopen and read back field for field; asking for any other element type — a scalar, or a record of the same layout with other field names — is Error::TypeMismatch, never a reinterpretation.

use wdb::array::{DType, Element};
use wdb::{ArrayOptions, Db, Error, Options, Order};

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Reading { pub t: i64, pub v: f32, pub q: u32 }
}

wdb::record! {
    /// Same size and field types as Reading, other names.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Other { pub a: i64, pub b: f32, pub c: u32 }
}

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Point { pub x: f64, pub y: f64 }
}

wdb::record! {
    /// A nested record.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Sample { pub p: Point, pub id: u64 }
}

fn reading(i: u64) -> Reading {
    Reading {
        t: i as i64 * 1000 - 7,
        v: i as f32 * 0.25,
        q: (i * 31) as u32,
    }
}

#[test]
fn records_survive_reopen_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.wdb");
    let n = 10_000u64; // 160 KB: several 64 KiB blocks
    {
        let db = Db::open(&path).unwrap();
        let tx = db.begin().unwrap();
        let mut a = tx
            .create_array_with::<Reading>("R", &[0], ArrayOptions::default().block_size(64 << 10))
            .unwrap();
        let rows: Vec<Reading> = (0..n).map(reading).collect();
        a.append(&rows[..4000]).unwrap();
        a.append(&rows[4000..]).unwrap();
        drop(a);
        let mut s = tx.create_array::<Sample>("S", &[3]).unwrap();
        s.view_mut(1..2).unwrap()[[0]] = Sample {
            p: Point { x: 1.5, y: -2.0 },
            id: 99,
        };
        drop(s);
        tx.commit().unwrap();
    }
    let db = Db::open_with(&path, Options::default().ram_budget(4 << 20)).unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<Reading>("R").unwrap();
    assert_eq!(a.shape(), &[n]);
    assert_eq!(a.dtype(), &Reading::dtype());
    assert_eq!(a.dtype().to_string(), "{t: i64, v: f32, q: u32}");
    let v = a.view(..).unwrap();
    for (i, r) in v.iter().enumerate() {
        assert_eq!(*r, reading(i as u64), "row {i}");
    }
    let field_sum: i64 = a.view(4090..4110).unwrap().iter().map(|r| r.t).sum();
    assert_eq!(field_sum, (4090..4110).map(|i| i * 1000 - 7).sum::<i64>());
    let s = snap.array::<Sample>("S").unwrap().to_vec(..).unwrap();
    assert_eq!(
        s[1],
        Sample {
            p: Point { x: 1.5, y: -2.0 },
            id: 99
        }
    );
    assert_eq!(
        s[0],
        Sample {
            p: Point { x: 0.0, y: 0.0 },
            id: 0
        }
    );
    let info = snap.array_info("S").unwrap();
    assert_eq!(DType::decode(&info.dtype).unwrap(), Sample::dtype());
    assert_eq!(info.dtype_name, "{p: {x: f64, y: f64}, id: u64}");
}

#[test]
fn wrong_type_is_type_mismatch_not_reinterpretation() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("m.wdb")).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array_with::<Reading>("R", &[2, 5], ArrayOptions::default().order(Order::F))
        .unwrap();
    tx.create_array::<f64>("F", &[4]).unwrap();
    tx.commit().unwrap();

    let snap = db.snapshot().unwrap();
    let mismatch = |r: wdb::Result<()>| match r {
        Err(Error::TypeMismatch {
            array,
            stored,
            asked,
        }) => {
            assert!(!array.is_empty() && stored != asked, "{stored} vs {asked}");
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    };
    mismatch(snap.array::<Other>("R").map(drop));
    // A scalar of the same size (16 bytes).
    mismatch(snap.array::<u128>("R").map(drop));
    mismatch(snap.array::<Point>("F").map(drop));
    mismatch(snap.array::<i64>("F").map(drop));
    let tx = db.begin().unwrap();
    mismatch(tx.array_mut::<Other>("R").map(drop));
    mismatch(tx.array::<f64>("R").map(drop));
    // The right type still opens after the refusals.
    assert_eq!(tx.array_mut::<Reading>("R").unwrap().shape(), &[2, 5]);
}
