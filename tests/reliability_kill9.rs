//! kill -9 at random moments of a process that commits (and now and then compacts) in a
//! loop: after each kill the database opens without a manual step, shows the last
//! acknowledged commit or the one after it, with the contents that commit wrote, and
//! fsck is clean. Each commit writes blocks through the block API and appends to a typed
//! `f64` array and writes its element 0 through a view.
//!
//! The child is this test binary re-run with `WDB_RELIAB_ROLE=kill9-child`; it prints
//! `ACK <tid>` after each commit returns. Default 200 kills; `WDB_SOAK=1` 10,000.

mod reliability_util;

use std::time::{Duration, Instant};

use reliability_util::*;
use wdb::db::Db;
use wdb::Tid;

const ROLE: &str = "WDB_RELIAB_ROLE";

/// What commit `t` writes to block 0 (its tid) and to block `1 + (t - 1) % 3`.
fn content(t: u64, blk: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    if blk == 0 {
        for c in b[..4096].chunks_mut(8) {
            c.copy_from_slice(&t.to_le_bytes());
        }
    } else {
        let mut r = Rng::new(t);
        r.fill(&mut b[..4096 * (1 + (t % 2) as usize)]);
    }
    b
}

/// The elements commit `t` appends to the typed array "t".
fn typed_rows(t: u64) -> [f64; 3] {
    [t as f64, t as f64 + 0.5, -(t as f64)]
}

fn child(path: &str) -> ! {
    use std::io::Write;
    let db = Db::open(path).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        let tx = db.begin().unwrap();
        let t = tx.snapshot_tid().0 + 1;
        let id = match tx.array_info("k") {
            Ok(i) => i.id,
            Err(_) => tx.create_array_raw(spec("k", 4, true)).unwrap().id,
        };
        tx.write_block(id, 0, &content(t, 0)).unwrap();
        let blk = 1 + (t - 1) % 3;
        tx.write_block(id, blk, &content(t, blk)).unwrap();
        {
            // The typed API too: append three elements, write element 0 through a view.
            let mut a = match tx.array_mut::<f64>("t") {
                Ok(a) => a,
                Err(_) => tx.create_array::<f64>("t", &[0]).unwrap(),
            };
            a.append(&typed_rows(t)).unwrap();
            a.view_mut(0..1).unwrap()[[0]] = t as f64;
        }
        let got = tx.commit().unwrap();
        assert_eq!(got.0, t, "single writer: tids are consecutive");
        writeln!(out, "ACK {t}").unwrap();
        out.flush().unwrap();
        if t % 8 == 0 {
            db.compact().unwrap();
            writeln!(out, "COMPACTED").unwrap();
            out.flush().unwrap();
        }
    }
}

/// Check the database after a kill; `acked` is the last tid the child acknowledged.
fn check(path: &std::path::Path, acked: u64, round: &str) -> u64 {
    let db = Db::open(path).unwrap_or_else(|e| panic!("round {round}: open after kill: {e}"));
    let head = db.last_tid().unwrap().0;
    assert!(
        head == acked || head == acked + 1,
        "round {round}: head {head}, last acknowledged {acked}"
    );
    if head > 0 {
        let s = db.snapshot().unwrap();
        let id = s.array_info("k").unwrap().id;
        let mut buf = vec![0u8; BS];
        s.read_block(id, 0, &mut buf).unwrap();
        assert_eq!(buf, content(head, 0), "round {round}: block 0 at {head}");
        // Each of blocks 1..=3 holds what its last writer wrote.
        for blk in 1..=3u64 {
            let last = (1..=head).rev().find(|t| 1 + (t - 1) % 3 == blk);
            s.read_block(id, blk, &mut buf).unwrap();
            let want = last
                .map(|t| content(t, blk))
                .unwrap_or_else(|| vec![0u8; BS]);
            assert!(buf == want, "round {round}: block {blk} at {head}");
        }
    }
    if head > 0 {
        // The typed array: 3 elements per commit, element 0 overwritten by the last one.
        let s = db.snapshot().unwrap();
        let a = s.array::<f64>("t").unwrap();
        assert_eq!(a.len(), 3 * head, "{round}: typed array length at {head}");
        let v = a.view(..).unwrap();
        for k in 1..=head {
            let want = typed_rows(k);
            for (j, w) in want.iter().enumerate() {
                let i = (3 * (k - 1)) as usize + j;
                let w = if i == 0 { head as f64 } else { *w };
                assert_eq!(v[[i]], w, "{round}: t[{i}] at {head}");
            }
        }
    }
    drop(db);
    fsck_clean(path).unwrap_or_else(|e| panic!("round {round}: {e}"));
    head
}

#[test]
fn kill9_during_commits_and_compactions() {
    if let Ok(role) = std::env::var(ROLE) {
        assert_eq!(role, "kill9-child");
        child(&std::env::var("WDB_RELIAB_DB").unwrap());
    }
    let kills = scale(200, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.wdb");
    let mut rng = Rng::new(42);
    let mut head = 0u64;
    let (mut next_visible, mut compactions) = (0u64, 0u64);
    let t0 = Instant::now();
    for round in 0..kills {
        // Wait for a random number of acknowledgements (0 = kill during open or the
        // first commit), then a random delay of up to 3 ms inside the next commit.
        let wait_acks = if rng.chance(20) {
            rng.below(20)
        } else {
            rng.below(4)
        };
        let spin = Duration::from_micros(rng.below(3000));
        let k = kill_after_acks(
            "kill9_during_commits_and_compactions",
            &[
                (ROLE, "kill9-child".as_ref()),
                ("WDB_RELIAB_DB", path.as_os_str()),
            ],
            dir.path(),
            head,
            wait_acks,
            spin,
        );
        let acked = k.acked;
        compactions += k.lines.iter().filter(|l| l.contains("COMPACTED")).count() as u64;
        let ctx = format!(
            "{round}: child stdout tail {:?}, stderr {:?}",
            k.lines.iter().rev().take(4).collect::<Vec<_>>(),
            k.stderr
        );
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
        "kill9: {kills} kills in {:.1?}, {head} commits, {compactions} compactions completed, \
         {next_visible} kills left the unacknowledged next commit visible",
        t0.elapsed()
    );
    assert!(head > 0 && Tid(head) > Tid::ZERO);
}
