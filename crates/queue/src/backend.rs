//! The storage seam. Every tool opens a [`Backend`] from `--queue` (a
//! [`Location`]) and works through its operations only; none of them names
//! a file, a path or a file name of the queue. The queue directory
//! (`Queue`, docs/FORMAT.md) is the first implementation; a second one
//! (PostgreSQL) implements the same trait and passes the same conformance
//! suite (`tests/conformance.rs`).
//!
//! Tools hold an `Arc<dyn Backend>`: the backend is chosen at run time from
//! a string, one binary serves every kind, and threads of one tool (a
//! worker's heartbeat and committer) share it. A call through the vtable
//! costs nothing next to the system calls behind each operation.
//!
//! What is per host whatever the backend — a running job's process group
//! and its workspace — is the local part: [`Workspaces`] and
//! [`Backend::record_start`]. For a directory queue it stays under `var/`.

use crate::claim::{Claim, ClaimOpts};
use crate::error::{Error, Result};
use crate::gc::{Action, GcOpts};
use crate::idle::Idle;
use crate::import::Import;
use crate::job::{Job, NewJob};
use crate::list::{Counts, Entry, Listed};
use crate::local::Workspaces;
use crate::lock::Acquired;
use crate::push::Pushed;
use crate::queue::{Durability, Pause, Queue};
use crate::reclaim::Reclaimed;
use crate::record::{Ask, Chunk, Lease, Outcome, Reason, Request, ResultRecord, RunInfo, State, Stream, Usage};
use crate::resolve::Resolved;
use crate::settle::{SettleOpts, ToSettle};
use crate::slots::Fit;
use crate::supervisor::{SupAsk, Supervisor};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a queue backend does: every operation of every tool.
pub trait Backend: Send + Sync {
    /// Where the queue is.
    fn location(&self) -> Location;
    /// Does a settle wait for durable storage? (Then settles that end close
    /// together are worth committing as a group.)
    fn settles_sync(&self) -> bool;

    // Push.
    /// Add jobs; each is durable before its outcome is returned.
    fn push(&self, jobs: Vec<NewJob>) -> Vec<Result<Pushed>>;
    /// A pusher's recorded environment (`env_from: pusher`), for a job of
    /// `owner` ([`Claim::owner`]): a directory queue refuses a record that
    /// is not that user's alone (77).
    fn load_env(&self, env_ref: &str, owner: Option<u32>) -> Result<BTreeMap<String, String>>;

    // Claim.
    /// Take up to `n` ready jobs under a lease, most urgent first; durable
    /// when returned.
    fn claim(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>>;
    /// A long-lived claimer for a worker that runs what it claims and
    /// settles it with [`Backend::settle_group`]: it may leave a claim's
    /// durability to that settle ([`Claim::durable_pending`]).
    fn claimer(&self) -> Box<dyn Claimer>;
    /// Take over a claim made by another process (`q-claim | q-run
    /// --stdin`): `LeaseLost` when it is no longer current, `Busy` when
    /// another process runs it.
    fn adopt(&self, id: &str, token: &str) -> Result<Claim>;

    // A claim this process holds.
    /// Extend its lease (the heartbeat): `Ok(false)` when it was taken
    /// over; an error when the backend could not be asked (the holder then
    /// gives the claim up once its lease ran out by its own clock).
    fn extend(&self, c: &Claim) -> Result<bool>;
    /// Make claims whose durability was deferred durable now.
    fn make_durable(&self, claims: &[&Claim]) -> Result<()>;
    /// Record that the claim's job started, with its process group.
    fn record_start(&self, c: &Claim, run: &RunInfo) -> Result<()>;
    /// What has been asked of it ([`Backend::request`], a cancel), oldest
    /// first. A request keeps its key while the attempt lasts: the runner
    /// acts on each key once.
    fn requests(&self, c: &Claim) -> Vec<Request>;
    /// Where its output goes (opened on the job's first byte). Each `write`
    /// is one chunk: the backend records the order of the chunks of both
    /// streams ([`Backend::log_order`]).
    fn log_writer(&self, c: &Claim, stream: Stream) -> Result<Box<dyn std::io::Write + Send>>;
    /// The workspaces of the attempts this process runs.
    fn workspaces(&self) -> Workspaces;

    // Settle.
    /// Extend a claim named by its token (`q-ctl touch`); `LeaseLost` when stale.
    fn touch(&self, id: &str, token: &str) -> Result<i64>;
    /// The fenced completion of a claim named by its token.
    fn settle(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord>;
    /// Settle claims this process holds as one commit; one answer each, in order.
    fn settle_group(&self, group: &[ToSettle]) -> Vec<Result<ResultRecord>>;
    /// Settle the claims of owners that are gone.
    fn reclaim(&self, dry_run: bool) -> Result<Vec<Reclaimed>>;

    // Read.
    /// Counts per state.
    fn counts(&self) -> Result<Counts>;
    /// The jobs in some states.
    fn entries(&self, states: &[State]) -> Result<Vec<Entry>>;
    /// Counts per state of each group (`q-ls --counts --by group`), the
    /// jobs of no group under `None`. This reads every job's record (a
    /// backend may do better: PostgreSQL counts in one query).
    fn group_counts(&self) -> Result<BTreeMap<Option<String>, Counts>> {
        let now = crate::time::now_ms();
        let mut out: BTreeMap<Option<String>, Counts> = BTreeMap::new();
        for e in self.entries(&State::ALL)? {
            // A job that moved or went meanwhile, or cannot be read, is left out.
            let Some((e, job)) = self.job(&e).ok().flatten() else { continue };
            out.entry(job.group.clone()).or_default().add(e.state, e.run_at_ms.is_none_or(|t| t <= now), 1);
        }
        Ok(out)
    }
    /// Where one job is.
    fn locate(&self, id: &str) -> Result<Option<Entry>>;
    /// What a token typed by a person names (`crate::resolve`): the job
    /// of that exact id, else of a unique suffix or prefix of at least 6
    /// characters, else the unique unfinished job of that name. A token
    /// that is not a well-formed id is only compared with names.
    fn resolve(&self, token: &str) -> Result<Resolved>;
    /// The newest job (ids sort by creation time) that this user pushed
    /// and the queue still holds, whatever its state (`--after last`).
    fn last_pushed(&self) -> Result<Option<String>>;
    /// The terminal state of a job, cheaply; `None` while unfinished or unknown.
    fn finished(&self, id: &str) -> Option<State>;
    /// [`Backend::finished`] of many jobs, in order (one round trip on a
    /// database: `q-wait` asks this of every job it waits on at each look).
    fn finished_all(&self, ids: &[&str]) -> Vec<Option<State>> {
        ids.iter().map(|id| self.finished(id)).collect()
    }
    /// The job of an entry: `None` when it is gone; if it moved meanwhile,
    /// where it is now.
    fn job(&self, e: &Entry) -> Result<Option<(Entry, Job)>>;
    /// When a job last changed state, as far as the backend knows.
    fn changed_at_ms(&self, e: &Entry) -> Option<i64>;
    /// The latest outcome of a job.
    fn last_result(&self, id: &str) -> Option<ResultRecord>;
    /// The highest attempt number recorded for a job.
    fn last_attempt(&self, id: &str) -> u32;
    /// The lease record of a claim named by its token.
    fn lease(&self, id: &str, token: &str) -> Option<Lease>;
    /// The lease and run records of a running attempt.
    fn live_records(&self, id: &str, attempt: u32) -> (Option<Lease>, Option<RunInfo>);
    /// Is there work left (`q-supervise --exit-on-idle`) for a claimer
    /// without slots? Waiting jobs whose dependencies ended are moved on
    /// first. See [`Backend::idle_for`].
    fn idle(&self, horizon_ms: Option<u64>) -> Result<Idle> {
        self.idle_for(horizon_ms, None)
    }
    /// What a person should know about the queue's health (one line each).
    fn warnings(&self) -> Vec<String>;
    /// What a collection pass should warn of in the store's own health (a
    /// database table that cannot be vacuumed); one line each.
    fn health(&self) -> Vec<String> {
        Vec::new()
    }

    // Logs.
    /// The attempts of a job that started (each has a log, maybe empty).
    fn log_attempts(&self, id: &str) -> Vec<u32>;
    /// Read an attempt's log; a reader sees what is appended later too.
    fn log_reader(&self, id: &str, attempt: u32, stream: Stream) -> Result<Option<Box<dyn std::io::Read + Send>>>;
    /// The chunks of an attempt's output from the `from`-th on, in the
    /// order they were written (both streams); `None` when no order was
    /// recorded (no output yet, or written by an older q: then stdout comes
    /// before stderr). A chunk listed is readable from its stream's log.
    fn log_order(&self, id: &str, attempt: u32, from: usize) -> Result<Option<Vec<Chunk>>>;
    /// Where the log is kept, for a person (`q-log --path`); `None` when
    /// it is not a file.
    fn log_location(&self, id: &str, attempt: u32, stream: Stream) -> Option<String>;

    // Operator moves.
    fn cancel(&self, id: &str) -> Result<State>;
    fn retry(&self, id: &str) -> Result<()>;
    fn hold(&self, id: &str) -> Result<State>;
    fn release(&self, id: &str) -> Result<State>;
    fn remove(&self, id: &str) -> Result<State>;
    fn pause(&self, until_ms: Option<i64>) -> Result<()>;
    fn resume(&self) -> Result<bool>;
    /// The pause record, if the queue is paused at `now_ms`.
    fn paused(&self, now_ms: i64) -> Option<Pause>;
    /// Wake the waiting workers.
    fn wake(&self);

    // Waiting.
    /// Something to wait on for any change of the queue.
    fn waiter(&self) -> Box<dyn Waiter>;

    // The singletons: one supervisor, one collector.
    fn lock(&self, which: Singleton, patience: Duration) -> Result<Acquired>;
    /// Does a live process hold this singleton?
    fn is_locked(&self, which: Singleton) -> bool;
    /// Announce a live worker of this queue (`q-run`) until the answer is
    /// dropped, or the process dies.
    fn announce_worker(&self) -> Result<Presence>;
    /// How many announced workers are alive now.
    fn live_workers(&self) -> usize;

    // Maintenance.
    /// Move on waiting jobs whose dependencies ended unnoticed; how many.
    fn promote_stranded(&self) -> Result<usize>;
    /// One collection pass; errors about single items come back at the end.
    fn gc(&self, opts: &GcOpts, out: &mut dyn FnMut(Action)) -> Result<Vec<Error>>;

    // Moving a queue.
    /// Take jobs exported from another queue (`q-ctl import`) with their
    /// ids, fields, run times, counters and recorded environments: the
    /// whole batch or nothing (an error). Refused (`Create`, 73) when the
    /// queue has one of the ids already; a waiting job's dependencies must
    /// be in the batch or the queue (`NoJob`). Returns how many came in.
    fn import(&self, jobs: Vec<Import>) -> Result<usize>;
    // Reaching a running job.
    /// Ask the running attempt of a job for something (a signal, a
    /// restart, a cancel): its runner, wherever it runs, finds the request
    /// within its next look ([`Backend::requests`]). Returns the state the
    /// job was found in; only a running job is asked (a request to an
    /// attempt that ends meanwhile does nothing).
    fn request(&self, id: &str, ask: Ask) -> Result<State>;

    // Changing a queued job.
    /// Replace the record of a pending, waiting or held job with `new`
    /// (its id, as [`Job::revised`] makes it), if it was not claimed since
    /// the caller read it with attempt counter `seen`: a claim racing the
    /// change either wins (`Busy`, nothing changed) or takes the new
    /// record, never the old one after the change was answered. Returns the
    /// state the job was found in and left in.
    fn revise(&self, id: &str, seen: u32, new: &NewJob) -> Result<State>;

    // Usage.
    /// The totals of a job's ended attempts (wall time, CPU, peak RSS).
    fn usage(&self, id: &str) -> Result<Usage>;
    /// A job's latest outcome (`last_result`) and the totals of its ended
    /// attempts (`usage`) together, as [`Backend::listed`] shows each job:
    /// a backend may find both in one look.
    fn last_result_and_usage(&self, id: &str) -> (Option<ResultRecord>, Result<Usage>) {
        (self.last_result(id), self.usage(id))
    }
    /// Each of `entries` as a listing shows it (`q-ls`, `q top`), in their
    /// order: the job of its entry (`job`), its latest outcome and usage
    /// totals (`last_result_and_usage`) and, when running, its attempt's
    /// records (`live_records`). A job that went meanwhile, or whose
    /// record cannot be read, is left out. This asks per entry; a backend
    /// whose every look is a round trip does better (PostgreSQL reads a
    /// few thousand jobs per query).
    fn listed(&self, entries: &[Entry]) -> Result<Vec<Listed>> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Some((entry, job)) = self.job(e).ok().flatten() else { continue };
            let (last, usage) = self.last_result_and_usage(&entry.id);
            let (lease, run) = match entry.state {
                State::Running => self.live_records(&entry.id, entry.c.map_or(0, |c| c.attempt)),
                _ => (None, None),
            };
            out.push(Listed { entry, job, last, usage: usage.ok(), lease, run });
        }
        Ok(out)
    }

    // Slots and group limits (`crate::slots`).
    /// Where this host keeps the lock files of the queue's slots.
    fn slot_dir(&self) -> PathBuf;
    /// [`Backend::idle`] for a claimer with these slots and limits (their
    /// totals; `None`: none): a due job that can never fit them is not
    /// work, and is counted in [`Idle::unfit`] (as the other kinds are
    /// counted: fully when there is no work).
    fn idle_for(&self, horizon_ms: Option<u64>, fit: Option<&Fit>) -> Result<Idle>;

    // Reaching a live supervisor (`crate::supervisor`).
    /// The live supervisors' records: those whose supervisor holds its
    /// lock now (a directory has one at most; PostgreSQL one per host).
    fn supervisors(&self) -> Result<Vec<Supervisor>>;
    /// Publish the record of this process, the supervisor holding the lock
    /// (at its start, and after applying asks). A record of a new id drops
    /// the asks left for the one before.
    fn publish_supervisor(&self, s: &Supervisor) -> Result<()>;
    /// Take back the record of supervisor `id`, which is exiting while it
    /// still holds the lock (a record left by a crash is ignored, and its
    /// successor replaces it).
    fn unpublish_supervisor(&self, id: &str) -> Result<()>;
    /// Leave a change for the live supervisor `ask.to`; `Busy` when it no
    /// longer serves the queue.
    fn ask_supervisor(&self, ask: &SupAsk) -> Result<()>;
    /// Take (remove) the asks left for supervisor `id`, oldest first.
    fn take_supervisor_asks(&self, id: &str) -> Result<Vec<SupAsk>>;
}

/// A worker's claimer (see [`Backend::claimer`]).
pub trait Claimer: Send {
    fn claim(&mut self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>>;
    /// Wait for a change in the queue, the timeout, or `also` becoming
    /// readable (a self-pipe written on a signal).
    fn wait_or(&mut self, timeout: Duration, also: Option<BorrowedFd<'_>>);
}

/// Waits for changes of a queue: hints only, never trusted alone.
pub trait Waiter: Send {
    fn wait_or(&self, timeout: Duration, also: Option<BorrowedFd<'_>>);
    fn wait(&self, timeout: Duration) {
        self.wait_or(timeout, None);
    }
}

/// A worker's announced presence ([`Backend::announce_worker`]): it lasts
/// as long as this value.
pub struct Presence(#[allow(dead_code)] Box<dyn Send + Sync>);

impl Presence {
    pub fn new(hold: Box<dyn Send + Sync>) -> Presence {
        Presence(hold)
    }
}

/// The single-holder roles of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    Supervisor,
    Collector,
}

/// Where a queue is: what `--queue` (or `Q_DIR`) says. `dir:PATH`, or a
/// database URL (`postgres://`, `postgresql://`, `pg:`); anything else is
/// a path, so `--queue /tmp/a:b` is a directory.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    Postgres(String),
}

const DB_SCHEMES: [&str; 3] = ["postgres://", "postgresql://", "pg:"];

impl Location {
    pub fn parse(s: &OsStr) -> Location {
        let b = s.as_bytes();
        if let Some(p) = b.strip_prefix(b"dir:") {
            return Location::Dir(PathBuf::from(OsStr::from_bytes(p)));
        }
        if let Some(url) = s.to_str().filter(|u| DB_SCHEMES.iter().any(|sch| u.starts_with(sch))) {
            return Location::Postgres(url.to_owned());
        }
        Location::Dir(PathBuf::from(s))
    }

    /// For messages: a database URL's password is never shown.
    pub fn display(&self) -> String {
        match self {
            Location::Dir(p) => p.display().to_string(),
            Location::Postgres(u) => redact(u),
        }
    }

    /// The form to hand to another q tool (`--queue`), which parses back
    /// to this location.
    pub fn to_arg(&self) -> OsString {
        match self {
            Location::Dir(p) => {
                let s = p.as_os_str();
                let b = s.as_bytes();
                if b.starts_with(b"dir:") || DB_SCHEMES.iter().any(|sch| b.starts_with(sch.as_bytes())) {
                    let mut o = OsString::from("dir:");
                    o.push(s);
                    o
                } else {
                    s.to_owned()
                }
            }
            // Never the password: a tool hands that on out of argv (`Q_PG_PASSWORD`).
            Location::Postgres(u) => strip_password(u).into(),
        }
    }

    /// The password written in a database URL, if any.
    pub fn password(&self) -> Option<String> {
        let Location::Postgres(u) = self else { return None };
        password_spans(u).first().map(|s| percent_decode(&u[s.value.clone()]))
    }
}

/// Where a database URL holds a password: the userinfo's (`user:PASS@`),
/// then each `password=` parameter's. The one place that knows.
struct PasswordSpan {
    value: std::ops::Range<usize>,
    /// A `password=` parameter (else the userinfo's).
    param: bool,
}

fn password_spans(url: &str) -> Vec<PasswordSpan> {
    let mut out = Vec::new();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let auth_end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
        if let Some(at) = url[start..auth_end].rfind('@').map(|i| start + i)
            && let Some(colon) = url[start..at].find(':').map(|i| start + i)
        {
            out.push(PasswordSpan { value: colon + 1..at, param: false });
        }
    }
    let mut from = 0;
    while let Some(i) = url[from..].find(PARAM).map(|i| from + i + PARAM.len()) {
        let end = url[i..].find(['&', ' ']).map_or(url.len(), |e| i + e);
        out.push(PasswordSpan { value: i..end, param: true });
        from = end;
    }
    out
}

const PARAM: &str = "password=";

/// `%XX` escapes decoded (as in a URL's userinfo).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A database URL without its password (userinfo or parameter).
fn strip_password(url: &str) -> String {
    let mut out = url.to_owned();
    for s in password_spans(url).iter().rev() {
        let cut = if s.param {
            let key = s.value.start - PARAM.len();
            if s.value.end < url.len() {
                key..s.value.end + 1 // with the separator after it
            } else if key > 0 && matches!(url.as_bytes()[key - 1], b'&' | b' ' | b'?') {
                key - 1..s.value.end // a last parameter: the separator before it
            } else {
                key..s.value.end
            }
        } else {
            s.value.start - 1..s.value.end // `:PASS`
        };
        out.replace_range(cut, "");
    }
    out
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// A URL with its password (userinfo, or a `password` parameter) masked.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    for s in password_spans(url).iter().rev() {
        out.replace_range(s.value.clone(), "***");
    }
    out
}

/// How a tool wants its queue.
#[derive(Debug, Clone, Default)]
pub struct OpenOpts {
    pub durability: Durability,
    /// Where this host keeps what is its own (workspaces) for a queue that
    /// is not a directory; the tools choose it (`$XDG_STATE_HOME/q/pg/…`).
    pub local: Option<PathBuf>,
    /// Passwords the tool found for a database queue.
    #[cfg(feature = "postgres")]
    pub secrets: crate::pg::Secrets,
}

#[cfg(not(feature = "postgres"))]
fn unsupported(loc: &Location) -> Error {
    Error::new(
        crate::error::Kind::Format,
        format!(
            "queue {}: PostgreSQL queues are not supported by this build of q; use a queue directory (--queue DIR)",
            loc.display()
        ),
    )
}

/// The host-local directory of a database queue: the tool's choice, under
/// a name of its own per server, schema and queue.
#[cfg(feature = "postgres")]
fn local_dir(url: &str, o: &OpenOpts) -> Result<PathBuf> {
    // (Chosen by the tool: this crate reads no environment.)
    let base = o.local.clone().ok_or_else(|| Error::new(crate::error::Kind::Data, "a database queue needs a host-local directory (OpenOpts::local)"))?;
    Ok(base.join(format!("{:016x}", crate::push::fnv64(redact(url).as_bytes()))))
}

/// Open an existing queue: `Ok(None)` when there is none yet (for readers,
/// a missing queue is an empty queue).
pub fn open(loc: &Location, o: OpenOpts) -> Result<Option<Arc<dyn Backend>>> {
    match loc {
        Location::Dir(p) => Ok(Queue::open(p)?.map(|mut q| {
            q.durability = o.durability;
            Arc::new(q) as Arc<dyn Backend>
        })),
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => Ok(crate::pg::open(url, &o.secrets, local_dir(url, &o)?, o.durability)?.map(|q| Arc::new(q) as Arc<dyn Backend>)),
        #[cfg(not(feature = "postgres"))]
        Location::Postgres(_) => Err(unsupported(loc)),
    }
}

/// Open a queue, creating it when missing (private to its creator, or
/// shared with group `group`).
pub fn create(loc: &Location, group: Option<u32>, o: OpenOpts) -> Result<Arc<dyn Backend>> {
    match loc {
        Location::Dir(p) => {
            let mut q = Queue::create(p, group)?;
            q.durability = o.durability;
            Ok(Arc::new(q))
        }
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => Ok(Arc::new(crate::pg::create(url, &o.secrets, local_dir(url, &o)?, o.durability)?)),
        #[cfg(not(feature = "postgres"))]
        Location::Postgres(_) => Err(unsupported(loc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_round_trip() {
        let dir = |s: &str| Location::Dir(PathBuf::from(s));
        assert_eq!(Location::parse(OsStr::new("/tmp/a:b")), dir("/tmp/a:b"));
        assert_eq!(Location::parse(OsStr::new("dir:pg:x")), dir("pg:x"));
        assert_eq!(Location::parse(OsStr::new("q")), dir("q"));
        for url in ["postgres://u@h/db", "postgresql://h/db", "pg:service=x"] {
            assert_eq!(Location::parse(OsStr::new(url)), Location::Postgres(url.into()));
        }
        for s in ["/tmp/a:b", "dir:pg:x", "dir:dir:y", "./postgres://z", "postgres://u@h/db?schema=s"] {
            let l = Location::parse(OsStr::new(s));
            assert_eq!(Location::parse(&l.to_arg()), l, "{s}");
        }
    }

    #[test]
    fn passwords_are_taken_out_for_other_tools() {
        for (url, arg, pw) in [
            ("postgres://ann:s%40cret@db/q?schema=a", "postgres://ann@db/q?schema=a", Some("s@cret")),
            ("postgresql://ann@db/q?password=pw&schema=a", "postgresql://ann@db/q?schema=a", Some("pw")),
            ("postgres://ann@db/q?schema=a&password=pw", "postgres://ann@db/q?schema=a", Some("pw")),
            ("pg:host=db user=ann password=pw dbname=q", "pg:host=db user=ann dbname=q", Some("pw")),
            ("postgres://ann@db/q", "postgres://ann@db/q", None),
        ] {
            let l = Location::parse(OsStr::new(url));
            assert_eq!(l.to_arg(), OsString::from(arg), "{url}");
            assert_eq!(l.password().as_deref(), pw, "{url}");
        }
    }

    #[test]
    fn passwords_are_never_displayed() {
        let l = Location::parse(OsStr::new("postgres://ann:s3cret@db:5432/q?schema=a&password=s3cret"));
        let shown = l.display();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown, "postgres://ann:***@db:5432/q?schema=a&password=***");
        assert!(!format!("{l:?}").contains("s3cret"));
        // Refused (no such server here), and never with its password.
        let d = tempfile::tempdir().unwrap();
        let e = open(&l, OpenOpts { local: Some(d.path().to_path_buf()), ..OpenOpts::default() }).err().expect("refused");
        assert_eq!(e.kind, crate::Kind::Busy, "cannot reach the server: {e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        // Without a host-local directory, a database queue is refused at once.
        assert_eq!(open(&l, OpenOpts::default()).err().expect("refused").kind, crate::Kind::Data);
    }
}
