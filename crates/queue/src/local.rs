//! What a worker keeps on its own host, whatever the backend: the
//! workspaces of the attempts it runs. (The process group of a running job
//! is recorded with [`crate::Backend::record_start`].)
//!
//! Workspaces (`$Q_WORKSPACE`): every attempt gets an empty directory (for
//! a directory queue at `var/<ID>/<A>.work/`), removed after success. Making and removing a
//! directory per job costs an inode allocation and a free each time (and,
//! on ext4 without a journal, every later allocation skips over recently
//! freed inodes for minutes). So a worker parks the empty workspace of a
//! successful attempt in `tmp/` and renames it into place for its next job
//! (up to [`SPARES`] of them: attempts that wait for their settle, while the
//! next jobs run, each hold one);
//! only a workspace left non-empty, changed in mode or owner, or replaced by
//! something that is not a directory, is removed instead. A parked workspace
//! left by a worker that died is a `tmp/` entry like any other: q-gc removes
//! it after `--tmp-ttl`.

use crate::fsx;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

pub struct Workspaces {
    /// Where workspaces are parked (`tmp/`).
    tmp: PathBuf,
    /// Where the per-job directories are (`var/`).
    var: PathBuf,
    /// Make a job's directory when missing (a backend whose claims do not).
    make_parents: bool,
    inner: Mutex<Inner>,
}

/// At most this many parked workspaces per worker.
const SPARES: usize = 8;

#[derive(Default)]
struct Inner {
    /// The parked empty workspaces.
    spares: Vec<PathBuf>,
    /// Mode and owner of the workspaces this worker made.
    made_as: Option<(u32, u32)>,
}

impl Workspaces {
    pub(crate) fn new(tmp: PathBuf, var: PathBuf, make_parents: bool) -> Workspaces {
        Workspaces { tmp, var, make_parents, inner: Mutex::new(Inner::default()) }
    }

    /// Where attempt `attempt` of job `id` works.
    pub fn path(&self, id: &str, attempt: u32) -> PathBuf {
        self.var.join(id).join(crate::names::var::workspace(attempt))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the empty workspace of attempt `attempt` of job `id`, the
    /// user `owner`'s (a root worker running another user's job: such a
    /// workspace is never parked for another job, see [`Workspaces::done_with`]).
    pub fn make(&self, id: &str, attempt: u32, owner: Option<u32>) -> crate::Result<PathBuf> {
        let path = self.path(id, attempt);
        // A directory queue made the job's directory with its claim; a
        // database queue's host-local one is made here.
        if self.make_parents
            && let Some(dir) = path.parent()
        {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::io("create directory", dir, e))?;
        }
        self.make_at(&path)?;
        if let Some(o) = owner.filter(|&o| o != crate::owner::euid()) {
            nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(o)), None).map_err(|e| crate::Error::io("chown", &path, e.into()))?;
        }
        Ok(path)
    }

    fn make_at(&self, path: &Path) -> crate::Result<()> {
        let mut inner = self.inner();
        while let Some(spare) = inner.spares.pop() {
            if fs::rename(&spare, path).is_ok() {
                return Ok(());
            }
            // Gone (q-gc took it) or not movable: try the next, or make one.
            let _ = fs::remove_dir(&spare);
        }
        fsx::mkdir(path)?;
        if inner.made_as.is_none() {
            inner.made_as = fs::symlink_metadata(path).ok().map(|m| (m.mode() & 0o7777, m.uid()));
        }
        Ok(())
    }

    /// The attempt succeeded: park its workspace for the next one if it is
    /// still as made and empty; otherwise remove it.
    pub fn done_with(&self, path: &Path) {
        let mut inner = self.inner();
        if inner.spares.len() < SPARES && self.pristine(path, inner.made_as) {
            let parked = self.tmp.join(fsx::tmp_name("work"));
            if fs::rename(path, &parked).is_ok() {
                // A fresh mtime: q-gc leaves a parked workspace alone for --tmp-ttl.
                if let Ok(d) = fs::File::open(&parked) {
                    let _ = d.set_modified(SystemTime::now());
                }
                inner.spares.push(parked);
                return;
            }
        }
        drop(inner);
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if fs::remove_dir(path).is_err() {
                    let _ = fs::remove_dir_all(path);
                }
            }
            Ok(_) => {
                let _ = fs::remove_file(path);
            }
            Err(_) => {}
        }
    }

    /// A real directory (not a symlink the job left in its place), with the
    /// mode and owner it was made with, and empty.
    fn pristine(&self, path: &Path, made_as: Option<(u32, u32)>) -> bool {
        let Ok(m) = fs::symlink_metadata(path) else { return false };
        m.is_dir()
            && made_as == Some((m.mode() & 0o7777, m.uid()))
            && fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
    }

    /// Remove the parked workspaces (the worker is stopping).
    pub fn close(&self) {
        for spare in self.inner().spares.drain(..) {
            let _ = fs::remove_dir(spare);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;
    use crate::testkit::queue;
    use std::os::unix::fs::PermissionsExt;

    fn workspaces(q: &Queue) -> Workspaces {
        Workspaces::new(q.tmp(), q.dir("var"), false)
    }

    #[test]
    fn an_empty_workspace_is_reused_and_a_used_one_is_not() {
        let (_d, q) = queue();
        let ws = workspaces(&q);
        fs::create_dir_all(q.var("A")).unwrap();
        let a = ws.make("A", 1, None).unwrap();
        let ino = fs::metadata(&a).unwrap().ino();
        ws.done_with(&a);
        assert!(!a.exists(), "removed from its place after success");
        fs::create_dir_all(q.var("B")).unwrap();
        let b = ws.make("B", 1, None).unwrap();
        assert_eq!(fs::metadata(&b).unwrap().ino(), ino, "the parked directory is reused");
        assert_eq!(fs::read_dir(q.tmp()).unwrap().count(), 0, "nothing left parked while in use");
        // Used: not parked, removed.
        fs::write(b.join("file"), "x").unwrap();
        ws.done_with(&b);
        assert!(!b.exists());
        fs::create_dir_all(q.var("C")).unwrap();
        let c = ws.make("C", 1, None).unwrap();
        // (Its inode number may come back for a new directory: compare contents.)
        assert_eq!(fs::read_dir(&c).unwrap().count(), 0, "a used workspace is never handed on");
        // Mode changed by the job: not handed on either.
        fs::set_permissions(&c, fs::Permissions::from_mode(0o777)).unwrap();
        ws.done_with(&c);
        fs::create_dir_all(q.var("D")).unwrap();
        let d = ws.make("D", 1, None).unwrap();
        assert_eq!(fs::symlink_metadata(&d).unwrap().mode() & 0o777, 0o700, "made anew, not the changed one");
        // A symlink left in its place is removed, never parked or followed.
        fs::remove_dir(&d).unwrap();
        std::os::unix::fs::symlink(q.root(), &d).unwrap();
        ws.done_with(&d);
        assert!(fs::symlink_metadata(&d).is_err());
        assert!(q.root().join("FORMAT").exists(), "the symlink's target is untouched");
        // Parked, then the worker stops: nothing is left in tmp/.
        fs::create_dir_all(q.var("E")).unwrap();
        let e = ws.make("E", 1, None).unwrap();
        ws.done_with(&e);
        assert_eq!(fs::read_dir(q.tmp()).unwrap().count(), 1);
        ws.close();
        assert_eq!(fs::read_dir(q.tmp()).unwrap().count(), 0);
    }

    /// Attempts waiting for their settle while the next jobs run each hold
    /// a workspace: all of them are parked and reused (up to `SPARES`), not
    /// made and removed.
    #[test]
    fn workspaces_in_flight_are_all_parked_up_to_the_cap() {
        let (_d, q) = queue();
        let ws = workspaces(&q);
        let make = |i: usize| {
            fs::create_dir_all(q.var(&format!("J{i}"))).unwrap();
            ws.make(&format!("J{i}"), 1, None).unwrap()
        };
        let first: Vec<PathBuf> = (0..SPARES + 2).map(make).collect();
        let inos: std::collections::HashSet<u64> = first.iter().map(|p| fs::metadata(p).unwrap().ino()).collect();
        for p in &first {
            ws.done_with(p);
        }
        assert_eq!(fs::read_dir(q.tmp()).unwrap().count(), SPARES, "parked up to the cap, the rest removed");
        let next: Vec<PathBuf> = (SPARES + 2..2 * SPARES + 2).map(make).collect();
        for p in &next {
            assert!(inos.contains(&fs::metadata(p).unwrap().ino()), "a parked workspace is reused");
        }
        assert_eq!(fs::read_dir(q.tmp()).unwrap().count(), 0, "every parked one is in use");
    }
}
