//! Whole problems over gRPC, against the real `lse_server` binary: import
//! (one message and streamed), whole reads (one message and streamed),
//! replacing test data, batches, chain editing, and versions with their
//! preconditions on every RPC.

mod server_support;

use server_support::*;
use stratum::proto::{self, batch_op::Op as W};
use tempfile::TempDir;
use tonic::Code;

async fn server(extra_args: &[&str]) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), extra_args).await;
    (dir, server)
}

fn case(input: proto::Value, output: Option<proto::Value>) -> proto::NewTestCase {
    proto::NewTestCase { input: Some(input), expected_output: output }
}

/// A problem of `n` test cases; every second one has an expected output.
fn cases(n: i64) -> Vec<proto::NewTestCase> {
    (0..n).map(|i| case(int_list(vec![i, i * i]), (i % 2 == 0).then(|| string(&format!("out {i}"))))).collect()
}

async fn import(c: &mut Client, html: &str, n: i64) -> proto::ImportProblemResponse {
    let request = proto::ImportProblemRequest {
        html: html.into(),
        columns: columns(&[("name", "sum")]),
        test_cases: cases(n),
        ..Default::default()
    };
    c.import_problem(request).await.expect("ImportProblem").into_inner()
}

async fn get_problem(c: &mut Client, problem_id: u64) -> proto::GetProblemResponse {
    c.get_problem(proto::GetProblemRequest { problem_id, ..Default::default() }).await.expect("GetProblem").into_inner()
}

async fn version(c: &mut Client, problem_id: u64) -> u64 {
    get_problem(c, problem_id).await.version
}

/// The test case ids of a whole read, in order.
fn ids(problem: &proto::GetProblemResponse) -> Vec<u64> {
    problem.test_cases.iter().map(|t| t.test_case_id).collect()
}

/// The trailer a stale version is answered with.
#[track_caller]
fn current_version(status: &tonic::Status) -> u64 {
    status.metadata().get("lse-current-version").expect("lse-current-version").to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_imported_problem_reads_back_whole_in_one_call() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let imported = import(&mut c, "<p>sum</p>", 5).await;
    assert_eq!(imported.test_case_ids.len(), 5);
    assert!(imported.version > 0);
    let problem = get_problem(&mut c, imported.problem_id).await;
    assert_eq!((problem.problem_id, problem.version), (imported.problem_id, imported.version));
    assert_eq!(problem.html, "<p>sum</p>");
    assert_eq!(problem.columns, columns(&[("name", "sum")]));
    assert_eq!(ids(&problem), imported.test_case_ids);
    for (i, (got, want)) in problem.test_cases.iter().zip(cases(5)).enumerate() {
        assert_eq!(canon_field(&got.input), canon_field(&want.input), "input {i}");
        assert_eq!(got.expected_output.as_ref().map(canon), want.expected_output.as_ref().map(canon), "output {i}");
    }
    // The node-at-a-time reads agree, and carry the same version.
    let dump = dump_problem(&mut c, imported.problem_id).await;
    assert_eq!(dump.test_cases.iter().map(|t| t.0).collect::<Vec<_>>(), imported.test_case_ids);
    let r = proto::ProblemRef { problem_id: imported.problem_id, ..Default::default() };
    assert_eq!(c.get_problem_html(r).await.unwrap().into_inner().version, imported.version);
    assert_eq!(c.get_problem_meta(r).await.unwrap().into_inner().version, imported.version);
    let all = c.get_all_test_cases(whole_chain(r)).await.unwrap().into_inner();
    assert_eq!(all.version, imported.version);
    let t = proto::TestCaseRef {
        problem_id: imported.problem_id,
        test_case_id: imported.test_case_ids[0],
        ..Default::default()
    };
    assert_eq!(c.get_test_case(t).await.unwrap().into_inner().version, imported.version);
    assert_eq!(c.get_expected_output(t).await.unwrap().into_inner().version, imported.version);
}

#[tokio::test]
async fn import_errors_create_nothing() {
    let (_dir, server) = server(&["--max-batch-bytes", "100000"]).await;
    let mut c = server.client().await;
    let mut bad = cases(3);
    bad[2].input = None;
    let request = proto::ImportProblemRequest {
        html: "x".into(),
        columns: Default::default(),
        test_cases: bad,
        ..Default::default()
    };
    assert_status(c.import_problem(request).await, Code::InvalidArgument, &["test case 2", "value is required"]);
    let request = proto::ImportProblemRequest {
        html: "x".into(),
        columns: columns(&[("", "v")]),
        test_cases: cases(1),
        ..Default::default()
    };
    assert_status(c.import_problem(request).await, Code::InvalidArgument, &["column name"]);
    let big = (0..20).map(|_| case(string(&"x".repeat(10_000)), None)).collect();
    let request = proto::ImportProblemRequest {
        html: "x".into(),
        columns: Default::default(),
        test_cases: big,
        ..Default::default()
    };
    assert_status(c.import_problem(request).await, Code::InvalidArgument, &["batch", "100000"]);
    assert_eq!(list_all(&mut c, 0).await, Vec::<u64>::new());
    assert_eq!(stats(&mut c).await.test_cases, 0);
}

#[tokio::test]
async fn a_streamed_import_joins_its_messages_and_a_broken_stream_leaves_nothing() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let messages = vec![
        proto::ImportProblemRequest {
            html: "<p>part one, ".into(),
            columns: columns(&[("a", "1")]),
            test_cases: cases(2),
            ..Default::default()
        },
        proto::ImportProblemRequest {
            html: "part two</p>".into(),
            columns: columns(&[("b", "2")]),
            test_cases: vec![],
            ..Default::default()
        },
        proto::ImportProblemRequest { test_cases: cases(3), last: true, ..Default::default() },
    ];
    let imported = c.import_problem_stream(tokio_stream::iter(messages)).await.unwrap().into_inner();
    let problem = get_problem(&mut c, imported.problem_id).await;
    assert_eq!(problem.html, "<p>part one, part two</p>");
    assert_eq!(problem.columns, columns(&[("a", "1"), ("b", "2")]));
    assert_eq!(ids(&problem), imported.test_case_ids);
    assert_eq!(problem.test_cases.len(), 5);
    assert_eq!(canon_field(&problem.test_cases[2].input), canon(&int_list(vec![0, 0])));

    // A column named twice in the stream is refused, and nothing is made.
    let twice = vec![
        proto::ImportProblemRequest { columns: columns(&[("a", "1")]), ..Default::default() },
        proto::ImportProblemRequest { columns: columns(&[("a", "2")]), ..Default::default() },
    ];
    assert_status(c.import_problem_stream(tokio_stream::iter(twice)).await, Code::InvalidArgument, &["\"a\"", "twice"]);

    // A stream that ends without a message marked last (a client that gave
    // up: Node's cancel() ends the stream cleanly before it resets it) writes
    // nothing; a message after the last one is refused.
    let unfinished =
        vec![proto::ImportProblemRequest { html: "gave up".into(), test_cases: cases(2), ..Default::default() }];
    assert_status(c.import_problem_stream(tokio_stream::iter(unfinished)).await, Code::Cancelled, &["marked last"]);
    let after = vec![
        proto::ImportProblemRequest { test_cases: cases(1), last: true, ..Default::default() },
        proto::ImportProblemRequest { test_cases: cases(1), ..Default::default() },
    ];
    let refused = c.import_problem_stream(tokio_stream::iter(after)).await;
    assert_status(refused, Code::InvalidArgument, &["after the one marked last"]);

    // A stream broken halfway (reset, or its connection dropped): nothing
    // becomes visible.
    let first = proto::ImportProblemRequest { html: "half".into(), test_cases: cases(3), ..Default::default() };
    let mut raw = RawConnection::connect(server.addr).await;
    raw.open_stream("/lse.Lse/ImportProblemStream", &first).await.reset();
    let mut dropped = RawConnection::connect(server.addr).await;
    let held = dropped.open_stream("/lse.Lse/ImportProblemStream", &first).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop((held, dropped));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(list_all(&mut c, 0).await, vec![imported.problem_id]);
    assert_eq!(stats(&mut c).await.test_cases, 5);
}

#[tokio::test]
async fn a_problem_over_one_message_is_read_by_the_stream() {
    let (_dir, server) =
        server(&["--max-message-bytes", "2097152", "--max-blob-bytes", "1048576", "--max-value-bytes", "1048576"])
            .await;
    let mut c = server.client().await;
    let messages: Vec<_> = (0..6)
        .map(|i| proto::ImportProblemRequest {
            html: if i == 0 { "<p>big</p>".into() } else { String::new() },
            columns: Default::default(),
            test_cases: vec![case(string(&format!("{i}").repeat(600_000)), Some(int(i)))],
            last: i == 5,
        })
        .collect();
    let imported = c.import_problem_stream(tokio_stream::iter(messages)).await.unwrap().into_inner();
    let request = proto::GetProblemRequest { problem_id: imported.problem_id, ..Default::default() };
    assert_status(c.get_problem(request).await, Code::OutOfRange, &[]);
    let mut stream = c.get_problem_stream(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    assert!(messages.len() >= 3, "{} messages", messages.len());
    assert_eq!(messages[0].html, "<p>big</p>");
    assert!(messages.iter().all(|m| m.version == imported.version && m.problem_id == imported.problem_id));
    assert!(messages[1..].iter().all(|m| m.html.is_empty() && m.columns.is_empty()));
    let joined: Vec<u64> = messages.iter().flat_map(|m| m.test_cases.iter().map(|t| t.test_case_id)).collect();
    assert_eq!(joined, imported.test_case_ids);
    let last = messages.last().unwrap().test_cases.last().unwrap();
    assert_eq!(canon_field(&last.input), Canon::Str("5".repeat(600_000)));
    assert_eq!(canon_field(&last.expected_output), Canon::Int(5));
    // A missing problem or a stale version is the call's status.
    let missing = proto::GetProblemRequest { problem_id: 999, ..Default::default() };
    assert_status(c.get_problem_stream(missing).await, Code::NotFound, &["problem 999"]);
    let stale = proto::GetProblemRequest { problem_id: imported.problem_id, expected_version: Some(1) };
    assert_status(c.get_problem_stream(stale).await, Code::Aborted, &["version"]);
}

#[tokio::test]
async fn replacing_test_data_swaps_the_whole_chain_under_its_version() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let imported = import(&mut c, "<p>r</p>", 4).await;
    let (problem_id, old) = (imported.problem_id, imported.version);
    // A stale version: ABORTED with the current one, and nothing changed.
    let stale = proto::ReplaceTestCasesRequest {
        problem_id,
        test_cases: cases(1),
        expected_version: Some(old + 1),
        ..Default::default()
    };
    let status = assert_status(c.replace_test_cases(stale).await, Code::Aborted, &["version", &old.to_string()]);
    assert_eq!(current_version(&status), old);
    assert_eq!(ids(&get_problem(&mut c, problem_id).await), imported.test_case_ids);

    let request = proto::ReplaceTestCasesRequest {
        problem_id,
        test_cases: cases(2),
        expected_version: Some(old),
        ..Default::default()
    };
    let replaced = c.replace_test_cases(request).await.unwrap().into_inner();
    assert!(replaced.version > old);
    let problem = get_problem(&mut c, problem_id).await;
    assert_eq!(ids(&problem), replaced.test_case_ids);
    assert_eq!(problem.version, replaced.version);
    assert_eq!(problem.html, "<p>r</p>");
    for old_id in &imported.test_case_ids {
        let t = proto::TestCaseRef { problem_id, test_case_id: *old_id, ..Default::default() };
        assert_status(c.get_test_case(t).await, Code::NotFound, &["test case"]);
    }
    assert_eq!(stats(&mut c).await.test_cases, 2);

    // Streamed: the first message names the problem; another one later is refused.
    let messages = vec![
        proto::ReplaceTestCasesRequest {
            problem_id,
            test_cases: cases(1),
            expected_version: Some(replaced.version),
            ..Default::default()
        },
        proto::ReplaceTestCasesRequest { test_cases: cases(2), last: true, ..Default::default() },
    ];
    let streamed = c.replace_test_cases_stream(tokio_stream::iter(messages)).await.unwrap().into_inner();
    assert_eq!(streamed.test_case_ids.len(), 3);
    assert_eq!(ids(&get_problem(&mut c, problem_id).await), streamed.test_case_ids);
    let other = vec![
        proto::ReplaceTestCasesRequest { problem_id, test_cases: cases(1), ..Default::default() },
        proto::ReplaceTestCasesRequest { problem_id: problem_id + 100, test_cases: cases(1), ..Default::default() },
    ];
    assert_status(
        c.replace_test_cases_stream(tokio_stream::iter(other)).await,
        Code::InvalidArgument,
        &["another problem"],
    );
    // A replace stream broken off halfway changes nothing.
    let first = proto::ReplaceTestCasesRequest { problem_id, test_cases: cases(1), ..Default::default() };
    let mut raw = RawConnection::connect(server.addr).await;
    raw.open_stream("/lse.Lse/ReplaceTestCasesStream", &first).await.reset();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let missing = proto::ReplaceTestCasesRequest { problem_id: 999, test_cases: cases(1), ..Default::default() };
    assert_status(c.replace_test_cases(missing).await, Code::NotFound, &["problem 999"]);
    assert_eq!(ids(&get_problem(&mut c, problem_id).await), streamed.test_case_ids);
}

fn op(op: W) -> proto::BatchOp {
    proto::BatchOp { op: Some(op), ..Default::default() }
}

#[tokio::test]
async fn a_batch_applies_every_operation_or_none() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let existing = import(&mut c, "<p>old</p>", 2).await;
    let e = existing.problem_id;
    let ops = vec![
        op(W::CreateProblem(proto::CreateProblemRequest {
            html: "<p>new</p>".into(),
            columns: columns(&[("k", "v")]),
        })),
        proto::BatchOp {
            op: Some(W::AddTestCase(proto::AddTestCaseRequest { value: Some(int(1)), ..Default::default() })),
            problem_from_op: Some(0),
            ..Default::default()
        },
        proto::BatchOp {
            op: Some(W::SetExpectedOutput(proto::SetExpectedOutputRequest {
                value: Some(int(2)),
                ..Default::default()
            })),
            problem_from_op: Some(0),
            test_case_from_op: Some(1),
        },
        op(W::UpdateProblemHtml(proto::UpdateProblemHtmlRequest {
            problem_id: e,
            html: "<p>edited</p>".into(),
            ..Default::default()
        })),
        op(W::DeleteTestCase(proto::TestCaseRef {
            problem_id: e,
            test_case_id: existing.test_case_ids[0],
            ..Default::default()
        })),
    ];
    let request = proto::BatchRequest {
        ops,
        expected_versions: vec![proto::VersionCheck { problem_id: e, version: existing.version }],
    };
    let done = c.batch(request).await.unwrap().into_inner();
    let (created, test_case) = (done.created_ids[0], done.created_ids[1]);
    assert_eq!(done.created_ids[2..], [0, 0, 0]);
    let versions: Vec<u64> = done.versions.iter().map(|v| v.problem_id).collect();
    assert_eq!(versions, [e, created]);
    let new = get_problem(&mut c, created).await;
    assert_eq!((new.html.as_str(), ids(&new)), ("<p>new</p>", vec![test_case]));
    assert_eq!(canon_field(&new.test_cases[0].expected_output), Canon::Int(2));
    assert_eq!(new.version, done.versions[1].version);
    let old = get_problem(&mut c, e).await;
    assert_eq!((old.html.as_str(), ids(&old)), ("<p>edited</p>", vec![existing.test_case_ids[1]]));
    assert_eq!(old.version, done.versions[0].version);

    // The last op fails: none of the others took effect.
    let before = dump_all(&mut c).await;
    let failing = vec![
        op(W::UpdateProblemHtml(proto::UpdateProblemHtmlRequest {
            problem_id: e,
            html: "lost".into(),
            ..Default::default()
        })),
        op(W::CreateProblem(proto::CreateProblemRequest { html: "lost".into(), ..Default::default() })),
        op(W::DeleteExpectedOutput(proto::TestCaseRef { problem_id: e, test_case_id: 12345, ..Default::default() })),
    ];
    let request = proto::BatchRequest { ops: failing, ..Default::default() };
    assert_status(c.batch(request).await, Code::NotFound, &["operation 2 of the batch", "test case 12345"]);
    // A stale precondition: nothing either.
    let request = proto::BatchRequest {
        ops: vec![op(W::DeleteProblem(proto::ProblemRef { problem_id: e, ..Default::default() }))],
        expected_versions: vec![proto::VersionCheck { problem_id: e, version: existing.version }],
    };
    let status = assert_status(c.batch(request).await, Code::Aborted, &["version"]);
    assert_eq!(current_version(&status), old.version);
    assert_eq!(dump_all(&mut c).await, before);

    // Malformed batches: an expected version inside an op, an id and a
    // reference at once, a reference to an op that created nothing, no op.
    let inside = op(W::DeleteProblem(proto::ProblemRef { problem_id: e, expected_version: Some(old.version) }));
    let request = proto::BatchRequest { ops: vec![inside], ..Default::default() };
    assert_status(c.batch(request).await, Code::InvalidArgument, &["op 0", "expected_version"]);
    let both = proto::BatchOp {
        op: Some(W::DeleteProblem(proto::ProblemRef { problem_id: e, ..Default::default() })),
        problem_from_op: Some(0),
        ..Default::default()
    };
    let request = proto::BatchRequest { ops: vec![both], ..Default::default() };
    assert_status(c.batch(request).await, Code::InvalidArgument, &["problem_id and problem_from_op"]);
    let dangling = proto::BatchOp {
        op: Some(W::DeleteProblem(proto::ProblemRef::default())),
        problem_from_op: Some(0),
        ..Default::default()
    };
    let request = proto::BatchRequest {
        ops: vec![
            op(W::UpdateProblemHtml(proto::UpdateProblemHtmlRequest { problem_id: e, ..Default::default() })),
            dangling,
        ],
        ..Default::default()
    };
    assert_status(c.batch(request).await, Code::InvalidArgument, &["operation 1 refers to operation 0"]);
    assert_status(c.batch(proto::BatchRequest::default()).await, Code::InvalidArgument, &["no operations"]);
    let unset = proto::BatchRequest { ops: vec![proto::BatchOp::default()], ..Default::default() };
    assert_status(c.batch(unset).await, Code::InvalidArgument, &["no operation set"]);
    assert_eq!(dump_all(&mut c).await, before);
}

#[tokio::test]
async fn test_cases_are_placed_and_moved_and_keep_their_order_across_compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let imported = import(&mut c, "<p>m</p>", 3).await;
    let (p, t) = (imported.problem_id, imported.test_case_ids.clone());
    let at = |at| Some(proto::Position { at: Some(at) });
    use proto::position::At;
    let add =
        |position| proto::AddTestCaseRequest { problem_id: p, value: Some(int(9)), position, ..Default::default() };
    let first = c.add_test_case(add(at(At::Start(true)))).await.unwrap().into_inner().test_case_id;
    let middle = c.add_test_case(add(at(At::After(t[0])))).await.unwrap().into_inner().test_case_id;
    let mv = |test_case_id, position| proto::MoveTestCaseRequest {
        problem_id: p,
        test_case_id,
        position,
        ..Default::default()
    };
    let moved = c.move_test_case(mv(t[2], at(At::Before(first)))).await.unwrap().into_inner();
    let expected = vec![t[2], first, t[0], middle, t[1]];
    let problem = get_problem(&mut c, p).await;
    assert_eq!(ids(&problem), expected);
    assert_eq!(problem.version, moved.version);
    // Node at a time, one per page: the same order.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let request =
            proto::GetAllTestCasesRequest { problem_id: p, page_size: 1, page_token: token, ..Default::default() };
        let page = c.get_all_test_cases(request).await.unwrap().into_inner();
        paged.extend(page.test_cases.iter().map(|t| t.test_case_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, expected);

    // Errors: no position, an anchor of another problem, beside itself.
    assert_status(c.move_test_case(mv(t[0], None)).await, Code::InvalidArgument, &["position is required"]);
    let other = import(&mut c, "<p>other</p>", 1).await;
    let foreign = other.test_case_ids[0];
    assert_status(
        c.move_test_case(mv(t[0], at(At::After(foreign)))).await,
        Code::NotFound,
        &[&format!("test case {foreign}")],
    );
    assert_status(
        c.add_test_case(add(at(At::Before(foreign)))).await,
        Code::NotFound,
        &[&format!("test case {foreign}")],
    );
    assert_status(c.move_test_case(mv(t[0], at(At::After(t[0])))).await, Code::InvalidArgument, &["itself"]);
    assert_eq!(ids(&get_problem(&mut c, p).await), expected);

    c.compact_now(proto::CompactNowRequest {}).await.unwrap();
    let compacted = get_problem(&mut c, p).await;
    assert_eq!((ids(&compacted), compacted.version), (expected.clone(), moved.version));
    drop(c);
    server.stop().await;
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let restarted = get_problem(&mut c, p).await;
    assert_eq!((ids(&restarted), restarted.version), (expected, moved.version));
}

/// Every write RPC with a stale expected_version is ABORTED, names the
/// current version, and changes nothing; with the current one it succeeds
/// and answers a newer version. Reads with a stale one are ABORTED too.
#[tokio::test]
async fn every_rpc_honours_expected_version() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let imported = import(&mut c, "<p>v</p>", 3).await;
    let p = imported.problem_id;
    let t: [u64; 3] = imported.test_case_ids.clone().try_into().unwrap();
    let position = Some(proto::Position { at: Some(proto::position::At::Start(true)) });

    // (name, the write with a given expected version)
    type Write = Box<dyn Fn(Option<u64>) -> W>;
    let writes: Vec<(&str, Write)> = vec![
        (
            "UpdateProblemHtml",
            Box::new(move |v| {
                W::UpdateProblemHtml(proto::UpdateProblemHtmlRequest {
                    problem_id: p,
                    html: "h".into(),
                    expected_version: v,
                })
            }),
        ),
        (
            "UpdateProblemColumn",
            Box::new(move |v| {
                W::UpdateProblemColumn(proto::UpdateProblemColumnRequest {
                    problem_id: p,
                    name: "n".into(),
                    value: "x".into(),
                    expected_version: v,
                })
            }),
        ),
        (
            "AddTestCase",
            Box::new(move |v| {
                W::AddTestCase(proto::AddTestCaseRequest {
                    problem_id: p,
                    value: Some(int(5)),
                    expected_version: v,
                    position: None,
                })
            }),
        ),
        (
            "UpdateTestCase",
            Box::new(move |v| {
                W::UpdateTestCase(proto::UpdateTestCaseRequest {
                    problem_id: p,
                    test_case_id: t[0],
                    value: Some(int(6)),
                    expected_version: v,
                })
            }),
        ),
        (
            "SetExpectedOutput",
            Box::new(move |v| {
                W::SetExpectedOutput(proto::SetExpectedOutputRequest {
                    problem_id: p,
                    test_case_id: t[1],
                    value: Some(int(7)),
                    expected_version: v,
                })
            }),
        ),
        (
            "UpdateExpectedOutput",
            Box::new(move |v| {
                W::UpdateExpectedOutput(proto::UpdateExpectedOutputRequest {
                    problem_id: p,
                    test_case_id: t[1],
                    value: Some(int(8)),
                    expected_version: v,
                })
            }),
        ),
        (
            "MoveTestCase",
            Box::new(move |v| {
                W::MoveTestCase(proto::MoveTestCaseRequest {
                    problem_id: p,
                    test_case_id: t[2],
                    position,
                    expected_version: v,
                })
            }),
        ),
        (
            "DeleteExpectedOutput",
            Box::new(move |v| {
                W::DeleteExpectedOutput(proto::TestCaseRef { problem_id: p, test_case_id: t[1], expected_version: v })
            }),
        ),
        (
            "DeleteTestCase",
            Box::new(move |v| {
                W::DeleteTestCase(proto::TestCaseRef { problem_id: p, test_case_id: t[0], expected_version: v })
            }),
        ),
    ];
    for (name, write) in &writes {
        let current = version(&mut c, p).await;
        let before = dump_problem(&mut c, p).await;
        let status = match send(&mut c, write(Some(current - 1))).await {
            Ok(v) => panic!("{name} with a stale version succeeded (version {v})"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::Aborted, "{name}: {status:?}");
        assert!(status.message().contains(&current.to_string()), "{name}: {}", status.message());
        assert_eq!(current_version(&status), current, "{name}");
        assert_eq!(dump_problem(&mut c, p).await, before, "{name} with a stale version changed the problem");
        assert_eq!(version(&mut c, p).await, current, "{name}");
        let answered = send(&mut c, write(Some(current))).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let now = version(&mut c, p).await;
        assert!(now > current, "{name} did not make a newer version");
        assert_eq!(answered, now, "{name} answered another version than the problem has");
    }
    // Reads.
    let current = version(&mut c, p).await;
    let r = proto::ProblemRef { problem_id: p, expected_version: Some(current + 1) };
    assert_status(c.get_problem_html(r).await, Code::Aborted, &["version"]);
    assert_status(c.get_problem_meta(r).await, Code::Aborted, &["version"]);
    let all =
        proto::GetAllTestCasesRequest { problem_id: p, expected_version: Some(current + 1), ..Default::default() };
    assert_status(c.get_all_test_cases(all).await, Code::Aborted, &["version"]);
    let tc = proto::TestCaseRef { problem_id: p, test_case_id: t[2], expected_version: Some(current + 1) };
    assert_status(c.get_test_case(tc).await, Code::Aborted, &["version"]);
    let r = proto::ProblemRef { problem_id: p, expected_version: Some(current) };
    assert_eq!(c.get_problem_html(r).await.unwrap().into_inner().version, current);
    // Deleting the problem with a stale version is refused; with the right one it goes.
    let stale = proto::ProblemRef { problem_id: p, expected_version: Some(current - 1) };
    assert_status(c.delete_problem(stale).await, Code::Aborted, &["version"]);
    c.delete_problem(proto::ProblemRef { problem_id: p, expected_version: Some(current) }).await.unwrap();
    assert_eq!(list_all(&mut c, 0).await, Vec::<u64>::new());
    // A create takes no expected version (there is nothing to expect).
    let create = op(W::CreateProblem(proto::CreateProblemRequest::default()));
    let request = proto::BatchRequest {
        ops: vec![create],
        expected_versions: vec![proto::VersionCheck { problem_id: p, version: 1 }],
    };
    assert_status(c.batch(request).await, Code::NotFound, &[&format!("problem {p}")]);
}

/// Sends one single write and returns the version it answered.
async fn send(c: &mut Client, write: W) -> Result<u64, tonic::Status> {
    Ok(match write {
        W::UpdateProblemHtml(r) => c.update_problem_html(r).await?.into_inner().version,
        W::UpdateProblemColumn(r) => c.update_problem_column(r).await?.into_inner().version,
        W::AddTestCase(r) => c.add_test_case(r).await?.into_inner().version,
        W::UpdateTestCase(r) => c.update_test_case(r).await?.into_inner().version,
        W::DeleteTestCase(r) => c.delete_test_case(r).await?.into_inner().version,
        W::SetExpectedOutput(r) => c.set_expected_output(r).await?.into_inner().version,
        W::UpdateExpectedOutput(r) => c.update_expected_output(r).await?.into_inner().version,
        W::DeleteExpectedOutput(r) => c.delete_expected_output(r).await?.into_inner().version,
        W::MoveTestCase(r) => c.move_test_case(r).await?.into_inner().version,
        other => unreachable!("not a single write of this test: {other:?}"),
    })
}

#[tokio::test]
async fn versions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let a = import(&mut c, "<p>a</p>", 2).await;
    let b = create(&mut c, "<p>b</p>", Columns::new()).await;
    add(&mut c, b, int(1)).await;
    let tc = proto::TestCaseRef { problem_id: a.problem_id, test_case_id: a.test_case_ids[0], ..Default::default() };
    c.delete_test_case(tc).await.unwrap();
    let before = (get_problem(&mut c, a.problem_id).await, get_problem(&mut c, b).await);
    assert!(before.0.version > a.version);
    drop(c);
    server.stop().await;
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    assert_eq!((get_problem(&mut c, a.problem_id).await, get_problem(&mut c, b).await), before);
}

/// In a batch, a test case can be placed beside one the same batch adds
/// (`before_op`, `after_op`); outside a batch those fields are refused.
#[tokio::test]
async fn a_batch_places_test_cases_beside_ones_it_adds() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    use proto::position::At;
    let at = |at| Some(proto::Position { at: Some(at) });
    let add = |value: i64, position| proto::BatchOp {
        op: Some(W::AddTestCase(proto::AddTestCaseRequest { value: Some(int(value)), position, ..Default::default() })),
        problem_from_op: Some(0),
        ..Default::default()
    };
    let ops = vec![
        op(W::CreateProblem(proto::CreateProblemRequest::default())),
        add(2, None),
        add(1, at(At::BeforeOp(1))),
        add(3, at(At::AfterOp(1))),
    ];
    let done = c.batch(proto::BatchRequest { ops, ..Default::default() }).await.unwrap().into_inner();
    let problem = get_problem(&mut c, done.created_ids[0]).await;
    let values: Vec<Canon> = problem.test_cases.iter().map(|t| canon_field(&t.input)).collect();
    assert_eq!(values, [Canon::Int(1), Canon::Int(2), Canon::Int(3)]);
    assert_eq!(ids(&problem), [done.created_ids[2], done.created_ids[1], done.created_ids[3]]);
    // An operation that added nothing cannot be an anchor.
    let ops = vec![op(W::CreateProblem(proto::CreateProblemRequest::default())), add(1, at(At::AfterOp(0)))];
    let refused = c.batch(proto::BatchRequest { ops, ..Default::default() }).await;
    assert_status(refused, Code::InvalidArgument, &["operation 1", "refers to operation 0"]);
    let single = proto::AddTestCaseRequest {
        problem_id: done.created_ids[0],
        value: Some(int(9)),
        position: at(At::BeforeOp(0)),
        ..Default::default()
    };
    assert_status(c.add_test_case(single).await, Code::InvalidArgument, &["before_op", "Batch only"]);
    assert_eq!(get_problem(&mut c, done.created_ids[0]).await.test_cases.len(), 3);
}
