//! `Verify::Off` trusts the file: a flipped byte in a raw block is shown as stored (by
//! a view and by a block read), while `OncePerProcess` refuses it, compressed blocks are
//! still checked as they are decompressed, and `wdbtool fsck` (`Db::fsck`) reports the
//! flip.

use std::os::unix::fs::FileExt;
use std::path::Path;

use wdb::db::{ArrayOptions, Compression, Db, Key, Options};
use wdb::Verify;

const BS: usize = 64 << 10;

fn data(compressible: bool) -> Vec<u8> {
    (0..BS)
        .map(|i| {
            if compressible {
                (i / 100 % 7) as u8
            } else {
                (i as u32).wrapping_mul(2_654_435_761).rotate_left(5) as u8
            }
        })
        .collect()
}

/// `dir/d.wdb` with array "a" holding `bytes` in block 0 (`zstd` or raw); then one byte
/// of its stored payload flipped. Returns the database path.
fn flipped_db(dir: &Path, bytes: &[u8], zstd: bool) -> std::path::PathBuf {
    let p = dir.join("d.wdb");
    let db = Db::open(&p).unwrap();
    let tx = db.begin().unwrap();
    {
        let c = if zstd {
            Compression::Zstd { level: 3 }
        } else {
            Compression::None
        };
        let o = ArrayOptions::default().compression(c).block_size(BS as u32);
        tx.create_array_with::<u8>("a", &[0], o)
            .unwrap()
            .append(bytes)
            .unwrap();
    }
    tx.commit().unwrap();
    let s = db.snapshot().unwrap();
    let id = s.array_info("a").unwrap().id;
    let v = db
        .store()
        .current()
        .version_at(&Key::Block { array: id, blk: 0 }, s.tid())
        .unwrap()
        .unwrap();
    drop(s);
    drop(db);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let at = v.payload_off() + u64::from(v.stored_len) / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
    p
}

/// Block 0 of "a" read through a view (checked load first) and as a block.
fn read(p: &Path, mode: Verify) -> (Result<Vec<u8>, String>, Result<Vec<u8>, String>) {
    let db = Db::open_with(p, Options::default().verify(mode)).unwrap();
    let s = db.snapshot().unwrap();
    let a = s.array::<u8>("a").unwrap();
    let view = a
        .load(..)
        .map(|()| a.view(..).unwrap().iter().copied().collect())
        .map_err(|e| e.to_string());
    let mut buf = vec![0u8; BS];
    let id = s.array_info("a").unwrap().id;
    let block = s
        .read_block(id, 0, &mut buf)
        .map(|()| buf)
        .map_err(|e| e.to_string());
    (view, block)
}

#[test]
fn off_shows_a_flipped_raw_byte_and_fsck_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = data(false);
    let p = flipped_db(dir.path(), &good, false);
    let (view, block) = read(&p, Verify::Off);
    let (view, block) = (view.unwrap(), block.unwrap());
    assert_eq!(view, block);
    assert_eq!(view.iter().zip(&good).filter(|(a, b)| a != b).count(), 1);
    for mode in [Verify::OncePerProcess, Verify::OncePerBoot] {
        let (view, block) = read(&p, mode);
        assert!(view.unwrap_err().contains("CRC mismatch"), "{mode:?}");
        assert!(block.unwrap_err().contains("CRC mismatch"), "{mode:?}");
    }
    let rep = Db::fsck_path(&p).unwrap();
    assert!(!rep.is_clean());
    assert!(
        rep.problems.iter().any(|q| q.what.contains("CRC mismatch")),
        "{:?}",
        rep.problems
    );
}

#[test]
fn off_still_checks_compressed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let p = flipped_db(dir.path(), &data(true), true);
    let (view, block) = read(&p, Verify::Off);
    assert!(view.unwrap_err().contains("CRC mismatch"));
    assert!(block.unwrap_err().contains("CRC mismatch"));
}
