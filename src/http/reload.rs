//! `POST /-/reload`: asks the daemon to reload its config, as SIGHUP does, and answers with
//! the result. Needs the bearer token like the other mutating endpoints.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{AppState, problem};

/// How long a reload request waits for the daemon (loading a config takes milliseconds; a
/// reload queued behind another or behind shutdown is answered 503 after this).
const REPLY_WITHIN: Duration = Duration::from_secs(60);

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Checks now configured.
    pub checks: usize,
    /// New checks.
    pub added: Vec<String>,
    /// Checks that went away.
    pub removed: Vec<String>,
    /// Checks that kept their history (same name and type).
    pub kept: usize,
    pub rules: usize,
}

/// A reload request to the daemon's main loop; the reply is the summary, or every problem of
/// the new config as `file:line:col: message` lines.
pub struct Request {
    pub reply: oneshot::Sender<Result<Summary, Vec<String>>>,
}

pub async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = super::deploy_api::authorized(&state, &headers) {
        return r;
    }
    let Some(tx) = &state.reload else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "reloading is not available here",
        );
    };
    let (reply, rx) = oneshot::channel();
    if tx.send(Request { reply }).await.is_err() {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    match tokio::time::timeout(REPLY_WITHIN, rx).await {
        Ok(Ok(Ok(summary))) => Json(serde_json::json!({
            "status": "reloaded",
            "checks": summary.checks,
            "added": summary.added,
            "removed": summary.removed,
            "kept": summary.kept,
            "rules": summary.rules,
        }))
        .into_response(),
        Ok(Ok(Err(errors))) => {
            let body = serde_json::json!({
                "type": "about:blank",
                "title": "Bad Request",
                "status": 400,
                "detail": format!(
                    "the new config is invalid ({} problem{}); the running config is kept",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                ),
                "errors": errors,
            });
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response()
        }
        Ok(Err(_)) | Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not complete the reload (stopping?)",
        ),
    }
}
