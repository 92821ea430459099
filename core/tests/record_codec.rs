//! The record codec (`encode_record`, `scan`, `decode_record`,
//! `seal_record`, `RecordRef::body`), its salts, and the segment header.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{
    Body, Corruption, DecodeError, Effect, EncodedColumns, FORMAT_VERSION, HeaderError, MAX_PAYLOAD_LEN, Mutation,
    PREVIOUS_FORMAT_VERSION, RECORD_HEADER_LEN, RecordKind, SALT_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, Salt, Scan,
    SegmentHeader, SegmentId, UNSALTED_FORMAT_VERSION, UNSALTED_HEADER_LEN, Value, decode_record, encode_record, scan,
    seal_record,
};

/// Encodes `m`, then checks that `scan` and `decode_record` give back every
/// field and that the body holds the mutation's data.
fn check_round_trip(seq: u64, id: u64, m: &Owned) -> Result<(), TestCaseError> {
    let mutation = m.as_mutation();
    let mut bytes = Vec::new();
    let len = encode_record(&mut bytes, &salt(), seq, id, &mutation);
    prop_assert_eq!(len, bytes.len());
    prop_assert_eq!(len, mutation.encoded_len());

    let Scan::Record(record) = scan(&bytes, &salt()) else {
        panic!("scan rejected a fresh record: {:?}", scan(&bytes, &salt()))
    };
    prop_assert_eq!(record.kind, mutation.kind());
    prop_assert_eq!(record.seq, seq);
    prop_assert_eq!(record.id, id);
    prop_assert_eq!(record.len(), len);
    prop_assert_eq!(decode_record(&bytes, &salt()), Ok(record));

    let encoded_value = m.value().map(|v| {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    });
    let body = record.body().expect("body of a fresh record");
    let mut encoded_columns = Vec::new();
    prop_assert_eq!(&body, &m.expected_body(encoded_value.as_deref().unwrap_or(&[]), m.blob(), &mut encoded_columns));
    match body {
        Body::PutInput { value, .. } | Body::PutOutput { value, .. } => {
            prop_assert_eq!(Value::decode(value), Ok(m.value().unwrap().clone()));
        }
        Body::CreateDocument { columns, .. } | Body::SetColumns { columns } => {
            let (Owned::CreateDocument { columns: expected, .. } | Owned::SetColumns { columns: expected }) = m else {
                panic!("{m:?} decoded to {body:?}")
            };
            prop_assert_eq!(&columns.decode(), expected);
        }
        _ => {}
    }
    let mut scratch = Vec::new();
    prop_assert_eq!(body.into_effect(), mutation.effect(&mut scratch));
    Ok(())
}

/// A record for every kind, small enough to flip every bit of.
fn arb_record() -> impl Strategy<Value = (u64, u64, Owned)> {
    (any::<u64>(), any::<u64>(), arb_mutation())
}

proptest! {
    #[test]
    fn create_document_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_create_document()) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn set_blob_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_set_blob()) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn set_columns_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_set_columns()) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn delete_document_round_trips(seq in any::<u64>(), id in any::<u64>()) {
        check_round_trip(seq, id, &Owned::DeleteDocument)?;
    }

    #[test]
    fn put_input_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_put_input(any::<u64>())) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn delete_input_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_delete_input(any::<u64>())) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn put_output_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_put_output(any::<u64>())) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn delete_output_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_delete_output(any::<u64>())) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn checkpoint_round_trips(seq in any::<u64>(), id in any::<u64>(), m in arb_checkpoint()) {
        check_round_trip(seq, id, &m)?;
    }

    #[test]
    fn reserve_ids_round_trips(seq in any::<u64>(), id in any::<u64>(), below in any::<u64>()) {
        check_round_trip(seq, id, &Owned::ReserveIds { below })?;
    }

    #[test]
    fn durable_round_trips(seq in any::<u64>(), id in any::<u64>(), upto in any::<u64>()) {
        check_round_trip(seq, id, &Owned::Durable { upto })?;
    }

    #[test]
    fn encode_record_appends_after_existing_bytes(prefix in vec(any::<u8>(), 0..40), (seq, id, m) in arb_record()) {
        let mut out = prefix.clone();
        let len = encode_record(&mut out, &salt(), seq, id, &m.as_mutation());
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &record_bytes(seq, id, &m)[..]);
        prop_assert_eq!(len, out.len() - prefix.len());
    }

    #[test]
    fn record_header_layout_matches_the_documented_format((seq, id, m) in arb_record()) {
        let bytes = record_bytes(seq, id, &m);
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        prop_assert_eq!(u32_at(0), salted_crc(salt().bytes(), &bytes[4..]));
        prop_assert_eq!(u32_at(4) as usize, bytes.len() - RECORD_HEADER_LEN);
        prop_assert_eq!(bytes[8], m.as_mutation().kind() as u8);
        prop_assert_eq!(u64_at(9), seq);
        prop_assert_eq!(u64_at(17), id);
        // Input and output records name their document first in the payload.
        if let Some(document) = m.document() {
            prop_assert_eq!(u64_at(RECORD_HEADER_LEN), document);
        }
    }

    #[test]
    fn scan_reads_only_the_first_of_several_records(
        (seq, id, m) in arb_record(),
        (seq2, id2, m2) in arb_record(),
    ) {
        let mut bytes = record_bytes(seq, id, &m);
        let first = bytes.len();
        bytes.extend_from_slice(&record_bytes(seq2, id2, &m2));
        let Scan::Record(record) = scan(&bytes, &salt()) else { panic!("{:?}", scan(&bytes, &salt())) };
        prop_assert_eq!((record.seq, record.id, record.len()), (seq, id, first));
        let Scan::Record(record) = scan(&bytes[first..], &salt()) else { panic!("{:?}", scan(&bytes[first..], &salt())) };
        prop_assert_eq!((record.seq, record.id), (seq2, id2));
    }

    #[test]
    fn decode_record_rejects_trailing_bytes((seq, id, m) in arb_record(), extra in vec(any::<u8>(), 1..40)) {
        let mut bytes = record_bytes(seq, id, &m);
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(decode_record(&bytes, &salt()), Err(Corruption::Payload(DecodeError::TrailingBytes(extra.len()))));
    }

    #[test]
    fn scan_of_arbitrary_bytes_never_panics(bytes in any::<Vec<u8>>()) {
        match scan(&bytes, &salt()) {
            Scan::Record(record) => {
                prop_assert!(record.len() <= bytes.len());
                let _ = record.body();
            }
            Scan::Incomplete { needed } => prop_assert!(needed > bytes.len()),
            Scan::Invalid(_) => {}
        }
        let _ = decode_record(&bytes, &salt());
    }

    #[test]
    fn scan_and_decode_record_never_allocate(bytes in any::<Vec<u8>>(), (seq, id, m) in arb_record()) {
        let record = record_bytes(seq, id, &m);
        for buf in [&bytes[..], &record[..], &record[..record.len() - 1]] {
            let (_, allocations) = counting_alloc::measure(|| (scan(buf, &salt()), decode_record(buf, &salt())));
            prop_assert_eq!(allocations.count, 0);
        }
    }

    #[test]
    fn scan_of_arbitrary_bytes_after_a_plausible_header_never_panics(
        kind in 0u8..=12,
        len in prop_oneof![0u32..64, any::<u32>()],
        rest in vec(any::<u8>(), 0..100),
    ) {
        let mut bytes = vec![0u8; 4];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&rest);
        let _ = scan(&bytes, &salt());
        // With the checksum made right, scan must still never panic, and
        // body() must cope with whatever the payload holds.
        if (len as usize) + RECORD_HEADER_LEN <= bytes.len() {
            let end = len as usize + RECORD_HEADER_LEN;
            fix_record_crc(&mut bytes[..end]);
        }
        if let Scan::Record(record) = scan(&bytes, &salt()) {
            let _ = record.body();
        }
        let _ = decode_record(&bytes, &salt());
    }

    /// Any payload with a valid checksum, under any kind: `body` may reject
    /// it but never panics, and whatever it accepts re-encodes to the same
    /// payload.
    #[test]
    fn body_of_an_arbitrary_checksummed_payload_never_panics(
        kind in 1u8..=13,
        payload in prop_oneof![
            vec(any::<u8>(), 0..80),
            // A Durable payload's size, sometimes repeating the salt.
            (any::<bool>(), any::<u64>()).prop_map(|(salted, upto)| {
                let mut payload = if salted { salt().bytes().to_vec() } else { vec![7; SALT_LEN] };
                payload.extend_from_slice(&upto.to_le_bytes());
                payload
            }),
        ],
    ) {
        let mut bytes = record_bytes(1, 1, &Owned::SetBlob { blob: payload.clone() });
        bytes[8] = kind;
        fix_record_crc(&mut bytes);
        let Scan::Record(record) = scan(&bytes, &salt()) else { panic!("{:?}", scan(&bytes, &salt())) };
        prop_assert_eq!(record.payload, &payload[..]);
        if let Ok(body) = record.body() {
            let reencoded = match body {
                Body::CreateDocument { columns, blob } => {
                    prop_assert_eq!(columns.as_bytes(), &payload[..payload.len() - blob.len()]);
                    record_bytes(1, 1, &Owned::CreateDocument { columns: columns.decode(), blob: blob.to_vec() })
                }
                Body::SetBlob { blob } => record_bytes(1, 1, &Owned::SetBlob { blob: blob.to_vec() }),
                Body::SetColumns { columns } => {
                    prop_assert_eq!(columns.as_bytes(), &payload[..]);
                    record_bytes(1, 1, &Owned::SetColumns { columns: columns.decode() })
                }
                Body::DeleteDocument => record_bytes(1, 1, &Owned::DeleteDocument),
                Body::DeleteInput { document } => record_bytes(1, 1, &Owned::DeleteInput { document }),
                Body::DeleteOutput { document } => record_bytes(1, 1, &Owned::DeleteOutput { document }),
                Body::Checkpoint { covers_from, next_id } => {
                    record_bytes(1, 1, &Owned::Checkpoint { covers_from, next_id })
                }
                Body::ReserveIds { below } => record_bytes(1, 1, &Owned::ReserveIds { below }),
                // The salt is the payload's, whatever the segment's is: only
                // its position is checked, and the one encode_record writes.
                Body::Durable { salt: repeated, upto } => {
                    prop_assert_eq!(&payload[..SALT_LEN], &repeated[..]);
                    prop_assert_eq!(&payload[SALT_LEN..], &upto.to_le_bytes());
                    if &repeated == salt().bytes() {
                        record_bytes(1, 1, &Owned::Durable { upto })
                    } else {
                        bytes.clone()
                    }
                }
                Body::SetChain { inputs } => {
                    prop_assert_eq!(&payload[..4], &(inputs.len() as u32).to_le_bytes());
                    prop_assert_eq!(inputs.as_bytes(), &payload[4..]);
                    bytes.clone()
                }
                // A frame's records are checked by batch_entries, not here.
                Body::Batch { records } => {
                    prop_assert_eq!(records, &payload[..]);
                    bytes.clone()
                }
                // Values stay encoded in the body; only their position is checked.
                Body::PutInput { document, value } | Body::PutOutput { document, value } => {
                    prop_assert_eq!(&payload[..8], &document.to_le_bytes());
                    prop_assert_eq!(value, &payload[8..]);
                    bytes.clone()
                }
            };
            prop_assert_eq!(reencoded, bytes);
        }
    }

    /// CRC-32 detects every single-bit error, and the length it covers is
    /// checked first, so no flipped record is ever accepted. A flip outside
    /// the length field leaves the record's extent alone: it must be Invalid.
    #[test]
    fn every_single_bit_flip_of_a_record_is_detected((seq, id, m) in arb_record()) {
        let bytes = record_bytes(seq, id, &m);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let in_len_field = (4..8).contains(&(bit / 8));
            match scan(&damaged, &salt()) {
                Scan::Record(r) => panic!("bit {bit} flipped but scan accepted {r:?}"),
                Scan::Incomplete { needed } => {
                    prop_assert!(in_len_field, "bit {} gave Incomplete", bit);
                    prop_assert!(needed > damaged.len());
                }
                Scan::Invalid(_) => {}
            }
            prop_assert!(decode_record(&damaged, &salt()).is_err());
        }
    }

    #[test]
    fn a_truncated_record_is_incomplete_with_the_bytes_it_needs((seq, id, m) in arb_record()) {
        let bytes = record_bytes(seq, id, &m);
        for cut in 0..bytes.len() {
            let needed = if cut < RECORD_HEADER_LEN { RECORD_HEADER_LEN } else { bytes.len() };
            prop_assert_eq!(scan(&bytes[..cut], &salt()), Scan::Incomplete { needed }, "cut at {}", cut);
            prop_assert_eq!(
                decode_record(&bytes[..cut], &salt()),
                Err(Corruption::Truncated { missing: needed - cut }),
                "cut at {}", cut
            );
        }
    }

    #[test]
    fn segment_header_round_trips(n in 1u32..=stratum_core::MAX_SEGMENT_ID, salt_bytes in any::<[u8; SALT_LEN]>()) {
        let header = SegmentHeader { segment: SegmentId::new(n).unwrap(), salt: Salt::new(salt_bytes) };
        let bytes = header.encode();
        prop_assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        prop_assert_eq!(SegmentHeader::decode_any(&bytes), Ok((header, SEGMENT_HEADER_LEN)));
        prop_assert_eq!(header.salt.bytes(), &salt_bytes);
    }

    /// Every bit of the header is covered: the magic is checked first, then
    /// the checksum of everything else, the salt included.
    #[test]
    fn every_single_bit_flip_of_a_segment_header_is_rejected(n in 1u32..=stratum_core::MAX_SEGMENT_ID) {
        let bytes = header(SegmentId::new(n).unwrap()).encode();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            let expected = if bit / 8 < 8 { HeaderError::BadMagic } else { HeaderError::ChecksumMismatch };
            prop_assert_eq!(SegmentHeader::decode(&damaged), Err(expected), "bit {}", bit);
            prop_assert_eq!(SegmentHeader::decode_any(&damaged), Err(expected), "bit {}", bit);
        }
    }

    /// A record is valid under the salt it was sealed with only: not under
    /// another, nor under the unsalted framing of format 2.
    #[test]
    fn a_record_validates_only_under_its_own_salt(
        (seq, id, m) in arb_record(),
        a in any::<[u8; SALT_LEN]>(),
        b in any::<[u8; SALT_LEN]>(),
    ) {
        prop_assume!(a != b);
        let (a, b) = (Salt::new(a), Salt::new(b));
        let mut bytes = salted_record_bytes(&a, seq, id, &m);
        prop_assert!(matches!(scan(&bytes, &a), Scan::Record(_)));
        for wrong in [b, Salt::UNSALTED] {
            prop_assert!(
                matches!(scan(&bytes, &wrong), Scan::Invalid(Corruption::ChecksumMismatch { .. })),
                "{:?} accepted under {:?}", m, wrong
            );
            prop_assert!(matches!(decode_record(&bytes, &wrong), Err(Corruption::ChecksumMismatch { .. })), "{:?}", m);
        }
        // Resealed, it is valid under b, with the same fields, and no
        // longer under a.
        let before = bytes.clone();
        seal_record(&mut bytes, &b);
        prop_assert_eq!(&bytes[4..], &before[4..]);
        let Scan::Record(record) = scan(&bytes, &b) else { panic!("{:?}", scan(&bytes, &b)) };
        prop_assert_eq!((record.kind, record.seq, record.id, record.len()), (m.as_mutation().kind(), seq, id, bytes.len()));
        prop_assert!(matches!(scan(&bytes, &a), Scan::Invalid(Corruption::ChecksumMismatch { .. })), "{:?}", m);
        // And back.
        seal_record(&mut bytes, &a);
        prop_assert_eq!(&bytes, &before);
    }
}

#[test]
fn an_all_zero_buffer_is_a_zero_header() {
    for len in RECORD_HEADER_LEN..=RECORD_HEADER_LEN + 100 {
        assert_eq!(scan(&vec![0; len], &salt()), Scan::Invalid(Corruption::ZeroHeader), "len {len}");
        assert_eq!(decode_record(&vec![0; len], &salt()), Err(Corruption::ZeroHeader), "len {len}");
    }
    assert_eq!(scan(&vec![0; 1 << 16], &salt()), Scan::Invalid(Corruption::ZeroHeader));
}

#[test]
fn a_zero_buffer_shorter_than_a_header_is_incomplete() {
    for len in 0..RECORD_HEADER_LEN {
        assert_eq!(scan(&vec![0; len], &salt()), Scan::Incomplete { needed: RECORD_HEADER_LEN }, "len {len}");
    }
}

#[test]
fn the_crc_of_an_empty_header_is_not_zero() {
    // The format's argument that zeros never validate: the CRC of the 21
    // zero bytes after a zero checksum is not zero.
    assert_ne!(crc32fast::hash(&[0; RECORD_HEADER_LEN - 4]), 0);
}

/// A header with a valid kind and the given payload length, no payload.
fn header_claiming(len: u32) -> Vec<u8> {
    let mut bytes = record_bytes(7, 3, &Owned::DeleteDocument);
    bytes[4..8].copy_from_slice(&len.to_le_bytes());
    fix_record_crc(&mut bytes);
    bytes
}

#[test]
fn a_length_above_the_maximum_is_too_large_without_allocating() {
    for len in [MAX_PAYLOAD_LEN + 1, MAX_PAYLOAD_LEN * 2, u32::MAX] {
        let bytes = header_claiming(len);
        let ((scanned, decoded), allocations) =
            counting_alloc::measure(|| (scan(&bytes, &salt()), decode_record(&bytes, &salt())));
        assert_eq!(scanned, Scan::Invalid(Corruption::TooLarge(len)));
        assert_eq!(decoded, Err(Corruption::TooLarge(len)));
        assert_eq!(allocations.count, 0);
    }
}

#[test]
fn a_length_at_the_maximum_is_incomplete_not_too_large() {
    let bytes = header_claiming(MAX_PAYLOAD_LEN);
    assert_eq!(scan(&bytes, &salt()), Scan::Incomplete { needed: RECORD_HEADER_LEN + MAX_PAYLOAD_LEN as usize });
}

#[test]
fn unknown_record_kinds_are_rejected() {
    for kind in [0u8, 14, 0x7f, 0xff] {
        let mut bytes = record_bytes(1, 1, &Owned::DeleteDocument);
        bytes[8] = kind;
        fix_record_crc(&mut bytes);
        assert_eq!(scan(&bytes, &salt()), Scan::Invalid(Corruption::UnknownKind(kind)), "kind {kind}");
    }
}

#[test]
fn a_wrong_checksum_is_a_checksum_mismatch() {
    let mut bytes = record_bytes(1, 1, &Owned::SetBlob { blob: b"abc".to_vec() });
    let good = salted_crc(salt().bytes(), &bytes[4..]);
    bytes[0..4].copy_from_slice(&(good ^ 1).to_le_bytes());
    assert_eq!(scan(&bytes, &salt()), Scan::Invalid(Corruption::ChecksumMismatch { stored: good ^ 1, computed: good }));
}

/// Every kind byte the format defines, in order.
const KINDS: [RecordKind; 13] = [
    RecordKind::CreateDocument,
    RecordKind::SetBlob,
    RecordKind::SetColumns,
    RecordKind::DeleteDocument,
    RecordKind::PutInput,
    RecordKind::DeleteInput,
    RecordKind::PutOutput,
    RecordKind::DeleteOutput,
    RecordKind::Checkpoint,
    RecordKind::ReserveIds,
    RecordKind::Durable,
    RecordKind::Batch,
    RecordKind::SetChain,
];

#[test]
fn record_kinds_convert_to_and_from_bytes() {
    for (i, kind) in KINDS.iter().enumerate() {
        assert_eq!(*kind as u8, i as u8 + 1);
        assert_eq!(RecordKind::from_byte(i as u8 + 1), Some(*kind));
    }
    for b in (0..=255u8).filter(|&b| b == 0 || b as usize > KINDS.len()) {
        assert_eq!(RecordKind::from_byte(b), None, "byte {b}");
    }
}

/// A checksummed record of `kind` carrying exactly `payload`.
fn record_with_payload(kind: RecordKind, payload: &[u8]) -> Vec<u8> {
    let mut bytes = record_bytes(1, 1, &Owned::SetBlob { blob: payload.to_vec() });
    bytes[8] = kind as u8;
    fix_record_crc(&mut bytes);
    bytes
}

#[test]
fn a_document_delete_with_a_payload_has_a_malformed_body() {
    let bytes = record_with_payload(RecordKind::DeleteDocument, b"xy");
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::TrailingBytes(2)));
}

#[test]
fn an_input_or_output_delete_with_more_than_a_document_id_has_a_malformed_body() {
    let mut payload = 7u64.to_le_bytes().to_vec();
    let bytes = record_with_payload(RecordKind::DeleteInput, &payload);
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Ok(Body::DeleteInput { document: 7 }));
    let bytes = record_with_payload(RecordKind::DeleteOutput, &payload);
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Ok(Body::DeleteOutput { document: 7 }));
    payload.extend_from_slice(b"xy");
    for kind in [RecordKind::DeleteInput, RecordKind::DeleteOutput] {
        let bytes = record_with_payload(kind, &payload);
        assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::TrailingBytes(2)), "{kind:?}");
    }
}

#[test]
fn input_and_output_records_shorter_than_a_document_id_have_a_malformed_body() {
    for kind in [RecordKind::PutInput, RecordKind::DeleteInput, RecordKind::PutOutput, RecordKind::DeleteOutput] {
        for len in 0..8 {
            let bytes = record_with_payload(kind, &[1, 2, 3, 4, 5, 6, 7][..len]);
            assert_eq!(
                decode_record(&bytes, &salt()).unwrap().body(),
                Err(DecodeError::Truncated),
                "{kind:?}, {len} bytes"
            );
        }
    }
}

/// The payloads of the records about an input: the owning document's id,
/// then (for puts) the encoded value.
#[test]
fn input_and_output_payloads_are_the_document_id_then_the_value() {
    let document = 0x0102_0304_0506_0708u64;
    let value = Value::Int(-2);
    let mut encoded = Vec::new();
    value.encode(&mut encoded);
    let cases = [
        (Owned::PutInput { document, value: value.clone() }, &encoded[..]),
        (Owned::PutOutput { document, value: value.clone() }, &encoded[..]),
        (Owned::DeleteInput { document }, &[][..]),
        (Owned::DeleteOutput { document }, &[][..]),
    ];
    for (m, value) in cases {
        let bytes = record_bytes(3, 9, &m);
        assert_eq!(bytes.len(), RECORD_HEADER_LEN + 8 + value.len(), "{m:?}");
        assert_eq!(bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + 8], document.to_le_bytes(), "{m:?}");
        assert_eq!(&bytes[RECORD_HEADER_LEN + 8..], value, "{m:?}");
        assert_eq!(m.as_mutation().encoded_len(), bytes.len(), "{m:?}");
    }
}

#[test]
fn columns_with_unordered_keys_are_a_malformed_body() {
    let mut payload = 2u32.to_le_bytes().to_vec();
    for s in ["b", "1", "a", "2"] {
        payload.extend_from_slice(&(s.len() as u32).to_le_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    for kind in [RecordKind::SetColumns, RecordKind::CreateDocument] {
        let bytes = record_with_payload(kind, &payload);
        assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::UnorderedMap), "{kind:?}");
    }
}

#[test]
fn checkpoint_payload_is_the_segment_then_the_id_counter() {
    let m = Owned::Checkpoint { covers_from: SegmentId::new(0x0002_0304).unwrap(), next_id: 0x1122_3344_5566_7788 };
    let bytes = record_bytes(5, 0, &m);
    assert_eq!(bytes.len(), RECORD_HEADER_LEN + 12);
    assert_eq!(bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + 4], 0x0002_0304u32.to_le_bytes());
    assert_eq!(bytes[RECORD_HEADER_LEN + 4..], 0x1122_3344_5566_7788u64.to_le_bytes());
}

#[test]
fn a_checkpoint_covering_segment_zero_has_a_malformed_body() {
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&7u64.to_le_bytes());
    let bytes = record_with_payload(RecordKind::Checkpoint, &payload);
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::ZeroSegmentId));
}

#[test]
fn a_checkpoint_of_the_wrong_size_has_a_malformed_body() {
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&7u64.to_le_bytes());
    for len in 0..payload.len() {
        let bytes = record_with_payload(RecordKind::Checkpoint, &payload[..len]);
        assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::Truncated), "{len} bytes");
    }
    payload.push(0);
    let bytes = record_with_payload(RecordKind::Checkpoint, &payload);
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn set_columns_with_bytes_after_the_map_has_a_malformed_body() {
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.push(9);
    let bytes = record_with_payload(RecordKind::SetColumns, &payload);
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn segment_header_layout_matches_the_documented_format() {
    let bytes = header(SegmentId::new(0x0003_0201).unwrap()).encode();
    assert_eq!(bytes.len(), SEGMENT_HEADER_LEN);
    assert_eq!(SEGMENT_HEADER_LEN, 36);
    assert_eq!(bytes[0..8], SEGMENT_MAGIC);
    assert_eq!(&bytes[0..8], b"STRATSEG");
    assert_eq!(bytes[8..10], FORMAT_VERSION.to_le_bytes());
    assert_eq!(FORMAT_VERSION, 4);
    assert_eq!(bytes[10..12], [0, 0]);
    assert_eq!(bytes[12..16], [1, 2, 3, 0]);
    assert_eq!(&bytes[16..32], b"stratum-testsalt");
    assert_eq!(bytes[32..36], crc32fast::hash(&bytes[0..32]).to_le_bytes());
}

/// A format-3 header reads as its salt and segment for the upgrade, and
/// `decode` refuses it: format 3 has no batch frames, so a format-3 build
/// must never meet a segment that may hold them, nor this build append
/// them to a format-3 file.
#[test]
fn a_format_3_header_is_read_by_decode_any_only() {
    let bytes = header_with_version(PREVIOUS_FORMAT_VERSION);
    assert_eq!(PREVIOUS_FORMAT_VERSION, 3);
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::UnsupportedVersion { found: 3 }));
    assert_eq!(SegmentHeader::decode_any(&bytes), Ok((header(SegmentId::FIRST), SEGMENT_HEADER_LEN)));
    assert_eq!(SegmentHeader::stored_version(&bytes), Some(3));
}

/// Makes the checksum of a format-3 header right after an edit.
fn fix_header_crc(bytes: &mut [u8; SEGMENT_HEADER_LEN]) {
    let crc = crc32fast::hash(&bytes[0..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn segment_header_with_bad_magic_is_rejected() {
    let mut bytes = header(SegmentId::FIRST).encode();
    bytes[0..8].copy_from_slice(b"STRATSEH");
    fix_header_crc(&mut bytes);
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::BadMagic));
    assert_eq!(SegmentHeader::decode_any(&bytes), Err(HeaderError::BadMagic));
}

/// Writes `version` into an encoded header and makes its checksum right.
fn header_with_version(version: u16) -> [u8; SEGMENT_HEADER_LEN] {
    let mut bytes = header(SegmentId::FIRST).encode();
    bytes[8..10].copy_from_slice(&version.to_le_bytes());
    fix_header_crc(&mut bytes);
    bytes
}

#[test]
fn segment_header_with_an_unsupported_version_is_rejected() {
    // (Versions before 3 had a 20-byte header: see
    // `a_format_1_header_is_an_unsupported_version`.)
    for version in [FORMAT_VERSION + 1, u16::MAX] {
        let expected = HeaderError::UnsupportedVersion { found: version };
        assert_eq!(SegmentHeader::decode(&header_with_version(version)), Err(expected), "version {version}");
        assert_eq!(SegmentHeader::decode_any(&header_with_version(version)), Err(expected), "version {version}");
    }
    assert!(SegmentHeader::decode(&header_with_version(FORMAT_VERSION)).is_ok());
}

/// An unknown version whose header checksum is wrong is damage, not a
/// version of its own.
#[test]
fn segment_header_with_an_unknown_version_and_a_bad_checksum_is_a_checksum_mismatch() {
    let mut bytes = header_with_version(FORMAT_VERSION + 1);
    bytes[20] ^= 1;
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::ChecksumMismatch));
}

#[test]
fn segment_header_with_a_bad_checksum_is_rejected() {
    for at in [12, 16, 31, 32, 35] {
        let mut bytes = header(SegmentId::FIRST).encode();
        bytes[at] ^= 0x55;
        assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::ChecksumMismatch), "byte {at}");
    }
}

/// The salt is covered by the header's checksum: a segment cannot be made
/// to read its records under another salt without the header saying so.
#[test]
fn a_flipped_salt_bit_in_a_segment_header_is_a_checksum_mismatch() {
    let bytes = header(SegmentId::FIRST).encode();
    for bit in 16 * 8..32 * 8 {
        let mut damaged = bytes;
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::ChecksumMismatch), "bit {bit}");
        assert_eq!(SegmentHeader::decode_any(&damaged), Err(HeaderError::ChecksumMismatch), "bit {bit}");
    }
}

#[test]
fn truncated_segment_header_is_rejected() {
    let bytes = header(SegmentId::FIRST).encode();
    for len in 0..SEGMENT_HEADER_LEN {
        assert_eq!(SegmentHeader::decode(&bytes[..len]), Err(HeaderError::Truncated), "len {len}");
        assert_eq!(SegmentHeader::decode_any(&bytes[..len]), Err(HeaderError::Truncated), "len {len}");
    }
}

#[test]
fn segment_header_with_segment_id_zero_is_rejected() {
    let mut bytes = header(SegmentId::FIRST).encode();
    bytes[12..16].copy_from_slice(&0u32.to_le_bytes());
    fix_header_crc(&mut bytes);
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::ZeroSegmentId));
}

#[test]
fn segment_header_decodes_from_the_start_of_a_longer_file() {
    let segment = SegmentId::new(9).unwrap();
    let mut file = header(segment).encode().to_vec();
    encode_record(&mut file, &salt(), 1, 1, &Owned::DeleteDocument.as_mutation());
    assert_eq!(SegmentHeader::decode(&file), Ok(header(segment)));
    assert_eq!(SegmentHeader::decode_any(&file), Ok((header(segment), SEGMENT_HEADER_LEN)));
}

/// A format-2 header built by hand from its documented layout: magic,
/// version 2, reserved, segment id, CRC-32 of bytes 0..16. No salt.
fn v2_header(id: u32) -> [u8; UNSALTED_HEADER_LEN] {
    let mut h = [0; UNSALTED_HEADER_LEN];
    h[0..8].copy_from_slice(b"STRATSEG");
    h[8..10].copy_from_slice(&2u16.to_le_bytes());
    h[12..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn decode_any_reads_a_format_2_header_which_decode_refuses() {
    assert_eq!((UNSALTED_FORMAT_VERSION, UNSALTED_HEADER_LEN), (2, 20));
    let segment = SegmentId::new(0x0003_0201).unwrap();
    let bytes = v2_header(segment.get());
    let unsalted = SegmentHeader { segment, salt: Salt::UNSALTED };
    assert_eq!(SegmentHeader::decode_any(&bytes), Ok((unsalted, UNSALTED_HEADER_LEN)));
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::UnsupportedVersion { found: 2 }));
    // Followed by its records, which start at byte 20, written the
    // format-2 way: the plain CRC-32 of bytes 4.. of each.
    let mut file = bytes.to_vec();
    let record = salted_record_bytes(&Salt::UNSALTED, 1, 5, &Owned::SetBlob { blob: b"v2".to_vec() });
    assert_eq!(record[0..4], crc32fast::hash(&record[4..]).to_le_bytes());
    file.extend_from_slice(&record);
    let (header, len) = SegmentHeader::decode_any(&file).unwrap();
    assert_eq!((header, len), (unsalted, UNSALTED_HEADER_LEN));
    assert_eq!(SegmentHeader::decode(&file), Err(HeaderError::UnsupportedVersion { found: 2 }));
    let Scan::Record(read) = scan(&file[len..], &header.salt) else { panic!("{:?}", scan(&file[len..], &header.salt)) };
    assert_eq!((read.kind, read.seq, read.id, read.payload), (RecordKind::SetBlob, 1, 5, &b"v2"[..]));
    // The same record does not validate in a salted segment.
    assert!(matches!(scan(&record, &salt()), Scan::Invalid(Corruption::ChecksumMismatch { .. })));
}

#[test]
fn a_damaged_format_2_header_is_rejected_by_decode_any() {
    let bytes = v2_header(7);
    for bit in 0..UNSALTED_HEADER_LEN * 8 {
        let mut damaged = bytes;
        damaged[bit / 8] ^= 1 << (bit % 8);
        let result = SegmentHeader::decode_any(&damaged);
        match bit / 8 {
            0..8 => assert_eq!(result, Err(HeaderError::BadMagic), "bit {bit}"),
            // Another version reads 36 bytes, more than there are.
            8..10 => assert!(
                matches!(result, Err(HeaderError::Truncated | HeaderError::ChecksumMismatch)),
                "bit {bit}: {result:?}"
            ),
            _ => assert_eq!(result, Err(HeaderError::ChecksumMismatch), "bit {bit}"),
        }
    }
    for len in 0..UNSALTED_HEADER_LEN {
        assert_eq!(SegmentHeader::decode_any(&bytes[..len]), Err(HeaderError::Truncated), "len {len}");
    }
    let mut zero = v2_header(0);
    assert_eq!(SegmentHeader::decode_any(&zero), Err(HeaderError::ZeroSegmentId));
    zero[16] ^= 1;
    assert_eq!(SegmentHeader::decode_any(&zero), Err(HeaderError::ChecksumMismatch));
}

#[test]
fn the_unsalted_framing_is_the_plain_crc_of_the_record() {
    let record = salted_record_bytes(&Salt::UNSALTED, 3, 4, &Owned::ReserveIds { below: 99 });
    assert_eq!(record[0..4], crc32fast::hash(&record[4..]).to_le_bytes());
    assert!(matches!(scan(&record, &Salt::UNSALTED), Scan::Record(_)));
    assert_eq!(format!("{:?}", Salt::UNSALTED), "Salt::UNSALTED");
    // The bytes stay out of logs.
    assert_eq!(format!("{:?}", salt()), "Salt(..)");
    assert!(!format!("{:?}", header(SegmentId::FIRST)).contains(&hex(b"stratum-testsalt")));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record written for a salt whose bytes are all zero is not a format-2
/// record: a salted segment never falls back to the unsalted framing.
#[test]
fn a_zero_salt_is_not_the_unsalted_framing() {
    let zero = Salt::new([0; SALT_LEN]);
    assert_ne!(zero, Salt::UNSALTED);
    assert_eq!(zero.bytes(), Salt::UNSALTED.bytes());
    let record = salted_record_bytes(&zero, 1, 1, &Owned::DeleteDocument);
    assert!(matches!(scan(&record, &zero), Scan::Record(_)));
    assert!(matches!(scan(&record, &Salt::UNSALTED), Scan::Invalid(Corruption::ChecksumMismatch { .. })));
}

#[test]
fn a_durable_payload_is_the_salt_then_the_offset() {
    let m = Owned::Durable { upto: 0x1122_3344_5566_7788 };
    let bytes = record_bytes(5, 0, &m);
    assert_eq!(m.as_mutation().kind(), RecordKind::Durable);
    assert_eq!(RecordKind::Durable as u8, 11);
    assert_eq!(bytes.len(), RECORD_HEADER_LEN + SALT_LEN + 8);
    assert_eq!(m.as_mutation().encoded_len(), bytes.len());
    assert_eq!(bytes[8], 11);
    assert_eq!(&bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + SALT_LEN], b"stratum-testsalt");
    assert_eq!(bytes[RECORD_HEADER_LEN + SALT_LEN..], 0x1122_3344_5566_7788u64.to_le_bytes());
    let record = decode_record(&bytes, &salt()).unwrap();
    assert_eq!(record.body(), Ok(Body::Durable { salt: *b"stratum-testsalt", upto: 0x1122_3344_5566_7788 }));
    assert_eq!(record.blob(), Ok(None));
    assert_eq!(record.body().unwrap().into_effect(), Effect::Durable);
    assert_eq!(Effect::Durable.kind(), RecordKind::Durable);
    assert_eq!(Mutation::Durable { upto: 1 }.effect(&mut Vec::new()), Effect::Durable);
    // The salt it repeats is the one it is encoded under.
    let other = salted_record_bytes(&other_salt(), 5, 0, &m);
    assert_eq!(&other[RECORD_HEADER_LEN..RECORD_HEADER_LEN + SALT_LEN], other_salt().bytes());
    assert!(matches!(scan(&other, &salt()), Scan::Invalid(Corruption::ChecksumMismatch { .. })));
}

#[test]
fn a_durable_mark_of_the_wrong_size_has_a_malformed_body() {
    let mut payload = salt().bytes().to_vec();
    payload.extend_from_slice(&7u64.to_le_bytes());
    for len in 0..payload.len() {
        let bytes = record_with_payload(RecordKind::Durable, &payload[..len]);
        assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::Truncated), "{len} bytes");
    }
    payload.push(0);
    let bytes = record_with_payload(RecordKind::Durable, &payload);
    assert_eq!(decode_record(&bytes, &salt()).unwrap().body(), Err(DecodeError::TrailingBytes(1)));
}

proptest! {
    /// The blob fast path finds exactly the blob the full parse finds.
    #[test]
    fn the_blob_of_a_record_is_the_blob_of_its_body(m in arb_mutation()) {
        let bytes = record_bytes(3, 4, &m);
        let record = decode_record(&bytes, &salt()).unwrap();
        let expected = match record.body().unwrap() {
            Body::CreateDocument { blob, .. } | Body::SetBlob { blob } => Some(blob),
            _ => None,
        };
        prop_assert_eq!(record.blob(), Ok(expected));
    }
}

/// A column map's bytes as an encoder might get them wrong: any count,
/// any keys and values (invalid UTF-8 included, any order), trailing bytes.
fn arb_raw_map() -> impl Strategy<Value = Vec<u8>> {
    let bytes =
        vec(prop_oneof![3 => Just(b'a'), 3 => Just(b'b'), 1 => Just(0xc3), 1 => Just(0xa9), 1 => Just(0xff)], 0..3);
    let delta = prop_oneof![4 => Just(0i64), 1 => Just(-1), 1 => Just(1)];
    let trailing = prop_oneof![2 => Just(vec![]), 1 => vec(any::<u8>(), 1..3)];
    let truncate = prop::bool::weighted(0.25);
    (vec((bytes.clone(), bytes), 0..4), delta, trailing, any::<prop::sample::Index>(), truncate).prop_map(
        |(entries, delta, trailing, cut, truncate)| {
            let mut out = ((entries.len() as i64 + delta).max(0) as u32).to_le_bytes().to_vec();
            for (k, v) in &entries {
                for s in [k, v] {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s);
                }
            }
            out.extend_from_slice(&trailing);
            if truncate {
                out.truncate(cut.index(out.len() + 1));
            }
            out
        },
    )
}

proptest! {
    /// A `SetColumns` body accepts exactly the column maps the value
    /// decoder accepts, with the same errors, and decodes to the same map.
    #[test]
    fn columns_are_checked_exactly_as_map_values_are_decoded(payload in arb_raw_map()) {
        let bytes = record_with_payload(RecordKind::SetColumns, &payload);
        let body = decode_record(&bytes, &salt()).unwrap().body();
        let mut value = vec![6u8]; // the tag of a map value
        value.extend_from_slice(&payload);
        match (body, Value::decode(&value)) {
            (Ok(Body::SetColumns { columns }), Ok(Value::Map(map))) => {
                prop_assert_eq!(columns.as_bytes(), &payload[..]);
                prop_assert_eq!(&columns.decode(), &map);
                prop_assert_eq!(format!("{columns:?}"), format!("{map:?}"));
            }
            (Err(e), Err(expected)) => prop_assert_eq!(e, expected),
            (body, value) => prop_assert!(false, "body {:?}, value {:?}", body, value),
        }
    }

    /// `EncodedColumns::encode` gives the bytes a record holds, whatever the
    /// buffer held before.
    #[test]
    fn encoded_columns_are_the_record_encoding(columns in arb_string_map(), junk in vec(any::<u8>(), 0..16)) {
        let mut buf = junk;
        let encoded = EncodedColumns::encode(&columns, &mut buf);
        let record = record_bytes(1, 1, &Owned::SetColumns { columns: columns.clone() });
        prop_assert_eq!(encoded.as_bytes(), &record[RECORD_HEADER_LEN..]);
        prop_assert_eq!(&encoded.decode(), &columns);
        prop_assert_eq!(format!("{encoded:?}"), format!("{columns:?}"));
    }
}

/// A header of format 1 (20 bytes, like format 2's) is an unsupported
/// version, not a checksum mismatch: its checksum is checked over its own
/// 16 bytes, even when the file is only that long.
#[test]
fn a_format_1_header_is_an_unsupported_version() {
    let mut header = SEGMENT_MAGIC.to_vec();
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&[0, 0]);
    header.extend_from_slice(&7u32.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(SegmentHeader::decode(&header), Err(HeaderError::UnsupportedVersion { found: 1 }));
    assert_eq!(SegmentHeader::decode_any(&header), Err(HeaderError::UnsupportedVersion { found: 1 }));
    header[13] ^= 1;
    assert_eq!(SegmentHeader::decode(&header), Err(HeaderError::ChecksumMismatch));
}
