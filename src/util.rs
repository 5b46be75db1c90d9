//! Small helpers with no better home.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 UTC timestamp with millisecond precision.
pub fn rfc3339(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seconds since the epoch as f64 (for `_timestamp_seconds` gauges).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Milliseconds since the epoch.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Removes `.` and `name/..` pairs without touching the file system, so paths in messages
/// read `checks/api.toml` rather than `config/../checks/api.toml`.
pub fn normalize_path(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return std::path::PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn normalize_drops_dot_and_parent_pairs() {
        assert_eq!(
            normalize_path(Path::new("config/../checks/a.toml")),
            Path::new("checks/a.toml")
        );
        assert_eq!(normalize_path(Path::new("./a/./b")), Path::new("a/b"));
        assert_eq!(normalize_path(Path::new("../x")), Path::new("../x"));
        assert_eq!(normalize_path(Path::new("/../x")), Path::new("/x"));
    }
}
