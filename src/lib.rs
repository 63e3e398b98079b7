//! rdaemon lets a long-running Rust program be a well-behaved Unix daemon
//! among N peers, seen and stopped by the `rdaemon` command like any daemon
//! it starts.
//!
//! A name may run as at most N peers. Each peer holds one PID file, locked
//! with `flock` for its whole life: a slot is held if and only if its file
//! is locked, so a crash frees it at once and a stale file never blocks a
//! start. [`Daemon`] takes a slot in the calling process and gives the work
//! loop a cheap [`Daemon::heartbeat`]:
//!
//! ```
//! use std::time::Duration;
//! use rdaemon::{Daemon, StopReason};
//! # fn do_one_job() {}
//! # fn main() -> Result<(), rdaemon::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let mut daemon = Daemon::builder("mailer")
//!     .max_peers(3)                           // default 1
//!     # .pid_dir(dir.path().join("run"))
//!     .lease(Duration::from_secs(30))         // heartbeat lease seen by --check --max-age
//!     .memory_limit(512 << 20)                // bytes of RSS; optional
//!     .max_jobs(10_000)                       // heartbeat() is true at most this often
//!     .max_runtime(Duration::from_secs(3600)) // optional
//!     .stop_signals(&[libc::SIGTERM, libc::SIGINT]) // SIGHUP stays ours
//!     .build()?;
//! daemon.start()?;                   // Err: every slot busy (names holders), bad name, I/O
//! let stop = daemon.stop_token();    // for other threads and event loops
//! # stop.request();
//! while daemon.heartbeat() {         // cheap enough to call once per job
//!     do_one_job();
//! }
//! eprintln!("stopping: {}", daemon.stop_reason().unwrap());
//! daemon.stop()?;                    // releases the slot and removes the PID file
//! # Ok(())
//! # }
//! ```
//!
//! - [`Daemon`], [`Builder`]: take a slot, heartbeat, limits (jobs, run
//!   time, memory), sd_notify (READY=1, STATUS=, WATCHDOG=1, STOPPING=1).
//! - [`StopToken`]: see and request the stop from other threads, or wait
//!   for it in `poll`, epoll or tokio's `AsyncFd`; no `Arc<Mutex<Daemon>>`.
//! - [`StopReason`]: why the loop stopped.
//! - [`Error`], [`ErrorKind`], [`Result`]: errors that name the file and
//!   the cause.
//! - [`inspect`]: what `rdaemon --check`, `--status` and `--stop` do, as
//!   library calls: never taking a slot, signalling only processes proven
//!   to hold one.
//!
//! Conventions for every public function: sizes are bytes and times are
//! [`Duration`](std::time::Duration)s; failures are an [`Error`] that
//! names the file or system call and the cause; nothing panics on anything
//! from the outside world; nothing blocks except [`Daemon::start`] (a
//! slot that a `--check` reader has locked for an instant is retried for
//! up to 3 s), [`StopToken::wait_timeout`] (up to its timeout) and the
//! [`inspect`] calls that wait for peers to answer or stop.
//!
//! Features: `cli` (default) builds the `rdaemon` command (clap, the
//! supervisor, detaching). A program that only links the library uses
//! `default-features = false` and compiles none of it.

// Without the CLI, parts of the shared layers (slot, state, proc) that only
// the supervisor uses are unused.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod commands;
mod daemon;
#[cfg(feature = "cli")]
mod detach;
mod error;
// Fleet-wide slots on etcd (feature `etcd`; the CLI needs it). Public
// only for its integration tests: not API.
#[cfg(feature = "etcd")]
#[doc(hidden)]
pub mod etcd;
#[cfg(feature = "cli")]
mod exit_code;
// The inspect rewrite documents its public items; until it lands here its
// undocumented fields are not this crate's only public API to check.
#[allow(missing_docs)]
pub mod inspect;
#[cfg(feature = "cli")]
mod logger;
mod memory;
mod name;
#[cfg(feature = "cli")]
mod output;
mod pid;
mod piddir;
mod proc;
mod signals;
mod size;
mod slot;
mod state;
#[cfg(feature = "cli")]
mod supervisor;
mod timefmt;

pub use daemon::{Builder, Daemon, StopReason, StopToken};
pub use error::{Error, ErrorKind, Result};
pub use pid::Pid;

/// What the `rdaemon` binary and its generated-file tests need. **Not
/// API**: hidden, unstable, and may change in any release.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod __cli {
    pub use crate::cli::Cli;
    pub use crate::commands::run;
    pub use crate::exit_code::ExitCode;
    pub use crate::logger::init as init_logging;

    /// What the binary needs of std's runtime set-up, which its C `main`
    /// skips: descriptors 0, 1 and 2 open (on /dev/null when the caller
    /// closed one, so that no file rdaemon opens lands there and is
    /// written to by mistake), and SIGPIPE ignored (a closed pipe is an
    /// error to report, not a silent death), as std does before `main`.
    pub fn enter() {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        // SAFETY: poll on a local array of three entries.
        let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
        if polled < 0 {
            // poll can fail where fcntl cannot (a descriptor limit below
            // 3, no memory): ask each descriptor, as std does then.
            for pfd in &mut fds {
                // SAFETY: F_GETFD only reads the descriptor's flags.
                if unsafe { libc::fcntl(pfd.fd, libc::F_GETFD) } < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                {
                    pfd.revents = libc::POLLNVAL;
                }
            }
        }
        {
            for pfd in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
                // SAFETY: open(2) of a constant path; the descriptor is the
                // lowest free one, `pfd.fd` itself, and stays open for good.
                let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
                if fd != pfd.fd {
                    // SAFETY: abort(3) has no preconditions; as std does
                    // when it cannot repair a standard descriptor.
                    unsafe { libc::abort() };
                }
            }
        }
        // SAFETY: setting a disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }

    /// Flushes standard output (std's runtime does so after `main`) and
    /// turns `code` into the process's exit status.
    pub fn exit_with(code: ExitCode) -> i32 {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        i32::from(code)
    }
}

/// `SIGTERM` for 15, `signal 99` for what has no name.
pub(crate) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}
