//! Signal delivery, through signal-hook: into the supervisor's event loop
//! ([`SignalSet`]) and into a library `Daemon`'s stop token
//! ([`StopSignals`]).
//!
//! ## The supervisor's signals
//!
//! Each watched signal has one action that sets its own flag and writes a
//! byte to a socket pair shared by all of them, so that `poll()` wakes up. After a wake-up the
//! loop calls [`SignalSet::take`] to learn which signals arrived. Nothing
//! else runs in signal context.
//!
//! ## A library daemon's stop signals
//!
//! [`StopSignals`] records the first stop signal in the stop token's cell
//! and makes its descriptor readable, and gives the signals their earlier
//! disposition back when the daemon stops.

use std::io;
use std::sync::{Arc, Mutex};

use signal_hook::SigId;

use crate::daemon::token::Shared;
use crate::error::{Error, Result};

#[cfg(feature = "cli")]
pub use event_loop::SignalSet;

#[cfg(feature = "cli")]
mod event_loop {
    use std::io::{self, Read};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use signal_hook::SigId;

    /// A set of signals turned into readable events.
    #[derive(Debug)]
    pub struct SignalSet {
        flags: Vec<(i32, Arc<AtomicBool>)>,
        wake: UnixStream,
        ids: Vec<SigId>,
    }

    impl SignalSet {
        /// Starts catching `signals`. Their default actions no longer apply.
        pub fn install(signals: &[i32]) -> io::Result<SignalSet> {
            let (wake, waker) = UnixStream::pair()?;
            wake.set_nonblocking(true)?;
            waker.set_nonblocking(true)?;
            let waker = Arc::new(waker);
            let mut flags = Vec::new();
            let mut ids = Vec::new();
            for &sig in signals {
                let flag = Arc::new(AtomicBool::new(false));
                let (f, w) = (Arc::clone(&flag), Arc::clone(&waker));
                // SAFETY: the action only stores to an atomic and calls send(2)
                // with MSG_DONTWAIT on a socket it keeps alive, both
                // async-signal-safe; it allocates nothing and takes no locks.
                let id = unsafe {
                    signal_hook::low_level::register(sig, move || {
                        f.store(true, Ordering::SeqCst);
                        // A full socket already has a wake-up pending.
                        libc::send(w.as_raw_fd(), [0u8].as_ptr().cast(), 1, libc::MSG_DONTWAIT);
                    })
                }?;
                ids.push(id);
                flags.push((sig, flag));
            }
            Ok(SignalSet { flags, wake, ids })
        }

        /// The descriptor that becomes readable when a signal arrived.
        pub fn fd(&self) -> BorrowedFd<'_> {
            self.wake.as_fd()
        }

        /// The signals that arrived since the last call, in registration order.
        pub fn take(&self) -> Vec<i32> {
            let mut buf = [0u8; 64];
            while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
            self.flags
                .iter()
                .filter(|(_, f)| f.swap(false, Ordering::SeqCst))
                .map(|(s, _)| *s)
                .collect()
        }
    }

    impl Drop for SignalSet {
        fn drop(&mut self) {
            for id in self.ids.drain(..) {
                signal_hook::low_level::unregister(id);
            }
        }
    }
}

/// The signal `rdaemon --restart` sends a supervisor to ask for an in-place
/// restart of COMMAND: `SIGRTMAX - 2` (62 with glibc and musl alike, so a
/// CLI and a supervisor built against either agree). Whoever may send it
/// may also send SIGTERM: restart permission is stop permission.
#[allow(dead_code)]
pub(crate) fn restart_signal() -> i32 {
    libc::SIGRTMAX() - 2
}

/// Whether `sig` may be a library stop signal: a standard or real-time
/// signal that can be caught and that signal-hook agrees to handle (not
/// SIGKILL, SIGSTOP, a fault such as SIGSEGV, or the C library's own
/// signals between 31 and SIGRTMIN).
pub(crate) fn catchable(sig: i32) -> bool {
    let standard = (1..32).contains(&sig);
    let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig);
    (standard || realtime) && !signal_hook::consts::FORBIDDEN.contains(&sig)
}

/// The library's stop signals, installed for one run of a `Daemon`.
///
/// Each signal gets two signal-hook actions, run in this order: record the
/// signal as the first stop reason (a compare-and-swap), then
/// signal-hook's pipe action makes the stop token's descriptor readable.
/// [`StopSignals::uninstall`] removes them and gives each signal back the
/// disposition it had before the first install (normally the default
/// action), so that a later SIGTERM ends the process as usual.
///
/// signal-hook never takes its process-wide handler out of the kernel, and
/// never puts it back either once it believes it installed it; so this
/// module remembers the handler signal-hook installed and reinstates it
/// when a later run registers the same signal again. A count of runs per
/// signal keeps one `Daemon` from disarming another's.
#[derive(Debug)]
pub(crate) struct StopSignals {
    signals: Vec<i32>,
    ids: Vec<SigId>,
}

/// Per signal: what was there before rdaemon, what signal-hook installed,
/// and how many runs have it installed now.
struct Disposition {
    sig: i32,
    before: libc::sigaction,
    hook: libc::sigaction,
    runs: u32,
}

static DISPOSITIONS: Mutex<Vec<Disposition>> = Mutex::new(Vec::new());

fn current_action(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: sigaction(2) with a null new action only fills `old`, a valid
    // out-pointer to a zero-initialised (valid) sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

fn set_action(sig: i32, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: `action` is a complete sigaction read back from the kernel
    // earlier (the prior disposition or signal-hook's handler, which stays
    // in the process for its whole life).
    if unsafe { libc::sigaction(sig, action, std::ptr::null_mut()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl StopSignals {
    /// Installs the actions for `signals` into `shared`. On error nothing
    /// stays installed.
    pub(crate) fn install(signals: &[i32], shared: &Arc<Shared>) -> Result<StopSignals> {
        let mut installed = StopSignals {
            signals: Vec::new(),
            ids: Vec::new(),
        };
        for &sig in signals {
            if let Err(e) = installed.add(sig, shared) {
                installed.uninstall();
                return Err(Error::Sys {
                    op: "install the stop signal handlers",
                    source: e,
                });
            }
        }
        Ok(installed)
    }

    fn add(&mut self, sig: i32, shared: &Arc<Shared>) -> io::Result<()> {
        let mut table = DISPOSITIONS.lock().unwrap_or_else(|e| e.into_inner());
        let before = current_action(sig)?;
        let cell = shared.signal_cell();
        // SAFETY: the action is async-signal-safe: a compare-and-swap on an
        // atomic and, in the cell's owner only, getpid(2) and send(2) on a
        // socket the action keeps alive; no allocation, no lock.
        let id = unsafe { signal_hook::low_level::register(sig, move || cell.record(sig)) }?;
        self.ids.push(id);
        let now = current_action(sig)?;
        match table.iter_mut().find(|d| d.sig == sig) {
            Some(d) => {
                if d.runs == 0 {
                    d.before = before;
                }
                if now.sa_sigaction != d.hook.sa_sigaction {
                    // A previous run put `before` back: reinstate the hook.
                    set_action(sig, &d.hook)?;
                }
                d.runs += 1;
            }
            None => table.push(Disposition {
                sig,
                before,
                hook: now,
                runs: 1,
            }),
        }
        self.signals.push(sig);
        Ok(())
    }

    /// Removes the actions and, for every signal no other run still
    /// handles, restores the disposition from before rdaemon's handler.
    pub(crate) fn uninstall(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        let mut table = DISPOSITIONS.lock().unwrap_or_else(|e| e.into_inner());
        for sig in self.signals.drain(..) {
            let Some(d) = table.iter_mut().find(|d| d.sig == sig) else {
                continue;
            };
            d.runs = d.runs.saturating_sub(1);
            // When signal-hook was there before us (the program has its own
            // actions), its handler stays: those actions keep working.
            if d.runs == 0
                && d.before.sa_sigaction != d.hook.sa_sigaction
                && let Err(e) = set_action(sig, &d.before)
            {
                log::warn!(
                    "cannot restore the action of {}: {e}",
                    crate::signal_name(sig)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_catchable_signals_may_stop_a_daemon() {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGRTMIN(),
        ] {
            assert!(catchable(sig), "{sig}");
        }
        let glibc_internal = libc::SIGRTMIN() - 1;
        for sig in [
            0,
            -1,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            glibc_internal,
            65,
            999,
        ] {
            assert!(!catchable(sig), "{sig}");
        }
    }
}
