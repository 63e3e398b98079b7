//! Configuring a [`Daemon`]: every setting has a default, and `build()`
//! refuses what it can know is wrong before anything is created.

use std::path::PathBuf;
use std::time::Duration;

use super::Daemon;
use crate::error::{Error, Result};
use crate::name;
use crate::piddir::default_pid_dir;
use crate::slot::MAX_SLOTS;

/// The signals that stop the loop unless [`Builder::stop_signals`] says
/// otherwise: SIGTERM, SIGINT, SIGHUP and SIGQUIT.
pub(crate) const DEFAULT_STOP_SIGNALS: [i32; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Configures a [`Daemon`]; start with [`Daemon::builder`], finish with
/// [`Builder::build`]. Setters only record; nothing touches the system
/// until [`Daemon::start`].
#[derive(Debug, Clone)]
pub struct Builder {
    pub(super) name: String,
    pub(super) max_peers: u32,
    pub(super) pid_dir: Option<PathBuf>,
    pub(super) lease: Duration,
    pub(super) memory_limit: Option<u64>,
    pub(super) max_jobs: Option<u64>,
    pub(super) max_runtime: Option<Duration>,
    pub(super) stop_timeout: Option<Duration>,
    pub(super) stop_signals: Vec<i32>,
    pub(super) handle_signals: bool,
    pub(super) sd_notify: bool,
    /// `etcd()`, `cluster_max_peers()`, `lease_ttl()`; vetted by `build()`.
    #[cfg(feature = "etcd")]
    pub(super) cluster: crate::etcd::ClusterConfig,
}

impl Builder {
    pub(super) fn new(name: String) -> Builder {
        Builder {
            name,
            max_peers: 1,
            pid_dir: None,
            lease: Duration::from_secs(10),
            memory_limit: None,
            max_jobs: None,
            max_runtime: None,
            stop_timeout: None,
            stop_signals: DEFAULT_STOP_SIGNALS.to_vec(),
            handle_signals: true,
            sd_notify: true,
            #[cfg(feature = "etcd")]
            cluster: crate::etcd::ClusterConfig {
                endpoints: Vec::new(),
                max_peers: 0,
                lease_ttl: Duration::from_secs(10),
            },
        }
    }

    /// How many copies of the name may hold a slot at once: 1 to 65536,
    /// default 1.
    pub fn max_peers(mut self, n: u32) -> Self {
        self.max_peers = n;
        self
    }

    /// Where the slot files live. Default: `$RDAEMON_PID_DIR`, else
    /// `/run/rdaemon` for root and `/tmp/rdaemon-$UID` for others (the same
    /// directory the `rdaemon` command uses). Must not be empty.
    pub fn pid_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pid_dir = Some(dir.into());
        self
    }

    /// The heartbeat lease: how often this program promises to call
    /// `heartbeat()`. It is published for `--status`; pass the same value
    /// to `rdaemon --check --max-age` in the watchdog. The slot is verified
    /// every half lease (at most every second, at least every 10 ms).
    /// Default 10 s; must be greater than zero.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The old name of [`Builder::lease`].
    #[deprecated(since = "0.2.0", note = "renamed to `lease`")]
    pub fn timeout(self, lease: Duration) -> Self {
        self.lease(lease)
    }

    /// Makes `heartbeat()` false ([`StopReason::MemoryLimit`]) once this
    /// process's resident memory exceeds `bytes`. Checked on every periodic
    /// check and every 64 to 1024 heartbeats: the interval shrinks as
    /// memory grows toward the ceiling, so a worker that allocates steadily
    /// passes it by at most what about 64 jobs allocate (a sudden burst
    /// after a long flat stretch, by up to 1024 jobs' worth). Must be greater than zero.
    ///
    /// [`StopReason::MemoryLimit`]: crate::StopReason::MemoryLimit
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Makes `heartbeat()` true at most `jobs` times per run: the next call
    /// returns false with [`StopReason::JobLimit`], so a loop with one job
    /// per heartbeat runs exactly `jobs` jobs (as Symfony Messenger's
    /// `--limit`). Must be greater than zero.
    ///
    /// [`StopReason::JobLimit`]: crate::StopReason::JobLimit
    pub fn max_jobs(mut self, jobs: u64) -> Self {
        self.max_jobs = Some(jobs);
        self
    }

    /// Makes `heartbeat()` false ([`StopReason::TimeLimit`]) once `limit`
    /// passed since `start()` (as Messenger's `--time-limit`), within the
    /// resolution of the coarse monotonic clock (a few ms). Must be greater
    /// than zero.
    ///
    /// [`StopReason::TimeLimit`]: crate::StopReason::TimeLimit
    pub fn max_runtime(mut self, limit: Duration) -> Self {
        self.max_runtime = Some(limit);
        self
    }

    /// How long this program needs to wind down after a stop signal:
    /// published as `stop_timeout_ms` in the slot's state file, so that
    /// `rdaemon --stop NAME` (without `--timeout`) waits this long plus a
    /// 5 s margin before it sends SIGKILL. Without it, `--stop` gives a
    /// library peer 10 s plus the margin, whatever its lease. Whole
    /// milliseconds; huge values saturate. Must be greater than zero.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = Some(timeout);
        self
    }

    /// The signals that stop the loop (default SIGTERM, SIGINT, SIGHUP,
    /// SIGQUIT). Every other signal stays the program's own: a worker that
    /// reloads on SIGHUP passes `&[libc::SIGTERM, libc::SIGINT]`. An empty
    /// list installs no handler (as `handle_signals(false)`). `build()`
    /// refuses signals that cannot be caught (SIGKILL, SIGSTOP) or that
    /// signal-hook will not handle (SIGSEGV, SIGILL, SIGFPE, ...).
    pub fn stop_signals(mut self, signals: &[i32]) -> Self {
        self.stop_signals = signals.to_vec();
        self
    }

    /// Whether `start()` installs the stop signals' handlers (default
    /// true). A program with its own signal handling turns this off and
    /// calls [`StopToken::request`](crate::StopToken::request) itself.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// Also holds one of [`Builder::cluster_max_peers`] fleet-wide slots in
    /// the etcd at `endpoints` (`http://host:port`, tried in order), taken
    /// by `start()` after the local slot. Without it nothing of etcd is
    /// used: no connection, no thread.
    ///
    /// `heartbeat()` then turns false ([`StopReason::LeaseLost`]) once the
    /// lease has not been renewed for half its TTL; the work loop must be
    /// done by TTL/2 minus a margin after that (4 s with the default 10 s
    /// TTL), before etcd can give the slot to another host. Feature `etcd`.
    ///
    /// [`StopReason::LeaseLost`]: crate::StopReason::LeaseLost
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
    /// sharing that etcd (required with `etcd`). Feature `etcd`.
    #[cfg(feature = "etcd")]
    pub fn cluster_max_peers(mut self, m: u32) -> Self {
        self.cluster.max_peers = m;
        self
    }

    /// With [`Builder::etcd`]: the etcd lease's TTL, whole seconds, at
    /// least 2 (default 10 s). Feature `etcd`.
    #[cfg(feature = "etcd")]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.cluster.lease_ttl = ttl;
        self
    }

    /// Whether the daemon speaks sd_notify to `$NOTIFY_SOCKET` (default
    /// true). The CLI supervisor turns it off: it reports to the service
    /// manager itself, and only in `--foreground`.
    pub(crate) fn sd_notify(mut self, yes: bool) -> Self {
        self.sd_notify = yes;
        self
    }

    /// Validates the configuration and makes the [`Daemon`]. Creates
    /// nothing on disk; does open one socket pair (the stop token's).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Usage`](crate::ErrorKind::Usage) for a name that breaks
    /// the naming rules, `max_peers` outside 1 to 65536, an empty
    /// `pid_dir`, a zero lease, memory limit, job limit, run-time limit or
    /// stop timeout,
    /// or a stop signal that cannot be caught;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when the socket pair cannot
    /// be created (out of descriptors).
    pub fn build(self) -> Result<Daemon> {
        name::validate(&self.name)?;
        let usage = |msg: String| Err(Error::InvalidConfig(msg));
        if self.max_peers == 0 || self.max_peers > MAX_SLOTS {
            return usage(format!(
                "max peers must be between 1 and {MAX_SLOTS}, not {}",
                self.max_peers
            ));
        }
        if self
            .pid_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return usage("the PID directory must not be empty".into());
        }
        if self.lease.is_zero() {
            return usage("the heartbeat lease must be greater than zero".into());
        }
        if self.memory_limit == Some(0) {
            return usage("the memory limit must be greater than zero".into());
        }
        if self.max_jobs == Some(0) {
            return usage("the job limit must be greater than zero".into());
        }
        if self.stop_timeout.is_some_and(|d| d.is_zero()) {
            return usage("the stop timeout must be greater than zero".into());
        }
        if self.max_runtime.is_some_and(|d| d.is_zero()) {
            return usage("the run-time limit must be greater than zero".into());
        }
        if let Some(&sig) = self
            .stop_signals
            .iter()
            .find(|&&s| !crate::signals::catchable(s))
        {
            return usage(format!(
                "{} cannot be a stop signal",
                crate::signal_name(sig)
            ));
        }
        #[cfg(feature = "etcd")]
        crate::etcd::vet_library_config(&self.cluster).map_err(Error::InvalidConfig)?;
        let pid_dir = self.pid_dir.clone().unwrap_or_else(default_pid_dir);
        Daemon::from_builder(self, pid_dir)
    }
}
