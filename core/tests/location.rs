//! `Location` packs a segment id, an offset and a length into twelve bytes.

use proptest::prelude::*;
use stratum_core::{HeaderError, Location, MAX_OFFSET, MAX_SEGMENT_ID, Salt, SegmentHeader, SegmentId};

proptest! {
    #[test]
    fn a_location_gives_back_what_it_was_made_of(
        segment in 1..=MAX_SEGMENT_ID,
        offset in prop_oneof![0..=MAX_OFFSET, Just(MAX_OFFSET), Just(u32::MAX as u64 + 1)],
        len in any::<u32>(),
    ) {
        let segment = SegmentId::new(segment).unwrap();
        let at = Location::new(segment, offset, len).unwrap();
        prop_assert_eq!((at.segment(), at.offset(), at.len()), (segment, offset, len));
    }
}

#[test]
fn offsets_above_the_maximum_have_no_location() {
    assert_eq!(Location::new(SegmentId::FIRST, MAX_OFFSET + 1, 1), None);
    assert_eq!(Location::new(SegmentId::FIRST, u64::MAX, 1), None);
}

#[test]
fn segment_ids_stop_at_the_maximum() {
    assert_eq!(SegmentId::new(0), None);
    assert_eq!(SegmentId::new(MAX_SEGMENT_ID + 1), None);
    assert_eq!(SegmentId::new(MAX_SEGMENT_ID).unwrap().next(), None);
}

#[test]
fn a_segment_header_with_an_id_above_the_maximum_is_rejected() {
    let salt = Salt::new(*b"stratum-testsalt");
    let mut bytes = SegmentHeader { segment: SegmentId::FIRST, salt }.encode();
    bytes[12..16].copy_from_slice(&(MAX_SEGMENT_ID + 1).to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(SegmentHeader::decode(&bytes), Err(HeaderError::ZeroSegmentId));
}

#[test]
fn a_location_and_an_optional_one_take_twelve_bytes() {
    assert_eq!(size_of::<Location>(), 12);
    assert_eq!(size_of::<Option<Location>>(), 12);
}
