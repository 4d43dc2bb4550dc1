//! A server closing idle keep-alive connections is not the target failing.

use std::time::Duration;

use http::{HeaderMap, Method};
use tailcut_load::result::Thresholds;
use tailcut_load::run::{execute, Progress, RunConfig};
use tailcut_load::schedule::Arrivals;

use crate::support::idle_closing_backend;

#[test]
fn connections_closed_while_idle_are_reopened_without_counting_errors() {
    // Requests 250 ms apart on one connection; the server closes it after 100 ms idle.
    let addr = idle_closing_backend(Duration::from_millis(100));
    let config = RunConfig {
        target: format!("http://{addr}/").parse().expect("url"),
        rate: 4.0,
        duration: Duration::from_secs(2),
        warmup: Duration::ZERO,
        connections: 1,
        threads: 1,
        arrivals: Arrivals::Uniform,
        method: Method::GET,
        headers: HeaderMap::new(),
        body: bytes::Bytes::new(),
        http2: false,
        streams: 1,
        timeout: Duration::from_secs(5),
        seed: 1,
        thresholds: Thresholds {
            rate_tolerance: 0.01,
            max_send_lag_us: 200_000,
            max_stall_us: 2_000_000,
            max_error_rate: 0.0,
        },
        progress: Progress::Quiet,
        interval_log: None,
    };
    let result = execute(&config).expect("run");
    assert_eq!(result.errors.total(), 0, "{:?}", result.errors);
    assert_eq!(result.status.success, 8);
}
