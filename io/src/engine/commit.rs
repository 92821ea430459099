//! Durability: every fsync of segment data, and group commit.
//!
//! Concurrent writers share fsyncs: whoever finds no fsync running leads
//! the next one; the others wait for it. Before it syncs, the leader gives
//! other writers a moment to append (see `Shared::gather`: at most half the
//! last fsync's time, never when it is the only writer), so that one fsync
//! covers them all instead of half of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::Shared;
use super::write::Writer;
use crate::error::{Error, Result};
#[derive(Debug, Default)]
pub(super) struct Durability {
    pub(super) state: Mutex<SyncState>,
    /// Held for every fsync of the active segment (the group commit
    /// leader's and `sync_active`'s), and until a failed one is recorded
    /// in `state.failed`: on Linux the fsync after a failed one succeeds
    /// without the dropped pages, so it must not start before the failure
    /// is known, or it would count them durable. Taken after `writer` and
    /// before `state`; never held while waiting for `writer`.
    pub(super) gate: Mutex<()>,
    /// Signalled when an fsync ends (or the engine is poisoned).
    pub(super) synced: Condvar,
    /// Signalled when a writer starts waiting for an fsync: the leader of
    /// the next one may be gathering writers.
    pub(super) waiting: Condvar,
    /// Writers inside a write call under [`SyncPolicy::Always`] that have
    /// not yet finished waiting for their fsync. Decreased only under
    /// `state`, so a gathering leader cannot miss the end of its wait.
    pub(super) writers: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Every byte appended before this log position is durable.
    pub(super) durable: u64,
    /// An fsync is running, or its leader is gathering writers.
    pub(super) syncing: bool,
    /// Threads waiting for an fsync.
    pub(super) waiting: u64,
    /// How long the last fsync took.
    pub(super) last_sync: Duration,
    /// How many threads the last fsync covered (gathered for).
    pub(super) last_batch: u64,
    /// Why an fsync failed, once one has. On Linux a later fsync can
    /// succeed although the pages the failed one covered were dropped, so
    /// from now on nothing is ever reported durable again (the engine is
    /// poisoned, too), and a writer still waiting is told its outcome is
    /// unknown.
    pub(super) failed: Option<Arc<str>>,
}

/// The longest a group commit leader waits for other writers to append.
const MAX_COMMIT_DELAY: Duration = Duration::from_micros(500);

/// A group commit leader stops gathering once no writer has arrived for
/// this long.
const GATHER_QUIET: Duration = Duration::from_micros(20);

/// Counts a writer in [`Durability::writers`] from the start of its write
/// call until it has waited for its fsync ([`Shared::wait_durable`] lets it
/// go under the state lock) or, on an early return, until it is dropped.
pub(super) struct ActiveWriter<'a>(Option<&'a Durability>);

impl<'a> ActiveWriter<'a> {
    pub(super) fn enter(durability: &'a Durability) -> Self {
        // No lock needed: a leader that misses this writer only gathers
        // fewer; it is the decrements that can end a leader's wait.
        durability.writers.fetch_add(1, Ordering::Relaxed);
        ActiveWriter(Some(durability))
    }

    /// Stops counting the writer; the caller holds the state lock.
    fn leave(mut self, _state: &SyncState) {
        if let Some(durability) = self.0.take() {
            durability.writers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ActiveWriter<'_> {
    fn drop(&mut self) {
        if let Some(durability) = self.0.take() {
            let _state = durability.state.lock();
            durability.writers.fetch_sub(1, Ordering::Relaxed);
            // A leader may be gathering, waiting for this writer.
            durability.waiting.notify_one();
        }
    }
}

impl Shared {
    /// Syncs the active segment under the writer lock (before it is sealed,
    /// or after a `ReserveIds` record outside `always`): everything
    /// appended is durable afterwards. A failure poisons the engine.
    pub(super) fn sync_active(&self, w: &Writer) -> Result<()> {
        let gate = self.durability.gate.lock();
        if let Err(e) = w.file.sync_data() {
            let e = Error::io(format!("syncing segment {}", w.segment))(e);
            self.durability.state.lock().failed = Some(e.to_string().into());
            drop(gate);
            self.set_poison(&e);
            return Err(e);
        }
        drop(gate);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.mark_durable(w.appended);
        Ok(())
    }

    pub(super) fn mark_durable(&self, position: u64) {
        let mut state = self.durability.state.lock();
        if state.failed.is_some() {
            return;
        }
        state.durable = state.durable.max(position);
        drop(state);
        self.durability.synced.notify_all();
    }

    /// Returns once every byte before `position` is durable: by an fsync
    /// this thread runs, or one another thread runs that covers it. A
    /// writer passes itself in, and stops counting as one when it returns.
    pub(super) fn wait_durable(&self, position: u64, writer: Option<ActiveWriter<'_>>) -> Result<()> {
        let mut state = self.durability.state.lock();
        let result = if state.durable >= position {
            Ok(())
        } else {
            state.waiting += 1;
            self.durability.waiting.notify_one();
            let result = self.await_sync(&mut state, position);
            state.waiting -= 1;
            result
        };
        if let Some(writer) = writer {
            writer.leave(&state);
        }
        result
    }

    /// Waits until every byte before `position` is durable, leading an
    /// fsync when none runs.
    ///
    /// The answer is honest about what happened to the caller's bytes:
    /// `Ok` once an fsync covered them; [`Error::OutcomeUnknown`] once an
    /// fsync failed before one did (the bytes reached the file, and may or
    /// may not survive a restart). A poison set by another writer's failed
    /// append or rotation does not stop the fsync: every byte before
    /// `position` reached the file whole before that failure, so syncing
    /// them is still right, and a write that is in fact applied is never
    /// answered with an error.
    pub(super) fn await_sync(&self, state: &mut MutexGuard<'_, SyncState>, position: u64) -> Result<()> {
        loop {
            if state.durable >= position {
                return Ok(());
            }
            if let Some(reason) = &state.failed {
                return Err(Error::OutcomeUnknown { reason: reason.clone() });
            }
            if state.syncing {
                self.durability.synced.wait(state);
                continue;
            }
            state.syncing = true;
            self.gather(state);
            let (result, target, took) = MutexGuard::unlocked(state, || {
                let (file, target, segment, upto, records) = {
                    let w = self.writer.lock();
                    (w.file.clone(), w.appended, w.segment, w.len, w.records_end)
                };
                let gate = self.durability.gate.lock();
                let started = Instant::now();
                let result = file.sync_data();
                let took = started.elapsed();
                if let Err(e) = &result {
                    // Known before the gate opens: see `Durability::gate`.
                    let reason = format!("syncing the active segment: {e}");
                    self.durability.state.lock().failed.get_or_insert(reason.into());
                }
                drop(gate);
                if result.is_ok() {
                    // Before any writer this fsync covered is answered.
                    self.mark_durable_upto(&mut self.writer.lock(), segment, upto, records);
                }
                (result, target, took)
            });
            state.syncing = false;
            state.last_sync = took;
            // Whatever happened, the waiters must look again: a failure set
            // meanwhile (by a rotation's failed fsync, say) notified without
            // this lock, and that wakeup may have been missed.
            self.durability.synced.notify_all();
            match result {
                // An fsync failed meanwhile (a rotation's, or one before
                // this one whose dropped pages this one did not write): the
                // loop answers.
                Ok(()) if state.failed.is_some() => {}
                Ok(()) => {
                    self.fsyncs.fetch_add(1, Ordering::Relaxed);
                    state.durable = state.durable.max(target);
                }
                Err(e) => {
                    // Marked failed inside the gate already, and so before
                    // any other fsync could start and count the lost bytes
                    // durable (see `Durability::gate`).
                    let e = Error::io("syncing the active segment")(e);
                    state.failed = Some(e.to_string().into());
                    self.set_poison(&e);
                }
            }
        }
    }

    /// Before an fsync: waits (briefly) for writers to append, so that the
    /// fsync covers them. A lone writer never waits. Otherwise the leader
    /// waits while writers inside a write call have not yet appended, and
    /// then while more keep arriving (writers that write again as soon as
    /// they are acknowledged arrive between two calls, when they are not
    /// inside one): until none arrives for [`GATHER_QUIET`], at most half
    /// the last fsync's time.
    pub(super) fn gather(&self, state: &mut MutexGuard<'_, SyncState>) {
        let inside = || self.durability.writers.load(Ordering::Relaxed);
        if inside() <= 1 && state.last_batch <= 1 {
            state.last_batch = state.waiting;
            return;
        }
        let deadline = Instant::now() + (state.last_sync / 2).min(MAX_COMMIT_DELAY);
        loop {
            let until = if state.waiting < inside() { deadline } else { deadline.min(Instant::now() + GATHER_QUIET) };
            let arrived = state.waiting;
            let timed_out = self.durability.waiting.wait_until(state, until).timed_out();
            if Instant::now() >= deadline || (timed_out && state.waiting == arrived && state.waiting >= inside()) {
                break;
            }
        }
        state.last_batch = state.waiting;
    }
}
