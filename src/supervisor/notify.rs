//! The sd_notify protocol, without systemd.
//!
//! Each supervisor gives COMMAND a private datagram socket in `NOTIFY_SOCKET`
//! (`NAME.i.notify` in the PID directory, or a short hashed name when that
//! path would not fit `sun_path`, in the PID directory or, when even that
//! is too long, in a short per-user directory, see [`socket_path`]; mode
//! 0600, owned by
//! COMMAND's user), so programs that already speak sd_notify (libsystemd,
//! `systemd-notify`, the `sd-notify` crate, Python `sdnotify`) work
//! unchanged. A datagram is newline-separated `KEY=VALUE` assignments; the
//! supervisor acts on `READY=1`, `WATCHDOG=1`, `WATCHDOG=trigger`,
//! `STATUS=…`, `STOPPING=1`, `MAINPID=…` and `EXTEND_TIMEOUT_USEC=…`.
//! Unknown keys are ignored; a datagram that is oversized, not UTF-8, or
//! contains a NUL is dropped whole and never stops the supervisor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid};

/// The largest datagram accepted (systemd's own limit is the same order).
pub const MAX_DATAGRAM: usize = 4096;

/// Longest STATUS= text kept.
const MAX_STATUS: usize = 256;

/// One parsed notification. Fields not present are `None`/false.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notification {
    pub ready: bool,
    pub watchdog: bool,
    pub watchdog_trigger: bool,
    pub stopping: bool,
    pub status: Option<String>,
    /// MAINPID= as sent; validated by the supervisor, not here.
    pub main_pid: Option<i64>,
    pub extend_timeout: Option<Duration>,
}

/// Parses one datagram; `None` when it must be dropped as malformed.
pub fn parse(datagram: &[u8]) -> Option<Notification> {
    if datagram.len() > MAX_DATAGRAM || datagram.contains(&0) {
        return None;
    }
    let text = std::str::from_utf8(datagram).ok()?;
    let mut n = Notification::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key, value) {
            ("READY", "1") => n.ready = true,
            ("WATCHDOG", "1") => n.watchdog = true,
            ("WATCHDOG", "trigger") => n.watchdog_trigger = true,
            ("STOPPING", "1") => n.stopping = true,
            ("STATUS", s) => n.status = Some(s.chars().take(MAX_STATUS).collect()),
            ("MAINPID", p) => n.main_pid = p.parse().ok(),
            ("EXTEND_TIMEOUT_USEC", us) => {
                n.extend_timeout = us.parse().ok().map(Duration::from_micros)
            }
            _ => {}
        }
    }
    Some(n)
}

/// The supervisor's end of COMMAND's notification socket.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// The socket file's (device, inode) as bound: what is at `path` when
    /// the supervisor ends is removed only if it is still this file.
    id: Option<(u64, u64)>,
}

impl NotifySocket {
    /// Binds the socket at `path` (anything already there is unlinked, never
    /// followed), readable and writable only by `owner` (COMMAND's user).
    pub fn bind(path: &Path, owner: Option<(Uid, Gid)>) -> io::Result<NotifySocket> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // bind() creates the socket file with 0777 & ~umask; the supervisor
        // is single-threaded, so narrowing the umask around it is safe.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixDatagram::bind(path);
        umask(old);
        let sock = bound?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                path,
                Some(uid),
                Some(gid),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from)?;
        }
        sock.set_nonblocking(true)?;
        Ok(NotifySocket {
            sock,
            path: path.to_path_buf(),
            id: file_id(path),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads every pending datagram. Malformed and oversized ones are
    /// counted in the second value and otherwise ignored.
    pub fn receive(&self) -> (Vec<Notification>, usize) {
        let mut out = Vec::new();
        let mut dropped = 0;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // Bounded, so a flood cannot starve the rest of the loop.
        for _ in 0..64 {
            // MSG_TRUNC makes recv() return the real length of a longer
            // datagram, so an oversized one is recognised and dropped.
            match recv(
                self.sock.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) if n <= MAX_DATAGRAM => match parse(&buf[..n]) {
                    Some(msg) => out.push(msg),
                    None => dropped += 1,
                },
                Ok(_) => dropped += 1,
                Err(_) => break,
            }
        }
        (out, dropped)
    }
}

impl Drop for NotifySocket {
    /// Removes the socket file, unless the path now names another file: a
    /// supervisor whose slot was taken over (its PID file deleted, or its
    /// directory renamed away and made afresh) must leave the new peer's
    /// socket alone. The bound socket keeps its inode allocated, so a new
    /// file at the path never has the same (device, inode).
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The (device, inode) of the file at `path`, not following a symlink.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Sends `message` to the socket named by `$NOTIFY_SOCKET` (a path, or an
/// abstract name starting with `@`): how rdaemon itself reports READY=1 to
/// systemd when it runs under `Type=notify`. Errors are returned, not fatal.
pub fn send_to_env_socket(address: &str, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = address.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        sock.send_to(message.as_bytes(), address)?;
    }
    Ok(())
}

/// Room for a path in `sockaddr_un.sun_path`, its terminating NUL excluded.
const SUN_PATH_MAX: usize = 107;

/// Where slot `index` of `name` in `dir` gets its notification socket:
/// `NAME.I.notify` when that path fits `sun_path` (108 bytes), otherwise a
/// short dot-file name from a hash of `NAME.I` (`.n` and 16 hex digits), so
/// that every valid NAME works in any PID directory up to about 88 bytes.
/// For a longer PID directory, the same kind of short name (hashed from
/// the directory too, so that two PID directories never share one) in
/// [`fallback_dir`]; [`prepare_socket_path`] creates and vets that
/// directory. The name is fixed for a given directory, NAME and slot, so a
/// reader can compute it too.
pub fn socket_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    let long = dir.join(format!("{name}.{index}.notify"));
    if long.as_os_str().len() <= SUN_PATH_MAX {
        return long;
    }
    let short = dir.join(format!(
        ".n{:016x}",
        fnv1a(format!("{name}.{index}").as_bytes())
    ));
    if short.as_os_str().len() <= SUN_PATH_MAX {
        return short;
    }
    let mut key = dir.as_os_str().as_encoded_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(format!("{name}.{index}").as_bytes());
    fallback_dir().join(format!(".n{:016x}", fnv1a(&key)))
}

/// The short per-user directory for notification sockets that do not fit
/// in their PID directory: `/run/rdaemon` for root, `/tmp/rdaemon-UID`
/// otherwise (the default PID directories, whatever `RDAEMON_PID_DIR`
/// says), under the same vetting as a PID directory.
pub fn fallback_dir() -> PathBuf {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        PathBuf::from("/run/rdaemon")
    } else {
        PathBuf::from(format!("/tmp/rdaemon-{}", euid.as_raw()))
    }
}

/// [`socket_path`], with the fallback directory created (mode 0700, or
/// 0755 for root) and vetted like a PID directory (owner, mode, no
/// symlinks, sticky ancestors) when the socket goes there. Errors name
/// the directory and the cause.
pub fn prepare_socket_path(dir: &Path, name: &str, index: u32) -> io::Result<PathBuf> {
    let path = socket_path(dir, name, index);
    if !path.starts_with(dir) {
        crate::piddir::PidDir::open_or_create(&fallback_dir())
            .map_err(|e| io::Error::other(format!("notification socket directory: {e}")))?;
    }
    Ok(path)
}

/// FNV-1a, 64 bits: a stable hash (unlike std's, fixed across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_fields_it_knows() {
        let n = parse(b"READY=1\nSTATUS=Processing 3 jobs\nMAINPID=4242\nX_UNKNOWN=1\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000").unwrap();
        assert!(n.ready && n.watchdog && !n.stopping && !n.watchdog_trigger);
        assert_eq!(n.status.as_deref(), Some("Processing 3 jobs"));
        assert_eq!(n.main_pid, Some(4242));
        assert_eq!(n.extend_timeout, Some(Duration::from_secs(5)));
        assert!(parse(b"WATCHDOG=trigger").unwrap().watchdog_trigger);
        assert!(parse(b"STOPPING=1\n").unwrap().stopping);
    }

    #[test]
    fn drops_malformed_datagrams() {
        assert_eq!(parse(b"READY=1\0"), None);
        assert_eq!(parse(b"\xff\xfe"), None);
        assert_eq!(parse(&vec![b'a'; MAX_DATAGRAM + 1]), None);
        // Lines without '=' and wrong values are ignored, not fatal.
        let n = parse(b"garbage\nREADY=yes\nMAINPID=abc").unwrap();
        assert_eq!(n, Notification::default());
    }

    #[test]
    fn status_is_bounded() {
        let long = format!("STATUS={}", "x".repeat(1000));
        assert_eq!(
            parse(long.as_bytes()).unwrap().status.unwrap().len(),
            MAX_STATUS
        );
    }

    #[test]
    fn socket_path_fits_sun_path() {
        let dir = Path::new("/tmp/short");
        assert_eq!(
            socket_path(dir, "mailer", 2),
            Path::new("/tmp/short/mailer.2.notify")
        );
        let dir64 = PathBuf::from(format!("/{}", "d".repeat(63)));
        let name = "n".repeat(52);
        let p = socket_path(&dir64, &name, 1);
        assert!(p.as_os_str().len() <= SUN_PATH_MAX, "{}", p.display());
        assert!(p.starts_with(&dir64));
        assert_ne!(p, socket_path(&dir64, &name, 2));
        assert_eq!(p, socket_path(&dir64, &name, 1), "stable");
        let huge = PathBuf::from(format!("/{}", "d".repeat(100)));
        let other = PathBuf::from(format!("/{}", "e".repeat(100)));
        let f = socket_path(&huge, &name, 1);
        assert!(f.starts_with(fallback_dir()), "{}", f.display());
        assert!(f.as_os_str().len() <= SUN_PATH_MAX, "{}", f.display());
        assert_ne!(f, socket_path(&other, &name, 1), "one per PID directory");
        assert_ne!(f, socket_path(&huge, &name, 2));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }
    }
}
