//! Helpers shared by the array test binaries that run on virtmem and MemFile.
#![allow(dead_code)]

use std::sync::Arc;

use wdb::array::{element_dtype, ArrayCore, Element, Layout, Order};
use wdb::bigfile::MemFile;
use wdb::virtmem::VirtMem;

/// 4 KiB blocks (the smallest virtmem allows): many block boundaries in small arrays.
pub const BS: usize = 4096;

/// A VirtMem with a budget of `budget_blocks` blocks and an empty MemFile.
pub fn setup(budget_blocks: u64) -> (Arc<VirtMem>, Arc<MemFile>) {
    let vm = VirtMem::new(budget_blocks * BS as u64).unwrap();
    (vm, Arc::new(MemFile::new("A", BS)))
}

/// Open an array of `T` with `shape` and `order` on `file`.
pub fn open<T: Element>(
    vm: &Arc<VirtMem>,
    file: &Arc<MemFile>,
    shape: &[u64],
    order: Order,
) -> ArrayCore<T> {
    ArrayCore::<T>::open(
        vm,
        file.clone(),
        &element_dtype::<T>().unwrap(),
        shape,
        order,
    )
    .unwrap()
}

/// The file's bytes `[0, n)`, block by block.
pub fn file_bytes(file: &MemFile, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = 0;
    while out.len() < n {
        out.extend_from_slice(&file.block(b));
        b += 1;
    }
    out.truncate(n);
    out
}

/// Flat (storage-order) index of a multi-index.
pub fn flat(layout: &Layout, idx: &[usize]) -> usize {
    layout
        .strides()
        .iter()
        .zip(idx)
        .map(|(&s, &i)| s as usize * i)
        .sum()
}
