//! The respawn policy: how many restarts, and how long to wait before each.
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

/// What to do after COMMAND ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this pause.
    RestartAfter(Duration),
    /// `max_respawns` restarts happened within the window: stop trying.
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

    /// COMMAND, started at `started`, ended at `now`: restart or give up?
    /// A run that lasted a whole window resets the delay to the first one.
    pub fn on_exit(&mut self, started: Instant, now: Instant) -> Decision {
        if now.duration_since(started) >= self.limits.window {
            self.next_delay = self.limits.first_delay;
        }
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
            match st.on_exit(t, t) {
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
            if let Decision::RestartAfter(d) = st.on_exit(t, t) {
                last = d;
            }
        }
        assert_eq!(last, MAX_DELAY);
        let mut st = RespawnState::new(limits(2));
        assert!(matches!(st.on_exit(t, t), Decision::RestartAfter(_)));
        assert!(matches!(st.on_exit(t, t), Decision::RestartAfter(_)));
        assert!(matches!(st.on_exit(t, t), Decision::GiveUp { .. }));
        let later = t + Duration::from_secs(61);
        assert!(matches!(
            st.on_exit(later, later),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn stable_run_resets_delay() {
        let mut st = RespawnState::new(RespawnLimits {
            max_respawns: 100,
            ..limits(0)
        });
        let t = Instant::now();
        for _ in 0..4 {
            st.on_exit(t, t);
        }
        let later = t + Duration::from_secs(120);
        assert_eq!(
            st.on_exit(t, later),
            Decision::RestartAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn zero_restarts_gives_up_at_once() {
        let mut st = RespawnState::new(limits(0));
        let t = Instant::now();
        assert_eq!(
            st.on_exit(t, t),
            Decision::GiveUp {
                restarts_in_window: 0
            }
        );
    }
}
