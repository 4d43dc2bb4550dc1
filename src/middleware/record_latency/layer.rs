//! The tower `Layer` and `Service` that start each request's clock and wrap
//! its response body in a [`RecordedBody`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::RecordedBody;
use crate::metrics::Labelled;
use crate::metrics::Metrics;

/// Records every request's latencies into [`Metrics`].
#[derive(Debug, Clone)]
pub struct RecordLatencyLayer {
    metrics: Metrics,
}

impl RecordLatencyLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RecordLatencyLayer {
    type Service = RecordLatency<S>;

    fn layer(&self, inner: S) -> RecordLatency<S> {
        RecordLatency {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`RecordLatencyLayer`].
#[derive(Debug, Clone)]
pub struct RecordLatency<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecordLatency<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body + Labelled,
{
    type Response = Response<RecordedBody<ResBody>>;
    type Error = S::Error;
    type Future = RecordLatencyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        RecordLatencyFuture {
            started: Instant::now(),
            metrics: Some(self.metrics.clone()),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`RecordLatency`]: times the headers, then hands
    /// the clock to the body.
    pub struct RecordLatencyFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        metrics: Option<Metrics>,
    }
}

impl<F, B, E> Future for RecordLatencyFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body + Labelled,
{
    type Output = Result<Response<RecordedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let headers = this.started.elapsed();
        let status = response.status().as_u16();
        let metrics = this.metrics.take();
        let started = *this.started;
        Poll::Ready(Ok(
            response.map(|body| RecordedBody::new(body, metrics, started, headers, status))
        ))
    }
}
