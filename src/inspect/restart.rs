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

use super::scan::{Depth, SlotStatus, is_namespace_init, read_held, scan_name, slot_indices};
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
    /// Its supervisor was asked, and the new COMMAND did not come up.
    Failed(String),
    /// Not asked: restarting it would take a second peer out of service.
    Halted(String),
}

/// `--restart`: restarts NAME's peers one slot at a time (only slot `only`,
/// when given), each through its own supervisor, waiting for each new
/// COMMAND to run before going on; a slot whose new COMMAND does not come
/// up within `timeout` (default: its `--stop-timeout` plus
/// `RESTART_MARGIN`, 65 s) halts the roll, and the slots after it are left
/// untouched.
///
/// At most one peer is out of service at a time, whoever else rolls:
/// rolls of one NAME are serialised by an flock on `.NAME.roll` in the PID
/// directory (a second roll waits for the first, then rolls every slot
/// again); slots that are already out of service (backing off, starting)
/// are restarted first; and before a running peer is taken down, every
/// other held slot must be running (starting or backing-off ones are given
/// the slot's wait to come up). One that stays down halts the roll, naming
/// it. `progress` sees each outcome as it happens. Blocks for the whole
/// roll. Errors: a bad NAME, an unsafe or unreadable directory, a roll
/// lock that cannot be created or taken in time.
pub fn restart(
    pid_dir: &Path,
    name: &str,
    only: Option<u32>,
    timeout: Option<Duration>,
    mut progress: impl FnMut(&RestartOutcome),
) -> Result<Vec<RestartOutcome>> {
    crate::name::validate(name)?;
    let Some(dir) = PidDir::open_existing(pid_dir)? else {
        return Ok(only
            .map(|i| {
                let mut o = RestartOutcome::new(i, pid_dir.join(pid_file_name(name, i)));
                o.problem = Some(format!("slot {i} is not held"));
                progress(&o);
                o
            })
            .into_iter()
            .collect());
    };
    let all = slot_indices(&dir, name)?;
    // Another roll of NAME may take each slot's wait; a generous bound
    // that still cannot hang.
    let per_slot = timeout.unwrap_or(Duration::from_secs(10) + RESTART_MARGIN);
    let lock_deadline = Instant::now() + per_slot * (all.len() as u32 + 1);
    let Some(_roll) = dir.lock_roll(name, lock_deadline)? else {
        return Err(crate::error::Error::io(
            "wait for the roll lock",
            dir.path().join(format!(".{name}.roll")),
            std::io::Error::other("another --restart of this name is still rolling"),
        ));
    };
    let mut indices: Vec<u32> = slot_indices(&dir, name)?
        .into_iter()
        .filter(|&i| only.is_none_or(|o| o == i))
        .collect();
    if let Some(i) = only
        && indices.is_empty()
    {
        indices.push(i);
    }
    // Slots already out of service go first: restarting them costs no
    // capacity, and they may be what the others would wait for.
    let down: Vec<u32> = scan_name(&dir, name, SHALLOW)?
        .iter()
        .filter(|r| matches!(r.state, SlotStatus::Backoff | SlotStatus::Starting))
        .map(|r| r.slot)
        .collect();
    indices.sort_by_key(|i| (!down.contains(i), *i));
    let mut outcomes = Vec::new();
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
                outcome.problem = Some(format!("slot {index} is not held"));
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
        outcome.attempted = !matches!(step, Step::Skipped(_) | Step::Halted(_));
        match step {
            Step::Done(child) => {
                outcome.restarted = true;
                outcome.child_pid = child;
            }
            Step::Skipped(why) => {
                outcome.skipped = true;
                outcome.problem = Some(why);
            }
            Step::Failed(why) | Step::Halted(why) => {
                outcome.problem = Some(why);
                halted = Some(index);
            }
        }
        progress(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A scan for the roll's decisions: states only.
const SHALLOW: Depth = Depth {
    heartbeats: false,
    memory: false,
};

/// The other held slots of `name` that are out of service now: `(slot,
/// state)`.
fn others_down(dir: &PidDir, name: &str, index: u32) -> Vec<(u32, SlotStatus)> {
    scan_name(dir, name, SHALLOW)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.slot != index && r.state.is_held() && !r.state.is_up())
        .map(|r| (r.slot, r.state))
        .collect()
}

fn restart_slot(
    dir: &PidDir,
    name: &str,
    index: u32,
    info: &slot::HeldInfo,
    timeout: Option<Duration>,
) -> Step {
    let (state, holders) = read_held(dir, name, index, info);
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
    if holders.supervisor.is_some_and(is_namespace_init) {
        return Step::Skipped(super::stop::NAMESPACE_INIT.into());
    }
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
    // Taking a running peer down while another is down would leave two
    // out of service: the others get the slot's wait to come up.
    let this = own_state(dir, name, index);
    if this == Some(SlotStatus::Stopping) {
        return Step::Skipped("its supervisor is stopping it".into());
    }
    if this.is_some_and(SlotStatus::is_up) {
        let mut down = Vec::new();
        wait_until(Instant::now() + wait, || {
            down = others_down(dir, name, index);
            down.is_empty()
        });
        if !down.is_empty() {
            let which = down
                .iter()
                .map(|(i, st)| format!("slot {i} is {}", st.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            return Step::Halted(format!(
                "not restarted: {which}; restarting this running peer too would take two \
                 out of service"
            ));
        }
    }
    if let Err(e) = supervisor.signal(crate::signals::restart_signal()) {
        return Step::Failed(format!(
            "cannot signal its supervisor (PID {}): {e}",
            supervisor.pid()
        ));
    }
    await_new_run(dir, name, index, info.id, run_before, wait)
}

/// Slot `index`'s state right now.
fn own_state(dir: &PidDir, name: &str, index: u32) -> Option<SlotStatus> {
    scan_name(dir, name, SHALLOW)
        .unwrap_or_default()
        .iter()
        .find(|r| r.slot == index)
        .map(|r| r.state)
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
                    .map(super::reason_in_words)
                    .or(st.last_exit.map(|e| super::describe_last_exit(&e)))
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
