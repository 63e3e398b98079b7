//! Issue 13: an honest lifecycle for real workers. A strict command line,
//! planned recycling that is never a crash, health states that tell the
//! truth (`starting`, `backoff`, `orphaned`, `failed`), `--stop` honouring
//! the peer's own grace, start failures that say so and hold nothing, one
//! PID directory per user, long names with `--notify`, and readable logs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tree::*;
use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(path: &std::path::Path) -> usize {
    read(path).lines().count()
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------- (1) CLI

/// Words no option takes, and options of one mode given to another, are
/// usage errors (2) naming the word, in every mode; nothing is stopped.
#[test]
fn stray_words_and_foreign_options_are_usage_errors() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let m = mark("mailer");
    let sleep = marked_sleep(&env, &m);
    env.start("mailer", &[], &[s(&sleep), "300"]);
    let pid = marked(&m);
    assert_eq!(pid.len(), 1);
    let cases: &[(&[&str], &str)] = &[
        (&["--stop", "mailer", "now"], "now"),
        (&["--stop", "mailer", "--", "now"], "now"),
        (&["--check", "mailer", "xyzzy"], "xyzzy"),
        (&["--check", "mailer", "xyzzy", "--min-peers", "5"], "xyzzy"),
        (&["--status", "mailer", "xyzzy"], "xyzzy"),
        (&["--check", "mailer", "--respawn"], "--respawn"),
        (&["--check", "mailer", "--json"], "--json"),
        (&["--check", "mailer", "--timeout", "3"], "--timeout"),
        (&["--stop", "mailer", "--max-age", "3"], "--max-age"),
        (&["--stop", "mailer", "--min-peers", "2"], "--min-peers"),
        (&["--stop", "mailer", "--respawn"], "--respawn"),
        (&["--status", "mailer", "--max-age", "3"], "--max-age"),
        (&["--status", "mailer", "--timeout", "3"], "--timeout"),
    ];
    let mut wrong = Vec::new();
    for (args, word) in cases {
        let out = run_within(&env, DEADLINE, *args);
        let err = stderr(&out);
        if out.status.code() != Some(2) || !err.contains(word) {
            wrong.push(format!(
                "rdaemon {}: exit {:?}, stderr {err:?} (want 2 naming {word:?})",
                args.join(" "),
                out.status.code()
            ));
        }
    }
    let still = marked(&m);
    assert!(
        wrong.is_empty() && still == pid,
        "not usage errors:\n{}\nCOMMAND before {pid:?}, after {still:?}",
        wrong.join("\n")
    );
    assert_eq!(env.check("mailer"), 0, "nothing was stopped");
}

// ---------------------------------------------------------- (2) recycling
//
// Crashing COMMANDs here sleep 0.3 s before they exit: a start may report
// a COMMAND that dies at once as a failed start (item 5), and these tests
// are about what happens after a start that succeeded.

/// Starts NAME with `opts` and `command` under `--respawn`, and waits
/// until it ran six times (each run appends to `runs`) without giving up.
fn recycles_at_once(env: &Env, name: &str, opts: &[&str], command: &[&str], runs: &Path) {
    let mut all = vec!["--respawn"];
    all.extend_from_slice(opts);
    env.start(name, &all, command);
    wait_until("six runs, each restarted at once", || lines(runs) >= 6);
    let st = slot1(env, name).expect("the slot is listed");
    assert_ne!(st["state"], "failed", "{st}");
    stop(env, name);
}

/// A worker that exits 0 after running longer than `--min-uptime` (a job
/// limit, like `queue:work --max-jobs`) restarts at once, far more often
/// than `--max-respawns`, without back-off (30 s) and without giving up.
#[test]
fn long_runs_recycle_at_once_and_never_give_up() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let runs = env.path("runs");
    let script = format!("echo run >> {}; sleep 0.8; exit 0", runs.display());
    let opts = [
        "--min-uptime",
        "0.5",
        "--max-respawns",
        "2",
        "--respawn-delay",
        "30",
    ];
    recycles_at_once(&env, "jobs", &opts, &["sh", "-c", &script], &runs);
}

/// A status in `--recycle-codes` (Laravel's 12) is a planned recycle even
/// after a short run: at once, never counted.
#[test]
fn recycle_codes_restart_at_once_and_never_count() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let runs = env.path("runs");
    let script = format!("echo run >> {}; sleep 0.3; exit 12", runs.display());
    let opts = [
        "--recycle-codes",
        "12",
        "--min-uptime",
        "5",
        "--max-respawns",
        "2",
        "--respawn-delay",
        "30",
    ];
    recycles_at_once(&env, "rc", &opts, &["sh", "-c", &script], &runs);
}

/// A worker stopped for `--memory-limit` is recycled at once, and such
/// stops never count toward `--max-respawns`.
#[test]
fn memory_recycles_restart_at_once_and_never_count() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let runs = env.path("runs");
    let hog = memory_hog(&env, &mark("memworker"));
    env.start(
        "memrc",
        &[
            "--respawn",
            "--memory-limit",
            "40M",
            "--max-respawns",
            "1",
            "--respawn-delay",
            "30",
            "--stop-timeout",
            "2",
        ],
        &[s(&hog), s(&runs)],
    );
    wait_until("four memory-recycled runs", || lines(&runs) >= 4);
    stop(&env, "memrc");
}

/// A crash loop backs off, counts, gives up and leaves a `failed`
/// tombstone: `--check` says 1 and `--status` shows the last exit and the
/// reason, until the slot's next start overwrites it.
#[test]
fn crash_loop_gives_up_and_leaves_a_failed_tombstone() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let runs = env.path("runs");
    let script = format!(
        "echo run >> {}; echo boom >&2; sleep 0.3; exit 3",
        runs.display()
    );
    env.start(
        "tomb",
        &[
            "--respawn",
            "--max-respawns",
            "2",
            "--respawn-delay",
            "0.01",
        ],
        &["sh", "-c", &script],
    );
    let mut last = (0, Vec::new(), String::new());
    let gave_up = poll_until(DEADLINE, || {
        last = (
            env.check("tomb"),
            env.status_json("tomb"),
            read(&env.pid_dir.join("tomb.1.state")),
        );
        (last.0 == 1).then_some(())
    });
    assert!(
        gave_up.is_some(),
        "--check never said 1 after the crash loop: it says {}; --status {:?}; state file {:?}; {} runs",
        last.0,
        last.1,
        last.2,
        lines(&runs)
    );
    let n = lines(&runs);
    assert!(n >= 2, "{n} runs");
    let all = env.status_json("tomb");
    assert_eq!(all.len(), 1, "{all:?}");
    let st = &all[0];
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["last_exit"], "status 3", "{st}");
    assert!(st["pid"].is_null(), "{st}");
    let text = String::from_utf8_lossy(&env.run(["--status", "tomb"]).stdout).into_owned();
    assert!(
        text.contains("failed") && text.contains("status 3") && text.contains("--max-respawns"),
        "--status shows the state, the last exit and the reason:\n{text}"
    );
    let verbose = env.run(["--check", "tomb", "--verbose"]);
    assert_eq!(verbose.status.code(), Some(1));
    let why = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        why.contains("failed"),
        "--check --verbose says why: {why:?}"
    );
    assert_eq!(lines(&runs), n, "no run after giving up");
    // The next start overwrites the tombstone.
    let sleep = marked_sleep(&env, &mark("tomb-next"));
    env.start("tomb", &[], &[s(&sleep), "300"]);
    assert_eq!(env.check("tomb"), 0);
    let st = slot1(&env, "tomb").expect("the slot is listed");
    assert_eq!(st["state"], "running", "{st}");
    stop(&env, "tomb");
    assert_eq!(env.check("tomb"), 3, "a stop leaves no tombstone");
}

// ------------------------------------------------------------- (3) states

/// Between failed runs the slot is held but not running: `--status` says
/// `backoff`, `--check` says 150, `--check --verbose` names the slot and why.
#[test]
fn backoff_is_held_but_not_running() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    env.start(
        "bo",
        &["--respawn", "--respawn-delay", "30"],
        &["sh", "-c", "sleep 0.3; exit 1"],
    );
    let mut seen = None;
    let backoff = poll_until(DEADLINE, || {
        seen = slot1(&env, "bo");
        seen.as_ref().filter(|st| st["state"] == "backoff").cloned()
    });
    assert!(backoff.is_some(), "--status never said backoff: {seen:?}");
    assert_eq!(
        env.check("bo"),
        150,
        "a slot backing off is held, not running"
    );
    let out = env.run(["--check", "bo", "--verbose"]);
    assert_eq!(out.status.code(), Some(150));
    let why = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        (why.contains("backoff") || why.contains("backing off")) && why.contains("status 1"),
        "--verbose names the slot's state and why: {why:?}"
    );
}

/// A cron line that wants 3 peers during a crash loop of all 3 reports
/// trouble: `--check --min-peers 3` says 150, and a `--min-peers 3` start
/// neither succeeds nor is a usage error.
#[test]
fn cron_min_peers_during_a_crash_loop_is_not_healthy() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let opts = ["--max-peers", "3", "--respawn", "--respawn-delay", "30"];
    for _ in 0..3 {
        env.start("cl", &opts, &["sh", "-c", "sleep 0.3; exit 1"]);
    }
    let mut last = 0;
    let unhealthy = poll_until(DEADLINE, || {
        last = env.status(["--check", "cl", "--min-peers", "3"]);
        (last == 150).then_some(())
    });
    assert!(
        unhealthy.is_some(),
        "--check --min-peers 3 says {last} while every peer backs off"
    );
    // Each peer backs off once its own 0.3 s run ends: the last of the
    // three may still run when the first check above says 150.
    wait_until(
        "every peer backs off: --check --min-peers 1 says 150",
        || env.status(["--check", "cl", "--min-peers", "1"]) == 150,
    );
    let out = run_within(
        &env,
        DEADLINE,
        [
            "--name",
            "cl",
            "--max-peers",
            "3",
            "--min-peers",
            "3",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 1",
        ],
    );
    let c = code(&out);
    assert!(
        c != 0 && c != 2,
        "a --min-peers 3 start with 3 peers backing off exited {c}: {}",
        stderr(&out)
    );
}

/// With `--notify`, a COMMAND that has not sent READY=1 is `starting`:
/// held, not running (`--check` 150); READY=1 makes it `running`.
#[test]
fn notify_slot_is_starting_until_ready() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let release = env.path("release");
    let sleep = marked_sleep(&env, &mark("starting"));
    let script = format!(
        "while [ ! -e {r} ]; do sleep 0.05; done; systemd-notify --ready; exec {s} 300",
        r = release.display(),
        s = sleep.display()
    );
    let mut starter = env
        .cmd()
        .args(["--name", "st", "--notify", "--ready-timeout", "60", "--"])
        .args(["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = None;
    let starting = poll_until(DEADLINE, || {
        seen = slot1(&env, "st");
        seen.as_ref()
            .filter(|st| st["state"] == "starting")
            .cloned()
    });
    let check = env.check("st");
    std::fs::write(&release, "").unwrap();
    let st = wait_child(&mut starter, DEADLINE, "the --notify start");
    assert!(starting.is_some(), "--status never said starting: {seen:?}");
    assert_eq!(
        check, 150,
        "a slot waiting for READY=1 is held, not running"
    );
    assert_eq!(st.code(), Some(0));
    assert_eq!(env.check("st"), 0);
    assert_eq!(slot1(&env, "st").expect("listed")["state"], "running");
    stop(&env, "st");
}

// --------------------------------------------------------------- (4) stop

/// A plain `--stop` waits for the peer's own `--stop-timeout` (30 s here):
/// a COMMAND that needs 12 s after SIGTERM (longer than the old fixed
/// 10 s) finishes its job, and nobody is SIGKILLed.
#[test]
fn stop_honours_the_peers_stop_timeout() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let got = env.path("got");
    let log = env.path("grace.log");
    let w_m = mark("grace");
    let worker = sh_script(
        &env,
        &w_m,
        &format!(
            "trap 'echo term >> {g}; sleep 12; echo done >> {g}; exit 0' TERM\n\
             echo ready >> {g}\nwhile :; do sleep 0.05; done",
            g = got.display()
        ),
    );
    env.start(
        "grace",
        &["--stop-timeout", "30", "--log", s(&log)],
        &[s(&worker)],
    );
    wait_until("worker ready", || read(&got).contains("ready"));
    stop(&env, "grace");
    assert!(
        read(&got).contains("done"),
        "COMMAND was cut short: {}\nlog:\n{}",
        read(&got),
        read(&log)
    );
    assert!(!read(&log).contains("SIGKILL"), "{}", read(&log));
    assert!(marked(&w_m).is_empty());
}

/// `--stop` leaves none of the slot's files behind (PID file, state,
/// notification socket; a log file is not a side file).
#[test]
fn stop_removes_side_files() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let sleep = marked_sleep(&env, &mark("side"));
    let script = format!("systemd-notify --ready; exec {} 300", sleep.display());
    env.start("side", &["--notify"], &["sh", "-c", &script]);
    let files = || slot_files(&env, "side");
    assert!(files().len() >= 2, "PID file and state file: {:?}", files());
    stop(&env, "side");
    assert!(files().is_empty(), "left behind: {:?}", files());
}

/// When `--timeout` is shorter than the grace, the SIGKILL is reported on
/// stderr and in the log.
#[test]
fn sigkill_on_stop_is_reported_and_logged() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let got = env.path("got");
    let log = env.path("kill.log");
    let w_m = mark("stubborn");
    let worker = sh_script(
        &env,
        &w_m,
        &format!(
            "trap '' TERM\necho ready >> {g}\nwhile :; do sleep 0.05; done",
            g = got.display()
        ),
    );
    env.start(
        "stub",
        &["--stop-timeout", "30", "--log", s(&log)],
        &[s(&worker)],
    );
    wait_until("worker ready", || read(&got).contains("ready"));
    let out = run_within(&env, DEADLINE, ["--stop", "stub", "--timeout", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(marked(&w_m).is_empty(), "the stubborn worker survived");
    assert!(
        stderr(&out).contains("SIGKILL"),
        "--stop did not report the SIGKILL: {:?}",
        stderr(&out)
    );
    wait_until("the SIGKILL is in the log", || {
        read(&log).contains("SIGKILL")
    });
}

// ---------------------------------------------------- (5) start failures

/// A `--notify` start that times out waiting for READY=1 fails, and by the
/// time the caller returns the slot is free (`--check` 3), even though
/// COMMAND takes 2 s to finish after SIGTERM.
#[test]
fn failed_ready_start_holds_nothing_when_it_returns() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let w_m = mark("never-ready");
    let worker = sh_script(
        &env,
        &w_m,
        "trap 'sleep 2; exit 0' TERM\nwhile :; do sleep 0.05; done",
    );
    let out = run_within(
        &env,
        Duration::from_secs(60),
        [
            "--name",
            "nr",
            "--notify",
            "--ready-timeout",
            "1",
            "--",
            s(&worker),
        ],
    );
    let check = env.check("nr");
    let left = marked(&w_m);
    assert_ne!(code(&out), 0, "the start must fail");
    assert_eq!(
        check,
        3,
        "--check right after the failed start returned (stderr {:?})",
        stderr(&out)
    );
    assert!(left.is_empty(), "COMMAND still runs: {left:?}");
}

/// A bad `--chdir` fails the start with 1 and names the directory (not
/// "cannot execute COMMAND" with 126/127).
#[test]
fn bad_chdir_fails_with_1_naming_the_directory() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let missing = env.path("no-such-dir");
    let file = env.path("a-file");
    std::fs::write(&file, "").unwrap();
    let mut cases = vec![(missing, vec![]), (file, vec![])];
    if root() {
        let locked = env.path("locked-dir");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
        cases.push((locked, vec!["--user", "nobody"]));
    } else {
        eprintln!("not root: the no-permission --chdir case (--user nobody) is skipped");
    }
    let mut wrong = Vec::new();
    for (dir, extra) in &cases {
        let mut args = vec!["--name", "cd", "--chdir", s(dir)];
        args.extend(extra.iter().copied());
        args.extend(["--", "true"]);
        let out = run_within(&env, DEADLINE, &args);
        let err = stderr(&out);
        if out.status.code() != Some(1) || !err.contains(s(dir)) {
            wrong.push(format!(
                "--chdir {}: exit {:?}, stderr {err:?}",
                dir.display(),
                out.status.code()
            ));
        }
        assert_eq!(env.check("cd"), 3, "a failed start holds nothing");
    }
    assert!(
        wrong.is_empty(),
        "want exit 1 naming the directory:\n{}",
        wrong.join("\n")
    );
}

/// A COMMAND that dies at once: the start says so, with its exit status
/// and its last stderr lines.
#[test]
fn command_dying_at_once_is_reported_with_status_and_stderr() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let log = env.path("die.log");
    let out = run_within(
        &env,
        DEADLINE,
        [
            "--name",
            "die",
            "--log",
            s(&log),
            "--",
            "sh",
            "-c",
            "echo 'bad config at line 7' >&2; exit 4",
        ],
    );
    let err = stderr(&out);
    assert_ne!(code(&out), 0, "the start reported success: {err:?}");
    assert!(
        err.contains("status 4") && err.contains("bad config at line 7"),
        "the start names the status and COMMAND's last stderr lines: {err:?}"
    );
    assert_eq!(env.check("die"), 3);
}

/// A script whose `#!` interpreter is missing exits 127 like a missing
/// COMMAND, but the message names the interpreter, not the script (which
/// exists); a `#!` line with DOS line endings is called out as such.
#[test]
fn missing_script_interpreter_is_named() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    for (name, first_line, expect) in [
        (
            "nointerp.sh",
            "#!/nonexistent/rdaemon-interp -x\n",
            "its #! interpreter /nonexistent/rdaemon-interp was not found",
        ),
        ("dos.sh", "#!/bin/sh\r\n", "DOS line endings"),
    ] {
        let script = env.path(name);
        std::fs::write(&script, format!("{first_line}exit 0\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run_within(&env, DEADLINE, ["--name", "interp", "--", s(&script)]);
        let err = stderr(&out);
        assert_eq!(code(&out), 127, "{err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!err.contains("No such file"), "{name}: {err}");
    }
}

// ------------------------------------------------------ (6) PID directory

/// The default PID directory (no `--pid-dir`, no `RDAEMON_PID_DIR`) for
/// the current user, where NAME's slot 1 lives.
fn default_slot(uid: u32, name: &str) -> std::path::PathBuf {
    let dir = if uid == 0 {
        "/run/rdaemon".to_string()
    } else {
        format!("/tmp/rdaemon-{uid}")
    };
    std::path::Path::new(&dir).join(format!("{name}.1.pid"))
}

/// The binary with the default PID directory, optionally as `nobody`
/// (through setpriv), with or without `XDG_RUNTIME_DIR`.
fn default_dir_cmd(as_nobody: bool, xdg: Option<&std::path::Path>) -> Command {
    let mut c = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin());
        c
    } else {
        Command::new(bin())
    };
    c.env_remove("RDAEMON_PID_DIR").env_remove("NOTIFY_SOCKET");
    match xdg {
        Some(d) => c.env("XDG_RUNTIME_DIR", d),
        None => c.env_remove("XDG_RUNTIME_DIR"),
    };
    c
}

/// Same user, `XDG_RUNTIME_DIR` set or not: one set of slots.
fn same_slots_with_and_without_xdg(as_nobody: bool) {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let xdg = env.path("xdg");
    std::fs::create_dir(&xdg).unwrap();
    if as_nobody {
        std::os::unix::fs::chown(&xdg, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let uid = if as_nobody {
        65534
    } else {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    };
    let name = mark(if as_nobody { "xdg-nobody" } else { "xdg" });
    let sleep = marked_sleep(&env, &name);
    // A log of its own: without one, output would go to NAME.log in the
    // shared default directory.
    let log = env.path("xdg.log");
    std::fs::write(&log, "").unwrap();
    if as_nobody {
        std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    }
    let start = |xdg_dir: Option<&std::path::Path>| {
        let mut c = default_dir_cmd(as_nobody, xdg_dir);
        c.args(["--name", &name, "--max-peers", "1", "--log"])
            .arg(&log)
            .arg("--")
            .arg(&sleep)
            .arg("300");
        output_within(&env, &mut c, DEADLINE)
    };
    let with_xdg = start(Some(&xdg));
    assert_eq!(code(&with_xdg), 0, "{}", stderr(&with_xdg));
    let slot = default_slot(uid, &name);
    let in_xdg: Vec<_> = std::fs::read_dir(&xdg)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let check = {
        let mut c = default_dir_cmd(as_nobody, None);
        c.args(["--check", &name]);
        code(&output_within(&env, &mut c, DEADLINE))
    };
    let second = start(None);
    let mut c = default_dir_cmd(as_nobody, None);
    c.args(["--stop", &name]);
    let stopped = output_within(&env, &mut c, Duration::from_secs(60));
    let mut c = default_dir_cmd(as_nobody, Some(&xdg));
    c.args(["--stop", &name]);
    let _ = output_within(&env, &mut c, Duration::from_secs(60));
    assert!(
        in_xdg.is_empty(),
        "XDG_RUNTIME_DIR changed the PID directory: {in_xdg:?}"
    );
    assert_eq!(
        check, 0,
        "--check without XDG_RUNTIME_DIR does not see the peer"
    );
    assert_eq!(
        code(&second),
        75,
        "a second --max-peers 1 start without XDG_RUNTIME_DIR: {}",
        stderr(&second)
    );
    assert_eq!(code(&stopped), 0, "{}", stderr(&stopped));
    assert!(!slot.exists(), "{} left behind", slot.display());
}

/// As the current user: the default PID directory ignores XDG_RUNTIME_DIR
/// (as root that is /run/rdaemon).
#[test]
fn default_pid_dir_ignores_xdg_runtime_dir() {
    same_slots_with_and_without_xdg(false);
}

/// As `nobody` (root only, through setpriv): `/tmp/rdaemon-65534` whether
/// or not XDG_RUNTIME_DIR is set.
#[test]
fn default_pid_dir_of_a_user_ignores_xdg_runtime_dir() {
    if !root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED default_pid_dir_of_a_user_ignores_xdg_runtime_dir: needs root and setpriv"
        );
        return;
    }
    same_slots_with_and_without_xdg(true);
}

/// A /tmp-like directory (mode 1777) in a fresh test directory, and an
/// [`Env`] whose PID directory lives in it; `None` (said loudly) when
/// systemd-tmpfiles is not installed.
fn fake_tmp(test: &str) -> Option<(Env, std::path::PathBuf)> {
    if Command::new("systemd-tmpfiles")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED {test}: systemd-tmpfiles is not installed");
        return None;
    }
    let base = Env::new();
    let faketmp = base.path("faketmp");
    std::fs::create_dir(&faketmp).unwrap();
    std::fs::set_permissions(&faketmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    Some((base.with_pid_dir(faketmp.join("rdaemon-test")), faketmp))
}

/// Sets the access and modification times of `old` (and of a junk file it
/// adds beside them) an hour back, waits until their change times too are
/// older than 1 s (those cannot be set back), and runs `systemd-tmpfiles
/// --clean` with an age of 1 s over `faketmp`; checks the junk went.
fn clean_with_short_age(env: &Env, faketmp: &Path, old: &[std::path::PathBuf]) {
    let junk = faketmp.join("old-junk");
    std::fs::write(&junk, "x").unwrap();
    let backdate = Command::new("touch")
        .args(["-a", "-m", "-d", "1 hour ago"])
        .arg(&junk)
        .args(old)
        .status()
        .unwrap();
    assert!(backdate.success());
    let backdated = Instant::now();
    let conf = env.path("tmpfiles.conf");
    std::fs::write(
        &conf,
        format!("d {} 1777 root root 1s\n", faketmp.display()),
    )
    .unwrap();
    wait_until("everything is older than the 1 s age", || {
        backdated.elapsed() > Duration::from_millis(2500)
    });
    let clean = output_within(
        env,
        Command::new("systemd-tmpfiles").arg("--clean").arg(&conf),
        DEADLINE,
    );
    assert!(clean.status.success(), "{}", stderr(&clean));
    assert!(
        !junk.exists(),
        "the clean did not run over {}",
        faketmp.display()
    );
}

/// `systemd-tmpfiles --clean` with an age shorter than the daemon's life,
/// over a /tmp-like directory holding the PID directory: the slot's files
/// survive and the daemon keeps its slot; older junk beside it is cleaned.
#[test]
fn slot_files_survive_tmpfiles_clean() {
    let Some((env, faketmp)) = fake_tmp("slot_files_survive_tmpfiles_clean") else {
        return;
    };
    let _sweep = Sweep::new(&env);
    let m = mark("aged");
    let sleep = marked_sleep(&env, &m);
    env.start("aged", &[], &[s(&sleep), "300"]);
    let pid = marked(&m);
    // The scenario itself: the daemon outlives the age.
    clean_with_short_age(&env, &faketmp, &[]);
    assert!(
        env.pid_file("aged", 1).exists(),
        "the PID file was cleaned away"
    );
    assert_eq!(env.check("aged"), 0);
    assert_eq!(marked(&m), pid, "the daemon kept running");
    let st = slot1(&env, "aged").expect("the slot is listed");
    assert_eq!(st["state"], "running", "{st}");
    stop(&env, "aged");
}

/// An orphaned slot (supervisor killed with SIGKILL, COMMAND ignoring the
/// SIGTERM its death signal brings) keeps the PID directory's shared lock
/// through COMMAND, so `systemd-tmpfiles --clean` with an age shorter than
/// the files' leaves them alone, and a new start still finds the slot held.
#[test]
fn orphaned_slot_files_survive_tmpfiles_clean() {
    let Some((env, faketmp)) = fake_tmp("orphaned_slot_files_survive_tmpfiles_clean") else {
        return;
    };
    let _sweep = Sweep::new(&env);
    let ready = env.path("trapped");
    let m = mark("orphan-tmpfiles");
    let script = sh_script(
        &env,
        &m,
        &format!(
            "trap '' TERM; touch {}; while :; do sleep 0.05; done",
            s(&ready)
        ),
    );
    env.start("orph", &[], &[s(&script)]);
    wait_until("TERM trapped", || ready.exists());
    let sup = env.read_pid("orph", 1).expect("a supervisor PID");
    kill(sup, libc::SIGKILL);
    wait_until("supervisor dead", || !alive(sup));
    wait_until("slot shows orphaned", || {
        slot1(&env, "orph").is_some_and(|s| s["state"] == "orphaned")
    });
    let pid_dir = faketmp.join("rdaemon-test");
    let mut old: Vec<_> = std::fs::read_dir(&pid_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    old.push(pid_dir);
    clean_with_short_age(&env, &faketmp, &old);
    assert!(
        env.pid_file("orph", 1).exists(),
        "the orphan's PID file was cleaned away"
    );
    let out = env.run(["--name", "orph", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "a second copy started: {}",
        stderr(&out)
    );
    assert_eq!(env.status(["--stop", "orph", "--timeout", "1"]), 0);
    wait_until("orphan gone", || marked(&m).is_empty());
}

// ------------------------------------------------------ (7) long names

/// Starts a `--notify --watchdog` COMMAND that speaks sd_notify over
/// `NOTIFY_SOCKET`, as NAME (`name_len` bytes) in a PID directory of
/// `dir_len` bytes; checks the start succeeds and the slot is healthy.
fn notify_works_with_long_paths(dir_len: usize, name_len: usize, tag: &str) {
    let base = Env::new();
    let prefix = base.tmp.path().to_str().unwrap().len() + 1;
    assert!(prefix < 60, "temp dir too long for this test: {prefix}");
    let dir = base.tmp.path().join("d".repeat(dir_len - prefix));
    assert_eq!(dir.to_str().unwrap().len(), dir_len);
    let env = base.with_pid_dir(dir);
    let _sweep = Sweep::new(&env);
    let name = format!("worker-{}", "a".repeat(name_len - 7));
    assert_eq!(name.len(), name_len);
    let worker = py_script(
        &env,
        &mark(tag),
        "import os, socket, time\n\
         addr = os.environ['NOTIFY_SOCKET']\n\
         if addr.startswith('@'):\n    addr = '\\0' + addr[1:]\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1', addr)\n\
         while True:\n    s.sendto(b'WATCHDOG=1', addr)\n    time.sleep(0.2)",
    );
    let out = run_within(
        &env,
        DEADLINE,
        [
            "--name",
            &name,
            "--notify",
            "--watchdog",
            "3",
            "--ready-timeout",
            "20",
            "--",
            s(&worker),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.check(&name), 0);
    stop(&env, &name);
}

/// A 52-character NAME in a 64-character PID directory works with
/// `--notify` and `--watchdog` (the socket path must fit `sun_path`).
#[test]
fn long_name_in_long_pid_dir_works_with_notify_and_watchdog() {
    notify_works_with_long_paths(64, 52, "longname");
}

/// A 64-character NAME in a 101-byte PID directory, where not even the
/// short hashed socket name fits `sun_path`: the socket goes to the short
/// per-user directory instead, and `--notify` works.
#[test]
fn notify_works_when_the_pid_dir_is_too_long_for_a_socket() {
    notify_works_with_long_paths(101, 64, "longdir");
}

/// The `--status` table shows the state name and COMMAND's STATUS= text;
/// the JSON has COMMAND's own start time beside the supervisor's.
#[test]
fn status_shows_state_status_text_and_command_start() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let sleep = marked_sleep(&env, &mark("table"));
    let script = format!(
        "systemd-notify --ready --status='serving jobs'; exec {} 300",
        sleep.display()
    );
    env.start("table", &["--notify"], &["sh", "-c", &script]);
    let st = slot1(&env, "table").expect("the slot is listed");
    assert_eq!(st["state"], "running", "{st}");
    assert!(st["command_started_unix"].is_u64(), "{st}");
    let text = String::from_utf8_lossy(&env.run(["--status", "table"]).stdout).into_owned();
    assert!(
        text.contains("running") && text.contains("serving jobs"),
        "{text}"
    );
    stop(&env, "table");
}

// ----------------------------------------------------------------- (8) logs

/// An unterminated last line is written before that run's "exited" event,
/// on a line of its own, never glued to the next run's first line.
#[test]
fn unterminated_last_line_is_flushed_before_the_exit_event() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let log = env.path("partial.log");
    env.start(
        "part",
        &[
            "--respawn",
            "--respawn-delay",
            "0.01",
            "--max-respawns",
            "5",
            "--log",
            s(&log),
        ],
        &[
            "sh",
            "-c",
            "sleep 0.3; echo first-line; printf tail-no-newline; exit 1",
        ],
    );
    wait_until("three runs logged", || {
        read(&log).lines().filter(|l| l.contains("exited")).count() >= 3
    });
    let text = read(&log);
    let all: Vec<&str> = text.lines().collect();
    for l in &all {
        if l.contains("tail-no-newline") || l.contains("first-line") {
            assert!(
                l.ends_with("tail-no-newline")
                    && !l.contains("first-line")
                    && !l.contains("exited")
                    || l.ends_with("first-line") && !l.contains("tail-no-newline"),
                "a glued line {l:?} in:\n{text}"
            );
        }
    }
    let tails: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].contains("tail-no-newline"))
        .collect();
    let exits: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].contains("exited"))
        .collect();
    assert!(tails.len() >= 3, "{text}");
    for (k, (t, e)) in tails.iter().zip(&exits).enumerate() {
        assert!(
            t < e,
            "run {}: its last line comes after its exit event:\n{text}",
            k + 1
        );
    }
}

/// Whether `line` starts with `YYYY-MM-DDTHH:MM:SS.mmmZ ` and returns the rest.
fn strip_timestamp(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ ";
    if b.len() < pattern.len() {
        return None;
    }
    let ok = pattern.iter().zip(b).all(|(&p, &c)| {
        if p == b'd' {
            c.is_ascii_digit()
        } else {
            p == c
        }
    });
    ok.then(|| &line[pattern.len()..])
}

/// `--timestamps`: every line in the log is `2026-11-29T12:00:00.123Z
/// NAME.SLOT: text`, COMMAND's output and rdaemon's events alike.
#[test]
fn timestamps_prefix_every_log_line() {
    let env = Env::new();
    let _sweep = Sweep::new(&env);
    let log = env.path("ts.log");
    let sleep = marked_sleep(&env, &mark("ts"));
    let script = format!(
        "echo hello-ts; echo err-ts >&2; exec {} 300",
        sleep.display()
    );
    env.start(
        "ts",
        &["--timestamps", "--log", s(&log)],
        &["sh", "-c", &script],
    );
    wait_until("both lines logged", || {
        let t = read(&log);
        t.contains("hello-ts") && t.contains("err-ts")
    });
    stop(&env, "ts");
    let text = read(&log);
    for l in text.lines().filter(|l| !l.is_empty()) {
        let rest = strip_timestamp(l).unwrap_or_else(|| panic!("no timestamp: {l:?}\n{text}"));
        assert!(rest.starts_with("ts.1: "), "no NAME.SLOT: {l:?}");
    }
    assert!(
        text.lines()
            .any(|l| strip_timestamp(l) == Some("ts.1: hello-ts")),
        "{text}"
    );
}
