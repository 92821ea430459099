//! The offline upgrade of a data directory from segment format 2 (no
//! salts) to format 3: `lse_server --upgrade`.
//!
//! Every segment file (`seg_NNN.seg`, `merged.seg`, `active.seg`) with a
//! format-2 header is rewritten record by record under
//! `NAME.upgrade.tmp`: a format-3 header with a fresh salt, then each
//! record as it was (same sequence number, id and payload) with its
//! checksum sealed for the new salt. The copy is synced, renamed over the
//! original and the directory synced, one file at a time, so a crash
//! leaves each file either in the old format or the new one, and running
//! the upgrade again finishes the job (files already in format 3 are left
//! alone). Hint files are removed: the engine rewrites them. The rewritten
//! `active.seg` ends in a durability mark, since all of it is synced.
//!
//! A format-2 `active.seg` may end in a torn write (a crash of the old
//! server): that tail is cut off and reported, as the old server would have
//! done at its next start. A bad record in a sealed or merged segment is
//! an error, and nothing is changed.

use std::path::{Path, PathBuf};

use stratum_core::{
    ACTIVE_NAME, Corruption, Defect, LOCK_NAME, MERGED_NAME, Mutation, SEGMENT_HEADER_LEN, Salt, Scan, SegmentHeader,
    SegmentId, UNSALTED_HEADER_LEN, encode_record, parse_sealed_name, scan, seal_record,
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
    for (_, _, name) in segments {
        let path = dir.join(name);
        let file = fs.open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
        let mut head = [0; SEGMENT_HEADER_LEN];
        let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
        let n = len.min(SEGMENT_HEADER_LEN as u64) as usize;
        file.read_exact_at(&mut head[..n], 0).map_err(Error::io(format!("reading {}", path.display())))?;
        let corrupt = |offset: u64, defect: Defect| Error::Corrupt { file: path.clone(), offset, defect };
        let (header, header_len) = SegmentHeader::decode_any(&head[..n]).map_err(|e| corrupt(0, e.into()))?;
        if header_len == SEGMENT_HEADER_LEN {
            report.already_current.push(path);
            continue;
        }
        let active = name == ACTIVE_NAME;
        let copied = rewrite(fs, &path, file.as_ref(), header.segment, active, &mut report)?;
        report.records += copied;
        report.rewritten.push(path);
    }
    for name in names.iter().filter(|n| n.ends_with(".hint")) {
        segment::remove_if_present(fs, &dir.join(name))?;
        report.hints_removed += 1;
    }
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(report)
}

/// Rewrites the format-2 segment at `path` with a fresh salt; returns the
/// number of records copied.
fn rewrite(
    fs: &dyn FileSystem,
    path: &Path,
    file: &dyn FileHandle,
    segment: SegmentId,
    active: bool,
    report: &mut UpgradeReport,
) -> Result<u64> {
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
    let salt = segment::fresh_salt()?;
    let out = fs.create_new(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let mut out = SegmentBuilder::new(out, tmp.clone());
    out.buffer().extend_from_slice(&SegmentHeader { segment, salt }.encode());

    let read_error = || Error::io(format!("reading {}", path.display()));
    let file_len = file.len().map_err(read_error())?;
    // `buf` holds the file's bytes from `at` on.
    let (mut buf, mut at) = (Vec::new(), UNSALTED_HEADER_LEN as u64);
    let (mut records, mut last_seq) = (0, 0);
    let stop = loop {
        match scan(&buf, &Salt::UNSALTED) {
            Scan::Record(record) => {
                let len = record.len();
                last_seq = last_seq.max(record.seq);
                let start = out.buffer().len();
                out.buffer().extend_from_slice(&buf[..len]);
                seal_record(&mut out.buffer()[start..], &salt);
                out.maybe_flush()?;
                buf.drain(..len);
                at += len as u64;
                records += 1;
            }
            Scan::Incomplete { needed } => {
                let read_to = at + buf.len() as u64;
                let remaining = file_len.saturating_sub(read_to);
                if remaining == 0 {
                    break (!buf.is_empty()).then_some(Corruption::Truncated { missing: needed - buf.len() });
                }
                let want = (needed.saturating_sub(buf.len()).max(READ_CHUNK) as u64).min(remaining) as usize;
                let start = buf.len();
                buf.resize(start + want, 0);
                file.read_exact_at(&mut buf[start..], read_to).map_err(read_error())?;
            }
            Scan::Invalid(corruption) => break Some(corruption),
        }
    };
    if let Some(reason) = stop {
        if !active {
            let _ = fs.remove(&tmp);
            return Err(Error::Corrupt { file: path.to_path_buf(), offset: at, defect: reason.into() });
        }
        tracing::warn!(file = %path.display(), valid_len = at, dropped = file_len - at, %reason,
            "cutting off a torn tail of the format-2 active segment");
        report.cut_tail = Some((at, file_len - at));
    }
    if active && records > 0 {
        // Everything before it is synced below: the engine will treat
        // damage there as damage, never as a torn write.
        let upto = out.len();
        encode_record(out.buffer(), &salt, last_seq + 1, 0, &Mutation::Durable { upto });
    }
    out.finish()?;
    fs.rename(&tmp, path).map_err(Error::io(format!("renaming {} to {}", tmp.display(), path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
    Ok(records)
}
