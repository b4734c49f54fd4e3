//! Spill files: where a transaction keeps the encoded payloads of staged blocks that do
//! not fit its share of RAM, until commit copies them into the log (storage-format.md,
//! "Spill files").
//!
//! A spill file lives beside the database, in the same directory (so on the same
//! filesystem: the commit's `copy_file_range` stays in the kernel), and has no name: it
//! is opened `O_TMPFILE`, or — where the filesystem cannot — created as
//! `<db>.spill.<pid>.<n>` and unlinked at once. Its disk space goes back to the
//! filesystem when its last descriptor closes: at commit, at abort, or when the process
//! dies. A named file a process left behind because it was killed between the create
//! and the unlink is removed by the next writer that opens the database
//! ([`remove_leftovers`]).
//!
//! Layout: *slots*. A payload of a block of `bs` bytes takes a slot of `bs` bytes at an
//! offset that is a multiple of `bs` (2 MiB-aligned for the default block size), and
//! starts at the slot's first byte, so a raw payload can be mapped into a view like a
//! clean block of the log (`DirectMap::map_source`). A compressed payload uses a prefix of
//! its slot; the rest is never written and takes no disk space (a sparse file). A slot
//! is reused once the payload in it is superseded and no view maps it any more (its
//! [`SpillSlot`] is dropped): a transaction that rewrites the same blocks does not grow
//! its spill file. Nothing in a spill file is ever read by another process, and nothing
//! in the database refers to it.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::format::FileRange;
use crate::log::io::{FileIo, LogIo};
use crate::{Error, Result};

/// Builds the I/O a spill file's writes and reads go through from the real file (tests
/// wrap it in a fault-injecting `LogIo`). The commit's copy into the log reads the file
/// itself.
pub type SpillIoFactory = Arc<dyn Fn(FileIo) -> Box<dyn LogIo> + Send + Sync>;

/// The [`SpillIoFactory`] a store gives its new spill files (`None`: the plain file).
#[derive(Default)]
pub struct SpillIoHook(pub Mutex<Option<SpillIoFactory>>);

impl std::fmt::Debug for SpillIoHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.lock().is_some() {
            "SpillIoHook(set)"
        } else {
            "SpillIoHook(none)"
        })
    }
}

/// One spill file (see the module docs). Shared by the slots in it.
pub struct SpillFile {
    /// The file, for `copy_file_range` and for mapping raw payloads into views.
    file: File,
    /// Writes and reads go through this (a clone of `file`'s descriptor, possibly
    /// wrapped by a test).
    io: Box<dyn LogIo>,
    /// The database it belongs to (for messages).
    db: PathBuf,
    alloc: Mutex<Alloc>,
    /// Bytes written so far (for figures and tests).
    written: AtomicU64,
}

impl std::fmt::Debug for SpillFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.alloc.lock();
        f.debug_struct("SpillFile")
            .field("db", &self.db)
            .field("end", &a.end)
            .field("slots_in_use", &a.in_use)
            .finish()
    }
}

#[derive(Default)]
struct Alloc {
    /// End of the slots handed out so far.
    end: u64,
    /// Free slots by size.
    free: BTreeMap<u64, Vec<u64>>,
    /// Slots in use.
    in_use: u64,
    /// Offsets of slots whose bytes a view showed after checking their CRC.
    checked: HashSet<u64>,
}

/// Prefix of the name of a spill file that could not be created unnamed.
fn name_prefix(db: &Path) -> String {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}.spill.")
}

fn dir_of(db: &Path) -> &Path {
    match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Tests of a filesystem without `O_TMPFILE` force the named fallback in the processes
/// they start: builds with the `internals` feature (which only tests enable) read
/// `WDB_SPILL_NAMED=1` once. A user's build reads no environment variable here.
#[cfg(feature = "internals")]
fn force_named() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("WDB_SPILL_NAMED").is_some_and(|v| v == "1"))
}

#[cfg(not(feature = "internals"))]
fn force_named() -> bool {
    false
}

/// Open an unnamed file in `dir`: `O_TMPFILE`, or create a uniquely named one and
/// unlink it at once.
fn open_unnamed(db: &Path) -> std::io::Result<File> {
    let dir = dir_of(db);
    if force_named() {
        return open_named(db, dir);
    }
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir);
    match tmp {
        Ok(f) => return Ok(f),
        // Not supported by the kernel or the filesystem: fall back to a named file.
        Err(e)
            if [
                Some(libc::EOPNOTSUPP),
                Some(libc::EISDIR),
                Some(libc::EINVAL),
                Some(libc::ENOENT),
            ]
            .contains(&e.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    open_named(db, dir)
}

/// Create `<db>.spill.<pid>.<n>` in `dir` and unlink it at once.
fn open_named(db: &Path, dir: &Path) -> std::io::Result<File> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}{}.{seq}", name_prefix(db), std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Remove the named spill files of database `db` whose process is gone (killed between
/// creating and unlinking one). A file of a live process is left alone.
pub fn remove_leftovers(db: &Path) {
    let prefix = name_prefix(db);
    let Ok(entries) = std::fs::read_dir(dir_of(db)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest
            .split('.')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        if rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl SpillFile {
    /// A new, empty spill file beside database `db`; `io` wraps its I/O (tests).
    pub fn create(db: &Path, io: Option<&SpillIoFactory>) -> Result<Arc<SpillFile>> {
        let file = open_unnamed(db).map_err(|e| spill_err(db, "cannot create", e))?;
        let clone = file
            .try_clone()
            .map_err(|e| spill_err(db, "cannot open", e))?;
        let io = match io {
            Some(f) => f(FileIo(clone)),
            None => Box::new(FileIo(clone)),
        };
        Ok(Arc::new(SpillFile {
            file,
            io,
            db: db.to_path_buf(),
            alloc: Mutex::new(Alloc::default()),
            written: AtomicU64::new(0),
        }))
    }

    /// Write `data` into a free slot of `slot_size` bytes (a power of two, at least the
    /// OS page size and `data.len()`); returns the slot, given back when dropped. On an
    /// error the slot is free again and the error names the spill file's database.
    pub fn write(self: &Arc<Self>, data: &[u8], slot_size: u64) -> Result<Arc<SpillSlot>> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|_| slot_size.is_power_of_two() && data.len() as u64 <= slot_size)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a spilled payload of {} bytes in a slot of {slot_size}",
                    data.len()
                ))
            })?;
        let off = self.take_slot(slot_size);
        let slot = Arc::new(SpillSlot {
            file: self.clone(),
            off,
            size: slot_size,
            len,
        });
        self.io
            .write_at(data, off)
            .map_err(|e| spill_err(&self.db, "cannot write to", e))?;
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(slot)
    }

    fn take_slot(&self, size: u64) -> u64 {
        let mut a = self.alloc.lock();
        a.in_use += 1;
        if let Some(off) = a.free.get_mut(&size).and_then(Vec::pop) {
            return off;
        }
        let off = crate::format::align_up(a.end, size);
        a.end = off + size;
        off
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The descriptor of the file (for mapping raw payloads; open while a slot lives).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Remember that the bytes of the slot at `off` matched their CRC in a view.
    pub fn mark_checked(&self, off: u64) {
        self.alloc.lock().checked.insert(off);
    }
}

/// An error of a spill file, naming what it is for; the kind (disk full, I/O error) is
/// kept.
fn spill_err(db: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!(
            "{what} the spill file of {} (a transaction's dirty data beyond its RAM budget): {e}",
            db.display()
        ),
    ))
}

/// One payload in a spill file. Dropping the last reference frees the slot.
pub struct SpillSlot {
    file: Arc<SpillFile>,
    off: u64,
    size: u64,
    len: u32,
}

impl std::fmt::Debug for SpillSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillSlot")
            .field("off", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

impl SpillSlot {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Is the payload empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// File offset of the payload (a multiple of the slot size).
    pub fn offset(&self) -> u64 {
        self.off
    }

    /// The spill file.
    pub fn file(&self) -> &Arc<SpillFile> {
        &self.file
    }

    /// Read the payload into `buf` (exactly its length).
    pub fn read(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() != self.len() {
            return Err(Error::InvalidArgument(format!(
                "a buffer of {} bytes for a spilled payload of {}",
                buf.len(),
                self.len
            )));
        }
        self.file
            .io
            .read_at(buf, self.off)
            .map_err(|e| spill_err(&self.file.db, "cannot read", e))
    }

    /// The payload as a range of the spill file for the commit to copy into the log;
    /// its disk space may be given back after the copy.
    pub fn range(&self) -> FileRange<'_> {
        FileRange {
            file: &self.file.file,
            off: self.off,
            len: self.len,
            release: true,
        }
    }

    /// Did a view check these bytes against their CRC already?
    pub fn checked(&self) -> bool {
        self.file.alloc.lock().checked.contains(&self.off)
    }
}

/// Slots are equal only to themselves (two slots never share bytes).
impl PartialEq for SpillSlot {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for SpillSlot {}

impl Drop for SpillSlot {
    fn drop(&mut self) {
        let mut a = self.file.alloc.lock();
        a.in_use -= 1;
        a.checked.remove(&self.off);
        a.free.entry(self.size).or_default().push(self.off);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_reused_and_unnamed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.wdb");
        let f = SpillFile::create(&db, None).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "unnamed");
        let a = f.write(&[1u8; 5000], 1 << 16).unwrap();
        let b = f.write(&[2u8; 100], 1 << 21).unwrap();
        assert_eq!(a.offset(), 0);
        assert_eq!(b.offset(), 1 << 21);
        let mut back = vec![0u8; 5000];
        a.read(&mut back).unwrap();
        assert!(back.iter().all(|&x| x == 1));
        let off = a.offset();
        drop(a);
        let c = f.write(&[3u8; 10], 1 << 16).unwrap();
        assert_eq!(c.offset(), off, "a freed slot is reused");
        assert_eq!(f.bytes_written(), 5110);
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.wdb");
        // pid 0x7ffffffe does not exist (above pid_max); our own pid does.
        let dead = dir.path().join("x.wdb.spill.2147483646.0");
        let live = dir
            .path()
            .join(format!("x.wdb.spill.{}.0", std::process::id()));
        let other = dir.path().join("y.wdb.spill.2147483646.0");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        remove_leftovers(&db);
        assert!(!dead.exists() && live.exists() && other.exists());
    }
}
