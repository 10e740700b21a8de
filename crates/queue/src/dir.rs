//! The queue directory as a [`Backend`]: each operation maps onto the
//! protocols of docs/FORMAT.md, implemented in the modules beside this one.

use crate::backend::{Backend, Claimer, Location, Presence, Singleton, Waiter};
use crate::claim::{Claim, ClaimOpts, Hold};
use crate::error::{Error, Kind, Result};
use crate::fsx;
use crate::gc::{Action, GcOpts};
use crate::idle::Idle;
use crate::import::Import;
use crate::job::{Job, NewJob};
use crate::list::{Counts, Entry};
use crate::local::Workspaces;
use crate::lock::Acquired;
use crate::names::{LeasedName, terminal_name};
use crate::push::Pushed;
use crate::queue::{Pause, Queue};
use crate::reclaim::Reclaimed;
use crate::record::{Ask, Chunk, Lease, Outcome, Reason, Request, ResultRecord, RunInfo, State, Stream, Usage};
use crate::settle::{SettleOpts, ToSettle};
use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::time::{Duration, SystemTime};

impl Singleton {
    /// The lock file's stem in `locks/`.
    fn lock_name(self) -> &'static str {
        match self {
            Singleton::Supervisor => "supervise",
            Singleton::Collector => "gc",
        }
    }
}

impl Queue {
    /// Take over a claim made by another process: lock its lease file and
    /// check that it is still the current claim.
    fn adopt_claim(&self, id: &str, token: &str) -> Result<Claim> {
        crate::id::check_id(id)?;
        let name = LeasedName::from_token(id, token).ok_or_else(|| Error::new(Kind::Data, format!("invalid token {token:?}")))?;
        let a = name.c.attempt;
        let f = fsx::open_rw(&self.lease_path(id, a)).map_err(|_| Error::lease_lost(id, token))?;
        if f.try_lock().is_err() {
            return Err(Error::new(Kind::Busy, format!("job {id} attempt {a} is already being run by another process")));
        }
        let (job, owner) = self.read_owned_job(&self.dir("leased").join(name.to_string())).map_err(|_| Error::lease_lost(id, token))?;
        if self.leaves(owner) {
            return Err(Error::new(Kind::Permission, format!("job {id} belongs to {}: only its owner's workers, or root's, may run it", crate::owner::describe(owner))));
        }
        let lease = self.read_lease(id, a)?;
        Ok(Claim {
            id: id.to_owned(),
            token: token.to_owned(),
            c: name.c,
            lease_ms: lease.lease_ms,
            expires_at_ms: crate::time::now_ms() + lease.lease_ms as i64,
            job,
            owner: Some(owner),
            hold: Hold::Dir { name, lease_file: f },
            sync_pending: Default::default(),
        })
    }
}

impl Backend for Queue {
    fn location(&self) -> Location {
        Location::Dir(self.root().to_path_buf())
    }
    fn settles_sync(&self) -> bool {
        self.sync_claims(false)
    }
    fn push(&self, jobs: Vec<NewJob>) -> Vec<Result<Pushed>> {
        Queue::push(self, jobs)
    }
    fn load_env(&self, env_ref: &str, owner: Option<u32>) -> Result<BTreeMap<String, String>> {
        Queue::load_env(self, env_ref, owner)
    }
    fn claim(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        Queue::claim(self, n, opts)
    }
    fn claimer(&self) -> Box<dyn Claimer> {
        Box::new(crate::claim::DirClaimer::new(self).deferring_sync())
    }
    fn adopt(&self, id: &str, token: &str) -> Result<Claim> {
        self.adopt_claim(id, token)
    }
    fn extend(&self, c: &Claim) -> Result<bool> {
        let _ = c.lease_file().set_modified(SystemTime::now());
        Ok(fsx::exists(&self.dir("leased").join(c.leased_name().to_string())))
    }
    fn make_durable(&self, claims: &[&Claim]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        self.sync_leased()?;
        for c in claims {
            c.sync_pending.store(false, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }
    fn record_start(&self, c: &Claim, run: &RunInfo) -> Result<()> {
        Queue::record_start(self, c.lease_file(), run)
    }
    fn requests(&self, c: &Claim) -> Vec<Request> {
        Queue::requests(self, &c.id, c.attempt())
    }
    fn log_writer(&self, c: &Claim, stream: Stream) -> Result<Box<dyn std::io::Write + Send>> {
        Ok(Box::new(Queue::ordered_log_writer(self, &c.id, c.attempt(), stream, c.owner, c.job.share_logs)?))
    }
    fn workspaces(&self) -> Workspaces {
        Workspaces::new(self.tmp(), self.dir("var"), false)
    }
    fn touch(&self, id: &str, token: &str) -> Result<i64> {
        Queue::touch(self, id, token)
    }
    fn settle(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord> {
        Queue::settle(self, id, token, reason, outcome, opts)
    }
    fn settle_group(&self, group: &[ToSettle]) -> Vec<Result<ResultRecord>> {
        Queue::settle_group(self, group)
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
    fn locate(&self, id: &str) -> Result<Option<Entry>> {
        Ok(Queue::locate(self, id)?.map(|l| Entry::located(id, l)))
    }
    fn resolve(&self, token: &str) -> Result<crate::resolve::Resolved> {
        Queue::resolve(self, token)
    }
    fn last_pushed(&self) -> Result<Option<String>> {
        Queue::last_pushed(self)
    }
    fn finished(&self, id: &str) -> Option<State> {
        let name = terminal_name(id);
        [State::Done, State::Dead, State::Canceled].into_iter().find(|s| fsx::exists(&self.dir(s.dir()).join(&name)))
    }
    fn job(&self, e: &Entry) -> Result<Option<(Entry, Job)>> {
        match self.read_job(&e.path) {
            Ok(j) => Ok(Some((e.clone(), j))),
            Err(_) => {
                // It moved: look it up again, once. A file that is still
                // there but cannot be read (q-gc quarantines it) is left out.
                let Some(l) = Queue::locate(self, &e.id)? else { return Ok(None) };
                if l.path == e.path {
                    return Ok(None);
                }
                let moved = Entry::located(&e.id, l);
                Ok(self.read_job(&moved.path).ok().map(|j| (moved, j)))
            }
        }
    }
    fn changed_at_ms(&self, e: &Entry) -> Option<i64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&e.path).ok().map(|m| m.ctime() * 1000 + m.ctime_nsec() / 1_000_000)
    }
    fn last_result(&self, id: &str) -> Option<ResultRecord> {
        Queue::last_result(self, id)
    }
    fn last_attempt(&self, id: &str) -> u32 {
        Queue::last_attempt(self, id)
    }
    fn lease(&self, id: &str, token: &str) -> Option<Lease> {
        let name = LeasedName::from_token(id, token)?;
        self.read_lease(id, name.c.attempt).ok()
    }
    fn live_records(&self, id: &str, attempt: u32) -> (Option<Lease>, Option<RunInfo>) {
        Queue::live_records(self, id, attempt)
    }
    fn warnings(&self) -> Vec<String> {
        let corrupt = self.dir("corrupt");
        let n = fsx::list(&corrupt).map(|v| v.iter().filter(|n| !n.ends_with(".why")).count()).unwrap_or(0);
        if n == 0 {
            return Vec::new();
        }
        vec![format!("{n} file(s) quarantined in {} (unreadable or foreign; see the .why notes)", corrupt.display())]
    }
    fn log_attempts(&self, id: &str) -> Vec<u32> {
        Queue::log_attempts(self, id)
    }
    fn log_reader(&self, id: &str, attempt: u32, stream: Stream) -> Result<Option<Box<dyn std::io::Read + Send>>> {
        Ok(Queue::log_reader(self, id, attempt, stream)?.map(|f| Box::new(f) as Box<dyn std::io::Read + Send>))
    }
    fn log_order(&self, id: &str, attempt: u32, from: usize) -> Result<Option<Vec<Chunk>>> {
        Queue::log_order(self, id, attempt, from)
    }
    fn log_location(&self, id: &str, attempt: u32, stream: Stream) -> Option<String> {
        Some(self.log_path(id, attempt, stream).display().to_string())
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
    fn paused(&self, now_ms: i64) -> Option<Pause> {
        Queue::paused(self, now_ms)
    }
    fn wake(&self) {
        Queue::wake(self)
    }
    fn waiter(&self) -> Box<dyn Waiter> {
        Box::new(Queue::waiter(self))
    }
    fn lock(&self, which: Singleton, patience: Duration) -> Result<Acquired> {
        self.try_lock_named(which.lock_name(), patience)
    }
    fn is_locked(&self, which: Singleton) -> bool {
        match fsx::open_rw(&self.lock_path(which.lock_name())) {
            Ok(f) => f.try_lock().is_err(),
            Err(_) => false,
        }
    }
    fn announce_worker(&self) -> Result<Presence> {
        Ok(Presence::new(Box::new(Queue::announce_worker(self)?)))
    }
    fn live_workers(&self) -> usize {
        Queue::live_workers(self)
    }
    fn promote_stranded(&self) -> Result<usize> {
        Queue::promote_stranded(self)
    }
    fn gc(&self, opts: &GcOpts, out: &mut dyn FnMut(Action)) -> Result<Vec<Error>> {
        // A committed import a crash left half in place comes in first.
        if !opts.dry_run {
            self.finish_imports()?;
        }
        Queue::gc(self, opts, out)
    }

    fn import(&self, jobs: Vec<Import>) -> Result<usize> {
        Queue::import(self, jobs)
    }
    fn request(&self, id: &str, ask: Ask) -> Result<State> {
        Queue::request(self, id, ask)
    }
    fn revise(&self, id: &str, seen: u32, new: &NewJob) -> Result<State> {
        Queue::revise(self, id, seen, new)
    }
    fn usage(&self, id: &str) -> Result<Usage> {
        crate::id::check_id(id)?;
        Ok(Queue::usage(self, id))
    }
    fn last_result_and_usage(&self, id: &str) -> (Option<ResultRecord>, Result<Usage>) {
        if let Err(e) = crate::id::check_id(id) {
            return (None, Err(e));
        }
        let (last, u) = Queue::last_result_and_usage(self, id);
        (last, Ok(u))
    }
    fn slot_dir(&self) -> std::path::PathBuf {
        // Per host: a queue directory on a network file system is served
        // by several hosts, each with its own slots.
        self.dir("locks").join(format!("slots.{}", crate::ident::host().host))
    }
    fn idle_for(&self, horizon_ms: Option<u64>, fit: Option<&crate::slots::Fit>) -> Result<Idle> {
        Queue::idle(self, horizon_ms, fit)
    }
    fn supervisors(&self) -> Result<Vec<crate::supervisor::Supervisor>> {
        Queue::supervisors(self, self.is_locked(Singleton::Supervisor))
    }
    fn publish_supervisor(&self, s: &crate::supervisor::Supervisor) -> Result<()> {
        Queue::publish_supervisor(self, s)
    }
    fn unpublish_supervisor(&self, id: &str) -> Result<()> {
        Queue::unpublish_supervisor(self, id)
    }
    fn ask_supervisor(&self, ask: &crate::supervisor::SupAsk) -> Result<()> {
        Queue::ask_supervisor(self, ask, &Backend::supervisors(self)?)
    }
    fn take_supervisor_asks(&self, id: &str) -> Result<Vec<crate::supervisor::SupAsk>> {
        Queue::take_supervisor_asks(self, id)
    }
}

impl Claimer for crate::claim::DirClaimer {
    fn claim(&mut self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        crate::claim::DirClaimer::claim(self, n, opts)
    }
    fn wait_or(&mut self, timeout: Duration, also: Option<BorrowedFd<'_>>) {
        crate::claim::DirClaimer::wait_or(self, timeout, also)
    }
}

impl Waiter for crate::wake::DirWaiter {
    fn wait_or(&self, timeout: Duration, also: Option<BorrowedFd<'_>>) {
        crate::wake::DirWaiter::wait_or(self, timeout, also)
    }
}
