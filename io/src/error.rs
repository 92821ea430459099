//! The engine's error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use stratum_core::{Invalid, Missing};

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an engine call can fail with. Each variant is one kind of
/// answer for the caller: fix the request, look elsewhere, or stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names a document, input or output that does not exist.
    #[error(transparent)]
    NotFound(#[from] Missing),

    /// The request is malformed or over a limit; nothing was written.
    #[error(transparent)]
    Invalid(#[from] Invalid),

    /// Stored bytes failed their checksum or do not decode. Names the file
    /// and the offset of the damage.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: String },

    /// An earlier write or fsync failed, so the engine cannot know what
    /// reached the disk; it refuses writes until it is reopened. Reads
    /// still work.
    #[error("writes are refused after an IO failure ({reason}); reopen the engine to recover")]
    Poisoned { reason: Arc<str> },

    /// The data directory is locked by another open engine.
    #[error("data directory {dir} is in use by another process (lock file {lock} is held)")]
    Locked { dir: PathBuf, lock: PathBuf },

    /// The options passed to [`crate::Engine::open`] are unusable.
    #[error("invalid options: {0}")]
    Options(String),

    /// An operating-system error, with what the engine was doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context: context.into(), source }
    }
}
