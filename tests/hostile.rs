//! Hardening (issue 4): rdaemon against hostile and broken input.
//!
//! Every test drives the real binary with real processes, locks and signals
//! in a temporary directory of its own, and waits on conditions with
//! deadlines. The promise under test: rdaemon never lies (a PID file's
//! content alone never counts as running) and never hits the wrong process
//! (only proven lock holders are signalled), whatever sits in or at its
//! files, whatever the arguments, and whatever fails half-way.
//!
//! Groups, in file order: PID file contents; what sits at a slot's path;
//! the PID directory; names and arguments; privileges; faults (read-only
//! and full file systems, injected system call errors, the PID file deleted
//! or replaced, kill -9 at random points); PID namespaces.
//!
//! Tests that need root (chown, mount, setpriv, unshare) print a note and
//! return when run unprivileged; so do the few that need strace (which
//! `.ci/run` installs), where it cannot be installed or may not trace.

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints why a test (or part of one) did not run.
fn skip(test: &str, why: &str) {
    eprintln!("note: {test}: skipped: {why}");
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$0\" >/dev/null", tool])
        .status()
        .is_ok_and(|s| s.success())
}

/// A marker unique to this test run, put on every process a test starts so
/// that it can find (and clean up) exactly its own.
fn marker(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "hostile-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// COMMAND for daemons in these tests: a shell (carrying `marker` as `$0`)
/// that waits on a long sleep, so it is identifiable in `/proc`.
fn daemon_cmd(marker: &str) -> [&str; 4] {
    ["/bin/sh", "-c", "sleep 1000; :", marker]
}

/// A COMMAND that outlives its supervisor's SIGKILL as the slot's orphan:
/// a dying supervisor's COMMAND gets SIGTERM (the contract), which this one
/// ignores. Stop it with a short `--timeout`: only SIGKILL ends it.
fn orphan_cmd(marker: &str) -> [&str; 4] {
    ["/bin/sh", "-c", "trap '' TERM; sleep 1000; :", marker]
}

/// Whether process `pid` has `path` open (the test's view of "holds the
/// slot's file"; rdaemon proves the lock itself).
fn has_open(pid: i32, path: &Path) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|p| p == path))
}

/// Like [`daemon_cmd`], but first creates `ran`, so a test can tell whether
/// COMMAND ever ran.
fn daemon_cmd_touching(marker: &str, ran: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "touch \"$1\"; sleep 1000; :".into(),
        marker.into(),
        ran.display().to_string(),
    ]
}

fn argv_of(pid: i32) -> Vec<Vec<u8>> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Live processes with `needle` as one of their arguments, rdaemon's own
/// included (the harness's `pids_with_arg` leaves those out).
fn procs_with_arg(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if argv_of(pid).iter().any(|a| a == needle.as_bytes()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// rdaemon processes (caller, intermediate, supervisor) carrying `marker`.
fn rdaemon_pids(marker: &str) -> Vec<i32> {
    procs_with_arg(marker)
        .into_iter()
        .filter(|&p| argv_of(p).first().is_some_and(|a| a == bin().as_bytes()))
        .collect()
}

/// COMMAND processes (`/bin/sh -c … marker`, see [`daemon_cmd`]) carrying
/// `marker`. rdaemon makes COMMAND lead its own process group, which tells
/// it apart from the shell's own forks (a copy of COMMAND's command line
/// until it execs `sleep`) and from helpers that carry the marker too (a
/// namespace's init, `sh` wrappers, started as plain `sh`).
fn command_pids(marker: &str) -> Vec<i32> {
    procs_with_arg(marker)
        .into_iter()
        .filter(|&p| argv_of(p).first().is_some_and(|a| a == b"/bin/sh") && pgrp_of(p) == Some(p))
        .collect()
}

fn pgrp_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

fn sigkill(pid: i32) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Kills, when dropped, every process carrying one of its markers (and the
/// process group of any that leads one), so that nothing a test started
/// outlives it, even in a private namespace or after a failed assertion.
struct Sweep(Vec<String>);

impl Sweep {
    fn new(markers: &[&str]) -> Sweep {
        Sweep(markers.iter().map(|m| m.to_string()).collect())
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        for m in &self.0 {
            for pid in procs_with_arg(m) {
                if pgrp_of(pid) == Some(pid) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                sigkill(pid);
            }
        }
    }
}

/// An unrelated live process whose PID hostile files name. Killed on drop.
struct Bystander(Child);

impl Bystander {
    fn new() -> Bystander {
        Bystander(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Panics if anything killed it.
    fn assert_alive(&mut self, after: &str) {
        if let Some(st) = self.0.try_wait().unwrap() {
            panic!(
                "bystander PID {} was killed ({st:?}) by: {after}",
                self.pid()
            );
        }
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The exit code, after checking that rdaemon neither panicked nor died by
/// a signal.
fn code(out: &Output) -> i32 {
    let err = stderr_of(out);
    assert!(!err.contains("panicked"), "rdaemon panicked: {err}");
    let c = out
        .status
        .code()
        .unwrap_or_else(|| panic!("rdaemon died by a signal: {out:?}"));
    assert_ne!(c, 101, "rdaemon panicked: {err}");
    c
}

#[track_caller]
fn expect(out: &Output, want: i32, what: &str) {
    let got = code(out);
    assert_eq!(
        got,
        want,
        "{what}: exit {got}, expected {want}\nstdout: {}\nstderr: {}",
        stdout_of(out),
        stderr_of(out)
    );
}

#[track_caller]
fn expect_names(out: &Output, path: &Path, what: &str) {
    let all = format!("{}{}", stdout_of(out), stderr_of(out));
    assert!(
        all.contains(&path.display().to_string()),
        "{what}: the message does not name {}: {all}",
        path.display()
    );
}

/// Runs `cmd` to completion, failing the test if it takes longer than the
/// harness deadline (a hang is a bug here: FIFOs, locks).
fn output_within(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status: ExitStatus = match poll_until(DEADLINE, || child.try_wait().unwrap()) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung for {DEADLINE:?}: {cmd:?}");
        }
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Runs the binary against `env`'s PID directory, bounded in time.
fn bounded<I, S>(env: &Env, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = env.cmd();
    c.args(args);
    output_within(c)
}

/// `--status NAME --json` through [`bounded`], parsed.
fn status_json(env: &Env, extra: &[&OsStr], name: &str) -> (i32, Vec<Value>) {
    let mut args: Vec<&OsStr> = vec!["--status".as_ref(), name.as_ref(), "--json".as_ref()];
    args.extend_from_slice(extra);
    let out = bounded(env, &args);
    let c = code(&out);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {} / {}", stdout_of(&out), stderr_of(&out)));
    (c, v.as_array().unwrap().clone())
}

/// Creates `env`'s PID directory the way rdaemon would for root (0755).
fn make_pid_dir(env: &Env) {
    fs::create_dir_all(&env.pid_dir).unwrap();
    fs::set_permissions(&env.pid_dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// What an object at a path looks like, to prove nothing touched it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    ino: u64,
    mode: u32,
    uid: u32,
    nlink: u64,
    size: u64,
    mtime: (i64, i64),
    link: Option<PathBuf>,
    content: Option<Vec<u8>>,
    entries: Option<BTreeSet<OsString>>,
}

fn snapshot(path: &Path) -> Option<Snapshot> {
    let m = fs::symlink_metadata(path).ok()?;
    let ft = m.file_type();
    Some(Snapshot {
        ino: m.ino(),
        mode: m.mode(),
        uid: m.uid(),
        nlink: m.nlink(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        link: ft.is_symlink().then(|| fs::read_link(path).unwrap()),
        content: ft.is_file().then(|| fs::read(path).unwrap()),
        entries: ft.is_dir().then(|| {
            fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect()
        }),
    })
}

fn entries(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default()
}

/// A command running the binary as `nobody`, with `env`'s settings.
fn as_nobody(env: &Env) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
    ])
    .arg(bin())
    .env("RDAEMON_PID_DIR", &env.pid_dir)
    .env_remove("XDG_RUNTIME_DIR")
    .env_remove("NOTIFY_SOCKET")
    .stdin(Stdio::null());
    c
}

fn nobody_run<I, S>(env: &Env, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = as_nobody(env);
    c.args(args);
    output_within(c)
}

/// Lets `nobody` reach paths inside the test's temp dir (0700 by default).
fn open_temp_dir_to_all(env: &Env) {
    fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// A small deterministic generator for the kill loop; the seed is printed
/// and can be replayed with HOSTILE_SEED.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("HOSTILE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("note: kill loop seed {seed} (replay with HOSTILE_SEED={seed})");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Whether a held slot file's content is exactly one valid PID line.
fn is_pid_line(bytes: &[u8]) -> bool {
    bytes.len() >= 2
        && bytes.ends_with(b"\n")
        && bytes[0] != b'0'
        && bytes[..bytes.len() - 1].iter().all(u8::is_ascii_digit)
}

// ---------------------------------------------------------------------------
// PID file contents
// ---------------------------------------------------------------------------

/// The hostile contents of the issue, plus PIDs of live unrelated processes
/// (a spawned `sleep`, this test process itself) in plain and garbled form.
fn hostile_contents(bystander: i32) -> Vec<(String, Vec<u8>)> {
    let me = std::process::id();
    let mut cases: Vec<(String, Vec<u8>)> = [
        &b""[..],
        b"\n",
        b"abc",
        b"12abc",
        b"-1",
        b"-1\n",
        b"0",
        b"0\n",
        b"1",
        b"1\n",
        b"+5",
        b" 5",
        b"5\n6",
        b"2147483648\n",
        b"4294967297\n",
        b"\0\0\0\0",
        b"12\0\n",
        b"\xff\xfe",
    ]
    .iter()
    .map(|c| (format!("{:?}", String::from_utf8_lossy(c)), c.to_vec()))
    .collect();
    cases.push((
        "bystander PID".into(),
        format!("{bystander}\n").into_bytes(),
    ));
    cases.push((
        "bystander PID, no newline".into(),
        format!("{bystander}").into_bytes(),
    ));
    cases.push((
        "bystander PID, two newlines".into(),
        format!("{bystander}\n\n").into_bytes(),
    ));
    cases.push((
        "bystander PID, leading zero".into(),
        format!("0{bystander}\n").into_bytes(),
    ));
    cases.push(("the test's own PID".into(), format!("{me}\n").into_bytes()));
    cases.push((
        "10 MB of digits".into(),
        format!("{bystander}")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(10 << 20)
            .collect(),
    ));
    cases
}

#[test]
fn hostile_pid_file_contents_are_stale_never_signalled_and_started_over() {
    let env = Env::new();
    let mk = marker("contents");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    make_pid_dir(&env);
    let mut cases = hostile_contents(bystander.pid());
    cases.push(("a 4 GiB sparse file".into(), Vec::new()));
    for (i, (label, content)) in cases.iter().enumerate() {
        let name = format!("c{i}");
        let file = env.pid_file(&name, 1);
        let plant = || {
            fs::write(&file, content).unwrap();
            if label.contains("sparse") {
                fs::File::options()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_len(4 << 30)
                    .unwrap();
            }
        };
        plant();
        let what = |op: &str| format!("{op} over {label}");

        // Content alone never counts as running.
        expect(&bounded(&env, ["--check", &name]), 1, &what("--check"));
        let (c, slots) = status_json(&env, &[], &name);
        assert_eq!(c, 1, "{}", what("--status"));
        assert_eq!(slots.len(), 1, "{}: {slots:?}", what("--status"));
        assert_eq!(slots[0]["state"], "stale", "{}", what("--status"));
        assert!(slots[0]["pid"].is_null(), "{}: {slots:?}", what("--status"));
        assert!(slots[0]["child_pid"].is_null(), "{}", what("--status"));
        expect(&bounded(&env, ["--status", &name]), 1, &what("--status"));

        // Never signalled.
        expect(&bounded(&env, ["--stop", &name]), 0, &what("--stop"));
        bystander.assert_alive(&what("--stop"));

        // A start proceeds over it and writes the truth.
        plant();
        let mut args = vec!["--name", name.as_str(), "--"];
        args.extend(daemon_cmd(&mk));
        expect(&env.run(&args), 0, &what("start"));
        let (c, slots) = status_json(&env, &[], &name);
        assert_eq!(c, 0, "{}", what("--status after start"));
        assert_eq!(slots[0]["state"], "running", "{}", what("start"));
        let sup = slots[0]["pid"].as_i64().expect("verified supervisor PID") as i32;
        assert_eq!(fs::read(&file).unwrap(), format!("{sup}\n").into_bytes());
        expect(
            &bounded(&env, ["--stop", &name]),
            0,
            &what("--stop of the peer"),
        );
        wait_until("COMMAND gone", || command_pids(&mk).is_empty());
        bystander.assert_alive(&what("start and --stop"));
    }
}

/// A forged PID in a file that *is* locked (by a foreign `flock` holder):
/// the file's PID is never believed, never shown, never signalled.
#[test]
fn forged_pid_in_a_locked_file_is_never_signalled() {
    if !have("flock") {
        return skip("forged_pid_in_a_locked_file", "no flock(1)");
    }
    let env = Env::new();
    let mk = marker("forged");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    make_pid_dir(&env);
    let file = env.pid_file("f", 1);
    fs::write(&file, format!("{}\n", bystander.pid())).unwrap();
    let mut locker = Command::new("flock")
        .arg("-x")
        .arg(&file)
        .args(daemon_cmd(&mk))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the foreign locker holds the file", || {
        bounded(&env, ["--check", "f"]).status.code() == Some(0)
    });

    let (c, slots) = status_json(&env, &[], "f");
    assert_eq!(c, 0);
    assert_ne!(slots[0]["pid"], bystander.pid(), "{slots:?}");
    assert_ne!(slots[0]["child_pid"], bystander.pid(), "{slots:?}");

    // A start finds the slot busy and does not name the forged PID.
    let mut args = vec!["--name", "f", "--"];
    args.extend(daemon_cmd(&mk));
    let out = env.run(&args);
    expect(&out, 75, "start while a foreign process holds the lock");
    assert!(
        !stderr_of(&out).contains(&bystander.pid().to_string()),
        "the busy message names the forged PID: {}",
        stderr_of(&out)
    );

    // --stop signals the lock holders (they hold the slot), never the PID
    // written in the file.
    expect(
        &bounded(&env, ["--stop", "f", "--timeout", "5"]),
        0,
        "--stop",
    );
    bystander.assert_alive("--stop of a forged, locked file");
    let _ = locker.wait();
    assert_eq!(command_pids(&mk), Vec::<i32>::new());
}

/// `echo PID > F` on a running peer's file keeps the inode and the lock:
/// the supervisor puts the truth back (its inotify watch sees the write),
/// and nothing believes the forgery meanwhile.
#[test]
fn pid_file_overwritten_in_place_is_restored() {
    let env = Env::new();
    let mk = marker("overwrite");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    let cmd = daemon_cmd(&mk);
    env.start("ow", &[], &cmd);
    let file = env.pid_file("ow", 1);
    let sup = env.read_pid("ow", 1).unwrap();
    let ino = fs::metadata(&file).unwrap().ino();

    fs::write(&file, format!("{}\n", bystander.pid())).unwrap();
    let (c, slots) = status_json(&env, &[], "ow");
    assert_eq!(c, 0);
    assert_ne!(slots[0]["pid"], bystander.pid(), "{slots:?}");
    let out = env.run(["--name", "ow", "--"].into_iter().chain(cmd));
    expect(&out, 75, "start of a busy slot");
    assert!(
        !stderr_of(&out).contains(&bystander.pid().to_string()),
        "the busy message names the forged PID: {}",
        stderr_of(&out)
    );

    wait_until("the supervisor restores the PID line", || {
        fs::read(&file).unwrap() == format!("{sup}\n").into_bytes()
    });
    assert_eq!(fs::metadata(&file).unwrap().ino(), ino);
    assert_eq!(env.check("ow"), 0);
    expect(&bounded(&env, ["--stop", "ow"]), 0, "--stop");
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
    bystander.assert_alive("--stop");
}

/// The forger keeps the file open (no close, so no IN_CLOSE_WRITE): the
/// write itself (IN_MODIFY) is enough for the supervisor to put its line
/// back while the forger's descriptor is still open.
#[test]
fn pid_file_overwritten_by_a_writer_that_keeps_it_open_is_restored() {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    let mk = marker("overwrite-open");
    let _sweep = Sweep::new(&[&mk]);
    let bystander = Bystander::new();
    env.start("owo", &[], &daemon_cmd(&mk));
    let file = env.pid_file("owo", 1);
    let sup = env.read_pid("owo", 1).unwrap();
    let forger = fs::OpenOptions::new().write(true).open(&file).unwrap();
    forger
        .write_all_at(format!("{}\n", bystander.pid()).as_bytes(), 0)
        .unwrap();
    // fs::read opens read-only, which asks the supervisor nothing.
    wait_until("the supervisor restores the PID line", || {
        fs::read(&file).unwrap() == format!("{sup}\n").into_bytes()
    });
    drop(forger);
    expect(&bounded(&env, ["--stop", "owo"]), 0, "--stop");
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
}

/// Same forgery on a peer that respawns COMMAND, met by `--status` before
/// the supervisor can repair it (it is stopped meanwhile), then `--stop`.
#[test]
fn stop_of_a_peer_whose_pid_file_was_overwritten_in_place() {
    let env = Env::new();
    let mk = marker("overwrite-stop");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    let cmd = daemon_cmd(&mk);
    env.start("ows", &["--respawn", "--respawn-delay", "0.1"], &cmd);
    let sup = env.read_pid("ows", 1).unwrap();
    // A stopped supervisor cannot put its PID line back, so --status meets
    // the forgery for certain. --stop may meet it or the repair.
    signal(sup, nix::sys::signal::Signal::SIGSTOP);
    fs::write(env.pid_file("ows", 1), format!("{}\n", bystander.pid())).unwrap();
    let (_, slots) = status_json(&env, &[], "ows");
    signal(sup, nix::sys::signal::Signal::SIGCONT);
    let state = slots[0]["state"].clone();
    assert_eq!(
        slots[0]["pid"], sup,
        "--status believed the file: {slots:?}"
    );
    let out = bounded(&env, ["--stop", "ows", "--timeout", "3"]);
    let stop_code = code(&out);
    // --stop returns once the lock is free; the supervisor releases it just
    // before its process exits, so give the exit a (bounded) moment.
    let survived = poll_until(DEADLINE, || (!alive(sup)).then_some(())).is_none();
    bystander.assert_alive("--stop");
    // Expected: the supervisor is alive, so the slot is `running` (not
    // `orphaned`), and --stop, which must signal every lock holder, ends it.
    assert!(
        state == "running" && stop_code == 0 && !survived,
        "--status said {state}; --stop exited {stop_code} ({}); supervisor alive after --stop: {survived}",
        stderr_of(&out).trim()
    );
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
    bystander.assert_alive("--stop");
}

/// The supervisor is gone and its PID has been "reused" (the file now names
/// an unrelated live process): the orphaned COMMAND is still found through
/// the lock and stopped; the unrelated process is not touched.
#[test]
fn orphan_whose_pid_file_names_a_reused_pid() {
    let env = Env::new();
    let mk = marker("reused");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    let cmd = orphan_cmd(&mk);
    env.start("ru", &[], &cmd);
    let sup = env.read_pid("ru", 1).unwrap();
    sigkill(sup);
    wait_until("supervisor dead", || !alive(sup));
    let child = command_pids(&mk);
    assert_eq!(child.len(), 1);
    fs::write(env.pid_file("ru", 1), format!("{}\n", bystander.pid())).unwrap();

    let (c, slots) = status_json(&env, &[], "ru");
    assert_eq!(c, 150);
    assert_eq!(slots[0]["state"], "orphaned", "{slots:?}");
    assert!(slots[0]["pid"].is_null(), "{slots:?}");
    assert_eq!(slots[0]["child_pid"], child[0]);
    assert_eq!(env.check("ru"), 150);

    let out = env.run(["--name", "ru", "--", "true"]);
    expect(&out, 75, "start while the orphan holds the slot");
    assert!(!stderr_of(&out).contains(&bystander.pid().to_string()));
    assert_eq!(command_pids(&mk).len(), 1, "never N+1");

    expect(
        &bounded(&env, ["--stop", "ru", "--timeout", "1"]),
        0,
        "--stop of an orphan",
    );
    wait_until("orphaned COMMAND gone", || command_pids(&mk).is_empty());
    bystander.assert_alive("--stop");
    env.start("ru", &[], &daemon_cmd(&mk));
    expect(&bounded(&env, ["--stop", "ru"]), 0, "--stop");
}

/// The side file's child PID is only a hint: a forged one is not shown and
/// not signalled.
#[test]
fn forged_child_pid_in_the_state_file_is_never_signalled() {
    let env = Env::new();
    let mk = marker("state");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    let cmd = daemon_cmd(&mk);
    env.start("sf", &[], &cmd);
    let state = env.pid_dir.join("sf.1.state");
    wait_until("state file written", || state.exists());
    fs::write(
        &state,
        format!("child_pid={}\nrestarts=0\n", bystander.pid()),
    )
    .unwrap();
    let (c, slots) = status_json(&env, &[], "sf");
    assert_eq!(c, 0);
    assert_eq!(slots[0]["state"], "running");
    assert_ne!(slots[0]["child_pid"], bystander.pid(), "{slots:?}");
    expect(&bounded(&env, ["--stop", "sf"]), 0, "--stop");
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
    bystander.assert_alive("--stop with a forged state file");
}

// ---------------------------------------------------------------------------
// What sits at a slot's path
// ---------------------------------------------------------------------------

struct Planted {
    label: &'static str,
    /// Other paths that must not change (a symlink's or hard link's target).
    guarded: Vec<PathBuf>,
    /// A path that must not come into existence (a dangling symlink's).
    must_not_exist: Option<PathBuf>,
    /// Keeps a socket bound for the test's duration.
    _keep: Option<std::os::unix::net::UnixListener>,
}

fn plant(env: &Env, label: &'static str, at: &Path) -> Planted {
    let mut p = Planted {
        label,
        guarded: Vec::new(),
        must_not_exist: None,
        _keep: None,
    };
    match label {
        "symlink to a file" => {
            let target = env.path("precious");
            fs::write(&target, b"precious data\n").unwrap();
            symlink(&target, at).unwrap();
            p.guarded.push(target);
        }
        "dangling symlink" => {
            let target = env.path("nothing-here");
            symlink(&target, at).unwrap();
            p.must_not_exist = Some(target);
        }
        "hard link" => {
            let target = env.path("linked");
            fs::write(&target, b"4242\n").unwrap();
            fs::hard_link(&target, at).unwrap();
            p.guarded.push(target);
        }
        "FIFO" => {
            nix::unistd::mkfifo(at, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        }
        "directory" => {
            fs::create_dir(at).unwrap();
            fs::write(at.join("inside"), b"x").unwrap();
        }
        "socket" => {
            p._keep = Some(std::os::unix::net::UnixListener::bind(at).unwrap());
        }
        "file of another user" => {
            fs::write(at, b"4242\n").unwrap();
            chown(at, NOBODY);
        }
        "character device" => {
            nix::sys::stat::mknod(
                at,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o644),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
        }
        other => unreachable!("{other}"),
    }
    p
}

#[test]
fn unusable_things_at_a_slot_path_are_refused_and_left_alone() {
    let env = Env::new();
    let mk = marker("unusable");
    let _sweep = Sweep::new(&[&mk]);
    make_pid_dir(&env);
    let mut labels = vec![
        "symlink to a file",
        "dangling symlink",
        "hard link",
        "FIFO",
        "directory",
        "socket",
    ];
    if is_root() {
        labels.extend(["file of another user", "character device"]);
    } else {
        skip(
            "unusable_things_at_a_slot_path",
            "another user's file and a device need root",
        );
    }
    for (i, label) in labels.into_iter().enumerate() {
        let name = format!("u{i}");
        let at = env.pid_file(&name, 1);
        let planted = plant(&env, label, &at);
        let guarded: Vec<(PathBuf, Option<Snapshot>)> = std::iter::once(at.clone())
            .chain(planted.guarded.iter().cloned())
            .map(|p| {
                let s = snapshot(&p);
                (p, s)
            })
            .collect();
        let ran = env.path(&format!("ran-{name}"));
        let what = |op: &str| format!("{op} with a {} at the slot path", planted.label);

        let mut start: Vec<String> = vec!["--name".into(), name.clone(), "--".into()];
        start.extend(daemon_cmd_touching(&mk, &ran));
        let out = bounded(&env, &start);
        expect(&out, 1, &what("start"));
        expect_names(&out, &at, &what("start"));
        let out = bounded(&env, ["--check", &name, "--verbose"]);
        expect(&out, 4, &what("--check"));
        expect_names(&out, &at, &what("--check --verbose"));
        let (c, slots) = status_json(&env, &[], &name);
        assert_eq!(c, 4, "{}", what("--status"));
        assert_eq!(slots[0]["state"], "unusable", "{}", what("--status"));
        let out = bounded(&env, ["--stop", &name]);
        expect(&out, 1, &what("--stop"));
        expect_names(&out, &at, &what("--stop"));

        // A second slot is free: a start with two peers takes it and leaves
        // the first alone.
        let mut start2: Vec<String> = vec![
            "--name".into(),
            name.clone(),
            "--max-peers".into(),
            "2".into(),
            "--".into(),
        ];
        start2.extend(daemon_cmd_touching(&mk, &ran));
        expect(
            &bounded(&env, &start2),
            0,
            &what("start with --max-peers 2"),
        );
        let (_, slots) = status_json(&env, &[], &name);
        let states: Vec<(i64, &str)> = slots
            .iter()
            .map(|s| (s["slot"].as_i64().unwrap(), s["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            states,
            vec![(1, "unusable"), (2, "running")],
            "{}",
            what("--status")
        );
        wait_until("COMMAND ran in slot 2", || ran.exists());
        let out = bounded(&env, ["--stop", &name]);
        expect(&out, 1, &what("--stop (slot 1 left alone)"));
        wait_until("slot 2's COMMAND stopped", || command_pids(&mk).is_empty());
        assert!(!env.pid_file(&name, 2).exists());

        for (path, before) in &guarded {
            assert_eq!(
                &snapshot(path),
                before,
                "{}: {} was modified",
                planted.label,
                path.display()
            );
        }
        if let Some(p) = &planted.must_not_exist {
            assert!(!p.exists(), "{}: {} was created", label, p.display());
        }
    }
}

/// The side files beside a slot file (its state file) are rdaemon's too:
/// something planted at their paths is never followed, and a start that
/// cannot write them fails cleanly.
#[test]
fn things_planted_at_the_state_file_path() {
    let env = Env::new();
    let mk = marker("state-path");
    let _sweep = Sweep::new(&[&mk]);
    make_pid_dir(&env);
    let cmd = daemon_cmd(&mk);

    // A symlink is replaced (rename never follows), its target untouched.
    let precious = env.path("precious");
    fs::write(&precious, b"precious\n").unwrap();
    let state = env.pid_dir.join("sp.1.state");
    symlink(&precious, &state).unwrap();
    let before = snapshot(&precious);
    env.start("sp", &[], &cmd);
    assert!(
        !fs::symlink_metadata(&state)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(snapshot(&precious), before);
    expect(&bounded(&env, ["--stop", "sp"]), 0, "--stop");

    // A directory cannot be replaced: the start fails naming it, and no
    // PID file is left behind.
    let state = env.pid_dir.join("sd.1.state");
    fs::create_dir(&state).unwrap();
    let mut start = vec!["--name", "sd", "--"];
    start.extend(daemon_cmd(&mk));
    let out = bounded(&env, &start);
    expect(&out, 1, "start with a directory at the state file's path");
    expect_names(&out, &state, "start");
    assert!(!env.pid_file("sd", 1).exists());
    assert!(state.is_dir());
    assert!(command_pids(&mk).is_empty());
}

/// `--log FILE` naming a FIFO with no reader must not hang the start (the
/// caller waits for the supervisor's report, which never comes).
#[test]
fn a_fifo_as_log_file_does_not_hang_the_start() {
    let env = Env::new();
    let mk = marker("log-fifo");
    let _sweep = Sweep::new(&[&mk]);
    let fifo = env.path("log.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut c = env.cmd();
    c.args(["--name", "lf", "--log"])
        .arg(&fifo)
        .arg("--")
        .args(daemon_cmd(&mk));
    let out = output_within(c);
    expect(&out, 1, "start with a FIFO as --log");
    expect_names(&out, &fifo, "start with a FIFO as --log");
    assert!(command_pids(&mk).is_empty());
}

// ---------------------------------------------------------------------------
// The PID directory
// ---------------------------------------------------------------------------

#[test]
fn missing_pid_dir_is_created_0755_for_root_whatever_the_umask() {
    if !is_root() {
        return skip("missing_pid_dir_root", "needs root");
    }
    let env = Env::new();
    let mk = marker("mkdir-root");
    let _sweep = Sweep::new(&[&mk]);
    assert!(!env.pid_dir.exists());
    let mut c = Command::new("sh");
    c.args(["-c", "umask 077; exec \"$0\" \"$@\""])
        .arg(bin())
        .args(["--name", "md", "--foreground", "--", "true"])
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    expect(&output_within(c), 0, "foreground start under umask 077");
    let m = fs::metadata(&env.pid_dir).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(m.uid(), 0);
}

#[test]
fn missing_pid_dir_is_created_0700_for_others() {
    if !is_root() {
        // Unprivileged, the test process itself is "others".
        let env = Env::new();
        expect(
            &bounded(&env, ["--name", "md", "--foreground", "--", "true"]),
            0,
            "start",
        );
        let m = fs::metadata(&env.pid_dir).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
        return;
    }
    let mut env = Env::new();
    let mk = marker("mkdir-nobody");
    let _sweep = Sweep::new(&[&mk]);
    open_temp_dir_to_all(&env);
    let home = env.path("nobody-home");
    fs::create_dir(&home).unwrap();
    chown(&home, NOBODY);
    env.pid_dir = home.join("run");
    // Through sh, to run under umask 000.
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
        "sh",
        "-c",
        "umask 000; exec \"$0\" \"$@\"",
    ])
    .arg(bin())
    .args(["--name", "md", "--"])
    .args(daemon_cmd(&mk))
    .env("RDAEMON_PID_DIR", &env.pid_dir)
    .env_remove("XDG_RUNTIME_DIR")
    .env_remove("NOTIFY_SOCKET")
    .stdin(Stdio::null());
    expect(&output_within(c), 0, "start as nobody under umask 000");
    let m = fs::metadata(&env.pid_dir).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o700);
    assert_eq!(m.uid(), NOBODY);
    expect(&nobody_run(&env, ["--check", "md"]), 0, "--check as nobody");
    expect(&nobody_run(&env, ["--stop", "md"]), 0, "--stop as nobody");
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
}

#[test]
fn pid_dir_with_a_missing_parent_is_an_error_naming_it() {
    let env = Env::new();
    let mut c = env.cmd();
    let dir = env.path("no/such/parent/run");
    c.args(["--name", "mp", "--pid-dir"])
        .arg(&dir)
        .args(["--foreground", "--", "true"]);
    let out = output_within(c);
    expect(&out, 1, "start");
    expect_names(&out, &dir, "start");
    // Inspection of a directory that does not exist creates nothing.
    for (args, want) in [
        (["--check", "mp"], 3),
        (["--status", "mp"], 3),
        (["--stop", "mp"], 0),
    ] {
        let mut c = env.cmd();
        c.args(args).arg("--pid-dir").arg(&dir);
        expect(&output_within(c), want, args[0]);
    }
    assert!(!env.path("no").exists());
}

struct DirCase {
    label: &'static str,
    pid_dir: PathBuf,
    /// The path the refusal must name.
    refused: PathBuf,
}

fn unsafe_dir_cases(env: &Env) -> Vec<DirCase> {
    let mut cases = Vec::new();
    let mut add = |label, pid_dir: PathBuf, refused: PathBuf| {
        cases.push(DirCase {
            label,
            pid_dir,
            refused,
        })
    };
    let file = env.path("a-file");
    fs::write(&file, b"").unwrap();
    add("a regular file", file.clone(), file);

    let fifo = env.path("a-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    add("a FIFO", fifo.clone(), fifo);

    for (label, mode) in [
        ("group-writable", 0o775),
        ("world-writable", 0o777),
        ("world-writable even with the sticky bit", 0o1777),
    ] {
        let d = env.path(&format!("mode-{mode:o}"));
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
        add(label, d.clone(), d);
    }

    let ww = env.path("ww-parent");
    fs::create_dir_all(ww.join("run")).unwrap();
    fs::set_permissions(&ww, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(ww.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
    add(
        "inside a world-writable parent without the sticky bit",
        ww.join("run"),
        ww,
    );

    if is_root() {
        let theirs = env.path("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).unwrap();
        chown(&theirs, NOBODY);
        add("owned by another user", theirs.clone(), theirs);

        let theirs_parent = env.path("theirs-parent");
        fs::create_dir_all(theirs_parent.join("run")).unwrap();
        fs::set_permissions(&theirs_parent, fs::Permissions::from_mode(0o755)).unwrap();
        chown(&theirs_parent, NOBODY);
        add(
            "inside a parent owned by another user",
            theirs_parent.join("run"),
            theirs_parent,
        );

        let real = env.path("real-dir");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        let link = env.path("their-link");
        symlink(&real, &link).unwrap();
        chown(&link, NOBODY);
        add(
            "reached through a symlink owned by another user",
            link.clone(),
            link,
        );

        let real_parent = env.path("real-parent");
        fs::create_dir_all(real_parent.join("run")).unwrap();
        let mid = env.path("their-mid-link");
        symlink(&real_parent, &mid).unwrap();
        chown(&mid, NOBODY);
        add(
            "below a symlink owned by another user",
            mid.join("run"),
            mid,
        );
    } else {
        skip("unsafe_pid_dirs", "other owners need root");
    }
    cases
}

#[test]
fn unsafe_pid_dirs_are_refused_naming_the_path() {
    let env = Env::new();
    let mk = marker("unsafe-dir");
    let _sweep = Sweep::new(&[&mk]);
    for case in unsafe_dir_cases(&env) {
        let what = |op: &str| format!("{op} with a PID directory {}", case.label);
        let before = entries(&case.pid_dir);
        let ran = env.path("ran");
        let dir: &OsStr = case.pid_dir.as_os_str();

        let mut c = env.cmd();
        c.args(["--name", "ud", "--pid-dir"])
            .arg(dir)
            .arg("--")
            .args(daemon_cmd_touching(&mk, &ran));
        let out = output_within(c);
        expect(&out, 1, &what("start"));
        expect_names(&out, &case.refused, &what("start"));

        for (mode, code) in [("--check", 4), ("--status", 4), ("--stop", 1)] {
            // --verbose makes --check explain itself (and so name the path).
            let verbose: &[&OsStr] = if mode == "--check" {
                &[OsStr::new("--verbose")]
            } else {
                &[]
            };
            let args = [OsStr::new(mode), "ud".as_ref(), "--pid-dir".as_ref(), dir];
            let out = bounded(&env, args.iter().chain(verbose));
            expect(&out, code, &what(mode));
            expect_names(&out, &case.refused, &what(mode));
        }

        assert!(!ran.exists(), "{}: COMMAND ran", case.label);
        assert_eq!(
            entries(&case.pid_dir),
            before,
            "{}: files created",
            case.label
        );
        assert!(command_pids(&mk).is_empty());
    }
}

/// A sticky, world-writable *parent* (like /tmp) is fine.
#[test]
fn a_private_pid_dir_inside_a_sticky_world_writable_parent_is_fine() {
    let mut env = Env::new();
    let mk = marker("sticky");
    let _sweep = Sweep::new(&[&mk]);
    let parent = env.path("sticky");
    fs::create_dir(&parent).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o1777)).unwrap();
    env.pid_dir = parent.join("run");
    let cmd = daemon_cmd(&mk);
    env.start("st", &[], &cmd);
    assert_eq!(env.check("st"), 0);
    expect(&bounded(&env, ["--stop", "st"]), 0, "--stop");
}

/// Without `--pid-dir`, `$RDAEMON_PID_DIR` or `$XDG_RUNTIME_DIR`, a user's
/// directory is `/tmp/rdaemon-$UID`, which anyone can create first. Runs in
/// a private mount namespace with its own /tmp.
#[test]
fn tmp_fallback_planted_by_another_user_is_refused() {
    const T: &str = "tmp_fallback_planted_by_another_user";
    if !is_root() {
        return skip(T, "needs root (unshare -m, setpriv)");
    }
    if bin().starts_with("/tmp/") {
        return skip(T, "the binary lives under /tmp, which the test hides");
    }
    let mk = marker("fallback");
    let _sweep = Sweep::new(&[&mk]);
    // The new /tmp hides the test's own temp dir: everything is reported on
    // stdout, one `KEY=VALUE` line each.
    let script = r#"
        set -u
        B=$1; MK=$2
        mount -t tmpfs -o mode=1777 tmpfs /tmp || exit 99
        F=/tmp/rdaemon-65534
        nb() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$B" "$@"; }
        try() {
            label=$1
            err=$(nb --name fb -- /bin/sh -c 'touch "$1"; sleep 1000; :' "$MK" "/tmp/ran-$label" 2>&1 >/dev/null)
            echo "$label.start=$?"
            echo "$label.err=$err" | tr '\n' ' '; echo
            out=$(nb --check fb --verbose 2>&1)
            echo "$label.check=$?"
            echo "$label.why=$out" | tr '\n' ' '; echo
            [ -e "/tmp/ran-$label" ] && echo "$label.ran=yes"
            echo "$label.ls=$(ls -A "$F/" 2>/dev/null | tr '\n' ' ')"
        }
        mkdir $F && chown 12345 $F && chmod 700 $F
        try other-owner
        rm -rf $F
        mkdir $F && chown 65534 $F && chmod 777 $F
        try world-writable
        rm -rf $F
        mkdir /tmp/nobodys && chown 65534 /tmp/nobodys && chmod 700 /tmp/nobodys
        ln -s /tmp/nobodys $F && chown -h 12345 $F
        try foreign-symlink
        rm -f $F
        echo x > $F && chown 65534 $F
        try regular-file
        rm -f $F
        err=$(nb --name fb --foreground -- true 2>&1)
        echo "fresh.start=$?"
        stat -c 'fresh.mode=%a fresh.uid=%u' $F
    "#;
    let out = output_within({
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", script, "sh"])
            .arg(bin())
            .arg(&mk)
            .env_remove("RDAEMON_PID_DIR")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        c
    });
    if out.status.code() == Some(99) || (!out.status.success() && out.stdout.is_empty()) {
        return skip(T, &format!("unshare/mount failed: {}", stderr_of(&out)));
    }
    let report = stdout_of(&out);
    let line = |key: &str| -> String {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in:\n{report}"))
            .to_string()
    };
    for label in [
        "other-owner",
        "world-writable",
        "foreign-symlink",
        "regular-file",
    ] {
        assert_eq!(line(&format!("{label}.start")), "1", "{label}:\n{report}");
        assert_eq!(line(&format!("{label}.check")), "4", "{label}:\n{report}");
        assert!(
            !report.contains(&format!("{label}.ran=yes")),
            "{label}: COMMAND ran"
        );
        let err = line(&format!("{label}.err"));
        assert!(err.contains("/tmp/rdaemon-65534"), "{label}: {err}");
        let why = line(&format!("{label}.why"));
        assert!(why.contains("/tmp/rdaemon-65534"), "{label}: {why}");
        let ls = line(&format!("{label}.ls"));
        assert!(!ls.contains(".pid"), "{label}: slot files created: {ls}");
    }
    assert_eq!(line("fresh.start"), "0", "{report}");
    assert!(
        report.contains("fresh.mode=700 fresh.uid=65534"),
        "{report}"
    );
}

// ---------------------------------------------------------------------------
// Names and arguments
// ---------------------------------------------------------------------------

#[test]
fn invalid_names_are_usage_errors_that_create_and_run_nothing() {
    let env = Env::new();
    let ran = env.path("ran");
    let long = "x".repeat(65);
    let names: Vec<&str> = vec![
        "", "..", ".", "/", "a/b", "../x", "a b", " a", "a\tb", "a\nb", "a\x01", "\x7f", "-x",
        "--", ".hidden", "_x", "é", "a:b", "a*", &long,
    ];
    for name in names {
        let what = |op: &str| format!("{op} {name:?}");
        let out = bounded(
            &env,
            [
                format!("--name={name}"),
                "--".into(),
                "touch".into(),
                ran.display().to_string(),
            ],
        );
        expect(&out, 2, &what("--name"));
        assert!(
            !stderr_of(&out).is_empty(),
            "{}: no message",
            what("--name")
        );
        for mode in ["--check", "--status", "--stop"] {
            let out = bounded(&env, [format!("{mode}={name}")]);
            expect(&out, 2, &what(mode));
            assert!(!stderr_of(&out).is_empty(), "{}: no message", what(mode));
        }
        assert!(
            !env.pid_dir.exists(),
            "{}: PID directory created",
            what("any")
        );
        assert!(!ran.exists(), "{}: COMMAND ran", what("--name"));
    }
    // Not UTF-8 at all.
    let out = bounded(
        &env,
        [
            OsStr::new("--name"),
            OsStr::from_bytes(b"a\xffb"),
            "--".as_ref(),
            "touch".as_ref(),
            ran.as_os_str(),
        ],
    );
    expect(&out, 2, "--name with invalid UTF-8");
    assert!(!env.pid_dir.exists() && !ran.exists());
}

#[test]
fn a_64_byte_name_is_fine() {
    let env = Env::new();
    let name = format!(
        "{}9",
        "Az0._-".repeat(11).chars().take(63).collect::<String>()
    );
    assert_eq!(name.len(), 64);
    let out = bounded(&env, ["--name", &name, "--foreground", "--", "true"]);
    expect(&out, 0, "start");
    expect(&bounded(&env, ["--check", &name]), 3, "--check");
}

/// Arguments that are not UTF-8, or look like options or shell syntax,
/// reach COMMAND byte for byte, in the foreground and detached.
#[test]
fn arguments_reach_command_byte_for_byte() {
    let env = Env::new();
    let mk = marker("argv");
    let _sweep = Sweep::new(&[&mk]);
    let args: Vec<&[u8]> = vec![
        b"\xff\xfe",
        b"caf\xe9",
        b"\xc3\x28",
        b"a b\tc\nd",
        b"--",
        b"-x",
        b"--name=evil",
        b"$(touch PWNED)",
        b"*",
        b"",
        b"\x01\x7f",
    ];
    let script = "d=$1; shift; i=0; for a do i=$((i+1)); printf %s \"$a\" > \"$d/arg.$i\"; done; echo \"$i\" > \"$d/count\"; sleep 1000; :";
    for (mode, opts) in [("foreground", &["--foreground"][..]), ("detached", &[][..])] {
        let out_dir = env.path(mode);
        fs::create_dir(&out_dir).unwrap();
        let mut c = env.cmd();
        c.args(["--name", mode])
            .args(opts)
            .args(["--", "/bin/sh", "-c"])
            .arg(if mode == "foreground" {
                // In the foreground rdaemon waits for COMMAND: let it end.
                script.replace("sleep 1000; :", "exit 0")
            } else {
                script.to_string()
            })
            .arg(&mk)
            .arg(&out_dir)
            .args(args.iter().map(|a| OsStr::from_bytes(a)));
        expect(&output_within(c), 0, mode);
        let count = out_dir.join("count");
        wait_until("COMMAND wrote its arguments", || {
            read(&count).trim() == args.len().to_string()
        });
        for (i, want) in args.iter().enumerate() {
            let got = fs::read(out_dir.join(format!("arg.{}", i + 1))).unwrap();
            assert_eq!(&got, want, "{mode}: argument {}", i + 1);
        }
        for p in [
            Path::new("/PWNED"),
            Path::new("PWNED"),
            &out_dir.join("PWNED"),
        ] {
            assert!(!p.exists(), "an argument was evaluated");
        }
        if mode == "detached" {
            expect(&bounded(&env, ["--stop", mode]), 0, "--stop");
        }
    }
}

/// `--env KEY=VALUE` is documented to accept a value that is not UTF-8.
#[test]
fn env_values_reach_command_byte_for_byte() {
    let env = Env::new();
    let out_file = env.path("value");
    let mut kv = OsString::from("HOSTILE=");
    kv.push(OsStr::from_bytes(b"\xff\xfe ok"));
    let mut c = env.cmd();
    c.args(["--name", "ev", "--foreground", "--env"])
        .arg(&kv)
        .args(["--", "/bin/sh", "-c", "printf %s \"$HOSTILE\" > \"$0\""])
        .arg(&out_file);
    expect(&output_within(c), 0, "--env with a non-UTF-8 value");
    assert_eq!(fs::read(&out_file).unwrap(), b"\xff\xfe ok");
}

#[test]
fn pid_dir_and_chdir_that_are_not_utf8_work() {
    let env = Env::new();
    let mk = marker("utf8dir");
    let _sweep = Sweep::new(&[&mk]);
    let base = env.tmp.path().join(OsStr::from_bytes(b"d\xff\xfe"));
    fs::create_dir(&base).unwrap();
    let dir = base.join("run");
    let pwd = env.path("pwd");
    let mut c = env.cmd();
    c.arg("--name")
        .arg("nu")
        .arg("--pid-dir")
        .arg(&dir)
        .arg("--chdir")
        .arg(&base)
        .args(["--", "/bin/sh", "-c", "pwd > \"$1\"; sleep 1000; :"])
        .arg(&mk)
        .arg(&pwd);
    expect(&output_within(c), 0, "start");
    wait_until("COMMAND ran", || {
        fs::read(&pwd).is_ok_and(|b| b.ends_with(b"\n"))
    });
    assert_eq!(
        fs::read(&pwd).unwrap(),
        [base.as_os_str().as_bytes(), b"\n"].concat()
    );
    let (c, slots) = status_json(&env, &["--pid-dir".as_ref(), dir.as_os_str()], "nu");
    assert_eq!(c, 0);
    assert_eq!(slots[0]["state"], "running");
    expect(
        &bounded(
            &env,
            [
                OsStr::new("--stop"),
                "nu".as_ref(),
                "--pid-dir".as_ref(),
                dir.as_os_str(),
            ],
        ),
        0,
        "--stop",
    );
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
}

/// Runs `cmd` with stdout a pipe whose read end is already closed
/// (`rdaemon … | true`), and stderr captured.
fn with_closed_stdout(mut cmd: Command) -> Output {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(r);
    cmd.stdout(Stdio::from(w)).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let mut err = Vec::new();
    let mut child = child;
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr: err,
    }
}

#[test]
fn a_closed_stdout_never_panics() {
    let env = Env::new();
    let mk = marker("epipe");
    let _sweep = Sweep::new(&[&mk]);
    let piped = |args: &[&str], want: i32, stage: &str| {
        let mut c = env.cmd();
        c.args(args);
        let what = format!("{stage}: rdaemon {} | true", args.join(" "));
        expect(&with_closed_stdout(c), want, &what);
    };
    let quiet: &[(&[&str], i32)] = &[
        (&["--status", "x"], 3),
        (&["--status", "x", "--json"], 3),
        (&["--check", "x", "--verbose"], 3),
        (&["--stop", "x"], 0),
        (&["--name", "x", "--foreground", "--", "true"], 0),
        (&["--help"], 0),
        (&["--version"], 0),
    ];
    for (args, want) in quiet {
        piped(args, *want, "not running");
    }
    let mut start: Vec<String> = vec!["--name".into(), "x".into(), "--".into()];
    start.extend(daemon_cmd(&mk).map(String::from));
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    piped(&start, 0, "start");
    let running: &[(&[&str], i32)] = &[
        (&["--status", "x"], 0),
        (&["--status", "x", "--json"], 0),
        (&["--check", "x", "--verbose"], 0),
        (&start, 75),
        (&["--stop", "x"], 0),
    ];
    for (args, want) in running {
        piped(args, *want, "running");
    }
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
}

/// A NUL byte cannot travel through argv, but it can through the library.
#[test]
fn embedded_nul_is_a_clear_error_in_the_library() {
    let err = rdaemon::Daemon::builder("a\0b").build().unwrap_err();
    assert_eq!(err.kind(), rdaemon::ErrorKind::Usage);
    assert!(err.to_string().contains("\\0"), "{err}");

    let env = Env::new();
    let nul_dir = PathBuf::from(OsString::from_vec(
        [env.tmp.path().as_os_str().as_bytes(), b"/run\0x"].concat(),
    ));
    let mut d = rdaemon::Daemon::builder("ok")
        .pid_dir(&nul_dir)
        .handle_signals(false)
        .build()
        .unwrap();
    let err = d.start().unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(d.slot().is_none());
    assert!(!env.path("run").exists());

    let r = rdaemon::inspect::check(&nul_dir, "ok", 1, None);
    assert!(
        matches!(&r, Ok(c) if c.health == rdaemon::inspect::Health::Unknown) || r.is_err(),
        "{r:?}"
    );
    assert!(rdaemon::inspect::status(&nul_dir, "ok", false).is_err());
    assert!(rdaemon::inspect::stop(&nul_dir, "ok", None, Some(Duration::from_secs(1))).is_err());
    assert!(rdaemon::inspect::status(&env.pid_dir, "a\0b", false).is_err());
}

// ---------------------------------------------------------------------------
// Privileges
// ---------------------------------------------------------------------------

#[test]
fn nobody_cannot_stop_signal_or_take_over_roots_daemon() {
    const T: &str = "nobody_vs_root";
    if !is_root() {
        return skip(T, "needs root (setpriv)");
    }
    let env = Env::new();
    let mk = marker("privs");
    let _sweep = Sweep::new(&[&mk]);
    open_temp_dir_to_all(&env);
    let cmd = daemon_cmd(&mk);
    env.start("root-d", &[], &cmd);
    assert_eq!(fs::metadata(&env.pid_dir).unwrap().mode() & 0o7777, 0o755);
    let file = env.pid_file("root-d", 1);
    let sup = env.read_pid("root-d", 1).unwrap();
    let child = command_pids(&mk);
    assert_eq!(child.len(), 1);
    let before = snapshot(&file);

    let out = nobody_run(&env, ["--stop", "root-d", "--timeout", "1"]);
    expect(&out, 1, "--stop as nobody");
    expect_names(&out, &file, "--stop as nobody");
    assert!(
        alive(sup) && alive(child[0]),
        "nobody's --stop hurt root's daemon"
    );

    // Nobody cannot take the slot, nor another one in root's directory.
    let mut start: Vec<String> = vec!["--name".into(), "root-d".into(), "--".into()];
    start.extend(daemon_cmd(&mk).map(String::from));
    let out = nobody_run(&env, &start);
    expect(&out, 1, "start of root's held slot as nobody");
    expect_names(&out, &file, "start as nobody");
    start[1] = "nobody-d".into();
    let out = nobody_run(&env, &start);
    expect(&out, 1, "start in root's directory as nobody");
    expect_names(&out, &env.pid_file("nobody-d", 1), "start as nobody");
    assert!(!env.pid_file("nobody-d", 1).exists());

    // Root's slot files are private (see the next test): nobody cannot
    // tell, and says so rather than guessing.
    expect(
        &nobody_run(&env, ["--check", "root-d"]),
        4,
        "--check as nobody",
    );
    assert_eq!(
        snapshot(&file).map(|s| s.content),
        before.map(|s| s.content)
    );
    assert_eq!(command_pids(&mk), child);
    assert_eq!(env.check("root-d"), 0);

    // A private (0700) directory of root's: nobody cannot tell.
    fs::set_permissions(&env.pid_dir, fs::Permissions::from_mode(0o700)).unwrap();
    expect(&nobody_run(&env, ["--check", "root-d"]), 4, "--check, 0700");
    expect(
        &nobody_run(&env, ["--status", "root-d"]),
        4,
        "--status, 0700",
    );
    let out = nobody_run(&env, ["--stop", "root-d"]);
    expect(&out, 1, "--stop, 0700");
    assert!(!stderr_of(&out).is_empty());
    assert!(alive(sup) && alive(child[0]));
    fs::set_permissions(&env.pid_dir, fs::Permissions::from_mode(0o755)).unwrap();
    expect(&bounded(&env, ["--stop", "root-d"]), 0, "root's --stop");
}

/// flock(2) needs only an open descriptor. If another user could open
/// root's stale slot file, they could lock it and make `--check` report
/// NAME running (a cron watchdog would never restart it) and every start
/// fail as busy.
#[test]
fn nobody_cannot_lock_roots_slot_file_to_fake_a_running_daemon() {
    const T: &str = "nobody_fake_lock";
    if !is_root() {
        return skip(T, "needs root (setpriv)");
    }
    if !have("flock") {
        return skip(T, "no flock(1)");
    }
    let env = Env::new();
    let mk = marker("fake-lock");
    let _sweep = Sweep::new(&[&mk]);
    open_temp_dir_to_all(&env);
    let cmd = daemon_cmd(&mk);
    env.start("fl", &[], &cmd);
    let file = env.pid_file("fl", 1);
    // A crash of everything (the OOM killer, kill -9) leaves a stale file.
    let sup = env.read_pid("fl", 1).unwrap();
    // Found first: a dying supervisor's COMMAND gets SIGTERM, and its
    // group (the shell's sleep holds the lock too) outlives it.
    let commands = command_pids(&mk);
    sigkill(sup);
    for c in commands {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(c),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_until("all dead, the slot stale", || {
        !alive(sup) && command_pids(&mk).is_empty() && env.check("fl") == 1
    });

    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
        "flock",
        "-x",
        "-n",
    ])
    .arg(&file)
    .arg("true");
    let out = output_within(c);
    assert!(
        !out.status.success(),
        "nobody could lock root's slot file {}",
        file.display()
    );
    assert_eq!(env.check("fl"), 1, "still stale, not running");
    env.start("fl", &[], &cmd);
    expect(&bounded(&env, ["--stop", "fl"]), 0, "--stop");
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// Runs `script` (with `$B` the binary, `$D` a fresh mount point, `$OUT` a
/// directory for logs, `$MK` the marker) in a private mount namespace.
/// `None` when that is impossible here.
fn in_mount_ns(env: &Env, test: &str, mk: &str, script: &str) -> Option<(String, PathBuf)> {
    if !is_root() {
        skip(test, "needs root (unshare -m, mount)");
        return None;
    }
    let d = env.path("mnt");
    let out_dir = env.path("out");
    fs::create_dir_all(&d).unwrap();
    fs::create_dir_all(&out_dir).unwrap();
    let full = format!("set -u\nB=$1; D=$2; OUT=$3; MK=$4\n{script}");
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &full, "sh"])
        .arg(bin())
        .arg(&d)
        .arg(&out_dir)
        .arg(mk)
        .env_remove("RDAEMON_PID_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    let out = output_within(c);
    if out.status.code() == Some(99) || (!out.status.success() && out.stdout.is_empty()) {
        skip(test, &format!("unshare/mount failed: {}", stderr_of(&out)));
        return None;
    }
    Some((stdout_of(&out), out_dir))
}

#[track_caller]
fn report_has(report: &str, line: &str) {
    assert!(
        report.lines().any(|l| l == line),
        "expected {line:?} in:\n{report}"
    );
}

#[test]
fn disk_full_while_writing_the_pid_file() {
    const T: &str = "disk_full";
    let env = Env::new();
    let mk = marker("full");
    let _sweep = Sweep::new(&[&mk]);
    let script = r#"
        CMD='sleep 1000; :'
        mount -t tmpfs -o size=4k,mode=0755 tmpfs "$D" || exit 99
        # 1. No room for the PID line: the one page is taken.
        head -c 8192 /dev/zero > "$D/fill" 2>/dev/null
        "$B" --name full --pid-dir "$D" -- /bin/sh -c "$CMD" "$MK" 2> "$OUT/data.err"
        echo "data.start=$?"
        "$B" --check full --pid-dir "$D"; echo "data.check=$?"
        ls -A "$D" | tr '\n' ' '; echo
        rm "$D/fill"
        # 2. The PID line fits but the state file beside it does not.
        "$B" --name full --pid-dir "$D" -- /bin/sh -c "$CMD" "$MK" 2> "$OUT/state.err"
        echo "state.start=$?"
        "$B" --check full --pid-dir "$D"; echo "state.check=$?"
        echo "state.ls=$(ls -A "$D" | grep -c pid)"
        # 3. No inode left for the PID file.
        umount "$D"
        mount -t tmpfs -o nr_inodes=2,mode=0755 tmpfs "$D" || exit 98
        touch "$D/only"
        "$B" --name full --pid-dir "$D" -- /bin/sh -c "$CMD" "$MK" 2> "$OUT/inode.err"
        echo "inode.start=$?"
        # 4. Room again: a later start succeeds.
        rm "$D/only"
        mount -o remount,nr_inodes=100 "$D" || exit 98
        "$B" --name full --pid-dir "$D" -- /bin/sh -c "$CMD" "$MK"; echo "later.start=$?"
        "$B" --check full --pid-dir "$D"; echo "later.check=$?"
        "$B" --stop full --pid-dir "$D"; echo "later.stop=$?"
    "#;
    let Some((report, out)) = in_mount_ns(&env, T, &mk, script) else {
        return;
    };
    let pid_path = env.path("mnt/full.1.pid");
    report_has(&report, "data.start=1");
    report_has(&report, "data.check=3");
    report_has(&report, "fill ");
    let err = read(&out.join("data.err"));
    assert!(err.contains(&pid_path.display().to_string()), "{err}");
    assert!(err.contains("No space left"), "{err}");

    report_has(&report, "state.start=1");
    report_has(&report, "state.check=3");
    report_has(&report, "state.ls=0");
    let err = read(&out.join("state.err"));
    assert!(err.contains("state"), "{err}");
    assert!(err.contains("No space left"), "{err}");

    report_has(&report, "inode.start=1");
    let err = read(&out.join("inode.err"));
    assert!(err.contains(&pid_path.display().to_string()), "{err}");

    report_has(&report, "later.start=0");
    report_has(&report, "later.check=0");
    report_has(&report, "later.stop=0");
    assert!(command_pids(&mk).is_empty());
}

#[test]
fn read_only_pid_dir() {
    const T: &str = "read_only";
    let env = Env::new();
    let mk = marker("ro");
    let _sweep = Sweep::new(&[&mk]);
    let script = r#"
        mount -t tmpfs -o mode=0755 tmpfs "$D" || exit 99
        mkdir "$D/stale" && echo 4242 > "$D/stale/ro.1.pid"
        mkdir "$D/empty"
        mount -o remount,ro "$D" || exit 99
        for c in empty stale; do
            "$B" --name ro --pid-dir "$D/$c" -- /bin/sh -c 'sleep 1000; :' "$MK" 2> "$OUT/$c.err"
            echo "$c.start=$?"
            "$B" --check ro --pid-dir "$D/$c"; echo "$c.check=$?"
            "$B" --stop ro --pid-dir "$D/$c" 2>/dev/null; echo "$c.stop=$?"
        done
        "$B" --name ro --pid-dir "$D/missing" -- true 2> "$OUT/missing.err"
        echo "missing.start=$?"
        cat "$D/stale/ro.1.pid"
    "#;
    let Some((report, out)) = in_mount_ns(&env, T, &mk, script) else {
        return;
    };
    for (c, check) in [("empty", 3), ("stale", 1)] {
        report_has(&report, &format!("{c}.start=1"));
        report_has(&report, &format!("{c}.check={check}"));
        let err = read(&out.join(format!("{c}.err")));
        let path = env.path(&format!("mnt/{c}/ro.1.pid"));
        assert!(err.contains(&path.display().to_string()), "{c}: {err}");
        assert!(err.contains("Read-only"), "{c}: {err}");
    }
    report_has(&report, "missing.start=1");
    report_has(&report, "4242");
    let err = read(&out.join("missing.err"));
    assert!(
        err.contains(&env.path("mnt/missing").display().to_string()),
        "{err}"
    );
    assert!(command_pids(&mk).is_empty());
}

/// `rdaemon --foreground ARGS` under strace(1) against `env`'s PID
/// directory, with `inject` (strace's `-e inject=SYSCALL:...` value) on
/// the system call it names, and nothing else traced or printed. With
/// `follow`, forked processes too (`-f`); without, only the supervisor,
/// not COMMAND.
fn under_strace(env: &Env, inject: &str, follow: bool, args: &[&str]) -> Command {
    let syscall = inject.split(':').next().unwrap_or(inject);
    let mut c = Command::new("strace");
    if follow {
        c.arg("-f");
    }
    c.args(["-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={inject}"))
        .arg(bin())
        .arg("--foreground")
        .args(args)
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .stdin(Stdio::null());
    c
}

/// Whether strace's stderr says it could not do its part: ptrace not
/// permitted (a container), or no injection (strace before 4.22).
fn strace_refused(stderr: &str) -> bool {
    stderr.contains("ptrace")
        || (stderr.contains("strace: ") && (stderr.contains("inject") || stderr.contains("delay")))
}

/// System call failures injected with strace(1), where it is installed.
#[test]
fn injected_system_call_failures_name_the_file_and_leave_nothing() {
    const T: &str = "strace_injection";
    if !have("strace") {
        return skip(T, "strace is not installed");
    }
    let env = Env::new();
    make_pid_dir(&env);
    let file = env.pid_file("inj", 1);
    for (syscall, errno, code) in [
        ("pwrite64", "EIO", libc::EIO),
        ("ftruncate", "ENOSPC", libc::ENOSPC),
        ("flock", "ENOLCK", libc::ENOLCK),
    ] {
        // The C library's own wording (glibc and musl differ), as rdaemon
        // prints it: "I/O error (os error 5)" or "Input/output error (...)".
        let message = std::io::Error::from_raw_os_error(code).to_string();
        let inject = format!("{syscall}:error={errno}");
        let out = output_within(under_strace(
            &env,
            &inject,
            true,
            &["--name", "inj", "--", "true"],
        ));
        if strace_refused(&stderr_of(&out)) {
            return skip(T, &format!("strace cannot: {}", stderr_of(&out)));
        }
        let what = format!("{syscall} failing with {errno}");
        expect(&out, 1, &what);
        expect_names(&out, &file, &what);
        assert!(
            stderr_of(&out).contains(&message),
            "{what}: {}",
            stderr_of(&out)
        );
        // Nothing held, nothing half-written: at most an empty stale file.
        let left = fs::read(&file).unwrap_or_default();
        assert!(left.is_empty(), "{what}: left {left:?}");
        assert_ne!(env.check("inj"), 0, "{what}");
        expect(
            &bounded(&env, ["--name", "inj", "--foreground", "--", "true"]),
            0,
            &format!("a later start after {what}"),
        );
    }
}

/// COMMAND exits while the supervisor is still installing its signal
/// handlers (after the spawn, so that they cost nothing on the start
/// path). strace(1) slows every `rt_sigaction` of the supervisor by 20 ms,
/// so that a `sh -c 'exit N'` is surely gone by then: its SIGCHLD must
/// still be seen (kept pending, not discarded by a disposition reset), and
/// the run must end with COMMAND's status instead of waiting forever.
#[test]
fn command_exiting_while_handlers_go_in_is_noticed() {
    const T: &str = "exit_while_arming";
    if !have("strace") {
        return skip(T, "strace is not installed");
    }
    let env = Env::new();
    make_pid_dir(&env);
    for (command, want) in [("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137)] {
        // Not followed: only the supervisor is slowed, not COMMAND.
        let out = output_within(under_strace(
            &env,
            "rt_sigaction:delay_exit=20000",
            false,
            &["--name", "arming", "--", "sh", "-c", command],
        ));
        if strace_refused(&stderr_of(&out)) {
            return skip(T, &format!("strace cannot: {}", stderr_of(&out)));
        }
        expect(&out, want, &format!("COMMAND `{command}` ending early"));
        assert_eq!(env.check("arming"), 3, "{command}: the slot is free");
    }
}

/// The supervisor's PID file is deleted (or replaced) while it runs: it
/// notices, stops COMMAND, exits without touching whatever now sits at the
/// path, and a fresh start succeeds.
#[test]
fn pid_file_deleted_while_running() {
    let env = Env::new();
    let mk = marker("deleted");
    let _sweep = Sweep::new(&[&mk]);
    let cmd = daemon_cmd(&mk);
    let log_file = env.path("del.log");
    let log_arg = log_file.display().to_string();
    env.start("del", &["--log", &log_arg], &cmd);
    let sup = env.read_pid("del", 1).unwrap();
    let child = command_pids(&mk);
    fs::remove_file(env.pid_file("del", 1)).unwrap();
    wait_until("supervisor and COMMAND exit", || {
        !alive(sup) && command_pids(&mk).is_empty()
    });
    let log = read(&log_file);
    assert!(
        log.contains(&env.pid_file("del", 1).display().to_string()),
        "the log does not say why: {log}"
    );
    assert!(child.iter().all(|&p| !alive(p)));
    assert_eq!(env.check("del"), 3);
    env.start("del", &[], &cmd);
    expect(&bounded(&env, ["--stop", "del"]), 0, "--stop");
}

/// The PID file is replaced after the slot was taken but before the
/// supervisor's inotify watch on it exists (the watch is set up after
/// COMMAND's spawn). strace(1) holds the supervisor in `inotify_init1`
/// for 2 s while the file is replaced; the supervisor must still notice,
/// stop COMMAND and fail, leaving the new file alone, instead of watching
/// the new file as if it were its own.
#[test]
fn pid_file_replaced_before_the_watch_starts() {
    const T: &str = "replaced_before_watch";
    if !have("strace") {
        return skip(T, "strace is not installed");
    }
    let env = Env::new();
    make_pid_dir(&env);
    let mk = marker("prewatch");
    let _sweep = Sweep::new(&[&mk]);
    let file = env.pid_file("prewatch", 1);
    let mut args = vec!["--name", "prewatch", "--"];
    args.extend(daemon_cmd(&mk));
    let mut c = under_strace(&env, "inotify_init1:delay_enter=2000000", false, &args);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut sup = c.spawn().unwrap();
    let started = poll_until(DEADLINE, || {
        if let Some(st) = sup.try_wait().unwrap() {
            return Some(Err(st));
        }
        (!command_pids(&mk).is_empty()).then_some(Ok(()))
    });
    match started {
        Some(Ok(())) => {}
        Some(Err(st)) => {
            let mut err = String::new();
            let _ = sup.stderr.take().unwrap().read_to_string(&mut err);
            if strace_refused(&err) {
                return skip(T, &format!("strace cannot hold the supervisor: {err}"));
            }
            panic!("rdaemon ended before COMMAND ran ({st}): {err}");
        }
        None => panic!("COMMAND did not start within {DEADLINE:?}"),
    }
    let tmp = env.pid_dir.join("prewatch.tmp");
    fs::write(&tmp, b"1\n").unwrap();
    fs::rename(&tmp, &file).unwrap();
    let Some(status) = poll_until(DEADLINE, || sup.try_wait().unwrap()) else {
        let _ = sup.kill();
        panic!("the supervisor did not notice its PID file was replaced");
    };
    let mut err = String::new();
    let _ = sup.stderr.take().unwrap().read_to_string(&mut err);
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("lock lost"), "{err}");
    wait_until("COMMAND stopped", || command_pids(&mk).is_empty());
    assert_eq!(fs::read(&file).unwrap(), b"1\n", "the new file was touched");
}

#[test]
fn pid_file_replaced_while_running() {
    let env = Env::new();
    let mk = marker("replaced");
    let _sweep = Sweep::new(&[&mk]);
    let mut bystander = Bystander::new();
    let cmd = daemon_cmd(&mk);
    let file = env.pid_file("rep", 1);
    for replacement in ["a file naming a bystander", "a symlink"] {
        env.start("rep", &[], &cmd);
        let sup = env.read_pid("rep", 1).unwrap();
        let tmp = env.pid_dir.join("rep.tmp");
        let precious = env.path("precious");
        if replacement == "a symlink" {
            fs::write(&precious, b"precious\n").unwrap();
            symlink(&precious, &tmp).unwrap();
        } else {
            fs::write(&tmp, format!("{}\n", bystander.pid())).unwrap();
        }
        fs::rename(&tmp, &file).unwrap();
        let before = snapshot(&file);
        wait_until("supervisor and COMMAND exit", || {
            !alive(sup) && command_pids(&mk).is_empty()
        });
        assert_eq!(snapshot(&file), before, "{replacement} was touched");
        bystander.assert_alive(replacement);
        if replacement == "a symlink" {
            assert_eq!(fs::read(&precious).unwrap(), b"precious\n");
            assert_eq!(env.check("rep"), 4);
            fs::remove_file(&file).unwrap();
        } else {
            assert_eq!(env.check("rep"), 1, "the replacement is stale");
            expect(&bounded(&env, ["--stop", "rep"]), 0, "--stop");
            bystander.assert_alive("--stop");
        }
    }
    env.start("rep", &[], &cmd);
    expect(&bounded(&env, ["--stop", "rep"]), 0, "--stop");
}

/// Every slot file is either held with one valid PID line, or stale; never
/// more COMMANDs than slots; nothing shown that is not proven.
/// Returns how many slots were held and how many of those were orphaned.
fn assert_slots_consistent(
    env: &Env,
    name: &str,
    mk: &str,
    peers: usize,
    ctx: &str,
) -> (usize, usize) {
    let commands = command_pids(mk);
    let mut orphaned = 0;
    let (_, slots) = status_json(env, &[], name);
    let mut held = 0;
    for s in &slots {
        let slot = s["slot"].as_u64().unwrap() as u32;
        let state = s["state"].as_str().unwrap();
        let content = fs::read(env.pid_file(name, slot)).unwrap_or_default();
        match state {
            "stale" => {}
            "running" | "orphaned" => {
                held += 1;
                assert!(
                    is_pid_line(&content),
                    "{ctx}: held slot {slot} holds {content:?}"
                );
                if let Some(pid) = s["pid"].as_i64() {
                    assert_eq!(content, format!("{pid}\n").into_bytes(), "{ctx}");
                    assert!(alive(pid as i32), "{ctx}: dead PID {pid} shown");
                }
                if let Some(child) = s["child_pid"].as_i64() {
                    // COMMAND, or (in an orphaned slot whose COMMAND took
                    // its SIGTERM) a child of it still holding the file.
                    assert!(
                        commands.contains(&(child as i32))
                            || (state == "orphaned"
                                && has_open(child as i32, &env.pid_file(name, slot))),
                        "{ctx}: {s}"
                    );
                }
                if state == "orphaned" {
                    orphaned += 1;
                    assert!(
                        s["pid"].is_null() && !s["child_pid"].is_null(),
                        "{ctx}: {s}"
                    );
                }
            }
            other => panic!("{ctx}: slot {slot} is {other}: {s}"),
        }
    }
    assert!(held <= peers, "{ctx}: {held} held slots: {slots:?}");
    assert!(
        commands.len() <= held,
        "{ctx}: {} COMMANDs but {held} held slots: {slots:?}",
        commands.len()
    );
    (held, orphaned)
}

/// kill -9 of the caller, of the supervisor, or of both, at random points
/// of concurrent starts: never more than N COMMANDs, never a half-written
/// held PID file, the caller never hangs, and a later start succeeds.
#[test]
fn kill_9_at_random_points_of_a_start() {
    use std::os::unix::process::ExitStatusExt;
    const PEERS: usize = 2;
    const ROUNDS: usize = 48;
    let env = Env::new();
    let mk = marker("kill9");
    let _sweep = Sweep::new(&[&mk]);
    let mut rng = Rng::from_env_or_clock();
    let name = "k9";
    // What the rounds reached, to show the loop hits the interesting states:
    // callers killed mid-start, rdaemon processes killed, held and orphaned
    // slots after the dust settled.
    let mut stats = [0usize; 4];
    let start_args = || {
        let mut a: Vec<String> = vec![
            "--name".into(),
            name.into(),
            "--max-peers".into(),
            PEERS.to_string(),
            "--stop-timeout".into(),
            "2".into(),
            "--".into(),
        ];
        a.extend(daemon_cmd(&mk).map(String::from));
        a
    };
    // Kill within about twice the time a start takes here, so that the
    // kills land all over it (fork, setsid, lock, write, exec, report).
    let t0 = Instant::now();
    expect(&env.run(start_args()), 0, "calibration start");
    let span = (t0.elapsed() * 2).max(Duration::from_millis(2));
    expect(&bounded(&env, ["--stop", name]), 0, "calibration --stop");
    eprintln!("note: kill loop: kills within {span:?} of a start");
    let span_us = span.as_micros() as u64;
    for round in 0..ROUNDS {
        let n = 1 + rng.below(3) as usize;
        let mut callers: Vec<Child> = (0..n)
            .map(|_| {
                env.cmd()
                    .args(start_args())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_micros(rng.below(span_us)));
        let how = rng.below(3);
        let ctx = format!("round {round}: {n} starts, kill mode {how}");
        let mut kill_rdaemons = || {
            let pids = rdaemon_pids(&mk);
            stats[1] += pids.len();
            pids.into_iter().for_each(sigkill);
        };
        match how {
            // The callers only: the supervisors carry on.
            0 => callers.iter_mut().for_each(|c| {
                let _ = c.kill();
            }),
            // Every rdaemon process of this test: callers, intermediates,
            // supervisors (also those of earlier rounds).
            1 => kill_rdaemons(),
            // The callers, then the rest a little later.
            _ => {
                callers.iter_mut().for_each(|c| {
                    let _ = c.kill();
                });
                std::thread::sleep(Duration::from_micros(rng.below(span_us)));
                kill_rdaemons();
            }
        }
        for mut c in callers {
            // A caller that was not killed must not hang either, and tells
            // the truth: started, busy, or failed (its supervisor was
            // killed before reporting).
            let st = poll_until(DEADLINE, || c.try_wait().unwrap())
                .unwrap_or_else(|| panic!("{ctx}: a caller hangs"));
            match (st.code(), st.signal()) {
                (Some(0 | 1 | 75), _) => {}
                (_, Some(9)) => stats[0] += 1,
                other => panic!("{ctx}: a caller ended with {other:?}"),
            }
        }
        // Let surviving supervisors finish starting (or give up). A
        // COMMAND between its clone and its exec still shows rdaemon's
        // command line, so the kill above can hit one just as it execs,
        // after its supervisor said "running": such a supervisor is about
        // to see it die and exit, so wait for that too.
        wait_until(&format!("{ctx}: supervisors settle"), || {
            let sups = rdaemon_pids(&mk);
            if sups.is_empty() {
                return true;
            }
            let (_, slots) = status_json(&env, &[], name);
            let commands = command_pids(&mk);
            sups.iter().all(|&p| {
                slots.iter().any(|s| {
                    s["state"] == "running"
                        && s["pid"] == p
                        && s["child_pid"]
                            .as_i64()
                            .is_some_and(|c| commands.contains(&(c as i32)))
                })
            })
        });
        let (held, orphaned) = assert_slots_consistent(&env, name, &mk, PEERS, &ctx);
        stats[2] += held;
        stats[3] += orphaned;
        // Half the time, stop everything (and sometimes start a peer that
        // stays): the next round then starts into free, stale or busy slots.
        if rng.below(2) == 0 {
            expect(&bounded(&env, ["--stop", name, "--timeout", "5"]), 0, &ctx);
            wait_until(&format!("{ctx}: all stopped"), || {
                command_pids(&mk).is_empty() && rdaemon_pids(&mk).is_empty()
            });
            assert_ne!(env.check(name), 0, "{ctx}");
            if rng.below(2) == 0 {
                expect(&env.run(start_args()), 0, &format!("{ctx}: a later start"));
            }
        }
    }
    eprintln!(
        "note: kill loop over {ROUNDS} rounds: {} callers killed mid-start, {} rdaemon processes killed, {} held slots seen, {} of them orphaned",
        stats[0], stats[1], stats[2], stats[3]
    );
    expect(
        &bounded(&env, ["--stop", name, "--timeout", "5"]),
        0,
        "final --stop",
    );
    wait_until("all stopped", || {
        command_pids(&mk).is_empty() && rdaemon_pids(&mk).is_empty()
    });
    expect(&env.run(start_args()), 0, "a later start");
    expect(&bounded(&env, ["--stop", name]), 0, "--stop");
}

/// The supervisor is killed with SIGKILL: COMMAND keeps the slot, so no
/// second copy can start, until `--stop` ends it.
#[test]
fn killed_supervisor_leaves_an_orphan_that_still_counts() {
    let env = Env::new();
    let mk = marker("orphan");
    let _sweep = Sweep::new(&[&mk]);
    let cmd = orphan_cmd(&mk);
    env.start("or", &[], &cmd);
    let sup = env.read_pid("or", 1).unwrap();
    let child = command_pids(&mk);
    sigkill(sup);
    wait_until("supervisor dead", || !alive(sup));
    let (c, slots) = status_json(&env, &[], "or");
    // Held, so never N+1; but not running: unhealthy (150).
    assert_eq!(c, 150);
    assert_eq!(slots[0]["state"], "orphaned", "{slots:?}");
    assert_eq!(slots[0]["child_pid"], child[0]);
    assert_eq!(env.check("or"), 150);
    let mut again: Vec<String> = vec!["--name".into(), "or".into(), "--".into()];
    again.extend(orphan_cmd(&mk).map(String::from));
    let out = env.run(&again);
    expect(&out, 75, "start next to an orphan");
    assert!(
        stderr_of(&out).contains(&child[0].to_string()),
        "the busy message should name the orphaned holder: {}",
        stderr_of(&out)
    );
    assert_eq!(command_pids(&mk), child, "never N+1");
    expect(
        &bounded(&env, ["--stop", "or", "--timeout", "1"]),
        0,
        "--stop",
    );
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
    env.start("or", &[], &daemon_cmd(&mk));
    expect(&bounded(&env, ["--stop", "or"]), 0, "--stop");
}

// ---------------------------------------------------------------------------
// PID namespaces
// ---------------------------------------------------------------------------

/// A PID namespace (with its own /proc) whose init is a shell that records
/// every catchable signal it receives in `signals`. Killing init on drop
/// ends everything inside.
struct PidNs {
    unshare: Child,
    init: i32,
    signals: PathBuf,
}

impl PidNs {
    fn new(env: &Env, mk: &str, test: &str) -> Option<PidNs> {
        if !is_root() {
            skip(test, "needs root (unshare --pid)");
            return None;
        }
        if !have("nsenter") {
            skip(test, "no nsenter(1)");
            return None;
        }
        let signals = env.path("ns-init-signals");
        fs::write(&signals, b"").unwrap();
        let script = "for s in TERM INT HUP QUIT USR1 USR2; do trap \"echo $s >> '$1'\" $s; done; \
                      while :; do sleep 0.1; done";
        let mut unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
                script,
            ])
            .arg(mk)
            .arg(&signals)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let upid = unshare.id();
        // Either unshare fails (skip the test) or the namespace's init shows
        // up as its child.
        let init = poll_until(DEADLINE, || {
            if let Some(st) = unshare.try_wait().unwrap() {
                return Some(Err(st));
            }
            let children = read(Path::new(&format!("/proc/{upid}/task/{upid}/children")));
            children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .filter(|&pid| argv_of(pid).iter().any(|a| a == mk.as_bytes()))
                .map(Ok)
        });
        let init = match init.expect("the namespace's init never started") {
            Ok(pid) => pid,
            Err(st) => {
                let mut err = String::new();
                let _ = unshare.stderr.take().unwrap().read_to_string(&mut err);
                skip(test, &format!("unshare failed ({st}): {err}"));
                return None;
            }
        };
        Some(PidNs {
            unshare,
            init,
            signals,
        })
    }

    /// The binary, run inside the namespace against `env`'s PID directory.
    fn run<I, S>(&self, env: &Env, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-p", "-m"])
            .arg(bin())
            .args(args)
            .env("RDAEMON_PID_DIR", &env.pid_dir)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        output_within(c)
    }

    fn status_json(&self, env: &Env, name: &str) -> Vec<Value> {
        let out = self.run(env, ["--status", name, "--json"]);
        code(&out);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().clone()
    }

    fn assert_init_untouched(&self, after: &str) {
        let got = read(&self.signals);
        assert!(
            got.is_empty(),
            "the namespace's init (PID 1) got {got:?} from {after}"
        );
        assert!(alive(self.init), "the namespace's init died after {after}");
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        sigkill(self.init);
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Inside a PID namespace: start, kill -9 of the supervisor, `orphaned`,
/// `--stop`; and files naming PID 1, 0 or -1 of the namespace, where PID 1
/// is a real init that would notice a signal.
#[test]
fn pid_namespace_orphans_and_forged_pids() {
    const T: &str = "pid_namespace_orphans";
    let env = Env::new();
    let mk = marker("pidns");
    let _sweep = Sweep::new(&[&mk]);
    let Some(ns) = PidNs::new(&env, &mk, T) else {
        return;
    };
    let mut start: Vec<String> = vec!["--name".into(), "ns".into(), "--".into()];
    start.extend(orphan_cmd(&mk).map(String::from));
    let file = env.pid_file("ns", 1);

    for forged in ["1\n", "0\n", "-1\n"] {
        expect(&ns.run(&env, &start), 0, "start in the namespace");
        let slots = ns.status_json(&env, "ns");
        assert_eq!(slots[0]["state"], "running", "{slots:?}");
        let ns_pid = slots[0]["pid"].as_i64().expect("verified PID");
        assert!(!slots[0]["child_pid"].is_null());
        assert_eq!(fs::read(&file).unwrap(), format!("{ns_pid}\n").into_bytes());
        expect(
            &ns.run(&env, ["--check", "ns"]),
            0,
            "--check in the namespace",
        );

        let sups = rdaemon_pids(&mk);
        assert_eq!(sups.len(), 1, "one supervisor");
        sigkill(sups[0]);
        wait_until("supervisor dead", || !alive(sups[0]));
        let commands = command_pids(&mk);
        assert_eq!(commands.len(), 1);
        let slots = ns.status_json(&env, "ns");
        assert_eq!(slots[0]["state"], "orphaned", "{slots:?}");
        assert!(slots[0]["child_pid"].is_i64(), "{slots:?}");
        expect(
            &ns.run(&env, ["--check", "ns"]),
            150,
            "--check of an orphan (held, not running)",
        );
        expect(&ns.run(&env, &start), 75, "start next to an orphan");
        assert_eq!(command_pids(&mk), commands, "never N+1");

        fs::write(&file, forged).unwrap();
        let out = ns.run(&env, ["--stop", "ns", "--timeout", "1"]);
        expect(&out, 0, &format!("--stop with the file naming {forged:?}"));
        wait_until("orphaned COMMAND gone", || command_pids(&mk).is_empty());
        ns.assert_init_untouched(&format!("--stop with {forged:?}"));
    }
}

/// A daemon started inside a PID namespace seen from the host (a shared PID
/// directory): the namespace's PIDs mean nothing there, yet the host finds
/// and stops the real lock holders.
#[test]
fn host_sees_and_stops_a_daemon_in_a_pid_namespace() {
    const T: &str = "host_vs_pid_namespace";
    let env = Env::new();
    let mk = marker("pidns-host");
    let _sweep = Sweep::new(&[&mk]);
    let Some(ns) = PidNs::new(&env, &mk, T) else {
        return;
    };
    let mut start: Vec<String> = vec!["--name".into(), "nh".into(), "--".into()];
    start.extend(daemon_cmd(&mk).map(String::from));
    expect(&ns.run(&env, &start), 0, "start in the namespace");
    let host_sup = rdaemon_pids(&mk);
    assert_eq!(host_sup.len(), 1);
    assert_eq!(env.check("nh"), 0, "the host sees the lock");
    let (c, slots) = status_json(&env, &[], "nh");
    assert_eq!(c, 0);
    // The file holds the namespace's PID: the host may show the real one or
    // none, never the number from the file taken at face value.
    let shown = &slots[0]["pid"];
    assert!(shown.is_null() || *shown == host_sup[0], "{slots:?}");
    expect(
        &bounded(&env, ["--stop", "nh", "--timeout", "5"]),
        0,
        "host --stop",
    );
    wait_until("COMMAND and supervisor gone", || {
        command_pids(&mk).is_empty() && rdaemon_pids(&mk).is_empty()
    });
    ns.assert_init_untouched("host --stop");
    expect(&ns.run(&env, &start), 0, "a later start in the namespace");
    expect(
        &ns.run(&env, ["--stop", "nh"]),
        0,
        "--stop in the namespace",
    );
    wait_until("COMMAND gone", || command_pids(&mk).is_empty());
}
