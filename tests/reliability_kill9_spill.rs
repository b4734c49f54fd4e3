//! kill -9 at random moments of a process whose every transaction is bigger than its
//! RAM budget (it spills dirty blocks to its spill file while it writes, and the commit
//! copies them into the log): after each kill the database opens without a manual step,
//! shows the last acknowledged commit or the one after it, whole (every element of the
//! array is what that commit wrote, never a mix), fsck is clean, and no spill file is
//! left beside it. Half of the children create their spill files by name and unlink
//! them (`WDB_SPILL_NAMED=1`, the path of filesystems without `O_TMPFILE`).
//!
//! The child is this test binary re-run with `WDB_RELIAB_ROLE=kill9-spill-child`; it
//! prints `ACK <tid>` after each commit returns. Default 200 kills; `WDB_SOAK=1` 2,000.

mod reliability_util;

use std::path::Path;
use std::time::{Duration, Instant};

use reliability_util::*;
use wdb::db::{ArrayOptions, Db, Options};

const ROLE: &str = "WDB_RELIAB_ROLE";
/// Block size of the array: small, so that a transaction spills many blocks quickly.
const BLOCK: u64 = 64 << 10;
/// RAM budget: 8 blocks.
const BUDGET: u64 = 8 * BLOCK;
/// Elements (f64) of the array: 40 blocks, 5 times the budget.
const N: u64 = 40 * BLOCK / 8;

fn opts() -> Options {
    Options::default().ram_budget(BUDGET)
}

/// Element `i` as commit `t` writes it: odd commits incompressible values (raw blocks,
/// copied from the spill file), even commits a compressible ramp (zstd blocks).
fn elem(t: u64, i: u64) -> f64 {
    if t % 2 == 1 {
        let mut z = (i ^ (t << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 31;
        (z >> 12) as f64
    } else {
        (t * 1_000_000 + i / 64) as f64
    }
}

fn child(path: &str) -> ! {
    use std::io::Write;
    let db = Db::open_with(path, opts()).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        let tx = db.begin().unwrap();
        let t = tx.snapshot_tid().0 + 1;
        {
            let mut a = match tx.array_mut::<f64>("S") {
                Ok(a) => a,
                Err(_) => tx
                    .create_array_with::<f64>(
                        "S",
                        &[N],
                        ArrayOptions::default().block_size(BLOCK as u32),
                    )
                    .unwrap(),
            };
            let mut v = a.view_mut(..).unwrap();
            for (i, x) in v.iter_mut().enumerate() {
                *x = elem(t, i as u64);
            }
        }
        assert!(db.memory_stats().unwrap().spill_writes > 0);
        let got = tx.commit().unwrap();
        assert_eq!(got.0, t, "single writer: tids are consecutive");
        writeln!(out, "ACK {t}").unwrap();
        out.flush().unwrap();
    }
}

/// Spill files left beside the database (named ones: unnamed ones cannot be left).
fn strays(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".spill."))
        .collect()
}

/// Check the database after a kill; `acked` is the last tid the child acknowledged.
fn check(path: &Path, acked: u64, round: &str) -> u64 {
    let db = Db::open_with(path, opts())
        .unwrap_or_else(|e| panic!("round {round}: open after kill: {e}"));
    let left = strays(path.parent().unwrap());
    assert!(left.is_empty(), "round {round}: left behind: {left:?}");
    let head = db.last_tid().unwrap().0;
    assert!(
        head == acked || head == acked + 1,
        "round {round}: head {head}, last acknowledged {acked}"
    );
    if head > 0 {
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("S").unwrap();
        let v = a.view(..).unwrap();
        for (i, &x) in v.iter().enumerate() {
            assert!(
                x == elem(head, i as u64),
                "round {round}: element {i} at {head} is {x}"
            );
        }
    }
    drop(db);
    fsck_clean(path).unwrap_or_else(|e| panic!("round {round}: {e}"));
    head
}

#[test]
fn kill9_while_spilling_transactions_write_and_commit() {
    if let Ok(role) = std::env::var(ROLE) {
        assert_eq!(role, "kill9-spill-child");
        child(&std::env::var("WDB_RELIAB_DB").unwrap());
    }
    let kills = scale(200, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.wdb");
    let mut rng = Rng::new(7);
    let mut head = 0u64;
    let mut next_visible = 0u64;
    let t0 = Instant::now();
    for round in 0..kills {
        // Wait for 0 to 2 acknowledgements, then up to 40 ms into the next transaction
        // (its fill, its spills, its commit's copy and sync).
        let wait_acks = rng.below(3);
        let delay = Duration::from_micros(rng.below(40_000));
        let named = if round % 2 == 0 { "1" } else { "0" };
        let k = kill_after_acks(
            "kill9_while_spilling_transactions_write_and_commit",
            &[
                (ROLE, "kill9-spill-child".as_ref()),
                ("WDB_RELIAB_DB", path.as_os_str()),
                ("WDB_SPILL_NAMED", named.as_ref()),
            ],
            dir.path(),
            head,
            wait_acks,
            delay,
        );
        let acked = k.acked;
        let ctx = format!("{round}: stderr {:?}", k.stderr);
        let h = check(&path, acked, &ctx);
        if h == acked + 1 {
            next_visible += 1;
        }
        assert!(
            h >= head,
            "round {round}: the head went back from {head} to {h}"
        );
        head = h;
    }
    eprintln!(
        "kill9 spill: {kills} kills in {:.1?}, {head} commits, {next_visible} kills left \
         the unacknowledged next commit visible",
        t0.elapsed()
    );
    assert!(head > 0);
}
