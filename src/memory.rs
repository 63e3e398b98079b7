//! Resident memory, from /proc.

use std::collections::HashMap;
use std::fs;

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

fn statm_rss(path: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// This process's resident set size in bytes.
pub fn self_rss() -> Option<u64> {
    statm_rss("/proc/self/statm")
}

/// This process's peak resident set size in bytes (`getrusage`'s
/// `ru_maxrss`): one system call, no file. The current RSS never exceeds
/// it, so a peak under a limit proves the RSS is under it too.
pub fn self_peak_rss() -> Option<u64> {
    // SAFETY: getrusage(2) fills the zero-initialised (valid) struct it is
    // given; RUSAGE_SELF is always a valid target.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    // Linux reports kibibytes.
    u64::try_from(usage.ru_maxrss).ok().map(|kib| kib * 1024)
}

/// The resident memory of `root` and all its descendants, in bytes, found
/// through the parent links in `/proc/*/stat` (descendants that started
/// their own session or group still count). `None` if `root` is gone.
///
/// A process whose leader is a zombie while its threads run (`pthread_exit`
/// in `main`) reads as 0 in its own `statm`: its memory is counted from a
/// running thread's (see [`crate::proc::live_dir`]). A true zombie holds
/// no memory and counts 0.
pub fn tree_rss(root: i32) -> Option<u64> {
    let (own, below) = sum_tree(root);
    Some(own? + below)
}

/// The resident memory of `root`'s descendants alone, in bytes (0 when it
/// has none, or is gone): a supervisor's whole tree, including what was
/// re-parented to it as a subreaper, without the supervisor itself.
pub fn descendants_rss(root: i32) -> u64 {
    sum_tree(root).1
}

/// `root`'s own resident memory (`None` when it is gone) and its
/// descendants', from one walk of `/proc`.
fn sum_tree(root: i32) -> (Option<u64>, u64) {
    use crate::proc::{ProcStat, exited_state, live_dir};
    let mut children: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    let mut root_stat = None;
    for pid in crate::proc::all_pids() {
        if let Some(st) = crate::proc::stat(pid) {
            if pid == root {
                root_stat = Some(st);
            }
            children.entry(st.ppid).or_default().push(st);
        }
    }
    let rss = |st: &ProcStat| {
        if exited_state(st.state) {
            statm_rss(&format!("{}/statm", live_dir(st)?))
        } else {
            statm_rss(&format!("/proc/{}/statm", st.pid))
        }
    };
    // `all_pids` leaves out PID 1, which the root is when rdaemon is a
    // container's init.
    let own = root_stat
        .or_else(|| crate::proc::stat(root))
        .map(|st| rss(&st).unwrap_or(0));
    let mut below = 0;
    let mut stack = children.remove(&root).unwrap_or_default();
    while let Some(st) = stack.pop() {
        below += rss(&st).unwrap_or(0);
        if let Some(more) = children.remove(&st.pid) {
            stack.extend(more);
        }
    }
    (own, below)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_rss_is_plausible() {
        let rss = super::self_rss().unwrap();
        assert!(rss > 100_000 && rss < 10_000_000_000);
        assert!(super::self_peak_rss().unwrap() >= rss);
        let tree = super::tree_rss(std::process::id() as i32).unwrap();
        assert!(tree >= rss / 2);
    }
}
