//! ArrayCore on virtmem + MemFile: views of any rows (1-D to 4-D, C and F, straddling 4 KiB blocks) match a Vec reference; writes through views land in the file at the right bytes; bad ranges, types and shapes are errors.

mod array_util;

use array_util::{file_bytes, flat, open, setup, BS};
use wdb::array::{element_dtype, ArrayCore, DType, Element, Order};
use wdb::Error;

wdb::record! {
    /// 12 bytes: elements straddle 4 KiB block boundaries.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Triple { a: u32, b: f32, c: i32 }
}

fn check_all_ranges<T: Element + PartialEq + std::fmt::Debug>(
    shape: &[u64],
    order: Order,
    make: impl Fn(usize) -> T,
) {
    let (vm, file) = setup(64);
    let mut a = open::<T>(&vm, &file, shape, order);
    let layout = a.layout().clone();
    let data: Vec<T> = (0..layout.num_elems() as usize).map(&make).collect();
    a.write_from(.., &data).unwrap();
    let len = a.len();
    let step = (len / 7).max(1);
    let mut starts: Vec<u64> = (0..=len).step_by(step as usize).collect();
    starts.push(len.saturating_sub(1));
    for &s in &starts {
        for &e in &starts {
            if s > e {
                continue;
            }
            let v = a.view(s..e).unwrap();
            for (idx, x) in v.indexed_iter() {
                let mut full: Vec<usize> = (0..shape.len()).map(|i| idx[i]).collect();
                full[layout.major_axis()] += s as usize;
                assert_eq!(
                    *x,
                    data[flat(&layout, &full)],
                    "{shape:?} {order:?} {s}..{e} {full:?}"
                );
            }
            let mut copy = vec![make(0); v.len()];
            a.read_into(s..e, &mut copy).unwrap();
            let b = layout.byte_range(&(s..e)).unwrap();
            assert_eq!(
                bytemuck::cast_slice::<T, u8>(&copy),
                &bytemuck::cast_slice::<T, u8>(&data)[b.start as usize..b.end as usize]
            );
        }
    }
    // After writeout the file holds exactly the array's bytes, zero after the end.
    a.writeout().unwrap();
    let n = layout.byte_size() as usize;
    let bytes = file_bytes(&file, n.div_ceil(BS) * BS);
    assert_eq!(&bytes[..n], bytemuck::cast_slice::<T, u8>(&data));
    assert!(bytes[n..].iter().all(|&b| b == 0));
}

#[test]
fn f64_1d_to_4d_c_and_f() {
    for shape in [
        vec![3000u64],
        vec![700, 3],
        vec![50, 7, 5],
        vec![9, 4, 5, 6],
        vec![3, 5, 2, 400],
    ] {
        for order in [Order::C, Order::F] {
            check_all_ranges::<f64>(&shape, order, |i| i as f64 + 0.25);
        }
    }
}

#[test]
fn records_straddling_blocks() {
    for (shape, order) in [
        (vec![2000u64], Order::C),
        (vec![500, 3], Order::C),
        (vec![3, 500], Order::F),
    ] {
        check_all_ranges::<Triple>(&shape, order, |i| Triple {
            a: i as u32,
            b: i as f32 * 0.5,
            c: -(i as i32),
        });
    }
    // 4096 / 12 is not whole: element 341 covers bytes 4092..4104.
    let (vm, file) = setup(16);
    let mut a = open::<Triple>(&vm, &file, &[1000], Order::C);
    a.view_mut(341..342).unwrap()[[0]] = Triple {
        a: 0x01020304,
        b: 1.5,
        c: -7,
    };
    a.writeout().unwrap();
    let b0 = file.block(0);
    let b1 = file.block(1);
    assert_eq!(&b0[4092..4096], &0x01020304u32.to_le_bytes());
    assert_eq!(&b1[0..4], &1.5f32.to_le_bytes());
    assert_eq!(&b1[4..8], &(-7i32).to_le_bytes());
}

#[test]
fn view_mut_writes_only_its_rows_and_blocks() {
    let (vm, file) = setup(64);
    let mut a = open::<u32>(&vm, &file, &[100, 1024], Order::C); // a row is one 4 KiB block
    a.view_mut(10..12).unwrap().fill(9);
    assert_eq!(a.dirty_blocks(), vec![10, 11]);
    let mut f = open::<u16>(&vm, &file, &[3, 4096], Order::F); // F: a row is 6 bytes
    f.view_mut(1000..1500).unwrap().fill(1);
    assert_eq!(f.dirty_blocks(), vec![1, 2]); // bytes 6000..9000
    assert!(f.view(..).unwrap().iter().enumerate().all(|(i, &x)| {
        let col = i % 4096; // iteration is logical (C) order over shape [3, 4096]
        x == u16::from((1000..1500).contains(&col))
    }));
}

#[test]
fn errors() {
    let (vm, file) = setup(16);
    let a = open::<f64>(&vm, &file, &[10, 4], Order::C);
    assert!(matches!(a.view(5..11), Err(Error::OutOfRange(_))));
    assert!(matches!(a.view(..=10), Err(Error::OutOfRange(_))));
    assert!(matches!(a.load(11..), Err(Error::OutOfRange(_))));
    let mut out = vec![0.0; 7];
    assert!(matches!(
        a.read_into(0..2, &mut out),
        Err(Error::InvalidArgument(_))
    ));
    // Wrong element type: TypeMismatch naming the array and both types.
    let e = ArrayCore::<i64>::open(
        &vm,
        file.clone(),
        &element_dtype::<f64>().unwrap(),
        &[10],
        Order::C,
    )
    .unwrap_err();
    match e {
        Error::TypeMismatch {
            array,
            stored,
            asked,
        } => assert_eq!(
            (array.as_str(), stored.as_str(), asked.as_str()),
            ("A", "f64", "i64")
        ),
        e => panic!("{e:?}"),
    }
    let e = ArrayCore::<Triple>::open(
        &vm,
        file.clone(),
        &DType::from_descr("[('a', '<u4'), ('b', '<f4'), ('x', '<i4')]").unwrap(),
        &[1],
        Order::C,
    );
    assert!(matches!(e, Err(Error::TypeMismatch { .. })));
    // Shapes past the address space or with overflowing sizes.
    let f64d = element_dtype::<f64>().unwrap();
    for shape in [vec![u64::MAX], vec![1 << 62, 4], vec![1u64 << 44]] {
        let e = ArrayCore::<f64>::open(&vm, file.clone(), &f64d, &shape, Order::C).unwrap_err();
        assert!(matches!(e, Error::OutOfRange(_)), "{shape:?}: {e:?}");
    }
}

#[test]
fn a_view_of_a_huge_array_costs_no_ram() {
    let (vm, file) = setup(16);
    // 1 TiB of f64 (with 4 KiB blocks: 2^28 blocks reserved lazily).
    let a = open::<f64>(&vm, &file, &[1 << 37], Order::C);
    let before = vm.stats().ram_used;
    let v = a.view(..).unwrap();
    assert_eq!(v.len(), 1 << 37);
    assert_eq!(v[[(1 << 37) - 1]], 0.0);
    assert_eq!(v[[12345]], 0.0);
    assert!(vm.stats().ram_used <= before + 2 * BS as u64);
}

#[test]
fn load_errors_are_err_from_checked_calls() {
    let (vm, file) = setup(16);
    let mut a = open::<u64>(&vm, &file, &[4096], Order::C); // 8 blocks
    file.fail_load(3, Some("injected"));
    assert!(a.load(..).is_err());
    assert!(a.load(0..512).is_ok());
    let mut out = vec![0u64; 4096];
    assert!(a.read_into(.., &mut out).is_err());
    assert!(a.write_from(1536..1600, &[1u64; 64]).is_err());
    file.fail_load(3, None);
    a.write_from(1536..1600, &[1u64; 64]).unwrap();
    assert_eq!(a.view(1536..1600).unwrap().sum(), 64);
}

#[test]
fn scanning_more_than_the_budget_reloads_correctly() {
    // Budget of 8 blocks, array of 64 blocks stored in the file: views fault, reclaim
    // and reload, and still read the right values.
    let (vm, file) = setup(8);
    let n = 64 * BS / 8;
    {
        let mut a = open::<u64>(&vm, &file, &[n as u64], Order::C);
        for chunk in 0..64u64 {
            let rows = chunk * 512..(chunk + 1) * 512;
            let data: Vec<u64> = rows.clone().map(|i| i * 3).collect();
            a.write_from(rows, &data).unwrap();
            a.writeout().unwrap();
        }
    }
    let a = open::<u64>(&vm, &file, &[n as u64], Order::C);
    let total: u64 = a.view(..).unwrap().iter().sum();
    assert_eq!(total, (0..n as u64).map(|i| i * 3).sum::<u64>());
    assert!(vm.stats().ram_used <= 8 * BS as u64);
    // A range straddling blocks, read twice (second time after reclaim).
    for _ in 0..2 {
        let v = a.view(1000..1100).unwrap();
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (1000 + i as u64) * 3));
        let _: u64 = a.view(4096..8192).unwrap().iter().sum();
    }
}

#[test]
fn views_are_shared_across_threads() {
    let (vm, file) = setup(64);
    let mut a = open::<f32>(&vm, &file, &[40_000], Order::C);
    a.write_from(.., &(0..40_000).map(|i| i as f32).collect::<Vec<_>>())
        .unwrap();
    let a = &a;
    let sums: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                s.spawn(move || {
                    a.view(t * 10_000..(t + 1) * 10_000)
                        .unwrap()
                        .iter()
                        .map(|&x| f64::from(x))
                        .sum::<f64>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want: f64 = (0..40_000).map(f64::from).sum();
    assert_eq!(sums.iter().sum::<f64>(), want);
}
