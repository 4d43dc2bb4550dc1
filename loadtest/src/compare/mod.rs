//! `tailcut-load compare`: tailcut and its Go equivalent under the same
//! load, on the same machine, in one run.
//!
//! The method: find or build both proxies; start `tailcut-load backend` and
//! both proxies pinned before exec (proxies alone on their CPUs, with equal
//! thread counts; generator and backend elsewhere); then rounds of
//! interleaved open-loop trials at the scenario's rate (tailcut, Go, direct
//! to the backend, the order rotating each round), each judged by the run
//! verdict, an invalid trial kept out of the figures; then a saturation run
//! per proxy. Debian's nginx and HAProxy, when installed, run as reference
//! columns in front of the same backend, pinned like the proxies. Percentile differences get bootstrap intervals over trials
//! ([`stats`]).
//!
//! - [`scenario`]: the TOML scenario.
//! - [`procs`]: the CPU plan, pinned processes, `/proc` samples.
//! - [`stats`]: bootstrap intervals and verdicts.
//! - [`summary`]: the results file, `.hgrm` files and the terminal table.
//! - [`report`]: `report.html`, self-contained, with an SVG spectrum.

pub mod procs;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod summary;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

use crate::result::{RunResult, Thresholds};
use crate::run::{self, Progress, RunConfig};
use crate::schedule::Arrivals;
use crate::timing::micros;
use procs::{CpuPlan, Running};
use scenario::Scenario;

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
    /// `tailcut`, `goproxy` or `direct`.
    pub target: String,
    /// Round, from 1.
    pub round: usize,
    /// The proxy's CPU time over the trial, seconds (none for direct).
    pub proxy_cpu_s: Option<f64>,
    /// The proxy's RSS at the end of the trial, KiB.
    pub proxy_rss_kib: Option<u64>,
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
    /// Peak RSS over the whole comparison, KiB.
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
}

/// A proxy under comparison, running.
struct Proxy {
    name: &'static str,
    binary: PathBuf,
    process: Running,
    addr: SocketAddr,
    startup: Duration,
}

/// Runs the comparison and writes its results under `options.out`.
pub fn compare(options: &Options) -> Result<Results, CompareError> {
    let scenario = Scenario::load(&options.scenario)?;
    std::fs::create_dir_all(&options.out).map_err(|source| CompareError::Write {
        path: options.out.clone(),
        source,
    })?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = CpuPlan::new(cpus, scenario.proxy_threads);
    eprintln!("{}", plan.describe());

    let tailcut_binary = match &options.tailcut {
        Some(path) => path.clone(),
        None => build_tailcut()?,
    };
    let go_binary = match &options.goproxy {
        Some(path) => path.clone(),
        None => build_goproxy(&options.out)?,
    };

    let backend_port = procs::free_port().map_err(setup("free port"))?;
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], backend_port));
    let me = std::env::current_exe().map_err(setup("this program's path"))?;
    let size = scenario.backend.size.to_string();
    let backend_args = [
        "backend",
        "--listen",
        &backend_addr.to_string(),
        "--size",
        &size,
        "--delay",
        &scenario.backend.delay,
    ]
    .map(String::from);
    let _backend =
        Running::start(&me, &backend_args, &plan.load, &plan, &[]).map_err(setup("start tailcut-load backend"))?;
    if !procs::wait_for_port(backend_addr, Duration::from_secs(10)) {
        return Err(CompareError::Setup(format!("backend did not listen on {backend_addr}")));
    }

    let threads = scenario.proxy_threads.to_string();
    let mut proxies = Vec::new();
    for (name, binary) in [("tailcut", &tailcut_binary), ("goproxy", &go_binary)] {
        proxies.push(start_proxy(name, binary, backend_addr, &threads, &options.out, &plan)?);
    }
    for reference in [Reference::Nginx, Reference::Haproxy] {
        let name = reference.name();
        let Some(binary) = find_program(name) else {
            eprintln!("{name} is not installed: no {name} column");
            continue;
        };
        match start_reference(
            reference,
            &binary,
            backend_addr,
            scenario.proxy_threads,
            &options.out,
            &plan,
        ) {
            Ok(proxy) => proxies.push(proxy),
            Err(err) => eprintln!("warning: {name} left out: {err}"),
        }
    }

    // The generator runs in this process: pinned here, before its threads start.
    procs::pin_self(&plan.load, &plan);

    let mut trials = Vec::new();
    let targets: Vec<(&str, SocketAddr)> = proxies
        .iter()
        .map(|p| (p.name, p.addr))
        .chain([("direct", backend_addr)])
        .collect();
    for round in 1..=scenario.load.rounds {
        for k in 0..targets.len() {
            let (name, addr) = targets[(k + round - 1) % targets.len()];
            let proxy = proxies.iter().find(|p| p.name == name);
            let before = proxy.map(|p| procs::sample(p.process.pid()));
            let config = trial_config(&scenario, addr, scenario.load.rate, scenario.load.connections, round)?;
            let result = run::execute(&config).map_err(|source| CompareError::Run {
                target: name.to_owned(),
                source,
            })?;
            let after = proxy.map(|p| procs::sample(p.process.pid()));
            eprintln!(
                "round {round} {name:>8}: {:.0} req/s, p99 {} us{}",
                result.achieved_rate,
                decoded_p99(&result),
                if result.verdict.valid {
                    String::new()
                } else {
                    format!(" INVALID: {}", result.verdict.reasons.join("; "))
                }
            );
            trials.push(Trial {
                target: name.to_owned(),
                round,
                proxy_cpu_s: before.zip(after).map(|(b, a)| a.cpu_s - b.cpu_s),
                proxy_rss_kib: after.map(|a| a.rss_kib),
                result,
            });
        }
    }

    let mut saturation = Vec::new();
    if !scenario.load.saturation.is_zero() {
        for proxy in &proxies {
            let mut config = trial_config(
                &scenario,
                proxy.addr,
                1_000_000.0,
                scenario.load.saturation_connections,
                0,
            )?;
            config.duration = scenario.load.saturation;
            let result = run::execute(&config).map_err(|source| CompareError::Run {
                target: proxy.name.to_owned(),
                source,
            })?;
            eprintln!("saturation {:>8}: {:.0} req/s", proxy.name, result.achieved_rate);
            saturation.push(Saturation {
                proxy: proxy.name.to_owned(),
                achieved_rate: result.achieved_rate,
            });
        }
    }

    let facts = proxies
        .iter()
        .map(|p| ProxyFacts {
            proxy: p.name.to_owned(),
            binary: p.binary.display().to_string(),
            binary_bytes: std::fs::metadata(&p.binary).map_or(0, |m| m.len()),
            startup_ms: p.startup.as_secs_f64() * 1000.0,
            peak_rss_kib: procs::sample(p.process.pid()).peak_rss_kib,
        })
        .collect();
    let results = Results {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        rate: scenario.load.rate,
        proxy_threads: scenario.proxy_threads,
        plan,
        versions: versions(),
        proxies: facts,
        verdicts: verdicts(&trials),
        trials,
        saturation,
    };
    summary::write(&results, &options.out)?;
    Ok(results)
}

fn setup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> CompareError {
    move |err| CompareError::Setup(format!("{what}: {err}"))
}

/// The workspace root (this crate lives in `loadtest/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn build_tailcut() -> Result<PathBuf, CompareError> {
    eprintln!("building tailcut (cargo build --release --bin tailcut)");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--bin", "tailcut"])
        .current_dir(workspace())
        .status()
        .map_err(setup("cargo"))?;
    if !status.success() {
        return Err(CompareError::Setup("cargo build of tailcut failed".into()));
    }
    Ok(workspace().join("target/release/tailcut"))
}

fn build_goproxy(out: &Path) -> Result<PathBuf, CompareError> {
    eprintln!("building the Go proxy (go build -trimpath -ldflags=\"-s -w\")");
    let binary = out.join("goproxy");
    let status = Command::new("go")
        .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(workspace().join("loadtest/goproxy"))
        .status()
        .map_err(setup("go (install Go 1.24 or newer)"))?;
    if !status.success() {
        return Err(CompareError::Setup("go build of the Go proxy failed".into()));
    }
    Ok(binary)
}

/// Starts a proxy in front of `backend` and times it to its first served request.
fn start_proxy(
    name: &'static str,
    binary: &Path,
    backend: SocketAddr,
    threads: &str,
    out: &Path,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let port = procs::free_port().map_err(setup("free port"))?;
    let admin = procs::free_port().map_err(setup("free port"))?;
    let config = format!(
        "[[listeners]]\nname = \"compare\"\naddress = \"127.0.0.1:{port}\"\n\n[[routes]]\nname = \"all\"\n\
         upstream = \"backend\"\n\n[upstreams.backend]\nbackends = [\"{backend}\"]\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n"
    );
    let config_path = out.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).map_err(|source| CompareError::Write {
        path: config_path.clone(),
        source,
    })?;
    let args = [
        "run".to_owned(),
        "--config".to_owned(),
        config_path.display().to_string(),
        "--workers".to_owned(),
        threads.to_owned(),
        "--log-level".to_owned(),
        "warn".to_owned(),
    ];
    launch(name, binary, &args, port, plan)
}

/// Starts `binary args` on the proxies' CPUs and waits for its first
/// request served on `port`, timing the start-up.
fn launch(
    name: &'static str,
    binary: &Path,
    args: &[String],
    port: u16,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let started = Instant::now();
    let process = Running::start(binary, args, &plan.proxies, plan, &[])
        .map_err(|err| CompareError::Setup(format!("start {}: {err}", binary.display())))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = started + Duration::from_secs(20);
    while !served(addr) {
        if Instant::now() > deadline {
            return Err(CompareError::Setup(format!(
                "{name} served nothing on {addr} within 20 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Proxy {
        name,
        binary: binary.to_path_buf(),
        process,
        addr,
        startup: started.elapsed(),
    })
}

/// A reference proxy from Debian's packages.
#[derive(Debug, Clone, Copy)]
enum Reference {
    Nginx,
    Haproxy,
}

impl Reference {
    fn name(self) -> &'static str {
        match self {
            Reference::Nginx => "nginx",
            Reference::Haproxy => "haproxy",
        }
    }
}

/// `program` on PATH, or in /usr/sbin and /sbin where Debian puts servers.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Starts nginx or HAProxy doing the proxies' job: pooled keep-alive
/// connections to the backend, X-Forwarded-For/-Proto/-Host, Via, one
/// worker thread per proxy thread, no access log.
fn start_reference(
    reference: Reference,
    binary: &Path,
    backend: SocketAddr,
    threads: usize,
    out: &Path,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let port = procs::free_port().map_err(setup("free port"))?;
    let name = reference.name();
    let config_path = out.join(format!("{name}.conf"));
    let (config, args) = match reference {
        Reference::Nginx => (
            format!(
                "daemon off; master_process off; worker_processes {threads}; pid {pid}; error_log stderr error;\n\
                 events {{ worker_connections 10000; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 10000000;\n\
                 upstream backend {{ server {backend}; keepalive 64; }}\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                 proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Forwarded-Host $host;\n\
                 add_header Via \"1.1 nginx\";\n    }}\n  }}\n}}\n",
                pid = out.join("nginx.pid").display()
            ),
            vec![
                "-c".to_owned(),
                config_path.display().to_string(),
                "-e".to_owned(),
                "stderr".to_owned(),
            ],
        ),
        Reference::Haproxy => (
            [
                "global".to_owned(),
                format!("  nbthread {threads}"),
                // Within a 20,000 file-descriptor limit: two per connection.
                "  maxconn 5000".to_owned(),
                "defaults".to_owned(),
                "  mode http".to_owned(),
                "  timeout connect 1s".to_owned(),
                "  timeout client 60s".to_owned(),
                "  timeout server 30s".to_owned(),
                "  option http-keep-alive".to_owned(),
                "  http-reuse always".to_owned(),
                "frontend compare".to_owned(),
                format!("  bind 127.0.0.1:{port}"),
                "  option forwardfor".to_owned(),
                "  http-request set-header X-Forwarded-Proto http".to_owned(),
                "  http-request set-header X-Forwarded-Host %[req.hdr(host)]".to_owned(),
                "  http-response add-header Via \"1.1 haproxy\"".to_owned(),
                "  default_backend backend".to_owned(),
                "backend backend".to_owned(),
                format!("  server b1 {backend}"),
                String::new(),
            ]
            .join("\n"),
            vec!["-f".to_owned(), config_path.display().to_string(), "-db".to_owned()],
        ),
    };
    std::fs::write(&config_path, config).map_err(|source| CompareError::Write {
        path: config_path.clone(),
        source,
    })?;
    launch(name, binary, &args, port, plan)
}

/// Whether one GET through `addr` gets a 200.
fn served(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: compare\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
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
            max_send_lag_us: micros(Duration::from_millis(1)),
            max_stall_us: micros(Duration::from_millis(10)),
            max_error_rate: 0.0,
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
