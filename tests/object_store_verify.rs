//! Object storage under `Verify::OncePerBoot`: the blocks a reader checked in its local
//! cache files are shown to later readers of the same boot without a check, each named
//! in the per-boot table by its cache file (device, inode, birth time). A flipped byte
//! is never shown when the table does not vouch for that very file in this boot: a
//! copy of the cache directory (other files with the same bytes), another boot, or
//! `OncePerProcess`.
//!
//! "Trusted without a check" is observed the way a reader would notice it: a byte
//! flipped in a cache file after a reader checked it is shown by the next reader of
//! the same boot and file, and refused by every reader the table does not cover.
#![cfg(feature = "s3")]

mod object_util;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::memory::InMemory;
use wdb::db::{ArrayOptions, Compression, Options};
use wdb::verify::TablePlace;
use wdb::Verify;

const BS: usize = 64 << 10;
const BLOCKS: usize = 8;

fn place(dir: &Path, boot: &str) -> TablePlace {
    let shm = dir.join(format!("shm-{boot}"));
    std::fs::create_dir_all(&shm).unwrap();
    let id = dir.join(format!("boot-{boot}"));
    // A boot id is a UUID in text; the name of the boot picks one of two.
    let uuid = match boot {
        "a" => "6f1c0e6a-1d52-4d1e-9a55-6c7c10a1b2c3\n",
        _ => "0b9d2a44-7e3f-4f2c-8b61-1d2e3f405162\n",
    };
    std::fs::write(&id, uuid).unwrap();
    TablePlace {
        dir: shm,
        boot_id_file: id,
    }
}

fn opts(cache: &Path, place: TablePlace, mode: Verify) -> Options {
    Options::default()
        .cache_dir(cache)
        .cache_size(64 << 20)
        .ram_budget(64 << 20)
        .verify(mode)
        .verify_table(place)
}

fn data() -> Vec<u8> {
    (0..BS * BLOCKS)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect()
}

/// A store holding array "a" (u8, `BLOCKS` raw blocks of `BS` bytes) = `data()`,
/// written by a machine with its own cache.
fn store(dir: &Path) -> Arc<InMemory> {
    let store = Arc::new(InMemory::new());
    let w = object_util::mem_machine(
        &store,
        opts(&dir.join("writer"), place(dir, "a"), Verify::OncePerBoot),
    );
    let tx = w.begin().unwrap();
    {
        let o = ArrayOptions::default()
            .compression(Compression::None)
            .block_size(BS as u32);
        let mut a = tx.create_array_with::<u8>("a", &[0], o).unwrap();
        a.append(&data()).unwrap();
    }
    tx.commit().unwrap();
    store
}

#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// Every byte was shown; this many differ from what was written.
    Shown(usize),
    /// The checked load failed with a CRC mismatch.
    Refused,
}

/// Open the store with cache `cache`, load the whole array through the checked call and
/// say what a view then shows.
fn read(store: &Arc<InMemory>, cache: &Path, place: TablePlace, mode: Verify) -> Read {
    // The previous reader's slot, once its background fetches let go of it: this
    // reader takes that slot and its files.
    let lock = cache.join("slot-0").join("slot.lock");
    if lock.exists() {
        object_util::slot_released(&lock);
    }
    let db = object_util::mem_machine(store, opts(cache, place, mode));
    let s = db.snapshot().unwrap();
    let a = s.array::<u8>("a").unwrap();
    match a.load(..) {
        Ok(()) => {
            let v = a.view(..).unwrap();
            let want = data();
            Read::Shown(v.iter().zip(&want).filter(|(x, y)| x != y).count())
        }
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("CRC mismatch"),
                "refused for another reason: {e}"
            );
            Read::Refused
        }
    }
}

/// The cache's data files of `cache` (one per data object), by name.
fn data_files(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache.join("slot-0").join("o"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("d-"))
        .collect();
    v.sort();
    v
}

/// The virtual-log offset of the payload a cache data file holds (in its name).
fn payload_at(file: &Path) -> u64 {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    u64::from_str_radix(name.rsplit('-').next().unwrap(), 16).unwrap()
}

/// Flip one byte of the payload `file` holds at `at`, in place: same file, same inode.
fn flip(file: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at + 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at + 100).unwrap();
}

/// Copy a cache directory file by file (new inodes, same bytes), leaving out its lock.
fn copy_cache(from: &Path, to: &Path) {
    let (src, dst) = (from.join("slot-0").join("o"), to.join("slot-0").join("o"));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// The store of [`store`] and the cache of a first reader of boot "a", which fetched
/// every data object into its cache, checked it and saw the data.
fn first_reader(d: &Path) -> (Arc<InMemory>, PathBuf) {
    let store = store(d);
    let cache = d.join("reader");
    assert_eq!(
        read(&store, &cache, place(d, "a"), Verify::OncePerBoot),
        Read::Shown(0)
    );
    (store, cache)
}

#[test]
fn a_cache_file_checked_this_boot_is_trusted_by_later_readers_of_that_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, cache) = first_reader(d);
    let files = data_files(&cache);
    assert!(
        files.len() >= BLOCKS,
        "one data object per block: {files:?}"
    );
    // A copy of that cache, made before the flip: the same bytes in other files.
    let copy = d.join("copy");
    copy_cache(&cache, &copy);
    flip(&files[2], payload_at(&files[2]));
    let copied = data_files(&copy);
    flip(&copied[2], payload_at(&copied[2]));
    // The same file in the same boot: trusted, not checked again (the flip shows).
    assert_eq!(
        read(&store, &cache, place(d, "a"), Verify::OncePerBoot),
        Read::Shown(1)
    );
    // Other files holding those bytes: the table names files, not contents.
    assert_eq!(
        read(&store, &copy, place(d, "a"), Verify::OncePerBoot),
        Read::Refused
    );
    // Another boot: nothing is vouched for.
    assert_eq!(
        read(&store, &cache, place(d, "b"), Verify::OncePerBoot),
        Read::Refused
    );
    // Each process checks for itself.
    assert_eq!(
        read(&store, &cache, place(d, "a"), Verify::OncePerProcess),
        Read::Refused
    );
    // Off trusts the file, as documented; fsck reads the store, not the cache.
    assert_eq!(
        read(&store, &cache, place(d, "a"), Verify::Off),
        Read::Shown(1)
    );
}

#[test]
fn a_fresh_cache_file_of_a_corrupt_copy_is_refused_in_the_boot_it_was_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, cache) = first_reader(d);
    // Replace a checked file by a corrupt copy under the same name (a new inode): the
    // entry of the old file does not vouch for it.
    let f = data_files(&cache)[3].clone();
    let tmp = f.with_extension("new");
    std::fs::copy(&f, &tmp).unwrap();
    flip(&tmp, payload_at(&f));
    std::fs::rename(&tmp, &f).unwrap();
    assert_eq!(
        read(&store, &cache, place(d, "a"), Verify::OncePerBoot),
        Read::Refused
    );
}
