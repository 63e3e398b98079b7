//! `--restart`: a rolling restart, one slot at a time, through each slot's
//! supervisor.
//!
//! The request channel is a signal, `signals::restart_signal()`
//! (`SIGRTMAX - 2`), sent through a pidfd to the process proven to hold the
//! slot's lock, exactly as `--stop` sends SIGTERM: whoever may stop a peer
//! may restart it, nobody else can, and an idle supervisor still sleeps
//! without a timer. The supervisor stops COMMAND gracefully and starts it
//! afresh in the same slot (a planned recycle), counting the run in its
//! state file; the roll goes on to the next slot only once that count grew
//! and the phase is `running` (under `--notify`: READY=1 arrived). Only a
//! holder whose state file says `mode=supervisor` is signalled: a library
//! daemon, or a supervisor too old to know the signal (whose default
//! action would kill it), is named and skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::scan::{slot_indices, verify};
use super::wait_until;
use crate::error::Result;
use crate::piddir::PidDir;
use crate::proc::{Pidfd, holds_lock_on};
use crate::slot::{self, FileId, Probe, pid_file_name};
use crate::state::{HolderMode, Phase, SlotState};

/// Added to a peer's `--stop-timeout` for the default wait: time for the
/// new COMMAND to start and, under `--notify`, to become ready (the
/// default `--ready-timeout` is 60 s).
pub const RESTART_MARGIN: Duration = Duration::from_secs(65);

/// What `--restart` did to one slot.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct RestartOutcome {
    /// The slot's index (1-based).
    pub slot: u32,
    /// The slot's PID file.
    pub pid_file: PathBuf,
    /// The new COMMAND runs.
    pub restarted: bool,
    /// Left alone on purpose (a library peer, an orphan): the roll went on.
    pub skipped: bool,
    /// Its supervisor was asked to restart COMMAND (false for skipped
    /// slots and for those after the slot where the roll halted).
    pub attempted: bool,
    /// COMMAND's new PID, when restarted.
    pub child_pid: Option<i32>,
    /// Why not restarted, when not.
    pub problem: Option<String>,
}

impl RestartOutcome {
    fn new(slot: u32, pid_file: PathBuf) -> RestartOutcome {
        RestartOutcome {
            slot,
            pid_file,
            restarted: false,
            skipped: false,
            attempted: false,
            child_pid: None,
            problem: None,
        }
    }
}

/// How one slot's restart went.
enum Step {
    Done(Option<i32>),
    Skipped(String),
    Failed(String),
}

/// `--restart`: restarts NAME's peers one slot at a time (only slot `only`,
/// when given), each through its own supervisor, waiting for each new
/// COMMAND to run before going on; a slot whose new COMMAND does not come
/// up within `timeout` (default: its `--stop-timeout` plus
/// `RESTART_MARGIN`, 65 s) halts the roll, and the slots after it are left
/// untouched. `progress` sees each outcome as it happens. Blocks for the
/// whole roll. Errors: a bad NAME, an unsafe or unreadable directory.
pub fn restart(
    pid_dir: &Path,
    name: &str,
    only: Option<u32>,
    timeout: Option<Duration>,
    mut progress: impl FnMut(&RestartOutcome),
) -> Result<Vec<RestartOutcome>> {
    crate::name::validate(name)?;
    let Some(dir) = PidDir::open_existing(pid_dir)? else {
        return Ok(Vec::new());
    };
    let mut outcomes = Vec::new();
    let indices: Vec<u32> = slot_indices(&dir, name)?
        .into_iter()
        .filter(|&i| only.is_none_or(|o| o == i))
        .collect();
    let mut halted: Option<u32> = None;
    for index in indices {
        let pid_file = dir.path().join(pid_file_name(name, index));
        let mut outcome = RestartOutcome::new(index, pid_file);
        if let Some(at) = halted {
            outcome.problem = Some(format!("not restarted: the roll halted at slot {at}"));
            progress(&outcome);
            outcomes.push(outcome);
            continue;
        }
        let info = match slot::probe(&dir, name, index) {
            Probe::Held(info) => info,
            // Not a peer: nothing to restart, unless asked for this slot.
            Probe::Missing | Probe::Stale if only.is_none() => continue,
            Probe::Missing | Probe::Stale => {
                outcome.problem = Some("no peer holds it".into());
                progress(&outcome);
                outcomes.push(outcome);
                continue;
            }
            Probe::Unusable(reason) => {
                outcome.skipped = true;
                outcome.problem = Some(format!("left alone: {reason}"));
                progress(&outcome);
                outcomes.push(outcome);
                continue;
            }
            Probe::Unknown(e) => {
                outcome.skipped = true;
                outcome.problem = Some(e.to_string());
                progress(&outcome);
                outcomes.push(outcome);
                continue;
            }
        };
        let step = restart_slot(&dir, name, index, &info, timeout);
        outcome.attempted = !matches!(step, Step::Skipped(_));
        match step {
            Step::Done(child) => {
                outcome.restarted = true;
                outcome.child_pid = child;
            }
            Step::Skipped(why) => {
                outcome.skipped = true;
                outcome.problem = Some(why);
            }
            Step::Failed(why) => {
                outcome.problem = Some(why);
                halted = Some(index);
            }
        }
        progress(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn restart_slot(
    dir: &PidDir,
    name: &str,
    index: u32,
    info: &slot::HeldInfo,
    timeout: Option<Duration>,
) -> Step {
    let state = SlotState::read(dir, name, index);
    match state.as_ref().and_then(|s| s.mode) {
        Some(HolderMode::Supervisor) => {}
        Some(HolderMode::Library) => {
            return Step::Skipped(format!(
                "held by a program using the library{}: it has no supervisor to restart it",
                info.pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
            ));
        }
        None => {
            return Step::Skipped(
                "its holder does not say it is an rdaemon supervisor that can restart \
                 COMMAND (a library program, or an older rdaemon): stop and start it instead"
                    .into(),
            );
        }
    }
    let holders = verify(info, state.as_ref());
    let holds = |p: i32| matches!(holds_lock_on(p, info.id), Ok(true));
    let Some(supervisor) = holders.supervisor.and_then(|p| {
        // Pin, then prove: see proc.rs.
        let fd = Pidfd::open(p).ok()?;
        holds(p).then_some(fd)
    }) else {
        return Step::Skipped(
            "orphaned or unverifiable: no supervisor proven to hold its lock \
             (rdaemon --stop ends an orphan)"
                .into(),
        );
    };
    let run_before = state.as_ref().map_or(0, |s| s.run);
    let wait = timeout.unwrap_or_else(|| {
        state
            .as_ref()
            .and_then(|s| s.stop_timeout_ms)
            .map_or(Duration::from_secs(10), Duration::from_millis)
            + RESTART_MARGIN
    });
    if let Err(e) = supervisor.signal(crate::signals::restart_signal()) {
        return Step::Failed(format!(
            "cannot signal its supervisor (PID {}): {e}",
            supervisor.pid()
        ));
    }
    await_new_run(dir, name, index, info.id, run_before, wait)
}

/// Waits until slot `index`'s supervisor reports a new run of COMMAND that
/// runs (and is ready), or it fails.
fn await_new_run(
    dir: &PidDir,
    name: &str,
    index: u32,
    id: FileId,
    run_before: u64,
    wait: Duration,
) -> Step {
    let mut verdict: Option<Step> = None;
    wait_until(Instant::now() + wait, || {
        if !matches!(slot::probe_lock(dir, name, index), Probe::Held(ref i) if i.id == id) {
            let why = match SlotState::read(dir, name, index) {
                Some(st) if st.phase == Some(Phase::Failed) => format!(
                    "the supervisor gave up: {}",
                    st.reason.unwrap_or_else(|| "no reason given".into())
                ),
                _ => "its supervisor released the slot".into(),
            };
            verdict = Some(Step::Failed(why));
            return true;
        }
        let Some(st) = SlotState::read(dir, name, index) else {
            return false;
        };
        if st.run <= run_before {
            return false;
        }
        match st.phase {
            Some(Phase::Running) if st.ready != Some(false) => {
                verdict = Some(Step::Done(st.child_pid));
                true
            }
            Some(Phase::Backoff | Phase::Failed) => {
                let exit = st
                    .reason
                    .or(st.last_exit.map(|e| format!("exit {e}")))
                    .unwrap_or_else(|| "it exited".into());
                verdict = Some(Step::Failed(format!(
                    "the new COMMAND did not come up: {exit}"
                )));
                true
            }
            _ => false,
        }
    });
    verdict.unwrap_or_else(|| {
        Step::Failed(format!(
            "the new COMMAND did not run{} within {:.0}s",
            match SlotState::read(dir, name, index) {
                Some(st) if st.run > run_before && st.ready == Some(false) => " (no READY=1)",
                _ => "",
            },
            wait.as_secs_f64()
        ))
    })
}
