//! The file-system seam: the few operations the engine needs from a disk.
//!
//! [`OsFileSystem`] is the real one (positioned writes, reads through a
//! read-only memory map, `fdatasync`, directory fsync, advisory locks).
//! [`crate::SimFileSystem`] is a simulated one for tests that can lose
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::{Mmap, MmapOptions};
use parking_lot::RwLock;

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

    /// The `len` bytes at `offset` straight from the file's memory map,
    /// without a copy, if the file has one that covers them. With
    /// `resident_only`, the call itself never waits (no lock, no new map)
    /// and answers `None` unless every page of the bytes is in memory now,
    /// so that reading them does not wait for the disk either.
    ///
    /// The bytes must have been written (a view never reaches past the end
    /// of the file). Files without a map return `None` and are read with
    /// [`FileHandle::read_exact_at`].
    fn mapped(&self, offset: u64, len: usize, resident_only: bool) -> Option<Mapped> {
        let _ = (offset, len, resident_only);
        None
    }

    /// The `len` bytes at `offset`: a view of the file's memory map if
    /// `map` is asked for and the file has one, otherwise read into a
    /// buffer. May wait for the disk.
    fn read_bytes(&self, offset: u64, len: usize, map: bool) -> io::Result<FileBytes> {
        if map && let Some(mapped) = self.mapped(offset, len, false) {
            return Ok(FileBytes::Mapped(mapped));
        }
        let mut bytes = vec![0; len];
        self.read_exact_at(&mut bytes, offset)?;
        Ok(FileBytes::Read(bytes))
    }
}

/// Bytes of a file: a view of its memory map, or a buffer they were read
/// into.
pub enum FileBytes {
    Mapped(Mapped),
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
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
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

/// A file of the [`OsFileSystem`]: written with `pwrite`, read through a
/// shared read-only memory map (`pread` where mapping fails).
///
/// Segment files only grow while open (the one exception, cutting a failed
/// append back off, cuts bytes no reader has been given), so a map made
/// for the file's first `n` bytes stays valid; the map is remade, at least
/// twice as large, when a read needs bytes beyond it. Its length may run
/// past the end of the file: only the bytes of whole, written records are
/// ever read from it.
pub struct OsFile {
    file: File,
    map: RwLock<Option<Arc<Mmap>>>,
    /// Mapping failed once (address space, `vm.max_map_count`): the file
    /// is read with `pread` from then on.
    unmappable: AtomicBool,
}

/// The smallest map made: a fresh active segment is remapped only a few
/// times as it grows to its full size.
const MIN_MAP_LEN: u64 = 4 << 20;

impl OsFile {
    fn new(file: File) -> Self {
        OsFile { file, map: RwLock::new(None), unmappable: AtomicBool::new(false) }
    }

    /// The current map, if it covers the first `end` bytes of the file and
    /// can be had without waiting for the lock.
    fn current_map(&self, end: u64) -> Option<Arc<Mmap>> {
        self.map.try_read()?.as_ref().filter(|map| map.len() as u64 >= end).cloned()
    }

    /// A map covering the first `end` bytes of the file, made if needed.
    fn map_covering(&self, end: u64) -> Option<Arc<Mmap>> {
        if let Some(map) = &*self.map.read()
            && map.len() as u64 >= end
        {
            return Some(map.clone());
        }
        if self.unmappable.load(Ordering::Relaxed) {
            return None;
        }
        let mut slot = self.map.write();
        if let Some(map) = &*slot
            && map.len() as u64 >= end
        {
            return Some(map.clone());
        }
        let current = slot.as_ref().map_or(0, |map| map.len() as u64);
        let len = usize::try_from(end.max(current * 2).max(MIN_MAP_LEN).next_power_of_two()).ok()?;
        // SAFETY: the map is read-only and shared. Segment files are never
        // cut below bytes a reader is given (see the type's doc), and no
        // other process writes them while the data directory's lock is
        // held, so the bytes behind a view do not change or vanish.
        let map = match unsafe { MmapOptions::new().len(len).map(&self.file) } {
            Ok(map) => Arc::new(map),
            Err(e) => {
                tracing::warn!(error = %e, "cannot map a segment file; reading it with pread from now on");
                self.unmappable.store(true, Ordering::Relaxed);
                return None;
            }
        };
        *slot = Some(map.clone());
        Some(map)
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

    fn mapped(&self, offset: u64, len: usize, resident_only: bool) -> Option<Mapped> {
        let end = offset.checked_add(len as u64)?;
        let start = usize::try_from(offset).ok()?;
        let map = if resident_only {
            let map = self.current_map(end)?;
            if !resident(&map, start, len) {
                return None;
            }
            map
        } else {
            self.map_covering(end)?
        };
        Some(Mapped { map, start, len })
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
