//! A deliberately simple, in-memory Stratum: the oracle the engine is
//! tested against.
//!
//! Plain ordered maps and vectors, no files, no indexes, no cleverness:
//! anyone can check it by reading it. Ids follow the engine's rule (one
//! counter for documents and inputs, starting at 1, never reused), so a
//! test can compare the ids the engine hands out with the ids the model
//! expects.
//!
//! Versions are the one thing the model does not compute: they are the
//! engine's numbers (sequence numbers of its log). The model keeps the
//! version the engine last reported for each document (`Document::version`,
//! set by the test through [`Model::observe_version`]); the test checks it
//! against the rule (a change makes it grow, nothing else moves it), and
//! the model uses it for preconditions.

use std::collections::BTreeMap;

pub use stratum_core::{Columns, Id, Missing, Value};

/// One document as the model keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub blob: Vec<u8>,
    pub columns: Columns,
    /// Inputs in chain order.
    pub inputs: Vec<(Id, Node)>,
    /// The version the engine reported for this state (0 until observed).
    pub version: u64,
}

impl Document {
    fn position(&self, input: Id) -> Option<usize> {
        self.inputs.iter().position(|(id, _)| *id == input)
    }
}

/// An input value and its output, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub value: Value,
    pub output: Option<Value>,
}

/// Where an input goes in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    End,
    Start,
    Before(Id),
    After(Id),
}

/// Why the model refuses a write. Nothing changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing(Missing),
    /// An input placed before or after itself.
    BesideItself(Id),
    /// A precondition on a document's version does not hold.
    Stale {
        document: Id,
        expected: u64,
        current: u64,
    },
}

impl From<Missing> for Refusal {
    fn from(m: Missing) -> Refusal {
        Refusal::Missing(m)
    }
}

/// A document or input a batch operation names: by id, or as what an
/// earlier operation of the batch created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    Id(Id),
    Created(usize),
}

/// One operation of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchOp {
    Create { blob: Vec<u8>, columns: Columns },
    SetBlob { document: Ref, blob: Vec<u8> },
    SetColumn { document: Ref, name: String, value: String },
    DeleteDocument { document: Ref },
    AddInput { document: Ref, value: Value, place: Place },
    UpdateInput { document: Ref, input: Ref, value: Value },
    DeleteInput { document: Ref, input: Ref },
    SetOutput { document: Ref, input: Ref, value: Value },
    UpdateOutput { document: Ref, input: Ref, value: Value },
    DeleteOutput { document: Ref, input: Ref },
    MoveInput { document: Ref, input: Ref, place: Place },
    ClearInputs { document: Ref },
}

/// The whole store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub documents: BTreeMap<Id, Document>,
    pub next_id: Id,
}

impl Default for Model {
    fn default() -> Self {
        Model { documents: BTreeMap::new(), next_id: 1 }
    }
}

type Result<T, E = Missing> = std::result::Result<T, E>;

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    fn take_id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn doc(&self, id: Id) -> Result<&Document> {
        self.documents.get(&id).ok_or(Missing::Document(id))
    }

    fn doc_mut(&mut self, id: Id) -> Result<&mut Document> {
        self.documents.get_mut(&id).ok_or(Missing::Document(id))
    }

    fn node(&self, document: Id, input: Id) -> Result<&Node> {
        let doc = self.doc(document)?;
        doc.inputs.iter().find(|(id, _)| *id == input).map(|(_, node)| node).ok_or(Missing::Input { document, input })
    }

    fn node_mut(&mut self, document: Id, input: Id) -> Result<&mut Node> {
        let doc = self.doc_mut(document)?;
        let found = doc.inputs.iter_mut().find(|(id, _)| *id == input);
        found.map(|(_, node)| node).ok_or(Missing::Input { document, input })
    }

    /// Records the version the engine reported for `document`.
    pub fn observe_version(&mut self, document: Id, version: u64) {
        if let Some(doc) = self.documents.get_mut(&document) {
            doc.version = version;
        }
    }

    pub fn version(&self, document: Id) -> Result<u64> {
        Ok(self.doc(document)?.version)
    }

    pub fn create_document(&mut self, blob: &[u8], columns: Columns) -> Id {
        let id = self.take_id();
        self.documents.insert(id, Document { blob: blob.to_vec(), columns, inputs: Vec::new(), version: 0 });
        id
    }

    pub fn document_blob(&self, id: Id) -> Result<Vec<u8>> {
        Ok(self.doc(id)?.blob.clone())
    }

    pub fn document_columns(&self, id: Id) -> Result<Columns> {
        Ok(self.doc(id)?.columns.clone())
    }

    /// The whole document: blob, columns, chain and version.
    pub fn document(&self, id: Id) -> Result<Document> {
        Ok(self.doc(id)?.clone())
    }

    pub fn update_blob(&mut self, id: Id, blob: &[u8]) -> Result<()> {
        self.doc_mut(id)?.blob = blob.to_vec();
        Ok(())
    }

    pub fn set_column(&mut self, id: Id, name: &str, value: &str) -> Result<()> {
        self.doc_mut(id)?.columns.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    pub fn delete_document(&mut self, id: Id) -> Result<()> {
        self.documents.remove(&id).map(drop).ok_or(Missing::Document(id))
    }

    pub fn document_ids(&self) -> Vec<Id> {
        self.documents.keys().copied().collect()
    }

    /// Appends an input to the chain.
    pub fn add_input(&mut self, document: Id, value: &Value) -> Result<Id> {
        self.doc(document)?;
        let id = self.take_id();
        self.doc_mut(document)?.inputs.push((id, Node { value: value.clone(), output: None }));
        Ok(id)
    }

    /// Adds an input at `place` in the chain.
    pub fn add_input_at(&mut self, document: Id, value: &Value, place: Place) -> Result<Id, Refusal> {
        let at = index_for(self.doc(document)?, document, place, None)?;
        let id = self.take_id();
        self.doc_mut(document)?.inputs.insert(at, (id, Node { value: value.clone(), output: None }));
        Ok(id)
    }

    /// Moves an input to `place` in its chain.
    pub fn move_input(&mut self, document: Id, input: Id, place: Place) -> Result<(), Refusal> {
        self.node(document, input)?;
        let doc = self.doc_mut(document)?;
        let from = doc.position(input).expect("the input exists");
        let entry = doc.inputs.remove(from);
        match index_for(doc, document, place, Some(input)) {
            Ok(at) => {
                doc.inputs.insert(at, entry);
                Ok(())
            }
            Err(refusal) => {
                doc.inputs.insert(from, entry);
                Err(refusal)
            }
        }
    }

    pub fn input(&self, document: Id, input: Id) -> Result<Value> {
        Ok(self.node(document, input)?.value.clone())
    }

    /// The chain, in order.
    pub fn inputs(&self, document: Id) -> Result<Vec<(Id, Value)>> {
        Ok(self.doc(document)?.inputs.iter().map(|(id, node)| (*id, node.value.clone())).collect())
    }

    pub fn update_input(&mut self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.node_mut(document, input)?.value = value.clone();
        Ok(())
    }

    pub fn delete_input(&mut self, document: Id, input: Id) -> Result<()> {
        self.node(document, input)?;
        let doc = self.doc_mut(document)?;
        let at = doc.position(input).expect("the input exists");
        doc.inputs.remove(at);
        Ok(())
    }

    pub fn set_output(&mut self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.node_mut(document, input)?.output = Some(value.clone());
        Ok(())
    }

    pub fn output(&self, document: Id, input: Id) -> Result<Value> {
        self.node(document, input)?.output.clone().ok_or(Missing::Output { document, input })
    }

    pub fn update_output(&mut self, document: Id, input: Id, value: &Value) -> Result<()> {
        let node = self.node_mut(document, input)?;
        match &mut node.output {
            Some(output) => {
                *output = value.clone();
                Ok(())
            }
            None => Err(Missing::Output { document, input }),
        }
    }

    pub fn delete_output(&mut self, document: Id, input: Id) -> Result<()> {
        self.node_mut(document, input)?.output.take().map(drop).ok_or(Missing::Output { document, input })
    }

    /// Creates a document with its chain: its id and the inputs' ids.
    pub fn import(&mut self, blob: &[u8], columns: Columns, inputs: &[(Value, Option<Value>)]) -> (Id, Vec<Id>) {
        let id = self.create_document(blob, columns);
        let ids = self.append_all(id, inputs);
        (id, ids)
    }

    /// Replaces the document's chain: the new inputs' ids.
    pub fn replace_inputs(&mut self, document: Id, inputs: &[(Value, Option<Value>)]) -> Result<Vec<Id>> {
        self.doc_mut(document)?.inputs.clear();
        Ok(self.append_all(document, inputs))
    }

    fn append_all(&mut self, document: Id, inputs: &[(Value, Option<Value>)]) -> Vec<Id> {
        let mut ids = Vec::new();
        for (value, output) in inputs {
            let input = self.add_input(document, value).expect("the document exists");
            if let Some(output) = output {
                self.set_output(document, input, output).expect("the input exists");
            }
            ids.push(input);
        }
        ids
    }

    /// Applies a batch: every precondition `(document, version)` first,
    /// then the operations in order, all of them or (at the first refusal)
    /// none. Returns what each operation created.
    pub fn batch(&mut self, ops: &[BatchOp], expect: &[(Id, u64)]) -> Result<Vec<Option<Id>>, Refusal> {
        for &(document, expected) in expect {
            let current = self.version(document)?;
            if current != expected {
                return Err(Refusal::Stale { document, expected, current });
            }
        }
        let mut after = self.clone();
        let mut created: Vec<Option<Id>> = Vec::new();
        for op in ops {
            let made = after.batch_op(op, &created)?;
            created.push(made);
        }
        *self = after;
        Ok(created)
    }

    fn batch_op(&mut self, op: &BatchOp, created: &[Option<Id>]) -> Result<Option<Id>, Refusal> {
        let id = |r: &Ref| match *r {
            Ref::Id(id) => id,
            Ref::Created(n) => created[n].expect("tests refer only to operations that created something"),
        };
        match op {
            BatchOp::Create { blob, columns } => return Ok(Some(self.create_document(blob, columns.clone()))),
            BatchOp::AddInput { document, value, place } => {
                return Ok(Some(self.add_input_at(id(document), value, *place)?));
            }
            BatchOp::MoveInput { document, input, place } => self.move_input(id(document), id(input), *place)?,
            BatchOp::SetBlob { document, blob } => self.update_blob(id(document), blob)?,
            BatchOp::SetColumn { document, name, value } => self.set_column(id(document), name, value)?,
            BatchOp::DeleteDocument { document } => self.delete_document(id(document))?,
            BatchOp::UpdateInput { document, input, value } => self.update_input(id(document), id(input), value)?,
            BatchOp::DeleteInput { document, input } => self.delete_input(id(document), id(input))?,
            BatchOp::SetOutput { document, input, value } => self.set_output(id(document), id(input), value)?,
            BatchOp::UpdateOutput { document, input, value } => self.update_output(id(document), id(input), value)?,
            BatchOp::DeleteOutput { document, input } => self.delete_output(id(document), id(input))?,
            BatchOp::ClearInputs { document } => self.doc_mut(id(document))?.inputs.clear(),
        }
        Ok(None)
    }

    /// Inputs over all documents.
    pub fn input_count(&self) -> usize {
        self.documents.values().map(|d| d.inputs.len()).sum()
    }

    /// Outputs over all documents.
    pub fn output_count(&self) -> usize {
        self.documents.values().flat_map(|d| &d.inputs).filter(|(_, n)| n.output.is_some()).count()
    }
}

/// Where `place` is in `doc`'s chain (which lacks `moving`, if it moves).
fn index_for(doc: &Document, document: Id, place: Place, moving: Option<Id>) -> Result<usize, Refusal> {
    let anchor = |input: Id| {
        if Some(input) == moving {
            return Err(Refusal::BesideItself(input));
        }
        doc.position(input).ok_or(Refusal::Missing(Missing::Input { document, input }))
    };
    Ok(match place {
        Place::End => doc.inputs.len(),
        Place::Start => 0,
        Place::Before(input) => anchor(input)?,
        Place::After(input) => anchor(input)? + 1,
    })
}
