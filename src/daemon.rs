//! The library API: `Daemon::builder(name)…build()?`, `start()`,
//! `heartbeat()`, `stop()`.
//!
//! Use it when your own long-running program should hold one of NAME's
//! slots itself, without a supervisor process:
//!
//! ```no_run
//! use std::time::Duration;
//! # fn do_one_job() {}
//! # fn main() -> Result<(), rdaemon::Error> {
//! let mut daemon = rdaemon::Daemon::builder("mailer")
//!     .max_peers(3)
//!     .timeout(Duration::from_secs(30))
//!     .build()?;
//! daemon.start()?; // Err(Busy) names the holders when all 3 slots are taken
//! while daemon.heartbeat() {
//!     do_one_job();
//! }
//! eprintln!("stopping: {}", daemon.stop_reason().unwrap());
//! daemon.stop()?;
//! # Ok(())
//! # }
//! ```
//!
//! A started `Daemon` is seen by `rdaemon --check/--status/--stop` exactly
//! like a CLI daemon: its PID file names this process, and `--stop` sends it
//! SIGTERM, which turns `heartbeat()` false.
//!
//! `heartbeat()` is meant to be called once per unit of work, however small.
//! It costs an atomic load and a read of the coarse monotonic clock; at most
//! once per check interval (one second, or half the lease if shorter) it
//! also verifies that the PID file is still the one it locked, checks the
//! memory ceiling, and records the heartbeat as the PID file's mtime.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use signal_hook::SigId;

use crate::error::{Error, Result};
use crate::name;
use crate::piddir::{PidDir, default_pid_dir};
use crate::slot::{Attempt, HeldSlot, MAX_SLOTS};
use crate::state::SlotState;

/// The signals that turn `heartbeat()` false.
pub const KILL_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Why `heartbeat()` returned false.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// A stop signal arrived (SIGTERM, SIGINT, SIGHUP or SIGQUIT).
    Signal(i32),
    /// The PID file was deleted or replaced: this process can no longer
    /// prove that it holds the slot.
    LockLost,
    /// The process's resident memory passed the configured ceiling.
    MemoryLimit { rss: u64, limit: u64 },
    /// `start()` was not called, or `stop()` was.
    NotRunning,
    /// The fleet-wide slot's etcd lease could not be renewed in time (see
    /// [`Builder::etcd`]): stop before etcd can give the slot to another
    /// host.
    LeaseLost,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Signal(sig) => write!(f, "received {}", crate::signal_name(*sig)),
            StopReason::LockLost => {
                f.write_str("the PID file was deleted or replaced; the slot is lost")
            }
            StopReason::MemoryLimit { rss, limit } => write!(
                f,
                "resident memory {} exceeds the limit of {}",
                crate::size::format_size(*rss),
                crate::size::format_size(*limit)
            ),
            StopReason::NotRunning => f.write_str("not started"),
            StopReason::LeaseLost => {
                f.write_str("the etcd lease of the fleet-wide slot could not be renewed")
            }
        }
    }
}

/// Configures a [`Daemon`]; see [`Daemon::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    name: String,
    max_peers: u32,
    pid_dir: Option<PathBuf>,
    timeout: Duration,
    memory_limit: Option<u64>,
    handle_signals: bool,
    #[cfg(feature = "etcd")]
    cluster: crate::etcd::ClusterConfig,
}

impl Builder {
    /// How many copies of NAME may hold a slot at once (default 1).
    pub fn max_peers(mut self, n: u32) -> Self {
        self.max_peers = n;
        self
    }

    /// Where the slot files live (default: see the man page's FILES).
    pub fn pid_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pid_dir = Some(dir.into());
        self
    }

    /// The heartbeat lease: how often this program promises to call
    /// `heartbeat()`. It is published for `--status`; pass the same value to
    /// `rdaemon --check --max-age` in the watchdog. Default 10 s.
    pub fn timeout(mut self, lease: Duration) -> Self {
        self.timeout = lease;
        self
    }

    /// Makes `heartbeat()` false once this process's resident memory
    /// exceeds `bytes` (checked at most once per interval).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Whether `start()` installs handlers that turn SIGTERM, SIGINT,
    /// SIGHUP and SIGQUIT into a false `heartbeat()` (default true). A
    /// program with its own signal handling turns this off.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// Also holds one of [`Builder::cluster_max_peers`] fleet-wide slots in
    /// the etcd at `endpoints` (`http://host:port`, tried in order); see
    /// the `etcd` module. Without it nothing of etcd is used.
    ///
    /// `heartbeat()` then turns false ([`StopReason::LeaseLost`]) once the
    /// lease has not been renewed for half its TTL; the work loop must be
    /// done by TTL/2 minus a margin after that (4 s with the default 10 s
    /// TTL), before etcd can give the slot to another host.
    #[cfg(feature = "etcd")]
    pub fn etcd<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// With [`Builder::etcd`]: at most `m` peers of NAME across every host
    /// sharing that etcd (required with `etcd`).
    #[cfg(feature = "etcd")]
    pub fn cluster_max_peers(mut self, m: u32) -> Self {
        self.cluster.max_peers = m;
        self
    }

    /// With [`Builder::etcd`]: the etcd lease's TTL, whole seconds, at
    /// least 2 (default 10 s).
    #[cfg(feature = "etcd")]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.cluster.lease_ttl = ttl;
        self
    }

    /// Validates the configuration. Nothing is created until `start()`.
    pub fn build(self) -> Result<Daemon> {
        name::validate(&self.name)?;
        #[cfg(feature = "etcd")]
        let cluster =
            crate::etcd::vet_library_config(&self.cluster).map_err(Error::InvalidConfig)?;
        if self.max_peers == 0 || self.max_peers > MAX_SLOTS {
            return Err(Error::InvalidConfig(format!(
                "max peers must be between 1 and {MAX_SLOTS}, not {}",
                self.max_peers
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "the heartbeat timeout must be greater than zero".into(),
            ));
        }
        let pid_dir = self.pid_dir.unwrap_or_else(default_pid_dir);
        let check_every =
            (self.timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        Ok(Daemon {
            name: self.name,
            max_peers: self.max_peers,
            pid_dir,
            lease: self.timeout,
            memory_limit: self.memory_limit,
            handle_signals: self.handle_signals,
            check_every_ns: check_every.as_nanos() as u64,
            held: None,
            kill_signal: Arc::new(AtomicUsize::new(0)),
            sig_ids: Vec::new(),
            next_check_ns: 0,
            stop_reason: Some(StopReason::NotRunning),
            state: SlotState::default(),
            #[cfg(feature = "etcd")]
            cluster,
            #[cfg(feature = "etcd")]
            cluster_lease: None,
        })
    }
}

/// One peer of a named daemon, holding (after `start()`) one slot.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    max_peers: u32,
    pid_dir: PathBuf,
    lease: Duration,
    memory_limit: Option<u64>,
    handle_signals: bool,
    check_every_ns: u64,
    held: Option<HeldSlot>,
    kill_signal: Arc<AtomicUsize>,
    sig_ids: Vec<SigId>,
    next_check_ns: u64,
    stop_reason: Option<StopReason>,
    state: SlotState,
    #[cfg(feature = "etcd")]
    cluster: Option<crate::etcd::ClusterConfig>,
    #[cfg(feature = "etcd")]
    cluster_lease: Option<crate::etcd::ClusterLease>,
}

/// `kill_signal`'s value for a lost etcd lease: no signal has this number,
/// so heartbeat()'s one atomic load covers the lease too.
const LEASE_LOST: usize = usize::MAX;

impl Daemon {
    /// Starts configuring a daemon called `name`.
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            max_peers: 1,
            pid_dir: None,
            timeout: Duration::from_secs(10),
            memory_limit: None,
            handle_signals: true,
            #[cfg(feature = "etcd")]
            cluster: crate::etcd::ClusterConfig {
                endpoints: Vec::new(),
                max_peers: 0,
                lease_ttl: Duration::from_secs(10),
            },
        }
    }

    /// Takes the first free slot. Fails with [`Error::Busy`] (naming the
    /// holders' PIDs) when every slot is held, with [`Error::UnusableSlot`]
    /// when a needed slot's path holds something rdaemon will not touch,
    /// and with an I/O error naming the file otherwise.
    pub fn start(&mut self) -> Result<()> {
        if self.held.is_some() {
            return Err(Error::State(
                "start() called on a daemon that is already started",
            ));
        }
        let dir = PidDir::open_or_create(&self.pid_dir)?;
        let pid = std::process::id();
        let mut busy_slots = Vec::new();
        let mut unusable = None;
        for index in 1..=self.max_peers {
            match HeldSlot::try_take(&dir, &self.name, index, pid) {
                Ok(Attempt::Taken(slot)) => {
                    self.held = Some(slot);
                    break;
                }
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
        if self.held.is_none() {
            return Err(unusable.unwrap_or_else(|| Error::Busy {
                name: self.name.clone(),
                max_peers: self.max_peers,
                holders: busy_slots.iter().map(|b| b.holder()).collect(),
            }));
        }
        self.kill_signal.store(0, Ordering::SeqCst);
        #[cfg(feature = "etcd")]
        if let Err(e) = self.claim_cluster_slot() {
            if let Some(slot) = self.held.take() {
                let _ = slot.release();
            }
            return Err(e);
        }
        self.state = SlotState {
            started_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
            lease_ms: Some(self.lease.as_millis() as u64),
            ..SlotState::default()
        };
        self.publish()?;
        if self.handle_signals {
            for sig in KILL_SIGNALS {
                let id = signal_hook::flag::register_usize(
                    sig,
                    Arc::clone(&self.kill_signal),
                    sig as usize,
                )
                .map_err(|e| Error::sys("install signal handler", e))?;
                self.sig_ids.push(id);
            }
        }
        self.stop_reason = None;
        self.next_check_ns = coarse_now_ns() + self.check_every_ns;
        Ok(())
    }

    /// True while this peer should keep working: no stop signal arrived,
    /// the slot is still provably held, and memory is under the ceiling.
    /// Once false it stays false; [`Daemon::stop_reason`] says why.
    #[inline]
    pub fn heartbeat(&mut self) -> bool {
        if self.stop_reason.is_some() {
            return false;
        }
        let sig = self.kill_signal.load(Ordering::Relaxed);
        if sig != 0 {
            self.stop_reason = Some(if sig == LEASE_LOST {
                StopReason::LeaseLost
            } else {
                StopReason::Signal(sig as i32)
            });
            return false;
        }
        let now = coarse_now_ns();
        if now < self.next_check_ns {
            return true;
        }
        self.next_check_ns = now + self.check_every_ns;
        self.periodic_check()
    }

    /// Runs the periodic check now, whatever the interval says (the CLI
    /// supervisor calls this on its own tick and on inotify events).
    pub(crate) fn check_now(&mut self) -> bool {
        if self.stop_reason.is_some() {
            return false;
        }
        self.next_check_ns = coarse_now_ns() + self.check_every_ns;
        self.periodic_check()
    }

    /// Whether the PID file is still the one this daemon locked (no
    /// heartbeat recorded, nothing written).
    pub(crate) fn slot_still_ours(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|s| matches!(s.still_ours(), Ok(true)))
    }

    #[cold]
    fn periodic_check(&mut self) -> bool {
        let Some(slot) = &self.held else {
            self.stop_reason = Some(StopReason::NotRunning);
            return false;
        };
        match slot.still_ours() {
            Ok(true) => {}
            // An error examining the path means we cannot prove ownership
            // either; treat it the same way.
            Ok(false) | Err(_) => {
                self.stop_reason = Some(StopReason::LockLost);
                return false;
            }
        }
        if let Some(limit) = self.memory_limit
            && let Some(rss) = crate::memory::self_rss()
            && rss > limit
        {
            self.stop_reason = Some(StopReason::MemoryLimit { rss, limit });
            return false;
        }
        if let Err(e) = slot.touch() {
            log::warn!("{e}");
        }
        true
    }

    /// With `etcd()`: claims a fleet-wide slot for the local one just
    /// taken; its loss sets `kill_signal` to [`LEASE_LOST`] (unless a
    /// signal came first).
    #[cfg(feature = "etcd")]
    fn claim_cluster_slot(&mut self) -> Result<()> {
        let (Some(cfg), Some(slot)) = (&self.cluster, &self.held) else {
            return Ok(());
        };
        let lease = crate::etcd::ClusterLease::claim(cfg, &self.name, slot.index()).map_err(
            |e| match e {
                crate::etcd::ClaimError::Busy(m) => Error::ClusterBusy(m),
                crate::etcd::ClaimError::Unavailable(m) => Error::ClusterUnavailable(m),
            },
        )?;
        let flag = Arc::clone(&self.kill_signal);
        lease.on_lost(move || {
            let _ = flag.compare_exchange(0, LEASE_LOST, Ordering::SeqCst, Ordering::SeqCst);
        });
        self.cluster_lease = Some(lease);
        Ok(())
    }

    /// The fleet-wide slot's fencing token (the etcd key's create
    /// revision), with `etcd()` once started: pass it with every write to
    /// a shared resource, which refuses tokens smaller than the largest it
    /// has seen.
    #[cfg(feature = "etcd")]
    pub fn fencing_token(&self) -> Option<i64> {
        self.cluster_lease
            .as_ref()
            .map(crate::etcd::ClusterLease::fencing_token)
    }

    /// Why `heartbeat()` returned false, or `None` while it returns true.
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop_reason.as_ref()
    }

    /// Releases the slot: removes the PID file and the state file, then
    /// unlocks. Calling it on a daemon that is not started does nothing.
    ///
    /// The signal handlers installed by `start()` are unregistered, but
    /// signal-hook leaves its (now empty) handler in place, so SIGTERM and
    /// friends are ignored from here on rather than fatal.
    pub fn stop(&mut self) -> Result<()> {
        for id in self.sig_ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        if self.stop_reason.is_none() {
            self.stop_reason = Some(StopReason::NotRunning);
        }
        #[cfg(feature = "etcd")]
        if let Some(lease) = self.cluster_lease.take() {
            lease.release();
        }
        match self.held.take() {
            Some(slot) => slot.release(),
            None => Ok(()),
        }
    }

    /// The daemon's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The held slot's number (1-based), once started.
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
        self.publish()
    }

    fn publish(&self) -> Result<()> {
        match &self.held {
            Some(slot) => self.state.write(slot.dir(), &self.name, slot.index()),
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("{e}");
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a vDSO read of a few ns, with
/// jiffy resolution, which is plenty for a once-a-second check.
#[inline]
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel supports since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
