//! Every IO operation fails: for every N, a workload with rotations,
//! compactions and hint writes runs over a simulated disk whose Nth IO call
//! (reads included) fails, once or from then on, and whose failed fsyncs
//! drop their bytes as Linux's do. Every answer is checked against the
//! model as the engine promises (an answer is right; an error changed
//! nothing, except `OutcomeUnknown`), then the engine restarts, on the same
//! disk or after a power cut, and must hold one of the allowed states with
//! nothing acknowledged lost.

mod support;

use std::sync::Arc;

use stratum_io::{Engine, Options, SimFileSystem, SyncPolicy, Value};
use support::harness::Harness;
use support::{Op, Pick, read_back};

/// A workload of every kind of operation, over tiny segments so that it
/// rotates many times, with compactions and hint writes in the middle.
fn workload() -> Vec<Op> {
    let columns = |n: usize| [("name".to_string(), format!("problem {n}"))].into();
    let mut ops = Vec::new();
    for n in 0..4u8 {
        ops.push(Op::Create { blob: vec![b'a' + n; 40 + 30 * n as usize], columns: columns(n.into()) });
        for i in 0..3u8 {
            ops.push(Op::AddInput(Pick(n + 1), Value::IntList(vec![i64::from(n), i64::from(i)])));
        }
        ops.push(Op::SetOutput(Pick(n + 1), Pick(3 * n + 1), Value::Str(format!("out {n}"))));
        ops.push(Op::GetInputs(Pick(n + 1)));
    }
    ops.extend([
        Op::UpdateBlob(Pick(2), vec![b'z'; 90]),
        Op::UpdateInput(Pick(1), Pick(2), Value::Double(2.5)),
        Op::WriteHints,
        Op::DeleteInput(Pick(3), Pick(8)),
        Op::DeleteOutput(Pick(4), Pick(10)),
        Op::SetColumn(Pick(1), "level".into(), "hard".into()),
        Op::Compact,
        Op::GetBlob(Pick(2)),
        Op::GetOutput(Pick(1), Pick(1)),
        Op::DeleteDocument(Pick(4)),
        Op::Create { blob: b"after compaction".to_vec(), columns: columns(9) },
        Op::AddInput(Pick(5), Value::Str("new".into())),
        Op::UpdateOutput(Pick(1), Pick(1), Value::Int(7)),
        Op::Flush,
        Op::WriteHints,
        Op::Compact,
        Op::ListDocuments,
        Op::GetInputs(Pick(1)),
        Op::UpdateBlob(Pick(5), vec![b'y'; 60]),
        Op::GetColumns(Pick(1)),
    ]);
    ops
}

fn options(sync: SyncPolicy) -> Options {
    Options { sync, segment_bytes: 300, compaction: None, ..Options::default() }
}

/// IO calls the whole workload makes on a disk that never fails.
fn calls_without_faults(sync: SyncPolicy) -> u64 {
    let mut h = Harness::new(options(sync));
    let before = h.fs.io_calls();
    for op in &workload() {
        h.run_op(op).unwrap_or_else(|e| panic!("the workload fails without faults: {e}"));
    }
    h.fs.io_calls() - before
}

/// Runs the workload with IO call `n` (counted from the end of the open)
/// failing, once or for good, then restarts: after a power cut when
/// `power_cut`, on the same disk otherwise.
fn run_with_failure(sync: SyncPolicy, n: u64, persistent: bool, power_cut: bool) {
    let mut h = Harness::new(options(sync));
    h.fs.faults(|f| {
        f.fail_io_after = Some(n);
        f.fail_persistently = persistent;
    });
    let context = format!("sync {sync}, IO call {n} failing {}", if persistent { "for good" } else { "once" });
    for op in &workload() {
        // Armed above; each operation only checks its answer.
        if let Err(e) = h.run_op_with_faults(op, |_| {}) {
            panic!("{context}: {op:?}: {e}");
        }
    }
    let restarted = if power_cut { h.crash(n.rotate_left(7), None) } else { h.restart_without_crash() };
    if let Err(e) = restarted {
        panic!("{context}, restarted {}: {e}", if power_cut { "after a power cut" } else { "on the same disk" });
    }
    // And the store works again, on a disk that does, and what it
    // acknowledges now survives a power cut: a restart on the same disk
    // found bytes a failed fsync had dropped (still in the page cache), and
    // they must reach the disk before later marks say they did.
    for op in &workload()[..8] {
        h.run_op(op).unwrap_or_else(|e| panic!("{context}: after the restart, {op:?}: {e}"));
    }
    if let Err(e) = h.crash(n.rotate_left(11), None) {
        panic!("{context}: a power cut after the restart and more writes: {e}");
    }
}

#[test]
fn every_io_call_may_fail_once_or_for_good_and_no_answer_lies() {
    for sync in [SyncPolicy::Always, SyncPolicy::None] {
        let calls = calls_without_faults(sync);
        println!("sync {sync}: the workload makes {calls} IO calls; each fails in turn, once and for good");
        assert!(calls > 200, "a workload of {calls} IO calls is too small to mean much");
        for n in 0..calls {
            for (persistent, power_cut) in [(false, false), (false, true), (true, false), (true, true)] {
                run_with_failure(sync, n, persistent, power_cut);
            }
        }
    }
}

/// Recovery whose Nth IO call fails, once or for good, is an error or a
/// correct open, and never harms the store: opening again on a disk that
/// works gives exactly what was there. The store is left as the workload
/// and a clean close leave it (sealed segments, hints, a merged segment)
/// and then with a torn tail on `active.seg`, which recovery cuts.
#[test]
fn every_io_call_of_a_recovery_may_fail_and_the_store_is_unharmed() {
    let mut h = Harness::new(options(SyncPolicy::Always));
    for op in &workload() {
        h.run_op(op).unwrap_or_else(|e| panic!("the workload fails without faults: {e}"));
    }
    let expected = h.model.clone();
    h.engine.take().expect("engine is open").close().expect("close");
    let clean = h.fs.copy();
    // The same store with half a record appended to active.seg.
    let torn = clean.copy();
    let active = std::path::Path::new(DIR).join(stratum_io::ACTIVE_NAME);
    {
        use stratum_io::FileSystem;
        let file = torn.open(&active).unwrap();
        let len = file.len().unwrap();
        file.write_all_at(&[0x42; 30], len).unwrap();
    }
    for (name, store) in [("clean", clean), ("torn", torn)] {
        let calls = {
            let fs = store.copy();
            let before = fs.io_calls();
            drop(open(&fs).unwrap_or_else(|e| panic!("{name}: open fails without faults: {e}")));
            fs.io_calls() - before
        };
        for n in 0..calls {
            for persistent in [false, true] {
                let fs = store.copy();
                fs.faults(|f| {
                    f.fail_io_after = Some(n);
                    f.fail_persistently = persistent;
                });
                let context = format!("{name} store, IO call {n} of the open failing (for good: {persistent})");
                if let Ok(engine) = open(&fs) {
                    fs.faults(|f| f.fail_io_after = None);
                    let found = read_back(&engine).unwrap_or_else(|e| panic!("{context}: reading back: {e}"));
                    assert_eq!(found.documents, expected.documents, "{context}: opened with other data");
                }
                fs.faults(|f| f.fail_io_after = None);
                let engine = open(&fs).unwrap_or_else(|e| panic!("{context}: the next open fails: {e}"));
                let found = read_back(&engine).unwrap_or_else(|e| panic!("{context}: reading back: {e}"));
                assert_eq!(found.documents, expected.documents, "{context}: the failed open harmed the store");
            }
        }
    }
}

const DIR: &str = support::harness::DIR;

fn open(fs: &SimFileSystem) -> stratum_io::Result<Engine> {
    Engine::open_with(Arc::new(fs.clone()), DIR, options(SyncPolicy::Always))
}
