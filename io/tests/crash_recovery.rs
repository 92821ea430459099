//! The engine against the model, over a simulated file system that loses
//! power: random operations, power cuts between and inside operations (and
//! inside recovery), then a restart. After every restart the engine must
//! hold exactly the model's state after some prefix of the operations, and
//! that prefix must include every write acknowledged as durable.

mod support;

use proptest::prelude::*;
use stratum_io::{Engine, Error, Options, SimFileSystem, SyncPolicy};
use stratum_model::Model;
use support::{Issued, Op, cases, check_counts, read_back, resume_ids, run_engine, run_model};

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    /// Cut the power now, then restart. `recovery_cut` also cuts the power
    /// that many file-system calls into the first recovery.
    Crash {
        seed: u64,
        recovery_cut: Option<u8>,
    },
    /// Cut the power `after` mutating file-system calls into `op`, then restart.
    CrashDuring {
        op: Op,
        after: u8,
        seed: u64,
    },
    /// Close cleanly and reopen.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        40 => support::op().prop_map(Step::Op),
        2 => (any::<u64>(), prop::option::of(0u8..12)).prop_map(|(seed, recovery_cut)| Step::Crash { seed, recovery_cut }),
        3 => (support::op(), 0u8..24, any::<u64>()).prop_map(|(op, after, seed)| Step::CrashDuring { op, after, seed }),
        1 => Just(Step::Reopen),
    ]
}

fn options() -> impl Strategy<Value = Options> {
    let sync = prop_oneof![Just(SyncPolicy::Always), Just(SyncPolicy::None)];
    let segment_bytes = prop_oneof![Just(64u64), Just(300), Just(2048), Just(1 << 20)];
    (sync, segment_bytes).prop_map(|(sync, segment_bytes)| Options {
        sync,
        segment_bytes,
        compaction: None,
        ..Options::default()
    })
}

const DIR: &str = "/data";

struct Harness {
    fs: SimFileSystem,
    options: Options,
    engine: Option<Engine>,
    model: Model,
    issued: Issued,
    /// States the engine may recover to, oldest first: the first is durable
    /// for sure, the others follow writes that were not yet synced.
    candidates: Vec<Model>,
}

impl Harness {
    fn new(options: Options) -> Self {
        let fs = SimFileSystem::new();
        let engine = Engine::open_with(std::sync::Arc::new(fs.clone()), DIR, options).expect("open a new store");
        Harness {
            fs,
            options,
            engine: Some(engine),
            model: Model::new(),
            issued: Issued::default(),
            candidates: vec![Model::new()],
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    /// Records that the model's current state was acknowledged.
    fn acknowledged(&mut self, op: &Op) {
        if self.options.sync == SyncPolicy::Always || matches!(op, Op::Flush) {
            self.candidates = vec![self.model.clone()];
        } else if op.writes() {
            self.candidates.push(self.model.clone());
        }
    }

    fn run_op(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let expected = run_model(&mut self.model, &self.issued, op);
        let got = run_engine(self.engine(), &self.issued, op)
            .map_err(|e| TestCaseError::fail(format!("{op:?} failed: {e}")))?;
        prop_assert_eq!(&got, &expected, "answers differ for {:?}", op);
        self.issued.note(op, &expected);
        self.acknowledged(op);
        check_counts(self.engine(), &self.model)
    }

    /// Runs `op` with the power cut `after` mutating calls in. The write may
    /// or may not survive; it is acknowledged only if the engine said so.
    fn run_op_with_cut(&mut self, op: &Op, after: u8) -> Result<(), TestCaseError> {
        self.fs.faults(|f| f.power_cut_after = Some(u64::from(after)));
        let mut model = self.model.clone();
        let expected = run_model(&mut model, &self.issued, op);
        match run_engine(self.engine(), &self.issued, op) {
            Ok(got) => {
                prop_assert_eq!(&got, &expected, "answers differ for {:?}", op);
                self.model = model;
                self.issued.note(op, &expected);
                self.acknowledged(op);
            }
            Err(Error::OutcomeUnknown { .. }) => {
                // Appended, then its fsync failed: it may or may not have
                // reached the disk.
                if op.writes() {
                    self.candidates.push(model);
                }
                self.issued.note_possible(op, &expected);
            }
            Err(Error::Io { .. } | Error::Poisoned { .. }) => {
                // Any other error changed nothing: not now, and (since it
                // is no candidate) not after the crash either.
                // (Read with the power back: the simulated disk refuses
                // reads too once it is cut; reading changes nothing.)
                let cut = self.fs.faults(|f| std::mem::replace(&mut f.power_is_cut, false));
                let now = read_back(self.engine());
                self.fs.faults(|f| f.power_is_cut = cut);
                let now = now.map_err(|e| TestCaseError::fail(format!("reading back after a failed {op:?}: {e}")))?;
                prop_assert_eq!(&now, &self.model, "{:?} failed, yet changed what is visible", op);
                self.issued.note_possible(op, &expected);
            }
            Err(e) => return Err(TestCaseError::fail(format!("{op:?} failed unexpectedly: {e}"))),
        }
        Ok(())
    }

    /// Cuts the power, builds the crash image and restarts on it.
    fn crash(&mut self, seed: u64, recovery_cut: Option<u8>) -> Result<(), TestCaseError> {
        self.fs.faults(|f| f.power_is_cut = true);
        drop(self.engine.take());
        let mut image = self.fs.crash(seed);

        let read = |engine: Engine| {
            read_back(&engine).map_err(|e| TestCaseError::fail(format!("reading back after recovery failed: {e}")))
        };
        let recovered = match recovery_cut {
            None => read(self.open(&image)?)?,
            Some(cut) => {
                // What recovery gives with no interruption, on a copy.
                let reference = read(self.open(&image.crash(0))?)?;
                image.faults(|f| f.power_cut_after = Some(u64::from(cut)));
                if let Ok(engine) = Engine::open_with(std::sync::Arc::new(image.clone()), DIR, self.options) {
                    image.faults(|f| f.power_is_cut = true);
                    drop(engine);
                }
                image = image.crash(seed.rotate_left(17));
                let again = read(self.open(&image)?)?;
                prop_assert_eq!(&again, &reference, "an interrupted recovery recovered differently");
                again
            }
        };

        // Ids are compared separately: after a restart the counter resumes
        // above every id that may have been handed out.
        let same_data = |m: &Model| m.documents == recovered.documents;
        let Some(found) = self.candidates.iter().position(same_data) else {
            return Err(TestCaseError::fail(format!(
                "recovered state matches none of the {} allowed states\nrecovered: {recovered:#?}\nallowed: {:#?}",
                self.candidates.len(),
                self.candidates
            )));
        };
        self.model = self.candidates[found].clone();
        self.fs = image;
        self.engine = Some(self.open(&self.fs)?);
        resume_ids(self.engine.as_ref().expect("engine is open"), &mut self.model, &self.issued)?;
        self.candidates = vec![self.model.clone()];
        check_counts(self.engine(), &self.model)
    }

    fn open(&self, fs: &SimFileSystem) -> Result<Engine, TestCaseError> {
        Engine::open_with(std::sync::Arc::new(fs.clone()), DIR, self.options)
            .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.engine.take().expect("engine is open").close().map_err(|e| TestCaseError::fail(e.to_string()))?;
        self.engine = Some(self.open(&self.fs)?);
        resume_ids(self.engine.as_ref().expect("engine is open"), &mut self.model, &self.issued)?;
        self.candidates = vec![self.model.clone()];
        prop_assert_eq!(read_back(self.engine()).map_err(|e| TestCaseError::fail(e.to_string()))?, self.model.clone());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4000), max_shrink_iters: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_across_power_cuts(options in options(), steps in prop::collection::vec(step(), 1..80)) {
        let mut h = Harness::new(options);
        for step in &steps {
            match step {
                Step::Op(op) => h.run_op(op)?,
                Step::Crash { seed, recovery_cut } => h.crash(*seed, *recovery_cut)?,
                Step::CrashDuring { op, after, seed } => {
                    h.run_op_with_cut(op, *after)?;
                    h.crash(*seed, None)?;
                }
                Step::Reopen => h.reopen()?,
            }
        }
        h.crash(0, None)?;
    }
}
