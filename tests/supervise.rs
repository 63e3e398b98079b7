//! The supervisor's promises with real processes: respawn limits, the
//! memory ceiling, signal forwarding, graceful and forced stops, output
//! capture to a file and to syslog, and COMMAND's identity.

#[cfg(feature = "etcd")]
#[path = "common/etcd.rs"]
mod cluster;
mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a PID the test observed.
    unsafe { libc::kill(pid, sig) };
}

fn lines(path: &std::path::Path) -> usize {
    read(path).lines().count()
}

/// Waits until NAME has no supervisor left: not running (3), or a
/// supervisor that gave up left its `failed` tombstone (1).
fn wait_gone(env: &Env, name: &str) {
    wait_until(&format!("{name} to finish"), || {
        matches!(env.check(name), 1 | 3)
    });
}

#[test]
fn crash_loop_gives_up_after_exactly_n_plus_one_runs() {
    let env = Env::new();
    let runs = env.path("runs");
    let log = env.path("crash.log");
    env.start(
        "crash",
        &[
            "--respawn",
            "--max-respawns",
            "3",
            "--respawn-delay",
            "0.01",
            "--log",
            log.to_str().unwrap(),
        ],
        &[
            "sh",
            "-c",
            &format!("echo run >> {}; exit 1", runs.display()),
        ],
    );
    wait_gone(&env, "crash");
    assert_eq!(lines(&runs), 4, "1 run + 3 restarts");
    let text = read(&log);
    assert!(text.contains("giving up: 3 restarts"), "{text}");
    assert_eq!(text.matches("restarting in").count(), 3, "{text}");
    assert!(
        !env.pid_file("crash", 1).exists(),
        "the PID file is removed"
    );
    assert_eq!(env.check("crash"), 1, "the tombstone says it failed");
}

#[test]
fn backoff_doubles() {
    let env = Env::new();
    let log = env.path("b.log");
    env.start(
        "backoff",
        &[
            "--respawn",
            "--max-respawns",
            "3",
            "--respawn-delay",
            "0.05",
            "--log",
            log.to_str().unwrap(),
        ],
        &["false"],
    );
    wait_gone(&env, "backoff");
    let text = read(&log);
    let delays: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .collect();
    assert_eq!(delays, vec!["0.05s", "0.1s", "0.2s"], "{text}");
}

#[test]
fn finished_exit_codes_are_not_restarted() {
    let env = Env::new();
    let runs = env.path("runs");
    env.start(
        "done",
        &[
            "--respawn",
            "--exit-codes",
            "0,3",
            "--respawn-delay",
            "0.01",
        ],
        &[
            "sh",
            "-c",
            &format!("echo run >> {}; exit 3", runs.display()),
        ],
    );
    wait_gone(&env, "done");
    assert_eq!(lines(&runs), 1);
}

#[test]
fn status_shows_restarts_and_last_exit() {
    let env = Env::new();
    let runs = env.path("runs");
    // Crashes twice, then stays up.
    let script = format!(
        "echo run >> {r}; [ $(wc -l < {r}) -ge 3 ] && exec sleep 1000; exit 7",
        r = runs.display()
    );
    env.start(
        "flaky",
        &["--respawn", "--respawn-delay", "0.01"],
        &["sh", "-c", &script],
    );
    wait_until("two restarts", || {
        env.status_json("flaky")
            .first()
            .is_some_and(|s| s["restarts"] == 2 && s["child_pid"].is_number())
    });
    let s = &env.status_json("flaky")[0];
    assert_eq!(s["last_exit"], "status 7");
    let text = String::from_utf8(env.run(["--status", "flaky"]).stdout).unwrap();
    assert!(text.contains("status 7"), "{text}");
}

#[test]
fn stop_request_never_respawns() {
    let env = Env::new();
    let runs = env.path("runs");
    env.start(
        "nore",
        &["--respawn"],
        &[
            "sh",
            "-c",
            &format!("echo run >> {}; exec sleep 1000", runs.display()),
        ],
    );
    wait_until("first run", || lines(&runs) == 1);
    assert_eq!(env.status(["--stop", "nore"]), 0);
    assert_eq!(env.check("nore"), 3);
    assert_eq!(lines(&runs), 1);
}

#[test]
fn memory_ceiling_restarts_command() {
    let env = Env::new();
    let log = env.path("mem.log");
    // The shell holds a 40 MB string: past a 16 MB ceiling.
    let script = "x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 1000";
    env.start(
        "mem",
        &[
            "--memory-limit",
            "16M",
            "--respawn",
            "--respawn-delay",
            "0.01",
            "--stop-timeout",
            "1",
            "--log",
            log.to_str().unwrap(),
        ],
        &["sh", "-c", script],
    );
    wait_until("a memory restart", || {
        env.status_json("mem")
            .first()
            .is_some_and(|s| s["restarts"].as_u64().unwrap_or(0) >= 1)
    });
    let text = read(&log);
    assert!(text.contains("over the limit of 16.0M"), "{text}");
}

#[test]
fn memory_ceiling_without_respawn_stops_for_good() {
    let env = Env::new();
    let script = "x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 1000";
    env.start(
        "memstop",
        &["--memory-limit", "16M", "--stop-timeout", "1"],
        &["sh", "-c", script],
    );
    wait_gone(&env, "memstop");
}

#[test]
fn hup_usr1_usr2_reach_command() {
    let env = Env::new();
    let got = env.path("got");
    let script = format!(
        "trap 'echo HUP >> {g}' HUP; trap 'echo USR1 >> {g}' USR1; trap 'echo USR2 >> {g}' USR2; echo ready >> {g}; while :; do sleep 0.05; done",
        g = got.display()
    );
    env.start("sig", &[], &["sh", "-c", &script]);
    wait_until("trap set", || read(&got).contains("ready"));
    let sup = env.read_pid("sig", 1).unwrap();
    for (sig, word) in [
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
    ] {
        kill(sup, sig);
        wait_until(&format!("{word} forwarded"), || read(&got).contains(word));
    }
    assert_eq!(
        env.check("sig"),
        0,
        "forwarded signals do not stop the supervisor"
    );
}

#[test]
fn term_ignoring_command_is_killed_after_the_grace() {
    let env = Env::new();
    let log = env.path("stub.log");
    let ready = env.path("ready");
    let marker = "sup-stubborn-marker";
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    env.start(
        "stub",
        &["--stop-timeout", "0.3", "--log", log.to_str().unwrap()],
        &["sh", "-c", &script, marker],
    );
    wait_until("TERM trapped", || ready.exists());
    let sup = env.read_pid("stub", 1).unwrap();
    kill(sup, libc::SIGTERM);
    wait_until("stubborn COMMAND killed", || {
        pids_with_arg(marker).is_empty()
    });
    wait_gone(&env, "stub");
    assert!(read(&log).contains("sending SIGKILL"));
}

#[test]
fn second_term_kills_at_once() {
    let env = Env::new();
    let log = env.path("t2.log");
    let ready = env.path("ready");
    let marker = "sup-term2-marker";
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    env.start(
        "term2",
        &["--stop-timeout", "1000", "--log", log.to_str().unwrap()],
        &["sh", "-c", &script, marker],
    );
    wait_until("TERM trapped", || ready.exists());
    let sup = env.read_pid("term2", 1).unwrap();
    kill(sup, libc::SIGTERM);
    wait_until("graceful stop began", || read(&log).contains("stopping"));
    kill(sup, libc::SIGTERM);
    wait_until("killed long before the 1000 s grace", || {
        pids_with_arg(marker).is_empty()
    });
    wait_gone(&env, "term2");
}

#[test]
fn stdout_and_stderr_reach_the_log_file() {
    let env = Env::new();
    let log = env.path("out.log");
    env.start(
        "out",
        &["--log", log.to_str().unwrap()],
        &[
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; printf partial",
        ],
    );
    wait_gone(&env, "out");
    let text = read(&log);
    for want in [
        "to-stdout",
        "to-stderr",
        "partial",
        "started sh as PID",
        "exited (status 0)",
        "exiting",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The unterminated last line is written before the exit event.
    let partial = text.find("partial").unwrap();
    assert!(partial < text.find("exited (status 0)").unwrap(), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn log_follows_rotation_without_copytruncate() {
    let env = Env::new();
    let log = env.path("rot.log");
    env.start(
        "rot",
        &["--log", log.to_str().unwrap()],
        &["sh", "-c", "while :; do echo tick; sleep 0.05; done"],
    );
    wait_until("first lines", || read(&log).contains("tick"));
    let rotated = env.path("rot.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    wait_until("log reopened at its path", || read(&log).contains("tick"));
    assert!(read(&rotated).contains("tick"));
}

#[test]
fn syslog_gets_one_record_per_line_with_priorities() {
    let env = Env::new();
    let sock_path = env.path("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    env.start(
        "sl",
        &["--syslog", "--syslog-socket", sock_path.to_str().unwrap()],
        &["sh", "-c", "echo out-line; echo err-line >&2; sleep 1000"],
    );
    let mut records = Vec::new();
    wait_until("both lines in syslog", || {
        let mut buf = [0u8; 2048];
        if let Ok(n) = sock.recv(&mut buf) {
            records.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        records.iter().any(|r| r.contains("out-line"))
            && records.iter().any(|r| r.contains("err-line"))
    });
    let out = records.iter().find(|r| r.contains("out-line")).unwrap();
    let err = records.iter().find(|r| r.contains("err-line")).unwrap();
    // daemon facility (3<<3): info = 30, err = 27; tagged with NAME.
    assert!(out.starts_with("<30>sl["), "{out}");
    assert!(err.starts_with("<27>sl["), "{err}");
    assert!(
        records
            .iter()
            .any(|r| r.starts_with("<29>sl[") && r.contains("started")),
        "{records:?}"
    );
}

#[test]
fn dead_syslog_never_stalls_command() {
    let env = Env::new();
    let sock_path = env.path("dead.sock");
    // Bound but never read: the queue fills up.
    let _sock = UnixDatagram::bind(&sock_path).unwrap();
    let done = env.path("done");
    // 1 MB in 10,000 lines: far more than a pipe buffer (64 KiB) and the
    // socket's queue hold, so COMMAND only finishes if the supervisor keeps
    // draining its output while syslog accepts nothing.
    let script = format!(
        "head -c 1000000 /dev/zero | tr '\\0' x | fold -w 100; touch {}; sleep 1000",
        done.display()
    );
    env.start(
        "deadlog",
        &["--syslog", "--syslog-socket", sock_path.to_str().unwrap()],
        &["sh", "-c", &script],
    );
    wait_until("COMMAND wrote all its lines", || done.exists());
}

#[test]
fn chdir_umask_and_env_apply_to_command() {
    let env = Env::new();
    let out = env.path("env.out");
    let workdir = env.path("work");
    std::fs::create_dir(&workdir).unwrap();
    let script = format!(
        "{{ pwd; umask; echo \"$FOO\"; echo \"$RDAEMON_NAME $RDAEMON_SLOT\"; }} > {o}.tmp; mv {o}.tmp {o}",
        o = out.display()
    );
    env.start(
        "ident",
        &[
            "--chdir",
            workdir.to_str().unwrap(),
            "--umask",
            "027",
            "--env",
            "FOO=bar baz",
        ],
        &["sh", "-c", &script],
    );
    wait_until("COMMAND wrote its environment", || out.exists());
    let text = read(&out);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got,
        vec![workdir.to_str().unwrap(), "0027", "bar baz", "ident 1"]
    );
}

#[test]
fn user_option_drops_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new();
    let outdir = env.path("out");
    std::fs::create_dir(&outdir).unwrap();
    std::fs::set_permissions(&outdir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        env.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = outdir.join("id");
    let script = format!(
        "id -u > {o}.tmp; id -g >> {o}.tmp; mv {o}.tmp {o}",
        o = out.display()
    );
    env.start("user", &["--user", "nobody"], &["sh", "-c", &script]);
    wait_until("COMMAND ran as nobody", || out.exists());
    let text = read(&out);
    assert_eq!(text.lines().next(), Some("65534"), "{text}");
    assert_eq!(
        env.status(["--name", "x", "--user", "no-such-user-here", "--", "true"]),
        1
    );
}

#[test]
fn term_while_backing_off_exits_cleanly() {
    let env = Env::new();
    let log = env.path("bo.log");
    env.start(
        "bo",
        &[
            "--respawn",
            "--respawn-delay",
            "1000",
            "--log",
            log.to_str().unwrap(),
        ],
        &["false"],
    );
    wait_until("backing off", || read(&log).contains("restarting in"));
    let sup = env.read_pid("bo", 1).unwrap();
    kill(sup, libc::SIGTERM);
    wait_gone(&env, "bo");
    assert!(read(&log).contains("while waiting to restart"));
}

#[test]
fn log_file_with_another_hard_link_is_refused() {
    let env = Env::new();
    let victim = env.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let log = env.path("planted.log");
    std::fs::hard_link(&victim, &log).unwrap();
    let out = env.run([
        "--name",
        "hl",
        "--log",
        log.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo leaked",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("planted.log") && msg.contains("hard links"),
        "{msg}"
    );
    assert_eq!(read(&victim), "precious\n");
    assert_eq!(env.check("hl"), 3, "the failed start released its slot");
}

/// The state file's `key=value` line for slot 1 of NAME.
fn state_value(env: &Env, name: &str, key: &str) -> Option<String> {
    read(&env.pid_dir.join(format!("{name}.1.state")))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// The restart signal (what `--restart` sends) stops COMMAND's tree and
/// starts it afresh at once in the same slot: `run` and `restarts` grow,
/// the phase is `running` again, and nothing of the old tree is left.
#[test]
fn restart_signal_starts_command_afresh_in_place() {
    let env = Env::new();
    let marker = "supervise-restart-marker";
    env.start("rst", &[], &["sh", "-c", "sleep 1000 & wait; :", marker]);
    let sup = env.read_pid("rst", 1).unwrap();
    wait_until("first run published", || {
        state_value(&env, "rst", "run").as_deref() == Some("1")
    });
    // sh's child shows sh's command line until it has exec'd sleep.
    wait_until("one sh", || pids_with_arg(marker).len() == 1);
    let old = pids_with_arg(marker);
    kill(sup, libc::SIGRTMAX() - 2);
    wait_until("second run running", || {
        state_value(&env, "rst", "run").as_deref() == Some("2")
            && state_value(&env, "rst", "phase").as_deref() == Some("running")
    });
    assert_eq!(state_value(&env, "rst", "restarts").as_deref(), Some("1"));
    assert_eq!(env.read_pid("rst", 1), Some(sup), "the same supervisor");
    assert!(old.iter().all(|&p| !alive(p)), "the old COMMAND is gone");
    wait_until("one new sh", || pids_with_arg(marker).len() == 1);
    assert_eq!(env.status(["--stop", "rst"]), 0);
    assert!(pids_with_arg(marker).is_empty());
}

/// Without `--respawn`, a `--restart` whose new run exits at once is not
/// reported as restarted: the run is `starting` until it settled, and its
/// exit ends the supervisor (the slot is released), which `--restart`
/// reports as the slot failing to come up.
#[test]
fn restart_whose_new_run_dies_at_once_is_not_restarted() {
    let env = Env::new();
    let flag = env.path("first-run-done");
    let marker = "supervise-restart-dies-marker";
    let script = format!(
        "if [ -e {f} ]; then echo dying >&2; exit 3; fi; touch {f}; while :; do sleep 0.05; done",
        f = flag.display()
    );
    env.start("rdie", &[], &["sh", "-c", &script, marker]);
    wait_until("first run up", || flag.exists());
    let sup = env.read_pid("rdie", 1).unwrap();
    let out = env.run(["--restart", "rdie", "--timeout", "20"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "reported restarted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("supervisor gone", || !alive(sup));
    assert!(
        !env.pid_file("rdie", 1).exists(),
        "the slot was not released"
    );
    assert!(pids_with_arg(marker).is_empty());
}

/// Under `--etcd`, a supervisor killed with SIGKILL takes COMMAND with it
/// even when COMMAND ignores SIGTERM: its death signal is SIGKILL, because
/// nobody can renew the cluster lease any more, and a COMMAND outliving it
/// would overlap with another host's copy.
#[cfg(feature = "etcd")]
#[test]
fn killed_supervisor_with_a_cluster_lease_takes_a_term_ignoring_command_along() {
    let Some(etcd) = cluster::Etcd::start() else {
        return;
    };
    let env = Env::new();
    let ready = env.path("ready");
    let marker = "sup-etcd-pdeath-marker";
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let out = env
        .cmd()
        .env_remove("RDAEMON_ETCD")
        .args(["--name", "pd", "--etcd", &etcd.url()])
        .args(["--cluster-max-peers", "1", "--lease-ttl", "10"])
        .args(["--stop-timeout", "1", "--", "sh", "-c", &script, marker])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("TERM trapped", || ready.exists());
    let sup = env.read_pid("pd", 1).expect("a supervisor PID");
    kill(sup, libc::SIGKILL);
    wait_until("COMMAND killed with its supervisor", || {
        pids_with_arg(marker).is_empty()
    });
}

/// COMMAND's environment has one entry per name, the last value winning:
/// `--env` replaces a variable rdaemon inherited instead of adding a
/// second entry (which `getenv` and the PATH search could read
/// differently).
#[test]
fn command_environment_has_one_entry_per_name() {
    let env = Env::new();
    let dump = env.path("env.txt");
    let out = env
        .cmd()
        .env("RDAEMON_TEST_VAR", "inherited")
        .args(["--name", "envd", "--foreground", "--env"])
        .arg("RDAEMON_TEST_VAR=mine")
        .args(["--", "sh", "-c", "env > \"$0\""])
        .arg(&dump)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = std::fs::read_to_string(&dump).unwrap();
    let entries: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("RDAEMON_TEST_VAR="))
        .collect();
    assert_eq!(entries, ["RDAEMON_TEST_VAR=mine"], "{text}");
}

/// A file that is neither a program nor a `#!` script is not handed to
/// /bin/sh (as execvp(3) would): the start fails with 126 and says why.
#[test]
fn file_without_interpreter_line_is_not_run_by_sh() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let marker = env.path("ran");
    let script = env.path("plain.txt");
    std::fs::write(&script, format!("touch {}\nsleep 300\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(["--name", "plain", "--", script.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(err.contains("nor a script with a #! line"), "{err}");
    assert!(!marker.exists(), "the file was run by a shell");
    assert_eq!(env.check("plain"), 3);
}
