//! The systemd notification protocol (`sd_notify(3)`) without libsystemd: datagrams on the
//! Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Every
//! call is a no-op when the variable is unset, so the daemon behaves the same outside systemd.
//!
//! What bakewatch sends: `READY=1` once config, storage, listener and scheduler are up;
//! `STATUS=…` (checks and verdicts) when it changes; `RELOADING=1` with `MONOTONIC_USEC=` at
//! the start of a reload and `READY=1` at its end; `STOPPING=1` on shutdown; and `WATCHDOG=1`
//! every half `$WATCHDOG_USEC` while the scheduler's [`crate::scheduler::Heartbeat`] moves.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket, or nothing.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a disabled notifier when it is unset, empty or unusable (the
    /// last is logged: under systemd it would end in a start timeout).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => match Notifier::connect(&v.to_string_lossy()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(socket = ?v, error = %e, "cannot use $NOTIFY_SOCKET; not notifying systemd");
                    Notifier::disabled()
                }
            },
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier for `socket`: a filesystem path, or `@name` for an abstract socket.
    pub fn connect(socket: &str) -> std::io::Result<Notifier> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            abstract_addr(name.as_bytes())?
        } else {
            SocketAddr::from_pathname(socket)?
        };
        let sock = UnixDatagram::unbound()?;
        // A full receive queue drops a message rather than stall the daemon.
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((sock, addr)),
        })
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (newline-separated `KEY=value` lines). Failures are logged at debug
    /// level only: a notification is never worth failing over.
    pub fn send(&self, message: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
            tracing::debug!(error = %e, message, "sd_notify failed");
        }
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `STATUS=` (a single line: newlines would start new assignments).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", status.replace('\n', " ")));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds (what `MONOTONIC_USEC=` carries).
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1_000
}

/// The watchdog interval systemd expects pings within: `$WATCHDOG_USEC`, when set and
/// meant for this process (`$WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] over given values.
pub fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid.filter(|p| !p.trim().is_empty())
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_needs_a_positive_interval_for_this_process() {
        assert_eq!(
            watchdog_from(Some("400000"), None, 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            watchdog_from(Some("400000"), Some("7"), 7),
            Some(Duration::from_millis(400))
        );
        assert_eq!(watchdog_from(Some("400000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.status("3 checks,\n0 failing");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=3 checks, 0 failing");

        let name = format!("bakewatch-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.reloading();
        let len = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        let usec: u64 = text.rsplit('=').next().unwrap().parse().unwrap();
        assert!(usec > 0);
    }

    #[test]
    fn a_disabled_notifier_sends_nothing() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        n.ready();
    }
}
