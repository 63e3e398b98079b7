//! The fleet operations of the CLI: `--min-peers` on a start, `--stop
//! --slot`, `--status` of every name, the health states `--check` and
//! `--status` read from the holders' state files, and `--restart`'s roll.
//!
//! States a supervisor publishes (backoff, starting, failed tombstones)
//! are produced by fake holders (`tests/fake`): real processes that really
//! hold the slot's lock, with a state file the test chooses. `--restart`
//! is exercised against fake supervisors that act on the real restart
//! signal, and against real supervisors.

mod common;
mod fake;

use std::time::Duration;

use common::{Env, alive, pids_with_arg, wait_until};
use fake::{FakeHolder, FakeSpec, events, write_state};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exactly `n` copies of the COMMAND marked `marker` run. A shell that
/// has just forked, and not yet exec'd, its own child shows the marker for
/// a moment too, so the count is awaited, with a deadline, not sampled.
fn assert_copies(marker: &str, n: usize) {
    wait_until(&format!("{n} copies of {marker}"), || {
        pids_with_arg(marker).len() == n
    });
}

/// The cron watchdog line: keep 3 of at most 3 peers of `name` running.
fn ensure_three<'a>(name: &'a str, marker: &'a str) -> [&'a str; 12] {
    [
        "--name",
        name,
        "--max-peers",
        "3",
        "--min-peers",
        "3",
        "-q",
        "--",
        "sh",
        "-c",
        "sleep 1000; :",
        marker,
    ]
}

#[test]
fn min_peers_starts_only_the_missing_peers() {
    let env = Env::new();
    let marker = "fleet-minpeers-marker";
    let line = ensure_three("mp", marker);
    assert_eq!(env.status(line), 0);
    assert_copies(marker, 3);
    let before = env.status_json("mp");
    // Idempotent: nothing to start, exit 0, the same peers.
    assert_eq!(env.status(line), 0);
    assert_copies(marker, 3);
    let after = env.status_json("mp");
    let pids = |v: &[serde_json::Value]| v.iter().map(|s| s["pid"].clone()).collect::<Vec<_>>();
    assert_eq!(pids(&before), pids(&after));

    // Scale down one slot, then the same line brings it back.
    let out = env.run(["--stop", "mp", "--slot", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<u64> = env
        .status_json("mp")
        .iter()
        .map(|s| s["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(left, [1, 3]);
    assert_copies(marker, 2);
    assert_eq!(env.status(["--check", "mp", "--min-peers", "3"]), 150);
    assert_eq!(env.status(line), 0);
    assert_copies(marker, 3);
    assert_eq!(env.status(["--check", "mp", "--min-peers", "3"]), 0);

    // K > N is a usage error, and starts nothing.
    let out = env.run([
        "--name",
        "mp2",
        "--max-peers",
        "2",
        "--min-peers",
        "3",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--min-peers"), "{}", stderr(&out));
    assert!(!env.pid_file("mp2", 1).exists());
}

#[test]
fn min_peers_raced_from_several_shells_never_exceeds_n() {
    let env = Env::new();
    let marker = "fleet-race-marker";
    let bin = common::bin();
    let pid_dir = env.pid_dir.clone();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let pid_dir = pid_dir.clone();
            std::thread::spawn(move || {
                std::process::Command::new(bin)
                    .env("RDAEMON_PID_DIR", &pid_dir)
                    .args(ensure_three("race", marker))
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap()
            })
        })
        .collect();
    // Registers the name for cleanup; a usage error, so it starts nothing
    // that could take a slot in the middle of the race.
    assert_eq!(env.status(["--name", "race", "--max-peers", "0"]), 2);
    for r in runs {
        let out = r.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_copies(marker, 3);
    assert_eq!(env.status(["--check", "race", "--min-peers", "3"]), 0);
}

#[test]
fn min_peers_during_a_crash_loop_reports_failure() {
    let env = Env::new();
    // Slot 1 held by a supervisor that is backing off: held, not running.
    let _h = FakeHolder::start(
        &env,
        "loop",
        1,
        &FakeSpec::new(
            &env,
            "mode=supervisor\nphase=backoff\nreason=exit status 1\nlast_exit=status 1\nlast_exit_code=1\nrestarts=3\nrun=$run",
        ),
    );
    let out = env.run([
        "--name",
        "loop",
        "--max-peers",
        "1",
        "--min-peers",
        "1",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("backing off"), "{}", stderr(&out));
    // --quiet silences only the harmless race for the last slot: cron
    // must mail this.
    let out = env.run([
        "--name",
        "loop",
        "--max-peers",
        "1",
        "--min-peers",
        "1",
        "-q",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        stderr(&out).contains("slot 1 backing off"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_counts_only_running_peers_and_says_why() {
    let env = Env::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let backoff = format!(
        "mode=supervisor\nphase=backoff\nreason=exit status 1\nlast_exit=status 1\nlast_exit_code=1\nnext_try_unix_ms={}\nrun=$run",
        now_ms + 60_000
    );
    let _a = FakeHolder::start(
        &env,
        "w",
        1,
        &FakeSpec::new(&env, "mode=supervisor\nphase=running\nrun=$run"),
    );
    let _b = FakeHolder::start(&env, "w", 2, &FakeSpec::new(&env, &backoff));
    let _c = FakeHolder::start(
        &env,
        "w",
        3,
        &FakeSpec::new(&env, "mode=supervisor\nphase=starting\nready=0\nrun=$run"),
    );
    let _d = FakeHolder::start(
        &env,
        "w",
        4,
        &FakeSpec::new(
            &env,
            "mode=supervisor\nphase=stopping\nreason=memory limit\nrun=$run",
        ),
    );
    assert_eq!(env.check("w"), 0, "one peer runs");
    assert_eq!(env.status(["--check", "w", "--min-peers", "2"]), 150);
    let out = env.run(["--check", "w", "--min-peers", "2", "--verbose"]);
    let text = stdout(&out);
    assert!(text.contains("1 of at least 2"), "{text}");
    assert!(
        text.contains("slot 2 backing off after exit status 1, next try in"),
        "{text}"
    );
    assert!(text.contains("slot 3 starting"), "{text}");
    assert!(text.contains("slot 4 stopping: memory limit"), "{text}");
    assert!(!text.contains("slot 1"), "{text}");

    let states: Vec<(u64, String)> = env
        .status_json("w")
        .iter()
        .map(|s| {
            (
                s["slot"].as_u64().unwrap(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, "running".into()),
            (2, "backoff".into()),
            (3, "starting".into()),
            (4, "stopping".into())
        ]
    );
    let text = stdout(&env.run(["--status", "w"]));
    assert!(text.contains("exit status 1, next try in"), "{text}");
}

#[test]
fn a_failed_tombstone_says_1_and_why() {
    let env = Env::new();
    write_state(
        &env,
        "gone",
        2,
        "phase=failed\nmode=supervisor\nlast_exit=status 3\nlast_exit_code=3\nrestarts=5\nreason=gave up after 5 failed runs within 60s (--max-respawns 5)\n",
    );
    assert_eq!(env.check("gone"), 1);
    let out = env.run(["--check", "gone", "--verbose"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("slot 2 failed: gave up after 5 failed runs"),
        "{}",
        stdout(&out)
    );
    let s = &env.status_json("gone")[0];
    assert_eq!(s["state"], "failed");
    assert_eq!(s["last_exit"], "status 3");
    assert!(s["pid"].is_null());
    assert_eq!(env.status(["--status", "gone"]), 1);
    // A leftover state file that is not a tombstone is nothing.
    write_state(&env, "junk", 1, "phase=running\n");
    assert_eq!(env.check("junk"), 3);
    // --stop clears the tombstone; a new start would overwrite it anyway.
    assert_eq!(env.status(["--stop", "gone"]), 0);
    assert_eq!(env.check("gone"), 3);
    assert!(!env.pid_dir.join("gone.2.state").exists());
    assert!(!env.pid_file("gone", 2).exists());
}

#[test]
fn status_without_name_lists_every_name_grouped() {
    let env = Env::new();
    env.start("beta", &["--max-peers", "2"], &["sleep", "1000"]);
    env.start("beta", &["--max-peers", "2"], &["sleep", "1000"]);
    env.start("alpha", &[], &["sleep", "1000"]);
    write_state(&env, "gamma", 1, "phase=failed\nreason=gave up\n");
    let out = env.run(["--status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(String, u64, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["slot"].as_u64().unwrap(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alpha".into(), 1, "running".into()),
            ("beta".into(), 1, "running".into()),
            ("beta".into(), 2, "running".into()),
            ("gamma".into(), 1, "failed".into()),
        ]
    );
    // gamma's tombstone makes the whole answer non-zero.
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&env.run(["--status"]));
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["alpha", "beta", "beta", "gamma"], "{text}");
    assert!(text.starts_with("NAME "), "{text}");
    // The contract's fields, null when unknown.
    let one = &env.status_json("alpha")[0];
    for key in [
        "name",
        "slot",
        "state",
        "pid",
        "child_pid",
        "pid_file",
        "started_unix",
        "command_started_unix",
        "heartbeat_age_s",
        "restarts",
        "last_exit",
        "status_text",
    ] {
        assert!(one.get(key).is_some(), "{key} missing: {one}");
    }
    assert!(one["last_exit"].is_null() && one["status_text"].is_null());
    let names = stdout(&env.run(["--list-names"]));
    assert_eq!(names, "alpha\nbeta\ngamma\n");
    // An empty directory: not running.
    let empty = Env::new();
    assert_eq!(empty.status(["--status"]), 3);
}

#[test]
fn stop_waits_for_the_peers_own_grace_and_reports_sigkill() {
    let env = Env::new();
    // A peer whose --stop-timeout is 0.5 s and that ignores SIGTERM: the
    // default grace is its own plus the margin (5.5 s), then SIGKILL,
    // reported on stderr and in its log.
    let mut spec = FakeSpec::new(
        &env,
        "mode=supervisor\nphase=running\nstop_timeout_ms=500\nrun=$run",
    );
    spec.term_delay = None;
    let h = FakeHolder::start(&env, "stubborn", 1, &spec);
    let out = env.run(["--stop", "stubborn"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("slot 1: still running 5.5s after SIGTERM; sent SIGKILL")
            && err.contains(&h.pid.to_string())
            && err.contains("also written to its log"),
        "{err}"
    );
    assert!(common::read(&spec.log_file).contains("sent SIGKILL"));
    wait_until("holder gone", || !alive(h.pid));

    // A peer that takes a moment to finish its job is not cut short.
    let mut spec = FakeSpec::new(
        &env,
        "mode=supervisor\nphase=running\nstop_timeout_ms=3000\nrun=$run",
    );
    spec.term_delay = Some("1");
    spec.events = env.path("events2");
    let _h = FakeHolder::start(&env, "patient", 1, &spec);
    let out = env.run(["--stop", "patient"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(events(&spec.events).contains(&"1 clean exit".to_string()));
    assert!(!env.pid_dir.join("patient.1.state").exists());
}

#[test]
fn stop_of_an_orphan_kills_every_lock_holder_and_cleans_up() {
    let env = Env::new();
    let marker = "fleet-orphan-marker";
    let gc_marker = "fleet-orphan-grandchild";
    // COMMAND leaves a grandchild in its own session that ignores SIGTERM
    // and holds the slot's lock.
    let script = format!(
        "setsid sh -c \"trap '' TERM; while :; do sleep 1; done\" {gc_marker} & sleep 1000; :"
    );
    env.start("orph", &[], &["sh", "-c", &script, marker]);
    let sup = env.read_pid("orph", 1).unwrap();
    wait_until("grandchild started", || pids_with_arg(gc_marker).len() == 1);
    let grandchild = pids_with_arg(gc_marker)[0];
    // SAFETY: kill(2) with a PID we just read and proved alive; the worst a
    // race could do is fail the test.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_until("slot shows orphaned", || {
        env.slots_in_state("orph", "orphaned").len() == 1
    });
    assert_eq!(env.check("orph"), 150);
    let out = env.run(["--stop", "orph", "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("sent SIGKILL"), "{}", stderr(&out));
    assert_eq!(env.check("orph"), 3);
    assert!(!alive(grandchild));
    assert!(pids_with_arg(marker).is_empty());
    for side in ["orph.1.pid", "orph.1.state", "orph.1.notify"] {
        assert!(!env.pid_dir.join(side).exists(), "{side} left behind");
    }
}

#[test]
fn stop_slot_leaves_the_others_alone() {
    let env = Env::new();
    for _ in 0..3 {
        env.start("three", &["--max-peers", "3"], &["sleep", "1000"]);
    }
    let pid3 = env.read_pid("three", 3).unwrap();
    assert_eq!(env.status(["--stop", "three", "--slot", "3"]), 0);
    assert!(!env.pid_file("three", 3).exists());
    assert_eq!(env.status_json("three").len(), 2);
    assert!(!alive(pid3));
    // A slot nobody holds: nothing to do.
    assert_eq!(env.status(["--stop", "three", "--slot", "7"]), 0);
}

#[test]
fn restart_rolls_one_slot_at_a_time_through_fake_supervisors() {
    let env = Env::new();
    let state = "mode=supervisor\nphase=running\nready=1\nstop_timeout_ms=1000\nrun=$run";
    let holders: Vec<FakeHolder> = (1..=3)
        .map(|i| FakeHolder::start(&env, "roll", i, &FakeSpec::new(&env, state)))
        .collect();
    let out = env.run(["--restart", "roll", "--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Vec<String> = events(&env.path("events"))
        .into_iter()
        .filter(|e| !e.ends_with(" up"))
        .collect();
    // The next slot is signalled only once the previous one runs again.
    assert_eq!(
        got,
        [
            "1 got",
            "1 running",
            "2 got",
            "2 running",
            "3 got",
            "3 running"
        ]
    );
    for s in env.status_json("roll") {
        assert_eq!(s["run"], 2, "{s}");
    }
    assert!(
        stdout(&out).contains("roll slot 3: restarted"),
        "{}",
        stdout(&out)
    );
    // One slot only.
    let out = env.run(["--restart", "roll", "--slot", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runs: Vec<u64> = env
        .status_json("roll")
        .iter()
        .map(|s| s["run"].as_u64().unwrap())
        .collect();
    assert_eq!(runs, [2, 3, 2]);
    drop(holders);
}

#[test]
fn restart_halts_where_a_new_command_fails_to_come_up() {
    let env = Env::new();
    let state = "mode=supervisor\nphase=running\nstop_timeout_ms=1000\nrun=$run";
    let _one = FakeHolder::start(&env, "halt", 1, &FakeSpec::new(&env, state));
    let mut bad = FakeSpec::new(&env, state);
    bad.after_restart = "backoff";
    let _two = FakeHolder::start(&env, "halt", 2, &bad);
    let _three = FakeHolder::start(&env, "halt", 3, &FakeSpec::new(&env, state));
    let out = env.run(["--restart", "halt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("halt slot 2 failed to come up"), "{err}");
    assert!(
        err.contains("halt slot 3: not restarted: the roll halted at slot 2"),
        "{err}"
    );
    let got: Vec<String> = events(&env.path("events"))
        .into_iter()
        .filter(|e| !e.ends_with(" up"))
        .collect();
    assert_eq!(got, ["1 got", "1 running", "2 got", "2 backoff"]);
}

#[test]
fn restart_skips_what_it_cannot_restart_and_never_signals_it() {
    let env = Env::new();
    // A library daemon, and a holder that does not say what it is (an
    // older supervisor, whom the restart signal would kill).
    let lib = FakeHolder::start(
        &env,
        "mixed",
        1,
        &FakeSpec::new(&env, "mode=library\nphase=running\nrun=$run"),
    );
    let old = FakeHolder::start(&env, "mixed", 2, &FakeSpec::new(&env, "restarts=0"));
    let _ok = FakeHolder::start(
        &env,
        "mixed",
        3,
        &FakeSpec::new(&env, "mode=supervisor\nphase=running\nrun=$run"),
    );
    let out = env.run(["--restart", "mixed"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("mixed slot 1 skipped: held by a program using the library"),
        "{err}"
    );
    assert!(err.contains("mixed slot 2 skipped"), "{err}");
    let got: Vec<String> = events(&env.path("events"))
        .into_iter()
        .filter(|e| !e.ends_with(" up"))
        .collect();
    assert_eq!(got, ["3 got", "3 running"]);
    assert!(alive(lib.pid) && alive(old.pid));
    // Nothing to restart at all.
    assert_eq!(env.status(["--restart", "nobody"]), 1);
}

/// The whole roll with real supervisors: needs the supervisor to act on
/// the restart signal and publish `mode`, `phase` and `run` (the
/// supervisor branch of this round).
#[test]
fn restart_with_real_supervisors_never_drops_below_n_minus_1() {
    let env = Env::new();
    let marker = "fleet-real-roll";
    for _ in 0..3 {
        env.start(
            "real",
            &["--max-peers", "3", "--respawn", "--notify"],
            &[
                "sh",
                "-c",
                "sleep 0.3; systemd-notify --ready --pid=$$ 2>/dev/null || true; exec sleep 1000",
                marker,
            ],
        );
    }
    let before: Vec<i64> = env
        .status_json("real")
        .iter()
        .map(|s| s["child_pid"].as_i64().unwrap())
        .collect();
    let bin = common::bin();
    let pid_dir = env.pid_dir.clone();
    let roll = std::thread::spawn(move || {
        std::process::Command::new(bin)
            .env("RDAEMON_PID_DIR", &pid_dir)
            .args(["--restart", "real"])
            .output()
            .unwrap()
    });
    let mut lowest = 3;
    while !roll.is_finished() {
        let up = env
            .status_json("real")
            .iter()
            .filter(|s| s["state"] == "running")
            .count();
        lowest = lowest.min(up);
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = roll.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(lowest >= 2, "capacity fell to {lowest}");
    let after: Vec<i64> = env
        .status_json("real")
        .iter()
        .map(|s| s["child_pid"].as_i64().unwrap())
        .collect();
    assert!(before.iter().all(|p| !after.contains(p)));
    assert!(after.iter().all(|&p| alive(p as i32)));
    assert_eq!(env.slots_in_state("real", "running").len(), 3);
}

#[test]
fn status_table_shows_command_uptime_and_its_status_text() {
    let env = Env::new();
    env.start(
        "talk",
        &["--notify"],
        &[
            "sh",
            "-c",
            "systemd-notify --ready --status='3 jobs done' 2>/dev/null; exec sleep 1000",
        ],
    );
    wait_until("STATUS= arrived", || {
        env.status_json("talk")
            .first()
            .is_some_and(|s| s["status_text"] == "3 jobs done")
    });
    let s = &env.status_json("talk")[0];
    assert_eq!(s["state"], "running", "{s}");
    assert!(s["command_started_unix"].as_u64().unwrap() >= s["started_unix"].as_u64().unwrap());
    let out = env.run(["--status", "talk"]);
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    for col in [
        "SLOT",
        "STATE",
        "PID",
        "CHILD",
        "UPTIME",
        "HEARTBEAT",
        "RESTARTS",
        "LAST EXIT",
        "STATUS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = text.lines().nth(1).unwrap();
    assert!(row.starts_with("1 ") && row.contains("running"), "{text}");
    assert!(row.ends_with("3 jobs done"), "{text}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_sigkill_by_stop_lands_in_the_real_supervisors_log() {
    let env = Env::new();
    let log = env.path("k.log");
    env.start(
        "hard",
        &["--stop-timeout", "30", "--log", log.to_str().unwrap()],
        &["sh", "-c", "trap '' TERM; sleep 1000; :"],
    );
    let sup = env.read_pid("hard", 1).unwrap();
    let out = env.run(["--stop", "hard", "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sent SIGKILL") && err.contains(&sup.to_string()),
        "{err}"
    );
    assert!(err.contains("also written to its log"), "{err}");
    let text = common::read(&log);
    assert!(
        text.lines()
            .any(|l| l.contains("hard: slot 1: did not stop within 0.5s of SIGTERM; sent SIGKILL")),
        "{text}"
    );
    assert_eq!(env.check("hard"), 3);
    assert!(!alive(sup));
}

/// A plain flock holder (no supervisor) of a slot whose state file is an
/// old supervisor's tombstone: the file is not the holder's, so the
/// holder is not sent the restart signal (whose default action would kill
/// it), and `--status` does not show the dead supervisor's phase or reason.
#[test]
fn a_state_file_from_an_earlier_holder_is_not_believed() {
    let env = Env::new();
    fake::make_pid_dir(&env);
    write_state(
        &env,
        "plain",
        1,
        "mode=supervisor\nphase=stopping\nreason=memory limit\nholder_pid=4194000\nrun=3\n",
    );
    let pid_file = env.pid_file("plain", 1);
    /// Kills the holder whatever the test's outcome.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Reap(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"exec 9<>"$1"; flock -n 9 || exit 1; echo $$ >&9; exec sleep 1000"#)
            .arg("plain-holder")
            .arg(&pid_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = holder.0.id() as i32;
    wait_until("the plain holder locks the slot", || {
        env.status_json("plain")
            .first()
            .is_some_and(|s| s["pid"] == pid)
    });
    let slot = env.status_json("plain")[0].clone();
    assert_eq!(slot["state"], "running", "{slot}");
    let text = stdout(&env.run(["--status", "plain"]));
    assert!(!text.contains("memory limit"), "{text}");
    let out = env.run(["--restart", "plain", "--timeout", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plain slot 1 skipped"),
        "{}",
        stderr(&out)
    );
    assert!(
        alive(pid),
        "the restart signal reached a plain flock holder"
    );
    assert_eq!(env.status(["--stop", "plain", "--timeout", "5"]), 0);
    drop(holder);
}

/// Two `--restart` rolls of one name at once: the second waits for the
/// first, then rolls every slot again; capacity never falls below N-1.
#[test]
fn overlapping_restarts_take_turns_and_keep_n_minus_1_up() {
    let env = Env::new();
    let state = "mode=supervisor\nphase=running\nready=1\nstop_timeout_ms=1000\nrun=$run";
    let holders: Vec<FakeHolder> = (1..=3)
        .map(|i| FakeHolder::start(&env, "twice", i, &FakeSpec::new(&env, state)))
        .collect();
    let rolls: Vec<_> = (0..2)
        .map(|_| {
            let mut c = env.cmd();
            c.args(["--restart", "twice", "--timeout", "20"]);
            c.stdout(std::process::Stdio::piped());
            c.stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut lowest = 3;
    let mut rolls: Vec<_> = rolls.into_iter().map(Some).collect();
    let mut outs = Vec::new();
    common::wait_until_for(Duration::from_secs(90), "both rolls to finish", || {
        let up = env
            .status_json("twice")
            .iter()
            .filter(|s| s["state"] == "running")
            .count();
        lowest = lowest.min(up);
        for r in rolls.iter_mut() {
            if r.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
                outs.push(r.take().unwrap().wait_with_output().unwrap());
            }
        }
        rolls.iter().all(Option::is_none)
    });
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    assert!(lowest >= 2, "capacity fell to {lowest}");
    for s in env.status_json("twice") {
        assert_eq!(s["run"], 3, "each slot restarted by each roll: {s}");
    }
    drop(holders);
}

/// A roll does not take a running peer down while another is out of
/// service: a peer in back-off is restarted first (it serves nobody), and
/// one that stays down (stopping) halts the roll, naming it.
#[test]
fn restart_never_takes_a_second_peer_out_of_service() {
    let env = Env::new();
    let up = "mode=supervisor\nphase=running\nready=1\nstop_timeout_ms=1000\nrun=$run";
    let backoff = "mode=supervisor\nphase=backoff\nstop_timeout_ms=1000\nrun=$run";
    let _two = FakeHolder::start(&env, "down", 2, &FakeSpec::new(&env, up));
    let _three = FakeHolder::start(&env, "down", 3, &FakeSpec::new(&env, up));
    let _one = FakeHolder::start(&env, "down", 1, &FakeSpec::new(&env, backoff));
    let out = env.run(["--restart", "down", "--slot", "3", "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("slot 1 is backoff"),
        "{}",
        stderr(&out)
    );
    let got = || -> Vec<String> {
        events(&env.path("events"))
            .into_iter()
            .filter(|e| !e.ends_with(" up"))
            .collect()
    };
    assert!(got().is_empty(), "{:?}", got());
    // The whole roll restarts the peer in back-off first; it comes up.
    let out = env.run(["--restart", "down", "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        got(),
        [
            "1 got",
            "1 running",
            "2 got",
            "2 running",
            "3 got",
            "3 running"
        ]
    );
    // A peer that stays down: the roll halts before taking another down.
    let stopping = "mode=supervisor\nphase=stopping\nstop_timeout_ms=1000\nrun=$run";
    let _four = FakeHolder::start(&env, "down", 4, &FakeSpec::new(&env, stopping));
    let out = env.run(["--restart", "down", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("slot 4 is stopping"), "{err}");
    assert_eq!(got().len(), 6, "{:?}", got());
}

/// A peer that is stopping already (another `--stop`, systemd's SIGTERM)
/// gets no second SIGTERM, which would cut its grace short; it is waited
/// for, and a SIGKILL at the end is reported.
#[test]
fn stop_of_a_stopping_peer_does_not_send_a_second_sigterm() {
    let env = Env::new();
    let state = "mode=supervisor\nphase=stopping\nstop_timeout_ms=1000\nrun=$run";
    let holder = FakeHolder::start(&env, "grace", 1, &FakeSpec::new(&env, state));
    let out = env.run(["--stop", "grace", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sent SIGKILL to PID(s)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !events(&env.path("events")).contains(&"1 clean exit".to_string()),
        "the stopping peer got a second SIGTERM"
    );
    drop(holder);
}

/// A `--stop` that has to SIGKILL a supervisor also ends the processes of
/// its tree that hold no lock (closed every inherited descriptor, left the
/// session): none is left behind re-parented to init.
#[test]
fn stop_sigkills_descendants_that_hold_no_lock() {
    let env = Env::new();
    let marker = "fleet-lockless-descendant";
    env.start(
        "deep",
        &["--stop-timeout", "60"],
        &[
            "sh",
            "-c",
            "trap '' TERM; python3 -c 'import os,time; os.closerange(3, 65536); os.setsid(); time.sleep(1000)' \"$0\" & wait",
            marker,
        ],
    );
    wait_until("the lockless descendant runs", || {
        pids_with_arg(marker).iter().any(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("python"))
        })
    });
    let out = env.run(["--stop", "deep", "--timeout", "1"]);
    let left = || pids_with_arg(marker);
    let gone = common::poll_until(Duration::from_secs(10), || left().is_empty().then_some(()));
    for p in left() {
        // SAFETY: kill(2) of a leftover of this test (found by its unique
        // marker), so it cannot outlive the test.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(gone.is_some(), "left running after --stop: {:?}", left());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("sent SIGKILL"), "{}", stderr(&out));
}

#[test]
fn restart_of_a_slot_that_is_not_held_says_so() {
    let env = Env::new();
    let state = "mode=supervisor\nphase=running\nrun=$run";
    let _one = FakeHolder::start(&env, "few", 1, &FakeSpec::new(&env, state));
    let out = env.run(["--restart", "few", "--slot", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("slot 7 is not held"),
        "{}",
        stderr(&out)
    );
    let out = env.run(["--restart", "nothing", "--slot", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("slot 7 is not held"),
        "{}",
        stderr(&out)
    );
}

/// A `--foreground` supervisor that is PID 1 of its own PID namespace (a
/// container's init) is a live holder, not an orphan; `--stop` and
/// `--restart` refuse to signal it, saying why.
#[test]
fn a_supervisor_that_is_a_namespaces_init_is_seen_but_not_signalled() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: cannot make a PID namespace here (unshare --pid: {probe:?}); \
             the PID-1 supervisor case is untested"
        );
        return;
    }
    let env = Env::new();
    /// Kills the namespace (unshare --kill-child takes its init along).
    struct Namespace(std::process::Child);
    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(common::bin())
        .args(["--name", "boxed", "--foreground", "--", "sleep", "1000"])
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let ns = Namespace(cmd.spawn().unwrap());
    wait_until("the namespaced supervisor runs", || env.check("boxed") == 0);
    let slot = env.status_json("boxed")[0].clone();
    assert_eq!(slot["state"], "running", "{slot}");
    let sup = slot["pid"].as_i64().unwrap() as i32;
    for mode in ["--stop", "--restart"] {
        let out = env.run([mode, "boxed", "--timeout", "5"]);
        assert_eq!(out.status.code(), Some(1), "{mode}");
        assert!(
            stderr(&out).contains("its supervisor is PID 1 of this PID namespace"),
            "{mode}: {}",
            stderr(&out)
        );
    }
    assert!(alive(sup));
    assert_eq!(env.check("boxed"), 0);
    drop(ns);
}
