//! The packaged bash completion, exercised in a real bash: daemon names
//! from the PID directory after the modes that take one, commands after
//! `--`, rdaemon's own options elsewhere.

mod common;

use std::path::Path;
use std::process::Command;

use common::Env;

/// Completes the words `words` (the last one being completed) with the
/// packaged script, and returns COMPREPLY, sorted.
fn complete(env: &Env, words: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/completions/rdaemon.bash");
    let quoted: Vec<String> = std::iter::once(common::bin())
        .chain(words.iter().copied())
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _rdaemon \"${{COMP_WORDS[0]}}\" \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len()
    );
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(&program)
        .env("RDAEMON_PID_DIR", &env.pid_dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    got.sort();
    got
}

#[test]
fn bash_completes_daemon_names_commands_and_options() {
    let env = Env::new();
    env.start("mailer", &[], &["sleep", "1000"]);
    env.start("mapper", &[], &["sleep", "1000"]);
    env.start("billing", &[], &["sleep", "1000"]);
    for mode in ["--check", "--status", "--stop", "--restart"] {
        assert_eq!(
            complete(&env, &[mode, "ma"]),
            ["mailer", "mapper"],
            "{mode}"
        );
        assert_eq!(
            complete(&env, &[mode, ""]),
            ["billing", "mailer", "mapper"],
            "{mode}"
        );
    }
    // A --pid-dir typed before is the one that is listed.
    let other = Env::new();
    other.start("elsewhere", &[], &["sleep", "1000"]);
    let dir = other.pid_dir.to_str().unwrap();
    assert_eq!(
        complete(&env, &["--pid-dir", dir, "--stop", ""]),
        ["elsewhere"]
    );
    // The --pid-dir=DIR form, whole or broken at '=' as bash does.
    let joined = format!("--pid-dir={dir}");
    assert_eq!(complete(&env, &[&joined, "--stop", ""]), ["elsewhere"]);
    assert_eq!(
        complete(&env, &["--pid-dir", "=", dir, "--stop", ""]),
        ["elsewhere"]
    );
    // After --: commands (bash's own builtins and PATH), not our options.
    let commands = complete(&env, &["--name", "x", "--", "ech"]);
    assert!(commands.iter().any(|c| c == "echo"), "{commands:?}");
    assert!(!commands.iter().any(|c| c.starts_with('-')), "{commands:?}");
    let options = complete(&env, &["--name", "x", "--", "--"]);
    assert!(!options.iter().any(|c| c == "--respawn"), "{options:?}");
    // Elsewhere, rdaemon's options.
    let options = complete(&env, &["--name", "x", "--resp"]);
    assert!(options.iter().any(|c| c == "--respawn"), "{options:?}");
    assert!(
        options.iter().any(|c| c == "--respawn-delay"),
        "{options:?}"
    );
    // No PID directory: no names, no error.
    let empty = Env::new();
    assert!(complete(&empty, &["--check", ""]).is_empty());
}
