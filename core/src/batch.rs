//! Writes as the engine plans them: one or more operations checked against
//! the index and encoded as the records that carry them out.
//!
//! Every write goes through [`plan_batch`], a single change as a batch of
//! one. Operations are checked in order against the index as the earlier
//! ones leave it, so a batch may create a document and fill its chain, or
//! delete a test case an earlier operation moved. A batch that yields one
//! record is written as that record; one that yields more is framed (see
//! [`crate::start_batch`]), so a crash keeps all of it or none, and the
//! index takes all of it under one lock. A batch that breaks any check
//! writes nothing.
//!
//! Checking a batch of several operations needs the index as the earlier
//! ones leave it, without changing the real one: a scratch index holding
//! copies of only the documents the batch names, to which each
//! operation's records are applied as they are planned (through the same
//! [`KeyDir::apply`] as every other record).

use std::collections::HashSet;

use crate::keydir::{KeyDir, Missing, RecordMeta};
use crate::limits::{Invalid, Limits};
use crate::record::{Mutation, RECORD_HEADER_LEN, Salt, encode_record, finish_batch, start_batch};
use crate::value::Value;
use crate::{Columns, Id, Location, MAX_SEGMENT_ID, SegmentId};

/// A document or input an operation names: by id, or as the one that an
/// earlier operation of the same batch creates (by its index in the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    /// An existing document or input.
    Id(Id),
    /// What operation `n` of this batch creates.
    Created(usize),
}

/// Where in a chain an input goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// After every other input.
    End,
    /// Before every other input.
    Start,
    /// Just before this input.
    Before(Ref),
    /// Just after this input.
    After(Ref),
}

/// One change of a batch, borrowing its data from the caller.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// Creates a document (its id is the batch's answer for this op).
    CreateDocument {
        /// The document's blob.
        blob: &'a [u8],
        /// Its column map.
        columns: &'a Columns,
    },
    /// Replaces a document's blob.
    SetBlob {
        /// The document.
        document: Ref,
        /// The new blob.
        blob: &'a [u8],
    },
    /// Sets (adds or replaces) one column of a document.
    SetColumn {
        /// The document.
        document: Ref,
        /// The column's name.
        name: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// Deletes a document with its inputs and outputs.
    DeleteDocument {
        /// The document.
        document: Ref,
    },
    /// Adds an input to a document's chain (its id is the batch's answer
    /// for this op).
    AddInput {
        /// The document.
        document: Ref,
        /// The input's value.
        value: &'a Value,
        /// Where in the chain it goes.
        place: Place,
    },
    /// Replaces an input's value.
    UpdateInput {
        /// The input's document.
        document: Ref,
        /// The input.
        input: Ref,
        /// The new value.
        value: &'a Value,
    },
    /// Deletes an input with its output.
    DeleteInput {
        /// The input's document.
        document: Ref,
        /// The input.
        input: Ref,
    },
    /// Sets an input's output, replacing any it had.
    SetOutput {
        /// The input's document.
        document: Ref,
        /// The input.
        input: Ref,
        /// The output's value.
        value: &'a Value,
    },
    /// Replaces the output of an input that has one.
    UpdateOutput {
        /// The input's document.
        document: Ref,
        /// The input.
        input: Ref,
        /// The new value.
        value: &'a Value,
    },
    /// Deletes an input's output.
    DeleteOutput {
        /// The input's document.
        document: Ref,
        /// The input.
        input: Ref,
    },
    /// Moves an input to another place in its chain.
    MoveInput {
        /// The input's document.
        document: Ref,
        /// The input.
        input: Ref,
        /// Where it goes.
        place: Place,
    },
    /// Deletes every input of a document (with their outputs) and its
    /// chain order: with `AddInput`s after it, a whole new test set.
    ClearInputs {
        /// The document.
        document: Ref,
    },
}

impl Refused {
    /// The refusal itself, without the operation it came from.
    pub fn cause(&self) -> &Refused {
        match self {
            Refused::InOp { refused, .. } => refused.cause(),
            other => other,
        }
    }
}

impl Op<'_> {
    /// Whether the op creates something (and takes an id).
    pub fn creates(&self) -> bool {
        matches!(self, Op::CreateDocument { .. } | Op::AddInput { .. })
    }

    /// The document the op names, if it names one (all but a create).
    pub fn named_document(&self) -> Option<Ref> {
        match *self {
            Op::CreateDocument { .. } => None,
            Op::SetBlob { document, .. }
            | Op::SetColumn { document, .. }
            | Op::DeleteDocument { document }
            | Op::AddInput { document, .. }
            | Op::UpdateInput { document, .. }
            | Op::DeleteInput { document, .. }
            | Op::SetOutput { document, .. }
            | Op::UpdateOutput { document, .. }
            | Op::DeleteOutput { document, .. }
            | Op::MoveInput { document, .. }
            | Op::ClearInputs { document } => Some(document),
        }
    }
}

/// A precondition of a batch: the document's version must be this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The document.
    pub document: Id,
    /// Its version, as the writer last read it.
    pub version: u64,
}

/// Why a batch was refused. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An operation names something that does not exist.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// An operation is malformed or over a limit.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Operation `op` of a batch of several was refused (never for a batch
    /// of one, nor for a precondition or the batch's size).
    #[error("operation {op} of the batch: {refused}")]
    InOp {
        /// The operation's index in the batch, from 0.
        op: usize,
        /// Why.
        refused: Box<Refused>,
    },
    /// A precondition does not hold: the document changed since the writer
    /// read it.
    #[error("document {document} is at version {current}, not the expected {expected}")]
    Stale {
        /// The document.
        document: Id,
        /// The version the writer expected.
        expected: u64,
        /// The version it has.
        current: u64,
    },
}

/// A batch as planned: its records are in the caller's buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Planned {
    /// What each operation created, in order (`None` for an operation that
    /// creates nothing).
    pub created: Vec<Option<Id>>,
    /// Records encoded (inside the frame, if there is one): 0 when the
    /// batch changes nothing (a move to where the input already is).
    pub records: usize,
    /// The documents the batch names or creates, ascending: their versions
    /// are the batch's answer.
    pub documents: Vec<Id>,
}

/// The largest id a batch of `ops` may hand out, given the index's next
/// id: what must be reserved before it is written.
pub fn last_id_needed(next_id: Id, ops: &[Op<'_>]) -> Option<Id> {
    let creating = ops.iter().filter(|op| op.creates()).count() as u64;
    (creating > 0).then(|| next_id.saturating_add(creating - 1))
}

/// Checks `ops` against `keydir` (and the preconditions first), and appends
/// the records that carry them out to `out`, sealed with `salt`, sequence
/// numbers from the index's next one: one record as it is, several in a
/// batch frame. On an error `out` is as it was.
pub fn plan_batch(
    keydir: &KeyDir,
    ops: &[Op<'_>],
    expect: &[Expect],
    limits: &Limits,
    salt: &Salt,
    out: &mut Vec<u8>,
) -> Result<Planned, Refused> {
    let start = out.len();
    let planned = plan_into(keydir, ops, expect, limits, salt, out);
    if planned.is_err() {
        out.truncate(start);
    }
    planned
}

fn plan_into(
    keydir: &KeyDir,
    ops: &[Op<'_>],
    expect: &[Expect],
    limits: &Limits,
    salt: &Salt,
    out: &mut Vec<u8>,
) -> Result<Planned, Refused> {
    if ops.is_empty() {
        return Err(Invalid::EmptyBatch.into());
    }
    if ops.len() > limits.max_batch_ops {
        return Err(Invalid::TooManyOps { count: ops.len(), limit: limits.max_batch_ops }.into());
    }
    for e in expect {
        let current = keydir.document(e.document)?.version();
        if current != e.version {
            return Err(Refused::Stale { document: e.document, expected: e.version, current });
        }
    }
    let frame_seq = keydir.next_seq();
    let start = out.len();
    start_batch(out, frame_seq);
    let mut planner = Planner {
        base: keydir,
        scratch: (ops.len() > 1).then(|| keydir.scratch()),
        touched: HashSet::new(),
        limits,
        salt,
        out,
        frame: start,
        seq: frame_seq + 1,
        records: 0,
        scratch_buf: Vec::new(),
        created: Vec::with_capacity(ops.len()),
        creates_document: Vec::with_capacity(ops.len()),
    };
    let several = ops.len() > 1;
    for (n, op) in ops.iter().enumerate() {
        let created = planner.op(n, op).map_err(|refused| match refused {
            refused @ Refused::Invalid(Invalid::BatchTooLarge { .. }) => refused,
            refused if several => Refused::InOp { op: n, refused: Box::new(refused) },
            refused => refused,
        })?;
        planner.created.push(created);
        planner.creates_document.push(matches!(op, Op::CreateDocument { .. }));
    }
    let Planner { records, created, touched, .. } = planner;
    if records == 1 {
        // One record needs no frame.
        out.drain(start..start + RECORD_HEADER_LEN);
    } else if records == 0 {
        out.truncate(start);
    } else {
        finish_batch(out, start, salt);
    }
    let mut documents: Vec<Id> = touched.into_iter().chain(created_documents(ops, &created)).collect();
    documents.sort_unstable();
    documents.dedup();
    Ok(Planned { created, records, documents })
}

fn created_documents<'a>(ops: &'a [Op<'_>], created: &'a [Option<Id>]) -> impl Iterator<Item = Id> + 'a {
    ops.iter().zip(created).filter_map(|(op, id)| matches!(op, Op::CreateDocument { .. }).then_some(*id).flatten())
}

struct Planner<'k, 'o> {
    base: &'k KeyDir,
    /// The index as the operations so far leave it (several operations
    /// only).
    scratch: Option<KeyDir>,
    /// Documents named so far (copied into the scratch index on first use).
    touched: HashSet<Id>,
    limits: &'k Limits,
    salt: &'k Salt,
    out: &'o mut Vec<u8>,
    /// Where the frame starts in `out`.
    frame: usize,
    seq: u64,
    records: usize,
    scratch_buf: Vec<u8>,
    created: Vec<Option<Id>>,
    /// Whether each operation so far creates a document (else an input).
    creates_document: Vec<bool>,
}

/// A fake segment for the records the scratch index applies: locations
/// there only need to be distinct.
const SCRATCH_SEGMENT: u32 = MAX_SEGMENT_ID;

impl Planner<'_, '_> {
    fn view(&self) -> &KeyDir {
        self.scratch.as_ref().unwrap_or(self.base)
    }

    /// The id `r` names, for operation `n`: `what` is "problem" or "test
    /// case".
    fn resolve(&self, n: usize, r: Ref, what: &'static str) -> Result<Id, Invalid> {
        match r {
            Ref::Id(id) => Ok(id),
            Ref::Created(to) => match self.created.get(to) {
                Some(Some(id)) if to < n && self.creates_document[to] == (what == "problem") => Ok(*id),
                _ => Err(Invalid::BadReference { op: n, to, what }),
            },
        }
    }

    fn document(&mut self, n: usize, r: Ref) -> Result<Id, Refused> {
        let id = self.resolve(n, r, "problem")?;
        if self.touched.insert(id)
            && let Some(scratch) = &mut self.scratch
            && !matches!(r, Ref::Created(_))
        {
            scratch.copy_document(self.base, id);
        }
        Ok(id)
    }

    fn input(&self, n: usize, document: Id, r: Ref) -> Result<Id, Refused> {
        let id = self.resolve(n, r, "test case")?;
        self.view().input(document, id)?;
        Ok(id)
    }

    /// Plans operation `n`; returns what it creates.
    fn op(&mut self, n: usize, op: &Op<'_>) -> Result<Option<Id>, Refused> {
        let document = match op.named_document() {
            Some(r) => Some(self.document(n, r)?),
            None => None,
        };
        let doc = || document.expect("every op but a create names a document");
        let limits = self.limits;
        match *op {
            Op::CreateDocument { blob, columns } => {
                limits.check_blob(blob)?;
                limits.check_columns(columns)?;
                let id = self.view().next_id();
                self.emit(id, &Mutation::CreateDocument { columns, blob })?;
                return Ok(Some(id));
            }
            Op::SetBlob { blob, .. } => {
                limits.check_blob(blob)?;
                self.view().document(doc())?;
                self.emit(doc(), &Mutation::SetBlob { blob })?;
            }
            Op::SetColumn { name, value, .. } => {
                limits.check_column(name, value)?;
                let mut columns = self.view().document(doc())?.columns();
                columns.insert(name.to_owned(), value.to_owned());
                limits.check_columns(&columns)?;
                self.emit(doc(), &Mutation::SetColumns { columns: &columns })?;
            }
            Op::DeleteDocument { .. } => {
                self.view().document(doc())?;
                self.emit(doc(), &Mutation::DeleteDocument)?;
            }
            Op::AddInput { value, place, .. } => {
                limits.check_value(value)?;
                let document = doc();
                self.view().document(document)?;
                let id = self.view().next_id();
                // The order with the new input in place, if it is not last.
                let order = match place {
                    Place::End => None,
                    place => {
                        let mut order = self.chain(document);
                        let at = self.place(n, document, &order, place, None)?;
                        order.insert(at, id);
                        Some(order)
                    }
                };
                self.emit(id, &Mutation::PutInput { document, value })?;
                if let Some(order) = order {
                    self.set_chain(document, &order)?;
                }
                return Ok(Some(id));
            }
            Op::UpdateInput { input, value, .. } => {
                limits.check_value(value)?;
                let input = self.input(n, doc(), input)?;
                self.emit(input, &Mutation::PutInput { document: doc(), value })?;
            }
            Op::DeleteInput { input, .. } => {
                let input = self.input(n, doc(), input)?;
                self.emit(input, &Mutation::DeleteInput { document: doc() })?;
            }
            Op::SetOutput { input, value, .. } => {
                limits.check_value(value)?;
                let input = self.input(n, doc(), input)?;
                self.emit(input, &Mutation::PutOutput { document: doc(), value })?;
            }
            Op::UpdateOutput { input, value, .. } => {
                limits.check_value(value)?;
                let input = self.resolve(n, input, "test case")?;
                self.view().output(doc(), input)?;
                self.emit(input, &Mutation::PutOutput { document: doc(), value })?;
            }
            Op::DeleteOutput { input, .. } => {
                let input = self.resolve(n, input, "test case")?;
                self.view().output(doc(), input)?;
                self.emit(input, &Mutation::DeleteOutput { document: doc() })?;
            }
            Op::MoveInput { input, place, .. } => {
                let document = doc();
                let input = self.input(n, document, input)?;
                let mut order = self.chain(document);
                let was = order.iter().position(|&id| id == input).expect("the input is in its chain");
                order.remove(was);
                let at = self.place(n, document, &order, place, Some(input))?;
                order.insert(at, input);
                if at != was {
                    self.set_chain(document, &order)?;
                }
            }
            Op::ClearInputs { .. } => {
                let document = doc();
                let entry = self.view().document(document)?;
                let inputs: Vec<Id> = entry.inputs.iter().map(|input| input.id).collect();
                let ordered = entry.chain_order().is_some();
                for input in inputs {
                    self.emit(input, &Mutation::DeleteInput { document })?;
                }
                if ordered {
                    self.emit(document, &Mutation::SetChain { inputs: &[] })?;
                }
            }
        }
        Ok(None)
    }

    /// The document's chain, as ids.
    fn chain(&self, document: Id) -> Vec<Id> {
        self.view().document(document).map(|doc| doc.chain().map(|input| input.id).collect()).unwrap_or_default()
    }

    /// Where in `order` an input goes for `place`: a new one, or `moving`
    /// (which `order` lacks).
    fn place(&self, n: usize, document: Id, order: &[Id], place: Place, moving: Option<Id>) -> Result<usize, Refused> {
        let anchor = |r: Ref| -> Result<usize, Refused> {
            let id = self.resolve(n, r, "test case")?;
            if Some(id) == moving {
                return Err(Invalid::PlacedBesideItself(id).into());
            }
            order.iter().position(|&o| o == id).ok_or(Refused::Missing(Missing::Input { document, input: id }))
        };
        Ok(match place {
            Place::End => order.len(),
            Place::Start => 0,
            Place::Before(r) => anchor(r)?,
            Place::After(r) => anchor(r)? + 1,
        })
    }

    /// Records a chain order: none at all when it is id order.
    fn set_chain(&mut self, document: Id, order: &[Id]) -> Result<(), Refused> {
        let by_id = order.windows(2).all(|w| w[0] < w[1]);
        let ordered = self.view().document(document)?.chain_order().is_some();
        if by_id {
            if ordered {
                self.emit(document, &Mutation::SetChain { inputs: &[] })?;
            }
            return Ok(());
        }
        let limit = self.limits.max_chain_inputs;
        if order.len() > limit {
            return Err(Invalid::ChainTooLong { count: order.len(), limit }.into());
        }
        self.emit(document, &Mutation::SetChain { inputs: order })
    }

    /// Encodes one record of the batch and applies it to the scratch index.
    fn emit(&mut self, id: Id, mutation: &Mutation<'_>) -> Result<(), Refused> {
        let at = self.out.len();
        let len = mutation.encoded_len();
        let limit = self.limits.max_batch_bytes;
        if at - self.frame + len > limit.saturating_add(RECORD_HEADER_LEN) {
            return Err(Invalid::BatchTooLarge { limit }.into());
        }
        encode_record(self.out, self.salt, self.seq, id, mutation);
        if let Some(scratch) = &mut self.scratch {
            let segment = SegmentId::new(SCRATCH_SEGMENT).expect("a valid segment id");
            let location = Location::new(segment, (at - self.frame) as u64, len as u32)
                .expect("a batch is far below the largest offset");
            let effect = mutation.effect(&mut self.scratch_buf);
            let _ = scratch.apply(RecordMeta { seq: self.seq, id, location }, effect);
        }
        self.seq += 1;
        self.records += 1;
        Ok(())
    }
}
