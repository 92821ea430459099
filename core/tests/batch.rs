//! Batches: planning (checks, preconditions, ids, chain orders) and batch
//! frames in the log (all or nothing at replay, whatever the damage).

mod common;

use common::*;
use stratum_core::{
    Columns, Corruption, DecodeError, Expect, Feed, Id, Invalid, KeyDir, Limits, Missing, Mutation, Op, Place,
    RECORD_HEADER_LEN, Ref, Refused, SEGMENT_HEADER_LEN, Scan, SegmentId, SegmentReplay, Value, batch_entries,
    encode_record, finish_batch, plan_batch, reseal, scan, start_batch,
};

const SEGMENT: u32 = 1;

/// A segment image whose records are `records` (each already encoded).
fn image(records: &[u8]) -> Vec<u8> {
    let mut bytes = header(SegmentId::new(SEGMENT).unwrap()).encode().to_vec();
    bytes.extend_from_slice(records);
    bytes
}

/// Replays `bytes` (a whole segment) into a fresh index, as recovery does.
fn replay(bytes: &[u8]) -> (KeyDir, u64, Option<Corruption>) {
    let mut kd = KeyDir::new();
    let mut replay = SegmentReplay::new(SegmentId::new(SEGMENT).unwrap(), salt());
    let stop = match replay.feed(&mut kd, &bytes[SEGMENT_HEADER_LEN..]) {
        Feed::NeedMore { .. } => None,
        Feed::Stopped { corruption, .. } => Some(corruption),
    };
    (kd, replay.valid_len(), stop)
}

/// Plans `ops` against `kd` and appends them to `kd` by replaying the
/// bytes, as the engine's write path does; returns the bytes and what the
/// plan said.
fn write(kd: &mut KeyDir, log: &mut Vec<u8>, ops: &[Op<'_>], expect: &[Expect]) -> Result<Vec<Option<Id>>, Refused> {
    let mut out = Vec::new();
    let planned = plan_batch(kd, ops, expect, &Limits::default(), &salt(), &mut out)?;
    // Replays the whole log so far plus the new bytes, into a fresh index.
    let mut replay = SegmentReplay::new(SegmentId::new(SEGMENT).unwrap(), salt());
    let mut all = image(log);
    all.extend_from_slice(&out);
    let mut fresh = KeyDir::new();
    assert!(
        matches!(replay.feed(&mut fresh, &all[SEGMENT_HEADER_LEN..]), Feed::NeedMore { consumed, .. } if consumed == all.len() - SEGMENT_HEADER_LEN)
    );
    log.extend_from_slice(&out);
    *kd = fresh;
    Ok(planned.created)
}

fn chain(kd: &KeyDir, document: Id) -> Vec<Id> {
    kd.document(document).unwrap().chain().map(|input| input.id).collect()
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

#[test]
fn a_batch_creates_a_document_and_its_chain_in_one_frame() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    let columns: Columns = [("name".to_string(), "sum".to_string())].into();
    let (a, b) = (int(1), int(2));
    let ops = [
        Op::CreateDocument { blob: b"<p>sum</p>", columns: &columns },
        Op::AddInput { document: Ref::Created(0), value: &a, place: Place::End },
        Op::SetOutput { document: Ref::Created(0), input: Ref::Created(1), value: &b },
        Op::AddInput { document: Ref::Created(0), value: &b, place: Place::Start },
    ];
    let created = write(&mut kd, &mut log, &ops, &[]).unwrap();
    assert_eq!(created, [Some(1), Some(2), None, Some(3)]);
    // One frame: a single top-level record whose payload is five records
    // (create, two inputs, an output and the chain order).
    let Scan::Record(frame) = scan(&log, &salt()) else { panic!("no frame") };
    assert_eq!(frame.len(), log.len());
    let inner: Vec<_> = batch_entries(frame.payload, &salt()).collect::<Result<_, _>>().unwrap();
    assert_eq!(inner.len(), 5);
    assert_eq!(chain(&kd, 1), [3, 2]);
    assert!(kd.output(1, 2).is_ok());
    // The version is the sequence number of the batch's last record.
    assert_eq!(kd.document(1).unwrap().version(), inner.last().unwrap().1.seq);
    assert_eq!(kd.check_invariants(), Ok(()));
}

#[test]
fn a_single_operation_is_written_as_a_plain_record() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    write(&mut kd, &mut log, &[Op::CreateDocument { blob: b"x", columns: &Columns::new() }], &[]).unwrap();
    let Scan::Record(record) = scan(&log, &salt()) else { panic!("no record") };
    assert_eq!(record.kind, stratum_core::RecordKind::CreateDocument);
}

/// Whatever prefix of a segment survives, a batch frame in it is applied
/// whole or not at all: every cut inside the frame leaves the index as it
/// was before the batch.
#[test]
fn every_cut_inside_a_frame_keeps_none_of_it() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    write(&mut kd, &mut log, &[Op::CreateDocument { blob: b"doc", columns: &Columns::new() }], &[]).unwrap();
    let before = kd.clone();
    let before_len = log.len();
    let (a, b) = (int(7), Value::Str("out".into()));
    let ops = [
        Op::AddInput { document: Ref::Id(1), value: &a, place: Place::End },
        Op::SetOutput { document: Ref::Id(1), input: Ref::Created(0), value: &b },
        Op::SetBlob { document: Ref::Id(1), blob: b"new" },
    ];
    write(&mut kd, &mut log, &ops, &[]).unwrap();
    let whole = image(&log);
    let frame_start = SEGMENT_HEADER_LEN + before_len;
    for cut in frame_start..whole.len() {
        let (got, valid_len, _) = replay(&whole[..cut]);
        assert_eq!(valid_len as usize, frame_start, "cut at {cut}");
        assert_eq!(got.document(1).unwrap().blob, before.document(1).unwrap().blob, "cut at {cut}");
        assert!(got.document(1).unwrap().inputs.is_empty(), "cut at {cut}: part of the batch applied");
    }
    let (got, valid_len, stop) = replay(&whole);
    assert_eq!((valid_len as usize, stop), (whole.len(), None));
    assert_eq!(got.document(1).unwrap().inputs.len(), 1);
}

/// A flipped bit anywhere in a frame (its header, or any byte of any
/// record inside it) stops the replay before the frame.
#[test]
fn every_flipped_bit_of_a_frame_keeps_none_of_it() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    let (a, b) = (int(1), int(2));
    let columns = Columns::new();
    let ops = [
        Op::CreateDocument { blob: b"d", columns: &columns },
        Op::AddInput { document: Ref::Created(0), value: &a, place: Place::End },
        Op::AddInput { document: Ref::Created(0), value: &b, place: Place::Start },
    ];
    write(&mut kd, &mut log, &ops, &[]).unwrap();
    let whole = image(&log);
    for bit in SEGMENT_HEADER_LEN * 8..whole.len() * 8 {
        let mut damaged = whole.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        // (A flip in the frame's length field may make it look torn
        // rather than bad: either way, none of it applies.)
        let (got, valid_len, _) = replay(&damaged);
        assert_eq!(valid_len as usize, SEGMENT_HEADER_LEN, "bit {bit}");
        assert_eq!(got.document_count(), 0, "bit {bit}");
    }
}

/// A frame whose checksum holds but that carries a mark, checkpoint,
/// reservation or another frame is malformed: nothing of it applies.
#[test]
fn a_frame_may_hold_only_data_records() {
    let value = int(3);
    for (id, forbidden) in [
        (0, Mutation::Durable { upto: 40 }),
        (0, Mutation::ReserveIds { below: 100 }),
        (0, Mutation::Checkpoint { covers_from: SegmentId::new(1).unwrap(), next_id: 5 }),
    ] {
        let mut frame = Vec::new();
        let start = start_batch(&mut frame, 1);
        encode_record(&mut frame, &salt(), 2, 1, &Mutation::CreateDocument { columns: &Columns::new(), blob: b"d" });
        encode_record(&mut frame, &salt(), 3, id, &forbidden);
        encode_record(&mut frame, &salt(), 4, 2, &Mutation::PutInput { document: 1, value: &value });
        finish_batch(&mut frame, start, &salt());
        let (got, valid_len, stop) = replay(&image(&frame));
        assert_eq!(stop, Some(Corruption::Payload(DecodeError::NotInBatch(forbidden.kind() as u8))));
        assert_eq!((valid_len as usize, got.document_count()), (SEGMENT_HEADER_LEN, 0));
    }
    // Bytes after the last whole record inside a frame are malformed too.
    let mut frame = Vec::new();
    let start = start_batch(&mut frame, 1);
    encode_record(&mut frame, &salt(), 2, 1, &Mutation::CreateDocument { columns: &Columns::new(), blob: b"d" });
    frame.extend_from_slice(&[1, 2, 3]);
    finish_batch(&mut frame, start, &salt());
    let (got, _, stop) = replay(&image(&frame));
    assert!(stop.is_some());
    assert_eq!(got.document_count(), 0);
}

/// A frame sealed again for another segment's salt is valid there, records
/// inside included, and no longer valid under the old salt.
#[test]
fn reseal_moves_a_frame_to_another_salt() {
    let kd = KeyDir::new();
    let (a, b) = (int(1), int(2));
    let columns = Columns::new();
    let ops = [
        Op::CreateDocument { blob: b"d", columns: &columns },
        Op::AddInput { document: Ref::Created(0), value: &a, place: Place::End },
        Op::AddInput { document: Ref::Created(0), value: &b, place: Place::End },
    ];
    let mut out = Vec::new();
    plan_batch(&kd, &ops, &[], &Limits::default(), &salt(), &mut out).unwrap();
    reseal(&mut out, &other_salt());
    assert!(matches!(scan(&out, &salt()), Scan::Invalid(Corruption::ChecksumMismatch { .. })));
    let Scan::Record(frame) = scan(&out, &other_salt()) else { panic!("not valid under the new salt") };
    assert_eq!(batch_entries(frame.payload, &other_salt()).filter(Result::is_ok).count(), 3);
    assert!(batch_entries(frame.payload, &salt()).next().unwrap().is_err());
}

#[test]
fn a_refused_batch_writes_nothing_and_says_why() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    let columns = Columns::new();
    let v = int(1);
    write(&mut kd, &mut log, &[Op::CreateDocument { blob: b"d", columns: &columns }], &[]).unwrap();
    write(&mut kd, &mut log, &[Op::AddInput { document: Ref::Id(1), value: &v, place: Place::End }], &[]).unwrap();
    let version = kd.document(1).unwrap().version();
    let limits = Limits::default();
    let refused = |ops: &[Op<'_>], expect: &[Expect], limits: &Limits| {
        let mut out = vec![9, 9];
        let err = plan_batch(&kd, ops, expect, limits, &salt(), &mut out).unwrap_err();
        assert_eq!(out, [9, 9], "a refused batch left bytes behind");
        err
    };
    // In a batch of several, an operation's refusal names it.
    let missing = Op::DeleteInput { document: Ref::Id(1), input: Ref::Id(99) };
    let add = Op::AddInput { document: Ref::Id(1), value: &v, place: Place::End };
    let named = refused(&[add, add, missing], &[], &limits);
    assert!(matches!(&named, Refused::InOp { op: 2, .. }), "{named:?}");
    let refused = |ops: &[Op<'_>], expect: &[Expect], limits: &Limits| refused(ops, expect, limits).cause().clone();
    let add = Op::AddInput { document: Ref::Id(1), value: &v, place: Place::End };
    // The last op fails: nothing of the first is written either.
    let missing = Op::DeleteInput { document: Ref::Id(1), input: Ref::Id(99) };
    assert_eq!(refused(&[add, missing], &[], &limits), Refused::Missing(Missing::Input { document: 1, input: 99 }));
    // A stale precondition, checked before any op.
    let stale = Expect { document: 1, version: version - 1 };
    assert_eq!(
        refused(&[add], &[stale], &limits),
        Refused::Stale { document: 1, expected: version - 1, current: version }
    );
    let gone = Expect { document: 5, version: 1 };
    assert_eq!(refused(&[add], &[gone], &limits), Refused::Missing(Missing::Document(5)));
    // A reference to an op that created nothing, or to a later one.
    let bad = Op::SetOutput { document: Ref::Id(1), input: Ref::Created(0), value: &v };
    let update = Op::SetBlob { document: Ref::Id(1), blob: b"x" };
    assert_eq!(
        refused(&[update, bad], &[], &limits),
        Refused::Invalid(Invalid::BadReference { op: 1, to: 0, what: "test case" })
    );
    let forward = Op::SetOutput { document: Ref::Id(1), input: Ref::Created(1), value: &v };
    assert_eq!(
        refused(&[forward, add], &[], &limits),
        Refused::Invalid(Invalid::BadReference { op: 0, to: 1, what: "test case" })
    );
    // A reference to an op that created the other kind of thing.
    let columns = Columns::new();
    let create = Op::CreateDocument { blob: b"d", columns: &columns };
    let wrong_kind = Op::SetOutput { document: Ref::Created(0), input: Ref::Created(0), value: &v };
    assert_eq!(
        refused(&[create, wrong_kind], &[], &limits),
        Refused::Invalid(Invalid::BadReference { op: 1, to: 0, what: "test case" })
    );
    // Size limits: over the batch's bytes, or its op count.
    let big = Value::Str("x".repeat(1000));
    let adds: Vec<Op<'_>> =
        (0..10).map(|_| Op::AddInput { document: Ref::Id(1), value: &big, place: Place::End }).collect();
    let small = Limits { max_batch_bytes: 5000, ..Limits::default() };
    assert_eq!(refused(&adds, &[], &small), Refused::Invalid(Invalid::BatchTooLarge { limit: 5000 }));
    let few = Limits { max_batch_ops: 3, ..Limits::default() };
    assert_eq!(refused(&adds, &[], &few), Refused::Invalid(Invalid::TooManyOps { count: 10, limit: 3 }));
    assert_eq!(refused(&[], &[], &limits), Refused::Invalid(Invalid::EmptyBatch));
    // Placed beside itself.
    let itself = Op::MoveInput { document: Ref::Id(1), input: Ref::Id(2), place: Place::After(Ref::Id(2)) };
    assert_eq!(refused(&[itself], &[], &limits), Refused::Invalid(Invalid::PlacedBesideItself(2)));
    // The index is as it was.
    assert_eq!(kd.document(1).unwrap().version(), version);
}

#[test]
fn moves_and_placed_adds_set_the_chain_order_and_id_order_needs_no_record() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    let columns = Columns::new();
    let values: Vec<Value> = (0..4).map(int).collect();
    let mut ops = vec![Op::CreateDocument { blob: b"d", columns: &columns }];
    ops.extend(values.iter().map(|value| Op::AddInput { document: Ref::Created(0), value, place: Place::End }));
    write(&mut kd, &mut log, &ops, &[]).unwrap();
    assert_eq!(chain(&kd, 1), [2, 3, 4, 5]);
    assert!(kd.document(1).unwrap().chain_order().is_none());
    let mv = |input, place| Op::MoveInput { document: Ref::Id(1), input: Ref::Id(input), place };
    write(&mut kd, &mut log, &[mv(5, Place::Start)], &[]).unwrap();
    assert_eq!(chain(&kd, 1), [5, 2, 3, 4]);
    write(&mut kd, &mut log, &[mv(2, Place::After(Ref::Id(4)))], &[]).unwrap();
    assert_eq!(chain(&kd, 1), [5, 3, 4, 2]);
    let extra = int(9);
    let created = write(
        &mut kd,
        &mut log,
        &[Op::AddInput { document: Ref::Id(1), value: &extra, place: Place::Before(Ref::Id(3)) }],
        &[],
    )
    .unwrap();
    assert_eq!(created, [Some(6)]);
    assert_eq!(chain(&kd, 1), [5, 6, 3, 4, 2]);
    // Paging from any input goes on in chain order.
    let after = |id| kd.document(1).unwrap().chain_after(id).map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(after(6), [3, 4, 2]);
    assert_eq!(after(2), Vec::<Id>::new());
    // A move to where the input already is writes nothing.
    let version = kd.document(1).unwrap().version();
    let mut out = Vec::new();
    let planned =
        plan_batch(&kd, &[mv(6, Place::After(Ref::Id(5)))], &[], &Limits::default(), &salt(), &mut out).unwrap();
    assert_eq!((planned.records, out.len()), (0, 0));
    // Back to id order: the chain record goes, and the chain is id order.
    for (input, place) in [(2, Place::Start), (5, Place::After(Ref::Id(4))), (6, Place::End)] {
        write(&mut kd, &mut log, &[mv(input, place)], &[]).unwrap();
    }
    assert_eq!(chain(&kd, 1), [2, 3, 4, 5, 6]);
    assert!(kd.document(1).unwrap().chain_order().is_none());
    assert!(kd.document(1).unwrap().version() > version);
    assert_eq!(kd.check_invariants(), Ok(()));
}

#[test]
fn clear_inputs_then_adds_replace_a_chain_and_drop_its_order() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    let columns = Columns::new();
    let (a, b, c) = (int(1), int(2), int(3));
    let ops = [
        Op::CreateDocument { blob: b"d", columns: &columns },
        Op::AddInput { document: Ref::Created(0), value: &a, place: Place::End },
        Op::AddInput { document: Ref::Created(0), value: &b, place: Place::Start },
        Op::SetOutput { document: Ref::Created(0), input: Ref::Created(1), value: &c },
    ];
    write(&mut kd, &mut log, &ops, &[]).unwrap();
    assert_eq!(chain(&kd, 1), [3, 2]);
    let version = kd.document(1).unwrap().version();
    let ops =
        [Op::ClearInputs { document: Ref::Id(1) }, Op::AddInput { document: Ref::Id(1), value: &c, place: Place::End }];
    let created = write(&mut kd, &mut log, &ops, &[Expect { document: 1, version }]).unwrap();
    assert_eq!(created, [None, Some(4)]);
    assert_eq!(chain(&kd, 1), [4]);
    assert!(kd.document(1).unwrap().chain_order().is_none());
    assert_eq!(kd.output_count(), 0);
    assert_eq!(kd.check_invariants(), Ok(()));
}

#[test]
fn a_record_header_sized_garbage_entry_keeps_the_byte_counts_exact() {
    let (mut kd, mut log) = (KeyDir::new(), Vec::new());
    let columns = Columns::new();
    let v = int(1);
    let ops = [
        Op::CreateDocument { blob: b"d", columns: &columns },
        Op::AddInput { document: Ref::Created(0), value: &v, place: Place::End },
    ];
    write(&mut kd, &mut log, &ops, &[]).unwrap();
    let usage = kd.segments()[&SegmentId::new(SEGMENT).unwrap()];
    assert_eq!(usage.total_bytes, log.len() as u64);
    assert_eq!(usage.garbage_bytes(), RECORD_HEADER_LEN as u64, "the frame's header is its only garbage");
    assert_eq!(usage.records, 3);
}
