//! POSIX crontab schedules (`cron = "*/5 * * * *"`): parsing, validation, next fire times.
//! Translated because the `cron` crate speaks Quartz: seconds field, 1 = Sunday, day fields ANDed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

/// `@` shorthands and the 5-field expressions they stand for.
const SHORTHANDS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTH_NAMES: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const DAY_NAMES: &[&str] = &[
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// How one crontab field is validated and expanded.
struct Field {
    /// Name used in error messages.
    name: &'static str,
    /// Smallest accepted value.
    min: u32,
    /// Largest accepted value (7 for day-of-week, an alias of 0).
    max: u32,
    /// Upper end of `*` and of an open `N/step`.
    star_max: u32,
    /// Largest accepted step.
    step_max: u32,
    /// Names accepted in place of numbers; `names[i]` has value `min + i`.
    names: &'static [&'static str],
    /// Day-of-week: 7 is another spelling of 0 (Sunday).
    weekday: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    star_max: 59,
    step_max: 60,
    names: &[],
    weekday: false,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    star_max: 59,
    step_max: 60,
    names: &[],
    weekday: false,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    star_max: 23,
    step_max: 24,
    names: &[],
    weekday: false,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    star_max: 31,
    step_max: 31,
    names: &[],
    weekday: false,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    star_max: 12,
    step_max: 12,
    names: MONTH_NAMES,
    weekday: false,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    step_max: 7,
    names: DAY_NAMES,
    weekday: true,
};

impl Field {
    /// Bit mask of every value the field can take (day-of-week: 0-6, 7 folds onto 0).
    fn full_mask(&self) -> u64 {
        (self.min..=self.star_max).fold(0, |mask, v| mask | (1 << v))
    }

    /// Parses a whole field (a comma list) into a bit mask of values.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut mask = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!(
                    "cron: {} field '{text}' has an empty list item",
                    self.name
                ));
            }
            mask |= self.parse_item(item)?;
        }
        Ok(mask)
    }

    /// Parses one list item: `*`, `N`, `A-B`, each optionally followed by `/STEP`.
    fn parse_item(&self, item: &str) -> Result<u64, String> {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(self.parse_step(item, step)?)),
            None => (item, None),
        };
        let (first, last) = if base == "*" {
            (self.min, self.star_max)
        } else if let Some((a, b)) = base.split_once('-') {
            let first = self.parse_value(item, a)?;
            let mut last = self.parse_value(item, b)?;
            // `FRI-SUN` / `5-0`: Sunday at the end of a range means 7.
            if self.weekday && last == 0 && first > 0 {
                last = 7;
            }
            if first > last {
                return Err(format!(
                    "cron: {} range '{base}' is backwards (start {first} is after end {last})",
                    self.name
                ));
            }
            (first, last)
        } else {
            let first = self.parse_value(item, base)?;
            // `N/step` runs from N to the end of the field.
            let last = if step.is_some() {
                self.star_max.max(first)
            } else {
                first
            };
            (first, last)
        };
        let mut mask = 0u64;
        for v in (first..=last).step_by(step.unwrap_or(1) as usize) {
            let v = if self.weekday && v == 7 { 0 } else { v };
            mask |= 1 << v;
        }
        Ok(mask)
    }

    fn parse_step(&self, item: &str, text: &str) -> Result<u32, String> {
        if text.is_empty() {
            return Err(format!(
                "cron: {} item '{item}' has '/' but no step",
                self.name
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("cron: {} step '{text}' is not a number", self.name));
        }
        match text.parse::<u32>() {
            Ok(step) if (1..=self.step_max).contains(&step) => Ok(step),
            _ => Err(format!(
                "cron: {} step {text} out of range 1-{}",
                self.name, self.step_max
            )),
        }
    }

    fn parse_value(&self, item: &str, text: &str) -> Result<u32, String> {
        if text.is_empty() {
            return Err(format!(
                "cron: {} item '{item}' is missing a value",
                self.name
            ));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => Err(format!(
                    "cron: {} value {text} out of range {}-{}",
                    self.name, self.min, self.max
                )),
            };
        }
        if !self.names.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic()) {
            let lower = text.to_ascii_lowercase();
            let found = self
                .names
                .iter()
                .position(|name| lower == *name || (lower.len() == 3 && name.starts_with(&lower)));
            return match found {
                Some(i) => Ok(self.min + i as u32),
                None => Err(format!(
                    "cron: unknown {} name '{text}' (expected {})",
                    self.name,
                    self.name_hint()
                )),
            };
        }
        if self.names.is_empty() {
            Err(format!(
                "cron: {} value '{text}' is not a number",
                self.name
            ))
        } else {
            Err(format!(
                "cron: {} value '{text}' is not a number or name",
                self.name
            ))
        }
    }

    fn name_hint(&self) -> String {
        let first = &self.names[0][..3];
        let last = &self.names[self.names.len() - 1][..3];
        format!(
            "{}-{}",
            first.to_ascii_uppercase(),
            last.to_ascii_uppercase()
        )
    }

    /// Renders a mask for the `cron` crate: `*` when full, else an explicit comma list.
    /// `offset` is added to every value (1 for day-of-week: POSIX 0 = Sunday, Quartz 1 = Sunday).
    fn render(&self, mask: u64, offset: u32) -> String {
        if mask == self.full_mask() {
            return "*".to_string();
        }
        (self.min..=self.star_max)
            .filter(|v| mask & (1 << v) != 0)
            .map(|v| (v + offset).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A validated crontab expression.
///
/// Accepts the standard 5-field form `min hour dom month dow`, an optional leading seconds
/// field (6 fields), and the shorthands `@yearly`/`@annually`, `@monthly`, `@weekly`,
/// `@daily`/`@midnight` and `@hourly`. Semantics follow POSIX crontab:
///
/// * day-of-week 0 and 7 are Sunday, 1 is Monday; `SUN`…`SAT` and `JAN`…`DEC` (any case,
///   three-letter or full names) may replace numbers;
/// * items are `*`, `N`, `A-B`, optionally with `/STEP`; `N/STEP` runs from N to the field's end;
///   a day-of-week range ending in Sunday (`FRI-SUN`, `5-0`) wraps to 7;
/// * when both day-of-month and day-of-week are restricted (neither is exactly `*`), a day
///   matches if **either** field matches; otherwise both must match (unlike Vixie cron, a
///   field such as `*/2` counts as restricted);
/// * fire times are computed in the local time of the timezone passed to
///   [`CronExpr::next_after`]; a local time skipped by a DST gap does not fire that day.
///
/// Expressions that can never fire (e.g. `0 0 30 2 *`) are rejected at parse time.
#[derive(Clone, Debug)]
pub struct CronExpr {
    /// The expression as written (surrounding whitespace trimmed).
    source: String,
    /// One schedule, or two (day-of-month half, day-of-week half) for POSIX OR semantics.
    schedules: Vec<cron::Schedule>,
}

impl CronExpr {
    /// Parses and validates a crontab expression. The error is a single line starting with `cron:`.
    pub fn parse(expr: &str) -> Result<CronExpr, String> {
        let source = expr.trim();
        if source.is_empty() {
            return Err("cron: empty expression".to_string());
        }
        let body = if source.starts_with('@') {
            expand_shorthand(source)?
        } else {
            source
        };

        let fields: Vec<&str> = body.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "cron: expected 5 fields (min hour dom month dow) or 6 with leading seconds, found {n}"
                ));
            }
        };
        let [minutes, hours, dom, months, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];

        let sec = SECOND.render(SECOND.parse(seconds)?, 0);
        let min = MINUTE.render(MINUTE.parse(minutes)?, 0);
        let hour = HOUR.render(HOUR.parse(hours)?, 0);
        let dom_list = DAY_OF_MONTH.render(DAY_OF_MONTH.parse(dom)?, 0);
        let month = MONTH.render(MONTH.parse(months)?, 0);
        let dow_list = DAY_OF_WEEK.render(DAY_OF_WEEK.parse(dow)?, 1);

        let prefix = format!("{sec} {min} {hour}");
        let quartz = if dom != "*" && dow != "*" {
            // POSIX: either day field may match. The crate ANDs them, so run one schedule per
            // field and take the earliest.
            vec![
                format!("{prefix} {dom_list} {month} *"),
                format!("{prefix} * {month} {dow_list}"),
            ]
        } else {
            vec![format!("{prefix} {dom_list} {month} {dow_list}")]
        };

        let mut schedules = Vec::with_capacity(quartz.len());
        for q in &quartz {
            let schedule = cron::Schedule::from_str(q).map_err(|_| {
                format!("cron: internal error: translated expression '{q}' was rejected")
            })?;
            // Drop halves that can never fire (e.g. day 31 restricted to 30-day months).
            if next_from(&schedule, &DateTime::<Utc>::UNIX_EPOCH).is_some() {
                schedules.push(schedule);
            }
        }
        if schedules.is_empty() {
            return Err(format!(
                "cron: '{source}' never fires (day-of-month {dom} does not occur in month {months})"
            ));
        }

        Ok(CronExpr {
            source: source.to_string(),
            schedules,
        })
    }

    /// The first fire time strictly after `after`, in the given timezone.
    ///
    /// `None` only once the `cron` crate's calendar (years up to 2100) is exhausted.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.schedules
            .iter()
            .filter_map(|schedule| next_from(schedule, after))
            .min()
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// First time of `schedule` strictly after `after`. The iterator can yield the earlier
/// reading of an ambiguous (DST fold) local time, which may precede `after`; skip those.
fn next_from<Tz: TimeZone>(
    schedule: &cron::Schedule,
    after: &DateTime<Tz>,
) -> Option<DateTime<Tz>> {
    schedule.after(after).take(4).find(|t| t > after)
}

fn expand_shorthand(source: &str) -> Result<&'static str, String> {
    let lower = source.to_ascii_lowercase();
    if let Some((_, body)) = SHORTHANDS.iter().find(|(name, _)| *name == lower) {
        return Ok(body);
    }
    if lower == "@reboot" {
        return Err("cron: @reboot is not supported (a schedule needs a time)".to_string());
    }
    Err(format!(
        "cron: unknown shorthand '{source}' (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
    ))
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for CronExpr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

/// Equality is by source text.
impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CronExpr {}

impl serde::Serialize for CronExpr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for CronExpr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CronExpr::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, FixedOffset, NaiveDate, Weekday};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn cron(expr: &str) -> CronExpr {
        CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
    }

    /// The next `n` fire times after `from`.
    fn fires<Tz: TimeZone>(expr: &str, from: DateTime<Tz>, n: usize) -> Vec<DateTime<Tz>> {
        let c = cron(expr);
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = c.next_after(&t).expect("schedule should fire");
            out.push(t.clone());
        }
        out
    }

    /// Fire times as `YYYY-MM-DD HH:MM:SS` local strings.
    fn fires_str(expr: &str, from: DateTime<Utc>, n: usize) -> Vec<String> {
        fires(expr, from, n)
            .iter()
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .collect()
    }

    fn quartz(expr: &str) -> Vec<String> {
        cron(expr)
            .schedules
            .iter()
            .map(|s| s.source().to_string())
            .collect()
    }

    fn err(expr: &str) -> String {
        let e = CronExpr::parse(expr).expect_err(expr);
        assert!(e.starts_with("cron: "), "{e}");
        assert!(!e.contains('\n') && !e.contains('^'), "not one line: {e}");
        e
    }

    // 2026-11-27 is a Friday.
    fn friday() -> DateTime<Utc> {
        utc(2026, 11, 27, 0, 0, 0)
    }

    #[test]
    fn reference_date_is_a_friday() {
        assert_eq!(friday().weekday(), Weekday::Fri);
    }

    #[test]
    fn monday_at_nine() {
        assert_eq!(
            fires_str("0 9 * * 1", friday(), 3),
            [
                "2026-11-30 09:00:00",
                "2026-12-07 09:00:00",
                "2026-12-14 09:00:00"
            ]
        );
        for t in fires("0 9 * * 1", friday(), 10) {
            assert_eq!(t.weekday(), Weekday::Mon);
        }
        assert_eq!(quartz("0 9 * * 1"), ["0 0 9 * * 2"]);
    }

    #[test]
    fn next_is_strictly_after() {
        let c = cron("0 9 * * 1");
        let at = utc(2026, 11, 30, 9, 0, 0);
        assert_eq!(c.next_after(&at), Some(utc(2026, 12, 7, 9, 0, 0)));
        let just_before = at - chrono::Duration::milliseconds(1);
        assert_eq!(c.next_after(&just_before), Some(at));
        let just_after = at + chrono::Duration::milliseconds(500);
        assert_eq!(c.next_after(&just_after), Some(utc(2026, 12, 7, 9, 0, 0)));
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        let expected = [
            "2026-11-29 00:00:00",
            "2026-12-06 00:00:00",
            "2026-12-13 00:00:00",
        ];
        for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "0 0 * * sunday"] {
            assert_eq!(fires_str(expr, friday(), 3), expected, "{expr}");
        }
        assert_eq!(quartz("0 0 * * 7"), ["0 0 0 * * 1"]);
        // 0 and 7 together, or with the rest of the week, are not double counted.
        assert_eq!(quartz("0 0 * * 0,7"), ["0 0 0 * * 1"]);
        assert_eq!(quartz("0 0 * * 0-7"), ["0 0 0 * * *"]);
    }

    #[test]
    fn every_five_minutes() {
        assert_eq!(
            fires_str("*/5 * * * *", utc(2026, 11, 27, 10, 2, 30), 4),
            [
                "2026-11-27 10:05:00",
                "2026-11-27 10:10:00",
                "2026-11-27 10:15:00",
                "2026-11-27 10:20:00"
            ]
        );
        assert_eq!(
            fires_str("*/5 * * * *", utc(2026, 11, 27, 23, 55, 0), 1),
            ["2026-11-28 00:00:00"]
        );
        assert_eq!(
            quartz("*/5 * * * *"),
            ["0 0,5,10,15,20,25,30,35,40,45,50,55 * * * *"]
        );
    }

    #[test]
    fn six_fields_with_seconds() {
        assert_eq!(
            fires_str("*/10 * * * * *", utc(2026, 11, 27, 10, 0, 3), 4),
            [
                "2026-11-27 10:00:10",
                "2026-11-27 10:00:20",
                "2026-11-27 10:00:30",
                "2026-11-27 10:00:40"
            ]
        );
        assert_eq!(
            fires_str("*/10 * * * * *", utc(2026, 11, 27, 10, 0, 50), 1),
            ["2026-11-27 10:01:00"]
        );
        assert_eq!(
            fires_str("30 0 9 * * MON", friday(), 2),
            ["2026-11-30 09:00:30", "2026-12-07 09:00:30"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2026-11-13 is a Friday the 13th (fires once); 2026-12-13 is a Sunday.
        assert_eq!(
            fires_str("0 0 13 * 5", utc(2026, 11, 1, 0, 0, 0), 8),
            [
                "2026-11-06 00:00:00",
                "2026-11-13 00:00:00",
                "2026-11-20 00:00:00",
                "2026-11-27 00:00:00",
                "2026-12-04 00:00:00",
                "2026-12-11 00:00:00",
                "2026-12-13 00:00:00",
                "2026-12-18 00:00:00"
            ]
        );
        assert_eq!(quartz("0 0 13 * 5"), ["0 0 0 13 * *", "0 0 0 * * 6"]);
        // With one side `*`, only the other side restricts.
        assert_eq!(
            fires_str("0 0 13 * *", utc(2026, 11, 1, 0, 0, 0), 2),
            ["2026-11-13 00:00:00", "2026-12-13 00:00:00"]
        );
        assert_eq!(
            fires_str("0 0 * * 5", utc(2026, 11, 1, 0, 0, 0), 2),
            ["2026-11-06 00:00:00", "2026-11-13 00:00:00"]
        );
        // The month still restricts both halves.
        assert_eq!(
            fires_str("0 0 1 JAN MON", utc(2026, 11, 1, 0, 0, 0), 3),
            [
                "2027-01-01 00:00:00",
                "2027-01-04 00:00:00",
                "2027-01-11 00:00:00"
            ]
        );
    }

    #[test]
    fn day_of_week_ranges_steps_lists() {
        let weekdays = [
            "2026-11-27 08:00:00",
            "2026-11-30 08:00:00",
            "2026-12-01 08:00:00",
            "2026-12-02 08:00:00",
            "2026-12-03 08:00:00",
            "2026-12-04 08:00:00",
            "2026-12-07 08:00:00",
        ];
        for expr in [
            "0 8 * * 1-5",
            "0 8 * * MON-FRI",
            "0 8 * * mon-fri",
            "0 8 * * Monday-Friday",
            "0 8 * * 1,2,3,4,5",
            "0 8 * * 1-3,THU,5",
        ] {
            assert_eq!(fires_str(expr, friday(), 7), weekdays, "{expr}");
        }
        assert_eq!(quartz("0 8 * * 1-5"), ["0 0 8 * * 2,3,4,5,6"]);

        // */2 = Sun, Tue, Thu, Sat.
        assert_eq!(
            fires_str("0 8 * * */2", friday(), 5),
            [
                "2026-11-28 08:00:00",
                "2026-11-29 08:00:00",
                "2026-12-01 08:00:00",
                "2026-12-03 08:00:00",
                "2026-12-05 08:00:00"
            ]
        );
        assert_eq!(quartz("0 8 * * */2"), ["0 0 8 * * 1,3,5,7"]);
        // 1-5/2 = Mon, Wed, Fri; 1/2 runs to Saturday.
        assert_eq!(quartz("0 8 * * 1-5/2"), ["0 0 8 * * 2,4,6"]);
        assert_eq!(quartz("0 8 * * 1/2"), ["0 0 8 * * 2,4,6"]);
        // Ranges that end on Sunday (0 or 7).
        for expr in [
            "0 8 * * SAT-SUN",
            "0 8 * * 6-7",
            "0 8 * * 6-0",
            "0 8 * * 6,0",
        ] {
            assert_eq!(quartz(expr), ["0 0 8 * * 1,7"], "{expr}");
        }
        assert_eq!(quartz("0 8 * * FRI-SUN"), ["0 0 8 * * 1,6,7"]);
        assert_eq!(
            fires_str("0 8 * * FRI-SUN", friday(), 4),
            [
                "2026-11-27 08:00:00",
                "2026-11-28 08:00:00",
                "2026-11-29 08:00:00",
                "2026-12-04 08:00:00"
            ]
        );
    }

    #[test]
    fn other_fields_ranges_steps_names() {
        assert_eq!(
            quartz("0-10/5 9-17/4 1,15 JAN,jul,Dec *"),
            ["0 0,5,10 9,13,17 1,15 1,7,12 *"]
        );
        assert_eq!(quartz("30/15 * * * *"), ["0 30,45 * * * *"]);
        assert_eq!(quartz("0 0 * FEB-APR *"), ["0 0 0 * 2,3,4 *"]);
        assert_eq!(quartz("0 0 */10 * *"), ["0 0 0 1,11,21,31 * *"]);
        assert_eq!(
            fires_str("0 12 1 JAN,JUL *", friday(), 2),
            ["2027-01-01 12:00:00", "2027-07-01 12:00:00"]
        );
        // Feb 29 only fires in leap years.
        assert_eq!(
            fires_str("0 0 29 2 *", friday(), 2),
            ["2028-02-29 00:00:00", "2032-02-29 00:00:00"]
        );
    }

    #[test]
    fn shorthands() {
        let from = utc(2026, 11, 27, 10, 30, 0);
        for (expr, next) in [
            ("@yearly", "2027-01-01 00:00:00"),
            ("@annually", "2027-01-01 00:00:00"),
            ("@monthly", "2026-12-01 00:00:00"),
            ("@weekly", "2026-11-29 00:00:00"),
            ("@daily", "2026-11-28 00:00:00"),
            ("@midnight", "2026-11-28 00:00:00"),
            ("@hourly", "2026-11-27 11:00:00"),
            ("@DAILY", "2026-11-28 00:00:00"),
            ("  @hourly  ", "2026-11-27 11:00:00"),
        ] {
            assert_eq!(fires_str(expr, from, 1), [next], "{expr}");
        }
        assert_eq!(cron("@weekly").as_str(), "@weekly");
    }

    #[test]
    fn fixed_offset_uses_local_time() {
        let ist = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        let from = ist.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        let got = fires("0 9 * * 1", from, 2);
        assert_eq!(got[0], ist.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap());
        assert_eq!(got[1], ist.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap());
        assert_eq!(*got[0].offset(), ist);
        assert_eq!(got[0].naive_utc().to_string(), "2026-11-30 03:30:00");

        // Monday 01:00 at UTC-08:00 is Monday 09:00 UTC: the weekday is judged locally.
        let pst = FixedOffset::west_opt(8 * 3600).unwrap();
        let from = pst.with_ymd_and_hms(2026, 11, 29, 23, 0, 0).unwrap();
        let next = cron("0 1 * * MON").next_after(&from).unwrap();
        assert_eq!(next, pst.with_ymd_and_hms(2026, 11, 30, 1, 0, 0).unwrap());
        assert_eq!(next.with_timezone(&Utc), utc(2026, 11, 30, 9, 0, 0));

        // OR semantics in a fixed offset too.
        let from = pst.with_ymd_and_hms(2026, 12, 12, 0, 0, 0).unwrap();
        let next = cron("0 0 13 * 5").next_after(&from).unwrap();
        assert_eq!(
            next.date_naive(),
            NaiveDate::from_ymd_opt(2026, 12, 13).unwrap()
        );
    }

    #[test]
    fn display_as_str_and_traits() {
        let c = cron("  */5 * * * *  ");
        assert_eq!(c.as_str(), "*/5 * * * *");
        assert_eq!(c.to_string(), "*/5 * * * *");
        assert_eq!("*/5 * * * *".parse::<CronExpr>().unwrap(), c);
        assert_ne!(cron("0 0 * * 0"), cron("0 0 * * 1"));
    }

    #[test]
    fn serde_round_trip() {
        let c: CronExpr = serde_json::from_str("\"0 9 * * MON-FRI\"").unwrap();
        assert_eq!(c.as_str(), "0 9 * * MON-FRI");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"0 9 * * MON-FRI\"");
        let e = serde_json::from_str::<CronExpr>("\"0 9 * * 8\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("day-of-week value 8 out of range 0-7"),
            "{e}"
        );
    }

    #[test]
    fn error_wrong_field_count() {
        let msg = "cron: expected 5 fields (min hour dom month dow) or 6 with leading seconds";
        assert_eq!(err("* * *"), format!("{msg}, found 3"));
        assert_eq!(err("* * * *"), format!("{msg}, found 4"));
        assert_eq!(err("0 0 0 * * * 2026"), format!("{msg}, found 7"));
    }

    #[test]
    fn error_out_of_range() {
        assert_eq!(
            err("0 0 * * 8"),
            "cron: day-of-week value 8 out of range 0-7"
        );
        assert_eq!(err("60 * * * *"), "cron: minute value 60 out of range 0-59");
        assert_eq!(err("0 24 * * *"), "cron: hour value 24 out of range 0-23");
        assert_eq!(
            err("0 0 0 * *"),
            "cron: day-of-month value 0 out of range 1-31"
        );
        assert_eq!(
            err("0 0 32 * *"),
            "cron: day-of-month value 32 out of range 1-31"
        );
        assert_eq!(err("0 0 * 13 *"), "cron: month value 13 out of range 1-12");
        assert_eq!(err("0 0 * 0 *"), "cron: month value 0 out of range 1-12");
        assert_eq!(
            err("60 * * * * *"),
            "cron: second value 60 out of range 0-59"
        );
        assert_eq!(err("0 0-99 * * *"), "cron: hour value 99 out of range 0-23");
        assert_eq!(
            err("99999999999 * * * *"),
            "cron: minute value 99999999999 out of range 0-59"
        );
        assert_eq!(
            err("0 0 * * 5-1"),
            "cron: day-of-week range '5-1' is backwards (start 5 is after end 1)"
        );
        assert_eq!(
            err("0 0 30 2 *"),
            "cron: '0 0 30 2 *' never fires (day-of-month 30 does not occur in month 2)"
        );
        assert!(err("0 0 31 APR,JUN *").contains("never fires"));
    }

    #[test]
    fn error_bad_step() {
        assert_eq!(err("*/0 * * * *"), "cron: minute step 0 out of range 1-60");
        assert_eq!(
            err("*/61 * * * *"),
            "cron: minute step 61 out of range 1-60"
        );
        assert_eq!(
            err("0 0 * * */8"),
            "cron: day-of-week step 8 out of range 1-7"
        );
        assert_eq!(err("*/x * * * *"), "cron: minute step 'x' is not a number");
        assert_eq!(
            err("*/ * * * *"),
            "cron: minute item '*/' has '/' but no step"
        );
        assert_eq!(
            err("*/2/3 * * * *"),
            "cron: minute step '2/3' is not a number"
        );
    }

    #[test]
    fn error_garbage() {
        assert_eq!(err("a b c d e"), "cron: minute value 'a' is not a number");
        assert_eq!(
            err("0 0 * * 1#2"),
            "cron: day-of-week value '1#2' is not a number or name"
        );
        assert_eq!(
            err("0 0 L * *"),
            "cron: day-of-month value 'L' is not a number"
        );
        assert_eq!(
            err("0 0 ? * 1"),
            "cron: day-of-month value '?' is not a number"
        );
        assert_eq!(
            err("0 0 * * FOO"),
            "cron: unknown day-of-week name 'FOO' (expected SUN-SAT)"
        );
        assert_eq!(
            err("0 0 * JANUARYX *"),
            "cron: unknown month name 'JANUARYX' (expected JAN-DEC)"
        );
        assert_eq!(
            err("0 0 1,,2 * *"),
            "cron: day-of-month field '1,,2' has an empty list item"
        );
        assert_eq!(
            err("-1 * * * *"),
            "cron: minute item '-1' is missing a value"
        );
        assert_eq!(
            err("1- * * * *"),
            "cron: minute item '1-' is missing a value"
        );
        assert_eq!(
            err("@fortnightly"),
            "cron: unknown shorthand '@fortnightly' (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
        );
        assert_eq!(
            err("@reboot"),
            "cron: @reboot is not supported (a schedule needs a time)"
        );
        assert_eq!(
            err("hello"),
            "cron: expected 5 fields (min hour dom month dow) or 6 with leading seconds, found 1"
        );
    }

    #[test]
    fn error_empty() {
        assert_eq!(err(""), "cron: empty expression");
        assert_eq!(err("   \t "), "cron: empty expression");
    }
}
