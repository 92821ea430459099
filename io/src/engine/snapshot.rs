//! Whole-document reads: where everything of one version of a document
//! is, taken under one read lock, then read without it.
//!
//! A batch is applied to the index under one write lock, so the locations
//! taken under one read lock are all of one version. Records are never
//! changed once written, and the view holds the segment files it points
//! into open, so reading through it later gives exactly that version,
//! whatever writers and compactions do meanwhile.

use std::sync::Arc;

use stratum_core::{Columns, Id, Location, SegmentId, Value, record_blob, record_value};

use super::Shared;
use super::index::Index;
use super::read::{Wait, answered, without_waiting};
use crate::error::Result;
use crate::segment::SegmentFile;

/// One version of a whole document, ready to be read (see
/// [`crate::Engine::document_snapshot`]).
#[derive(Debug)]
pub struct DocumentSnapshot {
    shared: Arc<Shared>,
    /// The document.
    pub id: Id,
    /// Its version.
    pub version: u64,
    /// Its columns.
    pub columns: Columns,
    blob: Location,
    /// The chain: each input's id, value and output.
    inputs: Vec<(Id, Location, Option<Location>)>,
    /// The segment files the locations are in (a few: a table is smaller
    /// than one handle per record).
    files: Vec<(SegmentId, Arc<SegmentFile>)>,
}

/// A whole document as read (see [`crate::Engine::document`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentView {
    /// The document's id.
    pub id: Id,
    /// Its version.
    pub version: u64,
    /// Its blob.
    pub blob: Vec<u8>,
    /// Its columns.
    pub columns: Columns,
    /// Its chain, in order.
    pub inputs: Vec<InputView>,
}

/// One input of a whole-document read.
#[derive(Clone, Debug, PartialEq)]
pub struct InputView {
    /// The input's id.
    pub id: Id,
    /// Its value.
    pub value: Value,
    /// Its output, if it has one.
    pub output: Option<Value>,
}

pub(super) fn take(shared: &Arc<Shared>, id: Id) -> Result<DocumentSnapshot> {
    answered(take_waiting(shared, id, Wait::Yes))
}

/// [`take`], or `None` if `wait` is `No` and a writer holds the index.
fn take_waiting(shared: &Arc<Shared>, id: Id, wait: Wait) -> Result<Option<DocumentSnapshot>> {
    let Some(index) = shared.index_for(wait) else { return Ok(None) };
    let doc = index.keydir.document(id)?;
    let mut files = Vec::new();
    let mut file_of = |at: Location| add_file(&index, &mut files, at);
    file_of(doc.blob)?;
    let mut inputs = Vec::with_capacity(doc.inputs.len());
    for input in doc.chain() {
        file_of(input.value)?;
        if let Some(output) = input.output {
            file_of(output)?;
        }
        inputs.push((input.id, input.value, input.output));
    }
    Ok(Some(DocumentSnapshot {
        shared: shared.clone(),
        id,
        version: doc.version(),
        columns: doc.columns(),
        blob: doc.blob,
        inputs,
        files,
    }))
}

/// The whole document `id` if it can be read without waiting: `None` if a
/// writer holds the index, a record is not in memory, or the records add
/// up to more than [`MAX_WHOLE_WITHOUT_WAITING`] (see
/// [`crate::Engine::document_blob_now`]).
pub(super) fn read_now(shared: &Arc<Shared>, id: Id) -> Option<Result<DocumentView>> {
    let snapshot = match take_waiting(shared, id, Wait::No) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return None,
        Err(e) => return without_waiting(Err(e)),
    };
    let locations = || {
        std::iter::once(snapshot.blob)
            .chain(snapshot.inputs.iter().flat_map(|(_, value, output)| std::iter::once(*value).chain(*output)))
    };
    let total: u64 = locations().map(|at| u64::from(at.len())).sum();
    if total > MAX_WHOLE_WITHOUT_WAITING {
        return None;
    }
    // One residency check per segment, over the span its records cover
    // (an imported document's records are one frame): a check per record
    // would cost a system call each. A span much larger than the records
    // (a document edited over time) is checked record by record instead.
    let mut wait = Wait::Resident;
    for (segment, file) in &snapshot.files {
        let (start, end) = locations().filter(|at| at.segment() == *segment).fold((u64::MAX, 0), |(start, end), at| {
            (start.min(at.offset()), end.max(at.offset() + u64::from(at.len())))
        });
        let span = end.saturating_sub(start);
        if span > 2 * total.max(64 << 10) {
            wait = Wait::No;
        } else if !file.resident_now(start, span as usize) {
            return None;
        }
    }
    without_waiting(snapshot.view(wait))
}

/// The most record bytes a whole-document read answers without waiting.
const MAX_WHOLE_WITHOUT_WAITING: u64 = 1 << 20;

fn add_file(index: &Index, files: &mut Vec<(SegmentId, Arc<SegmentFile>)>, at: Location) -> Result<()> {
    if !files.iter().any(|(segment, _)| *segment == at.segment()) {
        files.push((at.segment(), index.file(at)?));
    }
    Ok(())
}

impl DocumentSnapshot {
    /// The whole document; `None` if `wait` is `No` and a record is not in
    /// memory.
    pub(super) fn view(&self, wait: Wait) -> Result<Option<DocumentView>> {
        let Some(blob) = self.blob_waiting(wait)? else { return Ok(None) };
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for at in 0..self.inputs.len() {
            let Some(input) = self.input_waiting(at, wait)? else { return Ok(None) };
            inputs.push(input);
        }
        Ok(Some(DocumentView { id: self.id, version: self.version, blob, columns: self.columns.clone(), inputs }))
    }

    /// How many inputs the chain holds.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// The chain's input ids, in order.
    pub fn input_ids(&self) -> impl ExactSizeIterator<Item = Id> + '_ {
        self.inputs.iter().map(|(id, _, _)| *id)
    }

    /// The document's blob.
    pub fn blob(&self) -> Result<Vec<u8>> {
        answered(self.blob_waiting(Wait::Yes))
    }

    fn blob_waiting(&self, wait: Wait) -> Result<Option<Vec<u8>>> {
        let file = self.file(self.blob);
        let Some(bytes) = self.shared.read_record(self.blob, file, wait)? else { return Ok(None) };
        let blob = record_blob(&bytes, file.salt(), self.id).map(<[u8]>::to_vec);
        self.shared.damaged_if_err(blob, self.blob, wait)
    }

    /// The input at position `at` of the chain, with its value and output.
    ///
    /// Panics if `at` is not below [`DocumentSnapshot::len`].
    pub fn input(&self, at: usize) -> Result<InputView> {
        answered(self.input_waiting(at, Wait::Yes))
    }

    fn input_waiting(&self, at: usize, wait: Wait) -> Result<Option<InputView>> {
        let (id, value, output) = self.inputs[at];
        let read = |location: Location| -> Result<Option<Value>> {
            let file = self.file(location);
            let Some(bytes) = self.shared.read_record(location, file, wait)? else { return Ok(None) };
            self.shared.damaged_if_err(record_value(&bytes, file.salt(), id), location, wait)
        };
        let Some(value) = read(value)? else { return Ok(None) };
        let output = match output {
            Some(at) => match read(at)? {
                Some(output) => Some(output),
                None => return Ok(None),
            },
            None => None,
        };
        Ok(Some(InputView { id, value, output }))
    }

    fn file(&self, at: Location) -> &SegmentFile {
        let (_, file) = self.files.iter().find(|(segment, _)| *segment == at.segment()).expect("every file was taken");
        file
    }
}
