//! The engine against the model, over a simulated file system that loses
//! power: random operations, power cuts between and inside operations (and
//! inside recovery), then a restart. After every restart the engine must
//! hold exactly the model's state after some prefix of the operations, and
//! that prefix must include every write acknowledged as durable.

mod support;

use proptest::prelude::*;
use stratum_io::{Options, SyncPolicy};
use support::harness::Harness;
use support::{Op, cases};

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
