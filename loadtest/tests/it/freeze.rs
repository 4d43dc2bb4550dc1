//! Coordinated omission, caught: a target that freezes for 1 s mid-run shows
//! up in the corrected latency, while the uncorrected latency under-reports it.

use std::time::Duration;

use tailcut_load::run::execute;

use crate::support::{freezing_backend, run_config};

#[test]
fn a_one_second_freeze_shows_in_corrected_but_not_uncorrected_latency() {
    let _cpu = crate::support::exclusive_cpu();
    let run_length = Duration::from_secs(4);
    let freeze = Duration::from_secs(1);
    let addr = freezing_backend(Duration::from_millis(1500), freeze);
    let config = run_config(addr, 500.0, run_length, 10);
    let result = execute(&config).expect("run");
    let h = result.decode().expect("histograms");
    assert_eq!(result.errors.total(), 0, "{:?}", result.errors);
    assert_eq!(h.corrected.len(), 2000, "every scheduled request completed");

    // The request sent as the freeze began waited for all of it.
    let max = Duration::from_micros(h.corrected.max());
    assert!(
        max >= Duration::from_millis(900) && max <= Duration::from_millis(1500),
        "corrected max {max:?}"
    );

    // Requests intended during the freeze all waited; their share of the run
    // is the share of time frozen (1 s of 4 s), give or take the backlog.
    let slow = |hist: &hdrhistogram::Histogram<u64>| {
        hist.count_between(100_000, tailcut_load::histograms::HIGHEST_MICROS) as f64 / hist.len() as f64
    };
    let frozen_share = freeze.as_secs_f64() / run_length.as_secs_f64();
    let corrected_slow = slow(&h.corrected);
    assert!(
        (corrected_slow - frozen_share).abs() < 0.08,
        "corrected: {:.1}% of requests over 100 ms, expected about {:.0}%",
        corrected_slow * 100.0,
        frozen_share * 100.0
    );

    // Measured from the actual send, only the few requests already in flight
    // when it froze look slow: the classic under-report.
    let uncorrected_slow = slow(&h.uncorrected);
    assert!(
        uncorrected_slow < corrected_slow / 5.0,
        "uncorrected: {:.1}% over 100 ms",
        uncorrected_slow * 100.0
    );
    assert!(h.corrected.value_at_quantile(0.9) > 10 * h.uncorrected.value_at_quantile(0.9));
}
