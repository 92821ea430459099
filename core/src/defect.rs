//! What can be wrong with stored bytes: one typed answer for every check
//! the core makes on a segment, so the io layer reports damage as a file,
//! an offset and one of these, never as a string.

use crate::codec::DecodeError;
use crate::record::{Corruption, HeaderError, RecordKind};
use crate::{Id, SegmentId};

/// Why stored bytes cannot be used. Each variant names the check that
/// failed; the io layer adds the file and the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    /// The bytes at a record's location are not a whole, valid record.
    #[error(transparent)]
    Record(#[from] Corruption),
    /// A segment file's header is unusable.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A valid record about another id than the index expects there.
    #[error("record is about id {found}, expected {expected}")]
    WrongId {
        /// The id the record carries.
        found: Id,
        /// The id the index looked it up for.
        expected: Id,
    },
    /// An input or output record that names another document than the
    /// one whose chain points at it.
    #[error("record belongs to document {found}, expected {expected}")]
    WrongDocument {
        /// The document the record names.
        found: Id,
        /// The document whose chain points at it.
        expected: Id,
    },
    /// A valid record of a kind the index never points at there.
    #[error("the index points at a {0:?} record")]
    UnexpectedKind(RecordKind),
    /// A value record whose value does not decode.
    #[error("malformed value: {0}")]
    Value(DecodeError),
    /// A sealed segment's header names another segment than its file name.
    #[error("header says segment {header} but the file name says {name}")]
    HeaderNameMismatch {
        /// The id in the header.
        header: SegmentId,
        /// The id in the file name.
        name: SegmentId,
    },
    /// A sealed segment older than the first one `merged.seg` replaced: the
    /// merged segment would have covered it, so the directory is not one
    /// this engine wrote.
    #[error("segment is older than the segments merged.seg replaced ({covers_from}..={merged})")]
    OlderThanMerged {
        /// The first segment the merged segment replaced.
        covers_from: SegmentId,
        /// The merged segment's id (the newest it replaced).
        merged: SegmentId,
    },
    /// `active.seg` carries an id at or below a sealed segment's.
    #[error("active segment has id {active} but sealed segment {sealed} exists")]
    ActiveBehindSealed {
        /// The id in the active segment's header.
        active: SegmentId,
        /// The newest sealed (or merged) segment.
        sealed: SegmentId,
    },
    /// `merged.seg` does not open with its checkpoint record.
    #[error("merged segment does not start with a checkpoint record")]
    NoCheckpoint,
    /// A bad record in the active segment before the length a durability
    /// mark after it says a completed fsync covered: damage to acknowledged
    /// writes, not a torn write.
    #[error(
        "{reason}, but a durability mark after it says the segment was synced to disk up to offset \
         {durable_upto}: this is damage to records that were acknowledged, not a torn write, so recovery will \
         not cut them off (to accept losing every record from here on, keep a copy of the file and truncate it \
         to {valid_len} bytes)"
    )]
    DamageBeforeDurable {
        /// What is wrong at the end of the valid prefix.
        reason: Corruption,
        /// The length of the valid prefix.
        valid_len: u64,
        /// How far a durability mark after the damage says the segment
        /// was synced.
        durable_upto: u64,
    },
    /// A bad record in a format-2 active segment with a whole, newer
    /// record after it: damage in the middle of the log, not a torn write
    /// (format 2's judgement, which the upgrade keeps).
    #[error(
        "{reason}, and a whole, newer record follows at offset {next_record_at}: this is damage, not a torn write, \
         so the upgrade will not cut off what follows (to accept losing it, keep a copy of the file and truncate it \
         to {valid_len} bytes, then upgrade again)"
    )]
    DamageBeforeValidRecords {
        /// What is wrong at the end of the valid prefix.
        reason: Corruption,
        /// The length of the valid prefix.
        valid_len: u64,
        /// Where the next whole record starts.
        next_record_at: u64,
    },
    /// The index points into a segment that is not open.
    #[error("the index points into a segment that is not open")]
    SegmentNotOpen,
    /// A location reaches past the bytes written to its segment.
    #[error("a location ends at byte {end}, past the {len} bytes of its segment")]
    OutsideSegment {
        /// Where the location ends.
        end: u64,
        /// How many bytes the segment holds.
        len: u64,
    },
    /// Replaying a merged segment alone left the index pointing outside it.
    #[error("a merged segment's records point outside it")]
    MergedPointsOutside,
}

impl From<DecodeError> for Defect {
    fn from(e: DecodeError) -> Self {
        Defect::Record(Corruption::Payload(e))
    }
}
