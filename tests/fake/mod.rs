//! Slot holders written by hand, for testing the readers (`--check`,
//! `--status`, `--stop`, `--restart`) against every state a holder can
//! publish, before and independently of the supervisor that publishes it.
//!
//! A fake holder is a real process that really holds the slot's flock and
//! writes its own PID into the PID file, so the CLI's proofs (the lock, the
//! `/proc` walk, pidfds) run unchanged; only the state file's content is
//! chosen by the test.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{Env, wait_until};

/// Creates the PID directory the way rdaemon would (mode 0700).
pub fn make_pid_dir(env: &Env) {
    if !env.pid_dir.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&env.pid_dir)
            .unwrap();
    }
    fs::set_permissions(&env.pid_dir, fs::Permissions::from_mode(0o700)).unwrap();
}

/// Writes slot `index`'s state file (a tombstone, when nobody holds it).
pub fn write_state(env: &Env, name: &str, index: u32, text: &str) {
    make_pid_dir(env);
    let tmp = env.pid_dir.join(format!(".{name}.{index}.state.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, env.pid_dir.join(format!("{name}.{index}.state"))).unwrap();
}

/// A bash process holding slot `index` of `name`: it locks the PID file
/// (through `flock` on an inherited descriptor), writes its PID, publishes
/// `state` (one `key=value` per line; `$run` expands to its run counter;
/// `holder_pid=` its own PID unless `state` says otherwise),
/// and then:
///
/// - on `SIGRTMAX-2` (rdaemon's restart signal) appends `I got` to
///   `events`, counts a new run, publishes `phase=starting`, and after
///   `ready_after` seconds publishes `after_restart` (a phase, e.g.
///   `running` or `backoff`), having appended `I PHASE` just before;
/// - on SIGTERM exits after `term_delay` seconds, or ignores it when
///   `term_delay` is `None`.
///
/// Its log (opened for appending, like a supervisor's `--log`) is
/// `log_file`.
pub struct FakeHolder {
    pub child: Child,
    pub pid: i32,
}

pub struct FakeSpec<'a> {
    pub state: &'a str,
    pub after_restart: &'a str,
    pub ready_after: &'a str,
    pub term_delay: Option<&'a str>,
    pub events: PathBuf,
    pub log_file: PathBuf,
}

impl<'a> FakeSpec<'a> {
    pub fn new(env: &Env, state: &'a str) -> FakeSpec<'a> {
        FakeSpec {
            state,
            after_restart: "running",
            ready_after: "0.3",
            term_delay: Some("0"),
            events: env.path("events"),
            log_file: env.path("fake.log"),
        }
    }
}

const FAKE: &str = r#"
D=$1; N=$2; I=$3; STATE=$4; AFTER=$5; READY_AFTER=$6; TERM_DELAY=$7; EVENTS=$8; LOG=$9
exec 9<>"$D/$N.$I.pid"
flock -n 9 || { echo "cannot lock $D/$N.$I.pid" >&2; exit 1; }
echo $$ >&9
exec 8>>"$LOG"
run=1
publish() {
    printf '%s\n' "$STATE" | sed "s/\$run/$run/g; s/^phase=.*/phase=$1/" > "$D/.$N.$I.state.tmp"
    grep -q '^phase=' "$D/.$N.$I.state.tmp" || echo "phase=$1" >> "$D/.$N.$I.state.tmp"
    grep -q '^holder_pid=' "$D/.$N.$I.state.tmp" || echo "holder_pid=$$" >> "$D/.$N.$I.state.tmp"
    mv "$D/.$N.$I.state.tmp" "$D/$N.$I.state"
}
phase0=$(printf '%s\n' "$STATE" | sed -n 's/^phase=//p')
publish "${phase0:-running}"
on_restart() {
    echo "$I got" >> "$EVENTS"
    run=$((run + 1))
    publish starting
    sleep "$READY_AFTER"
    echo "$I $AFTER" >> "$EVENTS"
    publish "$AFTER"
}
trap on_restart RTMAX-2
if [ "$TERM_DELAY" = ignore ]; then
    trap '' TERM
else
    trap 'sleep "$TERM_DELAY"; echo "$I clean exit" >> "$EVENTS"; exit 0' TERM
fi
echo "$I up" >> "$EVENTS"
while :; do
    sleep 1000 9>&- 8>&- &
    wait $!
    kill $! 2>/dev/null
done
"#;

impl FakeHolder {
    pub fn start(env: &Env, name: &str, index: u32, spec: &FakeSpec) -> FakeHolder {
        make_pid_dir(env);
        let child = Command::new("bash")
            .arg("-c")
            .arg(FAKE)
            .arg("fake-holder")
            .arg(&env.pid_dir)
            .arg(name)
            .arg(index.to_string())
            .arg(spec.state)
            .arg(spec.after_restart)
            .arg(spec.ready_after)
            .arg(spec.term_delay.unwrap_or("ignore"))
            .arg(&spec.events)
            .arg(&spec.log_file)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let events = spec.events.clone();
        let want = format!("{index} up");
        wait_until(&format!("fake holder of {name}.{index} up"), || {
            fs::read_to_string(&events).is_ok_and(|e| e.lines().any(|l| l == want))
        });
        FakeHolder { child, pid }
    }
}

impl Drop for FakeHolder {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group our own child leads
        // (process_group(0)); the child is not reaped yet, so neither its
        // PID nor its group ID can have been reused.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The events the fake holders wrote, in order.
pub fn events(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
