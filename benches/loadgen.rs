//! Server load generator: drives the real gRPC server (`stratum::run`,
//! in-process, port 0 on 127.0.0.1, a temporary data directory, default
//! settings: `--sync always`) with a tonic client over many connections and
//! in-flight calls, and, in the same run, a trivial tonic service that
//! answers the same RPCs from memory with payloads of the same sizes (the
//! ceiling: what tonic, HTTP/2 and loopback TCP cost on this machine).
//!
//! `cargo bench --bench loadgen` prints QPS and p50/p99 latency for three
//! mixes at concurrency 1, 8 and 64, and Stratum's QPS as a ratio to the
//! ceiling's. Three servers run side by side, each cell on each server back
//! to back, so ratios are measured under the same machine noise:
//!
//! - `stratum`: the server as shipped, `stratum::run` (point reads answered
//!   on the async worker when the engine can answer without waiting, see
//!   `Engine::document_blob_now`; on the blocking pool otherwise);
//! - `stratum-blocking-reads`: the shipped `LseService` over a copy of the
//!   data, except that the four point-read RPCs always hop to the blocking
//!   pool (`spawn_blocking`), as every engine call did before the
//!   non-blocking reads: shows what they are worth;
//! - `ceiling`: the trivial in-memory service, `TCP_NODELAY` on like the
//!   shipped server.
//!
//! Each cell runs for `STRATUM_CELL_MS` (default 2500 ms) after a 500 ms
//! warm-up. Only loopback traffic; every loop is bounded in time.
//!
//! Mixes:
//! - `read`: GetProblemHtml only (the target: >= 0.8x the ceiling at 64);
//! - `read-heavy`: 90 % reads (45 % GetProblemHtml, 15 % GetProblemMeta,
//!   15 % GetTestCase, 15 % GetExpectedOutput), 10 % writes (5 % AddTestCase,
//!   5 % UpdateTestCase);
//! - `write-heavy`: 20 % reads (GetProblemHtml, GetTestCase), 80 % writes
//!   (30 % AddTestCase, 30 % SetExpectedOutput, 10 % UpdateProblemHtml,
//!   10 % CreateProblem).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::server::{Running, start_stratum, stratum_config};
use common::{Measured, Pool, Rng, Stored, Table};
use hdrhistogram::Histogram;
use stratum::proto::lse_client::LseClient;
use stratum::proto::lse_server::{Lse, LseServer};
use stratum::proto::{self, value::Kind};
use stratum_io::{Engine, Options, SyncPolicy, Value};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Connections for a given number of in-flight calls: up to 16, so that
/// concurrency 64 runs 4 calls in flight on each of 16 HTTP/2 connections.
fn connections(concurrency: usize) -> usize {
    concurrency.min(16)
}

fn wire(value: &Value) -> proto::Value {
    let kind = match value {
        Value::Int(v) => Kind::IntValue(*v),
        Value::Double(v) => Kind::DoubleValue(*v),
        Value::Str(s) => Kind::StringValue(s.clone()),
        Value::IntList(v) => Kind::IntList(proto::IntList { values: v.clone() }),
        Value::StrList(v) => Kind::StringList(proto::StringList { values: v.clone() }),
        Value::Map(m) => Kind::StringMap(proto::StringMap { entries: m.clone() }),
        Value::Bytes(b) => Kind::BytesValue(b.clone()),
    };
    proto::Value { kind: Some(kind) }
}

// ----- the ceiling ------------------------------------------------------------

/// Answers from memory: blobs and values drawn from the same size
/// distribution as the stored data, picked by id; writes do nothing but
/// hand out ids.
struct Ceiling {
    blobs: Vec<String>,
    values: Vec<proto::Value>,
    columns: stratum_io::Columns,
    ids: AtomicU64,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of the ceiling"))
}

#[tonic::async_trait]
impl Lse for Ceiling {
    async fn create_problem(
        &self,
        _: Request<proto::CreateProblemRequest>,
    ) -> Result<Response<proto::CreateProblemResponse>, Status> {
        Ok(Response::new(proto::CreateProblemResponse {
            problem_id: self.ids.fetch_add(1, Ordering::Relaxed),
            ..Default::default()
        }))
    }
    async fn get_problem_html(
        &self,
        r: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemHtmlResponse>, Status> {
        let id = r.into_inner().problem_id as usize;
        Ok(Response::new(proto::GetProblemHtmlResponse {
            html: self.blobs[id % self.blobs.len()].clone(),
            ..Default::default()
        }))
    }
    async fn get_problem_meta(
        &self,
        _: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemMetaResponse>, Status> {
        Ok(Response::new(proto::GetProblemMetaResponse { columns: self.columns.clone(), ..Default::default() }))
    }
    async fn update_problem_html(
        &self,
        _: Request<proto::UpdateProblemHtmlRequest>,
    ) -> Result<Response<proto::UpdateProblemHtmlResponse>, Status> {
        Ok(Response::new(proto::UpdateProblemHtmlResponse { ..Default::default() }))
    }
    async fn update_problem_column(
        &self,
        _: Request<proto::UpdateProblemColumnRequest>,
    ) -> Result<Response<proto::UpdateProblemColumnResponse>, Status> {
        unimplemented()
    }
    async fn delete_problem(
        &self,
        _: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::DeleteProblemResponse>, Status> {
        unimplemented()
    }
    async fn list_problems(
        &self,
        _: Request<proto::ListProblemsRequest>,
    ) -> Result<Response<proto::ListProblemsResponse>, Status> {
        unimplemented()
    }
    async fn add_test_case(
        &self,
        _: Request<proto::AddTestCaseRequest>,
    ) -> Result<Response<proto::AddTestCaseResponse>, Status> {
        Ok(Response::new(proto::AddTestCaseResponse {
            test_case_id: self.ids.fetch_add(1, Ordering::Relaxed),
            ..Default::default()
        }))
    }
    async fn get_test_case(
        &self,
        r: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetTestCaseResponse>, Status> {
        let id = r.into_inner().test_case_id;
        let value = self.values[id as usize % self.values.len()].clone();
        Ok(Response::new(proto::GetTestCaseResponse {
            test_case: Some(proto::TestCase { test_case_id: id, value: Some(value) }),
            ..Default::default()
        }))
    }
    async fn get_all_test_cases(
        &self,
        _: Request<proto::GetAllTestCasesRequest>,
    ) -> Result<Response<proto::GetAllTestCasesResponse>, Status> {
        unimplemented()
    }
    async fn update_test_case(
        &self,
        _: Request<proto::UpdateTestCaseRequest>,
    ) -> Result<Response<proto::UpdateTestCaseResponse>, Status> {
        Ok(Response::new(proto::UpdateTestCaseResponse { ..Default::default() }))
    }
    async fn delete_test_case(
        &self,
        _: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteTestCaseResponse>, Status> {
        unimplemented()
    }
    async fn set_expected_output(
        &self,
        _: Request<proto::SetExpectedOutputRequest>,
    ) -> Result<Response<proto::SetExpectedOutputResponse>, Status> {
        Ok(Response::new(proto::SetExpectedOutputResponse { ..Default::default() }))
    }
    async fn get_expected_output(
        &self,
        r: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetExpectedOutputResponse>, Status> {
        let id = r.into_inner().test_case_id;
        let value = self.values[(id as usize + 1) % self.values.len()].clone();
        Ok(Response::new(proto::GetExpectedOutputResponse {
            test_case_id: id,
            value: Some(value),
            ..Default::default()
        }))
    }
    async fn update_expected_output(
        &self,
        _: Request<proto::UpdateExpectedOutputRequest>,
    ) -> Result<Response<proto::UpdateExpectedOutputResponse>, Status> {
        unimplemented()
    }
    async fn delete_expected_output(
        &self,
        _: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteExpectedOutputResponse>, Status> {
        unimplemented()
    }
    async fn get_stats(&self, _: Request<proto::GetStatsRequest>) -> Result<Response<proto::GetStatsResponse>, Status> {
        unimplemented()
    }
    async fn flush(&self, _: Request<proto::FlushRequest>) -> Result<Response<proto::FlushResponse>, Status> {
        unimplemented()
    }
    async fn compact_now(
        &self,
        _: Request<proto::CompactNowRequest>,
    ) -> Result<Response<proto::CompactNowResponse>, Status> {
        unimplemented()
    }

    type GetProblemStreamStream = <stratum::LseService as Lse>::GetProblemStreamStream;
    async fn import_problem(
        &self,
        r: Request<proto::ImportProblemRequest>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn import_problem_stream(
        &self,
        r: Request<tonic::Streaming<proto::ImportProblemRequest>>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn get_problem(
        &self,
        r: Request<proto::GetProblemRequest>,
    ) -> Result<Response<proto::GetProblemResponse>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn get_problem_stream(
        &self,
        r: Request<proto::GetProblemRequest>,
    ) -> Result<Response<Self::GetProblemStreamStream>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn replace_test_cases(
        &self,
        r: Request<proto::ReplaceTestCasesRequest>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn replace_test_cases_stream(
        &self,
        r: Request<tonic::Streaming<proto::ReplaceTestCasesRequest>>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn batch(&self, r: Request<proto::BatchRequest>) -> Result<Response<proto::BatchResponse>, Status> {
        let _ = r;
        unimplemented()
    }
    async fn move_test_case(
        &self,
        r: Request<proto::MoveTestCaseRequest>,
    ) -> Result<Response<proto::MoveTestCaseResponse>, Status> {
        let _ = r;
        unimplemented()
    }
}

// ----- the shipped service with every read on the blocking pool ---------------

/// `LseService` with the point-read RPCs always run on the blocking pool;
/// every other RPC goes to the shipped service.
struct BlockingReads {
    engine: Arc<Engine>,
    inner: stratum::LseService,
}

fn checked(id: u64, what: &str) -> Result<u64, Status> {
    if id == 0 { Err(Status::invalid_argument(format!("{what} must not be 0"))) } else { Ok(id) }
}

impl BlockingReads {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, stratum_io::Error> + Send + 'static,
    ) -> Result<T, Status> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(stratum::status)
    }
}

#[tonic::async_trait]
impl Lse for BlockingReads {
    async fn create_problem(
        &self,
        r: Request<proto::CreateProblemRequest>,
    ) -> Result<Response<proto::CreateProblemResponse>, Status> {
        self.inner.create_problem(r).await
    }
    async fn get_problem_html(
        &self,
        r: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemHtmlResponse>, Status> {
        let id = checked(r.into_inner().problem_id, "problem_id")?;
        let blob = self.blocking(move |engine| engine.document_blob(id)).await?;
        let html = String::from_utf8(blob).map_err(|_| Status::data_loss("blob is not UTF-8"))?;
        Ok(Response::new(proto::GetProblemHtmlResponse { html, ..Default::default() }))
    }
    async fn get_problem_meta(
        &self,
        r: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemMetaResponse>, Status> {
        let id = checked(r.into_inner().problem_id, "problem_id")?;
        let columns = self.blocking(move |engine| engine.document_columns(id)).await?;
        Ok(Response::new(proto::GetProblemMetaResponse { columns, ..Default::default() }))
    }
    async fn update_problem_html(
        &self,
        r: Request<proto::UpdateProblemHtmlRequest>,
    ) -> Result<Response<proto::UpdateProblemHtmlResponse>, Status> {
        self.inner.update_problem_html(r).await
    }
    async fn update_problem_column(
        &self,
        r: Request<proto::UpdateProblemColumnRequest>,
    ) -> Result<Response<proto::UpdateProblemColumnResponse>, Status> {
        self.inner.update_problem_column(r).await
    }
    async fn delete_problem(
        &self,
        r: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::DeleteProblemResponse>, Status> {
        self.inner.delete_problem(r).await
    }
    async fn list_problems(
        &self,
        r: Request<proto::ListProblemsRequest>,
    ) -> Result<Response<proto::ListProblemsResponse>, Status> {
        self.inner.list_problems(r).await
    }
    async fn add_test_case(
        &self,
        r: Request<proto::AddTestCaseRequest>,
    ) -> Result<Response<proto::AddTestCaseResponse>, Status> {
        self.inner.add_test_case(r).await
    }
    async fn get_test_case(
        &self,
        r: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetTestCaseResponse>, Status> {
        let r = r.into_inner();
        let (doc, input) = (checked(r.problem_id, "problem_id")?, checked(r.test_case_id, "test_case_id")?);
        let value = self.blocking(move |engine| engine.input(doc, input)).await?;
        Ok(Response::new(proto::GetTestCaseResponse {
            test_case: Some(proto::TestCase { test_case_id: input, value: Some(wire(&value)) }),
            ..Default::default()
        }))
    }
    async fn get_all_test_cases(
        &self,
        r: Request<proto::GetAllTestCasesRequest>,
    ) -> Result<Response<proto::GetAllTestCasesResponse>, Status> {
        self.inner.get_all_test_cases(r).await
    }
    async fn update_test_case(
        &self,
        r: Request<proto::UpdateTestCaseRequest>,
    ) -> Result<Response<proto::UpdateTestCaseResponse>, Status> {
        self.inner.update_test_case(r).await
    }
    async fn delete_test_case(
        &self,
        r: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteTestCaseResponse>, Status> {
        self.inner.delete_test_case(r).await
    }
    async fn set_expected_output(
        &self,
        r: Request<proto::SetExpectedOutputRequest>,
    ) -> Result<Response<proto::SetExpectedOutputResponse>, Status> {
        self.inner.set_expected_output(r).await
    }
    async fn get_expected_output(
        &self,
        r: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetExpectedOutputResponse>, Status> {
        let r = r.into_inner();
        let (doc, input) = (checked(r.problem_id, "problem_id")?, checked(r.test_case_id, "test_case_id")?);
        let value = self.blocking(move |engine| engine.output(doc, input)).await?;
        Ok(Response::new(proto::GetExpectedOutputResponse {
            test_case_id: input,
            value: Some(wire(&value)),
            ..Default::default()
        }))
    }
    async fn update_expected_output(
        &self,
        r: Request<proto::UpdateExpectedOutputRequest>,
    ) -> Result<Response<proto::UpdateExpectedOutputResponse>, Status> {
        self.inner.update_expected_output(r).await
    }
    async fn delete_expected_output(
        &self,
        r: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteExpectedOutputResponse>, Status> {
        self.inner.delete_expected_output(r).await
    }
    async fn get_stats(&self, r: Request<proto::GetStatsRequest>) -> Result<Response<proto::GetStatsResponse>, Status> {
        self.inner.get_stats(r).await
    }
    async fn flush(&self, r: Request<proto::FlushRequest>) -> Result<Response<proto::FlushResponse>, Status> {
        self.inner.flush(r).await
    }
    async fn compact_now(
        &self,
        r: Request<proto::CompactNowRequest>,
    ) -> Result<Response<proto::CompactNowResponse>, Status> {
        self.inner.compact_now(r).await
    }

    type GetProblemStreamStream = <stratum::LseService as Lse>::GetProblemStreamStream;
    async fn import_problem(
        &self,
        r: Request<proto::ImportProblemRequest>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        self.inner.import_problem(r).await
    }
    async fn import_problem_stream(
        &self,
        r: Request<tonic::Streaming<proto::ImportProblemRequest>>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        self.inner.import_problem_stream(r).await
    }
    async fn get_problem(
        &self,
        r: Request<proto::GetProblemRequest>,
    ) -> Result<Response<proto::GetProblemResponse>, Status> {
        self.inner.get_problem(r).await
    }
    async fn get_problem_stream(
        &self,
        r: Request<proto::GetProblemRequest>,
    ) -> Result<Response<Self::GetProblemStreamStream>, Status> {
        self.inner.get_problem_stream(r).await
    }
    async fn replace_test_cases(
        &self,
        r: Request<proto::ReplaceTestCasesRequest>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        self.inner.replace_test_cases(r).await
    }
    async fn replace_test_cases_stream(
        &self,
        r: Request<tonic::Streaming<proto::ReplaceTestCasesRequest>>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        self.inner.replace_test_cases_stream(r).await
    }
    async fn batch(&self, r: Request<proto::BatchRequest>) -> Result<Response<proto::BatchResponse>, Status> {
        self.inner.batch(r).await
    }
    async fn move_test_case(
        &self,
        r: Request<proto::MoveTestCaseRequest>,
    ) -> Result<Response<proto::MoveTestCaseResponse>, Status> {
        self.inner.move_test_case(r).await
    }
}

// ----- servers ----------------------------------------------------------------

/// Serves `service` on 127.0.0.1, `TCP_NODELAY` on the accepted
/// connections (as the shipped server sets it).
fn start_service<S: Lse>(name: &str, service: LseServer<S>) -> Running {
    Running::start(name, move |ready, stopped| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ready.send(listener.local_addr().expect("addr")).expect("ready");
        let shutdown = async {
            let _ = stopped.await;
        };
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await.expect("server");
    })
}

/// The shipped service over its own copy of the data, with every point
/// read on the blocking pool.
fn start_stratum_blocking_reads(dir: &std::path::Path) -> Running {
    let config = stratum_config(dir);
    let engine = Arc::new(Engine::open(dir, config.engine_options().expect("options")).expect("open"));
    let inner = stratum::LseService::new(engine.clone());
    let service = LseServer::new(BlockingReads { engine, inner })
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    start_service("stratum-blocking-reads", service)
}

// ----- the client ---------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mix {
    Read,
    ReadHeavy,
    WriteHeavy,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Read => "read (GetProblemHtml)",
            Mix::ReadHeavy => "read-heavy 90/10",
            Mix::WriteHeavy => "write-heavy 20/80",
        }
    }
}

/// What the client reads and writes: the preloaded documents and pools of
/// payloads.
struct Work {
    docs: Vec<Stored>,
    blobs: Vec<String>,
    values: Vec<proto::Value>,
    columns: stratum_io::Columns,
}

async fn one_call(client: &mut LseClient<Channel>, mix: Mix, work: &Work, rng: &mut Rng) -> Result<(), Status> {
    let d = rng.pick(&work.docs);
    let problem_id = d.id;
    let test_case_id = *rng.pick(&d.inputs);
    let value = || Some(rng_value(work, test_case_id));
    let roll = rng.below(100);
    let op = match mix {
        Mix::Read => 0,
        Mix::ReadHeavy => match roll {
            0..45 => 0,
            45..60 => 1,
            60..75 => 2,
            75..90 => 3,
            90..95 => 4,
            _ => 5,
        },
        Mix::WriteHeavy => match roll {
            0..10 => 0,
            10..20 => 2,
            20..50 => 4,
            50..80 => 6,
            80..90 => 7,
            _ => 8,
        },
    };
    match op {
        0 => drop(client.get_problem_html(proto::ProblemRef { problem_id, ..Default::default() }).await?),
        1 => drop(client.get_problem_meta(proto::ProblemRef { problem_id, ..Default::default() }).await?),
        2 => drop(client.get_test_case(proto::TestCaseRef { problem_id, test_case_id, ..Default::default() }).await?),
        3 => drop(
            client.get_expected_output(proto::TestCaseRef { problem_id, test_case_id, ..Default::default() }).await?,
        ),
        4 => drop(
            client
                .add_test_case(proto::AddTestCaseRequest { problem_id, value: value(), ..Default::default() })
                .await?,
        ),
        5 => drop(
            client
                .update_test_case(proto::UpdateTestCaseRequest {
                    problem_id,
                    test_case_id,
                    value: value(),
                    ..Default::default()
                })
                .await?,
        ),
        6 => drop(
            client
                .set_expected_output(proto::SetExpectedOutputRequest {
                    problem_id,
                    test_case_id,
                    value: value(),
                    ..Default::default()
                })
                .await?,
        ),
        7 => drop(
            client
                .update_problem_html(proto::UpdateProblemHtmlRequest {
                    problem_id,
                    html: work.blobs[rng.below(work.blobs.len())].clone(),
                    ..Default::default()
                })
                .await?,
        ),
        _ => drop(
            client
                .create_problem(proto::CreateProblemRequest {
                    html: work.blobs[rng.below(work.blobs.len())].clone(),
                    columns: work.columns.clone(),
                })
                .await?,
        ),
    }
    Ok(())
}

fn rng_value(work: &Work, seed: u64) -> proto::Value {
    work.values[seed as usize % work.values.len()].clone()
}

struct Cell {
    measured: Measured,
    errors: u64,
}

/// Runs `concurrency` loops of calls for warm-up + `span`, recording the
/// calls that start after the warm-up.
async fn run_cell(addr: SocketAddr, mix: Mix, concurrency: usize, work: Arc<Work>, span: Duration) -> Cell {
    let mut channels = Vec::new();
    for _ in 0..connections(concurrency) {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("connect");
        channels.push(channel);
    }
    let warmup = if common::test_mode() { Duration::from_millis(20) } else { Duration::from_millis(500) };
    let started = Instant::now();
    let measure_from = started + warmup;
    let until = measure_from + span;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let mut client = LseClient::new(channels[t % channels.len()].clone());
        let work = work.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(1000 + t as u64);
            let mut h: Histogram<u64> = common::histogram();
            loop {
                let at = Instant::now();
                if at >= until {
                    break;
                }
                let result = one_call(&mut client, mix, &work, &mut rng).await;
                if result.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if at >= measure_from {
                    h.record(at.elapsed().as_nanos().max(1) as u64).expect("record");
                }
            }
            h
        }));
    }
    let mut all = common::histogram();
    for task in tasks {
        all.add(task.await.expect("client task")).expect("merge");
    }
    let measured = Measured::from_histogram(&all, until.saturating_duration_since(measure_from).max(span));
    Cell { measured, errors: errors.load(Ordering::Relaxed) }
}

fn main() {
    let test = common::test_mode();
    let docs = if test { 20 } else { common::env_u64("STRATUM_DOCS", 2000) as usize };
    let span = Duration::from_millis(if test { 30 } else { common::env_u64("STRATUM_CELL_MS", 2500) });
    println!("machine: {}", common::machine());
    let started = Instant::now();

    // Preload through the engine, then serve the directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let stored: Vec<Stored> = {
        let engine = Engine::open(dir.path(), Options { sync: SyncPolicy::None, ..Options::default() }).expect("open");
        let mut rng = Rng::new(31);
        let stored = (0..docs).map(|n| common::store(&engine, &common::doc_spec(&mut rng, n as u64, None))).collect();
        engine.close().expect("close");
        stored
    };
    let pool = Pool::new(32);
    let blobs: Vec<String> = pool.blobs.iter().map(|b| String::from_utf8(b.clone()).expect("html is utf-8")).collect();
    let values: Vec<proto::Value> = pool.values.iter().map(wire).collect();
    let work =
        Arc::new(Work { docs: stored, blobs: blobs.clone(), values: values.clone(), columns: pool.columns[0].clone() });

    // A copy of the data for the other Stratum server (one engine per directory).
    let copy_data = || {
        let copy = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(dir.path()).expect("read_dir").flatten() {
            let name = entry.file_name();
            if name != "LOCK" && entry.metadata().map(|m| m.is_file()).unwrap_or(false) {
                std::fs::copy(entry.path(), copy.path().join(&name)).expect("copy");
            }
        }
        copy
    };
    let copy = copy_data();

    let ceiling = |ids| Ceiling { blobs: blobs.clone(), values: values.clone(), columns: pool.columns[0].clone(), ids };
    let servers: Vec<(&str, Running)> = vec![
        ("stratum", start_stratum(dir.path())),
        ("stratum-blocking-reads", start_stratum_blocking_reads(copy.path())),
        ("ceiling", start_service("ceiling", LseServer::new(ceiling(AtomicU64::new(1))))),
    ];
    println!(
        "servers: {}; sync always, {docs} documents preloaded; {} per cell after a 500 ms warm-up\n",
        servers.iter().map(|(n, r)| format!("{n} on {}", r.addr)).collect::<Vec<_>>().join(", "),
        common::dur(span)
    );

    let client_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("client runtime");
    let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
    let ceiling_at = names.iter().position(|&n| n == "ceiling").expect("a ceiling");
    let ratio_names: Vec<String> = names[..ceiling_at].iter().map(|n| format!("{n} / ceiling")).collect();
    let mut header = vec!["mix", "concurrency"];
    header.extend(names.iter().copied());
    header.extend(ratio_names.iter().map(String::as_str));
    let mut qps = Table::new(&header);
    let mut header = vec!["mix", "concurrency"];
    header.extend(names.iter().copied());
    let mut lat = Table::new(&header);
    let mut errors = 0;
    let mut target = None;
    for mix in [Mix::Read, Mix::ReadHeavy, Mix::WriteHeavy] {
        for concurrency in CONCURRENCY {
            let cells: Vec<Cell> = servers
                .iter()
                .map(|(_, server)| client_rt.block_on(run_cell(server.addr, mix, concurrency, work.clone(), span)))
                .collect();
            errors += cells.iter().map(|c| c.errors).sum::<u64>();
            let q: Vec<f64> = cells.iter().map(|c| c.measured.per_sec()).collect();
            if mix == Mix::Read && concurrency == 64 {
                target = Some(q.clone());
            }
            println!(
                "{} c={concurrency}: {}",
                mix.name(),
                servers.iter().zip(&q).map(|((n, _), q)| format!("{n} {q:.0}")).collect::<Vec<_>>().join(", ")
            );
            let mut row = vec![mix.name().to_string(), concurrency.to_string()];
            row.extend(q.iter().map(|q| format!("{q:.0}")));
            row.extend(q[..ceiling_at].iter().map(|q_| format!("{:.2}x", q_ / q[ceiling_at])));
            qps.row(row);
            let mut row = vec![mix.name().to_string(), concurrency.to_string()];
            row.extend(
                cells.iter().map(|c| format!("{} / {}", common::dur(c.measured.p50), common::dur(c.measured.p99))),
            );
            lat.row(row);
        }
    }
    drop(client_rt);
    drop(servers);

    println!("\n## Server: QPS and latency, Stratum vs a trivial in-memory tonic service\n");
    println!("machine: {}\n", common::machine());
    println!("### Queries per second\n");
    qps.print();
    println!("### Latency p50 / p99\n");
    lat.print();
    println!("failed calls: {errors}\n");
    if let Some(q) = target {
        println!(
            "gRPC reads (GetProblemHtml) at concurrency 64 (target >= 0.8x the ceiling, {:.0} QPS): {}.",
            q[ceiling_at],
            names[..ceiling_at]
                .iter()
                .zip(&q)
                .map(|(n, q_)| format!("{n} {q_:.0} QPS = {:.2}x", q_ / q[ceiling_at]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("loadgen done in {}", common::dur(started.elapsed()));
}
