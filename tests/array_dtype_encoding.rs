//! Element-type descriptors: catalog bytes round-trip, hostile bytes never panic (Corruption), Display and NumPy descr both ways, and a wrong type is TypeMismatch.

use proptest::prelude::*;
use wdb::array::{element_dtype, DType, Element, Field, Scalar};
use wdb::Error;

fn point() -> DType {
    DType::record(
        16,
        vec![
            Field::new("x", 0, DType::Scalar(Scalar::F64)),
            Field::new("y", 8, DType::Scalar(Scalar::F64)),
        ],
    )
    .unwrap()
}

fn all_scalars() -> Vec<DType> {
    vec![
        i8::dtype(),
        i16::dtype(),
        i32::dtype(),
        i64::dtype(),
        i128::dtype(),
        u8::dtype(),
        u16::dtype(),
        u32::dtype(),
        u64::dtype(),
        u128::dtype(),
        f32::dtype(),
        f64::dtype(),
    ]
}

#[test]
fn scalar_names_sizes_and_roundtrip() {
    let names: Vec<String> = all_scalars().iter().map(|d| d.to_string()).collect();
    assert_eq!(
        names,
        ["i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "f32", "f64"]
    );
    for d in all_scalars() {
        assert_eq!(DType::decode(&d.encode().unwrap()).unwrap(), d);
    }
    assert_eq!(element_dtype::<u128>().unwrap().size(), 16);
    assert_eq!(element_dtype::<f32>().unwrap(), DType::Scalar(Scalar::F32));
}

#[test]
fn record_roundtrip_display_descr() {
    let nested = DType::record(
        32,
        vec![
            Field::new("p", 0, point()),
            Field::new("t", 16, DType::Scalar(Scalar::I64)),
            Field::new("k", 24, DType::Scalar(Scalar::I32)),
        ],
    )
    .unwrap();
    assert_eq!(nested.to_string(), "{p: {x: f64, y: f64}, t: i64, k: i32}");
    assert_eq!(DType::decode(&nested.encode().unwrap()).unwrap(), nested);
    let descr = nested.to_descr().unwrap();
    assert_eq!(
        descr,
        "[('p', [('x', '<f8'), ('y', '<f8')]), ('t', '<i8'), ('k', '<i4'), ('', '|V4')]"
    );
    assert_eq!(DType::from_descr(&descr).unwrap(), nested);
    assert_eq!(nested.align(), 8);
}

#[test]
fn scalar_descr_both_ways() {
    let cases = [
        (Scalar::I8, "'|i1'"),
        (Scalar::U8, "'|u1'"),
        (Scalar::I16, "'<i2'"),
        (Scalar::U16, "'<u2'"),
        (Scalar::I32, "'<i4'"),
        (Scalar::U32, "'<u4'"),
        (Scalar::I64, "'<i8'"),
        (Scalar::U64, "'<u8'"),
        (Scalar::F32, "'<f4'"),
        (Scalar::F64, "'<f8'"),
        (Scalar::Bool, "'|b1'"),
        (Scalar::F16, "'<f2'"),
        (Scalar::C64, "'<c8'"),
        (Scalar::C128, "'<c16'"),
    ];
    for (s, text) in cases {
        assert_eq!(DType::Scalar(s).to_descr().unwrap(), text);
        assert_eq!(DType::from_descr(text).unwrap(), DType::Scalar(s));
    }
    for text in ["'f8'", "'=f8'", "'<i1'", "'>u1'"] {
        assert!(DType::from_descr(text).is_ok(), "{text}");
    }
    assert!(matches!(
        DType::Scalar(Scalar::I128).to_descr(),
        Err(Error::InvalidArgument(_))
    ));
    for bad in [
        "'>f8'",
        "'>c16'",
        "'<c4'",
        "'|b2'",
        "'|O'",
        "'<U8'",
        "'|S2'",
        "'<M8[ns]'",
        "'<i16'",
        "''",
        "3",
        "[('x', '<f8', (2,))]",
        "[(('t', 'x'), '<f8')]",
        "[('x', '<f8'), ('x', '<f8')]",
        "[]",
        "[('', '<f8')]",
    ] {
        assert!(DType::from_descr(bad).is_err(), "{bad} must be refused");
    }
}

#[test]
fn invalid_records_are_refused() {
    let f64d = DType::Scalar(Scalar::F64);
    let cases = vec![
        (8, vec![]),
        (0, vec![Field::new("x", 0, f64d.clone())]),
        (8, vec![Field::new("x", 1, f64d.clone())]),
        (
            16,
            vec![
                Field::new("x", 0, f64d.clone()),
                Field::new("y", 4, f64d.clone()),
            ],
        ),
        (
            16,
            vec![
                Field::new("x", 8, f64d.clone()),
                Field::new("y", 0, f64d.clone()),
            ],
        ),
        (
            16,
            vec![
                Field::new("x", 0, f64d.clone()),
                Field::new("x", 8, f64d.clone()),
            ],
        ),
        (8, vec![Field::new("", 0, f64d.clone())]),
        (8, vec![Field::new("n".repeat(256), 0, f64d.clone())]),
        (8, vec![Field::new("x", usize::MAX, f64d.clone())]),
        ((1 << 24) + 1, vec![Field::new("x", 0, f64d.clone())]),
    ];
    for (size, fields) in cases {
        let r = DType::record(size, fields.clone());
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{size} {fields:?}"
        );
        // A hand-built invalid DType cannot be encoded either.
        assert!(DType::Record { size, fields }.encode().is_err());
    }
    // Too deep.
    let mut d = DType::Scalar(Scalar::U8);
    for _ in 0..9 {
        d = DType::Record {
            size: 1,
            fields: vec![Field::new("a", 0, d)],
        };
    }
    assert!(d.validate().is_err());
}

#[test]
fn type_mismatch_is_detected() {
    assert!(f64::dtype().check::<f64>("A").is_ok());
    match f64::dtype().check::<i64>("A") {
        Err(Error::TypeMismatch {
            array,
            stored,
            asked,
        }) => assert_eq!(
            (array.as_str(), stored.as_str(), asked.as_str()),
            ("A", "f64", "i64")
        ),
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        point().check::<u128>("P"),
        Err(Error::TypeMismatch { .. })
    ));
}

#[test]
fn hostile_bytes_are_corruption() {
    let good = point().encode().unwrap();
    assert!(matches!(DType::decode(&[]), Err(Error::Corruption { .. })));
    assert!(matches!(
        DType::decode(&[2, 1, 11]),
        Err(Error::Corruption { offset: 0, .. })
    ));
    assert!(matches!(
        DType::decode(&[1, 1, 16]),
        Err(Error::Corruption { .. })
    ));
    assert!(matches!(
        DType::decode(&[1, 9, 0]),
        Err(Error::Corruption { .. })
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        DType::decode(&trailing),
        Err(Error::Corruption { .. })
    ));
    for n in 0..good.len() {
        assert!(
            matches!(DType::decode(&good[..n]), Err(Error::Corruption { .. })),
            "prefix {n}"
        );
    }
    // A field count far larger than the bytes: refused before any allocation of that size.
    assert!(matches!(
        DType::decode(&[1, 2, 16, 0, 0, 0, 0xff, 0xff]),
        Err(Error::Corruption { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = DType::decode(&bytes);
    }

    #[test]
    fn decode_of_mutated_good_bytes_never_panics(i in 0usize..64, v in any::<u8>()) {
        let mut b = DType::record(24, vec![Field::new("a", 0, point()), Field::new("b", 16, DType::Scalar(Scalar::U32))]).unwrap().encode().unwrap();
        let n = b.len();
        b[i % n] = v;
        if let Ok(d) = DType::decode(&b) {
            prop_assert!(d.validate().is_ok());
            prop_assert_eq!(DType::decode(&d.encode().unwrap()).unwrap(), d);
        }
    }

    #[test]
    fn from_descr_never_panics(s in "[\\[\\]()'<|>=:, a-zA-Z0-9V]{0,40}") {
        let _ = DType::from_descr(&s);
    }
}

#[test]
fn format_value_prints_elements_without_the_rust_type() {
    assert_eq!(
        f64::dtype().format_value(&1.5f64.to_le_bytes()).unwrap(),
        "1.5"
    );
    assert_eq!(
        i16::dtype().format_value(&(-3i16).to_le_bytes()).unwrap(),
        "-3"
    );
    assert_eq!(
        u128::dtype()
            .format_value(&u128::MAX.to_le_bytes())
            .unwrap(),
        u128::MAX.to_string()
    );
    let mut b = 2.5f64.to_le_bytes().to_vec();
    b.extend_from_slice(&(-1.0f64).to_le_bytes());
    assert_eq!(point().format_value(&b).unwrap(), "{x: 2.5, y: -1}");
    assert!(point().format_value(&b[..15]).is_err());
    let padded = DType::from_descr("[('a', '|u1'), ('', '|V3'), ('b', '<i4')]").unwrap();
    assert_eq!(padded.size(), 8);
    assert_eq!(
        padded
            .format_value(&[7, 0xff, 0xff, 0xff, 9, 0, 0, 0])
            .unwrap(),
        "{a: 7, b: 9}"
    );
}

#[test]
fn numpy_only_scalars_encode_and_format() {
    let rec = DType::record(
        32,
        vec![
            Field::new("ok", 0, DType::Scalar(Scalar::Bool)),
            Field::new("h", 2, DType::Scalar(Scalar::F16)),
            Field::new("z", 8, DType::Scalar(Scalar::C64)),
            Field::new("w", 16, DType::Scalar(Scalar::C128)),
        ],
    )
    .unwrap();
    assert_eq!(DType::decode(&rec.encode().unwrap()).unwrap(), rec);
    assert_eq!(rec.to_string(), "{ok: bool, h: f16, z: c64, w: c128}");
    let mut b = vec![0u8; 32];
    b[0] = 1;
    b[2..4].copy_from_slice(&0x3e00u16.to_le_bytes()); // 1.5 in binary16
    b[8..12].copy_from_slice(&1.5f32.to_le_bytes());
    b[12..16].copy_from_slice(&(-2.0f32).to_le_bytes());
    b[16..24].copy_from_slice(&0.25f64.to_le_bytes());
    b[24..32].copy_from_slice(&4.0f64.to_le_bytes());
    assert_eq!(
        rec.format_value(&b).unwrap(),
        "{ok: true, h: 1.5, z: (1.5-2j), w: (0.25+4j)}"
    );
    // Subnormal and special halves.
    let h = DType::Scalar(Scalar::F16);
    assert_eq!(
        h.format_value(&1u16.to_le_bytes()).unwrap(),
        "0.000000059604645"
    );
    assert_eq!(h.format_value(&0xfc00u16.to_le_bytes()).unwrap(), "-inf");
    assert_eq!(h.format_value(&0x8000u16.to_le_bytes()).unwrap(), "-0");
    // No Rust type is any of these: typed access is a type mismatch.
    assert!(DType::Scalar(Scalar::Bool).check::<u8>("a").is_err());
}
