//! Small, careful file-system steps: no-replace renames, fsync of files and
//! directories, write-once files published by rename, capped reads that never
//! follow a symlink. Every state change of the queue is built from these.

use crate::error::{Error, IoContext, Kind, Result};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const O_NOFOLLOW: i32 = nix::libc::O_NOFOLLOW;

/// Outcome of a no-replace rename.
#[derive(Debug, PartialEq, Eq)]
pub enum Renamed {
    Done,
    /// The source was gone: someone else moved it first (a lost race, or fencing).
    SourceGone,
    /// The destination exists already.
    Exists,
}

/// `renameat2(RENAME_NOREPLACE)`, falling back to `rename` where the filesystem
/// does not support the flag (every destination name in a queue is unique, so
/// the fallback is safe). ENOENT on the source is reported, not an error.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<Renamed> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(Renamed::Done),
        Err(Errno::EEXIST) => Ok(Renamed::Exists),
        Err(Errno::ENOENT) => {
            if to.parent().is_some_and(|p| !p.exists()) {
                Err(Error::io("rename into missing directory", to, io::Error::from(Errno::ENOENT)))
            } else {
                Ok(Renamed::SourceGone)
            }
        }
        Err(Errno::EINVAL | Errno::ENOSYS) => match fs::rename(from, to) {
            Ok(()) => Ok(Renamed::Done),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Renamed::SourceGone),
            Err(e) => Err(Error::io("rename", from, e)),
        },
        Err(e) => Err(Error::io(&format!("rename to {}", to.display()), from, e.into())),
    }
}

/// fsync a directory, so that renames into it survive a crash. A directory
/// that is gone needs none (a pending segment emptied and removed by a
/// claimer: what was renamed into it has moved on, durably, by its mover).
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = match File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open directory", dir, e)),
    };
    f.sync_all().ctx("fsync directory", dir)
}

/// fsync each of `dirs` (the directories a step renamed into).
pub fn fsync_dirs(dirs: &[std::path::PathBuf]) -> Result<()> {
    dirs.iter().try_for_each(|d| fsync_dir(d))
}

/// Set while this process works on a group-shared queue: what it creates
/// must be usable by the group (files 0660, directories 02770, whatever the
/// umask says). Set by `Queue` when it opens such a queue.
static SHARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_group_shared(on: bool) {
    SHARED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Who may use a file this process creates. In a private queue every file
/// is its creator's alone (0600). In a group-shared queue the queue's own
/// records (leases, results, locks, keys) are the group's to use, but what
/// a job runs from and what it says is its owner's: the job file (0640:
/// the group lists it, nobody else writes it), the recorded environment
/// (0600) and the logs (0600, or 0640 when the pusher shares them).
/// docs/FORMAT.md, "Owners".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// 0660 in a group-shared queue.
    Group,
    /// 0640 in a group-shared queue: the group reads, only the owner writes.
    GroupReads,
    /// 0600 in every queue.
    Owner,
}

impl Access {
    /// The mode of a new file with this access in a group-shared queue.
    pub fn shared_mode(self) -> u32 {
        match self {
            Access::Group => 0o660,
            Access::GroupReads => 0o640,
            Access::Owner => 0o600,
        }
    }
}

/// Is this process working on a group-shared queue?
pub fn is_shared() -> bool {
    SHARED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Give a file this process just created the group's access in a
/// group-shared queue (0660, not reduced by the umask); no-op otherwise.
pub fn share(f: &File) -> io::Result<()> {
    share_as(f, Access::Group)
}

/// Set a new file's mode for `access` in a group-shared queue (not reduced
/// by the umask); no-op otherwise (it was made 0600).
pub fn share_as(f: &File, access: Access) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if is_shared() && access != Access::Owner {
        f.set_permissions(fs::Permissions::from_mode(access.shared_mode()))?;
    }
    Ok(())
}

/// Create a new file exclusively (O_EXCL, O_NOFOLLOW), mode 0600 (0660 in
/// a group-shared queue).
pub fn create_new(path: &Path) -> Result<File> {
    create_new_as(path, Access::Group)
}

/// [`create_new`] with the mode of `access` in a group-shared queue.
pub fn create_new_as(path: &Path, access: Access) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let kind = if e.kind() == io::ErrorKind::AlreadyExists { Kind::Create } else { Kind::Io };
            Error::io("create", path, e).with_kind(kind)
        })?;
    share_as(&f, access).ctx("chmod", path)?;
    Ok(f)
}

/// Open an existing file for reading without following a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(O_NOFOLLOW).open(path)
}

/// Open an existing file read-write without following a symlink (for locks).
pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(O_NOFOLLOW).open(path)
}

/// Write `bytes` to a fresh temporary file in `tmp_dir`, optionally fsync it,
/// and publish it at `dest` with a no-replace rename. Nothing partial is ever
/// visible at `dest`. On any failure the temporary file is removed.
pub fn publish(tmp_dir: &Path, dest: &Path, bytes: &[u8], sync: bool) -> Result<Renamed> {
    publish_as(tmp_dir, dest, bytes, sync, Access::Group)
}

/// [`publish`] a file with the access of `access` in a group-shared queue.
pub fn publish_as(tmp_dir: &Path, dest: &Path, bytes: &[u8], sync: bool, access: Access) -> Result<Renamed> {
    let tmp = stage_as(tmp_dir, bytes, sync, access)?;
    publish_staged(&tmp, || rename_noreplace(&tmp, dest))
}

/// The first half of [`publish`]: `bytes` in a fresh temporary file in
/// `tmp_dir`, fsynced if `sync`. Removed again if anything fails.
pub fn stage(tmp_dir: &Path, bytes: &[u8], sync: bool) -> Result<std::path::PathBuf> {
    stage_as(tmp_dir, bytes, sync, Access::Group)
}

pub(crate) fn stage_as(tmp_dir: &Path, bytes: &[u8], sync: bool, access: Access) -> Result<std::path::PathBuf> {
    let tmp = tmp_dir.join(tmp_name("pub"));
    let res = (|| {
        let mut f = create_new_as(&tmp, access)?;
        f.write_all(bytes).ctx("write", &tmp)?;
        if sync {
            f.sync_all().ctx("fsync", &tmp)?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The second half of [`publish`]: give staged file `tmp` its name with
/// `name_it` (a no-replace rename); unless that succeeds, `tmp` is removed.
pub fn publish_staged(tmp: &Path, name_it: impl FnOnce() -> Result<Renamed>) -> Result<Renamed> {
    crate::failpoint!("publish.before_rename");
    let r = name_it();
    if !matches!(r, Ok(Renamed::Done)) {
        let _ = fs::remove_file(tmp);
    }
    r
}

/// One sync of the whole filesystem holding `dir`: the group commit of a
/// batch push or of a group of settles (everything written before it is
/// durable when it returns).
pub fn syncfs(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx("open", dir)?;
    nix::unistd::syncfs(&f).map_err(|e| Error::io("sync the filesystem of", dir, e.into()))
}

/// `statfs` type of FUSE filesystems (`FUSE_SUPER_MAGIC`).
const FUSE_SUPER_MAGIC: rustix::fs::FsWord = 0x6573_5546;

/// Does `syncfs(2)` on the filesystem holding `dir` make everything written
/// there durable? Not on FUSE: the kernel passes `syncfs` to the daemon of
/// virtiofs only, so a FUSE filesystem's own store never hears of it (what
/// the kernel wrote back on its way is all it gets). There the group
/// commits (a batch push, a group of settles) take the per-file fsyncs of
/// the single steps instead. Unknown (statfs fails): trusted, as before.
pub fn syncfs_reaches_disk(dir: &Path) -> bool {
    rustix::fs::statfs(dir).map_or(true, |s| s.f_type != FUSE_SUPER_MAGIC)
}

/// Can this process stage files without a name (`O_TMPFILE`) and name them
/// later (`linkat` through `/proc/self/fd`)? NFS and some older filesystems
/// lack `O_TMPFILE`, and a chroot may lack `/proc`. Costs a probe file:
/// ask once per queue.
pub fn unnamed_supported(tmp_dir: &Path) -> bool {
    if !Path::new("/proc/self/fd").is_dir() {
        return false;
    }
    open_unnamed(tmp_dir, Access::Owner).is_ok()
}

/// A new file without a name in `dir` (`O_TMPFILE`), mode 0600 (that of
/// `access` in a group-shared queue). A crash before it is linked leaves
/// nothing behind.
pub fn open_unnamed(dir: &Path, access: Access) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(dir, OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC, Mode::from_bits_truncate(0o600))?;
    let f = File::from(fd);
    share_as(&f, access)?;
    Ok(f)
}

/// Give an unnamed file (from [`open_unnamed`]) its name `dest`, never
/// replacing a file there. `Exists` if `dest` is taken; an error with
/// ENOENT if `dest`'s directory is missing.
pub fn link_unnamed(f: &File, dest: &Path) -> Result<Renamed> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", f.as_raw_fd());
    match rustix::fs::linkat(rustix::fs::CWD, proc_path.as_str(), rustix::fs::CWD, dest, rustix::fs::AtFlags::SYMLINK_FOLLOW) {
        Ok(()) => Ok(Renamed::Done),
        Err(rustix::io::Errno::EXIST) => Ok(Renamed::Exists),
        Err(e) => Err(Error::io("link", dest, e.into())),
    }
}

/// Set a file's mtime to now (`UTIME_NOW`: the owner, or anyone who may
/// write it, as in a group-shared queue), its atime left alone.
pub fn touch_now(path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT, utimensat};
    let ts = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: 0, tv_nsec: UTIME_NOW },
    };
    utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// A unique temporary file name: `<ulid>.<pid>.<what>.tmp`.
pub fn tmp_name(what: &str) -> String {
    format!("{}.{}.{what}.tmp", crate::id::new_id(), std::process::id())
}

/// Read a whole small file, refusing symlinks and anything over `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = open_read(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    if meta.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The names in a directory, skipping dot-files; a missing directory is empty.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = match ent {
            Ok(ent) => ent,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read directory", dir, e)),
        };
        if let Some(name) = ent.file_name().to_str() {
            if !name.starts_with('.') {
                out.push(name.to_owned());
            }
        } else {
            // A name that is not UTF-8 is foreign: keep it visible to the
            // quarantine logic with a lossy name.
            out.push(ent.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// Remove an empty directory unless it changed within the last second: a
/// pending segment that was just made is about to receive its job (removing
/// it under the pusher makes the pusher re-create it, and racing claimers
/// could do that to it again and again).
pub fn remove_idle_dir(dir: &Path) {
    let idle = fs::symlink_metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > std::time::Duration::from_secs(1)));
    if idle {
        let _ = fs::remove_dir(dir);
    }
}

/// `mkdir`, mode 0700, treating "already exists" as success.
pub fn mkdir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) if is_shared() => {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o2770)).map_err(|e| Error::io("chmod", dir, e).with_kind(Kind::Create))
        }
        Ok(()) => Ok(()),
        // Only a real directory: never one reached through a planted symlink.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::new(
            Kind::Permission,
            format!("{} is not a directory (a symlink or file was planted there): refusing to write through it", dir.display()),
        )),
        Err(e) => Err(Error::io("create directory", dir, e).with_kind(Kind::Create)),
    }
}

/// Remove a file; a missing file is fine.
pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
