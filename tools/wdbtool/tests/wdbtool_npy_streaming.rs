//! wdbtool import and export stream: a 96 MiB .npy file goes in (in one transaction,
//! through its spill file) and comes back out byte for byte while the wdbtool processes
//! stay far below the array's size in resident memory (so arrays bigger than RAM work).

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::Command;

const N: u64 = 12 << 20; // f64 elements: 96 MiB
const CHUNK: u64 = 1 << 17;

fn value(i: u64) -> f64 {
    // Poorly compressible, so that blocks really hold data.
    ((i.wrapping_mul(2654435761)) % 1_000_003) as f64 * 1.000001
}

/// Peak resident set of the largest child process waited for so far, in bytes.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage writes one rusage struct to the pointer, which is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    u64::try_from(ru.ru_maxrss).unwrap() << 10 // KiB on Linux
}

fn run(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_wdbtool"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn import_and_export_of_96_mib_stay_small_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("big.npy");
    let db = dir.path().join("big.wdb");
    let back = dir.path().join("back.npy");
    // Written in chunks, as NumPy would: header (128 bytes) then the data.
    {
        let mut w = BufWriter::new(std::fs::File::create(&npy).unwrap());
        let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({N},), }}");
        let growth = 21 - N.to_string().len();
        let pad = 64 - (10 + dict.len() + growth + 1) % 64;
        let hlen = dict.len() + growth + pad + 1;
        w.write_all(b"\x93NUMPY\x01\x00").unwrap();
        w.write_all(&u16::try_from(hlen).unwrap().to_le_bytes())
            .unwrap();
        w.write_all(dict.as_bytes()).unwrap();
        w.write_all(&vec![b' '; growth + pad]).unwrap();
        w.write_all(b"\n").unwrap();
        for c in 0..N / CHUNK {
            let v: Vec<u8> = (c * CHUNK..(c + 1) * CHUNK)
                .flat_map(|i| value(i).to_le_bytes())
                .collect();
            w.write_all(&v).unwrap();
        }
        w.flush().unwrap();
    }
    let p = |x: &std::path::Path| x.to_str().unwrap().to_owned();
    run(&["import", &p(&db), "big", &p(&npy)]);
    assert_eq!(
        wdb::Db::open(&db).unwrap().history().unwrap().len(),
        1,
        "one transaction"
    );
    run(&["export", &p(&db), "big", &p(&back)]);

    // Same bytes, compared in chunks.
    let (mut a, mut b) = (
        BufReader::new(std::fs::File::open(&npy).unwrap()),
        BufReader::new(std::fs::File::open(&back).unwrap()),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            assert_eq!(b.read(&mut y).unwrap(), 0, "exported file is longer");
            break;
        }
        b.read_exact(&mut y[..n]).unwrap();
        assert!(x[..n] == y[..n], "exported bytes differ");
    }

    // Checked read through the typed API too.
    let d = wdb::Db::open(&db).unwrap();
    let snap = d.snapshot().unwrap();
    let arr = snap.array::<f64>("big").unwrap();
    assert_eq!(arr.len(), N);
    assert_eq!(
        arr.to_vec(N - 3..).unwrap(),
        vec![value(N - 3), value(N - 2), value(N - 1)]
    );

    let rss = children_max_rss();
    eprintln!(
        "largest wdbtool resident set: {} MiB for a 96 MiB array",
        rss >> 20
    );
    assert!(
        rss < 48 << 20,
        "a wdbtool process held {rss} bytes for a 96 MiB array"
    );
}
