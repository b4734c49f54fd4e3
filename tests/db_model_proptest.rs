//! Random sequences of write / set_shape / commit / abort / reopen / compact / time
//! travel against an in-memory model: every snapshot reads what the model says.

use std::collections::BTreeMap;

use proptest::prelude::*;
use wdb::db::{ArraySpec, Compression, Db, Durability, Options, Order};
use wdb::Tid;

const BS: usize = 64 << 10;

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u8),
    Shape(u64),
    Commit,
    Abort,
    Reopen,
    Compact,
    CheckOld(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4, any::<u8>()).prop_map(|(b, v)| Op::Write(b, v)),
        1 => (1u64..1000).prop_map(Op::Shape),
        3 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        2 => any::<usize>().prop_map(Op::CheckOld),
    ]
}

fn block(v: u8, blk: u64) -> Vec<u8> {
    // Mixed content: some blocks compress, some are holes (v == 0), some are trimmed.
    let mut b = vec![0u8; BS];
    if v != 0 {
        let n = (usize::from(v) * 257) % BS + 1;
        for (i, x) in b[..n].iter_mut().enumerate() {
            *x = v.wrapping_add((i as u64 * (blk + 1) % 7) as u8);
        }
    }
    b
}

#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    shape: u64,
    blocks: BTreeMap<u64, u8>,
}

fn check(db: &Db, tid: Tid, want: &State) {
    let s = db.snapshot_at(tid).unwrap();
    let info = s.array_info("A").unwrap();
    assert_eq!(info.shape, vec![want.shape], "shape at {tid}");
    let mut buf = vec![0u8; BS];
    for blk in 0..4 {
        s.read_block(info.id, blk, &mut buf).unwrap();
        let v = want.blocks.get(&blk).copied().unwrap_or(0);
        assert!(buf == block(v, blk), "block {blk} at {tid}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn database_matches_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.wdb");
        let opts = Options::default().durability(Durability::Buffered);
        let mut db = Db::open_with(&p, opts.clone()).unwrap();
        let tx = db.begin().unwrap();
        let id = tx.create_array_raw(ArraySpec {
            name: "A".into(), dtype: vec![], dtype_name: "u8".into(), elem_size: 1, shape: vec![1],
            order: Order::C, block_size: BS as u32, compression: Compression::Zstd { level: 1 },
        }).unwrap().id;
        let t0 = tx.commit().unwrap();
        let mut committed: BTreeMap<Tid, State> = BTreeMap::new();
        committed.insert(t0, State { shape: 1, blocks: BTreeMap::new() });
        let mut base = t0;
        let mut pending: Option<(wdb::db::Transaction, State)> = None;
        for op in ops {
            let head = committed.values().next_back().unwrap().clone();
            match op {
                Op::Write(b, v) => {
                    let (tx, st) = pending.get_or_insert_with(|| (db.begin().unwrap(), head.clone()));
                    tx.write_block(id, b, &block(v, b)).unwrap();
                    st.blocks.insert(b, v);
                }
                Op::Shape(n) => {
                    let (tx, st) = pending.get_or_insert_with(|| (db.begin().unwrap(), head.clone()));
                    tx.set_shape("A", &[n]).unwrap();
                    st.shape = n;
                }
                Op::Commit => {
                    if let Some((tx, st)) = pending.take() {
                        let dirty = tx.is_dirty();
                        let t = tx.commit().unwrap();
                        if dirty {
                            committed.insert(t, st);
                        }
                    }
                }
                Op::Abort => {
                    if let Some((tx, _)) = pending.take() {
                        tx.abort();
                    }
                }
                Op::Reopen => {
                    pending = None;
                    drop(db);
                    db = Db::open_with(&p, opts.clone()).unwrap();
                }
                Op::Compact => {
                    if pending.is_none() {
                        let r = db.compact().unwrap();
                        base = r.base_tid;
                    }
                }
                Op::CheckOld(i) => {
                    let kept: Vec<(&Tid, &State)> = committed.range(base..).collect();
                    let (t, st) = kept[i % kept.len()];
                    check(&db, *t, st);
                }
            }
            let (t, st) = committed.iter().next_back().unwrap();
            prop_assert_eq!(db.last_tid().unwrap(), *t);
            check(&db, *t, st);
        }
        drop(pending);
        let rep = db.fsck().unwrap();
        prop_assert!(rep.is_clean(), "{:?}", rep.problems);
    }
}
