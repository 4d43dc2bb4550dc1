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

/// Runs `compare` on a tiny balancing scenario (three backends, the first
/// faulty as `faulty` says) and returns its results and report.
fn balancing_run(faulty: &str, load: &str) -> (serde_json::Value, String, String) {
    // The generator shares its CPU with three backends (and here with the
    // test runner): its schedule is held to 5 ms, as in the saved
    // balancing scenarios, so that a trial's validity is not what a
    // balancing test checks.
    tiny_run(&format!(
        "name = \"tiny-balancing\"\n[load]\nrate = 300\nduration = \"2s\"\nconnections = 8\nrounds = 1\n\
         saturation = \"0s\"\nmax_send_lag = \"5ms\"\nmax_stall = \"50ms\"\n{load}\n[backends]\ncount = 3\n\
         [backends.faulty]\n{faulty}\n"
    ))
}

/// Runs `compare` on the tiny scenario `toml` and returns its results,
/// report and summary.
fn tiny_run(toml: &str) -> (serde_json::Value, String, String) {
    let _cpu = crate::support::exclusive_cpu();
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("tiny.toml");
    std::fs::write(&scenario, toml).expect("write scenario");
    let out = dir.path().join("out");
    // A relative --out (from the folder it is relative to) lands there, Go
    // build included.
    let output = Command::new(env!("CARGO_BIN_EXE_tailcut-load"))
        .current_dir(dir.path())
        .args(["compare", "--scenario"])
        .arg(&scenario)
        .args(["--out", "out"])
        .arg("--tailcut")
        .arg(tailcut_binary())
        .output()
        .expect("run tailcut-load compare");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "compare failed:\n{stderr}");
    assert!(out.join("goproxy").is_file(), "the Go proxy is built into --out");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("results.json")).expect("JSON");
    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("summary.txt");
    (results, report, summary)
}

/// Every balancing target ran one trial, and the backends' counts of what
/// each target sent them; `(target, trial)` pairs.
fn balancing_trials(results: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    trials_of(results, &["tailcut", "tailcut-least_request", "tailcut-round_robin"])
}

/// The same, for a scenario whose tailcut columns are `tailcuts`.
fn trials_of(results: &serde_json::Value, tailcuts: &[&str]) -> Vec<(String, serde_json::Value)> {
    let mut expected = tailcuts.to_vec();
    expected.push("goproxy");
    // Under CI nginx and HAProxy are installed, and their columns are part
    // of what is tested; elsewhere they join when installed.
    let installed = |name: &str| {
        ["/usr/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(name).exists())
    };
    for reference in ["nginx", "haproxy"] {
        if std::env::var_os("CI").is_some() || installed(reference) {
            expected.push(reference);
        }
    }
    expected.push("direct");
    let trials = results["trials"].as_array().expect("trials");
    let names: Vec<&str> = trials.iter().map(|t| t["target"].as_str().unwrap_or("")).collect();
    let mut sorted_names = names.clone();
    sorted_names.sort_unstable();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort_unstable();
    assert_eq!(sorted_names, sorted_expected, "one trial per target");
    let setup = &results["balancing"];
    assert_eq!(setup["backends"], 3);
    let described: Vec<&str> = setup["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t[0].as_str().unwrap_or(""))
        .collect();
    assert_eq!(described.len(), expected.len(), "{described:?}");
    trials
        .iter()
        .map(|t| (t["target"].as_str().unwrap_or("").to_owned(), t.clone()))
        .collect()
}

fn served(trial: &serde_json::Value) -> Vec<u64> {
    trial["backends_served"]
        .as_array()
        .expect("backends_served")
        .iter()
        .map(|n| n.as_u64().expect("count"))
        .collect()
}

fn failed(trial: &serde_json::Value) -> u64 {
    let result = &trial["result"];
    let errors: u64 = ["refused", "reset", "timeout", "other"]
        .iter()
        .map(|k| result["errors"][k].as_u64().unwrap_or(0))
        .sum();
    result["status"]["5xx"].as_u64().expect("5xx count") + errors
}

#[test]
fn a_slow_backend_scenario_counts_each_backends_share_per_target() {
    let (results, report, summary) = balancing_run("mode = \"slow\"\ndelay = \"fixed:20ms\"", "warmup = \"500ms\"");
    for (target, trial) in balancing_trials(&results) {
        let served = served(&trial);
        let sent = trial["result"]["sent"].as_u64().expect("sent");
        if target == "direct" {
            assert!(served[1] >= sent, "direct goes to backend 1 alone: {served:?}");
            continue;
        }
        // Everything sent, warm-up included, reached one of the backends
        // (HAProxy's health checks on top).
        assert!(
            served.iter().sum::<u64>() >= sent,
            "{target}: {served:?} for {sent} sent"
        );
        if target == "tailcut-round_robin" || target == "goproxy" {
            let (least, most) = (served.iter().min(), served.iter().max());
            assert!(most.zip(least).is_some_and(|(m, l)| m - l <= 1), "{target}: {served:?}");
        }
    }
    let share = |target: &str| {
        let trial = &results["trials"]
            .as_array()
            .expect("trials")
            .iter()
            .find(|t| t["target"] == target)
            .expect("trial")
            .clone();
        let served = served(trial);
        served[0] as f64 / served.iter().sum::<u64>() as f64
    };
    assert!(
        share("tailcut") < share("tailcut-round_robin"),
        "peak-EWMA sends the slow backend less than its turn"
    );
    assert!(report.contains("Balancing: one faulty backend of 3"), "section");
    assert!(report.contains("Backend 0 answers after 20ms."));
    assert!(summary.contains("backend shares"), "{summary}");
}

#[test]
fn a_slow_window_scenario_reports_recovery_and_shades_the_window() {
    let (results, report, summary) = balancing_run(
        "mode = \"slow\"\ndelay = \"fixed:20ms\"\nwindow = \"1s..2s\"",
        "warmup = \"500ms\"",
    );
    balancing_trials(&results);
    assert!(report.contains("recovered after (per trial)"), "the recovery column");
    assert!(report.contains("fill-opacity=\"0.25\""), "the window is shaded");
    assert!(summary.contains("recovered after"), "{summary}");
}

#[test]
fn a_failing_backend_scenario_counts_each_targets_failures() {
    let (results, report, _) = balancing_run(
        "mode = \"failing\"\nstatus = 503",
        "warmup = \"0s\"\nmax_error_rate = 0.5",
    );
    for (target, trial) in balancing_trials(&results) {
        let failed = failed(&trial);
        match target.as_str() {
            // Round-robin sends the failing backend its third, every one a
            // 503 (the backends also count the generator's probe, a request
            // or two outside the trial's own).
            "goproxy" => {
                let to_failing = served(&trial)[0];
                assert!(
                    failed <= to_failing && failed + 3 >= to_failing,
                    "{failed} of {to_failing}"
                );
                assert!(failed > 0);
            }
            // Ejected after five in a row, for longer than the trial.
            t if t.starts_with("tailcut") => assert!(failed <= 5, "{target}: {failed}"),
            "direct" => assert_eq!(failed, 0),
            _ => {}
        }
        assert_eq!(
            trial["result"]["verdict"]["valid"], true,
            "{target}: errors are allowed here"
        );
    }
    assert!(report.contains("answers 503 at once"));
}

#[test]
fn a_refusing_backend_scenario_counts_each_targets_failures() {
    let (results, _, _) = balancing_run("mode = \"refusing\"", "warmup = \"0s\"\nmax_error_rate = 0.5");
    for (target, trial) in balancing_trials(&results) {
        if target != "direct" {
            assert_eq!(served(&trial)[0], 0, "{target}: nothing listens there");
        }
        if target.starts_with("tailcut") {
            assert!(failed(&trial) <= 5, "{target}: {}", failed(&trial));
        }
    }
}

/// A tiny scenario showing a tail-control feature: three backends answering
/// as `backend` says (and the first as `faulty`, if given); tailcut's
/// columns are its defaults and the feature on. `(trials, summary)`.
fn tail_run(feature: &str, load: &str, backend: &str, faulty: &str) -> (Vec<(String, serde_json::Value)>, String) {
    let (results, _, summary) = tiny_run(&format!(
        "name = \"tiny-{feature}\"\ntail = \"{feature}\"\n[load]\nrate = 300\nduration = \"2s\"\nconnections = 8\n\
         rounds = 1\nsaturation = \"0s\"\nwarmup = \"0s\"\n{load}\n[backend]\n{backend}\n[backends]\ncount = 3\n{faulty}\n"
    ));
    let trials = trials_of(&results, &["tailcut", &format!("tailcut-{feature}")]);
    assert!(
        summary.contains(&format!("tailcut-{feature} against each target")),
        "{summary}"
    );
    assert!(summary.contains("upstream/client"), "{summary}");
    (trials, summary)
}

fn trial<'a>(trials: &'a [(String, serde_json::Value)], target: &str) -> &'a serde_json::Value {
    &trials.iter().find(|(t, _)| t == target).expect("a trial").1
}

fn sent(trial: &serde_json::Value) -> u64 {
    trial["result"]["sent"].as_u64().expect("sent")
}

#[test]
fn a_hedging_scenario_hedges_a_few_percent_more_upstream_requests_at_most() {
    // 3% of answers take 20 ms: the auto delay (p95) is the fast answers'
    // time, clamped to 2 ms, and the slow ones are hedged.
    let (trials, _) = tail_run("hedging", "", "delay = \"bimodal:97%=20us,3%=20ms\"", "");
    // Without hedging every request reaches one backend once; the backends
    // also count the generator's own few requests outside the window.
    let plain = trial(&trials, "tailcut");
    let outside = served(plain).iter().sum::<u64>() - sent(plain);
    assert!(outside <= 10, "{outside} requests beyond those sent");
    // With it, the backends count the hedges too: some, and at most 10% of
    // the requests (the route's max_percent).
    let hedging = trial(&trials, "tailcut-hedging");
    let sent = sent(hedging);
    let hedges = served(hedging).iter().sum::<u64>().saturating_sub(sent + outside);
    assert!(hedges > 0, "no hedge reached a backend");
    assert!(hedges <= sent / 10 + 2, "{hedges} hedges for {sent} requests");
}

#[test]
fn a_brownout_scenario_retries_what_would_have_failed() {
    let (trials, _) = tail_run(
        "retries",
        "max_error_rate = 0.5",
        "delay = \"none\"",
        "[backends.faulty]\nmode = \"failing\"\nstatus = 503\nshare = 0.3",
    );
    let failed_without = failed(trial(&trials, "tailcut"));
    let failed_with = failed(trial(&trials, "tailcut-retries"));
    assert!(failed_without > 0, "the faulty backend failed some requests");
    assert!(
        failed_with < failed_without,
        "{failed_with} with retries, {failed_without} without"
    );
}

#[test]
fn an_all_failing_scenario_shows_retries_within_the_budget() {
    let (trials, _) = tail_run("retries", "max_error_rate = 1.0", "status = 503", "");
    let plain = trial(&trials, "tailcut");
    let outside = served(plain).iter().sum::<u64>() - sent(plain);
    assert!(outside <= 10, "{outside} requests beyond those sent");
    let retrying = trial(&trials, "tailcut-retries");
    let sent = sent(retrying);
    assert_eq!(failed(retrying), sent, "every request fails");
    // The budget: 20% of the requests, plus 10 per second (over the 2 s
    // trial, and one second's worth at once) whatever the traffic.
    let retries = served(retrying).iter().sum::<u64>().saturating_sub(sent + outside);
    assert!(retries > 0, "no retry reached a backend");
    assert!(
        retries <= sent / 5 + 10 * 3 + 2,
        "{retries} retries for {sent} requests"
    );
}

#[test]
fn an_overload_scenario_runs_every_target_at_each_load_and_reads_outcomes_apart() {
    // A backend serving 2 requests at once for 5 ms (400 requests/s),
    // offered 1x and 2x that.
    let (results, report, summary) = tiny_run(
        "name = \"tiny-overload\"\ntail = \"overload\"\n[load]\nrate = 400\nmultiples = [1.0, 2.0]\n\
         duration = \"2s\"\nwarmup = \"1s\"\nconnections = 32\nrounds = 1\nsaturation = \"0s\"\n\
         max_error_rate = 1.0\nmax_send_lag = \"5ms\"\nmax_stall = \"50ms\"\n\
         [backend]\ndelay = \"fixed:5ms\"\ncapacity = 2\n",
    );
    let overload = &results["overload"];
    assert_eq!(overload["capacity"], 2);
    let loads = overload["loads"].as_array().expect("loads");
    let multiples: Vec<f64> = loads.iter().map(|l| l["multiple"].as_f64().unwrap_or(0.0)).collect();
    assert_eq!(multiples, [1.0, 2.0]);
    for load in loads {
        let trials = load["trials"].as_array().expect("trials");
        let names: Vec<&str> = trials.iter().map(|t| t["target"].as_str().unwrap_or("")).collect();
        for target in ["tailcut", "tailcut-limit", "goproxy", "direct"] {
            assert!(names.contains(&target), "{target} at {}: {names:?}", load["multiple"]);
        }
    }
    // The heaviest load's trials are the ones the other sections read.
    assert_eq!(results["trials"], loads[1]["trials"]);
    let at_twice = |target: &str| {
        loads[1]["trials"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["target"] == target))
            .expect("a trial")
            .clone()
    };
    // With the limit, tailcut refuses part of twice its backend's
    // capacity; without it, it refuses nothing (what it cannot serve
    // waits, or times out).
    let limited = at_twice("tailcut-limit");
    assert!(
        limited["result"]["status"]["5xx"].as_u64().unwrap_or(0) > 0,
        "{limited}"
    );
    assert!(
        limited["result"]["status"]["2xx"].as_u64().unwrap_or(0) > 0,
        "{limited}"
    );
    assert_eq!(at_twice("tailcut")["result"]["status"]["5xx"], 0);
    // Outcomes apart: both histograms kept, and each second's successes.
    let histograms = &limited["result"]["histograms"];
    assert!(histograms["succeeded"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(histograms["unsuccessful"].as_str().is_some_and(|h| !h.is_empty()));
    let seconds = limited["result"]["seconds"].as_array().expect("seconds");
    assert!(seconds.iter().any(|s| s["succeeded"].as_u64().unwrap_or(0) > 0));
    assert!(seconds.iter().any(|s| s["unsuccessful"].as_u64().unwrap_or(0) > 0));
    // The table in summary.txt and the report, with a chart per load.
    assert!(summary.contains("overload: backend capacity 2 at once"), "{summary}");
    assert!(summary.contains(" 2.0x tailcut-limit"), "{summary}");
    assert!(
        report.contains("<h2>Overload: a backend with a capacity"),
        "report section"
    );
    assert_eq!(
        report.matches("p99 of successful responses over time at").count(),
        2,
        "a chart per load"
    );
}
