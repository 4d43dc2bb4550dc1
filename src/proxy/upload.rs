//! The request body on its way upstream, whether it has all been sent, and
//! the route's body-size limit.
//!
//! The backend's response-header timeout should measure the backend, not the
//! client's upload: its clock starts once the request body has been passed
//! on in full. Bodiless requests (most) carry no tracking at all.
//!
//! A body over the route's `max_body_bytes` ends in a [`TooLarge`] error as
//! soon as the frame that crosses the limit arrives; that frame is not
//! forwarded, so the backend never receives a complete over-limit request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A client's request body, forwarded frame by frame.
#[derive(Debug)]
pub struct UploadBody {
    body: Incoming,
    sent: Option<Arc<AtomicBool>>,
    /// Bytes the body may still carry, when the route limits it.
    allowance: Option<u64>,
    /// The route's limit, for the error.
    limit: u64,
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

/// Tells whether an [`UploadBody`] has been sent in full.
#[derive(Debug, Clone, Default)]
pub struct UploadProgress {
    sent: Option<Arc<AtomicBool>>,
}

impl UploadProgress {
    /// True once the whole body has been handed to the backend connection.
    pub fn is_done(&self) -> bool {
        self.sent.as_ref().is_none_or(|sent| sent.load(Ordering::Acquire))
    }
}

impl UploadBody {
    /// Wraps `body`, allowing at most `limit` bytes; a body that is already
    /// complete gets no tracking.
    pub fn new(body: Incoming, limit: Option<u64>) -> (Self, UploadProgress) {
        let sent = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        (
            Self {
                body,
                sent: sent.clone(),
                allowance: limit,
                limit: limit.unwrap_or(u64::MAX),
            },
            UploadProgress { sent },
        )
    }

    fn mark_sent(&self) {
        if let Some(sent) = &self.sent {
            sent.store(true, Ordering::Release);
        }
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.mark_sent(),
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(allowance), Some(data)) = (self.allowance, frame.data_ref()) {
                    let size = data.len() as u64;
                    if size > allowance {
                        return Poll::Ready(Some(Err(Box::new(TooLarge { limit: self.limit }))));
                    }
                    self.allowance = Some(allowance - size);
                }
                if self.body.is_end_stream() {
                    self.mark_sent();
                }
            }
            _ => {}
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
