//! The record codec (`encode_record`, `scan`, `decode_record`,
//! `RecordRef::body`) and the segment header.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{
    Body, Corruption, DecodeError, EncodedColumns, FORMAT_VERSION, HeaderError, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN,
    RecordKind, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, Scan, SegmentHeader, SegmentId, Value, decode_record, encode_record,
    scan,
};

/// Encodes `m`, then checks that `scan` and `decode_record` give back every
/// field and that the body holds the mutation's data.
fn check_round_trip(seq: u64, id: u64, m: &Owned) -> Result<(), TestCaseError> {
    let mutation = m.as_mutation();
    let mut bytes = Vec::new();
    let len = encode_record(&mut bytes, seq, id, &mutation);
    prop_assert_eq!(len, bytes.len());
    prop_assert_eq!(len, mutation.encoded_len());

    let Scan::Record(record) = scan(&bytes) else { panic!("scan rejected a fresh record: {:?}", scan(&bytes)) };
    prop_assert_eq!(record.kind, mutation.kind());
    prop_assert_eq!(record.seq, seq);
    prop_assert_eq!(record.id, id);
    prop_assert_eq!(record.len(), len);
    prop_assert_eq!(decode_record(&bytes), Ok(record));

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
    fn encode_record_appends_after_existing_bytes(prefix in vec(any::<u8>(), 0..40), (seq, id, m) in arb_record()) {
        let mut out = prefix.clone();
        let len = encode_record(&mut out, seq, id, &m.as_mutation());
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &record_bytes(seq, id, &m)[..]);
        prop_assert_eq!(len, out.len() - prefix.len());
    }

    #[test]
    fn record_header_layout_matches_the_documented_format((seq, id, m) in arb_record()) {
        let bytes = record_bytes(seq, id, &m);
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        prop_assert_eq!(u32_at(0), crc32fast::hash(&bytes[4..]));
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
        let Scan::Record(record) = scan(&bytes) else { panic!("{:?}", scan(&bytes)) };
        prop_assert_eq!((record.seq, record.id, record.len()), (seq, id, first));
        let Scan::Record(record) = scan(&bytes[first..]) else { panic!("{:?}", scan(&bytes[first..])) };
        prop_assert_eq!((record.seq, record.id), (seq2, id2));
    }

    #[test]
    fn decode_record_rejects_trailing_bytes((seq, id, m) in arb_record(), extra in vec(any::<u8>(), 1..40)) {
        let mut bytes = record_bytes(seq, id, &m);
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(decode_record(&bytes), Err(Corruption::Payload(DecodeError::TrailingBytes(extra.len()))));
    }

    #[test]
    fn scan_of_arbitrary_bytes_never_panics(bytes in any::<Vec<u8>>()) {
        match scan(&bytes) {
            Scan::Record(record) => {
                prop_assert!(record.len() <= bytes.len());
                let _ = record.body();
            }
            Scan::Incomplete { needed } => prop_assert!(needed > bytes.len()),
            Scan::Invalid(_) => {}
        }
        let _ = decode_record(&bytes);
    }

    #[test]
    fn scan_and_decode_record_never_allocate(bytes in any::<Vec<u8>>(), (seq, id, m) in arb_record()) {
        let record = record_bytes(seq, id, &m);
        for buf in [&bytes[..], &record[..], &record[..record.len() - 1]] {
            let (_, allocations) = counting_alloc::measure(|| (scan(buf), decode_record(buf)));
            prop_assert_eq!(allocations.count, 0);
        }
    }

    #[test]
    fn scan_of_arbitrary_bytes_after_a_plausible_header_never_panics(
        kind in 0u8..=10,
        len in prop_oneof![0u32..64, any::<u32>()],
        rest in vec(any::<u8>(), 0..100),
    ) {
        let mut bytes = vec![0u8; 4];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&rest);
        let _ = scan(&bytes);
        // With the checksum made right, scan must still never panic, and
        // body() must cope with whatever the payload holds.
        if (len as usize) + RECORD_HEADER_LEN <= bytes.len() {
            let end = len as usize + RECORD_HEADER_LEN;
            fix_record_crc(&mut bytes[..end]);
        }
        if let Scan::Record(record) = scan(&bytes) {
            let _ = record.body();
        }
        let _ = decode_record(&bytes);
    }

    /// Any payload with a valid checksum, under any kind: `body` may reject
    /// it but never panics, and whatever it accepts re-encodes to the same
    /// payload.
    #[test]
    fn body_of_an_arbitrary_checksummed_payload_never_panics(kind in 1u8..=10, payload in vec(any::<u8>(), 0..80)) {
        let mut bytes = record_bytes(1, 1, &Owned::SetBlob { blob: payload.clone() });
        bytes[8] = kind;
        fix_record_crc(&mut bytes);
        let Scan::Record(record) = scan(&bytes) else { panic!("{:?}", scan(&bytes)) };
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
            match scan(&damaged) {
                Scan::Record(r) => panic!("bit {bit} flipped but scan accepted {r:?}"),
                Scan::Incomplete { needed } => {
                    prop_assert!(in_len_field, "bit {} gave Incomplete", bit);
                    prop_assert!(needed > damaged.len());
                }
                Scan::Invalid(_) => {}
            }
            prop_assert!(decode_record(&damaged).is_err());
        }
    }

    #[test]
    fn a_truncated_record_is_incomplete_with_the_bytes_it_needs((seq, id, m) in arb_record()) {
        let bytes = record_bytes(seq, id, &m);
        for cut in 0..bytes.len() {
            let needed = if cut < RECORD_HEADER_LEN { RECORD_HEADER_LEN } else { bytes.len() };
            prop_assert_eq!(scan(&bytes[..cut]), Scan::Incomplete { needed }, "cut at {}", cut);
            prop_assert_eq!(
                decode_record(&bytes[..cut]),
                Err(Corruption::Truncated { missing: needed - cut }),
                "cut at {}", cut
            );
        }
    }

    #[test]
    fn segment_header_round_trips(n in 1u32..=stratum_core::MAX_SEGMENT_ID) {
        let segment = SegmentId::new(n).unwrap();
        let bytes = SegmentHeader { segment }.encode();
        prop_assert_eq!(SegmentHeader::decode(&bytes), Ok(SegmentHeader { segment }));
    }

    #[test]
    fn every_single_bit_flip_of_a_segment_header_is_rejected(n in 1u32..=stratum_core::MAX_SEGMENT_ID) {
        let bytes = SegmentHeader { segment: SegmentId::new(n).unwrap() }.encode();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            let expected = if bit / 8 < 8 { HeaderError::BadMagic } else { HeaderError::ChecksumMismatch };
            prop_assert_eq!(SegmentHeader::decode(&damaged), Err(expected), "bit {}", bit);
        }
    }
}

#[test]
fn an_all_zero_buffer_is_a_zero_header() {
    for len in RECORD_HEADER_LEN..=RECORD_HEADER_LEN + 100 {
        assert_eq!(scan(&vec![0; len]), Scan::Invalid(Corruption::ZeroHeader), "len {len}");
        assert_eq!(decode_record(&vec![0; len]), Err(Corruption::ZeroHeader), "len {len}");
    }
    assert_eq!(scan(&vec![0; 1 << 16]), Scan::Invalid(Corruption::ZeroHeader));
}

#[test]
fn a_zero_buffer_shorter_than_a_header_is_incomplete() {
    for len in 0..RECORD_HEADER_LEN {
        assert_eq!(scan(&vec![0; len]), Scan::Incomplete { needed: RECORD_HEADER_LEN }, "len {len}");
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
        let ((scanned, decoded), allocations) = counting_alloc::measure(|| (scan(&bytes), decode_record(&bytes)));
        assert_eq!(scanned, Scan::Invalid(Corruption::TooLarge(len)));
        assert_eq!(decoded, Err(Corruption::TooLarge(len)));
        assert_eq!(allocations.count, 0);
    }
}

#[test]
fn a_length_at_the_maximum_is_incomplete_not_too_large() {
    let bytes = header_claiming(MAX_PAYLOAD_LEN);
    assert_eq!(scan(&bytes), Scan::Incomplete { needed: RECORD_HEADER_LEN + MAX_PAYLOAD_LEN as usize });
}

#[test]
fn unknown_record_kinds_are_rejected() {
    for kind in [0u8, 11, 0x7f, 0xff] {
        let mut bytes = record_bytes(1, 1, &Owned::DeleteDocument);
        bytes[8] = kind;
        fix_record_crc(&mut bytes);
        assert_eq!(scan(&bytes), Scan::Invalid(Corruption::UnknownKind(kind)), "kind {kind}");
    }
}

#[test]
fn a_wrong_checksum_is_a_checksum_mismatch() {
    let mut bytes = record_bytes(1, 1, &Owned::SetBlob { blob: b"abc".to_vec() });
    let good = crc32fast::hash(&bytes[4..]);
    bytes[0..4].copy_from_slice(&(good ^ 1).to_le_bytes());
    assert_eq!(scan(&bytes), Scan::Invalid(Corruption::ChecksumMismatch { stored: good ^ 1, computed: good }));
}

/// Every kind byte the format defines, in order.
const KINDS: [RecordKind; 10] = [
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
    assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::TrailingBytes(2)));
}

#[test]
fn an_input_or_output_delete_with_more_than_a_document_id_has_a_malformed_body() {
    let mut payload = 7u64.to_le_bytes().to_vec();
    let bytes = record_with_payload(RecordKind::DeleteInput, &payload);
    assert_eq!(decode_record(&bytes).unwrap().body(), Ok(Body::DeleteInput { document: 7 }));
    let bytes = record_with_payload(RecordKind::DeleteOutput, &payload);
    assert_eq!(decode_record(&bytes).unwrap().body(), Ok(Body::DeleteOutput { document: 7 }));
    payload.extend_from_slice(b"xy");
    for kind in [RecordKind::DeleteInput, RecordKind::DeleteOutput] {
        let bytes = record_with_payload(kind, &payload);
        assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::TrailingBytes(2)), "{kind:?}");
    }
}

#[test]
fn input_and_output_records_shorter_than_a_document_id_have_a_malformed_body() {
    for kind in [RecordKind::PutInput, RecordKind::DeleteInput, RecordKind::PutOutput, RecordKind::DeleteOutput] {
        for len in 0..8 {
            let bytes = record_with_payload(kind, &[1, 2, 3, 4, 5, 6, 7][..len]);
            assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::Truncated), "{kind:?}, {len} bytes");
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
        assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::UnorderedMap), "{kind:?}");
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
    assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::ZeroSegmentId));
}

#[test]
fn a_checkpoint_of_the_wrong_size_has_a_malformed_body() {
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&7u64.to_le_bytes());
    for len in 0..payload.len() {
        let bytes = record_with_payload(RecordKind::Checkpoint, &payload[..len]);
        assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::Truncated), "{len} bytes");
    }
    payload.push(0);
    let bytes = record_with_payload(RecordKind::Checkpoint, &payload);
    assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn set_columns_with_bytes_after_the_map_has_a_malformed_body() {
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.push(9);
    let bytes = record_with_payload(RecordKind::SetColumns, &payload);
    assert_eq!(decode_record(&bytes).unwrap().body(), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn segment_header_layout_matches_the_documented_format() {
    let bytes = SegmentHeader { segment: SegmentId::new(0x0003_0201).unwrap() }.encode();
    assert_eq!(bytes.len(), SEGMENT_HEADER_LEN);
    assert_eq!(bytes[0..8], SEGMENT_MAGIC);
    assert_eq!(&bytes[0..8], b"STRATSEG");
    assert_eq!(bytes[8..10], FORMAT_VERSION.to_le_bytes());
    assert_eq!(bytes[10..12], [0, 0]);
    assert_eq!(bytes[12..16], [1, 2, 3, 0]);
    assert_eq!(bytes[16..20], crc32fast::hash(&bytes[0..16]).to_le_bytes());
}

#[test]
fn segment_header_with_bad_magic_is_rejected() {
    let mut bytes = SegmentHeader { segment: SegmentId::FIRST }.encode();
    bytes[0..8].copy_from_slice(b"STRATSEH");
    let crc = crc32fast::hash(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::BadMagic));
}

/// Writes `version` into an encoded header and makes its checksum right.
fn header_with_version(version: u16) -> [u8; SEGMENT_HEADER_LEN] {
    let mut bytes = SegmentHeader { segment: SegmentId::FIRST }.encode();
    bytes[8..10].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn segment_header_with_an_unsupported_version_is_rejected() {
    for version in [0, FORMAT_VERSION + 1, u16::MAX] {
        assert_eq!(
            SegmentHeader::decode(&header_with_version(version)),
            Err(HeaderError::UnsupportedVersion { found: version })
        );
    }
    assert!(SegmentHeader::decode(&header_with_version(FORMAT_VERSION)).is_ok());
}

#[test]
fn segment_header_with_a_bad_checksum_is_rejected() {
    let mut bytes = SegmentHeader { segment: SegmentId::FIRST }.encode();
    bytes[16] ^= 0x55;
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::ChecksumMismatch));
}

#[test]
fn truncated_segment_header_is_rejected() {
    let bytes = SegmentHeader { segment: SegmentId::FIRST }.encode();
    for len in 0..SEGMENT_HEADER_LEN {
        assert_eq!(SegmentHeader::decode(&bytes[..len]), Err(HeaderError::Truncated), "len {len}");
    }
}

#[test]
fn segment_header_with_segment_id_zero_is_rejected() {
    let mut bytes = SegmentHeader { segment: SegmentId::FIRST }.encode();
    bytes[12..16].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::ZeroSegmentId));
}

#[test]
fn segment_header_decodes_from_the_start_of_a_longer_file() {
    let segment = SegmentId::new(9).unwrap();
    let mut file = SegmentHeader { segment }.encode().to_vec();
    encode_record(&mut file, 1, 1, &Owned::DeleteDocument.as_mutation());
    assert_eq!(SegmentHeader::decode(&file), Ok(SegmentHeader { segment }));
}

proptest! {
    /// The blob fast path finds exactly the blob the full parse finds.
    #[test]
    fn the_blob_of_a_record_is_the_blob_of_its_body(m in arb_mutation()) {
        let bytes = record_bytes(3, 4, &m);
        let record = decode_record(&bytes).unwrap();
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
        let body = decode_record(&bytes).unwrap().body();
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
