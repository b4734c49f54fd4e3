//! Proves that what grows with a transaction stays within the RAM budget: in a process
//! of its own (so that its peak resident memory, `VmHWM`, is the operation's), with an
//! 8 MiB budget and 128 MiB of data, filling an array through one view, appending in
//! 1 MiB pieces, resizing then filling — each in one transaction, committed — and
//! compacting a database whose one transaction holds 16× the budget all peak within the
//! budget plus a constant above the process's resident memory before the operation.

mod child_util;

use std::path::Path;

use wdb::db::{Db, Options};

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 8 * MIB;
/// f64 elements of the array: 128 MiB.
const N: u64 = 16 * MIB;
/// What the process may hold beyond the budget: the transaction's share of staged
/// payloads (1/8 of the budget), the test harness, buffers of a block or two.
const SLACK: u64 = 24 * MIB;

fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn val(i: u64) -> f64 {
    let z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((z ^ (z >> 29)) >> 11) as f64
}

fn open(p: &str) -> Db {
    Db::open_with(p, Options::default().ram_budget(BUDGET)).unwrap()
}

#[test]
fn child_entry() {
    let Some((role, path)) = child_util::role() else {
        return;
    };
    let db = open(&path);
    // The thread-local buffers and the harness's own memory are in place before.
    let base = status("VmRSS:");
    match role.as_str() {
        "fill" => {
            let tx = db.begin().unwrap();
            {
                let mut a = tx.create_array::<f64>("A", &[N]).unwrap();
                for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
                    *x = val(i as u64);
                }
            }
            tx.commit().unwrap();
        }
        "append" => {
            let tx = db.begin().unwrap();
            {
                let mut a = tx.create_array::<f64>("A", &[0]).unwrap();
                let chunk = (MIB / 8) as usize;
                let mut buf = vec![0.0; chunk];
                for c in 0..N / chunk as u64 {
                    for (j, x) in buf.iter_mut().enumerate() {
                        *x = val(c * chunk as u64 + j as u64);
                    }
                    a.append(&buf).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        "resize" => {
            let tx = db.begin().unwrap();
            {
                let mut a = tx.create_array::<f64>("A", &[1]).unwrap();
                a.resize(&[N]).unwrap();
                for (i, x) in a.view_mut(..).unwrap().iter_mut().enumerate() {
                    *x = val(i as u64);
                }
            }
            tx.commit().unwrap();
        }
        "compact" => {
            db.compact().unwrap();
        }
        _ => panic!("unknown role {role}"),
    }
    println!("BASE {base} HWM {}", status("VmHWM:"));
}

/// Run `role` on the database at `p` in a child and return (base, peak) RSS.
fn measure(role: &str, p: &Path) -> (u64, u64) {
    let out = child_util::run_child(role, p);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{role}: {so}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = so
        .lines()
        .find_map(|l| l.split_once("BASE ").map(|x| x.1))
        .unwrap();
    let mut it = l.split(" HWM ");
    let base: u64 = it.next().unwrap().trim().parse().unwrap();
    let hwm: u64 = it.next().unwrap().trim().parse().unwrap();
    eprintln!(
        "{role}: peak RSS {} MiB over a base of {} MiB (budget {} MiB)",
        hwm.saturating_sub(base) >> 20,
        base >> 20,
        BUDGET >> 20
    );
    assert!(
        hwm <= base + BUDGET + SLACK,
        "{role}: peak RSS {} MiB, base {} MiB + budget {} MiB + {} MiB",
        hwm >> 20,
        base >> 20,
        BUDGET >> 20,
        SLACK >> 20
    );
    (base, hwm)
}

fn check(p: &Path) {
    let db = open(p.to_str().unwrap());
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    assert_eq!(a.len(), N);
    let v = a.view(..).unwrap();
    for i in (0..N).step_by(65_537) {
        assert_eq!(v[[i as usize]], val(i));
    }
    drop(v);
    drop(a);
    drop(s);
    drop(db);
    assert!(Db::fsck_path(p).unwrap().is_clean());
}

#[test]
fn a_fill_of_sixteen_times_the_budget_peaks_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fill.wdb");
    measure("fill", &p);
    check(&p);
}

#[test]
fn appends_of_sixteen_times_the_budget_peak_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("append.wdb");
    measure("append", &p);
    check(&p);
}

#[test]
fn resize_then_fill_peaks_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resize.wdb");
    measure("resize", &p);
    check(&p);
}

#[test]
fn compacting_a_transaction_of_sixteen_times_the_budget_peaks_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("compact.wdb");
    measure("fill", &p);
    // A second version of a quarter of the blocks, so that compaction drops some.
    {
        let db = open(p.to_str().unwrap());
        let tx = db.begin().unwrap();
        tx.array_mut::<f64>("A")
            .unwrap()
            .view_mut(0..N / 4)
            .unwrap()
            .fill(0.5);
        tx.commit().unwrap();
    }
    measure("compact", &p);
    let db = open(p.to_str().unwrap());
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("A").unwrap();
    let v = a.view(..).unwrap();
    assert_eq!(v[[0]], 0.5);
    assert_eq!(v[[N as usize - 1]], val(N - 1));
    drop(v);
    drop(a);
    drop(s);
    drop(db);
    assert!(Db::fsck_path(&p).unwrap().is_clean());
}
