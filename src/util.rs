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

/// The value of an `Authorization: Basic` header for `user` and `password` (without the
/// scheme): base64 of `user:password`. It gives the password away as surely as the password
/// itself, so it is scrubbed from messages too (a server may echo the request's headers).
pub fn basic_credential(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn basic_credential_is_standard_padded_base64() {
        // RFC 7617's example, and each padding length.
        assert_eq!(
            basic_credential("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_credential("a", "b"), "YTpi");
        assert_eq!(basic_credential("ab", "c"), "YWI6Yw==");
        assert_eq!(basic_credential("ab", "cd"), "YWI6Y2Q=");
    }

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
