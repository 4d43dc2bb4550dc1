//! The tower `Layer` and `Service` that attach a [`RequestGuard`] to every
//! response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Activity, RequestGuard, TrackedBody};
use crate::metrics::Labelled;

/// Wraps a service so each request counts as in flight on an [`Activity`].
#[derive(Debug, Clone)]
pub struct TrackActivityLayer {
    activity: Activity,
}

impl TrackActivityLayer {
    /// Records into `activity`.
    pub fn new(activity: Activity) -> Self {
        Self { activity }
    }
}

impl<S> Layer<S> for TrackActivityLayer {
    type Service = TrackActivity<S>;

    fn layer(&self, inner: S) -> TrackActivity<S> {
        TrackActivity {
            inner,
            activity: self.activity.clone(),
        }
    }
}

/// See [`TrackActivityLayer`].
#[derive(Debug, Clone)]
pub struct TrackActivity<S> {
    inner: S,
    activity: Activity,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TrackActivity<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Labelled,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackActivityFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        TrackActivityFuture {
            guard: Some(self.activity.begin()),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`TrackActivity`]: moves the guard into the body.
    pub struct TrackActivityFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F, B, E> Future for TrackActivityFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Labelled,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody::new(body, guard))))
    }
}
