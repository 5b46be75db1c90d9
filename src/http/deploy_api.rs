//! Deployment endpoints (DESIGN §5, §6): register, list, read, verdict long-poll, gate,
//! cancel, and the alerts list. Mutating endpoints need the bearer token; every error is
//! problem+json; bodies are capped and strictly typed (unknown fields → 422).

// Helpers return `Result<_, Response>` so a handler can `?`-style bail with a ready problem
// response; the response is returned right away, its size never travels far.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, problem};
use crate::deployments::{DeployError, Deployments, RegisterRequest, Registered};
use crate::verdict::Verdict;

/// Longest long-poll (DESIGN §5).
const MAX_WAIT: Duration = Duration::from_secs(120);

fn deployments(state: &AppState) -> Result<Arc<Deployments>, Response> {
    state.deployments().ok_or_else(|| {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "deployments are not available: storage is not open",
        )
    })
}

/// Compares the bearer token in constant time (the length may leak; the value does not).
pub(super) fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let rt = state.runtime();
    let Some(token) = &rt.config.server.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let want = token.expose().as_bytes();
    let got = given.as_bytes();
    let mut diff = u8::from(want.len() != got.len());
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ got.get(i).copied().unwrap_or(0);
    }
    if diff == 0 {
        Ok(())
    } else {
        let mut r = problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(r)
    }
}

fn deploy_error(e: DeployError) -> Response {
    match e {
        DeployError::Invalid(m) => problem(StatusCode::UNPROCESSABLE_ENTITY, m),
        DeployError::NotFound(id) => {
            problem(StatusCode::NOT_FOUND, format!("no deployment {id:?}"))
        }
        e @ DeployError::Concluded(..) => problem(StatusCode::CONFLICT, e.to_string()),
        DeployError::Store(e) => {
            tracing::error!(error = %e, "storage error");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage error (see the daemon's log)",
            )
        }
    }
}

/// The `{id}` of a request path, or a problem response: axum's own rejection (an id that is
/// not UTF-8 once percent-decoded, `%FF`) is plain text.
pub(super) fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    p.map(|Path(id)| id)
        .map_err(|e| problem(e.status(), e.body_text()))
}

fn json_rejection(e: JsonRejection) -> Response {
    let status = match &e {
        JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => e.status(),
    };
    problem(status, e.body_text())
}

pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let d = match deployments(&state) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_rejection(e),
    };
    match d.register(req).await {
        Ok(Registered::Created(dep)) => (StatusCode::CREATED, Json(dep)).into_response(),
        Ok(Registered::Existing(dep)) => (StatusCode::OK, Json(dep)).into_response(),
        Ok(Registered::Conflict(dep)) => problem(
            StatusCode::CONFLICT,
            format!(
                "deployment {:?} exists with a different service, version, environment or labels",
                dep.id
            ),
        ),
        Err(e) => deploy_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    service: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let d = match deployments(&state) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = q.limit.unwrap_or(20).clamp(1, 500);
    match d.list(q.service.as_deref(), limit).await {
        Ok(list) => super::json_list("deployments", &list),
        Err(e) => deploy_error(e),
    }
}

pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path_param(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let d = match deployments(&state) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match d.get(&id).await {
        Ok(Some(dep)) => Json(dep).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no deployment {id:?}")),
        Err(e) => deploy_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    wait: Option<String>,
}

pub async fn verdict(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Response {
    let id = match path_param(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let d = match deployments(&state) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let wait = match q.wait.as_deref().map(crate::config::reader::parse_duration) {
        None => Duration::ZERO,
        Some(Ok(w)) => w.min(MAX_WAIT),
        Some(Err(m)) => return problem(StatusCode::BAD_REQUEST, format!("wait: {m}")),
    };
    match d.wait_verdict(&id, wait).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => deploy_error(e),
    }
}

/// The verdict as a status code: 200 pass, 503 anything else.
pub async fn gate(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path_param(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let d = match deployments(&state) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match d.wait_verdict(&id, Duration::ZERO).await {
        Ok(v) => {
            let status = if v.verdict == Verdict::Pass {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, Json(v)).into_response()
        }
        Err(e) => deploy_error(e),
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let id = match path_param(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let d = match deployments(&state) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match d.cancel(&id).await {
        Ok(dep) => Json(dep).into_response(),
        Err(e) => deploy_error(e),
    }
}

pub async fn alerts(State(state): State<AppState>) -> Response {
    let list = state.deployments().map(|d| d.alerts()).unwrap_or_default();
    super::json_list("alerts", &list)
}
