//! Whole-document reads: where everything of one version of a document
//! is, taken under one read lock, then read without it.
//!
//! A batch is applied to the index under one write lock, so the locations
//! taken under one read lock are all of one version. Records are never
//! changed once written, and the view holds the segment files it points
//! into open, so reading through it later gives exactly that version,
//! whatever writers and compactions do meanwhile.

use std::sync::Arc;

use stratum_core::{Columns, Id, Location, SegmentId, Value, record_blob};

use super::Shared;
use super::index::Index;
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
    let index = shared.index.read();
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
    Ok(DocumentSnapshot {
        shared: shared.clone(),
        id,
        version: doc.version(),
        columns: doc.columns(),
        blob: doc.blob,
        inputs,
        files,
    })
}

fn add_file(index: &Index, files: &mut Vec<(SegmentId, Arc<SegmentFile>)>, at: Location) -> Result<()> {
    if !files.iter().any(|(segment, _)| *segment == at.segment()) {
        files.push((at.segment(), index.file(at)?));
    }
    Ok(())
}

impl DocumentSnapshot {
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
        let file = self.file(self.blob);
        let bytes = self.shared.read(self.blob, file)?;
        record_blob(&bytes, file.salt(), self.id).map(<[u8]>::to_vec).map_err(|d| self.shared.corrupt(self.blob, d))
    }

    /// The input at position `at` of the chain, with its value and output.
    ///
    /// Panics if `at` is not below [`DocumentSnapshot::len`].
    pub fn input(&self, at: usize) -> Result<InputView> {
        let (id, value, output) = self.inputs[at];
        let read = |location: Location| self.shared.read_value(location, self.file(location), id);
        Ok(InputView { id, value: read(value)?, output: output.map(read).transpose()? })
    }

    fn file(&self, at: Location) -> &SegmentFile {
        let (_, file) = self.files.iter().find(|(segment, _)| *segment == at.segment()).expect("every file was taken");
        file
    }
}
