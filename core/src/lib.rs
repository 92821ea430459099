//! Stratum's sans-IO core.
//!
//! This crate decides everything and does nothing: it encodes and decodes
//! records ([`encode_record`], [`scan`]), keeps the in-memory index
//! ([`KeyDir`]), replays segment bytes during recovery ([`SegmentReplay`])
//! or their hint files ([`replay_hints`], [`HintBuilder`], and the index
//! snapshot of a merged segment, [`KeyDir::snapshot`]),
//! plans compactions ([`CompactionPlan`], [`CompactionPolicy`]) and checks
//! requests against [`Limits`]. It opens no files, reads no
//! clock and starts no threads; everything it needs is passed in as byte
//! slices and values, so tests can feed it any bytes at all. The
//! `stratum-io` crate binds it to real files.

#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

mod batch;
mod check;
mod codec;
mod compaction;
mod defect;
mod hint;
mod keydir;
mod limits;
mod record;
mod recovery;
mod replay;
mod snapshot;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;

pub use batch::{Expect, Op, Place, Planned, Ref, Refused, last_id_needed, plan_batch};
pub use check::{checked_record, record_blob, record_value};
pub use codec::DecodeError;
pub use compaction::{
    CompactionChoice, CompactionPlan, CompactionPolicy, Installed, MergeError, MergeWriter, MergedSegment,
    PlannedDocument, Relocation, Target, Trigger, choose_compaction,
};
pub use defect::Defect;
pub use hint::{HINT_MAGIC, HINT_VERSION, HintBuilder, HintError, replay_hints};
pub use keydir::{
    Applied, Chain, ChainIter, DocumentEntry, ID_RESERVATION, InputEntry, KeyDir, Missing, RecordMeta, RecordSink,
    SegmentUsage, Violation,
};
pub use limits::{Invalid, Limits};
pub use record::{
    Body, Corruption, Effect, EncodedIds, FORMAT_VERSION, HeaderError, MAX_PAYLOAD_LEN, Mutation,
    PREVIOUS_FORMAT_VERSION, RECORD_HEADER_LEN, RecordKind, RecordRef, SALT_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    Salt, Scan, SegmentHeader, UNSALTED_FORMAT_VERSION, UNSALTED_HEADER_LEN, batch_entries, decode_record,
    encode_record, finish_batch, reseal, scan, seal_record, start_batch,
};
pub use recovery::{
    ACTIVE_NAME, ACTIVE_TMP_NAME, LOCK_NAME, Listing, MERGED_NAME, MERGED_TMP_NAME, MergedHeader, PlanError,
    RecoveryPlan, RecoveryStep, ReplayKind, TailDecision, hint_name, judge_bad_tail, parse_sealed_name, plan_recovery,
    sealed_name,
};
pub use replay::{CorruptSegment, Expanded, Feed, Replayed, SegmentReplay, TailPolicy, expand_record};
pub use snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotDefect};
pub use value::{EncodedColumns, Value};

/// A document or input id. Ids are assigned by the engine, start at 1 and
/// are never reused.
pub type Id = u64;

/// A document's metadata columns, name to value, in name order.
pub type Columns = BTreeMap<String, String>;

/// The number of a segment file, from 1 to [`MAX_SEGMENT_ID`]. Segment 0
/// does not exist, which lets `Option<Location>` cost nothing extra.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(NonZeroU32);

/// The largest segment id: ids take 24 bits of a [`Location`].
pub const MAX_SEGMENT_ID: u32 = (1 << 24) - 1;

/// The largest offset of a record in a segment file: offsets take 40 bits
/// of a [`Location`], so a segment file may grow to 1 TiB.
pub const MAX_OFFSET: u64 = (1 << 40) - 1;

impl SegmentId {
    /// Segment 1: the active segment of a new data directory.
    pub const FIRST: SegmentId = SegmentId(NonZeroU32::MIN);

    /// The segment numbered `n`, if `n` is a valid segment id.
    pub fn new(n: u32) -> Option<SegmentId> {
        NonZeroU32::new(n).filter(|n| n.get() <= MAX_SEGMENT_ID).map(SegmentId)
    }

    /// The segment's number, from 1 to [`MAX_SEGMENT_ID`].
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The segment after this one.
    pub fn next(self) -> Option<SegmentId> {
        SegmentId::new(self.get() + 1)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a record lives: a segment, an offset in it and the record's
/// length, packed in twelve bytes (24-bit segment id, 40-bit offset, 32-bit
/// length), because the index holds one or two per record.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The segment id in the high 24 bits, offset bits 32..40 in the low 8.
    /// Never zero: segment ids start at 1.
    head: NonZeroU32,
    offset_low: u32,
    len: u32,
}

impl Location {
    /// The location of `len` bytes at `offset` in `segment`; `None` if the
    /// offset is above [`MAX_OFFSET`].
    pub fn new(segment: SegmentId, offset: u64, len: u32) -> Option<Location> {
        if offset > MAX_OFFSET {
            return None;
        }
        let head = NonZeroU32::new(segment.get() << 8 | (offset >> 32) as u32)?;
        Some(Location { head, offset_low: offset as u32, len })
    }

    /// The segment file the record is in.
    pub fn segment(self) -> SegmentId {
        SegmentId(NonZeroU32::new(self.head.get() >> 8).expect("a location's segment id is never 0"))
    }

    /// Where the record starts in its segment file, in bytes from the start
    /// of the file (segment header included).
    pub fn offset(self) -> u64 {
        u64::from(self.head.get() & 0xff) << 32 | u64::from(self.offset_low)
    }

    /// The record's length in bytes, header included.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> u32 {
        self.len
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location")
            .field("segment", &self.segment().get())
            .field("offset", &self.offset())
            .field("len", &self.len)
            .finish()
    }
}
