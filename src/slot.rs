//! Slot files: the one place that knows how a slot's PID file is named,
//! opened, locked, verified, written and removed.
//!
//! A NAME with N peers has N slots. Slot `i` is the file `NAME.i.pid` in the
//! PID directory, and **a slot is held if and only if that file is locked**
//! with `flock(LOCK_EX)`. The file's content (the holder's PID and a newline)
//! is for humans, `kill $(cat F)` and systemd's `PIDFile=`; rdaemon itself
//! never believes it without checking the lock, and never signals a PID
//! without proving that the process holds the lock (see `inspect.rs`).
//!
//! Taking a slot follows FreeBSD's `pidfile_open()`:
//!
//! 1. refuse anything at the path that is not a regular file with one link
//!    owned by us (never followed, written or removed);
//! 2. `openat(O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC|O_NONBLOCK|O_NOCTTY)`;
//!    `O_NONBLOCK` because a FIFO planted between the check and the open must
//!    not hang us;
//! 3. `flock(LOCK_EX|LOCK_NB)`;
//! 4. compare `fstat` of the descriptor with `fstatat` of the path: the
//!    previous holder unlinks the file while still holding the lock, so we
//!    may have locked an inode that no longer has a name; retry then;
//! 5. only now truncate and write `PID\n`.
//!
//! Read-only probes (`--check`, `--status`) take `LOCK_SH|LOCK_NB` for an
//! instant to learn whether an exclusive holder exists. That instant makes a
//! concurrent `LOCK_EX|LOCK_NB` fail, so a start that fails to lock tries a
//! shared lock itself: if *that* succeeds, nobody holds the slot and only
//! readers were in the way, so it retries for up to [`CONTENTION_GRACE`]
//! instead of calling the slot busy.
//!
//! Releasing unlinks the file while the lock is still held, so a stale file
//! is never left behind by a clean stop, and a process that opened the old
//! inode notices the mismatch in step 4.

use std::fs::{File, TryLockError};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, geteuid, unlinkat};

use crate::error::{Error, Result};
use crate::pid::{MAX_PID_FILE_READ, parse_pid_file, pid_max};
use crate::piddir::PidDir;
use crate::proc::{find_lock_holders, holds_lock_on};

/// The largest `--max-peers` accepted.
pub const MAX_SLOTS: u32 = 65_536;

/// How long a start keeps retrying a slot that only readers have locked.
pub const CONTENTION_GRACE: Duration = Duration::from_secs(3);

/// Slot files are readable by their owner only. flock(2) needs nothing but
/// an open descriptor, so anyone who can open a slot file can lock it: with
/// a world-readable file, any local user could lock a stale slot of root's
/// and make `--check` report it running and every start fail as busy.
/// Other users' `--check` therefore says "cannot tell" (4) instead.
const SLOT_FILE_MODE: Mode = Mode::from_bits_truncate(0o600);

/// File name of slot `index` of `name`.
pub fn pid_file_name(name: &str, index: u32) -> String {
    format!("{name}.{index}.pid")
}

/// File name of the side file with slot `index`'s state (child PID, start
/// time, restarts); see `state.rs`.
pub fn state_file_name(name: &str, index: u32) -> String {
    format!("{name}.{index}.state")
}

/// The kinds of per-slot file a reader looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotFile {
    /// `NAME.I.pid`: the slot itself.
    Pid,
    /// `NAME.I.state`: the holder's state, or a `failed` tombstone.
    State,
}

/// Splits `NAME.I.pid` or `NAME.I.state` into the name (a valid NAME),
/// the slot index and the kind; `None` for any other file.
pub fn parse_slot_file_name(file_name: &str) -> Option<(&str, u32, SlotFile)> {
    let (stem, kind) = if let Some(stem) = file_name.strip_suffix(".pid") {
        (stem, SlotFile::Pid)
    } else {
        (file_name.strip_suffix(".state")?, SlotFile::State)
    };
    let (base, index) = stem.rsplit_once('.')?;
    if index.is_empty()
        || index.starts_with('0')
        || !index.bytes().all(|b| b.is_ascii_digit())
        || crate::name::validate(base).is_err()
    {
        return None;
    }
    let index = index
        .parse()
        .ok()
        .filter(|&i| (1..=MAX_SLOTS).contains(&i))?;
    Some((base, index, kind))
}

/// File name of slot `index`'s sd_notify socket (see the supervisor).
pub fn notify_socket_name(name: &str, index: u32) -> String {
    format!("{name}.{index}.notify")
}

/// Identity of an inode, to tell whether a path still names our file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl From<&FileStat> for FileId {
    fn from(st: &FileStat) -> FileId {
        #[allow(clippy::unnecessary_cast)]
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn describe_type(st: &FileStat) -> &'static str {
    match file_type(st) {
        SFlag::S_IFLNK => "it is a symbolic link",
        SFlag::S_IFDIR => "it is a directory",
        SFlag::S_IFIFO => "it is a FIFO",
        SFlag::S_IFSOCK => "it is a socket",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "it is a device",
        _ => "it is not a regular file",
    }
}

/// Why the thing at a slot's path may not be used, or `None` if it may.
/// `owners` are the UIDs whose files are acceptable.
///
/// No links at all is not a reason: a stat by name that races an unlink
/// (a holder releasing its slot) can report 0 links. Such a file is on its
/// way out, and the callers' open then finds it gone or finds its
/// successor.
fn unusable_reason(st: &FileStat, owners: &[u32]) -> Option<String> {
    if file_type(st) != SFlag::S_IFREG {
        return Some(describe_type(st).to_string());
    }
    if st.st_nlink > 1 {
        return Some(format!("it has {} hard links", st.st_nlink));
    }
    if !owners.contains(&st.st_uid) {
        return Some(format!("it is owned by uid {}", st.st_uid));
    }
    None
}

/// A slot this process holds: the open, exclusively locked PID file.
///
/// Dropping it releases the slot (the file is removed first). The lock
/// belongs to the open file description, so a child that inherits the
/// descriptor keeps the slot held after this process dies; the supervisor
/// relies on that (see `supervisor/mod.rs`).
#[derive(Debug)]
pub struct HeldSlot {
    dir: PidDir,
    name: String,
    index: u32,
    file: File,
    id: FileId,
    /// The PID this process wrote into the file, if it wrote one; the
    /// heartbeat puts it back if someone overwrites the file in place.
    pid: Option<u32>,
    /// A shared lock on the PID directory for as long as the slot is held,
    /// so that systemd-tmpfiles never ages the slot's files out of `/tmp`
    /// (see [`PidDir::hold_shared`]). `None` when it could not be taken.
    dir_lock: Option<std::os::fd::OwnedFd>,
    /// Set by [`HeldSlot::close_keeping_files`]: drop removes nothing.
    keep_files: bool,
}

/// The outcome of trying one slot.
#[derive(Debug)]
pub enum Attempt {
    Taken(HeldSlot),
    /// Held by someone else.
    Busy(BusySlot),
}

/// A slot found held. Who holds it is worked out only when asked (see
/// [`BusySlot::holder`]): a start that finds slot 1 busy and takes slot 2
/// should not pay for a `/proc` walk.
#[derive(Debug, Clone, Copy)]
pub struct BusySlot {
    /// The PID the file names; not proven.
    claimed: Option<i32>,
    id: FileId,
}

impl BusySlot {
    /// A process proven to hold the lock: the PID in the file if it is one,
    /// else a holder found in `/proc`, preferring a process-group leader (an
    /// orphaned COMMAND rather than one of its children, which inherit the
    /// lock). `None` when no holder is visible (another PID namespace, or
    /// no permission to look).
    pub fn holder(&self) -> Option<i32> {
        if let Some(pid) = self
            .claimed
            .filter(|&pid| matches!(holds_lock_on(pid, self.id), Ok(true)))
        {
            return Some(pid);
        }
        let holders = find_lock_holders(self.id);
        holders
            .iter()
            .copied()
            .find(|&p| crate::proc::stat(p).is_some_and(|st| st.pgrp == p))
            .or_else(|| holders.first().copied())
    }
}

impl HeldSlot {
    /// Tries to take slot `index` of `name` and write `pid` into it.
    pub fn try_take(dir: &PidDir, name: &str, index: u32, pid: u32) -> Result<Attempt> {
        let file_name = pid_file_name(name, index);
        let path = dir.path().join(&file_name);
        let owners = [geteuid().as_raw()];
        let deadline = Instant::now() + CONTENTION_GRACE;
        let mut pause = Duration::from_micros(200);
        let open = |flags: OFlag| -> Result<Option<(File, FileStat)>> {
            let flags =
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
            let fd = match openat(dir.fd(), file_name.as_str(), flags, SLOT_FILE_MODE) {
                Ok(fd) => fd,
                Err(Errno::ELOOP) => {
                    return Err(Error::UnusableSlot {
                        path: path.clone(),
                        reason: "it is a symbolic link".into(),
                    });
                }
                Err(Errno::EISDIR) => {
                    return Err(Error::UnusableSlot {
                        path: path.clone(),
                        reason: "it is a directory".into(),
                    });
                }
                Err(e) => return Err(Error::io("open slot file", &path, e.into())),
            };
            let st = fstat(&fd).map_err(|e| Error::io("examine slot file", &path, e.into()))?;
            if st.st_nlink == 0 {
                // Its holder removed it after our open (a release unlinks
                // the file while still holding the lock): look again.
                return Ok(None);
            }
            if let Some(reason) = unusable_reason(&st, &owners) {
                return Err(Error::UnusableSlot {
                    path: path.clone(),
                    reason,
                });
            }
            Ok(Some((File::from(fd), st)))
        };
        let busy = |file: &File, st: &FileStat| {
            Attempt::Busy(BusySlot {
                claimed: read_pid(file),
                id: FileId::from(st),
            })
        };
        loop {
            match fstatat(dir.fd(), file_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    if let Some(reason) = unusable_reason(&st, &owners) {
                        return Err(Error::UnusableSlot { path, reason });
                    }
                    // Recognise a held slot through a read-only descriptor:
                    // closing one opened for writing would ask its
                    // supervisor for a heartbeat (IN_CLOSE_WRITE), so a
                    // start that passes N busy slots would wake N of them.
                    match open(OFlag::O_RDONLY) {
                        Ok(Some((file, st))) => {
                            if let Err(TryLockError::WouldBlock) = file.try_lock_shared() {
                                return Ok(busy(&file, &st));
                            }
                        }
                        Ok(None) => continue,
                        Err(Error::Io { source, .. })
                            if source.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(Error::io("examine slot file", &path, e.into())),
            }
            let Some((file, st)) = open(OFlag::O_RDWR | OFlag::O_CREAT)? else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if file.try_lock_shared().is_err() {
                        // An exclusive holder exists: the slot is busy.
                        return Ok(busy(&file, &st));
                    }
                    // Only readers (probes, or another start in this very
                    // branch) were in the way. Step back briefly and retry.
                    drop(file);
                    if Instant::now() >= deadline {
                        return Err(Error::io(
                            "lock slot file",
                            &path,
                            io::Error::other(format!(
                                "another process has held a shared lock on it for over {}s (not an rdaemon peer; see lslocks)",
                                CONTENTION_GRACE.as_secs()
                            )),
                        ));
                    }
                    std::thread::sleep(pause + jitter(pause));
                    pause = (pause * 2).min(Duration::from_millis(20));
                    continue;
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("lock slot file", &path, e)),
            }
            let id = FileId::from(&st);
            match fstatat(dir.fd(), file_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(now) if FileId::from(&now) == id => {}
                // The previous holder removed it after we opened it: retry
                // on whatever the path names now.
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(Error::io("examine slot file", &path, e.into())),
            }
            let mut held = HeldSlot {
                dir: dir.try_clone()?,
                name: name.to_string(),
                index,
                file,
                id,
                pid: None,
                keep_files: false,
                dir_lock: dir
                    .hold_shared()
                    .inspect_err(|e| {
                        log::warn!("{e}: the slot's files are not protected from /tmp cleaners")
                    })
                    .ok(),
            };
            // Exactly SLOT_FILE_MODE, whatever the umask or an older
            // version left behind.
            let _ = fchmod(&held.file, SLOT_FILE_MODE);
            if let Err(e) = held.write_pid(pid) {
                // Never leave a half-written file: remove it (dropping does).
                drop(held);
                return Err(e);
            }
            return Ok(Attempt::Taken(held));
        }
    }

    /// Replaces the file's content with `pid` and a newline.
    pub fn write_pid(&mut self, pid: u32) -> Result<()> {
        let line = format!("{pid}\n");
        let res = nix::unistd::ftruncate(&self.file, 0)
            .map_err(io::Error::from)
            .and_then(|()| self.file.write_all_at(line.as_bytes(), 0));
        res.map_err(|e| Error::io("write PID file", self.path(), e))?;
        self.pid = Some(pid);
        Ok(())
    }

    /// Puts our PID line back if the file was overwritten in place (same
    /// inode, so the lock and `still_ours()` are unaffected), e.g. by
    /// `echo 1234 > F`. Otherwise `kill $(cat F)`, `pkill -F` and a start's
    /// "busy" message would name whatever was written there. The line is
    /// written before the file is cut to length, so a reader never sees it
    /// empty.
    pub fn restore_pid_line(&self) -> Result<()> {
        let Some(pid) = self.pid else {
            return Ok(());
        };
        let line = format!("{pid}\n");
        let mut buf = [0u8; MAX_PID_FILE_READ];
        let n = self.file.read_at(&mut buf, 0).unwrap_or(0);
        if buf[..n] == *line.as_bytes() {
            return Ok(());
        }
        log::warn!(
            "{} was overwritten in place; restoring PID {pid}",
            self.path().display()
        );
        let res = self.file.write_all_at(line.as_bytes(), 0).and_then(|()| {
            nix::unistd::ftruncate(&self.file, line.len() as libc::off_t).map_err(io::Error::from)
        });
        res.map_err(|e| Error::io("write PID file", self.path(), e))
    }

    /// The slot's index (1-based).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The daemon name.
    #[allow(dead_code)] // was public API; kept for the slot rewrite
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(pid_file_name(&self.name, self.index))
    }

    /// The directory the slot lives in.
    pub fn dir(&self) -> &PidDir {
        &self.dir
    }

    /// The PID file's identity (device and inode).
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Closes this process's descriptors on the slot and removes no file:
    /// for a slot whose lock other processes (children forked after the
    /// take, sharing the open file description) still hold.
    pub fn close_keeping_files(mut self) {
        self.keep_files = true;
    }

    /// The locked descriptor (for handing to a child).
    pub fn lock_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The descriptor holding the PID directory's shared lock, if it could
    /// be taken (for handing to a child, so that the directory stays
    /// protected from /tmp cleaners while an orphaned COMMAND holds the
    /// slot).
    pub fn dir_lock_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir_lock.as_ref().map(|fd| fd.as_fd())
    }

    /// Whether the path still names the file we hold locked. `Ok(false)`
    /// when it (or its directory) was deleted, renamed or replaced: the slot
    /// is lost, because a new start would create a fresh file and lock that.
    pub fn still_ours(&self) -> Result<bool> {
        Ok(self.dir.still_at_path()? && self.still_in_dir()?)
    }

    /// Whether our directory still holds our file under the slot's name
    /// (wherever that directory is now).
    fn still_in_dir(&self) -> Result<bool> {
        let file_name = pid_file_name(&self.name, self.index);
        match fstatat(
            self.dir.fd(),
            file_name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(FileId::from(&st) == self.id),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io("examine slot file", self.path(), e.into())),
        }
    }

    /// Records a heartbeat: the PID file's modification time becomes now.
    /// Also restores the PID line if someone overwrote it in place.
    pub fn touch(&self) -> Result<()> {
        self.restore_pid_line()?;
        let now = TimeSpec::UTIME_NOW;
        futimens(&self.file, &TimeSpec::UTIME_OMIT, &now)
            .map_err(|e| Error::io("touch PID file", self.path(), e.into()))
    }

    /// Releases the slot: removes the state file and the PID file (only if
    /// the path still names our file), then unlocks by closing.
    pub fn release(self) -> Result<()> {
        self.remove_files()
    }

    fn remove_files(&self) -> Result<()> {
        // Removed even from a directory renamed away: the files are ours.
        if !self.still_in_dir()? {
            return Ok(());
        }
        let state = state_file_name(&self.name, self.index);
        match unlinkat(self.dir.fd(), state.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => log::warn!(
                "cannot remove {}: {e}",
                self.dir.path().join(&state).display()
            ),
        }
        let file_name = pid_file_name(&self.name, self.index);
        match unlinkat(
            self.dir.fd(),
            file_name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::io("remove PID file", self.path(), e.into())),
        }
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        if self.keep_files {
            return;
        }
        // `release()` consumed self and already removed the files; removing
        // again is harmless (ENOENT, or the path is no longer ours).
        if let Err(e) = self.remove_files() {
            log::warn!("{e}");
        }
    }
}

/// A little pseudo-randomness so racing starters do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    base.mul_f64(f64::from(mixed % 1000) / 1000.0)
}

/// Reads the PID from a slot file: a bounded prefix, parsed strictly.
pub fn read_pid(file: &File) -> Option<i32> {
    let mut buf = [0u8; MAX_PID_FILE_READ];
    let n = file.read_at(&mut buf, 0).ok()?;
    if n == buf.len() {
        // Longer than any valid content: never a PID.
        return None;
    }
    parse_pid_file(&buf[..n], pid_max())
}

/// What a read-only look at a slot file found.
#[derive(Debug)]
pub enum Probe {
    /// Nothing at the path.
    Missing,
    /// Something rdaemon will not touch sits at the path.
    Unusable(String),
    /// Could not look (permission denied, I/O error).
    Unknown(io::Error),
    /// A slot file nobody holds; content is not trusted.
    Stale,
    /// Locked by someone.
    Held(HeldInfo),
}

/// What can be learnt about a held slot without taking it.
#[derive(Debug, Clone)]
pub struct HeldInfo {
    /// The PID the file names, if its content is a valid PID. Not yet
    /// proven to be the holder: see `inspect::verify_holder`.
    pub pid: Option<i32>,
    pub id: FileId,
    /// The last heartbeat (the file's modification time).
    pub mtime: SystemTime,
}

fn mtime_of(st: &FileStat) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        )
}

/// Waits until the holder of a probed slot answers [`ask_for_heartbeat`]:
/// until the file's mtime is at or after `asked` (a CLOCK_REALTIME_COARSE
/// reading taken before the question was put, the same clock the kernel
/// stamps files with) or differs from `info.mtime`, or until `until`.
/// Returns the mtime last seen; it stops early if the path no longer names
/// the file.
pub fn await_answer(
    dir: &PidDir,
    name: &str,
    index: u32,
    info: &HeldInfo,
    asked: SystemTime,
    until: std::time::Instant,
) -> SystemTime {
    let file_name = pid_file_name(name, index);
    let mut pause = Duration::from_micros(50);
    loop {
        let Ok(st) = fstatat(dir.fd(), file_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            return info.mtime;
        };
        let mtime = mtime_of(&st);
        if FileId::from(&st) != info.id || mtime >= asked || mtime != info.mtime {
            return mtime;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return mtime;
        }
        std::thread::sleep(pause.min(until - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Asks the holder of a probed slot for a heartbeat: opens the PID file
/// for writing and closes it without writing, which a CLI supervisor's
/// inotify watch sees as IN_CLOSE_WRITE (see `supervisor`). Nothing is
/// written and the mtime does not change. Only a regular file that is
/// still the probed one is opened. Whether the question was put.
pub fn ask_for_heartbeat(dir: &PidDir, name: &str, index: u32, info: &HeldInfo) -> bool {
    let file_name = pid_file_name(name, index);
    let same = |st: &FileStat| file_type(st) == SFlag::S_IFREG && FileId::from(st) == info.id;
    if !fstatat(dir.fd(), file_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| same(&st))
    {
        return false;
    }
    let flags = OFlag::O_WRONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY;
    match openat(dir.fd(), file_name.as_str(), flags, Mode::empty()) {
        // Closing the descriptor is the question.
        Ok(fd) => fstat(&fd).is_ok_and(|st| same(&st)),
        Err(_) => false,
    }
}

/// Looks at slot `index` of `name` without creating, locking for longer
/// than an instant, or modifying anything.
pub fn probe(dir: &PidDir, name: &str, index: u32) -> Probe {
    probe_impl(dir, name, index, true)
}

/// Like [`probe`], but does not read the PID (`HeldInfo::pid` is `None`):
/// all that `--check` and a wait for a lock to be released need.
pub fn probe_lock(dir: &PidDir, name: &str, index: u32) -> Probe {
    probe_impl(dir, name, index, false)
}

fn probe_impl(dir: &PidDir, name: &str, index: u32, want_pid: bool) -> Probe {
    let file_name = pid_file_name(name, index);
    let owners = [geteuid().as_raw(), 0];
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY;
    match fstatat(dir.fd(), file_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            if let Some(reason) = unusable_reason(&st, &owners) {
                return Probe::Unusable(reason);
            }
        }
        Err(Errno::ENOENT) => return Probe::Missing,
        Err(e) => return Probe::Unknown(e.into()),
    }
    let fd = match openat(dir.fd(), file_name.as_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Probe::Missing,
        Err(Errno::ELOOP) => return Probe::Unusable("it is a symbolic link".into()),
        Err(e) => return Probe::Unknown(e.into()),
    };
    let st = match fstat(&fd) {
        Ok(st) => st,
        Err(e) => return Probe::Unknown(e.into()),
    };
    if st.st_nlink == 0 {
        // Released and unlinked between our lookup and our open.
        return Probe::Missing;
    }
    if let Some(reason) = unusable_reason(&st, &owners) {
        return Probe::Unusable(reason);
    }
    let file = File::from(fd);
    match file.try_lock_shared() {
        Ok(()) => Probe::Stale,
        Err(TryLockError::WouldBlock) => {
            // The fstat above already has the mtime (the last heartbeat).
            Probe::Held(HeldInfo {
                pid: if want_pid { read_pid(&file) } else { None },
                id: FileId::from(&st),
                mtime: mtime_of(&st),
            })
        }
        Err(TryLockError::Error(e)) => Probe::Unknown(e),
    }
}

/// Removes what slot `index`'s last holder left behind: a stale PID file,
/// the state file or `failed` tombstone, the notify socket. Takes the slot
/// for an instant (creating the PID file if only side files are left), so
/// nothing of a live holder's is ever removed: when the slot is held,
/// nothing happens. Whether the slot was cleared. Creates nothing when no
/// file of the slot exists.
pub fn clear_leftovers(dir: &PidDir, name: &str, index: u32) -> Result<bool> {
    let exists = |file: &str| {
        fstatat(dir.fd(), file, AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| file_type(&st))
    };
    let notify = notify_socket_name(name, index);
    let notify_type = exists(&notify);
    if exists(&pid_file_name(name, index)).is_none()
        && exists(&state_file_name(name, index)).is_none()
        && notify_type.is_none()
    {
        return Ok(false);
    }
    match HeldSlot::try_take(dir, name, index, std::process::id())? {
        Attempt::Taken(held) => {
            // Only a socket: anything else there is not ours to remove.
            if notify_type == Some(SFlag::S_IFSOCK) {
                match unlinkat(dir.fd(), notify.as_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => {
                        return Err(Error::io(
                            "remove notify socket",
                            dir.path().join(&notify),
                            e.into(),
                        ));
                    }
                }
            }
            held.release()?;
            Ok(true)
        }
        Attempt::Busy(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_being_unlinked_is_not_unusable() {
        // SAFETY: libc::stat is plain old data; all-zero is a valid value.
        let mut st: FileStat = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | 0o600;
        st.st_uid = 0;
        st.st_nlink = 0;
        assert_eq!(unusable_reason(&st, &[0]), None);
        st.st_nlink = 2;
        assert!(unusable_reason(&st, &[0]).unwrap().contains("2 hard links"));
    }

    /// If `file_name` is a slot file of `name`, its slot index.
    fn parse_pid_file_name(name: &str, file_name: &str) -> Option<u32> {
        parse_slot_file_name(file_name)
            .filter(|(n, _, kind)| *n == name && *kind == SlotFile::Pid)
            .map(|(_, index, _)| index)
    }

    #[test]
    fn file_names_roundtrip() {
        assert_eq!(pid_file_name("mailer", 3), "mailer.3.pid");
        assert_eq!(parse_pid_file_name("mailer", "mailer.3.pid"), Some(3));
        assert_eq!(parse_pid_file_name("a.1", "a.1.2.pid"), Some(2));
        assert_eq!(parse_pid_file_name("a", "a.1.2.pid"), None);
        assert_eq!(parse_pid_file_name("a", "a.01.pid"), None);
        assert_eq!(parse_pid_file_name("a", "a.0.pid"), None);
        assert_eq!(parse_pid_file_name("a", "a..pid"), None);
        assert_eq!(parse_pid_file_name("a", "a.1.state"), None);
        assert_eq!(parse_pid_file_name("a", "a.99999999999.pid"), None);
        assert_eq!(
            parse_slot_file_name("a.1.7.state"),
            Some(("a.1", 7, SlotFile::State))
        );
        assert_eq!(parse_slot_file_name(".a.1.state.tmp"), None);
        assert_eq!(parse_slot_file_name("-a.1.pid"), None);
    }

    fn take(dir: &PidDir, pid: u32) -> HeldSlot {
        match HeldSlot::try_take(dir, "t", 1, pid).unwrap() {
            Attempt::Taken(held) => held,
            Attempt::Busy(b) => panic!("busy ({b:?})"),
        }
    }

    #[test]
    fn heartbeat_restores_a_pid_line_overwritten_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PidDir::open_or_create(&tmp.path().join("run")).unwrap();
        let held = take(&dir, 4242);
        let path = held.path();
        for forged in [
            &b"1\n"[..],
            b"",
            b"123456789012345678901234567890123456789\n",
            b"4242",
        ] {
            // fs::write truncates the same inode: the lock is unaffected.
            std::fs::write(&path, forged).unwrap();
            assert!(held.still_ours().unwrap());
            held.touch().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"4242\n");
        }
    }

    #[test]
    fn busy_names_only_a_proven_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PidDir::open_or_create(&tmp.path().join("run")).unwrap();
        let me = std::process::id();
        let held = take(&dir, me);
        // A second open file description conflicts even within one process.
        match HeldSlot::try_take(&dir, "t", 1, me).unwrap() {
            Attempt::Busy(b) => assert_eq!(b.holder(), Some(me as i32)),
            Attempt::Taken(_) => panic!("took a held slot"),
        }
        // A forged PID (here the parent's, alive but not a holder) is not
        // named; the only real holder is this process, which the /proc walk
        // leaves out, so nobody is named.
        let parent = nix::unistd::getppid().as_raw();
        std::fs::write(held.path(), format!("{parent}\n")).unwrap();
        match HeldSlot::try_take(&dir, "t", 1, me).unwrap() {
            Attempt::Busy(b) => assert_eq!(b.holder(), None),
            Attempt::Taken(_) => panic!("took a held slot"),
        }
    }
}
