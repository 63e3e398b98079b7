//! COMMAND's whole process tree, owned by the supervisor.
//!
//! The supervisor makes itself a *child subreaper*
//! (`PR_SET_CHILD_SUBREAPER`): a descendant whose parent exits is handed to
//! the supervisor instead of to init, so children that double-fork, call
//! `setsid()` or change their process group stay in the tree rooted at the
//! supervisor. Three consequences carry the rest of the design:
//!
//! - **The tree is empty exactly when the supervisor has no child.** Every
//!   descendant has a chain of parents that ends at the supervisor, so it
//!   has at least one child (at worst a zombie) while anything of the tree
//!   exists. [`is_empty`] asks `waitid(P_ALL, WNOHANG|WNOWAIT)`: no timer, no
//!   `/proc` scan, no race with a process forked at the wrong moment.
//! - **No wake-up is needed to watch it.** The tree can only become empty
//!   when the last direct child exits, and that raises SIGCHLD: the
//!   supervisor sleeps in `poll()` until then.
//! - **Signals reach only our own processes.** A direct child's PID cannot
//!   be reused until the supervisor reaps it, and reaping happens on the
//!   same thread as signalling, so `kill()` on a child is safe. A deeper
//!   descendant is first pinned with a pidfd, then proven to be ours by
//!   walking its parent links up to the supervisor, then signalled through
//!   the pidfd: a PID reused before the pidfd was opened fails the proof,
//!   one reused after it fails with ESRCH. Without pidfds (kernels before
//!   5.3) the proof is done right before `kill()`.
//!
//! A zombie leader is not a dead process: a program whose main thread
//! called `pthread_exit` shows `Z` while its other threads run. It counts
//! as live, is signalled through its PID (which reaches its threads) and
//! is measured through a running thread (see `crate::proc`). Only when its
//! last thread is gone does the kernel report it to us, as a zombie to
//! reap with the rest; until then `waitid` does not see it as exited.
//!
//! A supervisor that is PID 1 (a container's init) gets every orphan of
//! its namespace anyway; it reaps them all with the same loop.

use std::io;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use crate::proc::{Pidfd, descendants_of, descends_from, pid_running, running, stat};

/// Becomes a child subreaper. Fails only on kernels before 3.4.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(N)`.
    Code(i32),
    /// Killed by signal N.
    Signal(i32),
}

impl ExitStatus {
    /// `status N` / `signal N`, as the state file and `--status` spell it.
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("status {c}"),
            ExitStatus::Signal(s) => format!("signal {s}"),
        }
    }

    /// The shell's number: the status, or 128+N for signal N.
    pub fn number(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c & 0xff,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// Reaps every child that has exited (COMMAND, leftovers handed to us,
/// orphans of the namespace when we are PID 1), without blocking.
pub fn reap_all() -> Vec<(i32, ExitStatus)> {
    let mut out = Vec::new();
    // Bounded, so a fork bomb cannot keep the loop here forever.
    for _ in 0..4096 {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), ExitStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {} // stopped/continued: not asked for, but harmless
        }
    }
    out
}

/// Whether no process of the tree is left: the supervisor has no child,
/// not even an unreaped zombie.
pub fn is_empty() -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}

/// Sends `sig` to `pid`, a process of our tree, only if it provably still
/// is one (see the module essay).
pub fn signal_ours(pid: i32, sig: i32) -> io::Result<()> {
    let me = std::process::id() as i32;
    let Some(st) = stat(pid) else {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    };
    if st.ppid == me {
        // Our unreaped child: its PID cannot have been reused.
        return nix::sys::signal::kill(Pid::from_raw(pid), signal(sig)?).map_err(io::Error::from);
    }
    match Pidfd::open(pid) {
        Ok(fd) => {
            if !descends_from(pid, me) {
                return Err(io::Error::other(format!(
                    "PID {pid} is no longer a process of COMMAND's tree"
                )));
            }
            fd.signal(sig)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            if !descends_from(pid, me) {
                return Err(io::Error::other(format!(
                    "PID {pid} is no longer a process of COMMAND's tree"
                )));
            }
            nix::sys::signal::kill(Pid::from_raw(pid), signal(sig)?).map_err(io::Error::from)
        }
        Err(e) => Err(e),
    }
}

fn signal(sig: i32) -> io::Result<Option<nix::sys::signal::Signal>> {
    if sig == 0 {
        return Ok(None);
    }
    nix::sys::signal::Signal::try_from(sig)
        .map(Some)
        .map_err(io::Error::from)
}

/// Sends `sig` to every live process of the tree; returns how many were
/// signalled. Zombies are skipped (a signal cannot reach them), but not a
/// zombie leader whose threads run: the signal reaches them.
pub fn signal_all(sig: i32) -> usize {
    let me = std::process::id() as i32;
    descendants_of(me)
        .into_iter()
        .filter(|&pid| pid_running(pid))
        .filter(|&pid| signal_ours(pid, sig).is_ok())
        .count()
}

/// The resident memory of every process of the tree (the supervisor's
/// own not counted), in bytes.
pub fn rss() -> u64 {
    crate::memory::descendants_rss(std::process::id() as i32)
}

/// How many processes of the tree are alive (zombies not counted, zombie
/// leaders with running threads counted).
pub fn live_count() -> usize {
    let me = std::process::id() as i32;
    descendants_of(me)
        .into_iter()
        .filter(|&pid| pid_running(pid))
        .count()
}

/// Our direct children that are alive.
pub fn live_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    crate::proc::all_pids()
        .filter(|&pid| stat(pid).is_some_and(|st| st.ppid == me && running(&st)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_spelling() {
        assert_eq!(ExitStatus::Code(3).describe(), "status 3");
        assert_eq!(ExitStatus::Signal(9).describe(), "signal 9");
        assert_eq!(ExitStatus::Signal(9).number(), 137);
        assert_eq!(ExitStatus::Code(256 + 4).number(), 4);
    }

    #[test]
    fn a_process_descends_from_itself_and_init_not_from_us() {
        let me = std::process::id() as i32;
        assert!(descends_from(me, me));
        assert!(!descends_from(1, me));
    }

    #[test]
    fn signalling_a_stranger_is_refused() {
        // PID 1 is never a process of our tree.
        assert!(signal_ours(1, 0).is_err());
    }
}
