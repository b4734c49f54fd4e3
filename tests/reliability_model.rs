//! The block-level API against an in-memory model: random interleavings of up to three
//! open transactions (create, write block, resize, delete, commit, abort), reopen and
//! compaction. The model predicts every commit's outcome — a new tid, or `Conflict` when a
//! key it writes (a block, an array's metadata, the set of names) changed after its
//! snapshot, or an array it writes was deleted — and the contents of the head and of
//! every kept snapshot. Default 1,000 cases; `WDB_SOAK=1` 20,000.

mod reliability_util;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use reliability_util::*;
use wdb::db::{Db, Transaction};
use wdb::{Error, Tid};

#[derive(Debug, Clone)]
enum Op {
    Begin(usize),
    Create(usize, usize),
    Write(usize, usize, u64, u64),
    Resize(usize, usize, u64),
    Delete(usize, usize),
    Commit(usize),
    Abort(usize),
    Reopen,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0usize..3;
    let n = 0usize..NAMES.len();
    prop_oneof![
        4 => s.clone().prop_map(Op::Begin),
        2 => (s.clone(), n.clone()).prop_map(|(s, n)| Op::Create(s, n)),
        8 => (s.clone(), n.clone(), 0..3u64, any::<u64>()).prop_map(|(s, n, b, c)| Op::Write(s, n, b, c)),
        1 => (s.clone(), n.clone(), 1..=MAX_BLOCKS).prop_map(|(s, n, b)| Op::Resize(s, n, b)),
        1 => (s.clone(), n.clone()).prop_map(|(s, n)| Op::Delete(s, n)),
        3 => s.clone().prop_map(Op::Commit),
        1 => s.prop_map(Op::Abort),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
    ]
}

/// Arrays by id: (name, shape, blocks).
type Arrays = BTreeMap<u64, (String, Vec<u64>, BTreeMap<u64, Vec<u8>>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum K {
    Names,
    Meta(u64),
    Block(u64, u64),
}

struct Open {
    tx: Transaction,
    snap: Tid,
    /// What this transaction sees: its snapshot plus its own changes.
    view: Arrays,
    /// Its changes, applied to the head on commit.
    created: BTreeSet<u64>,
    deleted: BTreeSet<u64>,
    meta: BTreeSet<u64>,
    blocks: BTreeMap<(u64, u64), Vec<u8>>,
    names_changed: bool,
}

fn by_name(a: &Arrays) -> Model {
    a.values()
        .map(|(n, s, b)| {
            (
                n.clone(),
                ModelArray {
                    shape: s.clone(),
                    blocks: b.clone(),
                },
            )
        })
        .collect()
}

fn block_of(seed: u64) -> Vec<u8> {
    random_block(&mut reliability_util::Rng::new(seed))
}

/// What transaction `o` reads equals its view.
fn check_tx(o: &Open) -> Result<(), String> {
    let names = o.tx.array_names().map_err(|e| e.to_string())?;
    let want: BTreeSet<String> = o.view.values().map(|v| v.0.clone()).collect();
    if names.iter().cloned().collect::<BTreeSet<_>>() != want {
        return Err(format!("tx at {}: names {names:?}, want {want:?}", o.snap));
    }
    let mut buf = vec![0u8; BS];
    for (&id, (name, shape, blocks)) in &o.view {
        if o.tx.array_info(name).map_err(|e| e.to_string())?.shape != *shape {
            return Err(format!("tx at {}: shape of {name}", o.snap));
        }
        for blk in 0..MAX_BLOCKS {
            o.tx.read_block(id, blk, &mut buf)
                .map_err(|e| e.to_string())?;
            let ok = match blocks.get(&blk) {
                Some(w) => buf == *w,
                None => buf.iter().all(|&x| x == 0),
            };
            if !ok {
                return Err(format!("tx at {}: {name} block {blk}", o.snap));
            }
        }
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = fast_tempdir();
    let p = dir.path().join("m.wdb");
    let mut db = Db::open(&p).unwrap();
    let mut head: Arrays = Arrays::new();
    let mut history: BTreeMap<Tid, Arrays> = BTreeMap::new();
    history.insert(Tid::ZERO, Arrays::new());
    let mut last_tid;
    let mut key_tid: HashMap<K, Tid> = HashMap::new();
    let mut deleted_at: HashMap<u64, Tid> = HashMap::new();
    let mut slots: [Option<Open>; 3] = [None, None, None];
    // Start with the arrays in place (tid 1), so that most cases write, conflict and
    // compact rather than only create.
    {
        let tx = db.begin().unwrap();
        for (i, name) in NAMES.iter().enumerate() {
            let info = tx
                .create_array_raw(spec(name, MAX_BLOCKS, i % 2 == 0))
                .unwrap();
            head.insert(info.id, (name.to_string(), info.shape, BTreeMap::new()));
            key_tid.insert(K::Meta(info.id), Tid(1));
        }
        key_tid.insert(K::Names, Tid(1));
        last_tid = tx.commit().unwrap();
        prop_assert_eq!(last_tid, Tid(1));
        history.insert(last_tid, head.clone());
    }
    for op in ops {
        match op.clone() {
            Op::Begin(s) => {
                if slots[s].is_none() {
                    let tx = db.begin().unwrap();
                    prop_assert_eq!(tx.snapshot_tid(), last_tid);
                    slots[s] = Some(Open {
                        tx,
                        snap: last_tid,
                        view: head.clone(),
                        created: BTreeSet::new(),
                        deleted: BTreeSet::new(),
                        meta: BTreeSet::new(),
                        blocks: BTreeMap::new(),
                        names_changed: false,
                    });
                }
            }
            Op::Create(s, n) => {
                let Some(o) = slots[s].as_mut() else { continue };
                let name = NAMES[n];
                let exists = o.view.values().any(|v| v.0 == name);
                let r = o.tx.create_array_raw(spec(name, MAX_BLOCKS, n % 2 == 0));
                if exists {
                    prop_assert!(matches!(r, Err(Error::AlreadyExists(_))));
                } else {
                    let info = r.unwrap();
                    o.view
                        .insert(info.id, (name.into(), info.shape.clone(), BTreeMap::new()));
                    o.created.insert(info.id);
                    o.meta.insert(info.id);
                    o.names_changed = true;
                }
            }
            Op::Write(s, n, blk, seed) => {
                let Some(o) = slots[s].as_mut() else { continue };
                let Some((&id, _)) = o.view.iter().find(|v| v.1 .0 == NAMES[n]) else {
                    continue;
                };
                let b = block_of(seed);
                o.tx.write_block(id, blk, &b).unwrap();
                o.view.get_mut(&id).unwrap().2.insert(blk, b.clone());
                o.blocks.insert((id, blk), b);
            }
            Op::Resize(s, n, blocks) => {
                let Some(o) = slots[s].as_mut() else { continue };
                let Some((&id, _)) = o.view.iter().find(|v| v.1 .0 == NAMES[n]) else {
                    continue;
                };
                let shape = vec![blocks * BS as u64];
                o.tx.set_shape(NAMES[n], &shape).unwrap();
                o.view.get_mut(&id).unwrap().1 = shape;
                o.meta.insert(id);
            }
            Op::Delete(s, n) => {
                let Some(o) = slots[s].as_mut() else { continue };
                let Some((&id, _)) = o.view.iter().find(|v| v.1 .0 == NAMES[n]) else {
                    continue;
                };
                o.tx.delete_array(NAMES[n]).unwrap();
                o.view.remove(&id);
                o.blocks.retain(|(a, _), _| *a != id);
                if !o.created.remove(&id) {
                    o.deleted.insert(id);
                }
                o.meta.insert(id);
                o.names_changed = true;
            }
            Op::Abort(s) => {
                if let Some(o) = slots[s].take() {
                    o.tx.abort();
                }
            }
            Op::Commit(s) => {
                let Some(o) = slots[s].take() else { continue };
                let mut keys: Vec<K> = o.meta.iter().map(|&a| K::Meta(a)).collect();
                keys.extend(o.blocks.keys().map(|&(a, b)| K::Block(a, b)));
                if o.names_changed {
                    keys.push(K::Names);
                }
                let empty = keys.is_empty();
                let conflict = keys
                    .iter()
                    .any(|k| key_tid.get(k).is_some_and(|&t| t > o.snap))
                    || o.blocks
                        .keys()
                        .any(|(a, _)| deleted_at.get(a).is_some_and(|&t| t > o.snap));
                let r = o.tx.commit();
                if empty {
                    prop_assert_eq!(r.unwrap(), o.snap);
                    continue;
                }
                if conflict {
                    prop_assert!(
                        matches!(r, Err(Error::Conflict { .. })),
                        "want Conflict, got {:?}",
                        r
                    );
                    CONFLICTS.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let t = r.map_err(|e| TestCaseError::fail(format!("commit: {e}")))?;
                prop_assert_eq!(t, Tid(last_tid.0 + 1));
                COMMITS.fetch_add(1, Ordering::Relaxed);
                last_tid = t;
                for k in keys {
                    key_tid.insert(k, t);
                }
                for &id in &o.created {
                    head.insert(id, o.view[&id].clone());
                }
                for &id in &o.deleted {
                    head.remove(&id);
                    deleted_at.insert(id, t);
                }
                for &id in &o.meta {
                    if let (Some(h), Some(v)) = (head.get_mut(&id), o.view.get(&id)) {
                        h.0 = v.0.clone();
                        h.1 = v.1.clone();
                    }
                }
                for (&(a, b), data) in &o.blocks {
                    if let Some(h) = head.get_mut(&a) {
                        h.2.insert(b, data.clone());
                    }
                }
                history.insert(t, head.clone());
            }
            Op::Reopen => {
                slots = [None, None, None];
                drop(db);
                db = Db::open(&p).unwrap();
            }
            Op::Compact => {
                COMPACTIONS.fetch_add(1, Ordering::Relaxed);
                if slots.iter().all(|s| s.is_none()) {
                    db.compact().unwrap();
                } else {
                    // Open transactions keep reading their snapshot (and own writes) from
                    // the file they began on; new snapshots below the base tid are gone.
                    db.compact().unwrap();
                    for o in slots.iter().flatten() {
                        check_tx(o).map_err(TestCaseError::fail)?;
                    }
                }
            }
        }
        check_state(&db, None, &by_name(&head)).map_err(TestCaseError::fail)?;
    }
    let base = db.info().unwrap().base_tid;
    for (t, a) in history.range(base..) {
        check_state(&db, Some(*t), &by_name(a)).map_err(TestCaseError::fail)?;
    }
    drop(slots);
    drop(db);
    fsck_clean(&p).map_err(TestCaseError::fail)?;
    Ok(())
}

static COMMITS: AtomicU64 = AtomicU64::new(0);
static CONFLICTS: AtomicU64 = AtomicU64::new(0);
static COMPACTIONS: AtomicU64 = AtomicU64::new(0);

#[test]
fn the_block_api_matches_the_model() {
    let cases = scale(1000, 20_000) as u32;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let r = runner.run(&proptest::collection::vec(op(), 1..60), |ops| run(&ops));
    if let Err(e) = r {
        panic!("{e}");
    }
    let (c, k, x) = (
        COMMITS.load(Ordering::Relaxed),
        CONFLICTS.load(Ordering::Relaxed),
        COMPACTIONS.load(Ordering::Relaxed),
    );
    eprintln!("model: {cases} cases, {c} commits, {k} predicted conflicts, {x} compactions");
    assert!(
        c > 0 && k > 0 && x > 0,
        "the cases exercise commits, conflicts and compaction"
    );
}
