//! The comparison report in a real browser: `tailcut-load report` renders
//! saved results (the real comparison the README shows, in
//! `loadtest/results/2026-11-26-baseline/`),
//! headless Chromium opens the page and screenshots it, and the test checks
//! the screenshot is not blank, shows the proxies' curve colours, and that
//! the page logged nothing to the console.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Without it the test
//! says so and passes, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The colours of tailcut's and Go's lines in the report's charts.
const TAILCUT_RED: [u8; 3] = [0xc0, 0x39, 0x2b];
const GO_BLUE: [u8; 3] = [0x24, 0x71, 0xa3];

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// What headless Chromium made of a page.
struct Rendered {
    /// The screenshot's RGBA pixels.
    pixels: Vec<[u8; 4]>,
    /// Console messages the page logged.
    console: Vec<String>,
}

/// Opens `page` in headless Chromium, `width` x `height`, and screenshots it.
fn render(browser: &Path, page: &Path, width: u32, height: u32) -> Rendered {
    let dir = tempfile::tempdir().expect("temp dir");
    let shot = dir.path().join("shot.png");
    // Flags as the machine's notes give them: no sandbox as root, and no
    // background networking, which a closed network refuses.
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium took over 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = reader.join().expect("stderr reader");
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let file = std::fs::File::open(&shot).unwrap_or_else(|err| panic!("no screenshot ({err}):\n{log}"));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).expect("PNG frame");
    assert_eq!((info.width, info.height), (width, height), "screenshot size");
    let channels = info.color_type.samples();
    let pixels = buffer[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| match *p {
            [r, g, b, a] => [r, g, b, a],
            [g, a] => [g, g, g, a],
            _ => [0, 0, 0, 0],
        })
        .collect();
    Rendered { pixels, console }
}

/// Pixels within a small distance of `colour` (antialiasing blends edges).
fn count_near(pixels: &[[u8; 4]], colour: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(colour[i]) <= 12))
        .count()
}

#[test]
fn the_report_renders_in_chromium_with_its_charts_and_no_console_errors() {
    let _cpu = crate::support::exclusive_cpu();
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing and CI is set: .ci/run installs Debian's chromium"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/2026-11-26-baseline/results.json");
    let status = Command::new(env!("CARGO_BIN_EXE_tailcut-load"))
        .arg("report")
        .arg(&fixture)
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("run tailcut-load report");
    assert!(status.success());
    let page = dir.path().join("report.html");
    let html = std::fs::read_to_string(&page).expect("report.html");
    assert_eq!(html.matches("<svg").count(), 4, "spectrum, timeline, two sweep charts");

    let rendered = render(&browser, &page, 1000, 4000);
    assert!(rendered.console.is_empty(), "console messages: {:?}", rendered.console);
    let white = count_near(&rendered.pixels, [255, 255, 255]);
    let total = rendered.pixels.len();
    assert!(white < total * 98 / 100, "blank: {white} of {total} pixels white");
    assert!(white > total / 2, "a report page is mostly white background");
    // The charts are drawn: both proxies' line colours are on the page.
    for (name, colour) in [("tailcut", TAILCUT_RED), ("Go", GO_BLUE)] {
        let n = count_near(&rendered.pixels, colour);
        assert!(n > 500, "{name}'s curves: {n} pixels of their colour");
    }
}

/// The checks above can fail: a page that logs to the console is caught,
/// and a blank page is seen as blank.
#[test]
fn a_console_error_and_a_blank_page_are_detected() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "chromium is missing and CI is set");
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>console.error('broken chart')</script></body></html>",
    )
    .expect("write page");
    let rendered = render(&browser, &page, 400, 300);
    assert!(
        rendered.console.iter().any(|l| l.contains("broken chart")),
        "{:?}",
        rendered.console
    );
    let white = count_near(&rendered.pixels, [255, 255, 255]);
    assert_eq!(white, rendered.pixels.len(), "an empty page is all white");
}
