//! The key directory: the in-memory index from ids to record locations.
//!
//! Only ids, locations, column maps and the order of each document's inputs
//! live here; blobs and values stay on disk. Live writes and recovery replay
//! change it through the same [`KeyDir::apply`], so the index rebuilt after a
//! restart is the index that was live before it, by construction.
//!
//! Invariants:
//! - every input in `inputs` belongs to a document in `documents`, and
//!   appears exactly once in that document's `inputs` list;
//! - a document's `inputs` list is sorted: ids only grow, and an input is
//!   only ever appended, so id order is chain order;
//! - `SegmentUsage::live_bytes` is the sum of the lengths of the distinct
//!   records the directory points into that segment.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::codec::Reader;
use crate::record::Effect;
use crate::value::{decode_string_map, encode_string_map, string_map_encoded_len};
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
    pub inputs: Vec<Id>,
}

impl DocumentEntry {
    fn new(location: Location, columns: &Columns) -> Self {
        DocumentEntry { blob: location, columns_at: location, columns: encode_columns(columns), inputs: Vec::new() }
    }

    /// The document's columns.
    pub fn columns(&self) -> Columns {
        decode_columns(&self.columns)
    }

    pub(crate) fn clone_columns(&self) -> Box<[u8]> {
        self.columns.clone()
    }
}

fn encode_columns(columns: &Columns) -> Box<[u8]> {
    let mut bytes = Vec::with_capacity(string_map_encoded_len(columns));
    encode_string_map(columns, &mut bytes);
    bytes.into_boxed_slice()
}

pub(crate) fn decode_columns(bytes: &[u8]) -> Columns {
    decode_string_map(&mut Reader::new(bytes)).expect("the key directory encoded these columns itself")
}

/// What the index keeps for an input node and its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEntry {
    pub document: Id,
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
    fn record(&mut self, meta: RecordMeta, effect: Effect) -> Applied;
}

impl RecordSink for KeyDir {
    fn record(&mut self, meta: RecordMeta, effect: Effect) -> Applied {
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
#[derive(Clone, Debug, Default)]
pub struct KeyDir {
    pub(crate) documents: FxHashMap<Id, DocumentEntry>,
    pub(crate) inputs: FxHashMap<Id, InputEntry>,
    outputs: u64,
    pub(crate) segments: BTreeMap<SegmentId, SegmentUsage>,
    /// The checkpoint record of the merged segment, if there is one.
    pub(crate) checkpoint: Option<Location>,
    pub(crate) next_id: Id,
    /// Ids below this may have been handed out (see `ReserveIds`).
    reserved_ids: Id,
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
        self.document(document)?;
        match self.inputs.get(&input) {
            Some(entry) if entry.document == document => Ok(entry),
            _ => Err(Missing::Input { document, input }),
        }
    }

    /// The location of the output of `input`, which must belong to `document`.
    pub fn output(&self, document: Id, input: Id) -> Result<Location, Missing> {
        self.input(document, input)?.output.ok_or(Missing::Output { document, input })
    }

    pub fn document_count(&self) -> usize {
        self.documents.len()
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    pub fn output_count(&self) -> u64 {
        self.outputs
    }

    /// All live document ids, in no particular order.
    pub fn document_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.documents.keys().copied()
    }

    /// Per-segment usage, in segment order.
    pub fn segments(&self) -> &BTreeMap<SegmentId, SegmentUsage> {
        &self.segments
    }

    /// Applies one record. Live writes call this after appending a record
    /// they checked; recovery calls it for every valid record in log order.
    pub fn apply(&mut self, meta: RecordMeta, effect: Effect) -> Applied {
        let RecordMeta { seq, id, location } = meta;
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.next_id = self.next_id.max(id.saturating_add(1));
        let usage = self.segments.entry(location.segment()).or_default();
        usage.total_bytes += u64::from(location.len());
        usage.records += 1;

        match effect {
            Effect::CreateDocument { columns } => {
                if self.documents.contains_key(&id) || self.inputs.contains_key(&id) {
                    return Applied::Ignored;
                }
                self.documents.insert(id, DocumentEntry::new(location, &columns));
                self.add_live(location);
            }
            Effect::SetBlob => {
                let Some(doc) = self.documents.get_mut(&id) else { return Applied::Ignored };
                let old = std::mem::replace(&mut doc.blob, location);
                let still_used = old == doc.columns_at;
                self.replace_live(old, still_used, location);
            }
            Effect::SetColumns { columns } => {
                let Some(doc) = self.documents.get_mut(&id) else { return Applied::Ignored };
                let old = std::mem::replace(&mut doc.columns_at, location);
                doc.columns = encode_columns(&columns);
                let still_used = old == doc.blob;
                self.replace_live(old, still_used, location);
            }
            Effect::DeleteDocument => {
                let Some(doc) = self.documents.remove(&id) else { return Applied::Ignored };
                self.remove_live(doc.blob);
                if doc.columns_at != doc.blob {
                    self.remove_live(doc.columns_at);
                }
                for input in doc.inputs {
                    if let Some(entry) = self.inputs.remove(&input) {
                        self.release_input(entry);
                    }
                }
            }
            Effect::PutInput { document } => match self.inputs.get_mut(&id) {
                Some(entry) if entry.document == document => {
                    let old = std::mem::replace(&mut entry.value, location);
                    self.replace_live(old, false, location);
                }
                Some(_) => return Applied::Ignored,
                None => {
                    if self.documents.contains_key(&id) {
                        return Applied::Ignored;
                    }
                    let Some(doc) = self.documents.get_mut(&document) else { return Applied::Ignored };
                    // Appends are the rule; a sorted insert keeps the chain in
                    // id order even for a log whose records were reordered.
                    match doc.inputs.last() {
                        Some(&last) if last > id => {
                            let at = doc.inputs.partition_point(|&i| i < id);
                            doc.inputs.insert(at, id);
                        }
                        _ => doc.inputs.push(id),
                    }
                    self.inputs.insert(id, InputEntry { document, value: location, output: None });
                    self.add_live(location);
                }
            },
            Effect::DeleteInput => {
                let Some(entry) = self.inputs.remove(&id) else { return Applied::Ignored };
                if let Some(doc) = self.documents.get_mut(&entry.document)
                    && let Ok(at) = doc.inputs.binary_search(&id)
                {
                    doc.inputs.remove(at);
                }
                self.release_input(entry);
            }
            Effect::PutOutput => {
                let Some(entry) = self.inputs.get_mut(&id) else { return Applied::Ignored };
                match entry.output.replace(location) {
                    Some(old) => self.replace_live(old, false, location),
                    None => {
                        self.outputs += 1;
                        self.add_live(location);
                    }
                }
            }
            Effect::Checkpoint { next_id } => {
                // The newest checkpoint is live: it carries the id counter of
                // the records its merged segment replaced.
                self.next_id = self.next_id.max(next_id);
                if let Some(old) = self.checkpoint.replace(location) {
                    self.remove_live(old);
                }
                self.add_live(location);
            }
            Effect::ReserveIds { below } => {
                // The newest reservation is live; older ones are garbage.
                self.reserved_ids = self.reserved_ids.max(below);
                if let Some(old) = self.reservation.replace(location) {
                    self.remove_live(old);
                }
                self.add_live(location);
            }
            Effect::DeleteOutput => {
                let Some(entry) = self.inputs.get_mut(&id) else { return Applied::Ignored };
                let Some(old) = entry.output.take() else { return Applied::Ignored };
                self.outputs -= 1;
                self.remove_live(old);
            }
        }
        Applied::Changed
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
        }
        for input in self.inputs.values() {
            live.push(input.value);
            live.extend(input.output);
        }
        for at in live {
            self.add_live(at);
        }
    }

    fn release_input(&mut self, entry: InputEntry) {
        self.remove_live(entry.value);
        if let Some(output) = entry.output {
            self.outputs -= 1;
            self.remove_live(output);
        }
    }

    /// `new` replaces `old`; `old` stays live if another field still points to it.
    fn replace_live(&mut self, old: Location, still_used: bool, new: Location) {
        if !still_used {
            self.remove_live(old);
        }
        self.add_live(new);
    }

    fn add_live(&mut self, at: Location) {
        self.segments.entry(at.segment()).or_default().live_bytes += u64::from(at.len());
    }

    fn remove_live(&mut self, at: Location) {
        let usage = self.segments.entry(at.segment()).or_default();
        usage.live_bytes = usage.live_bytes.saturating_sub(u64::from(at.len()));
    }
}
