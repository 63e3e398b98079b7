//! The supervisor: the process that holds a slot and runs COMMAND under it.
//!
//! It is COMMAND's parent and a child subreaper, so it owns COMMAND's whole
//! process tree: every descendant, whatever it does with sessions, groups
//! or double forks, stays below the supervisor, is stopped with it and is
//! reaped by it ([`tree`]). It never guesses whether something runs: it
//! learns of every exit from `waitpid()`, and the tree is empty exactly when
//! it has no child left.
//!
//! The files, by concern:
//!
//! - [`machine`]: the phases (starting, running, stopping, backing off,
//!   waiting for a cluster lease, done), the events, and the one transition
//!   function that turns an event into a new phase and a list of actions;
//! - `event_loop`: the loop that sleeps in `poll()`, turns what woke it into
//!   events, and carries out the actions;
//! - [`tree`]: the subreaper, reaping, and signals that reach only our own
//!   processes;
//! - `child`: spawning COMMAND with a `vfork`-style clone (identity,
//!   directory, signal state, death signal (SIGKILL under a cluster
//!   lease), the inherited slot and directory locks, and why an exec
//!   failed);
//! - [`notify`]: the sd_notify socket;
//! - [`respawn`]: recycles, failed runs and back-off.
//!
//! It sleeps in `poll()` on signals, COMMAND's output pipes and inotify
//! watches on its PID file and directory, waking on its own only for
//! deadlines (the SIGKILL after the stop grace, the end of a back-off, the
//! READY=1 wait, `--watchdog`, `--memory-limit` sampling, an optional
//! `--heartbeat-interval`). An idle supervisor has no deadline at all: it
//! sleeps until something happens. Owning the tree costs no timer either:
//! SIGCHLD says when it changes.
//!
//! ## The heartbeat is an answer, not a clock
//!
//! `--check --max-age` asks whether the supervisor is alive *and* working.
//! Instead of refreshing the PID file's mtime on a timer (a wake-up every
//! few seconds for every idle daemon, and an answer up to one period stale),
//! the supervisor answers when asked. A reader that wants a heartbeat
//! (`--check --max-age`, `--status`) and finds the state file's
//! `answers_probes` mark opens the PID file for writing and closes it
//! without writing: the supervisor's inotify watch sees IN_CLOSE_WRITE,
//! verifies its slot and touches the mtime, and the reader waits briefly
//! for that touch. So the age it reports is that of a reply to its own
//! question: fresh from a working supervisor, old from a stopped or wedged
//! one. Readers that need no heartbeat (plain `--check`, `cat`, systemd's
//! `PIDFile=`) open the file read-only and wake nobody.
//!
//! ## Never N+1
//!
//! COMMAND inherits the slot's locked descriptor (`RDAEMON_LOCK_FD`). A lock
//! belongs to the open file description, so it stays held while the
//! supervisor *or* any process of COMMAND's tree that kept the descriptor
//! is alive. The supervisor releases the slot only once its tree is empty,
//! so while it lives, the lock proves nothing extra; it matters when the
//! supervisor is killed with SIGKILL. Then COMMAND gets SIGTERM from its
//! death signal (`PR_SET_PDEATHSIG`, armed after any `--user` change), but
//! until every holder is gone the slot stays locked: `--status` shows it
//! `orphaned`, no new start can take it, and `--stop` ends the holders. The
//! moment the last holder exits the kernel drops the lock and the stale
//! file is reused. A death signal alone would not be enough (it reaches
//! COMMAND, not its children), nor would the lock alone (an orphan would
//! run on without its log and limits): together they are.
//!
//! COMMAND inherits the PID directory's shared lock too (the descriptor
//! the slot holds so that systemd-tmpfiles skips the directory, see
//! `PidDir::hold_shared`), also cleared of `FD_CLOEXEC` between fork and
//! exec: an orphaned slot's files are as safe from /tmp cleaners as a
//! supervised one's. Without it, a clean with a short age would delete
//! the orphan's PID file and a new start would run a second copy.
//!
//! Under `--etcd` the death signal is SIGKILL, not SIGTERM: nobody can
//! renew the cluster lease once the supervisor is gone, so a COMMAND that
//! ignored SIGTERM would outlive the lease and overlap with another
//! host's copy. What this does not cover: descendants of COMMAND (a
//! death signal reaches only the direct child; processes that left
//! COMMAND's reach by double-forking live on until `--stop` or their own
//! end), and a supervisor that is stopped (SIGSTOP) rather than killed:
//! it does not die, so no death signal fires, yet it renews nothing, and
//! COMMAND runs on past the lease's expiry.

pub(crate) mod child;
mod event_loop;
pub mod machine;
pub mod notify;
pub mod respawn;
pub mod tree;

use std::path::PathBuf;
use std::time::Duration;

pub use child::{ChildSpec, Identity};
pub use machine::{Finish, StartOutcome};
use respawn::RespawnLimits;

/// Where output goes.
#[derive(Debug, Clone)]
pub enum OutputChoice {
    /// Append to this file.
    Log(PathBuf),
    /// Send to syslog through this socket.
    Syslog(PathBuf),
    /// Foreground only: COMMAND shares rdaemon's stdout and stderr.
    Inherit,
}

/// Everything a supervisor needs, decided before it starts.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub max_peers: u32,
    pub pid_dir: PathBuf,
    pub child: ChildSpec,
    pub stop_timeout: Duration,
    /// `Some` with `--respawn`.
    pub respawn: Option<RespawnLimits>,
    /// With `--respawn`: exit statuses that mean "finished, do not restart".
    pub finished_exit_codes: Vec<i32>,
    pub memory_limit: Option<u64>,
    pub output: OutputChoice,
    /// `--heartbeat-interval`: also refresh the heartbeat on this period
    /// (for readers that only look at the mtime). `None`: only on demand.
    pub heartbeat_interval: Option<Duration>,
    /// `--notify`: the start is reported only once COMMAND sends READY=1.
    pub notify: bool,
    /// `--ready-timeout`: how long `--notify` waits for READY=1 (and
    /// `--forking` for COMMAND to daemonize: its main process found).
    pub ready_timeout: Duration,
    /// `--watchdog`: COMMAND must send WATCHDOG=1 at least this often.
    pub watchdog: Option<Duration>,
    /// rdaemon's own `$NOTIFY_SOCKET` (foreground under systemd
    /// `Type=notify`): READY=1 is passed up once COMMAND is ready.
    pub upstream_notify: Option<String>,
    /// `--min-uptime`: a shorter run is a failed run; a longer one a recycle.
    pub min_uptime: Duration,
    /// `--recycle-codes`: exit statuses that are always planned recycles.
    pub recycle_codes: Vec<i32>,
    /// `--forking`: COMMAND daemonizes itself; supervise what it leaves.
    pub forking: bool,
    /// `--pidfile` (with `--forking`): where COMMAND names its main process.
    pub pidfile: Option<PathBuf>,
    /// `--timestamps`: prefix log lines with time and slot.
    pub timestamps: bool,
    /// `--etcd` & co.: also hold one of M cluster slots.
    pub cluster: Option<crate::etcd::ClusterConfig>,
    /// `--foreground`: no starter waits for the outcome (the exit status
    /// is COMMAND's), so a first start is not held back to see whether
    /// COMMAND dies at once.
    pub foreground: bool,
}

/// How the supervisor tells its starter whether COMMAND runs.
pub trait Readiness {
    /// The outcome of the first start (told once).
    fn report(&mut self, outcome: &StartOutcome);
}

/// Runs a supervisor to completion in this process and says how it ended.
/// `ready` hears the outcome of the first start: at once when it runs,
/// and for a failure only once the slot is released.
///
/// Blocks for the supervisor's whole life. Must be called while the
/// process is single-threaded: it changes signal dispositions, becomes a
/// subreaper, and forks.
pub fn run(cfg: Config, ready: &mut dyn Readiness) -> Finish {
    event_loop::run(cfg, ready)
}
