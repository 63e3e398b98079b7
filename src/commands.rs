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
    self, ChildSpec, Config, Identity, OutputChoice, Readiness, respawn::RespawnLimits,
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
    fn report(&mut self, code: ExitCode, message: &str) {
        report_start(code, message, self.quiet);
    }
}

fn report_start(code: ExitCode, message: &str, quiet: bool) {
    if code != ExitCode::Success && !(quiet && code == ExitCode::Busy) && !message.is_empty() {
        let _ = writeln!(std::io::stderr(), "rdaemon: {message}");
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
    let cluster = match cluster_config(&cli) {
        Ok(c) => c,
        Err(msg) => return fail(ExitCode::Usage, &msg),
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
        cluster,
    };
    if cli.foreground {
        return supervisor::run(cfg, &mut ForegroundReady { quiet: cli.quiet });
    }
    match crate::detach::detach(move |ready| supervisor::run(cfg, ready)) {
        Ok(outcome) => {
            report_start(outcome.code, &outcome.message, cli.quiet);
            outcome.code
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
    let (code, why) = match crate::etcd::fleet::check(endpoints, name, cli.min_peers) {
        Ok((health, summary)) => (health_code(health), summary),
        Err(e) => (ExitCode::Unknown, e),
    };
    if cli.verbose {
        let _ = writeln!(std::io::stdout(), "{why}");
    }
    code
}

fn fleet_status(cli: &Cli, name: &str, endpoints: &[String]) -> ExitCode {
    use crate::etcd::fleet::Format;
    if let Err(e) = crate::name::validate(name) {
        return fail(ExitCode::Usage, &e.to_string());
    }
    let format = if cli.json { Format::Json } else { Format::Text };
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
    let endpoints = etcd_endpoints(cli);
    if !endpoints.is_empty() {
        return fleet_status(cli, name, &endpoints);
    }
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
