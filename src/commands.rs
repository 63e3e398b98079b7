//! What each mode of the `rdaemon` binary does: turn parsed arguments into
//! library calls, print, and pick the exit status. The binary's `main` only
//! parses and calls [`run`].

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::cli::Cli;
use crate::exit_code::ExitCode;
use crate::inspect::{self, Health};
use crate::piddir::{PidDir, default_pid_dir};
use crate::supervisor::{
    self, ChildSpec, Config, Finish, Identity, OutputChoice, Readiness, StartOutcome,
    respawn::RespawnLimits,
};

/// Runs the mode `cli` selects and returns the exit status.
pub fn run(cli: Cli) -> ExitCode {
    let modes = [&cli.name, &cli.check, &cli.status, &cli.stop]
        .iter()
        .filter(|m| m.is_some())
        .count();
    if modes > 1 {
        return fail(
            ExitCode::Usage,
            "use only one of --name, --check, --status and --stop",
        );
    }
    if let Some(name) = cli.name.clone() {
        start(cli, &name)
    } else if let Some(name) = &cli.check {
        check(&cli, name)
    } else if let Some(name) = &cli.status {
        status(&cli, name)
    } else if let Some(name) = &cli.stop {
        stop(&cli, name)
    } else {
        fail(
            ExitCode::Usage,
            "one of --name, --check, --status or --stop is required",
        )
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

fn start(cli: Cli, name: &str) -> ExitCode {
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
    let dir = absolute(&pid_dir(&cli));
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
        cluster: None,
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
        Health::Stale => ExitCode::Stale,
        Health::NotRunning => ExitCode::NotRunning,
        Health::Unknown => ExitCode::Unknown,
    }
}

fn check(cli: &Cli, name: &str) -> ExitCode {
    match inspect::check(&pid_dir(cli), name, cli.min_peers, cli.max_age) {
        Ok(r) => {
            if cli.verbose {
                let _ = writeln!(std::io::stdout(), "{}", r.summary);
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

fn status(cli: &Cli, name: &str) -> ExitCode {
    let scan = match inspect::status(&pid_dir(cli), name) {
        Ok(s) => s,
        Err(e) if e.kind() == crate::ErrorKind::Usage => {
            return fail(ExitCode::Usage, &e.to_string());
        }
        Err(e) => return fail(ExitCode::Unknown, &e.to_string()),
    };
    let text = if cli.json {
        inspect::to_json(&scan.slots) + "\n"
    } else {
        inspect::to_text(name, &scan.slots)
    };
    // A closed stdout (`rdaemon --status x | true`) is not an error worth a
    // panic; the exit status still tells.
    let _ = std::io::stdout().write_all(text.as_bytes());
    health_code(inspect::judge(name, &scan.slots, 1, None).health)
}

fn stop(cli: &Cli, name: &str) -> ExitCode {
    let outcomes = match inspect::stop(&pid_dir(cli), name, cli.timeout) {
        Ok(o) => o,
        Err(e) if e.kind() == crate::ErrorKind::Usage => {
            return fail(ExitCode::Usage, &e.to_string());
        }
        Err(e) => return fail(ExitCode::Failure, &e.to_string()),
    };
    let mut code = ExitCode::Success;
    for o in outcomes.iter().filter(|o| !o.stopped) {
        code = ExitCode::Failure;
        let _ = writeln!(
            std::io::stderr(),
            "rdaemon: {name} slot {} ({}): {}",
            o.slot,
            o.pid_file.display(),
            o.problem.as_deref().unwrap_or("not stopped")
        );
    }
    code
}
