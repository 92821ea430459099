//! Bad input: each request gets the exact status code and a message saying
//! what was wrong, changes nothing (a problem written earlier reads back
//! identically, the record count does not move) and the server keeps
//! serving. Also bad startup flags.

mod server_support;

use server_support::*;
use stratum::proto;
use tempfile::TempDir;
use tonic::Code;

/// A server with one known problem, to check that failed requests leave the
/// store untouched.
struct Fixture {
    _dir: TempDir,
    server: TestServer,
    c: Client,
    problem: u64,
    test_case: u64,
    /// A test case of `problem` without an expected output.
    bare_test_case: u64,
    before: ProblemDump,
    records: u64,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_args(&[]).await
    }

    async fn with_args(args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start(dir.path(), args).await;
        let mut c = server.client().await;
        let problem = create(&mut c, "<h1>Known</h1>", columns(&[("name", "known"), ("level", "3")])).await;
        let test_case = add(&mut c, problem, int_list(vec![1, 2, 3])).await;
        set_output(&mut c, problem, test_case, int(6)).await;
        let bare_test_case = add(&mut c, problem, string("no output")).await;
        let before = dump_problem(&mut c, problem).await;
        let records = stats(&mut c).await.records;
        Fixture { _dir: dir, server, c, problem, test_case, bare_test_case, before, records }
    }

    /// The known problem reads back identically, nothing was written, and
    /// the server still serves (a write and a read on a fresh connection).
    async fn assert_intact(&mut self) {
        assert_eq!(dump_problem(&mut self.c, self.problem).await, self.before, "the known problem changed");
        assert_eq!(stats(&mut self.c).await.records, self.records, "a failed request wrote a record");
        let mut fresh = self.server.client().await;
        let p = create(&mut fresh, "still serving", Columns::new()).await;
        assert_eq!(html(&mut fresh, p).await, "still serving");
        fresh.delete_problem(proto::ProblemRef { problem_id: p, ..Default::default() }).await.unwrap();
        self.records += 2;
    }

    fn tc_ref(&self, problem_id: u64, test_case_id: u64) -> proto::TestCaseRef {
        proto::TestCaseRef { problem_id, test_case_id, ..Default::default() }
    }
}

const UNKNOWN: u64 = 987_654_321;

// ----- not found --------------------------------------------------------------

#[tokio::test]
async fn unknown_problem_id_is_not_found_on_every_problem_rpc() {
    let mut f = Fixture::new().await;
    let r = proto::ProblemRef { problem_id: UNKNOWN, ..Default::default() };
    let id = &format!("problem {UNKNOWN} not found");
    let needles = &[id.as_str()];
    assert_status(f.c.get_problem_html(r).await, Code::NotFound, needles);
    assert_status(f.c.get_problem_meta(r).await, Code::NotFound, needles);
    assert_status(f.c.get_all_test_cases(whole_chain(r)).await, Code::NotFound, needles);
    assert_status(f.c.delete_problem(r).await, Code::NotFound, needles);
    let html_req = proto::UpdateProblemHtmlRequest { problem_id: UNKNOWN, html: "x".into(), ..Default::default() };
    assert_status(f.c.update_problem_html(html_req).await, Code::NotFound, needles);
    let col_req = proto::UpdateProblemColumnRequest {
        problem_id: UNKNOWN,
        name: "n".into(),
        value: "v".into(),
        ..Default::default()
    };
    assert_status(f.c.update_problem_column(col_req).await, Code::NotFound, needles);
    let add_req = proto::AddTestCaseRequest { problem_id: UNKNOWN, value: Some(int(1)), ..Default::default() };
    assert_status(f.c.add_test_case(add_req).await, Code::NotFound, needles);
    let tc = f.tc_ref(UNKNOWN, f.test_case);
    assert_status(f.c.get_test_case(tc).await, Code::NotFound, needles);
    assert_status(f.c.get_expected_output(tc).await, Code::NotFound, needles);
    f.assert_intact().await;
}

#[tokio::test]
async fn deleted_problem_is_not_found() {
    let mut f = Fixture::new().await;
    let gone = create(&mut f.c, "doomed", columns(&[("a", "b")])).await;
    let tc = add(&mut f.c, gone, int(1)).await;
    f.c.delete_problem(proto::ProblemRef { problem_id: gone, ..Default::default() }).await.unwrap();
    f.records = stats(&mut f.c).await.records;

    let r = proto::ProblemRef { problem_id: gone, ..Default::default() };
    let id = format!("problem {gone} not found");
    let needles = &[id.as_str()];
    assert_status(f.c.get_problem_html(r).await, Code::NotFound, needles);
    assert_status(f.c.get_problem_meta(r).await, Code::NotFound, needles);
    assert_status(f.c.get_all_test_cases(whole_chain(r)).await, Code::NotFound, needles);
    assert_status(f.c.delete_problem(r).await, Code::NotFound, needles);
    let html_req = proto::UpdateProblemHtmlRequest { problem_id: gone, html: "back".into(), ..Default::default() };
    assert_status(f.c.update_problem_html(html_req).await, Code::NotFound, needles);
    let add_req = proto::AddTestCaseRequest { problem_id: gone, value: Some(int(1)), ..Default::default() };
    assert_status(f.c.add_test_case(add_req).await, Code::NotFound, needles);
    assert_status(f.c.get_test_case(f.tc_ref(gone, tc)).await, Code::NotFound, needles);
    let upd =
        proto::UpdateTestCaseRequest { problem_id: gone, test_case_id: tc, value: Some(int(2)), ..Default::default() };
    assert_status(f.c.update_test_case(upd).await, Code::NotFound, needles);
    let set = proto::SetExpectedOutputRequest {
        problem_id: gone,
        test_case_id: tc,
        value: Some(int(2)),
        ..Default::default()
    };
    assert_status(f.c.set_expected_output(set).await, Code::NotFound, needles);
    assert!(!list_all(&mut f.c, 0).await.contains(&gone));
    f.assert_intact().await;
}

#[tokio::test]
async fn unknown_test_case_is_not_found() {
    let mut f = Fixture::new().await;
    let tc = f.tc_ref(f.problem, UNKNOWN);
    let id = format!("test case {UNKNOWN} not found in problem {}", f.problem);
    let needles = &[id.as_str()];
    assert_status(f.c.get_test_case(tc).await, Code::NotFound, needles);
    assert_status(f.c.delete_test_case(tc).await, Code::NotFound, needles);
    assert_status(f.c.get_expected_output(tc).await, Code::NotFound, needles);
    assert_status(f.c.delete_expected_output(tc).await, Code::NotFound, needles);
    let upd = proto::UpdateTestCaseRequest {
        problem_id: f.problem,
        test_case_id: UNKNOWN,
        value: Some(int(1)),
        ..Default::default()
    };
    assert_status(f.c.update_test_case(upd).await, Code::NotFound, needles);
    let set = proto::SetExpectedOutputRequest {
        problem_id: f.problem,
        test_case_id: UNKNOWN,
        value: Some(int(1)),
        ..Default::default()
    };
    assert_status(f.c.set_expected_output(set).await, Code::NotFound, needles);
    // A problem id is not a test case id.
    assert_status(f.c.get_test_case(f.tc_ref(f.problem, f.problem)).await, Code::NotFound, &["not found"]);
    f.assert_intact().await;
}

#[tokio::test]
async fn test_case_under_the_wrong_problem_is_not_found() {
    let mut f = Fixture::new().await;
    let other = create(&mut f.c, "other", Columns::new()).await;
    f.records = stats(&mut f.c).await.records;
    let wrong = f.tc_ref(other, f.test_case);
    let id = format!("test case {} not found in problem {other}", f.test_case);
    let needles = &[id.as_str()];
    assert_status(f.c.get_test_case(wrong).await, Code::NotFound, needles);
    assert_status(f.c.get_expected_output(wrong).await, Code::NotFound, needles);
    assert_status(f.c.delete_expected_output(wrong).await, Code::NotFound, needles);
    assert_status(f.c.delete_test_case(wrong).await, Code::NotFound, needles);
    let upd = proto::UpdateTestCaseRequest {
        problem_id: other,
        test_case_id: f.test_case,
        value: Some(int(9)),
        ..Default::default()
    };
    assert_status(f.c.update_test_case(upd).await, Code::NotFound, needles);
    let set = proto::SetExpectedOutputRequest {
        problem_id: other,
        test_case_id: f.test_case,
        value: Some(int(9)),
        ..Default::default()
    };
    assert_status(f.c.set_expected_output(set).await, Code::NotFound, needles);
    let uo = proto::UpdateExpectedOutputRequest {
        problem_id: other,
        test_case_id: f.test_case,
        value: Some(int(9)),
        ..Default::default()
    };
    assert_status(f.c.update_expected_output(uo).await, Code::NotFound, needles);
    assert_eq!(all_test_cases(&mut f.c, other).await, vec![]);
    f.assert_intact().await;
}

#[tokio::test]
async fn missing_expected_output_is_not_found() {
    let mut f = Fixture::new().await;
    let tc = f.tc_ref(f.problem, f.bare_test_case);
    let id = f.bare_test_case.to_string();
    assert_status(f.c.get_expected_output(tc).await, Code::NotFound, &[id.as_str(), "has no expected output"]);
    assert_status(f.c.delete_expected_output(tc).await, Code::NotFound, &[id.as_str(), "has no expected output"]);
    f.assert_intact().await;
}

#[tokio::test]
async fn update_expected_output_without_an_output_is_not_found_and_sets_nothing() {
    let mut f = Fixture::new().await;
    let request = proto::UpdateExpectedOutputRequest {
        problem_id: f.problem,
        test_case_id: f.bare_test_case,
        value: Some(int(42)),
        ..Default::default()
    };
    let id = f.bare_test_case.to_string();
    assert_status(f.c.update_expected_output(request).await, Code::NotFound, &[id.as_str(), "has no expected output"]);
    assert_eq!(output(&mut f.c, f.problem, f.bare_test_case).await, None);
    f.assert_intact().await;
}

// ----- invalid argument: ids and values ---------------------------------------

#[tokio::test]
async fn problem_id_zero_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let r = proto::ProblemRef { problem_id: 0, ..Default::default() };
    let needles = &["problem_id"];
    assert_status(f.c.get_problem_html(r).await, Code::InvalidArgument, needles);
    assert_status(f.c.get_problem_meta(r).await, Code::InvalidArgument, needles);
    assert_status(f.c.get_all_test_cases(whole_chain(r)).await, Code::InvalidArgument, needles);
    assert_status(f.c.delete_problem(r).await, Code::InvalidArgument, needles);
    let html_req = proto::UpdateProblemHtmlRequest { problem_id: 0, html: "x".into(), ..Default::default() };
    assert_status(f.c.update_problem_html(html_req).await, Code::InvalidArgument, needles);
    let col_req =
        proto::UpdateProblemColumnRequest { problem_id: 0, name: "n".into(), value: "v".into(), ..Default::default() };
    assert_status(f.c.update_problem_column(col_req).await, Code::InvalidArgument, needles);
    let add_req = proto::AddTestCaseRequest { problem_id: 0, value: Some(int(1)), ..Default::default() };
    assert_status(f.c.add_test_case(add_req).await, Code::InvalidArgument, needles);
    assert_status(f.c.get_test_case(f.tc_ref(0, f.test_case)).await, Code::InvalidArgument, needles);
    assert_status(f.c.delete_test_case(f.tc_ref(0, f.test_case)).await, Code::InvalidArgument, needles);
    f.assert_intact().await;
}

#[tokio::test]
async fn test_case_id_zero_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let tc = f.tc_ref(f.problem, 0);
    let needles = &["test_case_id"];
    assert_status(f.c.get_test_case(tc).await, Code::InvalidArgument, needles);
    assert_status(f.c.delete_test_case(tc).await, Code::InvalidArgument, needles);
    assert_status(f.c.get_expected_output(tc).await, Code::InvalidArgument, needles);
    assert_status(f.c.delete_expected_output(tc).await, Code::InvalidArgument, needles);
    let upd = proto::UpdateTestCaseRequest {
        problem_id: f.problem,
        test_case_id: 0,
        value: Some(int(1)),
        ..Default::default()
    };
    assert_status(f.c.update_test_case(upd).await, Code::InvalidArgument, needles);
    let set = proto::SetExpectedOutputRequest {
        problem_id: f.problem,
        test_case_id: 0,
        value: Some(int(1)),
        ..Default::default()
    };
    assert_status(f.c.set_expected_output(set).await, Code::InvalidArgument, needles);
    f.assert_intact().await;
}

/// Sends `value` to all four RPCs that take one, expecting INVALID_ARGUMENT
/// mentioning `needles`.
async fn assert_value_rejected(f: &mut Fixture, value: Option<proto::Value>, needles: &[&str]) {
    let (p, tc) = (f.problem, f.test_case);
    let add_req = proto::AddTestCaseRequest { problem_id: p, value: value.clone(), ..Default::default() };
    assert_status(f.c.add_test_case(add_req).await, Code::InvalidArgument, needles);
    let upd =
        proto::UpdateTestCaseRequest { problem_id: p, test_case_id: tc, value: value.clone(), ..Default::default() };
    assert_status(f.c.update_test_case(upd).await, Code::InvalidArgument, needles);
    let set =
        proto::SetExpectedOutputRequest { problem_id: p, test_case_id: tc, value: value.clone(), ..Default::default() };
    assert_status(f.c.set_expected_output(set).await, Code::InvalidArgument, needles);
    let uo = proto::UpdateExpectedOutputRequest { problem_id: p, test_case_id: tc, value, ..Default::default() };
    assert_status(f.c.update_expected_output(uo).await, Code::InvalidArgument, needles);
}

#[tokio::test]
async fn absent_value_is_invalid_argument() {
    let mut f = Fixture::new().await;
    assert_value_rejected(&mut f, None, &["value is required"]).await;
    f.assert_intact().await;
}

#[tokio::test]
async fn value_with_no_kind_set_is_invalid_argument() {
    let mut f = Fixture::new().await;
    assert_value_rejected(&mut f, Some(proto::Value { kind: None }), &["value is required"]).await;
    f.assert_intact().await;
}

#[tokio::test]
async fn value_above_max_value_bytes_is_invalid_argument() {
    let mut f = Fixture::with_args(&["--max-value-bytes", "1000", "--max-blob-bytes", "1000"]).await;
    let big = string(&"v".repeat(2000));
    assert_value_rejected(&mut f, Some(big), &["value", "above the limit of 1000"]).await;
    let big_list = int_list(vec![7; 200]);
    assert_value_rejected(&mut f, Some(big_list), &["value", "above the limit of 1000"]).await;
    f.assert_intact().await;
    // Just under the limit is accepted.
    let fits = add(&mut f.c, f.problem, string(&"v".repeat(900))).await;
    assert_eq!(test_case(&mut f.c, f.problem, fits).await, Canon::Str("v".repeat(900)));
}

#[tokio::test]
async fn huge_int_list_under_the_limit_round_trips() {
    let mut f = Fixture::new().await;
    let values: Vec<i64> = (0..200_000i64)
        .map(|i| if i % 1000 == 0 { i64::MIN + i } else { i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64) })
        .collect();
    let tc = add(&mut f.c, f.problem, int_list(values.clone())).await;
    set_output(&mut f.c, f.problem, tc, int_list(values.clone())).await;
    assert_eq!(test_case(&mut f.c, f.problem, tc).await, Canon::IntList(values.clone()));
    assert_eq!(output(&mut f.c, f.problem, tc).await, Some(Canon::IntList(values.clone())));
    let all = all_test_cases(&mut f.c, f.problem).await;
    assert_eq!(all.last(), Some(&(tc, Canon::IntList(values))));
}

// ----- invalid argument: columns ----------------------------------------------

#[tokio::test]
async fn empty_column_name_in_create_problem_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let request = proto::CreateProblemRequest { html: "x".into(), columns: columns(&[("ok", "1"), ("", "empty")]) };
    assert_status(f.c.create_problem(request).await, Code::InvalidArgument, &["column name is empty"]);
    assert_eq!(list_all(&mut f.c, 0).await, vec![f.problem], "no problem was created");
    f.assert_intact().await;
}

#[tokio::test]
async fn empty_column_name_in_update_problem_column_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let request = proto::UpdateProblemColumnRequest {
        problem_id: f.problem,
        name: String::new(),
        value: "v".into(),
        ..Default::default()
    };
    assert_status(f.c.update_problem_column(request).await, Code::InvalidArgument, &["column name is empty"]);
    f.assert_intact().await;
}

#[tokio::test]
async fn very_long_column_name_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let long = "n".repeat(10_000);
    let create_req = proto::CreateProblemRequest { html: "x".into(), columns: columns(&[(&long, "v")]) };
    assert_status(f.c.create_problem(create_req).await, Code::InvalidArgument, &["column name", "10000", "limit"]);
    let update_req = proto::UpdateProblemColumnRequest {
        problem_id: f.problem,
        name: long,
        value: "v".into(),
        ..Default::default()
    };
    assert_status(f.c.update_problem_column(update_req).await, Code::InvalidArgument, &["column name", "10000"]);
    f.assert_intact().await;
}

#[tokio::test]
async fn very_long_column_value_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let long = "v".repeat(100_000);
    let create_req = proto::CreateProblemRequest { html: "x".into(), columns: columns(&[("big", &long)]) };
    assert_status(f.c.create_problem(create_req).await, Code::InvalidArgument, &["column \"big\"", "100000"]);
    let update_req = proto::UpdateProblemColumnRequest {
        problem_id: f.problem,
        name: "big".into(),
        value: long,
        ..Default::default()
    };
    assert_status(f.c.update_problem_column(update_req).await, Code::InvalidArgument, &["column \"big\"", "100000"]);
    f.assert_intact().await;
}

#[tokio::test]
async fn too_many_columns_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let many: Columns = (0..1000).map(|i| (format!("col{i}"), "v".to_string())).collect();
    let request = proto::CreateProblemRequest { html: "x".into(), columns: many };
    assert_status(
        f.c.create_problem(request).await,
        Code::InvalidArgument,
        &["1000 columns", "limit of 256 per problem"],
    );
    f.assert_intact().await;
}

#[tokio::test]
async fn update_problem_column_past_the_column_limit_is_invalid_argument() {
    let mut f = Fixture::new().await;
    let full: Columns = (0..256).map(|i| (format!("col{i:03}"), "v".to_string())).collect();
    let p = create(&mut f.c, "full", full.clone()).await;
    f.records = stats(&mut f.c).await.records;
    let request = proto::UpdateProblemColumnRequest {
        problem_id: p,
        name: "one_more".into(),
        value: "v".into(),
        ..Default::default()
    };
    assert_status(f.c.update_problem_column(request).await, Code::InvalidArgument, &["257 columns", "256"]);
    assert_eq!(meta(&mut f.c, p).await, full);
    f.assert_intact().await;
    // Replacing an existing column of a full problem is still fine.
    let request = proto::UpdateProblemColumnRequest {
        problem_id: p,
        name: "col000".into(),
        value: "w".into(),
        ..Default::default()
    };
    f.c.update_problem_column(request).await.expect("replacing a column");
    let mut replaced = full;
    replaced.insert("col000".into(), "w".into());
    assert_eq!(meta(&mut f.c, p).await, replaced);
}

// ----- invalid argument: blobs, pages -----------------------------------------

#[tokio::test]
async fn blob_above_max_blob_bytes_is_invalid_argument() {
    // --max-value-bytes must be lowered too: its 16 MiB default does not fit
    // in a 1 MB message and the server would refuse to start.
    let mut f = Fixture::with_args(&[
        "--max-blob-bytes",
        "1000",
        "--max-value-bytes",
        "1000",
        "--max-message-bytes",
        "1000000",
    ])
    .await;
    let big = "h".repeat(2000);
    let create_req = proto::CreateProblemRequest { html: big.clone(), columns: Columns::new() };
    assert_status(
        f.c.create_problem(create_req).await,
        Code::InvalidArgument,
        &["html is 2000 bytes", "limit of 1000"],
    );
    let update_req = proto::UpdateProblemHtmlRequest { problem_id: f.problem, html: big, ..Default::default() };
    assert_status(
        f.c.update_problem_html(update_req).await,
        Code::InvalidArgument,
        &["html is 2000 bytes", "limit of 1000"],
    );
    assert_eq!(list_all(&mut f.c, 0).await, vec![f.problem]);
    f.assert_intact().await;
    let exactly = create(&mut f.c, &"h".repeat(1000), Columns::new()).await;
    assert_eq!(html(&mut f.c, exactly).await.len(), 1000, "a blob at the limit is accepted");
}

#[tokio::test]
async fn bad_page_token_is_invalid_argument() {
    let mut f = Fixture::new().await;
    for token in ["abc", "-1", "1.5", " 7", "18446744073709551616"] {
        let request = proto::ListProblemsRequest { page_size: 10, page_token: token.into() };
        assert_status(f.c.list_problems(request).await, Code::InvalidArgument, &["page_token", token]);
    }
    f.assert_intact().await;
}

// ----- gRPC message size ------------------------------------------------------

const SMALL_MESSAGES: &[&str] =
    &["--max-message-bytes", "200000", "--max-blob-bytes", "100000", "--max-value-bytes", "100000"];

/// The code for a request or response over the server's
/// `--max-message-bytes`, as proto/lse.proto documents (tonic's status).
const OVERSIZE_CODE: Code = Code::OutOfRange;

#[tokio::test]
async fn request_over_max_message_bytes_is_rejected_with_out_of_range() {
    let mut f = Fixture::with_args(SMALL_MESSAGES).await;
    let request = proto::CreateProblemRequest { html: "m".repeat(300_000), columns: Columns::new() };
    let status = assert_status(f.c.create_problem(request).await, OVERSIZE_CODE, &["too large", "200000"]);
    eprintln!("over-size request: {:?} {:?}", status.code(), status.message());
    let request = proto::AddTestCaseRequest {
        problem_id: f.problem,
        value: Some(string(&"m".repeat(300_000))),
        ..Default::default()
    };
    assert_status(f.c.add_test_case(request).await, OVERSIZE_CODE, &["too large", "200000"]);
    assert_eq!(list_all(&mut f.c, 0).await, vec![f.problem]);
    f.assert_intact().await;
}

/// Three test cases of 90 KB each: every one is under --max-value-bytes, all
/// of them together are over --max-message-bytes.
async fn problem_too_big_for_one_response(f: &mut Fixture) -> (u64, Vec<u64>) {
    let p = create(&mut f.c, "big", Columns::new()).await;
    let mut tcs = Vec::new();
    for i in 0..3u8 {
        tcs.push(add(&mut f.c, p, string(&((b'a' + i) as char).to_string().repeat(90_000))).await);
    }
    f.records = stats(&mut f.c).await.records;
    (p, tcs)
}

#[tokio::test]
async fn get_all_test_cases_over_max_message_bytes_fails_but_each_test_case_reads_back() {
    let mut f = Fixture::with_args(SMALL_MESSAGES).await;
    let (p, tcs) = problem_too_big_for_one_response(&mut f).await;
    let status = assert_status(
        f.c.get_all_test_cases(whole_chain(proto::ProblemRef { problem_id: p, ..Default::default() })).await,
        OVERSIZE_CODE,
        &["too large", "200000"],
    );
    eprintln!("over-size response: {:?} {:?}", status.code(), status.message());
    for (i, tc) in tcs.into_iter().enumerate() {
        let want = ((b'a' + i as u8) as char).to_string().repeat(90_000);
        assert_eq!(test_case(&mut f.c, p, tc).await, Canon::Str(want));
    }
    f.assert_intact().await;
}

#[tokio::test]
async fn blob_between_blob_limit_and_message_limit_is_invalid_argument() {
    let mut f = Fixture::with_args(SMALL_MESSAGES).await;
    let request = proto::CreateProblemRequest { html: "m".repeat(150_000), columns: Columns::new() };
    assert_status(
        f.c.create_problem(request).await,
        Code::InvalidArgument,
        &["html is 150000 bytes", "limit of 100000"],
    );
    f.assert_intact().await;
}

// ----- startup flags ----------------------------------------------------------

#[tokio::test]
async fn bad_sync_flag_exits_non_zero_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let exited = run_to_exit(&["--port", "0", "--data-dir", dir.path().to_str().unwrap(), "--sync", "bogus"]).await;
    assert!(!exited.status.success(), "{exited:?}");
    assert!(exited.stderr.contains("--sync"), "{exited:?}");
    assert!(exited.stderr.contains("bogus"), "{exited:?}");
    assert!(!exited.stdout.contains("listening"), "{exited:?}");
}

#[tokio::test]
async fn blob_limit_above_message_limit_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--port",
        "0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-blob-bytes",
        "2000000",
        "--max-message-bytes",
        "1000000",
    ];
    let exited = run_to_exit(&args).await;
    assert!(!exited.status.success(), "{exited:?}");
    let lines: Vec<&str> = exited.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {exited:?}");
    assert!(lines[0].contains("--max-blob-bytes") && lines[0].contains("--max-message-bytes"), "{exited:?}");
    assert!(!exited.stdout.contains("listening"), "{exited:?}");
}

#[tokio::test]
async fn unwritable_data_dir_exits_non_zero_with_one_line_naming_data_dir() {
    let exited = run_to_exit(&["--port", "0", "--data-dir", "/proc/forbidden/x"]).await;
    assert!(!exited.status.success(), "{exited:?}");
    let errors: Vec<&str> = exited.stderr.lines().filter(|l| l.starts_with("lse_server:")).collect();
    assert_eq!(errors.len(), 1, "{exited:?}");
    assert!(errors[0].contains("--data-dir"), "{exited:?}");
    assert!(errors[0].contains("/proc/forbidden/x"), "{exited:?}");
}

#[tokio::test]
async fn second_server_on_the_same_data_dir_exits_non_zero_saying_in_use() {
    let mut f = Fixture::new().await;
    let dir = f.server.dir.to_str().unwrap().to_string();
    let exited = run_to_exit(&["--port", "0", "--data-dir", &dir]).await;
    assert!(!exited.status.success(), "{exited:?}");
    let errors: Vec<&str> = exited.stderr.lines().filter(|l| l.starts_with("lse_server:")).collect();
    assert_eq!(errors.len(), 1, "{exited:?}");
    assert!(errors[0].contains("in use"), "{exited:?}");
    assert!(errors[0].contains("--data-dir"), "{exited:?}");
    // The first server is unaffected.
    f.assert_intact().await;
}

// ----- damaged files ----------------------------------------------------------

/// Flips one bit of the first occurrence of `marker` in `file`.
fn flip_bit_in(file: &std::path::Path, marker: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("marker not found in the segment");
    bytes[at + marker.len() / 2] ^= 0x01;
    // Rewrite in place (same inode): the running server reads this file.
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn a_damaged_record_read_by_a_running_server_is_data_loss_naming_the_file() {
    let mut f = Fixture::new().await;
    let damaged = create(&mut f.c, "<p>DAMAGED-BLOB-MARKER</p>", Columns::new()).await;
    let tc = add(&mut f.c, damaged, string("DAMAGED-VALUE-MARKER")).await;
    f.records = stats(&mut f.c).await.records;
    let active = f.server.dir.join("active.seg");
    flip_bit_in(&active, b"DAMAGED-BLOB-MARKER");
    flip_bit_in(&active, b"DAMAGED-VALUE-MARKER");

    let r = proto::ProblemRef { problem_id: damaged, ..Default::default() };
    assert_status(f.c.get_problem_html(r).await, Code::DataLoss, &["active.seg", "offset"]);
    let t = f.tc_ref(damaged, tc);
    assert_status(f.c.get_test_case(t).await, Code::DataLoss, &["active.seg", "offset"]);
    assert_status(f.c.get_all_test_cases(whole_chain(r)).await, Code::DataLoss, &["active.seg"]);
    // Columns live in memory: still readable. Other problems are unaffected.
    assert_eq!(meta(&mut f.c, damaged).await, Columns::new());
    f.assert_intact().await;
}

#[tokio::test]
async fn a_damaged_record_in_a_sealed_segment_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--segment-bytes", "1024"]).await;
    let mut c = server.client().await;
    let first = create(&mut c, &format!("<p>SEALED-MARKER</p>{}", "x".repeat(1500)), Columns::new()).await;
    for i in 0..3 {
        create(&mut c, &format!("filler {i} {}", "y".repeat(1500)), Columns::new()).await;
    }
    drop(c);
    server.stop().await;
    let sealed: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read(p).unwrap().windows(13).any(|w| w == b"SEALED-MARKER"))
        .collect();
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    assert_ne!(sealed[0].file_name().unwrap(), "active.seg", "problem {first} should be in a sealed segment");
    flip_bit_in(&sealed[0], b"SEALED-MARKER");

    let exited = match TestServer::try_start(dir.path(), &["--segment-bytes", "1024"]).await {
        Ok(_) => panic!("the server started on a store with a damaged sealed segment"),
        Err(exited) => exited,
    };
    assert!(!exited.status.success());
    let errors: Vec<&str> = exited.stderr.lines().filter(|l| l.starts_with("lse_server:")).collect();
    assert_eq!(errors.len(), 1, "{exited:?}");
    let name = sealed[0].file_name().unwrap().to_str().unwrap();
    assert!(errors[0].contains(name) && errors[0].contains("corrupt"), "{exited:?}");
}

#[tokio::test]
async fn a_damaged_record_in_the_middle_of_the_active_segment_does_not_silently_drop_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let before = create(&mut c, "before", Columns::new()).await;
    let damaged = create(&mut c, "<p>MIDDLE-MARKER</p>", Columns::new()).await;
    let mut after = Vec::new();
    for i in 0..5 {
        after.push(create(&mut c, &format!("acknowledged after {i}"), columns(&[("i", &i.to_string())])).await);
    }
    drop(c);
    server.stop().await;
    flip_bit_in(&dir.path().join("active.seg"), b"MIDDLE-MARKER");

    // Either refusing to start (naming the damage) or keeping the intact,
    // fsynced records after the damaged one is acceptable; cutting them off
    // without a word is not.
    match TestServer::try_start(dir.path(), &[]).await {
        Err(exited) => {
            assert!(exited.stderr.contains("active.seg"), "{exited:?}");
        }
        Ok(server) => {
            let mut c = server.client().await;
            assert_eq!(html(&mut c, before).await, "before");
            let live = list_all(&mut c, 0).await;
            for (i, p) in after.iter().enumerate() {
                assert!(
                    live.contains(p),
                    "acknowledged problem {p} (written after damaged problem {damaged}) is gone after a restart; \
                     live: {live:?}; server log:\n{}",
                    server.stderr()
                );
                assert_eq!(html(&mut c, *p).await, format!("acknowledged after {i}"));
            }
        }
    }
}

/// Pages of GetAllTestCases stop at half the message limit, so a chain too
/// big for one message reads back whole, page by page.
#[tokio::test]
async fn get_all_test_cases_pages_a_chain_too_big_for_one_message() {
    let mut f = Fixture::with_args(SMALL_MESSAGES).await;
    let (p, tcs) = problem_too_big_for_one_response(&mut f).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = proto::GetAllTestCasesRequest {
            problem_id: p,
            page_size: 100,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = f.c.get_all_test_cases(request).await.expect("a page").into_inner();
        pages += 1;
        seen.extend(page.test_cases.iter().map(|tc| (tc.test_case_id, canon_field(&tc.value))));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, tcs.len(), "90 KB values against a 100 KB page budget: one per page");
    let want: Vec<(u64, Canon)> = tcs
        .iter()
        .enumerate()
        .map(|(i, &tc)| (tc, Canon::Str(((b'a' + i as u8) as char).to_string().repeat(90_000))))
        .collect();
    assert_eq!(seen, want);
    f.assert_intact().await;
}

// ----- undecodable requests ---------------------------------------------------

/// Sends any bytes as a request message, and takes any bytes back.
#[derive(Clone, Copy, Debug, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// A request whose bytes are not a protobuf message of its type is the
/// caller's error: INVALID_ARGUMENT naming the message type, not INTERNAL,
/// and nothing changes.
#[tokio::test]
async fn an_undecodable_request_is_invalid_argument() {
    let mut f = Fixture::new().await;
    for (method, bytes) in [
        ("GetProblemHtml", vec![0xff; 12]),
        ("CreateProblem", vec![0x0a, 0x7f, b'x']),
        ("AddTestCase", vec![0x08]),
        ("DeleteProblem", vec![0x0b, 0x00]),
    ] {
        let mut grpc = tonic::client::Grpc::new(f.server.channel().await);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::try_from(format!("/lse.Lse/{method}")).unwrap();
        let status = grpc.unary(tonic::Request::new(bytes), path, RawBytes).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
        assert!(status.message().contains("is not a valid "), "{method}: {status:?}");
    }
    f.assert_intact().await;
}
