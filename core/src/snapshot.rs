//! Index snapshots: the hint file of a merged segment.
//!
//! A merged segment is written document by document (each followed by its
//! inputs and outputs), and it is always the first segment a recovery
//! replays. Its hint is therefore not a list of records to apply one by
//! one but the index that replaying it alone builds, written out document
//! by document: loading it is one hash insert per document and a copy of
//! each chain, instead of one index update per record.
//!
//! ```text
//! header    magic "STRATSNP" (8) | format version u16 | reserved u16 | segment id u32
//! scalars   next seq u64 | next id u64 | reserved ids u64 | checkpoint
//!           | segment bytes u64 | live bytes u64 | records u64
//! documents id u64 | version u64 | blob | columns at | column map
//!           | chain (len 0: none) | chain count u32 | chain ids: u64 each
//!           | input count u32 | inputs: id u64 | value | output (len 0: none)
//! trailer   segment length u64 | document count u64 | CRC-32 of everything before it
//! ```
//!
//! A location is `offset u64 | len u32` in the snapshot's segment, len 0
//! for none. A snapshot is used only if its checksum holds, it names the
//! segment and the length the segment file has, and everything in it is
//! consistent: every location inside the segment's records, document ids
//! unique, chains in ascending id order, the id counter above every id,
//! a checkpoint, and byte counts that add up to the segment. Anything else
//! falls back to scanning the segment, like a bad hint file. (Input ids
//! are not checked for uniqueness across documents: an input is always
//! addressed through its document.)

use crate::codec::{DecodeError, Reader};
use crate::hint::{Frame, HintError, frame_header, frame_trailer, record_location, unframe};
use crate::keydir::{Chain, DocumentEntry, InputEntry, KeyDir, SegmentUsage, SnapshotParts, Violation};
use crate::record::{EncodedIds, SEGMENT_HEADER_LEN};
use crate::value::EncodedColumns;
use crate::{Location, SegmentId};

/// The magic at the start of every index snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"STRATSNP";

/// The format version of index snapshots this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 4;

const SNAPSHOT_FRAME: Frame = Frame { magic: SNAPSHOT_MAGIC, version: SNAPSHOT_VERSION };

impl KeyDir {
    /// The snapshot of this index for a segment file of `segment_len`
    /// bytes, if everything in the index is in `segment` (as after
    /// replaying a merged segment alone); `None` otherwise.
    pub fn snapshot(&self, segment: SegmentId, segment_len: u64) -> Option<Vec<u8>> {
        let only_here = |at: Location| at.segment() == segment;
        let documents_here = self.documents_in_order().all(|(_, doc)| {
            only_here(doc.blob)
                && only_here(doc.columns_at)
                && doc.chain_order().is_none_or(|chain| only_here(chain.at))
                && doc.inputs.iter().all(|input| only_here(input.value) && input.output.is_none_or(only_here))
        });
        let others = self.segments().keys().any(|&s| s != segment);
        if !documents_here || others || self.reservation().is_some() || !self.checkpoint().is_none_or(only_here) {
            return None;
        }

        let mut buf = frame_header(SNAPSHOT_FRAME, segment);
        let usage = self.segments().get(&segment).copied().unwrap_or_default();
        for n in [self.next_seq(), self.next_id(), self.reserved_below()] {
            buf.extend_from_slice(&n.to_le_bytes());
        }
        put_location(&mut buf, self.checkpoint());
        for n in [usage.total_bytes, usage.live_bytes, usage.records] {
            buf.extend_from_slice(&n.to_le_bytes());
        }
        for (id, doc) in self.documents_in_order() {
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&doc.version().to_le_bytes());
            put_location(&mut buf, Some(doc.blob));
            put_location(&mut buf, Some(doc.columns_at));
            buf.extend_from_slice(doc.encoded_columns());
            let chain = doc.chain_order();
            put_location(&mut buf, chain.map(|chain| chain.at));
            let listed = chain.map_or(&[][..], |chain| chain.listed());
            let count = u32::try_from(listed.len()).expect("a chain holds fewer than 2^32 inputs");
            buf.extend_from_slice(&count.to_le_bytes());
            for id in listed {
                buf.extend_from_slice(&id.to_le_bytes());
            }
            let count = u32::try_from(doc.inputs.len()).expect("a chain holds fewer than 2^32 inputs");
            buf.extend_from_slice(&count.to_le_bytes());
            for input in &doc.inputs {
                buf.extend_from_slice(&input.id.to_le_bytes());
                put_location(&mut buf, Some(input.value));
                put_location(&mut buf, input.output);
            }
        }
        frame_trailer(&mut buf, segment_len, self.document_count() as u64);
        Some(buf)
    }

    /// The index a snapshot holds, for `segment` whose file is
    /// `segment_len` bytes. All or nothing: any defect is an error.
    pub fn from_snapshot(bytes: &[u8], segment: SegmentId, segment_len: u64) -> Result<KeyDir, HintError> {
        let (body, count) = unframe(bytes, SNAPSHOT_FRAME, segment, segment_len)?;
        let mut r = Reader::new(body);
        load(&mut r, segment, segment_len, count).map_err(HintError::Snapshot)
    }
}

/// What is wrong with a snapshot whose frame is intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDefect {
    /// A field does not decode (the body ends early, or a column map is
    /// malformed).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A location cannot hold a record of the segment: inside its header,
    /// shorter than a record header or past the file's end.
    #[error("a location is outside the segment's records")]
    BadLocation,
    /// A blob, columns or value location is none (length 0).
    #[error("a required location is missing")]
    MissingLocation,
    /// A document id appears twice.
    #[error("document {0} appears twice")]
    DuplicateDocument(u64),
    /// A document's inputs are not in strictly ascending id order.
    #[error("the chain of document {0} is not in ascending id order")]
    UnorderedChain(u64),
    /// The trailer's document count disagrees with the body.
    #[error("the trailer announces {announced} documents, the body holds {found}")]
    WrongCount {
        /// Documents the trailer announces.
        announced: u64,
        /// Documents the body holds.
        found: u64,
    },
    /// The id counter is not above every document and input id.
    #[error("the id counter {next_id} is not above id {id}")]
    IdCounterBehind {
        /// The snapshot's id counter.
        next_id: u64,
        /// The largest id in the snapshot.
        id: u64,
    },
    /// The segment's usage is impossible: total bytes other than the
    /// file's records, more live bytes than total, or no records.
    #[error("the byte counts do not add up to the segment")]
    WrongUsage,
    /// No checkpoint location.
    #[error("no checkpoint: a merged segment always starts with one")]
    NoCheckpoint,
    /// The index built from the snapshot breaks one of the
    /// [`crate::KeyDir`]'s invariants.
    #[error("the index it describes is inconsistent: {0}")]
    Inconsistent(Violation),
}

fn load(r: &mut Reader<'_>, segment: SegmentId, segment_len: u64, announced: u64) -> Result<KeyDir, SnapshotDefect> {
    let location = |r: &mut Reader<'_>| location(r, segment, segment_len);
    let next_seq = r.u64()?;
    let next_id = r.u64()?;
    let reserved_ids = r.u64()?;
    let checkpoint = location(r)?.ok_or(SnapshotDefect::NoCheckpoint)?;
    let usage = SegmentUsage { total_bytes: r.u64()?, live_bytes: r.u64()?, records: r.u64()? };
    let records_bytes = segment_len.checked_sub(SEGMENT_HEADER_LEN as u64);
    if usage.live_bytes > usage.total_bytes || Some(usage.total_bytes) != records_bytes || usage.records == 0 {
        return Err(SnapshotDefect::WrongUsage);
    }
    // The largest id seen: the id counter must be above it.
    let mut largest = 0;
    // A document takes at least 40 bytes: never trust the count for an allocation.
    let mut documents = Vec::with_capacity((announced as usize).min(r.remaining().len() / 40));
    while !r.is_empty() {
        let id = r.u64()?;
        let version = r.u64()?;
        let blob = location(r)?.ok_or(SnapshotDefect::MissingLocation)?;
        let columns_at = location(r)?.ok_or(SnapshotDefect::MissingLocation)?;
        let columns = EncodedColumns::take(r)?;
        let chain_at = location(r)?;
        let listed = EncodedIds::take(r)?;
        let chain = match chain_at {
            Some(at) if listed.len() > 0 => Some(Chain::new(at, listed.iter())),
            None if listed.len() == 0 => None,
            _ => return Err(SnapshotDefect::MissingLocation),
        };
        let count = r.count(32)?;
        let mut inputs = Vec::with_capacity(count);
        for _ in 0..count {
            let input = r.u64()?;
            let value = location(r)?.ok_or(SnapshotDefect::MissingLocation)?;
            let output = location(r)?;
            if inputs.last().is_some_and(|last: &InputEntry| last.id >= input) {
                return Err(SnapshotDefect::UnorderedChain(id));
            }
            inputs.push(InputEntry { id: input, value, output });
        }
        largest = largest.max(id).max(inputs.last().map_or(0, |input: &InputEntry| input.id));
        let mut doc = DocumentEntry::new(blob, columns, version);
        doc.columns_at = columns_at;
        doc.inputs = inputs;
        doc.set_parts(version, chain);
        documents.push((id, doc));
    }
    if next_id <= largest {
        return Err(SnapshotDefect::IdCounterBehind { next_id, id: largest });
    }
    let found = documents.len() as u64;
    if found != announced {
        return Err(SnapshotDefect::WrongCount { announced, found });
    }
    let parts = SnapshotParts { next_seq, next_id, reserved_ids, checkpoint, segment, usage, documents };
    let kd = KeyDir::from_parts(parts).map_err(SnapshotDefect::DuplicateDocument)?;
    // A snapshot whose checksum holds but whose counts do not (written by a
    // buggy build, or by hand) must not become the index.
    kd.check_invariants().map_err(SnapshotDefect::Inconsistent)?;
    Ok(kd)
}

fn put_location(buf: &mut Vec<u8>, at: Option<Location>) {
    let (offset, len) = at.map_or((0, 0), |at| (at.offset(), at.len()));
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
}

fn location(r: &mut Reader<'_>, segment: SegmentId, segment_len: u64) -> Result<Option<Location>, SnapshotDefect> {
    let offset = r.u64()?;
    match r.u32()? {
        0 => Ok(None),
        len => record_location(segment, offset, len, segment_len).map(Some).ok_or(SnapshotDefect::BadLocation),
    }
}
