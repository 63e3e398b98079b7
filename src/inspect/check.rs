//! `--check`: the verdict, in LSB terms, and the reasons behind it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::scan::{Depth, SlotReport, SlotStatus, scan_name};
use crate::error::Result;
use crate::piddir::PidDir;

/// The verdict of `--check`, in LSB terms.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// At least K peers run (and their heartbeats are fresh). Exit 0.
    Healthy,
    /// Slots are held, but fewer than K peers run (the others start, back
    /// off, stop or are orphaned), or a heartbeat is too old. Exit 150.
    Unhealthy,
    /// No slot is held, but a stale PID file remains. Exit 1.
    Stale,
    /// No slot is held, and a supervisor gave up: a `failed` tombstone.
    /// Exit 1.
    Failed,
    /// No peer, no trace. Exit 3.
    NotRunning,
    /// Cannot tell: unsafe directory, permission denied, unusable slot
    /// file. Exit 4.
    Unknown,
}

/// The result of [`check`]: the verdict, a one-line summary, and one line
/// for every slot that does not count as running, saying why.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The verdict.
    pub health: Health,
    /// How many peers count as running.
    pub running: u32,
    /// How many slots are held by peers still starting (no READY=1 yet).
    pub starting: u32,
    /// One line: `mailer: 1 of at least 3 peers running (3 slot(s) held)`.
    pub summary: String,
    /// One line per slot that does not count as running, saying why:
    /// `slot 2 backing off after exit status 1, next try in 4s`.
    pub reasons: Vec<String>,
}

impl CheckResult {
    fn new(health: Health, summary: String) -> CheckResult {
        CheckResult {
            health,
            running: 0,
            starting: 0,
            summary,
            reasons: Vec::new(),
        }
    }
}

/// `--check`: do at least `min_peers` peers of NAME run, each with a
/// heartbeat younger than `max_age`? Never takes a slot or creates a file;
/// with `max_age` it asks each supervisor for a fresh heartbeat and waits
/// up to a second for the answers. Problems with the directory are
/// reported as [`Health::Unknown`]; only a bad NAME is an error.
pub fn check(
    pid_dir: &Path,
    name: &str,
    min_peers: u32,
    max_age: Option<Duration>,
) -> Result<CheckResult> {
    crate::name::validate(name)?;
    let dir = match PidDir::open_existing(pid_dir) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            return Ok(CheckResult::new(
                Health::NotRunning,
                format!(
                    "{name}: not running (no PID directory {})",
                    pid_dir.display()
                ),
            ));
        }
        Err(e) => return Ok(CheckResult::new(Health::Unknown, e.to_string())),
    };
    let depth = Depth {
        heartbeats: max_age.is_some(),
        memory: false,
    };
    match scan_name(&dir, name, depth) {
        Ok(slots) => Ok(judge(name, &slots, min_peers, max_age)),
        Err(e) => Ok(CheckResult::new(Health::Unknown, e.to_string())),
    }
}

/// Why slot `s` does not count as running, in one line, or `None` when it
/// does.
pub(super) fn why_not_running(s: &SlotReport, max_age: Option<Duration>) -> Option<String> {
    let slot = s.slot;
    let exit = || {
        s.reason
            .clone()
            .or_else(|| s.last_exit.as_deref().map(super::describe_last_exit))
    };
    Some(match s.state {
        SlotStatus::Running => {
            let max = max_age?;
            match s.heartbeat_age_s {
                Some(age) if age <= max.as_secs_f64() => return None,
                Some(age) => format!(
                    "slot {slot} heartbeat is {age:.1}s old (limit {}s)",
                    max.as_secs_f64()
                ),
                None => format!("slot {slot} heartbeat age is unknown"),
            }
        }
        SlotStatus::Starting => {
            // The supervisor says what the start waits for: READY=1, or
            // the end of `--forking`'s daemonizing.
            let waits = s.reason.as_deref();
            match (s.child_pid, waits) {
                (Some(c), Some(w)) => match w.strip_prefix("COMMAND ") {
                    Some(rest) => format!("slot {slot} starting: COMMAND (PID {c}) {rest}"),
                    None => format!("slot {slot} starting (PID {c}): {w}"),
                },
                (Some(c), None) => format!("slot {slot} starting (PID {c})"),
                (None, Some(w)) => format!("slot {slot} starting: {w}"),
                (None, None) => format!("slot {slot} starting"),
            }
        }
        SlotStatus::Backoff => {
            let mut line = format!("slot {slot} backing off");
            if let Some(why) = exit() {
                // "after exit status 1", "after being killed by signal 15".
                let being = if why.starts_with("killed") {
                    "being "
                } else {
                    ""
                };
                let _ = write!(line, " after {being}{why}");
            }
            if let Some(next) = s.next_try_unix_ms {
                let secs = next.saturating_sub(super::now_unix_ms()).div_ceil(1000);
                let _ = write!(line, ", next try in {secs}s");
            }
            line
        }
        SlotStatus::Stopping => match &s.reason {
            Some(r) => format!("slot {slot} stopping: {r}"),
            None => format!("slot {slot} stopping"),
        },
        SlotStatus::Orphaned => {
            let who = match s.child_pid {
                Some(c) => format!("COMMAND (PID {c})"),
                None => "another process".to_string(),
            };
            format!(
                "slot {slot} orphaned: its supervisor is gone but {who} still holds the lock \
                 (rdaemon --stop {} --slot {slot} ends it)",
                s.name
            )
        }
        SlotStatus::Failed => {
            let mut line = format!("slot {slot} failed");
            if let Some(r) = &s.reason {
                let _ = write!(line, ": {r}");
            }
            if let Some(e) = &s.last_exit {
                let _ = write!(line, " (last run: {})", super::describe_last_exit(e));
            }
            line
        }
        SlotStatus::Stale => format!("slot {slot} stale: nobody holds {}", s.pid_file.display()),
        SlotStatus::Unusable | SlotStatus::Unknown => format!(
            "slot {slot} {}: {}: {}",
            s.state.as_str(),
            s.pid_file.display(),
            s.detail.as_deref().unwrap_or("cannot examine it")
        ),
    })
}

/// Turns one name's slots into a verdict (shared by `--check` and
/// `--status`).
pub fn judge(
    name: &str,
    slots: &[SlotReport],
    min_peers: u32,
    max_age: Option<Duration>,
) -> CheckResult {
    let reasons: Vec<String> = slots
        .iter()
        .filter_map(|s| why_not_running(s, max_age))
        .collect();
    let count = |f: fn(SlotStatus) -> bool| slots.iter().filter(|s| f(s.state)).count();
    let running = count(SlotStatus::is_up);
    let held = count(SlotStatus::is_held);
    let stale = count(|s| s == SlotStatus::Stale);
    let failed = count(|s| s == SlotStatus::Failed);
    let old_heartbeat = slots.iter().any(|s| {
        s.state.is_up()
            && max_age.is_some_and(|max| s.heartbeat_age_s.is_none_or(|a| a > max.as_secs_f64()))
    });
    let (health, summary) = if let Some(bad) = slots
        .iter()
        .find(|s| matches!(s.state, SlotStatus::Unusable | SlotStatus::Unknown))
    {
        (
            Health::Unknown,
            format!(
                "{name}: cannot tell: slot file {}: {}",
                bad.pid_file.display(),
                bad.detail.as_deref().unwrap_or("cannot examine it")
            ),
        )
    } else if held == 0 && failed > 0 {
        (
            Health::Failed,
            format!("{name}: not running; {failed} slot(s) failed (the supervisor gave up)"),
        )
    } else if held == 0 && stale > 0 {
        (
            Health::Stale,
            format!("{name}: not running, {stale} stale PID file(s)"),
        )
    } else if held == 0 {
        (Health::NotRunning, format!("{name}: not running"))
    } else if (running as u64) < u64::from(min_peers) {
        (
            Health::Unhealthy,
            format!(
                "{name}: {running} of at least {min_peers} peers running ({held} slot(s) held)"
            ),
        )
    } else if old_heartbeat {
        (
            Health::Unhealthy,
            format!("{name}: {running} peer(s) running, but a heartbeat is too old"),
        )
    } else {
        (
            Health::Healthy,
            format!("{name}: {running} peer(s) running"),
        )
    };
    CheckResult {
        health,
        running: running as u32,
        starting: count(|s| s == SlotStatus::Starting) as u32,
        summary,
        reasons,
    }
}

/// The verdict over several names (`--status` without NAME): the worst of
/// each name's own (K = 1), in the order cannot tell, unhealthy, failed,
/// stale, not running; healthy when every name is. `NotRunning` when there
/// are no slots at all.
pub fn judge_all(slots: &[SlotReport]) -> Health {
    let mut names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    let verdicts: Vec<Health> = names
        .iter()
        .map(|n| {
            let own: Vec<SlotReport> = slots.iter().filter(|s| s.name == *n).cloned().collect();
            judge(n, &own, 1, None).health
        })
        .collect();
    if verdicts.is_empty() {
        return Health::NotRunning;
    }
    for worst in [
        Health::Unknown,
        Health::Unhealthy,
        Health::Failed,
        Health::Stale,
        Health::NotRunning,
    ] {
        if verdicts.contains(&worst) {
            return worst;
        }
    }
    Health::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn slot(n: u32, state: SlotStatus) -> SlotReport {
        let mut s = SlotReport::new("w", n, PathBuf::from(format!("/run/rdaemon/w.{n}.pid")));
        s.state = state;
        s
    }

    #[test]
    fn only_running_peers_count() {
        use SlotStatus::*;
        let h = |slots: &[SlotReport], k| judge("w", slots, k, None).health;
        assert_eq!(h(&[], 1), Health::NotRunning);
        assert_eq!(h(&[slot(1, Running)], 1), Health::Healthy);
        assert_eq!(
            h(&[slot(1, Running), slot(2, Backoff)], 2),
            Health::Unhealthy
        );
        for held in [Starting, Backoff, Stopping, Orphaned] {
            assert_eq!(h(&[slot(1, held)], 1), Health::Unhealthy, "{held:?}");
        }
        assert_eq!(h(&[slot(1, Failed)], 1), Health::Failed);
        assert_eq!(h(&[slot(1, Stale)], 1), Health::Stale);
        assert_eq!(h(&[slot(1, Failed), slot(2, Stale)], 1), Health::Failed);
        assert_eq!(
            h(&[slot(1, Running), slot(2, Unusable)], 1),
            Health::Unknown
        );
        // A tombstone beside enough running peers does not matter to K.
        assert_eq!(h(&[slot(1, Running), slot(2, Failed)], 1), Health::Healthy);
    }

    #[test]
    fn old_heartbeats_of_running_peers_are_unhealthy() {
        let mut a = slot(1, SlotStatus::Running);
        a.heartbeat_age_s = Some(9.0);
        let max = Some(Duration::from_secs(5));
        let r = judge("w", std::slice::from_ref(&a), 1, max);
        assert_eq!(r.health, Health::Unhealthy);
        assert_eq!(r.reasons, ["slot 1 heartbeat is 9.0s old (limit 5s)"]);
        a.heartbeat_age_s = Some(1.0);
        assert_eq!(judge("w", &[a], 1, max).health, Health::Healthy);
    }

    #[test]
    fn reasons_name_every_slot_that_does_not_run() {
        let mut b = slot(2, SlotStatus::Backoff);
        b.reason = Some("exit status 1".into());
        b.next_try_unix_ms = Some(super::super::now_unix_ms() + 3_500);
        let mut f = slot(3, SlotStatus::Failed);
        f.reason = Some("gave up after 5 failed runs within 60s (--max-respawns 5)".into());
        f.last_exit = Some("status 1".into());
        let mut o = slot(4, SlotStatus::Orphaned);
        o.child_pid = Some(4242);
        let r = judge("w", &[slot(1, SlotStatus::Running), b, f, o], 3, None);
        assert_eq!(r.running, 1);
        assert_eq!(r.reasons.len(), 3, "{:?}", r.reasons);
        assert_eq!(
            r.reasons[0],
            "slot 2 backing off after exit status 1, next try in 4s"
        );
        assert_eq!(
            r.reasons[1],
            "slot 3 failed: gave up after 5 failed runs within 60s (--max-respawns 5) (last run: exit status 1)"
        );
        assert!(
            r.reasons[2].starts_with("slot 4 orphaned"),
            "{}",
            r.reasons[2]
        );
        assert!(r.reasons[2].contains("PID 4242"));
    }

    #[test]
    fn all_names_take_the_worst_verdict() {
        let mut a = slot(1, SlotStatus::Running);
        a.name = "a".into();
        let mut b = slot(1, SlotStatus::Backoff);
        b.name = "b".into();
        let mut c = slot(1, SlotStatus::Failed);
        c.name = "c".into();
        assert_eq!(judge_all(&[]), Health::NotRunning);
        assert_eq!(judge_all(std::slice::from_ref(&a)), Health::Healthy);
        assert_eq!(judge_all(&[a.clone(), c.clone()]), Health::Failed);
        assert_eq!(judge_all(&[a, b, c]), Health::Unhealthy);
    }
}
