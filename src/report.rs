//! Output of `bakewatch once`: a table for people, JSON for scripts, JUnit XML for CI.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::checks::outcome::StepStatus;
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

/// What one JUnit testcase says.
enum CaseResult {
    Pass,
    Degraded(String),
    Failure {
        kind: &'static str,
        message: String,
        detail: String,
    },
    Error {
        kind: &'static str,
        message: String,
    },
    Skipped(String),
}

struct Case {
    class: String,
    name: String,
    seconds: f64,
    result: CaseResult,
}

fn failure_detail(f: &[crate::checks::AssertionFailure]) -> String {
    f.iter()
        .map(|f| {
            format!(
                "{}: expected {}, got {}\n",
                f.assertion, f.expected, f.actual
            )
        })
        .collect()
}

/// A journey becomes one testcase per step (CI systems show which step broke); any other
/// check is one testcase.
fn cases(r: &Row) -> Vec<Case> {
    let o = &r.outcome;
    if !o.steps.is_empty() {
        return o
            .steps
            .iter()
            .map(|s| Case {
                class: r.check.name.clone(),
                name: if s.cleanup {
                    format!("cleanup {}", s.name)
                } else {
                    s.name.clone()
                },
                seconds: s.duration_ms / 1000.0,
                result: match s.status {
                    StepStatus::Pass => CaseResult::Pass,
                    StepStatus::Degraded => CaseResult::Degraded(s.message.clone()),
                    StepStatus::Skipped => CaseResult::Skipped(s.message.clone()),
                    // A failed cleanup only degrades the journey; it is still this step's failure.
                    StepStatus::Fail => CaseResult::Failure {
                        kind: s.reason.as_str(),
                        message: format!("{} {}: {}", s.request, s.name, s.message),
                        detail: failure_detail(&s.failed_assertions),
                    },
                },
            })
            .collect();
    }
    let class = if r.check.service.is_empty() {
        r.check.type_name().to_string()
    } else {
        r.check.service.clone()
    };
    vec![Case {
        class,
        name: r.check.name.clone(),
        seconds: o.duration.as_secs_f64(),
        result: match o.status {
            Status::Pass => CaseResult::Pass,
            Status::Degraded => CaseResult::Degraded(o.message.clone()),
            Status::Fail => CaseResult::Failure {
                kind: o.reason.as_str(),
                message: o.message.clone(),
                detail: failure_detail(&o.failed_assertions),
            },
            Status::Error => CaseResult::Error {
                kind: o.reason.as_str(),
                message: o.message.clone(),
            },
        },
    }]
}

/// JUnit XML: one testcase per check, or per step for journeys.
pub fn junit(rows: &[Row]) -> String {
    let all: Vec<Case> = rows.iter().flat_map(cases).collect();
    let failures = all
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Failure { .. }))
        .count();
    let errors = all
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Error { .. }))
        .count();
    let skipped = all
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Skipped(_)))
        .count();
    let total: f64 = rows.iter().map(|r| r.outcome.duration.as_secs_f64()).sum();
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{total:.3}\"",
        all.len()
    );
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<testsuites name=\"bakewatch\" {counts}>");
    let _ = writeln!(out, "  <testsuite name=\"bakewatch\" {counts}>");
    for c in &all {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&c.class),
            xml_escape(&c.name),
            c.seconds
        );
        match &c.result {
            CaseResult::Pass => out.push_str("/>\n"),
            CaseResult::Degraded(m) => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>degraded: {}</system-out>\n    </testcase>",
                    xml_escape(m)
                );
            }
            CaseResult::Skipped(m) => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml_escape(m)
                );
            }
            CaseResult::Failure {
                kind,
                message,
                detail,
            } => {
                let _ = writeln!(
                    out,
                    ">\n      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n    </testcase>",
                    xml_escape(message),
                    xml_escape(detail)
                );
            }
            CaseResult::Error { kind, message } => {
                let _ = writeln!(
                    out,
                    ">\n      <error type=\"{kind}\" message=\"{}\"/>\n    </testcase>",
                    xml_escape(message)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
