//! A response body that ends its request's in-flight mark when it finishes
//! or is dropped (the client went away).

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::RequestGuard;
use crate::metrics::Labelled;

pin_project! {
    /// A body carrying its request's [`RequestGuard`]. The request ends when
    /// the body it wraps says it ended ([`Labelled::ended_at`]), or when this
    /// body is dropped.
    pub struct TrackedBody<B: Labelled> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }

    impl<B: Labelled> PinnedDrop for TrackedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(guard) = this.guard.take() {
                guard.end(this.inner.ended_at());
            }
        }
    }
}

impl<B: Labelled> TrackedBody<B> {
    pub(super) fn new(inner: B, guard: Option<RequestGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body + Labelled> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            if let Some(guard) = this.guard.take() {
                guard.end(this.inner.ended_at());
            }
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

impl<B: Labelled> Labelled for TrackedBody<B> {
    fn route(&self) -> Option<usize> {
        self.inner.route()
    }

    fn upstream_time(&self) -> Option<std::time::Duration> {
        self.inner.upstream_time()
    }

    fn ended_at(&self) -> Option<std::time::Instant> {
        self.inner.ended_at()
    }

    fn marks(&self) -> crate::metrics::Marks {
        self.inner.marks()
    }
}
