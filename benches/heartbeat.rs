//! Library benchmarks: what a program that links rdaemon pays.
//!
//! Run with `cargo bench --bench heartbeat`. `benches/compare.sh` runs it as
//! part of the side-by-side suite and copies the `heartbeat` median into
//! BENCHMARKS.md (target: at most 20 ns per call).
//!
//! - `heartbeat`: `Daemon::heartbeat()` on a started daemon, amortized over
//!   many calls. Most calls are an atomic load and a read of the coarse
//!   monotonic clock; about once a second one of them also re-verifies the
//!   PID file and touches its mtime, and that cost is included, spread over
//!   the calls around it, exactly as a work loop would see it.
//! - `heartbeat_limits`: the same with a memory ceiling and a job limit set:
//!   every 64 to 1024 calls (1024 while memory stays flat, as here) one of
//!   them also asks `getrusage` for the peak RSS (and reads
//!   `/proc/self/statm` only once the peak passed the ceiling, which a
//!   benchmark that keeps running never reaches).
//! - `start_stop`: take a slot (create, lock, write the PID and state files)
//!   and release it again (no fork in between, so no `/proc` walk for
//!   children sharing the lock).
//! - `check`: the in-process cost of `inspect::check`, the probe behind
//!   `rdaemon --check`, over 1 and over 1024 held slots (no process start:
//!   compare with `compare.sh`'s `--check` rows to see what exec and
//!   start-up add).
//!
//! Everything lives in a fresh temporary PID directory, and every slot taken
//! is released before the benchmark returns. These are benchmarks, not
//! tests: nothing here asserts a time.

use std::path::Path;

use divan::Bencher;
use rdaemon::Daemon;

fn main() {
    divan::main();
}

fn temp_pid_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rdaemon-bench-")
        .tempdir()
        .expect("create a temporary PID directory")
}

fn started(name: &str, max_peers: u32, pid_dir: &Path) -> Daemon {
    let mut d = Daemon::builder(name)
        .max_peers(max_peers)
        .pid_dir(pid_dir.join("pids"))
        .handle_signals(false)
        .build()
        .expect("valid configuration");
    d.start().expect("take a slot");
    d
}

/// `heartbeat()` on a started daemon, in ns per call.
#[divan::bench(sample_count = 200, sample_size = 100_000)]
fn heartbeat(bencher: Bencher) {
    let tmp = temp_pid_dir();
    let mut d = started("bench-heartbeat", 1, tmp.path());
    bencher.bench_local(|| divan::black_box(d.heartbeat()));
    d.stop().expect("release the slot");
}

/// `heartbeat()` with a (never reached) memory ceiling and job limit, in
/// ns per call.
#[divan::bench(sample_count = 200, sample_size = 100_000)]
fn heartbeat_limits(bencher: Bencher) {
    let tmp = temp_pid_dir();
    let mut d = Daemon::builder("bench-limits")
        .pid_dir(tmp.path().join("pids"))
        .handle_signals(false)
        .memory_limit(1 << 40)
        .max_jobs(u64::MAX)
        .build()
        .expect("valid configuration");
    d.start().expect("take a slot");
    bencher.bench_local(|| divan::black_box(d.heartbeat()));
    d.stop().expect("release the slot");
}

/// `start()` followed by `stop()`: take a free slot and release it.
#[divan::bench(sample_count = 200)]
fn start_stop(bencher: Bencher) {
    let tmp = temp_pid_dir();
    let mut d = Daemon::builder("bench-start")
        .pid_dir(tmp.path().join("pids"))
        .build()
        .expect("valid configuration");
    bencher.bench_local(|| {
        d.start().expect("take a slot");
        d.stop().expect("release the slot");
    });
}

/// `inspect::check` (what `rdaemon --check NAME --min-peers N` runs after
/// parsing its arguments) with N slots held by this process.
#[divan::bench(args = [1, 1024], sample_count = 50)]
fn check(bencher: Bencher, peers: u32) {
    let tmp = temp_pid_dir();
    let daemons: Vec<Daemon> = (0..peers)
        .map(|_| started("bench-check", peers, tmp.path()))
        .collect();
    let dir = tmp.path().join("pids");
    let first = rdaemon::inspect::check(&dir, "bench-check", peers, None).expect("check runs");
    assert_eq!(
        first.health,
        rdaemon::inspect::Health::Healthy,
        "{}",
        first.summary
    );
    bencher.bench_local(|| {
        rdaemon::inspect::check(&dir, "bench-check", peers, None).expect("check runs")
    });
    drop(daemons);
}
