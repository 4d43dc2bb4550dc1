//! `tailcut-load compare` end to end, on a tiny scenario: real backend, real
//! tailcut and Go proxy processes, real trials, and every output written.

use std::path::Path;
use std::process::Command;

/// The tailcut binary that `cargo test --workspace` builds for tailcut's own tests.
fn tailcut_binary() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tailcut");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bin tailcut` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

#[test]
fn compare_runs_every_trial_and_writes_results_summary_and_hgrm() {
    let _cpu = crate::support::exclusive_cpu();
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("tiny.toml");
    std::fs::write(
        &scenario,
        "name = \"tiny\"\ndescription = \"end to end\"\n[load]\nrate = 200\nduration = \"1s\"\n\
         warmup = \"200ms\"\nconnections = 2\nrounds = 2\nsaturation = \"500ms\"\n\
         [sweep]\nfractions = [0.5]\nduration = \"300ms\"\nwarmup = \"200ms\"\n[idle]\nconnections = 50\n",
    )
    .expect("write scenario");
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_tailcut-load"))
        .arg("compare")
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .arg("--tailcut")
        .arg(tailcut_binary())
        .output()
        .expect("run tailcut-load compare");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "compare failed:\n{stderr}");
    assert!(stderr.contains("CPU plan: proxies on CPU"), "{stderr}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("results.json")).expect("JSON");
    let trials = results["trials"].as_array().expect("trials");
    for target in ["tailcut", "goproxy", "direct"] {
        let runs: Vec<_> = trials.iter().filter(|t| t["target"] == target).collect();
        assert_eq!(runs.len(), 2, "two rounds of {target}");
        assert!(
            runs.iter().all(|t| t["result"]["sent"].as_u64() > Some(0)),
            "{target} sent nothing"
        );
        let hgrm = std::fs::read_to_string(out.join(format!("{target}.hgrm"))).expect("hgrm");
        assert!(hgrm.contains("Total count"), "{hgrm}");
    }
    assert_eq!(results["verdicts"].as_array().map(Vec::len), Some(5));
    // tailcut and Go always; nginx and HAProxy too where they are installed.
    let proxies = results["proxies"].as_array().expect("proxies");
    let names: Vec<_> = proxies.iter().map(|p| p["proxy"].as_str().unwrap_or("")).collect();
    assert_eq!(names[..2], ["tailcut", "goproxy"]);
    assert!(names[2..].iter().all(|n| ["nginx", "haproxy"].contains(n)), "{names:?}");
    let saturation = results["saturation"].as_array().expect("saturation");
    assert_eq!(saturation.len(), proxies.len(), "one saturation run per proxy");
    assert!(saturation.iter().all(|s| s["achieved_rate"].as_f64() > Some(0.0)));
    for proxy in proxies {
        assert!(proxy["binary_bytes"].as_u64() > Some(0), "{proxy}");
        assert!(proxy["peak_rss_kib"].as_u64() > Some(0), "{proxy}");
        assert!(proxy["startup_ms"].as_f64() > Some(0.0), "{proxy}");
    }
    // Every trial has its seconds; every Go trial its GC activity (cycles may be none).
    for trial in trials {
        assert!(
            !trial["result"]["seconds"].as_array().is_none_or(Vec::is_empty),
            "{trial}"
        );
        assert_eq!(trial["gc"].is_object(), trial["target"] == "goproxy", "{trial}");
    }
    // The sweep: the faster proxy at both bases, the slower at its own, and
    // the backend alone at both rates.
    let sweep = results["sweep"].as_array().expect("sweep");
    let points: Vec<_> = sweep
        .iter()
        .map(|p| (p["proxy"].as_str().unwrap_or(""), p["basis"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(points.len(), 5, "{points:?}");
    assert_eq!(points.iter().filter(|p| p.0 == "direct").count(), 2, "{points:?}");
    assert_eq!(points.iter().filter(|p| p.1 == "own").count(), 3, "{points:?}");
    // Idle connections: every proxy held all 50.
    let idle = results["idle"].as_array().expect("idle");
    assert_eq!(idle.len(), proxies.len());
    assert!(
        idle.iter().all(|i| i["opened"] == 50 && i["error"].is_null()),
        "{idle:?}"
    );
    // A given tailcut binary is measured, not rebuilt in its size profile.
    let binaries: Vec<_> = results["binaries"]
        .as_array()
        .expect("binaries")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(binaries.len(), 2, "{binaries:?}");
    // Latency over time is drawn from a round where tailcut's and Go's
    // trials were both valid (a generator stall on a busy machine can
    // invalidate a trial; the report then says there is none).
    let valid = |target: &str, round: u64| {
        trials
            .iter()
            .any(|t| t["target"] == target && t["round"] == round && t["result"]["verdict"]["valid"] == true)
    };
    let timeline = (1..=2).any(|round| valid("tailcut", round) && valid("goproxy", round));
    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert_eq!(
        report.matches("<svg").count(),
        3 + usize::from(timeline),
        "spectrum, timeline, two sweep charts"
    );
    for (chart, drawn) in [
        ("spectrum", true),
        ("timeline", timeline),
        ("sweep-rate", true),
        ("sweep-fraction", true),
    ] {
        let path = out.join(format!("{chart}.svg"));
        assert_eq!(path.exists(), drawn, "{chart}");
        if drawn {
            let svg = std::fs::read_to_string(path).expect("chart");
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"), "{chart}");
            assert!(report.contains(&svg), "{chart}.svg is the report's own chart");
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("summary");
    assert!(summary.contains("tailcut against Go"), "{summary}");
    assert!(summary.contains("saturation req/s"), "{summary}");
}
