//! Segment and hint files on disk: creation, header and checkpoint reads,
//! replay through the core's [`SegmentReplay`], hint files. (The file
//! names are the core's: see `stratum_core::plan_recovery`.)
//!
//! A new active segment is built under `active.seg.tmp` and a merged one
//! under `merged.seg.tmp`; each is synced whole before it is renamed into
//! place, so a file under its final name is never partial.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use stratum_core::{
    ACTIVE_NAME, ACTIVE_TMP_NAME, Body, Corruption, Defect, Feed, HeaderError, HintBuilder, HintError, KeyDir,
    RECORD_HEADER_LEN, RecordSink, Replayed, SALT_LEN, SEGMENT_HEADER_LEN, Salt, SegmentHeader, SegmentId,
    SegmentReplay, TailPolicy, decode_record, hint_name, replay_hints,
};

use crate::error::{Error, Result};
use crate::fs::{FileBytes, FileHandle, FileSystem, MapRegion, Mapped};

/// An open segment file as the engine reads and appends to it: the one
/// type that memory-maps files.
///
/// It knows how many of the file's bytes are written and may be read (its
/// `readable` length), and it can only grow: appends go at the end, and the
/// one cut it makes, after a failed append, goes back to `readable`, never
/// below it. So a map made for the file stays valid for every byte a reader
/// is given, and a location past `readable` is refused as an error before
/// any byte of it is touched (a read past the end of a mapped file would be
/// `SIGBUS`). Hint files and files recovery truncates are never mapped: they
/// are read with `pread`, and recovery cuts a torn tail before it wraps the
/// file in a `SegmentFile`.
///
/// The map is remade, at least twice as large, when a read needs bytes
/// beyond it; its length may run past the end of the file.
#[derive(Debug)]
pub struct SegmentFile {
    file: Arc<dyn FileHandle>,
    /// The salt in the file's header, which every record's checksum covers.
    salt: Salt,
    /// Bytes written whole: every record a reader may be given ends here
    /// or before.
    readable: AtomicU64,
    /// The memory-map lock: a leaf of the engine's lock order.
    map: RwLock<Option<Arc<dyn MapRegion>>>,
    /// Mapping failed once (address space, `vm.max_map_count`, a file
    /// system without maps): the file is read with `pread` from then on.
    unmappable: AtomicBool,
}

/// The smallest map made: a fresh active segment is remapped only a few
/// times as it grows to its full size.
const MIN_MAP_LEN: u64 = 4 << 20;

impl SegmentFile {
    /// A segment file salted with `salt` (from its header) whose first
    /// `readable` bytes are written whole.
    pub fn new(file: Arc<dyn FileHandle>, salt: Salt, readable: u64) -> Arc<SegmentFile> {
        Arc::new(SegmentFile {
            file,
            salt,
            readable: AtomicU64::new(readable),
            map: RwLock::new(None),
            unmappable: AtomicBool::new(false),
        })
    }

    /// The file, for reads and syncs that do not go through the map.
    pub fn handle(&self) -> &dyn FileHandle {
        self.file.as_ref()
    }

    /// The salt the checksums of the file's records cover.
    pub fn salt(&self) -> &Salt {
        &self.salt
    }

    /// How many bytes are written whole.
    pub fn readable(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    /// Makes the file's data durable.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Appends `bytes` at the end (the caller serialises appends). A failed
    /// append cuts what it may have written back off, so a full disk never
    /// leaves a partial record behind, and is an error.
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let offset = self.readable();
        if let Err(e) = self.file.write_all_at(bytes, offset) {
            let _ = self.file.set_len(offset);
            return Err(e);
        }
        self.readable.store(offset + bytes.len() as u64, Ordering::Release);
        Ok(offset)
    }

    /// Whether the `len` bytes at `offset` are written, so they may be
    /// read; what is wrong otherwise.
    pub fn check(&self, offset: u64, len: usize) -> std::result::Result<(), Defect> {
        let end = offset.saturating_add(len as u64);
        let readable = self.readable();
        if end > readable { Err(Defect::OutsideSegment { end, len: readable }) } else { Ok(()) }
    }

    /// The `len` bytes at `offset`, which [`SegmentFile::check`] passed:
    /// a view of the map (made or grown if needed) or, if the file cannot
    /// be mapped, read into a buffer. May wait for the disk.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<FileBytes> {
        self.check(offset, len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if let Some(map) = self.map_covering(offset + len as u64) {
            return Ok(FileBytes::Mapped(Mapped::new(map, offset as usize, len)));
        }
        let mut bytes = vec![0; len];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(FileBytes::Read(bytes))
    }

    /// The `len` bytes at `offset` if they can be had without waiting: no
    /// lock waited for, no new map, and every page in memory now. `None`
    /// otherwise, and for bytes that are not written.
    pub fn read_now(&self, offset: u64, len: usize) -> Option<Mapped> {
        self.view_now(offset, len, true)
    }

    /// Whether the `len` bytes at `offset` can be read without waiting
    /// (as [`SegmentFile::read_now`] would): one residency check for a span
    /// that holds many records, which [`SegmentFile::read_resident`] then
    /// reads without checking each again.
    pub fn resident_now(&self, offset: u64, len: usize) -> bool {
        self.view_now(offset, len, true).is_some()
    }

    /// [`SegmentFile::read_now`] for bytes inside a span that
    /// [`SegmentFile::resident_now`] just found in memory: no residency
    /// check of its own (a page evicted since is read from disk, as any
    /// mapped read's would be).
    pub fn read_resident(&self, offset: u64, len: usize) -> Option<Mapped> {
        self.view_now(offset, len, false)
    }

    fn view_now(&self, offset: u64, len: usize, check_resident: bool) -> Option<Mapped> {
        self.check(offset, len).ok()?;
        let end = offset + len as u64;
        let map = self.map.try_read()?.as_ref().filter(|map| map.len() as u64 >= end).cloned()?;
        let start = usize::try_from(offset).ok()?;
        (!check_resident || map.resident(start, len)).then(|| Mapped::new(map, start, len))
    }

    /// A map covering the first `end` bytes of the file, made if needed.
    fn map_covering(&self, end: u64) -> Option<Arc<dyn MapRegion>> {
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
        match self.file.map(len) {
            Ok(map) if map.len() as u64 >= end => {
                *slot = Some(map.clone());
                Some(map)
            }
            // A map of fewer bytes than asked for (the simulated file
            // system maps what the file holds now): read with pread.
            Ok(_) => None,
            Err(e) => {
                if e.kind() != io::ErrorKind::Unsupported {
                    tracing::warn!(error = %e, "cannot map a segment file; reading it with pread from now on");
                }
                self.unmappable.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

/// How many bytes recovery reads at a time.
const READ_CHUNK: usize = 1 << 20;

/// A fresh salt for a new segment file, from the operating system's
/// random source.
pub fn fresh_salt() -> Result<Salt> {
    let mut bytes = [0; SALT_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::io("drawing a segment salt from the system's random source")(io::Error::other(e)))?;
    Ok(Salt::new(bytes))
}

/// Creates `dir/active.seg` for segment `id`, with a fresh salt: header
/// written and synced under a temporary name, then renamed into place and
/// the directory synced.
pub fn create_active(fs: &dyn FileSystem, dir: &Path, id: SegmentId) -> Result<Arc<SegmentFile>> {
    let tmp = dir.join(ACTIVE_TMP_NAME);
    let context = |what: &str| format!("{what} {}", tmp.display());
    let salt = fresh_salt()?;
    remove_if_present(fs, &tmp)?;
    let file = fs.create_new(&tmp).map_err(Error::io(context("creating")))?;
    file.write_all_at(&SegmentHeader { segment: id, salt }.encode(), 0)
        .map_err(Error::io(context("writing header of")))?;
    file.sync_data().map_err(Error::io(context("syncing")))?;
    let active = dir.join(ACTIVE_NAME);
    fs.rename(&tmp, &active).map_err(Error::io(format!("renaming {} to {}", tmp.display(), active.display())))?;
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(SegmentFile::new(file, salt, SEGMENT_HEADER_LEN as u64))
}

/// Reads a segment file's header: an IO error, or the header or what is
/// wrong with it.
pub fn read_header(file: &dyn FileHandle, path: &Path) -> Result<Result<SegmentHeader, HeaderError>> {
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let mut bytes = [0; SEGMENT_HEADER_LEN];
    let n = len.min(SEGMENT_HEADER_LEN as u64) as usize;
    file.read_exact_at(&mut bytes[..n], 0).map_err(Error::io(format!("reading header of {}", path.display())))?;
    Ok(SegmentHeader::decode(&bytes[..n]))
}

/// Reads a segment file's header; a bad one is an [`Error::Corrupt`].
pub fn check_header(file: &dyn FileHandle, path: &Path) -> Result<SegmentHeader> {
    read_header(file, path)?.map_err(|e| Error::Corrupt { file: path.to_path_buf(), offset: 0, defect: e.into() })
}

/// Replays the records of one segment file, salted with `salt`, into
/// `sink`.
pub fn replay(
    file: &dyn FileHandle,
    path: &Path,
    segment: SegmentId,
    salt: Salt,
    sink: &mut impl RecordSink,
    policy: TailPolicy,
) -> Result<Replayed> {
    replay_with_marks(file, path, segment, salt, sink, policy).map(|(replayed, _)| replayed)
}

/// [`replay`], and the furthest offset a durability mark in the valid
/// prefix says was synced (0 if none).
pub fn replay_with_marks(
    file: &dyn FileHandle,
    path: &Path,
    segment: SegmentId,
    salt: Salt,
    sink: &mut impl RecordSink,
    policy: TailPolicy,
) -> Result<(Replayed, u64)> {
    let read_error = || Error::io(format!("reading {}", path.display()));
    let file_len = file.len().map_err(read_error())?;
    let mut replay = SegmentReplay::new(segment, salt);
    let mut buf: Vec<u8> = Vec::new();
    let mut stop = None;
    loop {
        match replay.feed(sink, &buf) {
            Feed::NeedMore { consumed, needed } => {
                buf.drain(..consumed);
                let read_to = replay.valid_len() + buf.len() as u64;
                let remaining = file_len.saturating_sub(read_to);
                if remaining == 0 {
                    if !buf.is_empty() {
                        stop = Some(Corruption::Truncated { missing: needed - buf.len() });
                    }
                    break;
                }
                let want = (needed.saturating_sub(buf.len()).max(READ_CHUNK) as u64).min(remaining) as usize;
                let start = buf.len();
                buf.resize(start + want, 0);
                file.read_exact_at(&mut buf[start..], read_to).map_err(read_error())?;
            }
            Feed::Stopped { corruption, .. } => {
                stop = Some(corruption);
                break;
            }
        }
    }
    let durable_upto = replay.durable_upto();
    let replayed = replay.finish(file_len, stop, policy).map_err(|e| Error::Corrupt {
        file: path.to_path_buf(),
        offset: e.offset,
        defect: e.reason.into(),
    })?;
    Ok((replayed, durable_upto))
}

/// The hint file beside a segment file: `seg_001.seg` → `seg_001.hint`.
pub fn hint_path(segment_path: &Path) -> PathBuf {
    let name = segment_path.file_name().map(|n| hint_name(&n.to_string_lossy())).unwrap_or_default();
    segment_path.with_file_name(name)
}

/// Rebuilds the index entries of a sealed segment from its hint file.
/// `None` (with the reason logged) when there is no usable hint: the caller
/// scans the segment instead.
pub fn load_hints(
    fs: &dyn FileSystem,
    segment_path: &Path,
    file: &dyn FileHandle,
    segment: SegmentId,
    sink: &mut impl RecordSink,
) -> Option<u64> {
    read_hint(fs, segment_path, file, |bytes, segment_len| replay_hints(bytes, segment, segment_len, sink))
}

/// The index a merged segment's snapshot (its hint file) holds. `None`
/// (with the reason logged) when there is no usable snapshot: the caller
/// scans the segment instead.
pub fn load_snapshot(
    fs: &dyn FileSystem,
    segment_path: &Path,
    file: &dyn FileHandle,
    segment: SegmentId,
) -> Option<KeyDir> {
    read_hint(fs, segment_path, file, |bytes, segment_len| KeyDir::from_snapshot(bytes, segment, segment_len))
}

/// Reads the hint file beside `segment_path` into memory (never through a
/// map: a hint may be replaced or cut while the engine runs, and a hint is
/// parsed twice, checked whole and then applied, so its bytes must not
/// change between the passes) and hands its bytes, with the segment file's
/// length, to `parse`.
fn read_hint<T>(
    fs: &dyn FileSystem,
    segment_path: &Path,
    file: &dyn FileHandle,
    parse: impl FnOnce(&[u8], u64) -> std::result::Result<T, HintError>,
) -> Option<T> {
    let path = hint_path(segment_path);
    let hint = fs.open(&path).ok()?;
    let read = || -> io::Result<(Vec<u8>, u64)> {
        let mut bytes = vec![0; usize::try_from(hint.len()?).map_err(io::Error::other)?];
        hint.read_exact_at(&mut bytes, 0)?;
        Ok((bytes, file.len()?))
    };
    let (bytes, segment_len) = match read() {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read hint file; scanning the segment");
            return None;
        }
    };
    match parse(&bytes, segment_len) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring hint file; scanning the segment");
            None
        }
    }
}

/// Writes the hint file of a sealed segment (read back from its file),
/// under a temporary name first. A hint is an optimisation: it is not
/// fsynced, a lost or torn one is detected and ignored at the next open.
pub fn write_hint(fs: &dyn FileSystem, segment_path: &Path, file: &SegmentFile, segment: SegmentId) -> Result<()> {
    let mut builder = HintBuilder::new(segment);
    let (salt, file) = (*file.salt(), file.handle());
    let len = file.len().map_err(Error::io(format!("reading length of {}", segment_path.display())))?;
    replay(file, segment_path, segment, salt, &mut builder, TailPolicy::Reject)?;
    write_hint_file(fs, segment_path, &builder.finish(len))
}

/// Writes the hint file of a merged segment: the snapshot of the index its
/// records build (read back from its file), like [`write_hint`].
pub fn write_snapshot(fs: &dyn FileSystem, segment_path: &Path, file: &SegmentFile, segment: SegmentId) -> Result<()> {
    let mut keydir = KeyDir::new();
    let (salt, file) = (*file.salt(), file.handle());
    let len = file.len().map_err(Error::io(format!("reading length of {}", segment_path.display())))?;
    replay(file, segment_path, segment, salt, &mut keydir, TailPolicy::Reject)?;
    let snapshot = keydir.snapshot(segment, len).ok_or_else(|| Error::Corrupt {
        file: segment_path.to_path_buf(),
        offset: 0,
        defect: Defect::MergedPointsOutside,
    })?;
    write_hint_file(fs, segment_path, &snapshot)
}

fn write_hint_file(fs: &dyn FileSystem, segment_path: &Path, bytes: &[u8]) -> Result<()> {
    let path = hint_path(segment_path);
    let tmp = path.with_extension("hint.tmp");
    remove_if_present(fs, &tmp)?;
    let out = fs.create_new(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let written = out.write_all_at(bytes, 0).map_err(Error::io(format!("writing {}", tmp.display()))).and_then(|()| {
        fs.rename(&tmp, &path).map_err(Error::io(format!("renaming {} to {}", tmp.display(), path.display())))
    });
    if written.is_err() {
        // A full disk must not fill up with half-written hints either.
        let _ = fs.remove(&tmp);
    }
    written
}

/// Removes `path` if it exists.
pub fn remove_if_present(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()))(e)),
    }
}

/// Reads the checkpoint that opens a merged segment salted with `salt`:
/// the first segment id the merged segment replaces.
pub fn read_checkpoint(file: &dyn FileHandle, path: &Path, salt: &Salt) -> Result<SegmentId> {
    let corrupt =
        |defect: Defect| Error::Corrupt { file: path.to_path_buf(), offset: SEGMENT_HEADER_LEN as u64, defect };
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let want = (RECORD_HEADER_LEN + CHECKPOINT_PAYLOAD_LEN) as u64;
    if len < SEGMENT_HEADER_LEN as u64 + want {
        return Err(corrupt(Defect::NoCheckpoint));
    }
    let mut bytes = vec![0; want as usize];
    file.read_exact_at(&mut bytes, SEGMENT_HEADER_LEN as u64)
        .map_err(Error::io(format!("reading {}", path.display())))?;
    let record = decode_record(&bytes, salt).map_err(|e| corrupt(e.into()))?;
    match record.body() {
        Ok(Body::Checkpoint { covers_from, .. }) => Ok(covers_from),
        Ok(_) => Err(corrupt(Defect::NoCheckpoint)),
        Err(e) => Err(corrupt(e.into())),
    }
}

const CHECKPOINT_PAYLOAD_LEN: usize = 12;

/// Appends records to a new segment file through a buffer.
pub struct SegmentBuilder {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    /// Bytes written to the file.
    written: u64,
    buf: Vec<u8>,
}

const BUILDER_FLUSH_AT: usize = 1 << 20;

impl SegmentBuilder {
    /// Starts writing a new, empty file (the caller puts the segment
    /// header in first).
    pub fn new(file: Arc<dyn FileHandle>, path: PathBuf) -> Self {
        SegmentBuilder { file, path, written: 0, buf: Vec::with_capacity(BUILDER_FLUSH_AT * 2) }
    }

    /// The buffer to encode the next record into, at offset [`Self::len`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The file's length so far (written and buffered).
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Writes the buffer out once it is large.
    pub fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= BUILDER_FLUSH_AT { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.written)
            .map_err(Error::io(format!("writing {}", self.path.display())))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes everything and syncs the file.
    pub fn finish(mut self) -> Result<Arc<dyn FileHandle>> {
        self.flush()?;
        self.file.sync_data().map_err(Error::io(format!("syncing {}", self.path.display())))?;
        Ok(self.file)
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Faults, SimFileSystem};

    fn segment_on(fs: &SimFileSystem) -> Arc<SegmentFile> {
        fs.create_dir_all(Path::new("/d")).expect("a directory in memory");
        create_active(fs, Path::new("/d"), SegmentId::FIRST).expect("a segment in memory")
    }

    #[test]
    fn reads_of_a_simulated_segment_go_through_its_map() {
        let fs = SimFileSystem::new();
        let file = segment_on(&fs);
        let at = file.append(b"hello").unwrap();
        assert_eq!(at, SEGMENT_HEADER_LEN as u64);
        match file.read(at, 5).unwrap() {
            FileBytes::Mapped(view) => assert_eq!(&*view, b"hello"),
            FileBytes::Read(_) => panic!("the read did not go through the map"),
        }
        // Bytes appended after the map was made are read through a new one.
        let next = file.append(b"world").unwrap();
        assert_eq!(&*file.read(next, 5).unwrap(), b"world");
        assert_eq!(file.read_now(next, 5).as_deref(), Some(&b"world"[..]));
    }

    #[test]
    fn a_location_past_the_written_bytes_is_an_error_before_any_byte_is_read() {
        let fs = SimFileSystem::new();
        let file = segment_on(&fs);
        file.append(b"abc").unwrap();
        let end = file.readable();
        assert_eq!(file.check(end - 3, 3), Ok(()));
        assert_eq!(file.check(end - 3, 4), Err(Defect::OutsideSegment { end: end + 1, len: end }));
        assert_eq!(file.read(end, 1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(file.read_now(end, 1).is_none());
    }

    #[test]
    fn a_failed_append_cuts_back_to_the_written_end_and_earlier_views_stay_valid() {
        let fs = SimFileSystem::new();
        let file = segment_on(&fs);
        let at = file.append(b"kept").unwrap();
        let view = file.read(at, 4).unwrap();
        let end = file.readable();
        fs.faults(|f: &mut Faults| f.capacity = Some(end + 2));
        assert_eq!(file.append(b"too long").unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(file.readable(), end);
        assert_eq!(file.handle().len().unwrap(), end, "the partial append was cut off");
        assert_eq!(&*view, b"kept");
    }

    #[test]
    #[should_panic(expected = "simulated SIGBUS")]
    fn the_simulated_map_faults_like_sigbus_when_its_file_is_cut_under_it() {
        let fs = SimFileSystem::new();
        let file = segment_on(&fs);
        let at = file.append(b"gone").unwrap();
        let view = file.read(at, 4).unwrap();
        // What `SegmentFile` never does, and another program might.
        file.handle().set_len(at).unwrap();
        let _ = view.to_vec();
    }
}
