//! The engine against the model on the real file system, in a temporary
//! directory: random operations with clean reopens in between.

mod support;

use proptest::prelude::*;
use stratum_io::{CompactionPolicy, CompactionSettings, Engine, Options, SyncPolicy};
use stratum_model::Model;
use support::{Issued, Op, cases, check_counts, check_versions, read_back, resume_ids, run_engine, run_model};

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![30 => support::op().prop_map(Step::Op), 1 => Just(Step::Reopen)]
}

fn options() -> impl Strategy<Value = Options> {
    let sync = prop_oneof![
        1 => Just(SyncPolicy::Always),
        3 => Just(SyncPolicy::None),
        1 => Just(SyncPolicy::Interval(std::time::Duration::from_millis(1)))
    ];
    let segment_bytes = prop_oneof![Just(64u64), Just(1024), Just(1 << 20)];
    // Sometimes a background compactor that runs whenever there is garbage,
    // racing the operations.
    let eager = CompactionSettings {
        interval: std::time::Duration::from_millis(1),
        policy: CompactionPolicy { min_garbage_bytes: 0, min_garbage_ratio: 0.0 },
    };
    let compaction = prop_oneof![Just(None), Just(Some(eager))];
    (sync, segment_bytes, compaction).prop_map(|(sync, segment_bytes, compaction)| Options {
        sync,
        segment_bytes,
        compaction,
        ..Options::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(150), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_on_disk_across_reopens(options in options(), steps in prop::collection::vec(step(), 1..50)) {
        let dir = tempfile::tempdir()?;
        let mut engine = Engine::open(dir.path(), options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = Model::new();
        let mut issued = Issued::default();
        for step in steps.iter().chain([Step::Reopen].iter()) {
            match step {
                Step::Op(op) => {
                    let before = model.clone();
                    let expected = run_model(&mut model, &issued, op);
                    let got = run_engine(&engine, &issued, op).map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                    prop_assert_eq!(&got, &expected, "answers differ for {:?}", op);
                    check_versions(&engine, &before, &mut model, &issued, op, &expected)?;
                    issued.note(op, &expected);
                    check_counts(&engine, &model)?;
                }
                Step::Reopen => {
                    engine.close().map_err(|e| TestCaseError::fail(e.to_string()))?;
                    engine = Engine::open(dir.path(), options).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    resume_ids(&engine, &mut model, &issued)?;
                    let state = read_back(&engine).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(state, model.clone());
                }
            }
        }
    }
}
