//! Hint files: `HintBuilder` and `replay_hints`.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{
    Columns, DocumentEntry, Feed, HINT_MAGIC, HINT_VERSION, HintBuilder, HintError, Id, KeyDir, RECORD_HEADER_LEN,
    RecordSink, Replayed, SEGMENT_HEADER_LEN, SegmentId, SegmentReplay, SegmentUsage, TailPolicy, Value, encode_record,
    replay_hints,
};

/// A segment file: its header, then one record per op.
fn segment_file(segment: SegmentId, ops: &[(Id, Owned)]) -> Vec<u8> {
    let mut file = header(segment).encode().to_vec();
    for (i, (id, m)) in ops.iter().enumerate() {
        encode_record(&mut file, &salt(), i as u64 + 1, *id, &m.as_mutation());
    }
    file
}

/// Replays a whole, clean segment file into `sink`.
fn replay_segment(segment: SegmentId, file: &[u8], sink: &mut impl RecordSink) {
    let mut replay = SegmentReplay::new(segment, salt());
    let feed = replay.feed(sink, &file[SEGMENT_HEADER_LEN..]);
    assert!(matches!(feed, Feed::NeedMore { .. }), "{feed:?}");
    let replayed = replay.finish(file.len() as u64, None, TailPolicy::Reject);
    assert_eq!(replayed, Ok(Replayed::Clean { len: file.len() as u64 }));
}

/// The hint file a segment replay builds.
fn hint_of(segment: SegmentId, file: &[u8]) -> Vec<u8> {
    let mut builder = HintBuilder::new(segment);
    replay_segment(segment, file, &mut builder);
    builder.finish(file.len() as u64)
}

/// Everything observable about a key directory, comparable.
#[derive(Debug, PartialEq)]
struct State {
    next_id: Id,
    reserved_ids: Id,
    next_seq: u64,
    documents: BTreeMap<Id, DocumentEntry>,
    counts: (usize, u64, u64),
    segments: BTreeMap<SegmentId, SegmentUsage>,
}

impl State {
    fn of(kd: &KeyDir) -> State {
        State {
            next_id: kd.next_id(),
            reserved_ids: kd.reserved_ids(),
            next_seq: kd.next_seq(),
            documents: kd.document_ids().map(|id| (id, kd.document(id).unwrap().clone())).collect(),
            counts: (kd.document_count(), kd.input_count(), kd.output_count()),
            segments: kd.segments().clone(),
        }
    }
}

/// A record of every kind, about two documents and their inputs.
/// Durability marks are garbage from the start, but replay and hints
/// count them like any record.
fn sample_ops() -> Vec<(Id, Owned)> {
    vec![
        (0, Owned::ReserveIds { below: 1025 }),
        (1, Owned::CreateDocument { columns: columns(&[("name", "Example")]), blob: b"<h1>Hi</h1>".to_vec() }),
        (0, Owned::Durable { upto: 123 }),
        (2, Owned::CreateDocument { columns: Columns::new(), blob: b"".to_vec() }),
        (3, Owned::PutInput { document: 1, value: Value::Int(7) }),
        (4, Owned::PutInput { document: 2, value: Value::Str("x".to_owned()) }),
        (3, Owned::PutOutput { document: 1, value: Value::Double(0.5) }),
        (4, Owned::PutOutput { document: 2, value: Value::IntList(vec![1]) }),
        (1, Owned::SetBlob { blob: b"<h1>Hello</h1>".to_vec() }),
        (1, Owned::SetColumns { columns: columns(&[("name", "Renamed"), ("v", "2")]) }),
        (4, Owned::DeleteOutput { document: 2 }),
        (4, Owned::DeleteInput { document: 2 }),
        (2, Owned::DeleteDocument),
        (0, Owned::Checkpoint { covers_from: seg(1), next_id: 40 }),
    ]
}

/// One parsed hint entry: kind, seq, id, offset, len, extra.
type Entry = (u8, u64, u64, u64, u32, Vec<u8>);

/// Parses a hint file by its documented layout.
fn entries(hint: &[u8]) -> Vec<Entry> {
    let body = &hint[16..hint.len() - 20];
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let mut entries = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let extra_len = u32_at(body, at + 29) as usize;
        let extra = body[at + 33..at + 33 + extra_len].to_vec();
        entries.push((
            body[at],
            u64_at(body, at + 1),
            u64_at(body, at + 9),
            u64_at(body, at + 17),
            u32_at(body, at + 25),
            extra,
        ));
        at += 33 + extra_len;
    }
    assert_eq!(at, body.len());
    entries
}

#[test]
fn a_hint_replays_to_the_same_index_as_its_segment() {
    let segment = seg(3);
    let file = segment_file(segment, &sample_ops());
    let mut scanned = KeyDir::new();
    replay_segment(segment, &file, &mut scanned);
    let mut hinted = KeyDir::new();
    let hint = hint_of(segment, &file);
    assert_eq!(replay_hints(&hint, segment, file.len() as u64, &mut hinted), Ok(sample_ops().len() as u64));
    assert_eq!(State::of(&hinted), State::of(&scanned));
    // The sample left document 1 with its input and output.
    assert_eq!(State::of(&hinted).counts, (1, 1, 1));
    assert_eq!(hinted.input(1, 3).unwrap().id, 3);
    assert!(hinted.output(1, 3).is_ok());
}

#[test]
fn hint_entries_follow_the_documented_layout() {
    let segment = seg(3);
    let ops = sample_ops();
    let file = segment_file(segment, &ops);
    let hint = hint_of(segment, &file);

    assert_eq!(hint[0..8], HINT_MAGIC);
    assert_eq!(hint[8..10], HINT_VERSION.to_le_bytes());
    assert_eq!(hint[8..10], [4, 0]);
    assert_eq!(hint[10..12], [0, 0]);
    assert_eq!(hint[12..16], segment.get().to_le_bytes());
    let trailer = &hint[hint.len() - 20..];
    assert_eq!(trailer[0..8], (file.len() as u64).to_le_bytes());
    assert_eq!(trailer[8..16], (ops.len() as u64).to_le_bytes());
    assert_eq!(trailer[16..20], crc32fast::hash(&hint[..hint.len() - 4]).to_le_bytes());

    let entries = entries(&hint);
    assert_eq!(entries.len(), ops.len());
    let mut offset = SEGMENT_HEADER_LEN as u64;
    for (i, ((kind, seq, id, at, len, extra), (op_id, m))) in entries.into_iter().zip(&ops).enumerate() {
        let record = record_bytes(i as u64 + 1, *op_id, m);
        assert_eq!((kind, seq, id), (m.as_mutation().kind() as u8, i as u64 + 1, *op_id), "entry {i}");
        assert_eq!((at, len as usize), (offset, record.len()), "entry {i}");
        offset += record.len() as u64;
        let payload = &record[RECORD_HEADER_LEN..];
        let expected: Vec<u8> = match m {
            // The column map, in the same bytes as in the record.
            Owned::CreateDocument { blob, .. } => payload[..payload.len() - blob.len()].to_vec(),
            Owned::SetColumns { .. } => payload.to_vec(),
            // The owning document of an input or output record.
            Owned::PutInput { document, .. }
            | Owned::DeleteInput { document }
            | Owned::PutOutput { document, .. }
            | Owned::DeleteOutput { document } => document.to_le_bytes().to_vec(),
            Owned::Checkpoint { next_id, .. } => next_id.to_le_bytes().to_vec(),
            Owned::ReserveIds { below } => below.to_le_bytes().to_vec(),
            Owned::SetBlob { .. } | Owned::DeleteDocument | Owned::Durable { .. } => Vec::new(),
        };
        assert_eq!(extra, expected, "entry {i}: {m:?}");
    }
}

#[test]
fn sample_hint_file() {
    let segment = seg(1);
    let ops = [
        (1, Owned::CreateDocument { columns: columns(&[("k", "v")]), blob: b"doc".to_vec() }),
        (2, Owned::PutInput { document: 1, value: Value::Int(7) }),
        (2, Owned::PutOutput { document: 1, value: Value::Str("out".to_owned()) }),
        (2, Owned::DeleteOutput { document: 1 }),
        (2, Owned::DeleteInput { document: 1 }),
    ];
    let file = segment_file(segment, &ops);
    insta::assert_snapshot!("sample_hint", hex_dump(&hint_of(segment, &file)));
}

/// Rewrites a hint's checksum after an edit.
fn fix_hint_crc(hint: &mut [u8]) {
    let n = hint.len();
    let crc = crc32fast::hash(&hint[..n - 4]);
    hint[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn sample_hint() -> (Vec<u8>, u64) {
    let file = segment_file(seg(3), &sample_ops());
    (hint_of(seg(3), &file), file.len() as u64)
}

#[test]
fn a_hint_of_another_version_is_rejected() {
    let (mut hint, len) = sample_hint();
    for version in [1, 2, HINT_VERSION + 1] {
        hint[8..10].copy_from_slice(&version.to_le_bytes());
        fix_hint_crc(&mut hint);
        let mut kd = KeyDir::new();
        assert_eq!(replay_hints(&hint, seg(3), len, &mut kd), Err(HintError::UnsupportedVersion(version)));
        assert_eq!(kd.document_count(), 0);
    }
}

#[test]
fn a_hint_for_another_segment_or_length_is_rejected() {
    let (hint, len) = sample_hint();
    let mut kd = KeyDir::new();
    assert_eq!(replay_hints(&hint, seg(4), len, &mut kd), Err(HintError::WrongSegment { expected: 4, found: 3 }));
    assert_eq!(
        replay_hints(&hint, seg(3), len + 1, &mut kd),
        Err(HintError::StaleLength { hinted: len, actual: len + 1 })
    );
    assert_eq!(State::of(&kd), State::of(&KeyDir::new()));
}

#[test]
fn a_damaged_or_truncated_hint_is_rejected() {
    let (hint, len) = sample_hint();
    let mut kd = KeyDir::new();
    let mut damaged = hint.clone();
    damaged[40] ^= 1;
    assert_eq!(replay_hints(&damaged, seg(3), len, &mut kd), Err(HintError::ChecksumMismatch));
    let mut bad_magic = hint.clone();
    bad_magic[0] = b'X';
    fix_hint_crc(&mut bad_magic);
    assert_eq!(replay_hints(&bad_magic, seg(3), len, &mut kd), Err(HintError::BadMagic));
    assert_eq!(replay_hints(&hint[..35], seg(3), len, &mut kd), Err(HintError::Truncated));
    assert_eq!(State::of(&kd), State::of(&KeyDir::new()));
}

/// A hint whose last entry is malformed applies none of its entries, not
/// even the good ones before it.
#[test]
fn a_hint_with_a_malformed_entry_applies_nothing() {
    let segment = seg(3);
    let file = segment_file(segment, &sample_ops());
    let mut builder = HintBuilder::new(segment);
    replay_segment(segment, &file, &mut builder);
    let hint = builder.finish(file.len() as u64);
    let count = sample_ops().len() as u64;
    // Drop the last byte of the last entry's extra (the checkpoint's id
    // counter), fixing its length, the entry count and the checksum.
    let mut cut = hint[..hint.len() - 21].to_vec();
    let last = entries(&hint).len() - 1;
    let last_start = 16 + entries(&hint)[..last].iter().map(|e| 33 + e.5.len()).sum::<usize>();
    cut[last_start + 29..last_start + 33].copy_from_slice(&7u32.to_le_bytes());
    cut.extend_from_slice(&(file.len() as u64).to_le_bytes());
    cut.extend_from_slice(&count.to_le_bytes());
    cut.extend_from_slice(&[0; 4]);
    fix_hint_crc(&mut cut);
    let mut kd = KeyDir::new();
    assert!(matches!(replay_hints(&cut, segment, file.len() as u64, &mut kd), Err(HintError::Entry(_))));
    assert_eq!(State::of(&kd), State::of(&KeyDir::new()));
}

#[test]
fn an_input_entry_without_its_document_id_is_malformed() {
    let segment = seg(1);
    let ops = [(2, Owned::DeleteInput { document: 1 })];
    let file = segment_file(segment, &ops);
    let hint = hint_of(segment, &file);
    // One entry: its extra is the 8-byte document id. Claim 4 bytes of it.
    let mut cut = hint[..16 + 33 + 4].to_vec();
    cut[16 + 29..16 + 33].copy_from_slice(&4u32.to_le_bytes());
    cut.extend_from_slice(&hint[hint.len() - 20..]);
    fix_hint_crc(&mut cut);
    let mut kd = KeyDir::new();
    assert!(matches!(replay_hints(&cut, segment, file.len() as u64, &mut kd), Err(HintError::Entry(_))));
}

proptest! {
    /// Whatever the records, a hint replays to the index a scan gives.
    #[test]
    fn any_segment_replays_the_same_from_its_hint(ops in vec((1u64..=6, arb_mutation_with(1u64..=6)), 0..40)) {
        let segment = seg(2);
        let file = segment_file(segment, &ops);
        let mut scanned = KeyDir::new();
        replay_segment(segment, &file, &mut scanned);
        let mut hinted = KeyDir::new();
        let hint = hint_of(segment, &file);
        prop_assert_eq!(replay_hints(&hint, segment, file.len() as u64, &mut hinted), Ok(ops.len() as u64));
        prop_assert_eq!(State::of(&hinted), State::of(&scanned));
    }
}

/// A hint naming bytes the segment file does not have is refused, whatever
/// its checksum says: reading there through the memory map would be fatal.
#[test]
fn a_hint_naming_bytes_outside_its_segment_is_refused() {
    use stratum_core::{Effect, Location, RecordMeta};
    let segment = seg(4);
    let hint_for = |offset: u64, len: u32, segment_len: u64| {
        let mut builder = HintBuilder::new(segment);
        let location = Location::new(segment, offset, len).unwrap();
        builder.add(RecordMeta { seq: 1, id: 1, location }, &Effect::SetBlob);
        builder.finish(segment_len)
    };
    let replay = |bytes: &[u8], segment_len| replay_hints(bytes, segment, segment_len, &mut KeyDir::new());
    assert_eq!(SEGMENT_HEADER_LEN, 36);
    assert_eq!(replay(&hint_for(36, 84, 120), 120), Ok(1), "a record that ends at the end of the file");
    assert_eq!(replay(&hint_for(36, 85, 120), 120), Err(HintError::OutOfRange { offset: 36, len: 85 }));
    assert_eq!(replay(&hint_for(4, 30, 120), 120), Err(HintError::OutOfRange { offset: 4, len: 30 }));
    // Inside the segment header (20 bytes long in format 2).
    assert_eq!(replay(&hint_for(20, 30, 120), 120), Err(HintError::OutOfRange { offset: 20, len: 30 }));
    assert_eq!(replay(&hint_for(35, 30, 120), 120), Err(HintError::OutOfRange { offset: 35, len: 30 }));
    assert_eq!(replay(&hint_for(40, 10, 120), 120), Err(HintError::OutOfRange { offset: 40, len: 10 }));
}
