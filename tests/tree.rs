//! Issue 12: the supervisor owns COMMAND's whole process tree. Real
//! processes that escape a process group (`setsid`, double forks,
//! `setpgid`), self-daemonizing servers, an inherited signal mask, a
//! SIGKILLed supervisor, rdaemon as PID 1. Every program a test starts
//! carries a marker (see `common::tree`), so the tests count processes in
//! `/proc`, and a `Sweep` kills whatever is left when a test ends.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::tree::*;
use common::*;

/// Starts NAME with `opts` and `command`; returns the exit code.
fn start_code(env: &Env, name: &str, opts: &[&str], command: &[&str]) -> i32 {
    let mut args = vec!["--name", name];
    args.extend_from_slice(opts);
    args.push("--");
    args.extend_from_slice(command);
    let out = run_within(env, DEADLINE, &args);
    let c = code(&out);
    if c != 0 && c != 75 {
        eprintln!(
            "start of {name} exited {c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c
}

/// (1) A `setsid`'d background child outlives `sh`: it must keep the slot
/// held (or be stopped with the tree when COMMAND exits), and a second
/// start under `--max-peers 1` must never run a second copy.
#[test]
fn setsid_leftover_never_makes_two_copies() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let m = mark("setsid");
    let sleep = marked_sleep(&env, &m);
    let script = format!("setsid {} 300 & sleep 0.3", sleep.display());
    let cmd = ["sh", "-c", script.as_str()];
    assert_eq!(start_code(&env, "ss", &["--max-peers", "1"], &cmd), 0);
    wait_until("the setsid'd sleep runs", || marked(&m).len() == 1);
    // Keep starting identical copies; every start either finds the slot
    // held (75) or takes a slot nobody of the tree holds any more.
    let mut took = 0;
    let done = poll_until(Duration::from_secs(60), || {
        let r = start_code(&env, "ss", &["--max-peers", "1"], &cmd);
        assert!(r == 0 || r == 75, "a start exited {r}");
        if r == 0 {
            took += 1;
        }
        for _ in 0..10 {
            let check = env.check("ss");
            let n = marked(&m).len();
            assert!(
                n <= 1,
                "{n} copies of the setsid'd sleep run under --max-peers 1 (pids {:?})",
                marked(&m)
            );
            if check == 3 {
                assert_eq!(
                    n, 0,
                    "--check says 3 while the setsid'd sleep holds the slot"
                );
            }
            std::thread::yield_now();
        }
        (took >= 2).then_some(())
    });
    assert!(
        done.is_some(),
        "the slot was never free again after COMMAND exited ({took} later starts succeeded)"
    );
    wait_until("the last run's leftover stopped and the slot freed", || {
        marked(&m).is_empty() && env.check("ss") == 3
    });
}

/// (2) `--stop` ends a `setsid`'d child, a double-forked grandchild and a
/// child in its own process group, and exits 0 only once none is left.
#[test]
fn stop_ends_every_descendant() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let names = [
        mark("stop-setsid"),
        mark("stop-dfork"),
        mark("stop-pgrp"),
        mark("stop-main"),
    ];
    let p: Vec<_> = names.iter().map(|n| marked_sleep(&env, n)).collect();
    let script = format!(
        "setsid {a} 300 & ( {b} 300 & ) ; \
         {PYTHON} -c 'import os, sys; os.setpgid(0, 0); os.execv(sys.argv[1], sys.argv[1:])' {c} 300 & \
         exec {main} 300",
        a = p[0].display(),
        b = p[1].display(),
        c = p[2].display(),
        main = p[3].display()
    );
    env.start("tree", &["--stop-timeout", "5"], &["sh", "-c", &script]);
    wait_until("all four descendants run", || {
        names.iter().all(|n| marked(n).len() == 1)
    });
    let main = marked(&names[3])[0];
    let regrouped = marked(&names[2])[0];
    assert_ne!(
        pgid(regrouped),
        pgid(main),
        "the setpgid child has its own group"
    );
    stop(&env, "tree");
    let left: Vec<_> = names
        .iter()
        .filter(|n| !marked(n).is_empty())
        .cloned()
        .collect();
    assert!(
        left.is_empty(),
        "--stop exited 0 but these survived: {left:?}"
    );
    assert_eq!(env.check("tree"), 3);
}

/// (3a) `--memory-limit` counts a `setsid`'d child and frees it: after the
/// trip the child is gone, not re-parented to init with its memory.
#[test]
fn memory_limit_frees_setsid_child() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let hog_m = mark("memhog");
    let main_m = mark("memmain");
    let hog = memory_hog(&env, &hog_m);
    let main = marked_sleep(&env, &main_m);
    let grown = env.path("grown");
    let script = format!(
        "setsid {PYTHON} {} {} & exec {} 300",
        hog.display(),
        grown.display(),
        main.display()
    );
    env.start(
        "mem",
        &["--memory-limit", "40M", "--stop-timeout", "2"],
        &["sh", "-c", &script],
    );
    wait_until("the setsid'd child allocated", || {
        read(&grown).contains("grown")
    });
    wait_until(
        "the memory-limit stop ends the setsid'd child, COMMAND and the slot",
        || {
            marked(&hog_m).is_empty()
                && marked(&main_m).is_empty()
                && matches!(env.check("mem"), 1 | 3)
        },
    );
}

/// (3b) With `--respawn`, each memory-limit restart leaves no old hog
/// behind: never two at once.
#[test]
fn memory_limit_respawn_never_piles_up() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let hog_m = mark("memhog-re");
    let hog = memory_hog(&env, &hog_m);
    let runs = env.path("runs");
    let script = format!(
        "setsid {PYTHON} {} {} & while :; do sleep 0.05; done",
        hog.display(),
        runs.display()
    );
    env.start(
        "memre",
        &[
            "--memory-limit",
            "40M",
            "--respawn",
            "--respawn-delay",
            "0.01",
            "--max-respawns",
            "100",
            "--stop-timeout",
            "2",
        ],
        &["sh", "-c", &script],
    );
    wait_until("three memory-limit runs, never two hogs at once", || {
        let n = marked(&hog_m).len();
        assert!(
            n <= 1,
            "{n} memory hogs alive at once: the old ones were not stopped"
        );
        read(&runs).lines().count() >= 3
    });
    stop(&env, "memre");
    assert!(marked(&hog_m).is_empty(), "--stop left a hog running");
}

/// (4) A caller that blocked TERM/INT/HUP and ignored some signals before
/// exec'ing rdaemon: COMMAND starts with an empty mask and default
/// dispositions, HUP is forwarded and `--stop` is graceful.
#[test]
fn inherited_signal_mask_is_reset() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let wrapper = py_script(
        &env,
        "blocking-wrapper",
        "import os, signal, sys\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})\n\
         for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\n\
         os.execv(sys.argv[1], sys.argv[1:])",
    );
    let got = env.path("got");
    let mask = env.path("mask");
    let log = env.path("mask.log");
    let worker_m = mark("maskworker");
    // The mask is read with shell builtins: a `grep` that dash starts with
    // vfork would read dash's mask while dash blocks every signal around
    // that vfork (a race, not rdaemon's mask).
    let worker = sh_script(
        &env,
        &worker_m,
        &format!(
            "while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k $v\";; esac; done < /proc/$$/status > {mask}.tmp; mv {mask}.tmp {mask}\n\
             trap 'echo HUP >> {got}' HUP\n\
             trap 'echo TERM >> {got}; exit 0' TERM\n\
             echo ready >> {got}\n\
             while :; do sleep 0.05; done",
            mask = mask.display(),
            got = got.display()
        ),
    );
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&wrapper)
        .arg(bin())
        .args([
            "--name",
            "mask",
            "--stop-timeout",
            "5",
            "--log",
            s(&log),
            "--",
        ])
        .arg(&worker)
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NOTIFY_SOCKET");
    let out = output_within(&env, &mut cmd, DEADLINE);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("COMMAND recorded its signal mask", || mask.exists());
    let text = read(&mask);
    // Signals 32 and 33 are glibc's own (NPTL cancellation, setxid): a
    // glibc program cannot change them, so they are left out.
    let glibc_own = sig_bit(32) | sig_bit(33);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .map(|v| v & !glibc_own)
    };
    // The wrapper blocked TERM, INT and HUP and ignored HUP, TERM, QUIT and
    // USR1 (Python itself ignores PIPE and XFSZ).
    assert_eq!(
        field("SigBlk"),
        Some(0),
        "COMMAND inherited a blocked mask:\n{text}"
    );
    assert_eq!(
        field("SigIgn"),
        Some(0),
        "COMMAND inherited ignored signals:\n{text}"
    );
    wait_until("COMMAND set its traps", || read(&got).contains("ready"));
    let sup = env.read_pid("mask", 1).expect("a PID file");
    kill(sup, libc::SIGHUP);
    wait_until("HUP forwarded to COMMAND", || read(&got).contains("HUP"));
    stop(&env, "mask");
    assert!(
        read(&got).contains("TERM"),
        "COMMAND never saw SIGTERM: {}",
        read(&got)
    );
    let logged = read(&log);
    assert!(
        !logged.contains("SIGKILL"),
        "the stop was not graceful:\n{logged}"
    );
    assert!(marked(&worker_m).is_empty());
}

/// (5) A double-forked grandchild is re-parented to the supervisor (a
/// child subreaper), which reaps it and stops it on `--stop`.
#[test]
fn double_forked_grandchild_belongs_to_the_supervisor() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let g_m = mark("grandchild");
    let main_m = mark("gc-main");
    let g = marked_sleep(&env, &g_m);
    let main = marked_sleep(&env, &main_m);
    let script = format!("( {} 300 & ) ; exec {} 300", g.display(), main.display());
    env.start("gc", &["--stop-timeout", "5"], &["sh", "-c", &script]);
    wait_until("the grandchild runs", || marked(&g_m).len() == 1);
    let sup = env.read_pid("gc", 1).expect("a PID file");
    let grandchild = marked(&g_m)[0];
    let parent = poll_until(DEADLINE, || ppid(grandchild).filter(|&p| p == sup));
    assert!(
        parent.is_some(),
        "the orphaned grandchild's parent is {:?}, not the supervisor {sup}",
        ppid(grandchild)
    );
    stop(&env, "gc");
    assert!(
        marked(&g_m).is_empty(),
        "--stop left the grandchild running"
    );
    assert!(marked(&main_m).is_empty());
}

/// A self-daemonizing server for `--forking`: the launcher starts the
/// server (which calls `setsid()`), writes its PID to `pidfile` and exits
/// 0. The server appends its PID to `runs`, and takes 80 MB once `grow`
/// exists (removing it, so its successor stays small).
struct Forking {
    launcher: std::path::PathBuf,
    server_m: String,
    pidfile: std::path::PathBuf,
    runs: std::path::PathBuf,
    grow: std::path::PathBuf,
}

fn forking_server(env: &Env, tag: &str) -> Forking {
    let server_m = mark(&format!("{tag}-server"));
    let server = py_script(
        env,
        &server_m,
        "import os, sys, time\n\
         os.setsid()\n\
         grow, runs = sys.argv[1], sys.argv[2]\n\
         with open(runs, 'a') as f:\n    f.write('%d\\n' % os.getpid())\n\
         hold = None\n\
         while True:\n    \
             if hold is None and os.path.exists(grow):\n        \
                 os.unlink(grow)\n        \
                 hold = b'x' * (80 << 20)\n    \
             time.sleep(0.05)",
    );
    let pidfile = env.path(&format!("{tag}.pidfile"));
    let runs = env.path(&format!("{tag}.runs"));
    let grow = env.path(&format!("{tag}.grow"));
    let launcher = sh_script(
        env,
        &mark(&format!("{tag}-launcher")),
        &format!(
            "{PYTHON} {} {} {} < /dev/null &\necho $! > {}\nexit 0",
            server.display(),
            grow.display(),
            runs.display(),
            pidfile.display()
        ),
    );
    Forking {
        launcher,
        server_m,
        pidfile,
        runs,
        grow,
    }
}

impl Forking {
    fn opts<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--forking", "--pidfile", s(&self.pidfile)];
        v.extend_from_slice(extra);
        v
    }

    /// The server's PID from the PID file it wrote.
    fn main_pid(&self) -> Option<i32> {
        read(&self.pidfile).trim().parse().ok()
    }
}

/// Waits until `--status` shows the server as the slot's running child
/// (child_pid, or main_pid where a status shows both).
fn wait_supervising(env: &Env, name: &str, f: &Forking) -> i32 {
    let mut seen = None;
    let pid = poll_until(DEADLINE, || {
        let pid = f.main_pid()?;
        seen = slot1(env, name);
        let st = seen.as_ref()?;
        let shown = st["child_pid"] == pid || st["main_pid"] == pid;
        // The server records itself once it runs its own code.
        let recorded = read(&f.runs).lines().any(|l| l == pid.to_string());
        (alive(pid) && recorded && st["state"] == "running" && shown).then_some(pid)
    });
    pid.unwrap_or_else(|| {
        panic!(
            "--status never showed the forked server {:?} as the running child: {seen:?}",
            f.main_pid()
        )
    })
}

/// Waits until a server other than `old` runs and the slot is running
/// again; never two servers at once.
fn wait_fresh_server(env: &Env, name: &str, f: &Forking, old: i32) {
    wait_until("the old server gone and a fresh one supervised", || {
        let n = marked(&f.server_m).len();
        assert!(n <= 1, "{n} servers at once");
        let fresh = f.main_pid().filter(|&p| p != old && alive(p));
        !alive(old)
            && fresh.is_some_and(|pid| {
                slot1(env, name).is_some_and(|st| {
                    st["state"] == "running" && (st["child_pid"] == pid || st["main_pid"] == pid)
                })
            })
    });
}

/// (6a) `--forking --pidfile`: the launcher's exit 0 ends the start, the
/// server it left is supervised (`--status`, `--check`) and `--stop` stops it.
#[test]
fn forking_server_is_supervised_and_stopped() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let f = forking_server(&env, "fk");
    let code = start_code(
        &env,
        "fk",
        &f.opts(&["--stop-timeout", "2"]),
        &[s(&f.launcher)],
    );
    assert_eq!(code, 0, "a --forking start failed");
    let server = wait_supervising(&env, "fk", &f);
    assert_eq!(env.check("fk"), 0, "the forked server counts as running");
    assert_eq!(marked(&f.server_m), vec![server]);
    stop(&env, "fk");
    assert!(
        marked(&f.server_m).is_empty(),
        "--stop left the forked server running"
    );
    assert_eq!(env.check("fk"), 3);
}

/// Starts a `--forking --respawn` server with `extra` options, waits
/// until it is supervised, does `disturb` to it and waits for a fresh
/// server to be supervised in its place; then stops it.
fn forking_replaced(tag: &str, extra: &[&str], disturb: impl FnOnce(&Forking, i32)) {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let f = forking_server(&env, tag);
    let mut more = vec![
        "--respawn",
        "--respawn-delay",
        "0.01",
        "--stop-timeout",
        "2",
    ];
    more.extend_from_slice(extra);
    let opts = f.opts(&more);
    let c = start_code(&env, tag, &opts, &[s(&f.launcher)]);
    assert_eq!(c, 0, "a --forking --respawn start failed");
    let first = wait_supervising(&env, tag, &f);
    // The server records itself only once Python is up, after the
    // launcher wrote its PID: wait for that before counting runs.
    wait_until("the server recorded its run", || {
        read(&f.runs).lines().count() == 1
    });
    disturb(&f, first);
    wait_fresh_server(&env, tag, &f, first);
    // The launcher writes the PID file before the server records itself.
    let recorded = poll_until(DEADLINE, || {
        (read(&f.runs).lines().count() >= 2).then_some(())
    });
    assert!(
        recorded.is_some(),
        "the fresh server never recorded itself: runs {:?}, PID file {:?}, servers {:?}",
        read(&f.runs),
        f.main_pid(),
        marked(&f.server_m)
    );
    assert_eq!(read(&f.runs).lines().count(), 2, "exactly one fresh server");
    stop(&env, tag);
    assert!(marked(&f.server_m).is_empty());
}

/// (6b) `--forking --respawn`: when the server dies, the launcher runs
/// again and the new server is supervised; never two servers.
#[test]
fn forking_server_is_respawned() {
    forking_replaced("fkre", &[], |_, first| kill(first, libc::SIGKILL));
}

/// (6c) `--forking --memory-limit`: the server's memory counts; the trip
/// stops it and `--respawn` starts a fresh one.
#[test]
fn forking_server_memory_limit_applies() {
    forking_replaced("fkmem", &["--memory-limit", "40M"], |f, _| {
        std::fs::write(&f.grow, "").unwrap()
    });
}

/// A classic double-forking daemon (daemon(3), python-daemon): the first
/// process exits at once, the second calls `setsid()` and exits once it
/// forked the daemon, which writes its PID to `argv[1]` (if given) only
/// ~200 ms later. With `pause`, each process sleeps 100 ms before it
/// forks (so the intermediate looks settled, as a slow one would). The
/// daemon also records its PID in `TAG.self` (see [`daemon_self`]).
fn classic_daemon(env: &Env, tag: &str, pause: bool) -> (std::path::PathBuf, String) {
    let m = mark(&format!("{tag}-daemon"));
    let me = env.path(&format!("{tag}.self"));
    let script = py_script(
        env,
        &m,
        &format!(
            "import os, sys, time\n\
         pause = {}\n\
         pf = sys.argv[1] if len(sys.argv) > 1 else None\n\
         time.sleep(pause)\n\
         if os.fork() > 0:\n    os._exit(0)\n\
         os.setsid()\n\
         time.sleep(pause)\n\
         if os.fork() > 0:\n    os._exit(0)\n\
         time.sleep(0.2)\n\
         if pf:\n    \
             with open(pf + '.tmp', 'w') as f:\n        f.write('%d\\n' % os.getpid())\n    \
             os.rename(pf + '.tmp', pf)\n\
         with open('{}', 'w') as f:\n    f.write('%d\\n' % os.getpid())\n\
         time.sleep(3000)",
            if pause { "0.1" } else { "0" },
            me.display()
        ),
    );
    (script, m)
}

/// The PID the classic daemon recorded, once it did.
fn daemon_self(env: &Env, tag: &str) -> Option<i32> {
    read(&env.path(&format!("{tag}.self"))).trim().parse().ok()
}

/// Starts the classic daemon under `--forking` (with `extra` options) and
/// checks the start waited for the real daemon: it runs once the start
/// returns, is the supervised main process, `--check` says 0, and
/// `--stop` ends it.
fn classic_daemon_is_supervised(tag: &str, with_pidfile: bool, pause: bool) {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let (script, m) = classic_daemon(&env, tag, pause);
    let pidfile = env.path(&format!("{tag}.pid"));
    let log = env.path(&format!("{tag}.log"));
    let mut opts = vec!["--forking", "--stop-timeout", "2", "--log", s(&log)];
    let mut cmd = vec![s(&script)];
    if with_pidfile {
        opts.extend_from_slice(&["--pidfile", s(&pidfile)]);
        cmd.push(s(&pidfile));
    }
    assert_eq!(
        start_code(&env, tag, &opts, &cmd),
        0,
        "the --forking start failed"
    );
    // The start reported success only once a main process was settled:
    // the daemon runs now (an intermediate may still be on its way out).
    assert!(
        !marked(&m).is_empty(),
        "the daemon is not running after the start"
    );
    let mut seen = Vec::new();
    let daemon = poll_until(DEADLINE, || {
        seen = marked(&m);
        let daemon = daemon_self(&env, tag)?;
        (seen == [daemon]).then_some(daemon)
    })
    .unwrap_or_else(|| {
        panic!(
            "not exactly the daemon {:?} running: {seen:?}; log: {}",
            daemon_self(&env, tag),
            read(&log)
        )
    });
    if with_pidfile {
        assert_eq!(read(&pidfile).trim(), daemon.to_string());
    }
    let mut st = None;
    let shown = poll_until(DEADLINE, || {
        st = slot1(&env, tag);
        let s = st.as_ref()?;
        (s["state"] == "running" && (s["child_pid"] == daemon || s["main_pid"] == daemon))
            .then_some(())
    });
    assert!(
        shown.is_some(),
        "the supervised main process is not the daemon {daemon}: {st:?}"
    );
    assert_eq!(env.check(tag), 0, "--check after a --forking start");
    // It stays supervised: not stopped as "what COMMAND left running".
    let text = read(&log);
    assert!(!text.contains("left running"), "{text}");
    assert!(alive(daemon));
    stop(&env, tag);
    assert!(marked(&m).is_empty(), "--stop left the daemon running");
    assert_eq!(env.check(tag), 3);
}

/// (6d) The defect: a classic double fork with `--pidfile` written after
/// the second fork. The supervisor waits for the PID file instead of
/// supervising the intermediate and killing the daemon when it exits.
#[test]
fn forking_classic_double_fork_with_pidfile() {
    classic_daemon_is_supervised("dfpf", true, false);
    classic_daemon_is_supervised("dfpfp", true, true);
}

/// (6e) The same without `--pidfile`: the intermediate that exits 0
/// leaving the daemon is not the end of the run; the daemon is picked
/// (again, when the intermediate paused before forking and was picked).
#[test]
fn forking_classic_double_fork_without_pidfile() {
    classic_daemon_is_supervised("dfnp", false, false);
    classic_daemon_is_supervised("dfnpp", false, true);
}

/// (6f) A `--pidfile` that never appears fails the start within
/// `--ready-timeout`, naming the file, and leaves nothing running.
#[test]
fn forking_pidfile_never_written_fails_the_start() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let (script, m) = classic_daemon(&env, "dfnever", false);
    let pidfile = env.path("never.pid");
    let began = std::time::Instant::now();
    let out = run_within(
        &env,
        DEADLINE,
        [
            "--name",
            "dfnever",
            "--forking",
            "--pidfile",
            s(&pidfile),
            "--ready-timeout",
            "1",
            "--stop-timeout",
            "2",
            "--",
            s(&script),
        ],
    );
    let took = began.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(code(&out), 0, "a start without its PID file succeeded");
    assert!(
        err.contains(s(&pidfile)),
        "the message names no file: {err}"
    );
    // Not before --ready-timeout; and within run_within's deadline, well
    // before the default 60 s, so at it.
    assert!(
        took >= Duration::from_secs(1),
        "failed after {took:?}, before --ready-timeout 1"
    );
    assert!(marked(&m).is_empty(), "the daemon was left running");
    assert_eq!(env.check("dfnever"), 3);
}

/// (7) `--respawn` with a COMMAND that backgrounds a child (plain `&` and
/// `setsid -f`) and exits: the copies never exceed N.
#[test]
fn respawn_of_self_backgrounding_command_never_exceeds_n() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let bg_m = mark("bg-amp");
    let ss_m = mark("bg-setsid");
    let bg = marked_sleep(&env, &bg_m);
    let ss = marked_sleep(&env, &ss_m);
    let script = format!(
        "{} 300 & setsid -f {} 300; sleep 0.3",
        bg.display(),
        ss.display()
    );
    let opts = [
        "--max-peers",
        "2",
        "--respawn",
        "--respawn-delay",
        "0.01",
        "--max-respawns",
        "100",
        "--stop-timeout",
        "2",
    ];
    for _ in 0..2 {
        env.start("bgre", &opts, &["sh", "-c", &script]);
    }
    let mut samples = 0u32;
    wait_until("six restarts in all, never more than 2 copies", || {
        samples += 1;
        for m in [&bg_m, &ss_m] {
            let n = marked(m).len();
            assert!(
                n <= 2,
                "{n} copies of {m} under --max-peers 2 (sample {samples})"
            );
        }
        let restarts: u64 = env
            .status_json("bgre")
            .iter()
            .filter_map(|s| s["restarts"].as_u64())
            .sum();
        restarts >= 6
    });
    stop(&env, "bgre");
    assert!(marked(&bg_m).is_empty() && marked(&ss_m).is_empty());
}

/// A worker that traps TERM: it writes `term`, finishes its job (waits
/// for `release`, at most 30 s), writes `done` and exits 0.
fn finishing_worker(
    env: &Env,
    name: &str,
    got: &std::path::Path,
    release: &std::path::Path,
) -> std::path::PathBuf {
    sh_script(
        env,
        name,
        &format!(
            "trap 'echo term >> {g}; i=0; while [ ! -e {r} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo done >> {g}; exit 0' TERM\n\
             echo ready >> {g}\n\
             while :; do sleep 0.05; done",
            g = got.display(),
            r = release.display()
        ),
    )
}

/// (8) SIGKILL of the supervisor: COMMAND gets SIGTERM (PDEATHSIG) and
/// finishes its job; meanwhile the slot is `orphaned`, `--check` says 150
/// and a start fails with 75; once COMMAND is gone a start succeeds.
#[test]
fn killed_supervisor_orphan_finishes_and_holds_the_slot() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let got = env.path("got");
    let release = env.path("release");
    let w_m = mark("orphan-worker");
    let worker = finishing_worker(&env, &w_m, &got, &release);
    env.start("orph", &["--stop-timeout", "60"], &[s(&worker)]);
    wait_until("worker ready", || read(&got).contains("ready"));
    let sup = env.read_pid("orph", 1).expect("a PID file");
    let w = marked(&w_m);
    assert_eq!(w.len(), 1);
    kill(sup, libc::SIGKILL);
    wait_until("COMMAND got SIGTERM when its supervisor died", || {
        read(&got).contains("term")
    });
    assert!(marked(&w_m) == w, "the worker is still finishing its job");
    let st = slot1(&env, "orph").expect("the slot is listed");
    assert_eq!(st["state"], "orphaned", "{st}");
    assert!(st["pid"].is_null(), "{st}");
    assert_eq!(st["child_pid"], w[0], "{st}");
    assert_eq!(
        env.check("orph"),
        150,
        "an orphaned slot is held but unhealthy"
    );
    let again = marked_sleep(&env, &mark("orphan-again"));
    assert_eq!(
        start_code(&env, "orph", &["--max-peers", "1"], &[s(&again), "300"]),
        75,
        "a start took a slot an orphan still holds"
    );
    std::fs::write(&release, "").unwrap();
    wait_until("the worker finished its job", || {
        read(&got).contains("done") && marked(&w_m).is_empty()
    });
    wait_until("the slot is free", || matches!(env.check("orph"), 1 | 3));
    assert_eq!(
        start_code(&env, "orph", &["--max-peers", "1"], &[s(&again), "300"]),
        0,
        "a start fails after the orphan exited"
    );
    stop(&env, "orph");
}

/// (8b) `--stop` on an orphaned slot ends every lock holder (here one that
/// ignores SIGTERM) and cleans up the side files.
#[test]
fn stop_ends_an_orphaned_slot() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let got = env.path("got");
    let w_m = mark("orphan-stubborn");
    let worker = sh_script(
        &env,
        &w_m,
        &format!(
            "trap '' TERM\nsystemd-notify --ready\necho ready >> {g}\nwhile :; do sleep 0.05; done",
            g = got.display()
        ),
    );
    env.start("orst", &["--notify", "--stop-timeout", "1"], &[s(&worker)]);
    wait_until("worker ready", || read(&got).contains("ready"));
    let sup = env.read_pid("orst", 1).expect("a PID file");
    kill(sup, libc::SIGKILL);
    wait_until("the slot shows as orphaned", || {
        slot1(&env, "orst").is_some_and(|st| st["state"] == "orphaned")
    });
    assert_eq!(
        env.check("orst"),
        150,
        "an orphaned slot is held but unhealthy"
    );
    let out = run_within(
        &env,
        Duration::from_secs(60),
        ["--stop", "orst", "--timeout", "2"],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(marked(&w_m).is_empty(), "--stop left the orphan running");
    assert_eq!(env.check("orst"), 3);
    let left = slot_files(&env, "orst");
    assert!(left.is_empty(), "--stop left side files: {left:?}");
}

/// (9) `rdaemon --foreground` as PID 1 of a PID namespace reaps the
/// orphans the kernel hands it, and a TERM stops the tree.
#[test]
fn pid1_reaps_orphans() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!(
                "SKIPPED pid1_reaps_orphans: `unshare --pid --fork --mount-proc` is not allowed here: {other:?}"
            );
            return;
        }
    }
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let orphan = marked_sleep(&env, &mark("p1-orphan"));
    let main_m = mark("p1-main");
    let main = marked_sleep(&env, &main_m);
    let got = env.path("got");
    let script = format!(
        "i=0; while [ $i -lt 20 ]; do ( {o} 0.01 & ) ; i=$((i+1)); done; echo produced >> {g}; exec {m} 300",
        o = orphan.display(),
        g = got.display(),
        m = main.display()
    );
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin())
        .args([
            "--foreground",
            "--name",
            "p1",
            "--pid-dir",
            s(&env.pid_dir),
            "--",
        ])
        .args(["sh", "-c", &script])
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let unshare = child.id() as i32;
    let init = poll_until(DEADLINE, || children(unshare).first().copied())
        .expect("unshare started rdaemon");
    wait_until("COMMAND made its orphans", || {
        read(&got).contains("produced")
    });
    let subtree = |root: i32| {
        let mut all = vec![root];
        let mut i = 0;
        while i < all.len() {
            all.extend(children(all[i]));
            i += 1;
        }
        all
    };
    let mut zombies = Vec::new();
    let reaped = poll_until(DEADLINE, || {
        zombies = subtree(init)
            .into_iter()
            .flat_map(zombie_children)
            .collect();
        zombies.is_empty().then_some(())
    });
    assert!(
        reaped.is_some(),
        "zombies remain under rdaemon as PID 1: {zombies:?}"
    );
    kill(init, libc::SIGTERM);
    let st = wait_child(&mut child, DEADLINE, "rdaemon as PID 1 after SIGTERM");
    assert_eq!(st.code(), Some(0), "stopped on request: exit 0");
    assert!(marked(&main_m).is_empty());
}

/// (10) HUP goes to COMMAND's main process only, never to its children
/// (one in the same process group, one `setsid`'d).
#[test]
fn hup_reaches_only_the_main_process() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let got = env.path("got");
    let kid = sh_script(
        &env,
        &mark("hup-kid"),
        &format!(
            "trap 'echo child-HUP-$1 >> {g}' HUP\nwhile :; do echo tick >> {d}/ticks-$1; sleep 0.05; done",
            g = got.display(),
            d = env.tmp.path().display()
        ),
    );
    let main = sh_script(
        &env,
        &mark("hup-main"),
        &format!(
            "trap 'echo main-HUP >> {g}' HUP\n{k} a &\nsetsid {k} b &\necho ready >> {g}\nwhile :; do sleep 0.05; done",
            g = got.display(),
            k = kid.display()
        ),
    );
    env.start("hup", &["--stop-timeout", "2"], &[s(&main)]);
    let ticks = |k: &str| read(&env.path(&format!("ticks-{k}"))).lines().count();
    wait_until("main and both children running", || {
        read(&got).contains("ready") && ticks("a") > 0 && ticks("b") > 0
    });
    let sup = env.read_pid("hup", 1).expect("a PID file");
    kill(sup, libc::SIGHUP);
    wait_until("HUP reached the main process", || {
        read(&got).contains("main-HUP")
    });
    // Any HUP the children got is handled before their loop goes round
    // again: wait for two more rounds of each.
    let (a, b) = (ticks("a"), ticks("b"));
    wait_until("both children went round twice more", || {
        ticks("a") >= a + 2 && ticks("b") >= b + 2
    });
    let text = read(&got);
    assert!(
        !text.contains("child-HUP"),
        "HUP reached COMMAND's children:\n{text}"
    );
    stop(&env, "hup");
}

/// A `--stop` that arrives while a respawning supervisor stops COMMAND's
/// leftovers (to start it again) must still ask it with SIGTERM: the
/// supervisor then stops for good within its own grace, and never starts
/// COMMAND again. Found by a tester: `--stop` took such a supervisor for
/// one stopping on request, only waited, and SIGKILLed the next run.
#[test]
fn stop_during_a_restart_stop_is_not_lost() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let m = mark("restart-stop");
    let sleep = marked_sleep(&env, &m);
    let log = env.path("rs.log");
    // The leftover ignores SIGTERM, so every stop of its tree lasts the
    // whole --stop-timeout: a wide window in state `stopping`.
    let script = format!(
        "trap '' TERM; setsid {} 300 & sleep 0.2; exit 0",
        sleep.display()
    );
    env.start(
        "rs",
        &[
            "--respawn",
            "--min-uptime",
            "0.1",
            "--stop-timeout",
            "5",
            "--log",
            s(&log),
        ],
        &["sh", "-c", &script],
    );
    wait_until(
        "the supervisor stops COMMAND's leftovers to restart it",
        || slot1(&env, "rs").is_some_and(|s| s["state"] == "stopping"),
    );
    let runs_before = read(&log).matches("started ").count();
    let out = run_within(&env, DEADLINE, ["--stop", "rs", "--timeout", "30"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = read(&log);
    assert!(
        text.contains("received SIGTERM while stopping to restart"),
        "the supervisor never heard the stop:\n{text}"
    );
    assert_eq!(
        text.matches("started ").count(),
        runs_before,
        "COMMAND was started again after the stop request:\n{text}"
    );
    assert!(marked(&m).is_empty(), "the leftover survived the stop");
    assert_eq!(env.check("rs"), 3);
}

/// A supervisor whose PID file was deleted and taken by a new peer stops
/// its own tree, and must leave the new peer's state file alone: found by
/// a tester, the old supervisor's "stopping, lock lost" stayed in the new
/// peer's state file for good, hiding its child and refusing `--restart`.
#[test]
fn lost_slot_leaves_the_new_peers_state_alone() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let (old_m, new_m) = (mark("lost-old"), mark("lost-new"));
    let old_sleep = marked_sleep(&env, &old_m);
    let new_sleep = marked_sleep(&env, &new_m);
    // The old COMMAND ignores SIGTERM: its supervisor stops it over the
    // whole grace, publishing as it goes, while the new peer runs.
    let script = format!("trap '' TERM; exec {} 300", old_sleep.display());
    env.start(
        "lz",
        &["--respawn", "--stop-timeout", "3"],
        &["sh", "-c", &script],
    );
    wait_until("the old COMMAND runs", || marked(&old_m).len() == 1);
    let old_sup = env.read_pid("lz", 1).expect("the old peer's PID file");
    std::fs::remove_file(env.pid_file("lz", 1)).unwrap();
    env.start("lz", &["--respawn"], &[s(&new_sleep), "300"]);
    let new_sup = env.read_pid("lz", 1).expect("the new peer's PID file");
    wait_until_for(
        Duration::from_secs(60),
        "the old supervisor stops its tree",
        || marked(&old_m).is_empty(),
    );
    wait_until_for(Duration::from_secs(60), "the old supervisor exits", || {
        !alive(old_sup)
    });
    // Nor its notification socket, bound at the same path.
    assert!(
        env.pid_dir.join("lz.1.notify").exists(),
        "the old supervisor removed the new peer's notification socket"
    );
    let state = read(&env.pid_dir.join("lz.1.state"));
    assert!(
        state.contains(&format!("holder_pid={new_sup}\n")),
        "the new peer's state file was overwritten:\n{state}"
    );
    let slot = slot1(&env, "lz").expect("slot 1 listed");
    assert_eq!(slot["state"], "running", "{slot}");
    assert_eq!(
        slot["child_pid"].as_i64(),
        marked(&new_m).first().map(|&p| i64::from(p)),
        "{slot}"
    );
}

/// `rdaemon_slot_resident_memory_bytes` is the whole tree's memory, as
/// `--memory-limit` counts it: a double-forked grandchild, re-parented to
/// the supervisor and no descendant of COMMAND, counts too. Found by a
/// tester: the metric said 14 MB for a tree of 108 MB.
#[test]
fn resident_memory_metric_counts_double_forked_descendants() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let hog = memory_hog(&env, "dfhog.py");
    let grown = env.path("grown");
    let main_m = mark("dfmem-main");
    let main = marked_sleep(&env, &main_m);
    let script = format!(
        "( {} {} & ) ; exec {} 300",
        hog.display(),
        grown.display(),
        main.display()
    );
    env.start("dm", &["--stop-timeout", "5"], &["sh", "-c", &script]);
    wait_until("the double-forked hog has grown", || {
        read(&grown).contains("grown")
    });
    let out = env.run(["--status", "dm", "--format", "prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let bytes: f64 = text
        .lines()
        .find(|l| l.starts_with("rdaemon_slot_resident_memory_bytes{") && l.contains("name=\"dm\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resident memory sample:\n{text}"));
    assert!(
        bytes >= (80 << 20) as f64,
        "the metric says {bytes} bytes; the grandchild alone holds 80 MB:\n{text}"
    );
    stop(&env, "dm");
}

/// (11a) A COMMAND whose main thread exited (`pthread_exit`) while its
/// worker runs shows `Z` in `/proc/PID/stat` but is alive: a foreground
/// supervisor's SIGTERM stop reaches it and ends promptly, by SIGTERM,
/// not by a SIGKILL after the grace (nor, as once, never).
#[test]
fn zombie_leader_command_stops_by_term() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let Some(zl) = zombie_leader_program(&env, "zl-fg") else {
        return;
    };
    let ready = env.path("ready");
    let mut sup = env
        .cmd()
        .args([
            "--foreground",
            "--name",
            "zlfg",
            "--stop-timeout",
            "60",
            "--",
        ])
        .args([s(&zl), "0", s(&ready)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("fg.err")).unwrap())
        .spawn()
        .unwrap();
    let pid = zombie_leader_pid(&ready);
    assert!(alive(pid), "PID {pid} is not a running zombie leader");
    kill(sup.id() as i32, libc::SIGTERM);
    // Well within the 60 s grace: only the SIGTERM can have ended it.
    wait_child(&mut sup, Duration::from_secs(20), "the foreground stop");
    // The events go to stderr, or to the log when the PID directory has one.
    let log = read(&env.path("fg.err")) + &read(&env.pid_dir.join("zlfg.log"));
    assert!(
        log.contains(&format!("PID {pid} stopped (signal 15)")),
        "COMMAND did not end by SIGTERM; log:\n{log}"
    );
    assert!(!log.contains("SIGKILL"), "log:\n{log}");
    assert!(!alive(pid), "PID {pid} still runs after the stop");
}

/// (11b) Such a process as a leftover of COMMAND (`setsid`'d by a shell
/// that exits) is stopped with the tree, and the slot is freed.
#[test]
fn zombie_leader_leftover_is_stopped_and_the_slot_freed() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let Some(zl) = zombie_leader_program(&env, "zl-left") else {
        return;
    };
    let ready = env.path("ready");
    // The shell exits once the leftover is a zombie leader.
    let script = format!(
        "setsid {} 0 {} & while [ ! -s {} ]; do sleep 0.01; done",
        zl.display(),
        ready.display(),
        ready.display()
    );
    env.start("zlleft", &["--stop-timeout", "60"], &["sh", "-c", &script]);
    let pid = zombie_leader_pid(&ready);
    wait_until_for(
        Duration::from_secs(20),
        "the zombie-leader leftover stopped and the slot freed",
        || !alive(pid) && env.check("zlleft") == 3 && slot_files(&env, "zlleft").is_empty(),
    );
    let log = read(&env.pid_dir.join("zlleft.log"));
    assert!(!log.contains("SIGKILL"), "log:\n{log}");
}

/// (11c) `--memory-limit` counts such a process's memory (its leader's own
/// `statm` reads 0; a running thread's holds it), and `--status` reports
/// it.
#[test]
fn memory_limit_counts_a_zombie_leader() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let Some(zl) = zombie_leader_program(&env, "zl-mem") else {
        return;
    };
    let ready = env.path("ready");
    env.start(
        "zlmem",
        &["--memory-limit", "40M", "--stop-timeout", "60"],
        &[s(&zl), "80", s(&ready)],
    );
    let pid = zombie_leader_pid(&ready);
    wait_until_for(
        Duration::from_secs(20),
        "the memory limit stopped the zombie leader and freed the slot",
        || !alive(pid) && matches!(env.check("zlmem"), 1 | 3),
    );
    let log = read(&env.pid_dir.join("zlmem.log"));
    assert!(log.contains("over the limit"), "log:\n{log}");
    assert!(!log.contains("SIGKILL"), "log:\n{log}");
}

/// (11d) `--status` reports such a process's memory, and `--stop` ends it
/// by SIGTERM within its grace.
#[test]
fn status_and_stop_see_a_zombie_leader() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let Some(zl) = zombie_leader_program(&env, "zl-st") else {
        return;
    };
    let ready = env.path("ready");
    env.start(
        "zlst",
        &["--stop-timeout", "60"],
        &[s(&zl), "64", s(&ready)],
    );
    let pid = zombie_leader_pid(&ready);
    let out = run_within(
        &env,
        DEADLINE,
        ["--status", "zlst", "--format", "prometheus"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rss: Option<f64> = text.lines().find_map(|l| {
        l.strip_prefix("rdaemon_slot_resident_memory_bytes{name=\"zlst\",slot=\"1\"} ")?
            .parse()
            .ok()
    });
    assert!(
        rss.is_some_and(|r| r >= f64::from(60u32 << 20)),
        "--status reports {rss:?} bytes for a process holding 64 MiB:\n{text}"
    );
    let out = run_within(&env, Duration::from_secs(20), ["--stop", "zlst"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!alive(pid), "PID {pid} still runs after --stop");
    let log = read(&env.pid_dir.join("zlst.log"));
    assert!(
        log.contains(&format!("PID {pid} stopped (signal 15)")),
        "log:\n{log}"
    );
}

/// A COMMAND that runs its program as PID 1 of a new PID namespace
/// (`unshare --pid --fork`), orphaned by a SIGKILLed supervisor: the lock
/// holder is a namespace's init, but not rdaemon's, so the slot is
/// `orphaned` (150) and `--stop` ends it. Found by a tester: it read as
/// `running`, `--check` said 0, and `--stop` refused it as "a container's
/// init".
#[test]
fn orphaned_namespace_init_is_an_orphan() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!(
                "SKIPPED orphaned_namespace_init_is_an_orphan: `unshare --pid --fork` is not allowed here: {other:?}"
            );
            return;
        }
    }
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let m = mark("nsinit");
    let sleep = marked_sleep(&env, &m);
    env.start(
        "nsi",
        &[],
        &["unshare", "--pid", "--fork", s(&sleep), "300"],
    );
    wait_until("the namespace's init runs", || marked(&m).len() == 1);
    let sup = env.read_pid("nsi", 1).expect("a PID file");
    kill(sup, libc::SIGKILL);
    wait_until("the slot reads as orphaned", || {
        slot1(&env, "nsi").is_some_and(|st| st["state"] == "orphaned")
    });
    assert_eq!(env.check("nsi"), 150);
    let out = run_within(&env, DEADLINE, ["--stop", "nsi", "--timeout", "2"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        marked(&m).is_empty(),
        "--stop left the namespace's init running"
    );
}

/// While a `--forking` start waits for its daemon, `--check --verbose`
/// says what it waits for (not "READY=1", which only `--notify` waits for).
#[test]
fn forking_start_says_what_it_waits_for() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let (script, m) = classic_daemon(&env, "dfwait", false);
    let pidfile = env.path("late.pid");
    let mut start = env
        .cmd()
        .args(["--name", "dfwait", "--forking", "--pidfile"])
        .arg(&pidfile)
        .args(["--ready-timeout", "60", "--", s(&script)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the start waits for the PID file", || {
        slot1(&env, "dfwait").is_some_and(|st| st["state"] == "starting") && !marked(&m).is_empty()
    });
    let out = env.run(["--check", "dfwait", "--verbose"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("daemonizing"), "{said}");
    assert!(!said.contains("READY=1"), "{said}");
    stop(&env, "dfwait");
    wait_child(&mut start, DEADLINE, "the waiting start");
}

/// `--ready-timeout` bounds a start even when `--memory-limit` recycles
/// COMMAND during the readiness wait: the recycled runs keep the first
/// run's deadline. Found by a tester: such a start waited for ever.
#[test]
fn memory_recycles_during_the_readiness_wait_keep_the_deadline() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let grown = env.path("grown");
    let hog = memory_hog(&env, "never-ready.py");
    let out = run_within(
        &env,
        DEADLINE,
        [
            "--name",
            "nr",
            "--notify",
            "--ready-timeout",
            "3",
            "--memory-limit",
            "30M",
            "--respawn",
            "--",
            s(&hog),
            s(&grown),
        ],
    );
    assert_ne!(code(&out), 0, "a start that never sent READY=1 succeeded");
    assert!(
        read(&grown).contains("grown"),
        "the hog never grew: the memory limit was not exercised"
    );
    assert!(
        matches!(env.check("nr"), 1 | 3),
        "the failed start holds its slot"
    );
}
