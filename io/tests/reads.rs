//! Reads through segment memory maps, and the non-blocking read variants
//! the server tries before it hops to a blocking thread.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use stratum_io::{ACTIVE_NAME, Engine, Error, Missing, Options, SimFileSystem, SyncPolicy, Value};

fn options() -> Options {
    // `Never` keeps freshly written pages dirty, hence in memory, for the
    // `*_now` reads below.
    Options { sync: SyncPolicy::None, compaction: None, ..Options::default() }
}

fn blob(n: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + n * 7) as u8).collect()
}

fn columns(n: usize) -> BTreeMap<String, String> {
    BTreeMap::from([("n".to_string(), n.to_string())])
}

/// The active segment's map starts small and is remade as the file grows:
/// every record, read right after it is written and again at the end,
/// comes back whole, and so does every record after a reopen (sealed
/// segments mapped from scratch).
#[test]
fn reads_follow_a_growing_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options { segment_bytes: 16 << 20, ..options() }).unwrap();
    let mut written = Vec::new();
    // 40 MiB of blobs: several remaps of the active segment and two rotations.
    for n in 0..160 {
        let bytes = blob(n, 256 << 10);
        let id = engine.create_document(&bytes, columns(n)).unwrap();
        assert_eq!(engine.document_blob(id).unwrap(), bytes, "document {n} read right after writing");
        assert_eq!(engine.document_blob_now(id).unwrap().unwrap().value, bytes, "non-blocking read of document {n}");
        let input = engine.add_input(id, &Value::Int(n as i64)).unwrap();
        engine.set_output(id, input, &Value::Str(format!("out {n}"))).unwrap();
        written.push((id, input, bytes));
    }
    assert!(engine.stats().segments >= 3, "the test must cross segment rotations");
    let check = |engine: &Engine| {
        for (n, (id, input, bytes)) in written.iter().enumerate() {
            assert_eq!(&engine.document_blob(*id).unwrap(), bytes, "document {n}");
            assert_eq!(engine.input(*id, *input).unwrap(), Value::Int(n as i64));
            assert_eq!(engine.output(*id, *input).unwrap(), Value::Str(format!("out {n}")));
        }
    };
    check(&engine);
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    check(&engine);
}

/// The non-blocking variants give the same answers as the blocking ones,
/// including "not found".
#[test]
fn non_blocking_reads_agree_with_blocking_reads() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    let doc = engine.create_document(b"<p>hello</p>", columns(1)).unwrap();
    let input = engine.add_input(doc, &Value::IntList(vec![1, 2, 3])).unwrap();
    let bare = engine.add_input(doc, &Value::Str("no output".into())).unwrap();
    engine.set_output(doc, input, &Value::Double(2.5)).unwrap();

    // A non-blocking read never maps a file (mmap can wait): until a
    // blocking read has mapped the segment, it gives up.
    assert!(engine.document_blob_now(doc).is_none(), "the segment is not mapped yet");
    assert_eq!(engine.document_blob(doc).unwrap(), b"<p>hello</p>");
    assert_eq!(engine.document_blob_now(doc).unwrap().unwrap().value, b"<p>hello</p>");
    assert_eq!(engine.document_columns_now(doc).unwrap().unwrap().value, columns(1));
    assert_eq!(engine.input_now(doc, input).unwrap().unwrap().value, Value::IntList(vec![1, 2, 3]));
    assert_eq!(engine.output_now(doc, input).unwrap().unwrap().value, Value::Double(2.5));

    let missing = doc + 1000;
    let not_found = |result: Option<Result<_, Error>>| match result {
        Some(Err(Error::NotFound(missing))) => missing,
        other => panic!("expected a NotFound answer, got {other:?}"),
    };
    assert_eq!(not_found(engine.document_blob_now(missing).map(|r| r.map(drop))), Missing::Document(missing));
    assert_eq!(not_found(engine.document_columns_now(missing).map(|r| r.map(drop))), Missing::Document(missing));
    assert_eq!(
        not_found(engine.input_now(doc, missing).map(|r| r.map(drop))),
        Missing::Input { document: doc, input: missing }
    );
    assert_eq!(
        not_found(engine.output_now(doc, bare).map(|r| r.map(drop))),
        Missing::Output { document: doc, input: bare }
    );
}

/// Records over 1 MiB are not checked and copied on an async worker: the
/// non-blocking read gives up on them even when they are in memory.
#[test]
fn non_blocking_reads_leave_large_records_to_the_blocking_path() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    let small = engine.create_document(&blob(1, (1 << 20) - 100), columns(1)).unwrap();
    let large = engine.create_document(&blob(2, (1 << 20) + 100), columns(2)).unwrap();
    assert_eq!(engine.document_blob(large).unwrap().len(), (1 << 20) + 100);
    assert!(engine.document_blob_now(large).is_none(), "a record over 1 MiB");
    assert_eq!(
        engine.document_blob_now(small).unwrap().unwrap().value,
        blob(1, (1 << 20) - 100),
        "a record under 1 MiB"
    );
}

/// A damaged record is never answered from the non-blocking path: it gives
/// up, and the blocking read reports the damage with the file and offset.
#[test]
fn non_blocking_reads_leave_damage_to_the_blocking_read() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    let doc = engine.create_document(&blob(0, 4096), columns(0)).unwrap();
    let input = engine.add_input(doc, &Value::Str("value".into())).unwrap();
    let active = std::fs::OpenOptions::new().write(true).open(dir.path().join(ACTIVE_NAME)).unwrap();
    // A byte in the middle of the blob: the record's checksum no longer holds.
    active.write_all_at(b"X", 2048).unwrap();

    assert!(engine.document_blob_now(doc).is_none(), "a damaged blob must not be answered without waiting");
    match engine.document_blob(doc) {
        Err(Error::Corrupt { file, .. }) => assert!(file.ends_with(ACTIVE_NAME), "{file:?}"),
        other => panic!("expected a Corrupt error, got {:?}", other.map(|b| b.len())),
    }
    // The other record is untouched, and still answered from memory.
    assert_eq!(engine.input_now(doc, input).unwrap().unwrap().value, Value::Str("value".into()));
}

/// Files that cannot be mapped (the simulated file system) never answer a
/// record read without waiting, but the index-only answers still come.
#[test]
fn unmapped_files_send_reads_to_the_blocking_path() {
    let fs = Arc::new(SimFileSystem::new());
    let engine = Engine::open_with(fs, "/data", options()).unwrap();
    let doc = engine.create_document(b"blob", columns(2)).unwrap();
    let input = engine.add_input(doc, &Value::Int(7)).unwrap();

    assert!(engine.document_blob_now(doc).is_none());
    assert!(engine.input_now(doc, input).is_none());
    assert_eq!(engine.document_blob(doc).unwrap(), b"blob");
    assert_eq!(engine.input(doc, input).unwrap(), Value::Int(7));
    assert_eq!(engine.document_columns_now(doc).unwrap().unwrap().value, columns(2));
    assert!(matches!(engine.document_blob_now(doc + 99), Some(Err(Error::NotFound(_)))));
}

/// A whole document is read without waiting when all of its records are
/// in memory and add up to at most 1 MiB, and agrees with the blocking
/// read; otherwise the non-blocking read gives up.
#[test]
fn a_whole_document_is_read_without_waiting_only_when_small_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    let inputs = [(Value::Int(1), Some(Value::Str("one".into()))), (Value::IntList(vec![2, 3]), None)];
    let doc = engine.import_document(b"<p>whole</p>", &columns(3), &inputs).unwrap().created[0].unwrap();
    assert!(engine.document_now(doc).is_none(), "the segment is not mapped yet");
    let whole = engine.document(doc).unwrap();
    assert_eq!(engine.document_now(doc).unwrap().unwrap(), whole);
    assert_eq!(whole.inputs.len(), 2);
    assert!(matches!(engine.document_now(doc + 1000), Some(Err(Error::NotFound(Missing::Document(_))))));

    let big = [(Value::Str("x".repeat(600 << 10)), Some(Value::Str("y".repeat(600 << 10))))];
    let large = engine.import_document(b"<p>large</p>", &columns(4), &big).unwrap().created[0].unwrap();
    assert_eq!(engine.document(large).unwrap().inputs[0].value, big[0].0);
    assert!(engine.document_now(large).is_none(), "records over 1 MiB in all");
}
