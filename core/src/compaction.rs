//! Compaction decisions: when to compact, what the merged segment holds, and
//! how the index moves onto it.
//!
//! Whether to compact is [`choose_compaction`]'s answer, from per-segment
//! usage and what triggered the check. A compaction starts right after the
//! active segment is sealed, so every live record is in the sealed segments
//! it replaces (its sources). The plan is a copy of the index's entries at
//! that moment: each live document (its columns, blob
//! location and inputs), each input's value location and its output's. The
//! [`MergeWriter`] lays the merged segment out from the plan (a `Checkpoint`
//! record, then each document followed by its inputs and their outputs, so
//! a replay meets every parent before its children): it names each source
//! record to read, checks the bytes the io layer read for it, writes the copy
//! into the caller's buffer and notes where it went. [`KeyDir::install_compaction`] then repoints every index entry that
//! has not changed since the snapshot; entries overwritten meanwhile keep
//! pointing at their newer record, and their copy in the merged segment is
//! garbage. Tombstones are never copied: the merged segment replaces every
//! segment that could hold an older version of what they deleted.

use std::collections::BTreeSet;

use crate::check::checked_record;
use crate::defect::Defect;
use crate::keydir::{InputEntry, KeyDir, SegmentUsage, decode_columns};
use crate::record::{Body, Mutation, Salt, SegmentHeader, encode_record, seal_record, set_seq};
use crate::{Columns, Id, Location, MAX_OFFSET, SegmentId};

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
        let (total, garbage) = totals(usage);
        garbage > 0 && garbage >= self.min_garbage_bytes && garbage as f64 >= self.min_garbage_ratio * total as f64
    }
}

/// What asked for a compaction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// The background compactor's periodic check, under its policy.
    Policy(CompactionPolicy),
    /// An explicit request (`CompactNow`): compact whenever there is any
    /// garbage at all.
    Now,
}

/// The answer of [`choose_compaction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum CompactionChoice {
    /// Leave the segments as they are.
    DoNothing,
    /// Seal the active segment (if it holds records) and merge every sealed
    /// segment into a new merged segment.
    MergeAll,
}

/// Whether to compact, given the usage of every segment (the active one
/// included: its records are sealed into the merge) and what asked.
pub fn choose_compaction<'a>(usage: impl IntoIterator<Item = &'a SegmentUsage>, trigger: Trigger) -> CompactionChoice {
    let usage: Vec<&SegmentUsage> = usage.into_iter().collect();
    let worth_it = match trigger {
        Trigger::Policy(policy) => policy.should_compact(usage),
        Trigger::Now => totals(usage).1 > 0,
    };
    if worth_it { CompactionChoice::MergeAll } else { CompactionChoice::DoNothing }
}

/// Total and garbage bytes over `usage`.
fn totals<'a>(usage: impl IntoIterator<Item = &'a SegmentUsage>) -> (u64, u64) {
    usage.into_iter().fold((0, 0), |(t, g), u| (t + u.total_bytes, g + u.garbage_bytes()))
}

/// A live document as the plan copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDocument {
    /// The document's id.
    pub id: Id,
    /// The column map, encoded as the index keeps it.
    columns: Box<[u8]>,
    /// The record holding the current blob.
    pub blob: Location,
    /// The record holding the current column map (the same as `blob` when
    /// one create wrote both).
    pub columns_at: Location,
    /// The inputs in id order, as the index had them.
    pub inputs: Vec<InputEntry>,
    /// The document's version: the merged segment's copy of its blob
    /// record carries it as its sequence number, so the version survives
    /// the tombstones and overwritten records that made it.
    pub version: u64,
    /// The document's `SetChain` record, if it has a chain order.
    pub chain: Option<Location>,
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
    /// The segments replaced (the sources), ascending.
    pub sources: Vec<SegmentId>,
    /// The merged segment's id: the newest source's, so it replays before
    /// every segment written after the compaction started.
    pub merged: SegmentId,
    /// Ids below this may have been handed out (reservations included),
    /// written into the checkpoint.
    pub next_id: Id,
    /// The sequence number the checkpoint and rebuilt records carry.
    pub seq: u64,
    /// Documents in id order, inputs in chain order.
    pub documents: Vec<PlannedDocument>,
    /// The first segment the merged segment replaces, written into its
    /// checkpoint: the oldest source, or, when the merged segment of an
    /// earlier compaction is a source, the first segment that one replaced
    /// (a merged segment replaces everything its sources did, so a sealed
    /// segment an earlier compaction could not remove is still known as a
    /// leftover). [`KeyDir::plan_compaction`] sets the oldest source; the
    /// caller, which knows the current merged segment's checkpoint, may
    /// lower it.
    pub covers_from: SegmentId,
}

/// Which index pointer a copied record should take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The blob pointer of the document.
    DocumentBlob(Id),
    /// The column map pointer of the document.
    DocumentColumns(Id),
    /// The chain order pointer of the document.
    DocumentChain(Id),
    /// The value pointer of an input.
    InputValue {
        /// The input's document.
        document: Id,
        /// The input.
        input: Id,
    },
    /// The output pointer of an input.
    Output {
        /// The input's document.
        document: Id,
        /// The input whose output it is.
        input: Id,
    },
}

/// One record copied into the merged segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relocation {
    /// The pointer that moves.
    pub target: Target,
    /// Where the index pointed when the plan was made.
    pub from: Location,
    /// Where the copy is.
    pub to: Location,
}

/// The merged segment as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedSegment {
    /// Where the checkpoint record went.
    pub checkpoint: Option<Location>,
    /// The pointers that move, in the order their records were written; a
    /// document's `CreateDocument` moves two (its blob and its columns).
    pub relocations: Vec<Relocation>,
    /// Bytes of records written (header excluded).
    pub bytes: u64,
    /// Records written, the checkpoint included.
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
    /// [`KeyDir::plan_compaction`] for a compaction that starts now: the
    /// plan's sequence number is taken, so records appended while the merge
    /// is written get later ones (sequence numbers stay strictly increasing
    /// through the log: the merged segment replays before them).
    pub fn begin_compaction(&mut self, sources: impl IntoIterator<Item = SegmentId>) -> Option<CompactionPlan> {
        let plan = self.plan_compaction(sources)?;
        self.start_compaction(&plan);
        Some(plan)
    }

    /// Takes a plan's sequence number, for a plan made with
    /// [`KeyDir::plan_compaction`] (under a read lock) that starts now.
    pub fn start_compaction(&mut self, plan: &CompactionPlan) {
        self.take_seq(plan.seq);
    }

    /// Captures the index for a compaction of `sources` (all sealed
    /// segments). Returns `None` when there is nothing to compact.
    pub fn plan_compaction(&self, sources: impl IntoIterator<Item = SegmentId>) -> Option<CompactionPlan> {
        let sources: Vec<SegmentId> = sources.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let merged = *sources.last()?;
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
                    version: doc.version(),
                    chain: doc.chain_order().map(|chain| chain.at),
                })
            })
            .collect();
        let covers_from = sources[0];
        Some(CompactionPlan {
            sources,
            merged,
            next_id: self.reserved_ids(),
            seq: self.next_seq(),
            documents,
            covers_from,
        })
    }
}

/// Why a merged segment could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A source record failed its checks.
    #[error("{defect}")]
    Damaged {
        /// Where the source record is.
        at: Location,
        /// What is wrong with it.
        defect: Defect,
    },
    /// The live data does not fit one merged segment.
    #[error("the live data does not fit one merged segment ({} bytes)", MAX_OFFSET + 1)]
    TooLarge,
}

/// Lays out a merged segment from a [`CompactionPlan`], into buffers the
/// caller owns: the caller reads each record [`MergeWriter::next_source`]
/// names and hands its bytes, with the salt of the segment they were read
/// from, to [`MergeWriter::copy`], which checks them and appends the copy
/// under the merged segment's own salt; [`MergeWriter::finish`] says where
/// everything went.
///
/// Documents come in id order, each followed by its chain order (if it
/// has one), then its inputs in id order, each input by its output. A
/// document's blob and columns become one `CreateDocument` record (copied
/// as it is when it already is one) whose sequence number is the
/// document's version.
#[derive(Debug)]
pub struct MergeWriter<'p> {
    plan: &'p CompactionPlan,
    /// The merged segment's salt: every copy is sealed with it.
    salt: Salt,
    /// The merged file's length so far: where the next record goes.
    len: u64,
    cursor: Cursor,
    merged: MergedSegment,
}

/// A source record of the merged segment, as the plan names it.
#[derive(Clone, Copy, Debug)]
enum Step<'p> {
    Blob(&'p PlannedDocument),
    Chain(&'p PlannedDocument),
    Value(&'p PlannedDocument, &'p InputEntry),
    Output(&'p PlannedDocument, &'p InputEntry),
}

/// Which source record comes next: `step` 0 is the document's blob, 1 its
/// chain order, then two steps per input (value, output).
#[derive(Clone, Copy, Debug)]
struct Cursor {
    document: usize,
    step: usize,
}

impl<'p> MergeWriter<'p> {
    /// Starts the merged segment, salted with `salt` (fresh random bytes
    /// the io layer drew): appends its header and its checkpoint record to
    /// `out`.
    pub fn new(plan: &'p CompactionPlan, salt: Salt, out: &mut Vec<u8>) -> Result<Self, MergeError> {
        let header = SegmentHeader { segment: plan.merged, salt }.encode();
        out.extend_from_slice(&header);
        let mut writer = MergeWriter {
            plan,
            salt,
            len: header.len() as u64,
            cursor: Cursor { document: 0, step: 0 },
            merged: MergedSegment::default(),
        };
        let start = out.len();
        let checkpoint = Mutation::Checkpoint { covers_from: plan.covers_from, next_id: plan.next_id };
        encode_record(out, &salt, plan.seq, 0, &checkpoint);
        writer.merged.checkpoint = Some(writer.place(out.len() - start)?);
        writer.settle();
        Ok(writer)
    }

    /// The location of the source record to read next; `None` once every
    /// record is copied.
    #[must_use]
    pub fn next_source(&self) -> Option<Location> {
        Some(match self.current()? {
            Step::Blob(document) => document.blob,
            Step::Chain(document) => document.chain.expect("settle skips missing chains"),
            Step::Output(_, input) => input.output.expect("settle skips missing outputs"),
            Step::Value(_, input) => input.value,
        })
    }

    /// Checks `bytes`, the record read from [`MergeWriter::next_source`] in
    /// a segment salted with `source`, and appends its copy to `out`.
    pub fn copy(&mut self, bytes: &[u8], source: &Salt, out: &mut Vec<u8>) -> Result<(), MergeError> {
        let step = self.current().expect("copy is called only while there is a source");
        let from = self.next_source().expect("there is a source");
        let damaged = |defect: Defect| MergeError::Damaged { at: from, defect };
        let start = out.len();
        let target = match step {
            Step::Blob(document) => {
                let record = checked_record(bytes, source, document.id).map_err(damaged)?;
                match record.body().map_err(|e| damaged(e.into()))? {
                    Body::CreateDocument { .. } if document.columns_at == document.blob => {
                        out.extend_from_slice(bytes);
                    }
                    Body::CreateDocument { blob, .. } | Body::SetBlob { blob } => {
                        let columns = document.columns();
                        let rebuilt = Mutation::CreateDocument { columns: &columns, blob };
                        encode_record(out, &self.salt, self.plan.seq, document.id, &rebuilt);
                    }
                    other => return Err(damaged(Defect::UnexpectedKind(other.kind()))),
                }
                set_seq(&mut out[start..], document.version);
                seal_record(&mut out[start..], &self.salt);
                Target::DocumentBlob(document.id)
            }
            Step::Chain(document) => {
                let record = checked_record(bytes, source, document.id).map_err(damaged)?;
                match record.body().map_err(|e| damaged(e.into()))? {
                    Body::SetChain { .. } => self.append_copy(bytes, out),
                    other => return Err(damaged(Defect::UnexpectedKind(other.kind()))),
                }
                Target::DocumentChain(document.id)
            }
            Step::Value(document, input) | Step::Output(document, input) => {
                let output = matches!(step, Step::Output(..));
                let record = checked_record(bytes, source, input.id).map_err(damaged)?;
                let owner = match record.body().map_err(|e| damaged(e.into()))? {
                    Body::PutInput { document, .. } if !output => document,
                    Body::PutOutput { document, .. } if output => document,
                    other => return Err(damaged(Defect::UnexpectedKind(other.kind()))),
                };
                // Copied as it is, the record names its document on replay.
                if owner != document.id {
                    return Err(damaged(Defect::WrongDocument { found: owner, expected: document.id }));
                }
                self.append_copy(bytes, out);
                let (document, input) = (document.id, input.id);
                if output { Target::Output { document, input } } else { Target::InputValue { document, input } }
            }
        };
        let to = self.place(out.len() - start)?;
        self.merged.relocations.push(Relocation { target, from, to });
        if let (Target::DocumentBlob(id), Step::Blob(document)) = (target, step) {
            let columns_from = document.columns_at;
            self.merged.relocations.push(Relocation { target: Target::DocumentColumns(id), from: columns_from, to });
        }
        self.cursor.step += 1;
        self.settle();
        Ok(())
    }

    /// Appends a checked record as it is, sealed with the merged salt.
    fn append_copy(&self, bytes: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(bytes);
        seal_record(&mut out[start..], &self.salt);
    }

    /// What was written, once every source is copied.
    pub fn finish(self) -> MergedSegment {
        assert!(self.current().is_none(), "a merged segment is finished before every source is copied");
        self.merged
    }

    /// The source record at the cursor.
    fn current(&self) -> Option<Step<'p>> {
        let document = self.plan.documents.get(self.cursor.document)?;
        Some(match self.cursor.step {
            0 => Step::Blob(document),
            1 => Step::Chain(document),
            step => {
                let input = &document.inputs[(step - 2) / 2];
                if (step - 2) % 2 == 1 { Step::Output(document, input) } else { Step::Value(document, input) }
            }
        })
    }

    /// Moves the cursor past chains and outputs that do not exist and past
    /// the end of each document's records.
    fn settle(&mut self) {
        while let Some(document) = self.plan.documents.get(self.cursor.document) {
            let step = self.cursor.step;
            if step > 1 + 2 * document.inputs.len() {
                self.cursor = Cursor { document: self.cursor.document + 1, step: 0 };
            } else if (step == 1 && document.chain.is_none())
                || (step > 1 && (step - 2) % 2 == 1 && document.inputs[(step - 2) / 2].output.is_none())
            {
                self.cursor.step += 1;
            } else {
                return;
            }
        }
    }

    /// The location of the record of `len` bytes just appended.
    fn place(&mut self, len: usize) -> Result<Location, MergeError> {
        let at = Location::new(self.plan.merged, self.len, len as u32).ok_or(MergeError::TooLarge)?;
        self.len += len as u64;
        self.merged.bytes += len as u64;
        self.merged.records += 1;
        Ok(at)
    }
}
