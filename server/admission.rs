//! The admission layer: what every call passes before it reaches its
//! service, in this order.
//!
//! 1. Its token, when the server has a token file (see [`crate::auth`]):
//!    UNAUTHENTICATED or PERMISSION_DENIED at once.
//! 2. The concurrency limit: a call beyond `--max-concurrent-requests` in
//!    flight is answered RESOURCE_EXHAUSTED at once instead of waiting
//!    (load shedding). The health service is never counted nor refused, so
//!    it answers however loaded the server is.
//! 3. Its deadline (the `grpc-timeout` the client sent): once it passes, the
//!    call is answered DEADLINE_EXCEEDED and its future dropped. An engine
//!    call that had not started by then is skipped (the service reads the
//!    deadline through [`deadline`]); one already running on the blocking
//!    pool runs to its end, since the engine cannot stop halfway.
//!
//! tonic enforces `grpc-timeout` itself too, outside this layer, and
//! answers CANCELLED "Timeout expired". This layer gives up
//! [`DEADLINE_MARGIN`] before it, so a client sees DEADLINE_EXCEEDED, the
//! status gRPC defines for a deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::{self, Access, Tokens};
use crate::idle::{Calls, TrackedInfo};
use crate::upload;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// How much earlier than the client's deadline the server gives up: one
/// tick of tokio's timer (1 ms), so that this layer's timer always fires
/// in an earlier tick than tonic's, which answers CANCELLED.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// What the service needs to know of the call it serves.
#[derive(Clone)]
struct CallContext {
    /// When the call must be answered by, if the client set a deadline.
    deadline: Option<Instant>,
    /// The call's place among the calls in flight, if counted.
    place: Option<Arc<OwnedSemaphorePermit>>,
}

tokio::task_local! {
    static CALL: CallContext;
}

/// The deadline of the call being served, if it has one and this runs
/// inside it.
pub fn deadline() -> Option<Instant> {
    CALL.try_with(|call| call.deadline).ok().flatten()
}

/// The place of the call being served among the calls in flight, if it has
/// one: work the call hands to another thread holds it, so a call whose
/// client gave up (or whose deadline passed) still counts against the
/// limit until that work ends, and cancelling calls cannot pile work up.
pub fn place() -> Option<Arc<OwnedSemaphorePermit>> {
    CALL.try_with(|call| call.place.clone()).ok().flatten()
}

/// The [`Layer`] that admits calls (see the module doc).
#[derive(Clone, Debug)]
pub struct Admission {
    tokens: Option<Arc<Tokens>>,
    in_flight: Option<Arc<Semaphore>>,
    limit: usize,
}

impl Admission {
    /// Checks tokens if `tokens` is set, and admits at most `limit` calls
    /// at once (0: no limit).
    pub fn new(tokens: Option<Arc<Tokens>>, limit: usize) -> Admission {
        let in_flight = (limit > 0).then(|| Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))));
        Admission { tokens, in_flight, limit }
    }

    /// Why a call to `path` with these headers is refused, if it is.
    fn check(&self, path: &str, access: Access, headers: &http::HeaderMap) -> Result<(), Status> {
        match &self.tokens {
            Some(tokens) => {
                let authorization = headers.get(http::header::AUTHORIZATION).map(|value| value.as_bytes());
                tokens.authorize(path, access, authorization)
            }
            None => Ok(()),
        }
    }

    /// A place among the calls in flight, `None` when there is no limit.
    fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Status> {
        let Some(in_flight) = &self.in_flight else { return Ok(None) };
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(Status::resource_exhausted(format!(
                "server overloaded: {} calls in flight, the limit of --max-concurrent-requests; retry later",
                self.limit
            ))),
        }
    }
}

impl<S> Layer<S> for Admission {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted { admission: self.clone(), inner }
    }
}

/// A service behind [`Admission`].
#[derive(Clone, Debug)]
pub struct Admitted<S> {
    admission: Admission,
    inner: S,
}

type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Admitted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = tonic::codegen::Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let received = Instant::now();
        // The call counts on its connection until it is answered (or, if it
        // is refused here, as activity just now): see `crate::idle`.
        let on_connection = connection_calls(&request).map(|calls| calls.start());
        let path = request.uri().path();
        let access = auth::access(path);
        if let Err(status) = self.admission.check(path, access, request.headers()) {
            return answer(status);
        }
        let permit = match access {
            Access::Open => None,
            Access::Read | Access::Write => match self.admission.admit() {
                Ok(permit) => permit,
                Err(status) => return answer(status),
            },
        };
        let timeout = grpc_timeout(request.headers());
        let deadline = timeout.map(|timeout| received + timeout.saturating_sub(DEADLINE_MARGIN));
        let place = permit.map(Arc::new);
        // A streaming call is in flight until its response's last message,
        // not only until its headers: the body holds the place and the
        // connection's count.
        let in_flight = (place.clone(), on_connection);
        // Its body is watched, so that a stream broken off is not taken for
        // one the client ended (see `crate::upload`).
        let call = CALL.scope(CallContext { deadline, place }, self.inner.call(upload::watch(request)));
        let Some((timeout, deadline)) = timeout.zip(deadline) else {
            return Box::pin(async move { call.await.map(|response| hold_until_sent(response, in_flight)) });
        };
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.into(), call).await {
                Ok(response) => response.map(|response| hold_until_sent(response, in_flight)),
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "deadline exceeded: the call's timeout of {timeout:?} passed before the server answered"
                ))
                .into_http()),
            }
        })
    }
}

/// The calls of the connection `request` came on (see `crate::idle`),
/// over TCP or TLS.
fn connection_calls<B>(request: &http::Request<B>) -> Option<&Arc<Calls>> {
    let extensions = request.extensions();
    if let Some(info) = extensions.get::<TrackedInfo<TcpConnectInfo>>() {
        return Some(&info.calls);
    }
    extensions.get::<TlsConnectInfo<TrackedInfo<TcpConnectInfo>>>().map(|info| &info.get_ref().calls)
}

/// `response` with a body that keeps `guard` until it has been sent.
fn hold_until_sent<G: Send + Unpin + 'static>(response: http::Response<Body>, guard: G) -> http::Response<Body> {
    response.map(|inner| Body::new(Guarded { inner, _guard: guard }))
}

/// A response body holding a guard until it ends (or is dropped).
struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response with `status` and no message.
fn answer<E: Send + 'static>(status: Status) -> ResponseFuture<E> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// The call's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
/// A malformed one is ignored, as tonic ignores it.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("20S"), Some(Duration::from_secs(20)));
        assert_eq!(timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(timeout("0n"), Some(Duration::ZERO));
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "m", "5", "5x", "123456789m", "-1m", "1.5S", " 1m"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
    }
}
