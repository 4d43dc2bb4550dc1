//! Each verdict has its own exit code, triggered here by a real run of the binary.

use std::process::Output;

use crate::support::{backend, closed_port, tailcut_load};

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Thresholds loose enough that a debug build on a busy CI machine keeps its
/// schedule; each test below is about one verdict only.
const LOOSE: &str = "--max-send-lag 200ms --max-stall 2s --rate-tolerance 0.2";

/// `tailcut-load run URL` with whitespace-separated `flags`.
fn run(url: &str, flags: &str) -> Output {
    let mut args = vec!["run", url];
    args.extend(flags.split_whitespace());
    tailcut_load(&args)
}

#[test]
fn valid_run_exits_0() {
    // A valid run needs the generator not to be starved of CPU.
    let _cpu = crate::support::exclusive_cpu();
    let url = format!("http://{}/", backend(200, "none"));
    let out = run(
        &url,
        &format!("--rate 200 --duration 2s --warmup 500ms -c 4 --quiet {LOOSE}"),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "--quiet prints nothing");
}

#[test]
fn unreachable_target_exits_4() {
    let out = run(&format!("http://{}/", closed_port()), "--duration 1s");
    assert_eq!(code(&out), 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
}

/// One connection to a backend that takes 20 ms can carry 50 requests/s, not 400.
const OVERLOADED: &str = "--rate 400 --duration 2s --warmup 0s -c 1 --timeout 1s";

#[test]
fn rate_not_reached_exits_3() {
    let url = format!("http://{}/", backend(200, "fixed:20ms"));
    let out = run(&url, &format!("{OVERLOADED} {LOOSE}"));
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("verdict  INVALID: achieved rate"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("timeout"),
        "late requests are counted as timeouts: {}",
        stdout(&out)
    );
}

#[test]
fn a_target_holding_every_connection_is_queueing_in_the_latency_not_generator_lag() {
    // A valid run needs the generator not to be starved of CPU.
    let _cpu = crate::support::exclusive_cpu();
    let url = format!("http://{}/", backend(200, "fixed:20ms"));
    // Every connection busy: requests wait for a free one. That wait is the
    // target's doing, so it counts in the latency from the intended send,
    // not as the generator's send lag; with the rate check relaxed, the run
    // is valid and says how many requests queued.
    let out = run(
        &url,
        &format!("{OVERLOADED} --rate-tolerance 1.0 --max-stall 2s --max-error-rate 1.0"),
    );
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains("waited for a free connection"), "{text}");
    assert!(!text.contains("send lag p99"), "{text}");
}

#[test]
fn a_stalled_generator_exits_3() {
    let url = format!("http://{}/", backend(200, "none"));
    // Every 1 ms sleep of the monitor overruns by more than a microsecond,
    // so a 1 us stall limit always finds the generator stalled.
    let out = run(
        &url,
        "--rate 100 --duration 1s --warmup 0s -c 2 --max-send-lag 200ms --max-stall 1us",
    );
    assert_eq!(code(&out), 3);
    assert!(stdout(&out).contains("the generator stalled"), "{}", stdout(&out));
}

#[test]
fn errors_above_the_limit_exit_5_and_are_counted_by_class() {
    // A valid run needs the generator not to be starved of CPU.
    let _cpu = crate::support::exclusive_cpu();
    let url = format!("http://{}/", backend(503, "none"));
    let out = run(
        &url,
        &format!("--rate 200 --duration 1s --warmup 0s -c 4 --max-error-rate 0.01 {LOOSE}"),
    );
    assert_eq!(code(&out), 5, "{}", stdout(&out));
    assert!(stdout(&out).contains("5xx 200"), "{}", stdout(&out));
    assert!(stdout(&out).contains("error rate 100.000%"), "{}", stdout(&out));
}

#[test]
fn bad_arguments_exit_2() {
    let out = run("http://127.0.0.1:1/", "--rate fast");
    assert_eq!(code(&out), 2);
}
