//! Helpers for tests that watch COMMAND's whole process tree: programs that
//! carry a marker in their command line, `/proc` lookups (parent, state,
//! signal masks), running the binary with a deadline, and a guard that
//! leaves nothing of a test running.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::{Env, poll_until};

/// The system's Python: readable by every user (a pyenv shim under /root is
/// not), and without a shim's start-up cost.
pub const PYTHON: &str = "/usr/bin/python3";

/// A marker unique to this tag and this run of the test binary (parallel
/// runs of the suite never see each other's processes).
pub fn mark(tag: &str) -> String {
    format!("rdt-{tag}-{}", std::process::id())
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `--stop NAME` with a deadline; asserts exit 0.
pub fn stop(env: &Env, name: &str) {
    let out = run_within(env, Duration::from_secs(90), ["--stop", name]);
    assert_eq!(
        code(&out),
        0,
        "--stop {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Slot 1 of NAME in `--status --json`, if listed.
pub fn slot1(env: &Env, name: &str) -> Option<serde_json::Value> {
    env.status_json(name).into_iter().find(|s| s["slot"] == 1)
}

/// NAME's files in the PID directory (PID files, state, notification
/// sockets), leaving out the default log `NAME.log`, which is output, not
/// a side file.
pub fn slot_files(env: &Env, name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    std::fs::read_dir(&env.pid_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix) && !n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default()
}

/// A memory hog: takes 80 MB of resident memory, then appends a line to
/// the file named by its first argument, and sleeps.
pub fn memory_hog(env: &Env, name: &str) -> PathBuf {
    py_script(
        env,
        name,
        "import sys, time\n\
         hold = b'x' * (80 << 20)\n\
         with open(sys.argv[1], 'a') as f:\n    f.write('grown\\n')\n\
         time.sleep(300)",
    )
}

/// Sends `sig` to `pid` (a PID the test observed).
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// A marked `sleep`: `DIR/NAME` is a symlink to sleep(1), so the process
/// runs as `DIR/NAME SECS` and [`marked`] finds it by NAME.
pub fn marked_sleep(env: &Env, name: &str) -> PathBuf {
    let path = env.path(name);
    let sleep = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep(1) is installed");
    std::os::unix::fs::symlink(sleep, &path).unwrap();
    path
}

/// Writes an executable `#!/bin/sh` script `DIR/NAME` (a marked process
/// while it runs: `/bin/sh DIR/NAME ARGS`).
pub fn sh_script(env: &Env, name: &str, body: &str) -> PathBuf {
    executable(env, name, &format!("#!/bin/sh\n{body}\n"))
}

/// Writes an executable Python script `DIR/NAME`.
pub fn py_script(env: &Env, name: &str, body: &str) -> PathBuf {
    executable(env, name, &format!("#!{PYTHON}\n{body}\n"))
}

fn executable(env: &Env, name: &str, text: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The NUL-separated arguments of `pid`, or nothing if it is gone.
pub fn cmdline(pid: i32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default()
}

fn base_name(arg: &[u8]) -> &[u8] {
    arg.rsplit(|&b| b == b'/').next().unwrap_or(arg)
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Live (not zombie) processes running the marked program `name`: its
/// argv[0] (a marked sleep) or argv[1] (a script under its interpreter)
/// is `.../name`. rdaemon's own processes, whose arguments repeat
/// COMMAND's, never count.
pub fn marked(name: &str) -> Vec<i32> {
    let name = name.as_bytes();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let args = cmdline(pid);
            let Some(a0) = args.first() else {
                return false;
            };
            if base_name(a0) == b"rdaemon" {
                return false;
            }
            (base_name(a0) == name || args.get(1).is_some_and(|a1| base_name(a1) == name))
                && super::alive(pid)
        })
        .collect()
}

/// Fields of `/proc/PID/stat` after the command name: `[0]` is the state,
/// `[1]` the parent PID, `[2]` the process group, `[3]` the session.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The parent PID of `pid`, if it exists.
pub fn ppid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The process group of `pid`, if it exists.
pub fn pgid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// Children of `pid` that are zombies (exited, not yet reaped).
pub fn zombie_children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            stat_fields(p).is_some_and(|f| {
                f.first().is_some_and(|s| s == "Z")
                    && f.get(1).is_some_and(|pp| *pp == pid.to_string())
            })
        })
        .collect()
}

/// Children of `pid` (any state).
pub fn children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| ppid(p) == Some(pid))
        .collect()
}

/// A signal-set line of `/proc/PID/status` (`SigBlk`, `SigIgn`, `SigCgt`)
/// as a bit mask (bit N-1 is signal N).
pub fn signal_set(pid: i32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:")))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

/// The bit of signal `sig` in a `/proc` signal set.
pub fn sig_bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Waits for `child` with a deadline; kills it and panics naming `what`
/// when it does not end in time.
pub fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    match poll_until(limit, || child.try_wait().ok().flatten()) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// Runs `cmd` to completion within `limit` (killed and a panic otherwise).
/// Its stdout and stderr go to files in the test's directory, never to
/// pipes a detached daemon could inherit and hold open.
pub fn output_within(env: &Env, cmd: &mut Command, limit: Duration) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = env.path(&format!(".out-{n}"));
    let err_path = env.path(&format!(".err-{n}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, limit, &format!("{cmd:?}"));
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

/// [`Env::run`] with a deadline: `args` for the binary (pointed at the
/// test's PID directory).
pub fn run_within<I, S>(env: &Env, limit: Duration, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    output_within(env, env.cmd().args(args), limit)
}

/// Exit code of a run, panicking with its stderr on death by signal.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("rdaemon died: {out:?}"))
}

/// Whether a process's command line or environment mentions `needle`.
/// A zombie leader's own are empty while its threads run: theirs count.
fn mentions(pid: i32, needle: &[u8]) -> bool {
    let has = |dir: &str, file: &str| {
        std::fs::read(format!("{dir}/{file}"))
            .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
    };
    let own = format!("/proc/{pid}");
    if has(&own, "cmdline") || has(&own, "environ") {
        return true;
    }
    if !cmdline(pid).is_empty() {
        return false;
    }
    std::fs::read_dir(format!("{own}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|t| has(&t.path().to_string_lossy(), "cmdline"))
}

/// A C program whose main thread exits (`pthread_exit`) while a worker
/// thread runs on: `/proc/PID/stat` then shows the process as a zombie
/// (`Z`) although it is alive. Run as `ZL MB READY`: the worker touches MB
/// MiB, waits until the main thread is a zombie, writes the PID to the
/// file READY (whole, through a rename) and sleeps until a signal.
/// Compiled with the system's `cc`; `None`, said loudly, when there is no
/// compiler (the test is then skipped).
pub fn zombie_leader_program(env: &Env, name: &str) -> Option<PathBuf> {
    const SOURCE: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static long mb;
static const char *ready;
static pid_t leader;
char *volatile keep;
static int leader_is_zombie(void) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)leader);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] == 'Z';
}
static void *work(void *arg) {
    (void)arg;
    if (mb) { char *p = malloc(mb << 20); memset(p, 1, mb << 20); keep = p; }
    while (!leader_is_zombie()) usleep(1000);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", ready);
    FILE *f = fopen(tmp, "w");
    if (!f) abort();
    fprintf(f, "%d\n", (int)leader);
    fclose(f);
    if (rename(tmp, ready) != 0) abort();
    for (;;) pause();
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    mb = atol(argv[1]);
    ready = argv[2];
    leader = getpid();
    pthread_t t;
    if (pthread_create(&t, 0, work, 0) != 0) return 1;
    pthread_exit(0);
}
"#;
    let src = env.path(&format!("{name}.c"));
    std::fs::write(&src, SOURCE).unwrap();
    let bin = env.path(name);
    let built = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .stdin(Stdio::null())
        .output();
    match built {
        Ok(out) if out.status.success() => Some(bin),
        Ok(out) => panic!(
            "cc failed to build the zombie-leader helper: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("SKIPPED: no C compiler (`cc`: {e}) to build the zombie-leader helper");
            None
        }
    }
}

/// The PID a [`zombie_leader_program`] wrote to READY, once it did.
pub fn zombie_leader_pid(ready: &Path) -> i32 {
    let pid = poll_until(super::DEADLINE, || {
        std::fs::read_to_string(ready).ok()?.trim().parse().ok()
    });
    pid.expect("the zombie-leader helper never became a zombie leader")
}

/// Leaves nothing of a test running: on drop, SIGKILLs every process whose
/// command line or environment mentions the test's directory (its PID
/// directory, scripts and marked programs all live there), until none is
/// left or five seconds passed. Declare it after the [`Env`] so it runs
/// before the Env's own `--stop`.
pub struct Sweep {
    needle: Vec<u8>,
}

impl Sweep {
    pub fn new(env: &Env) -> Sweep {
        Sweep {
            needle: env.tmp.path().as_os_str().as_encoded_bytes().to_vec(),
        }
    }

    /// Processes of this test still around (zombies included).
    pub fn pids(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        all_pids()
            .into_iter()
            .filter(|&p| p != me && mentions(p, &self.needle))
            .collect()
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = poll_until(Duration::from_secs(5), || {
            let left: Vec<i32> = self
                .pids()
                .into_iter()
                .filter(|&p| super::alive(p))
                .collect();
            for &p in &left {
                kill(p, libc::SIGKILL);
            }
            left.is_empty().then_some(())
        });
    }
}
