//! The `memcached` check: a fresh TCP connection per run, then `version` and a set / get /
//! delete round trip on a unique key with a TTL, over the text protocol. The four commands go
//! out in one write and the replies are read in order, every line bounded in length.

use std::time::Instant;

use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWriteExt};

use super::assert::{Assertion, Measured, QueryScope, judge};
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use super::redis::{Endpoint, Fault, conversation_fault, peek_timeout, read_line, show};
use crate::config::reader::{At, Cx, TableReader};

/// What `expect` may ask of a memcached check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["version"],
};

/// Default prefix of the round-trip key.
pub const DEFAULT_KEY_PREFIX: &str = "bakewatch:";

/// memcached's longest key.
const MAX_KEY: usize = 250;

/// Length of the random part of the key, and of the value.
const RANDOM_LEN: usize = 16;

/// Longest reply line accepted (the longest legitimate one is a `VALUE` line with a 250-byte key).
const MAX_LINE: usize = 2048;

/// TTL when the check's timeout comes from `[defaults]` (which a check type does not see).
const FALLBACK_TTL_SECS: u64 = 60;

/// memcached's clock ticks once a second and an item expires when the tick reaches its
/// expiry: a TTL of 1 s could expire between the set and the get.
const MIN_TTL_SECS: u64 = 3;

/// A validated memcached check.
#[derive(Debug)]
pub struct MemcachedSpec {
    endpoint: Endpoint,
    key_prefix: String,
    ttl_secs: u64,
}

impl MemcachedSpec {
    /// memcached's text protocol has no credentials.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }

    /// Reads the memcached keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<MemcachedSpec> {
        let endpoint = t.req::<At<String>>("address", cx).and_then(|a| {
            Endpoint::parse_address(&a.value)
                .map_err(|m| cx.error(a.span, format!("address: {m}")))
                .ok()
        });
        let key_prefix = match t.opt::<At<String>>("key_prefix", cx) {
            None => Some(DEFAULT_KEY_PREFIX.to_string()),
            Some(p) => {
                if p.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    cx.error(
                        p.span,
                        "key_prefix: memcached keys cannot hold spaces or control characters",
                    );
                    None
                } else if p.value.len() + RANDOM_LEN > MAX_KEY {
                    cx.error(
                        p.span,
                        format!(
                            "key_prefix: longer than {} bytes (memcached keys are at most {MAX_KEY})",
                            MAX_KEY - RANDOM_LEN
                        ),
                    );
                    None
                } else {
                    Some(p.value)
                }
            }
        };
        let ttl_secs = peek_timeout(t)
            .map_or(FALLBACK_TTL_SECS, |d| (d * 2).as_secs_f64().ceil() as u64)
            .max(MIN_TTL_SECS);
        Some(MemcachedSpec {
            endpoint: endpoint?,
            key_prefix: key_prefix?,
            ttl_secs,
        })
    }

    /// One run: connect, send every command at once, check the replies in order.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let mut observations = Observations::default();
        let result = self.exchange(&mut observations).await;
        let total = start.elapsed();
        if let Err(fault) = result {
            let mut o = Outcome::fail(fault.reason, fault.message);
            o.observations = observations;
            return o;
        }
        let subject = Measured {
            observations,
            total,
        };
        let j = judge(expect, &subject, false);
        let mut o = Outcome::new(j.status, j.reason, j.message);
        if j.status == Status::Pass {
            o.message = "set, get and delete ok".to_string();
        }
        o.failed_assertions = j.failures;
        o.observations = subject.observations;
        o
    }

    async fn exchange(&self, observations: &mut Observations) -> Result<(), Fault> {
        let mut stream = self.endpoint.connect().await?;
        let key = format!("{}{:016x}", self.key_prefix, rand::random::<u64>());
        let value = format!("{:016x}", rand::random::<u64>());
        let request = format!(
            "version\r\nset {key} 0 {ttl} {len}\r\n{value}\r\nget {key}\r\ndelete {key}\r\n",
            ttl = self.ttl_secs,
            len = value.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| conversation_fault(&e))?;
        let mut r = tokio::io::BufReader::new(stream);
        let mut line = Vec::new();

        let reply = next_line(&mut r, &mut line, "version").await?;
        match reply.strip_prefix(b"VERSION ") {
            Some(v) => observations.set(
                "version",
                Observation::Text(String::from_utf8_lossy(v).trim().to_string()),
            ),
            None => return Err(unexpected("version", reply)),
        }

        let reply = next_line(&mut r, &mut line, "set").await?;
        if reply != b"STORED" {
            return Err(unexpected("set", reply));
        }

        let reply = next_line(&mut r, &mut line, "get").await?;
        if reply == b"END" {
            return Err(Fault::new(
                Reason::Protocol,
                "protocol: get found nothing for the key just set",
            ));
        }
        let len = value_header(reply, &key).ok_or_else(|| unexpected("get", reply))?;
        if len != value.len() {
            return Err(Fault::new(
                Reason::Protocol,
                format!(
                    "protocol: get returned {len} bytes, not the {} just set",
                    value.len()
                ),
            ));
        }
        let mut data = vec![0; len + 2];
        r.read_exact(&mut data)
            .await
            .map_err(|e| conversation_fault(&e))?;
        if !data.ends_with(b"\r\n") {
            return Err(Fault::new(
                Reason::Protocol,
                "protocol: the value returned by get does not end with CRLF",
            ));
        }
        if &data[..len] != value.as_bytes() {
            return Err(Fault::new(
                Reason::Protocol,
                format!(
                    "protocol: get returned {}, not the value just set",
                    show(&data[..len])
                ),
            ));
        }
        let reply = next_line(&mut r, &mut line, "get").await?;
        if reply != b"END" {
            return Err(unexpected("get", reply));
        }

        let reply = next_line(&mut r, &mut line, "delete").await?;
        // NOT_FOUND: the item went between get and delete (evicted, flushed); nothing is left.
        if reply != b"DELETED" && reply != b"NOT_FOUND" {
            return Err(unexpected("delete", reply));
        }
        Ok(())
    }
}

/// Reads the next reply line (without CRLF); an error line becomes a fault at once.
async fn next_line<'l, R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &'l mut Vec<u8>,
    cmd: &str,
) -> Result<&'l [u8], Fault> {
    read_line(r, line, MAX_LINE)
        .await
        .map_err(|f| f.context(&format!("before the reply to {cmd}")))?;
    let text = &line[..line.len() - 2];
    if let Some(msg) = text.strip_prefix(b"SERVER_ERROR") {
        // The server understood and could not do it (out of memory, too large): like a
        // failed query.
        return Err(Fault::new(
            Reason::Query,
            format!(
                "query: {cmd}: SERVER_ERROR{}",
                String::from_utf8_lossy(msg).trim_end()
            ),
        ));
    }
    if text == b"CLIENT_ERROR unauthenticated" {
        // memcached started with an auth file (`-Y`): this check has no credentials to give.
        return Err(Fault::new(
            Reason::Auth,
            format!(
                "auth: {cmd}: CLIENT_ERROR unauthenticated (the server requires authentication)"
            ),
        ));
    }
    if text.starts_with(b"CLIENT_ERROR") || text == b"ERROR" {
        // Well-formed commands refused: not the memcached text protocol we speak.
        return Err(Fault::new(
            Reason::Protocol,
            format!("protocol: {cmd}: {}", show(text)),
        ));
    }
    Ok(text)
}

fn unexpected(cmd: &str, reply: &[u8]) -> Fault {
    Fault::new(
        Reason::Protocol,
        format!("protocol: unexpected reply to {cmd}: {}", show(reply)),
    )
}

/// The byte count of `VALUE <key> <flags> <bytes> [<cas>]` for our key.
fn value_header(line: &[u8], key: &str) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    if parts.next()? != "VALUE" || parts.next()? != key {
        return None;
    }
    parts.next()?.parse::<u32>().ok()?;
    let len = parts.next()?.parse::<usize>().ok()?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(len),
        (Some(cas), None) if cas.parse::<u64>().is_ok() => Some(len),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_headers_parse() {
        assert_eq!(value_header(b"VALUE k 0 16", "k"), Some(16));
        assert_eq!(value_header(b"VALUE k 0 16 42", "k"), Some(16));
        assert_eq!(value_header(b"VALUE other 0 16", "k"), None);
        assert_eq!(value_header(b"VALUE k x 16", "k"), None);
        assert_eq!(value_header(b"VALUE k 0 16 42 extra", "k"), None);
        assert_eq!(value_header(b"STORED", "k"), None);
    }
}
