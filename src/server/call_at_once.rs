//! The tower stack as a hyper `Service`, called as soon as hyper hands over
//! a request.
//!
//! hyper-util's `TowerToHyperService` defers the call to the first poll of
//! the future it returns (a tower `Oneshot`: `poll_ready`, then `call`).
//! hyper reads ahead on the connection before that first poll, while the
//! request's head, which refers to hyper's read buffer, is alive: so hyper
//! allocates a new read buffer for every request. Called at once, the
//! forwarding service encodes the head for the backend and lets go of it
//! before hyper reads again (see `ProxyService::call`).
//!
//! Every layer of tailcut's stack is always ready: `poll_ready` returns
//! `Ready` at once and does nothing, so asking it with a waker that does
//! nothing keeps tower's contract without waiting.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::Request;
use hyper::body::Incoming;
use tower::util::Oneshot;
use tower::ServiceExt;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(super) struct CallAtOnce<S>(pub(super) S);

impl<S> hyper::service::Service<Request<Incoming>> for CallAtOnce<S>
where
    S: tower::Service<Request<Incoming>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CallFuture<S>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut service = self.0.clone();
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => CallFuture::Called {
                future: service.call(request),
            },
            Poll::Ready(Err(err)) => CallFuture::Failed { error: Some(err) },
            // Not a layer tailcut has: a service that is not ready is
            // waited for, as hyper-util would.
            Poll::Pending => CallFuture::Deferred {
                oneshot: service.oneshot(request),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a call made by [`CallAtOnce`].
    #[project = CallFutureProj]
    pub(super) enum CallFuture<S: tower::Service<Request<Incoming>>> {
        Called { #[pin] future: S::Future },
        Deferred { #[pin] oneshot: Oneshot<S, Request<Incoming>> },
        Failed { error: Option<S::Error> },
    }
}

impl<S: tower::Service<Request<Incoming>>> Future for CallFuture<S> {
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallFutureProj::Called { future } => future.poll(cx),
            CallFutureProj::Deferred { oneshot } => oneshot.poll(cx),
            CallFutureProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                // Polled again after completing: there is nothing more.
                None => Poll::Pending,
            },
        }
    }
}
