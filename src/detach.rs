//! Detaching from the caller, and telling the caller the truth.
//!
//! ```text
//!  caller ──fork──▶ child ──setsid, fork──▶ supervisor ──spawn──▶ COMMAND
//!    │                 └─ exits at once          │
//!    └──── reads the readiness pipe ◀────────────┘ one status byte + message
//! ```
//!
//! The caller returns only after the supervisor has taken its slot and
//! COMMAND has been exec'd, so what it learns is the truth. The pipe
//! carries a [`StartOutcome`] (started, busy, exec failed with an errno,
//! exited with a status, failed), not an exit status: `commands.rs` alone
//! maps outcomes to exit statuses. If the supervisor dies before
//! reporting, the pipe reaches EOF and the caller says so.
//!
//! The supervisor is not a session leader (so it can never acquire a
//! controlling terminal), runs in `/`, reads /dev/null, writes to /dev/null
//! until its log is open, and closes every descriptor it inherited, so that
//! `out=$(rdaemon …)` returns at once and no stray pipe is held open.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, chdir, fork, setsid};

use crate::supervisor::tree::ExitStatus;
use crate::supervisor::{Readiness, StartOutcome};

/// The supervisor's end of the readiness pipe.
pub struct ReadyPipe {
    file: Option<File>,
}

impl Readiness for ReadyPipe {
    fn report(&mut self, outcome: &StartOutcome) {
        if let Some(mut f) = self.file.take() {
            // The caller may have been killed; nothing to do about that.
            let _ = f.write_all(&encode(outcome));
        }
    }
}

/// One message on the pipe: a kind byte, a 4-byte little-endian number
/// (errno, or exit status with signals negative), then the text.
fn encode(outcome: &StartOutcome) -> Vec<u8> {
    let (kind, number): (u8, i32) = match outcome {
        StartOutcome::Started => (0, 0),
        StartOutcome::Busy(_) => (1, 0),
        StartOutcome::Usage(_) => (2, 0),
        StartOutcome::ExecFailed { errno, .. } => (3, *errno),
        StartOutcome::Exited { status, .. } => (
            4,
            match status {
                ExitStatus::Code(c) => *c,
                ExitStatus::Signal(s) => -s,
            },
        ),
        StartOutcome::Failed(_) => (5, 0),
    };
    let mut out = vec![kind];
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(outcome.message().as_bytes());
    out
}

/// The inverse of [`encode`]; `None` for a message too short to be one.
fn decode(buf: &[u8]) -> Option<StartOutcome> {
    let (&kind, rest) = buf.split_first()?;
    let number = i32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let message = String::from_utf8_lossy(&rest[4..]).into_owned();
    Some(match kind {
        0 => StartOutcome::Started,
        1 => StartOutcome::Busy(message),
        2 => StartOutcome::Usage(message),
        3 => StartOutcome::ExecFailed {
            errno: number,
            message,
        },
        4 => StartOutcome::Exited {
            status: if number < 0 {
                ExitStatus::Signal(-number)
            } else {
                ExitStatus::Code(number)
            },
            message,
        },
        _ => StartOutcome::Failed(message),
    })
}

/// Forks the supervisor off and returns, in the caller, what it reported.
/// In the supervisor, `body` runs with the readiness pipe and the process
/// exits with the status `body` returns; this function never returns
/// there.
///
/// Must be called while the process is single-threaded.
pub fn detach(body: impl FnOnce(&mut ReadyPipe) -> i32) -> std::io::Result<StartOutcome> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: rdaemon has started no threads at this point, so the child is
    // an exact, consistent copy and may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut buf = Vec::new();
            let read = File::from(read_end).read_to_end(&mut buf);
            // The intermediate child exited right after its own fork, long
            // before the supervisor reported: reaping it only now spares
            // the caller a sleep and a wakeup on the way.
            let _ = waitpid(child, None);
            read?;
            Ok(decode(&buf).unwrap_or_else(|| {
                StartOutcome::Failed(
                    "the supervisor exited before reporting whether COMMAND started".into(),
                )
            }))
        }
        ForkResult::Child => {
            drop(read_end);
            let code = in_child(write_end, body);
            std::process::exit(code)
        }
    }
}

fn in_child(write_end: OwnedFd, body: impl FnOnce(&mut ReadyPipe) -> i32) -> i32 {
    let mut ready = ReadyPipe {
        file: Some(File::from(write_end)),
    };
    fn fail(ready: &mut ReadyPipe, msg: String) -> i32 {
        ready.report(&StartOutcome::Failed(msg));
        1
    }
    if let Err(e) = setsid() {
        return fail(&mut ready, format!("setsid failed: {e}"));
    }
    // SAFETY: still single-threaded (we are the child of a single-threaded
    // process and have started nothing).
    match unsafe { fork() } {
        Err(e) => return fail(&mut ready, format!("second fork failed: {e}")),
        // The session leader leaves; the supervisor is orphaned to init
        // (or the nearest subreaper) and can never get a terminal.
        // SAFETY: _exit(2) only ends this process; nothing of it is used
        // after, and skipping exit handlers is the point after a fork.
        Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Ok(ForkResult::Child) => {}
    }
    if let Err(e) = prepare_process(&ready) {
        return fail(&mut ready, e);
    }
    body(&mut ready)
}

/// cwd `/`, stdio on /dev/null, every inherited descriptor closed except
/// the readiness pipe.
fn prepare_process(ready: &ReadyPipe) -> Result<(), String> {
    chdir("/").map_err(|e| format!("cannot chdir to /: {e}"))?;
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; both are valid.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(format!(
                "cannot redirect descriptor {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(null);
    let keep = ready.file.as_ref().map(|f| f.as_raw_fd());
    close_inherited(keep);
    Ok(())
}

/// Closes every descriptor above 2 except `keep`.
fn close_inherited(keep: Option<i32>) {
    let ranges: Vec<(u32, u32)> = match keep {
        Some(k) if k > 2 => vec![(3, k as u32 - 1), (k as u32 + 1, u32::MAX)],
        _ => vec![(3, u32::MAX)],
    };
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        // SAFETY: close_range only closes descriptors; none in these ranges
        // is owned by live Rust objects (the only one we own is `keep`).
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        if r < 0 {
            // Kernels before 5.9: fall back to closing what /proc lists.
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                let fds: Vec<i32> = dir
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect();
                for fd in fds {
                    if fd as u32 >= lo && fd as u32 <= hi {
                        // SAFETY: as above.
                        unsafe { libc::close(fd) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_pipe() {
        let all = [
            StartOutcome::Started,
            StartOutcome::Busy("held by 12".into()),
            StartOutcome::Usage("bad".into()),
            StartOutcome::ExecFailed {
                errno: libc::ENOENT,
                message: "cannot execute x".into(),
            },
            StartOutcome::Exited {
                status: ExitStatus::Signal(9),
                message: "died".into(),
            },
            StartOutcome::Exited {
                status: ExitStatus::Code(4),
                message: "exit".into(),
            },
            StartOutcome::Failed("no".into()),
        ];
        for o in all {
            assert_eq!(decode(&encode(&o)), Some(o));
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x01\x02"), None);
    }
}
