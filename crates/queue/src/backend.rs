//! The storage seam. Every tool works through these operations, and only
//! these; the queue directory (`Queue`) is the first implementation. A
//! second backend (PostgreSQL, see the project's scale-out notes) implements
//! the same trait: row per job, claim by `UPDATE … SKIP LOCKED`, fencing by
//! `WHERE token = …`. Operations that are specific to a directory (gc of
//! files, quarantine) stay on `Queue`.

use crate::claim::{Claim, ClaimOpts};
use crate::error::Result;
use crate::job::NewJob;
use crate::list::{Counts, Entry};
use crate::push::Pushed;
use crate::queue::Queue;
use crate::reclaim::Reclaimed;
use crate::record::{Outcome, Reason, ResultRecord, State};
use crate::settle::{Located, SettleOpts};

/// What a queue backend does.
pub trait Backend {
    /// Add jobs; each is durable before its outcome is returned.
    fn push(&self, jobs: Vec<NewJob>) -> Vec<Result<Pushed>>;
    /// Take up to `n` ready jobs under a lease, most urgent first.
    fn claim(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>>;
    /// Extend a claim (the heartbeat); refused with `LeaseLost` when stale.
    fn touch(&self, id: &str, token: &str) -> Result<i64>;
    /// The fenced completion of a claim.
    fn settle(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord>;
    /// Settle the claims of owners that are gone.
    fn reclaim(&self, dry_run: bool) -> Result<Vec<Reclaimed>>;
    /// Counts per state.
    fn counts(&self) -> Result<Counts>;
    /// The jobs in some states.
    fn entries(&self, states: &[State]) -> Result<Vec<Entry>>;
    /// Where one job is.
    fn locate(&self, id: &str) -> Result<Option<Located>>;
    /// The latest outcome of a job.
    fn last_result(&self, id: &str) -> Option<ResultRecord>;
    /// Operator moves.
    fn cancel(&self, id: &str) -> Result<State>;
    fn retry(&self, id: &str) -> Result<()>;
    fn hold(&self, id: &str) -> Result<State>;
    fn release(&self, id: &str) -> Result<State>;
    fn remove(&self, id: &str) -> Result<State>;
    fn pause(&self, until_ms: Option<i64>) -> Result<()>;
    fn resume(&self) -> Result<bool>;
}

impl Backend for Queue {
    fn push(&self, jobs: Vec<NewJob>) -> Vec<Result<Pushed>> {
        Queue::push(self, jobs)
    }
    fn claim(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        Queue::claim(self, n, opts)
    }
    fn touch(&self, id: &str, token: &str) -> Result<i64> {
        Queue::touch(self, id, token)
    }
    fn settle(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord> {
        Queue::settle(self, id, token, reason, outcome, opts)
    }
    fn reclaim(&self, dry_run: bool) -> Result<Vec<Reclaimed>> {
        Queue::reclaim(self, dry_run)
    }
    fn counts(&self) -> Result<Counts> {
        Queue::counts(self)
    }
    fn entries(&self, states: &[State]) -> Result<Vec<Entry>> {
        Queue::entries(self, states)
    }
    fn locate(&self, id: &str) -> Result<Option<Located>> {
        Queue::locate(self, id)
    }
    fn last_result(&self, id: &str) -> Option<ResultRecord> {
        Queue::last_result(self, id)
    }
    fn cancel(&self, id: &str) -> Result<State> {
        Queue::cancel(self, id)
    }
    fn retry(&self, id: &str) -> Result<()> {
        Queue::retry(self, id)
    }
    fn hold(&self, id: &str) -> Result<State> {
        Queue::hold(self, id)
    }
    fn release(&self, id: &str) -> Result<State> {
        Queue::release(self, id)
    }
    fn remove(&self, id: &str) -> Result<State> {
        Queue::remove(self, id)
    }
    fn pause(&self, until_ms: Option<i64>) -> Result<()> {
        Queue::pause(self, until_ms)
    }
    fn resume(&self) -> Result<bool> {
        Queue::resume(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{PushContext, validate};
    use crate::record::Liveness;

    /// The protocol through the trait object alone: what a second backend
    /// must pass too.
    fn conformance(b: &dyn Backend) {
        let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: crate::time::now_ms() };
        let line = |p: i64| serde_json::json!({"cmd": ["true"], "priority": p}).as_object().unwrap().clone();
        let low = b.push(vec![validate(&line(0), &ctx).unwrap()]).remove(0).unwrap();
        let high = b.push(vec![validate(&line(5), &ctx).unwrap()]).remove(0).unwrap();
        assert_eq!(b.counts().unwrap().ready, 2);
        let opts = ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock };
        let c = b.claim(1, &opts).unwrap().remove(0);
        assert_eq!(c.id, high.id, "priority first");
        let token = c.token();
        b.touch(&c.id, &token).unwrap();
        let r = b.settle(&c.id, &token, Reason::Ok, &Outcome::default(), &SettleOpts::default()).unwrap();
        assert_eq!(r.state, State::Done);
        let again = b.settle(&c.id, &token, Reason::Ok, &Outcome::default(), &SettleOpts::default()).unwrap_err();
        assert_eq!(again.kind, crate::Kind::LeaseLost, "a settled token is stale");
        assert_eq!(b.cancel(&low.id).unwrap(), State::Pending);
        assert_eq!(b.locate(&low.id).unwrap().unwrap().state, State::Canceled);
        b.retry(&low.id).unwrap();
        assert_eq!(b.locate(&low.id).unwrap().unwrap().state, State::Pending);
        b.pause(None).unwrap();
        assert!(b.claim(1, &opts).unwrap().is_empty(), "paused");
        assert!(b.resume().unwrap());
        let held = b.claim(1, &opts).unwrap();
        assert_eq!(held.len(), 1);
        assert!(b.reclaim(false).unwrap().is_empty(), "a live claim is not reclaimed");
        drop(held); // the holder is gone: its lock is free
        let r = b.reclaim(false).unwrap();
        assert_eq!(r.len(), 1, "a dead holder's claim is reclaimed at once");
        assert_eq!(r[0].state, State::Pending);
    }

    #[test]
    fn directory_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::create(&dir.path().join("q"), None).unwrap();
        conformance(&q);
    }
}
