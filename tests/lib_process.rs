//! The library in whole processes: what only shows when a process forks,
//! receives a real signal, or dies of one.
//!
//! Signal dispositions and `fork()` are process-wide, so each case runs in a
//! fresh copy of this test binary: the test spawns it with
//! `RDAEMON_LIB_ROLE=<case>` and the PID directory in `RDAEMON_LIB_PID_DIR`,
//! and [`role`] (ignored in normal runs) plays the case and prints what it
//! saw on stdout. The test then judges the output, the exit status, and the
//! PID directory from outside.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;
use rdaemon::Daemon;

const ROLE: &str = "RDAEMON_LIB_ROLE";
const PID_DIR: &str = "RDAEMON_LIB_PID_DIR";

/// Runs this test binary as `role`, against `env`'s PID directory, to the
/// end.
fn play(env: &Env, role: &str) -> Output {
    play_with(env, role, &[])
}

fn role_command(env: &Env, role: &str, vars: &[(&str, &OsStr)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.args([
        "role",
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env(ROLE, role)
    .env(PID_DIR, &env.pid_dir)
    .env_remove("NOTIFY_SOCKET")
    .env_remove("WATCHDOG_USEC")
    .env_remove("WATCHDOG_PID")
    .envs(vars.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Kills `pid` unless it ends within the deadline: no role may hang a test.
fn reap_or_kill(pid: u32) {
    if poll_until(DEADLINE, || (!alive(pid as i32)).then_some(())).is_none() {
        // SAFETY: plain kill(2) on our own child's PID, not yet reaped.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn play_with(env: &Env, role: &str, vars: &[(&str, &OsStr)]) -> Output {
    let child = role_command(env, role, vars)
        .spawn()
        .expect("spawn the role");
    reap_or_kill(child.id());
    child.wait_with_output().expect("collect the role's output")
}

/// A role running in the background; its stdout arrives line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(env: &Env, role: &str) -> Running {
        let mut child = role_command(env, role, &[])
            .spawn()
            .expect("spawn the role");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running { child, lines }
    }

    /// The next line containing `what`, or a panic after the deadline.
    fn expect_line(&self, what: &str) -> String {
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {what:?} from the role: {e}"),
            }
        }
    }

    fn finish(mut self) -> std::process::ExitStatus {
        reap_or_kill(self.child.id());
        self.child.wait().expect("reap the role")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The entry point of the roles; does nothing in a normal test run.
#[test]
#[ignore = "a harness entry point: the other tests run it in a child process"]
fn role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(PID_DIR).expect("PID dir given"));
    match role.as_str() {
        "fork" => fork_role(&dir),
        "term-after-stop" => term_after_stop_role(&dir),
        "first-signal" => first_signal_role(&dir),
        "sighup-kept" => sighup_kept_role(&dir),
        "tokio" => tokio_role(&dir),
        "threads" => threads_role(&dir),
        "notify" => notify_role(&dir),
        "fork-holds" => fork_holds_role(&dir),
        "child-signal" => child_signal_role(&dir),
        "child-waits" => child_waits_role(&dir),
        "child-drops" => child_drops_role(&dir),
        "memory" => memory_role(&dir),
        "ignored-hup" => ignored_hup_role(&dir),
        "foreign-action" => foreign_action_role(&dir),
        other => panic!("unknown role {other}"),
    }
}

fn builder(dir: &std::path::Path, name: &str) -> rdaemon::Builder {
    Daemon::builder(name).pid_dir(dir)
}

/// Starts, forks; the child drops its copy of the Daemon and exits. The
/// parent's slot must be untouched.
fn fork_role(dir: &std::path::Path) {
    let mut d = builder(dir, "fork").build().unwrap();
    d.start().unwrap();
    let file = d.pid_file().unwrap();
    // SAFETY: the child only drops the Daemon (no locks are held by other
    // threads of this single-threaded role at this point) and _exits.
    match unsafe { libc::fork() } {
        0 => {
            drop(d);
            // SAFETY: ends the child without running the parent's atexit
            // handlers or flushing its stdio buffers twice.
            unsafe { libc::_exit(0) };
        }
        -1 => panic!("fork failed"),
        child => {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(child, &mut status, 0) };
            assert_eq!(r, child);
        }
    }
    println!("file-exists={}", file.exists());
    let mut second = builder(dir, "fork").build().unwrap();
    println!("second-start-ok={}", second.start().is_ok());
    println!("heartbeat={}", d.heartbeat());
    d.stop().unwrap();
    println!("file-after-stop={}", file.exists());
}

/// Forks; the child runs `body` and `_exit`s with 0 (unless `body` ends
/// it). An `alarm` of a minute ends a child that would otherwise hang.
fn fork_child(body: impl FnOnce()) -> i32 {
    // SAFETY: the roles are single-threaded apart from the test harness's
    // idle main thread; the child runs `body` and _exits.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: alarm(2) has no preconditions.
            unsafe { libc::alarm(60) };
            body();
            // SAFETY: ends the child without running the parent's atexit
            // handlers or flushing its stdio buffers twice.
            unsafe { libc::_exit(0) }
        }
        -1 => panic!("fork failed"),
        child => child,
    }
}

/// Reaps `child`; its wait status.
fn reap(child: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(r, child);
    status
}

/// Whether the stop token's descriptor is readable right now.
fn readable(token: &rdaemon::StopToken) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        token.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() > 0
}

/// Points stdout and stderr at /dev/null, so that a child that outlives
/// the role does not keep the test's pipes open.
fn silence() {
    let null = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: dup2(2) onto the standard descriptors, from one we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(null.as_raw_fd(), 2);
    }
}

/// Starts with max_peers(1), forks a child that keeps running (holding the
/// inherited lock), and stops. The slot must stay held: files in place,
/// a second start refused.
fn fork_holds_role(dir: &std::path::Path) {
    let mut d = builder(dir, "held").max_peers(1).build().unwrap();
    d.start().unwrap();
    let file = d.pid_file().unwrap();
    let child = fork_child(|| {
        silence();
        d.stop().unwrap();
        loop {
            // SAFETY: pause(2) has no preconditions; SIGTERM (default
            // again after the drop) or the alarm ends the child.
            unsafe { libc::pause() };
        }
    });
    println!("child={child}");
    d.stop().unwrap();
    println!("file-after-stop={}", file.exists());
    let mut second = builder(dir, "held").max_peers(1).build().unwrap();
    println!("second-start-ok={}", second.start().is_ok());
}

/// A child forked after start() receives stop signals; the parent's token
/// descriptor must not become readable (the parent was not stopped).
fn child_signal_role(dir: &std::path::Path) {
    let mut d = builder(dir, "childsig").build().unwrap();
    d.start().unwrap();
    let token = d.stop_token();
    let child = fork_child(|| {
        // SAFETY: raise(3) has no preconditions; both are stop signals
        // whose (inherited) actions run in this child.
        unsafe {
            libc::raise(libc::SIGHUP);
            libc::raise(libc::SIGTERM);
        }
    });
    let status = reap(child);
    println!("child-exited={}", libc::WIFEXITED(status));
    println!("parent-readable={}", readable(&token));
    println!("parent-stopped={}", token.is_stopped());
    println!("heartbeat={}", d.heartbeat());
    // SAFETY: raise(3) has no preconditions; SIGTERM is caught.
    unsafe { libc::raise(libc::SIGTERM) };
    println!("own-term readable={}", readable(&token));
    println!("reason-before-heartbeat={:?}", d.stop_reason());
    println!("after heartbeat={}", d.heartbeat());
    d.stop().unwrap();
}

/// A child waits on its copy of the token in a loop while the parent gets
/// SIGTERM: the parent's descriptor must stay readable.
fn child_waits_role(dir: &std::path::Path) {
    use std::io::{Read, Write};
    let mut d = builder(dir, "childwait").build().unwrap();
    d.start().unwrap();
    let token = d.stop_token();
    let (mut go, mut go_rx) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = fork_child(|| {
        let mut byte = [0u8];
        go_rx.read_exact(&mut byte).unwrap();
        // The parent's stop is pending on the shared socket now.
        for _ in 0..3 {
            token.wait_timeout(std::time::Duration::from_millis(50));
        }
    });
    // SAFETY: raise(3) has no preconditions; SIGTERM is caught.
    unsafe { libc::raise(libc::SIGTERM) };
    println!("readable-before={}", readable(&token));
    go.write_all(&[1]).unwrap();
    let status = reap(child);
    println!("child-exited={}", libc::WIFEXITED(status));
    println!("readable-after={}", readable(&token));
    println!("woken={}", token.wait_timeout(std::time::Duration::ZERO));
    d.stop().unwrap();
}

/// A child drops its copy of the Daemon, then gets SIGTERM: it must die of
/// it (the default action is back in the child).
fn child_drops_role(dir: &std::path::Path) {
    let mut d = builder(dir, "childdrop").build().unwrap();
    d.start().unwrap();
    let child = fork_child(|| {
        d.stop().unwrap();
        // SAFETY: raise(3) has no preconditions.
        unsafe { libc::raise(libc::SIGTERM) };
    });
    let status = reap(child);
    let killed_by = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    println!("child-killed-by={killed_by:?}");
    println!("parent heartbeat={}", d.heartbeat());
    d.stop().unwrap();
}

/// The resident set size of this process, in bytes, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf(3) has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// One job allocates (and touches) 256 KiB and keeps it; the memory
/// ceiling, 64 MiB above the start, must stop the loop soon after it is
/// passed.
fn memory_role(dir: &std::path::Path) {
    const JOB: usize = 256 << 10;
    let limit = rss_bytes() + (64 << 20);
    let mut d = builder(dir, "memory")
        .memory_limit(limit)
        .lease(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    d.start().unwrap();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    // A safety net: 4096 jobs are 1 GiB.
    while kept.len() < 4096 && d.heartbeat() {
        // One write per page makes it resident, fast even in a debug
        // build (the ceiling is to be found by the job count, not by the
        // once-a-second check).
        let mut job = vec![0u8; JOB];
        for byte in job.iter_mut().step_by(4096) {
            *byte = 1;
        }
        kept.push(job);
    }
    let over = rss_bytes().saturating_sub(limit);
    println!("reason={:?}", d.stop_reason().map(|r| r.to_string()));
    println!(
        "memory-stop={}",
        matches!(
            d.stop_reason(),
            Some(rdaemon::StopReason::MemoryLimit { .. })
        )
    );
    println!("over-mib={}", over >> 20);
    d.stop().unwrap();
}

/// SIGHUP ignored when start() runs (as under nohup) stays ignored: no stop
/// signal for this run, and still ignored after stop().
fn ignored_hup_role(dir: &std::path::Path) {
    // SAFETY: signal(2) with SIG_IGN, before any thread of ours handles it.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let mut d = builder(dir, "nohup").build().unwrap();
    d.start().unwrap();
    // SAFETY: raise(3) has no preconditions.
    unsafe { libc::raise(libc::SIGHUP) };
    println!("heartbeat={}", d.heartbeat());
    d.stop().unwrap();
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGHUP) };
    println!("survived-hup");
}

/// Code registers its own SIGTERM action with signal-hook while the daemon
/// runs; stop() must leave it working.
fn foreign_action_role(dir: &std::path::Path) {
    let mut d = builder(dir, "foreign").build().unwrap();
    d.start().unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGTERM, flag.clone()).unwrap();
    d.stop().unwrap();
    // SAFETY: raise(3) has no preconditions.
    unsafe { libc::raise(libc::SIGTERM) };
    let seen = flag.load(std::sync::atomic::Ordering::SeqCst);
    println!("survived-term flag={seen}");
}

/// After stop(), SIGTERM must end the process as it would without rdaemon.
fn term_after_stop_role(dir: &std::path::Path) {
    let mut d = builder(dir, "termstop").build().unwrap();
    d.start().unwrap();
    d.stop().unwrap();
    // A second run catches SIGTERM again (signal-hook's handler is put
    // back), and its stop() gives the default action back again.
    d.start().unwrap();
    // SAFETY: raise(3) has no preconditions; SIGTERM is caught.
    unsafe { libc::raise(libc::SIGTERM) };
    println!("second run: heartbeat={}", d.heartbeat());
    d.stop().unwrap();
    println!("stopped");
    // SAFETY: raise(3) has no preconditions.
    unsafe { libc::raise(libc::SIGTERM) };
    println!("survived SIGTERM");
}

/// Two stop signals: the reason is the first.
fn first_signal_role(dir: &std::path::Path) {
    let mut d = builder(dir, "first").build().unwrap();
    d.start().unwrap();
    // SAFETY: raise(3) has no preconditions; both signals are caught.
    unsafe {
        libc::raise(libc::SIGHUP);
        libc::raise(libc::SIGTERM);
    }
    println!("heartbeat={}", d.heartbeat());
    println!("reason={:?}", d.stop_reason());
    d.stop().unwrap();
}

/// stop_signals(&[SIGTERM]): SIGHUP stays the program's own.
fn sighup_kept_role(dir: &std::path::Path) {
    let reload = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGHUP, reload.clone()).unwrap();
    let mut d = builder(dir, "hup")
        .stop_signals(&[libc::SIGTERM])
        .build()
        .unwrap();
    d.start().unwrap();
    // SAFETY: raise(3) has no preconditions; SIGHUP has the program's own
    // handler.
    unsafe { libc::raise(libc::SIGHUP) };
    let reloaded = reload.load(std::sync::atomic::Ordering::SeqCst);
    println!("after-hup heartbeat={} reload={reloaded}", d.heartbeat());
    // SAFETY: as above; SIGTERM is a stop signal.
    unsafe { libc::raise(libc::SIGTERM) };
    println!("after-term heartbeat={}", d.heartbeat());
    println!("reason={:?}", d.stop_reason());
    d.stop().unwrap();
}

/// A tokio worker idle in an await, woken by `rdaemon --stop`'s SIGTERM
/// through the stop token's descriptor.
fn tokio_role(dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut d = builder(dir, "tokio").build().unwrap();
        d.start().unwrap();
        // SAFETY: a StopToken's descriptor stays open, and the same, for
        // as long as the token lives (its documented guarantee).
        let stop = unsafe { tokio::io::unix::AsyncFd::register(d.stop_token()) }.unwrap();
        // A socket nobody writes to: the worker would wait forever.
        let (idle, _peer) = tokio::net::UnixDatagram::pair().unwrap();
        let mut buf = [0u8; 16];
        println!("waiting");
        tokio::select! {
            _ = stop.readable() => println!("woken by the token"),
            _ = idle.recv(&mut buf) => println!("got a datagram?"),
        }
        println!("heartbeat={}", d.heartbeat());
        println!("reason={:?}", d.stop_reason());
        d.stop().unwrap();
    });
}

/// Four threads polling is_stopped; the process receives a real SIGTERM.
fn threads_role(dir: &std::path::Path) {
    let mut d = builder(dir, "threads").build().unwrap();
    d.start().unwrap();
    let started = std::sync::Arc::new(std::sync::Barrier::new(5));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = d.stop_token();
            let started = started.clone();
            std::thread::spawn(move || {
                started.wait();
                while !stop.is_stopped() {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    started.wait();
    // SAFETY: kill(2) to ourselves; SIGTERM is a stop signal.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let joined = workers.into_iter().filter_map(|w| w.join().ok()).count();
    println!("joined={joined}");
    println!("heartbeat={}", d.heartbeat());
    println!("reason={:?}", d.stop_reason());
    d.stop().unwrap();
}

/// READY=1, STATUS=, WATCHDOG=1 for a second of heartbeats, STOPPING=1.
fn notify_role(dir: &std::path::Path) {
    let mut d = builder(dir, "notify").build().unwrap();
    d.start().unwrap();
    d.notify_ready().unwrap();
    d.notify_status("3 jobs done\nsecond line").unwrap();
    println!("status-written");
    let began = std::time::Instant::now();
    let mut beats = 0u64;
    while began.elapsed() < std::time::Duration::from_secs(1) {
        assert!(d.heartbeat());
        beats += 1;
    }
    println!("beats={beats}");
    d.stop().unwrap();
}

#[test]
fn a_forked_child_dropping_the_daemon_leaves_the_parents_slot_alone() {
    let env = Env::new();
    let out = play(&env, "fork");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("file-exists=true"), "{text}");
    assert!(text.contains("second-start-ok=false"), "{text}");
    assert!(text.contains("heartbeat=true"), "{text}");
    // The parent itself still cleans up.
    assert!(text.contains("file-after-stop=false"), "{text}");
    assert_eq!(env.check("fork"), 3);
}

#[test]
fn sigterm_after_stop_ends_the_process() {
    let env = Env::new();
    let out = play(&env, "term-after-stop");
    let text = stdout(&out);
    assert!(text.contains("second run: heartbeat=false"), "{out:?}");
    assert!(text.contains("stopped"), "{out:?}");
    assert!(!text.contains("survived"), "{text}");
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");
}

#[test]
fn the_first_stop_signal_is_the_reason() {
    let env = Env::new();
    let out = play(&env, "first-signal");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("heartbeat=false"), "{text}");
    assert!(text.contains("reason=Some(Signal(1))"), "{text}");
}

#[test]
fn sighup_stays_the_programs_own_under_stop_signals_term() {
    let env = Env::new();
    let out = play(&env, "sighup-kept");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("after-hup heartbeat=true reload=true"),
        "{text}"
    );
    assert!(text.contains("after-term heartbeat=false"), "{text}");
    assert!(text.contains("reason=Some(Signal(15))"), "{text}");
}

#[test]
fn a_tokio_worker_idle_in_an_await_is_woken_by_rdaemon_stop() {
    let env = Env::new();
    let role = Running::start(&env, "tokio");
    role.expect_line("waiting");
    // The real CLI: proves the lock holder, sends SIGTERM, waits.
    let stop = env.run(["--stop", "tokio", "--timeout", "30"]);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    role.expect_line("woken by the token");
    role.expect_line("heartbeat=false");
    let reason = role.expect_line("reason=");
    assert_eq!(reason, "reason=Some(Signal(15))");
    let status = role.finish();
    assert!(status.success(), "not SIGKILLed: {status:?}");
    assert_eq!(env.check("tokio"), 3);
}

#[test]
fn four_threads_see_a_real_sigterm() {
    let env = Env::new();
    let out = play(&env, "threads");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("joined=4"), "{text}");
    assert!(text.contains("heartbeat=false"), "{text}");
    assert!(text.contains("reason=Some(Signal(15))"), "{text}");
}

/// A fake service manager: a datagram socket read as fast as messages
/// come (the kernel queues only `net.unix.max_dgram_qlen`, often 10).
struct FakeManager {
    path: PathBuf,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl FakeManager {
    fn bind(env: &Env, file: &str) -> FakeManager {
        let path = env.path(file);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished = done.clone();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if finished.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            got
        });
        FakeManager { path, done, reader }
    }

    /// Everything received, in order (call once the sender has exited).
    fn received(self) -> Vec<String> {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.reader.join().unwrap()
    }
}

#[test]
fn sd_notify_reaches_a_fake_notify_socket() {
    let env = Env::new();
    let manager = FakeManager::bind(&env, "notify.sock");
    // A 200 ms watchdog: a ping is due every 100 ms of heartbeats.
    let out = play_with(
        &env,
        "notify",
        &[
            ("NOTIFY_SOCKET", manager.path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("200000")),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let got = manager.received();
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    assert_eq!(got.get(1).map(String::as_str), Some("STATUS=3 jobs done"));
    assert_eq!(got.last().map(String::as_str), Some("STOPPING=1"));
    let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    // One second of heartbeats: never more than one ping per 100 ms (plus
    // the coarse clock's slack); on a loaded machine possibly fewer, but
    // the loop runs for the whole second, so several.
    assert!((3..=11).contains(&pings), "{pings} pings: {got:?}");
    assert_eq!(got.len(), pings + 3, "nothing else: {got:?}");
}

#[test]
fn no_watchdog_pings_for_another_process_or_without_watchdog_usec() {
    let env = Env::new();
    for (i, watchdog) in [
        vec![],
        vec![
            ("WATCHDOG_USEC", OsStr::new("200000")),
            ("WATCHDOG_PID", OsStr::new("1")),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let manager = FakeManager::bind(&env, &format!("notify{i}.sock"));
        let mut vars = vec![("NOTIFY_SOCKET", manager.path.as_os_str())];
        vars.extend(watchdog);
        let out = play_with(&env, "notify", &vars);
        assert!(out.status.success(), "{out:?}");
        let got = manager.received();
        assert_eq!(got, ["READY=1", "STATUS=3 jobs done", "STOPPING=1"]);
    }
}

#[test]
fn without_notify_socket_notify_calls_do_nothing_but_status_shows_the_text() {
    let env = Env::new();
    let role = Running::start(&env, "notify");
    role.expect_line("status-written");
    // The STATUS= text is published for --status as well.
    let shown = poll_until(DEADLINE, || {
        let slots = env.status_json("notify");
        slots
            .first()
            .map(|s| s["status_text"].clone())
            .filter(|t| !t.is_null())
    });
    let status = role.finish();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        shown.and_then(|t| t.as_str().map(String::from)).as_deref(),
        Some("3 jobs done")
    );
}

#[test]
fn a_child_forked_after_start_keeps_the_slot_held_after_the_starter_stops() {
    let env = Env::new();
    let out = play(&env, "fork-holds");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    let child: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("child="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no child PID: {text}"));
    let alive_then = alive(child);
    // The real CLI ends the holders of the orphaned slot, whatever else
    // fails below.
    let check = env.check("held");
    let stop = env.run(["--stop", "held", "--timeout", "30"]);
    wait_until("the forked child ends", || !alive(child));
    assert!(alive_then, "the child died early: {text}");
    assert!(text.contains("file-after-stop=true"), "{text}");
    assert!(text.contains("second-start-ok=false"), "no N+1: {text}");
    assert_eq!(check, 150, "orphaned while the child holds the lock");
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    assert_eq!(env.check("held"), 3);
}

#[test]
fn a_stop_signal_in_a_forked_child_does_not_wake_the_parents_token() {
    let env = Env::new();
    let out = play(&env, "child-signal");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("child-exited=true"), "{text}");
    assert!(text.contains("parent-readable=false"), "{text}");
    assert!(text.contains("parent-stopped=false"), "{text}");
    assert!(text.contains("heartbeat=true"), "{text}");
    assert!(text.contains("own-term readable=true"), "{text}");
    assert!(
        text.contains("reason-before-heartbeat=Some(Signal(15))"),
        "{text}"
    );
    assert!(text.contains("after heartbeat=false"), "{text}");
}

#[test]
fn a_forked_child_waiting_on_its_token_leaves_the_parents_wakeup_alone() {
    let env = Env::new();
    let out = play(&env, "child-waits");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("readable-before=true"), "{text}");
    assert!(text.contains("child-exited=true"), "{text}");
    assert!(text.contains("readable-after=true"), "{text}");
    assert!(text.contains("woken=true"), "{text}");
}

#[test]
fn a_forked_child_that_dropped_the_daemon_dies_of_sigterm() {
    let env = Env::new();
    let out = play(&env, "child-drops");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!("child-killed-by=Some({})", libc::SIGTERM)),
        "{text}"
    );
    assert!(text.contains("parent heartbeat=true"), "{text}");
}

#[test]
fn the_memory_ceiling_is_passed_by_at_most_64_jobs() {
    let env = Env::new();
    let out = play(&env, "memory");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("memory-stop=true"), "{text}");
    let over: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("over-mib="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overshoot: {text}"));
    // 64 jobs of 256 KiB are 16 MiB; before, 1024 jobs were 256 MiB.
    assert!(over <= 24, "{over} MiB over the ceiling: {text}");
}

#[test]
fn a_stop_signal_ignored_at_start_stays_ignored() {
    let env = Env::new();
    let out = play(&env, "ignored-hup");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("heartbeat=true"), "{text}");
    assert!(text.contains("survived-hup"), "{text}");
}

#[test]
fn stop_leaves_signal_actions_registered_by_other_code_working() {
    let env = Env::new();
    let out = play(&env, "foreign-action");
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("survived-term flag=true"), "{text}");
}
