//! Stratum's sans-IO core.
//!
//! This crate decides everything and does nothing: it encodes and decodes
//! records ([`encode_record`], [`scan`]), keeps the in-memory index
//! ([`KeyDir`]), replays segment bytes during recovery ([`SegmentReplay`])
//! or their hint files ([`replay_hints`], [`HintBuilder`]),
//! plans compactions ([`CompactionPlan`], [`CompactionPolicy`]) and checks
//! requests against [`Limits`]. It opens no files, reads no
//! clock and starts no threads; everything it needs is passed in as byte
//! slices and values, so tests can feed it any bytes at all. The
//! `stratum-io` crate binds it to real files.

mod codec;
mod compaction;
mod hint;
mod keydir;
mod limits;
mod record;
mod replay;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;

pub use codec::DecodeError;
pub use compaction::{
    CompactionPlan, CompactionPolicy, Installed, MergedSegment, PlannedDocument, PlannedInput, Relocation, Target,
};
pub use hint::{HINT_MAGIC, HintBuilder, HintError, replay_hints};
pub use keydir::{Applied, DocumentEntry, InputEntry, KeyDir, Missing, RecordMeta, RecordSink, SegmentUsage};
pub use limits::{Invalid, Limits};
pub use record::{
    Body, Corruption, Effect, FORMAT_VERSION, HeaderError, MAX_PAYLOAD_LEN, Mutation, RECORD_HEADER_LEN, RecordKind,
    RecordRef, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, Scan, SegmentHeader, decode_record, encode_record, scan,
};
pub use replay::{CorruptSegment, Feed, Replayed, SegmentReplay, TailPolicy, find_record_after_damage};
pub use value::Value;

/// A document or input id. Ids are assigned by the engine, start at 1 and
/// are never reused.
pub type Id = u64;

/// A document's metadata columns, name to value, in name order.
pub type Columns = BTreeMap<String, String>;

/// The number of a segment file. Segment 0 does not exist, which lets
/// `Option<Location>` cost nothing extra.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(NonZeroU32);

impl SegmentId {
    pub const FIRST: SegmentId = SegmentId(NonZeroU32::MIN);

    pub fn new(n: u32) -> Option<SegmentId> {
        NonZeroU32::new(n).map(SegmentId)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The segment after this one.
    pub fn next(self) -> Option<SegmentId> {
        self.0.checked_add(1).map(SegmentId)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a record lives: a segment, an offset in it and the record's length.
/// Twelve bytes: segments stay below 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: SegmentId,
    pub offset: u32,
    pub len: u32,
}
