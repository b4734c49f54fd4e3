//! Through the typed API, small writes cost small: 1,000 scattered element writes to a
//! 256 MiB f64 array and one commit grow the file by about the pages changed (delta
//! records), 100 single-element commits by less than 1 MiB, and every snapshot — old
//! ones across the delta chains too — reads the right values.

use wdb::{ArrayOptions, Compression, Db, Options, Tid};

const N: u64 = 32 << 20; // 256 MiB of f64

fn splitmix64(seed: u64, count: usize) -> Vec<u64> {
    (1..=count as u64)
        .map(|k| {
            let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

fn elem(i: u64) -> f64 {
    let noise = (i.wrapping_mul(2_654_435_761) % (1 << 32)) as f64 / 4_294_967_296.0 - 0.5;
    (2.0 * std::f64::consts::PI * i as f64 / 65536.0).sin() + 1e-3 * noise
}

fn at(a: &wdb::Array<'_, f64>, i: u64) -> f64 {
    a.view(i..i + 1).unwrap()[[0]]
}

#[test]
fn scattered_and_single_element_commits_grow_the_file_by_the_pages_changed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.wdb");
    let size = || std::fs::metadata(&p).unwrap().len();
    let db = Db::open_with(&p, Options::default().ram_budget(512 << 20)).unwrap();
    let tx = db.begin().unwrap();
    let mut a = tx
        .create_array_with::<f64>(
            "A",
            &[N],
            ArrayOptions::default().compression(Compression::None),
        )
        .unwrap();
    let data: Vec<f64> = (0..N).map(elem).collect();
    a.write_from(.., &data).unwrap();
    drop(a);
    let t_full = tx.commit().unwrap();
    drop(data);

    // W4: 1,000 scattered elements, one commit.
    let mut pos: Vec<u64> = splitmix64(44, 1000).iter().map(|z| z % N).collect();
    pos.sort_unstable();
    pos.dedup();
    let pages: std::collections::BTreeSet<u64> = pos.iter().map(|p| p * 8 / 4096).collect();
    let s0 = size();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<f64>("A").unwrap();
    for &q in &pos {
        a.view_mut(q..q + 1).unwrap()[[0]] = -(q as f64);
    }
    drop(a);
    let t_sparse = tx.commit().unwrap();
    let grew = size() - s0;
    let bound = pages.len() as u64 * 4096 + 256 * 1024;
    eprintln!(
        "W4-like: {} elements on {} pages grew the file by {grew} bytes (bound {bound})",
        pos.len(),
        pages.len()
    );
    assert!(
        grew <= bound,
        "1,000 scattered writes grew the file by {grew}"
    );

    // W5: 100 commits of one element each.
    let singles: Vec<u64> = splitmix64(45, 100).iter().map(|z| z % N).collect();
    let s1 = size();
    let mut tids = Vec::new();
    for (k, &q) in singles.iter().enumerate() {
        let tx = db.begin().unwrap();
        let mut a = tx.array_mut::<f64>("A").unwrap();
        a.view_mut(q..q + 1).unwrap()[[0]] = 1e6 + k as f64;
        drop(a);
        tids.push(tx.commit().unwrap());
    }
    let grew = size() - s1;
    eprintln!("W5-like: 100 single-element commits grew the file by {grew} bytes");
    assert!(
        grew <= 1 << 20,
        "100 single-element commits grew the file by {grew}"
    );

    // Time travel across the chains.
    let model_at = |upto_sparse: bool, singles_done: usize, i: u64| -> f64 {
        let mut v = elem(i);
        if upto_sparse && pos.binary_search(&i).is_ok() {
            v = -(i as f64);
        }
        for (k, &q) in singles[..singles_done].iter().enumerate() {
            if q == i {
                v = 1e6 + k as f64;
            }
        }
        v
    };
    let probes: Vec<u64> = pos
        .iter()
        .chain(&singles)
        .flat_map(|&q| [q, q.saturating_sub(1), (q + 1).min(N - 1)])
        .collect();
    let check = |tid: Tid, sparse: bool, done: usize| {
        let s = db.snapshot_at(tid).unwrap();
        let a = s.array::<f64>("A").unwrap();
        for &i in &probes {
            assert_eq!(
                at(&a, i),
                model_at(sparse, done, i),
                "tid {tid} element {i}"
            );
        }
    };
    check(t_full, false, 0);
    check(t_sparse, true, 0);
    check(tids[49], true, 50);
    check(*tids.last().unwrap(), true, 100);
    let st = db.snapshot().unwrap().array_stats("A").unwrap();
    assert!(st.delta_blocks > 100, "{st:?}");
    assert!(db.fsck().unwrap().is_clean());
}
