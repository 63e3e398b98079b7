//! Read-only inspection and stopping: what `--check`, `--status` and
//! `--stop` do.
//!
//! Inspection never creates a file and never takes a slot: it opens slot
//! files read-only and holds a shared lock for an instant to learn whether
//! an exclusive holder exists (see `slot.rs` for why that cannot make a
//! concurrent start fail). A slot counts as running exactly when its file is
//! locked; the PID inside is shown only after `/proc` confirms that the
//! process holds the lock, and only such verified processes are signalled.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::piddir::PidDir;
use crate::proc::{Pidfd, find_lock_holders, holds_lock_on};
use crate::slot::{self, FileId, HeldInfo, Probe, parse_pid_file_name, pid_file_name};
use crate::state::SlotState;

/// The state of one slot, as `--status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStatus {
    /// Locked by a supervisor or a library daemon.
    Running,
    /// Locked by COMMAND after its supervisor died.
    Orphaned,
    /// A PID file nobody holds.
    Stale,
    /// Something rdaemon will not touch sits at the slot's path.
    Unusable,
    /// The slot could not be examined (permission denied, I/O error).
    Unknown,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Running => "running",
            SlotStatus::Orphaned => "orphaned",
            SlotStatus::Stale => "stale",
            SlotStatus::Unusable => "unusable",
            SlotStatus::Unknown => "unknown",
        }
    }

    /// Whether this slot counts as a running peer.
    pub fn is_held(self) -> bool {
        matches!(self, SlotStatus::Running | SlotStatus::Orphaned)
    }
}

/// One line of `--status`.
#[derive(Debug, Clone)]
pub struct SlotReport {
    pub slot: u32,
    pub state: SlotStatus,
    /// The verified lock holder named in the PID file (supervisor or
    /// library process); `None` when unknown or orphaned.
    pub pid: Option<i32>,
    /// COMMAND's PID, when verified.
    pub child_pid: Option<i32>,
    /// The MAINPID= COMMAND reported over sd_notify, if any.
    pub main_pid: Option<i32>,
    pub pid_file: PathBuf,
    pub started_unix: Option<u64>,
    pub heartbeat_age_s: Option<f64>,
    pub restarts: Option<u32>,
    pub last_exit: Option<String>,
    pub ready: Option<bool>,
    pub status_text: Option<String>,
    /// Why the slot is unusable or unknown.
    pub detail: Option<String>,
}

/// What a scan of NAME's slots found.
#[derive(Debug)]
pub struct Scan {
    /// False when the PID directory does not exist.
    pub dir_exists: bool,
    pub slots: Vec<SlotReport>,
}

/// How deep a scan looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Locks only (`--check` without `--max-age`).
    Locks,
    /// Locks and heartbeat ages (`--check --max-age`).
    Heartbeats,
    /// Also verify holders through /proc and read the state file.
    Full,
}

/// Lists the slot indices of `name` that have something at their path.
fn slot_indices(dir: &PidDir, name: &str) -> Result<Vec<u32>> {
    let listing = nix::dir::Dir::openat(
        dir.fd(),
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::io("list PID directory", dir.path(), e.into()))?;
    let mut indices: Vec<u32> = Vec::new();
    for entry in listing.into_iter() {
        let entry = entry.map_err(|e| Error::io("list PID directory", dir.path(), e.into()))?;
        if let Some(index) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|f| parse_pid_file_name(name, f))
        {
            indices.push(index);
        }
    }
    indices.sort_unstable();
    Ok(indices)
}

fn open_dir(pid_dir: &Path) -> Result<Option<PidDir>> {
    PidDir::open_existing(pid_dir)
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

fn scan_dir(dir: &PidDir, name: &str, depth: Depth) -> Result<Vec<SlotReport>> {
    let mut out = Vec::new();
    let mut unanswered = Vec::new();
    for index in slot_indices(dir, name)? {
        let pid_file = dir.path().join(pid_file_name(name, index));
        let mut report = SlotReport {
            slot: index,
            state: SlotStatus::Unknown,
            pid: None,
            child_pid: None,
            main_pid: None,
            pid_file,
            started_unix: None,
            heartbeat_age_s: None,
            restarts: None,
            last_exit: None,
            ready: None,
            status_text: None,
            detail: None,
        };
        let probe = if depth == Depth::Locks {
            slot::probe_lock(dir, name, index)
        } else {
            slot::probe(dir, name, index)
        };
        match probe {
            Probe::Missing => continue,
            Probe::Unusable(reason) => {
                report.state = SlotStatus::Unusable;
                report.detail = Some(reason);
            }
            Probe::Unknown(e) => report.detail = Some(e.to_string()),
            Probe::Stale => report.state = SlotStatus::Stale,
            Probe::Held(info) => {
                report.state = SlotStatus::Running;
                // The state file also carries the sd_notify watchdog time, which
                // the heartbeat age depends on.
                if depth == Depth::Locks {
                    out.push(report);
                    continue;
                }
                let state = SlotState::read(dir, name, index);
                let holders = (depth == Depth::Full).then(|| verify(&info, state.as_ref()));
                // Ask a supervisor that answers on demand for a heartbeat,
                // unless it cannot answer (gone: an orphaned slot; or
                // stopped). The answers are awaited after the loop, so the
                // supervisors of all slots answer at the same time.
                let answerer = holders.as_ref().map_or(info.pid, |h| h.supervisor);
                let asked = coarse_realtime();
                if state
                    .as_ref()
                    .is_some_and(|s| s.answers_probes && s.watchdog_unix_ms.is_none())
                    && info.mtime < asked
                    && answerer.is_some_and(can_answer)
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
                if let Some(holders) = holders {
                    report.pid = holders.supervisor;
                    report.child_pid = holders.child;
                    if holders.supervisor.is_none() && holders.child.is_some() {
                        report.state = SlotStatus::Orphaned;
                    }
                    if let Some(st) = state {
                        report.started_unix = st.started_unix;
                        report.restarts = Some(st.restarts);
                        report.last_exit = st.last_exit;
                        report.ready = st.ready;
                        report.main_pid = st.main_pid.filter(|&p| crate::proc::stat(p).is_some());
                        report.status_text = st.status_text;
                    }
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
/// stopped nor a zombie. Only decides whether waiting is worthwhile; the
/// PID (from the file, in `--check`) is trusted for nothing else.
fn can_answer(pid: i32) -> bool {
    crate::proc::stat(pid).is_some_and(|st| !matches!(st.state, b'T' | b't' | b'Z' | b'X'))
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

/// Processes proven to hold a slot.
#[derive(Debug, Default)]
struct Holders {
    /// The PID file's process, proven to hold the lock.
    supervisor: Option<i32>,
    /// COMMAND, proven to hold the lock or to be the supervisor's child.
    child: Option<i32>,
    /// Other processes holding the lock (found by a full /proc walk).
    others: Vec<i32>,
}

fn verify(info: &HeldInfo, state: Option<&SlotState>) -> Holders {
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
        // supervisor died (an orphan), or someone else locked it. Ask /proc
        // who holds the lock; a holder that is the verified child's parent
        // is its supervisor, so the slot is orphaned only if there is none.
        let holders = find_lock_holders(info.id);
        let parent = h.child.and_then(crate::proc::stat).map(|st| st.ppid);
        h.supervisor = holders.iter().copied().find(|&p| Some(p) == parent);
        h.others = holders
            .into_iter()
            .filter(|&p| Some(p) != h.supervisor && Some(p) != h.child)
            .collect();
    }
    h
}

fn child_verified(child: i32, supervisor: Option<i32>, id: FileId) -> bool {
    let parent_ok = supervisor.is_some()
        && crate::proc::stat(child).is_some_and(|st| Some(st.ppid) == supervisor);
    parent_ok || matches!(holds_lock_on(child, id), Ok(true))
}

/// Scans NAME's slots in `pid_dir` with holder verification (`--status`).
pub fn status(pid_dir: &Path, name: &str) -> Result<Scan> {
    crate::name::validate(name)?;
    match open_dir(pid_dir)? {
        None => Ok(Scan {
            dir_exists: false,
            slots: Vec::new(),
        }),
        Some(dir) => Ok(Scan {
            dir_exists: true,
            slots: scan_dir(&dir, name, Depth::Full)?,
        }),
    }
}

/// The verdict of `--check`, in LSB terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// At least K peers hold their slots (and their heartbeats are fresh).
    Healthy,
    /// Some peers run, but fewer than K, or a heartbeat is too old.
    Unhealthy,
    /// No peer runs, but a stale PID file remains.
    Stale,
    /// No peer runs.
    NotRunning,
    /// Cannot tell: unsafe directory, permission denied, unusable slot file.
    Unknown,
}

/// The result of `check`: the verdict and a one-line explanation.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub health: Health,
    pub summary: String,
}

/// `--check`: are at least `min_peers` peers of NAME holding their slots,
/// each with a heartbeat younger than `max_age`?
pub fn check(
    pid_dir: &Path,
    name: &str,
    min_peers: u32,
    max_age: Option<Duration>,
) -> Result<CheckResult> {
    crate::name::validate(name)?;
    let dir = match open_dir(pid_dir) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            return Ok(CheckResult {
                health: Health::NotRunning,
                summary: format!(
                    "{name}: not running (no PID directory {})",
                    pid_dir.display()
                ),
            });
        }
        Err(e) => {
            return Ok(CheckResult {
                health: Health::Unknown,
                summary: e.to_string(),
            });
        }
    };
    let depth = if max_age.is_some() {
        Depth::Heartbeats
    } else {
        Depth::Locks
    };
    let slots = match scan_dir(&dir, name, depth) {
        Ok(s) => s,
        Err(e) => {
            return Ok(CheckResult {
                health: Health::Unknown,
                summary: e.to_string(),
            });
        }
    };
    Ok(judge(name, &slots, min_peers, max_age))
}

/// Turns a scan into a verdict (shared by `--check` and `--status`).
pub fn judge(
    name: &str,
    slots: &[SlotReport],
    min_peers: u32,
    max_age: Option<Duration>,
) -> CheckResult {
    if let Some(bad) = slots
        .iter()
        .find(|s| matches!(s.state, SlotStatus::Unusable | SlotStatus::Unknown))
    {
        return CheckResult {
            health: Health::Unknown,
            summary: format!(
                "{name}: cannot tell: slot file {}: {}",
                bad.pid_file.display(),
                bad.detail.as_deref().unwrap_or("cannot examine it")
            ),
        };
    }
    let held: Vec<&SlotReport> = slots.iter().filter(|s| s.state.is_held()).collect();
    let stale = slots
        .iter()
        .filter(|s| s.state == SlotStatus::Stale)
        .count();
    if held.is_empty() {
        return if stale > 0 {
            CheckResult {
                health: Health::Stale,
                summary: format!("{name}: not running, {stale} stale PID file(s)"),
            }
        } else {
            CheckResult {
                health: Health::NotRunning,
                summary: format!("{name}: not running"),
            }
        };
    }
    if (held.len() as u64) < u64::from(min_peers) {
        return CheckResult {
            health: Health::Unhealthy,
            summary: format!(
                "{name}: {} of at least {min_peers} peers running",
                held.len()
            ),
        };
    }
    if let Some(max) = max_age
        && let Some(old) = held
            .iter()
            .find(|s| s.heartbeat_age_s.is_none_or(|a| a > max.as_secs_f64()))
    {
        return CheckResult {
            health: Health::Unhealthy,
            summary: format!(
                "{name}: slot {} heartbeat is {:.1}s old (limit {}s)",
                old.slot,
                old.heartbeat_age_s.unwrap_or(f64::INFINITY),
                max.as_secs_f64()
            ),
        };
    }
    CheckResult {
        health: Health::Healthy,
        summary: format!("{name}: {} peer(s) running", held.len()),
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn json_opt_str(v: Option<&str>) -> String {
    match v {
        None => "null".into(),
        Some(s) => {
            let mut out = String::new();
            json_str(&mut out, s);
            out
        }
    }
}

/// `--status --json`: an array with one object per slot.
pub fn to_json(slots: &[SlotReport]) -> String {
    let mut out = String::from("[");
    for (i, s) in slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"slot\":{},\"state\":\"{}\",\"pid\":{},\"child_pid\":{},\"main_pid\":{},\"pid_file\":",
            s.slot,
            s.state.as_str(),
            json_opt(s.pid),
            json_opt(s.child_pid),
            json_opt(s.main_pid)
        );
        json_str(&mut out, &s.pid_file.to_string_lossy());
        let _ = write!(
            out,
            ",\"started_unix\":{},\"heartbeat_age_s\":{},\"restarts\":{},\"last_exit\":{},\"ready\":{},\"status_text\":{},\"detail\":{}}}",
            json_opt(s.started_unix),
            json_opt(s.heartbeat_age_s.map(|a| format!("{a:.1}"))),
            json_opt(s.restarts),
            json_opt_str(s.last_exit.as_deref()),
            json_opt(s.ready),
            json_opt_str(s.status_text.as_deref()),
            json_opt_str(s.detail.as_deref()),
        );
    }
    out.push(']');
    out
}

fn fmt_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `--status` as text: a header and one line per slot.
pub fn to_text(name: &str, slots: &[SlotReport]) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = format!(
        "{:<5} {:<9} {:>8} {:>9} {:>8} {:>9} {:>8}  {}\n",
        "SLOT", "STATE", "PID", "CHILD", "UPTIME", "HEARTBEAT", "RESTARTS", "LAST EXIT"
    );
    for s in slots {
        let dash = || "-".to_string();
        let _ = writeln!(
            out,
            "{:<5} {:<9} {:>8} {:>9} {:>8} {:>9} {:>8}  {}",
            s.slot,
            s.state.as_str(),
            s.pid.map_or_else(dash, |p| p.to_string()),
            s.child_pid.map_or_else(dash, |p| p.to_string()),
            s.started_unix
                .map_or_else(dash, |t| fmt_duration(now.saturating_sub(t))),
            s.heartbeat_age_s.map_or_else(dash, |a| format!("{a:.1}s")),
            s.restarts.map_or_else(dash, |r| r.to_string()),
            s.last_exit
                .clone()
                .or_else(|| s.detail.clone())
                .unwrap_or_else(dash),
        );
    }
    if slots.is_empty() {
        let _ = writeln!(out, "(no slot files for {name})");
    }
    out
}

/// What `--stop` did to one slot.
#[derive(Debug)]
pub struct StopOutcome {
    pub slot: u32,
    pub pid_file: PathBuf,
    /// Gone: the lock was released.
    pub stopped: bool,
    /// Why not, when not.
    pub problem: Option<String>,
}

/// One held slot being stopped.
struct Target {
    slot: u32,
    pid_file: PathBuf,
    id: FileId,
    supervisor: Option<Pidfd>,
    child: Option<Pidfd>,
    others: Vec<Pidfd>,
    problem: Option<String>,
}

impl Target {
    fn send_all(&mut self, sig: i32, include_child: bool) {
        let mut errors = Vec::new();
        let mut sent = false;
        if let Some(p) = &self.supervisor {
            match p.signal(sig) {
                Ok(()) => sent = true,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => errors.push(format!("cannot signal PID {}: {e}", p.pid())),
            }
        }
        // With a live supervisor, TERM goes to it alone: it stops COMMAND
        // itself. COMMAND's group is hit directly when orphaned, and on KILL.
        if include_child || self.supervisor.is_none() {
            if let Some(c) = &self.child {
                match c.signal_group(sig).or_else(|_| c.signal(sig)) {
                    Ok(()) => sent = true,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => errors.push(format!("cannot signal PID {}: {e}", c.pid())),
                }
            }
            for o in &self.others {
                match o.signal(sig) {
                    Ok(()) => sent = true,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => errors.push(format!("cannot signal PID {}: {e}", o.pid())),
                }
            }
        }
        if !errors.is_empty() {
            self.problem = Some(errors.join("; "));
        } else if !sent
            && self.supervisor.is_none()
            && self.child.is_none()
            && self.others.is_empty()
        {
            self.problem.get_or_insert_with(|| {
                "no process holding its lock could be identified (permission denied?)".into()
            });
        }
    }
}

fn pin(pid: i32, check: impl Fn(i32) -> bool) -> Option<Pidfd> {
    // Open the pidfd first, then verify: see proc.rs for why this order
    // closes the PID-reuse race.
    let fd = Pidfd::open(pid).ok()?;
    check(pid).then_some(fd)
}

/// `--stop`: SIGTERM to every peer of NAME, SIGKILL after `timeout` to what
/// is left (COMMAND's process group included), and wait until every lock is
/// released. Only processes proven to hold the slot lock are signalled.
pub fn stop(pid_dir: &Path, name: &str, timeout: Duration) -> Result<Vec<StopOutcome>> {
    crate::name::validate(name)?;
    let Some(dir) = open_dir(pid_dir)? else {
        return Ok(Vec::new());
    };
    let mut targets = Vec::new();
    let mut outcomes = Vec::new();
    for index in slot_indices(&dir, name)? {
        let pid_file = dir.path().join(pid_file_name(name, index));
        match slot::probe(&dir, name, index) {
            Probe::Held(info) => {
                let state = SlotState::read(&dir, name, index);
                // Verify, then pin each process with a pidfd and verify
                // again: see proc.rs for why this order is race-free.
                let found = verify(&info, state.as_ref());
                let holds = |p: i32| matches!(holds_lock_on(p, info.id), Ok(true));
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
                    supervisor,
                    child,
                    others,
                    problem: None,
                });
            }
            Probe::Stale => {
                let _ = slot::remove_if_stale(&dir, name, index);
            }
            Probe::Missing => {}
            Probe::Unusable(reason) => outcomes.push(StopOutcome {
                slot: index,
                pid_file,
                stopped: false,
                problem: Some(format!("left alone: {reason}")),
            }),
            Probe::Unknown(e) => outcomes.push(StopOutcome {
                slot: index,
                pid_file,
                stopped: false,
                problem: Some(e.to_string()),
            }),
        }
    }
    for t in &mut targets {
        t.send_all(libc::SIGTERM, false);
    }
    let still_held = |t: &Target| matches!(slot::probe_lock(&dir, name, t.slot), Probe::Held(ref i) if i.id == t.id);
    wait_until(Instant::now() + timeout, || {
        targets.iter().all(|t| !still_held(t))
    });
    let survivors: Vec<usize> = (0..targets.len())
        .filter(|&i| still_held(&targets[i]))
        .collect();
    if !survivors.is_empty() {
        for &i in &survivors {
            targets[i].send_all(libc::SIGKILL, true);
        }
        // SIGKILL cannot be caught; the kernel releases the locks as soon as
        // the holders are reaped. Give that a moment.
        wait_until(Instant::now() + Duration::from_secs(5), || {
            targets.iter().all(|t| !still_held(t))
        });
    }
    // A peer is gone when its lock is free, and the exit status says so.
    // Its processes release the lock a moment before they terminate, so
    // give them that moment: a caller that goes on to check `ps` or start
    // afresh should not meet the old processes.
    // Only rdaemon's own processes are waited for: a library daemon (no
    // child) may go on running after it released its slot.
    let pinned: Vec<&Pidfd> = targets
        .iter()
        .filter(|t| t.child.is_some() && !still_held(t))
        .flat_map(|t| {
            t.supervisor
                .iter()
                .chain(t.child.iter())
                .chain(t.others.iter())
        })
        .collect();
    wait_until(Instant::now() + Duration::from_secs(2), || {
        pinned.iter().all(|p| p.exited())
    });
    for t in targets {
        let stopped = !still_held(&t);
        if stopped {
            let _ = slot::remove_if_stale(&dir, name, t.slot);
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
            problem,
        });
    }
    outcomes.sort_by_key(|o| o.slot);
    Ok(outcomes)
}

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
