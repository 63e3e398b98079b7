//! Fleet-wide slots on etcd: at most M peers of NAME across every host.
//!
//! INTERFACE ONLY (lead's skeleton): the supervisor is written against the
//! types below; the etcd work replaces the bodies with the real client
//! (etcd's v3 JSON gateway). Until then a claim fails, so `--etcd` cannot
//! be used by accident.

#![allow(dead_code)] // the interface stub, until the client lands

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// What a start was asked for: `--etcd`, `--cluster-max-peers`, `--lease-ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd v3 endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// M: how many peers of NAME may run across the fleet.
    pub max_peers: u32,
    /// The lease's time to live.
    pub lease_ttl: Duration,
}

/// Why a cluster slot could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// All M cluster slots are held; the text names the holders (host:pid).
    Busy(String),
    /// etcd could not be reached or answered nonsense; the text names the
    /// endpoint and the cause.
    Unavailable(String),
}

/// Whether the cluster slot can still be proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStanding {
    /// The lease was renewed in time.
    Held,
    /// Renewal failed for too long: COMMAND's whole tree must be dead by
    /// `kill_by` (before the lease can expire in etcd).
    Lost {
        /// The latest instant by which COMMAND must be gone.
        kill_by: Instant,
        /// Why, for the log.
        why: String,
    },
}

/// A held cluster slot, kept alive by a background thread.
#[derive(Debug)]
pub struct ClusterLease {
    wake: OwnedFd,
    token: i64,
}

impl ClusterLease {
    /// Claims one of `cfg.max_peers` cluster slots of `name` for the local
    /// slot `local_slot`; blocks for at most a few seconds.
    pub fn claim(
        cfg: &ClusterConfig,
        name: &str,
        local_slot: u32,
    ) -> Result<ClusterLease, ClaimError> {
        let _ = (name, local_slot);
        Err(ClaimError::Unavailable(format!(
            "{}: etcd support is not implemented yet",
            cfg.endpoints.join(",")
        )))
    }

    /// Readable when the standing may have changed; then call
    /// [`ClusterLease::standing`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Drains the wake-up descriptor and says where the lease stands.
    pub fn standing(&mut self) -> LeaseStanding {
        LeaseStanding::Held
    }

    /// The slot key's create revision: `RDAEMON_FENCING_TOKEN`.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// After a loss (with `--respawn`): tries once to claim a cluster slot
    /// again.
    pub fn reclaim(&mut self) -> Result<(), ClaimError> {
        Err(ClaimError::Unavailable("not implemented".into()))
    }

    /// Gives the cluster slot back (revokes the lease); best effort.
    pub fn release(self) {}
}
