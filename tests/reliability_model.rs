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

/// What the model predicts of the committed state.
struct Committed {
    head: Arrays,
    /// The arrays of every commit, by tid.
    history: BTreeMap<Tid, Arrays>,
    last_tid: Tid,
    /// The tid of the last commit that wrote each key.
    key_tid: HashMap<K, Tid>,
    /// The tid that deleted each deleted array.
    deleted_at: HashMap<u64, Tid>,
}

impl Committed {
    /// Start with the arrays in place (tid 1), so that most cases write, conflict and
    /// compact rather than only create.
    fn start(db: &Db) -> Result<Committed, TestCaseError> {
        let mut c = Committed {
            head: Arrays::new(),
            history: BTreeMap::from([(Tid::ZERO, Arrays::new())]),
            last_tid: Tid::ZERO,
            key_tid: HashMap::new(),
            deleted_at: HashMap::new(),
        };
        let tx = db.begin().unwrap();
        for (i, name) in NAMES.iter().enumerate() {
            let info = tx
                .create_array_raw(spec(name, MAX_BLOCKS, i % 2 == 0))
                .unwrap();
            c.head
                .insert(info.id, (name.to_string(), info.shape, BTreeMap::new()));
            c.key_tid.insert(K::Meta(info.id), Tid(1));
        }
        c.key_tid.insert(K::Names, Tid(1));
        c.last_tid = tx.commit().unwrap();
        prop_assert_eq!(c.last_tid, Tid(1));
        c.history.insert(c.last_tid, c.head.clone());
        Ok(c)
    }

    /// Commit `o`: the outcome the model predicts (a new tid, its own snapshot's tid
    /// when it changed nothing, or a `Conflict`), then its changes applied to the head.
    /// Returns whether a new commit was made.
    fn commit(&mut self, o: Open) -> Result<bool, TestCaseError> {
        let mut keys: Vec<K> = o.meta.iter().map(|&a| K::Meta(a)).collect();
        keys.extend(o.blocks.keys().map(|&(a, b)| K::Block(a, b)));
        if o.names_changed {
            keys.push(K::Names);
        }
        let empty = keys.is_empty();
        let conflict = keys
            .iter()
            .any(|k| self.key_tid.get(k).is_some_and(|&t| t > o.snap))
            || o.blocks
                .keys()
                .any(|(a, _)| self.deleted_at.get(a).is_some_and(|&t| t > o.snap));
        let r = o.tx.commit();
        if empty {
            prop_assert_eq!(r.unwrap(), o.snap);
            return Ok(false);
        }
        if conflict {
            prop_assert!(
                matches!(r, Err(Error::Conflict { .. })),
                "want Conflict, got {:?}",
                r
            );
            CONFLICTS.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let t = r.map_err(|e| TestCaseError::fail(format!("commit: {e}")))?;
        prop_assert_eq!(t, Tid(self.last_tid.0 + 1));
        COMMITS.fetch_add(1, Ordering::Relaxed);
        self.last_tid = t;
        for k in keys {
            self.key_tid.insert(k, t);
        }
        let head = &mut self.head;
        for &id in &o.created {
            head.insert(id, o.view[&id].clone());
        }
        for &id in &o.deleted {
            head.remove(&id);
            self.deleted_at.insert(id, t);
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
        self.history.insert(t, head.clone());
        Ok(true)
    }
}

impl Open {
    /// A transaction begun at the newest commit of `c`.
    fn begin(db: &Db, c: &Committed) -> Result<Open, TestCaseError> {
        let tx = db.begin().unwrap();
        prop_assert_eq!(tx.snapshot_tid(), c.last_tid);
        Ok(Open {
            tx,
            snap: c.last_tid,
            view: c.head.clone(),
            created: BTreeSet::new(),
            deleted: BTreeSet::new(),
            meta: BTreeSet::new(),
            blocks: BTreeMap::new(),
            names_changed: false,
        })
    }

    /// The id of array `NAMES[n]` in this transaction's view.
    fn id_of(&self, n: usize) -> Option<u64> {
        self.view
            .iter()
            .find(|v| v.1 .0 == NAMES[n])
            .map(|(&id, _)| id)
    }

    /// Create `NAMES[n]`: `AlreadyExists` when the view has it.
    fn create(&mut self, n: usize) -> Result<(), TestCaseError> {
        let name = NAMES[n];
        let exists = self.view.values().any(|v| v.0 == name);
        let r = self.tx.create_array_raw(spec(name, MAX_BLOCKS, n % 2 == 0));
        if exists {
            prop_assert!(matches!(r, Err(Error::AlreadyExists(_))));
        } else {
            let info = r.unwrap();
            self.view
                .insert(info.id, (name.into(), info.shape.clone(), BTreeMap::new()));
            self.created.insert(info.id);
            self.meta.insert(info.id);
            self.names_changed = true;
        }
        Ok(())
    }

    /// Write block `blk` of `NAMES[n]` (if the view has it) with the block of `seed`;
    /// whether the view has it. Likewise `resize` and `delete`.
    fn write(&mut self, n: usize, blk: u64, seed: u64) -> bool {
        let Some(id) = self.id_of(n) else {
            return false;
        };
        let b = block_of(seed);
        self.tx.write_block(id, blk, &b).unwrap();
        self.view.get_mut(&id).unwrap().2.insert(blk, b.clone());
        self.blocks.insert((id, blk), b);
        true
    }

    /// Resize `NAMES[n]` (if the view has it) to `blocks` blocks.
    fn resize(&mut self, n: usize, blocks: u64) -> bool {
        let Some(id) = self.id_of(n) else {
            return false;
        };
        let shape = vec![blocks * BS as u64];
        self.tx.set_shape(NAMES[n], &shape).unwrap();
        self.view.get_mut(&id).unwrap().1 = shape;
        self.meta.insert(id);
        true
    }

    /// Delete `NAMES[n]` (if the view has it).
    fn delete(&mut self, n: usize) -> bool {
        let Some(id) = self.id_of(n) else {
            return false;
        };
        self.tx.delete_array(NAMES[n]).unwrap();
        self.view.remove(&id);
        self.blocks.retain(|(a, _), _| *a != id);
        if !self.created.remove(&id) {
            self.deleted.insert(id);
        }
        self.meta.insert(id);
        self.names_changed = true;
        true
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = fast_tempdir();
    let p = dir.path().join("m.wdb");
    let mut db = Db::open(&p).unwrap();
    let mut c = Committed::start(&db)?;
    let mut slots: [Option<Open>; 3] = [None, None, None];
    for op in ops {
        // Whether the op did anything: the state is checked after each op that did.
        let acted = match op.clone() {
            Op::Begin(s) => {
                if slots[s].is_none() {
                    slots[s] = Some(Open::begin(&db, &c)?);
                }
                true
            }
            Op::Create(s, n) => match slots[s].as_mut() {
                Some(o) => o.create(n).map(|()| true)?,
                None => false,
            },
            Op::Write(s, n, blk, seed) => slots[s].as_mut().is_some_and(|o| o.write(n, blk, seed)),
            Op::Resize(s, n, blocks) => slots[s].as_mut().is_some_and(|o| o.resize(n, blocks)),
            Op::Delete(s, n) => slots[s].as_mut().is_some_and(|o| o.delete(n)),
            Op::Abort(s) => {
                if let Some(o) = slots[s].take() {
                    o.tx.abort();
                }
                true
            }
            Op::Commit(s) => match slots[s].take() {
                Some(o) => c.commit(o)?,
                None => false,
            },
            Op::Reopen => {
                slots = [None, None, None];
                drop(db);
                db = Db::open(&p).unwrap();
                true
            }
            Op::Compact => {
                COMPACTIONS.fetch_add(1, Ordering::Relaxed);
                // Open transactions keep reading their snapshot (and own writes) from
                // the file they began on; new snapshots below the base tid are gone.
                db.compact().unwrap();
                for o in slots.iter().flatten() {
                    check_tx(o).map_err(TestCaseError::fail)?;
                }
                true
            }
        };
        if acted {
            check_state(&db, None, &by_name(&c.head)).map_err(TestCaseError::fail)?;
        }
    }
    let base = db.info().unwrap().base_tid;
    for (t, a) in c.history.range(base..) {
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
