//! The `lse.Lse` gRPC service: each RPC checks its request, runs one engine
//! call and builds the response.
//!
//! Engine calls that may wait (for an fsync, the disk or the index lock)
//! never run on the async runtime's threads: they go to the blocking pool.
//! Point reads first try the engine's non-blocking variant
//! ([`Engine::document_blob_now`] and the like), which answers from memory
//! or gives up at once; only when it gives up does the read hop to the
//! blocking pool. The hop costs more than a cached read itself. An engine
//! call whose deadline ([`admission::deadline`]) passed before it got a
//! thread is dropped unrun.

use std::sync::Arc;
use std::time::Instant;

use stratum_io::{Committed, Engine, Error, Expect, Id, Op, Ref, Versioned};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{self, Failed, id, value_to_wire};
use crate::problems::{self, Naming, OwnedOp, Upload};
use crate::proto::{self, batch_op, lse_server::Lse};
use crate::{admission, upload};

/// Ids per ListProblems page when the request does not say.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// The most ids one ListProblems page returns.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// The most value bytes one GetProblemStream message carries (a test case
/// larger than that goes alone).
pub const STREAM_PAGE_BYTES: usize = 1 << 20;

/// The most value bytes one page of GetAllTestCases carries by default.
pub const DEFAULT_PAGE_BYTES: usize = 4 << 20;

/// The service, holding the engine it serves.
#[derive(Clone, Debug)]
pub struct LseService {
    engine: Arc<Engine>,
    /// Value bytes per GetAllTestCases page (half the message limit).
    page_bytes: usize,
}

impl LseService {
    pub fn new(engine: Arc<Engine>) -> Self {
        LseService { engine, page_bytes: DEFAULT_PAGE_BYTES }
    }

    /// Sets how many value bytes a GetAllTestCases page may carry.
    pub fn with_page_bytes(mut self, page_bytes: usize) -> Self {
        self.page_bytes = page_bytes.max(1);
        self
    }

    /// Runs `f` on the blocking pool and maps its error to a status. A
    /// call whose deadline passed while it waited for a thread is not run:
    /// its client was already answered DEADLINE_EXCEEDED.
    async fn call<T, F>(&self, f: F) -> Result<Response<T>, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, Failed> + Send + 'static,
    {
        let engine = self.engine.clone();
        let deadline = admission::deadline();
        // Released when the engine call ends, not when its client is
        // answered (see `admission::place`).
        let place = admission::place();
        let run = move || {
            let _place = place;
            match deadline {
                Some(deadline) if Instant::now() >= deadline => None,
                _ => Some(f(&engine)),
            }
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Some(result)) => result.map(Response::new).map_err(Failed::into_status),
            Ok(None) => Err(Status::deadline_exceeded("deadline exceeded before the engine call started")),
            Err(e) => Err(convert::task_failed(e)),
        }
    }

    /// Answers with `now` if it can answer without waiting, and otherwise
    /// runs `f` on the blocking pool.
    async fn read<T, F>(&self, now: impl FnOnce(&Engine) -> Option<Result<T, Error>>, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, Error> + Send + 'static,
    {
        match now(&self.engine) {
            Some(result) => result.map_err(convert::status),
            None => Ok(self.call(|engine| Ok(f(engine)?)).await?.into_inner()),
        }
    }
}

impl LseService {
    /// Writes one operation (with its expected version, if any) and
    /// returns the version of `problem` after it (0 if it is gone).
    async fn write_one(&self, op: OwnedOp, expected_version: Option<u64>) -> Result<Committed, Status> {
        Ok(self.call(move |engine| Ok(engine.write(op.op(), expected_version)?)).await?.into_inner())
    }

    /// The single write request `op`, written; the problem's version after.
    async fn write_request(&self, op: batch_op::Op) -> Result<u64, Status> {
        let (op, expected) = problems::from_request(op, Naming::IDS)?;
        let problem = match op.op().named_document() {
            Some(Ref::Id(problem)) => Some(problem),
            _ => None,
        };
        let committed = self.write_one(op, expected).await?;
        Ok(problem.and_then(|p| committed.version(p)).unwrap_or(0))
    }
}

/// Refuses a read whose problem is not at the version the caller expects.
fn at_version<T>(problem: Id, expected: Option<u64>, read: Versioned<T>) -> Result<Versioned<T>, Status> {
    match expected {
        Some(expected) if expected != read.version => {
            Err(convert::status(Error::VersionMismatch { document: problem, expected, current: read.version }))
        }
        _ => Ok(read),
    }
}

/// Server-streamed responses: fed by a blocking task through a channel of
/// a few messages, so a slow client holds back the reader, not memory.
type ResponseStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Lse for LseService {
    async fn create_problem(
        &self,
        request: Request<proto::CreateProblemRequest>,
    ) -> Result<Response<proto::CreateProblemResponse>, Status> {
        let proto::CreateProblemRequest { html, columns } = request.into_inner();
        let committed = self.write_one(OwnedOp::Create { html, columns }, None).await?;
        let problem_id = committed.created.first().copied().flatten().unwrap_or(0);
        let version = committed.version(problem_id).unwrap_or(0);
        Ok(Response::new(proto::CreateProblemResponse { problem_id, version }))
    }

    async fn get_problem_html(
        &self,
        request: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemHtmlResponse>, Status> {
        let proto::ProblemRef { problem_id, expected_version } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let blob = self
            .read(|engine| engine.document_blob_now(problem), move |engine| engine.document_blob_versioned(problem))
            .await?;
        let Versioned { value, version } = at_version(problem, expected_version, blob)?;
        Ok(Response::new(proto::GetProblemHtmlResponse { html: convert::html(problem, value)?, version }))
    }

    async fn get_problem_meta(
        &self,
        request: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemMetaResponse>, Status> {
        let proto::ProblemRef { problem_id, expected_version } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let columns = self
            .read(
                |engine| engine.document_columns_now(problem),
                move |engine| engine.document_columns_versioned(problem),
            )
            .await?;
        let Versioned { value: columns, version } = at_version(problem, expected_version, columns)?;
        Ok(Response::new(proto::GetProblemMetaResponse { columns, version }))
    }

    async fn update_problem_html(
        &self,
        request: Request<proto::UpdateProblemHtmlRequest>,
    ) -> Result<Response<proto::UpdateProblemHtmlResponse>, Status> {
        let version = self.write_request(batch_op::Op::UpdateProblemHtml(request.into_inner())).await?;
        Ok(Response::new(proto::UpdateProblemHtmlResponse { version }))
    }

    async fn update_problem_column(
        &self,
        request: Request<proto::UpdateProblemColumnRequest>,
    ) -> Result<Response<proto::UpdateProblemColumnResponse>, Status> {
        let version = self.write_request(batch_op::Op::UpdateProblemColumn(request.into_inner())).await?;
        Ok(Response::new(proto::UpdateProblemColumnResponse { version }))
    }

    async fn delete_problem(
        &self,
        request: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::DeleteProblemResponse>, Status> {
        self.write_request(batch_op::Op::DeleteProblem(request.into_inner())).await?;
        Ok(Response::new(proto::DeleteProblemResponse {}))
    }

    async fn list_problems(
        &self,
        request: Request<proto::ListProblemsRequest>,
    ) -> Result<Response<proto::ListProblemsResponse>, Status> {
        let proto::ListProblemsRequest { page_size, page_token } = request.into_inner();
        let after = convert::page_token(&page_token)?;
        let size = match page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        self.call(move |engine| {
            // One id more than the page tells whether another page follows.
            let mut problem_ids = engine.document_ids_after(after, size + 1);
            let next_page_token = if problem_ids.len() > size {
                problem_ids.truncate(size);
                problem_ids.last().map(u64::to_string).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(proto::ListProblemsResponse { problem_ids, next_page_token })
        })
        .await
    }

    async fn add_test_case(
        &self,
        request: Request<proto::AddTestCaseRequest>,
    ) -> Result<Response<proto::AddTestCaseResponse>, Status> {
        let request = request.into_inner();
        let problem = request.problem_id;
        let (op, expected) = problems::from_request(batch_op::Op::AddTestCase(request), Naming::IDS)?;
        let committed = self.write_one(op, expected).await?;
        let test_case_id = committed.created.first().copied().flatten().unwrap_or(0);
        let version = committed.version(problem).unwrap_or(0);
        Ok(Response::new(proto::AddTestCaseResponse { test_case_id, version }))
    }

    async fn get_test_case(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetTestCaseResponse>, Status> {
        let proto::TestCaseRef { problem_id, test_case_id, expected_version } = request.into_inner();
        let (problem, test_case) = ids(problem_id, test_case_id)?;
        let value = self
            .read(
                |engine| engine.input_now(problem, test_case),
                move |engine| engine.input_versioned(problem, test_case),
            )
            .await?;
        let Versioned { value, version } = at_version(problem, expected_version, value)?;
        Ok(Response::new(proto::GetTestCaseResponse {
            test_case: Some(proto::TestCase { test_case_id: test_case, value: Some(value_to_wire(value)) }),
            version,
        }))
    }

    async fn get_all_test_cases(
        &self,
        request: Request<proto::GetAllTestCasesRequest>,
    ) -> Result<Response<proto::GetAllTestCasesResponse>, Status> {
        let proto::GetAllTestCasesRequest { problem_id, page_size, page_token, expected_version } =
            request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let after = convert::page_token(&page_token)?;
        let page_bytes = self.page_bytes;
        self.call(move |engine| {
            if page_size == 0 {
                let page = engine.inputs_after(problem, after, usize::MAX)?;
                let Versioned { value, version } = at_version(problem, expected_version, page)?;
                let test_cases = value.into_iter().map(test_case).collect();
                return Ok(proto::GetAllTestCasesResponse { test_cases, next_page_token: String::new(), version });
            }
            // One more than the page tells whether another page follows.
            let size = (page_size as usize).min(MAX_PAGE_SIZE);
            let page = engine.inputs_after(problem, after, size + 1)?;
            let Versioned { value: mut inputs, version } = at_version(problem, expected_version, page)?;
            let mut bytes = 0;
            let fits = inputs
                .iter()
                .take(size)
                .take_while(|(_, value)| {
                    bytes += value.encoded_len();
                    bytes <= page_bytes
                })
                .count()
                .max(1);
            let more = inputs.len() > fits;
            inputs.truncate(fits);
            let next_page_token = match inputs.last() {
                Some((last, _)) if more => last.to_string(),
                _ => String::new(),
            };
            Ok(proto::GetAllTestCasesResponse {
                test_cases: inputs.into_iter().map(test_case).collect(),
                next_page_token,
                version,
            })
        })
        .await
    }

    async fn update_test_case(
        &self,
        request: Request<proto::UpdateTestCaseRequest>,
    ) -> Result<Response<proto::UpdateTestCaseResponse>, Status> {
        let version = self.write_request(batch_op::Op::UpdateTestCase(request.into_inner())).await?;
        Ok(Response::new(proto::UpdateTestCaseResponse { version }))
    }

    async fn delete_test_case(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteTestCaseResponse>, Status> {
        let version = self.write_request(batch_op::Op::DeleteTestCase(request.into_inner())).await?;
        Ok(Response::new(proto::DeleteTestCaseResponse { version }))
    }

    async fn set_expected_output(
        &self,
        request: Request<proto::SetExpectedOutputRequest>,
    ) -> Result<Response<proto::SetExpectedOutputResponse>, Status> {
        let version = self.write_request(batch_op::Op::SetExpectedOutput(request.into_inner())).await?;
        Ok(Response::new(proto::SetExpectedOutputResponse { version }))
    }

    async fn get_expected_output(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetExpectedOutputResponse>, Status> {
        let proto::TestCaseRef { problem_id, test_case_id, expected_version } = request.into_inner();
        let (problem, test_case) = ids(problem_id, test_case_id)?;
        let value = self
            .read(
                |engine| engine.output_now(problem, test_case),
                move |engine| engine.output_versioned(problem, test_case),
            )
            .await?;
        let Versioned { value, version } = at_version(problem, expected_version, value)?;
        Ok(Response::new(proto::GetExpectedOutputResponse {
            test_case_id: test_case,
            value: Some(value_to_wire(value)),
            version,
        }))
    }

    async fn update_expected_output(
        &self,
        request: Request<proto::UpdateExpectedOutputRequest>,
    ) -> Result<Response<proto::UpdateExpectedOutputResponse>, Status> {
        let version = self.write_request(batch_op::Op::UpdateExpectedOutput(request.into_inner())).await?;
        Ok(Response::new(proto::UpdateExpectedOutputResponse { version }))
    }

    async fn delete_expected_output(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteExpectedOutputResponse>, Status> {
        let version = self.write_request(batch_op::Op::DeleteExpectedOutput(request.into_inner())).await?;
        Ok(Response::new(proto::DeleteExpectedOutputResponse { version }))
    }

    async fn get_stats(&self, _: Request<proto::GetStatsRequest>) -> Result<Response<proto::GetStatsResponse>, Status> {
        // Stats take the writer lock, which a segment rotation holds across
        // an fsync: off the async threads.
        let stats = self.call(|engine| Ok(engine.stats())).await?.into_inner();
        Ok(Response::new(proto::GetStatsResponse {
            problems_in_index: stats.documents,
            active_segment_bytes: stats.active_segment_bytes,
            segment_count: stats.segments,
            test_cases: stats.inputs,
            expected_outputs: stats.outputs,
            total_bytes: stats.total_bytes,
            live_bytes: stats.live_bytes,
            garbage_bytes: stats.garbage_bytes,
            records: stats.records,
            fsyncs: stats.fsyncs,
            sync_policy: self.engine.options().sync.to_string(),
            write_error: stats.poisoned.unwrap_or_default(),
            compactions: stats.compactions,
            last_compaction_bytes_in: stats.last_compaction.map_or(0, |c| c.bytes_in),
            last_compaction_bytes_out: stats.last_compaction.map_or(0, |c| c.bytes_out),
        }))
    }

    async fn flush(&self, _: Request<proto::FlushRequest>) -> Result<Response<proto::FlushResponse>, Status> {
        self.call(|engine| Ok(engine.flush()?)).await?;
        Ok(Response::new(proto::FlushResponse {}))
    }

    async fn compact_now(
        &self,
        _: Request<proto::CompactNowRequest>,
    ) -> Result<Response<proto::CompactNowResponse>, Status> {
        self.call(|engine| {
            let report = engine.compact()?;
            Ok(proto::CompactNowResponse {
                segments_in: report.segments_in,
                bytes_in: report.bytes_in,
                bytes_out: report.bytes_out,
                records_dropped: report.records_dropped,
            })
        })
        .await
    }

    async fn import_problem(
        &self,
        request: Request<proto::ImportProblemRequest>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        let proto::ImportProblemRequest { html, columns, test_cases, .. } = request.into_inner();
        let test_cases = problems::new_test_cases(test_cases)?;
        self.import(html, columns, test_cases).await
    }

    async fn import_problem_stream(
        &self,
        request: Request<Streaming<proto::ImportProblemRequest>>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        let watched = upload::Upload::of(&request);
        let mut stream = request.into_inner();
        let mut upload = Upload::default();
        let limits = self.engine.options().limits;
        // A broken stream ends here with its error, or (a reset) looks
        // ended: either way nothing is written.
        while let Some(message) = stream.message().await? {
            upload.mark_last(message.last)?;
            upload.add(&message.html, message.columns, message.test_cases, &limits)?;
        }
        upload::Upload::check_whole(watched.as_ref())?;
        upload.check_finished()?;
        self.import(upload.html, upload.columns, upload.test_cases).await
    }

    async fn get_problem(
        &self,
        request: Request<proto::GetProblemRequest>,
    ) -> Result<Response<proto::GetProblemResponse>, Status> {
        let proto::GetProblemRequest { problem_id, expected_version } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let view = self.read(|engine| engine.document_now(problem), move |engine| engine.document(problem)).await?;
        at_version(problem, expected_version, Versioned { value: (), version: view.version })?;
        Ok(Response::new(proto::GetProblemResponse {
            problem_id: problem,
            version: view.version,
            html: convert::html(problem, view.blob)?,
            columns: view.columns,
            test_cases: view.inputs.into_iter().map(problems::problem_test_case).collect(),
        }))
    }

    type GetProblemStreamStream = ResponseStream<proto::GetProblemResponse>;

    async fn get_problem_stream(
        &self,
        request: Request<proto::GetProblemRequest>,
    ) -> Result<Response<Self::GetProblemStreamStream>, Status> {
        let proto::GetProblemRequest { problem_id, expected_version } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        // The snapshot is taken before the call is answered, so a missing
        // problem or a stale version is the call's status.
        let snapshot = self.call(move |engine| Ok(engine.document_snapshot(problem)?)).await?.into_inner();
        at_version(problem, expected_version, Versioned { value: (), version: snapshot.version })?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        // Small messages, so that a client with gRPC's default 4 MiB
        // receive limit can read any problem whose test cases fit it.
        let page_bytes = self.page_bytes.min(STREAM_PAGE_BYTES);
        let place = admission::place();
        tokio::task::spawn_blocking(move || {
            let _place = place;
            problems::stream_problem(&snapshot, page_bytes, |message| tx.blocking_send(message).is_ok());
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn replace_test_cases(
        &self,
        request: Request<proto::ReplaceTestCasesRequest>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        let proto::ReplaceTestCasesRequest { problem_id, test_cases, expected_version, .. } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let test_cases = problems::new_test_cases(test_cases)?;
        self.replace(problem, test_cases, expected_version).await
    }

    async fn replace_test_cases_stream(
        &self,
        request: Request<Streaming<proto::ReplaceTestCasesRequest>>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        let watched = upload::Upload::of(&request);
        let mut stream = request.into_inner();
        let mut upload = Upload::default();
        let limits = self.engine.options().limits;
        let (mut problem, mut expected) = (0, None);
        let mut first = true;
        while let Some(message) = stream.message().await? {
            if first {
                (problem, expected) = (message.problem_id, message.expected_version);
                first = false;
            } else if (message.problem_id != 0 && message.problem_id != problem)
                || (message.expected_version.is_some() && message.expected_version != expected)
            {
                return Err(Status::invalid_argument(
                    "a later message of the stream names another problem or expected_version than the first",
                ));
            }
            upload.mark_last(message.last)?;
            upload.add("", Default::default(), message.test_cases, &limits)?;
        }
        upload::Upload::check_whole(watched.as_ref())?;
        upload.check_finished()?;
        let problem = id("problem_id", problem)?;
        self.replace(problem, upload.test_cases, expected).await
    }

    async fn batch(&self, request: Request<proto::BatchRequest>) -> Result<Response<proto::BatchResponse>, Status> {
        let proto::BatchRequest { ops, expected_versions } = request.into_inner();
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(at, op)| {
                problems::batch_op(op).map_err(|e| Status::invalid_argument(format!("op {at}: {}", e.message())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expect = expected_versions
            .into_iter()
            .map(|check| {
                Ok(Expect { document: id("expected_versions.problem_id", check.problem_id)?, version: check.version })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        self.call(move |engine| {
            let ops: Vec<Op<'_>> = ops.iter().map(OwnedOp::op).collect();
            let committed = engine.batch(&ops, &expect)?;
            Ok(proto::BatchResponse {
                created_ids: committed.created.iter().map(|id| id.unwrap_or(0)).collect(),
                versions: committed
                    .versions
                    .iter()
                    .map(|&(problem_id, version)| proto::VersionCheck { problem_id, version })
                    .collect(),
            })
        })
        .await
    }

    async fn move_test_case(
        &self,
        request: Request<proto::MoveTestCaseRequest>,
    ) -> Result<Response<proto::MoveTestCaseResponse>, Status> {
        let version = self.write_request(batch_op::Op::MoveTestCase(request.into_inner())).await?;
        Ok(Response::new(proto::MoveTestCaseResponse { version }))
    }
}

impl LseService {
    async fn import(
        &self,
        html: String,
        columns: stratum_io::Columns,
        test_cases: Vec<(stratum_io::Value, Option<stratum_io::Value>)>,
    ) -> Result<Response<proto::ImportProblemResponse>, Status> {
        self.call(move |engine| {
            let committed = engine.import_document(html.as_bytes(), &columns, &test_cases)?;
            let problem_id = committed.created.first().copied().flatten().unwrap_or(0);
            Ok(proto::ImportProblemResponse {
                problem_id,
                version: committed.version(problem_id).unwrap_or(0),
                test_case_ids: problems::created_ids(&committed.created[1..]),
            })
        })
        .await
    }

    async fn replace(
        &self,
        problem: Id,
        test_cases: Vec<(stratum_io::Value, Option<stratum_io::Value>)>,
        expected_version: Option<u64>,
    ) -> Result<Response<proto::ReplaceTestCasesResponse>, Status> {
        self.call(move |engine| {
            let committed = engine.replace_inputs(problem, &test_cases, expected_version)?;
            Ok(proto::ReplaceTestCasesResponse {
                version: committed.version(problem).unwrap_or(0),
                test_case_ids: problems::created_ids(&committed.created[1..]),
            })
        })
        .await
    }
}

fn test_case((test_case_id, value): (u64, stratum_io::Value)) -> proto::TestCase {
    proto::TestCase { test_case_id, value: Some(value_to_wire(value)) }
}

fn ids(problem: u64, test_case: u64) -> Result<(u64, u64), Status> {
    Ok((id("problem_id", problem)?, id("test_case_id", test_case)?))
}
