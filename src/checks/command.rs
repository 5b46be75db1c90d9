//! The `command` check: runs a program and judges its exit code and output.
//!
//! Keys: `argv` (required, non-empty array: the program and its arguments, run without a
//! shell); `shell = true` runs `argv[0]` as a script with `/bin/sh -c`, further `argv` items
//! becoming `$1`, `$2`, …; `env` (a table of variables added to bakewatch's environment; values
//! may be secrets); `workdir` (absolute; default bakewatch's working directory); `max_output`
//! (default 64 KiB, for stdout and for stderr each).
//!
//! The child runs in its own process group with stdin from /dev/null. Output beyond
//! `max_output` is read and discarded, so the child never blocks on a full pipe. When the
//! child exits, the whole group is killed (background processes it left behind die with it);
//! when the run is dropped by the runner's timeout, a guard kills the whole group and tokio
//! reaps the child, so nothing is left running and no zombie stays behind. A process that
//! escaped the group (`setsid`) while holding the pipes open gets [`OUTPUT_GRACE`] after the
//! exit, then bakewatch stops reading.
//!
//! Observations: `exit_code` (absent when the child was killed by a signal), `stdout` and
//! `stderr` (capped; trailing newlines removed, as shell command substitution does), and
//! `duration = "total"`.
//!
//! Judging: without `expect`, exit code 0 passes; another exit code or a signal fails with
//! reason `status` ("exit code 3: <first line of stderr>"). With `expect`, the assertions
//! decide (so `{ observe = "exit_code", eq = 1 }` can expect a failure; add
//! `{ observe = "exit_code", eq = 0 }` when output assertions alone are not enough). A program
//! that cannot be started (not found, not executable, missing `workdir`) is an `error` with
//! reason `config`: the host lacks what the check needs, the target is not shown bad.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::assert::{Assertion, Measured, QueryScope, judge};
use super::outcome::{Observation, Observations, Outcome, Reason, Status};
use crate::config::Secret;
use crate::config::reader::{At, ByteSize, Cx, TableReader};

/// What `expect` may ask of a command check.
pub const SCOPE: QueryScope = QueryScope {
    response: false,
    durations: &["total"],
    observations: &["exit_code", "stdout", "stderr"],
};

/// Default cap on how much of stdout (and of stderr) is kept.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 << 10;

/// How long output is still read after the child exited (see the module doc).
pub const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// The shell of `shell = true`.
const SHELL: &str = "/bin/sh";

/// A validated command check.
#[derive(Debug)]
pub struct CommandSpec {
    /// The program as executed (`/bin/sh` with `shell = true`).
    program: String,
    /// Its arguments as executed (`-c`, the script, `sh`, the rest with `shell = true`).
    args: Vec<String>,
    /// What messages call the command: argv[0], or "/bin/sh" for a script.
    shown: String,
    env: Vec<(String, Secret)>,
    workdir: Option<PathBuf>,
    max_output: usize,
}

impl CommandSpec {
    /// Reads the command keys of a `[[check]]`.
    pub fn parse(t: &mut TableReader, cx: &mut Cx) -> Option<CommandSpec> {
        let before = cx.diags.len();
        let shell = t.or("shell", false, cx);
        let argv = t.req::<At<Vec<String>>>("argv", cx).and_then(|a| {
            let first = a.value.first().cloned();
            match first {
                None => {
                    let example = if shell {
                        "[\"pg_dump mydb | gzip -t\"]"
                    } else {
                        "[\"/usr/bin/pg_isready\", \"-q\"]"
                    };
                    cx.error(
                        a.span,
                        format!("argv: must not be empty (e.g. argv = {example})"),
                    );
                    None
                }
                Some(p) if p.trim().is_empty() => {
                    let what = if shell { "the script" } else { "the program" };
                    cx.error(a.span, format!("argv: {what} (argv[0]) must not be empty"));
                    None
                }
                Some(p) if !shell && !p.contains('/') && p.contains(char::is_whitespace) => {
                    cx.error(
                        a.span,
                        format!(
                            "argv: program {p:?} contains spaces; give each argument its own item or set `shell = true`"
                        ),
                    );
                    None
                }
                Some(_) if a.value.iter().any(|s| s.contains('\0')) => {
                    cx.error(a.span, "argv: arguments cannot contain NUL characters");
                    None
                }
                Some(_) => Some(a.value),
            }
        });
        let mut env = Vec::new();
        if let Some(map) = t.opt::<BTreeMap<String, Secret>>("env", cx) {
            for (name, value) in map {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    cx.error(
                        t.span_of("env"),
                        format!("env: {name:?} is not a valid variable name"),
                    );
                } else if value.expose().contains('\0') {
                    cx.error(
                        t.span_of("env"),
                        format!("env: the value of {name} contains a NUL character"),
                    );
                } else {
                    env.push((name, value));
                }
            }
        }
        let workdir = t.opt::<At<PathBuf>>("workdir", cx).and_then(|w| {
            if w.value.is_absolute() {
                Some(w.value)
            } else {
                cx.error(
                    w.span,
                    format!(
                        "workdir: {:?} is relative; give an absolute path",
                        w.value.display().to_string()
                    ),
                );
                None
            }
        });
        let max_output = t.or("max_output", ByteSize(DEFAULT_MAX_OUTPUT), cx).0;
        let argv = argv?;
        if cx.diags.len() > before {
            return None;
        }
        let (program, args, shown) = if shell {
            let mut args = vec!["-c".to_string(), argv[0].clone(), "sh".to_string()];
            args.extend(argv[1..].iter().cloned());
            (SHELL.to_string(), args, SHELL.to_string())
        } else {
            (argv[0].clone(), argv[1..].to_vec(), argv[0].clone())
        };
        Some(CommandSpec {
            program,
            args,
            shown,
            env,
            workdir,
            max_output: usize::try_from(max_output).unwrap_or(usize::MAX),
        })
    }

    /// One run: spawn, read output while waiting, kill the group, judge. Dropping this future
    /// (the runner's timeout) kills the whole group.
    pub async fn run(&self, expect: &[Assertion]) -> Outcome {
        let start = Instant::now();
        if let Some(dir) = &self.workdir {
            match tokio::fs::metadata(dir).await {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Outcome::error(
                        Reason::Config,
                        format!("workdir {} is not a directory", dir.display()),
                    );
                }
                Err(e) => {
                    return Outcome::error(
                        Reason::Config,
                        format!("workdir {}: {}", dir.display(), io_text(&e)),
                    );
                }
            }
        }
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        for (name, value) in &self.env {
            cmd.env(name, value.expose());
        }
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return self.spawn_failure(&e),
        };
        // Before anything can fail or be dropped: the guard owns the group from here on.
        let group = child.id().map(|pid| ProcessGroup {
            pgid: pid as i32,
            armed: AtomicBool::new(true),
        });
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (exited_tx, exited_rx) = watch::channel(false);
        let wait = async {
            let status = child.wait().await;
            // Stray background processes die with their parent; this also closes the pipes
            // they inherited, so the readers below reach end of file.
            if let Some(g) = &group {
                g.kill_and_disarm();
            }
            let _ = exited_tx.send(true);
            status
        };
        let (status, out, err) = tokio::join!(
            wait,
            read_capped(stdout, self.max_output, exited_rx.clone()),
            read_capped(stderr, self.max_output, exited_rx),
        );
        let total = start.elapsed();
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return Outcome::error(
                    Reason::Internal,
                    format!("waiting for {}: {}", self.shown, io_text(&e)),
                );
            }
        };

        let mut observations = Observations::default();
        if let Some(code) = status.code() {
            observations.set("exit_code", Observation::Number(f64::from(code)));
        }
        observations.set("stdout", Observation::Text(out.text()));
        observations.set("stderr", Observation::Text(err.text()));
        let ended = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            (None, None) => "ended without an exit code".to_string(),
        };
        let run = Measured {
            observations,
            total,
        };
        let mut outcome = if expect.is_empty() {
            if status.success() {
                Outcome::pass(ended)
            } else {
                let first = first_line(&run.text("stderr"));
                let message = if first.is_empty() {
                    ended
                } else {
                    format!("{ended}: {first}")
                };
                Outcome::fail(Reason::Status, message)
            }
        } else {
            let j = judge(expect, &run, false);
            let mut o = Outcome::new(j.status, j.reason, j.message);
            if j.status == Status::Pass {
                o.message = ended;
            }
            o.failed_assertions = j.failures;
            o
        };
        for (name, c) in [("stdout", &out), ("stderr", &err)] {
            if c.total > c.kept.len() as u64 {
                outcome.message.push_str(&format!(
                    " ({name} cut at {} of {} bytes)",
                    c.kept.len(),
                    c.total
                ));
            }
        }
        if out.abandoned || err.abandoned {
            outcome.message.push_str(&format!(
                " (output still open {} after exit, left unread)",
                humantime::format_duration(OUTPUT_GRACE)
            ));
        }
        outcome.observations = run.observations;
        outcome
    }

    fn spawn_failure(&self, e: &std::io::Error) -> Outcome {
        const ENOEXEC: i32 = 8;
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied (not executable?)".into(),
            _ if e.raw_os_error() == Some(ENOEXEC) => "not an executable format".to_string(),
            // Out of processes, file descriptors or memory: bakewatch's own trouble.
            _ => {
                return Outcome::error(
                    Reason::Internal,
                    format!("cannot start {}: {}", self.shown, io_text(e)),
                );
            }
        };
        Outcome::error(
            Reason::Config,
            format!("cannot run {:?}: {why}", self.shown),
        )
    }

    pub(crate) fn secret_values(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|(_, v)| v.is_from_source())
            .map(|(_, v)| v.expose().to_string())
            .collect()
    }
}

/// The child's process group; SIGKILLed on drop unless already killed after a normal exit.
struct ProcessGroup {
    pgid: i32,
    armed: AtomicBool,
}

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pgid) {
            // ESRCH: the group is already gone, which is the point.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    /// Kills the group once; later drops must not signal a number the kernel may reuse.
    fn kill_and_disarm(&self) {
        if self.armed.swap(false, Ordering::AcqRel) {
            self.kill();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill_and_disarm();
    }
}

/// One stream's output: the kept prefix and how much there was.
struct Captured {
    kept: Vec<u8>,
    total: u64,
    /// Reading stopped [`OUTPUT_GRACE`] after the exit with the pipe still open.
    abandoned: bool,
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept)
            .trim_end_matches(['\n', '\r'])
            .to_string()
    }
}

/// Reads a pipe to its end, keeping the first `cap` bytes and discarding the rest (so the
/// writer never blocks), or until [`OUTPUT_GRACE`] after `exited` turns true.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
    mut exited: watch::Receiver<bool>,
) -> Captured {
    let mut c = Captured {
        kept: Vec::new(),
        total: 0,
        abandoned: false,
    };
    let Some(mut pipe) = pipe else {
        return c;
    };
    let grace = async move {
        let _ = exited.wait_for(|e| *e).await;
        tokio::time::sleep(OUTPUT_GRACE).await;
    };
    tokio::pin!(grace);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        tokio::select! {
            r = pipe.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.total += n as u64;
                    let room = cap.saturating_sub(c.kept.len());
                    c.kept.extend_from_slice(&buf[..n.min(room)]);
                }
            },
            () = &mut grace => {
                c.abandoned = true;
                break;
            }
        }
    }
    c
}

/// The first non-empty line, trimmed and shortened for a one-line message.
fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let line = line.unwrap_or("");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        3 => " (SIGQUIT)",
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        13 => " (SIGPIPE)",
        14 => " (SIGALRM)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// An I/O error as text, without the "(os error N)" tail.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

impl Measured {
    fn text(&self, name: &str) -> String {
        match self.observations.get(name) {
            Some(Observation::Text(t)) => t.clone(),
            _ => String::new(),
        }
    }
}
