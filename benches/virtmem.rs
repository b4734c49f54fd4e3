//! Fault overhead per 2 MiB block (first read, first write, read-then-write) beside a
//! plain memcpy of 2 MiB, and a scan of a 4 GiB mapping backed by a generating BigFile
//! under a 256 MiB budget beside plain memcpy bandwidth.
//!
//! Fault overhead (wdb's work per fault, excluding the BigFile's own work) is
//! `first_read_filled` (or `first_write_filled`, `read_then_write_filled`) minus
//! `load_work_fill`: the generating file's `load_blk` writes every byte of the block, the
//! same `fill` that `load_work_fill` times into a warm 2 MiB buffer. Each fault figure
//! includes the eviction of the block (`invalidate`) and the touch of its 512 pages
//! (`resident_touch_*` shows that part alone). The `zeroed` variants count wdb's zeroing
//! of the slot as overhead (their file writes nothing, so the promise "arrives zeroed"
//! costs a write of the block).
//!
//! Run: `cargo bench --bench virtmem -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wdb::bigfile::{BigFile, ContentKeys, DirectMap, SubBlockPages, DEFAULT_BLOCK_SIZE};
use wdb::virtmem::{Mapping, VirtMem};
use wdb::Result;

const BS: usize = DEFAULT_BLOCK_SIZE;

/// A file whose blocks are generated, not held: `Fill::Nothing` leaves the (zeroed)
/// buffer as it is, so a fault's time is wdb's overhead alone; `Fill::Pattern` writes
/// every byte, as a real load would.
#[derive(Debug)]
struct GenFile {
    fill: bool,
}

impl BigFile for GenFile {
    fn block_size(&self) -> usize {
        BS
    }
    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        if self.fill {
            buf.fill(blk as u8 | 1);
        }
        Ok(())
    }
    fn store_blk(&self, _blk: u64, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> &str {
        "gen"
    }
    fn load_writes_whole_block(&self) -> bool {
        self.fill
    }
    fn content_keys(&self) -> Option<&dyn ContentKeys> {
        None
    }
    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages> {
        None
    }
    fn direct_map(&self) -> Option<&dyn DirectMap> {
        None
    }
}

/// Touch one byte per 4 KiB page of block 0 (reads), as a scan of the block would.
fn read_pages(m: &Mapping) -> u8 {
    let mut x = 0u8;
    for off in (0..BS).step_by(4096) {
        x ^= rd(m, off);
    }
    x
}

fn write_pages(m: &Mapping) {
    for off in (0..BS).step_by(4096) {
        wr(m, off, 1);
    }
}

fn rd(m: &Mapping, off: usize) -> u8 {
    // SAFETY: inside the mapping.
    unsafe { std::ptr::read_volatile(m.as_ptr().add(off)) }
}

fn wr(m: &Mapping, off: usize, v: u8) {
    // SAFETY: inside the mapping.
    unsafe { std::ptr::write_volatile(m.as_ptr().add(off), v) }
}

fn fault_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("fault_2MiB");
    g.throughput(Throughput::Bytes(BS as u64));
    let src = vec![7u8; BS];
    let mut dst = vec![0u8; BS];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    // The generating file's own work per load, to subtract from the fault figures.
    g.bench_function("load_work_fill", |b| {
        b.iter(|| {
            dst.fill(black_box(5));
            black_box(&dst);
        })
    });
    // Each iteration forgets the block (invalidate: the view goes back to PROT_NONE and
    // the page to the pool) and touches every 4 KiB page of it: one full fault cycle,
    // including the kernel's work to map the block's pages.
    for (name, fill) in [("zeroed", false), ("filled", true)] {
        let vm = VirtMem::new(64 << 20).unwrap();
        let h = vm.open(Arc::new(GenFile { fill })).unwrap();
        let m = h.mmap(0, 1).unwrap();
        g.bench_function(format!("first_read_{name}"), |b| {
            b.iter(|| {
                h.invalidate(0);
                black_box(read_pages(&m));
            })
        });
        g.bench_function(format!("first_write_{name}"), |b| {
            b.iter(|| {
                h.invalidate(0);
                write_pages(&m);
            })
        });
        g.bench_function(format!("read_then_write_{name}"), |b| {
            b.iter(|| {
                h.invalidate(0);
                black_box(read_pages(&m));
                write_pages(&m);
            })
        });
        // The same touches on a block already resident and writable: the part of the
        // figures above that is not the fault's.
        m.load(0, 1, true).unwrap();
        g.bench_function(format!("resident_touch_{name}"), |b| {
            b.iter(|| {
                black_box(read_pages(&m));
                write_pages(&m);
            })
        });
    }
    g.finish();
}

fn sum_u64(bytes: &[u8]) -> u64 {
    // SAFETY: any bytes are valid u64s; align_to gives the aligned middle.
    let (a, mid, c) = unsafe { bytes.align_to::<u64>() };
    let mut s = 0u64;
    for &w in mid {
        s = s.wrapping_add(w);
    }
    s.wrapping_add(a.len() as u64 + c.len() as u64)
}

fn scan(c: &mut Criterion) {
    const TOTAL: usize = 4 << 30;
    const BUDGET: u64 = 256 << 20;
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(TOTAL as u64));
    // Baseline: memcpy bandwidth over buffers as large as the budget, counted per byte.
    let src = vec![3u8; BUDGET as usize];
    let mut dst = vec![0u8; BUDGET as usize];
    g.bench_function("memcpy_bandwidth_4GiB", |b| {
        b.iter(|| {
            for _ in 0..TOTAL / BUDGET as usize {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            }
        })
    });
    drop((src, dst));
    let vm = VirtMem::new(BUDGET).unwrap();
    let h = vm.open(Arc::new(GenFile { fill: true })).unwrap();
    let m = h.mmap(0, (TOTAL / BS) as u64).unwrap();
    g.bench_function("wdb_mapping_4GiB_budget_256MiB", |b| {
        b.iter(|| {
            let mut s = 0u64;
            for blk in 0..TOTAL / BS {
                // SAFETY: a block inside the mapping; the fault handler loads it.
                let bytes = unsafe { std::slice::from_raw_parts(m.as_ptr().add(blk * BS), BS) };
                s = s.wrapping_add(sum_u64(bytes));
            }
            black_box(s)
        })
    });
    g.finish();
    let st = vm.stats();
    assert!(st.ram_used <= BUDGET, "{st:?}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = fault_overhead, scan
}
criterion_main!(benches);
