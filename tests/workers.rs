//! The example workers (examples/php/worker.php, examples/python/worker.py)
//! under the real binary, three peers with `--respawn --notify --watchdog`,
//! consuming a real beanstalkd. Every test proves its claim by counting:
//! each job put is recorded once in the results file ("JOBID PID" per
//! processed job) and the queue is empty afterwards, whatever happened to
//! the workers in between (a stop, a rolling restart, recycling).
//!
//! A test is skipped (with a loud "SKIPPED:" line) only when php, python3
//! or beanstalkd is not installed at all.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::beanstalkd::{Beanstalkd, Client};
use common::*;
use serde_json::Value;

/// Peers of every test's NAME (`--max-peers`).
const PEERS: usize = 3;
/// `--watchdog`, in seconds: the workers ping every second while idle.
const WATCHDOG_S: u64 = 3;
/// Enough for any batch of jobs here on a loaded 2-core machine.
const WORK_DEADLINE: Duration = Duration::from_secs(120);
/// beanstalkd's time-to-run for every job: far beyond any test, so a job is
/// never handed out twice because a slow worker overran it.
const TTR_S: u32 = 600;

#[derive(Clone, Copy, Debug)]
enum Lang {
    Php,
    Python,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Php => "php",
            Lang::Python => "python",
        }
    }

    /// The interpreter (absolute, so a pyenv or phpenv shim adds nothing)
    /// and the example script; `None` when the interpreter is missing.
    fn argv(self) -> Option<Vec<String>> {
        let (interp, probe, script) = match self {
            Lang::Php => (
                "php",
                vec![
                    "-r",
                    "echo extension_loaded('pcntl') && extension_loaded('sockets') ? PHP_BINARY : '';",
                ],
                "examples/php/worker.php",
            ),
            Lang::Python => (
                "python3",
                vec!["-c", "import sys; print(sys.executable, end='')"],
                "examples/python/worker.py",
            ),
        };
        let out = match Command::new(interp).args(&probe).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("cannot run {interp}: {e}"),
        };
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !path.is_empty(),
            "{interp} is installed but unusable for the example (PHP needs ext-pcntl and \
             ext-sockets): {out:?}"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        Some(vec![path, script.to_str().unwrap().to_string()])
    }
}

/// One test's world: a queue, a PID directory, NAME's log and the results
/// file the workers append to.
struct Rig {
    // Fields drop in order: the workers are stopped before their queue goes.
    env: Env,
    queue: Beanstalkd,
    producer: Client,
    name: String,
    tube: String,
    results: PathBuf,
    log: PathBuf,
    worker: Vec<String>,
}

impl Rig {
    /// `None` (after saying SKIPPED) when the interpreter or beanstalkd is
    /// not installed.
    fn new(lang: Lang, scenario: &str) -> Option<Rig> {
        let Some(mut worker) = lang.argv() else {
            let interp = match lang {
                Lang::Php => "php",
                Lang::Python => "python3",
            };
            eprintln!("SKIPPED: {interp} not installed");
            return None;
        };
        let Some(queue) = Beanstalkd::start() else {
            eprintln!("SKIPPED: beanstalkd not installed");
            return None;
        };
        let env = Env::new();
        let name = format!("{scenario}-{}", lang.label());
        // Unique on this machine: the workers are found by this argument.
        let tube = format!("{name}-{}", std::process::id());
        worker.extend(["--tube".to_string(), tube.clone()]);
        let mut producer = queue.client();
        producer.use_tube(&tube);
        Some(Rig {
            results: env.path("results"),
            log: env.path(&format!("{name}.log")),
            env,
            queue,
            producer,
            name,
            tube,
            worker,
        })
    }

    /// rdaemon's options for every peer here: three slots, respawn, READY=1
    /// and a watchdog, the log, and the worker's queue and results file.
    fn peer_opts(&self) -> Vec<String> {
        let mut opts: Vec<String> = ["--max-peers", "3", "--respawn", "--notify", "--watchdog"]
            .map(String::from)
            .into();
        opts.push(WATCHDOG_S.to_string());
        opts.extend(["--log".into(), self.log.to_str().unwrap().into()]);
        opts.extend([
            "--env".into(),
            format!("BEANSTALK_PORT={}", self.queue.port),
        ]);
        opts.extend([
            "--env".into(),
            format!("RESULTS_FILE={}", self.results.display()),
        ]);
        opts
    }

    /// Starts all PEERS peers (one start each, as a cron line would), with
    /// `opts` added for rdaemon and `args` for the worker. With --notify
    /// each start returns once its worker sent READY=1.
    fn start_peers(&self, opts: &[&str], args: &[&str]) {
        let common = self.peer_opts();
        let mut all: Vec<&str> = common.iter().map(String::as_str).collect();
        all.extend_from_slice(opts);
        let mut command: Vec<&str> = self.worker.iter().map(String::as_str).collect();
        command.extend_from_slice(args);
        for _ in 0..PEERS {
            self.env.start(&self.name, &all, &command);
        }
    }

    /// Puts `n` jobs of `work_ms` milliseconds each; their IDs.
    fn put(&mut self, n: usize, work_ms: u32) -> Vec<u64> {
        let body = work_ms.to_string();
        (0..n)
            .map(|_| self.producer.put(body.as_bytes(), TTR_S))
            .collect()
    }

    /// The results file: (job ID, worker PID) per processed job.
    fn results(&self) -> Vec<(u64, i32)> {
        read(&self.results)
            .lines()
            .map(|l| {
                let (id, pid) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad results line {l:?}"));
                (id.parse().unwrap(), pid.parse().unwrap())
            })
            .collect()
    }

    /// Jobs of the tube not yet deleted: ready, reserved, delayed, buried.
    fn jobs_left(&mut self) -> u64 {
        let s = self.producer.stats_tube(&self.tube);
        [
            "current-jobs-ready",
            "current-jobs-reserved",
            "current-jobs-delayed",
            "current-jobs-buried",
        ]
        .iter()
        .map(|k| s.get(*k).map_or(0, |v| v.parse::<u64>().unwrap()))
        .sum()
    }

    fn count(&mut self, key: &str) -> u64 {
        self.producer.tube_count(&self.tube, key)
    }

    /// Waits until `total` jobs are recorded and the queue holds none.
    /// `watch` sees every status sample on the way (to fail fast).
    fn wait_processed(&mut self, total: usize, mut watch: impl FnMut(&Rig, &[Value])) {
        let done = poll_until(WORK_DEADLINE, || {
            let status = self.env.status_json(&self.name);
            watch(self, &status);
            (self.results().len() >= total && self.jobs_left() == 0).then_some(())
        });
        if done.is_none() {
            panic!(
                "{} of {total} jobs recorded, {} left in the queue after {WORK_DEADLINE:?}\n{}",
                self.results().len(),
                self.jobs_left(),
                self.diag()
            );
        }
    }

    /// Live worker processes of this test.
    fn workers(&self) -> Vec<i32> {
        pids_with_arg(&self.tube)
    }

    fn status(&self) -> Vec<Value> {
        self.env.status_json(&self.name)
    }

    /// What to print when something is off: NAME's log and status.
    fn diag(&self) -> String {
        let log = read(&self.log);
        let tail = &log[log.len().saturating_sub(6000)..];
        let status = self.env.run(["--status", &self.name]);
        format!(
            "--- status:\n{}--- log (tail):\n{tail}",
            String::from_utf8_lossy(&status.stdout)
        )
    }

    /// Asserts that `put` and the recorded results are the same jobs, each
    /// recorded exactly once.
    fn assert_each_once(&self, put: &[u64]) {
        let results = self.results();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (id, _) in &results {
            *seen.entry(*id).or_default() += 1;
        }
        let lost: Vec<_> = put.iter().filter(|id| !seen.contains_key(id)).collect();
        let twice: BTreeMap<_, _> = seen.iter().filter(|(_, n)| **n > 1).collect();
        let unknown: Vec<_> = seen.keys().filter(|id| !put.contains(id)).collect();
        assert!(
            lost.is_empty() && twice.is_empty() && unknown.is_empty() && results.len() == put.len(),
            "{} jobs put, {} recorded; lost {lost:?}; done more than once {twice:?}; \
             never put {unknown:?}\n{}",
            put.len(),
            results.len(),
            self.diag()
        );
    }

    /// Sum of the job counts the peers report in STATUS= ("processed N jobs").
    fn reported_jobs(&self) -> u64 {
        self.status()
            .iter()
            .filter_map(|s| s["status_text"].as_str())
            .filter_map(|t| {
                t.strip_prefix("processed ")?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

/// Peers running in one status sample: state `running` (under --notify:
/// READY=1 sent), with a worker, and not known to be unready.
fn running(status: &[Value]) -> usize {
    status
        .iter()
        .filter(|s| s["state"] == "running" && s["child_pid"].is_number() && s["ready"] != false)
        .count()
}

/// `--status NAME --json` against `pid_dir` (for threads, which cannot
/// share the test's `Env`).
fn status_at(pid_dir: &Path, name: &str) -> Vec<Value> {
    let out = Command::new(bin())
        .env("RDAEMON_PID_DIR", pid_dir)
        .args(["--status", name, "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("bad --status --json output: {out:?}"))
}

/// Runs `cmd` to completion, killing it and failing after `limit`.
fn run_with_deadline(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if poll_until(limit, || child.try_wait().unwrap()).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("{cmd:?} still running after {limit:?}: {out:?}");
    }
    child.wait_with_output().unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// (a) Every job processed exactly once by three peers; the peers report
/// the count in STATUS=, and idle workers keep the watchdog fed.
fn every_job_exactly_once(lang: Lang) {
    let Some(mut rig) = Rig::new(lang, "once") else {
        return;
    };
    rig.start_peers(&[], &[]);
    assert_eq!(rig.env.check(&rig.name), 0, "{}", rig.diag());
    assert_eq!(rig.workers().len(), PEERS);
    let ids = rig.put(200, 5);
    rig.wait_processed(ids.len(), |_, _| {});
    rig.assert_each_once(&ids);
    assert_eq!(rig.count("cmd-delete"), 200);

    // Every job is in some peer's STATUS= count (sent at most once a
    // second, so wait for the last ones).
    wait_until("the peers' STATUS= counts add up to 200", || {
        rig.reported_jobs() == 200
    });

    // Idle, each worker wakes every second and pings: watch each peer's
    // heartbeat (its last WATCHDOG=1) move on three times, which spans
    // the whole watchdog period, and nothing may restart meanwhile.
    let before = rig.status();
    let mut pings: HashMap<u64, (f64, u32)> = HashMap::new();
    let seen = poll_until(DEADLINE, || {
        let now = rig.status();
        for s in &now {
            let age = s["heartbeat_age_s"].as_f64().unwrap();
            assert!(
                age < WATCHDOG_S as f64,
                "heartbeat {age}s old while idle\n{}",
                rig.diag()
            );
            let at = unix_now() - age;
            let e = pings.entry(s["slot"].as_u64().unwrap()).or_insert((at, 0));
            if at > e.0 + 0.5 {
                *e = (at, e.1 + 1);
            }
        }
        (pings.len() == PEERS && pings.values().all(|&(_, n)| n >= 3)).then_some(now)
    });
    let after = seen.unwrap_or_else(|| panic!("idle pings not seen: {pings:?}\n{}", rig.diag()));
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b["child_pid"], a["child_pid"], "{}", rig.diag());
        assert_eq!(a["restarts"], 0, "{}", rig.diag());
    }
    let max_age = WATCHDOG_S.to_string();
    assert_eq!(
        rig.env.status([
            "--check",
            &rig.name,
            "--min-peers",
            "3",
            "--max-age",
            &max_age
        ]),
        0
    );
}

#[test]
fn php_every_job_exactly_once() {
    every_job_exactly_once(Lang::Php);
}

#[test]
fn python_every_job_exactly_once() {
    every_job_exactly_once(Lang::Python);
}

/// (b) `--stop` while the peers are busy: each worker finishes the job in
/// hand (or hands a just-reserved one back) and exits; nothing is lost or
/// done twice, and a fresh start finishes the rest.
fn stop_mid_stream(lang: Lang) {
    let Some(mut rig) = Rig::new(lang, "stop") else {
        return;
    };
    rig.start_peers(&[], &[]);
    // 300 jobs of 25 ms: at least 2.5 s of work for three workers.
    let ids = rig.put(300, 25);
    wait_until("some jobs done", || rig.results().len() >= 15);

    let out = rig.env.run(["--stop", &rig.name]);
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", rig.diag());
    assert!(
        rig.workers().is_empty(),
        "workers left: {:?}",
        rig.workers()
    );
    assert_eq!(rig.env.check(&rig.name), 3);
    let done = rig.results().len() as u64;
    assert_eq!(rig.count("current-jobs-reserved"), 0, "{}", rig.diag());
    let ready = rig.count("current-jobs-ready");
    assert_eq!(done + ready, 300, "{}", rig.diag());
    assert!(
        ready > 0,
        "the stop came after the last job: nothing was tested\n{}",
        rig.diag()
    );
    // Each worker stopped on its own terms (SIGTERM, not SIGKILL).
    let graceful = read(&rig.log)
        .lines()
        .filter(|l| l.contains("stopping after") && l.contains("exit 0"))
        .count();
    assert_eq!(graceful, PEERS, "{}", rig.diag());

    rig.start_peers(&[], &[]);
    rig.wait_processed(ids.len(), |_, _| {});
    rig.assert_each_once(&ids);
}

#[test]
fn php_stop_mid_stream_loses_and_repeats_no_job() {
    stop_mid_stream(Lang::Php);
}

#[test]
fn python_stop_mid_stream_loses_and_repeats_no_job() {
    stop_mid_stream(Lang::Python);
}

/// (c) A rolling `--restart` while jobs keep coming: every peer gets a new
/// worker, at no sampled moment do fewer than N-1 peers run, and no job is
/// lost or done twice.
fn rolling_restart(lang: Lang) {
    let Some(mut rig) = Rig::new(lang, "roll") else {
        return;
    };
    rig.start_peers(&[], &[]);
    let before = rig.status();
    assert_eq!(running(&before), PEERS, "{}", rig.diag());

    // A producer keeps about 30 jobs of 10 ms waiting until the roll is over.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let producing = producing.clone();
        let mut client = rig.queue.client();
        let tube = rig.tube.clone();
        std::thread::spawn(move || {
            client.use_tube(&tube);
            let mut ids = Vec::new();
            while producing.load(Ordering::SeqCst) {
                if client.tube_count(&tube, "current-jobs-ready") < 30 {
                    ids.extend((0..10).map(|_| client.put(b"10", TTR_S)));
                } else {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            ids
        })
    };
    wait_until("jobs flowing", || rig.results().len() >= 20);

    // Count running peers every few milliseconds during the roll.
    let rolling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let rolling = rolling.clone();
        let (dir, name) = (rig.env.pid_dir.clone(), rig.name.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            let mut worst: Option<Vec<Value>> = None;
            while rolling.load(Ordering::SeqCst) {
                let s = status_at(&dir, &name);
                if worst.as_ref().is_none_or(|w| running(&s) < running(w)) {
                    worst = Some(s);
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            (samples, worst)
        })
    };
    let mut restart = rig.env.cmd();
    restart.args(["--restart", &rig.name]);
    let out = run_with_deadline(restart, WORK_DEADLINE);
    rolling.store(false, Ordering::SeqCst);
    let (samples, worst) = sampler.join().unwrap();
    producing.store(false, Ordering::SeqCst);
    let ids = producer.join().unwrap();

    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", rig.diag());
    assert!(samples >= 3, "only {samples} samples during the roll");
    let worst = worst.unwrap();
    assert!(
        running(&worst) >= PEERS - 1,
        "{} of {PEERS} peers running at one moment of the roll: {worst:#?}\n{}",
        running(&worst),
        rig.diag()
    );
    // Every slot runs a new worker, restarted once (a recycle, no crash).
    let after = rig.status();
    assert_eq!(running(&after), PEERS, "{}", rig.diag());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b["slot"], a["slot"]);
        assert_ne!(b["child_pid"], a["child_pid"], "{}", rig.diag());
        assert_eq!(a["restarts"], 1, "{}", rig.diag());
    }
    rig.wait_processed(ids.len(), |_, _| {});
    rig.assert_each_once(&ids);
}

#[test]
fn php_rolling_restart_keeps_two_of_three_and_loses_no_job() {
    rolling_restart(Lang::Php);
}

#[test]
fn python_rolling_restart_keeps_two_of_three_and_loses_no_job() {
    rolling_restart(Lang::Python);
}

/// (d) Workers that exit after `--max-jobs 4` are restarted at once, over
/// and over, and never count toward `--max-respawns 2`: no slot gives up
/// (one slot recycles at least 4 times), and `--check` is 0 at the end.
///
/// `opts` says why the exit is a recycle: a run longer than `--min-uptime`,
/// or an exit status in `--recycle-codes`. `exit` is the status expected.
fn recycling(lang: Lang, opts: &[&str], worker_args: &[&str], exit: &str) {
    const MAX_JOBS: usize = 4;
    let Some(mut rig) = Rig::new(lang, "recycle") else {
        return;
    };
    let mut all = vec!["--max-respawns", "2", "--respawn-window", "600"];
    all.extend_from_slice(opts);
    let mut args = vec!["--max-jobs", "4"];
    args.extend_from_slice(worker_args);
    rig.start_peers(&all, &args);
    // 48 jobs of 300 ms: each run of 4 jobs lasts over 1.2 s. Live workers
    // hold at most 3 jobs each at the end, so at least (48-9)/4, i.e. 10
    // runs end, and one slot ends at least 4: twice --max-respawns.
    let ids = rig.put(48, 300);
    let stuck = |rig: &Rig, status: &[Value]| {
        assert_eq!(
            status.len(),
            PEERS,
            "a peer gave up its slot: {status:#?}\n{}",
            rig.diag()
        );
        // (A recycle may show as a short `backoff`: its jitter.)
        if let Some(s) = status.iter().find(|s| s["state"] == "failed") {
            panic!("recycles were taken for failures: {s:#}\n{}", rig.diag());
        }
    };
    rig.wait_processed(ids.len(), stuck);
    rig.assert_each_once(&ids);

    // Every worker that is gone did exactly MAX_JOBS jobs; the others are
    // the (at most 3) live ones.
    let mut per_pid: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, pid) in rig.results() {
        *per_pid.entry(pid).or_default() += 1;
    }
    let full: Vec<i32> = per_pid
        .iter()
        .filter(|(_, n)| **n == MAX_JOBS)
        .map(|(p, _)| *p)
        .collect();
    assert!(full.len() >= 10, "{per_pid:?}\n{}", rig.diag());
    wait_until("every worker that did its jobs exited", || {
        full.iter().all(|&p| !alive(p))
    });
    wait_until("three peers run again", || rig.env.check(&rig.name) == 0);
    let live = rig.workers();
    for (pid, n) in &per_pid {
        assert!(
            *n == MAX_JOBS || (*n < MAX_JOBS && live.contains(pid)),
            "worker {pid} did {n} jobs (live: {live:?}): {per_pid:?}\n{}",
            rig.diag()
        );
    }
    // Each recycle was counted as a restart, none as a failure.
    wait_until("restarts add up to the recycled workers", || {
        let status = rig.status();
        stuck(&rig, &status);
        status
            .iter()
            .map(|s| s["restarts"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == full.len() as u64
    });
    for s in rig.status() {
        if s["restarts"].as_u64() > Some(0) {
            assert_eq!(s["last_exit"], exit, "{}", rig.diag());
        }
    }
    assert_eq!(rig.env.check(&rig.name), 0, "{}", rig.diag());
}

#[test]
fn php_recycling_with_a_recycle_code_never_gives_up() {
    // Laravel's way: a dedicated exit status, whatever the uptime (the
    // default --min-uptime of 10 s is longer than any run here).
    recycling(
        Lang::Php,
        &["--recycle-codes", "12"],
        &["--recycle-code", "12"],
        "status 12",
    );
}

#[test]
fn python_recycling_after_min_uptime_never_gives_up() {
    // Exit 0 after a run longer than --min-uptime.
    recycling(Lang::Python, &["--min-uptime", "1"], &[], "status 0");
}

/// The harness itself: the client's put, reserve, delete and stats-tube
/// against the real server.
#[test]
fn beanstalkd_client_round_trip() {
    let Some(queue) = Beanstalkd::start() else {
        eprintln!("SKIPPED: beanstalkd not installed");
        return;
    };
    let mut c = queue.client();
    c.use_tube("rt");
    let id = c.put(b"hello", TTR_S);
    assert_eq!(c.tube_count("rt", "current-jobs-ready"), 1);
    c.watch_only("rt");
    assert_eq!(c.reserve_with_timeout(0), Some((id, b"hello".to_vec())));
    assert_eq!(c.tube_count("rt", "current-jobs-reserved"), 1);
    assert_eq!(c.reserve_with_timeout(0), None);
    c.delete(id);
    assert_eq!(c.tube_count("rt", "current-jobs-reserved"), 0);
    assert_eq!(c.tube_count("rt", "cmd-delete"), 1);
    assert!(queue.dir().join("binlog").is_dir());
}

/// What packaging/systemd/rdaemon-workers@.service relies on, with the test
/// in systemd's place: `rdaemon --foreground --notify` under a
/// `NOTIFY_SOCKET` of its own says READY=1 upstream only once its worker is
/// ready, passes the worker's STATUS= on, and a SIGTERM to rdaemon alone
/// (KillMode=mixed) lets the worker finish and makes rdaemon exit 0.
fn under_systemd_type_notify(lang: Lang) {
    let Some(mut rig) = Rig::new(lang, "unit") else {
        return;
    };
    let systemd_path = rig.env.path("systemd-notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&systemd_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut seen = String::new();
    // Reads what rdaemon told "systemd" until `want` appears.
    let wait_for = |want: &str, seen: &mut String| {
        let got = poll_until(DEADLINE, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = systemd.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
            seen.contains(want).then_some(())
        });
        assert!(got.is_some(), "no {want:?} from rdaemon; got {seen:?}");
    };

    let mut cmd = rig.env.cmd();
    cmd.env("NOTIFY_SOCKET", &systemd_path)
        .args(["--foreground", "--name", &rig.name])
        .args(rig.peer_opts())
        .arg("--")
        .args(&rig.worker)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut rdaemon = cmd.spawn().unwrap();
    let rdaemon_pid = rdaemon.id() as i32;

    wait_for("READY=1", &mut seen);
    assert_eq!(rig.env.check(&rig.name), 0, "{}", rig.diag());
    // The worker watches its tube before it says READY=1.
    assert_eq!(rig.count("current-watching"), 1, "{}", rig.diag());
    let ids = rig.put(20, 5);
    rig.wait_processed(ids.len(), |_, _| {});
    rig.assert_each_once(&ids);
    wait_for("STATUS=processed 20 jobs", &mut seen);

    let worker = rig.workers();
    assert_eq!(worker.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rdaemon_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = poll_until(DEADLINE, || rdaemon.try_wait().unwrap());
    let Some(status) = status else {
        let _ = rdaemon.kill();
        panic!("rdaemon still runs after SIGTERM\n{}", rig.diag());
    };
    assert_eq!(status.code(), Some(0), "{}", rig.diag());
    assert!(!alive(worker[0]));
    assert!(
        read(&rig.log).contains("stopping after 20 jobs, exit 0"),
        "{}",
        rig.diag()
    );
    assert_eq!(rig.env.check(&rig.name), 3);
}

#[test]
fn php_under_systemd_type_notify() {
    under_systemd_type_notify(Lang::Php);
}

#[test]
fn python_under_systemd_type_notify() {
    under_systemd_type_notify(Lang::Python);
}
