//! Command-line interface definitions (clap derive). Parsing only: what each
//! command does lives in `main.rs` and the library.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// tailcut: a low-latency HTTP reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "tailcut", version, about)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Configuration file.
    #[arg(long, short, global = true, default_value = "config/tailcut.toml")]
    pub config: PathBuf,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Log filter: a level (`info`) or tracing directives (`tailcut=debug,hyper=info`).
    /// `RUST_LOG` is used when this is not given.
    #[arg(long, global = true)]
    pub log_level: Option<String>,

    /// Tokio worker threads; default: the CPUs this process may run on.
    #[arg(long, global = true)]
    pub workers: Option<NonZeroUsize>,

    /// Reload when the config file's contents change, as SIGHUP does.
    #[arg(long, global = true)]
    pub watch_config: bool,
}

/// The subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Serve traffic (the default).
    Run,
    /// Validate the configuration, print the effective configuration, and exit
    /// 0 (valid) or 64 (invalid).
    Check,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}
