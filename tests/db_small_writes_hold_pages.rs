//! `write_from` of a few elements holds dirty 4 KiB pages, not whole blocks: one element
//! in every block of an array 8× the RAM budget commits (no `RamExhausted`) and reopens
//! right; the pages merge with views and `read_into` of the same transaction, with
//! writes through a view before and after, with abort, and with a block written past
//! the delta bound (stored whole).

use wdb::{ArrayOptions, Compression, Db, Error, Options};

const BS: u64 = 2 << 20;
const N: u64 = 8 << 20; // 64 MiB of f64: 32 blocks

fn elem(i: u64) -> f64 {
    i as f64 * 0.5 + 1.0
}

fn setup(budget: u64, comp: Compression) -> (tempfile::TempDir, std::path::PathBuf, Db) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.wdb");
    let db = Db::open_with(&p, Options::default().ram_budget(budget)).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array_with::<f64>("A", &[0], ArrayOptions::default().compression(comp))
        .unwrap();
    tx.commit().unwrap();
    // Appended in 2-block commits: never more than 2 blocks dirty at once.
    let chunk = (2 * BS / 8) as usize;
    let mut lo = 0;
    while lo < N {
        let tx = db.begin().unwrap();
        let v: Vec<f64> = (lo..lo + chunk as u64).map(elem).collect();
        tx.array_mut::<f64>("A").unwrap().append(&v).unwrap();
        tx.commit().unwrap();
        lo += chunk as u64;
    }
    (dir, p, db)
}

fn one_per_block() -> Vec<u64> {
    (0..N * 8 / BS)
        .map(|b| b * BS / 8 + 1 + (b * 977) % (BS / 8 - 2))
        .collect()
}

#[test]
fn write_from_one_element_per_block_fits_a_small_budget() {
    for comp in [Compression::None, Compression::Zstd { level: 1 }] {
        let (_d, p, db) = setup(8 << 20, comp);
        let pos = one_per_block();
        let tx = db.begin().unwrap();
        let mut a = tx.array_mut::<f64>("A").unwrap();
        for &q in &pos {
            a.write_from(q..q + 1, &[-(q as f64)]).unwrap();
        }
        let st = db.memory_stats().unwrap();
        assert!(
            st.dirty <= 2 * 4096 * pos.len() as u64,
            "dirty {} bytes for {} elements",
            st.dirty,
            pos.len()
        );
        // Read back in the same transaction, through read_into and views.
        for &q in &pos {
            assert_eq!(a.to_vec(q..q + 1).unwrap(), vec![-(q as f64)]);
            assert_eq!(a.view(q - 1..q + 2).unwrap()[[0]], elem(q - 1));
            assert_eq!(a.view(q..q + 1).unwrap()[[0]], -(q as f64));
        }
        drop(a);
        let size0 = std::fs::metadata(&p).unwrap().len();
        tx.commit().unwrap();
        let grew = std::fs::metadata(&p).unwrap().len() - size0;
        assert!(grew <= pos.len() as u64 * 8192 + (64 << 10), "grew {grew}");
        drop(db);
        let db = Db::open_with(&p, Options::default().ram_budget(8 << 20)).unwrap();
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("A").unwrap();
        let all = a.to_vec(..).unwrap();
        for (i, &v) in all.iter().enumerate() {
            let i = i as u64;
            let want = if pos.binary_search(&i).is_ok() {
                -(i as f64)
            } else {
                elem(i)
            };
            assert_eq!(v, want, "element {i}");
        }
        assert!(s.array_stats("A").unwrap().delta_blocks >= pos.len() as u64);
        assert!(db.fsck().unwrap().is_clean());
    }
}

#[test]
fn write_from_merges_with_views_in_both_orders() {
    let (_d, p, db) = setup(64 << 20, Compression::None);
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    // Block 1: write_from, then a view write to another element of the same page and
    // to another page; block 2: a view write first, then write_from.
    let (x, y, z) = (BS / 8 + 10, BS / 8 + 11, BS / 8 + 5000);
    a.write_from(x..x + 1, &[1e9]).unwrap();
    {
        let mut v = a.view_mut(y..z + 1).unwrap();
        v[[0]] = 2e9;
        v[[(z - y) as usize]] = 3e9;
    }
    a.write_from(x + 1..x + 2, &[4e9]).unwrap(); // overwrites y through the dirty block
    let w = 2 * BS / 8 + 7;
    a.view_mut(w..w + 1).unwrap()[[0]] = 5e9;
    a.write_from(w + 1..w + 2, &[6e9]).unwrap();
    // Block 3: written in part, read through a view, written again.
    let u = 3 * BS / 8 + 100;
    a.write_from(u..u + 1, &[7e9]).unwrap();
    assert_eq!(
        a.view(u..u + 2)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![7e9, elem(u + 1)]
    );
    a.write_from(u + 1..u + 2, &[8e9]).unwrap();
    assert_eq!(
        a.view(u..u + 2)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![7e9, 8e9]
    );
    drop(a);
    tx.commit().unwrap();
    drop(db);
    let db = Db::open(&p).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let got = |i: u64| a.to_vec(i..i + 1).unwrap()[0];
    assert_eq!(got(x), 1e9);
    assert_eq!(got(y), 4e9);
    assert_eq!(got(z), 3e9);
    assert_eq!(got(w), 5e9);
    assert_eq!(got(w + 1), 6e9);
    assert_eq!(got(u), 7e9);
    assert_eq!(got(u + 1), 8e9);
    assert_eq!(got(x - 1), elem(x - 1));
    assert_eq!(got(z + 1), elem(z + 1));
    assert!(db.fsck().unwrap().is_clean());
}

#[test]
fn aborted_small_writes_leave_nothing() {
    let (_d, p, db) = setup(8 << 20, Compression::None);
    let pos = one_per_block();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    for &q in &pos {
        a.write_from(q..q + 1, &[-1.0]).unwrap();
    }
    drop(a);
    tx.abort();
    assert_eq!(db.memory_stats().unwrap().dirty, 0);
    let size = std::fs::metadata(&p).unwrap().len();
    let tx = db.begin().unwrap();
    let a = tx.array::<f64>("A").unwrap();
    for &q in &pos {
        assert_eq!(a.to_vec(q..q + 1).unwrap(), vec![elem(q)]);
    }
    drop(a);
    tx.commit().unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
}

#[test]
fn many_pages_of_a_block_go_whole_and_chains_stay_bounded() {
    let (_d, p, db) = setup(64 << 20, Compression::None);
    // 200 pages of block 0 (over the quarter): tracked whole.
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    for k in 0..200u64 {
        let q = k * 512 + 3;
        a.write_from(q..q + 1, &[k as f64]).unwrap();
    }
    drop(a);
    tx.commit().unwrap();
    // Twenty one-element commits on block 1: the chain is folded before it gets long.
    for k in 0..20u64 {
        let tx = db.begin().unwrap();
        let mut a = tx.array_mut::<f64>("A").unwrap();
        let q = BS / 8 + k * 512;
        a.write_from(q..q + 1, &[-(k as f64)]).unwrap();
        drop(a);
        tx.commit().unwrap();
    }
    drop(db);
    let db = Db::open(&p).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    for k in 0..200u64 {
        let q = k * 512 + 3;
        assert_eq!(a.to_vec(q..q + 1).unwrap()[0], k as f64);
    }
    for k in 0..20u64 {
        let q = BS / 8 + k * 512;
        assert_eq!(a.to_vec(q..q + 1).unwrap()[0], -(k as f64));
        assert_eq!(a.to_vec(q + 1..q + 2).unwrap()[0], elem(q + 1));
    }
    assert!(db.fsck().unwrap().is_clean());
    drop(a);
    drop(s);
    db.compact().unwrap();
    assert!(db.fsck().unwrap().is_clean());
}

#[test]
fn small_writes_conflict_at_block_level() {
    let (_d, _p, db) = setup(64 << 20, Compression::None);
    let t1 = db.begin().unwrap();
    let t2 = db.begin().unwrap();
    t1.array_mut::<f64>("A")
        .unwrap()
        .write_from(5..6, &[1.0])
        .unwrap();
    t2.array_mut::<f64>("A")
        .unwrap()
        .write_from(9000..9001, &[2.0])
        .unwrap();
    t1.commit().unwrap();
    assert!(matches!(t2.commit(), Err(Error::Conflict { .. })));
}

#[test]
fn view_writes_to_one_element_per_block_fit_a_small_budget() {
    let (_d, p, db) = setup(8 << 20, Compression::None);
    let pos = one_per_block();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    {
        let mut v = a.view_mut(..).unwrap();
        for &q in &pos {
            v[[q as usize]] = -(q as f64);
            v[[q as usize + 1]] += 1.0;
        }
        for &q in &pos {
            assert_eq!(v[[q as usize]], -(q as f64));
            assert_eq!(v[[q as usize - 1]], elem(q - 1));
        }
    }
    let st = db.memory_stats().unwrap();
    assert!(
        st.dirty <= 2 * 4096 * pos.len() as u64,
        "dirty {} bytes for {} elements",
        st.dirty,
        pos.len()
    );
    // read_into of the same transaction sees them; then one block gets write_from too.
    for &q in &pos {
        assert_eq!(
            a.to_vec(q..q + 2).unwrap(),
            vec![-(q as f64), elem(q + 1) + 1.0]
        );
    }
    let q0 = pos[3];
    a.write_from(q0 + 2..q0 + 3, &[42.0]).unwrap();
    drop(a);
    tx.commit().unwrap();
    drop(db);
    let db = Db::open_with(&p, Options::default().ram_budget(8 << 20)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let all = a.to_vec(..).unwrap();
    for (i, &v) in all.iter().enumerate() {
        let i = i as u64;
        let want = if pos.binary_search(&i).is_ok() {
            -(i as f64)
        } else if i > 0 && pos.binary_search(&(i - 1)).is_ok() {
            elem(i) + 1.0
        } else if i == q0 + 2 {
            42.0
        } else {
            elem(i)
        };
        assert_eq!(v, want, "element {i}");
    }
    assert!(s.array_stats("A").unwrap().delta_blocks >= pos.len() as u64);
    assert!(db.fsck().unwrap().is_clean());
}

#[test]
fn view_writes_survive_a_remap_and_an_abort_drops_them() {
    let (_d, p, db) = setup(8 << 20, Compression::None);
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    a.view_mut(..).unwrap()[[100]] = -1.0;
    a.view_mut(..).unwrap()[[BS as usize / 8 + 100]] = -2.0;
    // Growing past the reservation maps the array anew: the written pages move along.
    a.resize(&[N * 4]).unwrap();
    assert_eq!(a.to_vec(100..101).unwrap(), vec![-1.0]);
    drop(a);
    tx.commit().unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    a.view_mut(..).unwrap()[[200]] = -3.0;
    drop(a);
    tx.abort();
    assert_eq!(db.memory_stats().unwrap().dirty, 0);
    drop(db);
    let db = Db::open(&p).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    assert_eq!(a.len(), N * 4);
    assert_eq!(a.to_vec(100..101).unwrap(), vec![-1.0]);
    assert_eq!(a.to_vec(BS / 8 + 100..BS / 8 + 101).unwrap(), vec![-2.0]);
    assert_eq!(a.to_vec(200..201).unwrap(), vec![elem(200)]);
    assert_eq!(a.to_vec(N..N + 1).unwrap(), vec![0.0]);
    assert!(db.fsck().unwrap().is_clean());
}
