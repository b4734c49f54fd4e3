//! A block checked by one process is shown to later processes of the same boot without
//! a check (`Verify::OncePerBoot`), and a flipped byte is never shown by any process in
//! `OncePerBoot` or `OncePerProcess` when the table does not vouch for that very
//! version of that very file in this boot: a different version at the same offset (a
//! torn tail cut and written again), a compacted file (a new generation), another boot,
//! a corrupt table, entries torn by a process killed while writing them, a table other
//! users could write.
//!
//! Readers are child processes (this test binary re-run, `tests/child_util`) that open
//! the database with the table and boot id file of the test's own directory.

mod child_util;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wdb::db::{ArrayOptions, Compression, Db, Key, Options};
use wdb::verify::{BootId, BootTable, FileIdentity, Stored, TablePlace};
use wdb::Verify;

const BS: usize = 64 << 10;

fn place(dir: &Path) -> TablePlace {
    TablePlace {
        dir: dir.join("shm"),
        boot_id_file: dir.join("boot_id"),
    }
}

fn set_boot(dir: &Path, id: &str) {
    std::fs::write(dir.join("boot_id"), id).unwrap();
}

const BOOT_A: &str = "6f1c0e6a-1d52-4d1e-9a55-6c7c10a1b2c3\n";
const BOOT_B: &str = "0b9d2a44-7e3f-4f2c-8b61-1d2e3f405162\n";

fn opts(dir: &Path, mode: Verify) -> Options {
    Options::default().verify(mode).verify_table(place(dir))
}

fn block(seed: u8) -> Vec<u8> {
    (0..BS)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

/// A database `dir/d.wdb` holding array "a" (u8, one raw block of `BS` bytes) = `data`.
fn create(dir: &Path, data: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir.join("shm")).unwrap();
    set_boot(dir, BOOT_A);
    let p = dir.join("d.wdb");
    let db = Db::open_with(&p, opts(dir, Verify::OncePerBoot)).unwrap();
    let tx = db.begin().unwrap();
    {
        let o = ArrayOptions::default()
            .compression(Compression::None)
            .block_size(BS as u32);
        let mut a = tx.create_array_with::<u8>("a", &[0], o).unwrap();
        a.append(data).unwrap();
    }
    tx.commit().unwrap();
    p
}

/// Replace block 0 of "a" by `data` in a new commit.
fn rewrite(dir: &Path, data: &[u8]) {
    let db = Db::open_with(dir.join("d.wdb"), opts(dir, Verify::OncePerBoot)).unwrap();
    let tx = db.begin().unwrap();
    {
        let mut a = tx.array_mut::<u8>("a").unwrap();
        a.view_mut(..)
            .unwrap()
            .as_slice_mut()
            .unwrap()
            .copy_from_slice(data);
    }
    tx.commit().unwrap();
}

/// The file identity and stored payload of block 0 of "a" at the head.
fn block0(dir: &Path) -> (FileIdentity, Stored) {
    let db = Db::open_with(dir.join("d.wdb"), opts(dir, Verify::OncePerProcess)).unwrap();
    let s = db.snapshot().unwrap();
    let id = s.array_info("a").unwrap().id;
    let gen = db.store().current();
    let v = gen
        .version_at(&Key::Block { array: id, blk: 0 }, s.tid())
        .unwrap()
        .unwrap();
    let st = Stored {
        offset: v.payload_off(),
        len: u64::from(v.stored_len),
        crc: v.data_crc,
    };
    (gen.log.identity().unwrap(), st)
}

/// Flip one byte of block 0's payload in the file, in place.
fn flip(dir: &Path) -> Stored {
    let (_, st) = block0(dir);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("d.wdb"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, st.offset + 1000).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, st.offset + 1000).unwrap();
    st
}

/// A file is named in the table once it is a second old (`verify`): wait for that.
fn age() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[derive(PartialEq, Eq)]
enum Read {
    /// The block was shown: these are its bytes.
    Shown(Vec<u8>),
    /// The checked load failed with a CRC mismatch.
    Refused,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Read::Shown(b) => write!(
                f,
                "Shown({} bytes, crc {:#010x})",
                b.len(),
                wdb::verify::crc32(b)
            ),
            Read::Refused => write!(f, "Refused"),
        }
    }
}

/// Read block 0 of "a" in a child process in `mode`.
fn read_in_child(dir: &Path, mode: &str) -> Read {
    let out = child_util::run_child(mode, &dir.join("d.wdb"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "child failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness prints the test's name on the same line (`--nocapture`).
    let after = |tag: &str| {
        text.lines()
            .find_map(|l| l.find(tag).map(|i| l[i + tag.len()..].to_string()))
    };
    if let Some(hex) = after("SHOWN ") {
        let hex = hex.trim();
        return Read::Shown(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
        );
    }
    let l =
        after("REFUSED ").unwrap_or_else(|| panic!("child said neither SHOWN nor REFUSED: {text}"));
    assert!(
        l.contains("CRC mismatch"),
        "refused for another reason: {l}"
    );
    Read::Refused
}

#[test]
fn child_entry() {
    let Some((mode, path)) = child_util::role() else {
        return;
    };
    let mode = match mode.as_str() {
        "once-per-boot" => Verify::OncePerBoot,
        "once-per-process" => Verify::OncePerProcess,
        "off" => Verify::Off,
        m => panic!("unknown mode {m}"),
    };
    let path = PathBuf::from(path);
    let dir = path.parent().unwrap();
    let db = Db::open_with(&path, opts(dir, mode)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<u8>("a").unwrap();
    // The checked call: a CRC mismatch is an Err, not a stop inside a fault.
    match a.load(..) {
        Ok(()) => {
            let v = a.view(..).unwrap();
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            println!("SHOWN {hex}");
        }
        Err(e) => println!("REFUSED {e}"),
    }
}

fn flipped(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    d[1000] ^= 0x10;
    d
}

#[test]
fn a_block_checked_this_boot_is_trusted_by_later_processes_and_not_after_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = block(1);
    create(d, &data);
    age();
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Shown(data.clone()));
    // The bytes change under the table (what a check per boot accepts): a process of
    // this boot trusts its entry and shows them unchecked...
    flip(d);
    assert_eq!(
        read_in_child(d, "once-per-boot"),
        Read::Shown(flipped(&data))
    );
    // ... a process checking for itself does not ...
    assert_eq!(read_in_child(d, "once-per-process"), Read::Refused);
    // ... and neither does any process after a reboot.
    set_boot(d, BOOT_B);
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Refused);
}

#[test]
fn another_version_at_the_same_offset_is_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = create(d, &block(1));
    let cut = std::fs::metadata(&p).unwrap().len();
    rewrite(d, &block(2));
    let (_, first) = block0(d);
    age();
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Shown(block(2)));
    // A torn tail cut (the commit of block(2) never happened), the same transaction
    // shape committed again with other bytes: the same offsets, another CRC.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let _ = std::fs::remove_file(d.join("d.wdb.idx"));
    rewrite(d, &block(3));
    let st = flip(d);
    assert_eq!((st.offset, st.len), (first.offset, first.len));
    assert_ne!(st.crc, first.crc);
    for mode in ["once-per-boot", "once-per-process"] {
        assert_eq!(read_in_child(d, mode), Read::Refused, "{mode}");
    }
}

#[test]
fn a_compacted_file_is_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create(d, &block(1));
    rewrite(d, &block(2));
    age();
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Shown(block(2)));
    let (old_id, old) = block0(d);
    Db::open_with(d.join("d.wdb"), opts(d, Verify::OncePerBoot))
        .unwrap()
        .compact()
        .unwrap();
    age();
    let (new_id, st) = block0(d);
    assert_ne!(old_id, new_id);
    assert_eq!(st.crc, old.crc, "the same bytes, copied");
    flip(d);
    for mode in ["once-per-boot", "once-per-process"] {
        assert_eq!(read_in_child(d, mode), Read::Refused, "{mode}");
    }
}

/// The table of the test's directory, and where block 0's entry goes.
fn entry(d: &Path) -> (BootTable, u64, u64) {
    let t = BootTable::open(&place(d).dir, BootId::read(&place(d).boot_id_file).unwrap()).unwrap();
    let (id, st) = block0(d);
    let (bucket, tag) = t.entry_of(&id, &st);
    (t, bucket, tag)
}

fn write_slot(t: &BootTable, at: u64, bytes: &[u8; 8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.path())
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

/// A database old enough for the table whose block 0 (`block(1)`) has a flipped byte
/// that nobody checked, the table, and where that version's entry would go.
struct Flipped {
    dir: tempfile::TempDir,
    data: Vec<u8>,
    t: BootTable,
    bucket: u64,
    tag: u64,
}

fn flipped_unchecked() -> Flipped {
    let dir = tempfile::tempdir().unwrap();
    let data = block(1);
    create(dir.path(), &data);
    age();
    flip(dir.path());
    let (t, bucket, tag) = entry(dir.path());
    Flipped {
        dir,
        data,
        t,
        bucket,
        tag,
    }
}

#[test]
fn entries_torn_by_a_killed_writer_or_garbage_vouch_for_nothing() {
    let f = flipped_unchecked();
    let d = f.dir.path();
    let tag = f.tag.to_le_bytes();
    // A writer killed in the middle of its 8-byte write: any prefix of the tag over
    // the empty slot, or over garbage.
    for k in 1..8 {
        for fill in [0u8, 0xA5] {
            let mut torn = [fill; 8];
            torn[..k].copy_from_slice(&tag[..k]);
            if torn == tag {
                continue; // the bytes not written were already the tag's
            }
            write_slot(&f.t, f.bucket, &torn);
            assert_eq!(
                read_in_child(d, "once-per-boot"),
                Read::Refused,
                "{k} bytes"
            );
        }
    }
    // Garbage everywhere in the slots (the header intact).
    let len = std::fs::metadata(f.t.path()).unwrap().len();
    let mut g = vec![0u8; (len - 4096) as usize];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for c in g.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(f.t.path())
        .unwrap()
        .write_all_at(&g, 4096)
        .unwrap();
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Refused);
    // The whole tag in its bucket is what vouches (the control: the slot and tag above
    // are the ones a reader looks up).
    write_slot(&f.t, f.bucket, &tag);
    assert_eq!(
        read_in_child(d, "once-per-boot"),
        Read::Shown(flipped(&f.data))
    );
    assert_eq!(read_in_child(d, "once-per-process"), Read::Refused);
}

#[test]
fn a_table_with_a_damaged_header_is_replaced_and_vouches_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create(d, &block(1));
    age();
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Shown(block(1)));
    flip(d);
    let (t, _, _) = entry(d);
    let mut h = [0u8; 8];
    std::fs::File::open(t.path())
        .unwrap()
        .read_exact_at(&mut h, 8)
        .unwrap();
    h[0] ^= 1;
    write_slot(&t, 8, &h);
    assert_eq!(read_in_child(d, "once-per-boot"), Read::Refused);
    // The reader replaced it with an empty table of this boot.
    assert!(BootTable::open(&place(d).dir, BootId::read(&place(d).boot_id_file).unwrap()).is_ok());
}

#[test]
fn a_table_others_could_write_is_not_used() {
    let f = flipped_unchecked();
    let d = f.dir.path();
    write_slot(&f.t, f.bucket, &f.tag.to_le_bytes());
    assert_eq!(
        read_in_child(d, "once-per-boot"),
        Read::Shown(flipped(&f.data))
    );
    let set_mode =
        |m: u32| std::fs::set_permissions(f.t.path(), std::fs::Permissions::from_mode(m)).unwrap();
    for m in [0o644, 0o620, 0o602] {
        set_mode(m);
        assert_eq!(read_in_child(d, "once-per-boot"), Read::Refused, "{m:o}");
    }
    set_mode(0o600);
    assert_eq!(
        read_in_child(d, "once-per-boot"),
        Read::Shown(flipped(&f.data))
    );
    // Owned by another user (root can make it so): not trusted either.
    if std::os::unix::fs::chown(f.t.path(), Some(65534), None).is_ok() {
        assert_eq!(read_in_child(d, "once-per-boot"), Read::Refused);
    }
}
