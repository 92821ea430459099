//! Recovery as the io layer carries it out: list the data directory, read
//! the segment headers, and execute the core's [`plan_recovery`] step by
//! step; when `active.seg` ends in bad bytes, let [`judge_bad_tail`] decide
//! between cutting a torn write and refusing damage.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use stratum_core::{
    ACTIVE_NAME, ACTIVE_TMP_NAME, KeyDir, Listing, MERGED_NAME, MergedHeader, PlanError, RecoveryStep, ReplayKind,
    Replayed, SEGMENT_HEADER_LEN, Salt, SegmentId, TailDecision, judge_bad_tail, parse_sealed_name, plan_recovery,
};

use crate::error::{Error, Result};
use crate::fs::{FileHandle, FileSystem};
use crate::segment::{self, SegmentFile};

/// What recovery found.
pub(super) struct Recovered {
    pub keydir: KeyDir,
    pub files: HashMap<SegmentId, Arc<SegmentFile>>,
    /// The active segment: id, file and length.
    pub active: (SegmentId, Arc<SegmentFile>, u64),
    /// The merged segment and the first segment it replaced.
    pub merged: Option<(SegmentId, SegmentId)>,
    pub hinted: HashSet<SegmentId>,
}

/// Rebuilds the index from the segments in `dir`.
pub(super) fn recover(fs: &dyn FileSystem, dir: &Path) -> Result<Recovered> {
    let names = fs.list(dir).map_err(Error::io(format!("listing {}", dir.display())))?;
    let mut opened: HashMap<String, Arc<dyn FileHandle>> = HashMap::new();
    let mut open = |name: &str| -> Result<Arc<dyn FileHandle>> {
        if let Some(file) = opened.get(name) {
            return Ok(file.clone());
        }
        let path = dir.join(name);
        let file = fs.open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
        opened.insert(name.to_owned(), file.clone());
        Ok(file)
    };

    let mut listing = Listing { names: names.clone(), ..Listing::default() };
    for name in &names {
        if let Some(id) = parse_sealed_name(name) {
            let file = open(name)?;
            listing.sealed.insert(id, segment::read_header(file.as_ref(), &dir.join(name))?.map(|h| h.segment));
        }
    }
    if names.iter().any(|n| n == MERGED_NAME) {
        let (file, path) = (open(MERGED_NAME)?, dir.join(MERGED_NAME));
        let header = segment::check_header(file.as_ref(), &path)?;
        let covers_from = segment::read_checkpoint(file.as_ref(), &path, &header.salt)?;
        listing.merged = Some(MergedHeader { segment: header.segment, covers_from });
    }
    if names.iter().any(|n| n == ACTIVE_NAME) {
        let file = open(ACTIVE_NAME)?;
        listing.active = Some(segment::check_header(file.as_ref(), &dir.join(ACTIVE_NAME))?.segment);
    }

    let plan = plan_recovery(&listing).map_err(|e| match e {
        PlanError::Damaged { file, defect } => Error::Corrupt { file: dir.join(file), offset: 0, defect },
        PlanError::SegmentIdsExhausted => Error::SegmentIdsExhausted,
    })?;

    let mut keydir = KeyDir::new();
    let mut hinted = HashSet::new();
    let mut files: HashMap<SegmentId, Arc<SegmentFile>> = HashMap::new();
    let mut merged = None;
    let mut active = None;
    for step in plan.steps {
        match step {
            RecoveryStep::Delete(name) => {
                tracing::info!(file = %name, "removing a leftover of an interrupted compaction or hint write");
                segment::remove_if_present(fs, &dir.join(&name))?;
            }
            RecoveryStep::SyncDir => {
                fs.sync_dir(dir).map_err(Error::io(format!("syncing directory {}", dir.display())))?;
            }
            RecoveryStep::Replay { name, segment: id, kind } => {
                let (file, path) = (open(&name)?, dir.join(&name));
                // The plan replays only segments whose headers it checked.
                let salt = segment::check_header(file.as_ref(), &path)?.salt;
                let whole_file = || file.len().map_err(Error::io(format!("reading length of {}", path.display())));
                let scan = |keydir: &mut KeyDir| -> Result<u64> {
                    match segment::replay(file.as_ref(), &path, id, salt, keydir, kind.tail_policy())? {
                        Replayed::Clean { len } => Ok(len),
                        Replayed::TornTail { valid_len, .. } => Ok(valid_len),
                    }
                };
                let readable = match kind {
                    // The merged segment replays first, into the empty index:
                    // its hint is a snapshot of the index it builds.
                    ReplayKind::Merged => match segment::load_snapshot(fs, &path, file.as_ref(), id) {
                        Some(snapshot) => {
                            keydir = snapshot;
                            hinted.insert(id);
                            whole_file()?
                        }
                        None => scan(&mut keydir)?,
                    },
                    ReplayKind::Sealed => {
                        if segment::load_hints(fs, &path, file.as_ref(), id, &mut keydir).is_some() {
                            hinted.insert(id);
                            whole_file()?
                        } else {
                            scan(&mut keydir)?
                        }
                    }
                    ReplayKind::Active => replay_active(file.as_ref(), &path, id, salt, &mut keydir)?,
                };
                // Mapped only now, after any torn tail is cut off.
                let file = SegmentFile::new(file, salt, readable);
                match kind {
                    ReplayKind::Merged => merged = listing.merged.map(|m| (id, m.covers_from)),
                    ReplayKind::Active => active = Some((id, file.clone(), readable)),
                    ReplayKind::Sealed => {}
                }
                files.insert(id, file);
            }
            RecoveryStep::CreateActive(id) => {
                if names.iter().any(|n| n == ACTIVE_TMP_NAME) {
                    tracing::info!("discarding an unfinished new active segment");
                }
                let file = segment::create_active(fs, dir, id)?;
                files.insert(id, file.clone());
                active = Some((id, file, SEGMENT_HEADER_LEN as u64));
            }
        }
    }
    let active = active.expect("a recovery plan always ends with the active segment");
    keydir.resume_after_reservations();
    Ok(Recovered { keydir, files, active, merged, hinted })
}

/// Replays `active.seg`, cuts a torn tail off it and makes sure what it
/// keeps is on the disk; returns its length.
fn replay_active(file: &dyn FileHandle, path: &Path, id: SegmentId, salt: Salt, keydir: &mut KeyDir) -> Result<u64> {
    let policy = ReplayKind::Active.tail_policy();
    let (replayed, durable_upto) = segment::replay_with_marks(file, path, id, salt, keydir, policy)?;
    let len = match replayed {
        Replayed::Clean { len } => len,
        Replayed::TornTail { valid_len, dropped, reason } => {
            cut_torn_tail(file, path, &salt, valid_len, dropped, reason)?
        }
    };
    resync_unmarked(file, path, durable_upto.max(SEGMENT_HEADER_LEN as u64), len)?;
    Ok(len)
}

/// Writes the bytes of `active.seg` from `from` (where its last durability
/// mark says it was synced) to `to` again, with the same content, and
/// fsyncs them. The process that wrote them may have died right after an
/// fsync of them failed: on Linux their pages are then clean in the page
/// cache, so recovery reads them whole, yet no later fsync would write
/// them, and a mark appended after new writes would claim them durable.
/// Written again, they are dirty, and this fsync puts them on the disk.
fn resync_unmarked(file: &dyn FileHandle, path: &Path, from: u64, to: u64) -> Result<()> {
    let mut at = from;
    let mut buf = vec![0; (to.saturating_sub(from) as usize).min(1 << 20)];
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at).map_err(Error::io(format!("reading {}", path.display())))?;
        file.write_all_at(&buf[..n], at).map_err(Error::io(format!("rewriting {}", path.display())))?;
        at += n as u64;
    }
    if from < to {
        file.sync_data().map_err(Error::io(format!("syncing {}", path.display())))?;
    }
    Ok(())
}

/// Judges the bad tail of `active.seg` and, if it is a torn write, cuts it
/// off; returns the length kept.
fn cut_torn_tail(
    file: &dyn FileHandle,
    path: &Path,
    salt: &Salt,
    valid_len: u64,
    dropped: u64,
    reason: stratum_core::Corruption,
) -> Result<u64> {
    let len = file.len().map_err(Error::io(format!("reading length of {}", path.display())))?;
    let mut tail = vec![0; (len - valid_len) as usize];
    file.read_exact_at(&mut tail, valid_len).map_err(Error::io(format!("reading {}", path.display())))?;
    let TailDecision::Cut { to } = judge_bad_tail(valid_len, reason, &tail, salt).map_err(|defect| Error::Corrupt {
        file: path.to_path_buf(),
        offset: valid_len,
        defect,
    })?;
    tracing::warn!(file = %path.display(), valid_len, dropped, %reason, "cutting off a torn tail of the active segment");
    file.set_len(to).map_err(Error::io(format!("truncating torn tail of {}", path.display())))?;
    file.sync_data().map_err(Error::io(format!("syncing {}", path.display())))?;
    Ok(to)
}
