//! Compaction plans (`KeyDir::plan_compaction`) and installing a merged
//! segment (`KeyDir::install_compaction`).

mod common;

use common::{Log, columns, seg};
use stratum_core::{
    CompactionPlan, CompactionPolicy, Effect, EncodedColumns, Id, InputEntry, Installed, Location, MergedSegment,
    Relocation, SegmentUsage, Target,
};

/// Test helpers: every record 50 bytes, every record taking effect.
impl Log {
    fn apply(&mut self, id: Id, effect: Effect<'_>) -> Location {
        self.changed(id, effect, 50)
    }

    fn create(&mut self, id: Id, pairs: &[(&str, &str)]) -> Location {
        let mut buf = Vec::new();
        self.apply(id, Effect::CreateDocument { columns: EncodedColumns::encode(&columns(pairs), &mut buf) })
    }
}

/// Two documents in segments 1 and 2: document 1 with inputs 3 (with an
/// output) and 5, document 2 with input 4.
fn sample() -> Log {
    let mut log = Log::new();
    log.create(1, &[("name", "one")]);
    log.create(2, &[]);
    log.apply(3, Effect::PutInput { document: 1 });
    log.apply(4, Effect::PutInput { document: 2 });
    log.roll(2);
    log.apply(3, Effect::PutOutput { document: 1 });
    log.apply(5, Effect::PutInput { document: 1 });
    log.apply(1, Effect::SetBlob);
    log
}

/// The merged segment's records carry the plan's sequence number, and it
/// replays before anything written while the merge runs: a compaction that
/// begins takes that number, so later records get later ones.
#[test]
fn a_compaction_that_begins_takes_its_sequence_number() {
    let mut log = sample();
    let before = log.kd.next_seq();
    let plan = log.kd.begin_compaction([seg(1), seg(2)]).unwrap();
    assert_eq!(plan.seq, before);
    assert_eq!(log.kd.next_seq(), before + 1, "the next record would reuse the merged segment's number");
    assert_eq!(Some(plan.clone()), {
        log.kd.plan_compaction([seg(1), seg(2)]).map(|p| CompactionPlan { seq: before, ..p })
    });
}

#[test]
fn a_plan_copies_every_document_with_its_chain() {
    let log = sample();
    let plan = log.kd.plan_compaction([seg(2), seg(1)]).unwrap();
    assert_eq!(plan.sources, [seg(1), seg(2)]);
    assert_eq!(plan.merged, seg(2));
    assert_eq!(plan.covers_from, seg(1));
    assert_eq!(plan.next_id, log.kd.reserved_ids());
    assert_eq!(plan.seq, log.kd.next_seq());
    assert_eq!(plan.documents.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2]);
    for planned in &plan.documents {
        let doc = log.kd.document(planned.id).unwrap();
        assert_eq!((planned.blob, planned.columns_at), (doc.blob, doc.columns_at));
        assert_eq!(planned.columns(), doc.columns());
        assert_eq!(planned.inputs, doc.inputs);
    }
    let one = &plan.documents[0];
    assert_eq!(one.columns(), columns(&[("name", "one")]));
    assert_eq!(one.inputs.iter().map(|i| i.id).collect::<Vec<_>>(), [3, 5]);
    assert!(one.inputs[0].output.is_some());
    assert_eq!(plan.documents[1].inputs.iter().map(|i| i.id).collect::<Vec<_>>(), [4]);
}

#[test]
fn nothing_to_compact_gives_no_plan() {
    assert_eq!(sample().kd.plan_compaction([]), None);
}

/// The relocations a merged segment writing `plan` in order reports, the
/// way the io layer writes it: each document, then its inputs and outputs.
fn merge(plan: &CompactionPlan) -> MergedSegment {
    let mut merged = MergedSegment::default();
    let mut offset = stratum_core::SEGMENT_HEADER_LEN as u64;
    let mut place = |merged: &mut MergedSegment| {
        let at = Location::new(plan.merged, offset, 40).unwrap();
        offset += 40;
        merged.bytes += 40;
        merged.records += 1;
        at
    };
    merged.checkpoint = Some(place(&mut merged));
    for doc in &plan.documents {
        let to = place(&mut merged);
        merged.relocations.push(Relocation { target: Target::DocumentBlob(doc.id), from: doc.blob, to });
        merged.relocations.push(Relocation { target: Target::DocumentColumns(doc.id), from: doc.columns_at, to });
        for input in &doc.inputs {
            let target = Target::InputValue { document: doc.id, input: input.id };
            let to = place(&mut merged);
            merged.relocations.push(Relocation { target, from: input.value, to });
            if let Some(from) = input.output {
                let target = Target::Output { document: doc.id, input: input.id };
                let to = place(&mut merged);
                merged.relocations.push(Relocation { target, from, to });
            }
        }
    }
    merged
}

#[test]
fn installing_a_merged_segment_repoints_every_entry_into_it() {
    let mut log = sample();
    let plan = log.kd.plan_compaction([seg(1), seg(2)]).unwrap();
    let merged = merge(&plan);
    let installed = log.kd.install_compaction(&plan, &merged);
    assert_eq!(installed, Installed { relocated: merged.relocations.len() as u64, stale: 0 });
    for planned in &plan.documents {
        let doc = log.kd.document(planned.id).unwrap();
        assert_eq!((doc.blob.segment(), doc.columns_at.segment()), (seg(2), seg(2)));
        assert_eq!(doc.inputs.len(), planned.inputs.len());
        for input in &doc.inputs {
            assert_eq!(input.value.segment(), seg(2));
            assert_eq!(
                input.output.map(|o| o.segment()),
                planned.inputs.iter().find(|i| i.id == input.id).unwrap().output.map(|_| seg(2))
            );
        }
    }
    // Every relocation's target now holds its new location.
    for r in &merged.relocations {
        let now = match r.target {
            Target::DocumentBlob(id) => log.kd.document(id).unwrap().blob,
            Target::DocumentColumns(id) => log.kd.document(id).unwrap().columns_at,
            Target::DocumentChain(id) => log.kd.document(id).unwrap().chain_order().unwrap().at,
            Target::InputValue { document, input } => log.kd.input(document, input).unwrap().value,
            Target::Output { document, input } => log.kd.output(document, input).unwrap(),
        };
        assert_eq!(now, r.to, "{:?}", r.target);
    }
    // Only the merged segment is left; all of it is live.
    assert_eq!(log.kd.segments().keys().copied().collect::<Vec<_>>(), [seg(2)]);
    let live = merged.bytes;
    assert_eq!(
        log.kd.segments()[&seg(2)],
        SegmentUsage { total_bytes: live, live_bytes: live, records: merged.records }
    );
}

#[test]
fn entries_changed_after_the_plan_keep_their_newer_record() {
    let mut log = sample();
    let plan = log.kd.plan_compaction([seg(1), seg(2)]).unwrap();
    let merged = merge(&plan);
    // Writes that land in segment 3 while the merged segment is written.
    log.roll(3);
    let output = log.apply(3, Effect::PutOutput { document: 1 });
    let value = log.apply(4, Effect::PutInput { document: 2 });
    let installed = log.kd.install_compaction(&plan, &merged);
    assert_eq!(installed, Installed { relocated: merged.relocations.len() as u64 - 2, stale: 2 });
    assert_eq!(log.kd.output(1, 3), Ok(output));
    assert_eq!(log.kd.input(2, 4).unwrap().value, value);
    assert_eq!(log.kd.input(1, 3).unwrap().value.segment(), seg(2));
    assert_eq!(log.kd.segments().keys().copied().collect::<Vec<_>>(), [seg(2), seg(3)]);
}

/// A relocation finds its input through the document it names: naming
/// another document relocates nothing, even if that document has an input
/// of the same id.
#[test]
fn a_relocation_naming_the_wrong_document_is_stale() {
    let mut log = sample();
    let plan = log.kd.plan_compaction([seg(1), seg(2)]).unwrap();
    let three = *log.kd.input(1, 3).unwrap();
    let to = Location::new(seg(2), 10_000, 50).unwrap();
    let merged = MergedSegment {
        checkpoint: None,
        relocations: vec![
            Relocation { target: Target::InputValue { document: 2, input: 3 }, from: three.value, to },
            Relocation { target: Target::Output { document: 2, input: 3 }, from: three.output.unwrap(), to },
            Relocation { target: Target::InputValue { document: 9, input: 3 }, from: three.value, to },
            Relocation { target: Target::Output { document: 1, input: 5 }, from: three.output.unwrap(), to },
        ],
        bytes: 50,
        records: 1,
    };
    let installed = log.kd.install_compaction(&plan, &merged);
    assert_eq!(installed, Installed { relocated: 0, stale: 4 });
    assert_eq!(log.kd.input(1, 3), Ok(&three));
    assert_eq!(log.kd.input(1, 5).unwrap().output, None);
    assert_eq!(log.kd.input(2, 3).ok(), None::<&InputEntry>);
}

#[test]
fn the_policy_compacts_only_enough_garbage() {
    let policy = CompactionPolicy { min_garbage_bytes: 100, min_garbage_ratio: 0.5 };
    let usage = |total, live| SegmentUsage { total_bytes: total, live_bytes: live, records: 1 };
    assert!(!policy.should_compact(&[usage(150, 60)]), "90 bytes of garbage");
    assert!(policy.should_compact(&[usage(150, 50)]));
    assert!(!policy.should_compact(&[usage(1000, 600)]), "40% garbage");
    assert!(policy.should_compact(&[usage(1000, 600), usage(200, 0)]));
    assert!(!CompactionPolicy { min_garbage_bytes: 0, min_garbage_ratio: 0.0 }.should_compact(&[usage(10, 10)]));
}
