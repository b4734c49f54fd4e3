//! The local cache of an object-store database: immutable objects (data payloads,
//! commit objects, checkpoints) kept as files, bounded by `cache_size`, least recently
//! used evicted first.
//!
//! - **One process per cache directory.** The directory holds slots `slot-<i>`; a
//!   process takes the first slot whose lock it can get (an OFD lock, released when
//!   the process dies), so each slot's size is bounded by one process's accounting and
//!   two processes never evict under each other's feet.
//! - **Crash-safe.** An entry is written to a temporary file, synced, then renamed into
//!   place: after a crash an entry is whole or absent; temporary files are deleted when
//!   the slot is next taken. What the files hold is checked where it is used, as for the
//!   log (CRCs of commit objects, checkpoints, payloads).
//! - **Opened by name.** Taking a slot lists its directory's names only; a background
//!   thread then reads each entry's size and age (a `statx` each: an open of a slot of
//!   tens of thousands of entries does not wait for them), ranks the entries not used
//!   since the open by age, below every use, and evicts what exceeds the bound. An
//!   insert waits for that scan, and so does dropping the cache (before the slot's
//!   lock is released), so the bound holds after every process.
//! - **Room first.** An insert counts its bytes against the bound, evicting as
//!   needed, before it writes its file: the directory never holds more than the bound
//!   (evicted files that views still map aside).
//! - **Eviction is unlink.** A file that a view maps (zero-copy reads map data entries
//!   like raw blocks of the log) stays valid after it is unlinked: the kernel keeps the
//!   inode until the last mapping and descriptor go. Eviction never rewrites or punches
//!   a file.
//! - **Data entries are sparse**: the payload of the data object that holds the virtual
//!   log's bytes `off..off + len` is written at file offset `off`, so a mapped raw block
//!   has the same offset in its cache file as in the log (the CRC-checked set and the
//!   page CRC tables are keyed by that offset). Their size counts the payload only.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::{Error, Result};

/// Open files kept by the cache (beyond it, the least recently used is closed).
const OPEN_FILES: usize = 256;

#[derive(Debug)]
struct Entry {
    /// Bytes it occupies on disk; None until the opening scan has read its metadata.
    size: Option<u64>,
    /// Recency: greater is more recently used; 0 for an entry found at open and not
    /// used since (the opening scan ranks those by modification time, below every use).
    tick: u64,
    file: Option<Arc<File>>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Sum of the known sizes.
    total: u64,
    /// Bytes of inserts being written (counted against the bound before they are).
    reserved: u64,
    tick: u64,
    open: usize,
    /// The opening scan is over: every entry's size is known (or it was dropped).
    scanned: bool,
}

/// What the cache and its opening scan share.
#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    max: u64,
    st: Mutex<State>,
    /// Signalled when `State::scanned` becomes true.
    scan_done: Condvar,
}

/// A bounded cache of immutable objects in a directory.
#[derive(Debug)]
pub struct Cache {
    inner: Arc<Inner>,
    /// The opening scan; joined on drop (a process that closes before it is over
    /// waits for the rest: the bound holds after every process), before the slot's lock
    /// is released, so that it never evicts in a slot another process has taken.
    scan: Option<std::thread::JoinHandle<()>>,
    _lock: File,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

impl Cache {
    /// Take a free slot of cache directory `root` (created if missing), bounded to `max`
    /// bytes. What the slot holds is known by name at once; its entries' sizes and ages
    /// are read in the background (see [`Inner::scan`]).
    pub fn open(root: &Path, max: u64) -> Result<Cache> {
        std::fs::create_dir_all(root)?;
        for i in 0..64 {
            let dir = root.join(format!("slot-{i}"));
            std::fs::create_dir_all(&dir)?;
            let lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join("slot.lock"))?;
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::ACCESS) => continue,
                Err(e) => return Err(Error::Io(e.into())),
            }
            let names = list_entries(&dir.join("o"))?;
            let mut st = State {
                entries: HashMap::with_capacity(names.len()),
                tick: names.len() as u64,
                ..State::default()
            };
            for n in &names {
                st.entries.insert(
                    n.clone(),
                    Entry {
                        size: None,
                        tick: 0,
                        file: None,
                    },
                );
            }
            let inner = Arc::new(Inner {
                dir,
                max,
                st: Mutex::new(st),
                scan_done: Condvar::new(),
            });
            let mut c = Cache {
                inner: inner.clone(),
                scan: None,
                _lock: lock,
            };
            let scan = {
                let inner = inner.clone();
                let names = names.clone();
                std::thread::Builder::new()
                    .name("wdb-cache-scan".into())
                    .spawn(move || inner.scan(names))
            };
            match scan {
                Ok(h) => c.scan = Some(h),
                // No thread to be had: scan on this one.
                Err(_) => inner.scan(names),
            }
            return Ok(c);
        }
        Err(Error::Busy(format!(
            "all 64 slots of cache directory {} are in use by other processes",
            root.display()
        )))
    }

    /// The slot's directory (the database's local lock file lives there too).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Names of the entries that start with `prefix`, sorted.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .st
            .lock()
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The greatest name of an entry that starts with `prefix`.
    pub fn last_with_prefix(&self, prefix: &str) -> Option<String> {
        self.inner
            .st
            .lock()
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .max()
            .cloned()
    }

    /// The bytes of entry `name` (whole), if the cache holds it.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        let f = self.get(name)?;
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut &*f, &mut b).ok()?;
        Some(b)
    }

    /// Bytes held (once the opening scan is over).
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.inner.scanned().total
    }

    /// Where entry `name` lives.
    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.inner.entry_path(name)
    }

    /// The entry `name`, opened, if the cache holds it.
    pub fn get(&self, name: &str) -> Option<Arc<File>> {
        let mut st = self.inner.st.lock();
        st.tick += 1;
        let tick = st.tick;
        let e = st.entries.get_mut(name)?;
        e.tick = tick;
        if let Some(f) = &e.file {
            return Some(f.clone());
        }
        let f = match File::open(self.entry_path(name)) {
            Ok(f) => Arc::new(f),
            Err(_) => {
                // Deleted behind our back: forget it.
                Inner::forget(&mut st, name);
                return None;
            }
        };
        if let Some(e) = st.entries.get_mut(name) {
            e.file = Some(f.clone());
        }
        st.open += 1;
        if st.open > OPEN_FILES {
            Self::close_some(&mut st);
        }
        Some(f)
    }

    fn close_some(st: &mut State) {
        let mut open: Vec<(u64, String)> = st
            .entries
            .iter()
            .filter(|(_, e)| e.file.is_some())
            .map(|(k, e)| (e.tick, k.clone()))
            .collect();
        open.sort();
        for (_, k) in open.iter().take(open.len() / 2) {
            if let Some(e) = st.entries.get_mut(k) {
                e.file = None;
                st.open -= 1;
            }
        }
    }

    /// Add entry `name` of `size` bytes (the bytes it will occupy), written by `write`
    /// into a fresh file; returns it opened. None when `size` alone exceeds the bound
    /// (the caller keeps the bytes in memory instead). Its accounting waits for the
    /// opening scan, so that the bound holds over what the slot held before.
    pub fn insert(
        &self,
        name: &str,
        size: u64,
        write: impl FnOnce(&File) -> std::io::Result<()>,
    ) -> Result<Option<Arc<File>>> {
        if !valid_name(name) {
            return Err(Error::InvalidArgument(format!("cache entry name {name:?}")));
        }
        if size > self.inner.max {
            return Ok(None);
        }
        if let Some(f) = self.get(name) {
            return Ok(Some(f));
        }
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Room is made before the file is written, so the directory never holds more
        // than the bound (files that views still map after their eviction aside).
        self.inner.scanned().reserved += size;
        self.inner.evict(None);
        let dst = self.entry_path(name);
        let tmp = self.inner.dir.join("o").join(format!("{name}.tmp{seq}"));
        let r = (|| -> std::io::Result<File> {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            write(&f)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &dst)?;
            Ok(f)
        })();
        let f = match r {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.inner.st.lock().reserved -= size;
                return Err(Error::Io(e));
            }
        };
        {
            let mut st = self.inner.st.lock();
            st.reserved -= size;
            st.tick += 1;
            let tick = st.tick;
            Inner::forget(&mut st, name);
            st.entries.insert(
                name.to_string(),
                Entry {
                    size: Some(size),
                    tick,
                    file: Some(f.clone()),
                },
            );
            st.total += size;
            st.open += 1;
            if st.open > OPEN_FILES {
                Self::close_some(&mut st);
            }
        }
        self.inner.evict(Some(name));
        Ok(Some(f))
    }

    /// Drop entry `name` (a check found it bad).
    pub fn remove(&self, name: &str) {
        Inner::forget(&mut self.inner.st.lock(), name);
        let _ = std::fs::remove_file(self.entry_path(name));
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(h) = self.scan.take() {
            let _ = h.join();
        }
    }
}

/// The names of the entries in directory `o` (created if missing); temporary files
/// (an insert cut short by a crash) and foreign names are deleted. Names only: one
/// `getdents` per few hundred entries, no `statx`.
fn list_entries(o: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(o)?;
    let mut names = Vec::new();
    for e in std::fs::read_dir(o)? {
        let e = e?;
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match e.file_name().into_string() {
            Ok(name) if !name.contains(".tmp") && valid_name(&name) => names.push(name),
            _ => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(names)
}

impl Inner {
    fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join("o").join(name)
    }

    /// The state, once the opening scan is over.
    fn scanned(&self) -> MutexGuard<'_, State> {
        let mut st = self.st.lock();
        while !st.scanned {
            self.scan_done.wait(&mut st);
        }
        st
    }

    /// Take entry `name` out of the accounting (its file is not touched).
    fn forget(st: &mut State, name: &str) {
        if let Some(e) = st.entries.remove(name) {
            st.total -= e.size.unwrap_or(0);
            if e.file.is_some() {
                st.open -= 1;
            }
        }
    }

    /// The opening scan: read the size and modification time of each entry found at
    /// open (one `statx` each), rank the entries not used since by
    /// age, below every use, then evict what exceeds the bound. An open of a slot
    /// holding tens of thousands of entries does not wait for this; an insert does.
    fn scan(&self, names: Vec<String>) {
        /// Marks the scan over however it ends (done or a panic), so that no insert
        /// waits forever.
        struct Over<'a>(&'a Inner);
        impl Drop for Over<'_> {
            fn drop(&mut self) {
                self.0.st.lock().scanned = true;
                self.0.scan_done.notify_all();
            }
        }
        let over = Over(self);
        let mut found = Vec::with_capacity(names.len());
        // Each entry looked up relative to the directory (no path walk per entry), or
        // by its path if the directory cannot be opened (out of descriptors).
        let o = File::open(self.dir.join("o")).ok();
        for name in names {
            use rustix::fs::{statat, AtFlags, CWD};
            let st = match &o {
                Some(o) => statat(o, name.as_str(), AtFlags::SYMLINK_NOFOLLOW),
                None => statat(CWD, self.entry_path(&name), AtFlags::SYMLINK_NOFOLLOW),
            };
            match st {
                Ok(st) => {
                    let age = (st.st_mtime, st.st_mtime_nsec);
                    found.push((age, name, (st.st_blocks as u64).saturating_mul(512)));
                }
                // Gone (removed since the listing): dropped below.
                Err(rustix::io::Errno::NOENT) => {}
                // Unknown: ranked oldest, so the first to go when room is needed.
                Err(_) => found.push(((0, 0), name, 0)),
            }
        }
        found.sort();
        {
            let mut st = self.st.lock();
            let st = &mut *st;
            for (i, (_, name, size)) in found.into_iter().enumerate() {
                if let Some(e) = st.entries.get_mut(&name) {
                    if e.size.is_none() {
                        e.size = Some(size);
                        st.total += size;
                        if e.tick == 0 {
                            e.tick = i as u64 + 1;
                        }
                    }
                }
            }
            // Gone before its metadata was read: forget it unless a handle keeps it.
            st.entries.retain(|_, e| {
                if e.size.is_none() && e.file.is_some() {
                    e.size = Some(0);
                }
                e.size.is_some()
            });
        }
        // Evicted before the scan is marked over: whoever waits for it sees the bound hold.
        self.evict(None);
        drop(over);
    }

    /// Unlink least recently used entries (never `keep`) until the total and the
    /// reserved bytes fit.
    fn evict(&self, keep: Option<&str>) {
        let mut st = self.st.lock();
        let fits = |st: &State| st.total.saturating_add(st.reserved) <= self.max;
        if fits(&st) {
            return;
        }
        let mut by_age: Vec<(u64, String)> = st
            .entries
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != keep)
            .map(|(k, e)| (e.tick, k.clone()))
            .collect();
        by_age.sort();
        for (_, k) in by_age {
            if fits(&st) {
                break;
            }
            Inner::forget(&mut st, &k);
            let _ = std::fs::remove_file(self.entry_path(&k));
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn bounded_lru_and_slots() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), 3 << 20).unwrap();
        let mb = vec![1u8; 1 << 20];
        for i in 0..5 {
            c.insert(&format!("e{i}"), 1 << 20, |f| f.write_all_at(&mb, 0))
                .unwrap()
                .unwrap();
            assert!(c.used() <= 3 << 20);
        }
        assert!(c.get("e0").is_none() && c.get("e1").is_none());
        assert!(c.get("e4").is_some());
        // Too big for the bound: not cached.
        assert!(c.insert("big", 4 << 20, |_| Ok(())).unwrap().is_none());
        // A second cache on the same root takes another slot.
        let c2 = Cache::open(d.path(), 1 << 20).unwrap();
        assert_ne!(c.dir(), c2.dir());
        drop(c);
        // The slot's entries survive a reopen.
        let c3 = Cache::open(d.path(), 3 << 20).unwrap();
        assert!(c3.get("e4").is_some());
    }

    /// Room for an entry is made before it is written: the directory never holds
    /// more than the bound.
    #[test]
    fn room_is_made_before_an_entry_is_written() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), 3 << 20).unwrap();
        let mb = vec![1u8; 1 << 20];
        let on_disk = || -> u64 {
            std::fs::read_dir(d.path().join("slot-0").join("o"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        for i in 0..6 {
            c.insert(&format!("e{i}"), 1 << 20, |f| {
                assert!(on_disk() <= 2 << 20, "before writing e{i}: {}", on_disk());
                f.write_all_at(&mb, 0)?;
                assert!(on_disk() <= 3 << 20, "after writing e{i}: {}", on_disk());
                Ok(())
            })
            .unwrap()
            .unwrap();
        }
        // A failed write gives its room back.
        let e = c.insert("bad", 1 << 20, |_| Err(std::io::Error::other("full")));
        assert!(e.is_err());
        assert_eq!(c.inner.st.lock().reserved, 0);
        assert_eq!(c.used(), 2 << 20);
    }

    /// Entries found at open rank by their files' ages, below any use since the open,
    /// and a smaller bound than the slot holds is enforced by the opening scan.
    #[test]
    fn opening_scan_ranks_by_age_and_enforces_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), 16 << 20).unwrap();
        let mb = vec![1u8; 1 << 20];
        let now = std::time::SystemTime::now();
        for i in 0..6u64 {
            let f = c
                .insert(&format!("e{i}"), 1 << 20, |f| f.write_all_at(&mb, 0))
                .unwrap()
                .unwrap();
            // e0 is the newest file, e5 the oldest.
            f.set_modified(now - std::time::Duration::from_secs(60 * (i + 1)))
                .unwrap();
        }
        drop(c);

        // Used right after the open (whether or not the scan is over), e5 ranks newest.
        let c = Cache::open(d.path(), 7 << 20).unwrap();
        assert!(c.get("e5").is_some());
        for n in ["f", "g"] {
            c.insert(n, 1 << 20, |f| f.write_all_at(&mb, 0)).unwrap().unwrap();
        }
        assert_eq!(c.used(), 7 << 20);
        for (name, kept) in [("e5", true), ("e4", false), ("e3", true), ("g", true)] {
            assert_eq!(c.get(name).is_some(), kept, "{name}");
            assert_eq!(c.entry_path(name).exists(), kept, "{name}");
        }
        drop(c);

        // Reopened with room for three: the three newest files stay, the rest is unlinked.
        let c = Cache::open(d.path(), 3 << 20).unwrap();
        assert_eq!(c.used(), 3 << 20);
        assert_eq!(c.names_with_prefix(""), ["e0", "f", "g"]);
        let on_disk = std::fs::read_dir(d.path().join("slot-0").join("o")).unwrap().count();
        assert_eq!(on_disk, 3);
    }
}
