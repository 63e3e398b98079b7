//! Fleet-wide slots against a real etcd (started per test on free loopback
//! ports, tests/common/etcd.rs): the gateway client, claims, the keep-alive
//! and lease loss (a partition through a frozen proxy, a frozen etcd, a
//! restarted etcd), bad endpoints, the fleet view, and the CLI.
//!
//! Every test skips loudly when /usr/bin/etcd is missing.
#![cfg(feature = "etcd")]

#[path = "common/etcd.rs"]
mod cluster;
mod common;

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cluster::{Etcd, Proxy, free_port, not_etcd_server};
use common::{DEADLINE, poll_until};
use rdaemon::etcd::{
    ClaimError, ClusterConfig, ClusterLease, LeaseStanding, LeaseTiming, fleet, host_name, slot_key,
};

macro_rules! etcd_or_skip {
    () => {
        match Etcd::start() {
            Some(e) => e,
            None => return,
        }
    };
}

fn cfg(endpoints: Vec<String>, max_peers: u32, ttl_secs: u64) -> ClusterConfig {
    ClusterConfig {
        endpoints,
        max_peers,
        lease_ttl: Duration::from_secs(ttl_secs),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Whether `fd` becomes readable within `limit`.
fn readable_within(fd: BorrowedFd<'_>, limit: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            _ if Instant::now() >= deadline => return false,
            _ => {}
        }
    }
}

#[test]
fn client_speaks_the_gateway() {
    let etcd = etcd_or_skip!();
    let c = etcd.client();
    let (id, ttl) = c.grant(5, soon()).unwrap();
    assert!(id != 0 && ttl >= 5, "{id} {ttl}");
    let rev = c
        .create(b"/t/a", b"v1", id, soon())
        .unwrap()
        .expect("created");
    // The compare fails now: the gateway omits `succeeded`.
    assert_eq!(c.create(b"/t/a", b"v2", id, soon()).unwrap(), None);
    let kv = c.get(b"/t/a", soon()).unwrap().expect("key");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.lease),
        (&b"v1"[..], rev, id)
    );
    // Keys are bytes, not text.
    let rev2 = c
        .create(b"/t/\xff\x00b", b"\x00", 0, soon())
        .unwrap()
        .expect("created");
    assert!(rev2 > rev);
    let all = c.range_prefix(b"/t/", soon()).unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"/t/a"[..], &b"/t/\xff\x00b"[..]]);
    assert!(c.range_prefix(b"/nothing/", soon()).unwrap().is_empty());
    assert!(c.keepalive(id, soon()).unwrap() > 0);
    let (left, granted) = c.time_to_live(id, soon()).unwrap();
    assert!(left > 0 && granted == ttl, "{left} {granted}");
    c.revoke(id, soon()).unwrap();
    c.revoke(id, soon()).expect("revoking a gone lease is fine");
    assert_eq!(
        c.keepalive(id, soon()).unwrap(),
        0,
        "a gone lease renews to TTL 0"
    );
    assert_eq!(c.time_to_live(id, soon()).unwrap().0, -1);
    assert!(
        c.get(b"/t/a", soon()).unwrap().is_none(),
        "revoke deletes the key"
    );
    assert!(c.get(b"/t/\xff\x00b", soon()).unwrap().is_some());
}

#[test]
fn claims_beyond_m_are_busy_naming_holders() {
    let etcd = etcd_or_skip!();
    let c = cfg(vec![etcd.url()], 2, 10);
    let a = ClusterLease::claim(&c, "mailer", 1).unwrap();
    let b = ClusterLease::claim(&c, "mailer", 2).unwrap();
    assert_eq!((a.slot(), b.slot()), (1, 2));
    assert!(b.fencing_token() > a.fencing_token());
    let me = format!("{}:{}", host_name(), std::process::id());
    match ClusterLease::claim(&c, "mailer", 3) {
        Err(ClaimError::Busy(msg)) => {
            assert!(
                msg.contains("slot 1 by") && msg.contains("slot 2 by"),
                "{msg}"
            );
            assert!(msg.contains(&me), "{msg}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // The busy claim revoked its own lease: only two leases' keys exist.
    let keys = etcd
        .client()
        .range_prefix(b"/rdaemon/mailer/", soon())
        .unwrap();
    assert_eq!(keys.len(), 2);
    // Another NAME is independent.
    let other = ClusterLease::claim(&c, "other", 1).unwrap();
    let token_b = b.fencing_token();
    a.release();
    let c3 = ClusterLease::claim(&c, "mailer", 3).expect("slot 1 is free again");
    assert_eq!(c3.slot(), 1);
    assert!(c3.fencing_token() > token_b, "fencing tokens only grow");
    assert!(c3.fencing_token() > other.fencing_token());
    let kv = etcd
        .client()
        .get(slot_key("mailer", 1).as_bytes(), soon())
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["local_slot"], 3);
    assert_eq!(v["host"], host_name());
    assert!(v["started_unix"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(kv.create_revision, c3.fencing_token());
}

#[test]
fn twenty_concurrent_claims_never_exceed_m() {
    let etcd = etcd_or_skip!();
    let c = cfg(vec![etcd.url()], 3, 10);
    let start = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (c, start) = (c.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                ClusterLease::claim(&c, "race", i)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let held: Vec<&ClusterLease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(ClaimError::Busy(_))))
        .count();
    let unavailable: Vec<_> = results
        .iter()
        .filter(|r| matches!(r, Err(ClaimError::Unavailable(_))))
        .collect();
    assert!(held.len() <= 3, "{} claims won M=3 slots", held.len());
    assert_eq!(
        held.len(),
        3,
        "every slot should be taken: {busy} busy, unavailable: {unavailable:?}"
    );
    let mut slots: Vec<u32> = held.iter().map(|l| l.slot()).collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2, 3]);
    let keys = etcd
        .client()
        .range_prefix(b"/rdaemon/race/", soon())
        .unwrap();
    assert_eq!(keys.len(), 3);
    // Losers revoked their leases (best effort, but etcd is healthy here):
    // only the winners' leases hold keys.
    for kv in keys {
        assert!(held.iter().any(|l| l.lease_id() == kv.lease));
    }
}

#[test]
fn partition_loses_the_lease_before_etcd_can_expire_it() {
    let etcd = etcd_or_skip!();
    let proxy = Proxy::new(etcd.addr());
    let ttl = 4;
    let timing = LeaseTiming::new(Duration::from_secs(ttl));
    let mut lease = ClusterLease::claim(&cfg(vec![proxy.url()], 1, ttl), "cut", 1).unwrap();
    let key = slot_key("cut", 1);
    let first = lease.fencing_token();
    assert_eq!(lease.standing(), LeaseStanding::Held);
    assert!(!lease.lost());

    proxy.freeze();
    // The last renewal was before the freeze, so the loss is due at
    // frozen_at + T/2 at the latest; a little slack for a loaded machine.
    let slack = Duration::from_millis(1500);
    assert!(
        readable_within(lease.fd(), timing.lost_after() + slack),
        "no news within T/2 of the partition"
    );
    let seen = Instant::now();
    let LeaseStanding::Lost { kill_by, why } = lease.standing() else {
        panic!("the descriptor woke but the lease is held");
    };
    assert!(lease.lost());
    assert!(why.contains("not renewed"), "{why}");
    assert!(
        kill_by > seen,
        "kill_by is already past when the loss is published"
    );
    assert!(
        kill_by - seen >= timing.max_stop_timeout() / 2,
        "too little time left to stop COMMAND: {:?}",
        kill_by - seen
    );

    // Watch etcd itself (not through the proxy): the key must outlive
    // kill_by, i.e. COMMAND is gone before another host can take the slot.
    let c = etcd.client();
    let mut last_present = None;
    let gone = poll_until(Duration::from_secs(ttl) + DEADLINE, || {
        let sent = Instant::now();
        match c.get(key.as_bytes(), soon()) {
            Ok(Some(_)) => {
                last_present = Some(sent);
                None
            }
            Ok(None) => Some(()),
            Err(_) => None,
        }
    });
    assert!(gone.is_some(), "the lease never expired in etcd");
    let last_present = last_present.expect("the key existed after the loss");
    assert!(
        last_present >= kill_by,
        "etcd freed the slot {:?} before kill_by",
        kill_by - last_present
    );

    // Still cut off: a reclaim fails (within its budget), naming the way.
    match lease.reclaim() {
        Err(ClaimError::Unavailable(msg)) => assert!(msg.contains(&proxy.url()), "{msg}"),
        other => panic!("reclaim through a frozen proxy: {other:?}"),
    }
    assert!(lease.lost(), "a failed reclaim leaves the lease lost");

    proxy.unfreeze();
    let back = poll_until(DEADLINE, || lease.reclaim().ok());
    assert!(
        back.is_some(),
        "no new cluster slot after the partition healed"
    );
    assert_eq!(lease.standing(), LeaseStanding::Held);
    assert!(!lease.lost());
    assert!(lease.fencing_token() > first);
    lease.release();
    assert!(
        c.get(key.as_bytes(), soon()).unwrap().is_none(),
        "release revokes"
    );
}

#[test]
fn a_lease_revoked_behind_our_back_is_lost_at_once() {
    let etcd = etcd_or_skip!();
    let ttl = 6;
    let timing = LeaseTiming::new(Duration::from_secs(ttl));
    let mut lease = ClusterLease::claim(&cfg(vec![etcd.url()], 1, ttl), "revoked", 1).unwrap();
    etcd.client().revoke(lease.lease_id(), soon()).unwrap();
    // Noticed at the next renewal: the slot may be another host's already.
    assert!(readable_within(
        lease.fd(),
        timing.renew_every() + Duration::from_millis(1500)
    ));
    let LeaseStanding::Lost { kill_by, why } = lease.standing() else {
        panic!("the descriptor woke but the lease is held");
    };
    assert!(
        kill_by <= Instant::now(),
        "a revoked lease must be killed for at once"
    );
    assert!(why.contains("expired or was revoked"), "{why}");
}

#[test]
fn frozen_etcd_loses_the_lease_and_a_thawed_one_gives_a_new_slot() {
    let etcd = etcd_or_skip!();
    let ttl = 4;
    let timing = LeaseTiming::new(Duration::from_secs(ttl));
    let mut lease = ClusterLease::claim(&cfg(vec![etcd.url()], 1, ttl), "frozen", 1).unwrap();
    let first = lease.fencing_token();
    etcd.freeze();
    let lost = readable_within(
        lease.fd(),
        timing.lost_after() + Duration::from_millis(1500),
    );
    let standing = lease.standing();
    etcd.thaw();
    assert!(lost, "no news while etcd was frozen");
    assert!(
        matches!(standing, LeaseStanding::Lost { .. }),
        "{standing:?}"
    );
    let back = poll_until(DEADLINE, || lease.reclaim().ok());
    assert!(back.is_some(), "no new cluster slot after etcd was thawed");
    assert!(lease.fencing_token() > first);
    assert_eq!(lease.standing(), LeaseStanding::Held);
}

#[test]
fn restarted_etcd_keeps_the_lease() {
    let mut etcd = etcd_or_skip!();
    let ttl = 10;
    let mut lease = ClusterLease::claim(&cfg(vec![etcd.url()], 1, ttl), "restart", 1).unwrap();
    let c = etcd.client();
    // Restart right after a renewal, so that T/2 is left for it.
    let mut before = i64::MAX;
    let renewed = poll_until(DEADLINE, || {
        let (left, _) = c.time_to_live(lease.lease_id(), soon()).ok()?;
        let grew = left > before;
        before = left;
        grew.then_some(())
    });
    assert!(renewed.is_some(), "the lease is not being renewed");
    etcd.restart();
    let restarted = Instant::now();
    // Past a whole TTL after the restart, only renewals explain that the
    // key still exists.
    let wait = Duration::from_secs(ttl + 1);
    assert!(
        !readable_within(lease.fd(), wait),
        "lost the lease across a restart: {:?}",
        lease.standing()
    );
    assert!(restarted.elapsed() >= wait);
    assert_eq!(lease.standing(), LeaseStanding::Held);
    let kv = etcd
        .client()
        .get(slot_key("restart", 1).as_bytes(), soon())
        .unwrap()
        .expect("the key survived the restart");
    assert_eq!(kv.create_revision, lease.fencing_token());
}

#[test]
fn bad_endpoints_are_named() {
    let refused = format!("http://127.0.0.1:{}", free_port());
    let not_etcd = not_etcd_server();
    for (endpoint, cause) in [
        (refused.as_str(), "connection refused"),
        (not_etcd.as_str(), "not an etcd v3 JSON gateway"),
        ("127.0.0.1:2379", "not an etcd endpoint URL"),
    ] {
        match ClusterLease::claim(&cfg(vec![endpoint.into()], 1, 4), "bad", 1) {
            Err(ClaimError::Unavailable(msg)) => {
                assert!(msg.contains(endpoint) && msg.contains(cause), "{msg}");
            }
            other => panic!("{endpoint}: expected Unavailable, got {other:?}"),
        }
    }
    let both = ClusterLease::claim(
        &cfg(vec![refused.clone(), not_etcd.clone()], 1, 4),
        "bad",
        1,
    );
    let Err(ClaimError::Unavailable(msg)) = both else {
        panic!("{both:?}");
    };
    assert!(msg.contains(&refused) && msg.contains(&not_etcd), "{msg}");
    let err = fleet::list(
        std::slice::from_ref(&refused),
        "bad",
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(err.contains(&refused), "{err}");

    // The next endpoint is tried when one cannot be reached.
    let etcd = etcd_or_skip!();
    let lease = ClusterLease::claim(&cfg(vec![refused, not_etcd, etcd.url()], 1, 4), "bad", 1)
        .expect("the third endpoint works");
    assert_eq!(lease.slot(), 1);
}

#[test]
fn fleet_view_lists_every_holder() {
    let etcd = etcd_or_skip!();
    let proxy = Proxy::new(etcd.addr());
    let a = ClusterLease::claim(&cfg(vec![etcd.url()], 3, 10), "fleet", 1).unwrap();
    let b = ClusterLease::claim(&cfg(vec![proxy.url()], 3, 4), "fleet", 2).unwrap();
    let list = || fleet::list(&[etcd.url()], "fleet", Duration::from_secs(5)).unwrap();
    let slots = list();
    assert_eq!(slots.len(), 2);
    for (s, l) in slots.iter().zip([&a, &b]) {
        assert_eq!(s.slot, l.slot());
        assert_eq!(s.fencing_token, l.fencing_token());
        assert_eq!(s.pid, Some(i64::from(std::process::id())));
        assert_eq!(s.host.as_deref(), Some(host_name().as_str()));
        assert_eq!(s.state(), "held");
    }
    assert_eq!(
        fleet::judge("fleet", &slots, 2).0,
        rdaemon::inspect::Health::Healthy
    );
    assert_eq!(
        fleet::judge("fleet", &slots, 3).0,
        rdaemon::inspect::Health::Unhealthy
    );
    let json: serde_json::Value = serde_json::from_str(&fleet::to_json("fleet", &slots)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let (_, prom) = fleet::status(&[etcd.url()], "fleet", fleet::Format::Prometheus).unwrap();
    assert!(
        prom.contains("rdaemon_cluster_slots_held{name=\"fleet\"} 2"),
        "{prom}"
    );
    promtool_accepts(&prom);

    // Cut b off: its slot shows as lapsing before it disappears.
    proxy.freeze();
    let lapsing = poll_until(DEADLINE, || {
        let slots = list();
        slots
            .iter()
            .any(|s| s.slot == 2 && s.state() == "lapsing")
            .then_some(slots)
    })
    .expect("slot 2 never showed as lapsing");
    assert_eq!(
        fleet::judge("fleet", &lapsing, 2).0,
        rdaemon::inspect::Health::Unhealthy
    );
    drop(b);
}

/// `promtool check metrics` on `text`, when promtool is installed.
fn promtool_accepts(text: &str) {
    let Some(out) = common::promtool_check_metrics(text) else {
        eprintln!("promtool not installed: the exposition format is not checked");
        return;
    };
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The CLI.

/// A command for the binary that ignores the caller's RDAEMON_ETCD.
fn rdaemon_in(env: &common::Env) -> std::process::Command {
    let mut c = env.cmd();
    c.env_remove("RDAEMON_ETCD");
    c
}

fn run(env: &common::Env, args: &[&str]) -> (i32, String, String) {
    let out = rdaemon_in(env).args(args).output().unwrap();
    (
        out.status.code().expect("rdaemon died of a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_refuses_what_cannot_work() {
    let env = common::Env::new();
    let url = "http://127.0.0.1:1";
    // A cluster start: these words, then the extra ones, then COMMAND.
    let start = ["--name", "x", "--etcd", url, "--cluster-max-peers", "2"];
    let cluster = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = start.to_vec();
        args.extend(extra);
        args.extend(["--", "true"]);
        args
    };
    for (args, says) in [
        (
            vec!["--name", "x", "--etcd", url, "--", "true"],
            "needs --cluster-max-peers",
        ),
        (
            vec!["--name", "x", "--cluster-max-peers", "1", "--", "true"],
            "without --etcd",
        ),
        (cluster(&["--stop-timeout", "10"]), "may be at most 4"),
        (
            cluster(&["--lease-ttl", "6"]),
            "--stop-timeout 4 does not fit --lease-ttl 6",
        ),
        (cluster(&["--lease-ttl", "1"]), "--lease-ttl"),
        (
            vec!["--check", "x", "--etcd", url, "--max-age", "5"],
            "--max-age",
        ),
        (vec!["--status", "../x", "--etcd", url], "x"),
    ] {
        let (code, _, err) = run(&env, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(
        !env.pid_dir.join("x.1.pid").exists(),
        "a refused start left a slot file"
    );
    // A stop timeout that fits, and a longer lease that makes room.
    for ok in [
        &["--stop-timeout", "1", "--lease-ttl", "4"],
        &["--stop-timeout", "10", "--lease-ttl", "25"],
    ] {
        let args = cluster(ok);
        let (code, _, err) = run(&env, &args);
        assert_ne!(code, 2, "{args:?}: {err}");
    }
}

#[test]
fn cli_fleet_check_and_status() {
    let etcd = etcd_or_skip!();
    let env = common::Env::new();
    let url = etcd.url();
    let c = cfg(vec![url.clone()], 3, 10);
    let a = ClusterLease::claim(&c, "web", 1).unwrap();
    let b = ClusterLease::claim(&c, "web", 2).unwrap();
    let check = |k: &str| {
        run(
            &env,
            &["--check", "web", "--etcd", &url, "--min-peers", k, "-v"],
        )
    };
    assert_eq!(check("2").0, 0);
    let (code, out, _) = check("3");
    assert_eq!(code, 150);
    assert!(out.contains("2 of at least 3"), "{out}");
    assert_eq!(run(&env, &["--check", "nobody", "--etcd", &url]).0, 3);

    let (code, out, err) = run(&env, &["--status", "web", "--etcd", &url, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, lease) in rows.iter().zip([&a, &b]) {
        assert_eq!(row["slot"], lease.slot());
        assert_eq!(row["state"], "held");
        assert_eq!(row["pid"], std::process::id());
        assert_eq!(row["fencing_token"], lease.fencing_token());
        assert_eq!(row["host"], host_name());
    }
    let (code, out, _) = run(&env, &["--status", "web", "--etcd", &url]);
    assert_eq!(code, 0);
    assert!(out.starts_with("SLOT") && out.lines().count() == 3, "{out}");
    // The environment variable works as the option does.
    let out = rdaemon_in(&env)
        .env("RDAEMON_ETCD", &url)
        .args(["--check", "web", "--min-peers", "2"])
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(0));

    // Unreachable etcd: cannot tell, naming the endpoint.
    let dead = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(run(&env, &["--check", "web", "--etcd", &dead]).0, 4);
    let (code, _, err) = run(&env, &["--status", "web", "--etcd", &dead]);
    assert_eq!(code, 4);
    assert!(
        err.contains(&dead) && err.contains("connection refused"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// End to end through the binary: two "hosts" (two PID directories, each
// reaching etcd through its own proxy). These need the supervisor to claim
// and keep its ClusterLease (the supervisor branch).

/// COMMAND for the end-to-end tests: writes `OUT.start` ("monotonic pid
/// token", CLOCK_MONOTONIC via time.monotonic()), then `OUT.last` (the
/// monotonic time) every 20 ms until killed. With OTHER, first writes
/// `OUT.other`: whether OTHER's COMMAND (its `OTHER.start` pid) was alive.
const WRITER: &str = r#"
import os, sys, time
marker, out = sys.argv[1], sys.argv[2]
other = sys.argv[3] if len(sys.argv) > 3 else None
now = time.monotonic()
if other:
    state = "none"
    try:
        pid = int(open(other + ".start").read().split()[1])
        st = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
        state = "dead" if st in ("Z", "X") else "alive"
    except (OSError, ValueError, IndexError):
        state = "dead"
    open(out + ".other", "w").write(state)
open(out + ".start.tmp", "w").write("%f %d %s\n" % (now, os.getpid(), os.environ.get("RDAEMON_FENCING_TOKEN", "")))
os.replace(out + ".start.tmp", out + ".start")
while True:
    open(out + ".last.tmp", "w").write("%f" % time.monotonic())
    os.replace(out + ".last.tmp", out + ".last")
    time.sleep(0.02)
"#;

/// One host: its own PID directory and its own way to etcd.
struct Host {
    env: common::Env,
    proxy: Proxy,
    names: std::sync::Mutex<Vec<String>>,
    /// More start options, e.g. --respawn.
    opts: Vec<&'static str>,
}

impl Drop for Host {
    /// Leaves nothing running, whatever the test did.
    fn drop(&mut self) {
        self.proxy.unfreeze();
        for name in self.names.lock().unwrap().iter() {
            let _ = run(&self.env, &["--stop", name, "--timeout", "5"]);
        }
    }
}

impl Host {
    fn new(etcd: &Etcd) -> Host {
        Host {
            env: common::Env::new(),
            proxy: Proxy::new(etcd.addr()),
            names: Default::default(),
            opts: Vec::new(),
        }
    }

    /// A host whose starts also get `opts`.
    fn with_opts(etcd: &Etcd, opts: &[&'static str]) -> Host {
        let mut host = Host::new(etcd);
        host.opts = opts.to_vec();
        host
    }

    /// The start of NAME (M cluster slots, local N) with the writer as
    /// COMMAND, writing `OUT.*` in this host's temp dir; run it with
    /// [`outcome`].
    fn command(
        &self,
        name: &str,
        m: u32,
        n: u32,
        ttl: u64,
        out: &str,
        other: Option<&str>,
    ) -> std::process::Command {
        // --stop-timeout: the most the lease arithmetic allows.
        let stop = LeaseTiming::new(Duration::from_secs(ttl)).max_stop_timeout();
        self.names.lock().unwrap().push(name.to_string());
        let mut c = rdaemon_in(&self.env);
        c.args([
            "--name",
            name,
            "--max-peers",
            &n.to_string(),
            "--etcd",
            &self.proxy.url(),
        ])
        .args([
            "--cluster-max-peers",
            &m.to_string(),
            "--lease-ttl",
            &ttl.to_string(),
        ])
        .args(["--stop-timeout", &stop.as_secs_f64().to_string()])
        .arg("--log")
        .arg(self.env.path("log"))
        .args(&self.opts)
        .args(["--", "python3", "-c", WRITER, name])
        .arg(self.env.path(out));
        c.args(other);
        c
    }
}

/// Runs a start; returns (exit status, stderr).
fn outcome(mut start: std::process::Command) -> (i32, String) {
    let out = start.output().unwrap();
    (
        out.status.code().expect("rdaemon died of a signal"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `OUT.suffix`, as the writer names its files.
fn with_suffix(out: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut p = out.as_os_str().to_os_string();
    p.push(".");
    p.push(suffix);
    p.into()
}

/// The first monotonic timestamp COMMAND wrote, its PID and token.
fn started(path: &std::path::Path) -> Option<(f64, i32, i64)> {
    let text = std::fs::read_to_string(with_suffix(path, "start")).ok()?;
    let mut it = text.split_whitespace();
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// The last monotonic time COMMAND wrote before it died.
fn last_alive(path: &std::path::Path) -> f64 {
    std::fs::read_to_string(with_suffix(path, "last"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("COMMAND never wrote its last-alive time")
}

#[test]
fn e2e_two_hosts_three_starts_each_run_exactly_m() {
    let etcd = etcd_or_skip!();
    let hosts = [Host::new(&etcd), Host::new(&etcd)];
    let mut codes = Vec::new();
    let mut started_on = [0, 0];
    for round in 0..3 {
        for (h, host) in hosts.iter().enumerate() {
            let out = format!("w{h}{round}.out");
            let (code, err) = outcome(host.command("m2", 2, 3, 10, &out, None));
            if code == 75 {
                assert!(err.contains("cluster slots of m2 are held"), "{err}");
                assert!(
                    err.contains(&host_name()),
                    "holders named as host:pid: {err}"
                );
            }
            started_on[h] += usize::from(code == 0);
            codes.push(code);
        }
    }
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 75).count(), 4, "{codes:?}");
    common::wait_until("two COMMANDs", || common::pids_with_arg("m2").len() == 2);
    let listed = fleet::list(&[etcd.url()], "m2", Duration::from_secs(5)).unwrap();
    assert_eq!(listed.len(), 2);
    // A start that found the fleet busy kept no local slot.
    for (host, n) in hosts.iter().zip(started_on) {
        let held = (1..=3)
            .filter(|&i| host.env.pid_file("m2", i).exists())
            .count();
        assert_eq!(held, n, "local slot files on a host that started {n}");
    }
}

#[test]
fn e2e_race_of_twenty_starts_across_two_hosts() {
    let etcd = etcd_or_skip!();
    let hosts = [Host::new(&etcd), Host::new(&etcd)];
    let go = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let mut start = hosts[i % 2].command("race", 3, 10, 10, &format!("r{i}.out"), None);
            let go = Arc::clone(&go);
            std::thread::spawn(move || {
                go.wait();
                start
                    .status()
                    .unwrap()
                    .code()
                    .expect("rdaemon died of a signal")
            })
        })
        .collect();
    let codes: Vec<i32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 3, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 0 || c == 75), "{codes:?}");
    common::wait_until("three COMMANDs", || {
        common::pids_with_arg("race").len() == 3
    });
}

/// Host B keeps trying to start until it gets the slot; returns its exit
/// statuses (75 while A holds it).
fn start_when_free(b: &Host, name: &str, ttl: u64, out: &str, other: &str) -> Vec<i32> {
    let mut codes = Vec::new();
    let got = poll_until(Duration::from_secs(ttl) + DEADLINE, || {
        let (code, err) = outcome(b.command(name, 1, 1, ttl, out, Some(other)));
        codes.push(code);
        assert!(code == 0 || code == 75, "{code}: {err}");
        (code == 0).then_some(())
    });
    assert!(
        got.is_some(),
        "host B never got the cluster slot: {codes:?}"
    );
    codes
}

/// A's COMMAND died before B's started, by their monotonic clocks and by
/// B's own look at A's process.
fn assert_no_overlap(a_out: &std::path::Path, b_out: &std::path::Path) {
    common::wait_until("B's COMMAND to start", || started(b_out).is_some());
    let (b_first, _, b_token) = started(b_out).unwrap();
    let (_, a_pid, a_token) = started(a_out).expect("A's COMMAND started");
    let a_last = last_alive(a_out);
    assert!(
        a_last < b_first,
        "A was alive at {a_last}, B started at {b_first}"
    );
    assert_eq!(
        std::fs::read_to_string(with_suffix(b_out, "other")).unwrap(),
        "dead"
    );
    assert!(!common::alive(a_pid));
    assert!(
        b_token > a_token,
        "fencing tokens grow: {a_token} then {b_token}"
    );
}

#[test]
fn e2e_partitioned_host_stops_before_the_other_starts() {
    let etcd = etcd_or_skip!();
    let (a, b) = (Host::new(&etcd), Host::new(&etcd));
    let a_out = a.env.path("a.out");
    let (code, err) = outcome(a.command("solo", 1, 1, 4, "a.out", None));
    assert_eq!(code, 0, "{err}");
    common::wait_until("A's COMMAND to start", || started(&a_out).is_some());
    assert_eq!(outcome(b.command("solo", 1, 1, 4, "b0.out", None)).0, 75);
    a.proxy.freeze();
    let codes = start_when_free(&b, "solo", 4, "b.out", a_out.to_str().unwrap());
    assert!(
        codes.len() > 1,
        "B got the slot at once: A's lease was not held"
    );
    assert_no_overlap(&a_out, &b.env.path("b.out"));
    // A's supervisor gave up its local slot too (no --respawn).
    common::wait_until("A's supervisor to exit", || {
        run(&a.env, &["--check", "solo"]).0 == 3
    });
    let log = common::read(&a.env.path("log"));
    assert!(log.contains("lease"), "A's log says why: {log}");
}

#[test]
fn e2e_killed_supervisor_lets_its_lease_expire() {
    let etcd = etcd_or_skip!();
    let (a, b) = (Host::new(&etcd), Host::new(&etcd));
    let a_out = a.env.path("a.out");
    assert_eq!(outcome(a.command("killed", 1, 1, 4, "a.out", None)).0, 0);
    common::wait_until("A's COMMAND to start", || started(&a_out).is_some());
    let sup = a.env.read_pid("killed", 1).expect("A's supervisor PID");
    // SAFETY: kill(2) on the verified holder of our own test's slot.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    start_when_free(&b, "killed", 4, "b.out", a_out.to_str().unwrap());
    assert_no_overlap(&a_out, &b.env.path("b.out"));
}

#[test]
fn e2e_stop_frees_the_cluster_slot_at_once_and_bad_etcd_starts_nothing() {
    let etcd = etcd_or_skip!();
    let (a, b) = (Host::new(&etcd), Host::new(&etcd));
    assert_eq!(outcome(a.command("handover", 1, 1, 10, "a.out", None)).0, 0);
    let (_, _, token) = poll_until(DEADLINE, || started(&a.env.path("a.out"))).unwrap();
    let kv = etcd
        .client()
        .get(slot_key("handover", 1).as_bytes(), soon())
        .unwrap()
        .expect("A's cluster slot key");
    assert_eq!(
        kv.create_revision, token,
        "RDAEMON_FENCING_TOKEN is the key's revision"
    );
    assert_eq!(run(&a.env, &["--stop", "handover"]).0, 0);
    // The lease was revoked: no waiting for it to expire.
    let (code, err) = outcome(b.command("handover", 1, 1, 10, "b.out", None));
    assert_eq!(code, 0, "{err}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run(
        &a.env,
        &[
            "--name",
            "nothing",
            "--etcd",
            &dead,
            "--cluster-max-peers",
            "1",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&dead), "{err}");
    assert_eq!(
        run(&a.env, &["--check", "nothing"]).0,
        3,
        "no local slot kept"
    );
}

#[test]
fn library_daemon_holds_a_cluster_slot_and_stops_on_a_lost_lease() {
    let etcd = etcd_or_skip!();
    let proxy = Proxy::new(etcd.addr());
    let (here, there) = (common::Env::new(), common::Env::new());
    let ttl = Duration::from_secs(4);
    let daemon = |env: &common::Env, endpoint: String| {
        rdaemon::Daemon::builder("libfleet")
            .pid_dir(&env.pid_dir)
            .handle_signals(false)
            .etcd([endpoint])
            .cluster_max_peers(1)
            .lease_ttl(ttl)
            .build()
            .unwrap()
    };
    let half = rdaemon::Daemon::builder("libfleet")
        .etcd(["http://127.0.0.1:1"])
        .build();
    assert_eq!(half.unwrap_err().kind(), rdaemon::ErrorKind::Usage);
    let half = rdaemon::Daemon::builder("libfleet")
        .cluster_max_peers(2)
        .build();
    assert_eq!(half.unwrap_err().kind(), rdaemon::ErrorKind::Usage);

    let mut a = daemon(&here, proxy.url());
    a.start().unwrap();
    let token = a.fencing_token().expect("a fencing token");
    let kv = etcd
        .client()
        .get(slot_key("libfleet", 1).as_bytes(), soon())
        .unwrap()
        .unwrap();
    assert_eq!(kv.create_revision, token);
    assert!(a.heartbeat());

    // Busy across "hosts": the failed start keeps no local slot.
    let mut b = daemon(&there, etcd.url());
    let err = b.start().unwrap_err();
    assert_eq!(err.kind(), rdaemon::ErrorKind::Busy, "{err}");
    assert!(err.to_string().contains(&host_name()), "{err}");
    assert!(!there.pid_dir.join("libfleet.1.pid").exists());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = daemon(&there, dead.clone()).start().unwrap_err();
    assert!(err.to_string().contains(&dead), "{err}");
    assert!(!there.pid_dir.join("libfleet.1.pid").exists());

    proxy.freeze();
    let limit = LeaseTiming::new(ttl).lost_after() + Duration::from_millis(1500);
    let stopped = poll_until(limit, || (!a.heartbeat()).then_some(()));
    assert!(
        stopped.is_some(),
        "heartbeat() still true past T/2 of a partition"
    );
    assert_eq!(a.stop_reason(), Some(&rdaemon::StopReason::LeaseLost));
    assert!(!a.heartbeat(), "once false, stays false");
    a.stop().unwrap();
    assert!(!here.pid_dir.join("libfleet.1.pid").exists());
    // The lease expires on its own; then the other "host" gets the slot.
    let got = poll_until(Duration::from_secs(4) + DEADLINE, || b.start().ok());
    assert!(got.is_some(), "the slot never came free");
    assert!(b.fencing_token().unwrap() > token);
    b.stop().unwrap();
    assert!(
        etcd.client()
            .get(slot_key("libfleet", 1).as_bytes(), soon())
            .unwrap()
            .is_none(),
        "stop() revokes the lease"
    );
}

#[test]
fn e2e_respawn_waits_for_a_cluster_slot_after_a_partition() {
    let etcd = etcd_or_skip!();
    let a = Host::with_opts(&etcd, &["--respawn"]);
    let a_out = a.env.path("a.out");
    assert_eq!(outcome(a.command("back", 1, 1, 4, "a.out", None)).0, 0);
    let (_, first_pid, first_token) =
        poll_until(DEADLINE, || started(&a_out)).expect("A's COMMAND started");
    a.proxy.freeze();
    common::wait_until("A's COMMAND to be stopped", || !common::alive(first_pid));
    // The supervisor stays, waiting for a cluster slot, holding its local one.
    assert!(a.env.pid_file("back", 1).exists());
    a.proxy.unfreeze();
    let again = poll_until(Duration::from_secs(4) + DEADLINE, || {
        started(&a_out).filter(|&(_, pid, _)| pid != first_pid)
    });
    let (_, pid, token) = again.expect("COMMAND never came back after the partition healed");
    assert!(common::alive(pid));
    assert!(
        token > first_token,
        "a new claim, a new fencing token: {first_token} then {token}"
    );
    let log = common::read(&a.env.path("log"));
    assert!(log.contains("cluster slot"), "{log}");
}
