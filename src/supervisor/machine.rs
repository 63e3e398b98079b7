//! The supervisor's phases and its one transition function.
//!
//! Everything the supervisor decides is here, as data: an [`Event`] comes
//! in, [`Machine::on`] matches on `(phase, event)`, changes the phase and
//! returns the [`Action`]s the event loop must carry out (spawn, signal the
//! tree, publish the state, log, tell the starter, exit). No process is
//! touched here, no file read, no clock consulted except the `now` each
//! event brings, so every transition is tested without processes (see the
//! fake child in the tests below), as s6-supervise's state table and
//! watchexec's `TestChild` do.
//!
//! ```text
//!          Spawned                READY=1 / main process found (--forking)
//!  Idle ───────────▶ Starting ─────────────────────────▶ Running
//!                       │  stop, lock lost, memory, restart,  │
//!                       │  COMMAND exited, watchdog, lease    │
//!                       ▼                                     ▼
//!                    Stopping{then, kill_at} ◀────────────────┘
//!                       │ tree empty (SIGKILL at kill_at)
//!         ┌─────────────┼──────────────────┬───────────────────┐
//!         ▼             ▼                  ▼                   ▼
//!   Done(finish)  BackingOff{until}  WaitingForLease{retry}  Spawn (recycle)
//!                       │ until ──▶ Spawn     │ reclaimed ──▶ Spawn
//! ```
//!
//! Under `--forking`, `Starting` also tracks the daemonizing ([`Forking`]):
//! the first process runs; it exited 0 and the main process is sought
//! (`FindMain`, answered `MainFound` or `MainNotYet`, asked again after a
//! growing pause until `start_by`: a PID file written after a double fork,
//! a tree between forks); the start is reported only once it is found.
//! Without `--pidfile`, a picked main process that exits 0 leaving
//! processes behind was an intermediate: the machine seeks again (a few
//! times at most) instead of ending the run.
//!
//! Each phase carries its own deadlines (the READY=1 wait in `Starting`,
//! the watchdog in `Running`, the SIGKILL in `Stopping`, the end of a
//! back-off); [`Machine::next_deadline`] is all the loop needs to know
//! when to wake up, and an idle `Running` without `--watchdog` has none.

use std::time::{Duration, Instant};

use super::respawn::{Decision, RespawnLimits, RespawnState, RunEnd, classify, recycle_jitter};
use super::tree::ExitStatus;
use crate::state;
use crate::timefmt::secs;

/// What the starter (the caller of `rdaemon --name …`, or `--foreground`'s
/// own exit) learns about the first start. `commands.rs` maps it to an
/// exit status; the supervisor only knows what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// COMMAND runs (and, with `--notify`, sent READY=1).
    Started,
    /// Every slot is held; the message names the holders.
    Busy(String),
    /// The request itself was wrong (a bad name, say).
    Usage(String),
    /// COMMAND could not be executed; `errno` from exec.
    ExecFailed { errno: i32, message: String },
    /// COMMAND exited before its start was complete.
    Exited { status: ExitStatus, message: String },
    /// Anything else; the message names the file or cause.
    Failed(String),
}

impl StartOutcome {
    /// The text for the starter's stderr (empty for `Started`).
    pub fn message(&self) -> &str {
        match self {
            StartOutcome::Started => "",
            StartOutcome::Busy(m)
            | StartOutcome::Usage(m)
            | StartOutcome::Failed(m)
            | StartOutcome::ExecFailed { message: m, .. }
            | StartOutcome::Exited { message: m, .. } => m,
        }
    }
}

/// How a supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Stopped on request (TERM/INT/QUIT, `--stop`).
    Stopped,
    /// COMMAND ended on its own and was not restarted: its status.
    CommandExited(ExitStatus),
    /// Gave up after too many failed runs; the tombstone is left.
    GaveUp(ExitStatus),
    /// The start failed; the starter was told this.
    StartFailed(StartOutcome),
    /// Anything else that ended the supervision (lock lost, memory limit
    /// without `--respawn`, lease lost, a hung COMMAND).
    Failed,
}

/// What the machine needs to know of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub notify: bool,
    pub ready_timeout: Duration,
    pub watchdog: Option<Duration>,
    pub stop_timeout: Duration,
    pub respawn: Option<RespawnLimits>,
    pub finished_codes: Vec<i32>,
    pub min_uptime: Duration,
    pub recycle_codes: Vec<i32>,
    pub forking: bool,
    /// `--forking --pidfile`: only the PID file names the main process
    /// (waited for until `ready_timeout`); without it, the single remaining
    /// child is the main process, and is picked again if it turns out to
    /// be the intermediate of a double fork.
    pub pidfile: bool,
    /// With `--etcd`: how often to try to reclaim a lost cluster slot.
    pub lease_retry: Option<Duration>,
    /// A starter waits for the first start's outcome (not `--foreground`):
    /// it is told only once COMMAND did not die at once.
    pub settle: bool,
}

/// Every input of the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The slot is held; start the first run.
    Begin,
    /// [`Action::Spawn`] succeeded: COMMAND runs as `pid`.
    Spawned { pid: i32 },
    /// [`Action::Spawn`] failed.
    SpawnFailed(StartOutcome),
    /// Answer to [`Action::AwaitSettled`]: COMMAND is up (it blocked, or
    /// computed past the limit) and did not die at once. Had it died, a
    /// `Reaped` comes instead.
    Settled,
    /// A child was reaped; `tree_empty` says whether any process of the
    /// tree is left after this reaping round.
    Reaped {
        pid: i32,
        status: ExitStatus,
        tree_empty: bool,
    },
    /// No process of the tree is left.
    TreeEmpty,
    /// Answer to [`Action::FindMain`] (`--forking`): the process COMMAND
    /// left behind, or why none could be trusted.
    MainFound(Result<i32, String>),
    /// Answer to [`Action::FindMain`]: no main process yet, but COMMAND
    /// may still be daemonizing (the PID file is not written yet, or its
    /// processes are between forks); the text says what was seen. The
    /// machine asks again after a pause, until the start's deadline.
    MainNotYet(String),
    /// A stop signal: TERM, INT or QUIT.
    Stop(i32),
    /// HUP, USR1 or USR2: for COMMAND's main process.
    Forward(i32),
    /// The restart signal (`--restart`).
    RestartRequested,
    /// COMMAND's sd_notify message (MAINPID= already vetted by the loop).
    Notification(super::notify::Notification),
    /// The slot's PID file was deleted or replaced; the text says which.
    SlotLost(String),
    /// The supervisor cannot go on supervising (its signal handlers could
    /// not be installed); the text says why. Handled like a lost slot:
    /// the tree is stopped, a waiting start fails, the exit is a failure.
    Fault(String),
    /// A reader asked for a heartbeat.
    HeartbeatQuestion,
    /// Woken for a deadline (or anything else): the time is `now`.
    Tick,
    /// The tree's resident memory is over `--memory-limit`.
    MemoryOver { rss: u64, limit: u64 },
    /// The cluster lease can no longer be proven: the tree must be dead by
    /// `kill_by`.
    LeaseLost { kill_by: Instant, why: String },
    /// [`Action::ReclaimLease`] succeeded.
    LeaseReclaimed,
    /// [`Action::ReclaimLease`] failed.
    LeaseBusy(String),
}

/// What the loop must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a run of COMMAND; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// First start: wait briefly until COMMAND blocks or exits; answer
    /// with `Settled`, or reap it and answer with `Reaped`.
    AwaitSettled,
    /// `--forking`: find the process COMMAND left behind; answer with
    /// `MainFound`.
    FindMain,
    /// Send this signal to every live process of the tree.
    SignalTree(i32),
    /// Send this signal to COMMAND's main process (MAINPID= if given).
    SignalMain(i32),
    /// Write the state file from [`Machine`]'s accessors.
    Publish,
    /// Write an event line to the log.
    Log(String),
    /// Write out what COMMAND's pipes hold, partial last lines included.
    FlushOutput,
    /// Tell the starter how the first start went (once).
    ReportReady(StartOutcome),
    /// Pass this to rdaemon's own `$NOTIFY_SOCKET` (systemd).
    TellUpstream(&'static str),
    /// Verify the slot and refresh the heartbeat.
    AnswerHeartbeat,
    /// Try to claim a cluster slot again; answer `LeaseReclaimed` or
    /// `LeaseBusy`.
    ReclaimLease,
    /// Release everything and end with this.
    Exit(Finish),
}

/// What follows a stop, once the tree is empty.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// End the supervisor.
    Exit(Finish),
    /// Start afresh at once (memory limit, restart request); `jitter`
    /// spreads peers that recycle together.
    Recycle { jitter: bool },
    /// A failed run (hung, no READY=1): back off, counted.
    FailedRun,
    /// COMMAND exited on its own after running `ran`: the respawn policy
    /// decides once its leftovers are gone.
    Decide { status: ExitStatus, ran: Duration },
    /// The cluster lease was lost: wait for a cluster slot.
    WaitLease,
}

impl Then {
    /// The supervisor must exit once the tree is empty: an exit already
    /// planned stands, anything else becomes `finish`.
    fn exit_anyway(self, finish: Finish) -> Then {
        match self {
            Then::Exit(f) => Then::Exit(f),
            _ => Then::Exit(finish),
        }
    }
}

/// One run of COMMAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The main process: COMMAND, or with `--forking` first COMMAND's first
    /// process and then the process it left behind.
    pub main: i32,
    pub started: Instant,
    /// The main process has exited (been reaped).
    pub main_gone: bool,
    /// `--forking` without `--pidfile`: how often the main process was
    /// picked again after the one picked exited 0 leaving processes
    /// behind (the intermediate of a double fork). Bounded.
    pub repicks: u8,
}

/// Where a `--forking` start is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forking {
    /// Not `--forking`, or the main process is known.
    Off,
    /// COMMAND's first process has not exited yet.
    FirstRuns,
    /// The first process (or a picked main process that turned out to be
    /// an intermediate) exited 0: looking for the main process. A
    /// [`Action::FindMain`] is outstanding while `retry_at` is `None`;
    /// otherwise the next one is due at `retry_at`, `pause` after the
    /// last `MainNotYet` (doubling, up to [`SEEK_PAUSE_MAX`]). `why` is
    /// what the last look saw, for the log and a timeout's message.
    Seeking {
        retry_at: Option<Instant>,
        pause: Duration,
        why: Option<String>,
    },
}

impl Forking {
    fn seeking() -> Forking {
        Forking::Seeking {
            retry_at: None,
            pause: SEEK_PAUSE_FIRST,
            why: None,
        }
    }
}

/// The first pause between two looks for a `--forking` main process.
const SEEK_PAUSE_FIRST: Duration = Duration::from_millis(5);
/// The longest pause between two looks (a bounded poll with back-off,
/// only while a start is not complete).
pub const SEEK_PAUSE_MAX: Duration = Duration::from_millis(200);
/// How often a main process is picked again after the picked one exited
/// 0 leaving processes behind (a double fork needs one; a triple, two).
const MAX_REPICKS: u8 = 4;

/// The supervisor's phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Before the first spawn.
    Idle,
    /// COMMAND runs but its start is not complete: READY=1 not yet sent
    /// (`--notify`, `awaiting_ready`) or its main process is not known
    /// yet (`--forking`, `forking`); both by `start_by`.
    Starting {
        run: Run,
        start_by: Instant,
        awaiting_ready: bool,
        forking: Forking,
    },
    /// COMMAND runs; `watchdog_by` with `--watchdog`.
    Running {
        run: Run,
        watchdog_by: Option<Instant>,
    },
    /// The tree is being stopped; SIGKILL at `kill_at`.
    Stopping {
        run: Option<Run>,
        kill_at: Instant,
        killed: bool,
        then: Then,
    },
    /// Waiting to start COMMAND again.
    BackingOff { until: Instant },
    /// The cluster slot was lost (`--etcd --respawn`); try again at
    /// `retry_at`.
    WaitingForLease { retry_at: Instant },
    /// Finished; the loop exits.
    Done(Finish),
}

/// The supervisor's decisions: the phase plus the little history the
/// policy needs.
#[derive(Debug)]
pub struct Machine {
    policy: Policy,
    phase: Phase,
    respawn: Option<RespawnState>,
    /// The starter has not been told the outcome of the first start.
    starter_waiting: bool,
    /// When the waiting starter's start fails: the first spawn plus
    /// `--ready-timeout`. Runs recycled before the start was told (a
    /// memory limit during the readiness wait) keep it, so a start never
    /// waits longer than the man page's "within SECS".
    start_deadline: Option<Instant>,
    /// A failed first start, told to the starter only once the slot is
    /// released (so a caller that sees the failure finds the slot free).
    pending_report: Option<StartOutcome>,
    restarts: u32,
    runs: u64,
    last_exit: Option<ExitStatus>,
    reason: Option<String>,
    ready: bool,
    /// When the current back-off ends (published as `next_try_unix_ms`).
    next_try: Option<Instant>,
    /// When the current stop sent SIGTERM (for the SIGKILL's log line).
    term_sent: Option<Instant>,
    /// A `--restart` asked for the next run and waits for it to come up:
    /// that run is `starting` until it settled (or sent READY=1), so the
    /// waiting CLI never calls a run that dies at once restarted.
    restart_waiting: bool,
}

/// Why a start fails when a stop request arrives before it was told.
fn stopped_before_ready(sig: i32) -> String {
    format!(
        "received {} before COMMAND was ready",
        crate::signal_name(sig)
    )
}

impl Machine {
    pub fn new(policy: Policy) -> Machine {
        Machine {
            respawn: policy.respawn.map(RespawnState::new),
            policy,
            phase: Phase::Idle,
            starter_waiting: true,
            start_deadline: None,
            pending_report: None,
            restarts: 0,
            runs: 0,
            last_exit: None,
            reason: None,
            ready: false,
            next_try: None,
            term_sent: None,
            restart_waiting: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The phase as published in the state file (`None` before the first
    /// spawn).
    pub fn published_phase(&self) -> Option<state::Phase> {
        Some(match &self.phase {
            Phase::Idle => state::Phase::Starting,
            // Without --notify or --forking COMMAND runs once exec'd; the
            // short wait to see it did not die at once changes nothing.
            Phase::Starting {
                awaiting_ready: false,
                forking: Forking::Off,
                ..
            } if !self.restart_waiting => state::Phase::Running,
            Phase::Starting { .. } => state::Phase::Starting,
            Phase::Running { .. } => state::Phase::Running,
            Phase::Stopping { .. } => state::Phase::Stopping,
            Phase::BackingOff { .. } | Phase::WaitingForLease { .. } => state::Phase::Backoff,
            Phase::Done(Finish::GaveUp(_)) => state::Phase::Failed,
            Phase::Done(_) => state::Phase::Stopping,
        })
    }

    /// Whether the supervisor exits once the tree is gone: stopping with an
    /// exit planned, or done. False while it stops COMMAND to start it
    /// again, and in every other phase.
    pub fn exiting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopping {
                then: Then::Exit(_),
                ..
            } | Phase::Done(_)
        )
    }

    /// COMMAND's main process while a run's main process lives.
    pub fn main_pid(&self) -> Option<i32> {
        match &self.phase {
            Phase::Starting { run, .. } | Phase::Running { run, .. } if !run.main_gone => {
                Some(run.main)
            }
            Phase::Stopping { run: Some(run), .. } if !run.main_gone => Some(run.main),
            _ => None,
        }
    }

    /// Whether a run of COMMAND is in progress (memory is worth sampling).
    pub fn running(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. } | Phase::Running { .. })
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn runs(&self) -> u64 {
        self.runs
    }

    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// `Some(ready)` under `--notify`.
    pub fn ready(&self) -> Option<bool> {
        self.policy.notify.then_some(self.ready)
    }

    pub fn next_try(&self) -> Option<Instant> {
        match self.phase {
            Phase::BackingOff { .. } | Phase::WaitingForLease { .. } => self.next_try,
            _ => None,
        }
    }

    /// A failed first start not yet told to the starter.
    pub fn take_pending_report(&mut self) -> Option<StartOutcome> {
        self.pending_report.take()
    }

    /// The earliest deadline of the current phase.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Starting {
                start_by,
                forking:
                    Forking::Seeking {
                        retry_at: Some(at), ..
                    },
                ..
            } => Some(*start_by.min(at)),
            Phase::Starting { start_by, .. } => Some(*start_by),
            Phase::Running { watchdog_by, .. } => *watchdog_by,
            Phase::Stopping { kill_at, .. } => Some(*kill_at),
            Phase::BackingOff { until } => Some(*until),
            Phase::WaitingForLease { retry_at } => Some(*retry_at),
            Phase::Idle | Phase::Done(_) => None,
        }
    }

    /// The transition function: `(phase, event) -> (phase, actions)`.
    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        self.phase = match (phase, event) {
            (Phase::Done(f), _) => Phase::Done(f),

            // ---- spawning ------------------------------------------------
            (Phase::Idle, Event::Begin) => {
                out.push(Action::Spawn);
                Phase::Idle
            }
            (Phase::Idle, Event::Spawned { pid }) => self.spawned(pid, now, &mut out),
            (Phase::Idle, Event::SpawnFailed(outcome)) => {
                out.push(Action::Log(outcome.message().to_string()));
                if self.starter_waiting {
                    self.finish_start_failed(outcome, &mut out)
                } else {
                    // A respawn that cannot exec is a failed run.
                    self.after_run(RunEnd::Failed, None, now, &mut out)
                }
            }

            // ---- the main process exits ------------------------------------
            (
                Phase::Starting {
                    run,
                    start_by,
                    awaiting_ready,
                    forking: Forking::FirstRuns,
                },
                Event::Reaped {
                    pid,
                    status: ExitStatus::Code(0),
                    ..
                },
            ) if pid == run.main => {
                out.push(Action::FindMain);
                Phase::Starting {
                    run: Run {
                        main_gone: true,
                        ..run
                    },
                    start_by,
                    awaiting_ready,
                    forking: Forking::seeking(),
                }
            }
            // --forking without --pidfile: the main process picked was the
            // single remaining child, and it exited 0 leaving processes
            // behind: it was the intermediate of a double fork, not the
            // daemon. Pick again among what is left (bounded) instead of
            // ending the run; the start's deadline applies afresh.
            (
                Phase::Starting {
                    run,
                    awaiting_ready,
                    forking: Forking::Off,
                    ..
                },
                Event::Reaped {
                    pid,
                    status: ExitStatus::Code(0),
                    tree_empty: false,
                },
            ) if pid == run.main && self.may_repick(&run) => {
                self.repick(run, awaiting_ready, now, &mut out)
            }
            (
                Phase::Running { run, .. },
                Event::Reaped {
                    pid,
                    status: ExitStatus::Code(0),
                    tree_empty: false,
                },
            ) if pid == run.main && self.may_repick(&run) => self.repick(run, false, now, &mut out),
            (
                Phase::Starting { run, .. } | Phase::Running { run, .. },
                Event::Reaped {
                    pid,
                    status,
                    tree_empty,
                },
            ) if pid == run.main => self.main_exited(run, status, tree_empty, now, &mut out),
            // A main process that is not the supervisor's own child (a
            // --pidfile naming a grandchild) is never reaped here; the
            // tree going empty says it is gone. Its status is unknown:
            // the last process reaped stands for it.
            (
                Phase::Starting { run, .. } | Phase::Running { run, .. },
                Event::Reaped {
                    pid,
                    status,
                    tree_empty: true,
                },
            ) => {
                out.push(Action::Log(format!(
                    "COMMAND's main process PID {} is gone with the rest of its tree (last: PID {pid})",
                    run.main
                )));
                self.main_exited(run, status, true, now, &mut out)
            }
            (
                Phase::Starting {
                    run,
                    start_by,
                    awaiting_ready,
                    forking: Forking::Seeking { .. },
                },
                Event::MainFound(found),
            ) => match found {
                Ok(main) => {
                    out.push(Action::Log(if run.repicks == 0 {
                        format!(
                            "COMMAND's first process exited; supervising PID {main} it left behind"
                        )
                    } else {
                        format!("supervising PID {main}, left behind by PID {}", run.main)
                    }));
                    let run = Run {
                        main,
                        main_gone: false,
                        ..run
                    };
                    if awaiting_ready {
                        out.push(Action::Publish);
                        Phase::Starting {
                            run,
                            start_by,
                            awaiting_ready,
                            forking: Forking::Off,
                        }
                    } else {
                        self.now_running(run, true, now, &mut out)
                    }
                }
                Err(why) => {
                    let msg = format!("COMMAND daemonized, but {why}");
                    out.push(Action::Log(msg.clone()));
                    let then = self.failed_start_then(StartOutcome::Failed(msg));
                    self.begin_stop(Some(run), then, "no main process", now, &mut out)
                }
            },

            (
                Phase::Starting {
                    run,
                    start_by,
                    awaiting_ready,
                    forking:
                        Forking::Seeking {
                            retry_at: None,
                            pause,
                            why: last,
                        },
                },
                Event::MainNotYet(why),
            ) => {
                // Logged once per distinct sight, not once per look.
                if last.as_deref() != Some(why.as_str()) {
                    out.push(Action::Log(format!(
                        "waiting for COMMAND's main process: {why}"
                    )));
                }
                Phase::Starting {
                    run,
                    start_by,
                    awaiting_ready,
                    forking: Forking::Seeking {
                        retry_at: Some((now + pause).min(start_by)),
                        pause: (pause * 2).min(SEEK_PAUSE_MAX),
                        why: Some(why),
                    },
                }
            }

            (
                Phase::Starting {
                    run,
                    awaiting_ready: false,
                    forking: Forking::Off,
                    ..
                },
                Event::Settled,
            ) => {
                // A restarted run was published as starting; a first one
                // already as running.
                let publish = std::mem::take(&mut self.restart_waiting);
                self.now_running(run, publish, now, &mut out)
            }

            // ---- readiness and the watchdog ---------------------------------
            (
                Phase::Starting {
                    run,
                    start_by,
                    awaiting_ready,
                    forking,
                },
                Event::Notification(n),
            ) => {
                if n.watchdog_trigger {
                    out.push(Action::Log(
                        "COMMAND asked for a watchdog restart (WATCHDOG=trigger)".into(),
                    ));
                    let then = self.hung_then();
                    self.begin_stop(Some(run), then, "watchdog trigger", now, &mut out)
                } else if n.ready && awaiting_ready {
                    out.push(Action::Log("COMMAND is ready".into()));
                    self.ready = true;
                    if forking != Forking::Off {
                        out.push(Action::Publish);
                        Phase::Starting {
                            run,
                            start_by,
                            awaiting_ready: false,
                            forking,
                        }
                    } else {
                        self.now_running(run, true, now, &mut out)
                    }
                } else {
                    let start_by = match n.extend_timeout {
                        Some(extra) => start_by.max(now + extra),
                        None => start_by,
                    };
                    Phase::Starting {
                        run,
                        start_by,
                        awaiting_ready,
                        forking,
                    }
                }
            }
            (Phase::Running { run, watchdog_by }, Event::Notification(n)) => {
                if n.watchdog_trigger {
                    out.push(Action::Log(
                        "COMMAND asked for a watchdog restart (WATCHDOG=trigger)".into(),
                    ));
                    let then = self.hung_then();
                    self.begin_stop(Some(run), then, "watchdog trigger", now, &mut out)
                } else {
                    let watchdog_by = match self.policy.watchdog {
                        Some(w) if n.watchdog => Some(now + w),
                        _ => watchdog_by,
                    };
                    Phase::Running { run, watchdog_by }
                }
            }
            (
                Phase::Starting {
                    run,
                    start_by,
                    awaiting_ready,
                    forking,
                },
                Event::Tick,
            ) => {
                if now >= start_by {
                    let msg = if let Forking::Seeking { why, .. } = &forking {
                        format!(
                            "COMMAND daemonized, but no main process was found within {}: {}; stopping it",
                            secs(self.policy.ready_timeout),
                            why.as_deref().unwrap_or("no answer")
                        )
                    } else if forking == Forking::FirstRuns {
                        format!(
                            "COMMAND's first process did not exit within {}; stopping it",
                            secs(self.policy.ready_timeout)
                        )
                    } else {
                        format!(
                            "COMMAND sent no READY=1 within {}; stopping it",
                            secs(self.policy.ready_timeout)
                        )
                    };
                    out.push(Action::Log(msg.clone()));
                    let then = self.failed_start_then(StartOutcome::Failed(msg));
                    self.begin_stop(Some(run), then, "start timed out", now, &mut out)
                } else if let Forking::Seeking {
                    retry_at: Some(at),
                    pause,
                    why,
                } = &forking
                    && now >= *at
                {
                    // Look again; not due again until the answer says so.
                    out.push(Action::FindMain);
                    Phase::Starting {
                        run,
                        start_by,
                        awaiting_ready,
                        forking: Forking::Seeking {
                            retry_at: None,
                            pause: *pause,
                            why: why.clone(),
                        },
                    }
                } else {
                    Phase::Starting {
                        run,
                        start_by,
                        awaiting_ready,
                        forking,
                    }
                }
            }
            (
                Phase::Running {
                    run,
                    watchdog_by: Some(by),
                },
                Event::Tick,
            ) => {
                if now >= by {
                    let wd = self.policy.watchdog.unwrap_or_default();
                    out.push(Action::Log(format!(
                        "watchdog: no WATCHDOG=1 for {}; COMMAND is hung",
                        secs(wd)
                    )));
                    let then = self.hung_then();
                    self.begin_stop(Some(run), then, "watchdog timeout", now, &mut out)
                } else {
                    Phase::Running {
                        run,
                        watchdog_by: Some(by),
                    }
                }
            }

            // ---- requests from outside -------------------------------------
            (Phase::Starting { run, .. } | Phase::Running { run, .. }, Event::Stop(sig)) => {
                out.push(Action::Log(format!(
                    "received {}; stopping",
                    crate::signal_name(sig)
                )));
                let then = self.exit_failing_start(stopped_before_ready(sig), Finish::Stopped);
                self.begin_stop(Some(run), then, "stop requested", now, &mut out)
            }
            // Stopping to start COMMAND again (a recycle, a restart,
            // leftovers of an exited run): a stop request turns the plan
            // into an exit and keeps the grace already running.
            (
                Phase::Stopping {
                    run,
                    kill_at,
                    killed,
                    then:
                        Then::Recycle { .. } | Then::FailedRun | Then::Decide { .. } | Then::WaitLease,
                },
                Event::Stop(sig),
            ) => {
                out.push(Action::Log(format!(
                    "received {} while stopping to restart; stopping for good",
                    crate::signal_name(sig)
                )));
                self.reason = Some("stop requested".into());
                let then = self.exit_failing_start(stopped_before_ready(sig), Finish::Stopped);
                out.push(Action::Publish);
                Phase::Stopping {
                    run,
                    kill_at,
                    killed,
                    then,
                }
            }
            // Stopping for good already: a second request cuts the grace.
            (
                Phase::Stopping {
                    run,
                    kill_at,
                    killed,
                    then,
                },
                Event::Stop(sig),
            ) => {
                out.push(Action::Log(format!(
                    "received {} again; killing",
                    crate::signal_name(sig)
                )));
                out.push(Action::SignalTree(libc::SIGKILL));
                let then = then.exit_anyway(Finish::Stopped);
                let _ = (kill_at, killed);
                Phase::Stopping {
                    run,
                    kill_at: now + KILL_AGAIN,
                    killed: true,
                    then,
                }
            }
            (
                Phase::BackingOff { .. } | Phase::WaitingForLease { .. } | Phase::Idle,
                Event::Stop(sig),
            ) => {
                out.push(Action::Log(format!(
                    "received {} while waiting to restart; exiting",
                    crate::signal_name(sig)
                )));
                self.done(Finish::Stopped, &mut out)
            }
            (p, Event::Forward(sig)) => {
                if self.main_of(&p).is_some() {
                    out.push(Action::SignalMain(sig));
                }
                p
            }
            (Phase::Starting { run, .. } | Phase::Running { run, .. }, Event::RestartRequested) => {
                self.restart_waiting = true;
                out.push(Action::Log(
                    "restart requested; stopping COMMAND to start it afresh".into(),
                ));
                self.begin_stop(
                    Some(run),
                    Then::Recycle { jitter: false },
                    "restart requested",
                    now,
                    &mut out,
                )
            }
            (Phase::BackingOff { .. }, Event::RestartRequested) => {
                self.restart_waiting = true;
                out.push(Action::Log(
                    "restart requested; starting COMMAND now".into(),
                ));
                self.respawn_now(&mut out)
            }
            (
                Phase::Starting { run, .. } | Phase::Running { run, .. },
                Event::MemoryOver { rss, limit },
            ) => {
                let respawn = self.respawn.is_some();
                out.push(Action::Log(format!(
                    "memory: COMMAND's process tree uses {} resident, over the limit of {}; stopping{}",
                    crate::size::format_size(rss),
                    crate::size::format_size(limit),
                    if respawn { " and restarting" } else { "" }
                )));
                let then = if respawn {
                    Then::Recycle { jitter: true }
                } else {
                    Then::Exit(Finish::Failed)
                };
                self.begin_stop(Some(run), then, "memory limit", now, &mut out)
            }

            // ---- the slot and the lease ------------------------------------
            (p, Event::SlotLost(why)) => {
                out.push(Action::Log(format!(
                    "lock lost: {why}; stopping, a watchdog may start a fresh peer"
                )));
                self.give_up(p, format!("lock lost: {why}"), "lock lost", now, &mut out)
            }
            (p, Event::Fault(why)) => {
                out.push(Action::Log(format!("{why}; stopping COMMAND")));
                self.give_up(p, why, "supervisor fault", now, &mut out)
            }
            (p, Event::HeartbeatQuestion) => {
                out.push(Action::AnswerHeartbeat);
                p
            }
            (p, Event::LeaseLost { kill_by, why }) => {
                out.push(Action::Log(format!(
                    "cluster slot lost: {why}; stopping COMMAND before its lease can expire"
                )));
                let wait = self.respawn.is_some() && self.policy.lease_retry.is_some();
                match p {
                    Phase::Starting { run, .. } | Phase::Running { run, .. } => {
                        let then = if wait {
                            Then::WaitLease
                        } else {
                            Then::Exit(Finish::Failed)
                        };
                        if kill_by.min(now + self.policy.stop_timeout) <= now {
                            self.kill_at_once(Some(run), then, now, &mut out)
                        } else {
                            let next = self.begin_stop(
                                Some(run),
                                then,
                                "cluster slot lost",
                                now,
                                &mut out,
                            );
                            match next {
                                Phase::Stopping {
                                    run,
                                    kill_at,
                                    killed,
                                    then,
                                } => Phase::Stopping {
                                    run,
                                    kill_at: kill_at.min(kill_by),
                                    killed,
                                    then,
                                },
                                other => other,
                            }
                        }
                    }
                    Phase::Stopping {
                        run,
                        kill_at,
                        killed,
                        then,
                    } => {
                        let then = match then {
                            Then::Exit(f) => Then::Exit(f),
                            _ if wait => Then::WaitLease,
                            other => other.exit_anyway(Finish::Failed),
                        };
                        if !killed && kill_by <= now {
                            self.kill_at_once(run, then, now, &mut out)
                        } else {
                            Phase::Stopping {
                                run,
                                kill_at: kill_at.min(kill_by),
                                killed,
                                then,
                            }
                        }
                    }
                    Phase::BackingOff { .. } if wait => self.wait_for_lease(now, &mut out),
                    Phase::WaitingForLease { retry_at } => Phase::WaitingForLease { retry_at },
                    _ => self.done(Finish::Failed, &mut out),
                }
            }
            (Phase::WaitingForLease { retry_at }, Event::Tick) if now >= retry_at => {
                out.push(Action::ReclaimLease);
                // Not due again until the answer says so.
                Phase::WaitingForLease {
                    retry_at: now + self.lease_retry(),
                }
            }
            (Phase::WaitingForLease { .. }, Event::LeaseReclaimed) => {
                out.push(Action::Log("cluster slot claimed again".into()));
                self.respawn_now(&mut out)
            }
            (Phase::WaitingForLease { .. }, Event::LeaseBusy(why)) => {
                let retry_at = now + self.lease_retry();
                self.next_try = Some(retry_at);
                out.push(Action::Log(format!(
                    "no cluster slot yet ({why}); trying again in {}",
                    secs(self.lease_retry())
                )));
                out.push(Action::Publish);
                Phase::WaitingForLease { retry_at }
            }

            // ---- stopping --------------------------------------------------
            (
                Phase::Stopping {
                    run: Some(run),
                    kill_at,
                    killed,
                    then,
                },
                Event::Reaped {
                    pid,
                    status,
                    tree_empty,
                },
            ) if pid == run.main => {
                out.push(Action::FlushOutput);
                out.push(Action::Log(format!(
                    "PID {pid} stopped ({})",
                    status.describe()
                )));
                self.last_exit = Some(status);
                let run = Some(Run {
                    main_gone: true,
                    ..run
                });
                if tree_empty {
                    self.stopped(then, now, &mut out)
                } else {
                    out.push(Action::Publish);
                    Phase::Stopping {
                        run,
                        kill_at,
                        killed,
                        then,
                    }
                }
            }
            (
                Phase::Stopping {
                    run,
                    kill_at,
                    killed: true,
                    then,
                },
                Event::Reaped {
                    tree_empty: false, ..
                },
            ) => {
                // Something may have forked while SIGKILL went round.
                out.push(Action::SignalTree(libc::SIGKILL));
                Phase::Stopping {
                    run,
                    kill_at,
                    killed: true,
                    then,
                }
            }
            (
                Phase::Stopping { then, .. },
                Event::TreeEmpty
                | Event::Reaped {
                    tree_empty: true, ..
                },
            ) => self.stopped(then, now, &mut out),
            (
                Phase::Stopping {
                    run,
                    kill_at,
                    killed,
                    then,
                },
                Event::Tick,
            ) if now >= kill_at => {
                if !killed {
                    let grace = self.term_sent.map_or(self.policy.stop_timeout, |t| {
                        kill_at.saturating_duration_since(t)
                    });
                    let why = if grace < self.policy.stop_timeout {
                        " before the cluster lease can expire"
                    } else {
                        ""
                    };
                    out.push(Action::Log(format!(
                        "COMMAND's process tree still running {} after SIGTERM; sending SIGKILL{why}",
                        secs(grace)
                    )));
                }
                out.push(Action::SignalTree(libc::SIGKILL));
                Phase::Stopping {
                    run,
                    kill_at: now + KILL_AGAIN,
                    killed: true,
                    then,
                }
            }

            // ---- backing off -----------------------------------------------
            (Phase::BackingOff { until }, Event::Tick) => {
                if now >= until {
                    self.respawn_now(&mut out)
                } else {
                    Phase::BackingOff { until }
                }
            }

            // Anything else changes nothing.
            (p, _) => p,
        };
        out
    }

    fn main_of(&self, p: &Phase) -> Option<i32> {
        match p {
            Phase::Starting { run, .. } | Phase::Running { run, .. } if !run.main_gone => {
                Some(run.main)
            }
            Phase::Stopping { run: Some(run), .. } if !run.main_gone => Some(run.main),
            _ => None,
        }
    }

    /// `--forking` without `--pidfile`: whether `run`'s main process, the
    /// single child picked after the first process exited, may be picked
    /// again when it exits 0 leaving processes behind.
    fn may_repick(&self, run: &Run) -> bool {
        self.policy.forking && !self.policy.pidfile && run.repicks < MAX_REPICKS
    }

    /// The picked main process exited 0 but its tree lives on: look for
    /// the main process again, as after the first process's exit.
    fn repick(
        &mut self,
        run: Run,
        awaiting_ready: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        out.push(Action::Log(format!(
            "PID {} exited (status 0) leaving processes running: still daemonizing; \
             looking for COMMAND's main process again",
            run.main
        )));
        out.push(Action::FindMain);
        Phase::Starting {
            run: Run {
                main_gone: true,
                repicks: run.repicks + 1,
                ..run
            },
            start_by: self.start_by(now),
            awaiting_ready,
            forking: Forking::seeking(),
        }
    }

    /// The deadline of a run's start: `--ready-timeout` from `now`, or,
    /// while the starter still waits, the first run's (see
    /// `start_deadline`).
    fn start_by(&mut self, now: Instant) -> Instant {
        let fresh = now + self.policy.ready_timeout;
        if self.starter_waiting {
            *self.start_deadline.get_or_insert(fresh)
        } else {
            fresh
        }
    }

    fn lease_retry(&self) -> Duration {
        self.policy.lease_retry.unwrap_or(Duration::from_secs(3))
    }

    fn spawned(&mut self, pid: i32, now: Instant, out: &mut Vec<Action>) -> Phase {
        self.runs += 1;
        self.ready = false;
        // What a start still waits for, for `--check --verbose`.
        self.reason = if self.policy.forking {
            Some("COMMAND has not finished daemonizing yet".into())
        } else if self.policy.notify {
            Some("COMMAND has not sent READY=1 yet".into())
        } else {
            None
        };
        self.next_try = None;
        let run = Run {
            main: pid,
            started: now,
            main_gone: false,
            repicks: 0,
        };
        // The first start is told only once COMMAND did not die at once
        // (with --respawn a quick death is a failed run, not a failed
        // start: the supervisor carries on and backs off).
        // So is a run a `--restart` asked for (with or without --respawn,
        // in the foreground too: the CLI waits for it), published as
        // starting until it settled.
        let first = self.policy.settle && self.starter_waiting && self.respawn.is_none();
        let restarted = std::mem::take(&mut self.restart_waiting) && !self.starter_waiting;
        let simple = !self.policy.notify && !self.policy.forking;
        self.restart_waiting = restarted && simple;
        let settle = (first || restarted) && simple;
        if self.policy.notify || self.policy.forking || settle {
            // Published before the settle wait (as running), so the state
            // write overlaps COMMAND's own start on the other CPU.
            out.push(Action::Publish);
            if settle {
                out.push(Action::AwaitSettled);
            }
            Phase::Starting {
                run,
                start_by: self.start_by(now),
                awaiting_ready: self.policy.notify,
                forking: if self.policy.forking {
                    Forking::FirstRuns
                } else {
                    Forking::Off
                },
            }
        } else {
            self.now_running(run, true, now, out)
        }
    }

    /// The start is complete; `publish` unless the state already says so.
    fn now_running(
        &mut self,
        run: Run,
        publish: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        self.reason = None;
        if publish {
            out.push(Action::Publish);
        }
        if std::mem::take(&mut self.starter_waiting) {
            out.push(Action::ReportReady(StartOutcome::Started));
            out.push(Action::TellUpstream("READY=1"));
        }
        Phase::Running {
            run,
            watchdog_by: self.policy.watchdog.map(|w| now + w),
        }
    }

    /// COMMAND's main process exited on its own.
    fn main_exited(
        &mut self,
        run: Run,
        status: ExitStatus,
        tree_empty: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        out.push(Action::FlushOutput);
        out.push(Action::Log(format!(
            "PID {} exited ({})",
            run.main,
            status.describe()
        )));
        self.last_exit = Some(status);
        self.restart_waiting = false;
        let run = Run {
            main_gone: true,
            ..run
        };
        // A COMMAND that finished its work at once (status 0) did not fail
        // to start; only a start that waits for READY=1 needs more.
        if self.starter_waiting && !self.policy.notify && status == ExitStatus::Code(0) {
            self.starter_waiting = false;
            out.push(Action::ReportReady(StartOutcome::Started));
        }
        let then = if self.starter_waiting {
            let what = if self.policy.notify {
                "before it sent READY=1"
            } else {
                "during its start"
            };
            self.failed_start_then(StartOutcome::Exited {
                status,
                message: format!("COMMAND exited ({}) {what}", status.describe()),
            })
        } else {
            Then::Decide {
                status,
                ran: now.saturating_duration_since(run.started),
            }
        };
        if tree_empty {
            self.stopped(then, now, out)
        } else {
            out.push(Action::Log("stopping what COMMAND left running".into()));
            self.begin_stop(
                Some(run),
                then,
                "COMMAND exited; stopping what it left running",
                now,
                out,
            )
        }
    }

    fn hung_then(&mut self) -> Then {
        if self.respawn.is_some() && !self.starter_waiting {
            Then::FailedRun
        } else {
            self.failed_start_then(StartOutcome::Failed("COMMAND is hung (watchdog)".into()))
        }
    }

    /// The supervisor can no longer do its job (`why`): stop the tree,
    /// fail a start that is still waiting, and exit failed whatever was
    /// planned after a stop already under way.
    fn give_up(
        &mut self,
        p: Phase,
        why: String,
        reason: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        match p {
            Phase::Starting { run, .. } | Phase::Running { run, .. } => {
                let then = self.exit_failing_start(why, Finish::Failed);
                self.begin_stop(Some(run), then, reason, now, out)
            }
            Phase::Stopping {
                run,
                kill_at,
                killed,
                then,
            } => Phase::Stopping {
                run,
                kill_at,
                killed,
                then: then.exit_anyway(Finish::Failed),
            },
            _ => self.done(Finish::Failed, out),
        }
    }

    /// A stop that ends the supervisor: with `finish`, or, while the
    /// starter still waits, as a failed start saying `why`.
    fn exit_failing_start(&mut self, why: String, finish: Finish) -> Then {
        if self.starter_waiting {
            self.failed_start_then(StartOutcome::Failed(why))
        } else {
            Then::Exit(finish)
        }
    }

    /// What follows a stop that fails the start, when the starter still
    /// waits: remember the report for after the release.
    fn failed_start_then(&mut self, outcome: StartOutcome) -> Then {
        if self.starter_waiting {
            self.pending_report = Some(outcome.clone());
            Then::Exit(Finish::StartFailed(outcome))
        } else if self.respawn.is_some() {
            Then::FailedRun
        } else {
            Then::Exit(Finish::Failed)
        }
    }

    fn begin_stop(
        &mut self,
        run: Option<Run>,
        then: Then,
        reason: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        self.reason = Some(reason.to_string());
        self.term_sent = Some(now);
        out.push(Action::SignalTree(libc::SIGTERM));
        // A stopped process would not see SIGTERM until continued.
        out.push(Action::SignalTree(libc::SIGCONT));
        out.push(Action::Publish);
        Phase::Stopping {
            run,
            kill_at: now + self.policy.stop_timeout,
            killed: false,
            then,
        }
    }

    /// The cluster lease can expire now (or `--stop-timeout` is 0): no
    /// grace for SIGTERM, the tree gets SIGKILL at once, and the log says
    /// so rather than blaming a SIGTERM that was never sent.
    fn kill_at_once(
        &mut self,
        run: Option<Run>,
        then: Then,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        self.reason = Some("cluster slot lost".into());
        out.push(Action::Log(
            "no time left before the lease can expire: SIGKILL at once".into(),
        ));
        out.push(Action::SignalTree(libc::SIGKILL));
        out.push(Action::Publish);
        Phase::Stopping {
            run,
            kill_at: now + KILL_AGAIN,
            killed: true,
            then,
        }
    }

    /// The tree is empty: carry out what the stop was for.
    fn stopped(&mut self, then: Then, now: Instant, out: &mut Vec<Action>) -> Phase {
        match then {
            Then::Exit(f) => self.done(f, out),
            Then::Recycle { jitter } => {
                if let Some(rs) = &mut self.respawn {
                    rs.on_end(RunEnd::Recycle, now);
                }
                if jitter {
                    let pause = recycle_jitter(self.policy.min_uptime);
                    self.restart_after(pause, "recycle", now, out)
                } else {
                    self.restart_after(Duration::ZERO, "restart", now, out)
                }
            }
            Then::FailedRun => self.after_run(RunEnd::Failed, self.last_exit, now, out),
            Then::Decide { status, ran } => {
                let code = match status {
                    ExitStatus::Code(c) => Some(c),
                    ExitStatus::Signal(_) => None,
                };
                let finished = code.is_some_and(|c| self.policy.finished_codes.contains(&c));
                if self.respawn.is_none() {
                    self.done(Finish::CommandExited(status), out)
                } else if finished {
                    out.push(Action::Log(format!(
                        "{} means finished; not restarting",
                        status.describe()
                    )));
                    self.done(Finish::CommandExited(status), out)
                } else {
                    let end = classify(
                        code,
                        ran,
                        self.policy.min_uptime,
                        &self.policy.recycle_codes,
                    );
                    self.after_run(end, Some(status), now, out)
                }
            }
            Then::WaitLease => self.wait_for_lease(now, out),
        }
    }

    fn wait_for_lease(&mut self, now: Instant, out: &mut Vec<Action>) -> Phase {
        let retry_at = now + self.lease_retry();
        self.reason = Some("waiting for a cluster slot".into());
        self.next_try = Some(retry_at);
        out.push(Action::Publish);
        Phase::WaitingForLease { retry_at }
    }

    /// A run ended (`status` if known): restart per the policy, or give up.
    fn after_run(
        &mut self,
        end: RunEnd,
        status: Option<ExitStatus>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        let Some(rs) = self.respawn.as_mut() else {
            return self.done(status.map_or(Finish::Failed, Finish::CommandExited), out);
        };
        let why = status.map_or_else(
            || "a failed run".to_string(),
            |s| crate::inspect::describe_last_exit(&s.describe()),
        );
        match (end, rs.on_end(end, now)) {
            (RunEnd::Recycle, _) => {
                let pause = recycle_jitter(self.policy.min_uptime);
                self.restart_after(pause, "recycle", now, out)
            }
            (RunEnd::Failed, Decision::RestartAfter(delay)) => {
                out.push(Action::Log(format!("restarting in {}", secs(delay))));
                self.reason = Some(why);
                self.next_try = Some(now + delay);
                out.push(Action::Publish);
                Phase::BackingOff { until: now + delay }
            }
            (RunEnd::Failed, Decision::GiveUp { restarts_in_window }) => {
                let limits = rs.limits();
                out.push(Action::Log(format!(
                    "giving up: {restarts_in_window} restarts within {} (--max-respawns {})",
                    secs(limits.window),
                    limits.max_respawns
                )));
                self.reason = Some(format!(
                    "gave up after {} failed runs within {} (--max-respawns {})",
                    restarts_in_window + 1,
                    secs(limits.window),
                    limits.max_respawns
                ));
                let last = status.or(self.last_exit).unwrap_or(ExitStatus::Code(1));
                self.done(Finish::GaveUp(last), out)
            }
        }
    }

    fn restart_after(
        &mut self,
        pause: Duration,
        why: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Phase {
        if pause.is_zero() {
            out.push(Action::Log(format!("{why}: restarting now")));
            return self.respawn_now(out);
        }
        out.push(Action::Log(format!("{why}: restarting in {}", secs(pause))));
        self.reason = Some(why.to_string());
        self.next_try = Some(now + pause);
        out.push(Action::Publish);
        Phase::BackingOff { until: now + pause }
    }

    fn respawn_now(&mut self, out: &mut Vec<Action>) -> Phase {
        self.restarts += 1;
        out.push(Action::Spawn);
        // Idle until Spawned or SpawnFailed comes back.
        Phase::Idle
    }

    fn finish_start_failed(&mut self, outcome: StartOutcome, out: &mut Vec<Action>) -> Phase {
        self.pending_report = Some(outcome.clone());
        self.done(Finish::StartFailed(outcome), out)
    }

    fn done(&mut self, finish: Finish, out: &mut Vec<Action>) -> Phase {
        out.push(Action::TellUpstream("STOPPING=1"));
        out.push(Action::Exit(finish.clone()));
        Phase::Done(finish)
    }
}

/// How often SIGKILL goes round again while a killed tree is not yet
/// empty (a process forked while the first SIGKILL went round).
const KILL_AGAIN: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    //! Transitions without processes: a fake child answers the machine's
    //! actions the way the event loop and a real COMMAND would (as
    //! watchexec's `TestChild`), on a clock the test moves.
    use super::*;
    use crate::supervisor::notify::Notification;

    const TERM: i32 = libc::SIGTERM;
    const KILL: i32 = libc::SIGKILL;

    /// Answers actions: spawns get PIDs 100, 101, …; the tree obeys
    /// SIGTERM unless `ignores_term`; SIGKILL always works.
    struct FakeChild {
        m: Machine,
        now: Instant,
        next_pid: i32,
        /// Live processes of the tree.
        alive: Vec<i32>,
        ignores_term: bool,
        tree_signals: Vec<i32>,
        main_signals: Vec<i32>,
        reports: Vec<StartOutcome>,
        exits: Vec<Finish>,
        published: Vec<Option<state::Phase>>,
        logs: Vec<String>,
        spawns: usize,
        reclaim_ok: bool,
        /// Scripted answers to `FindMain`, in order; once used up, a fresh
        /// process left behind is found.
        find_answers: Vec<Event>,
        finds: usize,
    }

    impl FakeChild {
        fn new(policy: Policy) -> FakeChild {
            FakeChild {
                m: Machine::new(policy),
                now: Instant::now(),
                next_pid: 100,
                alive: Vec::new(),
                ignores_term: false,
                tree_signals: Vec::new(),
                main_signals: Vec::new(),
                reports: Vec::new(),
                exits: Vec::new(),
                published: Vec::new(),
                logs: Vec::new(),
                spawns: 0,
                reclaim_ok: true,
                find_answers: Vec::new(),
                finds: 0,
            }
        }

        fn started(policy: Policy) -> FakeChild {
            let mut c = FakeChild::new(policy);
            c.send(Event::Begin);
            c
        }

        fn send(&mut self, ev: Event) {
            let mut queue = vec![ev];
            while !queue.is_empty() {
                let ev = queue.remove(0);
                for a in self.m.on(ev, self.now) {
                    match a {
                        Action::Spawn => {
                            self.spawns += 1;
                            let pid = self.next_pid;
                            self.next_pid += 1;
                            self.alive.push(pid);
                            queue.push(Event::Spawned { pid });
                        }
                        Action::AwaitSettled => queue.push(Event::Settled),
                        Action::FindMain => {
                            self.finds += 1;
                            if self.find_answers.is_empty() {
                                let left = self.next_pid + 999 + self.finds as i32;
                                self.alive.push(left);
                                queue.push(Event::MainFound(Ok(left)));
                            } else {
                                queue.push(self.find_answers.remove(0));
                            }
                        }
                        Action::SignalTree(sig) => {
                            self.tree_signals.push(sig);
                            if sig == KILL || (sig == TERM && !self.ignores_term) {
                                queue.extend(self.kill_all(sig));
                            }
                        }
                        Action::SignalMain(sig) => self.main_signals.push(sig),
                        Action::Publish => self.published.push(self.m.published_phase()),
                        Action::Log(l) => self.logs.push(l),
                        Action::ReportReady(o) => self.reports.push(o),
                        Action::Exit(f) => self.exits.push(f),
                        Action::ReclaimLease => queue.push(if self.reclaim_ok {
                            Event::LeaseReclaimed
                        } else {
                            Event::LeaseBusy("all 2 held".into())
                        }),
                        Action::FlushOutput | Action::TellUpstream(_) | Action::AnswerHeartbeat => {
                        }
                    }
                }
            }
        }

        fn kill_all(&mut self, sig: i32) -> Vec<Event> {
            let dead: Vec<i32> = std::mem::take(&mut self.alive);
            let n = dead.len();
            dead.into_iter()
                .enumerate()
                .map(|(i, pid)| Event::Reaped {
                    pid,
                    status: ExitStatus::Signal(sig),
                    tree_empty: i + 1 == n,
                })
                .collect()
        }

        /// The main process exits on its own; `leftovers` stay alive.
        fn main_exits(&mut self, code: i32, leftovers: bool) {
            let main = self.m.main_pid().expect("a main process");
            self.alive.retain(|&p| p != main);
            if leftovers {
                self.alive.push(main + 500);
            }
            let tree_empty = self.alive.is_empty();
            self.send(Event::Reaped {
                pid: main,
                status: ExitStatus::Code(code),
                tree_empty,
            });
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.send(Event::Tick);
        }

        fn is_done(&self) -> bool {
            matches!(self.m.phase(), Phase::Done(_))
        }
    }

    fn policy() -> Policy {
        Policy {
            settle: true,
            ready_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(10),
            min_uptime: Duration::from_secs(10),
            ..Policy::default()
        }
    }

    fn respawning() -> Policy {
        Policy {
            respawn: Some(RespawnLimits {
                max_respawns: 3,
                window: Duration::from_secs(60),
                first_delay: Duration::from_secs(1),
            }),
            ..policy()
        }
    }

    #[test]
    fn a_plain_start_runs_once_settled_and_a_stop_ends_the_tree() {
        let mut c = FakeChild::started(policy());
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        assert!(matches!(c.m.phase(), Phase::Running { .. }));
        assert_eq!(c.m.runs(), 1);
        assert_eq!(
            c.m.next_deadline(),
            None,
            "an idle supervisor has no deadline"
        );
        c.send(Event::Stop(TERM));
        assert_eq!(c.tree_signals, vec![TERM, libc::SIGCONT]);
        assert_eq!(c.exits, vec![Finish::Stopped]);
        assert!(c.published.contains(&Some(state::Phase::Stopping)));
    }

    #[test]
    fn a_tree_that_ignores_term_is_killed_at_the_grace() {
        let mut c = FakeChild::started(policy());
        c.ignores_term = true;
        c.send(Event::Stop(TERM));
        assert!(matches!(c.m.phase(), Phase::Stopping { .. }));
        c.advance(Duration::from_secs(9));
        assert!(!c.tree_signals.contains(&KILL));
        c.advance(Duration::from_secs(1));
        assert!(c.tree_signals.contains(&KILL));
        assert_eq!(c.exits, vec![Finish::Stopped]);
    }

    #[test]
    fn leftovers_are_stopped_before_the_exit_is_final() {
        let mut c = FakeChild::started(policy());
        c.ignores_term = true;
        c.main_exits(3, true);
        assert!(
            matches!(c.m.phase(), Phase::Stopping { .. }),
            "{:?}",
            c.m.phase()
        );
        assert_eq!(c.tree_signals, vec![TERM, libc::SIGCONT]);
        assert!(c.exits.is_empty(), "not released while a leftover runs");
        c.send(Event::Reaped {
            pid: 600,
            status: ExitStatus::Code(0),
            tree_empty: true,
        });
        assert_eq!(c.exits, vec![Finish::CommandExited(ExitStatus::Code(3))]);
    }

    #[test]
    fn hup_goes_to_the_main_process_only() {
        let mut c = FakeChild::started(policy());
        c.send(Event::Forward(libc::SIGHUP));
        assert_eq!(c.main_signals, vec![libc::SIGHUP]);
        assert!(c.tree_signals.is_empty());
    }

    #[test]
    fn failed_runs_back_off_then_give_up_leaving_failed() {
        let mut c = FakeChild::started(respawning());
        let mut delays = Vec::new();
        while !c.is_done() {
            c.main_exits(1, false);
            if let Some(until) = c.m.next_deadline() {
                delays.push(until - c.now);
                assert_eq!(c.m.published_phase(), Some(state::Phase::Backoff));
                c.advance(until - c.now);
            }
        }
        assert_eq!(
            delays,
            [1, 2, 4].map(Duration::from_secs).to_vec(),
            "doubling back-off"
        );
        assert_eq!(c.exits, vec![Finish::GaveUp(ExitStatus::Code(1))]);
        assert_eq!(c.m.published_phase(), Some(state::Phase::Failed));
        assert!(
            c.m.reason().unwrap().contains("--max-respawns 3"),
            "{:?}",
            c.m.reason()
        );
        assert_eq!(c.m.restarts(), 3);
    }

    #[test]
    fn long_runs_and_recycle_codes_restart_at_once_and_never_count() {
        let mut c = FakeChild::started(Policy {
            recycle_codes: vec![12],
            min_uptime: Duration::ZERO, // no jitter
            ..respawning()
        });
        for _ in 0..20 {
            c.now += Duration::from_secs(1);
            c.main_exits(0, false);
            assert!(
                matches!(c.m.phase(), Phase::Running { .. }),
                "{:?}",
                c.m.phase()
            );
        }
        let mut c2 = FakeChild::started(Policy {
            recycle_codes: vec![12],
            ..respawning()
        });
        for _ in 0..20 {
            c2.main_exits(12, false);
            // At most a tenth of --min-uptime of jitter, never a back-off.
            if let Some(until) = c2.m.next_deadline() {
                assert!(until - c2.now <= Duration::from_secs(1));
                c2.advance(until - c2.now);
            }
            assert!(matches!(c2.m.phase(), Phase::Running { .. }));
        }
        assert_eq!(c2.m.restarts(), 20);
        assert!(c2.exits.is_empty());
    }

    #[test]
    fn a_memory_stop_is_a_recycle() {
        let mut c = FakeChild::started(Policy {
            min_uptime: Duration::ZERO,
            ..respawning()
        });
        for _ in 0..10 {
            c.send(Event::MemoryOver { rss: 2, limit: 1 });
            assert!(matches!(c.m.phase(), Phase::Running { .. }));
        }
        assert_eq!(c.m.restarts(), 10);
        let mut once = FakeChild::started(policy());
        once.send(Event::MemoryOver { rss: 2, limit: 1 });
        assert_eq!(once.exits, vec![Finish::Failed]);
    }

    #[test]
    fn a_stop_during_a_recycle_stop_exits_keeping_the_grace() {
        let mut c = FakeChild::started(Policy {
            min_uptime: Duration::ZERO,
            ..respawning()
        });
        c.ignores_term = true;
        c.send(Event::MemoryOver { rss: 2, limit: 1 });
        assert!(matches!(c.m.phase(), Phase::Stopping { .. }));
        assert!(!c.m.exiting(), "a recycle stop is not published as exiting");
        c.send(Event::Stop(TERM));
        assert!(c.m.exiting(), "the stop request turned it into an exit");
        assert!(
            !c.tree_signals.contains(&KILL),
            "the first stop request keeps the grace: {:?}",
            c.tree_signals
        );
        // A second request is the operator insisting: no more grace.
        c.send(Event::Stop(TERM));
        assert!(c.tree_signals.contains(&KILL));
        assert_eq!(c.exits, vec![Finish::Stopped]);
        assert_eq!(c.spawns, 1, "no respawn after the stop request");
    }

    #[test]
    fn restart_request_starts_afresh_without_back_off() {
        let mut c = FakeChild::started(policy());
        c.published.clear();
        c.send(Event::RestartRequested);
        assert!(matches!(c.m.phase(), Phase::Running { .. }));
        assert_eq!((c.m.runs(), c.m.restarts()), (2, 1));
        assert_eq!(c.tree_signals[0], TERM);
        // The waiting CLI sees the new run as running only once it settled.
        let after_spawn: Vec<_> = c
            .published
            .iter()
            .skip_while(|p| **p != Some(state::Phase::Stopping))
            .skip(1)
            .collect();
        assert_eq!(
            after_spawn,
            [&Some(state::Phase::Starting), &Some(state::Phase::Running)],
            "{:?}",
            c.published
        );
        // A later respawn is not held back: the restart was seen through.
        assert!(!c.m.restart_waiting);
    }

    #[test]
    fn notify_start_waits_for_ready_and_fails_after_release() {
        let mut c = FakeChild::started(Policy {
            notify: true,
            ..policy()
        });
        assert!(c.reports.is_empty());
        assert_eq!(c.m.published_phase(), Some(state::Phase::Starting));
        c.send(Event::Notification(Notification {
            ready: true,
            ..Notification::default()
        }));
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        assert_eq!(c.m.ready(), Some(true));

        let mut late = FakeChild::started(Policy {
            notify: true,
            ..policy()
        });
        late.advance(Duration::from_secs(5));
        // Told only by the loop, after the slot is released.
        assert!(late.reports.is_empty());
        assert!(matches!(late.exits[..], [Finish::StartFailed(_)]));
        assert!(matches!(
            late.m.take_pending_report(),
            Some(StartOutcome::Failed(m)) if m.contains("READY=1")
        ));
    }

    #[test]
    fn recycles_during_the_readiness_wait_keep_the_starts_deadline() {
        let mut c = FakeChild::started(Policy {
            notify: true,
            min_uptime: Duration::ZERO,
            ..respawning()
        });
        // A memory recycle every second, never READY=1: the start fails
        // at --ready-timeout (5 s) counted from the first spawn.
        for _ in 0..4 {
            c.advance(Duration::from_secs(1));
            c.send(Event::MemoryOver { rss: 2, limit: 1 });
            assert!(c.exits.is_empty(), "failed before the deadline");
        }
        c.advance(Duration::from_secs(2));
        assert!(
            matches!(c.exits[..], [Finish::StartFailed(_)]),
            "{:?}",
            c.exits
        );
    }

    #[test]
    fn dying_at_once_fails_the_start_with_its_status() {
        let mut c = FakeChild::new(policy());
        // The fake settles at once; a real COMMAND that died is reaped
        // instead of settling.
        for a in c.m.on(Event::Begin, c.now) {
            assert_eq!(a, Action::Spawn);
        }
        c.m.on(Event::Spawned { pid: 7 }, c.now);
        c.m.on(
            Event::Reaped {
                pid: 7,
                status: ExitStatus::Code(4),
                tree_empty: true,
            },
            c.now,
        );
        assert!(matches!(
            c.m.take_pending_report(),
            Some(StartOutcome::Exited {
                status: ExitStatus::Code(4),
                ..
            })
        ));
    }

    #[test]
    fn forking_supervises_what_the_first_process_left() {
        let mut c = FakeChild::started(Policy {
            forking: true,
            ..policy()
        });
        assert!(c.reports.is_empty());
        c.main_exits(0, false);
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        let main = c.m.main_pid().unwrap();
        assert_eq!(main, 1101);
        c.send(Event::Forward(libc::SIGHUP));
        assert_eq!(c.main_signals, vec![libc::SIGHUP]);
    }

    #[test]
    fn lost_lease_kills_by_its_deadline_then_waits_and_reclaims() {
        let mut c = FakeChild::started(Policy {
            lease_retry: Some(Duration::from_secs(3)),
            ..respawning()
        });
        c.ignores_term = true;
        let kill_by = c.now + Duration::from_secs(4);
        c.send(Event::LeaseLost {
            kill_by,
            why: "etcd unreachable".into(),
        });
        assert_eq!(c.m.next_deadline(), Some(kill_by), "before the stop grace");
        c.advance(Duration::from_secs(4));
        assert!(c.tree_signals.contains(&KILL));
        assert!(
            c.logs.iter().any(|l| l.contains(
                "still running 4s after SIGTERM; sending SIGKILL before the cluster lease can expire"
            )),
            "{:?}",
            c.logs
        );
        assert!(matches!(c.m.phase(), Phase::WaitingForLease { .. }));
        c.reclaim_ok = false;
        c.advance(Duration::from_secs(3));
        assert!(matches!(c.m.phase(), Phase::WaitingForLease { .. }));
        assert_eq!(c.spawns, 1);
        c.reclaim_ok = true;
        c.advance(Duration::from_secs(3));
        assert!(matches!(c.m.phase(), Phase::Running { .. }));
        assert_eq!(c.spawns, 2);

        let mut once = FakeChild::started(policy());
        once.send(Event::LeaseLost {
            kill_by: once.now,
            why: "x".into(),
        });
        assert_eq!(once.exits, vec![Finish::Failed]);
        assert_eq!(
            once.tree_signals,
            vec![KILL],
            "no SIGTERM without time for it"
        );
        assert!(
            once.logs
                .iter()
                .any(|l| l == "no time left before the lease can expire: SIGKILL at once"),
            "{:?}",
            once.logs
        );
        assert!(
            !once.logs.iter().any(|l| l.contains("after SIGTERM")),
            "{:?}",
            once.logs
        );
    }

    #[test]
    fn slot_loss_and_stop_while_backing_off_end_at_once() {
        let mut c = FakeChild::started(respawning());
        c.main_exits(1, false);
        assert!(matches!(c.m.phase(), Phase::BackingOff { .. }));
        c.send(Event::Stop(TERM));
        assert_eq!(c.exits, vec![Finish::Stopped]);
        let mut l = FakeChild::started(policy());
        l.send(Event::SlotLost("gone".into()));
        assert_eq!(l.exits, vec![Finish::Failed]);
    }

    #[test]
    fn a_fault_stops_the_tree_and_fails_even_under_respawn() {
        let mut c = FakeChild::started(respawning());
        c.send(Event::Fault(
            "cannot install signal handlers: EINVAL".into(),
        ));
        assert_eq!(c.tree_signals.first(), Some(&TERM));
        assert!(c.alive.is_empty());
        assert_eq!(c.exits, vec![Finish::Failed]);
        assert_eq!(c.spawns, 1, "no respawn after a fault");
        assert!(
            c.logs
                .iter()
                .any(|l| l.contains("cannot install signal handlers")),
            "{:?}",
            c.logs
        );
    }

    fn forking(pidfile: bool) -> Policy {
        Policy {
            forking: true,
            pidfile,
            ..policy()
        }
    }

    /// Advances to each deadline in turn until `done` holds or `limit`
    /// passed; returns how long that took.
    fn run_deadlines(c: &mut FakeChild, limit: Duration, done: impl Fn(&FakeChild) -> bool) {
        let end = c.now + limit;
        while !done(c) && c.now < end {
            let at = c.m.next_deadline().expect("a deadline while starting");
            assert!(at > c.now, "a deadline in the past would spin");
            c.advance(at - c.now);
        }
    }

    #[test]
    fn forking_with_a_pidfile_waits_for_it_before_reporting() {
        let mut c = FakeChild::started(forking(true));
        let gone = "cannot use /d/app.pid: No such file or directory".to_string();
        c.find_answers = vec![Event::MainNotYet(gone.clone()), Event::MainNotYet(gone)];
        let t0 = c.now;
        c.main_exits(0, true);
        assert!(
            c.reports.is_empty(),
            "started before the PID file named the main process"
        );
        assert_eq!(c.m.main_pid(), None);
        assert_eq!(c.m.published_phase(), Some(state::Phase::Starting));
        // Looked again after a short pause, not at the start's deadline.
        let first = c.m.next_deadline().unwrap() - c.now;
        assert!(first <= Duration::from_millis(10), "{first:?}");
        run_deadlines(&mut c, Duration::from_secs(5), |c| !c.reports.is_empty());
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        assert_eq!(c.finds, 3);
        assert!(c.now - t0 < Duration::from_millis(100), "{:?}", c.now - t0);
        assert_eq!(
            c.m.main_pid(),
            Some(1103),
            "the process the third look found"
        );
        assert!(c.tree_signals.is_empty(), "{:?}", c.tree_signals);
        let waits = c.logs.iter().filter(|l| l.contains("waiting for")).count();
        assert_eq!(waits, 1, "one log line per distinct sight: {:?}", c.logs);
        assert_eq!(c.m.next_deadline(), None, "no wake-ups once running");
    }

    #[test]
    fn forking_pidfile_never_written_fails_the_start_naming_it() {
        let mut c = FakeChild::started(forking(true));
        let gone = "cannot use /d/app.pid: No such file or directory";
        c.find_answers = (0..1000).map(|_| Event::MainNotYet(gone.into())).collect();
        let t0 = c.now;
        c.main_exits(0, true);
        run_deadlines(&mut c, Duration::from_secs(10), FakeChild::is_done);
        assert!(c.reports.is_empty());
        assert!(
            matches!(c.exits[..], [Finish::StartFailed(_)]),
            "{:?}",
            c.exits
        );
        assert_eq!(
            c.now - t0,
            Duration::from_secs(5),
            "fails at --ready-timeout"
        );
        assert!(
            c.finds < 40,
            "a bounded poll with back-off: {} looks",
            c.finds
        );
        assert!(c.tree_signals.contains(&TERM));
        assert!(matches!(
            c.m.take_pending_report(),
            Some(StartOutcome::Failed(m)) if m.contains("/d/app.pid") && m.contains("within 5s")
        ));
    }

    #[test]
    fn forking_picks_again_when_the_picked_child_was_an_intermediate() {
        let mut c = FakeChild::started(forking(false));
        c.main_exits(0, true);
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        let intermediate = c.m.main_pid().unwrap();
        // The intermediate of a double fork exits 0; the daemon lives on.
        c.main_exits(0, true);
        let daemon = c.m.main_pid().expect("a main process picked again");
        assert_ne!(daemon, intermediate);
        assert!(
            matches!(c.m.phase(), Phase::Running { .. }),
            "{:?}",
            c.m.phase()
        );
        assert!(
            c.tree_signals.is_empty(),
            "the daemon was signalled: {:?}",
            c.logs
        );
        assert!(c.exits.is_empty());
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        assert!(
            c.logs
                .iter()
                .any(|l| l.contains("looking for COMMAND's main process again"))
        );
        assert_eq!(c.m.next_deadline(), None, "no wake-ups once running");
        // Bounded: a main process that keeps handing over ends the run.
        for _ in 1..MAX_REPICKS {
            c.main_exits(0, true);
            assert!(matches!(c.m.phase(), Phase::Running { .. }));
        }
        c.main_exits(0, true);
        assert_eq!(c.exits, vec![Finish::CommandExited(ExitStatus::Code(0))]);
    }

    #[test]
    fn forking_picks_again_before_reporting_while_the_tree_is_between_forks() {
        let mut c = FakeChild::started(forking(false));
        c.find_answers = vec![Event::MainNotYet("between forks".into())];
        c.main_exits(0, true);
        assert!(c.reports.is_empty());
        run_deadlines(&mut c, Duration::from_secs(5), |c| !c.reports.is_empty());
        assert_eq!(c.reports, vec![StartOutcome::Started]);
        assert!(c.m.main_pid().is_some());
    }

    #[test]
    fn forking_never_picks_among_several_or_with_a_pidfile() {
        // Two candidates left by an intermediate: fail as before.
        let mut c = FakeChild::started(forking(false));
        c.main_exits(0, true);
        c.find_answers = vec![Event::MainFound(Err(
            "it left 2 processes and no --pidfile names the main one".into(),
        ))];
        c.main_exits(0, true);
        assert_eq!(c.exits, vec![Finish::Failed]);
        assert!(
            c.logs.iter().any(|l| l.contains("it left 2 processes")),
            "{:?}",
            c.logs
        );
        // With --pidfile the named main process exiting is the run's end.
        let mut p = FakeChild::started(forking(true));
        p.main_exits(0, true);
        p.main_exits(0, true);
        assert_eq!(p.finds, 1);
        assert_eq!(p.exits, vec![Finish::CommandExited(ExitStatus::Code(0))]);
    }
}
