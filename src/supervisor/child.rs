//! Starting COMMAND: its process group, identity, environment, signal
//! state, death signal and descriptors.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
    /// The descriptor holding the PID directory's shared lock, inherited
    /// on purpose too (see mod.rs): an orphaned COMMAND keeps the slot's
    /// files safe from /tmp cleaners.
    pub dir_lock_fd: Option<BorrowedFd<'a>>,
    /// The signal COMMAND gets when its supervisor dies
    /// (`PR_SET_PDEATHSIG`): SIGTERM, or SIGKILL while a cluster lease is
    /// held (nobody can renew the lease once the supervisor is gone).
    pub death_signal: i32,
    /// Extra environment for this run (slot number, notify socket).
    pub extra_env: Vec<(OsString, OsString)>,
}

/// Spawns COMMAND as the leader of a new process group. Returns its PID
/// once its exec is past the point of no return, which is before the new
/// image is complete (see [`crate::proc::await_exec_image`]); exec
/// failures come back as the errno (std's CLOEXEC error pipe carries it
/// from the child).
///
/// In the child, before exec and in this order: the slot's lock descriptor
/// and the PID directory's lock descriptor are made inheritable, the umask set, the identity assumed (`--user`), the
/// working directory changed (as that identity), every signal unblocked
/// and put back to its default action (nothing the caller blocked or
/// ignored reaches COMMAND), and `PR_SET_PDEATHSIG(io.death_signal)` set, last,
/// because a credential change clears it: COMMAND is told when its
/// supervisor dies.
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
    let lock_fd = io.lock_fd.as_raw_fd();
    let dir_lock_fd = io.dir_lock_fd.map(|fd| fd.as_raw_fd());
    let death_signal = io.death_signal;
    let umask = spec.umask;
    let ident = spec.identity.as_ref().map(|id| {
        let groups: Vec<libc::gid_t> = id.groups.iter().map(|g| g.as_raw()).collect();
        (groups, id.gid.as_raw(), id.uid.as_raw())
    });
    let chdir = match &spec.chdir {
        Some(dir) => Some(
            CString::new(dir.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in --chdir"))?,
        ),
        None => None,
    };
    // SAFETY: getpid has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (fcntl, umask, setgroups, setgid,
    // setuid, chdir, sigprocmask, signal, prctl, getppid) on values prepared
    // before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Keep the slot's lock across exec: COMMAND holds the slot too,
            // so the slot stays held as long as any of its tree runs, even
            // if the supervisor is killed.
            if libc::fcntl(lock_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The same for the PID directory's shared lock: while any
            // holder of the slot lives, systemd-tmpfiles skips the
            // directory and never ages the slot's files out.
            if let Some(fd) = dir_lock_fd
                && libc::fcntl(fd, libc::F_SETFD, 0) < 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(mask) = umask {
                libc::umask(mask as libc::mode_t);
            }
            if let Some((groups, gid, uid)) = &ident
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(*gid) < 0
                    || libc::setuid(*uid) < 0)
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(dir) = &chdir
                && libc::chdir(dir.as_ptr()) < 0
            {
                return Err(io::Error::last_os_error());
            }
            reset_signals();
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor died before the death signal was armed.
            if libc::getppid() != supervisor {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The supervisor reaps with waitpid(); std's handle is not needed.
    Ok(child.id() as i32)
}

/// Unblocks every signal and gives every catchable one its default
/// action. Async-signal-safe (used between fork and exec too).
///
/// The raw `rt_sigaction` system call is used because libc's wrappers
/// refuse the two real-time signals libc keeps for itself (32 and 33 with
/// glibc), which a caller may still have left ignored. An all-zero kernel
/// `sigaction` is SIG_DFL with no flags and an empty mask on every
/// architecture, whatever the order of its fields.
pub fn reset_signals() {
    let default = [0u64; 4];
    // SAFETY: sigemptyset/sigprocmask on a local set; rt_sigaction with a
    // zeroed (SIG_DFL) action that outlives the call, no old action, and
    // the kernel's sigset size; failures (SIGKILL, SIGSTOP) are ignored.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
    }
}

/// Checks `--chdir DIR` before COMMAND is spawned, so that a missing
/// directory, a file, or one COMMAND's user may not enter fails the start
/// with a message naming it, instead of looking like an exec failure.
/// With an identity, the permission check reads the mode bits (owner,
/// group, other); the chdir in the child remains the final word.
pub fn check_dir(dir: &std::path::Path, identity: Option<&Identity>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let fail = |why: &dyn std::fmt::Display| {
        format!("cannot change to directory {}: {why}", dir.display())
    };
    let meta = std::fs::metadata(dir).map_err(|e| fail(&e))?;
    if !meta.is_dir() {
        return Err(fail(&"not a directory"));
    }
    match identity {
        None => nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).map_err(|e| fail(&e)),
        Some(id) if id.uid.is_root() => Ok(()),
        Some(id) => {
            let mode = meta.mode();
            let ok = if meta.uid() == id.uid.as_raw() {
                mode & 0o100 != 0
            } else if id.groups.iter().any(|g| g.as_raw() == meta.gid()) {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if ok {
                Ok(())
            } else {
                Err(fail(&format!("permission denied for user {}", id.user)))
            }
        }
    }
}

/// Says why exec of COMMAND failed. An ENOENT for a file that exists
/// means its interpreter is missing, not the file: a script's `#!`
/// interpreter (named, read from at most the first 256 bytes; a `#!` line
/// ending in a carriage return is called out as DOS line endings) or an
/// executable's dynamic loader. Otherwise the error as it is.
///
/// Blocks only to open and read the start of a regular file (opened
/// non-blocking, so a FIFO in its place cannot hang it).
pub fn describe_exec_failure(spec: &ChildSpec, err: &io::Error) -> String {
    let argv0 = spec.argv[0].to_string_lossy();
    let plain = format!("cannot execute {argv0}: {err}");
    if err.raw_os_error() != Some(libc::ENOENT) {
        return plain;
    }
    let Some(file) = locate(spec) else {
        return plain;
    };
    match interpreter_of(&file) {
        Some(Interpreter::Script(interp)) if interp.ends_with('\r') => format!(
            "cannot execute {argv0}: its #! interpreter {:?} was not found: the #! line ends in a carriage return (DOS line endings)",
            interp
        ),
        Some(Interpreter::Script(interp)) => {
            format!("cannot execute {argv0}: its #! interpreter {interp} was not found")
        }
        Some(Interpreter::Binary) => format!(
            "cannot execute {argv0}: the file exists, but its program interpreter (dynamic loader) was not found"
        ),
        None => plain,
    }
}

/// What exec would run COMMAND's file with.
enum Interpreter {
    /// The path on its `#!` line.
    Script(String),
    /// Not a script: an executable whose loader is missing.
    Binary,
}

/// The file exec was asked to run: `argv[0]` itself when it has a slash
/// (relative to `--chdir`, where the exec happens), else the first
/// regular file of that name in COMMAND's `PATH`.
fn locate(spec: &ChildSpec) -> Option<PathBuf> {
    let argv0 = std::path::Path::new(&spec.argv[0]);
    if spec.argv[0].as_bytes().contains(&b'/') {
        let path = match &spec.chdir {
            Some(dir) if argv0.is_relative() => dir.join(argv0),
            _ => argv0.to_path_buf(),
        };
        return path.is_file().then_some(path);
    }
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(argv0))
        .find(|p| p.is_file())
}

fn interpreter_of(path: &std::path::Path) -> Option<Interpreter> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let head = &head[..n];
    let Some(line) = head.strip_prefix(b"#!") else {
        return Some(Interpreter::Binary);
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let interp = line
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t'])
        .next()
        .unwrap_or_default();
    if interp.is_empty() {
        return None;
    }
    Some(Interpreter::Script(interp.to_string()))
}
