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
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Error, Result};

/// Open files kept by the cache (beyond it, the least recently used is closed).
const OPEN_FILES: usize = 256;

#[derive(Debug)]
struct Entry {
    size: u64,
    tick: u64,
    file: Option<Arc<File>>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
    open: usize,
}

/// A bounded cache of immutable objects in a directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max: u64,
    _lock: File,
    st: Mutex<State>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

impl Cache {
    /// Take a free slot of cache directory `root` (created if missing), bounded to `max`
    /// bytes; scan what it holds.
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
            let c = Cache {
                dir,
                max,
                _lock: lock,
                st: Mutex::new(State::default()),
            };
            c.scan()?;
            return Ok(c);
        }
        Err(Error::Busy(format!(
            "all 64 slots of cache directory {} are in use by other processes",
            root.display()
        )))
    }

    /// The slot's directory (the database's local lock file lives there too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the entries that start with `prefix`, sorted.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
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
        self.st
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

    /// Bytes held.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.st.lock().total
    }

    /// Where entry `name` lives.
    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join("o").join(name)
    }

    fn scan(&self) -> Result<()> {
        let o = self.dir.join("o");
        std::fs::create_dir_all(&o)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(&o)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let md = e.metadata()?;
            if name.contains(".tmp") || !valid_name(&name) {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let size = md.blocks() * 512;
            let t = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            found.push((t, name, size));
        }
        found.sort();
        let mut st = self.st.lock();
        for (_, name, size) in found {
            st.tick += 1;
            st.total += size;
            let tick = st.tick;
            st.entries.insert(
                name,
                Entry {
                    size,
                    tick,
                    file: None,
                },
            );
        }
        drop(st);
        self.evict(None);
        Ok(())
    }

    /// The entry `name`, opened, if the cache holds it.
    pub fn get(&self, name: &str) -> Option<Arc<File>> {
        let mut st = self.st.lock();
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
                if let Some(e) = st.entries.remove(name) {
                    st.total -= e.size;
                }
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
    /// (the caller keeps the bytes in memory instead).
    pub fn insert(
        &self,
        name: &str,
        size: u64,
        write: impl FnOnce(&File) -> std::io::Result<()>,
    ) -> Result<Option<Arc<File>>> {
        if !valid_name(name) {
            return Err(Error::InvalidArgument(format!("cache entry name {name:?}")));
        }
        if size > self.max {
            return Ok(None);
        }
        if let Some(f) = self.get(name) {
            return Ok(Some(f));
        }
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dst = self.entry_path(name);
        let tmp = self.dir.join("o").join(format!("{name}.tmp{seq}"));
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
                return Err(Error::Io(e));
            }
        };
        {
            let mut st = self.st.lock();
            st.tick += 1;
            let tick = st.tick;
            if let Some(old) = st.entries.insert(
                name.to_string(),
                Entry {
                    size,
                    tick,
                    file: Some(f.clone()),
                },
            ) {
                st.total -= old.size;
                if old.file.is_some() {
                    st.open -= 1;
                }
            }
            st.total += size;
            st.open += 1;
            if st.open > OPEN_FILES {
                Self::close_some(&mut st);
            }
        }
        self.evict(Some(name));
        Ok(Some(f))
    }

    /// Drop entry `name` (a check found it bad).
    pub fn remove(&self, name: &str) {
        let mut st = self.st.lock();
        if let Some(e) = st.entries.remove(name) {
            st.total -= e.size;
            if e.file.is_some() {
                st.open -= 1;
            }
        }
        let _ = std::fs::remove_file(self.entry_path(name));
    }

    /// Unlink least recently used entries (never `keep`) until the total fits.
    fn evict(&self, keep: Option<&str>) {
        let mut st = self.st.lock();
        if st.total <= self.max {
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
            if st.total <= self.max {
                break;
            }
            if let Some(e) = st.entries.remove(&k) {
                st.total -= e.size;
                if e.file.is_some() {
                    st.open -= 1;
                }
                let _ = std::fs::remove_file(self.entry_path(&k));
            }
        }
    }
}

use std::os::unix::fs::MetadataExt as _;

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
}
