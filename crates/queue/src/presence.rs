//! Workers announce that they serve a directory queue: each live worker
//! holds an `flock` on a file of its own, `locks/worker.<ULID>.lock`, for as
//! long as it runs. The kernel drops the lock when the worker dies, however
//! it dies, so a locked file is a live worker (on this host: flock is a
//! same-host signal). The worker unlinks its file when it stops; a file
//! whose lock is free was left by a dead worker, and whoever counts removes
//! it (holding its lock, so never a live worker's: each name is used once).

use crate::error::{IoContext, Result};
use crate::fsx;
use crate::queue::Queue;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

const PREFIX: &str = "worker.";
const SUFFIX: &str = ".lock";

/// A worker's presence: its file, locked; dropping it unlinks the file.
pub struct Announced {
    path: PathBuf,
    _file: File,
}

impl Drop for Announced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Queue {
    /// Announce a live worker until the answer is dropped.
    pub fn announce_worker(&self) -> Result<Announced> {
        let dir = self.dir("locks");
        fsx::mkdir(&dir)?;
        let path = dir.join(format!("{PREFIX}{}{SUFFIX}", crate::id::new_id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .ctx("announce a worker", &path)?;
        let _ = fsx::share(&file);
        file.lock().ctx("lock", &path)?;
        Ok(Announced { path, _file: file })
    }

    /// How many announced workers are alive; files left by dead ones go.
    pub fn live_workers(&self) -> usize {
        let dir = self.dir("locks");
        let names = fsx::list(&dir).unwrap_or_default();
        names
            .iter()
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            .filter(|n| {
                let path = dir.join(n);
                let Ok(f) = fsx::open_rw(&path).or_else(|_| fsx::open_read(&path)) else {
                    return false;
                };
                match f.try_lock_shared() {
                    Err(std::fs::TryLockError::WouldBlock) => true,
                    Ok(()) => {
                        // Its worker is gone: nobody else will ever use the name.
                        let _ = std::fs::remove_file(&path);
                        false
                    }
                    Err(_) => false,
                }
            })
            .count()
    }
}
