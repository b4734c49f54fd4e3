//! wdbtool on object storage: `copy` file → s3:// → file keeps a snapshot exactly, and
//! info, ls, log, cat, fsck and compact take s3:// URLs; `bench` runs the phases of wdb
//! and of its plain `object_store` baseline there. Needs the gateway of
//! `.ci/ceph-start.sh` (skips, saying why, without its variables); `copy` between files
//! and the URL errors run everywhere.

use std::path::Path;
use std::process::{Command, Output};

use wdb::db::{Db, Options};

fn wdbtool(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wdbtool"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap()
}

fn ok(args: &[&str], cache: &Path) -> String {
    let o = wdbtool(args, cache);
    assert!(
        o.status.success(),
        "wdbtool {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A local database with two arrays and three commits.
fn source(p: &Path) {
    let db = Db::open(p).unwrap();
    for k in 0..3u64 {
        let tx = db.begin().unwrap();
        let mut a = match tx.array_mut::<f64>("a") {
            Ok(a) => a,
            Err(_) => tx.create_array::<f64>("a", &[600_000]).unwrap(),
        };
        a.view_mut(..).unwrap().fill(k as f64 + 0.5);
        drop(a);
        if k == 0 {
            let mut b = tx.create_array::<i32>("b", &[10, 7]).unwrap();
            b.view_mut(2..3).unwrap().fill(-4);
        }
        tx.commit().unwrap();
    }
}

fn sums(p: &str) -> (f64, i64) {
    let db = Db::open_url(p, Options::default().read_only(true)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<f64>("a").unwrap().view(..).unwrap().sum();
    let b = s
        .array::<i32>("b")
        .unwrap()
        .view(..)
        .unwrap()
        .iter()
        .map(|&x| i64::from(x))
        .sum();
    (a, b)
}

#[test]
fn copy_between_files_takes_a_snapshot_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.wdb");
    source(&src);
    let (s, dst) = (src.to_str().unwrap(), d.path().join("dst.wdb"));
    let out = ok(&["copy", s, dst.to_str().unwrap(), "--at", "1"], d.path());
    assert!(out.contains("at tid 1"), "{out}");
    assert_eq!(sums(dst.to_str().unwrap()), (0.5 * 600_000.0, -28));
    let again = wdbtool(&["copy", s, dst.to_str().unwrap()], d.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = wdbtool(&["info", "gopher://x/y"], d.path());
    assert_eq!(bad.status.code(), Some(2));
}

/// A fresh prefix under the gateway's test URL for `test` (`name` tells its objects
/// apart within the test), or None, saying why, when no gateway is configured.
fn gateway_prefix(test: &str, name: &str) -> Option<String> {
    let Ok(base) = std::env::var("WDB_S3_TEST_URL") else {
        eprintln!("{test}: skipped: WDB_S3_TEST_URL and the AWS_* variables of an S3 gateway are not set (.ci/ceph-start.sh prints them)");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some(format!("{base}/t-{name}-{}-{nanos}", std::process::id()))
}

#[test]
fn copy_to_s3_and_back_and_every_command_on_a_url() {
    let Some(url) = gateway_prefix("copy_to_s3_and_back", "wdbtool") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.wdb");
    source(&src);
    let c = d.path().join("cache");
    ok(&["copy", src.to_str().unwrap(), &url], &c);
    assert_eq!(sums(&url), (2.5 * 600_000.0, -28));
    assert!(ok(&["info", &url], &c).contains("last tid:        1"));
    assert!(ok(&["ls", &url], &c).contains("f64"));
    assert!(ok(&["cat", &url, "a", "0..2"], &c).contains("2.5"));
    assert!(ok(&["fsck", &url], &c).starts_with("clean"));
    let back = d.path().join("back.wdb");
    ok(&["copy", &url, back.to_str().unwrap()], &c);
    assert_eq!(sums(back.to_str().unwrap()), (2.5 * 600_000.0, -28));
    ok(&["compact", &url], &c);
    assert!(ok(&["fsck", &url], &c).starts_with("clean"));
}

/// The figures (workload, metric, value) of `wdbtool bench` output lines of `peer`.
fn figures(out: &str, peer: &str) -> Vec<(String, String, f64)> {
    let field = |line: &str, k: &str| -> String {
        let (_, rest) = line
            .split_once(&format!("\"{k}\": "))
            .unwrap_or_else(|| panic!("no {k} in {line}"));
        rest.split([',', '}'])
            .next()
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_string()
    };
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            assert_eq!(field(l, "peer"), peer, "{l}");
            let v = field(l, "value");
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("value {v:?} in {l}"));
            (field(l, "workload"), field(l, "metric"), v)
        })
        .collect()
}

/// `wdbtool bench` on the gateway, wdb and its baseline of plain `object_store` calls:
/// every phase they share runs, both sum the same elements, and each W3 p99 is at
/// least its median.
#[test]
fn bench_phases_of_both_peers_on_the_gateway() {
    let test = "bench_phases_of_both_peers_on_the_gateway";
    if gateway_prefix(test, "bench").is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("cache");
    let size = (4u64 << 20).to_string();
    let mut sums = Vec::new();
    for (peer, flags) in [("wdb", &[][..]), ("s3-plain", &["--baseline"][..])] {
        let url = gateway_prefix(test, &format!("bench-{peer}")).unwrap();
        let cache = d.path().join(format!("bench-cache-{peer}"));
        let run = |phase: &str| {
            let mut args = vec![
                "bench",
                "--phase",
                phase,
                "--dir",
                &url,
                "--size-bytes",
                &size,
                "--cache-dir",
                cache.to_str().unwrap(),
            ];
            args.extend_from_slice(flags);
            figures(&ok(&args, &c), peer)
        };
        let f = run("ingest");
        assert!(f.iter().all(|x| x.0 == "W1" && x.2 > 0.0), "{f:?}");
        let f = run("scan");
        assert_eq!(f[1].1, "sum", "{f:?}");
        sums.push(f[1].2);
        let f = run("randread");
        assert_eq!(
            (f[0].1.as_str(), f[1].1.as_str()),
            ("median_us", "p99_us"),
            "{f:?}"
        );
        assert!(f[0].2 > 0.0 && f[1].2 >= f[0].2, "{peer}: {f:?}");
        let f = run("small");
        assert!(
            f.iter()
                .any(|x| x.0 == "W5" && x.1 == "median_ms" && x.2 > 0.0),
            "{f:?}"
        );
    }
    // The same elements, summed in another order (the baseline sums chunk by chunk).
    assert!((sums[0] - sums[1]).abs() < 1e-6, "{sums:?}");
}
