//! The harness the model-checked fault suites share: an engine over a
//! simulated file system, the model, and the states a restart may recover
//! to. Each operation's answer is checked against the rule the engine
//! promises: an answer is the model's; an error changed nothing, except
//! `OutcomeUnknown`, whose write may or may not survive; and after a
//! restart the engine holds one of the allowed states.

use proptest::prelude::*;
use stratum_io::{Engine, Error, Faults, Options, SimFileSystem, SyncPolicy};
use stratum_model::Model;

use super::{Answer, Issued, Op, check_counts, check_versions, read_back, resume_ids, run_engine, run_model};

pub const DIR: &str = "/data";

pub struct Harness {
    pub fs: SimFileSystem,
    pub options: Options,
    pub engine: Option<Engine>,
    pub model: Model,
    pub issued: Issued,
    /// States the engine may recover to, oldest first: the first is durable
    /// for sure, the others follow writes that were not yet synced.
    pub candidates: Vec<Model>,
}

impl Harness {
    pub fn new(options: Options) -> Self {
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

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    /// Records that the model's current state was acknowledged.
    /// (A read acknowledges nothing: the model may hold a write whose
    /// outcome is unknown, which a successful read does not make durable.)
    pub fn acknowledged(&mut self, op: &Op) {
        let always = self.options.sync == SyncPolicy::Always;
        if (always && op.writes()) || matches!(op, Op::Flush) {
            self.candidates = vec![self.model.clone()];
        } else if op.writes() {
            self.candidates.push(self.model.clone());
        }
    }

    pub fn run_op(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.model.clone();
        let expected = run_model(&mut self.model, &self.issued, op);
        let got = run_engine(self.engine(), &self.issued, op)
            .map_err(|e| TestCaseError::fail(format!("{op:?} failed: {e}")))?;
        prop_assert_eq!(&got, &expected, "answers differ for {:?}", op);
        self.observe(&before, op, &expected)?;
        self.issued.note(op, &expected);
        self.acknowledged(op);
        check_counts(self.engine(), &self.model)
    }

    /// Checks and records the versions after `op` answered `answer`.
    fn observe(&mut self, before: &Model, op: &Op, answer: &Answer) -> Result<(), TestCaseError> {
        let engine = self.engine.as_ref().expect("engine is open");
        check_versions(engine, before, &mut self.model, &self.issued, op, answer)
    }

    /// Runs `op` with the power cut `after` mutating calls in. The write may
    /// or may not survive; it is acknowledged only if the engine said so.
    pub fn run_op_with_cut(&mut self, op: &Op, after: u8) -> Result<(), TestCaseError> {
        self.run_op_with_faults(op, |f| f.power_cut_after = Some(u64::from(after)))
    }

    /// Runs `op` with the faults `arm` sets (left armed afterwards) and
    /// checks its answer against the rule: the model's answer; or
    /// `OutcomeUnknown` (the write is visible now, and may or may not
    /// survive a restart); or any other error, which changed nothing.
    pub fn run_op_with_faults(&mut self, op: &Op, arm: impl FnOnce(&mut Faults)) -> Result<(), TestCaseError> {
        self.fs.faults(arm);
        let before = self.model.clone();
        let mut model = self.model.clone();
        let expected = run_model(&mut model, &self.issued, op);
        match run_engine(self.engine(), &self.issued, op) {
            Ok(got) => {
                prop_assert_eq!(&got, &expected, "answers differ for {:?}", op);
                self.model = model;
                self.observe(&before, op, &expected)?;
                self.issued.note(op, &expected);
                self.acknowledged(op);
            }
            Err(Error::OutcomeUnknown { .. }) => {
                // Appended and applied, then its fsync failed: it is
                // visible now, and may or may not have reached the disk.
                if op.writes() {
                    self.model = model;
                    self.observe(&before, op, &expected)?;
                    self.candidates.push(self.model.clone());
                }
                self.issued.note_possible(op, &expected);
            }
            Err(Error::Io { .. } | Error::Poisoned { .. }) => {
                // Any other error changed nothing: not now, and (since it
                // is no candidate) not after the crash either.
                // (Read with the faults off: the simulated disk refuses
                // reads too once it fails; reading changes nothing.)
                let armed = self.fs.faults(std::mem::take);
                let now = read_back(self.engine());
                self.fs.faults(|f| *f = armed);
                let now = now.map_err(|e| TestCaseError::fail(format!("reading back after a failed {op:?}: {e}")))?;
                prop_assert_eq!(&now, &self.model, "{:?} failed, yet changed what is visible", op);
                self.issued.note_possible(op, &expected);
            }
            Err(e) => return Err(TestCaseError::fail(format!("{op:?} failed unexpectedly: {e}"))),
        }
        Ok(())
    }

    /// Cuts the power, builds the crash image and restarts on it.
    pub fn crash(&mut self, seed: u64, recovery_cut: Option<u8>) -> Result<(), TestCaseError> {
        self.fs.faults(|f| f.power_is_cut = true);
        drop(self.engine.take());
        let image = self.fs.crash(seed);
        self.recover_on(image, seed, recovery_cut)
    }

    /// Disarms every fault, drops the engine (a failing final flush is
    /// only logged) and restarts on the same file system, as a restart of
    /// the process on a disk that works again would.
    pub fn restart_without_crash(&mut self) -> Result<(), TestCaseError> {
        self.fs.faults(|f| *f = Faults::default());
        drop(self.engine.take());
        let image = self.fs.clone();
        self.recover_on(image, 0, None)
    }

    /// Recovers on `image`, checks the state found is an allowed one and
    /// goes on from it.
    fn recover_on(
        &mut self,
        mut image: SimFileSystem,
        seed: u64,
        recovery_cut: Option<u8>,
    ) -> Result<(), TestCaseError> {
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

    pub fn open(&self, fs: &SimFileSystem) -> Result<Engine, TestCaseError> {
        Engine::open_with(std::sync::Arc::new(fs.clone()), DIR, self.options)
            .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))
    }

    pub fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.engine.take().expect("engine is open").close().map_err(|e| TestCaseError::fail(e.to_string()))?;
        self.engine = Some(self.open(&self.fs)?);
        resume_ids(self.engine.as_ref().expect("engine is open"), &mut self.model, &self.issued)?;
        self.candidates = vec![self.model.clone()];
        prop_assert_eq!(read_back(self.engine()).map_err(|e| TestCaseError::fail(e.to_string()))?, self.model.clone());
        Ok(())
    }
}
