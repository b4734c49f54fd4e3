//! Hostile input gets an `Err`, never a panic, a hang or an allocation the input cannot
//! justify: proptest feeds arbitrary bytes to every decoder and arbitrary mutations of a
//! valid database (bit flips, overwritten fields — 2^60, u32::MAX —, inserted, deleted and
//! truncated bytes) to fsck + open + reads; and hand-made records with valid CRCs whose
//! length and count fields are huge are rejected as `Corruption`. A counting allocator
//! records the largest single allocation of each call.

mod reliability_util;

#[path = "../fuzz/harness.rs"]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use reliability_util::*;
use wdb::format::checkpoint::Checkpoint;
use wdb::Error;

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only records sizes in thread-locals without
// destructors (const-initialised `Cell`s), which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

fn note(n: usize) {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(n)));
        }
    });
}

#[global_allocator]
static A: Counting = Counting;

/// Run `f`; return the largest single allocation it made and how long it took.
fn measure(f: impl FnOnce()) -> (usize, Duration) {
    LARGEST.with(|m| m.set(0));
    ARMED.with(|a| a.set(true));
    let t = Instant::now();
    f();
    let el = t.elapsed();
    ARMED.with(|a| a.set(false));
    (LARGEST.with(|m| m.get()), el)
}

/// What an input of `len` bytes may make wdb allocate at once: a few times its size, plus
/// the fixed buffers (the 128 KiB reader table, the 1 MiB copy buffer of a torn-tail cut,
/// a 64 KiB block and the zstd context).
fn budget(len: usize) -> usize {
    8 * len + (4 << 20)
}

fn reference_bytes() -> &'static [u8] {
    static R: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.wdb");
        build_reference(&p, 3);
        std::fs::read(p).unwrap()
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Put64(usize, u64),
    Put32(usize, u32),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let big64 = prop_oneof![
        Just(1u64 << 60),
        Just(u64::MAX),
        Just(1 << 32),
        any::<u64>()
    ];
    let big32 = prop_oneof![
        Just(u32::MAX),
        Just(1u32 << 31),
        Just(1 << 30),
        any::<u32>()
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), big64).prop_map(|(i, v)| Mutation::Put64(i, v)),
        (any::<usize>(), big32).prop_map(|(i, v)| Mutation::Put32(i, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    let n = b.len().max(1);
    match m {
        Mutation::Flip(i, bit) => {
            let i = i % n;
            if i < b.len() {
                b[i] ^= 1 << bit;
            }
        }
        Mutation::Put64(i, v) => {
            let i = (i % n) & !7;
            if i + 8 <= b.len() {
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        Mutation::Put32(i, v) => {
            let i = (i % n) & !3;
            if i + 4 <= b.len() {
                b[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        Mutation::Insert(i, v) => {
            let i = i % (b.len() + 1);
            b.splice(i..i, v.iter().copied());
        }
        Mutation::Delete(i, k) => {
            let i = i % n;
            let e = (i + k).min(b.len());
            if i < e {
                b.drain(i..e);
            }
        }
        Mutation::Truncate(i) => b.truncate(i % n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: scale(512, 20_000) as u32, ..ProptestConfig::default() })]

    #[test]
    fn decoders_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (big, el) = measure(|| harness::decoders(&data));
        prop_assert!(big <= budget(data.len()), "allocated {big} for {} bytes", data.len());
        prop_assert!(el < Duration::from_secs(1));
    }

    #[test]
    fn databases_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..12_000)) {
        let dir = fast_tempdir();
        let (big, el) = measure(|| harness::open_db(dir.path(), &data));
        prop_assert!(big <= budget(data.len()), "allocated {big} for {} bytes", data.len());
        prop_assert!(el < Duration::from_secs(1));
    }

    #[test]
    fn mutated_databases_get_errors_not_panics(ms in proptest::collection::vec(mutation(), 1..6)) {
        let mut b = reference_bytes().to_vec();
        for m in &ms {
            apply(&mut b, m);
        }
        let dir = fast_tempdir();
        let (big, el) = measure(|| harness::open_db(dir.path(), &b));
        prop_assert!(big <= budget(b.len()), "allocated {big} for {} bytes", b.len());
        prop_assert!(el < Duration::from_secs(1), "{el:?}");
    }
}

fn crc_fix(b: &mut [u8], body: std::ops::Range<usize>, at: usize) {
    let c = crc32fast::hash(&b[body]);
    b[at..at + 4].copy_from_slice(&c.to_le_bytes());
}

fn is_corruption<T: std::fmt::Debug>(r: wdb::Result<T>) -> bool {
    matches!(r, Err(Error::Corruption { .. }))
}

#[test]
fn huge_counts_and_lengths_with_valid_crcs_are_corruption() {
    use wdb::format::checkpoint::CHECKPOINT_HEADER_SIZE;
    // A real checkpoint; then its transaction and key counts set to 2^60 and u64::MAX
    // with the CRC recomputed.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.wdb");
    build_reference(&p, 5);
    let idx = std::fs::read(dir.path().join("c.wdb.idx")).unwrap();
    assert!(Checkpoint::decode(&idx).is_ok());
    // The counter sees allocations (else every bound below would hold vacuously).
    let (seen, _) = measure(|| drop(std::hint::black_box(vec![1u8; 3 << 20])));
    assert!(seen >= 3 << 20, "the counting allocator saw {seen}");
    let mut cases = 0;
    for field in [CHECKPOINT_HEADER_SIZE - 16, CHECKPOINT_HEADER_SIZE - 8] {
        for v in [1u64 << 60, u64::MAX, 1 << 32] {
            let mut b = idx.clone();
            b[field..field + 8].copy_from_slice(&v.to_le_bytes());
            let n = b.len();
            crc_fix(&mut b, 0..n - 4, n - 4);
            let (big, _) = measure(|| assert!(is_corruption(Checkpoint::decode(&b))));
            assert!(
                big <= budget(b.len()),
                "checkpoint count {v}: allocated {big}"
            );
            cases += 1;
        }
    }
    // A catalog entry whose name, dtype and dimension counts are huge.
    let info = wdb::db::ArrayInfo::from_spec(1, spec("x", 1, true));
    let enc = info.encode().unwrap();
    for at in [9usize, 9 + 4 + 1] {
        for v in [u32::MAX, 1 << 31] {
            let mut b = enc.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            let (big, _) = measure(|| assert!(is_corruption(wdb::db::ArrayInfo::decode(&b, 0))));
            assert!(
                big <= budget(b.len()),
                "catalog length {v}: allocated {big}"
            );
            cases += 1;
        }
    }
    // Transaction and record headers with valid CRCs and lengths of 2^60 in a real file.
    let bytes = std::fs::read(&p).unwrap();
    let tx = 4096usize;
    let rec = tx + 48; // the first record (no user name or description)
    for (at, crc_body, crc_at) in [
        (tx + 8, tx..tx + 40, tx + 40),      // transaction total length
        (rec + 24, rec..rec + 44, rec + 44), // record back pointer
    ] {
        for v in [1u64 << 60, u64::MAX] {
            let mut b = bytes.clone();
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            crc_fix(&mut b, crc_body.clone(), crc_at);
            let d = fast_tempdir();
            let (big, el) = measure(|| harness::open_db(d.path(), &b));
            assert!(
                big <= budget(b.len()),
                "field at {at} = {v}: allocated {big}"
            );
            assert!(el < Duration::from_secs(1));
            let q = d.path().join("q.wdb");
            std::fs::write(&q, &b).unwrap();
            assert!(
                !wdb::db::Db::fsck_path(&q).unwrap().is_clean(),
                "field at {at} = {v}"
            );
            cases += 1;
        }
    }
    // Record lengths of u32::MAX (beyond the 1 GiB limit).
    for at in [rec + 32, rec + 36] {
        let mut b = bytes[rec..rec + 48].to_vec();
        b[at - rec..at - rec + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        crc_fix(&mut b, 0..44, 44);
        assert!(is_corruption(wdb::format::RecordHeader::decode(&b, 0)));
        cases += 1;
    }
    eprintln!("hostile: {cases} hand-made huge-length cases rejected");
}
