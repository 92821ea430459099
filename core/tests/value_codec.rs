//! `Value::encode` / `Value::decode`: round trips, lengths, determinism and
//! robustness against arbitrary and damaged bytes.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::collections::BTreeMap;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{DecodeError, Value};

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

fn assert_round_trips(v: &Value) {
    let bytes = encode(v);
    assert_eq!(Value::decode(&bytes).as_ref(), Ok(v), "bytes {bytes:02x?}");
}

/// If bytes decode at all, they are the one canonical encoding of the value.
fn check_decode_is_canonical(bytes: &[u8]) {
    if let Ok(v) = Value::decode(bytes) {
        assert_eq!(encode(&v), bytes, "decoded {v:?} but it re-encodes differently");
    }
}

proptest! {
    #[test]
    fn int_round_trips(v in arb_int()) {
        assert_round_trips(&Value::Int(v));
    }

    #[test]
    fn double_round_trips_bit_for_bit(v in arb_double()) {
        let bytes = encode(&Value::Double(v));
        let Ok(Value::Double(back)) = Value::decode(&bytes) else { panic!("not a double: {bytes:02x?}") };
        prop_assert_eq!(back.to_bits(), v.to_bits());
    }

    #[test]
    fn str_round_trips(s in arb_string()) {
        assert_round_trips(&Value::Str(s));
    }

    #[test]
    fn int_list_round_trips(items in vec(arb_int(), 0..32)) {
        assert_round_trips(&Value::IntList(items));
    }

    #[test]
    fn str_list_round_trips(items in vec(arb_string(), 0..12)) {
        assert_round_trips(&Value::StrList(items));
    }

    #[test]
    fn map_round_trips(map in arb_string_map()) {
        assert_round_trips(&Value::Map(map));
    }

    #[test]
    fn any_value_round_trips(v in arb_value()) {
        assert_round_trips(&v);
    }

    #[test]
    fn encoded_len_equals_bytes_written(v in arb_value()) {
        prop_assert_eq!(v.encoded_len(), encode(&v).len());
    }

    #[test]
    fn encode_appends_after_existing_bytes(prefix in vec(any::<u8>(), 0..16), v in arb_value()) {
        let mut out = prefix.clone();
        v.encode(&mut out);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &encode(&v)[..]);
    }

    #[test]
    fn map_encoding_does_not_depend_on_insertion_order(
        (entries, shuffled) in proptest::collection::btree_map(arb_string(), arb_string(), 0..8)
            .prop_flat_map(|m| {
                let entries: Vec<(String, String)> = m.into_iter().collect();
                (Just(entries.clone()), Just(entries).prop_shuffle())
            })
    ) {
        let forward: BTreeMap<String, String> = entries.iter().cloned().collect();
        let backward: BTreeMap<String, String> = entries.iter().rev().cloned().collect();
        let random: BTreeMap<String, String> = shuffled.into_iter().collect();
        let bytes = encode(&Value::Map(forward));
        prop_assert_eq!(&encode(&Value::Map(backward)), &bytes);
        prop_assert_eq!(&encode(&Value::Map(random)), &bytes);
    }

    #[test]
    fn decode_of_arbitrary_bytes_never_panics(bytes in any::<Vec<u8>>()) {
        check_decode_is_canonical(&bytes);
    }

    #[test]
    fn decode_of_arbitrary_bytes_after_a_valid_tag_never_panics(tag in 1u8..=6, rest in vec(any::<u8>(), 0..64)) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&rest);
        check_decode_is_canonical(&bytes);
    }

    /// Counts are checked against the bytes present before anything is
    /// reserved, so no decode allocates much more than its input's size
    /// (the constant covers a B-tree node for maps).
    #[test]
    fn decode_allocates_in_proportion_to_its_input(
        bytes in prop_oneof![
            any::<Vec<u8>>(),
            (4u8..=6, any::<u32>(), vec(any::<u8>(), 0..256)).prop_map(|(tag, n, rest)| {
                let mut b = vec![tag];
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(&rest);
                b
            }),
        ]
    ) {
        let (_, allocations) = counting_alloc::measure(|| Value::decode(&bytes));
        prop_assert!(allocations.largest <= 8 * bytes.len() + 1024, "{:?} for {} bytes", allocations, bytes.len());
    }

    #[test]
    fn every_strict_prefix_of_an_encoding_is_truncated(v in arb_value()) {
        let bytes = encode(&v);
        for cut in 0..bytes.len() {
            prop_assert_eq!(Value::decode(&bytes[..cut]), Err(DecodeError::Truncated), "cut at {}", cut);
        }
    }

    #[test]
    fn decode_of_an_encoding_with_a_flipped_byte_never_panics(
        v in arb_value(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut bytes = encode(&v);
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        check_decode_is_canonical(&bytes);
    }

    #[test]
    fn decode_of_an_encoding_with_every_single_bit_flipped_never_panics(v in arb_value()) {
        let bytes = encode(&v);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            check_decode_is_canonical(&damaged);
        }
    }

    #[test]
    fn trailing_bytes_are_rejected(v in arb_value(), extra in vec(any::<u8>(), 1..16)) {
        let mut bytes = encode(&v);
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(Value::decode(&bytes), Err(DecodeError::TrailingBytes(extra.len())));
    }
}

#[test]
fn int_extremes_round_trip() {
    for v in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX] {
        assert_round_trips(&Value::Int(v));
    }
}

#[test]
fn double_specials_round_trip() {
    for v in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, f64::MIN_POSITIVE, 5e-324] {
        assert_round_trips(&Value::Double(v));
    }
}

#[test]
fn nan_values_compare_equal_by_bits() {
    assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
    assert_ne!(Value::Double(f64::NAN), Value::Double(-f64::NAN));
}

#[test]
fn negative_zero_is_distinct_from_zero() {
    assert_ne!(Value::Double(-0.0), Value::Double(0.0));
    assert_ne!(encode(&Value::Double(-0.0)), encode(&Value::Double(0.0)));
}

#[test]
fn empty_and_unicode_strings_round_trip() {
    for s in ["", "a", "é", "😀", "日本語", "\u{0}", "\u{10FFFF}"] {
        assert_round_trips(&Value::Str(s.to_owned()));
    }
}

#[test]
fn empty_int_list_round_trips() {
    assert_round_trips(&Value::IntList(vec![]));
}

#[test]
fn empty_str_list_and_lists_of_empty_strings_round_trip() {
    assert_round_trips(&Value::StrList(vec![]));
    assert_round_trips(&Value::StrList(vec![String::new()]));
    assert_round_trips(&Value::StrList(vec![String::new(), "x".into(), String::new()]));
}

#[test]
fn empty_map_and_unicode_keys_round_trip() {
    assert_round_trips(&Value::Map(BTreeMap::new()));
    let map: BTreeMap<String, String> = [("", "empty key"), ("é", "e acute"), ("😀", ""), ("日本", "Japan")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_round_trips(&Value::Map(map));
}

#[test]
fn values_of_different_variants_never_share_an_encoding() {
    let values = [
        Value::Int(0),
        Value::Double(0.0),
        Value::Str(String::new()),
        Value::IntList(vec![]),
        Value::StrList(vec![]),
        Value::Map(BTreeMap::new()),
    ];
    let tags: Vec<u8> = values.iter().map(|v| encode(v)[0]).collect();
    assert_eq!(tags, [1, 2, 3, 4, 5, 6]);
}

/// Hand-built map encoding: tag, count, then key/value strings as given.
fn raw_map(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![6u8];
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in entries {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

#[test]
fn raw_map_helper_matches_the_encoder() {
    let map: BTreeMap<String, String> = [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())].into();
    assert_eq!(raw_map(&[("a", "1"), ("b", "2")]), encode(&Value::Map(map)));
}

#[test]
fn map_with_keys_out_of_order_is_rejected() {
    assert_eq!(Value::decode(&raw_map(&[("b", "1"), ("a", "2")])), Err(DecodeError::UnorderedMap));
}

#[test]
fn map_with_duplicate_keys_is_rejected() {
    assert_eq!(Value::decode(&raw_map(&[("a", "1"), ("a", "2")])), Err(DecodeError::UnorderedMap));
    assert_eq!(Value::decode(&raw_map(&[("", "1"), ("", "1")])), Err(DecodeError::UnorderedMap));
}

#[test]
fn map_keys_are_ordered_by_bytes() {
    // "Z" (0x5a) < "a" (0x61) < "é" (0xc3 0xa9): byte order, not alphabetical.
    assert!(Value::decode(&raw_map(&[("Z", ""), ("a", ""), ("é", "")])).is_ok());
    assert_eq!(Value::decode(&raw_map(&[("a", ""), ("Z", "")])), Err(DecodeError::UnorderedMap));
}

#[test]
fn unknown_tags_are_rejected() {
    for tag in [0u8, 8, 9, 0x80, 0xff] {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(Value::decode(&bytes), Err(DecodeError::UnknownValueTag(tag)), "tag {tag}");
    }
}

#[test]
fn empty_input_is_truncated() {
    assert_eq!(Value::decode(&[]), Err(DecodeError::Truncated));
}

#[test]
fn invalid_utf8_is_rejected() {
    let mut s = vec![3u8];
    s.extend_from_slice(&2u32.to_le_bytes());
    s.extend_from_slice(&[0xc3, 0x28]);
    assert_eq!(Value::decode(&s), Err(DecodeError::InvalidUtf8));

    let mut list = vec![5u8];
    list.extend_from_slice(&1u32.to_le_bytes());
    list.extend_from_slice(&1u32.to_le_bytes());
    list.push(0xff);
    assert_eq!(Value::decode(&list), Err(DecodeError::InvalidUtf8));

    let mut map = vec![6u8];
    map.extend_from_slice(&1u32.to_le_bytes());
    map.extend_from_slice(&1u32.to_le_bytes());
    map.push(0x80);
    map.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(Value::decode(&map), Err(DecodeError::InvalidUtf8));
}

/// Counts near `u32::MAX` must be checked against the bytes present before
/// anything is allocated; otherwise this would try to reserve tens of GiB.
#[test]
fn huge_element_counts_are_truncated_without_allocating() {
    for tag in [4u8, 5, 6] {
        for count in [u32::MAX, u32::MAX / 2, 1 << 20] {
            let mut bytes = vec![tag];
            bytes.extend_from_slice(&count.to_le_bytes());
            bytes.extend_from_slice(&[0; 16]);
            assert_eq!(Value::decode(&bytes), Err(DecodeError::Truncated), "tag {tag} count {count}");
        }
    }
}

/// A list claiming one element per byte that follows: each string needs at
/// least its 4-byte length, so this is rejected before a `Vec<String>` of
/// 1000 elements (24 KB) is reserved.
#[test]
fn a_string_list_count_is_checked_against_the_minimum_element_size() {
    let mut bytes = vec![5u8];
    bytes.extend_from_slice(&1000u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 1000]);
    let (result, allocations) = counting_alloc::measure(|| Value::decode(&bytes));
    assert_eq!(result, Err(DecodeError::Truncated));
    assert_eq!(allocations.count, 0, "{allocations:?}");
}

#[test]
fn an_int_list_count_is_checked_against_the_element_size() {
    let mut bytes = vec![4u8];
    bytes.extend_from_slice(&100u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 799]);
    let (result, allocations) = counting_alloc::measure(|| Value::decode(&bytes));
    assert_eq!(result, Err(DecodeError::Truncated));
    assert_eq!(allocations.count, 0, "{allocations:?}");
}

#[test]
fn huge_string_length_is_truncated() {
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(b"abc");
    assert_eq!(Value::decode(&bytes), Err(DecodeError::Truncated));
}

/// Raw bytes (tag 7) keep any octets, UTF-8 or not, and their length is
/// checked against what is there.
#[test]
fn bytes_hold_any_octets() {
    let every: Vec<u8> = (0..=255).collect();
    for bytes in [vec![], every, vec![0xff, 0xfe, 0x00]] {
        let value = Value::Bytes(bytes.clone());
        let mut encoded = Vec::new();
        value.encode(&mut encoded);
        assert_eq!(encoded.len(), value.encoded_len());
        assert_eq!(encoded[0], 7);
        assert_eq!(Value::decode(&encoded), Ok(value.clone()));
        assert_ne!(value, Value::Str(String::from_utf8_lossy(&bytes).into_owned()));
        if !bytes.is_empty() {
            assert_eq!(Value::decode(&encoded[..encoded.len() - 1]), Err(DecodeError::Truncated));
        }
    }
    assert_eq!(Value::Bytes(vec![1, 2]).type_name(), "bytes");
}
