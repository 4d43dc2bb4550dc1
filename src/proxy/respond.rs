//! Answering the client: the response future ([`Forward`]) polls the
//! exchange, counts its outcome against its backend, rewrites the response
//! head and hands the body over to stream; a failure becomes its one status
//! in `error.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;

use super::prepare::Pooled;
use super::{ProxyBody, ProxyError, Shared};
use crate::headers;
use crate::metrics::Marks;
use crate::upstream::UpstreamError;

/// The response future of [`ProxyService`]: the exchange with the backend,
/// or the error that stopped the request before one.
pub struct Forward {
    pub(super) stage: Stage,
    /// The request was HEAD: an error's response goes without its text
    /// (an HTTP/2 client resets a stream whose answer to HEAD has data).
    pub(super) head: bool,
}

pub(super) enum Stage {
    /// On a pooled connection.
    Pooled {
        exchange: Pooled,
        shared: Arc<Shared>,
        route: Option<usize>,
    },
    /// Tunnelling a protocol upgrade.
    Upgrade {
        tunnel: Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>,
        route: Option<usize>,
    },
    /// Sent once or more (retried, hedged).
    Replayed { attempts: Replayed, route: Option<usize> },
    /// Waiting for admission; then the stage it goes on in.
    Queued {
        next: Pin<Box<dyn Future<Output = Stage> + Send>>,
    },
    /// Refused before reaching a backend.
    Failed {
        error: Option<ProxyError>,
        route: Option<usize>,
    },
}

/// A request's attempts ([`super::retry::run`]): the client's response or
/// error, and what tail control did.
pub(super) type Replayed = Pin<Box<dyn Future<Output = (Result<Response<ProxyBody>, ProxyError>, Marks)> + Send>>;

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.stage {
            Stage::Pooled { .. } => "pooled",
            Stage::Upgrade { .. } => "upgrade",
            Stage::Replayed { .. } => "replayed",
            Stage::Queued { .. } => "queued",
            Stage::Failed { .. } => "failed",
        };
        f.debug_tuple("Forward").field(&stage).finish()
    }
}

impl Future for Forward {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the futures are boxed).
        let this = self.get_mut();
        let mut marks = Marks::default();
        while let Stage::Queued { next } = &mut this.stage {
            this.stage = ready!(next.as_mut().poll(cx));
        }
        let (result, route) = match &mut this.stage {
            Stage::Pooled {
                exchange,
                shared,
                route,
            } => {
                let outcome = ready!(exchange.send.as_mut().poll(cx)).map(|(response, upstream)| {
                    let (mut parts, ()) = response.into_parts();
                    headers::rewrite_response(&mut parts.headers, false);
                    let body = ProxyBody::upstream(upstream, exchange.deadline, exchange.sent);
                    Response::from_parts(parts, body)
                });
                let result = shared.outcome(exchange.cluster, exchange.backend, outcome);
                // A response timeout cut short by the request's deadline.
                marks.deadline_exceeded = result.as_ref().is_err_and(|error| error.status() == 504)
                    && exchange
                        .deadline
                        .is_some_and(|deadline| deadline <= tokio::time::Instant::now());
                (result, *route)
            }
            Stage::Upgrade { tunnel, route } => (ready!(tunnel.as_mut().poll(cx)), *route),
            Stage::Replayed { attempts, route } => {
                let (result, replayed) = ready!(attempts.as_mut().poll(cx));
                marks = replayed;
                (result, *route)
            }
            // Not reached: the loop above has left the queue behind.
            Stage::Queued { .. } => return Poll::Pending,
            Stage::Failed { error, route } => match error.take() {
                Some(error) => {
                    marks.deadline_exceeded = matches!(error, ProxyError::DeadlinePassed);
                    (Err(error), *route)
                }
                // Polled again after completing: there is nothing more.
                None => return Poll::Pending,
            },
        };
        let mut response = result.unwrap_or_else(|error| {
            let mut response = error.into_response();
            if this.head {
                *response.body_mut() = ProxyBody::empty();
            }
            response
        });
        response.body_mut().set_route(route);
        response.body_mut().set_marks(marks);
        tracing::debug!(status = response.status().as_u16(), "response headers");
        Poll::Ready(Ok(response))
    }
}

impl Shared {
    /// Counts how an exchange with backend `backend_index` of cluster
    /// `cluster_index` ended, by the status its client gets, and maps a
    /// failure to that status (the cluster counts connect failures and
    /// timeouts too).
    pub(super) fn outcome<B>(
        &self,
        cluster_index: usize,
        backend_index: usize,
        outcome: Result<Response<B>, UpstreamError>,
    ) -> Result<Response<B>, ProxyError> {
        match outcome {
            Ok(response) => {
                let backend = self.clusters[cluster_index].backend(backend_index);
                backend.count(response.status());
                Ok(response)
            }
            Err(err) => Err(self.failed(cluster_index, backend_index, err)),
        }
    }

    /// The failure half of [`Shared::outcome`].
    pub(super) fn failed(&self, cluster_index: usize, backend_index: usize, err: UpstreamError) -> ProxyError {
        let cluster = &self.clusters[cluster_index];
        let backend = cluster.backend(backend_index);
        cluster.count_error(&err);
        let error = ProxyError::from_upstream(&cluster.name, backend.addr, err);
        backend.count(error.status());
        error
    }
}
