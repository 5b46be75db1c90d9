//! The status page at `/`, end to end: the real daemon binary with a passing check, a failing
//! one, one whose message echoes markup, a pending deployment and a firing alert; the page read
//! over plain HTTP and rendered by headless Chromium (DOM dump, a phone-sized screenshot, and a
//! layout check that nothing scrolls sideways at 375 px).
//!
//! Chromium is required (`apt-get install chromium`): without it these tests fail, they are
//! never skipped. Every Chromium run has a fresh profile in a temp dir, its own process group,
//! and a deadline after which the whole group is killed.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Mode, Target, http_client, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "status-page-token-5d1e";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The longest one Chromium run may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// What the markup-echoing check expects in the body (and so what its failure message shows).
const PAYLOAD: &str = "<script>alert(1)</script>";

/// `min_duration` far away: the deployment stays pending for the whole test.
const POLICY: &str = "[scheduler]\njitter = \"0s\"\n\n[deploy]\nwindow = \"30m\"\ninterval = \"200ms\"\nmin_duration = \"20m\"\nmax_duration = \"25m\"\nbaseline = \"10m\"\n";

fn checks(healthy: &Target, broken: &Target) -> String {
    format!(
        r#"
[[check]]
name = "shop-health"
service = "shop"
type = "http"
url = "{healthy}"
interval = "200ms"
timeout = "2s"

[[check]]
name = "pay-api"
service = "payments"
type = "http"
url = "{broken}"
interval = "200ms"
timeout = "2s"

[[check]]
name = "xss-probe"
service = "shop"
type = "http"
url = "{healthy}"
interval = "500ms"
timeout = "2s"
expect = [ {{ body = true, contains = "{PAYLOAD}<b id=\"injected\">bold</b> & 'quotes'" }} ]

[[rule]]
name = "pay-down"
check = "pay-api"
signal = "consecutive_failures"
over = "30s"
above = 2
severity = "critical"
"#,
        healthy = healthy.url("/health"),
        broken = broken.url("/pay"),
    )
}

/// The daemon with all of the above, once every check has run, the deployment is registered
/// and the alert fires.
struct Scene {
    daemon: Daemon,
    _healthy: Target,
    _broken: Target,
}

async fn scene() -> Scene {
    let healthy = Target::start_in(Mode::Healthy).await;
    let broken = Target::start_in(Mode::Status(500)).await;
    let daemon = Daemon::start_full(
        &format!("token = \"{TOKEN}\""),
        POLICY,
        &[("status.toml", &checks(&healthy, &broken))],
    )
    .await;

    let r = http_client()
        .post(daemon.url("/api/v1/deployments"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "shop-7.4.1", "service": "shop", "version": "7.4.1", "environment": "staging"}))
        .send()
        .await
        .expect("POST /api/v1/deployments");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 201, "register: {body}");

    let within = Duration::from_secs(20);
    daemon
        .wait_check("shop-health", "passes", within, |v| v["status"] == "pass")
        .await;
    daemon
        .wait_check("pay-api", "fails", within, |v| v["status"] == "fail")
        .await;
    daemon
        .wait_check("xss-probe", "fails", within, |v| v["status"] == "fail")
        .await;
    let d = &daemon;
    wait_until("pay-down fires", within, async || {
        let v = d.get_json("/api/v1/alerts").await;
        let firing = v["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["rule"] == "pay-down" && x["state"] == "firing")
        });
        if firing { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    Scene {
        daemon,
        _healthy: healthy,
        _broken: broken,
    }
}

// ---------------------------------------------------------------------------------------
// Reading HTML without a parser

/// The text a person sees in an HTML fragment: tags dropped, character references decoded.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `<section id="…">` of the page.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("<section id=\"{id}\">");
    let start = html
        .find(&open)
        .unwrap_or_else(|| panic!("no section {id} in:\n{html}"));
    let end = html[start..]
        .find("</section>")
        .unwrap_or_else(|| panic!("section {id} not closed"));
    &html[start..start + end]
}

/// The `<tr>` whose opening tag carries `attr`, e.g. `data-check="pay-api"`.
fn row<'a>(html: &'a str, attr: &str) -> &'a str {
    let at = html
        .find(attr)
        .unwrap_or_else(|| panic!("no row with {attr} in:\n{html}"));
    let start = html[..at].rfind("<tr").expect("the row's <tr");
    let end = html[start..].find("</tr>").expect("the row's </tr>");
    &html[start..start + end]
}

/// What the page shows: the checks (names in page order, each row's text) and the sections.
fn assert_page_content(html: &str) {
    let header = text_of(&html[..html.find("<main>").expect("<main>")]);
    assert!(header.contains("bakewatch"), "{header}");
    assert!(header.contains(env!("CARGO_PKG_VERSION")), "{header}");
    assert!(header.contains("Failing"), "overall state: {header}");
    assert!(header.contains("2 failing"), "counts: {header}");
    assert!(header.contains("1 passing"), "counts: {header}");
    assert!(header.contains("0 erroring"), "counts: {header}");

    // Checks: failures first, each with status text and message.
    let checks = section(html, "checks");
    let pos = |name: &str| {
        checks
            .find(&format!("data-check=\"{name}\""))
            .unwrap_or_else(|| panic!("check {name} not listed:\n{checks}"))
    };
    assert!(pos("pay-api") < pos("shop-health"), "failures first");
    assert!(pos("xss-probe") < pos("shop-health"), "failures first");
    let first = checks.find("data-check=").unwrap();
    assert!(
        checks[first..].starts_with("data-check=\"pay-api\""),
        "the first check listed is a failing one:\n{checks}"
    );

    // Notifications link to a check's row: `/#check-<name>`.
    assert!(checks.contains("id=\"check-pay-api\""), "{checks}");
    let pay = text_of(row(checks, "data-check=\"pay-api\""));
    assert!(pay.contains("pay-api"), "{pay}");
    assert!(pay.contains("payments"), "{pay}");
    assert!(pay.contains("http"), "{pay}");
    assert!(pay.contains("fail"), "{pay}");
    assert!(pay.contains("500"), "the message names the status: {pay}");
    assert!(pay.contains("ago") || pay.contains("just now"), "{pay}");
    let pay_html = row(checks, "data-check=\"pay-api\"");
    assert!(pay_html.contains("class=\"badge fail\""), "{pay_html}");
    assert!(pay_html.contains("<svg"), "sparkline: {pay_html}");
    assert!(
        pay_html.contains("class=\"fail\" d=\"M"),
        "red bars: {pay_html}"
    );

    let shop_html = row(checks, "data-check=\"shop-health\"");
    let shop = text_of(shop_html);
    assert!(shop.contains("pass"), "{shop}");
    assert!(shop.contains("shop"), "{shop}");
    assert!(shop_html.contains("class=\"badge pass\""), "{shop_html}");
    assert!(
        shop_html.contains("title=\"20"),
        "absolute time in a title: {shop_html}"
    );

    // The echoed markup is text, not elements.
    let xss_html = row(checks, "data-check=\"xss-probe\"");
    let xss = text_of(xss_html);
    assert!(xss.contains("fail"), "{xss}");
    assert!(xss.contains(PAYLOAD), "the payload shows as text: {xss}");
    assert!(xss_html.contains("&lt;script&gt;"), "{xss_html}");
    assert!(!html.contains("<script"), "no script element on the page");
    assert!(!html.contains("<b id"), "no injected element on the page");

    // The pending deployment.
    let current = section(html, "deployments");
    let dep = text_of(row(current, "data-deployment=\"shop-7.4.1\""));
    for want in ["shop", "7.4.1", "staging", "pending", "wait"] {
        assert!(
            dep.contains(want),
            "{want:?} in the current deployment: {dep}"
        );
    }
    assert!(dep.contains("MIN_DURATION_NOT_REACHED"), "reasons: {dep}");

    // The firing alert.
    let alerts = section(html, "alerts");
    let alert = text_of(row(alerts, "data-rule=\"pay-down\""));
    for want in [
        "pay-down",
        "pay-api",
        "critical",
        "firing",
        "consecutive_failures",
        "above 2",
        "steady",
    ] {
        assert!(alert.contains(want), "{want:?} in the alert: {alert}");
    }

    // History.
    let history = text_of(section(html, "history"));
    for want in ["shop-7.4.1", "shop", "7.4.1", "staging", "pending"] {
        assert!(history.contains(want), "{want:?} in the history: {history}");
    }
}

// ---------------------------------------------------------------------------------------
// Chromium

/// Output of one bounded Chromium run.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium with `args` (after the common flags) in its own process group, a
/// fresh profile in a temp dir, and a deadline; the whole group is killed afterwards.
fn chromium(args: &[String]) -> Run {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install chromium (apt-get install -y chromium)"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--no-proxy-server",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .env("HOME", profile.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().expect("spawn chromium");
    let pgid = child.id();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait chromium") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The browser's helpers (zygote, renderer…) share its process group: end them all.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        None => panic!(
            "chromium did not finish within {CHROMIUM_TIMEOUT:?}: {args:?}\nstderr:\n{stderr}"
        ),
        Some(s) => assert!(
            s.success(),
            "chromium {args:?} failed ({s}):\nstderr:\n{stderr}"
        ),
    }
    Run { stdout, stderr }
}

/// Where this test keeps its screenshot.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts dir");
    dir
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_over_http_is_self_contained_html() {
    let s = scene().await;
    let d = &s.daemon;

    let r = http_client().get(d.url("/")).send().await.expect("GET /");
    assert_eq!(r.status().as_u16(), 200);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r.text().await.expect("body");

    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<meta name=\"viewport\" content=\"width=device-width"));
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_page_content(&html);

    // Nothing is loaded from anywhere: no stylesheets, scripts, images, frames or imports,
    // and every link stays on this daemon.
    for banned in [
        "<link", "<script", "<img", "<iframe", "<object", "<embed", " src=", "@import", "url(",
    ] {
        assert!(!html.contains(banned), "{banned:?} on the page");
    }
    for (i, _) in html.match_indices("href=\"") {
        let target = &html[i + 6..];
        assert!(
            target.starts_with('/') || target.starts_with('?'),
            "external link: {}",
            &target[..target.len().min(80)]
        );
    }
    assert!(!html.contains("href=\"//"), "protocol-relative link");

    // ?refresh: 0 turns it off, values are clamped, junk means the default.
    let (_, off) = d.get("/?refresh=0").await;
    assert!(!off.contains("http-equiv=\"refresh\""), "refresh off");
    assert!(off.contains("auto-refresh off"));
    let (_, fast) = d.get("/?refresh=1").await;
    assert!(fast.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    let (_, slow) = d.get("/?refresh=86400").await;
    assert!(slow.contains("<meta http-equiv=\"refresh\" content=\"3600\">"));
    let (status, junk) = d.get("/?refresh=soon&x=1").await;
    assert_eq!(status, 200);
    assert!(junk.contains("<meta http-equiv=\"refresh\" content=\"10\">"));

    // HEAD: the same headers, no body.
    let r = http_client().head(d.url("/")).send().await.expect("HEAD /");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    assert!(r.bytes().await.unwrap().is_empty());

    // The API is unchanged next to it.
    let v: Value = d.get_json("/api/v1/checks").await;
    assert_eq!(v["checks"].as_array().map(Vec::len), Some(3), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_page_for_a_person_on_a_phone() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install chromium (apt-get install -y chromium)"
    );
    let s = scene().await;
    let url = s.daemon.url("/");

    // The DOM as Chromium built it: the escaped message stayed text, nothing was injected.
    let dump = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || chromium(&["--dump-dom".to_string(), url]))
            .await
            .expect("chromium task")
    };
    let dom = dump.stdout;
    assert!(
        dom.contains("<section id=\"checks\">"),
        "no page in the DOM dump:\n{dom}\nstderr:\n{}",
        dump.stderr
    );
    assert_page_content(&dom);

    // A phone-sized screenshot, kept for people to look at.
    let png = artifacts().join("status_page.png");
    let _ = std::fs::remove_file(&png);
    {
        let png = png.clone();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            chromium(&[
                format!("--screenshot={}", png.display()),
                "--window-size=390,844".to_string(),
                url,
            ])
        })
        .await
        .expect("chromium task");
    }
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        png.display()
    );
    assert!(
        bytes.len() > 8 * 1024,
        "screenshot too small ({} bytes): {}",
        bytes.len(),
        png.display()
    );
    println!("status page screenshot (390x844): {}", png.display());

    // No horizontal scroll at 375 px: the same page in a 375 px wide frame (headless windows
    // have a minimum width), with a probe in the host page that records the frame's layout.
    let (_, html) = s.daemon.get("/?refresh=0").await;
    let srcdoc = html.replace('&', "&amp;").replace('"', "&quot;");
    let host = format!(
        "<!DOCTYPE html><html><body style=\"margin:0\">\
         <iframe id=\"f\" style=\"width:375px;height:812px;border:0\" srcdoc=\"{srcdoc}\"></iframe>\
         <script>window.addEventListener('load', function () {{\
           var e = document.getElementById('f').contentDocument.documentElement;\
           document.body.setAttribute('data-layout', e.scrollWidth + 'x' + e.clientWidth);\
         }});</script></body></html>"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("phone.html");
    std::fs::write(&file, host).expect("write the probe page");
    let run = tokio::task::spawn_blocking(move || {
        chromium(&[
            "--dump-dom".to_string(),
            format!("file://{}", file.display()),
        ])
    })
    .await
    .expect("chromium task");
    let layout = run
        .stdout
        .split("data-layout=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no layout probe in:\n{}", run.stdout));
    let (scroll, inner) = layout.split_once('x').expect("WxH");
    let scroll: u32 = scroll.parse().expect("scrollWidth");
    let inner: u32 = inner.parse().expect("clientWidth");
    assert!(
        (300..=375).contains(&inner),
        "the frame is phone-sized: {layout}"
    );
    assert!(
        scroll <= inner,
        "the page scrolls sideways at {inner}px: content is {scroll}px wide"
    );
}
