//! A response body that ends its request's in-flight mark when it finishes
//! or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::RequestGuard;

pin_project! {
    /// A body carrying its request's [`RequestGuard`].
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }
}

impl<B> TrackedBody<B> {
    pub(super) fn new(inner: B, guard: Option<RequestGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
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

impl<B: crate::middleware::record_latency::Labelled> crate::middleware::record_latency::Labelled for TrackedBody<B> {
    fn route(&self) -> Option<usize> {
        self.inner.route()
    }

    fn upstream_time(&self) -> Option<std::time::Duration> {
        self.inner.upstream_time()
    }
}
