//! h2spec, the HTTP/2 conformance suite, against tailcut's cleartext (h2c)
//! and TLS listeners.
//!
//! h2spec is installed on first use with `go install` (through the Go module
//! proxy) into Cargo's scratch folder. Every case must pass but one, known
//! and documented: on a cleartext port that also serves HTTP/1.1, an invalid
//! connection preface is taken for an HTTP/1.1 request and answered as one
//! (400), where h2spec expects the connection closed without a word.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::raw_backend::{write, Act, RawBackend};
use crate::support::tls::{tls_proxy, Certificates};
use crate::support::{config, Kind, Proxy};

/// What the backend answers.
const BODY: &str = "hello from the backend behind tailcut\n";

/// The h2spec release the suite was checked with.
const H2SPEC: &str = "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible";

/// The case h2spec fails on a port serving HTTP/1.1 and h2c alike.
const INVALID_PREFACE: &str = "3.5. HTTP/2 Connection Preface / 2: Sends invalid connection preface";

fn h2spec() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("h2spec-bin");
        let status = Command::new("go")
            .args(["install", H2SPEC])
            .env("GOBIN", &bin)
            .status()
            .expect("run `go install` (Go is needed for the test suite)");
        assert!(status.success(), "`go install {H2SPEC}` failed ({status})");
        bin.join("h2spec")
    })
}

/// What one h2spec run found: how many cases ran, and the failed ones as
/// "section / case".
struct Report {
    summary: String,
    failed: Vec<String>,
}

/// Runs h2spec against `proxy`'s listener, `tls` or not.
fn run_h2spec(proxy: &Proxy, tls: bool) -> Report {
    let mut command = Command::new(h2spec());
    command
        .args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string(), "-o", "5"])
        .env("NO_COLOR", "1");
    if tls {
        command.args(["-t", "-k"]);
    }
    let output = command.output().expect("run h2spec");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // The failures are listed last, each under its section's heading.
    let failures = text.split("Failures:").nth(1).unwrap_or_default();
    let mut section = String::new();
    let mut failed = Vec::new();
    for line in failures.lines().map(str::trim) {
        if let Some(case) = line.strip_prefix("× ") {
            failed.push(format!("{section} / {case}"));
        } else if line.starts_with(|c: char| c.is_ascii_digit()) && !line.contains("tests,") {
            section = line.to_owned();
        }
    }
    let summary = text
        .lines()
        .find(|line| line.contains(" tests, "))
        .unwrap_or_else(|| panic!("no summary in h2spec's output:\n{text}"))
        .to_owned();
    Report { summary, failed }
}

/// A backend answering every request 100 ms late. Several cases send a
/// frame after their request (WINDOW_UPDATEs that overflow a stream's
/// window, for one) and expect the stream's error, which a stream already
/// answered and closed cannot give: answered at once, they pass or fail by
/// who wins that race.
async fn slow_backend() -> RawBackend {
    // A body longer than one byte: the case that drives a stream's window
    // negative needs the server to have data left to send.
    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len());
    RawBackend::start(move |_| vec![Act::Pause(Duration::from_millis(100)), write(reply.clone())]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_on_the_cleartext_listener_but_for_the_shared_port_preface() {
    let backend = slow_backend().await;
    let proxy = Proxy::start(Kind::Tailcut, &config(&[backend.addr], ""));
    let report = tokio::task::spawn_blocking(move || run_h2spec(&proxy, false))
        .await
        .expect("h2spec run");
    eprintln!("h2spec, cleartext: {}", report.summary);
    assert_eq!(report.failed, [INVALID_PREFACE], "{}", report.summary);
    assert!(report.summary.contains(" 0 skipped"), "{}", report.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_on_the_tls_listener() {
    let backend = slow_backend().await;
    let certs = Certificates::new(&["default.test", "a.test", "b.test"]);
    let proxy = tls_proxy(Kind::Tailcut, &certs, backend.addr);
    let report = tokio::task::spawn_blocking(move || run_h2spec(&proxy, true))
        .await
        .expect("h2spec run");
    eprintln!("h2spec, TLS: {}", report.summary);
    assert!(report.failed.is_empty(), "{:?}\n{}", report.failed, report.summary);
    assert!(report.summary.contains(" 0 skipped"), "{}", report.summary);
}
