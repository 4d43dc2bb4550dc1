//! Active health checks: one task per backend of a cluster with
//! `[upstreams.NAME.health]`, off the request path, asking the backend for
//! the configured path every `interval` (each wait jittered by up to a
//! tenth, so that checks of many backends do not fall together) over the
//! cluster's own connection settings (TLS included), each on a fresh
//! connection closed after the answer. Results go to the cluster's
//! [`Ejector`](crate::balance::Ejector), which decides what is in rotation.
//!
//! A task holds its cluster weakly and ends once the cluster is gone (a
//! reload replaced it and its last request finished).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rand::Rng;

use super::cluster::{Backend, Cluster};
use crate::config::Health;

/// Starts checking every backend of `cluster`, when there is a runtime to
/// run the checks on (there always is in the server; a unit test building
/// a proxy outside one gets none).
pub fn watch(cluster: &Arc<Cluster>, health: &Health) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for index in 0..cluster.len() {
        runtime.spawn(check_forever(Arc::downgrade(cluster), index, health.clone()));
    }
}

async fn check_forever(cluster: Weak<Cluster>, index: usize, health: Health) {
    loop {
        let jitter = health.interval.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
        tokio::time::sleep(health.interval + jitter).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let backend = cluster.backend(index);
        let passed = check(backend, &health).await;
        let thresholds = (health.healthy_threshold.get(), health.unhealthy_threshold.get());
        if let Some(healthy) = cluster.health_checked(index, passed, thresholds) {
            if healthy {
                tracing::info!(upstream = %cluster.name, backend = %backend.addr, "backend passes its health checks again");
            } else {
                tracing::warn!(upstream = %cluster.name, backend = %backend.addr, "backend failed its health checks; out of rotation");
            }
        }
    }
}

/// One check: a `GET` of the path, answered within the timeout with a
/// status in the expected range.
async fn check(backend: &Backend, health: &Health) -> bool {
    let attempt = async {
        let stream = backend.open().await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        let driver = tokio::spawn(connection);
        let request = Request::get(health.path.as_str())
            .header(HOST, backend.host_header())
            .header(USER_AGENT, HeaderValue::from_static("tailcut-health-check"))
            .header(CONNECTION, HeaderValue::from_static("close"))
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await;
        driver.abort();
        let status = response.ok()?.status().as_u16();
        Some((health.expect_status.0..=health.expect_status.1).contains(&status))
    };
    matches!(tokio::time::timeout(health.timeout, attempt).await, Ok(Some(true)))
}
