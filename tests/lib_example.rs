//! The example crate under `examples/rust`: a worker that links rdaemon
//! with `default-features = false`. It must build without clap (the CLI
//! stays out of a library user's build), and behave as a peer the
//! `rdaemon` command sees and stops.
//!
//! It is a member of this workspace (one Cargo.lock) and is built here with
//! cargo, offline and locked, into `target/example-crate` (not this build's
//! target directory, which the running `cargo test` holds locked).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Building the example's dependencies from scratch on a loaded machine.
const BUILD_LIMIT: Duration = Duration::from_secs(900);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo(args: &[&str]) -> std::process::Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = root().join("examples/rust/Cargo.toml");
    let child = Command::new(cargo)
        .args(args)
        .arg("--offline")
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", root().join("target/example-crate"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo");
    let id = child.id() as i32;
    if poll_until(BUILD_LIMIT, || (!alive(id)).then_some(())).is_none() {
        // SAFETY: plain kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(id, libc::SIGKILL) };
    }
    child.wait_with_output().expect("wait for cargo")
}

fn build_example() -> PathBuf {
    let out = cargo(&["build", "--locked", "--quiet"]);
    assert!(
        out.status.success(),
        "the example crate does not build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root().join("target/example-crate/debug/rdaemon-example-worker")
}

/// Runs the example against `env`'s PID directory (its default).
fn spawn(worker: &Path, env: &Env, args: &[&str]) -> std::process::Child {
    Command::new(worker)
        .args(args)
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example")
}

#[test]
fn the_example_builds_without_the_cli_and_is_stopped_by_rdaemon_stop() {
    let worker = build_example();
    let tree = cargo(&["tree", "--locked", "-e", "normal,build", "--prefix", "none"]);
    assert!(tree.status.success(), "{tree:?}");
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.contains("rdaemon v"), "{tree}");
    assert!(
        !tree.contains("clap"),
        "a library user compiles clap:\n{tree}"
    );

    let env = Env::new();
    let child = spawn(&worker, &env, &["--max-peers", "2"]);
    wait_until("the example holds a slot", || {
        env.status(["--check", "example-worker"]) == 0
    });
    let shown = env.status_json("example-worker");
    assert_eq!(shown[0]["pid"], child.id());
    // SIGHUP is the program's own: it keeps running.
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_until("the example reloads", || {
        env.status_json("example-worker")[0]["status_text"]
            .as_str()
            .is_some_and(|t| t.ends_with(", 1 reloads"))
    });
    assert_eq!(env.status(["--check", "example-worker"]), 0);
    let stop = env.run(["--stop", "example-worker", "--timeout", "30"]);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    let out = child.wait_with_output().expect("the example exits");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reloading the configuration"), "{text}");
    assert!(text.contains("stopping: received SIGTERM"), "{text}");
    assert_eq!(env.check("example-worker"), 3);
}

#[test]
fn the_example_recycles_after_its_job_limit() {
    let worker = build_example();
    let env = Env::new();
    let mut child = spawn(&worker, &env, &["--max-jobs", "20"]);
    let id = child.id() as i32;
    if poll_until(DEADLINE, || (!alive(id)).then_some(())).is_none() {
        let _ = child.kill();
        panic!("the example did not stop after 20 jobs");
    }
    let out = child.wait_with_output().expect("the example exits");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stopping: the job limit was reached"),
        "{text}"
    );
    assert_eq!(env.check("example-worker"), 3, "the slot was released");
}
