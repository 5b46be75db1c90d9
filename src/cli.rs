//! Command-line definitions (clap). Exit codes live in `main.rs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

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
    /// Print a shell completion script on stdout.
    ///
    /// bash: `bakewatch completions bash > /etc/bash_completion.d/bakewatch`;
    /// zsh: `bakewatch completions zsh > "${fpath[1]}/_bakewatch"`;
    /// fish: `bakewatch completions fish > ~/.config/fish/completions/bakewatch.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `bakewatch man | man -l -`.
    Man,
    /// Print a JSON Schema (draft 2020-12) of the daemon file or of a check file, for editors.
    ///
    /// With taplo / Even Better TOML: `bakewatch schema checks > checks.schema.json`, then
    /// point a `#:schema ./checks.schema.json` comment (or a `.taplo.toml` rule) at it.
    Schema {
        /// Which file the schema describes.
        #[arg(value_enum, default_value_t = SchemaKind::Daemon)]
        which: SchemaKind,
    },
}

/// The files `bakewatch schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The daemon file (`bakewatch.toml`): every table, plus checks, rules and notifiers.
    Daemon,
    /// A check file: `[[check]]` and `[[rule]]` tables only.
    Checks,
}

/// The JSON Schema of the daemon file, checked in under `config/schema/`; every `$defs` entry
/// (checks, rules, notifiers, assertions, secrets, durations) is shared by both schemas.
pub const DAEMON_SCHEMA: &str = include_str!("../config/schema/bakewatch.schema.json");

/// The JSON Schema of `which`, with a trailing newline. The check-file schema is the daemon
/// schema's `$defs` with `checkFile` as the root.
pub fn schema(which: SchemaKind) -> String {
    if which == SchemaKind::Daemon {
        return DAEMON_SCHEMA.to_string();
    }
    let mut doc: serde_json::Value =
        serde_json::from_str(DAEMON_SCHEMA).expect("the embedded schema is valid JSON");
    if let Some(root) = doc.as_object_mut() {
        root.insert("title".into(), "bakewatch check file".into());
        root.insert("$ref".into(), "#/$defs/checkFile".into());
    }
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON serializes");
    text.push('\n');
    text
}

/// The man page, one page for every command: clap's rendering of the top level, a COMMANDS
/// section with each subcommand's usage, description and options, then exit status,
/// environment and files.
pub fn man_page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd;
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("BAKEWATCH")
        .section("1")
        .manual("bakewatch manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        let mut text = format!(".SS \"bakewatch {}\"\n.B {}\n", sub.get_name(), roff(usage));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            for para in about.to_string().split("\n\n") {
                text.push_str(&format!(".PP\n{}\n", roff(para.trim())));
            }
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            let action = arg.get_action();
            if arg.is_hide_set()
                || arg.is_global_set()
                || matches!(
                    action,
                    ArgAction::Help
                        | ArgAction::HelpShort
                        | ArgAction::HelpLong
                        | ArgAction::Version
                )
            {
                continue;
            }
            let takes_values = action.takes_values();
            let value = arg
                .get_value_names()
                .filter(|_| takes_values)
                .map(|v| {
                    v.iter()
                        .map(|n| format!("<{n}>"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let flag = match (arg.get_short(), arg.get_long()) {
                _ if arg.is_positional() => value.clone(),
                (Some(s), Some(l)) => format!("-{s}, --{l} {value}"),
                (None, Some(l)) => format!("--{l} {value}"),
                (Some(s), None) => format!("-{s} {value}"),
                (None, None) => id.to_string(),
            };
            text.push_str(&format!(".TP\n\\fB{}\\fR\n", roff(flag.trim())));
            let mut help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() && takes_values {
                help.push_str(&format!(" [default: {}]", defaults.join(",")));
            }
            if let Some(env) = arg.get_env() {
                help.push_str(&format!(" [env: {}]", env.to_string_lossy()));
            }
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                help.push_str(&format!(" [possible values: {}]", values.join(", ")));
            }
            text.push_str(&roff(help.trim()));
            text.push('\n');
        }
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(MAN_EXTRA.as_bytes());
    Ok(out)
}

/// Text as roff: backslashes and hyphens escaped, no line starting with a control character.
fn roff(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.trim_start().replace('\\', "\\e").replace('-', "\\-");
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else if line.is_empty() {
                ".sp".to_string()
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success: a clean shutdown, a valid config, every check passing, a verdict of pass.
.TP
\fB1\fR
An invalid config, a failing check (\fBonce\fR), a verdict of fail.
.TP
\fB2\fR, \fB3\fR, \fB4\fR
deploy / verdict: inconclusive; still pending at \-\-timeout; cancelled or superseded.
.TP
\fB64\fR
Usage error (also a refused token or an unknown deployment id).
.TP
\fB69\fR
The daemon could not be reached.
.TP
\fB70\fR
Internal error.
.SH ENVIRONMENT
.TP
\fBBAKEWATCH_CONFIG\fR
The daemon config file (\-c).
.TP
\fBBAKEWATCH_URL\fR
The daemon's base URL(s) for deploy and verdict (\-\-url).
.TP
\fBBAKEWATCH_TOKEN\fR
The API token for deploy (\-\-token).
.TP
\fBRUST_LOG\fR
The log filter, e.g. bakewatch=debug.
.SH FILES
.TP
\fI/etc/bakewatch/bakewatch.toml\fR
The daemon config; its checks = [...] globs name the check files (\fI/etc/bakewatch/checks/*.toml\fR).
.TP
\fI/var/lib/bakewatch/state.db\fR
Deployments, verdicts and the notification outbox.
"#;

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
