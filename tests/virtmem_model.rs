//! Proves the single-threaded semantics against a plain in-memory model: random
//! sequences of reads, writes, writeouts, discards, invalidations (with the file
//! changed underneath) and remaps, under a budget of 3 blocks, agree with the model on
//! every byte read, on the dirty set, on the stored file, and on the RAM accounting.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use wdb::bigfile::MemFile;
use wdb::virtmem::{Mapping, VirtMem};
use wdb::Error;

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
        for op in ops {
            match op {
                Op::Read(b, o) => {
                    let off = b as usize * BS + o;
                    match m.load(off, 1, false) {
                        Ok(()) => {
                            let want = dirty.get(&b).map_or(file[b as usize][o], |d| d[o]);
                            prop_assert_eq!(rd(&m, off), want);
                        }
                        Err(Error::RamExhausted { .. }) => {
                            prop_assert!(dirty.len() as u64 >= BUDGET && !dirty.contains_key(&b));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::Write(b, o, v) => {
                    let off = b as usize * BS + o;
                    match m.load(off, 1, true) {
                        Ok(()) => {
                            wr(&m, off, v);
                            dirty.entry(b).or_insert_with(|| file[b as usize].clone())[o] = v;
                        }
                        Err(Error::RamExhausted { .. }) => {
                            prop_assert!(dirty.len() as u64 >= BUDGET && !dirty.contains_key(&b));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::Writeout => {
                    let before = f.store_log().len();
                    h.writeout().unwrap();
                    let stored: Vec<u64> = f.store_log()[before..].to_vec();
                    let want: Vec<u64> = dirty.keys().copied().collect();
                    prop_assert_eq!(stored, want);
                    for (b, d) in std::mem::take(&mut dirty) {
                        file[b as usize] = d;
                    }
                }
                Op::Discard => {
                    h.discard();
                    dirty.clear();
                }
                Op::Invalidate(b, v) => {
                    file[b as usize] = vec![v; BS];
                    f.set_block(b, &file[b as usize]).unwrap();
                    h.invalidate(b);
                    dirty.remove(&b);
                }
                Op::Remap => {
                    drop(m);
                    m = h.mmap(0, BLOCKS).unwrap();
                }
            }
            let want: Vec<u64> = dirty.keys().copied().collect();
            prop_assert_eq!(h.dirty_blocks(), want);
            let s = vm.stats();
            prop_assert_eq!(s.dirty, dirty.len() as u64 * BS as u64);
            prop_assert!(s.ram_used <= BUDGET * BS as u64);
        }
        for b in 0..BLOCKS {
            prop_assert_eq!(f.block(b), file[b as usize].clone(), "stored block {}", b);
        }
    }
}
