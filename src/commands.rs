//! What each mode of the `rdaemon` binary does: turn parsed arguments into
//! library calls, print, and pick the exit status. The binary's `main` only
//! parses and calls [`run`].

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::cli::{Cli, Format, Mode};
use crate::exit_code::ExitCode;
use crate::inspect::{self, Health};
use crate::piddir::{PidDir, default_pid_dir};
use crate::supervisor::{
    self, ChildSpec, Config, Finish, Identity, OutputChoice, Readiness, StartOutcome,
    respawn::RespawnLimits,
};

/// Runs the mode `cli` selects and returns the exit status. `cli` comes
/// from [`Cli::try_parse`], which refused every word and option the
/// mode would not use.
pub fn run(cli: Cli) -> ExitCode {
    match cli.mode() {
        Mode::Start(name) => match cli.min_peers {
            Some(k) => ensure_peers(cli, &name, k),
            None => start(&cli, &name),
        },
        Mode::Check(name) => check(&cli, &name),
        Mode::Status(name) => status(&cli, name.as_deref()),
        Mode::Stop(name) => stop(&cli, &name),
        Mode::Restart(name) => restart(&cli, &name),
        Mode::ListNames => list_names(&cli),
    }
}

fn fail(code: ExitCode, msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "rdaemon: {msg}");
    code
}

fn pid_dir(cli: &Cli) -> PathBuf {
    cli.pid_dir.clone().unwrap_or_else(default_pid_dir)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Prints the start outcome in the foreground, where there is no pipe.
struct ForegroundReady {
    quiet: bool,
}

impl Readiness for ForegroundReady {
    fn report(&mut self, outcome: &StartOutcome) {
        report_start(outcome, self.quiet);
    }
}

/// The exit status for the outcome of a start.
fn start_code(outcome: &StartOutcome) -> ExitCode {
    match outcome {
        StartOutcome::Started => ExitCode::Success,
        StartOutcome::Busy(_) => ExitCode::Busy,
        StartOutcome::Usage(_) => ExitCode::Usage,
        StartOutcome::ExecFailed { errno, .. } => ExitCode::for_exec_errno(*errno),
        StartOutcome::Exited { .. } | StartOutcome::Failed(_) => ExitCode::Failure,
    }
}

/// The exit status of a supervisor that ran in the foreground (and of the
/// detached supervisor process itself).
fn finish_code(finish: &Finish) -> ExitCode {
    match finish {
        Finish::Stopped => ExitCode::Success,
        Finish::CommandExited(status) | Finish::GaveUp(status) => {
            ExitCode::Command(status.number() as u8)
        }
        Finish::StartFailed(outcome) => start_code(outcome),
        Finish::Failed => ExitCode::Failure,
    }
}

fn report_start(outcome: &StartOutcome, quiet: bool) {
    let quiet = quiet && matches!(outcome, StartOutcome::Busy(_));
    if !quiet && !outcome.message().is_empty() {
        let _ = writeln!(std::io::stderr(), "rdaemon: {}", outcome.message());
    }
}

fn start(cli: &Cli, name: &str) -> ExitCode {
    if let Err(e) = crate::name::validate(name) {
        return fail(ExitCode::Usage, &e.to_string());
    }
    if cli.command.is_empty() {
        return fail(
            ExitCode::Usage,
            "missing COMMAND: rdaemon --name NAME [OPTIONS] -- COMMAND [ARG]...",
        );
    }
    let identity = match &cli.user {
        None => None,
        Some(_) if !nix::unistd::geteuid().is_root() => {
            return fail(ExitCode::Failure, "--user needs root privileges");
        }
        Some(spec) => match Identity::resolve(spec) {
            Ok(id) => Some(id),
            Err(e) => return fail(ExitCode::Failure, &e),
        },
    };
    let cluster = match cluster_config(cli) {
        Ok(c) => c,
        Err(msg) => return fail(ExitCode::Usage, &msg),
    };
    let dir = absolute(&pid_dir(cli));
    // Vet (and create) the directory here, so that an unsafe one is reported
    // directly rather than through the supervisor.
    if let Err(e) = PidDir::open_or_create(&dir) {
        return fail(ExitCode::Failure, &e.to_string());
    }
    let output = if let Some(log) = &cli.log {
        OutputChoice::Log(absolute(log))
    } else if cli.syslog {
        OutputChoice::Syslog(cli.syslog_socket.clone())
    } else if cli.foreground {
        OutputChoice::Inherit
    } else if is_socket(&cli.syslog_socket) {
        // Detached with no choice made: syslog where there is one, so output
        // is never silently lost...
        OutputChoice::Syslog(cli.syslog_socket.clone())
    } else {
        // ...and a log file beside the slot files where there is none
        // (containers, minimal systems).
        OutputChoice::Log(dir.join(format!("{name}.log")))
    };
    let cfg = Config {
        name: name.to_string(),
        max_peers: cli.max_peers,
        pid_dir: dir,
        child: ChildSpec {
            argv: cli.command.clone(),
            env: cli.env.clone(),
            chdir: cli.chdir.as_deref().map(absolute),
            umask: cli.umask,
            identity,
        },
        stop_timeout: cli.stop_timeout,
        respawn: cli.respawn.then_some(RespawnLimits {
            max_respawns: cli.max_respawns,
            window: cli.respawn_window,
            first_delay: cli.respawn_delay,
        }),
        finished_exit_codes: cli.exit_codes.clone(),
        memory_limit: cli.memory_limit,
        output,
        heartbeat_interval: cli.heartbeat_interval,
        notify: cli.notify,
        ready_timeout: cli.ready_timeout,
        watchdog: cli.watchdog,
        // Under systemd Type=notify (foreground only), pass READY=1 up.
        upstream_notify: if cli.foreground {
            std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty())
        } else {
            None
        },
        min_uptime: cli.min_uptime,
        recycle_codes: cli.recycle_codes.clone(),
        forking: cli.forking,
        pidfile: cli.pidfile.as_deref().map(absolute),
        timestamps: cli.timestamps,
        cluster,
        foreground: cli.foreground,
    };
    if cli.foreground {
        return finish_code(&supervisor::run(
            cfg,
            &mut ForegroundReady { quiet: cli.quiet },
        ));
    }
    match crate::detach::detach(move |ready| i32::from(finish_code(&supervisor::run(cfg, ready)))) {
        Ok(outcome) => {
            report_start(&outcome, cli.quiet);
            start_code(&outcome)
        }
        Err(e) => fail(ExitCode::Failure, &format!("cannot detach: {e}")),
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

fn health_code(h: Health) -> ExitCode {
    match h {
        Health::Healthy => ExitCode::Success,
        Health::Unhealthy => ExitCode::Unhealthy,
        Health::Stale | Health::Failed => ExitCode::Stale,
        Health::NotRunning => ExitCode::NotRunning,
        _ => ExitCode::Unknown,
    }
}

/// `--min-peers K` on a start: start only the peers that are missing, one
/// start (its own detach, its own slot) after another. Slots bound how
/// many run, so concurrent runs of the same line never exceed N; a run
/// that finds the last slots taken by a concurrent one looks again.
fn ensure_peers(cli: Cli, name: &str, k: u32) -> ExitCode {
    if let Err(e) = crate::name::validate(name) {
        return fail(ExitCode::Usage, &e.to_string());
    }
    if k > cli.max_peers {
        return fail(
            ExitCode::Usage,
            &format!(
                "--min-peers {k} exceeds --max-peers {}: at most {} peers of {name} may run",
                cli.max_peers, cli.max_peers
            ),
        );
    }
    if cli.foreground {
        return fail(
            ExitCode::Usage,
            "--min-peers starts peers detached; it cannot be combined with --foreground",
        );
    }
    let dir = pid_dir(&cli);
    let running = |dir: &Path| -> std::result::Result<inspect::CheckResult, ExitCode> {
        match inspect::check(dir, name, k, None) {
            Ok(r) if r.health == Health::Unknown => Err(fail(ExitCode::Failure, &r.summary)),
            Ok(r) => Ok(r),
            Err(e) => Err(fail(ExitCode::for_start_error(&e), &e.to_string())),
        }
    };
    let count = |r: &inspect::CheckResult| r.running;
    let before = match running(&dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let missing = k.saturating_sub(count(&before));
    let mut first_failure: Option<ExitCode> = None;
    for _ in 0..missing {
        let code = start(&cli, name);
        if code != ExitCode::Success {
            first_failure = Some(code);
            break;
        }
    }
    // Peers that a concurrent run (or this one) started may still be
    // starting: give them until their readiness deadline before judging.
    let patience = if cli.notify || cli.forking {
        cli.ready_timeout
    } else {
        std::time::Duration::ZERO
    } + std::time::Duration::from_secs(5);
    let deadline = std::time::Instant::now() + patience;
    let after = loop {
        let after = match running(&dir) {
            Ok(r) => r,
            Err(code) => return code,
        };
        if count(&after) >= k || after.starting == 0 || std::time::Instant::now() >= deadline {
            break after;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if count(&after) >= k {
        return ExitCode::Success;
    }
    // Fewer than K run although this run did what it could: real trouble
    // (a crash loop holding the slots, a peer that died at once), reported
    // even with --quiet, which only silences the harmless race for the
    // last slot. The status is the failed start's, else 1.
    let _ = writeln!(std::io::stderr(), "rdaemon: {}", after.summary);
    for r in &after.reasons {
        let _ = writeln!(std::io::stderr(), "rdaemon: {name}: {r}");
    }
    first_failure.unwrap_or(ExitCode::Failure)
}

// --- Fleet-wide slots (etcd; src/etcd) ---

/// The endpoints from `--etcd`/`RDAEMON_ETCD`, empty ones dropped.
fn etcd_endpoints(cli: &Cli) -> Vec<String> {
    cli.etcd
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// `--cluster-max-peers` and co. for a start, vetted; `Err` is a usage
/// error.
fn cluster_config(cli: &Cli) -> Result<Option<crate::etcd::ClusterConfig>, String> {
    let endpoints = etcd_endpoints(cli);
    let Some(max_peers) = cli.cluster_max_peers else {
        // RDAEMON_ETCD in the environment is for --check/--status; an
        // explicit --etcd on a start without M is a mistake.
        if !endpoints.is_empty() && std::env::var_os("RDAEMON_ETCD").is_none() {
            return Err("--etcd on a start needs --cluster-max-peers M".into());
        }
        return Ok(None);
    };
    if endpoints.is_empty() {
        return Err("--cluster-max-peers needs --etcd URL (or RDAEMON_ETCD)".into());
    }
    let lease_ttl = std::time::Duration::from_secs(cli.lease_ttl);
    crate::etcd::check_stop_timeout(cli.stop_timeout, lease_ttl)?;
    Ok(Some(crate::etcd::ClusterConfig {
        endpoints,
        max_peers,
        lease_ttl,
    }))
}

fn fleet_check(cli: &Cli, name: &str, endpoints: &[String]) -> ExitCode {
    if let Err(e) = crate::name::validate(name) {
        return fail(ExitCode::Usage, &e.to_string());
    }
    if cli.max_age.is_some() {
        return fail(
            ExitCode::Usage,
            "--max-age is about local heartbeats: use it without --etcd",
        );
    }
    let k = cli.min_peers.unwrap_or(1);
    let (code, why) = match crate::etcd::fleet::check(endpoints, name, k) {
        Ok((health, summary)) => (health_code(health), summary),
        Err(e) => (ExitCode::Unknown, e),
    };
    if cli.verbose {
        let _ = writeln!(std::io::stdout(), "{why}");
    }
    code
}

fn fleet_status(cli: &Cli, name: Option<&str>, endpoints: &[String]) -> ExitCode {
    use crate::etcd::fleet::Format as FleetFormat;
    let Some(name) = name else {
        return fail(
            ExitCode::Usage,
            "--status --etcd needs a NAME: etcd holds fleet-wide slots per name",
        );
    };
    if let Err(e) = crate::name::validate(name) {
        return fail(ExitCode::Usage, &e.to_string());
    }
    let format = match cli.format() {
        Format::Json => FleetFormat::Json,
        Format::Prometheus => FleetFormat::Prometheus,
        Format::Text => FleetFormat::Text,
    };
    match crate::etcd::fleet::status(endpoints, name, format) {
        Ok((health, text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            health_code(health)
        }
        Err(e) => fail(ExitCode::Unknown, &e),
    }
}

// --- end of fleet-wide slots ---

fn check(cli: &Cli, name: &str) -> ExitCode {
    let endpoints = etcd_endpoints(cli);
    if !endpoints.is_empty() {
        return fleet_check(cli, name, &endpoints);
    }
    let k = cli.min_peers.unwrap_or(1);
    match inspect::check(&pid_dir(cli), name, k, cli.max_age) {
        Ok(r) => {
            if cli.verbose {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", r.summary);
                for reason in &r.reasons {
                    let _ = writeln!(out, "  {reason}");
                }
            }
            health_code(r.health)
        }
        Err(e) if e.kind() == crate::ErrorKind::Usage => fail(ExitCode::Usage, &e.to_string()),
        Err(e) => {
            if cli.verbose {
                let _ = writeln!(std::io::stdout(), "{e}");
            }
            ExitCode::Unknown
        }
    }
}

fn status(cli: &Cli, name: Option<&str>) -> ExitCode {
    let endpoints = etcd_endpoints(cli);
    if !endpoints.is_empty() {
        return fleet_status(cli, name, &endpoints);
    }
    let format = cli.format();
    let memory = format == Format::Prometheus;
    let scan = match name {
        Some(name) => inspect::status(&pid_dir(cli), name, memory),
        None => inspect::status_all(&pid_dir(cli), memory),
    };
    let scan = match scan {
        Ok(s) => s,
        Err(e) if e.kind() == crate::ErrorKind::Usage => {
            return fail(ExitCode::Usage, &e.to_string());
        }
        Err(e) => return fail(ExitCode::Unknown, &e.to_string()),
    };
    let text = match format {
        Format::Json => inspect::to_json(&scan.slots) + "\n",
        Format::Prometheus => inspect::to_prometheus(&scan.slots),
        Format::Text if scan.slots.is_empty() => match name {
            Some(name) => format!("{name}: no slot files in {}\n", pid_dir(cli).display()),
            None => format!("no slot files in {}\n", pid_dir(cli).display()),
        },
        Format::Text => inspect::to_text(&scan.slots, name.is_none()),
    };
    // A closed stdout (`rdaemon --status x | true`) is not an error worth a
    // panic; the exit status still tells.
    let _ = std::io::stdout().write_all(text.as_bytes());
    match name {
        Some(name) => health_code(inspect::judge(name, &scan.slots, 1, None).health),
        None => health_code(inspect::judge_all(&scan.slots)),
    }
}

fn stop(cli: &Cli, name: &str) -> ExitCode {
    let outcomes = match inspect::stop(&pid_dir(cli), name, cli.slot, cli.timeout) {
        Ok(o) => o,
        Err(e) if e.kind() == crate::ErrorKind::Usage => {
            return fail(ExitCode::Usage, &e.to_string());
        }
        Err(e) => return fail(ExitCode::Failure, &e.to_string()),
    };
    let mut code = ExitCode::Success;
    let mut err = std::io::stderr().lock();
    for o in &outcomes {
        // A SIGKILL is always reported: it may have cut a job short.
        if !o.killed.is_empty() {
            let _ = writeln!(
                err,
                "rdaemon: {name} slot {}: still running {:.1}s after SIGTERM; sent SIGKILL to PID(s) {}{}",
                o.slot,
                o.grace.as_secs_f64(),
                inspect::join_pids(&o.killed),
                if o.kill_logged {
                    " (also written to its log)"
                } else {
                    ""
                }
            );
        }
        if !o.stopped {
            code = ExitCode::Failure;
            let _ = writeln!(
                err,
                "rdaemon: {name} slot {} ({}): {}",
                o.slot,
                o.pid_file.display(),
                o.problem.as_deref().unwrap_or("not stopped")
            );
        } else if cli.verbose {
            let _ = writeln!(std::io::stdout(), "{name} slot {}: stopped", o.slot);
        }
    }
    code
}

fn restart(cli: &Cli, name: &str) -> ExitCode {
    let verbose = cli.verbose;
    let report = |o: &inspect::RestartOutcome| {
        if o.restarted {
            if verbose {
                let _ = writeln!(
                    std::io::stdout(),
                    "{name} slot {}: restarted{}",
                    o.slot,
                    o.child_pid
                        .map(|p| format!(", COMMAND is PID {p}"))
                        .unwrap_or_default()
                );
            }
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "rdaemon: {name} slot {}{}: {}",
                o.slot,
                if o.skipped {
                    " skipped"
                } else if o.attempted {
                    " failed to come up"
                } else {
                    ""
                },
                o.problem.as_deref().unwrap_or("not restarted")
            );
        }
    };
    match inspect::restart(&pid_dir(cli), name, cli.slot, cli.timeout, report) {
        Ok(outcomes) if outcomes.is_empty() => fail(
            ExitCode::Failure,
            &format!("{name}: no peer runs; nothing to restart"),
        ),
        Ok(outcomes) if outcomes.iter().all(|o| o.restarted) => ExitCode::Success,
        Ok(_) => ExitCode::Failure,
        Err(e) if e.kind() == crate::ErrorKind::Usage => fail(ExitCode::Usage, &e.to_string()),
        Err(e) => fail(ExitCode::Failure, &e.to_string()),
    }
}

/// `--list-names`: one NAME per line, for shell completion.
fn list_names(cli: &Cli) -> ExitCode {
    match inspect::names(&pid_dir(cli)) {
        Ok(names) => {
            let mut out = std::io::stdout().lock();
            for n in names {
                let _ = writeln!(out, "{n}");
            }
            ExitCode::Success
        }
        Err(e) => fail(ExitCode::Unknown, &e.to_string()),
    }
}
