//! Upstream clusters: a pooled keep-alive HTTP/1.1 client per cluster, and
//! its backends.
//!
//! Owns connections to backends. Knows nothing of routes or client
//! connections; hands back hyper responses whose bodies are still streaming.

use std::net::SocketAddr;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balance::RoundRobin;
use crate::config;

/// Largest read buffer of one upstream connection.
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// One backend of a cluster.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    authority: Authority,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        // A SocketAddr's Display form is always a valid authority.
        let authority = Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        Self { addr, authority }
    }

    /// The absolute URI the pooled client needs: `http://backend` + the
    /// request's path and query, moved rather than copied.
    pub fn absolute_uri(&self, path_and_query: Option<PathAndQuery>) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")))
            .build()
    }
}

/// A named set of interchangeable backends sharing one connection pool.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name from the config.
    pub name: String,
    backends: Vec<Backend>,
    balancer: RoundRobin,
    client: Client<HttpConnector, Incoming>,
}

impl Cluster {
    /// A cluster with an empty pool; connections open on first use.
    pub fn new(name: &str, upstream: &config::Upstream, timeouts: &config::Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_keepalive(Some(upstream.pool_idle_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(upstream.pool_idle_timeout)
            .pool_max_idle_per_host(upstream.max_idle_per_backend)
            // hyper's default lets the read buffer grow to ~400 KiB per
            // connection; 64 KiB keeps memory per pooled connection small
            // while still reading large bodies in few system calls.
            .http1_max_buf_size(UPSTREAM_READ_BUFFER)
            // The proxy sets Host itself: the client's Host, not the backend's address.
            .set_host(false)
            .build(connector);
        Self {
            name: name.to_owned(),
            backends: upstream.backends.iter().copied().map(Backend::new).collect(),
            balancer: RoundRobin::new(),
            client,
        }
    }

    /// The backend for the next request.
    pub fn pick(&self) -> &Backend {
        &self.backends[self.balancer.pick(self.backends.len())]
    }

    /// Sends `request` (whose URI must be absolute) on a pooled connection.
    pub async fn send(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}
