//! Recovery: replaying segment images with `SegmentReplay`.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{
    Applied, Columns, CorruptSegment, Corruption, DecodeError, DocumentEntry, Feed, Id, InputEntry, KeyDir, Location,
    RECORD_HEADER_LEN, RecordKind, RecordMeta, Replayed, SEGMENT_HEADER_LEN, SegmentId, SegmentReplay, SegmentUsage,
    TailPolicy, Value, decode_record, encode_record,
};

/// A segment file in memory and where each of its records starts.
struct Image {
    segment: SegmentId,
    bytes: Vec<u8>,
    /// (start offset, seq, id, mutation) of each record.
    records: Vec<(usize, u64, Id, Owned)>,
}

impl Image {
    fn new(segment: SegmentId, first_seq: u64, ops: &[(Id, Owned)]) -> Image {
        let mut bytes = header(segment).encode().to_vec();
        let mut records = Vec::new();
        for (i, (id, m)) in ops.iter().enumerate() {
            let seq = first_seq + i as u64;
            records.push((bytes.len(), seq, *id, m.clone()));
            encode_record(&mut bytes, &salt(), seq, *id, &m.as_mutation());
        }
        Image { segment, bytes, records }
    }

    fn start(&self, record: usize) -> usize {
        self.records[record].0
    }

    fn end(&self, record: usize) -> usize {
        self.records.get(record + 1).map_or(self.bytes.len(), |r| r.0)
    }

    /// Applies the first `n` records straight to `kd`, as live writes do.
    fn apply_directly(&self, kd: &mut KeyDir, n: usize) -> Vec<Applied> {
        let mut scratch = Vec::new();
        (0..n)
            .map(|i| {
                let (offset, seq, id, ref m) = self.records[i];
                let len = (self.end(i) - offset) as u32;
                let location = Location::new(self.segment, offset as u64, len).unwrap();
                kd.apply(RecordMeta { seq, id, location }, m.as_mutation().effect(&mut scratch))
            })
            .collect()
    }

    fn direct_state(&self, n: usize) -> State {
        let mut kd = KeyDir::new();
        let _ = self.apply_directly(&mut kd, n);
        State::of(&kd)
    }
}

/// Everything observable about a key directory, comparable.
#[derive(Debug, PartialEq)]
struct State {
    next_id: Id,
    next_seq: u64,
    documents: BTreeMap<Id, DocumentEntry>,
    /// (document, input) -> what `KeyDir::input` finds.
    inputs: BTreeMap<(Id, Id), InputEntry>,
    counts: (usize, u64, u64),
    segments: BTreeMap<SegmentId, SegmentUsage>,
}

impl State {
    fn of(kd: &KeyDir) -> State {
        let documents: BTreeMap<Id, DocumentEntry> =
            kd.document_ids().map(|id| (id, kd.document(id).unwrap().clone())).collect();
        let inputs = documents
            .iter()
            .flat_map(|(&doc, entry)| entry.inputs.iter().map(move |input| (doc, input.id)))
            .map(|(doc, input)| ((doc, input), *kd.input(doc, input).unwrap()))
            .collect();
        State {
            next_id: kd.next_id(),
            next_seq: kd.next_seq(),
            documents,
            inputs,
            counts: (kd.document_count(), kd.input_count(), kd.output_count()),
            segments: kd.segments().clone(),
        }
    }
}

/// How a replay ended, and what it left behind.
#[derive(Debug, PartialEq)]
struct Outcome {
    state: State,
    result: Result<Replayed, CorruptSegment>,
    valid_len: u64,
    records: u64,
    ignored: u64,
}

/// Replays `file` (header included) into `kd` the way a reader does: it
/// reads `chunks` bytes at a time (cycling through the sizes), keeps the
/// unconsumed remainder of its buffer and appends the next read to it.
fn replay_into(kd: &mut KeyDir, segment: SegmentId, file: &[u8], chunks: &[usize], policy: TailPolicy) -> Outcome {
    let mut replay = SegmentReplay::new(segment, salt());
    let mut pos = SEGMENT_HEADER_LEN;
    let mut buf: Vec<u8> = Vec::new();
    let mut sizes = chunks.iter().copied().cycle();
    let stop = loop {
        match replay.feed(kd, &buf) {
            Feed::NeedMore { consumed, needed } => {
                assert!(needed > buf.len() - consumed, "NeedMore asks for {needed} with {} left", buf.len() - consumed);
                buf.drain(..consumed);
                // The remainder starts where the valid prefix ends.
                assert_eq!(replay.valid_len() as usize + buf.len(), pos);
                if pos == file.len() {
                    break None;
                }
                let n = sizes.next().unwrap().max(1).min(file.len() - pos);
                buf.extend_from_slice(&file[pos..pos + n]);
                pos += n;
            }
            Feed::Stopped { consumed, corruption } => {
                assert!(consumed <= buf.len());
                break Some(corruption);
            }
        }
    };
    let (valid_len, records, ignored) = (replay.valid_len(), replay.records(), replay.ignored());
    let result = replay.finish(file.len() as u64, stop, policy);
    Outcome { state: State::of(kd), result, valid_len, records, ignored }
}

fn replay_chunked(segment: SegmentId, file: &[u8], chunks: &[usize], policy: TailPolicy) -> Outcome {
    replay_into(&mut KeyDir::new(), segment, file, chunks, policy)
}

/// Feeds the whole file after the header in one call.
fn replay_at_once(segment: SegmentId, file: &[u8], policy: TailPolicy) -> Outcome {
    let mut kd = KeyDir::new();
    let mut replay = SegmentReplay::new(segment, salt());
    let stop = match replay.feed(&mut kd, &file[SEGMENT_HEADER_LEN..]) {
        Feed::NeedMore { .. } => None,
        Feed::Stopped { corruption, .. } => Some(corruption),
    };
    let (valid_len, records, ignored) = (replay.valid_len(), replay.records(), replay.ignored());
    let result = replay.finish(file.len() as u64, stop, policy);
    Outcome { state: State::of(&kd), result, valid_len, records, ignored }
}

/// A plausible stream of mutations over a handful of ids, so that most
/// records refer to something that exists.
fn arb_ops(max: usize) -> impl Strategy<Value = Vec<(Id, Owned)>> {
    vec((1u64..=6, arb_mutation_with(1u64..=6)), 1..max)
}

fn create(columns: &[(&str, &str)], blob: &[u8]) -> Owned {
    let columns: Columns = columns.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
    Owned::CreateDocument { columns, blob: blob.to_vec() }
}

/// A small fixed segment: two documents, inputs, outputs, a delete.
fn sample_ops() -> Vec<(Id, Owned)> {
    vec![
        (1, create(&[("name", "Example")], b"<h1>Hi</h1>")),
        (2, Owned::PutInput { document: 1, value: Value::IntList(vec![1, 2, 3]) }),
        (2, Owned::PutOutput { document: 1, value: Value::Str("six".to_owned()) }),
        (3, create(&[], b"")),
        (4, Owned::PutInput { document: 1, value: Value::Double(0.5) }),
        (1, Owned::SetBlob { blob: b"<h1>Hello</h1>".to_vec() }),
        (3, Owned::DeleteDocument),
        (4, Owned::PutOutput { document: 1, value: Value::Map(BTreeMap::from([("k".to_owned(), "v".to_owned())])) }),
    ]
}

fn sample_image() -> Image {
    Image::new(seg(3), 1, &sample_ops())
}

proptest! {
    #[test]
    fn clean_segment_replays_to_the_same_state_as_applying_directly(ops in arb_ops(40)) {
        let image = Image::new(seg(2), 1, &ops);
        let mut direct = KeyDir::new();
        let applied = image.apply_directly(&mut direct, ops.len());
        let outcome = replay_at_once(image.segment, &image.bytes, TailPolicy::Reject);
        prop_assert_eq!(&outcome.state, &State::of(&direct));
        prop_assert_eq!(outcome.result, Ok(Replayed::Clean { len: image.bytes.len() as u64 }));
        prop_assert_eq!(outcome.valid_len, image.bytes.len() as u64);
        prop_assert_eq!(outcome.records, ops.len() as u64);
        prop_assert_eq!(outcome.ignored, applied.iter().filter(|&&a| a == Applied::Ignored).count() as u64);
    }

    #[test]
    fn feeding_in_chunks_gives_the_same_result_as_feeding_at_once(
        ops in arb_ops(20),
        chunks in vec(1usize..64, 1..8),
        damage in prop_oneof![
            Just(None),
            any::<prop::sample::Index>().prop_map(|i| Some((i, 0u8))),
            (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, m)| Some((i, m))),
        ],
        zero_tail in prop_oneof![Just(0usize), 1usize..60],
        policy in prop_oneof![Just(TailPolicy::Truncate), Just(TailPolicy::Reject)],
    ) {
        let image = Image::new(seg(1), 1, &ops);
        let mut file = image.bytes.clone();
        match damage {
            None => {}
            // Mask 0: cut the file somewhere after the header.
            Some((at, 0)) => file.truncate(SEGMENT_HEADER_LEN + at.index(file.len() - SEGMENT_HEADER_LEN + 1)),
            Some((at, mask)) => {
                let i = SEGMENT_HEADER_LEN + at.index(file.len() - SEGMENT_HEADER_LEN);
                file[i] ^= mask;
            }
        }
        file.resize(file.len() + zero_tail, 0);
        let at_once = replay_at_once(image.segment, &file, policy);
        let chunked = replay_chunked(image.segment, &file, &chunks, policy);
        prop_assert_eq!(&chunked, &at_once);
        let byte_by_byte = replay_chunked(image.segment, &file, &[1], policy);
        prop_assert_eq!(&byte_by_byte, &at_once);
    }

    #[test]
    fn a_torn_last_record_is_cut_at_the_end_of_the_previous_record(ops in arb_ops(8)) {
        let image = Image::new(seg(1), 1, &ops);
        let last = ops.len() - 1;
        let (start, end) = (image.start(last), image.end(last));
        let expected_state = image.direct_state(last);
        for cut in start + 1..end {
            let outcome = replay_at_once(image.segment, &image.bytes[..cut], TailPolicy::Truncate);
            let Ok(Replayed::TornTail { valid_len, dropped, reason }) = outcome.result else {
                panic!("cut at {cut}: {:?}", outcome.result)
            };
            prop_assert_eq!((valid_len, dropped), (start as u64, (cut - start) as u64), "cut at {}", cut);
            prop_assert!(matches!(reason, Corruption::Truncated { .. }), "cut at {}: {:?}", cut, reason);
            prop_assert_eq!(&outcome.state, &expected_state, "cut at {}", cut);
            prop_assert_eq!(outcome.records, last as u64);
        }
    }

    #[test]
    fn a_torn_last_record_in_a_sealed_segment_is_corruption_at_its_start(ops in arb_ops(8)) {
        let image = Image::new(seg(1), 1, &ops);
        let last = ops.len() - 1;
        let (start, end) = (image.start(last), image.end(last));
        for cut in start + 1..end {
            let outcome = replay_at_once(image.segment, &image.bytes[..cut], TailPolicy::Reject);
            let Err(CorruptSegment { offset, reason }) = outcome.result else {
                panic!("cut at {cut}: {:?}", outcome.result)
            };
            prop_assert_eq!(offset, start as u64, "cut at {}", cut);
            prop_assert!(matches!(reason, Corruption::Truncated { .. }), "cut at {}: {:?}", cut, reason);
        }
    }

    #[test]
    fn a_bit_flip_in_a_middle_record_stops_the_replay_there(ops in arb_ops(8), pick in any::<prop::sample::Index>()) {
        prop_assume!(ops.len() >= 3);
        let image = Image::new(seg(1), 1, &ops);
        let mid = 1 + pick.index(ops.len() - 2);
        let (start, end) = (image.start(mid), image.end(mid));
        let expected_state = image.direct_state(mid);
        for bit in start * 8..end * 8 {
            let mut file = image.bytes.clone();
            file[bit / 8] ^= 1 << (bit % 8);
            let outcome = replay_at_once(image.segment, &file, TailPolicy::Truncate);
            let Ok(Replayed::TornTail { valid_len, dropped, .. }) = outcome.result else {
                panic!("bit {bit}: {:?}", outcome.result)
            };
            prop_assert_eq!((valid_len, dropped), (start as u64, (file.len() - start) as u64), "bit {}", bit);
            prop_assert_eq!(&outcome.state, &expected_state, "bit {}", bit);
            let rejected = replay_at_once(image.segment, &file, TailPolicy::Reject);
            prop_assert!(
                matches!(rejected.result, Err(CorruptSegment { offset, .. }) if offset == start as u64),
                "bit {}: {:?}", bit, rejected.result
            );
        }
    }
}

#[test]
fn sample_segment_replays_cleanly() {
    let image = sample_image();
    let outcome = replay_at_once(image.segment, &image.bytes, TailPolicy::Reject);
    assert_eq!(outcome.result, Ok(Replayed::Clean { len: image.bytes.len() as u64 }));
    assert_eq!(outcome.state, image.direct_state(image.records.len()));
    assert_eq!(outcome.state.counts, (1, 2, 2));
    let chain: Vec<Id> = outcome.state.documents[&1].inputs.iter().map(|input| input.id).collect();
    assert_eq!(chain, [2, 4]);
    assert_eq!(outcome.state.inputs.keys().copied().collect::<Vec<_>>(), [(1, 2), (1, 4)]);
}

#[test]
fn a_segment_holding_only_its_header_is_clean() {
    let file = header(seg(1)).encode();
    let outcome = replay_at_once(seg(1), &file, TailPolicy::Reject);
    assert_eq!(outcome.result, Ok(Replayed::Clean { len: SEGMENT_HEADER_LEN as u64 }));
    assert_eq!((outcome.records, outcome.valid_len), (0, SEGMENT_HEADER_LEN as u64));
    assert_eq!(outcome.state, State::of(&KeyDir::new()));
}

#[test]
fn a_segment_cut_between_records_is_clean() {
    let image = sample_image();
    for n in 0..=image.records.len() {
        let cut = if n == image.records.len() { image.bytes.len() } else { image.start(n) };
        let outcome = replay_at_once(image.segment, &image.bytes[..cut], TailPolicy::Reject);
        assert_eq!(outcome.result, Ok(Replayed::Clean { len: cut as u64 }), "after {n} records");
        assert_eq!(outcome.state, image.direct_state(n), "after {n} records");
    }
}

#[test]
fn a_torn_last_record_of_the_sample_is_cut_at_every_byte() {
    let image = sample_image();
    let last = image.records.len() - 1;
    let start = image.start(last);
    for cut in start + 1..image.bytes.len() {
        for chunks in [&[usize::MAX][..], &[1], &[7, 3]] {
            let outcome = replay_chunked(image.segment, &image.bytes[..cut], chunks, TailPolicy::Truncate);
            assert!(
                matches!(
                    outcome.result,
                    Ok(Replayed::TornTail { valid_len, dropped, reason: Corruption::Truncated { .. } })
                        if valid_len == start as u64 && dropped == (cut - start) as u64
                ),
                "cut at {cut}: {:?}",
                outcome.result
            );
            assert_eq!(outcome.state, image.direct_state(last));
        }
    }
}

#[test]
fn a_zero_filled_tail_is_a_torn_tail_with_a_zero_header() {
    let image = sample_image();
    let clean = image.direct_state(image.records.len());
    let len = image.bytes.len() as u64;
    for zeros in [RECORD_HEADER_LEN, RECORD_HEADER_LEN + 1, 100, 4096] {
        let mut file = image.bytes.clone();
        file.resize(file.len() + zeros, 0);
        let outcome = replay_at_once(image.segment, &file, TailPolicy::Truncate);
        assert_eq!(
            outcome.result,
            Ok(Replayed::TornTail { valid_len: len, dropped: zeros as u64, reason: Corruption::ZeroHeader }),
            "{zeros} zeros"
        );
        assert_eq!(outcome.state, clean);
        let outcome = replay_at_once(image.segment, &file, TailPolicy::Reject);
        assert_eq!(outcome.result, Err(CorruptSegment { offset: len, reason: Corruption::ZeroHeader }));
    }
}

#[test]
fn a_zero_tail_shorter_than_a_record_header_is_a_torn_tail() {
    let image = sample_image();
    let len = image.bytes.len() as u64;
    for zeros in 1..RECORD_HEADER_LEN {
        let mut file = image.bytes.clone();
        file.resize(file.len() + zeros, 0);
        let outcome = replay_at_once(image.segment, &file, TailPolicy::Truncate);
        assert!(
            matches!(
                outcome.result,
                Ok(Replayed::TornTail { valid_len, dropped, reason: Corruption::Truncated { .. } })
                    if valid_len == len && dropped == zeros as u64
            ),
            "{zeros} zeros: {:?}",
            outcome.result
        );
    }
}

#[test]
fn a_zero_filled_segment_after_its_header_is_a_torn_tail_at_the_header() {
    let mut file = header(seg(1)).encode().to_vec();
    file.resize(1 << 12, 0);
    let outcome = replay_at_once(seg(1), &file, TailPolicy::Truncate);
    assert_eq!(
        outcome.result,
        Ok(Replayed::TornTail {
            valid_len: SEGMENT_HEADER_LEN as u64,
            dropped: (file.len() - SEGMENT_HEADER_LEN) as u64,
            reason: Corruption::ZeroHeader
        })
    );
}

#[test]
fn a_corrupt_middle_record_hides_the_valid_records_after_it() {
    let image = sample_image();
    let mid = 3;
    let mut file = image.bytes.clone();
    file[image.start(mid) + RECORD_HEADER_LEN - 1] ^= 0x80; // high byte of the id
    let outcome = replay_at_once(image.segment, &file, TailPolicy::Truncate);
    let Ok(Replayed::TornTail { valid_len, reason, .. }) = outcome.result else { panic!("{:?}", outcome.result) };
    assert_eq!(valid_len, image.start(mid) as u64);
    assert!(matches!(reason, Corruption::ChecksumMismatch { .. }), "{reason:?}");
    assert_eq!(outcome.records, mid as u64);
    assert_eq!(outcome.state, image.direct_state(mid));
}

#[test]
fn a_checksummed_record_with_a_malformed_payload_stops_the_replay() {
    let image = sample_image();
    let mut file = image.bytes.clone();
    // A DeleteInput carrying more than its document's id: the checksum is
    // right, the body is not.
    let start = file.len();
    let mut payload = 1u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&[1, 2]);
    encode_record(&mut file, &salt(), 100, 2, &Owned::SetBlob { blob: payload }.as_mutation());
    file[start + 8] = RecordKind::DeleteInput as u8;
    fix_record_crc(&mut file[start..]);
    let outcome = replay_at_once(image.segment, &file, TailPolicy::Truncate);
    assert_eq!(
        outcome.result,
        Ok(Replayed::TornTail {
            valid_len: start as u64,
            dropped: (RECORD_HEADER_LEN + 10) as u64,
            reason: Corruption::Payload(DecodeError::TrailingBytes(2)),
        })
    );
    assert_eq!(outcome.state, image.direct_state(image.records.len()));
}

#[test]
fn replayed_locations_point_at_the_records_in_the_file() {
    let image = sample_image();
    let outcome = replay_at_once(image.segment, &image.bytes, TailPolicy::Reject);
    let read = |at: Location| {
        assert_eq!(at.segment(), image.segment);
        let bytes = &image.bytes[at.offset() as usize..][..at.len() as usize];
        let record = decode_record(bytes, &salt()).unwrap();
        (record.kind, record.seq, record.id)
    };
    let doc = &outcome.state.documents[&1];
    assert_eq!(read(doc.columns_at), (RecordKind::CreateDocument, 1, 1));
    assert_eq!(read(doc.blob), (RecordKind::SetBlob, 6, 1));
    let input = outcome.state.inputs[&(1, 4)];
    assert_eq!(read(input.value), (RecordKind::PutInput, 5, 4));
    assert_eq!(read(input.output.unwrap()), (RecordKind::PutOutput, 8, 4));
    assert_eq!(doc.columns_at.offset() as usize, SEGMENT_HEADER_LEN);
}

#[test]
fn records_about_missing_things_are_counted_as_ignored() {
    let ops = vec![
        (1, Owned::SetBlob { blob: vec![] }),
        (2, create(&[], b"")),
        // Document 2 exists, but has no input 3.
        (3, Owned::PutOutput { document: 2, value: Value::Int(1) }),
        (2, Owned::DeleteDocument),
        (2, Owned::DeleteDocument),
    ];
    let image = Image::new(seg(1), 1, &ops);
    let outcome = replay_at_once(image.segment, &image.bytes, TailPolicy::Reject);
    assert_eq!(outcome.result, Ok(Replayed::Clean { len: image.bytes.len() as u64 }));
    assert_eq!((outcome.records, outcome.ignored), (5, 3));
}

#[test]
fn replay_starts_right_after_the_segment_header() {
    let replay = SegmentReplay::new(seg(4), salt());
    assert_eq!((replay.valid_len(), replay.records(), replay.ignored()), (SEGMENT_HEADER_LEN as u64, 0, 0));
}

#[test]
fn feed_asks_for_the_rest_of_a_partial_header() {
    let mut kd = KeyDir::new();
    let mut replay = SegmentReplay::new(seg(1), salt());
    let image = sample_image();
    let body = &image.bytes[SEGMENT_HEADER_LEN..];
    assert_eq!(replay.feed(&mut kd, &body[..10]), Feed::NeedMore { consumed: 0, needed: RECORD_HEADER_LEN });
    assert_eq!(replay.feed(&mut kd, &[]), Feed::NeedMore { consumed: 0, needed: RECORD_HEADER_LEN });
    assert_eq!(replay.records(), 0);
}

#[test]
fn feed_consumes_whole_records_and_asks_for_the_rest_of_the_next() {
    let mut kd = KeyDir::new();
    let mut replay = SegmentReplay::new(seg(3), salt());
    let image = sample_image();
    let first = image.end(0) - image.start(0);
    let second = image.end(1) - image.start(1);
    let body = &image.bytes[SEGMENT_HEADER_LEN..];
    // The first record plus the next one's header and part of its payload.
    let buf = &body[..first + RECORD_HEADER_LEN + 1];
    assert_eq!(replay.feed(&mut kd, buf), Feed::NeedMore { consumed: first, needed: second });
    assert_eq!(replay.valid_len(), (SEGMENT_HEADER_LEN + first) as u64);
    assert_eq!(replay.records(), 1);
    assert!(kd.document(1).is_ok());
    // The reader keeps the remainder and appends the rest.
    let buf = &body[first..first + second];
    assert_eq!(replay.feed(&mut kd, buf), Feed::NeedMore { consumed: second, needed: RECORD_HEADER_LEN });
    assert_eq!(replay.records(), 2);
}

#[test]
fn feed_stops_at_bytes_that_are_not_a_record() {
    let mut kd = KeyDir::new();
    let mut replay = SegmentReplay::new(seg(3), salt());
    let image = sample_image();
    let first = image.end(0) - image.start(0);
    let mut buf = image.bytes[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + first].to_vec();
    buf.extend_from_slice(&[0xff; 40]);
    assert_eq!(
        replay.feed(&mut kd, &buf),
        Feed::Stopped { consumed: first, corruption: Corruption::UnknownKind(0xff) }
    );
    assert_eq!(replay.valid_len(), (SEGMENT_HEADER_LEN + first) as u64);
}

#[test]
fn replaying_a_later_segment_applies_over_an_earlier_one() {
    let first = Image::new(seg(1), 1, &sample_ops()[..3]);
    let second = Image::new(
        seg(2),
        4,
        &[(1, Owned::DeleteDocument), (5, create(&[("v", "2")], b"x")), (2, Owned::DeleteOutput { document: 1 })],
    );
    let mut kd = KeyDir::new();
    let one = replay_into(&mut kd, first.segment, &first.bytes, &[usize::MAX], TailPolicy::Reject);
    assert_eq!(one.result, Ok(Replayed::Clean { len: first.bytes.len() as u64 }));
    let two = replay_into(&mut kd, second.segment, &second.bytes, &[5], TailPolicy::Truncate);
    assert_eq!(two.result, Ok(Replayed::Clean { len: second.bytes.len() as u64 }));
    // Deleting document 1 in segment 2 freed everything it had in segment 1.
    let usage = two.state.segments[&seg(1)];
    assert_eq!((usage.live_bytes, usage.total_bytes), (0, (first.bytes.len() - SEGMENT_HEADER_LEN) as u64));
    assert_eq!(two.state.documents.keys().copied().collect::<Vec<_>>(), [5]);
    assert_eq!((two.state.next_id, two.state.next_seq), (6, 7));
    // The output delete named an input gone with its document.
    assert_eq!(two.ignored, 1);
}

/// A bad record in `active.seg`, replayed and then judged as the io layer
/// does: the durability marks in the tail, not the bytes that look like
/// records there, decide between a torn write and damage.
mod damage {
    use super::*;
    use stratum_core::{Defect, TailDecision, judge_bad_tail};

    /// Replays `file` as the active segment and judges its bad tail: `None`
    /// if it replays clean.
    fn open_active(image: &Image, file: &[u8]) -> Option<(Outcome, Result<TailDecision, Defect>)> {
        let outcome = replay_at_once(image.segment, file, TailPolicy::Truncate);
        let Ok(Replayed::TornTail { valid_len, dropped, reason }) = outcome.result else {
            assert_eq!(outcome.result, Ok(Replayed::Clean { len: file.len() as u64 }));
            return None;
        };
        assert_eq!(valid_len + dropped, file.len() as u64);
        let judged = judge_bad_tail(valid_len, reason, &file[valid_len as usize..], &salt());
        Some((outcome, judged))
    }

    /// The sample with a durability mark after its first `synced` records,
    /// saying they were synced.
    fn marked_sample(synced: usize) -> (Image, u64) {
        let mut ops = sample_ops();
        let upto = Image::new(seg(3), 1, &ops[..synced]).bytes.len() as u64;
        ops.insert(synced, (0, Owned::Durable { upto }));
        (Image::new(seg(3), 1, &ops), upto)
    }

    #[test]
    fn damage_before_a_durable_mark_is_refused() {
        let (image, upto) = marked_sample(5);
        assert_eq!(image.start(5), upto as usize);
        for damaged in 0..5 {
            let mut file = image.bytes.clone();
            file[image.start(damaged) + RECORD_HEADER_LEN] ^= 0x10;
            let (outcome, judged) = open_active(&image, &file).expect("a bad tail");
            let Ok(Replayed::TornTail { valid_len, reason, .. }) = outcome.result else { unreachable!() };
            assert_eq!(valid_len, image.start(damaged) as u64);
            assert!(matches!(reason, Corruption::ChecksumMismatch { .. }), "{reason:?}");
            assert_eq!(judged, Err(Defect::DamageBeforeDurable { reason, valid_len, durable_upto: upto }));
        }
    }

    #[test]
    fn damage_after_the_last_durable_offset_is_cut_off() {
        let (image, upto) = marked_sample(3);
        // The mark itself and every record after it were never synced.
        for damaged in 3..image.records.len() {
            let mut file = image.bytes.clone();
            file[image.start(damaged) + 4] ^= 0x01; // the length field
            let (outcome, judged) = open_active(&image, &file).expect("a bad tail");
            assert!(image.start(damaged) as u64 >= upto);
            assert_eq!(judged, Ok(TailDecision::Cut { to: image.start(damaged) as u64 }), "record {damaged}");
            assert_eq!(outcome.state, image.direct_state(damaged));
            // What is left replays clean.
            let cut = &file[..image.start(damaged)];
            assert_eq!(open_active(&image, cut).map(|(_, j)| j), None);
        }
    }

    /// The defect the salt fixes: a document's blob (HTML a client sent)
    /// holding whole records, valid under the segment's own salt, torn by
    /// a crash. The old judge found the records in the blob and refused to
    /// open; they are the blob's bytes, never read as records.
    #[test]
    fn valid_records_inside_a_torn_blob_are_cut_off_with_it() {
        let mut forged = b"<html><body><pre>".to_vec();
        let columns = columns(&[("name", "forged")]);
        forged.extend(record_bytes(100, 7, &Owned::CreateDocument { columns, blob: b"<h1>x</h1>".to_vec() }));
        forged.extend(record_bytes(101, 8, &Owned::PutInput { document: 7, value: Value::Int(5) }));
        forged.extend(record_bytes(102, 9, &Owned::ReserveIds { below: 1 << 40 }));
        forged.extend_from_slice(b"</pre></body></html>");
        let mut ops = sample_ops();
        let synced = Image::new(seg(3), 1, &ops).bytes.len() as u64;
        ops.push((0, Owned::Durable { upto: synced }));
        ops.push((1, Owned::SetBlob { blob: forged.clone() }));
        let image = Image::new(seg(3), 1, &ops);
        let last = ops.len() - 1;
        let start = image.start(last);
        let blob_at = start + RECORD_HEADER_LEN;
        // Torn anywhere after the forged records are whole.
        for cut in [blob_at + forged.len() - 20, blob_at + forged.len() - 1] {
            let (outcome, judged) = open_active(&image, &image.bytes[..cut]).expect("a torn tail");
            assert!(
                matches!(outcome.result, Ok(Replayed::TornTail { reason: Corruption::Truncated { .. }, .. })),
                "{:?}",
                outcome.result
            );
            assert_eq!(judged, Ok(TailDecision::Cut { to: start as u64 }), "cut at {cut}");
            assert_eq!(outcome.state, image.direct_state(last));
        }
        // Or whole but damaged in its header.
        let mut file = image.bytes.clone();
        file[start + 10] ^= 0x40;
        let (_, judged) = open_active(&image, &file).expect("a bad tail");
        assert_eq!(judged, Ok(TailDecision::Cut { to: start as u64 }));
    }

    /// Durability marks after record boundaries, each saying the segment
    /// was synced up to some boundary before it.
    fn arb_marked_ops() -> impl Strategy<Value = Vec<(Id, Owned)>> {
        (arb_ops(16), vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..4)).prop_map(
            |(mut ops, marks)| {
                for (at, synced) in marks {
                    let at = at.index(ops.len() + 1);
                    let synced = synced.index(at + 1);
                    let upto = Image::new(seg(1), 1, &ops[..synced]).bytes.len() as u64;
                    ops.insert(at, (0, Owned::Durable { upto }));
                }
                ops
            },
        )
    }

    proptest! {
        /// A flipped bit anywhere after the header is refused exactly when a
        /// whole mark after the damaged record says bytes past its start
        /// were synced (the ops may hold marks with any offset too), and
        /// otherwise cut off at the damaged record.
        #[test]
        fn a_flipped_bit_is_judged_by_the_marks_after_it(ops in arb_marked_ops(), bit in any::<prop::sample::Index>()) {
            let image = Image::new(seg(1), 1, &ops);
            let bit = SEGMENT_HEADER_LEN * 8 + bit.index((image.bytes.len() - SEGMENT_HEADER_LEN) * 8);
            let mut file = image.bytes.clone();
            file[bit / 8] ^= 1 << (bit % 8);
            let damaged = image.records.iter().rposition(|r| r.0 <= bit / 8).unwrap();
            let (outcome, judged) = open_active(&image, &file).expect("a flipped bit is never a valid record");
            let Ok(Replayed::TornTail { valid_len, reason, .. }) = outcome.result else { unreachable!() };
            prop_assert_eq!(valid_len, image.start(damaged) as u64);
            let durable_upto = image.records[damaged + 1..]
                .iter()
                .filter_map(|(_, _, _, m)| match m {
                    Owned::Durable { upto } => Some(*upto),
                    _ => None,
                })
                .max();
            let expected = match durable_upto {
                Some(durable_upto) if durable_upto > valid_len => {
                    Err(Defect::DamageBeforeDurable { reason, valid_len, durable_upto })
                }
                _ => Ok(TailDecision::Cut { to: valid_len }),
            };
            prop_assert_eq!(judged, expected);
        }

        /// A file cut anywhere (a crash in the middle of an append) is
        /// always a torn write: a mark past the damage would be past the
        /// end of the file.
        #[test]
        fn a_segment_cut_anywhere_is_cut_at_its_last_whole_record(
            ops in arb_marked_ops(),
            cut in any::<prop::sample::Index>(),
        ) {
            let image = Image::new(seg(1), 1, &ops);
            let cut = SEGMENT_HEADER_LEN + cut.index(image.bytes.len() - SEGMENT_HEADER_LEN);
            let Some((_, judged)) = open_active(&image, &image.bytes[..cut]) else {
                prop_assert!(image.records.iter().any(|r| r.0 == cut));
                return Ok(());
            };
            let last_whole = image.records.iter().rposition(|r| r.0 <= cut).unwrap();
            prop_assert_eq!(judged, Ok(TailDecision::Cut { to: image.start(last_whole) as u64 }));
        }
    }
}
