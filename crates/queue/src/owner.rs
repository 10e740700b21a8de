//! Who owns a job of a directory queue, and what that allows
//! (docs/FORMAT.md, "Owners"). A job's owner is the kernel's word: the uid
//! that owns its job file. Its pusher created that file, and only root can
//! give a file away, so nothing anyone writes into a record can name
//! another user. From that:
//!
//! - A job file is run only while nobody but its owner can write it: a
//!   regular file, not group- or other-writable, with one link (a second
//!   link is another name for someone else's file). Anything else is
//!   quarantined.
//! - In a group-shared queue a worker that is not root claims only its own
//!   user's jobs; the others it leaves for their owners' workers or root's,
//!   and a root worker runs each job as its owner (the tools' business:
//!   `crates/q/run/spawn.rs`). A job's recorded environment must be its
//!   owner's file; its logs and workspace are made its owner's.
//! - Only a job's owner, or root, may change it (cancel, retry, hold,
//!   release, remove, settle or touch a claim by hand): else 77.
//!
//! The checks reuse the `fstat` a read makes anyway: they add no system
//! call to a claim.

use crate::error::{Error, Kind, Result};
use crate::queue::Queue;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The effective uid of this process, asked once.
pub fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| nix::unistd::geteuid().as_raw())
}

pub fn is_root() -> bool {
    euid() == 0
}

/// A user for messages: `alice (uid 1001)`, or `uid 1001` when the user
/// database does not know it.
pub fn describe(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Is the job file whose metadata is `m` fit to run from? Only its owner
/// may be able to write it, under this one name. A second name in the
/// queue's `tmp_dir` is not another name to refuse but a power loss's
/// leftover: a job file is staged in `tmp/` and renamed into place, and a
/// cut after the rename reached its destination's directory but before it
/// reached `tmp/` can leave both names. Such a name is removed (only when
/// the job file has more than one link, so the claim pays nothing else).
pub(crate) fn check_job_file(path: &Path, m: &Metadata, tmp_dir: &Path) -> Result<()> {
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::new(
            Kind::Data,
            format!("{}: writable by its group or others (mode {mode:o}): a job file only its owner may write is run", path.display()),
        ));
    }
    if m.nlink() > 1 && m.nlink() - stale_staging_names(m, tmp_dir) > 1 {
        return Err(Error::new(
            Kind::Data,
            format!("{}: has {} links: a job file is run only under its one name", path.display(), m.nlink()),
        ));
    }
    Ok(())
}

/// Remove the names in `tmp_dir` of the file `m` is of; how many went.
fn stale_staging_names(m: &Metadata, tmp_dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(tmp_dir) else { return 0 };
    let mut gone = 0;
    for e in rd.flatten() {
        if let Ok(em) = e.path().symlink_metadata()
            && em.ino() == m.ino()
            && em.dev() == m.dev()
            && std::fs::remove_file(e.path()).is_ok()
        {
            gone += 1;
        }
    }
    gone
}

impl Queue {
    /// Does this process leave a job owned by `uid` to others? In a
    /// group-shared queue a worker that is neither root nor the job's owner
    /// does: it would run the job as the wrong user.
    pub(crate) fn leaves(&self, uid: u32) -> bool {
        self.group.is_some() && uid != euid() && !is_root()
    }

    /// May this process change the job whose file is at `path`? In a
    /// group-shared queue only its owner and root may (77 otherwise). A
    /// file that is gone is left to the move itself to report.
    pub(crate) fn check_may_change(&self, id: &str, path: &Path) -> Result<()> {
        if self.group.is_none() || is_root() {
            return Ok(());
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.uid() != euid() => Err(Error::new(
                Kind::Permission,
                format!("job {id} belongs to {}: only the user who pushed it, or root, may change it", describe(m.uid())),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Fit to run: writable by its owner alone, under one name.
    #[test]
    fn a_job_file_is_fit_to_run_only_if_its_owner_alone_writes_it() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let p = d.path().join("job.json");
        std::fs::write(&p, "{}").unwrap();
        let check = |mode: u32| {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            check_job_file(&p, &std::fs::metadata(&p).unwrap(), &tmp)
        };
        for ok in [0o600, 0o640, 0o644, 0o400] {
            assert!(check(ok).is_ok(), "{ok:o}");
        }
        for bad in [0o660, 0o620, 0o602, 0o666] {
            let e = check(bad).expect_err("refused");
            assert_eq!(e.kind, Kind::Data, "quarantined, not an I/O error");
            assert!(e.to_string().contains("writable by its group or others"), "{e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        // A second name left in tmp/ by a power cut mid-rename is removed.
        let staged = tmp.join("01J0000000000000000000JOB0.1.pub.tmp");
        std::fs::hard_link(&p, &staged).unwrap();
        check_job_file(&p, &std::fs::metadata(&p).unwrap(), &tmp).expect("a staging name is a leftover");
        assert!(!staged.exists(), "the leftover name is gone");
        assert_eq!(std::fs::metadata(&p).unwrap().nlink(), 1);
        // Any other second name is refused.
        std::fs::hard_link(&p, d.path().join("second")).unwrap();
        let e = check_job_file(&p, &std::fs::metadata(&p).unwrap(), &tmp).expect_err("refused");
        assert!(e.to_string().contains("2 links"), "{e}");
    }
}
