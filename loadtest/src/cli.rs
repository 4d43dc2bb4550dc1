//! Command-line definitions (clap) and the documented exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::schedule::Arrivals;

/// Exit codes of `tailcut-load`.
pub mod exit {
    /// The run was valid (and errors within `--max-error-rate`).
    pub const VALID: u8 = 0;
    /// A failure of tailcut-load itself (a file it could not write or read).
    pub const FAILURE: u8 = 1;
    /// Bad command-line arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// The run is not a valid measurement: the rate was not reached, the
    /// send lag was too high, or the generator stalled.
    pub const INVALID_RUN: u8 = 3;
    /// The target could not be reached when the run started.
    pub const UNREACHABLE: u8 = 4;
    /// The run was valid but more requests failed than `--max-error-rate` allows.
    pub const TOO_MANY_ERRORS: u8 = 5;
}

/// An open-loop HTTP load generator that measures tail latency without
/// coordinated omission.
#[derive(Debug, Parser)]
#[command(name = "tailcut-load", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive URL at a fixed rate and report latency from each request's intended send time.
    Run(RunArgs),
    /// Merge the JSON results of several runs into one.
    Merge(MergeArgs),
    /// Serve fixed responses with a chosen size, status and service time.
    Backend(BackendArgs),
    /// Run tailcut and the Go proxy side by side under one scenario and compare them.
    Compare(CompareArgs),
    /// Render report.html, summary.txt and the .hgrm files again from a results.json.
    Report(ReportArgs),
}

/// `tailcut-load report`.
#[derive(Debug, Parser)]
pub struct ReportArgs {
    /// A results.json written by `compare`.
    pub results: PathBuf,
    /// Where to write (default: the folder of results.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `tailcut-load compare`.
#[derive(Debug, Parser)]
pub struct CompareArgs {
    /// The scenario (TOML).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/default.toml"))]
    pub scenario: PathBuf,
    /// Where results.json, report.html, summary.txt and the .hgrm files go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/compare"))]
    pub out: PathBuf,
    /// Use this tailcut binary instead of building one.
    #[arg(long)]
    pub tailcut: Option<PathBuf>,
    /// Use this Go proxy binary instead of building one.
    #[arg(long)]
    pub goproxy: Option<PathBuf>,
    /// The long run: three times the rounds and every window, plus clean
    /// build times.
    #[arg(long)]
    pub full: bool,
    /// Time a clean build of tailcut and of the Go proxy first (a few
    /// minutes on two cores).
    #[arg(long)]
    pub build_times: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration ({err}); write e.g. 500ms, 10s, 2m"))
}

/// `tailcut-load run`.
#[derive(Debug, Parser)]
pub struct RunArgs {
    /// The URL to drive (http:// only).
    pub url: String,
    /// Target rate, requests per second (all threads together).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Length of the measured window.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub duration: Duration,
    /// Warm-up before the window: load is sent and measured, then discarded.
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub warmup: Duration,
    /// Connections (all threads together).
    #[arg(long, short, default_value_t = 16)]
    pub connections: usize,
    /// Generator threads.
    #[arg(long, short, default_value_t = 1)]
    pub threads: usize,
    /// Arrival process.
    #[arg(long, value_enum, default_value_t = Arrivals::Uniform)]
    pub arrivals: Arrivals,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body read from a file: `@path`.
    #[arg(long)]
    pub body: Option<String>,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// A request without a complete response this long after its intended send time is a timeout.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub timeout: Duration,
    /// Seed of the Poisson schedule (same seed, same send times).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Largest share of failed requests (transport errors and 5xx) before exit code 5.
    #[arg(long, default_value_t = 0.0)]
    pub max_error_rate: f64,
    /// Largest send-lag p99 of a valid run.
    #[arg(long, value_parser = duration, default_value = "1ms")]
    pub max_send_lag: Duration,
    /// Largest generator stall (1 ms monitor oversleep) of a valid run.
    #[arg(long, value_parser = duration, default_value = "10ms")]
    pub max_stall: Duration,
    /// Largest distance of the achieved rate from the target, as a fraction.
    #[arg(long, default_value_t = 0.01)]
    pub rate_tolerance: f64,
    /// Write the corrected latency distribution as HdrHistogram `.hgrm` text
    /// (and, when some requests succeeded and others did not, each
    /// outcome's beside it: NAME.succeeded.hgrm, NAME.unsuccessful.hgrm).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write all figures and histograms as JSON (for `merge` and later comparison).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one corrected-latency histogram per second (HdrHistogram interval log).
    #[arg(long)]
    pub interval_log: Option<PathBuf>,
    /// Print nothing but errors; the exit code carries the verdict.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `tailcut-load merge`.
#[derive(Debug, Parser)]
pub struct MergeArgs {
    /// JSON results written by `run --json`.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Write the merged result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the merged corrected latency distribution as `.hgrm`.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
}

/// `tailcut-load backend`.
#[derive(Debug, Parser)]
pub struct BackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 12)]
    pub size: usize,
    /// Response status.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Service time: none, fixed:200us, uniform:100us..1ms,
    /// lognormal:median=300us,p99=5ms, bimodal:99%=200us,1%=50ms.
    #[arg(long, default_value = "none")]
    pub delay: String,
    /// Apply --status and --delay only within this window after the epoch
    /// (start, or the last request to /_tailcut-load/epoch), e.g. 4s..8s;
    /// 200 at once outside it.
    #[arg(long)]
    pub window: Option<String>,
    /// Answer --status (and wait --delay) for this share of requests only,
    /// drawn at random (0 to 1); 200 at once for the others.
    #[arg(long, default_value_t = 1.0)]
    pub share: f64,
    /// Serve this many requests at once; the others wait inside the
    /// backend, in arrival order, as behind a thread pool (unset: no limit).
    #[arg(long)]
    pub capacity: Option<std::num::NonZeroUsize>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}
