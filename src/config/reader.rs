//! Typed reading of a spanned TOML tree. Each key is read on its own, so one bad value
//! never hides the next: every problem becomes a [`Diagnostic`] at the value's position,
//! unknown keys included (with a "did you mean" hint).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, SourceFile};

/// A TOML value with the byte span it came from.
pub type Value<'i> = Spanned<DeValue<'i>>;

/// Where diagnostics go while one file is read.
pub struct Cx<'a> {
    pub src: &'a SourceFile,
    pub diags: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags.push(self.src.diagnostic(span, message));
    }
}

/// Human name of a TOML value's type, for "expected X, found Y" messages.
pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reads the keys of one table; [`TableReader::finish`] reports the keys nobody asked for.
pub struct TableReader<'t, 'i> {
    table: &'t DeTable<'i>,
    pub span: Range<usize>,
    /// What this table is, for messages: "check", "[server]", "assertion".
    what: String,
    used: Vec<&'t str>,
}

impl<'t, 'i> TableReader<'t, 'i> {
    /// A reader over `value`, or a diagnostic when it is not a table.
    pub fn new(value: &'t Value<'i>, what: impl Into<String>, cx: &mut Cx) -> Option<Self> {
        let what = what.into();
        match value.get_ref() {
            DeValue::Table(table) => Some(Self {
                table,
                span: value.span(),
                what,
                used: Vec::new(),
            }),
            other => {
                cx.error(
                    value.span(),
                    format!("{what} must be a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The same reader under a better name once it is known ("check `api`").
    pub fn relabel(mut self, what: impl Into<String>) -> Self {
        self.what = what.into();
        self
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// The raw value of `key`, marking the key as known.
    pub fn get(&mut self, key: &'t str) -> Option<&'t Value<'i>> {
        self.used.push(key);
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Whether `key` is present (and marks it as known).
    pub fn has(&mut self, key: &'t str) -> bool {
        self.get(key).is_some()
    }

    /// The span of `key`'s value, or of the table when absent.
    pub fn span_of(&self, key: &str) -> Range<usize> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v.span())
            .unwrap_or_else(|| self.span.clone())
    }

    /// An optional key: `None` when absent or invalid (invalid is reported).
    pub fn opt<T: FromToml>(&mut self, key: &'t str, cx: &mut Cx) -> Option<T> {
        let v = self.get(key)?;
        match T::from_toml(v, cx) {
            Ok(x) => Some(x),
            Err(m) if m == REPORTED => None,
            Err(m) => {
                cx.error(v.span(), format!("{key}: {m}"));
                None
            }
        }
    }

    /// An optional key with a default.
    pub fn or<T: FromToml>(&mut self, key: &'t str, default: T, cx: &mut Cx) -> T {
        self.opt(key, cx).unwrap_or(default)
    }

    /// A required key: absent is reported at the table.
    pub fn req<T: FromToml>(&mut self, key: &'t str, cx: &mut Cx) -> Option<T> {
        if self.get(key).is_none() {
            cx.error(
                self.span.clone(),
                format!("{} is missing required key `{key}`", self.what),
            );
            return None;
        }
        self.opt(key, cx)
    }

    /// Every key/value pair, for tables with free-form keys (headers, env).
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (&'t Spanned<std::borrow::Cow<'i, str>>, &'t Value<'i>)> {
        self.table.iter()
    }

    /// Treats every key as known: for a table whose schema could not be determined (an
    /// unknown check type), where "unknown key" reports would only be noise.
    pub fn accept_unread(&mut self) {
        self.used.extend(self.table.iter().map(|(k, _)| {
            let k: &'t str = k.get_ref().as_ref();
            k
        }));
    }

    /// Reports every key that was never read.
    pub fn finish(self, cx: &mut Cx) {
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            if !self.used.contains(&name) {
                let hint = closest(name, &self.used)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                cx.error(
                    key.span(),
                    format!("unknown key `{name}` in {}{hint}", self.what),
                );
            }
        }
    }
}

/// The known name closest to a misspelt one, when it is close enough to be a typo.
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The `Err` of a conversion whose problems were already reported at finer positions.
pub const REPORTED: &str = "";

/// Conversion of one TOML value. `Err` carries the message; the caller adds key and place.
pub trait FromToml: Sized {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String>;
}

fn mismatch(expected: &str, v: &Value<'_>) -> String {
    format!("expected {expected}, found {}", type_name(v.get_ref()))
}

impl FromToml for String {
    fn from_toml(v: &Value<'_>, _: &mut Cx) -> Result<Self, String> {
        v.get_ref()
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| mismatch("a string", v))
    }
}

impl FromToml for PathBuf {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        String::from_toml(v, cx).map(PathBuf::from)
    }
}

impl FromToml for bool {
    fn from_toml(v: &Value<'_>, _: &mut Cx) -> Result<Self, String> {
        v.get_ref()
            .as_bool()
            .ok_or_else(|| mismatch("true or false", v))
    }
}

/// Integers, parsed from TOML's text form (which keeps radix and underscores).
pub fn as_i128(v: &DeValue<'_>) -> Option<i128> {
    let int = v.as_integer()?;
    let digits: String = int.as_str().chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, digits.trim_start_matches('+').to_string()),
    };
    let radix = int.radix();
    // The parser may or may not keep the 0x / 0o / 0b prefix in the text.
    let body = match digits.get(..2) {
        Some("0x" | "0o" | "0b") if radix != 10 => &digits[2..],
        _ => &digits[..],
    };
    let n = i128::from_str_radix(body, radix).ok()?;
    Some(if neg { -n } else { n })
}

macro_rules! int_from_toml {
    ($($t:ty),*) => {$(
        impl FromToml for $t {
            fn from_toml(v: &Value<'_>, _: &mut Cx) -> Result<Self, String> {
                let n = as_i128(v.get_ref()).ok_or_else(|| mismatch("an integer", v))?;
                <$t>::try_from(n).map_err(|_| {
                    format!("{n} is out of range ({}..={})", <$t>::MIN, <$t>::MAX)
                })
            }
        }
    )*};
}
int_from_toml!(u16, u32, u64, usize, i64);

/// A TOML number (integer or float) as f64.
pub fn as_f64(v: &DeValue<'_>) -> Option<f64> {
    if let Some(n) = as_i128(v) {
        return Some(n as f64);
    }
    let f = v.as_float()?;
    match f.as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        s => s.replace('_', "").parse().ok(),
    }
}

impl FromToml for f64 {
    fn from_toml(v: &Value<'_>, _: &mut Cx) -> Result<Self, String> {
        as_f64(v.get_ref()).ok_or_else(|| mismatch("a number", v))
    }
}

/// Parses "250ms", "30s", "1m 30s", "2h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("invalid duration {s:?} (expected e.g. \"250ms\", \"30s\", \"1m30s\", \"2h\")")
    })
}

/// The longest duration a config value may be. Longer is a typo or a way of writing "never",
/// and the daemon adds config durations to clocks and to each other (`now + window`,
/// `3 × interval + timeout`): near `Duration::MAX` those sums overflow and panic.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// [`parse_duration`] for config values: at most [`MAX_CONFIG_DURATION`] (100 years).
pub fn parse_config_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_CONFIG_DURATION {
        return Err(format!("duration {s:?} is longer than 100 years"));
    }
    Ok(d)
}

impl FromToml for Duration {
    fn from_toml(v: &Value<'_>, _: &mut Cx) -> Result<Self, String> {
        let s = v
            .get_ref()
            .as_str()
            .ok_or_else(|| mismatch("a duration string such as \"30s\"", v))?;
        parse_config_duration(s)
    }
}

impl<T: FromToml> FromToml for Vec<T> {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        let DeValue::Array(items) = v.get_ref() else {
            return Err(mismatch("an array", v));
        };
        let mut out = Vec::new();
        let mut bad = false;
        for item in items.iter() {
            match T::from_toml(item, cx) {
                Ok(x) => out.push(x),
                Err(m) => {
                    if m != REPORTED {
                        cx.error(item.span(), m);
                    }
                    bad = true;
                }
            }
        }
        // Item errors are already reported at their own positions.
        if bad {
            Err(REPORTED.to_string())
        } else {
            Ok(out)
        }
    }
}

impl<T: FromToml> FromToml for BTreeMap<String, T> {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        let DeValue::Table(table) = v.get_ref() else {
            return Err(mismatch("a table", v));
        };
        let mut out = BTreeMap::new();
        let mut bad = false;
        for (k, item) in table.iter() {
            match T::from_toml(item, cx) {
                Ok(x) => {
                    out.insert(k.get_ref().to_string(), x);
                }
                Err(m) if m == REPORTED => bad = true,
                Err(m) => {
                    cx.error(item.span(), format!("{}: {m}", k.get_ref()));
                    bad = true;
                }
            }
        }
        if bad {
            Err(REPORTED.to_string())
        } else {
            Ok(out)
        }
    }
}

/// A size in bytes: an integer, or a string such as "1MiB", "64KiB", "10MB", "512B".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromToml for ByteSize {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        if let DeValue::String(s) = v.get_ref() {
            return parse_size(s).map(ByteSize);
        }
        u64::from_toml(v, cx)
            .map(ByteSize)
            .map_err(|_| mismatch("a size such as \"1MiB\" or a number of bytes", v))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {s:?} (expected e.g. \"512KiB\", \"1MiB\", \"2GB\")"
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?} (expected e.g. \"512KiB\", \"1MiB\", \"2GB\")"))
}

/// A value together with the span it was read from, for cross-reference errors.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<T: FromToml> FromToml for At<T> {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        T::from_toml(v, cx).map(|value| At {
            value,
            span: v.span(),
        })
    }
}

/// Converts a TOML value to JSON (for `json` bodies and assertion operands).
pub fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(_) => as_i128(v)
            .and_then(|n| i64::try_from(n).ok())
            .map(J::from)
            .unwrap_or(J::Null),
        DeValue::Float(_) => as_f64(v)
            .and_then(serde_json::Number::from_f64)
            .map(J::Number)
            .unwrap_or(J::Null),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        DeValue::Array(a) => J::Array(a.iter().map(|x| to_json(x.get_ref())).collect()),
        DeValue::Table(t) => J::Object(
            t.iter()
                .map(|(k, x)| (k.get_ref().to_string(), to_json(x.get_ref())))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_hint_finds_the_close_key() {
        assert_eq!(
            closest("intervall", &["name", "interval", "cron"]),
            Some("interval")
        );
        assert_eq!(closest("zzz", &["name", "interval"]), None);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn config_durations_stop_at_100_years() {
        assert_eq!(
            parse_config_duration("100y"),
            Ok(MAX_CONFIG_DURATION),
            "100 years is the limit"
        );
        let e = parse_config_duration("101y").expect_err("too long");
        assert_eq!(e, "duration \"101y\" is longer than 100 years");
        assert!(parse_config_duration("18446744073709551615s").is_err());
        assert!(parse_config_duration("1e99s").is_err());
    }

    #[test]
    fn integers_keep_radix() {
        let v = DeValue::parse("0x10").unwrap();
        assert_eq!(as_i128(v.get_ref()), Some(16));
        let v = DeValue::parse("-1_000").unwrap();
        assert_eq!(as_i128(v.get_ref()), Some(-1000));
    }
}
