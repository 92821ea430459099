//! The file-system seam: the few operations the engine needs from a disk.
//!
//! [`OsFileSystem`] is the real one (positioned writes and reads, read-only
//! memory maps, `fdatasync`, directory fsync, advisory locks).
//! `SimFileSystem` (`sim.rs`, behind the `sim` feature) is a simulated one for tests that can lose
//! unsynced bytes, tear the last write and fail on demand. The engine only
//! ever talks to these traits.

use std::any::Any;
use std::fmt::{self, Debug};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use memmap2::{Mmap, MmapOptions};

/// An open file the engine reads and appends to.
pub trait FileHandle: Send + Sync + Debug {
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// A read-only map of the file's first `len` bytes (it may reach past
    /// the end of the file; only bytes that exist may be read through it).
    /// Files that cannot be mapped say [`io::ErrorKind::Unsupported`] and
    /// are read with [`FileHandle::read_exact_at`]. Only a
    /// `SegmentFile` (`segment.rs`) maps files: it never lets one shrink
    /// below bytes a reader may have been given.
    fn map(&self, len: usize) -> io::Result<Arc<dyn MapRegion>> {
        let _ = len;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A read-only memory map of a file.
pub trait MapRegion: Send + Sync + Debug {
    /// The mapped bytes: a read through the map may reach this far.
    fn len(&self) -> usize;

    /// Whether the map is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `start`; the caller checked that the file holds
    /// them.
    fn slice(&self, start: usize, len: usize) -> &[u8];

    /// Whether every page of those bytes is in memory now, so reading them
    /// does not wait for the disk.
    fn resident(&self, start: usize, len: usize) -> bool;
}

/// Bytes of a file: a view of its memory map, or a buffer they were read
/// into.
#[derive(Debug)]
pub enum FileBytes {
    /// A view of the file's memory map.
    Mapped(Mapped),
    /// A copy read with `pread`, from a file that is not mapped.
    Read(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(mapped) => mapped,
            FileBytes::Read(bytes) => bytes,
        }
    }
}

/// Bytes of a file seen through its memory map.
pub struct Mapped {
    map: Arc<dyn MapRegion>,
    start: usize,
    len: usize,
}

impl Mapped {
    /// The `len` bytes at `start` of `map`, which the file holds.
    pub(crate) fn new(map: Arc<dyn MapRegion>, start: usize, len: usize) -> Mapped {
        Mapped { map, start, len }
    }
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.slice(self.start, self.len)
    }
}

impl Debug for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapped").field("start", &self.start).field("len", &self.len).finish()
    }
}

/// Something held while a data directory is in use; dropping it releases
/// the directory.
pub type DirLock = Box<dyn Any + Send + Sync>;

/// A directory tree of files.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `dir` and its parents if they do not exist.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// The names of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;

    /// Creates a new, empty file; fails if `path` exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;

    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive lock on `path` (created if missing), failing with
    /// [`io::ErrorKind::WouldBlock`] if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<DirLock>;
}

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFileSystem;

/// A file of the [`OsFileSystem`]: `pwrite`, `pread`, and read-only shared
/// memory maps.
pub struct OsFile {
    file: File,
}

impl OsFile {
    fn new(file: File) -> Self {
        OsFile { file }
    }
}

/// A memory map of an [`OsFile`].
struct OsMap(Mmap);

impl Debug for OsMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsMap").field("len", &self.0.len()).finish()
    }
}

impl MapRegion for OsMap {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn slice(&self, start: usize, len: usize) -> &[u8] {
        &self.0[start..start + len]
    }

    fn resident(&self, start: usize, len: usize) -> bool {
        resident(&self.0, start, len)
    }
}

impl Debug for OsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsFile").field("fd", &self.file.as_raw_fd()).finish()
    }
}

impl FileHandle for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn map(&self, len: usize) -> io::Result<Arc<dyn MapRegion>> {
        // SAFETY: the map is read-only and shared. Only a `SegmentFile`
        // maps files, and it reads only bytes that were written and never
        // cuts the file below them; no other process writes segment files
        // while the data directory's lock is held. So the bytes behind a
        // view do not change or vanish while it is alive.
        let map = unsafe { MmapOptions::new().len(len).map(&self.file)? };
        Ok(Arc::new(OsMap(map)))
    }
}

/// Whether every page of `map[start..start + len]` is in memory (`mincore`).
fn resident(map: &Mmap, start: usize, len: usize) -> bool {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    let page = *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096));
    let first = start / page * page;
    let span = start + len - first;
    let count = span.div_ceil(page);
    let mut on_stack = [0u8; 64];
    let mut on_heap = Vec::new();
    let pages = if count <= on_stack.len() {
        &mut on_stack[..count]
    } else {
        on_heap.resize(count, 0);
        &mut on_heap[..]
    };
    // SAFETY: the range starts on a page boundary inside the map and ends
    // inside it; `pages` has one byte per page of the range.
    let status = unsafe { libc::mincore(map.as_ptr().add(first) as *mut libc::c_void, span, pages.as_mut_ptr()) };
    status == 0 && pages.iter().all(|&p| p & 1 == 1)
}

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(OsFile::new(OpenOptions::new().read(true).write(true).open(path)?)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(OsFile::new(OpenOptions::new().read(true).write(true).create_new(true).open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(io::ErrorKind::WouldBlock, "locked")),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
