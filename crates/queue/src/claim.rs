//! Claim: take the most urgent ready job under a lease. The claim point is one
//! no-replace rename `pending/<seg>/<name>` → `leased/<ID>.<A+1>.<F>.<I>.json`;
//! of several claimers racing for a file exactly one wins, the others move on
//! to the next candidate.
//!
//! The cost of a claim does not grow with the number of pending jobs: it
//! reads the list of segments (each holds at most `SEG_CAP` jobs and is named
//! by the least key it may hold), then only the segments that can contain a
//! job more urgent than the best found so far. Nor with the number of jobs
//! of classes it cannot take: the jobs that say what they take to run wait
//! in the segments of their class (`pending/c.<CLASS>/`), and a class the
//! claimer can never take is passed over by its directory's name; the
//! segments of the others are walked the same way, and their candidates
//! merged with the plain ones in claim order, each judged by its class
//! before its file is read.

use crate::names::var;
use crate::error::{Error, IoContext, Kind, Result};
use crate::fsx::{self, Renamed};
use crate::ident;
use crate::job::{Job, MAX_RECORD, Peek};
use crate::slots::{Filter, Verdict};
use crate::names::{Class, Counters, Key, LeasedName, QueuedName};
use crate::pending::Seg;
use crate::queue::Queue;
use crate::record::{Lease, Liveness};
use crate::time;
use serde_json::json;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

impl Lease {
    /// The lease record of a claim this process makes at `now_ms`.
    pub(crate) fn mine(id: &str, attempt: u32, token: &str, now_ms: i64, opts: &ClaimOpts) -> Lease {
        let (pid, pid_start) = ident::me();
        let h = ident::host();
        Lease {
            v: 1,
            id: id.to_owned(),
            attempt,
            token: token.to_owned(),
            claimed_at: time::rfc3339(now_ms),
            lease_ms: opts.lease_ms,
            host: h.host.clone(),
            boot_id: h.boot_id.clone(),
            pidns: h.pidns.clone(),
            pid,
            pid_start,
            worker_id: opts.worker_id.clone(),
            liveness: opts.liveness,
        }
    }
}

/// Options of a claim.
#[derive(Debug, Clone)]
pub struct ClaimOpts {
    pub lease_ms: u64,
    pub worker_id: Option<String>,
    pub liveness: Liveness,
    /// The slots and group limits the claimer has, and what of them is
    /// free (`crate::slots`); `None`: it takes only jobs without needs.
    pub fit: Option<crate::slots::Fit>,
}

/// A job claimed under a lease, held by this process. What keeps the claim
/// provably alive (for a directory queue: its lease file, flock'ed for
/// `Liveness::Flock`) is inside, out of the tools' reach: they name a
/// claim by its id and token, and hand it back to the backend to extend,
/// record a start on, or settle.
#[derive(Debug)]
pub struct Claim {
    pub id: String,
    /// The fencing token: a settle or touch with any other is refused.
    pub token: String,
    /// The job's counters with this claim counted (`c.attempt` is its fence).
    pub c: Counters,
    pub lease_ms: u64,
    pub expires_at_ms: i64,
    pub job: Job,
    /// The user the job belongs to and must run as: the uid that owns its
    /// job file (directory queues). `None` where the backend knows no owner
    /// (PostgreSQL: a worker runs the jobs it claims as itself).
    pub owner: Option<u32>,
    pub(crate) hold: Hold,
    /// The claim is not durable yet, and must be before its outcome is:
    /// a worker's deferred claim ([`DirClaimer::deferring_sync`]) of an
    /// at-least-once job at full durability. Its settle, or
    /// [`crate::Backend::make_durable`], syncs it.
    pub(crate) sync_pending: std::sync::atomic::AtomicBool,
}

/// What a backend keeps of a claim its process holds.
#[derive(Debug)]
pub(crate) enum Hold {
    /// The leased file's name, and the open (locked) lease file.
    Dir { name: LeasedName, lease_file: File },
    /// A database row, named by the claim's id and token; what marks it
    /// held by this process, if it took it over.
    #[cfg(feature = "postgres")]
    Row(#[allow(dead_code)] Option<crate::pg::Adopted>),
}

impl Claim {
    pub fn attempt(&self) -> u32 {
        self.c.attempt
    }

    /// Is the claim still waiting to be made durable?
    pub fn durable_pending(&self) -> bool {
        self.sync_pending.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The leased name of a directory queue's claim.
    pub(crate) fn leased_name(&self) -> &LeasedName {
        match &self.hold {
            Hold::Dir { name, .. } => name,
            #[cfg(feature = "postgres")]
            Hold::Row(_) => panic!("a database claim handed to the directory backend"),
        }
    }

    pub(crate) fn lease_file(&self) -> &File {
        match &self.hold {
            Hold::Dir { lease_file, .. } => lease_file,
            #[cfg(feature = "postgres")]
            Hold::Row(_) => panic!("a database claim handed to the directory backend"),
        }
    }

    /// The `claim` line (SPEC "Output").
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "type": "claim",
            "id": self.id,
            "token": self.token,
            "fence": self.attempt(),
            "attempt": self.attempt(),
            "lease_expires_at": time::rfc3339(self.expires_at_ms),
            "lease_ms": self.lease_ms,
            "job": self.job,
        })
    }
}

/// A long-lived claimer (a worker): it keeps the sorted candidates of its
/// last scan and claims from them while nothing was pushed or requeued
/// since (the waiter's inotify events say so) and for at most
/// `CACHE_FOR`, so that a claim does not re-read a segment every time.
pub struct DirClaimer {
    q: Queue,
    cache: Vec<Candidate>,
    built: std::time::Instant,
    waiter: crate::wake::DirWaiter,
    /// Leave the claims' fsync to their settles (see `deferring_sync`).
    defer: bool,
}

/// How long a worker's candidate list stays usable without a rescan.
const CACHE_FOR: std::time::Duration = std::time::Duration::from_millis(250);

impl DirClaimer {
    pub fn new(q: &Queue) -> DirClaimer {
        DirClaimer { q: q.clone(), cache: Vec::new(), built: std::time::Instant::now(), waiter: q.pending_waiter(), defer: false }
    }

    /// For a worker that runs the jobs it claims and settles them through
    /// [`Queue::settle_group`]: the fsync that makes an at-least-once claim
    /// durable is left to the attempt's settle, which does it before it
    /// publishes the outcome, so the job starts without waiting for the
    /// disk. A power loss meanwhile can only put the job back in `pending/`
    /// uncounted, to run again (docs/FORMAT.md, "Claim"). At-most-once jobs
    /// are still made durable before they are handed out.
    pub fn deferring_sync(mut self) -> DirClaimer {
        self.defer = true;
        self
    }

    /// Claim up to `n` ready jobs, like `Queue::claim`.
    pub fn claim(&mut self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        let now = time::now_ms();
        if n == 0 || self.q.paused(now).is_some() {
            self.cache.clear();
            return Ok(Vec::new());
        }
        if self.waiter.changed() || self.built.elapsed() > CACHE_FOR {
            self.cache.clear();
        }
        let mut out = Vec::new();
        let mut rescans = 0;
        let mut filter = Filter::new(opts.fit.as_ref());
        // Candidates the filter passed over: a rescan looks past them.
        let mut skipped = 0;
        let mut skipped_before = 0;
        // The last look may have left ready jobs out.
        let mut more = true;
        loop {
            if self.cache.is_empty() {
                // Two looks; more only while the filter passes over jobs
                // and there may be others past them (a claimer with slots
                // behind many jobs it cannot take).
                if rescans >= 2 && (skipped == skipped_before || !more) {
                    break;
                }
                skipped_before = skipped;
                rescans += 1;
                let want = n.max(64) + skipped;
                self.cache = self.q.candidates(now, want, opts.fit.as_ref())?;
                more = self.cache.len() >= want;
                self.cache.reverse(); // pop from the end: best first
                self.built = std::time::Instant::now();
                if self.cache.is_empty() {
                    break;
                }
            }
            while let Some(c) = self.cache.pop() {
                if let Some(claim) = self.q.try_claim(&c, opts, &mut filter, &mut skipped)? {
                    out.push(claim);
                    if out.len() >= n {
                        return self.q.durable(out, self.defer);
                    }
                }
            }
        }
        self.q.durable(out, self.defer)
    }

    /// Wait for a change in the queue, the timeout, or `also` becoming
    /// readable (a self-pipe written on a signal).
    pub fn wait_or(&mut self, timeout: std::time::Duration, also: Option<std::os::fd::BorrowedFd<'_>>) {
        self.waiter.wait_or(timeout, also);
        self.cache.clear();
    }
}

/// A ready candidate: the segment it sits in and its name.
#[derive(Debug, Clone)]
struct Candidate {
    seg: Seg,
    name: QueuedName,
}

impl Queue {
    /// Claim up to `n` ready jobs. Returns an empty list when none is ready
    /// or the queue is paused.
    pub fn claim(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        let mut out = Vec::new();
        let now = time::now_ms();
        if n == 0 || self.paused(now).is_some() {
            return Ok(out);
        }
        // A few rounds: a round whose every candidate was taken by others
        // looks again (past the candidates the filter passed over).
        let mut skipped = 0;
        let mut filter = Filter::new(opts.fit.as_ref());
        for _ in 0..8 {
            let want = (n - out.len()).max(1) + 8 + skipped;
            let cands = self.candidates(now, want, opts.fit.as_ref())?;
            if cands.is_empty() {
                break;
            }
            skipped = 0;
            for c in cands {
                if out.len() >= n {
                    return self.durable(out, false);
                }
                if let Some(claim) = self.try_claim(&c, opts, &mut filter, &mut skipped)? {
                    out.push(claim);
                }
            }
            if out.len() >= n {
                break;
            }
        }
        self.durable(out, false)
    }

    /// Make the claims durable before anyone is told of them: one fsync of
    /// `leased/` for all of them (durable, or any at-most-once job). With
    /// `defer` and no at-most-once job among them, the fsync is left to
    /// their settles instead: they are marked `sync_pending`.
    fn durable(&self, claims: Vec<Claim>, defer: bool) -> Result<Vec<Claim>> {
        let must = |c: &Claim| self.sync_claims(c.job.is_at_most_once());
        if defer && !claims.iter().any(|c| c.job.is_at_most_once()) {
            for c in &claims {
                c.sync_pending.store(must(c), std::sync::atomic::Ordering::Release);
            }
        } else if claims.iter().any(must) {
            self.sync_leased()?;
        }
        Ok(claims)
    }

    /// Make every claim made so far durable: one fsync of `leased/`.
    pub fn sync_leased(&self) -> Result<()> {
        fsx::fsync_dir(&self.dir("leased"))
    }

    /// The most urgent ready jobs, best first, at least `want` of them when
    /// there are that many: strict order by (priority, due time, id). The
    /// plain segments, and the segments of every class a claimer with the
    /// slots of `fit` may take: at least `want` of each (a class it can
    /// never take is passed over by its name; FORMAT "Classes").
    fn candidates(&self, now: i64, want: usize, fit: Option<&crate::slots::Fit>) -> Result<Vec<Candidate>> {
        let (segs, classes) = self.pending_dirs()?;
        let mut cands = self.tree_candidates(None, segs, now, want)?;
        if classes.is_empty() {
            return Ok(cands);
        }
        let rule = Filter::new(fit);
        for class in classes {
            if rule.never(&class.needs, class.group.as_deref()) {
                continue;
            }
            let segs = self.segments_in(Some(&class))?;
            cands.extend(self.tree_candidates(Some(&class), segs, now, want)?);
        }
        cands.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(cands)
    }

    /// [`Queue::candidates`] among the segments `segs` (sorted) of one
    /// class (none: the plain ones).
    fn tree_candidates(&self, class: Option<&Class>, segs: Vec<Key>, now: i64, want: usize) -> Result<Vec<Candidate>> {
        let tree = self.tree(class);
        let mut cands: Vec<Candidate> = Vec::new();
        let mut skip_prio: Option<u32> = None;
        for seg in segs {
            if skip_prio == Some(seg.inv_prio) {
                continue;
            }
            if cands.len() >= want {
                // Segments are named by the least key they may hold: one whose
                // name sorts after the want-th best cannot improve the list.
                if seg >= cands[want - 1].name.key {
                    break;
                }
            }
            if seg.run_at > now {
                // Later segments of this priority are due later still.
                skip_prio = Some(seg.inv_prio);
                continue;
            }
            let dir = tree.join(seg.to_string());
            let names = fsx::list(&dir)?;
            if names.is_empty() {
                // Drained: remove it (a pusher that meets a vanished segment
                // re-creates it). Fails harmlessly if a job just arrived.
                fsx::remove_idle_dir(&dir);
                continue;
            }
            for n in names {
                match QueuedName::parse(&n) {
                    Some(q) if q.key.run_at <= now => cands.push(Candidate { seg: Seg { class: class.cloned(), key: seg.clone() }, name: q }),
                    Some(_) => {}
                    None => {
                        self.quarantine(&dir.join(&n), "pending file name is not of the queue's form");
                    }
                }
            }
            cands.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(cands)
    }

    /// Try to claim one candidate; `None` when another claimer was faster,
    /// or `filter` passes it over (then counted in `skipped`).
    /// Not yet durable: the caller makes its claims durable together.
    fn try_claim(&self, c: &Candidate, opts: &ClaimOpts, filter: &mut Filter, skipped: &mut usize) -> Result<Option<Claim>> {
        // A job of a class is judged by its class's name, before its file
        // is read: one the rule passes over costs nothing, and is not
        // counted (every later job of its class is passed over too, so
        // there is nothing to look for past it).
        let class = c.seg.class.as_ref();
        if let Some(cl) = class
            && filter.judge(&cl.needs, cl.group.as_deref()) != Verdict::Take
        {
            return Ok(None);
        }
        let from = self.seg_dir(&c.seg).join(c.name.to_string());
        // 0. The record, read before the claim point: it is written once and
        // moves with the claim, so it is what a won claim takes. Gone: another
        // claimer was faster. Unreadable: left to step 4, which quarantines it.
        let record = match self.read_record(&from) {
            // Another user's job in a group-shared queue: left for its
            // owner's workers, or root's (owner.rs).
            Ok((_, uid)) if self.leaves(uid) => return Ok(None),
            Ok(r) => Some(r),
            Err(e) if e.errno() == Some(nix::libc::ENOENT) => return Ok(None),
            // Refused (a symlink, writable by others): still left alone if
            // a newer q wrote it, as FORMAT says of every newer record.
            Err(_) if self.newer_record(&from) => return Ok(None),
            Err(_) => None,
        };
        // What the record says of its format and its needs: one parse.
        let peek = record.as_ref().and_then(|(b, _)| Peek::of(b)).unwrap_or_default();
        if peek.newer() {
            // Written by a newer q: left for a worker that knows its format.
            return Ok(None);
        }
        // A job in the plain segments (pushed by a q that put every job
        // there, or of a class too long to name), or one whose record says
        // other than its class's name: judged by its record.
        let judged = class.is_some() && peek.is_of(class);
        if !judged && filter.judge(&peek.needs, peek.group.as_deref()) != Verdict::Take {
            *skipped += 1;
            return Ok(None);
        }
        let id = c.name.key.id.clone();
        let leased_name = LeasedName {
            id: id.clone(),
            c: Counters { attempt: c.name.c.attempt + 1, ..c.name.c },
        };
        let token = leased_name.token();
        let now = time::now_ms();
        let lease = Lease::mine(&id, leased_name.c.attempt, &token, now, opts);
        // 1. The lease, staged and locked before the claim point.
        let lease_tmp = self.tmp().join(fsx::tmp_name("lease"));
        let mut lf = fsx::create_new(&lease_tmp)?;
        lf.lock().ctx("lock", &lease_tmp)?;
        let mut bytes = serde_json::to_vec(&lease).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = lf.write_all(&bytes) {
            let _ = fs::remove_file(&lease_tmp);
            return Err(Error::io("write", &lease_tmp, e));
        }
        crate::failpoint!("claim.after_lease_tmp");
        // 2. The claim point.
        let to = self.dir("leased").join(leased_name.to_string());
        match fsx::rename_noreplace(&from, &to) {
            Ok(Renamed::Done) => {}
            Ok(_) | Err(_) => {
                let _ = fs::remove_file(&lease_tmp);
                return Ok(None);
            }
        }
        crate::failpoint!("claim.after_claim_rename");
        // 3. Publish the lease beside the job.
        let var = self.make_var(&id)?;
        let lease_path = var.join(var::lease(leased_name.c.attempt));
        fs::rename(&lease_tmp, &lease_path).ctx("publish lease", &lease_path)?;
        crate::failpoint!("claim.after_lease_publish");
        if opts.liveness == Liveness::Ttl {
            // Whoever runs the claim takes the lock (q-run --stdin); holding
            // it here would only make that runner wait for us to exit.
            let _ = lf.unlock();
        }
        // 4. The job (read again only if step 0 could not); a record that
        // cannot be read is quarantined.
        let (job, owner) = match record.map_or_else(|| self.read_owned_job(&to), |(b, uid)| Ok((self.parse_job(&to, &b)?, uid))) {
            Ok(j) => j,
            Err(e) if e.kind == Kind::Data || e.kind == Kind::Permission => {
                self.quarantine(&to, &e.to_string());
                let _ = fs::remove_file(&lease_path);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        filter.taken(&job.needs, job.group.as_deref());
        // 5. Durable: see `durable`, once for all the claims of one call.
        Ok(Some(Claim {
            id,
            token: leased_name.token(),
            c: leased_name.c,
            lease_ms: opts.lease_ms,
            expires_at_ms: now + opts.lease_ms as i64,
            job,
            owner: Some(owner),
            hold: Hold::Dir { name: leased_name, lease_file: lf },
            sync_pending: Default::default(),
        }))
    }

    /// Is the job file at `path` a record of a newer format (a `v` higher
    /// than this q knows)? Such a job is left alone: not claimed, not run,
    /// not repaired. A file that cannot be read or parsed is not "newer":
    /// the usual checks deal with it.
    pub fn newer_record(&self, path: &std::path::Path) -> bool {
        fsx::read_capped(path, MAX_RECORD + 4096).is_ok_and(|b| crate::job::newer_format(&b))
    }

    /// Read and check a job file: not a symlink, writable by nobody but
    /// its owner, one link, parsable, and naming the id its file name says.
    pub fn read_job(&self, path: &std::path::Path) -> Result<Job> {
        self.read_owned_job(path).map(|(job, _)| job)
    }

    /// [`Queue::read_job`] with the job's owner: the uid of its file.
    pub(crate) fn read_owned_job(&self, path: &std::path::Path) -> Result<(Job, u32)> {
        let (bytes, uid) = self.read_record(path)?;
        Ok((self.parse_job(path, &bytes)?, uid))
    }

    /// The bytes of a job file and its owner, checked like
    /// [`Queue::read_job`] checks it: not a symlink, writable by nobody but
    /// its owner, one link, a regular file of a record's size. Every check
    /// is on the one `fstat` of the open file.
    pub(crate) fn read_record(&self, path: &std::path::Path) -> Result<(Vec<u8>, u32)> {
        use std::io::Read;
        let f = fsx::open_read(path).map_err(|e| {
            // A symlink where a job file belongs is bad data (quarantined), not an I/O failure.
            let symlink = e.raw_os_error() == Some(nix::libc::ELOOP);
            let err = Error::io("open", path, e);
            if symlink { err.with_kind(Kind::Data) } else { err }
        })?;
        let meta = f.metadata().ctx("stat", path)?;
        self.check_meta(path, &meta)?;
        if !meta.is_file() || meta.len() > MAX_RECORD + 4096 {
            return Err(Error::new(Kind::Data, format!("{}: not a job record (not a regular file, or too large)", path.display())));
        }
        crate::owner::check_job_file(path, &meta, &self.tmp())?;
        let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
        f.take(MAX_RECORD + 4096).read_to_end(&mut bytes).map_err(|e| Error::io("read", path, e).with_kind(Kind::Data))?;
        Ok((bytes, std::os::unix::fs::MetadataExt::uid(&meta)))
    }

    /// Parse the bytes of the job file at `path`, which must name the id
    /// its record holds.
    fn parse_job(&self, path: &std::path::Path, bytes: &[u8]) -> Result<Job> {
        let job = Job::from_bytes(bytes).map_err(|e| Error::new(Kind::Data, format!("{}: {e}", path.display())))?;
        let fname = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !fname.contains(&job.id) {
            return Err(Error::new(Kind::Data, format!("{}: record id {} does not match its file name", path.display(), job.id)));
        }
        Ok(job)
    }

    /// Move a file that is not of the queue's form to `corrupt/`, never
    /// deleting it; report on stderr is the caller's business (gc reports).
    pub fn quarantine(&self, path: &std::path::Path, why: &str) -> Option<PathBuf> {
        let base = path.file_name()?.to_string_lossy().replace('/', "_");
        let dest = self.dir("corrupt").join(format!("{base}.{}", crate::id::new_id()));
        match fsx::rename_noreplace(path, &dest) {
            Ok(Renamed::Done) => {
                let note = PathBuf::from(format!("{}.why", dest.display()));
                let _ = fs::write(note, format!("{why}\nfrom {}\n", path.display()));
                Some(dest)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    /// A job written by a newer q (a higher `v`) is left alone by claims:
    /// the job file stays as it is where it is, and the next job is claimed.
    #[test]
    fn a_newer_record_is_not_claimed() {
        let (_d, q) = testkit::queue();
        let line = serde_json::json!({"cmd": ["true"]});
        let ids = testkit::push(&q, &[line.clone(), line], Default::default());
        // The first (most urgent) job as a newer q would write it.
        let path = q.locate(&ids[0]).unwrap().unwrap().path;
        let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        rec["v"] = serde_json::json!(3);
        rec["something_new"] = serde_json::json!({"x": 1});
        let bytes = serde_json::to_vec(&rec).unwrap();
        fs::write(&path, &bytes).unwrap();
        assert!(q.newer_record(&path));
        let opts = ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock, fit: None };
        let got = q.claim(2, &opts).unwrap();
        assert_eq!(got.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [ids[1].clone()], "only the job of this format");
        assert_eq!(fs::read(&path).unwrap(), bytes, "the newer record is untouched, where it was");
        let mut worker = DirClaimer::new(&q);
        assert!(worker.claim(1, &opts).unwrap().is_empty(), "a worker passes it over too");
        // What the usual checks handle is not "newer".
        fs::write(&path, b"not json").unwrap();
        assert!(!q.newer_record(&path));
    }

    /// A worker that defers its claims' fsync to their settles marks the
    /// claims that still need it: at-least-once jobs at full durability.
    /// A call that hands out an at-most-once job syncs at once (none is
    /// left pending); relaxed durability needs no sync; a plain claim
    /// (q-claim) is always durable when it returns.
    #[test]
    fn deferred_claims_are_marked_for_their_settle() {
        let opts = ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock, fit: None };
        let plain = serde_json::json!({"cmd": ["true"]});
        let amo = serde_json::json!({"cmd": ["true"], "delivery": "at-most-once"});
        let pending = |q: &Queue, n: usize, defer: bool| -> Vec<bool> {
            let mut c = DirClaimer::new(q);
            if defer {
                c = c.deferring_sync();
            }
            c.claim(n, &opts).unwrap().iter().map(|c| c.durable_pending()).collect()
        };
        let (_d, q) = testkit::queue();
        testkit::push(&q, &[plain.clone(), plain.clone(), plain.clone()], Default::default());
        assert_eq!(pending(&q, 2, true), [true, true]);
        assert_eq!(pending(&q, 1, false), [false], "not deferred");

        let (_d, q) = testkit::queue();
        testkit::push(&q, &[amo.clone(), plain.clone()], Default::default());
        assert_eq!(pending(&q, 2, true), [false, false], "an at-most-once job in the call: synced at once");

        let (_d, mut q) = testkit::queue();
        q.durability = crate::queue::Durability::Relaxed;
        testkit::push(&q, std::slice::from_ref(&plain), Default::default());
        assert_eq!(pending(&q, 1, true), [false], "relaxed");

        // A deferred claim settles: alone, the settle syncs `leased/` first.
        let (_d, q) = testkit::queue();
        let ids = testkit::push(&q, &[plain], Default::default());
        let c = DirClaimer::new(&q).deferring_sync().claim(1, &opts).unwrap().remove(0);
        assert!(c.durable_pending());
        let so = crate::SettleOpts::default();
        let outcome = crate::Outcome::default();
        let ask = crate::ToSettle { claim: &c, reason: crate::Reason::Ok, outcome: &outcome, opts: &so };
        let rec = q.settle_group(&[ask]).remove(0).unwrap();
        assert_eq!((rec.id.as_str(), rec.state), (ids[0].as_str(), crate::State::Done));
    }
}
