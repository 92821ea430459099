//! The offline upgrade from segment format 2 (unsalted) or format 3 (no
//! batch frames) to format 4, on a format-2 store built here byte by byte
//! as that version wrote it, and on a format-3 store (a store of this
//! build whose headers are set back to version 3: format 3's records are a
//! subset of format 4's).

use std::fs;
use std::path::Path;

use stratum_core::{FORMAT_VERSION, Mutation, Salt, SegmentHeader, SegmentId, UNSALTED_HEADER_LEN, encode_record};
use stratum_io::{ACTIVE_NAME, Columns, Engine, Error, Options, Value, sealed_name, upgrade};

/// A format-2 segment header: magic, version 2, reserved, id, CRC-32 of
/// the 16 bytes before it.
fn v2_header(segment: u32) -> Vec<u8> {
    let mut h = b"STRATSEG".to_vec();
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&[0; 2]);
    h.extend_from_slice(&segment.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Writes a format-2 store into `dir`: a sealed segment with a document,
/// two inputs and an output (and a hint file beside it), and an active
/// segment that updates one input and adds a second document. Returns the
/// active segment's bytes.
fn write_v2_store(dir: &Path) -> Vec<u8> {
    let columns: Columns = [("title".to_string(), "A + B".to_string())].into();
    let none = Columns::new();
    let mut sealed = v2_header(1);
    let unsalted = Salt::UNSALTED;
    encode_record(&mut sealed, &unsalted, 1, 0, &Mutation::ReserveIds { below: 1000 });
    encode_record(&mut sealed, &unsalted, 2, 1, &Mutation::CreateDocument { columns: &columns, blob: b"<p>sum</p>" });
    let one = Value::Str("1 2".into());
    encode_record(&mut sealed, &unsalted, 3, 2, &Mutation::PutInput { document: 1, value: &one });
    let three = Value::Int(3);
    encode_record(&mut sealed, &unsalted, 4, 2, &Mutation::PutOutput { document: 1, value: &three });
    let two = Value::IntList(vec![5, 6]);
    encode_record(&mut sealed, &unsalted, 5, 3, &Mutation::PutInput { document: 1, value: &two });
    fs::write(dir.join(sealed_name(SegmentId::FIRST)), &sealed).unwrap();
    fs::write(dir.join("seg_001.hint"), b"STRATHNT a format-2 hint").unwrap();

    let mut active = v2_header(2);
    let updated = Value::Str("10 20".into());
    encode_record(&mut active, &unsalted, 6, 2, &Mutation::PutInput { document: 1, value: &updated });
    encode_record(&mut active, &unsalted, 7, 4, &Mutation::CreateDocument { columns: &none, blob: b"second" });
    fs::write(dir.join(ACTIVE_NAME), &active).unwrap();
    active
}

/// What the format-2 store holds, read through an engine.
fn check_contents(engine: &Engine) {
    assert_eq!(engine.document_ids()[..2], [1, 4]);
    assert_eq!(engine.document_blob(1).unwrap(), b"<p>sum</p>");
    assert_eq!(engine.document_columns(1).unwrap()["title"], "A + B");
    assert_eq!(engine.inputs(1).unwrap(), vec![(2, Value::Str("10 20".into())), (3, Value::IntList(vec![5, 6]))]);
    assert_eq!(engine.output(1, 2).unwrap(), Value::Int(3));
    assert_eq!(engine.document_blob(4).unwrap(), b"second");
}

fn format_of(path: &Path) -> u16 {
    u16::from_le_bytes(fs::read(path).unwrap()[8..10].try_into().unwrap())
}

#[test]
fn a_format_2_store_is_refused_until_upgraded_then_opens_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    write_v2_store(dir.path());

    let err = Engine::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "got {err:?}");
    assert!(err.to_string().contains("version 2") && err.to_string().contains("--upgrade"), "{err}");

    let report = upgrade(&stratum_io::OsFileSystem, dir.path()).unwrap();
    assert_eq!(report.rewritten.len(), 2);
    assert_eq!(report.records, 7);
    assert_eq!(report.hints_removed, 1);
    assert_eq!(report.cut_tail, None);
    assert!(!dir.path().join("seg_001.hint").exists());
    for name in [sealed_name(SegmentId::FIRST), ACTIVE_NAME.to_string()] {
        let path = dir.path().join(&name);
        assert_eq!(format_of(&path), FORMAT_VERSION, "{name}");
        let header = SegmentHeader::decode(&fs::read(&path).unwrap()).unwrap();
        assert_ne!(header.salt, Salt::UNSALTED);
    }

    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    check_contents(&engine);
    // Ids go on above the format-2 reservation.
    assert!(engine.create_document(b"new", Columns::new()).unwrap() >= 1000);
    engine.close().unwrap();

    // A second run (after a crash of the first, say) changes nothing.
    let again = upgrade(&stratum_io::OsFileSystem, dir.path()).unwrap();
    assert!(again.rewritten.is_empty());
    assert_eq!(again.already_current.len(), 2);
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    check_contents(&engine);
}

#[test]
fn a_torn_tail_of_the_format_2_active_segment_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut active = write_v2_store(dir.path());
    let whole = active.len() as u64;
    let mut torn = Vec::new();
    let big = Value::Str("x".repeat(500));
    encode_record(&mut torn, &Salt::UNSALTED, 8, 5, &Mutation::PutInput { document: 4, value: &big });
    active.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(dir.path().join(ACTIVE_NAME), &active).unwrap();

    let report = upgrade(&stratum_io::OsFileSystem, dir.path()).unwrap();
    assert_eq!(report.cut_tail, Some((whole, (torn.len() / 2) as u64)));
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    check_contents(&engine);
    assert!(engine.inputs(4).unwrap().is_empty());
}

#[test]
fn damage_in_a_format_2_sealed_segment_stops_the_upgrade_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_v2_store(dir.path());
    let sealed = dir.path().join(sealed_name(SegmentId::FIRST));
    let mut bytes = fs::read(&sealed).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    fs::write(&sealed, &bytes).unwrap();

    let err = upgrade(&stratum_io::OsFileSystem, dir.path()).unwrap_err();
    let Error::Corrupt { file, .. } = &err else { panic!("expected corruption, got {err:?}") };
    assert_eq!(file, &sealed);
    assert_eq!(fs::read(&sealed).unwrap(), bytes, "the damaged segment was changed");
    assert_eq!(format_of(&dir.path().join(ACTIVE_NAME)), 2, "the upgrade went on past the damage");
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Damage in the middle of a format-2 `active.seg` (a whole, newer record
/// after the bad one) is refused, as the format-2 server refused it, and
/// nothing is changed: no file is rewritten, not even the older ones.
#[test]
fn damage_in_the_middle_of_a_format_2_active_segment_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let active = write_v2_store(dir.path());
    let path = dir.path().join(ACTIVE_NAME);
    let mut damaged = active.clone();
    // The first record after the header: the update of input 2.
    damaged[UNSALTED_HEADER_LEN + 30] ^= 0x04;
    fs::write(&path, &damaged).unwrap();
    let before: Vec<_> =
        ["seg_001.seg", "seg_001.hint", ACTIVE_NAME].iter().map(|n| fs::read(dir.path().join(n)).unwrap()).collect();

    let err = upgrade(&stratum_io::OsFileSystem, dir.path()).unwrap_err();
    let Error::Corrupt { file, offset, .. } = &err else { panic!("expected corruption, got {err:?}") };
    assert_eq!((file, *offset), (&path, UNSALTED_HEADER_LEN as u64));
    assert!(err.to_string().contains("not a torn write"), "{err}");
    let after: Vec<_> =
        ["seg_001.seg", "seg_001.hint", ACTIVE_NAME].iter().map(|n| fs::read(dir.path().join(n)).unwrap()).collect();
    assert_eq!(after, before, "a file changed although the upgrade refused");
}

/// Sets a segment file's header back to format 3 (the version field and
/// the header checksum: format 3's header is format 4's otherwise).
fn set_format_3(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_format_3_store_is_refused_until_upgraded_then_opens_with_everything_and_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { segment_bytes: 200, ..Options::default() };
    let (doc, inputs) = {
        let engine = Engine::open(dir.path(), options).unwrap();
        let doc = engine.create_document(b"<p>three</p>", Columns::new()).unwrap();
        let inputs: Vec<_> = (0..6).map(|n| engine.add_input(doc, &Value::Int(n)).unwrap()).collect();
        engine.set_output(doc, inputs[2], &Value::Str("two".into())).unwrap();
        engine.write_hints().unwrap();
        engine.close().unwrap();
        (doc, inputs)
    };
    let segments: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(segments.len() >= 2, "{segments:?}");
    let before: Vec<Vec<u8>> = segments.iter().map(|p| fs::read(p).unwrap()).collect();
    for path in &segments {
        set_format_3(path);
    }

    let err = Engine::open(dir.path(), options).unwrap_err();
    assert!(err.to_string().contains("version 3") && err.to_string().contains("--upgrade"), "{err}");

    let report = upgrade(&stratum_io::OsFileSystem, dir.path()).unwrap();
    assert_eq!(report.rewritten.len(), segments.len());
    assert!(report.hints_removed >= 1);
    // Only the version field and the header checksum changed back.
    for (path, old) in segments.iter().zip(&before) {
        assert_eq!(&fs::read(path).unwrap(), old, "{}", path.display());
    }
    let engine = Engine::open(dir.path(), options).unwrap();
    assert_eq!(engine.document_blob(doc).unwrap(), b"<p>three</p>");
    let values: Vec<_> = engine.inputs(doc).unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(values, inputs);
    assert_eq!(engine.output(doc, inputs[2]).unwrap(), Value::Str("two".into()));
}
