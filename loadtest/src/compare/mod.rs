//! `tailcut-load compare`: tailcut and its Go equivalent under the same
//! load, on the same machine, in one run.
//!
//! The method, in order:
//!
//! 1. find or build both proxies, measuring their binaries and, when asked,
//!    their clean build times ([`build`]);
//! 2. start `tailcut-load backend` (several in a balancing scenario, one
//!    of them faulty: [`backends`]) and every proxy pinned before exec:
//!    proxies alone on their CPUs with equal thread counts, generator and
//!    backends elsewhere ([`procs`]); Debian's nginx and HAProxy, when
//!    installed, as reference columns doing the same job ([`targets`]);
//! 3. rounds of interleaved open-loop trials at the scenario's rate
//!    (tailcut, Go, the references, direct to the backend; the order
//!    rotating each round), each judged by the run verdict, an invalid trial
//!    kept out of every figure; the Go proxy's GC cycles read from its
//!    runtime trace ([`gc`]);
//! 4. a saturation run per proxy;
//! 5. the rate sweep: tailcut and Go at the same absolute rates and at the
//!    same fractions of their own saturation ([`sweep`]);
//! 6. RSS per idle keep-alive connection ([`idle`]);
//! 7. bootstrap intervals on percentile differences over trials
//!    ([`stats`]); `results.json`, `.hgrm` files and the terminal table
//!    ([`summary`]); `report.html` ([`report`]), with each backend's share
//!    and latency over time for a balancing scenario ([`balancing`]).
//!
//! [`scenario`] reads the TOML scenario that sets all of it.

pub mod backends;
pub mod balancing;
pub mod build;
pub mod charts;
pub mod gc;
pub mod idle;
pub mod overload;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::result::{RunResult, Thresholds};
use crate::run::{self, Progress, RunConfig};
use crate::schedule::Arrivals;
use crate::timing::micros;
use backends::Backends;
use procs::CpuPlan;
use scenario::Scenario;
use targets::{Policy, Proxy, Reference, Target};

/// The percentiles compared, as quantiles.
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

/// What the comparison needs from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Where results go.
    pub out: PathBuf,
    /// A tailcut binary to use instead of building one.
    pub tailcut: Option<PathBuf>,
    /// A Go proxy binary to use instead of building one.
    pub goproxy: Option<PathBuf>,
    /// Three times the rounds and windows ([`Scenario::full`]), and clean
    /// build times.
    pub full: bool,
    /// Time a clean build of each proxy first.
    pub build_times: bool,
}

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The scenario file.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// A build or a process that had to start.
    #[error("{0}")]
    Setup(String),
    /// A trial could not run at all.
    #[error("trial against {target}: {source}")]
    Run {
        /// The target's name.
        target: String,
        /// Why.
        source: run::RunError,
    },
    /// Results could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One open-loop trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    /// [`Target::name`].
    pub target: String,
    /// Round, from 1.
    pub round: usize,
    /// The proxy's CPU time over the trial, seconds (none for direct).
    pub proxy_cpu_s: Option<f64>,
    /// The proxy's RSS at the end of the trial, KiB.
    pub proxy_rss_kib: Option<u64>,
    /// The Go proxy's GC cycles during the trial (none for the others).
    #[serde(default)]
    pub gc: Option<gc::GcActivity>,
    /// In a balancing scenario: requests each backend served during the
    /// trial (warm-up included), the faulty one first.
    #[serde(default)]
    pub backends_served: Option<Vec<u64>>,
    /// What the generator measured.
    pub result: RunResult,
}

/// One proxy's saturation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saturation {
    /// `tailcut` or `goproxy`.
    pub proxy: String,
    /// Requests/s actually served with far more offered.
    pub achieved_rate: f64,
}

/// One proxy's fixed facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyFacts {
    /// `tailcut` or `goproxy`.
    pub proxy: String,
    /// The binary that ran.
    pub binary: String,
    /// Its size in bytes.
    pub binary_bytes: u64,
    /// Process start to the first request served through it, milliseconds.
    pub startup_ms: f64,
    /// Peak RSS over the trials, saturation and sweep (before the idle
    /// phase), KiB.
    pub peak_rss_kib: u64,
}

/// A percentile's verdict: tailcut minus Go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PercentileVerdict {
    /// The quantile.
    pub quantile: f64,
    /// The bootstrap comparison.
    pub comparison: stats::Comparison,
    /// The verdict in words.
    pub text: String,
}

/// Everything a comparison measured; what `results.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// Offered rate of the trials.
    pub rate: f64,
    /// Threads per proxy (tokio workers = GOMAXPROCS).
    pub proxy_threads: usize,
    /// Where everything ran.
    pub plan: CpuPlan,
    /// `rustc --version`, `go version`, kernel.
    pub versions: Vec<String>,
    /// Per proxy.
    pub proxies: Vec<ProxyFacts>,
    /// Every trial, in the order run.
    pub trials: Vec<Trial>,
    /// Per proxy.
    pub saturation: Vec<Saturation>,
    /// tailcut against Go, per percentile, over valid trials.
    pub verdicts: Vec<PercentileVerdict>,
    /// The rate sweep, in the order run.
    #[serde(default)]
    pub sweep: Vec<sweep::SweepPoint>,
    /// RSS per idle connection, per proxy.
    #[serde(default)]
    pub idle: Vec<idle::IdleMemory>,
    /// Binary sizes: tailcut's speed and size profiles, the stripped Go build.
    #[serde(default)]
    pub binaries: Vec<build::BinarySize>,
    /// Clean build times, when measured (`--build-times`).
    #[serde(default)]
    pub build_times: Vec<build::BuildTime>,
    /// A balancing scenario's backends and how each target balances.
    #[serde(default)]
    pub balancing: Option<balancing::Setup>,
    /// An overload scenario's setup and every load's trials (`trials`
    /// holds the heaviest load's again, for the sections that read one).
    #[serde(default)]
    pub overload: Option<overload::Overload>,
}

/// Runs the comparison and writes its results under `options.out`: each
/// phase of the method above in turn.
pub fn compare(options: &Options) -> Result<Results, CompareError> {
    let mut scenario = Scenario::load(&options.scenario)?;
    if options.full {
        scenario = scenario.full();
    }
    std::fs::create_dir_all(&options.out).map_err(|source| CompareError::Write {
        path: options.out.clone(),
        source,
    })?;
    // Absolute: builds and proxies run in other folders, and a relative
    // path would put their outputs there.
    let out = std::fs::canonicalize(&options.out).map_err(|source| CompareError::Write {
        path: options.out.clone(),
        source,
    })?;
    let options = &Options { out, ..options.clone() };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = CpuPlan::new(cpus, scenario.proxy_threads);
    eprintln!("{}", plan.describe());

    let binaries = prepare_binaries(options)?;
    let me = std::env::current_exe().map_err(setup("this program's path"))?;
    let backends = Backends::start(&scenario, &me, &plan)?;
    let proxies = start_targets(&scenario, &binaries, &backends, &options.out, &plan)?;
    // The generator runs in this process: pinned here, before its threads start.
    procs::pin_self(&plan.load, &plan);

    // Each load in turn (one, unless the scenario is an overload one); the
    // heaviest load's trials are the ones every other section reads.
    let mut loads = Vec::new();
    for &multiple in &scenario.load.multiples {
        let rate = scenario.load.rate * multiple;
        if scenario.load.multiples.len() > 1 {
            eprintln!("load {multiple:.1}x: {rate:.0} requests/s");
        }
        let trials = run_rounds(&scenario, &proxies, &backends, rate)?;
        loads.push(overload::LoadTrials { multiple, rate, trials });
    }
    let heaviest = loads.last().map_or(scenario.load.rate, |l| l.rate);
    let trials = loads.last().map(|l| l.trials.clone()).unwrap_or_default();
    let saturation = run_saturation(&scenario, &proxies)?;
    let sweep = run_sweep(&scenario, &proxies, backends.direct, &saturation)?;
    // Before the idle phase, whose connections are a different load.
    let facts = proxies
        .iter()
        .map(|p| ProxyFacts {
            proxy: p.name().to_owned(),
            binary: p.binary.display().to_string(),
            binary_bytes: std::fs::metadata(&p.binary).map_or(0, |m| m.len()),
            startup_ms: p.startup.as_secs_f64() * 1000.0,
            peak_rss_kib: procs::sample(p.process.pid()).peak_rss_kib,
        })
        .collect();
    let idle = measure_idle(&scenario, &proxies);

    // Every target, and what it does about the scenario's fault, in words.
    let described: Vec<(String, String)> = proxies
        .iter()
        .map(|p| p.target)
        .chain([Target::Direct])
        .map(|t| (t.name().to_owned(), t.describe(scenario.tail)))
        .collect();
    let overload = (scenario.tail == Some(scenario::TailFeature::Overload)).then(|| overload::Overload {
        capacity: scenario.backend.capacity.unwrap_or(0),
        service: scenario.backend.delay.clone(),
        capacity_rate: scenario.load.rate,
        targets: described.clone(),
        loads,
    });
    let results = Results {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        rate: heaviest,
        proxy_threads: scenario.proxy_threads,
        plan,
        versions: versions(),
        proxies: facts,
        verdicts: verdicts(&trials),
        trials,
        saturation,
        sweep,
        idle,
        binaries: binaries.sizes,
        build_times: binaries.build_times,
        balancing: backends.several().then(|| balancing::Setup {
            backends: backends.addrs.len(),
            faulty: scenario.backends.faulty.clone(),
            targets: described,
        }),
        overload,
    };
    summary::write(&results, &options.out)?;
    Ok(results)
}

/// Phase 1: both proxies found or built, their sizes (and build times).
fn prepare_binaries(options: &Options) -> Result<build::Binaries, CompareError> {
    let binaries = build::prepare(
        options.tailcut.as_deref(),
        options.goproxy.as_deref(),
        &options.out,
        options.build_times,
    )?;
    for size in &binaries.sizes {
        eprintln!("{:>10.1} MB  {}", size.bytes as f64 / 1e6, size.name);
    }
    for build in &binaries.build_times {
        eprintln!(
            "clean build {:>8}: {:.1} s ({})",
            build.proxy, build.seconds, build.command
        );
    }
    Ok(binaries)
}

/// Phase 2: every target started in front of the backends: tailcut (once
/// per policy in a balancing scenario), the Go proxy, and nginx and HAProxy
/// where installed.
fn start_targets(
    scenario: &Scenario,
    binaries: &build::Binaries,
    backends: &Backends,
    out: &std::path::Path,
    plan: &CpuPlan,
) -> Result<Vec<Proxy>, CompareError> {
    let threads = scenario.proxy_threads.to_string();
    let tailcuts: Vec<Target> = match scenario.tail {
        // The feature off (tailcut's defaults), then on.
        Some(feature) => vec![Target::Tailcut(Policy::PeakEwma), Target::TailcutWith(feature)],
        None if backends.several() => Policy::ALL.iter().map(|&p| Target::Tailcut(p)).collect(),
        None => vec![Target::Tailcut(Policy::PeakEwma)],
    };
    let mut proxies = Vec::new();
    for target in tailcuts.into_iter().chain([Target::GoProxy]) {
        let binary = match target {
            Target::GoProxy => &binaries.goproxy,
            _ => &binaries.tailcut,
        };
        proxies.push(targets::start_proxy(
            target,
            binary,
            &backends.addrs,
            &threads,
            out,
            plan,
        )?);
    }
    for reference in [Reference::Nginx, Reference::Haproxy] {
        let name = reference.name();
        let Some(binary) = targets::find_program(name) else {
            eprintln!("{name} is not installed: no {name} column");
            continue;
        };
        match targets::start_reference(reference, &binary, &backends.addrs, scenario, out, plan) {
            Ok(proxy) => proxies.push(proxy),
            Err(err) => eprintln!("warning: {name} left out: {err}"),
        }
    }
    Ok(proxies)
}

/// Phase 3: rounds of interleaved trials, every target once per round, the
/// order rotating.
fn run_rounds(
    scenario: &Scenario,
    proxies: &[Proxy],
    backends: &Backends,
    rate: f64,
) -> Result<Vec<Trial>, CompareError> {
    let mut gc_trace = gc::TraceReader::default();
    let mut trials = Vec::new();
    let targets: Vec<(Target, SocketAddr)> = proxies
        .iter()
        .map(|p| (p.target, p.addr))
        .chain([(Target::Direct, backends.direct)])
        .collect();
    for round in 1..=scenario.load.rounds {
        for k in 0..targets.len() {
            let (target, addr) = targets[(k + round - 1) % targets.len()];
            let name = target.name();
            let proxy = proxies.iter().find(|p| p.target == target);
            let config = trial_config(scenario, addr, rate, scenario.load.connections, round)?;
            let served_before = backends.several().then(|| backends.served());
            backends.trial_starts();
            let mut trial = observed_trial(name, round, &config, proxy, &mut gc_trace)?;
            trial.backends_served = served_before.map(|before| {
                backends
                    .served()
                    .iter()
                    .zip(before)
                    .map(|(after, before)| after.saturating_sub(before))
                    .collect()
            });
            eprintln!(
                "round {round} {name:>8}: {:.0} req/s, p99 {} us{}{}{}{}",
                trial.result.achieved_rate,
                decoded_p99(&trial.result),
                outcomes(&trial.result),
                trial.gc.as_ref().map_or(String::new(), |gc| format!(
                    ", {} GC cycles ({:.2} ms paused)",
                    gc.cycles.len(),
                    gc.pause_total_ms()
                )),
                trial
                    .backends_served
                    .as_ref()
                    .map_or(String::new(), |served| format!(", backends served {served:?}")),
                invalid_note(&trial.result)
            );
            trials.push(trial);
        }
    }
    Ok(trials)
}

/// `, successful p99 N us, M% not successful`, when not every response
/// succeeded: the overall p99 then mixes two populations.
fn outcomes(result: &RunResult) -> String {
    let succeeded = result.status.success + result.status.redirect;
    let all = result.status.total() + result.errors.total();
    if succeeded == all || all == 0 {
        return String::new();
    }
    let p99 = result.decode().map_or(0, |d| d.succeeded.value_at_quantile(0.99));
    format!(
        ", successful p99 {p99} us, {:.1}% not successful",
        (all - succeeded) as f64 / all as f64 * 100.0
    )
}

/// Phase 4: each proxy's saturation run: far more offered than one core
/// serves, over a fixed set of connections, so each connection sends its
/// next request as soon as its last is answered (a closed loop in effect).
fn run_saturation(scenario: &Scenario, proxies: &[Proxy]) -> Result<Vec<Saturation>, CompareError> {
    let mut saturation = Vec::new();
    if scenario.load.saturation.is_zero() {
        return Ok(saturation);
    }
    for proxy in proxies {
        let mut config = trial_config(
            scenario,
            proxy.addr,
            1_000_000.0,
            scenario.load.saturation_connections,
            0,
        )?;
        config.duration = scenario.load.saturation;
        let result = run::execute(&config).map_err(|source| CompareError::Run {
            target: proxy.name().to_owned(),
            source,
        })?;
        eprintln!("saturation {:>8}: {:.0} req/s", proxy.name(), result.achieved_rate);
        saturation.push(Saturation {
            proxy: proxy.name().to_owned(),
            achieved_rate: result.achieved_rate,
        });
    }
    Ok(saturation)
}

/// Phase 5: the rate sweep.
fn run_sweep(
    scenario: &Scenario,
    proxies: &[Proxy],
    direct: SocketAddr,
    saturation: &[Saturation],
) -> Result<Vec<sweep::SweepPoint>, CompareError> {
    let mut points = Vec::new();
    for step in sweep::steps(&scenario.sweep.fractions, saturation, &["tailcut", "goproxy"]) {
        let addr = proxies
            .iter()
            .find(|p| p.name() == step.proxy)
            .map_or(direct, |proxy| proxy.addr);
        let mut config = trial_config(scenario, addr, step.offered, scenario.load.connections, 0)?;
        config.duration = scenario.sweep.duration;
        config.warmup = scenario.sweep.warmup;
        let result = run::execute(&config).map_err(|source| CompareError::Run {
            target: step.proxy.clone(),
            source,
        })?;
        eprintln!(
            "sweep {:>8} at {:.0} req/s ({}): p99 {} us{}",
            step.proxy,
            step.offered,
            step.describe(),
            decoded_p99(&result),
            invalid_note(&result)
        );
        points.push(sweep::SweepPoint {
            proxy: step.proxy,
            basis: step.basis,
            fraction: step.fraction,
            offered: step.offered,
            result,
        });
    }
    Ok(points)
}

/// Phase 6: RSS per idle keep-alive connection, per proxy.
fn measure_idle(scenario: &Scenario, proxies: &[Proxy]) -> Vec<idle::IdleMemory> {
    let mut figures = Vec::new();
    if scenario.idle.connections == 0 {
        return figures;
    }
    for proxy in proxies {
        let figure = idle::measure(proxy.name(), proxy.process.pid(), proxy.addr, scenario.idle.connections);
        eprintln!(
            "idle {:>8}: {} connections, {}{}",
            proxy.name(),
            figure.opened,
            figure
                .per_connection_bytes()
                .map_or("-".into(), |b| format!("{:.1} KB RSS each", b / 1000.0)),
            figure
                .error
                .as_ref()
                .map_or(String::new(), |e| format!(" (stopped: {e})"))
        );
        figures.push(figure);
    }
    figures
}

/// Runs one trial of `target` (`proxy` is none for direct), sampling the
/// proxy's `/proc` figures around it and, for the Go proxy, the GC cycles
/// it ran.
fn observed_trial(
    target: &str,
    round: usize,
    config: &RunConfig,
    proxy: Option<&Proxy>,
    gc_trace: &mut gc::TraceReader,
) -> Result<Trial, CompareError> {
    let before = proxy.map(|p| procs::sample(p.process.pid()));
    // Where the trial starts on the proxy's clock: `run` starts its
    // schedule 50 ms after it is called.
    let start_s = proxy.map(|p| p.started.elapsed().as_secs_f64() + 0.05);
    let result = run::execute(config).map_err(|source| CompareError::Run {
        target: target.to_owned(),
        source,
    })?;
    let after = proxy.map(|p| procs::sample(p.process.pid()));
    let gc = match (proxy.and_then(|p| p.stderr.as_deref()), start_s) {
        (Some(trace), Some(start_s)) => {
            let cycles = gc_trace.read_new(trace);
            Some(gc::within(&cycles, start_s, result.warmup_s + result.duration_s))
        }
        _ => None,
    };
    Ok(Trial {
        target: target.to_owned(),
        round,
        proxy_cpu_s: before.zip(after).map(|(b, a)| a.cpu_s - b.cpu_s),
        proxy_rss_kib: after.map(|a| a.rss_kib),
        gc,
        backends_served: None,
        result,
    })
}

fn invalid_note(result: &RunResult) -> String {
    if result.verdict.valid {
        String::new()
    } else {
        format!(" INVALID: {}", result.verdict.reasons.join("; "))
    }
}

/// Turns an error from setting up (building, starting, binding) into a
/// [`CompareError::Setup`] saying what was being done.
pub(crate) fn setup<W: std::fmt::Display, E: std::fmt::Display>(what: W) -> impl Fn(E) -> CompareError {
    move |err| CompareError::Setup(format!("{what}: {err}"))
}

fn trial_config(
    scenario: &Scenario,
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    seed: usize,
) -> Result<RunConfig, CompareError> {
    let mut headers = HeaderMap::new();
    for header in &scenario.load.headers {
        let parsed = header.split_once(':').and_then(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value.trim()).ok()?,
            ))
        });
        let (name, value) =
            parsed.ok_or_else(|| CompareError::Setup(format!("scenario header {header:?} is not `Name: value`")))?;
        headers.append(name, value);
    }
    Ok(RunConfig {
        target: format!("http://{addr}/")
            .parse()
            .map_err(|err| CompareError::Setup(format!("target URL: {err}")))?,
        rate,
        duration: scenario.load.duration,
        warmup: scenario.load.warmup,
        connections,
        threads: 1,
        arrivals: Arrivals::Uniform,
        method: Method::GET,
        headers,
        body: Bytes::new(),
        http2: false,
        streams: 1,
        timeout: Duration::from_secs(10),
        seed: seed as u64 + 1,
        thresholds: Thresholds {
            rate_tolerance: 0.01,
            max_send_lag_us: micros(scenario.load.max_send_lag),
            max_stall_us: micros(scenario.load.max_stall),
            max_error_rate: scenario.load.max_error_rate,
        },
        progress: Progress::Quiet,
        interval_log: None,
    })
}

fn decoded_p99(result: &RunResult) -> u64 {
    result.decode().map_or(0, |d| d.corrected.value_at_quantile(0.99))
}

/// The corrected histograms of `target`'s valid trials.
pub fn valid_histograms(trials: &[Trial], target: &str) -> Vec<hdrhistogram::Histogram<u64>> {
    trials
        .iter()
        .filter(|t| t.target == target && t.result.verdict.valid)
        .filter_map(|t| t.result.decode().ok().map(|d| d.corrected))
        .collect()
}

pub(crate) fn verdicts(trials: &[Trial]) -> Vec<PercentileVerdict> {
    let tailcut = valid_histograms(trials, "tailcut");
    let go = valid_histograms(trials, "goproxy");
    QUANTILES
        .iter()
        .enumerate()
        .map(|(i, &quantile)| {
            let comparison = stats::compare(&tailcut, &go, quantile, i as u64 + 1);
            PercentileVerdict {
                quantile,
                text: comparison.describe("tailcut", "Go"),
                comparison,
            }
        })
        .collect()
}

fn versions() -> Vec<String> {
    [
        ("rustc", &["--version"][..]),
        ("go", &["version"][..]),
        ("uname", &["-sr"][..]),
    ]
    .iter()
    .filter_map(|(program, args)| {
        let out = Command::new(program).args(*args).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
    .collect()
}

/// A proxy's mean CPU seconds per 1000 requests over its valid trials.
pub fn cpu_per_thousand(trials: &[Trial], target: &str) -> Option<f64> {
    let (cpu, requests) = trials
        .iter()
        .filter(|t| t.target == target && t.result.verdict.valid)
        .filter_map(|t| Some((t.proxy_cpu_s?, t.result.sent as f64)))
        .fold((0.0, 0.0), |(c, r), (tc, tr)| (c + tc, r + tr));
    // CPU time covers warm-up too; count its requests as well.
    let warmup_share = trials
        .iter()
        .find(|t| t.target == target)
        .map_or(0.0, |t| t.result.warmup_s / t.result.duration_s.max(f64::MIN_POSITIVE));
    (requests > 0.0).then(|| cpu / (requests * (1.0 + warmup_share)) * 1000.0)
}
