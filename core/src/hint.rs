//! Hint files: what the index needs from a sealed segment, without the
//! blobs and values, so a restart rebuilds the index by reading a few bytes
//! per record instead of the whole segment (as in Bitcask).
//!
//! ```text
//! header   magic "STRATHNT" (8) | format version u16 | reserved u16 | segment id u32
//! entries  kind u8 | seq u64 | id u64 | offset u64 | len u32 | extra len u32 | extra
//! trailer  segment length u64 | entry count u64 | CRC-32 of everything before it
//! ```
//!
//! `extra` is the part of the record the index keeps: the column map of a
//! `CreateDocument` or `SetColumns`, the document id of an input or output
//! record, the id counter of a `Checkpoint`, the bound of a `ReserveIds`,
//! the input ids of a `SetChain` (8 bytes each, no count); empty otherwise.
//! A batch frame is an entry for its header (kind `Batch`, the header's
//! offset, length 25) followed by an entry for each record inside it. A hint is used only if its
//! checksum holds and it names the segment and the length the segment file
//! has; anything else falls back to scanning the segment.

use crate::codec::{DecodeError, Reader, put_len};
use crate::keydir::{Applied, RecordMeta, RecordSink};
use crate::record::{Effect, EncodedIds, RECORD_HEADER_LEN, RecordKind, SEGMENT_HEADER_LEN};
use crate::value::EncodedColumns;
use crate::{Location, SegmentId};

/// The magic at the start of every hint file.
pub const HINT_MAGIC: [u8; 8] = *b"STRATHNT";

const HEADER_LEN: usize = 16;

/// The format version of hint files this build writes and reads. It
/// changes when the entry layout does, apart from the segment format.
pub const HINT_VERSION: u16 = 4;

/// What tells one kind of framed file from another: its magic and the
/// version of its layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub magic: [u8; 8],
    pub version: u16,
}

const HINT_FRAME: Frame = Frame { magic: HINT_MAGIC, version: HINT_VERSION };
const TRAILER_LEN: usize = 20;

/// Why a hint file cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    /// The file is shorter than a header and trailer, or holds fewer
    /// entries than its trailer announces.
    #[error("hint file is truncated")]
    Truncated,
    /// The file does not start with the magic of its kind (`STRATHNT`, or
    /// `STRATSNP` for an index snapshot).
    #[error("not a hint file (bad magic)")]
    BadMagic,
    /// The file's format version is not the one this build reads
    /// ([`HINT_VERSION`], or [`crate::SNAPSHOT_VERSION`] for a snapshot).
    #[error("hint format version {0} is not supported")]
    UnsupportedVersion(u16),
    /// The CRC-32 in the trailer does not match the bytes before it.
    #[error("hint checksum mismatch")]
    ChecksumMismatch,
    /// The file describes another segment than the one beside it.
    #[error("hint describes segment {found}, not {expected}")]
    WrongSegment {
        /// The segment the hint was read for.
        expected: u32,
        /// The segment id in the hint's header.
        found: u32,
    },
    /// The segment file has changed length since the hint was written.
    #[error("hint describes {hinted} bytes of segment, the file has {actual}")]
    StaleLength {
        /// The segment length in the hint's trailer.
        hinted: u64,
        /// The segment file's length.
        actual: u64,
    },
    /// An entry does not decode.
    #[error("malformed hint entry: {0}")]
    Entry(DecodeError),
    /// An entry names a location that cannot hold a record: inside the
    /// segment header, shorter than a record header or past the file's end.
    #[error("hint names {len} bytes at offset {offset}, outside the segment's records")]
    OutOfRange {
        /// The entry's offset.
        offset: u64,
        /// The entry's record length.
        len: u32,
    },
    /// An index snapshot whose frame is intact holds an unusable index.
    #[error("malformed index snapshot: {0}")]
    Snapshot(crate::snapshot::SnapshotDefect),
}

/// Builds a hint file from the records of one segment, in order.
#[derive(Debug)]
pub struct HintBuilder {
    segment: SegmentId,
    buf: Vec<u8>,
    entries: u64,
}

impl HintBuilder {
    /// A hint file for `segment`, with its header and no entries yet.
    pub fn new(segment: SegmentId) -> Self {
        HintBuilder { segment, buf: frame_header(HINT_FRAME, segment), entries: 0 }
    }

    /// Adds the record at `meta.location`, which must be in this segment.
    pub fn add(&mut self, meta: RecordMeta, effect: &Effect<'_>) {
        debug_assert_eq!(meta.location.segment(), self.segment);
        self.buf.push(effect.kind() as u8);
        self.buf.extend_from_slice(&meta.seq.to_le_bytes());
        self.buf.extend_from_slice(&meta.id.to_le_bytes());
        self.buf.extend_from_slice(&meta.location.offset().to_le_bytes());
        self.buf.extend_from_slice(&meta.location.len().to_le_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        match effect {
            Effect::CreateDocument { columns } | Effect::SetColumns { columns } => {
                self.buf.extend_from_slice(columns.as_bytes())
            }
            Effect::PutInput { document }
            | Effect::DeleteInput { document }
            | Effect::PutOutput { document }
            | Effect::DeleteOutput { document } => self.buf.extend_from_slice(&document.to_le_bytes()),
            Effect::Checkpoint { next_id } => self.buf.extend_from_slice(&next_id.to_le_bytes()),
            Effect::ReserveIds { below } => self.buf.extend_from_slice(&below.to_le_bytes()),
            Effect::SetChain { inputs } => self.buf.extend_from_slice(inputs.as_bytes()),
            Effect::SetBlob | Effect::DeleteDocument | Effect::Durable | Effect::Batch => {}
        }
        let extra = self.buf.len() - len_at - 4;
        let mut len = Vec::with_capacity(4);
        put_len(&mut len, extra);
        self.buf[len_at..len_at + 4].copy_from_slice(&len);
        self.entries += 1;
    }

    /// The hint file's bytes, for a segment file of `segment_len` bytes.
    pub fn finish(mut self, segment_len: u64) -> Vec<u8> {
        frame_trailer(&mut self.buf, segment_len, self.entries);
        self.buf
    }
}

impl RecordSink for HintBuilder {
    fn record(&mut self, meta: RecordMeta, effect: Effect<'_>) -> Applied {
        self.add(meta, &effect);
        Applied::Changed
    }
}

/// Checks a hint file for `segment` (whose file is `segment_len` bytes)
/// and, only if all of it is valid, feeds its entries to `sink` in order.
/// Returns the number of entries.
pub fn replay_hints(
    bytes: &[u8],
    segment: SegmentId,
    segment_len: u64,
    sink: &mut impl RecordSink,
) -> Result<u64, HintError> {
    let (entries, count) = unframe(bytes, HINT_FRAME, segment, segment_len)?;

    // Check every entry before applying any (a hint is all or nothing),
    // then parse them again to apply them: no list of entries in between.
    let mut r = Reader::new(entries);
    let mut checked = 0u64;
    while !r.is_empty() {
        entry(&mut r, segment, segment_len)?;
        checked += 1;
    }
    if checked != count {
        return Err(HintError::Truncated);
    }
    let mut r = Reader::new(entries);
    while !r.is_empty() {
        let (meta, effect) = entry(&mut r, segment, segment_len).expect("every entry was checked above");
        let _ = sink.record(meta, effect);
    }
    Ok(count)
}

/// The header of a hint file or index snapshot: `magic`, the format
/// version, two reserved bytes and the segment id.
pub(crate) fn frame_header(frame: Frame, segment: SegmentId) -> Vec<u8> {
    let mut buf = Vec::with_capacity(4096);
    buf.extend_from_slice(&frame.magic);
    buf.extend_from_slice(&frame.version.to_le_bytes());
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&segment.get().to_le_bytes());
    buf
}

/// Ends a hint file or index snapshot: the segment's length, the number of
/// entries, and the CRC-32 of everything before it.
pub(crate) fn frame_trailer(buf: &mut Vec<u8>, segment_len: u64, entries: u64) {
    buf.extend_from_slice(&segment_len.to_le_bytes());
    buf.extend_from_slice(&entries.to_le_bytes());
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the frame of a hint file or index snapshot for `segment`, whose
/// file is `segment_len` bytes: checksum, magic, version, segment id and
/// length. Returns the bytes between header and trailer, and the number of
/// entries the trailer announces.
pub(crate) fn unframe(
    bytes: &[u8],
    frame: Frame,
    segment: SegmentId,
    segment_len: u64,
) -> Result<(&[u8], u64), HintError> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(HintError::Truncated);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(HintError::ChecksumMismatch);
    }
    if body[0..8] != frame.magic {
        return Err(HintError::BadMagic);
    }
    let version = u16::from_le_bytes(body[8..10].try_into().expect("2 bytes"));
    if version != frame.version {
        return Err(HintError::UnsupportedVersion(version));
    }
    let found = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes"));
    if found != segment.get() {
        return Err(HintError::WrongSegment { expected: segment.get(), found });
    }
    let trailer = &body[body.len() - (TRAILER_LEN - 4)..];
    let hinted = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
    if hinted != segment_len {
        return Err(HintError::StaleLength { hinted, actual: segment_len });
    }
    let count = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    Ok((&body[HEADER_LEN..body.len() - (TRAILER_LEN - 4)], count))
}

/// The location of a record of `len` bytes at `offset` in `segment`, whose
/// file is `segment_len` bytes, if a record can be there: after the segment
/// header, at least a record header long, within the file. A location from
/// a hint or snapshot is checked so, since a read past the end of a mapped
/// file is fatal.
pub(crate) fn record_location(segment: SegmentId, offset: u64, len: u32, segment_len: u64) -> Option<Location> {
    let inside = offset >= SEGMENT_HEADER_LEN as u64
        && len as usize >= RECORD_HEADER_LEN
        && offset.checked_add(u64::from(len)).is_some_and(|end| end <= segment_len);
    inside.then(|| Location::new(segment, offset, len)).flatten()
}

fn entry<'a>(r: &mut Reader<'a>, segment: SegmentId, segment_len: u64) -> Result<(RecordMeta, Effect<'a>), HintError> {
    let (seq, id, offset, len, effect) = entry_fields(r).map_err(HintError::Entry)?;
    let location = record_location(segment, offset, len, segment_len).ok_or(HintError::OutOfRange { offset, len })?;
    Ok((RecordMeta { seq, id, location }, effect))
}

/// The fields of one hint entry.
fn entry_fields<'a>(r: &mut Reader<'a>) -> Result<(u64, u64, u64, u32, Effect<'a>), DecodeError> {
    let kind_byte = r.u8()?;
    let kind = RecordKind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let seq = r.u64()?;
    let id = r.u64()?;
    let offset = r.u64()?;
    let len = r.u32()?;
    let extra_len = r.u32()? as usize;
    let mut extra = Reader::new(r.take(extra_len)?);
    let effect = match kind {
        RecordKind::CreateDocument => Effect::CreateDocument { columns: EncodedColumns::take(&mut extra)? },
        RecordKind::SetBlob => Effect::SetBlob,
        RecordKind::SetColumns => Effect::SetColumns { columns: EncodedColumns::take(&mut extra)? },
        RecordKind::DeleteDocument => Effect::DeleteDocument,
        RecordKind::PutInput => Effect::PutInput { document: extra.u64()? },
        RecordKind::DeleteInput => Effect::DeleteInput { document: extra.u64()? },
        RecordKind::PutOutput => Effect::PutOutput { document: extra.u64()? },
        RecordKind::DeleteOutput => Effect::DeleteOutput { document: extra.u64()? },
        RecordKind::Checkpoint => Effect::Checkpoint { next_id: extra.u64()? },
        RecordKind::ReserveIds => Effect::ReserveIds { below: extra.u64()? },
        RecordKind::Durable => Effect::Durable,
        RecordKind::SetChain => Effect::SetChain { inputs: EncodedIds::new(extra.rest())? },
        RecordKind::Batch => Effect::Batch,
    };
    extra.finish()?;
    Ok((seq, id, offset, len, effect))
}
