//! `KeyDir::apply` and the lookups, including the per-segment byte accounting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

mod common;

use common::{Log, columns, seg};
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{
    Applied, Columns, DocumentEntry, Effect, EncodedColumns, Id, InputEntry, KeyDir, Location, Missing, RecordMeta,
    SEGMENT_HEADER_LEN, SegmentId, SegmentUsage,
};

/// The column map in the form effects carry it. The encoding is leaked, so
/// the effect can live as long as the test needs; tests build few of them.
fn encoded(pairs: &[(&str, &str)]) -> EncodedColumns<'static> {
    EncodedColumns::encode(&columns(pairs), Box::leak(Box::default()))
}

fn no_columns() -> EncodedColumns<'static> {
    encoded(&[])
}

impl Log {
    fn apply(&mut self, id: Id, effect: Effect<'_>) -> (Applied, Location) {
        self.apply_len(id, effect, 100)
    }

    fn create(&mut self, id: Id) -> Location {
        let mut buf = Vec::new();
        let columns = EncodedColumns::encode(&columns(&[("name", "doc")]), &mut buf);
        self.changed(id, Effect::CreateDocument { columns }, 100)
    }

    fn put_input(&mut self, document: Id, id: Id) -> Location {
        self.changed(id, Effect::PutInput { document }, 100)
    }

    fn put_output(&mut self, document: Id, input: Id) -> Location {
        self.changed(input, Effect::PutOutput { document }, 100)
    }

    fn usage(&self, n: u32) -> SegmentUsage {
        self.kd.segments().get(&seg(n)).copied().unwrap_or_default()
    }

    /// The ids of a document's inputs, in chain order.
    fn chain(&self, document: Id) -> Vec<Id> {
        self.kd.document(document).unwrap().inputs.iter().map(|input| input.id).collect()
    }

    /// What the index shows, apart from the total bytes and record counts
    /// that every record adds to, ignored or not.
    fn index(&self) -> Index {
        let mut documents: Vec<(Id, DocumentEntry)> =
            self.kd.document_ids().map(|id| (id, self.kd.document(id).unwrap().clone())).collect();
        documents.sort_unstable_by_key(|&(id, _)| id);
        let live = self.kd.segments().iter().map(|(s, u)| (*s, u.live_bytes)).filter(|&(_, l)| l > 0).collect();
        let counts = (self.kd.document_count(), self.kd.input_count(), self.kd.output_count());
        Index { documents, counts, live }
    }
}

#[derive(Debug, PartialEq)]
struct Index {
    documents: Vec<(Id, DocumentEntry)>,
    counts: (usize, u64, u64),
    live: BTreeMap<SegmentId, u64>,
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
    let (applied, _) = log.apply(1, Effect::CreateDocument { columns: encoded(&[("other", "x")]) });
    assert_eq!(applied, Applied::Ignored);
    let doc = log.kd.document(1).unwrap();
    assert_eq!((doc.blob, doc.columns_at), (at, at));
    assert_eq!(doc.columns(), columns(&[("name", "doc")]));
}

/// Inputs live in their document's namespace: a valid log never gives a
/// document the id of an input, but if one did, the two would not meet.
#[test]
fn a_document_and_an_input_with_the_same_id_are_separate_entries() {
    let mut log = Log::new();
    log.create(1);
    let value = log.put_input(1, 2);
    let output = log.put_output(1, 2);
    let created = log.create(2);
    assert_eq!(log.kd.document(2).unwrap().blob, created);
    assert!(log.kd.document(2).unwrap().inputs.is_empty());
    assert_eq!(log.kd.input(1, 2), Ok(&InputEntry { id: 2, value, output: Some(output) }));
    assert_eq!(log.kd.input(2, 2), Err(Missing::Input { document: 2, input: 2 }));
    // Deleting the document leaves the input of the same id alone.
    assert_eq!(log.apply(2, Effect::DeleteDocument).0, Applied::Changed);
    assert_eq!(log.kd.input(1, 2), Ok(&InputEntry { id: 2, value, output: Some(output) }));
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (1, 1, 1));
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
    let mut buf = Vec::new();
    let (applied, at) = log.apply(1, Effect::SetColumns { columns: EncodedColumns::encode(&new, &mut buf) });
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
    log.put_output(1, 3);
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
    assert_eq!(entry.id, 2);
    assert_eq!(entry.value, at);
    assert_eq!(entry.output, None);
    assert_eq!(log.kd.document(1).unwrap().inputs, [InputEntry { id: 2, value: at, output: None }]);
    assert_eq!(log.kd.document(1).unwrap().input(2), Some(entry));
    assert_eq!(log.kd.input_count(), 1);
}

#[test]
fn put_input_again_replaces_the_value_location_and_keeps_the_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let out = log.put_output(1, 2);
    let (applied, at) = log.apply(2, Effect::PutInput { document: 1 });
    assert_eq!(applied, Applied::Changed);
    let entry = log.kd.input(1, 2).unwrap();
    assert_eq!((entry.value, entry.output), (at, Some(out)));
    assert_eq!(log.chain(1), [2]);
    assert_eq!((log.kd.input_count(), log.kd.output_count()), (1, 1));
}

/// An input is found through its document: a put naming another document
/// never moves or changes the first document's input. (A valid log never
/// reuses an input id under another document.)
#[test]
fn put_input_naming_another_document_leaves_the_first_documents_input_alone() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    let value = log.put_input(1, 3);
    let output = log.put_output(1, 3);
    let other = log.put_input(2, 3);
    assert_eq!(log.kd.input(1, 3), Ok(&InputEntry { id: 3, value, output: Some(output) }));
    assert_eq!(log.kd.input(2, 3), Ok(&InputEntry { id: 3, value: other, output: None }));
    assert_eq!((log.chain(1), log.chain(2)), (vec![3], vec![3]));
    assert_eq!((log.kd.input_count(), log.kd.output_count()), (2, 1));
}

#[test]
fn put_input_for_a_missing_document_is_ignored() {
    let mut log = Log::new();
    let (applied, _) = log.apply(2, Effect::PutInput { document: 1 });
    assert_eq!(applied, Applied::Ignored);
    assert_eq!(log.kd.input_count(), 0);
}

/// Records about an input that name a document the input is not in are
/// garbage, whichever document they name: the index does not change.
#[test]
fn output_and_delete_records_naming_the_wrong_document_are_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    log.put_input(1, 3);
    log.put_output(1, 3);
    log.put_input(1, 4);
    let before = log.index();
    for document in [2, 4, 3, 99] {
        for effect in
            [Effect::PutOutput { document }, Effect::DeleteOutput { document }, Effect::DeleteInput { document }]
        {
            for input in [3, 4] {
                let label = format!("{effect:?} on {input}");
                assert_eq!(log.apply(input, effect).0, Applied::Ignored, "{label}");
                assert_eq!(log.index(), before, "{label}");
            }
        }
    }
    // Named through their document, the same records take effect.
    assert_eq!(log.apply(3, Effect::DeleteOutput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.apply(4, Effect::PutOutput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.apply(3, Effect::DeleteInput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.chain(1), [4]);
    assert_eq!((log.kd.input_count(), log.kd.output_count()), (1, 1));
}

#[test]
fn put_output_sets_and_replaces_the_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let first = log.put_output(1, 2);
    assert_eq!(log.kd.output(1, 2), Ok(first));
    assert_eq!(log.kd.output_count(), 1);
    let second = log.put_output(1, 2);
    assert_eq!(log.kd.output(1, 2), Ok(second));
    assert_eq!(log.kd.output_count(), 1);
}

#[test]
fn delete_output_removes_the_output() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    log.put_output(1, 2);
    let (applied, _) = log.apply(2, Effect::DeleteOutput { document: 1 });
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
    assert_eq!(log.apply(2, Effect::DeleteOutput { document: 1 }).0, Applied::Ignored);
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
    log.put_output(1, 3);
    log.put_output(2, 5);
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (2, 3, 2));

    assert_eq!(log.apply(1, Effect::DeleteDocument).0, Applied::Changed);
    assert_eq!(log.kd.document(1).unwrap_err(), Missing::Document(1));
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (1, 1, 1));
    assert_eq!(log.kd.document_ids().collect::<Vec<_>>(), [2]);
    // The other document is untouched.
    assert_eq!(log.chain(2), [5]);
    assert!(log.kd.output(2, 5).is_ok());
    // The deleted inputs are gone for good: records about them are garbage.
    for input in [3, 4] {
        assert_eq!(log.apply(input, Effect::PutOutput { document: 1 }).0, Applied::Ignored);
        assert_eq!(log.apply(input, Effect::DeleteInput { document: 1 }).0, Applied::Ignored);
        assert_eq!(log.apply(input, Effect::DeleteOutput { document: 1 }).0, Applied::Ignored);
    }
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (1, 1, 1));
}

#[test]
fn delete_input_keeps_the_remaining_chain_in_order() {
    let mut log = Log::new();
    log.create(1);
    for input in 2..=6 {
        log.put_input(1, input);
    }
    log.put_output(1, 4);
    assert_eq!(log.apply(4, Effect::DeleteInput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.chain(1), [2, 3, 5, 6]);
    assert_eq!(log.kd.input(1, 4).unwrap_err(), Missing::Input { document: 1, input: 4 });
    assert_eq!((log.kd.input_count(), log.kd.output_count()), (4, 0));
    assert_eq!(log.apply(2, Effect::DeleteInput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.apply(6, Effect::DeleteInput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.chain(1), [3, 5]);
    // The inputs left are still found, each at its own value.
    for input in [3, 5] {
        assert_eq!(log.kd.input(1, input).unwrap().id, input);
    }
}

#[test]
fn inputs_are_kept_in_id_order() {
    let mut log = Log::new();
    log.create(1);
    log.create(2);
    for (doc, input) in [(1, 10), (2, 11), (1, 12), (1, 13), (2, 14)] {
        log.put_input(doc, input);
    }
    assert_eq!(log.chain(1), [10, 12, 13]);
    assert_eq!(log.chain(2), [11, 14]);
}

#[test]
fn inputs_applied_out_of_id_order_are_sorted_into_place() {
    let mut log = Log::new();
    log.create(1);
    let mut values = BTreeMap::new();
    for input in [7, 3, 9, 5, 2] {
        values.insert(input, log.put_input(1, input));
    }
    assert_eq!(log.chain(1), [2, 3, 5, 7, 9]);
    // Each input is found at its own value, wherever it was inserted.
    for (&input, &value) in &values {
        assert_eq!(log.kd.input(1, input), Ok(&InputEntry { id: input, value, output: None }));
    }
    assert_eq!(log.apply(5, Effect::DeleteInput { document: 1 }).0, Applied::Changed);
    assert_eq!(log.chain(1), [2, 3, 7, 9]);
    // An input put again in the middle of the chain keeps its place.
    let again = log.put_input(1, 3);
    assert_eq!(log.chain(1), [2, 3, 7, 9]);
    assert_eq!(log.kd.input(1, 3).unwrap().value, again);
    assert_eq!(log.kd.input_count(), 4);
}

#[test]
fn an_input_entry_takes_32_bytes() {
    // The documented cost of an input in RAM: its id and two locations.
    assert_eq!(size_of::<InputEntry>(), 32);
}

#[test]
fn inputs_after_gives_the_rest_of_the_chain() {
    let mut log = Log::new();
    log.create(1);
    for input in [3, 5, 8] {
        log.put_input(1, input);
    }
    let doc = log.kd.document(1).unwrap();
    let after = |id| doc.chain_after(id).map(|input| input.id).collect::<Vec<_>>();
    assert_eq!(after(0), [3, 5, 8]);
    assert_eq!(after(2), [3, 5, 8]);
    assert_eq!(after(3), [5, 8]);
    // An id that is not in the chain: the inputs with larger ids.
    assert_eq!(after(4), [5, 8]);
    assert_eq!(after(7), [8]);
    assert!(after(8).is_empty());
    assert!(after(u64::MAX).is_empty());
    assert_eq!(doc.chain_after(3).copied().collect::<Vec<_>>(), &doc.inputs[1..]);
    assert!(log.kd.document(1).unwrap().input(4).is_none());
}

#[test]
fn next_id_and_next_seq_are_one_above_the_largest_seen() {
    let mut kd = KeyDir::new();
    let at = |offset: u32| Location::new(seg(1), u64::from(offset), 30).unwrap();
    let apply =
        |kd: &mut KeyDir, seq, id, offset, effect| kd.apply(RecordMeta { seq, id, location: at(offset) }, effect);
    let _ = apply(&mut kd, 5, 3, 20, Effect::CreateDocument { columns: no_columns() });
    assert_eq!((kd.next_id(), kd.next_seq()), (4, 6));
    // Smaller ids and sequence numbers do not move them back.
    let _ = apply(&mut kd, 2, 1, 50, Effect::CreateDocument { columns: no_columns() });
    assert_eq!((kd.next_id(), kd.next_seq()), (4, 6));
    // Ignored records and tombstones count too: their ids were handed out.
    assert_eq!(apply(&mut kd, 9, 40, 80, Effect::DeleteInput { document: 3 }), Applied::Ignored);
    assert_eq!((kd.next_id(), kd.next_seq()), (41, 10));
    assert_eq!(apply(&mut kd, 10, 3, 110, Effect::DeleteDocument), Applied::Changed);
    assert_eq!((kd.next_id(), kd.next_seq()), (41, 11));
}

#[test]
fn records_about_missing_things_are_ignored() {
    let mut log = Log::new();
    log.create(1);
    log.put_input(1, 2);
    let before = log.index();
    let effects = [
        (9, Effect::SetBlob),
        (9, Effect::SetColumns { columns: no_columns() }),
        (9, Effect::DeleteDocument),
        // Records about inputs of a document that does not exist.
        (9, Effect::PutInput { document: 8 }),
        (2, Effect::PutInput { document: 8 }),
        (2, Effect::DeleteInput { document: 8 }),
        (2, Effect::PutOutput { document: 8 }),
        (2, Effect::DeleteOutput { document: 8 }),
        // Records about inputs the document does not have.
        (9, Effect::DeleteInput { document: 1 }),
        (9, Effect::PutOutput { document: 1 }),
        (9, Effect::DeleteOutput { document: 1 }),
        // An output that does not exist.
        (2, Effect::DeleteOutput { document: 1 }),
        // An input id is not a document, a document id is not an input.
        (2, Effect::SetBlob),
        (2, Effect::DeleteDocument),
        (1, Effect::DeleteInput { document: 1 }),
        (1, Effect::PutOutput { document: 1 }),
    ];
    for (id, effect) in effects {
        let label = format!("{effect:?} on {id}");
        assert_eq!(log.apply(id, effect).0, Applied::Ignored, "{label}");
        assert_eq!(log.index(), before, "{label}");
    }
    assert_eq!((log.kd.document_count(), log.kd.input_count(), log.kd.output_count()), (1, 1, 0));
    assert_eq!(log.chain(1), [2]);
}

#[test]
fn ignored_records_count_as_total_bytes_but_not_live_bytes() {
    let mut log = Log::new();
    assert_eq!(log.apply_len(9, Effect::SetBlob, 40).0, Applied::Ignored);
    assert_eq!(log.apply_len(9, Effect::PutOutput { document: 1 }, 60).0, Applied::Ignored);
    assert_eq!(log.usage(1), SegmentUsage { total_bytes: 100, live_bytes: 0, records: 2 });
    assert_eq!(log.usage(1).garbage_bytes(), 100);
}

#[test]
fn tombstones_are_never_live() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: no_columns() }, 50);
    log.changed(1, Effect::DeleteDocument, 25);
    assert_eq!(log.usage(1), SegmentUsage { total_bytes: 75, live_bytes: 0, records: 2 });
}

#[test]
fn create_record_stays_live_while_its_columns_are_current() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: no_columns() }, 50);
    log.changed(1, Effect::SetBlob, 30);
    // The create record still holds the current columns.
    assert_eq!(log.usage(1).live_bytes, 80);
    log.changed(1, Effect::SetColumns { columns: no_columns() }, 20);
    // Now nothing points to it.
    assert_eq!(log.usage(1).live_bytes, 50);
    assert_eq!(log.usage(1).total_bytes, 100);
}

#[test]
fn create_record_stays_live_while_its_blob_is_current() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: no_columns() }, 50);
    log.changed(1, Effect::SetColumns { columns: no_columns() }, 30);
    assert_eq!(log.usage(1).live_bytes, 80);
    log.changed(1, Effect::SetBlob, 20);
    assert_eq!(log.usage(1).live_bytes, 50);
}

#[test]
fn deleting_a_document_frees_its_shared_create_record_once() {
    let mut log = Log::new();
    log.changed(7, Effect::CreateDocument { columns: no_columns() }, 50);
    log.changed(1, Effect::CreateDocument { columns: no_columns() }, 40);
    log.changed(1, Effect::DeleteDocument, 25);
    assert_eq!(log.usage(1).live_bytes, 50);
}

#[test]
fn replaced_records_stop_being_live_in_their_own_segment() {
    let mut log = Log::new();
    log.changed(1, Effect::CreateDocument { columns: no_columns() }, 50);
    log.changed(2, Effect::PutInput { document: 1 }, 30);
    log.changed(2, Effect::PutOutput { document: 1 }, 20);
    log.roll(2);
    log.changed(2, Effect::PutInput { document: 1 }, 35);
    log.changed(2, Effect::PutOutput { document: 1 }, 25);
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
    effect: Effect<'static>,
    segment: u32,
    len: u32,
}

/// The column maps the random steps use, encoded once for the whole run.
static COLUMN_CHOICES: LazyLock<Vec<EncodedColumns<'static>>> =
    LazyLock::new(|| vec![no_columns(), encoded(&[("a", "1")]), encoded(&[("b", "2")])]);

fn arb_effect() -> impl Strategy<Value = Effect<'static>> {
    let cols = prop::sample::select(COLUMN_CHOICES.clone());
    // The document a record about an input names; `arb_steps` mostly
    // replaces it with the input's own document.
    let document = 1u64..=4;
    prop_oneof![
        2 => cols.clone().prop_map(|columns| Effect::CreateDocument { columns }),
        1 => Just(Effect::SetBlob),
        1 => cols.prop_map(|columns| Effect::SetColumns { columns }),
        1 => Just(Effect::DeleteDocument),
        4 => document.clone().prop_map(|document| Effect::PutInput { document }),
        1 => document.clone().prop_map(|document| Effect::DeleteInput { document }),
        3 => document.clone().prop_map(|document| Effect::PutOutput { document }),
        2 => document.prop_map(|document| Effect::DeleteOutput { document }),
        1 => (0u64..=12).prop_map(|next_id| Effect::Checkpoint { next_id }),
        1 => (0u64..=12).prop_map(|below| Effect::ReserveIds { below }),
        1 => Just(Effect::Durable),
    ]
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    // Small id spaces so that most records hit something that exists:
    // documents 1..=4 (mostly 1 and 2), inputs 4..=7. Records about an input mostly name its
    // own document (1 or 2, by the input's parity), as a valid log does;
    // one in five names the document `arb_effect` drew, which may be
    // another one. The overlap at 4 gives an input that shares its id with
    // a document: the two must not meet in the index.
    let stray = prop::bool::weighted(0.2);
    let document_id = prop_oneof![3 => 1u64..=2, 1 => 1u64..=4];
    let step = (arb_effect(), document_id, 4u64..=7, stray, 1u32..=3, 1u32..=200).prop_map(
        |(effect, document_id, input_id, stray, segment, len)| {
            let own = |document: Id| if stray { document } else { 1 + input_id % 2 };
            let (id, effect) = match effect {
                Effect::CreateDocument { .. }
                | Effect::SetBlob
                | Effect::SetColumns { .. }
                | Effect::DeleteDocument => (document_id, effect),
                // A checkpoint's, a reservation's or a mark's record id is 0.
                Effect::Checkpoint { .. } | Effect::ReserveIds { .. } | Effect::Durable => (0, effect),
                Effect::SetChain { .. } | Effect::Batch => unreachable!("arb_effect draws no chains or frames"),
                Effect::PutInput { document } => (input_id, Effect::PutInput { document: own(document) }),
                Effect::DeleteInput { document } => (input_id, Effect::DeleteInput { document: own(document) }),
                Effect::PutOutput { document } => (input_id, Effect::PutOutput { document: own(document) }),
                Effect::DeleteOutput { document } => (input_id, Effect::DeleteOutput { document: own(document) }),
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
            let offset = offsets.entry(step.segment).or_insert(SEGMENT_HEADER_LEN as u32);
            let location = Location::new(seg(step.segment), u64::from(*offset), step.len).unwrap();
            *offset += step.len;
            location
        })
        .collect()
}

/// The live checkpoint and reservation records among the steps (the last
/// one of each applied), which the lookups do not show.
fn checkpoints(steps: &[Step]) -> Vec<Location> {
    let at = locations(steps);
    let last =
        |kind: fn(&Effect<'_>) -> bool| steps.iter().zip(&at).rev().find(|(s, _)| kind(&s.effect)).map(|(_, l)| *l);
    let checkpoint = last(|e| matches!(e, Effect::Checkpoint { .. }));
    let reservation = last(|e| matches!(e, Effect::ReserveIds { .. }));
    checkpoint.into_iter().chain(reservation).collect()
}

/// Applies the steps with increasing offsets in each segment and increasing
/// sequence numbers; returns the directory and what each apply said.
fn run(steps: &[Step]) -> (KeyDir, Vec<Applied>) {
    let mut kd = KeyDir::new();
    let mut applied = Vec::new();
    for (i, (step, location)) in steps.iter().zip(locations(steps)).enumerate() {
        let meta = RecordMeta { seq: i as u64 + 1, id: step.id, location };
        applied.push(kd.apply(meta, step.effect));
    }
    (kd, applied)
}

/// Every location the directory references, each once, plus the live
/// checkpoint and reservation records.
fn referenced(kd: &KeyDir, checkpoints: &[Location]) -> HashSet<Location> {
    let mut locations: HashSet<Location> = checkpoints.iter().copied().collect();
    for id in kd.document_ids() {
        let doc = kd.document(id).unwrap();
        locations.insert(doc.blob);
        locations.insert(doc.columns_at);
        for input in &doc.inputs {
            assert_eq!(kd.input(id, input.id), Ok(input));
            locations.insert(input.value);
            locations.extend(input.output);
        }
    }
    locations
}

/// A document as the model keeps it.
#[derive(Debug, PartialEq)]
struct ModelDocument {
    blob: Location,
    columns_at: Location,
    columns: Columns,
    /// input -> (value, output)
    inputs: BTreeMap<Id, (Location, Option<Location>)>,
}

/// A straightforward model of the directory's documented semantics: each
/// document holds its inputs, and records about an input find it through
/// the document they name.
#[derive(Debug, Default, PartialEq)]
struct Model {
    documents: BTreeMap<Id, ModelDocument>,
}

impl Model {
    fn apply(&mut self, id: Id, effect: &Effect<'_>, at: Location) -> Applied {
        use Applied::*;
        match *effect {
            Effect::CreateDocument { columns } => {
                if self.documents.contains_key(&id) {
                    return Ignored;
                }
                let columns = columns.decode();
                self.documents.insert(id, ModelDocument { blob: at, columns_at: at, columns, inputs: BTreeMap::new() });
            }
            Effect::SetBlob => match self.documents.get_mut(&id) {
                Some(doc) => doc.blob = at,
                None => return Ignored,
            },
            Effect::SetColumns { columns } => match self.documents.get_mut(&id) {
                Some(doc) => (doc.columns_at, doc.columns) = (at, columns.decode()),
                None => return Ignored,
            },
            Effect::DeleteDocument => {
                if self.documents.remove(&id).is_none() {
                    return Ignored;
                }
            }
            Effect::PutInput { document } => match self.documents.get_mut(&document) {
                Some(doc) => doc.inputs.entry(id).or_insert((at, None)).0 = at,
                None => return Ignored,
            },
            Effect::DeleteInput { document } => {
                match self.documents.get_mut(&document).and_then(|doc| doc.inputs.remove(&id)) {
                    Some(_) => {}
                    None => return Ignored,
                }
            }
            Effect::PutOutput { document } => {
                match self.documents.get_mut(&document).and_then(|doc| doc.inputs.get_mut(&id)) {
                    Some(input) => input.1 = Some(at),
                    None => return Ignored,
                }
            }
            Effect::DeleteOutput { document } => {
                match self.documents.get_mut(&document).and_then(|doc| doc.inputs.get_mut(&id)) {
                    Some(input) if input.1.is_some() => input.1 = None,
                    _ => return Ignored,
                }
            }
            // A durability mark changes nothing the lookups show.
            Effect::Checkpoint { .. } | Effect::ReserveIds { .. } | Effect::Durable => {}
            Effect::SetChain { .. } | Effect::Batch => unreachable!("arb_effect draws no chains or frames"),
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
        // Ascending, as listed (the model's map is ordered).
        let ids: Vec<Id> = kd.document_ids().collect();
        prop_assert_eq!(&ids, &model.documents.keys().copied().collect::<Vec<_>>());
        for (&id, expected) in &model.documents {
            let doc = kd.document(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                (&doc.blob, &doc.columns_at, &doc.columns()),
                (&expected.blob, &expected.columns_at, &expected.columns)
            );
            let inputs: Vec<InputEntry> = expected
                .inputs
                .iter()
                .map(|(&input, &(value, output))| InputEntry { id: input, value, output })
                .collect();
            prop_assert_eq!(&doc.inputs, &inputs, "inputs of document {}", id);
            for input in &inputs {
                prop_assert_eq!(kd.input(id, input.id), Ok(input));
                prop_assert_eq!(kd.output(id, input.id).ok(), input.output);
            }
            for after in 0..=9 {
                let rest: Vec<InputEntry> = inputs.iter().filter(|i| i.id > after).copied().collect();
                prop_assert_eq!(doc.chain_after(after).copied().collect::<Vec<_>>(), rest, "inputs of {} after {}", id, after);
            }
        }
        let inputs = model.documents.values().map(|d| d.inputs.len() as u64).sum::<u64>();
        let outputs = model.documents.values().flat_map(|d| d.inputs.values()).filter(|v| v.1.is_some()).count();
        prop_assert_eq!(kd.document_count(), model.documents.len());
        prop_assert_eq!(kd.input_count(), inputs);
        prop_assert_eq!(kd.output_count(), outputs as u64);
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

/// A durability mark is garbage as soon as it is applied: it counts in its
/// segment's bytes and records, never in its live bytes, and changes no
/// entry (recovery reads marks from the segment, not from the index).
#[test]
fn a_durability_mark_is_garbage_from_the_start() {
    let mut log = Log::new();
    log.create(1);
    let before = log.kd.clone();
    let usage = log.kd.segments()[&seg(1)];
    let at = log.changed(0, Effect::Durable, 49);
    assert_eq!((at.segment(), at.len()), (seg(1), 49));
    let after = log.kd.segments()[&seg(1)];
    assert_eq!(after.total_bytes, usage.total_bytes + 49);
    assert_eq!(after.records, usage.records + 1);
    assert_eq!(after.live_bytes, usage.live_bytes, "a mark is never live");
    assert_eq!(log.kd.document(1), before.document(1));
    assert_eq!(log.kd.document_count(), 1);
    assert_eq!(log.kd.next_seq(), log.seq + 1);
    assert_eq!(log.kd.check_invariants(), Ok(()));
    // A segment of marks alone holds no live byte.
    log.roll(2);
    let _ = log.changed(0, Effect::Durable, 49);
    let _ = log.changed(0, Effect::Durable, 49);
    let marks = log.kd.segments()[&seg(2)];
    assert_eq!((marks.total_bytes, marks.live_bytes, marks.records), (98, 0, 2));
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

/// Listing pages come from an ordered set kept beside the hash map: ids
/// ascend whatever order documents were created or deleted in, and a page
/// starts strictly after the id it is given.
#[test]
fn document_ids_ascend_and_pages_start_after_their_cursor() {
    let mut log = Log::new();
    for id in [40, 7, 19, 3, 88, 12] {
        log.create(id);
    }
    assert_eq!(log.apply(19, Effect::DeleteDocument).0, Applied::Changed);
    assert_eq!(log.kd.document_ids().collect::<Vec<_>>(), [3, 7, 12, 40, 88]);
    assert_eq!(log.kd.document_ids_after(0).collect::<Vec<_>>(), [3, 7, 12, 40, 88]);
    assert_eq!(log.kd.document_ids_after(7).take(2).collect::<Vec<_>>(), [12, 40]);
    assert_eq!(log.kd.document_ids_after(19).collect::<Vec<_>>(), [40, 88]);
    assert_eq!(log.kd.document_ids_after(88).count(), 0);
    assert_eq!(log.kd.document_ids_after(u64::MAX).count(), 0);
    // A document created again after its delete is listed again.
    log.create(19);
    assert_eq!(log.kd.document_ids_after(12).collect::<Vec<_>>(), [19, 40, 88]);
}
