//! The library's stops without signals: limits, the stop token, requests
//! and restarts, in-process (no handlers installed, so tests can share
//! the process). Real signals are in `lib_process.rs` and `lib_signals.rs`.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::*;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rdaemon::{Daemon, ErrorKind, StopReason, StopToken};

fn builder(env: &Env, name: &str) -> rdaemon::Builder {
    Daemon::builder(name)
        .pid_dir(&env.pid_dir)
        .handle_signals(false)
}

fn readable(token: &StopToken) -> bool {
    let mut fds = [PollFd::new(token.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
}

#[test]
fn max_jobs_gives_exactly_that_many_true_heartbeats() {
    let env = Env::new();
    let mut d = builder(&env, "jobs").max_jobs(3).build().unwrap();
    d.start().unwrap();
    let token = d.stop_token();
    let answers: Vec<bool> = (0..6).map(|_| d.heartbeat()).collect();
    assert_eq!(answers, [true, true, true, false, false, false]);
    assert_eq!(d.stop_reason(), Some(&StopReason::JobLimit));
    assert!(token.is_stopped() && readable(&token));
    d.stop().unwrap();
    // A new run counts afresh.
    d.start().unwrap();
    assert_eq!((0..4).filter(|_| d.heartbeat()).count(), 3);
}

#[test]
fn max_runtime_ends_the_loop() {
    let env = Env::new();
    let mut d = builder(&env, "runtime")
        .max_runtime(Duration::from_millis(300))
        .build()
        .unwrap();
    d.start().unwrap();
    wait_until("the run-time limit", || !d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::TimeLimit));
    assert!(!d.heartbeat(), "once false it stays false");
    assert!(d.stop_token().is_stopped());
    assert_eq!(env.check("runtime"), 0, "the slot is held until stop()");
    d.stop().unwrap();
    assert_eq!(env.check("runtime"), 3);
}

#[test]
fn a_request_stops_the_loop_and_every_token() {
    let env = Env::new();
    let mut d = builder(&env, "req").build().unwrap();
    let early = d.stop_token(); // taken before start: belongs to this run
    d.start().unwrap();
    assert!(d.heartbeat());
    assert!(!early.is_stopped() && !readable(&early));
    let other = early.clone();
    let waiter = std::thread::spawn(move || other.wait_timeout(DEADLINE));
    early.request();
    assert!(waiter.join().unwrap(), "wait_timeout woke up stopped");
    assert!(!d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::Requested));
    assert!(d.stop_token().is_stopped() && readable(&early));
    d.stop().unwrap();
    // A token taken now belongs to the next run; the old one stays stopped.
    let next = d.stop_token();
    assert!(!next.is_stopped() && !readable(&next));
    assert!(!d.heartbeat(), "not running");
    d.start().unwrap();
    assert!(d.heartbeat());
    assert!(early.is_stopped() && !next.is_stopped());
    next.request();
    assert!(!d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::Requested));
}

#[test]
fn a_lost_lock_found_by_a_heartbeat_wakes_every_token() {
    let env = Env::new();
    let mut d = builder(&env, "lost").build().unwrap();
    d.start().unwrap();
    let token = d.stop_token();
    let waiter = {
        let t = token.clone();
        std::thread::spawn(move || t.wait_timeout(DEADLINE))
    };
    std::fs::remove_file(d.pid_file().unwrap()).unwrap();
    wait_until("the heartbeat notices the lost lock", || !d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::LockLost));
    assert!(waiter.join().unwrap());
    assert!(token.is_stopped() && readable(&token));
}

#[test]
fn a_wait_without_a_stop_times_out() {
    let env = Env::new();
    let mut d = builder(&env, "idle").build().unwrap();
    d.start().unwrap();
    let token = d.stop_token();
    assert!(!token.wait_timeout(Duration::from_millis(30)));
    assert!(!token.wait_timeout(Duration::ZERO));
    assert!(d.heartbeat());
}

#[test]
fn the_memory_ceiling_is_checked_within_a_bounded_number_of_heartbeats() {
    let env = Env::new();
    // A long lease: the once-a-second check alone would take a second.
    let mut d = builder(&env, "memcount")
        .lease(Duration::from_secs(3600))
        .memory_limit(1024)
        .build()
        .unwrap();
    d.start().unwrap();
    let calls = (1..=5000).find(|_| !d.heartbeat());
    assert!(calls.is_some_and(|n| n <= 1025), "stopped after {calls:?}");
    assert!(matches!(
        d.stop_reason(),
        Some(StopReason::MemoryLimit { limit: 1024, rss }) if *rss > 1024
    ));
}

#[test]
fn a_high_memory_ceiling_does_not_stop_the_loop() {
    let env = Env::new();
    let mut d = builder(&env, "memok")
        .memory_limit(1 << 40)
        .build()
        .unwrap();
    d.start().unwrap();
    assert!((0..10_000).all(|_| d.heartbeat()));
}

#[test]
fn stop_while_running_is_a_request_and_drop_releases() {
    let env = Env::new();
    let mut d = builder(&env, "drop").build().unwrap();
    d.start().unwrap();
    let token = d.stop_token();
    let file = d.pid_file().unwrap();
    drop(d);
    assert!(token.is_stopped());
    assert!(!file.exists());
    assert_eq!(env.check("drop"), 3);
}

#[test]
fn build_refuses_what_cannot_work() {
    let env = Env::new();
    let refused = [
        builder(&env, "x").max_jobs(0),
        builder(&env, "x").max_runtime(Duration::ZERO),
        builder(&env, "x").memory_limit(0),
        builder(&env, "x").lease(Duration::ZERO),
        builder(&env, "x").stop_signals(&[libc::SIGKILL]),
        builder(&env, "x").stop_signals(&[libc::SIGSEGV]),
        builder(&env, "x").stop_signals(&[0]),
        builder(&env, "x").stop_signals(&[999]),
        Daemon::builder("x").pid_dir(""),
        builder(&env, "x").max_peers(0),
        builder(&env, "-x"),
    ];
    for b in refused {
        let shown = format!("{b:?}");
        let err = b.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{shown}: {err}");
    }
    assert!(!env.pid_dir.exists());
}

#[test]
#[allow(deprecated)]
fn timeout_is_still_the_lease() {
    let d = Daemon::builder("old")
        .timeout(Duration::from_secs(7))
        .build()
        .unwrap();
    assert_eq!(d.lease(), Duration::from_secs(7));
}
