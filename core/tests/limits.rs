//! `Limits`: request checks and the promise of `validate` that anything
//! within validated limits fits the record format.

use stratum_core::{Columns, Invalid, Limits, MAX_PAYLOAD_LEN, Mutation, RECORD_HEADER_LEN, Value};

/// The largest blob or value limit `validate` accepts (MAX_PAYLOAD_LEN minus
/// the 64 MiB kept for column maps).
const MAX_BLOB_LIMIT: usize = MAX_PAYLOAD_LEN as usize - (64 << 20);

#[test]
fn default_limits_are_valid() {
    assert_eq!(Limits::default().validate(), Ok(()));
}

#[test]
fn a_blob_limit_above_what_the_format_stores_is_rejected() {
    let limits = Limits { max_blob_bytes: MAX_BLOB_LIMIT + 1, ..Limits::default() };
    assert_eq!(
        limits.validate(),
        Err(Invalid::LimitTooLarge { name: "max_blob_bytes", value: MAX_BLOB_LIMIT + 1, max: MAX_BLOB_LIMIT })
    );
    assert_eq!(Limits { max_blob_bytes: MAX_BLOB_LIMIT, ..Limits::default() }.validate(), Ok(()));
}

#[test]
fn a_value_limit_above_what_the_format_stores_is_rejected() {
    let limits = Limits { max_value_bytes: MAX_BLOB_LIMIT + 1, ..Limits::default() };
    assert!(matches!(limits.validate(), Err(Invalid::LimitTooLarge { name: "max_value_bytes", .. })));
}

#[test]
fn column_limits_above_the_headroom_are_rejected() {
    let limits = Limits { max_columns: 1 << 20, ..Limits::default() };
    assert!(matches!(limits.validate(), Err(Invalid::LimitTooLarge { name: "max_columns", .. })));
}

/// With a column value limit of `usize::MAX`, `8 + name + value` overflows
/// inside `validate`: a panic in debug builds, and in release builds the sum
/// wraps to a small number, so the absurd limit is accepted.
#[test]
fn huge_column_size_limits_are_rejected_not_overflowed() {
    let limits = Limits { max_column_value_bytes: usize::MAX, ..Limits::default() };
    assert!(matches!(limits.validate(), Err(Invalid::LimitTooLarge { .. })));
}

/// An encoded column map is a 4-byte count plus, per column, two 4-byte
/// lengths, the name and the value. At the very edge of what `validate`
/// accepts, a create must still fit `MAX_PAYLOAD_LEN`; one byte more of
/// column value and `validate` must refuse.
#[test]
fn a_create_within_validated_limits_fits_the_format() {
    let edge = Limits {
        max_blob_bytes: MAX_BLOB_LIMIT,
        max_value_bytes: MAX_BLOB_LIMIT,
        max_column_name_bytes: 1,
        max_column_value_bytes: (64 << 20) - 13,
        max_columns: 1,
        ..Limits::default()
    };
    assert_eq!(edge.validate(), Ok(()));
    let over = Limits { max_column_value_bytes: edge.max_column_value_bytes + 1, ..edge };
    assert!(matches!(over.validate(), Err(Invalid::LimitTooLarge { .. })));

    // Zeroed allocations: the pages are never touched, only lengths are read.
    let blob = vec![0u8; edge.max_blob_bytes];
    let value = String::from_utf8(vec![0u8; edge.max_column_value_bytes]).unwrap();
    let columns: Columns = [("a".to_owned(), value)].into();
    assert_eq!(edge.check_blob(&blob), Ok(()));
    assert_eq!(edge.check_columns(&columns), Ok(()));
    let payload = Mutation::CreateDocument { columns: &columns, blob: &blob }.encoded_len() - RECORD_HEADER_LEN;
    assert!(payload <= MAX_PAYLOAD_LEN as usize, "payload of {payload} bytes passes the limits");
}

#[test]
fn blobs_up_to_the_limit_pass() {
    let limits = Limits { max_blob_bytes: 4, ..Limits::default() };
    assert_eq!(limits.check_blob(b"abcd"), Ok(()));
    assert_eq!(limits.check_blob(b"abcde"), Err(Invalid::BlobTooLarge { len: 5, limit: 4 }));
}

#[test]
fn values_are_limited_by_their_encoded_length() {
    // An int encodes to 9 bytes: a tag and 8 bytes.
    let limits = Limits { max_value_bytes: 9, ..Limits::default() };
    assert_eq!(limits.check_value(&Value::Int(1)), Ok(()));
    assert_eq!(limits.check_value(&Value::Str("abcde".into())), Err(Invalid::ValueTooLarge { len: 10, limit: 9 }));
}

#[test]
fn empty_column_names_are_rejected() {
    assert_eq!(Limits::default().check_column("", "x"), Err(Invalid::EmptyColumnName));
}

#[test]
fn column_names_and_values_are_limited_in_bytes() {
    let limits = Limits { max_column_name_bytes: 2, max_column_value_bytes: 2, ..Limits::default() };
    assert_eq!(limits.check_column("ab", "cd"), Ok(()));
    // "é" is two bytes: limits count bytes, not characters.
    assert_eq!(limits.check_column("aé", ""), Err(Invalid::ColumnNameTooLong { len: 3, limit: 2 }));
    assert_eq!(
        limits.check_column("a", "xyz"),
        Err(Invalid::ColumnValueTooLong { name: "a".into(), len: 3, limit: 2 })
    );
}

#[test]
fn too_many_columns_are_rejected() {
    let limits = Limits { max_columns: 2, ..Limits::default() };
    let columns: Columns = (0..3).map(|i| (format!("c{i}"), String::new())).collect();
    assert_eq!(limits.check_columns(&columns), Err(Invalid::TooManyColumns { count: 3, limit: 2 }));
    let two: Columns = columns.into_iter().take(2).collect();
    assert_eq!(limits.check_columns(&two), Ok(()));
}

#[test]
fn every_column_of_a_map_is_checked() {
    let columns: Columns = [("a".to_owned(), "1".to_owned()), (String::new(), "2".to_owned())].into();
    assert_eq!(Limits::default().check_columns(&columns), Err(Invalid::EmptyColumnName));
}
