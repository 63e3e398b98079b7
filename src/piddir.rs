//! Finding, creating and vetting the PID directory.
//!
//! Slot files live in a directory that may be reachable by other users, and
//! rdaemon often runs as root. A directory that someone else can write to
//! lets them plant symlinks or forged PID files, so before any slot file is
//! touched the whole path is checked: every directory on it must be owned by
//! root or the caller and be writable by group or others only if sticky (like
//! `/tmp`), every symlink on it must be owned by root or the caller, and the
//! directory itself must be owned by root or the caller and writable by
//! neither group nor others. The directory is then opened once, and every
//! slot file is reached relative to that descriptor (`openat`), so renaming
//! the path afterwards cannot redirect rdaemon.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, lstat, stat};
use nix::unistd::{Uid, geteuid};

use crate::error::{Error, Result};
use crate::slot::FileId;

/// The environment variable that overrides the default PID directory.
pub const PID_DIR_ENV: &str = "RDAEMON_PID_DIR";

/// The PID directory the contract prescribes when none is given:
/// `$RDAEMON_PID_DIR`, else `/run/rdaemon` for root and
/// `/tmp/rdaemon-$UID` for everyone else.
///
/// The default depends on the effective user ID alone, never on
/// `XDG_RUNTIME_DIR` or another session variable: a login shell, cron,
/// `sudo -u` and a systemd user unit of the same user must all find the
/// same slots, and logind removes `XDG_RUNTIME_DIR` at logout. Files under
/// `/tmp` survive age-based cleaning because every slot holder keeps a
/// shared `flock` on the directory, which systemd-tmpfiles honours (see
/// [`PidDir::hold_shared`]).
pub fn default_pid_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PID_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let euid = geteuid();
    if euid.is_root() {
        return PathBuf::from("/run/rdaemon");
    }
    PathBuf::from(format!("/tmp/rdaemon-{}", euid.as_raw()))
}

/// An open, vetted PID directory.
#[derive(Debug)]
pub struct PidDir {
    path: PathBuf,
    fd: OwnedFd,
    /// The directory that was opened (and vetted), to tell whether the
    /// path still names it.
    id: FileId,
}

impl PidDir {
    /// Opens `path` for taking slots, creating it (mode 0755 for root, 0700
    /// otherwise; only the last component) when it does not exist.
    pub fn open_or_create(path: &Path) -> Result<PidDir> {
        let path = absolute(path)?;
        match lstat(&path) {
            Err(Errno::ENOENT) => create_dir(&path)?,
            Err(e) => return Err(Error::io("examine PID directory", &path, e.into())),
            Ok(_) => {}
        }
        Self::open_vetted(path)
    }

    /// Opens an existing `path` for inspection; `Ok(None)` when it does not
    /// exist. Never creates anything.
    pub fn open_existing(path: &Path) -> Result<Option<PidDir>> {
        let path = absolute(path)?;
        match lstat(&path) {
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Error::io("examine PID directory", &path, e.into())),
            Ok(_) => Self::open_vetted(path).map(Some),
        }
    }

    fn open_vetted(path: PathBuf) -> Result<PidDir> {
        let euid = geteuid();
        check_ancestry(&path, euid)?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = open(&path, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOTDIR => unsafe_dir(&path, "it is not a directory"),
            e => Error::io("open PID directory", &path, e.into()),
        })?;
        // Check the directory we actually opened, not the path: the path may
        // have changed between the walk above and open().
        let st = fstat(&fd).map_err(|e| Error::io("examine PID directory", &path, e.into()))?;
        check_dir(&path, &st, euid, false)?;
        warn_if_network_fs(&path, &fd);
        Ok(PidDir {
            path,
            fd,
            id: FileId::from(&st),
        })
    }

    /// The directory's absolute path, for messages and for `pid_file` fields.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory, for `*at()` calls.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the path still names the directory we opened. It does not
    /// once the directory was renamed or removed (and perhaps recreated):
    /// then slot files found at the path are no longer ours, and new starts
    /// there would not see our locks.
    pub fn still_at_path(&self) -> Result<bool> {
        match nix::sys::stat::stat(&self.path) {
            Ok(st) => Ok(FileId::from(&st) == self.id),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(Error::io("examine PID directory", &self.path, e.into())),
        }
    }

    /// Takes a shared `flock` on the directory through a descriptor of its
    /// own and returns it; the lock lasts until the descriptor is closed.
    ///
    /// systemd-tmpfiles' age-based cleaning takes `LOCK_EX|LOCK_NB` on
    /// every directory it descends into and skips a directory (and all
    /// below it) it cannot lock (tmpfiles.d(5), "Age"). A slot holder that
    /// keeps this lock therefore keeps its PID file, state file and notify
    /// socket from being aged out of `/tmp`, without ever waking up to
    /// refresh their times. Shared locks do not exclude each other, so any
    /// number of holders can keep one. Never blocks: when the directory is
    /// exclusively locked at this instant (a cleaner in the middle of a
    /// pass), it retries briefly, then gives up with an error; the caller
    /// may carry on without the protection.
    pub fn hold_shared(&self) -> Result<OwnedFd> {
        let fd = nix::fcntl::openat(
            self.fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open PID directory", &self.path, e.into()))?;
        let file = std::fs::File::from(fd);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            match file.try_lock_shared() {
                Ok(()) => return Ok(OwnedFd::from(file)),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::io(
                        "lock PID directory",
                        &self.path,
                        std::io::Error::from(std::io::ErrorKind::WouldBlock),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io("lock PID directory", &self.path, e));
                }
            }
        }
    }

    /// Takes the exclusive roll lock of `name`: an flock on the dot-file
    /// `.NAME.roll` in this directory (created `O_NOFOLLOW|O_CLOEXEC`, mode
    /// 0600; a dot-file never collides with a slot file), so that rolling
    /// restarts of one name happen one after the other. Blocks, polling,
    /// until the lock is free or `deadline` passes (`Ok(None)`); the lock
    /// lasts until the returned file is closed. Errors name the file: it
    /// cannot be created or opened (a symlink planted there, permission
    /// denied) or locked.
    pub fn lock_roll(
        &self,
        name: &str,
        deadline: std::time::Instant,
    ) -> Result<Option<std::fs::File>> {
        let file_name = format!(".{name}.roll");
        let path = self.path.join(&file_name);
        let fd = nix::fcntl::openat(
            self.fd(),
            file_name.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io("open roll lock", &path, e.into()))?;
        let file = std::fs::File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| Error::io("examine roll lock", &path, e))?;
        if !meta.is_file() {
            return Err(Error::io(
                "open roll lock",
                &path,
                std::io::Error::other("not a regular file"),
            ));
        }
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io("lock roll lock", &path, e));
                }
            }
        }
    }

    /// A duplicate of this handle (a second descriptor to the same directory).
    pub fn try_clone(&self) -> Result<PidDir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::io("duplicate descriptor of", &self.path, e))?;
        Ok(PidDir {
            path: self.path.clone(),
            fd,
            id: self.id,
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidConfig(
            "the PID directory must not be empty".into(),
        ));
    }
    std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))
}

fn unsafe_dir(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafeDir {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn create_dir(path: &Path) -> Result<()> {
    let mode = if geteuid().is_root() { 0o755 } else { 0o700 };
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
        Ok(()) => {}
        // Someone created it in the meantime; it is vetted like any other.
        Err(Errno::EEXIST) => return Ok(()),
        Err(e) => return Err(Error::io("create PID directory", path, e.into())),
    }
    // mkdir() honours the umask; set the exact mode the contract promises.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == Errno::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(|e| Error::io("set the mode of PID directory", path, e.into()))
}

fn owner_ok(uid: u32, euid: Uid) -> bool {
    uid == 0 || uid == euid.as_raw()
}

/// Checks one directory's owner and mode. Ancestors may be group- or
/// world-writable if they are sticky (`/tmp`); the PID directory may not.
fn check_dir(path: &Path, st: &FileStat, euid: Uid, ancestor: bool) -> Result<()> {
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
        return Err(unsafe_dir(path, "it is not a directory"));
    }
    if !owner_ok(st.st_uid, euid) {
        return Err(unsafe_dir(
            path,
            format!(
                "it is owned by uid {}, not by root or uid {}",
                st.st_uid,
                euid.as_raw()
            ),
        ));
    }
    let writable_by_others = st.st_mode & 0o022 != 0;
    let sticky = st.st_mode & 0o1000 != 0;
    if writable_by_others && !(ancestor && sticky) {
        return Err(unsafe_dir(
            path,
            format!(
                "it is writable by group or others (mode {:04o}); run: chmod go-w {}",
                st.st_mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Walks `path` from the root, following symlinks the way the kernel would,
/// and vets every directory and symlink met on the way.
fn check_ancestry(path: &Path, euid: Uid) -> Result<()> {
    // Components still to visit, in order; symlink targets are spliced in.
    let mut pending: Vec<OsString> = components(path);
    pending.reverse();
    let mut current = PathBuf::from("/");
    let mut links_followed = 0;
    while let Some(comp) = pending.pop() {
        match comp.as_encoded_bytes() {
            b"." => continue,
            b".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let parent_st = stat(&current).map_err(|e| Error::io("examine", &current, e.into()))?;
        check_dir(&current, &parent_st, euid, true)?;
        let next = current.join(&comp);
        let st = match lstat(&next) {
            Ok(st) => st,
            Err(e) => return Err(Error::io("examine", &next, e.into())),
        };
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
            if !owner_ok(st.st_uid, euid) {
                return Err(unsafe_dir(
                    &next,
                    format!(
                        "it is a symlink owned by uid {}, not by root or uid {}",
                        st.st_uid,
                        euid.as_raw()
                    ),
                ));
            }
            links_followed += 1;
            if links_followed > 40 {
                return Err(unsafe_dir(path, "too many levels of symbolic links"));
            }
            let target =
                std::fs::read_link(&next).map_err(|e| Error::io("read symlink", &next, e))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
            continue;
        }
        current = next;
    }
    // `current` is now the resolved directory; its own check happens on the
    // opened descriptor.
    Ok(())
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from_vec(b"..".to_vec())),
            Component::CurDir => Some(OsString::from_vec(b".".to_vec())),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// flock(2) on NFS is emulated with byte-range locks held by the client, and
/// SMB/CIFS and FUSE file systems differ again; slots there may not be
/// exclusive across machines. Warn rather than refuse: a single-host NFS
/// setup works.
fn warn_if_network_fs(path: &Path, fd: &OwnedFd) {
    const NFS_SUPER_MAGIC: i64 = 0x6969;
    const SMB_SUPER_MAGIC: i64 = 0x517b;
    const CIFS_MAGIC_NUMBER: i64 = 0xff53_4d42;
    const SMB2_MAGIC_NUMBER: i64 = 0xfe53_4d42;
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    if let Ok(fs) = nix::sys::statfs::fstatfs(fd) {
        #[allow(clippy::unnecessary_cast)]
        let kind = fs.filesystem_type().0 as i64;
        let what = match kind {
            NFS_SUPER_MAGIC => "NFS",
            SMB_SUPER_MAGIC | CIFS_MAGIC_NUMBER | SMB2_MAGIC_NUMBER => "SMB/CIFS",
            FUSE_SUPER_MAGIC => "FUSE",
            _ => return,
        };
        log::warn!(
            "PID directory {} is on {what}: flock() there may not exclude other hosts; use a local directory such as /run/rdaemon",
            path.display()
        );
    }
}
