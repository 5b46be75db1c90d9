//! The status page at `GET /` (DESIGN §6): one server-rendered HTML5 document with the
//! checks (failures first), the current deployments and their verdicts, the pending and
//! firing alerts, and the recent deployment history.
//!
//! No JavaScript and no external assets: the CSS is inline, sparklines are inline SVG, and
//! auto-refresh is a `<meta http-equiv="refresh">` whose interval `?refresh=N` sets (seconds,
//! clamped to [`MIN_REFRESH`]..=[`MAX_REFRESH`]; `0` turns it off). Every dynamic string goes
//! through [`escape`]. The page is laid out as tables on wide screens and stacks into cards
//! on narrow ones (no horizontal scroll on a phone).
//!
//! Rendering snapshots each check's history under its lock (a few fields and the last
//! [`SPARK_RUNS`] samples), releases it, and only then formats: no lock is held across an
//! await or while writing HTML.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::checks::Status;
use crate::deployments::Deployment;
use crate::rules::{Alert, AlertState, ThresholdSource};
use crate::util::rfc3339;
use crate::verdict::Verdict;

/// Auto-refresh interval without `?refresh=`, in seconds.
pub const DEFAULT_REFRESH: u64 = 10;
/// Shortest auto-refresh interval accepted (a smaller non-zero value is raised to this).
pub const MIN_REFRESH: u64 = 2;
/// Longest auto-refresh interval accepted (a larger value is lowered to this).
pub const MAX_REFRESH: u64 = 3600;
/// Runs drawn in each check's sparkline.
pub const SPARK_RUNS: usize = 30;
/// Deployments listed in the history section.
const HISTORY: usize = 20;
/// Deployments read to find the current ones (pending, or inside their window).
const SCAN: usize = 200;
/// Longest message shown in a table cell (characters); the full text is in its `title`.
const MESSAGE_CHARS: usize = 200;
/// Longest text put into a `title` attribute (characters).
const TITLE_CHARS: usize = 2000;

// ---------------------------------------------------------------------------------------
// Helpers (pure, unit-tested)
// ---------------------------------------------------------------------------------------

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references: safe in element
/// content and in quoted attribute values.
pub fn escape(s: &str) -> String {
    Esc(s).to_string()
}

/// Writes its string HTML-escaped (see [`escape`]) without an intermediate allocation.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&s[start..i])?;
            f.write_str(rep)?;
            start = i + c.len_utf8();
        }
        f.write_str(&s[start..])
    }
}

/// The refresh interval of a query string: `refresh=N` seconds, clamped; `0` is off
/// (`None`); absent or unreadable is [`DEFAULT_REFRESH`].
pub fn refresh_of(query: Option<&str>) -> Option<u64> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == "refresh")
        .map(|(_, v)| v)
        .next_back();
    let n = match value.map(|v| v.trim().parse::<u64>()) {
        None | Some(Err(_)) => DEFAULT_REFRESH,
        Some(Ok(n)) => n,
    };
    (n != 0).then(|| n.clamp(MIN_REFRESH, MAX_REFRESH))
}

/// How long ago `t` was, seen at `now`: "just now", "3s ago", "5m ago", "2h ago", "4d ago";
/// a time in the future (clock skew) reads "in 3s".
pub fn relative(now: SystemTime, t: SystemTime) -> String {
    let (d, future) = match now.duration_since(t) {
        Ok(d) => (d, false),
        Err(e) => (e.duration(), true),
    };
    if d.as_secs() == 0 {
        return "just now".to_string();
    }
    let amount = span(d);
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A span in its largest whole unit: "3s", "5m", "2h", "4d".
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A wall-clock time for the header: "2026-03-01 14:05:09 UTC".
fn clock(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A run duration for people: "850µs", "12.3ms", "1.25s", "2m 5s".
pub fn human_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}µs")
    } else if us < 100_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if us < 1_000_000 {
        format!("{}ms", us / 1000)
    } else if us < 60_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else {
        let s = d.as_secs();
        format!("{}m {}s", s / 60, s % 60)
    }
}

/// A number as short as it can be: integers without decimals, others with at most 4.
fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The CSS class (and colour) of a status.
fn status_class(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Degraded => "degraded",
        Status::Fail => "fail",
        Status::Error => "error",
    }
}

/// An inline SVG bar chart of run durations, oldest on the left, newest on the right, each
/// bar coloured by the run's status. `runs` is newest first (as [`crate::history::History::
/// recent`] yields them); at most [`SPARK_RUNS`] are drawn, right-aligned so that the newest
/// runs of every row line up. Bars of one status share one `<path>`, so the markup stays
/// small with hundreds of checks.
pub fn sparkline(runs: &[(Duration, Status)]) -> String {
    const STEP: usize = 3;
    const HEIGHT: f64 = 20.0;
    let runs = &runs[..runs.len().min(SPARK_RUNS)];
    let width = SPARK_RUNS * STEP;
    if runs.is_empty() {
        return String::new();
    }
    let max = runs
        .iter()
        .map(|(d, _)| d.as_micros())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut paths: [(Status, String); 4] = Status::ALL.map(|s| (s, String::new()));
    let first = SPARK_RUNS - runs.len();
    for (i, (d, status)) in runs.iter().rev().enumerate() {
        let h = (d.as_micros() as f64 / max * (HEIGHT - 1.0))
            .round()
            .max(1.0);
        let x = (first + i) * STEP + 1;
        let path = &mut paths.iter_mut().find(|(s, _)| s == status).expect("all").1;
        let _ = write!(path, "M{x} {HEIGHT}v-{h}");
    }
    let failed = runs.iter().filter(|(_, s)| !s.is_success()).count();
    let slowest = human_duration(Duration::from_micros(max as u64));
    let mut svg = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {width} {HEIGHT}\" width=\"{width}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"last {} runs, {failed} not passing, slowest {slowest}\"><title>last {} runs, {failed} not passing, slowest {slowest}</title>",
        runs.len(),
        runs.len()
    );
    for (status, d) in &paths {
        if !d.is_empty() {
            let _ = write!(svg, "<path class=\"{}\" d=\"{d}\"/>", status_class(*status));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The first line of `s`, cut to `max` characters with an ellipsis.
fn one_line(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let cut = truncate(line, max);
    if cut.len() < line.len() || s.trim().lines().nth(1).is_some() {
        format!("{}…", cut.trim_end())
    } else {
        cut.to_string()
    }
}

/// At most `max` characters of `s`.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_time(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
}

// ---------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------

/// What the page shows of one check, copied out of its history under the lock.
struct CheckRow {
    name: String,
    service: String,
    kind: &'static str,
    critical: bool,
    status: Option<Status>,
    message: String,
    last_run: Option<SystemTime>,
    duration: Option<Duration>,
    consecutive_failures: u32,
    /// Newest first.
    runs: Vec<(Duration, Status)>,
}

impl CheckRow {
    /// Failures first: fail, error, degraded, not run yet, pass.
    fn rank(&self) -> u8 {
        match self.status {
            Some(Status::Fail) => 0,
            Some(Status::Error) => 1,
            Some(Status::Degraded) => 2,
            None => 3,
            Some(Status::Pass) => 4,
        }
    }
}

fn snapshot_checks(rt: &crate::runtime::Runtime) -> Vec<CheckRow> {
    let mut rows: Vec<CheckRow> = rt
        .checks
        .iter()
        .map(|c| {
            let cfg = &c.config;
            let h = c.history.lock().expect("not poisoned");
            let last = h.last();
            let row = CheckRow {
                name: cfg.name.clone(),
                service: cfg.service.clone(),
                kind: cfg.type_name(),
                critical: cfg.critical,
                status: last.map(|o| o.status),
                message: last
                    .map(|o| truncate(&o.message, TITLE_CHARS).to_string())
                    .unwrap_or_default(),
                last_run: last.map(|o| o.started_at),
                duration: last.map(|o| o.duration),
                consecutive_failures: h.consecutive_failures(),
                runs: h
                    .recent(SPARK_RUNS)
                    .map(|s| (s.duration(), s.status))
                    .collect(),
            };
            drop(h);
            row
        })
        .collect();
    rows.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.name.cmp(&b.name)));
    rows
}

/// The deployments part of the page, or why it is missing.
enum DeploymentsView {
    /// The daemon runs without storage.
    Unavailable,
    Failed(String),
    Loaded {
        current: Vec<Deployment>,
        history: Vec<Deployment>,
        alerts: Vec<Alert>,
    },
}

async fn snapshot_deployments(
    state: &AppState,
    now: SystemTime,
    window: Duration,
) -> DeploymentsView {
    let Some(d) = state.deployments() else {
        return DeploymentsView::Unavailable;
    };
    let alerts = d.alerts();
    let list = match d.list(None, SCAN).await {
        Ok(l) => l,
        Err(e) => return DeploymentsView::Failed(e.to_string()),
    };
    let current = list
        .iter()
        .filter(|dep| {
            let v = dep.verdict.verdict;
            v == Verdict::Pending
                || (!matches!(v, Verdict::Cancelled | Verdict::Superseded)
                    && dep.verdict.started_at + window > now)
        })
        .cloned()
        .collect();
    let history = list.into_iter().take(HISTORY).collect();
    DeploymentsView::Loaded {
        current,
        history,
        alerts,
    }
}

// ---------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------

/// `GET /` (and `HEAD /`): the status page.
pub async fn page(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let refresh = refresh_of(query.as_deref());
    let rt = state.runtime();
    let window = rt.config.deploy.window;
    let deployments = snapshot_deployments(&state, SystemTime::now(), window).await;
    let checks = snapshot_checks(&rt);
    let now = SystemTime::now();
    let html = render(&Page {
        now,
        started_at: rt.started_at,
        refresh,
        checks: &checks,
        deployments: &deployments,
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

struct Page<'a> {
    now: SystemTime,
    started_at: SystemTime,
    refresh: Option<u64>,
    checks: &'a [CheckRow],
    deployments: &'a DeploymentsView,
}

const CSS: &str = r#"
:root{--fg:#1b1f24;--muted:#5b6570;--bg:#f6f7f9;--card:#fff;--line:#dde1e6;
--pass:#1a7f37;--pass-bg:#dafbe1;--degraded:#8a5a00;--degraded-bg:#fff4d0;
--fail:#b42318;--fail-bg:#ffe4e0;--error:#6639ba;--error-bg:#efe6ff;--none:#57606a;--none-bg:#eaeef2}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1200px;margin:0 auto;padding:0 12px}
header{padding-top:12px}
h1{font-size:1.3rem;margin:0 0 4px}
h1 small{font-weight:normal;color:var(--muted);font-size:.85rem}
h2{font-size:1.05rem;margin:22px 0 8px}
a{color:inherit}
.meta{color:var(--muted);font-size:.85rem;margin:0 0 8px}
.overall{border-radius:8px;padding:10px 12px;font-weight:600;font-size:1.05rem;border-left:6px solid}
.overall.pass{background:var(--pass-bg);color:var(--pass)}
.overall.degraded{background:var(--degraded-bg);color:var(--degraded)}
.overall.fail{background:var(--fail-bg);color:var(--fail)}
.overall.error{background:var(--error-bg);color:var(--error)}
.overall.none{background:var(--none-bg);color:var(--none)}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 0;padding:0;list-style:none}
.counts li{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:2px 8px;font-size:.85rem}
.counts b{font-variant-numeric:tabular-nums}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8rem;color:var(--muted);font-weight:600;background:#fafbfc}
tr:last-child td{border-bottom:0}
td{overflow-wrap:anywhere}
.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.msg{color:#333;max-width:42ch}
.sub{color:var(--muted);font-size:.8rem;font-weight:normal}
code{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,monospace}
.badge{display:inline-block;border-radius:999px;padding:0 8px;font-size:.8rem;font-weight:600;white-space:nowrap;border:1px solid}
.badge::before{content:"";display:inline-block;width:7px;height:7px;border-radius:50%;background:currentColor;margin-right:5px;vertical-align:1px}
.badge.pass{color:var(--pass);background:var(--pass-bg)}
.badge.degraded{color:var(--degraded);background:var(--degraded-bg)}
.badge.fail{color:var(--fail);background:var(--fail-bg)}
.badge.error{color:var(--error);background:var(--error-bg)}
.badge.none{color:var(--none);background:var(--none-bg)}
tr.fail td:first-child{box-shadow:inset 4px 0 var(--fail)}
tr.error td:first-child{box-shadow:inset 4px 0 var(--error)}
tr.degraded td:first-child{box-shadow:inset 4px 0 var(--degraded)}
.spark{display:block;margin-top:2px}
.spark path{stroke-width:2;fill:none}
.spark .pass{stroke:var(--pass)}.spark .degraded{stroke:#d4a72c}.spark .fail{stroke:var(--fail)}.spark .error{stroke:var(--error)}
ul.reasons{margin:0;padding-left:18px}
.empty{background:var(--card);border:1px dashed var(--line);border-radius:8px;padding:10px 12px;color:var(--muted);margin:0}
footer{color:var(--muted);font-size:.8rem;padding:18px 12px 24px}
@media (max-width:720px){
 table,thead,tbody,tr,th,td{display:block;width:100%}
 table{border:0;background:none}
 thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
 tr{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:0 0 8px;padding:6px 10px}
 td{border:0;padding:2px 0;display:flex;gap:8px}
 td::before{content:attr(data-label);flex:0 0 6.5em;color:var(--muted);font-size:.8rem;padding-top:1px}
 td>*{min-width:0}
 td.head{font-weight:600;font-size:1rem}
 td.head::before{content:none}
 .msg{max-width:none}
 tr.fail,tr.error,tr.degraded{border-left-width:5px}
 tr.fail{border-left-color:var(--fail)}tr.error{border-left-color:var(--error)}tr.degraded{border-left-color:var(--degraded)}
 tr.fail td:first-child,tr.error td:first-child,tr.degraded td:first-child{box-shadow:none}
}
"#;

fn render(p: &Page<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024 + p.checks.len() * 1200);
    // Writing into a String cannot fail.
    let _ = write_page(&mut out, p);
    out
}

fn write_page(out: &mut String, p: &Page<'_>) -> fmt::Result {
    let counts = Counts::of(p.checks);
    let (overall_class, overall_text) = overall(&counts, p.deployments);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    if let Some(n) = p.refresh {
        writeln!(out, "<meta http-equiv=\"refresh\" content=\"{n}\">")?;
    }
    out.push_str("<meta name=\"robots\" content=\"noindex\">\n");
    writeln!(
        out,
        "<title>{} bakewatch</title>",
        Esc(match overall_class {
            "pass" => "✓",
            "none" => "·",
            _ => "✗",
        })
    )?;
    writeln!(out, "<style>{CSS}</style>\n</head>\n<body>")?;

    // Header.
    writeln!(out, "<header>")?;
    writeln!(
        out,
        "<h1>bakewatch <small>{}</small></h1>",
        Esc(env!("CARGO_PKG_VERSION"))
    )?;
    let refresh_text = match p.refresh {
        Some(n) => format!("refreshes every {n}s · <a href=\"?refresh=0\">pause</a>"),
        None => format!("auto-refresh off · <a href=\"?refresh={DEFAULT_REFRESH}\">resume</a>"),
    };
    writeln!(
        out,
        "<p class=\"meta\"><time datetime=\"{now}\">{shown}</time> · up {up} · {refresh_text}</p>",
        now = Esc(&rfc3339(p.now)),
        shown = Esc(&clock(p.now)),
        up = Esc(&span(
            p.now.duration_since(p.started_at).unwrap_or_default()
        )),
    )?;
    writeln!(
        out,
        "<div class=\"overall {overall_class}\" id=\"overall\" role=\"status\">{}</div>",
        Esc(&overall_text)
    )?;
    writeln!(out, "<ul class=\"counts\" id=\"counts\">")?;
    for (label, n) in [
        ("checks", counts.total),
        ("passing", counts.pass),
        ("degraded", counts.degraded),
        ("failing", counts.fail),
        ("erroring", counts.error),
        ("not run yet", counts.none),
    ] {
        if n > 0 || matches!(label, "checks" | "passing" | "failing" | "erroring") {
            writeln!(out, "<li><b>{n}</b> {label}</li>")?;
        }
    }
    if let DeploymentsView::Loaded {
        alerts, current, ..
    } = p.deployments
    {
        let firing = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count();
        writeln!(
            out,
            "<li><b>{firing}</b> {} firing</li>",
            if firing == 1 { "alert" } else { "alerts" }
        )?;
        writeln!(
            out,
            "<li><b>{}</b> {} in progress</li>",
            current.len(),
            if current.len() == 1 {
                "deployment"
            } else {
                "deployments"
            }
        )?;
    }
    writeln!(out, "</ul>\n</header>\n<main>")?;

    write_checks(out, p)?;
    write_current(out, p)?;
    write_alerts(out, p)?;
    write_history(out, p)?;

    writeln!(out, "</main>")?;
    writeln!(
        out,
        "<footer>Times are UTC; hover a relative time for the exact one. JSON: <a href=\"/api/v1/checks\">checks</a> · <a href=\"/api/v1/deployments\">deployments</a> · <a href=\"/api/v1/alerts\">alerts</a> · <a href=\"/metrics\">metrics</a></footer>"
    )?;
    writeln!(out, "</body>\n</html>")
}

#[derive(Default)]
struct Counts {
    total: usize,
    pass: usize,
    degraded: usize,
    fail: usize,
    error: usize,
    none: usize,
}

impl Counts {
    fn of(rows: &[CheckRow]) -> Counts {
        let mut c = Counts {
            total: rows.len(),
            ..Counts::default()
        };
        for r in rows {
            match r.status {
                Some(Status::Pass) => c.pass += 1,
                Some(Status::Degraded) => c.degraded += 1,
                Some(Status::Fail) => c.fail += 1,
                Some(Status::Error) => c.error += 1,
                None => c.none += 1,
            }
        }
        c
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The overall state: its class and sentence.
fn overall(c: &Counts, d: &DeploymentsView) -> (&'static str, String) {
    let firing = match d {
        DeploymentsView::Loaded { alerts, .. } => alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count(),
        _ => 0,
    };
    let mut problems = Vec::new();
    if c.fail > 0 {
        problems.push(format!("{} failing", plural(c.fail, "check", "checks")));
    }
    if firing > 0 {
        problems.push(format!("{} firing", plural(firing, "alert", "alerts")));
    }
    if c.error > 0 {
        problems.push(format!("{} erroring", plural(c.error, "check", "checks")));
    }
    if c.degraded > 0 {
        problems.push(format!(
            "{} degraded",
            plural(c.degraded, "check", "checks")
        ));
    }
    let class = if c.fail > 0 || firing > 0 {
        "fail"
    } else if c.error > 0 {
        "error"
    } else if c.degraded > 0 {
        "degraded"
    } else if c.total == 0 || c.none == c.total {
        "none"
    } else {
        "pass"
    };
    let text = match class {
        "fail" => format!("Failing: {}", problems.join(", ")),
        "error" => format!("Errors: {}", problems.join(", ")),
        "degraded" => format!("Degraded: {}", problems.join(", ")),
        "none" if c.total == 0 => "No checks configured".to_string(),
        "none" => "Waiting for the first runs".to_string(),
        _ if c.none > 0 => format!("All run checks passing ({} not run yet)", c.none),
        _ => "All checks passing".to_string(),
    };
    (class, text)
}

/// A `<time>` showing "3s ago" with the exact time in its `title`.
fn time_ago(now: SystemTime, t: SystemTime) -> String {
    let abs = rfc3339(t);
    format!(
        "<time datetime=\"{a}\" title=\"{a}\">{}</time>",
        Esc(&relative(now, t)),
        a = Esc(&abs)
    )
}

/// A status badge: colour and text.
fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", Esc(class), Esc(text))
}

fn verdict_badge(v: Verdict) -> String {
    let class = match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Pending => "degraded",
        Verdict::Inconclusive => "error",
        Verdict::Cancelled | Verdict::Superseded => "none",
    };
    badge(class, v.as_str())
}

fn write_checks(out: &mut String, p: &Page<'_>) -> fmt::Result {
    writeln!(out, "<section id=\"checks\">\n<h2>Checks</h2>")?;
    if p.checks.is_empty() {
        return writeln!(
            out,
            "<p class=\"empty\">No checks are configured.</p>\n</section>"
        );
    }
    writeln!(
        out,
        "<table>\n<thead><tr><th>Check</th><th>Status</th><th>Message</th><th>Last run</th><th>Latency</th></tr></thead>\n<tbody>"
    )?;
    for c in p.checks {
        let class = c.status.map(status_class).unwrap_or("none");
        writeln!(
            out,
            "<tr class=\"check {class}\" id=\"check-{name}\" data-check=\"{name}\">",
            name = Esc(&c.name)
        )?;
        write!(
            out,
            "<td class=\"head\" data-label=\"Check\"><div><a href=\"/api/v1/checks/{name}\">{name}</a>",
            name = Esc(&c.name)
        )?;
        write!(out, "<div class=\"sub\">{}", Esc(c.kind))?;
        if !c.service.is_empty() {
            write!(out, " · {}", Esc(&c.service))?;
        }
        if c.critical {
            out.push_str(" · critical");
        }
        writeln!(out, "</div></div></td>")?;
        let status_text = c.status.map(Status::as_str).unwrap_or("not run yet");
        write!(
            out,
            "<td data-label=\"Status\"><div>{}",
            badge(class, status_text)
        )?;
        if c.consecutive_failures > 1 {
            write!(
                out,
                "<div class=\"sub\">{} in a row</div>",
                c.consecutive_failures
            )?;
        }
        writeln!(out, "</div></td>")?;
        if c.message.is_empty() {
            writeln!(
                out,
                "<td class=\"msg\" data-label=\"Message\"><span class=\"sub\">–</span></td>"
            )?;
        } else {
            writeln!(
                out,
                "<td class=\"msg\" data-label=\"Message\"><span title=\"{}\">{}</span></td>",
                Esc(truncate(&c.message, TITLE_CHARS)),
                Esc(&one_line(&c.message, MESSAGE_CHARS))
            )?;
        }
        match c.last_run {
            Some(t) => writeln!(
                out,
                "<td class=\"num\" data-label=\"Last run\">{}</td>",
                time_ago(p.now, t)
            )?,
            None => writeln!(out, "<td class=\"num\" data-label=\"Last run\">never</td>")?,
        }
        write!(out, "<td data-label=\"Latency\"><div><span class=\"num\">")?;
        match c.duration {
            Some(d) => write!(out, "{}", Esc(&human_duration(d)))?,
            None => out.push('–'),
        }
        writeln!(out, "</span>{}</div></td>\n</tr>", sparkline(&c.runs))?;
    }
    writeln!(out, "</tbody>\n</table>\n</section>")
}

fn no_deployments(
    out: &mut String,
    p: &Page<'_>,
    id: &str,
    title: &str,
) -> Result<bool, fmt::Error> {
    match p.deployments {
        DeploymentsView::Loaded { .. } => Ok(false),
        DeploymentsView::Unavailable => {
            writeln!(
                out,
                "<section id=\"{id}\">\n<h2>{title}</h2>\n<p class=\"empty\">Deployments are not available: the daemon runs without storage.</p>\n</section>"
            )?;
            Ok(true)
        }
        DeploymentsView::Failed(e) => {
            writeln!(
                out,
                "<section id=\"{id}\">\n<h2>{title}</h2>\n<p class=\"empty\">Deployments could not be read: {}</p>\n</section>",
                Esc(e)
            )?;
            Ok(true)
        }
    }
}

fn write_current(out: &mut String, p: &Page<'_>) -> fmt::Result {
    if no_deployments(out, p, "deployments", "Current deployments")? {
        return Ok(());
    }
    let DeploymentsView::Loaded { current, .. } = p.deployments else {
        return Ok(());
    };
    writeln!(
        out,
        "<section id=\"deployments\">\n<h2>Current deployments</h2>"
    )?;
    if current.is_empty() {
        return writeln!(
            out,
            "<p class=\"empty\">No deployment is being verified or inside its window.</p>\n</section>"
        );
    }
    writeln!(
        out,
        "<table>\n<thead><tr><th>Deployment</th><th>Environment</th><th>Verdict</th><th>Decision</th><th>Started</th><th>Reasons</th></tr></thead>\n<tbody>"
    )?;
    for d in current {
        let v = &d.verdict;
        writeln!(
            out,
            "<tr class=\"deployment\" data-deployment=\"{id}\">",
            id = Esc(&d.id)
        )?;
        writeln!(
            out,
            "<td class=\"head\" data-label=\"Deployment\"><div>{service} <span class=\"num\">{version}</span><div class=\"sub\"><a href=\"/api/v1/deployments/{id}\">{id}</a></div></div></td>",
            service = Esc(&d.service),
            version = Esc(&d.version),
            id = Esc(&d.id)
        )?;
        writeln!(
            out,
            "<td data-label=\"Environment\">{}</td>",
            if d.environment.is_empty() {
                "–".to_string()
            } else {
                escape(&d.environment)
            }
        )?;
        writeln!(
            out,
            "<td data-label=\"Verdict\"><div>{}<div class=\"sub\">{}</div></div></td>",
            verdict_badge(v.verdict),
            Esc(&phase_text(v))
        )?;
        writeln!(
            out,
            "<td data-label=\"Decision\">{}</td>",
            Esc(v.decision.as_str())
        )?;
        writeln!(
            out,
            "<td class=\"num\" data-label=\"Started\">{}</td>",
            time_ago(p.now, v.started_at)
        )?;
        if v.reasons.is_empty() {
            writeln!(
                out,
                "<td data-label=\"Reasons\"><span class=\"sub\">–</span></td>"
            )?;
        } else {
            write!(out, "<td data-label=\"Reasons\"><ul class=\"reasons\">")?;
            for r in &v.reasons {
                let code = serde_json::to_value(r.code)
                    .ok()
                    .and_then(|c| c.as_str().map(str::to_string))
                    .unwrap_or_default();
                write!(
                    out,
                    "<li>{} <code class=\"sub\">{}</code></li>",
                    Esc(&one_line(&r.message, MESSAGE_CHARS)),
                    Esc(&code)
                )?;
            }
            writeln!(out, "</ul></td>")?;
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody>\n</table>\n</section>")
}

fn phase_text(v: &crate::verdict::VerdictRecord) -> String {
    serde_json::to_value(v.phase)
        .ok()
        .and_then(|p| p.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

fn write_alerts(out: &mut String, p: &Page<'_>) -> fmt::Result {
    if no_deployments(out, p, "alerts", "Alerts")? {
        return Ok(());
    }
    let DeploymentsView::Loaded { alerts, .. } = p.deployments else {
        return Ok(());
    };
    let firing = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    let pending = alerts.len() - firing;
    write!(out, "<section id=\"alerts\">\n<h2>Firing alerts")?;
    if pending > 0 {
        write!(out, " <small class=\"sub\">and {pending} pending</small>")?;
    }
    writeln!(out, "</h2>")?;
    if alerts.is_empty() {
        return writeln!(
            out,
            "<p class=\"empty\">No alert is firing.</p>\n</section>"
        );
    }
    writeln!(
        out,
        "<table>\n<thead><tr><th>Rule</th><th>Check</th><th>Severity</th><th>State</th><th>Value</th><th>Since</th></tr></thead>\n<tbody>"
    )?;
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| a.state != AlertState::Firing);
    for a in sorted {
        let firing = a.state == AlertState::Firing;
        writeln!(
            out,
            "<tr class=\"alert {}\" data-rule=\"{}\">",
            if firing { "fail" } else { "degraded" },
            Esc(&a.rule)
        )?;
        write!(
            out,
            "<td class=\"head\" data-label=\"Rule\"><div>{}",
            Esc(&a.rule)
        )?;
        if !a.message.is_empty() {
            write!(
                out,
                "<div class=\"sub\" title=\"{}\">{}</div>",
                Esc(truncate(&a.message, TITLE_CHARS)),
                Esc(&one_line(&a.message, MESSAGE_CHARS))
            )?;
        }
        writeln!(out, "</div></td>")?;
        writeln!(out, "<td data-label=\"Check\">{}</td>", Esc(&a.check))?;
        writeln!(out, "<td data-label=\"Severity\">{}</td>", Esc(&a.severity))?;
        let mut state = badge(if firing { "fail" } else { "degraded" }, a.state.as_str());
        if a.no_data.is_some() {
            state.push_str(" <span class=\"sub\">no data</span>");
        }
        if a.rollback {
            state.push_str(" <span class=\"sub\">rollback</span>");
        }
        writeln!(out, "<td data-label=\"State\">{state}</td>")?;
        let value = a.value.map(number).unwrap_or_else(|| "–".to_string());
        let source = match a.threshold_source {
            ThresholdSource::Steady => "steady",
            ThresholdSource::PostDeploy => "post-deploy",
        };
        writeln!(
            out,
            "<td data-label=\"Value\"><div><span class=\"num\">{} = {}</span><div class=\"sub\">{} {} · {}</div></div></td>",
            Esc(&a.signal),
            Esc(&value),
            Esc(a.comparison.as_str()),
            Esc(&number(a.threshold)),
            source
        )?;
        let since = match parse_time(&a.since) {
            Some(t) => time_ago(p.now, t),
            None => escape(&a.since),
        };
        writeln!(
            out,
            "<td class=\"num\" data-label=\"Since\">{since}</td>\n</tr>"
        )?;
    }
    writeln!(out, "</tbody>\n</table>\n</section>")
}

fn write_history(out: &mut String, p: &Page<'_>) -> fmt::Result {
    if no_deployments(out, p, "history", "Deployment history")? {
        return Ok(());
    }
    let DeploymentsView::Loaded { history, .. } = p.deployments else {
        return Ok(());
    };
    writeln!(out, "<section id=\"history\">\n<h2>Deployment history</h2>")?;
    if history.is_empty() {
        return writeln!(
            out,
            "<p class=\"empty\">No deployments registered yet.</p>\n</section>"
        );
    }
    writeln!(
        out,
        "<table>\n<thead><tr><th>Id</th><th>Service</th><th>Version</th><th>Environment</th><th>Started</th><th>Verdict</th></tr></thead>\n<tbody>"
    )?;
    for d in history {
        writeln!(
            out,
            "<tr class=\"past\" data-deployment=\"{id}\">\n<td class=\"head\" data-label=\"Id\"><a href=\"/api/v1/deployments/{id}\">{id}</a></td>",
            id = Esc(&d.id)
        )?;
        writeln!(out, "<td data-label=\"Service\">{}</td>", Esc(&d.service))?;
        writeln!(
            out,
            "<td class=\"num\" data-label=\"Version\">{}</td>",
            Esc(&d.version)
        )?;
        writeln!(
            out,
            "<td data-label=\"Environment\">{}</td>",
            if d.environment.is_empty() {
                "–".to_string()
            } else {
                escape(&d.environment)
            }
        )?;
        writeln!(
            out,
            "<td class=\"num\" data-label=\"Started\">{}</td>",
            time_ago(p.now, d.verdict.started_at)
        )?;
        writeln!(
            out,
            "<td data-label=\"Verdict\"><div>{} <span class=\"sub\">{}</span></div></td>\n</tr>",
            verdict_badge(d.verdict.verdict),
            Esc(d.verdict.decision.as_str())
        )?;
    }
    writeln!(out, "</tbody>\n</table>\n</section>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_markup_quotes_and_ampersands() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("a & b"), "a &amp; b");
        assert_eq!(escape("it's"), "it&#39;s");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape("\" onmouseover=\"x"), "&quot; onmouseover=&quot;x");
        assert_eq!(escape("plain ünïcode → ok"), "plain ünïcode → ok");
        assert_eq!(escape(""), "");
        assert_eq!(escape("<<>>"), "&lt;&lt;&gt;&gt;");
    }

    #[test]
    fn relative_time_reads_like_a_person() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |s: u64| relative(now, now - Duration::from_secs(s));
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now, now - Duration::from_millis(400)), "just now");
        assert_eq!(ago(3), "3s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(60), "1m ago");
        assert_eq!(ago(3599), "59m ago");
        assert_eq!(ago(3600), "1h ago");
        assert_eq!(ago(86_399), "23h ago");
        assert_eq!(ago(86_400 * 3), "3d ago");
        assert_eq!(relative(now, now + Duration::from_secs(5)), "in 5s");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(human_duration(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m 5s");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1.0 / 3.0), "0.3333");
    }

    #[test]
    fn refresh_is_clamped_and_zero_turns_it_off() {
        assert_eq!(refresh_of(None), Some(DEFAULT_REFRESH));
        assert_eq!(refresh_of(Some("")), Some(DEFAULT_REFRESH));
        assert_eq!(refresh_of(Some("refresh=30")), Some(30));
        assert_eq!(refresh_of(Some("refresh=0")), None);
        assert_eq!(refresh_of(Some("refresh=1")), Some(MIN_REFRESH));
        assert_eq!(refresh_of(Some("refresh=999999")), Some(MAX_REFRESH));
        assert_eq!(refresh_of(Some("refresh=abc")), Some(DEFAULT_REFRESH));
        assert_eq!(refresh_of(Some("refresh=-5")), Some(DEFAULT_REFRESH));
        assert_eq!(refresh_of(Some("x=1&refresh=20")), Some(20));
    }

    #[test]
    fn sparkline_draws_oldest_left_and_colours_failures() {
        assert_eq!(sparkline(&[]), "");
        // Newest first, as History::recent yields them.
        let runs = [
            (Duration::from_millis(10), Status::Fail),
            (Duration::from_millis(20), Status::Pass),
            (Duration::from_millis(5), Status::Pass),
        ];
        let svg = sparkline(&runs);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(
            svg.contains("last 3 runs, 1 not passing, slowest 20.0ms"),
            "{svg}"
        );
        // Right-aligned: the three bars are the last three slots; the slowest is full height.
        let last = (SPARK_RUNS - 1) * 3 + 1;
        assert!(
            svg.contains(&format!("<path class=\"fail\" d=\"M{last} 20v-10\"/>")),
            "{svg}"
        );
        let pass = format!("M{} 20v-5M{} 20v-19", last - 2 * 3, last - 3);
        assert!(
            svg.contains(&format!("<path class=\"pass\" d=\"{pass}\"/>")),
            "{svg}"
        );
        assert!(!svg.contains("class=\"error\""), "{svg}");
        // At most SPARK_RUNS bars, every bar at least 1 unit high.
        let many: Vec<_> = (0..100)
            .map(|i| (Duration::from_micros(i), Status::Pass))
            .collect();
        let svg = sparkline(&many);
        assert_eq!(svg.matches('M').count(), SPARK_RUNS, "{svg}");
        assert!(!svg.contains("v-0"), "{svg}");
    }

    #[test]
    fn the_header_clock_is_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + 3661);
        assert_eq!(clock(t), "1970-01-02 01:01:01 UTC");
    }

    fn row(name: &str, status: Option<Status>, message: &str) -> CheckRow {
        CheckRow {
            name: name.to_string(),
            service: "shop<&>".to_string(),
            kind: "http",
            critical: false,
            status,
            message: message.to_string(),
            last_run: status.map(|_| SystemTime::UNIX_EPOCH + Duration::from_secs(990)),
            duration: status.map(|_| Duration::from_millis(12)),
            consecutive_failures: 0,
            runs: status
                .map(|s| vec![(Duration::from_millis(12), s)])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn render_escapes_every_dynamic_string_and_states_the_overall_state() {
        let checks = [
            row(
                "api",
                Some(Status::Fail),
                "<script>alert('x')</script> & \"q\"",
            ),
            row("web", Some(Status::Pass), "ok"),
            row("new", None, ""),
        ];
        let page = Page {
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            started_at: SystemTime::UNIX_EPOCH,
            refresh: None,
            checks: &checks,
            deployments: &DeploymentsView::Unavailable,
        };
        let html = render(&page);
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"),
            "{html}"
        );
        assert!(html.contains("shop&lt;&amp;&gt;"), "{html}");
        assert!(
            !html.contains("http-equiv=\"refresh\""),
            "refresh off: {html}"
        );
        assert!(html.contains("Failing: 1 check failing"), "{html}");
        assert!(
            html.contains("<span class=\"badge fail\">fail</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"badge pass\">pass</span>"),
            "{html}"
        );
        assert!(html.contains("not run yet"), "{html}");
        assert!(html.contains(">10s ago</time>"), "{html}");
        assert!(html.contains("daemon runs without storage"), "{html}");
        assert!(html.trim_end().ends_with("</html>"), "{html}");

        // Hundreds of checks render into a page of reasonable size.
        let many: Vec<CheckRow> = (0..500)
            .map(|i| {
                let mut r = row(&format!("check-{i}"), Some(Status::Pass), "HTTP 200");
                r.runs = vec![(Duration::from_millis(5), Status::Pass); SPARK_RUNS];
                r
            })
            .collect();
        let html = render(&Page {
            checks: &many,
            ..page
        });
        assert_eq!(html.matches("data-check=").count(), 500);
        assert!(html.len() < 1_500_000, "{} bytes", html.len());
    }

    #[test]
    fn one_line_cuts_long_and_multi_line_messages() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("first\nsecond", 10), "first…");
        assert_eq!(one_line("0123456789abc", 10), "0123456789…");
        assert_eq!(one_line("ééééé", 3), "ééé…");
    }
}
