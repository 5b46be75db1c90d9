//! The one assertion vocabulary (query, optional filter, predicate) shared by every check type.
//! Assertions are parsed, validated and compiled (regexes, JSONPaths) once at load; at run time
//! they are evaluated against a [`Subject`] and explain every failure, never panicking.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use regex::Regex;
use serde_json_path::JsonPath;
use toml::de::DeValue;

use crate::checks::outcome::{
    AssertionFailure, Observation, Observations, Outcome, Reason, Status,
};
use crate::config::reader::{
    Cx, TableReader, Value, as_f64, as_i128, closest, parse_duration, type_name,
};
use crate::template::{DeploymentVars, Scope, Template};

/// Which queries a check type offers.
#[derive(Debug, Clone, Copy)]
pub struct QueryScope {
    /// status, header, cookie, body, jsonpath, regex are available (HTTP-like responses).
    pub response: bool,
    /// accepted `duration = "…"` kinds, e.g. &["total", "ttfb"]; empty = no duration query.
    pub durations: &'static [&'static str],
    /// accepted `observe = "…"` names; empty slice = no observe query; a `"*"` entry
    /// accepts any name (types whose observations are named by the user, like redis `info`).
    pub observations: &'static [&'static str],
}

impl QueryScope {
    /// Whether the query `key` may be used at all.
    fn allows(&self, key: &str) -> bool {
        match key {
            "duration" => !self.durations.is_empty(),
            "observe" => !self.observations.is_empty(),
            _ => self.response,
        }
    }
}

/// What an assertion is evaluated against. Every method has a default "not available".
pub trait Subject {
    fn status(&self) -> Option<u16> {
        None
    }
    /// All values of a header, name case-insensitive.
    fn header_values(&self, _name: &str) -> Vec<&str> {
        Vec::new()
    }
    fn cookie_values(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
    fn body(&self) -> Option<&str> {
        None
    }
    /// The body parsed as JSON, None when it is not JSON (the subject caches the parse).
    fn json(&self) -> Option<&serde_json::Value> {
        None
    }
    fn duration(&self, _kind: &str) -> Option<Duration> {
        None
    }
    fn observation(&self, _name: &str) -> Option<&Observation> {
        None
    }
}

/// What a check with no response to query measured: its total duration and its named
/// observations. The subject of every such check type's `expect`.
#[derive(Debug)]
pub struct Measured {
    pub total: Duration,
    pub observations: Observations,
}

impl Measured {
    /// The outcome of a probe that succeeded: pass with `message`, or what `expect` says.
    pub fn judged(self, expect: &[Assertion], message: String) -> Outcome {
        let j = judge(expect, &self, false);
        let mut o = Outcome::new(j.status, j.reason, j.message);
        if j.status == Status::Pass {
            o.message = message;
        }
        o.failed_assertions = j.failures;
        o.observations = self.observations;
        o
    }
}

impl Subject for Measured {
    fn duration(&self, kind: &str) -> Option<Duration> {
        (kind == "total").then_some(self.total)
    }

    fn observation(&self, name: &str) -> Option<&Observation> {
        self.observations.get(name)
    }
}

const QUERY_KEYS: [&str; 8] = [
    "status", "header", "cookie", "body", "jsonpath", "regex", "duration", "observe",
];

const PREDICATE_KEYS: [&str; 12] = [
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "contains",
    "matches",
    "exists",
    "in",
    "starts_with",
    "ends_with",
];

const OTHER_KEYS: [&str; 4] = ["filter", "nth", "not", "severity"];

/// Keys people plausibly write instead of ours, too far from them for an edit-distance hint.
const SYNONYMS: &[(&str, &str)] = &[
    ("equals", "eq"),
    ("equal", "eq"),
    ("is", "eq"),
    ("==", "eq"),
    ("not_equals", "ne"),
    ("not_equal", "ne"),
    ("neq", "ne"),
    ("!=", "ne"),
    ("less_than", "lt"),
    ("<", "lt"),
    ("lte", "le"),
    ("less_or_equal", "le"),
    ("<=", "le"),
    ("greater_than", "gt"),
    (">", "gt"),
    ("gte", "ge"),
    ("greater_or_equal", "ge"),
    (">=", "ge"),
    ("includes", "contains"),
    ("has", "contains"),
    ("match", "matches"),
    ("pattern", "matches"),
    ("present", "exists"),
    ("one_of", "in"),
    ("any_of", "in"),
    ("startswith", "starts_with"),
    ("prefix", "starts_with"),
    ("endswith", "ends_with"),
    ("suffix", "ends_with"),
    ("negate", "not"),
    ("level", "severity"),
    ("index", "nth"),
    ("json_path", "jsonpath"),
    ("status_code", "status"),
    ("latency", "duration"),
    ("observation", "observe"),
];

/// Longest text shown for an actual value in a failure (bodies can be large).
const SHOW_CHARS: usize = 120;

/// One assertion, validated and compiled at load.
#[derive(Debug, Clone)]
pub struct Assertion {
    query: Query,
    filter: Option<Filter>,
    predicate: Predicate,
    not: bool,
    warn: bool,
    /// The operand names `{{ deployment.* }}`: resolved per run against the run's deployment
    /// ([`crate::template::current`]), skipped while there is none.
    deployment: bool,
}

#[derive(Debug, Clone)]
enum Query {
    Status,
    Header(String),
    Cookie(String),
    Body,
    JsonPath { text: String, path: JsonPath },
    Regex(Regex),
    Duration(String),
    Observe(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Count,
    First,
    Last,
    Nth(usize),
}

#[derive(Debug, Clone)]
enum Predicate {
    Eq(Val),
    Ne(Val),
    Lt(Val),
    Le(Val),
    Gt(Val),
    Ge(Val),
    Contains(Val),
    Matches(Regex),
    /// `matches` naming `{{ deployment.* }}`: compiled per run with the values escaped.
    MatchesTemplate(String),
    Exists(bool),
    In(Vec<Val>),
    StartsWith(String),
    EndsWith(String),
}

/// A value on either side of a comparison: an operand from the config or what a query found.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    Dur(Duration),
    List(Vec<Val>),
    Map(BTreeMap<String, Val>),
}

impl Assertion {
    /// Parses one `{ … }` assertion table. Reports every problem via `cx` (at the offending key's span) and returns None if any.
    pub fn parse(v: &Value<'_>, scope: &QueryScope, cx: &mut Cx) -> Option<Assertion> {
        let before = cx.diags.len();
        let mut r = TableReader::new(v, "assertion", cx)?;

        // Unknown keys: a misspelt query or predicate is reported as such (by `finish` or the
        // synonym hints below), not also as a missing one.
        let entries: Vec<(&str, Range<usize>)> = r
            .entries()
            .map(|(k, _)| (k.get_ref().as_ref(), k.span()))
            .collect();
        let known: Vec<&str> = QUERY_KEYS
            .iter()
            .chain(PREDICATE_KEYS.iter())
            .chain(OTHER_KEYS.iter())
            .copied()
            .collect();
        let mut synonyms = Vec::new();
        let (mut guessed_query, mut guessed_predicate) = (false, false);
        for (key, span) in &entries {
            if known.contains(key) {
                continue;
            }
            let synonym = SYNONYMS
                .iter()
                .find(|(s, _)| s == key)
                .map(|(_, ours)| *ours);
            if let Some(ours) = synonym {
                synonyms.push((*key, span.clone(), ours));
            }
            if let Some(guess) = synonym.or_else(|| closest(key, &known)) {
                guessed_query |= QUERY_KEYS.contains(&guess);
                guessed_predicate |= PREDICATE_KEYS.contains(&guess);
            }
        }
        // Present keys of a kind, in the order they were written.
        let present = |r: &mut TableReader<'_, '_>, keys: &[&'static str]| {
            let mut found: Vec<(&'static str, usize)> = Vec::new();
            for k in keys {
                if r.get(k).is_some() {
                    found.push((k, key_span(r, k).start));
                }
            }
            found.sort_by_key(|(_, at)| *at);
            found
        };

        // The query.
        let queries: Vec<(&str, &Value<'_>)> = present(&mut r, &QUERY_KEYS)
            .into_iter()
            .filter_map(|(k, _)| r.get(k).map(|v| (k, v)))
            .collect();
        let mut query = None;
        let mut shorthand = None;
        // `status = 200` / `status = [200, 204]` carries its own predicate.
        let mut shorthand_form = false;
        match queries.as_slice() {
            [] if guessed_query => {}
            [] => {
                let offered: Vec<&str> = QUERY_KEYS
                    .iter()
                    .copied()
                    .filter(|k| scope.allows(k))
                    .collect();
                cx.error(
                    r.span.clone(),
                    format!("assertion has no query (one of {})", offered.join(", ")),
                );
            }
            [(key, val)] => {
                shorthand_form = *key == "status" && val.get_ref().as_bool() != Some(true);
                if !scope.allows(key) {
                    cx.error(
                        key_span(&r, key),
                        format!("`{key}` is not available for this check type"),
                    );
                } else if shorthand_form {
                    shorthand = parse_status_shorthand(val, cx);
                    query = Some(Query::Status);
                } else {
                    query = parse_query(key, val, scope, cx);
                }
            }
            [(a, _), (b, _)] => cx.error(
                key_span(&r, b),
                format!("assertion has two queries (`{a}` and `{b}`)"),
            ),
            [rest @ .., (last, _)] => {
                let names: Vec<String> = rest.iter().map(|(k, _)| format!("`{k}`")).collect();
                cx.error(
                    key_span(&r, last),
                    format!(
                        "assertion has several queries ({} and `{last}`)",
                        names.join(", ")
                    ),
                );
            }
        }

        // The filter.
        let filter_v = r.get("filter");
        let nth_v = r.get("nth");
        let filter = match (filter_v, nth_v) {
            (Some(_), Some(_)) => {
                cx.error(
                    key_span(&r, "nth"),
                    "assertion has two filters (`filter` and `nth`)",
                );
                None
            }
            (Some(f), None) => match f.get_ref().as_str() {
                Some("count") => Some(Filter::Count),
                Some("first") => Some(Filter::First),
                Some("last") => Some(Filter::Last),
                Some("nth") => {
                    cx.error(f.span(), "write `nth = N` (0-based) to pick the N-th value");
                    None
                }
                _ => {
                    cx.error(
                        f.span(),
                        format!(
                            "filter must be \"count\", \"first\" or \"last\" (or `nth = N`), found {}",
                            show_toml(f.get_ref())
                        ),
                    );
                    None
                }
            },
            (None, Some(n)) => match as_i128(n.get_ref()).map(usize::try_from) {
                Some(Ok(i)) => Some(Filter::Nth(i)),
                _ => {
                    cx.error(
                        n.span(),
                        format!(
                            "nth must be a non-negative index (0 is the first value), found {}",
                            show_toml(n.get_ref())
                        ),
                    );
                    None
                }
            },
            (None, None) => None,
        };

        // The predicate. Duration queries take duration operands (unless counted).
        let durations = matches!(query, Some(Query::Duration(_))) && filter != Some(Filter::Count);
        let preds: Vec<(&str, &Value<'_>)> = present(&mut r, &PREDICATE_KEYS)
            .into_iter()
            .filter_map(|(k, _)| r.get(k).map(|v| (k, v)))
            .collect();
        let predicate = match (shorthand_form, preds.as_slice()) {
            (true, []) => shorthand,
            (true, [(k, _), ..]) => {
                cx.error(
                    key_span(&r, k),
                    format!(
                        "assertion has two predicates (`status = …` and `{k}`); write `status = true` with one predicate"
                    ),
                );
                None
            }
            (false, []) if guessed_predicate => None,
            (false, []) => {
                cx.error(
                    r.span.clone(),
                    format!(
                        "assertion has no predicate (one of {})",
                        PREDICATE_KEYS.join(", ")
                    ),
                );
                None
            }
            (false, [(k, val)]) => parse_predicate(k, val, durations, cx),
            (false, [(a, _), (b, _), ..]) => {
                cx.error(
                    key_span(&r, b),
                    format!("assertion has two predicates (`{a}` and `{b}`)"),
                );
                None
            }
        };

        let deployment = match &predicate {
            Some(p) => {
                let span = preds
                    .first()
                    .map_or_else(|| r.span.clone(), |(k, _)| key_span(&r, k));
                deployment_operands(p, span, cx)
            }
            None => false,
        };
        let not = r.or("not", false, cx);
        let warn = match r.get("severity") {
            None => false,
            Some(s) => match s.get_ref().as_str() {
                Some("warn") => true,
                Some("fail") => false,
                _ => {
                    cx.error(
                        s.span(),
                        format!(
                            "severity must be \"warn\" or \"fail\", found {}",
                            show_toml(s.get_ref())
                        ),
                    );
                    false
                }
            },
        };

        // Hints for well-known misspellings that edit distance would not catch.
        for (key, span, ours) in synonyms {
            cx.error(
                span,
                format!("unknown key `{key}` in assertion (did you mean `{ours}`?)"),
            );
            r.get(key);
        }
        r.finish(cx);

        match (query, predicate) {
            (Some(query), Some(predicate)) if cx.diags.len() == before => Some(Assertion {
                query,
                filter,
                predicate,
                not,
                warn,
                deployment,
            }),
            _ => None,
        }
    }

    /// Whether the expected value names `{{ deployment.* }}`.
    pub fn uses_deployment(&self) -> bool {
        self.deployment
    }

    /// This assertion with `{{ deployment.* }}` replaced by the deployment's values.
    fn resolved(&self, d: &DeploymentVars) -> Assertion {
        let scope = Scope::of_deployment(Some(std::sync::Arc::new(d.clone())));
        let text = |s: &String| match Template::parse(s) {
            Ok(t) if t.uses_deployment() => t.render(&scope),
            _ => s.clone(),
        };
        let val = |v: &Val| match v {
            Val::Text(s) => Val::Text(text(s)),
            other => other.clone(),
        };
        let predicate = match &self.predicate {
            Predicate::Eq(v) => Predicate::Eq(val(v)),
            Predicate::Ne(v) => Predicate::Ne(val(v)),
            Predicate::Lt(v) => Predicate::Lt(val(v)),
            Predicate::Le(v) => Predicate::Le(val(v)),
            Predicate::Gt(v) => Predicate::Gt(val(v)),
            Predicate::Ge(v) => Predicate::Ge(val(v)),
            Predicate::Contains(v) => Predicate::Contains(val(v)),
            Predicate::In(items) => Predicate::In(items.iter().map(val).collect()),
            Predicate::StartsWith(p) => Predicate::StartsWith(text(p)),
            Predicate::EndsWith(p) => Predicate::EndsWith(text(p)),
            Predicate::MatchesTemplate(src) => match render_regex(src, d) {
                Ok(re) => Predicate::Matches(re),
                // Escaped values cannot make a pattern that compiled at load invalid; should
                // one, the assertion stays unresolved and fails with a note.
                Err(_) => Predicate::MatchesTemplate(src.clone()),
            },
            Predicate::Matches(re) => Predicate::Matches(re.clone()),
            Predicate::Exists(b) => Predicate::Exists(*b),
        };
        Assertion {
            predicate,
            deployment: false,
            ..self.clone()
        }
    }

    /// Parses an `expect = [ … ]` array (each bad item reported; the good ones returned).
    pub fn parse_list(v: &Value<'_>, scope: &QueryScope, cx: &mut Cx) -> Vec<Assertion> {
        match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|item| Assertion::parse(item, scope, cx))
                .collect(),
            other => {
                cx.error(
                    v.span(),
                    format!(
                        "expect must be an array of assertions, found {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Evaluates the assertion; `Err` explains what was expected and what came. An assertion
    /// naming `{{ deployment.* }}` is judged against the run's deployment (see [`judge`] for
    /// runs without one).
    pub fn evaluate(&self, subject: &dyn Subject) -> Result<(), AssertionFailure> {
        if self.deployment
            && let Some(d) = crate::template::current()
        {
            return self.resolved(&d).evaluate(subject);
        }
        self.check(subject).map_err(|actual| AssertionFailure {
            assertion: self.to_string(),
            expected: self.expected(),
            actual,
            warn: self.warn,
        })
    }

    /// A `status` query.
    pub fn is_status(&self) -> bool {
        matches!(self.query, Query::Status)
    }

    /// severity = "warn".
    pub fn is_warn(&self) -> bool {
        self.warn
    }

    /// The one-line text of a failure of this assertion: "HTTP 500, expected 200" for status
    /// queries, `jsonpath $.status: expected eq "ok", got "down"` for the others.
    pub fn failure_message(&self, failure: &AssertionFailure) -> String {
        if self.is_status() && self.filter.is_none() {
            let expected = match (&self.predicate, self.not) {
                (Predicate::Eq(v), false) => self.operand(v),
                _ => failure.expected.clone(),
            };
            if failure.actual == NOTHING {
                format!("no HTTP status, expected {expected}")
            } else {
                format!("HTTP {}, expected {expected}", failure.actual)
            }
        } else {
            format!(
                "{}: expected {}, got {}",
                self.subject_text(),
                failure.expected,
                failure.actual
            )
        }
    }

    /// The query and filter, e.g. `jsonpath $.items count`.
    fn subject_text(&self) -> String {
        let query = match &self.query {
            Query::Status => "status".to_string(),
            Query::Header(name) => format!("header {name}"),
            Query::Cookie(name) => format!("cookie {name}"),
            Query::Body => "body".to_string(),
            Query::JsonPath { text, .. } => format!("jsonpath {text}"),
            Query::Regex(re) => format!("regex {}", quote(re.as_str())),
            Query::Duration(kind) => format!("duration {kind}"),
            Query::Observe(name) => format!("observe {name}"),
        };
        match self.filter {
            None => query,
            Some(Filter::Count) => format!("{query} count"),
            Some(Filter::First) => format!("{query} first"),
            Some(Filter::Last) => format!("{query} last"),
            Some(Filter::Nth(n)) => format!("{query} nth {n}"),
        }
    }

    /// The predicate as written, e.g. `eq 200`, `not contains "x"`.
    fn expected(&self) -> String {
        let p = match &self.predicate {
            Predicate::Eq(v) => format!("eq {}", self.operand(v)),
            Predicate::Ne(v) => format!("ne {}", self.operand(v)),
            Predicate::Lt(v) => format!("lt {}", self.operand(v)),
            Predicate::Le(v) => format!("le {}", self.operand(v)),
            Predicate::Gt(v) => format!("gt {}", self.operand(v)),
            Predicate::Ge(v) => format!("ge {}", self.operand(v)),
            Predicate::Contains(v) => format!("contains {}", self.operand(v)),
            Predicate::Matches(re) => format!("matches {}", quote(re.as_str())),
            Predicate::MatchesTemplate(src) => format!("matches {}", quote(src)),
            Predicate::Exists(true) => "exists".to_string(),
            Predicate::Exists(false) => "exists false".to_string(),
            Predicate::In(vs) => {
                let items: Vec<String> = vs.iter().map(|v| self.operand(v)).collect();
                format!("in [{}]", items.join(", "))
            }
            Predicate::StartsWith(s) => format!("starts_with {}", quote(s)),
            Predicate::EndsWith(s) => format!("ends_with {}", quote(s)),
        };
        if self.not { format!("not {p}") } else { p }
    }

    /// An operand as shown: duration operands of duration queries unquoted (`lt 800ms`).
    fn operand(&self, v: &Val) -> String {
        match v {
            Val::Text(s)
                if matches!(self.query, Query::Duration(_))
                    && self.filter != Some(Filter::Count) =>
            {
                s.clone()
            }
            _ => render(v, usize::MAX),
        }
    }

    /// What the query found: `None` when the body is not JSON for a JSONPath query.
    fn fetch(&self, s: &dyn Subject) -> Option<Vec<Val>> {
        let values = match &self.query {
            Query::Status => s.status().map(|c| Val::Int(c.into())).into_iter().collect(),
            Query::Header(name) => s
                .header_values(name)
                .into_iter()
                .map(|h| Val::Text(h.to_string()))
                .collect(),
            Query::Cookie(name) => s.cookie_values(name).into_iter().map(Val::Text).collect(),
            Query::Body => s
                .body()
                .map(|b| Val::Text(b.to_string()))
                .into_iter()
                .collect(),
            Query::JsonPath { path, .. } => match s.json() {
                Some(json) => path.query(json).into_iter().map(from_json).collect(),
                None if s.body().is_some() => return None,
                None => Vec::new(),
            },
            Query::Regex(re) => s
                .body()
                .and_then(|body| {
                    let caps = re.captures(body)?;
                    let group = if re.captures_len() > 1 { 1 } else { 0 };
                    caps.get(group).map(|m| Val::Text(m.as_str().to_string()))
                })
                .into_iter()
                .collect(),
            Query::Duration(kind) => s.duration(kind).map(Val::Dur).into_iter().collect(),
            Query::Observe(name) => s
                .observation(name)
                .map(from_observation)
                .into_iter()
                .collect(),
        };
        Some(values)
    }

    /// Applies the filter. A single list value (a JSON array, a list observation) is treated as
    /// its items by `count`, `first`, `last` and `nth`.
    ///
    /// Without a filter: no values → nothing; one value → that value; several values (repeated
    /// headers or cookies, a JSONPath matching several nodes) → for `contains` the list of all
    /// values (membership), for every other predicate the first value. (`exists` is handled
    /// before this: there it means "at least one value".)
    fn select(&self, mut values: Vec<Val>) -> Option<Val> {
        let Some(filter) = self.filter else {
            return match values.len() {
                0 => None,
                1 => values.pop(),
                _ if matches!(self.predicate, Predicate::Contains(_)) => Some(Val::List(values)),
                _ => values.into_iter().next(),
            };
        };
        let items = match values.as_mut_slice() {
            [Val::List(items)] => std::mem::take(items),
            [Val::Map(map)] if filter == Filter::Count => {
                return Some(Val::Int(map.len() as i128));
            }
            _ => values,
        };
        match filter {
            Filter::Count => Some(Val::Int(items.len() as i128)),
            Filter::First => items.into_iter().next(),
            Filter::Last => items.into_iter().last(),
            Filter::Nth(n) => items.into_iter().nth(n),
        }
    }

    /// `Ok` when the assertion holds, else the rendered actual value (with a note when the
    /// comparison was impossible).
    fn check(&self, s: &dyn Subject) -> Result<(), String> {
        let Some(values) = self.fetch(s) else {
            return Err(format!("{NOTHING} (body is not JSON)"));
        };
        if let Predicate::Exists(want) = self.predicate {
            let (present, shown) = if self.filter.is_none() {
                let shown = match values.len() {
                    0 => None,
                    1 => values.into_iter().next(),
                    _ => Some(Val::List(values)),
                };
                (shown.is_some(), shown)
            } else {
                let shown = self.select(values);
                (shown.is_some(), shown)
            };
            return if (present == want) != self.not {
                Ok(())
            } else {
                Err(shown.map_or_else(|| NOTHING.to_string(), |v| render(&v, SHOW_CHARS)))
            };
        }
        // A missing value fails every other predicate, negated or not: absence is asserted
        // with `exists = false`.
        let Some(actual) = self.select(values) else {
            return Err(NOTHING.to_string());
        };
        match self.apply(&actual) {
            Ok(holds) if holds != self.not => Ok(()),
            Ok(_) => Err(render(&actual, SHOW_CHARS)),
            Err(note) => Err(format!("{} ({note})", render(&actual, SHOW_CHARS))),
        }
    }

    /// The predicate on one value, before `not`; `Err` when the types cannot be compared.
    fn apply(&self, a: &Val) -> Result<bool, String> {
        match &self.predicate {
            Predicate::Eq(e) => equal(a, e),
            Predicate::Ne(e) => equal(a, e).map(|eq| !eq),
            Predicate::Lt(e) => order(a, e).map(Ordering::is_lt),
            Predicate::Le(e) => order(a, e).map(Ordering::is_le),
            Predicate::Gt(e) => order(a, e).map(Ordering::is_gt),
            Predicate::Ge(e) => order(a, e).map(Ordering::is_ge),
            Predicate::Contains(e) => contains(a, e),
            Predicate::Matches(re) => text_of(a, "matches").map(|t| re.is_match(&t)),
            Predicate::MatchesTemplate(_) => Err("no deployment to resolve it against".into()),
            Predicate::Exists(want) => Ok(*want),
            Predicate::In(items) => {
                let mut problem = None;
                for item in items {
                    match equal(a, item) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(e) => problem = problem.or(Some(e)),
                    }
                }
                problem.map_or(Ok(false), Err)
            }
            Predicate::StartsWith(p) => {
                text_of(a, "starts_with").map(|t| t.starts_with(p.as_str()))
            }
            Predicate::EndsWith(p) => text_of(a, "ends_with").map(|t| t.ends_with(p.as_str())),
        }
    }
}

impl fmt::Display for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject_text(), self.expected())
    }
}

/// How a missing value is shown.
const NOTHING: &str = "nothing";

/// The combined judgement of a check's assertions on one response/run.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub status: Status,
    pub reason: Reason,
    pub message: String,
    pub failures: Vec<AssertionFailure>,
}

/// Evaluates all assertions. `implicit_2xx`: when true and no assertion is a status query, a
/// status outside 200..=299 fails with reason Status ("HTTP 500, expected 2xx"). Any hard
/// failure → Fail (reason Status when the first hard failure is a status query, else
/// Assertion); only warn failures → Degraded (reason Assertion); none → Pass/Ok, "ok".
pub fn judge(assertions: &[Assertion], subject: &dyn Subject, implicit_2xx: bool) -> Judgement {
    // (is a status failure, one-line message, failure)
    let mut failed: Vec<(bool, String, AssertionFailure)> = Vec::new();
    if implicit_2xx
        && !assertions.iter().any(Assertion::is_status)
        && let Some(code) = subject.status().filter(|c| !(200..=299).contains(c))
    {
        failed.push((
            true,
            format!("HTTP {code}, expected 2xx"),
            AssertionFailure {
                assertion: "status 2xx".to_string(),
                expected: "2xx".to_string(),
                actual: code.to_string(),
                warn: false,
            },
        ));
    }
    for a in assertions {
        // Skipped before the service's first deployment; the runner reports which.
        if a.uses_deployment() && crate::template::current().is_none() {
            continue;
        }
        if let Err(f) = a.evaluate(subject) {
            failed.push((a.is_status(), a.failure_message(&f), f));
        }
    }
    let more = match failed.len() {
        0 | 1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    let (status, reason, message) = match failed.iter().find(|(_, _, f)| !f.warn) {
        Some((is_status, msg, _)) => (
            Status::Fail,
            if *is_status {
                Reason::Status
            } else {
                Reason::Assertion
            },
            format!("{msg}{more}"),
        ),
        None => match failed.first() {
            Some((_, msg, _)) => (Status::Degraded, Reason::Assertion, format!("{msg}{more}")),
            None => (Status::Pass, Reason::Ok, "ok".to_string()),
        },
    };
    Judgement {
        status,
        reason,
        message,
        failures: failed.into_iter().map(|(_, _, f)| f).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers.

/// The span of `key` itself (not its value), or of the table when absent.
fn key_span(r: &TableReader<'_, '_>, key: &str) -> Range<usize> {
    r.entries()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, _)| k.span())
        .unwrap_or_else(|| r.span.clone())
}

/// A TOML value for a message: strings quoted, other types named.
fn show_toml(v: &DeValue<'_>) -> String {
    match v.as_str() {
        Some(s) => quote(s),
        None => type_name(v).to_string(),
    }
}

fn parse_query(key: &str, v: &Value<'_>, scope: &QueryScope, cx: &mut Cx) -> Option<Query> {
    let text = |cx: &mut Cx| -> Option<String> {
        match v.get_ref().as_str() {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            Some(_) => {
                cx.error(v.span(), format!("`{key}` must not be empty"));
                None
            }
            None => {
                cx.error(
                    v.span(),
                    format!("`{key}` must be a string, found {}", type_name(v.get_ref())),
                );
                None
            }
        }
    };
    match key {
        "status" => Some(Query::Status),
        "header" => text(cx).map(Query::Header),
        "cookie" => text(cx).map(Query::Cookie),
        "body" => {
            if v.get_ref().as_bool() == Some(true) {
                Some(Query::Body)
            } else {
                cx.error(
                    v.span(),
                    format!("`body` must be true, found {}", show_toml(v.get_ref())),
                );
                None
            }
        }
        "jsonpath" => {
            let s = text(cx)?;
            match parse_jsonpath(&s) {
                Ok(path) => Some(Query::JsonPath { text: s, path }),
                Err(e) => {
                    cx.error(v.span(), format!("invalid JSONPath {}: {e}", quote(&s)));
                    None
                }
            }
        }
        "regex" => {
            let s = text(cx)?;
            compile_regex(&s, v, cx).map(Query::Regex)
        }
        "duration" => {
            let s = text(cx)?;
            if scope.durations.contains(&s.as_str()) {
                Some(Query::Duration(s))
            } else {
                cx.error(
                    v.span(),
                    format!(
                        "unknown duration `{s}` (one of {})",
                        scope.durations.join(", ")
                    ),
                );
                None
            }
        }
        "observe" => {
            let s = text(cx)?;
            if scope.observations.contains(&s.as_str()) || scope.observations.contains(&"*") {
                Some(Query::Observe(s))
            } else {
                cx.error(
                    v.span(),
                    format!(
                        "unknown observation `{s}` for this check type (one of {})",
                        scope.observations.join(", ")
                    ),
                );
                None
            }
        }
        _ => None,
    }
}

/// How deep a JSONPath's brackets and parentheses may nest. serde_json_path parses nested
/// filters recursively and by backtracking, with no limit of its own: 30 nested `[?@[?@…]]`
/// take hours and a few hundred nested parentheses overflow the stack (the process aborts).
/// Real paths nest two or three levels.
pub const MAX_JSONPATH_NESTING: usize = 10;

/// Parses a JSONPath (RFC 9535), refusing one nested deeper than [`MAX_JSONPATH_NESTING`].
pub fn parse_jsonpath(text: &str) -> Result<JsonPath, String> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut quote, mut escaped) = (None, false);
    for c in text.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    if deepest > MAX_JSONPATH_NESTING {
        return Err(format!(
            "brackets and parentheses nest {deepest} deep (at most {MAX_JSONPATH_NESTING})"
        ));
    }
    JsonPath::parse(text).map_err(|e| e.to_string())
}

/// `status = 200` (eq) or `status = [200, 204]` (in).
fn parse_status_shorthand(v: &Value<'_>, cx: &mut Cx) -> Option<Predicate> {
    let code = |item: &Value<'_>, cx: &mut Cx| -> Option<Val> {
        match as_i128(item.get_ref()) {
            Some(n) if (100..=599).contains(&n) => Some(Val::Int(n)),
            Some(n) => {
                cx.error(
                    item.span(),
                    format!("status code {n} is out of range (100..=599)"),
                );
                None
            }
            None => {
                cx.error(
                    item.span(),
                    format!(
                        "a status code must be an integer, found {}",
                        type_name(item.get_ref())
                    ),
                );
                None
            }
        }
    };
    match v.get_ref() {
        DeValue::Integer(_) => code(v, cx).map(Predicate::Eq),
        DeValue::Array(items) => {
            let codes: Vec<Option<Val>> = items.iter().map(|i| code(i, cx)).collect();
            codes
                .into_iter()
                .collect::<Option<Vec<Val>>>()
                .map(Predicate::In)
        }
        other => {
            cx.error(
                v.span(),
                format!(
                    "`status` must be a status code (200), a list of codes ([200, 204]) or true with a predicate, found {}",
                    show_toml(other)
                ),
            );
            None
        }
    }
}

/// One predicate's operand. `durations`: the query is a duration, so comparison operands must
/// be duration strings and text predicates make no sense.
/// Whether the predicate's operand names `{{ deployment.* }}`; a malformed deployment
/// reference is reported (any other `{{` is literal text, as it always was).
fn deployment_operands(p: &Predicate, span: Range<usize>, cx: &mut Cx) -> bool {
    let mut texts: Vec<&str> = Vec::new();
    fn push<'a>(texts: &mut Vec<&'a str>, v: &'a Val) {
        if let Val::Text(s) = v {
            texts.push(s);
        }
    }
    match p {
        Predicate::Eq(v)
        | Predicate::Ne(v)
        | Predicate::Lt(v)
        | Predicate::Le(v)
        | Predicate::Gt(v)
        | Predicate::Ge(v)
        | Predicate::Contains(v) => push(&mut texts, v),
        Predicate::In(items) => items.iter().for_each(|v| push(&mut texts, v)),
        Predicate::StartsWith(t) | Predicate::EndsWith(t) => texts.push(t),
        Predicate::MatchesTemplate(src) => texts.push(src),
        Predicate::Matches(_) => {}
        Predicate::Exists(_) => {}
    }
    let mut uses = false;
    for text in texts {
        if !text.contains("deployment.") || !text.contains("{{") {
            continue;
        }
        match Template::parse(text) {
            Ok(t) if t.uses_deployment() => uses = true,
            Ok(_) => {}
            Err(e) => cx.error(span.clone(), e),
        }
    }
    uses
}

fn parse_predicate(key: &str, v: &Value<'_>, durations: bool, cx: &mut Cx) -> Option<Predicate> {
    let dv = v.get_ref();
    let string = |cx: &mut Cx| -> Option<String> {
        let s = dv.as_str().map(str::to_string);
        if s.is_none() {
            cx.error(
                v.span(),
                format!("`{key}` needs a string, found {}", type_name(dv)),
            );
        }
        s
    };
    if durations && matches!(key, "contains" | "matches" | "starts_with" | "ends_with") {
        cx.error(
            v.span(),
            format!("`{key}` cannot apply to a duration (use eq, ne, lt, le, gt, ge or in)"),
        );
        return None;
    }
    match key {
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            if durations {
                duration_operand(key, v, cx)?;
            } else if matches!(key, "lt" | "le" | "gt" | "ge")
                && !matches!(
                    dv,
                    DeValue::Integer(_) | DeValue::Float(_) | DeValue::String(_)
                )
            {
                cx.error(
                    v.span(),
                    format!(
                        "`{key}` needs a number, a string or a duration, found {}",
                        type_name(dv)
                    ),
                );
                return None;
            }
            let val = from_toml(dv);
            Some(match key {
                "eq" => Predicate::Eq(val),
                "ne" => Predicate::Ne(val),
                "lt" => Predicate::Lt(val),
                "le" => Predicate::Le(val),
                "gt" => Predicate::Gt(val),
                _ => Predicate::Ge(val),
            })
        }
        "contains" => Some(Predicate::Contains(from_toml(dv))),
        "matches" => {
            let s = string(cx)?;
            if s.contains("{{")
                && let Ok(t) = Template::parse(&s)
                && t.uses_deployment()
            {
                // Checked with stand-in values; each run compiles it with the real ones.
                return match render_regex(&s, &DeploymentVars::sample()) {
                    Ok(_) => Some(Predicate::MatchesTemplate(s)),
                    Err(reason) => {
                        cx.error(v.span(), format!("invalid regex {}: {reason}", quote(&s)));
                        None
                    }
                };
            }
            compile_regex(&s, v, cx).map(Predicate::Matches)
        }
        "exists" => match dv.as_bool() {
            Some(b) => Some(Predicate::Exists(b)),
            None => {
                cx.error(
                    v.span(),
                    format!("`exists` must be true or false, found {}", type_name(dv)),
                );
                None
            }
        },
        "in" => {
            let DeValue::Array(items) = dv else {
                cx.error(
                    v.span(),
                    format!("`in` needs an array, found {}", type_name(dv)),
                );
                return None;
            };
            if durations {
                let ok: Vec<Option<()>> =
                    items.iter().map(|i| duration_operand(key, i, cx)).collect();
                if ok.iter().any(Option::is_none) {
                    return None;
                }
            }
            Some(Predicate::In(
                items.iter().map(|i| from_toml(i.get_ref())).collect(),
            ))
        }
        "starts_with" => string(cx).map(Predicate::StartsWith),
        "ends_with" => string(cx).map(Predicate::EndsWith),
        _ => None,
    }
}

/// Checks that an operand of a duration query is a duration string such as "800ms".
fn duration_operand(key: &str, v: &Value<'_>, cx: &mut Cx) -> Option<()> {
    match v.get_ref().as_str() {
        Some(s) => match parse_duration(s) {
            Ok(_) => Some(()),
            Err(m) => {
                cx.error(v.span(), format!("`{key}`: {m}"));
                None
            }
        },
        None => {
            cx.error(
                v.span(),
                format!(
                    "`{key}` of a duration query needs a duration such as \"800ms\", found {}",
                    type_name(v.get_ref())
                ),
            );
            None
        }
    }
}

fn compile_regex(pattern: &str, v: &Value<'_>, cx: &mut Cx) -> Option<Regex> {
    Regex::new(pattern)
        .map_err(|e| {
            cx.error(
                v.span(),
                format!("invalid regex {}: {}", quote(pattern), regex_error(&e)),
            )
        })
        .ok()
}

/// A regex syntax error's message line (its text spans several: pattern, caret, message).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid"))
        .to_string()
}

/// Compiles a `matches` pattern naming `{{ deployment.* }}`, the values escaped.
fn render_regex(source: &str, d: &DeploymentVars) -> Result<Regex, String> {
    let escaped = DeploymentVars {
        id: regex::escape(&d.id),
        version: regex::escape(&d.version),
        environment: regex::escape(&d.environment),
    };
    let scope = Scope::of_deployment(Some(std::sync::Arc::new(escaped)));
    let rendered = Template::parse(source)?.render(&scope);
    Regex::new(&rendered).map_err(|e| regex_error(&e))
}

// ---------------------------------------------------------------------------------------------
// Values and comparisons.

fn from_toml(v: &DeValue<'_>) -> Val {
    match v {
        DeValue::String(s) => Val::Text(s.to_string()),
        DeValue::Integer(_) => as_i128(v).map_or(Val::Null, Val::Int),
        DeValue::Float(_) => as_f64(v).map_or(Val::Null, Val::Float),
        DeValue::Boolean(b) => Val::Bool(*b),
        DeValue::Datetime(d) => Val::Text(d.to_string()),
        DeValue::Array(a) => Val::List(a.iter().map(|x| from_toml(x.get_ref())).collect()),
        DeValue::Table(t) => Val::Map(
            t.iter()
                .map(|(k, x)| (k.get_ref().to_string(), from_toml(x.get_ref())))
                .collect(),
        ),
    }
}

fn from_json(v: &serde_json::Value) -> Val {
    use serde_json::Value as J;
    match v {
        J::Null => Val::Null,
        J::Bool(b) => Val::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Int(i.into())
            } else if let Some(u) = n.as_u64() {
                Val::Int(u.into())
            } else {
                n.as_f64().map_or(Val::Null, Val::Float)
            }
        }
        J::String(s) => Val::Text(s.clone()),
        J::Array(a) => Val::List(a.iter().map(from_json).collect()),
        J::Object(o) => Val::Map(o.iter().map(|(k, x)| (k.clone(), from_json(x))).collect()),
    }
}

fn from_observation(o: &Observation) -> Val {
    match o {
        Observation::Number(n) => Val::Float(*n),
        Observation::Text(s) => Val::Text(s.clone()),
        Observation::Bool(b) => Val::Bool(*b),
        Observation::Duration(d) => Val::Dur(*d),
        Observation::List(items) => Val::List(items.iter().cloned().map(Val::Text).collect()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            _ => self.as_f64().partial_cmp(&other.as_f64()),
        }
    }
}

fn is_number(v: &Val) -> bool {
    matches!(v, Val::Int(_) | Val::Float(_))
}

/// A number, or text that reads as one ("42", " 3.5\n", "-1e3"): SQL values, stdout and
/// headers arrive as text.
fn number_of(v: &Val) -> Option<Num> {
    match v {
        Val::Int(i) => Some(Num::Int(*i)),
        Val::Float(f) => Some(Num::Float(*f)),
        Val::Text(s) => {
            let t = s.trim();
            let numeric = t
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
            if !numeric || !t.bytes().any(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse::<i128>()
                .map(Num::Int)
                .ok()
                .or_else(|| t.parse::<f64>().ok().map(Num::Float))
        }
        _ => None,
    }
}

/// A duration operand ("800ms") for a comparison with a duration.
fn duration_of(v: &Val) -> Option<Duration> {
    match v {
        Val::Dur(d) => Some(*d),
        Val::Text(s) => parse_duration(s).ok(),
        _ => None,
    }
}

fn bool_of(v: &Val) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(*b),
        Val::Text(s) => match s.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Equality of an actual value with an operand. Values of different types are simply unequal,
/// except that numbers equal numeric text and booleans equal "true"/"false"; a duration can
/// only be compared with a duration, anything else is an error.
fn equal(a: &Val, e: &Val) -> Result<bool, String> {
    match (a, e) {
        (Val::Dur(d), _) | (_, Val::Dur(d)) => {
            let other = if matches!(a, Val::Dur(_)) { e } else { a };
            duration_of(other)
                .map(|x| x == *d)
                .ok_or_else(|| cannot_compare(a, e))
        }
        _ if is_number(a) || is_number(e) => Ok(match (number_of(a), number_of(e)) {
            (Some(x), Some(y)) => x.cmp(y) == Some(Ordering::Equal),
            _ => false,
        }),
        (Val::Bool(_), _) | (_, Val::Bool(_)) => {
            Ok(bool_of(a).is_some() && bool_of(a) == bool_of(e))
        }
        (Val::List(x), Val::List(y)) => {
            Ok(x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q).unwrap_or(false)))
        }
        (Val::Map(x), Val::Map(y)) => Ok(x.len() == y.len()
            && x.iter()
                .all(|(k, p)| y.get(k).is_some_and(|q| equal(p, q).unwrap_or(false)))),
        (Val::Text(x), Val::Text(y)) => Ok(x == y),
        (Val::Null, Val::Null) => Ok(true),
        _ => Ok(false),
    }
}

/// Ordering of an actual value against an operand: durations with duration strings, numbers
/// (and numeric text) numerically, text lexicographically; anything else is an error.
fn order(a: &Val, e: &Val) -> Result<Ordering, String> {
    match (a, e) {
        (Val::Dur(d), _) => duration_of(e)
            .map(|x| d.cmp(&x))
            .ok_or_else(|| cannot_compare(a, e)),
        _ if is_number(a) || is_number(e) => match (number_of(a), number_of(e)) {
            (Some(x), Some(y)) => x.cmp(y).ok_or_else(|| cannot_compare(a, e)),
            _ => Err(cannot_compare(a, e)),
        },
        (Val::Text(x), Val::Text(y)) => Ok(x.as_str().cmp(y.as_str())),
        _ => Err(cannot_compare(a, e)),
    }
}

/// `contains`: membership in a list, substring of text, key of an object.
fn contains(a: &Val, e: &Val) -> Result<bool, String> {
    match (a, e) {
        (Val::List(items), _) => Ok(items.iter().any(|i| equal(i, e).unwrap_or(false))),
        (Val::Text(s), Val::Text(t)) => Ok(s.contains(t.as_str())),
        (Val::Text(s), Val::Int(_) | Val::Float(_)) => Ok(s.contains(&render(e, usize::MAX))),
        (Val::Map(m), Val::Text(k)) => Ok(m.contains_key(k)),
        _ => Err(format!(
            "cannot look for {} in {}",
            describe(e),
            describe(a)
        )),
    }
}

/// The text a text predicate (`matches`, `starts_with`, `ends_with`) looks at; numbers count
/// as their decimal text.
fn text_of(a: &Val, predicate: &str) -> Result<String, String> {
    match a {
        Val::Text(s) => Ok(s.clone()),
        Val::Int(_) | Val::Float(_) => Ok(render(a, usize::MAX)),
        _ => Err(format!("`{predicate}` needs text, found {}", describe(a))),
    }
}

fn cannot_compare(a: &Val, e: &Val) -> String {
    format!("cannot compare {} with {}", describe(a), describe(e))
}

/// A value with its type, for mismatch messages: `text "abc"`, `number 5`, `duration 120ms`.
fn describe(v: &Val) -> String {
    match v {
        Val::Null => "null".to_string(),
        Val::Bool(b) => format!("boolean {b}"),
        Val::Int(_) | Val::Float(_) => format!("number {}", render(v, SHOW_CHARS)),
        Val::Text(_) => format!("text {}", render(v, SHOW_CHARS)),
        Val::Dur(_) => format!("duration {}", render(v, SHOW_CHARS)),
        Val::List(items) => format!("a list of {} values", items.len()),
        Val::Map(m) => format!("an object with {} keys", m.len()),
    }
}

/// JSON-style quoting of a string.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A value as shown in messages, text cut to `limit` characters.
fn render(v: &Val, limit: usize) -> String {
    match v {
        Val::Null => "null".to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => f.to_string(),
        Val::Text(s) => {
            if s.chars().count() > limit {
                let cut: String = s.chars().take(limit).collect();
                format!("{}…", quote(&cut))
            } else {
                quote(s)
            }
        }
        Val::Dur(d) => format!("{d:?}"),
        Val::List(items) => {
            const MAX_ITEMS: usize = 10;
            let mut shown: Vec<String> = items
                .iter()
                .take(MAX_ITEMS)
                .map(|i| render(i, limit))
                .collect();
            if items.len() > MAX_ITEMS {
                shown.push(format!("… ({} more)", items.len() - MAX_ITEMS));
            }
            format!("[{}]", shown.join(", "))
        }
        Val::Map(m) => {
            const MAX_KEYS: usize = 10;
            let mut shown: Vec<String> = m
                .iter()
                .take(MAX_KEYS)
                .map(|(k, x)| format!("{}: {}", quote(k), render(x, limit)))
                .collect();
            if m.len() > MAX_KEYS {
                shown.push(format!("… ({} more)", m.len() - MAX_KEYS));
            }
            format!("{{{}}}", shown.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diag::{Diagnostic, SourceFile};
    use toml::de::DeTable;

    const HTTP: QueryScope = QueryScope {
        response: true,
        durations: &["total", "ttfb"],
        observations: &["cert_days"],
    };
    const SQL: QueryScope = QueryScope {
        response: false,
        durations: &["total"],
        observations: &["value", "rows", "answers", "elapsed", "ok"],
    };

    /// Parses `a = <inline>` and returns the assertion and the diagnostics.
    fn parse_in(inline: &str, scope: &QueryScope) -> (Option<Assertion>, Vec<Diagnostic>) {
        let src = SourceFile::new("t.toml", format!("a = {inline}\n"));
        let doc = DeTable::parse(&src.text).expect("test TOML parses");
        let mut diags = Vec::new();
        let mut cx = Cx {
            src: &src,
            diags: &mut diags,
        };
        let v = doc
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "a")
            .map(|(_, v)| v)
            .expect("key a");
        let a = Assertion::parse(v, scope, &mut cx);
        (a, diags)
    }

    fn ok(inline: &str) -> Assertion {
        ok_in(inline, &HTTP)
    }

    fn ok_in(inline: &str, scope: &QueryScope) -> Assertion {
        let (a, d) = parse_in(inline, scope);
        assert!(d.is_empty(), "unexpected diagnostics for {inline}: {d:?}");
        a.expect("assertion")
    }

    /// The single diagnostic for `inline`, as `line:col: message`.
    fn err_in(inline: &str, scope: &QueryScope) -> String {
        let (a, d) = parse_in(inline, scope);
        assert!(a.is_none(), "{inline} should not parse");
        assert_eq!(d.len(), 1, "expected one diagnostic for {inline}: {d:?}");
        format!("{}:{}: {}", d[0].line, d[0].col, d[0].message)
    }

    fn err(inline: &str) -> String {
        err_in(inline, &HTTP)
    }

    #[derive(Default)]
    struct Resp {
        status: Option<u16>,
        headers: Vec<(&'static str, &'static str)>,
        cookies: Vec<(&'static str, &'static str)>,
        body: Option<String>,
        json: Option<serde_json::Value>,
        durations: Vec<(&'static str, Duration)>,
        observations: Vec<(&'static str, Observation)>,
    }

    impl Resp {
        fn new(status: u16, body: &str) -> Self {
            Resp {
                status: Some(status),
                body: Some(body.to_string()),
                json: serde_json::from_str(body).ok(),
                ..Resp::default()
            }
        }

        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers.push((name, value));
            self
        }

        fn obs(mut self, name: &'static str, o: Observation) -> Self {
            self.observations.push((name, o));
            self
        }
    }

    impl Subject for Resp {
        fn status(&self) -> Option<u16> {
            self.status
        }
        fn header_values(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .collect()
        }
        fn cookie_values(&self, name: &str) -> Vec<String> {
            self.cookies
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .collect()
        }
        fn body(&self) -> Option<&str> {
            self.body.as_deref()
        }
        fn json(&self) -> Option<&serde_json::Value> {
            self.json.as_ref()
        }
        fn duration(&self, kind: &str) -> Option<Duration> {
            self.durations
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, d)| *d)
        }
        fn observation(&self, name: &str) -> Option<&Observation> {
            self.observations
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, o)| o)
        }
    }

    fn holds(inline: &str, s: &dyn Subject) -> bool {
        ok(inline).evaluate(s).is_ok()
    }

    fn holds_in(inline: &str, scope: &QueryScope, s: &dyn Subject) -> bool {
        ok_in(inline, scope).evaluate(s).is_ok()
    }

    fn failure(inline: &str, s: &dyn Subject) -> AssertionFailure {
        ok(inline).evaluate(s).expect_err("assertion should fail")
    }

    fn message(inline: &str, s: &dyn Subject) -> String {
        let a = ok(inline);
        let f = a.evaluate(s).expect_err("assertion should fail");
        a.failure_message(&f)
    }

    fn json_resp() -> Resp {
        Resp::new(
            200,
            r#"{"status":"ok","count":"42","n":7,"ratio":0.25,"up":true,"gone":null,
                "items":[{"id":1},{"id":2},{"id":3}],"tags":["a","b"],"meta":{"v":"1.2.3"}}"#,
        )
    }

    // ---- queries ----------------------------------------------------------------------------

    #[test]
    fn status_shorthand_and_long_forms() {
        let r = Resp::new(204, "");
        assert!(holds("{ status = 204 }", &r));
        assert!(!holds("{ status = 200 }", &r));
        assert!(holds("{ status = [200, 204] }", &r));
        assert!(holds("{ status = true, eq = 204 }", &r));
        assert!(holds("{ status = true, in = [200, 204] }", &r));
        assert!(holds(
            "{ status = true, ge = 200, severity = \"fail\" }",
            &r
        ));
        assert_eq!(ok("{ status = 200 }").to_string(), "status eq 200");
        assert_eq!(
            ok("{ status = [200, 204] }").to_string(),
            "status in [200, 204]"
        );
        assert!(ok("{ status = 200 }").is_status());
    }

    #[test]
    fn status_failure_reads_like_http() {
        let r = Resp::new(500, "");
        assert_eq!(message("{ status = 200 }", &r), "HTTP 500, expected 200");
        assert_eq!(
            message("{ status = true, in = [200, 204] }", &r),
            "HTTP 500, expected in [200, 204]"
        );
        let f = failure("{ status = 200 }", &r);
        assert_eq!(f.assertion, "status eq 200");
        assert_eq!(f.expected, "eq 200");
        assert_eq!(f.actual, "500");
        assert!(!f.warn);
    }

    #[test]
    fn header_is_case_insensitive_and_multi_valued() {
        let r = Resp::new(200, "")
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Vary", "Accept")
            .header("Vary", "Origin");
        assert!(holds(
            "{ header = \"content-type\", starts_with = \"application/json\" }",
            &r
        ));
        assert!(holds("{ header = \"vary\", contains = \"Origin\" }", &r));
        // With several values, `contains` is membership, not substring.
        assert!(!holds("{ header = \"vary\", contains = \"Orig\" }", &r));
        // Other predicates look at the first value.
        assert!(holds("{ header = \"vary\", eq = \"Accept\" }", &r));
        assert!(holds(
            "{ header = \"content-type\", not = true, contains = \"html\" }",
            &r
        ));
        assert_eq!(
            ok("{ header = \"content-type\", not = true, contains = \"html\" }").to_string(),
            "header content-type not contains \"html\""
        );
    }

    #[test]
    fn cookie_query() {
        let mut r = Resp::new(200, "");
        r.cookies.push(("session", "abc123"));
        assert!(holds(
            "{ cookie = \"session\", matches = \"^[a-z0-9]+$\" }",
            &r
        ));
        assert!(holds("{ cookie = \"session\", exists = true }", &r));
        assert!(holds("{ cookie = \"other\", exists = false }", &r));
    }

    #[test]
    fn body_query() {
        let r = Resp::new(200, "all systems go");
        assert!(holds("{ body = true, contains = \"systems\" }", &r));
        assert!(holds("{ body = true, ends_with = \"go\" }", &r));
        assert!(!holds("{ body = true, eq = \"nope\" }", &r));
    }

    #[test]
    fn jsonpath_query_and_message() {
        let r = json_resp();
        assert!(holds("{ jsonpath = \"$.status\", eq = \"ok\" }", &r));
        assert!(holds("{ jsonpath = \"$.up\", eq = true }", &r));
        assert!(holds("{ jsonpath = \"$.gone\", exists = true }", &r));
        assert!(holds("{ jsonpath = \"$.meta\", contains = \"v\" }", &r));
        assert!(holds("{ jsonpath = \"$.tags\", eq = [\"a\", \"b\"] }", &r));
        assert!(holds(
            "{ jsonpath = \"$.meta\", eq = { v = \"1.2.3\" } }",
            &r
        ));
        let down = Resp::new(200, r#"{"status":"down"}"#);
        assert_eq!(
            message("{ jsonpath = \"$.status\", eq = \"ok\" }", &down),
            "jsonpath $.status: expected eq \"ok\", got \"down\""
        );
    }

    #[test]
    fn regex_query_takes_first_group_or_whole_match() {
        let r = Resp::new(200, "version: v1.42.0 build 7");
        assert!(holds("{ regex = 'v(\\d+)\\.(\\d+)', eq = 1 }", &r));
        assert!(holds("{ regex = 'build \\d+', eq = \"build 7\" }", &r));
        assert!(holds("{ regex = 'nomatch(\\d)', exists = false }", &r));
        assert_eq!(
            message("{ regex = 'v(\\d+)', gt = 2 }", &r),
            "regex \"v(\\\\d+)\": expected gt 2, got \"1\""
        );
    }

    #[test]
    fn duration_query() {
        let mut r = Resp::new(200, "");
        r.durations.push(("total", Duration::from_millis(120)));
        assert!(holds("{ duration = \"total\", lt = \"800ms\" }", &r));
        assert!(holds("{ duration = \"total\", ge = \"0.1s\" }", &r));
        assert!(holds("{ duration = \"total\", eq = \"120ms\" }", &r));
        assert!(!holds("{ duration = \"total\", gt = \"1s\" }", &r));
        assert_eq!(
            ok("{ duration = \"total\", lt = \"800ms\" }").to_string(),
            "duration total lt 800ms"
        );
        assert_eq!(
            message("{ duration = \"total\", gt = \"1s\" }", &r),
            "duration total: expected gt 1s, got 120ms"
        );
        // ttfb not measured here: nothing.
        assert_eq!(
            failure("{ duration = \"ttfb\", lt = \"1s\" }", &r).actual,
            "nothing"
        );
    }

    #[test]
    fn observe_query() {
        let r = Resp::default()
            .obs("value", Observation::Text("42".into()))
            .obs("rows", Observation::Number(3.0))
            .obs(
                "answers",
                Observation::List(vec!["10.0.0.5".into(), "10.0.0.6".into()]),
            )
            .obs("ok", Observation::Bool(true));
        assert!(holds_in("{ observe = \"rows\", eq = 3 }", &SQL, &r));
        assert!(holds_in(
            "{ observe = \"answers\", contains = \"10.0.0.5\" }",
            &SQL,
            &r
        ));
        assert!(holds_in("{ observe = \"ok\", eq = true }", &SQL, &r));
        assert!(holds_in(
            "{ observe = \"elapsed\", exists = false }",
            &SQL,
            &r
        ));
        assert_eq!(
            ok_in("{ observe = \"rows\", gt = 0 }", &SQL).to_string(),
            "observe rows gt 0"
        );
    }

    #[test]
    fn observed_duration_compares_with_duration_strings() {
        let r = Resp::default().obs("elapsed", Observation::Duration(Duration::from_secs(2)));
        assert!(holds_in("{ observe = \"elapsed\", lt = \"3s\" }", &SQL, &r));
        assert!(holds_in("{ observe = \"elapsed\", eq = \"2s\" }", &SQL, &r));
        let a = ok_in("{ observe = \"elapsed\", lt = 5 }", &SQL);
        let f = a.evaluate(&r).expect_err("number vs duration");
        assert_eq!(f.actual, "2s (cannot compare duration 2s with number 5)");
    }

    // ---- filters ----------------------------------------------------------------------------

    #[test]
    fn count_filter() {
        let r = json_resp().header("Vary", "a").header("Vary", "b");
        assert!(holds(
            "{ jsonpath = \"$.items\", filter = \"count\", eq = 3 }",
            &r
        ));
        assert!(holds(
            "{ jsonpath = \"$.items[*].id\", filter = \"count\", ge = 3 }",
            &r
        ));
        assert!(holds(
            "{ header = \"vary\", filter = \"count\", eq = 2 }",
            &r
        ));
        assert!(holds(
            "{ header = \"x-none\", filter = \"count\", eq = 0 }",
            &r
        ));
        assert!(holds(
            "{ jsonpath = \"$.meta\", filter = \"count\", eq = 1 }",
            &r
        ));
        assert_eq!(
            ok("{ jsonpath = \"$.items\", filter = \"count\", ge = 1 }").to_string(),
            "jsonpath $.items count ge 1"
        );
    }

    #[test]
    fn first_last_nth_filters() {
        let r = json_resp().header("Vary", "a").header("Vary", "b");
        assert!(holds(
            "{ jsonpath = \"$.items[*].id\", filter = \"first\", eq = 1 }",
            &r
        ));
        assert!(holds(
            "{ jsonpath = \"$.items[*].id\", filter = \"last\", eq = 3 }",
            &r
        ));
        assert!(holds(
            "{ jsonpath = \"$.items[*].id\", nth = 1, eq = 2 }",
            &r
        ));
        // A single array value is filtered by its items.
        assert!(holds(
            "{ jsonpath = \"$.tags\", filter = \"last\", eq = \"b\" }",
            &r
        ));
        assert!(holds(
            "{ header = \"vary\", filter = \"last\", eq = \"b\" }",
            &r
        ));
        assert!(holds("{ header = \"vary\", nth = 5, exists = false }", &r));
        assert_eq!(
            message("{ jsonpath = \"$.items[*].id\", nth = 9, eq = 1 }", &r),
            "jsonpath $.items[*].id nth 9: expected eq 1, got nothing"
        );
    }

    // ---- predicates -------------------------------------------------------------------------

    #[test]
    fn ordering_predicates() {
        let r = json_resp();
        assert!(holds("{ jsonpath = \"$.n\", lt = 8 }", &r));
        assert!(holds("{ jsonpath = \"$.n\", le = 7 }", &r));
        assert!(holds("{ jsonpath = \"$.n\", gt = 6.5 }", &r));
        assert!(holds("{ jsonpath = \"$.n\", ge = 7 }", &r));
        assert!(!holds("{ jsonpath = \"$.n\", gt = 7 }", &r));
        assert!(holds("{ jsonpath = \"$.ratio\", lt = 0.5 }", &r));
        // Text compares as text.
        assert!(holds(
            "{ jsonpath = \"$.status\", gt = \"ol\", not = true }",
            &r
        ));
        assert!(holds("{ jsonpath = \"$.status\", gt = \"a\" }", &r));
    }

    #[test]
    fn eq_ne_in_predicates() {
        let r = json_resp();
        assert!(holds("{ jsonpath = \"$.status\", ne = \"down\" }", &r));
        assert!(!holds("{ jsonpath = \"$.status\", ne = \"ok\" }", &r));
        assert!(holds(
            "{ jsonpath = \"$.status\", in = [\"ok\", \"fine\"] }",
            &r
        ));
        assert!(!holds("{ jsonpath = \"$.status\", in = [\"bad\"] }", &r));
        // Different types are unequal, not an error.
        assert!(holds("{ jsonpath = \"$.status\", ne = 5 }", &r));
        assert!(holds("{ jsonpath = \"$.gone\", ne = \"x\" }", &r));
    }

    #[test]
    fn contains_on_text_array_and_object() {
        let r = json_resp();
        assert!(holds("{ jsonpath = \"$.status\", contains = \"k\" }", &r));
        assert!(holds("{ jsonpath = \"$.tags\", contains = \"b\" }", &r));
        assert!(!holds("{ jsonpath = \"$.tags\", contains = \"c\" }", &r));
        assert!(holds(
            "{ jsonpath = \"$.items\", contains = { id = 2 } }",
            &r
        ));
        assert!(holds("{ jsonpath = \"$.meta\", contains = \"v\" }", &r));
        assert!(!holds("{ jsonpath = \"$.meta\", contains = \"w\" }", &r));
        let f = failure("{ jsonpath = \"$.n\", contains = \"7\" }", &r);
        assert_eq!(f.actual, "7 (cannot look for text \"7\" in number 7)");
    }

    #[test]
    fn matches_starts_with_ends_with() {
        let r = json_resp();
        assert!(holds(
            "{ jsonpath = \"$.meta.v\", matches = '^\\d+\\.\\d+\\.\\d+$' }",
            &r
        ));
        assert!(!holds("{ jsonpath = \"$.meta.v\", matches = '^v' }", &r));
        assert!(holds(
            "{ jsonpath = \"$.meta.v\", starts_with = \"1.\" }",
            &r
        ));
        assert!(holds("{ jsonpath = \"$.meta.v\", ends_with = \".3\" }", &r));
        // Numbers are matched as their decimal text.
        assert!(holds("{ status = true, starts_with = \"2\" }", &r));
        let f = failure("{ jsonpath = \"$.tags\", starts_with = \"a\" }", &r);
        assert_eq!(
            f.actual,
            "[\"a\", \"b\"] (`starts_with` needs text, found a list of 2 values)"
        );
    }

    #[test]
    fn exists_predicate() {
        let r = json_resp().header("X-Trace", "1");
        assert!(holds("{ jsonpath = \"$.status\", exists = true }", &r));
        assert!(holds("{ jsonpath = \"$.missing\", exists = false }", &r));
        assert!(holds("{ header = \"x-trace\", exists = true }", &r));
        let f = failure("{ header = \"x-debug\", exists = true }", &r);
        assert_eq!(f.actual, "nothing");
        assert_eq!(f.expected, "exists");
        let f = failure("{ header = \"x-trace\", exists = false }", &r);
        assert_eq!(f.actual, "\"1\"");
        assert_eq!(f.expected, "exists false");
    }

    #[test]
    fn not_negates() {
        let r = json_resp();
        assert!(holds(
            "{ jsonpath = \"$.status\", not = true, eq = \"down\" }",
            &r
        ));
        assert!(!holds(
            "{ jsonpath = \"$.status\", not = true, eq = \"ok\" }",
            &r
        ));
        assert!(holds(
            "{ jsonpath = \"$.missing\", not = true, exists = true }",
            &r
        ));
        let f = failure("{ jsonpath = \"$.status\", not = true, eq = \"ok\" }", &r);
        assert_eq!(f.expected, "not eq \"ok\"");
        // Missing values still fail a negated predicate: absence is `exists = false`.
        assert_eq!(
            failure("{ jsonpath = \"$.missing\", not = true, eq = 1 }", &r).actual,
            "nothing"
        );
    }

    // ---- comparison semantics ---------------------------------------------------------------

    #[test]
    fn numbers_compare_numerically_even_as_text() {
        let r = json_resp().header("X-Count", " 42 ");
        assert!(holds("{ jsonpath = \"$.count\", eq = 42 }", &r));
        assert!(holds("{ jsonpath = \"$.count\", gt = 9 }", &r));
        assert!(holds("{ jsonpath = \"$.count\", eq = 42.0 }", &r));
        assert!(holds("{ header = \"x-count\", le = 42 }", &r));
        let sql = Resp::default().obs("value", Observation::Text("3.50".into()));
        assert!(holds_in("{ observe = \"value\", eq = 3.5 }", &SQL, &sql));
        assert!(holds_in("{ observe = \"value\", lt = 4 }", &SQL, &sql));
        // Text vs text stays text.
        assert!(!holds_in(
            "{ observe = \"value\", eq = \"3.5\" }",
            &SQL,
            &sql
        ));
    }

    #[test]
    fn large_integers_compare_exactly() {
        let r = Resp::new(200, r#"{"id": 9007199254740993}"#);
        assert!(holds("{ jsonpath = \"$.id\", eq = 9007199254740993 }", &r));
        assert!(!holds("{ jsonpath = \"$.id\", eq = 9007199254740992 }", &r));
    }

    #[test]
    fn type_mismatch_is_a_failure_that_says_so() {
        let r = Resp::new(200, r#"{"name":"abc","up":true}"#);
        let a = ok("{ jsonpath = \"$.name\", lt = 5 }");
        let f = a.evaluate(&r).expect_err("mismatch");
        assert_eq!(
            f.actual,
            "\"abc\" (cannot compare text \"abc\" with number 5)"
        );
        assert_eq!(
            a.failure_message(&f),
            "jsonpath $.name: expected lt 5, got \"abc\" (cannot compare text \"abc\" with number 5)"
        );
        // `not` does not turn an impossible comparison into a pass.
        assert!(!holds("{ jsonpath = \"$.name\", not = true, lt = 5 }", &r));
        assert_eq!(
            failure("{ jsonpath = \"$.up\", gt = \"a\" }", &r).actual,
            "true (cannot compare boolean true with text \"a\")"
        );
    }

    #[test]
    fn odd_values_never_panic() {
        let r = Resp::default()
            .obs("value", Observation::Number(f64::NAN))
            .obs("rows", Observation::Text("   ".into()));
        let f = ok_in("{ observe = \"value\", lt = 5 }", &SQL)
            .evaluate(&r)
            .expect_err("NaN is not ordered");
        assert_eq!(f.actual, "NaN (cannot compare number NaN with number 5)");
        assert!(!holds_in("{ observe = \"value\", eq = 5 }", &SQL, &r));
        assert!(!holds_in("{ observe = \"rows\", ge = 0 }", &SQL, &r));
        assert!(holds_in(
            "{ observe = \"rows\", filter = \"count\", eq = 1 }",
            &SQL,
            &r
        ));
    }

    #[test]
    fn missing_value_is_nothing() {
        let r = json_resp();
        assert_eq!(
            message("{ jsonpath = \"$.x\", eq = 1 }", &r),
            "jsonpath $.x: expected eq 1, got nothing"
        );
        assert_eq!(
            message("{ status = 200 }", &Resp::default()),
            "no HTTP status, expected 200"
        );
        assert_eq!(
            failure("{ body = true, contains = \"x\" }", &Resp::default()).actual,
            "nothing"
        );
    }

    #[test]
    fn non_json_body_fails_jsonpath() {
        let r = Resp::new(200, "<html>oops</html>");
        assert_eq!(
            message("{ jsonpath = \"$.status\", eq = \"ok\" }", &r),
            "jsonpath $.status: expected eq \"ok\", got nothing (body is not JSON)"
        );
        assert!(!holds("{ jsonpath = \"$.status\", exists = false }", &r));
    }

    #[test]
    fn long_actual_values_are_cut() {
        let long = format!("\"{}\"", "x".repeat(500));
        let r = Resp::new(200, &long);
        let f = failure("{ body = true, eq = \"y\" }", &r);
        assert!(f.actual.chars().count() < 140, "{}", f.actual);
        assert!(f.actual.ends_with('…'));
    }

    // ---- judge ------------------------------------------------------------------------------

    #[test]
    fn judge_pass() {
        let r = json_resp();
        let list = [
            ok("{ status = 200 }"),
            ok("{ jsonpath = \"$.status\", eq = \"ok\" }"),
        ];
        let j = judge(&list, &r, true);
        assert_eq!((j.status, j.reason), (Status::Pass, Reason::Ok));
        assert_eq!(j.message, "ok");
        assert!(j.failures.is_empty());
    }

    #[test]
    fn judge_hard_failures_and_more_count() {
        let r = Resp::new(200, r#"{"status":"down","n":1}"#);
        let list = [
            ok("{ jsonpath = \"$.n\", gt = 5, severity = \"warn\" }"),
            ok("{ jsonpath = \"$.status\", eq = \"ok\" }"),
            ok("{ jsonpath = \"$.n\", eq = 2 }"),
        ];
        let j = judge(&list, &r, true);
        assert_eq!((j.status, j.reason), (Status::Fail, Reason::Assertion));
        assert_eq!(
            j.message,
            "jsonpath $.status: expected eq \"ok\", got \"down\" (+2 more)"
        );
        assert_eq!(j.failures.len(), 3);
        assert!(j.failures[0].warn);
    }

    #[test]
    fn judge_status_failure_has_reason_status() {
        let r = Resp::new(503, "{}");
        let list = [
            ok("{ status = 200 }"),
            ok("{ jsonpath = \"$.a\", exists = true }"),
        ];
        let j = judge(&list, &r, true);
        assert_eq!((j.status, j.reason), (Status::Fail, Reason::Status));
        assert_eq!(j.message, "HTTP 503, expected 200 (+1 more)");
    }

    #[test]
    fn judge_warn_only_is_degraded() {
        let r = Resp::new(200, r#"{"queue": 900}"#);
        let a = ok("{ jsonpath = \"$.queue\", lt = 500, severity = \"warn\" }");
        assert!(a.is_warn());
        let j = judge(std::slice::from_ref(&a), &r, true);
        assert_eq!((j.status, j.reason), (Status::Degraded, Reason::Assertion));
        assert_eq!(j.message, "jsonpath $.queue: expected lt 500, got 900");
        assert!(j.failures[0].warn);
    }

    #[test]
    fn judge_implicit_2xx() {
        let r = Resp::new(500, "{}");
        let j = judge(&[], &r, true);
        assert_eq!((j.status, j.reason), (Status::Fail, Reason::Status));
        assert_eq!(j.message, "HTTP 500, expected 2xx");
        assert_eq!(j.failures.len(), 1);
        // Off: no status judgement at all.
        let j = judge(&[], &r, false);
        assert_eq!(j.status, Status::Pass);
        // Any status assertion replaces the implicit one.
        let j = judge(&[ok("{ status = 500 }")], &r, true);
        assert_eq!(j.status, Status::Pass);
        // Non-status assertions do not.
        let j = judge(&[ok("{ body = true, eq = \"{}\" }")], &r, true);
        assert_eq!(j.status, Status::Fail);
        assert!(judge(&[], &Resp::new(204, ""), true).status == Status::Pass);
    }

    // ---- parse errors -----------------------------------------------------------------------

    #[test]
    fn bad_jsonpath_is_reported_at_its_value() {
        let m = err("{ jsonpath = \"$.items[\", exists = true }");
        assert!(m.starts_with("1:18: invalid JSONPath \"$.items[\""), "{m}");
    }

    #[test]
    fn bad_regexes_are_reported() {
        let m = err("{ regex = \"(abc\", exists = true }");
        assert!(m.starts_with("1:15: invalid regex \"(abc\": "), "{m}");
        assert!(!m.contains('\n'), "{m}");
        let m = err("{ body = true, matches = \"[z-a]\" }");
        assert!(m.starts_with("1:30: invalid regex \"[z-a]\": "), "{m}");
    }

    #[test]
    fn two_queries() {
        assert_eq!(
            err("{ status = true, header = \"x\", eq = 1 }"),
            "1:22: assertion has two queries (`status` and `header`)"
        );
        assert_eq!(
            err("{ body = true, header = \"x\", cookie = \"y\", eq = 1 }"),
            "1:34: assertion has several queries (`body`, `header` and `cookie`)"
        );
    }

    #[test]
    fn no_query_and_no_predicate() {
        assert_eq!(
            err("{ eq = 1 }"),
            "1:5: assertion has no query (one of status, header, cookie, body, jsonpath, regex, duration, observe)"
        );
        assert_eq!(
            err("{ header = \"x\" }"),
            "1:5: assertion has no predicate (one of eq, ne, lt, le, gt, ge, contains, matches, exists, in, starts_with, ends_with)"
        );
    }

    #[test]
    fn two_predicates() {
        assert_eq!(
            err("{ header = \"x\", eq = \"a\", ne = \"b\" }"),
            "1:31: assertion has two predicates (`eq` and `ne`)"
        );
        assert_eq!(
            err("{ status = 200, eq = 201 }"),
            "1:21: assertion has two predicates (`status = …` and `eq`); write `status = true` with one predicate"
        );
    }

    #[test]
    fn unknown_keys_get_hints() {
        assert_eq!(
            err("{ header = \"x\", equals = \"a\" }"),
            "1:21: unknown key `equals` in assertion (did you mean `eq`?)"
        );
        assert_eq!(
            err("{ header = \"x\", eq = \"a\", severty = \"warn\" }"),
            "1:31: unknown key `severty` in assertion (did you mean `severity`?)"
        );
        // A misspelt predicate or query is reported once, not also as missing.
        assert_eq!(
            err("{ header = \"x\", eqq = \"a\" }"),
            "1:21: unknown key `eqq` in assertion (did you mean `eq`?)"
        );
        assert_eq!(
            err("{ jsonpth = \"$.a\", eq = 1 }"),
            "1:7: unknown key `jsonpth` in assertion (did you mean `jsonpath`?)"
        );
    }

    #[test]
    fn queries_outside_the_scope() {
        assert_eq!(
            err_in("{ header = \"x\", exists = true }", &SQL),
            "1:7: `header` is not available for this check type"
        );
        assert_eq!(
            err_in("{ status = 200 }", &SQL),
            "1:7: `status` is not available for this check type"
        );
        assert_eq!(
            err("{ observe = \"rows\", gt = 1 }"),
            "1:17: unknown observation `rows` for this check type (one of cert_days)"
        );
        assert_eq!(
            err_in("{ duration = \"ttfb\", lt = \"1s\" }", &SQL),
            "1:18: unknown duration `ttfb` (one of total)"
        );
        let none = QueryScope {
            response: false,
            durations: &[],
            observations: &[],
        };
        assert_eq!(
            err_in("{ duration = \"total\", lt = \"1s\" }", &none),
            "1:7: `duration` is not available for this check type"
        );
    }

    #[test]
    fn duration_queries_need_duration_operands() {
        assert_eq!(
            err("{ duration = \"total\", lt = 800 }"),
            "1:32: `lt` of a duration query needs a duration such as \"800ms\", found an integer"
        );
        let m = err("{ duration = \"total\", lt = \"fast\" }");
        assert!(
            m.starts_with("1:32: `lt`: invalid duration \"fast\""),
            "{m}"
        );
        let m = err("{ duration = \"total\", in = [\"1s\", \"x\"] }");
        assert!(m.starts_with("1:39: `in`: invalid duration \"x\""), "{m}");
        assert_eq!(
            err("{ duration = \"total\", contains = \"1s\" }"),
            "1:38: `contains` cannot apply to a duration (use eq, ne, lt, le, gt, ge or in)"
        );
        // Counted, a duration query is a number.
        ok("{ duration = \"total\", filter = \"count\", eq = 1 }");
    }

    #[test]
    fn bad_operands_filters_and_severity() {
        assert_eq!(
            err("{ header = \"x\", lt = [1] }"),
            "1:26: `lt` needs a number, a string or a duration, found an array"
        );
        assert_eq!(
            err("{ header = \"x\", in = \"a\" }"),
            "1:26: `in` needs an array, found a string"
        );
        assert_eq!(
            err("{ header = \"x\", exists = \"yes\" }"),
            "1:30: `exists` must be true or false, found a string"
        );
        assert_eq!(
            err("{ header = \"x\", filter = \"sum\", eq = 1 }"),
            "1:30: filter must be \"count\", \"first\" or \"last\" (or `nth = N`), found \"sum\""
        );
        assert_eq!(
            err("{ header = \"x\", nth = -1, eq = 1 }"),
            "1:27: nth must be a non-negative index (0 is the first value), found an integer"
        );
        assert_eq!(
            err("{ header = \"x\", eq = 1, severity = \"info\" }"),
            "1:40: severity must be \"warn\" or \"fail\", found \"info\""
        );
        assert_eq!(
            err("{ status = \"2xx\" }"),
            "1:16: `status` must be a status code (200), a list of codes ([200, 204]) or true with a predicate, found \"2xx\""
        );
        assert_eq!(
            err("{ status = [200, 999] }"),
            "1:22: status code 999 is out of range (100..=599)"
        );
        assert_eq!(
            err("{ body = false, eq = \"\" }"),
            "1:14: `body` must be true, found a boolean"
        );
    }

    #[test]
    fn every_problem_in_one_table_is_reported() {
        let (a, d) = parse_in(
            "{ jsonpath = \"$[\", matches = \"(\", severity = \"loud\", bogus = 1 }",
            &HTTP,
        );
        assert!(a.is_none());
        assert_eq!(d.len(), 4, "{d:?}");
    }

    #[test]
    fn parse_list_keeps_good_items_and_reports_positions() {
        let text = "expect = [\n  { status = 200 },\n  { jsonpath = \"$.[\", eq = 1 },\n  { body = true, contains = \"ok\" },\n]\n";
        let src = SourceFile::new("c.toml", text.to_string());
        let doc = DeTable::parse(&src.text).expect("parses");
        let mut diags = Vec::new();
        let mut cx = Cx {
            src: &src,
            diags: &mut diags,
        };
        let (_, v) = doc.get_ref().iter().next().expect("expect key");
        let list = Assertion::parse_list(v, &HTTP, &mut cx);
        assert_eq!(list.len(), 2);
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].col), (3, 16));
        assert!(
            diags[0]
                .to_string()
                .starts_with("c.toml:3:16: invalid JSONPath")
        );
    }

    #[test]
    fn parse_list_rejects_a_non_array() {
        let src = SourceFile::new("c.toml", "expect = { status = 200 }\n".to_string());
        let doc = DeTable::parse(&src.text).expect("parses");
        let mut diags = Vec::new();
        let mut cx = Cx {
            src: &src,
            diags: &mut diags,
        };
        let (_, v) = doc.get_ref().iter().next().expect("expect key");
        assert!(Assertion::parse_list(v, &HTTP, &mut cx).is_empty());
        assert_eq!(
            diags[0].message,
            "expect must be an array of assertions, found a table"
        );
    }

    #[test]
    fn not_a_table() {
        assert_eq!(
            err("200"),
            "1:5: assertion must be a table, found an integer"
        );
    }

    // ---- {{ deployment.* }} in expectations ----------------------------------------------

    fn deployed(version: &str) -> Option<std::sync::Arc<DeploymentVars>> {
        Some(std::sync::Arc::new(DeploymentVars {
            id: "d-7".into(),
            version: version.into(),
            environment: "prod".into(),
        }))
    }

    #[tokio::test]
    async fn a_deployment_operand_is_judged_against_the_runs_deployment() {
        let a = ok("{ jsonpath = \"$.meta.v\", eq = \"{{ deployment.version }}\" }");
        assert!(a.uses_deployment());
        let r = json_resp();
        let with =
            |v: &str| crate::template::with_deployment(deployed(v), async { a.evaluate(&r) });
        assert!(with("1.2.3").await.is_ok());
        let f = with("2.0.0").await.expect_err("the old version answers");
        assert_eq!(f.expected, "eq \"2.0.0\"");
        assert_eq!(f.actual, "\"1.2.3\"");
        // Every predicate taking text, and `in` lists.
        for inline in [
            "{ jsonpath = \"$.meta.v\", starts_with = \"{{ deployment.version }}\" }",
            "{ jsonpath = \"$.meta.v\", in = [\"0.9\", \"{{ deployment.version }}\"] }",
            "{ body = true, contains = \"{{ deployment.version }}\" }",
            "{ jsonpath = \"$.meta.v\", matches = \"^{{ deployment.version }}$\" }",
        ] {
            let a = ok(inline);
            let run = |v: &'static str| {
                crate::template::with_deployment(deployed(v), async { a.evaluate(&r).is_ok() })
            };
            assert!(run("1.2.3").await, "{inline}");
            assert!(!run("1.2.4").await, "{inline}");
        }
    }

    #[tokio::test]
    async fn a_templated_regex_escapes_the_values() {
        let a = ok("{ jsonpath = \"$.meta.v\", matches = \"^{{ deployment.version }}$\" }");
        let r = json_resp();
        // "1.2.3" as a pattern would match "1x2x3"; escaped, the dots are dots.
        let r2 = Resp::new(200, r#"{"meta":{"v":"1x2x3"}}"#);
        let run = |s: &'static Resp| {
            crate::template::with_deployment(deployed("1.2.3"), async { a.evaluate(s).is_ok() })
        };
        let (r, r2) = (Box::leak(Box::new(r)), Box::leak(Box::new(r2)));
        assert!(run(r).await);
        assert!(!run(r2).await);
    }

    #[test]
    fn without_a_deployment_such_assertions_are_skipped_not_failed() {
        let list = [
            ok("{ status = 200 }"),
            ok("{ jsonpath = \"$.meta.v\", eq = \"{{ deployment.version }}\" }"),
        ];
        let j = judge(&list, &json_resp(), true);
        assert_eq!(j.status, Status::Pass, "{j:?}");
        // The others are still judged.
        let j = judge(&list, &Resp::new(503, "{}"), true);
        assert_eq!(j.status, Status::Fail);
        assert_eq!(j.failures.len(), 1);
    }

    #[test]
    fn deployment_references_are_checked_at_load_and_other_braces_stay_literal() {
        assert!(
            err("{ body = true, eq = \"{{ deployment.verison }}\" }")
                .contains("a deployment has `version`, `id` and `environment`")
        );
        assert!(
            err("{ body = true, matches = \"({{ deployment.version }}\" }")
                .contains("invalid regex")
        );
        let literal = ok("{ body = true, contains = \"{{ name }}\" }");
        assert!(!literal.uses_deployment());
        assert!(
            literal
                .evaluate(&Resp::new(200, "Hello {{ name }}"))
                .is_ok()
        );
    }
}
