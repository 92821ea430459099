//! Client-streamed uploads that break: telling a stream that ended from one
//! that was cut off.
//!
//! tonic hands a service the end of a request stream the same way whether
//! the client ended it or reset it (a reset with CANCEL, as a client that
//! gives up or dies sends, reads as a clean end). An import or replace
//! built from such a stream must not be written. The protocol's own guard
//! is the `last` flag of the stream's final message (a stream that ends
//! without it writes nothing: `crate::problems::Upload::check_finished`),
//! which also covers a client whose transport ends the stream cleanly when
//! it cancels (Node's). Beside it, the admission layer wraps every request
//! body in a [`Watched`] body, which notes in the request's [`Upload`]
//! extension that the body failed before the service saw the stream end,
//! so that such a call is answered as broken off, and the service checks
//! both before it writes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Bytes;

/// Whether a request's body broke off: in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct Upload {
    broken: Arc<AtomicBool>,
}

impl Upload {
    /// The request's upload state, if the admission layer watched it.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Upload> {
        request.extensions().get::<Upload>().cloned()
    }

    /// Refuses a stream that ended because its body broke off rather than
    /// because the client ended it.
    pub fn check_whole(upload: Option<&Upload>) -> Result<(), Status> {
        match upload {
            Some(upload) if upload.broken.load(Ordering::Acquire) => Err(Status::cancelled(
                "the request stream was broken off before the client ended it: nothing was written",
            )),
            _ => Ok(()),
        }
    }
}

/// `request` with its body watched, and the [`Upload`] that says how it
/// went in its extensions.
pub fn watch<B>(request: http::Request<B>) -> http::Request<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let upload = Upload::default();
    let broken = upload.broken.clone();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(upload);
    http::Request::from_parts(parts, Body::new(Watched { inner: body, broken }))
}

/// A request body that notes when it fails.
struct Watched<B> {
    inner: B,
    broken: Arc<AtomicBool>,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &frame {
            self.broken.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
