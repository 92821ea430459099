//! The offline upgrade of a data directory from segment format 2 (no
//! salts) or 3 (no batch frames) to format 4: `lse_server --upgrade`.
//!
//! A format-3 segment's records are format-4 records already: only its
//! header's version changes, so the file is copied under a new header (the
//! same salt and segment id) byte for byte. A format-2 segment file
//! (`seg_NNN.seg`, `merged.seg`, `active.seg`) is rewritten record by
//! record: a format-4 header with a fresh salt, then each record as it was
//! (same sequence number, id and payload) with its checksum sealed for the
//! new salt; the rewritten `active.seg` ends in a durability mark, since
//! all of it is synced. Either way the copy goes to `NAME.upgrade.tmp`, is
//! synced, renamed over the original and the directory synced, one file at
//! a time, so a crash leaves each file either in the old format or the new
//! one, and running the upgrade again finishes the job (files already in
//! format 4 are left alone). Hint files are removed: the engine rewrites
//! them (hints and index snapshots of earlier formats name no versions or
//! chain orders).
//!
//! Every file is read and judged before any is rewritten. A format-2
//! `active.seg` may end in a torn write (a crash of the old server): that
//! tail is cut off and reported, as the old server would have done at its
//! next start. A bad record in a sealed or merged segment, or one in the
//! middle of `active.seg` (a whole, newer record after it), is an error,
//! and nothing is changed.

use std::path::{Path, PathBuf};

use stratum_core::{
    ACTIVE_NAME, Corruption, Defect, FORMAT_VERSION, LOCK_NAME, MERGED_NAME, Mutation, PREVIOUS_FORMAT_VERSION,
    SEGMENT_HEADER_LEN, Salt, Scan, SegmentHeader, SegmentId, UNSALTED_HEADER_LEN, encode_record, parse_sealed_name,
    scan, seal_record,
};

use crate::error::{Error, Result};
use crate::fs::{FileHandle, FileSystem};
use crate::segment::{self, SegmentBuilder};

/// What an upgrade did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    /// Segment files rewritten in the new format.
    pub rewritten: Vec<PathBuf>,
    /// Segment files that already were in the new format.
    pub already_current: Vec<PathBuf>,
    /// Records copied.
    pub records: u64,
    /// Hint files removed.
    pub hints_removed: u64,
    /// The torn tail cut off the old `active.seg`, if it had one: the
    /// length kept and the bytes dropped.
    pub cut_tail: Option<(u64, u64)>,
}

/// Suffix of the file a segment is rewritten into.
const TMP_SUFFIX: &str = ".upgrade.tmp";

/// How many bytes are read at a time.
const READ_CHUNK: usize = 1 << 20;

/// Upgrades the data directory `dir` in place (the server must not be
/// running: the directory lock is taken).
pub fn upgrade(fs: &dyn FileSystem, dir: &Path) -> Result<UpgradeReport> {
    let lock_path = dir.join(LOCK_NAME);
    let _lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked { dir: dir.to_path_buf(), lock: lock_path.clone() },
        _ => Error::io(format!("locking {}", lock_path.display()))(e),
    })?;
    let mut names = fs.list(dir).map_err(Error::io(format!("listing {}", dir.display())))?;
    names.sort();
    let mut report = UpgradeReport::default();
    for name in &names {
        if name.ends_with(TMP_SUFFIX) {
            segment::remove_if_present(fs, &dir.join(name))?;
        }
    }
    // In log order, the active segment last: damage in an older segment
    // stops the upgrade before the newest records are touched.
    let mut segments: Vec<(u8, Option<SegmentId>, &String)> = names
        .iter()
        .filter_map(|n| match n.as_str() {
            MERGED_NAME => Some((0, None, n)),
            ACTIVE_NAME => Some((2, None, n)),
            _ => parse_sealed_name(n).map(|id| (1, Some(id), n)),
        })
        .collect();
    segments.sort();
    // First every file is read and judged, then rewritten: damage anywhere
    // stops the upgrade before any file has changed.
    let (mut planned, mut headers) = (Vec::new(), Vec::new());
    for (_, _, name) in segments {
        let path = dir.join(name);
        let file = fs.open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
        let mut head = [0; SEGMENT_HEADER_LEN];
        let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
        let n = len.min(SEGMENT_HEADER_LEN as u64) as usize;
        file.read_exact_at(&mut head[..n], 0).map_err(Error::io(format!("reading {}", path.display())))?;
        let corrupt = |offset: u64, defect: Defect| Error::Corrupt { file: path.clone(), offset, defect };
        let (header, header_len) = SegmentHeader::decode_any(&head[..n]).map_err(|e| corrupt(0, e.into()))?;
        match SegmentHeader::stored_version(&head[..n]) {
            Some(FORMAT_VERSION) => report.already_current.push(path),
            Some(PREVIOUS_FORMAT_VERSION) => headers.push((path, file, header)),
            _ => {
                debug_assert_eq!(header_len, UNSALTED_HEADER_LEN);
                let keep = judge(&path, file.as_ref(), name == ACTIVE_NAME)?;
                planned.push((path, file, header.segment, keep));
            }
        }
    }
    for (path, file, header) in headers {
        rewrite_header(fs, &path, file.as_ref(), header)?;
        report.rewritten.push(path);
    }
    for (path, file, segment, keep) in planned {
        if keep.valid_len < keep.file_len {
            tracing::warn!(file = %path.display(), valid_len = keep.valid_len, dropped = keep.file_len - keep.valid_len,
                "cutting off a torn tail of the format-2 active segment");
            report.cut_tail = Some((keep.valid_len, keep.file_len - keep.valid_len));
        }
        report.records += rewrite(fs, &path, file.as_ref(), segment, &keep)?;
        report.rewritten.push(path);
    }
    for name in names.iter().filter(|n| n.ends_with(".hint")) {
        segment::remove_if_present(fs, &dir.join(name))?;
        report.hints_removed += 1;
    }
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(report)
}

/// What of a format-2 segment file is kept: its records up to `valid_len`.
struct Keep {
    valid_len: u64,
    file_len: u64,
    last_seq: u64,
    active: bool,
}

/// Reads every record of the format-2 segment at `path` and decides what
/// is kept. A bad record in a sealed or merged segment is an error. In the
/// active segment it is a torn write, cut off, unless a whole, newer
/// record follows it (format 2's own rule): then it is damage in the
/// middle of the log, and the upgrade refuses, as the format-2 server did.
fn judge(path: &Path, file: &dyn FileHandle, active: bool) -> Result<Keep> {
    let file_len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let (valid_len, last_seq, stop) = walk(path, file, file_len, |_| Ok(()))?;
    let corrupt = |defect: Defect| Error::Corrupt { file: path.to_path_buf(), offset: valid_len, defect };
    if let Some(reason) = stop {
        if !active {
            return Err(corrupt(reason.into()));
        }
        let mut tail = vec![0; (file_len - valid_len) as usize];
        file.read_exact_at(&mut tail, valid_len).map_err(Error::io(format!("reading {}", path.display())))?;
        if let Some(at) = newer_record_in(&tail, last_seq) {
            let next_record_at = valid_len + at as u64;
            return Err(corrupt(Defect::DamageBeforeValidRecords { reason, valid_len, next_record_at }));
        }
    }
    Ok(Keep { valid_len, file_len, last_seq, active })
}

/// Where in `tail` (the bytes after a bad record) a whole format-2 record
/// newer than `last_seq` starts, if one does: format 2's test for damage in
/// the middle of the log. (Offset 0 is the bad record itself.)
fn newer_record_in(tail: &[u8], last_seq: u64) -> Option<usize> {
    (1..tail.len()).find(|&at| matches!(scan(&tail[at..], &Salt::UNSALTED), Scan::Record(r) if r.seq > last_seq))
}

/// Walks the format-2 records of `file` (`file_len` bytes) from the end of
/// its header, handing each record's bytes to `each`, and returns the end
/// of the last valid record, the largest sequence number seen, and what
/// stopped the walk before the end of the file, if anything.
fn walk(
    path: &Path,
    file: &dyn FileHandle,
    file_len: u64,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<(u64, u64, Option<Corruption>)> {
    let read_error = || Error::io(format!("reading {}", path.display()));
    // `buf` holds the file's bytes from `at` on.
    let (mut buf, mut at) = (Vec::new(), UNSALTED_HEADER_LEN as u64);
    let mut last_seq = 0;
    loop {
        match scan(&buf, &Salt::UNSALTED) {
            Scan::Record(record) => {
                let len = record.len();
                last_seq = last_seq.max(record.seq);
                each(&buf[..len])?;
                buf.drain(..len);
                at += len as u64;
            }
            Scan::Incomplete { needed } => {
                let read_to = at + buf.len() as u64;
                let remaining = file_len.saturating_sub(read_to);
                if remaining == 0 {
                    let stop = (!buf.is_empty()).then_some(Corruption::Truncated { missing: needed - buf.len() });
                    return Ok((at, last_seq, stop));
                }
                let want = (needed.saturating_sub(buf.len()).max(READ_CHUNK) as u64).min(remaining) as usize;
                let start = buf.len();
                buf.resize(start + want, 0);
                file.read_exact_at(&mut buf[start..], read_to).map_err(read_error())?;
            }
            Scan::Invalid(corruption) => return Ok((at, last_seq, Some(corruption))),
        }
    }
}

/// Copies the format-3 segment at `path` under a format-4 header with the
/// same segment id and salt: its records, sealed for that salt, stay
/// valid as they are.
fn rewrite_header(fs: &dyn FileSystem, path: &Path, file: &dyn FileHandle, header: SegmentHeader) -> Result<()> {
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let out = fs.create_new(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let mut out = SegmentBuilder::new(out, tmp.clone());
    out.buffer().extend_from_slice(&header.encode());
    let copied = (|| {
        let mut at = SEGMENT_HEADER_LEN as u64;
        while at < len {
            let n = (len - at).min(READ_CHUNK as u64) as usize;
            let start = out.buffer().len();
            out.buffer().resize(start + n, 0);
            file.read_exact_at(&mut out.buffer()[start..], at)
                .map_err(Error::io(format!("reading {}", path.display())))?;
            at += n as u64;
            out.maybe_flush()?;
        }
        out.finish()
    })();
    if let Err(e) = copied {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.rename(&tmp, path).map_err(Error::io(format!("renaming {} to {}", tmp.display(), path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(())
}

/// Rewrites the format-2 segment at `path` with a fresh salt, keeping what
/// `keep` says; returns the number of records copied.
fn rewrite(fs: &dyn FileSystem, path: &Path, file: &dyn FileHandle, segment: SegmentId, keep: &Keep) -> Result<u64> {
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
    let salt = segment::fresh_salt()?;
    let out = fs.create_new(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let mut out = SegmentBuilder::new(out, tmp.clone());
    out.buffer().extend_from_slice(&SegmentHeader { segment, salt }.encode());
    let mut records = 0;
    let copied = walk(path, file, keep.valid_len, |record| {
        let start = out.buffer().len();
        out.buffer().extend_from_slice(record);
        seal_record(&mut out.buffer()[start..], &salt);
        records += 1;
        out.maybe_flush()
    });
    if let Err(e) = copied {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    if keep.active && records > 0 {
        // Everything before it is synced below: the engine will treat
        // damage there as damage, never as a torn write.
        let upto = out.len();
        encode_record(out.buffer(), &salt, keep.last_seq + 1, 0, &Mutation::Durable { upto });
    }
    out.finish()?;
    fs.rename(&tmp, path).map_err(Error::io(format!("renaming {} to {}", tmp.display(), path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(records)
}
