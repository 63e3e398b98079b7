//! Shared harness for the integration tests: a temporary PID directory per
//! test, a way to run the real binary against it, and waiting on conditions
//! with a deadline (never a fixed sleep).
#![allow(dead_code)]

pub mod beanstalkd;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod tree;

/// Generous: the suite must pass on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rdaemon")
}

/// Polls `cond` until it holds; panics naming `what` after `DEADLINE`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    wait_until_for(DEADLINE, what, &mut cond)
}

pub fn wait_until_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let met = poll_until(limit, || cond().then_some(()));
    assert!(
        met.is_some(),
        "timed out after {limit:?} waiting for: {what}"
    );
}

/// Polls `f` with a growing pause until it yields a value, or gives up
/// after `limit` with `None` (for callers that must clean up or report
/// before failing).
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether `pid` exists and is not a zombie. A zombie leader whose other
/// threads run (its main thread called `pthread_exit`) is alive.
pub fn alive(pid: i32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        });
    match state.as_deref() {
        None | Some("X") => false,
        Some("Z") => threads(pid) > 1,
        Some(_) => true,
    }
}

/// `Threads:` of `/proc/PID/status` (the leader counted, even a zombie
/// one); 0 when unreadable.
pub fn threads(pid: i32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// PIDs of live processes whose command line contains `needle` (used with
/// a unique marker per test, so tests do not see each other's processes).
/// rdaemon's own processes (whose arguments repeat COMMAND's) are excluded.
pub fn pids_with_arg(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let is_rdaemon = cmd
                .split(|&b| b == 0)
                .next()
                .is_some_and(|a0| a0.ends_with(b"rdaemon"));
            if !is_rdaemon && cmd.split(|&b| b == 0).any(|a| a == needle.as_bytes()) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// One test's world: a temp dir with the PID directory inside it.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub pid_dir: PathBuf,
    names: std::cell::RefCell<Vec<String>>,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("rdaemon-test")
            .tempdir()
            .unwrap();
        let pid_dir = tmp.path().join("run");
        Env {
            tmp,
            pid_dir,
            names: Default::default(),
        }
    }

    /// The same world with its PID directory at `dir` instead (for tests
    /// about the directory's path itself).
    pub fn with_pid_dir(mut self, dir: PathBuf) -> Env {
        self.pid_dir = dir;
        self
    }

    /// A command for the binary, pointed at this PID directory.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("RDAEMON_PID_DIR", &self.pid_dir)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NOTIFY_SOCKET");
        c.stdin(Stdio::null());
        c
    }

    /// Runs the binary with `args` and collects its output.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--name")
            && let Some(n) = args.get(i + 1).and_then(|n| n.to_str())
        {
            self.names.borrow_mut().push(n.to_string());
        }
        self.cmd().args(&args).output().unwrap()
    }

    /// Exit status of a run (panics on death by signal).
    pub fn status<I, S>(&self, args: I) -> i32
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        out.status
            .code()
            .unwrap_or_else(|| panic!("rdaemon died: {out:?}"))
    }

    /// Starts NAME detached with `opts` and `command`; asserts success.
    pub fn start(&self, name: &str, opts: &[&str], command: &[&str]) {
        let mut args = vec!["--name", name];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend_from_slice(command);
        let out = self.run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "start of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pid_file(&self, name: &str, slot: u32) -> PathBuf {
        self.pid_dir.join(format!("{name}.{slot}.pid"))
    }

    /// The PID in a slot file, if it holds one.
    pub fn read_pid(&self, name: &str, slot: u32) -> Option<i32> {
        std::fs::read_to_string(self.pid_file(name, slot))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `--status NAME --json`, parsed.
    pub fn status_json(&self, name: &str) -> Vec<Value> {
        let out = self.run(["--status", name, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        v.as_array().unwrap().clone()
    }

    /// Slots of NAME in state `state`.
    pub fn slots_in_state(&self, name: &str, state: &str) -> Vec<Value> {
        self.status_json(name)
            .into_iter()
            .filter(|s| s["state"] == state)
            .collect()
    }

    pub fn check(&self, name: &str) -> i32 {
        self.status(["--check", name])
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave nothing running, whatever the test did.
        for name in self.names.borrow().iter() {
            let _ = self
                .cmd()
                .args(["--stop", name, "--timeout", "5"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Reads a whole file as a string, or "" when it does not exist (yet).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A shell snippet runner: `sh -c SCRIPT` as COMMAND.
pub fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// Feeds `text` to `promtool check metrics` (the real Prometheus linter);
/// its output, or `None` when promtool cannot be run.
#[allow(dead_code)] // not every test binary checks metrics
pub fn promtool_check_metrics(text: &str) -> Option<std::process::Output> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    Some(child.wait_with_output().expect("wait for promtool"))
}
