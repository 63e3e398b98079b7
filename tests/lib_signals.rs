//! `rdaemon --stop` against a library daemon: SIGTERM turns heartbeat()
//! false, the program calls stop(), and --stop sees the slot released.
//! Alone in its own test binary because signal handlers are process-wide.

mod common;

use std::time::Duration;

use common::*;
use rdaemon::{Daemon, StopReason};

#[test]
fn stop_command_ends_the_library_loop() {
    let env = Env::new();
    let mut d = Daemon::builder("libstop")
        .pid_dir(&env.pid_dir)
        .lease(Duration::from_secs(1))
        .build()
        .unwrap();
    d.start().unwrap();
    let stopper = {
        let dir = env.pid_dir.clone();
        std::thread::spawn(move || {
            std::process::Command::new(bin())
                .args(["--stop", "libstop", "--timeout", "60", "--pid-dir"])
                .arg(dir)
                .status()
                .unwrap()
                .code()
        })
    };
    wait_until("SIGTERM arrives", || !d.heartbeat());
    assert_eq!(d.stop_reason(), Some(&StopReason::Signal(libc::SIGTERM)));
    d.stop().unwrap();
    assert_eq!(stopper.join().unwrap(), Some(0));
    assert_eq!(env.check("libstop"), 3);
}
