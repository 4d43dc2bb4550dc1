//! What tailcut measures about itself, and where it is read.
//!
//! [`Metrics`] is created once from the config and shared by the server
//! (connections), the proxy (upstream failures) and the latency-recording
//! middleware (one [`Exchange`] per request). Nothing on the request path
//! takes a lock or touches a shared cache line: per-request counts and
//! latencies go to per-thread counters and histograms ([`latency`]), merged
//! when read. Rarer events (connections, upstream failures, dropped log
//! lines) are atomics created up front for every label the config allows.
//! The admin listener ([`admin`]) reads them all.
//!
//! Route slots: the routes in config order, then one slot for requests that
//! matched no route (labels `route=""`, `cluster=""`).

pub mod access_log;
pub mod admin;
pub mod hgrm;
pub mod latency;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::Config;
use access_log::AccessLog;
use latency::{End, Figure, Latency, Scope};

/// The quantiles `/metrics` reports for each figure; 1.0 is the maximum.
pub const QUANTILES: [(f64, &str); 6] = [
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.99, "0.99"),
    (0.999, "0.999"),
    (0.9999, "0.9999"),
    (1.0, "1"),
];

type Labels = Vec<(String, String)>;

/// Everything tailcut counts and times; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    table: Arc<LatencyTable>,
    /// Per cluster, in config (name) order.
    connect_errors: Vec<Counter>,
    timeouts: Vec<Counter>,
    /// Per listener, in config order.
    connections_active: Vec<Gauge>,
    connections_total: Vec<Counter>,
    tls_handshake_failures: Vec<Counter>,
    access_log: Option<AccessLog>,
    ready: AtomicBool,
}

/// Route and cluster names per route slot, and the latencies recorded for them.
#[derive(Debug)]
struct LatencyTable {
    routes: Vec<(String, String)>,
    latency: Latency,
}

/// One finished request, as the latency middleware saw it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The route that matched, if any (an index in config order).
    pub route: Option<usize>,
    /// The response status.
    pub status: u16,
    /// How the response body ended.
    pub end: End,
    /// Request received to response headers.
    pub headers: Duration,
    /// Request received to the end of the response body.
    pub total: Duration,
    /// Request sent upstream to the end of the upstream response, when the
    /// request reached a backend and its response ended.
    pub upstream: Option<Duration>,
    /// Response body bytes sent.
    pub bytes: u64,
}

impl Metrics {
    /// Counters and histograms for every route, cluster and listener in `config`.
    pub fn new(config: &Config) -> Metrics {
        let mut registry = Registry::default();
        let clusters: Vec<&String> = config.upstreams.keys().collect();
        let mut routes: Vec<(String, String)> = config
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.upstream.clone()))
            .collect();
        routes.push((String::new(), String::new()));

        let per_cluster = |registry: &mut Registry, name: &str, help: &str| -> Vec<Counter> {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            clusters
                .iter()
                .map(|cluster| family.get_or_create(&labels(&[("cluster", cluster)])).clone())
                .collect()
        };
        let connect_errors = per_cluster(
            &mut registry,
            "tailcut_upstream_connect_errors",
            "Connections to a backend that failed or timed out",
        );
        let timeouts = per_cluster(
            &mut registry,
            "tailcut_upstream_timeouts",
            "Backends that did not connect or send response headers in time (504)",
        );

        let active_family = Family::<Labels, Gauge>::default();
        registry.register(
            "tailcut_connections_active",
            "Client connections open now",
            active_family.clone(),
        );
        let total_family = Family::<Labels, Counter>::default();
        registry.register(
            "tailcut_connections",
            "Client connections accepted",
            total_family.clone(),
        );
        let connections_active = config
            .listeners
            .iter()
            .map(|l| active_family.get_or_create(&labels(&[("listener", &l.name)])).clone())
            .collect();
        let connections_total = config
            .listeners
            .iter()
            .map(|l| total_family.get_or_create(&labels(&[("listener", &l.name)])).clone())
            .collect();
        let handshake_family = Family::<Labels, Counter>::default();
        registry.register(
            "tailcut_tls_handshake_failures",
            "TLS handshakes that failed or timed out, on listeners with TLS",
            handshake_family.clone(),
        );
        let tls_handshake_failures = config
            .listeners
            .iter()
            .map(|l| {
                let counter = handshake_family
                    .get_or_create(&labels(&[("listener", &l.name)]))
                    .clone();
                // Only TLS listeners appear in the exposition.
                if l.tls.is_none() {
                    handshake_family.remove(&labels(&[("listener", &l.name)]));
                }
                counter
            })
            .collect();

        let dropped = Counter::default();
        registry.register(
            "tailcut_access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            dropped.clone(),
        );
        let access_log = config
            .access_log
            .enabled
            .then(|| AccessLog::start(&config.access_log, dropped));

        let table = Arc::new(LatencyTable {
            latency: Latency::new(routes.len(), config.admin.window),
            routes,
        });
        registry.register_collector(Box::new(table.clone()));

        Metrics {
            inner: Arc::new(Inner {
                registry,
                table,
                connect_errors,
                timeouts,
                connections_active,
                connections_total,
                tls_handshake_failures,
                access_log,
                ready: AtomicBool::new(false),
            }),
        }
    }

    /// Records a finished request: its counters, its latencies and its
    /// access log line.
    pub fn record(&self, exchange: &Exchange) {
        let inner = &*self.inner;
        let no_route = inner.table.routes.len() - 1;
        let slot = exchange.route.filter(|&r| r < no_route).unwrap_or(no_route);
        let class = usize::from(exchange.status / 100).clamp(1, 5) - 1;

        let mut figures = [
            (Figure::Headers, exchange.headers),
            (Figure::Total, exchange.total),
            (Figure::Upstream, Duration::ZERO),
            (Figure::Proxy, Duration::ZERO),
        ];
        let recorded = match exchange.upstream {
            Some(upstream) => {
                figures[2].1 = upstream;
                figures[3].1 = exchange.total.saturating_sub(upstream);
                4
            }
            None => 2,
        };
        inner
            .table
            .latency
            .record(slot, class, exchange.end, &figures[..recorded]);

        if let Some(log) = &inner.access_log {
            let (route, cluster) = &inner.table.routes[slot];
            log.write(route, cluster, exchange);
        }
    }

    /// A backend connection failed (refused, reset, or timed out).
    pub fn upstream_connect_error(&self, cluster: usize) {
        if let Some(counter) = self.inner.connect_errors.get(cluster) {
            counter.inc();
        }
    }

    /// A backend did not connect or answer in time.
    pub fn upstream_timeout(&self, cluster: usize) {
        if let Some(counter) = self.inner.timeouts.get(cluster) {
            counter.inc();
        }
    }

    /// A TLS handshake on `listener` failed or timed out.
    pub fn tls_handshake_failure(&self, listener: usize) {
        if let Some(counter) = self.inner.tls_handshake_failures.get(listener) {
            counter.inc();
        }
    }

    /// A client connection was accepted on `listener`; the guard counts it
    /// as active until dropped.
    pub fn connection(&self, listener: usize) -> ConnectionGuard {
        if let Some(total) = self.inner.connections_total.get(listener) {
            total.inc();
        }
        let active = self.inner.connections_active.get(listener).cloned();
        if let Some(active) = &active {
            active.inc();
        }
        ConnectionGuard { active }
    }

    /// Marks the proxy ready (listeners bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// The route slot of the route named `name`.
    pub fn route_slot(&self, name: &str) -> Option<usize> {
        let routes = &self.inner.table.routes;
        routes[..routes.len() - 1].iter().position(|(route, _)| route == name)
    }

    /// The latency histogram of `figure` for route slot `slot` over `scope`,
    /// merged over `ends`.
    pub fn latency(
        &self,
        slot: usize,
        figure: Figure,
        ends: &[End],
        scope: Scope,
    ) -> Option<hdrhistogram::Histogram<u64>> {
        self.inner.table.latency.read().histogram(slot, figure, ends, scope)
    }

    /// Moves shipped samples into the window and rotates it; the admin
    /// listener calls this every second so that the window moves even when
    /// nobody reads it.
    pub fn tick(&self) {
        drop(self.inner.table.latency.read());
    }
}

/// Counts a client connection as active while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    active: Option<Gauge>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(active) = &self.active {
            active.dec();
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Collector for LatencyTable {
    /// Request counts since start, and quantiles of every figure over the
    /// window (merged over how bodies ended), per route and cluster;
    /// computed from the per-thread recorders when scraped.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.latency.read();
        let mut requests = encoder.encode_descriptor(
            "tailcut_requests",
            "Requests answered, by route, cluster and status class",
            None,
            MetricType::Counter,
        )?;
        for (slot, (route, cluster)) in self.routes.iter().enumerate() {
            for (class, count) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(view.requests(slot)) {
                let labels = [
                    ("route", route.as_str()),
                    ("cluster", cluster.as_str()),
                    ("status_class", class),
                ];
                ConstCounter::new(*count).encode(requests.encode_family(&labels)?)?;
            }
        }
        let mut ends = encoder.encode_descriptor(
            "tailcut_responses_ended",
            "Response bodies by how they ended: complete, error, or client_gone",
            None,
            MetricType::Counter,
        )?;
        for (slot, (route, cluster)) in self.routes.iter().enumerate() {
            for (end, count) in End::ALL.iter().zip(view.ends(slot)) {
                let labels = [
                    ("route", route.as_str()),
                    ("cluster", cluster.as_str()),
                    ("end", end.name()),
                ];
                ConstCounter::new(*count).encode(ends.encode_family(&labels)?)?;
            }
        }
        let mut rows = Vec::new();
        for (slot, (route, cluster)) in self.routes.iter().enumerate() {
            for figure in Figure::ALL {
                if let Some(histogram) = view.histogram(slot, figure, &End::ALL, Scope::Window) {
                    rows.push((route, cluster, figure, histogram));
                }
            }
        }
        drop(view);

        let mut quantiles = encoder.encode_descriptor(
            "tailcut_latency_seconds",
            "Latency quantiles over the window (quantile 1 is the maximum); figure: headers, total, upstream, proxy",
            None,
            MetricType::Gauge,
        )?;
        for (route, cluster, figure, histogram) in &rows {
            for (quantile, label) in QUANTILES {
                let micros = histogram.value_at_quantile(quantile);
                let labels = [
                    ("route", route.as_str()),
                    ("cluster", cluster.as_str()),
                    ("figure", figure.name()),
                    ("quantile", label),
                ];
                ConstGauge::new(micros as f64 / 1e6).encode(quantiles.encode_family(&labels)?)?;
            }
        }
        let mut samples = encoder.encode_descriptor(
            "tailcut_latency_window_samples",
            "Samples behind the latency quantiles",
            None,
            MetricType::Gauge,
        )?;
        for (route, cluster, figure, histogram) in &rows {
            let labels = [
                ("route", route.as_str()),
                ("cluster", cluster.as_str()),
                ("figure", figure.name()),
            ];
            ConstGauge::new(histogram.len() as i64).encode(samples.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
