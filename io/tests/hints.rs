//! Hint files: a restart reads them instead of whole segments, and gets the
//! same index as a full scan; a missing, damaged or stale hint falls back to
//! scanning.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use stratum_io::{Columns, Engine, Options, SyncPolicy, Value};
use support::read_back;

type Documents = std::collections::BTreeMap<stratum_io::Id, stratum_model::Document>;

fn options() -> Options {
    Options { segment_bytes: 4096, sync: SyncPolicy::None, compaction: None, ..Options::default() }
}

fn fill(engine: &Engine) {
    for d in 0..30u8 {
        let columns: Columns = [("name".to_string(), format!("doc {d}"))].into();
        let doc = engine.create_document(&[d; 300], columns).unwrap();
        for i in 0..4 {
            let input = engine.add_input(doc, &Value::IntList(vec![i64::from(d), i])).unwrap();
            engine.set_output(doc, input, &Value::Str(format!("{d}/{i}"))).unwrap();
        }
        engine.set_column(doc, "level", "2").unwrap();
        if d % 3 == 0 {
            engine.delete_input(doc, doc + 1).unwrap();
        }
        if d % 7 == 0 {
            engine.delete_document(doc).unwrap();
        }
    }
}

fn hint_files(dir: &Path) -> Vec<PathBuf> {
    let mut hints: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hint"))
        .collect();
    hints.sort();
    hints
}

/// A store with hint files for every sealed segment, and the state a full
/// scan of it gives.
fn hinted_store() -> (tempfile::TempDir, Documents) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    fill(&engine);
    let sealed = engine.stats().segments - 1;
    assert!(sealed >= 3, "expected several sealed segments, got {sealed}");
    assert_eq!(engine.write_hints().unwrap(), sealed);
    assert_eq!(engine.write_hints().unwrap(), 0, "hints were written twice");
    let expected = read_back(&engine).unwrap().documents;
    engine.close().unwrap();
    assert_eq!(hint_files(dir.path()).len() as u64, sealed);
    (dir, expected)
}

#[test]
fn a_restart_with_hint_files_recovers_the_same_state_as_a_full_scan() {
    let (dir, expected) = hinted_store();
    let engine = Engine::open(dir.path(), options()).unwrap();
    let hinted = engine.stats().hinted_segments;
    assert_eq!(hinted, hint_files(dir.path()).len() as u64);
    let from_hints = read_back(&engine).unwrap().documents;
    let stats_from_hints = engine.stats();
    engine.close().unwrap();

    for hint in hint_files(dir.path()) {
        fs::remove_file(hint).unwrap();
    }
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(engine.stats().hinted_segments, 0);
    assert_eq!(read_back(&engine).unwrap().documents, expected);
    assert_eq!(from_hints, expected);
    let scanned = engine.stats();
    assert_eq!(
        (stats_from_hints.live_bytes, stats_from_hints.total_bytes, stats_from_hints.records),
        (scanned.live_bytes, scanned.total_bytes, scanned.records)
    );
}

#[test]
fn a_damaged_hint_file_is_ignored_and_the_segment_scanned() {
    let (dir, expected) = hinted_store();
    let hint = &hint_files(dir.path())[1];
    let mut bytes = fs::read(hint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(hint, bytes).unwrap();

    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(engine.stats().hinted_segments, hint_files(dir.path()).len() as u64 - 1);
    assert_eq!(read_back(&engine).unwrap().documents, expected);
}

#[test]
fn a_hint_for_a_different_segment_length_is_ignored() {
    let (dir, expected) = hinted_store();
    let hints = hint_files(dir.path());
    // Swap two hint files: each now names the wrong segment.
    let (a, b) = (fs::read(&hints[0]).unwrap(), fs::read(&hints[1]).unwrap());
    fs::write(&hints[0], b).unwrap();
    fs::write(&hints[1], a).unwrap();

    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(engine.stats().hinted_segments, hints.len() as u64 - 2);
    assert_eq!(read_back(&engine).unwrap().documents, expected);
}

#[test]
fn compaction_writes_a_hint_for_the_merged_segment_and_removes_the_old_ones() {
    let (dir, expected) = hinted_store();
    let engine = Engine::open(dir.path(), options()).unwrap();
    engine.compact().unwrap();
    let hints = hint_files(dir.path());
    assert_eq!(hints, vec![dir.path().join("merged.hint")]);
    engine.close().unwrap();

    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(engine.stats().hinted_segments, 1);
    assert_eq!(read_back(&engine).unwrap().documents, expected);
}

#[test]
fn hint_files_without_a_segment_are_removed_at_open() {
    let (dir, _) = hinted_store();
    fs::write(dir.path().join("seg_999.hint"), b"orphan").unwrap();
    fs::write(dir.path().join("seg_001.hint.tmp"), b"half written").unwrap();
    Engine::open(dir.path(), options()).unwrap();
    assert!(!dir.path().join("seg_999.hint").exists());
    assert!(!dir.path().join("seg_001.hint.tmp").exists());
}

/// A compacted store with sealed segments written after the compaction
/// (overwriting and deleting much of what the merged segment holds), hint
/// files for all of them, and the state a full scan gives.
fn merged_store() -> (tempfile::TempDir, Documents, stratum_io::Stats) {
    let (dir, _) = hinted_store();
    let engine = Engine::open(dir.path(), options()).unwrap();
    engine.compact().unwrap();
    let ids = engine.document_ids();
    for (n, &doc) in ids.iter().enumerate() {
        match n % 3 {
            0 => engine.update_blob(doc, &[7; 500]).unwrap(),
            1 => engine.delete_document(doc).unwrap(),
            _ => {
                let first = engine.inputs(doc).unwrap()[0].0;
                engine.update_input(doc, first, &Value::Int(n as i64)).unwrap();
                engine.delete_output(doc, first).unwrap();
            }
        }
    }
    engine.write_hints().unwrap();
    let expected = read_back(&engine).unwrap().documents;
    // Flushed first, so the durability mark a flush appends is counted.
    engine.flush().unwrap();
    let stats = engine.stats();
    engine.close().unwrap();
    (dir, expected, stats)
}

/// The merged segment's hint is a snapshot of the index it builds
/// (`STRATSNP`); restarting from it and the sealed segments' hints gives
/// the state, and the byte accounting, of a full scan.
#[test]
fn a_restart_from_the_merged_snapshot_matches_a_full_scan() {
    let (dir, expected, written) = merged_store();
    let merged_hint = dir.path().join("merged.hint");
    assert_eq!(&fs::read(&merged_hint).unwrap()[..8], b"STRATSNP");
    let hints = hint_files(dir.path()).len() as u64;
    assert!(hints >= 2, "expected the merged snapshot and sealed hints, got {hints}");

    let engine = Engine::open(dir.path(), options()).unwrap();
    let from_hints = engine.stats();
    assert_eq!(from_hints.hinted_segments, hints);
    assert_eq!(read_back(&engine).unwrap().documents, expected);
    engine.close().unwrap();

    for hint in hint_files(dir.path()) {
        fs::remove_file(hint).unwrap();
    }
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(read_back(&engine).unwrap().documents, expected);
    let scanned = engine.stats();
    for stats in [&from_hints, &written] {
        assert_eq!(
            (stats.documents, stats.inputs, stats.outputs, stats.next_id),
            (scanned.documents, scanned.inputs, scanned.outputs, scanned.next_id)
        );
        assert_eq!(
            (stats.live_bytes, stats.total_bytes, stats.records),
            (scanned.live_bytes, scanned.total_bytes, scanned.records)
        );
    }
    // The engine writes the merged segment's snapshot again when it is missing.
    assert!(engine.write_hints().unwrap() >= 1);
    assert_eq!(&fs::read(&merged_hint).unwrap()[..8], b"STRATSNP");
}

#[test]
fn a_damaged_merged_snapshot_is_ignored_and_the_segment_scanned() {
    let (dir, expected, _) = merged_store();
    let merged_hint = dir.path().join("merged.hint");
    let mut bytes = fs::read(&merged_hint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&merged_hint, bytes).unwrap();

    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(engine.stats().hinted_segments, hint_files(dir.path()).len() as u64 - 1);
    assert_eq!(read_back(&engine).unwrap().documents, expected);
}
