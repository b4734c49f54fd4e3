//! CRC policy: when the CRC-32 of a stored block version is checked before its bytes are
//! shown, and what a process knows was checked. Below both towers: the store asks it
//! whether a version needs a check and records checks it made; virtmem uses only its
//! CRC functions ([`crc32`], [`check_pages`]). It names no other wdb module but the
//! error type.
//!
//! ## The modes ([`Verify`])
//!
//! - `OncePerBoot` (the default): a raw block version is shown straight from the file
//!   once its CRC was checked on this machine since boot, by this process or another
//!   one. Processes publish the versions they checked in a shared table (below); a
//!   version found there is mapped without a CRC pass.
//! - `OncePerProcess`: each process checks every version before it first shows it, and
//!   remembers it for the rest of its life (the set of [`Checked`]).
//! - `Off`: raw versions are trusted (mapped or read without a check). Compressed and
//!   delta records are still checked when they are decompressed or applied, catalog
//!   records always, compaction checks what it copies, and `wdbtool fsck` checks
//!   everything.
//!
//! What counts as a check: the data CRC of the whole payload, or the page CRC table
//! (storage-format.md §2.7) for the pages shown. Only whole-payload checks are recorded
//! (a random read that checked a few 16 KiB windows records nothing). Committed bytes
//! never change in place (storage-format.md §2.2), so a check holds for the life of the
//! file; like any reader of a memory map, wdb trusts the kernel's page cache to keep
//! returning the bytes that were checked.
//!
//! ## The per-boot table ([`BootTable`])
//!
//! **Where.** One file per user in `/dev/shm` (tmpfs: in RAM, gone at reboot):
//! `/dev/shm/wdb-checked-<euid>`, mode 0600, 4 KiB header + 2¹⁹ slots of 8 bytes
//! (4 MiB, touched lazily). Every database of the user shares it.
//!
//! **Entry.** A slot holds a 64-bit tag, 0 = empty:
//! `tag = SipHash-2-4_k(boot id ‖ device ‖ inode ‖ birth time ‖ payload offset ‖ stored
//! length ‖ data CRC) | 1`, keyed with `k = (uuid, creation time)` of the log's
//! file header. The tag names the database file (device, inode, birth time), its
//! generation (the uuid: compaction writes a new file with a new one), the version
//! (offset, length and the CRC it was checked against: a torn tail cut and written
//! again at the same offset is another version unless its bytes have the same CRC)
//! and the boot. A version
//! is "checked this boot" iff its tag is in the table. Lookups and inserts read and
//! write the file with `pread`/`pwrite` (no shared mapping, no unsafe code); the cost
//! is a system call per block, and a hit is remembered in the process's own set.
//!
//! **Layout.** Slots form buckets of 8 (64 bytes); a tag lives in bucket
//! `(tag >> 32) mod buckets`. Insert: if the bucket holds the tag, done; else write it
//! into an empty slot, or over slot `(tag >> 8) mod 8` when the bucket is full. So the table
//! never grows: old entries are forgotten (a forgotten version is checked again).
//!
//! **Protocol and crashes.** A process writes a tag only after the check passed, with
//! one aligned 8-byte `pwrite`. A process killed before or during that write leaves
//! the slot as it was, or (were the write torn) 8 bytes that are neither tag: a
//! garbage value matches a tag with probability 2⁻⁶⁴, so a torn or corrupt slot, or a
//! whole table of garbage, can make a version look unchecked (it is checked again),
//! never an unchecked one look checked. Losing the table costs re-checks only: nothing
//! else reads it.
//!
//! **Header.** Magic, version, slot count and the boot id of the boot that made it,
//! with a CRC. A table whose header is wrong (corrupt, another layout, another boot,
//! a wrong size) is replaced: a fresh table is written under a temporary name and
//! renamed over it (processes that have the old one open keep using it harmlessly). A
//! new table is created the same way, published with `link` so that two processes
//! racing to create it end up sharing one and nobody sees a half-written header.
//!
//! **Forgery.** Another user must not make a corrupt version look checked. (1) The
//! file is created 0600 and opened with `O_NOFOLLOW`; a table that is not a regular
//! file owned by this user with no group or other permission bits is not used (a
//! squatter in sticky `/dev/shm` can only make us check again). (2) The tag is a MAC
//! keyed by the log header's uuid and creation time: only those who can read the
//! database file can compute it, so a table writable by others would still hold no
//! entry they could forge for a database they cannot read. (Those who *can* read the
//! database and write the table are the user themself.) The boot id in the tag and in
//! the header makes a reboot start empty even for a table that survives it.
//!
//! **Which file.** Device and inode alone do not name a file for a whole boot: an inode
//! number is reused once its file is deleted, and a copy of a database (or a damaged
//! copy) has the same header. With the birth time they do, given the rule that a file is
//! named in the table only once it is a second old (older than the coarse clock that
//! stamps birth times: a later file of the same inode is born after the entry was
//! written, so not at the same time). A file system that keeps no birth time shares
//! nothing (each process checks).
//!
//! **Claims.** Processes that scan one database at once would each check every block
//! before any of them published it. A process about to check a whole block first
//! *claims* it: an open-file-description lock on a byte of the table file (past its
//! end) chosen by the tag. Another process about to check the same version finds the
//! lock taken and waits, polling the table, until the version is recorded (then it
//! shows the block without a check) or [`CLAIM_WAIT`] has passed (then it checks for
//! itself). The lock is dropped when the check is recorded, and by the kernel when the
//! claimer dies; a claim vouches for nothing.
//!
//! **Bounds.** 4 MiB of tmpfs per user, 2¹⁹ entries (1 TiB of 2 MiB blocks); a lookup
//! reads one 64-byte bucket, an insert reads it and writes 8 bytes.

mod boot_table;
mod crc;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

pub use self::boot_table::{BootId, BootTable};
pub use self::crc::{crc32, Crc32};
use crate::{Error, Result};

/// When the CRC of a stored block version is checked before its bytes are shown.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Verify {
    /// Shown once its CRC was checked on this machine since boot, by any process (the
    /// processes share what they checked in a table in shared memory).
    #[default]
    OncePerBoot,
    /// Each process checks every version before it first shows it.
    OncePerProcess,
    /// Raw block versions are trusted as stored (compressed and delta records are still
    /// checked when decoded; `wdbtool fsck` checks everything).
    Off,
}

impl Verify {
    /// Bytes of stored payloads this process has checked against their CRCs so far
    /// (whole blocks, windows and pages, file ranges; every database it opened): the CRC
    /// work a mode costs, for benchmarks.
    pub fn bytes_checked() -> u64 {
        CHECKED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Where the per-boot table lives and which boot this is ([`Verify::OncePerBoot`]).
/// The defaults are `/dev/shm` and `/proc/sys/kernel/random/boot_id`; tests point
/// both elsewhere to simulate another boot or a damaged table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlace {
    /// Directory of the table file.
    pub dir: PathBuf,
    /// File holding the boot id (a UUID in text).
    pub boot_id_file: PathBuf,
}

impl Default for TablePlace {
    fn default() -> Self {
        TablePlace {
            dir: PathBuf::from("/dev/shm"),
            boot_id_file: PathBuf::from("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// What tells one log file from every other: its inode (device, inode, birth time)
/// and its header (uuid and creation time, which key the tags of the per-boot table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// Device of the file.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Birth time in ns since the epoch (0 where the file system does not keep it).
    pub birth_ns: u64,
    /// The log header's uuid (a new one per file: compaction makes a new generation).
    pub uuid: u64,
    /// The log header's creation time.
    pub created_ns: u64,
}

/// Device, inode and birth time (ns since the epoch) of a file: [`inode_of`].
pub type Inode = (u64, u64, u64);

/// Which files hold the stored bytes of a log, so that the per-boot table can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// One file holds the whole log (a local database).
    Log(FileIdentity),
    /// Each object of the log is a file of the local cache (object storage), named by
    /// the [`Inode`] that comes with each version to look up; `uuid` and `created_ns`
    /// are the log header's. A cache file is written only after its writer checked the
    /// bytes it writes (a fetched object against its CRC) or made them (its own
    /// commit), so whatever cache file an inode and birth time name this boot, its
    /// bytes were checked this boot: such a file is named at any age.
    CacheFiles {
        /// The log header's uuid.
        uuid: u64,
        /// The log header's creation time.
        created_ns: u64,
    },
}

impl Holder {
    /// The name in the per-boot table of the file that holds a version, when it may be
    /// named now: the log file once it is [`SHARE_AFTER_AGE_NS`] old, or the cache file
    /// `file` (whose birth time is known).
    pub fn name(&self, file: Option<Inode>) -> Option<FileIdentity> {
        match *self {
            Holder::Log(id) => (now_ns() >= id.birth_ns.saturating_add(SHARE_AFTER_AGE_NS))
                .then_some(id),
            Holder::CacheFiles { uuid, created_ns } => {
                let (dev, ino, birth_ns) = file.filter(|f| f.2 != 0)?;
                Some(FileIdentity {
                    dev,
                    ino,
                    birth_ns,
                    uuid,
                    created_ns,
                })
            }
        }
    }
}

/// A stored version whose bytes are checked: where its payload is, how long, and the
/// CRC it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stored {
    /// File offset of the payload.
    pub offset: u64,
    /// Stored bytes.
    pub len: u64,
    /// The data CRC the bytes must match.
    pub crc: u32,
}

/// What one process knows was checked in one log file, and the mode that says when a
/// check is needed. One per store generation (file).
#[derive(Debug)]
pub struct Checked {
    mode: Verify,
    /// Versions this process checked, or found in the per-boot table.
    local: Mutex<HashSet<Stored>>,
    /// The per-boot table and the files that hold the log (OncePerBoot with a usable
    /// table, and a real file whose birth time is known or cache files).
    shared: Option<(Arc<BootTable>, Holder)>,
}

/// A file is named in the per-boot table only once it is this old (ns). The tag names
/// a file by device, inode and birth time; an inode number is reused once its file is
/// deleted, and file systems stamp birth times from a coarse clock (a few ms). A file
/// that was already this old when its entry was written cannot share its birth time
/// with a later file of the same inode, which is born after that write.
const SHARE_AFTER_AGE_NS: u64 = 1_000_000_000;

/// How long a process about to check a block waits for another process that claimed
/// the check of the same version ([`Checked::claim`]) before it checks for itself.
pub const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Checked {
    /// For a log held by `holder` (None: not in files, nothing is shared), under
    /// `mode`, sharing through `table` when the mode is `OncePerBoot`.
    pub fn new(mode: Verify, holder: Option<Holder>, table: Option<Arc<BootTable>>) -> Checked {
        let shared = match (mode, holder, table) {
            (Verify::OncePerBoot, Some(Holder::Log(id)), Some(t)) if id.birth_ns != 0 => {
                Some((t, Holder::Log(id)))
            }
            (Verify::OncePerBoot, Some(h @ Holder::CacheFiles { .. }), Some(t)) => Some((t, h)),
            _ => None,
        };
        Checked {
            mode,
            local: Mutex::new(HashSet::new()),
            shared,
        }
    }

    /// The mode.
    pub fn mode(&self) -> Verify {
        self.mode
    }

    /// The per-boot table and the name of the file that holds a version, when that
    /// file may be named in it now ([`Holder::name`]).
    fn table(&self, file: Option<Inode>) -> Option<(&Arc<BootTable>, FileIdentity)> {
        let (t, holder) = self.shared.as_ref()?;
        Some((t, holder.name(file)?))
    }

    /// Must `v`'s bytes (in `file`, for a log in cache files) be checked before they
    /// are shown? No under `Off`, nor when this process checked them, nor
    /// (`OncePerBoot`) when a process checked them since boot.
    pub fn needs_check(&self, v: &Stored, file: Option<Inode>) -> bool {
        if self.mode == Verify::Off || self.local.lock().contains(v) {
            return false;
        }
        match self.table(file) {
            Some((t, id)) if t.contains(&id, v) => {
                self.local.lock().insert(*v);
                false
            }
            _ => true,
        }
    }

    /// About to check `v`'s bytes (a whole block): claim the check in the per-boot table
    /// so that other processes about to check it wait for this one (at most
    /// [`CLAIM_WAIT`]) instead of checking it too. `false`: another process checked it
    /// meanwhile — no check is needed. Without a table, always `true`.
    pub fn claim(&self, v: &Stored, file: Option<Inode>) -> bool {
        match self.table(file) {
            Some((t, id)) if !t.claim(&id, v, CLAIM_WAIT) => {
                self.local.lock().insert(*v);
                false
            }
            _ => true,
        }
    }

    /// `v`'s bytes matched their CRC: record it (and publish it, `OncePerBoot`).
    pub fn record(&self, v: &Stored, file: Option<Inode>) {
        if self.mode == Verify::Off || !self.local.lock().insert(*v) {
            return;
        }
        if let Some((t, id)) = self.table(file) {
            t.insert(&id, v);
        }
    }

    /// Check `bytes` (the whole payload of `v`) against `v.crc`; record a match. A
    /// mismatch is `Corruption` at the payload, naming `what`.
    #[cfg(any(test, feature = "internals"))]
    pub fn check_whole(&self, v: &Stored, bytes: &[u8], what: &str) -> Result<()> {
        check_crc(bytes, v.crc, v.offset, what)?;
        self.record(v, None);
        Ok(())
    }
}

static CHECKED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);


fn count(n: usize) {
    CHECKED_BYTES.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// `Corruption` at `offset` unless `crc32(bytes) == want`.
pub fn check_crc(bytes: &[u8], want: u32, offset: u64, what: &str) -> Result<()> {
    count(bytes.len());
    let got = crc32(bytes);
    if got != want {
        return Err(Error::corruption(
            offset,
            format!("data CRC mismatch ({what}: {got:#010x}, recorded {want:#010x})"),
        ));
    }
    Ok(())
}

/// Check 4 KiB pages against their CRCs: `bytes` are whole pages (the last may be
/// partial) whose expected CRCs are `crcs` (at least as many). Returns the index of the
/// first page that does not match.
pub fn check_pages(bytes: &[u8], crcs: &[u32]) -> Option<usize> {
    count(bytes.len());
    let mut it = crcs.iter();
    bytes
        .chunks(crate::format::PAGE)
        .position(|p| it.next().is_none_or(|&want| crc32(p) != want))
}

/// CRC-32 of `len` bytes at offset `off` of a file, read with `read_at` (`pread`-like:
/// fill the buffer from the offset) in pieces into a buffer of this thread, so no
/// unsafe mapping is needed; the pages read stay in the page cache for the views that
/// map them next.
pub fn crc_of_range(
    read_at: impl Fn(&mut [u8], u64) -> Result<()>,
    off: u64,
    len: u64,
) -> Result<u32> {
    const PIECE: usize = 256 << 10;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut b = b.try_borrow_mut().map_err(|_| {
            Error::InvalidArgument("a nested CRC of a file range on one thread".into())
        })?;
        b.resize(PIECE, 0);
        let mut h = Crc32::new();
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(PIECE as u64)).unwrap_or(PIECE);
            read_at(&mut b[..n], off + done)?;
            count(n);
            h.update(&b[..n]);
            done += n as u64;
        }
        Ok(h.finalize())
    })
}

/// The per-boot table of `place` for this process, opened once per place and shared by
/// every database of the process; None when it cannot be used (no such directory, a
/// table not owned by this user, no boot id): then `OncePerBoot` checks once per
/// process.
pub fn boot_table(place: &TablePlace) -> Option<Arc<BootTable>> {
    static TABLES: Mutex<Vec<(TablePlace, Option<Arc<BootTable>>)>> = Mutex::new(Vec::new());
    let mut g = TABLES.lock();
    if let Some((_, t)) = g.iter().find(|(p, _)| p == place) {
        return t.clone();
    }
    let t = match BootId::read(&place.boot_id_file)
        .and_then(|boot| BootTable::open(&place.dir, boot))
    {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::warn!(dir = %place.dir.display(), error = %e, "no shared table of checked blocks: each process checks them");
            None
        }
    };
    g.push((place.clone(), t.clone()));
    t
}

/// Device, inode and birth time (ns since the epoch, 0 if the file system keeps none)
/// of a file, from its metadata: the part of a [`FileIdentity`] that is not in the
/// log header.
pub fn inode_of(md: &std::fs::Metadata) -> Inode {
    use std::os::unix::fs::MetadataExt;
    let birth = md
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    (md.dev(), md.ino(), birth)
}
