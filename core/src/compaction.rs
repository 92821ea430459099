//! Compaction decisions: when to compact, what the merged segment holds, and
//! how the index moves onto it.
//!
//! A compaction starts right after the active segment is sealed, so every
//! live record is in the sealed segments it replaces. The plan is a snapshot
//! of the index at that moment: each live document (its columns, blob
//! location and inputs), each input's value location and its output's. The
//! io layer writes the merged segment from the plan (a `Checkpoint` record,
//! then each document followed by its inputs and their outputs, so a replay
//! meets every parent before its children) and reports where each record
//! went. [`KeyDir::install_compaction`] then repoints every index entry that
//! has not changed since the snapshot; entries overwritten meanwhile keep
//! pointing at their newer record, and their copy in the merged segment is
//! garbage. Tombstones are never copied: the merged segment replaces every
//! segment that could hold an older version of what they deleted.

use std::collections::BTreeSet;

use crate::keydir::{InputEntry, KeyDir, SegmentUsage, decode_columns};
use crate::{Columns, Id, Location, SegmentId};

/// When the background compactor rewrites the store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionPolicy {
    /// Compact only once at least this many bytes are garbage...
    pub min_garbage_bytes: u64,
    /// ...and garbage is at least this share of all bytes (0.0 to 1.0), so a
    /// store of mostly live data is not rewritten for little gain.
    pub min_garbage_ratio: f64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy { min_garbage_bytes: 64 << 20, min_garbage_ratio: 0.5 }
    }
}

impl CompactionPolicy {
    /// Whether segments with this usage are worth compacting.
    pub fn should_compact<'a>(&self, usage: impl IntoIterator<Item = &'a SegmentUsage>) -> bool {
        let (total, garbage) =
            usage.into_iter().fold((0u64, 0u64), |(t, g), u| (t + u.total_bytes, g + u.garbage_bytes()));
        garbage > 0 && garbage >= self.min_garbage_bytes && garbage as f64 >= self.min_garbage_ratio * total as f64
    }
}

/// A live document as the plan copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDocument {
    pub id: Id,
    /// The column map, encoded as the index keeps it.
    columns: Box<[u8]>,
    pub blob: Location,
    pub columns_at: Location,
    /// The inputs in chain order, as the index had them.
    pub inputs: Vec<InputEntry>,
}

impl PlannedDocument {
    /// The document's columns at the snapshot.
    pub fn columns(&self) -> Columns {
        decode_columns(&self.columns)
    }
}

/// What a compaction reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPlan {
    /// The segments replaced, ascending.
    pub inputs: Vec<SegmentId>,
    /// The merged segment's id: the newest input's, so it replays before
    /// every segment written after the compaction started.
    pub output: SegmentId,
    /// Ids below this may have been handed out (reservations included),
    /// written into the checkpoint.
    pub next_id: Id,
    /// The sequence number the checkpoint and rebuilt records carry.
    pub seq: u64,
    /// Documents in id order, inputs in chain order.
    pub documents: Vec<PlannedDocument>,
}

impl CompactionPlan {
    /// The first segment the merged segment replaces.
    pub fn covers_from(&self) -> SegmentId {
        self.inputs[0]
    }
}

/// Which index pointer a copied record should take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    DocumentBlob(Id),
    DocumentColumns(Id),
    InputValue { document: Id, input: Id },
    Output { document: Id, input: Id },
}

/// One record copied into the merged segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relocation {
    pub target: Target,
    /// Where the index pointed at the snapshot.
    pub from: Location,
    /// Where the copy is.
    pub to: Location,
}

/// The merged segment as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedSegment {
    /// Where the checkpoint record went.
    pub checkpoint: Option<Location>,
    pub relocations: Vec<Relocation>,
    /// Bytes of records written (header excluded).
    pub bytes: u64,
    pub records: u64,
}

/// What installing a merged segment did to the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Pointers moved to the merged segment.
    pub relocated: u64,
    /// Pointers left alone because they changed after the snapshot.
    pub stale: u64,
}

impl KeyDir {
    /// Snapshots the index for a compaction of `inputs` (all sealed
    /// segments). Returns `None` when there is nothing to compact.
    pub fn plan_compaction(&self, inputs: impl IntoIterator<Item = SegmentId>) -> Option<CompactionPlan> {
        let inputs: Vec<SegmentId> = inputs.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let output = *inputs.last()?;
        let documents = self
            .document_ids()
            .filter_map(|id| {
                let doc = self.document(id).ok()?;
                Some(PlannedDocument {
                    id,
                    columns: doc.clone_columns(),
                    blob: doc.blob,
                    columns_at: doc.columns_at,
                    inputs: doc.inputs.clone(),
                })
            })
            .collect();
        Some(CompactionPlan { inputs, output, next_id: self.reserved_ids(), seq: self.next_seq(), documents })
    }

    /// Moves the index onto a merged segment that replaces `plan.inputs`.
    ///
    /// Each relocation applies only if its pointer still holds `from`; the
    /// input segments' usage is dropped and the merged segment's counted.
    pub fn install_compaction(&mut self, plan: &CompactionPlan, merged: &MergedSegment) -> Installed {
        let mut installed = Installed::default();
        for r in &merged.relocations {
            let slot = match r.target {
                Target::DocumentBlob(id) => self.documents.get_mut(&id).map(|d| &mut d.blob),
                Target::DocumentColumns(id) => self.documents.get_mut(&id).map(|d| &mut d.columns_at),
                Target::InputValue { document, input } => {
                    self.documents.get_mut(&document).and_then(|d| d.input_mut(input)).map(|i| &mut i.value)
                }
                Target::Output { document, input } => {
                    self.documents.get_mut(&document).and_then(|d| d.input_mut(input)).and_then(|i| i.output.as_mut())
                }
            };
            match slot {
                Some(at) if *at == r.from => {
                    *at = r.to;
                    installed.relocated += 1;
                }
                _ => installed.stale += 1,
            }
        }
        self.next_seq = self.next_seq.max(plan.seq.saturating_add(1));
        self.checkpoint = merged.checkpoint;
        // A reservation in a replaced segment lives on in the checkpoint.
        if self.reservation.is_some_and(|r| plan.inputs.contains(&r.segment())) {
            self.reservation = None;
        }
        for input in &plan.inputs {
            self.segments.remove(input);
        }
        self.segments
            .insert(plan.output, SegmentUsage { total_bytes: merged.bytes, live_bytes: 0, records: merged.records });
        self.recount_live_bytes();
        installed
    }
}
