//! The key directory: the in-memory index from ids to record locations.
//!
//! Only ids, locations, column maps and each document's chain live here;
//! blobs and values stay on disk. Live writes and recovery replay change it
//! through the same [`KeyDir::apply`], so the index rebuilt after a restart
//! is the index that was live before it, by construction.
//!
//! Layout: one hash map from document id to the document's entry, which
//! holds its inputs inline, in id order (32 bytes each: id, value
//! location, output location), and its version. Every request names an
//! input through its document, so a node is found by one hash lookup and a
//! binary search of that document's inputs in RAM (ten steps for a
//! thousand inputs); there is no second hash table of inputs, whose empty
//! buckets alone would cost more than the entries. Id order is chain order
//! unless the document has a [`Chain`] (its newest `SetChain` record's
//! ids, behind one pointer): see [`DocumentEntry::chain`].
//!
//! Only this module writes the directory's fields: live writes, replay,
//! compaction installs and snapshot loads all go through its methods.
//! Invariants, checked by [`KeyDir::check_invariants`] (in debug builds at
//! open and after every compaction install, and by the crash tests after
//! every step):
//! - a document's `inputs` list is sorted by id, strictly (a placed or
//!   moved input keeps its place in the id order; its chain order is the
//!   document's `Chain`), and a `Chain`'s largest id is the largest it
//!   lists;
//! - the ordered id set holds exactly the documents' ids;
//! - the input and output counts are the number of inputs and outputs;
//! - the id counter is above every document and input id;
//! - `SegmentUsage::live_bytes` is the sum of the lengths of the distinct
//!   records the directory points into that segment, and at most its
//!   `total_bytes`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rustc_hash::FxHashMap;

use crate::codec::Reader;
use crate::compaction::{CompactionPlan, Installed, MergedSegment, Target};
use crate::record::Effect;
use crate::value::{EncodedColumns, decode_string_map};
use crate::{Columns, Id, Location, SegmentId};

/// How many ids one `ReserveIds` record covers. Large, so that under `none`
/// its fsync is rare; ids are plentiful, so the jump after a restart is
/// harmless.
pub const ID_RESERVATION: Id = 1 << 16;

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
    /// The document's inputs, in ascending id order (the chain order too,
    /// unless `chain` says otherwise).
    pub inputs: Vec<InputEntry>,
    /// The sequence number of the newest record that changed the document
    /// or its chain: the document's version.
    version: u64,
    /// The chain order of the newest `SetChain` record, if the document
    /// has one; `None` is id order.
    chain: Option<Box<Chain>>,
}

/// A document's chain order, when it is not id order: the inputs of its
/// newest `SetChain` record in their order, then every input added since
/// (their ids are above all of those listed) in id order. Inputs deleted
/// since are skipped when the chain is read, not removed from the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The `SetChain` record.
    pub at: Location,
    ids: Box<[Id]>,
    /// The largest id listed.
    max: Id,
}

impl Chain {
    pub(crate) fn new(at: Location, ids: impl IntoIterator<Item = Id>) -> Chain {
        let ids: Box<[Id]> = ids.into_iter().collect();
        let max = ids.iter().copied().max().unwrap_or(0);
        Chain { at, ids, max }
    }

    /// The ids the record lists, in its order (deleted inputs included).
    pub fn listed(&self) -> &[Id] {
        &self.ids
    }
}

impl DocumentEntry {
    pub(crate) fn new(location: Location, columns: EncodedColumns<'_>, version: u64) -> Self {
        DocumentEntry {
            blob: location,
            columns_at: location,
            columns: columns.as_bytes().into(),
            inputs: Vec::new(),
            version,
            chain: None,
        }
    }

    /// The document's version: it grows with every change to the document
    /// or its chain, survives restarts and compaction, and is the same
    /// number only for the same content.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The document's chain order, if it is not id order.
    pub fn chain_order(&self) -> Option<&Chain> {
        self.chain.as_deref()
    }

    pub(crate) fn set_parts(&mut self, version: u64, chain: Option<Chain>) {
        self.version = version;
        self.chain = chain.map(Box::new);
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

    /// The inputs in chain order.
    pub fn chain(&self) -> ChainIter<'_> {
        self.chain_after(0)
    }

    /// The inputs after input `after` in chain order (all of them for 0;
    /// for an id that is not in the chain, those after where it would be in
    /// id order).
    pub fn chain_after(&self, after: Id) -> ChainIter<'_> {
        let by_id = |after: Id| self.inputs[self.inputs.partition_point(|input| input.id <= after)..].iter();
        match self.chain.as_deref() {
            None => ChainIter { doc: self, listed: &[], rest: by_id(after) },
            Some(chain) => {
                let listed = match after {
                    0 => &chain.ids[..],
                    _ => match chain.ids.iter().position(|&id| id == after) {
                        Some(at) => &chain.ids[at + 1..],
                        None => &[],
                    },
                };
                ChainIter { doc: self, listed, rest: by_id(after.max(chain.max)) }
            }
        }
    }

    /// Where input `id` is in the chain (0 is the first), if it is there.
    pub fn chain_position(&self, id: Id) -> Option<usize> {
        self.input(id)?;
        self.chain().position(|input| input.id == id)
    }
}

/// The inputs of a document in chain order (see [`DocumentEntry::chain`]).
#[derive(Clone, Debug)]
pub struct ChainIter<'a> {
    doc: &'a DocumentEntry,
    /// The ids of the chain record still to come (some may be deleted).
    listed: &'a [Id],
    /// Then these, in id order.
    rest: std::slice::Iter<'a, InputEntry>,
}

impl<'a> Iterator for ChainIter<'a> {
    type Item = &'a InputEntry;

    fn next(&mut self) -> Option<&'a InputEntry> {
        while let Some((&id, listed)) = self.listed.split_first() {
            self.listed = listed;
            if let Some(input) = self.doc.input(id) {
                return Some(input);
            }
        }
        self.rest.next()
    }
}

pub(crate) fn decode_columns(bytes: &[u8]) -> Columns {
    decode_string_map(&mut Reader::new(bytes)).expect("the key directory encoded these columns itself")
}

/// What the index keeps for an input node and its output: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEntry {
    /// The input's id.
    pub id: Id,
    /// The record holding the input's current value.
    pub value: Location,
    /// The record holding its output, if it has one.
    pub output: Option<Location>,
}

/// Something a request named that does not exist (or no longer exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// No document has this id.
    #[error("document {0} not found")]
    Document(Id),
    /// The document exists but has no input with this id.
    #[error("input {input} not found in document {document}")]
    Input {
        /// The document named.
        document: Id,
        /// The input named.
        input: Id,
    },
    /// The input exists but has no output.
    #[error("input {input} of document {document} has no output")]
    Output {
        /// The input's document.
        document: Id,
        /// The input.
        input: Id,
    },
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
    /// Bytes of records the index no longer points to: what compacting the
    /// segment reclaims.
    pub fn garbage_bytes(&self) -> u64 {
        self.total_bytes - self.live_bytes
    }
}

/// Where a record sits and where it comes in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// The record's sequence number.
    pub seq: u64,
    /// The document or input the record is about (0 for a `Checkpoint` or
    /// `ReserveIds`).
    pub id: Id,
    /// Where the record is in its segment.
    pub location: Location,
}

/// Something that consumes records in log order: the [`KeyDir`] during
/// recovery, or a [`crate::HintBuilder`] writing a hint file.
pub trait RecordSink {
    /// Takes the next record in log order: [`Applied::Ignored`] if it
    /// refers to something that does not exist.
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
    documents: FxHashMap<Id, DocumentEntry>,
    /// The ids of `documents` in ascending order, so that a page of a
    /// listing costs its own length, not a pass over every document.
    order: BTreeSet<Id>,
    inputs: u64,
    outputs: u64,
    segments: BTreeMap<SegmentId, SegmentUsage>,
    /// The checkpoint record of the merged segment, if there is one.
    checkpoint: Option<Location>,
    next_id: Id,
    /// Ids below this may have been handed out (see `ReserveIds`).
    reserved_ids: Id,
    /// The newest `ReserveIds` record, if its segment has not been compacted.
    reservation: Option<Location>,
    next_seq: u64,
}

impl KeyDir {
    /// An empty index: no documents, ids and sequence numbers from 1.
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

    /// The `ReserveIds` record to write before id `id` is handed out, if
    /// `id` is not covered yet: it reserves the next [`ID_RESERVATION`]
    /// ids, so that ids stay unique across a crash that loses writes (under
    /// `none`, a create can be acknowledged and lost).
    pub fn reservation_needed(&self, id: Id) -> Option<Id> {
        (id >= self.reserved_ids()).then(|| id.saturating_add(ID_RESERVATION))
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

    /// The document `id`.
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

    /// How many documents are live.
    pub fn document_count(&self) -> usize {
        self.documents.len()
    }

    /// How many inputs the live documents hold.
    pub fn input_count(&self) -> u64 {
        self.inputs
    }

    /// How many of those inputs have an output.
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
        let changed = self.change(seq, id, location, effect);
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
    /// A record that takes effect on a document makes `seq` its version.
    fn change(&mut self, seq: u64, id: Id, location: Location, effect: Effect<'_>) -> Option<(Option<Location>, bool)> {
        let touch = |doc: &mut DocumentEntry| doc.version = doc.version.max(seq);
        Some(match effect {
            Effect::CreateDocument { columns } => {
                if self.documents.contains_key(&id) {
                    return None;
                }
                self.documents.insert(id, DocumentEntry::new(location, columns, seq));
                self.order.insert(id);
                (None, true)
            }
            Effect::SetBlob => {
                let doc = self.documents.get_mut(&id)?;
                touch(doc);
                let old = std::mem::replace(&mut doc.blob, location);
                (Some(old).filter(|&old| old != doc.columns_at), true)
            }
            Effect::SetColumns { columns } => {
                let doc = self.documents.get_mut(&id)?;
                touch(doc);
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
                if let Some(chain) = doc.chain {
                    self.remove_live(chain.at);
                }
                for input in doc.inputs {
                    self.release_input(input);
                }
                (Some(doc.blob), false)
            }
            Effect::PutInput { document } => {
                let doc = self.documents.get_mut(&document)?;
                touch(doc);
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
                touch(doc);
                let input = doc.inputs.remove(at);
                self.release_input(input);
                (None, false)
            }
            Effect::PutOutput { document } => {
                let doc = self.documents.get_mut(&document)?;
                let at = doc.position(id).ok()?;
                touch(doc);
                let old = doc.inputs[at].output.replace(location);
                if old.is_none() {
                    self.outputs += 1;
                }
                (old, true)
            }
            Effect::DeleteOutput { document } => {
                let doc = self.documents.get_mut(&document)?;
                let at = doc.position(id).ok()?;
                let old = doc.inputs[at].output.take()?;
                touch(doc);
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
            Effect::SetChain { inputs } => {
                let doc = self.documents.get_mut(&id)?;
                touch(doc);
                let old = doc.chain.take().map(|chain| chain.at);
                // An empty order is id order: the record is garbage at once.
                let live = inputs.len() > 0;
                if live {
                    doc.chain = Some(Box::new(Chain::new(location, inputs.iter())));
                }
                (old, live)
            }
            // Recovery reads marks from the segment, never from the index;
            // a frame's header holds nothing its records do not.
            Effect::Durable | Effect::Batch => (None, false),
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
            live.extend(doc.chain.as_ref().map(|chain| chain.at));
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
        usage.live_bytes = usage
            .live_bytes
            .checked_sub(u64::from(at.len()))
            .expect("a record stops being live only after it was counted live");
    }
}

impl KeyDir {
    /// Moves the index onto a merged segment that replaces `plan.sources`.
    ///
    /// Each relocation applies only if its pointer still holds `from`; the
    /// input segments' usage is dropped and the merged segment's counted.
    pub fn install_compaction(&mut self, plan: &CompactionPlan, merged: &MergedSegment) -> Installed {
        let mut installed = Installed::default();
        for r in &merged.relocations {
            let slot = match r.target {
                Target::DocumentBlob(id) => self.documents.get_mut(&id).map(|d| &mut d.blob),
                Target::DocumentColumns(id) => self.documents.get_mut(&id).map(|d| &mut d.columns_at),
                Target::DocumentChain(id) => {
                    self.documents.get_mut(&id).and_then(|d| d.chain.as_mut()).map(|chain| &mut chain.at)
                }
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
        if self.reservation.is_some_and(|r| plan.sources.contains(&r.segment())) {
            self.reservation = None;
        }
        for source in &plan.sources {
            self.segments.remove(source);
        }
        self.segments
            .insert(plan.merged, SegmentUsage { total_bytes: merged.bytes, live_bytes: 0, records: merged.records });
        self.recount_live_bytes();
        installed
    }

    /// An index for planning a batch against (see `batch.rs`): the
    /// counters and segment usage of this one, and no documents until
    /// [`KeyDir::copy_document`] copies them in.
    pub(crate) fn scratch(&self) -> KeyDir {
        KeyDir {
            documents: FxHashMap::default(),
            order: BTreeSet::new(),
            inputs: self.inputs,
            outputs: self.outputs,
            segments: self.segments.clone(),
            checkpoint: self.checkpoint,
            next_id: self.next_id,
            reserved_ids: self.reserved_ids,
            reservation: self.reservation,
            next_seq: self.next_seq,
        }
    }

    /// Copies document `id` of `from`, if it has one, into this index.
    pub(crate) fn copy_document(&mut self, from: &KeyDir, id: Id) {
        if let Some(doc) = from.documents.get(&id) {
            self.documents.insert(id, doc.clone());
            self.order.insert(id);
        }
    }

    /// Counts `seq` as used: the next record gets a later one.
    pub(crate) fn take_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// The documents in ascending id order, for writing a snapshot.
    pub(crate) fn documents_in_order(&self) -> impl Iterator<Item = (Id, &DocumentEntry)> + '_ {
        self.order.iter().map(|id| (*id, &self.documents[id]))
    }

    /// The merged segment's checkpoint record, if there is one.
    pub(crate) fn checkpoint(&self) -> Option<Location> {
        self.checkpoint
    }

    /// The newest `ReserveIds` record, if its segment was not compacted.
    pub(crate) fn reservation(&self) -> Option<Location> {
        self.reservation
    }

    /// The largest reservation seen (without the id counter).
    pub(crate) fn reserved_below(&self) -> Id {
        self.reserved_ids
    }

    /// The index a snapshot describes, built from its parts; `Err` with the
    /// first document id that appears twice.
    pub(crate) fn from_parts(parts: SnapshotParts) -> Result<KeyDir, Id> {
        let SnapshotParts { next_seq, next_id, reserved_ids, checkpoint, segment, usage, documents } = parts;
        let mut kd = KeyDir { next_seq, next_id, reserved_ids, checkpoint: Some(checkpoint), ..KeyDir::new() };
        kd.segments.insert(segment, usage);
        kd.documents.reserve(documents.len());
        let mut ids = Vec::with_capacity(documents.len());
        for (id, doc) in documents {
            kd.inputs += doc.inputs.len() as u64;
            kd.outputs += doc.inputs.iter().filter(|input| input.output.is_some()).count() as u64;
            if kd.documents.insert(id, doc).is_some() {
                return Err(id);
            }
            ids.push(id);
        }
        // Built from a sorted run: densely packed nodes.
        ids.sort_unstable();
        kd.order = ids.into_iter().collect();
        Ok(kd)
    }

    /// Checks every invariant the module documents, recounting from
    /// scratch: O(index). The first violation found, if any.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        if self.order.len() != self.documents.len() || self.order.iter().any(|id| !self.documents.contains_key(id)) {
            return Err(Violation::OrderedIds);
        }
        let (mut inputs, mut outputs) = (0u64, 0u64);
        // Live bytes per segment. Locations come in runs of one segment (a
        // compacted store has one), so a run is summed before it is filed:
        // loading a snapshot checks a million locations in a few ms.
        let mut live: BTreeMap<SegmentId, u64> = BTreeMap::new();
        let mut run: Option<(SegmentId, u64)> = None;
        let mut count = |at: Option<Location>| match (run.as_mut(), at) {
            (Some((segment, sum)), Some(at)) if *segment == at.segment() => *sum += u64::from(at.len()),
            (_, at) => {
                if let Some((segment, sum)) = run.take() {
                    *live.entry(segment).or_default() += sum;
                }
                run = at.map(|at| (at.segment(), u64::from(at.len())));
            }
        };
        for at in self.checkpoint.into_iter().chain(self.reservation) {
            count(Some(at));
        }
        for (&id, doc) in &self.documents {
            if id >= self.next_id {
                return Err(Violation::IdCounterBehind { id, next_id: self.next_id });
            }
            if doc.inputs.windows(2).any(|w| w[0].id >= w[1].id) {
                return Err(Violation::UnorderedChain(id));
            }
            if let Some(last) = doc.inputs.last()
                && last.id >= self.next_id
            {
                return Err(Violation::IdCounterBehind { id: last.id, next_id: self.next_id });
            }
            count(Some(doc.blob));
            if doc.columns_at != doc.blob {
                count(Some(doc.columns_at));
            }
            if let Some(chain) = &doc.chain {
                if chain.max != chain.ids.iter().copied().max().unwrap_or(0) {
                    return Err(Violation::ChainMax(id));
                }
                count(Some(chain.at));
            }
            for input in &doc.inputs {
                inputs += 1;
                count(Some(input.value));
                if let Some(output) = input.output {
                    outputs += 1;
                    count(Some(output));
                }
            }
        }
        count(None);
        if inputs != self.inputs || outputs != self.outputs {
            return Err(Violation::Counts { inputs, outputs, stored: (self.inputs, self.outputs) });
        }
        for (&segment, usage) in &self.segments {
            let counted = live.remove(&segment).unwrap_or(0);
            if counted != usage.live_bytes || usage.live_bytes > usage.total_bytes {
                return Err(Violation::LiveBytes { segment, counted, usage: *usage });
            }
        }
        match live.into_keys().next() {
            Some(segment) => Err(Violation::NoUsage(segment)),
            None => Ok(()),
        }
    }
}

/// What a snapshot holds, for [`KeyDir::from_parts`].
pub(crate) struct SnapshotParts {
    pub next_seq: u64,
    pub next_id: Id,
    pub reserved_ids: Id,
    pub checkpoint: Location,
    pub segment: SegmentId,
    pub usage: SegmentUsage,
    pub documents: Vec<(Id, DocumentEntry)>,
}

/// An invariant of the [`KeyDir`] that does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The ordered id set and the documents disagree.
    #[error("the ordered id set does not hold exactly the documents' ids")]
    OrderedIds,
    /// An id at or above the id counter.
    #[error("id {id} is not below the id counter {next_id}")]
    IdCounterBehind {
        /// The id.
        id: Id,
        /// The counter.
        next_id: Id,
    },
    /// A chain out of ascending id order.
    #[error("the chain of document {0} is not in ascending id order")]
    UnorderedChain(Id),
    /// The input or output count is off.
    #[error("{inputs} inputs and {outputs} outputs counted, {stored:?} stored")]
    Counts {
        /// Inputs counted.
        inputs: u64,
        /// Outputs counted.
        outputs: u64,
        /// What the directory's counters say.
        stored: (u64, u64),
    },
    /// A segment's live bytes are not what the directory points at.
    #[error("segment {segment}: {counted} live bytes counted, usage says {usage:?}")]
    LiveBytes {
        /// The segment.
        segment: SegmentId,
        /// Live bytes counted from the entries.
        counted: u64,
        /// What the usage says.
        usage: SegmentUsage,
    },
    /// A chain order's largest id is not the largest it lists.
    #[error("the chain order of document {0} has a wrong largest id")]
    ChainMax(Id),
    /// A live record in a segment that has no usage entry.
    #[error("the index points into segment {0}, which has no usage entry")]
    NoUsage(SegmentId),
}
