//! Prefetch: a few I/O threads per process that read file blocks into the page cache
//! ahead of the threads that check and show them, so that a cold scan keeps several
//! block reads in flight.
//!
//! A block that needs a check is read by the thread that checks it, through a staging
//! mapping whose first touch reads the block's 2 MiB into one folio (`os::Staged`): one
//! synchronous read at a time per checking thread, with the device idle while that
//! thread computes the CRC and the scan sums. A memory map of a dense file gets the
//! kernel's streaming readahead instead (8 MiB ahead here); in a version-4 file that
//! readahead would read the hole and header between aligned payloads
//! (storage-format.md §2.8), and `fadvise(WILLNEED)` builds 4 KiB folios that every
//! later mapping maps a page at a time (`readahead.rs`). So readahead asks this pool to
//! read the blocks of its window through the same kind of mapping: each read builds the
//! same 2 MiB folio the check would have, on a thread that only waits for the device.
//! The checking thread then finds its block cached, or waits on the folio being read.
//!
//! - **Bounded.** At most [`THREADS`] threads (started on first use, then parked on a
//!   condvar for the life of the process) and [`QUEUE`] waiting requests; a request
//!   beyond that is dropped. A prefetch is a hint: nothing waits for it and nothing
//!   depends on it, so a failure (a mapping refused, a file gone) is ignored.
//! - **Holds nothing of the database.** A request carries its own duplicate of the
//!   file's descriptor, not the `FileSlice`'s `keep`: a database dropped while its
//!   requests wait is closed at once, its locks and cache slots released; the duplicate
//!   keeps only the open file, whose committed bytes are never truncated (so the read
//!   cannot fault with `SIGBUS`).
//! - **Forks.** A child made by `fork` has none of its parent's threads: its first
//!   request drops what the parent left queued and starts threads of its own.
//! - **Only what the device must read.** A block whose pages are all in the page cache
//!   already (`os::resident`, one `cachestat` call) is not handed over: reading it in
//!   would only map and unmap it, and unmapping a touched mapping interrupts every
//!   other core running the process to flush its TLB (a warm scan in
//!   `Verify::OncePerProcess` checks every block, and met one such flush per block).
//! - **Reads only.** The mapping is private and read-only and is unmapped after the
//!   read; no view ever shows it, so nothing is shown unchecked.

use std::collections::VecDeque;
use std::sync::OnceLock;

use parking_lot::{Condvar, Mutex};

use super::os;
use crate::bigfile::FileSlice;

/// I/O threads, at most: reads in flight beside the checking threads' own.
const THREADS: usize = 4;

/// Requests waiting for a thread, at most.
const QUEUE: usize = 16;

struct Pool {
    q: Mutex<Queue>,
    cv: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(FileSlice, usize)>,
    threads: usize,
    idle: usize,
    /// The process the threads run in: a child made by `fork` has none of them.
    pid: u32,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Read `src` (a block of `bs` bytes) into the page cache on an I/O thread, unless the
/// queue is full. Returns at once.
pub(super) fn prefetch(src: &FileSlice, bs: usize) {
    if src.len == 0 || os::resident(src) {
        // Nothing to read (module docs: "Only what the device must read").
        return;
    }
    let Some(job) = os::detached(src) else {
        return;
    };
    let pool = POOL.get_or_init(|| Pool {
        q: Mutex::new(Queue::default()),
        cv: Condvar::new(),
    });
    let mut q = pool.q.lock();
    if q.pid != std::process::id() {
        // First use, or a forked child: no thread runs here yet.
        q.jobs.clear();
        (q.threads, q.idle, q.pid) = (0, 0, std::process::id());
    }
    if q.jobs.len() >= QUEUE {
        return;
    }
    q.jobs.push_back((job, bs));
    if q.idle == 0 && q.threads < THREADS {
        let spawned = std::thread::Builder::new()
            .name("wdb-prefetch".into())
            .spawn(move || run(POOL.get().expect("initialised above")));
        if spawned.is_ok() {
            q.threads += 1;
        }
    }
    drop(q);
    pool.cv.notify_one();
}

fn run(pool: &Pool) {
    let mut q = pool.q.lock();
    loop {
        match q.jobs.pop_front() {
            Some((job, bs)) => {
                drop(q);
                read_in(&job, bs);
                drop(job);
                q = pool.q.lock();
            }
            None => {
                q.idle += 1;
                pool.cv.wait(&mut q);
                q.idle -= 1;
            }
        }
    }
}

/// Map `src` as a checking thread would and touch one byte per 2 MiB: each touch that
/// misses the page cache reads its 2 MiB folio.
fn read_in(src: &FileSlice, bs: usize) {
    let Ok(st) = os::Staged::new(src, bs) else {
        return;
    };
    let bytes = st.bytes();
    for i in (0..bytes.len()).step_by(os::HUGE) {
        std::hint::black_box(bytes[i]);
    }
}
