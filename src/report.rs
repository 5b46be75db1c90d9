//! Output of `bakewatch once`: a table for people, JSON for scripts, JUnit XML for CI.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::checks::{Outcome, Status};
use crate::config::CheckConfig;

/// One check and its outcome.
pub struct Row<'a> {
    pub check: &'a CheckConfig,
    pub outcome: Arc<Outcome>,
}

pub fn table(rows: &[Row]) -> String {
    let name_w = rows
        .iter()
        .map(|r| r.check.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<name_w$}  {:<8}  {:<10}  {:>9}  MESSAGE\n",
        "CHECK", "STATUS", "REASON", "DURATION"
    );
    for r in rows {
        let o = &r.outcome;
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<8}  {:<10}  {:>7.1}ms  {}",
            r.check.name,
            o.status.as_str(),
            o.reason.as_str(),
            o.duration.as_secs_f64() * 1000.0,
            o.message
        );
    }
    let failed = rows
        .iter()
        .filter(|r| !r.outcome.status.is_success())
        .count();
    let _ = writeln!(out, "\n{} passed, {} failed", rows.len() - failed, failed);
    out
}

pub fn json(rows: &[Row]) -> String {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(&*r.outcome).expect("outcome serializes");
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("check".into(), r.check.name.clone().into());
                m.insert("service".into(), r.check.service.clone().into());
                m.insert("type".into(), r.check.type_name().into());
            }
            v
        })
        .collect();
    let mut s =
        serde_json::to_string_pretty(&serde_json::json!({ "results": list })).expect("json");
    s.push('\n');
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// One testcase per check; failures carry reason and message, errors are `<error>`.
pub fn junit(rows: &[Row]) -> String {
    let failures = rows
        .iter()
        .filter(|r| r.outcome.status == Status::Fail)
        .count();
    let errors = rows
        .iter()
        .filter(|r| r.outcome.status == Status::Error)
        .count();
    let total: f64 = rows.iter().map(|r| r.outcome.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"bakewatch\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">",
        rows.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"bakewatch\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">",
        rows.len()
    );
    for r in rows {
        let o = &r.outcome;
        let class = if r.check.service.is_empty() {
            r.check.type_name().to_string()
        } else {
            r.check.service.clone()
        };
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&class),
            xml_escape(&r.check.name),
            o.duration.as_secs_f64()
        );
        let msg = xml_escape(&o.message);
        let detail: String = o
            .failed_assertions
            .iter()
            .map(|f| {
                format!(
                    "{}: expected {}, got {}\n",
                    f.assertion, f.expected, f.actual
                )
            })
            .collect();
        match o.status {
            Status::Pass => out.push_str("/>\n"),
            Status::Degraded => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>degraded: {msg}</system-out>\n    </testcase>"
                );
            }
            Status::Fail => {
                let _ = writeln!(
                    out,
                    ">\n      <failure type=\"{}\" message=\"{msg}\">{}</failure>\n    </testcase>",
                    o.reason,
                    xml_escape(&detail)
                );
            }
            Status::Error => {
                let _ = writeln!(
                    out,
                    ">\n      <error type=\"{}\" message=\"{msg}\"/>\n    </testcase>",
                    o.reason
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
