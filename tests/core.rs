//! The core promises, driven through the real binary: truthful exit codes,
//! slots held exactly while locked, never N+1, and inspection that never
//! gets in a start's way.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use common::*;

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a PID the test itself observed.
    unsafe { libc::kill(pid, sig) };
}

#[test]
fn start_returns_once_command_runs_and_check_agrees() {
    let env = Env::new();
    env.start(
        "w",
        &[],
        &["sh", "-c", "sleep 1000; :", "core-start-marker"],
    );
    // No waiting: the caller returned only after COMMAND was exec'd.
    assert_eq!(env.check("w"), 0);
    let slots = env.status_json("w");
    assert_eq!(slots.len(), 1);
    let s = &slots[0];
    assert_eq!(s["state"], "running");
    assert_eq!(s["slot"], 1);
    let sup = s["pid"].as_i64().unwrap() as i32;
    let child = s["child_pid"].as_i64().unwrap() as i32;
    assert!(alive(sup) && alive(child));
    assert_eq!(env.read_pid("w", 1), Some(sup));
    assert_eq!(
        std::fs::read_to_string(env.pid_file("w", 1)).unwrap(),
        format!("{sup}\n")
    );
    assert!(s["started_unix"].as_u64().is_some());
    assert_eq!(s["restarts"], 0);
    assert_eq!(s["pid_file"], env.pid_file("w", 1).to_str().unwrap());
    // COMMAND runs detached: own session and group, cwd /, stdin /dev/null.
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[2],
        child.to_string(),
        "COMMAND leads its own process group"
    );
    assert_eq!(fields[4], "0", "no controlling terminal");
    assert_eq!(
        std::fs::read_link(format!("/proc/{child}/cwd"))
            .unwrap()
            .to_str(),
        Some("/")
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{child}/fd/0"))
            .unwrap()
            .to_str(),
        Some("/dev/null")
    );
}

#[test]
fn exit_codes_tell_the_truth() {
    let env = Env::new();
    assert_eq!(env.status(["--name", "nf", "--", "/nonexistent/cmd"]), 127);
    let not_exec = env.path("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    assert_eq!(
        env.status([
            "--name".as_ref(),
            "nx".as_ref(),
            "--".as_ref(),
            not_exec.as_os_str()
        ]),
        126
    );
    assert_eq!(env.status(["--name", "bad name", "--", "true"]), 2);
    assert_eq!(
        env.status(["--name", "ok"]),
        2,
        "missing COMMAND is a usage error"
    );
    assert_eq!(env.status(["--check", "x", "--json"]), 2);
    assert_eq!(env.status(["--bogus"]), 2);
    assert_eq!(env.status(["--check", "x", "--respawn"]), 2);
    assert_eq!(env.status(["--check", "x", "--status", "x"]), 2);
    assert_eq!(env.status(["--version"]), 0);
    // A failed start leaves no slot behind.
    assert_eq!(env.check("nf"), 3);

    env.start("busy", &[], &["sleep", "1000"]);
    let holder = env.read_pid("busy", 1).unwrap();
    let out = env.run(["--name", "busy", "--", "sleep", "1000"]);
    assert_eq!(out.status.code(), Some(75));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(&holder.to_string()),
        "busy message names the holder: {msg}"
    );
    let quiet = env.run(["--name", "busy", "--quiet", "--", "sleep", "1000"]);
    assert_eq!(quiet.status.code(), Some(75));
    assert!(quiet.stderr.is_empty(), "--quiet says nothing when busy");
}

#[test]
fn command_substitution_returns_at_once() {
    // `out=$(rdaemon ...)`: the caller's stdout is a pipe; neither the
    // supervisor nor COMMAND may keep it open.
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["--name", "subst", "--", "sleep", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let got = rx
        .recv_timeout(DEADLINE)
        .expect("stdout pipe still open: the daemon kept it");
    assert!(got.is_empty());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    env.run(["--stop", "subst"]);
}

#[test]
fn simultaneous_starts_never_exceed_max_peers() {
    let env = Env::new();
    let marker = "core-race-marker";
    let mut children: Vec<_> = (0..30)
        .map(|_| {
            env.cmd()
                .args([
                    "--name",
                    "race",
                    "--max-peers",
                    "3",
                    "--",
                    "sh",
                    "-c",
                    "sleep 1000; :",
                    marker,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .iter_mut()
        .map(|c| c.wait().unwrap().code().unwrap())
        .collect();
    env.run(["--name", "race", "--", "true"]); // registers the name for cleanup
    assert_eq!(
        codes.iter().filter(|&&c| c == 0).count(),
        3,
        "exit codes: {codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|&&c| c == 75).count(),
        27,
        "exit codes: {codes:?}"
    );
    // Awaited, not sampled: a shell that forked but has not exec'd its
    // sleep yet shows the marker too, for a moment.
    wait_until("three racers", || pids_with_arg(marker).len() == 3);
    assert_eq!(env.status(["--check", "race", "--min-peers", "3"]), 0);
    assert_eq!(env.status(["--stop", "race"]), 0);
    wait_until("all racers gone", || pids_with_arg(marker).is_empty());
    assert_eq!(env.check("race"), 3, "a clean stop leaves no files");
}

#[test]
fn kill9_supervisor_leaves_an_orphan_that_keeps_the_slot() {
    let env = Env::new();
    let marker = "core-orphan-marker";
    env.start("orph", &[], &["sh", "-c", "sleep 1000; :", marker]);
    let sup = env.read_pid("orph", 1).unwrap();
    let child = pids_with_arg(marker)[0];
    kill(sup, libc::SIGKILL);
    wait_until("supervisor dead", || !alive(sup));
    // COMMAND inherited the lock: the slot is still held, never N+1.
    wait_until("slot shows orphaned", || {
        env.status_json("orph")
            .first()
            .is_some_and(|s| s["state"] == "orphaned")
    });
    let s = &env.status_json("orph")[0];
    assert!(s["pid"].is_null());
    // COMMAND itself, or (once COMMAND got its SIGTERM) the child of it
    // that still holds the lock: never null while the slot is held.
    let holder = s["child_pid"].as_i64().expect("a child_pid") as i32;
    assert!(holder == child || alive(holder), "{s}");
    assert_eq!(
        env.check("orph"),
        150,
        "an orphan holds its slot but does not count as running"
    );
    assert_eq!(
        env.status(["--name", "orph", "--", "sh", "-c", "sleep 1000; :", marker]),
        75
    );
    assert!(pids_with_arg(marker).len() <= 1);
    assert_eq!(env.status(["--stop", "orph"]), 0);
    wait_until("orphan stopped", || !alive(child) && !alive(holder));
    env.start("orph", &[], &["sh", "-c", "sleep 1000; :", marker]);
    assert_eq!(env.check("orph"), 0);
}

#[test]
fn stale_file_never_blocks_a_start() {
    let env = Env::new();
    let marker = "core-stale-marker";
    env.start("stale", &[], &["sh", "-c", "sleep 1000; :", marker]);
    let sup = env.read_pid("stale", 1).unwrap();
    let child = pids_with_arg(marker)[0];
    kill(sup, libc::SIGKILL);
    // The whole group: `sleep` inherited the lock from `sh` and would keep
    // the slot held (rightly: it is part of COMMAND).
    kill(-child, libc::SIGKILL);
    wait_until("both dead", || !alive(sup) && !alive(child));
    wait_until("lock released", || env.check("stale") == 1);
    assert_eq!(env.slots_in_state("stale", "stale").len(), 1);
    env.start("stale", &[], &["sh", "-c", "sleep 1000; :", marker]);
    assert_eq!(env.check("stale"), 0);
    assert_ne!(env.read_pid("stale", 1), Some(sup));
}

#[test]
fn deleting_the_pid_file_makes_the_supervisor_stop() {
    let env = Env::new();
    let marker = "core-lost-marker";
    env.start(
        "lost",
        &["--log", env.path("lost.log").to_str().unwrap()],
        &["sh", "-c", "sleep 1000; :", marker],
    );
    let sup = env.read_pid("lost", 1).unwrap();
    std::fs::remove_file(env.pid_file("lost", 1)).unwrap();
    wait_until("COMMAND stopped after lock loss", || {
        pids_with_arg(marker).is_empty()
    });
    wait_until("supervisor exited", || !alive(sup));
    assert!(read(&env.path("lost.log")).contains("lock lost"));
    // A watchdog can start a fresh peer.
    env.start("lost", &[], &["sh", "-c", "sleep 1000; :", marker]);
}

#[test]
fn check_hammering_never_fails_a_start() {
    let env = Env::new();
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let dir = env.pid_dir.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let out = std::process::Command::new(bin())
                        .args(["--check", "ham", "--verbose", "--pid-dir"])
                        .arg(&dir)
                        .output()
                        .unwrap();
                    assert!(
                        [0, 1, 3, 150].contains(&out.status.code().unwrap()),
                        "check said {:?}: {}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    for _ in 0..15 {
        let out = env.run(["--name", "ham", "--max-peers", "2", "--", "sleep", "1000"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "start failed beside --check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(env.status(["--stop", "ham"]), 0);
    }
    stop.store(true, Ordering::Relaxed);
    let checks: usize = hammers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(checks > 0);
}

#[test]
fn stop_escalates_to_kill_and_reports_nothing_left() {
    let env = Env::new();
    let marker = "core-stubborn-marker";
    // COMMAND ignores TERM; the supervisor's own grace is long, so it is
    // --stop's SIGKILL that ends it.
    env.start(
        "stub",
        &["--stop-timeout", "1000"],
        &[
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.1; done",
            marker,
        ],
    );
    assert_eq!(env.status(["--stop", "stub", "--timeout", "0.5"]), 0);
    wait_until("stubborn COMMAND gone", || pids_with_arg(marker).is_empty());
    assert_eq!(env.check("stub"), 3);
    assert_eq!(
        env.status(["--stop", "stub"]),
        0,
        "stopping nothing is success"
    );
}

#[test]
fn check_counts_peers_and_heartbeat_age() {
    let env = Env::new();
    let opts = ["--max-peers", "3", "--heartbeat-interval", "0.5"];
    env.start("hb", &opts, &["sleep", "1000"]);
    env.start("hb", &opts, &["sleep", "1000"]);
    assert_eq!(env.status(["--check", "hb", "--min-peers", "2"]), 0);
    assert_eq!(env.status(["--check", "hb", "--min-peers", "3"]), 150);
    let v = env.run(["--check", "hb", "--min-peers", "3", "--verbose"]);
    assert!(String::from_utf8_lossy(&v.stdout).contains("2 of at least 3"));
    // A frozen supervisor stops refreshing its heartbeat.
    let sup = env.read_pid("hb", 1).unwrap();
    kill(sup, libc::SIGSTOP);
    wait_until("heartbeat ages", || {
        env.status(["--check", "hb", "--max-age", "2"]) == 150
    });
    kill(sup, libc::SIGCONT);
    wait_until("heartbeat fresh again", || {
        env.status(["--check", "hb", "--max-age", "2"]) == 0
    });
}

#[test]
fn inspection_creates_nothing() {
    let env = Env::new();
    assert_eq!(env.check("none"), 3);
    assert_eq!(env.status(["--status", "none"]), 3);
    assert_eq!(env.status(["--stop", "none"]), 0);
    assert!(
        !env.pid_dir.exists(),
        "inspection must not create the PID directory"
    );
}

#[test]
fn foreground_exit_status_follows_the_contract() {
    let env = Env::new();
    assert_eq!(
        env.status(["--name", "fg", "-f", "--", "sh", "-c", "exit 3"]),
        3
    );
    assert_eq!(
        env.status(["--name", "fg", "-f", "--", "sh", "-c", "kill -KILL $$"]),
        137
    );
    assert_eq!(
        env.check("fg"),
        3,
        "the PID file is removed when COMMAND exits"
    );
    // TERM to rdaemon: a requested stop exits 0.
    let mut fg = env
        .cmd()
        .args([
            "--name",
            "fg",
            "-f",
            "--",
            "sh",
            "-c",
            "sleep 1000; :",
            "core-fg-marker",
        ])
        .spawn()
        .unwrap();
    wait_until("foreground COMMAND runs", || {
        pids_with_arg("core-fg-marker").len() == 1
    });
    kill(fg.id() as i32, libc::SIGTERM);
    assert_eq!(fg.wait().unwrap().code(), Some(0));
    assert!(pids_with_arg("core-fg-marker").is_empty());
}

#[test]
fn runs_inside_a_pid_namespace() {
    if !nix_is_root()
        || std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
    {
        eprintln!("skipped: needs root and unshare");
        return;
    }
    let env = Env::new();
    // Inside a fresh PID namespace: start, SIGKILL the supervisor, and the
    // orphaned COMMAND (which ignores the SIGTERM a dying supervisor's
    // COMMAND gets) must still be seen and stopped.
    let script = format!(
        "set -e; B={b}; D={d}; $B --pid-dir $D --name ns -- sh -c 'trap \"\" TERM; sleep 1000; :'; \
         $B --pid-dir $D --check ns; S=$(cat $D/ns.1.pid); kill -9 $S; \
         while kill -0 $S 2>/dev/null && ! grep -q '^State:.*Z' /proc/$S/status; do sleep 0.01; done; \
         r=0; $B --pid-dir $D --check ns || r=$?; test $r = 150; \
         $B --pid-dir $D --status ns --json | grep -q orphaned; \
         $B --pid-dir $D --stop ns --timeout 1; r=0; $B --pid-dir $D --check ns || r=$?; test $r = 3",
        b = bin(),
        d = env.pid_dir.display()
    );
    let st = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(st.success(), "namespace scenario failed: {st:?}");
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn lock_loss_is_noticed_by_inotify() {
    // An idle supervisor runs no timer (see the test below), so only its
    // inotify watch on the PID file can notice these.
    let env = Env::new();
    for (name, how) in [
        ("unlinked", "rm"),
        ("renamed", "mv"),
        ("replaced", "replace"),
    ] {
        let marker = format!("core-inotify-{name}");
        env.start(name, &[], &["sh", "-c", "sleep 1000; :", &marker]);
        let sup = env.read_pid(name, 1).unwrap();
        let file = env.pid_file(name, 1);
        match how {
            "rm" => std::fs::remove_file(&file).unwrap(),
            "mv" => std::fs::rename(&file, env.path("moved-away")).unwrap(),
            _ => {
                let other = env.path("other");
                std::fs::write(&other, "12345\n").unwrap();
                std::fs::rename(&other, &file).unwrap();
            }
        }
        wait_until(&format!("{name}: COMMAND stopped"), || {
            pids_with_arg(&marker).is_empty()
        });
        wait_until(&format!("{name}: supervisor exited"), || !alive(sup));
    }
    assert_eq!(
        read(&env.pid_file("replaced", 1)),
        "12345\n",
        "the replacement is left alone"
    );
}

#[test]
fn callers_stray_descriptors_reach_neither_supervisor_nor_command() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    // A pipe whose write end the caller leaks without O_CLOEXEC, as a
    // careless parent process would. If the supervisor or COMMAND kept it,
    // the read end would never see EOF.
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let leaked = write_end.as_raw_fd();
    let mut cmd = env.cmd();
    cmd.args([
        "--name",
        "strayfd",
        "--",
        "sh",
        "-c",
        "sleep 1000; :",
        "core-strayfd-marker",
    ]);
    // SAFETY: dup2 onto a fixed descriptor number in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(leaked, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    assert_eq!(cmd.status().unwrap().code(), Some(0));
    // The pipe's identity ("pipe:[inode]"): fd 9 itself may legitimately
    // be taken by another descriptor in COMMAND (the slot's lock).
    let pipe = std::fs::read_link(format!("/proc/self/fd/{}", read_end.as_raw_fd())).unwrap();
    drop(write_end);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::fs::File::from(read_end).read_to_end(&mut buf);
        let _ = tx.send(());
    });
    rx.recv_timeout(DEADLINE)
        .expect("a daemon process kept the caller's stray descriptor open");
    let child = pids_with_arg("core-strayfd-marker")[0];
    let fds: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{child}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .collect();
    assert!(!fds.contains(&pipe), "COMMAND has {pipe:?}: {fds:?}");
}

/// Renaming the whole PID directory away loses every slot in it as surely
/// as deleting the file: a new start would create the directory afresh and
/// see no locks. The supervisor notices through its directory watch.
#[test]
fn pid_directory_renamed_away_is_a_lost_slot() {
    let env = Env::new();
    let marker = "core-dir-renamed";
    env.start("dr", &[], &["sh", "-c", "sleep 1000; :", marker]);
    // The supervisor is COMMAND's parent. Reading the PID file instead
    // would wake the supervisor (IN_OPEN), and a wake-up that happened to
    // come after the rename would notice it without the directory watch.
    let command = pids_with_arg(marker);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", command[0])).unwrap();
    let sup: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let moved = env.path("moved-dir");
    std::fs::rename(&env.pid_dir, &moved).unwrap();
    wait_until("COMMAND stopped", || pids_with_arg(marker).is_empty());
    wait_until("supervisor exited", || !alive(sup));
    // Its release removes its own files from where the directory now is.
    assert!(!moved.join("dr.1.pid").exists());
    env.start("dr", &[], &["sleep", "1000"]);
    assert_eq!(env.check("dr"), 0);
    assert_eq!(env.status(["--stop", "dr"]), 0);
}

/// The system-call arguments `pid` is blocked in, from /proc/PID/syscall:
/// `None` while it runs, or when the kernel does not let us look.
fn blocked_syscall(pid: i32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let words: Vec<u64> = text
        .split_whitespace()
        .map(|w| {
            u64::from_str_radix(
                w.trim_start_matches("0x"),
                if w.starts_with("0x") { 16 } else { 10 },
            )
        })
        .collect::<Result<_, _>>()
        .ok()?;
    (words.len() >= 4).then_some(words)
}

/// An idle supervisor (no --memory-limit, --watchdog or
/// --heartbeat-interval) sleeps in poll() with no timeout: it wakes only
/// when something happens, never on a timer.
#[test]
#[cfg(target_arch = "x86_64")]
fn idle_supervisor_sleeps_without_a_timeout() {
    const POLL: u64 = 7;
    const PPOLL: u64 = 271;
    let env = Env::new();
    env.start("idle", &[], &["sleep", "1000"]);
    let sup = env.read_pid("idle", 1).unwrap();
    if std::fs::read_to_string(format!("/proc/{sup}/syscall")).is_err() {
        eprintln!(
            "idle_supervisor_sleeps_without_a_timeout: skipped, /proc/PID/syscall unreadable"
        );
        return;
    }
    let mut last = None;
    let infinite = poll_until(DEADLINE, || {
        let args = blocked_syscall(sup)?;
        last = Some(args.clone());
        // poll(fds, nfds, int timeout): -1; ppoll(fds, nfds, tsp, ...): NULL.
        let forever = match args[0] {
            POLL => args[3] as u32 == u32::MAX,
            PPOLL => args[3] == 0,
            _ => false,
        };
        forever.then_some(())
    });
    assert!(
        infinite.is_some(),
        "the idle supervisor never blocked in poll() without a timeout; last seen: {last:?}"
    );
    assert_eq!(env.status(["--stop", "idle"]), 0);
}

/// With no timer, the heartbeat is the supervisor's answer to the probe:
/// long after the PID file's mtime was last set, `--check --max-age` finds
/// a working supervisor fresh, and a stopped one old.
#[test]
fn heartbeat_is_answered_on_demand() {
    let env = Env::new();
    env.start("od", &[], &["sleep", "1000"]);
    let sup = env.read_pid("od", 1).unwrap();
    let file = env.pid_file("od", 1);
    // stat() opens nothing, so it does not ask for an answer.
    let mtime_age = || {
        std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default()
    };
    let old_enough = || mtime_age() > std::time::Duration::from_millis(600);
    let switches = || {
        let status = std::fs::read_to_string(format!("/proc/{sup}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))
            .unwrap()
            .to_string()
    };
    wait_until("the mtime is older than --max-age", old_enough);
    // Asleep, it can only be in poll(): the loop's one blocking call.
    wait_until("the supervisor sleeps", || {
        std::fs::read_to_string(format!("/proc/{sup}/stat")).is_ok_and(|st| {
            st.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('S'))
        })
    });
    // Readers that want no heartbeat wake nobody, nor do starts that find
    // the slot busy (one that fails, one that goes on to slot 2).
    let before = switches();
    assert_eq!(env.check("od"), 0);
    std::fs::read(&file).unwrap();
    assert_eq!(env.status(["--name", "od", "--", "sleep", "1000"]), 75);
    env.start("od", &["--max-peers", "2"], &["sleep", "1000"]);
    assert_eq!(
        switches(),
        before,
        "a plain --check, a read or a start woke the supervisor"
    );
    // --check --max-age asks, and the idle supervisor answers.
    assert_eq!(env.status(["--check", "od", "--max-age", "0.5"]), 0);
    assert!(mtime_age() < std::time::Duration::from_millis(500));
    // So does --status.
    wait_until("the mtime is older than --max-age again", old_enough);
    let slots = env.status_json("od");
    let age = slots[0]["heartbeat_age_s"].as_f64().unwrap();
    assert!(age < 0.5, "--status saw a heartbeat {age}s old: {slots:?}");

    kill(sup, libc::SIGSTOP);
    wait_until("a stopped supervisor's heartbeat ages", || {
        env.status(["--check", "od", "--max-age", "0.5"]) == 150
    });
    kill(sup, libc::SIGCONT);
    wait_until("answered again", || {
        env.status(["--check", "od", "--max-age", "0.5"]) == 0
    });
    assert_eq!(env.status(["--stop", "od"]), 0);
}

/// Without inotify (this user's instances used up: `fs.inotify.max_user_
/// instances`, 128 by default, one per supervisor), the supervisor says so
/// in its log and falls back to verifying its slot and refreshing its
/// heartbeat every second: a deleted PID file is still noticed, and
/// `--check --max-age` still sees it fresh. The limit is set to 0 inside a
/// user namespace of the test's own, so nothing else is affected.
#[test]
fn without_inotify_the_supervisor_falls_back_to_a_timer() {
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 0 > /proc/sys/user/max_inotify_instances")
        .status();
    if !nix_is_root() || !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: needs root and unshare --user with a writable max_inotify_instances");
        return;
    }
    let env = Env::new();
    let log = env.path("fb.log");
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg(r#"echo 0 > /proc/sys/user/max_inotify_instances && exec "$@""#)
        .arg("sh")
        .arg(bin())
        .args(["--name", "fb", "--log"])
        .arg(&log)
        .args(["--", "sleep", "1000"])
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "start failed: {out:?}");
    let sup = env.read_pid("fb", 1).unwrap();
    let text = read(&log);
    assert!(
        text.contains("cannot watch")
            && text.contains("max_user_instances")
            && text.contains("every 1s"),
        "the log does not explain the fallback: {text}"
    );
    let state = read(&env.pid_dir.join("fb.1.state"));
    assert!(
        state.contains("lease_ms=1000") && !state.contains("answers_probes"),
        "{state}"
    );
    assert_eq!(env.status(["--check", "fb", "--max-age", "30"]), 0);
    std::fs::remove_file(env.pid_file("fb", 1)).unwrap();
    wait_until("the timer notices the deleted PID file", || !alive(sup));
    assert!(read(&log).contains("lock lost"), "{}", read(&log));
}

/// Issue 13, item 1: no word on the command line is ever silently ignored,
/// in any mode, and an option of one mode given to another is refused by
/// name; the daemon is untouched by a refused command.
#[test]
fn no_word_or_option_is_silently_ignored() {
    let env = Env::new();
    env.start("mailer", &[], &["sleep", "1000"]);
    let pid = env.read_pid("mailer", 1).unwrap();
    let dir = env.pid_dir.to_str().unwrap();
    for (args, named) in [
        (&["--stop", "mailer", "now", "--pid-dir", dir][..], "now"),
        (&["--check", "mailer", "x", "--pid-dir", dir], "x"),
        (&["--check", "mailer", "x", "--min-peers", "5"], "x"),
        (&["--status", "mailer", "extra"], "extra"),
        (&["--restart", "mailer", "please"], "please"),
        (&["--name", "mailer", "sleep", "1000"], "sleep"),
        (&["--check", "mailer", "--", "x"], "x"),
        (&["--check", "mailer", "--respawn"], "--respawn"),
        (&["--stop", "mailer", "--max-age", "3"], "--max-age"),
        (&["--status", "mailer", "--timeout", "1"], "--timeout"),
        (&["--check", "mailer", "--log", "/tmp/x"], "--log"),
        (&["--stop", "mailer", "--format", "json"], "--format"),
        (&["--check", "mailer", "--slot", "1"], "--slot"),
        (&["--stop", "mailer", "--quiet"], "--quiet"),
        (
            &["--name", "mailer", "--verbose", "--", "true"],
            "--verbose",
        ),
        (
            &["--name", "m2", "--ready-timeout", "5", "--", "true"],
            "--notify",
        ),
        (&["--name", "m2", "--max-peers", "-1", "--", "true"], "-1"),
        (&["--check", "mailer", "--min-peers", "0"], "0"),
        (&["--stop", "mailer", "--timeout", "abc"], "abc"),
        (&["--check", "mailer", "--max-age", "-2"], "-2"),
    ] {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted: {err}");
        assert!(
            err.contains(named),
            "{args:?}: the message does not name {named:?}: {err}"
        );
    }
    assert!(alive(pid), "a refused command touched the daemon");
    assert_eq!(env.check("mailer"), 0);
    assert!(!env.pid_file("m2", 1).exists());
}

/// The default PID directory depends on the user alone: never on
/// XDG_RUNTIME_DIR (a login shell and cron must find the same slots).
#[test]
fn default_pid_dir_ignores_the_session() {
    let env = Env::new();
    let xdg = env.path("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let out = env
        .cmd()
        .env_remove("RDAEMON_PID_DIR")
        .env("XDG_RUNTIME_DIR", &xdg)
        .args(["--status", "no-such-name-here"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // SAFETY: geteuid() has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let want = if euid == 0 {
        "/run/rdaemon".to_string()
    } else {
        format!("/tmp/rdaemon-{euid}")
    };
    assert!(text.contains(&want), "{text}");
    assert!(!text.contains(xdg.to_str().unwrap()), "{text}");
}

/// Slot files survive systemd-tmpfiles' age-based cleaning for as long as
/// their holders live (the holders keep a shared lock on the directory,
/// which tmpfiles honours), however old their times are; the same files
/// with nobody holding them are cleaned.
#[test]
fn slot_files_survive_age_based_cleaning() {
    let have = std::process::Command::new("systemd-tmpfiles")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("skipped: no systemd-tmpfiles");
        return;
    }
    let env = Env::new();
    env.start("aged", &[], &["sleep", "1000"]);
    // A directory like the PID directory, without holders: the control.
    let control = env.path("control");
    std::fs::create_dir(&control).unwrap();
    std::fs::write(control.join("old.1.pid"), "1\n").unwrap();
    let files = [
        env.pid_file("aged", 1),
        env.pid_dir.join("aged.1.state"),
        control.join("old.1.pid"),
    ];
    // Two hours old, set by path (no open, so no heartbeat is asked for).
    for f in &files {
        assert!(f.exists(), "{}", f.display());
        let st = std::process::Command::new("touch")
            .args(["-h", "-m", "-a", "-d", "2 hours ago"])
            .arg(f)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let conf = env.path("clean.conf");
    // m: judge files by their modification time only (touch just set it).
    std::fs::write(
        &conf,
        format!("d {} - - - m:1s\n", env.tmp.path().display()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-tmpfiles")
        .arg("--clean")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !control.join("old.1.pid").exists(),
        "the control was not cleaned: the test proves nothing"
    );
    assert!(
        env.pid_file("aged", 1).exists(),
        "the PID file was cleaned away"
    );
    assert!(
        env.pid_dir.join("aged.1.state").exists(),
        "the state file was cleaned away"
    );
    assert_eq!(env.check("aged"), 0);
}

/// Options that contradict each other are usage errors naming both.
#[test]
fn contradicting_start_options_are_usage_errors() {
    let env = Env::new();
    let out = env.run([
        "--name",
        "clash",
        "--syslog",
        "--timestamps",
        "--",
        "sleep",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--timestamps") && err.contains("--syslog"),
        "{err}"
    );
    let out = env.run([
        "--name",
        "clash",
        "--respawn",
        "--exit-codes",
        "0,12",
        "--recycle-codes",
        "12",
        "--",
        "sleep",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--exit-codes") && err.contains("--recycle-codes") && err.contains("12"),
        "{err}"
    );
    assert_eq!(env.check("clash"), 3, "nothing was started");
}
