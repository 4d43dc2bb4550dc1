//! The `tailcut-load` binary: parse the command line, run, print, exit with
//! the code that says what happened (see `cli::exit`).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tailcut_load::backend::{self, BackendConfig};
use tailcut_load::cli::{exit, BackendArgs, Cli, Command, CompareArgs, MergeArgs, ReportArgs, RunArgs};
use tailcut_load::compare;
use tailcut_load::histograms;
use tailcut_load::result::{RunResult, Thresholds};
use tailcut_load::run::{self, Progress, RunConfig, RunError};
use tailcut_load::timing::micros;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run_command(args),
        Command::Merge(args) => merge_command(args),
        Command::Backend(args) => backend_command(args),
        Command::Compare(args) => compare_command(args),
        Command::Report(args) => report_command(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("tailcut-load: {err:#}");
            let code = match err.downcast_ref::<RunError>() {
                Some(RunError::Unreachable { .. }) => exit::UNREACHABLE,
                _ => exit::FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

fn run_command(args: RunArgs) -> anyhow::Result<u8> {
    let config = run_config(&args)?;
    let result = run::execute(&config)?;
    if !args.quiet {
        print!("{}", result.summary());
    }
    write_outputs(&result, args.json.as_deref(), args.hgrm.as_deref())?;
    Ok(exit_code(&result))
}

fn exit_code(result: &RunResult) -> u8 {
    if !result.verdict.valid {
        exit::INVALID_RUN
    } else if !result.verdict.errors_ok {
        exit::TOO_MANY_ERRORS
    } else {
        exit::VALID
    }
}

fn run_config(args: &RunArgs) -> anyhow::Result<RunConfig> {
    let target = args
        .url
        .parse()
        .with_context(|| format!("{:?} is not a URL", args.url))?;
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.connections == 0 || args.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    if args.threads > args.connections {
        bail!(
            "--threads ({}) cannot exceed --connections ({})",
            args.threads,
            args.connections
        );
    }
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?}: expected Name: value"))?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).with_context(|| format!("--header {header:?}: bad name"))?;
        let value = HeaderValue::from_str(value.trim()).with_context(|| format!("--header {header:?}: bad value"))?;
        headers.append(name, value);
    }
    let body = match &args.body {
        None => Bytes::new(),
        Some(spec) => {
            let path = spec
                .strip_prefix('@')
                .with_context(|| format!("--body {spec:?}: write @FILE"))?;
            Bytes::from(std::fs::read(path).with_context(|| format!("--body: cannot read {path}"))?)
        }
    };
    let progress = if args.quiet {
        Progress::Quiet
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines
    };
    Ok(RunConfig {
        target,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        threads: args.threads,
        arrivals: args.arrivals,
        method: Method::from_bytes(args.method.as_bytes()).with_context(|| format!("--method {:?}", args.method))?,
        headers,
        body,
        http2: args.http2,
        streams: args.streams.max(1),
        timeout: args.timeout,
        seed: args.seed,
        thresholds: Thresholds {
            rate_tolerance: args.rate_tolerance,
            max_send_lag_us: micros(args.max_send_lag),
            max_stall_us: micros(args.max_stall),
            max_error_rate: args.max_error_rate,
        },
        progress,
        interval_log: args.interval_log.clone(),
    })
}

fn write_outputs(
    result: &RunResult,
    json: Option<&std::path::Path>,
    hgrm: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(result).context("serializing the result")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = hgrm {
        let decoded = result.decode().context("decoding the histograms")?;
        std::fs::write(path, histograms::hgrm(&decoded.corrected))
            .with_context(|| format!("writing {}", path.display()))?;
        // With both outcomes, each one's distribution beside it:
        // NAME.succeeded.hgrm and NAME.unsuccessful.hgrm.
        if !decoded.succeeded.is_empty() && !decoded.unsuccessful.is_empty() {
            for (kind, histogram) in [
                ("succeeded", &decoded.succeeded),
                ("unsuccessful", &decoded.unsuccessful),
            ] {
                let apart = path.with_extension(format!("{kind}.hgrm"));
                std::fs::write(&apart, histograms::hgrm(histogram))
                    .with_context(|| format!("writing {}", apart.display()))?;
            }
        }
    }
    Ok(())
}

fn merge_command(args: MergeArgs) -> anyhow::Result<u8> {
    let parts = args
        .inputs
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not a tailcut-load result", path.display()))
        })
        .collect::<anyhow::Result<Vec<RunResult>>>()?;
    let merged = RunResult::merge(&parts)?;
    print!("{}", merged.summary());
    write_outputs(&merged, args.json.as_deref(), args.hgrm.as_deref())?;
    Ok(exit_code(&merged))
}

fn backend_command(args: BackendArgs) -> anyhow::Result<u8> {
    let status = StatusCode::from_u16(args.status).with_context(|| format!("--status {}", args.status))?;
    let delay = args.delay.parse().context("--delay")?;
    let window = args
        .window
        .as_deref()
        .map(backend::parse_window)
        .transpose()
        .map_err(|err| anyhow::anyhow!("--window {err}"))?;
    backend::run(
        args.listen,
        args.workers,
        BackendConfig {
            size: args.size,
            status,
            delay,
            window,
            share: args.share.clamp(0.0, 1.0),
            capacity: args.capacity.map(std::num::NonZeroUsize::get),
        },
    )
    .with_context(|| format!("backend on {}", args.listen))?;
    Ok(exit::VALID)
}

fn compare_command(args: CompareArgs) -> anyhow::Result<u8> {
    let options = compare::Options {
        scenario: args.scenario,
        out: args.out,
        tailcut: args.tailcut,
        goproxy: args.goproxy,
        full: args.full,
        build_times: args.build_times || args.full,
    };
    compare::compare(&options)?;
    eprintln!("results in {}", options.out.display());
    Ok(exit::VALID)
}

fn report_command(args: ReportArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.results).with_context(|| format!("{}", args.results.display()))?;
    let results: compare::Results = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a compare results file", args.results.display()))?;
    let out = match args.out {
        Some(out) => out,
        None => args
            .results
            .parent()
            .map_or_else(|| std::path::PathBuf::from("."), std::path::Path::to_path_buf),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
    compare::summary::render(&results, &out)?;
    eprintln!("report in {}", out.join("report.html").display());
    Ok(exit::VALID)
}
