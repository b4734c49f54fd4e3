//! Streaming .npy export (read_into in chunks) and import (append in chunks) of ArrayCore arrays round-trip data, shape, order and record types; a file of another type is refused.

mod array_util;

use std::io::{Cursor, Read, Write};

use array_util::{open, setup};
use wdb::array::npy::{read_header, write_header};
use wdb::array::{ArrayCore, Element, Order};

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq, Default)]
    pub struct Reading { pub t: i64, pub v: f32, pub q: u32 }
}

fn export<T: Element + Default>(a: &ArrayCore<T>, chunk_rows: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, &a.npy_header()).unwrap();
    let per_row = a.layout().row_elems() as usize;
    let mut r = 0;
    while r < a.len() {
        let e = (r + chunk_rows).min(a.len());
        let mut buf = vec![T::default(); (e - r) as usize * per_row];
        a.read_into(r..e, &mut buf).unwrap();
        out.write_all(bytemuck::cast_slice(&buf)).unwrap();
        r = e;
    }
    out
}

fn import<T: Element + Default>(bytes: &[u8], chunk_rows: usize) -> (Vec<u64>, Order, Vec<T>) {
    let mut r = Cursor::new(bytes);
    let h = read_header(&mut r).unwrap();
    h.dtype.check::<T>("imported").unwrap();
    let layout = h.layout().unwrap();
    let (vm, file) = setup(256);
    let mut empty = layout.shape().to_vec();
    empty[layout.major_axis()] = 0;
    let mut a = open::<T>(&vm, &file, &empty, layout.order());
    let per_row = layout.row_elems() as usize;
    let mut left = layout.len() as usize;
    while left > 0 {
        let n = left.min(chunk_rows);
        let mut raw = vec![0u8; n * per_row * std::mem::size_of::<T>()];
        r.read_exact(&mut raw).unwrap();
        let rows: Vec<T> = raw
            .chunks_exact(std::mem::size_of::<T>())
            .map(bytemuck::pod_read_unaligned)
            .collect();
        a.append(&rows).unwrap();
        left -= n;
    }
    let mut all = vec![T::default(); layout.num_elems() as usize];
    a.read_into(.., &mut all).unwrap();
    (a.shape().to_vec(), a.layout().order(), all)
}

#[test]
fn scalars_c_and_f() {
    for (shape, order) in [
        (vec![1000u64, 7], Order::C),
        (vec![7, 1000], Order::F),
        (vec![5000], Order::C),
    ] {
        let (vm, file) = setup(64);
        let mut a = open::<f64>(&vm, &file, &shape, order);
        let data: Vec<f64> = (0..7000).map(|i| i as f64 / 3.0).collect();
        a.write_from(.., &data[..a.layout().num_elems() as usize])
            .unwrap();
        let bytes = export(&a, 333);
        assert_eq!(bytes.len() as u64, 128 + a.layout().byte_size());
        let (s, o, back) = import::<f64>(&bytes, 250);
        assert_eq!((s, o), (shape.clone(), order));
        assert_eq!(back, data[..back.len()].to_vec());
        // The wrong element type is refused.
        let h = read_header(&mut Cursor::new(&bytes)).unwrap();
        assert!(h.dtype.check::<f32>("x").is_err());
    }
}

#[test]
fn records() {
    let (vm, file) = setup(64);
    let mut a = open::<Reading>(&vm, &file, &[0], Order::C);
    let rows: Vec<Reading> = (0..3000)
        .map(|i| Reading {
            t: i,
            v: i as f32 * 0.1,
            q: (i % 7) as u32,
        })
        .collect();
    a.append(&rows).unwrap();
    let bytes = export(&a, 1000);
    let text = String::from_utf8_lossy(&bytes[..128]).to_string();
    assert!(
        text.contains("'descr': [('t', '<i8'), ('v', '<f4'), ('q', '<u4')]"),
        "{text}"
    );
    let (_, _, back) = import::<Reading>(&bytes, 777);
    assert_eq!(back, rows);
}
