//! A response body that records its exchange once, when it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::metrics::latency::End;
use crate::metrics::{Exchange, Metrics};
use crate::metrics::{Labelled, LabelledBody};

pin_project! {
    /// A response body timed to its end. `metrics` is taken when the
    /// exchange is recorded, so it is recorded exactly once.
    pub struct RecordedBody<B: LabelledBody> {
        #[pin]
        inner: B,
        metrics: Option<Metrics>,
        started: Instant,
        headers: Duration,
        status: u16,
        bytes: u64,
    }

    impl<B: LabelledBody> PinnedDrop for RecordedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Dropped unfinished: the client went away. A body that was
            // already at its end (HEAD, 204, hyper skipping an empty body)
            // completed without being polled.
            let end = if this.inner.is_end_stream() { End::Complete } else { End::ClientGone };
            record(this.metrics, &*this.inner, *this.started, *this.headers, *this.status, *this.bytes, end);
        }
    }
}

impl<B: Body + Labelled> RecordedBody<B> {
    pub(super) fn new(inner: B, metrics: Option<Metrics>, started: Instant, headers: Duration, status: u16) -> Self {
        Self {
            inner,
            metrics,
            started,
            headers,
            status,
            bytes: 0,
        }
    }
}

fn record<B: Labelled>(
    metrics: &mut Option<Metrics>,
    inner: &B,
    started: Instant,
    headers: Duration,
    status: u16,
    bytes: u64,
    end: End,
) {
    let Some(metrics) = metrics.take() else { return };
    let now = match end {
        End::Complete => inner.ended_at().unwrap_or_else(Instant::now),
        End::Error | End::ClientGone => Instant::now(),
    };
    let exchange = Exchange {
        route: inner.route(),
        status,
        end,
        headers,
        total: now.duration_since(started),
        upstream: inner.upstream_time(),
        bytes,
        marks: inner.marks(),
    };
    metrics.record(&exchange);
}

impl<B: Body + Labelled> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        let end = match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.remaining() as u64;
                }
                // hyper stops polling once a body says it has ended.
                this.inner.is_end_stream().then_some(End::Complete)
            }
            Poll::Ready(None) => Some(End::Complete),
            Poll::Ready(Some(Err(_))) => Some(End::Error),
            Poll::Pending => None,
        };
        if let Some(end) = end {
            let inner = this.inner.as_ref().get_ref();
            record(
                this.metrics,
                inner,
                *this.started,
                *this.headers,
                *this.status,
                *this.bytes,
                end,
            );
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
