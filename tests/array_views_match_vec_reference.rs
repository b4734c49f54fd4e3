//! Views of any range of rows, 1-D to 4-D, C and F order, equal a reference computed on a plain Vec — including ranges and elements that straddle block boundaries.

use ndarray::{ArrayD, Axis, IxDyn, ShapeBuilder};
use proptest::prelude::*;
use wdb::array::view::{view, view_mut};
use wdb::array::{Element, Layout, Order};

wdb::record! {
    /// 12 bytes: never divides a 4 KiB block, so some elements straddle block boundaries.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Triple { a: u32, b: u32, c: u32 }
}

/// Flat index (storage order) of a multi-index of the full array.
fn flat_index(shape: &[u64], order: Order, idx: &[usize]) -> usize {
    let layout = Layout::new(shape, order, 1).unwrap();
    layout
        .strides()
        .iter()
        .zip(idx)
        .map(|(&s, &i)| s as usize * i)
        .sum()
}

/// Check every element of the view of `rows` against the Vec, and against ndarray's own
/// slicing of an owned array built from the same Vec.
fn check<T: Element + PartialEq + std::fmt::Debug>(
    data: &[T],
    shape: &[u64],
    order: Order,
    rows: std::ops::Range<u64>,
) {
    let layout = Layout::new(shape, order, std::mem::size_of::<T>()).unwrap();
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let v = view::<T>(bytes, &layout, rows.clone()).unwrap();
    let major = layout.major_axis();
    assert_eq!(v.shape()[major] as u64, rows.end - rows.start);
    for (idx, x) in v.indexed_iter() {
        let mut full: Vec<usize> = (0..shape.len()).map(|i| idx[i]).collect();
        full[major] += rows.start as usize;
        assert_eq!(
            *x,
            data[flat_index(shape, order, &full)],
            "shape {shape:?} {order:?} rows {rows:?} idx {full:?}"
        );
    }
    let ushape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let owned = match order {
        Order::C => ArrayD::from_shape_vec(IxDyn(&ushape), data.to_vec()).unwrap(),
        Order::F => ArrayD::from_shape_vec(IxDyn(&ushape).f(), data.to_vec()).unwrap(),
    };
    let expect = owned.slice_axis(Axis(major), (rows.start as usize..rows.end as usize).into());
    assert_eq!(v, expect);
}

fn shapes() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..6, 1..=4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn u32_views_match(shape in shapes(), f in any::<bool>(), a in 0u64..8, b in 0u64..8) {
        let order = if f { Order::F } else { Order::C };
        let layout = Layout::new(&shape, order, 4).unwrap();
        let len = layout.len();
        let (s, e) = (a.min(b).min(len), a.max(b).min(len));
        let data: Vec<u32> = (0..layout.num_elems() as u32).collect();
        check(&data, &shape, order, s..e);
    }

    #[test]
    fn f64_views_match(shape in shapes(), f in any::<bool>(), a in 0u64..8, b in 0u64..8) {
        let order = if f { Order::F } else { Order::C };
        let layout = Layout::new(&shape, order, 8).unwrap();
        let len = layout.len();
        let (s, e) = (a.min(b).min(len), a.max(b).min(len));
        let data: Vec<f64> = (0..layout.num_elems()).map(|i| i as f64 * 0.5).collect();
        check(&data, &shape, order, s..e);
    }
}

#[test]
fn every_range_of_small_arrays_in_both_orders() {
    for shape in [
        vec![7u64],
        vec![3, 4],
        vec![4, 3, 2],
        vec![2, 3, 2, 3],
        vec![1, 1, 1, 5],
    ] {
        for order in [Order::C, Order::F] {
            let layout = Layout::new(&shape, order, 2).unwrap();
            let data: Vec<i16> = (0..layout.num_elems() as i16).map(|i| i * 3 - 7).collect();
            for s in 0..=layout.len() {
                for e in s..=layout.len() {
                    check(&data, &shape, order, s..e);
                }
            }
        }
    }
}

#[test]
fn records_straddling_4k_blocks() {
    // 1000 rows of 3 Triples (36 bytes): many rows and elements cross 4096-byte lines.
    let shape = [1000u64, 3];
    for order in [Order::C, Order::F] {
        let shape: Vec<u64> = if order == Order::C {
            shape.to_vec()
        } else {
            vec![3, 1000]
        };
        let layout = Layout::new(&shape, order, 12).unwrap();
        let data: Vec<Triple> = (0..layout.num_elems() as u32)
            .map(|i| Triple {
                a: i,
                b: !i,
                c: i.wrapping_mul(2_654_435_761),
            })
            .collect();
        let mut straddling = 0;
        for (s, e) in [
            (0u64, 1000u64),
            (113, 114),
            (113, 115),
            (340, 342),
            (500, 911),
            (999, 1000),
            (1000, 1000),
        ] {
            let blocks = layout.block_range(&(s..e), 4096).unwrap();
            let bytes = layout.byte_range(&(s..e)).unwrap();
            if bytes.start / 4096 != bytes.end.saturating_sub(1) / 4096 {
                straddling += 1;
            }
            assert!(
                blocks.start <= bytes.start / 4096
                    && (e == s || blocks.end == bytes.end.div_ceil(4096))
            );
            check(&data, &shape, order, s..e);
        }
        assert!(
            straddling >= 3,
            "the ranges above must straddle block boundaries"
        );
        // Row 113 (C: bytes 4068..4104) holds the Triple at 4092..4104 that straddles 4096.
        let row113 = layout.byte_range(&(113..114)).unwrap();
        assert!(row113.start < 4096 && row113.end > 4096);
    }
}

#[test]
fn view_mut_writes_land_at_the_reference_positions() {
    for order in [Order::C, Order::F] {
        let shape = [5u64, 4, 3];
        let layout = Layout::new(&shape, order, 8).unwrap();
        let mut data = vec![0f64; layout.num_elems() as usize];
        {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
            let mut v = view_mut::<f64>(bytes, &layout, 1..3).unwrap();
            for (idx, x) in v.indexed_iter_mut() {
                *x = (idx[0] * 100 + idx[1] * 10 + idx[2]) as f64 + 1.0;
            }
        }
        let major = layout.major_axis();
        for (i, &x) in data.iter().enumerate() {
            // Decode i into a multi-index by the strides.
            let strides = layout.strides();
            let mut rem = i as u64;
            let mut idx = vec![0u64; 3];
            let mut axes: Vec<usize> = (0..3).collect();
            axes.sort_by_key(|&a| std::cmp::Reverse(strides[a]));
            for a in axes {
                idx[a] = rem / strides[a];
                rem %= strides[a];
            }
            let inside = (1..3).contains(&idx[major]);
            if inside {
                let mut local = idx.clone();
                local[major] -= 1;
                let want = (local[0] * 100 + local[1] * 10 + local[2]) as f64 + 1.0;
                assert_eq!(x, want, "{order:?} {idx:?}");
            } else {
                assert_eq!(
                    x, 0.0,
                    "{order:?} {idx:?} is outside the view and must be untouched"
                );
            }
        }
    }
}

#[test]
fn region_longer_than_the_array_is_fine_and_shorter_is_an_error() {
    let layout = Layout::new(&[4, 2], Order::C, 4).unwrap();
    let data = vec![7u32; 100];
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    assert_eq!(view::<u32>(bytes, &layout, 0..4).unwrap().len(), 8);
    let short = &bytes[..28];
    assert!(matches!(
        view::<u32>(short, &layout, 0..4),
        Err(wdb::Error::OutOfRange(_))
    ));
    assert_eq!(view::<u32>(short, &layout, 0..3).unwrap().len(), 6);
}

#[test]
fn misaligned_region_and_wrong_element_size_are_errors() {
    let layout = Layout::new(&[4], Order::C, 8).unwrap();
    let data = vec![0u64; 8];
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    assert!(matches!(
        view::<u64>(&bytes[1..], &layout, 0..4),
        Err(wdb::Error::InvalidArgument(_))
    ));
    assert!(matches!(
        view::<u32>(bytes, &layout, 0..4),
        Err(wdb::Error::InvalidArgument(_))
    ));
    assert!(matches!(
        view::<u64>(bytes, &layout, 3..5),
        Err(wdb::Error::OutOfRange(_))
    ));
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 3..2;
    assert!(matches!(
        view::<u64>(bytes, &layout, reversed),
        Err(wdb::Error::OutOfRange(_))
    ));
}

#[test]
fn raw_views_over_a_pointer_match_slice_views() {
    for order in [Order::C, Order::F] {
        let shape = [6u64, 5];
        let shape: Vec<u64> = if order == Order::C {
            shape.to_vec()
        } else {
            vec![5, 6]
        };
        let layout = Layout::new(&shape, order, 4).unwrap();
        let mut data: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let len = data.len() * 4;
        let base = data.as_mut_ptr().cast::<u8>();
        {
            // SAFETY: `data` outlives the view, is not otherwise accessed while it lives.
            let v = unsafe { wdb::array::view::view_raw::<f32>(base, len, &layout, 2..5) }.unwrap();
            let reference: Vec<f32> = (0..30).map(|i| i as f32).collect();
            let expect = view::<f32>(bytemuck::cast_slice(&reference), &layout, 2..5).unwrap();
            assert_eq!(v, expect);
        }
        {
            // SAFETY: as above; no other view is alive.
            let mut v =
                unsafe { wdb::array::view::view_raw_mut::<f32>(base, len, &layout, 5..6) }.unwrap();
            v.fill(-1.0);
        }
        let n = data.iter().filter(|&&x| x == -1.0).count();
        assert_eq!(n, 5);
        // SAFETY: the range check fails before any pointer is formed.
        let e = unsafe { wdb::array::view::view_raw::<f32>(base, len, &layout, 5..7) };
        assert!(matches!(e, Err(wdb::Error::OutOfRange(_))));
        // SAFETY: null is rejected before use.
        let e = unsafe { wdb::array::view::view_raw::<f32>(std::ptr::null(), len, &layout, 0..1) };
        assert!(e.is_err());
    }
}

#[test]
fn record_elements_have_their_fields_in_views() {
    let layout = Layout::new(&[3], Order::C, 12).unwrap();
    let data = [
        Triple { a: 1, b: 2, c: 3 },
        Triple { a: 4, b: 5, c: 6 },
        Triple { a: 7, b: 8, c: 9 },
    ];
    let v = view::<Triple>(bytemuck::cast_slice(&data), &layout, 1..3).unwrap();
    assert_eq!(v[[0]].b, 5);
    assert_eq!(v[[1]].c, 9);
    assert_eq!(Triple::dtype().size(), 12);
}
