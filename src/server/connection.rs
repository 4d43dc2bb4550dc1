//! Serving one client connection: HTTP/1.1 or HTTP/2 (detected from the
//! first bytes), the idle timeout, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::middleware::{self, activity::Activity};
use crate::proxy::{Proxy, ProxyError};

/// What every connection of a server shares.
pub(super) struct Shared {
    pub http: auto::Builder<TokioExecutor>,
    pub proxy: Proxy,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// Serves requests on `stream` until the client closes, the connection idles
/// out, or shutdown drains it. `_permit` holds a place under the listener's
/// connection limit for as long as the connection lives.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let span = tracing::debug_span!("connection", %peer, %listener);
    async move {
        let activity = Activity::new();
        let service = middleware::stack(shared.proxy.service_for(peer, "http"), activity.clone());
        let connection = shared
            .http
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(cause = %err, "connection ended with error");
                    }
                    break;
                }
                () = shared.shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.idle_for(shared.idle_timeout), if !closing => {
                    tracing::debug!("idle timeout");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// Answers every request on an over-limit connection with 503 and
/// `Retry-After`, then closes it. Bounded by the header timeout so a silent
/// client cannot hold the rejection slot.
pub(super) async fn reject(
    stream: TcpStream,
    listener: Arc<str>,
    limit: usize,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |_request| {
        let error = ProxyError::Overloaded {
            listener: listener.to_string(),
            limit,
        };
        std::future::ready(Ok::<_, Infallible>(error.into_response()))
    });
    let connection = shared.http.serve_connection(TokioIo::new(stream), service);
    if tokio::time::timeout(shared.header_timeout, connection).await.is_err() {
        tracing::debug!("over-limit connection closed at the header timeout");
    }
}
