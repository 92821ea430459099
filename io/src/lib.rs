//! Stratum's io layer: the [`Engine`], which carries out the sans-IO core's
//! decisions on segment files.
//!
//! The engine appends records to `active.seg` in its data directory, seals
//! it as `seg_NNN.seg` when it passes `segment_bytes`, fsyncs according to
//! the [`SyncPolicy`] (group commit under `Always`), compacts sealed
//! segments into `merged.seg` (on demand or in the background), and on open
//! replays every segment to rebuild the in-memory index, cutting a torn tail
//! off the active segment (and refusing damage before a durability mark);
//! [`upgrade`] rewrites a format-2 or format-3 data directory in format 4.
//! All file access goes through the [`FileSystem`] trait:
//! [`OsFileSystem`] in production, `SimFileSystem` (the `sim` feature) in crash and fault
//! tests.

#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

mod engine;
mod error;
mod fs;
mod options;
mod segment;
#[cfg(feature = "sim")]
mod sim;
mod upgrade;

pub use engine::{Committed, CompactionReport, DocumentSnapshot, DocumentView, Engine, InputView, Stats, Versioned};
pub use error::{Error, Invalid, Missing, Result};
pub use fs::{DirLock, FileBytes, FileHandle, FileSystem, MapRegion, Mapped, OsFile, OsFileSystem};
pub use options::{CompactionSettings, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, Options, SyncPolicy};
#[cfg(feature = "sim")]
pub use sim::{Faults, SimFileSystem, SyncHold};
pub use stratum_core::{
    ACTIVE_NAME, Columns, CompactionPolicy, Defect, Expect, Id, LOCK_NAME, Limits, MERGED_NAME, Op, Place, Ref,
    SegmentId, Value, parse_sealed_name, sealed_name,
};
pub use upgrade::{UpgradeReport, upgrade};
