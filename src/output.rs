//! Where COMMAND's output and rdaemon's own events go.
//!
//! COMMAND's stdout and stderr are pipes that the supervisor reads and
//! splits into lines; each line is then written with one `write()` to an
//! append-only log file, or sent as one datagram to syslog. Sitting in
//! between costs a copy but buys three things an operator needs:
//!
//! - **rotation without copytruncate**: before writing, at most once a
//!   second, the supervisor checks whether the log path still names the file
//!   it has open, and reopens it if logrotate moved it away;
//! - **no stalls**: the syslog socket is non-blocking and a full disk fails
//!   fast, so a dead syslogd or ENOSPC drops lines (counted, and reported in
//!   the log once it works again) instead of blocking COMMAND on a full pipe;
//! - **one stream**: rdaemon's own events (started, exited, restarting,
//!   memory ceiling, lock lost, stopping) land in the same place, in order.

use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The syslog socket used when none is given.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// Longest line passed on in one piece; longer lines are split.
pub const MAX_LINE: usize = 8192;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// rdaemon's own event.
    Event,
}

/// An append-only log file that follows rotation.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    ino: (u64, u64),
    checked: Instant,
}

impl LogFile {
    /// Opens (creating, mode 0640) `path` for appending. A symlink at the
    /// path is refused, so a root supervisor cannot be tricked into
    /// appending to another file.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            // O_NONBLOCK: a FIFO planted at the path must not hang the
            // supervisor in open(); it is refused just below.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        // O_NOFOLLOW stops symlinks, not hard links: a link planted in a
        // shared directory must not make a root supervisor append to the
        // file it points to.
        if meta.nlink() > 1 {
            return Err(io::Error::other(format!(
                "it has {} hard links",
                meta.nlink()
            )));
        }
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
        )?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            ino: (meta.dev(), meta.ino()),
            checked: Instant::now(),
        })
    }

    fn reopen_if_rotated(&mut self) {
        if self.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.checked = Instant::now();
        let rotated = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.ino,
            Err(_) => true,
        };
        if rotated && let Ok(fresh) = LogFile::open(&self.path) {
            *self = fresh;
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.reopen_if_rotated();
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        // O_APPEND: one write() is one line, even with other writers.
        let n = self.file.write(&buf)?;
        if n != buf.len() {
            return Err(io::Error::new(ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }
}

/// A syslog client that never blocks: RFC 3164 datagrams on a non-blocking
/// Unix socket. libc's syslog(3) is not used because it blocks when the
/// socket's queue is full (it calls send() without MSG_DONTWAIT) and keeps
/// process-global state; here a full queue or a dead syslogd drops the line
/// and counts it.
#[derive(Debug)]
pub struct Syslog {
    socket_path: PathBuf,
    sock: Option<UnixDatagram>,
    tag: String,
    pid: u32,
    last_connect: Option<Instant>,
}

/// LOG_DAEMON facility.
const FACILITY_DAEMON: u8 = 3 << 3;
const LOG_ERR: u8 = 3;
const LOG_NOTICE: u8 = 5;
const LOG_INFO: u8 = 6;

impl Syslog {
    pub fn new(socket_path: &Path, tag: &str) -> Syslog {
        let mut s = Syslog {
            socket_path: socket_path.to_path_buf(),
            sock: None,
            tag: tag.to_string(),
            pid: std::process::id(),
            last_connect: None,
        };
        s.connect();
        s
    }

    fn connect(&mut self) {
        self.last_connect = Some(Instant::now());
        self.sock = UnixDatagram::unbound()
            .and_then(|s| {
                s.connect(&self.socket_path)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .ok();
    }

    fn send(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        if self.sock.is_none()
            && self
                .last_connect
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.connect();
        }
        let Some(sock) = &self.sock else {
            return Err(io::Error::new(ErrorKind::NotConnected, "no syslog socket"));
        };
        let severity = match stream {
            Stream::Stdout => LOG_INFO,
            Stream::Stderr => LOG_ERR,
            Stream::Event => LOG_NOTICE,
        };
        let mut msg = format!(
            "<{}>{}[{}]: ",
            FACILITY_DAEMON | severity,
            self.tag,
            self.pid
        )
        .into_bytes();
        msg.extend_from_slice(line);
        match sock.send(&msg) {
            Ok(_) => Ok(()),
            Err(e) => {
                // The daemon may have restarted: reconnect on a later line.
                if e.kind() != ErrorKind::WouldBlock {
                    self.sock = None;
                }
                Err(e)
            }
        }
    }
}

/// The destination of output lines.
#[derive(Debug)]
pub enum Sink {
    File(LogFile),
    Syslog(Syslog),
    /// Foreground without `--log`/`--syslog`: COMMAND writes to rdaemon's
    /// own stdout/stderr directly; events go to stderr.
    Stderr,
}

/// The output side of a supervisor.
#[derive(Debug)]
pub struct Output {
    sink: Sink,
    name: String,
    dropped: u64,
    /// `--timestamps`: the slot's label (`mailer.2`) that follows the time.
    stamp: Option<String>,
}

impl Output {
    pub fn new(sink: Sink, name: &str) -> Output {
        Output {
            sink,
            name: name.to_string(),
            dropped: 0,
            stamp: None,
        }
    }

    /// `--timestamps`: prefix every line written to a log file with an
    /// RFC 3339 UTC time (milliseconds) and `label` (`mailer.2`), as in
    /// `2026-11-29T12:00:00.123Z mailer.2: text`. Syslog and a terminal
    /// keep their own framing.
    pub fn with_timestamps(mut self, label: String) -> Output {
        self.stamp = Some(label);
        self
    }

    fn stamped(&self, line: &[u8]) -> Option<Vec<u8>> {
        let label = self.stamp.as_ref()?;
        if !matches!(self.sink, Sink::File(_)) {
            return None;
        }
        let mut out = format!(
            "{} {label}: ",
            crate::timefmt::rfc3339_utc_ms(SystemTime::now())
        )
        .into_bytes();
        out.extend_from_slice(line);
        Some(out)
    }

    /// Whether COMMAND's output must be captured through pipes.
    pub fn captures(&self) -> bool {
        !matches!(self.sink, Sink::Stderr)
    }

    /// Writes one line from `stream`; never blocks, never fails loudly.
    pub fn line(&mut self, stream: Stream, line: &[u8]) {
        if self.dropped > 0 {
            let note = format!(
                "rdaemon[{}]: {} line(s) of output were dropped (log unwritable)",
                std::process::id(),
                self.dropped
            );
            if self.emit(Stream::Event, note.as_bytes()).is_ok() {
                self.dropped = 0;
            }
        }
        let stamped = match stream {
            Stream::Event => None,
            _ => self.stamped(line),
        };
        if self
            .emit(stream, stamped.as_deref().unwrap_or(line))
            .is_err()
        {
            self.dropped += 1;
        }
    }

    /// Writes an rdaemon event: timestamped in a file, tagged in syslog.
    pub fn event(&mut self, msg: &str) {
        let text = match self.sink {
            Sink::File(_) if self.stamp.is_some() => format!(
                "{} {}: rdaemon[{}]: {msg}",
                crate::timefmt::rfc3339_utc_ms(SystemTime::now()),
                self.stamp.as_deref().unwrap_or_default(),
                std::process::id()
            ),
            Sink::File(_) => format!(
                "{} rdaemon[{}]: {}: {msg}",
                crate::timefmt::rfc3339_utc(SystemTime::now()),
                std::process::id(),
                self.name
            ),
            Sink::Syslog(_) => format!("rdaemon: {msg}"),
            Sink::Stderr => format!("rdaemon: {}: {msg}", self.name),
        };
        self.line(Stream::Event, text.as_bytes());
    }

    fn emit(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::File(f) => f.write_line(line),
            Sink::Syslog(s) => s.send(stream, line),
            Sink::Stderr => {
                let mut err = io::stderr().lock();
                err.write_all(line)?;
                err.write_all(b"\n")
            }
        }
    }

    /// Lines dropped and not yet reported.
    #[allow(dead_code)] // was public API; kept for the output rewrite
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Splits a byte stream into lines, for one pipe.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Feeds `data`; calls `emit` for each complete line (without `\n`), and
    /// for each `MAX_LINE` piece of an overlong line.
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            emit(&self.pending[start..start + nl]);
            start += nl + 1;
        }
        while self.pending.len() - start >= MAX_LINE {
            emit(&self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    /// Emits whatever partial line remains.
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_reads() {
        let mut lb = LineBuffer::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        lb.feed(b"hel", |l| got.push(l.to_vec()));
        lb.feed(b"lo\nwor", |l| got.push(l.to_vec()));
        lb.feed(b"ld\n\nx", |l| got.push(l.to_vec()));
        lb.flush(|l| got.push(l.to_vec()));
        assert_eq!(
            got,
            vec![
                b"hello".to_vec(),
                b"world".to_vec(),
                b"".to_vec(),
                b"x".to_vec()
            ]
        );
    }

    #[test]
    fn splits_overlong_lines() {
        let mut lb = LineBuffer::default();
        let mut n = 0;
        lb.feed(&vec![b'a'; MAX_LINE * 2 + 5], |l| {
            assert!(l.len() <= MAX_LINE);
            n += 1;
        });
        assert_eq!(n, 2);
    }

    #[test]
    fn timestamps_prefix_command_lines_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut out = Output::new(Sink::File(LogFile::open(&path).unwrap()), "mailer")
            .with_timestamps("mailer.2".into());
        out.line(Stream::Stdout, b"hello");
        out.event("exited");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            let (ts, rest) = line.split_once(' ').unwrap();
            assert_eq!(ts.len(), "2026-11-29T12:00:00.123Z".len(), "{line}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{line}");
            assert!(rest.starts_with("mailer.2: "), "{line}");
        }
        assert!(lines[0].ends_with(" mailer.2: hello"));
        assert!(lines[1].ends_with(": exited") && lines[1].contains("rdaemon["));
    }

    #[test]
    fn syslog_without_daemon_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Output::new(
            Sink::Syslog(Syslog::new(&dir.path().join("nope"), "t")),
            "t",
        );
        out.line(Stream::Stdout, b"lost");
        assert_eq!(out.dropped(), 1);
    }
}
