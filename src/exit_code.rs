//! Every exit status rdaemon can return, in one place.
//!
//! Start uses 0/1/2/75/126/127; `--check` and `--status` use the LSB status
//! codes 0/1/3/4 plus 150 for "running but unhealthy"; `--stop` uses 0/1.
//! `--foreground` passes COMMAND's own status through.

use crate::error::{Error, ErrorKind};

/// An outcome of the `rdaemon` command and the status it exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Started; check found enough healthy peers; stop left nothing running.
    Success,
    /// Any failure not covered below (the message names the file or cause).
    Failure,
    /// Bad name, option or argument.
    Usage,
    /// `--check`: none running, but a stale PID file remains (LSB 1).
    Stale,
    /// `--check`: not running (LSB 3).
    NotRunning,
    /// `--check`: cannot tell (LSB 4).
    Unknown,
    /// Start: every slot is held by a running peer (EX_TEMPFAIL).
    Busy,
    /// COMMAND exists but cannot be executed.
    CannotExecute,
    /// COMMAND was not found.
    NotFound,
    /// `--check`: running but unhealthy (too few peers or an old heartbeat).
    Unhealthy,
    /// `--foreground`: COMMAND's own exit status, or 128+signal.
    Command(u8),
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        match code {
            ExitCode::Success => 0,
            ExitCode::Failure | ExitCode::Stale => 1,
            ExitCode::Usage => 2,
            ExitCode::NotRunning => 3,
            ExitCode::Unknown => 4,
            ExitCode::Busy => 75,
            ExitCode::CannotExecute => 126,
            ExitCode::NotFound => 127,
            ExitCode::Unhealthy => 150,
            ExitCode::Command(n) => i32::from(n),
        }
    }
}

impl ExitCode {
    /// The status a failed start reports for a library error.
    pub fn for_start_error(err: &Error) -> ExitCode {
        match err.kind() {
            ErrorKind::Usage => ExitCode::Usage,
            ErrorKind::Busy => ExitCode::Busy,
            _ => ExitCode::Failure,
        }
    }

    /// The status for COMMAND failing to exec with `errno`, as a shell would.
    pub fn for_exec_errno(errno: i32) -> ExitCode {
        if errno == libc::ENOENT {
            ExitCode::NotFound
        } else {
            ExitCode::CannotExecute
        }
    }

    /// Decodes a status byte sent over the readiness pipe.
    pub fn from_status(n: u8) -> ExitCode {
        match n {
            0 => ExitCode::Success,
            2 => ExitCode::Usage,
            75 => ExitCode::Busy,
            126 => ExitCode::CannotExecute,
            127 => ExitCode::NotFound,
            _ => ExitCode::Failure,
        }
    }
}

impl std::process::Termination for ExitCode {
    fn report(self) -> std::process::ExitCode {
        std::process::ExitCode::from(i32::from(self) as u8)
    }
}
