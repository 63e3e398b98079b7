//! What the process table says, and signals that cannot hit the wrong
//! process.
//!
//! A PID read from a file proves nothing: the process may have exited and
//! the number been reused. rdaemon signals a process only after (1) opening
//! a pidfd for the PID, which pins that exact process, and then (2) proving
//! through `/proc/PID/fd` that the pinned process holds the slot's locked
//! file open (or is the verified supervisor's child). If the PID was reused
//! before step 1, step 2 examines the new process and fails; if it is reused
//! after step 1, the pidfd still refers to the old, dead process and the
//! signal fails with ESRCH instead of reaching a stranger.
//!
//! `/proc/PID/stat`, `statm` and `fd` describe the thread-group leader,
//! not the process. A program whose main thread called `pthread_exit`
//! while its other threads run shows state `Z`, no memory and no
//! descriptors there, yet it is alive: a signal to its PID reaches its
//! threads, and its parent cannot reap it until the last thread is gone.
//! So no state letter alone says "dead": [`running`] asks `Threads:` of a
//! zombie leader, and [`live_dir`] names a running thread's directory to
//! read the memory and descriptors from.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::pid::{pid_max, valid_signal_target};
use crate::slot::FileId;

/// The fields of `/proc/PID/stat` rdaemon needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the
/// last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Reads `/proc/PID/stat`; `None` if the process is gone or unreadable.
pub fn stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether a state letter of `/proc/PID/stat` says the task has exited
/// (`Z`: a zombie; `X`, or `x` before Linux 3.13: being released).
pub fn exited_state(state: u8) -> bool {
    matches!(state, b'Z' | b'X' | b'x')
}

/// Whether a process whose leader shows `state` and whose `/proc/PID/status`
/// counts `threads` (the leader included) is still running.
///
/// `/proc/PID/stat` is the thread-group leader's, not the process's: a
/// program whose main thread called `pthread_exit` while its other threads
/// go on shows `Z`, yet it is alive, signals to its PID reach its threads,
/// and its memory and descriptors are theirs. The kernel keeps such a
/// leader (counted in `Threads:`) until its last thread is gone, and only
/// then makes it a zombie its parent can reap; so a `Z` leader is dead
/// only when it is the last thread left.
pub fn group_running(state: u8, threads: Option<u32>) -> bool {
    !exited_state(state) || (state == b'Z' && threads.is_some_and(|n| n > 1))
}

/// The `Threads:` count of a `/proc/PID/status` text.
pub fn parse_threads(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether the process `st` describes is still running (see
/// [`group_running`]). Reads `/proc/PID/status` only for a zombie leader.
pub fn running(st: &ProcStat) -> bool {
    if !exited_state(st.state) {
        return true;
    }
    let threads = (st.state == b'Z')
        .then(|| fs::read_to_string(format!("/proc/{}/status", st.pid)).ok())
        .flatten()
        .and_then(|s| parse_threads(&s));
    group_running(st.state, threads)
}

/// Whether process `pid` exists and runs ([`running`]: a zombie leader
/// whose threads run counts, a true zombie does not).
pub fn pid_running(pid: i32) -> bool {
    stat(pid).is_some_and(|st| running(&st))
}

/// The `/proc` directory to read a running process's memory and
/// descriptors from: `/proc/PID` itself, or, when its leader is a zombie,
/// `/proc/PID/task/TID` of a thread that still runs (the leader's own
/// `statm` reads as 0 and its `fd` is empty: it gave up its memory and
/// descriptor table on exit, which its threads share and keep). `None`
/// when the process is gone or has no running thread.
pub fn live_dir(st: &ProcStat) -> Option<String> {
    let pid = st.pid;
    if !exited_state(st.state) {
        return Some(format!("/proc/{pid}"));
    }
    // The tasks of a process are listed under its own directory, so a TID
    // found there belongs to that process (a reused TID is not listed).
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|e| {
        let tid: i32 = e.file_name().to_str()?.parse().ok()?;
        let dir = format!("/proc/{pid}/task/{tid}");
        let tst = parse_stat(&fs::read_to_string(format!("{dir}/stat")).ok()?)?;
        (tid != pid && !exited_state(tst.state)).then_some(dir)
    })
}

/// Whether process `pid` has an open descriptor on the file `id` that
/// carries an exclusive flock. `Err` when its descriptors cannot be
/// examined (another user's process, without privilege).
pub fn holds_lock_on(pid: i32, id: FileId) -> io::Result<bool> {
    let found = holds_lock_in(&format!("/proc/{pid}"), id)?;
    if found.is_some() {
        return Ok(found == Some(true));
    }
    // No descriptor at all: a zombie leader's own `fd` is empty, while
    // the threads that still run hold the table it shared with them.
    match stat(pid)
        .filter(|st| exited_state(st.state))
        .and_then(|st| live_dir(&st))
    {
        Some(dir) => Ok(holds_lock_in(&dir, id)? == Some(true)),
        None => Ok(false),
    }
}

/// [`holds_lock_on`] for one `/proc` directory (a process's or a
/// thread's): `None` when it lists no descriptor at all.
fn holds_lock_in(dir: &str, id: FileId) -> io::Result<Option<bool>> {
    let fd_dir = format!("{dir}/fd");
    let entries = match fs::read_dir(&fd_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut any = false;
    for entry in entries.flatten() {
        any = true;
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if meta.dev() != id.dev || meta.ino() != id.ino {
            continue;
        }
        let fdinfo = format!("{dir}/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Ok(info) = fs::read_to_string(fdinfo)
            && info
                .lines()
                .any(|l| l.starts_with("lock:") && l.contains("FLOCK") && l.contains("WRITE"))
        {
            return Ok(Some(true));
        }
    }
    Ok(any.then_some(false))
}

/// Waits until process `pid`'s exec has built the new program's image,
/// which `/proc/PID/cmdline` shows by no longer being empty.
///
/// Spawning returns as soon as exec is past its point of no return: that
/// is where the close-on-exec pipe that reports exec errors closes, and
/// where a vfork-style clone releases its parent. The kernel writes the
/// new argument list only after that, typically 10-20 µs later, but
/// milliseconds later for a long argument list or a preempted child.
/// Until then `ps` and `pgrep -f` cannot see COMMAND for what it is; an
/// operator running them right after `rdaemon` returned must.
///
/// Returns early when the process is a zombie or gone, or its command line
/// cannot be read (`hidepid`); after `limit` it stops waiting, since exec
/// can no longer fail, only be slow.
pub fn await_exec_image(pid: i32, limit: Duration) {
    use std::os::unix::fs::FileExt;
    const SPIN: Duration = Duration::from_millis(2);
    // One descriptor for every look: a read of it asks the process's
    // current image, so it sees the new one once exec has built it.
    let Ok(cmdline) = fs::File::open(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let waited = Instant::now();
    let deadline = waited + limit;
    for round in 1u32.. {
        let mut first = [0u8; 1];
        match cmdline.read_at(&mut first, 0) {
            Ok(1) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        // A zombie leader's command line is empty for good, even while its
        // threads run on (its own memory is gone): look now and then.
        if (round % 8 == 0 && stat(pid).is_none_or(|st| exited_state(st.state)))
            || Instant::now() >= deadline
        {
            return;
        }
        // The child usually finishes on the other CPU within microseconds
        // (tens when that CPU was idle); spinning there costs less than a
        // timer's wakeup, and yielding hands our CPU over if the child is
        // queued behind us. Past 2 ms it is a slow exec: sleep between
        // looks.
        if waited.elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Waits until process `pid` has settled after its exec: it sleeps or
/// waits interruptibly, or is stopped (any state but running or `D`), or
/// it has exited. Returns true when it exited (a zombie, or gone).
///
/// An uninterruptible sleep (`D`) is not a block: it is a page read from
/// disk or a lock inside the kernel, typically while the program is
/// still being loaded, and a COMMAND about to fail must not count as up
/// because its loader waited for the disk.
///
/// This is how a start tells "COMMAND dies at once" (a bad configuration,
/// a missing file) from "COMMAND runs": a program that is up blocks soon,
/// in `accept`, `poll`, `read` or `nanosleep`, typically within a
/// millisecond of its exec; one that fails at once exits without ever
/// blocking. A program that computes for longer than `limit` before it
/// first blocks counts as running.
pub fn await_settled(pid: i32, limit: Duration) -> bool {
    use std::os::unix::fs::FileExt;
    const SPIN: Duration = Duration::from_millis(2);
    let Ok(file) = fs::File::open(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let waited = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        // A read at offset 0 asks the kernel afresh.
        let n = match file.read_at(&mut buf, 0) {
            Ok(n) if n > 0 => n,
            _ => return true,
        };
        let Some(st) = parse_stat(&String::from_utf8_lossy(&buf[..n])) else {
            return true;
        };
        match st.state {
            // A zombie leader whose threads run on has not exited: its
            // main thread ended (`pthread_exit`) and left the work to them.
            b'Z' | b'X' | b'x' => return !running(&st),
            b'R' | b'D' => {}
            _ => return false,
        }
        let elapsed = waited.elapsed();
        if elapsed >= limit {
            return false;
        }
        if elapsed < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(250));
        }
    }
}

/// Every process that holds an exclusive flock on the file `id`, found by
/// walking all of `/proc`. Used only when the PID in a locked file is not a
/// holder (an orphaned COMMAND, or a foreign locker).
pub fn find_lock_holders(id: FileId) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .filter(|&pid| pid != me && matches!(holds_lock_on(pid, id), Ok(true)))
        .collect()
}

/// The live descendants of process `root`, parents before their children,
/// from one walk of `/proc`.
pub fn descendants_of(root: i32) -> Vec<i32> {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
    for pid in all_pids() {
        if let Some(st) = stat(pid) {
            children.entry(st.ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = children.remove(&root).unwrap_or_default();
    while let Some(pid) = queue.pop() {
        out.push(pid);
        if let Some(more) = children.remove(&pid) {
            queue.extend(more);
        }
    }
    out
}

/// Whether `pid`'s chain of parents reaches `ancestor` (`pid` itself
/// counts). Used as the proof of ownership before a signal.
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut cur = pid;
    for _ in 0..4096 {
        if cur == ancestor {
            return true;
        }
        match stat(cur) {
            Some(st) if st.ppid > 0 => cur = st.ppid,
            _ => return false,
        }
    }
    false
}

/// Every process visible in `/proc` that could be a signal target
/// (`2..=pid_max`), in directory order.
pub fn all_pids() -> impl Iterator<Item = i32> {
    let max = pid_max();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |entry| {
            let pid = entry.file_name().to_str()?.parse::<i64>().ok()?;
            valid_signal_target(pid, max)
        })
}

/// A pidfd: a handle on one exact process, immune to PID reuse.
#[derive(Debug)]
pub struct Pidfd {
    pid: i32,
    fd: OwnedFd,
}

impl Pidfd {
    /// Opens a pidfd for `pid`, which must be a valid signal target.
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        if valid_signal_target(i64::from(pid), pid_max()).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing PID {pid}"),
            ));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; no memory is shared with the kernel.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor and nothing else
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Pidfd { pid, fd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to exactly the process this pidfd was opened for.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, a null siginfo (the kernel
        // fills in the default), flags 0.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the process still exists (a zombie counts as gone for our
    /// purposes only through the lock, never through this).
    pub fn alive(&self) -> bool {
        self.signal(0).is_ok()
    }

    /// Whether the process has terminated: a pidfd becomes readable then,
    /// whether or not anyone has reaped it (unlike `kill(pid, 0)`, which a
    /// zombie still answers).
    pub fn exited(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Signals the process group this process leads. Refused unless the
    /// process is alive and is the leader of its group (pgid == pid): a
    /// group ID is only meaningful while its leader pins it.
    pub fn signal_group(&self, sig: i32) -> io::Result<()> {
        let st = stat(self.pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        if st.pgrp != self.pid || !self.alive() {
            return Err(io::Error::other(format!(
                "PID {} does not lead its process group",
                self.pid
            )));
        }
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::try_from(sig).map_err(io::Error::from)?,
        )
        .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Right after a spawn returns, the child's command line is usually
    /// still empty (measured: 1930 of 2000 posix_spawn calls); after
    /// `await_exec_image` it must always be COMMAND's.
    #[test]
    fn exec_image_is_in_place_after_waiting() {
        for round in 0..20 {
            let marker = format!("proc-exec-image-{round}");
            // `read` is a builtin: no grandchild outlives the kill below
            // and holds the test harness's output open.
            let mut child = std::process::Command::new("/bin/sh")
                .args(["-c", "read line", &marker])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            await_exec_image(pid, Duration::from_secs(30));
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                cmdline.split(|&b| b == 0).any(|a| a == marker.as_bytes()),
                "round {round}: command line {:?}",
                String::from_utf8_lossy(&cmdline)
            );
        }
    }

    /// A child that exits at once leaves a zombie with an empty command
    /// line: the wait must end there, not at its limit.
    #[test]
    fn exec_image_wait_ends_at_a_zombie() {
        let mut child = std::process::Command::new("/bin/true")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let started = Instant::now();
        while stat(pid).is_some_and(|st| st.state != b'Z') {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "true never exited"
            );
            std::thread::yield_now();
        }
        // Without the zombie check this would wait out its whole limit:
        // fail then, rather than hang.
        let limit = Duration::from_secs(30);
        let waiting = Instant::now();
        await_exec_image(pid, limit);
        let waited = waiting.elapsed();
        let _ = child.wait();
        assert!(
            waited < limit,
            "the wait for a zombie's image ran to its limit"
        );
    }

    #[test]
    fn settling_tells_a_quick_exit_from_a_sleeper() {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let mut quick = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        // Whether a quick exit is seen before a first block depends on the
        // machine's load (a loaded one may catch the shell asleep in its
        // exec), so wait until it is a zombie, unreaped: what counts here
        // is that an exited process is never taken for a settled one.
        let pid = nix::unistd::Pid::from_raw(quick.id() as i32);
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
        assert!(await_settled(quick.id() as i32, Duration::from_secs(30)));
        let _ = quick.wait();
        let mut sleeper = std::process::Command::new("/bin/sh")
            .args(["-c", "read line"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert!(!await_settled(sleeper.id() as i32, Duration::from_secs(30)));
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    #[test]
    fn parses_stat_with_hostile_comm() {
        let s = parse_stat("42 (a) b (c)) S 7 42 42 0 -1").unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 42,
                state: b'S',
                ppid: 7,
                pgrp: 42
            }
        );
        assert!(parse_stat("garbage").is_none());
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
    }

    /// A zombie leader is a dead process only when it is the last thread
    /// left: `pthread_exit` in `main` leaves a `Z` leader that runs on.
    #[test]
    fn a_zombie_leader_with_threads_is_running() {
        assert!(group_running(b'S', None));
        assert!(group_running(b'R', Some(1)));
        assert!(group_running(b'Z', Some(2)));
        assert!(!group_running(b'Z', Some(1)));
        assert!(!group_running(b'Z', None));
        assert!(!group_running(b'X', Some(3)));
        let status = "Name:\tzl\nState:\tZ (zombie)\nTgid:\t7\nThreads:\t2\nSigQ:\t0/1\n";
        assert_eq!(parse_threads(status), Some(2));
        assert_eq!(parse_threads("Name:\tzl\n"), None);
        let me = stat(std::process::id() as i32).unwrap();
        assert!(running(&me));
        assert_eq!(live_dir(&me), Some(format!("/proc/{}", me.pid)));
    }

    #[test]
    fn pidfd_refuses_bad_pids() {
        for p in [-1, 0, 1, i32::MAX] {
            assert!(Pidfd::open(p).is_err());
        }
    }
}
