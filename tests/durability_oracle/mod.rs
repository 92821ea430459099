//! The oracle of the black-box durability tests (`server_kill9.rs`,
//! `server_full_disk.rs`): writers that each own their problems and remember
//! what every write of theirs was answered, readers that check that what
//! they read is whole, and the check of a whole store against the answers.
//!
//! The rule checked is the README's (Errors): a write answered OK is there,
//! or a later write's value is; a write answered `UNKNOWN`, or cut off by a
//! SIGKILL before its answer, may or may not be there; a write answered with
//! any other error changed nothing, now and after any restart. Ids are never
//! reused, and a chain is in id order.
//!
//! Every value written is drawn from a tag, a number unique to its write,
//! and carries it: a value read back names the write it came from, and a
//! value that is not exactly what its tag draws was never written (torn,
//! mixed up or made up). So the model keeps tags, not values. A tag is the
//! writer's number above bit 40 and the writer's count of tags below.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stratum::proto::{self, Value};
use tonic::{Code, Status};

use crate::server_support::{Canon, Client, Columns, ProblemDump, canon, canon_field, int, int_list, string};

/// The number of one write, drawn into every value it writes.
pub type Tag = u64;

/// The largest value or blob drawn: 64 KiB.
pub const MAX_DRAWN_BYTES: usize = 64 << 10;

/// A value over the limit the servers of these tests are started with
/// (`--max-value-bytes`, see [`MAX_VALUE_BYTES_ARG`]): always refused.
const OVERSIZE_BYTES: usize = 120_000;

/// The `--max-value-bytes` these tests start the server with: above every
/// drawn value, below [`OVERSIZE_BYTES`].
pub const MAX_VALUE_BYTES_ARG: &str = "100000";

/// The server flags both durability tests run with: `--sync always`,
/// segments of `segment_bytes`, an eager background compactor (every
/// second, whatever the garbage) and the value limit above.
pub fn server_args(segment_bytes: &'static str) -> Vec<&'static str> {
    vec![
        "--sync",
        "always",
        "--segment-bytes",
        segment_bytes,
        "--compact-interval-secs",
        "1",
        "--compact-min-garbage-bytes",
        "1",
        "--compact-min-garbage-ratio",
        "0",
        "--max-value-bytes",
        MAX_VALUE_BYTES_ARG,
    ]
}

const TAG_WRITER_SHIFT: u32 = 40;

// ----- a seeded generator ---------------------------------------------------

/// splitmix64's finaliser: a well-mixed word from any word.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small deterministic generator (xorshift64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ----- values drawn from tags -------------------------------------------------

/// A size from 4 bytes to 64 KiB, spread evenly over the powers of two.
fn drawn_len(tag: Tag) -> usize {
    let h = mix(tag ^ 0x5123);
    let low = 1usize << (2 + h % 15);
    (low + (h >> 8) as usize % low).min(MAX_DRAWN_BYTES)
}

/// `len` lowercase letters drawn from `tag`.
fn filler(tag: Tag, len: usize) -> String {
    let mut rng = Rng::new(tag ^ 0xF111);
    let mut text = String::with_capacity(len);
    while text.len() < len {
        let mut word = rng.next();
        for _ in 0..8.min(len - text.len()) {
            text.push(char::from(b'a' + (word % 26) as u8));
            word >>= 8;
        }
    }
    text
}

/// The html blob write `tag` stores.
pub fn draw_html(tag: Tag) -> String {
    let head = format!("<html><!--t{tag}--><body><p>");
    let tail = "</p></body></html>";
    let body = drawn_len(tag).saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", filler(tag, body))
}

/// The node value (test case or expected output) write `tag` stores: an
/// int (a few bytes), a string or a list of ints (up to 64 KiB).
pub fn draw_value(tag: Tag) -> Value {
    let len = drawn_len(tag);
    match mix(tag ^ 0xC1D) % 4 {
        0 => int(tag as i64),
        1 | 2 => string(&format!("t{tag}:{}", filler(tag, len))),
        _ => {
            let mut rng = Rng::new(tag ^ 0x1157);
            let mut values = vec![tag as i64];
            values.extend((0..len / 8).map(|_| rng.below(1 << 20) as i64));
            int_list(values)
        }
    }
}

/// A value over the server's limit, carrying `tag`.
pub fn draw_oversize(tag: Tag) -> Value {
    string(&format!("t{tag}:{}", filler(tag, OVERSIZE_BYTES)))
}

/// The columns of the problem that create `tag` makes: they say whose it
/// is, so a problem whose create was never answered can be told apart.
pub fn draw_columns(tag: Tag) -> Columns {
    let mut columns = Columns::new();
    columns.insert("writer".into(), (tag >> TAG_WRITER_SHIFT).to_string());
    columns.insert("tag".into(), tag.to_string());
    columns
}

fn claimed_html_tag(html: &str) -> Option<Tag> {
    html.strip_prefix("<html><!--t")?.split_once("-->")?.0.parse().ok()
}

fn claimed_value_tag(value: &Canon) -> Option<Tag> {
    match value {
        Canon::Int(v) => Some(*v as u64),
        Canon::Str(s) => s.strip_prefix('t')?.split_once(':')?.0.parse().ok(),
        Canon::IntList(values) => values.first().map(|v| *v as u64),
        _ => None,
    }
}

fn describe(value: &Canon) -> String {
    match value {
        Canon::Str(s) => format!("a string of {} bytes starting {:?}", s.len(), s.chars().take(24).collect::<String>()),
        Canon::IntList(l) => format!("a list of {} ints starting {:?}", l.len(), &l[..l.len().min(3)]),
        other => format!("{other:?}"),
    }
}

/// The write an html blob read back came from: an error if it is a refused
/// write's, or not exactly what any write drew.
pub fn identify_html(html: &str, refused: &BTreeSet<Tag>) -> Result<Tag, String> {
    let start: String = html.chars().take(24).collect();
    let Some(tag) = claimed_html_tag(html) else {
        return Err(format!("an html blob no write drew ({} bytes starting {start:?})", html.len()));
    };
    if refused.contains(&tag) {
        return Err(format!("the html of write {tag}, which was answered with an error, is visible"));
    }
    if draw_html(tag) != html {
        return Err(format!("the html of write {tag} is not what it wrote ({} bytes starting {start:?})", html.len()));
    }
    Ok(tag)
}

/// The write a node value read back came from (see [`identify_html`]).
pub fn identify_value(value: &Canon, refused: &BTreeSet<Tag>) -> Result<Tag, String> {
    let Some(tag) = claimed_value_tag(value) else {
        return Err(format!("a value no write drew: {}", describe(value)));
    };
    if refused.contains(&tag) {
        return Err(format!("the value of write {tag}, which was answered with an error, is visible"));
    }
    if canon(&draw_value(tag)) != *value {
        return Err(format!("the value of write {tag} is not what it wrote: {}", describe(value)));
    }
    Ok(tag)
}

// ----- the model ------------------------------------------------------------------

/// The states one key may be found in: the one its acknowledged writes
/// left, or one that a write in doubt (unanswered, or answered `UNKNOWN`)
/// leaves.
#[derive(Clone, Debug)]
pub struct Possible<T> {
    pub acked: T,
    pub in_doubt: Vec<T>,
}

impl<T: PartialEq + Clone + Debug> Possible<T> {
    fn new(acked: T) -> Self {
        Possible { acked, in_doubt: Vec::new() }
    }

    fn allows(&self, state: &T) -> bool {
        self.acked == *state || self.in_doubt.contains(state)
    }

    /// Checks `found` and makes it the acknowledged state: after a restart,
    /// whatever a write in doubt did is decided.
    fn settle(&mut self, found: T, what: &str, check: &mut Check) {
        if !self.allows(&found) {
            check.violations.push(format!(
                "{what}: found {found:?}, but it was acknowledged as {:?} and in doubt {:?}",
                self.acked, self.in_doubt
            ));
        }
        check.count_settled(self.in_doubt.len(), found != self.acked);
        self.acked = found;
        self.in_doubt.clear();
    }
}

#[derive(Clone, Debug)]
pub struct ProblemModel {
    /// `false` is in doubt while a delete is.
    pub live: Possible<bool>,
    pub html: Possible<Tag>,
    pub columns: Columns,
    pub cases: BTreeMap<u64, CaseModel>,
    /// The values of AddTestCase calls in doubt: their ids are unknown.
    pub adds: Vec<Tag>,
}

impl ProblemModel {
    fn new(tag: Tag) -> Self {
        ProblemModel {
            live: Possible::new(true),
            html: Possible::new(tag),
            columns: draw_columns(tag),
            cases: BTreeMap::new(),
            adds: Vec::new(),
        }
    }

    fn settled(&self) -> bool {
        self.live.in_doubt.is_empty() && self.html.in_doubt.is_empty() && self.adds.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct CaseModel {
    pub live: Possible<bool>,
    pub value: Possible<Tag>,
    /// `None`: no expected output.
    pub output: Possible<Option<Tag>>,
}

impl CaseModel {
    fn new(tag: Tag) -> Self {
        CaseModel { live: Possible::new(true), value: Possible::new(tag), output: Possible::new(None) }
    }

    fn settled(&self) -> bool {
        self.live.in_doubt.is_empty() && self.value.in_doubt.is_empty() && self.output.in_doubt.is_empty()
    }
}

/// What one writer's writes left in the store, as far as their answers say.
#[derive(Clone, Debug, Default)]
pub struct WriterModel {
    pub writer: u64,
    pub problems: BTreeMap<u64, ProblemModel>,
    /// The html tags of CreateProblem calls in doubt: their ids are unknown.
    pub creates: Vec<Tag>,
    /// Problems whose delete was acknowledged.
    pub deleted_problems: BTreeSet<u64>,
    /// Test cases whose delete was acknowledged, with their problem.
    pub deleted_cases: BTreeMap<u64, u64>,
    /// Tags of writes answered with an error other than `UNKNOWN`.
    pub refused: BTreeSet<Tag>,
}

impl WriterModel {
    /// The highest id this writer knows of, deleted ones included.
    pub fn max_id(&self) -> u64 {
        let cases = self.problems.values().flat_map(|p| p.cases.keys());
        let ids = self.problems.keys().chain(cases).chain(&self.deleted_problems).chain(self.deleted_cases.keys());
        ids.copied().max().unwrap_or(0)
    }
}

// ----- writers --------------------------------------------------------------------

/// One write a writer sends.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Create { tag: Tag },
    UpdateHtml { problem: u64, tag: Tag },
    Add { problem: u64, tag: Tag },
    AddOversize { problem: u64, tag: Tag },
    UpdateCase { problem: u64, case: u64, tag: Tag },
    SetOutput { problem: u64, case: u64, tag: Tag },
    UpdateOutput { problem: u64, case: u64, tag: Tag },
    DeleteCase { problem: u64, case: u64 },
    DeleteOutput { problem: u64, case: u64 },
    DeleteProblem { problem: u64 },
}

impl Op {
    fn tag(&self) -> Option<Tag> {
        match *self {
            Op::Create { tag }
            | Op::UpdateHtml { tag, .. }
            | Op::Add { tag, .. }
            | Op::AddOversize { tag, .. }
            | Op::UpdateCase { tag, .. }
            | Op::SetOutput { tag, .. }
            | Op::UpdateOutput { tag, .. } => Some(tag),
            Op::DeleteCase { .. } | Op::DeleteOutput { .. } | Op::DeleteProblem { .. } => None,
        }
    }

    /// Sends the write; its answer is the new id (0 for writes that make
    /// none).
    async fn send(&self, c: &mut Client) -> Result<u64, Status> {
        match *self {
            Op::Create { tag } => {
                let request = proto::CreateProblemRequest { html: draw_html(tag), columns: draw_columns(tag) };
                c.create_problem(request).await.map(|r| r.into_inner().problem_id)
            }
            Op::UpdateHtml { problem, tag } => {
                let request =
                    proto::UpdateProblemHtmlRequest { problem_id: problem, html: draw_html(tag), ..Default::default() };
                c.update_problem_html(request).await.map(|_| 0)
            }
            Op::Add { problem, tag } => {
                let request = proto::AddTestCaseRequest {
                    problem_id: problem,
                    value: Some(draw_value(tag)),
                    ..Default::default()
                };
                c.add_test_case(request).await.map(|r| r.into_inner().test_case_id)
            }
            Op::AddOversize { problem, tag } => {
                let request = proto::AddTestCaseRequest {
                    problem_id: problem,
                    value: Some(draw_oversize(tag)),
                    ..Default::default()
                };
                c.add_test_case(request).await.map(|r| r.into_inner().test_case_id)
            }
            Op::UpdateCase { problem, case, tag } => {
                let value = Some(draw_value(tag));
                let request = proto::UpdateTestCaseRequest {
                    problem_id: problem,
                    test_case_id: case,
                    value,
                    ..Default::default()
                };
                c.update_test_case(request).await.map(|_| 0)
            }
            Op::SetOutput { problem, case, tag } => {
                let value = Some(draw_value(tag));
                let request = proto::SetExpectedOutputRequest {
                    problem_id: problem,
                    test_case_id: case,
                    value,
                    ..Default::default()
                };
                c.set_expected_output(request).await.map(|_| 0)
            }
            Op::UpdateOutput { problem, case, tag } => {
                let value = Some(draw_value(tag));
                let request = proto::UpdateExpectedOutputRequest {
                    problem_id: problem,
                    test_case_id: case,
                    value,
                    ..Default::default()
                };
                c.update_expected_output(request).await.map(|_| 0)
            }
            Op::DeleteCase { problem, case } => {
                let request = proto::TestCaseRef { problem_id: problem, test_case_id: case, ..Default::default() };
                c.delete_test_case(request).await.map(|_| 0)
            }
            Op::DeleteOutput { problem, case } => {
                let request = proto::TestCaseRef { problem_id: problem, test_case_id: case, ..Default::default() };
                c.delete_expected_output(request).await.map(|_| 0)
            }
            Op::DeleteProblem { problem } => {
                c.delete_problem(proto::ProblemRef { problem_id: problem, ..Default::default() }).await.map(|_| 0)
            }
        }
    }
}

/// How big a writer lets its share of the store grow.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Problems it keeps live (it creates up to this many, then deletes).
    pub problems: usize,
    /// Test cases per problem (it adds up to this many, then deletes).
    pub cases: usize,
}

/// What a run of writers shares: when to stop, what ids must be above, and
/// which errors are no surprise.
#[derive(Debug)]
pub struct Run {
    /// Set before the server is killed: an error seen after it is a write
    /// cut off, not an answer.
    pub stopped: AtomicBool,
    /// Every id handed out in this run must be above this (every id seen
    /// before the server started).
    pub ids_above: u64,
    /// Errors a write may be answered with in this run besides the ones its
    /// writer asks for (a full disk's INTERNAL, say).
    pub tolerated: Vec<Code>,
    /// Writes per writer at most; `None` until stopped or surprised.
    pub ops: Option<usize>,
}

impl Run {
    pub fn new(ids_above: u64, tolerated: Vec<Code>, ops: Option<usize>) -> Arc<Run> {
        Arc::new(Run { stopped: AtomicBool::new(false), ids_above, tolerated, ops })
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// What became of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    Refused,
    InDoubt,
}

/// A client that writes to problems of its own, so that what it was
/// answered says exactly what the store holds of them (no other writer
/// touches them).
#[derive(Clone, Debug)]
pub struct Writer {
    pub model: WriterModel,
    shape: Shape,
    rng: Rng,
    tags: u64,
    /// The highest id handed to this writer: the next must be above.
    last_id: u64,
    /// Answers by kind: "ok", "refused as asked", "cut off", or an error
    /// code.
    pub answers: BTreeMap<String, u64>,
    /// The writes of the last run.
    pub ops: u64,
    /// Answers that break a rule; any fails the test.
    pub surprises: Vec<String>,
}

impl Writer {
    pub fn new(writer: u64, seed: u64, shape: Shape) -> Writer {
        Writer {
            model: WriterModel { writer, ..WriterModel::default() },
            shape,
            rng: Rng::new(seed ^ mix(writer + 1)),
            tags: 0,
            last_id: 0,
            answers: BTreeMap::new(),
            ops: 0,
            surprises: Vec::new(),
        }
    }

    /// Writes until the run stops, its writes are done, or an answer is not
    /// the one the model predicts (a write cut off by a kill, a full disk):
    /// the model then has something in doubt or refused, and the writer
    /// leaves it for the check after the restart.
    pub async fn run(mut self, mut c: Client, run: Arc<Run>) -> Writer {
        self.ops = 0;
        while !run.is_stopped() && run.ops.is_none_or(|ops| self.ops < ops as u64) {
            self.ops += 1;
            let op = self.choose();
            let expected = self.expected(&op);
            let answer = op.send(&mut c).await;
            let (outcome, as_predicted) = self.judge(&op, expected, &answer, &run);
            self.record(op, outcome, answer.unwrap_or(0), expected.is_some(), &run);
            if !as_predicted {
                break;
            }
        }
        self
    }

    fn fresh_tag(&mut self) -> Tag {
        self.tags += 1;
        (self.model.writer << TAG_WRITER_SHIFT) | self.tags
    }

    /// The next write: mostly to live problems and test cases, some that
    /// the server must refuse (to deleted ones, an oversize value, an
    /// update of an output that is not there). Only keys whose state is
    /// not in doubt are chosen, so the model predicts every answer.
    fn choose(&mut self) -> Op {
        let tag = self.fresh_tag();
        let m = &self.model;
        let live: Vec<u64> = m.problems.iter().filter(|(_, p)| p.settled()).map(|(&id, _)| id).collect();
        if live.is_empty() || (live.len() < self.shape.problems && self.rng.below(100) < 6) {
            return Op::Create { tag };
        }
        let problem = self.rng.pick(&live);
        let cases: Vec<u64> =
            m.problems[&problem].cases.iter().filter(|(_, c)| c.settled()).map(|(&id, _)| id).collect();
        let roll = self.rng.below(100);
        if roll < 14 {
            return Op::UpdateHtml { problem, tag };
        }
        if cases.is_empty() || (roll < 36 && cases.len() < self.shape.cases) {
            return Op::Add { problem, tag };
        }
        let case = self.rng.pick(&cases);
        let gone_problem = m.deleted_problems.iter().rev().nth(self.rng.below(16) as usize).copied();
        let gone_case = m.deleted_cases.iter().rev().nth(self.rng.below(16) as usize).map(|(&c, &p)| (p, c));
        match roll {
            14..36 => Op::DeleteCase { problem, case },
            36..48 => Op::UpdateCase { problem, case, tag },
            48..60 => Op::SetOutput { problem, case, tag },
            60..67 => Op::UpdateOutput { problem, case, tag },
            67..73 => Op::DeleteCase { problem, case },
            73..79 => Op::DeleteOutput { problem, case },
            79..83 if live.len() > 2 => Op::DeleteProblem { problem },
            83..86 => Op::AddOversize { problem, tag },
            86..92 => match (gone_problem, self.rng.below(3)) {
                (Some(problem), 0) => Op::Add { problem, tag },
                (Some(problem), 1) => Op::UpdateHtml { problem, tag },
                (Some(problem), _) => Op::DeleteProblem { problem },
                (None, _) => Op::AddOversize { problem, tag },
            },
            92..98 => match (gone_case, self.rng.below(2)) {
                (Some((problem, case)), 0) => Op::SetOutput { problem, case, tag },
                (Some((problem, case)), _) => Op::UpdateCase { problem, case, tag },
                (None, _) => Op::UpdateOutput { problem, case, tag },
            },
            _ => Op::UpdateHtml { problem, tag },
        }
    }

    /// The error the server must answer `op` with, or `None` for OK.
    fn expected(&self, op: &Op) -> Option<Code> {
        let problem = |p: u64| self.model.problems.get(&p);
        let case = |p: u64, c: u64| problem(p).and_then(|p| p.cases.get(&c));
        let found = |yes: bool| if yes { None } else { Some(Code::NotFound) };
        match *op {
            Op::Create { .. } => None,
            Op::AddOversize { .. } => Some(Code::InvalidArgument),
            Op::UpdateHtml { problem: p, .. } | Op::Add { problem: p, .. } | Op::DeleteProblem { problem: p } => {
                found(problem(p).is_some())
            }
            Op::UpdateCase { problem: p, case: c, .. }
            | Op::SetOutput { problem: p, case: c, .. }
            | Op::DeleteCase { problem: p, case: c } => found(case(p, c).is_some()),
            Op::UpdateOutput { problem: p, case: c, .. } | Op::DeleteOutput { problem: p, case: c } => {
                found(case(p, c).is_some_and(|c| c.output.acked.is_some()))
            }
        }
    }

    /// What the answer means for the store, and whether it is the one the
    /// model predicted (records a surprise if it breaks a rule).
    fn judge(&mut self, op: &Op, expected: Option<Code>, answer: &Result<u64, Status>, run: &Run) -> (Outcome, bool) {
        let kind = match answer {
            Ok(_) => "ok".to_string(),
            Err(s) if Some(s.code()) == expected => "refused as asked".to_string(),
            Err(_) if run.is_stopped() => "cut off".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        *self.answers.entry(kind).or_default() += 1;
        match (answer, expected) {
            (Ok(_), None) => (Outcome::Acked, true),
            (Ok(_), Some(code)) => {
                self.surprises.push(format!("{op:?} was answered OK, but the server must answer {code:?}"));
                (Outcome::InDoubt, false)
            }
            (Err(s), Some(code)) if s.code() == code => (Outcome::Refused, true),
            // The connection went down under it: no answer at all.
            (Err(_), _) if run.is_stopped() => (Outcome::InDoubt, false),
            (Err(s), _) => {
                if !run.tolerated.contains(&s.code()) {
                    let want = expected.map_or("OK".to_string(), |c| format!("{c:?}"));
                    self.surprises.push(format!("{op:?} was answered {s:?}, expected {want}"));
                }
                let outcome = if s.code() == Code::Unknown { Outcome::InDoubt } else { Outcome::Refused };
                (outcome, false)
            }
        }
    }

    /// Applies what became of `op` to the model. A write the server had to
    /// refuse can change nothing, whatever its answer, so its tag is
    /// refused.
    fn record(&mut self, op: Op, outcome: Outcome, id: u64, must_refuse: bool, run: &Run) {
        if outcome == Outcome::Refused || (must_refuse && outcome == Outcome::InDoubt) {
            self.model.refused.extend(op.tag());
            return;
        }
        let m = &mut self.model;
        if outcome == Outcome::InDoubt {
            match op {
                Op::Create { tag } => m.creates.push(tag),
                Op::UpdateHtml { problem: p, tag } => problem(m, p).html.in_doubt.push(tag),
                Op::Add { problem: p, tag } => problem(m, p).adds.push(tag),
                Op::AddOversize { .. } => unreachable!("an oversize value must be refused"),
                Op::UpdateCase { problem: p, case: c, tag } => case(m, p, c).value.in_doubt.push(tag),
                Op::SetOutput { problem: p, case: c, tag } | Op::UpdateOutput { problem: p, case: c, tag } => {
                    case(m, p, c).output.in_doubt.push(Some(tag))
                }
                Op::DeleteCase { problem: p, case: c } => case(m, p, c).live.in_doubt.push(false),
                Op::DeleteOutput { problem: p, case: c } => case(m, p, c).output.in_doubt.push(None),
                Op::DeleteProblem { problem: p } => problem(m, p).live.in_doubt.push(false),
            }
            return;
        }
        if matches!(op, Op::Create { .. } | Op::Add { .. }) {
            if id <= run.ids_above {
                self.surprises.push(format!("{op:?} got id {id}, not above {} (ids seen before)", run.ids_above));
            }
            if id <= self.last_id {
                self.surprises.push(format!("{op:?} got id {id}, not above {} (this writer's last)", self.last_id));
            }
            self.last_id = self.last_id.max(id);
        }
        match op {
            Op::Create { tag } => {
                m.problems.insert(id, ProblemModel::new(tag));
            }
            Op::UpdateHtml { problem: p, tag } => problem(m, p).html = Possible::new(tag),
            Op::Add { problem: p, tag } => {
                problem(m, p).cases.insert(id, CaseModel::new(tag));
            }
            Op::AddOversize { .. } => unreachable!("an oversize value is refused"),
            Op::UpdateCase { problem: p, case: c, tag } => case(m, p, c).value = Possible::new(tag),
            Op::SetOutput { problem: p, case: c, tag } | Op::UpdateOutput { problem: p, case: c, tag } => {
                case(m, p, c).output = Possible::new(Some(tag))
            }
            Op::DeleteCase { problem: p, case: c } => {
                problem(m, p).cases.remove(&c);
                m.deleted_cases.insert(c, p);
            }
            Op::DeleteOutput { problem: p, case: c } => case(m, p, c).output = Possible::new(None),
            Op::DeleteProblem { problem: p } => {
                m.problems.remove(&p);
                m.deleted_problems.insert(p);
            }
        }
    }
}

/// A problem the writer's model holds: a write that is not refused went to
/// one (the model predicted NOT_FOUND otherwise).
fn problem(m: &mut WriterModel, p: u64) -> &mut ProblemModel {
    m.problems.get_mut(&p).expect("a write the server accepts goes to a live problem")
}

fn case(m: &mut WriterModel, p: u64, c: u64) -> &mut CaseModel {
    problem(m, p).cases.get_mut(&c).expect("a write the server accepts goes to a live test case")
}

// ----- readers --------------------------------------------------------------------

fn surprise(report: &mut ReaderReport, what: String) {
    if report.surprises.len() < 20 {
        report.surprises.push(what);
    }
}

/// What a reader saw.
#[derive(Debug, Default)]
pub struct ReaderReport {
    pub reads: u64,
    pub surprises: Vec<String>,
}

/// Reads random problems until the run stops: every blob and value must be
/// exactly what some write drew, and every chain in id order. A problem or
/// output deleted meanwhile (NOT_FOUND) is no surprise.
pub async fn read_until_stopped(mut c: Client, seed: u64, run: Arc<Run>) -> ReaderReport {
    let mut rng = Rng::new(seed);
    let mut report = ReaderReport::default();
    let none = BTreeSet::new();
    while !run.is_stopped() {
        let listing = c.list_problems(proto::ListProblemsRequest { page_size: 0, page_token: String::new() }).await;
        let ids = match listing {
            Ok(page) => page.into_inner().problem_ids,
            Err(_) if run.is_stopped() => break,
            Err(s) => {
                surprise(&mut report, format!("ListProblems: {s:?}"));
                break;
            }
        };
        report.reads += 1;
        if ids.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let problem_id = rng.pick(&ids);
        match c.get_problem_html(proto::ProblemRef { problem_id, ..Default::default() }).await {
            Ok(r) => {
                if let Err(e) = identify_html(&r.into_inner().html, &none) {
                    surprise(&mut report, format!("GetProblemHtml({problem_id}): {e}"));
                }
            }
            Err(s) if s.code() == Code::NotFound || run.is_stopped() => continue,
            Err(s) => surprise(&mut report, format!("GetProblemHtml({problem_id}): {s:?}")),
        }
        let request = proto::GetAllTestCasesRequest { problem_id, ..Default::default() };
        let chain = match c.get_all_test_cases(request).await {
            Ok(r) => r.into_inner().test_cases,
            Err(s) if s.code() == Code::NotFound || run.is_stopped() => continue,
            Err(s) => {
                surprise(&mut report, format!("GetAllTestCases({problem_id}): {s:?}"));
                continue;
            }
        };
        report.reads += 2;
        if !chain.windows(2).all(|pair| pair[0].test_case_id < pair[1].test_case_id) {
            let ids: Vec<u64> = chain.iter().map(|tc| tc.test_case_id).collect();
            surprise(&mut report, format!("problem {problem_id}: chain not in id order: {ids:?}"));
        }
        for tc in &chain {
            if let Err(e) = identify_value(&canon_field(&tc.value), &none) {
                surprise(&mut report, format!("test case {} of problem {problem_id}: {e}", tc.test_case_id));
            }
        }
        if chain.is_empty() {
            continue;
        }
        let test_case_id = chain[rng.below(chain.len() as u64) as usize].test_case_id;
        match c.get_expected_output(proto::TestCaseRef { problem_id, test_case_id, ..Default::default() }).await {
            Ok(r) => {
                report.reads += 1;
                if let Err(e) = identify_value(&canon_field(&r.into_inner().value), &none) {
                    surprise(&mut report, format!("output of test case {test_case_id}: {e}"));
                }
            }
            Err(s) if s.code() == Code::NotFound || run.is_stopped() => {}
            Err(s) => surprise(&mut report, format!("GetExpectedOutput({problem_id}, {test_case_id}): {s:?}")),
        }
    }
    report
}

// ----- the check of a whole store -------------------------------------------------

/// What a check of the store found.
#[derive(Debug, Default)]
pub struct Check {
    /// Broken rules; the test fails on any.
    pub violations: Vec<String>,
    /// Writes in doubt found applied.
    pub applied: u64,
    /// Writes in doubt found not applied.
    pub not_applied: u64,
}

impl Check {
    fn count_settled(&mut self, in_doubt: usize, changed: bool) {
        let applied = usize::from(changed && in_doubt > 0);
        self.applied += applied as u64;
        self.not_applied += (in_doubt - applied) as u64;
    }
}

/// The highest id in `store`, problems and test cases.
pub fn max_id(store: &BTreeMap<u64, ProblemDump>) -> u64 {
    store
        .iter()
        .flat_map(|(&p, dump)| std::iter::once(p).chain(dump.test_cases.iter().map(|tc| tc.0)))
        .max()
        .unwrap_or(0)
}

/// Checks `store` (every live problem, as `dump_all` reads it) against what
/// the writers were answered, without changing their models: for a store
/// that has not been restarted since, whose writes in doubt are not decided
/// yet.
pub fn check_only(writers: &[Writer], store: &BTreeMap<u64, ProblemDump>) -> Check {
    let mut copy = writers.to_vec();
    check_and_settle(&mut copy, store)
}

/// Checks `store` (every live problem, as `dump_all` reads it, after a
/// restart) against what the writers were answered, and settles every
/// write in doubt to what was found: what a restart recovered stays.
pub fn check_and_settle(writers: &mut [Writer], store: &BTreeMap<u64, ProblemDump>) -> Check {
    let mut check = Check::default();
    let refused: BTreeSet<Tag> = writers.iter().flat_map(|w| w.model.refused.iter().copied()).collect();
    check_ids_unique(store, &mut check);
    let mut claimed = BTreeSet::new();
    for writer in writers.iter_mut() {
        let m = &mut writer.model;
        for p in &m.deleted_problems {
            if store.contains_key(p) {
                check
                    .violations
                    .push(format!("writer {}: problem {p}, whose delete was acknowledged, is back", m.writer));
            }
        }
        for p in m.problems.keys().copied().collect::<Vec<_>>() {
            let Some(dump) = store.get(&p) else {
                let model = m.problems.remove(&p).expect("a key of the map");
                if !model.live.allows(&false) {
                    check.violations.push(format!("writer {}: acknowledged problem {p} is missing", m.writer));
                }
                check.count_settled(model.live.in_doubt.len(), true);
                m.deleted_problems.insert(p);
                continue;
            };
            claimed.insert(p);
            let model = m.problems.get_mut(&p).expect("a key of the map");
            check_problem(m.writer, p, model, dump, &mut m.deleted_cases, &refused, &mut check);
        }
    }
    adopt_unclaimed_problems(writers, store, &claimed, &refused, &mut check);
    for writer in writers.iter_mut() {
        check.not_applied += writer.model.creates.len() as u64;
        writer.model.creates.clear();
    }
    check
}

/// Ids are shared by problems and test cases and never reused: no id is
/// in the store twice.
fn check_ids_unique(store: &BTreeMap<u64, ProblemDump>, check: &mut Check) {
    let mut seen = BTreeMap::new();
    for (&p, dump) in store {
        for id in std::iter::once(p).chain(dump.test_cases.iter().map(|tc| tc.0)) {
            if let Some(first) = seen.insert(id, p) {
                check.violations.push(format!("id {id} is used twice: in problem {first} and in problem {p}"));
            }
        }
    }
}

fn check_problem(
    writer: u64,
    p: u64,
    model: &mut ProblemModel,
    dump: &ProblemDump,
    deleted_cases: &mut BTreeMap<u64, u64>,
    refused: &BTreeSet<Tag>,
    check: &mut Check,
) {
    let at = format!("writer {writer}, problem {p}");
    model.live.settle(true, &at, check);
    match identify_html(&dump.html, refused) {
        Ok(tag) => model.html.settle(tag, &format!("{at}: html"), check),
        Err(e) => check.violations.push(format!("{at}: {e}")),
    }
    if dump.columns != model.columns {
        check.violations.push(format!("{at}: columns {:?}, written {:?}", dump.columns, model.columns));
    }
    let ids: Vec<u64> = dump.test_cases.iter().map(|tc| tc.0).collect();
    if !ids.windows(2).all(|pair| pair[0] < pair[1]) {
        check.violations.push(format!("{at}: chain not in id order: {ids:?}"));
    }
    let found: BTreeMap<u64, (&Canon, &Option<Canon>)> =
        dump.test_cases.iter().map(|(id, value, output)| (*id, (value, output))).collect();
    let known: BTreeSet<u64> = model.cases.keys().copied().collect();
    for &c in &known {
        let at = format!("{at}, test case {c}");
        let Some(&(value, output)) = found.get(&c) else {
            let case = model.cases.remove(&c).expect("a key of the map");
            if !case.live.allows(&false) {
                check.violations.push(format!("{at}: acknowledged test case is missing"));
            }
            check.count_settled(case.live.in_doubt.len(), true);
            deleted_cases.insert(c, p);
            continue;
        };
        let case = model.cases.get_mut(&c).expect("a key of the map");
        case.live.settle(true, &at, check);
        match identify_value(value, refused) {
            Ok(tag) => case.value.settle(tag, &format!("{at}: value"), check),
            Err(e) => check.violations.push(format!("{at}: {e}")),
        }
        match output.as_ref().map(|o| identify_value(o, refused)).transpose() {
            Ok(tag) => case.output.settle(tag, &format!("{at}: expected output"), check),
            Err(e) => check.violations.push(format!("{at}: expected output: {e}")),
        }
    }
    for (c, value, output) in dump.test_cases.iter().filter(|tc| !known.contains(&tc.0)) {
        let at = format!("{at}, test case {c}");
        if let Some(owner) = deleted_cases.get(c) {
            check.violations.push(format!("{at}: its delete (from problem {owner}) was acknowledged, yet it is back"));
            continue;
        }
        match identify_value(value, refused) {
            Ok(tag) if model.adds.contains(&tag) => {
                model.adds.retain(|&t| t != tag);
                model.cases.insert(*c, CaseModel::new(tag));
                check.applied += 1;
                if output.is_some() {
                    check.violations.push(format!("{at}: an add in doubt came back with an output {output:?}"));
                }
            }
            Ok(tag) => check.violations.push(format!("{at}: holds write {tag}'s value, but no add of it is in doubt")),
            Err(e) => check.violations.push(format!("{at}: {e}")),
        }
    }
    check.not_applied += model.adds.len() as u64;
    model.adds.clear();
}

/// Problems no writer knows the id of: each must be a create in doubt of
/// the writer its columns name (it then becomes that writer's).
fn adopt_unclaimed_problems(
    writers: &mut [Writer],
    store: &BTreeMap<u64, ProblemDump>,
    claimed: &BTreeSet<u64>,
    refused: &BTreeSet<Tag>,
    check: &mut Check,
) {
    let deleted: BTreeSet<u64> = writers.iter().flat_map(|w| w.model.deleted_problems.iter().copied()).collect();
    for (&p, dump) in store.iter().filter(|(p, _)| !claimed.contains(p) && !deleted.contains(p)) {
        let tag = dump.columns.get("tag").and_then(|t| t.parse::<Tag>().ok());
        let owner = tag.and_then(|tag| writers.iter_mut().find(|w| w.model.creates.contains(&tag)));
        match (tag, owner) {
            (Some(tag), Some(owner)) => {
                match identify_html(&dump.html, refused) {
                    Ok(found) if found == tag => {}
                    Ok(found) => check.violations.push(format!("problem {p}: created as {tag}, html of {found}")),
                    Err(e) => check.violations.push(format!("problem {p}: {e}")),
                }
                if !dump.test_cases.is_empty() || dump.columns != draw_columns(tag) {
                    check.violations.push(format!("problem {p}: a create in doubt came back changed: {dump:?}"));
                }
                owner.model.creates.retain(|&t| t != tag);
                owner.model.problems.insert(p, ProblemModel::new(tag));
                check.applied += 1;
            }
            (Some(tag), None) if refused.contains(&tag) => {
                check.violations.push(format!("problem {p}: created by write {tag}, which was answered with an error"))
            }
            _ => check.violations.push(format!("problem {p} is no write's in doubt: columns {:?}", dump.columns)),
        }
    }
}
