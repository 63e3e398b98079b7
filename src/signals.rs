//! Signal delivery into an event loop, through signal-hook.
//!
//! Each watched signal has one action that sets its own flag and writes a
//! byte to a socket pair shared by all of them, so that `poll()` wakes up. After a wake-up the
//! loop calls [`SignalSet::take`] to learn which signals arrived. Nothing
//! else runs in signal context.

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

/// The signal `rdaemon --restart` sends a supervisor to ask for an in-place
/// restart of COMMAND: `SIGRTMAX - 2` (62 with glibc and musl alike, so a
/// CLI and a supervisor built against either agree). Whoever may send it
/// may also send SIGTERM: restart permission is stop permission.
#[allow(dead_code)] // used by --restart (in progress)
pub(crate) fn restart_signal() -> i32 {
    libc::SIGRTMAX() - 2
}
