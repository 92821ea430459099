//! Whole problems and batches on the wire: requests turned into the
//! engine's batch operations, and whole-problem reads into responses.
//!
//! A request's data is owned by the request ([`OwnedOp`]); the engine's
//! [`Op`] borrows it, so a batch is checked and written without copying
//! any value again.

use std::collections::BTreeMap;

use stratum_io::{Columns, DocumentSnapshot, Id, InputView, Limits, Op, Place, Ref, Value};
use tonic::Status;

use crate::convert::{id, value_from_wire, value_to_wire};
use crate::proto::{self, batch_op};

/// One write operation with the data it carries.
#[derive(Debug)]
pub enum OwnedOp {
    Create { html: String, columns: Columns },
    SetHtml { problem: Ref, html: String },
    SetColumn { problem: Ref, name: String, value: String },
    Delete { problem: Ref },
    AddTestCase { problem: Ref, value: Value, place: Place },
    UpdateTestCase { problem: Ref, test_case: Ref, value: Value },
    DeleteTestCase { problem: Ref, test_case: Ref },
    SetOutput { problem: Ref, test_case: Ref, value: Value },
    UpdateOutput { problem: Ref, test_case: Ref, value: Value },
    DeleteOutput { problem: Ref, test_case: Ref },
    Move { problem: Ref, test_case: Ref, place: Place },
}

impl OwnedOp {
    /// The engine operation, borrowing this one's data.
    pub fn op(&self) -> Op<'_> {
        match self {
            OwnedOp::Create { html, columns } => Op::CreateDocument { blob: html.as_bytes(), columns },
            OwnedOp::SetHtml { problem, html } => Op::SetBlob { document: *problem, blob: html.as_bytes() },
            OwnedOp::SetColumn { problem, name, value } => Op::SetColumn { document: *problem, name, value },
            OwnedOp::Delete { problem } => Op::DeleteDocument { document: *problem },
            OwnedOp::AddTestCase { problem, value, place } => Op::AddInput { document: *problem, value, place: *place },
            OwnedOp::UpdateTestCase { problem, test_case, value } => {
                Op::UpdateInput { document: *problem, input: *test_case, value }
            }
            OwnedOp::DeleteTestCase { problem, test_case } => Op::DeleteInput { document: *problem, input: *test_case },
            OwnedOp::SetOutput { problem, test_case, value } => {
                Op::SetOutput { document: *problem, input: *test_case, value }
            }
            OwnedOp::UpdateOutput { problem, test_case, value } => {
                Op::UpdateOutput { document: *problem, input: *test_case, value }
            }
            OwnedOp::DeleteOutput { problem, test_case } => Op::DeleteOutput { document: *problem, input: *test_case },
            OwnedOp::Move { problem, test_case, place } => {
                Op::MoveInput { document: *problem, input: *test_case, place: *place }
            }
        }
    }
}

/// The engine's place for a wire position: unset is the end. `before_op`
/// and `after_op` name an operation of the same batch, so they are only
/// for a request `in_batch`.
pub fn place(position: Option<proto::Position>, in_batch: bool) -> Result<Place, Status> {
    use proto::position::At;
    let created = |field: &str, op: u32| {
        if in_batch {
            Ok(Ref::Created(op as usize))
        } else {
            Err(Status::invalid_argument(format!(
                "position.{field} names an operation of the same batch: it is for Batch only"
            )))
        }
    };
    Ok(match position.and_then(|p| p.at) {
        None | Some(At::End(_)) => Place::End,
        Some(At::Start(_)) => Place::Start,
        Some(At::Before(test_case)) => Place::Before(Ref::Id(id("position.before", test_case)?)),
        Some(At::After(test_case)) => Place::After(Ref::Id(id("position.after", test_case)?)),
        Some(At::BeforeOp(op)) => Place::Before(created("before_op", op)?),
        Some(At::AfterOp(op)) => Place::After(created("after_op", op)?),
    })
}

/// How a batch operation names its problem and test case: by id, or by
/// the index of the earlier operation that created it.
#[derive(Clone, Copy, Debug)]
pub struct Naming {
    pub problem_from_op: Option<u32>,
    pub test_case_from_op: Option<u32>,
    /// The request is an operation of a batch (it may name others).
    pub in_batch: bool,
}

impl Naming {
    /// Ids only (a single request).
    pub const IDS: Naming = Naming { problem_from_op: None, test_case_from_op: None, in_batch: false };

    fn problem(&self, problem_id: u64) -> Result<Ref, Status> {
        named("problem", self.problem_from_op, problem_id)
    }

    fn test_case(&self, test_case_id: u64) -> Result<Ref, Status> {
        named("test_case", self.test_case_from_op, test_case_id)
    }
}

fn named(what: &str, from_op: Option<u32>, id_value: u64) -> Result<Ref, Status> {
    match from_op {
        None => Ok(Ref::Id(id(&format!("{what}_id"), id_value)?)),
        Some(_) if id_value != 0 => Err(Status::invalid_argument(format!(
            "{what}_id and {what}_from_op are both set: name the {} one way",
            what.replace('_', " ")
        ))),
        Some(op) => Ok(Ref::Created(op as usize)),
    }
}

/// The engine operation of one request of a batch, refusing an
/// `expected_version` inside it (a batch's preconditions are its own).
pub fn batch_op(op: proto::BatchOp) -> Result<OwnedOp, Status> {
    let naming =
        Naming { problem_from_op: op.problem_from_op, test_case_from_op: op.test_case_from_op, in_batch: true };
    let (op, expected) =
        from_request(op.op.ok_or_else(|| Status::invalid_argument("a batch op has no operation set"))?, naming)?;
    if expected.is_some() {
        return Err(Status::invalid_argument(
            "expected_version inside a batch op is not allowed: put preconditions in BatchRequest.expected_versions",
        ));
    }
    Ok(op)
}

/// The engine operation of a single write request and its expected
/// version, if it has one.
pub fn from_request(op: batch_op::Op, naming: Naming) -> Result<(OwnedOp, Option<u64>), Status> {
    use batch_op::Op as W;
    Ok(match op {
        W::CreateProblem(r) => (OwnedOp::Create { html: r.html, columns: r.columns }, None),
        W::UpdateProblemHtml(r) => {
            (OwnedOp::SetHtml { problem: naming.problem(r.problem_id)?, html: r.html }, r.expected_version)
        }
        W::UpdateProblemColumn(r) => {
            let problem = naming.problem(r.problem_id)?;
            (OwnedOp::SetColumn { problem, name: r.name, value: r.value }, r.expected_version)
        }
        W::DeleteProblem(r) => (OwnedOp::Delete { problem: naming.problem(r.problem_id)? }, r.expected_version),
        W::AddTestCase(r) => {
            let problem = naming.problem(r.problem_id)?;
            let op = OwnedOp::AddTestCase {
                problem,
                value: value_from_wire(r.value)?,
                place: place(r.position, naming.in_batch)?,
            };
            (op, r.expected_version)
        }
        W::UpdateTestCase(r) => {
            let (problem, test_case) = (naming.problem(r.problem_id)?, naming.test_case(r.test_case_id)?);
            (OwnedOp::UpdateTestCase { problem, test_case, value: value_from_wire(r.value)? }, r.expected_version)
        }
        W::DeleteTestCase(r) => {
            let (problem, test_case) = (naming.problem(r.problem_id)?, naming.test_case(r.test_case_id)?);
            (OwnedOp::DeleteTestCase { problem, test_case }, r.expected_version)
        }
        W::SetExpectedOutput(r) => {
            let (problem, test_case) = (naming.problem(r.problem_id)?, naming.test_case(r.test_case_id)?);
            (OwnedOp::SetOutput { problem, test_case, value: value_from_wire(r.value)? }, r.expected_version)
        }
        W::UpdateExpectedOutput(r) => {
            let (problem, test_case) = (naming.problem(r.problem_id)?, naming.test_case(r.test_case_id)?);
            (OwnedOp::UpdateOutput { problem, test_case, value: value_from_wire(r.value)? }, r.expected_version)
        }
        W::DeleteExpectedOutput(r) => {
            let (problem, test_case) = (naming.problem(r.problem_id)?, naming.test_case(r.test_case_id)?);
            (OwnedOp::DeleteOutput { problem, test_case }, r.expected_version)
        }
        W::MoveTestCase(r) => {
            let (problem, test_case) = (naming.problem(r.problem_id)?, naming.test_case(r.test_case_id)?);
            if r.position.as_ref().and_then(|p| p.at).is_none() {
                return Err(Status::invalid_argument("position is required: set start, end, before or after"));
            }
            (OwnedOp::Move { problem, test_case, place: place(r.position, naming.in_batch)? }, r.expected_version)
        }
    })
}

/// A chain of new test cases, checked: every input has a value.
pub fn new_test_cases(cases: Vec<proto::NewTestCase>) -> Result<Vec<(Value, Option<Value>)>, Status> {
    cases
        .into_iter()
        .enumerate()
        .map(|(at, case)| {
            let input = value_from_wire(case.input)
                .map_err(|e| Status::invalid_argument(format!("test case {at}: input: {}", e.message())))?;
            Ok((input, case.expected_output.map(|output| value_from_wire(Some(output))).transpose()?))
        })
        .collect()
}

/// A problem (or a new chain) received as a stream of messages, kept
/// within the batch limit as it grows, so that a client cannot make the
/// server hold more than a batch may write.
#[derive(Debug, Default)]
pub struct Upload {
    pub html: String,
    pub columns: Columns,
    pub test_cases: Vec<(Value, Option<Value>)>,
    bytes: usize,
    /// The message marked last has arrived.
    finished: bool,
}

impl Upload {
    /// Notes a message, marked `last` or not: none may follow the last.
    pub fn mark_last(&mut self, last: bool) -> Result<(), Status> {
        if self.finished {
            return Err(Status::invalid_argument("a message after the one marked last"));
        }
        self.finished = last;
        Ok(())
    }

    /// Refuses a stream that ended without a message marked last: its
    /// client gave up (a cancelled call may still end the stream cleanly).
    pub fn check_finished(&self) -> Result<(), Status> {
        if self.finished {
            Ok(())
        } else {
            Err(Status::cancelled(
                "the stream ended without a message marked last (a client that gave up or broke off): \
                 nothing was written",
            ))
        }
    }

    /// Adds one message's part; refuses a column named twice and a total
    /// over the batch limit.
    pub fn add(
        &mut self,
        html: &str,
        columns: BTreeMap<String, String>,
        cases: Vec<proto::NewTestCase>,
        limits: &Limits,
    ) -> Result<(), Status> {
        self.bytes += html.len();
        self.html.push_str(html);
        for (name, value) in columns {
            self.bytes += name.len() + value.len();
            if self.columns.contains_key(&name) {
                return Err(Status::invalid_argument(format!("column {name:?} is given twice in the stream")));
            }
            self.columns.insert(name, value);
        }
        let earlier = self.test_cases.len();
        let cases = new_test_cases(cases)
            .map_err(|e| Status::invalid_argument(format!("after {earlier} earlier test cases: {}", e.message())))?;
        for case in cases {
            self.bytes += case.0.encoded_len() + case.1.as_ref().map_or(0, Value::encoded_len);
            self.test_cases.push(case);
        }
        if self.bytes > limits.max_batch_bytes {
            return Err(Status::invalid_argument(format!(
                "the stream is over the batch limit of {} bytes",
                limits.max_batch_bytes
            )));
        }
        Ok(())
    }
}

/// The wire form of one test case of a whole-problem read.
pub fn problem_test_case(input: InputView) -> proto::ProblemTestCase {
    proto::ProblemTestCase {
        test_case_id: input.id,
        input: Some(value_to_wire(input.value)),
        expected_output: input.output.map(value_to_wire),
    }
}

/// The messages of a streamed whole-problem read: the first with the
/// html and columns, each with as many test cases as fit in `page_bytes`
/// (at least one). Calls `send` for each; stops at the first error.
pub fn stream_problem(
    snapshot: &DocumentSnapshot,
    page_bytes: usize,
    mut send: impl FnMut(Result<proto::GetProblemResponse, Status>) -> bool,
) {
    let head = || -> Result<proto::GetProblemResponse, Status> {
        let html = crate::convert::html(snapshot.id, snapshot.blob().map_err(crate::convert::status)?)?;
        Ok(proto::GetProblemResponse {
            problem_id: snapshot.id,
            version: snapshot.version,
            html,
            columns: snapshot.columns.clone(),
            test_cases: Vec::new(),
        })
    };
    let mut message = match head() {
        Ok(message) => message,
        Err(status) => {
            send(Err(status));
            return;
        }
    };
    let mut bytes = message.html.len();
    for at in 0..snapshot.len() {
        let input = match snapshot.input(at) {
            Ok(input) => input,
            Err(e) => {
                send(Err(crate::convert::status(e)));
                return;
            }
        };
        let size = input.value.encoded_len() + input.output.as_ref().map_or(0, Value::encoded_len);
        if bytes + size > page_bytes && !message.test_cases.is_empty() {
            let next =
                proto::GetProblemResponse { problem_id: snapshot.id, version: snapshot.version, ..Default::default() };
            if !send(Ok(std::mem::replace(&mut message, next))) {
                return;
            }
            bytes = 0;
        }
        bytes += size;
        message.test_cases.push(problem_test_case(input));
    }
    send(Ok(message));
}

/// Test case ids for a response: what the ops adding them created.
pub fn created_ids(created: &[Option<Id>]) -> Vec<Id> {
    created.iter().flatten().copied().collect()
}
