//! Segment and hint files on disk: creation, header and checkpoint reads,
//! replay through the core's [`SegmentReplay`], hint files. (The file
//! names are the core's: see `stratum_core::plan_recovery`.)
//!
//! A new active segment is built under `active.seg.tmp` and a merged one
//! under `merged.seg.tmp`; each is synced whole before it is renamed into
//! place, so a file under its final name is never partial.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_core::{
    ACTIVE_NAME, ACTIVE_TMP_NAME, Body, Corruption, Defect, Feed, HeaderError, HintBuilder, HintError, KeyDir,
    RECORD_HEADER_LEN, RecordSink, Replayed, SEGMENT_HEADER_LEN, SegmentHeader, SegmentId, SegmentReplay, TailPolicy,
    decode_record, hint_name, replay_hints,
};

use crate::error::{Error, Result};
use crate::fs::{FileBytes, FileHandle, FileSystem};

/// How many bytes recovery reads at a time.
const READ_CHUNK: usize = 1 << 20;

/// Creates `dir/active.seg` for segment `id`: header written and synced
/// under a temporary name, then renamed into place and the directory synced.
pub fn create_active(fs: &dyn FileSystem, dir: &Path, id: SegmentId) -> Result<Arc<dyn FileHandle>> {
    let tmp = dir.join(ACTIVE_TMP_NAME);
    let context = |what: &str| format!("{what} {}", tmp.display());
    remove_if_present(fs, &tmp)?;
    let file = fs.create_new(&tmp).map_err(Error::io(context("creating")))?;
    file.write_all_at(&SegmentHeader { segment: id }.encode(), 0).map_err(Error::io(context("writing header of")))?;
    file.sync_data().map_err(Error::io(context("syncing")))?;
    let active = dir.join(ACTIVE_NAME);
    fs.rename(&tmp, &active).map_err(Error::io(format!("renaming {} to {}", tmp.display(), active.display())))?;
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(file)
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

/// Replays the records of one segment file into `sink`.
pub fn replay(
    file: &dyn FileHandle,
    path: &Path,
    segment: SegmentId,
    sink: &mut impl RecordSink,
    policy: TailPolicy,
) -> Result<Replayed> {
    let read_error = || Error::io(format!("reading {}", path.display()));
    let file_len = file.len().map_err(read_error())?;
    let mut replay = SegmentReplay::new(segment);
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
    replay.finish(file_len, stop, policy).map_err(|e| Error::Corrupt {
        file: path.to_path_buf(),
        offset: e.offset,
        defect: e.reason.into(),
    })
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
    // Read into memory: a hint is parsed twice (checked whole, then
    // applied), so its bytes must not change between the passes.
    read_hint(fs, segment_path, file, false, |bytes, segment_len| replay_hints(bytes, segment, segment_len, sink))
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
    // Parsed once, into a fresh index, so it can be read through a map
    // (much faster than a read into a fresh buffer). Bytes changed under
    // the map by another program could at worst make the index point at
    // the wrong records, which every read checks (checksum and id).
    read_hint(fs, segment_path, file, true, |bytes, segment_len| KeyDir::from_snapshot(bytes, segment, segment_len))
}

/// Reads the hint file beside `segment_path` (through its memory map if
/// `map`) and hands its bytes, with the segment file's length, to `parse`.
fn read_hint<T>(
    fs: &dyn FileSystem,
    segment_path: &Path,
    file: &dyn FileHandle,
    map: bool,
    parse: impl FnOnce(&[u8], u64) -> std::result::Result<T, HintError>,
) -> Option<T> {
    let path = hint_path(segment_path);
    let hint = fs.open(&path).ok()?;
    let read = || -> std::io::Result<(FileBytes, u64)> {
        let bytes = hint.read_bytes(0, hint.len()? as usize, map)?;
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
pub fn write_hint(fs: &dyn FileSystem, segment_path: &Path, file: &dyn FileHandle, segment: SegmentId) -> Result<()> {
    let mut builder = HintBuilder::new(segment);
    let len = file.len().map_err(Error::io(format!("reading length of {}", segment_path.display())))?;
    replay(file, segment_path, segment, &mut builder, TailPolicy::Reject)?;
    write_hint_file(fs, segment_path, &builder.finish(len))
}

/// Writes the hint file of a merged segment: the snapshot of the index its
/// records build (read back from its file), like [`write_hint`].
pub fn write_snapshot(
    fs: &dyn FileSystem,
    segment_path: &Path,
    file: &dyn FileHandle,
    segment: SegmentId,
) -> Result<()> {
    let mut keydir = KeyDir::new();
    let len = file.len().map_err(Error::io(format!("reading length of {}", segment_path.display())))?;
    replay(file, segment_path, segment, &mut keydir, TailPolicy::Reject)?;
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
    out.write_all_at(bytes, 0).map_err(Error::io(format!("writing {}", tmp.display())))?;
    fs.rename(&tmp, &path).map_err(Error::io(format!("renaming {} to {}", tmp.display(), path.display())))
}

/// Removes `path` if it exists.
pub fn remove_if_present(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()))(e)),
    }
}

/// Reads the checkpoint that opens a merged segment: the first segment id
/// the merged segment replaces.
pub fn read_checkpoint(file: &dyn FileHandle, path: &Path) -> Result<SegmentId> {
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
    let record = decode_record(&bytes).map_err(|e| corrupt(e.into()))?;
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
