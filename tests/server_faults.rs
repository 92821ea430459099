//! The server over an engine whose disk fails: the failed write is INTERNAL,
//! later writes are UNAVAILABLE, reads still work, and health turns
//! NOT_SERVING.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use stratum::proto::{self, lse_client::LseClient};
use stratum::{Config, serve};
use stratum_io::{Engine, Options, SimFileSystem};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn a_failed_disk_write_turns_writes_unavailable_and_health_not_serving() {
    let fs = SimFileSystem::new();
    let engine = Arc::new(Engine::open_with(Arc::new(fs.clone()), "/data", Options::default()).unwrap());
    let config = Config::parse_from(["lse_server", "--port", "0", "--host", "127.0.0.1"]);
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let ready = move |addr| addr_tx.send(addr).unwrap();
        serve(engine, Duration::ZERO, &config, ready, async move { stop_rx.await.unwrap_or(()) }).await
    });
    let addr = addr_rx.await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
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

    let html = lse.get_problem_html(proto::ProblemRef { problem_id: kept }).await.unwrap().into_inner().html;
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
