//! Fleet-wide slots on etcd: at most M peers of NAME across every host.
//!
//! # What it is for, and when not to use it
//!
//! Local slots (flock-locked PID files) bound NAME to N copies on one host.
//! When the bound is fleet-wide ("at most 3 mailers in total": an API's
//! rate limit, a database's connection budget), a start with `--etcd URLS
//! --cluster-max-peers M` additionally claims one of M *cluster slots*: the
//! etcd keys `/rdaemon/NAME/slot/1` .. `/rdaemon/NAME/slot/M`. Without
//! `--etcd` none of this module runs: no connection, no thread, no wake-up.
//! Use it only when the peers share one etcd cluster; it adds one network
//! round trip per TTL/3 and makes COMMAND's life depend on reaching etcd.
//!
//! # Claiming
//!
//! [`ClusterLease::claim`] grants an etcd lease of `--lease-ttl` seconds,
//! then, for each free I (1..=M), tries one transaction: *if
//! `create_revision(/rdaemon/NAME/slot/I) == 0` then put the key bound to
//! the lease*, with the value `{"host", "pid", "local_slot",
//! "started_unix"}` (the supervisor's PID). The first success wins; if none
//! succeeds the lease is revoked and the claim is [`ClaimError::Busy`],
//! naming the holders as `host:pid`. The key's create revision is the
//! **fencing token** (`RDAEMON_FENCING_TOKEN`): etcd's revision only grows,
//! so a later holder of any slot always has a larger token than an earlier
//! one, and a resource that remembers the largest token it has seen can
//! refuse a stale holder's late write.
//!
//! # Keep-alive and the lease arithmetic
//!
//! A thread renews the lease every TTL/3 (`T` = the TTL). Before each
//! renewal it reads the monotonic clock (`sent`); a renewal counts only if
//! etcd answers with a TTL > 0, and then `last_ok = sent`. etcd expires the
//! lease `T` after the last renewal *it granted*, which it processed after
//! `sent`; so, measured on our clock, etcd cannot free the key before
//! `last_ok + T`. (A leader change only extends leases; a different clock
//! *rate* on the etcd leader is covered by the margin below.)
//!
//! ```text
//!   last_ok        +T/3         +T/2                 +T-margin    +T
//!   |  renewed     | retry...   | Lost: SIGTERM      | SIGKILL    | earliest
//!   |              |            | (stop_timeout ...) | (kill_by)  | expiry
//! ```
//!
//! - Failed renewals are retried until `last_ok + T/2`; each request's
//!   timeout ends by then. At `last_ok + T/2` without success the standing
//!   becomes [`LeaseStanding::Lost`] with `kill_by = last_ok + T - margin`,
//!   and the descriptor [`ClusterLease::fd`] becomes readable.
//! - The supervisor then sends SIGTERM to COMMAND's tree at once (at the
//!   latest T/2 after the last renewal) and SIGKILL at
//!   `min(SIGTERM + --stop-timeout, kill_by)`, so the whole tree is dead
//!   before etcd can give the slot to another host.
//! - `margin = max(1 s, T/10)` covers the time from SIGKILL to the tree's
//!   death and clock-rate differences. Hence `--stop-timeout` must be at
//!   most `T/2 - margin` ([`check_stop_timeout`]); a start refuses more
//!   (exit 2). With the default TTL of 10 s that is 4 s.
//! - A renewal answered with TTL 0 (the lease expired or was revoked), or a
//!   slot key found deleted or re-created by someone else, means the slot
//!   may already be another host's: `Lost` at once, `kill_by` = now.
//!
//! Only monotonic clocks ([`Instant`]) enter this arithmetic; wall-clock
//! steps do not matter. `started_unix` in the key's value is for people.
//!
//! An etcd that stalls (a leader election, a frozen member) is survived
//! while the stall ends before `last_ok + T/2`: the renewal due at T/3 is
//! retried every T/20 until then, so with the default T of 10 s a stall of
//! up to about 1.6 s that begins right before a renewal is always
//! survived. Clusters with slower elections need a longer `--lease-ttl`
//! (T = 30 s survives about 5 s).
//!
//! What timing cannot cover: a host that is paused as a whole (a frozen
//! VM, a SIGSTOPped supervisor *and* COMMAND) for longer than the lease
//! wakes up with COMMAND still running after etcd gave its slot away. Its
//! supervisor finds the lease gone at the next renewal and kills at once,
//! but writes COMMAND made meanwhile are what the fencing token is for.
//!
//! # After a loss
//!
//! The supervisor exits, or with `--respawn` calls
//! [`ClusterLease::reclaim`] every T/3 (each try gives up after
//! [`RECLAIM_BUDGET`]) and restarts COMMAND, with a new fencing token, once
//! it holds a slot again. The library turns `heartbeat()` false
//! ([`ClusterLease::on_lost`] records `StopReason::LeaseLost` where
//! `heartbeat()` already looks, so the work loop pays nothing for it).
//!
//! # The fleet view
//!
//! [`fleet`] lists the cluster slots for `--check`/`--status` with
//! `--etcd`: what etcd knows, not what each host's PID directory says.
//!
//! # TLS
//!
//! `https://` endpoints need the cargo feature `etcd-tls` (rustls, system
//! root certificates through `rustls-platform-verifier`); the default build
//! speaks plain HTTP only and refuses `https://` with a message saying so.

pub mod client;
pub mod fleet;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{Client, EtcdError};

/// What a start was asked for: `--etcd`, `--cluster-max-peers`, `--lease-ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd v3 endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// M: how many peers of NAME may run across the fleet.
    pub max_peers: u32,
    /// The lease's time to live.
    pub lease_ttl: Duration,
}

/// Why a cluster slot could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// All M cluster slots are held; the text names the holders (host:pid).
    Busy(String),
    /// etcd could not be reached or answered nonsense; the text names the
    /// endpoint and the cause.
    Unavailable(String),
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::Busy(s) | ClaimError::Unavailable(s) => f.write_str(s),
        }
    }
}

/// Whether the cluster slot can still be proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStanding {
    /// The lease was renewed in time.
    Held,
    /// Renewal failed for too long: COMMAND's whole tree must be dead by
    /// `kill_by` (before the lease can expire in etcd).
    Lost {
        /// The latest instant by which COMMAND must be gone.
        kill_by: Instant,
        /// Why, for the log.
        why: String,
    },
}

/// The shortest lease rdaemon accepts, in seconds (etcd's own minimum is
/// about 1.5 s with default election settings).
pub const MIN_LEASE_TTL_SECS: u64 = 2;

/// The lease arithmetic for one TTL (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    ttl: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `ttl`.
    pub fn new(ttl: Duration) -> LeaseTiming {
        LeaseTiming { ttl }
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the lease is renewed: T/3.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long after the last successful renewal the lease counts as
    /// lost: T/2.
    pub fn lost_after(&self) -> Duration {
        self.ttl / 2
    }

    /// The safety margin before the earliest expiry: max(1 s, T/10).
    pub fn margin(&self) -> Duration {
        (self.ttl / 10).max(Duration::from_secs(1))
    }

    /// The latest instant COMMAND's tree may live after a renewal sent at
    /// `last_ok`: `last_ok + T - margin`.
    pub fn kill_by(&self, last_ok: Instant) -> Instant {
        last_ok + self.ttl.saturating_sub(self.margin())
    }

    /// The longest `--stop-timeout` that fits: T/2 - margin.
    pub fn max_stop_timeout(&self) -> Duration {
        self.lost_after().saturating_sub(self.margin())
    }

    /// Per-request timeout: T/6 (two tries fit between renewal and loss),
    /// at least 200 ms.
    fn call_timeout(&self) -> Duration {
        (self.ttl / 6).max(Duration::from_millis(200))
    }
}

/// Refuses a `--stop-timeout` that cannot fit the lease arithmetic: SIGTERM
/// comes at the latest T/2 after the last renewal, SIGKILL must come by
/// T - margin, so `stop_timeout <= T/2 - margin`.
///
/// Errors: the message names both values and what would fit.
pub fn check_stop_timeout(stop_timeout: Duration, lease_ttl: Duration) -> Result<(), String> {
    let t = LeaseTiming::new(lease_ttl);
    if lease_ttl < Duration::from_secs(MIN_LEASE_TTL_SECS) {
        return Err(format!(
            "--lease-ttl {} is too short: at least {MIN_LEASE_TTL_SECS}",
            lease_ttl.as_secs_f64()
        ));
    }
    if stop_timeout > t.max_stop_timeout() {
        // The shortest TTL (whole seconds) that fits this stop timeout:
        // T/2 - max(1, T/10) >= s  <=>  T >= max(2 (s + 1), 2.5 s).
        let s = stop_timeout.as_secs_f64();
        let need = (2.0 * (s + 1.0)).max(2.5 * s).ceil();
        return Err(format!(
            "--stop-timeout {s} does not fit --lease-ttl {}: COMMAND gets SIGTERM at the latest \
             {}s after the last lease renewal and must be dead {}s before the lease can expire, \
             so --stop-timeout may be at most {}; use a shorter --stop-timeout or --lease-ttl {need}",
            lease_ttl.as_secs_f64(),
            t.lost_after().as_secs_f64(),
            t.margin().as_secs_f64(),
            t.max_stop_timeout().as_secs_f64(),
        ));
    }
    Ok(())
}

/// The library's fleet-wide configuration, vetted: `None` when unused
/// (no endpoints, no M), an error naming the mistake otherwise.
pub(crate) fn vet_library_config(cfg: &ClusterConfig) -> Result<Option<ClusterConfig>, String> {
    match (cfg.endpoints.is_empty(), cfg.max_peers) {
        (true, 0) => Ok(None),
        (true, _) => Err("cluster_max_peers() needs etcd() endpoints".into()),
        (false, 0) => Err("etcd() needs cluster_max_peers() of at least 1".into()),
        _ if cfg.lease_ttl.as_secs() < MIN_LEASE_TTL_SECS => Err(format!(
            "the etcd lease TTL must be at least {MIN_LEASE_TTL_SECS} s, not {:?}",
            cfg.lease_ttl
        )),
        _ => Ok(Some(cfg.clone())),
    }
}

/// The key of cluster slot `i` of `name`.
pub fn slot_key(name: &str, i: u32) -> String {
    format!("{}{i}", slot_prefix(name))
}

/// The prefix of every cluster slot key of `name`.
pub fn slot_prefix(name: &str) -> String {
    format!("/rdaemon/{name}/slot/")
}

/// This host's name, as stored in the slot key's value.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf, which
    // lives for the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Called by the keep-alive thread when the lease is lost.
pub type OnLost = Arc<dyn Fn() + Send + Sync>;

/// State shared between a [`ClusterLease`] and its keep-alive thread.
struct Shared {
    inner: Mutex<Inner>,
    cond: Condvar,
    /// Set once the standing is `Lost`: read by `lost()` without locking.
    lost: AtomicBool,
}

struct Inner {
    standing: LeaseStanding,
    stop: bool,
    on_lost: Option<OnLost>,
}

impl Shared {
    fn new(stop: bool, on_lost: Option<OnLost>) -> Arc<Shared> {
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                standing: LeaseStanding::Held,
                stop,
                on_lost,
            }),
            cond: Condvar::new(),
            lost: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Shared")
            .field("standing", &inner.standing)
            .field("stop", &inner.stop)
            .finish_non_exhaustive()
    }
}

/// A held cluster slot, kept alive by a background thread.
#[derive(Debug)]
pub struct ClusterLease {
    wake: OwnedFd,
    wake_tx: Arc<OwnedFd>,
    token: i64,
    cfg: ClusterConfig,
    name: String,
    local_slot: u32,
    client: Arc<Client>,
    lease_id: i64,
    slot: u32,
    shared: Arc<Shared>,
    /// The process that claimed: only it may revoke (a forked child that
    /// drops or releases a copy gives nothing back).
    owner: u32,
}

impl ClusterLease {
    /// Claims one of `cfg.max_peers` cluster slots of `name` for the local
    /// slot `local_slot`; blocks for at most a few seconds (about T/2).
    ///
    /// On success a keep-alive thread runs until [`ClusterLease::release`]
    /// or drop. Errors: [`ClaimError::Busy`] naming the holders,
    /// [`ClaimError::Unavailable`] naming each endpoint and its cause.
    pub fn claim(
        cfg: &ClusterConfig,
        name: &str,
        local_slot: u32,
    ) -> Result<ClusterLease, ClaimError> {
        let timing = LeaseTiming::new(cfg.lease_ttl);
        let client = Arc::new(
            Client::new(&cfg.endpoints, timing.call_timeout()).map_err(ClaimError::Unavailable)?,
        );
        let (rx, tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| ClaimError::Unavailable(format!("cannot create a pipe: {e}")))?;
        let mut lease = ClusterLease {
            wake: rx,
            wake_tx: Arc::new(tx),
            token: 0,
            cfg: cfg.clone(),
            name: name.to_string(),
            local_slot,
            client,
            lease_id: 0,
            slot: 0,
            shared: Shared::new(true, None),
            owner: std::process::id(),
        };
        lease.claim_now(LeaseTiming::new(cfg.lease_ttl).lost_after())?;
        Ok(lease)
    }

    /// Grants a lease, takes a free slot key and starts the keep-alive
    /// thread.
    /// Gives up after `budget` (at most T/2: the claim must end well
    /// inside the lease it grants).
    fn claim_now(&mut self, budget: Duration) -> Result<(), ClaimError> {
        let timing = LeaseTiming::new(self.cfg.lease_ttl);
        let ttl_secs =
            i64::try_from(self.cfg.lease_ttl.as_secs().max(MIN_LEASE_TTL_SECS)).unwrap_or(i64::MAX);
        let granted_at = Instant::now();
        // The claim must finish well inside the lease: by T/2 at most.
        let deadline = granted_at + budget.min(timing.lost_after());
        let unavailable = |e: EtcdError| ClaimError::Unavailable(format!("etcd: {e}"));
        let (id, granted) = self.client.grant(ttl_secs, deadline).map_err(unavailable)?;
        // Trust the shorter of what we asked for and what etcd granted.
        let timing = LeaseTiming::new(self.cfg.lease_ttl.min(Duration::from_secs(granted as u64)));
        let result = self.take_free_slot(id, deadline);
        let (slot, token) = match result {
            Ok(Some(found)) => found,
            Ok(None) => {
                let holders = self.holders(short_deadline());
                let _ = self.client.revoke(id, short_deadline());
                return Err(ClaimError::Busy(format!(
                    "all {} cluster slots of {} are held ({holders})",
                    self.cfg.max_peers, self.name
                )));
            }
            Err(e) => {
                let _ = self.client.revoke(id, short_deadline());
                return Err(unavailable(e));
            }
        };
        // A claim that took longer than a renewal period (a slow etcd)
        // renews once before COMMAND may start, so that it does not start
        // with its lease about to count as lost; etcd too slow even for
        // that is unavailable.
        let mut last_ok = granted_at;
        if granted_at.elapsed() >= timing.renew_every() {
            let sent = Instant::now();
            match self.client.keepalive(id, granted_at + timing.lost_after()) {
                Ok(ttl) if ttl > 0 => last_ok = sent,
                answer => {
                    let _ = self.client.revoke(id, short_deadline());
                    let why = match answer {
                        Err(e) => e.to_string(),
                        Ok(_) => "the lease expired meanwhile".to_string(),
                    };
                    return Err(ClaimError::Unavailable(format!(
                        "etcd answered too slowly: the claim took {:.1}s of a {}s lease, and renewing it failed ({why})",
                        granted_at.elapsed().as_secs_f64(),
                        timing.ttl().as_secs()
                    )));
                }
            }
        }
        self.lease_id = id;
        self.slot = slot;
        self.token = token;
        let on_lost = self.shared.lock().on_lost.clone();
        self.shared = Shared::new(false, on_lost);
        let keeper = Keeper {
            client: Arc::clone(&self.client),
            shared: Arc::clone(&self.shared),
            wake: Arc::clone(&self.wake_tx),
            timing,
            lease_id: id,
            key: slot_key(&self.name, slot),
            token,
        };
        let spawned = std::thread::Builder::new()
            .name("rdaemon-etcd".into())
            .spawn(move || keeper.run(last_ok));
        if let Err(e) = spawned {
            let _ = self.client.revoke(id, short_deadline());
            return Err(ClaimError::Unavailable(format!(
                "cannot start the lease keep-alive thread: {e}"
            )));
        }
        Ok(())
    }

    /// Tries the free slot keys in order; `Ok(None)` when all are held.
    fn take_free_slot(&self, id: i64, deadline: Instant) -> Result<Option<(u32, i64)>, EtcdError> {
        let prefix = slot_prefix(&self.name);
        let taken: std::collections::HashSet<Vec<u8>> = self
            .client
            .range_prefix(prefix.as_bytes(), deadline)?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let value = serde_json::json!({
            "host": host_name(),
            "pid": std::process::id(),
            "local_slot": self.local_slot,
            "started_unix": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        })
        .to_string();
        for i in 1..=self.cfg.max_peers {
            let key = slot_key(&self.name, i);
            if taken.contains(key.as_bytes()) {
                continue;
            }
            if let Some(rev) = self
                .client
                .create(key.as_bytes(), value.as_bytes(), id, deadline)?
            {
                return Ok(Some((i, rev)));
            }
        }
        Ok(None)
    }

    /// `host:pid` of every holder, for the Busy message.
    fn holders(&self, deadline: Instant) -> String {
        match fleet::list_with(&self.client, &self.name, deadline) {
            Ok(slots) if !slots.is_empty() => slots
                .iter()
                .map(|s| format!("slot {} by {}", s.slot, s.holder()))
                .collect::<Vec<_>>()
                .join(", "),
            Ok(_) => "by peers that left just now".into(),
            Err(e) => format!("holders unknown: {e}"),
        }
    }

    /// Readable when the standing may have changed; then call
    /// [`ClusterLease::standing`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Drains the wake-up descriptor and says where the lease stands.
    pub fn standing(&mut self) -> LeaseStanding {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
        self.shared.lock().standing.clone()
    }

    /// Whether the lease is lost: one atomic load, cheap enough for every
    /// library heartbeat.
    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire)
    }

    /// Calls `f` from the keep-alive thread when the lease is lost (at
    /// once if it already is), also after a [`ClusterLease::reclaim`]. For
    /// the library: `f` records the stop where `heartbeat()` already looks,
    /// so the loss costs the work loop nothing. `f` must not block.
    pub fn on_lost(&self, f: impl Fn() + Send + Sync + 'static) {
        let f: OnLost = Arc::new(f);
        let now = {
            let mut inner = self.shared.lock();
            inner.on_lost = Some(Arc::clone(&f));
            matches!(inner.standing, LeaseStanding::Lost { .. })
        };
        if now {
            f();
        }
    }

    /// The slot key's create revision: `RDAEMON_FENCING_TOKEN`.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// Which cluster slot (1..=M) is held.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The etcd lease ID.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// After a loss (with `--respawn`): tries once to claim a cluster slot
    /// again. The old lease is revoked first (best effort; the caller has
    /// stopped COMMAND), the same [`ClusterLease::fd`] stays valid, and the
    /// fencing token changes. On error the standing stays `Lost`.
    ///
    /// Blocks for at most [`RECLAIM_BUDGET`] (plus half a second for the
    /// revoke), so a supervisor waiting for a slot stays responsive.
    pub fn reclaim(&mut self) -> Result<(), ClaimError> {
        self.stop_thread();
        if self.lease_id != 0 {
            let _ = self
                .client
                .revoke(self.lease_id, Instant::now() + Duration::from_millis(500));
            self.lease_id = 0;
        }
        self.claim_now(RECLAIM_BUDGET)
    }

    /// Gives the cluster slot back (revokes the lease); best effort, blocks
    /// for about a second at most.
    pub fn release(mut self) {
        self.stop_thread();
        if self.lease_id != 0 && self.owner == std::process::id() {
            let _ = self.client.revoke(self.lease_id, short_deadline());
            self.lease_id = 0;
        }
    }

    fn stop_thread(&self) {
        self.shared.lock().stop = true;
        self.shared.cond.notify_all();
    }
}

impl Drop for ClusterLease {
    /// Stops the keep-alive thread; the lease then expires in etcd on its
    /// own (call [`ClusterLease::release`] to free the slot at once).
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// How long [`ClusterLease::reclaim`] tries at most.
pub const RECLAIM_BUDGET: Duration = Duration::from_secs(2);

/// A revoke's deadline: a second, it is best effort.
fn short_deadline() -> Instant {
    Instant::now() + Duration::from_secs(1)
}

/// The keep-alive thread's state.
struct Keeper {
    client: Arc<Client>,
    shared: Arc<Shared>,
    wake: Arc<OwnedFd>,
    timing: LeaseTiming,
    lease_id: i64,
    key: String,
    token: i64,
}

impl Keeper {
    fn run(self, granted_at: Instant) {
        let mut last_ok = granted_at;
        let mut next_try = last_ok + self.timing.renew_every();
        let mut last_error = String::from("no renewal attempted");
        let retry_pause = (self.timing.ttl() / 20).max(Duration::from_millis(50));
        loop {
            if !self.sleep_until(next_try) {
                return;
            }
            let lost_at = last_ok + self.timing.lost_after();
            let sent = Instant::now();
            if sent >= lost_at {
                let why = format!(
                    "etcd lease not renewed for {:.1}s (lease TTL {}s): {last_error}",
                    (sent - last_ok).as_secs_f64(),
                    self.timing.ttl().as_secs()
                );
                self.publish_lost(self.timing.kill_by(last_ok), why);
                return;
            }
            match self.client.keepalive(self.lease_id, lost_at) {
                Ok(ttl) if ttl > 0 => {
                    last_ok = sent;
                    next_try = sent + self.timing.renew_every();
                    if let Some(why) = self.key_gone(lost_at) {
                        self.publish_lost(Instant::now(), why);
                        return;
                    }
                }
                Ok(_) => {
                    self.publish_lost(
                        Instant::now(),
                        "the etcd lease expired or was revoked: the cluster slot may be another host's now"
                            .into(),
                    );
                    return;
                }
                Err(e) => {
                    last_error = e.to_string();
                    log::debug!("etcd lease renewal failed: {last_error}");
                    next_try = (Instant::now() + retry_pause).min(lost_at);
                }
            }
        }
    }

    /// Whether the slot key was deleted or re-created by someone else
    /// (`Some(why)`); a failed look-up is not proof of anything.
    fn key_gone(&self, deadline: Instant) -> Option<String> {
        match self.client.get(self.key.as_bytes(), deadline) {
            Ok(None) => Some(format!(
                "the cluster slot key {} was deleted in etcd",
                self.key
            )),
            Ok(Some(kv)) if kv.create_revision != self.token || kv.lease != self.lease_id => {
                Some(format!(
                    "the cluster slot key {} now belongs to another holder (revision {})",
                    self.key, kv.create_revision
                ))
            }
            _ => None,
        }
    }

    /// Sleeps until `t` or a stop; false on stop.
    fn sleep_until(&self, t: Instant) -> bool {
        let mut inner = self.shared.lock();
        loop {
            if inner.stop {
                return false;
            }
            let now = Instant::now();
            if now >= t {
                return true;
            }
            inner = self
                .shared
                .cond
                .wait_timeout(inner, t - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn publish_lost(&self, kill_by: Instant, why: String) {
        let on_lost = {
            let mut inner = self.shared.lock();
            if inner.stop {
                return;
            }
            log::debug!("{why}");
            inner.standing = LeaseStanding::Lost { kill_by, why };
            inner.on_lost.clone()
        };
        self.shared.lost.store(true, Ordering::Release);
        if let Some(f) = on_lost {
            f();
        }
        // A full pipe already says "look"; nothing else can go wrong that
        // the reader would not also see.
        let _ = nix::unistd::write(&*self.wake, b"!");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let t = LeaseTiming::new(Duration::from_secs(10));
        assert_eq!(
            t.renew_every(),
            Duration::from_millis(3333) + Duration::from_nanos(333_333)
        );
        assert_eq!(t.lost_after(), Duration::from_secs(5));
        assert_eq!(t.margin(), Duration::from_secs(1));
        assert_eq!(t.max_stop_timeout(), Duration::from_secs(4));
        let now = Instant::now();
        assert_eq!(t.kill_by(now), now + Duration::from_secs(9));
        let t = LeaseTiming::new(Duration::from_secs(60));
        assert_eq!(t.margin(), Duration::from_secs(6));
        assert_eq!(t.max_stop_timeout(), Duration::from_secs(24));
        // The order the module docs promise, for any TTL we accept.
        for secs in MIN_LEASE_TTL_SECS..200 {
            let t = LeaseTiming::new(Duration::from_secs(secs));
            assert!(t.renew_every() < t.lost_after());
            assert!(t.lost_after() + t.max_stop_timeout() <= t.ttl() - t.margin());
            assert!(t.call_timeout() * 2 < t.lost_after() || secs < 3);
        }
    }

    #[test]
    fn stop_timeout_must_fit() {
        let ten = Duration::from_secs(10);
        assert!(check_stop_timeout(Duration::from_secs(4), ten).is_ok());
        assert!(check_stop_timeout(Duration::ZERO, ten).is_ok());
        let e = check_stop_timeout(Duration::from_secs(10), ten).unwrap_err();
        assert!(e.contains("at most 4"), "{e}");
        assert!(e.contains("--lease-ttl 25"), "{e}");
        assert!(check_stop_timeout(Duration::from_secs(10), Duration::from_secs(25)).is_ok());
        // The suggested TTL always fits.
        for s in [0.5f64, 1.0, 3.0, 7.5, 30.0] {
            let stop = Duration::from_secs_f64(s);
            let e = check_stop_timeout(stop, Duration::from_secs(2)).unwrap_err();
            let need: u64 = e.rsplit("--lease-ttl ").next().unwrap().parse().unwrap();
            assert!(
                check_stop_timeout(stop, Duration::from_secs(need)).is_ok(),
                "{s}: {e}"
            );
        }
        assert!(check_stop_timeout(Duration::ZERO, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_lease_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ClusterLease>();
        send_sync::<client::Client>();
    }

    #[test]
    fn keys() {
        assert_eq!(slot_key("mailer", 3), "/rdaemon/mailer/slot/3");
        assert!(slot_key("mailer", 3).starts_with(&slot_prefix("mailer")));
        assert!(!host_name().is_empty());
    }
}
