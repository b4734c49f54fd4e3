//! W2 on compressed blocks (docs/benchmarks.md; the target is ≥ 0.8× single-thread zstd
//! decompression of the same blocks): a scan — open, view, sum — of an array whose
//! blocks are stored zstd-compressed, beside a plain single-thread decompression of the
//! same blocks (zstd level 3, the database default, one reused context, a reused
//! buffer) in the same run. The data is a smooth f64 signal quantized to 1e-5
//! (the fraction zstd keeps is printed). Run with `cargo bench --bench scan`; the ratio is the
//! first throughput over the second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wdb::{ArrayOptions, Compression, Db, Options};

const BS: usize = 2 << 20;
const N_BLKS: usize = 64;
const N: usize = N_BLKS * BS / 8;

/// A smooth signal (a sine whose period is no whole number of elements) quantized
/// to 1e-5: what a sensor array often looks like.
fn element(i: usize) -> f64 {
    let x = (i as f64 * std::f64::consts::TAU / 205_887.4).sin();
    (x * 1e5).round() / 1e5
}

fn bench(c: &mut Criterion) {
    let data: Vec<f64> = (0..N).map(element).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.wdb");
    let opts = || Options::default().ram_budget(256 << 20);
    {
        let db = Db::open_with(&path, opts()).unwrap();
        let tx = db.begin().unwrap();
        let aopts = ArrayOptions {
            compression: Compression::Zstd { level: 0 },
            ..ArrayOptions::default()
        };
        let mut a = tx.create_array_with::<f64>("A", &[0], aopts).unwrap();
        for chunk in data.chunks(BS / 8 * 16) {
            a.append(chunk).unwrap();
        }
        drop(a);
        tx.commit().unwrap();
    }
    let bytes: &[u8] = bytemuck_f64(&data);
    let frames: Vec<Vec<u8>> = bytes
        .chunks(BS)
        .map(|b| zstd::bulk::compress(b, 3).unwrap())
        .collect();
    let stored: usize = frames.iter().map(Vec::len).sum();
    eprintln!(
        "{} blocks of {} MiB, zstd level 3: {:.1} % of the raw size; file {} bytes",
        N_BLKS,
        BS >> 20,
        100.0 * stored as f64 / bytes.len() as f64,
        std::fs::metadata(&path).unwrap().len()
    );
    let want: f64 = data.iter().sum();

    let mut g = c.benchmark_group("W2 zstd blocks, 128 MiB");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(10);
    g.bench_function("wdb scan: open, view, sum", |b| {
        b.iter(|| {
            let db = Db::open_with(&path, opts().read_only(true)).unwrap();
            let s = db.snapshot().unwrap();
            let a = s.array::<f64>("A").unwrap();
            let v = a.view(..).unwrap();
            let sum: f64 = v.as_slice().unwrap().iter().sum();
            assert!((sum - want).abs() <= want.abs() * 1e-9 + 1e-6);
            if std::env::var_os("SCAN_STATS").is_some() {
                eprintln!("{:?}", db.memory_stats().unwrap());
            }
            sum
        })
    });
    g.bench_function("zstd decompression of the same blocks, 1 thread", |b| {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let mut out = vec![0u8; BS];
        b.iter(|| {
            for f in &frames {
                let n = d.decompress_to_buffer(f, &mut out).unwrap();
                assert_eq!(n, BS);
            }
            out[7]
        })
    });
    // The same into new memory, as a reader that decompresses the whole array does:
    // the destination is fresh pages (`vec!` of zeros is calloc: pages the kernel zeroes
    // on first touch), as wdb's RAM pages are in a new process.
    g.bench_function(
        "zstd decompression of the same blocks into new memory, 1 thread",
        |b| {
            let mut d = zstd::bulk::Decompressor::new().unwrap();
            b.iter(|| {
                let mut out = vec![0u8; N_BLKS * BS];
                for (f, o) in frames.iter().zip(out.chunks_mut(BS)) {
                    assert_eq!(d.decompress_to_buffer(f, o).unwrap(), BS);
                }
                out[7]
            })
        },
    );
    g.finish();
}

fn bytemuck_f64(x: &[f64]) -> &[u8] {
    // SAFETY: f64 has no padding and any byte pattern is a valid u8; the length is
    // the slice's size in bytes and the lifetime is the input's.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

criterion_group!(benches, bench);
criterion_main!(benches);
