//! Settle: every way a job leaves a state. The fenced completion of an
//! attempt, the lease heartbeat, and the moves that need no attempt (cancel,
//! hold, release, retry, remove). What a job's end does to the jobs waiting
//! on it is in `deps.rs`.
//!
//! Fencing: the outcome of attempt A is decided by whoever first publishes
//! `var/<ID>/<A>.result.json` (a no-replace rename); only that party then
//! renames `leased/<ID>.<token>.json` to the job's next state. A worker whose
//! lease was taken over finds either the result or the leased name gone and
//! is refused (`lease-lost`, exit 76), changing nothing.

use crate::names::var;
use crate::error::{Error, IoContext, Kind, Result};
use crate::fsx::{self, Renamed};
use crate::job::Job;
use crate::names::{Counters, Key, LeasedName, QueuedName, terminal_name};
use crate::queue::Queue;
use crate::record::{Ask, Lease, Outcome, Reason, Request, ResultRecord, RunInfo, State};
use crate::time;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

mod group;
pub use group::ToSettle;

/// A job poisoned by interruptions ends `dead` after this many in a row.
pub const MAX_INTERRUPTS: u32 = 5;

/// Who settles, for the record.
#[derive(Debug, Clone, Default)]
pub struct SettleOpts {
    /// Replace the backoff delay of a retry (`q-ctl nack --delay`).
    pub delay_ms: Option<u64>,
    pub worker_id: Option<String>,
    /// Random bits for the backoff jitter.
    pub rand: u64,
    /// The job was refused, not run, for a reason no retry can mend (its
    /// owner is no user of this host): a failure that ends it `dead` at
    /// once, whatever attempts it has left; the reason is the record's
    /// `detail.refused`.
    pub refused: Option<String>,
}

/// An attempt's outcome, decided and not yet published.
struct Decided {
    rec: ResultRecord,
    /// When a job going back to pending is due.
    run_at: i64,
    /// The counters of its next name.
    c: Counters,
    /// Whether its outcome must be durable before the move (`full`
    /// durability, or an at-most-once job).
    sync: bool,
}

/// What an attempt's outcome makes of its job, whatever the backend.
pub(crate) struct Decision {
    /// The result record (its `next_run_at` from `now` and the delay).
    pub rec: ResultRecord,
    /// The job's counters after it.
    pub c: Counters,
    /// Back to pending after this delay; `None` when it ended.
    pub delay_ms: Option<u64>,
}

/// What settling attempt `c.attempt` (claimed with `token`) of `job` with
/// `reason` makes of the job at `now`: its next state and counters, and the
/// result record that says so (SPEC "Retries"; failures and interruptions
/// are counted apart).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(id: &str, token: &str, claimed: Counters, job: &Job, reason: Reason, outcome: &Outcome, opts: &SettleOpts, now: i64) -> Decision {
    let started = outcome.started_at_ms.is_some();
    let mut c = claimed;
    let mut delay = None;
    let state = match reason {
        Reason::Ok => State::Done,
        Reason::Canceled => State::Canceled,
        Reason::DependencyFailed => State::Canceled,
        // Queued again at once, counting nothing.
        Reason::Restarted => {
            delay = Some(0);
            State::Pending
        }
        r if r.is_failure() => {
            c.failures += 1;
            c.interrupts = 0;
            if c.failures < job.attempts && !job.is_at_most_once() && opts.refused.is_none() {
                delay = Some(opts.delay_ms.unwrap_or_else(|| job.backoff.delay_ms(c.failures, opts.rand)));
                State::Pending
            } else {
                State::Dead
            }
        }
        r if r.is_interruption() => {
            c.interrupts += 1;
            if (job.is_at_most_once() && started) || c.interrupts >= MAX_INTERRUPTS {
                State::Dead
            } else {
                delay = Some(opts.delay_ms.unwrap_or(0));
                State::Pending
            }
        }
        _ => State::Dead,
    };
    let rec = ResultRecord {
        kind: "result".into(),
        id: id.to_owned(),
        attempt: claimed.attempt,
        token: Some(token.to_owned()),
        state,
        reason,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        started_at: outcome.started_at_ms.map(time::rfc3339),
        finished_at: Some(time::rfc3339(outcome.finished_at_ms.unwrap_or(now))),
        duration_ms: outcome.started_at_ms.map(|s| (outcome.finished_at_ms.unwrap_or(now) - s).max(0) as u64),
        cpu_user_ms: outcome.cpu_user_ms,
        cpu_sys_ms: outcome.cpu_sys_ms,
        max_rss_kb: outcome.max_rss_kb,
        failures: c.failures,
        next_run_at: delay.map(|d| time::rfc3339(now.saturating_add(d as i64))),
        name: job.name.clone(),
        host: Some(crate::ident::host().host.clone()),
        worker_id: opts.worker_id.clone(),
        detail: match &opts.refused {
            Some(why) => Some(serde_json::json!({"refused": why})),
            None => (!started && reason.is_interruption()).then(|| serde_json::json!({"started": false})),
        },
    };
    Decision { rec, c, delay_ms: delay }
}

/// Where a job is now.
#[derive(Debug, Clone)]
pub struct Located {
    pub state: State,
    pub path: PathBuf,
    /// Counters from the file name (terminal names carry none).
    pub c: Option<Counters>,
    pub run_at_ms: Option<i64>,
}

impl Queue {
    /// The lease record of attempt `attempt`.
    pub fn lease_path(&self, id: &str, attempt: u32) -> PathBuf {
        self.var(id).join(var::lease(attempt))
    }

    /// The lease record of an attempt (the first line of its lease file).
    pub fn read_lease(&self, id: &str, attempt: u32) -> Result<Lease> {
        let p = self.lease_path(id, attempt);
        let b = fsx::read_capped(&p, 64 * 1024).ctx("read", &p)?;
        let first = b.split(|&c| c == b'\n').next().unwrap_or_default();
        serde_json::from_slice(first).map_err(|e| Error::new(Kind::Data, format!("{}: {e}", p.display())))
    }

    /// The run record of an attempt (the second line of its lease file,
    /// appended by the runner once the job started); `None` before.
    pub fn read_run(&self, id: &str, attempt: u32) -> Option<RunInfo> {
        let b = fsx::read_capped(&self.lease_path(id, attempt), 64 * 1024).ok()?;
        let second = b.split(|&c| c == b'\n').nth(1)?;
        serde_json::from_slice(second).ok()
    }

    /// Record that the attempt's job started: append the run record to the
    /// lease file through the holder's open handle (one write, no new file).
    pub fn record_start(&self, lease_file: &std::fs::File, run: &RunInfo) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut line = serde_json::to_vec(run).unwrap_or_default();
        line.push(b'\n');
        let len = lease_file.metadata().map(|m| m.len()).unwrap_or(0);
        lease_file.write_all_at(&line, len).map_err(|e| Error::io("append run record to", Path::new("lease"), e))
    }

    fn leased_path(&self, name: &LeasedName) -> PathBuf {
        self.dir("leased").join(name.to_string())
    }

    fn parse_token(id: &str, token: &str) -> Result<LeasedName> {
        crate::id::check_id(id)?;
        LeasedName::from_token(id, token)
            .ok_or_else(|| Error::new(Kind::Data, format!("invalid token {token:?}: give the token of the claim line")))
    }

    /// Extend a claim: the heartbeat. Refused (76) if the claim is no longer
    /// current. Returns the new expiry.
    pub fn touch(&self, id: &str, token: &str) -> Result<i64> {
        let name = Self::parse_token(id, token)?;
        if !fsx::exists(&self.leased_path(&name)) {
            return Err(Error::lease_lost(id, token));
        }
        self.check_may_change(id, &self.leased_path(&name))?;
        let lease = self.read_lease(id, name.c.attempt).map_err(|_| Error::lease_lost(id, token))?;
        let p = self.lease_path(id, name.c.attempt);
        let f = fsx::open_read(&p).ctx("open", &p)?;
        f.set_modified(std::time::SystemTime::now()).ctx("touch", &p)?;
        if !fsx::exists(&self.leased_path(&name)) {
            return Err(Error::lease_lost(id, token));
        }
        Ok(time::now_ms() + lease.lease_ms as i64)
    }

    /// What has been asked of this running attempt, oldest first (a cancel
    /// last): one listing of `var/<ID>/`.
    pub fn requests(&self, id: &str, attempt: u32) -> Vec<Request> {
        let var = self.var(id);
        let mut names = fsx::list(&var).unwrap_or_default();
        names.sort();
        let mut out = Vec::new();
        let mut cancel = false;
        for n in &names {
            if *n == var::cancel(attempt) {
                cancel = true;
            } else if let Some(key) = var::parse_request(n, attempt)
                // A request is published whole; one that does not parse is not q's.
                && let Ok(b) = fsx::read_capped(&var.join(n), 4096)
                && let Ok(ask) = serde_json::from_slice::<Ask>(&b)
            {
                out.push(Request { key: key.to_owned(), ask });
            }
        }
        if cancel {
            out.push(Request { key: "cancel".into(), ask: Ask::Cancel });
        }
        out
    }

    /// Ask the running attempt of job `id` for something: a request file
    /// its runner finds within its next look (a cancel keeps its own name,
    /// `<A>.cancel`). Returns the state the job was found in; only a
    /// running job is asked.
    pub fn request(&self, id: &str, ask: Ask) -> Result<State> {
        // Only its owner (or root) signals or restarts a job (owner.rs).
        let l = self.locate_to_change(id)?;
        if l.state != State::Running {
            return Ok(l.state);
        }
        let a = l.c.unwrap_or_default().attempt;
        let var = self.var(id);
        match ask {
            Ask::Cancel => {
                let p = var.join(var::cancel(a));
                fs::write(&p, b"").ctx("write", &p)?;
            }
            _ => {
                let bytes = serde_json::to_vec(&ask).map_err(|e| Error::new(Kind::Data, e.to_string()))?;
                fsx::publish(&self.tmp(), &var.join(var::request(a)), &bytes, false)?;
            }
        }
        Ok(State::Running)
    }

    /// Settle attempt `token` of job `id` with `reason`: the fenced commit.
    /// The claim may be a worker's deferred one (a handler can settle its
    /// own claim): at full durability `leased/` is fsynced first.
    pub fn settle(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord> {
        self.check_may_change(id, &self.leased_path(&Self::parse_token(id, token)?))?;
        self.settle_token(id, token, reason, outcome, opts, self.sync_claims(false))
    }

    /// [`Queue::settle`]; `claim_sync`: fsync `leased/` before the outcome
    /// (the claim may not be durable yet).
    pub(crate) fn settle_token(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts, claim_sync: bool) -> Result<ResultRecord> {
        let name = Self::parse_token(id, token)?;
        let leased = self.leased_path(&name);
        if !fsx::exists(&leased) {
            return Err(Error::lease_lost(id, token));
        }
        let job = match self.read_job(&leased) {
            Ok(j) => j,
            Err(_) if !fsx::exists(&leased) => return Err(Error::lease_lost(id, token)),
            Err(e) => return Err(e),
        };
        if claim_sync {
            self.sync_leased()?;
        }
        self.settle_job(&name, &job, reason, outcome, opts)
    }

    /// Settle a claim whose job record the caller holds (a runner read it
    /// at claim time): the same fenced commit without reading it again.
    pub fn settle_job(&self, name: &LeasedName, job: &Job, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord> {
        let d = self.decide(name, job, reason, outcome, opts);
        self.settle_decided(name, job, d)
    }

    /// The fenced commit of an outcome already decided.
    fn settle_decided(&self, name: &LeasedName, job: &Job, d: Decided) -> Result<ResultRecord> {
        // 1. The outcome: whoever publishes it first owns this attempt.
        let tmp = fsx::stage(&self.tmp(), &d.rec.to_line(), d.sync)?;
        if fsx::publish_staged(&tmp, || self.name_result(name, &tmp))? != Renamed::Done {
            return Err(Error::lease_lost(&name.id, &name.token()));
        }
        // Its name too: once both are on disk the outcome is durable, and a
        // move lost in a crash is finished by recovery from this record.
        if d.sync {
            fsx::fsync_dir(&self.var(&name.id))?;
        }
        crate::failpoint!("settle.after_result");
        let mut dirty = Vec::new();
        let rec = self.finish_settle(name, job, d, &mut dirty)?;
        // The promotions it made. Past the commit point: a failure here
        // does not undo the settle, and a promotion lost in a crash is
        // redone by q-gc.
        let _ = fsx::fsync_dirs(&dirty);
        Ok(rec)
    }

    /// NR-rename a staged outcome to `var/<ID>/<A>.result.json`. The claim
    /// made `var/<ID>/`; it is made here only if it is missing.
    fn name_result(&self, name: &LeasedName, tmp: &Path) -> Result<Renamed> {
        let var = self.var(&name.id);
        let dest = var.join(var::result(name.c.attempt));
        match fsx::rename_noreplace(tmp, &dest) {
            Err(_) if !fsx::exists(&var) => {
                self.make_var(&name.id)?;
                fsx::rename_noreplace(tmp, &dest)
            }
            r => r,
        }
    }

    /// What settling attempt `name` with `reason` makes of the job.
    fn decide(&self, name: &LeasedName, job: &Job, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Decided {
        let now = time::now_ms();
        let d = decide(&name.id, &name.token(), name.c, job, reason, outcome, opts, now);
        Decided { rec: d.rec, run_at: d.delay_ms.map_or(now, |ms| now.saturating_add(ms as i64)), c: d.c, sync: self.sync_claims(job.is_at_most_once()) }
    }

    /// The steps after the outcome is durable: the fenced move, then what a
    /// terminal state sets off. The directories the jobs it promotes were
    /// renamed into are added to `dirty`, for the caller to fsync (once
    /// for a whole group).
    fn finish_settle(&self, name: &LeasedName, job: &Job, d: Decided, dirty: &mut Vec<PathBuf>) -> Result<ResultRecord> {
        // 2. The fenced move. No fsync of its own: the outcome is durable
        // already; on a journaling filesystem the worker's next sync (its
        // next settle's) carries the rename, and a rename lost in a crash
        // is redone by recovery from the result.
        self.move_leased(name, job, d.rec.state, d.run_at, d.c, false)?;
        crate::failpoint!("settle.after_commit_rename");
        // 3. The lease and run records stay as the attempt's history (q-gc
        // prunes them with the job); only a cancel request is dropped.
        if d.rec.reason == Reason::Canceled {
            let _ = fs::remove_file(self.var(&name.id).join(var::cancel(name.c.attempt)));
        }
        if d.rec.state.is_terminal() {
            self.on_terminal(&name.id, d.rec.state, dirty);
        }
        Ok(d.rec)
    }

    /// Move a leased job to its next state, the result already published.
    /// A vanished source means a recovery pass finished the move for us.
    pub(crate) fn move_leased(&self, name: &LeasedName, job: &Job, state: State, run_at: i64, c: Counters, sync: bool) -> Result<()> {
        let from = self.leased_path(name);
        let mut dirty = Vec::new();
        match state {
            State::Pending => {
                let key = Key::new(job.priority, run_at, &job.id);
                let seg = self.place(&[(job.class(), key.clone())])?.remove(0);
                let q = QueuedName { key, c: Counters { attempt: name.c.attempt, ..c } };
                match self.rename_into_segment(&from, &seg, &q.to_string(), &mut dirty) {
                    Ok(()) => self.wake(),
                    Err(_) if !fsx::exists(&from) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            _ => {
                let dir = self.dir(state.dir());
                match fsx::rename_noreplace(&from, &dir.join(terminal_name(&job.id)))? {
                    Renamed::Done | Renamed::SourceGone => {}
                    Renamed::Exists => {
                        // Never two terminal records: keep the first, quarantine this one.
                        self.quarantine(&from, "a terminal record for this job exists already");
                    }
                }
                dirty.push(dir);
            }
        }
        if sync {
            fsx::fsync_dirs(&dirty)?;
        }
        Ok(())
    }

    /// Where is job `id`? Scans the small directories first; pending jobs
    /// cost a scan of the pending segments.
    pub fn locate(&self, id: &str) -> Result<Option<Located>> {
        crate::id::check_id(id)?;
        for _ in 0..3 {
            if let Some(l) = self.locate_once(id)? {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    fn locate_once(&self, id: &str) -> Result<Option<Located>> {
        for st in [State::Done, State::Dead, State::Canceled] {
            let p = self.dir(st.dir()).join(terminal_name(id));
            if fsx::exists(&p) {
                return Ok(Some(Located { state: st, path: p, c: None, run_at_ms: None }));
            }
        }
        let prefix = format!("{id}.");
        for n in fsx::list(&self.dir("leased"))? {
            if let Some(l) = LeasedName::parse(&n).filter(|l| n.starts_with(&prefix) && l.id == id) {
                return Ok(Some(Located { state: State::Running, path: self.dir("leased").join(&n), c: Some(l.c), run_at_ms: None }));
            }
        }
        for st in [State::Waiting, State::Held] {
            if let Some(l) = self.locate_in(st, id)? {
                return Ok(Some(l));
            }
        }
        let needle = format!(".{id}.");
        for dir in self.segment_dirs()? {
            for n in fsx::list(&dir)? {
                if !n.contains(&needle) {
                    continue;
                }
                if let Some(q) = QueuedName::parse(&n).filter(|q| q.key.id == id) {
                    return Ok(Some(Located { state: State::Pending, path: dir.join(&n), c: Some(q.c), run_at_ms: Some(q.key.run_at) }));
                }
            }
        }
        Ok(None)
    }

    /// Job `id` in `waiting/` or `held/` (state `st`), if it is there: one
    /// listing of that directory.
    pub(crate) fn locate_in(&self, st: State, id: &str) -> Result<Option<Located>> {
        let needle = format!(".{id}.");
        let dir = self.dir(st.dir());
        for n in fsx::list(&dir)? {
            if !n.contains(&needle) {
                continue;
            }
            if let Some(q) = QueuedName::parse(&n).filter(|q| q.key.id == id) {
                return Ok(Some(Located { state: st, path: dir.join(&n), c: Some(q.c), run_at_ms: Some(q.key.run_at) }));
            }
        }
        Ok(None)
    }

    /// End a job that is not running (pending, waiting or held) without an
    /// attempt: cancel, or a failed dependency. Writes `var/<ID>/end.json`,
    /// then moves the job. Returns the record.
    pub fn end_without_attempt(&self, id: &str, from: State, to: State, reason: Reason, detail: Option<Value>) -> Result<ResultRecord> {
        for _ in 0..5 {
            let Some(l) = self.locate(id)? else { return Err(Error::no_job(id)) };
            if l.state != from && !(from == State::Pending && matches!(l.state, State::Waiting | State::Held)) {
                return Err(Error::new(Kind::Busy, format!("job {id} is {} now, not {}", l.state.as_str(), from.as_str())));
            }
            let c = l.c.unwrap_or_default();
            let job = self.read_job(&l.path).ok();
            let rec = ResultRecord::ended(id, c, to, reason, job.and_then(|j| j.name), detail.clone(), time::now_ms());
            let end = self.make_var(id)?.join(var::END);
            let rec = match fsx::publish(&self.tmp(), &end, &rec.to_line(), true)? {
                Renamed::Done => rec,
                _ if self.stale_end(id, c.attempt) => continue, // archived; try again
                // An end record of this very epoch, whose writer died (or is
                // about to move the job): it decides. Finish its move.
                _ => match self.read_end(id).filter(|r| r.attempt == c.attempt && r.state.is_terminal()) {
                    Some(existing) => existing,
                    None => return Err(Error::new(Kind::Busy, format!("job {id} is being ended by another process"))),
                },
            };
            // The record's name durable before the move that depends on it:
            // a power loss must never keep the job in its terminal
            // directory without the record that decides it (the move's
            // directory is fsynced below). Also when the record is another
            // canceller's, who may have died before its own fsync.
            fsx::fsync_dir(&self.var(id))?;
            crate::failpoint!("settle.end_after_record");
            let to = rec.state;
            let dir = self.dir(to.dir());
            match fsx::rename_noreplace(&l.path, &dir.join(terminal_name(id)))? {
                Renamed::Done => {
                    let mut dirty = vec![dir];
                    self.on_terminal(id, to, &mut dirty);
                    fsx::fsync_dirs(&dirty)?;
                    return Ok(rec);
                }
                // Another process finished this very move.
                _ if fsx::exists(&dir.join(terminal_name(id))) => return Ok(rec),
                _ => {
                    // It moved meanwhile (claimed, released...): look again.
                    // The removal durable too: a power loss that undid a
                    // claim must not bring the record back beside the job
                    // in its old state, deciding it.
                    let _ = fs::remove_file(&end);
                    let _ = fsx::fsync_dir(&self.var(id));
                }
            }
        }
        Err(Error::new(Kind::Busy, format!("job {id} keeps changing state; try again")))
    }

    /// The record of a job that ended (or is ending) without an attempt.
    pub(crate) fn read_end(&self, id: &str) -> Option<ResultRecord> {
        let b = fsx::read_capped(&self.var(id).join(var::END), 1 << 20).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// An `end.json` written before the job's latest claim (its writer died
    /// before moving the job, and the job was claimed since) decides
    /// nothing: archive it as `end.<ULID>.json`. True if it was stale.
    fn stale_end(&self, id: &str, attempt_now: u32) -> bool {
        let end = self.var(id).join(var::END);
        let stale = self.read_end(id).is_some_and(|r| r.attempt < attempt_now);
        stale && fs::rename(&end, self.var(id).join(var::archived_end())).is_ok()
    }

    /// Move a job file (waiting, held, terminal) into a pending segment.
    /// `Ok(false)` when the file had moved away already.
    pub(crate) fn requeue_file(&self, from: &Path, job: &Job, run_at: i64, c: Counters) -> Result<bool> {
        let mut dirty = Vec::new();
        let moved = self.requeue_file_into(from, job, run_at, c, &mut dirty)?;
        fsx::fsync_dirs(&dirty)?;
        Ok(moved)
    }

    /// [`Queue::requeue_file`] without the fsyncs: the directories renamed
    /// into are added to `dirty`.
    pub(crate) fn requeue_file_into(&self, from: &Path, job: &Job, run_at: i64, c: Counters, dirty: &mut Vec<PathBuf>) -> Result<bool> {
        let key = Key::new(job.priority, run_at, &job.id);
        let seg = self.place(&[(job.class(), key.clone())])?.remove(0);
        let q = QueuedName { key, c };
        match self.rename_into_segment(from, &seg, &q.to_string(), dirty) {
            Ok(()) => {}
            Err(_) if !fsx::exists(from) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.wake();
        Ok(true)
    }

    /// Where a job is that this process may change by hand (an operator
    /// move): 66 when there is none, 77 when it is another user's in a
    /// group-shared queue (owner.rs).
    pub(crate) fn locate_to_change(&self, id: &str) -> Result<Located> {
        let Some(l) = self.locate(id)? else { return Err(Error::no_job(id)) };
        self.check_may_change(id, &l.path)?;
        Ok(l)
    }

    /// Cancel a job: a queued one ends `canceled` at once; a running one is
    /// asked to stop (its runner kills the process group within a heartbeat
    /// and settles it `canceled`). Returns the state it was found in.
    pub fn cancel(&self, id: &str) -> Result<State> {
        let l = self.locate_to_change(id)?;
        match l.state {
            State::Pending | State::Waiting | State::Held => {
                self.end_without_attempt(id, l.state, State::Canceled, Reason::Canceled, None)?;
            }
            State::Running => {
                self.request(id, Ask::Cancel)?;
            }
            _ => {}
        }
        Ok(l.state)
    }

    /// Put a finished job (done, dead, canceled) back to pending with a fresh
    /// failure budget. Attempt numbers go on: they are never reused.
    pub fn retry(&self, id: &str) -> Result<()> {
        let l = self.locate_to_change(id)?;
        if !l.state.is_terminal() {
            return Err(Error::new(Kind::Busy, format!("job {id} is {}: only done, dead or canceled jobs can be retried", l.state.as_str())));
        }
        let job = self.read_job(&l.path)?;
        // A dedupe key comes back with the job, if no other unfinished job
        // took it meanwhile (held under the key's lock until the job is
        // back; a crash before that leaves a record naming a finished job,
        // which holds nothing).
        let _key = match &job.key {
            Some(k) => {
                let (f, holder) = self.lock_key(k)?;
                if let Some(h) = holder.filter(|h| h.id != id) {
                    return Err(crate::revise::key_taken(k, &h.id, h.state, crate::revise::NOTHING_CHANGED));
                }
                self.write_key(&f, k, id)?;
                Some(f)
            }
            None => None,
        };
        let attempt = self.last_attempt(id);
        let var = self.var(id);
        let end = var.join(var::END);
        if fsx::exists(&end) {
            let _ = fs::rename(&end, var.join(var::archived_end()));
        }
        crate::failpoint!("retry.after_archive");
        if !self.requeue_file(&l.path, &job, time::now_ms(), Counters { attempt, failures: 0, interrupts: 0 })? {
            return Err(Error::new(Kind::Busy, format!("job {id} changed state meanwhile; try again")));
        }
        Ok(())
    }

    /// The highest attempt number recorded for a job.
    pub fn last_attempt(&self, id: &str) -> u32 {
        fsx::list(&self.var(id))
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.split('.').next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    }

    /// Hold a pending or waiting job: it is never claimed until released.
    pub fn hold(&self, id: &str) -> Result<State> {
        let l = self.locate_to_change(id)?;
        if matches!(l.state, State::Pending | State::Waiting) {
            let name = l.path.file_name().map(|n| n.to_owned()).unwrap_or_default();
            let dir = self.dir("held");
            if fsx::rename_noreplace(&l.path, &dir.join(name))? != Renamed::Done {
                return Err(Error::new(Kind::Busy, format!("job {id} changed state meanwhile; try again")));
            }
            fsx::fsync_dir(&dir)?;
        }
        Ok(l.state)
    }

    /// Release a held job: back to waiting if it has unfinished
    /// dependencies, else pending.
    pub fn release(&self, id: &str) -> Result<State> {
        let l = self.locate_to_change(id)?;
        if l.state != State::Held {
            return Ok(l.state);
        }
        let job = self.read_job(&l.path)?;
        if job.after.is_empty() {
            self.requeue_file(&l.path, &job, l.run_at_ms.unwrap_or(0), l.c.unwrap_or_default())?;
        } else {
            let name = l.path.file_name().map(|n| n.to_owned()).unwrap_or_default();
            let dir = self.dir("waiting");
            fsx::rename_noreplace(&l.path, &dir.join(name))?;
            fsx::fsync_dir(&dir)?;
            self.promote_if_ready(id)?;
        }
        Ok(l.state)
    }

    /// Remove a finished job and everything kept for it.
    pub fn remove(&self, id: &str) -> Result<State> {
        let l = self.locate_to_change(id)?;
        if !l.state.is_terminal() {
            return Err(Error::new(Kind::Busy, format!("job {id} is {}: cancel it first, only finished jobs are removed", l.state.as_str())));
        }
        fsx::remove(&l.path)?;
        crate::failpoint!("remove.after_unlink");
        remove_tree(&self.var(id))?;
        Ok(l.state)
    }
}

/// Remove a directory tree without following symlinks.
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).ctx("remove", p),
        Ok(_) => fsx::remove(p),
    }
}
