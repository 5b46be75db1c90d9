//! Integration tests of the socket-level check types — `tcp`, `tls`, `dns` — and of the
//! certificate expiry that https `http` checks report, on the daemon's own code path: a config
//! is written to files and loaded with `config::load`, and the check runs through
//! `runtime::execute` (which applies the check's timeout) or `Runtime::run_check` (which also
//! feeds the metrics).
//!
//! Every server is started inside the test on 127.0.0.1 and a free port: raw TCP servers
//! (banner, echo, silent, closing), rustls servers with certificates made by rcgen (signed by a
//! test CA, self-signed, expired, for another name, behind an intermediate), and a small UDP DNS
//! server answering from a fixed table (messages encoded with hickory-proto, which
//! hickory-resolver re-exports). The only other lookup is `localhost` through the system
//! resolver. Nothing else is contacted.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bakewatch::checks::{Observation, Outcome, Reason, Status};
use bakewatch::config::{CheckConfig, Config};
use bakewatch::metrics::Metrics;
use bakewatch::runtime::{Runtime, execute};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use common::{CliOutput, metric_value, run_cli_async, write_config};

const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------------------------
// Config helpers.

use common::q;

/// Loads a config whose one check file holds a single `[[check]]` named "probe" of type
/// `kind`, with `keys` as its other keys.
fn load_config(kind: &str, keys: &str) -> Config {
    common::probe_config(kind, keys)
}

fn load_check(kind: &str, keys: &str) -> Arc<CheckConfig> {
    let config = load_config(kind, keys);
    assert_eq!(config.checks.len(), 1);
    config.checks[0].clone()
}

/// Loads the check and runs it once, as the daemon does.
async fn run(kind: &str, keys: &str) -> Outcome {
    execute(&load_check(kind, keys)).await
}

fn observation<'a>(o: &'a Outcome, name: &str) -> &'a Observation {
    o.observations
        .get(name)
        .unwrap_or_else(|| panic!("no observation {name:?} in {o:#?}"))
}

fn number(o: &Outcome, name: &str) -> f64 {
    match observation(o, name) {
        Observation::Number(n) => *n,
        other => panic!("observation {name:?} is not a number: {other:?}"),
    }
}

fn text<'a>(o: &'a Outcome, name: &str) -> &'a str {
    match observation(o, name) {
        Observation::Text(t) => t,
        other => panic!("observation {name:?} is not text: {other:?}"),
    }
}

fn list<'a>(o: &'a Outcome, name: &str) -> &'a [String] {
    match observation(o, name) {
        Observation::List(l) => l,
        other => panic!("observation {name:?} is not a list: {other:?}"),
    }
}

fn boolean(o: &Outcome, name: &str) -> bool {
    match observation(o, name) {
        Observation::Bool(b) => *b,
        other => panic!("observation {name:?} is not a bool: {other:?}"),
    }
}

#[track_caller]
fn assert_outcome(o: &Outcome, status: Status, reason: Reason) {
    assert_eq!(
        (o.status, o.reason),
        (status, reason),
        "unexpected outcome: {o:#?}"
    );
}

/// A check that timed out ended within its timeout plus a small margin.
#[track_caller]
fn assert_timed_out_in_time(o: &Outcome, timeout: Duration) {
    assert_outcome(o, Status::Fail, Reason::Timeout);
    assert!(
        o.duration < timeout + Duration::from_millis(100),
        "took {:?} with a {timeout:?} timeout",
        o.duration
    );
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// Raw TCP servers.

/// A server task accepting on 127.0.0.1; aborted when dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting and closes the listener (waits until it is closed).
    async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts on `listener`, handling each connection in its own task.
fn serve<F, Fut>(listener: TcpListener, handle: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(handle(s));
        }
    });
    Server { addr, task }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Reads until the peer closes (or errors): the connection is held open, silently.
async fn hold(mut s: impl AsyncRead + Unpin) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Writes `banner`, then holds the connection.
async fn banner_server(banner: &'static [u8]) -> Server {
    serve(listener().await, move |mut s| async move {
        let _ = s.write_all(banner).await;
        hold(s).await;
    })
}

/// Echoes every line it receives.
async fn echo_server() -> Server {
    serve(listener().await, |mut s| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    common::free_port()
}

// ---------------------------------------------------------------------------------------------
// TLS: certificates and servers.

/// Server certificate parameters for `names`, valid from `from` to `until` (Unix seconds).
fn leaf_params(cn: &str, names: &[&str], from: i64, until: i64) -> CertificateParams {
    // rcgen takes `time::OffsetDateTime`, which this crate does not name: start from rcgen's
    // own constructor and add the offset.
    let at = |unix: i64| {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(u64::try_from(unix).unwrap())
    };
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = at(from);
    p.not_after = at(until);
    p
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A certificate chain (leaf first) and its key, ready for a rustls server.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    /// The leaf's notAfter, Unix seconds.
    not_after: i64,
}

impl Leaf {
    fn server_config(&self) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
        .unwrap()
    }
}

/// A test CA "bakewatch test CA", with `ca.pem` in a temp dir.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let ca = CertifiedIssuer::self_signed(
            ca_params("bakewatch test CA"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").to_str().unwrap().to_string()
    }

    /// A certificate for `names` signed by the CA, valid from `from` to `until`.
    fn leaf(&self, names: &[&str], from: i64, until: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params("bakewatch test server", names, from, until)
            .signed_by(&key, &self.ca)
            .unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after: until,
        }
    }

    /// A certificate for `names` signed by an intermediate CA (itself signed by the CA) that
    /// expires at `intermediate_until`; the chain holds both.
    fn leaf_via_intermediate(&self, names: &[&str], until: i64, intermediate_until: i64) -> Leaf {
        let now = unix_now();
        let mut params = ca_params("bakewatch intermediate CA");
        params.not_before = leaf_params("x", &[], now - DAY, intermediate_until).not_before;
        params.not_after = leaf_params("x", &[], now - DAY, intermediate_until).not_after;
        let intermediate =
            CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.ca).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params("bakewatch test server", names, now - DAY, until)
            .signed_by(&key, &intermediate)
            .unwrap();
        Leaf {
            chain: vec![cert.der().clone(), intermediate.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after: until,
        }
    }
}

/// A self-signed certificate for `names`.
fn self_signed(names: &[&str], until: i64) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params("bakewatch self-signed", names, unix_now() - DAY, until)
        .self_signed(&key)
        .unwrap();
    Leaf {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        not_after: until,
    }
}

/// A TLS server: handshake, then `then` with the TLS stream. Failed handshakes are dropped.
fn tls_server_on<F, Fut>(listener: TcpListener, leaf: &Leaf, then: F) -> Server
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(leaf.server_config()));
    let then = Arc::new(then);
    serve(listener, move |tcp| {
        let acceptor = acceptor.clone();
        let then = then.clone();
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                then(tls).await;
            }
        }
    })
}

/// A TLS server that completes the handshake and holds the connection.
async fn tls_server(leaf: &Leaf) -> Server {
    tls_server_on(listener().await, leaf, hold)
}

/// Keys of a tls check against `server`.
fn tls_keys(server: &Server, extra: &str) -> String {
    format!(
        "address = {}\ntimeout = \"5s\"\n{extra}",
        q(server.addr.to_string())
    )
}

// ---------------------------------------------------------------------------------------------
// tls

#[tokio::test(flavor = "multi_thread")]
async fn tls_a_valid_certificate_from_ca_file_passes_and_reports_the_leaf() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["valid.test", "127.0.0.1"], now - DAY, now + 30 * DAY);
    let server = tls_server(&leaf).await;
    let o = run(
        "tls",
        &tls_keys(
            &server,
            &format!(
                "server_name = \"valid.test\"\nca_file = {}\nexpect = [ {{ observe = \"cert_days\", gt = 14 }}, {{ observe = \"san\", contains = \"valid.test\" }}, {{ duration = \"total\", lt = \"2s\" }} ]",
                q(pki.ca_file())
            ),
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let days = number(&o, "cert_days");
    assert!((29.9..=30.0).contains(&days), "cert_days = {days}");
    assert_eq!(
        number(&o, "cert_expiry_timestamp"),
        leaf.not_after as f64,
        "{o:#?}"
    );
    assert!(boolean(&o, "verified"));
    assert_eq!(text(&o, "issuer"), "CN=bakewatch test CA");
    assert_eq!(text(&o, "subject"), "CN=bakewatch test server");
    assert_eq!(list(&o, "san"), ["valid.test", "127.0.0.1"]);
    assert!(
        o.message
            .starts_with("certificate CN=bakewatch test server expires in 29 days")
            || o.message.ends_with("expires in 30 days"),
        "{}",
        o.message
    );

    // The address's host is the default server name: the cert names 127.0.0.1 too.
    let o = run(
        "tls",
        &tls_keys(&server, &format!("ca_file = {}", q(pki.ca_file()))),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_a_private_ca_is_untrusted_by_the_system_roots() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - DAY, now + 30 * DAY);
    let server = tls_server(&leaf).await;
    let o = run("tls", &tls_keys(&server, "")).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(
        o.message
            .starts_with("untrusted: UnknownIssuer (issued by CN=bakewatch test CA)"),
        "{}",
        o.message
    );
    // The certificate is still reported.
    assert!(!boolean(&o, "verified"));
    assert!((29.9..=30.0).contains(&number(&o, "cert_days")), "{o:#?}");
    assert_eq!(text(&o, "issuer"), "CN=bakewatch test CA");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_a_self_signed_certificate_fails_verification() {
    let pki = Pki::new();
    let leaf = self_signed(&["127.0.0.1"], unix_now() + 90 * DAY);
    let server = tls_server(&leaf).await;
    let o = run(
        "tls",
        &tls_keys(&server, &format!("ca_file = {}", q(pki.ca_file()))),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert_eq!(o.message, "untrusted: UnknownIssuer (self-signed)");
    assert!(!boolean(&o, "verified"));
    assert!((89.9..=90.0).contains(&number(&o, "cert_days")), "{o:#?}");
    assert_eq!(text(&o, "subject"), "CN=bakewatch self-signed");
    assert_eq!(text(&o, "issuer"), "CN=bakewatch self-signed");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_an_expired_certificate_fails_but_reports_its_expiry() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - 30 * DAY, now - 3 * DAY);
    let server = tls_server(&leaf).await;
    let o = run(
        "tls",
        &tls_keys(&server, &format!("ca_file = {}", q(pki.ca_file()))),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert_eq!(o.message, "certificate expired 3 days ago");
    let days = number(&o, "cert_days");
    assert!((-3.01..=-3.0).contains(&days), "cert_days = {days}");
    assert_eq!(number(&o, "cert_expiry_timestamp"), leaf.not_after as f64);
    assert!(!boolean(&o, "verified"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_a_certificate_for_another_name_fails_with_a_name_mismatch() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["a.example"], now - DAY, now + 30 * DAY);
    let server = tls_server(&leaf).await;
    let o = run(
        "tls",
        &tls_keys(
            &server,
            &format!(
                "server_name = \"b.example\"\nca_file = {}",
                q(pki.ca_file())
            ),
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert_eq!(
        o.message,
        "name mismatch: cert is for a.example, not b.example"
    );
    assert_eq!(list(&o, "san"), ["a.example"]);
    assert!(!boolean(&o, "verified"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_false_passes_and_expect_judges_the_expiry() {
    let pki = Pki::new();
    let now = unix_now();
    let expired = pki.leaf(&["127.0.0.1"], now - 30 * DAY, now - 3 * DAY);
    let server = tls_server(&expired).await;

    let o = run("tls", &tls_keys(&server, "verify = false")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(!boolean(&o, "verified"));
    assert!(
        o.message.contains("expired 3 days ago") && o.message.contains("not verified: "),
        "{}",
        o.message
    );

    let o = run(
        "tls",
        &tls_keys(
            &server,
            "verify = false\nexpect = [ { observe = \"cert_days\", gt = 14 } ]",
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(o.message.contains("cert_days"), "{}", o.message);
    assert_eq!(o.failed_assertions.len(), 1);

    // A warn-level expiry assertion only degrades.
    let soon = pki.leaf(&["127.0.0.1"], now - DAY, now + 7 * DAY);
    let server = tls_server(&soon).await;
    let o = run(
        "tls",
        &tls_keys(
            &server,
            &format!(
                "ca_file = {}\nexpect = [ {{ observe = \"cert_days\", gt = 14, severity = \"warn\" }} ]",
                q(pki.ca_file())
            ),
        ),
    )
    .await;
    assert_outcome(&o, Status::Degraded, Reason::Assertion);
    assert!(boolean(&o, "verified"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_reports_the_sites_own_leaf_not_the_earliest_expiring_certificate() {
    let pki = Pki::new();
    let now = unix_now();
    // The intermediate expires in 10 days, the site's certificate in 60.
    let leaf = pki.leaf_via_intermediate(&["127.0.0.1"], now + 60 * DAY, now + 10 * DAY);
    let server = tls_server(&leaf).await;
    let o = run(
        "tls",
        &tls_keys(&server, &format!("ca_file = {}", q(pki.ca_file()))),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(boolean(&o, "verified"));
    let days = number(&o, "cert_days");
    assert!((59.9..=60.0).contains(&days), "cert_days = {days}");
    assert_eq!(text(&o, "issuer"), "CN=bakewatch intermediate CA");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_a_stalled_handshake_times_out_within_the_bound() {
    // Accepts and never speaks.
    let server = serve(listener().await, hold);
    let check = load_check(
        "tls",
        &format!(
            "address = {}\ntimeout = \"500ms\"",
            q(server.addr.to_string())
        ),
    );
    let o = execute(&check).await;
    assert_timed_out_in_time(&o, Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_refused_and_not_tls_servers() {
    let o = run("tls", &format!("address = \"127.0.0.1:{}\"", closed_port())).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(o.message.contains("connection refused"), "{}", o.message);

    // A plain-text server answering the ClientHello with garbage.
    let server = serve(listener().await, |mut s| async move {
        let _ = s.write_all(b"SSH-2.0-not-tls\r\n").await;
        hold(s).await;
    });
    let o = run("tls", &tls_keys(&server, "")).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(
        o.message.starts_with("tls handshake with "),
        "{}",
        o.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_recovers_when_the_server_returns() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - DAY, now + 30 * DAY);
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let server = tls_server_on(l, &leaf, hold);
    let check = load_check(
        "tls",
        &format!(
            "address = {}\nca_file = {}",
            q(addr.to_string()),
            q(pki.ca_file())
        ),
    );
    assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
    server.stop().await;
    assert_outcome(&execute(&check).await, Status::Fail, Reason::Connect);
    let _server = tls_server_on(TcpListener::bind(addr).await.unwrap(), &leaf, hold);
    assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_feeds_the_cert_expiry_gauge() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - DAY, now + 30 * DAY);
    let server = tls_server(&leaf).await;
    let config = load_config(
        "tls",
        &tls_keys(&server, &format!("ca_file = {}", q(pki.ca_file()))),
    );
    let metrics = Arc::new(Metrics::new());
    let rt = Runtime::new(config, metrics.clone());
    let o = rt.run_check(&rt.checks[0]).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let text = metrics.render();
    assert_eq!(
        metric_value(
            &text,
            "bakewatch_cert_expiry_timestamp_seconds",
            &[("check", "probe")]
        ),
        Some(leaf.not_after as f64),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "bakewatch_check_value",
            &[("check", "probe"), ("observation", "cert_days")]
        )
        .map(|d| (29.9..=30.0).contains(&d)),
        Some(true),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// http over https: certificate expiry

#[tokio::test(flavor = "multi_thread")]
async fn https_http_checks_report_the_certificate_expiry() {
    // reqwest uses the process-wide rustls provider, which the binary installs in main.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - DAY, now + 45 * DAY);
    let server = tls_server_on(listener().await, &leaf, |mut tls| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        let _ = tls.shutdown().await;
    });
    let o = run(
        "http",
        &format!(
            "url = \"https://{}/\"\ntls = {{ ca_file = {} }}\nexpect = [ {{ status = 200 }}, {{ observe = \"cert_days\", gt = 30 }} ]",
            server.addr,
            q(pki.ca_file())
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let days = number(&o, "cert_days");
    assert!((44.9..=45.0).contains(&days), "cert_days = {days}");
    assert_eq!(number(&o, "cert_expiry_timestamp"), leaf.not_after as f64);

    // Plain http has no certificate to report.
    let plain = serve(listener().await, |mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
    });
    let o = run("http", &format!("url = \"http://{}/\"", plain.addr)).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(o.observations.get("cert_days").is_none(), "{o:#?}");
}

// ---------------------------------------------------------------------------------------------
// tcp

#[tokio::test(flavor = "multi_thread")]
async fn tcp_connect_without_exchange_passes() {
    let server = serve(listener().await, hold);
    let o = run(
        "tcp",
        &format!(
            "address = {}\nexpect = [ {{ duration = \"total\", lt = \"1s\" }} ]",
            q(server.addr.to_string())
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, format!("connected to {}", server.addr));
    assert!(o.observations.get("banner").is_none());

    // A host name is resolved (localhost, through the system resolver).
    let o = run(
        "tcp",
        &format!("address = \"localhost:{}\"", server.addr.port()),
    )
    .await;
    // localhost may resolve to ::1 first, where nothing listens; 127.0.0.1 is tried next.
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_a_matching_banner_passes_and_is_observed() {
    let server = banner_server(b"SSH-2.0-test\r\n").await;
    let o = run(
        "tcp",
        &format!(
            "address = {}\nexpect_banner = '^SSH-2\\.0-'\nexpect = [ {{ observe = \"banner\", starts_with = \"SSH-2.0\" }} ]",
            q(server.addr.to_string())
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "banner"), "SSH-2.0-test");
    assert!(
        o.message.contains("banner \"SSH-2.0-test\""),
        "{}",
        o.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_send_then_expect_an_echo() {
    let server = echo_server().await;
    let o = run(
        "tcp",
        &format!(
            "address = {}\nsend = \"PING bakewatch\\r\\n\"\nexpect_banner = '^PING bakewatch\\r\\n$'",
            q(server.addr.to_string())
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "banner"), "PING bakewatch");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_a_different_banner_is_an_assertion_failure() {
    let server = banner_server(b"SSH-2.0-test\r\n").await;
    let o = run(
        "tcp",
        &format!(
            "address = {}\nexpect_banner = '^220 '\ntimeout = \"5s\"",
            q(server.addr.to_string())
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.message, "banner \"SSH-2.0-test\" does not match /^220 /");
    assert_eq!(text(&o, "banner"), "SSH-2.0-test");
    assert_eq!(o.failed_assertions.len(), 1);
    // Judged once the server went quiet, long before the timeout.
    assert!(o.duration < Duration::from_secs(2), "{:?}", o.duration);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_refused_is_reason_connect() {
    let o = run("tcp", &format!("address = \"127.0.0.1:{}\"", closed_port())).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert!(
        o.message.starts_with("connect 127.0.0.1:") && o.message.ends_with("connection refused"),
        "{}",
        o.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_a_silent_server_times_out_within_the_bound() {
    let server = serve(listener().await, hold);
    let check = load_check(
        "tcp",
        &format!(
            "address = {}\nexpect_banner = \"^220\"\ntimeout = \"500ms\"",
            q(server.addr.to_string())
        ),
    );
    let o = execute(&check).await;
    assert_timed_out_in_time(&o, Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_a_close_before_the_banner_is_a_protocol_failure() {
    let server = serve(listener().await, |s| async move { drop(s) });
    let o = run(
        "tcp",
        &format!(
            "address = {}\nexpect_banner = \"^220\"",
            q(server.addr.to_string())
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert!(
        o.message.contains("before sending a banner"),
        "{}",
        o.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_over_tls_verifies_then_exchanges() {
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - DAY, now + 30 * DAY);
    let server = tls_server_on(listener().await, &leaf, |mut tls| async move {
        let _ = tls.write_all(b"220 smtp.test ESMTP\r\n").await;
        hold(tls).await;
    });
    let addr = q(server.addr.to_string());

    let o = run(
        "tcp",
        &format!(
            "address = {addr}\nexpect_banner = \"^220 \"\ntls = {{ ca_file = {} }}",
            q(pki.ca_file())
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "banner"), "220 smtp.test ESMTP");
    assert!(o.message.contains("(TLS)"), "{}", o.message);

    // The system roots do not know the test CA: nothing is exchanged.
    let o = run(
        "tcp",
        &format!("address = {addr}\nexpect_banner = \"^220 \"\ntls = true"),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(o.message.contains("UnknownIssuer"), "{}", o.message);
    assert!(o.observations.get("banner").is_none());

    // Unless told not to verify.
    let o = run(
        "tcp",
        &format!("address = {addr}\nexpect_banner = \"^220 \"\ntls = {{ verify = false }}"),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // A name the certificate does not have.
    let o = run(
        "tcp",
        &format!(
            "address = {addr}\ntls = {{ ca_file = {}, server_name = \"other.test\" }}",
            q(pki.ca_file())
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sessions_are_never_resumed() {
    // A resumed session would report the certificate of the remembered session, not the one
    // the server presents now: every run must be a full handshake.
    let pki = Pki::new();
    let now = unix_now();
    let leaf = pki.leaf(&["127.0.0.1"], now - DAY, now + 30 * DAY);
    let kinds: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = kinds.clone();
    let server = tls_server_on(listener().await, &leaf, move |mut tls| {
        let seen = seen.clone();
        async move {
            let kind = format!("{:?}", tls.get_ref().1.handshake_kind());
            seen.lock().unwrap().push(kind);
            let _ = tls.write_all(b"220 ready\r\n").await;
            hold(tls).await;
        }
    });
    let check = load_check(
        "tcp",
        &format!(
            "address = {}\nexpect_banner = \"^220\"\ntls = {{ ca_file = {} }}",
            q(server.addr.to_string()),
            q(pki.ca_file())
        ),
    );
    for _ in 0..3 {
        assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
    }
    let check = load_check(
        "tls",
        &tls_keys(&server, &format!("ca_file = {}", q(pki.ca_file()))),
    );
    for _ in 0..2 {
        assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
    }
    // The server records the handshake once it completes; give the last one a moment.
    common::wait_until(
        "the server saw 5 handshakes",
        Duration::from_secs(5),
        async || {
            let k = kinds.lock().unwrap().clone();
            if k.len() == 5 {
                Ok(k)
            } else {
                Err(format!("{k:?}"))
            }
        },
    )
    .await;
    assert!(
        kinds.lock().unwrap().iter().all(|k| k == "Some(Full)"),
        "{:?}",
        kinds.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_recovers_when_the_server_returns() {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let banner = |mut s: TcpStream| async move {
        let _ = s.write_all(b"SSH-2.0-test\r\n").await;
        hold(s).await;
    };
    let server = serve(l, banner);
    let check = load_check(
        "tcp",
        &format!(
            "address = {}\nexpect_banner = \"^SSH-\"",
            q(addr.to_string())
        ),
    );
    assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
    server.stop().await;
    let o = execute(&check).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    let _server = serve(TcpListener::bind(addr).await.unwrap(), banner);
    assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
}

// ---------------------------------------------------------------------------------------------
// dns: a small UDP server answering from a table.

/// The records the test DNS server knows (names lower case, without the final dot).
fn zone() -> HashMap<(&'static str, RecordType), Vec<RData>> {
    let name = |s: &str| Name::from_ascii(s).unwrap();
    HashMap::from([
        (
            ("www.example.test", RecordType::A),
            vec![
                RData::A(A(Ipv4Addr::new(10, 0, 0, 5))),
                RData::A(A(Ipv4Addr::new(10, 0, 0, 6))),
            ],
        ),
        (
            ("example.test", RecordType::MX),
            vec![
                RData::MX(MX::new(10, name("mail.example.test."))),
                RData::MX(MX::new(20, name("backup.example.test."))),
            ],
        ),
        (
            ("example.test", RecordType::TXT),
            vec![RData::TXT(TXT::new(vec![
                "v=spf1 ip4:10.0.0.0/24".to_string(),
                " -all".to_string(),
            ]))],
        ),
    ])
}

/// The answer to one query message: records from [`zone`], NOERROR with no answer for a
/// known name and another type, NXDOMAIN for an unknown name.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let q = query.queries.first()?.clone();
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    let zone = zone();
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    if let Some(records) = zone.get(&(name, q.query_type())) {
        for data in records {
            response.add_answer(Record::from_rdata(q.name().clone(), 60, data.clone()));
        }
    } else if !zone.keys().any(|(n, _)| *n == name) {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response.add_query(q);
    response.to_vec().ok()
}

/// A UDP DNS server on 127.0.0.1; stops when dropped.
struct DnsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DnsServer {
    async fn start() -> DnsServer {
        DnsServer::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    async fn start_on(addr: SocketAddr) -> DnsServer {
        let socket = UdpSocket::bind(addr).await.expect("bind the DNS server");
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        DnsServer { addr, task }
    }

    /// Stops and closes the socket (waits until it is closed).
    async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn dns_keys(server: SocketAddr, name: &str, record: &str, extra: &str) -> String {
    format!(
        "query_name = {}\nrecord = {}\nserver = {}\ntimeout = \"2s\"\n{extra}",
        q(name),
        q(record),
        q(server.to_string())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_a_records_from_a_given_server() {
    let dns = DnsServer::start().await;
    let o = run("dns", &dns_keys(dns.addr, "www.example.test", "A", "")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(list(&o, "answers"), ["10.0.0.5", "10.0.0.6"]);
    assert_eq!(text(&o, "rcode"), "NOERROR");
    assert_eq!(o.message, "A www.example.test: 10.0.0.5, 10.0.0.6");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_txt_strings_are_joined_and_mx_read_like_dig() {
    let dns = DnsServer::start().await;
    let o = run("dns", &dns_keys(dns.addr, "example.test", "TXT", "")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(list(&o, "answers"), ["v=spf1 ip4:10.0.0.0/24 -all"]);

    let o = run("dns", &dns_keys(dns.addr, "example.test", "mx", "")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(
        list(&o, "answers"),
        ["10 mail.example.test.", "20 backup.example.test."]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_nxdomain_and_empty_answers_fail_with_reason_dns() {
    let dns = DnsServer::start().await;
    let o = run("dns", &dns_keys(dns.addr, "gone.example.test", "A", "")).await;
    assert_outcome(&o, Status::Fail, Reason::Dns);
    assert_eq!(text(&o, "rcode"), "NXDOMAIN");
    assert!(list(&o, "answers").is_empty());
    assert_eq!(o.message, "dns: NXDOMAIN for gone.example.test (A)");

    // The name exists, without records of this type.
    let o = run("dns", &dns_keys(dns.addr, "www.example.test", "MX", "")).await;
    assert_outcome(&o, Status::Fail, Reason::Dns);
    assert_eq!(text(&o, "rcode"), "NOERROR");
    assert_eq!(o.message, "dns: no MX records for www.example.test");

    // An expectation that the name does not exist holds.
    let o = run(
        "dns",
        &dns_keys(
            dns.addr,
            "gone.example.test",
            "A",
            "expect = [ { observe = \"rcode\", eq = \"NXDOMAIN\" } ]",
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_expect_on_answers() {
    let dns = DnsServer::start().await;
    let o = run(
        "dns",
        &dns_keys(
            dns.addr,
            "www.example.test",
            "A",
            "expect = [ { observe = \"answers\", contains = \"10.0.0.5\" }, { duration = \"total\", lt = \"1s\" } ]",
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let o = run(
        "dns",
        &dns_keys(
            dns.addr,
            "www.example.test",
            "A",
            "expect = [ { observe = \"answers\", contains = \"10.9.9.9\" } ]",
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.failed_assertions.len(), 1);

    // The same expectation on a name that vanished: the lookup is the problem.
    let o = run(
        "dns",
        &dns_keys(
            dns.addr,
            "gone.example.test",
            "A",
            "expect = [ { observe = \"answers\", contains = \"10.0.0.5\" } ]",
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Dns);
    assert!(
        o.message
            .starts_with("dns: NXDOMAIN for gone.example.test (A); "),
        "{}",
        o.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_a_server_that_is_down_fails_within_the_timeout() {
    // Nothing listens on this UDP port.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let check = load_check(
        "dns",
        &format!(
            "query_name = \"www.example.test\"\nserver = {}\ntimeout = \"1s\"",
            q(addr.to_string())
        ),
    );
    let o = execute(&check).await;
    // Nothing answers (the ICMP "port unreachable" does not reach an unconnected UDP
    // socket): the check's timeout ends the run.
    assert_timed_out_in_time(&o, Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_recovers_when_the_server_returns() {
    let dns = DnsServer::start().await;
    let addr = dns.addr;
    let check = load_check(
        "dns",
        &format!(
            "query_name = \"www.example.test\"\nserver = {}\ntimeout = \"1s\"",
            q(addr.to_string())
        ),
    );
    assert_outcome(&execute(&check).await, Status::Pass, Reason::Ok);
    dns.stop().await;
    let o = execute(&check).await;
    assert_eq!(o.status, Status::Fail, "{o:#?}");
    let _dns = DnsServer::start_on(addr).await;
    // Nothing was cached: the live answer is seen again at once.
    let o = execute(&check).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(list(&o, "answers"), ["10.0.0.5", "10.0.0.6"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_the_system_resolver_finds_localhost() {
    let o = run("dns", "query_name = \"localhost\"\ntimeout = \"5s\"").await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(list(&o, "answers"), ["127.0.0.1"]);
    assert_eq!(text(&o, "rcode"), "NOERROR");
    assert!(IpAddr::V4(Ipv4Addr::LOCALHOST).to_string() == list(&o, "answers")[0]);
}

// ---------------------------------------------------------------------------------------------
// validate: bad configs are located and explained

/// Runs `validate` on one check file; returns its output.
async fn validate(checks: &str) -> CliOutput {
    let dir = write_config("checks = [\"checks/*.toml\"]\n", &[("a.toml", checks)]);
    run_cli_async(&["validate", "-c", "bakewatch.toml"], dir.path(), &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_reports_bad_net_check_configs() {
    let checks = r#"[[check]]
name = "no-port"
type = "tcp"
address = "localhost"

[[check]]
name = "bad-record"
type = "dns"
query_name = "example.test"
record = "AAA"

[[check]]
name = "bad-server"
type = "dns"
query_name = "example.test"
server = "dns.example.test"

[[check]]
name = "no-ca"
type = "tls"
address = "127.0.0.1:443"
ca_file = "/nonexistent/bakewatch/ca.pem"

[[check]]
name = "bad-banner"
type = "tcp"
address = "127.0.0.1:25"
expect_banner = "(220"
tls = { verfy = false }

[[check]]
name = "no-address"
type = "tls"
server_name = "example.test"

[[check]]
name = "wrong-observation"
type = "tcp"
address = "127.0.0.1:22"
expect = [ { observe = "cert_days", gt = 1 } ]
"#;
    let out = validate(checks).await;
    assert_eq!(out.code, Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expected: &[(&str, &[&str])] = &[
        (
            "checks/a.toml:4:11: ",
            &["address", "\"localhost\" has no port"],
        ),
        (
            "checks/a.toml:10:10: ",
            &[
                "record",
                "unknown record type \"AAA\"",
                "did you mean \"AAAA\"?",
            ],
        ),
        (
            "checks/a.toml:16:10: ",
            &["server", "\"dns.example.test\" is not an IP address"],
        ),
        (
            "checks/a.toml:22:11: ",
            &["ca_file", "cannot read /nonexistent/bakewatch/ca.pem"],
        ),
        ("checks/a.toml:28:17: ", &["expect_banner", "invalid regex"]),
        (
            "checks/a.toml:29:9: ",
            &["unknown key `verfy` in tls", "did you mean `verify`?"],
        ),
        ("checks/a.toml:", &["missing required key `address`"]),
        ("checks/a.toml:40:", &["cert_days"]),
    ];
    for (prefix, words) in expected {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(prefix) && words.iter().all(|w| l.contains(w))),
            "no line {prefix}… with {words:?}:\n{out}"
        );
    }
    // One line per mistake, plus the summary.
    assert_eq!(lines.len(), expected.len() + 1, "{out}");
}
