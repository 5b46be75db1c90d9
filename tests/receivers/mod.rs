//! Real receivers for notification tests: an SMTP server (Debian's `python3-aiosmtpd`, run
//! by `tests/fixtures/smtp_server.py`) and an Alertmanager (Debian's
//! `prometheus-alertmanager`), each on a loopback port and killed when dropped. A missing
//! package is a loud failure with the command that installs it, never a skip.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{self, free_port, wait_until};

pub const PYTHON: &str = "/usr/bin/python3";

pub fn require_aiosmtpd() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the email tests need a real SMTP server: `{PYTHON} -c 'import aiosmtpd'` failed; \
         install it with `apt-get install python3-aiosmtpd`"
    );
}

/// `tests/fixtures/smtp_server.py` on a free loopback port; killed when dropped.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: TempDir,
    _logs: TempDir,
}

impl SmtpServer {
    pub fn start(extra: &[&str]) -> SmtpServer {
        SmtpServer::start_on(free_port(), extra)
    }

    /// Like [`SmtpServer::start`], on a port chosen in advance (a server that was down).
    pub fn start_on(port: u16, extra: &[&str]) -> SmtpServer {
        require_aiosmtpd();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_server.py");
        let maildir = TempDir::new().unwrap();
        let logs = TempDir::new().unwrap();
        let log = logs.path().join("smtp.log");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .args(["--port", &port.to_string(), "--maildir"])
            .arg(maildir.path())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the SMTP server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let server = SmtpServer {
            child,
            port,
            maildir,
            _logs: logs,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("READY") => server,
            other => panic!(
                "the SMTP server did not get ready ({other:?}); its stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    /// The accepted mails so far.
    pub fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.maildir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let record: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                out.push(Mail::parse(record));
            }
        }
        out
    }

    pub async fn wait_mails(&self, n: usize) -> Vec<Mail> {
        wait_until(
            &format!("{n} mail(s) arrive"),
            Duration::from_secs(20),
            async || {
                let mails = self.mails();
                if mails.len() >= n {
                    Ok(mails)
                } else {
                    Err(format!("{} mail(s)", mails.len()))
                }
            },
        )
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received mail: the server's record, the unfolded headers, the decoded body.
pub struct Mail {
    pub record: Value,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Mail {
    pub fn parse(record: Value) -> Mail {
        let content = record["content"].as_str().unwrap().replace("\r\n", "\n");
        let (head, body) = content.split_once("\n\n").expect("headers and body");
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut mail = Mail {
            record,
            headers,
            body: String::new(),
        };
        mail.body = match mail.header("content-transfer-encoding") {
            Some(e) if e.eq_ignore_ascii_case("quoted-printable") => decode_qp(body),
            Some(e) if e.eq_ignore_ascii_case("base64") => {
                panic!("unexpected base64 body: {body}")
            }
            _ => body.to_string(),
        };
        mail
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn subject(&self) -> &str {
        self.header("subject").expect("a Subject")
    }
}

pub fn decode_qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A real Alertmanager on a free loopback port, without clustering; killed when dropped.
pub struct AlertmanagerProcess {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl AlertmanagerProcess {
    pub async fn start() -> AlertmanagerProcess {
        AlertmanagerProcess::start_on(free_port()).await
    }

    /// Like [`AlertmanagerProcess::start`], on a port chosen in advance (one that was down).
    pub async fn start_on(port: u16) -> AlertmanagerProcess {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "the alertmanager tests need {ALERTMANAGER}: install it with \
             `apt-get install prometheus-alertmanager`"
        );
        let dir = TempDir::new().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: x\nreceivers:\n  - name: x\n").unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        let mut am = AlertmanagerProcess { child, port, dir };
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = am.url("/-/ready");
        let ready = common::try_wait_until(Duration::from_secs(30), async || {
            if let Ok(Some(status)) = am.child.try_wait() {
                return Ok(Err(format!("alertmanager exited: {status}")));
            }
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(Ok(())),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => am,
            other => panic!(
                "alertmanager did not get ready ({other:?}); its log:\n{}",
                std::fs::read_to_string(am.dir.path().join("alertmanager.log")).unwrap_or_default()
            ),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /api/v2/alerts` (active, silenced, inhibited and unprocessed: the defaults).
    pub async fn alerts(&self) -> Vec<Value> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let v: Value = client
            .get(self.url("/api/v2/alerts"))
            .send()
            .await
            .expect("GET /api/v2/alerts")
            .json()
            .await
            .expect("JSON");
        v.as_array().expect("an array").clone()
    }
}

impl Drop for AlertmanagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
