//! `choose_compaction`: whether a check, under its trigger, compacts.

use proptest::collection::vec;
use proptest::prelude::*;
use stratum_core::{CompactionChoice, CompactionPolicy, SegmentUsage, Trigger, choose_compaction};

/// One segment's usage: live bytes never above total bytes. Small sizes
/// make ties with the thresholds likely; large ones stay clear of
/// overflowing the sums.
fn arb_usage() -> impl Strategy<Value = SegmentUsage> {
    let total = prop_oneof![0u64..=200, 0u64..=1 << 40];
    let live = prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64];
    (total, live, 0u64..100).prop_map(|(total_bytes, live, records)| SegmentUsage {
        total_bytes,
        live_bytes: ((total_bytes as f64 * live) as u64).min(total_bytes),
        records,
    })
}

fn arb_policy() -> impl Strategy<Value = CompactionPolicy> {
    let bytes = prop_oneof![Just(0), Just(1), 0u64..=400, any::<u64>()];
    let ratio = prop_oneof![Just(0.0), Just(0.5), Just(1.0), 0.0..=1.0f64];
    (bytes, ratio)
        .prop_map(|(min_garbage_bytes, min_garbage_ratio)| CompactionPolicy { min_garbage_bytes, min_garbage_ratio })
}

/// Usage and a policy, which often sits right at the usage's garbage
/// bytes or garbage share, where `>=` and `>` part.
fn arb_usage_and_policy() -> impl Strategy<Value = (Vec<SegmentUsage>, CompactionPolicy)> {
    (vec(arb_usage(), 0..6), arb_policy(), -1i64..=1, any::<bool>(), any::<bool>()).prop_map(
        |(usage, policy, delta, at_bytes, at_ratio)| {
            let (total, garbage) = sums(&usage);
            let mut policy = policy;
            if at_bytes {
                policy.min_garbage_bytes = garbage.saturating_add_signed(delta);
            }
            if at_ratio && total > 0 {
                policy.min_garbage_ratio = garbage as f64 / total as f64;
            }
            (usage, policy)
        },
    )
}

fn arb_trigger() -> impl Strategy<Value = Trigger> {
    prop_oneof![Just(Trigger::Now), arb_policy().prop_map(Trigger::Policy)]
}

/// (total, garbage) bytes, summed here.
fn sums(usage: &[SegmentUsage]) -> (u64, u64) {
    let total = usage.iter().map(|u| u.total_bytes).sum();
    let garbage = usage.iter().map(|u| u.total_bytes - u.live_bytes).sum();
    (total, garbage)
}

fn merge_all(yes: bool) -> CompactionChoice {
    if yes { CompactionChoice::MergeAll } else { CompactionChoice::DoNothing }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// An explicit request compacts whenever there is any garbage.
    #[test]
    fn compact_now_merges_iff_there_is_garbage(usage in vec(arb_usage(), 0..6)) {
        let (_, garbage) = sums(&usage);
        prop_assert_eq!(choose_compaction(&usage, Trigger::Now), merge_all(garbage > 0));
    }

    /// The periodic check follows its policy: enough garbage bytes, and a
    /// large enough share of all bytes.
    #[test]
    fn the_periodic_check_follows_its_policy((usage, policy) in arb_usage_and_policy()) {
        let (total, garbage) = sums(&usage);
        let worth_it =
            garbage > 0 && garbage >= policy.min_garbage_bytes && garbage as f64 >= policy.min_garbage_ratio * total as f64;
        prop_assert_eq!(policy.should_compact(&usage), worth_it);
        prop_assert_eq!(choose_compaction(&usage, Trigger::Policy(policy)), merge_all(worth_it));
    }

    /// Whatever asked, a store without garbage is left alone.
    #[test]
    fn nothing_is_merged_without_garbage(usage in vec(arb_usage(), 0..6), trigger in arb_trigger()) {
        let usage: Vec<SegmentUsage> = usage.into_iter().map(|u| SegmentUsage { live_bytes: u.total_bytes, ..u }).collect();
        prop_assert_eq!(choose_compaction(&usage, trigger), CompactionChoice::DoNothing);
    }

    /// A policy check never compacts when an explicit request would not.
    #[test]
    fn a_policy_never_compacts_more_than_a_request((usage, policy) in arb_usage_and_policy()) {
        if choose_compaction(&usage, Trigger::Policy(policy)) == CompactionChoice::MergeAll {
            prop_assert_eq!(choose_compaction(&usage, Trigger::Now), CompactionChoice::MergeAll);
        }
    }
}

#[test]
fn examples() {
    let usage = |total, live| SegmentUsage { total_bytes: total, live_bytes: live, records: 1 };
    let zero = CompactionPolicy { min_garbage_bytes: 0, min_garbage_ratio: 0.0 };
    assert_eq!(choose_compaction(&[], Trigger::Now), CompactionChoice::DoNothing);
    assert_eq!(choose_compaction(&[], Trigger::Policy(zero)), CompactionChoice::DoNothing);
    assert_eq!(choose_compaction(&[usage(100, 100)], Trigger::Policy(zero)), CompactionChoice::DoNothing);
    assert_eq!(choose_compaction(&[usage(100, 99)], Trigger::Now), CompactionChoice::MergeAll);
    assert_eq!(choose_compaction(&[usage(100, 99)], Trigger::Policy(zero)), CompactionChoice::MergeAll);
    // One byte of garbage in 100 is not worth it under the default policy.
    let default = Trigger::Policy(CompactionPolicy::default());
    assert_eq!(choose_compaction(&[usage(100, 99)], default), CompactionChoice::DoNothing);
    // Garbage spread over segments adds up: 100 of 200 bytes.
    let half = CompactionPolicy { min_garbage_bytes: 100, min_garbage_ratio: 0.5 };
    let spread = [usage(100, 50), usage(100, 50)];
    assert_eq!(choose_compaction(&spread, Trigger::Policy(half)), CompactionChoice::MergeAll);
    assert_eq!(choose_compaction(&spread[..1], Trigger::Policy(half)), CompactionChoice::DoNothing);
}
