//! Changing a queued job (`q-ctl set`, `q-ctl edit`): the record of a
//! pending, waiting or held job is replaced while no claimer can take it
//! (docs/FORMAT.md, "Revise a queued job"). A claim racing the change
//! either wins (the change is refused, `Busy`) or never sees the job.
//! A changed `key` is checked and recorded under the locks of the old and
//! the new key's files, as a push does; a switch to `env_from: "pusher"`
//! records the reviser's environment.

use crate::error::{Error, Kind, Result};
use crate::fsx::{self, Renamed};
use crate::job::NewJob;
use crate::names::{Key, QueuedName};
use crate::queue::{Durability, Queue};
use crate::record::State;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use std::fs;

fn changed(id: &str) -> Error {
    Error::new(Kind::Busy, format!("job {id} was claimed or moved meanwhile: nothing changed"))
}

/// The refusal of a key another unfinished job holds (75: it is free again
/// once that job ends); `undone` says what did not happen.
pub(crate) fn key_taken(key: &str, holder: &str, state: State, undone: &str) -> Error {
    Error::new(
        Kind::Busy,
        format!("field \"key\": {key:?} is held by job {holder} ({}): {undone} (a key belongs to one unfinished job at a time)", state.as_str()),
    )
}

/// What a refused revision or retry did not do.
pub(crate) const NOTHING_CHANGED: &str = "nothing changed";

impl Queue {
    /// Replace the record of job `id` with `new`, if the job is pending,
    /// waiting or held and was not claimed since attempt `seen` (the
    /// attempt counter the caller read it with). Returns the state it was
    /// found in (and left in).
    pub fn revise(&self, id: &str, seen: u32, new: &NewJob) -> Result<State> {
        // Only its owner (or root) changes a job (owner.rs).
        let l = self.locate_to_change(id)?;
        let c = l.c.unwrap_or_default();
        if !matches!(l.state, State::Pending | State::Waiting | State::Held) {
            return Err(Error::new(Kind::Busy, format!("job {id} is {}: only pending, waiting or held jobs can be changed", l.state.as_str())));
        }
        if c.attempt != seen {
            return Err(changed(id));
        }
        let old = self.read_job(&l.path)?;
        let mut job = new.job.clone();
        // A new key: free, or held by this job; the old one is let go
        // after the exchange. Both files stay locked until the end.
        let keys = match (&old.key, &new.job.key) {
            (a, b) if a == b => None,
            (a, b) => {
                let both: Vec<&str> = a.iter().chain(b.iter()).map(String::as_str).collect();
                let locks = self.lock_keys(&both)?;
                if let Some(k) = b
                    && let Some(f) = locks.file(self, k)
                    && let Some(h) = self.key_holder(f, k)?
                    && h.id != id
                {
                    return Err(key_taken(k, &h.id, h.state, NOTHING_CHANGED));
                }
                Some(locks)
            }
        };
        // Switched to the pusher's environment: the reviser's, stored as a
        // push stores it. It is its owner's alone, and a job runs only in
        // its own owner's: changing another user's job so is refused.
        if let Some(env) = &new.pusher_env {
            use std::os::unix::fs::MetadataExt;
            let owner = fs::symlink_metadata(&l.path).map(|m| m.uid()).unwrap_or_else(|_| crate::owner::euid());
            if owner != crate::owner::euid() {
                return Err(Error::new(
                    Kind::Permission,
                    format!("field \"env_from\": \"pusher\" would record your environment for a job of {}: only its owner can", crate::owner::describe(owner)),
                ));
            }
            job.env_ref = Some(self.store_env(env, &mut std::collections::HashMap::new())?);
        }
        // New dependencies: the rules of a push, before anything moves.
        let waits = if new.job.after == old.after {
            l.state == State::Waiting
        } else {
            let waits = self.check_deps(id, &new.job.after)?;
            for dep in &new.job.after {
                self.note_dependent(dep, id)?;
            }
            waits
        };
        let name = l.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let held = self.dir("held");
        let aside = held.join(&name);
        // 1. Out of every claimer's reach: into held/ under its name. A
        // claim that renamed it first wins.
        if l.state != State::Held {
            if fsx::rename_noreplace(&l.path, &aside)? != Renamed::Done {
                return Err(changed(id));
            }
            crate::failpoint!("revise.after_aside");
        }
        // 2. The new record in its place: one exchange of the staged file
        // with the job's, so that the name never holds anything partial and
        // never goes missing.
        let sync = self.durability == Durability::Full;
        // The new key's record before the job names the key: a crash
        // leaves a record whose job does not name it (a free key).
        if let (Some(locks), Some(k)) = (&keys, &job.key)
            && let Some(f) = locks.file(self, k)
        {
            if let Err(e) = self.write_key(f, k, id) {
                let _ = self.put_back_unless_held(l.state, &aside, &l.path);
                return Err(e);
            }
            crate::failpoint!("revise.after_key");
        }
        // Written as a push writes a job file (not group-writable), and it
        // keeps the job's owner: a job belongs to the uid that owns its
        // file, so root's edit of a user's job must not make it root's.
        let staged = fsx::stage_as(&self.tmp(), &job.to_bytes(), sync, fsx::Access::GroupReads)?;
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = fs::symlink_metadata(&aside)
            && m.uid() != crate::owner::euid()
        {
            let kept = std::os::unix::fs::chown(&staged, Some(m.uid()), Some(m.gid())).and_then(|()| match sync {
                true => fs::File::open(&staged)?.sync_all(),
                false => Ok(()),
            });
            if let Err(e) = kept {
                let _ = fs::remove_file(&staged);
                let _ = self.put_back(&aside, &l.path);
                return Err(Error::io("give the changed job record its owner", &staged, e));
            }
        }
        let swapped = renameat2(AT_FDCWD, &staged, AT_FDCWD, &aside, RenameFlags::RENAME_EXCHANGE);
        let _ = fs::remove_file(&staged); // the old record, or the unused new one
        match swapped {
            Ok(()) => {}
            // Released or canceled by someone else meanwhile.
            Err(Errno::ENOENT) => return Err(changed(id)),
            Err(e) => {
                // No exchange here (a filesystem without it): put the job back.
                let _ = self.put_back(&aside, &l.path);
                return Err(Error::io("exchange the job record", &aside, e.into()));
            }
        }
        if sync {
            fsx::fsync_dir(&held)?;
        }
        crate::failpoint!("revise.after_exchange");
        // The old key is free now (its record is stale): drop the record.
        if let (Some(locks), Some(k)) = (&keys, &old.key)
            && let Some(f) = locks.file(self, k)
        {
            self.drop_key(f, k, id)?;
        }
        // 3. Back to its state, under the name of its new priority and due
        // time (the due time of a pending job is its name's); a job whose
        // dependencies changed waits if one is unfinished, else is pending
        // (a held one stays held: its release decides).
        let run_at = new.run_at_ms;
        let to = QueuedName { key: Key::new(job.priority, run_at, id), c };
        let dest = match l.state {
            State::Held => State::Held,
            _ if waits => State::Waiting,
            _ => State::Pending,
        };
        match dest {
            State::Pending => {
                self.requeue_file(&aside, &job, run_at, c)?;
            }
            State::Waiting => {
                let dir = self.dir("waiting");
                fsx::rename_noreplace(&aside, &dir.join(to.to_string()))?;
                fsx::fsync_dir(&dir)?;
                // A dependency that ended while the job was aside did not see it.
                self.promote_if_ready(id)?;
            }
            _ => {
                if to.to_string() != name {
                    fsx::rename_noreplace(&aside, &held.join(to.to_string()))?;
                    fsx::fsync_dir(&held)?;
                }
            }
        }
        Ok(l.state)
    }

    /// Can job `id` wait on `after`? Every dependency must exist (66), none
    /// may have failed (it would never run: 65), and none may wait, however
    /// indirectly, on `id` itself (65). `Ok(true)` when one is unfinished.
    fn check_deps(&self, id: &str, after: &[String]) -> Result<bool> {
        let mut unfinished = false;
        let mut seen: Vec<String> = Vec::new();
        let mut todo: Vec<String> = after.to_vec();
        while let Some(dep) = todo.pop() {
            if dep == id {
                return Err(Error::new(Kind::Data, format!("field \"after\": job {id} would wait on itself")));
            }
            if seen.contains(&dep) {
                continue;
            }
            seen.push(dep.clone());
            let Some(d) = self.locate(&dep)? else {
                return Err(Error::new(Kind::NoJob, format!("field \"after\": no such job {dep}")));
            };
            let direct = after.contains(&dep);
            match d.state {
                State::Done => {}
                State::Dead | State::Canceled if direct => {
                    return Err(Error::new(Kind::Data, format!("field \"after\": job {dep} is {}: this job would never run", d.state.as_str())));
                }
                State::Dead | State::Canceled => {}
                _ => {
                    unfinished |= direct;
                    // What it waits on cannot be this job either.
                    if matches!(d.state, State::Waiting | State::Held | State::Pending)
                        && let Ok(j) = self.read_job(&d.path)
                    {
                        todo.extend(j.after);
                    }
                }
            }
        }
        Ok(unfinished)
    }

    /// Move a job set aside back where it was, unless it was held there.
    fn put_back_unless_held(&self, was: State, aside: &std::path::Path, path: &std::path::Path) -> Result<()> {
        match was {
            State::Held => Ok(()),
            _ => self.put_back(aside, path),
        }
    }

    /// Move a job set aside back where it was (its segment may be gone).
    fn put_back(&self, aside: &std::path::Path, was: &std::path::Path) -> Result<()> {
        if let Some(dir) = was.parent() {
            fsx::mkdir(dir)?;
        }
        fsx::rename_noreplace(aside, was).map(|_| ())
    }
}
