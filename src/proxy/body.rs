//! The response body tailcut sends to clients.
//!
//! An upstream body is forwarded frame by frame: each `Bytes` frame read
//! from the backend is handed to the client connection by reference count,
//! never collected or copied. Errors produced by tailcut itself carry a short
//! static text.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::headers;
use crate::metrics::{Labelled, Marks};
use crate::upstream::h1::H1Error;
use crate::upstream::Exchange;

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The backend's connection failed mid-body.
    /// (The cause is said in the text, not repeated as a `source`.)
    #[error("upstream body: {0}")]
    Upstream(H1Error),
    /// The same, on a connection hyper's client ran (an upgrade the backend
    /// declined).
    #[error("upstream body: {0}")]
    UpstreamHyper(hyper::Error),
    /// The whole-request timeout (`timeouts.request`) expired mid-body.
    #[error("request timeout expired while streaming the response body")]
    Deadline,
}

/// A response body: streamed from a backend, or written by tailcut.
pub struct ProxyBody {
    kind: Kind,
    /// The whole-request deadline, when the configuration sets one.
    /// (Boxed: the timer is large, and most configurations set no
    /// whole-request limit, so the common body stays small to move.)
    deadline: Option<Pin<Box<Sleep>>>,
    route: Option<usize>,
    /// When the request was handed to the backend connection.
    sent: Option<std::time::Instant>,
    /// When the upstream body ended.
    ended_at: Option<std::time::Instant>,
    /// What tail control did to the request.
    marks: Marks,
}

enum Kind {
    /// Streamed from a pooled backend connection as it arrives; the
    /// exchange returns the connection to its pool at the end.
    Upstream(Exchange),
    /// Streamed from a connection hyper's client runs (the answer to an
    /// upgrade the backend declined).
    Incoming(Incoming),
    /// A complete body tailcut wrote itself (errors), sent in one frame.
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// The body of a pooled exchange; `deadline` is the whole-request
    /// deadline, `sent` when the request went to the backend.
    pub fn upstream(exchange: Exchange, deadline: Option<Instant>, sent: std::time::Instant) -> Self {
        Self::streamed(Kind::Upstream(exchange), deadline, sent)
    }

    /// The body of a response read by hyper's client.
    pub fn incoming(body: Incoming, sent: std::time::Instant) -> Self {
        Self::streamed(Kind::Incoming(body), None, sent)
    }

    fn streamed(kind: Kind, deadline: Option<Instant>, sent: std::time::Instant) -> Self {
        let mut body = ProxyBody::from(kind);
        body.deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
        body.sent = Some(sent);
        if body.is_end_stream() {
            body.ended_at = Some(body.kind.ended_at().unwrap_or_else(std::time::Instant::now));
        }
        body
    }

    /// Labels the body with the route that served it, for metrics.
    pub fn set_route(&mut self, route: Option<usize>) {
        self.route = route;
    }

    /// Marks the body with what tail control did to its request.
    pub fn set_marks(&mut self, marks: Marks) {
        self.marks = marks;
    }

    /// A body of `data`, sent whole.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Kind::Full((!data.is_empty()).then_some(data)).into()
    }

    /// No body.
    pub fn empty() -> Self {
        Kind::Full(None).into()
    }
}

impl From<Kind> for ProxyBody {
    fn from(kind: Kind) -> Self {
        ProxyBody {
            kind,
            deadline: None,
            route: None,
            sent: None,
            ended_at: None,
            marks: Marks::default(),
        }
    }
}

impl Labelled for ProxyBody {
    fn route(&self) -> Option<usize> {
        self.route
    }

    fn upstream_time(&self) -> Option<Duration> {
        Some(self.ended_at?.saturating_duration_since(self.sent?))
    }

    fn ended_at(&self) -> Option<std::time::Instant> {
        self.ended_at
    }

    fn marks(&self) -> Marks {
        self.marks
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut frame = match &mut this.kind {
            Kind::Upstream(exchange) => Pin::new(exchange).poll_frame(cx).map_err(BodyError::Upstream),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::UpstreamHyper),
            Kind::Full(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &mut frame {
            if let Some(trailers) = frame.trailers_mut() {
                headers::filter_trailers(trailers);
            }
        }
        if frame.is_pending() {
            if let Some(deadline) = this.deadline.as_mut() {
                ready!(deadline.as_mut().poll(cx));
                this.marks.deadline_exceeded = true;
                return Poll::Ready(Some(Err(BodyError::Deadline)));
            }
            return Poll::Pending;
        }
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.kind.is_end_stream(),
            _ => false,
        };
        if ended && this.ended_at.is_none() && this.sent.is_some() {
            // The exchange read the clock as it returned its connection.
            this.ended_at = Some(this.kind.ended_at().unwrap_or_else(std::time::Instant::now));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(exchange) => exchange.size_hint(),
            Kind::Incoming(body) => body.size_hint(),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Kind {
    /// When the body ended, if it ended and says so itself.
    fn ended_at(&self) -> Option<std::time::Instant> {
        match self {
            Kind::Upstream(exchange) => exchange.ended_at(),
            Kind::Incoming(_) | Kind::Full(_) => None,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Upstream(exchange) => exchange.is_end_stream(),
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Full(data) => data.is_none(),
        }
    }
}
