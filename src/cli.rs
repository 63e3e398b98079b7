//! The command-line interface definition. Doc comments here become `--help`,
//! the man page (man/rdaemon.1) and the shell completions.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::parser::ValueSource;
use clap::{ArgGroup, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum, ValueHint};

/// Turn any program into a well-behaved Unix daemon.
///
/// Start COMMAND detached under a supervisor that holds one of NAME's slots
/// (a PID file locked with flock for the supervisor's whole life), returning
/// only once COMMAND has been executed; or check, show, stop or restart
/// NAME's peers.
#[derive(Debug, Parser)]
#[command(
    name = "rdaemon",
    version,
    allow_negative_numbers = true,
    override_usage = "rdaemon --name NAME [--max-peers N] [--min-peers K] [OPTIONS] -- COMMAND [ARG]...\n       \
                      rdaemon --check NAME [--min-peers K] [--max-age SECS] [--verbose] [--pid-dir DIR]\n       \
                      rdaemon --status [NAME] [--format text|json|prometheus] [--json] [--pid-dir DIR]\n       \
                      rdaemon --stop NAME [--slot I] [--timeout SECS] [--pid-dir DIR]\n       \
                      rdaemon --restart NAME [--slot I] [--timeout SECS] [--pid-dir DIR]\n       \
                      rdaemon --name NAME --etcd URL[,URL...] --cluster-max-peers M [OPTIONS] -- COMMAND [ARG]...\n       \
                      rdaemon --check NAME --etcd URL[,URL...] [--min-peers K]\n       \
                      rdaemon --status NAME --etcd URL[,URL...] [--format text|json|prometheus]",
    // `multiple(true)`: a second mode is refused by `check_applicability`,
    // with a message that names both.
    group(ArgGroup::new("mode").required(true).multiple(true).args(["name", "check", "status", "stop", "restart", "list_names"])),
    after_help = "Exit status: 0 started/healthy/stopped/restarted; 1 failure (or a stale PID file or a \
                  failed tombstone, for --check); 2 usage error; 3 not running; 4 cannot tell; \
                  75 every slot busy; 126 COMMAND not executable; 127 COMMAND not found; \
                  150 held but unhealthy (fewer than K running, or an old heartbeat)."
)]
pub struct Cli {
    /// Start COMMAND as a peer of NAME
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub name: Option<String>,

    /// Exit 0 if at least K peers of NAME run (LSB status codes; for cron watchdogs)
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub check: Option<String>,

    /// Show NAME's slots (every name's, without NAME): state, PID, child PID,
    /// COMMAND's uptime, heartbeat age, restarts, last exit, STATUS= text
    #[arg(long, value_name = "NAME", num_args = 0..=1, help_heading = "Modes")]
    pub status: Option<Option<String>>,

    /// Stop every peer of NAME, or slot I's (SIGTERM, then SIGKILL after --timeout)
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub stop: Option<String>,

    /// Rolling restart: restart COMMAND in each slot of NAME in turn (or in
    /// slot I), going on only once the new COMMAND runs (is READY under --notify)
    #[arg(long, value_name = "NAME", help_heading = "Modes")]
    pub restart: Option<String>,

    /// Print the names that have slot files in the PID directory, one per
    /// line (for shell completion)
    #[arg(long, help_heading = "Modes")]
    pub list_names: bool,

    /// Directory of the slot files [default: $RDAEMON_PID_DIR, /run/rdaemon for root,
    /// /tmp/rdaemon-$UID for others]
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,

    /// How many copies of NAME may run at once
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slot::MAX_SLOTS)))]
    pub max_peers: u32,

    /// Do not detach: stay in the foreground (systemd Type=simple, containers)
    ///
    /// Exits with COMMAND's status (128+N when a signal N that rdaemon did not
    /// send killed it), or 0 when rdaemon stopped COMMAND on request.
    #[arg(short = 'f', long)]
    pub foreground: bool,

    /// Grace between SIGTERM and SIGKILL when stopping COMMAND [default: 10;
    /// 4 with --cluster-max-peers, which allows at most --lease-ttl/2 minus a margin]
    #[arg(long, value_name = "SECS", default_value = "10", default_value_if("cluster_max_peers", clap::builder::ArgPredicate::IsPresent, Some("4")), hide_default_value = true, value_parser = parse_secs)]
    pub stop_timeout: Duration,

    /// Restart COMMAND when it exits on its own
    #[arg(long, help_heading = "Respawning")]
    pub respawn: bool,

    /// Give up after N failed runs within --respawn-window (recycles never count)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        help_heading = "Respawning"
    )]
    pub max_respawns: u32,

    /// The window for --max-respawns
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_positive_secs, help_heading = "Respawning")]
    pub respawn_window: Duration,

    /// First pause before a restart after a failed run; doubles up to 60s,
    /// back to the first after any run of at least --min-uptime
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, help_heading = "Respawning")]
    pub respawn_delay: Duration,

    /// Exit statuses that mean COMMAND finished its work: not restarted
    /// (supervisord's exitcodes= with autorestart=unexpected), e.g. 0 or 0,3
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(0..=255), help_heading = "Respawning")]
    pub exit_codes: Vec<i32>,

    /// A run of COMMAND shorter than SECS is a failed run (back-off, counted
    /// toward --max-respawns); an exit after a longer run is a planned
    /// recycle: restarted at once, never counted
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs, help_heading = "Respawning")]
    pub min_uptime: Duration,

    /// Exit statuses that are always planned recycles, restarted at once
    /// (e.g. 12, Laravel's memory-limit exit)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(0..=255), help_heading = "Respawning")]
    pub recycle_codes: Vec<i32>,

    /// COMMAND daemonizes itself (forks and lets its first process exit):
    /// supervise the process it leaves behind
    #[arg(long)]
    pub forking: bool,

    /// With --forking: the PID file COMMAND writes, naming its main process
    /// (trusted only for a descendant of the supervisor)
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Stop COMMAND gracefully when its process tree's resident memory exceeds
    /// SIZE (512K, 64M, 2G); with --respawn, start it afresh
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub memory_limit: Option<u64>,

    /// Append COMMAND's stdout and stderr, and rdaemon's events, to FILE
    /// (created 0640; reopened when rotated away)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "syslog",
        help_heading = "Output"
    )]
    pub log: Option<PathBuf>,

    /// Send COMMAND's output and rdaemon's events to syslog, tagged NAME
    /// (stdout at info, stderr at err, events at notice; facility daemon)
    #[arg(long, help_heading = "Output")]
    pub syslog: bool,

    /// Prefix every line in --log with an RFC 3339 UTC timestamp
    /// (milliseconds) and the slot: `2026-11-29T12:00:00.123Z NAME.2: text`
    /// (not with --syslog, which stamps its own)
    #[arg(long, conflicts_with = "syslog", help_heading = "Output")]
    pub timestamps: bool,

    /// The syslog socket
    #[arg(long, value_name = "PATH", default_value = crate::output::DEFAULT_SYSLOG_SOCKET, help_heading = "Output")]
    pub syslog_socket: PathBuf,

    /// Run COMMAND in DIR [default: / when detached, the current directory with --foreground]
    #[arg(long, value_name = "DIR", help_heading = "Environment")]
    pub chdir: Option<PathBuf>,

    /// File mode creation mask for COMMAND, in octal (e.g. 027)
    #[arg(long, value_name = "MODE", value_parser = parse_umask, help_heading = "Environment")]
    pub umask: Option<u32>,

    /// Run COMMAND as USER (and GROUP), names or numeric IDs, with USER's
    /// supplementary groups; root only. The PID file stays root's. The
    /// packaged static build looks names up in /etc/passwd and /etc/group
    /// (and nscd), not through NSS modules such as sssd or LDAP
    #[arg(long, value_name = "USER[:GROUP]", help_heading = "Environment")]
    pub user: Option<String>,

    /// Set an environment variable for COMMAND (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = clap::builder::OsStringValueParser::new().try_map(parse_env), help_heading = "Environment")]
    pub env: Vec<(OsString, OsString)>,

    /// Report the start only once COMMAND has sent READY=1 over $NOTIFY_SOCKET
    /// (the sd_notify protocol; every COMMAND gets a private NOTIFY_SOCKET)
    #[arg(long, help_heading = "Readiness and watchdog")]
    pub notify: bool,

    /// With --notify: stop COMMAND and fail the start when READY=1 has not
    /// arrived within SECS (EXTEND_TIMEOUT_USEC= extends it); with --forking,
    /// when COMMAND has not daemonized (first process exited, main process
    /// found, --pidfile written) within SECS
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_positive_secs, help_heading = "Readiness and watchdog")]
    pub ready_timeout: Duration,

    /// COMMAND must send WATCHDOG=1 at least every SECS (WATCHDOG_USEC tells it);
    /// otherwise it is hung: stopped gracefully and, with --respawn, started afresh
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, help_heading = "Readiness and watchdog")]
    pub watchdog: Option<Duration>,

    /// Say nothing when every slot is busy (cron-friendly)
    #[arg(short, long)]
    pub quiet: bool,

    /// Also refresh the heartbeat (the PID file's mtime) every SECS. Not
    /// needed for --check --max-age or --status: by default the supervisor
    /// answers each of them with a fresh heartbeat and otherwise sleeps
    /// without waking. Set it for monitors that only stat() the file. A
    /// COMMAND that sends WATCHDOG=1 supplies its own heartbeat
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    pub heartbeat_interval: Option<Duration>,

    /// How many peers must run: with --check, for exit 0 [default: 1]; on a
    /// start, start only the missing ones (at most --max-peers)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slot::MAX_SLOTS)), help_heading = "Check, status, stop, restart")]
    pub min_peers: Option<u32>,

    /// With --check: each running peer's heartbeat must be younger than SECS
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, help_heading = "Check, status, stop, restart")]
    pub max_age: Option<Duration>,

    /// With --check: name every slot that is not running and why; with
    /// --stop and --restart: say what was done to each slot
    #[arg(short, long, help_heading = "Check, status, stop, restart")]
    pub verbose: bool,

    /// With --status: the output format
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        conflicts_with = "json",
        help_heading = "Check, status, stop, restart"
    )]
    pub format: Option<Format>,

    /// With --status: print a JSON array, one object per slot (--format json)
    #[arg(long, help_heading = "Check, status, stop, restart")]
    pub json: bool,

    /// With --stop or --restart: only slot I
    #[arg(long, value_name = "I", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slot::MAX_SLOTS)), help_heading = "Check, status, stop, restart")]
    pub slot: Option<u32>,

    /// With --stop: how long to wait after SIGTERM before SIGKILL [default:
    /// each peer's own --stop-timeout plus 5s]; with --restart: how long to
    /// wait for each slot's new COMMAND to run [default: its --stop-timeout
    /// plus 65s]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, help_heading = "Check, status, stop, restart")]
    pub timeout: Option<Duration>,

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
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slot::MAX_SLOTS)), help_heading = "Fleet-wide slots (etcd)")]
    pub cluster_max_peers: Option<u32>,

    /// The etcd lease's time to live, whole seconds: a host cut off from etcd
    /// stops COMMAND (SIGTERM by SECS/2, SIGKILL before SECS) so that no other
    /// host can take the slot while it still runs
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(crate::etcd::MIN_LEASE_TTL_SECS..=86_400), help_heading = "Fleet-wide slots (etcd)")]
    pub lease_ttl: u64,
    // --- end of fleet-wide slots ---
    /// The program to run, and its arguments (only after `--`)
    #[arg(value_name = "COMMAND", last = true, value_hint = ValueHint::CommandWithArguments, value_parser = clap::value_parser!(OsString))]
    pub command: Vec<OsString>,
}

/// `--status --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table, one line per slot
    Text,
    /// A JSON array, one object per slot
    Json,
    /// The Prometheus text exposition format (node_exporter's textfile collector)
    Prometheus,
}

/// What the command line asks for, once [`Cli::try_parse_from`] accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Start(String),
    Check(String),
    /// `--status` with or without NAME.
    Status(Option<String>),
    Stop(String),
    Restart(String),
    ListNames,
}

impl Cli {
    /// The mode; exactly one is present after [`Cli::try_parse_from`].
    pub fn mode(&self) -> Mode {
        if let Some(n) = &self.name {
            Mode::Start(n.clone())
        } else if let Some(n) = &self.check {
            Mode::Check(n.clone())
        } else if let Some(n) = &self.status {
            Mode::Status(n.clone())
        } else if let Some(n) = &self.stop {
            Mode::Stop(n.clone())
        } else if let Some(n) = &self.restart {
            Mode::Restart(n.clone())
        } else {
            Mode::ListNames
        }
    }

    /// `--status`'s output format (`--json` is `--format json`).
    pub fn format(&self) -> Format {
        match self.format {
            Some(f) => f,
            None if self.json => Format::Json,
            None => Format::Text,
        }
    }
}

impl Cli {
    /// Parses the process's arguments: see [`Cli::try_parse_from`].
    ///
    /// This inherent function shadows `clap::Parser::try_parse` on purpose:
    /// `Cli::try_parse()` always includes the check that nothing on the
    /// command line is ignored, whichever traits the caller imports.
    pub fn try_parse() -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::env::args_os())
    }

    /// Parses `args` (the program name first) and refuses every word and
    /// option that the chosen mode would not use: nothing on the command
    /// line is ever silently ignored. The error is clap's, so it prints like
    /// clap's own usage errors and means exit status 2.
    pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        if let Err(msg) = check_applicability(&cmd, &matches) {
            return Err(cmd.error(clap::error::ErrorKind::ArgumentConflict, msg));
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }
}

/// Modes, as bits, for [`APPLIES`].
const START: u8 = 1;
const CHECK: u8 = 2;
const STATUS: u8 = 4;
const STOP: u8 = 8;
const RESTART: u8 = 16;
const LIST: u8 = 32;
const ALL: u8 = START | CHECK | STATUS | STOP | RESTART | LIST;

/// The mode options, with their bit.
const MODES: [(&str, u8); 6] = [
    ("name", START),
    ("check", CHECK),
    ("status", STATUS),
    ("stop", STOP),
    ("restart", RESTART),
    ("list_names", LIST),
];

/// Every other argument: the modes it applies to, and the option it is
/// meaningless without. A unit test proves that no argument is missing, so
/// a new option must say here where it belongs.
const APPLIES: &[(&str, u8, Option<&str>)] = &[
    ("pid_dir", ALL, None),
    ("max_peers", START, None),
    ("foreground", START, None),
    ("stop_timeout", START, None),
    ("respawn", START, None),
    ("max_respawns", START, Some("respawn")),
    ("respawn_window", START, Some("respawn")),
    ("respawn_delay", START, Some("respawn")),
    ("exit_codes", START, Some("respawn")),
    ("min_uptime", START, Some("respawn")),
    ("recycle_codes", START, Some("respawn")),
    ("forking", START, None),
    ("pidfile", START, Some("forking")),
    ("memory_limit", START, None),
    ("log", START, None),
    ("syslog", START, None),
    ("timestamps", START, None),
    ("syslog_socket", START, None),
    ("chdir", START, None),
    ("umask", START, None),
    ("user", START, None),
    ("env", START, None),
    ("notify", START, None),
    ("ready_timeout", START, Some("notify|forking")),
    ("watchdog", START, None),
    ("quiet", START, None),
    ("heartbeat_interval", START, None),
    ("min_peers", START | CHECK, None),
    ("max_age", CHECK, None),
    ("verbose", CHECK | STOP | RESTART, None),
    ("format", STATUS, None),
    ("json", STATUS, None),
    ("slot", STOP | RESTART, None),
    ("timeout", STOP | RESTART, None),
    ("etcd", START | CHECK | STATUS, None),
    ("cluster_max_peers", START, Some("etcd")),
    ("lease_ttl", START, Some("cluster_max_peers")),
    ("command", START, None),
    ("help", ALL, None),
    ("version", ALL, None),
];

/// Arguments whose environment variable is a standing setting of the
/// user's (like `RDAEMON_PID_DIR`), accepted from the environment in every
/// mode and used by the modes that need it; on the command line they are
/// held to [`APPLIES`] like any other. `etcd` (`RDAEMON_ETCD`) is the
/// fleet-wide slots' endpoint list, meaningful to a start, `--check` and
/// `--status`, and harmless to `--stop`.
const STANDING_ENV: &[&str] = &["etcd"];

fn mode_option(bit: u8) -> &'static str {
    match bit {
        START => "a start (--name NAME ... -- COMMAND)",
        CHECK => "--check",
        STATUS => "--status",
        STOP => "--stop",
        RESTART => "--restart",
        _ => "--list-names",
    }
}

/// How an argument appears in messages: `--respawn`, `COMMAND`, or the
/// environment variable that supplied it.
fn spelled(cmd: &clap::Command, matches: &ArgMatches, id: &str) -> String {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id);
    let option = match arg.and_then(|a| a.get_long()) {
        Some(long) => format!("--{long}"),
        None => "COMMAND".to_string(),
    };
    match (
        matches.value_source(id),
        arg.and_then(|a| a.get_env()).map(|e| e.to_string_lossy()),
    ) {
        (Some(ValueSource::EnvVariable), Some(var)) => format!("{option} (from ${var})"),
        _ => option,
    }
}

/// The usage errors clap's own rules cannot express: two modes at once, an
/// option of one mode given to another (on the command line or through the
/// environment), an option without the one it qualifies, and COMMAND words
/// outside a start.
fn check_applicability(cmd: &clap::Command, matches: &ArgMatches) -> Result<(), String> {
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let modes: Vec<&(&str, u8)> = MODES.iter().filter(|(id, _)| given(id)).collect();
    let mode = match modes.as_slice() {
        [one] => one.1,
        [a, b, ..] => {
            return Err(format!(
                "{} and {} cannot be used together: choose one mode",
                spelled(cmd, matches, a.0),
                spelled(cmd, matches, b.0)
            ));
        }
        // clap's required group reports this.
        [] => return Ok(()),
    };
    for &(id, applies, needs) in APPLIES {
        if !given(id)
            || (STANDING_ENV.contains(&id)
                && matches!(matches.value_source(id), Some(ValueSource::EnvVariable)))
        {
            continue;
        }
        if applies & mode == 0 {
            if id == "command" {
                let words: Vec<String> = matches
                    .get_raw("command")
                    .into_iter()
                    .flatten()
                    .map(|w| w.to_string_lossy().into_owned())
                    .collect();
                return Err(format!(
                    "unexpected word(s) after --: {:?}; COMMAND belongs only to a start (--name NAME ... -- COMMAND), not to {}",
                    words.join(" "),
                    mode_option(mode)
                ));
            }
            let for_modes: Vec<&str> = MODES
                .iter()
                .filter(|(_, bit)| applies & bit != 0)
                .map(|(_, bit)| mode_option(*bit))
                .collect();
            return Err(format!(
                "{} does not apply to {}; it is for {}",
                spelled(cmd, matches, id),
                mode_option(mode),
                for_modes.join(" or ")
            ));
        }
        // `a|b`: either will do.
        if let Some(need) = needs
            && !need.split('|').any(given)
        {
            let needed: Vec<String> = need.split('|').map(|n| spelled(cmd, matches, n)).collect();
            return Err(format!(
                "{} means nothing without {}",
                spelled(cmd, matches, id),
                needed.join(" or ")
            ));
        }
    }
    // A status cannot mean both "finished" and "recycle".
    let codes = |id: &str| -> Vec<i32> {
        matches
            .get_many::<i32>(id)
            .into_iter()
            .flatten()
            .copied()
            .collect()
    };
    let recycle = codes("recycle_codes");
    let both: Vec<String> = codes("exit_codes")
        .into_iter()
        .filter(|c| recycle.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !both.is_empty() {
        return Err(format!(
            "{} and {} both name {}: a status either means COMMAND finished or asks for a recycle",
            spelled(cmd, matches, "exit_codes"),
            spelled(cmd, matches, "recycle_codes"),
            both.join(",")
        ));
    }
    Ok(())
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
    fn every_argument_says_which_modes_it_applies_to() {
        let mut cmd = Cli::command();
        cmd.build();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                MODES.iter().any(|(m, _)| *m == id) || APPLIES.iter().any(|(a, ..)| *a == id),
                "argument {id} is missing from APPLIES in src/cli.rs"
            );
        }
        for (id, _, needs) in APPLIES {
            let needs = needs.iter().flat_map(|n| n.split('|'));
            for x in std::iter::once(*id).chain(needs) {
                assert!(
                    cmd.get_arguments().any(|a| a.get_id() == x),
                    "APPLIES names {x}, which is not an argument"
                );
            }
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("rdaemon").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn words_and_options_of_other_modes_are_refused() {
        for (args, needle) in [
            (&["--stop", "m", "now"][..], "now"),
            (&["--check", "m", "x"], "x"),
            (&["--name", "m", "sleep", "1"], "sleep"),
            (&["--check", "m", "--respawn"], "--respawn"),
            (&["--stop", "m", "--max-age", "3"], "--max-age"),
            (&["--status", "m", "--timeout", "1"], "--timeout"),
            (&["--check", "m", "--", "true"], "true"),
            (
                &["--name", "m", "--max-respawns", "3", "--", "true"],
                "--respawn",
            ),
            (&["--check", "m", "--stop", "m"], "--stop"),
            (&["--status", "--slot", "2"], "--slot"),
            (&["--name", "m", "--json", "--", "true"], "--json"),
        ] {
            let err = parse(args).expect_err(&format!("{args:?} was accepted"));
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        for bad in [
            &["--name", "m", "--max-peers", "-1", "--", "true"][..],
            &["--check", "m", "--min-peers", "0"],
            &["--stop", "m", "--timeout", "abc"],
            &["--restart", "m", "--slot", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse(&["--status"]).unwrap().mode(), Mode::Status(None));
        let c = parse(&["--status", "m", "--json"]).unwrap();
        assert_eq!(
            (c.mode(), c.format()),
            (Mode::Status(Some("m".into())), Format::Json)
        );
        let c = parse(&[
            "--name",
            "m",
            "--min-peers",
            "2",
            "--max-peers",
            "3",
            "--",
            "x",
            "--y",
        ])
        .unwrap();
        assert_eq!(c.command, ["x", "--y"]);
        assert_eq!(c.min_peers, Some(2));
        let c = parse(&["--restart", "m", "--slot", "2", "--timeout", "5"]).unwrap();
        assert_eq!((c.mode(), c.slot), (Mode::Restart("m".into()), Some(2)));
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
