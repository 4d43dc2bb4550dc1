//! The state of every backend of the running configuration, as metrics:
//! requests in flight, latency estimate, ejection, and requests served by
//! status class. Read from the clusters when `/metrics` is scraped; nothing
//! is recorded for it on the request path beyond what balancing keeps.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::cluster::{BackendState, Cluster};

/// The clusters of whichever configuration is current.
pub type CurrentClusters = Box<dyn Fn() -> Vec<Arc<Cluster>> + Send + Sync>;

/// Reads the backends of the clusters `current` returns when scraped.
pub struct BackendMetrics {
    current: CurrentClusters,
}

impl BackendMetrics {
    /// Reports the backends of the clusters `current` returns.
    pub fn new(current: CurrentClusters) -> Self {
        Self { current }
    }
}

impl std::fmt::Debug for BackendMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendMetrics").finish_non_exhaustive()
    }
}

impl Collector for BackendMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clusters = (self.current)();
        let states: Vec<(&str, String, BackendState<'_>)> = clusters
            .iter()
            .flat_map(|cluster| {
                cluster
                    .backend_states()
                    .map(move |state| (cluster.name.as_str(), state.backend.addr.to_string(), state))
            })
            .collect();

        gauge(
            &mut encoder,
            &states,
            "tailcut_backend_in_flight",
            "Requests in flight to the backend, from its choice to the end of the response body",
            |s| ConstGauge::new(s.in_flight as i64),
        )?;
        gauge(
            &mut encoder,
            &states,
            "tailcut_backend_latency_estimate_seconds",
            "The backend's peak-EWMA latency estimate (time to response headers), decayed to now",
            |s| ConstGauge::new(s.latency_estimate),
        )?;
        gauge(
            &mut encoder,
            &states,
            "tailcut_backend_ejected",
            "1 while outlier ejection keeps the backend out of rotation",
            |s| ConstGauge::new(i64::from(s.ejected)),
        )?;
        gauge(
            &mut encoder,
            &states,
            "tailcut_backend_healthy",
            "0 while the backend fails its active health checks (1 without checks)",
            |s| ConstGauge::new(i64::from(s.healthy)),
        )?;
        admission(&mut encoder, &clusters)?;
        let mut panics = encoder.encode_descriptor(
            "tailcut_cluster_panic",
            "Requests balanced over every backend because every one was out of rotation",
            None,
            MetricType::Counter,
        )?;
        for cluster in &clusters {
            ConstCounter::new(cluster.panics()).encode(panics.encode_family(&[("cluster", cluster.name.as_str())])?)?;
        }
        let mut ejections = encoder.encode_descriptor(
            "tailcut_backend_ejections",
            "Times outlier ejection took the backend out of rotation",
            None,
            MetricType::Counter,
        )?;
        for (cluster, backend, state) in &states {
            let labels = [("cluster", *cluster), ("backend", backend.as_str())];
            ConstCounter::new(state.ejections as u64).encode(ejections.encode_family(&labels)?)?;
        }
        let mut requests = encoder.encode_descriptor(
            "tailcut_backend_requests",
            "Requests sent to the backend, by the status class the client got (a gateway failure is 5xx)",
            None,
            MetricType::Counter,
        )?;
        for (cluster, backend, state) in &states {
            for (class, count) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().zip(state.backend.answered()) {
                let labels = [
                    ("cluster", *cluster),
                    ("backend", backend.as_str()),
                    ("status_class", class),
                ];
                ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The admission control of each cluster that has it, one gauge per
/// figure.
fn admission(encoder: &mut DescriptorEncoder, clusters: &[Arc<Cluster>]) -> Result<(), std::fmt::Error> {
    let admitted: Vec<(&str, &crate::admission::Admission)> = clusters
        .iter()
        .filter_map(|c| c.admission().map(|a| (c.name.as_str(), &**a)))
        .collect();
    type Figure = fn(&crate::admission::Admission) -> f64;
    let figures: [(&str, &str, Figure); 5] = [
        (
            "tailcut_concurrency_limit",
            "The cluster's adaptive limit on requests in flight",
            |a| a.limit() as f64,
        ),
        (
            "tailcut_concurrency_in_flight",
            "Requests in flight under the cluster's concurrency limit",
            |a| a.in_flight() as f64,
        ),
        (
            "tailcut_concurrency_min_rtt_seconds",
            "The lowest latency (time to response headers) the cluster's backends showed recently; 0 until known",
            |a| a.min_rtt().map_or(0.0, |d| d.as_secs_f64()),
        ),
        (
            "tailcut_admission_queued",
            "Requests waiting for a permit under the cluster's concurrency limit",
            |a| a.queued() as f64,
        ),
        (
            "tailcut_admission_overloaded",
            "1 while the cluster's admission queue is overloaded (CoDel: a queue stood above its target)",
            |a| f64::from(u8::from(a.overloaded())),
        ),
    ];
    for (name, help, value) in figures {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (cluster, admission) in &admitted {
            ConstGauge::new(value(admission)).encode(family.encode_family(&[("cluster", *cluster)])?)?;
        }
    }
    Ok(())
}

/// One gauge per backend: `value` of each state, labelled by cluster and backend.
fn gauge<G: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    states: &[(&str, String, BackendState<'_>)],
    name: &str,
    help: &str,
    value: impl Fn(&BackendState<'_>) -> G,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (cluster, backend, state) in states {
        let labels = [("cluster", *cluster), ("backend", backend.as_str())];
        value(state).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
