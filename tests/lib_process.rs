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

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;
use rdaemon::Daemon;

const ROLE: &str = "RDAEMON_LIB_ROLE";
const PID_DIR: &str = "RDAEMON_LIB_PID_DIR";

/// Runs this test binary as `role`, against `env`'s PID directory.
fn play(env: &Env, role: &str) -> Output {
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
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn the role");
    // The roles end on their own in well under a second; a hang is a bug.
    let out = poll_until(DEADLINE, || {
        let pid = child.id() as i32;
        (!alive(pid)).then_some(())
    });
    if out.is_none() {
        // SAFETY: plain kill(2) on our own child's PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    }
    child.wait_with_output().expect("collect the role's output")
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

/// After stop(), SIGTERM must end the process as it would without rdaemon.
fn term_after_stop_role(dir: &std::path::Path) {
    let mut d = builder(dir, "termstop").build().unwrap();
    d.start().unwrap();
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
