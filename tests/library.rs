//! The library API in-process: the FreeBSD pidfile_test cases
//! (uncontested, self-contested, contested by another process, lock
//! inherited across exec) and heartbeat() turning false.

mod common;

use std::time::Duration;

use common::*;
use rdaemon::{Daemon, Error, StopReason};

/// A daemon whose heartbeat() checks its slot every `lease / 2`.
fn leased(env: &Env, name: &str, lease_ms: u64) -> rdaemon::Builder {
    Daemon::builder(name)
        .pid_dir(&env.pid_dir)
        .handle_signals(false)
        .lease(Duration::from_millis(lease_ms))
}

fn daemon(env: &Env, name: &str, peers: u32) -> Daemon {
    Daemon::builder(name)
        .max_peers(peers)
        .pid_dir(&env.pid_dir)
        .handle_signals(false)
        .build()
        .unwrap()
}

#[test]
fn uncontested_start_writes_our_pid_and_stop_removes_it() {
    let env = Env::new();
    let mut d = daemon(&env, "lib", 1);
    assert!(!d.heartbeat(), "not started yet");
    d.start().unwrap();
    assert!(d.heartbeat());
    assert_eq!(d.slot(), Some(1));
    let file = d.pid_file().unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{}\n", std::process::id())
    );
    // Seen by the CLI exactly like a CLI daemon.
    assert_eq!(env.check("lib"), 0);
    let s = &env.status_json("lib")[0];
    assert_eq!(s["state"], "running");
    assert_eq!(s["pid"], std::process::id());
    d.stop().unwrap();
    assert!(!file.exists());
    assert!(!d.heartbeat());
    assert_eq!(env.check("lib"), 3);
}

#[test]
fn self_contested_start_is_busy_and_names_the_holder() {
    let env = Env::new();
    let mut a = daemon(&env, "self", 1);
    a.start().unwrap();
    let mut b = daemon(&env, "self", 1);
    match b.start() {
        Err(Error::Busy {
            holders, max_peers, ..
        }) => {
            assert_eq!(max_peers, 1);
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].map(i32::from), Some(std::process::id() as i32));
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(a.start().is_err(), "starting twice is an error");
    drop(a); // dropping releases the slot
    b.start().unwrap();
}

#[test]
fn max_peers_slots_then_busy() {
    let env = Env::new();
    let mut ds: Vec<Daemon> = (0..3).map(|_| daemon(&env, "three", 3)).collect();
    for d in &mut ds {
        d.start().unwrap();
    }
    let mut slots: Vec<u32> = ds.iter().map(|d| d.slot().unwrap()).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3]);
    assert_eq!(
        daemon(&env, "three", 3).start().unwrap_err().kind(),
        rdaemon::ErrorKind::Busy
    );
    assert_eq!(env.status(["--check", "three", "--min-peers", "3"]), 0);
}

#[test]
fn contested_by_another_process() {
    let env = Env::new();
    let mut d = daemon(&env, "other", 1);
    d.start().unwrap();
    let out = env.run(["--name", "other", "-f", "--", "true"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&std::process::id().to_string()));
}

#[test]
fn heartbeat_turns_false_when_the_pid_file_is_deleted() {
    let env = Env::new();
    let mut d = leased(&env, "gone", 200).build().unwrap();
    d.start().unwrap();
    std::fs::remove_file(d.pid_file().unwrap()).unwrap();
    wait_until("heartbeat notices the lost lock", || !d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::LockLost));
    // A new peer can take the slot meanwhile; our stop must not remove it.
    let mut fresh = daemon(&env, "gone", 1);
    fresh.start().unwrap();
    d.stop().unwrap();
    assert!(fresh.pid_file().unwrap().exists());
    assert!(fresh.heartbeat());
}

#[test]
fn heartbeat_turns_false_when_the_pid_file_is_replaced() {
    let env = Env::new();
    let mut d = leased(&env, "repl", 200).build().unwrap();
    d.start().unwrap();
    let path = d.pid_file().unwrap();
    let other = env.path("other");
    std::fs::write(&other, "1\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    wait_until("heartbeat notices the replaced file", || !d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::LockLost));
    d.stop().unwrap();
    assert!(
        path.exists(),
        "stop() never removes a file that is not ours"
    );
}

#[test]
fn heartbeat_turns_false_when_the_pid_directory_is_renamed_away() {
    let env = Env::new();
    let mut d = leased(&env, "mv", 200).build().unwrap();
    d.start().unwrap();
    let moved = env.path("moved");
    std::fs::rename(&env.pid_dir, &moved).unwrap();
    wait_until("heartbeat notices the moved directory", || !d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::LockLost));
    // Its own file goes, from wherever the directory is now.
    d.stop().unwrap();
    assert!(!moved.join("mv.1.pid").exists());
}

#[test]
fn memory_ceiling_turns_heartbeat_false() {
    let env = Env::new();
    let mut d = leased(&env, "mem", 100).memory_limit(1024).build().unwrap();
    d.start().unwrap();
    wait_until("heartbeat notices the memory ceiling", || !d.heartbeat());
    assert!(
        matches!(
            d.stop_reason(),
            Some(StopReason::MemoryLimit { limit: 1024, .. })
        ),
        "{:?}",
        d.stop_reason()
    );
    assert!(d.stop_reason().unwrap().to_string().contains("exceeds"));
}

#[test]
fn heartbeat_records_its_time_for_check_max_age() {
    let env = Env::new();
    let mut d = leased(&env, "age", 100).build().unwrap();
    d.start().unwrap();
    // Without heartbeats the age grows past the limit...
    wait_until("heartbeat ages", || {
        env.status(["--check", "age", "--max-age", "0.3"]) == 150
    });
    // ...and calling heartbeat() refreshes it.
    wait_until("heartbeat refreshed", || {
        d.heartbeat();
        env.status(["--check", "age", "--max-age", "0.3"]) == 0
    });
}

#[test]
fn bad_configuration_is_refused_before_anything_is_created() {
    let env = Env::new();
    assert_eq!(
        Daemon::builder("a/b")
            .pid_dir(&env.pid_dir)
            .build()
            .unwrap_err()
            .kind(),
        rdaemon::ErrorKind::Usage
    );
    assert_eq!(
        Daemon::builder("ok")
            .max_peers(0)
            .pid_dir(&env.pid_dir)
            .build()
            .unwrap_err()
            .kind(),
        rdaemon::ErrorKind::Usage
    );
    assert!(!env.pid_dir.exists());
}

#[test]
fn a_failed_start_holds_no_slot_and_leaves_no_file() {
    let env = Env::new();
    std::fs::create_dir_all(&env.pid_dir).unwrap();
    // A directory where the state file goes: writing the state fails after
    // the PID file was taken and locked.
    let planted = env.pid_dir.join("failed.1.state");
    std::fs::create_dir(&planted).unwrap();
    let mut d = daemon(&env, "failed", 1);
    let err = d.start().unwrap_err();
    assert!(err.to_string().contains("failed.1.state"), "{err}");
    assert!(!env.pid_file("failed", 1).exists(), "no PID file is left");
    assert_eq!(env.check("failed"), 3, "no slot is held");
    assert_eq!(d.slot(), None);
    assert!(!d.heartbeat());
    // Once the obstacle is gone the same daemon starts.
    std::fs::remove_dir(&planted).unwrap();
    d.start().unwrap();
    assert_eq!(env.check("failed"), 0);
}

#[test]
fn the_state_file_says_library_running_and_the_stop_timeout() {
    let env = Env::new();
    let mut d = Daemon::builder("published")
        .pid_dir(&env.pid_dir)
        .handle_signals(false)
        .stop_timeout(Duration::from_secs(42))
        .build()
        .unwrap();
    d.start().unwrap();
    let state = std::fs::read_to_string(env.pid_dir.join("published.1.state")).unwrap();
    let lines: Vec<&str> = state.lines().collect();
    for want in ["mode=library", "phase=running", "stop_timeout_ms=42000"] {
        assert!(lines.contains(&want), "{want} missing: {state}");
    }
    d.stop().unwrap();
    assert!(
        Daemon::builder("published")
            .stop_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
}

#[test]
fn huge_durations_saturate_instead_of_wrapping() {
    let env = Env::new();
    // 18_446_744_074 s in nanoseconds wraps a u64 to about 0.29 s.
    let huge = Duration::from_secs(18_446_744_074);
    let mut d = Daemon::builder("huge")
        .pid_dir(&env.pid_dir)
        .handle_signals(false)
        .lease(Duration::MAX)
        .max_runtime(huge)
        .stop_timeout(Duration::MAX)
        .build()
        .unwrap();
    d.start().unwrap();
    let state = std::fs::read_to_string(env.pid_dir.join("huge.1.state")).unwrap();
    let lines: Vec<&str> = state.lines().collect();
    let max = format!("lease_ms={}", u64::MAX);
    assert!(lines.contains(&max.as_str()), "{state}");
    // Past the wrapped run-time limit, the loop still runs.
    let began = std::time::Instant::now();
    while began.elapsed() < Duration::from_secs(1) {
        assert!(d.heartbeat(), "stopped: {:?}", d.stop_reason());
        std::thread::yield_now();
    }
    d.stop().unwrap();
}

#[test]
fn stop_reason_names_a_token_stop_before_any_heartbeat() {
    let env = Env::new();
    let mut d = daemon(&env, "reason", 1);
    d.start().unwrap();
    assert_eq!(d.stop_reason(), None);
    let token = d.stop_token();
    token.request();
    assert!(token.wait_timeout(Duration::ZERO));
    assert_eq!(d.stop_reason(), Some(&StopReason::Requested));
    assert!(!d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::Requested));
    d.stop().unwrap();
    // A new run starts without a reason.
    d.start().unwrap();
    assert_eq!(d.stop_reason(), None);
    d.stop().unwrap();
}
