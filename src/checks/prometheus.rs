//! The `prometheus` check: one PromQL instant query (`GET <url>/api/v1/query`) whose result
//! becomes the `value` observation, for rules such as "error ratio below 5 %".
//!
//! Keys: `url` (the Prometheus base URL, e.g. `http://127.0.0.1:9090`, a path prefix allowed; a
//! URL already ending in `/api/v1/query` is used as is), `query` (PromQL, required),
//! `aggregate` (`"max"`, `"min"` or `"sum"`: how several series become one value), `no_data`
//! (`"error"` (default), `"fail"` or `"pass"`: what an empty result means), `auth`
//! (`{ bearer = … }` or `{ username = …, password = … }`, values may be secrets). https uses
//! the system's trust store. The client is built once at load; each run opens a fresh
//! connection, so a restarted Prometheus is seen at once.
//!
//! Observations: `value` (the scalar, the single series' value, or the aggregate), `series`
//! (how many series the result had; 1 for a scalar), `duration = "total"`.
//!
//! Judging: Prometheus is bakewatch's source, not the target, so a Prometheus that cannot
//! answer is an `error` (the verdict becomes inconclusive, never pass), never a `fail`:
//! unreachable → `connect` (or `dns`, `tls`); HTTP 401/403 → `auth`; an API error such as bad
//! PromQL (`"status": "error"`) → `query`; any other non-2xx answer, or a body that is not
//! the query API's JSON → `protocol`; several series without `aggregate`, or a range vector
//! (matrix) or string result → `config`. An empty result, or a value that is NaN (0/0: a
//! ratio with no traffic) in every series, is no data: `error` / `fail` with reason `no_data`,
//! or `pass`, as `no_data` says. NaN series are left out of an aggregate; ±Inf are values.
//! Otherwise, without `expect` a value passes; with `expect` the assertions decide.
//!
//! A hanging Prometheus is cut by the runner's timeout, whose outcome is `fail` / `timeout`.

use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::assert::{Assertion, Measured, QueryScope, judge};
use super::http::Auth;
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use crate::config::reader::{At, Cx, TableReader};

/// What `expect` may ask of a prometheus check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["value", "series"],
};

/// Largest query API response read; a result this big needs aggregating in PromQL.
pub const MAX_RESPONSE: usize = 8 << 20;

/// The query API path under the base URL.
const API_PATH: &str = "/api/v1/query";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Max,
    Min,
    Sum,
}

impl Aggregate {
    fn as_str(self) -> &'static str {
        match self {
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Sum => "sum",
        }
    }

    fn apply(self, values: &[f64]) -> f64 {
        let mut it = values.iter().copied();
        let first = it.next().unwrap_or(f64::NAN);
        match self {
            Aggregate::Max => it.fold(first, f64::max),
            Aggregate::Min => it.fold(first, f64::min),
            Aggregate::Sum => it.fold(first, |a, b| a + b),
        }
    }
}

/// What an empty result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoData {
    Error,
    Fail,
    Pass,
}

/// A validated prometheus check, with its client ready.
#[derive(Debug)]
pub struct PrometheusSpec {
    /// `<base>/api/v1/query`.
    endpoint: Url,
    query: String,
    aggregate: Option<Aggregate>,
    no_data: NoData,
    auth: Option<Auth>,
    client: reqwest::Client,
}

impl PrometheusSpec {
    /// Reads the prometheus keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<PrometheusSpec> {
        let before = cx.diags.len();
        let endpoint = t.req::<At<String>>("url", cx).and_then(|u| {
            query_endpoint(&u.value)
                .map_err(|m| cx.error(u.span, format!("url: {m}")))
                .ok()
        });
        let query = t.req::<At<String>>("query", cx).and_then(|q| {
            if q.value.trim().is_empty() {
                cx.error(q.span, "query: must not be empty");
                None
            } else {
                Some(q.value)
            }
        });
        let aggregate = t.opt::<At<String>>("aggregate", cx).and_then(|a| {
            match a.value.as_str() {
                "max" => Some(Aggregate::Max),
                "min" => Some(Aggregate::Min),
                "sum" => Some(Aggregate::Sum),
                other => {
                    cx.error(
                        a.span,
                        format!(
                            "aggregate: must be \"max\", \"min\" or \"sum\", found {other:?} (other aggregations belong in the query, e.g. avg(…))"
                        ),
                    );
                    None
                }
            }
        });
        let no_data = match t.opt::<At<String>>("no_data", cx) {
            None => NoData::Error,
            Some(n) => match n.value.as_str() {
                "error" => NoData::Error,
                "fail" => NoData::Fail,
                "pass" => NoData::Pass,
                other => {
                    cx.error(
                        n.span,
                        format!(
                            "no_data: must be \"error\", \"fail\" or \"pass\", found {other:?}"
                        ),
                    );
                    NoData::Error
                }
            },
        };
        let auth = t.get("auth").and_then(|v| Auth::parse(v, cx));
        let client = reqwest::Client::builder()
            .user_agent(concat!("bakewatch/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                cx.error(t.span.clone(), format!("cannot build the HTTP client: {e}"));
                return None;
            }
        };
        if cx.diags.len() > before {
            return None;
        }
        Some(PrometheusSpec {
            endpoint: endpoint?,
            query: query?,
            aggregate,
            no_data,
            auth,
            client,
        })
    }

    /// One run: query, read the answer up to [`MAX_RESPONSE`], reduce it to one value, judge.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let mut req = self
            .client
            .get(self.endpoint.clone())
            .query(&[("query", self.query.as_str())])
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(auth) = &self.auth {
            req = auth.apply(req);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let (reason, message) = super::http::classify(&e);
                return Outcome::error(reason, format!("cannot reach Prometheus: {message}"));
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Outcome::error(
                Reason::Auth,
                format!("Prometheus answered HTTP {status}: check `auth`"),
            );
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_RESPONSE => {
                    return Outcome::error(
                        Reason::Protocol,
                        format!(
                            "the Prometheus answer exceeds {} MiB; aggregate in the query",
                            MAX_RESPONSE >> 20
                        ),
                    );
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    let (reason, message) = super::http::classify(&e);
                    let reason = if reason == Reason::Timeout {
                        reason
                    } else {
                        Reason::Protocol
                    };
                    return Outcome::error(
                        reason,
                        format!("reading the Prometheus answer: {message}"),
                    );
                }
            }
        }
        let api: ApiResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(_) if !(200..300).contains(&status) => {
                return Outcome::error(
                    Reason::Protocol,
                    format!("Prometheus answered HTTP {status}{}", snippet(&body)),
                );
            }
            Err(e) => {
                return Outcome::error(
                    Reason::Protocol,
                    format!("not a Prometheus query API answer: {e}"),
                );
            }
        };
        if api.status != "success" {
            let kind = api.error_type.as_deref().unwrap_or("error");
            let text = api.error.as_deref().unwrap_or("no error text");
            return Outcome::error(
                Reason::Query,
                one_line(&format!("query failed ({kind}): {text}")),
            );
        }
        if !(200..300).contains(&status) {
            return Outcome::error(
                Reason::Protocol,
                format!("Prometheus answered HTTP {status}"),
            );
        }
        let Some(data) = api.data else {
            return Outcome::error(Reason::Protocol, "a Prometheus answer without `data`");
        };
        let values = match data.values() {
            Ok(v) => v,
            Err((reason, message)) => return Outcome::error(reason, message),
        };
        self.judge_values(expect, &values, start.elapsed())
    }

    /// From the result's values (one per series) to an outcome.
    fn judge_values(&self, expect: &[Assertion], values: &[f64], total: Duration) -> Outcome {
        let mut observations = Observations::default();
        observations.set("series", Observation::Number(values.len() as f64));
        let numbers: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        let value = match (numbers.as_slice(), self.aggregate) {
            ([], _) => {
                let why = if values.is_empty() {
                    "the query returned no series".to_string()
                } else if values.len() == 1 {
                    "the value is NaN (a ratio without traffic?)".to_string()
                } else {
                    format!("all {} series are NaN", values.len())
                };
                let mut o = match self.no_data {
                    NoData::Error => Outcome::error(Reason::NoData, format!("no data: {why}")),
                    NoData::Fail => Outcome::fail(Reason::NoData, format!("no data: {why}")),
                    NoData::Pass => Outcome::pass(format!("no data ({why}); no_data = \"pass\"")),
                };
                o.observations = observations;
                return o;
            }
            ([v], None) => *v,
            (_, Some(agg)) => agg.apply(&numbers),
            (several, None) => {
                let mut o = Outcome::error(
                    Reason::Config,
                    format!(
                        "the query returned {} series; set `aggregate` (max, min, sum) or aggregate in the query",
                        several.len()
                    ),
                );
                o.observations = observations;
                return o;
            }
        };
        observations.set("value", Observation::Number(value));
        let run = Measured {
            observations,
            total,
        };
        let j = judge(expect, &run, false);
        let mut outcome = Outcome::new(j.status, j.reason, j.message);
        if j.status == Status::Pass {
            outcome.message = match self.aggregate {
                Some(agg) if values.len() != 1 => {
                    format!(
                        "{} of {} series: {}",
                        agg.as_str(),
                        values.len(),
                        show(value)
                    )
                }
                _ => format!("value {}", show(value)),
            };
        }
        outcome.failed_assertions = j.failures;
        outcome.observations = run.observations;
        outcome
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        // The header as sent too: a server may echo it in an answer that ends in a message.
        self.auth
            .iter()
            .flat_map(super::http::Auth::secret_values)
            .collect()
    }
}

/// The query endpoint under a base URL.
fn query_endpoint(s: &str) -> Result<Url, String> {
    let mut url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => {}
        "http" | "https" => return Err(format!("{s:?} has no host")),
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{s:?}: give the Prometheus base URL, without a query string"
        ));
    }
    if !url.path().ends_with(API_PATH) {
        let path = format!("{}{API_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// The query API's envelope.
#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

/// `data` by `resultType`.
#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar((f64, String)),
    String(IgnoredAny),
    Vector(Vec<Series>),
    Matrix(IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    /// `[timestamp, "value"]`; absent for a native histogram sample.
    value: Option<(f64, String)>,
}

impl Data {
    /// One value per series (a scalar counts as one).
    fn values(&self) -> Result<Vec<f64>, (Reason, String)> {
        match self {
            Data::Scalar((_, v)) => Ok(vec![sample_value(v)?]),
            Data::Vector(series) => series
                .iter()
                .map(|s| match &s.value {
                    Some((_, v)) => sample_value(v),
                    None => Err((
                        Reason::Config,
                        "the query returned a native histogram; reduce it to a number (e.g. histogram_quantile)".to_string(),
                    )),
                })
                .collect(),
            Data::Matrix(_) => Err((
                Reason::Config,
                "the query returned a range vector (matrix); an instant query needs a number, e.g. rate(x[5m]) instead of x[5m]".to_string(),
            )),
            Data::String(_) => Err((
                Reason::Config,
                "the query returned a string; it must return a number".to_string(),
            )),
        }
    }
}

/// A sample value as Prometheus writes it: "1.5", "NaN", "+Inf", "-Inf".
fn sample_value(s: &str) -> Result<f64, (Reason, String)> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| {
            (
                Reason::Protocol,
                format!("Prometheus sent a sample value that is not a number: {s:?}"),
            )
        }),
    }
}

/// A value for messages: short, without float noise.
fn show(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let a = v.abs();
    if a == 0.0 || (1e-4..1e15).contains(&a) {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.4e}")
    }
}

/// ": <start of the body>" for a non-JSON error answer, or nothing.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = one_line(text.trim());
    if text.is_empty() {
        return String::new();
    }
    match text.char_indices().nth(120) {
        Some((i, _)) => format!(": {}…", &text[..i]),
        None => format!(": {text}"),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_built_under_the_base_url() {
        let e = |s: &str| query_endpoint(s).map(|u| u.to_string());
        assert_eq!(
            e("http://127.0.0.1:9090").unwrap(),
            "http://127.0.0.1:9090/api/v1/query"
        );
        assert_eq!(
            e("http://127.0.0.1:9090/prom/").unwrap(),
            "http://127.0.0.1:9090/prom/api/v1/query"
        );
        assert_eq!(
            e("https://p.example/api/v1/query").unwrap(),
            "https://p.example/api/v1/query"
        );
        assert!(e("ftp://p.example").is_err());
        assert!(e("http://p.example/?x=1").is_err());
    }

    #[test]
    fn values_and_aggregates() {
        assert!(sample_value("NaN").unwrap().is_nan());
        assert_eq!(sample_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(sample_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(sample_value("0.25").unwrap(), 0.25);
        assert!(sample_value("x").is_err());
        assert_eq!(Aggregate::Max.apply(&[1.0, 5.0, 3.0]), 5.0);
        assert_eq!(Aggregate::Min.apply(&[1.0, 5.0, 3.0]), 1.0);
        assert_eq!(Aggregate::Sum.apply(&[1.0, 5.0, 3.0]), 9.0);
        assert_eq!(show(0.010000000000000002), "0.01");
        assert_eq!(show(42.0), "42");
        assert_eq!(show(f64::INFINITY), "+Inf");
        assert_eq!(show(1.5e-9), "1.5000e-9");
    }
}
