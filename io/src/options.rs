//! How an engine is opened: durability, segment bytes, limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use stratum_core::{CompactionPolicy, Limits};

use crate::error::{Error, Result};

/// When appended records are made durable with an fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// A write is acknowledged only after an fsync covering it. Concurrent
    /// writers share fsyncs (group commit). Nothing acknowledged is lost.
    #[default]
    Always,
    /// A background thread fsyncs at this interval. A crash loses at most
    /// the writes of the last interval (plus the time one fsync takes).
    Interval(Duration),
    /// Only [`crate::Engine::flush`], segment rotation and a clean close
    /// fsync. A crash loses what was written since the last of those.
    None,
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            SyncPolicy::None => f.write_str("none"),
        }
    }
}

impl FromStr for SyncPolicy {
    type Err = String;

    /// Parses `always`, `none`, or `interval:MS` (also `interval(MS)`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "always" => return Ok(SyncPolicy::Always),
            "none" | "never" => return Ok(SyncPolicy::None),
            _ => {}
        }
        let ms = s
            .strip_prefix("interval:")
            .or_else(|| s.strip_prefix("interval(").and_then(|r| r.strip_suffix(')')))
            .ok_or_else(|| format!("unknown sync policy {s:?}: expected always, none or interval:MS"))?;
        match ms.trim().trim_end_matches("ms").parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
            _ => Err(format!("bad interval {ms:?}: expected a whole number of milliseconds above 0")),
        }
    }
}

/// When the background compactor runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionSettings {
    /// How often the compactor wakes up to look at the garbage.
    pub interval: Duration,
    /// How much garbage makes a compaction worth it.
    pub policy: CompactionPolicy,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        CompactionSettings { interval: Duration::from_secs(30), policy: CompactionPolicy::default() }
    }
}

/// Engine settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// When appended records are fsynced.
    pub sync: SyncPolicy,
    /// The active segment is sealed once a record would take it past this
    /// many bytes.
    pub segment_bytes: u64,
    /// The sizes a request may not exceed.
    pub limits: Limits,
    /// The background compactor; `None` leaves compaction to
    /// [`crate::Engine::compact`].
    pub compaction: Option<CompactionSettings>,
}

/// The smallest `segment_bytes` accepted (tests use tiny segments).
pub const MIN_SEGMENT_BYTES: u64 = 64;

/// The largest `segment_bytes` accepted. (The index's 40-bit offsets would
/// allow far more; past 1 GiB, rotation and recovery steps get slow.)
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Always,
            segment_bytes: 64 << 20,
            limits: Limits::default(),
            compaction: Some(CompactionSettings::default()),
        }
    }
}

impl Options {
    /// Checks that the options are usable: `segment_bytes` within
    /// [`MIN_SEGMENT_BYTES`]..=[`MAX_SEGMENT_BYTES`], a compaction interval
    /// above zero and a garbage ratio within 0.0..=1.0, and limits the
    /// format can store. [`crate::Engine::open`] calls it.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::Options(format!(
                "segment bytes {} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES} bytes",
                self.segment_bytes
            )));
        }
        if let Some(c) = &self.compaction {
            if c.interval.is_zero() {
                return Err(Error::Options("compaction interval must be above zero".into()));
            }
            if !(0.0..=1.0).contains(&c.policy.min_garbage_ratio) {
                return Err(Error::Options(format!(
                    "compaction garbage ratio {} is outside 0.0..=1.0",
                    c.policy.min_garbage_ratio
                )));
            }
        }
        self.limits.validate().map_err(|e| Error::Options(e.to_string()))
    }
}
