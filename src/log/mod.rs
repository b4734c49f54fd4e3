//! The append-only log file: create/open, append one transaction atomically, scan and
//! verify transactions, recover a torn tail, and the lock file (writer lock, reader table).
//!
//! Invariants (storage-format.md, "Commit protocol"):
//! 1. Bytes before the end of the last committed transaction are never rewritten or
//!    truncated; only a torn tail (bytes after it that do not form a valid transaction)
//!    is ever cut, and the cut bytes are first saved to a side file.
//! 2. A transaction is committed iff its header, every record header, its trailer and the
//!    transaction CRC are valid and it lies entirely within the file.
//! 3. Appends happen only under the writer lock, at the end of the last committed
//!    transaction.

pub mod io;
pub mod lock;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::format::{self, EncodedTx, FileHeader, TxPiece, RecordHeader, TxEnd, TxHeader};
use crate::{Error, Result, Tid};
use io::{FileIo, LogIo};

/// One transaction as read from the log.
#[derive(Debug, Clone)]
pub struct ScannedTx {
    /// File offset of its header.
    pub off: u64,
    /// Its header.
    pub header: TxHeader,
    /// User name (may be empty).
    pub user: String,
    /// Description (may be empty).
    pub desc: String,
    /// (file offset, header) of each data record.
    pub records: Vec<(u64, RecordHeader)>,
    /// Its trailer.
    pub end: TxEnd,
}

/// Result of scanning a range of the log.
#[derive(Debug)]
pub struct Scan {
    /// The valid transactions, in file order.
    pub txs: Vec<ScannedTx>,
    /// Offset just after the last valid transaction.
    pub end: u64,
    /// Why the scan stopped before the file's end, if it did.
    pub stop: Option<Error>,
    /// File length when scanned.
    pub file_len: u64,
}

/// The log file.
#[derive(Debug)]
pub struct Log {
    io: Box<dyn LogIo>,
    path: PathBuf,
    header: FileHeader,
    file_id: (u64, u64),
    /// Birth time of the file at open (ns; 0 if unknown): part of its identity.
    birth_ns: u64,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A random-enough 64-bit id (time, pid and address entropy hashed together).
pub fn new_uuid() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns());
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// Give back the disk space of bytes `[off, off + len)` of `file` (a hole that reads as
/// zeros): a copied range of a spill file that nothing reads again. Best effort: a
/// filesystem that cannot punch holes keeps the bytes until the file is closed.
pub fn release_range(file: &File, off: u64, len: u64) {
    use rustix::fs::FallocateFlags;
    let _ = rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        off,
        len,
    );
}

/// fsync the directory holding `path`, so a create or rename in it is durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Log {
    /// Create a new, empty log at `path` (which must not exist) with `base_tid`.
    /// The file and its directory are synced.
    pub fn create(path: &Path, base_tid: Tid) -> Result<Log> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let header = FileHeader {
            version: format::FORMAT_VERSION,
            align: format::PAGE as u32,
            uuid: new_uuid(),
            created_ns: now_ns(),
            base_tid,
        };
        let io = FileIo(f);
        io.write_at(&header.encode(), 0)?;
        io.sync_data()?;
        sync_dir(path)?;
        Log::open_io(path, Box::new(io))
    }

    /// Rewrite the header of a file that a crash left shorter than or equal to the
    /// header with an invalid header: it cannot hold any transaction, so nothing
    /// committed is lost. The caller holds the writer lock.
    pub fn reinit_if_headerless(path: &Path) -> Result<Option<Log>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        if f.metadata()?.len() > format::FILE_HEADER_SIZE {
            return Ok(None);
        }
        let io = FileIo(f);
        let mut existing = Vec::new();
        std::io::Read::read_to_end(&mut &io.0, &mut existing)?;
        let mut hb = existing.clone();
        hb.resize(usize::try_from(format::FILE_HEADER_SIZE).unwrap_or(4096), 0);
        if FileHeader::decode(&hb).is_ok() {
            if existing.len() == hb.len() {
                return Ok(None);
            }
            // The fields made it to disk but not the whole page: complete it.
            io.write_at(&hb, 0)?;
            io.sync_data()?;
            return Ok(Some(Log::open_io(path, Box::new(io))?));
        }
        // Only a file we were creating: empty, all zeros, or starting with our magic.
        // Anything else is someone else's file and is left alone.
        let n = existing.len().min(format::MAGIC.len());
        let ours = existing.iter().all(|&b| b == 0) || existing[..n] == format::MAGIC[..n];
        if !ours {
            return Ok(None);
        }
        let header = FileHeader {
            version: format::FORMAT_VERSION,
            align: format::PAGE as u32,
            uuid: new_uuid(),
            created_ns: now_ns(),
            base_tid: Tid::ZERO,
        };
        io.write_at(&header.encode(), 0)?;
        io.sync_data()?;
        tracing::warn!(log = %path.display(), "rewrote the header of a database file left headerless by a crash during its creation");
        Ok(Some(Log::open_io(path, Box::new(io))?))
    }

    /// Open an existing log at `path`.
    pub fn open(path: &Path, read_only: bool) -> Result<Log> {
        let f = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Log::open_io(path, Box::new(FileIo(f)))
    }

    /// Open over a given I/O implementation (tests inject faults this way).
    pub fn open_io(path: &Path, io: Box<dyn LogIo>) -> Result<Log> {
        let mut hb = vec![0u8; usize::try_from(format::FILE_HEADER_SIZE).unwrap_or(4096)];
        io.read_at(&mut hb, 0).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::corruption(0, "file shorter than the 4096-byte header")
            }
            _ => Error::Io(e),
        })?;
        let header = FileHeader::decode(&hb)?;
        let md = std::fs::metadata(path)?;
        let (dev, ino, birth_ns) = crate::verify::inode_of(&md);
        Ok(Log {
            io,
            path: path.to_path_buf(),
            header,
            file_id: (dev, ino),
            birth_ns,
        })
    }

    /// Open a log that is not a local file (object storage) over `io`; `name` names it
    /// in messages. Its header is read from `io` and checked as a file's.
    #[cfg(any(test, feature = "internals", feature = "s3"))]
    pub fn open_virtual(name: &Path, io: Box<dyn LogIo>) -> Result<Log> {
        let mut hb = vec![0u8; usize::try_from(format::FILE_HEADER_SIZE).unwrap_or(4096)];
        io.read_at(&mut hb, 0)?;
        let header = FileHeader::decode(&hb)?;
        Ok(Log {
            io,
            path: name.to_path_buf(),
            header,
            file_id: (0, 0),
            birth_ns: 0,
        })
    }

    /// The I/O under the log.
    #[cfg(any(test, feature = "internals"))]
    pub fn io(&self) -> &dyn LogIo {
        &*self.io
    }

    /// Zero-copy reads of the log's bytes `off..off + len`: see [`LogIo::map_fd`].
    pub fn map_fd(&self, off: u64, len: u64, fetch: bool) -> Option<io::MapFile> {
        self.io.map_fd(off, len, fetch)
    }

    /// Snapshots below this tid are not complete (compaction or retention dropped them).
    pub fn base_tid(&self) -> Tid {
        self.io.base_tid().unwrap_or(self.header.base_tid)
    }

    /// The file header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }
    /// The real file under the log, if it is one (compaction copies payloads from it
    /// in the kernel).
    pub fn file(&self) -> Option<&File> {
        self.io.as_file()
    }
    /// The file descriptor, if the log is a real file.
    #[cfg(any(test, feature = "internals"))]
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.io.raw_fd()
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// (device, inode) of the file at open; differs from the path's after compaction
    /// switched files.
    #[cfg(any(test, feature = "internals"))]
    pub fn file_id(&self) -> (u64, u64) {
        self.file_id
    }
    /// What holds the log's bytes, for the per-boot table of checked versions
    /// (`verify`): the log file, cache files, or (None) nothing that can be named.
    pub fn holder(&self) -> Option<crate::verify::Holder> {
        if self.io.in_cache_files() {
            return Some(crate::verify::Holder::CacheFiles {
                uuid: self.header.uuid,
                created_ns: self.header.created_ns,
            });
        }
        self.identity().map(crate::verify::Holder::Log)
    }
    /// What tells this log file from every other (None when the log is not a real
    /// file): its inode, birth time and header.
    pub fn identity(&self) -> Option<crate::verify::FileIdentity> {
        self.io.raw_fd()?;
        Some(crate::verify::FileIdentity {
            dev: self.file_id.0,
            ino: self.file_id.1,
            birth_ns: self.birth_ns,
            uuid: self.header.uuid,
            created_ns: self.header.created_ns,
        })
    }
    /// Has the path been switched to another file (by compaction) since we opened it?
    pub fn path_switched(&self) -> bool {
        if self.file_id == (0, 0) {
            return false;
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.file_id,
            Err(_) => false,
        }
    }
    /// Current file length.
    pub fn len(&self) -> Result<u64> {
        Ok(self.io.len()?)
    }
    /// Is the log empty (header only)?
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? <= format::FILE_HEADER_SIZE)
    }

    /// Read exactly `buf.len()` bytes at `off`; a short file is corruption at `off`.
    pub fn read_exact_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let n = buf.len();
        self.io.read_at(buf, off).map_err(|e| read_error(e, off, n))
    }

    /// [`Log::read_exact_at`] for a few pages of a committed payload that a random
    /// reader wants ([`LogIo::read_pages_at`]: no readahead).
    pub fn read_pages_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let n = buf.len();
        self.io.read_pages_at(buf, off).map_err(|e| read_error(e, off, n))
    }

    /// Read and check the transaction at `off`, which must end at or before `limit`.
    /// With `verify_data`, every payload's CRC and every padding byte is checked too.
    pub fn read_tx(
        &self,
        off: u64,
        limit: u64,
        verify_data: bool,
        scratch: &mut Vec<u8>,
    ) -> Result<ScannedTx> {
        let room = limit.saturating_sub(off);
        if room < (format::TX_HEADER_SIZE + format::TX_END_SIZE) as u64 {
            return Err(Error::corruption(
                off,
                format!("incomplete transaction: {room} bytes before the end"),
            ));
        }
        let mut hb = [0u8; format::TX_HEADER_SIZE];
        self.read_exact_at(&mut hb, off)?;
        let header = TxHeader::decode(&hb, off)?;
        if header.total_len > room {
            return Err(Error::corruption(
                off,
                format!(
                    "incomplete transaction: length {} but {room} bytes before the end",
                    header.total_len
                ),
            ));
        }
        let prefix_len =
            usize::try_from(header.prefix_len()).map_err(|_| Error::corruption(off, "prefix"))?;
        let mut prefix = vec![0u8; prefix_len];
        self.read_exact_at(&mut prefix, off)?;
        let (user, desc) = header.check_prefix(&prefix, off)?;
        let mut crc = crate::verify::Crc32::new();
        crc.update(&prefix);
        let end_off = off + header.total_len - format::TX_END_SIZE as u64;
        let mut pos = off + header.prefix_len();
        let mut records =
            Vec::with_capacity(usize::try_from(header.n_records).unwrap_or(0).min(1 << 16));
        for i in 0..header.n_records {
            if pos + format::RECORD_HEADER_SIZE as u64 > end_off {
                return Err(Error::corruption(
                    pos,
                    format!(
                        "record {i} of transaction {} runs past its trailer",
                        header.tid
                    ),
                ));
            }
            let mut rb = [0u8; format::RECORD_HEADER_SIZE];
            self.read_exact_at(&mut rb, pos)?;
            let rh = RecordHeader::decode(&rb, pos)?;
            self.check_record_version(pos, &rh)?;
            crc.update(&rb);
            if pos + rh.span() > end_off {
                return Err(Error::corruption(
                    pos,
                    format!(
                        "record {i} of transaction {} runs past its trailer",
                        header.tid
                    ),
                ));
            }
            if verify_data {
                self.check_record_bytes(pos, &rh, scratch)?;
            }
            records.push((pos, rh));
            pos += rh.span();
        }
        if pos != end_off {
            return Err(Error::corruption(
                pos,
                format!(
                    "{} unexpected bytes before the trailer of transaction {}",
                    end_off.saturating_sub(pos),
                    header.tid
                ),
            ));
        }
        let mut eb = [0u8; format::TX_END_SIZE];
        self.read_exact_at(&mut eb, end_off)?;
        let end = TxEnd::decode(&eb, end_off, Some(crc))?;
        if end.tid != header.tid
            || end.total_len != header.total_len
            || end.n_records != header.n_records
        {
            return Err(Error::corruption(
                end_off,
                "trailer does not match the transaction header",
            ));
        }
        Ok(ScannedTx {
            off,
            header,
            user,
            desc,
            records,
            end,
        })
    }

    /// A record at `pos` uses only what this file's format version has: delta records,
    /// page CRC tables, aligned payloads.
    fn check_record_version(&self, pos: u64, rh: &RecordHeader) -> Result<()> {
        let v = self.header.version;
        if rh.encoding.is_delta() && v < format::DELTA_FORMAT_VERSION {
            return Err(Error::corruption(
                pos,
                format!("delta record in a format version {v} file"),
            ));
        }
        if rh.flags & format::FLAG_PAGE_CRCS != 0 && v < format::PAGE_CRC_FORMAT_VERSION {
            return Err(Error::corruption(
                pos + 3,
                format!("page CRC table in a format version {v} file"),
            ));
        }
        if rh.flags & format::FLAG_ALIGNED != 0 && v < format::ALIGNED_FORMAT_VERSION {
            return Err(Error::corruption(
                pos + 3,
                format!("aligned payload in a format version {v} file"),
            ));
        }
        Ok(())
    }

    /// Scan transactions from `from` to the end of the file, stopping at the first that
    /// is not valid. tids must strictly increase after `prev_tid`.
    pub fn scan(&self, from: u64, prev_tid: Tid, verify_data: bool) -> Result<Scan> {
        self.scan_to(from, prev_tid, verify_data, u64::MAX)
    }

    /// Like [`Log::scan`], but stop at `limit` (or the file's end if shorter).
    pub fn scan_to(&self, from: u64, prev_tid: Tid, verify_data: bool, limit: u64) -> Result<Scan> {
        let file_len = self.len()?.min(limit);
        let mut txs = Vec::new();
        let mut pos = from;
        let mut last = prev_tid;
        let mut scratch = Vec::new();
        let mut stop = None;
        while pos < file_len {
            match self.read_tx(pos, file_len, verify_data, &mut scratch) {
                Ok(tx) if tx.header.tid <= last => {
                    stop = Some(Error::corruption(
                        pos,
                        format!("tid {} does not increase (previous {last})", tx.header.tid),
                    ));
                    break;
                }
                Ok(tx) => {
                    last = tx.header.tid;
                    pos += tx.header.total_len;
                    txs.push(tx);
                }
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            }
        }
        Ok(Scan {
            txs,
            end: pos,
            stop,
            file_len,
        })
    }

    /// After a scan stopped at `bad` (not at the file's end): is there a valid
    /// transaction after it? Then the bad bytes are corruption inside committed data,
    /// not a torn tail, and must not be cut.
    pub fn valid_tx_after(&self, bad: u64, file_len: u64) -> bool {
        let mut scratch = Vec::new();
        // The last transaction, found from the trailer at the end of the file.
        if file_len >= bad + format::TX_END_SIZE as u64 {
            let mut eb = [0u8; format::TX_END_SIZE];
            if self
                .read_exact_at(&mut eb, file_len - format::TX_END_SIZE as u64)
                .is_ok()
            {
                if let Ok(end) = TxEnd::decode(&eb, 0, None) {
                    if let Some(start) = file_len.checked_sub(end.total_len) {
                        if start > bad && self.read_tx(start, file_len, false, &mut scratch).is_ok()
                        {
                            return true;
                        }
                    }
                }
            }
        }
        // The transaction right after the bad one, if its header still gives its length.
        let mut hb = [0u8; format::TX_HEADER_SIZE];
        if self.read_exact_at(&mut hb, bad).is_ok() {
            if let Ok(h) = TxHeader::decode(&hb, bad) {
                let next = bad.saturating_add(h.total_len);
                if next < file_len && self.read_tx(next, file_len, false, &mut scratch).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    /// Cut the torn tail `[at, file_len)`: save it to a side file next to the log
    /// (`<db>.torn.<at>`), sync that, then truncate the log and sync it. Returns the
    /// side file's path.
    pub fn cut_tail(&self, at: u64) -> Result<Option<PathBuf>> {
        let file_len = self.len()?;
        if at >= file_len {
            return Ok(None);
        }
        if at < format::FILE_HEADER_SIZE {
            return Err(Error::InvalidArgument(format!(
                "refusing to cut at {at}, inside the file header"
            )));
        }
        let mut side = self.path.as_os_str().to_owned();
        side.push(format!(".torn.{at}"));
        let mut side = PathBuf::from(side);
        let mut n = 0;
        while side.exists() {
            n += 1;
            let mut s = self.path.as_os_str().to_owned();
            s.push(format!(".torn.{at}.{n}"));
            side = PathBuf::from(s);
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&side)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = at;
        while pos < file_len {
            let n = usize::try_from((file_len - pos).min(1 << 20)).unwrap_or(1 << 20);
            self.read_exact_at(&mut buf[..n], pos)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &buf[..n], pos - at)?;
            pos += n as u64;
        }
        f.sync_all()?;
        sync_dir(&side)?;
        self.io.truncate(at)?;
        self.io.sync_data()?;
        tracing::warn!(log = %self.path.display(), at, bytes = file_len - at, side = %side.display(), "cut a torn tail");
        Ok(Some(side))
    }

    /// Check every stored byte of the record at `pos` (header `rh`): the page CRC table,
    /// zero padding — except where the file has a hole, which reads as zeros and holds
    /// no byte (storage-format.md §2.8) — and the payload against its CRCs.
    fn check_record_bytes(&self, pos: u64, rh: &RecordHeader, scratch: &mut Vec<u8>) -> Result<()> {
        let len = |x: u64, what: &str| {
            usize::try_from(x).map_err(|_| Error::corruption(pos, what.to_string()))
        };
        let table = len(rh.table_len(), "page CRC table length")?;
        let stored = len(u64::from(rh.stored_len), "stored length")?;
        let tail = len(
            rh.span() - rh.payload_rel() - u64::from(rh.stored_len),
            "record span",
        )?;
        let table_at = pos + format::RECORD_HEADER_SIZE as u64;
        let pad_at = table_at + table as u64;
        let payload_at = pos + rh.payload_rel();
        // Padding: the data parts of it are read and must be zero.
        let ranges = self.io.data_ranges(pad_at, u64::from(rh.pad))?;
        for (at, n) in ranges {
            let mut done = 0;
            while done < n {
                let k = (n - done).min(1 << 20);
                scratch.clear();
                scratch.resize(len(k, "pad")?, 0);
                self.read_exact_at(scratch, at + done)?;
                if scratch.iter().any(|&b| b != 0) {
                    return Err(Error::corruption(pos, "nonzero padding in a record"));
                }
                done += k;
            }
        }
        // Table, then payload and its tail padding.
        scratch.clear();
        scratch.resize(table + stored + tail, 0);
        self.read_exact_at(&mut scratch[..table], table_at)?;
        self.read_exact_at(&mut scratch[table..], payload_at)?;
        if scratch[table + stored..].iter().any(|&b| b != 0) {
            return Err(Error::corruption(pos, "nonzero padding in a record"));
        }
        format::check_payload(rh, pos, &scratch[..table], &scratch[table..table + stored])
    }

    /// Append an encoded transaction at `at` (the end of the last committed one), then
    /// fdatasync if `sync`. An error leaves a torn tail that recovery cuts; the caller
    /// must poison the writer (a failed fsync is never retried).
    ///
    /// Order of the writes: the pieces in memory first (coalesced into large writes),
    /// then the payloads copied from other files, the last one first, then the final
    /// piece, which ends with the trailer. The trailer is written after every other byte
    /// of the transaction, so a process that dies during the append never leaves a
    /// trailer behind bytes it did not write (a committer of another process checks the
    /// headers and the trailer, not the payloads, of a transaction it reads under the
    /// writer lock). The copies go last-first because the last-spilled payloads are the
    /// likeliest to be still unwritten in the page cache: copied and released first,
    /// the kernel never writes them to the spill file's disk blocks.
    pub fn append(&self, at: u64, tx: &EncodedTx<'_>, sync: bool) -> Result<()> {
        let (last, body) = match tx.pieces.split_last() {
            Some((l, b)) => (Some(l), b),
            None => (None, &tx.pieces[..]),
        };
        let mut pos = at;
        // Small pieces are coalesced: `pending` holds the bytes from `pending_at` on.
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_at = pos;
        let mut copies = Vec::new();
        let flush = |pending: &mut Vec<u8>, pending_at: u64| -> Result<()> {
            if !pending.is_empty() {
                self.io.write_at(pending, pending_at)?;
                pending.clear();
            }
            Ok(())
        };
        for p in body {
            match p {
                TxPiece::Copy(r) => {
                    flush(&mut pending, pending_at)?;
                    copies.push((r, pos));
                    pos += u64::from(r.len);
                    pending_at = pos;
                }
                TxPiece::Table(c) => {
                    let t = format::encode_page_table(c);
                    pending.extend_from_slice(&t);
                    pos += t.len() as u64;
                }
                TxPiece::Hole(n) => {
                    // Skipped: the bytes after it extend the file over it, as a hole.
                    flush(&mut pending, pending_at)?;
                    pos += n;
                    pending_at = pos;
                }
                TxPiece::Own(_) | TxPiece::Borrowed(_) => {
                    let b = p.bytes().unwrap_or_default();
                    if b.len() < (64 << 10) {
                        pending.extend_from_slice(b);
                    } else {
                        flush(&mut pending, pending_at)?;
                        self.io.write_at(b, pos)?;
                        pending_at = pos + b.len() as u64;
                    }
                    pos += b.len() as u64;
                }
            }
        }
        flush(&mut pending, pending_at)?;
        for (r, off) in copies.into_iter().rev() {
            let len = u64::from(r.len);
            self.io.copy_from(r.file, r.off, len, off)?;
            if r.release {
                release_range(r.file, r.off, len);
            }
        }
        if let Some(p) = last {
            match p {
                TxPiece::Copy(r) => self.io.copy_from(r.file, r.off, u64::from(r.len), pos)?,
                TxPiece::Table(c) => self.io.write_at(&format::encode_page_table(c), pos)?,
                TxPiece::Hole(_) => {}
                TxPiece::Own(_) | TxPiece::Borrowed(_) => {
                    self.io.write_at(p.bytes().unwrap_or_default(), pos)?
                }
            }
            pos += p.len();
        }
        debug_assert_eq!(pos - at, tx.total_len);
        if sync {
            self.io.sync_data()?;
        }
        Ok(())
    }

    /// After a failed append (under the writer lock): cut the file back to `at`, the end
    /// of the last acknowledged transaction. Only unacknowledged bytes are removed.
    pub fn truncate_unacknowledged(&self, at: u64) -> Result<()> {
        if self.len()? > at {
            self.io.truncate(at)?;
        }
        Ok(())
    }

    /// fdatasync the log.
    pub fn sync(&self) -> Result<()> {
        Ok(self.io.sync_data()?)
    }
}

/// The error of a read of `len` bytes at `off`: a short file is corruption at `off`.
fn read_error(e: std::io::Error, off: u64, len: usize) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::corruption(
            off,
            format!("{len} bytes needed past the end of the file"),
        ),
        // A log that is not a file reports wdb errors (corruption naming an object, a
        // snapshot gone) through io::Error.
        _ if e.get_ref().is_some_and(|r| r.is::<Error>()) => {
            match e.into_inner().map(|r| r.downcast::<Error>()) {
                Some(Ok(w)) => *w,
                Some(Err(r)) => Error::Io(std::io::Error::other(r)),
                None => Error::Io(std::io::Error::other("I/O error")),
            }
        }
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_tx, Encoding, Key, RecordIn};

    #[test]
    fn append_scan_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.wdb");
        let log = Log::create(&p, Tid(0)).unwrap();
        let data = vec![3u8; 10000];
        let recs = [RecordIn {
            key: Key::Block { array: 1, blk: 0 },
            encoding: Encoding::Raw,
            flags: 0,
            prev_off: 0,
            logical_len: 10000,
            payload: format::PayloadSrc::Mem(&data),
            data_crc: crate::verify::crc32(&data),
            page_crcs: None,
        }];
        let tx = encode_tx(4096, Tid(1), 1, "", "", &recs).unwrap();
        log.append(4096, &tx, true).unwrap();
        let end = 4096 + tx.total_len;
        let s = log.scan(4096, Tid(0), true).unwrap();
        assert_eq!(s.txs.len(), 1);
        assert!(s.stop.is_none());
        assert_eq!(s.end, end);
        log.io.write_at(&[1, 2, 3], end).unwrap();
        let s = log.scan(4096, Tid(0), true).unwrap();
        assert!(s.stop.is_some());
        assert!(!log.valid_tx_after(s.end, s.file_len));
        let side = log.cut_tail(s.end).unwrap().unwrap();
        assert_eq!(std::fs::read(side).unwrap(), vec![1, 2, 3]);
        assert_eq!(log.len().unwrap(), end);
    }
}

