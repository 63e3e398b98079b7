//! Parsing and validating PIDs read from files that must not be trusted.
//!
//! A PID file can contain anything: garbage, a negative number, `0` (which
//! `kill` turns into "my whole process group"), `1`, or a number past
//! `pid_max`. This module is the only place that turns such bytes into a PID,
//! and it refuses everything but a plain decimal number in `2..=pid_max`
//! followed by at most one newline.

use std::fmt;
use std::fs;

/// A process ID that rdaemon validated: greater than 1 and at most the
/// kernel's `pid_max`, so never "every process" (-1), "my process group"
/// (0) or init (1) when aimed at with `kill`.
///
/// Where it comes from a file or another process, rdaemon only hands one
/// out after proving what it claims (for [`Error::Busy`], that the process
/// holds the slot's lock); it may of course have exited since.
///
/// [`Error::Busy`]: crate::Error::Busy
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(i32);

impl Pid {
    /// `pid` if it is a valid signal target (2 to `pid_max`).
    pub fn from_raw(pid: i32) -> Option<Pid> {
        valid_signal_target(i64::from(pid), pid_max()).map(Pid)
    }

    /// The number, for system calls.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl From<Pid> for i32 {
    fn from(pid: Pid) -> i32 {
        pid.0
    }
}

impl PartialEq<i32> for Pid {
    fn eq(&self, other: &i32) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How much of a PID file is ever read: enough for any PID and a newline.
pub const MAX_PID_FILE_READ: usize = 32;

/// Largest PID the kernel can hand out (`/proc/sys/kernel/pid_max`, falling
/// back to the hard limit of 2^22).
/// Read once per process: it only changes by an administrator's sysctl.
pub fn pid_max() -> i32 {
    const LIMIT: i32 = 1 << 22;
    static PID_MAX: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *PID_MAX.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&n| n > 1 && n <= LIMIT)
            .unwrap_or(LIMIT)
    })
}

/// Parses the content of a PID file: ASCII digits with no sign, no spaces, no
/// leading zero, then an optional single `\n`, and nothing else.
pub fn parse_pid_file(content: &[u8], pid_max: i32) -> Option<i32> {
    let digits = content.strip_suffix(b"\n").unwrap_or(content);
    if digits.is_empty() || digits.len() > 10 || digits[0] == b'0' {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        n = n * 10 + i64::from(d - b'0');
    }
    valid_signal_target(n, pid_max)
}

/// A PID we may aim a signal at: greater than 1 and at most `pid_max`.
pub fn valid_signal_target(n: i64, pid_max: i32) -> Option<i32> {
    (n > 1 && n <= i64::from(pid_max)).then_some(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: i32 = 4_194_304;

    #[test]
    fn accepts_plain_pids() {
        assert_eq!(parse_pid_file(b"1234\n", MAX), Some(1234));
        assert_eq!(parse_pid_file(b"2", MAX), Some(2));
        assert_eq!(parse_pid_file(b"4194304\n", MAX), Some(MAX));
    }

    #[test]
    fn refuses_hostile_content() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"abc",
            b"12abc",
            b"-1",
            b"0",
            b"1",
            b"1\n",
            b"+5",
            b" 5",
            b"5 ",
            b"5\n6",
            b"5\n\n",
            b"2147483648",
            b"4294967297",
            b"4194305",
            b"0012",
            b"12\0",
            b"\x00",
            b"\xff",
            b"99999999999999999999",
        ];
        for c in cases {
            assert_eq!(
                parse_pid_file(c, MAX),
                None,
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn typed_pids_refuse_what_kill_would_misread() {
        for bad in [i32::MIN, -1, 0, 1, i32::MAX] {
            assert_eq!(Pid::from_raw(bad), None, "{bad}");
        }
        let me = Pid::from_raw(std::process::id() as i32).unwrap();
        assert_eq!(me, std::process::id() as i32);
        assert_eq!(me.to_string(), std::process::id().to_string());
    }

    #[test]
    fn pid_max_is_sane() {
        let m = pid_max();
        assert!(m > 300 && m <= 1 << 22);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_stay_in_range(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(p) = parse_pid_file(&bytes, MAX) {
                prop_assert!(p > 1 && p <= MAX);
            }
        }

        #[test]
        fn valid_pids_roundtrip(p in 2i32..=MAX) {
            prop_assert_eq!(parse_pid_file(format!("{p}\n").as_bytes(), MAX), Some(p));
        }
    }
}
