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

use stratum_io::{Engine, Error};
use tonic::{Request, Response, Status};

use crate::admission;
use crate::convert::{self, id, value_from_wire, value_to_wire};
use crate::proto::{self, lse_server::Lse};

/// Ids per ListProblems page when the request does not say.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// The most ids one ListProblems page returns.
pub const MAX_PAGE_SIZE: usize = 10_000;

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
        F: FnOnce(&Engine) -> Result<T, Error> + Send + 'static,
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
            Ok(Some(result)) => result.map(Response::new).map_err(convert::status),
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
            None => Ok(self.call(f).await?.into_inner()),
        }
    }
}

#[tonic::async_trait]
impl Lse for LseService {
    async fn create_problem(
        &self,
        request: Request<proto::CreateProblemRequest>,
    ) -> Result<Response<proto::CreateProblemResponse>, Status> {
        let proto::CreateProblemRequest { html, columns } = request.into_inner();
        self.call(move |engine| {
            let problem_id = engine.create_document(html.as_bytes(), columns)?;
            Ok(proto::CreateProblemResponse { problem_id })
        })
        .await
    }

    async fn get_problem_html(
        &self,
        request: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemHtmlResponse>, Status> {
        let problem = id("problem_id", request.into_inner().problem_id)?;
        let blob =
            self.read(|engine| engine.document_blob_now(problem), move |engine| engine.document_blob(problem)).await?;
        Ok(Response::new(proto::GetProblemHtmlResponse { html: convert::html(problem, blob)? }))
    }

    async fn get_problem_meta(
        &self,
        request: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::GetProblemMetaResponse>, Status> {
        let problem = id("problem_id", request.into_inner().problem_id)?;
        let columns = self
            .read(|engine| engine.document_columns_now(problem), move |engine| engine.document_columns(problem))
            .await?;
        Ok(Response::new(proto::GetProblemMetaResponse { columns }))
    }

    async fn update_problem_html(
        &self,
        request: Request<proto::UpdateProblemHtmlRequest>,
    ) -> Result<Response<proto::UpdateProblemHtmlResponse>, Status> {
        let proto::UpdateProblemHtmlRequest { problem_id, html } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        self.call(move |engine| engine.update_blob(problem, html.as_bytes())).await?;
        Ok(Response::new(proto::UpdateProblemHtmlResponse {}))
    }

    async fn update_problem_column(
        &self,
        request: Request<proto::UpdateProblemColumnRequest>,
    ) -> Result<Response<proto::UpdateProblemColumnResponse>, Status> {
        let proto::UpdateProblemColumnRequest { problem_id, name, value } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        self.call(move |engine| engine.set_column(problem, &name, &value)).await?;
        Ok(Response::new(proto::UpdateProblemColumnResponse {}))
    }

    async fn delete_problem(
        &self,
        request: Request<proto::ProblemRef>,
    ) -> Result<Response<proto::DeleteProblemResponse>, Status> {
        let problem = id("problem_id", request.into_inner().problem_id)?;
        self.call(move |engine| engine.delete_document(problem)).await?;
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
        let proto::AddTestCaseRequest { problem_id, value } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let value = value_from_wire(value)?;
        self.call(move |engine| {
            let test_case_id = engine.add_input(problem, &value)?;
            Ok(proto::AddTestCaseResponse { test_case_id })
        })
        .await
    }

    async fn get_test_case(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetTestCaseResponse>, Status> {
        let (problem, test_case) = test_case_ref(request.into_inner())?;
        let value = self
            .read(|engine| engine.input_now(problem, test_case), move |engine| engine.input(problem, test_case))
            .await?;
        Ok(Response::new(proto::GetTestCaseResponse {
            test_case: Some(proto::TestCase { test_case_id: test_case, value: Some(value_to_wire(value)) }),
        }))
    }

    async fn get_all_test_cases(
        &self,
        request: Request<proto::GetAllTestCasesRequest>,
    ) -> Result<Response<proto::GetAllTestCasesResponse>, Status> {
        let proto::GetAllTestCasesRequest { problem_id, page_size, page_token } = request.into_inner();
        let problem = id("problem_id", problem_id)?;
        let after = convert::page_token(&page_token)?;
        let page_bytes = self.page_bytes;
        self.call(move |engine| {
            if page_size == 0 {
                let test_cases = engine.inputs_after(problem, after, usize::MAX)?.into_iter().map(test_case).collect();
                return Ok(proto::GetAllTestCasesResponse { test_cases, next_page_token: String::new() });
            }
            // One more than the page tells whether another page follows.
            let size = (page_size as usize).min(MAX_PAGE_SIZE);
            let mut inputs = engine.inputs_after(problem, after, size + 1)?;
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
            })
        })
        .await
    }

    async fn update_test_case(
        &self,
        request: Request<proto::UpdateTestCaseRequest>,
    ) -> Result<Response<proto::UpdateTestCaseResponse>, Status> {
        let proto::UpdateTestCaseRequest { problem_id, test_case_id, value } = request.into_inner();
        let (problem, test_case) = ids(problem_id, test_case_id)?;
        let value = value_from_wire(value)?;
        self.call(move |engine| engine.update_input(problem, test_case, &value)).await?;
        Ok(Response::new(proto::UpdateTestCaseResponse {}))
    }

    async fn delete_test_case(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteTestCaseResponse>, Status> {
        let (problem, test_case) = test_case_ref(request.into_inner())?;
        self.call(move |engine| engine.delete_input(problem, test_case)).await?;
        Ok(Response::new(proto::DeleteTestCaseResponse {}))
    }

    async fn set_expected_output(
        &self,
        request: Request<proto::SetExpectedOutputRequest>,
    ) -> Result<Response<proto::SetExpectedOutputResponse>, Status> {
        let proto::SetExpectedOutputRequest { problem_id, test_case_id, value } = request.into_inner();
        let (problem, test_case) = ids(problem_id, test_case_id)?;
        let value = value_from_wire(value)?;
        self.call(move |engine| engine.set_output(problem, test_case, &value)).await?;
        Ok(Response::new(proto::SetExpectedOutputResponse {}))
    }

    async fn get_expected_output(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::GetExpectedOutputResponse>, Status> {
        let (problem, test_case) = test_case_ref(request.into_inner())?;
        let value = self
            .read(|engine| engine.output_now(problem, test_case), move |engine| engine.output(problem, test_case))
            .await?;
        Ok(Response::new(proto::GetExpectedOutputResponse {
            test_case_id: test_case,
            value: Some(value_to_wire(value)),
        }))
    }

    async fn update_expected_output(
        &self,
        request: Request<proto::UpdateExpectedOutputRequest>,
    ) -> Result<Response<proto::UpdateExpectedOutputResponse>, Status> {
        let proto::UpdateExpectedOutputRequest { problem_id, test_case_id, value } = request.into_inner();
        let (problem, test_case) = ids(problem_id, test_case_id)?;
        let value = value_from_wire(value)?;
        self.call(move |engine| engine.update_output(problem, test_case, &value)).await?;
        Ok(Response::new(proto::UpdateExpectedOutputResponse {}))
    }

    async fn delete_expected_output(
        &self,
        request: Request<proto::TestCaseRef>,
    ) -> Result<Response<proto::DeleteExpectedOutputResponse>, Status> {
        let (problem, test_case) = test_case_ref(request.into_inner())?;
        self.call(move |engine| engine.delete_output(problem, test_case)).await?;
        Ok(Response::new(proto::DeleteExpectedOutputResponse {}))
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
        self.call(|engine| engine.flush()).await?;
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
}

fn test_case((test_case_id, value): (u64, stratum_io::Value)) -> proto::TestCase {
    proto::TestCase { test_case_id, value: Some(value_to_wire(value)) }
}

fn ids(problem: u64, test_case: u64) -> Result<(u64, u64), Status> {
    Ok((id("problem_id", problem)?, id("test_case_id", test_case)?))
}

fn test_case_ref(r: proto::TestCaseRef) -> Result<(u64, u64), Status> {
    ids(r.problem_id, r.test_case_id)
}
