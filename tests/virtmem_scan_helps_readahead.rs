//! A scan that reaches a block the readahead thread is still loading (a copy-path block:
//! compressed, delta) does not wait for it idle: it loads a later block of the window
//! that nobody has started (`state::help_ahead`), so the two threads share the loads by
//! need. Here the readahead thread's loads are slow: without the help the scan would
//! load only the blocks readahead leaves to it (every other one) and wait for the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wdb::bigfile::{BigFile, ContentKeys, DirectMap, SubBlockPages};
use wdb::virtmem::VirtMem;
use wdb::Result;

const BS: usize = 2 << 20;
const N: u64 = 24;

/// Block `b` reads as `b + 1` everywhere; loads on the readahead thread are slow.
#[derive(Debug, Default)]
struct SlowAhead {
    /// Per block: 1 = loaded by the scanning thread, 2 = by another thread.
    by: Mutex<Vec<u8>>,
    loads: AtomicU64,
}

impl BigFile for SlowAhead {
    fn block_size(&self) -> usize {
        BS
    }
    fn load_blk(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        let ahead = std::thread::current().name() == Some("wdb-readahead");
        // Both threads' loads take time (a decompression), the readahead thread's
        // ten times as long.
        std::thread::sleep(Duration::from_millis(if ahead { 50 } else { 5 }));
        buf.fill(blk as u8 + 1);
        self.by.lock().unwrap()[blk as usize] = if ahead { 2 } else { 1 };
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn store_blk(&self, _blk: u64, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> &str {
        "slow-ahead"
    }
    fn load_writes_whole_block(&self) -> bool {
        true
    }
    fn content_keys(&self) -> Option<&dyn ContentKeys> {
        Some(self)
    }
    fn sub_block_pages(&self) -> Option<&dyn SubBlockPages> {
        None
    }
    fn direct_map(&self) -> Option<&dyn DirectMap> {
        None
    }
}

impl ContentKeys for SlowAhead {
    fn content_key(&self, blk: u64) -> Option<(u64, u64)> {
        // Stored content (readahead loads only such blocks).
        Some((1, blk))
    }
}

#[test]
fn a_scan_loads_ahead_itself_instead_of_waiting_for_readahead() {
    let f = Arc::new(SlowAhead {
        by: Mutex::new(vec![0; N as usize]),
        ..Default::default()
    });
    let vm = VirtMem::new(64 * BS as u64).unwrap();
    let h = vm.open(f.clone()).unwrap();
    let m = h.mmap(0, N).unwrap();
    for b in 0..N as usize {
        for off in (0..BS).step_by(4096) {
            // SAFETY: inside the mapping; the fault handler loads the block.
            let x = unsafe { std::ptr::read_volatile(m.as_ptr().add(b * BS + off)) };
            assert_eq!(x, b as u8 + 1, "block {b} at {off}");
        }
    }
    assert_eq!(f.loads.load(Ordering::Relaxed), N, "each block loaded once");
    let by = f.by.lock().unwrap().clone();
    let own = by.iter().filter(|&&x| x == 1).count() as u64;
    assert!(
        own >= N * 3 / 4,
        "the scan loaded {own} of {N} blocks itself: {by:?}"
    );
}
