//! tower middleware between the server and the forwarding service, one
//! folder per layer, and [`stack`], the one function that composes them.

pub mod activity;
pub mod record_latency;

use activity::{Activity, TrackActivity, TrackActivityLayer};
use record_latency::{RecordLatency, RecordLatencyLayer};
use tower::ServiceBuilder;

use crate::metrics::Metrics;
use crate::proxy::ProxyService;

/// The service stack for one client connection, outermost layer first.
pub fn stack(proxy: ProxyService, activity: Activity, metrics: Metrics) -> RecordLatency<TrackActivity<ProxyService>> {
    ServiceBuilder::new()
        // Outermost: starts each request's clock first and stops it when the
        // response body ends, so the figures include every layer below.
        .layer(RecordLatencyLayer::new(metrics))
        // Counts requests in flight until their response body ends,
        // so the connection's idle timer never closes a connection mid-request.
        .layer(TrackActivityLayer::new(activity))
        // Innermost: route, rewrite headers, forward upstream, stream back.
        .service(proxy)
}
