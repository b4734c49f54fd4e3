//! Proves concurrent faults: two threads faulting one block cause one load (the other
//! waits), different blocks load in parallel, and 8 threads randomly reading and
//! writing a file larger than the budget agree with a plain in-memory model.

mod virtmem_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use virtmem_util::*;

#[test]
fn two_threads_faulting_one_block_cause_one_load() {
    let (_vm, f, h) = setup(8, false);
    let m = Arc::new(h.mmap(0, 4).unwrap());
    f.set_load_hook(Some(Arc::new(|_| {
        std::thread::sleep(Duration::from_millis(100))
    })));
    let start = Arc::new(Barrier::new(2));
    let ts: Vec<_> = (0..2)
        .map(|i| {
            let (m, start) = (m.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                rd(&m, BS + i * 100)
            })
        })
        .collect();
    for t in ts {
        assert_eq!(t.join().unwrap(), pattern(1));
    }
    assert_eq!(f.load_count(1), 1);
}

#[test]
fn different_blocks_load_in_parallel() {
    let (_vm, f, h) = setup(8, false);
    let m = Arc::new(h.mmap(0, 4).unwrap());
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    {
        let (inside, max_inside) = (inside.clone(), max_inside.clone());
        f.set_load_hook(Some(Arc::new(move |_| {
            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
            max_inside.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(150));
            inside.fetch_sub(1, Ordering::SeqCst);
        })));
    }
    let t0 = Instant::now();
    let ts: Vec<_> = (0..3)
        .map(|b| {
            let m = m.clone();
            std::thread::spawn(move || rd(&m, b * BS))
        })
        .collect();
    for (b, t) in ts.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), pattern(b as u64));
    }
    assert!(max_inside.load(Ordering::SeqCst) >= 2, "loads overlapped");
    assert!(
        t0.elapsed() < Duration::from_millis(420),
        "{:?}",
        t0.elapsed()
    );
}

/// A small deterministic PRNG (xorshift) so the test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn eight_threads_random_reads_and_writes_match_a_model() {
    // 64 blocks, RAM for 24: clean pages are reclaimed all the time. Each thread owns the
    // bytes at offsets ≡ thread (mod 8), so the model per byte is exact; threads share
    // blocks and pages. Writeouts keep dirty RAM at most 4 blocks + one write per thread,
    // so that with a load in flight per thread a fault always finds a page.
    const BLOCKS: usize = 64;
    const BUDGET: u64 = 24;
    let (vm, f, h) = setup(BUDGET, false);
    let h = Arc::new(h);
    let m = Arc::new(h.mmap(0, BLOCKS as u64).unwrap());
    let ops = 4000;
    let ts: Vec<_> = (0..8usize)
        .map(|t| {
            let (m, h, vm) = (m.clone(), h.clone(), vm.clone());
            std::thread::spawn(move || {
                let mut model: std::collections::HashMap<usize, u8> = Default::default();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                for i in 0..ops {
                    let blk = (rng.next() % BLOCKS as u64) as usize;
                    let off = blk * BS + ((rng.next() as usize % (BS / 8)) * 8) + t;
                    let want = *model.get(&off).unwrap_or(&pattern(blk as u64));
                    if rng.next() % 3 == 0 {
                        let v = rng.next() as u8;
                        if vm.stats().dirty > 4 * BS as u64 {
                            h.writeout().unwrap();
                        }
                        // Dirty pages cannot be reclaimed: write only when there is room
                        // (the checked API says so instead of aborting).
                        match m.load(off, 1, true) {
                            Ok(()) => {
                                wr(&m, off, v);
                                model.insert(off, v);
                            }
                            Err(wdb::Error::RamExhausted { .. }) => {
                                h.writeout().unwrap();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    } else if m.load(off, 1, false).is_ok() {
                        assert_eq!(rd(&m, off), want, "thread {t} op {i} offset {off}");
                    }
                    if i % 500 == 499 {
                        h.writeout().unwrap();
                    }
                }
                model
            })
        })
        .collect();
    let models: Vec<_> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    h.writeout().unwrap();
    for model in &models {
        for (&off, &v) in model {
            assert_eq!(
                f.block((off / BS) as u64)[off % BS],
                v,
                "stored byte at {off}"
            );
            assert_eq!(rd(&m, off), v);
        }
    }
    let s = vm.stats();
    assert!(s.ram_used <= BUDGET * BS as u64);
    assert!(s.evictions > 0, "the budget was exercised: {s:?}");
}

/// More threads loading at once than the budget has blocks: an allocation that finds
/// every page taken by loads in flight waits for one of them instead of failing with
/// `RamExhausted` (no page is dirty: RAM is not exhausted, only busy).
#[test]
fn more_concurrent_loads_than_budget_blocks_wait_instead_of_failing() {
    let (vm, f, h) = setup(2, false);
    let m = Arc::new(h.mmap(0, 8).unwrap());
    f.set_load_hook(Some(Arc::new(|_| {
        std::thread::sleep(Duration::from_millis(60))
    })));
    let start = Arc::new(Barrier::new(5));
    let ts: Vec<_> = (0..5u64)
        .map(|b| {
            let (m, start) = (m.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                m.load(b as usize * BS, BS, false)?;
                Ok::<_, wdb::Error>(rd(&m, b as usize * BS + 3))
            })
        })
        .collect();
    for (b, t) in ts.into_iter().enumerate() {
        let got = t.join().unwrap();
        assert!(
            matches!(got, Ok(v) if v == pattern(b as u64)),
            "block {b}: {got:?}"
        );
    }
    assert!(vm.stats().ram_used <= 2 * BS as u64);
}
