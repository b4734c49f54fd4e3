//! The per-boot table of checked versions: layout, protocol, crash and forgery analysis
//! in the module doc of `verify`.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `wdb-chk\n` |
//! | 8 | 4 | table version (1) |
//! | 12 | 4 | log2 of the slot count (19) |
//! | 16 | 16 | boot id of the boot that made the table |
//! | 32 | 4 | CRC-32 of bytes 0..32 |
//! | 36 | 4060 | zero |
//! | 4096 | 8·2¹⁹ | slots: a tag (u64 little-endian), 0 = empty; buckets of 8 slots |

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use siphasher::sip::SipHasher24;

use super::{crc32, FileIdentity, Stored};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"wdb-chk\n";
const VERSION: u32 = 1;
const HEADER: u64 = 4096;
const SLOTS_LOG2: u32 = 19;
const BUCKET: usize = 8;

/// The boot id: 16 bytes that differ at every boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// Read a boot id in the text form of `/proc/sys/kernel/random/boot_id` (a UUID:
    /// 32 hex digits, dashes ignored).
    pub fn read(path: &Path) -> Result<BootId> {
        let s = std::fs::read_to_string(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        })?;
        let hex: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        let bad = || Error::InvalidArgument(format!("{}: not a boot id", path.display()));
        if hex.len() != 32 {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            id[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        Ok(BootId(id))
    }
}

/// A number unlikely to repeat (for temporary file names).
fn unique() -> u64 {
    use std::hash::BuildHasher;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one(t)
}

/// An open per-boot table (see the module doc of `verify`).
#[derive(Debug)]
pub struct BootTable {
    path: PathBuf,
    file: File,
    /// Claim bytes this process holds a lock on (`claim`).
    claims: parking_lot::Mutex<std::collections::HashSet<u64>>,
    boot: BootId,
    buckets: u64,
}

fn header(boot: BootId, log2: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&log2.to_le_bytes());
    h[16..32].copy_from_slice(&boot.0);
    let c = crc32(&h[..32]);
    h[32..36].copy_from_slice(&c.to_le_bytes());
    h
}

fn file_len(log2: u32) -> u64 {
    HEADER + (8u64 << log2)
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", p.display()),
    ))
}

impl BootTable {
    /// The table file of this user in `dir`, for boot `boot`: opened if it is usable,
    /// created (or replaced, when its header is not this boot's valid header) if not.
    /// An error when a file of that name exists that this user must not trust (not a
    /// regular file owned by them with mode 0600 or stricter), or on an I/O error.
    pub fn open(dir: &Path, boot: BootId) -> Result<BootTable> {
        Self::open_sized(dir, boot, SLOTS_LOG2)
    }

    /// [`BootTable::open`] with 2^`log2` slots.
    fn open_sized(dir: &Path, boot: BootId, log2: u32) -> Result<BootTable> {
        let euid = rustix::process::geteuid().as_raw();
        let path = dir.join(format!("wdb-checked-{euid}"));
        for _ in 0..4 {
            match Self::open_existing(&path, euid, boot, log2) {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => {
                    // Missing or stale: publish a fresh one (link: never over a table
                    // another process just made; rename: over a stale one).
                    let exists = path.symlink_metadata().is_ok();
                    Self::publish_fresh(dir, &path, (boot, log2), exists)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy(format!(
            "the table {} keeps changing",
            path.display()
        )))
    }

    /// Open `path` if it is a trustworthy table of this boot; `Ok(None)` if it is
    /// missing, or ours but stale or damaged (to be replaced).
    fn open_existing(path: &Path, euid: u32, boot: BootId, log2: u32) -> Result<Option<BootTable>> {
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening the table of checked blocks", path, e)),
        };
        let md = f
            .metadata()
            .map_err(|e| io_err("reading the metadata of", path, e))?;
        if !md.file_type().is_file() || md.uid() != euid || md.mode() & 0o077 != 0 {
            return Err(Error::InvalidArgument(format!(
                "{} is not a private file of this user (uid {}, mode {:o}): not trusted",
                path.display(),
                md.uid(),
                md.mode() & 0o7777
            )));
        }
        let mut h = vec![0u8; HEADER as usize];
        let ok = md.len() == file_len(log2)
            && f.read_exact_at(&mut h, 0).is_ok()
            && h == header(boot, log2);
        Ok(ok.then(|| BootTable {
            path: path.to_path_buf(),
            file: f,
            claims: Default::default(),
            boot,
            buckets: (1u64 << log2) / BUCKET as u64,
        }))
    }

    /// Write a fresh table under a temporary name, then put it at `path`: with `link`
    /// when there is none (a racing creator's table wins), with `rename` over a stale
    /// one.
    fn publish_fresh(
        dir: &Path,
        path: &Path,
        (boot, log2): (BootId, u32),
        replace: bool,
    ) -> Result<()> {
        let tmp: PathBuf = dir.join(format!(
            ".wdb-checked-{}-{}.tmp",
            std::process::id(),
            unique()
        ));
        let r = (|| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(|e| io_err("creating", &tmp, e))?;
            f.set_len(file_len(log2))
                .map_err(|e| io_err("sizing", &tmp, e))?;
            f.write_all_at(&header(boot, log2), 0)
                .map_err(|e| io_err("writing", &tmp, e))?;
            if replace {
                std::fs::rename(&tmp, path).map_err(|e| io_err("replacing", path, e))
            } else {
                match std::fs::hard_link(&tmp, path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(io_err("publishing", path, e)),
                }
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// The tag of version `v` of file `id` in this boot (never 0).
    fn tag(&self, id: &FileIdentity, v: &Stored) -> u64 {
        let mut h = SipHasher24::new_with_keys(id.uuid, id.created_ns);
        h.write(&self.boot.0);
        for x in [
            id.dev,
            id.ino,
            id.birth_ns,
            v.offset,
            v.len,
            u64::from(v.crc),
        ] {
            h.write_u64(x);
        }
        h.finish() | 1
    }

    fn bucket_at(&self, tag: u64) -> u64 {
        HEADER + ((tag >> 32) % self.buckets) * (BUCKET as u64 * 8)
    }

    fn read_bucket(&self, at: u64) -> Option<[u64; BUCKET]> {
        let mut b = [0u8; BUCKET * 8];
        self.file.read_exact_at(&mut b, at).ok()?;
        let mut s = [0u64; BUCKET];
        for (i, c) in b.chunks_exact(8).enumerate() {
            s[i] = u64::from_le_bytes(c.try_into().ok()?);
        }
        Some(s)
    }

    /// The table's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where version `v` of file `id` is looked up (the file offset of its bucket of 8
    /// slots) and its tag: for tests that write damaged entries.
    #[doc(hidden)]
    pub fn entry_of(&self, id: &FileIdentity, v: &Stored) -> (u64, u64) {
        let tag = self.tag(id, v);
        (self.bucket_at(tag), tag)
    }

    /// The byte whose lock claims the check of the version with tag `tag`: past the
    /// table's end (a lock needs no byte to exist), spread by the tag.
    fn claim_byte(tag: u64) -> u64 {
        (1 << 40) + (tag >> 24)
    }

    /// Take (`F_WRLCK`) or drop (`F_UNLCK`) this open file's lock on `byte`, without
    /// waiting. `false`: another process holds it.
    fn lock(&self, byte: u64, ty: libc::c_int) -> bool {
        use std::os::fd::AsRawFd;
        let (Ok(start), Ok(ty)) = (i64::try_from(byte), i16::try_from(ty)) else {
            return false;
        };
        let fl = libc::flock {
            l_type: ty,
            l_whence: libc::SEEK_SET as i16,
            l_start: start,
            l_len: 1,
            l_pid: 0,
        };
        nix::fcntl::fcntl(
            self.file.as_raw_fd(),
            nix::fcntl::FcntlArg::F_OFD_SETLK(&fl),
        )
        .is_ok()
    }

    /// About to check version `v` of file `id`: claim the check, so that other processes
    /// about to check it wait for this one instead of checking it too (concurrent scans
    /// of one database). Returns `true` when the caller should check; `false` when
    /// another process held the claim and recorded the version as checked meanwhile.
    /// A claim is an open-file-description lock on a byte of the table file: released
    /// by [`BootTable::insert`] of the version, by [`BootTable::unclaim`], or by the
    /// kernel when the process dies. A waiter gives up after `wait` and checks itself:
    /// a claim never blocks a reader for longer, and never vouches for anything.
    pub fn claim(&self, id: &FileIdentity, v: &Stored, wait: std::time::Duration) -> bool {
        let tag = self.tag(id, v);
        let byte = Self::claim_byte(tag);
        if self.claims.lock().contains(&byte) {
            return true;
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            if self.lock(byte, libc::F_WRLCK) {
                if self.contains(id, v) {
                    self.lock(byte, libc::F_UNLCK);
                    return false;
                }
                self.claims.lock().insert(byte);
                return true;
            }
            if self.contains(id, v) {
                return false;
            }
            if std::time::Instant::now() >= deadline {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Give up this process's claim of version `v` of file `id` (not checked after all).
    pub fn unclaim(&self, id: &FileIdentity, v: &Stored) {
        self.release(Self::claim_byte(self.tag(id, v)));
    }

    /// Did a process of this boot record version `v` of file `id` as checked?
    pub fn contains(&self, id: &FileIdentity, v: &Stored) -> bool {
        let tag = self.tag(id, v);
        self.read_bucket(self.bucket_at(tag))
            .is_some_and(|s| s.contains(&tag))
    }

    /// Record version `v` of file `id` as checked (best effort: an I/O error only
    /// costs a later check), and give up this process's claim of it.
    pub fn insert(&self, id: &FileIdentity, v: &Stored) {
        let tag = self.tag(id, v);
        let at = self.bucket_at(tag);
        if let Some(s) = self.read_bucket(at).filter(|s| !s.contains(&tag)) {
            let i = s
                .iter()
                .position(|&x| x == 0)
                .unwrap_or(((tag >> 8) % BUCKET as u64) as usize);
            let _ = self
                .file
                .write_all_at(&tag.to_le_bytes(), at + 8 * i as u64);
        }
        self.release(Self::claim_byte(tag));
    }

    fn release(&self, byte: u64) {
        if self.claims.lock().remove(&byte) {
            self.lock(byte, libc::F_UNLCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: 2,
            birth_ns: 3,
            uuid: 4,
            created_ns: 5,
        }
    }

    fn v(i: u64) -> Stored {
        Stored {
            offset: 4096 * i,
            len: 2 << 20,
            crc: i as u32,
        }
    }

    #[test]
    fn bounded_forgets_old_entries_and_keeps_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let boot = BootId([7; 16]);
        let t = BootTable::open_sized(dir.path(), boot, 10).unwrap();
        let len = std::fs::metadata(t.path()).unwrap().len();
        assert_eq!(len, 4096 + 8 * 1024);
        for i in 0..10_000 {
            t.insert(&id(), &v(i));
        }
        assert_eq!(
            std::fs::metadata(t.path()).unwrap().len(),
            len,
            "never grows"
        );
        let recent = (9_900..10_000)
            .filter(|&i| t.contains(&id(), &v(i)))
            .count();
        let old = (0..100).filter(|&i| t.contains(&id(), &v(i))).count();
        assert!(recent > 75, "{recent} of the last 100 kept");
        assert!(old < 20, "{old} of the first 100 kept");
        // Another file, another boot: nothing matches.
        let other = FileIdentity { uuid: 9, ..id() };
        assert!(!(9_900..10_000).any(|i| t.contains(&other, &v(i))));
        let t2 = BootTable::open_sized(dir.path(), BootId([8; 16]), 10).unwrap();
        assert!(!(9_900..10_000).any(|i| t2.contains(&id(), &v(i))));
    }

    #[test]
    fn a_claimed_check_is_waited_for_and_then_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let boot = BootId([7; 16]);
        // Two opens: two open file descriptions, whose locks exclude each other as two
        // processes' would.
        let a = BootTable::open_sized(dir.path(), boot, 10).unwrap();
        let b = BootTable::open_sized(dir.path(), boot, 10).unwrap();
        let wait = std::time::Duration::from_millis(5);
        assert!(a.claim(&id(), &v(1), wait), "the first claimer checks");
        let t = std::time::Instant::now();
        assert!(
            b.claim(&id(), &v(2), wait),
            "another version is not held up"
        );
        assert!(t.elapsed() < wait);
        assert!(
            b.claim(&id(), &v(1), wait),
            "after the wait, check for itself"
        );
        assert!(t.elapsed() >= wait);
        b.unclaim(&id(), &v(1));
        a.insert(&id(), &v(1));
        assert!(!b.claim(&id(), &v(1), wait), "checked meanwhile: no check");
        // A claim is released when its holder records the version.
        assert!(a.claim(&id(), &v(3), wait));
        a.insert(&id(), &v(3));
        assert!(!b.claim(&id(), &v(3), wait));
    }

    #[test]
    fn boot_ids_read_from_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, "0b9d2a44-7e3f-4f2c-8b61-1d2e3f405162\n").unwrap();
        assert_eq!(BootId::read(&p).unwrap().0[..2], [0x0b, 0x9d]);
        std::fs::write(&p, "nonsense").unwrap();
        assert!(BootId::read(&p).is_err());
    }
}
