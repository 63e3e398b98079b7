//! The supervisor's one loop: sleep in `poll()`, turn what woke it into
//! [`Event`]s for the [`Machine`], and carry out the [`Action`]s it returns.
//!
//! Nothing here decides anything: which signal goes where, when to
//! respawn or give up, what to tell the starter are all in `machine.rs`.
//! This file knows how: how to spawn, reap, signal the tree, read pipes
//! and sockets, publish the state file, and release the slot.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::child::{self, ChildIo};
use super::machine::{Action, Event, Finish, Machine, Phase, Policy, StartOutcome};
use super::notify::{self, NotifySocket};
use super::tree;
use super::{Config, OutputChoice, Readiness};
use crate::daemon::Daemon;
use crate::etcd::{ClaimError, ClusterLease, LeaseStanding};
use crate::output::{LineBuffer, LogFile, Output, Sink, Stream, Syslog};
use crate::signals::SignalSet;
use crate::state::HolderMode;
use crate::timefmt::secs;

/// How often memory is sampled (`--memory-limit`), and the heartbeat
/// refreshed when no inotify watch could be set up to answer readers.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long a spawn waits at most for COMMAND's exec to finish building
/// its image. Exec cannot fail any more by then; this only bounds a
/// pathologically slow one.
const EXEC_IMAGE_LIMIT: Duration = Duration::from_secs(1);

/// Stop signals, forwarded signals, and SIGCHLD.
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

fn lock(output: &Arc<Mutex<Output>>) -> std::sync::MutexGuard<'_, Output> {
    output.lock().unwrap_or_else(|p| p.into_inner())
}

struct Supervisor<'r> {
    cfg: Config,
    machine: Machine,
    daemon: Daemon,
    output: Arc<Mutex<Output>>,
    signals: SignalSet,
    /// Whether [`Supervisor::arm`] has run: signal handlers, inotify.
    armed: bool,
    pipes: Option<Pipes>,
    inotify: Option<Inotify>,
    notify: Option<NotifySocket>,
    lease: Option<ClusterLease>,
    /// How often the heartbeat is refreshed on a timer: the
    /// `--heartbeat-interval`, or every second without inotify; `None`
    /// when readers are answered on demand (the default).
    tick_every: Option<Duration>,
    next_tick: Option<Instant>,
    /// When memory is next sampled (`--memory-limit` only).
    next_sample: Option<Instant>,
    /// The starter, until it has been told the outcome of the first start.
    ready: Option<&'r mut dyn Readiness>,
    /// MAINPID= from COMMAND, vetted to be a process of the tree.
    main_override: Option<i32>,
    /// When the current run started, epoch ms.
    command_started_ms: Option<u64>,
    /// When the last WATCHDOG=1 was published to the state file.
    watchdog_published: Option<Instant>,
    /// Events produced while carrying out actions (spawn results).
    queue: VecDeque<Event>,
    /// The current run's last lines on stderr, for a start that fails.
    stderr_tail: VecDeque<String>,
}

/// How many of COMMAND's last stderr lines a failed start quotes.
const STDERR_TAIL: usize = 5;

/// How long a first start waits at most for COMMAND to block or exit
/// (see [`crate::proc::await_settled`]).
const SETTLE_LIMIT: Duration = Duration::from_millis(50);

/// Releases what was taken so far and reports a start that failed before
/// the loop began.
fn fail_early(daemon: Option<Daemon>, ready: &mut dyn Readiness, outcome: StartOutcome) -> Finish {
    if let Some(mut d) = daemon
        && let Err(e) = d.stop()
    {
        log::warn!("{e}");
    }
    ready.report(&outcome);
    Finish::StartFailed(outcome)
}

pub(super) fn run(cfg: Config, ready: &mut dyn Readiness) -> Finish {
    // Nothing the caller blocked or ignored applies here (or reaches
    // COMMAND), but the handlers go in only after COMMAND's spawn
    // (`Supervisor::arm`, while COMMAND's loading runs on the other CPU).
    // Until then every signal waits: a blocked signal stays pending,
    // neither lost nor acted on by default. The dispositions are reset
    // now, while nothing of ours can be pending: setting SIG_DFL on a
    // pending signal whose default is to ignore it (SIGCHLD) discards it
    // (POSIX.1-2017 XSH 2.4.3, "Signal Actions"), and a COMMAND that died
    // before `arm` would then never be noticed. A SIGCHLD left ignored by
    // the caller would also have the kernel reap COMMAND behind our back.
    // SIGPIPE alone stays ignored in the supervisor: a starter that went
    // away must not kill it through the readiness pipe.
    child::block_all();
    child::reset_dispositions();
    // SAFETY: setting a disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let signals = match SignalSet::new() {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot create the supervisor's signal wake-up socket: {e}");
            return fail_early(None, ready, StartOutcome::Failed(msg));
        }
    };
    let subreaper = tree::become_subreaper();
    let mut builder = Daemon::builder(cfg.name.clone())
        .max_peers(cfg.max_peers)
        .pid_dir(cfg.pid_dir.clone())
        .handle_signals(false)
        .sd_notify(false);
    if let Some(every) = cfg.heartbeat_interval {
        builder = builder.lease(every);
    }
    let daemon = match builder.build().and_then(|mut d| d.start().map(|()| d)) {
        Ok(d) => d,
        Err(e) => {
            let outcome = match e.kind() {
                crate::ErrorKind::Busy => StartOutcome::Busy(e.to_string()),
                crate::ErrorKind::Usage => StartOutcome::Usage(e.to_string()),
                _ => StartOutcome::Failed(e.to_string()),
            };
            return fail_early(None, ready, outcome);
        }
    };
    let index = daemon.slot().unwrap_or(0);
    let sink = match &cfg.output {
        OutputChoice::Log(path) => match LogFile::open(path) {
            Ok(f) => Sink::File(f),
            Err(e) => {
                let msg = format!("cannot open log file {}: {e}", path.display());
                return fail_early(Some(daemon), ready, StartOutcome::Failed(msg));
            }
        },
        OutputChoice::Syslog(socket) => Sink::Syslog(Syslog::new(socket, &cfg.name)),
        OutputChoice::Inherit => Sink::Stderr,
    };
    let mut out = Output::new(sink, &cfg.name);
    if cfg.timestamps {
        out = out.with_timestamps(format!("{}.{index}", cfg.name));
    }
    let output = Arc::new(Mutex::new(out));
    {
        let output = Arc::clone(&output);
        crate::logger::route_to(move |_, msg| lock(&output).event(msg));
    }
    if let Err(e) = subreaper {
        lock(&output).event(&format!(
            "warning: cannot become a child subreaper ({e}); descendants that leave COMMAND's tree are not tracked"
        ));
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
                let msg = format!("cannot create output pipes: {e}");
                return fail_early(Some(daemon), ready, StartOutcome::Failed(msg));
            }
        }
    } else {
        None
    };
    let notify = match open_notify_socket(&cfg, index) {
        Ok(n) => n,
        Err(msg) => return fail_early(Some(daemon), ready, StartOutcome::Failed(msg)),
    };
    // The cluster slot is claimed after the local one (so a busy host asks
    // etcd nothing) and before COMMAND runs.
    let lease = match &cfg.cluster {
        None => None,
        Some(cc) => match ClusterLease::claim(cc, &cfg.name, index) {
            Ok(l) => Some(l),
            Err(ClaimError::Busy(m)) => {
                return fail_early(Some(daemon), ready, StartOutcome::Busy(m));
            }
            Err(ClaimError::Unavailable(m)) => {
                return fail_early(Some(daemon), ready, StartOutcome::Failed(m));
            }
        },
    };
    let policy = Policy {
        notify: cfg.notify,
        ready_timeout: cfg.ready_timeout,
        watchdog: cfg.watchdog,
        stop_timeout: cfg.stop_timeout,
        respawn: cfg.respawn,
        finished_codes: cfg.finished_exit_codes.clone(),
        min_uptime: cfg.min_uptime,
        recycle_codes: cfg.recycle_codes.clone(),
        forking: cfg.forking,
        pidfile: cfg.pidfile.is_some(),
        lease_retry: cfg.cluster.as_ref().map(|c| c.lease_ttl / 3),
        settle: !cfg.foreground,
    };
    let sup = Supervisor {
        machine: Machine::new(policy),
        armed: false,
        tick_every: None,
        next_tick: None,
        next_sample: None,
        cfg,
        daemon,
        output,
        signals,
        pipes,
        inotify: None,
        notify,
        lease,
        ready: Some(ready),
        main_override: None,
        command_started_ms: None,
        watchdog_published: None,
        queue: VecDeque::new(),
        stderr_tail: VecDeque::new(),
    };
    sup.event_loop()
}

/// Creates COMMAND's notification socket. Without `--notify`/`--watchdog`
/// a failure only costs the STATUS/READY/WATCHDOG reporting, so it is a
/// warning; with them it fails the start.
fn open_notify_socket(cfg: &Config, index: u32) -> Result<Option<NotifySocket>, String> {
    let owner = cfg.child.identity.as_ref().map(|id| (id.uid, id.gid));
    let bound = notify::prepare_socket_path(&cfg.pid_dir, &cfg.name, index)
        .and_then(|path| NotifySocket::bind(&path, owner).map_err(|e| (path, e).into_io()));
    match bound {
        Ok(sock) => Ok(Some(sock)),
        Err(e) if cfg.notify || cfg.watchdog.is_some() => {
            Err(format!("cannot create notification socket: {e}"))
        }
        Err(e) => {
            log::warn!("cannot create notification socket: {e}; NOTIFY_SOCKET not set");
            Ok(None)
        }
    }
}

/// An I/O error that names the path it happened on.
trait IntoIo {
    fn into_io(self) -> std::io::Error;
}

impl IntoIo for (std::path::PathBuf, std::io::Error) {
    fn into_io(self) -> std::io::Error {
        std::io::Error::new(self.1.kind(), format!("{}: {}", self.0.display(), self.1))
    }
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

/// Which event sources poll() reported readable.
#[derive(Debug, Clone, Copy)]
struct Woken {
    signals: bool,
    notify: bool,
    inotify: bool,
    lease: bool,
}

fn epoch_ms(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

impl Supervisor<'_> {
    fn event(&self, msg: &str) {
        lock(&self.output).event(msg);
    }

    /// What the supervisor needs only once COMMAND runs, done right after
    /// its first spawn (or before the first wait, whichever comes first),
    /// while COMMAND's dynamic loading and start-up go on on the other CPU
    /// (the settle wait waits for those anyway): the signal handlers
    /// installed, then every signal unblocked (what arrived meanwhile is
    /// delivered now), and the inotify watches on the slot, followed by
    /// one more look at the slot.
    fn arm(&mut self) {
        if self.armed {
            return;
        }
        self.armed = true;
        // Installing a handler keeps what is pending (only SIG_IGN or an
        // ignoring SIG_DFL would discard it): it is delivered at the
        // unblock below.
        let mut caught = CAUGHT.to_vec();
        caught.push(crate::signals::restart_signal());
        if let Err(e) = self.signals.catch(&caught) {
            // Without them no exit of COMMAND and no stop request would be
            // seen: stop what runs and fail, as a failed install before the
            // spawn failed the start. Queued, not fed: this runs inside
            // `act`.
            self.queue
                .push_back(Event::Fault(format!("cannot install signal handlers: {e}")));
        }
        if !child::unblock_all() {
            self.event(&format!(
                "cannot unblock signals: {}",
                std::io::Error::last_os_error()
            ));
        }
        self.inotify = match watch_slot(&self.daemon) {
            Ok(ino) => Some(ino),
            Err(why) => {
                self.event(&format!(
                    "warning: {why}; verifying the slot and refreshing the heartbeat every {} instead",
                    secs(SAMPLE_EVERY)
                ));
                None
            }
        };
        self.tick_every = self
            .cfg
            .heartbeat_interval
            .or_else(|| self.inotify.is_none().then_some(SAMPLE_EVERY));
        self.next_tick = self.tick_every.map(|every| Instant::now() + every);
        // The slot was taken before the spawn, the watch only now: a PID
        // file deleted or replaced in between would go unnoticed (the watch
        // would follow the new file), so look once more.
        if !self.daemon.slot_still_ours() {
            self.inotify = None;
            self.next_tick = None;
            let why = self.lost_why();
            self.queue.push_back(Event::SlotLost(why));
        }
    }

    fn event_loop(mut self) -> Finish {
        self.feed(Event::Begin);
        loop {
            // A no-op once the first spawn armed; what arming found (a
            // fault, a lost slot) is handled before any wait.
            self.arm();
            self.drain_queue();
            if let Phase::Done(finish) = self.machine.phase() {
                let finish = finish.clone();
                return self.finish(finish);
            }
            let woken = self.wait();
            if woken.signals {
                for sig in self.signals.take() {
                    match sig {
                        libc::SIGCHLD => {
                            self.reap();
                            self.drain_queue();
                        }
                        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => self.feed(Event::Stop(sig)),
                        libc::SIGHUP | libc::SIGUSR1 | libc::SIGUSR2 => {
                            self.feed(Event::Forward(sig))
                        }
                        s if s == crate::signals::restart_signal() => {
                            self.feed(Event::RestartRequested)
                        }
                        _ => {}
                    }
                }
            }
            if woken.notify {
                self.on_notifications();
            }
            if woken.inotify {
                self.on_inotify();
            }
            if woken.lease
                && let Some(lease) = &mut self.lease
                && let LeaseStanding::Lost { kill_by, why } = lease.standing()
            {
                self.feed(Event::LeaseLost { kill_by, why });
            }
            self.on_timers();
            self.feed(Event::Tick);
        }
    }

    /// Hands `event` to the machine and carries out its actions, then any
    /// events those produced.
    fn feed(&mut self, event: Event) {
        self.queue.push_back(event);
        self.drain_queue();
    }

    fn drain_queue(&mut self) {
        while let Some(ev) = self.queue.pop_front() {
            let actions = self.machine.on(ev, Instant::now());
            for action in actions {
                self.act(action);
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Spawn => {
                let ev = self.spawn();
                self.arm();
                self.queue.push_back(ev);
            }
            Action::AwaitSettled => {
                if let Some(pid) = self.machine.main_pid() {
                    if crate::proc::await_settled(pid, SETTLE_LIMIT) {
                        // Died at once: its Reaped tells the machine.
                        self.reap();
                    }
                    let died = self
                        .queue
                        .iter()
                        .any(|e| matches!(e, Event::Reaped { pid: p, .. } if *p == pid));
                    // Alive (or its state unreadable): it runs.
                    if !died {
                        self.queue.push_back(Event::Settled);
                    }
                }
            }
            Action::FindMain => {
                let ev = self.find_main();
                self.queue.push_back(ev);
            }
            Action::SignalTree(sig) => {
                let n = tree::signal_all(sig);
                if sig == libc::SIGKILL && n > 0 {
                    self.event(&format!(
                        "sent SIGKILL to {n} process(es) of COMMAND's tree"
                    ));
                }
                // A stop of a tree that is already gone ends here: no
                // SIGCHLD is coming to say so.
                if n == 0 && tree::is_empty() {
                    self.queue.push_back(Event::TreeEmpty);
                }
            }
            Action::SignalMain(sig) => self.signal_main(sig),
            Action::Publish => self.publish(),
            Action::Log(msg) => self.event(&msg),
            Action::FlushOutput => self.drain_pipes(true),
            Action::ReportReady(outcome) => {
                let outcome = self.with_stderr_tail(outcome);
                if let Some(r) = self.ready.take() {
                    r.report(&outcome);
                }
            }
            Action::TellUpstream(msg) => self.tell_upstream(msg),
            Action::AnswerHeartbeat => {
                if !self.daemon.check_now() {
                    let why = self.lost_why();
                    self.queue.push_back(Event::SlotLost(why));
                }
            }
            Action::ReclaimLease => {
                let ev = match self.lease.as_mut().map(ClusterLease::reclaim) {
                    Some(Ok(())) => Event::LeaseReclaimed,
                    Some(Err(ClaimError::Busy(m) | ClaimError::Unavailable(m))) => {
                        Event::LeaseBusy(m)
                    }
                    None => Event::LeaseBusy("no cluster configured".into()),
                };
                self.queue.push_back(ev);
            }
            Action::Exit(_) => {} // the loop sees Phase::Done next
        }
    }

    fn tell_upstream(&self, msg: &str) {
        if let Some(addr) = &self.cfg.upstream_notify
            && let Err(e) = notify::send_to_env_socket(addr, msg)
        {
            self.event(&format!("cannot notify systemd at {addr}: {e}"));
        }
    }

    /// Starts a run of COMMAND; the machine hears how it went.
    fn spawn(&mut self) -> Event {
        let argv0 = self.cfg.child.argv[0].to_string_lossy().into_owned();
        if let Some(dir) = &self.cfg.child.chdir
            && let Err(msg) = child::check_dir(dir, self.cfg.child.identity.as_ref())
        {
            return Event::SpawnFailed(StartOutcome::Failed(msg));
        }
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
        if let Some(lease) = &self.lease {
            extra_env.push((
                "RDAEMON_FENCING_TOKEN".into(),
                lease.fencing_token().to_string().into(),
            ));
        }
        let io = ChildIo {
            stdout: self.pipes.as_ref().map(|p| &p.stdout.1),
            stderr: self.pipes.as_ref().map(|p| &p.stderr.1),
            lock_fd: slot.lock_fd(),
            dir_lock_fd: slot.dir_lock_fd(),
            // With a cluster lease there is no grace to give: nobody can
            // renew the lease once the supervisor is gone, so a COMMAND
            // that outlived it could overlap with another host's copy.
            death_signal: if self.lease.is_some() {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            },
            extra_env,
        };
        let pid = match child::spawn(&self.cfg.child, &io) {
            Ok(pid) => pid,
            Err(e) => {
                // A directory that vanished between the check and the
                // spawn fails the same chdir: say so, not "cannot execute".
                if let Some(dir) = &self.cfg.child.chdir
                    && let Err(msg) = child::check_dir(dir, self.cfg.child.identity.as_ref())
                {
                    return Event::SpawnFailed(StartOutcome::Failed(msg));
                }
                return Event::SpawnFailed(StartOutcome::ExecFailed {
                    errno: e.errno,
                    message: child::describe_spawn_failure(&self.cfg.child, &e),
                });
            }
        };
        self.main_override = None;
        self.stderr_tail.clear();
        self.command_started_ms = epoch_ms(SystemTime::now());
        self.watchdog_published = None;
        self.next_sample = self
            .cfg
            .memory_limit
            .is_some()
            .then(|| Instant::now() + SAMPLE_EVERY);
        self.event(&format!("started {argv0} as PID {pid}"));
        // Waited for only now, so that the kernel finishes the exec (on
        // the other CPU, usually) while the log is written. The caller is
        // not told COMMAND started before `ps` can show it.
        crate::proc::await_exec_image(pid, EXEC_IMAGE_LIMIT);
        Event::Spawned { pid }
    }

    /// `--forking`: one look for the process COMMAND's first process left
    /// behind. With `--pidfile`, only the PID it names, once it names a
    /// live process of our tree: until then (the file is written only
    /// after a double fork, or still holds a stale PID), "not yet" and the
    /// machine looks again. Without it, our single remaining child once it
    /// settled (blocked): one that exits at once was the intermediate of a
    /// double fork, and so is a tree with no live child yet. Several
    /// children, or nothing left, are final.
    fn find_main(&self) -> Event {
        let me = std::process::id() as i32;
        if let Some(path) = &self.cfg.pidfile {
            return match read_pidfile(path) {
                Ok(pid)
                    if pid != me
                        && crate::proc::descends_from(pid, me)
                        && crate::proc::pid_running(pid) =>
                {
                    Event::MainFound(Ok(pid))
                }
                Ok(pid) => Event::MainNotYet(format!(
                    "{} names PID {pid}, not a live process of COMMAND's tree",
                    path.display()
                )),
                Err(e) => Event::MainNotYet(format!("cannot use {}: {e}", path.display())),
            };
        }
        match tree::live_children().as_slice() {
            [one] if crate::proc::await_settled(*one, SETTLE_LIMIT) => Event::MainNotYet(
                "the process it left is still daemonizing (it exited at once)".into(),
            ),
            [one] => Event::MainFound(Ok(*one)),
            [] if tree::live_count() > 0 => {
                Event::MainNotYet("the processes it left are between forks".into())
            }
            [] => Event::MainFound(Err("it left no process running".into())),
            many => Event::MainFound(Err(format!(
                "it left {} processes and no --pidfile names the main one",
                many.len()
            ))),
        }
    }

    fn signal_main(&mut self, sig: i32) {
        let me = std::process::id() as i32;
        let target = self
            .main_override
            .filter(|&p| crate::proc::descends_from(p, me))
            .or(self.machine.main_pid());
        if let Some(pid) = target
            && let Err(e) = tree::signal_ours(pid, sig)
        {
            self.event(&format!(
                "cannot forward {} to PID {pid}: {e}",
                crate::signal_name(sig)
            ));
        }
    }

    fn publish(&mut self) {
        let m = &self.machine;
        let phase = m.published_phase();
        let child_pid = m.main_pid();
        let restarts = m.restarts();
        let run = m.runs();
        let last_exit = m.last_exit();
        let reason = m.reason().map(str::to_string);
        let ready = m.ready();
        let next_try = m.next_try().map(|t| {
            let left = t.saturating_duration_since(Instant::now());
            epoch_ms(SystemTime::now() + left).unwrap_or(0)
        });
        let main_override = self.main_override;
        let started = self.command_started_ms;
        let answers_probes = self.inotify.is_some();
        let lease_ms = self.tick_every.map(|d| d.as_millis() as u64);
        let stop_timeout_ms = self.cfg.stop_timeout.as_millis() as u64;
        let exiting = matches!(phase, Some(crate::state::Phase::Stopping)).then(|| m.exiting());
        let running = matches!(
            self.machine.phase(),
            Phase::Starting { .. } | Phase::Running { .. }
        );
        let res = self.daemon.update_state(|s| {
            s.phase = phase;
            s.exiting = exiting;
            s.mode = Some(HolderMode::Supervisor);
            s.child_pid = child_pid;
            s.main_pid = main_override.filter(|_| running);
            s.restarts = restarts;
            s.run = run;
            s.last_exit = last_exit.map(|e| e.describe());
            s.last_exit_code = last_exit.map(|e| e.number());
            s.reason = reason;
            s.ready = ready;
            s.next_try_unix_ms = next_try;
            s.command_started_unix_ms = started;
            s.answers_probes = answers_probes;
            s.lease_ms = lease_ms;
            s.stop_timeout_ms = Some(stop_timeout_ms);
            if !running {
                s.watchdog_unix_ms = None;
            }
        });
        if let Err(e) = res {
            self.event(&format!("warning: {e}"));
        }
    }

    /// Reaps every child that exited and queues the news for the
    /// machine; the last report says whether the tree is now empty.
    fn reap(&mut self) {
        let reaped = tree::reap_all();
        if reaped.is_empty() {
            return;
        }
        // Output written just before an exit belongs before its event.
        self.drain_pipes(false);
        let empty = tree::is_empty();
        let n = reaped.len();
        for (i, (pid, status)) in reaped.into_iter().enumerate() {
            self.queue.push_back(Event::Reaped {
                pid,
                status,
                tree_empty: empty && i + 1 == n,
            });
        }
    }

    /// A start that failed because COMMAND exited quotes its last stderr
    /// lines, when they were captured.
    fn with_stderr_tail(&self, outcome: StartOutcome) -> StartOutcome {
        match outcome {
            StartOutcome::Exited { status, message } if !self.stderr_tail.is_empty() => {
                let mut message = format!("{message}; its last lines on stderr:");
                for line in &self.stderr_tail {
                    message.push_str("\n  ");
                    message.push_str(line);
                }
                StartOutcome::Exited { status, message }
            }
            other => other,
        }
    }

    /// Sleeps until something happens or the next deadline.
    fn wait(&mut self) -> Woken {
        let deadline = [
            self.next_tick,
            self.next_sample.filter(|_| self.machine.running()),
            self.machine.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we do not wake just before a deadline and spin.
                let ms = left.as_millis().min(60_000) as i32
                    + i32::from(!left.subsec_nanos().is_multiple_of(1_000_000));
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
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
        let lease_at = at(self.lease.as_ref().map(ClusterLease::fd), &mut fds);
        let _ = poll(&mut fds, timeout);
        let readable = |i: Option<usize>| {
            i.and_then(|i| fds.get(i))
                .and_then(|f| f.revents())
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
        };
        let woken = Woken {
            signals: readable(Some(0)),
            notify: readable(notify_at),
            inotify: readable(inotify_at),
            lease: readable(lease_at),
        };
        let pipes = readable(out_at) || readable(err_at);
        drop(fds);
        if pipes {
            self.drain_pipes(false);
        }
        woken
    }

    /// Reads what the output pipes hold and writes it out line by line;
    /// with `flush`, also the partial last lines.
    fn drain_pipes(&mut self, flush: bool) {
        let Some(p) = &mut self.pipes else { return };
        let tail = &mut self.stderr_tail;
        let mut out = lock(&self.output);
        // 16 KiB a read, up to 16 reads a wake-up (256 KiB), and up to 64
        // for a last flush (1 MiB, the largest pipe an unprivileged COMMAND
        // can ask for). A larger buffer on this stack would stay resident
        // (and cost a page fault per 4 KiB at the first drain) for no gain.
        let mut buf = [0u8; 16 * 1024];
        let reads = if flush { 64 } else { 16 };
        for (fd, lb, stream) in [
            (&p.stdout.0, &mut p.out_buf, Stream::Stdout),
            (&p.stderr.0, &mut p.err_buf, Stream::Stderr),
        ] {
            let mut emit = |line: &[u8]| {
                out.line(stream, line);
                if stream == Stream::Stderr {
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(String::from_utf8_lossy(&line[..line.len().min(200)]).into());
                }
            };
            // Bounded, so a chatty COMMAND cannot starve signal handling.
            for _ in 0..reads {
                match nix::unistd::read(fd.as_fd(), &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lb.feed(&buf[..n], &mut emit),
                }
            }
            if flush {
                lb.flush(&mut emit);
            }
        }
    }

    fn on_inotify(&mut self) {
        let seen = self.drain_inotify();
        if seen.is_empty() {
            return;
        }
        // An overflowed queue may have lost a question: answer anyway.
        if seen.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_Q_OVERFLOW) {
            // A reader asked for a heartbeat (or someone finished writing
            // the file): verify the slot and answer with a fresh mtime (the
            // touch also puts back an overwritten PID line). The touch
            // raises IN_MODIFY, so poll() returns at once for one more
            // cheap pass that finds the line intact; it closes nothing, so
            // this cannot feed itself.
            self.feed(Event::HeartbeatQuestion);
        } else if !self.daemon.slot_still_ours() {
            self.slot_lost();
        } else if seen.contains(AddWatchFlags::IN_MODIFY)
            && let Some(Err(e)) = self.daemon.held_slot().map(|s| s.restore_pid_line())
        {
            self.event(&format!("warning: {e}"));
        }
    }

    fn slot_lost(&mut self) {
        // No more questions to answer, nothing to verify.
        self.inotify = None;
        self.next_tick = None;
        let why = self.lost_why();
        self.feed(Event::SlotLost(why));
    }

    fn lost_why(&self) -> String {
        let path = self.daemon.pid_file().unwrap_or_default();
        format!("{} was deleted or replaced", path.display())
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

    /// The loop's own timers: the timed heartbeat and memory sampling.
    fn on_timers(&mut self) {
        let now = Instant::now();
        if let (Some(at), Some(every)) = (self.next_tick, self.tick_every)
            && now >= at
        {
            self.next_tick = Some(now + every);
            if !self.daemon.check_now() {
                self.slot_lost();
            }
        }
        if self.machine.running() && self.next_sample.is_some_and(|t| now >= t) {
            self.next_sample = Some(now + SAMPLE_EVERY);
            if let Some(limit) = self.cfg.memory_limit {
                let rss = tree::rss();
                if rss > limit {
                    self.feed(Event::MemoryOver { rss, limit });
                }
            }
        }
    }

    /// Reads COMMAND's sd_notify datagrams: what they say about the state
    /// file is published here, what they mean for the phase goes to the
    /// machine.
    fn on_notifications(&mut self) {
        let Some(sock) = &self.notify else { return };
        let (messages, dropped) = sock.receive();
        if dropped > 0 {
            self.event(&format!("ignored {dropped} malformed notification(s)"));
        }
        for msg in messages {
            if !self.machine.running() {
                continue;
            }
            let me = std::process::id() as i32;
            let now = Instant::now();
            let mut changed = false;
            if let Some(pid) = msg.main_pid {
                match crate::pid::valid_signal_target(pid, crate::pid::pid_max()) {
                    Some(p) if p != me && crate::proc::descends_from(p, me) => {
                        self.main_override = Some(p);
                        changed = true;
                    }
                    _ => self.event(&format!(
                        "ignored MAINPID={pid}: not a process of COMMAND's tree"
                    )),
                }
            }
            let mut watchdog_ms = None;
            if msg.watchdog
                && self
                    .watchdog_published
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(250))
            {
                // Published at most four times a second.
                self.watchdog_published = Some(now);
                watchdog_ms = epoch_ms(SystemTime::now());
                changed = true;
            }
            if msg.stopping {
                self.event("COMMAND reports that it is stopping");
                self.tell_upstream("STOPPING=1");
            }
            if let Some(text) = &msg.status {
                self.tell_upstream(&format!("STATUS={text}"));
                changed = true;
            }
            let status = msg.status.clone();
            let main = self.main_override;
            if changed
                && let Err(e) = self.daemon.update_state(|s| {
                    if let Some(ms) = watchdog_ms {
                        s.watchdog_unix_ms = Some(ms);
                    }
                    if let Some(text) = status {
                        s.status_text = Some(text);
                    }
                    if main.is_some() {
                        s.main_pid = main;
                    }
                })
            {
                self.event(&format!("warning: {e}"));
            }
            self.feed(Event::Notification(msg));
        }
    }

    /// Ends the supervision: makes sure nothing of the tree is left,
    /// flushes output, leaves a tombstone if it gave up, releases the slot
    /// (and the cluster slot), and only then tells a still-waiting starter
    /// that the start failed.
    fn finish(mut self, finish: Finish) -> Finish {
        self.ensure_tree_gone();
        self.drain_pipes(true);
        self.notify = None; // removes the socket file
        let gave_up = matches!(finish, Finish::GaveUp(_));
        if gave_up {
            self.publish();
        }
        self.event("exiting");
        let staged = if gave_up {
            self.daemon.held_slot().and_then(|slot| {
                let dir = slot.dir().try_clone().ok()?;
                match crate::state::stage_tombstone(&dir, &self.cfg.name, slot.index()) {
                    Ok(()) => Some((dir, slot.index())),
                    Err(e) => {
                        self.event(&format!("warning: {e}"));
                        None
                    }
                }
            })
        } else {
            None
        };
        if let Err(e) = self.daemon.stop() {
            self.event(&format!("warning: {e}"));
        }
        if let Some((dir, index)) = staged
            && let Err(e) = crate::state::place_tombstone(&dir, &self.cfg.name, index)
        {
            self.event(&format!("warning: {e}"));
        }
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        if let Some(r) = self.ready.take() {
            let outcome = self.machine.take_pending_report().unwrap_or_else(|| {
                StartOutcome::Failed("the supervisor ended before COMMAND was started".into())
            });
            r.report(&self.with_stderr_tail(outcome));
        }
        finish
    }

    /// The machine leaves `Stopping` only once the tree is empty; this is
    /// the last guard for any other way out: SIGKILL to whatever is left,
    /// and reap until nothing is.
    fn ensure_tree_gone(&mut self) {
        if tree::is_empty() {
            return;
        }
        let n = tree::live_count();
        if n > 0 {
            self.event(&format!(
                "{n} process(es) of COMMAND's tree still running at exit; sending SIGKILL"
            ));
        }
        loop {
            tree::signal_all(libc::SIGKILL);
            match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), None) {
                Ok(_) => {}
                Err(_) => break, // ECHILD: nothing left
            }
        }
    }
}

/// Reads a daemon's PID file (`--pidfile`): not following a symlink, a
/// bounded prefix, one decimal PID that may be signalled.
fn read_pidfile(path: &std::path::Path) -> Result<i32, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(64)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("no PID in {text:?}"))?;
    crate::pid::valid_signal_target(n, crate::pid::pid_max())
        .ok_or_else(|| format!("{n} is not a PID that may be signalled"))
}
