//! The `tls` check: connect, complete a TLS handshake whatever the certificate, then judge
//! the chain and report the site's own leaf certificate (expiry, issuer, subject, SAN), so an
//! expired or untrusted certificate still shows when it expires. Also the TLS pieces other
//! types share: the one rustls crypto provider, trust from `ca_file` or the system, the
//! client side of `tcp`'s `tls` option, and certificate parsing (`http` over https reports
//! expiry with [`leaf_expiry`]).
//!
//! How "recorded, not enforced" verification works: the handshake runs with a verifier that
//! accepts any chain but still checks the server's handshake signatures (so the server holds
//! the certificate's key); right after it, the real verifier (platform roots, or `ca_file`)
//! judges the presented chain for the configured name. Nothing is stored in shared state, so
//! concurrent runs of one check cannot see each other's results.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::assert::Measured;
use super::assert::{Assertion, QueryScope};
use super::outcome::{Observation, Observations, Outcome, Reason};
use super::tcp::Address;
use crate::config::reader::{At, Cx, TableReader, Value, type_name};
use crate::metrics::CERT_EXPIRY_OBSERVATION;

/// What `expect` may ask of a tls check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &[
        "cert_days",
        "issuer",
        "subject",
        "san",
        "verified",
        CERT_EXPIRY_OBSERVATION,
    ],
};

/// A validated tls check, its client config built once.
#[derive(Debug)]
pub struct TlsSpec {
    address: Address,
    server_name: ServerName<'static>,
    verify: bool,
    /// Completes the handshake whatever the chain (see the module docs).
    config: Arc<ClientConfig>,
    /// Judges the chain after the handshake.
    verifier: Arc<dyn ServerCertVerifier>,
}

impl TlsSpec {
    /// Reads the tls keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<TlsSpec> {
        let address: Option<At<Address>> = t.req("address", cx);
        let server_name = t.opt::<At<String>>("server_name", cx);
        let ca_file = t.opt::<At<PathBuf>>("ca_file", cx);
        let verify = t.or("verify", true, cx);
        let server_name = match (server_name, &address) {
            (Some(s), _) => parse_server_name(&s.value)
                .map_err(|m| cx.error(s.span, format!("server_name: {m}")))
                .ok(),
            (None, Some(a)) => parse_server_name(&a.value.host)
                .map_err(|m| cx.error(a.span.clone(), format!("address: {m}")))
                .ok(),
            (None, None) => None,
        };
        let verifier = trust(ca_file.as_ref(), t.span_of("address"), cx);
        let config = client_config(Arc::new(HandshakeOnly(provider())), t.span.clone(), cx);
        Some(TlsSpec {
            address: address?.value,
            server_name: server_name?,
            verify,
            config: config?,
            verifier: verifier?,
        })
    }

    /// One run: connect, handshake, judge the chain, report the leaf.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let tcp = match self.address.connect().await {
            Ok(s) => s,
            Err((reason, message)) => return Outcome::fail(reason, message),
        };
        let tls = match TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return Outcome::fail(
                    Reason::Tls,
                    format!(
                        "tls handshake with {}: {}",
                        self.address,
                        handshake_error(&e)
                    ),
                );
            }
        };
        let total = start.elapsed();
        let chain: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        // Nothing more is said on this connection.
        drop(tls);
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Outcome::fail(Reason::Tls, "the server presented no certificate");
        };
        let cert = match CertInfo::parse(leaf) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::fail(
                    Reason::Tls,
                    format!("the server's certificate cannot be parsed: {e}"),
                );
            }
        };
        let now = unix_now();
        let problem = self
            .verifier
            .verify_server_cert(leaf, intermediates, &self.server_name, &[], UnixTime::now())
            .err()
            .map(|e| describe_failure(&e, &cert, &self.server_name, now));

        let mut observations = Observations::default();
        expiry_observations(&mut observations, cert.not_after, now);
        observations.set("issuer", Observation::Text(cert.issuer.clone()));
        observations.set("subject", Observation::Text(cert.subject.clone()));
        observations.set("san", Observation::List(cert.san.clone()));
        observations.set("verified", Observation::Bool(problem.is_none()));
        let probed = Measured {
            total,
            observations,
        };
        match problem {
            Some(problem) if self.verify => {
                let mut o = Outcome::fail(Reason::Tls, problem);
                o.observations = probed.observations;
                o
            }
            problem => {
                let mut message = format!(
                    "certificate {} {}",
                    cert.subject,
                    expiry_text(cert.not_after - now)
                );
                if let Some(p) = problem {
                    message.push_str(&format!(" (not verified: {p})"));
                }
                probed.judged(expect, message)
            }
        }
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared TLS setup

/// The one rustls crypto provider every config of this module is built with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// A client config over `verifier`, with the provider's safe default protocol versions and
/// no session resumption: every run is a full handshake, so it sees the certificate the
/// server presents now, not the one of a remembered session.
fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
    span: std::ops::Range<usize>,
    cx: &mut Cx,
) -> Option<Arc<ClientConfig>> {
    match ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(b) => {
            let mut config = b
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            Some(Arc::new(config))
        }
        Err(e) => {
            cx.error(span, format!("cannot set up TLS: {e}"));
            None
        }
    }
}

/// The verifier of what a check trusts: exactly the certificates of `ca_file` (a private CA
/// replaces the system roots, as in `http`), else the platform's roots.
fn trust(
    ca_file: Option<&At<PathBuf>>,
    span: std::ops::Range<usize>,
    cx: &mut Cx,
) -> Option<Arc<dyn ServerCertVerifier>> {
    let Some(ca) = ca_file else {
        return match rustls_platform_verifier::Verifier::new(provider()) {
            Ok(v) => Some(Arc::new(v)),
            Err(e) => {
                cx.error(
                    span,
                    format!(
                        "cannot load the system's CA certificates ({e}); install ca-certificates or give `ca_file`"
                    ),
                );
                None
            }
        };
    };
    let path = ca.value.display();
    let pem = match std::fs::read(&ca.value) {
        Ok(b) => b,
        Err(e) => {
            cx.error(
                ca.span.clone(),
                format!("ca_file: cannot read {path}: {}", e.kind()),
            );
            return None;
        }
    };
    let mut roots = RootCertStore::empty();
    let mut bad = None;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        match cert
            .map_err(|e| e.to_string())
            .and_then(|c| roots.add(c).map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            Err(e) => {
                bad.get_or_insert(e);
            }
        }
    }
    if let Some(e) = bad {
        cx.error(ca.span.clone(), format!("ca_file: {path}: {e}"));
        return None;
    }
    if roots.is_empty() {
        cx.error(
            ca.span.clone(),
            format!("ca_file: {path} holds no PEM certificate"),
        );
        return None;
    }
    match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build() {
        Ok(v) => Some(v),
        Err(e) => {
            cx.error(ca.span.clone(), format!("ca_file: {path}: {e}"));
            None
        }
    }
}

/// A server name for SNI and verification: a DNS name or an IP address (brackets allowed).
fn parse_server_name(s: &str) -> Result<ServerName<'static>, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("{s:?} is not a valid DNS name or IP address"))
}

/// What went wrong in a handshake, in one short phrase.
fn handshake_error(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".to_string()
        }
        None => super::tcp::io_text(e),
    }
}

/// Accepts any certificate chain but checks the handshake signatures with the provider's
/// algorithms (the peer must hold the key of the certificate it shows); the chain itself is
/// judged by the caller after the handshake, or not at all (`verify = false` elsewhere).
#[derive(Debug)]
pub(crate) struct HandshakeOnly(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for HandshakeOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client side of `tcp`'s `tls` option: `tls = true` or
/// `tls = { server_name, ca_file, verify = true }` (`tls = false`, plain TCP, is handled by
/// the caller). Unlike the `tls` check, verification is
/// enforced during the handshake: nothing is sent to a server that failed it.
#[derive(Debug)]
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// Reads the option; `host` (of the check's address) is the default server name.
    pub(crate) fn parse(v: &Value<'_>, host: &str, cx: &mut Cx) -> Option<TlsClient> {
        let (server_name, ca_file, verify) = match v.get_ref() {
            toml::de::DeValue::Boolean(true) => (None, None, true),
            toml::de::DeValue::Table(_) => {
                let mut t = TableReader::new(v, "tls", cx)?;
                let server_name = t.opt::<At<String>>("server_name", cx);
                let ca_file = t.opt::<At<PathBuf>>("ca_file", cx);
                let verify = t.or("verify", true, cx);
                t.finish(cx);
                (server_name, ca_file, verify)
            }
            other => {
                cx.error(
                    v.span(),
                    format!(
                        "tls: expected true, false or a table {{ server_name, ca_file, verify }}, found {}",
                        type_name(other)
                    ),
                );
                return None;
            }
        };
        let server_name = match server_name {
            Some(s) => parse_server_name(&s.value)
                .map_err(|m| cx.error(s.span, format!("server_name: {m}")))
                .ok(),
            None => parse_server_name(host)
                .map_err(|m| cx.error(v.span(), format!("tls: {m}")))
                .ok(),
        };
        let verifier: Arc<dyn ServerCertVerifier> = if verify {
            trust(ca_file.as_ref(), v.span(), cx)?
        } else {
            // `ca_file` is still read above, so a mistake in it is reported either way.
            if let Some(ca) = &ca_file {
                trust(Some(ca), v.span(), cx)?;
            }
            Arc::new(HandshakeOnly(provider()))
        };
        let config = client_config(verifier, v.span(), cx)?;
        Some(TlsClient {
            config,
            server_name: server_name?,
        })
    }

    /// The TLS handshake over a connected socket; the error is a short phrase.
    pub(crate) async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| handshake_error(&e))
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// What bakewatch reports of a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// notAfter, Unix seconds.
    pub(crate) not_after: i64,
    pub(crate) issuer: String,
    pub(crate) subject: String,
    /// DNS names, then IP addresses, of the subjectAltName extension.
    pub(crate) san: Vec<String>,
}

impl CertInfo {
    pub(crate) fn parse(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns.push(n.to_string()),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            ips.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        dns.extend(ips);
        Ok(CertInfo {
            not_after: cert.validity().not_after.timestamp(),
            issuer: cert.issuer().to_string(),
            subject: cert.subject().to_string(),
            san: dns,
        })
    }
}

/// notAfter (Unix seconds) of a DER certificate, None when it does not parse. For `http`
/// over https, which reads the leaf from reqwest's TLS info.
pub(crate) fn leaf_expiry(der: &[u8]) -> Option<i64> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp())
}

/// Sets `cert_days` (days until notAfter, two decimals, negative when expired) and
/// `cert_expiry_timestamp` (notAfter in Unix seconds, feeding
/// `bakewatch_cert_expiry_timestamp_seconds`).
pub(crate) fn expiry_observations(o: &mut Observations, not_after: i64, now: i64) {
    let days = (not_after - now) as f64 / 86_400.0;
    o.set(
        "cert_days",
        Observation::Number((days * 100.0).trunc() / 100.0),
    );
    o.set(
        CERT_EXPIRY_OBSERVATION,
        Observation::Number(not_after as f64),
    );
}

/// Seconds since the epoch, now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// "expires in 29 days" / "expired 3 days ago".
fn expiry_text(secs_left: i64) -> String {
    if secs_left >= 0 {
        format!("expires in {}", span_text(secs_left))
    } else {
        format!("expired {} ago", span_text(-secs_left))
    }
}

/// A span of seconds in the largest whole unit: "3 days", "5 hours", "1 minute".
fn span_text(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 => (s / 3_600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// One line naming what is wrong with a chain that failed verification.
fn describe_failure(
    e: &rustls::Error,
    cert: &CertInfo,
    server_name: &ServerName<'_>,
    now: i64,
) -> String {
    let rustls::Error::InvalidCertificate(ce) = e else {
        return format!("verification failed: {e}");
    };
    match ce {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            if cert.not_after < now {
                format!("certificate {}", expiry_text(cert.not_after - now))
            } else {
                // The leaf is current: something else in the chain has expired.
                "a certificate in the chain has expired".to_string()
            }
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not valid yet".to_string()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let names = if cert.san.is_empty() {
                cert.subject.clone()
            } else {
                cert.san.join(", ")
            };
            format!(
                "name mismatch: cert is for {names}, not {}",
                server_name.to_str()
            )
        }
        other => {
            let by = if cert.issuer == cert.subject {
                "self-signed".to_string()
            } else {
                format!("issued by {}", cert.issuer)
            };
            match other {
                CertificateError::Other(e) => format!("untrusted: {e} ({by})"),
                e => format!("untrusted: {e:?} ({by})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(expiry_text(3 * 86_400 + 5), "expires in 3 days");
        assert_eq!(expiry_text(-86_400), "expired 1 day ago");
        assert_eq!(expiry_text(-7_200), "expired 2 hours ago");
        assert_eq!(expiry_text(59), "expires in 59 seconds");
    }

    #[test]
    fn cert_days_truncate_to_two_decimals() {
        let mut o = Observations::default();
        expiry_observations(&mut o, 1_000 + 30 * 86_400 - 1, 1_000);
        assert_eq!(o.get("cert_days"), Some(&Observation::Number(29.99)));
        expiry_observations(&mut o, 1_000 - 3 * 86_400 - 1, 1_000);
        assert_eq!(o.get("cert_days"), Some(&Observation::Number(-3.0)));
        assert_eq!(
            o.get(CERT_EXPIRY_OBSERVATION),
            Some(&Observation::Number((1_000 - 3 * 86_400 - 1) as f64))
        );
    }

    #[test]
    fn server_names_accept_dns_names_and_ips() {
        assert!(parse_server_name("example.com").is_ok());
        assert!(parse_server_name("127.0.0.1").is_ok());
        assert!(parse_server_name("[::1]").is_ok());
        assert!(parse_server_name("bad name").is_err());
    }
}
