//! Shape arithmetic: major axis, rows, bytes and blocks in C and F order; bad shapes, overflowing sizes and out-of-range rows are clear errors, never panics.

use proptest::prelude::*;
use wdb::array::layout::{blocks_of, MAX_BYTES, MAX_DIMS};
use wdb::array::{Layout, Order};
use wdb::Error;

#[test]
fn major_axis_rows_and_strides() {
    let c = Layout::new(&[10, 3, 4], Order::C, 8).unwrap();
    assert_eq!(
        (c.major_axis(), c.len(), c.row_elems(), c.row_bytes()),
        (0, 10, 12, 96)
    );
    assert_eq!(c.strides(), vec![12, 4, 1]);
    assert_eq!((c.num_elems(), c.byte_size()), (120, 960));
    let f = Layout::new(&[3, 4, 10], Order::F, 8).unwrap();
    assert_eq!(
        (f.major_axis(), f.len(), f.row_elems(), f.row_bytes()),
        (2, 10, 12, 96)
    );
    assert_eq!(f.strides(), vec![1, 3, 12]);
    let one = Layout::new(&[5], Order::F, 2).unwrap();
    assert_eq!(
        (one.major_axis(), one.row_elems(), one.strides()),
        (0, 1, vec![1])
    );
    assert_eq!(f.view_shape(&(2..5)), vec![3, 4, 3]);
    assert_eq!(c.with_len(7).unwrap().shape(), &[7, 3, 4]);
    assert_eq!(f.with_len(7).unwrap().shape(), &[3, 4, 7]);
}

#[test]
fn rows_bytes_blocks() {
    let l = Layout::new(&[1000, 3], Order::C, 4).unwrap(); // 12-byte rows
    assert_eq!(l.rows(..).unwrap(), 0..1000);
    assert_eq!(l.rows(5..=9).unwrap(), 5..10);
    assert_eq!(l.rows(..0).unwrap(), 0..0);
    assert_eq!(l.byte_range(&(10..20)).unwrap(), 120..240);
    assert_eq!(l.block_range(&(0..1000), 4096).unwrap(), 0..3);
    assert_eq!(l.block_range(&(341..342), 4096).unwrap(), 0..2); // 4092..4104 straddles
    assert_eq!(l.block_range(&(342..342), 4096).unwrap(), 1..1);
    assert_eq!(blocks_of(&(4096..8192), 4096).unwrap(), 1..2);
    assert!(matches!(
        blocks_of(&(0..1), 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn out_of_range_rows() {
    let l = Layout::new(&[10, 2], Order::C, 8).unwrap();
    for r in [
        l.rows(5..11),
        l.rows(11..),
        l.rows(..=10),
        l.rows(..=u64::MAX),
        l.rows(u64::MAX..),
    ] {
        assert!(matches!(r, Err(Error::OutOfRange(_))), "{r:?}");
    }
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 6..5;
    assert!(matches!(
        l.rows(reversed.clone()),
        Err(Error::OutOfRange(_))
    ));
    assert!(matches!(l.byte_range(&reversed), Err(Error::OutOfRange(_))));
    assert!(matches!(l.byte_range(&(0..11)), Err(Error::OutOfRange(_))));
    let excl = (
        std::ops::Bound::Excluded(u64::MAX),
        std::ops::Bound::Unbounded,
    );
    assert!(matches!(l.rows(excl), Err(Error::OutOfRange(_))));
}

#[test]
fn bad_shapes() {
    assert!(matches!(
        Layout::new(&[], Order::C, 8),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Layout::new(&vec![1; MAX_DIMS + 1], Order::C, 8),
        Err(Error::InvalidArgument(_))
    ));
    assert!(Layout::new(&vec![1; MAX_DIMS], Order::C, 8).is_ok());
    assert!(matches!(
        Layout::new(&[4], Order::C, 0),
        Err(Error::InvalidArgument(_))
    ));
    // Overflow of the element count, of the byte size, and sizes past the address space.
    assert!(matches!(
        Layout::new(&[u64::MAX, 2], Order::C, 1),
        Err(Error::OutOfRange(_))
    ));
    assert!(matches!(
        Layout::new(&[u64::MAX / 4, 1], Order::C, 8),
        Err(Error::OutOfRange(_))
    ));
    assert!(matches!(
        Layout::new(&[MAX_BYTES / 8 + 1], Order::C, 8),
        Err(Error::OutOfRange(_))
    ));
    assert!(Layout::new(&[MAX_BYTES / 8], Order::C, 8).is_ok());
    // 1 TiB of f64 is a fine shape: a layout costs nothing.
    let tib = Layout::new(&[1 << 37], Order::C, 8).unwrap();
    assert_eq!(tib.byte_size(), 1 << 40);
    assert!(matches!(tib.with_len(u64::MAX), Err(Error::OutOfRange(_))));
}

#[test]
fn zero_sized_axes() {
    // A zero on a minor axis: rows of no bytes; a huge major axis is still bounded.
    let l = Layout::new(&[5, 0], Order::C, 8).unwrap();
    assert_eq!(
        (l.len(), l.row_elems(), l.row_bytes(), l.byte_size()),
        (5, 0, 0, 0)
    );
    assert_eq!(l.byte_range(&(1..4)).unwrap(), 0..0);
    let empty = Layout::new(&[0, 3], Order::C, 8).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.rows(..).unwrap(), 0..0);
    // [0, huge] has no elements, but the non-zero axes must still fit the address space.
    assert!(matches!(
        Layout::new(&[0, u64::MAX], Order::C, 8),
        Err(Error::OutOfRange(_))
    ));
    assert!(Layout::new(&[0, 1 << 40], Order::C, 8).is_ok());
}

proptest! {
    #[test]
    fn never_panics(shape in prop::collection::vec(any::<u64>(), 0..6), f in any::<bool>(),
                    elem in 0usize..40, a in any::<u64>(), b in any::<u64>(), bs in 0usize..10_000) {
        let order = if f { Order::F } else { Order::C };
        if let Ok(l) = Layout::new(&shape, order, elem) {
            prop_assert!(l.byte_size() <= MAX_BYTES);
            let _ = l.strides();
            let _ = l.rows(a..b);
            if let Ok(r) = l.rows(a.min(b)..a.max(b)) {
                let bytes = l.byte_range(&r).unwrap();
                prop_assert!(bytes.end <= l.byte_size());
                let _ = l.block_range(&r, bs);
            }
            let _ = l.with_len(a);
        }
    }
}
