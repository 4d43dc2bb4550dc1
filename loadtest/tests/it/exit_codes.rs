//! Each verdict has its own exit code, triggered here by a real run of the binary.

use std::process::{Command, Output};

use crate::support::{backend, closed_port};

fn tailcut_load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailcut-load"))
        .args(args)
        .output()
        .expect("run tailcut-load")
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Thresholds loose enough that a debug build on a busy CI machine keeps its
/// schedule; each test below is about one verdict only.
const LOOSE: [&str; 6] = [
    "--max-send-lag",
    "200ms",
    "--max-stall",
    "2s",
    "--rate-tolerance",
    "0.2",
];

#[test]
fn valid_run_exits_0() {
    let addr = backend(200, "none");
    let url = format!("http://{addr}/");
    let mut args = vec![
        "run",
        &url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "-c",
        "4",
        "--quiet",
    ];
    args.extend(LOOSE);
    let out = tailcut_load(&args);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "--quiet prints nothing");
}

#[test]
fn unreachable_target_exits_4() {
    let url = format!("http://{}/", closed_port());
    let out = tailcut_load(&["run", &url, "--duration", "1s"]);
    assert_eq!(code(&out), 4);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unreachable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rate_not_reached_exits_3() {
    // One connection to a backend that takes 20 ms can carry 50 requests/s, not 400.
    let addr = backend(200, "fixed:20ms");
    let url = format!("http://{addr}/");
    let mut args = vec![
        "run",
        &url,
        "--rate",
        "400",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "-c",
        "1",
        "--timeout",
        "1s",
    ];
    args.extend(LOOSE);
    let out = tailcut_load(&args);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verdict  INVALID: achieved rate"), "{stdout}");
    assert!(
        stdout.contains("timeout"),
        "late requests are counted as timeouts: {stdout}"
    );
}

#[test]
fn a_generator_that_cannot_keep_its_schedule_exits_3() {
    let addr = backend(200, "fixed:20ms");
    let url = format!("http://{addr}/");
    // Every connection busy: queued requests go out late, so the send lag
    // exceeds a strict 1 ms limit even though the rate check is relaxed.
    let out = tailcut_load(&[
        "run",
        &url,
        "--rate",
        "400",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "-c",
        "1",
        "--timeout",
        "1s",
        "--rate-tolerance",
        "1.0",
        "--max-stall",
        "2s",
    ]);
    assert_eq!(code(&out), 3);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("send lag p99"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_stalled_generator_exits_3() {
    let addr = backend(200, "none");
    let url = format!("http://{addr}/");
    // Every 1 ms sleep of the monitor overruns by more than a microsecond,
    // so a 1 us stall limit always finds the generator stalled.
    let out = tailcut_load(&[
        "run",
        &url,
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "-c",
        "2",
        "--max-send-lag",
        "200ms",
        "--max-stall",
        "1us",
    ]);
    assert_eq!(code(&out), 3);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the generator stalled"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn errors_above_the_limit_exit_5_and_are_counted_by_class() {
    let addr = backend(503, "none");
    let url = format!("http://{addr}/");
    let mut args = vec![
        "run",
        &url,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "-c",
        "4",
        "--max-error-rate",
        "0.01",
    ];
    args.extend(LOOSE);
    let out = tailcut_load(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 5, "{stdout}");
    assert!(stdout.contains("5xx 200"), "{stdout}");
    assert!(stdout.contains("error rate 100.000%"), "{stdout}");
}

#[test]
fn bad_arguments_exit_2() {
    let out = tailcut_load(&["run", "http://127.0.0.1:1/", "--rate", "fast"]);
    assert_eq!(code(&out), 2);
}
