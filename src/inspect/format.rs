//! `--status` output: a table, JSON, or the Prometheus text format.

use std::fmt::Write as _;

use super::scan::{Holder, SlotReport, SlotStatus};

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn json_opt_str(v: Option<&str>) -> String {
    match v {
        None => "null".into(),
        Some(s) => {
            let mut out = String::new();
            json_str(&mut out, s);
            out
        }
    }
}

/// COMMAND's start, Unix seconds: the current run's when the holder
/// publishes it, else when the slot was taken.
fn command_started_unix(s: &SlotReport) -> Option<u64> {
    s.command_started_unix_ms
        .map(|ms| ms / 1000)
        .or(s.started_unix)
}

/// `--status --json`: an array with one object per slot. The contract's
/// fields come first (unknown values are `null`); `main_pid`, `ready`,
/// `reason`, `next_try_unix`, `run`, `mode` and `detail` follow.
pub fn to_json(slots: &[SlotReport]) -> String {
    let mut out = String::from("[");
    for (i, s) in slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_str(&mut out, &s.name);
        let _ = write!(
            out,
            ",\"slot\":{},\"state\":\"{}\",\"pid\":{},\"child_pid\":{},\"pid_file\":",
            s.slot,
            s.state.as_str(),
            json_opt(s.pid),
            json_opt(s.child_pid),
        );
        json_str(&mut out, &s.pid_file.to_string_lossy());
        let _ = write!(
            out,
            ",\"started_unix\":{},\"command_started_unix\":{},\"heartbeat_age_s\":{},\"restarts\":{},\"last_exit\":{},\"status_text\":{}",
            json_opt(s.started_unix),
            json_opt(command_started_unix(s)),
            json_opt(s.heartbeat_age_s.map(|a| format!("{a:.1}"))),
            json_opt(s.restarts),
            json_opt_str(s.last_exit.as_deref()),
            json_opt_str(s.status_text.as_deref()),
        );
        let _ = write!(
            out,
            ",\"main_pid\":{},\"ready\":{},\"reason\":{},\"next_try_unix\":{},\"run\":{},\"mode\":{},\"detail\":{}}}",
            json_opt(s.main_pid),
            json_opt(s.ready),
            json_opt_str(s.reason.as_deref()),
            json_opt(s.next_try_unix_ms.map(|ms| ms / 1000)),
            json_opt(s.run),
            json_opt_str(s.holder.map(|h| match h {
                Holder::Supervisor => "supervisor",
                Holder::Library => "library",
            })),
            json_opt_str(s.detail.as_deref()),
        );
    }
    out.push(']');
    out
}

fn fmt_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The last column of the table: COMMAND's STATUS= text, or why the slot
/// is in its state.
fn note(s: &SlotReport, now_ms: u64) -> Option<String> {
    if let Some(text) = &s.status_text
        && matches!(s.state, SlotStatus::Running | SlotStatus::Starting)
    {
        return Some(text.clone());
    }
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = s.reason.clone().or_else(|| s.detail.clone()) {
        parts.push(r);
    }
    if s.state == SlotStatus::Backoff
        && let Some(next) = s.next_try_unix_ms
    {
        parts.push(format!(
            "next try in {}s",
            next.saturating_sub(now_ms).div_ceil(1000)
        ));
    }
    if s.state == SlotStatus::Orphaned {
        parts.push("supervisor gone".into());
    }
    if parts.is_empty() {
        s.status_text.clone()
    } else {
        Some(parts.join(", "))
    }
}

/// `--status` as text: a header and one line per slot; with `with_names`,
/// a NAME column first (the slots come grouped by name).
pub fn to_text(slots: &[SlotReport], with_names: bool) -> String {
    let now_ms = super::now_unix_ms();
    let now = now_ms / 1000;
    let name_width = slots.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    let mut out = String::new();
    if with_names {
        let _ = write!(out, "{:<name_width$} ", "NAME");
    }
    let _ = writeln!(
        out,
        "{:<5} {:<9} {:>8} {:>9} {:>8} {:>9} {:>8}  {:<10} STATUS",
        "SLOT", "STATE", "PID", "CHILD", "UPTIME", "HEARTBEAT", "RESTARTS", "LAST EXIT"
    );
    for s in slots {
        let dash = || "-".to_string();
        let command_runs = matches!(
            s.state,
            SlotStatus::Starting
                | SlotStatus::Running
                | SlotStatus::Stopping
                | SlotStatus::Orphaned
        );
        let uptime = command_started_unix(s)
            .filter(|_| command_runs)
            .map_or_else(dash, |t| fmt_duration(now.saturating_sub(t)));
        if with_names {
            let _ = write!(out, "{:<name_width$} ", s.name);
        }
        let line = format!(
            "{:<5} {:<9} {:>8} {:>9} {:>8} {:>9} {:>8}  {:<10} {}",
            s.slot,
            s.state.as_str(),
            s.pid.map_or_else(dash, |p| p.to_string()),
            s.child_pid.map_or_else(dash, |p| p.to_string()),
            uptime,
            s.heartbeat_age_s.map_or_else(dash, |a| format!("{a:.1}s")),
            s.restarts.map_or_else(dash, |r| r.to_string()),
            s.last_exit.clone().unwrap_or_else(dash),
            note(s, now_ms).unwrap_or_else(dash),
        );
        // Control characters in STATUS= text must not reach the terminal.
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its name, type, help, and a value per slot (`None`
/// leaves the slot's sample out).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&SlotReport) -> Option<f64>,
}

const FAMILIES: [Family; 6] = [
    Family {
        name: "rdaemon_slot_up",
        kind: "gauge",
        help: "1 when the peer counts as running (COMMAND runs, and is ready under --notify), else 0.",
        value: |s| Some(if s.state.is_up() { 1.0 } else { 0.0 }),
    },
    Family {
        name: "rdaemon_slot_start_time_seconds",
        kind: "gauge",
        help: "When COMMAND last started, Unix time.",
        value: |s| {
            s.command_started_unix_ms
                .map(|ms| ms as f64 / 1000.0)
                .or(s.started_unix.map(|t| t as f64))
        },
    },
    Family {
        name: "rdaemon_slot_restarts_total",
        kind: "counter",
        help: "Restarts of COMMAND since the slot was taken.",
        value: |s| s.restarts.map(f64::from),
    },
    Family {
        name: "rdaemon_slot_heartbeat_age_seconds",
        kind: "gauge",
        help: "Seconds since the slot holder's last heartbeat.",
        value: |s| s.heartbeat_age_s,
    },
    Family {
        name: "rdaemon_slot_resident_memory_bytes",
        kind: "gauge",
        help: "Resident memory of COMMAND's whole process tree, bytes.",
        value: |s| s.rss_bytes.map(|b| b as f64),
    },
    Family {
        name: "rdaemon_slot_last_exit_code",
        kind: "gauge",
        help: "How COMMAND last exited: its status, or 128+N for signal N.",
        value: |s| s.last_exit_code.map(f64::from),
    },
];

/// `--status --format prometheus`: the text exposition format, without
/// timestamps (for node_exporter's textfile collector), labelled `name`
/// and `slot`. A family appears only when some slot has a value for it.
pub fn to_prometheus(slots: &[SlotReport]) -> String {
    let mut out = String::new();
    let labels = |s: &SlotReport| format!("name=\"{}\",slot=\"{}\"", label(&s.name), s.slot);
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    let emit = |out: &mut String, f: &Family| {
        let samples: Vec<(String, f64)> = slots
            .iter()
            .filter_map(|s| (f.value)(s).map(|v| (labels(s), v)))
            .collect();
        if samples.is_empty() {
            return;
        }
        header(out, f.name, f.kind, f.help);
        for (l, v) in samples {
            let _ = writeln!(out, "{}{{{l}}} {v}", f.name);
        }
    };
    emit(&mut out, &FAMILIES[0]);
    if !slots.is_empty() {
        header(
            &mut out,
            "rdaemon_slot_state",
            "gauge",
            "The slot's state: 1 for the current one, 0 for the others.",
        );
        for s in slots {
            for state in SlotStatus::ALL {
                let _ = writeln!(
                    out,
                    "rdaemon_slot_state{{{},state=\"{}\"}} {}",
                    labels(s),
                    state.as_str(),
                    u8::from(s.state == state)
                );
            }
        }
    }
    for f in &FAMILIES[1..] {
        emit(&mut out, f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn report() -> SlotReport {
        let mut s = SlotReport::new("mailer", 2, PathBuf::from("/run/rdaemon/mailer.2.pid"));
        s.state = SlotStatus::Running;
        s.pid = Some(10);
        s.child_pid = Some(11);
        s.status_text = Some("said \"hi\"\n\u{1b}[31m".into());
        s.command_started_unix_ms = Some(1_790_000_100_500);
        s.started_unix = Some(1_790_000_000);
        s
    }

    #[test]
    fn json_has_the_contracts_fields_and_escapes() {
        let text = to_json(&[report()]);
        assert!(text.starts_with(
            "[{\"name\":\"mailer\",\"slot\":2,\"state\":\"running\",\"pid\":10,\"child_pid\":11,"
        ));
        assert!(text.contains("\"command_started_unix\":1790000100,"));
        assert!(text.contains("\"last_exit\":null,"));
        assert!(
            text.contains(r#""status_text":"said \"hi\"\n\u001b[31m""#),
            "{text}"
        );
        assert_eq!(to_json(&[]), "[]");
    }

    #[test]
    fn text_never_passes_control_characters() {
        let text = to_text(&[report()], true);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.starts_with("NAME   SLOT"), "{text}");
    }

    #[test]
    fn prometheus_has_one_state_sample_per_state_and_no_empty_family() {
        let text = to_prometheus(&[report()]);
        let states = text
            .lines()
            .filter(|l| l.starts_with("rdaemon_slot_state{"))
            .count();
        assert_eq!(states, SlotStatus::ALL.len());
        assert!(text.contains("rdaemon_slot_up{name=\"mailer\",slot=\"2\"} 1\n"));
        assert!(text.contains(
            "rdaemon_slot_start_time_seconds{name=\"mailer\",slot=\"2\"} 1790000100.5\n"
        ));
        // No exit yet: the family is left out entirely.
        assert!(!text.contains("rdaemon_slot_last_exit_code"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(to_prometheus(&[]), "");
    }
}
