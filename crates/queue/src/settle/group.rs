//! Group commit of settles: the outcomes of several attempts made durable by
//! two filesystem syncs, instead of two fsyncs each (docs/FORMAT.md,
//! "Settle a group"). A worker whose jobs end faster than a settle's fsyncs
//! hands its finished attempts over in groups.

use super::{Decided, SettleOpts};
use crate::error::{Error, Result};
use crate::fsx::{self, Renamed};
use crate::queue::Queue;
use crate::record::{Outcome, Reason, ResultRecord};
use std::fs;
use std::path::PathBuf;

/// One attempt of a group: a claim this process holds, and how it ended.
pub struct ToSettle<'a> {
    pub claim: &'a crate::Claim,
    pub reason: Reason,
    pub outcome: &'a Outcome,
    pub opts: &'a SettleOpts,
}

impl Queue {
    /// Settle several attempts as one group commit; one answer per attempt,
    /// in order, as [`Queue::settle_job`] gives it. Each attempt is fenced
    /// on its own (a lost lease refuses that attempt only). A group of one,
    /// or one that needs no sync (relaxed durability), is settled attempt by
    /// attempt, and so is every group where `syncfs` does not reach the
    /// store (FUSE).
    pub fn settle_group(&self, group: &[ToSettle]) -> Vec<Result<ResultRecord>> {
        let decided: Vec<Decided> = group.iter().map(|s| self.decide(s.claim.leased_name(), &s.claim.job, s.reason, s.outcome, s.opts)).collect();
        if group.len() < 2 || !decided.iter().any(|d| d.sync) || !self.syncfs_trusted() {
            // 0. Deferred claims made durable first: a claim lost in a
            // power loss must not leave its outcome behind.
            if group.iter().any(|s| s.claim.durable_pending()) {
                if let Err(e) = self.sync_leased() {
                    return group.iter().map(|_| Err(Error::new(e.kind, e.to_string()))).collect();
                }
                crate::failpoint!("settle.after_claim_sync");
            }
            let answers = group.iter().zip(decided).map(|(s, d)| self.settle_decided(s.claim.leased_name(), &s.claim.job, d)).collect();
            Self::synced(group);
            return answers;
        }
        let mut answers: Vec<Option<Result<ResultRecord>>> = group.iter().map(|_| None).collect();
        // 1. Each outcome written under a temporary name; no fsync.
        let tmp_dir = self.tmp();
        let mut staged: Vec<(usize, PathBuf)> = Vec::with_capacity(group.len());
        for (i, d) in decided.iter().enumerate() {
            match fsx::stage(&tmp_dir, &d.rec.to_line(), false) {
                Ok(tmp) => staged.push((i, tmp)),
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        crate::failpoint!("settle.group_after_write");
        // 2. One sync: every outcome's data is durable before any has a
        // name, and so is every deferred claim of the group (`leased/` is
        // on the same filesystem).
        if let Err(e) = fsx::syncfs(&tmp_dir) {
            for (i, tmp) in staged {
                let _ = fs::remove_file(&tmp);
                answers[i] = Some(Err(Error::new(e.kind, e.to_string())));
            }
            return answers.into_iter().map(|a| a.expect("every attempt answered")).collect();
        }
        crate::failpoint!("settle.group_after_data_sync");
        // 3. Publish each: the fencing point of each attempt.
        let mut published = Vec::with_capacity(staged.len());
        for (i, tmp) in staged {
            let name = group[i].claim.leased_name();
            match fsx::publish_staged(&tmp, || self.name_result(name, &tmp)) {
                Ok(Renamed::Done) => published.push(i),
                Ok(_) => answers[i] = Some(Err(Error::lease_lost(&name.id, &name.token()))),
                Err(e) => answers[i] = Some(Err(e)),
            }
            crate::failpoint!("settle.group_after_publish");
        }
        // 4. One sync: the names are durable. The commit point of the group.
        if !published.is_empty() {
            if let Err(e) = fsx::syncfs(&tmp_dir) {
                for i in published {
                    answers[i] = Some(Err(Error::new(e.kind, e.to_string())));
                }
                return answers.into_iter().map(|a| a.expect("every attempt answered")).collect();
            }
            crate::failpoint!("settle.after_result");
        }
        // 5. The fenced moves, as in a single settle; the directories the
        // jobs they promote moved into are synced once for the group.
        let mut decided: Vec<Option<Decided>> = decided.into_iter().map(Some).collect();
        let mut dirty = Vec::new();
        for i in published {
            let d = decided[i].take().expect("each attempt settles once");
            answers[i] = Some(self.finish_settle(group[i].claim.leased_name(), &group[i].claim.job, d, &mut dirty));
        }
        // As in a single settle: past the commit point, recoverable by q-gc.
        let _ = fsx::fsync_dirs(&dirty);
        Self::synced(group);
        answers.into_iter().map(|a| a.expect("every attempt answered")).collect()
    }
}

impl Queue {
    /// The group's claims are durable now (or settled): none is pending.
    fn synced(group: &[ToSettle]) {
        for s in group {
            s.claim.sync_pending.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Liveness, State};
    use crate::{ClaimOpts, testkit};

    #[test]
    fn a_group_settles_each_attempt_fenced_and_in_order() {
        let (_d, q) = testkit::queue();
        let line = serde_json::json!({"cmd": ["true"], "attempts": 2});
        let ids = testkit::push(&q, &vec![line; 4], Default::default());
        let dependent = testkit::push(&q, &[serde_json::json!({"cmd": ["true"], "after": [ids[0]]})], Default::default()).remove(0);
        let opts = ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock, fit: None };
        let mut claims = q.claim(4, &opts).unwrap();
        claims.sort_by_key(|c| ids.iter().position(|i| *i == c.id));
        assert_eq!(claims.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), ids);
        // The third attempt's lease was taken over: someone settled it first.
        let so = SettleOpts { delay_ms: Some(0), ..SettleOpts::default() };
        q.settle(&claims[2].id, &claims[2].token, Reason::WorkerShutdown, &Outcome::default(), &so).unwrap();
        let outcome = Outcome::default();
        let reasons = [Reason::Ok, Reason::Exit, Reason::Ok, Reason::Ok];
        let group: Vec<ToSettle> = claims
            .iter()
            .zip(reasons)
            .map(|(c, reason)| ToSettle { claim: c, reason, outcome: &outcome, opts: &so })
            .collect();
        let answers = q.settle_group(&group);
        assert_eq!(answers.len(), 4, "one answer per attempt");
        let states: Vec<Option<State>> = answers.iter().map(|a| a.as_ref().ok().map(|r| r.state)).collect();
        assert_eq!(states, [Some(State::Done), Some(State::Pending), None, Some(State::Done)], "in order: {answers:?}");
        assert_eq!(answers[2].as_ref().unwrap_err().kind, crate::Kind::LeaseLost, "a taken-over attempt is refused");
        assert_eq!(answers[1].as_ref().unwrap().failures, 1);
        // Each decision is on disk: the job where its record says, the
        // record where readers look, nothing left in tmp/.
        for (i, want) in [(0, State::Done), (1, State::Pending), (2, State::Pending), (3, State::Done)] {
            assert_eq!(q.locate(&ids[i]).unwrap().unwrap().state, want, "job {i}");
        }
        for i in [0, 1, 3] {
            let r = q.last_result(&ids[i]).unwrap();
            assert_eq!((r.attempt, r.reason), (1, reasons[i]), "job {i}'s published record");
        }
        assert_eq!(q.last_result(&ids[2]).unwrap().reason, Reason::WorkerShutdown, "the first settle's record stands");
        assert!(crate::fsx::list(&q.tmp()).unwrap().is_empty(), "tmp/ holds {:?}", crate::fsx::list(&q.tmp()));
        // A job that ended done in a group frees what waits on it.
        assert_eq!(q.locate(&dependent).unwrap().unwrap().state, State::Pending);
    }
}
