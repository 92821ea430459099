//! Helpers shared by the integration tests: owned mutations and proptest
//! strategies for values, column maps and mutations.

#![allow(dead_code)]

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use stratum_core::{
    Applied, Body, Columns, Effect, EncodedColumns, Id, KeyDir, Location, Mutation, RecordMeta, SEGMENT_HEADER_LEN,
    Salt, SegmentHeader, SegmentId, Value, encode_record, seal_record,
};

/// The salt of every test segment, unless a test needs another.
pub fn salt() -> Salt {
    Salt::new(*b"stratum-testsalt")
}

/// A salt other than [`salt`], for records that must not validate there.
pub fn other_salt() -> Salt {
    Salt::new(*b"another-testsalt")
}

/// The header of test segment `segment`, salted with [`salt`].
pub fn header(segment: SegmentId) -> SegmentHeader {
    SegmentHeader { segment, salt: salt() }
}

/// Strings that exercise the encoder: empty, ASCII, multi-byte UTF-8.
pub fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,8}", any::<String>(), Just("é😀\u{10FFFF}日本".to_owned()),]
}

pub fn arb_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        // Every bit pattern, including NaNs with payloads and subnormals.
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        Just(f64::MIN),
    ]
}

pub fn arb_int() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1)]
}

pub fn arb_string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(arb_string(), arb_string(), 0..6)
}

pub fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_int().prop_map(Value::Int),
        arb_double().prop_map(Value::Double),
        arb_string().prop_map(Value::Str),
        vec(arb_int(), 0..8).prop_map(Value::IntList),
        vec(arb_string(), 0..6).prop_map(Value::StrList),
        arb_string_map().prop_map(Value::Map),
        vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
    ]
}

pub fn arb_blob() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

/// An owned version of [`Mutation`], so strategies can generate one.
#[derive(Clone, Debug, PartialEq)]
pub enum Owned {
    CreateDocument { columns: Columns, blob: Vec<u8> },
    SetBlob { blob: Vec<u8> },
    SetColumns { columns: Columns },
    DeleteDocument,
    PutInput { document: Id, value: Value },
    DeleteInput { document: Id },
    PutOutput { document: Id, value: Value },
    DeleteOutput { document: Id },
    Checkpoint { covers_from: SegmentId, next_id: Id },
    ReserveIds { below: Id },
    Durable { upto: u64 },
}

impl Owned {
    pub fn as_mutation(&self) -> Mutation<'_> {
        match self {
            Owned::CreateDocument { columns, blob } => Mutation::CreateDocument { columns, blob },
            Owned::SetBlob { blob } => Mutation::SetBlob { blob },
            Owned::SetColumns { columns } => Mutation::SetColumns { columns },
            Owned::DeleteDocument => Mutation::DeleteDocument,
            Owned::PutInput { document, value } => Mutation::PutInput { document: *document, value },
            Owned::DeleteInput { document } => Mutation::DeleteInput { document: *document },
            Owned::PutOutput { document, value } => Mutation::PutOutput { document: *document, value },
            Owned::DeleteOutput { document } => Mutation::DeleteOutput { document: *document },
            Owned::Checkpoint { covers_from, next_id } => {
                Mutation::Checkpoint { covers_from: *covers_from, next_id: *next_id }
            }
            Owned::ReserveIds { below } => Mutation::ReserveIds { below: *below },
            Owned::Durable { upto } => Mutation::Durable { upto: *upto },
        }
    }

    /// The owning document named in the payload of an input or output
    /// record.
    pub fn document(&self) -> Option<Id> {
        match *self {
            Owned::PutInput { document, .. }
            | Owned::DeleteInput { document }
            | Owned::PutOutput { document, .. }
            | Owned::DeleteOutput { document } => Some(document),
            _ => None,
        }
    }

    /// The body `RecordRef::body` must give back for this mutation encoded
    /// under [`salt`], with values in their encoded form and column maps
    /// encoded into `encoded_columns` (cleared first).
    pub fn expected_body<'a>(
        &self,
        encoded_value: &'a [u8],
        blob: &'a [u8],
        encoded_columns: &'a mut Vec<u8>,
    ) -> Body<'a> {
        match self {
            Owned::CreateDocument { columns, .. } => {
                Body::CreateDocument { columns: EncodedColumns::encode(columns, encoded_columns), blob }
            }
            Owned::SetBlob { .. } => Body::SetBlob { blob },
            Owned::SetColumns { columns } => {
                Body::SetColumns { columns: EncodedColumns::encode(columns, encoded_columns) }
            }
            Owned::DeleteDocument => Body::DeleteDocument,
            Owned::PutInput { document, .. } => Body::PutInput { document: *document, value: encoded_value },
            Owned::DeleteInput { document } => Body::DeleteInput { document: *document },
            Owned::PutOutput { document, .. } => Body::PutOutput { document: *document, value: encoded_value },
            Owned::DeleteOutput { document } => Body::DeleteOutput { document: *document },
            Owned::Checkpoint { covers_from, next_id } => {
                Body::Checkpoint { covers_from: *covers_from, next_id: *next_id }
            }
            Owned::ReserveIds { below } => Body::ReserveIds { below: *below },
            Owned::Durable { upto } => Body::Durable { salt: *salt().bytes(), upto: *upto },
        }
    }

    pub fn value(&self) -> Option<&Value> {
        match self {
            Owned::PutInput { value, .. } | Owned::PutOutput { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn blob(&self) -> &[u8] {
        match self {
            Owned::CreateDocument { blob, .. } | Owned::SetBlob { blob } => blob,
            _ => &[],
        }
    }
}

pub fn arb_create_document() -> impl Strategy<Value = Owned> {
    (arb_string_map(), arb_blob()).prop_map(|(columns, blob)| Owned::CreateDocument { columns, blob })
}

pub fn arb_set_blob() -> impl Strategy<Value = Owned> {
    arb_blob().prop_map(|blob| Owned::SetBlob { blob })
}

pub fn arb_set_columns() -> impl Strategy<Value = Owned> {
    arb_string_map().prop_map(|columns| Owned::SetColumns { columns })
}

pub fn arb_put_input(document: impl Strategy<Value = Id>) -> impl Strategy<Value = Owned> {
    (document, arb_value()).prop_map(|(document, value)| Owned::PutInput { document, value })
}

pub fn arb_delete_input(document: impl Strategy<Value = Id>) -> impl Strategy<Value = Owned> {
    document.prop_map(|document| Owned::DeleteInput { document })
}

pub fn arb_put_output(document: impl Strategy<Value = Id>) -> impl Strategy<Value = Owned> {
    (document, arb_value()).prop_map(|(document, value)| Owned::PutOutput { document, value })
}

pub fn arb_delete_output(document: impl Strategy<Value = Id>) -> impl Strategy<Value = Owned> {
    document.prop_map(|document| Owned::DeleteOutput { document })
}

pub fn arb_checkpoint() -> impl Strategy<Value = Owned> {
    (1u32..=stratum_core::MAX_SEGMENT_ID, any::<u64>())
        .prop_map(|(n, next_id)| Owned::Checkpoint { covers_from: SegmentId::new(n).unwrap(), next_id })
}

/// Any mutation, with the owning document of an input or output record
/// drawn from `document`.
pub fn arb_mutation_with(document: impl Strategy<Value = Id> + Clone + 'static) -> impl Strategy<Value = Owned> {
    prop_oneof![
        arb_create_document(),
        arb_set_blob(),
        arb_set_columns(),
        Just(Owned::DeleteDocument),
        arb_put_input(document.clone()),
        arb_delete_input(document.clone()),
        arb_put_output(document.clone()),
        arb_delete_output(document),
        arb_checkpoint(),
        any::<u64>().prop_map(|below| Owned::ReserveIds { below }),
        any::<u64>().prop_map(|upto| Owned::Durable { upto }),
    ]
}

pub fn arb_mutation() -> impl Strategy<Value = Owned> {
    arb_mutation_with(any::<u64>())
}

/// Encodes one record under [`salt`] into a fresh buffer.
pub fn record_bytes(seq: u64, id: Id, m: &Owned) -> Vec<u8> {
    salted_record_bytes(&salt(), seq, id, m)
}

/// Encodes one record under `salt` into a fresh buffer.
pub fn salted_record_bytes(salt: &Salt, seq: u64, id: Id, m: &Owned) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, salt, seq, id, &m.as_mutation());
    out
}

/// Overwrites a record's CRC so it matches its (possibly edited) contents
/// under [`salt`].
pub fn fix_record_crc(record: &mut [u8]) {
    seal_record(record, &salt());
}

/// The checksum a record whose bytes after the checksum are `covered` has
/// under `salt_bytes`, computed here from the format's definition (the CRC
/// of the salt followed by the covered bytes), not with the codec.
pub fn salted_crc(salt_bytes: &[u8], covered: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(salt_bytes);
    hasher.update(covered);
    hasher.finalize()
}

/// A classic hex dump: offset, 16 bytes in hex, then the printable ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        s.push_str(&format!("{:08x}:", i * 16));
        for j in 0..16 {
            if j == 8 {
                s.push(' ');
            }
            match line.get(j) {
                Some(b) => s.push_str(&format!(" {b:02x}")),
                None => s.push_str("   "),
            }
        }
        s.push_str("  |");
        for &b in line {
            s.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
        }
        s.push_str("|\n");
    }
    s.push_str(&format!("{:08x}\n", bytes.len()));
    s
}

pub fn seg(n: u32) -> SegmentId {
    SegmentId::new(n).unwrap()
}

pub fn columns(pairs: &[(&str, &str)]) -> Columns {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// A log being written into a key directory: hands out sequence numbers
/// and back-to-back offsets in the current segment (from
/// `SEGMENT_HEADER_LEN`, after the segment header), and applies each
/// record.
pub struct Log {
    pub kd: KeyDir,
    pub segment: SegmentId,
    /// Where the next record goes: the segment's length so far.
    pub offset: u64,
    pub seq: u64,
}

impl Log {
    /// A log in segment 1.
    pub fn new() -> Self {
        Log::in_segment(1)
    }

    pub fn in_segment(segment: u32) -> Self {
        Log { kd: KeyDir::new(), segment: seg(segment), offset: SEGMENT_HEADER_LEN as u64, seq: 0 }
    }

    /// Moves on to a new segment.
    pub fn roll(&mut self, segment: u32) {
        self.segment = seg(segment);
        self.offset = SEGMENT_HEADER_LEN as u64;
    }

    /// Appends a record of `len` bytes about `id` and applies it.
    pub fn apply_len(&mut self, id: Id, effect: Effect<'_>, len: u32) -> (Applied, Location) {
        self.seq += 1;
        let location = Location::new(self.segment, self.offset, len).unwrap();
        self.offset += u64::from(len);
        (self.kd.apply(RecordMeta { seq: self.seq, id, location }, effect), location)
    }

    /// Appends and applies a record that must take effect.
    pub fn changed(&mut self, id: Id, effect: Effect<'_>, len: u32) -> Location {
        let label = format!("{effect:?} on {id}");
        let (applied, at) = self.apply_len(id, effect, len);
        assert_eq!(applied, Applied::Changed, "{label}");
        at
    }
}
