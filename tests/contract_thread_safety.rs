//! Through the public contract: databases, transactions, snapshots and array handles
//! can cross threads, and several threads read one snapshot's array at once.

use wdb::{Array, ArrayMut, Db, Options, Snapshot, Transaction};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<Db>();
    assert_send_sync::<Transaction>();
    assert_send_sync::<Snapshot>();
    assert_send_sync::<Array<'static, f64>>();
    assert_send::<ArrayMut<'static, f64>>();
}

#[test]
fn threads_read_one_snapshot_through_a_small_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path().join("t.wdb"), Options::default().ram_budget(8 << 20))
        .unwrap();
    let n: u64 = 4 << 20; // 32 MiB of f64: 4x the budget
    let tx = db.begin().unwrap();
    tx.create_array::<f64>("A", &[0]).unwrap();
    tx.commit().unwrap();
    let chunk: Vec<f64> = (0..n / 16).map(|i| i as f64).collect();
    for _ in 0..16 {
        let tx = db.begin().unwrap();
        tx.array_mut::<f64>("A").unwrap().append(&chunk).unwrap();
        tx.commit().unwrap();
    }
    let want = 16.0 * chunk.iter().sum::<f64>();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<f64>("A").unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|k| {
                let a = &a;
                s.spawn(move || {
                    // Each thread scans the whole array, starting at a different quarter.
                    let q = n / 4;
                    let first = a.view(k * q..).unwrap().sum();
                    let second = a.view(..k * q).unwrap().sum();
                    first + second
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}
