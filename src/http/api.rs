//! JSON API over checks: current state and recent history.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::problem;
use crate::checks::{Outcome, Reason, Status};
use crate::config::Schedule;
use crate::history::WindowStats;
use crate::runtime::{CheckState, Runtime};
use crate::util::rfc3339;

/// Default trailing window for statistics in API answers.
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// How many recent samples a check's detail lists.
const RECENT: usize = 50;

#[derive(Serialize)]
pub struct CheckSummary {
    name: String,
    service: String,
    #[serde(rename = "type")]
    kind: &'static str,
    schedule: String,
    timeout_ms: f64,
    critical: bool,
    /// Last outcome's status, null before the first run.
    status: Option<Status>,
    reason: Option<Reason>,
    message: Option<String>,
    last_run: Option<String>,
    duration_ms: Option<f64>,
    consecutive_failures: u32,
    window: String,
    stats: WindowStats,
}

#[derive(Serialize)]
struct RecentSample {
    at: String,
    status: Status,
    reason: Reason,
    duration_ms: f64,
}

#[derive(Serialize)]
struct CheckDetail {
    #[serde(flatten)]
    summary: CheckSummary,
    defined_at: String,
    last_outcome: Option<Arc<Outcome>>,
    /// The latest outcome that was not a pass, kept after recovery for context.
    last_problem: Option<Arc<Outcome>>,
    recent: Vec<RecentSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    window: Option<String>,
}

type WindowParam = Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>;

/// The `?window=` of a request; the error is a 400 detail.
fn parse_window(q: WindowParam) -> Result<Duration, String> {
    let Query(q) = q.map_err(|e| e.body_text())?;
    match &q.window {
        None => Ok(DEFAULT_WINDOW),
        Some(w) => match crate::config::reader::parse_duration(w) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(format!("window: {w:?} is not a duration such as \"5m\"")),
        },
    }
}

fn schedule_text(s: &Schedule) -> String {
    match s {
        Schedule::Interval(d) => format!("every {}", humantime::format_duration(*d)),
        Schedule::Cron(c) => format!("cron {c}"),
    }
}

fn summary(state: &CheckState, window: Duration) -> CheckSummary {
    let c = &state.config;
    let h = state.history.lock().expect("not poisoned");
    let last = h.last();
    CheckSummary {
        name: c.name.clone(),
        service: c.service.clone(),
        kind: c.type_name(),
        schedule: schedule_text(&c.schedule),
        timeout_ms: c.timeout.as_secs_f64() * 1000.0,
        critical: c.critical,
        status: last.map(|o| o.status),
        reason: last.map(|o| o.reason),
        message: last.map(|o| o.message.clone()),
        last_run: last.map(|o| rfc3339(o.started_at)),
        duration_ms: last.map(|o| o.duration.as_secs_f64() * 1000.0),
        consecutive_failures: h.consecutive_failures(),
        window: humantime::format_duration(window).to_string(),
        stats: h.window(SystemTime::now(), window),
    }
}

pub async fn list_checks(State(rt): State<Arc<Runtime>>, q: WindowParam) -> Response {
    let window = match parse_window(q) {
        Ok(w) => w,
        Err(m) => return problem(StatusCode::BAD_REQUEST, m),
    };
    let list: Vec<CheckSummary> = rt.checks.iter().map(|c| summary(c, window)).collect();
    super::json_list("checks", &list)
}

pub async fn get_check(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: WindowParam,
) -> Response {
    let name = match super::deploy_api::path_param(name) {
        Ok(name) => name,
        Err(r) => return r,
    };
    let window = match parse_window(q) {
        Ok(w) => w,
        Err(m) => return problem(StatusCode::BAD_REQUEST, m),
    };
    let Some(state) = rt.check(&name) else {
        return problem(StatusCode::NOT_FOUND, format!("no check named {name:?}"));
    };
    let summary = summary(state, window);
    let h = state.history.lock().expect("not poisoned");
    let detail = CheckDetail {
        summary,
        defined_at: format!("{}:{}", state.config.file.display(), state.config.line),
        last_outcome: h.last().cloned(),
        last_problem: h.last_problem().cloned(),
        recent: h
            .recent(RECENT)
            .map(|s| RecentSample {
                at: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(s.at_ms)),
                status: s.status,
                reason: s.reason,
                duration_ms: s.duration().as_secs_f64() * 1000.0,
            })
            .collect(),
    };
    drop(h);
    Json(detail).into_response()
}
