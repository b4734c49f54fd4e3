//! Random sequences of append / resize / write / view_mut / writeout on ArrayCore (C and F, 1-D and 2-D, on MemFile, both ways of re-exposing cut-off blocks) always read the same as a plain Vec model.

mod array_util;

use array_util::{open, setup};
use proptest::prelude::*;
use wdb::array::Order;

#[derive(Clone, Debug)]
enum Op {
    Append(u64, u32),
    Resize(u64),
    Write(u64, u64, u32),
    Fill(u64, u64, u32),
    Writeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..3000, any::<u32>()).prop_map(|(n, v)| Op::Append(n, v)),
        (0u64..6000).prop_map(Op::Resize),
        (0u64..6000, 0u64..6000, any::<u32>()).prop_map(|(a, b, v)| Op::Write(a, b, v)),
        (0u64..6000, 0u64..6000, any::<u32>()).prop_map(|(a, b, v)| Op::Fill(a, b, v)),
        Just(Op::Writeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_model(width in 1u64..4, f in any::<bool>(), fresh in any::<bool>(), ops in prop::collection::vec(op(), 1..25)) {
        let (vm, file) = setup(4096);
        let order = if f { Order::F } else { Order::C };
        let shape = if f { vec![width, 0] } else { vec![0, width] };
        let mut a = open::<u32>(&vm, &file, &shape, order);
        if fresh {
            // Every grow over cut-off blocks takes the writeout + fresh handle path.
            a.set_expose_limit(0);
        }
        let w = width as usize;
        // The model: rows of `width` elements, in storage order.
        let mut model: Vec<u32> = Vec::new();
        for op in ops {
            let len = (model.len() / w) as u64;
            match op {
                Op::Append(n, v) => {
                    let rows: Vec<u32> = (0..n as usize * w).map(|i| v.wrapping_add(i as u32)).collect();
                    a.append(&rows).unwrap();
                    model.extend_from_slice(&rows);
                }
                Op::Resize(n) => {
                    let mut s = shape.clone();
                    s[if f { 1 } else { 0 }] = n;
                    a.resize(&s).unwrap();
                    model.resize(n as usize * w, 0);
                }
                Op::Write(x, y, v) => {
                    let (s, e) = (x.min(y).min(len), x.max(y).min(len));
                    let data: Vec<u32> = (0..(e - s) as usize * w).map(|i| v ^ i as u32).collect();
                    a.write_from(s..e, &data).unwrap();
                    model[s as usize * w..e as usize * w].copy_from_slice(&data);
                }
                Op::Fill(x, y, v) => {
                    let (s, e) = (x.min(y).min(len), x.max(y).min(len));
                    a.view_mut(s..e).unwrap().fill(v);
                    model[s as usize * w..e as usize * w].fill(v);
                }
                Op::Writeout => a.writeout().unwrap(),
            }
            prop_assert_eq!(a.len(), (model.len() / w) as u64);
            let v = a.view(..).unwrap();
            prop_assert_eq!(v.as_slice_memory_order().unwrap(), &model[..]);
            let mut copy = vec![0u32; model.len()];
            a.read_into(.., &mut copy).unwrap();
            prop_assert_eq!(&copy, &model);
        }
    }
}
