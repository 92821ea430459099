//! Segment files: names, creation, and replay from disk.
//!
//! The data directory holds sealed segments `seg_NNN.seg` (NNN is the
//! segment id, at least three digits), at most one `merged.seg` written by
//! compaction, and one `active.seg`, whose header carries the id it will
//! have once sealed. A new active segment is built under `active.seg.tmp`
//! and a merged one under `merged.seg.tmp`; each is synced whole before it
//! is renamed into place, so a file under its final name is never partial.
//!
//! `merged.seg` carries the id of the newest segment it replaced and opens
//! with a checkpoint record naming the oldest; any `seg_NNN.seg` in that
//! range is a leftover of a compaction that crashed after its commit, and
//! recovery deletes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_core::{
    Body, Corruption, Feed, HintBuilder, HintError, KeyDir, RECORD_HEADER_LEN, RecordSink, Replayed,
    SEGMENT_HEADER_LEN, SegmentHeader, SegmentId, SegmentReplay, TailPolicy, decode_record, replay_hints,
};

use crate::error::{Error, Result};
use crate::fs::{FileBytes, FileHandle, FileSystem};

/// The name of the segment that takes appends.
pub const ACTIVE_NAME: &str = "active.seg";

/// The name a new active segment is prepared under.
pub const ACTIVE_TMP_NAME: &str = "active.seg.tmp";

/// The name of the segment a compaction writes.
pub const MERGED_NAME: &str = "merged.seg";

/// The name a merged segment is written under before it is committed.
pub const MERGED_TMP_NAME: &str = "merged.seg.tmp";

/// The name of the lock file that keeps a second engine out.
pub const LOCK_NAME: &str = "LOCK";

/// How many bytes recovery reads at a time.
const READ_CHUNK: usize = 1 << 20;

/// The file name of sealed segment `id`.
pub fn sealed_name(id: SegmentId) -> String {
    format!("seg_{:03}.seg", id.get())
}

/// The segment id in a sealed segment's file name, if it is one.
pub fn parse_sealed_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_prefix("seg_")?.strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    SegmentId::new(digits.parse().ok()?)
}

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

/// Reads and checks a segment file's header.
pub fn read_header(file: &dyn FileHandle, path: &Path) -> Result<SegmentHeader> {
    let mut bytes = [0; SEGMENT_HEADER_LEN];
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    if len >= SEGMENT_HEADER_LEN as u64 {
        file.read_exact_at(&mut bytes, 0).map_err(Error::io(format!("reading header of {}", path.display())))?;
    }
    SegmentHeader::decode(&bytes[..len.min(SEGMENT_HEADER_LEN as u64) as usize]).map_err(|e| Error::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason: e.to_string(),
    })
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
        reason: e.reason.to_string(),
    })
}

/// The hint file beside a segment file: `seg_001.seg` → `seg_001.hint`.
pub fn hint_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("hint")
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
        reason: "a merged segment's records point outside it".into(),
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
        |reason: String| Error::Corrupt { file: path.to_path_buf(), offset: SEGMENT_HEADER_LEN as u64, reason };
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let want = (RECORD_HEADER_LEN + CHECKPOINT_PAYLOAD_LEN) as u64;
    if len < SEGMENT_HEADER_LEN as u64 + want {
        return Err(corrupt("merged segment is too short to hold its checkpoint".into()));
    }
    let mut bytes = vec![0; want as usize];
    file.read_exact_at(&mut bytes, SEGMENT_HEADER_LEN as u64)
        .map_err(Error::io(format!("reading {}", path.display())))?;
    let record = decode_record(&bytes).map_err(|e| corrupt(e.to_string()))?;
    match record.body() {
        Ok(Body::Checkpoint { covers_from, .. }) => Ok(covers_from),
        Ok(other) => Err(corrupt(format!("merged segment starts with a {:?} record, not a checkpoint", other.kind()))),
        Err(e) => Err(corrupt(e.to_string())),
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
    /// Starts a segment file with its header.
    pub fn new(file: Arc<dyn FileHandle>, path: PathBuf, id: SegmentId) -> Self {
        let mut buf = Vec::with_capacity(BUILDER_FLUSH_AT * 2);
        buf.extend_from_slice(&SegmentHeader { segment: id }.encode());
        SegmentBuilder { file, path, written: 0, buf }
    }

    /// The offset the next record gets.
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
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
