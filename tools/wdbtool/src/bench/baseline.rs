//! The memmap2 baseline of `wdbtool bench`: the same phases over a raw file of the
//! same bytes, written with `write` + `fdatasync` and read through a plain memory map.

use super::*;
use memmap2::{Mmap, MmapMut};

fn path(a: &BenchArgs) -> PathBuf {
    a.dir.join(RAW_FILE)
}

fn check_len(p: &Path, f: &File, size: u64) -> R<()> {
    let len = f.metadata().map_err(io_ctx("stat", p))?.len();
    if len != size {
        return err(format!(
            "{} holds {len} bytes, not --size-bytes {size}",
            p.display()
        ));
    }
    Ok(())
}

fn open(a: &BenchArgs, write: bool) -> R<File> {
    let p = path(a);
    if !p.exists() {
        return err(format!(
            "{} does not exist: run `wdbtool bench --baseline --phase ingest` on this --dir first",
            p.display()
        ));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .open(&p)
        .map_err(io_ctx("open", &p))?;
    check_len(&p, &f, a.size_bytes)?;
    Ok(f)
}

/// The map's bytes as elements (a map is page aligned; its length is checked at open).
fn as_f64(b: &[u8]) -> &[f64] {
    bytemuck::cast_slice(b)
}

fn as_f64_mut(b: &mut [u8]) -> &mut [f64] {
    bytemuck::cast_slice_mut(b)
}

pub fn run(a: &BenchArgs, n: u64) -> R<()> {
    let out = Out { peer: "memmap2" };
    match a.phase {
        Phase::Ingest => ingest(a, n, &out),
        Phase::Scan => scan(a, &out),
        Phase::Randread => randread(a, n, &out),
        Phase::Sparse => sparse(a, n, &out),
        Phase::Small => small(a, n, &out),
        Phase::Bigtx => bigtx(a, n, &out),
    }
}

/// W7 on a plain file: create it at its size, map it, write element `i` at `i`,
/// msync; timed from the create to the end of the msync.
fn bigtx(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
    let p = path(a);
    if p.exists() {
        return already_exists(&p, "bigtx");
    }
    let t = Instant::now();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(io_ctx("create", &p))?;
    f.set_len(a.size_bytes).map_err(io_ctx("set_len", &p))?;
    // SAFETY: nothing else maps or writes the file during the phase.
    let mut map = unsafe { MmapMut::map_mut(&f) }.map_err(io_ctx("mmap", &p))?;
    fill_elements(0, as_f64_mut(&mut map));
    map.flush().map_err(io_ctx("msync", &p))?;
    drop(map);
    let s = t.elapsed().as_secs_f64();
    eprintln!("memmap2 bigtx: {n} elements, {s:.3} s");
    out.bigtx(a.size_bytes, s)
}

/// The same chunks, each written and fdatasync'ed ("commit") to a plain file.
fn ingest(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
    let p = path(a);
    if p.exists() {
        return already_exists(&p, "ingest");
    }
    let mut buf = vec![0.0f64; chunk_elems(6) as usize];
    let mut timed = Duration::ZERO;
    let t = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(io_ctx("create", &p))?;
    timed += t.elapsed();
    let (mut lo, mut k) = (0u64, 0u64);
    while lo < n {
        let len = chunk_elems(k).min(n - lo);
        let chunk = &mut buf[..len as usize];
        fill_elements(lo, chunk);
        let b: &[u8] = bytemuck::cast_slice(chunk);
        let t = Instant::now();
        f.write_all(b).map_err(io_ctx("write", &p))?;
        f.sync_data().map_err(io_ctx("fdatasync", &p))?;
        timed += t.elapsed();
        lo += len;
        k += 1;
    }
    let t = Instant::now();
    drop(f);
    timed += t.elapsed();
    let s = timed.as_secs_f64();
    eprintln!("memmap2 ingest: {n} elements in {k} write+fdatasync, {s:.3} s");
    out.ingest(a.size_bytes, s)
}

fn scan(a: &BenchArgs, out: &Out) -> R<()> {
    let p = path(a);
    let t = Instant::now();
    let f = open(a, false)?;
    // SAFETY: nothing else writes the file during the phase.
    let map = unsafe { Mmap::map(&f) }.map_err(io_ctx("mmap", &p))?;
    let total = sum(as_f64(&map));
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "memmap2 scan: {} bytes in {s:.3} s; {}",
        a.size_bytes,
        pmd_note()
    );
    out.scan(a.size_bytes, s, total)?;
    std::thread::sleep(Duration::from_millis(a.hold_ms));
    Ok(())
}

fn randread(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
    let p = path(a);
    let offsets = randread_offsets(a.seed, n);
    let f = open(a, false)?;
    // SAFETY: nothing else writes the file during the phase.
    let map = unsafe { Mmap::map(&f) }.map_err(io_ctx("mmap", &p))?;
    let slice = as_f64(&map);
    time_reads(slice, &offsets, "memmap2", out)
}

fn sparse(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
    let p = path(a);
    let pos = sparse_positions(a.seed, n);
    let f = open(a, true)?;
    // SAFETY: nothing else maps or writes the file during the phase.
    let mut map = unsafe { MmapMut::map_mut(&f) }.map_err(io_ctx("mmap", &p))?;
    let t = Instant::now();
    {
        let slice = as_f64_mut(&mut map);
        for &q in &pos {
            slice[q as usize] = -(q as f64);
        }
    }
    let update = t.elapsed();
    let t = Instant::now();
    map.flush().map_err(io_ctx("msync", &p))?;
    let commit = t.elapsed();
    eprintln!("memmap2 sparse: {} positions", pos.len());
    out.sparse(update, commit)
}

fn small(a: &BenchArgs, n: u64, out: &Out) -> R<()> {
    let p = path(a);
    let pos = small_positions(a.seed, n);
    let f = open(a, true)?;
    // SAFETY: nothing else maps or writes the file during the phase.
    let mut map = unsafe { MmapMut::map_mut(&f) }.map_err(io_ctx("mmap", &p))?;
    let mut times = Vec::with_capacity(pos.len());
    for (k, &q) in pos.iter().enumerate() {
        let t = Instant::now();
        as_f64_mut(&mut map)[q as usize] = 1e6 + k as f64;
        map.flush().map_err(io_ctx("msync", &p))?;
        times.push(t.elapsed());
    }
    let med = median(&mut times);
    eprintln!("memmap2 small: {} commits", times.len());
    out.fig("W5", "median_ms", ms(med), "ms")?;
    append4k_fdatasync(a, pos.len(), out)
}

/// The yardstick for W5: one 4 KiB append + fdatasync to a plain file,
/// as many times as W5 commits (median). The file is removed afterwards.
fn append4k_fdatasync(a: &BenchArgs, count: usize, out: &Out) -> R<()> {
    let p = a.dir.join("append4k.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(io_ctx("create", &p))?;
    let page = [0x5au8; 4096];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        f.write_all(&page).map_err(io_ctx("write", &p))?;
        f.sync_data().map_err(io_ctx("fdatasync", &p))?;
        times.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&p).map_err(io_ctx("remove", &p))?;
    let med = median(&mut times);
    out.fig("W5", "append4k_fdatasync_median_ms", ms(med), "ms")
}
