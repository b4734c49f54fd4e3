//! The process's resident memory stays within the RAM budget plus a small constant while
//! a file 8x the budget is scanned, written and written out: each resident block counts
//! once (at its views), not once more for the RAM pool's own mapping, and evicted blocks
//! hold no page-table entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wdb::bigfile::{BigFile, ContentKeys, DirectMap, SubBlockPages};
use wdb::virtmem::{Mapping, VirtMem};
use wdb::Result;

const BS: usize = 2 << 20;
const BUDGET: u64 = 16 << 20;
const N_BLKS: u64 = 8 * BUDGET / BS as u64;
/// Allowance for the test's own allocations and the kernel's rounding.
const SLACK: u64 = 6 << 20;

/// A file whose blocks are generated (block `b` is filled with `b + 1`) and whose stores
/// are counted and dropped: the file itself holds no memory.
#[derive(Debug, Default)]
struct GenFile {
    stores: AtomicU64,
}

impl BigFile for GenFile {
    fn block_size(&self) -> usize {
        BS
    }
    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(blk as u8 + 1);
        Ok(())
    }
    fn store_blk(&self, _blk: u64, data: &[u8]) -> Result<()> {
        // Read every page, as a real store would.
        let s: u64 = data.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        std::hint::black_box(s);
        self.stores.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn name(&self) -> &str {
        "gen"
    }
    fn load_writes_whole_block(&self) -> bool {
        true
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

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn read_block(m: &Mapping, blk: u64) -> u64 {
    let base = blk as usize * BS;
    (0..BS)
        .step_by(4096)
        // SAFETY: inside the mapping; the fault handler makes it readable.
        .map(|off| u64::from(unsafe { std::ptr::read_volatile(m.as_ptr().add(base + off)) }))
        .sum()
}

fn write_block(m: &Mapping, blk: u64) {
    let base = blk as usize * BS;
    for off in (0..BS).step_by(4096) {
        // SAFETY: inside the mapping; the fault handler makes it writable.
        unsafe { std::ptr::write_volatile(m.as_ptr().add(base + off), 0xAB) }
    }
}

#[test]
fn scan_write_and_writeout_of_8x_budget_keep_rss_within_budget() {
    let vm = VirtMem::new(BUDGET).unwrap();
    let f = Arc::new(GenFile::default());
    let h = vm.open(f.clone()).unwrap();
    let m = h.mmap(0, N_BLKS).unwrap();
    let base = rss_bytes();
    let mut peak = base;

    // Read scan, twice (the second pass reuses evicted slots).
    for _ in 0..2 {
        for blk in 0..N_BLKS {
            assert_eq!(read_block(&m, blk), (blk + 1) % 256 * (BS as u64 / 4096));
            peak = peak.max(rss_bytes());
        }
    }
    assert!(vm.stats().evictions > 0);
    // Read then write every block, writing out every 4 blocks (stores read the slot,
    // and the dirty pages become clean and reclaimable).
    for blk in 0..N_BLKS {
        read_block(&m, blk);
        write_block(&m, blk);
        peak = peak.max(rss_bytes());
        if blk % 4 == 3 {
            h.writeout().unwrap();
            peak = peak.max(rss_bytes());
        }
    }
    h.writeout().unwrap();
    assert_eq!(f.stores.load(Ordering::Relaxed), N_BLKS);
    assert!(vm.stats().ram_used <= BUDGET);
    assert!(
        peak <= base + BUDGET + SLACK,
        "peak RSS {} KiB over base {} KiB + budget {} KiB + {} KiB",
        peak >> 10,
        base >> 10,
        BUDGET >> 10,
        SLACK >> 10
    );
    eprintln!(
        "peak RSS over base: {} KiB (budget {} KiB)",
        (peak - base) >> 10,
        BUDGET >> 10
    );
}
