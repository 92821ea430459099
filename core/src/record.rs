//! The log's record format and segment file header.
//!
//! A segment file is a [`SegmentHeader`] followed by records, back to back:
//!
//! ```text
//! offset  size  field
//!      0     4  crc32     CRC-32 (crc32fast) of the segment's salt, then
//!                         bytes 4 .. end of record
//!      4     4  len       payload length
//!      8     1  kind      RecordKind, never 0
//!      9     8  seq       sequence number, strictly increasing in the log
//!     17     8  id        document or input id the record is about
//!     25   len  payload   kind-specific, see `Mutation`
//! ```
//!
//! All integers are little-endian. The CRC covers the segment's random
//! [`Salt`] (from its header, never stored in a record) followed by the
//! length, kind, sequence number, id and payload, so a flipped length is
//! caught, and the bytes of a record are valid in their own segment only:
//! a record stored inside a value, copied from another segment or written
//! by another store validates only by chance (a CRC-32 collision, about 1
//! in 2^32 per candidate), since its writer could not know the salt.
//! Recovery's decisions never rest on such a chance: they look for the 16
//! salt bytes themselves (see `judge_bad_tail`). An all-zero header never validates: kind 0 does not exist. A
//! zero-filled tail is therefore a torn tail.

use crate::codec::{DecodeError, Reader};
use crate::value::{EncodedColumns, Value, encode_string_map, string_map_encoded_len};
use crate::{Columns, Id, SegmentId};

/// Bytes in a record header.
pub const RECORD_HEADER_LEN: usize = 25;

/// The largest payload a record may carry. Lengths above it are rejected
/// before any allocation, whatever the CRC would say.
pub const MAX_PAYLOAD_LEN: u32 = 1 << 30;

/// What a record says happened. Stored as one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A new document: its column map and blob.
    CreateDocument = 1,
    /// A document's new blob.
    SetBlob = 2,
    /// A document's new column map, replacing the whole old one.
    SetColumns = 3,
    /// A document deleted, with its inputs and their outputs (a tombstone).
    DeleteDocument = 4,
    /// An input appended to a document's chain, or its new value.
    PutInput = 5,
    /// An input deleted, with its output (a tombstone).
    DeleteInput = 6,
    /// An input's output, new or replaced.
    PutOutput = 7,
    /// An input's output deleted (a tombstone).
    DeleteOutput = 8,
    /// The first record of a merged segment: what it replaces and the id
    /// counter.
    Checkpoint = 9,
    /// A bound below which ids may have been handed out.
    ReserveIds = 10,
    /// A durability mark: how far the segment was covered by a completed
    /// fsync when it was appended (see [`Mutation::Durable`]).
    Durable = 11,
    /// An atomic batch: a frame whose payload is whole records, applied
    /// all together or not at all (see [`start_batch`]).
    Batch = 12,
    /// A document's chain order, replacing any earlier one.
    SetChain = 13,
}

impl RecordKind {
    /// The kind stored as `b`; `None` for a byte that is no kind (0 among
    /// them).
    pub fn from_byte(b: u8) -> Option<RecordKind> {
        use RecordKind::*;
        Some(match b {
            1 => CreateDocument,
            2 => SetBlob,
            3 => SetColumns,
            4 => DeleteDocument,
            5 => PutInput,
            6 => DeleteInput,
            7 => PutOutput,
            8 => DeleteOutput,
            9 => Checkpoint,
            10 => ReserveIds,
            11 => Durable,
            12 => Batch,
            13 => SetChain,
            _ => return None,
        })
    }
}

/// A change to write, borrowing its data from the caller.
///
/// Payloads: `CreateDocument` is the column map followed by the blob;
/// `SetBlob` is the blob; `SetColumns` is the whole column map; `PutInput`
/// and `PutOutput` are the owning document's id (u64) followed by the
/// value, and `DeleteInput` and `DeleteOutput` are the document's id alone
/// (the record's id is the input's id: an input is found through its
/// document); `DeleteDocument` has no payload.
/// `Checkpoint` opens every merged segment: the first segment id it
/// replaces (little-endian u32) and the id counter at the time of the merge
/// (u64), so ids are not reused even when the records that used them are
/// gone; its record id is 0. `ReserveIds` (payload: u64, record id 0)
/// says ids below its value may have been handed out: it is synced before
/// any of them is, so a restart never hands them out again. `Durable`
/// (record id 0) is the segment's salt again (16 bytes, so recovery can
/// find marks past damage) and a u64 offset. `SetChain` (record id: the
/// document) is a u32 count and that many input ids (u64 each), in chain
/// order; an empty list goes back to id order.
#[derive(Clone, Copy, Debug)]
pub enum Mutation<'a> {
    /// Creates the document the record is about.
    CreateDocument {
        /// The document's column map.
        columns: &'a Columns,
        /// The document's blob.
        blob: &'a [u8],
    },
    /// Replaces the document's blob.
    SetBlob {
        /// The new blob.
        blob: &'a [u8],
    },
    /// Replaces the document's whole column map.
    SetColumns {
        /// The new column map.
        columns: &'a Columns,
    },
    /// Deletes the document with its inputs and outputs.
    DeleteDocument,
    /// Appends the input the record is about to `document`'s chain, or
    /// replaces its value.
    PutInput {
        /// The document whose chain holds the input.
        document: Id,
        /// The input's value.
        value: &'a Value,
    },
    /// Deletes the input the record is about, with its output.
    DeleteInput {
        /// The input's document.
        document: Id,
    },
    /// Sets the output of the input the record is about.
    PutOutput {
        /// The input's document.
        document: Id,
        /// The output's value.
        value: &'a Value,
    },
    /// Deletes the output of the input the record is about.
    DeleteOutput {
        /// The input's document.
        document: Id,
    },
    /// Opens a merged segment (record id 0).
    Checkpoint {
        /// The oldest segment the merged segment replaces.
        covers_from: SegmentId,
        /// The id counter at the merge: ids below it may have been handed
        /// out.
        next_id: Id,
    },
    /// Reserves ids (record id 0); synced before any of them is handed out.
    ReserveIds {
        /// Ids below this may have been handed out.
        below: Id,
    },
    /// Marks how far the segment is durable (record id 0): appended after
    /// an fsync of the segment completed, before any write it covered was
    /// acknowledged. Recovery treats damage before `upto` as corruption,
    /// never as a torn write.
    Durable {
        /// Every byte of the segment before this offset was covered by a
        /// completed fsync.
        upto: u64,
    },
    /// Sets the chain order of the document the record is about: these
    /// inputs in this order come first, then every input added later, in
    /// id order (see [`crate::DocumentEntry::chain`]).
    SetChain {
        /// Every input of the document, in chain order (none: id order).
        inputs: &'a [Id],
    },
}

impl Mutation<'_> {
    /// The kind of record this mutation encodes to.
    pub fn kind(&self) -> RecordKind {
        match self {
            Mutation::CreateDocument { .. } => RecordKind::CreateDocument,
            Mutation::SetBlob { .. } => RecordKind::SetBlob,
            Mutation::SetColumns { .. } => RecordKind::SetColumns,
            Mutation::DeleteDocument => RecordKind::DeleteDocument,
            Mutation::PutInput { .. } => RecordKind::PutInput,
            Mutation::DeleteInput { .. } => RecordKind::DeleteInput,
            Mutation::PutOutput { .. } => RecordKind::PutOutput,
            Mutation::DeleteOutput { .. } => RecordKind::DeleteOutput,
            Mutation::Checkpoint { .. } => RecordKind::Checkpoint,
            Mutation::ReserveIds { .. } => RecordKind::ReserveIds,
            Mutation::Durable { .. } => RecordKind::Durable,
            Mutation::SetChain { .. } => RecordKind::SetChain,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Mutation::CreateDocument { columns, blob } => string_map_encoded_len(columns) + blob.len(),
            Mutation::SetBlob { blob } => blob.len(),
            Mutation::SetColumns { columns } => string_map_encoded_len(columns),
            Mutation::PutInput { value, .. } | Mutation::PutOutput { value, .. } => 8 + value.encoded_len(),
            Mutation::Checkpoint { .. } => 12,
            Mutation::Durable { .. } => SALT_LEN + 8,
            Mutation::SetChain { inputs } => 4 + 8 * inputs.len(),
            Mutation::ReserveIds { .. } | Mutation::DeleteInput { .. } | Mutation::DeleteOutput { .. } => 8,
            Mutation::DeleteDocument => 0,
        }
    }

    /// The total size of the record this mutation encodes to.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len()
    }

    /// The change this mutation makes to the key directory. Column maps
    /// are encoded into `scratch`, which the effect borrows.
    pub fn effect<'s>(&self, scratch: &'s mut Vec<u8>) -> Effect<'s> {
        match *self {
            Mutation::CreateDocument { columns, .. } => {
                Effect::CreateDocument { columns: EncodedColumns::encode(columns, scratch) }
            }
            Mutation::SetBlob { .. } => Effect::SetBlob,
            Mutation::SetColumns { columns } => {
                Effect::SetColumns { columns: EncodedColumns::encode(columns, scratch) }
            }
            Mutation::DeleteDocument => Effect::DeleteDocument,
            Mutation::PutInput { document, .. } => Effect::PutInput { document },
            Mutation::DeleteInput { document } => Effect::DeleteInput { document },
            Mutation::PutOutput { document, .. } => Effect::PutOutput { document },
            Mutation::DeleteOutput { document } => Effect::DeleteOutput { document },
            Mutation::Checkpoint { next_id, .. } => Effect::Checkpoint { next_id },
            Mutation::ReserveIds { below } => Effect::ReserveIds { below },
            Mutation::Durable { .. } => Effect::Durable,
            Mutation::SetChain { inputs } => {
                scratch.clear();
                encode_ids(inputs, scratch);
                Effect::SetChain { inputs: EncodedIds(&scratch[4..]) }
            }
        }
    }
}

fn encode_ids(ids: &[Id], out: &mut Vec<u8>) {
    let count = u32::try_from(ids.len()).expect("chains are limited far below 2^32 inputs");
    out.extend_from_slice(&count.to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// A list of ids in its record encoding (8 bytes each, little-endian),
/// borrowed from a record or hint: a chain order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncodedIds<'a>(&'a [u8]);

impl<'a> EncodedIds<'a> {
    /// The ids in `bytes`, which must be a whole number of ids.
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(DecodeError::Truncated);
        }
        Ok(EncodedIds(bytes))
    }

    /// A u32 count and that many ids, from `r`.
    pub(crate) fn take(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let count = r.count(8)?;
        EncodedIds::new(r.take(count * 8)?)
    }

    /// The encoded bytes (without a count).
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    /// How many ids the list holds.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        self.0.len() / 8
    }

    /// The ids, in order.
    pub fn iter(self) -> impl ExactSizeIterator<Item = Id> + 'a {
        self.0.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
    }
}

impl std::fmt::Debug for EncodedIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Bytes in a segment's salt.
pub const SALT_LEN: usize = 16;

/// A segment's salt: random bytes chosen when the segment file is created,
/// kept in its header, and covered by the checksum of every record in it
/// (as if they preceded the record), so record framing cannot be forged by
/// stored data. The io layer draws the bytes; the core never does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt {
    bytes: [u8; SALT_LEN],
    /// The CRC-32 of `bytes`: a record's checksum starts from it.
    crc: u32,
    /// Format 2 had no salt (see [`Salt::UNSALTED`]).
    salted: bool,
}

impl Salt {
    /// The framing of format 2, whose records' checksums covered no salt:
    /// for reading a store written before salts, to upgrade it.
    pub const UNSALTED: Salt = Salt { bytes: [0; SALT_LEN], crc: 0, salted: false };

    /// The salt made of `bytes`.
    pub fn new(bytes: [u8; SALT_LEN]) -> Salt {
        Salt { bytes, crc: crc32fast::hash(&bytes), salted: true }
    }

    /// The salt's bytes.
    pub fn bytes(&self) -> &[u8; SALT_LEN] {
        &self.bytes
    }

    /// The checksum of a record whose bytes after the checksum field are
    /// `covered`.
    fn checksum(&self, covered: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new_with_initial(self.crc);
        hasher.update(covered);
        hasher.finalize()
    }
}

/// Shows only whether the salt is a real one: its bytes are what keeps
/// stored data from forging records, so they stay out of logs.
impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.salted { "Salt(..)" } else { "Salt::UNSALTED" })
    }
}

/// Appends one record to `out` and returns its length.
///
/// The caller must have checked the mutation against the limits: a payload
/// above [`MAX_PAYLOAD_LEN`] is a bug and panics.
pub fn encode_record(out: &mut Vec<u8>, salt: &Salt, seq: u64, id: Id, mutation: &Mutation<'_>) -> usize {
    let start = out.len();
    let payload_len = mutation.payload_len();
    assert!(payload_len <= MAX_PAYLOAD_LEN as usize, "payload of {payload_len} bytes passed the limits check");
    out.reserve(RECORD_HEADER_LEN + payload_len);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.push(mutation.kind() as u8);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    match mutation {
        Mutation::CreateDocument { columns, blob } => {
            encode_string_map(columns, out);
            out.extend_from_slice(blob);
        }
        Mutation::SetBlob { blob } => out.extend_from_slice(blob),
        Mutation::SetColumns { columns } => encode_string_map(columns, out),
        Mutation::PutInput { document, value } | Mutation::PutOutput { document, value } => {
            out.extend_from_slice(&document.to_le_bytes());
            value.encode(out);
        }
        Mutation::DeleteInput { document } | Mutation::DeleteOutput { document } => {
            out.extend_from_slice(&document.to_le_bytes())
        }
        Mutation::Checkpoint { covers_from, next_id } => {
            out.extend_from_slice(&covers_from.get().to_le_bytes());
            out.extend_from_slice(&next_id.to_le_bytes());
        }
        Mutation::ReserveIds { below } => out.extend_from_slice(&below.to_le_bytes()),
        Mutation::Durable { upto } => {
            out.extend_from_slice(salt.bytes());
            out.extend_from_slice(&upto.to_le_bytes());
        }
        Mutation::SetChain { inputs } => encode_ids(inputs, out),
        Mutation::DeleteDocument => {}
    }
    seal_record(&mut out[start..], salt);
    debug_assert_eq!(out.len() - start, RECORD_HEADER_LEN + payload_len);
    out.len() - start
}

/// Writes the checksum of the whole record in `record` for `salt`: how a
/// record checked in one segment is copied into another (compaction, the
/// format upgrade) without being re-encoded.
pub fn seal_record(record: &mut [u8], salt: &Salt) {
    let crc = salt.checksum(&record[4..]);
    record[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Sets the sequence number in the header of `record` (which must then be
/// sealed again): how a merged segment's copy of a document's record
/// carries the document's version.
pub(crate) fn set_seq(record: &mut [u8], seq: u64) {
    record[9..17].copy_from_slice(&seq.to_le_bytes());
}

/// Starts a batch frame at the end of `out`: a record header (kind
/// `Batch`, record id 0) whose length and checksum [`finish_batch`] fills
/// in once the batch's records, each encoded with [`encode_record`] under
/// the same salt, follow it. Returns where the frame starts in `out`.
///
/// A frame's payload is nothing but whole records. Its checksum covers
/// them all, so a torn or damaged batch fails as one record: recovery
/// applies all of it or none. Each inner record is valid on its own too,
/// so the index points into the frame and reads never see the frame.
pub fn start_batch(out: &mut Vec<u8>, seq: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(RecordKind::Batch as u8);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    start
}

/// Ends the batch frame [`start_batch`] began at `start`: writes its
/// length and seals it.
///
/// The caller must have checked the batch against the limits: a payload
/// above [`MAX_PAYLOAD_LEN`] is a bug and panics.
pub fn finish_batch(out: &mut [u8], start: usize, salt: &Salt) {
    let payload_len = out.len() - start - RECORD_HEADER_LEN;
    assert!(payload_len <= MAX_PAYLOAD_LEN as usize, "batch of {payload_len} bytes passed the limits check");
    out[start + 4..start + 8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    seal_record(&mut out[start..], salt);
}

/// Seals the record in `record` for `salt` again, and, if it is a batch
/// frame, every record inside it first: how an encoded write moves to a
/// new segment when the active one is sealed before it is appended.
pub fn reseal(record: &mut [u8], salt: &Salt) {
    if record[8] == RecordKind::Batch as u8 {
        let mut at = RECORD_HEADER_LEN;
        while at < record.len() {
            let len =
                RECORD_HEADER_LEN + u32::from_le_bytes(record[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
            seal_record(&mut record[at..at + len], salt);
            at += len;
        }
    }
    seal_record(record, salt);
}

/// The records inside a batch frame's payload, each checked (its checksum
/// under `salt` and its payload decoded), with its offset in the payload.
/// Only data records may be inside a batch: no frame, mark, checkpoint or
/// reservation. The first defect ends the walk; callers check every entry
/// before they apply any.
pub fn batch_entries<'a>(
    payload: &'a [u8],
    salt: &Salt,
) -> impl Iterator<Item = Result<(usize, RecordRef<'a>, Body<'a>), Corruption>> {
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at == payload.len() {
            return None;
        }
        let entry = match scan(&payload[at..], salt) {
            Scan::Record(record) => match record.kind {
                RecordKind::Batch | RecordKind::Durable | RecordKind::Checkpoint | RecordKind::ReserveIds => {
                    Err(Corruption::Payload(DecodeError::NotInBatch(record.kind as u8)))
                }
                _ => record.body().map(|body| (at, record, body)).map_err(Corruption::Payload),
            },
            // The frame's checksum held: its records must fill it exactly.
            Scan::Incomplete { .. } => Err(Corruption::Payload(DecodeError::Truncated)),
            Scan::Invalid(corruption) => Err(corruption),
        };
        match &entry {
            Ok((_, record, _)) => at += record.len(),
            Err(_) => failed = true,
        }
        Some(entry)
    })
}

/// What a record does to the key directory: its kind plus the little the
/// index keeps in RAM (columns, the owning document). Values and blobs stay
/// on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// A document created, with this column map.
    CreateDocument {
        /// The column map.
        columns: EncodedColumns<'a>,
    },
    /// A document's blob replaced.
    SetBlob,
    /// A document's column map replaced.
    SetColumns {
        /// The new column map.
        columns: EncodedColumns<'a>,
    },
    /// A document deleted.
    DeleteDocument,
    /// An input appended or its value replaced.
    PutInput {
        /// The input's document.
        document: Id,
    },
    /// An input deleted.
    DeleteInput {
        /// The input's document.
        document: Id,
    },
    /// An input's output set.
    PutOutput {
        /// The input's document.
        document: Id,
    },
    /// An input's output deleted.
    DeleteOutput {
        /// The input's document.
        document: Id,
    },
    /// A merged segment's checkpoint.
    Checkpoint {
        /// The id counter it carries.
        next_id: Id,
    },
    /// An id reservation.
    ReserveIds {
        /// Ids below this may have been handed out.
        below: Id,
    },
    /// A durability mark: garbage as soon as it is written (recovery reads
    /// marks from the segment, not from the index).
    Durable,
    /// A document's chain order set.
    SetChain {
        /// The inputs listed, in chain order.
        inputs: EncodedIds<'a>,
    },
    /// The header of a batch frame (its records are applied one by one,
    /// after it): garbage as soon as it is written.
    Batch,
}

impl Effect<'_> {
    /// The kind of record that has this effect.
    pub fn kind(&self) -> RecordKind {
        match self {
            Effect::CreateDocument { .. } => RecordKind::CreateDocument,
            Effect::SetBlob => RecordKind::SetBlob,
            Effect::SetColumns { .. } => RecordKind::SetColumns,
            Effect::DeleteDocument => RecordKind::DeleteDocument,
            Effect::PutInput { .. } => RecordKind::PutInput,
            Effect::DeleteInput { .. } => RecordKind::DeleteInput,
            Effect::PutOutput { .. } => RecordKind::PutOutput,
            Effect::DeleteOutput { .. } => RecordKind::DeleteOutput,
            Effect::Checkpoint { .. } => RecordKind::Checkpoint,
            Effect::ReserveIds { .. } => RecordKind::ReserveIds,
            Effect::Durable => RecordKind::Durable,
            Effect::SetChain { .. } => RecordKind::SetChain,
            Effect::Batch => RecordKind::Batch,
        }
    }
}

/// A decoded record payload, borrowing blobs and encoded values from the
/// record's bytes. Values are decoded only when read ([`Value::decode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// A `CreateDocument` payload.
    CreateDocument {
        /// The document's column map.
        columns: EncodedColumns<'a>,
        /// The document's blob.
        blob: &'a [u8],
    },
    /// A `SetBlob` payload.
    SetBlob {
        /// The new blob.
        blob: &'a [u8],
    },
    /// A `SetColumns` payload.
    SetColumns {
        /// The new column map.
        columns: EncodedColumns<'a>,
    },
    /// A `DeleteDocument` record (no payload).
    DeleteDocument,
    /// A `PutInput` payload.
    PutInput {
        /// The input's document.
        document: Id,
        /// The input's value, encoded.
        value: &'a [u8],
    },
    /// A `DeleteInput` payload.
    DeleteInput {
        /// The input's document.
        document: Id,
    },
    /// A `PutOutput` payload.
    PutOutput {
        /// The input's document.
        document: Id,
        /// The output's value, encoded.
        value: &'a [u8],
    },
    /// A `DeleteOutput` payload.
    DeleteOutput {
        /// The input's document.
        document: Id,
    },
    /// A `Checkpoint` payload.
    Checkpoint {
        /// The oldest segment the merged segment replaces.
        covers_from: SegmentId,
        /// The id counter at the merge.
        next_id: Id,
    },
    /// A `ReserveIds` payload.
    ReserveIds {
        /// Ids below this may have been handed out.
        below: Id,
    },
    /// A `Durable` payload.
    Durable {
        /// The salt the mark repeats: a mark counts only when this equals
        /// its segment's salt (the checksum alone does not prove it).
        salt: [u8; SALT_LEN],
        /// The segment was durable up to this offset.
        upto: u64,
    },
    /// A `SetChain` payload.
    SetChain {
        /// The inputs in chain order.
        inputs: EncodedIds<'a>,
    },
    /// A `Batch` frame: whole records, not yet checked (see
    /// [`batch_entries`]).
    Batch {
        /// The records, back to back.
        records: &'a [u8],
    },
}

impl<'a> Body<'a> {
    /// The kind of the record this payload was parsed from.
    pub fn kind(&self) -> RecordKind {
        match self {
            Body::CreateDocument { .. } => RecordKind::CreateDocument,
            Body::SetBlob { .. } => RecordKind::SetBlob,
            Body::SetColumns { .. } => RecordKind::SetColumns,
            Body::DeleteDocument => RecordKind::DeleteDocument,
            Body::PutInput { .. } => RecordKind::PutInput,
            Body::DeleteInput { .. } => RecordKind::DeleteInput,
            Body::PutOutput { .. } => RecordKind::PutOutput,
            Body::DeleteOutput { .. } => RecordKind::DeleteOutput,
            Body::Checkpoint { .. } => RecordKind::Checkpoint,
            Body::ReserveIds { .. } => RecordKind::ReserveIds,
            Body::Durable { .. } => RecordKind::Durable,
            Body::SetChain { .. } => RecordKind::SetChain,
            Body::Batch { .. } => RecordKind::Batch,
        }
    }

    /// What the record does to the key directory: the body without the
    /// blob and value bytes the index does not keep.
    pub fn into_effect(self) -> Effect<'a> {
        match self {
            Body::CreateDocument { columns, .. } => Effect::CreateDocument { columns },
            Body::SetBlob { .. } => Effect::SetBlob,
            Body::SetColumns { columns } => Effect::SetColumns { columns },
            Body::DeleteDocument => Effect::DeleteDocument,
            Body::PutInput { document, .. } => Effect::PutInput { document },
            Body::DeleteInput { document } => Effect::DeleteInput { document },
            Body::PutOutput { document, .. } => Effect::PutOutput { document },
            Body::DeleteOutput { document } => Effect::DeleteOutput { document },
            Body::Checkpoint { next_id, .. } => Effect::Checkpoint { next_id },
            Body::ReserveIds { below } => Effect::ReserveIds { below },
            Body::Durable { .. } => Effect::Durable,
            Body::SetChain { inputs } => Effect::SetChain { inputs },
            Body::Batch { .. } => Effect::Batch,
        }
    }
}

/// A record whose checksum has been verified, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's kind.
    pub kind: RecordKind,
    /// The record's sequence number.
    pub seq: u64,
    /// The document or input the record is about (0 for a `Checkpoint` or
    /// `ReserveIds`).
    pub id: Id,
    /// The payload, not yet parsed ([`RecordRef::body`]).
    pub payload: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The record's total length in bytes, header included.
    #[allow(clippy::len_without_is_empty)] // a record is never empty
    pub fn len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }

    /// The blob of a `CreateDocument` or `SetBlob` record (`None` for other
    /// kinds), found without decoding the column map in front of it: the
    /// read path of a blob needs nothing else.
    pub fn blob(&self) -> Result<Option<&'a [u8]>, DecodeError> {
        let mut r = Reader::new(self.payload);
        match self.kind {
            RecordKind::SetBlob => Ok(Some(self.payload)),
            RecordKind::CreateDocument => {
                let columns = r.count(8)?;
                for _ in 0..columns * 2 {
                    let len = r.u32()? as usize;
                    r.take(len)?;
                }
                Ok(Some(r.rest()))
            }
            _ => Ok(None),
        }
    }

    /// Parses the payload according to the record's kind.
    pub fn body(&self) -> Result<Body<'a>, DecodeError> {
        let mut r = Reader::new(self.payload);
        let body = match self.kind {
            RecordKind::CreateDocument => {
                let columns = EncodedColumns::take(&mut r)?;
                Body::CreateDocument { columns, blob: r.rest() }
            }
            RecordKind::SetBlob => Body::SetBlob { blob: r.rest() },
            RecordKind::SetColumns => Body::SetColumns { columns: EncodedColumns::take(&mut r)? },
            RecordKind::DeleteDocument => Body::DeleteDocument,
            RecordKind::PutInput => Body::PutInput { document: r.u64()?, value: r.rest() },
            RecordKind::DeleteInput => Body::DeleteInput { document: r.u64()? },
            RecordKind::PutOutput => Body::PutOutput { document: r.u64()?, value: r.rest() },
            RecordKind::DeleteOutput => Body::DeleteOutput { document: r.u64()? },
            RecordKind::ReserveIds => Body::ReserveIds { below: r.u64()? },
            RecordKind::Durable => {
                Body::Durable { salt: r.take(SALT_LEN)?.try_into().expect("SALT_LEN bytes"), upto: r.u64()? }
            }
            RecordKind::SetChain => Body::SetChain { inputs: EncodedIds::take(&mut r)? },
            RecordKind::Batch => Body::Batch { records: r.rest() },
            RecordKind::Checkpoint => Body::Checkpoint {
                covers_from: SegmentId::new(r.u32()?).ok_or(DecodeError::ZeroSegmentId)?,
                next_id: r.u64()?,
            },
        };
        r.finish()?;
        Ok(body)
    }
}

/// Why bytes at a position are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The header is all zeros: a zero-filled tail (torn or preallocated),
    /// never a record.
    #[error("record header is all zeros (a torn or preallocated tail)")]
    ZeroHeader,
    /// The kind byte is no [`RecordKind`].
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The length field claims more than [`MAX_PAYLOAD_LEN`] bytes (refused
    /// before anything is allocated).
    #[error("record claims a {0}-byte payload, above the {MAX_PAYLOAD_LEN}-byte maximum")]
    TooLarge(u32),
    /// The CRC-32 does not match the bytes it covers.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC in the record.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The record runs past the end of the data (at the end of a file: a
    /// torn write).
    #[error("record ends {missing} bytes past the end of the data")]
    Truncated {
        /// How many bytes the record needs beyond the data (0 if unknown).
        missing: usize,
    },
    /// The checksum holds but the payload does not decode for its kind, or
    /// bytes follow a record that must span them.
    #[error("malformed payload: {0}")]
    Payload(DecodeError),
    /// The record starts past [`crate::MAX_OFFSET`], which a
    /// [`crate::Location`] cannot hold.
    #[error("record starts beyond the largest offset a segment may have")]
    BeyondMaxOffset,
}

/// The result of looking for one record at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A complete record with a valid checksum.
    Record(RecordRef<'a>),
    /// The buffer holds the start of what may be a record; at least `needed`
    /// bytes in total are required to decide.
    Incomplete {
        /// Bytes from the start of the buffer: a header's worth, or the
        /// whole record once its header is there.
        needed: usize,
    },
    /// The bytes cannot be a record.
    Invalid(Corruption),
}

/// Looks for one record at the start of `buf`.
///
/// Never panics and never trusts a length before checking it against
/// [`MAX_PAYLOAD_LEN`]; the caller decides what an `Incomplete` at the end
/// of a file means (a torn tail).
pub fn scan<'a>(buf: &'a [u8], salt: &Salt) -> Scan<'a> {
    if buf.len() < RECORD_HEADER_LEN {
        return Scan::Incomplete { needed: RECORD_HEADER_LEN };
    }
    let bytes: &[u8; RECORD_HEADER_LEN] = buf[..RECORD_HEADER_LEN].try_into().expect("a header's bytes");
    if bytes.iter().all(|&b| b == 0) {
        return Scan::Invalid(Corruption::ZeroHeader);
    }
    let header = RecordHeader::parse(bytes);
    let (stored, payload_len, kind_byte) = (header.crc, header.payload_len, header.kind);
    let Some(kind) = RecordKind::from_byte(kind_byte) else {
        return Scan::Invalid(Corruption::UnknownKind(kind_byte));
    };
    if payload_len > MAX_PAYLOAD_LEN {
        return Scan::Invalid(Corruption::TooLarge(payload_len));
    }
    let total = RECORD_HEADER_LEN + payload_len as usize;
    if buf.len() < total {
        return Scan::Incomplete { needed: total };
    }
    let computed = salt.checksum(&buf[4..total]);
    if computed != stored {
        return Scan::Invalid(Corruption::ChecksumMismatch { stored, computed });
    }
    Scan::Record(RecordRef { kind, seq: header.seq, id: header.id, payload: &buf[RECORD_HEADER_LEN..total] })
}

/// The fields of a record header as stored, not yet checked: the one place
/// that knows their offsets (see the module's table).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordHeader {
    pub crc: u32,
    pub payload_len: u32,
    /// The kind byte, not yet known to be a kind.
    pub kind: u8,
    pub seq: u64,
    pub id: u64,
}

impl RecordHeader {
    pub(crate) fn parse(h: &[u8; RECORD_HEADER_LEN]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        RecordHeader { crc: u32_at(0), payload_len: u32_at(4), kind: h[8], seq: u64_at(9), id: u64_at(17) }
    }
}

/// Decodes exactly one record spanning all of `bytes`, as a read does after
/// fetching a record by its location.
pub fn decode_record<'a>(bytes: &'a [u8], salt: &Salt) -> Result<RecordRef<'a>, Corruption> {
    match scan(bytes, salt) {
        Scan::Record(record) if record.len() == bytes.len() => Ok(record),
        Scan::Record(record) => Err(Corruption::Payload(DecodeError::TrailingBytes(bytes.len() - record.len()))),
        Scan::Incomplete { needed } => Err(Corruption::Truncated { missing: needed - bytes.len() }),
        Scan::Invalid(c) => Err(c),
    }
}

/// Bytes in a segment file header.
pub const SEGMENT_HEADER_LEN: usize = 36;

/// The magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRATSEG";

/// The segment format version this build writes and reads (hint files and
/// index snapshots have their own: `HINT_VERSION`, `SNAPSHOT_VERSION`).
/// Version 4 added batch frames and chain orders; version 3 the salt and
/// durability marks. Stores of versions 2 and 3 are upgraded offline (see
/// `stratum_io::upgrade`).
pub const FORMAT_VERSION: u16 = 4;

/// Format 3: the header and records of format 4, without batch frames and
/// chain orders. Its upgrade rewrites only the headers.
pub const PREVIOUS_FORMAT_VERSION: u16 = 3;

/// The last format version without salts, which the upgrade reads.
pub const UNSALTED_FORMAT_VERSION: u16 = 2;

/// Bytes in a format-2 segment header (no salt).
pub const UNSALTED_HEADER_LEN: usize = 20;

/// The header at the start of every segment file:
///
/// ```text
/// offset  size  field
///      0     8  magic "STRATSEG"
///      8     2  format version
///     10     2  reserved, zero
///     12     4  segment id
///     16    16  salt
///     32     4  CRC-32 of bytes 0..32
/// ```
///
/// (Format 2's header was bytes 0..16 and their CRC-32: no salt.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's id: a sealed segment's is in its file name, the
    /// active segment's is the one it gets when sealed, a merged segment's
    /// is the newest segment it replaced.
    pub segment: SegmentId,
    /// The salt every record's checksum in the segment covers.
    pub salt: Salt,
}

/// Why a segment header cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is shorter than [`SEGMENT_HEADER_LEN`].
    #[error("file is shorter than a segment header")]
    Truncated,
    /// The file does not start with [`SEGMENT_MAGIC`].
    #[error("not a Stratum segment (bad magic)")]
    BadMagic,
    /// The header's format version is not [`FORMAT_VERSION`].
    #[error(
        "segment format version {found} is not supported (this build reads version {FORMAT_VERSION}; \
         a version 2 or 3 store is upgraded offline with `lse_server --upgrade --data-dir DIR`)"
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
    },
    /// The header's CRC-32 does not match the bytes before it.
    #[error("segment header checksum mismatch")]
    ChecksumMismatch,
    /// The header's segment id is 0 or above [`crate::MAX_SEGMENT_ID`].
    #[error("segment id is 0 or above the largest segment id")]
    ZeroSegmentId,
}

impl SegmentHeader {
    /// The header's bytes, checksum included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.segment.get().to_le_bytes());
        h[16..32].copy_from_slice(self.salt.bytes());
        let crc = crc32fast::hash(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Checks and reads the header at the start of `bytes` (which may go on
    /// past it): magic, version, checksum, then segment id.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let (header, _) = Self::decode_any(bytes)?;
        match Self::stored_version(bytes) {
            Some(FORMAT_VERSION) => Ok(header),
            found => Err(HeaderError::UnsupportedVersion { found: found.unwrap_or_default() }),
        }
    }

    /// The format version field of the header at the start of `bytes`,
    /// unchecked (`None` if there are too few bytes to hold one).
    pub fn stored_version(bytes: &[u8]) -> Option<u16> {
        Some(u16::from_le_bytes(bytes.get(8..10)?.try_into().expect("2 bytes")))
    }

    /// Like [`SegmentHeader::decode`], but also reads the headers of
    /// formats 3 and 2 (the latter with [`Salt::UNSALTED`]), for the
    /// upgrade: the header and its length, where the segment's first record
    /// starts.
    pub fn decode_any(bytes: &[u8]) -> Result<(SegmentHeader, usize), HeaderError> {
        let magic = bytes.get(..8).ok_or(HeaderError::Truncated)?;
        if magic != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u16::from_le_bytes(bytes.get(8..10).ok_or(HeaderError::Truncated)?.try_into().expect("2 bytes"));
        let len = match version {
            FORMAT_VERSION | PREVIOUS_FORMAT_VERSION => SEGMENT_HEADER_LEN,
            UNSALTED_FORMAT_VERSION => UNSALTED_HEADER_LEN,
            // A version of its own, or a damaged one? Versions before the
            // salt had the 20-byte header, later ones at least this one's.
            found => {
                let len = if found < PREVIOUS_FORMAT_VERSION { UNSALTED_HEADER_LEN } else { SEGMENT_HEADER_LEN };
                let h = bytes.get(..len).ok_or(HeaderError::Truncated)?;
                let stored = u32::from_le_bytes(h[len - 4..].try_into().expect("4 bytes"));
                if crc32fast::hash(&h[..len - 4]) != stored {
                    return Err(HeaderError::ChecksumMismatch);
                }
                return Err(HeaderError::UnsupportedVersion { found });
            }
        };
        let h = bytes.get(..len).ok_or(HeaderError::Truncated)?;
        let stored = u32::from_le_bytes(h[len - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&h[..len - 4]) != stored {
            return Err(HeaderError::ChecksumMismatch);
        }
        let id = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
        let segment = SegmentId::new(id).ok_or(HeaderError::ZeroSegmentId)?;
        let salt = match version {
            FORMAT_VERSION | PREVIOUS_FORMAT_VERSION => Salt::new(h[16..32].try_into().expect("16 bytes")),
            _ => Salt::UNSALTED,
        };
        Ok((SegmentHeader { segment, salt }, len))
    }
}
