//! Fuzzing with proptest: whatever comes in through a config file, an assertion, a JSONPath,
//! a template or the deployment API, bakewatch answers with a clean error and never panics,
//! hangs or leaks a secret into the message.
//!
//! - `config_*`: the loader over random bytes and TOML token soup, over valid configs built
//!   from the README's keys and then mutated, and over damaged copies of the shipped examples:
//!   `Ok`, or every problem at a real `file:line:col` on one line, never the secret marker.
//! - `assertions_never_panic`, `jsonpath_never_panics`, `templates_never_panic`: the assertion
//!   vocabulary, JSONPath and `{{ }}` templates over arbitrary operands and documents.
//! - `api_*`: the HTTP API in process (real storage, loopback): 2xx JSON or 4xx problem+json,
//!   never 5xx, never a hang, the server still up; `daemon_with_extreme_valid_timings`: a
//!   config that loads, with the longest durations allowed, also runs.
//!
//! Every property runs `FUZZ_CASES` cases (default 256: this file stays well under 30 s in the
//! normal suite; the daemon property runs an eighth as many). A long run, one property at a
//! time (a debug build is fast enough too):
//!
//! ```sh
//! FUZZ_CASES=200000 cargo test --release --test fuzz -- --test-threads 1 config_
//! ```
//!
//! A failing case is shrunk and printed; pin its minimised input as a plain `#[test]` under
//! "Regressions" at the end of this file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value as Json;
use toml::de::DeTable;

use bakewatch::checks::Observation;
use bakewatch::checks::assert::{Assertion, QueryScope, Subject, judge};
use bakewatch::config::diag::{Diagnostic, SourceFile};
use bakewatch::config::reader::Cx;
use bakewatch::template::{DeploymentVars, JsonTemplate, Scope, Template};

// ---------------------------------------------------------------------------------------------
// Shared pieces.

/// Cases per property: `FUZZ_CASES`, default 256.
fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(256)
}

fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // A failure is printed minimised; regressions are pinned by hand below, so no
        // `.proptest-regressions` files appear in the tree.
        failure_persistence: None,
        max_global_rejects: u32::MAX,
        max_local_rejects: u32::MAX,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

/// The secret put into every token / password / key field: no error message may contain it.
const MARKER: &str = "Zq7xSECRETvalue42";

/// A TOML basic string holding `s` exactly.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML float literal.
fn toml_float(f: f64) -> String {
    if f.is_nan() {
        "nan".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{f:?}")
    }
}

/// Short text that often matters: names the code knows, separators, unicode, control chars.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", " ", "a", "x", "ok", "status", "version", "content-type", "session", "total",
            "ttfb", "value", "rows", "stdout", "answers", "exit_code", "cert_days", "role",
            "42", "-1", "1e3", "3.5", " 7\n", "true", "false", "null", "NaN", "inf", "-inf",
            "800ms", "1e99s", "-5s", "18446744073709551615s", "584942417355y", "é", "日本",
            "\u{0}", "\u{202e}", "\u{feff}", "😀", "{{", "}}", "{{ deployment.version }}",
            "a\nb", "\\", "\"", "'",
        ])
        .prop_map(str::to_string),
        2 => "[ -~]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
        1 => (prop::sample::select(vec!["a", "é", "0", " ", "{"]), 1usize..3000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Config loading.

/// One generated TOML table: header line ("" for the root) and `key = value` lines.
#[derive(Clone, Debug)]
struct Table {
    header: String,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    /// TOML text of the value.
    value: String,
    /// The value is a secret (may hold [`MARKER`]).
    secret: bool,
}

fn e(key: &str, value: &str) -> Entry {
    Entry {
        key: key.to_string(),
        value: value.to_string(),
        secret: false,
    }
}

/// An entry whose value is a secret; `value` may name `MARKER`, replaced by the marker.
fn s(key: &str, value: &str) -> Entry {
    Entry {
        key: key.to_string(),
        value: value.replace("MARKER", MARKER),
        secret: true,
    }
}

fn table(header: &str, entries: Vec<Entry>) -> Table {
    Table {
        header: header.to_string(),
        entries,
    }
}

/// A block is one or more tables that must stay together (a check and its steps).
type Block = Vec<Table>;

/// The daemon file's own tables, all valid, from the README.
fn daemon_blocks() -> Vec<Block> {
    vec![
        vec![table(
            "[server]",
            vec![
                e("listen", "\"127.0.0.1:9797\""),
                s("token", "\"MARKER\""),
                e("request_timeout", "\"130s\""),
                e("external_url", "\"https://bakewatch.internal\""),
            ],
        )],
        vec![table("[storage]", vec![e("path", "\"state.db\"")])],
        vec![table(
            "[defaults]",
            vec![e("interval", "\"30s\""), e("timeout", "\"10s\"")],
        )],
        vec![table(
            "[scheduler]",
            vec![e("concurrency", "64"), e("jitter", "\"10s\"")],
        )],
        vec![table(
            "[history]",
            vec![e("retention", "\"2h\""), e("max_samples", "4096")],
        )],
        vec![table(
            "[deploy]",
            vec![
                e("window", "\"30m\""),
                e("interval", "\"5s\""),
                e("warmup", "\"0s\""),
                e("min_duration", "\"5m\""),
                e("max_duration", "\"20m\""),
                e("baseline", "\"30m\""),
                e("critical_failures", "2"),
            ],
        )],
        vec![table(
            "[notifications]",
            vec![
                e("max_age", "\"24h\""),
                e("retry_initial", "\"1s\""),
                e("retry_max", "\"5m\""),
            ],
        )],
        vec![table(
            "[[notifier]]",
            vec![
                e("name", "\"ops-mail\""),
                e("type", "\"email\""),
                e("smtp", "\"smtp://127.0.0.1:25\""),
                e("username", "\"bakewatch\""),
                s("password", "\"MARKER\""),
                e("from", "\"bakewatch@example.com\""),
                e("to", "[\"oncall@example.com\"]"),
                e("subject_prefix", "\"[bw]\""),
                e("events", "[\"verdict\"]"),
            ],
        )],
        vec![table(
            "[[notifier]]",
            vec![
                e("name", "\"hook\""),
                e("type", "\"webhook\""),
                e("url", "\"http://127.0.0.1:9/hook\""),
                s("hmac_secret", "{ file = \"@SECRET_FILE@\" }"),
                s("headers", "{ x-api-key = \"MARKER\" }"),
                e("events", "[\"deployment_registered\", \"verdict\"]"),
                e("send_resolved", "false"),
                e("timeout", "\"5s\""),
            ],
        )],
        vec![table(
            "[[notifier]]",
            vec![
                e("name", "\"chat\""),
                e("type", "\"slack\""),
                s("url", "\"https://hooks.slack.example/services/MARKER\""),
            ],
        )],
        vec![table(
            "[[notifier]]",
            vec![
                e("name", "\"pd\""),
                e("type", "\"pagerduty\""),
                s("routing_key", "\"MARKER\""),
            ],
        )],
        vec![table(
            "[[notifier]]",
            vec![
                e("name", "\"am\""),
                e("type", "\"alertmanager\""),
                e("url", "\"http://127.0.0.1:9093\""),
                e("resend", "\"1m\""),
            ],
        )],
        vec![table(
            "[[notifier]]",
            vec![
                e("name", "\"graf\""),
                e("type", "\"grafana\""),
                e("url", "\"http://127.0.0.1:3000\""),
                s("token", "{ file = \"@SECRET_FILE@\" }"),
                e("tags", "[\"deploy\"]"),
                e("dashboard_uid", "\"abc\""),
                e("events", "[\"deployment_registered\", \"verdict\"]"),
            ],
        )],
    ]
}

/// Checks of every type and rules, all valid, from the README.
fn check_blocks() -> Vec<Block> {
    vec![
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"web\""),
                e("service", "\"shop\""),
                e("type", "\"http\""),
                e("url", "\"http://127.0.0.1:1/health\""),
                e("method", "\"GET\""),
                s("headers", "{ x-token = { file = \"@SECRET_FILE@\" } }"),
                s("auth", "{ bearer = \"MARKER\" }"),
                e("interval", "\"15s\""),
                e("timeout", "\"2s\""),
                e("critical", "true"),
                e("follow_redirects", "false"),
                e("max_body", "\"1MiB\""),
                e(
                    "expect",
                    "[ { status = 200 }, { jsonpath = \"$.status\", eq = \"ok\" }, { duration = \"total\", lt = \"500ms\", severity = \"warn\" } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"web-version\""),
                e("service", "\"shop\""),
                e("type", "\"http\""),
                e("url", "\"http://127.0.0.1:1/v/{{ deployment.version }}\""),
                e("method", "\"POST\""),
                e("json", "{ a = [1, 2.5, \"x\"], b = { c = true } }"),
                s("auth", "{ username = \"u\", password = \"MARKER\" }"),
                e(
                    "expect",
                    "[ { jsonpath = \"$.version\", eq = \"{{ deployment.version }}\" }, { header = \"x-v\", matches = \"^{{ deployment.id }}$\" }, { regex = 'v([0-9.]+)', starts_with = \"2.\" } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"port\""),
                e("type", "\"tcp\""),
                e("address", "\"127.0.0.1:1\""),
                e("send", "\"PING\\r\\n\""),
                e("expect_banner", "'^\\+PONG'"),
                e(
                    "expect",
                    "[ { duration = \"total\", lt = \"100ms\", severity = \"warn\" } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"cert\""),
                e("type", "\"tls\""),
                e("address", "\"127.0.0.1:1\""),
                e("server_name", "\"localhost\""),
                e("verify", "false"),
                e("interval", "\"1h\""),
                e("expect", "[ { observe = \"cert_days\", gt = 14 } ]"),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"resolve\""),
                e("type", "\"dns\""),
                e("query_name", "\"localhost\""),
                e("record", "\"A\""),
                e("server", "\"127.0.0.1:1\""),
                e(
                    "expect",
                    "[ { observe = \"answers\", contains = \"127.0.0.1\" } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"pg\""),
                e("service", "\"shop\""),
                e("type", "\"postgres\""),
                s("dsn", "\"postgres://bakewatch:MARKER@127.0.0.1:1/shop\""),
                e("query", "\"SELECT 1\""),
                e("timeout", "\"5s\""),
                e(
                    "expect",
                    "[ { observe = \"value\", gt = 0 }, { observe = \"rows\", eq = 1 } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"pg-kv\""),
                e("type", "\"postgres\""),
                s(
                    "dsn",
                    "\"host=127.0.0.1 port=1 user=u password=MARKER dbname=d\"",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"my\""),
                e("type", "\"mysql\""),
                s("dsn", "\"mysql://u:MARKER@127.0.0.1:1/db\""),
                e("query", "\"SELECT COUNT(*) FROM t\""),
                e("expect", "[ { observe = \"value\", ge = 1 } ]"),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"cache\""),
                e("type", "\"redis\""),
                e("url", "\"redis://127.0.0.1:1/0\""),
                s("password", "\"MARKER\""),
                e("mode", "\"roundtrip\""),
                e("key_prefix", "\"bw:\""),
                e("info", "[\"role\", \"connected_clients\"]"),
                e("timeout", "\"2s\""),
                e("expect", "[ { observe = \"role\", eq = \"master\" } ]"),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"cache-url\""),
                e("type", "\"redis\""),
                s("url", "\"redis://user:MARKER@127.0.0.1:1/2\""),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"frag\""),
                e("type", "\"memcached\""),
                e("address", "\"127.0.0.1:1\""),
                e("key_prefix", "\"bw:\""),
                e("timeout", "\"2s\""),
                e(
                    "expect",
                    "[ { observe = \"version\", starts_with = \"1.\" } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"disk\""),
                e("type", "\"filesystem\""),
                e("path", "\"/tmp\""),
                e("writable", "false"),
                e("expect", "[ { observe = \"free_ratio\", gt = 0.05 } ]"),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"cmd\""),
                e("type", "\"command\""),
                e("argv", "[\"true\", \"--flag\"]"),
                e("shell", "false"),
                s("env", "{ TOKEN = \"MARKER\" }"),
                e("workdir", "\"/\""),
                e("max_output", "\"64KiB\""),
                e("cron", "\"*/5 * * * *\""),
                e(
                    "expect",
                    "[ { observe = \"exit_code\", eq = 0 }, { observe = \"stdout\", lt = 1000 } ]",
                ),
            ],
        )],
        vec![table(
            "[[check]]",
            vec![
                e("name", "\"prom\""),
                e("type", "\"prometheus\""),
                e("url", "\"http://127.0.0.1:1\""),
                e("query", "'sum(rate(x{status=~\"5..\"}[5m]))'"),
                e("aggregate", "\"max\""),
                e("no_data", "\"error\""),
                s("auth", "{ username = \"u\", password = \"MARKER\" }"),
                e("expect", "[ { observe = \"value\", lt = 0.05 } ]"),
            ],
        )],
        vec![
            table(
                "[[check]]",
                vec![
                    e("name", "\"journey\""),
                    e("service", "\"shop\""),
                    e("type", "\"journey\""),
                    e("base_url", "\"http://127.0.0.1:1\""),
                    s(
                        "secrets",
                        "{ pw = \"MARKER\", other = { file = \"@SECRET_FILE@\" } }",
                    ),
                    e("budget", "\"2s\""),
                    e("cookies", "true"),
                    e("timeout", "\"5s\""),
                ],
            ),
            table(
                "[[check.step]]",
                vec![
                    e("name", "\"login\""),
                    e("method", "\"POST\""),
                    e("path", "\"/login\""),
                    e(
                        "json",
                        "{ user = \"u\", password = \"{{ secret.pw }}\", n = 1 }",
                    ),
                    e(
                        "capture",
                        "{ token = { jsonpath = \"$.token\", secret = true } }",
                    ),
                    e("expect", "[ { status = 200 } ]"),
                    e("budget", "\"1s\""),
                ],
            ),
            table(
                "[[check.step]]",
                vec![
                    e("name", "\"me\""),
                    e("path", "\"/me?v={{ deployment.version }}\""),
                    e("headers", "{ authorization = \"Bearer {{ token }}\" }"),
                    e("query", "{ q = \"{{ token }}\", n = 3 }"),
                    e(
                        "retry",
                        "{ attempts = 2, delay = \"200ms\", on = [\"connect\", \"status:503\"] }",
                    ),
                    e("timeout", "\"1s\""),
                    e("warn", "\"500ms\""),
                    e(
                        "expect",
                        "[ { jsonpath = \"$.items\", filter = \"count\", ge = 1 } ]",
                    ),
                ],
            ),
            table(
                "[[check.cleanup]]",
                vec![
                    e("name", "\"logout\""),
                    e("method", "\"DELETE\""),
                    e("path", "\"/session\""),
                    e("form", "{ a = \"{{ token }}\" }"),
                ],
            ),
        ],
        vec![table(
            "[[rule]]",
            vec![
                e("name", "\"r\""),
                e("check", "\"web\""),
                e("signal", "\"failure_ratio\""),
                e("over", "\"5m\""),
                e("above", "0.5"),
                e("for", "\"1m\""),
                e("post_deploy", "{ above = 0.005, for = \"0s\" }"),
                e("severity", "\"critical\""),
                e("min_samples", "5"),
                e("notify", "[\"hook\"]"),
                e("repeat", "\"4h\""),
                e("send_resolved", "true"),
                e("notify_no_data", "true"),
                e("rollback", "true"),
            ],
        )],
        vec![table(
            "[[rule]]",
            vec![
                e("name", "\"lat\""),
                e("service", "\"shop\""),
                e("signal", "\"latency_p95_ratio\""),
                e("above", "2"),
                e("min_delta", "\"50ms\""),
            ],
        )],
        vec![table(
            "[[rule]]",
            vec![
                e("name", "\"val\""),
                e("checks", "[\"cache\", \"pg\"]"),
                e("signal", "\"value:rows\""),
                e("below", "1"),
            ],
        )],
    ]
}

/// Bad (and some good) TOML values: wrong types, extremes, bad durations, regexes, JSONPaths,
/// cron expressions, templates, secret tables.
fn bad_value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        // Durations.
        "\"\"",
        "\"0s\"",
        "\"-5s\"",
        "\"1e99s\"",
        "\"18446744073709551615s\"",
        "\"18446744073709551616s\"",
        "\"584942417355y\"",
        "\"584542046090y\"",
        "\"999999999999999999w\"",
        "\"1.5.5s\"",
        "\"s\"",
        "\" \"",
        "\"1 s 2\"",
        "\"1ns\"",
        "\"0.0000000001s\"",
        "\"99999999999999999999999999s\"",
        "\"1h 1h 1h\"",
        "\"30\"",
        // Numbers.
        "0",
        "-1",
        "1",
        "15",
        "16",
        "65536",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551616",
        "1e308",
        "-1e308",
        "1e-320",
        "inf",
        "-inf",
        "nan",
        "-0.0",
        "0x7fffffffffffffff",
        "0o777",
        "0b101",
        "1_000",
        "3.14",
        // Other types.
        "true",
        "false",
        "1979-05-27T07:32:00Z",
        "07:32:00",
        "1979-05-27",
        "[]",
        "{}",
        "[1, \"a\", true]",
        "[[]]",
        "[{}]",
        "{ a = 1 }",
        "\"é日本😀\"",
        "\"\\u0000\"",
        "\"a\\nb\"",
        "''",
        "'''\nmulti\nline'''",
        // Secret tables, broken.
        "{ env = \"BAKEWATCH_FUZZ_UNSET\" }",
        "{ file = \"/nonexistent/secret\" }",
        "{ file = \"@DIR@\" }",
        "{ credential = \"x/y\" }",
        "{ credential = \"\" }",
        "{ credential = \"name\" }",
        "{ env = \"A\", file = \"b\" }",
        "{ nope = 1 }",
        "{ env = 1 }",
        // Regexes.
        "\"(\"",
        "\"[a-\"",
        "\"a{99999}{99999}\"",
        "\"(?P<n>\"",
        "'\\p{Nope}'",
        "\"*\"",
        "\"(a*)*$\"",
        "'\\'",
        "\"[[:alpha:]\"",
        "\"(?<x>a)(?<x>b)\"",
        // JSONPaths.
        "\"$[\"",
        "\"$..\"",
        "\"$[?@.a ==]\"",
        "\"$[::0]\"",
        "\"$[-9007199254740992]\"",
        "\"$[9007199254740991]\"",
        "\"$[?count(@.*)>1]\"",
        "\"$[?match(@, '[')]\"",
        "\"$.a[?length(@)]\"",
        "\"a.b\"",
        "\"$\"",
        "\"@\"",
        "\"$.'\"",
        "\"$[?@ == $]\"",
        // Cron expressions.
        "\"* * * *\"",
        "\"61 * * * *\"",
        "\"*/0 * * * *\"",
        "\"0 0 30 2 *\"",
        "\"@reboot\"",
        "\"@nope\"",
        "\"1-60/999 * * * *\"",
        "\"MON-SUN * * * *\"",
        "\"* * * * 8\"",
        "\"5-1 * * * *\"",
        "\"0 0 31 4,6,9,11 *\"",
        "\"* * * * * * *\"",
        "\",,, * * * *\"",
        "\"*/4294967296 * * * *\"",
        "\"0 0 * * FRI-SUN\"",
        "\"60 * * * * *\"",
        // Templates.
        "\"{{\"",
        "\"}}\"",
        "\"{{ }}\"",
        "\"{{ deployment.nope }}\"",
        "\"{{ deployment.version\"",
        "\"{{ {{ x }} }}\"",
        "\"{{ secret.pw }}\"",
        "\"{{ secret. }}\"",
        "\"{{ a b }}\"",
        "\"http://h/{{ deployment.id }}\"",
        "\"{{ deployment.environment }}\"",
        // URLs, addresses, names.
        "\"http://\"",
        "\"http://[::1\"",
        "\"ftp://x\"",
        "\"http://127.0.0.1:99999/\"",
        "\"127.0.0.1\"",
        "\"[::1]:6379\"",
        "\"host:port\"",
        "\"::::\"",
        "\"redis://h:1/99999999999999999999\"",
        "\"rediss://h\"",
        "\"mariadb://u@h/db\"",
        "\"host=h\"",
        "\"a b c\"",
        "\"GET POST\"",
        "\"DELETE\"",
        "\"journey\"",
        "\"http\"",
        "\"nope\"",
        "\"failure_ratio\"",
        "\"value:\"",
        "\"latency_p42\"",
        "\"warning\"",
        "\"../x\"",
        "\"/\"",
        "\"relative/dir\"",
        "\"1KiB\"",
        "\"1XB\"",
        "\"18446744073709551615GiB\"",
        "\"roundtrip\"",
        "\"ping\"",
        "\"sum\"",
        "\"pass\"",
        "\"fail\"",
        // Assertion lists.
        "[ { status = 200 } ]",
        "[ { status = 99 } ]",
        "[ { status = [200, 600] } ]",
        "[ { equals = 1 } ]",
        "[ {} ]",
        "[ 1 ]",
        "[ { status = 200, eq = 200 } ]",
        "[ { jsonpath = \"$.a\", eq = 1, ne = 2 } ]",
        "[ { body = true, nth = -1, eq = 1 } ]",
        "[ { observe = \"nope\", exists = true } ]",
        "[ { duration = \"total\", lt = 5 } ]",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        8 => fixed,
        2 => text().prop_map(|t| toml_str(&t)),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(toml_float),
        1 => assertion_list(),
        1 => jsonpath_text().prop_map(|p| toml_str(&p)),
        1 => template_text().prop_map(|t| toml_str(&t)),
        1 => deep_value(),
    ]
}

/// Values nested deep: arrays, inline tables, mixed.
fn deep_value() -> impl Strategy<Value = String> {
    (0usize..3, 1usize..400).prop_map(|(kind, depth)| match kind {
        0 => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", "{ a = ".repeat(depth), " }".repeat(depth)),
        _ => format!("{}{{}}{}", "[{ a = ".repeat(depth), " }]".repeat(depth)),
    })
}

/// Secret values holding the marker in every shape a secret key might be given.
fn secret_variant() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "\"MARKER\"",
        "\"MARKER\\n\"",
        "\" MARKER \"",
        "\"MARKER\\u0000\"",
        "\"é MARKER\\r\\n\"",
        "{ file = \"@SECRET_FILE@\" }",
        "{ file = \"@SECRET_FILE@\", env = \"X\" }",
        "{ file = \"@SECRET_FILE@\", nope = 1 }",
        "\"postgres://u:MARKER@127.0.0.1:1/db\"",
        "\"postgres://u:MARKER@[::1/db\"",
        "\"postgres://u:MARKER@h:99999/db\"",
        "\"postgresql://u:MARKER@h/db?sslmode=bogus\"",
        "\"postgres://:MARKER@/db\"",
        "\"host=h user=u password=MARKER\"",
        "\"host=h user=u password='MARKER\"",
        "\"host=h user=u password=MARKER port=x\"",
        "\"user=u password=MARKER://x host=h\"",
        "\"password=MARKER\"",
        "\"mysql://u:MARKER@h:x/db\"",
        "\"mysql://u:MARKER@h/db?bogus=1\"",
        "\"mysql://u:MARKER@h/db?prefer_socket=maybe\"",
        "\"mariadb://u:MARKER@[::1/db\"",
        "\"mysql:/u:MARKER@h\"",
        "\"redis://:MARKER@127.0.0.1:1/0\"",
        "\"redis://u:MARKER@h:99999/abc\"",
        "\"rediss://:MARKER@[::1\"",
        "\"redis://:MARKER@h/0?x=1\"",
        "\"redis://u:MARKER@\"",
        "\"https://hooks.example/MARKER\"",
        "\"https://:MARKER@/x\"",
        "\"http://u:MARKER@h/ x\"",
        "\"ftp://MARKER\"",
        "\"smtp://u:MARKER@h\"",
        "{ bearer = \"MARKER\" }",
        "{ bearer = \"MARKER\", username = \"u\" }",
        "{ username = \"u\", password = \"MARKER\", extra = 1 }",
        "{ password = \"MARKER\" }",
        "{ username = 1, password = \"MARKER\" }",
        "{ a = \"MARKER\", \"bad header\" = \"MARKER\" }",
        "{ x-a = \"MARKER\\n\" }",
        "{ x-a = \"MARKER\\u0001\" }",
        "{ \"\" = \"MARKER\" }",
        "{ PATH = \"MARKER\\u0000\" }",
        "{ \"A=B\" = \"MARKER\" }",
        "{ pw = { file = \"@SECRET_FILE@\" }, \"bad name\" = \"MARKER\" }",
        "[\"MARKER\"]",
    ])
    .prop_map(|v| v.replace("MARKER", MARKER))
}

/// Keys the code knows anywhere, plus junk, for renames and additions.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "checks", "server", "listen", "token", "request_timeout", "external_url", "storage",
            "path", "defaults", "interval", "timeout", "scheduler", "concurrency", "jitter",
            "history", "retention", "max_samples", "deploy", "window", "warmup", "min_duration",
            "max_duration", "baseline", "critical_failures", "notifications", "max_age",
            "retry_initial", "retry_max", "notifier", "name", "type", "events", "send_resolved",
            "check", "rule", "service", "cron", "critical", "expect", "url", "method",
            "headers", "body", "json", "form", "auth", "tls", "follow_redirects", "keepalive",
            "max_body", "address", "send", "expect_banner", "server_name", "ca_file",
            "cert_file", "key_file", "verify", "query_name", "record", "dsn", "query", "mode",
            "key_prefix", "info", "writable", "argv", "shell", "env", "workdir", "max_output",
            "aggregate", "no_data", "base_url", "secrets", "budget", "cookies", "step",
            "cleanup", "capture", "retry", "warn", "signal", "over", "above", "below", "for",
            "post_deploy", "severity", "min_samples", "min_delta", "notify", "rollback",
            "repeat", "notify_no_data", "smtp", "username", "from", "to", "subject_prefix",
            "hmac_secret", "routing_key", "resend", "tags", "dashboard_uid", "intervall",
            "equals", "nope", "a.b", "\"quoted key\"", "\"\"", "'lit'", "é", "x-y",
            "check.name", "server.listen",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
        1 => (1usize..200).prop_map(|n| vec!["a"; n].join(".")),
    ]
}

/// What a mutation does to the config model.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(String),
    ReplaceSecret(String),
    Delete,
    Duplicate,
    Add(String, String),
    Rename(String),
    RawLine(String),
    DuplicateTable,
    DropTableHeader,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let raw = prop_oneof![
        prop::sample::select(vec![
            "[server]",
            "[[check]]",
            "[[rule]]",
            "[[notifier]]",
            "[check]",
            "[[server]]",
            "[check.step]",
            "[[check.step]]",
            "= 1",
            "a =",
            "a = 1 = 2",
            "\u{feff}",
            "[",
            "]]",
            "[[]]",
            "[a.b.c.d]",
            "checks = 1",
            "type = \"http\"",
            "\"unterminated = 1",
            "a = \"\"\"",
            "'''",
            "x = 1979-13-45",
            "k = 0x",
            "k = +nan",
            "k = 1__0",
            "[[check]]\nname = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"",
            "[[check]]\nname = 1",
            "[[rule]]\nname = \"r\"",
            "[[notifier]]\ntype = \"nope\"",
        ])
        .prop_map(str::to_string),
        text().prop_map(|t| t.replace('\n', " ")),
    ];
    // Weighted so that most configs stay TOML: a syntax error stops the reader at the file.
    prop_oneof![
        20 => bad_value().prop_map(Mutation::Replace),
        8 => secret_variant().prop_map(Mutation::ReplaceSecret),
        2 => Just(Mutation::Delete),
        1 => Just(Mutation::Duplicate),
        4 => (any_key(), bad_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
        2 => any_key().prop_map(Mutation::Rename),
        2 => raw.prop_map(Mutation::RawLine),
        1 => Just(Mutation::DuplicateTable),
        1 => Just(Mutation::DropTableHeader),
    ]
}

/// The generated config: the daemon file's blocks and the check file's blocks, mutated.
#[derive(Clone, Debug)]
struct GeneratedConfig {
    root: Vec<Entry>,
    daemon: Vec<Block>,
    checks: Vec<Block>,
    /// Checks and rules in the daemon file instead of a check file.
    inline_checks: bool,
    mutations: Vec<(Index, Index, Index, Mutation)>,
}

fn generated_config() -> impl Strategy<Value = GeneratedConfig> {
    let daemon = daemon_blocks();
    let checks = check_blocks();
    let (nd, nc) = (daemon.len(), checks.len());
    (
        prop::sample::subsequence(daemon, 0..=nd),
        prop::sample::subsequence(checks, 0..=nc),
        any::<bool>(),
        prop::collection::vec(
            (any::<Index>(), any::<Index>(), any::<Index>(), mutation()),
            0..6,
        ),
    )
        .prop_map(
            |(daemon, checks, inline_checks, mutations)| GeneratedConfig {
                root: vec![e("checks", "[\"../checks/*.toml\"]")],
                daemon,
                checks,
                inline_checks,
                mutations,
            },
        )
}

impl GeneratedConfig {
    /// Applies the mutations, then renders (daemon file, check file).
    fn render(&self) -> (String, String) {
        let mut root = Table {
            header: String::new(),
            entries: self.root.clone(),
        };
        let mut daemon: Vec<Table> = self.daemon.iter().flatten().cloned().collect();
        let mut checks: Vec<Table> = self.checks.iter().flatten().cloned().collect();
        if self.inline_checks {
            daemon.append(&mut checks);
        }
        let mut raw_before: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (ti, ei, si, m) in &self.mutations {
            // Every table of both files, the root first, as one list.
            let mut all: Vec<&mut Table> = std::iter::once(&mut root)
                .chain(daemon.iter_mut())
                .chain(checks.iter_mut())
                .collect();
            let n = all.len();
            let at = ti.index(n);
            match m {
                Mutation::RawLine(line) => {
                    raw_before.entry(at).or_default().push(line.clone());
                }
                Mutation::DuplicateTable if at > 0 => {
                    let copy = all[at].clone();
                    let pos = at - 1;
                    drop(all);
                    if pos < daemon.len() {
                        daemon.insert(pos + 1, copy);
                    } else {
                        checks.insert(pos - daemon.len() + 1, copy);
                    }
                }
                Mutation::DropTableHeader if at > 0 => {
                    all[at].header.clear();
                }
                Mutation::ReplaceSecret(v) => {
                    let secrets: Vec<(usize, usize)> = all
                        .iter()
                        .enumerate()
                        .flat_map(|(t, tab)| {
                            tab.entries
                                .iter()
                                .enumerate()
                                .filter(|(_, en)| en.secret)
                                .map(move |(i, _)| (t, i))
                        })
                        .collect();
                    if !secrets.is_empty() {
                        let (t, i) = secrets[si.index(secrets.len())];
                        all[t].entries[i].value = v.clone();
                    }
                }
                _ => {
                    let t = &mut all[at];
                    if let Mutation::Add(k, v) = m {
                        let pos = ei.index(t.entries.len() + 1);
                        t.entries.insert(pos, e(k, v));
                        continue;
                    }
                    if t.entries.is_empty() {
                        continue;
                    }
                    let i = ei.index(t.entries.len());
                    match m {
                        Mutation::Replace(v) => {
                            t.entries[i].value = v.clone();
                            t.entries[i].secret = false;
                        }
                        Mutation::Delete => {
                            t.entries.remove(i);
                        }
                        Mutation::Duplicate => {
                            let copy = t.entries[i].clone();
                            t.entries.insert(i + 1, copy);
                        }
                        Mutation::Rename(k) => {
                            // A secret never moves to a key whose errors quote their value.
                            let en = &mut t.entries[i];
                            en.key = if en.secret {
                                format!("{}_x", en.key)
                            } else {
                                k.clone()
                            };
                        }
                        _ => {}
                    }
                }
            }
        }
        let render = |tables: &[&Table], first: usize, raw: &BTreeMap<usize, Vec<String>>| {
            let mut out = String::new();
            for (i, t) in tables.iter().enumerate() {
                for line in raw.get(&(first + i)).into_iter().flatten() {
                    out.push_str(line);
                    out.push('\n');
                }
                if !t.header.is_empty() {
                    out.push_str(&t.header);
                    out.push('\n');
                }
                for en in &t.entries {
                    let _ = writeln!(out, "{} = {}", en.key, en.value);
                }
                out.push('\n');
            }
            out
        };
        let daemon_tables: Vec<&Table> = std::iter::once(&root).chain(daemon.iter()).collect();
        let daemon_text = render(&daemon_tables, 0, &raw_before);
        let check_tables: Vec<&Table> = checks.iter().collect();
        let check_text = render(&check_tables, daemon_tables.len(), &raw_before);
        (daemon_text, check_text)
    }
}

/// A config directory: `<root>/etc/config/bakewatch.toml`, check files in
/// `<root>/etc/checks/`, a secret file holding the marker.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new() -> ConfigDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("etc/config")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("etc/checks")).expect("mkdir");
        std::fs::write(dir.path().join("secret.txt"), format!("{MARKER}\n")).expect("secret");
        ConfigDir { dir }
    }

    fn daemon_path(&self) -> PathBuf {
        self.dir.path().join("etc/config/bakewatch.toml")
    }

    fn check_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("etc/checks").join(name)
    }

    /// Fills in the placeholders (`@SECRET_FILE@`, `@DIR@`) and writes `bytes` to `path`.
    fn write(&self, path: &Path, bytes: &[u8]) {
        let secret = self.dir.path().join("secret.txt");
        let bytes = replace_bytes(bytes, b"@SECRET_FILE@", secret.to_string_lossy().as_bytes());
        let bytes = replace_bytes(
            &bytes,
            b"@DIR@",
            self.dir.path().to_string_lossy().as_bytes(),
        );
        std::fs::write(path, bytes).expect("write config file");
    }

    /// Loads the config and checks the answer: a config, or every problem at a real place.
    fn load_and_judge(&self) -> Result<(), TestCaseError> {
        let daemon = std::fs::read(self.daemon_path()).expect("daemon file");
        prop_assume!(globs_stay_inside(&daemon));
        match bakewatch::config::load(&self.daemon_path()) {
            Ok(config) => {
                // A config that loads must also build a runtime (metric labels and all).
                let rt = bakewatch::runtime::Runtime::new(
                    config,
                    Arc::new(bakewatch::metrics::Metrics::new()),
                );
                prop_assert!(rt.checks.len() == rt.config.checks.len());
                Ok(())
            }
            Err(err) => {
                prop_assert!(!err.diagnostics.is_empty(), "an error without problems");
                for d in &err.diagnostics {
                    judge_diagnostic(self.dir.path(), d)?;
                }
                let text = err.to_string();
                prop_assert!(
                    !text.contains(MARKER),
                    "an error message shows the secret:\n{}",
                    text
                );
                Ok(())
            }
        }
    }
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Whether the daemon file's `checks` globs can only match inside the temp dir: a mutated
/// glob such as `/*/*` would make the loader read `/proc/kmsg` and block, which is the
/// user's own doing, not a bug.
fn globs_stay_inside(daemon: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(daemon) else {
        return true;
    };
    let Ok(doc) = DeTable::parse(text) else {
        return true;
    };
    let Some((_, v)) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == "checks") else {
        return true;
    };
    let toml::de::DeValue::Array(items) = v.get_ref() else {
        return true;
    };
    items.iter().all(|item| match item.get_ref().as_str() {
        Some(g) => {
            !g.contains("**")
                && !g.starts_with('/')
                && !g.starts_with('\\')
                && g.matches("..").count() <= 1
        }
        None => true,
    })
}

/// A diagnostic names a file under the config dir and a line:col inside that file.
fn judge_diagnostic(root: &Path, d: &Diagnostic) -> Result<(), TestCaseError> {
    prop_assert!(
        d.file.starts_with(root),
        "diagnostic for a file outside the config: {}",
        d
    );
    prop_assert!(d.line >= 1 && d.col >= 1, "position not 1-based: {}", d);
    prop_assert!(!d.message.trim().is_empty(), "empty message: {}", d);
    prop_assert!(
        !d.message.contains('\n'),
        "a message spans lines (breaks `file:line:col: message`): {:?}",
        d.message
    );
    let shown = d.to_string();
    let prefix = format!("{}:{}:{}: ", d.file.display(), d.line, d.col);
    prop_assert!(shown.starts_with(&prefix), "not file:line:col: {}", shown);
    if let Ok(bytes) = std::fs::read(&d.file) {
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.split('\n').collect();
        prop_assert!(
            d.line <= lines.len(),
            "line {} past the end ({} lines): {}",
            d.line,
            lines.len(),
            d
        );
        let width = lines[d.line - 1].chars().count();
        prop_assert!(
            d.col <= width + 1,
            "column {} past the end of line {} ({} chars): {}",
            d.col,
            d.line,
            width,
            d
        );
    }
    Ok(())
}

/// The shipped example config and check files (and the fixtures with known mistakes).
fn corpus() -> Vec<(&'static str, String)> {
    vec![
        (
            "bakewatch.toml",
            include_str!("../config/bakewatch.toml").to_string(),
        ),
        (
            "journey.toml",
            include_str!("../checks/journey.toml").to_string(),
        ),
        (
            "local.toml",
            include_str!("../checks/local.toml").to_string(),
        ),
        ("self.toml", include_str!("../checks/self.toml").to_string()),
        (
            "services.toml",
            include_str!("../checks/services.toml").to_string(),
        ),
        (
            "journey-open.toml",
            uncomment(include_str!("../checks/journey.toml")),
        ),
        (
            "services-open.toml",
            uncomment(include_str!("../checks/services.toml")),
        ),
        (
            "api.toml",
            include_str!("fixtures/five-mistakes/checks/api.toml").to_string(),
        ),
        (
            "more.toml",
            include_str!("fixtures/five-mistakes/checks/more.toml").to_string(),
        ),
        (
            "checkout.toml",
            include_str!("fixtures/bad-journey/checks/checkout.toml").to_string(),
        ),
    ]
}

/// The commented-out examples of a check file, uncommented (prose comments stay comments).
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_string();
            };
            let key = rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            let looks_toml = rest.starts_with('[')
                || rest.starts_with("  ")
                || rest.starts_with(']')
                || rest.starts_with('#')
                || key;
            if looks_toml {
                rest.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Byte-level damage to a file.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(Index),
    Flip(Vec<(Index, u8)>),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Splice(Index, Index, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        prop::collection::vec((any::<Index>(), 1u8..=255), 1..6).prop_map(Damage::Flip),
        (
            any::<Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    "\"", "'", "[", "]", "{", "}", "=", "\n", "#", "\\", "{{", "}}", ",", "[[",
                    "\u{0}", "é", "\r", "\"\"\"",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
            ]
        )
            .prop_map(|(i, b)| Damage::Insert(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Damage::Delete(i, n)),
        (any::<Index>(), any::<Index>(), 1usize..200).prop_map(|(a, b, n)| Damage::Splice(a, b, n)),
    ]
}

impl Damage {
    fn apply(&self, text: &[u8]) -> Vec<u8> {
        let mut v = text.to_vec();
        if v.is_empty() {
            return v;
        }
        match self {
            Damage::Truncate(i) => v.truncate(i.index(v.len())),
            Damage::Flip(flips) => {
                for (i, x) in flips {
                    let at = i.index(v.len());
                    v[at] ^= x;
                }
            }
            Damage::Insert(i, bytes) => {
                let at = i.index(v.len() + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Damage::Delete(i, n) => {
                let at = i.index(v.len());
                let end = (at + n).min(v.len());
                v.drain(at..end);
            }
            Damage::Splice(from, to, n) => {
                let a = from.index(v.len());
                let piece: Vec<u8> = v[a..(a + n).min(v.len())].to_vec();
                let b = to.index(v.len() + 1);
                v.splice(b..b, piece);
            }
        }
        v
    }
}

/// TOML-looking token soup: gets further into the reader than random bytes.
fn toml_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        6 => prop::sample::select(vec![
            "\n", " ", "=", "[", "]", "[[", "]]", "{", "}", ",", ".", "\"", "'", "\"\"\"", "'''",
            "#", "\\", "\\u", "\\U0010FFFF", "check", "rule", "notifier", "server", "name",
            "type", "\"http\"", "\"journey\"", "\"redis\"", "url", "\"http://127.0.0.1:1/\"",
            "expect", "status", "eq", "jsonpath", "\"$.a\"", "1", "-1", "1e99", "nan", "inf",
            "true", "0x", "1979-05-27", "T07:32:00Z", ":", "é", "\u{0}", "\r", "\t", "step",
            "interval", "\"30s\"", "timeout", "checks", "\"../checks/*.toml\"", "token",
            "cron", "\"* * * * *\"", "signal", "above", "service", "\"shop\"", "{{", "}}",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ];
    prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// (a) Arbitrary bytes and token soup as the daemon file or as a check file.
    #[test]
    fn config_from_arbitrary_input(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            toml_soup().prop_map(String::into_bytes),
        ],
        as_check_file in any::<bool>(),
    ) {
        let dir = ConfigDir::new();
        if as_check_file {
            dir.write(&dir.daemon_path(), b"checks = [\"../checks/*.toml\"]\n");
            dir.write(&dir.check_path("fuzz.toml"), &bytes);
        } else {
            dir.write(&dir.daemon_path(), &bytes);
        }
        dir.load_and_judge()?;
    }

    /// (b) Valid configs built from the README's keys, then mutated: wrong types, extremes,
    /// duplicates, unknown keys, bad regexes / JSONPaths / cron / durations, deep nesting,
    /// secrets in every shape.
    #[test]
    fn config_structured_mutations(config in generated_config()) {
        let (daemon, checks) = config.render();
        let dir = ConfigDir::new();
        dir.write(&dir.daemon_path(), daemon.as_bytes());
        dir.write(&dir.check_path("fuzz.toml"), checks.as_bytes());
        dir.load_and_judge()?;
    }

    /// (c) The shipped examples, truncated, bit-flipped, spliced.
    #[test]
    fn config_damaged_examples(
        pick in any::<Index>(),
        damage in prop::collection::vec(damage(), 1..4),
    ) {
        let corpus = corpus();
        let (name, original) = &corpus[pick.index(corpus.len())];
        let mut bytes = original.as_bytes().to_vec();
        for d in &damage {
            bytes = d.apply(&bytes);
        }
        let dir = ConfigDir::new();
        if *name == "bakewatch.toml" {
            dir.write(&dir.daemon_path(), &bytes);
            for (n, t) in corpus.iter().filter(|(n, _)| n.ends_with("-open.toml") || *n == "local.toml" || *n == "self.toml") {
                dir.write(&dir.check_path(n), t.as_bytes());
            }
        } else {
            dir.write(&dir.daemon_path(), include_bytes!("../config/bakewatch.toml"));
            dir.write(&dir.check_path(name), &bytes);
        }
        dir.load_and_judge()?;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The assertion vocabulary.

/// A scope that accepts everything, and the real ones.
const EVERYTHING: QueryScope = QueryScope {
    response: true,
    durations: &["total", "ttfb"],
    observations: &["*"],
};

fn scopes() -> Vec<&'static QueryScope> {
    use bakewatch::checks::*;
    vec![
        &EVERYTHING,
        &http::SCOPE,
        &tcp::SCOPE,
        &tls::SCOPE,
        &dns::SCOPE,
        &postgres::SCOPE,
        &mysql::SCOPE,
        &redis::SCOPE,
        &memcached::SCOPE,
        &filesystem::SCOPE,
        &command::SCOPE,
        &prometheus::SCOPE,
        &bakewatch::journey::SCOPE,
    ]
}

/// Operands of any type, as TOML text.
fn operand() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => text().prop_map(|t| toml_str(&t)),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec![
            "0", "-0", "200", "599", "600", "99", "9223372036854775807",
            "-9223372036854775808", "0xff", "1e308", "-1e308", "5e-324", "nan", "-nan",
            "inf", "-inf", "0.1", "true", "false", "1979-05-27T07:32:00Z", "\"800ms\"",
            "\"1e99s\"", "\"18446744073709551615s\"", "\"0s\"", "\"-1s\"",
            "\"{{ deployment.version }}\"", "\"v{{ deployment.id }}-{{ deployment.environment }}\"",
            "\"{{ deployment.nope }}\"", "\"{{ deployment.version\"", "\"(\"",
            "\"^{{ deployment.version }}$\"", "\"[{{ deployment.id }}\"",
        ])
        .prop_map(str::to_string),
        1 => any::<f64>().prop_map(toml_float),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..3).prop_map(|v| {
                let mut seen = std::collections::HashSet::new();
                let parts: Vec<String> = v
                    .into_iter()
                    .filter(|(k, _)| seen.insert(k.clone()))
                    .map(|(k, x)| format!("{k} = {x}"))
                    .collect();
                format!("{{ {} }}", parts.join(", "))
            }),
        ]
    })
}

/// Regex texts: valid, invalid, pathological.
fn regex_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version ([0-9.]+)",
            "^ok$",
            "(",
            "[a-",
            "a{99999}{99999}",
            "(?P<n>",
            "\\p{Nope}",
            "(a*)*$",
            "",
            ".*",
            "(?i)OK",
            "\\d+",
            "(x)(y)(z)",
            "é+",
            "\\",
            "a{2,1}",
            "(?<x>a)(?<x>b)",
            "[[:alpha:]]",
            "\\bword\\b",
            "(?-u:\\xFF)",
        ])
        .prop_map(str::to_string),
        prop::collection::vec(
            prop::sample::select(vec![
                "a", ".", "*", "+", "?", "(", ")", "[", "]", "{", "}", "|", "^", "$", "\\", "d",
                "w", "1", ",", "-", "é", "?P<g>", "(?:", "\\d", "{2,}",
            ]),
            0..16,
        )
        .prop_map(|v| v.concat()),
    ]
}

/// JSONPath texts: grammar tokens in any order, and valid paths.
fn jsonpath_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "$",
        "@",
        ".",
        "..",
        "*",
        "[",
        "]",
        "?",
        "(",
        ")",
        ",",
        ":",
        "'",
        "\"",
        " ",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "!",
        "a",
        "b",
        "é",
        "0",
        "1",
        "-1",
        "2",
        "-0",
        "9007199254740991",
        "-9007199254740991",
        "9007199254740992",
        "99999999999999999999",
        "1.5",
        "1e3",
        "true",
        "false",
        "null",
        "length(",
        "count(",
        "match(",
        "search(",
        "value(",
        "'a'",
        "\"x\"",
        "\\u0000",
        "\\",
        "$.a",
        "[?@",
        "[::-1]",
        "[1:2:0]",
        "[-1]",
        "['a','b']",
        "[*]",
        ".*",
        "[?@.a]",
        "[?@.a==1]",
        "[0:-1:2]",
    ]);
    prop_oneof![
        3 => prop::collection::vec(token.clone(), 0..24).prop_map(|v| v.concat()),
        3 => prop::collection::vec(token, 0..16).prop_map(|v| format!("${}", v.concat())),
        2 => prop::sample::select(vec![
            "$", "$.status", "$.items", "$.items[*].id", "$..id", "$[0]", "$[-1]", "$[1:3]",
            "$[::-1]", "$[?@.a > 1]", "$[?length(@.name) > 2]", "$[?count(@.*) == 2]",
            "$[?match(@.s, 'a.*')]", "$[?search(@.s, '[')]", "$[?value(@..x) == 1]",
            "$.a.b.c.d", "$['a b']", "$[\"é\"]", "$.*", "$..*", "$[0,1,'a']",
            "$[-9007199254740991:9007199254740991:-9007199254740991]",
            "$[9007199254740991:-9007199254740991:9007199254740991]",
            "$[?@ == @]", "$[?!@.a]", "$[?(@.a || @.b) && !@.c]",
        ])
        .prop_map(str::to_string),
        1 => text(),
        1 => deep_jsonpath(),
    ]
}

/// JSONPaths nested deep: parentheses, negations, nested filters, function calls, mixed.
fn deep_jsonpath() -> impl Strategy<Value = String> {
    let uniform = (0usize..5, 1usize..20_000).prop_map(|(kind, n)| match kind {
        0 => format!("$[?{}@{}]", "(".repeat(n), ")".repeat(n)),
        1 => format!("$[?{}@]", "!".repeat(n)),
        2 => format!("${}{}", "[?@".repeat(n), "]".repeat(n)),
        3 => format!("$[?{}@{}]", "length(".repeat(n), ")".repeat(n)),
        _ => format!("${}", ".a".repeat(n)),
    });
    let opener = prop::sample::select(vec![
        ("[?@", "]"),
        ("[?(@", ")]"),
        ("[?!(@", ")]"),
        ("[?length(@", ") > 1]"),
        ("[?count(@", ") == 1]"),
        ("[?value(@", ") == 1]"),
        ("[?match(@", ", 'a')]"),
        ("[?search(@", ", 'a')]"),
        ("(", ")"),
        ("[", "]"),
        ("[?@.a", "]"),
        ("[?@[", "]]"),
        ("[?@ == 1 || @", "]"),
        ("[?@ && !@", "]"),
        ("[?@..", "]"),
        ("['", "']"),
    ]);
    let mixed = prop::collection::vec(opener, 1..40).prop_map(|levels| {
        let mut out = String::from("$");
        for (open, _) in &levels {
            out.push_str(open);
        }
        for (_, close) in levels.iter().rev() {
            out.push_str(close);
        }
        out
    });
    prop_oneof![uniform, mixed]
}

fn query_part() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("status = true".to_string()),
        2 => operand().prop_map(|v| format!("status = {v}")),
        2 => text().prop_map(|n| format!("header = {}", toml_str(&n))),
        1 => text().prop_map(|n| format!("cookie = {}", toml_str(&n))),
        2 => operand().prop_map(|v| format!("body = {v}")),
        2 => Just("body = true".to_string()),
        4 => jsonpath_text().prop_map(|p| format!("jsonpath = {}", toml_str(&p))),
        3 => regex_text().prop_map(|r| format!("regex = {}", toml_str(&r))),
        2 => prop::sample::select(vec!["total", "ttfb", "connect", "", "x"])
            .prop_map(|d| format!("duration = {}", toml_str(d))),
        3 => text().prop_map(|n| format!("observe = {}", toml_str(&n))),
        1 => (prop::sample::select(vec![
            "equals", "status_code", "json_path", "latency", "observation", "statuss", "bdy",
        ]), operand()).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

fn predicate_part() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (prop::sample::select(vec![
            "eq", "ne", "lt", "le", "gt", "ge", "contains", "matches", "exists", "in",
            "starts_with", "ends_with",
        ]), operand()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => regex_text().prop_map(|r| format!("matches = {}", toml_str(&r))),
        1 => prop::collection::vec(operand(), 0..5)
            .prop_map(|v| format!("in = [{}]", v.join(", "))),
        1 => (prop::sample::select(vec![
            "equals", "==", "is", "less_than", ">=", "one_of", "startswith", "pattern", "present",
        ]), operand()).prop_map(|(k, v)| format!("{} = {v}", toml_str(k))),
    ]
}

fn extra_part() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(vec!["count", "first", "last", "nth", "", "COUNT"]))
            .prop_map(|f| format!("filter = {}", toml_str(f))),
        operand().prop_map(|v| format!("filter = {v}")),
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            Just("0".to_string()),
            Just("1".to_string()),
            Just("18446744073709551615".to_string()),
            operand(),
        ]
        .prop_map(|n| format!("nth = {n}")),
        operand().prop_map(|v| format!("not = {v}")),
        Just("not = true".to_string()),
        prop::sample::select(vec!["\"warn\"", "\"fail\"", "\"error\"", "1"])
            .prop_map(|v| format!("severity = {v}")),
    ]
}

/// Numbers and number-like operands, for the ordering predicates.
fn ordered_operand() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(toml_float),
        prop::sample::select(vec![
            "0",
            "200",
            "1e308",
            "-1e308",
            "nan",
            "inf",
            "-inf",
            "9223372036854775807",
            "\"42\"",
            "\"abc\"",
            "\"\"",
            "\"1e3\"",
            "\" 7\"",
            "\"é\"",
            "\"{{ deployment.version }}\"",
        ])
        .prop_map(str::to_string),
        text().prop_map(|t| toml_str(&t)),
    ]
}

/// Duration operands ("800ms"), good and bad, for duration queries.
fn duration_operand() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "800ms",
            "0s",
            "1ns",
            "2h",
            "1e99s",
            "-1s",
            "18446744073709551615s",
            "584942417355y",
            "1m 30s",
            "",
            "abc",
            "{{ deployment.version }}",
        ])
        .prop_map(toml_str),
        (
            any::<u64>(),
            prop::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "y"])
        )
            .prop_map(|(n, u)| toml_str(&format!("{n}{u}"))),
    ]
}

/// A well-formed assertion (one query, one predicate of a fitting kind, maybe a filter,
/// `not`, `severity`) with arbitrary operands: these get evaluated.
fn well_formed_assertion() -> impl Strategy<Value = String> {
    let valid_path = prop_oneof![
        3 => prop::sample::select(vec![
            "$", "$.status", "$.items", "$.items[*].id", "$..id", "$[0]", "$[-1]", "$[1:3]",
            "$[::-1]", "$[?@.a > 1]", "$.*", "$..*", "$.a.b", "$['é']", "$[?@ == 'x']",
            "$[?length(@) > 1]", "$[?count(@.*) == 2]", "$[?match(@, 'a.*')]", "$.version",
        ])
        .prop_map(str::to_string),
        1 => jsonpath_text(),
    ];
    let valid_regex = prop_oneof![
        3 => prop::sample::select(vec![
            "version ([0-9.]+)", "^ok$", "(x)(y)", ".*", "(?i)OK", "\\d+", "é+", "^$", "(a|b)",
        ])
        .prop_map(str::to_string),
        1 => regex_text(),
    ];
    let query = prop_oneof![
        3 => Just(("status = true".to_string(), false)),
        2 => name_pool().prop_map(|n| (format!("header = {}", toml_str(&n)), false)),
        1 => name_pool().prop_map(|n| (format!("cookie = {}", toml_str(&n)), false)),
        3 => Just(("body = true".to_string(), false)),
        5 => valid_path.prop_map(|p| (format!("jsonpath = {}", toml_str(&p)), false)),
        2 => valid_regex.clone().prop_map(|r| (format!("regex = {}", toml_str(&r)), false)),
        2 => prop::sample::select(vec!["total", "ttfb"])
            .prop_map(|d| (format!("duration = {}", toml_str(d)), true)),
        4 => name_pool().prop_map(|n| (format!("observe = {}", toml_str(&n)), false)),
    ];
    let predicate = |duration: bool| -> BoxedStrategy<String> {
        if duration {
            prop_oneof![
                (
                    prop::sample::select(vec!["eq", "ne", "lt", "le", "gt", "ge"]),
                    duration_operand()
                )
                    .prop_map(|(k, v)| format!("{k} = {v}")),
                prop::collection::vec(duration_operand(), 0..4)
                    .prop_map(|v| format!("in = [{}]", v.join(", "))),
                any::<bool>().prop_map(|b| format!("exists = {b}")),
            ]
            .boxed()
        } else {
            prop_oneof![
                3 => (prop::sample::select(vec!["eq", "ne", "contains"]), operand())
                    .prop_map(|(k, v)| format!("{k} = {v}")),
                3 => (prop::sample::select(vec!["lt", "le", "gt", "ge"]), ordered_operand())
                    .prop_map(|(k, v)| format!("{k} = {v}")),
                2 => prop_oneof![
                    3 => prop::sample::select(vec![
                        "^ok$", "[0-9]+", "(?i)down", "^$", "é", "^{{ deployment.version }}$",
                        "{{ deployment.id }}.*", ".",
                    ]).prop_map(str::to_string),
                    1 => regex_text(),
                ].prop_map(|r| format!("matches = {}", toml_str(&r))),
                1 => any::<bool>().prop_map(|b| format!("exists = {b}")),
                2 => prop::collection::vec(operand(), 0..5)
                    .prop_map(|v| format!("in = [{}]", v.join(", "))),
                2 => (prop::sample::select(vec!["starts_with", "ends_with"]), text())
                    .prop_map(|(k, t)| format!("{k} = {}", toml_str(&t))),
            ]
            .boxed()
        }
    };
    let extras = (
        prop_oneof![
            3 => Just(None),
            1 => prop::sample::select(vec!["count", "first", "last"])
                .prop_map(|f| Some(format!("filter = {}", toml_str(f)))),
            1 => prop_oneof![0u64..4, Just(u64::from(u32::MAX)), Just(u64::MAX >> 1)]
                .prop_map(|n| Some(format!("nth = {n}"))),
        ],
        prop::option::of(any::<bool>().prop_map(|b| format!("not = {b}"))),
        prop::option::of(
            prop::sample::select(vec!["warn", "fail"])
                .prop_map(|v| format!("severity = {}", toml_str(v))),
        ),
    );
    let shorthand = prop_oneof![
        any::<u16>().prop_map(|c| format!("status = {c}")),
        prop::collection::vec(100u16..600, 0..4).prop_map(|v| {
            let v: Vec<String> = v.iter().map(u16::to_string).collect();
            format!("status = [{}]", v.join(", "))
        }),
    ];
    prop_oneof![
        6 => (query, extras)
            .prop_flat_map(move |((q, duration), (f, n, sev))| {
                predicate(duration).prop_map(move |p| {
                    let mut parts = vec![q.clone(), p];
                    parts.extend(f.clone());
                    parts.extend(n.clone());
                    parts.extend(sev.clone());
                    parts
                })
            })
            .prop_shuffle()
            .prop_map(|parts| format!("{{ {} }}", parts.join(", "))),
        1 => shorthand.prop_map(|s| format!("{{ {s} }}")),
    ]
}

/// One assertion as a TOML inline table: mostly well formed, else any mix of keys.
fn assertion_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => well_formed_assertion(),
        1 => loose_assertion(),
    ]
}

/// Any mix of query, predicate and other keys, mostly one query and one predicate.
fn loose_assertion() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            8 => prop::collection::vec(query_part(), 1..=1),
            1 => prop::collection::vec(query_part(), 0..3),
        ],
        prop::collection::vec(predicate_part(), 0..3),
        prop::collection::vec(extra_part(), 0..3),
    )
        .prop_map(|(q, p, x)| {
            let mut parts = q;
            parts.extend(p);
            parts.extend(x);
            parts
        })
        .prop_shuffle()
        .prop_map(|parts| format!("{{ {} }}", parts.join(", ")))
}

fn assertion_list() -> impl Strategy<Value = String> {
    prop::collection::vec(assertion_text(), 0..4).prop_map(|v| format!("[ {} ]", v.join(", ")))
}

/// Parses one assertion from its inline-table text; `None` when the text is not even TOML.
fn parse_assertion(
    inline: &str,
    scope: &QueryScope,
) -> Option<(Option<Assertion>, Vec<Diagnostic>)> {
    let src = SourceFile::new("fuzz.toml", format!("a = {inline}\n"));
    let doc = DeTable::parse(&src.text).ok()?;
    let (_, v) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == "a")?;
    let mut diags = Vec::new();
    let mut cx = Cx {
        src: &src,
        diags: &mut diags,
    };
    let a = Assertion::parse(v, scope, &mut cx);
    Some((a, diags))
}

/// What an assertion is evaluated against: anything at all.
#[derive(Debug, Clone)]
struct FuzzSubject {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
    body: Option<String>,
    json: Option<Json>,
    durations: Vec<(String, Duration)>,
    observations: Vec<(String, Observation)>,
}

impl Subject for FuzzSubject {
    fn status(&self) -> Option<u16> {
        self.status
    }
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn cookie_values(&self, name: &str) -> Vec<String> {
        self.cookies
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
    fn json(&self) -> Option<&Json> {
        self.json.as_ref()
    }
    fn duration(&self, kind: &str) -> Option<Duration> {
        self.durations
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, d)| *d)
    }
    fn observation(&self, name: &str) -> Option<&Observation> {
        self.observations
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, o)| o)
    }
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..10, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
        Just(Duration::ZERO),
    ]
}

fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        any::<f64>().prop_map(Observation::Number),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            1e300,
            42.0,
        ])
        .prop_map(Observation::Number),
        text().prop_map(Observation::Text),
        any::<bool>().prop_map(Observation::Bool),
        any_duration().prop_map(Observation::Duration),
        prop::collection::vec(text(), 0..12).prop_map(Observation::List),
    ]
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        text().prop_map(Json::String),
    ];
    leaf.prop_recursive(6, 96, 10, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..10).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![
                    3 => prop::sample::select(vec!["status", "items", "id", "a", "b", "version", "é", "x"])
                        .prop_map(str::to_string),
                    2 => "[a-z]{1,2}",
                    1 => text(),
                ],
                inner,
                0..10,
            )
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn name_pool() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "content-type", "x", "session", "total", "ttfb", "value", "rows", "stdout",
            "answers", "exit_code", "cert_days", "role", "status", "a", "",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ]
}

fn subject() -> impl Strategy<Value = FuzzSubject> {
    (
        prop::option::of(any::<u16>()),
        prop::collection::vec((name_pool(), text()), 0..4),
        prop::collection::vec((name_pool(), text()), 0..3),
        prop::option::of(prop_oneof![
            text(),
            json_value().prop_map(|j| j.to_string())
        ]),
        prop::option::of(json_value()),
        prop::collection::vec((name_pool(), any_duration()), 0..3),
        prop::collection::vec((name_pool(), observation()), 0..6),
        any::<bool>(),
    )
        .prop_map(
            |(status, headers, cookies, body, json, durations, observations, json_from_body)| {
                // A real response's JSON is its body parsed; sometimes keep them apart.
                let json = if json_from_body {
                    body.as_deref().and_then(|b| serde_json::from_str(b).ok())
                } else {
                    json
                };
                FuzzSubject {
                    status,
                    headers,
                    cookies,
                    body,
                    json,
                    durations,
                    observations,
                }
            },
        )
}

fn deployment_vars() -> impl Strategy<Value = Option<Arc<DeploymentVars>>> {
    prop::option::of(
        (text(), text(), text()).prop_map(|(id, version, environment)| {
            Arc::new(DeploymentVars {
                id,
                version,
                environment,
            })
        }),
    )
}

/// Evaluates every way the runner does: alone, judged, with and without a deployment.
fn evaluate_all(
    assertions: &[Assertion],
    subject: &FuzzSubject,
    deployment: Option<Arc<DeploymentVars>>,
    implicit_2xx: bool,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(bakewatch::template::with_deployment(deployment, async {
        for a in assertions {
            let shown = a.to_string();
            prop_assert!(!shown.is_empty());
            match a.evaluate(subject) {
                Ok(()) => {}
                Err(f) => {
                    let m = a.failure_message(&f);
                    prop_assert!(!m.is_empty());
                    let _ = (a.is_status(), a.is_warn(), a.uses_deployment());
                }
            }
        }
        let j = judge(assertions, subject, implicit_2xx);
        prop_assert!(!j.message.is_empty());
        Ok(())
    }))
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Arbitrary assertions (operators, operands, filters) against arbitrary observed values:
    /// parsing reports problems at a place inside the text, evaluation never panics.
    #[test]
    fn assertions_never_panic(
        texts in prop::collection::vec(assertion_text(), 1..4),
        scope in any::<Index>(),
        subject in subject(),
        deployment in deployment_vars(),
        implicit_2xx in any::<bool>(),
    ) {
        let scopes = scopes();
        let scope = scopes[scope.index(scopes.len())];
        let mut assertions = Vec::new();
        for text in &texts {
            let Some((a, diags)) = parse_assertion(text, scope) else { continue };
            let line = format!("a = {text}");
            for d in &diags {
                prop_assert!(d.line == 1 && d.col >= 1 && d.col <= line.chars().count() + 1,
                    "diagnostic outside the assertion: {} in {}", d, line);
                prop_assert!(!d.message.contains('\n'), "multi-line message: {:?}", d.message);
            }
            prop_assert!(a.is_some() == diags.is_empty(),
                "parse returned {:?} with diagnostics {:?}", a.is_some(), diags);
            assertions.extend(a);
        }
        evaluate_all(&assertions, &subject, deployment, implicit_2xx)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. JSONPath and templates.

/// Template texts: braces in every arrangement, deployment variables, names.
fn template_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        6 => prop::sample::select(vec![
            "{{", "}}", "{", "}", " ", "deployment.", "version", "id", "environment",
            "secret.", "pw", "token", "x", ".", "é", "\u{0}", "{{ deployment.version }}",
            "{{ deployment.id }}", "{{deployment.environment}}", "{{ token }}", "{{ secret.pw }}",
            "{{}}", "{{ }}", "{{{", "}}}", "-", "_", "1", "\n", "/",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ];
    prop::collection::vec(token, 0..20).prop_map(|v| v.concat())
}

fn scope_strategy() -> impl Strategy<Value = Scope> {
    (
        prop::collection::hash_map(
            prop_oneof![3 => "[a-z_-]{1,6}", 1 => text()],
            json_value(),
            0..4,
        ),
        prop::collection::hash_map(prop_oneof![3 => "[a-z_-]{1,6}", 1 => text()], text(), 0..3),
        deployment_vars(),
    )
        .prop_map(|(captures, secrets, deployment)| Scope {
            captures,
            secrets,
            deployment,
        })
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// JSONPath: arbitrary path texts parse or fail cleanly; a parsed path over arbitrary JSON
    /// never panics, also through the assertion vocabulary (every filter).
    #[test]
    fn jsonpath_never_panics(path in jsonpath_text(), doc in json_value(), filter in 0usize..5) {
        // The parse bakewatch uses (serde_json_path behind a nesting limit) ends soon, whatever
        // the text: a config load must not hang.
        let started = std::time::Instant::now();
        let parsed = bakewatch::checks::assert::parse_jsonpath(&path);
        prop_assert!(started.elapsed() < Duration::from_secs(2),
            "parsing {:?} took {:?}", path, started.elapsed());
        if let Ok(p) = parsed {
            let nodes = p.query(&doc);
            let _ = nodes.len();
            let _ = nodes.exactly_one();
            for location in p.query_located(&doc).locations() {
                let _ = (location.to_string(), location.to_json_pointer());
            }
        }
        let filter = ["", ", filter = \"count\"", ", filter = \"first\"", ", filter = \"last\"", ", nth = 1"][filter];
        let inline = format!("{{ jsonpath = {}{filter}, exists = true }}", toml_str(&path));
        if let Some((Some(a), _)) = parse_assertion(&inline, &EVERYTHING) {
            let subject = FuzzSubject {
                status: Some(200),
                headers: Vec::new(),
                cookies: Vec::new(),
                body: Some(doc.to_string()),
                json: Some(doc),
                durations: Vec::new(),
                observations: Vec::new(),
            };
            evaluate_all(&[a], &subject, None, true)?;
        }
    }

    /// Templates: arbitrary texts parse or fail with a reason; rendering with arbitrary
    /// captures, secrets and deployments never panics, and a literal renders as itself.
    #[test]
    fn templates_never_panic(
        text in template_text(),
        scope in scope_strategy(),
        body in json_value(),
        what in text(),
    ) {
        match Template::parse(&text) {
            Ok(t) => {
                let out = t.render(&scope);
                if t.is_literal() {
                    prop_assert_eq!(&out, &text);
                }
                let _ = t.render_json(&scope);
                let _ = t.display();
                let _ = (t.uses_deployment(), t.sole_var(), t.vars().count());
            }
            Err(m) => prop_assert!(!m.is_empty()),
        }
        match Template::parse_deployment_only(&text, &what) {
            Ok(t) => {
                let _ = t.render(&Scope::of_deployment(scope.deployment.clone()));
            }
            Err(m) => prop_assert!(!m.is_empty()),
        }
        // JSON bodies: every string in the document is a template.
        let mut doc = body;
        if let Json::Object(m) = &mut doc {
            m.insert("t".to_string(), Json::String(text.clone()));
        }
        if let Ok(t) = JsonTemplate::parse(&doc) {
            let _ = t.render(&scope);
            let _ = t.vars().len();
        }
        let _ = bakewatch::template::json_text(&doc);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The deployment API, in process, over loopback.

const API_TOKEN: &str = "fuzz-token";

/// A daemon's HTTP API over real storage, shared by the API properties.
struct Api {
    rt: Arc<tokio::runtime::Runtime>,
    base: String,
    client: reqwest::Client,
    /// A pending deployment nothing will conclude (its verdict long-polls).
    pending: String,
    /// A cancelled one (its verdict answers at once).
    cancelled: String,
    _dir: Option<tempfile::TempDir>,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let daemon = format!(
            "checks = [\"checks.toml\"]\n\
             [server]\nlisten = \"127.0.0.1:0\"\ntoken = \"{API_TOKEN}\"\nrequest_timeout = \"60s\"\n\
             [storage]\npath = \"state.db\"\n\
             [[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             events = [\"deployment_registered\", \"verdict\"]\n"
        );
        let checks = "[[check]]\nname = \"web\"\nservice = \"shop\"\ntype = \"http\"\n\
             url = \"http://127.0.0.1:1/v/{{ deployment.version }}\"\ncritical = true\n\
             [[check]]\nname = \"api\"\nservice = \"api\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
             [[check]]\nname = \"uni\"\nservice = \"sh\u{f6}p \u{65e5}\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
             [[check]]\nname = \"waiting\"\nservice = \"pending-svc\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
             [[rule]]\nname = \"r\"\nservice = \"shop\"\nsignal = \"failure_ratio\"\nabove = 0.5\n\
             rollback = true\nnotify = [\"hook\"]\n";
        std::fs::write(dir.path().join("bakewatch.toml"), daemon).expect("write");
        std::fs::write(dir.path().join("checks.toml"), checks).expect("write");
        let config = bakewatch::config::load(&dir.path().join("bakewatch.toml")).expect("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (base, pending, cancelled) = rt.block_on(async {
            let runtime = Arc::new(bakewatch::runtime::Runtime::new(
                config,
                Arc::new(bakewatch::metrics::Metrics::new()),
            ));
            let store = bakewatch::store::Store::open(dir.path().join("state.db"))
                .await
                .expect("store");
            let deployments = bakewatch::deployments::Deployments::open(
                runtime.clone(),
                store,
                tokio_util::sync::CancellationToken::new(),
            )
            .await
            .expect("deployments");
            runtime.ready.store(true, std::sync::atomic::Ordering::Release);
            let state = bakewatch::http::AppState::new(runtime, Some(deployments));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(async move {
                axum::serve(listener, bakewatch::http::router(state))
                    .await
                    .expect("serve");
            });
            (base, "fuzz-pending".to_string(), "fuzz-cancelled".to_string())
        });
        // A fresh connection per request: a pooled one the server closed after refusing a
        // body it did not read would fail the next request on the client's side.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let api = Api {
            rt: Arc::new(rt),
            base,
            client,
            pending,
            cancelled,
            _dir: Some(dir),
        };
        api.rt.block_on(async {
            for (id, service) in [(&api.pending, "pending-svc"), (&api.cancelled, "api")] {
                let r = api
                    .client
                    .post(format!("{}/api/v1/deployments", api.base))
                    .bearer_auth(API_TOKEN)
                    .json(&serde_json::json!({"id": id, "service": service, "version": "1"}))
                    .send()
                    .await
                    .expect("register");
                assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
            }
            let r = api
                .client
                .post(format!("{}/api/v1/deployments/{}/cancel", api.base, api.cancelled))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .expect("cancel");
            assert_eq!(r.status().as_u16(), 200);
        });
        api
    })
}

impl Api {
    /// Sends a request and checks the answer: 2xx JSON or 4xx problem+json, within `limit`;
    /// then that the server still serves.
    fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        limit: Duration,
    ) -> Result<(u16, String), TestCaseError> {
        self.exchange_as(request, limit, "application/json", false)
    }

    /// [`Api::exchange`] for an endpoint whose success is `ok_type` (or a gate's 503).
    fn exchange_as(
        &self,
        request: reqwest::RequestBuilder,
        limit: Duration,
        ok_type: &str,
        gate: bool,
    ) -> Result<(u16, String), TestCaseError> {
        let answer: Result<(u16, String, String), String> = self.rt.block_on(async {
            let send = tokio::time::timeout(limit, async {
                let r = request
                    .send()
                    .await
                    .map_err(|e| format!("no answer: {e:?}"))?;
                let status = r.status().as_u16();
                let ct = r
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = r.text().await.map_err(|e| format!("body: {e:?}"))?;
                Ok((status, ct, body))
            });
            match send.await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {limit:?}")),
            }
        });
        let (status, ct, body) = answer.map_err(TestCaseError::fail)?;
        self.judge_answer_as(status, &ct, &body, ok_type, gate)?;
        Ok((status, body))
    }

    /// Sends `head` (request line and headers, without the body framing) and `body` over a
    /// raw connection, reading the answer while writing, and judges it like [`Api::exchange`].
    fn raw_exchange(
        &self,
        head: String,
        body: &[u8],
        chunked: bool,
        limit: Duration,
    ) -> Result<(u16, String), TestCaseError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let mut wire = head.into_bytes();
        if chunked {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in body.chunks(4096) {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        } else {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            wire.extend_from_slice(body);
        }
        let answer: Result<Vec<u8>, String> = self.rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut rd, mut wr) = stream.into_split();
            let writer = tokio::spawn(async move {
                // The server may stop reading once it has answered: a failed write is fine.
                // The write side stays open (hyper closes a connection whose client half-closes
                // before the answer) until the answer has been read.
                let _ = wr.write_all(&wire).await;
                std::future::pending::<()>().await;
                drop(wr);
            });
            let mut got = Vec::new();
            let read = tokio::time::timeout(limit, rd.read_to_end(&mut got)).await;
            writer.abort();
            match read {
                Err(_) => Err(format!("no answer within {limit:?}")),
                // A reset after the answer arrived still leaves the answer.
                Ok(Err(e)) if got.is_empty() => Err(format!("no answer: {e}")),
                Ok(_) => Ok(got),
            }
        });
        let raw = answer.map_err(TestCaseError::fail)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| TestCaseError::fail(format!("not an HTTP answer: {text:?}")))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no status: {head:?}")))?;
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        prop_assert!(
            header("transfer-encoding").is_none(),
            "chunked answers are not expected here: {}",
            head
        );
        let ct = header("content-type").unwrap_or_default();
        let body = match header("content-length").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => body.get(..n).unwrap_or(body).to_string(),
            None => body.to_string(),
        };
        self.judge_answer(status, &ct, &body)?;
        Ok((status, body))
    }

    /// 2xx JSON or 4xx problem+json, and the daemon still serves.
    fn judge_answer(&self, status: u16, ct: &str, body: &str) -> Result<(), TestCaseError> {
        self.judge_answer_as(status, ct, body, "application/json", false)
    }

    /// 2xx of type `ok_type` (or, with `gate`, a 503 carrying the verdict as JSON) or 4xx
    /// problem+json, and the daemon still serves.
    fn judge_answer_as(
        &self,
        status: u16,
        ct: &str,
        body: &str,
        ok_type: &str,
        gate: bool,
    ) -> Result<(), TestCaseError> {
        let gate_503 = gate && status == 503;
        prop_assert!(status < 500 || gate_503, "HTTP {}: {}", status, body);
        prop_assert!(
            (200..300).contains(&status) || (400..500).contains(&status) || gate_503,
            "HTTP {}: {}",
            status,
            body
        );
        if status >= 400 && !gate_503 {
            prop_assert_eq!(ct, "application/problem+json", "HTTP {}: {}", status, body);
            let json: Json = serde_json::from_str(body).map_err(|e| {
                TestCaseError::fail(format!(
                    "HTTP {status}: problem is not JSON ({e}): {body:?}"
                ))
            })?;
            prop_assert_eq!(json["status"].as_u64(), Some(u64::from(status)), "{}", body);
            prop_assert!(json["detail"].is_string(), "{}", body);
        } else {
            let want = if gate_503 {
                "application/json"
            } else {
                ok_type
            };
            prop_assert!(ct.starts_with(want), "HTTP {} {}: {}", status, ct, body);
            if want == "application/json" {
                serde_json::from_str::<Json>(body).map_err(|e| {
                    TestCaseError::fail(format!("HTTP {status}: body is not JSON ({e}): {body:?}"))
                })?;
            }
        }
        // The daemon stays up.
        let healthy = self.rt.block_on(async {
            self.client
                .get(format!("{}/-/healthy", self.base))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        prop_assert_eq!(healthy.ok(), Some(200), "the server stopped answering");
        Ok(())
    }
}

/// A JSON field value for a registration body (as JSON text).
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop_oneof![
            prop::sample::select(vec![
                "shop", "api", "sh\u{f6}p \u{65e5}", "pending-svc", "", " ", "nope", "2.4.1",
                "d1", "d-2", "a.b_c", "bad id", "bad/id", "%FF", "\u{0}", "é", "😀",
            ])
            .prop_map(str::to_string),
            (1usize..300).prop_map(|n| "x".repeat(n)),
            text(),
        ]
        .prop_map(Json::String)
        .prop_map(|j| j.to_string()),
        1 => prop::sample::select(vec![
            "null", "0", "-1", "1e999", "18446744073709551616", "true", "[]", "{}", "[\"shop\"]",
            "{\"a\":1}", "\"\\ud800\"", "\"\\u0000\"", "1.5",
        ])
        .prop_map(str::to_string),
        1 => json_value().prop_map(|j| j.to_string()),
        1 => (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
}

fn labels_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::btree_map(text(), text(), 0..5)
            .prop_map(|m| serde_json::to_string(&m).expect("json")),
        1 => field_value(),
    ]
}

/// A registration body: valid ones mutated (mostly), or anything at all.
fn register_body() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop::option::of(prop_oneof![
            3 => prop::sample::select(vec!["d1", "d-2", "a.b_c", "dup"]).prop_map(|s| Json::String(s.to_string()).to_string()),
            1 => (1usize..140).prop_map(|n| Json::String("i".repeat(n)).to_string()),
            1 => field_value(),
        ]),
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of(labels_value()),
        prop::option::of(("[a-z_]{1,8}", field_value())),
        prop::option::of(any::<Index>()),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(id, service, version, environment, labels, extra, duplicate, cut)| {
            let mut fields: Vec<(String, String)> = Vec::new();
            for (k, v) in [("id", id), ("service", service), ("version", version), ("environment", environment), ("labels", labels)] {
                if let Some(v) = v {
                    fields.push((k.to_string(), v));
                }
            }
            if let Some((k, v)) = extra {
                fields.push((k, v));
            }
            if let (Some(i), false) = (duplicate, fields.is_empty()) {
                let f = fields[i.index(fields.len())].clone();
                fields.push(f);
            }
            let body = format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", Json::String(k.clone())))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut bytes = body.into_bytes();
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len() + 1));
            }
            bytes
        });
    prop_oneof![
        6 => structured,
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => json_value().prop_map(|j| j.to_string().into_bytes()),
        1 => Just(
            serde_json::json!({"service": "shop", "version": "9", "labels": {"k": "v".repeat(70 * 1024)}})
                .to_string()
                .into_bytes()
        ),
    ]
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// `POST /api/v1/deployments` with arbitrary bodies, content types and tokens: 2xx or 4xx
    /// problem+json, never 5xx, never a hang; the server stays up.
    #[test]
    fn api_register_any_body(
        body in register_body(),
        content_type in prop::sample::select(vec![
            "application/json", "application/json; charset=utf-8", "", "text/plain",
            "application/problem+json", "application/x-www-form-urlencoded",
            "APPLICATION/JSON", "application/json; charset=latin1", "application/jsonx",
        ]),
        auth in prop::sample::select(vec![
            Some(format!("Bearer {API_TOKEN}")), None, Some("Bearer nope".to_string()),
            Some(format!("bearer {API_TOKEN}")), Some(format!("Bearer {API_TOKEN} ")),
            Some("Basic Zm9vOmJhcg==".to_string()), Some("Bearer ".to_string()),
        ]),
        chunked in any::<bool>(),
    ) {
        let api = api();
        // An oversized body with a Content-Length is refused by the router's body-limit layer
        // in plain text (`an_oversized_body_with_content_length_is_a_problem`, ignored until
        // the router answers it as a problem): sent chunked, the limit is met while reading.
        let chunked = chunked || body.len() > bakewatch::http::MAX_BODY;
        if body.len() > 8 * 1024 {
            // The server may answer before it has read a large body (415, 401, 413): only a raw
            // connection that keeps reading while it writes sees that answer.
            let mut head = "POST /api/v1/deployments HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n".to_string();
            if !content_type.is_empty() {
                head.push_str(&format!("Content-Type: {content_type}\r\n"));
            }
            if let Some(a) = &auth {
                head.push_str(&format!("Authorization: {a}\r\n"));
            }
            api.raw_exchange(head, &body, chunked, Duration::from_secs(20))?;
            return Ok(());
        }
        let mut req = api.client.post(format!("{}/api/v1/deployments", api.base));
        if !content_type.is_empty() {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(a) = &auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.as_str());
        }
        req = if chunked {
            let stream = futures_util::stream::iter(
                body.chunks(1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
            );
            req.body(reqwest::Body::wrap_stream(stream))
        } else {
            req.body(body)
        };
        api.exchange(req, Duration::from_secs(20))?;
    }

    /// `GET /api/v1/deployments/{id}/verdict?…` with arbitrary ids and query strings.
    #[test]
    fn api_verdict_any_query(
        id in prop_oneof![
            2 => Just(0usize),
            2 => Just(1usize),
            1 => Just(2usize),
            2 => Just(3usize),
        ],
        raw_id in prop_oneof![
            "[A-Za-z0-9._-]{0,12}[~!*'()]",
            prop::sample::select(vec!["%FF", "%", "%2", "%2F", "%00", "..", ".", "a%20b", "%C3%A9x~", "\u{65e5}~", "%ZZ"]).prop_map(str::to_string),
        ],
        query in prop_oneof![
            3 => prop::sample::select(vec![
                "", "0s", "1s", "500ms", "1e99s", "-5s", "18446744073709551615s",
                "584942417355y", "99999999999999999999999999s", "1+s", "%20", "%FF", "1s&wait=2s",
                "2m", "121s", "1.5s", "+1s", "%00", "\u{65e5}", "1h%201h", "300000000000000y",
                "0.000000001ns",
            ]).prop_map(|w| format!("wait={w}")),
            2 => prop::collection::vec(
                prop::sample::select(vec![
                    "wait", "=", "&", "%", "+", "1", "s", "ms", ";", "%FF", "%26", "%3D", "x",
                    "wait=", "é", " ", "[]", "wait[]=1s", "#",
                ]),
                0..10,
            ).prop_map(|v| v.concat()),
            1 => text(),
        ],
    ) {
        let api = api();
        let (id, query) = match id {
            0 => (api.cancelled.clone(), query),
            // The pending one long-polls: only short waits, or the run would crawl.
            1 => (api.pending.clone(), ["", "wait=0s", "wait=200ms", "wait=bogus", "wait=", "x=1"][query.len() % 6].to_string()),
            2 => ("never-registered".to_string(), query),
            _ => (raw_id, query),
        };
        let url = format!("{}/api/v1/deployments/{id}/verdict?{query}", api.base);
        let req = api.client.get(url);
        api.exchange(req, Duration::from_secs(20))?;
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Every other endpoint that takes input (path segments, query strings, the token): the
    /// checks API's `?window=`, the deployment list's `?service=&limit=`, a deployment, its
    /// gate (503 with the verdict is its documented answer), cancel, the status page.
    #[test]
    fn api_other_endpoints_any_input(
        which in 0usize..8,
        segment in prop_oneof![
            2 => prop::sample::select(vec!["web", "api", "uni", "nope", "fuzz-cancelled", "d1", "never-registered"]).prop_map(str::to_string),
            1 => "[A-Za-z0-9._-]{0,12}[~!*'()]",
            1 => prop::sample::select(vec!["%FF", "%", "%2F", "%00", "..", "a%20b", "\u{65e5}", "%ZZ"]).prop_map(str::to_string),
        ],
        query in prop_oneof![
            3 => prop::sample::select(vec![
                "", "window=5m", "window=0s", "window=584942417355y", "window=1e99s", "window=",
                "window=-1s", "window=18446744073709551615s", "window=1s&window=2s", "limit=0",
                "limit=-1", "limit=18446744073709551616", "limit=abc", "limit=500", "limit=501",
                "service=shop", "service=%FF", "service=sh%C3%B6p", "service=", "refresh=5",
                "refresh=-1", "refresh=99999999999999999999", "refresh=%FF", "nope=1",
            ]).prop_map(str::to_string),
            1 => prop::collection::vec(
                prop::sample::select(vec![
                    "window", "limit", "service", "refresh", "=", "&", "%", "+", "1", "s",
                    "%FF", "x", "é", " ", "[]", "#",
                ]),
                0..10,
            ).prop_map(|v| v.concat()),
            1 => text(),
        ],
        token in any::<bool>(),
    ) {
        let api = api();
        let b = &api.base;
        let (method, url, ok_type, gate) = match which {
            0 => ("GET", format!("{b}/api/v1/checks?{query}"), "application/json", false),
            1 => ("GET", format!("{b}/api/v1/checks/{segment}?{query}"), "application/json", false),
            2 => ("GET", format!("{b}/api/v1/deployments?{query}"), "application/json", false),
            3 => ("GET", format!("{b}/api/v1/deployments/{segment}?{query}"), "application/json", false),
            4 => ("GET", format!("{b}/api/v1/deployments/{segment}/gate?{query}"), "application/json", true),
            // Never the pending deployment: the verdict property long-polls it.
            5 => ("POST", format!("{b}/api/v1/deployments/{segment}/cancel?{query}"), "application/json", false),
            6 => ("GET", format!("{b}/api/v1/alerts?{query}"), "application/json", false),
            _ => ("GET", format!("{b}/?{query}"), "text/html", false),
        };
        let mut req = if method == "GET" { api.client.get(url) } else { api.client.post(url) };
        if token {
            req = req.bearer_auth(API_TOKEN);
        }
        api.exchange_as(req, Duration::from_secs(20), ok_type, gate)?;
    }
}

/// Durations from the shortest a config accepts to the longest (100 years), and now and then
/// a longer one it must refuse cleanly.
fn extreme_duration() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        20 => prop::sample::select(vec!["1ns", "1ms", "1s", "5m", "30m", "99y", "100y"]),
        1 => prop::sample::select(vec!["101y", "500000000000y", "18446744073709551615s"]),
    ]
}

/// Sets of extreme but valid timings for a whole daemon.
#[derive(Debug, Clone)]
struct Timings {
    deploy: Vec<&'static str>,
    history: (&'static str, i64),
    defaults: (&'static str, &'static str),
    check: (&'static str, &'static str),
    notifications: Vec<&'static str>,
    rule: Vec<&'static str>,
    critical_failures: i64,
}

fn timings() -> impl Strategy<Value = Timings> {
    (
        prop::collection::vec(extreme_duration(), 6),
        (
            extreme_duration(),
            prop::sample::select(vec![16i64, 4096, i64::MAX]),
        ),
        (extreme_duration(), extreme_duration()),
        (extreme_duration(), extreme_duration()),
        prop::collection::vec(extreme_duration(), 3),
        prop::collection::vec(extreme_duration(), 4),
        prop::sample::select(vec![1i64, 2, i64::from(u32::MAX)]),
    )
        .prop_map(
            |(deploy, history, defaults, check, notifications, rule, critical_failures)| Timings {
                deploy,
                history,
                defaults,
                check,
                notifications,
                rule,
                critical_failures,
            },
        )
}

impl Timings {
    /// (daemon file, check file).
    fn render(&self) -> (String, String) {
        let q = |d: &str| toml_str(d);
        let d = &self.deploy;
        // Valid means ordered where the reader asks for an order.
        let len = |s: &str| bakewatch::config::reader::parse_duration(s).expect("a duration");
        let ordered =
            |a: &'static str, b: &'static str| if len(a) <= len(b) { (a, b) } else { (b, a) };
        let (min, max) = ordered(d[3], d[4]);
        let (retry_initial, retry_max) = ordered(self.notifications[0], self.notifications[1]);
        let n = &self.notifications;
        let daemon = format!(
            "checks = [\"checks.toml\"]\n\
             [server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"30s\"\n\
             [storage]\npath = \"state.db\"\n\
             [defaults]\ninterval = {}\ntimeout = {}\n\
             [scheduler]\njitter = {}\n\
             [history]\nretention = {}\nmax_samples = {}\n\
             [deploy]\nwindow = {}\ninterval = {}\nwarmup = {}\nmin_duration = {}\n\
             max_duration = {}\nbaseline = {}\ncritical_failures = {}\n\
             [notifications]\nmax_age = {}\nretry_initial = {}\nretry_max = {}\n\
             [[notifier]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             timeout = {}\nevents = [\"deployment_registered\", \"verdict\"]\n\
             [[notifier]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9\"\nresend = {}\n",
            q(self.defaults.0),
            q(self.defaults.1),
            q(self.check.0),
            q(self.history.0),
            self.history.1,
            q(d[0]),
            q(d[1]),
            q(d[2]),
            q(min),
            q(max),
            q(d[5]),
            self.critical_failures,
            q(n[0]),
            q(retry_initial),
            q(retry_max),
            q(n[2]),
            q(n[2]),
        );
        let (t, i) = self.check;
        let r = &self.rule;
        let checks = format!(
            "[[check]]\nname = \"web\"\nservice = \"shop\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
             timeout = {t}\ninterval = {i}\ncritical = true\n\
             expect = [ {{ duration = \"total\", lt = {t} }} ]\n\
             [[check]]\nname = \"cache\"\nservice = \"shop\"\ntype = \"redis\"\n\
             url = \"redis://127.0.0.1:1/0\"\nmode = \"roundtrip\"\ntimeout = {t}\n\
             [[check]]\nname = \"frag\"\nservice = \"shop\"\ntype = \"memcached\"\n\
             address = \"127.0.0.1:1\"\ntimeout = {t}\n\
             [[check]]\nname = \"pg\"\nservice = \"shop\"\ntype = \"postgres\"\n\
             dsn = \"postgres://u@127.0.0.1:1/db\"\ntimeout = {t}\n\
             [[check]]\nname = \"j\"\nservice = \"shop\"\ntype = \"journey\"\n\
             base_url = \"http://127.0.0.1:1\"\ntimeout = {t}\nbudget = {i}\n\
             [[check.step]]\nname = \"s\"\npath = \"/\"\ntimeout = {t}\n\
             retry = {{ attempts = 2, delay = \"1ms\", on = [\"connect\"] }}\n\
             [[rule]]\nname = \"r\"\nservice = \"shop\"\nsignal = \"failure_ratio\"\nabove = 0.5\n\
             over = {}\nfor = {}\nrepeat = {}\nrollback = true\nnotify = [\"hook\", \"am\"]\n\
             post_deploy = {{ above = 0.1, for = {} }}\n\
             [[rule]]\nname = \"lat\"\ncheck = \"web\"\nsignal = \"latency_p95_ratio\"\nabove = 2\n\
             over = {}\nmin_delta = {}\n",
            q(r[0]),
            q(r[1]),
            q(r[2]),
            q(r[1]),
            q(r[0]),
            q(r[3]),
            t = q(t),
            i = q(i),
        );
        (daemon, checks)
    }
}

/// Loads the config `timings` renders and, when it loads, runs the daemon's parts on it and
/// checks every answer ([`daemon_with_extreme_valid_timings`]).
fn run_daemon_with(timings: &Timings) -> Result<(), TestCaseError> {
    let (daemon, checks) = timings.render();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bakewatch.toml"), &daemon).expect("write");
    std::fs::write(dir.path().join("checks.toml"), &checks).expect("write");
    let config = match bakewatch::config::load(&dir.path().join("bakewatch.toml")) {
        Ok(c) => c,
        Err(e) => {
            // Only ordering rules and the 100-year cap (and what follows from an invalid
            // notifier) may refuse these values.
            let text = e.to_string();
            prop_assert!(
                e.diagnostics.iter().all(|d| d.message.contains("must not")
                    || d.message.contains("longer than 100 years")
                    || d.message.contains("unknown notifier")),
                "refused: {}\n{}\n{}",
                text,
                daemon,
                checks
            );
            return Ok(());
        }
    };
    let shared = api();
    let rt = shared.rt.clone();
    let server = rt.block_on(async {
        let (sink, wake_rx) = bakewatch::runtime::OutcomeSink::new();
        let runtime = Arc::new(
            bakewatch::runtime::Runtime::new(config, Arc::new(bakewatch::metrics::Metrics::new()))
                .with_events(sink.clone()),
        );
        let store = bakewatch::store::Store::open(dir.path().join("state.db"))
            .await
            .expect("store");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let deployments =
            bakewatch::deployments::Deployments::open(runtime.clone(), store, shutdown.clone())
                .await
                .expect("deployments");
        let (_current, current_rx) = tokio::sync::watch::channel(deployments.clone());
        let task = tokio::spawn(bakewatch::deployments::run(
            current_rx,
            sink,
            wake_rx,
            shutdown.clone(),
        ));
        runtime
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        let state = bakewatch::http::AppState::new(runtime.clone(), Some(deployments));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, bakewatch::http::router(state)).await;
        });
        (runtime, task, serving, shutdown, base, _current)
    });
    let (runtime, task, serving, shutdown, base, current) = server;
    let at = Api {
        rt: rt.clone(),
        base: base.clone(),
        client: shared.client.clone(),
        pending: String::new(),
        cancelled: String::new(),
        _dir: None,
    };
    let result = (|| -> Result<(), TestCaseError> {
        let (status, body) = at.exchange(
            at.client
                .post(format!("{base}/api/v1/deployments"))
                .json(&serde_json::json!({"id": "x1", "service": "shop", "version": "2"})),
            Duration::from_secs(20),
        )?;
        prop_assert_eq!(status, 201, "{}", body);
        // Every check runs once and is recorded (the deployments task evaluates).
        for state in &runtime.checks {
            let ran = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), runtime.run_check(state)).await
            });
            prop_assert!(ran.is_ok(), "check {} did not end", state.config.name);
        }
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        for (path, ok_type, gate) in [
            (
                "/api/v1/deployments/x1/verdict?wait=10ms",
                "application/json",
                false,
            ),
            ("/api/v1/deployments/x1/gate", "application/json", true),
            ("/api/v1/deployments/x1", "application/json", false),
            ("/api/v1/deployments", "application/json", false),
            (
                "/api/v1/checks?window=584942417355y",
                "application/json",
                false,
            ),
            ("/api/v1/checks/web", "application/json", false),
            ("/api/v1/alerts", "application/json", false),
            ("/metrics", "text/plain", false),
            ("/", "text/html", false),
        ] {
            at.exchange_as(
                at.client.get(format!("{base}{path}")),
                Duration::from_secs(20),
                ok_type,
                gate,
            )?;
        }
        let (status, body) = at.exchange(
            at.client
                .post(format!("{base}/api/v1/deployments/x1/cancel")),
            Duration::from_secs(20),
        )?;
        prop_assert!(
            status == 200 || status == 409,
            "cancel: HTTP {}: {}",
            status,
            body
        );
        prop_assert!(
            !task.is_finished(),
            "the deployments task ended (panicked?)"
        );
        Ok(())
    })();
    shutdown.cancel();
    serving.abort();
    let ended = rt.block_on(task);
    drop(current);
    result?;
    prop_assert!(
        ended.is_ok(),
        "the deployments task panicked: {:?}",
        ended.err()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 8).max(8), ..fuzz_config() })]

    /// A daemon whose config loads — with durations from a nanosecond to `Duration::MAX` — must
    /// also run: checks run and record, deployments register, verdicts and the API answer, the
    /// deployments task keeps going.
    #[test]
    fn daemon_with_extreme_valid_timings(timings in timings()) {
        run_daemon_with(&timings)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Sanity of the generators themselves (a broken generator would fuzz nothing).

#[test]
fn the_unmutated_generated_config_loads() {
    let config = GeneratedConfig {
        root: vec![e("checks", "[\"../checks/*.toml\"]")],
        daemon: daemon_blocks(),
        checks: check_blocks(),
        inline_checks: false,
        mutations: Vec::new(),
    };
    let (daemon, checks) = config.render();
    let dir = ConfigDir::new();
    dir.write(&dir.daemon_path(), daemon.as_bytes());
    dir.write(&dir.check_path("fuzz.toml"), checks.as_bytes());
    let loaded = bakewatch::config::load(&dir.daemon_path())
        .unwrap_or_else(|e| panic!("{e}\n--- daemon\n{daemon}\n--- checks\n{checks}"));
    assert_eq!(
        loaded.checks.len(),
        check_blocks()
            .iter()
            .filter(|b| b[0].header == "[[check]]")
            .count()
    );
    assert_eq!(loaded.notifiers.len(), 6);
}

#[test]
fn the_uncommented_examples_are_toml() {
    for (name, text) in corpus() {
        if name.ends_with("-open.toml") {
            DeTable::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: minimised inputs of crashes the properties found.

/// Loads a daemon file with one check file; the error as text.
fn load_error(daemon: &str, checks: &str) -> Option<String> {
    let dir = ConfigDir::new();
    dir.write(&dir.daemon_path(), daemon.as_bytes());
    dir.write(&dir.check_path("fuzz.toml"), checks.as_bytes());
    bakewatch::config::load(&dir.daemon_path())
        .err()
        .map(|e| e.to_string())
}

const CHECKS_GLOB: &str = "checks = [\"../checks/*.toml\"]\n";

/// config_structured_mutations (12 027 cases in): a redis check with
/// `timeout = "584542046090y"` panicked the loader ("overflow when multiplying duration by
/// scalar": its key TTL is twice the timeout); memcached did the same. Config durations stop
/// at 100 years now.
#[test]
fn regression_an_endless_redis_or_memcached_timeout_is_an_error() {
    for check in [
        "type = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nmode = \"roundtrip\"",
        "type = \"memcached\"\naddress = \"127.0.0.1:1\"",
    ] {
        let checks = format!("[[check]]\nname = \"c\"\n{check}\ntimeout = \"584542046090y\"\n");
        let e = load_error(CHECKS_GLOB, &checks).expect("refused");
        assert!(
            e.contains("timeout: duration \"584542046090y\" is longer than 100 years"),
            "{e}"
        );
    }
}

/// daemon_with_extreme_valid_timings: with `Duration::MAX`-sized timings the config loaded,
/// then registering a deployment panicked its handler (`started + window`, no answer) and the
/// deployments task died on its first tick (`3 × interval + timeout + jitter` in the no-data
/// check), silently ending all verdicts and alerts. Such timings are refused at load now, and
/// the longest accepted ones run.
#[test]
fn regression_endless_timings_are_refused_and_100_years_run() {
    let all = |d: &'static str| Timings {
        deploy: vec![d; 6],
        history: (d, 16),
        defaults: (d, d),
        check: (d, d),
        notifications: vec![d; 3],
        rule: vec![d; 4],
        critical_failures: 2,
    };
    let (daemon, checks) = all("18446744073709551615s").render();
    let e = load_error(&daemon, &checks).expect("refused");
    assert!(
        e.contains("window: duration \"18446744073709551615s\" is longer than 100 years"),
        "{e}"
    );
    let (daemon, checks) = all("100y").render();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bakewatch.toml"), &daemon).expect("write");
    std::fs::write(dir.path().join("checks.toml"), &checks).expect("write");
    if let Err(e) = bakewatch::config::load(&dir.path().join("bakewatch.toml")) {
        panic!("100 years everywhere is a valid config: {e}");
    }
    run_daemon_with(&all("100y")).unwrap_or_else(|e| panic!("{e}"));
}

/// api_verdict_any_query: `GET /api/v1/deployments/%FF/verdict` was axum's plain-text 400
/// ("Invalid URL: Invalid UTF-8 in `id`"); every path with an `{id}` or `{name}` now
/// answers problem+json.
#[test]
fn regression_a_non_utf8_path_segment_is_a_problem() {
    let api = api();
    for (method, path) in [
        ("GET", "/api/v1/deployments/%FF/verdict?wait="),
        ("GET", "/api/v1/deployments/%FF"),
        ("GET", "/api/v1/deployments/%FF/gate"),
        ("POST", "/api/v1/deployments/%FF/cancel"),
        ("GET", "/api/v1/checks/%FF"),
    ] {
        let url = format!("{}{path}", api.base);
        let req = match method {
            "GET" => api.client.get(url),
            _ => api.client.post(url).bearer_auth(API_TOKEN),
        };
        let (status, body) = api
            .exchange(req, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 400, "{method} {path}: {body}");
    }
}

/// config_structured_mutations: in a key=value DSN holding a later `://`, everything before
/// it (the password included) was shown as the DSN's "scheme".
#[test]
fn regression_a_dsn_password_is_never_shown_as_a_scheme() {
    let pg = format!(
        "[[check]]\nname = \"pg\"\ntype = \"postgres\"\ndsn = \"host=127.0.0.1 user=u password={MARKER}://x\"\n"
    );
    assert_eq!(
        load_error(CHECKS_GLOB, &pg),
        None,
        "a key=value DSN is not a URL"
    );
    let my = format!(
        "[[check]]\nname = \"my\"\ntype = \"mysql\"\ndsn = \"user=u password={MARKER}://x\"\n"
    );
    let e = load_error(CHECKS_GLOB, &my).expect("not a mysql URL");
    assert!(!e.contains(MARKER), "{e}");
    assert!(e.contains("dsn: expected a URL"), "{e}");
    // A real scheme is still named.
    let e =
        load_error(CHECKS_GLOB, &my.replace("user=u password=", "redis://u:")).expect("bad scheme");
    assert!(e.contains("scheme \"redis\" is not mysql://"), "{e}");
    assert!(!e.contains(MARKER), "{e}");
}

/// assertions_never_panic: `{ observe = " 7\n", … }` made a message of two lines, breaking
/// `file:line:col: message`; control characters in messages are escaped now.
#[test]
fn regression_a_message_quoting_a_newline_stays_on_one_line() {
    let checks = "[[check]]\nname = \"c\"\ntype = \"command\"\nargv = [\"true\"]\n\
                  expect = [ { observe = \" 7\\n\", eq = 1 } ]\n";
    let e = load_error(CHECKS_GLOB, checks).expect("unknown observation");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("unknown observation ` 7\\n`"), "{e}");
}

/// jsonpath_never_panics: serde_json_path parses nested filters by backtracking, twice per
/// level (30 nested `[?@…]` took hours), and recursively without a limit (2000 nested
/// parentheses overflowed the stack and aborted the process). Paths nested deeper than
/// `MAX_JSONPATH_NESTING` are a config error now, in assertions and journey captures alike.
#[test]
fn regression_a_deeply_nested_jsonpath_is_a_quick_clean_error() {
    let slow = format!("${}{}", "[?@".repeat(30), "]".repeat(30));
    let overflow = format!("$[?{}@{}]", "(".repeat(2000), ")".repeat(2000));
    for path in [slow, overflow] {
        let started = std::time::Instant::now();
        let checks = format!(
            "[[check]]\nname = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\n\
             expect = [ {{ jsonpath = {}, exists = true }} ]\n\
             [[check]]\nname = \"j\"\ntype = \"journey\"\nbase_url = \"http://127.0.0.1:1\"\n\
             [[check.step]]\nname = \"s\"\npath = \"/\"\ncapture = {{ x = {{ jsonpath = {} }} }}\n",
            toml_str(&path),
            toml_str(&path)
        );
        let e = load_error(CHECKS_GLOB, &checks).expect("too deep");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(e.matches("nest").count(), 2, "{e}");
    }
    // Real paths are untouched.
    assert!(
        bakewatch::checks::assert::parse_jsonpath("$[?@.a[?@.b == 1] && (@.c || !@.d)]").is_ok()
    );
    assert!(bakewatch::checks::assert::parse_jsonpath("$['[[[[[[[[[[[[']").is_ok());
}

/// A body over the 64 KiB cap with a Content-Length is refused; the answer is a problem (it
/// was tower-http's plain-text 413 while the router used `RequestBodyLimitLayer`).
#[test]
fn an_oversized_body_with_content_length_is_a_problem() {
    let api = api();
    let body = serde_json::json!({"service": "shop", "version": "9", "labels": {"k": "v".repeat(70 * 1024)}})
        .to_string();
    let head = format!(
        "POST /api/v1/deployments HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {API_TOKEN}\r\n"
    );
    let (status, _) = api
        .raw_exchange(head, body.as_bytes(), false, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 413);
}
