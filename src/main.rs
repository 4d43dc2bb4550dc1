//! The `tailcut` binary: parse the command line, load the config, start
//! tracing and the runtime, then hand over to [`tailcut::server`].

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tailcut::cli::{Cli, Command, LogFormat};
use tailcut::{config, server};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("tailcut: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Run => {
            init_tracing(&cli);
            match run(&cli, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(cause = format!("{err:#}"), "tailcut stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(cli: &Cli, config: config::Config) -> anyhow::Result<()> {
    // available_parallelism honours the CPU affinity mask (sched_getaffinity),
    // so `taskset -c 0 tailcut` gets one worker, as the benchmarks expect.
    let workers = cli
        .workers
        .map(|n| n.get())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    // One worker: a current-thread runtime, which skips the work-stealing
    // scheduler's cross-thread bookkeeping (measurably faster per request on
    // one core). More: the multi-thread runtime, whose work stealing evens out
    // load that SO_REUSEPORT-style sharding would leave uneven.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder
        .thread_name("tailcut-worker")
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let path = config.source.clone();
        // One waiting reload is enough: it reads the newest file. SIGHUP is
        // handled from before the listeners bind: its default action would
        // end the process.
        let (reloads, reload_requests) = tokio::sync::mpsc::channel(1);
        server::reload_signal(reloads.clone()).context("cannot listen for SIGHUP")?;
        let server = server::Server::bind(Arc::new(config)).await?;
        tracing::debug!(workers, "runtime started");
        let _watcher = if cli.watch_config {
            let watcher =
                server::watch_config(&path, reloads).with_context(|| format!("cannot watch {}", path.display()))?;
            Some(watcher)
        } else {
            drop(reloads);
            None
        };
        server.run(server::shutdown_signal(), reload_requests).await;
        Ok(())
    })
}

fn init_tracing(cli: &Cli) {
    let filter = match &cli.log_level {
        Some(directives) => EnvFilter::new(directives),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}
