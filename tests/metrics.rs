//! `--status --format prometheus`: every state a slot can be in, checked by
//! the real `promtool check metrics`; the packaged textfile example and
//! alert rules, checked by promtool too.

mod common;
mod fake;

use std::process::{Command, Stdio};

use common::{Env, alive, pids_with_arg, wait_until};
use fake::{FakeHolder, FakeSpec, make_pid_dir, write_state};

fn have_promtool() -> bool {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check_metrics(text: &str) {
    let out = common::promtool_check_metrics(text).expect("run promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics complained:\n{}{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `metric{labels}` in `text`.
fn sample(text: &str, metric: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{metric}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

#[test]
fn metrics_of_every_state_pass_promtool() {
    if !have_promtool() {
        eprintln!("skipped: promtool not installed");
        return;
    }
    let env = Env::new();
    make_pid_dir(&env);
    // running: a real supervisor.
    env.start("run", &[], &["sleep", "1000"]);
    // orphaned: a real COMMAND whose supervisor was SIGKILLed.
    let marker = "metrics-orphan-marker";
    env.start("orph", &[], &["sh", "-c", "sleep 1000; :", marker]);
    let sup = env.read_pid("orph", 1).unwrap();
    // SAFETY: kill(2) on the supervisor we just started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_until("supervisor gone", || !alive(sup));
    wait_until("orphaned", || {
        env.slots_in_state("orph", "orphaned").len() == 1
    });
    // backoff, starting, stopping: published by (fake) supervisors.
    let _b = FakeHolder::start(
        &env,
        "back",
        1,
        &FakeSpec::new(
            &env,
            "mode=supervisor\nphase=backoff\nreason=exit status 1\nlast_exit=status 1\nlast_exit_code=1\nrestarts=4\nrun=$run",
        ),
    );
    let _s = FakeHolder::start(
        &env,
        "back",
        2,
        &FakeSpec::new(&env, "mode=supervisor\nphase=starting\nready=0\nrun=$run"),
    );
    // failed: a tombstone; stale: a PID file nobody holds.
    write_state(
        &env,
        "dead",
        1,
        "phase=failed\nlast_exit=signal 9\nlast_exit_code=137\nrestarts=5\nreason=gave up\n",
    );
    std::fs::write(env.pid_file("dead", 2), "999999\n").unwrap();

    let out = env.run(["--status", "--format", "prometheus"]);
    let text = String::from_utf8(out.stdout).unwrap();
    promtool_check_metrics(&text);

    let state = |name: &str, slot: u32, state: &str| {
        sample(
            &text,
            "rdaemon_slot_state",
            &format!("name=\"{name}\",slot=\"{slot}\",state=\"{state}\""),
        )
    };
    for (name, slot, st) in [
        ("run", 1, "running"),
        ("orph", 1, "orphaned"),
        ("back", 1, "backoff"),
        ("back", 2, "starting"),
        ("dead", 1, "failed"),
        ("dead", 2, "stale"),
    ] {
        assert_eq!(state(name, slot, st), Some(1.0), "{name}.{slot}: {text}");
        assert_eq!(state(name, slot, "unknown"), Some(0.0), "{text}");
        let up = sample(
            &text,
            "rdaemon_slot_up",
            &format!("name=\"{name}\",slot=\"{slot}\""),
        );
        assert_eq!(up, Some(f64::from(u8::from(st == "running"))), "{text}");
    }
    let run1 = "name=\"run\",slot=\"1\"";
    assert!(sample(&text, "rdaemon_slot_resident_memory_bytes", run1).unwrap() > 0.0);
    assert!(sample(&text, "rdaemon_slot_start_time_seconds", run1).unwrap() > 1.7e9);
    assert!(sample(&text, "rdaemon_slot_heartbeat_age_seconds", run1).is_some());
    assert_eq!(
        sample(&text, "rdaemon_slot_restarts_total", run1),
        Some(0.0)
    );
    // No exit yet: no sample. After signal 9: 137.
    assert_eq!(sample(&text, "rdaemon_slot_last_exit_code", run1), None);
    assert_eq!(
        sample(
            &text,
            "rdaemon_slot_last_exit_code",
            "name=\"dead\",slot=\"1\""
        ),
        Some(137.0)
    );
    // The orphan's COMMAND tree is measured too.
    assert!(
        sample(
            &text,
            "rdaemon_slot_resident_memory_bytes",
            "name=\"orph\",slot=\"1\""
        )
        .is_some(),
        "{text}"
    );
    // One name only, and nothing at all, are valid too.
    let one = env.run(["--status", "run", "--format", "prometheus"]);
    promtool_check_metrics(&String::from_utf8(one.stdout).unwrap());
    let empty = Env::new();
    let none = empty.run(["--status", "--format", "prometheus"]);
    assert_eq!(none.status.code(), Some(3));
    promtool_check_metrics(&String::from_utf8(none.stdout).unwrap());
    let _ = env.run(["--stop", "orph"]);
    assert!(pids_with_arg(marker).is_empty());
}

#[test]
fn packaged_textfile_example_writes_atomically_and_rules_pass_promtool() {
    if !have_promtool() {
        eprintln!("skipped: promtool not installed");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("packaging/prometheus/rdaemon.rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The cron line's command, run with D pointing into the test's world
    // and the binary under test first on PATH.
    let cron =
        std::fs::read_to_string(root.join("packaging/prometheus/rdaemon-textfile.cron")).unwrap();
    let line = cron
        .lines()
        .find(|l| l.starts_with("* * * * * root "))
        .expect("the cron line");
    let command = line
        .trim_start_matches("* * * * * root ")
        .replace("D=/var/lib/prometheus/node-exporter;", "");
    let env = Env::new();
    env.start("tx", &[], &["sleep", "1000"]);
    let textdir = env.path("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let bin_dir = std::path::Path::new(common::bin()).parent().unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .env_clear()
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .env("D", &textdir)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(&textdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rdaemon.prom"], "no temporary file left behind");
    let text = std::fs::read_to_string(textdir.join("rdaemon.prom")).unwrap();
    assert_eq!(
        sample(&text, "rdaemon_slot_up", "name=\"tx\",slot=\"1\""),
        Some(1.0)
    );
    promtool_check_metrics(&text);
}

/// The packaged alert rules fire when they should, and only then, on
/// series shaped like `--format prometheus` output (`promtool test rules`).
#[test]
fn packaged_alert_rules_fire_on_too_few_peers_and_old_heartbeats() {
    if !have_promtool() {
        eprintln!("skipped: promtool not installed");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("packaging/prometheus/rdaemon.rules.yml");
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("rules_test.yml");
    // Two of three mailers run for ten minutes; slot 3 backs off. Slot 1's
    // heartbeat is fresh, slot 2's grows old (a wedged supervisor).
    let spec = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'rdaemon_slot_up{{instance="h",name="mailer",slot="1"}}'
        values: '1x10'
      - series: 'rdaemon_slot_up{{instance="h",name="mailer",slot="2"}}'
        values: '1x10'
      - series: 'rdaemon_slot_up{{instance="h",name="mailer",slot="3"}}'
        values: '0x10'
      - series: 'rdaemon_slot_heartbeat_age_seconds{{instance="h",name="mailer",slot="1"}}'
        values: '0x10'
      - series: 'rdaemon_slot_heartbeat_age_seconds{{instance="h",name="mailer",slot="2"}}'
        values: '0+60x10'
    alert_rule_test:
      - eval_time: 10m
        alertname: RdaemonFewerPeersThanWanted
        exp_alerts:
          - exp_labels: {{severity: warning, instance: h, name: mailer}}
            exp_annotations:
              summary: "mailer: only 2 of 3 peers run on h"
              description: "See rdaemon --check mailer --min-peers 3 --verbose."
      - eval_time: 10m
        alertname: RdaemonNameDown
        exp_alerts: []
      - eval_time: 10m
        alertname: RdaemonHeartbeatTooOld
        exp_alerts:
          - exp_labels: {{severity: warning, instance: h, name: mailer, slot: "2"}}
            exp_annotations:
              summary: "mailer slot 2: heartbeat 10m 0s old on h"
"#,
        rules = rules.display()
    );
    std::fs::write(&test, spec).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
