//! Array-layer costs on virtmem + MemFile: making a view (should not depend on the
//! array's size), scanning through a view (faults + copies), append and read_into
//! throughput. Run with `cargo bench --bench array`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wdb::array::{element_dtype, ArrayCore, Order};
use wdb::bigfile::{MemFile, DEFAULT_BLOCK_SIZE};
use wdb::virtmem::VirtMem;

fn core(vm: &Arc<VirtMem>, shape: &[u64]) -> ArrayCore<f64> {
    let file = Arc::new(MemFile::new("bench", DEFAULT_BLOCK_SIZE));
    ArrayCore::open(vm, file, &element_dtype::<f64>().unwrap(), shape, Order::C).unwrap()
}

fn bench(c: &mut Criterion) {
    let vm = VirtMem::new(512 << 20).unwrap();

    // A view of 1 TiB costs the same as a view of 1 KiB: no RAM, no loads.
    let huge = core(&vm, &[1 << 37]);
    c.bench_function("view of a 1 TiB array", |b| {
        b.iter(|| huge.view(..).unwrap().len())
    });
    let small = core(&vm, &[128]);
    c.bench_function("view of a 1 KiB array", |b| {
        b.iter(|| small.view(..).unwrap().len())
    });

    // Scan 64 MiB: first touch faults each 2 MiB block in.
    let n = 8u64 << 20;
    let mut g = c.benchmark_group("64 MiB");
    g.throughput(Throughput::Bytes(n * 8));
    g.sample_size(10);
    g.bench_function("append in 1 MiB chunks", |b| {
        let chunk = vec![1.0f64; 1 << 17];
        b.iter_batched(
            || core(&vm, &[0]),
            |mut a| {
                for _ in 0..(n / (1 << 17)) {
                    a.append(&chunk).unwrap();
                }
                a
            },
            BatchSize::PerIteration,
        )
    });
    let mut a = core(&vm, &[0]);
    a.append(&vec![0.5f64; n as usize]).unwrap();
    g.bench_function("sum through a view (resident)", |b| {
        b.iter(|| a.view(..).unwrap().sum())
    });
    g.bench_function("read_into", |b| {
        let mut out = vec![0.0f64; n as usize];
        b.iter(|| a.read_into(.., &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
