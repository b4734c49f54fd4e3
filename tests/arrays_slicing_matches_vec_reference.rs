//! Through the public API (Db, Transaction, Snapshot): views of any range of rows of 1-D to 4-D arrays, C and F order, with 64 KiB blocks, equal a reference computed on a plain Vec — after commit and reopen, for ranges and elements that straddle block boundaries, for writes through view_mut, and out-of-range rows are errors.

use ndarray::Dimension;
use wdb::array::Element;
use wdb::{ArrayOptions, Db, Error, Options, Order};

wdb::record! {
    /// 12 bytes: never divides a 64 KiB block, so some elements straddle two blocks.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Triple { a: u32, b: u32, c: u32 }
}

const BLOCK: u32 = 64 << 10;

/// Storage-order flat index of a multi-index.
fn flat(shape: &[u64], order: Order, idx: &[usize]) -> usize {
    let n = shape.len();
    let mut f = 0usize;
    let mut stride = 1usize;
    let axes: Vec<usize> = match order {
        Order::C => (0..n).rev().collect(),
        Order::F => (0..n).collect(),
    };
    for ax in axes {
        f += idx[ax] * stride;
        stride *= shape[ax] as usize;
    }
    f
}

fn major(shape: &[u64], order: Order) -> usize {
    match order {
        Order::C => 0,
        Order::F => shape.len() - 1,
    }
}

/// Ranges to check: whole, empty, first and last row, and the rows around each 64 KiB
/// boundary.
fn ranges(shape: &[u64], order: Order, elem: usize) -> Vec<(u64, u64)> {
    let len = shape[major(shape, order)];
    let row_bytes = shape.iter().product::<u64>() / len * elem as u64;
    let total = row_bytes * len;
    let mut v = vec![(0, len), (0, 0), (0, 1), (len - 1, len), (len / 3, len / 2)];
    let mut b = u64::from(BLOCK);
    while b < total {
        let r = b / row_bytes;
        v.push((r.saturating_sub(1), (r + 2).min(len)));
        v.push((r, (r + 1).min(len)));
        b += u64::from(BLOCK);
    }
    v
}

/// Store `data` as an array of `shape`/`order`, reopen, and compare every range's view
/// with the Vec.
fn check<T: Element + PartialEq + std::fmt::Debug>(
    shape: &[u64],
    order: Order,
    data: &[T],
    patch: impl Fn(usize) -> T,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.wdb");
    let opts = ArrayOptions::default().order(order).block_size(BLOCK);
    {
        let db = Db::open_with(&path, Options::default().ram_budget(8 << 20)).unwrap();
        let tx = db.begin().unwrap();
        let mut a = tx.create_array_with::<T>("A", shape, opts).unwrap();
        a.write_from(.., data).unwrap();
        drop(a);
        tx.commit().unwrap();
    }
    let db = Db::open_with(&path, Options::default().ram_budget(8 << 20)).unwrap();
    let m = major(shape, order);
    let len = shape[m];
    let elem = std::mem::size_of::<T>();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<T>("A").unwrap();
    assert_eq!(a.shape(), shape);
    assert_eq!(a.len(), len);
    assert_eq!(a.order(), order);
    for (lo, hi) in ranges(shape, order, elem) {
        let v = a.view(lo..hi).unwrap();
        let mut want_shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        want_shape[m] = (hi - lo) as usize;
        assert_eq!(v.shape(), &want_shape[..], "{shape:?} {order:?} {lo}..{hi}");
        for (idx, x) in v.indexed_iter() {
            let mut full: Vec<usize> = idx.slice().to_vec();
            full[m] += lo as usize;
            assert_eq!(
                *x,
                data[flat(shape, order, &full)],
                "{shape:?} {order:?} rows {lo}..{hi} at {full:?}"
            );
        }
        // Copies agree with views.
        let copy = a.to_vec(lo..hi).unwrap();
        let row = data.len() / len as usize;
        assert_eq!(&copy[..], &data[lo as usize * row..hi as usize * row]);
    }
    assert!(matches!(a.view(0..len + 1), Err(Error::OutOfRange(_))));
    assert!(matches!(a.view(len + 1..), Err(Error::OutOfRange(_))));
    drop(a);
    drop(snap);

    // Writes through view_mut on a range across a block boundary land where the Vec
    // reference says, and nowhere else.
    let (lo, hi) = *ranges(shape, order, elem).last().unwrap();
    let mut want = data.to_vec();
    let tx = db.begin().unwrap();
    let mut a = tx.array_mut::<T>("A").unwrap();
    let mut v = a.view_mut(lo..hi).unwrap();
    let vshape: Vec<usize> = v.shape().to_vec();
    for (n, (idx, x)) in v.indexed_iter_mut().enumerate() {
        let mut full: Vec<usize> = idx.slice().to_vec();
        full[m] += lo as usize;
        *x = patch(n);
        want[flat(shape, order, &full)] = patch(n);
    }
    assert_eq!(vshape.len(), shape.len());
    drop(a);
    tx.commit().unwrap();
    let got = db
        .snapshot()
        .unwrap()
        .array::<T>("A")
        .unwrap()
        .to_vec(..)
        .unwrap();
    assert!(got == want, "{shape:?} {order:?}: view_mut wrote elsewhere");
}

fn f64_data(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 * 0.5 + 1.0).collect()
}

#[test]
fn one_to_four_dimensions_c_and_f_order_f64() {
    let shapes: [&[u64]; 4] = [&[20_000], &[3000, 7], &[150, 11, 13], &[40, 5, 7, 11]];
    for shape in shapes {
        for order in [Order::C, Order::F] {
            // In F order the major axis is the last one: reverse so it stays long.
            let shape: Vec<u64> = match order {
                Order::C => shape.to_vec(),
                Order::F => shape.iter().rev().copied().collect(),
            };
            let n = shape.iter().product::<u64>() as usize;
            check::<f64>(&shape, order, &f64_data(n), |k| -(k as f64) - 1.0);
        }
    }
}

#[test]
fn records_straddle_block_boundaries_c_and_f_order() {
    for (shape, order) in [
        (vec![16_000u64], Order::C),
        (vec![2000, 3], Order::C),
        (vec![3, 2000], Order::F),
        (vec![3, 4, 500], Order::F),
    ] {
        let n = shape.iter().product::<u64>() as usize;
        let data: Vec<Triple> = (0..n as u32)
            .map(|i| Triple {
                a: i,
                b: !i,
                c: i.wrapping_mul(2654435761),
            })
            .collect();
        check::<Triple>(&shape, order, &data, |k| Triple {
            a: 7,
            b: k as u32,
            c: 9,
        });
    }
}

#[test]
fn small_integer_elements_in_many_blocks() {
    // 1-byte elements: many rows per block, rows never straddle.
    let shape = [300u64, 1000];
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    check::<u8>(&shape, Order::C, &data, |k| (k % 7) as u8 + 1);
    let shape = [1000u64, 300];
    check::<u8>(&shape, Order::F, &data, |k| (k % 5) as u8 + 100);
}
