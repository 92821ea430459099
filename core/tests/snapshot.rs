//! Index snapshots (the hint file of a merged segment): loading one gives
//! exactly the index its segment's records build, and any defect is
//! refused as a whole.

use std::collections::BTreeMap;

mod common;

use common::{Log, seg};
use proptest::prelude::*;
use stratum_core::{
    Effect, EncodedColumns, HintError, KeyDir, Location, RecordMeta, SNAPSHOT_MAGIC, SegmentId, SnapshotDefect,
    Violation,
};

/// One record of a random log: what it is about and what it does.
#[derive(Clone, Debug)]
enum Step {
    Create { columns: BTreeMap<String, String> },
    SetBlob { doc: u64 },
    SetColumns { doc: u64, columns: BTreeMap<String, String> },
    DeleteDocument { doc: u64 },
    PutInput { doc: u64, input: u64 },
    DeleteInput { doc: u64, input: u64 },
    PutOutput { doc: u64, input: u64 },
    DeleteOutput { doc: u64, input: u64 },
    Checkpoint { next_id: u64 },
}

fn arb_columns() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-c]{1,2}", "[x-z]{0,3}", 0..3)
}

fn arb_step() -> impl Strategy<Value = Step> {
    let doc = 1u64..12;
    let input = 1u64..40;
    prop_oneof![
        3 => arb_columns().prop_map(|columns| Step::Create { columns }),
        1 => doc.clone().prop_map(|doc| Step::SetBlob { doc }),
        1 => (doc.clone(), arb_columns()).prop_map(|(doc, columns)| Step::SetColumns { doc, columns }),
        1 => doc.clone().prop_map(|doc| Step::DeleteDocument { doc }),
        6 => (doc.clone(), input.clone()).prop_map(|(doc, input)| Step::PutInput { doc, input }),
        1 => (doc.clone(), input.clone()).prop_map(|(doc, input)| Step::DeleteInput { doc, input }),
        4 => (doc.clone(), input.clone()).prop_map(|(doc, input)| Step::PutOutput { doc, input }),
        1 => (doc, input).prop_map(|(doc, input)| Step::DeleteOutput { doc, input }),
        1 => (0u64..100).prop_map(|next_id| Step::Checkpoint { next_id }),
    ]
}

/// Replays `steps` as records of one segment, back to back after its header,
/// into a fresh index. Returns the index and the segment's length.
fn replay(segment: SegmentId, steps: &[Step]) -> (KeyDir, u64) {
    // Documents get ids 51, 101, 151, ...; steps name them 1, 2, 3, ...
    let doc = |n: &u64| 1 + n * 50;
    let mut log = Log::in_segment(segment.get());
    let mut created = 0u64;
    let mut buf = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let (id, effect) = match step {
            Step::Create { columns } => {
                created += 1;
                (doc(&created), Effect::CreateDocument { columns: EncodedColumns::encode(columns, &mut buf) })
            }
            Step::SetBlob { doc: d } => (doc(d), Effect::SetBlob),
            Step::SetColumns { doc: d, columns } => {
                (doc(d), Effect::SetColumns { columns: EncodedColumns::encode(columns, &mut buf) })
            }
            Step::DeleteDocument { doc: d } => (doc(d), Effect::DeleteDocument),
            Step::PutInput { doc: d, input } => (*input, Effect::PutInput { document: doc(d) }),
            Step::DeleteInput { doc: d, input } => (*input, Effect::DeleteInput { document: doc(d) }),
            Step::PutOutput { doc: d, input } => (*input, Effect::PutOutput { document: doc(d) }),
            Step::DeleteOutput { doc: d, input } => (*input, Effect::DeleteOutput { document: doc(d) }),
            Step::Checkpoint { next_id } => (0, Effect::Checkpoint { next_id: *next_id }),
        };
        let _ = log.apply_len(id, effect, 30 + (n as u32 % 7) * 10);
    }
    (log.kd, log.offset)
}

/// The records of a merged segment: a checkpoint, then `steps`.
fn merged(next_id: u64, steps: Vec<Step>) -> Vec<Step> {
    std::iter::once(Step::Checkpoint { next_id }).chain(steps).collect()
}

/// Overwrites the snapshot's checksum so that it matches edited bytes.
fn fix_crc(bytes: &mut [u8]) {
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Loading the snapshot of a segment's index gives that index, field
    /// for field (documents, chains, columns, counts, byte accounting, id
    /// and sequence counters, checkpoint).
    #[test]
    fn a_snapshot_loads_the_index_it_was_taken_of(next_id in 0u64..100, steps in proptest::collection::vec(arb_step(), 0..120)) {
        let segment = seg(9);
        let (kd, len) = replay(segment, &merged(next_id, steps));
        let bytes = kd.snapshot(segment, len).expect("an index of one segment has a snapshot");
        prop_assert_eq!(&bytes[..8], &SNAPSHOT_MAGIC[..]);
        let loaded = KeyDir::from_snapshot(&bytes, segment, len).unwrap();
        prop_assert_eq!(&loaded, &kd);
        prop_assert_eq!(loaded.input_count(), kd.input_count());
        prop_assert_eq!(loaded.output_count(), kd.output_count());
    }

    /// Any single flipped bit is refused (the checksum covers everything).
    #[test]
    fn a_damaged_snapshot_is_refused(steps in proptest::collection::vec(arb_step(), 1..60), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let segment = seg(3);
        let (kd, len) = replay(segment, &merged(7, steps));
        let mut bytes = kd.snapshot(segment, len).unwrap();
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        prop_assert!(KeyDir::from_snapshot(&bytes, segment, len).is_err());
    }
}

fn two_documents() -> (KeyDir, u64) {
    replay(
        seg(2),
        &[
            Step::Checkpoint { next_id: 1 },
            Step::Create { columns: BTreeMap::new() },
            Step::Create { columns: BTreeMap::new() },
            Step::PutInput { doc: 1, input: 5 },
            Step::PutInput { doc: 1, input: 6 },
        ],
    )
}

#[test]
fn a_snapshot_names_its_segment_and_its_length() {
    let (kd, len) = two_documents();
    let bytes = kd.snapshot(seg(2), len).unwrap();
    assert_eq!(KeyDir::from_snapshot(&bytes, seg(3), len), Err(HintError::WrongSegment { expected: 3, found: 2 }));
    assert_eq!(
        KeyDir::from_snapshot(&bytes, seg(2), len + 1),
        Err(HintError::StaleLength { hinted: len, actual: len + 1 })
    );
    assert_eq!(KeyDir::from_snapshot(&bytes[..bytes.len() - 1], seg(2), len), Err(HintError::ChecksumMismatch));
    assert_eq!(KeyDir::from_snapshot(&bytes[..10], seg(2), len), Err(HintError::Truncated));
}

#[test]
fn a_sealed_segments_hint_is_not_a_snapshot() {
    let (kd, len) = two_documents();
    let mut bytes = kd.snapshot(seg(2), len).unwrap();
    bytes[..8].copy_from_slice(b"STRATHNT");
    fix_crc(&mut bytes);
    assert_eq!(KeyDir::from_snapshot(&bytes, seg(2), len), Err(HintError::BadMagic));
}

/// Layout of `two_documents`' snapshot: a 16-byte header, 60 bytes of
/// scalars, then the documents in id order: id, version (8 each), blob and
/// columns locations (12 bytes each), an empty column map (4), no chain
/// order (a location of length 0, 12, and a count of 0, 4), the input
/// count (4), and 32 bytes per input (id, value, output).
const FIRST_DOCUMENT: usize = 16 + 60;
const DOCUMENT_HEAD: usize = 8 + 8 + 12 + 12 + 4 + 12 + 4 + 4;

#[test]
fn a_chain_out_of_order_is_refused() {
    let (kd, len) = two_documents();
    let mut bytes = kd.snapshot(seg(2), len).unwrap();
    let first_input = FIRST_DOCUMENT + DOCUMENT_HEAD;
    let (a, b) = (first_input, first_input + 32);
    let first: [u8; 8] = bytes[a..a + 8].try_into().unwrap();
    let second: [u8; 8] = bytes[b..b + 8].try_into().unwrap();
    assert_eq!((u64::from_le_bytes(first), u64::from_le_bytes(second)), (5, 6), "layout as documented");
    bytes[a..a + 8].copy_from_slice(&second);
    bytes[b..b + 8].copy_from_slice(&first);
    fix_crc(&mut bytes);
    assert_eq!(
        KeyDir::from_snapshot(&bytes, seg(2), len),
        Err(HintError::Snapshot(SnapshotDefect::UnorderedChain(51)))
    );
}

#[test]
fn a_document_twice_is_refused() {
    let (kd, len) = two_documents();
    let mut bytes = kd.snapshot(seg(2), len).unwrap();
    let second = FIRST_DOCUMENT + DOCUMENT_HEAD + 2 * 32;
    assert_eq!(u64::from_le_bytes(bytes[second..second + 8].try_into().unwrap()), 101, "layout as documented");
    bytes[second..second + 8].copy_from_slice(&51u64.to_le_bytes());
    fix_crc(&mut bytes);
    assert_eq!(
        KeyDir::from_snapshot(&bytes, seg(2), len),
        Err(HintError::Snapshot(SnapshotDefect::DuplicateDocument(51)))
    );
}

#[test]
fn an_index_spanning_two_segments_has_no_snapshot() {
    let (mut kd, len) = two_documents();
    let elsewhere = Location::new(seg(3), 20, 40).unwrap();
    let _ = kd.apply(RecordMeta { seq: 100, id: 51, location: elsewhere }, Effect::SetBlob);
    assert_eq!(kd.snapshot(seg(2), len), None);
    assert!(kd.snapshot(seg(3), len).is_none());
}

/// Rewrites one u64 of a snapshot at `at`, fixing the checksum.
fn with_u64(bytes: &[u8], at: usize, value: u64) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    fix_crc(&mut bytes);
    bytes
}

/// The scalars after the 16-byte header: next seq, next id, reserved ids
/// (8 each), the checkpoint location (12), then segment bytes, live bytes
/// and records (8 each).
const NEXT_ID: usize = 16 + 8;
const SEGMENT_BYTES: usize = 16 + 24 + 12;
const LIVE_BYTES: usize = SEGMENT_BYTES + 8;
/// The blob location of the first document: its offset, then its length.
const FIRST_BLOB: usize = FIRST_DOCUMENT + 16;

/// A snapshot that is intact but inconsistent is refused, whatever its
/// checksum says: a location past the segment's end (a read there would be
/// fatal through the memory map), an id counter not above every id, byte
/// counts that do not add up, no checkpoint.
#[test]
fn an_inconsistent_snapshot_is_refused() {
    let (kd, len) = two_documents();
    let bytes = kd.snapshot(seg(2), len).unwrap();
    let load = |bytes: &[u8]| KeyDir::from_snapshot(bytes, seg(2), len);
    assert_eq!(load(&bytes).unwrap(), kd, "the unedited snapshot loads");
    let defect = |d| Err(HintError::Snapshot(d));

    assert_eq!(load(&with_u64(&bytes, FIRST_BLOB, len)), defect(SnapshotDefect::BadLocation));
    assert_eq!(load(&with_u64(&bytes, FIRST_BLOB, 3)), defect(SnapshotDefect::BadLocation), "inside the header");
    assert_eq!(
        load(&with_u64(&bytes, NEXT_ID, 101)),
        defect(SnapshotDefect::IdCounterBehind { next_id: 101, id: 101 })
    );
    assert_eq!(load(&with_u64(&bytes, SEGMENT_BYTES, len)), defect(SnapshotDefect::WrongUsage));
    assert_eq!(load(&with_u64(&bytes, LIVE_BYTES, len)), defect(SnapshotDefect::WrongUsage));
    // The checkpoint's length is the u32 after its offset.
    let mut no_checkpoint = bytes.clone();
    no_checkpoint[16 + 24 + 8..16 + 24 + 12].copy_from_slice(&0u32.to_le_bytes());
    fix_crc(&mut no_checkpoint);
    assert_eq!(load(&no_checkpoint), defect(SnapshotDefect::NoCheckpoint));
}

/// Live bytes that are within the segment but not what the documents point
/// at fail the index's own invariant check: the snapshot is refused rather
/// than becoming an index whose accounting is wrong.
#[test]
fn a_snapshot_whose_live_bytes_disagree_with_its_documents_is_refused() {
    let (kd, len) = two_documents();
    assert_eq!(kd.check_invariants(), Ok(()));
    let bytes = kd.snapshot(seg(2), len).unwrap();
    let live = kd.segments()[&seg(2)].live_bytes;
    let loaded = KeyDir::from_snapshot(&with_u64(&bytes, LIVE_BYTES, live - 1), seg(2), len);
    match loaded {
        Err(HintError::Snapshot(SnapshotDefect::Inconsistent(Violation::LiveBytes { counted, .. }))) => {
            assert_eq!(counted, live)
        }
        other => panic!("expected an inconsistent-live-bytes refusal, got {other:?}"),
    }
}
