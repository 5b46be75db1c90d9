//! Command-line definitions (clap). Exit codes live in `main.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// bakewatch — deep health checks and post-deploy verification.
///
/// Runs checks on schedules, exposes results as Prometheus metrics on /metrics and over a JSON
/// API. Start with `bakewatch validate -c config/bakewatch.toml`, then
/// `bakewatch run -c config/bakewatch.toml` and `curl localhost:9797/metrics`.
#[derive(Debug, Parser)]
#[command(
    name = "bakewatch",
    version,
    about,
    long_about,
    propagate_version = true
)]
pub struct Cli {
    /// Log format for the daemon's logs (filter with RUST_LOG, e.g. RUST_LOG=bakewatch=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The daemon config file (check files are found through its `checks = [...]` globs).
    #[arg(short, long, env = "BAKEWATCH_CONFIG", default_value = crate::config::DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule every check, serve /metrics and the API until SIGTERM/SIGINT.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load the config and every check file; print each problem as file:line:col: message.
    ///
    /// Exit code 0 when valid, 1 when not.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run checks once, without the daemon, and print their outcomes.
    ///
    /// Exit code 0 when every check passes (degraded counts as passing), 1 otherwise.
    Once {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this check (repeat for several). Default: every check.
        #[arg(long = "check", value_name = "NAME")]
        checks: Vec<String>,
        /// Output: a table for people, JSON for scripts, JUnit XML for CI systems.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}
