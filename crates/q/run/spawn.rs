//! How a job's program is found. A job that runs with its pusher's
//! environment carries its own `PATH`; given a bare program name and a `PATH`
//! of its own, the standard library starts the child with fork + `execvp`.
//! Resolved here to a path first, the child is started with `posix_spawn`
//! (vfork: no copy of q-run's page tables, no copy-on-write faults), which
//! is a measurable part of the cost of a short job (see BENCHMARKS.md).
//!
//! And as whom it runs. A job belongs to the user who pushed it (the
//! backend's [`q_queue::Claim::owner`]); a worker runs its own user's jobs
//! as itself, and a root worker runs any other user's job as that user
//! ([`RunAs`]: looked up here, applied by `sys::become_user` in the child).
//! Such a child is started with fork and exec: `posix_spawn` cannot change
//! users.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a job is not run on this worker.
#[derive(Debug)]
pub struct Refused {
    pub why: String,
    /// No worker will ever run it: it ends `dead` at once.
    pub for_good: bool,
}

impl Refused {
    fn now(why: String) -> Refused {
        Refused { why, for_good: false }
    }
}

/// Another user a job runs as: its owner's entry in the user database.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`getgrouplist` of the user and its own
    /// group: in a group-shared queue the job file's group is the queue's,
    /// not the user's, and says nothing).
    pub groups: Vec<u32>,
    pub user: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl RunAs {
    /// As whom a job of `owner` runs on this worker: `None` as the worker
    /// itself (its own user's job, a backend without owners, or a job root
    /// put in this user's private queue), `Some` for a root worker and
    /// another user's job. Refused (`spawn-failed`) for another user's job
    /// on a worker that is not root (its claim leaves such jobs alone, so
    /// this is a last line), and for good for a uid the user database
    /// does not know (a deleted user).
    pub fn of(owner: Option<u32>) -> Result<Option<RunAs>, Refused> {
        let me = q_queue::owner::euid();
        let Some(uid) = owner.filter(|&o| o != me) else { return Ok(None) };
        if me != 0 {
            if uid == 0 {
                return Ok(None);
            }
            return Err(Refused::now(format!(
                "the job belongs to {}: only its owner's workers, or root's, may run it",
                q_queue::owner::describe(uid)
            )));
        }
        let u = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => u,
            Ok(None) => {
                return Err(Refused {
                    why: format!("the job belongs to uid {uid}, which is no user of this host (deleted?): it is not run"),
                    for_good: true,
                });
            }
            Err(e) => return Err(Refused::now(format!("cannot look up the job's owner, uid {uid}: {e}"))),
        };
        let name = std::ffi::CString::new(u.name.as_str()).map_err(|_| Refused::now(format!("the name of uid {uid} holds a NUL")))?;
        let groups = nix::unistd::getgrouplist(&name, u.gid)
            .map_err(|e| Refused::now(format!("cannot look up the groups of {} (uid {uid}): {e}", u.name)))?;
        Ok(Some(RunAs {
            uid,
            gid: u.gid.as_raw(),
            groups: groups.iter().map(|g| g.as_raw()).collect(),
            user: u.name,
            home: u.dir,
            shell: u.shell,
        }))
    }

    /// Make `cmd` run as this user in `cwd`: the user's `HOME`, `USER`,
    /// `LOGNAME` and `SHELL`, and the switch in the child before exec
    /// (the directory is entered as the user, so its permissions are the
    /// user's to pass).
    pub fn apply(&self, cmd: &mut std::process::Command, cwd: &Path) -> Result<(), String> {
        cmd.env("HOME", &self.home).env("USER", &self.user).env("LOGNAME", &self.user).env("SHELL", &self.shell);
        let cwd = std::ffi::CString::new(cwd.as_os_str().as_bytes()).map_err(|_| "the job's directory holds a NUL".to_owned())?;
        crate::sys::become_user(cmd, self.uid, self.gid, self.groups.clone(), cwd);
        Ok(())
    }
}

/// `prog` as `execvp` with `path` as `PATH` would find it, from `cwd`: a
/// name with a slash is used as it is; otherwise the first regular file in a
/// `PATH` entry (an empty entry is `cwd`) that is executable. A name that is
/// found nowhere is returned unchanged, so that starting it fails (or
/// finds it) exactly as `execvp` would.
pub fn resolve(prog: &OsStr, path: &OsStr, cwd: &Path) -> PathBuf {
    if prog.is_empty() || prog.as_bytes().contains(&b'/') {
        return prog.into();
    }
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(dir));
        let dir = if dir.as_os_str().is_empty() { cwd.to_path_buf() } else { cwd.join(dir) };
        let cand = dir.join(prog);
        if is_executable(&cand) {
            return cand;
        }
    }
    OsString::from(prog).into()
}

/// [`resolve`] with its answers kept for a second: jobs of a queue mostly run
/// the same few programs, and a lookup costs a `stat` per `PATH` entry. A
/// program installed earlier in `PATH` is seen within the second.
#[derive(Default)]
pub struct Resolver {
    /// (program, PATH, directory) → where it was found, and when.
    cache: Mutex<HashMap<Lookup, (PathBuf, Instant)>>,
}

type Lookup = (OsString, OsString, PathBuf);

impl Resolver {
    pub fn resolve(&self, prog: &OsStr, path: &OsStr, cwd: &Path) -> PathBuf {
        const FRESH: Duration = Duration::from_secs(1);
        let key = (prog.to_owned(), path.to_owned(), cwd.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((found, at)) = cache.get(&key)
            && at.elapsed() < FRESH
        {
            return found.clone();
        }
        let found = resolve(prog, path, cwd);
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(key, (found.clone(), Instant::now()));
        found
    }
}

fn is_executable(p: &Path) -> bool {
    // execve's own test: a regular file that we may execute.
    std::fs::metadata(p).is_ok_and(|m| m.is_file()) && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn resolves_like_execvp() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        let other = d.path().join("other");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        // Not executable in `other`, executable in `bin`: the executable wins.
        std::fs::write(other.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = OsString::from(format!("{}:{}", other.display(), bin.display()));
        assert_eq!(resolve(OsStr::new("tool"), &path, d.path()), bin.join("tool"));
        // A relative entry is taken from the job's directory; an empty one is it.
        assert_eq!(resolve(OsStr::new("tool"), OsStr::new("nope:bin"), d.path()), d.path().join("bin").join("tool"));
        std::fs::write(d.path().join("here"), "").unwrap();
        std::fs::set_permissions(d.path().join("here"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve(OsStr::new("here"), OsStr::new(":/nonexistent"), d.path()), d.path().join("").join("here"));
        // A name with a slash, or found nowhere, is left as it is.
        assert_eq!(resolve(OsStr::new("./x"), &path, d.path()), PathBuf::from("./x"));
        assert_eq!(resolve(OsStr::new("missing"), &path, d.path()), PathBuf::from("missing"));
        // A directory is not a program.
        std::fs::create_dir(bin.join("dir")).unwrap();
        assert_eq!(resolve(OsStr::new("dir"), &path, d.path()), PathBuf::from("dir"));
    }
}
