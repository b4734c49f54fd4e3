//! Proves the single-threaded semantics against a plain in-memory model: random
//! sequences of reads, writes, writeouts, discards, invalidations (with the file
//! changed underneath) and remaps, under a budget of 3 blocks, agree with the model on
//! every byte read, on the dirty set, on the stored file, and on the RAM accounting —
//! dirty blocks past the budget are spilled (stored early, least recently used first)
//! with exactly the content the model holds for them, and read back from the file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use wdb::bigfile::MemFile;
use wdb::virtmem::{Mapping, VirtMem};

const BS: usize = 4096;
const BLOCKS: u64 = 8;
const BUDGET: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Read(u64, usize),
    Write(u64, usize, u8),
    Writeout,
    Discard,
    /// The file's block changes underneath (filled with the byte), then invalidate.
    Invalidate(u64, u8),
    Remap,
}

fn op() -> impl Strategy<Value = Op> {
    let blk = 0..BLOCKS;
    let off = 0..BS;
    prop_oneof![
        4 => (blk.clone(), off.clone()).prop_map(|(b, o)| Op::Read(b, o)),
        4 => (blk.clone(), off, any::<u8>()).prop_map(|(b, o, v)| Op::Write(b, o, v)),
        1 => Just(Op::Writeout),
        1 => Just(Op::Discard),
        1 => (blk, any::<u8>()).prop_map(|(b, v)| Op::Invalidate(b, v)),
        1 => Just(Op::Remap),
    ]
}

fn rd(m: &Mapping, off: usize) -> u8 {
    // SAFETY: inside the mapping.
    unsafe { std::ptr::read_volatile(m.as_ptr().add(off)) }
}

fn wr(m: &Mapping, off: usize, v: u8) {
    // SAFETY: inside the mapping.
    unsafe { std::ptr::write_volatile(m.as_ptr().add(off), v) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn random_operations_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let vm = VirtMem::new(BUDGET * BS as u64).unwrap();
        let f = Arc::new(MemFile::new_shared("model", BS));
        let mut file: Vec<Vec<u8>> = (0..BLOCKS).map(|b| vec![b as u8 + 1; BS]).collect();
        for b in 0..BLOCKS {
            f.set_block(b, &file[b as usize]).unwrap();
        }
        let h = vm.open(f.clone()).unwrap();
        let mut m = h.mmap(0, BLOCKS).unwrap();
        // Dirty blocks: the handle's private copy of the whole block.
        let mut dirty: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        // Dirty blocks spilled to the file (stored early) and not read back since.
        let mut spilled: BTreeSet<u64> = BTreeSet::new();
        for op in ops {
            let stored_before = f.store_log().len();
            match op {
                Op::Read(b, o) => {
                    let off = b as usize * BS + o;
                    m.load(off, 1, false).unwrap();
                    let want = dirty.get(&b).map_or(file[b as usize][o], |d| d[o]);
                    prop_assert_eq!(rd(&m, off), want);
                    spilled.remove(&b);
                }
                Op::Write(b, o, v) => {
                    let off = b as usize * BS + o;
                    m.load(off, 1, true).unwrap();
                    wr(&m, off, v);
                    spilled.remove(&b);
                    dirty.entry(b).or_insert_with(|| file[b as usize].clone())[o] = v;
                }
                Op::Writeout => {
                    h.writeout().unwrap();
                    let stored: Vec<u64> = f.store_log()[stored_before..].to_vec();
                    let want: Vec<u64> = dirty.keys().copied().collect();
                    prop_assert_eq!(stored, want);
                    for (b, d) in std::mem::take(&mut dirty) {
                        file[b as usize] = d;
                    }
                    spilled.clear();
                }
                Op::Discard => {
                    h.discard();
                    dirty.clear();
                    spilled.clear();
                }
                Op::Invalidate(b, v) => {
                    file[b as usize] = vec![v; BS];
                    f.set_block(b, &file[b as usize]).unwrap();
                    h.invalidate(b);
                    dirty.remove(&b);
                    spilled.remove(&b);
                }
                Op::Remap => {
                    drop(m);
                    m = h.mmap(0, BLOCKS).unwrap();
                }
            }
            // Blocks stored outside a writeout are spills: each was dirty, and the file
            // got the model's copy.
            if !matches!(op, Op::Writeout) {
                for b in f.store_log()[stored_before..].to_vec() {
                    let d = dirty.remove(&b);
                    prop_assert!(d.is_some(), "block {} spilled but not dirty", b);
                    file[b as usize] = d.unwrap_or_default();
                    prop_assert_eq!(f.block(b), file[b as usize].clone());
                    spilled.insert(b);
                }
            }
            let want: Vec<u64> = dirty
                .keys()
                .chain(&spilled)
                .copied()
                .collect::<BTreeSet<u64>>()
                .into_iter()
                .collect();
            prop_assert_eq!(h.dirty_blocks(), want);
            let s = vm.stats();
            prop_assert_eq!(s.dirty, dirty.len() as u64 * BS as u64);
            prop_assert_eq!(s.spilled, spilled.len() as u64 * BS as u64);
            prop_assert!(s.ram_used <= BUDGET * BS as u64);
        }
        for b in 0..BLOCKS {
            prop_assert_eq!(f.block(b), file[b as usize].clone(), "stored block {}", b);
        }
    }
}
