//! Stratum's gRPC server: the `lse.Lse` service of `proto/lse.proto` over
//! the storage engine, plus the standard health and reflection services.
//!
//! [`run`] checks what the server is to expose ([`security`]), opens the
//! engine and serves it, listening until the shutdown future completes,
//! then finishing in-flight calls and flushing the engine. Every call
//! passes the [`admission`] layer first: tokens, the concurrency limit and
//! its deadline.

#![warn(clippy::unwrap_used)]

pub mod admission;
pub mod auth;
pub mod codec;
pub mod config;
mod convert;
pub mod idle;
mod problems;
pub mod security;
mod service;
pub mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratum_io::{Engine, Error};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use admission::Admission;
pub use config::Config;
pub use convert::status;
use security::Security;
pub use service::{DEFAULT_PAGE_BYTES, DEFAULT_PAGE_SIZE, LseService, MAX_PAGE_SIZE};

/// The HTTP/2 flow-control window of each call's request stream: how much
/// a client may send before the server acknowledges it.
pub const STREAM_WINDOW_BYTES: u32 = 1 << 20;

/// The HTTP/2 flow-control window of a connection, over all its calls: a
/// bound on what one connection makes the server buffer.
pub const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;

/// The code generated from `proto/lse.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs, unused_qualifications)]
    tonic::include_proto!("lse");

    /// The compiled proto, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lse_descriptor");
}

/// Why the server could not start or stopped with an error. Each message is
/// one line that says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot use data directory {dir}: {source}; choose another with --data-dir or LSE_DATA_DIR")]
    DataDir { dir: String, source: Error },
    #[error("{0}; stop the other lse_server or choose another --data-dir")]
    Locked(Error),
    #[error("cannot open the store: {0}")]
    Engine(Error),
    #[error("the final flush at shutdown failed: {0}; writes acknowledged since the last fsync may be lost")]
    Shutdown(Error),
    #[error("cannot listen on {addr}: {source}; choose another port with --port or LSE_PORT")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{what} task failed: {source}")]
    Task { what: &'static str, source: tokio::task::JoinError },
}

/// Runs the server until `shutdown` completes. `ready` is called with the
/// bound address once the server accepts connections.
pub async fn run(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let options = config.engine_options().map_err(ServerError::Config)?;
    // Refuse a bad TLS, token or address setting before touching the store.
    let security = Security::load(&config).map_err(ServerError::Config)?;
    let started = Instant::now();
    let dir = config.data_dir.clone();
    security::create_data_dir(&dir).map_err(|e| ServerError::DataDir {
        dir: dir.display().to_string(),
        source: Error::Io { context: "creating the data directory".to_string(), source: e },
    })?;
    let engine = tokio::task::spawn_blocking(move || Engine::open(&dir, options))
        .await
        .map_err(|source| ServerError::Task { what: "recovery", source })?
        .map_err(|e| match e {
            Error::Locked { .. } => ServerError::Locked(e),
            Error::Io { .. } => ServerError::DataDir { dir: config.data_dir.display().to_string(), source: e },
            e => ServerError::Engine(e),
        })?;
    serve_secured(Arc::new(engine), started.elapsed(), &config, security, ready, shutdown).await
}

/// Serves an open engine (opened in `recovered_in`, for the log) until
/// `shutdown` completes, then closes it. Health
/// reports SERVING from the start (recovery is done once there is an engine)
/// and NOT_SERVING once the engine refuses writes.
pub async fn serve(
    engine: Arc<Engine>,
    recovered_in: Duration,
    config: &Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let security = Security::load(config).map_err(ServerError::Config)?;
    serve_secured(engine, recovered_in, config, security, ready, shutdown).await
}

async fn serve_secured(
    engine: Arc<Engine>,
    recovered_in: Duration,
    config: &Config,
    security: Security,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Listen { addr, source })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<proto::lse_server::LseServer<LseService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let watcher = tokio::spawn(watch_writability(engine.clone(), health));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
    let service = LseService::new(engine.clone()).with_page_bytes(config.max_message_bytes / 2);
    let lse = proto::lse_server::LseServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    tracing::info!(
        address = %local,
        data_dir = %engine.dir().display(),
        sync = %engine.options().sync,
        segment_bytes = engine.options().segment_bytes,
        recovery_ms = recovered_in.as_millis() as u64,
        documents = engine.stats().documents,
        tls = security.tls.is_some(),
        tokens = security.tokens.as_ref().map_or(0, |tokens| tokens.len()),
        max_concurrent_requests = config.max_concurrent_requests,
        "lse_server listening"
    );

    let secs = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
    let mut builder = Server::builder()
        // Flow-control windows that let a whole problem (tens to hundreds
        // of KB) arrive without waiting for a WINDOW_UPDATE round trip;
        // HTTP/2's default of 64 KiB stalls every larger request.
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keepalive_interval(secs(config.http2_keepalive_interval_secs))
        .http2_keepalive_timeout(Some(Duration::from_secs(config.http2_keepalive_timeout_secs)));
    if let Some(age) = secs(config.max_connection_age_secs) {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(Duration::from_secs(config.max_connection_age_grace_secs));
    }
    if let Some(tls) = security.tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Config(format!("cannot use --tls-cert and --tls-key: {e}")))?;
    }
    let admission = Admission::new(security.tokens, config.max_concurrent_requests);
    let idle = secs(config.max_connection_idle_secs);
    let incoming = tokio_stream::StreamExt::map(TcpIncoming::from(listener).with_nodelay(Some(true)), move |tcp| {
        tcp.map(|tcp| idle::Tracked::new(tcp, idle))
    });
    ready(local);

    builder
        .layer(admission)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(lse)
        // No Nagle: a response's last segment must not wait for the client's
        // delayed ACK (a 40 ms stall per small call).
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;

    watcher.abort();
    let _ = watcher.await;
    tracing::info!("shutting down: flushing the store");
    let refusing = engine.stats().poisoned;
    let closed = tokio::task::spawn_blocking(move || match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close(),
        Err(engine) => engine.flush(),
    })
    .await
    .map_err(|source| ServerError::Task { what: "shutdown", source })?;
    match (closed, refusing) {
        (Ok(()), _) => {}
        // Already refusing writes: that failure was reported when it
        // happened (and every write since was refused), so a final flush
        // that fails too is no news and the shutdown is clean.
        (Err(e), Some(reason)) => {
            tracing::warn!(error = %e, %reason, "the store was refusing writes; its final flush failed too");
        }
        (Err(e), None) => return Err(ServerError::Shutdown(e)),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Reports NOT_SERVING once the engine refuses writes after an IO failure.
async fn watch_writability(engine: Arc<Engine>, health: tonic_health::server::HealthReporter) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(reason) = engine.stats().poisoned {
            tracing::error!(%reason, "writes refused: reporting NOT_SERVING; restart the server to recover");
            health.set_not_serving::<proto::lse_server::LseServer<LseService>>().await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            return;
        }
    }
}
