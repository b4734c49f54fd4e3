//! The I/O seam under the log: a file of bytes addressed by offset. The real
//! implementation is a `std::fs::File`; [`FaultyIo`] wraps any implementation and tears
//! writes or fails them (EIO, ENOSPC) at the N-th call, so tests can drive every error path.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
#[cfg(any(test, feature = "internals"))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Positional file I/O used by the log.
pub trait LogIo: Send + Sync + std::fmt::Debug {
    /// Read exactly `buf.len()` bytes at `off` (`UnexpectedEof` if the file is shorter).
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// [`LogIo::read_at`] for a few pages of a committed payload that a random reader
    /// wants (small writes read the pages they patch). Default: `read_at`; [`FileIo`]
    /// reads through a mapping that never reads ahead.
    fn read_pages_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.read_at(buf, off)
    }
    /// Write all of `buf` at `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Make written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Current file length.
    fn len(&self) -> io::Result<u64>;
    /// Is the file empty?
    #[cfg(any(test, feature = "internals"))]
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cut or extend the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// The file descriptor, if the bytes are a real file that may be memory-mapped
    /// (zero-copy reads). Default: None.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The real file, if these bytes are one (another file's append may copy from it
    /// in the kernel, `copy_file_range`). Default: None.
    fn as_file(&self) -> Option<&File> {
        None
    }
    /// Write `len` bytes read at `src_off` of `src` (another file) at `off`. Default:
    /// read and [`LogIo::write_at`] through a buffer of at most [`COPY_CHUNK`] bytes, so
    /// that a wrapper's write faults apply; [`FileIo`] copies in the kernel instead.
    fn copy_from(&self, src: &File, src_off: u64, len: u64, off: u64) -> io::Result<()> {
        copy_through_buffer(src, src_off, len, |b, at| self.write_at(b, off + at))
    }
    /// Zero-copy reads: a file that holds the log's bytes `off..off + len` at the same
    /// offsets. Default: the log file itself ([`LogIo::raw_fd`]). A log that is not one
    /// file (object storage) returns the local cache file of those bytes: if they are
    /// not cached, with `fetch` it fetches them into the cache first (waiting for the
    /// request: the caller is about to read them), without it it returns None at once
    /// (no remote request on the caller's thread) and fetches them in the background.
    fn map_fd(&self, off: u64, len: u64, fetch: bool) -> Option<MapFile> {
        let _ = (off, len, fetch);
        self.raw_fd().map(|fd| MapFile {
            fd,
            keep: None,
            cache_file: None,
        })
    }
    /// Are the log's bytes held in files of a local cache, one per object, each named
    /// by [`MapFile::cache_file`] (object storage)? Default: no.
    fn in_cache_files(&self) -> bool {
        false
    }
    /// Snapshots below this tid are gone, when the log says so other than by its file
    /// header (retention of a log in object storage). Default: None (the header's).
    fn base_tid(&self) -> Option<crate::Tid> {
        None
    }
    /// The parts of `[off, off + len)` that may hold data, ascending: holes (ranges
    /// never written, which read as zeros and take no disk blocks) may be left out.
    /// Default: the whole range.
    fn data_ranges(&self, off: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        Ok(vec![(off, len)])
    }
}

/// Largest buffer [`LogIo::copy_from`] reads through when it cannot copy in the kernel.
pub const COPY_CHUNK: u64 = 1 << 20;

/// Read `len` bytes of `src` at `src_off` in chunks of [`COPY_CHUNK`] and hand each to
/// `write(bytes, offset from the start)`.
fn copy_through_buffer(
    src: &File,
    src_off: u64,
    len: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(len.min(COPY_CHUNK)).unwrap_or(1 << 20)];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(COPY_CHUNK)).unwrap_or(buf.len());
        src.read_exact_at(&mut buf[..n], src_off + done)?;
        write(&buf[..n], done)?;
        done += n as u64;
    }
    Ok(())
}
/// Keeps a file descriptor open (see [`LogIo::map_fd`]).
pub type Keep = Arc<dyn Send + Sync>;

/// A file that holds some of the log's bytes at the log's offsets ([`LogIo::map_fd`]).
pub struct MapFile {
    /// Its descriptor.
    pub fd: std::os::fd::RawFd,
    /// What keeps `fd` open (None: the log itself does).
    pub keep: Option<Keep>,
    /// For a log held in cache files ([`LogIo::in_cache_files`]): device, inode and
    /// birth time of this one, which name it in the per-boot table of checked versions.
    pub cache_file: Option<crate::verify::Inode>,
}

impl std::fmt::Debug for MapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapFile")
            .field("fd", &self.fd)
            .field("cache_file", &self.cache_file)
            .finish_non_exhaustive()
    }
}

/// The largest single `pwrite` of [`FileIo::write_at`].
pub const WRITE_PIECE: usize = 1 << 20;

/// Write all of `buf` at `off` of `file` in `pwrite`s of at most [`WRITE_PIECE`]
/// bytes (see [`FileIo::write_at`]).
pub fn write_in_pieces(file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    let mut at = 0;
    for piece in buf.chunks(WRITE_PIECE) {
        file.write_all_at(piece, off + at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Write `bufs`, one after the other, at `off` of `file` in as few `pwritev`s as
/// `IOV_MAX` allows: the page cache sizes the folio a write creates by the write's whole
/// length, gathered or not (see [`FileIo::write_at`]).
pub fn write_gathered_at<B: AsRef<[u8]>>(file: &File, bufs: &[B], mut off: u64) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    let mut slices: Vec<io::IoSlice<'_>> = bufs
        .iter()
        .map(|b| io::IoSlice::new(b.as_ref()))
        .filter(|s| !s.is_empty())
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rest.len().min(IOV_MAX);
        match rustix::io::pwritev(file, &rest[..n], off) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                off += k as u64;
                io::IoSlice::advance_slices(&mut rest, k);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The real file.
#[derive(Debug)]
pub struct FileIo(pub File);

impl LogIo for FileIo {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    /// Through a short-lived private mapping advised `MADV_RANDOM`, not `pread`. A
    /// `pread` that meets a page-cache folio carrying the kernel's readahead mark starts
    /// an asynchronous readahead of up to `read_ahead_kb` after it, whatever
    /// `posix_fadvise(RANDOM)` says; every 2 MiB folio that a `MADV_HUGEPAGE` mapping
    /// read in (a scan, `virtmem::os`) carries that mark, and in a version-4 file what
    /// follows a payload is mostly the hole before the next one, zero-filled a page at a
    /// time. A fault in a `MADV_RANDOM` mapping never reads ahead. Measured: 1,000
    /// random 4 KiB reads of such folios take 150–210 ms by `pread`, 18 ms mapped.
    #[allow(unsafe_code)]
    fn read_pages_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let end = off.checked_add(buf.len() as u64);
        if buf.is_empty() || end.is_none_or(|e| e > self.len().unwrap_or(0)) {
            // Nothing to map, or past the end: `read_at` reports it.
            return self.read_at(buf, off);
        }
        let page = rustix::param::page_size() as u64;
        let start = off - off % page;
        let skip = usize::try_from(off - start).unwrap_or(0);
        // SAFETY: a private read-only mapping of bytes inside the file (checked above)
        // that belong to committed transactions, which the log never rewrites or
        // truncates (storage-format.md: append-only; a cut removes only a torn tail
        // after every committed byte). It is read here and unmapped on return.
        let m = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(skip + buf.len())
                .map(&self.0)
        }?;
        // Advice only: without it the read is right, just dearer.
        let _ = m.advise(memmap2::Advice::Random);
        buf.copy_from_slice(&m[skip..]);
        Ok(())
    }
    /// In pieces of at most [`WRITE_PIECE`] bytes. The page cache sizes the folio a
    /// write creates by the write's length and alignment: one 2 MiB `pwrite` at a
    /// 2 MiB-aligned offset builds a PMD-sized folio, and those writes take a median of
    /// 0.5–5 ms and 0.8–2.6 s per GiB against 0.3 s per GiB in 1 MiB pieces
    /// (docs/verification.md, "Payload writes"). A reader still gets 2 MiB folios: a
    /// scan after the cache was dropped reads them in whole (`virtmem::os`).
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        write_in_pieces(&self.0, buf, off)
    }
    fn sync_data(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.0).map_err(io::Error::from)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.0))
    }
    fn as_file(&self) -> Option<&File> {
        Some(&self.0)
    }
    /// `copy_file_range`: the kernel copies between the two files' page caches (or
    /// shares blocks where the filesystem can), nothing passes through user memory.
    /// Falls back to a buffered copy where the kernel refuses (other filesystems,
    /// older kernels).
    fn copy_from(&self, src: &File, src_off: u64, len: u64, off: u64) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let (mut si, mut di) = (src_off + done, off + done);
            let want = usize::try_from((len - done).min(1 << 30)).unwrap_or(1 << 30);
            match rustix::fs::copy_file_range(src, Some(&mut si), &self.0, Some(&mut di), want) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the source file ends before byte {}", src_off + len),
                    ))
                }
                Ok(n) => done += n as u64,
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e)
                    if done == 0
                        && [
                            rustix::io::Errno::XDEV,
                            rustix::io::Errno::NOSYS,
                            rustix::io::Errno::INVAL,
                            rustix::io::Errno::OPNOTSUPP,
                        ]
                        .contains(&e) =>
                {
                    return copy_through_buffer(src, src_off, len, |b, at| {
                        self.write_at(b, off + at)
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
    fn data_ranges(&self, off: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        use rustix::fs::{seek, SeekFrom};
        let end = off + len;
        let mut out = Vec::new();
        let mut at = off;
        while at < end {
            // SEEK_DATA/SEEK_HOLE move the file position, which positional I/O ignores.
            let data = match seek(&self.0, SeekFrom::Data(at)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break, // only a hole up to the end
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                    return Ok(vec![(off, len)])
                }
                Err(e) => return Err(e.into()),
            };
            if data >= end {
                break;
            }
            let hole = seek(&self.0, SeekFrom::Hole(data))?.min(end);
            out.push((data, hole - data));
            at = hole;
        }
        Ok(out)
    }
}

/// What [`FaultyIo`] does when its trigger fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg(any(test, feature = "internals"))]
pub enum Fault {
    /// Write only the first `n` bytes of the write, then fail with EIO (a torn write).
    TearWrite(usize),
    /// Fail the write with EIO without writing.
    WriteEio,
    /// Fail the write with ENOSPC without writing.
    WriteEnospc,
    /// Fail the sync with EIO.
    SyncEio,
}

/// Counters and the armed fault of a [`FaultyIo`], shared with the test that drives it.
#[derive(Debug, Default)]
#[cfg(any(test, feature = "internals"))]
pub struct FaultPlan {
    /// Writes seen so far.
    pub writes: AtomicU64,
    /// Syncs seen so far.
    pub syncs: AtomicU64,
    /// Fire on the write (or sync) with this 1-based number; 0 = disarmed.
    pub at: AtomicU64,
    fault: parking_lot::Mutex<Option<Fault>>,
}

#[cfg(any(test, feature = "internals"))]
impl FaultPlan {
    /// Arm: the `nth` (1-based, counted from now) write or sync — whichever the fault
    /// applies to — gets `fault`.
    pub fn arm(&self, fault: Fault, nth: u64) {
        let base = match fault {
            Fault::SyncEio => self.syncs.load(Ordering::SeqCst),
            _ => self.writes.load(Ordering::SeqCst),
        };
        *self.fault.lock() = Some(fault);
        self.at.store(base + nth, Ordering::SeqCst);
    }
    /// Disarm.
    pub fn disarm(&self) {
        *self.fault.lock() = None;
        self.at.store(0, Ordering::SeqCst);
    }
}

/// A [`LogIo`] that injects the fault armed in its [`FaultPlan`].
#[derive(Debug)]
#[cfg(any(test, feature = "internals"))]
pub struct FaultyIo<I: LogIo> {
    inner: I,
    plan: Arc<FaultPlan>,
}

#[cfg(any(test, feature = "internals"))]
impl<I: LogIo> FaultyIo<I> {
    /// Wrap `inner`; the returned plan arms faults.
    pub fn new(inner: I) -> (Self, Arc<FaultPlan>) {
        let plan = Arc::new(FaultPlan::default());
        (
            FaultyIo {
                inner,
                plan: plan.clone(),
            },
            plan,
        )
    }
}

#[cfg(any(test, feature = "internals"))]
impl<I: LogIo> FaultyIo<I> {
    /// Wrap `inner` under an existing plan (files made later, such as spill files,
    /// armed by a test that holds the plan).
    pub fn with_plan(inner: I, plan: Arc<FaultPlan>) -> Self {
        FaultyIo { inner, plan }
    }
}

#[cfg(any(test, feature = "internals"))]
impl<I: LogIo> LogIo for FaultyIo<I> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let n = self.plan.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = *self.plan.fault.lock();
        if n == self.plan.at.load(Ordering::SeqCst) {
            match fault {
                Some(Fault::TearWrite(k)) => {
                    self.inner.write_at(&buf[..k.min(buf.len())], off)?;
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::IO.raw_os_error(),
                    ));
                }
                Some(Fault::WriteEio) => {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::IO.raw_os_error(),
                    ))
                }
                Some(Fault::WriteEnospc) => {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::NOSPC.raw_os_error(),
                    ))
                }
                _ => {}
            }
        }
        self.inner.write_at(buf, off)
    }
    fn sync_data(&self) -> io::Result<()> {
        let n = self.plan.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.plan.at.load(Ordering::SeqCst)
            && *self.plan.fault.lock() == Some(Fault::SyncEio)
        {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ));
        }
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn data_ranges(&self, off: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        self.inner.data_ranges(off, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More buffers than one `pwritev` takes, empty ones among them, at an offset: the
    /// file holds their bytes in order and nothing else.
    #[test]
    fn gathered_writes_hold_every_buffer_in_order() {
        let d = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(d.path().join("g"))
            .unwrap();
        let bufs: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| (0..i % 7).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let want: Vec<u8> = bufs.concat();
        assert!(bufs.iter().filter(|b| !b.is_empty()).count() > 1024);
        write_gathered_at(&f, &bufs, 4096).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4096 + want.len() as u64);
        let mut got = vec![0u8; want.len()];
        f.read_exact_at(&mut got, 4096).unwrap();
        assert_eq!(got, want);
        let mut hole = vec![1u8; 4096];
        f.read_exact_at(&mut hole, 0).unwrap();
        assert!(hole.iter().all(|&b| b == 0));
        // Nothing to write: no error, no change.
        write_gathered_at::<&[u8]>(&f, &[], 0).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4096 + want.len() as u64);
    }
}
