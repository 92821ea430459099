//! Bit rot: single-bit flips in every file of a store (the active segment,
//! sealed segments, the merged segment, hint files and the merged
//! snapshot), each on a copy of the cleanly closed store. Whatever the
//! flip, the store refuses to open (naming the damage), or opens and every
//! acknowledged value reads back as written or as a corruption error:
//! never a wrong value, never a missing document, input or output, never an
//! extra one.

mod support;

use std::path::Path;
use std::sync::Arc;

use stratum_io::{Engine, Error, FileSystem, Missing, Options, SimFileSystem, SyncPolicy, Value};
use stratum_model::Model;
use support::harness::Harness;
use support::{Op, Pick};

const DIR: &str = support::harness::DIR;

fn options() -> Options {
    Options { sync: SyncPolicy::Always, segment_bytes: 700, compaction: None, ..Options::default() }
}

/// A store with every kind of file: sealed segments with hints, a merged
/// segment with its snapshot, and an active segment; closed cleanly.
fn store() -> (SimFileSystem, Model) {
    let mut h = Harness::new(options());
    let columns = |n: u8| [("name".to_string(), format!("problem {n}"))].into();
    let mut ops = Vec::new();
    for n in 0..6u8 {
        ops.push(Op::Create { blob: vec![b'a' + n; 60], columns: columns(n) });
        for i in 0..3u8 {
            ops.push(Op::AddInput(Pick(n + 1), Value::IntList(vec![i64::from(n), i64::from(i)])));
            ops.push(Op::SetOutput(Pick(n + 1), Pick(3 * n + i + 1), Value::Str(format!("out {n} {i}"))));
        }
    }
    ops.extend([
        Op::UpdateBlob(Pick(1), vec![b'z'; 80]),
        Op::DeleteInput(Pick(2), Pick(5)),
        Op::Compact,
        Op::UpdateInput(Pick(3), Pick(7), Value::Double(0.5)),
        Op::SetColumn(Pick(4), "level".into(), "hard".into()),
        Op::DeleteOutput(Pick(5), Pick(13)),
    ]);
    // Enough after the compaction to seal a few segments.
    for n in 0..12u8 {
        ops.push(Op::AddInput(Pick(n % 6 + 1), Value::Str(format!("late {n} {}", "x".repeat(40)))));
    }
    ops.push(Op::WriteHints);
    for op in &ops {
        h.run_op(op).unwrap_or_else(|e| panic!("building the store: {op:?}: {e}"));
    }
    h.engine.take().expect("engine is open").close().expect("close");
    (h.fs, h.model)
}

/// Compares what the engine serves with `expected`: ids exactly, each
/// value equal or refused as corrupt. Returns how many reads were refused.
fn check_served(engine: &Engine, expected: &Model, context: &str) -> u64 {
    let mut refused = 0;
    let mut check = |what: &str, read: Result<(), String>| match read {
        Ok(()) => {}
        Err(e) if e.starts_with("corrupt") => refused += 1,
        Err(e) => panic!("{context}: {what}: {e}"),
    };
    fn compare<T: PartialEq + std::fmt::Debug>(got: Result<T, Error>, want: &T) -> Result<(), String> {
        match got {
            Ok(v) if v == *want => Ok(()),
            Ok(v) => Err(format!("WRONG VALUE: {v:?}, acknowledged {want:?}")),
            Err(e @ Error::Corrupt { .. }) => Err(format!("corrupt: {e}")),
            Err(e) => Err(format!("error: {e}")),
        }
    }
    // Every acknowledged input and output is found below (a missing one is
    // NOT_FOUND, which fails the check): equal counts mean no extra ones.
    assert_eq!(engine.document_ids(), expected.documents.keys().copied().collect::<Vec<_>>(), "{context}: documents");
    let stats = engine.stats();
    assert_eq!(
        (stats.inputs as usize, stats.outputs as usize),
        (expected.input_count(), expected.output_count()),
        "{context}: inputs and outputs"
    );
    for (&id, document) in &expected.documents {
        check("blob", compare(engine.document_blob(id), &document.blob));
        check("columns", compare(engine.document_columns(id), &document.columns));
        for &(input, ref node) in &document.inputs {
            check("input", compare(engine.input(id, input), &node.value));
            match (&node.output, engine.output(id, input)) {
                (None, Err(Error::NotFound(Missing::Output { .. }))) => {}
                (None, got) => panic!("{context}: an output appeared for input {input}: {got:?}"),
                (Some(want), got) => check("output", compare(got, want)),
            }
        }
    }
    refused
}

#[test]
fn no_single_bit_flip_in_any_file_serves_a_wrong_or_missing_value() {
    let (fs, expected) = store();
    let dir = Path::new(DIR);
    let mut names = fs.list(dir).unwrap();
    names.retain(|n| n != stratum_io::LOCK_NAME);
    names.sort();
    for kind in ["active.seg", "merged.seg", "merged.hint"] {
        assert!(names.contains(&kind.to_string()), "the store has no {kind}: {names:?}");
    }
    for kind in [".seg", ".hint"] {
        assert!(names.iter().any(|n| n.starts_with("seg_") && n.ends_with(kind)), "no sealed {kind}: {names:?}");
    }
    // The hints are used as they are: a flip in a segment they describe is
    // found by a read, not by a scan at open.
    let engine = Engine::open_with(Arc::new(fs.copy()), DIR, options()).unwrap();
    assert_eq!(engine.stats().hinted_segments as usize, names.iter().filter(|n| n.ends_with(".hint")).count());
    drop(engine);
    let stride = std::env::var("STRATUM_BITROT_STRIDE").ok().and_then(|s| s.parse().ok()).unwrap_or(3usize);
    for name in &names {
        let path = dir.join(name);
        let bytes = fs.contents(&path).unwrap();
        let (mut flips, mut refused_open, mut refused_reads) = (0, 0, 0);
        for at in (0..bytes.len()).step_by(stride) {
            let bit = (at * 5 + 3) % 8;
            let copy = fs.copy();
            {
                let file = copy.open(&path).unwrap();
                let mut byte = [bytes[at] ^ (1 << bit)];
                file.write_all_at(&byte, at as u64).unwrap();
                file.sync_data().unwrap();
                byte[0] = 0;
                file.read_exact_at(&mut byte, at as u64).unwrap();
                assert_ne!(byte[0], bytes[at]);
            }
            flips += 1;
            let context = format!("{name}: bit {bit} of byte {at} flipped");
            match Engine::open_with(Arc::new(copy.clone()), DIR, options()) {
                Ok(engine) => refused_reads += check_served(&engine, &expected, &context),
                Err(Error::Corrupt { file, .. }) => {
                    assert_eq!(file, path, "{context}: the refusal names another file");
                    refused_open += 1;
                }
                Err(e) => panic!("{context}: open failed with something other than corruption: {e}"),
            }
        }
        println!("{name}: {flips} flips, open refused {refused_open}, reads refused {refused_reads}");
    }
}
