//! Segment files: names, creation, and replay from disk.
//!
//! The data directory holds sealed segments `seg_NNN.seg` (NNN is the
//! segment id, at least three digits) and one `active.seg`, whose header
//! carries the id it will have once sealed. A new active segment is built
//! under `active.seg.tmp` and renamed into place, so `active.seg` always has
//! a whole, synced header.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_core::{
    Corruption, Feed, KeyDir, Replayed, SEGMENT_HEADER_LEN, SegmentHeader, SegmentId, SegmentReplay, TailPolicy,
};

use crate::error::{Error, Result};
use crate::fs::{FileHandle, FileSystem};

/// The name of the segment that takes appends.
pub const ACTIVE_NAME: &str = "active.seg";

/// The name a new active segment is prepared under.
pub const ACTIVE_TMP_NAME: &str = "active.seg.tmp";

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
    match fs.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(context("removing stale"))(e)),
    }
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

/// Replays the records of one segment file into `keydir`.
pub fn replay(
    file: &dyn FileHandle,
    path: &Path,
    segment: SegmentId,
    keydir: &mut KeyDir,
    policy: TailPolicy,
) -> Result<Replayed> {
    let read_error = || Error::io(format!("reading {}", path.display()));
    let file_len = file.len().map_err(read_error())?;
    let mut replay = SegmentReplay::new(segment);
    let mut buf: Vec<u8> = Vec::new();
    let mut stop = None;
    loop {
        match replay.feed(keydir, &buf) {
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

/// The path of segment `id` in `dir`, given the active segment's id.
pub fn segment_path(dir: &Path, id: SegmentId, active: SegmentId) -> PathBuf {
    if id == active { dir.join(ACTIVE_NAME) } else { dir.join(sealed_name(id)) }
}
