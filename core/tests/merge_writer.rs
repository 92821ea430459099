//! `MergeWriter`: laying out a merged segment from a compaction plan, driven
//! the way the io layer drives it, over random logs. Every segment has a
//! salt of its own, the merged one too, so every copied record is resealed.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{
    Body, Columns, CompactionPlan, Corruption, Defect, Feed, Id, Installed, KeyDir, Location, MergeError,
    MergedSegment, RecordKind, RecordMeta, Replayed, SEGMENT_HEADER_LEN, Salt, Scan, SegmentHeader, SegmentId,
    SegmentReplay, TailPolicy, Target, Value, checked_record, record_blob, record_value, scan, seal_record,
};

/// One write to the log, or the start of a new segment.
#[derive(Clone, Debug)]
enum Step {
    Record(Id, Owned),
    Roll,
}

/// Writes over small id spaces, so that most of them hit something that
/// exists: documents 1..=5 (mostly 1..=3) and inputs 4..=7, which mostly
/// name their own document (`1 + input % 3`) and sometimes another; ids 4
/// and 5 are both documents and inputs, which must not meet.
fn arb_step() -> impl Strategy<Value = Step> {
    let doc = prop_oneof![3 => 1u64..=3, 1 => 1u64..=5];
    let input = (4u64..=7, prop::bool::weighted(0.15), 1u64..=5)
        .prop_map(|(input, stray, other)| (input, if stray { other } else { 1 + input % 3 }));
    let record = |(id, m): (Id, Owned)| Step::Record(id, m);
    prop_oneof![
        3 => (doc.clone(), arb_create_document()).prop_map(record),
        2 => (doc.clone(), arb_set_blob()).prop_map(record),
        2 => (doc.clone(), arb_set_columns()).prop_map(record),
        1 => doc.prop_map(|id| Step::Record(id, Owned::DeleteDocument)),
        5 => (input.clone(), arb_value()).prop_map(|((id, document), value)| {
            Step::Record(id, Owned::PutInput { document, value })
        }),
        1 => input.clone().prop_map(|(id, document)| Step::Record(id, Owned::DeleteInput { document })),
        5 => (input.clone(), arb_value()).prop_map(|((id, document), value)| {
            Step::Record(id, Owned::PutOutput { document, value })
        }),
        1 => input.prop_map(|(id, document)| Step::Record(id, Owned::DeleteOutput { document })),
        1 => (0u64..=40).prop_map(|below| Step::Record(0, Owned::ReserveIds { below })),
        2 => Just(Step::Roll),
    ]
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    vec(arb_step(), 0..80)
}

/// The salt of the `n`th segment a store creates.
fn segment_salt(n: u64) -> Salt {
    let mut bytes = *b"segment-salt\0\0\0\0";
    bytes[12..].copy_from_slice(&(n as u32).to_le_bytes());
    Salt::new(bytes)
}

/// The salt of the segment merged into `merged`, never a source's.
fn merged_salt(merged: SegmentId) -> Salt {
    let mut bytes = *b"merged-salt\0\0\0\0\0";
    bytes[12..].copy_from_slice(&merged.get().to_le_bytes());
    Salt::new(bytes)
}

/// A log written into a key directory, keeping every record's bytes by its
/// location, as the segment files would, each sealed with its segment's
/// salt.
struct Store {
    log: Log,
    bytes: HashMap<Location, Vec<u8>>,
    /// Every record's location, in log order.
    order: Vec<Location>,
    /// Each segment's salt. A merged segment has a new one, though it
    /// takes the id of the newest segment it replaced.
    salts: HashMap<SegmentId, Salt>,
    created: u64,
}

impl Store {
    fn new() -> Store {
        let log = Log::new();
        let salts = HashMap::from([(log.segment, segment_salt(1))]);
        Store { log, bytes: HashMap::new(), order: Vec::new(), salts, created: 1 }
    }

    /// Moves on to a new segment, with a fresh salt.
    fn roll(&mut self, segment: u32) {
        self.log.roll(segment);
        self.created += 1;
        self.salts.insert(self.log.segment, segment_salt(self.created));
    }

    /// The salt of the segment `at` is in.
    fn salt(&self, at: Location) -> Salt {
        self.salts[&at.segment()]
    }

    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            match step {
                Step::Record(id, m) => {
                    let record = salted_record_bytes(&self.salts[&self.log.segment], self.log.seq + 1, *id, m);
                    let mut scratch = Vec::new();
                    let effect = m.as_mutation().effect(&mut scratch);
                    let (_, at) = self.log.apply_len(*id, effect, record.len() as u32);
                    self.bytes.insert(at, record);
                    self.order.push(at);
                }
                Step::Roll => self.roll(self.log.segment.get() + 1),
            }
        }
    }

    fn at(&self, location: Location) -> &[u8] {
        &self.bytes[&location]
    }

    /// Every segment holding records, and the current one.
    fn segments(&self) -> BTreeSet<SegmentId> {
        let mut segments: BTreeSet<SegmentId> = self.log.kd.segments().keys().copied().collect();
        segments.insert(self.log.segment);
        segments
    }

    fn plan(&self) -> CompactionPlan {
        self.log.kd.plan_compaction(self.segments()).expect("there is a segment to compact")
    }
}

/// A merged segment as written, its salt, and the sources it read, in
/// order.
struct Written {
    out: Vec<u8>,
    salt: Salt,
    merged: MergedSegment,
    read: Vec<Location>,
}

/// Drives the writer as the io layer does: reads what it names, hands the
/// bytes over with the salt of the segment they were read from, until it
/// names nothing more. `read` gets the number of the read and its
/// location.
/// Runs `steps`, then merges with the bytes of one source record (the
/// `pick`th) passed through `change`: that record's location and the
/// merge's result, or `None` when the plan copies nothing.
fn merge_with_one_source_changed(
    steps: &[Step],
    pick: prop::sample::Index,
    mut change: impl FnMut(&Store, &CompactionPlan, Location, Vec<u8>) -> Vec<u8>,
) -> Option<(Location, Result<Written, MergeError>)> {
    let mut store = Store::new();
    store.run(steps);
    let plan = store.plan();
    let sources = expected_sources(&plan);
    if sources.is_empty() {
        return None;
    }
    let k = pick.index(sources.len());
    let result = write_merged(&store, &plan, |n, from| {
        let bytes = store.at(from).to_vec();
        if n == k { change(&store, &plan, from, bytes) } else { bytes }
    });
    Some((sources[k], result))
}

fn write_merged(
    store: &Store,
    plan: &CompactionPlan,
    mut read: impl FnMut(usize, Location) -> Vec<u8>,
) -> Result<Written, MergeError> {
    let mut out = Vec::new();
    let salt = merged_salt(plan.merged);
    let mut writer = stratum_core::MergeWriter::new(plan, salt, &mut out)?;
    let mut sources = Vec::new();
    while let Some(from) = writer.next_source() {
        let bytes = read(sources.len(), from);
        sources.push(from);
        writer.copy(&bytes, &store.salt(from), &mut out)?;
    }
    Ok(Written { out, salt, merged: writer.finish(), read: sources })
}

fn write_from(store: &Store, plan: &CompactionPlan) -> Written {
    write_merged(store, plan, |_, from| store.at(from).to_vec()).expect("a clean log merges")
}

/// The locations the writer must read, in the order of the merged layout:
/// each document's blob record, then each input's value and output.
fn expected_sources(plan: &CompactionPlan) -> Vec<Location> {
    let mut sources = Vec::new();
    for doc in &plan.documents {
        sources.push(doc.blob);
        for input in &doc.inputs {
            sources.push(input.value);
            sources.extend(input.output);
        }
    }
    sources
}

fn bytes_at(out: &[u8], at: Location) -> &[u8] {
    &out[at.offset() as usize..][..at.len() as usize]
}

/// The column map of a create or column update record about `id`.
fn record_columns(bytes: &[u8], salt: &Salt, id: Id) -> Columns {
    match checked_record(bytes, salt, id).unwrap().body().unwrap() {
        Body::CreateDocument { columns, .. } | Body::SetColumns { columns } => columns.decode(),
        other => panic!("columns read from a {:?} record", other.kind()),
    }
}

fn value_at(bytes: &[u8], salt: &Salt, id: Id) -> Value {
    record_value(bytes, salt, id).unwrap()
}

/// Where the index points for `target`.
fn pointer(kd: &KeyDir, target: Target) -> Option<Location> {
    match target {
        Target::DocumentBlob(id) => kd.document(id).ok().map(|d| d.blob),
        Target::DocumentColumns(id) => kd.document(id).ok().map(|d| d.columns_at),
        Target::DocumentChain(id) => kd.document(id).ok().and_then(|d| d.chain_order()).map(|c| c.at),
        Target::InputValue { document, input } => kd.input(document, input).ok().map(|i| i.value),
        Target::Output { document, input } => kd.output(document, input).ok(),
    }
}

/// Every location the index points at.
fn pointers(kd: &KeyDir) -> Vec<Location> {
    let mut all = Vec::new();
    for id in kd.document_ids() {
        let doc = kd.document(id).unwrap();
        all.extend([doc.blob, doc.columns_at]);
        for input in &doc.inputs {
            all.push(input.value);
            all.extend(input.output);
        }
    }
    all
}

/// The records of a segment file after its header: (location, kind, seq,
/// id), each of which must be whole and valid under `salt`.
fn records(
    segment: SegmentId,
    salt: &Salt,
    file: &[u8],
) -> Result<Vec<(Location, RecordKind, u64, Id)>, TestCaseError> {
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at < file.len() {
        let Scan::Record(record) = scan(&file[at..], salt) else {
            return Err(TestCaseError::fail(format!("no record at {at}: {:?}", scan(&file[at..], salt))));
        };
        let location = Location::new(segment, at as u64, record.len() as u32).unwrap();
        records.push((location, record.kind, record.seq, record.id));
        at += record.len();
    }
    Ok(records)
}

/// Replays a merged segment into an empty index, as recovery does without
/// its snapshot, with the salt in its header.
fn replay(segment: SegmentId, file: &[u8]) -> Result<KeyDir, TestCaseError> {
    let mut kd = KeyDir::new();
    let header = SegmentHeader::decode(file).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let mut replay = SegmentReplay::new(segment, header.salt);
    let feed = replay.feed(&mut kd, &file[SEGMENT_HEADER_LEN..]);
    prop_assert!(
        matches!(feed, Feed::NeedMore { consumed, .. } if consumed == file.len() - SEGMENT_HEADER_LEN),
        "{:?}",
        feed
    );
    prop_assert_eq!(replay.ignored(), 0, "a merged segment's records all take effect");
    let replayed = replay.finish(file.len() as u64, None, TailPolicy::Reject);
    prop_assert_eq!(replayed, Ok(Replayed::Clean { len: file.len() as u64 }));
    Ok(kd)
}

/// Checks a merged segment written from `plan` over `store`'s log; returns
/// the index its replay gives.
fn check_merged(store: &Store, plan: &CompactionPlan, written: &Written) -> Result<KeyDir, TestCaseError> {
    let Written { out, salt, merged, read } = written;
    let original = &store.log.kd;
    prop_assert_eq!(read, &expected_sources(plan));
    prop_assert_eq!(SegmentHeader::decode(out), Ok(SegmentHeader { segment: plan.merged, salt: *salt }));

    // The layout: the checkpoint, then each document followed by its
    // inputs and their outputs. No tombstone is copied.
    let records = records(plan.merged, salt, out)?;
    // Every record is sealed for the merged salt: none is valid under the
    // salt of a segment it was copied from.
    for &(at, ..) in &records {
        for source in &plan.sources {
            let source_salt = store.salts[source];
            prop_assert_ne!(source_salt, *salt);
            prop_assert!(
                matches!(scan(bytes_at(out, at), &source_salt), Scan::Invalid(Corruption::ChecksumMismatch { .. })),
                "the record at {:?} is valid under the salt of segment {}",
                at,
                source
            );
        }
    }
    prop_assert_eq!(merged.records, records.len() as u64);
    prop_assert_eq!(merged.bytes, (out.len() - SEGMENT_HEADER_LEN) as u64);
    let (checkpoint, _, seq, id) = records[0];
    prop_assert_eq!((seq, id), (plan.seq, 0));
    prop_assert_eq!(merged.checkpoint, Some(checkpoint));
    let body = checked_record(bytes_at(out, checkpoint), salt, 0).unwrap().body().unwrap();
    prop_assert_eq!(body, Body::Checkpoint { covers_from: plan.covers_from, next_id: plan.next_id });
    let mut layout = vec![(RecordKind::Checkpoint, 0)];
    for doc in &plan.documents {
        layout.push((RecordKind::CreateDocument, doc.id));
        for input in &doc.inputs {
            layout.push((RecordKind::PutInput, input.id));
            if input.output.is_some() {
                layout.push((RecordKind::PutOutput, input.id));
            }
        }
    }
    prop_assert_eq!(records.iter().map(|&(_, kind, _, id)| (kind, id)).collect::<Vec<_>>(), layout);

    let replayed = replay(plan.merged, out)?;
    prop_assert_eq!(replayed.check_invariants(), Ok(()));
    // The same documents, columns and chains as the index had.
    prop_assert_eq!(replayed.document_ids().collect::<Vec<_>>(), original.document_ids().collect::<Vec<_>>());
    prop_assert_eq!(
        (replayed.document_count(), replayed.input_count(), replayed.output_count()),
        (original.document_count(), original.input_count(), original.output_count())
    );
    for id in original.document_ids() {
        let (before, after) = (original.document(id).unwrap(), replayed.document(id).unwrap());
        prop_assert_eq!(after.columns(), before.columns(), "document {}", id);
        let chain =
            |d: &stratum_core::DocumentEntry| d.inputs.iter().map(|i| (i.id, i.output.is_some())).collect::<Vec<_>>();
        prop_assert_eq!(chain(after), chain(before), "document {}", id);
        // A document is one record in the merged segment.
        prop_assert_eq!(after.blob, after.columns_at);
        // Reads give what they gave before.
        prop_assert_eq!(
            record_blob(bytes_at(out, after.blob), salt, id),
            record_blob(store.at(before.blob), &store.salt(before.blob), id)
        );
        prop_assert_eq!(record_columns(bytes_at(out, after.columns_at), salt, id), before.columns());
        for (b, a) in before.inputs.iter().zip(&after.inputs) {
            prop_assert_eq!(
                value_at(bytes_at(out, a.value), salt, a.id),
                value_at(store.at(b.value), &store.salt(b.value), b.id)
            );
            if let (Some(b_out), Some(a_out)) = (b.output, a.output) {
                prop_assert_eq!(
                    value_at(bytes_at(out, a_out), salt, a.id),
                    value_at(store.at(b_out), &store.salt(b_out), b.id)
                );
            }
        }
    }
    prop_assert!(pointers(&replayed).iter().all(|at| at.segment() == plan.merged));
    prop_assert_eq!(replayed.next_seq(), plan.seq + 1);
    // Ids handed out before the merge are never handed out again.
    prop_assert_eq!(replayed.next_id(), plan.next_id);
    prop_assert_eq!(plan.next_id, original.reserved_ids());

    // Each relocation takes a pointer the index had to where the replay
    // puts it, and reading there gives the same data.
    let (docs, inputs, outputs) = (original.document_count(), original.input_count(), original.output_count());
    prop_assert_eq!(merged.relocations.len() as u64, 2 * docs as u64 + inputs + outputs);
    let targets: BTreeSet<String> = merged.relocations.iter().map(|r| format!("{:?}", r.target)).collect();
    prop_assert_eq!(targets.len(), merged.relocations.len(), "a target relocated twice");
    for r in &merged.relocations {
        prop_assert_eq!(pointer(original, r.target), Some(r.from), "{:?}", r);
        prop_assert_eq!(pointer(&replayed, r.target), Some(r.to), "{:?}", r);
        let (before, after) = (store.at(r.from), bytes_at(out, r.to));
        let source = store.salt(r.from);
        match r.target {
            Target::DocumentBlob(id) => prop_assert_eq!(record_blob(after, salt, id), record_blob(before, &source, id)),
            Target::DocumentColumns(id) => {
                prop_assert_eq!(record_columns(after, salt, id), record_columns(before, &source, id))
            }
            Target::DocumentChain(_) => prop_assert_eq!(&after[25..], &before[25..]),
            Target::InputValue { input, .. } | Target::Output { input, .. } => {
                prop_assert_eq!(value_at(after, salt, input), value_at(before, &source, input));
                // Input and output records are copied as they are, but for
                // their checksum.
                prop_assert_eq!(&after[4..], &before[4..]);
            }
        }
    }
    Ok(replayed)
}

/// Installs the merged segment into (a copy of) the store's index and
/// checks it against the replayed one; returns the installed index.
fn check_install(
    store: &Store,
    plan: &CompactionPlan,
    written: &Written,
    replayed: &KeyDir,
) -> Result<KeyDir, TestCaseError> {
    let mut kd = store.log.kd.clone();
    let installed = kd.install_compaction(plan, &written.merged);
    prop_assert_eq!(installed, Installed { relocated: written.merged.relocations.len() as u64, stale: 0 });
    prop_assert_eq!(kd.check_invariants(), Ok(()));
    prop_assert!(pointers(&kd).iter().all(|at| at.segment() == plan.merged), "{:?}", pointers(&kd));
    // The installed index is the one recovery would rebuild from the
    // merged segment.
    prop_assert_eq!(kd.document_ids().collect::<Vec<_>>(), replayed.document_ids().collect::<Vec<_>>());
    for id in kd.document_ids() {
        prop_assert_eq!(kd.document(id), replayed.document(id));
    }
    prop_assert_eq!(kd.segments(), replayed.segments());
    let all = written.merged.bytes;
    let usage = kd.segments().get(&plan.merged).copied().unwrap_or_default();
    prop_assert_eq!((usage.total_bytes, usage.live_bytes, usage.records), (all, all, written.merged.records));
    prop_assert_eq!(kd.segments().len(), 1);
    prop_assert_eq!(kd.next_seq(), replayed.next_seq());
    prop_assert_eq!(kd.reserved_ids(), replayed.reserved_ids());
    Ok(kd)
}

/// A random log, compacted: returns the store and its plan.
fn compact(store: &mut Store) -> Result<(), TestCaseError> {
    let plan = store.plan();
    let written = write_from(store, &plan);
    let replayed = check_merged(store, &plan, &written)?;
    let installed = check_install(store, &plan, &written, &replayed)?;
    // Carry on from the merged segment, as the engine does.
    for (at, ..) in records(plan.merged, &written.salt, &written.out)? {
        store.bytes.insert(at, bytes_at(&written.out, at).to_vec());
    }
    store.salts.insert(plan.merged, written.salt);
    store.log.kd = installed;
    store.roll(plan.merged.get() + 1);
    Ok(())
}

/// Replaces the id in a record's header, keeping its checksum valid for
/// `salt`.
fn with_id(record: &[u8], salt: &Salt, id: Id) -> Vec<u8> {
    let mut record = record.to_vec();
    record[17..25].copy_from_slice(&id.to_le_bytes());
    seal_record(&mut record, salt);
    record
}

/// Replaces the owning document an input or output record names (the
/// first eight bytes of its payload), keeping its checksum valid for
/// `salt`.
fn with_document(record: &[u8], salt: &Salt, document: Id) -> Vec<u8> {
    let mut record = record.to_vec();
    record[25..33].copy_from_slice(&document.to_le_bytes());
    seal_record(&mut record, salt);
    record
}

fn record_id(record: &[u8]) -> Id {
    u64::from_le_bytes(record[17..25].try_into().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Merging any log gives a segment whose replay is the index as it
    /// was, whose reads give the same data, and which installs cleanly; a
    /// second compaction, after more writes, merges the merged segment.
    #[test]
    fn a_merged_segment_holds_the_index_as_it_was(first in arb_steps(), then in arb_steps()) {
        let mut store = Store::new();
        store.run(&first);
        compact(&mut store)?;
        store.run(&then);
        compact(&mut store)?;
    }

    /// Writes that land while the merged segment is written are kept over
    /// their stale copies: installing gives the index recovery rebuilds
    /// from the merged segment and the segments written after it.
    #[test]
    fn writes_during_a_merge_install_what_recovery_rebuilds(first in arb_steps(), during in arb_steps()) {
        let mut store = Store::new();
        store.run(&first);
        let plan = store.plan();
        let written = write_from(&store, &plan);
        store.roll(plan.merged.get() + 1);
        let logged_before = store.order.len();
        store.run(&during);

        let mut installed = store.log.kd.clone();
        let stale = written.merged.relocations.iter().filter(|r| pointer(&installed, r.target) != Some(r.from)).count();
        let result = installed.install_compaction(&plan, &written.merged);
        let relocated = written.merged.relocations.len() - stale;
        prop_assert_eq!(result, Installed { relocated: relocated as u64, stale: stale as u64 });
        prop_assert_eq!(installed.check_invariants(), Ok(()));

        // Recovery: the merged segment, then the records written since.
        let mut recovered = replay(plan.merged, &written.out)?;
        for &at in &store.order[logged_before..] {
            let record = checked_record(store.at(at), &store.salt(at), record_id(store.at(at))).unwrap();
            let meta = RecordMeta { seq: record.seq, id: record.id, location: at };
            let effect = record.body().unwrap().into_effect();
            let _ = recovered.apply(meta, effect);
        }
        prop_assert_eq!(installed.document_ids().collect::<Vec<_>>(), recovered.document_ids().collect::<Vec<_>>());
        for id in installed.document_ids() {
            prop_assert_eq!(installed.document(id), recovered.document(id), "document {}", id);
        }
        prop_assert_eq!(
            (installed.document_count(), installed.input_count(), installed.output_count()),
            (recovered.document_count(), recovered.input_count(), recovered.output_count())
        );
        prop_assert_eq!(installed.segments(), recovered.segments());
        prop_assert_eq!(installed.reserved_ids(), recovered.reserved_ids());
        prop_assert_eq!(installed.next_seq(), recovered.next_seq());
    }

    /// A source record with a byte flipped is refused, naming its location.
    #[test]
    fn a_damaged_source_record_is_refused(
        steps in arb_steps(),
        pick in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        flip in 1u8..,
    ) {
        let changed = merge_with_one_source_changed(&steps, pick, |_, _, _, mut bytes| {
            let at = byte.index(bytes.len());
            bytes[at] ^= flip;
            bytes
        });
        let Some((victim, result)) = changed else { return Ok(()) };
        match result {
            Err(MergeError::Damaged { at, defect: Defect::Record(_) }) => prop_assert_eq!(at, victim),
            Err(e) => prop_assert!(false, "{e:?}"),
            Ok(_) => prop_assert!(false, "a damaged record at {:?} was copied", victim),
        }
    }

    /// A source record that is whole but sealed for another salt than its
    /// segment's (the merged segment's, another segment's, or format 2's)
    /// is refused: it cannot have been written there.
    #[test]
    fn a_source_record_sealed_for_another_salt_is_refused(
        steps in arb_steps(),
        pick in any::<prop::sample::Index>(),
        wrong in prop_oneof![Just(0usize), Just(1), Just(2)],
    ) {
        let changed = merge_with_one_source_changed(&steps, pick, |store, plan, _, mut bytes| {
            let wrong = [merged_salt(plan.merged), segment_salt(store.created + 1), Salt::UNSALTED][wrong];
            seal_record(&mut bytes, &wrong);
            bytes
        });
        let Some((victim, result)) = changed else { return Ok(()) };
        prop_assert!(
            matches!(
                result,
                Err(MergeError::Damaged { at, defect: Defect::Record(Corruption::ChecksumMismatch { .. }) })
                    if at == victim
            ),
            "{:?}",
            result.err()
        );
    }

    /// A valid record about another id than the index expects is refused.
    #[test]
    fn a_record_about_another_id_is_refused(
        steps in arb_steps(),
        pick in any::<prop::sample::Index>(),
        other in 1u64..1000,
    ) {
        let mut ids = None;
        let changed = merge_with_one_source_changed(&steps, pick, |store, _, from, bytes| {
            let expected = record_id(&bytes);
            ids = Some((expected + other, expected));
            with_id(&bytes, &store.salt(from), expected + other)
        });
        let Some((victim, result)) = changed else { return Ok(()) };
        let (found, expected) = ids.expect("the victim was read");
        prop_assert_eq!(result.err(), Some(MergeError::Damaged { at: victim, defect: Defect::WrongId { found, expected } }));
    }

    /// An input's record about the right input but naming another document
    /// is refused: copied as it is, it would join that document's chain on
    /// replay.
    #[test]
    fn a_record_naming_another_document_is_refused(steps in arb_steps(), other in 1u64..1000) {
        let mut store = Store::new();
        store.run(&steps);
        let plan = store.plan();
        let Some(document) = plan.documents.iter().find(|d| !d.inputs.is_empty()) else { return Ok(()) };
        let victim = document.inputs[0].value;
        let found = document.id + other;
        let result = write_merged(&store, &plan, |_, from| {
            if from == victim { with_document(store.at(from), &store.salt(from), found) } else { store.at(from).to_vec() }
        });
        prop_assert_eq!(
            result.err(),
            Some(MergeError::Damaged { at: victim, defect: Defect::WrongDocument { found, expected: document.id } })
        );
    }

    /// A valid record about the right id but of a kind the index never
    /// points at there (a tombstone, or the record beside it: a column
    /// update for a blob, an input's value for its output) is refused.
    #[test]
    fn a_record_of_the_wrong_kind_is_refused(
        steps in arb_steps(),
        pick in any::<prop::sample::Index>(),
        tombstone in any::<bool>(),
    ) {
        let mut store = Store::new();
        store.run(&steps);
        let plan = store.plan();
        let sources = expected_sources(&plan);
        if sources.is_empty() {
            return Ok(());
        }
        let k = pick.index(sources.len());
        let source = store.at(sources[k]);
        let id = record_id(source);
        let (value, document) = (Value::Int(0), 1);
        let source_salt = store.salt(sources[k]);
        let wrong = match checked_record(source, &source_salt, id).unwrap().kind {
            RecordKind::CreateDocument | RecordKind::SetBlob if tombstone => Owned::DeleteDocument,
            RecordKind::CreateDocument | RecordKind::SetBlob => Owned::SetColumns { columns: columns(&[]) },
            RecordKind::PutInput if tombstone => Owned::DeleteInput { document },
            RecordKind::PutInput => Owned::PutOutput { document, value },
            RecordKind::PutOutput if tombstone => Owned::DeleteOutput { document },
            RecordKind::PutOutput => Owned::PutInput { document, value },
            other => panic!("the index points at a {other:?} record"),
        };
        let result = write_merged(&store, &plan, |n, from| {
            if n == k { salted_record_bytes(&source_salt, 1, id, &wrong) } else { store.at(from).to_vec() }
        });
        let kind = wrong.as_mutation().kind();
        prop_assert_eq!(
            result.err(),
            Some(MergeError::Damaged { at: sources[k], defect: Defect::UnexpectedKind(kind) })
        );
    }
}

fn store(steps: &[(Id, Owned)]) -> Store {
    let mut store = Store::new();
    store.run(&steps.iter().map(|(id, m)| Step::Record(*id, m.clone())).collect::<Vec<_>>());
    store
}

#[test]
fn an_empty_index_merges_into_a_checkpoint_alone() {
    let store =
        store(&[(1, Owned::CreateDocument { columns: columns(&[]), blob: vec![] }), (1, Owned::DeleteDocument)]);
    let plan = store.plan();
    let written = write_from(&store, &plan);
    assert!(written.read.is_empty());
    assert_eq!(written.merged.relocations, []);
    assert_eq!(written.merged.records, 1);
    let checkpoint = written.merged.checkpoint.unwrap();
    assert_eq!((checkpoint.segment(), checkpoint.offset()), (plan.merged, SEGMENT_HEADER_LEN as u64));
    assert_eq!(written.out.len() as u64, SEGMENT_HEADER_LEN as u64 + written.merged.bytes);
}

/// A document written by one create record is copied byte for byte; one
/// whose blob or columns changed since becomes a new create record. Either
/// carries the document's version as its sequence number.
#[test]
fn a_document_is_copied_whole_or_rebuilt_into_one_create_record() {
    let create = |name: &str| Owned::CreateDocument { columns: columns(&[("name", name)]), blob: b"first".to_vec() };
    let store = store(&[
        (1, create("one")),
        (2, create("two")),
        (2, Owned::SetBlob { blob: b"second".to_vec() }),
        (3, create("three")),
        (3, Owned::SetColumns { columns: columns(&[("name", "renamed")]) }),
    ]);
    let plan = store.plan();
    let written = write_from(&store, &plan);
    let doc_record = |id: Id| {
        let r = written.merged.relocations.iter().find(|r| r.target == Target::DocumentBlob(id)).unwrap();
        bytes_at(&written.out, r.to).to_vec()
    };
    // Copied byte for byte but for the checksum, which is the merged
    // segment's.
    let source_at = store.log.kd.document(1).unwrap().blob;
    let (copy, source) = (doc_record(1), store.at(source_at));
    assert_eq!(copy[4..], source[4..]);
    assert_ne!(copy[..4], source[..4]);
    let mut resealed = source.to_vec();
    seal_record(&mut resealed, &written.salt);
    assert_eq!(copy, resealed);
    assert!(matches!(scan(&copy, &store.salt(source_at)), Scan::Invalid(Corruption::ChecksumMismatch { .. })));
    assert_eq!(record_blob(&copy, &written.salt, 1), Ok(&b"first"[..]));
    for (id, name, blob) in [(2, "two", &b"second"[..]), (3, "renamed", b"first")] {
        let bytes = doc_record(id);
        let record = checked_record(&bytes, &written.salt, id).unwrap();
        let version = store.log.kd.document(id).unwrap().version();
        assert_eq!(record.seq, version);
        assert!(version < plan.seq);
        assert_eq!(record.kind, RecordKind::CreateDocument);
        assert_eq!(record_columns(&bytes, &written.salt, id), columns(&[("name", name)]));
        assert_eq!(record_blob(&bytes, &written.salt, id), Ok(blob));
        assert!(matches!(scan(&bytes, &store.salt(source_at)), Scan::Invalid(Corruption::ChecksumMismatch { .. })));
    }
}

/// Entries overwritten while the merged segment was written keep their
/// newer record when it is installed.
#[test]
fn writes_during_the_merge_keep_their_newer_records() {
    let mut store = store(&[
        (1, Owned::CreateDocument { columns: columns(&[]), blob: b"blob".to_vec() }),
        (4, Owned::PutInput { document: 1, value: Value::Int(1) }),
        (4, Owned::PutOutput { document: 1, value: Value::Int(2) }),
    ]);
    let plan = store.plan();
    let written = write_from(&store, &plan);
    store.roll(2);
    store.run(&[Step::Record(4, Owned::PutOutput { document: 1, value: Value::Int(3) })]);
    let newer = store.log.kd.output(1, 4).unwrap();
    let installed = store.log.kd.install_compaction(&plan, &written.merged);
    assert_eq!(installed, Installed { relocated: written.merged.relocations.len() as u64 - 1, stale: 1 });
    assert_eq!(store.log.kd.output(1, 4), Ok(newer));
    assert_eq!(store.log.kd.input(1, 4).unwrap().value.segment(), plan.merged);
}

/// The merged segment's salt is the one it was started with, in its header
/// and in every record's checksum, whatever its sources' salts were: none
/// of its records is valid under any of them, and its replay under its
/// header's salt gives every record.
#[test]
fn a_merged_segment_is_sealed_with_its_own_salt() {
    let mut store = store(&[
        (1, Owned::CreateDocument { columns: columns(&[("k", "v")]), blob: b"<p>".to_vec() }),
        (4, Owned::PutInput { document: 1, value: Value::Int(1) }),
    ]);
    store.roll(2);
    store.run(&[
        Step::Record(4, Owned::PutOutput { document: 1, value: Value::Str("out".into()) }),
        Step::Record(5, Owned::CreateDocument { columns: columns(&[]), blob: b"five".to_vec() }),
    ]);
    let plan = store.plan();
    assert_eq!(plan.sources, [seg(1), seg(2)]);
    let written = write_from(&store, &plan);
    assert_eq!(written.salt, merged_salt(plan.merged));
    assert_eq!(SegmentHeader::decode(&written.out).unwrap().salt, written.salt);
    let merged = records(plan.merged, &written.salt, &written.out).unwrap();
    assert_eq!(merged.len(), 5);
    for source in [seg(1), seg(2)] {
        let source_salt = store.salts[&source];
        for &(at, ..) in &merged {
            let bytes = bytes_at(&written.out, at);
            assert!(matches!(scan(bytes, &source_salt), Scan::Invalid(Corruption::ChecksumMismatch { .. })), "{at:?}");
        }
        // Read as if it had its source's salt, the merged segment has no
        // valid record at all.
        assert!(records(plan.merged, &source_salt, &written.out).is_err());
    }
    assert!(records(plan.merged, &salt(), &written.out).is_err());
    let replayed = replay(plan.merged, &written.out).unwrap();
    assert_eq!(replayed.document_ids().collect::<Vec<_>>(), [1, 5]);
}
