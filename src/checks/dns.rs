//! The `dns` check: resolve `query_name` for one record type and report the answers and the
//! response code.
//!
//! Which resolver answers:
//! - no `server`, record A or AAAA: the system resolver (`getaddrinfo`, through tokio), exactly
//!   what the service itself would get: `/etc/hosts`, nsswitch, the configured name servers.
//!   getaddrinfo has no response code; `rcode` is derived from its result (a name that does
//!   not exist reads NXDOMAIN, a temporary failure SERVFAIL);
//! - no `server`, other record types: hickory with the system's `/etc/resolv.conf`, re-read
//!   each run;
//! - `server = "ip[:port]"`: hickory asking exactly that server (UDP, TCP when the answer is
//!   truncated), the name taken as fully qualified.
//!
//! No answer is ever cached across runs: the hickory resolver is built for each run (cheap,
//! no I/O; its settings are validated and prepared at load), so every run sees the live
//! answer and a fresh socket. A server that never answers (or is down: over UDP that looks
//! the same) fails with reason `timeout` — the check's timeout, or hickory giving up after
//! 5 s per attempt and its retries, whichever ends first; any other failure to get an answer
//! is reason `dns`.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::assert::Measured;
use super::assert::{Assertion, QueryScope};
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use crate::config::reader::{At, Cx, TableReader, closest};

/// What `expect` may ask of a dns check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["answers", "rcode"],
};

/// The record types a check may ask for.
const RECORDS: &[(&str, RecordType)] = &[
    ("A", RecordType::A),
    ("AAAA", RecordType::AAAA),
    ("CNAME", RecordType::CNAME),
    ("MX", RecordType::MX),
    ("TXT", RecordType::TXT),
    ("SRV", RecordType::SRV),
    ("NS", RecordType::NS),
];

/// Answers named in a message before "(+N more)".
const SHOWN_ANSWERS: usize = 5;

/// A validated dns check.
#[derive(Debug)]
pub struct DnsSpec {
    name: String,
    record: RecordType,
    via: Via,
}

#[derive(Debug)]
enum Via {
    /// getaddrinfo (A / AAAA without `server`).
    System,
    /// hickory with `/etc/resolv.conf`.
    SystemConf,
    /// hickory against one server.
    Server(Box<ServerQuery>),
}

/// Everything needed to build a resolver for one server.
#[derive(Debug)]
struct ServerQuery {
    addr: SocketAddr,
    fqdn: Name,
    config: ResolverConfig,
    opts: ResolverOpts,
}

/// What came back from a resolver.
struct Answer {
    rcode: Option<String>,
    answers: Vec<String>,
}

impl DnsSpec {
    /// Reads the dns keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<DnsSpec> {
        // `name` is the check's own name: the name to resolve is `query_name` (as in the
        // blackbox exporter's dns prober).
        if !t.has("query_name") {
            cx.error(
                t.span.clone(),
                format!(
                    "{} is missing required key `query_name` (the domain name to resolve; `name` is the check's own name)",
                    t.what()
                ),
            );
        }
        let name = t.opt::<At<String>>("query_name", cx).and_then(|n| {
            let trimmed = n.value.trim();
            let valid = !trimmed.is_empty() && trimmed != "." && Name::from_utf8(trimmed).is_ok();
            if valid {
                Some(trimmed.to_string())
            } else {
                cx.error(
                    n.span,
                    format!("query_name: {:?} is not a valid domain name", n.value),
                );
                None
            }
        });
        let record = match t.opt::<At<String>>("record", cx) {
            None => Some(RecordType::A),
            Some(r) => {
                let upper = r.value.to_ascii_uppercase();
                match RECORDS.iter().find(|(n, _)| *n == upper) {
                    Some((_, rt)) => Some(*rt),
                    None => {
                        let names: Vec<&str> = RECORDS.iter().map(|(n, _)| *n).collect();
                        let hint = closest(&upper, &names)
                            .map(|k| format!("did you mean {k:?}? "))
                            .unwrap_or_default();
                        cx.error(
                            r.span,
                            format!(
                                "record: unknown record type {:?} ({hint}expected one of {})",
                                r.value,
                                names.join(", ")
                            ),
                        );
                        None
                    }
                }
            }
        };
        let server = t.opt::<At<String>>("server", cx).map(|s| {
            parse_server(&s.value)
                .map_err(|m| cx.error(s.span, format!("server: {m}")))
                .ok()
        });
        let (name, record) = (name?, record?);
        let via = match server {
            None if matches!(record, RecordType::A | RecordType::AAAA) => Via::System,
            None => Via::SystemConf,
            Some(addr) => {
                let addr = addr?;
                let mut fqdn = Name::from_utf8(&name).ok()?;
                fqdn.set_fqdn(true);
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
                let mut opts = ResolverOpts::default();
                fresh_answers(&mut opts);
                opts.num_concurrent_reqs = 1;
                Via::Server(Box::new(ServerQuery {
                    addr,
                    fqdn,
                    config,
                    opts,
                }))
            }
        };
        Some(DnsSpec { name, record, via })
    }

    /// One run: ask, then judge the answers.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let answer = match &self.via {
            Via::System => self.getaddrinfo().await,
            Via::SystemConf => match TokioResolver::builder_tokio() {
                Ok(mut b) => {
                    fresh_answers(b.options_mut());
                    match b.build() {
                        Ok(r) => {
                            ask(
                                &r,
                                self.name.as_str(),
                                self.record,
                                "the system's name servers",
                            )
                            .await
                        }
                        Err(e) => Err((
                            Reason::Internal,
                            format!("dns: cannot set up the resolver: {e}"),
                        )),
                    }
                }
                Err(e) => {
                    return Outcome::error(
                        Reason::Config,
                        format!("dns: cannot read the system resolver configuration: {e}"),
                    );
                }
            },
            Via::Server(server) => {
                let ServerQuery {
                    addr,
                    fqdn,
                    config,
                    opts,
                } = server.as_ref();
                let built = hickory_resolver::Resolver::builder_with_config(
                    config.clone(),
                    TokioRuntimeProvider::default(),
                )
                .with_options(opts.clone())
                .build();
                match built {
                    Ok(r) => ask(&r, fqdn.clone(), self.record, &addr.to_string()).await,
                    Err(e) => Err((
                        Reason::Internal,
                        format!("dns: cannot set up the resolver: {e}"),
                    )),
                }
            }
        };
        let Answer { rcode, answers } = match answer {
            Ok(a) => a,
            Err((reason, message)) => return Outcome::fail(reason, message),
        };
        let record = self.record.to_string();
        let mut observations = Observations::default();
        observations.set("answers", Observation::List(answers.clone()));
        if let Some(rcode) = &rcode {
            observations.set("rcode", Observation::Text(rcode.clone()));
        }
        let probed = Measured {
            total: start.elapsed(),
            observations,
        };
        // Why an empty answer is empty, for messages.
        let empty = match rcode.as_deref() {
            Some("NOERROR") | None => format!("no {record} records for {}", self.name),
            Some(code) => format!("{code} for {} ({record})", self.name),
        };
        if answers.is_empty() && expect.is_empty() {
            let mut o = Outcome::fail(Reason::Dns, format!("dns: {empty}"));
            o.observations = probed.observations;
            return o;
        }
        let mut shown = answers
            .iter()
            .take(SHOWN_ANSWERS)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if answers.len() > SHOWN_ANSWERS {
            shown.push_str(&format!(" (+{} more)", answers.len() - SHOWN_ANSWERS));
        }
        let mut o = probed.judged(expect, format!("{record} {}: {shown}", self.name));
        if answers.is_empty() {
            match o.status {
                // An expectation on an empty answer failed: the lookup itself is the problem.
                Status::Fail => {
                    o.reason = Reason::Dns;
                    o.message = format!("dns: {empty}; {}", o.message);
                }
                // `expect` accepted an empty answer (e.g. `rcode eq "NXDOMAIN"`).
                Status::Pass => o.message = empty,
                _ => {}
            }
        }
        o
    }

    /// A / AAAA through getaddrinfo.
    async fn getaddrinfo(&self) -> Result<Answer, (Reason, String)> {
        match tokio::net::lookup_host((self.name.as_str(), 0)).await {
            Ok(addrs) => {
                let mut answers: Vec<String> = Vec::new();
                for a in addrs {
                    let wanted = match a.ip() {
                        IpAddr::V4(_) => self.record == RecordType::A,
                        IpAddr::V6(_) => self.record == RecordType::AAAA,
                    };
                    let text = a.ip().to_string();
                    if wanted && !answers.contains(&text) {
                        answers.push(text);
                    }
                }
                Ok(Answer {
                    rcode: Some("NOERROR".to_string()),
                    answers,
                })
            }
            Err(e) => {
                let text = e.to_string();
                let text = text
                    .strip_prefix("failed to lookup address information: ")
                    .unwrap_or(&text)
                    .to_string();
                // glibc's gai_strerror texts for EAI_NONAME, EAI_NODATA and EAI_AGAIN.
                let rcode = if text.contains("not known") {
                    "NXDOMAIN"
                } else if text.contains("No address associated") {
                    "NOERROR"
                } else if text.contains("Temporary failure") {
                    "SERVFAIL"
                } else {
                    return Err((
                        Reason::Dns,
                        format!("dns: cannot resolve {}: {text}", self.name),
                    ));
                };
                Ok(Answer {
                    rcode: Some(rcode.to_string()),
                    answers: Vec::new(),
                })
            }
        }
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Options so a resolver never answers from a cache or the hosts file.
fn fresh_answers(opts: &mut ResolverOpts) {
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
}

/// One lookup through hickory; `server` names who was asked, for messages.
async fn ask(
    resolver: &TokioResolver,
    name: impl hickory_resolver::proto::rr::IntoName,
    record: RecordType,
    server: &str,
) -> Result<Answer, (Reason, String)> {
    match resolver.lookup(name, record).await {
        Ok(lookup) => Ok(Answer {
            rcode: Some(rcode_text(lookup.message().metadata.response_code)),
            answers: lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == record)
                .map(|r| rdata_text(&r.data))
                .collect(),
        }),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => Ok(Answer {
            rcode: Some(rcode_text(nr.response_code)),
            answers: Vec::new(),
        }),
        Err(NetError::Dns(DnsError::ResponseCode(code))) => Ok(Answer {
            rcode: Some(rcode_text(code)),
            answers: Vec::new(),
        }),
        Err(NetError::Timeout) => Err((
            Reason::Timeout,
            format!("dns: no answer from {server} (timed out)"),
        )),
        Err(e) => Err((Reason::Dns, format!("dns: asking {server}: {e}"))),
    }
}

/// The mnemonic of a response code, as dig prints it.
fn rcode_text(code: ResponseCode) -> String {
    let known = match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        other => return format!("RCODE{}", u16::from(other)),
    };
    known.to_string()
}

/// One answer as text: an address, a name, "10 mail.example." (MX), "prio weight port
/// target" (SRV), or a TXT record's strings joined.
fn rdata_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect::<String>(),
        other => other.to_string(),
    }
}

/// `ip`, `ip:port`, `[v6]` or `[v6]:port`; the port defaults to 53.
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let addr = if let Ok(a) = s.parse::<SocketAddr>() {
        a
    } else if let Ok(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s)
        .parse::<IpAddr>()
    {
        SocketAddr::new(ip, 53)
    } else {
        return Err(format!(
            "{s:?} is not an IP address with an optional port (e.g. \"10.0.0.53\" or \"127.0.0.1:5353\")"
        ));
    };
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0 is not a DNS server port"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_default_port() {
        assert_eq!(
            parse_server("10.0.0.53").unwrap().to_string(),
            "10.0.0.53:53"
        );
        assert_eq!(
            parse_server("127.0.0.1:5353").unwrap().to_string(),
            "127.0.0.1:5353"
        );
        assert_eq!(parse_server("[::1]").unwrap().to_string(), "[::1]:53");
        assert_eq!(parse_server("::1").unwrap().to_string(), "[::1]:53");
        assert_eq!(parse_server("[::1]:54").unwrap().to_string(), "[::1]:54");
        for bad in ["dns.example", "10.0.0.53:x", "10.0.0.53:0", ""] {
            assert!(parse_server(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rcodes_read_like_dig() {
        assert_eq!(rcode_text(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_text(ResponseCode::NoError), "NOERROR");
        assert_eq!(rcode_text(ResponseCode::ServFail), "SERVFAIL");
    }
}
