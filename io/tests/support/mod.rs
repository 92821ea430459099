//! Shared test support: strategies for values and operations, and the
//! bridge that runs one operation against both the engine and the model.

#![allow(dead_code)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use stratum_io::{Engine, Error, Expect, Id, Invalid, Missing, Value};
use stratum_model::{BatchOp, Model, Place, Ref, Refusal};

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
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
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
    Create {
        blob: Vec<u8>,
        columns: Columns,
    },
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
    /// A whole document read (version, chain order, outputs).
    GetDocument(Pick),
    Import {
        blob: Vec<u8>,
        columns: Columns,
        inputs: Vec<(Value, Option<Value>)>,
    },
    /// Replaces a chain, with an optional precondition.
    Replace(Pick, Vec<(Value, Option<Value>)>, Option<Freshness>),
    AddInputAt(Pick, Value, PlaceGen),
    Move(Pick, Pick, PlaceGen),
    /// A batch of operations with preconditions.
    Batch {
        ops: Vec<GenOp>,
        expect: Vec<(Pick, Freshness)>,
    },
    Flush,
    Compact,
    WriteHints,
}

/// A precondition as generated: the document's current version, or a
/// stale one.
#[derive(Clone, Copy, Debug)]
pub enum Freshness {
    Current,
    Stale,
}

/// A place in a chain as generated (anchors picked among issued inputs).
#[derive(Clone, Copy, Debug)]
pub enum PlaceGen {
    End,
    Start,
    Before(Pick),
    After(Pick),
}

/// What a batch operation names: an issued id, or what an earlier
/// operation of the batch created (the `n`-th earlier create of that kind,
/// counted modulo how many there are; an issued id when there is none).
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Issued(Pick),
    New(u8),
}

/// One batch operation as generated.
#[derive(Clone, Debug)]
pub enum GenOp {
    Create { blob: Vec<u8>, columns: Columns },
    SetBlob(Target, Vec<u8>),
    SetColumn(Target, String, String),
    DeleteDocument(Target),
    AddInput(Target, Value, PlaceGen),
    UpdateInput(Target, Target, Value),
    DeleteInput(Target, Target),
    SetOutput(Target, Target, Value),
    UpdateOutput(Target, Target, Value),
    DeleteOutput(Target, Target),
    Move(Target, Target, PlaceGen),
    ClearInputs(Target),
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
                | Op::GetDocument(_)
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
        2 => pick().prop_map(Op::GetDocument),
        2 => (blob(), columns(), new_inputs()).prop_map(|(blob, columns, inputs)| Op::Import { blob, columns, inputs }),
        1 => (pick(), new_inputs(), prop::option::of(freshness())).prop_map(|(d, i, f)| Op::Replace(d, i, f)),
        2 => (pick(), value(), place()).prop_map(|(d, v, p)| Op::AddInputAt(d, v, p)),
        2 => (pick(), pick(), place()).prop_map(|(d, i, p)| Op::Move(d, i, p)),
        3 => (prop::collection::vec(gen_op(), 1..6), prop::collection::vec((pick(), freshness()), 0..2))
            .prop_map(|(ops, expect)| Op::Batch { ops, expect }),
        1 => Just(Op::Flush),
        2 => Just(Op::Compact),
        1 => Just(Op::WriteHints),
    ]
}

pub fn freshness() -> impl Strategy<Value = Freshness> {
    prop_oneof![3 => Just(Freshness::Current), 1 => Just(Freshness::Stale)]
}

pub fn place() -> impl Strategy<Value = PlaceGen> {
    prop_oneof![
        1 => Just(PlaceGen::End),
        1 => Just(PlaceGen::Start),
        2 => pick().prop_map(PlaceGen::Before),
        2 => pick().prop_map(PlaceGen::After),
    ]
}

/// A new chain: values, some with outputs.
pub fn new_inputs() -> impl Strategy<Value = Vec<(Value, Option<Value>)>> {
    prop::collection::vec((value(), prop::option::of(value())), 0..5)
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![3 => pick().prop_map(Target::Issued), 2 => any::<u8>().prop_map(Target::New)]
}

pub fn gen_op() -> impl Strategy<Value = GenOp> {
    prop_oneof![
        2 => (blob(), columns()).prop_map(|(blob, columns)| GenOp::Create { blob, columns }),
        1 => (target(), blob()).prop_map(|(d, b)| GenOp::SetBlob(d, b)),
        1 => (target(), column_name(), text()).prop_map(|(d, n, v)| GenOp::SetColumn(d, n, v)),
        1 => target().prop_map(GenOp::DeleteDocument),
        4 => (target(), value(), place()).prop_map(|(d, v, p)| GenOp::AddInput(d, v, p)),
        1 => (target(), target(), value()).prop_map(|(d, i, v)| GenOp::UpdateInput(d, i, v)),
        1 => (target(), target()).prop_map(|(d, i)| GenOp::DeleteInput(d, i)),
        2 => (target(), target(), value()).prop_map(|(d, i, v)| GenOp::SetOutput(d, i, v)),
        1 => (target(), target(), value()).prop_map(|(d, i, v)| GenOp::UpdateOutput(d, i, v)),
        1 => (target(), target()).prop_map(|(d, i)| GenOp::DeleteOutput(d, i)),
        2 => (target(), target(), place()).prop_map(|(d, i, p)| GenOp::Move(d, i, p)),
        1 => target().prop_map(GenOp::ClearInputs),
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
    Document(stratum_model::Document),
    /// A document and its inputs' ids (an import).
    Imported(Id, Vec<Id>),
    /// What each operation of a batch created.
    Created(Vec<Option<Id>>),
    NotFound(Missing),
    BesideItself(Id),
    Stale {
        document: Id,
        expected: u64,
        current: u64,
    },
}

impl From<Refusal> for Answer {
    fn from(r: Refusal) -> Answer {
        match r {
            Refusal::Missing(m) => Answer::NotFound(m),
            Refusal::BesideItself(id) => Answer::BesideItself(id),
            Refusal::Stale { document, expected, current } => Answer::Stale { document, expected, current },
        }
    }
}

/// A generated operation with its ids picked: what both the model and the
/// engine are given.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    Batch { ops: Vec<BatchOp>, expect: Vec<(Id, u64)> },
    Replace { document: Id, inputs: Vec<(Value, Option<Value>)>, expected: Option<u64> },
    AddInputAt { document: Id, value: Value, place: Place },
    Move { document: Id, input: Id, place: Place },
}

/// The version a precondition expects of `document`: its current one, or
/// one it does not have.
fn expected_version(version: &dyn Fn(Id) -> u64, document: Id, freshness: Freshness) -> u64 {
    let current = version(document);
    match freshness {
        Freshness::Current => current,
        Freshness::Stale => current + 1,
    }
}

fn resolve_place(issued: &Issued, place: PlaceGen) -> Place {
    let input = |p: Pick| p.resolve(&issued.inputs);
    match place {
        PlaceGen::End => Place::End,
        PlaceGen::Start => Place::Start,
        PlaceGen::Before(p) => Place::Before(input(p)),
        PlaceGen::After(p) => Place::After(input(p)),
    }
}

/// Picks the ids of a generated operation that needs them resolved, and
/// the versions its preconditions expect (`version` is the document's
/// current version as the model or the engine knows it: they must agree).
pub fn resolve(version: &dyn Fn(Id) -> u64, issued: &Issued, op: &Op) -> Option<Resolved> {
    let model = version;
    let doc = |p: &Pick| p.resolve(&issued.documents);
    let input = |p: &Pick| p.resolve(&issued.inputs);
    Some(match op {
        Op::Replace(d, inputs, freshness) => Resolved::Replace {
            document: doc(d),
            inputs: inputs.clone(),
            expected: freshness.map(|f| expected_version(model, doc(d), f)),
        },
        Op::AddInputAt(d, value, place) => {
            Resolved::AddInputAt { document: doc(d), value: value.clone(), place: resolve_place(issued, *place) }
        }
        Op::Move(d, i, place) => {
            Resolved::Move { document: doc(d), input: input(i), place: resolve_place(issued, *place) }
        }
        Op::Batch { ops, expect } => {
            let (mut documents, mut inputs) = (Vec::new(), Vec::new());
            let mut resolved = Vec::new();
            for (at, op) in ops.iter().enumerate() {
                let target = |t: &Target, created: &[usize], issued_ids: &[Id]| match *t {
                    Target::New(n) if !created.is_empty() => Ref::Created(created[n as usize % created.len()]),
                    Target::New(n) => Ref::Id(Pick(n).resolve(issued_ids)),
                    Target::Issued(p) => Ref::Id(p.resolve(issued_ids)),
                };
                let d = |t: &Target| target(t, &documents, &issued.documents);
                let i = |t: &Target| target(t, &inputs, &issued.inputs);
                let place = |p: &PlaceGen| resolve_place(issued, *p);
                resolved.push(match op {
                    GenOp::Create { blob, columns } => {
                        documents.push(at);
                        BatchOp::Create { blob: blob.clone(), columns: columns.clone() }
                    }
                    GenOp::SetBlob(t, blob) => BatchOp::SetBlob { document: d(t), blob: blob.clone() },
                    GenOp::SetColumn(t, n, v) => {
                        BatchOp::SetColumn { document: d(t), name: n.clone(), value: v.clone() }
                    }
                    GenOp::DeleteDocument(t) => BatchOp::DeleteDocument { document: d(t) },
                    GenOp::AddInput(t, value, p) => {
                        let op = BatchOp::AddInput { document: d(t), value: value.clone(), place: place(p) };
                        inputs.push(at);
                        op
                    }
                    GenOp::UpdateInput(t, u, value) => {
                        BatchOp::UpdateInput { document: d(t), input: i(u), value: value.clone() }
                    }
                    GenOp::DeleteInput(t, u) => BatchOp::DeleteInput { document: d(t), input: i(u) },
                    GenOp::SetOutput(t, u, value) => {
                        BatchOp::SetOutput { document: d(t), input: i(u), value: value.clone() }
                    }
                    GenOp::UpdateOutput(t, u, value) => {
                        BatchOp::UpdateOutput { document: d(t), input: i(u), value: value.clone() }
                    }
                    GenOp::DeleteOutput(t, u) => BatchOp::DeleteOutput { document: d(t), input: i(u) },
                    GenOp::Move(t, u, p) => BatchOp::MoveInput { document: d(t), input: i(u), place: place(p) },
                    GenOp::ClearInputs(t) => BatchOp::ClearInputs { document: d(t) },
                });
            }
            let expect = expect.iter().map(|(p, f)| (doc(p), expected_version(model, doc(p), *f))).collect();
            Resolved::Batch { ops: resolved, expect }
        }
        _ => return None,
    })
}

/// Ids the model has issued, by kind, so picks can find them.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    pub documents: Vec<Id>,
    pub inputs: Vec<Id>,
    /// The largest id the engine returned to a caller.
    pub handed_out: Id,
    /// The largest id an import, replace or batch may have handed out.
    pub largest_possible: Id,
}

impl Issued {
    /// Notes an id the engine returned.
    pub fn note(&mut self, op: &Op, answer: &Answer) {
        let before = self.largest_possible;
        self.note_possible(op, answer);
        if let Answer::Id(id) = answer {
            self.handed_out = self.handed_out.max(*id);
        }
        if self.largest_possible > before {
            self.handed_out = self.handed_out.max(self.largest_possible);
        }
    }

    /// Notes an id that may exist after a restart although the operation
    /// that would have created it failed.
    pub fn note_possible(&mut self, op: &Op, answer: &Answer) {
        match (op, answer) {
            (Op::Create { .. }, Answer::Id(id)) => self.documents.push(*id),
            (Op::AddInput(..) | Op::AddInputAt(..), Answer::Id(id)) => self.inputs.push(*id),
            (Op::Import { .. }, Answer::Imported(document, inputs)) => {
                self.documents.push(*document);
                self.inputs.extend(inputs);
            }
            (Op::Replace(..), Answer::Ids(inputs)) => self.inputs.extend(inputs),
            (Op::Batch { ops, .. }, Answer::Created(created)) => {
                for (op, id) in ops.iter().zip(created) {
                    match (op, id) {
                        (GenOp::Create { .. }, Some(id)) => self.documents.push(*id),
                        (GenOp::AddInput(..), Some(id)) => self.inputs.push(*id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let largest = match answer {
            Answer::Imported(document, inputs) => inputs.iter().copied().chain([*document]).max(),
            Answer::Ids(ids) if matches!(op, Op::Replace(..)) => ids.iter().copied().max(),
            Answer::Created(created) => created.iter().flatten().copied().max(),
            _ => None,
        };
        if let Some(largest) = largest {
            self.largest_possible = self.largest_possible.max(largest);
        }
    }
}

fn answer<T>(result: Result<T, Missing>, wrap: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(v) => wrap(v),
        Err(m) => Answer::NotFound(m),
    }
}

/// The documents `op` names (and those it creates, once `answer` says
/// which): only their versions may move.
pub fn named_documents(op: &Op, resolved: Option<&Resolved>, issued: &Issued, answer: &Answer) -> Vec<Id> {
    let doc = |p: &Pick| p.resolve(&issued.documents);
    let mut named = match (op, resolved) {
        (Op::Create { .. }, _) | (Op::Import { .. }, _) => Vec::new(),
        (Op::UpdateBlob(d, _) | Op::SetColumn(d, ..) | Op::DeleteDocument(d), _) => vec![doc(d)],
        (
            Op::AddInput(d, _)
            | Op::UpdateInput(d, ..)
            | Op::DeleteInput(d, _)
            | Op::SetOutput(d, ..)
            | Op::UpdateOutput(d, ..)
            | Op::DeleteOutput(d, _),
            _,
        ) => vec![doc(d)],
        (
            _,
            Some(
                Resolved::Replace { document, .. }
                | Resolved::AddInputAt { document, .. }
                | Resolved::Move { document, .. },
            ),
        ) => {
            vec![*document]
        }
        (_, Some(Resolved::Batch { ops, .. })) => ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Create { .. } => None,
                BatchOp::SetBlob { document, .. }
                | BatchOp::SetColumn { document, .. }
                | BatchOp::DeleteDocument { document }
                | BatchOp::AddInput { document, .. }
                | BatchOp::UpdateInput { document, .. }
                | BatchOp::DeleteInput { document, .. }
                | BatchOp::SetOutput { document, .. }
                | BatchOp::UpdateOutput { document, .. }
                | BatchOp::DeleteOutput { document, .. }
                | BatchOp::MoveInput { document, .. }
                | BatchOp::ClearInputs { document } => match document {
                    Ref::Id(id) => Some(*id),
                    Ref::Created(_) => None,
                },
            })
            .collect(),
        _ => Vec::new(),
    };
    match (op, answer) {
        (Op::Create { .. }, Answer::Id(id)) | (Op::Import { .. }, Answer::Imported(id, _)) => named.push(*id),
        (Op::Batch { ops, .. }, Answer::Created(created)) => {
            for (op, id) in ops.iter().zip(created) {
                if let (GenOp::Create { .. }, Some(id)) = (op, id) {
                    named.push(*id);
                }
            }
        }
        _ => {}
    }
    named
}

/// Applies `op` to the model.
pub fn run_model(model: &mut Model, issued: &Issued, op: &Op) -> Answer {
    let doc = |p: &Pick| p.resolve(&issued.documents);
    let input = |p: &Pick| p.resolve(&issued.inputs);
    let done = |_| Answer::Done;
    let versions = model.clone();
    let resolved = resolve(&|d| versions.version(d).unwrap_or(0), issued, op);
    let refused = |r: Result<Answer, Refusal>| r.unwrap_or_else(Answer::from);
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
        Op::GetDocument(d) => answer(model.document(doc(d)), Answer::Document),
        Op::Import { blob, columns, inputs } => {
            let (document, ids) = model.import(blob, columns.clone(), inputs);
            Answer::Imported(document, ids)
        }
        Op::Replace(..) | Op::AddInputAt(..) | Op::Move(..) | Op::Batch { .. } => {
            match resolved.expect("these operations resolve") {
                Resolved::Replace { document, inputs, expected } => refused((|| {
                    if let Some(expected) = expected {
                        let current = model.version(document)?;
                        if current != expected {
                            return Err(Refusal::Stale { document, expected, current });
                        }
                    }
                    Ok(Answer::Ids(model.replace_inputs(document, &inputs)?))
                })()),
                Resolved::AddInputAt { document, value, place } => {
                    refused(model.add_input_at(document, &value, place).map(Answer::Id))
                }
                Resolved::Move { document, input, place } => {
                    refused(model.move_input(document, input, place).map(|()| Answer::Done))
                }
                Resolved::Batch { ops, expect } => refused(model.batch(&ops, &expect).map(Answer::Created)),
            }
        }
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
        // A batch's refusal names its operation; the model's names none.
        match r.map_err(Error::into_cause) {
            Ok(v) => Ok(wrap(v)),
            Err(Error::NotFound(m)) => Ok(Answer::NotFound(m)),
            Err(Error::Invalid(Invalid::PlacedBesideItself(id))) => Ok(Answer::BesideItself(id)),
            Err(Error::VersionMismatch { document, expected, current }) => {
                Ok(Answer::Stale { document, expected, current })
            }
            Err(e) => Err(e),
        }
    }
    let resolved = resolve(&|d| engine.document_version(d).unwrap_or(0), issued, op);
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
        Op::GetDocument(d) => lift(engine.document(doc(d)), |view| Answer::Document(document_of(view))),
        Op::Import { blob, columns, inputs } => lift(engine.import_document(blob, columns, inputs), |c| {
            let ids: Vec<Id> = c.created.iter().flatten().copied().collect();
            Answer::Imported(ids[0], ids[1..].to_vec())
        }),
        Op::Replace(..) | Op::AddInputAt(..) | Op::Move(..) | Op::Batch { .. } => {
            match resolved.expect("these operations resolve") {
                Resolved::Replace { document, inputs, expected } => {
                    lift(engine.replace_inputs(document, &inputs, expected), |c| {
                        Answer::Ids(c.created.iter().flatten().copied().collect())
                    })
                }
                Resolved::AddInputAt { document, value, place } => {
                    let op = stratum_io::Op::AddInput {
                        document: io_ref(Ref::Id(document)),
                        value: &value,
                        place: io_place(place),
                    };
                    lift(engine.write(op, None), |c| Answer::Id(c.created[0].expect("an input was created")))
                }
                Resolved::Move { document, input, place } => {
                    let op = stratum_io::Op::MoveInput {
                        document: io_ref(Ref::Id(document)),
                        input: io_ref(Ref::Id(input)),
                        place: io_place(place),
                    };
                    lift(engine.write(op, None), |_| Answer::Done)
                }
                Resolved::Batch { ops, expect } => {
                    let ops: Vec<stratum_io::Op<'_>> = ops.iter().map(io_op).collect();
                    let expect: Vec<Expect> =
                        expect.iter().map(|&(document, version)| Expect { document, version }).collect();
                    lift(engine.batch(&ops, &expect), |c| Answer::Created(c.created))
                }
            }
        }
        Op::Flush => lift(engine.flush(), done),
        Op::Compact => lift(engine.compact(), |_| Answer::Done),
        Op::WriteHints => lift(engine.write_hints(), |_| Answer::Done),
    }
}

fn io_ref(r: Ref) -> stratum_io::Ref {
    match r {
        Ref::Id(id) => stratum_io::Ref::Id(id),
        Ref::Created(n) => stratum_io::Ref::Created(n),
    }
}

fn io_place(place: Place) -> stratum_io::Place {
    match place {
        Place::End => stratum_io::Place::End,
        Place::Start => stratum_io::Place::Start,
        Place::Before(id) => stratum_io::Place::Before(stratum_io::Ref::Id(id)),
        Place::After(id) => stratum_io::Place::After(stratum_io::Ref::Id(id)),
    }
}

/// The engine's form of a model batch operation.
fn io_op(op: &BatchOp) -> stratum_io::Op<'_> {
    use stratum_io::Op as E;
    match op {
        BatchOp::Create { blob, columns } => E::CreateDocument { blob, columns },
        BatchOp::SetBlob { document, blob } => E::SetBlob { document: io_ref(*document), blob },
        BatchOp::SetColumn { document, name, value } => E::SetColumn { document: io_ref(*document), name, value },
        BatchOp::DeleteDocument { document } => E::DeleteDocument { document: io_ref(*document) },
        BatchOp::AddInput { document, value, place } => {
            E::AddInput { document: io_ref(*document), value, place: io_place(*place) }
        }
        BatchOp::UpdateInput { document, input, value } => {
            E::UpdateInput { document: io_ref(*document), input: io_ref(*input), value }
        }
        BatchOp::DeleteInput { document, input } => {
            E::DeleteInput { document: io_ref(*document), input: io_ref(*input) }
        }
        BatchOp::SetOutput { document, input, value } => {
            E::SetOutput { document: io_ref(*document), input: io_ref(*input), value }
        }
        BatchOp::UpdateOutput { document, input, value } => {
            E::UpdateOutput { document: io_ref(*document), input: io_ref(*input), value }
        }
        BatchOp::DeleteOutput { document, input } => {
            E::DeleteOutput { document: io_ref(*document), input: io_ref(*input) }
        }
        BatchOp::MoveInput { document, input, place } => {
            E::MoveInput { document: io_ref(*document), input: io_ref(*input), place: io_place(*place) }
        }
        BatchOp::ClearInputs { document } => E::ClearInputs { document: io_ref(*document) },
    }
}

/// A whole-document read as the model holds a document.
pub fn document_of(view: stratum_io::DocumentView) -> stratum_model::Document {
    stratum_model::Document {
        blob: view.blob,
        columns: view.columns,
        inputs: view
            .inputs
            .into_iter()
            .map(|input| (input.id, stratum_model::Node { value: input.value, output: input.output }))
            .collect(),
        version: view.version,
    }
}

/// Reads the engine's whole visible state into a model, through the public
/// API only: every document (whole, with its version and chain order), and
/// again node by node through the point reads, which must agree.
pub fn read_back(engine: &Engine) -> Result<Model, Error> {
    if let Err(violation) = engine.check_invariants() {
        panic!("the index's invariants do not hold: {violation}");
    }
    let mut model = Model::new();
    for id in engine.document_ids() {
        let document = document_of(engine.document(id)?);
        let mut inputs = Vec::new();
        for (input, value) in engine.inputs(id)? {
            let output = match engine.output(id, input) {
                Ok(v) => Some(v),
                Err(Error::NotFound(Missing::Output { .. })) => None,
                Err(e) => return Err(e),
            };
            inputs.push((input, stratum_model::Node { value, output }));
        }
        assert_eq!(document.inputs, inputs, "the whole read and the point reads of document {id} disagree");
        assert_eq!(document.blob, engine.document_blob(id)?, "blob of document {id}");
        assert_eq!(document.columns, engine.document_columns(id)?, "columns of document {id}");
        model.documents.insert(id, document);
    }
    model.next_id = engine.stats().next_id;
    Ok(model)
}

/// [`observe_versions`] for `op`, which answered `answer` and was run on
/// the model `before` (the documents it names are worked out here).
pub fn check_versions(
    engine: &Engine,
    before: &Model,
    model: &mut Model,
    issued: &Issued,
    op: &Op,
    answer: &Answer,
) -> Result<(), TestCaseError> {
    let resolved = resolve(&|d| before.version(d).unwrap_or(0), issued, op);
    let named = named_documents(op, resolved.as_ref(), issued, answer);
    observe_versions(engine, before, model, &named, op)
}

/// Checks the versions the engine reports after `op` against the rule (a
/// document the model says changed has a higher version, one the op named
/// has one at least as high, any other the same) and records them in the
/// model. `before` is the model before the op.
pub fn observe_versions(
    engine: &Engine,
    before: &Model,
    model: &mut Model,
    named: &[Id],
    context: &dyn std::fmt::Debug,
) -> Result<(), TestCaseError> {
    let ids: Vec<Id> = model.document_ids();
    for id in ids {
        let now = engine
            .document_version(id)
            .map_err(|e| TestCaseError::fail(format!("version of document {id} after {context:?}: {e}")))?;
        let after = &model.documents[&id];
        match before.documents.get(&id) {
            None => prop_assert!(now > 0, "new document {} has version 0 after {:?}", id, context),
            Some(old) => {
                let changed = (&old.blob, &old.columns, &old.inputs) != (&after.blob, &after.columns, &after.inputs);
                if changed {
                    prop_assert!(now > old.version, "document {} changed by {:?} kept version {}", id, context, now);
                } else if named.contains(&id) {
                    prop_assert!(now >= old.version, "version of {} went back after {:?}", id, context);
                } else {
                    prop_assert_eq!(now, old.version, "document {} not named by {:?} changed version", id, context);
                }
            }
        }
        model.observe_version(id, now);
    }
    Ok(())
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
