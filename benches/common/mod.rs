//! Pieces every bench harness shares: process CPU time, the probe loop, free ports and a
//! loopback nginx.

#![allow(dead_code)] // each bench uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bakewatch::checks::Status;
use bakewatch::runtime::Runtime;

/// user + system CPU seconds of a process, from /proc/<pid>/stat (USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Runs check number `check` of `rt` `probes` times through the daemon's own path, with
/// `concurrency` runs in flight; every run must pass.
pub async fn run_check_loop(rt: Arc<Runtime>, check: usize, probes: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (rt, next) = (rt.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < probes {
                let o = rt.run_check(&rt.checks[check]).await;
                assert!(
                    o.status == Status::Pass || o.status == Status::Degraded,
                    "run failed: {}",
                    o.message
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The daemon binary: `$BAKEWATCH_BIN`, else the one cargo built beside this bench.
pub fn bin() -> PathBuf {
    match std::env::var_os("BAKEWATCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_bakewatch")),
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`, at most `within`.
pub fn wait_port(port: u16, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback nginx: the target of the HTTP benches.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Nginx {
    /// One nginx process (`master_process off`) on a free loopback port, pinned to `cpu`,
    /// answering every path with a small JSON body, no keep-alive.
    pub fn start(cpu: Option<usize>) -> Nginx {
        Nginx::start_nice(cpu, None)
    }

    /// [`Nginx::start`] at a nice level.
    pub fn start_nice(cpu: Option<usize>, nice: Option<i32>) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx not found: install the Debian package nginx-light");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port} backlog=4096; keepalive_timeout 0;
    location / {{ default_type application/json; return 200 '{{\"status\":\"ok\",\"items\":[1,2,3]}}'; }} }} }}
"
            ),
        )
        .unwrap();
        let mut argv: Vec<String> = Vec::new();
        if let Some(n) = nice {
            argv.extend(["nice".into(), "-n".into(), n.to_string()]);
        }
        if let Some(c) = cpu {
            argv.extend(["taskset".into(), "-c".into(), c.to_string()]);
        }
        argv.push(nginx.into());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_port(port, "nginx", Duration::from_secs(10));
        Nginx {
            child,
            _dir: dir,
            port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
