//! Integration tests of the `redis` and `memcached` checks, on the daemon's own code path: a
//! config is written to files and loaded with `config::load`, and the check runs through
//! `runtime::execute` (which applies the timeout) or `Runtime::run_check` (which also redacts).
//!
//! Servers, all on 127.0.0.1:
//! - the machine's Redis on 6379, only as an ordinary client (PING, INFO, and round trips on
//!   keys of this test's own prefix that the check deletes again);
//! - disposable `redis-server` and `memcached` processes on free ports, started per test in a
//!   temp dir (Debian packages `redis-server` and `memcached`) for everything that needs a
//!   password, a broken server, or stopping and restarting one; killed on drop;
//! - raw TCP listeners for hostile behaviour (silence, garbage, scripted error replies).

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakewatch::checks::{Observation, Outcome, Reason, Status};
use bakewatch::config::Config;
use bakewatch::metrics::Metrics;
use bakewatch::runtime::{Runtime, execute};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{free_port, run_cli, write_config};

/// The machine's Redis, used read-only-ish for happy paths.
const SHARED_REDIS: u16 = 6379;

/// How long a disposable server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Config helpers.

use common::q;

/// Loads a config holding one check named "probe" of type `kind` with `keys` as its other keys.
fn load(kind: &str, keys: &str) -> Config {
    common::probe_config(kind, keys)
}

/// Loads the check and runs it once through `execute`.
async fn run(kind: &str, keys: &str) -> Outcome {
    let config = load(kind, keys);
    execute(&config.checks[0]).await
}

/// Loads the check into a `Runtime` (the daemon's path, with redaction).
fn runtime(kind: &str, keys: &str) -> Runtime {
    Runtime::new(load(kind, keys), Arc::new(Metrics::new()))
}

async fn run_in(rt: &Runtime) -> Outcome {
    (*rt.run_check(&rt.checks[0]).await).clone()
}

#[track_caller]
fn assert_outcome(o: &Outcome, status: Status, reason: Reason) {
    assert_eq!(
        (o.status, o.reason),
        (status, reason),
        "unexpected outcome: {o:#?}"
    );
}

fn observation<'a>(o: &'a Outcome, name: &str) -> &'a Observation {
    o.observations
        .get(name)
        .unwrap_or_else(|| panic!("no observation {name:?} in {o:#?}"))
}

/// A prefix no other run shares.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bakewatch-test:{test}:{}-{nanos}:", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// Disposable servers.

/// Finds an installed program, or fails the test saying what to install.
fn program(name: &str, package: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: these tests need it (Debian: apt-get install {package})"
            )
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Redis,
    /// redis-server listening for TLS only.
    RedisTls,
    Memcached,
}

/// A server process on 127.0.0.1:`port` with its files in a temp dir; killed on drop.
struct Server {
    kind: Kind,
    port: u16,
    args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Server {
    /// `redis-server` without persistence; `extra` are more `--option value` arguments.
    async fn redis(extra: &[&str]) -> Server {
        Server::start_new(Kind::Redis, extra).await
    }

    async fn memcached() -> Server {
        Server::start_new(Kind::Memcached, &[]).await
    }

    async fn start_new(kind: Kind, extra: &[&str]) -> Server {
        // A free port may be taken before the server binds it: try another then.
        let mut last = String::new();
        for _ in 0..3 {
            let mut s = Server {
                kind,
                port: free_port(),
                args: extra.iter().map(|a| a.to_string()).collect(),
                dir: TempDir::new().unwrap(),
                child: None,
            };
            match s.start().await {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn command(&self) -> Command {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Redis | Kind::RedisTls => {
                let mut c = Command::new(program("redis-server", "redis-server"));
                if self.kind == Kind::RedisTls {
                    c.args(["--port", "0", "--tls-port", &port]);
                } else {
                    c.args(["--port", &port]);
                }
                c.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(self.dir.path())
                    .arg("--logfile")
                    .arg(self.dir.path().join("server.log"));
                c
            }
            Kind::Memcached => {
                let mut c = Command::new(program("memcached", "memcached"));
                c.args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-u", "root"]);
                c
            }
        };
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr.log")).unwrap());
        cmd
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("server.log"), read("stderr.log"))
    }

    /// Starts the process and waits until it accepts connections (and, for plain Redis, answers).
    async fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let child = self
            .command()
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "the server on port {} exited at start ({status}):\n{}",
                    self.port,
                    self.log()
                ));
            }
            if self.answers().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server on port {} did not answer within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        let probe: &[u8] = match self.kind {
            // Listening is all that can be seen without a TLS client.
            Kind::RedisTls => return true,
            Kind::Redis => b"PING\r\n",
            Kind::Memcached => b"version\r\n",
        };
        let mut buf = [0u8; 64];
        let exchange = async {
            s.write_all(probe).await.ok()?;
            let n = s.read(&mut buf).await.ok()?;
            Some(n)
        };
        match tokio::time::timeout(Duration::from_secs(1), exchange).await {
            // PONG, NOAUTH (a password is set) or VERSION: the server is up; LOADING is not.
            Ok(Some(n)) => n > 0 && !String::from_utf8_lossy(&buf[..n]).starts_with("-LOADING"),
            _ => false,
        }
    }

    /// Kills the process and waits for it: nothing listens on the port afterwards.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn restart(&mut self) {
        if let Err(e) = self.start().await {
            panic!("restart on the same port: {e}");
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its output (raw replies, one per line).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(program("redis-cli", "redis-tools"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The machine's Redis must be there: the happy-path tests use it.
fn require_shared_redis() {
    if std::net::TcpStream::connect(("127.0.0.1", SHARED_REDIS)).is_err() {
        panic!(
            "no Redis on 127.0.0.1:{SHARED_REDIS}: these tests need the machine's Redis \
             (Debian: apt-get install redis-server, then start it)"
        );
    }
}

/// A memcached command over a raw connection; the reply up to and including `END\r\n`.
async fn memcached_stats(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"stats\r\n").await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        while !out.ends_with(b"END\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "memcached closed the connection");
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .expect("stats reply");
    String::from_utf8(out).unwrap()
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Raw TCP servers.

/// Serves every accepted connection with `handle`; stops when the test's runtime ends.
async fn raw_server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Reads what the client sent until it pauses; then answers `reply` and closes.
async fn reply_with(mut s: TcpStream, reply: Vec<u8>) {
    let mut buf = [0u8; 4096];
    if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
        let _ = s.write_all(&reply).await;
        let _ = s.shutdown().await;
    }
}

/// Keeps the connection open and silent until the client closes it.
async fn hold(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// A silent server: the check must end at its timeout, within 100 ms.
async fn times_out_in_bound(kind: &str, keys: impl Fn(SocketAddr) -> String) {
    let addr = raw_server(hold).await;
    let o = run(kind, &format!("{}\ntimeout = \"500ms\"", keys(addr))).await;
    assert_outcome(&o, Status::Fail, Reason::Timeout);
    assert_eq!(o.message, "no result within the 500ms timeout");
    assert!(
        o.duration >= Duration::from_millis(500) && o.duration < Duration::from_millis(600),
        "{:?}",
        o.duration
    );
}

// =============================================================================================
// redis: happy paths on the machine's Redis.

#[tokio::test(flavor = "multi_thread")]
async fn redis_ping_passes() {
    require_shared_redis();
    let o = run(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{SHARED_REDIS}\"\nexpect = [ {{ duration = \"total\", lt = \"2s\" }} ]"
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "PONG");
    assert!(o.failed_assertions.is_empty());
    assert!(o.observations.iter().next().is_none(), "{o:#?}");

    // By name too (localhost resolves locally, from /etc/hosts).
    let o = run(
        "redis",
        &format!("url = \"redis://localhost:{SHARED_REDIS}/0\""),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_roundtrip_passes_and_leaves_no_key_behind() {
    require_shared_redis();
    let prefix = unique_prefix("roundtrip");
    let rt = runtime(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{SHARED_REDIS}\"\nmode = \"roundtrip\"\nkey_prefix = {}",
            q(&prefix)
        ),
    );
    for _ in 0..3 {
        let o = run_in(&rt).await;
        assert_outcome(&o, Status::Pass, Reason::Ok);
        assert_eq!(o.message, "SET, GET and DEL ok");
    }
    let keys = redis_cli(
        SHARED_REDIS,
        &["--scan", "--pattern", &format!("{prefix}*")],
    );
    assert_eq!(keys.trim(), "", "keys left behind: {keys}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_info_fields_are_observations() {
    require_shared_redis();
    let o = run(
        "redis",
        &format!(
            r#"url = "redis://127.0.0.1:{SHARED_REDIS}"
info = ["connected_clients", "used_memory", "role", "mem_fragmentation_ratio", "no_such_field"]
expect = [
  {{ observe = "connected_clients", ge = 1 }},
  {{ observe = "role", eq = "master" }},
  {{ observe = "no_such_field", exists = false }},
]"#
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert!(
        matches!(observation(&o, "connected_clients"), Observation::Number(n) if *n >= 1.0),
        "{o:#?}"
    );
    assert!(matches!(observation(&o, "used_memory"), Observation::Number(n) if *n > 0.0));
    assert!(matches!(
        observation(&o, "mem_fragmentation_ratio"),
        Observation::Number(_)
    ));
    assert_eq!(
        observation(&o, "role"),
        &Observation::Text("master".to_string())
    );
    assert!(o.observations.get("no_such_field").is_none());

    // A failed assertion on an INFO field names it.
    let o = run(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{SHARED_REDIS}\"\ninfo = [\"connected_clients\"]\nexpect = [ {{ observe = \"connected_clients\", gt = 1000000 }} ]"
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Assertion);
    assert!(o.message.contains("connected_clients"), "{}", o.message);
}

// =============================================================================================
// redis: credentials.

#[tokio::test(flavor = "multi_thread")]
async fn redis_password_right_wrong_and_missing() {
    let pw = "s3cret-pass-for-bakewatch";
    let server = Server::redis(&["--requirepass", pw]).await;
    let port = server.port;

    // In the URL.
    let o = run(
        "redis",
        &format!("url = \"redis://:{pw}@127.0.0.1:{port}/1\"\nmode = \"roundtrip\""),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // From a file.
    let file = server.path("password");
    std::fs::write(&file, format!("{pw}\n")).unwrap();
    let o = run(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{port}\"\npassword = {{ file = {} }}",
            q(&file)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // Wrong, in the URL and from a file: auth; the password shows nowhere.
    let wrong = "wrong-password-1234";
    std::fs::write(&file, wrong).unwrap();
    for keys in [
        format!("url = \"redis://:{wrong}@127.0.0.1:{port}\""),
        format!(
            "url = \"redis://127.0.0.1:{port}\"\npassword = {{ file = {} }}",
            q(&file)
        ),
    ] {
        let rt = runtime("redis", &format!("{keys}\ninfo = [\"connected_clients\"]"));
        let o = run_in(&rt).await;
        assert_outcome(&o, Status::Fail, Reason::Auth);
        assert!(o.message.starts_with("auth: WRONGPASS"), "{}", o.message);
        let all = format!("{o:?}");
        assert!(!all.contains(wrong) && !all.contains(pw), "{all}");
        assert!(!format!("{:?}", rt.config.checks[0]).contains(wrong));
    }

    // None at all: NOAUTH is an auth failure too.
    let o = run("redis", &format!("url = \"redis://127.0.0.1:{port}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert!(o.message.starts_with("auth: PING: NOAUTH"), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_acl_users() {
    let server = Server::redis(&[
        "--user",
        "alice",
        "on",
        ">alice-pass",
        "~*",
        "&*",
        "+@all",
        "--user",
        "pinger",
        "on",
        ">pinger-pass",
        "+ping",
    ])
    .await;
    let port = server.port;
    let url = format!("redis://127.0.0.1:{port}");

    // Username and password as keys, or in the URL.
    let o = run(
        "redis",
        &format!(
            "url = {}\nusername = \"alice\"\npassword = \"alice-pass\"\nmode = \"roundtrip\"",
            q(&url)
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let o = run(
        "redis",
        &format!("url = \"redis://alice:alice-pass@127.0.0.1:{port}\"\nmode = \"roundtrip\""),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // The right password of another user is still wrong.
    let o = run(
        "redis",
        &format!(
            "url = {}\nusername = \"pinger\"\npassword = \"alice-pass\"",
            q(&url)
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert!(o.message.starts_with("auth: WRONGPASS"), "{}", o.message);

    // A user that may PING but not write: ping passes, a round trip is refused (NOPERM → auth).
    let keys = format!(
        "url = {}\nusername = \"pinger\"\npassword = \"pinger-pass\"",
        q(&url)
    );
    let o = run("redis", &keys).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let o = run("redis", &format!("{keys}\nmode = \"roundtrip\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert!(o.message.starts_with("auth: SET: NOPERM"), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_passwords_echoed_by_a_server_are_scrubbed() {
    // A misdirected check: the server repeats what it got in an error reply.
    let addr = raw_server(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        if let Ok(n) = s.read(&mut buf).await {
            let got = String::from_utf8_lossy(&buf[..n]).replace("\r\n", " ");
            let _ = s
                .write_all(format!("-ERR you sent {got}\r\n").as_bytes())
                .await;
        }
        hold(s).await;
    })
    .await;
    let o = run("redis", &format!("url = \"redis://u:echoed-pass@{addr}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert!(o.message.contains("you sent"), "{}", o.message);
    assert!(!o.message.contains("echoed-pass"), "{}", o.message);
    assert!(o.message.contains("<redacted>"), "{}", o.message);
}

// =============================================================================================
// redis: failing servers.

#[tokio::test(flavor = "multi_thread")]
async fn redis_stopped_then_restarted_recovers_by_itself() {
    let mut server = Server::redis(&[]).await;
    let rt = runtime(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{}\"\nmode = \"roundtrip\"\ntimeout = \"2s\"",
            server.port
        ),
    );
    assert_outcome(&run_in(&rt).await, Status::Pass, Reason::Ok);

    server.stop();
    let o = run_in(&rt).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(o.message, "connect: connection refused");

    server.restart().await;
    let o = run_in(&rt).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    let h = rt.checks[0].history.lock().unwrap();
    assert_eq!(h.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_silent_server_times_out_within_the_bound() {
    times_out_in_bound("redis", |a| format!("url = \"redis://{a}\"")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_garbage_is_a_protocol_failure() {
    let addr = raw_server(|s| reply_with(s, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec())).await;
    let o = run("redis", &format!("url = \"redis://{addr}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(
        o.message,
        r#"protocol: not a redis reply to PING: "SSH-2.0-OpenSSH_9.6""#
    );

    // Well-formed RESP, but not what PING answers.
    let addr = raw_server(|s| reply_with(s, b"+OK\r\n".to_vec())).await;
    let o = run("redis", &format!("url = \"redis://{addr}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(o.message, r#"protocol: unexpected reply to PING: +"OK""#);

    // Closed without a word.
    let addr = raw_server(|s| reply_with(s, Vec::new())).await;
    let o = run("redis", &format!("url = \"redis://{addr}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(
        o.message,
        "protocol: connection closed by the server before the reply to PING"
    );

    // A round trip whose GET comes back different.
    let addr = raw_server(|s| reply_with(s, b"+OK\r\n$5\r\nhello\r\n:1\r\n".to_vec())).await;
    let o = run(
        "redis",
        &format!("url = \"redis://{addr}\"\nmode = \"roundtrip\""),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(
        o.message,
        r#"protocol: GET returned "hello", not the value just SET"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_refused_writes_are_query_failures() {
    // Out of memory: reads still work, writes are refused.
    let full = Server::redis(&["--maxmemory", "1", "--maxmemory-policy", "noeviction"]).await;
    let url = format!("url = \"redis://127.0.0.1:{}\"", full.port);
    assert_outcome(&run("redis", &url).await, Status::Pass, Reason::Ok);
    let o = run("redis", &format!("{url}\nmode = \"roundtrip\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(o.message.starts_with("query: SET: OOM "), "{}", o.message);

    // A replica (of a master that is not there) refuses writes.
    let dead = free_port().to_string();
    let replica = Server::redis(&["--replicaof", "127.0.0.1", &dead]).await;
    let o = run(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{}\"\nmode = \"roundtrip\"\ninfo = [\"role\"]",
            replica.port
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(
        o.message.starts_with("query: SET: READONLY "),
        "{}",
        o.message
    );

    // A database that does not exist.
    let small = Server::redis(&["--databases", "4"]).await;
    let o = run(
        "redis",
        &format!("url = \"redis://127.0.0.1:{}/7\"", small.port),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(
        o.message.starts_with("query: SELECT 7: ERR "),
        "{}",
        o.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_roundtrip_key_has_a_ttl_when_del_fails() {
    // DEL renamed away: the key stays, and must expire by itself (TTL = 2 × timeout).
    let server = Server::redis(&["--rename-command", "DEL", "\"\""]).await;
    let prefix = unique_prefix("ttl");
    let o = run(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{}/2\"\nmode = \"roundtrip\"\ntimeout = \"3s\"\nkey_prefix = {}",
            server.port,
            q(&prefix)
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Query);
    assert!(
        o.message.starts_with("query: DEL: ERR unknown command"),
        "{}",
        o.message
    );
    let keys = redis_cli(
        server.port,
        &["-n", "2", "--scan", "--pattern", &format!("{prefix}*")],
    );
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis_cli(server.port, &["-n", "2", "PTTL", keys[0]])
        .trim()
        .parse()
        .unwrap();
    assert!(
        ttl > 3_000 && ttl <= 6_000,
        "PTTL {ttl} (expected 2 × the 3 s timeout, minus a moment)"
    );
}

// =============================================================================================
// redis: TLS.

/// A private CA with a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "bakewatch cache test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let dir = TempDir::new().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        for (who, sans, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            ("client", vec![], ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, who);
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &*ca).unwrap();
            write(&format!("{who}.pem"), cert.pem());
            write(&format!("{who}.key"), key.serialize_pem());
        }
        write("ca.pem", ca.pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// redis-server arguments serving TLS with this PKI.
    fn server_args(&self, client_certs: bool) -> Vec<String> {
        [
            "--tls-cert-file",
            &self.path("server.pem"),
            "--tls-key-file",
            &self.path("server.key"),
            "--tls-ca-cert-file",
            &self.path("ca.pem"),
            "--tls-auth-clients",
            if client_certs { "yes" } else { "no" },
        ]
        .map(String::from)
        .to_vec()
    }
}

async fn tls_redis(pki: &Pki, client_certs: bool) -> Server {
    let args = pki.server_args(client_certs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_new(Kind::RedisTls, &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_tls_verifies_against_the_given_ca() {
    let pki = Pki::new();
    let server = tls_redis(&pki, false).await;
    let url = format!("url = \"rediss://127.0.0.1:{}\"", server.port);

    let o = run(
        "redis",
        &format!(
            "{url}\nmode = \"roundtrip\"\ntls = {{ ca_file = {} }}",
            q(pki.path("ca.pem"))
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // The system roots do not know the private CA.
    let o = run("redis", &url).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);
    assert!(o.message.starts_with("tls: "), "{}", o.message);
    assert!(o.message.contains("UnknownIssuer"), "{}", o.message);

    // Unless verification is off.
    let o = run("redis", &format!("{url}\ntls = {{ verify = false }}")).await;
    assert_outcome(&o, Status::Pass, Reason::Ok);

    // Plain RESP to a TLS port: the server hangs up.
    let o = run(
        "redis",
        &format!(
            "url = \"redis://127.0.0.1:{}\"\ntimeout = \"3s\"",
            server.port
        ),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_tls_client_certificates() {
    let pki = Pki::new();
    let server = tls_redis(&pki, true).await;
    let base = format!(
        "url = \"rediss://127.0.0.1:{}\"\ntimeout = \"3s\"",
        server.port
    );
    let ca = q(pki.path("ca.pem"));
    let o = run("redis", &format!("{base}\ntls = {{ ca_file = {ca} }}")).await;
    assert_outcome(&o, Status::Fail, Reason::Tls);

    let o = run(
        "redis",
        &format!(
            "{base}\ntls = {{ ca_file = {ca}, cert_file = {}, key_file = {} }}",
            q(pki.path("client.pem")),
            q(pki.path("client.key"))
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
}

// =============================================================================================
// memcached.

#[tokio::test(flavor = "multi_thread")]
async fn memcached_roundtrip_passes_and_leaves_nothing() {
    let server = Server::memcached().await;
    let o = run(
        "memcached",
        &format!(
            "address = \"127.0.0.1:{}\"\nkey_prefix = \"bw-test:\"\nexpect = [ {{ observe = \"version\", starts_with = \"1.\" }}, {{ duration = \"total\", lt = \"2s\" }} ]",
            server.port
        ),
    )
    .await;
    assert_outcome(&o, Status::Pass, Reason::Ok);
    assert_eq!(o.message, "set, get and delete ok");
    assert!(matches!(observation(&o, "version"), Observation::Text(v) if v.starts_with("1.")));

    let stats = memcached_stats(server.port).await;
    assert_eq!(stat(&stats, "cmd_set"), 1, "{stats}");
    assert_eq!(stat(&stats, "get_hits"), 1, "{stats}");
    assert_eq!(stat(&stats, "delete_hits"), 1, "{stats}");
    assert_eq!(stat(&stats, "curr_items"), 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memcached_stopped_then_restarted_recovers_by_itself() {
    let mut server = Server::memcached().await;
    let rt = runtime(
        "memcached",
        &format!("address = \"127.0.0.1:{}\"\ntimeout = \"2s\"", server.port),
    );
    assert_outcome(&run_in(&rt).await, Status::Pass, Reason::Ok);

    server.stop();
    let o = run_in(&rt).await;
    assert_outcome(&o, Status::Fail, Reason::Connect);
    assert_eq!(o.message, "connect: connection refused");

    server.restart().await;
    assert_outcome(&run_in(&rt).await, Status::Pass, Reason::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn memcached_requiring_authentication_is_an_auth_failure() {
    let dir = TempDir::new().unwrap();
    let auth_file = dir.path().join("auth");
    std::fs::write(&auth_file, "someone:secret\n").unwrap();
    let server = Server::start_new(Kind::Memcached, &["-Y", auth_file.to_str().unwrap()]).await;
    let o = run(
        "memcached",
        &format!("address = \"127.0.0.1:{}\"", server.port),
    )
    .await;
    assert_outcome(&o, Status::Fail, Reason::Auth);
    assert_eq!(
        o.message,
        "auth: version: CLIENT_ERROR unauthenticated (the server requires authentication)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memcached_silent_server_times_out_within_the_bound() {
    times_out_in_bound("memcached", |a| format!("address = \"{a}\"")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memcached_garbage_and_error_replies() {
    let cases: [(&[u8], Reason, &str); 6] = [
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            Reason::Protocol,
            r#"protocol: unexpected reply to version: "HTTP/1.1 400 Bad Request""#,
        ),
        (
            b"ERROR\r\n",
            Reason::Protocol,
            r#"protocol: version: "ERROR""#,
        ),
        (
            b"VERSION 1.6.0\r\nSERVER_ERROR out of memory storing object\r\n",
            Reason::Query,
            "query: set: SERVER_ERROR out of memory storing object",
        ),
        (
            b"VERSION 1.6.0\r\nCLIENT_ERROR bad data chunk\r\n",
            Reason::Protocol,
            r#"protocol: set: "CLIENT_ERROR bad data chunk""#,
        ),
        (
            b"VERSION 1.6.0\r\nSTORED\r\nEND\r\n",
            Reason::Protocol,
            "protocol: get found nothing for the key just set",
        ),
        (
            b"VERSION 1.6.0\r\nSTORED\r\nVALUE",
            Reason::Protocol,
            r#"protocol: connection closed by the server in the middle of a line: "VALUE""#,
        ),
    ];
    for (reply, reason, message) in cases {
        let addr = raw_server(move |s| reply_with(s, reply.to_vec())).await;
        let o = run("memcached", &format!("address = \"{addr}\"")).await;
        assert_outcome(&o, Status::Fail, reason);
        assert_eq!(o.message, message);
    }

    // An endless line is cut at the cap.
    let addr = raw_server(|s| reply_with(s, vec![b'x'; 100_000])).await;
    let o = run("memcached", &format!("address = \"{addr}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert!(o.message.contains("longer than"), "{}", o.message);

    // The version is observed even when a later step fails.
    let addr = raw_server(|s| reply_with(s, b"VERSION 1.6.9\r\nNOT_STORED\r\n".to_vec())).await;
    let o = run("memcached", &format!("address = \"{addr}\"")).await;
    assert_outcome(&o, Status::Fail, Reason::Protocol);
    assert_eq!(
        observation(&o, "version"),
        &Observation::Text("1.6.9".to_string())
    );
}

// =============================================================================================
// validate: bad configs, each at its position.

#[test]
fn validate_reports_bad_cache_checks() {
    let checks = r#"[[check]]
name = "bad-scheme"
type = "redis"
url = "http://127.0.0.1:6379"

[[check]]
name = "bad-mode"
type = "redis"
url = "redis://127.0.0.1:6379"
mode = "pong"

[[check]]
name = "bad-info"
type = "redis"
url = "redis://127.0.0.1:6379"
info = "used_memory"

[[check]]
name = "plain-with-tls"
type = "redis"
url = "redis://127.0.0.1:6379"
tls = { verify = false }

[[check]]
name = "bad-db"
type = "redis"
url = "redis://user:hunter2-pass@127.0.0.1:6379/x"

[[check]]
name = "two-passwords"
type = "redis"
url = "redis://:one-pass@127.0.0.1:6379"
password = "two-pass"
key_prefix = "p:"

[[check]]
name = "no-address"
type = "memcached"
key_prefix = "bw:"

[[check]]
name = "bad-address"
type = "memcached"
address = "127.0.0.1"
"#;
    let dir = write_config("checks = [\"checks/*.toml\"]\n", &[("c.toml", checks)]);
    let out = run_cli(&["validate", "-c", "bakewatch.toml"], dir.path(), &[]);
    assert_eq!(out.code, Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expected = [
        "checks/c.toml:4:7: url: scheme \"http\" is not redis:// or rediss:// (TLS)",
        "checks/c.toml:10:8: mode: \"pong\" is not \"ping\" or \"roundtrip\" (did you mean \"ping\"?)",
        "checks/c.toml:16:8: info: expected an array, found a string",
        "checks/c.toml:22:7: tls: needs a rediss:// url",
        "checks/c.toml:27:7: url: the path must be the database number, e.g. \"/0\" (found \"/x\")",
        "checks/c.toml:33:12: password: the url already has a password; give it in one place",
        "checks/c.toml:34:14: key_prefix: only used with mode = \"roundtrip\"",
        "checks/c.toml:36:1: check `no-address` is missing required key `address`",
        "checks/c.toml:44:11: address: \"127.0.0.1\" is not \"host:port\"",
    ];
    for (line, want) in lines.iter().zip(&expected) {
        assert_eq!(line, want, "\n{out}");
    }
    assert_eq!(lines.len(), expected.len() + 1, "{out}");
    assert_eq!(
        lines.last().copied(),
        Some("bakewatch: 9 problems in the configuration")
    );
    assert!(!out.stderr.contains("hunter2"), "{out}");
}
