//! The slot's side file: what a PID file must not hold.
//!
//! The PID file holds exactly one line (the contract), so everything else a
//! status report wants (COMMAND's PID, start time, restarts, the last exit,
//! the heartbeat lease) lives in `NAME.i.state` beside it, written only by
//! the slot's holder and replaced atomically (write a temporary file, then
//! `rename`). Readers treat it as a hint: it is read only while the slot is
//! locked, read with a size bound, parsed leniently, and any PID in it is
//! verified against the process table before it is believed or signalled.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result};
use crate::pid::{pid_max, valid_signal_target};
use crate::piddir::PidDir;
use crate::slot::state_file_name;

/// Largest state file ever read.
const MAX_STATE_READ: u64 = 8192;

/// What the holder of a slot publishes about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotState {
    /// COMMAND's PID (CLI mode); `None` in library mode or between runs.
    pub child_pid: Option<i32>,
    /// The main process COMMAND named with sd_notify's MAINPID=, verified
    /// to be in COMMAND's process tree when it was received.
    pub main_pid: Option<i32>,
    /// When the slot was taken, in seconds since the epoch.
    pub started_unix: Option<u64>,
    /// How many times COMMAND was restarted.
    pub restarts: u32,
    /// How COMMAND last ended: `exit 3`, `signal 9`.
    pub last_exit: Option<String>,
    /// The heartbeat lease the holder promised, in milliseconds.
    pub lease_ms: Option<u64>,
    /// COMMAND reported READY=1 (sd_notify); `None` if not known.
    pub ready: Option<bool>,
    /// The last STATUS= text COMMAND reported.
    pub status_text: Option<String>,
    /// Age reference for the heartbeat when COMMAND speaks sd_notify: the
    /// epoch milliseconds of the last WATCHDOG=1.
    pub watchdog_unix_ms: Option<u64>,
    /// The holder refreshes its heartbeat whenever someone opens the PID
    /// file (a CLI supervisor with an inotify watch), so a reader that
    /// finds an old mtime should give it a moment to answer.
    pub answers_probes: bool,
    /// What the holder is doing (written by the supervisor on every
    /// transition; the library writes `Running`). `None` from an older
    /// writer.
    pub phase: Option<Phase>,
    /// Who holds the slot: a CLI supervisor (restartable) or a program
    /// linking the library.
    pub mode: Option<HolderMode>,
    /// When the current (or last) run of COMMAND started, epoch ms.
    pub command_started_unix_ms: Option<u64>,
    /// In `Backoff`: when the next start is due, epoch ms.
    pub next_try_unix_ms: Option<u64>,
    /// The last exit as a number: the status, or 128+N for signal N.
    pub last_exit_code: Option<i32>,
    /// One line saying why the holder is in its phase (backoff, failed,
    /// stopping).
    pub reason: Option<String>,
    /// The peer's `--stop-timeout`, in milliseconds.
    pub stop_timeout_ms: Option<u64>,
    /// How many times COMMAND was spawned in this slot (1 for the first
    /// run); `--restart` waits for it to grow.
    pub run: u64,
    /// The PID of the process that wrote the file (the supervisor or the
    /// library daemon, in its own PID namespace): stamped by
    /// [`SlotState::write`]. Readers believe the file only when this is the
    /// process proven to hold the slot's lock; a file from an earlier
    /// holder (a tombstone, a crash's leftover) says nothing about a later
    /// one.
    pub holder_pid: Option<i32>,
    /// In `Stopping`: true when the holder exits once its tree is gone (a
    /// stop was requested, or it gave up), false when it stops COMMAND to
    /// start it again (a recycle, a restart, leftovers of an exited run).
    /// A `--stop` asks a supervisor of the second kind with SIGTERM, and
    /// only waits for one of the first (a second SIGTERM cuts its grace
    /// short). `None` from a writer that does not say: taken as exiting.
    pub exiting: Option<bool>,
}

/// A slot holder's phase, as published in its state file. Readers derive
/// `orphaned`, `stale`, `unusable` and `unknown` themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// COMMAND exec'd, READY=1 not yet sent (under `--notify`).
    Starting,
    /// COMMAND runs (and is ready).
    Running,
    /// Waiting to restart COMMAND.
    Backoff,
    /// Stopping COMMAND's process tree.
    Stopping,
    /// The supervisor gave up; the state file is a tombstone.
    Failed,
}

impl Phase {
    /// The contract's state name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Backoff => "backoff",
            Phase::Stopping => "stopping",
            Phase::Failed => "failed",
        }
    }

    /// The inverse of [`Phase::as_str`].
    pub fn parse(text: &str) -> Option<Phase> {
        Some(match text {
            "starting" => Phase::Starting,
            "running" => Phase::Running,
            "backoff" => Phase::Backoff,
            "stopping" => Phase::Stopping,
            "failed" => Phase::Failed,
            _ => return None,
        })
    }
}

/// Who holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderMode {
    /// An `rdaemon` supervisor running COMMAND.
    Supervisor,
    /// A program using the library.
    Library,
}

impl SlotState {
    fn serialize(&self) -> String {
        let mut out = String::new();
        let mut field = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                // Values are single-line by construction; enforce it anyway.
                let v: String = v
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                out.push_str(&format!("{k}={v}\n"));
            }
        };
        field("child_pid", self.child_pid.map(|p| p.to_string()));
        field("main_pid", self.main_pid.map(|p| p.to_string()));
        field("started_unix", self.started_unix.map(|p| p.to_string()));
        field("restarts", Some(self.restarts.to_string()));
        field("last_exit", self.last_exit.clone());
        field("lease_ms", self.lease_ms.map(|p| p.to_string()));
        field(
            "ready",
            self.ready.map(|b| if b { "1".into() } else { "0".into() }),
        );
        field("status", self.status_text.clone());
        field(
            "watchdog_unix_ms",
            self.watchdog_unix_ms.map(|p| p.to_string()),
        );
        field("answers_probes", self.answers_probes.then(|| "1".into()));
        field("phase", self.phase.map(|p| p.as_str().into()));
        field(
            "mode",
            self.mode.map(|m| match m {
                HolderMode::Supervisor => "supervisor".into(),
                HolderMode::Library => "library".into(),
            }),
        );
        field(
            "command_started_unix_ms",
            self.command_started_unix_ms.map(|v| v.to_string()),
        );
        field(
            "next_try_unix_ms",
            self.next_try_unix_ms.map(|v| v.to_string()),
        );
        field("last_exit_code", self.last_exit_code.map(|v| v.to_string()));
        field("reason", self.reason.clone());
        field(
            "stop_timeout_ms",
            self.stop_timeout_ms.map(|v| v.to_string()),
        );
        field("run", Some(self.run.to_string()));
        field("holder_pid", self.holder_pid.map(|p| p.to_string()));
        field(
            "exiting",
            self.exiting.map(|e| if e { "1" } else { "0" }.to_string()),
        );
        out
    }

    /// Parses a state file; unknown keys and malformed values are ignored.
    pub fn parse(text: &str) -> SlotState {
        let mut st = SlotState::default();
        let max = pid_max();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "child_pid" => {
                    st.child_pid = v
                        .parse::<i64>()
                        .ok()
                        .and_then(|n| valid_signal_target(n, max))
                }
                "main_pid" => {
                    st.main_pid = v
                        .parse::<i64>()
                        .ok()
                        .and_then(|n| valid_signal_target(n, max))
                }
                "started_unix" => st.started_unix = v.parse().ok(),
                "restarts" => st.restarts = v.parse().unwrap_or(0),
                "last_exit" => st.last_exit = Some(v.chars().take(64).collect()),
                "lease_ms" => st.lease_ms = v.parse().ok(),
                "ready" => st.ready = Some(v == "1"),
                "status" => st.status_text = Some(v.chars().take(256).collect()),
                "watchdog_unix_ms" => st.watchdog_unix_ms = v.parse().ok(),
                "answers_probes" => st.answers_probes = v == "1",
                "phase" => st.phase = Phase::parse(v),
                "mode" => {
                    st.mode = match v {
                        "supervisor" => Some(HolderMode::Supervisor),
                        "library" => Some(HolderMode::Library),
                        _ => None,
                    }
                }
                "command_started_unix_ms" => st.command_started_unix_ms = v.parse().ok(),
                "next_try_unix_ms" => st.next_try_unix_ms = v.parse().ok(),
                "last_exit_code" => {
                    st.last_exit_code = v.parse().ok().filter(|c| (0..=255).contains(c))
                }
                "reason" => st.reason = Some(v.chars().take(256).collect()),
                "stop_timeout_ms" => st.stop_timeout_ms = v.parse().ok(),
                "run" => st.run = v.parse().unwrap_or(0),
                "exiting" => st.exiting = Some(v == "1"),
                // PID 1 is a valid writer (a container's init), though
                // never a signal target.
                "holder_pid" => {
                    st.holder_pid = v.parse::<i32>().ok().filter(|&n| (1..=max).contains(&n))
                }
                _ => {}
            }
        }
        st
    }

    /// Publishes this state for slot `index` of `name`, atomically, with
    /// `holder_pid` set to the calling process's PID (whatever the field
    /// says: only the slot's holder writes its state file).
    pub fn write(&self, dir: &PidDir, name: &str, index: u32) -> Result<()> {
        let stamped = SlotState {
            holder_pid: Some(std::process::id() as i32),
            ..self.clone()
        };
        let final_name = state_file_name(name, index);
        // A dot file cannot collide with any slot or state file, whose names
        // start with a letter or digit.
        let tmp_name = format!(".{final_name}.tmp");
        let tmp_path = dir.path().join(&tmp_name);
        // A leftover from a crash (or anything planted there) is unlinked,
        // never followed: unlink removes a symlink itself, not its target.
        match unlinkat(dir.fd(), tmp_name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::io("remove", &tmp_path, e.into())),
        }
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            dir.fd(),
            tmp_name.as_str(),
            flags,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| Error::io("create", &tmp_path, e.into()))?;
        let _ = nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o644));
        let mut file = File::from(fd);
        if let Err(e) = file.write_all(stamped.serialize().as_bytes()) {
            let _ = unlinkat(dir.fd(), tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(Error::io("write", &tmp_path, e));
        }
        renameat(dir.fd(), tmp_name.as_str(), dir.fd(), final_name.as_str()).map_err(|e| {
            // E.g. a directory planted at the final path: leave no litter.
            let _ = unlinkat(dir.fd(), tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
            Error::io("rename into place", dir.path().join(&final_name), e.into())
        })
    }

    /// Reads slot `index`'s state; `None` when missing or unreadable.
    pub fn read(dir: &PidDir, name: &str, index: u32) -> Option<SlotState> {
        let file_name = state_file_name(name, index);
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY;
        let fd = openat(dir.fd(), file_name.as_str(), flags, Mode::empty()).ok()?;
        let st = nix::sys::stat::fstat(fd.as_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let mut text = String::new();
        File::from(fd)
            .take(MAX_STATE_READ)
            .read_to_string(&mut text)
            .ok()?;
        Some(SlotState::parse(&text))
    }
}

/// The name a tombstone waits under while its slot is released.
fn tombstone_stage_name(name: &str, index: u32) -> String {
    format!(".{}.tomb", state_file_name(name, index))
}

/// Keeps slot `index`'s current state file as a tombstone through the
/// slot's release (which removes the state file): a second link is made
/// to it under a dot-file name. Call [`place_tombstone`] once the slot is
/// released.
pub fn stage_tombstone(dir: &PidDir, name: &str, index: u32) -> Result<()> {
    let stage = tombstone_stage_name(name, index);
    match unlinkat(dir.fd(), stage.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::io("remove", dir.path().join(&stage), e.into())),
    }
    let file_name = state_file_name(name, index);
    nix::unistd::linkat(
        dir.fd(),
        file_name.as_str(),
        dir.fd(),
        stage.as_str(),
        nix::fcntl::AtFlags::empty(),
    )
    .map_err(|e| Error::io("keep as tombstone", dir.path().join(&file_name), e.into()))
}

/// Puts a staged tombstone back under the state file's name, unless the
/// slot's next holder has already written its own state there (which then
/// wins: a tombstone lasts only until the slot's next start).
pub fn place_tombstone(dir: &PidDir, name: &str, index: u32) -> Result<()> {
    let stage = tombstone_stage_name(name, index);
    let file_name = state_file_name(name, index);
    // linkat() never replaces an existing name: the atomic "no replace"
    // that renameat2(RENAME_NOREPLACE) would give, in POSIX (and in musl,
    // whose nix lacks renameat2).
    let placed = nix::unistd::linkat(
        dir.fd(),
        stage.as_str(),
        dir.fd(),
        file_name.as_str(),
        nix::fcntl::AtFlags::empty(),
    );
    let _ = unlinkat(dir.fd(), stage.as_str(), UnlinkatFlags::NoRemoveDir);
    match placed {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::io(
            "leave tombstone",
            dir.path().join(&file_name),
            e.into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let st = SlotState {
            child_pid: Some(1240),
            main_pid: Some(1241),
            started_unix: Some(1_790_000_000),
            restarts: 2,
            last_exit: Some("signal 9".into()),
            lease_ms: Some(30_000),
            ready: Some(true),
            status_text: Some("working\non it".into()),
            watchdog_unix_ms: Some(5),
            answers_probes: true,
            phase: Some(Phase::Backoff),
            mode: Some(HolderMode::Supervisor),
            command_started_unix_ms: Some(1_790_000_100_000),
            next_try_unix_ms: Some(1_790_000_104_000),
            last_exit_code: Some(137),
            reason: Some("exit status 1".into()),
            stop_timeout_ms: Some(30_000),
            run: 3,
            holder_pid: Some(1234),
            exiting: Some(false),
        };
        let back = SlotState::parse(&st.serialize());
        assert!(back.answers_probes);
        assert!(!SlotState::parse(&SlotState::default().serialize()).answers_probes);
        assert_eq!(back.child_pid, Some(1240));
        assert_eq!(back.exiting, Some(false));
        assert_eq!(back.main_pid, Some(1241));
        assert_eq!(back.restarts, 2);
        assert_eq!(back.status_text.as_deref(), Some("working on it"));
        assert_eq!(back.ready, Some(true));
        assert_eq!(
            back,
            SlotState {
                status_text: back.status_text.clone(),
                ..st
            }
        );
    }

    #[test]
    fn hostile_content_is_ignored() {
        let st = SlotState::parse("child_pid=1\nchild_pid=-5\nrestarts=x\nstarted_unix=\0\n=\n\n");
        assert_eq!(st.child_pid, None);
        assert_eq!(st.restarts, 0);
        assert_eq!(SlotState::parse("child_pid=0").child_pid, None);
    }
}
