//! Listing: what is in the queue, for `q-ls`, `q-wait` and the supervisor.
//! Counting reads only directory listings; full listings read job files.

use crate::error::Result;
use crate::fsx;
use crate::job::Job;
use crate::names::{Counters, LeasedName, QueuedName, parse_terminal};
use crate::queue::Queue;
use crate::record::{Lease, ResultRecord, RunInfo, State, Usage};
use crate::resolve::{self, Candidate, Resolved};
use crate::time;
use serde::Serialize;
use std::path::PathBuf;

/// Counts per state (`q-ls --counts`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub ready: u64,
    pub scheduled: u64,
    pub waiting: u64,
    pub held: u64,
    pub running: u64,
    pub done: u64,
    pub dead: u64,
    pub canceled: u64,
    /// When the earliest scheduled job is due.
    #[serde(skip)]
    pub next_due_ms: Option<i64>,
}

impl Counts {
    pub fn pending(&self) -> u64 {
        self.ready + self.scheduled
    }

    /// Count `n` jobs in `state` (a pending one is ready when `due`).
    pub fn add(&mut self, state: State, due: bool, n: u64) {
        let slot = match state {
            State::Pending if due => &mut self.ready,
            State::Pending => &mut self.scheduled,
            State::Waiting => &mut self.waiting,
            State::Held => &mut self.held,
            State::Running => &mut self.running,
            State::Done => &mut self.done,
            State::Dead => &mut self.dead,
            State::Canceled => &mut self.canceled,
        };
        *slot += n;
    }
}

/// The order in which ready jobs are claimed (highest priority, then earliest
/// due time, then oldest id), as a sort key: the key of a pending job's file
/// name, which the claim walk follows, and the order PostgreSQL's claim asks
/// for (`ORDER BY priority DESC, run_at, id`). For listings in claim order.
pub fn claim_order(priority: i32, run_at_ms: i64, id: &str) -> impl Ord + use<> {
    crate::names::Key::new(priority, run_at_ms, id)
}

/// One job as listed: where it is and what is known of it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub state: State,
    /// Counters (a finished job's are in its last result instead).
    pub c: Option<Counters>,
    /// When a pending, waiting or held job is due.
    pub run_at_ms: Option<i64>,
    /// Where the backend found it (the job file, for a directory queue).
    pub(crate) path: PathBuf,
    /// When it last changed state, if the listing said
    /// ([`crate::Backend::changed_at_ms`]; PostgreSQL's does).
    pub(crate) changed_at_ms: Option<i64>,
}

/// A job as a listing shows it ([`crate::Backend::listed`]): where it is
/// now, its record, its latest outcome, the totals of its ended attempts
/// and, while it runs, the lease and run records of its attempt.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Where the job is now (it may have moved since it was listed).
    pub entry: Entry,
    pub job: Job,
    /// Its latest outcome ([`crate::Backend::last_result`]).
    pub last: Option<ResultRecord>,
    /// The totals of its ended attempts ([`crate::Backend::usage`]);
    /// `None` when they could not be read.
    pub usage: Option<Usage>,
    /// A running job's lease and run records ([`crate::Backend::live_records`]
    /// of its attempt); `None` for a job in another state.
    pub lease: Option<Lease>,
    pub run: Option<RunInfo>,
}

impl Entry {
    pub(crate) fn located(id: &str, l: crate::settle::Located) -> Entry {
        Entry { id: id.to_owned(), state: l.state, c: l.c, run_at_ms: l.run_at_ms, path: l.path, changed_at_ms: None }
    }
}

impl Queue {
    /// Count jobs per state from directory listings alone.
    pub fn counts(&self) -> Result<Counts> {
        let now = time::now_ms();
        let mut c = Counts::default();
        for dir in self.segment_dirs()? {
            for n in fsx::list(&dir)? {
                if let Some(q) = QueuedName::parse(&n) {
                    if q.key.run_at <= now {
                        c.ready += 1;
                    } else {
                        c.scheduled += 1;
                        c.next_due_ms = Some(c.next_due_ms.map_or(q.key.run_at, |d| d.min(q.key.run_at)));
                    }
                }
            }
        }
        c.waiting = fsx::list(&self.dir("waiting"))?.len() as u64;
        c.held = fsx::list(&self.dir("held"))?.len() as u64;
        c.running = fsx::list(&self.dir("leased"))?.len() as u64;
        c.done = fsx::list(&self.dir("done"))?.len() as u64;
        c.dead = fsx::list(&self.dir("dead"))?.len() as u64;
        c.canceled = fsx::list(&self.dir("canceled"))?.len() as u64;
        Ok(c)
    }

    /// Every job in the given states, from directory listings.
    pub fn entries(&self, states: &[State]) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for &st in states {
            match st {
                State::Pending => {
                    for dir in self.segment_dirs()? {
                        for n in fsx::list(&dir)? {
                            if let Some(q) = QueuedName::parse(&n) {
                                out.push(Entry { id: q.key.id.clone(), state: st, path: dir.join(&n), c: Some(q.c), run_at_ms: Some(q.key.run_at), changed_at_ms: None });
                            }
                        }
                    }
                }
                State::Waiting | State::Held => {
                    let dir = self.dir(st.dir());
                    for n in fsx::list(&dir)? {
                        if let Some(q) = QueuedName::parse(&n) {
                            out.push(Entry { id: q.key.id.clone(), state: st, path: dir.join(&n), c: Some(q.c), run_at_ms: Some(q.key.run_at), changed_at_ms: None });
                        }
                    }
                }
                State::Running => {
                    let dir = self.dir("leased");
                    for n in fsx::list(&dir)? {
                        if let Some(l) = LeasedName::parse(&n) {
                            out.push(Entry { id: l.id.clone(), state: st, path: dir.join(&n), c: Some(l.c), run_at_ms: None, changed_at_ms: None });
                        }
                    }
                }
                State::Done | State::Dead | State::Canceled => {
                    let dir = self.dir(st.dir());
                    for n in fsx::list(&dir)? {
                        if let Some(id) = parse_terminal(&n) {
                            out.push(Entry { id: id.to_owned(), state: st, path: dir.join(&n), c: None, run_at_ms: None, changed_at_ms: None });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// What a token names (`Backend::resolve`). Ids are file names, so the
    /// id steps read directory listings only; the name step reads the job
    /// files of unfinished jobs. The token is only compared, never joined
    /// to a path (but an exact id, validated, by `locate`).
    pub fn resolve(&self, token: &str) -> Result<Resolved> {
        if crate::id::is_valid_id(token) && self.locate(token)?.is_some() {
            return Ok(Resolved::Id(token.to_owned()));
        }
        if resolve::may_be_short(token) {
            let hits: std::collections::HashMap<String, Entry> =
                self.entries(&State::ALL)?.into_iter().filter(|e| resolve::is_short_of(token, &e.id)).map(|e| (e.id.clone(), e)).collect();
            let cands = hits.values().map(|e| Candidate { id: e.id.clone(), state: e.state, name: None }).collect();
            return Ok(match resolve::judge(cands) {
                // Job files are read for the candidates listed only.
                Resolved::Ambiguous { first, total } => {
                    let first = first.into_iter().map(|c| self.named(c, &hits)).collect();
                    Resolved::Ambiguous { first, total }
                }
                Resolved::None => self.by_name(token)?,
                one => one,
            });
        }
        self.by_name(token)
    }

    /// The step of `resolve` that compares names: unfinished jobs only.
    fn by_name(&self, token: &str) -> Result<Resolved> {
        if !resolve::may_be_name(token) {
            return Ok(Resolved::None);
        }
        let mut named = Vec::new();
        for e in self.entries(&resolve::UNFINISHED)? {
            if let Some((e, job)) = crate::backend::Backend::job(self, &e)?
                && job.name.as_deref() == Some(token)
            {
                named.push(Candidate { id: e.id, state: e.state, name: job.name });
            }
        }
        Ok(resolve::judge(named))
    }

    /// A candidate with its name (and its state now, if it moved).
    fn named(&self, c: Candidate, entries: &std::collections::HashMap<String, Entry>) -> Candidate {
        match entries.get(&c.id).and_then(|e| crate::backend::Backend::job(self, e).ok().flatten()) {
            Some((e, job)) => Candidate { id: c.id, state: e.state, name: job.name },
            None => c,
        }
    }

    /// The newest job this user pushed (`Backend::last_pushed`): a job
    /// file belongs to its pusher, so the newest id whose file this user
    /// owns.
    pub fn last_pushed(&self) -> Result<Option<String>> {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        let mut all = self.entries(&State::ALL)?;
        all.sort_by(|a, b| b.id.cmp(&a.id));
        let mine = |p: &std::path::Path| std::fs::symlink_metadata(p).map(|m| m.uid() == me);
        for e in all {
            // A file that moved since the listing is looked up again.
            let owned = match mine(&e.path) {
                Ok(m) => m,
                Err(_) => self.locate(&e.id)?.is_some_and(|l| mine(&l.path).unwrap_or(false)),
            };
            if owned {
                return Ok(Some(e.id));
            }
        }
        Ok(None)
    }

    /// The latest result of a job: `end.json` if the job ended without an
    /// attempt, else the result of its highest attempt.
    pub fn last_result(&self, id: &str) -> Option<ResultRecord> {
        let var = self.var(id);
        let read = |p: PathBuf| -> Option<ResultRecord> {
            let b = fsx::read_capped(&p, 1 << 20).ok()?;
            serde_json::from_slice(&b).ok()
        };
        let best = fsx::list(&var)
            .ok()?
            .into_iter()
            .filter_map(|n| crate::names::var::parse_result(&n))
            .max();
        // An end record decides only if no attempt was claimed after it (a
        // canceller that died before moving the job leaves a stale one).
        if let Some(r) = self.read_end(id).filter(|r| best.is_none_or(|b| r.attempt >= b)) {
            return Some(r);
        }
        read(var.join(crate::names::var::result(best?)))
    }

    /// `last_result` and `usage` from one listing of `var/<ID>/`, each
    /// result read once (a listing of many jobs pays for them once).
    pub fn last_result_and_usage(&self, id: &str) -> (Option<ResultRecord>, Usage) {
        let var = self.var(id);
        let mut u = Usage::default();
        let mut best: Option<(u32, Option<ResultRecord>)> = None;
        for a in fsx::list(&var).unwrap_or_default().iter().filter_map(|n| crate::names::var::parse_result(n)) {
            let r = fsx::read_capped(&var.join(crate::names::var::result(a)), 1 << 20).ok().and_then(|b| serde_json::from_slice::<ResultRecord>(&b).ok());
            if let Some(r) = &r {
                u.add(r);
            }
            if best.as_ref().is_none_or(|(b, _)| a > *b) {
                best = Some((a, r));
            }
        }
        let top = best.as_ref().map(|(a, _)| *a);
        if let Some(r) = self.read_end(id).filter(|r| top.is_none_or(|b| r.attempt >= b)) {
            return (Some(r), u);
        }
        (best.and_then(|(_, r)| r), u)
    }

    /// The totals of a job's ended attempts: every `<A>.result.json`.
    pub fn usage(&self, id: &str) -> Usage {
        let var = self.var(id);
        let mut u = Usage::default();
        for a in fsx::list(&var).unwrap_or_default().iter().filter_map(|n| crate::names::var::parse_result(n)) {
            if let Some(r) = fsx::read_capped(&var.join(crate::names::var::result(a)), 1 << 20).ok().and_then(|b| serde_json::from_slice::<ResultRecord>(&b).ok()) {
                u.add(&r);
            }
        }
        u
    }

    /// The lease and run records of a running job.
    pub fn live_records(&self, id: &str, attempt: u32) -> (Option<Lease>, Option<RunInfo>) {
        (self.read_lease(id, attempt).ok(), self.read_run(id, attempt))
    }
}
