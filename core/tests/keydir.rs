//! `KeyDir::apply` and the lookups, including the per-segment byte accounting.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{Applied, Columns, Effect, Id, KeyDir, Location, Missing, RecordMeta, SegmentId, SegmentUsage};

fn seg(n: u32) -> SegmentId {
    SegmentId::new(n).unwrap()
}

fn columns(pairs: &[(&str, &str)]) -> Columns {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// A log being written: hands out sequence numbers and increasing offsets
/// in the current segment, and applies each record to its key directory.
struct Log {
    kd: KeyDir,
    segment: SegmentId,
    offset: u32,
    seq: u64,
}

impl Log {
    fn new() -> Self {
        Log { kd: KeyDir::new(), segment: seg(1), offset: 20, seq: 0 }
    }

    /// Moves on to a new segment.
    fn roll(&mut self, segment: u32) {
        self.segment = seg(segment);
        self.offset = 20;
    }

    /// Appends a record of `len` bytes about `id` and applies it.
    fn apply_len(&mut self, id: Id, effect: Effect, len: u32) -> (Applied, Location) {
        self.seq += 1;
        let location = Location::new(self.segment, u64::from(self.offset), len).unwrap();
        self.offset += len;
        (self.kd.apply(RecordMeta { seq: self.seq, id, location }, effect), location)
    }

    /// Appends and applies a record that must take effect.
    fn changed(&mut self, id: Id, effect: Effect, len: u32) {
        let label = format!("{effect:?} on {id}");
        assert_eq!(self.apply_len(id, effect, len).0, Applied::Changed, "{label}");
    }

    fn apply(&mut self, id: Id, effect: Effect) -> (Applied, Location) {
        self.apply_len(id, effect, 100)
    }

    fn create(&mut self, id: Id) -> Location {
        let (applied, at) = self.apply(id, Effect::CreateDocument { columns: columns(&[("name", "doc")]) });
        assert_eq!(applied, Applied::Changed);
        at
    }

    fn put_input(&mut self, document: Id, id: Id) -> Location {
        let (applied, at) = self.apply(id, Effect::PutInput { document });
        assert_eq!(applied, Applied::Changed);
        at
    }

    fn put_output(&mut self, input: Id) -> Location {
        let (applied, at) = self.apply(input, Effect::PutOutput);
        assert_eq!(applied, Applied::Changed);
        at
    }

    fn usage(&self, n: u32) -> SegmentUsage {
        self.kd.segments().get(&seg(n)).copied().unwrap_or_default()
    }
}

#[test]
fn a_new_key_directory_is_empty() {
    let kd = KeyDir::new();
    assert_eq!(kd.next_id(), 1);
    assert_eq!(kd.next_seq(), 1);
    assert_eq!((kd.document_count(), kd.input_count(), kd.output_count()), (0, 0, 0));
    assert!(kd.segments().is_empty());
    assert_eq!(kd.document_ids().count(), 0);
}

#[test]
fn created_document_can_be_looked_up() {
    let mut log = Log::new();
    let at = log.create(1);
    let doc = log.kd.document(1).unwrap();
    assert_eq!(doc.blob, at);
    assert_eq!(doc.columns_at, at);
    assert_eq!(doc.columns(), columns(&[("name", "doc")]));
    assert!(doc.inputs.is_empty());
    assert_eq!(log.kd.document_count(), 1);
    assert_eq!(log.kd.document_ids().collect::<Vec<_>>(), [1]);
}

#[test]
fn creating_an_existing_document_is_ignored_and_keeps_the_original() {
    let mut log = Log::new();
    let at = log.create(1);
    let (applied, _) = log.apply(1, Effect::CreateDocument { columns: columns(&[("other", "x")]) });
    assert_eq!(applied, Applied::Ignored);
    let doc = log.kd.document(1).unwrap();
    assert_eq!((doc.blob, doc.columns_at), (at, at));
    assert_eq!(doc.columns(), columns(&[("name", "doc")]));
}

#[test]
fn creating_a_document_with_an_input_id_is_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let (applied, _) = log.apply(2, Effect::CreateDocument { columns: Columns::new() });
    assert_eq!(applied, Applied::Ignored);
    assert_eq!(log.kd.document(2), Err(Missing::Document(2)));
}

#[test]
fn set_blob_moves_only_the_blob_location() {
    let mut log = Log::new();
    let created = log.create(1);
    let (applied, at) = log.apply(1, Effect::SetBlob);
    assert_eq!(applied, Applied::Changed);
    let doc = log.kd.document(1).unwrap();
    assert_eq!(doc.blob, at);
    assert_eq!(doc.columns_at, created);
    assert_eq!(doc.columns(), columns(&[("name", "doc")]));
}

#[test]
fn set_columns_replaces_the_columns_and_moves_only_their_location() {
    let mut log = Log::new();
    let created = log.create(1);
    let new = columns(&[("name", "renamed"), ("v", "2")]);
    let (applied, at) = log.apply(1, Effect::SetColumns { columns: new.clone() });
    assert_eq!(applied, Applied::Changed);
    let doc = log.kd.document(1).unwrap();
    assert_eq!(doc.columns_at, at);
    assert_eq!(doc.columns(), new);
    assert_eq!(doc.blob, created);
}

#[test]
fn missing_document_lookups_report_the_document() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    assert_eq!(log.kd.document(9).unwrap_err(), Missing::Document(9));
    assert_eq!(log.kd.input(9, 2).unwrap_err(), Missing::Document(9));
    assert_eq!(log.kd.output(9, 2).unwrap_err(), Missing::Document(9));
}

#[test]
fn missing_input_lookups_report_the_input() {
    let mut log = Log::new();
    log.create(1);
    assert_eq!(log.kd.input(1, 5).unwrap_err(), Missing::Input { document: 1, input: 5 });
    assert_eq!(log.kd.output(1, 5).unwrap_err(), Missing::Input { document: 1, input: 5 });
}

#[test]
fn an_input_looked_up_under_the_wrong_document_is_missing() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    log.put_input(1, 3);
    log.put_output(3);
    assert_eq!(log.kd.input(2, 3).unwrap_err(), Missing::Input { document: 2, input: 3 });
    assert_eq!(log.kd.output(2, 3).unwrap_err(), Missing::Input { document: 2, input: 3 });
    assert!(log.kd.input(1, 3).is_ok());
}

#[test]
fn a_document_id_looked_up_as_an_input_is_missing() {
    let mut log = Log::new();
    log.create(1);
    assert_eq!(log.kd.input(1, 1).unwrap_err(), Missing::Input { document: 1, input: 1 });
}

#[test]
fn an_input_without_output_reports_a_missing_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    assert_eq!(log.kd.output(1, 2), Err(Missing::Output { document: 1, input: 2 }));
}

#[test]
fn put_input_adds_an_input_to_its_document() {
    let mut log = Log::new();
    log.create(1);
    let at = log.put_input(1, 2);
    let entry = log.kd.input(1, 2).unwrap();
    assert_eq!(entry.document, 1);
    assert_eq!(entry.value, at);
    assert_eq!(entry.output, None);
    assert_eq!(log.kd.document(1).unwrap().inputs, [2]);
    assert_eq!(log.kd.input_count(), 1);
}

#[test]
fn put_input_again_replaces_the_value_location_and_keeps_the_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let out = log.put_output(2);
    let (applied, at) = log.apply(2, Effect::PutInput { document: 1 });
    assert_eq!(applied, Applied::Changed);
    let entry = log.kd.input(1, 2).unwrap();
    assert_eq!((entry.value, entry.output), (at, Some(out)));
    assert_eq!(log.kd.document(1).unwrap().inputs, [2]);
    assert_eq!(log.kd.input_count(), 1);
}

#[test]
fn put_input_moving_an_input_to_another_document_is_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    let at = log.put_input(1, 3);
    let (applied, _) = log.apply(3, Effect::PutInput { document: 2 });
    assert_eq!(applied, Applied::Ignored);
    assert_eq!(log.kd.input(1, 3).unwrap().value, at);
    assert!(log.kd.document(2).unwrap().inputs.is_empty());
}

#[test]
fn put_input_for_a_missing_document_is_ignored() {
    let mut log = Log::new();
    let (applied, _) = log.apply(2, Effect::PutInput { document: 1 });
    assert_eq!(applied, Applied::Ignored);
    assert_eq!(log.kd.input_count(), 0);
}

#[test]
fn put_input_with_a_document_id_is_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    let (applied, _) = log.apply(2, Effect::PutInput { document: 1 });
    assert_eq!(applied, Applied::Ignored);
    assert!(log.kd.document(1).unwrap().inputs.is_empty());
    assert!(log.kd.document(2).is_ok());
}

#[test]
fn put_output_sets_and_replaces_the_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let first = log.put_output(2);
    assert_eq!(log.kd.output(1, 2), Ok(first));
    assert_eq!(log.kd.output_count(), 1);
    let second = log.put_output(2);
    assert_eq!(log.kd.output(1, 2), Ok(second));
    assert_eq!(log.kd.output_count(), 1);
}

#[test]
fn delete_output_removes_the_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    log.put_output(2);
    let (applied, _) = log.apply(2, Effect::DeleteOutput);
    assert_eq!(applied, Applied::Changed);
    assert_eq!(log.kd.output(1, 2), Err(Missing::Output { document: 1, input: 2 }));
    assert_eq!(log.kd.output_count(), 0);
    assert!(log.kd.input(1, 2).is_ok());
}

#[test]
fn deleting_a_missing_output_is_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    assert_eq!(log.apply(2, Effect::DeleteOutput).0, Applied::Ignored);
    assert_eq!(log.kd.output_count(), 0);
}

#[test]
fn delete_document_removes_its_inputs_and_outputs() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    log.put_input(1, 3);
    log.put_input(1, 4);
    log.put_input(2, 5);
    log.put_output(3);
    log.put_output(5);
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (2, 3, 2));

    assert_eq!(log.apply(1, Effect::DeleteDocument).0, Applied::Changed);
    assert_eq!(log.kd.document(1).unwrap_err(), Missing::Document(1));
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (1, 1, 1));
    assert_eq!(log.kd.document_ids().collect::<Vec<_>>(), [2]);
    // The other document is untouched.
    assert_eq!(log.kd.document(2).unwrap().inputs, [5]);
    assert!(log.kd.output(2, 5).is_ok());
    // The deleted inputs are gone for good: records about them are garbage.
    for input in [3, 4] {
        assert_eq!(log.apply(input, Effect::PutOutput).0, Applied::Ignored);
        assert_eq!(log.apply(input, Effect::DeleteInput).0, Applied::Ignored);
    }
}

#[test]
fn delete_input_keeps_the_remaining_chain_in_order() {
    let mut log = Log::new();
    log.create(1);
    for input in 2..=6 {
        log.put_input(1, input);
    }
    log.put_output(4);
    assert_eq!(log.apply(4, Effect::DeleteInput).0, Applied::Changed);
    assert_eq!(log.kd.document(1).unwrap().inputs, [2, 3, 5, 6]);
    assert_eq!(log.kd.input(1, 4).unwrap_err(), Missing::Input { document: 1, input: 4 });
    assert_eq!((log.kd.input_count(), log.kd.output_count()), (4, 0));
    assert_eq!(log.apply(2, Effect::DeleteInput).0, Applied::Changed);
    assert_eq!(log.apply(6, Effect::DeleteInput).0, Applied::Changed);
    assert_eq!(log.kd.document(1).unwrap().inputs, [3, 5]);
}

#[test]
fn inputs_are_kept_in_id_order() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    for (doc, input) in [(1, 10), (2, 11), (1, 12), (1, 13), (2, 14)] {
        log.put_input(doc, input);
    }
    assert_eq!(log.kd.document(1).unwrap().inputs, [10, 12, 13]);
    assert_eq!(log.kd.document(2).unwrap().inputs, [11, 14]);
}

#[test]
fn inputs_applied_out_of_id_order_are_sorted_into_place() {
    let mut log = Log::new();
    log.create(1);
    for input in [7, 3, 9, 5, 2] {
        log.put_input(1, input);
    }
    assert_eq!(log.kd.document(1).unwrap().inputs, [2, 3, 5, 7, 9]);
    assert_eq!(log.apply(5, Effect::DeleteInput).0, Applied::Changed);
    assert_eq!(log.kd.document(1).unwrap().inputs, [2, 3, 7, 9]);
}

#[test]
fn next_id_and_next_seq_are_one_above_the_largest_seen() {
    let mut kd = KeyDir::new();
    let at = |offset: u32| Location::new(seg(1), u64::from(offset), 30).unwrap();
    let apply =
        |kd: &mut KeyDir, seq, id, offset, effect| kd.apply(RecordMeta { seq, id, location: at(offset) }, effect);
    let _ = apply(&mut kd, 5, 3, 20, Effect::CreateDocument { columns: Columns::new() });
    assert_eq!((kd.next_id(), kd.next_seq()), (4, 6));
    // Smaller ids and sequence numbers do not move them back.
    let _ = apply(&mut kd, 2, 1, 50, Effect::CreateDocument { columns: Columns::new() });
    assert_eq!((kd.next_id(), kd.next_seq()), (4, 6));
    // Ignored records and tombstones count too: their ids were handed out.
    assert_eq!(apply(&mut kd, 9, 40, 80, Effect::DeleteInput), Applied::Ignored);
    assert_eq!((kd.next_id(), kd.next_seq()), (41, 10));
    assert_eq!(apply(&mut kd, 10, 3, 110, Effect::DeleteDocument), Applied::Changed);
    assert_eq!((kd.next_id(), kd.next_seq()), (41, 11));
}

#[test]
fn records_about_missing_things_are_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let effects = [
        (9, Effect::SetBlob),
        (9, Effect::SetColumns { columns: Columns::new() }),
        (9, Effect::DeleteDocument),
        (9, Effect::PutInput { document: 8 }),
        (9, Effect::DeleteInput),
        (9, Effect::PutOutput),
        (9, Effect::DeleteOutput),
        (2, Effect::DeleteOutput),
        // An input id is not a document, a document id is not an input.
        (2, Effect::SetBlob),
        (2, Effect::DeleteDocument),
        (1, Effect::DeleteInput),
        (1, Effect::PutOutput),
    ];
    for (id, effect) in effects {
        let label = format!("{effect:?} on {id}");
        assert_eq!(log.apply(id, effect).0, Applied::Ignored, "{label}");
    }
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (1, 1, 0));
    assert_eq!(log.kd.document(1).unwrap().inputs, [2]);
}

#[test]
fn ignored_records_count_as_total_bytes_but_not_live_bytes() {
    let mut log = Log::new();
    assert_eq!(log.apply_len(9, Effect::SetBlob, 40).0, Applied::Ignored);
    assert_eq!(log.apply_len(9, Effect::PutOutput, 60).0, Applied::Ignored);
    assert_eq!(log.usage(1), SegmentUsage { total_bytes: 100, live_bytes: 0, records: 2 });
    assert_eq!(log.usage(1).garbage_bytes(), 100);
}

#[test]
fn tombstones_are_never_live() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: Columns::new() }, 50);
    log.changed(1, Effect::DeleteDocument, 25);
    assert_eq!(log.usage(1), SegmentUsage { total_bytes: 75, live_bytes: 0, records: 2 });
}

#[test]
fn create_record_stays_live_while_its_columns_are_current() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: Columns::new() }, 50);
    log.changed(1, Effect::SetBlob, 30);
    // The create record still holds the current columns.
    assert_eq!(log.usage(1).live_bytes, 80);
    log.changed(1, Effect::SetColumns { columns: Columns::new() }, 20);
    // Now nothing points to it.
    assert_eq!(log.usage(1).live_bytes, 50);
    assert_eq!(log.usage(1).total_bytes, 100);
}

#[test]
fn create_record_stays_live_while_its_blob_is_current() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: Columns::new() }, 50);
    log.changed(1, Effect::SetColumns { columns: Columns::new() }, 30);
    assert_eq!(log.usage(1).live_bytes, 80);
    log.changed(1, Effect::SetBlob, 20);
    assert_eq!(log.usage(1).live_bytes, 50);
}

#[test]
fn deleting_a_document_frees_its_shared_create_record_once() {
    let mut log = Log::new();
    log.changed(7, Effect::CreateDocument { columns: Columns::new() }, 50);
    log.changed(1, Effect::CreateDocument { columns: Columns::new() }, 40);
    log.changed(1, Effect::DeleteDocument, 25);
    assert_eq!(log.usage(1).live_bytes, 50);
}

#[test]
fn replaced_records_stop_being_live_in_their_own_segment() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: Columns::new() }, 50);
    log.changed(2, Effect::PutInput { document: 1 }, 30);
    log.changed(2, Effect::PutOutput, 20);
    log.roll(2);
    log.changed(2, Effect::PutInput { document: 1 }, 35);
    log.changed(2, Effect::PutOutput, 25);
    assert_eq!(log.usage(1), SegmentUsage { total_bytes: 100, live_bytes: 50, records: 3 });
    assert_eq!(log.usage(2), SegmentUsage { total_bytes: 60, live_bytes: 60, records: 2 });
    log.changed(1, Effect::DeleteDocument, 25);
    assert_eq!(log.usage(1).live_bytes, 0);
    assert_eq!(log.usage(2), SegmentUsage { total_bytes: 85, live_bytes: 0, records: 3 });
    assert_eq!(log.kd.segments().keys().map(|s| s.get()).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_checkpoint_raises_next_id_to_its_counter() {
    let mut log = Log::new();
    log.create(3);
    log.changed(0, Effect::Checkpoint { next_id: 50 }, 37);
    assert_eq!(log.kd.next_id(), 50);
    // A lower counter never moves it back.
    log.changed(0, Effect::Checkpoint { next_id: 10 }, 37);
    assert_eq!(log.kd.next_id(), 50);
}

#[test]
fn a_checkpoint_stays_live_without_any_document() {
    let mut log = Log::new();
    log.changed(0, Effect::Checkpoint { next_id: 1 }, 37);
    assert_eq!(log.usage(1), SegmentUsage { total_bytes: 37, live_bytes: 37, records: 1 });
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (0, 0, 0));
}

#[test]
fn a_later_checkpoint_replaces_the_earlier_one() {
    let mut log = Log::new();
    log.changed(0, Effect::Checkpoint { next_id: 1 }, 37);
    log.roll(2);
    log.changed(0, Effect::Checkpoint { next_id: 1 }, 40);
    assert_eq!(log.usage(1).live_bytes, 0);
    assert_eq!(log.usage(2).live_bytes, 40);
}

// ---------------------------------------------------------------------------
// Random effect sequences.

/// One record to apply: which id, what effect, in which segment, how long.
#[derive(Clone, Debug)]
struct Step {
    id: Id,
    effect: Effect,
    segment: u32,
    len: u32,
}

fn arb_effect() -> impl Strategy<Value = Effect> {
    let cols = prop_oneof![Just(Columns::new()), Just(columns(&[("a", "1")])), Just(columns(&[("b", "2")]))];
    prop_oneof![
        2 => cols.clone().prop_map(|columns| Effect::CreateDocument { columns }),
        1 => Just(Effect::SetBlob),
        1 => cols.prop_map(|columns| Effect::SetColumns { columns }),
        1 => Just(Effect::DeleteDocument),
        4 => (1u64..=4).prop_map(|document| Effect::PutInput { document }),
        1 => Just(Effect::DeleteInput),
        3 => Just(Effect::PutOutput),
        2 => Just(Effect::DeleteOutput),
        1 => (0u64..=12).prop_map(|next_id| Effect::Checkpoint { next_id }),
    ]
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    // Small id spaces so that most records hit something that exists:
    // documents 1..=4, inputs 4..=8; the overlap makes records
    // whose id belongs to the other kind of thing.
    let step = (arb_effect(), 1u64..=4, 4u64..=8, 1u32..=3, 1u32..=200).prop_map(
        |(effect, document_id, input_id, segment, len)| {
            let id = match effect {
                Effect::CreateDocument { .. }
                | Effect::SetBlob
                | Effect::SetColumns { .. }
                | Effect::DeleteDocument => document_id,
                // A checkpoint's record id is 0.
                Effect::Checkpoint { .. } => 0,
                _ => input_id,
            };
            Step { id, effect, segment, len }
        },
    );
    vec(step, 0..80)
}

/// Where each step's record goes: increasing offsets in each segment.
fn locations(steps: &[Step]) -> Vec<Location> {
    let mut offsets: HashMap<u32, u32> = HashMap::new();
    steps
        .iter()
        .map(|step| {
            let offset = offsets.entry(step.segment).or_insert(20);
            let location = Location::new(seg(step.segment), u64::from(*offset), step.len).unwrap();
            *offset += step.len;
            location
        })
        .collect()
}

/// The live checkpoint record among the steps (the last one applied), which
/// the lookups do not show.
fn checkpoints(steps: &[Step]) -> Vec<Location> {
    let at = locations(steps);
    let last = steps.iter().zip(at).rev().find(|(s, _)| matches!(s.effect, Effect::Checkpoint { .. }));
    last.map(|(_, l)| l).into_iter().collect()
}

/// Applies the steps with increasing offsets in each segment and increasing
/// sequence numbers; returns the directory and what each apply said.
fn run(steps: &[Step]) -> (KeyDir, Vec<Applied>) {
    let mut kd = KeyDir::new();
    let mut applied = Vec::new();
    for (i, (step, location)) in steps.iter().zip(locations(steps)).enumerate() {
        let meta = RecordMeta { seq: i as u64 + 1, id: step.id, location };
        applied.push(kd.apply(meta, step.effect.clone()));
    }
    (kd, applied)
}

/// Every location the directory references, each once, plus the live
/// checkpoint record.
fn referenced(kd: &KeyDir, checkpoints: &[Location]) -> HashSet<Location> {
    let mut locations: HashSet<Location> = checkpoints.iter().copied().collect();
    for id in kd.document_ids() {
        let doc = kd.document(id).unwrap();
        locations.insert(doc.blob);
        locations.insert(doc.columns_at);
        for &input in &doc.inputs {
            let entry = kd.input(id, input).unwrap();
            locations.insert(entry.value);
            locations.extend(entry.output);
        }
    }
    locations
}

/// A straightforward model of the directory's documented semantics.
#[derive(Debug, Default, PartialEq)]
struct Model {
    documents: BTreeMap<Id, (Location, Location, Columns)>,
    /// input -> (document, value, output)
    inputs: BTreeMap<Id, (Id, Location, Option<Location>)>,
}

impl Model {
    fn apply(&mut self, id: Id, effect: &Effect, at: Location) -> Applied {
        use Applied::*;
        match effect {
            Effect::CreateDocument { columns } => {
                if self.documents.contains_key(&id) || self.inputs.contains_key(&id) {
                    return Ignored;
                }
                self.documents.insert(id, (at, at, columns.clone()));
            }
            Effect::SetBlob => match self.documents.get_mut(&id) {
                Some(doc) => doc.0 = at,
                None => return Ignored,
            },
            Effect::SetColumns { columns } => match self.documents.get_mut(&id) {
                Some(doc) => (doc.1, doc.2) = (at, columns.clone()),
                None => return Ignored,
            },
            Effect::DeleteDocument => {
                if self.documents.remove(&id).is_none() {
                    return Ignored;
                }
                self.inputs.retain(|_, (doc, _, _)| *doc != id);
            }
            Effect::PutInput { document } => match self.inputs.get_mut(&id) {
                Some(input) if input.0 == *document => input.1 = at,
                Some(_) => return Ignored,
                None if self.documents.contains_key(&id) || !self.documents.contains_key(document) => {
                    return Ignored;
                }
                None => {
                    self.inputs.insert(id, (*document, at, None));
                }
            },
            Effect::DeleteInput => {
                if self.inputs.remove(&id).is_none() {
                    return Ignored;
                }
            }
            Effect::PutOutput => match self.inputs.get_mut(&id) {
                Some(input) => input.2 = Some(at),
                None => return Ignored,
            },
            Effect::DeleteOutput => match self.inputs.get_mut(&id) {
                Some(input) if input.2.is_some() => input.2 = None,
                _ => return Ignored,
            },
            Effect::Checkpoint { .. } | Effect::ReserveIds { .. } => {}
        }
        Changed
    }
}

proptest! {
    #[test]
    fn live_bytes_equal_the_lengths_of_the_distinct_referenced_records(steps in arb_steps()) {
        let (kd, _) = run(&steps);
        let mut expected: BTreeMap<SegmentId, u64> = BTreeMap::new();
        for location in referenced(&kd, &checkpoints(&steps)) {
            *expected.entry(location.segment()).or_default() += u64::from(location.len());
        }
        for (segment, usage) in kd.segments() {
            prop_assert_eq!(usage.live_bytes, expected.get(segment).copied().unwrap_or(0), "segment {}", segment);
        }
        for segment in expected.keys() {
            prop_assert!(kd.segments().contains_key(segment), "segment {} has live data but no usage", segment);
        }
    }

    #[test]
    fn live_bytes_stay_exact_after_every_step(steps in arb_steps()) {
        for n in 0..=steps.len() {
            let (kd, _) = run(&steps[..n]);
            let live: u64 = referenced(&kd, &checkpoints(&steps[..n])).iter().map(|l| u64::from(l.len())).sum();
            let counted: u64 = kd.segments().values().map(|u| u.live_bytes).sum();
            prop_assert_eq!(counted, live, "after {} steps", n);
        }
    }

    #[test]
    fn total_bytes_and_records_count_every_applied_record(steps in arb_steps()) {
        let (kd, _) = run(&steps);
        let mut expected: BTreeMap<SegmentId, SegmentUsage> = BTreeMap::new();
        for step in &steps {
            let usage = expected.entry(seg(step.segment)).or_default();
            usage.total_bytes += u64::from(step.len);
            usage.records += 1;
        }
        let actual: BTreeMap<SegmentId, (u64, u64)> =
            kd.segments().iter().map(|(s, u)| (*s, (u.total_bytes, u.records))).collect();
        let expected: BTreeMap<SegmentId, (u64, u64)> =
            expected.iter().map(|(s, u)| (*s, (u.total_bytes, u.records))).collect();
        prop_assert_eq!(actual, expected);
        for usage in kd.segments().values() {
            prop_assert!(usage.live_bytes <= usage.total_bytes);
        }
    }

    #[test]
    fn directory_matches_a_reference_model(steps in arb_steps()) {
        let (kd, applied) = run(&steps);
        let mut model = Model::default();
        for (i, (step, at)) in steps.iter().zip(locations(&steps)).enumerate() {
            prop_assert_eq!(model.apply(step.id, &step.effect, at), applied[i], "step {}: {:?}", i, step);
        }
        let mut ids: Vec<Id> = kd.document_ids().collect();
        ids.sort_unstable();
        prop_assert_eq!(&ids, &model.documents.keys().copied().collect::<Vec<_>>());
        for (&id, (blob, columns_at, columns)) in &model.documents {
            let doc = kd.document(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((&doc.blob, &doc.columns_at, &doc.columns()), (blob, columns_at, columns));
            let inputs: Vec<Id> = model.inputs.iter().filter(|(_, v)| v.0 == id).map(|(k, _)| *k).collect();
            prop_assert_eq!(&doc.inputs, &inputs, "inputs of document {}", id);
        }
        for (&input, &(document, value, output)) in &model.inputs {
            let entry = kd.input(document, input).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((entry.value, entry.output), (value, output));
        }
        prop_assert_eq!(kd.document_count(), model.documents.len());
        prop_assert_eq!(kd.input_count(), model.inputs.len());
        prop_assert_eq!(kd.output_count(), model.inputs.values().filter(|v| v.2.is_some()).count() as u64);
    }

    #[test]
    fn next_id_and_next_seq_follow_every_applied_record(steps in arb_steps()) {
        let (kd, _) = run(&steps);
        let above_ids = steps.iter().map(|s| s.id + 1);
        let checkpointed = steps.iter().filter_map(|s| match s.effect {
            Effect::Checkpoint { next_id } => Some(next_id),
            _ => None,
        });
        prop_assert_eq!(kd.next_id(), above_ids.chain(checkpointed).fold(1, u64::max));
        prop_assert_eq!(kd.next_seq(), steps.len() as u64 + 1);
    }
}

#[test]
fn reserved_ids_are_skipped_only_when_resuming_after_a_restart() {
    let mut kd = KeyDir::new();
    let at = Location::new(SegmentId::FIRST, 20, 33).unwrap();
    let meta = RecordMeta { seq: 1, id: 0, location: at };
    assert_eq!(kd.apply(meta, Effect::ReserveIds { below: 1025 }), Applied::Changed);
    assert_eq!(kd.next_id(), 1, "a reservation does not move the live id counter");
    assert_eq!(kd.reserved_ids(), 1025);
    assert_eq!(kd.segments()[&SegmentId::FIRST].live_bytes, 33, "the newest reservation is live");
    let later = Location::new(SegmentId::FIRST, 53, 33).unwrap();
    let _ = kd.apply(RecordMeta { seq: 2, id: 0, location: later }, Effect::ReserveIds { below: 2049 });
    assert_eq!(kd.segments()[&SegmentId::FIRST].live_bytes, 33, "an older reservation is garbage");
    kd.resume_after_reservations();
    assert_eq!(kd.next_id(), 2049);
}
