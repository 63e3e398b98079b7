//! Scanning a PID directory: which slots of which names exist, who holds
//! them (proven through `/proc`), and what state their holders published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::piddir::PidDir;
use crate::proc::{find_lock_holders, holds_lock_on};
use crate::slot::{self, FileId, HeldInfo, Probe, parse_slot_file_name, pid_file_name};
use crate::state::{HolderMode, Phase, SlotState};

/// The state of one slot, as `--status` reports it and `--check` counts it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStatus {
    /// Held; COMMAND exec'd but has not sent READY=1 yet (`--notify`).
    Starting,
    /// Held, and COMMAND runs (and is ready): the only state that counts.
    Running,
    /// Held by a supervisor waiting to restart COMMAND after a failed run.
    Backoff,
    /// Held by a supervisor stopping COMMAND's process tree.
    Stopping,
    /// Held by COMMAND (or its children) after its supervisor died.
    Orphaned,
    /// Not held; the supervisor gave up and left a tombstone.
    Failed,
    /// A PID file nobody holds.
    Stale,
    /// Something rdaemon will not touch sits at the slot's path.
    Unusable,
    /// The slot could not be examined (permission denied, I/O error).
    Unknown,
}

impl SlotStatus {
    /// Every state, in the order `--format prometheus` lists them.
    pub const ALL: [SlotStatus; 9] = [
        SlotStatus::Starting,
        SlotStatus::Running,
        SlotStatus::Backoff,
        SlotStatus::Stopping,
        SlotStatus::Orphaned,
        SlotStatus::Failed,
        SlotStatus::Stale,
        SlotStatus::Unusable,
        SlotStatus::Unknown,
    ];

    /// The contract's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Starting => "starting",
            SlotStatus::Running => "running",
            SlotStatus::Backoff => "backoff",
            SlotStatus::Stopping => "stopping",
            SlotStatus::Orphaned => "orphaned",
            SlotStatus::Failed => "failed",
            SlotStatus::Stale => "stale",
            SlotStatus::Unusable => "unusable",
            SlotStatus::Unknown => "unknown",
        }
    }

    /// Whether the slot's lock is held (a start cannot take it).
    pub fn is_held(self) -> bool {
        matches!(
            self,
            SlotStatus::Starting
                | SlotStatus::Running
                | SlotStatus::Backoff
                | SlotStatus::Stopping
                | SlotStatus::Orphaned
        )
    }

    /// Whether the slot counts as a running peer (`--check`, `rdaemon_slot_up`).
    pub fn is_up(self) -> bool {
        self == SlotStatus::Running
    }
}

/// Who holds a slot, as its state file says.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An `rdaemon` supervisor running COMMAND (can be `--restart`ed).
    Supervisor,
    /// A program using the library.
    Library,
}

/// One line of `--status`: one slot of one name.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct SlotReport {
    /// The daemon's NAME.
    pub name: String,
    /// The slot's index (1-based).
    pub slot: u32,
    /// What the slot is doing.
    pub state: SlotStatus,
    /// The verified lock holder named in the PID file (supervisor or
    /// library process); `None` when unknown or orphaned.
    pub pid: Option<i32>,
    /// COMMAND's PID, when verified.
    pub child_pid: Option<i32>,
    /// The MAINPID= COMMAND reported over sd_notify, if alive.
    pub main_pid: Option<i32>,
    /// The slot's PID file (whether or not it exists: a tombstone has none).
    pub pid_file: PathBuf,
    /// When the slot was taken, Unix seconds.
    pub started_unix: Option<u64>,
    /// When the current (or last) run of COMMAND started, Unix ms.
    pub command_started_unix_ms: Option<u64>,
    /// Seconds since the holder's last heartbeat.
    pub heartbeat_age_s: Option<f64>,
    /// Restarts of COMMAND since the slot was taken.
    pub restarts: Option<u32>,
    /// How COMMAND last ended: `status 1`, `signal 9`.
    pub last_exit: Option<String>,
    /// The same as a number: the status, or 128+N for signal N.
    pub last_exit_code: Option<i32>,
    /// Whether COMMAND sent READY=1 (`None` without `--notify`).
    pub ready: Option<bool>,
    /// The last STATUS= text COMMAND sent.
    pub status_text: Option<String>,
    /// Why the holder is in its phase (backoff, stopping, failed).
    pub reason: Option<String>,
    /// In backoff: when the next start is due, Unix ms.
    pub next_try_unix_ms: Option<u64>,
    /// How many times COMMAND was spawned in the slot.
    pub run: Option<u64>,
    /// Who holds the slot, as its state file says.
    pub holder: Option<Holder>,
    /// The peer's own `--stop-timeout`.
    pub stop_timeout: Option<Duration>,
    /// Resident memory of COMMAND's process tree, bytes (only when asked).
    pub rss_bytes: Option<u64>,
    /// Why the slot is unusable or unknown.
    pub detail: Option<String>,
}

impl SlotReport {
    pub(super) fn new(name: &str, slot: u32, pid_file: PathBuf) -> SlotReport {
        SlotReport {
            name: name.to_string(),
            slot,
            state: SlotStatus::Unknown,
            pid: None,
            child_pid: None,
            main_pid: None,
            pid_file,
            started_unix: None,
            command_started_unix_ms: None,
            heartbeat_age_s: None,
            restarts: None,
            last_exit: None,
            last_exit_code: None,
            ready: None,
            status_text: None,
            reason: None,
            next_try_unix_ms: None,
            run: None,
            holder: None,
            stop_timeout: None,
            rss_bytes: None,
            detail: None,
        }
    }

    /// Copies what the holder published (or the tombstone says).
    fn absorb(&mut self, st: SlotState) {
        self.started_unix = st.started_unix;
        self.command_started_unix_ms = st.command_started_unix_ms;
        self.restarts = Some(st.restarts);
        self.last_exit = st.last_exit;
        self.last_exit_code = st.last_exit_code;
        self.ready = st.ready;
        self.status_text = st.status_text;
        // A supervisor says `exit signal 15` for a run's end: in words.
        self.reason = st.reason.map(super::reason_in_words);
        self.next_try_unix_ms = st.next_try_unix_ms;
        self.run = (st.run > 0).then_some(st.run);
        self.holder = st.mode.map(|m| match m {
            HolderMode::Supervisor => Holder::Supervisor,
            HolderMode::Library => Holder::Library,
        });
        self.stop_timeout = st.stop_timeout_ms.map(Duration::from_millis);
    }
}

/// What a scan found.
#[non_exhaustive]
#[derive(Debug)]
pub struct Scan {
    /// False when the PID directory does not exist.
    pub dir_exists: bool,
    /// Sorted by name, then slot.
    pub slots: Vec<SlotReport>,
}

/// How deep a scan looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Depth {
    /// Ask holders for fresh heartbeats and report their ages.
    pub heartbeats: bool,
    /// Measure the resident memory of each COMMAND tree.
    pub memory: bool,
}

/// Every slot file in the directory, by name: `(name, slot indices)`.
/// `only` restricts it to one name.
fn slot_files(dir: &PidDir, only: Option<&str>) -> Result<BTreeMap<String, Vec<u32>>> {
    let listing = nix::dir::Dir::openat(
        dir.fd(),
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io("list PID directory", dir.path(), e.into()))?;
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for entry in listing.into_iter() {
        let entry = entry.map_err(|e| Error::io("list PID directory", dir.path(), e.into()))?;
        let Ok(file_name) = entry.file_name().to_str() else {
            continue;
        };
        if let Some((name, index, _)) = parse_slot_file_name(file_name)
            && only.is_none_or(|o| o == name)
        {
            found.entry(name.to_string()).or_default().push(index);
        }
    }
    for indices in found.values_mut() {
        indices.sort_unstable();
        indices.dedup();
    }
    Ok(found)
}

/// The slot indices of `name` that have a PID file or a state file.
pub(super) fn slot_indices(dir: &PidDir, name: &str) -> Result<Vec<u32>> {
    Ok(slot_files(dir, Some(name))?
        .remove(name)
        .unwrap_or_default())
}

/// Every NAME with a slot file (or a tombstone) in `pid_dir`, sorted.
/// Empty when the directory does not exist.
pub fn names(pid_dir: &Path) -> Result<Vec<String>> {
    match PidDir::open_existing(pid_dir)? {
        None => Ok(Vec::new()),
        Some(dir) => Ok(slot_files(&dir, None)?.into_keys().collect()),
    }
}

fn age_since(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// How long a scan waits, in all, for supervisors to answer its questions
/// (see `supervisor`'s "The heartbeat is an answer"). A working supervisor
/// answers in well under a millisecond; one that has not answered after
/// this long is stopped or wedged, and its heartbeat is as old as its last
/// answer.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// CLOCK_REALTIME_COARSE: the clock the kernel stamps file times with, so
/// a touch that happens after this reading is never stamped before it.
fn coarse_realtime() -> SystemTime {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE) {
        Ok(ts) => {
            SystemTime::UNIX_EPOCH
                + Duration::new(
                    ts.tv_sec().max(0) as u64,
                    ts.tv_nsec().clamp(0, 999_999_999) as u32,
                )
        }
        Err(_) => SystemTime::now(),
    }
}

/// A held slot whose supervisor this scan asked for a heartbeat, and whose
/// answer is still to be awaited.
struct Unanswered {
    /// Where its report is in the scan's output.
    at: usize,
    index: u32,
    info: HeldInfo,
    asked: SystemTime,
}

/// The state of a held slot: orphaned when its holder published a state
/// file (so there was a supervisor or library daemon) but only COMMAND or
/// other processes are proven to hold the lock; else what the holder
/// published. A holder that publishes no phase (an older writer), or a
/// foreign locker with no state file at all, counts as running: the lock
/// is all there is to go by.
fn held_state(holders: &Holders, st: Option<&SlotState>) -> SlotStatus {
    if holders.supervisor.is_none()
        && (holders.child.is_some() || (st.is_some() && !holders.others.is_empty()))
    {
        return SlotStatus::Orphaned;
    }
    let not_ready = st.and_then(|s| s.ready) == Some(false);
    match st.and_then(|s| s.phase) {
        None | Some(Phase::Running) if not_ready => SlotStatus::Starting,
        None | Some(Phase::Running) => SlotStatus::Running,
        Some(Phase::Starting) => SlotStatus::Starting,
        Some(Phase::Backoff) => SlotStatus::Backoff,
        Some(Phase::Stopping) => SlotStatus::Stopping,
        // Written just before the supervisor lets go of the slot.
        Some(Phase::Failed) => SlotStatus::Stopping,
    }
}

/// Scans the slots of `name` in an open directory.
pub(super) fn scan_name(dir: &PidDir, name: &str, depth: Depth) -> Result<Vec<SlotReport>> {
    let mut out = Vec::new();
    let mut unanswered = Vec::new();
    for index in slot_indices(dir, name)? {
        let pid_file = dir.path().join(pid_file_name(name, index));
        let mut report = SlotReport::new(name, index, pid_file);
        match slot::probe(dir, name, index) {
            probe @ (Probe::Missing | Probe::Stale) => {
                // A tombstone, or a stale file, or nothing: the state file
                // of a slot nobody holds is only believed when it says the
                // supervisor gave up.
                let state = SlotState::read(dir, name, index);
                let tombstone = state
                    .as_ref()
                    .is_some_and(|s| s.phase == Some(Phase::Failed));
                let pid_file_exists = matches!(probe, Probe::Stale);
                if tombstone {
                    report.state = SlotStatus::Failed;
                    if let Some(st) = state {
                        report.absorb(st);
                    }
                } else if pid_file_exists {
                    report.state = SlotStatus::Stale;
                } else {
                    // Only a leftover state file: nothing to report.
                    continue;
                }
            }
            Probe::Unusable(reason) => {
                report.state = SlotStatus::Unusable;
                report.detail = Some(reason);
            }
            Probe::Unknown(e) => report.detail = Some(e.to_string()),
            Probe::Held(info) => {
                let (state, holders) = read_held(dir, name, index, &info);
                report.state = held_state(&holders, state.as_ref());
                report.pid = holders.supervisor;
                report.child_pid = holders.child;
                if depth.heartbeats {
                    // Ask a supervisor that answers on demand for a
                    // heartbeat, unless it cannot answer (gone: orphaned;
                    // or stopped). The answers are awaited after the loop,
                    // so the supervisors of all slots answer at once.
                    let asked = coarse_realtime();
                    if state
                        .as_ref()
                        .is_some_and(|s| s.answers_probes && s.watchdog_unix_ms.is_none())
                        && info.mtime < asked
                        && holders.supervisor.is_some_and(can_answer)
                        && slot::ask_for_heartbeat(dir, name, index, &info)
                    {
                        unanswered.push(Unanswered {
                            at: out.len(),
                            index,
                            info: info.clone(),
                            asked,
                        });
                    }
                    report.heartbeat_age_s = Some(heartbeat_age(&info, state.as_ref()));
                }
                if let Some(st) = state {
                    report.main_pid = st.main_pid.filter(|&p| crate::proc::stat(p).is_some());
                    report.absorb(st);
                }
                if depth.memory {
                    // A supervisor's whole tree (what a double fork
                    // re-parented to it included, as --memory-limit
                    // counts it), without the supervisor; an orphan's
                    // COMMAND tree; a library daemon is its own tree.
                    report.rss_bytes = match (report.holder, report.pid) {
                        (Some(Holder::Supervisor), Some(sup)) => {
                            Some(crate::memory::descendants_rss(sup))
                                .filter(|&b| b > 0 || report.child_pid.is_some())
                        }
                        (Some(Holder::Library), Some(pid)) => crate::memory::tree_rss(pid),
                        _ => report.child_pid.and_then(crate::memory::tree_rss),
                    };
                }
            }
        }
        out.push(report);
    }
    // At most ANSWER_WAIT in all, however many slots are unanswered.
    let answer_by = Instant::now() + ANSWER_WAIT;
    for u in unanswered {
        let mtime = slot::await_answer(dir, name, u.index, &u.info, u.asked, answer_by);
        out[u.at].heartbeat_age_s = Some(age_since(mtime));
    }
    Ok(out)
}

/// Whether process `pid` could answer a question: it exists and is neither
/// stopped nor a zombie (a zombie leader whose threads run can answer).
fn can_answer(pid: i32) -> bool {
    crate::proc::stat(pid)
        .is_some_and(|st| !matches!(st.state, b'T' | b't') && crate::proc::running(&st))
}

/// The heartbeat age: the last WATCHDOG=1 for commands that speak
/// sd_notify, otherwise the PID file's mtime, which the holder refreshes
/// (on its timer, on every heartbeat() call, or in answer to a probe).
fn heartbeat_age(info: &HeldInfo, state: Option<&SlotState>) -> f64 {
    if let Some(ms) = state.and_then(|s| s.watchdog_unix_ms) {
        return age_since(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    }
    age_since(info.mtime)
}

/// Reads a held slot's state file and works out who holds the slot; the
/// state file comes back only when it belongs to the current holder (see
/// [`state_belongs`]), else `None`, as if there were none.
pub(super) fn read_held(
    dir: &PidDir,
    name: &str,
    index: u32,
    info: &HeldInfo,
) -> (Option<SlotState>, Holders) {
    let state = SlotState::read(dir, name, index);
    let holders = verify(info, state.as_ref());
    let state = state.filter(|st| state_belongs(st, &holders));
    (state, holders)
}

/// Whether a held slot's state file is the current holder's. The file is
/// a hint left by whoever wrote it last: a supervisor that gave up (a
/// tombstone) or crashed leaves it behind, and the next locker may be
/// anything. When a process is proven to hold the lock as the PID file's
/// process, the file is believed only if that process wrote it (its
/// `holder_pid`, in any of its PID namespaces). When none is (an orphan:
/// the supervisor died while COMMAND holds the lock), the file of the dead
/// supervisor is what says there was one: believed unless its writer is
/// alive and holds the lock as someone else.
fn state_belongs(st: &SlotState, holders: &Holders) -> bool {
    match (holders.supervisor, st.holder_pid) {
        (Some(sup), Some(writer)) => sup == writer || ns_pids(sup).contains(&writer),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Processes proven to hold a slot.
#[derive(Debug, Default)]
pub(super) struct Holders {
    /// The PID file's process, proven to hold the lock.
    pub supervisor: Option<i32>,
    /// COMMAND, proven to hold the lock or to be the supervisor's child.
    pub child: Option<i32>,
    /// Other processes holding the lock (found by a full /proc walk).
    pub others: Vec<i32>,
}

/// Works out who holds a slot, trusting no PID that `/proc` does not
/// confirm. The full `/proc` walk happens only when the PID file names no
/// holder (an orphan, a file overwritten in place, a foreign locker).
pub(super) fn verify(info: &HeldInfo, state: Option<&SlotState>) -> Holders {
    let holds = |p: i32| matches!(holds_lock_on(p, info.id), Ok(true));
    let mut h = Holders {
        supervisor: info.pid.filter(|&p| holds(p)),
        ..Holders::default()
    };
    h.child = state
        .and_then(|s| s.child_pid)
        .filter(|&c| child_verified(c, h.supervisor, info.id));
    if h.supervisor.is_none() {
        // The file names no holder: it was overwritten in place, its
        // supervisor died (an orphan), someone else locked it, or the PIDs
        // in the files are another PID namespace's. Ask /proc who holds
        // the lock. A holder whose PID, in any of its namespaces, is the
        // one in the PID file is the supervisor, and so is the verified
        // child's parent; the slot is orphaned only if there is none.
        let holders = find_lock_holders(info.id);
        if h.child.is_none()
            && let Some(c) = state.and_then(|s| s.child_pid)
        {
            // COMMAND by its PID in its own namespace; never PID 1 there
            // (that is a namespace's init: the supervisor, if anyone).
            h.child = holders
                .iter()
                .copied()
                .find(|&p| ns_pids(p).contains(&c) && !is_namespace_init(p));
        }
        let parent = h.child.and_then(crate::proc::stat).map(|st| st.ppid);
        h.supervisor = holders.iter().copied().find(|&p| {
            Some(p) != h.child
                && (Some(p) == parent
                    || info.pid.is_some_and(|f| ns_pids(p).contains(&f))
                    // A supervisor that is PID 1 of its namespace (a
                    // container's init) writes `1`, which no PID file
                    // reader accepts; it holds the lock and its state
                    // file, written by a PID 1 too, says it holds the
                    // slot. A namespace init under a dead supervisor
                    // (COMMAND ran `unshare --pid --fork`) is an orphan.
                    || (state.is_some_and(|s| s.mode.is_some() && s.holder_pid == Some(1))
                        && is_namespace_init(p)))
        });
        h.others = holders
            .into_iter()
            .filter(|&p| Some(p) != h.supervisor && Some(p) != h.child)
            .collect();
        if h.supervisor.is_none() && h.child.is_none() && state.is_some() && !h.others.is_empty() {
            // An orphan whose COMMAND the state file does not name (its
            // supervisor died before writing it), or whose COMMAND is gone
            // while its children still hold the lock: show the holder that
            // leads its process group (COMMAND rather than its children),
            // else the first one found.
            let i = h
                .others
                .iter()
                .position(|&p| crate::proc::stat(p).is_some_and(|st| st.pgrp == p))
                .unwrap_or(0);
            h.child = Some(h.others.remove(i));
        }
    }
    h
}

/// Whether process `pid` is PID 1 of its own (innermost) PID namespace:
/// a container's init, which must never be signalled.
pub(super) fn is_namespace_init(pid: i32) -> bool {
    pid == 1 || ns_pids(pid).last() == Some(&1)
}

/// Process `pid`'s PIDs in every PID namespace it belongs to, from
/// `/proc/PID/status` (`NSpid:`); empty when unreadable.
fn ns_pids(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("NSpid:").map(|rest| {
                    rest.split_ascii_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

pub(super) fn child_verified(child: i32, supervisor: Option<i32>, id: FileId) -> bool {
    let parent_ok = supervisor.is_some()
        && crate::proc::stat(child).is_some_and(|st| Some(st.ppid) == supervisor);
    parent_ok || matches!(holds_lock_on(child, id), Ok(true))
}

fn scan(pid_dir: &Path, only: Option<&str>, depth: Depth) -> Result<Scan> {
    if let Some(name) = only {
        crate::name::validate(name)?;
    }
    let Some(dir) = PidDir::open_existing(pid_dir)? else {
        return Ok(Scan {
            dir_exists: false,
            slots: Vec::new(),
        });
    };
    let names: Vec<String> = match only {
        Some(name) => vec![name.to_string()],
        None => slot_files(&dir, None)?.into_keys().collect(),
    };
    let mut slots = Vec::new();
    for name in names {
        slots.extend(scan_name(&dir, &name, depth)?);
    }
    Ok(Scan {
        dir_exists: true,
        slots,
    })
}

/// `--status NAME`: NAME's slots in `pid_dir`, holders verified, heartbeats
/// fresh (waits up to a second for supervisors to answer). `memory` also
/// measures each COMMAND tree's resident memory (a walk of `/proc` per
/// slot). Errors: a bad NAME (usage), an unsafe or unreadable directory.
pub fn status(pid_dir: &Path, name: &str, memory: bool) -> Result<Scan> {
    scan(
        pid_dir,
        Some(name),
        Depth {
            heartbeats: true,
            memory,
        },
    )
}

/// `--status` without NAME: every name's slots, grouped by name.
pub fn status_all(pid_dir: &Path, memory: bool) -> Result<Scan> {
    scan(
        pid_dir,
        None,
        Depth {
            heartbeats: true,
            memory,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_states_come_from_the_holder_and_the_proofs() {
        let st = |text: &str| SlotState::parse(text);
        let sup = Holders {
            supervisor: Some(10),
            child: Some(11),
            others: Vec::new(),
        };
        let s = |h: &Holders, text: Option<&str>| held_state(h, text.map(st).as_ref());
        assert_eq!(s(&sup, Some("phase=running\n")), SlotStatus::Running);
        assert_eq!(
            s(&sup, Some("phase=running\nready=0\n")),
            SlotStatus::Starting
        );
        assert_eq!(s(&sup, Some("phase=backoff\n")), SlotStatus::Backoff);
        assert_eq!(s(&sup, Some("phase=stopping\n")), SlotStatus::Stopping);
        assert_eq!(
            s(&sup, Some("phase=starting\nready=1\n")),
            SlotStatus::Starting
        );
        // An older writer, or no state file at all: the lock is all there is.
        assert_eq!(s(&sup, Some("restarts=0\n")), SlotStatus::Running);
        assert_eq!(s(&sup, None), SlotStatus::Running);
        // No supervisor proven, COMMAND (or another holder) is: orphaned,
        // whatever the state file still says.
        let orphan = Holders {
            supervisor: None,
            child: Some(11),
            others: Vec::new(),
        };
        assert_eq!(s(&orphan, Some("phase=running\n")), SlotStatus::Orphaned);
        let leftover = Holders {
            supervisor: None,
            child: None,
            others: vec![12],
        };
        assert_eq!(s(&leftover, Some("phase=running\n")), SlotStatus::Orphaned);
        // A foreign locker of a file without a state file is not called
        // an orphan: nothing says there ever was a supervisor.
        assert_eq!(s(&leftover, None), SlotStatus::Running);
    }
}
