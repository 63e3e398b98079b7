//! The library's error type.
//!
//! Every variant carries what went wrong *and where*: the path, the name or
//! the PIDs involved, so that a message printed as is tells an operator what
//! to look at. The binary decides how to print and which exit status to use
//! (see `exit_code.rs`), based on [`Error::kind`].

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::pid::Pid;

/// What kind of failure an [`Error`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller asked for something malformed (bad name, zero peers).
    Usage,
    /// Every slot is held by a running peer.
    Busy,
    /// The PID directory is unsafe or unusable.
    UnsafeDir,
    /// Something that is not a usable slot file sits at a slot's path.
    UnusableSlot,
    /// A system call failed; see the I/O error.
    Io,
    /// The API was used out of order (stop before start, start twice).
    State,
}

/// An error from rdaemon's library.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The daemon name breaks the naming rules.
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A builder or command-line value is out of range.
    InvalidConfig(String),
    /// Every slot of `name` is held.
    Busy {
        /// The daemon name.
        name: String,
        /// How many slots there are, all held.
        max_peers: u32,
        /// One entry per slot: a process proven to hold its lock, or
        /// `None` where none is visible (another PID namespace, no
        /// permission to look).
        holders: Vec<Option<Pid>>,
    },
    /// The PID directory cannot be trusted or used.
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A slot's path holds something rdaemon will not touch.
    UnusableSlot {
        /// The slot file's path.
        path: PathBuf,
        /// What sits there.
        reason: String,
    },
    /// A system call on `path` failed.
    Io {
        /// What was being done ("open slot file").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A system call not tied to one path failed.
    Sys {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The API was used out of order.
    State(&'static str),
    /// All M fleet-wide slots are held (etcd); the text names the holders
    /// as host:pid.
    ClusterBusy(String),
    /// etcd could not be reached or is not an etcd v3 gateway; the text
    /// names each endpoint and the cause.
    ClusterUnavailable(String),
}

impl Error {
    /// The kind of failure, for branching without matching every variant.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName { .. } | Error::InvalidConfig(_) => ErrorKind::Usage,
            Error::Busy { .. } | Error::ClusterBusy(_) => ErrorKind::Busy,
            Error::UnsafeDir { .. } => ErrorKind::UnsafeDir,
            Error::UnusableSlot { .. } => ErrorKind::UnusableSlot,
            Error::Io { .. } | Error::Sys { .. } | Error::ClusterUnavailable(_) => ErrorKind::Io,
            Error::State(_) => ErrorKind::State,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str, source: impl Into<io::Error>) -> Error {
        Error::Sys {
            op,
            source: source.into(),
        }
    }

    /// The underlying OS error, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } | Error::Sys { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => write!(f, "invalid name \"{name}\": {reason}"),
            Error::InvalidConfig(msg) => f.write_str(msg),
            Error::Busy {
                name,
                max_peers,
                holders,
            } => {
                let pids: Vec<String> = holders
                    .iter()
                    .map(|p| p.map_or_else(|| "?".to_string(), |p| p.to_string()))
                    .collect();
                write!(
                    f,
                    "{name}: all {max_peers} slot{} busy, held by PID{} {}",
                    if *max_peers == 1 { " is" } else { "s are" },
                    if pids.len() == 1 { "" } else { "s" },
                    pids.join(", ")
                )
            }
            Error::UnsafeDir { path, reason } => {
                write!(f, "refusing PID directory {}: {reason}", path.display())
            }
            Error::UnusableSlot { path, reason } => {
                write!(
                    f,
                    "refusing slot file {}: {reason}; remove it by hand if it is not yours",
                    path.display()
                )
            }
            Error::Io { op, path, source } => write!(f, "cannot {op} {}: {source}", path.display()),
            Error::Sys { op, source } => write!(f, "cannot {op}: {source}"),
            Error::State(msg) => f.write_str(msg),
            Error::ClusterBusy(msg) | Error::ClusterUnavailable(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Sys { source, .. } => Some(source),
            _ => None,
        }
    }
}

// Errors cross threads (a worker thread's start() reported by main).
const _: () = {
    const fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Error>();
};

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
