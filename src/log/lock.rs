//! The lock file `<db>.lock`: the writer lock and the reader table.
//!
//! Layout (see storage-format.md, "Lock file"): page 0 holds a magic; byte 0 is the
//! writer lock; from `SLOTS_AT`, `MAX_SLOTS` slots of `SLOT_SIZE` bytes, one per live
//! snapshot: magic u32, reserved u32, pid u64, tid u64, reserved u64.
//!
//! Locks are Linux open-file-description (OFD) byte-range locks: the kernel drops them
//! when the owner dies, so a slot whose first byte is not locked belongs to nobody, even
//! if it still holds a dead process's pid and tid — that is how dead readers are detected
//! and their slots reclaimed. OFD locks of one open file description do not exclude each
//! other, so within one process the slots this `LockFile` holds are also kept in `held`,
//! and the writer lock is paired with an in-process mutex (lock order: in-process mutex,
//! then the OFD writer lock).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg};
use parking_lot::{Mutex, MutexGuard};

use crate::{Error, Result, Tid};

/// Magic at offset 8 of the lock file.
pub const LOCK_MAGIC: [u8; 8] = *b"wdb-lck\n";
/// Offset of the published (log uuid u64, acknowledged end u64).
pub const PUBLISHED_AT: u64 = 16;
/// Offset of the first reader slot.
pub const SLOTS_AT: u64 = 4096;
/// Bytes per reader slot.
pub const SLOT_SIZE: u64 = 32;
/// Number of reader slots (live snapshots across all processes).
pub const MAX_SLOTS: u64 = 4096;
const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"RDR1");

/// The lock file of one open database.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
    writable: bool,
    held: Mutex<HashSet<u64>>,
    writer: Mutex<()>,
    next_hint: Mutex<u64>,
}

/// Path of the lock file of database `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn flock(ty: libc::c_int, start: u64, len: u64) -> Result<libc::flock> {
    let bad = |_| Error::InvalidArgument("lock range".into());
    Ok(libc::flock {
        l_type: i16::try_from(ty).map_err(bad)?,
        l_whence: i16::try_from(libc::SEEK_SET).map_err(bad)?,
        l_start: i64::try_from(start).map_err(bad)?,
        l_len: i64::try_from(len).map_err(bad)?,
        l_pid: 0,
    })
}

fn errno_io(e: nix::errno::Errno) -> Error {
    Error::Io(std::io::Error::from_raw_os_error(e as i32))
}

impl LockFile {
    /// Open (creating if allowed) the lock file of database `db`. A read-only database
    /// whose lock file cannot be opened for writing gets a lock file that registers no
    /// readers (compaction by others may then drop versions it reads; documented).
    pub fn open(db: &Path, read_only: bool) -> Result<LockFile> {
        let path = lock_path(db);
        // Created even for a read-only database when the directory allows: a reader
        // registers its snapshot so that compaction by others keeps what it reads.
        let (file, writable) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => (f, true),
            Err(e) if read_only => match File::open(&path) {
                Ok(f) => (f, false),
                Err(_) => {
                    return Err(Error::Io(std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot open or create the lock file {}: {e}",
                            path.display()
                        ),
                    )))
                }
            },
            Err(e) => return Err(Error::Io(e)),
        };
        if writable && file.metadata()?.len() < SLOTS_AT + MAX_SLOTS * SLOT_SIZE {
            file.set_len(SLOTS_AT + MAX_SLOTS * SLOT_SIZE)?;
            let mut m = [0u8; 8];
            file.read_exact_at(&mut m, 8).ok();
            if m != LOCK_MAGIC {
                file.write_all_at(&LOCK_MAGIC, 8)?;
            }
        }
        Ok(LockFile {
            file,
            path,
            writable,
            held: Mutex::new(HashSet::new()),
            writer: Mutex::new(()),
            next_hint: Mutex::new(0),
        })
    }

    /// Publish the end of the last acknowledged (synced) transaction of the log with
    /// `uuid`. Readers in other processes read the log only up to it, so they never see
    /// a commit before it is durable. A hint: not synced, and ignored when it names
    /// another file.
    pub fn publish(&self, uuid: u64, end: u64) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&uuid.to_le_bytes());
        b[8..].copy_from_slice(&end.to_le_bytes());
        self.file.write_all_at(&b, PUBLISHED_AT)?;
        Ok(())
    }

    /// The published (uuid, end), if any.
    pub fn published(&self) -> Option<(u64, u64)> {
        let mut b = [0u8; 16];
        self.file.read_exact_at(&mut b, PUBLISHED_AT).ok()?;
        let mut u = [0u8; 8];
        u.copy_from_slice(&b[..8]);
        let mut e = [0u8; 8];
        e.copy_from_slice(&b[8..]);
        Some((u64::from_le_bytes(u), u64::from_le_bytes(e)))
    }

    /// Path of this lock file.
    #[cfg(any(test, feature = "internals", feature = "s3"))]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the writer lock, waiting for other writers (in this and other processes).
    pub fn writer(&self) -> Result<WriterGuard<'_>> {
        let inproc = self.writer.lock();
        if !self.writable {
            return Err(Error::ReadOnly("the lock file is not writable".into()));
        }
        let fl = flock(libc::F_WRLCK, 0, 1)?;
        loop {
            match fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_SETLKW(&fl)) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(errno_io(e)),
            }
        }
        Ok(WriterGuard {
            lock: self,
            _inproc: inproc,
        })
    }

    /// Take the compaction lock (byte 1) without waiting: one compaction at a time.
    pub fn try_compaction(&self) -> Result<CompactionGuard<'_>> {
        if !self.writable {
            return Err(Error::ReadOnly("the lock file is not writable".into()));
        }
        let fl = flock(libc::F_WRLCK, 1, 1)?;
        match fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => Ok(CompactionGuard { lock: self }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Err(Error::Busy(
                "another compaction of this database is running".into(),
            )),
            Err(e) => Err(errno_io(e)),
        }
    }

    fn unlock(&self, start: u64) {
        if let Ok(fl) = flock(libc::F_UNLCK, start, 1) {
            // Unlocking cannot fail for a range we hold; if it does, the kernel drops the
            // lock when the file is closed.
            let _ = fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl));
        }
    }

    /// Register a live snapshot at `tid`; the slot is released when the guard drops.
    pub fn register_reader(self: &std::sync::Arc<Self>, tid: Tid) -> Result<Option<ReaderSlot>> {
        if !self.writable {
            return Ok(None);
        }
        let mut held = self.held.lock();
        let mut hint = self.next_hint.lock();
        for i in 0..MAX_SLOTS {
            let slot = (*hint + i) % MAX_SLOTS;
            if held.contains(&slot) {
                continue;
            }
            let at = SLOTS_AT + slot * SLOT_SIZE;
            let fl = flock(libc::F_WRLCK, at, 1)?;
            match fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => continue,
                Err(e) => return Err(errno_io(e)),
            }
            // The slot is ours; whatever it holds is a dead reader's and is overwritten.
            let mut b = [0u8; 32];
            b[0..4].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
            b[8..16].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
            b[16..24].copy_from_slice(&tid.0.to_le_bytes());
            if let Err(e) = self.file.write_all_at(&b, at) {
                self.unlock(at);
                return Err(e.into());
            }
            held.insert(slot);
            *hint = slot + 1;
            return Ok(Some(ReaderSlot {
                lock: self.clone(),
                slot,
            }));
        }
        Err(Error::Busy(format!(
            "all {MAX_SLOTS} reader slots of {} are in use",
            self.path.display()
        )))
    }

    /// The live readers: (pid, tid) of every slot held by a live snapshot, in any process.
    pub fn live_readers(&self) -> Result<Vec<(u64, Tid)>> {
        let mut table = vec![0u8; usize::try_from(MAX_SLOTS * SLOT_SIZE).unwrap_or(0)];
        self.file.read_exact_at(&mut table, SLOTS_AT)?;
        let held = self.held.lock();
        let mut out = Vec::new();
        for (i, s) in table.chunks_exact(32).enumerate() {
            let slot = i as u64;
            let mut w = [0u8; 8];
            w[..4].copy_from_slice(&s[0..4]);
            if u32::from_le_bytes([s[0], s[1], s[2], s[3]]) != SLOT_MAGIC {
                continue;
            }
            let mut p = [0u8; 8];
            p.copy_from_slice(&s[8..16]);
            let mut t = [0u8; 8];
            t.copy_from_slice(&s[16..24]);
            let live = if held.contains(&slot) {
                true
            } else {
                let mut fl = flock(libc::F_WRLCK, SLOTS_AT + slot * SLOT_SIZE, 1)?;
                fcntl(self.file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut fl)).map_err(errno_io)?;
                i32::from(fl.l_type) != libc::F_UNLCK
            };
            if live {
                out.push((u64::from_le_bytes(p), Tid(u64::from_le_bytes(t))));
            }
        }
        Ok(out)
    }
}

/// The writer lock, held until dropped.
#[derive(Debug)]
pub struct WriterGuard<'a> {
    lock: &'a LockFile,
    _inproc: MutexGuard<'a, ()>,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock(0);
    }
}

/// The compaction lock, held until dropped.
#[derive(Debug)]
pub struct CompactionGuard<'a> {
    lock: &'a LockFile,
}

impl Drop for CompactionGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock(1);
    }
}

/// A registered reader slot, released (zeroed and unlocked) on drop.
#[derive(Debug)]
pub struct ReaderSlot {
    lock: std::sync::Arc<LockFile>,
    slot: u64,
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        let at = SLOTS_AT + self.slot * SLOT_SIZE;
        let _ = self.lock.file.write_all_at(&[0u8; 32], at);
        self.lock.unlock(at);
        self.lock.held.lock().remove(&self.slot);
    }
}
