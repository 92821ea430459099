//! Compaction: disk space follows live data, reads and writes carry on
//! while it runs, and a power cut at any step recovers to the same data.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stratum_io::{
    ACTIVE_NAME, Columns, CompactionPolicy, CompactionSettings, Engine, Id, MERGED_NAME, Options, SimFileSystem,
    SyncPolicy, Value,
};
use support::read_back;

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn blob(id: u64, version: u64, len: usize) -> Vec<u8> {
    let stamp = format!("<doc {id} v{version}>");
    stamp.bytes().cycle().take(len.max(stamp.len())).collect()
}

fn no_background() -> Options {
    Options { segment_bytes: 64 << 10, sync: SyncPolicy::None, compaction: None, ..Options::default() }
}

/// Fills an engine with documents, inputs and outputs, each overwritten
/// many times, and some deleted. Returns the expected final blobs.
fn churn(engine: &Engine, documents: u64, rounds: u64) -> BTreeMap<Id, Vec<u8>> {
    let mut expected = BTreeMap::new();
    let ids: Vec<Id> =
        (0..documents).map(|i| engine.create_document(&blob(i, 0, 2048), Columns::new()).unwrap()).collect();
    for &id in &ids {
        let input = engine.add_input(id, &Value::Int(0)).unwrap();
        for round in 1..=rounds {
            engine.update_blob(id, &blob(id, round, 2048)).unwrap();
            engine.update_input(id, input, &Value::Int(round as i64)).unwrap();
            engine.set_output(id, input, &Value::Str(format!("out {round}"))).unwrap();
        }
        expected.insert(id, blob(id, rounds, 2048));
    }
    for &id in ids.iter().step_by(5) {
        engine.delete_document(id).unwrap();
        expected.remove(&id);
    }
    expected
}

#[test]
fn compaction_shrinks_disk_to_about_the_live_size() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), no_background()).unwrap();
    let expected = churn(&engine, 40, 15);
    let before = disk_bytes(dir.path());

    let report = engine.compact().unwrap();
    let stats = engine.stats();
    let after = disk_bytes(dir.path());
    assert!(report.segments_in > 1 && report.records_dropped > 0, "{report:?}");
    assert_eq!(stats.garbage_bytes, 0, "{stats:?}");
    // Live records, plus one checkpoint and two segment headers.
    assert!(after <= stats.live_bytes + 256, "disk {after} for {} live bytes", stats.live_bytes);
    assert!(before > 10 * after, "disk went from {before} to {after} only");
    assert!(dir.path().join(MERGED_NAME).exists() && dir.path().join(ACTIVE_NAME).exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4, "expected merged.seg, merged.hint, active.seg, LOCK");

    let state = read_back(&engine).unwrap();
    let blobs: BTreeMap<Id, Vec<u8>> = state.documents.iter().map(|(&id, d)| (id, d.blob.clone())).collect();
    assert_eq!(blobs, expected);
    engine.close().unwrap();

    let engine = Engine::open(dir.path(), no_background()).unwrap();
    assert_eq!(read_back(&engine).unwrap().documents, state.documents);
    assert_eq!(engine.stats().garbage_bytes, 0);
}

#[test]
fn ids_are_not_reused_after_compaction_drops_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), no_background()).unwrap();
    let kept = engine.create_document(b"kept", Columns::new()).unwrap();
    let gone = engine.create_document(b"gone", Columns::new()).unwrap();
    engine.delete_document(gone).unwrap();
    engine.compact().unwrap();
    engine.close().unwrap();

    let engine = Engine::open(dir.path(), no_background()).unwrap();
    let next = engine.create_document(b"next", Columns::new()).unwrap();
    assert!(next > gone && gone > kept, "ids {kept} {gone} {next}");
}

#[test]
fn reads_and_writes_continue_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), no_background()).unwrap());
    let settled = churn(&engine, 60, 10);
    let busy: Vec<Id> = (0..8).map(|i| engine.create_document(&blob(i, 0, 512), Columns::new()).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, settled, stop) = (engine.clone(), settled.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (&id, want) in &settled {
                        assert_eq!(&engine.document_blob(id).unwrap(), want, "document {id}");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = busy
        .iter()
        .map(|&id| {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    version += 1;
                    engine.update_blob(id, &blob(id, version, 512)).unwrap();
                    assert_eq!(engine.document_blob(id).unwrap(), blob(id, version, 512));
                }
                (id, version)
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(2);
    let mut compactions = 0;
    while Instant::now() < deadline || compactions < 3 {
        engine.compact().unwrap();
        compactions += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    let last: Vec<(Id, u64)> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let check = |engine: &Engine| {
        for (&id, want) in &settled {
            assert_eq!(&engine.document_blob(id).unwrap(), want);
        }
        for &(id, version) in &last {
            assert_eq!(engine.document_blob(id).unwrap(), blob(id, version, 512), "document {id}");
        }
    };
    check(&engine);
    Arc::into_inner(engine).unwrap().close().unwrap();
    check(&Engine::open(dir.path(), no_background()).unwrap());
}

#[test]
fn a_power_cut_at_any_step_of_a_compaction_recovers_the_same_data() {
    const DIR: &str = "/data";
    let options = Options { segment_bytes: 512, ..no_background() };
    let base = SimFileSystem::new();
    let engine = Engine::open_with(Arc::new(base.clone()), DIR, options).unwrap();
    churn(&engine, 6, 4);
    engine.compact().unwrap();
    churn(&engine, 4, 3);
    let expected = read_back(&engine).unwrap();
    engine.close().unwrap();

    let mut cut = 0;
    loop {
        let fs = base.crash(0); // every byte is synced: an exact copy
        let engine = Engine::open_with(Arc::new(fs.clone()), DIR, options).unwrap();
        fs.faults(|f| f.power_cut_after = Some(cut));
        let finished = engine.compact().is_ok() && !fs.faults(|f| f.power_is_cut);
        fs.faults(|f| f.power_is_cut = true);
        drop(engine);

        let image = fs.crash(cut);
        let engine = Engine::open_with(Arc::new(image), DIR, options).unwrap();
        let recovered = read_back(&engine).unwrap();
        assert_eq!(recovered.documents, expected.documents, "power cut after {cut} file-system calls");
        assert!(recovered.next_id >= expected.next_id, "ids went back after a power cut at call {cut}");
        if finished {
            break;
        }
        cut += 1;
    }
    assert!(cut > 10, "the compaction took only {cut} file-system calls");
}

#[test]
fn the_background_compactor_runs_when_garbage_passes_the_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let compaction = CompactionSettings {
        interval: Duration::from_millis(10),
        policy: CompactionPolicy { min_garbage_bytes: 16 << 10, min_garbage_ratio: 0.5 },
    };
    let engine = Engine::open(dir.path(), Options { compaction: Some(compaction), ..no_background() }).unwrap();
    let doc = engine.create_document(b"v0", Columns::new()).unwrap();
    engine.update_blob(doc, &[7; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(engine.stats().compactions, 0, "compacted below the garbage thresholds");

    for version in 0..100u8 {
        engine.update_blob(doc, &[version; 1000]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.stats().compactions == 0 {
        assert!(Instant::now() < deadline, "the background compactor never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(engine.document_blob(doc).unwrap(), vec![99; 1000]);
}

#[test]
fn compacting_a_store_without_garbage_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), no_background()).unwrap();
    engine.create_document(b"only live data", Columns::new()).unwrap();
    // The first compaction reclaims the id reservation and the durability
    // mark its fsync left: only live data remains.
    assert!(engine.compact().unwrap().segments_in > 0);
    assert_eq!(engine.stats().garbage_bytes, 0);
    let merged_len = std::fs::metadata(dir.path().join(MERGED_NAME)).unwrap().len();
    let report = engine.compact().unwrap();
    assert_eq!(report.segments_in, 0);
    assert_eq!(engine.stats().compactions, 1);
    assert_eq!(std::fs::metadata(dir.path().join(MERGED_NAME)).unwrap().len(), merged_len);
}
