//! Shared test support: strategies for values and operations, and the
//! bridge that runs one operation against both the engine and the model.

#![allow(dead_code)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use stratum_io::{Engine, Error, Id, Missing, Value};
use stratum_model::Model;

pub mod harness;

pub type Columns = BTreeMap<String, String>;

/// Short strings with unicode and the empty string.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,6}", "\\PC{0,8}"]
}

/// Every kind of value, including the awkward ones.
pub fn value() -> impl Strategy<Value = Value> {
    let double = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MIN_POSITIVE)
    ];
    let int = prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0i64)];
    prop_oneof![
        int.clone().prop_map(Value::Int),
        double.prop_map(Value::Double),
        text().prop_map(Value::Str),
        prop::collection::vec(int, 0..6).prop_map(Value::IntList),
        prop::collection::vec(text(), 0..4).prop_map(Value::StrList),
        prop::collection::btree_map(text(), text(), 0..4).prop_map(Value::Map),
    ]
}

pub fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::collection::vec(any::<u8>(), 200..900),
    ]
}

pub fn column_name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c]", "\\PC{1,6}"]
}

pub fn columns() -> impl Strategy<Value = Columns> {
    prop::collection::btree_map(column_name(), text(), 0..4)
}

/// Picks an existing id by index, or (for index 0) one that never existed.
#[derive(Clone, Copy, Debug)]
pub struct Pick(pub u8);

impl Pick {
    pub fn resolve(self, ids: &[Id]) -> Id {
        if self.0 == 0 || ids.is_empty() {
            1_000_000 + u64::from(self.0)
        } else {
            ids[(self.0 as usize - 1) % ids.len()]
        }
    }
}

pub fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![1 => Just(Pick(0)), 12 => (1u8..=255).prop_map(Pick)]
}

/// One engine operation, with ids picked from those issued so far.
#[derive(Clone, Debug)]
pub enum Op {
    Create { blob: Vec<u8>, columns: Columns },
    GetBlob(Pick),
    GetColumns(Pick),
    UpdateBlob(Pick, Vec<u8>),
    SetColumn(Pick, String, String),
    DeleteDocument(Pick),
    ListDocuments,
    AddInput(Pick, Value),
    GetInput(Pick, Pick),
    GetInputs(Pick),
    UpdateInput(Pick, Pick, Value),
    DeleteInput(Pick, Pick),
    SetOutput(Pick, Pick, Value),
    GetOutput(Pick, Pick),
    UpdateOutput(Pick, Pick, Value),
    DeleteOutput(Pick, Pick),
    Flush,
    Compact,
    WriteHints,
}

impl Op {
    /// Whether the operation writes (and so can change the state).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Op::GetBlob(_)
                | Op::GetColumns(_)
                | Op::ListDocuments
                | Op::GetInput(..)
                | Op::GetInputs(_)
                | Op::GetOutput(..)
                | Op::Flush
                | Op::Compact
                | Op::WriteHints
        )
    }
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (blob(), columns()).prop_map(|(blob, columns)| Op::Create { blob, columns }),
        2 => pick().prop_map(Op::GetBlob),
        1 => pick().prop_map(Op::GetColumns),
        2 => (pick(), blob()).prop_map(|(d, b)| Op::UpdateBlob(d, b)),
        2 => (pick(), column_name(), text()).prop_map(|(d, n, v)| Op::SetColumn(d, n, v)),
        1 => pick().prop_map(Op::DeleteDocument),
        1 => Just(Op::ListDocuments),
        6 => (pick(), value()).prop_map(|(d, v)| Op::AddInput(d, v)),
        2 => (pick(), pick()).prop_map(|(d, i)| Op::GetInput(d, i)),
        2 => pick().prop_map(Op::GetInputs),
        2 => (pick(), pick(), value()).prop_map(|(d, i, v)| Op::UpdateInput(d, i, v)),
        1 => (pick(), pick()).prop_map(|(d, i)| Op::DeleteInput(d, i)),
        4 => (pick(), pick(), value()).prop_map(|(d, i, v)| Op::SetOutput(d, i, v)),
        2 => (pick(), pick()).prop_map(|(d, i)| Op::GetOutput(d, i)),
        2 => (pick(), pick(), value()).prop_map(|(d, i, v)| Op::UpdateOutput(d, i, v)),
        1 => (pick(), pick()).prop_map(|(d, i)| Op::DeleteOutput(d, i)),
        1 => Just(Op::Flush),
        2 => Just(Op::Compact),
        1 => Just(Op::WriteHints),
    ]
}

/// What an operation answered, in a form both sides can produce.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Done,
    Id(Id),
    Ids(Vec<Id>),
    Blob(Vec<u8>),
    Columns(Columns),
    Value(Value),
    Inputs(Vec<(Id, Value)>),
    NotFound(Missing),
}

/// Ids the model has issued, by kind, so picks can find them.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    pub documents: Vec<Id>,
    pub inputs: Vec<Id>,
    /// The largest id the engine returned to a caller.
    pub handed_out: Id,
}

impl Issued {
    /// Notes an id the engine returned.
    pub fn note(&mut self, op: &Op, answer: &Answer) {
        self.note_possible(op, answer);
        if let Answer::Id(id) = answer {
            self.handed_out = self.handed_out.max(*id);
        }
    }

    /// Notes an id that may exist after a restart although the operation
    /// that would have created it failed.
    pub fn note_possible(&mut self, op: &Op, answer: &Answer) {
        match (op, answer) {
            (Op::Create { .. }, Answer::Id(id)) => self.documents.push(*id),
            (Op::AddInput(..), Answer::Id(id)) => self.inputs.push(*id),
            _ => {}
        }
    }
}

fn answer<T>(result: Result<T, Missing>, wrap: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(v) => wrap(v),
        Err(m) => Answer::NotFound(m),
    }
}

/// Applies `op` to the model.
pub fn run_model(model: &mut Model, issued: &Issued, op: &Op) -> Answer {
    let doc = |p: &Pick| p.resolve(&issued.documents);
    let input = |p: &Pick| p.resolve(&issued.inputs);
    let done = |_| Answer::Done;
    match op {
        Op::Create { blob, columns } => Answer::Id(model.create_document(blob, columns.clone())),
        Op::GetBlob(d) => answer(model.document_blob(doc(d)), Answer::Blob),
        Op::GetColumns(d) => answer(model.document_columns(doc(d)), Answer::Columns),
        Op::UpdateBlob(d, b) => answer(model.update_blob(doc(d), b), done),
        Op::SetColumn(d, n, v) => answer(model.set_column(doc(d), n, v), done),
        Op::DeleteDocument(d) => answer(model.delete_document(doc(d)), done),
        Op::ListDocuments => Answer::Ids(model.document_ids()),
        Op::AddInput(d, v) => answer(model.add_input(doc(d), v), Answer::Id),
        Op::GetInput(d, i) => answer(model.input(doc(d), input(i)), Answer::Value),
        Op::GetInputs(d) => answer(model.inputs(doc(d)), Answer::Inputs),
        Op::UpdateInput(d, i, v) => answer(model.update_input(doc(d), input(i), v), done),
        Op::DeleteInput(d, i) => answer(model.delete_input(doc(d), input(i)), done),
        Op::SetOutput(d, i, v) => answer(model.set_output(doc(d), input(i), v), done),
        Op::GetOutput(d, i) => answer(model.output(doc(d), input(i)), Answer::Value),
        Op::UpdateOutput(d, i, v) => answer(model.update_output(doc(d), input(i), v), done),
        Op::DeleteOutput(d, i) => answer(model.delete_output(doc(d), input(i)), done),
        Op::Flush | Op::Compact | Op::WriteHints => Answer::Done,
    }
}

/// Applies `op` to the engine, then checks the index's invariants (a
/// violation panics, naming the operation). `Err` is an error other than
/// "not found" (an IO failure, a poisoned engine, corruption).
pub fn run_engine(engine: &Engine, issued: &Issued, op: &Op) -> Result<Answer, Error> {
    let answer = apply(engine, issued, op);
    if let Err(violation) = engine.check_invariants() {
        panic!("the index's invariants broke after {op:?}: {violation}");
    }
    answer
}

fn apply(engine: &Engine, issued: &Issued, op: &Op) -> Result<Answer, Error> {
    let doc = |p: &Pick| p.resolve(&issued.documents);
    let input = |p: &Pick| p.resolve(&issued.inputs);
    fn lift<T>(r: Result<T, Error>, wrap: impl FnOnce(T) -> Answer) -> Result<Answer, Error> {
        match r {
            Ok(v) => Ok(wrap(v)),
            Err(Error::NotFound(m)) => Ok(Answer::NotFound(m)),
            Err(e) => Err(e),
        }
    }
    let done = |_| Answer::Done;
    match op {
        Op::Create { blob, columns } => lift(engine.create_document(blob, columns.clone()), Answer::Id),
        Op::GetBlob(d) => lift(engine.document_blob(doc(d)), Answer::Blob),
        Op::GetColumns(d) => lift(engine.document_columns(doc(d)), Answer::Columns),
        Op::UpdateBlob(d, b) => lift(engine.update_blob(doc(d), b), done),
        Op::SetColumn(d, n, v) => lift(engine.set_column(doc(d), n, v), done),
        Op::DeleteDocument(d) => lift(engine.delete_document(doc(d)), done),
        Op::ListDocuments => Ok(Answer::Ids(engine.document_ids())),
        Op::AddInput(d, v) => lift(engine.add_input(doc(d), v), Answer::Id),
        Op::GetInput(d, i) => lift(engine.input(doc(d), input(i)), Answer::Value),
        Op::GetInputs(d) => lift(engine.inputs(doc(d)), Answer::Inputs),
        Op::UpdateInput(d, i, v) => lift(engine.update_input(doc(d), input(i), v), done),
        Op::DeleteInput(d, i) => lift(engine.delete_input(doc(d), input(i)), done),
        Op::SetOutput(d, i, v) => lift(engine.set_output(doc(d), input(i), v), done),
        Op::GetOutput(d, i) => lift(engine.output(doc(d), input(i)), Answer::Value),
        Op::UpdateOutput(d, i, v) => lift(engine.update_output(doc(d), input(i), v), done),
        Op::DeleteOutput(d, i) => lift(engine.delete_output(doc(d), input(i)), done),
        Op::Flush => lift(engine.flush(), done),
        Op::Compact => lift(engine.compact(), |_| Answer::Done),
        Op::WriteHints => lift(engine.write_hints(), |_| Answer::Done),
    }
}

/// Reads the engine's whole visible state into a model, through the public
/// API only: every document, blob, column, input, value and output.
pub fn read_back(engine: &Engine) -> Result<Model, Error> {
    if let Err(violation) = engine.check_invariants() {
        panic!("the index's invariants do not hold: {violation}");
    }
    let mut model = Model::new();
    for id in engine.document_ids() {
        let mut inputs = BTreeMap::new();
        for (input, value) in engine.inputs(id)? {
            let output = match engine.output(id, input) {
                Ok(v) => Some(v),
                Err(Error::NotFound(Missing::Output { .. })) => None,
                Err(e) => return Err(e),
            };
            inputs.insert(input, stratum_model::Node { value, output });
        }
        let document =
            stratum_model::Document { blob: engine.document_blob(id)?, columns: engine.document_columns(id)?, inputs };
        model.documents.insert(id, document);
    }
    model.next_id = engine.stats().next_id;
    Ok(model)
}

/// Checks the engine's counters against the model.
pub fn check_counts(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    let stats = engine.stats();
    prop_assert_eq!(stats.documents as usize, model.documents.len());
    prop_assert_eq!(stats.inputs as usize, model.input_count());
    prop_assert_eq!(stats.outputs as usize, model.output_count());
    prop_assert!(stats.live_bytes <= stats.total_bytes);
    prop_assert_eq!(stats.next_id, model.next_id);
    Ok(())
}

/// Checks the engine's id counter after a restart, when it may have moved
/// past the model's (ids handed out before the restart are never handed out
/// again, even those of lost writes), and makes the model follow it.
pub fn resume_ids(engine: &Engine, model: &mut Model, issued: &Issued) -> Result<(), TestCaseError> {
    let next_id = engine.stats().next_id;
    prop_assert!(next_id >= model.next_id, "id counter went back from {} to {next_id}", model.next_id);
    let highest = issued.handed_out;
    prop_assert!(next_id > highest, "id {highest} was handed out before the restart, next id is {next_id}");
    model.next_id = next_id;
    Ok(())
}

/// Test case count: `default` in CI, `STRATUM_PROPTEST_CASES` for long runs.
pub fn cases(default: u32) -> u32 {
    std::env::var("STRATUM_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}
