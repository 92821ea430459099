//! The exact on-disk bytes, pinned by snapshots. A change here is a change
//! of the file format: it needs a new FORMAT_VERSION, not a snapshot update.
//!
//! Records are sealed with the test salt (`stratum-testsalt`), so their
//! checksums are those of a segment with that salt in its header.

mod common;

use std::collections::BTreeMap;

use common::*;
use stratum_core::{
    Columns, Mutation, Salt, SegmentHeader, SegmentId, Value, encode_record, finish_batch, start_batch,
};

fn example_columns() -> Columns {
    columns(&[("name", "Example"), ("version", "1.0")])
}

/// A one-line summary followed by the hex dump of one record.
fn record_snapshot(seq: u64, id: u64, m: &Owned) -> String {
    let bytes = record_bytes(seq, id, m);
    format!("{:?} seq={seq} id={id} len={}\n{}", m.as_mutation().kind(), bytes.len(), hex_dump(&bytes))
}

#[test]
fn segment_header_for_segment_1() {
    let bytes = header(SegmentId::new(1).unwrap()).encode();
    insta::assert_snapshot!("segment_header_1", hex_dump(&bytes));
}

/// The format-4 header with every field distinct: the salt's bytes are
/// 0x10..=0x1f. (Format 3's header differs only in its version field.)
#[test]
fn segment_header_v4() {
    let salt = Salt::new(std::array::from_fn(|i| 0x10 + i as u8));
    let bytes = SegmentHeader { segment: SegmentId::new(0x0003_0201).unwrap(), salt }.encode();
    insta::assert_snapshot!("segment_header_v4", hex_dump(&bytes));
}

/// A durability mark: its payload repeats the salt, then the offset.
#[test]
fn durable_record() {
    let m = Owned::Durable { upto: 0x0102_0304 };
    insta::assert_snapshot!("durable", record_snapshot(16, 0, &m));
}

/// The unsalted framing is format 2's: this is the `create_document` record
/// exactly as format 2 wrote it (the snapshot of that record before format
/// 3), so an upgrade reads old records with `Salt::UNSALTED`.
#[test]
fn unsalted_create_document_record() {
    let m = Owned::CreateDocument { columns: example_columns(), blob: b"<h1>Hi</h1>".to_vec() };
    let bytes = salted_record_bytes(&Salt::UNSALTED, 1, 1, &m);
    let summary = format!("{:?} seq=1 id=1 len={}\n{}", m.as_mutation().kind(), bytes.len(), hex_dump(&bytes));
    insta::assert_snapshot!("unsalted_create_document", summary);
}

#[test]
fn create_document_record() {
    let m = Owned::CreateDocument { columns: example_columns(), blob: b"<h1>Hi</h1>".to_vec() };
    insta::assert_snapshot!("create_document", record_snapshot(1, 1, &m));
}

#[test]
fn set_blob_record() {
    let m = Owned::SetBlob { blob: b"<p>v2</p>".to_vec() };
    insta::assert_snapshot!("set_blob", record_snapshot(2, 1, &m));
}

#[test]
fn set_columns_record() {
    let m = Owned::SetColumns { columns: columns(&[("name", "Example"), ("version", "2.0")]) };
    insta::assert_snapshot!("set_columns", record_snapshot(3, 1, &m));
}

#[test]
fn put_input_record_with_an_int_list() {
    let m = Owned::PutInput { document: 1, value: Value::IntList(vec![1, -1, i64::MAX]) };
    insta::assert_snapshot!("put_input_int_list", record_snapshot(4, 2, &m));
}

#[test]
fn put_output_record_with_a_map() {
    let map = BTreeMap::from([("lang".to_owned(), "en".to_owned()), ("état".to_owned(), "ok".to_owned())]);
    let m = Owned::PutOutput { document: 1, value: Value::Map(map) };
    insta::assert_snapshot!("put_output_map", record_snapshot(5, 2, &m));
}

#[test]
fn delete_document_tombstone() {
    insta::assert_snapshot!("delete_document", record_snapshot(6, 1, &Owned::DeleteDocument));
}

#[test]
fn delete_input_tombstone() {
    insta::assert_snapshot!("delete_input", record_snapshot(7, 2, &Owned::DeleteInput { document: 1 }));
}

#[test]
fn delete_output_tombstone() {
    insta::assert_snapshot!("delete_output", record_snapshot(8, 2, &Owned::DeleteOutput { document: 1 }));
}

#[test]
fn checkpoint_record() {
    let m = Owned::Checkpoint { covers_from: SegmentId::new(2).unwrap(), next_id: 300 };
    insta::assert_snapshot!("checkpoint", record_snapshot(9, 0, &m));
}

#[test]
fn reserve_ids_record() {
    let m = Owned::ReserveIds { below: 1025 };
    insta::assert_snapshot!("reserve_ids", record_snapshot(1, 0, &m));
}

#[test]
fn put_output_record_with_an_int() {
    let m = Owned::PutOutput { document: 1, value: Value::Int(-2) };
    insta::assert_snapshot!("value_int", record_snapshot(10, 2, &m));
}

#[test]
fn put_output_record_with_a_double() {
    let m = Owned::PutOutput { document: 1, value: Value::Double(1.5) };
    insta::assert_snapshot!("value_double", record_snapshot(11, 2, &m));
}

#[test]
fn put_output_record_with_a_string() {
    let m = Owned::PutOutput { document: 1, value: Value::Str("héllo".to_owned()) };
    insta::assert_snapshot!("value_str", record_snapshot(12, 2, &m));
}

#[test]
fn put_output_record_with_an_empty_int_list() {
    let m = Owned::PutOutput { document: 1, value: Value::IntList(vec![]) };
    insta::assert_snapshot!("value_int_list_empty", record_snapshot(13, 2, &m));
}

#[test]
fn put_output_record_with_a_string_list() {
    let m =
        Owned::PutOutput { document: 1, value: Value::StrList(vec!["a".to_owned(), String::new(), "bc".to_owned()]) };
    insta::assert_snapshot!("value_str_list", record_snapshot(14, 2, &m));
}

#[test]
fn put_output_record_with_an_empty_map() {
    let m = Owned::PutOutput { document: 1, value: Value::Map(BTreeMap::new()) };
    insta::assert_snapshot!("value_map_empty", record_snapshot(15, 2, &m));
}

#[test]
fn small_segment_image() {
    let mut image = header(SegmentId::new(1).unwrap()).encode().to_vec();
    let create = Owned::CreateDocument { columns: columns(&[("k", "v")]), blob: b"doc".to_vec() };
    let input = Owned::PutInput { document: 1, value: Value::Int(7) };
    let output = Owned::PutOutput { document: 1, value: Value::Str("out".to_owned()) };
    encode_record(&mut image, &salt(), 1, 1, &create.as_mutation());
    encode_record(&mut image, &salt(), 2, 2, &input.as_mutation());
    encode_record(&mut image, &salt(), 3, 2, &output.as_mutation());
    insta::assert_snapshot!("segment_image", hex_dump(&image));
}

/// A chain order: a count, then the input ids in chain order.
#[test]
fn set_chain_record() {
    let mut bytes = Vec::new();
    encode_record(&mut bytes, &salt(), 17, 1, &Mutation::SetChain { inputs: &[3, 2, 4] });
    insta::assert_snapshot!("set_chain", hex_dump(&bytes));
}

/// A batch frame of two records: a record header of kind 12 (record id 0)
/// whose payload is the two whole records, each sealed on its own.
#[test]
fn batch_frame() {
    let mut bytes = Vec::new();
    let start = start_batch(&mut bytes, 20);
    let value = Value::Int(7);
    encode_record(&mut bytes, &salt(), 21, 2, &Mutation::PutInput { document: 1, value: &value });
    encode_record(&mut bytes, &salt(), 22, 1, &Mutation::SetChain { inputs: &[2] });
    finish_batch(&mut bytes, start, &salt());
    insta::assert_snapshot!("batch_frame", hex_dump(&bytes));
}

/// A raw-bytes value (tag 7): a length and the octets, no UTF-8 check.
#[test]
fn put_output_record_with_bytes() {
    let m = Owned::PutOutput { document: 1, value: Value::Bytes(vec![0xff, 0x00, b'a', 0xfe]) };
    insta::assert_snapshot!("value_bytes", record_snapshot(16, 2, &m));
}
