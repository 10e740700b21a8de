//! Single-holder locks of a queue (`locks/<name>.lock`): the one supervisor
//! (`supervise.lock`) and the one garbage collector (`gc.lock`).
//!
//! The lock is an `flock` on the file, so the kernel releases it when its
//! holder dies, however it dies: a lock left by a dead holder is simply free.
//! After locking, the holder writes who it is ({host, boot id, pid namespace,
//! pid, start time, started_at}) into the file, for the error message of the
//! next contender; that record is advisory, and garbage in it does not matter.
//!
//! Invariants: a lock file is never unlinked (unlinking would let a second
//! file, and so a second "holder", appear); after locking, the holder checks
//! that the file it locked is still the one at the path. A holder that lets
//! go while it lives clears its record first, so that the next holder's
//! coherence check (a record naming a live process on this host means flock
//! does not work here, e.g. NFS with `local_lock`) never fires falsely.

use crate::error::{Error, IoContext, Kind, Result};
use crate::ident;
use crate::queue::Queue;
use crate::time;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Who holds a lock, as its holder wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub pidns: String,
    pub pid: i32,
    #[serde(default)]
    pub pid_start: u64,
    #[serde(default)]
    pub started_at: String,
}

impl Holder {
    /// This process.
    pub fn me() -> Holder {
        let h = ident::host();
        let (pid, pid_start) = ident::me();
        Holder {
            host: h.host.clone(),
            boot_id: h.boot_id.clone(),
            pidns: h.pidns.clone(),
            pid,
            pid_start,
            started_at: time::rfc3339(time::now_ms()),
        }
    }

    /// Is this holder on this host, this boot, this pid namespace?
    pub fn local(&self) -> bool {
        let h = ident::host();
        self.host == h.host && self.boot_id == h.boot_id && self.pidns == h.pidns
    }

    /// Provably alive: a local holder whose pid still runs with the same
    /// start time. `None` when that cannot be judged (another host).
    pub fn alive(&self) -> Option<bool> {
        if !self.local() {
            return None;
        }
        Some(ident::alive(self.pid, self.pid_start))
    }

    /// Is this record about this very process?
    pub fn is_me(&self) -> bool {
        let (pid, start) = ident::me();
        self.local() && self.pid == pid && self.pid_start == start
    }

    /// "pid 123 on host h since T", for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("pid {} on host {}", self.pid, self.host);
        if !self.started_at.is_empty() {
            s.push_str(&format!(" since {}", self.started_at));
        }
        s
    }
}

/// A held lock; dropping it (or the death of the process) releases it.
#[derive(Debug)]
pub struct LockGuard {
    held: Held,
}

/// What holds a lock: a locked file, or a backend's session (a database
/// connection holding an advisory lock: closing it lets go).
enum Held {
    File(File),
    Session(Box<dyn std::any::Any + Send>),
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Held::File(_) => "file lock",
            Held::Session(_) => "session lock",
        })
    }
}

impl LockGuard {
    /// Let go while this process lives on: clear the record, then unlock.
    pub fn release(self) {
        match self.held {
            Held::File(f) => {
                let _ = f.set_len(0);
                let _ = f.unlock();
            }
            Held::Session(s) => drop(s),
        }
    }

    /// A lock held by a backend's session (dropping it lets go).
    pub(crate) fn session(s: Box<dyn std::any::Any + Send>) -> LockGuard {
        LockGuard { held: Held::Session(s) }
    }
}

/// What a lock attempt found.
#[derive(Debug)]
pub enum Acquired {
    /// We hold it now.
    Held(LockGuard),
    /// Someone else holds it; their record, if it could be read.
    Busy(Option<Holder>),
}

/// The record in a lock file, if it is one.
pub fn read_holder(path: &Path) -> Option<Holder> {
    let b = crate::fsx::read_capped(path, 64 * 1024).ok()?;
    serde_json::from_slice(b.trim_ascii()).ok()
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .inspect(|f| {
            let _ = crate::fsx::share(f); // group-shared queue: the group locks it too
        })
        .ctx("open lock file", path)
}

fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Queue {
    /// The path of lock `name` (`locks/<name>.lock`).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.dir("locks").join(format!("{name}.lock"))
    }

    /// Try to take lock `name`. A busy lock is tried again for up to
    /// `patience` (short holds, like a `supervisor_running` probe, pass).
    /// On success our holder record is written into the file.
    pub fn try_lock_named(&self, name: &str, patience: Duration) -> Result<Acquired> {
        let path = self.lock_path(name);
        crate::fsx::mkdir(&self.dir("locks"))?;
        let until = Instant::now() + patience;
        loop {
            let f = open_lock(&path)?;
            match f.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    if Instant::now() >= until {
                        return Ok(Acquired::Busy(read_holder(&path)));
                    }
                    std::thread::sleep(Duration::from_millis(25));
                    continue;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
            if !same_file(&f, &path) {
                // Replaced under us (someone unlinked it): lock the new one.
                continue;
            }
            self.check_coherent(&path)?;
            let mut rec = serde_json::to_vec(&Holder::me()).unwrap_or_default();
            rec.push(b'\n');
            // One positioned write, then trim: a reader never sees it empty.
            f.write_all_at(&rec, 0).ctx("write lock record", &path)?;
            f.set_len(rec.len() as u64)
                .ctx("write lock record", &path)?;
            return Ok(Acquired::Held(LockGuard { held: Held::File(f) }));
        }
    }

    /// We got the lock: if the previous record names a live local process
    /// that is not us, flock is not coherent on this filesystem. A holder
    /// that just died may take a moment to be reaped: look again briefly.
    fn check_coherent(&self, path: &Path) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            match read_holder(path) {
                Some(h) if !h.is_me() && h.alive() == Some(true) => {
                    if Instant::now() >= until {
                        return Err(Error::new(
                            Kind::Busy,
                            format!(
                                "{} is locked by nobody, yet its holder ({}) is alive: file locks (flock) do not work on this filesystem; put the queue on a local filesystem",
                                path.display(),
                                h.describe()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_roundtrip_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        std::fs::write(&p, b"\x00garbage{").unwrap();
        assert!(read_holder(&p).is_none());
        let me = Holder::me();
        assert!(me.is_me());
        assert_eq!(me.alive(), Some(true));
        std::fs::write(&p, serde_json::to_vec(&me).unwrap()).unwrap();
        assert_eq!(read_holder(&p), Some(me));
    }
}
