//! The server over an engine whose disk fails: the failed write is INTERNAL,
//! later writes are UNAVAILABLE, reads still work, and health turns
//! NOT_SERVING.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use stratum::proto::{self, lse_client::LseClient};
use stratum::{Config, serve};
use stratum_io::{Engine, Options, SimFileSystem};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Serves an engine on the simulated file system `fs`, in this process:
/// a channel to it, the sender that stops it, and its task.
async fn serve_on(
    fs: &SimFileSystem,
) -> (Channel, oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), stratum::ServerError>>) {
    let engine = Arc::new(Engine::open_with(Arc::new(fs.clone()), "/data", Options::default()).unwrap());
    let config = Config::parse_from(["lse_server", "--port", "0", "--host", "127.0.0.1"]);
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let ready = move |addr| addr_tx.send(addr).unwrap();
        serve(engine, Duration::ZERO, &config, ready, async move { stop_rx.await.unwrap_or(()) }).await
    });
    let addr = addr_rx.await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (channel, stop_tx, server)
}

#[tokio::test]
async fn a_failed_disk_write_turns_writes_unavailable_and_health_not_serving() {
    let fs = SimFileSystem::new();
    let (channel, stop_tx, server) = serve_on(&fs).await;
    let mut lse = LseClient::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let check = HealthCheckRequest { service: String::new() };
    assert_eq!(health.check(check.clone()).await.unwrap().into_inner().status, ServingStatus::Serving as i32);

    let create = |html: &str| proto::CreateProblemRequest { html: html.into(), columns: Default::default() };
    let kept = lse.create_problem(create("kept")).await.unwrap().into_inner().problem_id;
    fs.faults(|f| f.fail_next_write = true);
    let failed = lse.create_problem(create("lost")).await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    let refused = lse.create_problem(create("refused")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("reopen"), "{refused:?}");

    let html = lse
        .get_problem_html(proto::ProblemRef { problem_id: kept, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .html;
    assert_eq!(html, "kept", "reads keep working");
    let stats = lse.get_stats(proto::GetStatsRequest {}).await.unwrap().into_inner();
    assert!(stats.write_error.contains("simulated write failure"), "{stats:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = health.check(check.clone()).await.unwrap().into_inner().status;
        if now == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "health still says {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    // Everything acknowledged was synced before the failure: a clean stop.
    server.await.unwrap().unwrap();
}

/// A failed fsync: the write it was to cover is UNKNOWN (its record reached
/// the file; whether it survives is unknown), later writes UNAVAILABLE, and
/// a shutdown of the server that is refusing writes is still clean (SIGTERM
/// exits 0), although its final flush fails too.
#[tokio::test]
async fn a_failed_fsync_is_unknown_for_its_writer_and_the_shutdown_is_clean() {
    let fs = SimFileSystem::new();
    let (channel, stop_tx, server) = serve_on(&fs).await;
    let mut lse = LseClient::new(channel);

    let create = |html: &str| proto::CreateProblemRequest { html: html.into(), columns: Default::default() };
    lse.create_problem(create("kept")).await.unwrap();
    fs.faults(|f| f.fail_next_sync = true);
    let unknown = lse.create_problem(create("unknown")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unknown, "{unknown:?}");
    let refused = lse.create_problem(create("refused")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    stop_tx.send(()).unwrap();
    let stopped = server.await.unwrap();
    assert!(stopped.is_ok(), "a server refusing writes did not stop cleanly: {stopped:?}");
}
