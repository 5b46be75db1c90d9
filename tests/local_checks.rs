//! Integration tests of the `filesystem` and `command` checks, on the daemon's own code path:
//! a config is written to files, loaded with `config::load`, and the check runs through
//! `runtime::execute` (which applies the timeout) or `Runtime::run_check` (which also redacts
//! secrets). Everything is real: temp files and directories, real programs under `/bin/sh`,
//! `/proc` for process-group and zombie checks, and `bakewatch once` run as an unprivileged
//! user (via `setpriv` when the tests run as root) for permission problems.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bakewatch::checks::{Observation, Outcome, Reason, Status};
use bakewatch::config::{CheckConfig, Config};
use bakewatch::metrics::Metrics;
use bakewatch::runtime::{Runtime, execute};
use common::{run_cli, wait_until, write_config};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Helpers.

use common::q;

fn qp(p: &Path) -> String {
    q(p.to_str().expect("UTF-8 path"))
}

/// Loads a config whose one check file holds a single check "probe" of type `kind`.
fn load_config(kind: &str, keys: &str) -> Config {
    common::probe_config(kind, keys)
}

fn load_check(kind: &str, keys: &str) -> Arc<CheckConfig> {
    let config = load_config(kind, keys);
    assert_eq!(config.checks.len(), 1);
    config.checks[0].clone()
}

async fn fs_check(keys: &str) -> Outcome {
    execute(&load_check("filesystem", keys)).await
}

async fn command(keys: &str) -> Outcome {
    execute(&load_check("command", keys)).await
}

fn observation<'a>(o: &'a Outcome, name: &str) -> &'a Observation {
    o.observations
        .get(name)
        .unwrap_or_else(|| panic!("no observation {name:?} in {o:#?}"))
}

fn number(o: &Outcome, name: &str) -> f64 {
    match observation(o, name) {
        Observation::Number(n) => *n,
        other => panic!("observation {name:?} is not a number: {other:?}"),
    }
}

fn text<'a>(o: &'a Outcome, name: &str) -> &'a str {
    match observation(o, name) {
        Observation::Text(t) => t,
        other => panic!("observation {name:?} is not text: {other:?}"),
    }
}

fn boolean(o: &Outcome, name: &str) -> bool {
    match observation(o, name) {
        Observation::Bool(b) => *b,
        other => panic!("observation {name:?} is not a bool: {other:?}"),
    }
}

#[track_caller]
fn assert_outcome(o: &Outcome, status: Status, reason: Reason) {
    assert_eq!(
        (o.status, o.reason),
        (status, reason),
        "unexpected outcome: {o:#?}"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// filesystem

#[tokio::test]
async fn a_file_reports_kind_size_and_age() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("backup.tar.gz");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    let o = fs_check(&format!("path = {}", qp(&file))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(boolean(&o, "exists"));
    assert_eq!(text(&o, "kind"), "file");
    assert_eq!(number(&o, "size_bytes"), 4096.0);
    let age = number(&o, "age_seconds");
    assert!((7199.0..7300.0).contains(&age), "age {age}");
    assert!(o.observations.get("writable").is_none(), "{o:#?}");
    assert!(
        o.message.starts_with("file, 4.0 KiB, modified 2h"),
        "{o:#?}"
    );

    // The backup rule of the issue: newer than 26 hours.
    let backup_rule = format!(
        "path = {}\nexpect = [{{ observe = \"age_seconds\", lt = 93600 }}, {{ observe = \"kind\", eq = \"file\" }}, {{ observe = \"size_bytes\", gt = 1000 }}]",
        qp(&file)
    );
    let o = fs_check(&backup_rule).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    let stale = SystemTime::now() - Duration::from_secs(27 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(stale)
        .unwrap();
    let o = fs_check(&backup_rule).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(
        o.message
            .starts_with("observe age_seconds: expected lt 93600, got 972"),
        "{o:#?}"
    );
}

#[tokio::test]
async fn a_directory_reports_free_space() {
    let dir = TempDir::new().unwrap();
    let o = fs_check(&format!(
        "path = {}\nexpect = [{{ observe = \"free_ratio\", gt = 0 }}, {{ observe = \"free_ratio\", le = 1 }}, {{ observe = \"free_bytes\", gt = 0 }}, {{ observe = \"free_inodes\", gt = 0 }}, {{ duration = \"total\", lt = \"2s\" }}]",
        qp(dir.path())
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "kind"), "dir");
    assert!(o.observations.get("size_bytes").is_none(), "{o:#?}");
    let ratio = number(&o, "free_ratio");
    assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
    assert!(o.message.starts_with("dir, "), "{o:#?}");
    assert!(o.message.contains("% free ("), "{o:#?}");

    // An impossible free-space demand fails as an assertion.
    let o = fs_check(&format!(
        "path = {}\nexpect = [{{ observe = \"free_ratio\", gt = 1 }}]",
        qp(dir.path())
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
}

#[tokio::test]
async fn the_write_probe_writes_and_leaves_nothing_behind() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
    let before = entries(dir.path());

    let o = fs_check(&format!("path = {}\nwritable = true", qp(dir.path()))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(boolean(&o, "writable"));
    assert!(o.message.ends_with(", writable"), "{o:#?}");
    assert_eq!(entries(dir.path()), before);

    // On a file, the probe goes to the file's directory.
    let o = fs_check(&format!(
        "path = {}\nwritable = true",
        qp(&dir.path().join("keep.txt"))
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(boolean(&o, "writable"));
    assert_eq!(entries(dir.path()), before);
}

#[tokio::test]
async fn an_unwritable_directory_fails_even_as_root() {
    // Nothing can create files in procfs, whoever asks.
    let o = fs_check("path = \"/proc\"\nwritable = true").await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(!boolean(&o, "writable"));
    assert_eq!(text(&o, "kind"), "dir");
    assert!(
        o.message
            .starts_with("/proc is not writable: create /proc/.bakewatch-probe-"),
        "{o:#?}"
    );
    // procfs has no size: no ratio rather than a NaN.
    assert!(o.observations.get("free_ratio").is_none(), "{o:#?}");

    // A requirement whatever `expect` says.
    let o = fs_check(
        "path = \"/proc\"\nwritable = true\nexpect = [{ observe = \"kind\", eq = \"dir\" }]",
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
}

#[tokio::test]
async fn a_missing_path_fails_unless_absence_is_expected() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope");
    let o = fs_check(&format!("path = {}", qp(&missing))).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(o.message, format!("{} does not exist", missing.display()));
    assert!(!boolean(&o, "exists"));

    // A path under a file: also just missing.
    std::fs::write(dir.path().join("plain"), "x").unwrap();
    let o = fs_check(&format!("path = {}", qp(&dir.path().join("plain/sub")))).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);

    // A dangling symlink does not exist either, and says so.
    let link = dir.path().join("latest");
    std::os::unix::fs::symlink(&missing, &link).unwrap();
    let o = fs_check(&format!("path = {}", qp(&link))).await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(o.message.ends_with("(dangling symlink)"), "{o:#?}");

    // A link to a real file reports the file.
    std::fs::write(&missing, "now here").unwrap();
    let o = fs_check(&format!("path = {}", qp(&link))).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "kind"), "file");
    assert_eq!(number(&o, "size_bytes"), 8.0);
    std::fs::remove_file(&missing).unwrap();

    // Absence asserted: a maintenance flag that must not be there.
    let o = fs_check(&format!(
        "path = {}\nexpect = [{{ observe = \"exists\", eq = false }}]",
        qp(&missing)
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // Other assertions on a missing path fail, showing that nothing was there.
    let o = fs_check(&format!(
        "path = {}\nexpect = [{{ observe = \"age_seconds\", lt = 93600 }}]",
        qp(&missing)
    ))
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(
        o.message,
        "observe age_seconds: expected lt 93600, got nothing"
    );
}

/// Runs `bakewatch once --format json` on `checks` as an unprivileged user: directly when the
/// tests already run unprivileged, through `setpriv` (util-linux) as `nobody` when root.
fn once_unprivileged(dir: &Path, checks: &str) -> serde_json::Value {
    std::fs::create_dir_all(dir.join("cfg/checks")).unwrap();
    std::fs::write(
        dir.join("cfg/bakewatch.toml"),
        "checks = [\"checks/*.toml\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("cfg/checks/c.toml"), checks).unwrap();
    let config = dir.join("cfg/bakewatch.toml");
    let config = config.to_str().unwrap();
    let out = if rustix::process::getuid().is_root() {
        assert!(
            Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists(),
            "this test needs `setpriv` (Debian package util-linux) to drop root privileges"
        );
        run_cli_as_nobody(&["once", "--format", "json", "-c", config], dir)
    } else {
        run_cli(&["once", "--format", "json", "-c", config], dir, &[])
    };
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn run_cli_as_nobody(args: &[&str], cwd: &Path) -> common::CliOutput {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            common::BIN,
        ])
        .args(args)
        .current_dir(cwd)
        .env_remove("BAKEWATCH_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setpriv");
    common::CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn permissions_of_bakewatch_itself_are_errors_and_unwritable_dirs_fail() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A directory bakewatch may not enter, with a file inside.
    let locked = root.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("data"), "x").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // A directory bakewatch may read but not write.
    let readonly = root.join("readonly");
    std::fs::create_dir(&readonly).unwrap();
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o555)).unwrap();

    let checks = format!(
        "[[check]]\nname = \"locked\"\ntype = \"filesystem\"\npath = {}\n\n\
         [[check]]\nname = \"readonly\"\ntype = \"filesystem\"\npath = {}\nwritable = true\n\n\
         [[check]]\nname = \"readable\"\ntype = \"filesystem\"\npath = {}\n",
        qp(&locked.join("data")),
        qp(&readonly),
        qp(&readonly),
    );
    let v = once_unprivileged(root, &checks);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let results = v["results"].as_array().expect("results");
    let result = |name: &str| {
        results
            .iter()
            .find(|r| r["check"] == name)
            .unwrap_or_else(|| panic!("no result for {name}: {v}"))
            .clone()
    };
    let locked_r = result("locked");
    assert_eq!(locked_r["status"], "error", "{locked_r}");
    assert_eq!(locked_r["reason"], "config", "{locked_r}");
    let m = locked_r["message"].as_str().unwrap();
    assert!(
        m.starts_with("bakewatch (uid ") && m.ends_with("/locked/data: permission denied"),
        "{m}"
    );
    let ro = result("readonly");
    assert_eq!(ro["status"], "fail", "{ro}");
    assert_eq!(ro["reason"], "assertion", "{ro}");
    assert_eq!(ro["observations"]["writable"], false, "{ro}");
    let m = ro["message"].as_str().unwrap();
    assert!(m.contains("is not writable: create "), "{m}");
    assert!(m.ends_with(": Permission denied"), "{m}");
    assert_eq!(result("readable")["status"], "pass", "{v}");
    assert!(entries(&readonly).is_empty());
}

// ---------------------------------------------------------------------------------------------
// command

#[tokio::test]
async fn exit_codes_decide_without_expect() {
    let o = command("argv = [\"true\"]").await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(number(&o, "exit_code"), 0.0);
    assert_eq!(o.message, "exit code 0");

    let o = command(
        "argv = ['echo starting; echo \"disk full\" >&2; echo more >&2; exit 3']\nshell = true",
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(number(&o, "exit_code"), 3.0);
    assert_eq!(o.message, "exit code 3: disk full");
    assert_eq!(text(&o, "stdout"), "starting");
    assert_eq!(text(&o, "stderr"), "disk full\nmore");

    let o = command("argv = [\"false\"]").await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "exit code 1");

    // Killed by a signal: no exit code.
    let o = command("argv = ['kill -TERM $$']\nshell = true").await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(o.message, "killed by signal 15 (SIGTERM)");
    assert!(o.observations.get("exit_code").is_none(), "{o:#?}");
}

#[tokio::test]
async fn with_expect_the_assertions_decide() {
    // grep finding nothing exits 1; that is what this check expects.
    let o = command(
        "argv = ['printf \"a\\nb\\n\" | grep -c zzz']\nshell = true\nexpect = [{ observe = \"exit_code\", eq = 1 }, { observe = \"stdout\", eq = 0 }]",
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "exit code 1");

    let o = command(
        "argv = [\"echo\", \"version=2.4.1\"]\nexpect = [{ observe = \"stdout\", starts_with = \"version=3.\" }]",
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert_eq!(
        o.message,
        "observe stdout: expected starts_with \"version=3.\", got \"version=2.4.1\""
    );

    // Further argv items are the script's $1, $2.
    let o = command(
        "argv = ['echo \"$1-$2\"', \"a b\", \"c\"]\nshell = true\nexpect = [{ observe = \"stdout\", eq = \"a b-c\" }]",
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

#[tokio::test]
async fn env_and_workdir_reach_the_child() {
    let dir = TempDir::new().unwrap();
    let o = command(&format!(
        "argv = ['echo \"$FOO|$(pwd)\"']\nshell = true\nenv = {{ FOO = \"bar baz\" }}\nworkdir = {}",
        qp(dir.path())
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(
        text(&o, "stdout"),
        format!("bar baz|{}", canonical.display())
    );

    let o = command(&format!(
        "argv = [\"true\"]\nworkdir = {}",
        qp(&dir.path().join("gone"))
    ))
    .await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert!(o.message.starts_with("workdir "), "{o:#?}");
}

#[tokio::test]
async fn secret_env_values_are_redacted_from_output() {
    let dir = TempDir::new().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cr3t-token-value\n").unwrap();
    let config = load_config(
        "command",
        &format!(
            "argv = ['echo \"token=$TOKEN\"; echo \"bad token $TOKEN\" >&2; exit 2']\nshell = true\nenv = {{ TOKEN = {{ file = {} }} }}",
            qp(&secret)
        ),
    );
    let rt = Runtime::new(config, Arc::new(Metrics::new()));
    let o = rt.run_check(&rt.checks[0]).await;
    assert_outcome(&o, Status::Fail, Reason::Status);
    assert_eq!(text(&o, "stdout"), "token=<redacted>");
    assert_eq!(o.message, "exit code 2: bad token <redacted>");
    assert!(!format!("{o:?}").contains("s3cr3t"), "{o:#?}");
}

#[tokio::test]
async fn output_is_capped_but_fully_drained() {
    let start = Instant::now();
    let o = command(
        "argv = ['head -c 1048576 /dev/zero | tr \"\\\\0\" a; head -c 300000 /dev/zero >&2']\nshell = true\nmax_output = \"1KiB\"",
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(start.elapsed() < Duration::from_secs(5), "{o:#?}");
    let out = text(&o, "stdout");
    assert_eq!(out.len(), 1024);
    assert!(out.bytes().all(|b| b == b'a'));
    assert_eq!(
        o.message,
        "exit code 0 (stdout cut at 1024 of 1048576 bytes) (stderr cut at 1024 of 300000 bytes)"
    );
}

#[tokio::test]
async fn a_missing_program_is_an_error_not_a_failure() {
    let o = command("argv = [\"/nonexistent/bakewatch-no-such-program\", \"-x\"]").await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert_eq!(
        o.message,
        "cannot run \"/nonexistent/bakewatch-no-such-program\": not found"
    );
    let o = command("argv = [\"bakewatch-no-such-program-in-path\"]").await;
    assert_outcome(&o, Status::Error, Reason::Config);

    // Not executable.
    let dir = TempDir::new().unwrap();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let o = command(&format!("argv = [{}]", qp(&script))).await;
    assert_outcome(&o, Status::Error, Reason::Config);
    assert!(
        o.message.ends_with("permission denied (not executable?)"),
        "{o:#?}"
    );
}

/// A process of the system, from `/proc/<pid>/stat`.
#[derive(Debug)]
struct Proc {
    pid: i32,
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Gone since the listing: fine.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        out.push(Proc {
            pid,
            state: fields[0].chars().next().unwrap_or('?'),
            ppid: fields[1].parse().unwrap_or(0),
            pgrp: fields[2].parse().unwrap_or(0),
        });
    }
    out
}

/// Waits until no process of group `pgid` is alive and none is a zombie child of this test
/// process. (Orphaned grandchildren are reparented to PID 1, which reaps them on a normal
/// system; some container inits never do, so their zombies are not this code's to reap.)
async fn wait_group_gone(pgid: i32) {
    let me = std::process::id() as i32;
    wait_until(
        &format!("process group {pgid} is gone"),
        Duration::from_secs(5),
        async || {
            let left: Vec<Proc> = processes()
                .into_iter()
                .filter(|p| p.pgrp == pgid && (p.state != 'Z' || p.ppid == me))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            let shown: Vec<String> = left
                .iter()
                .map(|p| format!("pid {} ({}, parent {})", p.pid, p.state, p.ppid))
                .collect();
            Err(shown.join(", "))
        },
    )
    .await;
}

async fn read_pgid(file: &Path) -> i32 {
    wait_until(
        "the script wrote its pid",
        Duration::from_secs(5),
        async || {
            std::fs::read_to_string(file)
                .map_err(|e| e.to_string())
                .and_then(|s| s.trim().parse::<i32>().map_err(|e| e.to_string()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_is_killed_with_its_whole_group_at_the_timeout() {
    let dir = TempDir::new().unwrap();
    let pidfile = dir.path().join("pgid");
    let check = load_check(
        "command",
        &format!(
            "argv = ['echo $$ > \"$1\"; sleep 30 & sleep 30', {}]\nshell = true\ntimeout = \"500ms\"",
            qp(&pidfile)
        ),
    );
    let start = Instant::now();
    let o = execute(&check).await;
    let elapsed = start.elapsed();
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert!(
        o.duration < Duration::from_millis(600),
        "took {:?}",
        o.duration
    );
    assert!(elapsed < Duration::from_millis(600), "took {elapsed:?}");
    let pgid = read_pgid(&pidfile).await;
    // The script was its group's leader, and the group existed.
    assert!(pgid > 1);
    wait_group_gone(pgid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_left_behind_are_killed_after_a_normal_exit() {
    let dir = TempDir::new().unwrap();
    let pidfile = dir.path().join("pgid");
    let start = Instant::now();
    // The background sleep keeps stdout open: without the group kill, reading would wait 30 s.
    let o = command(&format!(
        "argv = ['echo $$ > \"$1\"; sleep 30 & echo started', {}]\nshell = true\ntimeout = \"10s\"",
        qp(&pidfile)
    ))
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(text(&o, "stdout"), "started");
    assert!(start.elapsed() < Duration::from_secs(2), "{o:#?}");
    wait_group_gone(read_pgid(&pidfile).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_held_open_by_an_escaped_process_is_abandoned_after_a_grace() {
    // `setsid` leaves the group, so only the grace period ends the reading.
    let dir = TempDir::new().unwrap();
    let pidfile = dir.path().join("pid");
    let start = Instant::now();
    let o = command(&format!(
        "argv = ['setsid sh -c \"echo \\$\\$ > $1; exec sleep 30\" & sleep 0.2; echo done', {}]\nshell = true\ntimeout = \"10s\"",
        qp(&pidfile)
    ))
    .await;
    let escaped = read_pgid(&pidfile).await;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &escaped.to_string()])
        .status();
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(
        o.message
            .ends_with("(output still open 1s after exit, left unread)"),
        "{o:#?}"
    );
    assert_eq!(text(&o, "stdout"), "done");
    assert!(start.elapsed() < Duration::from_secs(3), "{o:#?}");
}

// ---------------------------------------------------------------------------------------------
// validate

#[test]
fn bad_filesystem_and_command_configs_are_located() {
    let checks = "\
[[check]]
name = \"fs-missing-path\"
type = \"filesystem\"

[[check]]
name = \"fs-relative\"
type = \"filesystem\"
path = \"var/backups\"

[[check]]
name = \"fs-writable\"
type = \"filesystem\"
path = \"/var/backups\"
writable = \"yes\"

[[check]]
name = \"fs-kind\"
type = \"filesystem\"
path = \"/var/backups\"
kind = \"dir\"

[[check]]
name = \"fs-observe\"
type = \"filesystem\"
path = \"/var/backups\"
expect = [{ observe = \"free_space\", gt = 0 }]

[[check]]
name = \"cmd-missing-argv\"
type = \"command\"

[[check]]
name = \"cmd-empty-argv\"
type = \"command\"
argv = []

[[check]]
name = \"cmd-one-string\"
type = \"command\"
argv = [\"pg_isready -q\"]

[[check]]
name = \"cmd-not-strings\"
type = \"command\"
argv = [\"echo\", 1]

[[check]]
name = \"cmd-options\"
type = \"command\"
argv = [\"true\"]
shell = \"yes\"
workdir = \"tmp\"
max_output = \"lots\"
env = { \"A=B\" = \"x\" }
";
    let dir = write_config("checks = [\"checks/*.toml\"]\n", &[("a.toml", checks)]);
    let out = run_cli(&["validate", "-c", "bakewatch.toml"], dir.path(), &[]);
    assert_eq!(out.code, Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expected = [
        "checks/a.toml:1:1: check `fs-missing-path` is missing required key `path`",
        "checks/a.toml:8:8: path: \"var/backups\" is relative; give an absolute path (the daemon's working directory is not the config's)",
        "checks/a.toml:14:12: writable: expected true or false, found a string",
        "checks/a.toml:20:8: kind: `kind` is an observation, not a key; assert it with expect = [{ observe = \"kind\", eq = \"dir\" }]",
        "checks/a.toml:26:23: unknown observation `free_space` for this check type (one of exists, kind, size_bytes, age_seconds, free_bytes, free_ratio, free_inodes, writable)",
        "checks/a.toml:28:1: check `cmd-missing-argv` is missing required key `argv`",
        "checks/a.toml:35:8: argv: must not be empty (e.g. argv = [\"/usr/bin/pg_isready\", \"-q\"])",
        "checks/a.toml:40:8: argv: program \"pg_isready -q\" contains spaces; give each argument its own item or set `shell = true`",
        "checks/a.toml:45:17: expected a string, found an integer",
        "checks/a.toml:51:9: shell: expected true or false, found a string",
        "checks/a.toml:52:11: workdir: \"tmp\" is relative; give an absolute path",
        "checks/a.toml:53:14: max_output: invalid size \"lots\" (expected e.g. \"512KiB\", \"1MiB\", \"2GB\")",
        "checks/a.toml:54:7: env: \"A=B\" is not a valid variable name",
        "bakewatch: 13 problems in the configuration",
    ];
    assert_eq!(lines, expected, "{out}");
}
