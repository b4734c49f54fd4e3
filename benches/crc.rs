//! The CRC-32 of the storage format (ISO-HDLC, the values `crc32fast` computes) by two
//! implementations, in one run: `crc32fast` (PCLMULQDQ on 128-bit registers) and
//! `crc-fast` (VPCLMULQDQ on 256/512-bit registers where the CPU has them). Sizes are
//! the ones wdb checks: a 4 KiB page, a 16 KiB window of a random read, a 2 MiB block
//! in cache, and 64 MiB (blocks streamed from memory, as a scan checks them). Run with
//! `cargo bench --bench crc`. On this machine class (AMD EPYC with AVX-512 and
//! VPCLMULQDQ) the two are equal within noise at every size (4 KiB: 33 GiB/s both;
//! 16 KiB: 37 and 43; 2 MiB: 48 and 47; 64 MiB: 18 and 18, memory-bound): crc32fast
//! already uses the wide carry-less multiply there, so `verify` keeps it
//! (`src/verify/crc.rs`) and adds no dependency.
//!
//! `check_then_sum` is the floor of a warm scan in `Verify::OncePerProcess` without any
//! mapping work: 512 MiB in memory (far past the caches) summed as `f64`, CRC-checked,
//! and checked then summed 2 MiB block by 2 MiB block (the sum then reads a block the
//! check just brought into the cache). On this machine class, three runs: sum 22–25
//! GiB/s, CRC 20–25 GiB/s, check-then-sum 0.59–0.73× the sum alone.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(
        crc32fast::hash(&data),
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, &data) as u32
    );
    for (name, len) in [
        ("4KiB", 4usize << 10),
        ("16KiB", 16 << 10),
        ("2MiB", 2 << 20),
        ("64MiB", 64 << 20),
    ] {
        let mut g = c.benchmark_group(format!("crc32_{name}"));
        g.throughput(Throughput::Bytes(len as u64));
        let b = &data[..len];
        g.bench_function("crc32fast", |x| {
            x.iter(|| crc32fast::hash(std::hint::black_box(b)))
        });
        g.bench_function("crc-fast", |x| {
            x.iter(|| {
                crc_fast::checksum(
                    crc_fast::CrcAlgorithm::Crc32IsoHdlc,
                    std::hint::black_box(b),
                ) as u32
            })
        });
        g.bench_function("wdb::verify::crc32", |x| {
            x.iter(|| wdb::verify::crc32(std::hint::black_box(b)))
        });
        g.finish();
    }
}

/// The sum of a warm scan (`wdbtool bench`'s W2), over `f64`s.
fn sum(b: &[u8]) -> f64 {
    let mut acc = [0f64; 8];
    for c in b.chunks_exact(64) {
        for (i, x) in c.chunks_exact(8).enumerate() {
            acc[i] += f64::from_ne_bytes(x.try_into().expect("8 bytes"));
        }
    }
    acc.iter().sum()
}

fn check_then_sum(c: &mut Criterion) {
    let data: Vec<u8> = (0..512u32 << 20).map(|i| (i >> 12) as u8).collect();
    let mut g = c.benchmark_group("check_then_sum_512MiB");
    g.throughput(Throughput::Bytes(data.len() as u64))
        .sample_size(10);
    g.bench_function("sum", |x| x.iter(|| sum(std::hint::black_box(&data))));
    g.bench_function("crc", |x| {
        x.iter(|| wdb::verify::crc32(std::hint::black_box(&data)))
    });
    g.bench_function("crc_then_sum_per_2MiB", |x| {
        x.iter(|| {
            let mut total = 0.0;
            for block in std::hint::black_box(&data).chunks(2 << 20) {
                std::hint::black_box(wdb::verify::crc32(block));
                total += sum(block);
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench, check_then_sum
}
criterion_main!(benches);
