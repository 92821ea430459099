//! The engine's background threads: each runs a task at an interval until
//! it is stopped or the engine is gone.

use std::sync::Weak;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Shared;

/// A background thread that runs a task at an interval until stopped or
/// until the engine is gone.
#[derive(Debug)]
pub(super) struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Ticker {
    pub(super) fn start(
        name: &str,
        shared: Weak<Shared>,
        every: Duration,
        task: impl Fn(&Shared) + Send + 'static,
    ) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(shared) = shared.upgrade() else { return };
                    task(&shared);
                }
            })
            .expect("spawning a background thread");
        Ticker { stop, thread }
    }

    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// How a background task that keeps failing (on a full disk, say) backs
/// off: after a failure it skips its ticks for twice as long as after the
/// one before (from one tick up to [`MAX_BACKOFF`]), and says so once, not
/// on every tick; the first success after failures says so too.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
    next_try: Option<Instant>,
}

/// The longest a failing background task waits between tries.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a background task's outcome is worth telling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Told {
    /// Nothing new: a success as before, or another failure.
    Nothing,
    /// The first failure after successes: warn, once.
    FirstFailure,
    /// The first success after failures.
    Recovered {
        /// How many tries had failed.
        failures: u32,
    },
}

impl Backoff {
    /// Whether the task should run at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.next_try.is_none_or(|at| now >= at)
    }

    /// Records a failure at `now`, for a task that runs every `tick`.
    pub(super) fn failed(&mut self, now: Instant, tick: Duration) -> Told {
        self.failures = self.failures.saturating_add(1);
        let wait = tick.saturating_mul(1 << (self.failures - 1).min(20)).min(MAX_BACKOFF);
        self.next_try = Some(now + wait);
        if self.failures == 1 { Told::FirstFailure } else { Told::Nothing }
    }

    /// Records a success.
    pub(super) fn succeeded(&mut self) -> Told {
        let failures = std::mem::take(&mut self.failures);
        self.next_try = None;
        if failures > 0 { Told::Recovered { failures } } else { Told::Nothing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_task_waits_twice_as_long_each_time_and_is_told_once() {
        let tick = Duration::from_secs(1);
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.due(start));
        assert_eq!(backoff.failed(start, tick), Told::FirstFailure);
        let mut at = start;
        for n in 1..12u32 {
            let wait = tick.saturating_mul(1 << (n - 1)).min(MAX_BACKOFF);
            assert!(!backoff.due(at + wait - Duration::from_millis(1)), "try {n} came early");
            at += wait;
            assert!(backoff.due(at), "try {n} is late");
            assert_eq!(backoff.failed(at, tick), Told::Nothing, "told again at failure {}", n + 1);
        }
        assert!(!backoff.due(at + MAX_BACKOFF - Duration::from_millis(1)), "waits at most MAX_BACKOFF, not less");
        assert!(backoff.due(at + MAX_BACKOFF));
        assert_eq!(backoff.succeeded(), Told::Recovered { failures: 12 });
        assert!(backoff.due(at));
        assert_eq!(backoff.succeeded(), Told::Nothing);
        assert_eq!(backoff.failed(at, tick), Told::FirstFailure, "a new run of failures is told again");
    }
}
