//! Through the public contract: random sequences of create / append / resize / write
//! (through views and `write_from`) / read in the transaction / commit / abort / reopen
//! give the same array contents as a plain in-memory model. Array "c" is stored raw, so
//! its clean blocks are mapped from the file and small writes to it take the
//! page-granular paths (patches, `PartDirty`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use wdb::{ArrayOptions, Compression, Db, Options};

const NAMES: [&str; 3] = ["a", "b", "c"];
/// Elements of i64 in one default 2 MiB block: lengths around it make ops straddle blocks.
const BLK: u64 = (2 << 20) / 8;

#[derive(Debug, Clone)]
enum Op {
    Create(usize, u64),
    Append(usize, u64, i64),
    Resize(usize, u64),
    Write(usize, u64, u64, i64),
    WriteFrom(usize, u64, u64, i64),
    Read(usize, u64, u64),
    Commit,
    Abort,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let len = prop_oneof![0..16u64, (BLK - 8)..(BLK + 8), 0..(3 * BLK)];
    prop_oneof![
        (name.clone(), len.clone()).prop_map(|(n, l)| Op::Create(n, l)),
        (name.clone(), 0..(BLK / 2), any::<i64>()).prop_map(|(n, k, v)| Op::Append(n, k, v)),
        (name.clone(), len).prop_map(|(n, l)| Op::Resize(n, l)),
        (name.clone(), any::<u64>(), 0..2000u64, any::<i64>())
            .prop_map(|(n, at, k, v)| Op::Write(n, at, k, v)),
        (name.clone(), any::<u64>(), 0..1200u64, any::<i64>())
            .prop_map(|(n, at, k, v)| Op::WriteFrom(n, at, k, v)),
        (name, any::<u64>(), 0..3000u64).prop_map(|(n, at, k)| Op::Read(n, at, k)),
        Just(Op::Commit),
        Just(Op::Abort),
        Just(Op::Reopen),
    ]
}

type Model = BTreeMap<&'static str, Vec<i64>>;

fn check(db: &Db, model: &Model) {
    let snap = db.snapshot().unwrap();
    let mut names = snap.array_names().unwrap();
    names.sort();
    assert_eq!(
        names,
        model.keys().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    for (name, want) in model {
        let a = snap.array::<i64>(name).unwrap();
        assert_eq!(a.len(), want.len() as u64, "len of {name}");
        let got = a.view(..).unwrap();
        assert!(got.iter().eq(want.iter()), "contents of {name}");
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.wdb");
    let opts = || Options::default().ram_budget(32 << 20);
    let mut db = Db::open_with(&path, opts()).unwrap();
    let mut committed = Model::new();
    let mut pending = committed.clone();
    let mut tx = Some(db.begin().unwrap());
    for op in ops {
        let t = tx.as_ref().unwrap();
        match op {
            Op::Create(n, len) => {
                let opts = if n == 2 {
                    ArrayOptions::default().compression(Compression::None)
                } else {
                    ArrayOptions::default()
                };
                let r = t.create_array_with::<i64>(NAMES[n], &[len], opts);
                assert_eq!(r.is_ok(), !pending.contains_key(NAMES[n]));
                if r.is_ok() {
                    pending.insert(NAMES[n], vec![0; len as usize]);
                }
            }
            Op::Append(n, k, v) => {
                if let Some(m) = pending.get_mut(NAMES[n]) {
                    let rows = vec![v; k as usize];
                    t.array_mut::<i64>(NAMES[n]).unwrap().append(&rows).unwrap();
                    m.extend_from_slice(&rows);
                }
            }
            Op::Resize(n, len) => {
                if let Some(m) = pending.get_mut(NAMES[n]) {
                    t.array_mut::<i64>(NAMES[n])
                        .unwrap()
                        .resize(&[len])
                        .unwrap();
                    m.resize(len as usize, 0);
                }
            }
            Op::Write(n, at, k, v) => {
                if let Some(m) = pending.get_mut(NAMES[n]) {
                    if !m.is_empty() {
                        let lo = at % m.len() as u64;
                        let hi = (lo + k).min(m.len() as u64);
                        let mut a = t.array_mut::<i64>(NAMES[n]).unwrap();
                        a.view_mut(lo..hi).unwrap().fill(v);
                        m[lo as usize..hi as usize].fill(v);
                    }
                }
            }
            Op::WriteFrom(n, at, k, v) => {
                if let Some(m) = pending.get_mut(NAMES[n]) {
                    if !m.is_empty() {
                        let lo = at % m.len() as u64;
                        let hi = (lo + k).min(m.len() as u64);
                        let data: Vec<i64> = (lo..hi)
                            .map(|i| v.wrapping_mul(i as i64 | 1).rotate_left(i as u32))
                            .collect();
                        let mut a = t.array_mut::<i64>(NAMES[n]).unwrap();
                        a.write_from(lo..hi, &data).unwrap();
                        m[lo as usize..hi as usize].copy_from_slice(&data);
                    }
                }
            }
            Op::Read(n, at, k) => {
                if let Some(m) = pending.get(NAMES[n]) {
                    if !m.is_empty() {
                        let lo = at % m.len() as u64;
                        let hi = (lo + k).min(m.len() as u64);
                        let a = t.array::<i64>(NAMES[n]).unwrap();
                        assert_eq!(
                            a.to_vec(lo..hi).unwrap(),
                            &m[lo as usize..hi as usize],
                            "read_into of {} in the transaction",
                            NAMES[n]
                        );
                        let v = a.view(lo..hi).unwrap();
                        assert!(v.iter().eq(m[lo as usize..hi as usize].iter()), "view");
                    }
                }
            }
            Op::Commit => {
                tx.take().unwrap().commit().unwrap();
                committed = pending.clone();
                check(&db, &committed);
                tx = Some(db.begin().unwrap());
            }
            Op::Abort => {
                tx.take().unwrap().abort();
                pending = committed.clone();
                check(&db, &committed);
                tx = Some(db.begin().unwrap());
            }
            Op::Reopen => {
                drop(tx.take());
                drop(db);
                db = Db::open_with(&path, opts()).unwrap();
                pending = committed.clone();
                check(&db, &committed);
                tx = Some(db.begin().unwrap());
            }
        }
    }
    tx.take().unwrap().commit().unwrap();
    check(&db, &pending);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..24)) {
        run(ops);
    }
}
