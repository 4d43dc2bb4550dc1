//! The request body on its way upstream, and whether it has all been sent.
//!
//! The backend's response-header timeout should measure the backend, not the
//! client's upload: its clock starts once the request body has been passed
//! on in full. Bodiless requests (most) carry no tracking at all.

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
}

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
    /// Wraps `body`; a body that is already complete gets no tracking.
    pub fn new(body: Incoming) -> (Self, UploadProgress) {
        let sent = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        (
            Self {
                body,
                sent: sent.clone(),
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
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.mark_sent(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.mark_sent(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
