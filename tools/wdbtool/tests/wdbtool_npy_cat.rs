//! wdbtool export/import round-trip arrays through NumPy .npy files (f64 C, i32 F, a record as a structured dtype, several 64 KiB blocks, an import bigger than its transaction's share of memory, in one transaction) byte for byte as NumPy writes them; cat prints rows of any type and ls shows record fields; a missing array, a bad range or a bad file is a message and exit 2, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wdb::array::Element;
use wdb::{ArrayOptions, Db, Order};

wdb::record! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Reading { pub t: i64, pub v: f32, pub q: u32 }
}

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wdbtool"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = tool(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit 2 with a message containing `want`, and no panic.
fn fails(args: &[&str], want: &str) {
    let o = tool(args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
    assert!(t.contains(want), "{args:?}: expected {want:?} in: {t}");
    assert!(!t.contains("panicked"), "{args:?}: {t}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `.npy` file as NumPy (1.x and 2.x) writes it: magic, version 1.0, header length,
/// the dict, spaces for the growth axis and padding to 64 bytes, '\n', the data.
/// `spaces` is written out by hand for each fixture, not computed by the code under test.
fn numpy_file(dict: &str, spaces: usize, data: &[u8]) -> Vec<u8> {
    let hlen = dict.len() + spaces + 1;
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&u16::try_from(hlen).unwrap().to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.extend(std::iter::repeat_n(b' ', spaces));
    v.push(b'\n');
    assert_eq!((v.len()) % 64, 0, "fixture header is not 64-byte aligned");
    v.extend_from_slice(data);
    v
}

fn bytes_of<T: Element>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn numpy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
}

fn fixture() -> Fixture {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    Fixture {
        db: dir.join("t.wdb"),
        dir,
        _dir: d,
    }
}

fn make<T: Element>(db: &Path, name: &str, shape: &[u64], order: Order, data: &[T]) {
    let db = Db::open(db).unwrap();
    let tx = db.begin().unwrap();
    let opts = ArrayOptions::default().order(order).block_size(64 << 10);
    tx.create_array_with::<T>(name, shape, opts)
        .unwrap()
        .write_from(.., data)
        .unwrap();
    tx.commit().unwrap();
}

fn read<T: Element>(db: &Path, name: &str) -> (Vec<u64>, Order, Vec<T>) {
    let db = Db::open(db).unwrap();
    let snap = db.snapshot().unwrap();
    let a = snap.array::<T>(name).unwrap();
    (a.shape().to_vec(), a.order(), a.to_vec(..).unwrap())
}

/// Export `name`, check the file against `expect` (header and data as NumPy writes
/// them), import it as `name2`, check the data, re-export and compare the bytes.
fn round_trip<T: Element + PartialEq + std::fmt::Debug>(f: &Fixture, name: &str, expect: &[u8]) {
    let out = f.dir.join(format!("{name}.npy"));
    ok(&["export", s(&f.db), name, s(&out)]);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expect.len(), "{name}: file size");
    assert!(got == expect, "{name}: exported bytes differ from NumPy's");
    let copy = format!("{name}_copy");
    ok(&["import", s(&f.db), &copy, s(&out), "--block-size", "64K"]);
    let (s1, o1, d1) = read::<T>(&f.db, name);
    let (s2, o2, d2) = read::<T>(&f.db, &copy);
    assert_eq!((s1, o1), (s2, o2));
    assert!(d1 == d2, "{name}: imported data differ");
    let again = f.dir.join(format!("{name}_again.npy"));
    ok(&["export", s(&f.db), &copy, s(&again)]);
    assert!(std::fs::read(&again).unwrap() == expect);
}

#[test]
fn f64_c_order_round_trip_in_numpy_bytes() {
    let f = fixture();
    // 20 000 f64 = 160 000 bytes: three 64 KiB blocks.
    let data: Vec<f64> = (0..20_000).map(|i| (i as f64).sin() * 1e3).collect();
    make(&f.db, "sig", &[20_000], Order::C, &data);
    let expect = numpy_file(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (20000,), }",
        16 + 40,
        &bytes_of(&data),
    );
    round_trip::<f64>(&f, "sig", &expect);
}

#[test]
fn i32_f_order_round_trip_in_numpy_bytes() {
    let f = fixture();
    // F order, shape (3, 7000): the data are the columns one after another.
    let data: Vec<i32> = (0..21_000).map(|i| i * 7 - 50_000).collect();
    make(&f.db, "m", &[3, 7000], Order::F, &data);
    let expect = numpy_file(
        "{'descr': '<i4', 'fortran_order': True, 'shape': (3, 7000), }",
        17 + 39,
        &bytes_of(&data),
    );
    round_trip::<i32>(&f, "m", &expect);
    let (shape, order, _) = read::<i32>(&f.db, "m_copy");
    assert_eq!((shape, order), (vec![3, 7000], Order::F));
}

#[test]
fn record_round_trip_as_structured_dtype() {
    let f = fixture();
    let data: Vec<Reading> = (0..5000)
        .map(|i| Reading {
            t: i * 10,
            v: i as f32 / 4.0,
            q: (i * 3) as u32,
        })
        .collect();
    make(&f.db, "r", &[5000], Order::C, &data);
    let expect = numpy_file(
        "{'descr': [('t', '<i8'), ('v', '<f4'), ('q', '<u4')], 'fortran_order': False, 'shape': (5000,), }",
        17 + 3,
        &bytes_of(&data),
    );
    round_trip::<Reading>(&f, "r", &expect);
    let (_, _, back) = read::<Reading>(&f.db, "r_copy");
    assert_eq!(
        back[4999],
        Reading {
            t: 49_990,
            v: 4999.0 / 4.0,
            q: 14_997
        }
    );
}

#[test]
fn imports_files_as_numpy_writes_them() {
    // The three smallest files NumPy writes for np.arange(3.), an F-order (2, 3) int32
    // array, and a structured array: every header is 128 bytes (header length 118).
    let f = fixture();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "a",
            numpy_file(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                60,
                &bytes_of(&[0.0f64, 1.0, 2.0]),
            ),
        ),
        (
            "b",
            numpy_file(
                "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }",
                59,
                &bytes_of(&[0i32, 1, 2, 3, 4, 5]),
            ),
        ),
        (
            "c",
            numpy_file(
                "{'descr': [('t', '<i8'), ('v', '<f4'), ('q', '<u4')], 'fortran_order': False, 'shape': (2,), }",
                23,
                &bytes_of(&[Reading { t: -1, v: 0.5, q: 7 }, Reading { t: 2, v: 1.5, q: 8 }]),
            ),
        ),
    ];
    for (name, bytes) in &cases {
        assert_eq!(&bytes[8..10], &[118, 0]);
        let p = f.dir.join(format!("{name}.npy"));
        std::fs::write(&p, bytes).unwrap();
        ok(&["import", s(&f.db), name, s(&p)]);
        let back = f.dir.join(format!("{name}_back.npy"));
        ok(&["export", s(&f.db), name, s(&back)]);
        assert!(&std::fs::read(&back).unwrap() == bytes, "{name}");
    }
    assert_eq!(read::<f64>(&f.db, "a").2, vec![0.0, 1.0, 2.0]);
    let (shape, order, d) = read::<i32>(&f.db, "b");
    assert_eq!(
        (shape, order, d),
        (vec![2, 3], Order::F, vec![0, 1, 2, 3, 4, 5])
    );
    assert_eq!(
        read::<Reading>(&f.db, "c").2[1],
        Reading { t: 2, v: 1.5, q: 8 }
    );

    // And NumPy itself, where it is installed.
    if !numpy_available() {
        eprintln!("skipped: comparison with NumPy (python3 -c 'import numpy' fails here)");
        return;
    }
    let script = format!(
        r#"
import numpy as np
d = {dir:?}
a = np.load(d + "/a_back.npy"); assert a.dtype == np.float64 and list(a) == [0.0, 1.0, 2.0]
b = np.load(d + "/b_back.npy"); assert b.flags.f_contiguous and b.tolist() == [[0, 2, 4], [1, 3, 5]]
c = np.load(d + "/c_back.npy"); assert c.dtype.names == ("t", "v", "q") and c[1]["q"] == 8
np.save(d + "/np_f.npy", np.asfortranarray(np.arange(12, dtype="<i4").reshape(3, 4)))
for n in "abc":
    assert open(d + "/" + n + ".npy", "rb").read() == open(d + "/" + n + "_back.npy", "rb").read()
"#,
        dir = s(&f.dir)
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    ok(&["import", s(&f.db), "np_f", s(&f.dir.join("np_f.npy"))]);
    let (shape, order, d) = read::<i32>(&f.db, "np_f");
    assert_eq!((shape, order), (vec![3, 4], Order::F));
    assert_eq!(d, vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
}

#[test]
fn padded_and_nested_structured_dtypes_round_trip() {
    // np.dtype([('a', 'u1'), ('b', '<f8')], align=True): NumPy writes the padding as an
    // unnamed void field. And a nested record.
    let f = fixture();
    let mut padded = Vec::new();
    for (a, b) in [(5u8, 2.5f64), (6, -1.0)] {
        padded.push(a);
        padded.extend_from_slice(&[0; 7]);
        padded.extend_from_slice(&b.to_le_bytes());
    }
    let mut nested = Vec::new();
    for x in [1.0f64, 2.0] {
        nested.extend_from_slice(&x.to_le_bytes());
    }
    nested.extend_from_slice(&3u64.to_le_bytes());
    let cases = [
        (
            "pad",
            numpy_file(
                "{'descr': [('a', '|u1'), ('', '|V7'), ('b', '<f8')], 'fortran_order': False, 'shape': (2,), }",
                20 + 4,
                &padded,
            ),
            ["0: {a: 5, b: 2.5}", "1: {a: 6, b: -1}"].as_slice(),
            "fields: a: u8 @0, b: f64 @8",
        ),
        (
            "nest",
            numpy_file(
                "{'descr': [('p', [('x', '<f8'), ('y', '<f8')]), ('id', '<u8')], 'fortran_order': False, 'shape': (1,), }",
                20 + 57,
                &nested,
            ),
            ["0: {p: {x: 1, y: 2}, id: 3}"].as_slice(),
            "fields: p: {x: f64, y: f64} @0, id: u64 @16",
        ),
    ];
    for (name, bytes, rows, fields) in cases {
        let p = f.dir.join(format!("{name}.npy"));
        std::fs::write(&p, &bytes).unwrap();
        ok(&["import", s(&f.db), name, s(&p)]);
        let back = f.dir.join(format!("{name}_back.npy"));
        ok(&["export", s(&f.db), name, s(&back)]);
        assert!(std::fs::read(&back).unwrap() == bytes, "{name}");
        let out = ok(&["cat", s(&f.db), name]);
        assert_eq!(out.lines().skip(1).collect::<Vec<_>>(), rows);
        assert!(ok(&["ls", s(&f.db)]).contains(fields), "{name}");
    }
}

#[test]
fn big_import_is_one_transaction_and_appears_whole() {
    let f = fixture();
    // 3.2 MB of f64: one transaction, whatever the size.
    let data: Vec<f64> = (0..400_000).map(|i| i as f64 + 0.25).collect();
    let mut header = numpy_file(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (400000,), }",
        15 + 40,
        &[],
    );
    let p = f.dir.join("big.npy");
    header.extend_from_slice(&bytes_of(&data));
    std::fs::write(&p, &header).unwrap();
    let out = ok(&["import", s(&f.db), "big", s(&p), "--block-size", "256K"]);
    assert!(out.contains("one transaction"), "{out}");
    let before = Db::open(&f.db).unwrap().last_tid().unwrap();
    assert_eq!(read::<f64>(&f.db, "big").2, data);
    assert_eq!(Db::open(&f.db).unwrap().history().unwrap().len(), 1);
    assert!(Db::open(&f.db).unwrap().fsck().unwrap().is_clean());

    // A truncated big file fails: nothing is left behind, not even a commit.
    let cut = f.dir.join("cut.npy");
    std::fs::write(&cut, &header[..header.len() - 1000]).unwrap();
    fails(&["import", s(&f.db), "cut", s(&cut)], "truncated");
    assert_eq!(Db::open(&f.db).unwrap().last_tid().unwrap(), before);
    let names = Db::open(&f.db)
        .unwrap()
        .snapshot()
        .unwrap()
        .array_names()
        .unwrap();
    assert_eq!(names, vec!["big".to_string()]);
}

#[test]
fn cat_prints_rows_of_any_type() {
    let f = fixture();
    make(&f.db, "x", &[5], Order::C, &[0.5f64, 1.0, 1.5, 2.0, 2.5]);
    make(&f.db, "m", &[2, 3], Order::F, &[0i32, 1, 2, 3, 4, 5]);
    make(&f.db, "c", &[2, 3], Order::C, &[0u16, 1, 2, 3, 4, 5]);
    let recs = [
        Reading { t: 1, v: 0.5, q: 2 },
        Reading {
            t: -3,
            v: 4.0,
            q: 5,
        },
    ];
    make(&f.db, "r", &[2], Order::C, &recs);
    let body = |o: String| o.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    let x = ok(&["cat", s(&f.db), "x"]);
    assert!(
        x.starts_with("# x: f64, shape [5], order C, rows 0..5 of 5"),
        "{x}"
    );
    assert_eq!(body(x), ["0: 0.5", "1: 1", "2: 1.5", "3: 2", "4: 2.5"]);
    assert_eq!(
        body(ok(&["cat", s(&f.db), "x", "1..3"])),
        ["1: 1", "2: 1.5"]
    );
    assert_eq!(body(ok(&["cat", s(&f.db), "x", "..2"])), ["0: 0.5", "1: 1"]);
    assert_eq!(body(ok(&["cat", s(&f.db), "x", "4"])), ["4: 2.5"]);
    assert_eq!(body(ok(&["cat", s(&f.db), "x", "3.."])), ["3: 2", "4: 2.5"]);
    assert_eq!(body(ok(&["cat", s(&f.db), "x", "1..=1"])), ["1: 1"]);
    // F order: a row is one index of the last axis, a column.
    assert_eq!(
        body(ok(&["cat", s(&f.db), "m"])),
        ["0: [0, 1]", "1: [2, 3]", "2: [4, 5]"]
    );
    assert_eq!(
        body(ok(&["cat", s(&f.db), "c"])),
        ["0: [0, 1, 2]", "1: [3, 4, 5]"]
    );
    assert_eq!(
        body(ok(&["cat", s(&f.db), "r"])),
        ["0: {t: 1, v: 0.5, q: 2}", "1: {t: -3, v: 4, q: 5}"]
    );
    let ls = ok(&["ls", s(&f.db)]);
    assert!(
        ls.contains("fields: t: i64 @0, v: f32 @8, q: u32 @12"),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with('m') && l.contains("[2, 3]") && l.contains(" F ")),
        "{ls}"
    );
}

#[test]
fn bad_input_is_a_message_and_exit_2() {
    let f = fixture();
    make(&f.db, "x", &[5], Order::C, &[0.5f64; 5]);
    make(&f.db, "wide", &[2], Order::C, &[1u128, 2]);
    let db = s(&f.db);
    let out = f.dir.join("o.npy");
    let o = s(&out);

    fails(&["cat", db, "nope"], "not found");
    fails(&["export", db, "nope", o], "not found");
    assert!(!out.exists(), "no file is left by a failed export");
    fails(&["cat", s(&f.dir.join("missing.wdb")), "x"], "not found");
    fails(&["cat", db, "x", "3..9"], "out of range");
    fails(&["cat", db, "x", "5"], "out of range");
    fails(&["cat", db, "x", "4..2"], "out of range");
    fails(&["cat", db, "x", "a..b"], "not a row number");
    fails(&["export", db, "wide", o], "no NumPy equivalent");
    assert!(!out.exists());

    let good = numpy_file(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
        60,
        &bytes_of(&[0.0f64, 1.0, 2.0]),
    );
    let put = |name: &str, bytes: &[u8]| {
        let p = f.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let p = put("good.npy", &good);
    fails(&["import", db, "x", s(&p)], "already exists");
    fails(&["import", db, "y", s(&f.dir.join("none.npy"))], "none.npy");
    fails(
        &["import", db, "y", s(&put("junk.npy", b"hello, world"))],
        "not a NumPy .npy file",
    );
    fails(
        &["import", db, "y", s(&put("empty.npy", b""))],
        "not a valid .npy file",
    );
    fails(
        &["import", db, "y", s(&put("short.npy", &good[..140]))],
        "truncated",
    );
    let mut long = good.clone();
    long.push(0);
    fails(
        &["import", db, "y", s(&put("long.npy", &long))],
        "bytes after",
    );
    let be = numpy_file(
        "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }",
        60,
        &[0; 24],
    );
    fails(&["import", db, "y", s(&put("be.npy", &be))], "big-endian");
    let zero_d = numpy_file(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
        62,
        &[0; 8],
    );
    fails(&["import", db, "y", s(&put("0d.npy", &zero_d))], "0-d");
    let garbled = numpy_file(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3,, }",
        61,
        &[0; 24],
    );
    fails(
        &["import", db, "y", s(&put("garbled.npy", &garbled))],
        "not a valid .npy file",
    );
    fails(
        &["import", db, "y", s(&p), "--block-size", "1000"],
        "power of two",
    );
    fails(&["import", db, "y", s(&p), "--compression", "lz4"], "zstd");
    // Nothing was created by the failed imports.
    let names = Db::open(&f.db)
        .unwrap()
        .snapshot()
        .unwrap()
        .array_names()
        .unwrap();
    assert_eq!(names, ["wide".to_string(), "x".to_string()]);
}
