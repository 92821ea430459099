//! Recovery decisions: `plan_recovery` on directory listings and
//! `judge_bad_tail` on the bytes after the valid prefix of `active.seg`.
//!
//! The properties compare the plan with an expectation written out plainly
//! here, from the rules in the recovery module's documentation.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use stratum_core::{
    ACTIVE_NAME, ACTIVE_TMP_NAME, Corruption, Defect, HeaderError, LOCK_NAME, Listing, MAX_SEGMENT_ID, MERGED_NAME,
    MERGED_TMP_NAME, MergedHeader, PlanError, RECORD_HEADER_LEN, RecordKind, RecoveryPlan, RecoveryStep, ReplayKind,
    SALT_LEN, Salt, SegmentId, TailDecision, TailPolicy, Value, hint_name, judge_bad_tail, parse_sealed_name,
    plan_recovery, seal_record, sealed_name,
};

/// What a sealed segment's header says.
#[derive(Clone, Copy, Debug)]
enum Header {
    /// The id in the file's name.
    Same,
    /// Another id (which may happen to be the same one).
    Other(u32),
    Bad,
}

/// The largest `n` of a segment id `base + n`.
const N: u32 = 13;

/// A data directory, described by what is in it. Segment ids are
/// `base + n` for `n` in `1..=N`, so that most cases use small ids and some
/// sit at the top of the id space.
#[derive(Clone, Debug)]
struct Dir {
    base: u32,
    sealed: BTreeMap<u32, Header>,
    /// (segment, covers_from) of `merged.seg`.
    merged: Option<(u32, u32)>,
    /// The id in `active.seg`'s header.
    active: Option<SegmentId>,
    /// Segments with a `seg_NNN.hint`, whether or not the segment is there.
    hints: BTreeSet<u32>,
    merged_hint: bool,
    /// Other files: temporary files, the lock and a file recovery ignores.
    extras: Vec<&'static str>,
    /// Shuffles the listing's names.
    order: u64,
}

const EXTRAS: [&str; 6] =
    [MERGED_TMP_NAME, ACTIVE_TMP_NAME, "seg_007.hint.tmp", "merged.hint.tmp", LOCK_NAME, "README"];

fn arb_header() -> impl Strategy<Value = Header> {
    prop_oneof![18 => Just(Header::Same), 1 => (1..=N).prop_map(Header::Other), 1 => Just(Header::Bad)]
}

/// Where `active.seg` is, for the strategy.
#[derive(Clone, Copy, Debug)]
enum ActiveAt {
    /// This far after the newest sealed or merged segment.
    After(u32),
    At(u32),
}

fn arb_dir() -> impl Strategy<Value = Dir> {
    let base = prop_oneof![4 => Just(0), 1 => Just(MAX_SEGMENT_ID - N)];
    // `merged.seg` usually covers from the oldest segment (1): a directory
    // with a segment older than that is damaged, and would be most cases.
    let merged = (1..=N, prop_oneof![2 => Just(1), 1 => 1..=N]).prop_map(|(a, b)| (a.max(b), a.min(b)));
    (
        base,
        btree_map(1..=N, arb_header(), 0..7),
        proptest::option::weighted(0.5, merged),
        // `active.seg` usually follows the newest segment (by one, or by
        // two after a rotation that crashed), sometimes is anywhere.
        proptest::option::weighted(
            0.7,
            prop_oneof![3 => (1..=2u32).prop_map(ActiveAt::After), 1 => (1..=N).prop_map(ActiveAt::At)],
        ),
        btree_set(1..=N, 0..4),
        any::<bool>(),
        proptest::sample::subsequence(EXTRAS.to_vec(), 0..=EXTRAS.len()),
        any::<u64>(),
    )
        .prop_map(|(base, sealed, merged, active, hints, merged_hint, extras, order)| {
            let newest = sealed.keys().copied().chain(merged.map(|(m, _)| m)).max().unwrap_or(0);
            let active = active.map(|a| match a {
                ActiveAt::After(k) => seg(base + (newest + k).min(N)),
                ActiveAt::At(n) => seg(base + n),
            });
            Dir { base, sealed, merged, active, hints, merged_hint, extras, order }
        })
}

impl Dir {
    fn id(&self, n: u32) -> SegmentId {
        seg(self.base + n)
    }

    /// `seg_NNN.seg`, spelled out here rather than with `sealed_name`.
    fn sealed_file(&self, n: u32) -> String {
        format!("seg_{:03}.seg", self.base + n)
    }

    fn hint_file(&self, n: u32) -> String {
        format!("seg_{:03}.hint", self.base + n)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.sealed.keys().map(|&n| self.sealed_file(n)).collect();
        names.extend(self.hints.iter().map(|&n| self.hint_file(n)));
        names.extend(self.merged.map(|_| MERGED_NAME.to_owned()));
        names.extend(self.merged_hint.then(|| "merged.hint".to_owned()));
        names.extend(self.active.map(|_| ACTIVE_NAME.to_owned()));
        names.extend(self.extras.iter().map(|&e| e.to_owned()));
        // Directory listings come in no particular order.
        let key = |name: &String| {
            name.bytes().fold(self.order, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3).rotate_left(17))
        };
        names.sort_by_key(key);
        names
    }

    fn listing(&self) -> Listing {
        let sealed = self
            .sealed
            .iter()
            .map(|(&n, &header)| {
                let header = match header {
                    Header::Same => Ok(self.id(n)),
                    Header::Other(m) => Ok(self.id(m)),
                    Header::Bad => Err(HeaderError::BadMagic),
                };
                (self.id(n), header)
            })
            .collect();
        Listing {
            names: self.names(),
            sealed,
            merged: self.merged.map(|(segment, covers_from)| MergedHeader {
                segment: self.id(segment),
                covers_from: self.id(covers_from),
            }),
            active: self.active,
        }
    }
}

/// What recovery of `dir` must do, worked out plainly: the files it
/// deletes (in any order) and, after them, the replays and the active step
/// (in this order); or the error.
#[derive(Debug, PartialEq)]
struct Expected {
    deleted: BTreeSet<String>,
    /// The sealed segments the merged segment replaced.
    replaced: BTreeSet<String>,
    replays: Vec<RecoveryStep>,
}

fn damaged(file: String, defect: Defect) -> PlanError {
    PlanError::Damaged { file, defect }
}

fn expected(dir: &Dir) -> Result<Expected, PlanError> {
    // A sealed segment older than the merged segment's range: the oldest is
    // named.
    if let Some((segment, covers_from)) = dir.merged
        && let Some(&n) = dir.sealed.keys().find(|&&n| n < covers_from)
    {
        let defect = Defect::OlderThanMerged { covers_from: dir.id(covers_from), merged: dir.id(segment) };
        return Err(damaged(dir.sealed_file(n), defect));
    }
    let merged_segment = dir.merged.map(|(segment, _)| segment);
    let is_replaced = |n: u32| merged_segment.is_some_and(|m| n <= m);

    let mut replays = Vec::new();
    let mut newest = None;
    if let Some(m) = merged_segment {
        replays.push(RecoveryStep::Replay { name: "merged.seg".into(), segment: dir.id(m), kind: ReplayKind::Merged });
        newest = Some(m);
    }
    for (&n, &header) in &dir.sealed {
        if is_replaced(n) {
            continue;
        }
        // The kept segments' headers are checked oldest first.
        match header {
            Header::Same => {}
            Header::Other(m) if m == n => {}
            Header::Other(m) => {
                let defect = Defect::HeaderNameMismatch { header: dir.id(m), name: dir.id(n) };
                return Err(damaged(dir.sealed_file(n), defect));
            }
            Header::Bad => return Err(damaged(dir.sealed_file(n), Defect::Header(HeaderError::BadMagic))),
        }
        replays.push(RecoveryStep::Replay { name: dir.sealed_file(n), segment: dir.id(n), kind: ReplayKind::Sealed });
        newest = Some(n);
    }
    match dir.active {
        Some(a) if newest.is_some_and(|newest| a <= dir.id(newest)) => {
            let defect = Defect::ActiveBehindSealed { active: a, sealed: dir.id(newest.unwrap()) };
            return Err(damaged("active.seg".into(), defect));
        }
        Some(a) => {
            replays.push(RecoveryStep::Replay { name: "active.seg".into(), segment: a, kind: ReplayKind::Active })
        }
        None => {
            let next = match newest {
                None => SegmentId::FIRST,
                Some(newest) if dir.base + newest == MAX_SEGMENT_ID => return Err(PlanError::SegmentIdsExhausted),
                Some(newest) => dir.id(newest + 1),
            };
            replays.push(RecoveryStep::CreateActive(next));
        }
    }

    let replaced: BTreeSet<String> =
        dir.sealed.keys().filter(|&&n| is_replaced(n)).map(|&n| dir.sealed_file(n)).collect();
    let mut deleted = replaced.clone();
    // Leftovers of interrupted writes...
    deleted
        .extend(dir.extras.iter().filter(|e| e.ends_with(".hint.tmp") || **e == "merged.seg.tmp").map(|&e| e.into()));
    // ...the hints of the replaced segments...
    deleted.extend(
        dir.hints.iter().filter(|&&n| dir.sealed.contains_key(&n) && is_replaced(n)).map(|&n| dir.hint_file(n)),
    );
    // ...and hints whose segment is not in the directory.
    deleted.extend(dir.hints.iter().filter(|n| !dir.sealed.contains_key(n)).map(|&n| dir.hint_file(n)));
    if dir.merged_hint && dir.merged.is_none() {
        deleted.insert("merged.hint".into());
    }
    Ok(Expected { deleted, replaced, replays })
}

/// Checks the shape of a plan against the expectation: deletions and
/// directory syncs first, then exactly the expected replays.
fn check_plan(plan: &RecoveryPlan, expected: &Expected) -> Result<(), TestCaseError> {
    let steps = &plan.steps;
    let first_replay = steps
        .iter()
        .position(|s| matches!(s, RecoveryStep::Replay { .. } | RecoveryStep::CreateActive(_)))
        .unwrap_or(steps.len());
    let (cleanup, replays) = steps.split_at(first_replay);
    prop_assert_eq!(replays, &expected.replays[..], "replays of {:?}", steps);

    let deletes: Vec<&String> = cleanup
        .iter()
        .filter_map(|s| match s {
            RecoveryStep::Delete(name) => Some(name),
            _ => None,
        })
        .collect();
    let deleted: BTreeSet<String> = deletes.iter().map(|&n| n.clone()).collect();
    prop_assert_eq!(deletes.len(), deleted.len(), "a file is deleted twice: {:?}", steps);
    prop_assert_eq!(&deleted, &expected.deleted);

    // One directory sync, after every replaced segment's deletion, exactly
    // when segments were replaced.
    let syncs: Vec<usize> =
        cleanup.iter().enumerate().filter(|(_, s)| **s == RecoveryStep::SyncDir).map(|(i, _)| i).collect();
    prop_assert!(
        cleanup.iter().all(|s| matches!(s, RecoveryStep::Delete(_) | RecoveryStep::SyncDir)),
        "only deletions and syncs come before the replays: {:?}",
        steps
    );
    if expected.replaced.is_empty() {
        prop_assert!(syncs.is_empty(), "a sync with nothing replaced: {:?}", steps);
    } else {
        prop_assert_eq!(syncs.len(), 1, "{:?}", steps);
        let replaced_deleted_at = cleanup
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, RecoveryStep::Delete(n) if expected.replaced.contains(n)))
            .map(|(i, _)| i);
        for at in replaced_deleted_at {
            prop_assert!(at < syncs[0], "replaced segment deleted after the sync: {:?}", steps);
        }
    }

    // Exactly one active step, last.
    let active_steps = steps
        .iter()
        .filter(|s| matches!(s, RecoveryStep::CreateActive(_) | RecoveryStep::Replay { kind: ReplayKind::Active, .. }))
        .count();
    prop_assert_eq!(active_steps, 1, "{:?}", steps);
    let last = steps.last();
    let ends_active =
        matches!(last, Some(RecoveryStep::CreateActive(_) | RecoveryStep::Replay { kind: ReplayKind::Active, .. }));
    prop_assert!(ends_active, "the plan ends with {:?}", last);
    Ok(())
}

/// The directory after carrying out the deletions among the first `n`
/// steps (a crash after them), or all steps including the active segment's
/// creation.
fn after_steps(dir: &Dir, plan: &RecoveryPlan, n: usize) -> Dir {
    let mut dir = dir.clone();
    for step in &plan.steps[..n] {
        match step {
            RecoveryStep::Delete(name) => {
                if let Some(n) = dir.sealed.keys().copied().find(|&n| dir.sealed_file(n) == *name) {
                    dir.sealed.remove(&n);
                } else if let Some(n) = dir.hints.iter().copied().find(|&n| dir.hint_file(n) == *name) {
                    dir.hints.remove(&n);
                } else if name == "merged.hint" {
                    dir.merged_hint = false;
                } else {
                    dir.extras.retain(|e| e != name);
                }
            }
            RecoveryStep::CreateActive(id) => {
                dir.active = Some(*id);
                // The new segment is prepared under a temporary name.
                dir.extras.retain(|&e| e != ACTIVE_TMP_NAME);
            }
            RecoveryStep::SyncDir | RecoveryStep::Replay { .. } => {}
        }
    }
    dir
}

fn replays_of(plan: &RecoveryPlan) -> Vec<RecoveryStep> {
    plan.steps.iter().filter(|s| !matches!(s, RecoveryStep::Delete(_) | RecoveryStep::SyncDir)).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The plan for any directory is the expected one, or the expected
    /// error.
    #[test]
    fn a_plan_deletes_replays_and_fails_as_expected(dir in arb_dir()) {
        let listing = dir.listing();
        let planned = plan_recovery(&listing);
        match (&planned, expected(&dir)) {
            (Ok(plan), Ok(expected)) => check_plan(plan, &expected)?,
            (Err(e), Err(expected)) => prop_assert_eq!(e, &expected),
            (planned, expected) => {
                prop_assert!(false, "listing {:?}: planned {:?}, expected {:?}", listing, planned, expected)
            }
        }
    }

    /// Segments the merged segment replaced are never replayed, and a kept
    /// file is never deleted.
    #[test]
    fn replaced_segments_are_deleted_and_never_replayed(dir in arb_dir()) {
        let listing = dir.listing();
        let Ok(plan) = plan_recovery(&listing) else { return Ok(()) };
        let merged = listing.merged.map(|m| m.segment);
        let mut replayed = BTreeSet::new();
        for step in &plan.steps {
            match step {
                RecoveryStep::Replay { name, segment, kind } => {
                    prop_assert!(replayed.insert(*segment), "segment {} replayed twice", segment);
                    prop_assert!(listing.names.contains(name), "replaying {} which is not there", name);
                    match kind {
                        ReplayKind::Merged => prop_assert_eq!((name.as_str(), Some(*segment)), (MERGED_NAME, merged)),
                        ReplayKind::Sealed => {
                            prop_assert_eq!(parse_sealed_name(name), Some(*segment));
                            prop_assert!(merged.is_none_or(|m| *segment > m), "replaced {} replayed", name);
                        }
                        ReplayKind::Active => prop_assert_eq!(name.as_str(), ACTIVE_NAME),
                    }
                    prop_assert!(
                        !plan.steps.contains(&RecoveryStep::Delete(name.clone())),
                        "{} is both deleted and replayed",
                        name
                    );
                }
                RecoveryStep::Delete(name) => {
                    if let Some(id) = parse_sealed_name(name) {
                        prop_assert!(merged.is_some_and(|m| id <= m), "kept segment {} deleted", name);
                    }
                    prop_assert!(name != MERGED_NAME && name != ACTIVE_NAME && name != LOCK_NAME);
                    prop_assert!(name != ACTIVE_TMP_NAME, "the active segment's temporary file is its creator's");
                }
                RecoveryStep::SyncDir | RecoveryStep::CreateActive(_) => {}
            }
        }
        // Replays in log order.
        let order: Vec<SegmentId> = replays_of(&plan)
            .iter()
            .filter_map(|s| match s {
                RecoveryStep::Replay { segment, .. } => Some(*segment),
                _ => None,
            })
            .collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "replays out of order: {:?}", order);
    }

    /// Recovery is idempotent: a crash after any step, or a second open
    /// after a complete one, plans the same replays again.
    #[test]
    fn recovering_again_after_a_crash_replays_the_same(dir in arb_dir(), crash in any::<prop::sample::Index>()) {
        let Ok(plan) = plan_recovery(&dir.listing()) else { return Ok(()) };
        let n = crash.index(plan.steps.len() + 1);
        let again = plan_recovery(&after_steps(&dir, &plan, n).listing());
        let again = again.map_err(|e| TestCaseError::fail(format!("after {n} steps of {plan:?}: {e}")))?;
        let mut expected = replays_of(&plan);
        if n == plan.steps.len()
            && let Some(RecoveryStep::CreateActive(id)) = expected.last().cloned()
        {
            // The second open finds the segment the first one created.
            *expected.last_mut().unwrap() =
                RecoveryStep::Replay { name: ACTIVE_NAME.into(), segment: id, kind: ReplayKind::Active };
        }
        prop_assert_eq!(replays_of(&again), expected);
        if n == plan.steps.len() {
            // Nothing is left to delete.
            for step in &again.steps {
                prop_assert!(!matches!(step, RecoveryStep::Delete(_)), "{:?} left for the second open: {:?}", step, plan);
            }
        }
    }

    #[test]
    fn sealed_names_round_trip(n in prop_oneof![1u32..1000, 1..=MAX_SEGMENT_ID]) {
        let id = seg(n);
        let name = sealed_name(id);
        prop_assert_eq!(parse_sealed_name(&name), Some(id));
        prop_assert_eq!(hint_name(&name), format!("seg_{n:03}.hint"));
    }
}

#[test]
fn only_the_active_segment_may_lose_a_torn_tail() {
    assert_eq!(ReplayKind::Active.tail_policy(), TailPolicy::Truncate);
    assert_eq!(ReplayKind::Sealed.tail_policy(), TailPolicy::Reject);
    assert_eq!(ReplayKind::Merged.tail_policy(), TailPolicy::Reject);
}

#[test]
fn names_that_are_not_sealed_segments() {
    for name in ["seg_.seg", "seg_1a.seg", "seg_000.seg", "seg_16777216.seg", "seg_001.hint", "merged.seg", "x.seg"] {
        assert_eq!(parse_sealed_name(name), None, "{name}");
    }
    assert_eq!(parse_sealed_name("seg_1.seg"), Some(seg(1)));
    assert_eq!(hint_name(MERGED_NAME), "merged.hint");
}

fn listing(names: &[&str], sealed: &[u32], merged: Option<(u32, u32)>, active: Option<u32>) -> Listing {
    let mut all: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    all.extend(sealed.iter().map(|&n| sealed_name(seg(n))));
    all.extend(merged.map(|_| MERGED_NAME.to_owned()));
    all.extend(active.map(|_| ACTIVE_NAME.to_owned()));
    Listing {
        names: all,
        sealed: sealed.iter().map(|&n| (seg(n), Ok(seg(n)))).collect(),
        merged: merged
            .map(|(segment, covers_from)| MergedHeader { segment: seg(segment), covers_from: seg(covers_from) }),
        active: active.map(seg),
    }
}

fn replay(name: &str, n: u32, kind: ReplayKind) -> RecoveryStep {
    RecoveryStep::Replay { name: name.into(), segment: seg(n), kind }
}

#[test]
fn an_empty_directory_creates_segment_1() {
    let plan = plan_recovery(&Listing::default()).unwrap();
    assert_eq!(plan.steps, [RecoveryStep::CreateActive(SegmentId::FIRST)]);
    let plan = plan_recovery(&listing(&[LOCK_NAME], &[], None, None)).unwrap();
    assert_eq!(plan.steps, [RecoveryStep::CreateActive(seg(1))]);
}

#[test]
fn sealed_segments_replay_before_the_active_one() {
    let plan = plan_recovery(&listing(&["seg_001.hint"], &[1, 2], None, Some(3))).unwrap();
    assert_eq!(
        plan.steps,
        [
            replay("seg_001.seg", 1, ReplayKind::Sealed),
            replay("seg_002.seg", 2, ReplayKind::Sealed),
            replay("active.seg", 3, ReplayKind::Active),
        ]
    );
    // A crash during rotation: segment 3 sealed, its successor not created.
    let plan = plan_recovery(&listing(&[ACTIVE_TMP_NAME], &[1, 2, 3], None, None)).unwrap();
    assert_eq!(plan.steps.last(), Some(&RecoveryStep::CreateActive(seg(4))));
}

/// A crash after the merged segment was committed (renamed into place) but
/// before the segments it replaced were deleted.
#[test]
fn a_crash_after_a_compaction_commit_deletes_the_replaced_segments() {
    let plan = plan_recovery(&listing(&["seg_001.hint", "merged.hint"], &[1, 2, 3], Some((2, 1)), Some(4))).unwrap();
    assert_eq!(
        plan.steps,
        [
            RecoveryStep::Delete("seg_001.seg".into()),
            RecoveryStep::Delete("seg_001.hint".into()),
            RecoveryStep::Delete("seg_002.seg".into()),
            RecoveryStep::SyncDir,
            replay(MERGED_NAME, 2, ReplayKind::Merged),
            replay("seg_003.seg", 3, ReplayKind::Sealed),
            replay(ACTIVE_NAME, 4, ReplayKind::Active),
        ]
    );
}

/// A crash before the commit leaves the uncommitted merged segment and
/// its hints, which go; the old segments stay.
#[test]
fn a_crash_before_a_compaction_commit_deletes_the_uncommitted_merge() {
    let names = [MERGED_TMP_NAME, "merged.hint.tmp", "seg_002.hint.tmp", "seg_002.hint"];
    let plan = plan_recovery(&listing(&names, &[1, 2], None, Some(3))).unwrap();
    let deleted: BTreeSet<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            RecoveryStep::Delete(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, BTreeSet::from([MERGED_TMP_NAME, "merged.hint.tmp", "seg_002.hint.tmp"]));
    assert!(!plan.steps.contains(&RecoveryStep::SyncDir));
    assert_eq!(replays_of(&plan).len(), 3);
}

#[test]
fn a_segment_older_than_the_merged_range_is_damage() {
    let err = plan_recovery(&listing(&[], &[1, 3], Some((4, 2)), None)).unwrap_err();
    let defect = Defect::OlderThanMerged { covers_from: seg(2), merged: seg(4) };
    assert_eq!(err, PlanError::Damaged { file: "seg_001.seg".into(), defect });
}

#[test]
fn an_active_segment_at_or_below_the_newest_sealed_one_is_damage() {
    for active in [2, 3] {
        let err = plan_recovery(&listing(&[], &[1, 3], None, Some(active))).unwrap_err();
        let defect = Defect::ActiveBehindSealed { active: seg(active), sealed: seg(3) };
        assert_eq!(err, PlanError::Damaged { file: ACTIVE_NAME.into(), defect });
    }
    // The merged segment counts as the newest when nothing follows it.
    let err = plan_recovery(&listing(&[], &[], Some((5, 1)), Some(5))).unwrap_err();
    let defect = Defect::ActiveBehindSealed { active: seg(5), sealed: seg(5) };
    assert_eq!(err, PlanError::Damaged { file: ACTIVE_NAME.into(), defect });
}

#[test]
fn a_sealed_segment_whose_header_names_another_is_damage() {
    let mut l = listing(&[], &[1, 2], None, Some(3));
    l.sealed.insert(seg(2), Ok(seg(7)));
    let defect = Defect::HeaderNameMismatch { header: seg(7), name: seg(2) };
    assert_eq!(plan_recovery(&l), Err(PlanError::Damaged { file: "seg_002.seg".into(), defect }));
    l.sealed.insert(seg(2), Err(HeaderError::ChecksumMismatch));
    let defect = Defect::Header(HeaderError::ChecksumMismatch);
    assert_eq!(plan_recovery(&l), Err(PlanError::Damaged { file: "seg_002.seg".into(), defect }));
    // Unless the merged segment replaced it: then it is deleted unread.
    let mut l = listing(&[], &[1, 2], Some((2, 1)), Some(3));
    l.sealed.insert(seg(2), Err(HeaderError::ChecksumMismatch));
    assert!(plan_recovery(&l).unwrap().steps.contains(&RecoveryStep::Delete("seg_002.seg".into())));
}

#[test]
fn the_segment_after_the_last_id_cannot_be_created() {
    let max = SegmentId::new(MAX_SEGMENT_ID).unwrap();
    let mut l = Listing { names: vec![sealed_name(max)], ..Listing::default() };
    l.sealed.insert(max, Ok(max));
    assert_eq!(plan_recovery(&l), Err(PlanError::SegmentIdsExhausted));
    // Nor after a merged segment with the last id.
    let merged = Listing {
        names: vec![MERGED_NAME.into()],
        merged: Some(MergedHeader { segment: max, covers_from: seg(1) }),
        ..Listing::default()
    };
    assert_eq!(plan_recovery(&merged), Err(PlanError::SegmentIdsExhausted));
    // The last id itself is still usable.
    let before = seg(MAX_SEGMENT_ID - 1);
    let mut l = Listing { names: vec![sealed_name(before)], ..Listing::default() };
    l.sealed.insert(before, Ok(before));
    assert_eq!(plan_recovery(&l).unwrap().steps.last(), Some(&RecoveryStep::CreateActive(max)));
    // An existing active segment needs no new id.
    let mut l = Listing { names: vec![sealed_name(before), ACTIVE_NAME.into()], active: Some(max), ..l };
    l.sealed.insert(before, Ok(before));
    assert_eq!(plan_recovery(&l).unwrap().steps.last(), Some(&replay(ACTIVE_NAME, MAX_SEGMENT_ID, ReplayKind::Active)));
}

// judge_bad_tail

/// A durability mark under the test salt.
fn mark(seq: u64, upto: u64) -> Vec<u8> {
    record_bytes(seq, 0, &Owned::Durable { upto })
}

/// The durability marks in `tail`, found the slow way from the format's
/// definition rather than the way `judge_bad_tail` finds them: at every
/// offset, a header of kind 11 with a 24-byte payload that starts with the
/// salt, whose checksum is the CRC-32 of the salt followed by the record's
/// bytes 4..49. Their `upto`s.
fn marks_in(tail: &[u8], salt_bytes: &[u8; 16]) -> Vec<u64> {
    const MARK_LEN: usize = 25 + 16 + 8;
    (0..(tail.len() + 1).saturating_sub(MARK_LEN))
        .filter_map(|at| {
            let r = &tail[at..at + MARK_LEN];
            let u32_at = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().unwrap());
            let is_mark = u32_at(4) == 24
                && r[8] == 11
                && r[25..41] == salt_bytes[..]
                && u32_at(0) == salted_crc(salt_bytes, &r[4..]);
            is_mark.then(|| u64::from_le_bytes(r[41..49].try_into().unwrap()))
        })
        .collect()
}

/// What `judge_bad_tail` must decide for `tail`, from [`marks_in`].
fn expected_decision(valid_len: u64, reason: Corruption, tail: &[u8]) -> Result<TailDecision, Defect> {
    match marks_in(tail, salt().bytes()).into_iter().max() {
        Some(durable_upto) if durable_upto > valid_len => {
            Err(Defect::DamageBeforeDurable { reason, valid_len, durable_upto })
        }
        _ => Ok(TailDecision::Cut { to: valid_len }),
    }
}

const VALID_LEN: u64 = 1000;

fn checksum_mismatch() -> Corruption {
    Corruption::ChecksumMismatch { stored: 1, computed: 2 }
}

/// The start of a record damaged by a crash: a header, then part of a
/// payload.
fn bad_record() -> Vec<u8> {
    let mut r = record_bytes(40, 3, &Owned::SetBlob { blob: vec![0xab; 40] });
    r[30] ^= 0x04;
    r
}

/// The defect the salt fixes, at the level of the judge: the bytes after a
/// torn record hold whole records, valid under the segment's own salt
/// (records a client stored inside an HTML blob or a value, or a log of
/// its own), and no durability mark. The tail is cut: no byte of it other
/// than a mark is read as a record. (The judge of format 2 refused to open
/// the store, taking the records for acknowledged writes.)
#[test]
fn whole_records_under_the_same_salt_in_a_torn_tail_are_cut_off() {
    let records = [
        record_bytes(41, 7, &Owned::CreateDocument { columns: columns(&[("a", "b")]), blob: b"<p>".to_vec() }),
        record_bytes(42, 8, &Owned::PutInput { document: 7, value: Value::Str("forged".into()) }),
        record_bytes(43, 8, &Owned::PutOutput { document: 7, value: Value::Int(-1) }),
        record_bytes(44, 0, &Owned::ReserveIds { below: u64::MAX }),
        record_bytes(45, 0, &Owned::Checkpoint { covers_from: seg(1), next_id: 1 << 50 }),
        record_bytes(46, 7, &Owned::DeleteDocument),
    ]
    .concat();
    // Inside a blob whose record was torn.
    let mut html = b"<html><body><pre>".to_vec();
    html.extend_from_slice(&records);
    html.extend_from_slice(b"</pre></body></html>");
    let mut blob_record = record_bytes(40, 3, &Owned::SetBlob { blob: html });
    blob_record.truncate(blob_record.len() - 5);
    // Or straight after a record that is damaged, each one whole and newer.
    let mut after_damage = bad_record();
    after_damage.extend_from_slice(&records);
    for tail in [blob_record, after_damage] {
        let reason = Corruption::Truncated { missing: 5 };
        assert_eq!(expected_decision(VALID_LEN, reason, &tail), Ok(TailDecision::Cut { to: VALID_LEN }));
        assert_eq!(judge_bad_tail(VALID_LEN, reason, &tail, &salt()), Ok(TailDecision::Cut { to: VALID_LEN }));
    }
}

#[test]
fn damage_before_a_durable_mark_is_refused() {
    let mut tail = bad_record();
    tail.extend(record_bytes(41, 4, &Owned::DeleteDocument));
    tail.extend(mark(42, VALID_LEN + 300));
    tail.extend(record_bytes(43, 5, &Owned::DeleteDocument));
    let reason = checksum_mismatch();
    let expected = Defect::DamageBeforeDurable { reason, valid_len: VALID_LEN, durable_upto: VALID_LEN + 300 };
    assert_eq!(judge_bad_tail(VALID_LEN, reason, &tail, &salt()), Err(expected));
    // One byte past the damage is enough.
    let mut tail = bad_record();
    tail.extend(mark(42, VALID_LEN + 1));
    let expected = Defect::DamageBeforeDurable { reason, valid_len: VALID_LEN, durable_upto: VALID_LEN + 1 };
    assert_eq!(judge_bad_tail(VALID_LEN, reason, &tail, &salt()), Err(expected));
    let message = expected.to_string();
    assert!(message.contains(&format!("up to offset {}", VALID_LEN + 1)), "{message}");
    assert!(message.contains(&format!("truncate it to {VALID_LEN} bytes")), "{message}");
}

/// Of several marks, the one that reaches furthest is named, wherever it is.
#[test]
fn the_furthest_durable_offset_is_the_one_reported() {
    let mut tail = bad_record();
    tail.extend(mark(41, VALID_LEN + 500));
    tail.extend(b"junk");
    tail.extend(mark(42, VALID_LEN + 900));
    tail.extend(mark(43, 10));
    tail.extend(record_bytes(44, 5, &Owned::DeleteDocument));
    let reason = Corruption::ZeroHeader;
    let expected = Defect::DamageBeforeDurable { reason, valid_len: VALID_LEN, durable_upto: VALID_LEN + 900 };
    assert_eq!(judge_bad_tail(VALID_LEN, reason, &tail, &salt()), Err(expected));
}

/// A mark that covers no more than the valid prefix says nothing about the
/// bad record: an fsync that completed before it was written.
#[test]
fn a_durable_mark_at_or_below_the_valid_length_is_cut() {
    for upto in [0, 36, VALID_LEN - 1, VALID_LEN] {
        let mut tail = bad_record();
        tail.extend(mark(41, upto));
        tail.extend(mark(42, upto / 2));
        let decision = judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &salt());
        assert_eq!(decision, Ok(TailDecision::Cut { to: VALID_LEN }), "upto {upto}");
    }
}

/// The last mark was being written when the crash came: with any one bit
/// of it flipped it is no mark, and the tail is cut.
#[test]
fn a_damaged_last_mark_is_cut() {
    let mut tail = bad_record();
    let at = tail.len();
    tail.extend(mark(41, VALID_LEN + 300));
    assert!(judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &salt()).is_err());
    for bit in at * 8..tail.len() * 8 {
        let mut damaged = tail.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let decision = judge_bad_tail(VALID_LEN, checksum_mismatch(), &damaged, &salt());
        assert_eq!(decision, Ok(TailDecision::Cut { to: VALID_LEN }), "bit {}", bit - at * 8);
    }
    // Torn at any length.
    for len in at..tail.len() {
        let decision = judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail[..len], &salt());
        assert_eq!(decision, Ok(TailDecision::Cut { to: VALID_LEN }), "{} bytes of the mark", len - at);
    }
}

/// A mark from another segment (or store, or the format-2 framing) does not
/// validate here, even when it repeats this segment's salt.
#[test]
fn a_durable_mark_under_another_salt_is_cut() {
    let foreign = salted_record_bytes(&other_salt(), 41, 0, &Owned::Durable { upto: VALID_LEN + 300 });
    let unsalted = salted_record_bytes(&Salt::UNSALTED, 41, 0, &Owned::Durable { upto: VALID_LEN + 300 });
    // Our salt's bytes in its payload, sealed for another salt.
    let mut resealed = mark(41, VALID_LEN + 300);
    seal_record(&mut resealed, &other_salt());
    for (name, foreign) in [("other salt", foreign), ("unsalted", unsalted), ("resealed", resealed)] {
        let mut tail = bad_record();
        tail.extend(foreign);
        let decision = judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &salt());
        assert_eq!(decision, Ok(TailDecision::Cut { to: VALID_LEN }), "{name}");
    }
    // The same bytes judged under the salt they were sealed with are a mark.
    let mut tail = bad_record();
    tail.extend(salted_record_bytes(&other_salt(), 41, 0, &Owned::Durable { upto: VALID_LEN + 300 }));
    assert!(judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &other_salt()).is_err());
}

/// Only records of kind Durable count: the salt's bytes in a record of
/// another kind, valid under the salt, are data; and a Durable record
/// whose payload is not a salt and an offset is no mark.
#[test]
fn the_salt_inside_other_records_is_no_mark() {
    let mut payload = salt().bytes().to_vec();
    payload.extend_from_slice(&(VALID_LEN + 300).to_le_bytes());
    let as_blob = record_bytes(41, 3, &Owned::SetBlob { blob: payload.clone() });
    let mut as_reservation = mark(41, VALID_LEN + 300);
    as_reservation[8] = RecordKind::ReserveIds as u8;
    fix_record_crc(&mut as_reservation);
    let mut too_long = mark(41, VALID_LEN + 300);
    too_long.push(0);
    too_long[4] += 1;
    fix_record_crc(&mut too_long);
    for (name, record) in [("blob", as_blob), ("reservation", as_reservation), ("too long", too_long)] {
        let mut tail = bad_record();
        tail.extend(record);
        assert_eq!(marks_in(&tail, salt().bytes()), [], "{name}");
        let decision = judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &salt());
        assert_eq!(decision, Ok(TailDecision::Cut { to: VALID_LEN }), "{name}");
    }
}

/// The salt found less than a header's length into the tail belongs to a
/// mark that started before it: the valid prefix, not the tail.
#[test]
fn a_mark_cut_at_its_start_is_no_mark() {
    let whole = mark(41, VALID_LEN + 300);
    for skip in 1..=RECORD_HEADER_LEN {
        let decision = judge_bad_tail(VALID_LEN, checksum_mismatch(), &whole[skip..], &salt());
        assert_eq!(decision, Ok(TailDecision::Cut { to: VALID_LEN }), "skip {skip}");
    }
    assert_eq!(judge_bad_tail(VALID_LEN, checksum_mismatch(), &[], &salt()), Ok(TailDecision::Cut { to: VALID_LEN }));
}

/// A mark at any offset of the tail is found, the first byte included.
#[test]
fn a_mark_is_found_at_any_offset() {
    for lead in 0..70 {
        let mut tail = vec![0x5a; lead];
        tail.extend(mark(41, VALID_LEN + 7));
        tail.extend(vec![0xa5; 70 - lead]);
        let expected = Defect::DamageBeforeDurable {
            reason: checksum_mismatch(),
            valid_len: VALID_LEN,
            durable_upto: VALID_LEN + 7,
        };
        assert_eq!(judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &salt()), Err(expected), "lead {lead}");
    }
}

/// A salt whose bytes repeat can occur overlapping itself, as in a mark's
/// header followed by its payload. A search whose matches do not overlap
/// would hide the real mark behind a match that starts inside the mark's
/// header; the judge looks at every occurrence. (The io layer draws salts
/// at random, so this needs a degenerate salt: all zeros here.)
#[test]
fn a_mark_under_a_self_overlapping_salt_is_found() {
    let zeros = Salt::new([0; SALT_LEN]);
    let mut tail = bad_record();
    tail.extend(salted_record_bytes(&zeros, 1, 0, &Owned::Durable { upto: VALID_LEN + 300 }));
    let expected = Defect::DamageBeforeDurable {
        reason: checksum_mismatch(),
        valid_len: VALID_LEN,
        durable_upto: VALID_LEN + 300,
    };
    assert_eq!(judge_bad_tail(VALID_LEN, checksum_mismatch(), &tail, &zeros), Err(expected));
}

fn arb_reason() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        Just(Corruption::ZeroHeader),
        any::<u8>().prop_map(Corruption::UnknownKind),
        (any::<u32>(), any::<u32>()).prop_map(|(stored, computed)| Corruption::ChecksumMismatch { stored, computed }),
        (1usize..100).prop_map(|missing| Corruption::Truncated { missing }),
    ]
}

/// A mark's offset: mostly near [`VALID_LEN`], on either side of it.
fn arb_upto() -> impl Strategy<Value = u64> {
    prop_oneof![4 => VALID_LEN - 3..VALID_LEN + 3, 1 => any::<u64>()]
}

/// One piece of a tail.
fn arb_piece() -> impl Strategy<Value = Vec<u8>> {
    let record = || (any::<u64>(), 1u64..=20, arb_mutation_with(1u64..=20));
    prop_oneof![
        1 => vec(any::<u8>(), 0..64),
        1 => (1usize..64).prop_map(|n| vec![0; n]),
        1 => Just(salt().bytes().to_vec()),
        1 => (1usize..SALT_LEN).prop_map(|n| salt().bytes()[..n].to_vec()),
        // Valid records of every kind (marks among them), under this salt
        // and another.
        1 => record().prop_map(|(seq, id, m)| record_bytes(seq, id, &m)),
        1 => record().prop_map(|(seq, id, m)| salted_record_bytes(&other_salt(), seq, id, &m)),
        3 => (any::<u64>(), arb_upto()).prop_map(|(seq, upto)| mark(seq, upto)),
        1 => (any::<u64>(), arb_upto()).prop_map(|(seq, upto)| salted_record_bytes(
            &other_salt(),
            seq,
            0,
            &Owned::Durable { upto }
        )),
        // A mark damaged or torn.
        1 => (arb_upto(), any::<prop::sample::Index>(), 1u8..).prop_map(|(upto, at, x)| {
            let mut m = mark(9, upto);
            let at = at.index(m.len());
            m[at] ^= x;
            m
        }),
        1 => (arb_upto(), any::<prop::sample::Index>()).prop_map(|(upto, cut)| {
            let mut m = mark(9, upto);
            m.truncate(cut.index(m.len()));
            m
        }),
    ]
}

/// Tails of pieces, with the salt's bytes spliced in at random places
/// (into the middle of a mark too).
fn arb_tail() -> impl Strategy<Value = Vec<u8>> {
    (vec(arb_piece(), 0..8), vec(any::<prop::sample::Index>(), 0..3)).prop_map(|(pieces, splices)| {
        let mut tail = pieces.concat();
        for at in splices {
            let at = at.index(tail.len() + 1);
            tail.splice(at..at, salt().bytes().iter().copied());
        }
        tail
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the tail holds, the judge refuses exactly when a whole,
    /// valid mark in it says bytes past the valid prefix were durable,
    /// naming the furthest one, and otherwise cuts to the valid prefix.
    #[test]
    fn a_tail_is_refused_only_for_a_valid_mark_past_the_valid_prefix(
        valid_len in prop_oneof![4 => Just(VALID_LEN), 1 => 36u64..1 << 40],
        reason in arb_reason(),
        tail in arb_tail(),
    ) {
        let judged = judge_bad_tail(valid_len, reason, &tail, &salt());
        prop_assert_eq!(judged, expected_decision(valid_len, reason, &tail));
    }

    /// Arbitrary bytes never make the judge panic, and refuse only when the
    /// slow search finds a mark.
    #[test]
    fn arbitrary_tails_are_judged_without_panicking(
        valid_len in any::<u64>(),
        reason in arb_reason(),
        tail in vec(any::<u8>(), 0..512),
    ) {
        let judged = judge_bad_tail(valid_len, reason, &tail, &salt());
        prop_assert_eq!(judged, expected_decision(valid_len, reason, &tail));
        prop_assert_eq!(judged, Ok(TailDecision::Cut { to: valid_len }));
    }
}
