//! sd_notify for library daemons: READY=1, STATUS=, WATCHDOG=1 and
//! STOPPING=1 to the socket named by `$NOTIFY_SOCKET`.
//!
//! The socket is systemd's under `Type=notify`, or the private one a
//! supervisor gives COMMAND under `rdaemon --notify`/`--watchdog`. Without
//! `NOTIFY_SOCKET` nothing is sent and nothing is opened.
//!
//! The watchdog follows `sd_watchdog_enabled(3)`: `WATCHDOG_USEC` gives the
//! interval, `WATCHDOG_PID` (when set) must name this process, and a ping is
//! due when half the interval has passed since the last one.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::error::{Error, Result};

/// A line to the notification socket. An unusable `NOTIFY_SOCKET` does
/// not fail `start()` (as with libsystemd, the error comes with each
/// message): `line` then holds why.
#[derive(Debug)]
pub(crate) struct Notifier {
    line: std::result::Result<(UnixDatagram, SocketAddr), (std::io::ErrorKind, String)>,
    /// What `$NOTIFY_SOCKET` said, for messages.
    shown: String,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    pub(crate) watchdog_every: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (and the watchdog variables) from the
    /// environment; `None` when it is unset or empty.
    pub(crate) fn from_env() -> Option<Notifier> {
        let raw = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
        let watchdog_every = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Some(Notifier::new(&raw, watchdog_every))
    }

    fn new(raw: &OsString, watchdog_every: Option<Duration>) -> Notifier {
        Notifier {
            line: open(raw).map_err(|e| (e.kind(), e.to_string())),
            shown: raw.to_string_lossy().into_owned(),
            watchdog_every,
        }
    }

    /// Sends one datagram without blocking; an error names the socket.
    pub(crate) fn send(&self, message: &str) -> Result<()> {
        let failed = |kind, why: &dyn std::fmt::Display| Error::Sys {
            op: "notify the service manager",
            source: std::io::Error::new(
                kind,
                format!("{message:?} to NOTIFY_SOCKET {}: {why}", self.shown),
            ),
        };
        match &self.line {
            Ok((socket, address)) => socket
                .send_to_addr(message.as_bytes(), address)
                .map(|_| ())
                .map_err(|e| failed(e.kind(), &e)),
            Err((kind, why)) => Err(failed(*kind, why)),
        }
    }
}

/// An unbound, non-blocking datagram socket and the address to send to: a
/// path, or an abstract name after `@`.
fn open(raw: &OsString) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let bytes = raw.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(std::path::Path::new(raw))?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an absolute path or an abstract name (@...)",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // Never block the work loop: with a full queue a message is lost
    // (EAGAIN, reported) instead.
    socket.set_nonblocking(true)?;
    Ok((socket, address))
}

/// Half the watchdog interval, when `WATCHDOG_USEC` is a positive number
/// and `WATCHDOG_PID` is unset or names `me`.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|&n| n > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_needs_a_positive_interval_and_our_pid() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(watchdog_interval(Some("1000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn a_relative_address_fails_each_message_naming_it() {
        let n = Notifier::new(&OsString::from("relative/sock"), None);
        let err = n.send("READY=1").unwrap_err();
        assert!(err.to_string().contains("relative/sock"), "{err}");
        assert!(err.to_string().contains("READY=1"), "{err}");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(&path.clone().into_os_string(), None);
        n.send("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        drop(server);
        let err = n.send("STATUS=x").unwrap_err();
        assert!(err.to_string().contains("notify"), "{err}");
    }
}
