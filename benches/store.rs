//! Storage-engine benchmarks, each beside its baseline in the same run:
//! commit of 1 and 64 dirty 2 MiB blocks vs plain write + fdatasync of the same bytes;
//! a metadata-only commit vs a 4 KiB append + fdatasync; load of a raw and a zstd block;
//! open time vs log size (with the index checkpoint); the index lookup of a block's
//! version (what a first touch of a block does before loading it) in a database reopened
//! from its checkpoint, beside a `HashMap` lookup of as many keys.
//!
//! Run: `cargo bench --bench store -- --quick` (or `--measurement-time 2`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use wdb::db::{ArraySpec, Compression, Db};

const BS: usize = 2 << 20;

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn spec(name: &str, c: Compression) -> ArraySpec {
    ArraySpec {
        name: name.into(),
        dtype: vec![],
        dtype_name: "u8".into(),
        elem_size: 1,
        shape: vec![1 << 40],
        order: wdb::db::Order::C,
        block_size: BS as u32,
        compression: c,
    }
}

fn commit_blocks(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("WDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let data = noise(BS, 7);
    for n in [1usize, 64] {
        let mut g = c.benchmark_group(format!("commit_{n}x2MiB"));
        g.sample_size(10).sampling_mode(SamplingMode::Flat);
        if n > 1 {
            g.measurement_time(Duration::from_secs(10));
        }
        let db = Db::open(dir.path().join(format!("c{n}.wdb"))).unwrap();
        let tx = db.begin().unwrap();
        let id = tx
            .create_array_raw(spec("A", Compression::None))
            .unwrap()
            .id;
        tx.commit().unwrap();
        let mut blk = 0u64;
        g.bench_function("wdb_commit", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let tx = db.begin().unwrap();
                    for _ in 0..n {
                        tx.write_block(id, blk, &data).unwrap();
                        blk += 1;
                    }
                    tx.commit().unwrap();
                }
                t.elapsed()
            })
        });
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join(format!("plain{n}")))
            .unwrap();
        let mut off = 0u64;
        g.bench_function("plain_write_fdatasync", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    for _ in 0..n {
                        f.write_all_at(&data, off).unwrap();
                        off += BS as u64;
                    }
                    f.sync_data().unwrap();
                }
                t.elapsed()
            })
        });
        g.finish();
    }
}

fn commit_metadata(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("WDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let mut g = c.benchmark_group("commit_metadata_only");
    g.sample_size(20);
    let db = Db::open(dir.path().join("m.wdb")).unwrap();
    let tx = db.begin().unwrap();
    tx.create_array_raw(spec("A", Compression::None)).unwrap();
    tx.commit().unwrap();
    let mut n = 1u64;
    g.bench_function("wdb_set_shape_commit", |b| {
        b.iter(|| {
            let tx = db.begin().unwrap();
            n += 1;
            tx.set_shape("A", &[n]).unwrap();
            tx.commit().unwrap()
        })
    });
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("plain"))
        .unwrap();
    let page = vec![1u8; 4096];
    g.bench_function("plain_4KiB_append_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&page).unwrap();
            f.sync_data().unwrap();
        })
    });
    g.finish();
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("WDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let db = Db::open(dir.path().join("l.wdb")).unwrap();
    let tx = db.begin().unwrap();
    let r = tx
        .create_array_raw(spec("R", Compression::None))
        .unwrap()
        .id;
    let z = tx
        .create_array_raw(spec("Z", Compression::Zstd { level: 3 }))
        .unwrap()
        .id;
    // Compressible but not trivial: small integers as f64-like data.
    let comp: Vec<u8> = (0..BS / 8)
        .flat_map(|i| ((i % 1000) as f64).to_le_bytes())
        .collect();
    tx.write_block(r, 0, &noise(BS, 3)).unwrap();
    tx.write_block(z, 0, &comp).unwrap();
    tx.commit().unwrap();
    let s = db.snapshot().unwrap();
    let st = s.array_stats("Z").unwrap();
    assert_eq!(st.zstd_blocks, 1);
    let mut buf = vec![0u8; BS];
    let mut g = c.benchmark_group("load_2MiB_block");
    g.sample_size(30);
    g.bench_function("raw", |b| b.iter(|| s.read_block(r, 0, &mut buf).unwrap()));
    g.bench_function("zstd", |b| b.iter(|| s.read_block(z, 0, &mut buf).unwrap()));
    let mut dst = vec![0u8; BS];
    g.bench_function("memcpy_baseline", |b| {
        b.iter(|| dst.copy_from_slice(std::hint::black_box(&comp)))
    });
    g.finish();
}

fn open_time(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("WDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    let data = noise(BS, 9);
    for commits in [10u64, 200] {
        let p = dir.path().join(format!("o{commits}.wdb"));
        {
            let db = Db::open_with(
                &p,
                wdb::db::Options::default().durability(wdb::db::Durability::Buffered),
            )
            .unwrap();
            let tx = db.begin().unwrap();
            let id = tx
                .create_array_raw(spec("A", Compression::None))
                .unwrap()
                .id;
            tx.commit().unwrap();
            for i in 0..commits {
                let tx = db.begin().unwrap();
                tx.write_block(id, i % 16, &data).unwrap();
                tx.commit().unwrap();
            }
        }
        let size = std::fs::metadata(&p).unwrap().len();
        g.bench_function(format!("{commits}_commits_{}MiB", size >> 20), |b| {
            b.iter(|| Db::open(&p).unwrap())
        });
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("WDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let p = dir.path().join("k.wdb");
    const BLOCKS: u64 = 51_200;
    let zeros = vec![0u8; BS];
    let id = {
        let db = Db::open_with(
            &p,
            wdb::db::Options::default().durability(wdb::db::Durability::Buffered),
        )
        .unwrap();
        let tx = db.begin().unwrap();
        let id = tx
            .create_array_raw(spec("A", Compression::None))
            .unwrap()
            .id;
        tx.commit().unwrap();
        // All-zero blocks are stored as holes: one index entry each, no payload.
        for chunk in 0..BLOCKS / 1024 {
            let tx = db.begin().unwrap();
            for b in chunk * 1024..(chunk + 1) * 1024 {
                tx.write_block(id, b, &zeros).unwrap();
            }
            tx.commit().unwrap();
        }
        id
    };
    let db = Db::open_with(&p, wdb::db::Options::default().read_only(true)).unwrap();
    let s = db.snapshot().unwrap();
    let mut g = c.benchmark_group("index_lookup_51200_blocks");
    g.sample_size(30);
    let mut x = 1u64;
    g.bench_function("block_version", |b| {
        b.iter(|| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.block_version(id, (x >> 33) % BLOCKS).unwrap()
        })
    });
    let map: std::collections::HashMap<(u64, u64), u64> =
        (0..BLOCKS).map(|b| ((id, b), b)).collect();
    g.bench_function("hashmap_baseline", |b| {
        b.iter(|| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            map.get(&(id, (x >> 33) % BLOCKS)).copied()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    commit_blocks,
    commit_metadata,
    load,
    open_time,
    lookup
);
criterion_main!(benches);
