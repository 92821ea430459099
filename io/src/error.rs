//! The engine's error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use stratum_core::{MAX_SEGMENT_ID, Refused};

pub use stratum_core::{Defect, Invalid, Missing};

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

    /// Operation `op` (from 0) of a batch was refused for `source`; nothing
    /// was written.
    #[error("operation {op} of the batch: {source}")]
    InBatch {
        /// The operation's index in the batch.
        op: usize,
        /// Why it was refused.
        source: Box<Error>,
    },

    /// A precondition of the write does not hold: the document is at
    /// another version than the writer expected (it changed since the
    /// writer read it). Nothing was written.
    #[error("document {document} is at version {current}, not the expected {expected}")]
    VersionMismatch {
        /// The document.
        document: u64,
        /// The version the writer expected.
        expected: u64,
        /// The document's version.
        current: u64,
    },

    /// Stored bytes failed a check: the file, the offset of the damage and
    /// the core's typed answer for what is wrong.
    #[error("corrupt data in {file} at offset {offset}: {defect}")]
    Corrupt {
        /// The file the damage is in.
        file: PathBuf,
        /// Where in the file.
        offset: u64,
        /// What is wrong.
        defect: Defect,
    },

    /// Every segment id is used up (ids take 24 bits). Writes are refused;
    /// the store must be rewritten offline.
    #[error("segment ids are exhausted (the largest is {MAX_SEGMENT_ID}); writes are refused")]
    SegmentIdsExhausted,

    /// The live data does not fit one merged segment (offsets take 40
    /// bits: 1 TiB). The compaction is abandoned; nothing changed.
    #[error("the live data does not fit one merged segment (1 TiB); compaction is not possible")]
    MergedTooLarge,

    /// An earlier write or fsync failed, so the engine cannot know what
    /// reached the disk; it refuses writes until it is reopened. Reads
    /// still work.
    #[error("writes are refused after an IO failure ({reason}); reopen the engine to recover")]
    Poisoned {
        /// The error that poisoned the engine, as text.
        reason: Arc<str>,
    },

    /// The write's record reached the log and the index, but the fsync
    /// that was to make it durable failed: it is visible now, and may or
    /// may not survive a restart (after a failed fsync Linux may have
    /// dropped the pages it covered). The engine is poisoned, as for
    /// [`Error::Poisoned`]. The only error a write returns after its record
    /// was appended; every other error means the write changed nothing.
    #[error(
        "outcome unknown: the write reached the log, but the fsync that was to make it durable failed ({reason}); \
         it is visible now and may or may not survive a restart; writes are refused until the engine is reopened"
    )]
    OutcomeUnknown {
        /// The failed fsync, as text.
        reason: Arc<str>,
    },

    /// The data directory is locked by another open engine.
    #[error("data directory {dir} is in use by another process (lock file {lock} is held)")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file, held by the other engine.
        lock: PathBuf,
    },

    /// The options passed to [`crate::Engine::open`] are unusable.
    #[error("invalid options: {0}")]
    Options(String),

    /// An operating-system error, with what the engine was doing.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, and to which file or segment.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Error {
        match refused {
            Refused::Missing(missing) => Error::NotFound(missing),
            Refused::Invalid(invalid) => Error::Invalid(invalid),
            Refused::Stale { document, expected, current } => Error::VersionMismatch { document, expected, current },
            Refused::InOp { op, refused } => Error::InBatch { op, source: Box::new(Error::from(*refused)) },
        }
    }
}

impl Error {
    /// The error without the batch operation it came from.
    pub fn into_cause(self) -> Error {
        match self {
            Error::InBatch { source, .. } => source.into_cause(),
            other => other,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context: context.into(), source }
    }
}
