//! The `filesystem` check: does a path exist, what is it, how old and how big, how much room is
//! left on its filesystem, and (when asked) can bakewatch really write there.
//!
//! Keys: `path` (required, absolute), `writable` (default false: create, write, fsync and remove
//! a uniquely named probe file in the directory — the path itself when it is a directory, its
//! parent when it is a file). `kind` is an observation, not a key: assert it with
//! `{ observe = "kind", eq = "dir" }` (a `kind` key is rejected with that hint).
//!
//! Observations: `exists` (bool), `kind` (`"file"`, `"dir"` or `"other"` — symlinks are
//! followed, so a link to a backup reports the backup), `size_bytes` (files only), `age_seconds`
//! (now − mtime; negative for a future mtime), `free_bytes` (blocks available to unprivileged
//! users × fragment size, as `df` shows), `free_ratio` (0..1, of the same), `free_inodes`,
//! `writable` (only with `writable = true`), and `duration = "total"`.
//!
//! Judging:
//! - without `expect`, the check passes when the path exists (and the write probe succeeded);
//!   a missing path (or a dangling symlink) fails with reason `assertion`;
//! - with `expect`, the assertions decide, so `{ observe = "exists", eq = false }` can assert
//!   that a path (a lock file, a maintenance flag) is absent;
//! - `writable = true` is a requirement in every case: a failed probe fails with `assertion`;
//! - a path bakewatch may not look up (`EACCES` on stat: its own sandbox or user) is an
//!   `error` with reason `config` — bakewatch could not judge, the target is not shown bad;
//! - any other I/O error on the path (`EIO`, `ESTALE`, `ELOOP`) fails with reason `query`,
//!   like a failing query: the filesystem itself answered with an error.
//!
//! All file I/O runs on tokio's blocking pool, so a hung NFS mount never stalls the runtime.
//! A blocked thread cannot be cancelled: the runner's timeout still answers on time, and at
//! most [`MAX_BLOCKED`] probes per check may be stuck at once; later runs fail at once with
//! reason `timeout` instead of piling up threads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::assert::{Assertion, Measured, QueryScope, judge};
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use crate::config::reader::{At, Cx, TableReader};

/// What `expect` may ask of a filesystem check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &[
        "exists",
        "kind",
        "size_bytes",
        "age_seconds",
        "free_bytes",
        "free_ratio",
        "free_inodes",
        "writable",
    ],
};

/// Probes of one check that may be blocked in the kernel at once (see the module doc).
pub const MAX_BLOCKED: usize = 2;

/// A validated filesystem check.
#[derive(Debug)]
pub struct FilesystemSpec {
    path: PathBuf,
    writable: bool,
    /// Probes of this check still running on the blocking pool (a hung mount keeps them).
    in_flight: Arc<AtomicUsize>,
}

impl FilesystemSpec {
    /// Reads the filesystem keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<FilesystemSpec> {
        let path = t.req::<At<PathBuf>>("path", cx).and_then(|p| {
            if p.value.as_os_str().is_empty() {
                cx.error(p.span, "path: must not be empty");
                None
            } else if !p.value.is_absolute() {
                cx.error(
                    p.span,
                    format!(
                        "path: {:?} is relative; give an absolute path (the daemon's working directory is not the config's)",
                        p.value.display().to_string()
                    ),
                );
                None
            } else {
                Some(p.value)
            }
        });
        let writable = t.or("writable", false, cx);
        if let Some(v) = t.get("kind") {
            cx.error(
                v.span(),
                "kind: `kind` is an observation, not a key; assert it with expect = [{ observe = \"kind\", eq = \"dir\" }]",
            );
            return None;
        }
        Some(FilesystemSpec {
            path: path?,
            writable,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// One run: inspect the path on the blocking pool, then judge.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        let slot = InFlight::take(&self.in_flight);
        let Some(slot) = slot else {
            return Outcome::fail(
                Reason::Timeout,
                format!(
                    "{MAX_BLOCKED} earlier probes of {} are still blocked in the kernel (hung filesystem?)",
                    self.path.display()
                ),
            );
        };
        let (path, writable) = (self.path.clone(), self.writable);
        // The slot moves into the closure: it is released when the probe really ends (or
        // when the closure is dropped unrun), not when this future is dropped.
        let probe = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            inspect(&path, writable)
        })
        .await;
        let probe = match probe {
            Ok(p) => p,
            Err(e) => {
                return Outcome::error(Reason::Internal, format!("the probe thread failed: {e}"));
            }
        };
        let shown = self.path.display();
        let found = match probe {
            Probe::Denied(m) => return Outcome::error(Reason::Config, m),
            Probe::Failed(m) => return Outcome::fail(Reason::Query, m),
            Probe::Missing { dangling } => {
                let what = if dangling {
                    format!("{shown} does not exist (dangling symlink)")
                } else {
                    format!("{shown} does not exist")
                };
                let mut observations = Observations::default();
                observations.set("exists", Observation::Bool(false));
                let subject = Measured {
                    observations,
                    total: start.elapsed(),
                };
                if expect.is_empty() {
                    let mut o = Outcome::fail(Reason::Assertion, what);
                    o.observations = subject.observations;
                    return o;
                }
                return judged(expect, subject, None, |_| what);
            }
            Probe::Found(found) => found,
        };
        let mut observations = Observations::default();
        observations.set("exists", Observation::Bool(true));
        observations.set("kind", Observation::Text(found.kind.as_str().to_string()));
        if let Some(size) = found.size {
            observations.set("size_bytes", Observation::Number(size as f64));
        }
        if let Some(modified) = found.modified {
            let age = match SystemTime::now().duration_since(modified) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            observations.set("age_seconds", Observation::Number(age));
        }
        if let Some(space) = &found.space {
            observations.set("free_bytes", Observation::Number(space.free_bytes as f64));
            if let Some(ratio) = space.free_ratio {
                observations.set("free_ratio", Observation::Number(ratio));
            }
            observations.set("free_inodes", Observation::Number(space.free_inodes as f64));
        }
        if let Some(w) = &found.write {
            observations.set("writable", Observation::Bool(w.is_ok()));
        }
        let subject = Measured {
            observations,
            total: start.elapsed(),
        };
        let write_failure = match &found.write {
            Some(Err(m)) => Some(format!("{shown} is not writable: {m}")),
            _ => None,
        };
        judged(expect, subject, write_failure, |o| summary(&found, o))
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The outcome for an inspected path: a failed write probe fails whatever `expect` says;
/// otherwise the assertions decide (none: pass). `pass_message` words a passing run.
fn judged(
    expect: &[Assertion],
    subject: Measured,
    write_failure: Option<String>,
    pass_message: impl FnOnce(&Observations) -> String,
) -> Outcome {
    let j = judge(expect, &subject, false);
    let mut outcome = match write_failure {
        Some(m) => {
            let more = match j.failures.iter().filter(|f| !f.warn).count() {
                0 => String::new(),
                n => format!(" (+{n} failed assertions)"),
            };
            Outcome::fail(Reason::Assertion, format!("{m}{more}"))
        }
        None if j.status == Status::Pass => Outcome::pass(pass_message(&subject.observations)),
        None => Outcome::new(j.status, j.reason, j.message),
    };
    outcome.failed_assertions = j.failures;
    outcome.observations = subject.observations;
    outcome
}

/// "dir, 41% free (12.3 GiB), writable" / "file, 1.2 KiB, modified 2h 3m ago".
fn summary(found: &Found, o: &Observations) -> String {
    let mut parts = vec![found.kind.as_str().to_string()];
    if let Some(size) = found.size {
        parts.push(human_bytes(size));
    }
    if let Some(Observation::Number(age)) = o.get("age_seconds")
        && found.kind == Kind::File
    {
        let age = Duration::from_secs(age.max(0.0) as u64);
        parts.push(format!("modified {} ago", humantime::format_duration(age)));
    }
    if let Some(space) = &found.space {
        match space.free_ratio {
            Some(r) => parts.push(format!(
                "{:.0}% free ({})",
                r * 100.0,
                human_bytes(space.free_bytes)
            )),
            None => parts.push(format!("{} free", human_bytes(space.free_bytes))),
        }
    }
    if matches!(found.write, Some(Ok(()))) {
        parts.push("writable".to_string());
    }
    parts.join(", ")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A probe slot of one check; released on drop.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn take(counter: &Arc<AtomicUsize>) -> Option<InFlight> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BLOCKED).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(counter.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Other => "other",
        }
    }
}

/// What the blocking part found.
enum Probe {
    Missing {
        dangling: bool,
    },
    /// bakewatch's own permissions stopped the lookup.
    Denied(String),
    /// The filesystem answered the lookup with an error.
    Failed(String),
    Found(Found),
}

struct Found {
    kind: Kind,
    size: Option<u64>,
    modified: Option<SystemTime>,
    space: Option<Space>,
    /// The write probe's result, when asked for.
    write: Option<Result<(), String>>,
}

struct Space {
    free_bytes: u64,
    /// None on filesystems that report no size (procfs, sysfs).
    free_ratio: Option<f64>,
    free_inodes: u64,
}

/// Blocking: stat, statvfs, and the write probe.
fn inspect(path: &Path, writable: bool) -> Probe {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                    Probe::Missing {
                        dangling: std::fs::symlink_metadata(path)
                            .is_ok_and(|m| m.file_type().is_symlink()),
                    }
                }
                std::io::ErrorKind::PermissionDenied => Probe::Denied(format!(
                    "bakewatch (uid {}) may not look up {}: permission denied",
                    rustix::process::getuid().as_raw(),
                    path.display()
                )),
                _ => Probe::Failed(format!("stat {}: {}", path.display(), io_text(&e))),
            };
        }
    };
    let kind = if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    let space = rustix::fs::statvfs(path).ok().map(|s| Space {
        free_bytes: s.f_bavail.saturating_mul(s.f_frsize),
        free_ratio: (s.f_blocks > 0).then(|| s.f_bavail as f64 / s.f_blocks as f64),
        free_inodes: s.f_favail,
    });
    let write = writable.then(|| {
        let dir = match kind {
            Kind::Dir => path,
            _ => path.parent().unwrap_or(Path::new("/")),
        };
        write_probe(dir)
    });
    Probe::Found(Found {
        kind,
        size: (kind == Kind::File).then_some(meta.len()),
        modified: meta.modified().ok(),
        space,
        write,
    })
}

/// Creates, writes, fsyncs and removes a probe file in `dir`; the error says which step failed.
fn write_probe(dir: &Path) -> Result<(), String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        ".bakewatch-probe-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let file = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| format!("create {}: {}", file.display(), io_text(&e)))?;
    let written = f
        .write_all(b"bakewatch write probe\n")
        .map_err(|e| format!("write {}: {}", file.display(), io_text(&e)))
        .and_then(|()| {
            f.sync_all()
                .map_err(|e| format!("fsync {}: {}", file.display(), io_text(&e)))
        });
    drop(f);
    let removed = std::fs::remove_file(&file)
        .map_err(|e| format!("remove {}: {}", file.display(), io_text(&e)));
    written.and(removed)
}

/// An I/O error as text, without the "(os error N)" tail.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
