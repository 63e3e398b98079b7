//! Starting COMMAND: its process group, identity, environment, signal
//! state, death signal and descriptors.
//!
//! COMMAND is started the way `posix_spawn(3)` starts a program, with a
//! child that borrows the supervisor's memory until its exec
//! (`clone(CLONE_VM | CLONE_VFORK)`), because `posix_spawn` itself cannot
//! arm a death signal after a credential change. See [`spawn`] for the
//! rules that child lives by.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

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
/// image is complete (see [`crate::proc::await_exec_image`]); a failure
/// before or in exec comes back as a [`SpawnError`] naming the step and
/// the errno.
///
/// In the child, before exec and in this order: stdio set up, the slot's
/// lock descriptor and the PID directory's lock descriptor made
/// inheritable, the umask set, the identity assumed (`--user`), the
/// working directory changed (as that identity), every signal put back to
/// its default action and then unblocked (nothing the caller blocked or
/// ignored reaches COMMAND), and `PR_SET_PDEATHSIG(io.death_signal)` set,
/// last, because a credential change clears it: COMMAND is told when its
/// supervisor dies.
///
/// The child is made with `clone(CLONE_VM | CLONE_VFORK)` on a stack of
/// its own, as glibc's and musl's `posix_spawn` do, not with `fork()`:
/// nothing of the supervisor's memory is copied, and this thread resumes
/// only once the child has exec'd or failed. `posix_spawn` itself cannot
/// set a death signal or credentials in this order, and a `fork()` costs
/// several hundred microseconds on the path that the caller of a start
/// waits on (BENCHMARKS.md). Because the child shares the supervisor's
/// memory, it only makes raw system calls on data prepared here (no
/// allocation, no locks, no libc wrapper that touches other threads:
/// glibc's `setuid()` would signal every thread of the supervisor), and
/// every signal is blocked in this thread across the clone so that no
/// handler of the supervisor ever runs in the child.
pub fn spawn(spec: &ChildSpec, io: &ChildIo<'_>) -> Result<i32, SpawnError> {
    let plan = Plan::new(spec, io)?;
    // Left uninitialised: zeroing it would touch (fault in) all sixteen
    // pages, at about 3 µs each here, where the child uses one or two.
    let mut stack = Vec::<u8>::with_capacity(CHILD_STACK);
    // SAFETY: the stack grows down on every Linux architecture rdaemon
    // builds for; one past the end of the allocation, aligned down to 16,
    // is its top. The child only writes below it, into memory this
    // allocation owns.
    let top = unsafe { stack.as_mut_ptr().add(stack.capacity()) } as usize & !15;
    // Every signal, libc's own real-time ones included (as posix_spawn
    // blocks them): the kernel's 64-bit set, through the raw call.
    let all = u64::MAX;
    let mut old = 0u64;
    // SAFETY: sigfillset/pthread_sigmask on local sets; clone with a child
    // function that only reads `plan` (alive until clone returns, which
    // CLONE_VFORK makes wait for the child's exec or exit) and writes its
    // `failure` atomically; the stack is ours and outlives the child's use
    // of it for the same reason.
    let pid = unsafe {
        sigmask_raw(&all, &mut old);
        let pid = libc::clone(
            run_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&plan as *const Plan).cast_mut().cast(),
        );
        let clone_errno = std::io::Error::last_os_error();
        sigmask_raw(&old, &mut 0);
        if pid < 0 {
            return Err(SpawnError {
                step: Step::Clone,
                errno: clone_errno.raw_os_error().unwrap_or(0),
            });
        }
        pid
    };
    drop(stack);
    let failure = plan.failure.load(Ordering::Acquire);
    if failure != 0 {
        // The child has exited (status 127); reap it here, where its PID
        // is known, as std's Command does after a failed exec.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(SpawnError::decode(failure));
    }
    Ok(pid)
}

/// Sets this thread's signal mask to `set` (the kernel's 64-bit set) and
/// stores the old one in `old`.
///
/// # Safety
/// Blocking signals libc keeps for itself is only for a short window
/// around a clone, as `posix_spawn` does.
pub(crate) unsafe fn sigmask_raw(set: &u64, old: &mut u64) {
    // SAFETY: both pointers are valid for the kernel's 8-byte set.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            set as *const u64,
            old as *mut u64,
            8usize,
        );
    }
}

/// Bytes of stack for the cloned child: it runs one small function of
/// raw system calls (glibc's `posix_spawn` gives its child 32 KiB plus
/// the argument vector; the vectors here live on the heap).
const CHILD_STACK: usize = 64 * 1024;

/// The step of starting COMMAND that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the child process.
    Clone,
    /// Setting up its descriptors and process group.
    Descriptors,
    /// Changing to `--user`'s groups and IDs.
    Identity,
    /// Changing to `--chdir`.
    Chdir,
    /// Unblocking every signal.
    Signals,
    /// Arming the death signal (or the supervisor died meanwhile).
    DeathSignal,
    /// The exec itself.
    Exec,
}

/// Why COMMAND could not be started: the step and its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnError {
    pub step: Step,
    pub errno: i32,
}

impl SpawnError {
    const STEPS: [Step; 7] = [
        Step::Clone,
        Step::Descriptors,
        Step::Identity,
        Step::Chdir,
        Step::Signals,
        Step::DeathSignal,
        Step::Exec,
    ];

    /// The child's report: step index in the high byte, errno below.
    fn encode(step: Step, errno: i32) -> i32 {
        let i = Self::STEPS.iter().position(|s| *s == step).unwrap_or(0) as i32;
        ((i + 1) << 24) | (errno & 0xff_ffff)
    }

    fn decode(v: i32) -> SpawnError {
        let i = ((v >> 24) - 1).clamp(0, Self::STEPS.len() as i32 - 1) as usize;
        SpawnError {
            step: Self::STEPS[i],
            errno: v & 0xff_ffff,
        }
    }

    /// The error as an [`io::Error`] (its errno).
    pub fn io(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

/// Everything the cloned child reads, prepared before the clone: C
/// strings and pointer vectors, descriptors, IDs.
struct Plan {
    /// `argv`, NULL-terminated; pointers into `_argv`.
    argv: Vec<*const libc::c_char>,
    _argv: Vec<CString>,
    /// `envp`, NULL-terminated; pointers into `_envp`.
    envp: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    /// The paths exec tries, in order (`execvp`'s PATH search).
    candidates: Vec<CString>,
    stdin: OwnedFd,
    stdout: Option<i32>,
    stderr: Option<i32>,
    lock_fd: i32,
    dir_lock_fd: Option<i32>,
    umask: Option<libc::mode_t>,
    ident: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    chdir: Option<CString>,
    death_signal: i32,
    supervisor: libc::pid_t,
    /// Written by the child on failure: [`SpawnError::encode`].
    failure: AtomicI32,
}

impl Plan {
    fn new(spec: &ChildSpec, io: &ChildIo<'_>) -> Result<Plan, SpawnError> {
        let invalid = |step| SpawnError {
            step,
            errno: libc::EINVAL,
        };
        let cstr = |b: &[u8], step| CString::new(b).map_err(|_| invalid(step));
        let argv_c = spec
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes(), Step::Exec))
            .collect::<Result<Vec<_>, _>>()?;
        let env = child_env(spec, io);
        let envp_c = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstr(&kv, Step::Exec)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let candidates = exec_candidates(&spec.argv[0], path.as_deref())
            .into_iter()
            .map(|p| cstr(&p, Step::Exec))
            .collect::<Result<Vec<_>, _>>()?;
        let stdin = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| SpawnError {
            step: Step::Descriptors,
            errno: e as i32,
        })?;
        let chdir = match &spec.chdir {
            Some(dir) => Some(cstr(dir.as_os_str().as_bytes(), Step::Chdir)?),
            None => None,
        };
        let with_null = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(Plan {
            argv: with_null(&argv_c),
            _argv: argv_c,
            envp: with_null(&envp_c),
            _envp: envp_c,
            candidates,
            stdin,
            stdout: io.stdout.map(|fd| fd.as_raw_fd()),
            stderr: io.stderr.map(|fd| fd.as_raw_fd()),
            lock_fd: io.lock_fd.as_raw_fd(),
            dir_lock_fd: io.dir_lock_fd.map(|fd| fd.as_raw_fd()),
            umask: spec.umask.map(|m| m as libc::mode_t),
            ident: spec.identity.as_ref().map(|id| {
                let groups = id.groups.iter().map(|g| g.as_raw()).collect();
                (groups, id.gid.as_raw(), id.uid.as_raw())
            }),
            chdir,
            death_signal: io.death_signal,
            // SAFETY: getpid has no preconditions.
            supervisor: unsafe { libc::getpid() },
            failure: AtomicI32::new(0),
        })
    }
}

/// COMMAND's environment: the supervisor's, without rdaemon's own
/// sd_notify variables (when it runs under systemd they address rdaemon,
/// never COMMAND; COMMAND gets its own in `extra_env`), with USER, LOGNAME
/// and HOME of `--user`, `RDAEMON_LOCK_FD`, then `--env` and the run's
/// extra variables, later ones replacing earlier ones of the same name.
fn child_env(spec: &ChildSpec, io: &ChildIo<'_>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    // One entry per name, the last value winning, as std's Command and
    // getenv(3) agree on.
    let mut set = |k: OsString, v: OsString| match env.iter_mut().find(|(have, _)| *have == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    for (k, v) in std::env::vars_os() {
        if !["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"].contains(&k.to_str().unwrap_or("")) {
            set(k, v);
        }
    }
    if let Some(id) = &spec.identity {
        set("USER".into(), id.user.clone().into());
        set("LOGNAME".into(), id.user.clone().into());
        set("HOME".into(), id.home.clone().into());
    }
    set(
        "RDAEMON_LOCK_FD".into(),
        io.lock_fd.as_raw_fd().to_string().into(),
    );
    for (k, v) in spec.env.iter().chain(io.extra_env.iter()) {
        set(k.clone(), v.clone());
    }
    env
}

/// The files exec tries for `argv0`, as `execvp(3)` does: `argv0` itself
/// when it contains a slash, else each directory of `path` (COMMAND's own
/// `PATH`, or `/usr/local/bin:/usr/bin:/bin` without one) in order, an
/// empty entry meaning the working directory.
fn exec_candidates(argv0: &std::ffi::OsStr, path: Option<&std::ffi::OsStr>) -> Vec<Vec<u8>> {
    let name = argv0.as_bytes();
    if name.contains(&b'/') {
        return vec![name.to_vec()];
    }
    if name.is_empty() {
        return Vec::new();
    }
    let path = path.map_or(&b"/usr/local/bin:/usr/bin:/bin"[..], |p| p.as_bytes());
    path.split(|&b| b == b':')
        .map(|dir| {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(name);
            full
        })
        .collect()
}

/// The cloned child. Shares the supervisor's memory until exec: raw
/// system calls only, on what [`Plan`] prepared.
extern "C" fn run_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Plan` that `spawn` keeps alive until clone
    // returns, which CLONE_VFORK delays until this child execs or exits.
    let plan = unsafe { &*(arg as *const Plan) };
    let fail = |step: Step| -> libc::c_int {
        // SAFETY: errno is read right after the failed call.
        let errno = unsafe { *errno_location() };
        plan.failure
            .store(SpawnError::encode(step, errno), Ordering::Release);
        // SAFETY: _exit ends only this process and runs nothing of the
        // supervisor's (no atexit handlers, no buffers flushed).
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call below is a system call (or a thin libc wrapper of
    // one that touches no shared state) on descriptors, IDs and strings
    // prepared before the clone.
    unsafe {
        if libc::setpgid(0, 0) < 0 {
            return fail(Step::Descriptors);
        }
        let stdio = [Some(plan.stdin.as_raw_fd()), plan.stdout, plan.stderr];
        for (target, fd) in stdio.into_iter().enumerate() {
            if let Some(fd) = fd {
                // dup2 onto itself would keep FD_CLOEXEC; clear it then.
                let r = if fd == target as i32 {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, target as i32)
                };
                if r < 0 {
                    return fail(Step::Descriptors);
                }
            }
        }
        // Keep the slot's lock across exec: COMMAND holds the slot too, so
        // the slot stays held as long as any of its tree runs, even if the
        // supervisor is killed. The same for the PID directory's shared
        // lock: while any holder of the slot lives, systemd-tmpfiles skips
        // the directory and never ages the slot's files out.
        for fd in std::iter::once(plan.lock_fd).chain(plan.dir_lock_fd) {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return fail(Step::Descriptors);
            }
        }
        if let Some(mask) = plan.umask {
            libc::umask(mask);
        }
        if let Some((groups, gid, uid)) = &plan.ident
            && (libc::syscall(SYS_SETGROUPS, groups.len(), groups.as_ptr()) < 0
                || libc::syscall(SYS_SETGID, *gid) < 0
                || libc::syscall(SYS_SETUID, *uid) < 0)
        {
            return fail(Step::Identity);
        }
        if let Some(dir) = &plan.chdir
            && libc::chdir(dir.as_ptr()) < 0
        {
            return fail(Step::Chdir);
        }
        if !reset_signals() {
            return fail(Step::Signals);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, plan.death_signal, 0, 0, 0) < 0 {
            return fail(Step::DeathSignal);
        }
        // The supervisor died before the death signal was armed.
        if libc::getppid() != plan.supervisor {
            *errno_location() = libc::ESRCH;
            return fail(Step::DeathSignal);
        }
        // execvp's rule: go on past a file that is missing or not
        // permitted, and report EACCES if any candidate gave it.
        let mut denied = false;
        for path in &plan.candidates {
            libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            match *errno_location() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {}
                _ => return fail(Step::Exec),
            }
        }
        *errno_location() = if denied { libc::EACCES } else { libc::ENOENT };
        fail(Step::Exec)
    }
}

// The credential system calls with 32-bit IDs: on 32-bit x86 and ARM the
// plain numbers are the old 16-bit calls (libc's wrappers use these).
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
use libc::{SYS_setgid as SYS_SETGID, SYS_setgroups as SYS_SETGROUPS, SYS_setuid as SYS_SETUID};
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
use libc::{
    SYS_setgid32 as SYS_SETGID, SYS_setgroups32 as SYS_SETGROUPS, SYS_setuid32 as SYS_SETUID,
};

/// This thread's `errno`.
///
/// # Safety
/// The pointer is only valid on the calling thread.
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: both libcs return the calling thread's errno slot.
    unsafe { libc::__errno_location() }
}

/// Unblocks every signal and gives every catchable one its default
/// action; false when the signal mask could not be cleared.
/// Async-signal-safe, and makes only system calls (used in the cloned
/// child too: sigprocmask is a plain system call in glibc and musl).
///
/// The actions go first: a process that had every signal blocked must
/// not run a handler it is about to drop once it unblocks them.
pub fn reset_signals() -> bool {
    reset_dispositions();
    unblock_all()
}

/// Gives every catchable signal its default action.
///
/// The raw `rt_sigaction` system call is used because libc's wrappers
/// refuse the two real-time signals libc keeps for itself (32 and 33 with
/// glibc), which a caller may still have left ignored. An all-zero kernel
/// `sigaction` is SIG_DFL with no flags and an empty mask on every
/// architecture, whatever the order of its fields.
pub fn reset_dispositions() {
    let default = [0u64; 4];
    // SAFETY: rt_sigaction with a zeroed (SIG_DFL) action that outlives
    // the call, no old action, and the kernel's sigset size; failures
    // (SIGKILL, SIGSTOP) are ignored.
    unsafe {
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

/// Unblocks every signal; false when the mask could not be set.
pub fn unblock_all() -> bool {
    // SAFETY: sigemptyset/sigprocmask on a local set.
    unsafe {
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == 0
    }
}

/// Blocks every signal (those libc keeps for itself aside) until
/// [`unblock_all`]: what arrives meanwhile stays pending, neither lost
/// nor acted on by default.
pub fn block_all() {
    // SAFETY: sigfillset/sigprocmask on a local set.
    unsafe {
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
}

/// The one wording of a `--chdir` failure, before or in the spawn.
fn chdir_failed(dir: &std::path::Path, why: &dyn std::fmt::Display) -> String {
    format!("cannot change to directory {}: {why}", dir.display())
}

/// Checks `--chdir DIR` before COMMAND is spawned, so that a missing
/// directory, a file, or one COMMAND's user may not enter fails the start
/// with a message naming it, instead of looking like an exec failure.
/// With an identity, the permission check reads the mode bits (owner,
/// group, other); the chdir in the child remains the final word.
pub fn check_dir(dir: &std::path::Path, identity: Option<&Identity>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let fail = |why: &dyn std::fmt::Display| chdir_failed(dir, why);
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

/// Says why COMMAND could not be started: the step that failed, or for
/// the exec itself, [`describe_exec_failure`].
pub fn describe_spawn_failure(spec: &ChildSpec, err: &SpawnError) -> String {
    let argv0 = spec.argv[0].to_string_lossy();
    let why = err.io();
    match err.step {
        Step::Exec => describe_exec_failure(spec, &why),
        Step::Clone => format!("cannot start {argv0}: cannot create its process: {why}"),
        Step::Descriptors => {
            format!("cannot start {argv0}: cannot set up its descriptors and process group: {why}")
        }
        Step::Identity => match &spec.identity {
            Some(id) => format!("cannot start {argv0} as user {}: {why}", id.user),
            None => format!("cannot start {argv0}: cannot change its user: {why}"),
        },
        Step::Chdir => match &spec.chdir {
            Some(dir) => chdir_failed(dir, &why),
            None => format!("cannot start {argv0}: {why}"),
        },
        Step::Signals => format!("cannot start {argv0}: cannot unblock its signals: {why}"),
        Step::DeathSignal => {
            format!("cannot start {argv0}: cannot arm its death signal: {why}")
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
    if err.raw_os_error() == Some(libc::ENOEXEC) {
        // execvp(3) would hand such a file to /bin/sh; rdaemon, like
        // posix_spawn(3) and systemd, runs only what the kernel can.
        return format!(
            "{plain}: it is neither a program for this machine nor a script with a #! line"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn strings(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn exec_candidates_follow_execvp() {
        // A slash: that file only, relative or not.
        assert_eq!(strings(exec_candidates(OsStr::new("./w"), None)), ["./w"]);
        assert_eq!(
            strings(exec_candidates(
                OsStr::new("/bin/sh"),
                Some(OsStr::new("/x"))
            )),
            ["/bin/sh"]
        );
        // No slash: every PATH entry in order; an empty one is the
        // working directory.
        assert_eq!(
            strings(exec_candidates(
                OsStr::new("php"),
                Some(OsStr::new("/a::/b"))
            )),
            ["/a/php", "./php", "/b/php"]
        );
        // No PATH at all: the usual default.
        assert_eq!(
            strings(exec_candidates(OsStr::new("sh"), None)),
            ["/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh"]
        );
        assert!(exec_candidates(OsStr::new(""), None).is_empty());
    }

    #[test]
    fn spawn_errors_survive_the_shared_word() {
        for step in SpawnError::STEPS {
            for errno in [libc::ENOENT, libc::EACCES, libc::EPERM, libc::ESRCH, 4095] {
                let e = SpawnError::decode(SpawnError::encode(step, errno));
                assert_eq!(e, SpawnError { step, errno });
            }
        }
        // Nothing written means no failure; the child writes non-zero.
        assert_ne!(SpawnError::encode(Step::Clone, 0), 0);
    }
}
