//! Configuration: the daemon file plus the check files its `checks = [...]` globs name.
//!
//! Loading reads raw TOML into a spanned tree ([`reader`]), then turns it into validated types
//! that cannot hold bad values. Nothing stops at the first problem: every [`Diagnostic`] of
//! every file is collected, and the load fails only at the end with all of them.

pub mod diag;
pub mod reader;
pub mod secret;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::checks::CheckSpec;
use crate::checks::assert::Assertion;
use crate::cronexpr::CronExpr;
pub use diag::{ConfigError, Diagnostic, SourceFile};
use reader::{At, Cx, FromToml, TableReader, Value};
pub use secret::Secret;

/// The default daemon config path.
pub const DEFAULT_PATH: &str = "/etc/bakewatch/bakewatch.toml";

/// A fully validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The daemon file this was loaded from.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub defaults: Defaults,
    pub scheduler: SchedulerConfig,
    pub history: HistoryConfig,
    pub deploy: DeployConfig,
    pub notifications: NotificationsConfig,
    pub notifiers: Vec<NotifierConfig>,
    pub checks: Vec<Arc<CheckConfig>>,
    pub rules: Vec<RuleConfig>,
    /// Every file that was read, daemon file first.
    pub files: Vec<PathBuf>,
}

impl Config {
    pub fn check(&self, name: &str) -> Option<&Arc<CheckConfig>> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Every secret value that came from env / file / credential, for scrubbing text.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &self.server.token {
            out.push(t.expose().to_string());
        }
        for c in &self.checks {
            out.extend(c.spec.secret_values());
        }
        for n in &self.notifiers {
            out.extend(n.receiver.secret_values());
        }
        out
    }
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bearer token required by every mutating endpoint.
    pub token: Option<Secret>,
    /// Every API request ends within this.
    pub request_timeout: Duration,
    /// How people reach this daemon (its status page), for links in notifications; default
    /// `http://<listen>`.
    pub external_url: String,
}

/// `[storage]`
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
}

/// `[defaults]`: what a check gets when it does not say.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
}

/// `[scheduler]`
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// At most this many checks run at the same time.
    pub concurrency: usize,
    /// First runs are spread over at most this long, so checks with the same interval do
    /// not all fire together.
    pub jitter: Duration,
}

/// `[history]`
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Outcomes older than this are dropped from the in-memory history.
    pub retention: Duration,
    /// Per-check cap on kept outcomes, whatever the retention.
    pub max_samples: usize,
}

/// `[deploy]`: the post-deploy window and verdict policy.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub window: Duration,
    pub interval: Duration,
    pub warmup: Duration,
    pub min_duration: Duration,
    pub max_duration: Duration,
    pub baseline: Duration,
    pub critical_failures: u32,
}

/// `[notifications]`: how the outbox delivers.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// A notification not delivered within this is dropped and counted.
    pub max_age: Duration,
    /// The first retry waits about this long; each next one twice as long (with jitter) ...
    pub retry_initial: Duration,
    /// ... up to this.
    pub retry_max: Duration,
}

/// `[[notifier]]`: a receiver of alerts and deployment events.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub name: String,
    /// The receiver, validated and ready to send.
    pub receiver: Arc<crate::notify::Receiver>,
    /// Deployment events it also receives (`deployment_registered`, `verdict`).
    pub events: Vec<String>,
    /// Whether it is told when an alert resolves (default true).
    pub send_resolved: bool,
    /// Every send ends within this (default 10s).
    pub timeout: Duration,
}

/// When a check runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    Interval(Duration),
    Cron(CronExpr),
}

/// One `[[check]]`.
#[derive(Debug)]
pub struct CheckConfig {
    pub name: String,
    /// Label tying the check to deployments of a service ("" when none).
    pub service: String,
    pub schedule: Schedule,
    pub timeout: Duration,
    /// Consecutive failures of a critical check after a deployment fail its verdict.
    pub critical: bool,
    pub expect: Vec<Assertion>,
    /// The type-specific part, ready to run.
    pub spec: CheckSpec,
    /// Where it was defined, for messages.
    pub file: PathBuf,
    pub line: usize,
}

impl CheckConfig {
    pub fn type_name(&self) -> &'static str {
        self.spec.type_name()
    }

    /// Every assertion naming `{{ deployment.* }}` (the check's and its journey steps').
    pub fn deployment_assertions(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .expect
            .iter()
            .filter(|a| a.uses_deployment())
            .map(ToString::to_string)
            .collect();
        out.extend(self.spec.deployment_assertions());
        out
    }
}

/// Which checks a rule watches.
#[derive(Debug, Clone)]
pub enum RuleTarget {
    Checks(Vec<String>),
    Service(String),
}

/// A threshold: `above` or `below`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Above(f64),
    Below(f64),
}

/// The post-deploy override of a rule.
#[derive(Debug, Clone)]
pub struct PostDeploy {
    pub threshold: Option<Threshold>,
    pub for_: Option<Duration>,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub name: String,
    pub target: RuleTarget,
    pub signal: Signal,
    pub over: Duration,
    pub threshold: Threshold,
    pub for_: Duration,
    pub post_deploy: Option<PostDeploy>,
    pub min_samples: u32,
    /// Seconds for latency_p95_ratio, ratio points for failure_ratio_delta.
    pub min_delta: Option<f64>,
    pub severity: String,
    pub notify: Vec<String>,
    pub rollback: bool,
    pub repeat: Option<Duration>,
    pub send_resolved: bool,
    /// A watched check that stopped producing outcomes (stale for 3 intervals) is alerted to
    /// this rule's notifiers (default true).
    pub notify_no_data: bool,
}

/// What a rule measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    FailureRatio,
    ConsecutiveFailures,
    /// Latency quantile: 0.5, 0.9, 0.95, 0.99.
    Latency(f64),
    Value(String),
    LatencyP95Ratio,
    FailureRatioDelta,
}

impl Signal {
    fn parse(s: &str) -> Result<Signal, String> {
        Ok(match s {
            "failure_ratio" => Signal::FailureRatio,
            "consecutive_failures" => Signal::ConsecutiveFailures,
            "latency_p50" => Signal::Latency(0.5),
            "latency_p90" => Signal::Latency(0.9),
            "latency_p95" => Signal::Latency(0.95),
            "latency_p99" => Signal::Latency(0.99),
            "latency_p95_ratio" => Signal::LatencyP95Ratio,
            "failure_ratio_delta" => Signal::FailureRatioDelta,
            other => match other.strip_prefix("value:") {
                Some(obs) if !obs.is_empty() => Signal::Value(obs.to_string()),
                _ => {
                    return Err(format!(
                        "unknown signal {other:?} (one of failure_ratio, consecutive_failures, latency_p50, latency_p90, latency_p95, latency_p99, value:<observation>, latency_p95_ratio, failure_ratio_delta)"
                    ));
                }
            },
        })
    }

    fn is_latency(&self) -> bool {
        matches!(self, Signal::Latency(_))
    }
}

/// Loads and validates the daemon file at `path` and every check file it names.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let mut loader = Loader::default();
    let config = loader.load(path);
    match config {
        Some(c) if loader.diags.is_empty() => Ok(c),
        _ => {
            // Report in reading order: file by file, top to bottom.
            let mut order: Vec<PathBuf> = Vec::new();
            for d in &loader.diags {
                if !order.contains(&d.file) {
                    order.push(d.file.clone());
                }
            }
            let mut diagnostics = loader.diags;
            diagnostics.sort_by_key(|d| (order.iter().position(|f| f == &d.file), d.line, d.col));
            Err(ConfigError { diagnostics })
        }
    }
}

#[derive(Default)]
struct Loader {
    diags: Vec<Diagnostic>,
}

/// A check or rule name with where it was defined, for duplicate and reference errors.
struct Named {
    name: String,
    span: Range<usize>,
    src: Arc<SourceFile>,
}

impl Loader {
    fn read(&mut self, path: &Path) -> Option<Arc<SourceFile>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(Arc::new(SourceFile::new(path, text))),
            Err(e) => {
                self.diags.push(Diagnostic::file_level(
                    path,
                    format!("cannot read config file: {e}"),
                ));
                None
            }
        }
    }

    /// Parses TOML syntax; syntax errors are reported and the file is skipped.
    fn parse<'s>(&mut self, src: &'s SourceFile) -> Option<toml::Spanned<DeTable<'s>>> {
        let (table, errors) = DeTable::parse_recoverable(&src.text);
        if errors.is_empty() {
            return Some(table);
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            self.diags
                .push(src.diagnostic(span, format!("TOML syntax: {}", e.message().trim())));
        }
        None
    }

    fn load(&mut self, path: &Path) -> Option<Config> {
        let src = self.read(path)?;
        let root_table = self.parse(&src)?;
        let root: Value<'_> =
            toml::Spanned::new(root_table.span(), DeValue::Table(root_table.into_inner()));
        let mut cx = Cx {
            src: &src,
            diags: &mut self.diags,
        };
        let mut t = TableReader::new(&root, "the daemon config", &mut cx)?;
        let globs: Vec<At<String>> = t.or("checks", Vec::new(), &mut cx);
        let server = read_server(&mut t, &mut cx);
        let storage = read_storage(&mut t, &mut cx);
        let defaults = read_defaults(&mut t, &mut cx);
        let scheduler = read_scheduler(&mut t, &mut cx);
        let history = read_history(&mut t, &mut cx);
        let deploy = read_deploy(&mut t, &mut cx);
        let notifications = read_notifications(&mut t, &mut cx);
        let notifiers = read_notifiers(&mut t, &mut cx);
        let mut checks = Vec::new();
        let mut check_names = Vec::new();
        let mut raw_rules = Vec::new();
        read_check_file_body(
            &mut t,
            &mut cx,
            &src,
            &defaults,
            &mut checks,
            &mut check_names,
            &mut raw_rules,
        );
        t.finish(&mut cx);

        let base = path.parent().unwrap_or(Path::new("."));
        let mut files = vec![path.to_path_buf()];
        for glob in &globs {
            let pattern = base.join(&glob.value);
            let matches: Vec<PathBuf> = match glob::glob(&pattern.to_string_lossy()) {
                Ok(paths) => paths
                    .filter_map(Result::ok)
                    .filter(|p| p.is_file())
                    .collect(),
                Err(e) => {
                    cx.error(
                        glob.span.clone(),
                        format!("checks: bad glob {:?}: {}", glob.value, e.msg),
                    );
                    continue;
                }
            };
            if matches.is_empty() {
                cx.error(
                    glob.span.clone(),
                    format!("checks: {:?} matches no file", glob.value),
                );
            }
            for file in matches {
                let file = crate::util::normalize_path(&file);
                if files.contains(&file) {
                    continue;
                }
                files.push(file);
            }
        }

        for file in files.iter().skip(1) {
            let Some(fsrc) = self.read(file) else {
                continue;
            };
            let Some(ftable) = self.parse(&fsrc) else {
                continue;
            };
            let froot: Value<'_> =
                toml::Spanned::new(ftable.span(), DeValue::Table(ftable.into_inner()));
            let mut cx = Cx {
                src: &fsrc,
                diags: &mut self.diags,
            };
            let Some(mut t) = TableReader::new(&froot, "a check file", &mut cx) else {
                continue;
            };
            read_check_file_body(
                &mut t,
                &mut cx,
                &fsrc,
                &defaults,
                &mut checks,
                &mut check_names,
                &mut raw_rules,
            );
            t.finish(&mut cx);
        }

        // Cross-references, now that every file is read.
        self.check_unique("check", &check_names);
        let services: Vec<&str> = checks
            .iter()
            .map(|c: &Arc<CheckConfig>| c.service.as_str())
            .collect();
        let notifier_names: Vec<&str> = notifiers.iter().map(|n| n.name.as_str()).collect();
        let mut rules = Vec::new();
        let mut rule_names = Vec::new();
        for raw in raw_rules {
            let RawRule {
                rule,
                name_span,
                refs,
                src,
            } = raw;
            for (target, span) in &refs.checks {
                if !check_names.iter().any(|n| &n.name == target) {
                    let hint = suggestion(target, check_names.iter().map(|n| n.name.as_str()));
                    self.diags.push(src.diagnostic(
                        span.clone(),
                        format!("rule `{}` names unknown check `{target}`{hint}", rule.name),
                    ));
                }
            }
            if let Some((service, span)) = &refs.service
                && !services.contains(&service.as_str())
            {
                self.diags.push(src.diagnostic(
                    span.clone(),
                    format!(
                        "rule `{}` names service `{service}`, which no check has",
                        rule.name
                    ),
                ));
            }
            for (n, span) in &refs.notify {
                if let Some(kind) = notifiers
                    .iter()
                    .find(|x| &x.name == n)
                    .map(|x| x.receiver.type_name())
                    && kind == "grafana"
                {
                    self.diags.push(src.diagnostic(
                        span.clone(),
                        format!(
                            "rule `{}` notifies `{n}`, a grafana notifier: it receives deployment events only (events = [...])",
                            rule.name
                        ),
                    ));
                }
                if !notifier_names.contains(&n.as_str()) {
                    let hint = suggestion(n, notifier_names.iter().copied());
                    self.diags.push(src.diagnostic(
                        span.clone(),
                        format!("rule `{}` notifies unknown notifier `{n}`{hint}", rule.name),
                    ));
                }
            }
            rule_names.push(Named {
                name: rule.name.clone(),
                span: name_span,
                src,
            });
            rules.push(rule);
        }
        self.check_unique("rule", &rule_names);

        Some(Config {
            path: path.to_path_buf(),
            server,
            storage,
            defaults,
            scheduler,
            history,
            deploy,
            notifications,
            notifiers,
            checks,
            rules,
            files,
        })
    }

    fn check_unique(&mut self, what: &str, names: &[Named]) {
        let mut first: HashMap<&str, &Named> = HashMap::new();
        for n in names {
            match first.get(n.name.as_str()) {
                Some(prev) => {
                    let (line, col) = prev.src.position(prev.span.start);
                    self.diags.push(n.src.diagnostic(
                        n.span.clone(),
                        format!(
                            "duplicate {what} name `{}` (first defined at {}:{line}:{col})",
                            n.name,
                            prev.src.path.display()
                        ),
                    ));
                }
                None => {
                    first.insert(&n.name, n);
                }
            }
        }
    }
}

fn suggestion<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    match reader::closest(name, &known) {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

/// Names a rule refers to, checked once every file is read.
#[derive(Default)]
struct RuleRefs {
    checks: Vec<(String, Range<usize>)>,
    service: Option<(String, Range<usize>)>,
    notify: Vec<(String, Range<usize>)>,
}

struct RawRule {
    rule: RuleConfig,
    name_span: Range<usize>,
    refs: RuleRefs,
    src: Arc<SourceFile>,
}

fn read_sub<'t, 'i>(
    t: &mut TableReader<'t, 'i>,
    key: &'t str,
    cx: &mut Cx,
) -> Option<TableReader<'t, 'i>> {
    let v = t.get(key)?;
    TableReader::new(v, format!("[{key}]"), cx)
}

fn positive(d: Option<Duration>, key: &str, span: Range<usize>, cx: &mut Cx) -> Option<Duration> {
    match d {
        Some(d) if d.is_zero() => {
            cx.error(span, format!("{key}: must be greater than zero"));
            None
        }
        other => other,
    }
}

fn read_server(root: &mut TableReader, cx: &mut Cx) -> ServerConfig {
    let mut out = ServerConfig {
        listen: "127.0.0.1:9797".parse().expect("valid default"),
        token: None,
        request_timeout: Duration::from_secs(130),
        external_url: "http://127.0.0.1:9797".into(),
    };
    let Some(mut t) = read_sub(root, "server", cx) else {
        return out;
    };
    if let Some(listen) = t.opt::<String>("listen", cx) {
        match listen.parse() {
            Ok(a) => out.listen = a,
            Err(_) => cx.error(
                t.span_of("listen"),
                format!("listen: {listen:?} is not an address such as \"127.0.0.1:9797\""),
            ),
        }
    }
    // An empty token (say, an env variable set to nothing) would let every request through
    // while the daemon believes it is protected: refuse it.
    out.token = t.opt::<At<Secret>>("token", cx).and_then(|token| {
        if token.value.expose().trim().is_empty() {
            cx.error(
                token.span,
                "token: is empty, which would leave the mutating endpoints open; give it a value, or remove `token` to leave them open on purpose",
            );
            None
        } else {
            Some(token.value)
        }
    });
    if let Some(d) = t.opt("request_timeout", cx) {
        out.request_timeout = d;
    }
    out.external_url = format!("http://{}", out.listen);
    if let Some(u) = t.opt::<At<String>>("external_url", cx) {
        match reqwest::Url::parse(&u.value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                out.external_url = u.value.trim_end_matches('/').to_string();
            }
            _ => cx.error(
                u.span,
                format!("external_url: {:?} is not an http(s) URL", u.value),
            ),
        }
    }
    t.finish(cx);
    out
}

fn read_notifications(root: &mut TableReader, cx: &mut Cx) -> NotificationsConfig {
    let mut out = NotificationsConfig {
        max_age: Duration::from_secs(24 * 3600),
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(300),
    };
    let Some(mut t) = read_sub(root, "notifications", cx) else {
        return out;
    };
    for (key, slot) in [
        ("max_age", &mut out.max_age),
        ("retry_initial", &mut out.retry_initial),
        ("retry_max", &mut out.retry_max),
    ] {
        if let Some(d) = positive(t.opt(key, cx), key, t.span_of(key), cx) {
            *slot = d;
        }
    }
    if out.retry_max < out.retry_initial {
        cx.error(
            t.span_of("retry_max"),
            "retry_max: must not be shorter than retry_initial",
        );
    }
    t.finish(cx);
    out
}

fn read_storage(root: &mut TableReader, cx: &mut Cx) -> StorageConfig {
    let mut out = StorageConfig {
        path: PathBuf::from("/var/lib/bakewatch/state.db"),
    };
    let Some(mut t) = read_sub(root, "storage", cx) else {
        return out;
    };
    if let Some(p) = t.opt::<PathBuf>("path", cx) {
        out.path = if p.is_relative() {
            cx.src.path.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        };
    }
    t.finish(cx);
    out
}

fn read_defaults(root: &mut TableReader, cx: &mut Cx) -> Defaults {
    let mut out = Defaults {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    };
    let Some(mut t) = read_sub(root, "defaults", cx) else {
        return out;
    };
    if let Some(d) = positive(t.opt("interval", cx), "interval", t.span_of("interval"), cx) {
        out.interval = d;
    }
    if let Some(d) = positive(t.opt("timeout", cx), "timeout", t.span_of("timeout"), cx) {
        out.timeout = d;
    }
    t.finish(cx);
    out
}

fn read_scheduler(root: &mut TableReader, cx: &mut Cx) -> SchedulerConfig {
    let mut out = SchedulerConfig {
        concurrency: 64,
        jitter: Duration::from_secs(10),
    };
    let Some(mut t) = read_sub(root, "scheduler", cx) else {
        return out;
    };
    if let Some(n) = t.opt::<usize>("concurrency", cx) {
        if n == 0 {
            cx.error(t.span_of("concurrency"), "concurrency: must be at least 1");
        } else {
            out.concurrency = n;
        }
    }
    if let Some(d) = t.opt("jitter", cx) {
        out.jitter = d;
    }
    t.finish(cx);
    out
}

fn read_history(root: &mut TableReader, cx: &mut Cx) -> HistoryConfig {
    let mut out = HistoryConfig {
        retention: Duration::from_secs(2 * 3600),
        max_samples: 4096,
    };
    let Some(mut t) = read_sub(root, "history", cx) else {
        return out;
    };
    if let Some(d) = positive(
        t.opt("retention", cx),
        "retention",
        t.span_of("retention"),
        cx,
    ) {
        out.retention = d;
    }
    if let Some(n) = t.opt::<usize>("max_samples", cx) {
        if n < 16 {
            cx.error(t.span_of("max_samples"), "max_samples: must be at least 16");
        } else {
            out.max_samples = n;
        }
    }
    t.finish(cx);
    out
}

fn read_deploy(root: &mut TableReader, cx: &mut Cx) -> DeployConfig {
    let mut out = DeployConfig {
        window: Duration::from_secs(30 * 60),
        interval: Duration::from_secs(5),
        warmup: Duration::ZERO,
        min_duration: Duration::from_secs(5 * 60),
        max_duration: Duration::from_secs(20 * 60),
        baseline: Duration::from_secs(30 * 60),
        critical_failures: 2,
    };
    let Some(mut t) = read_sub(root, "deploy", cx) else {
        return out;
    };
    for (key, slot) in [
        ("window", &mut out.window),
        ("interval", &mut out.interval),
        ("min_duration", &mut out.min_duration),
        ("max_duration", &mut out.max_duration),
        ("baseline", &mut out.baseline),
    ] {
        if let Some(d) = positive(t.opt(key, cx), key, t.span_of(key), cx) {
            *slot = d;
        }
    }
    if let Some(d) = t.opt("warmup", cx) {
        out.warmup = d;
    }
    if let Some(n) = t.opt::<u32>("critical_failures", cx) {
        if n == 0 {
            cx.error(
                t.span_of("critical_failures"),
                "critical_failures: must be at least 1",
            );
        } else {
            out.critical_failures = n;
        }
    }
    if out.min_duration > out.max_duration {
        cx.error(
            t.span_of("min_duration"),
            "min_duration: must not exceed max_duration",
        );
    }
    t.finish(cx);
    out
}

fn read_notifiers(root: &mut TableReader, cx: &mut Cx) -> Vec<NotifierConfig> {
    use crate::notify::{EVENT_NAMES, NOTIFIER_TYPES, Receiver};
    let mut out = Vec::new();
    let Some(list) = root.get("notifier") else {
        return out;
    };
    let DeValue::Array(items) = list.get_ref() else {
        cx.error(
            list.span(),
            "notifier: write notifiers as [[notifier]] tables",
        );
        return out;
    };
    let mut names: Vec<(String, Range<usize>)> = Vec::new();
    for item in items.iter() {
        let Some(t) = TableReader::new(item, "notifier", cx) else {
            continue;
        };
        let mut t = t;
        let name: Option<At<String>> = t.req("name", cx);
        let label = name
            .as_ref()
            .map(|n| format!("notifier `{}`", n.value))
            .unwrap_or_else(|| "notifier".into());
        let mut t = t.relabel(label);
        let kind: Option<At<String>> = t.req("type", cx);
        let events: Vec<At<String>> = t.or("events", Vec::new(), cx);
        for e in &events {
            if !EVENT_NAMES.contains(&e.value.as_str()) {
                cx.error(
                    e.span.clone(),
                    format!(
                        "events: unknown event {:?} (one of {})",
                        e.value,
                        EVENT_NAMES.join(", ")
                    ),
                );
            }
        }
        if !events.is_empty() && kind.as_ref().is_some_and(|k| k.value == "alertmanager") {
            cx.error(
                t.span_of("events"),
                "events: Alertmanager receives alerts only; route deployment events to another notifier",
            );
        }
        let send_resolved = t.or("send_resolved", true, cx);
        let timeout = positive(t.opt("timeout", cx), "timeout", t.span_of("timeout"), cx)
            .unwrap_or(Duration::from_secs(10));
        let receiver = match &kind {
            Some(k) if NOTIFIER_TYPES.contains(&k.value.as_str()) => {
                let before = cx.diags.len();
                let r = Receiver::parse(&k.value, timeout, &mut t, cx);
                if r.is_none() && cx.diags.len() == before {
                    cx.error(k.span.clone(), "type: could not be read");
                }
                r
            }
            Some(k) => {
                t.accept_unread();
                let hint = reader::closest(&k.value, NOTIFIER_TYPES)
                    .map(|x| format!(" (did you mean {x:?}?)"))
                    .unwrap_or_default();
                cx.error(
                    k.span.clone(),
                    format!(
                        "type: unknown notifier type {:?}{hint} (one of {})",
                        k.value,
                        NOTIFIER_TYPES.join(", ")
                    ),
                );
                None
            }
            None => {
                t.accept_unread();
                None
            }
        };
        if let Some(n) = &name {
            if let Some((_, first)) = names.iter().find(|(x, _)| x == &n.value) {
                let (line, col) = cx.src.position(first.start);
                cx.error(
                    n.span.clone(),
                    format!(
                        "duplicate notifier name `{}` (first defined at {}:{line}:{col})",
                        n.value,
                        cx.src.path.display()
                    ),
                );
            }
            names.push((n.value.clone(), n.span.clone()));
        }
        t.finish(cx);
        if let (Some(name), Some(receiver)) = (name, receiver) {
            out.push(NotifierConfig {
                name: name.value,
                receiver: Arc::new(receiver),
                events: events.into_iter().map(|e| e.value).collect(),
                send_resolved,
                timeout,
            });
        }
    }
    out
}

/// Reads the `[[check]]` and `[[rule]]` arrays of one file (the daemon file may have them too).
fn read_check_file_body(
    t: &mut TableReader,
    cx: &mut Cx,
    src: &Arc<SourceFile>,
    defaults: &Defaults,
    checks: &mut Vec<Arc<CheckConfig>>,
    names: &mut Vec<Named>,
    rules: &mut Vec<RawRule>,
) {
    if let Some(list) = t.get("check") {
        match list.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    let (check, name) = read_check(item, cx, defaults);
                    // Invalid checks still claim their name, so duplicates and rule
                    // references are judged against everything the user wrote.
                    if let Some(name) = name {
                        names.push(Named {
                            name: name.value,
                            span: name.span,
                            src: src.clone(),
                        });
                    }
                    checks.extend(check.map(Arc::new));
                }
            }
            _ => cx.error(list.span(), "check: write checks as [[check]] tables"),
        }
    }
    if let Some(list) = t.get("rule") {
        match list.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let Some(rule) = read_rule(item, cx, src) {
                        rules.push(rule);
                    }
                }
            }
            _ => cx.error(list.span(), "rule: write rules as [[rule]] tables"),
        }
    }
}

/// Check names become metric labels and URL path segments: keep them plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads one check; also returns its name when it has one, even if the check is invalid.
fn read_check(
    item: &Value<'_>,
    cx: &mut Cx,
    defaults: &Defaults,
) -> (Option<CheckConfig>, Option<At<String>>) {
    let Some(t) = TableReader::new(item, "check", cx) else {
        return (None, None);
    };
    let mut t = t;
    let name: Option<At<String>> = t.req("name", cx);
    let mut ok = name.is_some();
    if let Some(n) = &name
        && !valid_name(&n.value)
    {
        cx.error(
            n.span.clone(),
            format!(
                "name: {:?} may only use letters, digits, '-', '_' and '.'",
                n.value
            ),
        );
        ok = false;
    }
    let label = name
        .as_ref()
        .map(|n| format!("check `{}`", n.value))
        .unwrap_or_else(|| "check".into());
    let mut t = t.relabel(label);
    let service: String = t.or("service", String::new(), cx);
    let interval: Option<Duration> =
        positive(t.opt("interval", cx), "interval", t.span_of("interval"), cx);
    let cron: Option<At<String>> = t.opt("cron", cx);
    let schedule = match (interval, cron) {
        (Some(_), Some(c)) => {
            cx.error(c.span, "cron: give either `interval` or `cron`, not both");
            ok = false;
            None
        }
        (None, Some(c)) => match CronExpr::parse(&c.value) {
            Ok(expr) => Some(Schedule::Cron(expr)),
            Err(m) => {
                cx.error(c.span, m);
                ok = false;
                None
            }
        },
        (Some(i), None) => Some(Schedule::Interval(i)),
        (None, None) => Some(Schedule::Interval(defaults.interval)),
    };
    let timeout = positive(t.opt("timeout", cx), "timeout", t.span_of("timeout"), cx)
        .unwrap_or(defaults.timeout);
    let critical = t.or("critical", false, cx);
    let kind: Option<At<String>> = t.req("type", cx);
    let spec = kind.as_ref().and_then(|k| {
        let before = cx.diags.len();
        let spec = CheckSpec::parse(&k.value, k.span.clone(), timeout, &mut t, cx);
        if spec.is_none() && cx.diags.len() == before {
            cx.error(k.span.clone(), "type: could not be read");
        }
        spec
    });
    let expect = match (t.get("expect"), &spec) {
        (Some(v), Some(spec)) => {
            let before = cx.diags.len();
            let list = Assertion::parse_list(v, spec.scope(), cx);
            ok &= cx.diags.len() == before;
            list
        }
        _ => Vec::new(),
    };
    if let Some(spec) = &spec
        && service.is_empty()
        && (spec.uses_deployment()
            || !spec.deployment_assertions().is_empty()
            || expect.iter().any(Assertion::uses_deployment))
    {
        cx.error(
            kind.as_ref().map_or_else(|| t.span.clone(), |k| k.span.clone()),
            "`{{ deployment.* }}` names the latest deployment of the check's service: give the check a `service`",
        );
        ok = false;
    }
    t.finish(cx);
    let (Some(n), Some(spec), Some(schedule), true) = (&name, spec, schedule, ok) else {
        return (None, name);
    };
    let (line, _) = cx.src.position(n.span.start);
    let check = CheckConfig {
        name: n.value.clone(),
        service,
        schedule,
        timeout,
        critical,
        expect,
        spec,
        file: cx.src.path.clone(),
        line,
    };
    (Some(check), name)
}

fn read_threshold(t: &mut TableReader, cx: &mut Cx, latency: bool) -> Option<Threshold> {
    let read = |t: &mut TableReader, key: &'static str, cx: &mut Cx| -> Option<f64> {
        let v = t.get(key)?;
        if latency && let DeValue::String(s) = v.get_ref() {
            return match reader::parse_duration(s) {
                Ok(d) => Some(d.as_secs_f64()),
                Err(m) => {
                    cx.error(v.span(), format!("{key}: {m}"));
                    None
                }
            };
        }
        match f64::from_toml(v, cx) {
            Ok(n) => Some(n),
            Err(m) => {
                cx.error(v.span(), format!("{key}: {m}"));
                None
            }
        }
    };
    let above = read(t, "above", cx);
    let below = read(t, "below", cx);
    match (above, below) {
        (Some(_), Some(_)) => {
            cx.error(
                t.span_of("below"),
                "give either `above` or `below`, not both",
            );
            None
        }
        (Some(a), None) => Some(Threshold::Above(a)),
        (None, Some(b)) => Some(Threshold::Below(b)),
        (None, None) => None,
    }
}

fn read_rule(item: &Value<'_>, cx: &mut Cx, src: &Arc<SourceFile>) -> Option<RawRule> {
    let mut t = TableReader::new(item, "rule", cx)?;
    let name: Option<At<String>> = t.req("name", cx);
    if let Some(n) = &name
        && !valid_name(&n.value)
    {
        cx.error(
            n.span.clone(),
            format!(
                "name: {:?} may only use letters, digits, '-', '_' and '.'",
                n.value
            ),
        );
    }
    let label = name
        .as_ref()
        .map(|n| format!("rule `{}`", n.value))
        .unwrap_or_else(|| "rule".into());
    let mut t = t.relabel(label);
    let mut refs = RuleRefs::default();
    let check: Option<At<String>> = t.opt("check", cx);
    let checks: Option<Vec<At<String>>> = t.opt("checks", cx);
    let service: Option<At<String>> = t.opt("service", cx);
    let target = match (check, checks, service) {
        (Some(c), None, None) => {
            refs.checks.push((c.value.clone(), c.span));
            Some(RuleTarget::Checks(vec![c.value]))
        }
        (None, Some(cs), None) if !cs.is_empty() => {
            let names = cs.iter().map(|c| c.value.clone()).collect();
            refs.checks
                .extend(cs.into_iter().map(|c| (c.value, c.span)));
            Some(RuleTarget::Checks(names))
        }
        (None, None, Some(s)) => {
            refs.service = Some((s.value.clone(), s.span));
            Some(RuleTarget::Service(s.value))
        }
        _ => {
            cx.error(
                t.span.clone(),
                "a rule names exactly one of `check`, `checks` (non-empty) or `service`",
            );
            None
        }
    };
    let signal = t
        .req::<At<String>>("signal", cx)
        .and_then(|s| match Signal::parse(&s.value) {
            Ok(sig) => Some(sig),
            Err(m) => {
                cx.error(s.span, format!("signal: {m}"));
                None
            }
        });
    let latency = signal.as_ref().is_some_and(Signal::is_latency);
    let threshold = read_threshold(&mut t, cx, latency);
    if threshold.is_none() && !t.has("above") && !t.has("below") {
        cx.error(
            t.span.clone(),
            format!("{} needs a threshold: `above` or `below`", t.what()),
        );
    }
    let over = positive(t.opt("over", cx), "over", t.span_of("over"), cx)
        .unwrap_or(Duration::from_secs(300));
    let for_ = t.or("for", Duration::ZERO, cx);
    let post_deploy = t.get("post_deploy").and_then(|v| {
        let mut p = TableReader::new(v, "post_deploy", cx)?;
        let threshold = read_threshold(&mut p, cx, latency);
        let for_ = p.opt("for", cx);
        p.finish(cx);
        Some(PostDeploy { threshold, for_ })
    });
    let min_samples = t.or("min_samples", 1u32, cx);
    // An absolute floor for baseline-relative signals: seconds (or a duration string such as
    // "50ms") for latency_p95_ratio, ratio points for failure_ratio_delta.
    let min_delta = t.get("min_delta").and_then(|v| match v.get_ref() {
        DeValue::String(s) => match reader::parse_duration(s) {
            Ok(d) => Some(d.as_secs_f64()),
            Err(m) => {
                cx.error(v.span(), format!("min_delta: {m}"));
                None
            }
        },
        _ => match f64::from_toml(v, cx) {
            Ok(n) if n >= 0.0 => Some(n),
            Ok(_) => {
                cx.error(v.span(), "min_delta: must not be negative");
                None
            }
            Err(m) => {
                cx.error(v.span(), format!("min_delta: {m}"));
                None
            }
        },
    });
    let severity: At<String> = t.opt("severity", cx).unwrap_or(At {
        value: "warning".into(),
        span: t.span.clone(),
    });
    if !["info", "warning", "critical"].contains(&severity.value.as_str()) {
        cx.error(
            severity.span.clone(),
            format!(
                "severity: {:?} is not one of info, warning, critical",
                severity.value
            ),
        );
    }
    let notify: Vec<At<String>> = t.or("notify", Vec::new(), cx);
    refs.notify = notify
        .iter()
        .map(|n| (n.value.clone(), n.span.clone()))
        .collect();
    let rollback = t.or("rollback", false, cx);
    let repeat = t.opt("repeat", cx);
    let send_resolved = t.or("send_resolved", true, cx);
    let notify_no_data = t.or("notify_no_data", true, cx);
    let repeat = positive(repeat, "repeat", t.span_of("repeat"), cx);
    t.finish(cx);
    let name = name?;
    Some(RawRule {
        rule: RuleConfig {
            name: name.value,
            target: target?,
            signal: signal?,
            over,
            threshold: threshold?,
            for_,
            post_deploy,
            min_samples,
            min_delta,
            severity: severity.value,
            notify: notify.into_iter().map(|n| n.value).collect(),
            rollback,
            repeat,
            send_resolved,
            notify_no_data,
        },
        name_span: name.span,
        refs,
        src: src.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bakewatch.toml");
        std::fs::write(&path, text).expect("write config");
        load(&path)
    }

    const CHECK: &str = "[[check]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\n";

    #[test]
    fn min_delta_takes_a_duration_or_a_number() {
        let rule = |delta: &str| {
            format!(
                "{CHECK}[[rule]]\nname = \"r\"\ncheck = \"a\"\nsignal = \"latency_p95_ratio\"\nabove = 2\nmin_delta = {delta}\n"
            )
        };
        let c = load_str(&rule("\"50ms\"")).expect("valid");
        assert_eq!(c.rules[0].min_delta, Some(0.05));
        let c = load_str(&rule("0.25")).expect("valid");
        assert_eq!(c.rules[0].min_delta, Some(0.25));
        let e = load_str(&rule("-1")).expect_err("negative");
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        assert!(
            e.diagnostics[0].message.contains("must not be negative"),
            "{e}"
        );
        assert_eq!((e.diagnostics[0].line, e.diagnostics[0].col), (10, 13));
    }
}
