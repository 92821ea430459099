//! IO faults over the simulated file system: a failed write, a failed fsync
//! and a full disk each reach the caller as an error, poison the engine for
//! writes but not reads, and a reopen recovers everything acknowledged.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratum_io::{Columns, Engine, Error, Missing, Options, SimFileSystem, SyncPolicy, Value};

const DIR: &str = "/data";

fn open(fs: &SimFileSystem, options: Options) -> Engine {
    Engine::open_with(Arc::new(fs.clone()), DIR, options).expect("open")
}

fn columns(name: &str) -> Columns {
    [("name".to_string(), name.to_string())].into()
}

/// Cuts the power and returns what a restart would find.
fn power_cut(fs: &SimFileSystem, engine: Engine) -> SimFileSystem {
    fs.faults(|f| f.power_is_cut = true);
    drop(engine);
    fs.crash(7)
}

#[test]
fn failed_write_is_an_error_and_poisons_writes_but_not_reads() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options::default());
    let kept = engine.create_document(b"kept", columns("a")).unwrap();

    fs.faults(|f| f.fail_next_write = true);
    let err = engine.create_document(b"lost", columns("b")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "got {err:?}");

    let refused = engine.update_blob(kept, b"refused").unwrap_err();
    assert!(matches!(refused, Error::Poisoned { .. }), "got {refused:?}");
    assert!(refused.to_string().contains("simulated write failure"), "{refused}");
    assert_eq!(engine.document_blob(kept).unwrap(), b"kept");
    assert_eq!(engine.document_ids(), vec![kept]);
    assert!(engine.stats().poisoned.is_some());

    let engine = open(&power_cut(&fs, engine), Options::default());
    assert_eq!(engine.document_ids(), vec![kept]);
    assert_eq!(engine.document_blob(kept).unwrap(), b"kept");
    engine.update_blob(kept, b"writable again").unwrap();
}

#[test]
fn failed_fsync_is_an_error_and_nothing_acknowledged_is_lost() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options::default());
    let doc = engine.create_document(b"doc", Columns::new()).unwrap();
    let input = engine.add_input(doc, &Value::Int(1)).unwrap();

    fs.faults(|f| f.fail_next_sync = true);
    let err = engine.set_output(doc, input, &Value::Int(2)).unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "got {err:?}");
    assert!(err.to_string().contains("simulated fsync failure"), "{err}");
    assert!(matches!(engine.add_input(doc, &Value::Int(3)), Err(Error::Poisoned { .. })));
    assert!(matches!(engine.flush(), Err(Error::Poisoned { .. })));

    let engine = open(&power_cut(&fs, engine), Options::default());
    assert_eq!(engine.input(doc, input).unwrap(), Value::Int(1));
    assert_eq!(engine.inputs(doc).unwrap().len(), 1);
}

/// Every answer after a failed fsync is honest: a writer whose record was
/// appended learns that its outcome is unknown, a writer refused before it
/// appended changed nothing, and an acknowledged write survives.
#[test]
fn failed_fsync_fails_every_writer_waiting_on_it() {
    let fs = SimFileSystem::new();
    let engine = Arc::new(open(&fs, Options::default()));
    let doc = engine.create_document(b"doc", Columns::new()).unwrap();
    fs.faults(|f| {
        f.fail_next_sync = true;
        f.sync_delay = Some(Duration::from_millis(20));
    });
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let engine = engine.clone();
            std::thread::spawn(move || (i, engine.add_input(doc, &Value::Int(i))))
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(results.iter().any(|(_, r)| r.is_err()), "the failed fsync reached no writer");
    let visible: Vec<Value> = engine.inputs(doc).unwrap().into_iter().map(|(_, v)| v).collect();
    for (i, result) in &results {
        let shown = visible.contains(&Value::Int(*i));
        match result {
            Ok(_) => assert!(shown, "acknowledged write {i} is not visible"),
            Err(Error::OutcomeUnknown { .. }) => assert!(shown, "write {i} of unknown outcome is not even visible"),
            Err(Error::Poisoned { .. }) => assert!(!shown, "write {i} was refused, yet it is visible"),
            Err(e) => panic!("write {i}: unexpected error {e:?}"),
        }
    }

    let engine = Arc::into_inner(engine).unwrap();
    let engine = open(&power_cut(&fs, engine), Options::default());
    let recovered: Vec<Value> = engine.inputs(doc).unwrap().into_iter().map(|(_, v)| v).collect();
    for (i, result) in &results {
        let found = recovered.contains(&Value::Int(*i));
        match result {
            Ok(_) => assert!(found, "acknowledged write {i} was lost"),
            Err(Error::Poisoned { .. }) => assert!(!found, "write {i} was refused, yet it survived the restart"),
            _ => {}
        }
    }
}

/// Defect: a writer whose record was appended, waiting for an fsync while
/// another writer's append failed, was answered "writes are refused"
/// although its write was applied (visible at once, and after a restart).
/// It must be synced and acknowledged; only the failed append is an error.
#[test]
fn a_write_appended_before_another_writers_append_failed_is_acknowledged() {
    let fs = SimFileSystem::new();
    let engine = Arc::new(open(&fs, Options::default()));
    let doc = engine.create_document(b"doc", Columns::new()).unwrap();
    let add_input = |i: i64| {
        let engine = engine.clone();
        std::thread::spawn(move || engine.add_input(doc, &Value::Int(i)))
    };

    let hold = fs.hold_syncs();
    let leader = add_input(1);
    wait_until("the first writer is inside its fsync", || fs.held_syncs() == 1);
    // Appended after that fsync took its target: it waits for the next one.
    let waiter = add_input(2);
    wait_until("the second writer has appended", || engine.inputs(doc).unwrap().len() == 2);
    fs.faults(|f| f.fail_next_write = true);
    let failed = engine.add_input(doc, &Value::Int(3)).unwrap_err();
    assert!(matches!(failed, Error::Io { .. }), "got {failed:?}");
    drop(hold);

    let first = leader.join().unwrap().expect("the first write");
    let second = waiter.join().unwrap().expect("a write appended before the failure is acknowledged");
    let ids: Vec<_> = engine.inputs(doc).unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![first, second], "the failed write is visible, or an acknowledged one is not");
    assert!(matches!(engine.add_input(doc, &Value::Int(4)), Err(Error::Poisoned { .. })));

    let engine = Arc::into_inner(engine).unwrap();
    let engine = open(&power_cut(&fs, engine), Options::default());
    let recovered = engine.inputs(doc).unwrap();
    assert_eq!(recovered, vec![(first, Value::Int(1)), (second, Value::Int(2))]);
}

#[test]
fn full_disk_is_an_error_for_the_writer_and_leaves_no_partial_record() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options::default());
    let doc = engine.create_document(b"small", columns("x")).unwrap();
    let before = fs.contents(&std::path::Path::new(DIR).join("active.seg")).unwrap();

    fs.faults(|f| f.capacity = Some(before.len() as u64 + 100));
    let err = engine.update_blob(doc, &[b'z'; 4096]).unwrap_err();
    match &err {
        Error::Io { source, .. } => assert_eq!(source.kind(), ErrorKind::StorageFull),
        other => panic!("expected a full-disk error, got {other:?}"),
    }
    let after = fs.contents(&std::path::Path::new(DIR).join("active.seg")).unwrap();
    assert_eq!(after, before, "the failed append left bytes behind");
    assert_eq!(engine.document_blob(doc).unwrap(), b"small");

    fs.faults(|f| f.capacity = None);
    let engine = open(&power_cut(&fs, engine), Options::default());
    assert_eq!(engine.document_blob(doc).unwrap(), b"small");
    engine.update_blob(doc, &[b'z'; 4096]).unwrap();
    assert_eq!(engine.document_blob(doc).unwrap(), vec![b'z'; 4096]);
}

#[test]
fn failure_while_sealing_a_segment_poisons_and_reopen_recovers() {
    let fs = SimFileSystem::new();
    let options = Options { segment_bytes: 256, ..Options::default() };
    let engine = open(&fs, options);
    let doc = engine.create_document(&[1; 100], Columns::new()).unwrap();
    // The next append needs a new segment; make creating it fail.
    fs.faults(|f| f.power_cut_after = Some(2));
    let err = engine.update_blob(doc, &[2; 200]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "got {err:?}");
    assert!(matches!(engine.update_blob(doc, &[3; 10]), Err(Error::Poisoned { .. })));

    let engine = open(&power_cut(&fs, engine), options);
    assert_eq!(engine.document_blob(doc).unwrap(), vec![1; 100]);
    engine.update_blob(doc, &[4; 200]).unwrap();
    assert_eq!(engine.document_blob(doc).unwrap(), vec![4; 200]);
}

/// Writers started together under `always`, on a disk whose fsync takes
/// 2 ms, take fewer fsyncs than writes. (Benches measure how many writes an
/// fsync covers; `writers_that_append_during_an_fsync_share_the_next_one`
/// counts it exactly.)
#[test]
fn concurrent_writers_share_fsyncs() {
    let (threads, per_thread) = (16, 10);
    let fs = SimFileSystem::new();
    fs.faults(|f| f.sync_delay = Some(Duration::from_millis(2)));
    let engine = Arc::new(open(&fs, Options::default()));
    let doc = engine.create_document(b"doc", Columns::new()).unwrap();
    let before = engine.stats().fsyncs;
    let start = Arc::new(std::sync::Barrier::new(threads as usize));
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let (engine, start) = (engine.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per_thread {
                    engine.add_input(doc, &Value::Int(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let writes = (threads * per_thread) as u64;
    assert_eq!(engine.inputs(doc).unwrap().len() as u64, writes);
    let fsyncs = engine.stats().fsyncs - before;
    assert!(fsyncs < writes, "{fsyncs} fsyncs for {writes} writes: no group commit");
}

/// Polls `done` until it holds; panics, naming `what` it waited for, if
/// that takes more than 30 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited 30 s until {what}, in vain");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Group commit, counted: writers that append while another writer's
/// fsync runs wait for it to end, then one of them leads a single fsync
/// that covers them all. The fsyncs are held (not slowed) so that every
/// writer is in place before any fsync ends, whatever the machine's load.
#[test]
fn writers_that_append_during_an_fsync_share_the_next_one() {
    const WRITERS: usize = 8;
    let fs = SimFileSystem::new();
    let engine = Arc::new(open(&fs, Options { sync: SyncPolicy::Always, ..Options::default() }));
    let doc = engine.create_document(b"doc", Columns::new()).unwrap();
    let add_input = |i: usize| {
        let engine = engine.clone();
        std::thread::spawn(move || engine.add_input(doc, &Value::Int(i as i64)))
    };

    let hold = fs.hold_syncs();
    let mut writers = vec![add_input(0)];
    wait_until("the first writer is inside its fsync", || fs.held_syncs() == 1);
    writers.extend((1..WRITERS).map(add_input));
    wait_until("every writer has appended", || engine.inputs(doc).unwrap().len() == WRITERS);
    assert_eq!(fs.held_syncs(), 1, "a second fsync started while the first ran");
    let (syncs, fsyncs) = (fs.syncs(), engine.stats().fsyncs);
    drop(hold);
    for writer in writers {
        writer.join().unwrap().unwrap();
    }

    assert_eq!(
        fs.syncs() - syncs,
        2,
        "expected the first writer's fsync, then one fsync for the {} writers that appended during it",
        WRITERS - 1
    );
    assert_eq!(engine.stats().fsyncs - fsyncs, 2, "the engine's fsync count disagrees with the disk's");
    assert_eq!(fs.held_syncs(), 0);
}

#[test]
fn sync_policy_none_syncs_only_on_flush() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options { sync: SyncPolicy::None, ..Options::default() });
    let doc = engine.create_document(b"doc", Columns::new()).unwrap();
    assert!(fs.unsynced_bytes() > 0);
    engine.flush().unwrap();
    assert_eq!(fs.unsynced_bytes(), 0);
    engine.set_column(doc, "k", "v").unwrap();

    let engine = open(&power_cut(&fs, engine), Options::default());
    assert_eq!(engine.document_blob(doc).unwrap(), b"doc");
}

#[test]
fn interval_policy_syncs_in_the_background() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options { sync: SyncPolicy::Interval(Duration::from_millis(5)), ..Options::default() });
    engine.create_document(b"doc", Columns::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.unsynced_bytes() > 0 {
        assert!(Instant::now() < deadline, "the background flush never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options::default());
    let err = Engine::open_with(Arc::new(fs.clone()), DIR, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "got {err:?}");
    drop(engine);
    open(&fs, Options::default());
}

#[test]
fn reads_of_missing_things_are_typed_not_found() {
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options::default());
    let doc = engine.create_document(b"d", Columns::new()).unwrap();
    let other = engine.create_document(b"o", Columns::new()).unwrap();
    let input = engine.add_input(doc, &Value::Str("x".into())).unwrap();
    let not_found = |r: Result<Value, Error>| match r {
        Err(Error::NotFound(m)) => m,
        other => panic!("expected not found, got {other:?}"),
    };
    assert_eq!(not_found(engine.input(other, input)), Missing::Input { document: other, input });
    assert_eq!(not_found(engine.output(doc, input)), Missing::Output { document: doc, input });
    engine.delete_document(doc).unwrap();
    assert_eq!(not_found(engine.input(doc, input)), Missing::Document(doc));
    assert!(matches!(engine.document_blob(doc), Err(Error::NotFound(Missing::Document(d))) if d == doc));
    assert!(matches!(engine.delete_document(doc), Err(Error::NotFound(_))));
}

// ----- the simulated disk itself ---------------------------------------------

/// The simulated disk fails a failed fsync as Linux does: the error is
/// reported once, the bytes stay readable (page cache), a later fsync
/// succeeds, and yet after a crash the bytes it was to write are zeros.
#[test]
fn a_failed_fsync_drops_its_bytes_like_linux() {
    use stratum_io::FileSystem;
    let fs = SimFileSystem::new();
    let dir = std::path::Path::new("/d");
    fs.create_dir_all(dir).unwrap();
    let path = dir.join("f");
    let file = fs.create_new(&path).unwrap();
    fs.sync_dir(dir).unwrap();
    file.write_all_at(b"synced", 0).unwrap();
    file.sync_data().unwrap();
    file.write_all_at(b" lost", 6).unwrap();
    fs.faults(|f| f.fail_next_sync = true);
    assert!(file.sync_data().is_err());
    file.write_all_at(b" kept", 11).unwrap();
    file.sync_data().expect("the error is reported once");
    assert_eq!(fs.contents(&path).unwrap(), b"synced lost kept", "the page cache still holds the bytes");
    let after = fs.crash(1).contents(&path).unwrap();
    assert_eq!(after, b"synced\0\0\0\0\0 kept", "the failed fsync's bytes never reached the disk");
}

/// `fail_io_after` fails exactly the call it names, counting reads too:
/// once, or from then on.
#[test]
fn an_io_failure_can_be_aimed_at_any_call_once_or_for_good() {
    use stratum_io::FileSystem;
    for persistent in [false, true] {
        let fs = SimFileSystem::new();
        fs.create_dir_all(std::path::Path::new("/d")).unwrap();
        let file = fs.create_new(std::path::Path::new("/d/f")).unwrap();
        let before = fs.io_calls();
        fs.faults(|f| {
            f.fail_io_after = Some(2);
            f.fail_persistently = persistent;
        });
        file.write_all_at(b"a", 0).unwrap();
        assert_eq!(file.len().unwrap(), 1);
        assert!(file.read_exact_at(&mut [0; 1], 0).is_err(), "the third call fails");
        assert_eq!(file.len().is_err(), persistent);
        assert_eq!(fs.list(std::path::Path::new("/d")).is_err(), persistent);
        assert_eq!(fs.io_calls(), before + 5);
    }
}

/// On a full disk a hint file cannot be written: the error is the
/// caller's, and no half-written `seg_NNN.hint.tmp` is left behind to take
/// up the little room there is (the background writer also backs off; its
/// schedule is unit-tested in `engine/ticker.rs`).
#[test]
fn a_hint_write_on_a_full_disk_leaves_no_temporary_file() {
    use stratum_io::FileSystem;
    let fs = SimFileSystem::new();
    let engine = open(&fs, Options { segment_bytes: 300, ..Options::default() });
    let doc = engine.create_document(&[7; 200], columns("x")).unwrap();
    for i in 0..20 {
        engine.add_input(doc, &Value::Int(i)).unwrap();
    }
    assert!(engine.stats().segments > 2, "expected sealed segments");
    let used: u64 = fs
        .list(std::path::Path::new("/data"))
        .unwrap()
        .iter()
        .map(|n| fs.contents(&std::path::Path::new("/data").join(n)).map_or(0, |c| c.len() as u64))
        .sum();
    fs.faults(|f| f.capacity = Some(used + 10));
    let err = engine.write_hints().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "got {err:?}");
    let names = fs.list(std::path::Path::new("/data")).unwrap();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "left behind: {names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".hint")), "a hint was written on a full disk: {names:?}");

    fs.faults(|f| f.capacity = None);
    assert!(engine.write_hints().unwrap() > 0, "hints are written once there is room");
}
