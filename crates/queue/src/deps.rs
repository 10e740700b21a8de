//! Dependencies (`after`): who waits on whom, and what a job's end does to
//! the jobs waiting on it. A job that must wait leaves a marker
//! `var/<DEP>/then.<ID>` in each unfinished dependency's directory before it
//! is published, so a dependency's settle finds its dependents by listing
//! its own small directory, never by reading every waiting job
//! (docs/FORMAT.md, "Push" and "Settle").

use crate::names::var;
use crate::error::Result;
use crate::fsx;
use crate::queue::Queue;
use crate::record::{Reason, State};
use std::path::PathBuf;

impl Queue {
    /// Record that job `id` waits on `dep`: an empty marker in
    /// `var/<dep>/`, written before `id` is published. Not synced: a marker
    /// lost in a crash leaves the promotion to q-gc.
    pub(crate) fn note_dependent(&self, dep: &str, id: &str) -> Result<()> {
        crate::id::check_id(dep)?;
        let p = self.make_var(dep)?.join(var::then(id));
        match fsx::create_new(&p) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(nix::libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The jobs that said they wait on `dep` (their markers).
    /// (None when the directory cannot be read: q-gc promotes them.)
    fn dependents(&self, dep: &str) -> Vec<String> {
        fsx::list(&self.var(dep))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.strip_prefix(var::THEN).map(str::to_owned))
            .filter(|id| crate::id::check_id(id).is_ok())
            .collect()
    }

    /// Job `id` became terminal: settle the jobs waiting on it. Done: each
    /// whose dependencies are now all done moves to pending; the
    /// directories it moved into are added to `dirty` for the caller to
    /// fsync (a group of settles syncs them once). Dead or canceled: each
    /// ends canceled (`dependency-failed`, durable at once), which cascades.
    ///
    /// It runs after the settle's commit point and never fails it: a
    /// dependent that cannot be read or moved (another process moved it
    /// first, its file is bad) is left where it is, for q-gc, which
    /// promotes waiting jobs or quarantines their files, and the others
    /// are still settled.
    pub(crate) fn on_terminal(&self, id: &str, state: State, dirty: &mut Vec<PathBuf>) {
        for dependent in self.dependents(id) {
            if state == State::Done {
                let _ = self.promote(&dependent, dirty);
            } else {
                let detail = serde_json::json!({"dependency": id});
                // Only a job still waiting: a held one is judged on release.
                let _ = self.end_without_attempt(&dependent, State::Waiting, State::Canceled, Reason::DependencyFailed, Some(detail));
            }
        }
    }

    /// Look at every waiting job and move on those whose dependencies all
    /// ended, which a settle did not (their marker was lost in a crash, or
    /// an older q wrote none): a job's file is read, its dependencies
    /// looked for in the terminal directories only. Returns how many moved.
    /// Files that cannot be read are left to q-gc.
    pub fn promote_stranded(&self) -> Result<usize> {
        let dir = self.dir("waiting");
        let ended = |dep: &str| {
            [State::Done, State::Dead, State::Canceled]
                .into_iter()
                .find(|st| fsx::exists(&self.dir(st.dir()).join(crate::names::terminal_name(dep))))
        };
        let mut moved = 0;
        for n in fsx::list(&dir)? {
            let Some(name) = crate::names::QueuedName::parse(&n) else { continue };
            let Ok(job) = self.read_job(&dir.join(&n)) else { continue };
            let states: Vec<Option<State>> = job.after.iter().map(|d| ended(d)).collect();
            let failed = states.iter().any(|s| matches!(s, Some(State::Dead | State::Canceled)));
            if !failed && states.iter().any(Option::is_none) {
                continue;
            }
            if self.promote_if_ready(&name.key.id)?.is_some() {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// A waiting job whose dependencies are all done moves to pending; one
    /// with a failed dependency ends canceled. Safe to call from anywhere,
    /// any number of times (both sides of a race call it). Returns the
    /// state this call moved the job to; `None` when it did not move it
    /// (it still waits, or is not in `waiting/`: moved on by someone else,
    /// held, gone).
    pub fn promote_if_ready(&self, id: &str) -> Result<Option<State>> {
        let mut dirty = Vec::new();
        let st = self.promote(id, &mut dirty)?;
        fsx::fsync_dirs(&dirty)?;
        Ok(st)
    }

    /// [`Queue::promote_if_ready`], the directories moved into added to
    /// `dirty` instead of synced.
    fn promote(&self, id: &str, dirty: &mut Vec<PathBuf>) -> Result<Option<State>> {
        // Only `waiting/` is looked at: a marker naming a job that never
        // appeared costs one listing, not a scan of every pending segment.
        let Some(l) = self.locate_in(State::Waiting, id)? else { return Ok(None) };
        let job = match self.read_job(&l.path) {
            Ok(job) => job,
            // Moved on meanwhile by the other side of the race.
            Err(_) if !fsx::exists(&l.path) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut all_done = true;
        for dep in &job.after {
            match self.locate(dep)?.map(|d| d.state) {
                Some(State::Done) => {}
                Some(State::Dead | State::Canceled) | None => {
                    let detail = serde_json::json!({"dependency": dep});
                    let ended = self.end_without_attempt(id, State::Waiting, State::Canceled, Reason::DependencyFailed, Some(detail));
                    return Ok(ended.ok().map(|r| r.state));
                }
                Some(_) => all_done = false,
            }
        }
        if all_done && self.requeue_file_into(&l.path, &job, l.run_at_ms.unwrap_or(0).max(0), l.c.unwrap_or_default(), dirty)? {
            return Ok(Some(State::Pending));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use crate::record::{Liveness, Outcome, Reason, State};
    use crate::{ClaimOpts, Queue, testkit};
    use serde_json::json;

    fn finish(q: &Queue, id: &str, reason: Reason) {
        let opts = ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock, fit: None };
        let c = q.claim(1, &opts).unwrap().pop().expect("a job to claim");
        assert_eq!(c.id, id, "the job expected next");
        q.settle(&c.id, &c.token, reason, &Outcome::default(), &Default::default()).unwrap();
    }

    fn state(q: &Queue, id: &str) -> State {
        q.locate(id).unwrap().unwrap().state
    }

    /// A waiting job leaves a marker with each unfinished dependency, and
    /// a dependency's end settles exactly the jobs its markers name: a
    /// chain moves one link at a time, a job waiting on two moves when both
    /// are done, a failure cancels its dependents and theirs.
    #[test]
    fn a_settle_moves_the_jobs_its_markers_name() {
        let (_d, q) = testkit::queue();
        let a = testkit::push(&q, &[json!({"cmd": ["true"], "attempts": 1})], Default::default()).remove(0);
        let b = testkit::push(&q, &[json!({"cmd": ["true"], "after": [a]})], Default::default()).remove(0);
        let c = testkit::push(&q, &[json!({"cmd": ["true"], "after": [b]})], Default::default()).remove(0);
        let both = testkit::push(&q, &[json!({"cmd": ["true"], "after": [a, b]})], Default::default()).remove(0);
        assert!(q.var(&a).join(crate::names::var::then(&b)).exists(), "b's marker with a (which never ran)");
        assert!(q.var(&b).join(crate::names::var::then(&c)).exists());
        assert_eq!(q.dependents(&a).len(), 2);
        finish(&q, &a, Reason::Ok);
        assert_eq!((state(&q, &b), state(&q, &c), state(&q, &both)), (State::Pending, State::Waiting, State::Waiting));
        finish(&q, &b, Reason::Ok);
        assert_eq!((state(&q, &c), state(&q, &both)), (State::Pending, State::Pending));

        let (_d, q) = testkit::queue();
        let a = testkit::push(&q, &[json!({"cmd": ["false"], "attempts": 1})], Default::default()).remove(0);
        let b = testkit::push(&q, &[json!({"cmd": ["true"], "after": [a]})], Default::default()).remove(0);
        let c = testkit::push(&q, &[json!({"cmd": ["true"], "after": [b]})], Default::default()).remove(0);
        finish(&q, &a, Reason::Exit);
        assert_eq!(state(&q, &a), State::Dead);
        assert_eq!((state(&q, &b), state(&q, &c)), (State::Canceled, State::Canceled), "cascaded");
        assert_eq!(q.last_result(&c).unwrap().reason, Reason::DependencyFailed);
    }

    /// A marker whose job never appeared (its push crashed) is harmless; a
    /// waiting job whose marker was lost (a power loss) is moved on by the
    /// supervisor's pass over waiting jobs, and by q-gc's.
    #[test]
    fn a_lost_or_stale_marker_is_harmless() {
        let (_d, q) = testkit::queue();
        let a = testkit::push(&q, &[json!({"cmd": ["true"]})], Default::default()).remove(0);
        let b = testkit::push(&q, &[json!({"cmd": ["true"], "after": [a]})], Default::default()).remove(0);
        std::fs::remove_file(q.var(&a).join(crate::names::var::then(&b))).unwrap();
        let ghost = crate::id::new_id();
        std::fs::File::create(q.var(&a).join(crate::names::var::then(&ghost))).unwrap();
        finish(&q, &a, Reason::Ok);
        assert_eq!(state(&q, &b), State::Waiting, "no marker: the settle did not see it");
        assert!(q.locate(&ghost).unwrap().is_none());
        // A job whose dependency has not ended stays put.
        let c = testkit::push(&q, &[json!({"cmd": ["true"]})], Default::default()).remove(0);
        let d = testkit::push(&q, &[json!({"cmd": ["true"], "after": [c]})], Default::default()).remove(0);
        assert_eq!(q.promote_stranded().unwrap(), 1, "the supervisor's pass moves it");
        assert_eq!((state(&q, &b), state(&q, &d)), (State::Pending, State::Waiting));
        // So does q-gc's.
        let e = testkit::push(&q, &[json!({"cmd": ["true"], "after": [b]})], Default::default()).remove(0);
        std::fs::remove_file(q.var(&b).join(crate::names::var::then(&e))).unwrap();
        finish(&q, &b, Reason::Ok);
        finish(&q, &c, Reason::Ok);
        assert_eq!((state(&q, &d), state(&q, &e)), (State::Pending, State::Waiting));
        let mut actions = Vec::new();
        q.gc(&Default::default(), &mut |a| actions.push(a.action)).unwrap();
        assert_eq!(state(&q, &e), State::Pending, "q-gc promoted it: {actions:?}");
    }

    /// A dependent that cannot be read (its file writable by others) does
    /// not fail its dependency's settle, nor keep the other dependents
    /// waiting: it stays for q-gc, which quarantines it.
    #[test]
    fn an_unreadable_dependent_does_not_fail_the_settle() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, q) = testkit::queue();
        let a = testkit::push(&q, &[json!({"cmd": ["true"]})], Default::default()).remove(0);
        let deps: Vec<String> = (0..3).map(|_| testkit::push(&q, &[json!({"cmd": ["true"], "after": [a]})], Default::default()).remove(0)).collect();
        let bad = q.locate(&deps[1]).unwrap().unwrap().path;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o666)).unwrap();
        finish(&q, &a, Reason::Ok);
        assert_eq!(state(&q, &a), State::Done);
        assert_eq!((state(&q, &deps[0]), state(&q, &deps[1]), state(&q, &deps[2])), (State::Pending, State::Waiting, State::Pending));
    }
}
