//! A server closing idle keep-alive connections is not the target failing.

use std::time::Duration;

use tailcut_load::run::execute;

use crate::support::{idle_closing_backend, run_config};

#[test]
fn connections_closed_while_idle_are_reopened_without_counting_errors() {
    // A valid run needs the generator not to be starved of CPU.
    let _cpu = crate::support::exclusive_cpu();
    // Requests 250 ms apart on one connection; the server closes it after 100 ms idle.
    let addr = idle_closing_backend(Duration::from_millis(100));
    let mut config = run_config(addr, 4.0, Duration::from_secs(2), 1);
    config.timeout = Duration::from_secs(5);
    // Loose: this test is about errors, not the generator's precision.
    config.thresholds.max_send_lag_us = 200_000;
    config.thresholds.max_stall_us = 2_000_000;
    config.thresholds.rate_tolerance = 0.2;
    let result = execute(&config).expect("run");
    assert_eq!(result.errors.total(), 0, "{:?}", result.errors);
    assert_eq!(result.status.success, 8);
}
