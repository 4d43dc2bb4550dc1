//! Upstream clusters: named sets of backends, each backend with its pool of
//! keep-alive connections and its load (requests in flight, latency
//! estimate, ejection and health), and the balancer that chooses among them.
//!
//! Knows nothing of routes or client connections; hands back response heads
//! with the [`Exchange`] that streams their bodies and keeps their
//! connection moving.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::Response;
use rustls::pki_types::ServerName;

use super::budget::Budget;
use super::connect::{Connector, UpstreamIo, UpstreamTls};
use super::error::UpstreamError;
use super::exchange::{self, Exchange};
use super::h1::EncodedRequest;
use super::pool::Pool;
use super::upload::UploadBody;
use crate::admission::{Admission, Permit};
use crate::balance::{self, Balance, Ejector, InFlight, Load};
use crate::config;
use crate::metrics::ClusterCounters;

/// One backend of a cluster.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    host: http::HeaderValue,
    pool: Arc<Pool>,
    /// Requests it served, by the class of the status the client got
    /// (1xx to 5xx; a gateway failure is a 5xx).
    answered: [AtomicU64; 5],
}

/// The backend chosen for a request, counted in flight until the guard
/// goes.
pub struct Picked {
    /// Its index in the cluster.
    pub index: usize,
    /// Its request in flight.
    pub in_flight: InFlight,
}

impl Picked {
    /// The same choice, holding `permit` (the request's place under the
    /// cluster's concurrency limit) while it is in flight.
    pub fn admitted(mut self, permit: Option<Permit>) -> Self {
        self.in_flight.hold(permit);
        self
    }
}

impl Backend {
    /// Counts a request it served whose client got `status`.
    pub fn count(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.answered[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests it served, by status class (1xx to 5xx).
    pub fn answered(&self) -> [u64; 5] {
        self.answered.each_ref().map(|count| count.load(Ordering::Relaxed))
    }

    /// `Host` naming this backend, for requests that arrive without one.
    pub fn host_header(&self) -> http::HeaderValue {
        self.host.clone()
    }

    /// Opens a dedicated connection (TCP, and TLS for a TLS upstream), as
    /// the pool does for its own.
    pub async fn open(&self) -> Result<UpstreamIo, UpstreamError> {
        self.pool.connector().open().await
    }

    /// An empty buffer to encode a request head into (see [`Backend::send`]),
    /// reused from an earlier request when there is one.
    pub fn head_buffer(&self) -> Vec<u8> {
        self.pool.head_buffer()
    }

    /// Sends an encoded request and its body on a pooled connection, and
    /// reads the response head into `headers` (an emptied map whose storage
    /// is reused); `response_timeout` counts from when the request and its
    /// body are sent; the outcome goes to `in_flight` (see
    /// [`exchange::send`]). The future borrows nothing, so the request's own
    /// future can hold it without holding what it came from.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        request: EncodedRequest,
        headers: http::HeaderMap,
        body: Option<UploadBody>,
        sent: std::time::Instant,
        response_timeout: std::time::Duration,
        in_flight: InFlight,
    ) -> impl std::future::Future<Output = Result<(Response<()>, Exchange), UpstreamError>> + Send + 'static {
        exchange::send(
            self.pool.clone(),
            request,
            headers,
            body,
            sent,
            response_timeout,
            in_flight,
        )
    }
}

/// A named set of interchangeable backends.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name from the config.
    pub name: String,
    backends: Vec<Backend>,
    /// Each backend's load, in the order of `backends`.
    loads: Vec<Arc<Load>>,
    /// Which backends are ejected for failing.
    ejector: Arc<Ejector>,
    balancer: Box<dyn Balance>,
    /// Its connect failures and timeouts.
    pub counters: ClusterCounters,
    /// What it was built from, to tell whether a reload changed it.
    definition: config::Upstream,
    connect_timeout: std::time::Duration,
    /// What `backends` were made from, in their order.
    endpoints: Vec<Endpoint>,
    /// The extra attempts (retries and hedges) its routes may add.
    pub budget: Budget,
    /// Its admission control, when `[upstreams.NAME.concurrency]` enables it.
    admission: Option<Arc<Admission>>,
}

/// A backend's address, and the DNS name it was resolved from, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The configured name that resolved to it.
    pub name: Option<Arc<str>>,
}

impl Endpoint {
    /// `name:port`, or the address: the `Host` a request without one gets.
    fn authority(&self) -> String {
        match &self.name {
            Some(name) => format!("{name}:{}", self.addr.port()),
            None => self.addr.to_string(),
        }
    }
}

/// A pool of connections to `endpoint`, over TLS when the upstream says so:
/// the certificate must name `tls.server_name`, else the name the endpoint
/// was resolved from, else its IP address.
fn new_pool(upstream: &config::Upstream, timeouts: &config::Timeouts, endpoint: &Endpoint) -> Pool {
    let addr = endpoint.addr;
    let tls = upstream.tls.as_ref().map(|tls| UpstreamTls {
        connector: tokio_rustls::TlsConnector::from(tls.client_config.clone()),
        // Names were validated when the config was read.
        server_name: tls
            .server_name
            .as_deref()
            .or(endpoint.name.as_deref())
            .and_then(|name| ServerName::try_from(name.to_owned()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into())),
    });
    Pool::new(
        Connector::new(addr, timeouts.connect, tls),
        upstream.max_idle_per_backend,
        upstream.pool_idle_timeout,
    )
}

impl Cluster {
    /// A cluster of `endpoints` (the upstream's addresses, and those its
    /// names resolved to) with empty pools; connections open on first use.
    /// The backends it shares with `previous` (the cluster of the same name
    /// it replaces, after a reload or a new resolution) keep their latency
    /// estimates, ejections and counts, and, when `previous` was defined
    /// the same way, their pools with the connections in them.
    pub fn new(
        name: &str,
        upstream: &config::Upstream,
        timeouts: &config::Timeouts,
        counters: ClusterCounters,
        previous: Option<&Cluster>,
        endpoints: &[Endpoint],
    ) -> Self {
        let same_definition = previous.filter(|old| old.is_defined_as(upstream, timeouts));
        let backends = endpoints
            .iter()
            .map(|endpoint| {
                let addr = endpoint.addr;
                let kept_pool = same_definition
                    .and_then(|old| old.backends.iter().find(|b| b.addr == addr))
                    .map(|b| b.pool.clone());
                Backend {
                    addr,
                    // A socket address, or a checked DNS name and a port,
                    // always forms a valid header value.
                    host: http::HeaderValue::from_str(&endpoint.authority())
                        .unwrap_or_else(|_| http::HeaderValue::from_static("localhost")),
                    pool: kept_pool.unwrap_or_else(|| Arc::new(new_pool(upstream, timeouts, endpoint))),
                    answered: Default::default(),
                }
            })
            .collect::<Vec<_>>();
        let ejector = Arc::new(Ejector::new(backends.len(), upstream.outlier.clone()));
        let loads = (0..backends.len())
            .map(|index| {
                Arc::new(Load::in_cluster(
                    upstream.ewma_default_rtt,
                    upstream.ewma_decay,
                    ejector.clone(),
                    index,
                ))
            })
            .collect::<Vec<_>>();
        for (index, backend) in backends.iter().enumerate() {
            let Some(old) = previous else { break };
            let Some(old_index) = old.backends.iter().position(|b| b.addr == backend.addr) else {
                continue;
            };
            loads[index].inherit(&old.loads[old_index]);
            ejector.inherit(index, &old.ejector, old_index);
            for (count, old_count) in backend.answered.iter().zip(old.backends[old_index].answered()) {
                count.store(old_count, Ordering::Relaxed);
            }
        }
        // Kept, with its limit, minimum RTT and permits, whenever its own
        // section is unchanged: a new resolution, or a reload that changed
        // another key, must not send the limit back to `min_limit` (and
        // shed while it grows back).
        let admission = match previous.filter(|old| old.definition.concurrency == upstream.concurrency) {
            Some(old) => old.admission.clone(),
            None => upstream
                .concurrency
                .enabled
                .then(|| Arc::new(Admission::new(&upstream.concurrency, counters.clone()))),
        };
        Self {
            name: name.to_owned(),
            backends,
            loads,
            ejector,
            balancer: balance::for_policy(upstream.balance),
            counters,
            definition: upstream.clone(),
            connect_timeout: timeouts.connect,
            endpoints: endpoints.to_vec(),
            budget: Budget::new(&upstream.budget),
            admission,
        }
    }

    /// Its admission control, if enabled.
    pub fn admission(&self) -> Option<&Arc<Admission>> {
        self.admission.as_ref()
    }

    /// A permit for an extra attempt (a retry or a hedge) under the
    /// concurrency limit: `Some(None)` when the cluster has no limit,
    /// `None` when the limit is reached or requests wait for it (extra
    /// attempts never wait).
    pub fn extra_permit(&self) -> Option<Option<Permit>> {
        match &self.admission {
            None => Some(None),
            Some(admission) => admission.try_extra().map(Some),
        }
    }

    /// The upstream it was built from.
    pub fn definition(&self) -> &config::Upstream {
        &self.definition
    }

    /// The addresses it balances over, with the names they came from.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Whether this cluster is what `upstream` and `timeouts` would build,
    /// so that a reload can keep it and the connections in its pools.
    pub fn is_defined_as(&self, upstream: &config::Upstream, timeouts: &config::Timeouts) -> bool {
        self.definition == *upstream && self.connect_timeout == timeouts.connect
    }

    /// The backend for the next request, by the cluster's policy, counted
    /// in flight from now; `None` when the cluster has no backend (its
    /// names resolved to no address yet).
    pub fn pick(&self) -> Option<Picked> {
        if self.backends.is_empty() {
            return None;
        }
        let index = match self.ejector.in_rotation(tokio::time::Instant::now) {
            None => balance::pick(&*self.balancer, &self.loads),
            // Some backend is ejected: choose among the others.
            Some(in_rotation) => {
                let loads: Vec<Arc<Load>> = in_rotation.iter().map(|&i| self.loads[i].clone()).collect();
                in_rotation[balance::pick(&*self.balancer, &loads)]
            }
        };
        Some(Picked {
            index,
            in_flight: self.loads[index].start(),
        })
    }

    /// A backend for another attempt of a request already sent to each of
    /// `tried`, chosen by the cluster's policy among the others in
    /// rotation. When none is left: for a retry (`may_repeat`), any
    /// backend, as [`Cluster::pick`] would choose; for a hedge, `None`.
    pub fn pick_other(&self, tried: &[usize], may_repeat: bool) -> Option<Picked> {
        let now = tokio::time::Instant::now;
        let in_rotation = self
            .ejector
            .in_rotation(now)
            .unwrap_or_else(|| (0..self.backends.len()).collect());
        let others: Vec<usize> = in_rotation.into_iter().filter(|i| !tried.contains(i)).collect();
        if others.is_empty() {
            return if may_repeat { self.pick() } else { None };
        }
        let loads: Vec<Arc<Load>> = others.iter().map(|&i| self.loads[i].clone()).collect();
        let index = others[balance::pick(&*self.balancer, &loads)];
        Some(Picked {
            index,
            in_flight: self.loads[index].start(),
        })
    }

    /// Backend `index` (from [`Cluster::pick`]).
    pub fn backend(&self, index: usize) -> &Backend {
        &self.backends[index]
    }

    /// How many backends it has.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether it has no backend: its names resolved to no address (yet).
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Records a health check of backend `index`; its new state (healthy
    /// or not) when that changed. `thresholds`: passes, then failures, in
    /// a row that change it.
    pub fn health_checked(&self, index: usize, passed: bool, thresholds: (usize, usize)) -> Option<bool> {
        self.ejector.checked(index, passed, thresholds.0, thresholds.1)
    }

    /// Counts a failed exchange in the cluster's connect-failure and
    /// timeout counters.
    pub fn count_error(&self, err: &UpstreamError) {
        if err.is_connect() {
            self.counters.connect_error();
        }
        if err.is_timeout() {
            self.counters.timeout();
        }
    }

    /// Choices made with every backend out of rotation (panic mode).
    pub fn panics(&self) -> u64 {
        self.ejector.panics()
    }

    /// Each backend with what is known of its state now, for metrics.
    pub fn backend_states(&self) -> impl Iterator<Item = BackendState<'_>> {
        let now = tokio::time::Instant::now();
        self.backends
            .iter()
            .enumerate()
            .map(move |(index, backend)| BackendState {
                backend,
                in_flight: self.loads[index].in_flight(),
                latency_estimate: self.loads[index].latency_estimate(now),
                ejected: self.ejector.is_ejected(index, now),
                healthy: self.ejector.is_healthy(index),
                ejections: self.ejector.ejections(index),
            })
    }
}

/// A backend's state at one moment.
#[derive(Debug)]
pub struct BackendState<'a> {
    /// The backend.
    pub backend: &'a Backend,
    /// Requests in flight to it.
    pub in_flight: usize,
    /// Its latency estimate, seconds.
    pub latency_estimate: f64,
    /// Whether outlier ejection has taken it out of rotation.
    pub ejected: bool,
    /// Whether it passes its health checks (always, without them).
    pub healthy: bool,
    /// How many times it was ejected.
    pub ejections: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn upstream(extra: &str) -> (config::Config, ClusterCounters) {
        let toml = format!(
            "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n\
             [upstreams.app]\nbackends = [\"127.0.0.1:9\"]\n{extra}"
        );
        let config = crate::config::parse(std::path::Path::new("t.toml"), &toml).expect("config");
        let counters = Metrics::new(&config).cluster("app");
        (config, counters)
    }

    fn cluster(config: &config::Config, counters: &ClusterCounters, previous: Option<&Cluster>) -> Cluster {
        let endpoints = [Endpoint {
            addr: "127.0.0.1:9".parse().expect("address"),
            name: None,
        }];
        Cluster::new(
            "app",
            &config.upstreams["app"],
            &config.timeouts,
            counters.clone(),
            previous,
            &endpoints,
        )
    }

    #[test]
    fn admission_survives_a_change_to_other_keys_but_not_to_its_own() {
        let limited = "[upstreams.app.concurrency]\nenabled = true\n";
        let (config, counters) = upstream(limited);
        let first = cluster(&config, &counters, None);
        let admission = first.admission().expect("enabled").clone();
        // Another key changed: the same admission, limit and all.
        let (changed, _) = upstream(&format!("pool_idle_timeout = \"5s\"\n{limited}"));
        let second = cluster(&changed, &counters, Some(&first));
        assert!(Arc::ptr_eq(second.admission().expect("enabled"), &admission));
        // Its own section changed: a new one.
        let (retuned, _) = upstream(&format!("{limited}max_limit = 50\n"));
        let third = cluster(&retuned, &counters, Some(&second));
        assert!(!Arc::ptr_eq(third.admission().expect("enabled"), &admission));
        // Turned off: none.
        let (off, _) = upstream("");
        assert!(cluster(&off, &counters, Some(&third)).admission().is_none());
    }
}
