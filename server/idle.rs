//! Idle connections: with `--max-connection-idle-secs`, a connection that
//! has had no call in flight for that long is closed, so clients that went
//! away without closing (or pools that keep connections they never use)
//! do not hold them forever. Keepalive pings do not keep a connection
//! alive: only calls count.
//!
//! Every accepted connection is wrapped in a [`Tracked`] stream whose
//! [`Calls`] the admission layer finds in each request's extensions (as
//! the connection's `ConnectInfo`) and counts calls in. The stream ends
//! (reads give end of file, and the server drops the connection) once the
//! connection has been without calls for the idle time and nothing has
//! been read for [`QUIET`]: bytes just read may be a call's headers not yet
//! dispatched, so a connection is never closed under a call that is
//! arriving.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// How long a connection must have read nothing before it may be closed
/// as idle.
pub const QUIET: Duration = Duration::from_secs(1);

/// The calls of one connection, shared by its stream and the admission
/// layer.
#[derive(Debug)]
pub struct Calls {
    in_flight: AtomicUsize,
    /// When the last call ended (or the connection was accepted).
    last_call: Mutex<Instant>,
}

impl Calls {
    fn new() -> Arc<Calls> {
        Arc::new(Calls { in_flight: AtomicUsize::new(0), last_call: Mutex::new(Instant::now()) })
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Calls>) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    /// When the connection will have been idle long enough, if it has no
    /// call in flight now.
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| *self.last_call.lock().unwrap_or_else(PoisonError::into_inner) + idle)
    }
}

/// A call in flight on a connection (see [`Calls::start`]).
#[derive(Debug)]
pub struct CallGuard(Arc<Calls>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        *self.0.last_call.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's `ConnectInfo`: the stream's own, and its [`Calls`].
#[derive(Clone, Debug)]
pub struct TrackedInfo<T> {
    /// The wrapped stream's connect info (the peer's address, for TCP).
    pub inner: T,
    /// The connection's calls.
    pub calls: Arc<Calls>,
}

/// An accepted connection that ends once it has been idle for `idle`
/// (never, when `idle` is `None`).
pub struct Tracked<IO> {
    io: IO,
    calls: Arc<Calls>,
    idle: Option<Duration>,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Tracked<IO> {
    /// Wraps a connection just accepted.
    pub fn new(io: IO, idle: Option<Duration>) -> Tracked<IO> {
        let now = Instant::now();
        Tracked { io, calls: Calls::new(), idle, last_read: now, timer: Box::pin(tokio::time::sleep_until(now)) }
    }

    /// Whether the connection should end now; if not, arms the timer for
    /// when to look again.
    fn idle_now(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle else { return false };
        loop {
            let now = Instant::now();
            let quiet_at = self.last_read + QUIET;
            let next = match self.calls.idle_at(idle) {
                Some(idle_at) if now >= idle_at && now >= quiet_at => return true,
                Some(idle_at) => idle_at.max(quiet_at),
                // Calls in flight: look again an idle time from now.
                None => now + idle,
            };
            self.timer.as_mut().reset(next);
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl<IO: Connected> Connected for Tracked<IO> {
    type ConnectInfo = TrackedInfo<IO::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        TrackedInfo { inner: self.io.connect_info(), calls: self.calls.clone() }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            // End of file: the server drops the connection.
            Poll::Pending if self.idle_now(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
