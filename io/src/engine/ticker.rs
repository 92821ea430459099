//! The engine's background threads: each runs a task at an interval until
//! it is stopped or the engine is gone.

use std::sync::Weak;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

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
