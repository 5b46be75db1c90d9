//! A small web shop for the journey tests: login with a password (a session cookie and a
//! bearer token), search, cart, checkout and a cart cleanup, on 127.0.0.1 and a free port.
//!
//! Every request is recorded as received (method, path and query, headers, body). Each
//! endpoint has switches the test flips while the shop runs: break it (500), slow it (sleep
//! before answering), make it flaky (503 for the next N requests), or make `/search` leak the
//! caller's token and the shop password into its body (to prove bakewatch redacts them).
//!
//! Routes:
//! - `POST /login` `{"username", "password"}` → `Set-Cookie: session=…; Path=/; HttpOnly`,
//!   `{"token": "…"}`; a wrong password → 401;
//! - `GET /search?q=…` → `{"results": [{"id": 17, "name": "laptop"}, …]}`;
//! - `POST /cart` `{"product": <number>}` → `{"cart_id": "…", "items": N}` (a product id
//!   sent as a string → 400: the journey must keep a captured number a number);
//! - `POST /checkout` → `{"order": "…"}`, needs a non-empty cart (409 otherwise);
//! - `DELETE /cart` → empties the cart (the journey's cleanup; every call is counted);
//! - `GET /redirect-login` → 302 to `/landing` with `Set-Cookie: hop=…`; `/landing` answers
//!   200 only when that cookie came back (cookies set on a redirect hop reach the jar).
//!
//! Everything after login needs both `Authorization: Bearer <token>` and the session cookie
//! that came with that token.

// The journey test binary uses most, not all, of this.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The shop's one account.
pub const USERNAME: &str = "smoke";

/// The endpoints that have switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Login,
    Search,
    Cart,
    Checkout,
    /// `DELETE /cart`
    Cleanup,
}

/// How an endpoint misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Switch {
    /// Answer 500.
    broken: bool,
    /// Sleep this long before answering.
    delay: Duration,
    /// Answer 503 to this many more requests.
    flaky: u32,
}

/// One request as the shop received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, e.g. `/search?q=laptop`.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of cookie `name` in the `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie_in(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Books {
    switches: HashMap<Endpoint, Switch>,
    leak: bool,
    seen: Vec<Seen>,
    /// session id → the token issued with it.
    sessions: HashMap<String, String>,
    /// session id → product ids in its cart.
    carts: HashMap<String, Vec<u64>>,
    cleanup_calls: u64,
    orders: u64,
}

struct ShopState {
    password: String,
    books: Mutex<Books>,
}

/// The running shop; stops when dropped.
pub struct Shop {
    addr: SocketAddr,
    state: Arc<ShopState>,
    task: tokio::task::JoinHandle<()>,
}

impl Shop {
    /// Starts the shop on 127.0.0.1 and a free port; `password` is the account's password.
    pub async fn start(password: &str) -> Shop {
        let state = Arc::new(ShopState {
            password: password.to_string(),
            books: Mutex::new(Books::default()),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the shop on 127.0.0.1");
        let addr = listener.local_addr().expect("shop address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("shop server");
        });
        Shop { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.state.books.lock().unwrap()
    }

    /// Makes an endpoint answer 500 (or work again).
    pub fn set_broken(&self, e: Endpoint, broken: bool) {
        self.books().switches.entry(e).or_default().broken = broken;
    }

    /// Makes an endpoint sleep before answering (zero: answer at once).
    pub fn set_delay(&self, e: Endpoint, delay: Duration) {
        self.books().switches.entry(e).or_default().delay = delay;
    }

    /// Makes an endpoint answer 503 to its next `n` requests, then work.
    pub fn set_flaky(&self, e: Endpoint, n: u32) {
        self.books().switches.entry(e).or_default().flaky = n;
    }

    /// Makes `/search` answer 200 with the caller's token and the shop password in the body
    /// instead of results.
    pub fn set_leak(&self, leak: bool) {
        self.books().leak = leak;
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.books().seen.clone()
    }

    /// The requests to one path (without query), in arrival order.
    pub fn seen_at(&self, method: Method, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.path() == path)
            .collect()
    }

    /// `(session id, token)` of every successful login, in no particular order.
    pub fn sessions(&self) -> Vec<(String, String)> {
        self.books()
            .sessions
            .iter()
            .map(|(s, t)| (s.clone(), t.clone()))
            .collect()
    }

    /// Every token issued so far.
    pub fn tokens(&self) -> Vec<String> {
        self.sessions().into_iter().map(|(_, t)| t).collect()
    }

    /// `DELETE /cart` requests received (answered or not).
    pub fn cleanup_calls(&self) -> u64 {
        self.books().cleanup_calls
    }

    /// Orders placed.
    pub fn orders(&self) -> u64 {
        self.books().orders
    }

    /// Items in a session's cart.
    pub fn cart_items(&self, session: &str) -> usize {
        self.books().carts.get(session).map_or(0, Vec::len)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cookie_in<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The product catalogue.
const PRODUCTS: &[(u64, &str)] = &[(17, "laptop"), (23, "laptop bag"), (31, "phone")];

async fn handle(State(shop): State<Arc<ShopState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let seen = Seen {
        method: parts.method.clone(),
        target,
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    let endpoint = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/login") => Some(Endpoint::Login),
        (&Method::GET, "/search") => Some(Endpoint::Search),
        (&Method::POST, "/cart") => Some(Endpoint::Cart),
        (&Method::POST, "/checkout") => Some(Endpoint::Checkout),
        (&Method::DELETE, "/cart") => Some(Endpoint::Cleanup),
        _ => None,
    };
    let switch = {
        let mut books = shop.books.lock().unwrap();
        books.seen.push(seen.clone());
        if endpoint == Some(Endpoint::Cleanup) {
            books.cleanup_calls += 1;
        }
        let switch = endpoint.and_then(|e| books.switches.get_mut(&e));
        match switch {
            Some(s) => {
                let now = *s;
                s.flaky = s.flaky.saturating_sub(1);
                now
            }
            None => Switch::default(),
        }
    };
    if !switch.delay.is_zero() {
        tokio::time::sleep(switch.delay).await;
    }
    if switch.flaky > 0 {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "try again"}),
        );
    }
    if switch.broken {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "broken on purpose"}),
        );
    }
    match (endpoint, parts.uri.path()) {
        (Some(Endpoint::Login), _) => login(&shop, &seen),
        (Some(e), _) => {
            let session = match authorized(&shop, &seen) {
                Ok(s) => s,
                Err(why) => return reply(StatusCode::UNAUTHORIZED, json!({ "error": why })),
            };
            match e {
                Endpoint::Search => search(&shop, &seen, &session),
                Endpoint::Cart => add_to_cart(&shop, &seen, &session),
                Endpoint::Checkout => checkout(&shop, &session),
                Endpoint::Cleanup => {
                    shop.books.lock().unwrap().carts.remove(&session);
                    reply(StatusCode::OK, json!({"items": 0}))
                }
                Endpoint::Login => unreachable!("handled above"),
            }
        }
        (None, "/redirect-login") => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/landing")
            .header(header::SET_COOKIE, "hop=from-redirect; Path=/; HttpOnly")
            .body(Body::empty())
            .expect("valid response"),
        (None, "/landing") => match seen.cookie("hop") {
            Some("from-redirect") => reply(StatusCode::OK, json!({"landed": true})),
            _ => reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "the cookie set on the redirect did not come back"}),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "no such page"})),
    }
}

fn login(shop: &ShopState, seen: &Seen) -> Response {
    let body = seen.json();
    if body["username"] != USERNAME || body["password"] != shop.password.as_str() {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "wrong username or password"}),
        );
    }
    let session = random_id("s");
    let token = random_id("tok");
    shop.books
        .lock()
        .unwrap()
        .sessions
        .insert(session.clone(), token.clone());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::SET_COOKIE,
            format!("session={session}; Path=/; HttpOnly"),
        )
        .body(Body::from(json!({ "token": token }).to_string()))
        .expect("valid response")
}

/// The session of a request whose bearer token and session cookie belong together, or why
/// the request is refused.
fn authorized(shop: &ShopState, seen: &Seen) -> Result<String, &'static str> {
    let token = seen
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let session = seen.cookie("session").ok_or("no session cookie")?;
    match shop.books.lock().unwrap().sessions.get(session) {
        Some(t) if t == token => Ok(session.to_string()),
        Some(_) => Err("the token belongs to another session"),
        None => Err("unknown session"),
    }
}

fn search(shop: &ShopState, seen: &Seen, session: &str) -> Response {
    if shop.books.lock().unwrap().leak {
        let token = seen
            .header("authorization")
            .unwrap_or("")
            .trim_start_matches("Bearer ");
        return reply(
            StatusCode::OK,
            json!({"debug": format!("t={token} p={} s={session}", shop.password)}),
        );
    }
    let q = seen
        .target
        .split_once("?q=")
        .map_or("", |(_, q)| q)
        .to_string();
    let results: Vec<Value> = PRODUCTS
        .iter()
        .filter(|(_, name)| !q.is_empty() && name.contains(q.as_str()))
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    reply(StatusCode::OK, json!({ "results": results }))
}

fn add_to_cart(shop: &ShopState, seen: &Seen, session: &str) -> Response {
    let Some(product) = seen.json()["product"].as_u64() else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "product must be a number"}),
        );
    };
    if !PRODUCTS.iter().any(|(id, _)| *id == product) {
        return reply(StatusCode::NOT_FOUND, json!({"error": "no such product"}));
    }
    let mut books = shop.books.lock().unwrap();
    let cart = books.carts.entry(session.to_string()).or_default();
    cart.push(product);
    let items = cart.len();
    reply(
        StatusCode::OK,
        json!({"cart_id": format!("cart-{session}"), "items": items}),
    )
}

fn checkout(shop: &ShopState, session: &str) -> Response {
    let mut books = shop.books.lock().unwrap();
    if books.carts.get(session).is_none_or(Vec::is_empty) {
        return reply(StatusCode::CONFLICT, json!({"error": "the cart is empty"}));
    }
    books.carts.remove(session);
    books.orders += 1;
    reply(StatusCode::OK, json!({"order": random_id("order-")}))
}
