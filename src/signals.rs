//! Signal delivery into an event loop, through signal-hook.
//!
//! Each watched signal sets its own flag, and every one of them also writes
//! a byte to one socket pair, so that `poll()` wakes up. After a wake-up the
//! loop calls [`SignalSet::take`] to learn which signals arrived. Nothing
//! else runs in signal context.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
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
        let mut flags = Vec::new();
        let mut ids = Vec::new();
        for &sig in signals {
            let flag = Arc::new(AtomicBool::new(false));
            ids.push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                waker.try_clone()?,
            )?);
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
