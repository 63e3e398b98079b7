//! Starting COMMAND: its process group, identity, environment and
//! descriptors.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};

/// `--user USER[:GROUP]`, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

impl Identity {
    /// Resolves `USER[:GROUP]` (names or numeric IDs) and the user's
    /// supplementary groups.
    pub fn resolve(spec: &str) -> Result<Identity, String> {
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let user = match user_part.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(user_part),
        }
        .map_err(|e| format!("cannot look up user {user_part:?}: {e}"))?
        .ok_or_else(|| format!("no such user: {user_part:?}"))?;
        let gid = match group_part {
            None => user.gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => Gid::from_raw(gid),
                Err(_) => {
                    Group::from_name(g)
                        .map_err(|e| format!("cannot look up group {g:?}: {e}"))?
                        .ok_or_else(|| format!("no such group: {g:?}"))?
                        .gid
                }
            },
        };
        let cname =
            CString::new(user.name.clone()).map_err(|_| "user name contains NUL".to_string())?;
        let mut groups = nix::unistd::getgrouplist(&cname, gid)
            .map_err(|e| format!("cannot list groups of {}: {e}", user.name))?;
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Ok(Identity {
            user: user.name,
            uid: user.uid,
            gid,
            groups,
            home: user.dir,
        })
    }
}

/// Everything needed to start COMMAND, fixed for the supervisor's life.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub chdir: Option<PathBuf>,
    pub umask: Option<u32>,
    pub identity: Option<Identity>,
}

/// Descriptors a run of COMMAND gets.
pub struct ChildIo<'a> {
    pub stdout: Option<&'a OwnedFd>,
    pub stderr: Option<&'a OwnedFd>,
    /// The slot's locked descriptor, inherited on purpose (see mod.rs).
    pub lock_fd: BorrowedFd<'a>,
    /// Extra environment for this run (slot number, notify socket).
    pub extra_env: Vec<(OsString, OsString)>,
}

/// Spawns COMMAND as the leader of a new process group. Returns its PID
/// once its exec is past the point of no return, which is before the new
/// image is complete (see [`crate::proc::await_exec_image`]); exec
/// failures come back as the errno (std's CLOEXEC error pipe carries it
/// from the child).
pub fn spawn(spec: &ChildSpec, io: &ChildIo<'_>) -> io::Result<i32> {
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..]);
    cmd.stdin(Stdio::null());
    if let Some(fd) = io.stdout {
        cmd.stdout(Stdio::from(fd.try_clone()?));
    }
    if let Some(fd) = io.stderr {
        cmd.stderr(Stdio::from(fd.try_clone()?));
    }
    cmd.process_group(0);
    if let Some(dir) = &spec.chdir {
        cmd.current_dir(dir);
    }
    if let Some(id) = &spec.identity {
        cmd.env("USER", &id.user)
            .env("LOGNAME", &id.user)
            .env("HOME", &id.home);
    }
    // rdaemon's own sd_notify environment (when it runs under systemd)
    // addresses rdaemon, never COMMAND; COMMAND gets its own in extra_env.
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        cmd.env_remove(var);
    }
    cmd.env("RDAEMON_LOCK_FD", io.lock_fd.as_raw_fd().to_string());
    for (k, v) in spec.env.iter().chain(io.extra_env.iter()) {
        cmd.env(k, v);
    }
    let Some(ident) = spec.identity.clone() else {
        return spawn_without_hook(&mut cmd, io.lock_fd, spec.umask);
    };
    let lock_fd = io.lock_fd.as_raw_fd();
    let umask = spec.umask;
    let groups: Vec<libc::gid_t> = ident.groups.iter().map(|g| g.as_raw()).collect();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (fcntl, umask, setgroups, setgid,
    // setuid) on values prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Keep the slot's lock across exec: COMMAND holds the slot too,
            // so the slot stays held as long as COMMAND runs, even if the
            // supervisor is killed.
            if libc::fcntl(lock_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(mask) = umask {
                libc::umask(mask as libc::mode_t);
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(ident.gid.as_raw()) < 0
                || libc::setuid(ident.uid.as_raw()) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The supervisor reaps with waitpid(); std's handle is not needed.
    Ok(child.id() as i32)
}

/// Spawns COMMAND when there is no identity to assume: what a pre_exec
/// hook would do in the child (let the lock descriptor survive exec, set
/// the umask) is done in the supervisor around the spawn instead. Without
/// a hook std spawns through posix_spawn, a vfork-style clone with musl,
/// instead of fork(): measured 3-9 % faster starts (BENCHMARKS.md). The
/// supervisor is single-threaded, so nothing else execs while the lock
/// descriptor is inheritable, and nothing is created under the changed
/// umask.
fn spawn_without_hook(
    cmd: &mut Command,
    lock_fd: BorrowedFd<'_>,
    umask: Option<u32>,
) -> io::Result<i32> {
    let inheritable = |yes: bool| {
        let flags = if yes {
            FdFlag::empty()
        } else {
            FdFlag::FD_CLOEXEC
        };
        fcntl(lock_fd, FcntlArg::F_SETFD(flags))
            .map(drop)
            .map_err(io::Error::from)
    };
    inheritable(true)?;
    let saved = umask.map(|m| nix::sys::stat::umask(Mode::from_bits_truncate(m as libc::mode_t)));
    let spawned = cmd.spawn();
    if let Some(old) = saved {
        nix::sys::stat::umask(old);
    }
    // Later spawns set the flag afresh; failing to clear it only lets the
    // descriptor reach COMMAND's next run, which gets it anyway.
    let _ = inheritable(false);
    // The supervisor reaps with waitpid(); std's handle is not needed.
    Ok(spawned?.id() as i32)
}
