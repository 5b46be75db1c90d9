//! The `http` check's direct path: a plain `http://` request on a connection of its own, with
//! hyper's HTTP/1 client driven inside the check's own task.
//!
//! A fresh-connection check over plain HTTP needs none of what reqwest's client adds around
//! hyper — the connection pool and its bookkeeping, a spawned task per connection (and the
//! wake-ups between it and the caller), the URL re-parsed into a URI, the connector's service
//! layers — and that machinery cost more CPU than the probe itself (BENCHMARKS.md, "CPU time
//! per HTTP check run"). The request is still built by reqwest (`reqwest::Request`: headers,
//! auth, JSON and form bodies exactly as the reqwest path sends them), and this module sends
//! it with the same default headers (`user-agent`, `accept: */*`, `host`). https, keep-alive
//! and a redirect that leaves plain http stay on reqwest (see `HttpSpec::run`).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use reqwest::header::{ACCEPT, HOST, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, Url};

use super::outcome::Reason;

type Connection = http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

/// A response whose body is still to be read, with the connection that delivers it.
pub(crate) struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    conn: Pin<Box<Connection>>,
    conn_done: bool,
}

/// What a request to send looks like here (built by reqwest, taken apart).
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// Takes a built reqwest request apart; gives it back when its body is a stream (never
    /// for a check, whose bodies are fixed bytes).
    pub fn from_reqwest(mut req: reqwest::Request) -> Result<Request, Box<reqwest::Request>> {
        let body = match req.body() {
            None => Bytes::new(),
            Some(b) => match b.as_bytes() {
                Some(bytes) => Bytes::copy_from_slice(bytes),
                None => return Err(Box::new(req)),
            },
        };
        Ok(Request {
            method: std::mem::replace(req.method_mut(), Method::GET),
            url: req.url().clone(),
            headers: std::mem::take(req.headers_mut()),
            body,
        })
    }

    /// The same request, for reqwest to send (a redirect that leaves plain http).
    pub fn into_reqwest(self) -> reqwest::Request {
        let mut r = reqwest::Request::new(self.method, self.url);
        *r.headers_mut() = self.headers;
        if !self.body.is_empty() {
            *r.body_mut() = Some(reqwest::Body::from(self.body));
        }
        r
    }
}

/// Sends `req` (an `http://` URL) on a new connection and waits for the response head.
/// `user_agent` is the client's; errors are classified as [`super::http::classify`] does for
/// reqwest's.
pub(crate) async fn send(
    req: &Request,
    user_agent: &HeaderValue,
) -> Result<Response, (Reason, String)> {
    let url = &req.url;
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = connect(url, port).await?;
    // As reqwest does: the request goes out in one write anyway, and the probe measures the
    // server, not Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| classify(&e))?;
    let mut conn = Box::pin(conn);

    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut builder = hyper::Request::builder()
        .method(req.method.clone())
        .uri(target);
    let headers = builder.headers_mut().expect("a fresh builder has headers");
    *headers = req.headers.clone();
    if !headers.contains_key(HOST) {
        let host = url.host_str().unwrap_or_default();
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert(HOST, v);
        }
    }
    headers
        .entry(USER_AGENT)
        .or_insert_with(|| user_agent.clone());
    headers
        .entry(ACCEPT)
        .or_insert_with(|| HeaderValue::from_static("*/*"));
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| (Reason::Config, format!("request: {e}")))?;

    let mut conn_done = false;
    let response = {
        let sending = sender.send_request(request);
        tokio::pin!(sending);
        loop {
            tokio::select! {
                biased;
                r = &mut sending => break r.map_err(|e| classify(&e))?,
                c = conn.as_mut(), if !conn_done => {
                    conn_done = true;
                    if let Err(e) = c {
                        return Err(classify(&e));
                    }
                }
            }
        }
    };
    let (parts, body) = response.into_parts();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        conn,
        conn_done,
    })
}

impl Response {
    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, (Reason, String)> {
        loop {
            tokio::select! {
                biased;
                frame = self.body.frame() => match frame {
                    None => return Ok(None),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            return Ok(Some(data));
                        }
                        // Trailers: nothing to read in them.
                    }
                    Some(Err(e)) => return Err(classify(&e)),
                },
                c = self.conn.as_mut(), if !self.conn_done => {
                    self.conn_done = true;
                    if let Err(e) = c {
                        return Err(classify(&e));
                    }
                }
            }
        }
    }
}

/// Connects to the URL's host: an IP address directly, a name through the system resolver
/// (as reqwest's default resolver does), each address in turn.
async fn connect(url: &Url, port: u16) -> Result<tokio::net::TcpStream, (Reason, String)> {
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(name)) => match tokio::net::lookup_host((name, port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Err((Reason::Dns, format!("dns: {e}"))),
        },
        None => return Err((Reason::Config, "url: no host".to_string())),
    };
    let mut last = None;
    for addr in &addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => (Reason::Connect, format!("connect: {e}")),
        None => (Reason::Dns, "dns: the name has no address".to_string()),
    })
}

/// hyper's errors, as [`super::http::classify`] words reqwest's (which wrap the same ones).
fn classify(e: &hyper::Error) -> (Reason, String) {
    (
        Reason::Protocol,
        format!("protocol: {}", super::http::innermost(e)),
    )
}

/// A redirect the check follows: the next request, as reqwest would send it (303, and 301/302
/// after anything but GET/HEAD, become a GET without body; credentials stay behind when the
/// origin changes; `referer` names the previous URL unless leaving https). `None` when the
/// response is not a redirect or names no valid location.
pub(crate) fn redirect(req: &Request, status: u16, headers: &HeaderMap) -> Option<Request> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = headers.get(reqwest::header::LOCATION)?.to_str().ok()?;
    let next = req.url.join(location).ok()?;
    if !matches!(next.scheme(), "http" | "https") {
        return None;
    }
    let mut headers = req.headers.clone();
    let (mut method, mut body) = (req.method.clone(), req.body.clone());
    if matches!(status, 301..=303) {
        body = Bytes::new();
        for h in [
            reqwest::header::TRANSFER_ENCODING,
            reqwest::header::CONTENT_TYPE,
            reqwest::header::CONTENT_LENGTH,
        ] {
            headers.remove(h);
        }
        if method != Method::GET && method != Method::HEAD {
            method = Method::GET;
        }
    }
    let cross_origin = next.host_str() != req.url.host_str()
        || next.port_or_known_default() != req.url.port_or_known_default()
        || next.scheme() != req.url.scheme();
    if cross_origin {
        for h in [
            reqwest::header::AUTHORIZATION,
            reqwest::header::COOKIE,
            reqwest::header::PROXY_AUTHORIZATION,
            reqwest::header::WWW_AUTHENTICATE,
        ] {
            headers.remove(h);
        }
        headers.remove("cookie2");
    }
    headers.remove(HOST);
    let mut referer = req.url.clone();
    let _ = referer.set_username("");
    let _ = referer.set_password(None);
    referer.set_fragment(None);
    if let Ok(v) = HeaderValue::from_str(referer.as_str()) {
        headers.insert(reqwest::header::REFERER, v);
    }
    Some(Request {
        method,
        url: next,
        headers,
        body,
    })
}
