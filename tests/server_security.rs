//! Security and hardening of the real `lse_server`: bearer tokens and their
//! roles, TLS, the rule for non-loopback addresses, the data directory's
//! mode, load shedding and deadlines.
//!
//! Nothing here depends on how fast the machine is. Calls that must stay
//! in flight are held by a hand-driven HTTP/2 connection that sends a
//! call's headers and never its body; deadlines are sent raw, so only the
//! server's timer can fire (see `RawConnection`).

mod server_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use server_support::*;
use stratum::proto::{self, lse_client::LseClient};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const RW: &str = "rw-0123456789abcdef0123456789abcdef";
const RO: &str = "ro-0123456789abcdef0123456789abcdef";
/// The longest a condition that must come true may take.
const SETTLE: Duration = Duration::from_secs(20);

/// Writes a token file with one read-write and one read-only token.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# test tokens\nrw {RW}\nro {RO}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A CA and a server certificate it signed, for `localhost` and
/// `127.0.0.1`, as PEM files in `dir`.
struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, key)
}

fn pki(dir: &Path) -> Pki {
    let (ca_params, ca_key) = ca("Stratum test CA");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert_pem = params.signed_by(&key, &issuer).unwrap().pem();
    let (cert, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki { ca_pem, cert, key: key_path }
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Polls `f` until it gives `Some`, for at most [`SETTLE`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ----- tokens ----------------------------------------------------------------

async fn token_server(tmp: &Path) -> TestServer {
    let tokens = token_file(tmp);
    TestServer::start(&tmp.join("data"), &["--token-file", arg(&tokens)]).await
}

#[tokio::test]
async fn without_a_token_every_call_but_health_is_unauthenticated() {
    let tmp = tempfile::tempdir().unwrap();
    let server = token_server(tmp.path()).await;
    let mut client = server.client().await;
    let read = client.get_stats(proto::GetStatsRequest {}).await;
    assert_status(read, Code::Unauthenticated, &["authorization: Bearer"]);
    let write = client.create_problem(proto::CreateProblemRequest::default()).await;
    assert_status(write, Code::Unauthenticated, &["authorization: Bearer"]);
    let mut lse = LseClient::new(server.channel().await);
    assert_status(lse.flush(proto::FlushRequest {}).await, Code::Unauthenticated, &[]);

    assert_eq!(health(server.channel().await).await.unwrap(), ServingStatus::Serving, "health needs no token");

    // Reflection describes the schema only, but needs a token too.
    let mut raw = RawConnection::connect(server.addr).await;
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let (code, _) = raw.unary(reflection, &proto::GetStatsRequest {}, &[]).await;
    assert_eq!(code, Code::Unauthenticated);
    let ro = format!("Bearer {RO}");
    let (code, message) = raw.unary(reflection, &proto::GetStatsRequest {}, &[("authorization", &ro)]).await;
    assert_ne!(code, Code::Unauthenticated, "{message}");
    assert_ne!(code, Code::PermissionDenied, "{message}");
}

#[tokio::test]
async fn a_token_not_in_the_file_is_unauthenticated() {
    let tmp = tempfile::tempdir().unwrap();
    let server = token_server(tmp.path()).await;
    let mut client = server.client().await;
    for token in ["not-a-token-of-this-server-0000", &RW[..RW.len() - 1], &format!("{RW}0")] {
        let result = client.get_stats(bearer(proto::GetStatsRequest {}, token)).await;
        assert_status(result, Code::Unauthenticated, &["not valid"]);
    }
    let mut request = tonic::Request::new(proto::GetStatsRequest {});
    request.metadata_mut().insert("authorization", format!("Basic {RW}").parse().unwrap());
    assert_status(client.get_stats(request).await, Code::Unauthenticated, &["Bearer"]);
}

/// Every write RPC of the proto, with a read-only token: PERMISSION_DENIED.
#[tokio::test]
async fn a_read_only_token_reads_and_every_write_is_permission_denied_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = token_server(tmp.path()).await;
    let mut client = server.client().await;

    let created = proto::CreateProblemRequest { html: "<p>kept</p>".into(), columns: columns(&[("k", "v")]) };
    let problem_id = client.create_problem(bearer(created, RW)).await.unwrap().into_inner().problem_id;
    let add = proto::AddTestCaseRequest { problem_id, value: Some(int(1)), ..Default::default() };
    let test_case_id = client.add_test_case(bearer(add, RW)).await.unwrap().into_inner().test_case_id;
    let output =
        proto::SetExpectedOutputRequest { problem_id, test_case_id, value: Some(int(2)), ..Default::default() };
    client.set_expected_output(bearer(output, RW)).await.unwrap();
    let problem = proto::ProblemRef { problem_id, ..Default::default() };
    let test_case = proto::TestCaseRef { problem_id, test_case_id, ..Default::default() };
    let before_stats = client.get_stats(bearer(proto::GetStatsRequest {}, RO)).await.unwrap().into_inner();

    // Every read works with the read-only token.
    let html = client.get_problem_html(bearer(problem, RO)).await.unwrap().into_inner().html;
    assert_eq!(html, "<p>kept</p>");
    client.get_problem_meta(bearer(problem, RO)).await.unwrap();
    client.list_problems(bearer(proto::ListProblemsRequest::default(), RO)).await.unwrap();
    client.get_test_case(bearer(test_case, RO)).await.unwrap();
    client.get_all_test_cases(bearer(whole_chain(problem), RO)).await.unwrap();
    client.get_expected_output(bearer(test_case, RO)).await.unwrap();

    let value = || Some(int(9));
    let writes = [
        ("CreateProblem", client.create_problem(bearer(proto::CreateProblemRequest::default(), RO)).await.map(drop)),
        (
            "UpdateProblemHtml",
            client
                .update_problem_html(bearer(
                    proto::UpdateProblemHtmlRequest { problem_id, html: "x".into(), ..Default::default() },
                    RO,
                ))
                .await
                .map(drop),
        ),
        (
            "UpdateProblemColumn",
            client
                .update_problem_column(bearer(
                    proto::UpdateProblemColumnRequest {
                        problem_id,
                        name: "k".into(),
                        value: "w".into(),
                        ..Default::default()
                    },
                    RO,
                ))
                .await
                .map(drop),
        ),
        ("DeleteProblem", client.delete_problem(bearer(problem, RO)).await.map(drop)),
        (
            "AddTestCase",
            client
                .add_test_case(bearer(
                    proto::AddTestCaseRequest { problem_id, value: value(), ..Default::default() },
                    RO,
                ))
                .await
                .map(drop),
        ),
        (
            "UpdateTestCase",
            client
                .update_test_case(bearer(
                    proto::UpdateTestCaseRequest { problem_id, test_case_id, value: value(), ..Default::default() },
                    RO,
                ))
                .await
                .map(drop),
        ),
        ("DeleteTestCase", client.delete_test_case(bearer(test_case, RO)).await.map(drop)),
        (
            "SetExpectedOutput",
            client
                .set_expected_output(bearer(
                    proto::SetExpectedOutputRequest { problem_id, test_case_id, value: value(), ..Default::default() },
                    RO,
                ))
                .await
                .map(drop),
        ),
        (
            "UpdateExpectedOutput",
            client
                .update_expected_output(bearer(
                    proto::UpdateExpectedOutputRequest {
                        problem_id,
                        test_case_id,
                        value: value(),
                        ..Default::default()
                    },
                    RO,
                ))
                .await
                .map(drop),
        ),
        ("DeleteExpectedOutput", client.delete_expected_output(bearer(test_case, RO)).await.map(drop)),
        ("Flush", client.flush(bearer(proto::FlushRequest {}, RO)).await.map(drop)),
        ("CompactNow", client.compact_now(bearer(proto::CompactNowRequest {}, RO)).await.map(drop)),
    ];
    for (method, result) in writes {
        let status = result.expect_err(method);
        assert_eq!(status.code(), Code::PermissionDenied, "{method}: {status:?}");
        assert!(status.message().contains(method) && status.message().contains("read-only"), "{status:?}");
    }

    let after_stats = client.get_stats(bearer(proto::GetStatsRequest {}, RO)).await.unwrap().into_inner();
    assert_eq!(after_stats.records, before_stats.records, "a refused write appended a record");
    assert_eq!(after_stats.fsyncs, before_stats.fsyncs, "a refused Flush synced");
    assert_eq!(after_stats.compactions, before_stats.compactions);
    let html = client.get_problem_html(bearer(problem, RO)).await.unwrap().into_inner().html;
    assert_eq!(html, "<p>kept</p>");
    let meta = client.get_problem_meta(bearer(problem, RO)).await.unwrap().into_inner().columns;
    assert_eq!(meta, columns(&[("k", "v")]));
    let value = client.get_test_case(bearer(test_case, RO)).await.unwrap().into_inner();
    assert_eq!(canon_field(&value.test_case.unwrap().value), Canon::Int(1));
    let output = client.get_expected_output(bearer(test_case, RO)).await.unwrap().into_inner();
    assert_eq!(canon_field(&output.value), Canon::Int(2));
}

#[tokio::test]
async fn a_read_write_token_writes_and_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let server = token_server(tmp.path()).await;
    let mut client = server.client().await;
    let created = proto::CreateProblemRequest { html: "<p>rw</p>".into(), columns: Default::default() };
    let problem_id = client.create_problem(bearer(created, RW)).await.unwrap().into_inner().problem_id;
    let update = proto::UpdateProblemHtmlRequest { problem_id, html: "<p>rw 2</p>".into(), ..Default::default() };
    client.update_problem_html(bearer(update, RW)).await.unwrap();
    client.flush(bearer(proto::FlushRequest {}, RW)).await.unwrap();
    client.compact_now(bearer(proto::CompactNowRequest {}, RW)).await.unwrap();
    let html = client
        .get_problem_html(bearer(proto::ProblemRef { problem_id, ..Default::default() }, RW))
        .await
        .unwrap()
        .into_inner()
        .html;
    assert_eq!(html, "<p>rw 2</p>");
}

#[tokio::test]
async fn a_bad_token_file_stops_the_server_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "rw 0123456789abcdef\nsuper 0123456789abcdefX\n").unwrap();
    let data = tmp.path().join("data");
    let exited = run_to_exit(&["--port", "0", "--data-dir", arg(&data), "--token-file", arg(&tokens)]).await;
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("line 2") && exited.stderr.contains("neither ro nor rw"), "{}", exited.stderr);
    assert!(!exited.stderr.contains("0123456789abcdef"), "the error repeats a token: {}", exited.stderr);
    assert!(!data.exists(), "the data directory was created before the configuration was checked");

    // Fields swapped: the token stands where the role should.
    std::fs::write(&tokens, "9f1c2e0b7a4d4c1e8b3f6a5d2c9e7b10 rw\n").unwrap();
    let exited = run_to_exit(&["--port", "0", "--data-dir", arg(&data), "--token-file", arg(&tokens)]).await;
    assert!(!exited.status.success() && exited.stderr.contains("line 1"), "{}", exited.stderr);
    assert!(!exited.stderr.contains("9f1c2e0b"), "the error repeats a token: {}", exited.stderr);
}

// ----- TLS -------------------------------------------------------------------

#[tokio::test]
async fn a_tls_server_answers_a_client_that_trusts_its_ca_and_nobody_else() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let args = ["--tls-cert", arg(&pki.cert), "--tls-key", arg(&pki.key)];
    let server = TestServer::start(&tmp.path().join("data"), &args).await;

    let channel = server.tls_channel(&pki.ca_pem).await.expect("a TLS connection with the CA");
    let mut client = LseClient::new(channel.clone());
    let problem_id = create(&mut client, "<p>over TLS</p>", Columns::new()).await;
    assert_eq!(html(&mut client, problem_id).await, "<p>over TLS</p>");
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);

    // Plain text to a TLS server: no HTTP/2 connection, so no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT);
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let result = LseClient::new(channel).get_stats(proto::GetStatsRequest {}).await;
            assert!(result.is_err(), "a plaintext call to a TLS server succeeded: {result:?}");
        }
    }

    // A client that trusts another CA refuses the server's certificate.
    let (other_params, other_key) = ca("Some other CA");
    let other_ca = other_params.self_signed(&other_key).unwrap().pem();
    match server.tls_channel(&other_ca).await {
        Err(_) => {}
        Ok(channel) => {
            let result = LseClient::new(channel).get_stats(proto::GetStatsRequest {}).await;
            assert!(result.is_err(), "a client trusting another CA was served: {result:?}");
        }
    }
}

#[tokio::test]
async fn tls_needs_both_a_certificate_and_a_key_that_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let data = tmp.path().join("data");
    let base = ["--port", "0", "--data-dir", arg(&data)];
    let exited = run_to_exit(&[&base[..], &["--tls-cert", arg(&pki.cert)]].concat()).await;
    assert!(!exited.status.success(), "{}", exited.stderr);
    assert!(exited.stderr.contains("--tls-key"), "{}", exited.stderr);

    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let exited = run_to_exit(&[&base[..], &["--tls-cert", arg(&garbage), "--tls-key", arg(&pki.key)]].concat()).await;
    assert!(!exited.status.success(), "{}", exited.stderr);
    assert!(exited.stderr.contains("--tls-cert"), "{}", exited.stderr);
}

// ----- the address rule ----------------------------------------------------

#[tokio::test]
async fn a_non_loopback_address_without_tls_and_tokens_is_refused_without_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let tokens = token_file(tmp.path());
    let base = ["--port", "0", "--host", "0.0.0.0", "--data-dir", arg(&data)];

    let exited = run_to_exit(&base).await;
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("refusing to listen on 0.0.0.0"), "{}", exited.stderr);
    assert!(exited.stderr.contains("--allow-insecure-remote"), "{}", exited.stderr);
    assert!(!data.exists(), "the refused server created its data directory");

    // Tokens alone are not enough: they would travel in plain text.
    let exited = run_to_exit(&[&base[..], &["--token-file", arg(&tokens)]].concat()).await;
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("without TLS"), "{}", exited.stderr);
}

#[tokio::test]
async fn a_non_loopback_address_without_tls_and_tokens_is_allowed_with_the_flag_and_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::try_start_on("0.0.0.0", &data, &["--allow-insecure-remote"]).await.unwrap();
    let mut client = server.client().await;
    let problem_id = create(&mut client, "<p>remote</p>", Columns::new()).await;
    assert_eq!(html(&mut client, problem_id).await, "<p>remote</p>");
    let stderr = server.stderr();
    assert!(stderr.contains("WARN") && stderr.contains("insecure remote access"), "{stderr}");
}

#[tokio::test]
async fn a_non_loopback_address_with_tls_and_tokens_needs_no_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let tokens = token_file(tmp.path());
    let args = ["--tls-cert", arg(&pki.cert), "--tls-key", arg(&pki.key), "--token-file", arg(&tokens)];
    let server = TestServer::try_start_on("0.0.0.0", &tmp.path().join("data"), &args).await.unwrap();
    let mut client = LseClient::new(server.tls_channel(&pki.ca_pem).await.unwrap());
    client.get_stats(bearer(proto::GetStatsRequest {}, RO)).await.unwrap();
    assert_status(client.get_stats(proto::GetStatsRequest {}).await, Code::Unauthenticated, &[]);
    assert!(!server.stderr().contains("insecure"), "{}", server.stderr());
}

// ----- the data directory ----------------------------------------------------

#[tokio::test]
async fn a_data_directory_the_server_creates_has_mode_0700() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("parent").join("data");
    let server = TestServer::start(&data, &[]).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(data.parent().unwrap()), 0o700, "a parent the server created");
    assert!(!server.stderr().contains("open to other users"), "{}", server.stderr());
}

#[tokio::test]
async fn an_existing_data_directory_keeps_its_mode_and_a_shared_one_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start(&data, &[]).await;
    assert_eq!(mode(&data), 0o755, "the server changed an existing directory's mode");
    assert!(server.stderr().contains("open to other users"), "{}", server.stderr());
}

// ----- load shedding ---------------------------------------------------------

const GET_STATS: &str = "/lse.Lse/GetStats";

/// Holds GetStats calls on `raw` until `n` of them are in flight on the
/// server and it refuses the next call. A probe that gets a place while the
/// held calls are still arriving makes one of them be refused (answered at
/// once, so no longer held): such a call is replaced, until the server is
/// full.
async fn fill(server: &TestServer, raw: &mut RawConnection, held: &mut Vec<HeldCall>, n: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        held.retain_mut(|call| !call.answered());
        while held.len() < n {
            held.push(raw.hold(GET_STATS).await);
        }
        if stats_code(server).await == Code::ResourceExhausted {
            return;
        }
        assert!(Instant::now() < deadline, "{n} held calls did not fill the server within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A GetStats on a fresh connection: its status code.
async fn stats_code(server: &TestServer) -> Code {
    let mut client = server.client().await;
    match client.get_stats(proto::GetStatsRequest {}).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn beyond_the_limit_calls_are_refused_at_once_and_health_still_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &["--max-concurrent-requests", "4"]).await;
    let mut raw = RawConnection::connect(server.addr).await;

    // Three held calls leave room for a fourth.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw.hold(GET_STATS).await);
    }
    assert_eq!(stats_code(&server).await, Code::Ok);

    // With a fourth held, every further call is refused, at once.
    fill(&server, &mut raw, &mut held, 4).await;
    let refused = eventually("a refused call", || async {
        let mut client = server.client().await;
        match client.get_stats(proto::GetStatsRequest {}).await {
            Err(status) if status.code() == Code::ResourceExhausted => Some(status),
            _ => None,
        }
    })
    .await;
    assert!(refused.message().contains("--max-concurrent-requests"), "{refused:?}");
    let mut client = server.client().await;
    let write = client.create_problem(proto::CreateProblemRequest::default()).await;
    assert_status(write, Code::ResourceExhausted, &["overloaded"]);
    assert_eq!(health(server.channel().await).await.unwrap(), ServingStatus::Serving, "health is never shed");

    // Once the held calls go away, calls are served again.
    held.clear();
    eventually("a served call", || async { (stats_code(&server).await == Code::Ok).then_some(()) }).await;
}

/// The default limit (1024) leaves room for a thousand calls in flight:
/// with all 1024 places taken a call is refused, and with 1000 a read and
/// health answer.
#[tokio::test]
async fn health_and_reads_answer_while_a_thousand_calls_are_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &[]).await;
    let mut client = server.client().await;
    let problem_id = create(&mut client, "<p>busy</p>", Columns::new()).await;

    let mut raw = RawConnection::connect(server.addr).await;
    let mut held = Vec::new();
    fill(&server, &mut raw, &mut held, 1024).await;
    assert_eq!(health(server.channel().await).await.unwrap(), ServingStatus::Serving);

    held.truncate(1000);
    let html = eventually("a read with 1000 calls in flight", || async {
        let mut client = server.client().await;
        client
            .get_problem_html(proto::ProblemRef { problem_id, ..Default::default() })
            .await
            .ok()
            .map(|r| r.into_inner().html)
    })
    .await;
    assert_eq!(html, "<p>busy</p>");
    assert_eq!(health(server.channel().await).await.unwrap(), ServingStatus::Serving);
    assert_eq!(held.len(), 1000);
}

// ----- deadlines -------------------------------------------------------------

/// A problem whose test cases hold `count` values of `bytes` bytes each.
async fn big_chain(client: &mut Client, count: usize, bytes: usize) -> u64 {
    let problem_id = create(client, "<p>big</p>", Columns::new()).await;
    for i in 0..count {
        add(client, problem_id, string(&format!("{i}").repeat(bytes))).await;
    }
    problem_id
}

/// tonic alone would answer CANCELLED "Timeout expired": the server answers
/// DEADLINE_EXCEEDED. Reading 16 MiB takes the blocking pool, so it cannot
/// be done within the first poll, the one chance a call whose deadline is
/// already passed gets (the server gives up 1 ms early).
#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &[]).await;
    let mut client = server.client().await;
    let problem_id = big_chain(&mut client, 4, 4 << 20).await;

    let mut raw = RawConnection::connect(server.addr).await;
    let request = whole_chain(proto::ProblemRef { problem_id, ..Default::default() });
    let path = "/lse.Lse/GetAllTestCases";
    for timeout in ["1m", "1000u", "500u"] {
        let (code, message) = raw.unary(path, &request, &[("grpc-timeout", timeout)]).await;
        assert_eq!(code, Code::DeadlineExceeded, "grpc-timeout {timeout}: {message}");
        assert!(message.contains("deadline exceeded"), "{message}");
    }
    // The same call with time to spare is answered.
    let (code, message) = raw.unary(path, &request, &[("grpc-timeout", "20S")]).await;
    assert_eq!(code, Code::Ok, "{message}");
}

// ----- connections -----------------------------------------------------------

#[tokio::test]
async fn a_connection_past_its_maximum_age_is_closed_and_clients_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--max-connection-age-secs", "1", "--max-connection-age-grace-secs", "1"];
    let server = TestServer::start(&tmp.path().join("data"), &args).await;
    let mut client = server.client().await;
    let problem_id = create(&mut client, "<p>aged</p>", Columns::new()).await;
    let raw = RawConnection::connect(server.addr).await;
    eventually("the aged connection closed", || async { raw.is_closed().then_some(()) }).await;
    // tonic's channel reconnects after the server sent it away.
    let html = eventually("a call after the connection aged", || async {
        client
            .clone()
            .get_problem_html(proto::ProblemRef { problem_id, ..Default::default() })
            .await
            .ok()
            .map(|r| r.into_inner().html)
    })
    .await;
    assert_eq!(html, "<p>aged</p>");
}

/// With `--max-connection-idle-secs`, a connection without a call in flight
/// for that long is closed (keepalive pings do not count), one with a call
/// in flight is not, and a client's channel just reconnects.
#[tokio::test]
async fn a_connection_idle_past_the_limit_is_closed_and_one_with_a_call_in_flight_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--max-connection-idle-secs", "1", "--http2-keepalive-interval-secs", "1"];
    let server = TestServer::start(&tmp.path().join("data"), &args).await;
    let mut client = server.client().await;
    let problem_id = create(&mut client, "<p>idle</p>", Columns::new()).await;

    let mut busy = RawConnection::connect(server.addr).await;
    let _held = busy.hold(GET_STATS).await;
    let mut idle = RawConnection::connect(server.addr).await;
    assert_eq!(idle.unary(GET_STATS, &proto::GetStatsRequest {}, &[]).await.0, Code::Ok);
    let started = Instant::now();
    eventually("the idle connection closed", || async { idle.is_closed().then_some(()) }).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "closed before it was idle for a second");
    assert!(!busy.is_closed(), "a connection with a call in flight was closed as idle");

    let html = eventually("a call after the client's connection went idle", || async {
        client
            .clone()
            .get_problem_html(proto::ProblemRef { problem_id, ..Default::default() })
            .await
            .ok()
            .map(|r| r.into_inner().html)
    })
    .await;
    assert_eq!(html, "<p>idle</p>");
}

/// A streaming call is in flight until its stream ends, not only until its
/// first answer: a health Watch keeps its connection from being closed as
/// idle.
#[tokio::test]
async fn a_connection_with_an_open_stream_is_not_idle() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &["--max-connection-idle-secs", "1"]).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("the current status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // Well past the idle time, the stream is still open: no end, no error,
    // just no news.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let next = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
    assert!(next.is_err(), "the watch ended while it was open: {next:?}");
}

/// Opens an HTTP/2 connection by hand and then never answers anything (in
/// particular no PING): how long until the server closes it, if it does
/// within `within`.
async fn silent_peer_lifetime(server: &TestServer, within: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The client preface, then an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.ok()
}

#[tokio::test]
async fn a_peer_that_does_not_answer_keepalive_pings_is_disconnected() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--http2-keepalive-interval-secs", "1", "--http2-keepalive-timeout-secs", "1"];
    let server = TestServer::start(&tmp.path().join("data"), &args).await;
    let lifetime = silent_peer_lifetime(&server, SETTLE).await;
    assert!(lifetime.is_some(), "a peer that never answered a ping is still connected after {SETTLE:?}");

    // Control: without pings the same peer stays connected (so it was the
    // keepalive that closed it above).
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &["--http2-keepalive-interval-secs", "0"]).await;
    let lifetime = silent_peer_lifetime(&server, Duration::from_secs(3)).await;
    assert_eq!(lifetime, None, "the server closed a connection without keepalive");
}
