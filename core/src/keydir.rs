//! The key directory: the in-memory index from ids to record locations.
//!
//! Only ids, locations, column maps and each document's chain live here;
//! blobs and values stay on disk. Live writes and recovery replay change it
//! through the same [`KeyDir::apply`], so the index rebuilt after a restart
//! is the index that was live before it, by construction.
//!
//! Layout: one hash map from document id to the document's entry, which
//! holds its inputs inline, in chain order (32 bytes each: id, value
//! location, output location). Every request names an input through its
//! document, so a node is found by one hash lookup and a binary search of
//! that document's chain in RAM (ten steps for a thousand inputs); there is
//! no second hash table of inputs, whose empty buckets alone would cost
//! more than the entries.
//!
//! Invariants:
//! - a document's `inputs` list is sorted by id: ids only grow, and an input
//!   is only ever appended, so id order is chain order;
//! - `SegmentUsage::live_bytes` is the sum of the lengths of the distinct
//!   records the directory points into that segment.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rustc_hash::FxHashMap;

use crate::codec::Reader;
use crate::record::Effect;
use crate::value::{EncodedColumns, decode_string_map};
use crate::{Columns, Id, Location, SegmentId};

/// What the index keeps for a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentEntry {
    /// The record holding the current blob.
    pub blob: Location,
    /// The record holding the current column map (often the same record as
    /// `blob`, when both were written by one create).
    pub columns_at: Location,
    /// The column map in its record encoding: a few bytes where a
    /// `BTreeMap` would take a node of several hundred.
    columns: Box<[u8]>,
    /// The document's inputs in chain order (ascending ids).
    pub inputs: Vec<InputEntry>,
}

impl DocumentEntry {
    pub(crate) fn new(location: Location, columns: EncodedColumns<'_>) -> Self {
        DocumentEntry { blob: location, columns_at: location, columns: columns.as_bytes().into(), inputs: Vec::new() }
    }

    /// The document's columns.
    pub fn columns(&self) -> Columns {
        decode_columns(&self.columns)
    }

    pub(crate) fn clone_columns(&self) -> Box<[u8]> {
        self.columns.clone()
    }

    /// The column map in its record encoding.
    pub(crate) fn encoded_columns(&self) -> &[u8] {
        &self.columns
    }

    /// The input `id` of this document.
    pub fn input(&self, id: Id) -> Option<&InputEntry> {
        self.position(id).ok().map(|at| &self.inputs[at])
    }

    pub(crate) fn input_mut(&mut self, id: Id) -> Option<&mut InputEntry> {
        self.position(id).ok().map(|at| &mut self.inputs[at])
    }

    /// Where input `id` is in the chain, or where it would go.
    fn position(&self, id: Id) -> Result<usize, usize> {
        // Appends are the rule: check the end before searching.
        match self.inputs.last() {
            Some(last) if last.id == id => Ok(self.inputs.len() - 1),
            Some(last) if last.id < id => Err(self.inputs.len()),
            None => Err(0),
            Some(_) => self.inputs.binary_search_by_key(&id, |input| input.id),
        }
    }

    /// The inputs after input `after` in the chain (all of them for 0).
    pub fn inputs_after(&self, after: Id) -> &[InputEntry] {
        &self.inputs[self.inputs.partition_point(|input| input.id <= after)..]
    }
}

pub(crate) fn decode_columns(bytes: &[u8]) -> Columns {
    decode_string_map(&mut Reader::new(bytes)).expect("the key directory encoded these columns itself")
}

/// What the index keeps for an input node and its output: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEntry {
    pub id: Id,
    pub value: Location,
    pub output: Option<Location>,
}

/// Something a request named that does not exist (or no longer exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("document {0} not found")]
    Document(Id),
    #[error("input {input} not found in document {document}")]
    Input { document: Id, input: Id },
    #[error("input {input} of document {document} has no output")]
    Output { document: Id, input: Id },
}

/// Bytes and records per segment, for stats and compaction decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentUsage {
    /// Bytes of all records appended to the segment (header excluded).
    pub total_bytes: u64,
    /// Bytes of the records the index still points to.
    pub live_bytes: u64,
    /// Records appended to the segment.
    pub records: u64,
}

impl SegmentUsage {
    pub fn garbage_bytes(&self) -> u64 {
        self.total_bytes - self.live_bytes
    }
}

/// Where a record sits and where it comes in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub seq: u64,
    pub id: Id,
    pub location: Location,
}

/// Something that consumes records in log order: the [`KeyDir`] during
/// recovery, or a [`crate::HintBuilder`] writing a hint file.
pub trait RecordSink {
    fn record(&mut self, meta: RecordMeta, effect: Effect<'_>) -> Applied;
}

impl RecordSink for KeyDir {
    fn record(&mut self, meta: RecordMeta, effect: Effect<'_>) -> Applied {
        self.apply(meta, effect)
    }
}

/// Whether [`KeyDir::apply`] changed the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Applied {
    /// The record took effect.
    Changed,
    /// The record refers to something that does not exist (for example an
    /// input of a document deleted earlier in the log). It is garbage. Live
    /// writes never produce one: they are checked first.
    Ignored,
}

/// The in-memory index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDir {
    pub(crate) documents: FxHashMap<Id, DocumentEntry>,
    /// The ids of `documents` in ascending order, so that a page of a
    /// listing costs its own length, not a pass over every document.
    pub(crate) order: BTreeSet<Id>,
    pub(crate) inputs: u64,
    pub(crate) outputs: u64,
    pub(crate) segments: BTreeMap<SegmentId, SegmentUsage>,
    /// The checkpoint record of the merged segment, if there is one.
    pub(crate) checkpoint: Option<Location>,
    pub(crate) next_id: Id,
    /// Ids below this may have been handed out (see `ReserveIds`).
    pub(crate) reserved_ids: Id,
    /// The newest `ReserveIds` record, if its segment has not been compacted.
    pub(crate) reservation: Option<Location>,
    pub(crate) next_seq: u64,
}

impl KeyDir {
    pub fn new() -> Self {
        KeyDir { next_id: 1, reserved_ids: 1, next_seq: 1, ..Default::default() }
    }

    /// The id the next created document or input gets: one more than any id
    /// in the log, so ids are never reused while their records exist.
    pub fn next_id(&self) -> Id {
        self.next_id
    }

    /// Ids below this may have been handed out: the largest `ReserveIds`
    /// or checkpoint seen, or the id counter if larger.
    pub fn reserved_ids(&self) -> Id {
        self.reserved_ids.max(self.next_id)
    }

    /// After recovery: hands out ids only above every reservation, since
    /// ids below it may have been given to clients whose writes were lost.
    pub fn resume_after_reservations(&mut self) {
        self.next_id = self.reserved_ids();
    }

    /// The sequence number of the next record.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn document(&self, id: Id) -> Result<&DocumentEntry, Missing> {
        self.documents.get(&id).ok_or(Missing::Document(id))
    }

    /// The input `input`, which must belong to `document`.
    pub fn input(&self, document: Id, input: Id) -> Result<&InputEntry, Missing> {
        self.document(document)?.input(input).ok_or(Missing::Input { document, input })
    }

    /// The location of the output of `input`, which must belong to `document`.
    pub fn output(&self, document: Id, input: Id) -> Result<Location, Missing> {
        self.input(document, input)?.output.ok_or(Missing::Output { document, input })
    }

    pub fn document_count(&self) -> usize {
        self.documents.len()
    }

    pub fn input_count(&self) -> u64 {
        self.inputs
    }

    pub fn output_count(&self) -> u64 {
        self.outputs
    }

    /// All live document ids, ascending.
    pub fn document_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.order.iter().copied()
    }

    /// The live document ids above `after`, ascending.
    pub fn document_ids_after(&self, after: Id) -> impl Iterator<Item = Id> + '_ {
        self.order.range((Bound::Excluded(after), Bound::Unbounded)).copied()
    }

    /// Per-segment usage, in segment order.
    pub fn segments(&self) -> &BTreeMap<SegmentId, SegmentUsage> {
        &self.segments
    }

    /// Applies one record. Live writes call this after appending a record
    /// they checked; recovery calls it for every valid record in log order.
    pub fn apply(&mut self, meta: RecordMeta, effect: Effect<'_>) -> Applied {
        let RecordMeta { seq, id, location } = meta;
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.next_id = self.next_id.max(id.saturating_add(1));
        let changed = self.change(id, location, effect);
        if let Some((Some(old), _)) = changed {
            self.remove_live(old);
        }
        // One lookup of the record's segment for all of its accounting.
        let usage = self.segments.entry(location.segment()).or_default();
        usage.total_bytes += u64::from(location.len());
        usage.records += 1;
        match changed {
            Some((_, live)) => {
                if live {
                    usage.live_bytes += u64::from(location.len());
                }
                Applied::Changed
            }
            None => Applied::Ignored,
        }
    }

    /// Changes the index for one record; `None` if the record is ignored.
    /// Returns what the record does to live bytes: a record no longer
    /// pointed at, and whether this record now is.
    fn change(&mut self, id: Id, location: Location, effect: Effect<'_>) -> Option<(Option<Location>, bool)> {
        Some(match effect {
            Effect::CreateDocument { columns } => {
                if self.documents.contains_key(&id) {
                    return None;
                }
                self.documents.insert(id, DocumentEntry::new(location, columns));
                self.order.insert(id);
                (None, true)
            }
            Effect::SetBlob => {
                let doc = self.documents.get_mut(&id)?;
                let old = std::mem::replace(&mut doc.blob, location);
                (Some(old).filter(|&old| old != doc.columns_at), true)
            }
            Effect::SetColumns { columns } => {
                let doc = self.documents.get_mut(&id)?;
                let old = std::mem::replace(&mut doc.columns_at, location);
                doc.columns = columns.as_bytes().into();
                (Some(old).filter(|&old| old != doc.blob), true)
            }
            Effect::DeleteDocument => {
                let doc = self.documents.remove(&id)?;
                self.order.remove(&id);
                if doc.columns_at != doc.blob {
                    self.remove_live(doc.columns_at);
                }
                for input in doc.inputs {
                    self.release_input(input);
                }
                (Some(doc.blob), false)
            }
            Effect::PutInput { document } => {
                let doc = self.documents.get_mut(&document)?;
                match doc.position(id) {
                    Ok(at) => (Some(std::mem::replace(&mut doc.inputs[at].value, location)), true),
                    Err(at) => {
                        // A sorted insert keeps the chain in id order even for
                        // a log whose records were reordered.
                        doc.inputs.insert(at, InputEntry { id, value: location, output: None });
                        self.inputs += 1;
                        (None, true)
                    }
                }
            }
            Effect::DeleteInput { document } => {
                let doc = self.documents.get_mut(&document)?;
                let at = doc.position(id).ok()?;
                let input = doc.inputs.remove(at);
                self.release_input(input);
                (None, false)
            }
            Effect::PutOutput { document } => {
                let input = self.documents.get_mut(&document)?.input_mut(id)?;
                let old = input.output.replace(location);
                if old.is_none() {
                    self.outputs += 1;
                }
                (old, true)
            }
            Effect::DeleteOutput { document } => {
                let input = self.documents.get_mut(&document)?.input_mut(id)?;
                let old = input.output.take()?;
                self.outputs -= 1;
                (Some(old), false)
            }
            Effect::Checkpoint { next_id } => {
                // The newest checkpoint is live: it carries the id counter of
                // the records its merged segment replaced.
                self.next_id = self.next_id.max(next_id);
                (self.checkpoint.replace(location), true)
            }
            Effect::ReserveIds { below } => {
                // The newest reservation is live; older ones are garbage.
                self.reserved_ids = self.reserved_ids.max(below);
                (self.reservation.replace(location), true)
            }
        })
    }

    /// Recomputes every segment's live bytes from the index.
    pub(crate) fn recount_live_bytes(&mut self) {
        for usage in self.segments.values_mut() {
            usage.live_bytes = 0;
        }
        let mut live: Vec<Location> = self.checkpoint.into_iter().chain(self.reservation).collect();
        for doc in self.documents.values() {
            live.push(doc.blob);
            if doc.columns_at != doc.blob {
                live.push(doc.columns_at);
            }
            for input in &doc.inputs {
                live.push(input.value);
                live.extend(input.output);
            }
        }
        for at in live {
            self.add_live(at);
        }
    }

    fn release_input(&mut self, entry: InputEntry) {
        self.inputs -= 1;
        self.remove_live(entry.value);
        if let Some(output) = entry.output {
            self.outputs -= 1;
            self.remove_live(output);
        }
    }

    fn add_live(&mut self, at: Location) {
        self.segments.entry(at.segment()).or_default().live_bytes += u64::from(at.len());
    }

    fn remove_live(&mut self, at: Location) {
        let usage = self.segments.entry(at.segment()).or_default();
        usage.live_bytes = usage.live_bytes.saturating_sub(u64::from(at.len()));
    }
}
