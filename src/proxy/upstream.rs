//! Upstream clusters: named sets of backends, each backend with its own
//! pool of keep-alive connections.
//!
//! Owns connections to backends. Knows nothing of routes or client
//! connections; hands back response heads with the [`Lease`] that streams
//! their bodies and keeps their connection moving.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Response;
use hyper::body::Incoming;

pub use super::pool::Lease;
use rustls::pki_types::ServerName;

use super::headers::Added;
use super::pool::{self, Pool, SendError};
use crate::balance::RoundRobin;
use crate::config;
use crate::metrics::ClusterCounters;

/// One backend of a cluster.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    host: http::HeaderValue,
    pool: Arc<Pool>,
}

impl Backend {
    /// `Host` naming this backend, for requests that arrive without one.
    pub fn host_header(&self) -> http::HeaderValue {
        self.host.clone()
    }

    /// Opens a dedicated connection (TCP, and TLS for a TLS upstream), as
    /// the pool does for its own.
    pub(super) async fn open(&self) -> Result<pool::UpstreamIo, SendError> {
        self.pool.open().await
    }

    /// Sends a request (`head` with an origin-form URI, the fields tailcut
    /// adds to it, and `body`) on a pooled connection; `response_timeout` counts from when the request
    /// and its body are sent. `now` is the time the caller read just before:
    /// the pool's idle check and the response timer use it instead of
    /// reading the clock again.
    ///
    /// Not an `async fn`: that would be one more level of future, holding
    /// its own copy of the arguments, in the future every request boxes.
    pub fn send<'a>(
        &'a self,
        head: &'a mut http::request::Parts,
        added: Added<'a>,
        body: Incoming,
        now: std::time::Instant,
        response_timeout: std::time::Duration,
        max_body: Option<u64>,
    ) -> impl std::future::Future<Output = Result<(Response<()>, Lease), SendError>> + Send + 'a {
        self.pool
            .send(head, added, body, now.into(), response_timeout, max_body)
    }
}

/// A named set of interchangeable backends.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name from the config.
    pub name: String,
    backends: Vec<Backend>,
    balancer: RoundRobin,
    /// Its connect failures and timeouts.
    pub counters: ClusterCounters,
    /// What it was built from, to tell whether a reload changed it.
    definition: config::Upstream,
    connect_timeout: std::time::Duration,
}

impl Cluster {
    /// A cluster with empty pools; connections open on first use.
    pub fn new(
        name: &str,
        upstream: &config::Upstream,
        timeouts: &config::Timeouts,
        counters: ClusterCounters,
    ) -> Self {
        let backends = upstream
            .backends
            .iter()
            .map(|&addr| Backend {
                addr,
                // A socket address always forms a valid header value.
                host: http::HeaderValue::from_str(&addr.to_string())
                    .unwrap_or_else(|_| http::HeaderValue::from_static("localhost")),
                pool: Arc::new(Pool::new(
                    addr,
                    upstream.max_idle_per_backend,
                    upstream.pool_idle_timeout,
                    timeouts.connect,
                    upstream.tls.as_ref().map(|tls| pool::UpstreamTls {
                        connector: tokio_rustls::TlsConnector::from(tls.client_config.clone()),
                        // Validated when the config was read; the backend's
                        // IP address when no name is configured.
                        server_name: tls
                            .server_name
                            .as_deref()
                            .and_then(|name| ServerName::try_from(name.to_owned()).ok())
                            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into())),
                    }),
                )),
            })
            .collect();
        Self {
            name: name.to_owned(),
            backends,
            balancer: RoundRobin::new(),
            counters,
            definition: upstream.clone(),
            connect_timeout: timeouts.connect,
        }
    }

    /// Whether this cluster is what `upstream` and `timeouts` would build,
    /// so that a reload can keep it and the connections in its pools.
    pub fn is_defined_as(&self, upstream: &config::Upstream, timeouts: &config::Timeouts) -> bool {
        self.definition == *upstream && self.connect_timeout == timeouts.connect
    }

    /// The backend for the next request.
    pub fn pick(&self) -> &Backend {
        &self.backends[self.balancer.pick(self.backends.len())]
    }
}
