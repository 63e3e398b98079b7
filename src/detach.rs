//! Detaching from the caller, and telling the caller the truth.
//!
//! ```text
//!  caller ──clone──▶ intermediate ──setsid, fork──▶ supervisor ──clone, exec──▶ COMMAND
//!    │                 └─ exits at once                  │
//!    └──── reads the readiness pipe ◀────────────────────┘ one status byte + message
//! ```
//!
//! The double fork costs one copy of rdaemon's memory, not two: the
//! intermediate, which only calls `setsid()` and `fork()`, borrows the
//! caller's memory (`clone(CLONE_VM | CLONE_VFORK)`, as `vfork(2)` does,
//! but on a stack of its own), and so does COMMAND until its exec (see
//! `supervisor::child`). On the machines measured in BENCHMARKS.md a
//! `fork()` costs 250 µs and more, and a start's caller waits for each.
//!
//! The caller returns only after the supervisor has taken its slot and
//! COMMAND has been exec'd, so what it learns is the truth. The pipe
//! carries a [`StartOutcome`] (started, busy, exec failed with an errno,
//! exited with a status, failed), not an exit status: `commands.rs` alone
//! maps outcomes to exit statuses. If the supervisor dies before
//! reporting, the pipe reaches EOF and the caller says so.
//!
//! The supervisor is not a session leader (so it can never acquire a
//! controlling terminal), runs in `/`, reads /dev/null, writes to /dev/null
//! until its log is open, and closes every descriptor it inherited, so that
//! `out=$(rdaemon …)` returns at once and no stray pipe is held open.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::chdir;

use crate::supervisor::tree::ExitStatus;
use crate::supervisor::{Readiness, StartOutcome};

/// The supervisor's end of the readiness pipe.
pub struct ReadyPipe {
    file: Option<File>,
}

impl Readiness for ReadyPipe {
    fn report(&mut self, outcome: &StartOutcome) {
        if let Some(mut f) = self.file.take() {
            // The caller may have been killed; nothing to do about that.
            let _ = f.write_all(&encode(outcome));
        }
    }
}

/// One message on the pipe: a kind byte, a 4-byte little-endian number
/// (errno, or exit status with signals negative), then the text.
fn encode(outcome: &StartOutcome) -> Vec<u8> {
    let (kind, number): (u8, i32) = match outcome {
        StartOutcome::Started => (0, 0),
        StartOutcome::Busy(_) => (1, 0),
        StartOutcome::Usage(_) => (2, 0),
        StartOutcome::ExecFailed { errno, .. } => (3, *errno),
        StartOutcome::Exited { status, .. } => (
            4,
            match status {
                ExitStatus::Code(c) => *c,
                ExitStatus::Signal(s) => -s,
            },
        ),
        StartOutcome::Failed(_) => (5, 0),
    };
    let mut out = vec![kind];
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(outcome.message().as_bytes());
    out
}

/// The inverse of [`encode`]; `None` for a message too short to be one.
fn decode(buf: &[u8]) -> Option<StartOutcome> {
    let (&kind, rest) = buf.split_first()?;
    let number = i32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let message = String::from_utf8_lossy(&rest[4..]).into_owned();
    Some(match kind {
        0 => StartOutcome::Started,
        1 => StartOutcome::Busy(message),
        2 => StartOutcome::Usage(message),
        3 => StartOutcome::ExecFailed {
            errno: number,
            message,
        },
        4 => StartOutcome::Exited {
            status: if number < 0 {
                ExitStatus::Signal(-number)
            } else {
                ExitStatus::Code(number)
            },
            message,
        },
        _ => StartOutcome::Failed(message),
    })
}

/// Forks the supervisor off and returns, in the caller, what it reported.
/// In the supervisor, `body` runs with the readiness pipe and the process
/// exits with the status `body` returns; this function never returns
/// there.
///
/// Must be called while the process is single-threaded.
///
/// The intermediate process only calls `setsid()` and `fork()` and exits,
/// so it is made with `clone(CLONE_VM | CLONE_VFORK)` on a stack of its
/// own instead of a `fork()`: it borrows the caller's memory (the caller
/// is suspended until it exits), and the one real copy of rdaemon's
/// memory is the supervisor's. A `fork()` costs a few hundred
/// microseconds here, on the path that a start's caller waits on
/// (BENCHMARKS.md, "Start"). The supervisor, forked from the
/// intermediate, goes on on that stack (its own copy of it: 8 MiB,
/// reserved lazily, under a guard page), never returning into the
/// caller's frames. One difference from a plain `fork()`: the kernel
/// does not carry a restartable-sequences (rseq) registration over to a
/// `CLONE_VM` child, so glibc's `sched_getcpu()` in the supervisor may
/// answer from a stale cache; nothing in rdaemon asks it.
pub fn detach<F>(body: F) -> std::io::Result<StartOutcome>
where
    F: FnOnce(&mut ReadyPipe) -> i32,
{
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let stack = Stack::new()?;
    let mut hop = Hop {
        body: Some(body),
        read_end: read_end.as_raw_fd(),
        write_end: write_end.as_raw_fd(),
        failure: AtomicI32::new(0),
    };
    // Every signal is blocked across the clone, so that no handler of the
    // caller ever runs in the intermediate, on the caller's memory; the
    // supervisor starts with this mask and clears it first thing
    // (`supervisor::run`).
    // The same all-ones mask as COMMAND's spawn, libc's own signals
    // included.
    let mut old = 0u64;
    // SAFETY: sigmask_raw on local sets, restored right after. The intermediate
    // runs `hop_over::<F>` on `stack` with `hop`, both alive until clone
    // returns, which CLONE_VFORK delays until the intermediate has exited.
    // It makes only system calls and fork(); the supervisor it forks owns
    // copies of both.
    let (child, err) = unsafe {
        crate::supervisor::child::sigmask_raw(&u64::MAX, &mut old);
        let child = libc::clone(
            hop_over::<F>,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut hop as *mut Hop<F>).cast(),
        );
        let err = std::io::Error::last_os_error();
        crate::supervisor::child::sigmask_raw(&old, &mut 0);
        (child, err)
    };
    if child < 0 {
        return Err(err);
    }
    drop(stack);
    // The supervisor has its own copies of the closure's captures; the
    // caller's are dropped as usual.
    drop(hop.body.take());
    drop(write_end);
    let mut buf = Vec::new();
    let read = File::from(read_end).read_to_end(&mut buf);
    // The intermediate exited right after its fork: reaping it costs no
    // wait.
    let _ = waitpid(nix::unistd::Pid::from_raw(child), None);
    let failure = hop.failure.load(Ordering::Acquire);
    if failure != 0 {
        let (what, errno) = (failure >> 24, failure & 0xff_ffff);
        let err = std::io::Error::from_raw_os_error(errno);
        let what = if what == 1 { "setsid" } else { "second fork" };
        return Ok(StartOutcome::Failed(format!("{what} failed: {err}")));
    }
    read?;
    Ok(decode(&buf).unwrap_or_else(|| {
        StartOutcome::Failed(
            "the supervisor exited before reporting whether COMMAND started".into(),
        )
    }))
}

/// What the intermediate process gets: the supervisor's body, the pipe's
/// two ends, and where it reports its own failure (step in the high byte:
/// 1 setsid, 2 fork; errno below).
struct Hop<F> {
    body: Option<F>,
    read_end: i32,
    write_end: i32,
    failure: AtomicI32,
}

/// The intermediate process: a new session, the supervisor forked off,
/// and gone. Runs on its own stack in the caller's memory, so until the
/// fork it makes only system calls; the supervisor, after the fork, is a
/// process of its own and runs anything.
extern "C" fn hop_over<F>(arg: *mut libc::c_void) -> libc::c_int
where
    F: FnOnce(&mut ReadyPipe) -> i32,
{
    // SAFETY: `arg` is the `Hop` that `detach` keeps alive until this
    // process exits (CLONE_VFORK).
    let hop = unsafe { &mut *(arg as *mut Hop<F>) };
    let fail = |step: i32| -> libc::c_int {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        hop.failure
            .store((step << 24) | (errno & 0xff_ffff), Ordering::Release);
        // SAFETY: _exit ends only this process; the caller resumes.
        unsafe { libc::_exit(1) }
    };
    // SAFETY: close and setsid are system calls on this process's own
    // descriptor table and session.
    unsafe {
        // The supervisor must not hold the caller's end: the caller reads
        // until every write end is closed.
        libc::close(hop.read_end);
        if libc::setsid() < 0 {
            return fail(1);
        }
    }
    // SAFETY: libc's fork() in a process that shares the single-threaded
    // caller's memory while the caller is suspended: the child gets a
    // consistent copy (libc's fork takes and resets its own locks, and
    // records the child's thread ID in the child's copy).
    match unsafe { libc::fork() } {
        -1 => return fail(2),
        0 => {}
        // The session leader leaves; the supervisor is orphaned to init
        // (or the nearest subreaper) and can never get a terminal.
        // SAFETY: _exit(2) only ends this process.
        _ => unsafe { libc::_exit(0) },
    }
    // The supervisor, in its own memory from here on.
    // SAFETY: the descriptor is the pipe's write end, which this process
    // owns from now on (its copy of the caller's descriptor table).
    let write_end = unsafe { OwnedFd::from_raw_fd(hop.write_end) };
    let body = hop.body.take().expect("the body is taken once");
    let code = in_supervisor(write_end, body);
    std::process::exit(code)
}

/// A stack for [`hop_over`]: 8 MiB of address space (the usual main
/// thread limit, since the supervisor runs on it for good), reserved
/// without backing and faulted in as used, with a guard page below it.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    const LEN: usize = 8 << 20;

    fn new() -> std::io::Result<Stack> {
        // SAFETY: a fresh private anonymous mapping; nothing else uses it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack {
            base,
            len: Self::LEN,
        };
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + self.len) & !15) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps this process's copy of the mapping made in new();
        // the supervisor, a separate process, keeps its own.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn in_supervisor(write_end: OwnedFd, body: impl FnOnce(&mut ReadyPipe) -> i32) -> i32 {
    let mut ready = ReadyPipe {
        file: Some(File::from(write_end)),
    };
    if let Err(e) = prepare_process(&ready) {
        ready.report(&StartOutcome::Failed(e));
        return 1;
    }
    body(&mut ready)
}

/// cwd `/`, stdio on /dev/null, every inherited descriptor closed except
/// the readiness pipe.
fn prepare_process(ready: &ReadyPipe) -> Result<(), String> {
    chdir("/").map_err(|e| format!("cannot chdir to /: {e}"))?;
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; both are valid.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(format!(
                "cannot redirect descriptor {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(null);
    let keep = ready.file.as_ref().map(|f| f.as_raw_fd());
    close_inherited(keep);
    Ok(())
}

/// Closes every descriptor above 2 except `keep`.
fn close_inherited(keep: Option<i32>) {
    let ranges: Vec<(u32, u32)> = match keep {
        Some(k) if k > 2 => vec![(3, k as u32 - 1), (k as u32 + 1, u32::MAX)],
        _ => vec![(3, u32::MAX)],
    };
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        // SAFETY: close_range only closes descriptors; none in these ranges
        // is owned by live Rust objects (the only one we own is `keep`).
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        if r < 0 {
            // Kernels before 5.9: fall back to closing what /proc lists.
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                let fds: Vec<i32> = dir
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect();
                for fd in fds {
                    if fd as u32 >= lo && fd as u32 <= hi {
                        // SAFETY: as above.
                        unsafe { libc::close(fd) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_pipe() {
        let all = [
            StartOutcome::Started,
            StartOutcome::Busy("held by 12".into()),
            StartOutcome::Usage("bad".into()),
            StartOutcome::ExecFailed {
                errno: libc::ENOENT,
                message: "cannot execute x".into(),
            },
            StartOutcome::Exited {
                status: ExitStatus::Signal(9),
                message: "died".into(),
            },
            StartOutcome::Exited {
                status: ExitStatus::Code(4),
                message: "exit".into(),
            },
            StartOutcome::Failed("no".into()),
        ];
        for o in all {
            assert_eq!(decode(&encode(&o)), Some(o));
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x01\x02"), None);
    }
}
