//! `record!` defines #[repr(C)] Pod structs whose descriptors list their fields with the real offsets; nested records work; different records never match.

use wdb::array::{element_dtype, DType, Element, Field, Scalar};

wdb::record! {
    /// A point.
    #[derive(Clone, Copy, Debug, PartialEq, Default)]
    pub struct Point { pub x: f64, pub y: f64 }
}

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Sample {
        pub t: i64,
        /// Nested record.
        pub at: Point,
        pub id: u32,
        pub flags: u16,
        pub kind: u8,
        pub spare: i8,
    }
}

wdb::array::record! {
    #[derive(Clone, Copy)]
    struct Other { a: f64, b: f64 }
}

#[test]
fn fields_and_offsets() {
    let d = Point::dtype();
    assert_eq!(
        d,
        DType::Record {
            size: 16,
            fields: vec![
                Field::new("x", 0, DType::Scalar(Scalar::F64)),
                Field::new("y", 8, DType::Scalar(Scalar::F64))
            ]
        }
    );
    let s = element_dtype::<Sample>().unwrap();
    assert_eq!(s.size(), std::mem::size_of::<Sample>());
    assert_eq!(
        s.to_string(),
        "{t: i64, at: {x: f64, y: f64}, id: u32, flags: u16, kind: u8, spare: i8}"
    );
    let DType::Record { fields, .. } = &s else {
        panic!()
    };
    let offsets: Vec<usize> = fields.iter().map(|f| f.offset).collect();
    assert_eq!(offsets, [0, 8, 24, 28, 30, 31]);
    assert_eq!(DType::decode(&s.encode().unwrap()).unwrap(), s);
    assert_eq!(DType::from_descr(&s.to_descr().unwrap()).unwrap(), s);
}

#[test]
fn records_are_pod() {
    let p = Point { x: 1.5, y: -2.0 };
    let bytes = bytemuck::bytes_of(&p);
    assert_eq!(bytes.len(), 16);
    assert_eq!(bytemuck::pod_read_unaligned::<Point>(bytes), p);
    let z: Sample = bytemuck::Zeroable::zeroed();
    assert_eq!(z.at, Point::default());
}

#[test]
fn same_layout_different_names_mismatch() {
    assert_eq!(Other::dtype().size(), Point::dtype().size());
    assert!(Point::dtype().check::<Other>("pts").is_err());
    assert!(Point::dtype().check::<Point>("pts").is_ok());
}
