//! `wdbtool bench --baseline --dir s3://bucket/prefix`: the same workloads as plain
//! `object_store` calls on the same gateway (peer `s3-plain`), the figures wdb on
//! object storage is compared with in one run: W1 = one PUT per appended chunk; W2 =
//! parallel range GETs (8 at once, 2 MiB each) of those chunks, summed; W3 = one range
//! GET per read (the first 1,000 reads); W5 = one create-if-absent PUT and one GET per
//! iteration. Objects live under `<prefix>/baseline/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as OPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::bench::{
    chunk_elems, err, fill_elements, median, percentile, randread_offsets, BenchArgs, Out, Phase,
    R, READ_ELEMS, SMALL_COMMITS,
};

fn store(a: &BenchArgs) -> R<(Arc<dyn ObjectStore>, String)> {
    let url = a.dir.to_str().unwrap_or_default();
    let rest = url.strip_prefix("s3://").unwrap_or(url);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| crate::bench::BenchError(format!("{url}: {e}")))?;
    let p = prefix.trim_matches('/');
    let base = if p.is_empty() {
        "baseline".to_string()
    } else {
        format!("{p}/baseline")
    };
    Ok((Arc::new(s), base))
}

fn e(x: impl std::fmt::Display) -> crate::bench::BenchError {
    crate::bench::BenchError(x.to_string())
}

/// (start element, length) of every ingest chunk.
fn chunks(n: u64) -> Vec<(u64, u64)> {
    let (mut lo, mut k, mut v) = (0, 0, Vec::new());
    while lo < n {
        let len = chunk_elems(k).min(n - lo);
        v.push((lo, len));
        lo += len;
        k += 1;
    }
    v
}

fn chunk_key(base: &str, k: usize) -> OPath {
    OPath::from(format!("{base}/chunk-{k:08}"))
}

pub fn run(a: &BenchArgs, n: u64) -> R<()> {
    let (s, base) = store(a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(e)?;
    let out = Out { peer: "s3-plain" };
    let ch = chunks(n);
    match a.phase {
        Phase::Ingest => {
            let mut timed = Duration::ZERO;
            let mut buf = vec![0.0f64; chunk_elems(6) as usize];
            for (k, &(lo, len)) in ch.iter().enumerate() {
                let c = &mut buf[..len as usize];
                fill_elements(lo, c);
                let b = Bytes::from(c.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
                let t = Instant::now();
                rt.block_on(s.put(&chunk_key(&base, k), PutPayload::from(b)))
                    .map_err(e)?;
                timed += t.elapsed();
            }
            let secs = timed.as_secs_f64();
            out.fig(
                "W1",
                "ingest_MBps",
                a.size_bytes as f64 / 1e6 / secs,
                "MB/s",
            )?;
            out.fig("W1", "ingest_s", secs, "s")
        }
        Phase::Scan => {
            let t = Instant::now();
            let mut ranges = Vec::new();
            for (k, &(_, len)) in ch.iter().enumerate() {
                let bytes = len * 8;
                let mut at = 0;
                while at < bytes {
                    let e = (at + (2 << 20)).min(bytes);
                    ranges.push((k, at..e));
                    at = e;
                }
            }
            let total: f64 = rt
                .block_on(async {
                    futures::stream::iter(ranges)
                        .map(|(k, r)| {
                            let s = s.clone();
                            let key = chunk_key(&base, k);
                            async move {
                                let b = s.get_range(&key, r).await?;
                                Ok::<f64, object_store::Error>(
                                    b.chunks_exact(8)
                                        .map(|x| f64::from_le_bytes(x.try_into().unwrap_or([0; 8])))
                                        .sum(),
                                )
                            }
                        })
                        .buffered(8)
                        .collect::<Vec<_>>()
                        .await
                })
                .into_iter()
                .collect::<Result<Vec<f64>, _>>()
                .map_err(e)?
                .iter()
                .sum();
            let secs = t.elapsed().as_secs_f64();
            out.fig("W2", "scan_GBps", a.size_bytes as f64 / 1e9 / secs, "GB/s")?;
            out.fig("W2", "sum", total, "")
        }
        Phase::Randread => {
            let offs = randread_offsets(a.seed, n);
            let mut times = Vec::new();
            for &off in offs.iter().take(1000) {
                let k = ch.partition_point(|&(lo, _)| lo <= off) - 1;
                let (lo, len) = ch[k];
                let from = (off - lo) * 8;
                let to = ((off - lo + READ_ELEMS).min(len)) * 8;
                let t = Instant::now();
                rt.block_on(s.get_range(&chunk_key(&base, k), from..to))
                    .map_err(e)?;
                times.push(t.elapsed());
            }
            let med = median(&mut times);
            out.fig("W3", "median_us", med.as_secs_f64() * 1e6, "us")?;
            let p99 = percentile(&times, 99.0);
            out.fig("W3", "p99_us", p99.as_secs_f64() * 1e6, "us")
        }
        Phase::Small => {
            let mut times = Vec::new();
            let nonce = std::process::id();
            for k in 0..SMALL_COMMITS {
                let key = OPath::from(format!("{base}/small-{nonce}-{k}"));
                let t = Instant::now();
                rt.block_on(async {
                    let o = PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    };
                    s.put_opts(&key, PutPayload::from(vec![1u8; 4096]), o)
                        .await?;
                    s.get(&key).await?.bytes().await
                })
                .map_err(e)?;
                times.push(t.elapsed());
            }
            let med = median(&mut times);
            out.fig("W5", "median_ms", med.as_secs_f64() * 1e3, "ms")
        }
        Phase::Sparse => {
            err("the s3-plain baseline has no sparse phase (W4 is compared with the local file)")
        }
        Phase::Bigtx => {
            err("the s3-plain baseline has no bigtx phase (W7 is compared with the local file)")
        }
    }
}
