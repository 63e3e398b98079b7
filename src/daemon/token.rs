//! Why a loop stops, and the token that lets other threads and event loops
//! see (and ask for) a stop.
//!
//! All stops of one run of a [`Daemon`](crate::Daemon) meet in one shared
//! cell: an atomic that records the *first* reason (a stop signal, a
//! request, or what a heartbeat found), and a socket pair whose read end
//! becomes readable at that moment and stays readable. Signal handlers only
//! store to the atomic and write to the socket, both async-signal-safe.
//!
//! The socket's readiness belongs to one process, the cell's owner (the
//! one that made it): a process forked from it shares the socket pair but
//! never writes to it (a signal, a request or a heartbeat there only sets
//! that process's own copy of the atomic) and never reads from it, so a
//! child can neither wake its parent's poll loop nor steal its wake-up.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};

/// Why [`Daemon::heartbeat`](crate::Daemon::heartbeat) returned false.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// A stop signal arrived (see
    /// [`Builder::stop_signals`](crate::Builder::stop_signals)); the first
    /// one, when several did.
    Signal(i32),
    /// The PID file was deleted or replaced, or its lock is no longer
    /// provably ours: this process can no longer prove it holds the slot.
    LockLost,
    /// The process's resident memory passed
    /// [`Builder::memory_limit`](crate::Builder::memory_limit).
    MemoryLimit {
        /// The resident set size found, in bytes.
        rss: u64,
        /// The configured ceiling, in bytes.
        limit: u64,
    },
    /// [`Builder::max_jobs`](crate::Builder::max_jobs) true heartbeats were
    /// given.
    JobLimit,
    /// [`Builder::max_runtime`](crate::Builder::max_runtime) passed since
    /// `start()`.
    TimeLimit,
    /// [`StopToken::request`] was called (or the program called
    /// [`Daemon::stop`](crate::Daemon::stop) while the loop still ran).
    Requested,
    /// The cluster lease (etcd) could not be renewed.
    LeaseLost,
    /// `start()` was not called (or failed), so there is no slot to work
    /// for.
    NotRunning,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Signal(sig) => write!(f, "received {}", crate::signal_name(*sig)),
            StopReason::LockLost => {
                f.write_str("the PID file was deleted or replaced; the slot is lost")
            }
            StopReason::MemoryLimit { rss, limit } => write!(
                f,
                "resident memory {} exceeds the limit of {}",
                crate::size::format_size(*rss),
                crate::size::format_size(*limit)
            ),
            StopReason::JobLimit => f.write_str("the job limit was reached"),
            StopReason::TimeLimit => f.write_str("the run-time limit was reached"),
            StopReason::Requested => f.write_str("a stop was requested"),
            StopReason::LeaseLost => f.write_str("the cluster lease was lost"),
            StopReason::NotRunning => f.write_str("not started"),
        }
    }
}

/// The code in the shared atomic: 0 for "no stop", a signal number, or one
/// of these (above every signal number).
const CODE_LOCK_LOST: u32 = 0x1_0000;
const CODE_MEMORY: u32 = 0x1_0001;
const CODE_JOBS: u32 = 0x1_0002;
const CODE_TIME: u32 = 0x1_0003;
const CODE_REQUESTED: u32 = 0x1_0004;
const CODE_LEASE: u32 = 0x1_0005;
const CODE_NOT_RUNNING: u32 = 0x1_0006;

/// The reason a code stands for; `MemoryLimit`'s numbers are kept by the
/// daemon that found them, so here they are zero.
pub(crate) fn reason_of(code: u32) -> Option<StopReason> {
    Some(match code {
        0 => return None,
        CODE_LOCK_LOST => StopReason::LockLost,
        CODE_MEMORY => StopReason::MemoryLimit { rss: 0, limit: 0 },
        CODE_JOBS => StopReason::JobLimit,
        CODE_TIME => StopReason::TimeLimit,
        CODE_REQUESTED => StopReason::Requested,
        CODE_LEASE => StopReason::LeaseLost,
        CODE_NOT_RUNNING => StopReason::NotRunning,
        sig => StopReason::Signal(sig as i32),
    })
}

fn code_of(reason: &StopReason) -> u32 {
    match reason {
        StopReason::Signal(sig) => *sig as u32,
        StopReason::LockLost => CODE_LOCK_LOST,
        StopReason::MemoryLimit { .. } => CODE_MEMORY,
        StopReason::JobLimit => CODE_JOBS,
        StopReason::TimeLimit => CODE_TIME,
        StopReason::Requested => CODE_REQUESTED,
        StopReason::LeaseLost => CODE_LEASE,
        StopReason::NotRunning => CODE_NOT_RUNNING,
    }
}

/// The cell every stop of one run meets in.
#[derive(Debug)]
pub(crate) struct Shared {
    /// 0 until the first stop; then that stop's code, never changed again.
    code: AtomicU32,
    /// Readable once a stop is due; never drained except for wake-ups that
    /// turn out to be spurious (see [`StopToken::wait_timeout`]).
    read: UnixStream,
    write: UnixStream,
    /// The process that made the cell: the only one that touches the
    /// socket pair.
    owner: u32,
}

impl Shared {
    pub(crate) fn new() -> Result<Arc<Shared>> {
        let (read, write) =
            UnixStream::pair().map_err(|e| Error::sys("create the stop socket pair", e))?;
        for end in [&read, &write] {
            end.set_nonblocking(true)
                .map_err(|e| Error::sys("make the stop socket non-blocking", e))?;
        }
        Ok(Arc::new(Shared {
            code: AtomicU32::new(0),
            read,
            write,
            owner: std::process::id(),
        }))
    }

    /// Whether this process made the cell (is not a child forked from the
    /// process that did). Async-signal-safe: getpid(2).
    #[inline]
    pub(crate) fn owned_here(&self) -> bool {
        // SAFETY: getpid(2) has no preconditions and cannot fail.
        (unsafe { libc::getpid() }) as u32 == self.owner
    }

    /// The first stop's code, 0 while none is due. One relaxed load: the
    /// heartbeat's hot path.
    #[inline]
    pub(crate) fn code(&self) -> u32 {
        self.code.load(Ordering::Relaxed)
    }

    /// Records `reason` unless another stop came first; wakes the
    /// descriptor either way. Returns the code that stands (ours or the
    /// earlier one).
    pub(crate) fn stop(&self, reason: &StopReason) -> u32 {
        let code =
            match self
                .code
                .compare_exchange(0, code_of(reason), Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => code_of(reason),
                Err(first) => first,
            };
        self.wake();
        code
    }

    /// Makes the read end readable, in the owner only (a forked child must
    /// not wake its parent). A full socket is readable already.
    /// Async-signal-safe: getpid(2) and send(2).
    pub(crate) fn wake(&self) {
        if self.owned_here() {
            // SAFETY: send(2) on a socket this cell keeps open, from a valid
            // one-byte buffer; MSG_DONTWAIT never blocks.
            unsafe {
                libc::send(
                    self.write.as_raw_fd(),
                    [1u8].as_ptr().cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
    }

    /// The atomic a signal action stores the first signal into.
    pub(crate) fn signal_cell(self: &Arc<Self>) -> SignalCell {
        SignalCell(Arc::clone(self))
    }
}

/// What a signal action holds: enough to record the first signal and wake
/// the owner's descriptor.
pub(crate) struct SignalCell(Arc<Shared>);

impl SignalCell {
    /// Records `sig` unless a stop came first, and makes the descriptor
    /// readable when this process owns it. Async-signal-safe: a
    /// compare-and-swap, getpid(2) and send(2); no allocation, no lock.
    pub(crate) fn record(&self, sig: i32) {
        let _ = self
            .0
            .code
            .compare_exchange(0, sig as u32, Ordering::SeqCst, Ordering::SeqCst);
        self.0.wake();
    }
}

/// A handle on a [`Daemon`](crate::Daemon)'s stop, for other threads and
/// event loops: cheap to clone, `Send + Sync + 'static`.
///
/// A multi-threaded worker does not need `Arc<Mutex<Daemon>>`: the thread
/// that owns the `Daemon` calls [`heartbeat`](crate::Daemon::heartbeat)
/// (which also verifies the slot, the memory ceiling and the limits), and
/// every other thread polls [`is_stopped`](Self::is_stopped), sleeps in
/// [`wait_timeout`](Self::wait_timeout), or waits for the descriptor
/// ([`AsFd`]) to become readable in `poll`, epoll or tokio's `AsyncFd`.
///
/// A token belongs to one run: the one going on when it was taken, or the
/// next `start()` if none is. Once stopped it stays stopped; a later
/// `start()` of the same `Daemon` (after `stop()`) begins a new run that
/// older tokens do not see.
///
/// ```
/// # fn main() -> Result<(), rdaemon::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// let mut daemon = rdaemon::Daemon::builder("threads")
///     # .pid_dir(dir.path().join("run")).handle_signals(false)
///     .build()?;
/// daemon.start()?;
/// let workers: Vec<_> = (0..4)
///     .map(|_| {
///         let stop = daemon.stop_token();
///         std::thread::spawn(move || {
///             let mut jobs = 0u64;
///             while !stop.is_stopped() {
///                 jobs += 1; // one job
///                 # stop.wait_timeout(Duration::from_millis(1));
///             }
///             jobs
///         })
///     })
///     .collect();
/// // This thread keeps the slot: heartbeat() until a stop is due.
/// # daemon.stop_token().request();
/// while daemon.heartbeat() {
///     std::thread::sleep(Duration::from_millis(100));
/// }
/// for w in workers {
///     w.join().unwrap();
/// }
/// daemon.stop()?;
/// # Ok(())
/// # }
/// ```
///
/// A worker that blocks in a read waits for the token's descriptor too,
/// and wakes on whichever comes first:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::os::fd::AsFd;
/// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
/// let mut daemon = rdaemon::Daemon::builder("reader")
///     # .pid_dir(dir.path().join("run")).handle_signals(false)
///     .build()?;
/// daemon.start()?;
/// let stop = daemon.stop_token();
/// let (jobs, _producer) = std::os::unix::net::UnixStream::pair()?;
/// # stop.request();
/// loop {
///     let mut fds = [
///         PollFd::new(jobs.as_fd(), PollFlags::POLLIN),
///         PollFd::new(stop.as_fd(), PollFlags::POLLIN),
///     ];
///     poll(&mut fds, PollTimeout::NONE)?;
///     if stop.is_stopped() {
///         break; // SIGTERM, a request, a lost slot...
///     }
///     // read and handle a job from `jobs`
/// }
/// daemon.stop()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StopToken {
    shared: Arc<Shared>,
}

impl StopToken {
    pub(crate) fn new(shared: Arc<Shared>) -> StopToken {
        StopToken { shared }
    }

    /// Whether a stop is due: a stop signal arrived, a stop was
    /// requested, or a heartbeat found a reason to stop (lost lock, memory,
    /// limits). Never blocks; one atomic load.
    pub fn is_stopped(&self) -> bool {
        self.shared.code() != 0
    }

    /// Asks the loop to stop: the next `heartbeat()` returns false with
    /// [`StopReason::Requested`] (unless another reason came first), every
    /// token reports stopped, and the descriptor becomes readable. Never
    /// blocks; calling it again changes nothing.
    pub fn request(&self) {
        self.shared.stop(&StopReason::Requested);
    }

    /// Records a stop found outside the loop (the etcd keep-alive thread:
    /// [`StopReason::LeaseLost`]) unless another came first, and wakes
    /// every waiter. The next `heartbeat()` returns false with it.
    #[allow(dead_code)] // for the fleet-wide lease's on_lost callback
    pub(crate) fn stop_for(&self, reason: &StopReason) {
        self.shared.stop(reason);
    }

    /// Blocks the calling thread until a stop is due or `timeout` passed;
    /// returns whether a stop is due (as [`is_stopped`](Self::is_stopped)
    /// would). `Duration::ZERO` does not block. Wakes within the poll(2)
    /// granularity (about a millisecond) of the stop.
    ///
    /// In a process forked from the one that made the token, it never
    /// touches the shared descriptor: it looks at the (process-local) stop
    /// every 10 ms instead.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.is_stopped() {
                return true;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            if !self.shared.owned_here() {
                std::thread::sleep(left.min(FOREIGN_TICK));
                continue;
            }
            // Whole milliseconds, rounded up so that we never spin.
            let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.shared.read.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                // Readable with no stop recorded cannot happen (only the
                // owner writes, after recording); never drain it (other
                // waiters rely on it), just do not spin.
                Ok(n) if n > 0 && !self.is_stopped() => {
                    std::thread::sleep(left.min(FOREIGN_TICK));
                }
                _ => {}
            }
        }
    }
}

/// How often `wait_timeout` looks at the stop where it may not poll the
/// descriptor (a forked child).
const FOREIGN_TICK: Duration = Duration::from_millis(10);

/// The descriptor becomes readable once a stop is due and stays readable
/// (it stays open for as long as the token lives);
/// wait for it in `poll`, epoll or tokio's `AsyncFd`, then check
/// [`StopToken::is_stopped`]. Do not read from it: other waiters rely on it
/// staying readable.
///
/// The descriptor belongs to the process that made the token's
/// `Daemon` (or whose `start()` began the run). In a process forked from
/// it, the descriptor is inert: that process's stops never make it
/// readable (and the parent's stop may), so a forked child uses
/// [`StopToken::is_stopped`] or [`StopToken::wait_timeout`], or calls
/// `start()` on its own `Daemon`, which gives it a fresh token cell.
impl AsFd for StopToken {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.read.as_fd()
    }
}

/// The same descriptor as [`AsFd`], for APIs that still take a raw one
/// (tokio's `AsyncFd::register`, mio). Guarantee: it stays open, and is
/// the same number, for as long as the token (or any clone) lives.
impl AsRawFd for StopToken {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.read.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_stands() {
        let shared = Shared::new().unwrap();
        assert_eq!(reason_of(shared.code()), None);
        shared.signal_cell().record(libc::SIGHUP);
        shared.signal_cell().record(libc::SIGTERM);
        shared.stop(&StopReason::LockLost);
        assert_eq!(
            reason_of(shared.code()),
            Some(StopReason::Signal(libc::SIGHUP))
        );
    }

    #[test]
    fn codes_roundtrip() {
        for r in [
            StopReason::Signal(libc::SIGTERM),
            StopReason::Signal(64),
            StopReason::LockLost,
            StopReason::JobLimit,
            StopReason::TimeLimit,
            StopReason::Requested,
            StopReason::LeaseLost,
            StopReason::NotRunning,
        ] {
            assert_eq!(reason_of(code_of(&r)), Some(r));
        }
    }

    #[test]
    fn request_wakes_a_waiter_and_the_descriptor() {
        let token = StopToken::new(Shared::new().unwrap());
        assert!(!token.wait_timeout(Duration::ZERO));
        let waiter = {
            let t = token.clone();
            std::thread::spawn(move || t.wait_timeout(Duration::from_secs(60)))
        };
        token.request();
        assert!(waiter.join().unwrap());
        let mut fds = [PollFd::new(token.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 1);
        // It stays readable for every later waiter.
        assert!(token.wait_timeout(Duration::ZERO));
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 1);
    }

    #[test]
    fn a_stop_found_elsewhere_reaches_the_loop_unless_one_came_first() {
        let token = StopToken::new(Shared::new().unwrap());
        token.stop_for(&StopReason::LeaseLost);
        token.request();
        assert_eq!(reason_of(token.shared.code()), Some(StopReason::LeaseLost));
        assert!(token.wait_timeout(Duration::ZERO));
    }

    #[test]
    fn a_spurious_byte_does_not_make_a_waiter_spin_or_stop() {
        let token = StopToken::new(Shared::new().unwrap());
        token.shared.wake();
        assert!(!token.wait_timeout(Duration::from_millis(20)));
    }

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn token_is_send_sync_static() {
        assert_send_sync_static::<StopToken>();
    }
}
