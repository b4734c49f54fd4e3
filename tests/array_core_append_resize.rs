//! Append touches only the blocks it writes; resize is O(1) to grow; after a shrink, growing again reads zeros (dirty, stored and pre-existing data alike), and the blocks cut off are reported as holes.

mod array_util;

use array_util::{open, setup, BS};
use wdb::array::{Order, MIN_RESERVE_BLKS};
use wdb::Error;

#[test]
fn append_writes_only_the_new_blocks() {
    let (vm, file) = setup(64);
    let mut a = open::<f64>(&vm, &file, &[0, 4], Order::C); // 32-byte rows
    let rows: Vec<f64> = (0..4 * 1000).map(|i| i as f64).collect();
    a.append(&rows).unwrap();
    assert_eq!(a.shape(), &[1000, 4]);
    assert_eq!(
        a.view(..).unwrap().iter().copied().collect::<Vec<f64>>(),
        rows
    );
    a.writeout().unwrap();
    assert!(a.dirty_blocks().is_empty());
    let loads = file.loads();
    // Append 10 rows (320 bytes) at byte 32000: blocks 7 (partial) only.
    let more: Vec<f64> = (0..40).map(|i| -(i as f64)).collect();
    a.append(&more).unwrap();
    assert_eq!(a.dirty_blocks(), vec![7]);
    assert!(
        file.loads() - loads <= 1,
        "only the partial last block may be loaded"
    );
    assert_eq!(
        a.view(1000..)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f64>>(),
        more
    );
    assert_eq!(
        a.view(999..1000)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f64>>(),
        rows[3996..].to_vec()
    );
    // A big append: only the blocks it covers are dirty.
    let big = vec![1.5f64; 4 * 2048]; // 64 KiB = 16 blocks, from byte 32320
    a.append(&big).unwrap();
    let d = a.dirty_blocks();
    assert_eq!(d.first(), Some(&7));
    assert_eq!(d.last(), Some(&((32320 + 65536 - 1) / BS as u64)));
    assert_eq!(a.len(), 1000 + 10 + 2048);
}

#[test]
fn append_grows_the_reservation_and_keeps_data() {
    let (vm, file) = setup(1024);
    let mut a = open::<u32>(&vm, &file, &[0], Order::C);
    let r0 = a.reserved_bytes();
    assert_eq!(r0, MIN_RESERVE_BLKS as usize * BS);
    let mut model = Vec::new();
    for k in 0..40u32 {
        let chunk: Vec<u32> = (0..777).map(|i| k * 1000 + i).collect();
        a.append(&chunk).unwrap();
        model.extend_from_slice(&chunk);
    }
    assert!(a.reserved_bytes() > r0);
    assert!(a.reserved_bytes().is_power_of_two());
    assert_eq!(a.view(..).unwrap().as_slice().unwrap(), &model[..]);
}

#[test]
fn append_in_f_order_appends_columns() {
    let (vm, file) = setup(64);
    let mut a = open::<i32>(&vm, &file, &[3, 0], Order::F);
    a.append(&[1, 2, 3, 4, 5, 6]).unwrap(); // two columns
    assert_eq!(a.shape(), &[3, 2]);
    let v = a.view(..).unwrap();
    assert_eq!(v[[0, 1]], 4);
    assert_eq!(v[[2, 0]], 3);
    assert!(matches!(a.append(&[1, 2]), Err(Error::InvalidArgument(_))));
    assert_eq!(a.shape(), &[3, 2]);
}

#[test]
fn append_rejects_partial_rows_and_zero_width_rows() {
    let (vm, file) = setup(16);
    let mut a = open::<u8>(&vm, &file, &[0, 3], Order::C);
    assert!(matches!(a.append(&[1, 2]), Err(Error::InvalidArgument(_))));
    a.append(&[]).unwrap();
    let mut z = open::<u8>(&vm, &file, &[4, 0], Order::C);
    assert!(matches!(z.append(&[1]), Err(Error::InvalidArgument(_))));
    z.append(&[]).unwrap();
    assert_eq!(z.shape(), &[4, 0]);
}

#[test]
fn grow_is_o1() {
    let (vm, file) = setup(16);
    let mut a = open::<f64>(&vm, &file, &[10], Order::C);
    a.resize(&[5_000_000_000]).unwrap();
    assert_eq!(a.len(), 5_000_000_000);
    assert!(a.dirty_blocks().is_empty());
    assert_eq!(file.loads(), 0);
    assert_eq!(a.view(4_999_999_990..).unwrap().sum(), 0.0);
    // Shrinking the 40 GB array back touches no data either (only dirty blocks and
    // the partial last block are visited).
    a.view_mut(0..10).unwrap().fill(2.0);
    a.resize(&[5]).unwrap();
    assert_eq!(a.dirty_blocks(), vec![0]);
    assert_eq!(a.holes_from(), Some(1));
    a.resize(&[5_000_000_000]).unwrap();
    assert_eq!(a.view(..10).unwrap().sum(), 10.0);
    assert_eq!(a.view(4_999_999_990..).unwrap().sum(), 0.0);
    // Re-exposing ~10M cut-off blocks: instead of invalidating each, the core stored
    // its one dirty block and started a fresh handle, which reloads block 0 once.
    assert_eq!(file.stores(), 1);
    assert!(
        file.loads() <= 2,
        "only block 0, which holds data, is ever loaded"
    );
    assert!(matches!(a.resize(&[10, 2]), Err(Error::InvalidArgument(_))));
    assert!(matches!(a.resize(&[u64::MAX]), Err(Error::OutOfRange(_))));
    assert_eq!(a.len(), 5_000_000_000);
}

#[test]
fn shrink_then_grow_reads_zeros() {
    for stored in [false, true] {
        let (vm, file) = setup(64);
        let mut a = open::<u64>(&vm, &file, &[0, 3], Order::C); // 24-byte rows
        let n = 2000u64; // 48000 bytes: blocks 0..12
        let data: Vec<u64> = (1..=3 * n).collect();
        a.append(&data).unwrap();
        if stored {
            a.writeout().unwrap();
        }
        // Shrink into the middle of block 2 (row 400 ends at byte 9600).
        a.resize(&[400, 3]).unwrap();
        assert_eq!(a.holes_from(), Some(3));
        assert!(
            a.dirty_blocks().iter().all(|&b| b <= 2),
            "{:?}",
            a.dirty_blocks()
        );
        a.resize(&[n, 3]).unwrap();
        let v = a.view(..).unwrap();
        for (i, x) in v.iter().enumerate() {
            let want = if i < 1200 { data[i] } else { 0 };
            assert_eq!(*x, want, "stored={stored} element {i}");
        }
        // What a commit would write: the surviving prefix and zeros; blocks >= 3 are holes.
        a.writeout().unwrap();
        let b2 = file.block(2);
        assert!(b2[9600 - 2 * BS..].iter().all(|&b| b == 0));
        drop(v);
        // Shrink again lower: holes_from only goes down.
        a.resize(&[10, 3]).unwrap();
        assert_eq!(a.holes_from(), Some(1));
        a.resize(&[100, 3]).unwrap();
        assert_eq!(a.holes_from(), Some(1));
        assert!(a.view(10..).unwrap().iter().all(|&x| x == 0));
    }
}

#[test]
fn shrink_to_zero_and_regrow_then_write_again() {
    let (vm, file) = setup(64);
    let mut a = open::<u32>(&vm, &file, &[10_000], Order::C);
    a.view_mut(..).unwrap().fill(7);
    a.writeout().unwrap();
    a.resize(&[0]).unwrap();
    assert_eq!(a.holes_from(), Some(0));
    a.resize(&[10_000]).unwrap();
    assert_eq!(a.view(..).unwrap().sum(), 0);
    // New writes after the regrow survive writeout and reclaim (they load from the file
    // again, not as zeros).
    a.view_mut(5000..5001).unwrap().fill(3);
    a.writeout().unwrap();
    assert_eq!(a.view(5000..5001).unwrap()[[0]], 3);
    assert_eq!(a.view(..).unwrap().sum(), 3);
}

#[test]
fn bytes_past_the_end_in_the_file_never_show() {
    let (vm, file) = setup(16);
    // A stored array of 100 u64 (800 bytes) whose file has garbage past the end.
    file.set_block(0, &[0u8; 800]).unwrap();
    file.set_block(1, &[0xAB; BS]).unwrap();
    file.set_block(5, &[0xCD; BS]).unwrap();
    let mut a = open::<u64>(&vm, &file, &[100], Order::C);
    a.resize(&[4000]).unwrap();
    assert_eq!(a.view(..).unwrap().sum(), 0);
}

#[test]
fn failed_append_leaves_the_array_unchanged() {
    // A budget of 4 blocks: an append of 5 blocks spills one, and the file cannot
    // store it.
    let (vm, file) = setup(4);
    let mut a = open::<u64>(&vm, &file, &[100], Order::C); // 800 bytes: block 0
    a.view_mut(..).unwrap().fill(1);
    file.fail_store(0, Some("disk full (injected)"));
    let e = a.append(&vec![2u64; 2000]).unwrap_err(); // to byte 16800: blocks 0..=4
    assert!(e.to_string().contains("disk full (injected)"), "{e:?}");
    file.fail_store(0, None);
    assert_eq!(a.len(), 100);
    assert_eq!(a.view(..).unwrap().sum(), 100);
    assert_eq!(
        a.dirty_blocks(),
        vec![0],
        "blocks written past the end are dropped"
    );
    // The zero tail holds: growing shows zeros, not the half-appended data.
    a.resize(&[2100]).unwrap();
    assert_eq!(a.view(100..).unwrap().sum(), 0);
    assert_eq!(a.holes_from(), None);
    // Load errors are Err too, and leave the array usable.
    let mut b = open::<u64>(&vm, &file, &[100], Order::C);
    file.fail_load(0, Some("injected"));
    assert!(b.append(&[3u64; 10]).is_err());
    assert_eq!(b.len(), 100);
    file.fail_load(0, None);
    b.append(&[3u64; 10]).unwrap();
    assert_eq!(b.len(), 110);
}
