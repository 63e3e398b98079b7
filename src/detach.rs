//! Detaching from the caller, and telling the caller the truth.
//!
//! ```text
//!  caller ──fork──▶ child ──setsid, fork──▶ supervisor ──spawn──▶ COMMAND
//!    │                 └─ exits at once          │
//!    └──── reads the readiness pipe ◀────────────┘ one status byte + message
//! ```
//!
//! The caller returns only after the supervisor has taken its slot and
//! COMMAND has been exec'd, so its exit status is the truth: 0 started, 75
//! busy, 126/127 not executable/not found, 1 anything else. If the
//! supervisor dies before reporting, the pipe reaches EOF and the caller
//! says so with status 1.
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

use crate::exit_code::ExitCode;
use crate::supervisor::Readiness;

/// The supervisor's end of the readiness pipe.
pub struct ReadyPipe {
    file: Option<File>,
}

impl Readiness for ReadyPipe {
    fn report(&mut self, code: ExitCode, message: &str) {
        if let Some(mut f) = self.file.take() {
            let mut msg = vec![i32::from(code) as u8];
            msg.extend_from_slice(message.as_bytes());
            // The caller may have been killed; nothing to do about that.
            let _ = f.write_all(&msg);
        }
    }
}

/// What the caller learnt.
#[derive(Debug)]
pub struct Outcome {
    pub code: ExitCode,
    pub message: String,
}

/// Forks the supervisor off and returns, in the caller, what it reported.
/// In the supervisor, `body` runs with the readiness pipe and the process
/// exits with its status; this function never returns there.
///
/// Must be called while the process is single-threaded.
pub fn detach(body: impl FnOnce(&mut ReadyPipe) -> ExitCode) -> std::io::Result<Outcome> {
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
            Ok(match buf.split_first() {
                None => Outcome {
                    code: ExitCode::Failure,
                    message: "the supervisor exited before reporting whether COMMAND started"
                        .into(),
                },
                Some((&code, msg)) => Outcome {
                    code: ExitCode::from_status(code),
                    message: String::from_utf8_lossy(msg).into_owned(),
                },
            })
        }
        ForkResult::Child => {
            drop(read_end);
            let code = in_child(write_end, body);
            std::process::exit(i32::from(code))
        }
    }
}

fn in_child(write_end: OwnedFd, body: impl FnOnce(&mut ReadyPipe) -> ExitCode) -> ExitCode {
    let mut ready = ReadyPipe {
        file: Some(File::from(write_end)),
    };
    if let Err(e) = setsid() {
        ready.report(ExitCode::Failure, &format!("setsid failed: {e}"));
        return ExitCode::Failure;
    }
    // SAFETY: still single-threaded (we are the child of a single-threaded
    // process and have started nothing).
    match unsafe { fork() } {
        Err(e) => {
            ready.report(ExitCode::Failure, &format!("second fork failed: {e}"));
            return ExitCode::Failure;
        }
        // The session leader leaves; the supervisor is orphaned to init
        // (or the nearest subreaper) and can never get a terminal.
        // SAFETY: _exit(2) only ends this process; nothing of it is used
        // after, and skipping exit handlers is the point after a fork.
        Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Ok(ForkResult::Child) => {}
    }
    if let Err(e) = prepare_process(&ready) {
        ready.report(ExitCode::Failure, &e);
        return ExitCode::Failure;
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
