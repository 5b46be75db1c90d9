//! Command-line definitions (clap). Exit codes live in `main.rs`.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Register a deployment with the daemon(s); with --wait, wait for its verdict.
    ///
    /// Prints the deployment id on stdout (everything else goes to stderr), so
    /// `ID=$(bakewatch deploy --service shop --version 2.0.0)` works. Without --id, an id
    /// `<service>-<version>-<random>` is made here, so every --url gets the same one.
    ///
    /// With several --url the deployment is registered with each, and their verdicts
    /// combine: fail if any fails, pass only if all pass.
    ///
    /// Exit codes: 0 registered (without --wait) or pass, 1 fail, 2 inconclusive, 3 --timeout
    /// reached while still pending, 4 cancelled or superseded, 64 usage (also a rejected token
    /// or an id reused with a different body), 69 daemon unreachable, 70 internal error.
    // `--version` here is the deployed version, not bakewatch's own version flag.
    #[command(disable_version_flag = true)]
    Deploy(DeployArgs),
    /// Read a deployment's verdict; with --wait, wait until it concludes.
    ///
    /// Prints the verdict, its reasons and its checks on stdout.
    ///
    /// Exit codes: 0 pass, 1 fail, 2 inconclusive, 3 still pending (at --timeout, or at once
    /// without --wait), 4 cancelled or superseded, 64 usage (also an unknown id), 69 daemon
    /// unreachable, 70 internal error.
    Verdict(VerdictArgs),
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The service deployed (the `service` label of its checks).
    #[arg(long, value_parser = non_empty)]
    pub service: String,
    /// The version deployed.
    #[arg(long = "version", value_name = "VERSION", value_parser = non_empty)]
    pub version: String,
    /// Deployment id. Default: `<service>-<version>-<random>`, made once for every --url.
    #[arg(long, value_parser = non_empty)]
    pub id: Option<String>,
    /// The environment deployed to (e.g. `prod`).
    #[arg(long = "env", value_name = "ENVIRONMENT", value_parser = non_empty)]
    pub environment: Option<String>,
    /// A label `key=value` recorded with the deployment (repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The daemon's API token (sent as `Authorization: Bearer`).
    #[arg(
        long,
        env = "BAKEWATCH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub daemons: DaemonArgs,
}

#[derive(Debug, clap::Args)]
pub struct VerdictArgs {
    /// The deployment id (as printed by `bakewatch deploy`).
    #[arg(value_parser = non_empty)]
    pub id: String,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub daemons: DaemonArgs,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Wait until the verdict concludes (long-polling), printing progress on stderr.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit code 3), e.g. `20m`, `90s`.
    #[arg(long, requires = "wait", value_parser = parse_duration, default_value = "20m", value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// A daemon's base URL. Repeat (or separate with commas) for one daemon per region:
    /// verdicts combine, fail if any fails, pass only if all pass.
    #[arg(
        long = "url",
        env = "BAKEWATCH_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9797",
        value_parser = parse_base_url,
        value_name = "URL"
    )]
    pub urls: Vec<url::Url>,
    /// When a daemon cannot be reached: `fail` (exit 69, the default: fail closed) or
    /// `proceed` (count that daemon as a pass, with a warning).
    #[arg(long, value_enum, default_value_t = OnUnavailable::Fail, value_name = "POLICY")]
    pub on_unavailable: OnUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnUnavailable {
    Fail,
    Proceed,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 20m, 90s or 1h30m)"))
}

/// A daemon's base URL: http or https, no query or fragment (API paths are appended to it).
fn parse_base_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s.trim()).map_err(|e| format!("{e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("expected an http:// or https:// URL, got {s:?}"));
    }
    if u.cannot_be_a_base() || u.host().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?}: a base URL takes no query or fragment"));
    }
    Ok(u)
}
