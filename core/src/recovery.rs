//! Recovery decisions: what to do with a data directory at open.
//!
//! The io layer lists the directory and reads the headers of its segment
//! files (a [`Listing`]); [`plan_recovery`] turns that into the steps that
//! rebuild the index: files to delete (leftovers of an interrupted
//! compaction, rotation or hint write), segments to replay in log order
//! with their tail policy, and the active segment to create when there is
//! none. The io layer carries the steps out in order and, when replaying
//! `active.seg` stops at a bad record, asks [`judge_bad_tail`] whether the
//! tail is a torn write (cut it) or damage to durable records (refuse).
//!
//! The data directory holds sealed segments `seg_NNN.seg` (NNN is the
//! segment id, at least three digits), at most one `merged.seg` written by
//! compaction, and one `active.seg`, whose header carries the id it will
//! have once sealed. `merged.seg` carries the id of the newest segment it
//! replaced and opens with a checkpoint record naming the oldest: any
//! `seg_NNN.seg` in that range is a leftover of a compaction that crashed
//! after its commit. Every step is idempotent, so a crash during recovery
//! recovers again to the same state.

use std::collections::BTreeMap;

use crate::SegmentId;
use crate::defect::Defect;
use crate::record::{Body, Corruption, HeaderError, RECORD_HEADER_LEN, RecordKind, Salt, Scan, scan};
use crate::replay::TailPolicy;

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

/// The name of the hint file beside segment file `segment_name`:
/// `seg_001.seg` → `seg_001.hint`, `merged.seg` → `merged.hint`.
pub fn hint_name(segment_name: &str) -> String {
    format!("{}.hint", segment_name.strip_suffix(".seg").unwrap_or(segment_name))
}

/// What the io layer found in the data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every file name in the directory.
    pub names: Vec<String>,
    /// The header of each sealed segment file, by the id in its name.
    pub sealed: BTreeMap<SegmentId, Result<SegmentId, HeaderError>>,
    /// `merged.seg`'s header id and the first segment its checkpoint says
    /// it replaced, if there is a `merged.seg`.
    pub merged: Option<MergedHeader>,
    /// The id in `active.seg`'s header, if there is an `active.seg`.
    pub active: Option<SegmentId>,
}

/// What recovery needs to know of `merged.seg` before replaying it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergedHeader {
    /// The merged segment's id: the newest segment it replaced.
    pub segment: SegmentId,
    /// The oldest segment it replaced (from its checkpoint record).
    pub covers_from: SegmentId,
}

/// One step of a recovery, carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryStep {
    /// Remove this file if it is there.
    Delete(String),
    /// Make the deletions so far durable (fsync the directory).
    SyncDir,
    /// Replay this segment file into the index.
    Replay {
        /// The file's name.
        name: String,
        /// The segment it holds.
        segment: SegmentId,
        /// Where its index entries may come from, and what a bad tail means.
        kind: ReplayKind,
    },
    /// There is no `active.seg`: create one for this segment.
    CreateActive(SegmentId),
}

/// How a segment is replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayKind {
    /// `merged.seg`, replayed first into the empty index: from its index
    /// snapshot (`merged.hint`) when that is valid, else by a scan.
    Merged,
    /// A sealed segment: from its hint file when valid, else by a scan.
    Sealed,
    /// `active.seg`: always scanned; it may end in a torn write.
    Active,
}

impl ReplayKind {
    /// What a bad tail of such a segment means.
    pub fn tail_policy(self) -> TailPolicy {
        match self {
            ReplayKind::Active => TailPolicy::Truncate,
            ReplayKind::Merged | ReplayKind::Sealed => TailPolicy::Reject,
        }
    }
}

/// The steps [`plan_recovery`] chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// In the order they must be carried out.
    pub steps: Vec<RecoveryStep>,
}

/// Why a directory cannot be recovered as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A segment file is not one this engine could have left.
    #[error("{file}: {defect}")]
    Damaged {
        /// The file's name.
        file: String,
        /// What is wrong with it.
        defect: Defect,
    },
    /// A new active segment is needed but every segment id is used.
    #[error("segment ids are exhausted")]
    SegmentIdsExhausted,
}

/// Plans the recovery of a directory: see the module's documentation.
pub fn plan_recovery(listing: &Listing) -> Result<RecoveryPlan, PlanError> {
    let names = &listing.names;
    let has = |name: &str| names.iter().any(|n| n == name);
    let mut steps = Vec::new();

    // Leftovers of interrupted writes: an uncommitted merge, hints being
    // written, and hints whose segment is gone.
    if has(MERGED_TMP_NAME) {
        steps.push(RecoveryStep::Delete(MERGED_TMP_NAME.into()));
    }
    let mut stray: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".hint.tmp") || (n.ends_with(".hint") && !has(&n.replace(".hint", ".seg"))))
        .collect();
    stray.sort();
    steps.extend(stray.into_iter().map(|n| RecoveryStep::Delete(n.clone())));

    let mut sealed: Vec<SegmentId> = listing.sealed.keys().copied().collect();
    let mut newest = None;
    if let Some(merged) = listing.merged {
        if let Some(&older) = sealed.iter().find(|&&s| s < merged.covers_from) {
            let defect = Defect::OlderThanMerged { covers_from: merged.covers_from, merged: merged.segment };
            return Err(PlanError::Damaged { file: sealed_name(older), defect });
        }
        let (replaced, newer): (Vec<SegmentId>, Vec<SegmentId>) = sealed.iter().partition(|&&s| s <= merged.segment);
        for &s in &replaced {
            let name = sealed_name(s);
            let hint = hint_name(&name);
            steps.push(RecoveryStep::Delete(name));
            // Its hint goes with it (it was no orphan when the directory
            // was listed).
            if has(&hint) {
                steps.push(RecoveryStep::Delete(hint));
            }
        }
        if !replaced.is_empty() {
            steps.push(RecoveryStep::SyncDir);
        }
        sealed = newer;
        steps.push(RecoveryStep::Replay {
            name: MERGED_NAME.into(),
            segment: merged.segment,
            kind: ReplayKind::Merged,
        });
        newest = Some(merged.segment);
    }
    for segment in sealed {
        let name = sealed_name(segment);
        match listing.sealed[&segment] {
            Ok(header) if header == segment => {}
            Ok(header) => {
                return Err(PlanError::Damaged {
                    file: name,
                    defect: Defect::HeaderNameMismatch { header, name: segment },
                });
            }
            Err(e) => return Err(PlanError::Damaged { file: name, defect: e.into() }),
        }
        steps.push(RecoveryStep::Replay { name, segment, kind: ReplayKind::Sealed });
        newest = Some(segment);
    }
    match listing.active {
        Some(active) => {
            if let Some(sealed) = newest.filter(|&s| active <= s) {
                return Err(PlanError::Damaged {
                    file: ACTIVE_NAME.into(),
                    defect: Defect::ActiveBehindSealed { active, sealed },
                });
            }
            steps.push(RecoveryStep::Replay { name: ACTIVE_NAME.into(), segment: active, kind: ReplayKind::Active });
        }
        None => {
            let first = match newest {
                Some(s) => s.next().ok_or(PlanError::SegmentIdsExhausted)?,
                None => SegmentId::FIRST,
            };
            steps.push(RecoveryStep::CreateActive(first));
        }
    }
    Ok(RecoveryPlan { steps })
}

/// What to do with the bad tail of `active.seg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum TailDecision {
    /// A torn write: cut the segment to this length.
    Cut {
        /// The length of the valid prefix.
        to: u64,
    },
}

/// Judges the bytes after the valid prefix of `active.seg` (`valid_len`
/// bytes long), where replay stopped for `reason`; `salt` is the segment's.
///
/// The log itself says how far it was durable: after every fsync of the
/// segment that covered new records, and before any write it covered is
/// acknowledged, the engine appends a `Durable` mark naming the length the
/// fsync covered. A mark repeats the segment's salt in its payload, so the
/// marks past the damage are found by searching the tail for those 16
/// random bytes, which no client can know, and then checking each
/// candidate's checksum (which covers the salt too). No other byte of the
/// tail is ever read as a record: a value that holds valid-looking records
/// cannot steer the decision.
///
/// If a valid mark says bytes past `valid_len` were durable, the bad record
/// was covered by a completed fsync: damage, not a torn write, and cutting
/// would silently drop acknowledged writes, so it is refused. Otherwise the
/// tail was never durable (a torn or lost write) and is cut off.
pub fn judge_bad_tail(valid_len: u64, reason: Corruption, tail: &[u8], salt: &Salt) -> Result<TailDecision, Defect> {
    // Every occurrence, overlapping ones included: a false match that
    // starts inside a mark's header must not hide the mark's own salt.
    let finder = memchr::memmem::Finder::new(salt.bytes());
    let hits =
        std::iter::successors(finder.find(tail), |&hit| finder.find(&tail[hit + 1..]).map(|next| hit + 1 + next));
    let durable_upto = hits
        .filter_map(|hit| hit.checked_sub(RECORD_HEADER_LEN))
        .filter_map(|start| match scan(&tail[start..], salt) {
            Scan::Record(record) if record.kind == RecordKind::Durable => match record.body() {
                Ok(Body::Durable { salt: repeated, upto }) if repeated == *salt.bytes() => Some(upto),
                _ => None,
            },
            _ => None,
        })
        .max();
    match durable_upto {
        Some(durable_upto) if durable_upto > valid_len => {
            Err(Defect::DamageBeforeDurable { reason, valid_len, durable_upto })
        }
        _ => Ok(TailDecision::Cut { to: valid_len }),
    }
}
