//! The supervisor: the process that holds a slot and runs COMMAND under it.
//!
//! It is COMMAND's parent, so it never guesses whether COMMAND runs: it
//! learns of every exit from `waitid()`. It sleeps in `poll()` on signals,
//! COMMAND's output pipes and inotify watches on its PID file and directory,
//! waking on its own only for deadlines (the KILL after the stop grace, the
//! end of a respawn back-off, `--watchdog`, `--memory-limit` sampling, an
//! optional `--heartbeat-interval`). An idle supervisor has no deadline at
//! all: it sleeps until something happens.
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
//! ## Phases
//!
//! ```text
//!            spawn ok                      COMMAND exits on its own
//!   start ──────────▶ Running ─────────────────────────────┐
//!                      │  ▲  TERM/INT/QUIT, lock lost,      │ respawn?
//!                      │  │  memory ceiling                 ▼
//!                      │  │                  yes ┌──── BackingOff ◀──┐
//!                      ▼  └──────────────────────┘       │ delay over │
//!                   Stopping ── COMMAND gone ──▶ then: Exit or Respawn ┘
//!                      │ grace over: SIGKILL to the group
//!                      ▼
//!                     Done(exit code): remove the PID file, exit
//! ```
//!
//! ## Never N+1
//!
//! COMMAND inherits the slot's locked descriptor (`RDAEMON_LOCK_FD`). A lock
//! belongs to the open file description, so it stays held while *either*
//! the supervisor or COMMAND is alive. If the supervisor is killed with
//! SIGKILL, COMMAND keeps the slot (`--status` shows it as `orphaned`) and
//! no new start can take it until COMMAND is gone too; the moment the last
//! holder exits the kernel drops the lock and the stale file is reused.
//! The alternative (COMMAND dying with its supervisor through
//! PR_SET_PDEATHSIG) was rejected: the death signal is reset by a setuid
//! exec and does not reach COMMAND's own children, so a slot could free up
//! while part of COMMAND still runs.

mod child;
pub mod notify;
pub mod respawn;

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

pub use child::{ChildSpec, Identity};
use notify::{Notification, NotifySocket};
use respawn::{Decision, RespawnLimits, RespawnState};

use crate::daemon::Daemon;
use crate::exit_code::ExitCode;
use crate::output::{LineBuffer, LogFile, Output, Sink, Stream, Syslog};
use crate::signals::SignalSet;
use crate::size::format_size;
use crate::timefmt::secs;

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
#[allow(dead_code)] // this round's new fields are acted on by the supervisor rewrite
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
    /// `--ready-timeout`: how long `--notify` waits for READY=1.
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
}

/// How the supervisor tells its starter whether COMMAND runs.
pub trait Readiness {
    /// COMMAND has been exec'd (or the start failed with `code`).
    fn report(&mut self, code: ExitCode, message: &str);
}

/// Why a stop was started, and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    /// Exit with this status once COMMAND is gone.
    Exit(ExitCode),
    /// Start COMMAND afresh (memory ceiling under `--respawn`).
    Respawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running {
        child: i32,
        started: Instant,
    },
    Stopping {
        child: i32,
        started: Instant,
        kill_at: Instant,
        killed: bool,
        then: AfterStop,
    },
    BackingOff {
        until: Instant,
    },
    Done(ExitCode),
}

/// How often memory is sampled (`--memory-limit`), and the heartbeat
/// refreshed when no inotify watch could be set up to answer readers.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long a spawn waits at most for COMMAND's exec to finish building
/// its image. Exec cannot fail any more by then; this only bounds a
/// pathologically slow one.
const EXEC_IMAGE_LIMIT: Duration = Duration::from_secs(1);

/// Which event sources poll() reported readable.
#[derive(Debug, Clone, Copy)]
struct Ready {
    signals: bool,
    pipes: bool,
    notify: bool,
    inotify: bool,
}

const CAUGHT: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
];

struct Pipes {
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    out_buf: LineBuffer,
    err_buf: LineBuffer,
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

struct Supervisor<'r> {
    cfg: Config,
    daemon: Daemon,
    output: Arc<Mutex<Output>>,
    signals: SignalSet,
    pipes: Option<Pipes>,
    inotify: Option<Inotify>,
    notify: Option<NotifySocket>,
    respawn: Option<RespawnState>,
    restarts: u32,
    /// How often the heartbeat is refreshed on a timer: the
    /// `--heartbeat-interval`, or every second without inotify; `None`
    /// when readers are answered on demand (the default).
    tick_every: Option<Duration>,
    /// When the heartbeat is next refreshed on that timer.
    next_tick: Option<Instant>,
    /// When memory is next sampled (`--memory-limit` only).
    next_sample: Option<Instant>,
    phase: Phase,
    /// The starter, until it has been told the outcome of the first start.
    ready: Option<&'r mut dyn Readiness>,
    /// With `--notify`: when the current run must have sent READY=1.
    ready_deadline: Option<Instant>,
    /// With `--watchdog`: when the next WATCHDOG=1 is due.
    watchdog_deadline: Option<Instant>,
    /// When the last WATCHDOG=1 was published to the state file.
    watchdog_published: Option<Instant>,
}

/// Runs a supervisor to completion in this process; returns its exit
/// status. `ready` hears the outcome of the first start.
pub fn run(cfg: Config, ready: &mut dyn Readiness) -> ExitCode {
    let signals = match SignalSet::install(&CAUGHT) {
        Ok(s) => s,
        Err(e) => {
            ready.report(
                ExitCode::Failure,
                &format!("cannot install signal handlers: {e}"),
            );
            return ExitCode::Failure;
        }
    };
    let mut builder = Daemon::builder(cfg.name.clone())
        .max_peers(cfg.max_peers)
        .pid_dir(cfg.pid_dir.clone())
        .handle_signals(false)
        .sd_notify(false);
    if let Some(every) = cfg.heartbeat_interval {
        builder = builder.lease(every);
    }
    let mut daemon = match builder.build().and_then(|mut d| d.start().map(|()| d)) {
        Ok(d) => d,
        Err(e) => {
            let code = ExitCode::for_start_error(&e);
            ready.report(code, &e.to_string());
            return code;
        }
    };
    let sink = match &cfg.output {
        OutputChoice::Log(path) => match LogFile::open(path) {
            Ok(f) => Sink::File(f),
            Err(e) => {
                let msg = format!("cannot open log file {}: {e}", path.display());
                let _ = daemon.stop();
                ready.report(ExitCode::Failure, &msg);
                return ExitCode::Failure;
            }
        },
        OutputChoice::Syslog(socket) => Sink::Syslog(Syslog::new(socket, &cfg.name)),
        OutputChoice::Inherit => Sink::Stderr,
    };
    let output = Arc::new(Mutex::new(Output::new(sink, &cfg.name)));
    {
        let output = Arc::clone(&output);
        crate::logger::route_to(move |_, msg| lock(&output).event(msg));
    }
    let pipes = if lock(&output).captures() {
        match pipe_pair().and_then(|o| Ok((o, pipe_pair()?))) {
            Ok((stdout, stderr)) => Some(Pipes {
                stdout,
                stderr,
                out_buf: LineBuffer::default(),
                err_buf: LineBuffer::default(),
            }),
            Err(e) => {
                let _ = daemon.stop();
                ready.report(
                    ExitCode::Failure,
                    &format!("cannot create output pipes: {e}"),
                );
                return ExitCode::Failure;
            }
        }
    } else {
        None
    };
    let inotify = match watch_slot(&daemon) {
        Ok(ino) => Some(ino),
        Err(why) => {
            lock(&output).event(&format!(
                "warning: {why}; verifying the slot and refreshing the heartbeat every {} instead",
                secs(SAMPLE_EVERY)
            ));
            None
        }
    };
    let tick_every = cfg
        .heartbeat_interval
        .or_else(|| inotify.is_none().then_some(SAMPLE_EVERY));
    let notify = match open_notify_socket(&cfg, &daemon) {
        Ok(n) => n,
        Err(msg) => {
            let _ = daemon.stop();
            ready.report(ExitCode::Failure, &msg);
            return ExitCode::Failure;
        }
    };
    let mut sup = Supervisor {
        respawn: cfg.respawn.map(RespawnState::new),
        tick_every,
        next_tick: tick_every.map(|every| Instant::now() + every),
        next_sample: cfg
            .memory_limit
            .is_some()
            .then(|| Instant::now() + SAMPLE_EVERY),
        cfg,
        daemon,
        output,
        signals,
        pipes,
        inotify,
        notify,
        restarts: 0,
        phase: Phase::Done(ExitCode::Failure),
        ready: Some(ready),
        ready_deadline: None,
        watchdog_deadline: None,
        watchdog_published: None,
    };
    match sup.spawn() {
        Ok(pid) => {
            sup.phase = Phase::Running {
                child: pid,
                started: Instant::now(),
            };
            if !sup.cfg.notify {
                sup.report_ready(ExitCode::Success, "");
            }
        }
        Err(e) => {
            let code = ExitCode::for_exec_errno(e.raw_os_error().unwrap_or(0));
            let msg = format!(
                "cannot execute {}: {e}",
                sup.cfg.child.argv[0].to_string_lossy()
            );
            sup.event(&msg);
            sup.finish();
            sup.report_ready(code, &msg);
            return code;
        }
    }
    sup.event_loop()
}

/// Creates COMMAND's notification socket. Without `--notify`/`--watchdog`
/// a failure only costs the STATUS/READY/WATCHDOG reporting, so it is a
/// warning; with them it fails the start.
fn open_notify_socket(cfg: &Config, daemon: &Daemon) -> Result<Option<NotifySocket>, String> {
    let slot = daemon.held_slot().expect("supervisor holds a slot");
    let path = cfg
        .pid_dir
        .join(format!("{}.{}.notify", cfg.name, slot.index()));
    let owner = cfg.child.identity.as_ref().map(|id| (id.uid, id.gid));
    match NotifySocket::bind(&path, owner) {
        Ok(sock) => Ok(Some(sock)),
        Err(e) if cfg.notify || cfg.watchdog.is_some() => Err(format!(
            "cannot create notification socket {}: {e}",
            path.display()
        )),
        Err(e) => {
            log::warn!(
                "cannot create notification socket {}: {e}; NOTIFY_SOCKET not set",
                path.display()
            );
            Ok(None)
        }
    }
}

fn lock(output: &Arc<Mutex<Output>>) -> std::sync::MutexGuard<'_, Output> {
    output.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches the PID file and its directory. Watches on the file itself (not
/// on the directory's entries) wake only this supervisor, and only for its
/// own file:
/// - IN_ATTRIB when its link count drops (unlink, or another file renamed
///   over it), IN_MOVE_SELF when it is renamed away: the slot is lost;
/// - IN_MODIFY when it is written (`echo 1234 > F`): the PID line is put back;
/// - IN_CLOSE_WRITE when a reader that opened it for writing closes it:
///   that is the question (or the end of a write); the heartbeat is answered.
///
/// The directory's own IN_MOVE_SELF and IN_DELETE_SELF catch the whole
/// directory being renamed or removed. Both watches or none: without them
/// the supervisor falls back to a timer. The usual reason is the per-user
/// limit of inotify instances (`fs.inotify.max_user_instances`, 128 by
/// default), one of which each supervisor needs.
fn watch_slot(daemon: &Daemon) -> Result<Inotify, String> {
    let path = daemon
        .pid_file()
        .ok_or_else(|| "no slot to watch".to_string())?;
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|e| {
        let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        format!(
            "cannot watch {} with inotify: {e} (this user's inotify instances are used up? \
             fs.inotify.max_user_instances is {limit}; each supervisor needs one)",
            path.display()
        )
    })?;
    let cannot = |what: &std::path::Path, e: nix::Error| {
        format!(
            "cannot watch {} with inotify: {e} (fs.inotify.max_user_watches?)",
            what.display()
        )
    };
    ino.add_watch(
        &path,
        AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE,
    )
    .map_err(|e| cannot(&path, e))?;
    ino.add_watch(
        daemon.pid_dir(),
        AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_ONLYDIR,
    )
    .map_err(|e| cannot(daemon.pid_dir(), e))?;
    Ok(ino)
}

fn describe(status: WaitStatus) -> (String, ExitCode) {
    match status {
        WaitStatus::Exited(_, code) => (format!("exit {code}"), ExitCode::Command(code as u8)),
        WaitStatus::Signaled(_, sig, core) => (
            format!(
                "signal {}{}",
                sig as i32,
                if core { " (core dumped)" } else { "" }
            ),
            ExitCode::Command((128 + sig as i32) as u8),
        ),
        other => (format!("{other:?}"), ExitCode::Failure),
    }
}

impl Supervisor<'_> {
    fn event(&self, msg: &str) {
        lock(&self.output).event(msg);
    }

    /// Tells the starter how the first start went (once).
    fn report_ready(&mut self, code: ExitCode, msg: &str) {
        if let Some(r) = self.ready.take() {
            r.report(code, msg);
        }
        if code == ExitCode::Success {
            self.tell_upstream("READY=1");
        }
    }

    fn tell_upstream(&self, msg: &str) {
        if let Some(addr) = &self.cfg.upstream_notify
            && let Err(e) = notify::send_to_env_socket(addr, msg)
        {
            self.event(&format!("cannot notify systemd at {addr}: {e}"));
        }
    }

    fn spawn(&mut self) -> std::io::Result<i32> {
        let slot = self.daemon.held_slot().expect("supervisor holds a slot");
        let mut extra_env: Vec<(OsString, OsString)> = vec![
            ("RDAEMON_NAME".into(), self.cfg.name.clone().into()),
            ("RDAEMON_SLOT".into(), slot.index().to_string().into()),
        ];
        if let Some(n) = &self.notify {
            extra_env.push(("NOTIFY_SOCKET".into(), n.path().into()));
        }
        if let Some(wd) = self.cfg.watchdog {
            extra_env.push(("WATCHDOG_USEC".into(), wd.as_micros().to_string().into()));
        }
        let io = child::ChildIo {
            stdout: self.pipes.as_ref().map(|p| &p.stdout.1),
            stderr: self.pipes.as_ref().map(|p| &p.stderr.1),
            lock_fd: slot.lock_fd(),
            extra_env,
        };
        let pid = child::spawn(&self.cfg.child, &io)?;
        let restarts = self.restarts;
        let notify = self.cfg.notify;
        let answers_probes = self.inotify.is_some();
        let lease_ms = self.tick_every.map(|d| d.as_millis() as u64);
        let now = Instant::now();
        // Each run must prove readiness and liveness afresh. The watchdog
        // clock starts when the run is ready: at READY=1 with --notify,
        // at exec otherwise (as systemd does).
        self.ready_deadline = notify.then(|| now + self.cfg.ready_timeout);
        self.watchdog_deadline = if notify {
            None
        } else {
            self.cfg.watchdog.map(|w| now + w)
        };
        if let Err(e) = self.daemon.update_state(|s| {
            s.child_pid = Some(pid);
            s.main_pid = None;
            s.restarts = restarts;
            s.ready = notify.then_some(false);
            s.watchdog_unix_ms = None;
            s.answers_probes = answers_probes;
            s.lease_ms = lease_ms;
        }) {
            self.event(&format!("warning: {e}"));
        }
        self.event(&format!(
            "started {} as PID {pid}",
            self.cfg.child.argv[0].to_string_lossy()
        ));
        // Waited for only now, so that the kernel finishes the exec (on
        // the other CPU, usually) while the state and the log are written.
        // The caller is not told COMMAND started before `ps` can show it.
        crate::proc::await_exec_image(pid, EXEC_IMAGE_LIMIT);
        Ok(pid)
    }

    fn event_loop(mut self) -> ExitCode {
        loop {
            if let Phase::Done(code) = self.phase {
                self.finish();
                return code;
            }
            // Only sources that poll() reported are read: a wake-up for a
            // deadline costs no futile reads.
            let ready = self.wait_for_events();
            let mut child_changed = false;
            if ready.signals {
                for sig in self.signals.take() {
                    child_changed |= sig == libc::SIGCHLD;
                    self.on_signal(sig);
                }
            }
            if ready.notify {
                self.on_notifications();
            }
            if child_changed {
                self.reap();
            }
            if ready.inotify {
                self.on_inotify();
            }
            self.on_timers();
        }
    }

    /// The earliest deadline, or `None`: nothing to do until an event.
    fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Stopping {
                kill_at,
                killed: false,
                ..
            } => Some(kill_at),
            Phase::BackingOff { until } => Some(until),
            _ => None,
        };
        let running = matches!(self.phase, Phase::Running { .. });
        let (ready, watchdog) = if running {
            (self.ready_deadline, self.watchdog_deadline)
        } else {
            (None, None)
        };
        [self.next_tick, self.next_sample, phase, ready, watchdog]
            .into_iter()
            .flatten()
            .min()
    }

    fn wait_for_events(&mut self) -> Ready {
        let timeout = match self.next_deadline() {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we do not wake just before a deadline and spin.
                let ms = left.as_millis().min(60_000) as i32
                    + i32::from(!left.subsec_nanos().is_multiple_of(1_000_000));
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let ready = {
            let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            fn at<'a>(fd: Option<BorrowedFd<'a>>, fds: &mut Vec<PollFd<'a>>) -> Option<usize> {
                fd.map(|fd| {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    fds.len() - 1
                })
            }
            let out_at = at(self.pipes.as_ref().map(|p| p.stdout.0.as_fd()), &mut fds);
            let err_at = at(self.pipes.as_ref().map(|p| p.stderr.0.as_fd()), &mut fds);
            let notify_at = at(self.notify.as_ref().map(NotifySocket::fd), &mut fds);
            let inotify_at = at(self.inotify.as_ref().map(Inotify::as_fd), &mut fds);
            let _ = poll(&mut fds, timeout);
            let readable = |i: Option<usize>| {
                i.and_then(|i| fds.get(i))
                    .and_then(|f| f.revents())
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
            };
            Ready {
                signals: readable(Some(0)),
                pipes: readable(out_at) || readable(err_at),
                notify: readable(notify_at),
                inotify: readable(inotify_at),
            }
        };
        if ready.pipes {
            self.drain_pipes(false);
        }
        ready
    }

    /// Reads what the output pipes hold and writes it out line by line.
    fn drain_pipes(&mut self, at_exit: bool) {
        let Some(p) = &mut self.pipes else { return };
        let mut out = lock(&self.output);
        let mut buf = [0u8; 65536];
        for (fd, lb, stream) in [
            (&p.stdout.0, &mut p.out_buf, Stream::Stdout),
            (&p.stderr.0, &mut p.err_buf, Stream::Stderr),
        ] {
            // Bounded, so a chatty COMMAND cannot starve signal handling.
            for _ in 0..16 {
                match nix::unistd::read(fd.as_fd(), &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lb.feed(&buf[..n], |line| out.line(stream, line)),
                }
            }
            if at_exit {
                lb.flush(|line| out.line(stream, line));
            }
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => match self.phase {
                Phase::Running { .. } => {
                    self.event(&format!("received {}; stopping", crate::signal_name(sig)));
                    self.begin_stop(AfterStop::Exit(ExitCode::Success));
                }
                Phase::Stopping { child, .. } => {
                    self.event(&format!(
                        "received {} again; killing",
                        crate::signal_name(sig)
                    ));
                    self.kill_group(child);
                    if let Phase::Stopping { killed, then, .. } = &mut self.phase {
                        *killed = true;
                        *then = AfterStop::Exit(ExitCode::Success);
                    }
                }
                Phase::BackingOff { .. } => {
                    self.event(&format!(
                        "received {} while waiting to restart; exiting",
                        crate::signal_name(sig)
                    ));
                    self.phase = Phase::Done(ExitCode::Success);
                }
                Phase::Done(_) => {}
            },
            libc::SIGHUP | libc::SIGUSR1 | libc::SIGUSR2 => {
                if let Phase::Running { child, .. } | Phase::Stopping { child, .. } = self.phase {
                    // The child is unreaped (at worst a zombie), so its
                    // group ID cannot have been reused.
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = killpg(Pid::from_raw(child), s);
                    }
                }
            }
            _ => {} // SIGCHLD: reap() runs after every wake-up anyway.
        }
    }

    fn begin_stop(&mut self, then: AfterStop) {
        let (child, started) = match self.phase {
            Phase::Running { child, started } => (child, started),
            _ => return,
        };
        let _ = killpg(Pid::from_raw(child), Signal::SIGTERM);
        // A stopped process would not see SIGTERM until continued.
        let _ = killpg(Pid::from_raw(child), Signal::SIGCONT);
        self.phase = Phase::Stopping {
            child,
            started,
            kill_at: Instant::now() + self.cfg.stop_timeout,
            killed: false,
            then,
        };
    }

    fn kill_group(&self, child: i32) {
        let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
    }

    /// Collects COMMAND's exit, if it happened.
    fn reap(&mut self) {
        let child = match self.phase {
            Phase::Running { child, .. } | Phase::Stopping { child, .. } => child,
            _ => return,
        };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(child)), flags) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
        // COMMAND is a zombie, so its PID and group ID are still reserved:
        // leftovers in its group (a shell's background jobs) get SIGTERM
        // without any risk of hitting a reused group, like systemd's
        // KillMode=control-group. Then reap.
        let _ = killpg(Pid::from_raw(child), Signal::SIGTERM);
        let status = match waitpid(Pid::from_raw(child), None) {
            Ok(s) => s,
            Err(_) => return,
        };
        self.drain_pipes(false);
        let (how, code) = describe(status);
        let _ = self.daemon.update_state(|s| {
            s.child_pid = None;
            s.last_exit = Some(how.clone());
        });
        let now = Instant::now();
        match self.phase {
            Phase::Running { .. } if self.ready.is_some() => {
                let msg = format!("COMMAND exited ({how}) before it sent READY=1");
                self.event(&msg);
                self.report_ready(ExitCode::Failure, &msg);
                self.phase = Phase::Done(ExitCode::Failure);
            }
            Phase::Running { started, .. } => {
                self.event(&format!("PID {child} exited ({how})"));
                let finished = matches!(status, WaitStatus::Exited(_, c) if self.cfg.finished_exit_codes.contains(&c));
                if finished {
                    self.event(&format!("{how} means finished; not restarting"));
                }
                self.after_exit(started, now, code, !finished);
            }
            Phase::Stopping { then, started, .. } => {
                self.event(&format!("PID {child} stopped ({how})"));
                match then {
                    AfterStop::Exit(code) => self.phase = Phase::Done(code),
                    AfterStop::Respawn => self.after_exit(started, now, code, true),
                }
            }
            _ => {}
        }
    }

    /// COMMAND ended; restart it if allowed, otherwise finish with `code`.
    fn after_exit(&mut self, started: Instant, now: Instant, code: ExitCode, may_respawn: bool) {
        let Some(rs) = self.respawn.as_mut().filter(|_| may_respawn) else {
            self.phase = Phase::Done(code);
            return;
        };
        match rs.on_exit(started, now) {
            Decision::RestartAfter(delay) => {
                self.event(&format!("restarting in {}", secs(delay)));
                self.phase = Phase::BackingOff { until: now + delay };
            }
            Decision::GiveUp { restarts_in_window } => {
                let limits = self.cfg.respawn.unwrap_or_default();
                self.event(&format!(
                    "giving up: {restarts_in_window} restarts within {} (--max-respawns {})",
                    secs(limits.window),
                    limits.max_respawns
                ));
                self.phase = Phase::Done(code);
            }
        }
    }

    fn on_inotify(&mut self) {
        let seen = self.drain_inotify();
        if seen.is_empty() {
            return;
        }
        // An overflowed queue may have lost a question: answer anyway.
        let asked = seen.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_Q_OVERFLOW);
        let ours = if asked {
            // A reader asked for a heartbeat (or someone finished writing
            // the file): verify the slot and answer with a fresh mtime (the
            // touch also puts back an overwritten PID line). The touch
            // raises IN_MODIFY, so poll() returns at once for one more
            // cheap pass that finds the line intact (no second sleep and
            // wake-up: measured, one context switch per question); it
            // closes nothing, so this cannot feed itself.
            self.daemon.check_now()
        } else {
            self.daemon.slot_still_ours()
        };
        if !ours {
            self.lock_lost();
        } else if seen.contains(AddWatchFlags::IN_MODIFY)
            && let Some(Err(e)) = self.daemon.held_slot().map(|s| s.restore_pid_line())
        {
            self.event(&format!("warning: {e}"));
        }
    }

    /// Reads the queued inotify events; the union of their masks. Bounded,
    /// so a reader opening the file in a loop cannot starve the rest.
    fn drain_inotify(&mut self) -> AddWatchFlags {
        let mut seen = AddWatchFlags::empty();
        if let Some(ino) = &self.inotify {
            for _ in 0..16 {
                match ino.read_events() {
                    Ok(events) if !events.is_empty() => {
                        seen = events.iter().fold(seen, |m, e| m | e.mask);
                    }
                    _ => break,
                }
            }
        }
        seen
    }

    /// The timed heartbeat (`--heartbeat-interval`, or every second without
    /// inotify): verify the slot and record the heartbeat.
    fn heartbeat_tick(&mut self) {
        if !self.daemon.check_now() {
            self.lock_lost();
        }
    }

    /// The PID file is no longer the one we locked: stop COMMAND and exit.
    fn lock_lost(&mut self) {
        if matches!(self.phase, Phase::Done(_)) {
            return;
        }
        let path = self
            .daemon
            .pid_file()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.event(&format!(
            "lock lost: {path} was deleted or replaced; stopping, a watchdog may start a fresh peer"
        ));
        self.inotify = None;
        self.next_tick = None;
        self.next_sample = None;
        match self.phase {
            Phase::Running { .. } => self.begin_stop(AfterStop::Exit(ExitCode::Failure)),
            Phase::Stopping { ref mut then, .. } => *then = AfterStop::Exit(ExitCode::Failure),
            Phase::BackingOff { .. } => self.phase = Phase::Done(ExitCode::Failure),
            Phase::Done(_) => {}
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if let Phase::Stopping {
            child,
            kill_at,
            killed: false,
            ..
        } = self.phase
            && now >= kill_at
        {
            self.event(&format!(
                "PID {child} still running {}s after SIGTERM; sending SIGKILL",
                self.cfg.stop_timeout.as_secs_f64()
            ));
            self.kill_group(child);
            if let Phase::Stopping { killed, .. } = &mut self.phase {
                *killed = true;
            }
        }
        if let Phase::BackingOff { until } = self.phase
            && now >= until
        {
            self.restarts += 1;
            match self.spawn() {
                Ok(pid) => {
                    self.phase = Phase::Running {
                        child: pid,
                        started: Instant::now(),
                    }
                }
                Err(e) => {
                    self.event(&format!(
                        "cannot execute {}: {e}",
                        self.cfg.child.argv[0].to_string_lossy()
                    ));
                    let code = ExitCode::for_exec_errno(e.raw_os_error().unwrap_or(0));
                    self.after_exit(now, now, code, true);
                }
            }
        }
        if let Phase::Running { .. } = self.phase {
            if self.ready_deadline.is_some_and(|d| now >= d) {
                self.ready_deadline = None;
                let msg = format!(
                    "COMMAND sent no READY=1 within {}; stopping it",
                    secs(self.cfg.ready_timeout)
                );
                self.event(&msg);
                if self.ready.is_some() {
                    self.report_ready(ExitCode::Failure, &msg);
                    self.begin_stop(AfterStop::Exit(ExitCode::Failure));
                } else {
                    self.stop_hung();
                }
            } else if self.watchdog_deadline.is_some_and(|d| now >= d) {
                self.watchdog_deadline = None;
                let wd = self.cfg.watchdog.unwrap_or_default();
                self.event(&format!(
                    "watchdog: no WATCHDOG=1 for {}; COMMAND is hung",
                    secs(wd)
                ));
                self.stop_hung();
            }
        }
        if let (Some(at), Some(every)) = (self.next_tick, self.tick_every)
            && now >= at
        {
            self.next_tick = Some(now + every);
            self.heartbeat_tick();
        }
        if self.next_sample.is_some_and(|t| now >= t) {
            self.next_sample = Some(now + SAMPLE_EVERY);
            self.check_memory();
        }
    }

    /// Stops a hung COMMAND: afresh under `--respawn`, for good otherwise.
    fn stop_hung(&mut self) {
        let then = if self.respawn.is_some() {
            AfterStop::Respawn
        } else {
            AfterStop::Exit(ExitCode::Failure)
        };
        self.begin_stop(then);
    }

    /// Reads COMMAND's sd_notify datagrams and acts on them.
    fn on_notifications(&mut self) {
        let Some(sock) = &self.notify else { return };
        let (messages, dropped) = sock.receive();
        if dropped > 0 {
            self.event(&format!("ignored {dropped} malformed notification(s)"));
        }
        for msg in messages {
            self.on_notification(msg);
        }
    }

    fn on_notification(&mut self, msg: Notification) {
        let Phase::Running { child, .. } = self.phase else {
            return;
        };
        let now = Instant::now();
        let mut state_changed = false;
        let mut new_main_pid = None;
        if let Some(pid) = msg.main_pid {
            let max = crate::pid::pid_max();
            match crate::pid::valid_signal_target(pid, max) {
                Some(p) if notify::is_descendant(p, child) => new_main_pid = Some(p),
                _ => self.event(&format!(
                    "ignored MAINPID={pid}: not a process of COMMAND's tree"
                )),
            }
        }
        if let Some(extra) = msg.extend_timeout
            && let Some(d) = self.ready_deadline
        {
            self.ready_deadline = Some(d.max(now + extra));
        }
        if msg.ready && self.cfg.notify && self.ready_deadline.is_some() {
            self.ready_deadline = None;
            self.watchdog_deadline = self.cfg.watchdog.map(|w| now + w);
            self.event("COMMAND is ready");
            self.report_ready(ExitCode::Success, "");
            state_changed = true;
        }
        if msg.watchdog_trigger {
            self.event("COMMAND asked for a watchdog restart (WATCHDOG=trigger)");
            self.stop_hung();
            return;
        }
        let mut watchdog_ms = None;
        if msg.watchdog {
            if self.watchdog_deadline.is_some() || (!self.cfg.notify && self.cfg.watchdog.is_some())
            {
                self.watchdog_deadline = self.cfg.watchdog.map(|w| now + w);
            }
            // Publish the heartbeat at most four times a second.
            if self
                .watchdog_published
                .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(250))
            {
                self.watchdog_published = Some(now);
                watchdog_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64);
                state_changed = true;
            }
        }
        if msg.stopping {
            self.event("COMMAND reports that it is stopping");
            self.tell_upstream("STOPPING=1");
        }
        if let Some(text) = &msg.status {
            self.tell_upstream(&format!("STATUS={text}"));
        }
        state_changed |= msg.status.is_some() || new_main_pid.is_some();
        if state_changed {
            let ready = self.cfg.notify && self.ready_deadline.is_none();
            let notify = self.cfg.notify;
            let res = self.daemon.update_state(|s| {
                if notify {
                    s.ready = Some(ready);
                } else if msg.ready {
                    s.ready = Some(true);
                }
                if let Some(ms) = watchdog_ms {
                    s.watchdog_unix_ms = Some(ms);
                }
                if let Some(text) = msg.status {
                    s.status_text = Some(text);
                }
                if let Some(p) = new_main_pid {
                    s.main_pid = Some(p);
                }
            });
            if let Err(e) = res {
                self.event(&format!("warning: {e}"));
            }
        }
    }

    fn check_memory(&mut self) {
        let (Some(limit), Phase::Running { child, .. }) = (self.cfg.memory_limit, self.phase)
        else {
            return;
        };
        let Some(rss) = crate::memory::tree_rss(child) else {
            return;
        };
        if rss <= limit {
            return;
        }
        let respawn = self.respawn.is_some();
        self.event(&format!(
            "memory: PID {child} and its children use {} resident, over the limit of {}; stopping{}",
            format_size(rss),
            format_size(limit),
            if respawn { " and restarting" } else { "" }
        ));
        self.begin_stop(if respawn {
            AfterStop::Respawn
        } else {
            AfterStop::Exit(ExitCode::Failure)
        });
    }

    /// Flushes output, removes the PID file and releases the slot.
    fn finish(&mut self) {
        self.drain_pipes(true);
        self.tell_upstream("STOPPING=1");
        self.notify = None; // removes the socket file
        self.event("exiting");
        if let Err(e) = self.daemon.stop() {
            self.event(&format!("warning: {e}"));
        }
    }
}
