//! Read-only inspection, stopping and rolling restarts: what `--check`,
//! `--status`, `--stop` and `--restart` do, as library calls that return
//! typed reports.
//!
//! Inspection never creates a file and never takes a slot: it opens slot
//! files read-only and holds a shared lock for an instant to learn whether
//! an exclusive holder exists (see `slot.rs` for why that cannot make a
//! concurrent start fail). A slot is *held* exactly when its file is
//! locked; the PID inside is shown only after `/proc` confirms that the
//! process holds the lock, and only such verified processes are signalled.
//!
//! A held slot is not necessarily a *running* peer: its holder publishes
//! its phase in the state file beside the PID file (`state.rs`), and a
//! supervisor that is backing off between runs, waiting for READY=1,
//! stopping COMMAND, or gone while COMMAND still holds the lock (orphaned)
//! holds a slot without serving. [`SlotStatus`] names every state a reader
//! can tell apart; only [`SlotStatus::Running`] counts toward `--check`'s
//! K. A slot nobody holds may still say something: a stale PID file, or a
//! `failed` tombstone that a supervisor left when it gave up.
//!
//! - [`check`] and [`judge`]: the verdict of `--check`;
//! - [`status`], [`status_all`], [`names`]: the slots of one name or all;
//!   [`to_text`], [`to_json`], [`to_prometheus`] format them;
//! - [`stop`]: SIGTERM, a grace, SIGKILL, until every lock is released;
//! - [`restart`]: one slot at a time, through each supervisor.

#![warn(missing_docs)]

mod check;
mod format;
mod restart;
mod scan;
mod stop;

pub use check::{CheckResult, Health, check, judge, judge_all};
pub use format::{to_json, to_prometheus, to_text};
pub use restart::{RestartOutcome, restart};
pub use scan::{Holder, Scan, SlotReport, SlotStatus, names, status, status_all};
pub use stop::{StopOutcome, stop};

use std::time::{Duration, Instant};

/// Polls `done` with a growing pause until it holds or `deadline` passes.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut pause = Duration::from_millis(2);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Milliseconds since the epoch, now.
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `1, 2, 3`: PIDs for a message.
pub(crate) fn join_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A published last exit (`status 1`, `signal 15`) in words: `exit status
/// 1`, `killed by signal 15 (SIGTERM)`. Anything else is shown as it is.
pub(crate) fn describe_last_exit(last_exit: &str) -> String {
    if let Some(n) = last_exit.strip_prefix("status ") {
        return format!("exit status {n}");
    }
    if let Some(n) = last_exit.strip_prefix("signal ") {
        let name = n
            .parse::<i32>()
            .ok()
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
            .map(|s| format!(" ({})", s.as_str()))
            .unwrap_or_default();
        return format!("killed by signal {n}{name}");
    }
    last_exit.to_string()
}

/// A published reason in words: a supervisor says `exit signal 15` for a
/// run's end, which reads `killed by signal 15 (SIGTERM)`.
pub(crate) fn reason_in_words(reason: String) -> String {
    match reason.strip_prefix("exit ") {
        Some(e) if e.starts_with("signal ") || e.starts_with("status ") => describe_last_exit(e),
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_exits_read_as_words() {
        assert_eq!(super::describe_last_exit("status 1"), "exit status 1");
        assert_eq!(
            super::describe_last_exit("signal 15"),
            "killed by signal 15 (SIGTERM)"
        );
        assert_eq!(
            super::describe_last_exit("signal 99"),
            "killed by signal 99"
        );
        assert_eq!(super::describe_last_exit("odd"), "odd");
        assert_eq!(
            super::reason_in_words("exit signal 9".into()),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(super::reason_in_words("recycle".into()), "recycle");
    }
}
