//! rdaemon turns any program into a well-behaved Unix daemon, and lets a
//! Rust program be one itself.
//!
//! - **Slots.** NAME may run as at most N peers. Each peer holds one PID
//!   file locked with `flock` for its whole life; a slot is held if and only
//!   if its file is locked, so a crash frees it at once and a stale file
//!   never blocks a start ([`slot`]).
//! - **Library mode.** [`Daemon`] takes a slot in the calling process and
//!   offers a cheap [`Daemon::heartbeat`] for the work loop.
//! - **CLI mode.** The `rdaemon` binary detaches ([`detach`]) and runs
//!   COMMAND under a [`supervisor`] that holds the slot.
//! - **Inspection.** [`inspect`] answers `--check`, `--status` and `--stop`
//!   without ever taking a slot, and signals only processes proven to hold
//!   one.
//!
//! See `Daemon` for the library loop.

pub mod cli;
pub mod commands;
mod daemon;
pub mod detach;
mod error;
// Fleet-wide slots on etcd (feature `etcd`; the CLI needs it).
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod exit_code;
pub mod inspect;
pub mod logger;
mod memory;
pub mod name;
pub mod output;
pub mod pid;
pub mod piddir;
pub mod proc;
mod signals;
pub mod size;
pub mod slot;
pub mod state;
pub mod supervisor;
mod timefmt;

pub use daemon::{Builder, Daemon, KILL_SIGNALS, StopReason};
pub use error::{Error, ErrorKind, Result};
pub use exit_code::ExitCode;

/// `SIGTERM` for 15, `signal 99` for what has no name.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}
