//! The daemon's HTTP server (axum): `/metrics`, `/-/healthy`, `/-/ready` and the JSON API.
//! Every response has a request timeout and request bodies are capped; errors are
//! `application/problem+json` (RFC 9457).

pub mod api;
pub mod deploy_api;
pub mod reload;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::deployments::Deployments;
use crate::runtime::Runtime;

/// What handlers share: the current generation (the runtime always, deployments when
/// storage is open), which a config reload swaps while the server keeps serving; and the
/// way to ask the daemon for a reload.
#[derive(Clone)]
pub struct AppState {
    current: Arc<std::sync::RwLock<Generation>>,
    reload: Option<tokio::sync::mpsc::Sender<reload::Request>>,
}

/// One generation of the daemon's state: what one loaded config built.
#[derive(Clone)]
struct Generation {
    rt: Arc<Runtime>,
    deployments: Option<Arc<Deployments>>,
}

impl AppState {
    pub fn new(rt: Arc<Runtime>, deployments: Option<Arc<Deployments>>) -> AppState {
        AppState {
            current: Arc::new(std::sync::RwLock::new(Generation { rt, deployments })),
            reload: None,
        }
    }

    /// Serves `POST /-/reload` by sending requests on `tx` (the daemon's main loop).
    pub fn with_reload(mut self, tx: tokio::sync::mpsc::Sender<reload::Request>) -> AppState {
        self.reload = Some(tx);
        self
    }

    /// Makes a reloaded generation current: requests from now on see it.
    pub fn swap(&self, rt: Arc<Runtime>, deployments: Option<Arc<Deployments>>) {
        *self.current.write().expect("not poisoned") = Generation { rt, deployments };
    }

    /// The runtime now serving (take it once per request: a reload may swap it).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.read().expect("not poisoned").rt.clone()
    }

    /// The deployments now serving, when storage is open (see [`AppState::runtime`]).
    pub fn deployments(&self) -> Option<Arc<Deployments>> {
        self.current
            .read()
            .expect("not poisoned")
            .deployments
            .clone()
    }
}

impl FromRef<AppState> for Arc<Runtime> {
    fn from_ref(s: &AppState) -> Arc<Runtime> {
        s.runtime()
    }
}

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// The full router over shared state.
pub fn router(state: AppState) -> Router {
    let timeout = state.runtime().config.server.request_timeout;
    Router::new()
        .route("/", get(status::page))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload::reload))
        .route("/api/v1/checks", get(api::list_checks))
        .route("/api/v1/checks/{name}", get(api::get_check))
        .route(
            "/api/v1/deployments",
            post(deploy_api::register).get(deploy_api::list),
        )
        .route("/api/v1/deployments/{id}", get(deploy_api::get))
        .route("/api/v1/deployments/{id}/verdict", get(deploy_api::verdict))
        .route("/api/v1/deployments/{id}/gate", get(deploy_api::gate))
        .route("/api/v1/deployments/{id}/cancel", post(deploy_api::cancel))
        .route("/api/v1/alerts", get(deploy_api::alerts))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A limit the body extractors enforce (rather than a layer answering in plain text), so
        // an oversized body is refused with a problem like every other bad request.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

/// The longest a client may take to send a request's headers, counted from when the
/// connection opens or its previous response was sent (so it is also how long an idle
/// keep-alive connection stays open); `[server] request_timeout` when that is shorter.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (HTTP/1.1) until `shutdown` is cancelled, then stops
/// accepting, lets requests in progress finish and closes idle connections.
///
/// A connection that has not sent its complete request headers within
/// [`HEADER_READ_TIMEOUT`] (or `request_timeout`, if shorter) is closed, so slow or silent
/// clients cannot pile up connections, nor hold a graceful shutdown open. Requests whose
/// headers have arrived are bounded by `request_timeout` (the router's timeout layer), so a
/// long-poll may last up to its own cap.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let header_timeout = HEADER_READ_TIMEOUT.min(state.runtime().config.server.request_timeout);
    let app = router(state);
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = shutdown.cancelled() => {
                    // Finish the request in progress (if any), then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Connections the kernel may queue before the daemon accepts them. `TcpListener::bind`
/// asks for 128: a burst of a few hundred connects (deploy scripts long-polling their
/// verdicts, a load balancer's health checks) overflowed that, and every connect past it
/// waited for the client's SYN retransmit, one second later. The kernel caps this at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// The API listener on `addr`, with [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted daemon can bind while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// After a failed `accept`: a connection that went away before it was accepted is nothing;
/// anything else (out of file descriptors) is logged and retried after a pause, so the loop
/// does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting an API connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        // Written as it is sent: tens of MiB with thousands of checks (see Metrics::render_body).
        rt.metrics.render_body(),
    )
        .into_response()
}

async fn healthy() -> &'static str {
    "OK\n"
}

async fn ready(State(rt): State<Arc<Runtime>>) -> Response {
    if rt.is_ready() {
        "ready\n".into_response()
    } else {
        problem(StatusCode::SERVICE_UNAVAILABLE, "not ready yet")
    }
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method",
    )
}

/// About how many bytes each part of a streamed JSON list holds.
const LIST_PART: usize = 32 * 1024;

/// `{"<key>":[…]}` of `items`, written in parts of about [`LIST_PART`] bytes. A list of
/// thousands of checks is hundreds of KiB: written whole, through a `serde_json::Value` or
/// one growing buffer, every such answer costs an allocation large enough that glibc keeps
/// the memory afterwards; small parts are reused. One part goes out with a Content-Length,
/// more are sent chunked.
pub fn json_list<T: serde::Serialize>(key: &str, items: &[T]) -> Response {
    let mut parts: Vec<bytes::Bytes> = Vec::new();
    let mut part: Vec<u8> = Vec::with_capacity(LIST_PART + LIST_PART / 4);
    let head = serde_json::to_string(key).expect("a string serializes");
    part.extend_from_slice(b"{");
    part.extend_from_slice(head.as_bytes());
    part.extend_from_slice(b":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            part.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut part, item) {
            tracing::error!(error = %e, key, "writing a JSON list failed");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the list could not be written",
            );
        }
        if part.len() >= LIST_PART {
            parts.push(
                std::mem::replace(&mut part, Vec::with_capacity(LIST_PART + LIST_PART / 4)).into(),
            );
        }
    }
    part.extend_from_slice(b"]}");
    parts.push(part.into());
    let body = if parts.len() == 1 {
        axum::body::Body::from(parts.pop().expect("one part"))
    } else {
        axum::body::Body::from_stream(futures_util::stream::iter(
            parts.into_iter().map(Ok::<_, std::convert::Infallible>),
        ))
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An RFC 9457 problem response.
pub fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// The exact length the body announces (hyper sends it as Content-Length), and the
    /// document.
    async fn body_of(r: Response) -> (Option<u64>, serde_json::Value) {
        let len = axum::body::HttpBody::size_hint(r.body()).exact();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (len, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_listener_queues_a_burst_of_connections_it_has_not_accepted_yet() {
        // Nothing accepts: every connect must still complete, from the kernel's queue. With
        // TcpListener::bind's backlog of 128 the 130th SYN was dropped and its connect hung
        // until the client's retransmit a second later.
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let held: Vec<std::net::TcpStream> = (0..600)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(
                    |e| panic!("connect {i} of 600 to an unaccepting listener: {e}"),
                )
            })
            .collect();
        assert_eq!(held.len(), 600);
        drop(listener);
    }

    #[tokio::test]
    async fn a_json_list_is_the_same_document_in_one_part_or_many() {
        #[derive(serde::Serialize)]
        struct Item {
            name: String,
            n: usize,
            note: Option<&'static str>,
        }
        let items = |count: usize| -> Vec<Item> {
            (0..count)
                .map(|n| Item {
                    name: format!("check \"{n}\" \u{e9}"),
                    n,
                    note: (n % 3 == 0).then_some("x"),
                })
                .collect()
        };
        for count in [0, 1, 5, 3000] {
            let list = items(count);
            let (len, doc) = body_of(json_list("checks", &list)).await;
            assert_eq!(doc, serde_json::json!({ "checks": list }), "{count} items");
            // 3,000 items are ~150 KB: several parts, sent chunked; a small list has a length.
            assert_eq!(len.is_some(), count < 100, "{count} items: {len:?}");
        }
    }
}
