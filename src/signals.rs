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
        waker: Arc<UnixStream>,
        ids: Vec<SigId>,
    }

    impl SignalSet {
        /// A set that catches nothing yet: only its wake-up socket, the
        /// part that can fail for want of descriptors. [`catch`] adds the
        /// signals.
        ///
        /// [`catch`]: SignalSet::catch
        pub fn new() -> io::Result<SignalSet> {
            let (wake, waker) = UnixStream::pair()?;
            wake.set_nonblocking(true)?;
            waker.set_nonblocking(true)?;
            Ok(SignalSet {
                flags: Vec::new(),
                wake,
                waker: Arc::new(waker),
                ids: Vec::new(),
            })
        }

        /// Starts catching `signals` too. Their default actions no longer
        /// apply.
        pub fn catch(&mut self, signals: &[i32]) -> io::Result<()> {
            let waker = &self.waker;
            let (flags, ids) = (&mut self.flags, &mut self.ids);
            for &sig in signals {
                let flag = Arc::new(AtomicBool::new(false));
                let (f, w) = (Arc::clone(&flag), Arc::clone(waker));
                // SAFETY: the action only stores to an atomic and calls send(2)
                // with MSG_DONTWAIT on a socket it keeps alive, both
                // async-signal-safe; it allocates nothing and takes no locks.
                let id = unsafe {
                    super::register_counted(sig, move || {
                        f.store(true, Ordering::SeqCst);
                        // A full socket already has a wake-up pending.
                        libc::send(w.as_raw_fd(), [0u8].as_ptr().cast(), 1, libc::MSG_DONTWAIT);
                    })
                }?;
                ids.push(id);
                flags.push((sig, flag));
            }
            Ok(())
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

/// How many signal-hook registrations rdaemon itself made (its actions and
/// its probes), so that a stop can tell whether *other* code registered
/// signal-hook actions since its start. Its lock is held around each
/// registration it counts.
static OURS: Mutex<u64> = Mutex::new(0);

/// `signal_hook::low_level::register`, counted in [`OURS`].
///
/// # Safety
///
/// As `signal_hook::low_level::register`: `action` must be
/// async-signal-safe.
pub(crate) unsafe fn register_counted<F>(sig: i32, action: F) -> io::Result<SigId>
where
    F: Fn() + Sync + Send + 'static,
{
    let mut ours = OURS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the caller's promise, passed on.
    let id = unsafe { signal_hook::low_level::register(sig, action) }?;
    *ours += 1;
    Ok(id)
}

/// Where signal-hook's registrations stand: the id a new registration
/// gets (signal-hook numbers them from one process-wide counter) and how
/// many of them were rdaemon's. `None` when the id cannot be read.
fn registrations_mark(sig: i32) -> Option<(u128, u64)> {
    let mut ours = OURS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the probe action does nothing.
    let probe = unsafe { signal_hook::low_level::register(sig, || {}) }.ok()?;
    signal_hook::low_level::unregister(probe);
    *ours += 1;
    // SigId's fields are private; its Debug form shows the action number
    // ("SigId { signal: 15, action: ActionId(7) }").
    let text = format!("{probe:?}");
    let at = text.find("ActionId(")? + "ActionId(".len();
    let number = text[at..].split(')').next()?.parse().ok()?;
    Some((number, *ours))
}

/// Whether code other than rdaemon registered a signal-hook action (for
/// any signal) between the two marks; true when unknown.
fn foreign_registrations(since: Option<(u128, u64)>, now: Option<(u128, u64)>) -> bool {
    match (since, now) {
        (Some((id0, ours0)), Some((id1, ours1))) => {
            id1.saturating_sub(id0) > u128::from(ours1.saturating_sub(ours0))
        }
        _ => true,
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
/// Each signal gets one signal-hook action: record the signal as the first
/// stop reason (a compare-and-swap) and, in the process that owns the stop
/// token's cell, make its descriptor readable. A signal that is ignored
/// (SIG_IGN) when the run starts, such as SIGHUP under `nohup`, gets none
/// and stays ignored. [`StopSignals::uninstall`] removes them and gives
/// each signal back the disposition it had before the first install
/// (normally the default action), so that a later SIGTERM ends the process
/// as usual; see there for when it does not.
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
    /// Where signal-hook's registrations stood when the install finished.
    mark: Option<(u128, u64)>,
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
            mark: None,
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
        installed.mark = installed
            .signals
            .first()
            .and_then(|&sig| registrations_mark(sig));
        Ok(installed)
    }

    fn add(&mut self, sig: i32, shared: &Arc<Shared>) -> io::Result<()> {
        let mut table = DISPOSITIONS.lock().unwrap_or_else(|e| e.into_inner());
        let before = current_action(sig)?;
        if before.sa_sigaction == libc::SIG_IGN {
            // Ignored by whoever started us (SIGHUP under nohup): it stays
            // ignored, and is no stop signal for this run.
            return Ok(());
        }
        let cell = shared.signal_cell();
        // SAFETY: the action is async-signal-safe: a compare-and-swap on an
        // atomic and, in the cell's owner only, getpid(2) and send(2) on a
        // socket the action keeps alive; no allocation, no lock.
        let id = unsafe { register_counted(sig, move || cell.record(sig)) }?;
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

    /// Removes this run's own actions and, for every signal no other run
    /// still handles, restores the disposition from before rdaemon's
    /// handler, unless that would take away someone else's handling:
    ///
    /// - signal-hook was there before us (the program registered its own
    ///   actions before `start()`): its handler stays;
    /// - the kernel's handler is no longer signal-hook's (the program
    ///   called sigaction(2) itself since): it is left alone;
    /// - code other than rdaemon registered a signal-hook action (tokio's
    ///   signal streams, `signal_hook::flag`, ...) for any signal since the
    ///   install: signal-hook cannot say for which, so its handler stays
    ///   and those actions keep working; a signal with no action left is
    ///   then caught and ignored rather than given its default action (a
    ///   warning says so).
    pub(crate) fn uninstall(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        let mut table = DISPOSITIONS.lock().unwrap_or_else(|e| e.into_inner());
        let foreign = match self.signals.first() {
            Some(&sig) => foreign_registrations(self.mark, registrations_mark(sig)),
            None => false,
        };
        for sig in self.signals.drain(..) {
            let Some(d) = table.iter_mut().find(|d| d.sig == sig) else {
                continue;
            };
            d.runs = d.runs.saturating_sub(1);
            if d.runs != 0 || d.before.sa_sigaction == d.hook.sa_sigaction {
                continue;
            }
            let ours_in_kernel =
                current_action(sig).is_ok_and(|now| now.sa_sigaction == d.hook.sa_sigaction);
            if !ours_in_kernel {
                continue;
            }
            if foreign {
                log::warn!(
                    "{} keeps signal-hook's handler: other code registered signal actions \
                     while the daemon ran; without one of its own it is now ignored",
                    crate::signal_name(sig)
                );
                continue;
            }
            if let Err(e) = set_action(sig, &d.before) {
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
    fn a_foreign_signal_hook_registration_is_seen() {
        let sig = libc::SIGRTMIN() + 3;
        // The Debug form of SigId still shows the action number.
        let before = registrations_mark(sig);
        assert!(before.is_some());
        // SAFETY: the action does nothing.
        let id = unsafe { signal_hook::low_level::register(sig, || {}) }.unwrap();
        signal_hook::low_level::unregister(id);
        assert!(foreign_registrations(before, registrations_mark(sig)));
        assert!(foreign_registrations(None, before));
        let (id0, ours0) = before.unwrap();
        assert!(!foreign_registrations(before, Some((id0 + 2, ours0 + 2))));
    }

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
