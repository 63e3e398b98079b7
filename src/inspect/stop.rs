//! `--stop`: SIGTERM to each peer's supervisor, each peer's own grace, then
//! SIGKILL to every process that still holds the slot's lock; then the
//! slot's side files go.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::scan::{child_verified, is_namespace_init, read_held, slot_indices};
use super::{join_pids, wait_until};
use crate::error::Result;
use crate::piddir::PidDir;
use crate::proc::{Pidfd, find_lock_holders, holds_lock_on};
use crate::slot::{self, FileId, Probe, pid_file_name};
use crate::state::Phase;

/// Added to a peer's own `--stop-timeout` for the default grace: the
/// supervisor needs that long to stop COMMAND itself, plus a moment to
/// reap, release and exit.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);

/// Why a peer whose supervisor is a PID namespace's init is not signalled.
pub(super) const NAMESPACE_INIT: &str = "its supervisor is PID 1 of this PID namespace (a container's init): stop the container, or send it SIGTERM yourself";

/// The grace for a peer that does not publish its `--stop-timeout`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--stop` did to one slot.
#[non_exhaustive]
#[derive(Debug)]
pub struct StopOutcome {
    /// The slot's index (1-based).
    pub slot: u32,
    /// The slot's PID file.
    pub pid_file: PathBuf,
    /// Gone: the lock was released.
    pub stopped: bool,
    /// How long it waited after SIGTERM before SIGKILL.
    pub grace: Duration,
    /// The processes that got SIGKILL (empty when SIGTERM sufficed).
    pub killed: Vec<i32>,
    /// Whether the SIGKILL was also written to the peer's `--log`.
    pub kill_logged: bool,
    /// Why not stopped, when not.
    pub problem: Option<String>,
}

/// One held slot being stopped.
struct Target {
    slot: u32,
    pid_file: PathBuf,
    id: FileId,
    grace: Duration,
    supervisor: Option<Pidfd>,
    child: Option<Pidfd>,
    others: Vec<Pidfd>,
    /// Its state file (the holder's own) says it is stopping for good
    /// already: a second SIGTERM would cut its grace short. One stopping
    /// to restart COMMAND gets SIGTERM like a running one.
    stopping: bool,
    /// Descendants of the supervisor and COMMAND pinned at SIGKILL time
    /// (a process that closed the inherited lock and left COMMAND's
    /// session holds no lock, but is the peer's all the same).
    descendants: Vec<Pidfd>,
    /// The peer's log, found among its supervisor's descriptors.
    log: Option<File>,
    killed: Vec<i32>,
    problem: Option<String>,
}

impl Target {
    fn signal_one(p: &Pidfd, sig: i32, errors: &mut Vec<String>) -> bool {
        match p.signal(sig) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => false,
            Err(e) => {
                errors.push(format!("cannot signal PID {}: {e}", p.pid()));
                false
            }
        }
    }

    /// SIGTERM: to the supervisor alone, which stops COMMAND itself; to
    /// COMMAND's group and every other holder when there is none.
    fn terminate(&mut self) {
        let mut errors = Vec::new();
        let mut sent = false;
        if let Some(p) = &self.supervisor {
            // A supervisor that is stopping already (another --stop, a
            // SIGTERM from systemd) is only waited for: a second SIGTERM
            // tells it to give up the grace.
            sent |= self.stopping || Self::signal_one(p, libc::SIGTERM, &mut errors);
        } else {
            if let Some(c) = &self.child {
                sent |= c.signal_group(libc::SIGTERM).is_ok()
                    || Self::signal_one(c, libc::SIGTERM, &mut errors);
            }
            for o in &self.others {
                sent |= Self::signal_one(o, libc::SIGTERM, &mut errors);
            }
        }
        if !errors.is_empty() {
            self.problem = Some(errors.join("; "));
        } else if !sent
            && self.supervisor.is_none()
            && self.child.is_none()
            && self.others.is_empty()
        {
            self.problem =
                Some("no process holding its lock could be identified (permission denied?)".into());
        }
    }

    /// SIGKILL to the supervisor, COMMAND's group, and every process that
    /// holds the lock now (found afresh: COMMAND may have forked since).
    fn kill(&mut self) {
        self.pin_descendants();
        let mut errors = Vec::new();
        let holds = |p: i32| matches!(holds_lock_on(p, self.id), Ok(true));
        let fresh: Vec<Pidfd> = find_lock_holders(self.id)
            .into_iter()
            .filter_map(|p| pin(p, holds))
            .collect();
        let mut killed = Vec::new();
        if let Some(c) = &self.child
            && c.signal_group(libc::SIGKILL).is_ok()
        {
            killed.push(c.pid());
        }
        // Descendants first, then the holders: each is pinned, so none
        // can be mistaken for a new process once its parent is gone.
        for p in self
            .descendants
            .iter()
            .chain(self.supervisor.iter())
            .chain(self.child.iter())
            .chain(self.others.iter())
            .chain(fresh.iter())
        {
            if Self::signal_one(p, libc::SIGKILL, &mut errors) && !killed.contains(&p.pid()) {
                killed.push(p.pid());
            }
        }
        self.others.extend(fresh);
        for pid in killed {
            if !self.killed.contains(&pid) {
                self.killed.push(pid);
            }
        }
        if !errors.is_empty() {
            self.problem = Some(errors.join("; "));
        }
    }
}

impl Target {
    /// Pins every live descendant of the supervisor and of COMMAND: walks
    /// `/proc`, opens a pidfd on each, then checks again that it descends
    /// from the root, and that the root is still the pinned process (so
    /// the walk was of the right tree). Adds them to `descendants`.
    fn pin_descendants(&mut self) {
        let roots: Vec<&Pidfd> = self
            .supervisor
            .iter()
            .chain(self.child.iter())
            .filter(|r| r.alive())
            .collect();
        let mut found = Vec::new();
        for root in roots {
            for pid in crate::proc::descendants_of(root.pid()) {
                if self.descendants.iter().any(|d| d.pid() == pid)
                    || found.iter().any(|d: &Pidfd| d.pid() == pid)
                {
                    continue;
                }
                if let Some(fd) = pin(pid, |p| {
                    crate::proc::descends_from(p, root.pid()) && root.alive()
                }) {
                    found.push(fd);
                }
            }
        }
        self.descendants.extend(found);
    }
}

fn pin(pid: i32, check: impl Fn(i32) -> bool) -> Option<Pidfd> {
    // Open the pidfd first, then verify: see proc.rs for why this order
    // closes the PID-reuse race.
    let fd = Pidfd::open(pid).ok()?;
    check(pid).then_some(fd)
}

/// The peer's `--log`, if its supervisor has one: the regular file it
/// holds open for appending. Opened through `/proc/PID/fd`, which needs
/// the same permission as signalling it.
fn find_log(supervisor: i32, slot_file: FileId) -> Option<File> {
    let fd_dir = format!("/proc/{supervisor}/fd");
    for entry in std::fs::read_dir(&fd_dir).ok()?.flatten() {
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() || (meta.dev() == slot_file.dev && meta.ino() == slot_file.ino) {
            continue;
        }
        let fdinfo = format!(
            "/proc/{supervisor}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        );
        let appends = std::fs::read_to_string(fdinfo).is_ok_and(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .is_some_and(|f| f & libc::O_APPEND as u32 != 0)
        });
        if appends {
            return std::fs::OpenOptions::new()
                .append(true)
                .open(entry.path())
                .ok();
        }
    }
    None
}

/// `--stop`: stops every peer of NAME (only slot `only`, when given):
/// SIGTERM to each supervisor, then, after `timeout` (default: each peer's
/// own `--stop-timeout`, 10 s for a peer that publishes none, plus
/// `STOP_MARGIN`, 5 s), SIGKILL to everything that
/// still holds the slot's lock. Waits until every lock is released (or
/// SIGKILL failed), then removes what the peers left: stale PID files,
/// state files and tombstones, notify sockets. Only processes proven to
/// hold a slot lock are signalled. Blocks for up to the longest grace plus
/// a few seconds. Errors: a bad NAME, an unsafe or unreadable directory;
/// per-slot failures are in the outcomes.
pub fn stop(
    pid_dir: &Path,
    name: &str,
    only: Option<u32>,
    timeout: Option<Duration>,
) -> Result<Vec<StopOutcome>> {
    crate::name::validate(name)?;
    let Some(dir) = PidDir::open_existing(pid_dir)? else {
        return Ok(Vec::new());
    };
    let mut targets = Vec::new();
    let mut outcomes = Vec::new();
    let mut leftovers = Vec::new();
    let indices = slot_indices(&dir, name)?;
    for index in indices.into_iter().filter(|&i| only.is_none_or(|o| o == i)) {
        let pid_file = dir.path().join(pid_file_name(name, index));
        let outcome = |problem: String| StopOutcome {
            slot: index,
            pid_file: pid_file.clone(),
            stopped: false,
            grace: Duration::ZERO,
            killed: Vec::new(),
            kill_logged: false,
            problem: Some(problem),
        };
        match slot::probe(&dir, name, index) {
            Probe::Held(info) => {
                let (state, found) = read_held(&dir, name, index, &info);
                let grace = timeout.unwrap_or_else(|| {
                    state
                        .as_ref()
                        .and_then(|s| s.stop_timeout_ms)
                        .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_millis)
                        + STOP_MARGIN
                });
                // Verify, then pin each process with a pidfd and verify
                // again: see proc.rs for why this order is race-free.
                let holds = |p: i32| matches!(holds_lock_on(p, info.id), Ok(true));
                if found.supervisor.is_some_and(is_namespace_init) {
                    outcomes.push(outcome(NAMESPACE_INIT.into()));
                    continue;
                }
                let supervisor = found.supervisor.and_then(|p| pin(p, holds));
                let sup_pid = supervisor.as_ref().map(Pidfd::pid);
                let child = found
                    .child
                    .and_then(|c| pin(c, |c| child_verified(c, sup_pid, info.id)));
                let others = found
                    .others
                    .into_iter()
                    .filter_map(|p| pin(p, holds))
                    .collect();
                targets.push(Target {
                    slot: index,
                    pid_file,
                    id: info.id,
                    grace,
                    log: sup_pid.and_then(|p| find_log(p, info.id)),
                    stopping: state.as_ref().is_some_and(|s| {
                        s.phase == Some(Phase::Stopping) && s.exiting != Some(false)
                    }),
                    descendants: Vec::new(),
                    supervisor,
                    child,
                    others,
                    killed: Vec::new(),
                    problem: None,
                });
            }
            Probe::Stale | Probe::Missing => leftovers.push(index),
            Probe::Unusable(reason) => outcomes.push(outcome(format!("left alone: {reason}"))),
            Probe::Unknown(e) => outcomes.push(outcome(e.to_string())),
        }
    }
    for t in &mut targets {
        t.terminate();
    }
    let still_held = |t: &Target| matches!(slot::probe_lock(&dir, name, t.slot), Probe::Held(ref i) if i.id == t.id);
    let started = Instant::now();
    // Each target gets its own grace; SIGKILL goes to each as its grace
    // runs out, while the others keep theirs.
    let mut pending: Vec<usize> = (0..targets.len()).collect();
    while !pending.is_empty() {
        pending.retain(|&i| still_held(&targets[i]));
        let now = Instant::now();
        let (due, waiting): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| started + targets[i].grace <= now);
        for &i in &due {
            targets[i].kill();
        }
        pending = waiting;
        let Some(next) = pending.iter().map(|&i| started + targets[i].grace).min() else {
            break;
        };
        wait_until(next, || pending.iter().all(|&i| !still_held(&targets[i])));
    }
    // SIGKILL cannot be caught; the kernel releases a lock as soon as its
    // last holder is gone. Keep killing holders that appear (a fork racing
    // the kill) for a few seconds.
    let kill_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let survivors: Vec<usize> = (0..targets.len())
            .filter(|&i| !targets[i].killed.is_empty() && still_held(&targets[i]))
            .collect();
        if survivors.is_empty() || Instant::now() >= kill_deadline {
            break;
        }
        for &i in &survivors {
            targets[i].kill();
        }
        wait_until(
            (Instant::now() + Duration::from_millis(200)).min(kill_deadline),
            || survivors.iter().all(|&i| !still_held(&targets[i])),
        );
    }
    // A peer is gone when its lock is free. Its processes release the lock
    // a moment before they terminate, so give them that moment: a caller
    // that goes on to check `ps` or start afresh should not meet them.
    // Only rdaemon's own processes are waited for: a library daemon (no
    // child) may go on running after it released its slot.
    let pinned: Vec<&Pidfd> = targets
        .iter()
        .filter(|t| (t.child.is_some() || !t.descendants.is_empty()) && !still_held(t))
        .flat_map(|t| {
            t.supervisor
                .iter()
                .chain(t.child.iter())
                .chain(t.others.iter())
                .chain(t.descendants.iter())
        })
        .collect();
    wait_until(Instant::now() + Duration::from_secs(2), || {
        pinned.iter().all(|p| p.exited())
    });
    for mut t in targets {
        // A process of the peer's tree that SIGKILL did not end (it
        // cannot be signalled, or sleeps uninterruptibly) is named.
        let survivors: Vec<i32> = t
            .descendants
            .iter()
            .filter(|d| !d.exited())
            .map(Pidfd::pid)
            .collect();
        let released = !still_held(&t);
        let stopped = released && survivors.is_empty();
        if !survivors.is_empty() && t.problem.is_none() {
            t.problem = Some(format!(
                "PID(s) {} of its process tree still running after SIGKILL",
                join_pids(&survivors)
            ));
        }
        if released {
            leftovers.push(t.slot);
        }
        let mut kill_logged = false;
        if !t.killed.is_empty()
            && let Some(log) = &mut t.log
        {
            let line = format!(
                "{} rdaemon[{}]: {name}: slot {}: did not stop within {:.1}s of SIGTERM; sent SIGKILL to PID(s) {}\n",
                crate::timefmt::rfc3339_utc(SystemTime::now()),
                std::process::id(),
                t.slot,
                t.grace.as_secs_f64(),
                join_pids(&t.killed)
            );
            kill_logged = log.write_all(line.as_bytes()).is_ok();
        }
        let problem = if stopped {
            None
        } else {
            Some(
                t.problem
                    .unwrap_or_else(|| "still holds its lock after SIGKILL".into()),
            )
        };
        outcomes.push(StopOutcome {
            slot: t.slot,
            pid_file: t.pid_file,
            stopped,
            grace: t.grace,
            killed: t.killed,
            kill_logged,
            problem,
        });
    }
    for index in leftovers {
        if let Err(e) = slot::clear_leftovers(&dir, name, index) {
            log::warn!("{e}");
        }
    }
    outcomes.sort_by_key(|o| o.slot);
    Ok(outcomes)
}
