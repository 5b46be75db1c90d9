//! The `tcp` check: resolve and connect (a fresh connection per run), optionally complete a
//! TLS handshake, send a greeting and read a banner the server must answer with. Also the
//! pieces the other socket-level types (`tls`) share: the `host:port` [`Address`] with its
//! resolve-then-connect step, and [`Measured`], the subject their assertions are judged on.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::assert::{Assertion, Measured, QueryScope};
use super::outcome::{AssertionFailure, Observation, Observations, Outcome, Reason};
use super::tls::TlsClient;
use crate::config::reader::{At, Cx, FromToml, TableReader, Value};

/// What `expect` may ask of a tcp check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["banner"],
};

/// At most this much is read while waiting for the banner.
const BANNER_READ_CAP: usize = 4096;

/// Longest `banner` observation kept (in bytes, cut at a character boundary).
const BANNER_SHOWN: usize = 512;

/// Once some bytes have arrived without matching `expect_banner`, the banner is taken as
/// complete when nothing more comes for this long: a server that has said its piece and
/// waits for the client (SSH, SMTP) is a mismatch, not a timeout.
const BANNER_QUIET: Duration = Duration::from_millis(500);

/// A validated tcp check.
#[derive(Debug)]
pub struct TcpSpec {
    address: Address,
    send: Option<Vec<u8>>,
    expect_banner: Option<Regex>,
    tls: Option<TlsClient>,
}

impl TcpSpec {
    /// Reads the tcp keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<TcpSpec> {
        let address: Option<At<Address>> = t.req("address", cx);
        let send = t.opt::<String>("send", cx).map(String::into_bytes);
        let expect_banner = t.opt::<At<String>>("expect_banner", cx).and_then(|re| {
            Regex::new(&re.value)
                .map_err(|e| {
                    cx.error(
                        re.span,
                        format!("expect_banner: invalid regex: {}", one_line(&e.to_string())),
                    )
                })
                .ok()
        });
        let tls = match t.get("tls") {
            Some(v) if matches!(v.get_ref(), toml::de::DeValue::Boolean(false)) => None,
            Some(v) => match &address {
                Some(a) => Some(TlsClient::parse(v, &a.value.host, cx)?),
                None => {
                    // Still report mistakes inside the table; the host is unknown.
                    TlsClient::parse(v, "localhost", cx);
                    None
                }
            },
            None => None,
        };
        Some(TcpSpec {
            address: address?.value,
            send,
            expect_banner,
            tls,
        })
    }

    /// One run: connect, TLS, send, read the banner, judge.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let tcp = match self.address.connect().await {
            Ok(s) => s,
            Err((reason, message)) => return Outcome::fail(reason, message),
        };
        let exchanged = match &self.tls {
            None => self.exchange(tcp).await,
            Some(tls) => match tls.handshake(tcp).await {
                Ok(stream) => self.exchange(stream).await,
                Err(e) => return Outcome::fail(Reason::Tls, format!("tls: {e}")),
            },
        };
        let probed = Measured {
            total: start.elapsed(),
            observations: match &exchanged {
                Ok(Some(banner)) | Err(Failed::Mismatch(banner)) => {
                    let mut o = Observations::default();
                    o.set("banner", Observation::Text(banner_text(banner)));
                    o
                }
                _ => Observations::default(),
            },
        };
        let tls_note = if self.tls.is_some() { " (TLS)" } else { "" };
        match exchanged {
            Ok(banner) => {
                let mut message = format!("connected to {}{tls_note}", self.address);
                if let Some(b) = &banner {
                    message.push_str(&format!(", banner {:?}", shorten(&banner_text(b), 80)));
                }
                probed.judged(expect, message)
            }
            Err(Failed::Io(reason, message)) => {
                let mut o = Outcome::fail(reason, message);
                o.observations = probed.observations;
                o
            }
            Err(Failed::Mismatch(banner)) => {
                let re = self.expect_banner.as_ref().map_or("", Regex::as_str);
                let shown = banner_text(&banner);
                let mut o = Outcome::fail(
                    Reason::Assertion,
                    format!("banner {:?} does not match /{re}/", shorten(&shown, 80)),
                );
                o.failed_assertions.push(AssertionFailure {
                    assertion: format!("expect_banner /{re}/"),
                    expected: format!("matches /{re}/"),
                    actual: format!("{shown:?}"),
                    warn: false,
                });
                o.observations = probed.observations;
                o
            }
        }
    }

    /// Sends the greeting and reads the banner, on a plain or TLS stream.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
    ) -> Result<Option<Vec<u8>>, Failed> {
        if let Some(send) = &self.send {
            let sent = async {
                stream.write_all(send).await?;
                stream.flush().await
            };
            if let Err(e) = sent.await {
                return Err(Failed::Io(
                    Reason::Protocol,
                    format!("sending to {}: {}", self.address, io_text(&e)),
                ));
            }
        }
        let Some(re) = &self.expect_banner else {
            return Ok(None);
        };
        let mut banner = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let read = if banner.is_empty() {
                stream.read(&mut chunk).await
            } else {
                match tokio::time::timeout(BANNER_QUIET, stream.read(&mut chunk)).await {
                    Ok(r) => r,
                    // The server went quiet: what came is the whole banner.
                    Err(_) => break,
                }
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    let room = BANNER_READ_CAP - banner.len();
                    banner.extend_from_slice(&chunk[..n.min(room)]);
                    if re.is_match(&String::from_utf8_lossy(&banner)) {
                        return Ok(Some(banner));
                    }
                    if banner.len() >= BANNER_READ_CAP {
                        break;
                    }
                }
                Err(e) if banner.is_empty() => {
                    return Err(Failed::Io(
                        Reason::Protocol,
                        format!("reading the banner from {}: {}", self.address, io_text(&e)),
                    ));
                }
                // A reset after some bytes: judge what came.
                Err(_) => break,
            }
        }
        if banner.is_empty() {
            return Err(Failed::Io(
                Reason::Protocol,
                format!(
                    "{} closed the connection before sending a banner",
                    self.address
                ),
            ));
        }
        Err(Failed::Mismatch(banner))
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why an exchange did not produce a matching banner.
enum Failed {
    Io(Reason, String),
    /// Bytes came, but never matched.
    Mismatch(Vec<u8>),
}

/// The banner as text for observations and messages: lossy UTF-8, trailing line end
/// dropped, capped.
fn banner_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\r', '\n']);
    shorten(text, BANNER_SHOWN)
}

/// `s` cut to at most `max` bytes at a character boundary, with "…" when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A multi-line library message on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Short text of an I/O error: the kind ("connection refused") when it says it all.
pub(crate) fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::TimedOut
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => e.kind().to_string(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Address

/// A validated `host:port` (`[v6]:port` for IPv6 literals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    /// A host name or an IP literal (without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Address {
    pub(crate) fn parse(s: &str) -> Result<Address, String> {
        let example = "write \"host:port\", e.g. \"db.internal:5432\" or \"[::1]:443\"";
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((v6, port)) = rest.split_once("]:") else {
                return Err(format!("{s:?} has no port ({example})"));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(format!("{v6:?} is not an IPv6 address"));
            }
            (v6, port)
        } else {
            let Some((host, port)) = s.rsplit_once(':') else {
                return Err(format!("{s:?} has no port ({example})"));
            };
            if host.contains(':') {
                return Err(format!(
                    "{s:?}: an IPv6 address needs brackets, e.g. \"[::1]:443\""
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host ({example})"));
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(format!("{host:?} is not a valid host name"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
        };
        Ok(Address {
            host: host.to_string(),
            port,
        })
    }

    /// Resolves (each run: a health check must see DNS changes) and connects to the first
    /// address that accepts. Errors carry their reason: `dns` or `connect`.
    pub(crate) async fn connect(&self) -> Result<TcpStream, (Reason, String)> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    let text = e.to_string();
                    let text = text
                        .strip_prefix("failed to lookup address information: ")
                        .unwrap_or(&text);
                    return Err((
                        Reason::Dns,
                        format!("dns: cannot resolve {}: {text}", self.host),
                    ));
                }
            },
        };
        let mut last = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        Err(match last {
            Some((addr, e)) => (Reason::Connect, format!("connect {addr}: {}", io_text(&e))),
            None => (
                Reason::Dns,
                format!("dns: {} resolved to no address", self.host),
            ),
        })
    }
}

/// Letters, digits, `-`, `_` and dots, no empty label (a trailing dot is allowed).
fn is_host_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromToml for Address {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        Address::parse(&String::from_toml(v, cx)?)
    }
}

// ---------------------------------------------------------------------------------------------
// The judged subject

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        let a = Address::parse("db.internal:5432").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("db.internal", 5432));
        assert_eq!(a.to_string(), "db.internal:5432");
        let a = Address::parse("[::1]:443").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 443));
        assert_eq!(a.to_string(), "[::1]:443");
        assert!(Address::parse("127.0.0.1:80").is_ok());
        for bad in [
            "localhost",
            "localhost:",
            ":80",
            "::1:80",
            "host:0",
            "host:99999",
            "bad host:80",
            "[nope]:80",
            "[::1]",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn banners_are_trimmed_and_capped() {
        assert_eq!(banner_text(b"SSH-2.0-x\r\n"), "SSH-2.0-x");
        let long = "é".repeat(400);
        let shown = banner_text(long.as_bytes());
        assert!(shown.len() <= BANNER_SHOWN + '…'.len_utf8());
        assert!(shown.ends_with('…'));
    }
}
