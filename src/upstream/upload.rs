//! The request body on its way upstream, and the route's body-size limit:
//! streamed from the client, or, for a request that may be sent more than
//! once (retried, hedged), a copy buffered whole beforehand.
//!
//! A body over the route's `max_body_bytes` ends in a [`TooLarge`] error as
//! soon as the frame that crosses the limit arrives; that frame is not
//! forwarded, so the backend never receives a complete over-limit request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A client's request body, forwarded frame by frame.
#[derive(Debug)]
pub struct UploadBody {
    source: Source,
    /// Bytes the body may still carry, when the route limits it.
    allowance: Option<u64>,
    /// The route's limit, for the error.
    limit: u64,
}

#[derive(Debug)]
enum Source {
    /// Streamed from the client as it arrives.
    Client(Incoming),
    /// Received whole already, sent in one frame (then `None`).
    Buffered(Option<Bytes>),
}

/// The request body went over the route's limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body over the limit of {limit} bytes")]
pub struct TooLarge {
    /// The route's `max_body_bytes`.
    pub limit: u64,
}

/// Why a request body stopped.
pub type UploadError = Box<dyn std::error::Error + Send + Sync>;

impl UploadBody {
    /// Wraps `body`, limited to `limit` bytes when the route sets one.
    pub fn new(body: Incoming, limit: Option<u64>) -> Self {
        Self {
            source: Source::Client(body),
            allowance: limit,
            limit: limit.unwrap_or(u64::MAX),
        }
    }

    /// A body received whole already (within the route's limit): `data`
    /// shares its bytes with every other attempt's copy.
    pub fn buffered(data: Bytes) -> Self {
        Self {
            source: Source::Buffered(Some(data)),
            allowance: None,
            limit: u64::MAX,
        }
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let body = match &mut self.source {
            Source::Client(body) => body,
            Source::Buffered(data) => return Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
        };
        let frame = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            if let (Some(allowance), Some(data)) = (self.allowance, frame.data_ref()) {
                let size = data.len() as u64;
                if size > allowance {
                    return Poll::Ready(Some(Err(Box::new(TooLarge { limit: self.limit }))));
                }
                self.allowance = Some(allowance - size);
            }
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Client(body) => body.is_end_stream(),
            Source::Buffered(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Client(body) => body.size_hint(),
            Source::Buffered(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
