//! Shared support for the server's integration tests: runs the real
//! `lse_server` binary on a data directory, connects clients, and compares
//! what the server returns with what a test expects.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stratum::proto::lse_client::LseClient;
use stratum::proto::value::Kind;
use stratum::proto::{self, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub type Client = LseClient<Channel>;
pub type Columns = BTreeMap<String, String>;

/// How long a server may take to start or to stop.
const STARTUP: Duration = Duration::from_secs(30);
const SHUTDOWN: Duration = Duration::from_secs(30);
/// The longest any one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variables the server reads; tests clear them so that the
/// caller's environment cannot change a test.
const SERVER_ENV: &[&str] = &[
    "LSE_PORT",
    "LSE_HOST",
    "LSE_DATA_DIR",
    "LSE_SYNC",
    "LSE_SEGMENT_BYTES",
    "LSE_MAX_BLOB_BYTES",
    "LSE_MAX_VALUE_BYTES",
    "LSE_MAX_MESSAGE_BYTES",
    "LSE_MAX_BATCH_BYTES",
    "LSE_COMPACT_INTERVAL_SECS",
    "LSE_COMPACT_MIN_GARBAGE_BYTES",
    "LSE_COMPACT_MIN_GARBAGE_RATIO",
    "LSE_MAX_CONCURRENT_REQUESTS",
    "LSE_HTTP2_KEEPALIVE_INTERVAL_SECS",
    "LSE_HTTP2_KEEPALIVE_TIMEOUT_SECS",
    "LSE_MAX_CONNECTION_AGE_SECS",
    "LSE_MAX_CONNECTION_AGE_GRACE_SECS",
    "LSE_TLS_CERT",
    "LSE_TLS_KEY",
    "LSE_TOKEN_FILE",
    "LSE_ALLOW_INSECURE_REMOTE",
    "LSE_LOG",
];

fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lse_server"));
    for var in SERVER_ENV {
        command.env_remove(var);
    }
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Reads a pipe to its end on a thread, into a shared string.
fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
    text
}

/// A running `lse_server` child process. Dropping it kills the process.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl TestServer {
    /// Starts the server on `dir` (port 0, host 127.0.0.1) with `extra_args`
    /// and waits until it listens.
    pub async fn start(dir: &Path, extra_args: &[&str]) -> TestServer {
        match TestServer::try_start(dir, extra_args).await {
            Ok(server) => server,
            Err(exited) => panic!("lse_server exited ({}) before listening; stderr:\n{}", exited.status, exited.stderr),
        }
    }

    /// Like [`TestServer::start`], but a server that exits before it
    /// listens is an `Err` with its exit status and output.
    pub async fn try_start(dir: &Path, extra_args: &[&str]) -> Result<TestServer, Exited> {
        TestServer::try_start_on("127.0.0.1", dir, extra_args).await
    }

    /// Like [`TestServer::try_start`], listening on `host`. `addr` is where
    /// a client connects: 127.0.0.1 for an unspecified host (0.0.0.0).
    pub async fn try_start_on(host: &str, dir: &Path, extra_args: &[&str]) -> Result<TestServer, Exited> {
        let dir_arg = dir.to_str().expect("utf-8 temp dir");
        let mut args = vec!["--port", "0", "--host", host, "--data-dir", dir_arg];
        args.extend_from_slice(extra_args);
        let mut child = server_command(&args).spawn().expect("spawning lse_server");
        let stderr = drain(child.stderr.take().unwrap());

        // Find the ready line on a thread, then keep draining stdout.
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("lse_server listening on ") {
                    let _ = ready_tx.send(addr.trim().to_string());
                    break;
                }
            }
            for _ in lines {}
        });

        let deadline = Instant::now() + STARTUP;
        let addr = loop {
            match ready_rx.try_recv() {
                Ok(addr) => break addr,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = child.wait().unwrap();
                    // Give the stderr thread a moment to catch the last line.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let stderr = stderr.lock().unwrap().clone();
                    return Err(Exited { status, stdout: String::new(), stderr });
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lse_server did not listen within {STARTUP:?}; stderr:\n{}", stderr.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("bad listening address {addr:?}: {e}"));
        assert_eq!(addr.ip().to_string(), host);
        assert_ne!(addr.port(), 0);
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(TestServer { child: Some(child), addr, dir: dir.to_path_buf(), stderr })
    }

    /// A new client on its own channel (connection). Every request has a
    /// deadline, so a server that stops answering fails the test instead of
    /// hanging it.
    pub async fn client(&self) -> Client {
        LseClient::new(self.channel().await).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20)
    }

    /// A new channel (connection) to the server, with a request deadline.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr))
    }

    /// A new channel to a TLS server whose certificate is signed by the CA
    /// `ca_pem`, for the name `localhost`.
    pub async fn tls_channel(&self, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
        Channel::from_shared(format!("https://localhost:{}", self.addr.port()))
            .unwrap()
            .timeout(REQUEST_TIMEOUT)
            .tls_config(tls)?
            .connect()
            .await
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already stopped").id()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status().expect("running kill");
        assert!(status.success(), "kill {signal} {} failed: {status}", self.pid());
    }

    async fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("server already stopped");
        let deadline = Instant::now() + SHUTDOWN;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!("lse_server did not exit within {SHUTDOWN:?}; stderr:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM, waits for the exit and asserts it was clean (code 0).
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let status = self.wait().await;
        assert!(status.success(), "lse_server exited with {status} after SIGTERM; stderr:\n{}", self.stderr());
        assert_eq!(status.code(), Some(0));
    }

    /// Sends SIGKILL and waits for the process to die.
    pub async fn kill9(mut self) {
        self.signal("-KILL");
        let status = self.wait().await;
        assert!(!status.success(), "lse_server survived SIGKILL: {status}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a server run that was expected to fail ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `lse_server` with exactly `args` until it exits (it must, within
/// the startup timeout: these are runs that must not start).
pub async fn run_to_exit(args: &[&str]) -> Exited {
    let mut child = server_command(args).spawn().expect("spawning lse_server");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + STARTUP;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lse_server {args:?} kept running; stdout:\n{}\nstderr:\n{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The drain threads finish at EOF, right after the exit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    Exited { status, stdout, stderr }
}

/// The health service's answer for the whole server (`""`).
pub async fn health(channel: Channel) -> Result<ServingStatus, Status> {
    let request = HealthCheckRequest { service: String::new() };
    let status = HealthClient::new(channel).check(request).await?.into_inner().status;
    Ok(ServingStatus::try_from(status).expect("a known serving status"))
}

/// `message` as a request carrying `authorization: Bearer token`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("an ASCII token"));
    request
}

// ----- raw HTTP/2 -----------------------------------------------------------

/// One HTTP/2 connection driven by hand (the `h2` crate), for calls a tonic
/// client cannot make: a unary call whose request never ends (held in
/// flight until dropped), or one whose `grpc-timeout` the client does not
/// enforce itself (tonic's client would cancel it on its own timer).
pub struct RawConnection {
    addr: SocketAddr,
    send: h2::client::SendRequest<bytes::Bytes>,
    connection: tokio::task::JoinHandle<()>,
}

/// A call sent by [`RawConnection::hold`]: its request body never ends, so
/// the server's handler waits for it until this is dropped (which resets
/// the stream).
pub struct HeldCall {
    response: h2::client::ResponseFuture,
    _body: h2::SendStream<bytes::Bytes>,
}

/// A gRPC message frame: uncompressed, its length, its bytes.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

impl HeldCall {
    /// Breaks the call: resets its stream (as a client that crashed or gave
    /// up mid-upload would).
    pub fn reset(mut self) {
        self._body.send_reset(h2::Reason::CANCEL);
    }

    /// Whether the server has answered the call already (refused it, say),
    /// as far as the connection has read.
    pub fn answered(&mut self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(&mut self.response).poll(&mut cx).is_ready()
    }
}

impl RawConnection {
    pub async fn connect(addr: SocketAddr) -> RawConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connecting");
        tcp.set_nodelay(true).unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        RawConnection { addr, send, connection }
    }

    /// Whether the connection has ended (the server closed it).
    pub fn is_closed(&self) -> bool {
        self.connection.is_finished()
    }

    fn request(&self, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut request = http::Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    /// Starts a call to `path` and never finishes its request.
    pub async fn hold(&mut self, path: &str) -> HeldCall {
        let request = self.request(path, &[]);
        let mut send = self.send.clone().ready().await.expect("a stream");
        let (response, body) = send.send_request(request, false).expect("sending headers");
        HeldCall { response, _body: body }
    }

    /// Starts a client-streaming call to `path`, sends `message` as its
    /// first message and leaves the stream open: the test then breaks it
    /// ([`HeldCall::reset`]) or drops it.
    pub async fn open_stream(&mut self, path: &str, message: &impl prost::Message) -> HeldCall {
        let mut call = self.hold(path).await;
        call._body.send_data(grpc_frame(message).into(), false).expect("sending the first message");
        call
    }

    /// A unary call of `path` with `message` and extra `headers`: its
    /// grpc-status and grpc-message.
    pub async fn unary(
        &mut self,
        path: &str,
        message: &impl prost::Message,
        headers: &[(&str, &str)],
    ) -> (Code, String) {
        let request = self.request(path, headers);
        let mut send = self.send.clone().ready().await.expect("a stream");
        let (response, mut body) = send.send_request(request, false).expect("sending headers");
        body.send_data(grpc_frame(message).into(), true).expect("sending the message");
        let response = tokio::time::timeout(REQUEST_TIMEOUT, response).await.expect("an answer").expect("a response");
        let (parts, mut body) = response.into_parts();
        let trailers = if parts.headers.contains_key("grpc-status") {
            parts.headers // trailers-only
        } else {
            while let Some(data) = body.data().await {
                let data = data.expect("response data");
                let _ = body.flow_control().release_capacity(data.len());
            }
            body.trailers().await.expect("trailers").expect("grpc trailers")
        };
        let code = trailers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok()).expect("grpc-status");
        let message = trailers.get("grpc-message").map(|v| percent_decode(v.as_bytes())).unwrap_or_default();
        (Code::from_i32(code), message)
    }
}

/// A grpc-message as sent: percent-encoded UTF-8.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ----- values ---------------------------------------------------------------

pub fn int(v: i64) -> Value {
    Value { kind: Some(Kind::IntValue(v)) }
}

pub fn double(v: f64) -> Value {
    Value { kind: Some(Kind::DoubleValue(v)) }
}

pub fn string(v: &str) -> Value {
    Value { kind: Some(Kind::StringValue(v.to_string())) }
}

pub fn int_list(values: Vec<i64>) -> Value {
    Value { kind: Some(Kind::IntList(proto::IntList { values })) }
}

pub fn string_list(values: &[&str]) -> Value {
    Value { kind: Some(Kind::StringList(proto::StringList { values: values.iter().map(|s| s.to_string()).collect() })) }
}

pub fn string_map(entries: &[(&str, &str)]) -> Value {
    let entries = entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Value { kind: Some(Kind::StringMap(proto::StringMap { entries })) }
}

pub fn columns(pairs: &[(&str, &str)]) -> Columns {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A value in a form that compares doubles by bit pattern (so NaN equals
/// NaN and -0.0 differs from 0.0): "the same bits came back".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Canon {
    Int(i64),
    DoubleBits(u64),
    Str(String),
    IntList(Vec<i64>),
    StrList(Vec<String>),
    Map(BTreeMap<String, String>),
    Bytes(Vec<u8>),
    /// A `Value` with no kind set.
    NoKind,
}

pub fn canon(value: &Value) -> Canon {
    match &value.kind {
        Some(Kind::IntValue(v)) => Canon::Int(*v),
        Some(Kind::DoubleValue(v)) => Canon::DoubleBits(v.to_bits()),
        Some(Kind::StringValue(v)) => Canon::Str(v.clone()),
        Some(Kind::IntList(l)) => Canon::IntList(l.values.clone()),
        Some(Kind::StringList(l)) => Canon::StrList(l.values.clone()),
        Some(Kind::StringMap(m)) => Canon::Map(m.entries.clone()),
        Some(Kind::BytesValue(b)) => Canon::Bytes(b.clone()),
        None => Canon::NoKind,
    }
}

/// The canonical form of a response's value field, which must be set.
#[track_caller]
pub fn canon_field(value: &Option<Value>) -> Canon {
    canon(value.as_ref().expect("the response has no value"))
}

// ----- statuses -------------------------------------------------------------

/// Asserts that `result` failed with `code` and that its message contains
/// every one of `needles` (case-insensitively). Returns the status.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
    needles: &[&str],
) -> Status {
    let status = match result {
        Ok(response) => panic!("expected {code:?}, got success: {:?}", response.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "wrong code; message: {:?}", status.message());
    let message = status.message().to_lowercase();
    for needle in needles {
        assert!(
            message.contains(&needle.to_lowercase()),
            "message {:?} of a {code:?} status does not mention {needle:?}",
            status.message()
        );
    }
    status
}

// ----- RPC shorthands (panic on error) --------------------------------------

pub async fn create(client: &mut Client, html: &str, cols: Columns) -> u64 {
    let request = proto::CreateProblemRequest { html: html.to_string(), columns: cols };
    client.create_problem(request).await.expect("CreateProblem").into_inner().problem_id
}

pub async fn add(client: &mut Client, problem_id: u64, value: Value) -> u64 {
    let request = proto::AddTestCaseRequest { problem_id, value: Some(value), ..Default::default() };
    client.add_test_case(request).await.expect("AddTestCase").into_inner().test_case_id
}

pub async fn set_output(client: &mut Client, problem_id: u64, test_case_id: u64, value: Value) {
    let request =
        proto::SetExpectedOutputRequest { problem_id, test_case_id, value: Some(value), ..Default::default() };
    client.set_expected_output(request).await.expect("SetExpectedOutput");
}

pub async fn html(client: &mut Client, problem_id: u64) -> String {
    client
        .get_problem_html(proto::ProblemRef { problem_id, ..Default::default() })
        .await
        .expect("GetProblemHtml")
        .into_inner()
        .html
}

pub async fn meta(client: &mut Client, problem_id: u64) -> Columns {
    client
        .get_problem_meta(proto::ProblemRef { problem_id, ..Default::default() })
        .await
        .expect("GetProblemMeta")
        .into_inner()
        .columns
}

pub async fn test_case(client: &mut Client, problem_id: u64, test_case_id: u64) -> Canon {
    let response = client
        .get_test_case(proto::TestCaseRef { problem_id, test_case_id, ..Default::default() })
        .await
        .expect("GetTestCase")
        .into_inner();
    let tc = response.test_case.expect("GetTestCase returned no test case");
    assert_eq!(tc.test_case_id, test_case_id);
    canon_field(&tc.value)
}

pub async fn all_test_cases(client: &mut Client, problem_id: u64) -> Vec<(u64, Canon)> {
    let response = client
        .get_all_test_cases(whole_chain(proto::ProblemRef { problem_id, ..Default::default() }))
        .await
        .expect("GetAllTestCases");
    response.into_inner().test_cases.iter().map(|tc| (tc.test_case_id, canon_field(&tc.value))).collect()
}

/// The expected output of a test case, or None if it has none (NOT_FOUND).
pub async fn output(client: &mut Client, problem_id: u64, test_case_id: u64) -> Option<Canon> {
    match client.get_expected_output(proto::TestCaseRef { problem_id, test_case_id, ..Default::default() }).await {
        Ok(response) => {
            let response = response.into_inner();
            assert_eq!(response.test_case_id, test_case_id);
            Some(canon_field(&response.value))
        }
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!("GetExpectedOutput({problem_id}, {test_case_id}): {status:?}"),
    }
}

pub async fn stats(client: &mut Client) -> proto::GetStatsResponse {
    client.get_stats(proto::GetStatsRequest {}).await.expect("GetStats").into_inner()
}

/// Every live problem id, following the page tokens to the end.
pub async fn list_all(client: &mut Client, page_size: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListProblemsRequest { page_size, page_token };
        let page = client.list_problems(request).await.expect("ListProblems").into_inner();
        ids.extend(page.problem_ids);
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// Everything the server returns about one problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProblemDump {
    pub html: String,
    pub columns: Columns,
    /// In chain order: id, value, expected output.
    pub test_cases: Vec<(u64, Canon, Option<Canon>)>,
}

pub async fn dump_problem(client: &mut Client, problem_id: u64) -> ProblemDump {
    let html = html(client, problem_id).await;
    let columns = meta(client, problem_id).await;
    let mut test_cases = Vec::new();
    for (id, value) in all_test_cases(client, problem_id).await {
        assert_eq!(test_case(client, problem_id, id).await, value, "GetTestCase and GetAllTestCases disagree");
        let out = output(client, problem_id, id).await;
        test_cases.push((id, value, out));
    }
    ProblemDump { html, columns, test_cases }
}

/// Everything the server returns about every live problem.
pub async fn dump_all(client: &mut Client) -> BTreeMap<u64, ProblemDump> {
    let mut all = BTreeMap::new();
    for id in list_all(client, 0).await {
        all.insert(id, dump_problem(client, id).await);
    }
    all
}

/// A request for every test case of the problem in one message.
pub fn whole_chain(r: proto::ProblemRef) -> proto::GetAllTestCasesRequest {
    proto::GetAllTestCasesRequest { problem_id: r.problem_id, ..Default::default() }
}
