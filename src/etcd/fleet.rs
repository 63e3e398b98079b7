//! The fleet view: `--check NAME --etcd URLS` and `--status NAME --etcd
//! URLS` answer from etcd for every host at once.
//!
//! What it shows is what etcd knows: one line per cluster slot key
//! `/rdaemon/NAME/slot/I`, with the host, the supervisor's PID and the
//! local slot stored in the key's value when it was claimed, the fencing
//! token (the key's create revision), how long ago it was claimed, and the
//! lease's remaining TTL. A slot is `held` while its lease is being renewed
//! (more than half of its TTL left) and `lapsing` once a renewal was missed:
//! its supervisor is then cut off from etcd and stopping COMMAND (see the
//! lease arithmetic in the module above). Only `held` slots count as running
//! peers for `--check`.
//!
//! Each host's local state is *not* reflected: a supervisor holds its
//! cluster slot while COMMAND starts, backs off between restarts or waits for
//! READY=1, so a `held` slot means "a supervisor holds this slot", not "its
//! COMMAND is serving". For that, ask the host itself (`rdaemon --check
//! NAME` there). Nothing here signals anything: `--stop` is local to the
//! host it runs on.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::client::{Client, EtcdError};
use super::slot_prefix;
use crate::inspect::Health;

/// One cluster slot as etcd shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSlot {
    /// I in `/rdaemon/NAME/slot/I`.
    pub slot: u32,
    /// The holder's host name, as it stored it.
    pub host: Option<String>,
    /// The holder's supervisor (or library process) PID on its host.
    pub pid: Option<i64>,
    /// The holder's local slot on its host.
    pub local_slot: Option<u32>,
    /// When the slot was claimed, Unix seconds (the holder's wall clock).
    pub started_unix: Option<i64>,
    /// The key's create revision: the holder's `RDAEMON_FENCING_TOKEN`.
    pub fencing_token: i64,
    /// The etcd lease ID (0: none).
    pub lease_id: i64,
    /// Seconds left on the lease (-1: gone; `None`: unknown).
    pub lease_remaining_s: Option<i64>,
    /// The lease's granted TTL, seconds.
    pub lease_ttl_s: Option<i64>,
}

impl FleetSlot {
    /// `held` or `lapsing` (see the module docs).
    pub fn state(&self) -> &'static str {
        if self.is_held() { "held" } else { "lapsing" }
    }

    /// Whether the lease is being renewed: more than half its TTL left.
    /// Unknown TTLs count as held (the key exists).
    pub fn is_held(&self) -> bool {
        match (self.lease_remaining_s, self.lease_ttl_s) {
            (Some(left), Some(ttl)) if ttl > 0 => 2 * left > ttl,
            (Some(left), _) => left > 0,
            _ => true,
        }
    }

    /// `host:pid`, with `?` for what is unknown.
    pub fn holder(&self) -> String {
        format!(
            "{}:{}",
            self.host.as_deref().unwrap_or("?"),
            self.pid.map_or_else(|| "?".into(), |p| p.to_string())
        )
    }

    /// Seconds since the claim, by this host's clock (`None` if unknown or
    /// in the future).
    pub fn age_s(&self, now_unix: i64) -> Option<i64> {
        self.started_unix.map(|s| now_unix - s).filter(|a| *a >= 0)
    }
}

/// Every cluster slot of `name`, in slot order. Blocks for at most about
/// `timeout` per endpoint and request.
///
/// Errors: the text names each endpoint tried and its cause.
pub fn list(endpoints: &[String], name: &str, timeout: Duration) -> Result<Vec<FleetSlot>, String> {
    let client = Client::new(endpoints, timeout)?;
    let deadline = Instant::now() + timeout * 3;
    let mut slots = list_with(&client, name, deadline).map_err(|e| e.to_string())?;
    for s in slots.iter_mut().filter(|s| s.lease_id != 0) {
        // A lease that cannot be asked about leaves its TTLs unknown.
        if let Ok((left, ttl)) = client.time_to_live(s.lease_id, deadline) {
            (s.lease_remaining_s, s.lease_ttl_s) = (Some(left), Some(ttl));
        }
    }
    Ok(slots)
}

/// The cluster slots of `name` as one range read finds them, without the
/// leases' TTLs.
pub(crate) fn list_with(
    client: &Client,
    name: &str,
    deadline: Instant,
) -> Result<Vec<FleetSlot>, EtcdError> {
    let prefix = slot_prefix(name);
    let mut slots = Vec::new();
    for kv in client.range_prefix(prefix.as_bytes(), deadline)? {
        let Some(slot) = kv
            .key
            .strip_prefix(prefix.as_bytes())
            .and_then(|i| std::str::from_utf8(i).ok())
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue; // not ours: never trust what else lives under the prefix
        };
        let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        slots.push(FleetSlot {
            slot,
            host: v
                .get("host")
                .and_then(Value::as_str)
                .map(|h| h.chars().filter(|c| !c.is_control()).take(255).collect()),
            pid: v.get("pid").and_then(Value::as_i64),
            local_slot: v
                .get("local_slot")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok()),
            started_unix: v.get("started_unix").and_then(Value::as_i64),
            fencing_token: kv.create_revision,
            lease_id: kv.lease,
            lease_remaining_s: None,
            lease_ttl_s: None,
        });
    }
    slots.sort_by_key(|s| s.slot);
    Ok(slots)
}

/// How long `--check`/`--status --etcd` wait for one endpoint.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The output formats of `--status NAME --etcd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table with a header line.
    Text,
    /// A JSON array, one object per cluster slot.
    Json,
    /// The Prometheus text exposition format.
    Prometheus,
}

/// `--check NAME --etcd`: the verdict over the fleet and a one-line
/// summary for `--verbose`. Blocks for at most about [`TIMEOUT`] per
/// endpoint and request.
///
/// Errors: etcd could not be asked (the text names each endpoint and
/// cause): "cannot tell".
pub fn check(endpoints: &[String], name: &str, min_peers: u32) -> Result<(Health, String), String> {
    let slots = list(endpoints, name, TIMEOUT)?;
    Ok(judge(name, &slots, min_peers))
}

/// `--status NAME --etcd`: the verdict (as for one peer) and the listing in
/// `format`, ending in a newline. Blocks and fails as [`check`] does.
pub fn status(
    endpoints: &[String],
    name: &str,
    format: Format,
) -> Result<(Health, String), String> {
    let slots = list(endpoints, name, TIMEOUT)?;
    let text = match format {
        Format::Text => to_text(name, &slots),
        Format::Json => to_json(name, &slots) + "\n",
        Format::Prometheus => to_prometheus(name, &slots),
    };
    Ok((judge(name, &slots, 1).0, text))
}

/// The `--check` verdict over the fleet: healthy when at least `min_peers`
/// slots are held, unhealthy when fewer (but some) are held or some are
/// lapsing, not running when there is none.
pub fn judge(name: &str, slots: &[FleetSlot], min_peers: u32) -> (Health, String) {
    let held = slots.iter().filter(|s| s.is_held()).count();
    let lapsing: Vec<String> = slots
        .iter()
        .filter(|s| !s.is_held())
        .map(|s| format!("slot {} ({}) lapsing", s.slot, s.holder()))
        .collect();
    let mut summary =
        format!("{name}: {held} of at least {min_peers} cluster peers held across the fleet");
    if !lapsing.is_empty() {
        let _ = write!(summary, "; {}", lapsing.join(", "));
    }
    let health = if held >= min_peers as usize && held > 0 {
        Health::Healthy
    } else if slots.is_empty() {
        Health::NotRunning
    } else {
        Health::Unhealthy
    };
    (health, summary)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// One line per cluster slot, with a header.
pub fn to_text(name: &str, slots: &[FleetSlot]) -> String {
    if slots.is_empty() {
        return format!("{name}: no cluster slot is held\n");
    }
    let now = now_unix();
    let mut out = format!(
        "{:<5} {:<8} {:<24} {:>8} {:>6} {:>12} {:>8} {:>9}\n",
        "SLOT", "STATE", "HOST", "PID", "LOCAL", "TOKEN", "AGE", "LEASE"
    );
    for s in slots {
        let _ = writeln!(
            out,
            "{:<5} {:<8} {:<24} {:>8} {:>6} {:>12} {:>8} {:>9}",
            s.slot,
            s.state(),
            s.host.as_deref().unwrap_or("-"),
            or_dash(s.pid),
            or_dash(s.local_slot),
            s.fencing_token,
            s.age_s(now).map_or_else(|| "-".into(), |a| format!("{a}s")),
            match (s.lease_remaining_s, s.lease_ttl_s) {
                (Some(l), Some(t)) => format!("{l}/{t}s"),
                _ => "-".into(),
            },
        );
    }
    out
}

/// A JSON array, one object per cluster slot.
pub fn to_json(name: &str, slots: &[FleetSlot]) -> String {
    let now = now_unix();
    let items: Vec<Value> = slots
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": name,
                "slot": s.slot,
                "state": s.state(),
                "host": s.host,
                "pid": s.pid,
                "local_slot": s.local_slot,
                "fencing_token": s.fencing_token,
                "started_unix": s.started_unix,
                "age_s": s.age_s(now),
                "lease_id": format!("{:x}", s.lease_id),
                "lease_remaining_s": s.lease_remaining_s,
                "lease_ttl_s": s.lease_ttl_s,
            })
        })
        .collect();
    Value::Array(items).to_string()
}

/// The Prometheus text exposition format (no timestamps), labelled `name`,
/// `slot` and `host`.
pub fn to_prometheus(name: &str, slots: &[FleetSlot]) -> String {
    let mut out = String::new();
    let held = slots.iter().filter(|s| s.is_held()).count();
    let _ = writeln!(
        out,
        "# HELP rdaemon_cluster_slots_held Cluster slots whose lease is being renewed.\n\
         # TYPE rdaemon_cluster_slots_held gauge\n\
         rdaemon_cluster_slots_held{{name=\"{}\"}} {held}",
        escape(name)
    );
    type Metric = fn(&FleetSlot) -> Option<i64>;
    let families: [(&str, &str, Metric); 4] = [
        (
            "rdaemon_cluster_slot_up",
            "1 while the slot's lease is being renewed.",
            |s| Some(i64::from(s.is_held())),
        ),
        (
            "rdaemon_cluster_slot_fencing_token",
            "The slot key's create revision.",
            |s| Some(s.fencing_token),
        ),
        (
            "rdaemon_cluster_slot_start_time_seconds",
            "When the slot was claimed, Unix time.",
            |s| s.started_unix,
        ),
        (
            "rdaemon_cluster_slot_lease_remaining_seconds",
            "Seconds left on the slot's etcd lease.",
            |s| s.lease_remaining_s,
        ),
    ];
    for (metric, help, value) in families {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for s in slots {
            if let Some(v) = value(s) {
                let _ = writeln!(
                    out,
                    "{metric}{{name=\"{}\",slot=\"{}\",host=\"{}\"}} {v}",
                    escape(name),
                    s.slot,
                    escape(s.host.as_deref().unwrap_or(""))
                );
            }
        }
    }
    out
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(i: u32, left: Option<i64>) -> FleetSlot {
        FleetSlot {
            slot: i,
            host: Some("h\"1".into()),
            pid: Some(42),
            local_slot: Some(1),
            started_unix: Some(now_unix() - 5),
            fencing_token: 7,
            lease_id: 0x1234,
            lease_remaining_s: left,
            lease_ttl_s: left.map(|_| 10),
        }
    }

    #[test]
    fn held_and_lapsing() {
        assert!(slot(1, Some(9)).is_held());
        assert!(!slot(1, Some(5)).is_held());
        assert!(!slot(1, Some(-1)).is_held());
        assert!(slot(1, None).is_held());
        let (h, _) = judge("x", &[slot(1, Some(9)), slot(2, Some(8))], 2);
        assert_eq!(h, Health::Healthy);
        let (h, why) = judge("x", &[slot(1, Some(9)), slot(2, Some(3))], 2);
        assert_eq!(h, Health::Unhealthy);
        assert!(why.contains("slot 2 (h\"1:42) lapsing"), "{why}");
        assert_eq!(judge("x", &[], 1).0, Health::NotRunning);
        assert_eq!(judge("x", &[slot(1, Some(2))], 1).0, Health::Unhealthy);
    }

    #[test]
    fn renders() {
        let slots = [slot(1, Some(9)), slot(2, None)];
        let text = to_text("x", &slots);
        assert!(text.lines().nth(1).unwrap().contains("held"), "{text}");
        let json: Value = serde_json::from_str(&to_json("x", &slots)).unwrap();
        assert_eq!(json[0]["fencing_token"], 7);
        assert_eq!(json[0]["pid"], 42);
        assert_eq!(json[1]["lease_remaining_s"], Value::Null);
        let prom = to_prometheus("x", &slots);
        assert!(
            prom.contains("rdaemon_cluster_slot_up{name=\"x\",slot=\"1\",host=\"h\\\"1\"} 1"),
            "{prom}"
        );
        assert!(!prom.contains("slot=\"2\",host=\"h\\\"1\"} -"), "{prom}");
    }
}
