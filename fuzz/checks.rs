//! What the fuzz targets check, one function per target, on arbitrary
//! bytes. Shared by the libFuzzer targets (`fuzz/fuzz_targets/`, run with
//! `scripts/fuzz`) and by the test that runs the committed corpus and
//! regressions plus a short random run in CI (`core/tests/fuzz_corpus.rs`).
//! Each function panics when the core misbehaves: a panic inside the core,
//! or an answer that breaks what the core promises about it.

use stratum_core::{
    Body, Defect, KeyDir, RECORD_HEADER_LEN, SALT_LEN, SEGMENT_HEADER_LEN, Salt, Scan, SegmentHeader, SegmentId,
    SegmentReplay, TailDecision, TailPolicy, judge_bad_tail, replay_hints, scan,
};

/// The salt the targets' segments use. Inputs that contain these bytes
/// reach the durability-mark paths; the corpus seeds have some.
pub const SALT: [u8; SALT_LEN] = *b"fuzzing-salt-16b";

/// Recovery of an active segment whose records are `data`: replay it,
/// then judge its bad tail, if any. The judgement refuses exactly when a
/// durability mark that is whole and valid (same salt, its checksum holds)
/// says the segment was synced past the damage, and otherwise cuts exactly
/// at the end of the valid prefix.
pub fn segment_tail(data: &[u8]) {
    let salt = Salt::new(SALT);
    let segment = SegmentId::FIRST;
    let mut file = SegmentHeader { segment, salt }.encode().to_vec();
    file.extend_from_slice(data);
    let mut keydir = KeyDir::new();
    let mut replay = SegmentReplay::new(segment, salt);
    let mut stop = None;
    let buf = &file[SEGMENT_HEADER_LEN..];
    match replay.feed(&mut keydir, buf) {
        stratum_core::Feed::NeedMore { .. } => {}
        stratum_core::Feed::Stopped { corruption, .. } => stop = Some(corruption),
    }
    let valid_len = replay.valid_len();
    assert!(valid_len as usize <= file.len(), "the valid prefix is longer than the file");
    keydir.check_invariants().expect("a replay of valid records keeps the index consistent");
    let replayed = replay.finish(file.len() as u64, stop, TailPolicy::Truncate).expect("an active segment is cut");
    let stratum_core::Replayed::TornTail { valid_len, reason, .. } = replayed else { return };
    let tail = &file[valid_len as usize..];
    match judge_bad_tail(valid_len, reason, tail, &salt) {
        Ok(TailDecision::Cut { to }) => {
            assert_eq!(to, valid_len, "a cut elsewhere than the valid prefix's end");
            assert!(!has_mark_past(tail, &salt, valid_len), "cut although a valid mark says it was synced past it");
        }
        Err(Defect::DamageBeforeDurable { valid_len: at, durable_upto, .. }) => {
            assert_eq!(at, valid_len);
            assert!(durable_upto > valid_len, "refused for a mark that does not reach past the damage");
            assert!(has_mark_past(tail, &salt, valid_len), "refused without a valid mark past the damage");
        }
        Err(other) => panic!("the judgement refused with {other:?}"),
    }
}

/// Whether `tail` holds, at any offset, a whole durability mark valid for
/// `salt` whose offset reaches past `valid_len`: the slow way, trying
/// every offset.
fn has_mark_past(tail: &[u8], salt: &Salt, valid_len: u64) -> bool {
    (0..tail.len()).any(|at| match scan(&tail[at..], salt) {
        Scan::Record(record) => matches!(
            record.body(),
            Ok(Body::Durable { salt: repeated, upto }) if repeated == *salt.bytes() && upto > valid_len
        ),
        _ => false,
    })
}

/// Any bytes scanned as records: never a panic, a record never longer
/// than the bytes, and a record's body decodes or is refused.
pub fn scan_records(data: &[u8]) {
    let salt = Salt::new(SALT);
    let mut at = 0;
    while at < data.len() {
        match scan(&data[at..], &salt) {
            Scan::Record(record) => {
                assert!(record.len() >= RECORD_HEADER_LEN && record.len() <= data.len() - at);
                let _ = record.body();
                at += record.len();
            }
            Scan::Incomplete { needed } => {
                assert!(needed > data.len() - at, "incomplete, yet the bytes are there");
                break;
            }
            Scan::Invalid(_) => at += 1,
        }
    }
}

/// A hint file of arbitrary bytes for a segment of the length its first
/// eight bytes say: applied whole or refused, never a panic. (A hint's
/// entries are checked one by one, not against each other, so the index
/// one builds alone is not checked.)
pub fn hint_file(data: &[u8]) {
    let (len, hint) = split_len(data);
    for hint in [hint.to_vec(), with_valid_crc(hint)] {
        let mut keydir = KeyDir::new();
        let _ = replay_hints(&hint, SegmentId::FIRST, len, &mut keydir);
    }
}

/// `file` with its last four bytes replaced by the CRC-32 of the rest, as
/// a hint file's or snapshot's trailer has it: so that arbitrary entries
/// behind a valid checksum (what a buggy writer would leave) are explored,
/// not only files the checksum refuses.
fn with_valid_crc(file: &[u8]) -> Vec<u8> {
    let mut file = file.to_vec();
    if let Some(body_len) = file.len().checked_sub(4) {
        let crc = crc32fast::hash(&file[..body_len]);
        file[body_len..].copy_from_slice(&crc.to_le_bytes());
    }
    file
}

/// An index snapshot of arbitrary bytes: refused, or an index whose every
/// invariant holds (the loader checks all it loads).
pub fn index_snapshot(data: &[u8]) {
    let (len, snapshot) = split_len(data);
    for snapshot in [snapshot.to_vec(), with_valid_crc(snapshot)] {
        if let Ok(keydir) = KeyDir::from_snapshot(&snapshot, SegmentId::FIRST, len) {
            keydir.check_invariants().expect("a loaded snapshot is a consistent index");
        }
    }
}

/// The segment length an input's first eight bytes give (up to 1 MiB), and
/// the rest.
fn split_len(data: &[u8]) -> (u64, &[u8]) {
    match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len) % (1 << 20), rest),
        None => (0, data),
    }
}
