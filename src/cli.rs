//! The command-line interface definition. Doc comments here become `--help`,
//! the man page (man/rdaemon.1) and the shell completions.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{ArgGroup, Parser};

/// Turn any program into a well-behaved Unix daemon.
///
/// Start COMMAND detached under a supervisor that holds one of NAME's slots
/// (a PID file locked with flock for the supervisor's whole life), returning
/// only once COMMAND has been executed; or check, show or stop NAME's peers.
#[derive(Debug, Parser)]
#[command(
    name = "rdaemon",
    version,
    override_usage = "rdaemon --name NAME [OPTIONS] -- COMMAND [ARG]...\n       \
                      rdaemon --check NAME [--min-peers K] [--max-age SECS] [--pid-dir DIR]\n       \
                      rdaemon --status NAME [--json] [--pid-dir DIR]\n       \
                      rdaemon --stop NAME [--timeout SECS] [--pid-dir DIR]\n       \
                      rdaemon --name NAME --etcd URL[,URL...] --cluster-max-peers M [OPTIONS] -- COMMAND [ARG]...\n       \
                      rdaemon --check NAME --etcd URL[,URL...] [--min-peers K]\n       \
                      rdaemon --status NAME --etcd URL[,URL...] [--json]",
    // `multiple(true)`: with exclusive group members clap would consider a
    // `requires = "status"` satisfied by a conflicting `--check`; mode
    // exclusivity is checked in `commands::run` instead.
    group(ArgGroup::new("mode").required(true).multiple(true).args(["name", "check", "status", "stop"])),
    after_help = "Exit status: 0 started/healthy/stopped; 1 failure (or a stale PID file, for --check); \
                  2 usage error; 3 not running; 4 cannot tell; 75 every slot busy; \
                  126 COMMAND not executable; 127 COMMAND not found; 150 running but unhealthy."
)]
pub struct Cli {
    /// Start COMMAND as a peer of NAME
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub name: Option<String>,

    /// Exit 0 if NAME runs (LSB status codes; for cron watchdogs)
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub check: Option<String>,

    /// Show NAME's slots: state, PID, child PID, uptime, heartbeat age, restarts
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub status: Option<String>,

    /// Stop every peer of NAME (SIGTERM, then SIGKILL after --timeout)
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub stop: Option<String>,

    /// Directory of the slot files [default: $RDAEMON_PID_DIR, /run/rdaemon for root,
    /// $XDG_RUNTIME_DIR/rdaemon, /tmp/rdaemon-$UID]
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,

    /// How many copies of NAME may run at once
    #[arg(long, value_name = "N", default_value_t = 1, requires = "name", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slot::MAX_SLOTS)))]
    pub max_peers: u32,

    /// Do not detach: stay in the foreground (systemd Type=simple, containers)
    ///
    /// Exits with COMMAND's status (128+N when a signal N that rdaemon did not
    /// send killed it), or 0 when rdaemon stopped COMMAND on request.
    #[arg(short = 'f', long, requires = "name")]
    pub foreground: bool,

    /// Grace between SIGTERM and SIGKILL when stopping COMMAND [default: 10;
    /// 4 with --cluster-max-peers, which allows at most --lease-ttl/2 minus a margin]
    #[arg(long, value_name = "SECS", default_value = "10", default_value_if("cluster_max_peers", clap::builder::ArgPredicate::IsPresent, Some("4")), hide_default_value = true, requires = "name", value_parser = parse_secs)]
    pub stop_timeout: Duration,

    /// Restart COMMAND when it exits on its own
    #[arg(long, requires = "name", help_heading = "Respawning")]
    pub respawn: bool,

    /// Give up after N restarts within --respawn-window
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        requires = "respawn",
        help_heading = "Respawning"
    )]
    pub max_respawns: u32,

    /// The window for --max-respawns
    #[arg(long, value_name = "SECS", default_value = "60", requires = "respawn", value_parser = parse_positive_secs, help_heading = "Respawning")]
    pub respawn_window: Duration,

    /// First pause before a restart; doubles up to 60s, and resets once
    /// COMMAND stayed up for a whole window
    #[arg(long, value_name = "SECS", default_value = "1", requires = "respawn", value_parser = parse_secs, help_heading = "Respawning")]
    pub respawn_delay: Duration,

    /// Exit statuses that mean COMMAND finished its work: not restarted
    /// (supervisord's exitcodes= with autorestart=unexpected), e.g. 0 or 0,3
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "respawn", value_parser = clap::value_parser!(i32).range(0..=255), help_heading = "Respawning")]
    pub exit_codes: Vec<i32>,

    /// A run of COMMAND shorter than SECS is a failed run (back-off, counted
    /// toward --max-respawns); an exit after a longer run is a planned
    /// recycle: restarted at once, never counted
    #[arg(long, value_name = "SECS", default_value = "10", requires = "name", value_parser = parse_secs, help_heading = "Respawning")]
    pub min_uptime: Duration,

    /// Exit statuses that are always planned recycles, restarted at once
    /// (e.g. 12, Laravel's memory-limit exit)
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "respawn", value_parser = clap::value_parser!(i32).range(0..=255), help_heading = "Respawning")]
    pub recycle_codes: Vec<i32>,

    /// COMMAND daemonizes itself (forks and lets its first process exit):
    /// supervise the process it leaves behind
    #[arg(long, requires = "name")]
    pub forking: bool,

    /// With --forking: the PID file COMMAND writes, naming its main process
    /// (trusted only for a descendant of the supervisor)
    #[arg(long, value_name = "FILE", requires = "forking")]
    pub pidfile: Option<PathBuf>,

    /// Stop COMMAND gracefully when its process tree's resident memory exceeds
    /// SIZE (512K, 64M, 2G); with --respawn, start it afresh
    #[arg(long, value_name = "SIZE", requires = "name", value_parser = crate::size::parse_size)]
    pub memory_limit: Option<u64>,

    /// Append COMMAND's stdout and stderr, and rdaemon's events, to FILE
    /// (created 0640; reopened when rotated away)
    #[arg(
        long,
        value_name = "FILE",
        requires = "name",
        conflicts_with = "syslog",
        help_heading = "Output"
    )]
    pub log: Option<PathBuf>,

    /// Send COMMAND's output and rdaemon's events to syslog, tagged NAME
    /// (stdout at info, stderr at err, events at notice; facility daemon)
    #[arg(long, requires = "name", help_heading = "Output")]
    pub syslog: bool,

    /// Prefix every line in --log with an RFC 3339 UTC timestamp
    /// (milliseconds) and the slot: `2026-11-29T12:00:00.123Z NAME.2: text`
    #[arg(long, requires = "name", help_heading = "Output")]
    pub timestamps: bool,

    /// The syslog socket
    #[arg(long, value_name = "PATH", default_value = crate::output::DEFAULT_SYSLOG_SOCKET, help_heading = "Output")]
    pub syslog_socket: PathBuf,

    /// Run COMMAND in DIR [default: / when detached, the current directory with --foreground]
    #[arg(
        long,
        value_name = "DIR",
        requires = "name",
        help_heading = "Environment"
    )]
    pub chdir: Option<PathBuf>,

    /// File mode creation mask for COMMAND, in octal (e.g. 027)
    #[arg(long, value_name = "MODE", requires = "name", value_parser = parse_umask, help_heading = "Environment")]
    pub umask: Option<u32>,

    /// Run COMMAND as USER (and GROUP), names or numeric IDs, with USER's
    /// supplementary groups; root only. The PID file stays root's. The
    /// packaged static build looks names up in /etc/passwd and /etc/group
    /// (and nscd), not through NSS modules such as sssd or LDAP
    #[arg(
        long,
        value_name = "USER[:GROUP]",
        requires = "name",
        help_heading = "Environment"
    )]
    pub user: Option<String>,

    /// Set an environment variable for COMMAND (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", requires = "name", value_parser = clap::builder::OsStringValueParser::new().try_map(parse_env), help_heading = "Environment")]
    pub env: Vec<(OsString, OsString)>,

    /// Report the start only once COMMAND has sent READY=1 over $NOTIFY_SOCKET
    /// (the sd_notify protocol; every COMMAND gets a private NOTIFY_SOCKET)
    #[arg(long, requires = "name", help_heading = "Readiness and watchdog")]
    pub notify: bool,

    /// With --notify: stop COMMAND and fail the start when READY=1 has not
    /// arrived within SECS (EXTEND_TIMEOUT_USEC= extends it)
    #[arg(long, value_name = "SECS", default_value = "60", requires = "notify", value_parser = parse_positive_secs, help_heading = "Readiness and watchdog")]
    pub ready_timeout: Duration,

    /// COMMAND must send WATCHDOG=1 at least every SECS (WATCHDOG_USEC tells it);
    /// otherwise it is hung: stopped gracefully and, with --respawn, started afresh
    #[arg(long, value_name = "SECS", requires = "name", value_parser = parse_positive_secs, help_heading = "Readiness and watchdog")]
    pub watchdog: Option<Duration>,

    /// Say nothing when every slot is busy (cron-friendly)
    #[arg(short, long)]
    pub quiet: bool,

    /// Also refresh the heartbeat (the PID file's mtime) every SECS. Not
    /// needed for --check --max-age or --status: by default the supervisor
    /// answers each of them with a fresh heartbeat and otherwise sleeps
    /// without waking. Set it for monitors that only stat() the file. A
    /// COMMAND that sends WATCHDOG=1 supplies its own heartbeat
    #[arg(long, value_name = "SECS", requires = "name", value_parser = parse_positive_secs)]
    pub heartbeat_interval: Option<Duration>,

    /// With --check: how many peers must run
    #[arg(
        long,
        value_name = "K",
        default_value_t = 1,
        requires = "check",
        help_heading = "Check, status, stop"
    )]
    pub min_peers: u32,

    /// With --check: each running peer's heartbeat must be younger than SECS
    #[arg(long, value_name = "SECS", requires = "check", value_parser = parse_positive_secs, help_heading = "Check, status, stop")]
    pub max_age: Option<Duration>,

    /// With --check: explain the verdict on stdout
    #[arg(short, long, requires = "check", help_heading = "Check, status, stop")]
    pub verbose: bool,

    /// With --status: print a JSON array, one object per slot
    #[arg(long, requires = "status", help_heading = "Check, status, stop")]
    pub json: bool,

    /// With --stop: how long to wait after SIGTERM before SIGKILL
    #[arg(long, value_name = "SECS", default_value = "10", requires = "stop", value_parser = parse_secs, help_heading = "Check, status, stop")]
    pub timeout: Duration,

    // --- Fleet-wide slots (etcd; src/etcd) ---
    /// etcd v3 endpoints (comma-separated), tried in order. With --name and
    /// --cluster-max-peers: also hold one of M fleet-wide slots; with --check
    /// and --status: answer for the whole fleet. --stop stays local
    #[arg(
        long,
        value_name = "URL[,URL...]",
        env = "RDAEMON_ETCD",
        value_delimiter = ',',
        help_heading = "Fleet-wide slots (etcd)"
    )]
    pub etcd: Vec<String>,

    /// With --etcd: at most M peers of NAME across every host sharing that etcd
    #[arg(long, value_name = "M", requires = "name", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slot::MAX_SLOTS)), help_heading = "Fleet-wide slots (etcd)")]
    pub cluster_max_peers: Option<u32>,

    /// The etcd lease's time to live, whole seconds: a host cut off from etcd
    /// stops COMMAND (SIGTERM by SECS/2, SIGKILL before SECS) so that no other
    /// host can take the slot while it still runs
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "cluster_max_peers", value_parser = clap::value_parser!(u64).range(crate::etcd::MIN_LEASE_TTL_SECS..=86_400), help_heading = "Fleet-wide slots (etcd)")]
    pub lease_ttl: u64,
    // --- end of fleet-wide slots ---
    /// The program to run, and its arguments
    #[arg(value_name = "COMMAND", trailing_var_arg = true, allow_hyphen_values = true, value_parser = clap::value_parser!(OsString))]
    pub command: Vec<OsString>,
}

/// Longest duration accepted anywhere: about 31 years.
const MAX_SECS: f64 = 1e9;

/// Parses seconds: a non-negative decimal number, fractions allowed.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid number of seconds {text:?}"))?;
    if !v.is_finite() || !(0.0..=MAX_SECS).contains(&v) {
        return Err(format!(
            "seconds must be between 0 and {MAX_SECS}, not {text:?}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Like [`parse_secs`], but zero is refused.
pub fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    let d = parse_secs(text)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// Parses an octal umask such as `022` or `0027`.
pub fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("invalid umask {text:?}: expected an octal mode such as 027"))
}

/// Parses `KEY=VALUE`: a non-empty KEY without `=`; the value may be empty
/// and need not be UTF-8 (it reaches COMMAND byte for byte).
pub fn parse_env(arg: OsString) -> Result<(OsString, OsString), String> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = arg.as_bytes();
    match bytes.iter().position(|&b| b == b'=') {
        Some(eq) if eq > 0 => {
            let (k, v) = (&bytes[..eq], &bytes[eq + 1..]);
            Ok((
                OsString::from_vec(k.to_vec()),
                OsString::from_vec(v.to_vec()),
            ))
        }
        _ => Err(format!(
            "invalid environment entry {:?}: expected KEY=VALUE with a non-empty KEY",
            arg.to_string_lossy()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        for bad in ["-1", "nan", "inf", "1e99", "x", ""] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_secs("0").is_err());
    }

    #[test]
    fn umask_and_env() {
        assert_eq!(parse_umask("027"), Ok(0o27));
        assert!(parse_umask("8").is_err());
        assert!(parse_umask("1777").is_err());
        assert_eq!(parse_env("A=b=c".into()), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A=".into()), Ok(("A".into(), "".into())));
        assert!(parse_env("=x".into()).is_err());
        assert!(parse_env("novalue".into()).is_err());
    }
}
