//! A deliberately simple, in-memory Stratum: the oracle the engine is
//! tested against.
//!
//! Plain ordered maps, no files, no indexes, no cleverness: anyone can check
//! it by reading it. Ids follow the engine's rule (one counter for documents
//! and inputs, starting at 1, never reused), so a test can compare the ids
//! the engine hands out with the ids the model expects.

use std::collections::BTreeMap;

pub use stratum_core::{Columns, Id, Missing, Value};

/// One document as the model keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub blob: Vec<u8>,
    pub columns: Columns,
    /// Inputs in chain order (ids grow, so map order is chain order).
    pub inputs: BTreeMap<Id, Node>,
}

/// An input value and its output, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub value: Value,
    pub output: Option<Value>,
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

type Result<T> = std::result::Result<T, Missing>;

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
        self.doc(document)?.inputs.get(&input).ok_or(Missing::Input { document, input })
    }

    fn node_mut(&mut self, document: Id, input: Id) -> Result<&mut Node> {
        self.doc_mut(document)?.inputs.get_mut(&input).ok_or(Missing::Input { document, input })
    }

    pub fn create_document(&mut self, blob: &[u8], columns: Columns) -> Id {
        let id = self.take_id();
        self.documents.insert(id, Document { blob: blob.to_vec(), columns, inputs: BTreeMap::new() });
        id
    }

    pub fn document_blob(&self, id: Id) -> Result<Vec<u8>> {
        Ok(self.doc(id)?.blob.clone())
    }

    pub fn document_columns(&self, id: Id) -> Result<Columns> {
        Ok(self.doc(id)?.columns.clone())
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

    pub fn add_input(&mut self, document: Id, value: &Value) -> Result<Id> {
        self.doc(document)?;
        let id = self.take_id();
        self.doc_mut(document)?.inputs.insert(id, Node { value: value.clone(), output: None });
        Ok(id)
    }

    pub fn input(&self, document: Id, input: Id) -> Result<Value> {
        Ok(self.node(document, input)?.value.clone())
    }

    pub fn inputs(&self, document: Id) -> Result<Vec<(Id, Value)>> {
        Ok(self.doc(document)?.inputs.iter().map(|(&id, node)| (id, node.value.clone())).collect())
    }

    pub fn update_input(&mut self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.node_mut(document, input)?.value = value.clone();
        Ok(())
    }

    pub fn delete_input(&mut self, document: Id, input: Id) -> Result<()> {
        self.node(document, input)?;
        self.doc_mut(document)?.inputs.remove(&input);
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

    /// Inputs over all documents.
    pub fn input_count(&self) -> usize {
        self.documents.values().map(|d| d.inputs.len()).sum()
    }

    /// Outputs over all documents.
    pub fn output_count(&self) -> usize {
        self.documents.values().flat_map(|d| d.inputs.values()).filter(|n| n.output.is_some()).count()
    }
}
