//! Command-line flags and environment variables. A flag beats its variable.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use std::time::Duration;

use stratum_io::{CompactionPolicy, CompactionSettings, Limits, Options, SyncPolicy};

const MIB: usize = 1 << 20;

/// Room a response needs beyond the value or blob it carries.
const MESSAGE_OVERHEAD: usize = 64 << 10;

/// Stratum's gRPC storage server.
#[derive(Clone, Debug, Parser)]
#[command(name = "lse_server", version, about, long_about = None)]
pub struct Config {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, env = "LSE_PORT", default_value_t = 50051)]
    pub port: u16,

    /// Address to listen on; 0.0.0.0 for every interface.
    #[arg(long, env = "LSE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Directory for segment files (created if missing).
    #[arg(long, env = "LSE_DATA_DIR", default_value = "/data")]
    pub data_dir: PathBuf,

    /// When writes are fsynced: always (before each reply; concurrent
    /// writes share fsyncs), interval:MS (in the background), or none
    /// (only on Flush, segment rotation and shutdown).
    #[arg(long, env = "LSE_SYNC", default_value = "always")]
    pub sync: SyncPolicy,

    /// Seal the active segment and start a new one past this size.
    #[arg(long, env = "LSE_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub segment_bytes: u64,

    /// Largest problem blob accepted, in bytes.
    #[arg(long, env = "LSE_MAX_BLOB_BYTES", default_value_t = 16 * MIB)]
    pub max_blob_bytes: usize,

    /// Largest encoded test case or output value accepted, in bytes.
    #[arg(long, env = "LSE_MAX_VALUE_BYTES", default_value_t = 16 * MIB)]
    pub max_value_bytes: usize,

    /// Largest batch accepted (ImportProblem, ReplaceTestCases, Batch and
    /// their streams), in bytes of the records it writes. A batch over it is
    /// refused whole (INVALID_ARGUMENT); the server holds a batch in memory
    /// while it checks and writes it.
    #[arg(long, env = "LSE_MAX_BATCH_BYTES", default_value_t = 256 * MIB)]
    pub max_batch_bytes: usize,

    /// Largest gRPC message the server receives or sends, in bytes.
    #[arg(long, env = "LSE_MAX_MESSAGE_BYTES", default_value_t = 64 * MIB)]
    pub max_message_bytes: usize,

    /// Seconds between background compaction checks; 0 turns the
    /// background compactor off (CompactNow still works).
    #[arg(long, env = "LSE_COMPACT_INTERVAL_SECS", default_value_t = 30)]
    pub compact_interval_secs: u64,

    /// Compact only once at least this many bytes are garbage...
    #[arg(long, env = "LSE_COMPACT_MIN_GARBAGE_BYTES", default_value_t = 64 << 20)]
    pub compact_min_garbage_bytes: u64,

    /// ...and garbage is at least this share of all stored bytes (0 to 1).
    #[arg(long, env = "LSE_COMPACT_MIN_GARBAGE_RATIO", default_value_t = 0.5)]
    pub compact_min_garbage_ratio: f64,

    /// Most calls in flight at once; a call beyond it is answered
    /// RESOURCE_EXHAUSTED at once instead of waiting. The health service is
    /// never refused. 0 means no limit.
    #[arg(long, env = "LSE_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Seconds between HTTP/2 keepalive pings on a connection; a peer that
    /// does not answer one within --http2-keepalive-timeout-secs is
    /// disconnected. 0 turns the pings off.
    #[arg(long, env = "LSE_HTTP2_KEEPALIVE_INTERVAL_SECS", default_value_t = 60)]
    pub http2_keepalive_interval_secs: u64,

    /// Seconds a keepalive ping may go unanswered before the connection is
    /// closed.
    #[arg(long, env = "LSE_HTTP2_KEEPALIVE_TIMEOUT_SECS", default_value_t = 20)]
    pub http2_keepalive_timeout_secs: u64,

    /// Seconds after which a connection, busy or idle, is asked to go away
    /// (HTTP/2 GOAWAY; clients reconnect). 0 means connections live on.
    #[arg(long, env = "LSE_MAX_CONNECTION_AGE_SECS", default_value_t = 0)]
    pub max_connection_age_secs: u64,

    /// Seconds a connection past its --max-connection-age-secs has to finish
    /// its calls before it is closed.
    #[arg(long, env = "LSE_MAX_CONNECTION_AGE_GRACE_SECS", default_value_t = 30)]
    pub max_connection_age_grace_secs: u64,

    /// Close a connection that has had no call in flight for this many
    /// seconds (0: never). Keepalive pings do not count as calls.
    #[arg(long, env = "LSE_MAX_CONNECTION_IDLE_SECS", default_value_t = 0)]
    pub max_connection_idle_secs: u64,

    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, env = "LSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "LSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// File of bearer tokens, one per line as `ro TOKEN` (reads only) or
    /// `rw TOKEN` (reads and writes); `#` starts a comment. With it every
    /// call but health needs `authorization: Bearer TOKEN` metadata.
    #[arg(long, env = "LSE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Listen on a non-loopback address without TLS and a token file (the
    /// server refuses to otherwise): anyone who reaches the port can read
    /// and write everything.
    #[arg(long, env = "LSE_ALLOW_INSECURE_REMOTE")]
    pub allow_insecure_remote: bool,

    /// Log filter (tracing env-filter syntax), e.g. info or stratum=debug.
    #[arg(long, env = "LSE_LOG", default_value = "info")]
    pub log: String,

    /// Rewrite the data directory from segment format 2 (Stratum before
    /// salted records) or 3 (before batches) to format 4, then exit without
    /// serving. The server
    /// must be stopped; running it again after a crash finishes the job.
    #[arg(long)]
    pub upgrade: bool,
}

impl Config {
    /// The engine options these settings ask for, checked for consistency:
    /// whatever can be written must fit in a response to read it back.
    pub fn engine_options(&self) -> Result<Options, String> {
        for (flag, limit) in [("--max-blob-bytes", self.max_blob_bytes), ("--max-value-bytes", self.max_value_bytes)] {
            if limit + MESSAGE_OVERHEAD > self.max_message_bytes {
                return Err(format!(
                    "{flag} {limit} does not fit in --max-message-bytes {} with {MESSAGE_OVERHEAD} bytes to spare",
                    self.max_message_bytes
                ));
            }
        }
        let options = Options {
            sync: self.sync,
            segment_bytes: self.segment_bytes,
            limits: Limits {
                max_blob_bytes: self.max_blob_bytes,
                max_value_bytes: self.max_value_bytes,
                max_batch_bytes: self.max_batch_bytes,
                ..Limits::default()
            },
            compaction: (self.compact_interval_secs > 0).then(|| CompactionSettings {
                interval: Duration::from_secs(self.compact_interval_secs),
                policy: CompactionPolicy {
                    min_garbage_bytes: self.compact_min_garbage_bytes,
                    min_garbage_ratio: self.compact_min_garbage_ratio,
                },
            }),
        };
        options.validate().map_err(|e| e.to_string())?;
        Ok(options)
    }
}
