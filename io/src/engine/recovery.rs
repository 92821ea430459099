//! Recovery: rebuilding the index from the data directory at open.
//!
//! Segments replay in id order: `merged.seg` first (after deleting any
//! segment it replaced that a crash left behind), then `seg_NNN.seg`, each
//! from its hint file when that is valid, then `active.seg`, whose torn tail
//! is cut off. Everything here is idempotent, so a crash during recovery
//! recovers again to the same state.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_core::{KeyDir, Replayed, SEGMENT_HEADER_LEN, SegmentId, TailPolicy};

use crate::error::{Error, Result};
use crate::fs::{FileHandle, FileSystem};
use crate::segment::{self, ACTIVE_NAME, ACTIVE_TMP_NAME, MERGED_NAME, MERGED_TMP_NAME};

/// What recovery found.
pub(super) struct Recovered {
    pub keydir: KeyDir,
    pub files: HashMap<SegmentId, Arc<dyn FileHandle>>,
    /// The active segment: id, file and length.
    pub active: (SegmentId, Arc<dyn FileHandle>, u64),
    pub merged: Option<SegmentId>,
    pub hinted: HashSet<SegmentId>,
}

/// Rebuilds the index from the segments in `dir`.
pub(super) fn recover(fs: &dyn FileSystem, dir: &Path) -> Result<Recovered> {
    let dir: PathBuf = dir.to_path_buf();
    let names = fs.list(&dir).map_err(Error::io(format!("listing {}", dir.display())))?;
    if names.iter().any(|n| n == MERGED_TMP_NAME) {
        tracing::info!("discarding the output of an unfinished compaction");
        segment::remove_if_present(fs, &dir.join(MERGED_TMP_NAME))?;
    }
    for name in &names {
        let stray_tmp = name.ends_with(".hint.tmp");
        let orphan = name.ends_with(".hint") && !names.contains(&name.replace(".hint", ".seg"));
        if stray_tmp || orphan {
            segment::remove_if_present(fs, &dir.join(name))?;
        }
    }
    let mut sealed: Vec<SegmentId> = names.iter().filter_map(|n| segment::parse_sealed_name(n)).collect();
    sealed.sort();

    let mut keydir = KeyDir::new();
    let mut hinted = HashSet::new();
    let mut files: HashMap<SegmentId, Arc<dyn FileHandle>> = HashMap::new();
    let mut merged = None;
    if names.iter().any(|n| n == MERGED_NAME) {
        let path = dir.join(MERGED_NAME);
        let file = fs.open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
        let id = segment::read_header(file.as_ref(), &path)?.segment;
        let covers_from = segment::read_checkpoint(file.as_ref(), &path)?;
        if let Some(&older) = sealed.iter().find(|&&s| s < covers_from) {
            return Err(Error::Corrupt {
                file: dir.join(segment::sealed_name(older)),
                offset: 0,
                reason: format!("segment is older than the segments {MERGED_NAME} replaced ({covers_from}..={id})"),
            });
        }
        let (replaced, newer): (Vec<SegmentId>, Vec<SegmentId>) = sealed.iter().partition(|&&s| s <= id);
        for old in &replaced {
            tracing::info!(segment = old.get(), "removing a segment that {MERGED_NAME} replaced");
            segment::remove_if_present(fs, &dir.join(segment::sealed_name(*old)))?;
        }
        if !replaced.is_empty() {
            fs.sync_dir(&dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
        }
        sealed = newer;
        // The merged segment replays first, into the empty index: its hint
        // is a snapshot of the index it builds.
        match segment::load_snapshot(fs, &path, file.as_ref(), id) {
            Some(snapshot) => {
                keydir = snapshot;
                hinted.insert(id);
            }
            None => segment::replay(file.as_ref(), &path, id, &mut keydir, TailPolicy::Reject).map(drop)?,
        }
        files.insert(id, file);
        merged = Some(id);
    }
    for &id in &sealed {
        let path = dir.join(segment::sealed_name(id));
        let file = fs.open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
        check_header_id(file.as_ref(), &path, id)?;
        if segment::load_hints(fs, &path, file.as_ref(), id, &mut keydir).is_some() {
            hinted.insert(id);
        } else {
            segment::replay(file.as_ref(), &path, id, &mut keydir, TailPolicy::Reject)?;
        }
        files.insert(id, file);
    }

    let newest_sealed = sealed.last().copied().or(merged);
    let first_new = match newest_sealed {
        Some(id) => id.next().ok_or_else(|| Error::Options("segment ids exhausted".into()))?,
        None => SegmentId::FIRST,
    };
    let active_path = dir.join(ACTIVE_NAME);
    let (segment, file, len) = if names.iter().any(|n| n == ACTIVE_NAME) {
        let file = fs.open(&active_path).map_err(Error::io(format!("opening {}", active_path.display())))?;
        let header = segment::read_header(file.as_ref(), &active_path)?;
        if newest_sealed.is_some_and(|s| header.segment <= s) {
            return Err(Error::Corrupt {
                file: active_path,
                offset: 0,
                reason: format!(
                    "active segment has id {} but sealed segment {} exists",
                    header.segment,
                    newest_sealed.map_or(0, |s| s.get())
                ),
            });
        }
        let len = match segment::replay(file.as_ref(), &active_path, header.segment, &mut keydir, TailPolicy::Truncate)?
        {
            Replayed::Clean { len } => len,
            Replayed::TornTail { valid_len, dropped, reason } => {
                refuse_damage_before_valid_records(file.as_ref(), &active_path, valid_len, &keydir, reason)?;
                tracing::warn!(
                    file = %active_path.display(), valid_len, dropped, %reason,
                    "cutting off a torn tail of the active segment"
                );
                let cut = Error::io(format!("truncating torn tail of {}", active_path.display()));
                file.set_len(valid_len).map_err(cut)?;
                file.sync_data().map_err(Error::io(format!("syncing {}", active_path.display())))?;
                valid_len
            }
        };
        (header.segment, file, len)
    } else {
        if names.iter().any(|n| n == ACTIVE_TMP_NAME) {
            tracing::info!("discarding an unfinished new active segment");
        }
        let file = segment::create_active(fs, &dir, first_new)?;
        (first_new, file, SEGMENT_HEADER_LEN as u64)
    };
    files.insert(segment, file.clone());
    keydir.resume_after_reservations();
    Ok(Recovered { keydir, files, active: (segment, file, len), merged, hinted })
}

/// Refuses to cut off a bad tail of the active segment when whole, newer
/// records follow the damage: that is not a torn write but damage in the
/// middle of the log, and cutting would lose acknowledged writes.
fn refuse_damage_before_valid_records(
    file: &dyn FileHandle,
    path: &Path,
    valid_len: u64,
    keydir: &KeyDir,
    reason: stratum_core::Corruption,
) -> Result<()> {
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let mut tail = vec![0; (len - valid_len) as usize];
    file.read_exact_at(&mut tail, valid_len).map_err(Error::io(format!("reading {}", path.display())))?;
    match stratum_core::find_record_after_damage(&tail, keydir.next_seq()) {
        None => Ok(()),
        Some(at) => Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: valid_len,
            reason: format!(
                "{reason}, and a whole record follows at offset {}: this is damage, not a torn write, so \
                 recovery will not cut off what follows (to accept losing it, keep a copy of the file and \
                 truncate it to {valid_len} bytes)",
                valid_len + at as u64
            ),
        }),
    }
}

fn check_header_id(file: &dyn FileHandle, path: &Path, expected: SegmentId) -> Result<()> {
    let header = segment::read_header(file, path)?;
    if header.segment != expected {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!("header says segment {} but the file name says {}", header.segment, expected),
        });
    }
    Ok(())
}
