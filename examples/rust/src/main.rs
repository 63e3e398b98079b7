//! A queue worker that is its own daemon: it holds one of
//! `example-worker`'s slots (so at most `--max-peers` copies run, and
//! `rdaemon --check/--status/--stop example-worker` see it), works on two
//! threads, and stops cleanly on SIGTERM, SIGINT, SIGQUIT or after
//! `--max-jobs` jobs. SIGHUP is kept for the program (here: counted as a
//! reload request), not a stop.
//!
//! ```text
//! example-worker [--max-peers N] [--max-jobs N]
//! ```
//!
//! The PID directory is rdaemon's default (`$RDAEMON_PID_DIR`, ...), so the
//! `rdaemon` command finds it. Exit status: 0 after a clean stop, 75 when
//! every slot is busy, 2 for bad arguments, 1 for anything else.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use rdaemon::{Daemon, ErrorKind, StopReason};

struct Args {
    max_peers: u32,
    max_jobs: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        max_peers: 1,
        max_jobs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: not a number: {value}");
        match flag.as_str() {
            "--max-peers" => args.max_peers = value.parse().map_err(bad)?,
            "--max-jobs" => args.max_jobs = Some(value.parse().map_err(bad)?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("example-worker: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(reason) => {
            println!("stopping: {reason}");
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == ErrorKind::Busy => {
            eprintln!("example-worker: {e}");
            ExitCode::from(75)
        }
        Err(e) => {
            eprintln!("example-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> rdaemon::Result<StopReason> {
    let mut builder = Daemon::builder("example-worker")
        .max_peers(args.max_peers)
        .lease(Duration::from_secs(5))
        // SIGHUP is not among them: it stays ours.
        .stop_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGQUIT]);
    if let Some(jobs) = args.max_jobs {
        builder = builder.max_jobs(jobs);
    }
    let mut daemon = builder.build()?;
    // SIGHUP: "reload the configuration", the program's own business.
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGHUP, Arc::clone(&reload)).map_err(|e| {
        rdaemon::Error::Sys {
            op: "install the SIGHUP handler",
            source: e,
        }
    })?;
    daemon.start()?;
    println!("started in slot {}", daemon.slot().unwrap_or(0));

    // Worker threads share the stop through tokens, not the Daemon.
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = daemon.stop_token();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                // One "job" every 10 ms until a stop is due.
                while !stop.wait_timeout(Duration::from_millis(10)) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    daemon.notify_ready()?;
    // The main thread keeps the slot: one heartbeat per job finished (at
    // least one per round, so an idle worker still proves it is alive;
    // --max-jobs counts those too).
    let stop = daemon.stop_token();
    let mut seen = 0;
    let mut reloads = 0;
    loop {
        let now = done.load(Ordering::Relaxed);
        if !(0..(now - seen).max(1)).all(|_| daemon.heartbeat()) {
            break;
        }
        seen = now;
        if reload.swap(false, Ordering::Relaxed) {
            reloads += 1;
            println!("reloading the configuration");
        }
        daemon.notify_status(&format!("{seen} jobs done, {reloads} reloads"))?;
        // Sleeps, but wakes at once on a stop signal.
        stop.wait_timeout(Duration::from_millis(100));
    }
    // Whatever stopped the loop (a signal, the job limit, a lost slot) the
    // tokens see too: the workers are finishing their last job.
    for w in workers {
        let _ = w.join();
    }
    let reason = daemon
        .stop_reason()
        .cloned()
        .unwrap_or(StopReason::Requested);
    daemon.stop()?;
    Ok(reason)
}
