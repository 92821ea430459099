//! Whole documents under concurrency, on the real file system: readers of
//! whole documents, while writers replace chains, move inputs, import new
//! documents and compactions run, never see a partial import, a mix of two
//! chains, or a version that does not match the data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use stratum_io::{
    CompactionPolicy, CompactionSettings, DocumentView, Engine, Error, Expect, Id, Missing, Op, Options, Place, Ref,
    SyncPolicy, Value,
};

/// Chains the replacer writes, and documents the importer writes.
const GENERATIONS: i64 = 1500;
const IMPORTS: usize = 1500;

/// How many inputs generation `g` of the replaced chain has.
fn count(generation: i64) -> usize {
    3 + (generation % 5) as usize
}

/// Generation `g`'s chain: each input names its generation and index, and
/// its output the generation again.
fn chain(generation: i64) -> Vec<(Value, Option<Value>)> {
    (0..count(generation)).map(|i| (Value::IntList(vec![generation, i as i64]), Some(Value::Int(generation)))).collect()
}

/// Checks one read of the replaced document: a single generation, all of
/// its inputs (in some order: the mover moves them), each with its output.
fn check_generation(view: &DocumentView) -> i64 {
    assert!(!view.inputs.is_empty(), "an empty chain: a replace seen halfway: {view:?}");
    let Value::IntList(first) = &view.inputs[0].value else { panic!("unexpected value {:?}", view.inputs[0]) };
    let generation = first[0];
    assert_eq!(
        view.inputs.len(),
        count(generation),
        "a chain of generation {generation} with the wrong count: {view:?}"
    );
    let mut indexes: Vec<i64> = view
        .inputs
        .iter()
        .map(|input| {
            let Value::IntList(v) = &input.value else { panic!("unexpected value {input:?}") };
            assert_eq!(v[0], generation, "two generations mixed in one read: {view:?}");
            assert_eq!(input.output, Some(Value::Int(generation)), "an output of another generation: {view:?}");
            v[1]
        })
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..count(generation) as i64).collect::<Vec<_>>(), "{view:?}");
    generation
}

/// What a version showed, so that another read of the same version can be
/// compared with it.
type Seen = Mutex<HashMap<(Id, u64), Vec<(Id, Value, Option<Value>)>>>;

fn same_version_same_data(seen: &Seen, view: &DocumentView) {
    let data: Vec<_> = view.inputs.iter().map(|i| (i.id, i.value.clone(), i.output.clone())).collect();
    let mut seen = seen.lock().unwrap();
    match seen.get(&(view.id, view.version)) {
        Some(earlier) => assert_eq!(earlier, &data, "version {} of {} read with two contents", view.version, view.id),
        None => {
            seen.insert((view.id, view.version), data);
        }
    }
}

#[test]
fn whole_reads_see_one_version_while_chains_are_replaced_moved_and_imported() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: SyncPolicy::None,
        segment_bytes: 16 << 10,
        compaction: Some(CompactionSettings {
            interval: std::time::Duration::from_millis(2),
            policy: CompactionPolicy { min_garbage_bytes: 1, min_garbage_ratio: 0.2 },
        }),
        ..Options::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), options).unwrap());
    let doc = engine.import_document(b"<p>replaced</p>", &Default::default(), &chain(0)).unwrap().created[0].unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Seen> = Arc::default();
    let imported: Arc<Mutex<Vec<(Id, usize)>>> = Arc::default();

    // The replacer: generation after generation, each guarded by the version
    // it read, retried when a move got in between.
    let replacer = thread::spawn({
        let engine = engine.clone();
        move || {
            for generation in 1..=GENERATIONS {
                loop {
                    let version = engine.document_version(doc).unwrap();
                    match engine.replace_inputs(doc, &chain(generation), Some(version)) {
                        Ok(_) => break,
                        Err(Error::VersionMismatch { current, .. }) => assert!(current > version),
                        Err(e) => panic!("replace failed: {e}"),
                    }
                }
            }
        }
    });
    // The mover: moves a random input of the current chain.
    let mover = thread::spawn({
        let (engine, stop) = (engine.clone(), stop.clone());
        move || {
            let (mut n, mut moved) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let view = engine.document(doc).unwrap();
                let ids: Vec<Id> = view.inputs.iter().map(|i| i.id).collect();
                let (input, anchor) = (ids[n as usize % ids.len()], ids[(n as usize * 7 + 1) % ids.len()]);
                let place = if input == anchor { Place::Start } else { Place::After(Ref::Id(anchor)) };
                let op = Op::MoveInput { document: Ref::Id(doc), input: Ref::Id(input), place };
                match engine.batch(&[op], &[Expect { document: doc, version: view.version }]) {
                    Ok(_) => moved += 1,
                    Err(Error::VersionMismatch { .. }) | Err(Error::NotFound(Missing::Input { .. })) => {}
                    Err(e) => panic!("move failed: {e}"),
                }
            }
            moved
        }
    });
    // The importer: new documents whose column says how many inputs they have.
    let importer = thread::spawn({
        let (engine, imported) = (engine.clone(), imported.clone());
        move || {
            for n in 0..IMPORTS {
                let inputs: Vec<_> =
                    (0..n % 7).map(|i| (Value::Int(i as i64), Some(Value::Int(-(i as i64))))).collect();
                let columns = [("count".to_string(), inputs.len().to_string())].into();
                let id = engine.import_document(b"<p>new</p>", &columns, &inputs).unwrap().created[0].unwrap();
                imported.lock().unwrap().push((id, inputs.len()));
            }
        }
    });

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, stop, seen) = (engine.clone(), stop.clone(), seen.clone());
            thread::spawn(move || {
                let (mut last_version, mut last_generation, mut reads) = (0, 0, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let view = engine.document(doc).unwrap();
                    let generation = check_generation(&view);
                    assert!(view.version >= last_version, "a later read saw an older version");
                    assert!(generation >= last_generation, "a later read saw an older generation");
                    (last_version, last_generation) = (view.version, generation);
                    same_version_same_data(&seen, &view);
                    // Any document an import may be writing: absent, or whole.
                    let next = engine.stats().next_id;
                    for id in next.saturating_sub(20)..next + 5 {
                        match engine.document(id) {
                            Ok(view) if view.id != doc => {
                                let count: usize = view.columns["count"].parse().unwrap();
                                assert_eq!(view.inputs.len(), count, "a partial import: {view:?}");
                                same_version_same_data(&seen, &view);
                            }
                            Ok(_) | Err(Error::NotFound(_)) => {}
                            Err(e) => panic!("read failed: {e}"),
                        }
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    replacer.join().unwrap();
    importer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let moved = mover.join().unwrap();
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    // The race was run: reads, moves and compactions happened meanwhile.
    assert!(reads > 10 && moved > 10, "{reads} reads, {moved} moves");
    assert!(engine.stats().compactions > 0);

    // Everything is there after a restart too, versions included.
    let before: Vec<DocumentView> = engine.document_ids().into_iter().map(|id| engine.document(id).unwrap()).collect();
    assert_eq!(check_generation(&before[0]), GENERATIONS);
    assert_eq!(before.len(), 1 + imported.lock().unwrap().len());
    drop(Arc::into_inner(engine).expect("every thread has ended"));
    let engine = Engine::open(dir.path(), options).unwrap();
    let after: Vec<DocumentView> = engine.document_ids().into_iter().map(|id| engine.document(id).unwrap()).collect();
    assert_eq!(after, before);
}
