//! The respawn policy: which ends of a run are planned recycles, how long
//! to wait before a restart, and when to give up.
//!
//! A *recycle* (a run of at least `--min-uptime`, a status in
//! `--recycle-codes`, a memory-limit stop, a restart request) restarts at
//! once, with at most a tenth of `--min-uptime` of jitter so that peers
//! which hit their limits together spread out, and is never counted. Only
//! a *failed run* backs off (the first delay, doubling up to a minute,
//! back to the first after a recycle) and counts toward `--max-respawns`
//! within `--respawn-window`; only failed runs can make the supervisor
//! give up. Queue workers that exit after N jobs, or with Laravel's
//! status 12, therefore run forever, while a crash loop still stops.
//!
//! Pure bookkeeping, kept apart from the event loop so it can be tested
//! without processes. Times are `Instant`s (the monotonic clock).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Longest pause between restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Respawn settings (`--max-respawns`, `--respawn-window`, `--respawn-delay`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RespawnLimits {
    pub max_respawns: u32,
    pub window: Duration,
    pub first_delay: Duration,
}

impl Default for RespawnLimits {
    fn default() -> Self {
        RespawnLimits {
            max_respawns: 5,
            window: Duration::from_secs(60),
            first_delay: Duration::from_secs(1),
        }
    }
}

/// How a run of COMMAND ended, for the respawn policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// A planned recycle: a run of at least `--min-uptime`, a status in
    /// `--recycle-codes`, a memory-limit stop, a restart request. Restarted
    /// at once, never counted.
    Recycle,
    /// A failed run (shorter than `--min-uptime`, or hung): back-off,
    /// counted toward `--max-respawns`.
    Failed,
}

/// What to do after COMMAND ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this pause.
    RestartAfter(Duration),
    /// `max_respawns` restarts after failed runs happened within the
    /// window: stop trying.
    GiveUp { restarts_in_window: u32 },
}

/// Restart history of one slot.
#[derive(Debug, Clone)]
pub struct RespawnState {
    limits: RespawnLimits,
    recent: VecDeque<Instant>,
    next_delay: Duration,
}

impl RespawnState {
    pub fn new(limits: RespawnLimits) -> RespawnState {
        RespawnState {
            limits,
            recent: VecDeque::new(),
            next_delay: limits.first_delay,
        }
    }

    /// The limits this state was made with.
    pub fn limits(&self) -> RespawnLimits {
        self.limits
    }

    /// A run ended at `now`: restart at once (a recycle, which also brings
    /// the back-off back to its first delay) or after a back-off (a failed
    /// run, counted), or give up.
    pub fn on_end(&mut self, end: RunEnd, now: Instant) -> Decision {
        match end {
            RunEnd::Recycle => {
                self.next_delay = self.limits.first_delay;
                Decision::RestartAfter(Duration::ZERO)
            }
            RunEnd::Failed => self.on_failed_run(now),
        }
    }

    fn on_failed_run(&mut self, now: Instant) -> Decision {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.limits.window)
        {
            self.recent.pop_front();
        }
        let in_window = self.recent.len() as u32;
        if in_window >= self.limits.max_respawns {
            return Decision::GiveUp {
                restarts_in_window: in_window,
            };
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(MAX_DELAY.max(self.limits.first_delay));
        self.recent.push_back(now);
        Decision::RestartAfter(delay)
    }
}

/// Classifies a run that ended on its own: a recycle when its status is in
/// `recycle_codes` or it ran at least `min_uptime`, otherwise failed.
pub fn classify(
    status: Option<i32>,
    ran: Duration,
    min_uptime: Duration,
    recycle_codes: &[i32],
) -> RunEnd {
    if status.is_some_and(|c| recycle_codes.contains(&c)) || ran >= min_uptime {
        RunEnd::Recycle
    } else {
        RunEnd::Failed
    }
}

/// A pause of at most a tenth of `min_uptime` before a recycle, so that
/// peers that hit their limits together do not restart in the same
/// instant. Not cryptographic: the clock's nanoseconds mixed with the PID.
pub fn recycle_jitter(min_uptime: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed =
        (u64::from(nanos) ^ u64::from(std::process::id()).wrapping_mul(2_654_435_761)) % 1000;
    (min_uptime / 10).mul_f64(mixed as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: u32) -> RespawnLimits {
        RespawnLimits {
            max_respawns: n,
            window: Duration::from_secs(60),
            first_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn crash_loop_gives_up_after_n_restarts() {
        let mut st = RespawnState::new(limits(5));
        let t0 = Instant::now();
        let mut delays = Vec::new();
        let mut t = t0;
        loop {
            match st.on_end(RunEnd::Failed, t) {
                Decision::RestartAfter(d) => {
                    delays.push(d.as_secs());
                    t += d;
                }
                Decision::GiveUp { restarts_in_window } => {
                    assert_eq!(restarts_in_window, 5);
                    break;
                }
            }
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn delay_caps_at_sixty_seconds_and_old_restarts_expire() {
        let mut st = RespawnState::new(RespawnLimits {
            max_respawns: 100,
            window: Duration::from_secs(1000),
            first_delay: Duration::from_secs(1),
        });
        let t = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            if let Decision::RestartAfter(d) = st.on_end(RunEnd::Failed, t) {
                last = d;
            }
        }
        assert_eq!(last, MAX_DELAY);
        let mut st = RespawnState::new(limits(2));
        assert!(matches!(
            st.on_end(RunEnd::Failed, t),
            Decision::RestartAfter(_)
        ));
        assert!(matches!(
            st.on_end(RunEnd::Failed, t),
            Decision::RestartAfter(_)
        ));
        assert!(matches!(
            st.on_end(RunEnd::Failed, t),
            Decision::GiveUp { .. }
        ));
        let later = t + Duration::from_secs(61);
        assert!(matches!(
            st.on_end(RunEnd::Failed, later),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn recycle_resets_delay_and_is_not_counted() {
        let mut st = RespawnState::new(RespawnLimits {
            max_respawns: 100,
            ..limits(0)
        });
        let t = Instant::now();
        for _ in 0..4 {
            st.on_end(RunEnd::Failed, t);
        }
        assert_eq!(
            st.on_end(RunEnd::Recycle, t),
            Decision::RestartAfter(Duration::ZERO)
        );
        assert_eq!(
            st.on_end(RunEnd::Failed, t),
            Decision::RestartAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn recycles_never_give_up() {
        let mut st = RespawnState::new(limits(1));
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                st.on_end(RunEnd::Recycle, t),
                Decision::RestartAfter(Duration::ZERO)
            );
        }
        assert!(matches!(
            st.on_end(RunEnd::Failed, t),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn classification() {
        let min = Duration::from_secs(10);
        let short = Duration::from_secs(1);
        assert_eq!(classify(Some(1), short, min, &[]), RunEnd::Failed);
        assert_eq!(classify(Some(12), short, min, &[12]), RunEnd::Recycle);
        assert_eq!(classify(None, short, min, &[12]), RunEnd::Failed);
        assert_eq!(classify(Some(0), min, min, &[]), RunEnd::Recycle);
        for _ in 0..50 {
            assert!(recycle_jitter(min) <= Duration::from_secs(1));
        }
        assert_eq!(recycle_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn zero_restarts_gives_up_at_once() {
        let mut st = RespawnState::new(limits(0));
        let t = Instant::now();
        assert_eq!(
            st.on_end(RunEnd::Failed, t),
            Decision::GiveUp {
                restarts_in_window: 0
            }
        );
    }
}
