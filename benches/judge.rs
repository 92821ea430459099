//! The judge workload, through the real server, against PostgreSQL in the
//! same run: what a judge does with whole problems.
//!
//! P problems of C test cases (html of 2-20 KiB, 2-5 columns; inputs and
//! expected outputs a mix of int lists, strings up to 4 KiB and small
//! maps) are imported with 1 and with 8 concurrent uploaders, then fetched
//! whole by 1 and by 8 judges, then 10 % of each problem's expected
//! outputs are edited (one atomic change per problem), at 1 and 8 clients.
//! Three systems, each on fresh storage, default durability everywhere:
//!
//! - `stratum`: the whole-problem RPCs: one ImportProblem per import, one
//!   GetProblem per fetch, one Batch per edit (`stratum::run` in-process,
//!   `--sync always`, a tonic client per connection);
//! - `node-at-a-time`: the same server through the node RPCs a judge had
//!   before (CreateProblem, then AddTestCase and SetExpectedOutput per test
//!   case; GetProblemHtml, GetProblemMeta, GetAllTestCases and
//!   GetExpectedOutput per test case; UpdateExpectedOutput per edit), on a
//!   tenth of the problems (it is that much slower), so the gain shows;
//! - `postgres` (with `--features judge-postgres` and `--pg CONNINFO`): what
//!   CMS stores its data in. One transaction per import (an INSERT of the
//!   problem, one INSERT of all its test cases from arrays), one query per
//!   fetch (the problem and its test cases' arrays in one row), one UPDATE
//!   per edit (from arrays), through the `postgres` crate, one connection
//!   per client over TCP on 127.0.0.1 (as gRPC is), `synchronous_commit`
//!   and `fsync` on (PostgreSQL's defaults). `scripts/bench-judge` starts a throw-away cluster from
//!   Debian's `postgresql` and runs this with it.
//!
//! Values travel as protobuf bytes to both (PostgreSQL stores them as
//! `bytea`), and every fetch is decoded and checked by the client.
//!
//! `STRATUM_JUDGE_PROBLEMS` (default 200) and `STRATUM_JUDGE_CASES`
//! (default 50) size the run; `cargo test --benches` runs it tiny.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::server::start_stratum;
use common::{Rng, Table};
use stratum::proto::lse_client::LseClient;
use stratum::proto::{self, batch_op::Op as W, value::Kind};
use tonic::transport::Channel;

/// One problem of the workload, as its uploader has it.
#[derive(Clone, Debug)]
struct Spec {
    html: String,
    columns: std::collections::BTreeMap<String, String>,
    /// Input and expected output of each test case, in chain order.
    cases: Vec<(proto::Value, proto::Value)>,
}

/// A stored problem: its id and its test cases' ids in order.
#[derive(Clone, Debug)]
struct Stored {
    id: u64,
    cases: Vec<u64>,
}

fn value(rng: &mut Rng) -> proto::Value {
    let kind = match rng.below(3) {
        0 => Kind::IntList(proto::IntList {
            values: (0..rng.range(5, 50)).map(|_| (rng.next_u64() % 2_000_000) as i64 - 1_000_000).collect(),
        }),
        1 => Kind::StringValue((0..rng.range(1, 4096)).map(|_| (b'a' + rng.below(26) as u8) as char).collect()),
        _ => Kind::StringMap(proto::StringMap {
            entries: (0..rng.range(1, 6)).map(|i| (format!("k{i}"), format!("v{}", rng.below(1000)))).collect(),
        }),
    };
    proto::Value { kind: Some(kind) }
}

fn spec(rng: &mut Rng, n: u64, cases: usize) -> Spec {
    let len = rng.range(2 << 10, 20 << 10) as usize;
    let html = String::from_utf8(common::html(rng, len)).expect("ASCII html");
    let mut columns = common::columns(rng, n);
    columns.retain(|name, _| name != "tags");
    Spec { html, columns, cases: (0..cases).map(|_| (value(rng), value(rng))).collect() }
}

/// What every system does for a judge. Each client (thread) has its own
/// connection, made by `connect`.
trait Judge: Sync {
    type Conn: Send;
    fn connect(&self) -> Self::Conn;
    fn import(&self, conn: &mut Self::Conn, spec: &Spec) -> Stored;
    /// Fetches the whole problem; returns its inputs and outputs, decoded.
    fn fetch(&self, conn: &mut Self::Conn, problem: &Stored) -> Vec<(proto::Value, Option<proto::Value>)>;
    /// Replaces the expected outputs of the test cases at `edits`.
    fn edit(&self, conn: &mut Self::Conn, problem: &Stored, edits: &[(usize, proto::Value)]);
}

// ----- Stratum ------------------------------------------------------------------

/// A tonic client on its own connection, driven from a plain thread.
struct Grpc {
    rt: tokio::runtime::Runtime,
    client: LseClient<Channel>,
}

fn grpc(addr: std::net::SocketAddr) -> Grpc {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    let client = rt.block_on(async {
        // The server's windows (a client's own receive windows must be as
        // large, or every response over 64 KiB waits for a round trip).
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .initial_stream_window_size(stratum::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(stratum::CONNECTION_WINDOW_BYTES)
            .connect()
            .await
            .expect("connect");
        LseClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
    });
    Grpc { rt, client }
}

fn new_case(input: &proto::Value, output: &proto::Value) -> proto::NewTestCase {
    proto::NewTestCase { input: Some(input.clone()), expected_output: Some(output.clone()) }
}

/// The whole-problem RPCs.
struct Whole {
    addr: std::net::SocketAddr,
}

impl Judge for Whole {
    type Conn = Grpc;

    fn connect(&self) -> Grpc {
        grpc(self.addr)
    }

    fn import(&self, g: &mut Grpc, spec: &Spec) -> Stored {
        let request = proto::ImportProblemRequest {
            html: spec.html.clone(),
            columns: spec.columns.clone(),
            test_cases: spec.cases.iter().map(|(i, o)| new_case(i, o)).collect(),
            ..Default::default()
        };
        let r = g.rt.block_on(g.client.import_problem(request)).expect("ImportProblem").into_inner();
        Stored { id: r.problem_id, cases: r.test_case_ids }
    }

    fn fetch(&self, g: &mut Grpc, problem: &Stored) -> Vec<(proto::Value, Option<proto::Value>)> {
        let request = proto::GetProblemRequest { problem_id: problem.id, expected_version: None };
        let r = g.rt.block_on(g.client.get_problem(request)).expect("GetProblem").into_inner();
        r.test_cases.into_iter().map(|t| (t.input.expect("input"), t.expected_output)).collect()
    }

    fn edit(&self, g: &mut Grpc, problem: &Stored, edits: &[(usize, proto::Value)]) {
        let ops = edits
            .iter()
            .map(|(at, value)| proto::BatchOp {
                op: Some(W::UpdateExpectedOutput(proto::UpdateExpectedOutputRequest {
                    problem_id: problem.id,
                    test_case_id: problem.cases[*at],
                    value: Some(value.clone()),
                    expected_version: None,
                })),
                ..Default::default()
            })
            .collect();
        g.rt.block_on(g.client.batch(proto::BatchRequest { ops, expected_versions: vec![] })).expect("Batch");
    }
}

/// The node RPCs, one call per node.
struct NodeAtATime {
    addr: std::net::SocketAddr,
}

impl Judge for NodeAtATime {
    type Conn = Grpc;

    fn connect(&self) -> Grpc {
        grpc(self.addr)
    }

    fn import(&self, g: &mut Grpc, spec: &Spec) -> Stored {
        g.rt.block_on(async {
            let c = &mut g.client;
            let create = proto::CreateProblemRequest { html: spec.html.clone(), columns: spec.columns.clone() };
            let id = c.create_problem(create).await.expect("CreateProblem").into_inner().problem_id;
            let mut cases = Vec::new();
            for (input, output) in &spec.cases {
                let add =
                    proto::AddTestCaseRequest { problem_id: id, value: Some(input.clone()), ..Default::default() };
                let tc = c.add_test_case(add).await.expect("AddTestCase").into_inner().test_case_id;
                let set = proto::SetExpectedOutputRequest {
                    problem_id: id,
                    test_case_id: tc,
                    value: Some(output.clone()),
                    ..Default::default()
                };
                c.set_expected_output(set).await.expect("SetExpectedOutput");
                cases.push(tc);
            }
            Stored { id, cases }
        })
    }

    fn fetch(&self, g: &mut Grpc, problem: &Stored) -> Vec<(proto::Value, Option<proto::Value>)> {
        g.rt.block_on(async {
            let c = &mut g.client;
            let r = proto::ProblemRef { problem_id: problem.id, ..Default::default() };
            c.get_problem_html(r).await.expect("GetProblemHtml");
            c.get_problem_meta(r).await.expect("GetProblemMeta");
            let all = proto::GetAllTestCasesRequest { problem_id: problem.id, ..Default::default() };
            let cases = c.get_all_test_cases(all).await.expect("GetAllTestCases").into_inner().test_cases;
            let mut out = Vec::new();
            for t in cases {
                let r =
                    proto::TestCaseRef { problem_id: problem.id, test_case_id: t.test_case_id, ..Default::default() };
                let output = c.get_expected_output(r).await.expect("GetExpectedOutput").into_inner().value;
                out.push((t.value.expect("value"), output));
            }
            out
        })
    }

    fn edit(&self, g: &mut Grpc, problem: &Stored, edits: &[(usize, proto::Value)]) {
        g.rt.block_on(async {
            for (at, value) in edits {
                let r = proto::UpdateExpectedOutputRequest {
                    problem_id: problem.id,
                    test_case_id: problem.cases[*at],
                    value: Some(value.clone()),
                    expected_version: None,
                };
                g.client.update_expected_output(r).await.expect("UpdateExpectedOutput");
            }
        })
    }
}

// ----- PostgreSQL -----------------------------------------------------------------

#[cfg(feature = "judge-postgres")]
mod pg {
    use prost::Message;

    use super::*;

    pub struct Postgres {
        pub conninfo: String,
    }

    pub struct Conn {
        client: postgres::Client,
        insert_problem: postgres::Statement,
        insert_cases: postgres::Statement,
        fetch: postgres::Statement,
        edit: postgres::Statement,
    }

    impl Postgres {
        /// Fresh tables.
        pub fn reset(&self) {
            let mut client = postgres::Client::connect(&self.conninfo, postgres::NoTls).expect("connect to PostgreSQL");
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS test_cases, problems;
                     CREATE TABLE problems (id bigserial PRIMARY KEY, html text NOT NULL, columns bytea NOT NULL);
                     CREATE TABLE test_cases (
                         id bigserial PRIMARY KEY,
                         problem_id bigint NOT NULL REFERENCES problems(id) ON DELETE CASCADE,
                         position int NOT NULL,
                         input bytea NOT NULL,
                         output bytea);
                     CREATE INDEX test_cases_by_problem ON test_cases (problem_id, position);",
                )
                .expect("schema");
        }
    }

    impl Judge for Postgres {
        type Conn = Conn;

        fn connect(&self) -> Conn {
            let mut client = postgres::Client::connect(&self.conninfo, postgres::NoTls).expect("connect to PostgreSQL");
            let insert_problem =
                client.prepare("INSERT INTO problems (html, columns) VALUES ($1, $2) RETURNING id").expect("prepare");
            let insert_cases = client
                .prepare(
                    "INSERT INTO test_cases (problem_id, position, input, output)
                     SELECT $1, p, i, o FROM unnest($2::int[], $3::bytea[], $4::bytea[]) AS u(p, i, o)
                     RETURNING id",
                )
                .expect("prepare");
            let fetch = client
                .prepare(
                    "SELECT p.html, p.columns,
                            ARRAY(SELECT t.id FROM test_cases t WHERE t.problem_id = p.id ORDER BY t.position),
                            ARRAY(SELECT t.input FROM test_cases t WHERE t.problem_id = p.id ORDER BY t.position),
                            ARRAY(SELECT t.output FROM test_cases t WHERE t.problem_id = p.id ORDER BY t.position)
                     FROM problems p WHERE p.id = $1",
                )
                .expect("prepare");
            let edit = client
                .prepare(
                    "UPDATE test_cases SET output = u.o FROM unnest($1::bigint[], $2::bytea[]) AS u(id, o)
                     WHERE test_cases.id = u.id",
                )
                .expect("prepare");
            Conn { client, insert_problem, insert_cases, fetch, edit }
        }

        fn import(&self, c: &mut Conn, spec: &Spec) -> Stored {
            let columns = proto::StringMap { entries: spec.columns.clone() }.encode_to_vec();
            let mut tx = c.client.transaction().expect("begin");
            let id: i64 = tx.query_one(&c.insert_problem, &[&spec.html, &columns]).expect("insert problem").get(0);
            let positions: Vec<i32> = (0..spec.cases.len() as i32).collect();
            let inputs: Vec<Vec<u8>> = spec.cases.iter().map(|(i, _)| i.encode_to_vec()).collect();
            let outputs: Vec<Option<Vec<u8>>> = spec.cases.iter().map(|(_, o)| Some(o.encode_to_vec())).collect();
            let rows = tx.query(&c.insert_cases, &[&id, &positions, &inputs, &outputs]).expect("insert test cases");
            tx.commit().expect("commit");
            Stored { id: id as u64, cases: rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect() }
        }

        fn fetch(&self, c: &mut Conn, problem: &Stored) -> Vec<(proto::Value, Option<proto::Value>)> {
            let row = c.client.query_one(&c.fetch, &[&(problem.id as i64)]).expect("fetch");
            let _html: String = row.get(0);
            let _columns = proto::StringMap::decode(row.get::<_, &[u8]>(1)).expect("columns");
            let ids: Vec<i64> = row.get(2);
            let inputs: Vec<Vec<u8>> = row.get(3);
            let outputs: Vec<Option<Vec<u8>>> = row.get(4);
            assert_eq!(ids.len(), inputs.len());
            inputs
                .iter()
                .zip(outputs)
                .map(|(i, o)| {
                    let output = o.map(|o| proto::Value::decode(&o[..]).expect("output"));
                    (proto::Value::decode(&i[..]).expect("input"), output)
                })
                .collect()
        }

        fn edit(&self, c: &mut Conn, problem: &Stored, edits: &[(usize, proto::Value)]) {
            let ids: Vec<i64> = edits.iter().map(|(at, _)| problem.cases[*at] as i64).collect();
            let values: Vec<Vec<u8>> = edits.iter().map(|(_, v)| v.encode_to_vec()).collect();
            let updated = c.client.execute(&c.edit, &[&ids, &values]).expect("edit");
            assert_eq!(updated as usize, edits.len());
        }
    }
}

// ----- the run ---------------------------------------------------------------------

/// Runs `work` for items 0..n on `clients` threads (each its own
/// connection) and returns items per second.
fn run<J: Judge>(judge: &J, clients: usize, n: usize, work: impl Fn(&J, &mut J::Conn, usize) + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let mut conns: Vec<J::Conn> = (0..clients).map(|_| judge.connect()).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for conn in conns.iter_mut() {
            let (next, work) = (&next, &work);
            s.spawn(move || {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    if at >= n {
                        return;
                    }
                    work(judge, conn, at);
                }
            });
        }
    });
    n as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// Problems per second of each phase, as (phase, clients) -> rate.
type Rates = Vec<((&'static str, usize), f64)>;

/// The three phases at 1 and 8 clients on `judge`, over `specs` (a fresh
/// set of problems for each import).
fn phases<J: Judge>(judge: &J, specs: &[Vec<Spec>; 2], edit_seed: u64) -> Rates {
    let mut rates = Vec::new();
    let mut stored: Vec<Stored> = Vec::new();
    for (set, clients) in [1, 8].into_iter().enumerate().map(|(i, c)| (&specs[i], c)) {
        let done = Mutex::new(Vec::new());
        let rate = run(judge, clients, set.len(), |j, conn, at| {
            let s = j.import(conn, &set[at]);
            assert_eq!(s.cases.len(), set[at].cases.len());
            done.lock().unwrap().push((at, s));
        });
        rates.push((("import", clients), rate));
        let mut done = done.into_inner().unwrap();
        done.sort_by_key(|(at, _)| *at);
        if stored.is_empty() {
            stored = done.into_iter().map(|(_, s)| s).collect();
        }
    }
    let expected = &specs[0];
    for clients in [1, 8] {
        let fetches = stored.len() * 2;
        let rate = run(judge, clients, fetches, |j, conn, at| {
            let at = at % stored.len();
            let got = j.fetch(conn, &stored[at]);
            assert_eq!(got.len(), expected[at].cases.len(), "a whole fetch lost test cases");
            assert_eq!(got[0].0, expected[at].cases[0].0, "a whole fetch read another problem");
        });
        rates.push((("fetch", clients), rate));
    }
    for clients in [1, 8] {
        let rate = run(judge, clients, stored.len(), |j, conn, at| {
            let mut rng = Rng::new(edit_seed ^ (at as u64) << 8 ^ clients as u64);
            // A tenth of the test cases, distinct, at random.
            let len = stored[at].cases.len();
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < len.div_ceil(10) {
                picked.insert(rng.below(len));
            }
            let edits: Vec<(usize, proto::Value)> = picked.into_iter().map(|at| (at, value(&mut rng))).collect();
            j.edit(conn, &stored[at], &edits);
        });
        rates.push((("edit 10%", clients), rate));
    }
    rates
}

/// The `--pg CONNINFO` argument, if given.
fn pg_conninfo() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == "--pg").and_then(|at| args.get(at + 1).cloned())
}

fn main() {
    let quick = common::test_mode();
    let problems = if quick { 4 } else { common::env_u64("STRATUM_JUDGE_PROBLEMS", 200) as usize };
    let cases = if quick { 5 } else { common::env_u64("STRATUM_JUDGE_CASES", 50) as usize };
    let mut rng = Rng::new(11);
    let make = |rng: &mut Rng, n: usize| (0..n).map(|i| spec(rng, i as u64, cases)).collect::<Vec<_>>();
    let specs = [make(&mut rng, problems), make(&mut rng, problems)];
    let few = (problems / 10).max(4).min(problems);
    let old_specs = [specs[0][..few].to_vec(), specs[1][..few].to_vec()];

    println!("judge workload: {problems} problems of {cases} test cases ({} in the node-at-a-time runs)", few);
    println!("{}", common::machine());

    let dir = tempfile::tempdir().expect("temp dir");
    let whole = {
        let server = start_stratum(&dir.path().join("whole"));
        phases(&Whole { addr: server.addr }, &specs, 1)
    };
    let old = {
        let server = start_stratum(&dir.path().join("nodes"));
        phases(&NodeAtATime { addr: server.addr }, &old_specs, 1)
    };
    let postgres: Option<Rates> = postgres_rates(&specs);

    let mut table = Table::new(&["phase", "clients", "stratum", "node-at-a-time", "postgres", "stratum / postgres"]);
    for (i, ((phase, clients), rate)) in whole.iter().enumerate() {
        let pg = postgres.as_ref().map(|p| p[i].1);
        table.row(vec![
            phase.to_string(),
            clients.to_string(),
            format!("{rate:.0}/s"),
            format!("{:.0}/s", old[i].1),
            pg.map_or("-".into(), |p| format!("{p:.0}/s")),
            pg.map_or("-".into(), |p| format!("{:.2}x", rate / p)),
        ]);
    }
    println!("problems per second (imports and edits: one atomic change per problem)");
    table.print();
    if postgres.is_none() {
        println!("(postgres: not run; use scripts/bench-judge, or --features judge-postgres -- --pg CONNINFO)");
    }
}

#[cfg(feature = "judge-postgres")]
fn postgres_rates(specs: &[Vec<Spec>; 2]) -> Option<Rates> {
    let conninfo = pg_conninfo()?;
    let pg = pg::Postgres { conninfo };
    pg.reset();
    Some(phases(&pg, specs, 1))
}

#[cfg(not(feature = "judge-postgres"))]
fn postgres_rates(_: &[Vec<Spec>; 2]) -> Option<Rates> {
    if pg_conninfo().is_some() {
        eprintln!("--pg needs the judge-postgres feature: cargo bench --features judge-postgres --bench judge");
    }
    None
}
