//! Readiness and progress over the sd_notify protocol: a real sender
//! (Debian's systemd-notify) where COMMAND speaks it, and datagrams sent
//! straight from the test for the malformed and edge cases.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn have_systemd_notify() -> bool {
    let ok = std::process::Command::new("systemd-notify")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("skipped: systemd-notify is not installed");
    }
    ok
}

fn socket_path(env: &Env, name: &str) -> std::path::PathBuf {
    env.pid_dir.join(format!("{name}.1.notify"))
}

fn send(env: &Env, name: &str, msg: &[u8]) {
    let s = UnixDatagram::unbound().unwrap();
    s.send_to(msg, socket_path(env, name)).unwrap();
}

#[test]
fn notify_start_returns_only_after_ready() {
    if !have_systemd_notify() {
        return;
    }
    let env = Env::new();
    let before = env.path("before-ready");
    let script = format!(
        "sleep 0.2; touch {}; systemd-notify --ready --status='serving'; sleep 1000",
        before.display()
    );
    env.start(
        "rdy",
        &["--notify", "--ready-timeout", "60"],
        &["sh", "-c", &script],
    );
    assert!(
        before.exists(),
        "the caller returned before COMMAND was ready"
    );
    let s = &env.status_json("rdy")[0];
    assert_eq!(s["ready"], true);
    assert_eq!(s["status_text"], "serving");
}

#[test]
fn ready_sent_from_outside_the_command_also_counts() {
    let env = Env::new();
    let mut starter = env
        .cmd()
        .args(["--name", "ext", "--notify", "--", "sleep", "1000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("socket exists", || socket_path(&env, "ext").exists());
    assert!(
        starter.try_wait().unwrap().is_none(),
        "the caller must still be waiting"
    );
    send(&env, "ext", b"READY=1\nSTATUS=up");
    assert_eq!(starter.wait().unwrap().code(), Some(0));
    env.run(["--stop", "ext"]);
}

#[test]
fn ready_timeout_stops_command_and_fails_the_start() {
    let env = Env::new();
    let marker = "notify-timeout-marker";
    let out = env.run([
        "--name",
        "late",
        "--notify",
        "--ready-timeout",
        "0.3",
        // No heartbeat timer runs (the default): only the ready deadline
        // itself can fire.
        "--",
        "sh",
        "-c",
        "sleep 1000; :",
        marker,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("READY=1"),
        "{out:?}"
    );
    wait_until("COMMAND stopped", || pids_with_arg(marker).is_empty());
    wait_until("slot released", || env.check("late") == 3);
}

#[test]
fn extend_timeout_usec_extends_the_ready_timeout() {
    let env = Env::new();
    let mut starter = env
        .cmd()
        .args([
            "--name",
            "ext2",
            "--notify",
            "--ready-timeout",
            "0.5",
            "--",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    wait_until("socket exists", || socket_path(&env, "ext2").exists());
    send(&env, "ext2", b"EXTEND_TIMEOUT_USEC=600000000");
    // Wait well past the original 0.5 s, on a condition: the supervisor
    // logs nothing about a timeout and the caller still waits.
    let log = env.pid_dir.join("ext2.log");
    wait_until("2 s of heartbeats", || {
        env.status_json("ext2")
            .first()
            .and_then(|s| s["started_unix"].as_u64())
            .is_some_and(|t| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    >= t + 2
            })
    });
    assert!(starter.try_wait().unwrap().is_none(), "{}", read(&log));
    send(&env, "ext2", b"READY=1");
    assert_eq!(starter.wait().unwrap().code(), Some(0));
    env.run(["--stop", "ext2"]);
}

#[test]
fn exit_before_ready_fails_the_start() {
    let env = Env::new();
    let out = env.run(["--name", "quit", "--notify", "--", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("status 4"),
        "{out:?}"
    );
}

#[test]
fn watchdog_kept_alive_is_left_alone() {
    if !have_systemd_notify() {
        return;
    }
    let env = Env::new();
    let pings = env.path("pings");
    let log = env.path("wd.log");
    let script = format!(
        "while :; do systemd-notify WATCHDOG=1; echo . >> {}; sleep 0.1; done",
        pings.display()
    );
    env.start(
        "kept",
        &[
            "--watchdog",
            "1",
            "--respawn",
            "--log",
            log.to_str().unwrap(),
        ],
        &["sh", "-c", &script],
    );
    // 20 pings take at least 2 s: twice the watchdog period.
    wait_until("20 watchdog pings", || read(&pings).lines().count() >= 20);
    assert_eq!(env.status_json("kept")[0]["restarts"], 0, "{}", read(&log));
    assert!(!read(&log).contains("hung"));
}

#[test]
fn missed_watchdog_restarts_command() {
    let env = Env::new();
    let log = env.path("wd.log");
    env.start(
        "hung",
        &[
            "--watchdog",
            "0.2",
            "--respawn",
            "--respawn-delay",
            "0.01",
            // No heartbeat timer runs (the default): only the watchdog
            // deadline can fire.
            "--log",
            log.to_str().unwrap(),
        ],
        &["sh", "-c", "echo \"$WATCHDOG_USEC\"; sleep 1000"],
    );
    wait_until("a watchdog restart", || {
        env.status_json("hung")
            .first()
            .is_some_and(|s| s["restarts"].as_u64().unwrap_or(0) >= 1)
    });
    let text = read(&log);
    assert!(
        text.contains("no WATCHDOG=1 for 0.2s; COMMAND is hung"),
        "{text}"
    );
    assert!(text.contains("200000"), "WATCHDOG_USEC is exported: {text}");
}

#[test]
fn watchdog_trigger_restarts_at_once() {
    let env = Env::new();
    let log = env.path("trig.log");
    env.start(
        "trig",
        &[
            "--respawn",
            "--respawn-delay",
            "0.01",
            "--log",
            log.to_str().unwrap(),
        ],
        &["sleep", "1000"],
    );
    send(&env, "trig", b"WATCHDOG=trigger");
    wait_until("restart after trigger", || {
        read(&log).contains("WATCHDOG=trigger") && read(&log).contains("restarting")
    });
}

#[test]
fn malformed_datagrams_are_dropped_not_fatal() {
    let env = Env::new();
    let log = env.path("bad.log");
    env.start("bad", &["--log", log.to_str().unwrap()], &["sleep", "1000"]);
    send(&env, "bad", b"\xff\xfe\xfd");
    send(&env, "bad", b"READY=1\0STATUS=x");
    send(&env, "bad", &vec![b'A'; 10_000]);
    send(&env, "bad", b"no equals sign here\nSTATUS=still fine");
    wait_until("valid STATUS after garbage", || {
        env.status_json("bad")
            .first()
            .is_some_and(|s| s["status_text"] == "still fine")
    });
    assert!(read(&log).contains("malformed"), "{}", read(&log));
    assert_eq!(env.check("bad"), 0);
}

#[test]
fn mainpid_must_belong_to_command() {
    let env = Env::new();
    let log = env.path("mp.log");
    env.start("mp", &["--log", log.to_str().unwrap()], &["sleep", "1000"]);
    let child = env.status_json("mp")[0]["child_pid"].as_i64().unwrap();
    send(&env, "mp", b"MAINPID=1");
    send(
        &env,
        "mp",
        format!("MAINPID={}", std::process::id()).as_bytes(),
    );
    wait_until("bad MAINPIDs ignored", || {
        read(&log).matches("ignored MAINPID").count() == 2
    });
    send(&env, "mp", format!("MAINPID={child}").as_bytes());
    wait_until("MAINPID recorded", || {
        env.status_json("mp")[0]["main_pid"] == child
    });
}

#[test]
fn check_max_age_follows_the_last_watchdog_ping() {
    let env = Env::new();
    env.start("age", &[], &["sleep", "1000"]);
    send(&env, "age", b"WATCHDOG=1");
    wait_until("watchdog ping published", || {
        env.status(["--check", "age", "--max-age", "30"]) == 0
    });
    // The supervisor stays healthy, but COMMAND no longer pings.
    wait_until("heartbeat ages past 0.5 s", || {
        env.status(["--check", "age", "--max-age", "0.5"]) == 150
    });
    send(&env, "age", b"WATCHDOG=1");
    wait_until("fresh again", || {
        env.status(["--check", "age", "--max-age", "0.5"]) == 0
    });
}

#[test]
fn foreground_passes_ready_up_to_systemd() {
    let env = Env::new();
    let upstream = env.path("systemd.sock");
    let sock = UnixDatagram::bind(&upstream).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut fg = env
        .cmd()
        .env("NOTIFY_SOCKET", &upstream)
        .args(["--name", "up", "-f", "--notify", "--", "sleep", "1000"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("socket exists", || socket_path(&env, "up").exists());
    send(&env, "up", b"READY=1");
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("READY=1 reached systemd's socket");
    assert_eq!(&buf[..n], b"READY=1");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(fg.id() as i32, libc::SIGTERM) };
    assert_eq!(fg.wait().unwrap().code(), Some(0));
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn notify_socket_is_private() {
    let env = Env::new();
    env.start("priv", &[], &["sleep", "1000"]);
    let meta = std::fs::symlink_metadata(socket_path(&env, "priv")).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    env.run(["--stop", "priv"]);
    assert!(!socket_path(&env, "priv").exists(), "removed on exit");
}

#[test]
fn rdaemons_own_notify_environment_never_reaches_command() {
    let env = Env::new();
    let out = env.path("env.out");
    let script = format!(
        "echo \"N=$NOTIFY_SOCKET W=$WATCHDOG_PID\" > {o}.tmp; mv {o}.tmp {o}",
        o = out.display()
    );
    let status = env
        .cmd()
        .env("NOTIFY_SOCKET", "/nonexistent/systemd.sock")
        .env("WATCHDOG_PID", "1")
        .args(["--name", "envleak", "--", "sh", "-c", &script])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    wait_until("COMMAND wrote its environment", || out.exists());
    let text = read(&out);
    assert_eq!(
        text.trim(),
        format!("N={} W=", socket_path(&env, "envleak").display())
    );
}
