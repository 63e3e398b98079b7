//! The library API: a program that holds one of NAME's slots itself.
//!
//! `Daemon::builder(name)…build()?`, then `start()`, a `heartbeat()` per
//! job, and `stop()`; see [`Daemon`] for the loop and [`StopToken`] for
//! threads and event loops.
//!
//! The heartbeat's hot path is a check of the recorded reason, one relaxed
//! atomic load (the stop token's cell, where signal handlers and other
//! threads record a stop), a counter compared with the next count-based
//! check (job limit, memory ceiling), and a read of the coarse monotonic
//! clock compared with the next time-based check (slot verification and
//! heartbeat mtime, memory, watchdog ping, run-time limit). Everything else
//! is on the cold path.

mod builder;
mod notify;
pub(crate) mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use builder::Builder;
use notify::Notifier;
use token::{Shared, reason_of};
pub use token::{StopReason, StopToken};

use crate::error::{Error, Result};
use crate::piddir::PidDir;
use crate::signals::StopSignals;
use crate::slot::{Attempt, HeldSlot};
use crate::state::SlotState;

/// How many true heartbeats may pass between two memory checks when a
/// memory limit is set: at least [`MEMORY_EVERY_MIN`], at most
/// [`MEMORY_EVERY_MAX`]. A check is a `getrusage` (the peak RSS, a cheap
/// filter: a syscall of a microsecond or so) and, only once the peak
/// passed the limit, a read of `/proc/self/statm` (a few microseconds).
/// The interval adapts to the growth seen since the last check: half the
/// heartbeats the headroom left would last at that rate, so a process that
/// grows steadily is stopped within 64 jobs' allocations of the ceiling,
/// and one whose memory stays flat pays a check only every 1024 calls.
const MEMORY_EVERY_MIN: u64 = 64;
/// See [`MEMORY_EVERY_MIN`].
const MEMORY_EVERY_MAX: u64 = 1024;

/// How many times this process forked (counted in the parent by a
/// `pthread_atfork` hook installed by the first `start()`): a `stop()`
/// looks for forked children that share its lock only if this grew since
/// its `start()`.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Installs the fork counter once; false if it could not be.
fn count_forks() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: pthread_atfork(3) with only a parent hook, a plain function
    // that does one atomic add (async-signal-safe).
    *INSTALLED.get_or_init(|| unsafe { libc::pthread_atfork(None, Some(count_fork), None) } == 0)
}

/// One peer of a named daemon: after [`start`](Daemon::start), this process
/// holds one of the name's slots (a locked PID file naming it) and is seen
/// by `rdaemon --check/--status/--stop` exactly like a daemon the `rdaemon`
/// command started.
///
/// ```
/// use std::time::Duration;
/// use rdaemon::{Daemon, StopReason};
/// # fn do_one_job() {}
/// # fn main() -> Result<(), rdaemon::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let mut daemon = Daemon::builder("mailer")
///     .max_peers(3)                       // at most 3 copies at once
///     # .pid_dir(dir.path().join("run"))
///     .lease(Duration::from_secs(30))     // what --check --max-age expects
///     .max_jobs(10_000)                   // then recycle (optional)
///     .build()?;
/// daemon.start()?; // Err(Busy) names the holders when all 3 slots are taken
/// while daemon.heartbeat() {
///     do_one_job();
/// }
/// eprintln!("stopping: {}", daemon.stop_reason().unwrap());
/// daemon.stop()?; // releases the slot and removes the PID file
/// # Ok(())
/// # }
/// ```
///
/// `heartbeat()` is false once a stop signal arrived, a stop was requested
/// through a [`StopToken`], the slot's lock was lost, the memory ceiling
/// passed, or a job or run-time limit was reached; once false it stays
/// false, and [`stop_reason`](Daemon::stop_reason) says why.
///
/// A `Daemon` is not shared between threads: its owner calls
/// `heartbeat()`, and other threads hold a [`StopToken`] (see there for a
/// threads example). An event loop waits on the token's descriptor; with
/// tokio:
///
/// ```
/// # async fn serve(_: ()) {}
/// # async fn next_job() { std::future::pending::<()>().await }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
/// # rt.block_on(async {
/// use tokio::io::unix::AsyncFd;
/// let mut daemon = rdaemon::Daemon::builder("api")
///     # .pid_dir(dir.path().join("run")).handle_signals(false)
///     .build()?;
/// daemon.start()?;
/// // SAFETY: a StopToken's descriptor stays open, and the same, for as
/// // long as the token lives.
/// let stop = unsafe { AsyncFd::register(daemon.stop_token()) }?;
/// // heartbeat() on a timer as well, not only after jobs: an idle worker
/// // must still record its heartbeat (`rdaemon --check --max-age`), send
/// // WATCHDOG=1 under a service manager's watchdog, and notice a lost
/// // lock, the memory ceiling or the run-time limit, which only a
/// // heartbeat finds (the token wakes for signals and requests).
/// let mut tick = tokio::time::interval(daemon.lease() / 2);
/// # daemon.stop_token().request();
/// loop {
///     tokio::select! {
///         _ = stop.readable() => break, // SIGTERM, a request, ...
///         _ = tick.tick() => {}
///         job = next_job() => serve(job).await,
///     }
///     if !daemon.heartbeat() {
///         break;
///     }
/// }
/// eprintln!("stopping: {}", daemon.stop_reason().unwrap());
/// daemon.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
///
/// Stopping from outside: `rdaemon --stop NAME` sends SIGTERM and waits
/// for the slot to be released, then sends SIGKILL. A library peer gets
/// the grace it publishes with [`Builder::stop_timeout`], or 10 s when it
/// publishes none (independent of its lease), plus a 5 s margin; `--stop
/// --timeout SECS` overrides both.
///
/// Forking: a child forked after `start()` inherits the lock (the slot
/// stays held while it runs), but its `stop()` and drop change no file and
/// release nothing, as FreeBSD's `pidfile_remove` rule says: only the
/// process that called `start()` cleans up, and even it leaves the files
/// in place while such a child still runs (see [`Daemon::stop`]). The
/// child's stop token is its own: a stop there (a signal, a request) sets
/// only the child's view, and never wakes the parent's descriptor; see
/// [`StopToken`]'s `AsFd` for the descriptor in a child.
#[derive(Debug)]
pub struct Daemon {
    // The heartbeat's hot fields first.
    /// Why heartbeat() is false; `None` while it is true.
    reason: Option<StopReason>,
    /// A stop recorded in the cell that no heartbeat has seen yet, as
    /// [`Daemon::stop_reason`] found it (cleared by `start()`).
    seen: std::cell::OnceCell<StopReason>,
    shared: Arc<Shared>,
    /// True heartbeats given in this run.
    answered: u64,
    /// When `answered` reaches this, the count-based check runs.
    check_at_count: u64,
    /// When the coarse clock reaches this, the time-based check runs.
    check_at_ns: u64,
    /// Heartbeats between memory checks now, and what the last check saw
    /// (bytes; the peak RSS, or the current one once the peak passed the
    /// limit) at which `answered` count.
    memory_every: u64,
    memory_level: u64,
    memory_checked_at: u64,
    /// `FORKS` at start(); `None` when forks are not counted.
    forks_at_start: Option<u64>,

    name: String,
    max_peers: u32,
    pid_dir: PathBuf,
    lease: Duration,
    memory_limit: Option<u64>,
    max_jobs: Option<u64>,
    max_runtime: Option<Duration>,
    stop_timeout: Option<Duration>,
    stop_signals: Vec<i32>,
    handle_signals: bool,
    sd_notify: bool,
    check_every_ns: u64,

    held: Option<HeldSlot>,
    /// The process that called start(): the only one that may clean up.
    owner: Option<u32>,
    signals: Option<StopSignals>,
    notifier: Option<Notifier>,
    /// The next slot verification, watchdog ping and run-time limit, on
    /// the coarse monotonic clock (`u64::MAX`: never).
    verify_at_ns: u64,
    watchdog_at_ns: u64,
    runtime_ends_ns: u64,
    /// A previous run ended: the next start() needs a fresh stop cell.
    ended: bool,
    state: SlotState,
    /// The vetted `etcd()` settings, if any.
    #[cfg(feature = "etcd")]
    cluster: Option<crate::etcd::ClusterConfig>,
    /// The fleet-wide slot held while started.
    #[cfg(feature = "etcd")]
    cluster_lease: Option<crate::etcd::ClusterLease>,
}

impl Daemon {
    /// Starts configuring a daemon called `name` (1 to 64 ASCII letters,
    /// digits, `.`, `_`, `-`, starting with a letter or digit; checked by
    /// [`Builder::build`]).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder::new(name.into())
    }

    fn from_builder(b: Builder, pid_dir: PathBuf) -> Result<Daemon> {
        #[cfg(feature = "etcd")]
        let cluster = crate::etcd::vet_library_config(&b.cluster).map_err(Error::InvalidConfig)?;
        let check_every = (b.lease / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        Ok(Daemon {
            reason: Some(StopReason::NotRunning),
            seen: std::cell::OnceCell::new(),
            shared: Shared::new()?,
            answered: 0,
            check_at_count: u64::MAX,
            check_at_ns: u64::MAX,
            memory_every: MEMORY_EVERY_MIN,
            memory_level: 0,
            memory_checked_at: 0,
            forks_at_start: None,
            name: b.name,
            max_peers: b.max_peers,
            pid_dir,
            lease: b.lease,
            memory_limit: b.memory_limit,
            max_jobs: b.max_jobs,
            max_runtime: b.max_runtime,
            stop_timeout: b.stop_timeout,
            stop_signals: b.stop_signals,
            handle_signals: b.handle_signals,
            sd_notify: b.sd_notify,
            check_every_ns: nanos(check_every),
            held: None,
            owner: None,
            signals: None,
            notifier: None,
            verify_at_ns: u64::MAX,
            watchdog_at_ns: u64::MAX,
            runtime_ends_ns: u64::MAX,
            ended: false,
            state: SlotState::default(),
            #[cfg(feature = "etcd")]
            cluster,
            #[cfg(feature = "etcd")]
            cluster_lease: None,
        })
    }

    /// Takes the first free slot: creates the PID directory if needed,
    /// locks the slot's PID file and writes this process's PID into it,
    /// writes the state file beside it, installs the stop signals'
    /// handlers, and opens `$NOTIFY_SOCKET` if set.
    ///
    /// # Blocking
    ///
    /// Normally a few system calls. A slot that a `--check` or `--status`
    /// reader has locked for an instant is retried for up to 3 s.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy) when every slot is held
    /// ([`Error::Busy`] names the holders' PIDs);
    /// [`ErrorKind::UnsafeDir`](crate::ErrorKind::UnsafeDir) and
    /// [`ErrorKind::UnusableSlot`](crate::ErrorKind::UnusableSlot) for a
    /// PID directory or slot path rdaemon will not use;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the file or call
    /// that failed;
    /// [`ErrorKind::State`](crate::ErrorKind::State) when already started;
    /// with `etcd()`, [`Error::ClusterBusy`] (kind
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy)) when every fleet-wide
    /// slot is held and [`Error::ClusterUnavailable`] (kind
    /// [`ErrorKind::Io`](crate::ErrorKind::Io)) when etcd cannot be reached.
    /// A failed start holds no slot and leaves no file behind.
    ///
    /// # Signals
    ///
    /// Installs the stop signals' actions, except for a signal that is
    /// ignored (SIG_IGN) at this moment, such as SIGHUP under `nohup`: it
    /// stays ignored and does not stop this run.
    pub fn start(&mut self) -> Result<()> {
        if self.held.is_some() {
            return Err(Error::State(
                "start() called on a daemon that is already started",
            ));
        }
        // What can fail without side effects comes first.
        let notifier = if self.sd_notify {
            Notifier::from_env()
        } else {
            None
        };
        // A cell made by another process (this one was forked after the
        // Daemon was built) is not ours to wake or wait on: begin afresh.
        if self.ended || !self.shared.owned_here() {
            self.shared = Shared::new()?;
            self.ended = false;
        }
        let dir = PidDir::open_or_create(&self.pid_dir)?;
        let held = self.take_slot(&dir)?;
        #[cfg(feature = "etcd")]
        if let Err(e) = self.claim_cluster_slot(held.index()) {
            release_quietly(held);
            return Err(e);
        }
        self.state = SlotState {
            started_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            lease_ms: Some(millis(self.lease)),
            stop_timeout_ms: self.stop_timeout.map(millis),
            phase: Some(crate::state::Phase::Running),
            mode: Some(crate::state::HolderMode::Library),
            ..SlotState::default()
        };
        if let Err(e) = self.state.write(held.dir(), &self.name, held.index()) {
            release_quietly(held);
            return Err(e);
        }
        let signals = if self.handle_signals && !self.stop_signals.is_empty() {
            match StopSignals::install(&self.stop_signals, &self.shared) {
                Ok(s) => Some(s),
                Err(e) => {
                    release_quietly(held);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let now = coarse_now_ns();
        self.held = Some(held);
        self.owner = Some(std::process::id());
        self.signals = signals;
        self.verify_at_ns = now.saturating_add(self.check_every_ns);
        self.watchdog_at_ns = match notifier.as_ref().and_then(|n| n.watchdog_every) {
            Some(every) => now.saturating_add(nanos(every)),
            None => u64::MAX,
        };
        self.runtime_ends_ns = match self.max_runtime {
            Some(limit) => now.saturating_add(nanos(limit)),
            None => u64::MAX,
        };
        self.notifier = notifier;
        self.answered = 0;
        self.memory_every = MEMORY_EVERY_MIN;
        self.memory_level = 0;
        self.memory_checked_at = 0;
        self.forks_at_start =
            count_forks().then(|| FORKS.load(std::sync::atomic::Ordering::Relaxed));
        self.reason = None;
        self.seen = std::cell::OnceCell::new();
        self.schedule(now);
        Ok(())
    }

    /// With `etcd()`: claims a fleet-wide slot for the local slot `index`
    /// just taken; its loss stops this run ([`StopReason::LeaseLost`]) as a
    /// token would, so heartbeat()'s one atomic load covers the lease too.
    #[cfg(feature = "etcd")]
    fn claim_cluster_slot(&mut self, index: u32) -> Result<()> {
        let Some(cfg) = &self.cluster else {
            return Ok(());
        };
        let lease =
            crate::etcd::ClusterLease::claim(cfg, &self.name, index).map_err(|e| match e {
                crate::etcd::ClaimError::Busy(m) => Error::ClusterBusy(m),
                crate::etcd::ClaimError::Unavailable(m) => Error::ClusterUnavailable(m),
            })?;
        let token = self.stop_token();
        lease.on_lost(move || token.stop_for(&StopReason::LeaseLost));
        self.cluster_lease = Some(lease);
        Ok(())
    }

    /// The fleet-wide slot's fencing token (the etcd key's create
    /// revision), with `etcd()` once started: pass it with every write to a
    /// shared resource, which refuses tokens smaller than the largest it
    /// has seen. `None` without `etcd()` or before `start()`.
    #[cfg(feature = "etcd")]
    pub fn fencing_token(&self) -> Option<i64> {
        self.cluster_lease
            .as_ref()
            .map(crate::etcd::ClusterLease::fencing_token)
    }

    fn take_slot(&self, dir: &PidDir) -> Result<HeldSlot> {
        let pid = std::process::id();
        let mut busy_slots = Vec::new();
        let mut unusable = None;
        for index in 1..=self.max_peers {
            match HeldSlot::try_take(dir, &self.name, index, pid) {
                Ok(Attempt::Taken(slot)) => return Ok(slot),
                Ok(Attempt::Busy(busy)) => busy_slots.push(busy),
                // Skip a slot we may not touch, but report it if it was the
                // one that stood between us and a free slot.
                Err(e @ Error::UnusableSlot { .. }) => {
                    log::warn!("{e}");
                    unusable.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(unusable.unwrap_or_else(|| Error::Busy {
            name: self.name.clone(),
            max_peers: self.max_peers,
            holders: busy_slots
                .iter()
                .map(|b| b.holder().and_then(crate::pid::Pid::from_raw))
                .collect(),
        }))
    }

    /// True while this peer should keep working; call it once per job.
    ///
    /// False once a stop signal arrived, a stop was requested through a
    /// [`StopToken`], within one check interval of the slot's lock being
    /// lost (the PID file deleted or replaced), past the memory ceiling,
    /// after `max_jobs` true answers, or after `max_runtime`; also before
    /// `start()` and after `stop()`. Once false it stays false (until the
    /// next `start()`); [`Daemon::stop_reason`] says why, and every
    /// [`StopToken`] of this run reports stopped.
    ///
    /// Cost: a few nanoseconds (an atomic load and a coarse clock read).
    /// About once per check interval (half the lease, at most a second) it
    /// also verifies the PID file (a few `fstatat` calls), records the
    /// heartbeat as the file's mtime (for `--check --max-age`) and, under a
    /// service manager's watchdog, sends WATCHDOG=1 (a datagram); with a
    /// memory limit it asks `getrusage` for the peak RSS every 64 to 1024
    /// calls (more often as memory grows toward the limit) and reads
    /// `/proc/self/statm` once that peak passed the limit.
    ///
    /// # Blocking
    ///
    /// Never waits for another process or a lock; only that little file
    /// I/O once per check interval (local metadata calls on the PID
    /// directory, normally microseconds). Never panics.
    #[inline]
    pub fn heartbeat(&mut self) -> bool {
        if self.reason.is_some() {
            return false;
        }
        if self.shared.code() != 0 {
            return self.stopped_elsewhere();
        }
        if self.answered >= self.check_at_count {
            return self.slow_path();
        }
        if coarse_now_ns() >= self.check_at_ns {
            return self.slow_path();
        }
        self.answered += 1;
        true
    }

    /// A signal, a token or another heartbeat recorded a stop.
    #[cold]
    fn stopped_elsewhere(&mut self) -> bool {
        self.reason = reason_of(self.shared.code());
        false
    }

    /// Records `reason` (unless another stop came first) and answers false.
    #[cold]
    fn stop_for(&mut self, reason: StopReason) -> bool {
        let code = self.shared.stop(&reason);
        self.reason = match reason_of(code) {
            // Ours stood: keep its details (the memory figures).
            Some(first) if std::mem::discriminant(&first) == std::mem::discriminant(&reason) => {
                Some(reason)
            }
            other => other,
        };
        false
    }

    /// The count- and time-based checks; answers as heartbeat() does.
    #[cold]
    #[inline(never)]
    fn slow_path(&mut self) -> bool {
        if self.max_jobs.is_some_and(|max| self.answered >= max) {
            return self.stop_for(StopReason::JobLimit);
        }
        let now = coarse_now_ns();
        if now >= self.runtime_ends_ns {
            return self.stop_for(StopReason::TimeLimit);
        }
        let verify = now >= self.verify_at_ns;
        if verify {
            self.verify_at_ns = now.saturating_add(self.check_every_ns);
            if !self.verify_slot(true) {
                return self.stop_for(StopReason::LockLost);
            }
        }
        if let Some(reason) = self.memory_exceeded(verify) {
            return self.stop_for(reason);
        }
        if now >= self.watchdog_at_ns
            && let Some(n) = &self.notifier
        {
            let every = n.watchdog_every.unwrap_or(Duration::from_secs(1));
            self.watchdog_at_ns = now.saturating_add(nanos(every));
            if let Err(e) = n.send("WATCHDOG=1") {
                log::warn!("{e}");
            }
        }
        self.schedule(now);
        if self.shared.code() != 0 {
            return self.stopped_elsewhere();
        }
        self.answered += 1;
        true
    }

    /// Sets the next count- and time-based check.
    fn schedule(&mut self, now: u64) {
        let mut at = self.max_jobs.unwrap_or(u64::MAX);
        if self.memory_limit.is_some() {
            at = at.min(self.answered.saturating_add(self.memory_every));
        }
        self.check_at_count = at;
        self.check_at_ns = self
            .verify_at_ns
            .min(self.watchdog_at_ns)
            .min(self.runtime_ends_ns)
            .max(now.saturating_add(1));
    }

    /// Whether the PID file is still ours; with `touch`, also records the
    /// heartbeat (mtime) and puts back an overwritten PID line.
    fn verify_slot(&self, touch: bool) -> bool {
        let Some(slot) = &self.held else {
            return false;
        };
        // An error examining the path means we cannot prove ownership
        // either; treat it the same way.
        if !matches!(slot.still_ours(), Ok(true)) {
            return false;
        }
        if touch && let Err(e) = slot.touch() {
            log::warn!("{e}");
        }
        true
    }

    /// The memory ceiling, if passed. `exact` reads the current RSS;
    /// otherwise the peak RSS (one cheap getrusage) is looked at first, and
    /// /proc only once the peak passed the limit.
    /// Also sets the next count-based memory check (see
    /// [`MEMORY_EVERY_MIN`]).
    fn memory_exceeded(&mut self, exact: bool) -> Option<StopReason> {
        let limit = self.memory_limit?;
        let peak = crate::memory::self_peak_rss();
        let (level, verdict) = match peak {
            Some(peak) if !exact && peak <= limit => (peak, None),
            _ => match crate::memory::self_rss() {
                Some(rss) => (
                    rss,
                    (rss > limit).then_some(StopReason::MemoryLimit { rss, limit }),
                ),
                None => (peak.unwrap_or(0), None),
            },
        };
        let jobs = self.answered.saturating_sub(self.memory_checked_at).max(1);
        let growth = level.saturating_sub(self.memory_level) / jobs;
        let headroom = limit.saturating_sub(level);
        self.memory_every = match headroom.checked_div(growth) {
            Some(lasts) => (lasts / 2).clamp(MEMORY_EVERY_MIN, MEMORY_EVERY_MAX),
            None => MEMORY_EVERY_MAX,
        };
        self.memory_level = level;
        self.memory_checked_at = self.answered;
        verdict
    }

    /// Runs the periodic check now, whatever the interval says (the CLI
    /// supervisor calls this on its own tick and on inotify events).
    pub(crate) fn check_now(&mut self) -> bool {
        if self.reason.is_some() {
            return false;
        }
        let now = coarse_now_ns();
        self.verify_at_ns = now.saturating_add(self.check_every_ns);
        if !self.verify_slot(true) {
            return self.stop_for(StopReason::LockLost);
        }
        if let Some(reason) = self.memory_exceeded(true) {
            return self.stop_for(reason);
        }
        self.schedule(now);
        true
    }

    /// Whether the PID file is still the one this daemon locked (no
    /// heartbeat recorded, nothing written).
    pub(crate) fn slot_still_ours(&self) -> bool {
        self.verify_slot(false)
    }

    /// Why `heartbeat()` returned false (or will return false at its next
    /// call), or `None` while no stop is due. For signals, the first stop
    /// signal that arrived. It also looks at the stop token's cell, so
    /// after a wake-up through a [`StopToken`] (a signal, a request) it
    /// names the reason before any heartbeat ran. Never blocks; an atomic
    /// load.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        if let Some(reason) = &self.reason {
            return Some(reason);
        }
        if let Some(reason) = self.seen.get() {
            return Some(reason);
        }
        let reason = reason_of(self.shared.code())?;
        Some(self.seen.get_or_init(|| reason))
    }

    /// A handle other threads and event loops use to see and request a
    /// stop; see [`StopToken`]. Taken before `start()`, it belongs to the
    /// next run. Never fails, never blocks.
    pub fn stop_token(&self) -> StopToken {
        StopToken::new(Arc::clone(&self.shared))
    }

    /// Records readiness in the slot's state file (`ready=1`, shown by
    /// `rdaemon --status`), with or without a service manager, and sends
    /// READY=1 to `$NOTIFY_SOCKET` when it is set (systemd `Type=notify`,
    /// or `rdaemon --notify`). Does nothing before `start()`.
    ///
    /// # Blocking
    ///
    /// A rewrite of the state file (a few system calls) and a datagram;
    /// never waits for the service manager.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the socket when the
    /// message cannot be sent, or the state file when it cannot be updated.
    pub fn notify_ready(&mut self) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        self.update_state(|s| s.ready = Some(true))?;
        self.notify("READY=1")
    }

    /// Sends `STATUS=text` to `$NOTIFY_SOCKET` and shows `text` in
    /// `rdaemon --status` (one line; a newline ends it). Does nothing before
    /// `start()`; writes the state file (a few system calls).
    ///
    /// # Errors
    ///
    /// As [`Daemon::notify_ready`].
    pub fn notify_status(&mut self, text: &str) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        let line = text.lines().next().unwrap_or("").to_string();
        let message = format!("STATUS={line}");
        self.update_state(|s| s.status_text = Some(line))?;
        self.notify(&message)
    }

    fn notify(&self, message: &str) -> Result<()> {
        match &self.notifier {
            Some(n) => n.send(message),
            None => Ok(()),
        }
    }

    /// Whether this process is the one that called `start()` (not a child
    /// forked from it).
    fn is_owner(&self) -> bool {
        self.owner == Some(std::process::id())
    }

    /// Releases the slot: sends STOPPING=1 (under `NOTIFY_SOCKET`), removes
    /// the state file and the PID file (only if the path still names the
    /// file this daemon locked) and unlocks, then gives the stop signals
    /// the action they had before `start()` (normally the default: a later
    /// SIGTERM ends the process). A loop still running sees
    /// [`StopReason::Requested`].
    ///
    /// Forked children: a process forked from this one after `start()`
    /// shares the lock (one open file description), so while any such
    /// process still runs the slot stays held whatever this process does.
    /// `stop()` in the starter therefore looks for other holders of the
    /// lock when this process forked since `start()` (a walk of `/proc`, a
    /// few milliseconds; fork(2) is counted by a `pthread_atfork` hook, so
    /// a raw clone(2) goes unseen) and, if it finds any,
    /// removes neither the PID file nor the state file: it only closes its
    /// own descriptor and logs a warning. The slot then reads as orphaned
    /// to `rdaemon --status`/`--check` (the PID file names this process,
    /// not a holder), and `rdaemon --stop NAME` ends the holders.
    /// In a forked child itself, `stop()` and drop change no file and
    /// release nothing (the lock is the parent's too); they only give that
    /// process's stop signals their earlier disposition back.
    ///
    /// Does nothing before `start()` or when called twice. Tokens of the
    /// run that ended stay stopped; a token taken after `stop()` belongs to
    /// the next `start()`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the PID file when it
    /// cannot be removed; the lock is released anyway.
    pub fn stop(&mut self) -> Result<()> {
        let released = self.release();
        if self.ended
            && let Ok(fresh) = Shared::new()
        {
            // Tokens taken from now on belong to the next run (if that
            // fails, start() tries again).
            self.shared = fresh;
            self.ended = false;
        }
        released
    }

    /// `stop()` but for the fresh stop cell of the next run (drop needs
    /// none).
    fn release(&mut self) -> Result<()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        self.ended = true;
        if !self.is_owner() {
            // A forked child: the parent's files, lock and stop socket are
            // not ours to touch. The inherited descriptor stays open (the
            // lock belongs to the open file description the parent shares)
            // until this process exits. Signal dispositions are per
            // process, though: give this process its own back.
            std::mem::forget(held);
            if let Some(mut s) = self.signals.take() {
                s.uninstall();
            }
            self.notifier = None;
            self.reason.get_or_insert(StopReason::Requested);
            return Ok(());
        }
        if self.reason.is_none() {
            self.stop_for(StopReason::Requested);
        }
        if let Err(e) = self.notify("STOPPING=1") {
            log::warn!("{e}");
        }
        self.notifier = None;
        #[cfg(feature = "etcd")]
        if let Some(lease) = self.cluster_lease.take() {
            lease.release();
        }
        let forked = match self.forks_at_start {
            Some(at) => FORKS.load(std::sync::atomic::Ordering::Relaxed) != at,
            None => true,
        };
        let released = if forked {
            release_unless_shared(held)
        } else {
            held.release()
        };
        if let Some(mut s) = self.signals.take() {
            s.uninstall();
        }
        self.owner = None;
        released
    }

    /// The daemon's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The held slot's number (1-based), once started; `None` before
    /// `start()` and after `stop()`.
    pub fn slot(&self) -> Option<u32> {
        self.held.as_ref().map(HeldSlot::index)
    }

    /// The held slot's PID file, once started.
    pub fn pid_file(&self) -> Option<PathBuf> {
        self.held.as_ref().map(HeldSlot::path)
    }

    /// The PID directory this daemon uses.
    pub fn pid_dir(&self) -> &Path {
        &self.pid_dir
    }

    /// The heartbeat lease given to the builder.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub(crate) fn held_slot(&self) -> Option<&HeldSlot> {
        self.held.as_ref()
    }

    /// Changes the published state (CLI supervisor: child PID, restarts).
    pub(crate) fn update_state(&mut self, change: impl FnOnce(&mut SlotState)) -> Result<()> {
        change(&mut self.state);
        match &self.held {
            // A slot whose PID file was replaced (deleted and taken by a
            // new peer) is someone else's: so is its state file, which
            // this holder, stopping its tree, must not overwrite.
            Some(slot) if matches!(slot.still_ours(), Ok(true)) => {
                self.state.write(slot.dir(), &self.name, slot.index())
            }
            _ => Ok(()),
        }
    }
}

// A Daemon may move to another thread (its owner need not be main).
const _: () = {
    const fn send<T: Send + 'static>() {}
    send::<Daemon>();
};

/// Releases the slot at the starter's stop, unless processes forked from
/// this one still hold its lock (they share the open file description):
/// then the slot is still held, so its PID file and state file stay (the
/// slot reads as orphaned to `--status`/`--check`, and `rdaemon --stop`
/// ends those holders); only this process's descriptors are closed.
fn release_unless_shared(held: HeldSlot) -> Result<()> {
    let holders = crate::proc::find_lock_holders(held.id());
    if holders.is_empty() {
        return held.release();
    }
    log::warn!(
        "{}: still locked by {} (forked from this process); leaving the slot's files in place",
        held.path().display(),
        holders
            .iter()
            .map(|p| format!("PID {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    held.close_keeping_files();
    Ok(())
}

/// Undoes a take whose follow-up failed; the original error is the one
/// worth reporting.
fn release_quietly(held: HeldSlot) {
    if let Err(e) = held.release() {
        log::warn!("{e}");
    }
}

impl Drop for Daemon {
    /// As [`Daemon::stop`], logging (not returning) an error.
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!("{e}");
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a vDSO read of a few ns, with
/// jiffy resolution, which is plenty for checks a second apart.
#[inline]
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel supports since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years): a huge
/// `max_runtime` or lease means "never", not a wrapped small number.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `d` in milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
