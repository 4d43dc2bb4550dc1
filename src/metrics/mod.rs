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
//! Route slots: slot 0 for requests that matched no route (labels
//! `route=""`, `cluster=""`), then one per route and cluster pair, in the
//! order they first appeared (the config's, then what reloads added). A
//! pair keeps its slot across reloads; metrics of routes a reload removed
//! stay, as Prometheus counters must. Clusters and listeners are looked up
//! by name the same way, so their counters also carry over reloads.

pub mod access_log;
pub mod admin;
pub mod hgrm;
mod labels;
pub mod latency;

pub use labels::{Labelled, LabelledBody};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::admission::Shed;
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
    /// By cluster.
    connect_errors: Family<Labels, Counter>,
    timeouts: Family<Labels, Counter>,
    resolve_failures: Family<Labels, Counter>,
    budget_refused: Family<Labels, Counter>,
    /// By cluster and reason.
    shed: Family<Labels, Counter>,
    /// By route (and reason, for retries).
    retries: Family<Labels, Counter>,
    hedges: Family<Labels, Counter>,
    hedge_wins: Family<Labels, Counter>,
    hedge_delay: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    deadline_exceeded: Family<Labels, Counter>,
    /// By listener.
    connections_active: Family<Labels, Gauge>,
    connections_total: Family<Labels, Counter>,
    tls_handshake_failures: Family<Labels, Counter>,
    /// By result: `ok` or `failed`.
    reloads: Family<Labels, Counter>,
    access_log: Option<AccessLog>,
    ready: AtomicBool,
    /// What the proxy reports of its backends, once it is built.
    backends: Arc<Late>,
}

/// A collector registered before what it collects exists: the proxy's
/// per-backend state is read from the proxy, which is built after the
/// registry (and the registry cannot change once shared).
#[derive(Debug, Default)]
struct Late(std::sync::OnceLock<Box<dyn Collector>>);

impl Collector for Late {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.get() {
            Some(collector) => collector.encode(encoder),
            None => Ok(()),
        }
    }
}

/// Route and cluster names per route slot, and the latencies recorded for them.
#[derive(Debug)]
struct LatencyTable {
    /// Slot 0 is requests that matched no route (labels `route=""`,
    /// `cluster=""`); each route and cluster pair seen since start has one
    /// more. Read on the request path (the access log), so swapped whole
    /// rather than locked.
    routes: ArcSwap<Vec<(String, String)>>,
    /// Held while a slot is added.
    adding: Mutex<()>,
    latency: Latency,
}

/// A route's metrics slot could not be added: [`latency::MAX_ROUTE_SLOTS`]
/// route and cluster pairs have been seen since start.
#[derive(Debug, thiserror::Error)]
#[error(
    "route {route} to cluster {cluster}: {} route and cluster pairs have had metrics since start, the most tailcut keeps; restart tailcut",
    latency::MAX_ROUTE_SLOTS
)]
pub struct RouteSlotsFull {
    /// The route's name.
    pub route: String,
    /// Its cluster's name.
    pub cluster: String,
}

/// One finished request, as the latency middleware saw it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The route slot of the route that matched ([`Metrics::route_slot_for`]),
    /// if any.
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
    /// What tail control did to it.
    pub marks: Marks,
}

/// What tail control did to one request: its access-log marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// Attempts after the first that were retries.
    pub retries: u8,
    /// A hedge was sent.
    pub hedged: bool,
    /// The hedge's response was the one the client got.
    pub hedge_won: bool,
    /// The request's deadline passed before its response ended (504, or a
    /// body cut short).
    pub deadline_exceeded: bool,
}

/// The tail-control counters of one route.
#[derive(Debug, Clone)]
pub struct RouteTail {
    labels: Labels,
    retries: Family<Labels, Counter>,
    /// Hedges sent.
    pub hedges: Counter,
    /// Hedges whose response the client got.
    pub hedge_wins: Counter,
    /// The route's hedge delay now, seconds (0 before it has one).
    pub hedge_delay: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl RouteTail {
    /// Counts a retry for `reason` (a condition of `[routes.retry] on`).
    pub fn retried(&self, reason: &'static str) {
        let mut labels = self.labels.clone();
        labels.push(("reason".to_owned(), reason.to_owned()));
        self.retries.get_or_create(&labels).inc();
    }
}

/// The counters of one upstream cluster.
#[derive(Debug, Clone)]
pub struct ClusterCounters {
    connect_errors: Counter,
    timeouts: Counter,
    resolve_failures: Counter,
    budget_refused: Counter,
    /// By [`Shed::index`].
    shed: Arc<[Counter; 4]>,
}

impl ClusterCounters {
    /// Admission control refused a request.
    pub fn shed(&self, reason: Shed) {
        self.shed[reason.index()].inc();
    }

    /// Requests admission control refused for `reason`.
    pub fn shed_count(&self, reason: Shed) -> u64 {
        self.shed[reason.index()].get()
    }

    /// An extra attempt (retry or hedge) was refused by the budget.
    pub fn budget_refused(&self) {
        self.budget_refused.inc();
    }

    /// A backend connection failed (refused, reset, or timed out).
    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }

    /// Resolving the cluster's backend names failed; the last good set
    /// of addresses stays.
    pub fn resolve_failure(&self) {
        self.resolve_failures.inc();
    }

    /// A backend did not connect or answer in time.
    pub fn timeout(&self) {
        self.timeouts.inc();
    }
}

/// The counters of one listener.
#[derive(Debug, Clone)]
pub struct ListenerCounters {
    active: Gauge,
    total: Counter,
    /// Only TLS listeners have one, so only they appear in the exposition.
    tls_handshake_failures: Option<Counter>,
}

impl ListenerCounters {
    /// A client connection was accepted; the guard counts it as active until dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.total.inc();
        self.active.inc();
        ConnectionGuard {
            active: self.active.clone(),
        }
    }

    /// A TLS handshake failed or timed out.
    pub fn tls_handshake_failure(&self) {
        if let Some(counter) = &self.tls_handshake_failures {
            counter.inc();
        }
    }
}

fn family<M: Default + EncodeMetric + Clone + std::fmt::Debug + Send + Sync + 'static>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<Labels, M>
where
    Family<Labels, M>: prometheus_client::registry::Metric,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    family
}

impl Metrics {
    /// Reports `collector`'s metrics (the proxy's per-backend state) with
    /// the others from now on; only the first one given is kept.
    pub fn collect_backends(&self, collector: Box<dyn Collector>) {
        let _ = self.inner.backends.0.set(collector);
    }

    /// Counters and histograms for every route, cluster and listener in
    /// `config`; more are added as reloads bring new ones.
    pub fn new(config: &Config) -> Metrics {
        let mut registry = Registry::default();
        let connect_errors = family(
            &mut registry,
            "tailcut_upstream_connect_errors",
            "Connections to a backend that failed or timed out",
        );
        let resolve_failures = family(
            &mut registry,
            "tailcut_upstream_resolve_failures",
            "Resolutions of a cluster's backend names that failed (the last good addresses stay)",
        );
        let timeouts = family(
            &mut registry,
            "tailcut_upstream_timeouts",
            "Backends that did not connect or send response headers in time (504)",
        );
        let budget_refused = family(
            &mut registry,
            "tailcut_budget_refused",
            "Retries and hedges the cluster's budget refused",
        );
        let shed = family(
            &mut registry,
            "tailcut_shed",
            "Requests refused by the cluster's admission control (503), by reason: \
             queue_full, queue_timeout, overloaded, deadline",
        );
        let retries = family(
            &mut registry,
            "tailcut_retries",
            "Requests sent again after a failed attempt, by route and reason",
        );
        let hedges = family(
            &mut registry,
            "tailcut_hedges",
            "Second attempts sent to another backend while the first was still waiting for response headers",
        );
        let hedge_wins = family(
            &mut registry,
            "tailcut_hedge_wins",
            "Hedges whose response the client got",
        );
        let hedge_delay = family(
            &mut registry,
            "tailcut_hedge_delay_seconds",
            "How long a route's requests wait for response headers before they are hedged (0: not yet known)",
        );
        let deadline_exceeded = family(
            &mut registry,
            "tailcut_deadline_exceeded",
            "Requests whose deadline passed before their response ended",
        );
        let connections_active = family(
            &mut registry,
            "tailcut_connections_active",
            "Client connections open now",
        );
        let connections_total = family(&mut registry, "tailcut_connections", "Client connections accepted");
        let tls_handshake_failures = family(
            &mut registry,
            "tailcut_tls_handshake_failures",
            "TLS handshakes that failed or timed out, on listeners with TLS",
        );
        let reloads = family(
            &mut registry,
            "tailcut_config_reloads",
            "Configuration reloads, by result: ok (applied) or failed (the running config kept)",
        );

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
            routes: ArcSwap::from_pointee(vec![(String::new(), String::new())]),
            adding: Mutex::new(()),
            latency: Latency::new(config.admin.window),
        });
        registry.register_collector(Box::new(table.clone()));
        let backends = Arc::new(Late::default());
        registry.register_collector(Box::new(backends.clone()));

        let metrics = Metrics {
            inner: Arc::new(Inner {
                registry,
                table,
                connect_errors,
                timeouts,
                resolve_failures,
                budget_refused,
                shed,
                retries,
                hedges,
                hedge_wins,
                hedge_delay,
                deadline_exceeded,
                connections_active,
                connections_total,
                tls_handshake_failures,
                reloads,
                access_log,
                ready: AtomicBool::new(false),
                backends,
            }),
        };
        // Every configured label appears from the start, at zero.
        for route in &config.routes {
            // A fresh table has room for far more routes than a config may hold.
            let _ = metrics.route_slot_for(&route.name, &route.upstream);
            metrics.route_tail(&route.name);
        }
        for name in config.upstreams.keys() {
            metrics.cluster(name);
        }
        for listener in &config.listeners {
            metrics.listener(&listener.name, listener.tls.is_some());
        }
        for result in ["ok", "failed"] {
            drop(metrics.inner.reloads.get_or_create(&labels(&[("result", result)])));
        }
        metrics
    }

    /// The route slot of `route` sending to `cluster`: the same slot for the
    /// same pair across reloads, a new one for a new pair.
    pub fn route_slot_for(&self, route: &str, cluster: &str) -> Result<usize, RouteSlotsFull> {
        let table = &self.inner.table;
        let find = |routes: &[(String, String)]| routes.iter().position(|(r, c)| r == route && c == cluster);
        if let Some(slot) = find(&table.routes.load()) {
            return Ok(slot);
        }
        let _adding = table.adding.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes = Vec::clone(&table.routes.load());
        if let Some(slot) = find(&routes) {
            return Ok(slot);
        }
        if routes.len() >= latency::MAX_ROUTE_SLOTS {
            return Err(RouteSlotsFull {
                route: route.to_owned(),
                cluster: cluster.to_owned(),
            });
        }
        routes.push((route.to_owned(), cluster.to_owned()));
        table.routes.store(Arc::new(routes));
        Ok(table.routes.load().len() - 1)
    }

    /// The counters of the cluster named `name` (the same ones across reloads).
    pub fn cluster(&self, name: &str) -> ClusterCounters {
        let labels = labels(&[("cluster", name)]);
        ClusterCounters {
            connect_errors: self.inner.connect_errors.get_or_create(&labels).clone(),
            timeouts: self.inner.timeouts.get_or_create(&labels).clone(),
            resolve_failures: self.inner.resolve_failures.get_or_create(&labels).clone(),
            budget_refused: self.inner.budget_refused.get_or_create(&labels).clone(),
            shed: Arc::new(Shed::ALL.map(|reason| {
                let mut labels = labels.clone();
                labels.push(("reason".to_owned(), reason.label().to_owned()));
                self.inner.shed.get_or_create(&labels).clone()
            })),
        }
    }

    /// The tail-control counters of the route named `route` (the same ones
    /// across reloads).
    pub fn route_tail(&self, route: &str) -> RouteTail {
        let labels = labels(&[("route", route)]);
        drop(self.inner.deadline_exceeded.get_or_create(&labels));
        RouteTail {
            retries: self.inner.retries.clone(),
            hedges: self.inner.hedges.get_or_create(&labels).clone(),
            hedge_wins: self.inner.hedge_wins.get_or_create(&labels).clone(),
            hedge_delay: self.inner.hedge_delay.get_or_create(&labels).clone(),
            labels,
        }
    }

    /// The counters of the listener named `name` (the same ones across reloads).
    pub fn listener(&self, name: &str, tls: bool) -> ListenerCounters {
        let labels = labels(&[("listener", name)]);
        ListenerCounters {
            active: self.inner.connections_active.get_or_create(&labels).clone(),
            total: self.inner.connections_total.get_or_create(&labels).clone(),
            tls_handshake_failures: tls.then(|| self.inner.tls_handshake_failures.get_or_create(&labels).clone()),
        }
    }

    /// Counts a configuration reload: applied (`ok`) or refused.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.inner.reloads.get_or_create(&labels(&[("result", result)])).inc();
    }

    /// Records a finished request: its counters, its latencies and its
    /// access log line.
    pub fn record(&self, exchange: &Exchange) {
        let inner = &*self.inner;
        let slot = exchange.route.unwrap_or(0);
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

        if exchange.marks.deadline_exceeded {
            let routes = inner.table.routes.load();
            if let Some((route, _)) = routes.get(slot) {
                inner
                    .deadline_exceeded
                    .get_or_create(&labels(&[("route", route)]))
                    .inc();
            }
        }
        if let Some(log) = &inner.access_log {
            let routes = inner.table.routes.load();
            if let Some((route, cluster)) = routes.get(slot) {
                log.write(route, cluster, exchange);
            }
        }
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

    /// The route slot of the route named `name`: after a reload that moved
    /// it to another cluster, the newest one.
    pub fn route_slot(&self, name: &str) -> Option<usize> {
        let routes = self.inner.table.routes.load();
        routes
            .iter()
            .skip(1)
            .rposition(|(route, _)| route == name)
            .map(|i| i + 1)
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

    /// Takes in what the workers recorded and rotates the window; the admin
    /// listener calls this every second so that the window moves even when
    /// nobody reads it.
    pub fn tick(&self) {
        drop(self.inner.table.latency.read());
    }
}

/// Counts a client connection as active while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    active: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.active.dec();
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
        let routes = self.routes.load();
        let view = self.latency.read();
        let mut requests = encoder.encode_descriptor(
            "tailcut_requests",
            "Requests answered, by route, cluster and status class",
            None,
            MetricType::Counter,
        )?;
        for (slot, (route, cluster)) in routes.iter().enumerate() {
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
        for (slot, (route, cluster)) in routes.iter().enumerate() {
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
        for (slot, (route, cluster)) in routes.iter().enumerate() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_exported_at_zero_before_its_first_request() {
        let toml = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
                    [[routes]]\nname = \"first\"\npath_prefix = \"/a\"\nupstream = \"app\"\n\
                    [[routes]]\nname = \"second\"\nupstream = \"app\"\n\
                    [upstreams.app]\nbackends = [\"127.0.0.1:9\"]\n";
        let config = crate::config::parse(std::path::Path::new("t.toml"), toml).expect("config");
        let metrics = Metrics::new(&config);
        let zero = |route: &str| {
            format!("tailcut_requests_total{{route=\"{route}\",cluster=\"app\",status_class=\"2xx\"}} 0\n")
        };
        let text = metrics.encode();
        for route in ["first", "second"] {
            assert!(text.contains(&zero(route)), "{text}");
        }
        // Routes a reload adds, past the first chunk of slots.
        for i in 0..40 {
            metrics.route_slot_for(&format!("r{i}"), "app").expect("a free slot");
        }
        assert!(metrics.encode().contains(&zero("r39")));
        // The same pair keeps its slot.
        assert_eq!(metrics.route_slot_for("second", "app").expect("slot"), 2);
    }
}
