//! `wdbtool bench` through the built binary: every phase of both peers (wdb and the
//! memmap2 baseline) on a small array prints well-formed JSON lines with the workload
//! and metric names of docs/benchmarks.md, the W2 sum is the sum of the formula's
//! elements, and bad arguments give a message and a non-zero exit, never a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const SIZE: u64 = 16 << 20;

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wdbtool"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
}

/// A strict parser of the flat JSON objects the protocol prints: string keys, string or
/// number values. Returns `None` on anything that is not valid JSON of that shape.
fn parse_line(s: &str) -> Option<BTreeMap<String, Val>> {
    let b = s.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Option<String> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        *i += 1;
        let start = *i;
        while *i < b.len() && b[*i] != b'"' {
            if b[*i] == b'\\' || b[*i] < 0x20 {
                return None; // the protocol's strings need no escapes
            }
            *i += 1;
        }
        let out = std::str::from_utf8(b.get(start..*i)?).ok()?.to_string();
        *i += 1;
        Some(out)
    };
    let number = |i: &mut usize| -> Option<f64> {
        let start = *i;
        if b.get(*i) == Some(&b'-') {
            *i += 1;
        }
        let d0 = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        if *i == d0 || (b[d0] == b'0' && *i - d0 > 1) {
            return None;
        }
        if b.get(*i) == Some(&b'.') {
            *i += 1;
            let f0 = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i == f0 {
                return None;
            }
        }
        if matches!(b.get(*i), Some(b'e' | b'E')) {
            *i += 1;
            if matches!(b.get(*i), Some(b'+' | b'-')) {
                *i += 1;
            }
            let e0 = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i == e0 {
                return None;
            }
        }
        std::str::from_utf8(&b[start..*i]).ok()?.parse().ok()
    };
    let mut m = BTreeMap::new();
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        ws(&mut i);
        let k = string(&mut i)?;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let v = if b.get(i) == Some(&b'"') {
            Val::Str(string(&mut i)?)
        } else {
            Val::Num(number(&mut i)?)
        };
        if m.insert(k, v).is_some() {
            return None;
        }
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    ws(&mut i);
    (i == b.len()).then_some(m)
}

#[test]
fn json_parser_is_strict() {
    assert!(parse_line(r#"{"a": "x", "b": -1.5e3}"#).is_some());
    for bad in [
        r#"{"a": NaN}"#,
        r#"{"a": 01}"#,
        r#"{"a": 1.}"#,
        r#"{"a": "x",}"#,
        r#"{"a": "x"} x"#,
        r#"{"a" "x"}"#,
        r#"{"a": inf}"#,
    ] {
        assert!(parse_line(bad).is_none(), "{bad}");
    }
}

/// One figure: (workload, metric, value, unit).
type Fig = (String, String, f64, String);

/// The arguments of one run: `--phase phase --dir dir --size-bytes size`, then `extra`.
fn run_args<'a>(phase: &'a str, dir: &'a str, size: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--phase", phase, "--dir", dir, "--size-bytes", size];
    args.extend_from_slice(extra);
    args
}

/// The first character of a stdout line that carries a figure (a JSON object).
const FIGURE_START: char = '{';

/// Does this stdout line carry a figure?
fn is_figure(line: &str) -> bool {
    line.starts_with(FIGURE_START)
}

/// The figure of the JSON line `line`: exactly the protocol's five fields, of `peer`.
fn figure(line: &str, peer: &str) -> Fig {
    let m = parse_line(line).unwrap_or_else(|| panic!("not a JSON figure: {line}"));
    assert_eq!(m.len(), 5, "{line}");
    let s = |k: &str| match m.get(k) {
        Some(Val::Str(s)) => s.clone(),
        _ => panic!("{k} is not a string in {line}"),
    };
    assert_eq!(s("peer"), peer, "{line}");
    let v = match m.get("value") {
        Some(Val::Num(v)) => *v,
        _ => panic!("value is not a number in {line}"),
    };
    (s("workload"), s("metric"), v, s("unit"))
}

/// Run one phase; check exit 0, that every stdout line starting with `{` is a figure of
/// `peer`, and return the figures.
fn phase(peer_flag: &[&str], phase: &str, dir: &Path, extra: &[&str]) -> Vec<Fig> {
    let size = SIZE.to_string();
    let flags = [peer_flag, extra].concat();
    let args = run_args(phase, dir.to_str().unwrap(), &size, &flags);
    let o = tool(&args);
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{args:?}: {:?}\n{out}\n{err}", o.status);
    let peer = if peer_flag.is_empty() {
        "wdb"
    } else {
        "memmap2"
    };
    out.lines()
        .filter(|l| is_figure(l))
        .map(|l| figure(l, peer))
        .collect()
}

fn names(f: &[Fig]) -> Vec<(&str, &str, &str)> {
    f.iter()
        .map(|(w, m, _, u)| (w.as_str(), m.as_str(), u.as_str()))
        .collect()
}

fn element(i: u64) -> f64 {
    let h = (i.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
    (2.0 * std::f64::consts::PI * i as f64 / 65_536.0).sin() + 1e-3 * (h - 0.5)
}

/// The sum of the formula's elements in the bench's documented order: eight lanes of
/// `i mod 8`, combined pairwise, then the tail.
fn formula_sum(n: u64) -> f64 {
    let mut s = [0.0f64; 8];
    let whole = n / 8 * 8;
    for i in 0..whole {
        s[(i % 8) as usize] += element(i);
    }
    let mut t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for i in whole..n {
        t += element(i);
    }
    t
}

fn all_phases(peer_flag: &[&str], extra: &[&str]) -> f64 {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let n = SIZE / 8;

    let f = phase(peer_flag, "ingest", dir, extra);
    assert_eq!(
        names(&f),
        [("W1", "ingest_MBps", "MB/s"), ("W1", "ingest_s", "s")]
    );
    assert!(f.iter().all(|x| x.2 > 0.0), "{f:?}");
    assert!((f[0].2 * f[1].2 - SIZE as f64 / 1e6).abs() < 1e-6 * SIZE as f64);

    let mut sums = Vec::new();
    for _cold_then_warm in 0..2 {
        let f = phase(peer_flag, "scan", dir, extra);
        assert_eq!(names(&f), [("W2", "scan_GBps", "GB/s"), ("W2", "sum", "")]);
        assert!(f[0].2 > 0.0);
        sums.push(f[1].2);
    }
    assert_eq!(sums[0], sums[1]);
    assert_eq!(sums[0], formula_sum(n), "W2 sum against the formula");

    let f = phase(peer_flag, "randread", dir, extra);
    assert_eq!(
        names(&f),
        [("W3", "median_us", "us"), ("W3", "p99_us", "us")]
    );
    assert!(f[0].2 > 0.0 && f[1].2 >= f[0].2, "{f:?}");

    let f = phase(peer_flag, "sparse", dir, extra);
    assert_eq!(
        names(&f),
        [
            ("W4", "total_ms", "ms"),
            ("W4", "update_ms", "ms"),
            ("W4", "commit_ms", "ms")
        ]
    );
    assert!((f[0].2 - f[1].2 - f[2].2).abs() < 1e-6, "{f:?}");

    let f = phase(peer_flag, "small", dir, extra);
    if peer_flag.is_empty() {
        assert_eq!(names(&f), [("W5", "median_ms", "ms")]);
    } else {
        // The baseline also measures the yardstick of W5: a 4 KiB append + fdatasync.
        assert_eq!(
            names(&f),
            [
                ("W5", "median_ms", "ms"),
                ("W5", "append4k_fdatasync_median_ms", "ms")
            ]
        );
        assert!(!dir.join("append4k.tmp").exists());
    }
    assert!(f.iter().all(|x| x.2 > 0.0), "{f:?}");

    // The writes of sparse and small are in the data: a scan now sees them.
    let f = phase(peer_flag, "scan", dir, extra);
    assert_ne!(f[1].2, sums[0]);
    f[1].2
}

#[test]
fn every_phase_of_both_peers() {
    let wdb = all_phases(&[], &["--compression", "none", "--ram-budget", "33554432"]);
    let base = all_phases(&["--baseline"], &[]);
    // Both peers hold the same data after the same writes, and sum it the same way.
    assert_eq!(wdb, base);
}

#[test]
fn zstd_and_block_size() {
    let d = tempfile::tempdir().unwrap();
    let extra = ["--compression", "zstd", "--block-size", "1048576"];
    phase(&[], "ingest", d.path(), &extra);
    // A RAM budget of a quarter of the array: the scan reclaims blocks as it goes.
    let f = phase(&[], "scan", d.path(), &["--ram-budget", "4194304"]);
    assert_eq!(f[1].2, formula_sum(SIZE / 8));
}

/// Run with `args`: a non-zero exit, a message on stderr that says `want` (any case),
/// no panic, and no figure on stdout.
fn fails(args: &[&str], want: &str) {
    let o = tool(args);
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(
        err.to_lowercase().contains(&want.to_lowercase()),
        "{args:?}: {err:?} does not say {want:?}"
    );
    assert!(!out.lines().any(is_figure), "{args:?}: {out}");
}

/// One run that must fail: phase, dir, size, further arguments, what stderr says.
type Bad<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a str);

#[test]
fn bad_arguments() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let missing = d.path().join("nope");
    let missing = missing.to_str().unwrap();
    let fail_all = |cases: &[Bad<'_>]| {
        for &(phase, dir, size, extra, want) in cases {
            fails(&run_args(phase, dir, size, extra), want);
        }
    };
    fail_all(&[
        ("ingest", missing, "65536", &[], "not an existing directory"),
        ("ingest", dir, "65537", &[], "multiple of 8"),
        ("ingest", dir, "8", &[], "too small"),
        ("ingest", dir, "-8", &[], "size-bytes"),
        ("nope", dir, "65536", &[], "invalid value 'nope'"),
    ]);
    fails(&["--dir", dir, "--size-bytes", "65536"], "--phase");
    fail_all(&[
        ("scan", dir, "65536", &[], "ingest"),
        ("randread", dir, "65536", &["--baseline"], "ingest"),
        (
            "ingest",
            dir,
            "65536",
            &["--block-size", "1000"],
            "power of two",
        ),
        (
            "ingest",
            dir,
            "65536",
            &["--compression", "lz4"],
            "invalid value 'lz4'",
        ),
    ]);
    // Ingest twice into one dir, and a scan with another size than the ingest's.
    assert!(tool(&run_args("ingest", dir, "65536", &[]))
        .status
        .success());
    fail_all(&[
        ("ingest", dir, "65536", &[], "already exists"),
        ("scan", dir, "131072", &[], "elements"),
    ]);
    // A RAM budget below one block: wdb's own error, without the ingest hint.
    let o = tool(&run_args("scan", dir, "65536", &["--ram-budget", "4096"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("ram_budget"), "{err}");
    assert!(
        !err.contains("ingest") && !err.contains("panicked"),
        "{err}"
    );
}
