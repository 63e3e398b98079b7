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

/// An open line to the notification socket.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// What `$NOTIFY_SOCKET` said, for messages.
    shown: String,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    pub(crate) watchdog_every: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (and the watchdog variables) from the
    /// environment; `None` when it is unset or empty.
    pub(crate) fn from_env() -> Result<Option<Notifier>> {
        let Some(raw) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let watchdog_every = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier::new(&raw, watchdog_every).map(Some)
    }

    fn new(raw: &OsString, watchdog_every: Option<Duration>) -> Result<Notifier> {
        let shown = raw.to_string_lossy().into_owned();
        let bad = |e: std::io::Error| Error::Sys {
            op: "use NOTIFY_SOCKET",
            source: std::io::Error::new(e.kind(), format!("{shown}: {e}")),
        };
        let bytes = raw.as_bytes();
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name).map_err(bad)?
            }
            None if bytes.starts_with(b"/") => {
                SocketAddr::from_pathname(std::path::Path::new(raw)).map_err(bad)?
            }
            None => {
                return Err(bad(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not an absolute path or an abstract name (@...)",
                )));
            }
        };
        let socket = UnixDatagram::unbound().map_err(bad)?;
        // Never block the work loop: a full queue loses a message (EAGAIN
        // is reported) instead.
        socket.set_nonblocking(true).map_err(bad)?;
        Ok(Notifier {
            socket,
            address,
            shown,
            watchdog_every,
        })
    }

    /// Sends one datagram; an error names the socket.
    pub(crate) fn send(&self, message: &str) -> Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(|_| ())
            .map_err(|e| Error::Sys {
                op: "notify the service manager",
                source: std::io::Error::new(
                    e.kind(),
                    format!("{message:?} to NOTIFY_SOCKET {}: {e}", self.shown),
                ),
            })
    }
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
    fn refuses_a_relative_address() {
        let err = Notifier::new(&OsString::from("relative/sock"), None).unwrap_err();
        assert!(err.to_string().contains("relative/sock"), "{err}");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(&path.clone().into_os_string(), None).unwrap();
        n.send("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        drop(server);
        let err = n.send("STATUS=x").unwrap_err();
        assert!(err.to_string().contains("notify"), "{err}");
    }
}
