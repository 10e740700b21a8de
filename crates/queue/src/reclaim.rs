//! Reclaim: find claims whose owner is gone and settle them. The owner of a
//! lease is dead when (same host, same boot, same pid namespace) its lease
//! lock is free and it was a flock holder or had started the job; when the
//! host rebooted; or, anywhere, when the lease deadline (last heartbeat +
//! lease length, plus a skew margin for other hosts) has passed. Before a
//! job is requeued, what is left of its process group on this host is
//! killed.

use crate::names::var;
use crate::error::Result;
use crate::fsx;
use crate::ident;
use crate::names::{Counters, LeasedName};
use crate::queue::Queue;
use crate::record::{Liveness, Outcome, Reason, ResultRecord, State};
use crate::settle::SettleOpts;
use crate::time;
use std::fs;
use std::time::UNIX_EPOCH;

/// How long a claim may sit without a lease record (a claimer died between
/// the claim rename and publishing its lease) before it is reclaimed.
pub const NO_LEASE_GRACE_MS: i64 = 60_000;

/// Margin for clock skew when judging a lease held on another host.
pub const SKEW_MS: i64 = 30_000;

/// One reclaimed claim.
#[derive(Debug, Clone)]
pub struct Reclaimed {
    pub id: String,
    pub token: String,
    /// The attempt whose claim was reclaimed.
    pub attempt: u32,
    /// What was decided: the job's next state.
    pub state: State,
    pub reason: Reason,
    /// Why the owner was judged gone.
    pub why: String,
    pub killed_group: bool,
    /// The worker that held the claim, per its lease.
    pub worker_id: Option<String>,
}

fn mtime_ms(m: &fs::Metadata) -> i64 {
    m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as i64)
}

fn ctime_ms(m: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    m.ctime() * 1000 + m.ctime_nsec() / 1_000_000
}

impl Queue {
    /// Reclaim every claim whose owner is gone. `dry_run`: only report.
    pub fn reclaim(&self, dry_run: bool) -> Result<Vec<Reclaimed>> {
        let mut out = Vec::new();
        for n in fsx::list(&self.dir("leased"))? {
            let path = self.dir("leased").join(&n);
            let Some(name) = LeasedName::parse(&n) else {
                if !dry_run {
                    self.quarantine(&path, "leased file name is not of the queue's form");
                }
                continue;
            };
            if let Some(r) = self.reclaim_one(&name, dry_run)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Judge one claim; settle it if its owner is gone.
    pub fn reclaim_one(&self, name: &LeasedName, dry_run: bool) -> Result<Option<Reclaimed>> {
        let id = &name.id;
        let a = name.c.attempt;
        let token = name.token();
        let now = time::now_ms();
        let leased = self.dir("leased").join(name.to_string());
        let Ok(lmeta) = fs::symlink_metadata(&leased) else { return Ok(None) };
        let lease_path = self.lease_path(id, a);
        let here = ident::host();
        // Hold the lease lock (if we can get it) while we settle, so that no
        // runner takes the claim over meanwhile.
        let mut _lock = None;
        let mut holder = None;
        let (dead, why) = match (self.read_lease(id, a), fs::metadata(&lease_path)) {
            (Ok(lease), Ok(meta)) => {
                holder = lease.worker_id.clone();
                let deadline = mtime_ms(&meta) + lease.lease_ms as i64;
                let same_host = lease.host == here.host && lease.pidns == here.pidns;
                let lock_free = match fsx::open_rw(&lease_path) {
                    Ok(f) => match f.try_lock() {
                        Ok(()) => {
                            _lock = Some(f);
                            true
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                let started = self.read_run(id, a).is_some();
                if same_host && lease.boot_id != here.boot_id {
                    (true, "the host rebooted since the claim".to_owned())
                } else if same_host && lock_free && (lease.liveness == Liveness::Flock || started) {
                    (true, format!("its owner (pid {}) is gone", lease.pid))
                } else if now > deadline + if same_host { 0 } else { SKEW_MS } {
                    (true, format!("its lease expired at {}", time::rfc3339(deadline)))
                } else {
                    (false, String::new())
                }
            }
            _ => {
                // No whole lease record: a claimer between its claim rename
                // and its lease (microseconds), or a power loss that kept
                // the claim but not its lease (a record is not fsynced). A
                // claim older than this boot has no live claimer.
                let claimed = ctime_ms(&lmeta);
                if claimed < ident::boot_time_ms() {
                    self.quarantine_partial(&lease_path, "a lease record cut short by a power loss");
                    (true, "the claim predates this boot and has no whole lease record".to_owned())
                } else if now > claimed + crate::failpoint::override_ms("Q_NO_LEASE_GRACE_MS", NO_LEASE_GRACE_MS) {
                    self.quarantine_partial(&lease_path, "a lease record that is not whole");
                    (true, "the claim has no lease record".to_owned())
                } else {
                    (false, String::new())
                }
            }
        };
        if !dead {
            return Ok(None);
        }
        // A crash after the outcome was published: finish that move.
        let result_path = self.var(id).join(var::result(a));
        if let Ok(b) = fsx::read_capped(&result_path, 1 << 20) {
            match serde_json::from_slice::<ResultRecord>(&b) {
                Ok(rec) => {
                    if !dry_run {
                        self.finish_settled(name, &rec)?;
                    }
                    return Ok(Some(Reclaimed { id: id.clone(), token, attempt: a, state: rec.state, reason: rec.reason, why: format!("{why}; its outcome was recorded"), killed_group: false, worker_id: holder }));
                }
                // A result is renamed into place whole, so one that is not
                // is what a power loss left of an outcome that was not
                // synced (relaxed durability): that outcome is lost, the
                // attempt is settled anew, as interrupted.
                Err(_) if !dry_run => self.quarantine_partial(&result_path, "a result record cut short by a power loss"),
                Err(_) => {}
            }
        }
        let (_, run) = self.live_records(id, a);
        let mut killed = false;
        if let Some(run) = &run
            && !dry_run && run.host == here.host && run.boot_id == here.boot_id && run.pidns == here.pidns
        {
            killed = ident::kill_group(run.pgid, run.leader_start, nix::sys::signal::Signal::SIGKILL);
        }
        crate::failpoint!("reclaim.before_settle");
        // What was asked of the attempt decides for it: a cancel, else a restart.
        let asked: Vec<crate::record::Ask> = self.requests(id, a).into_iter().map(|r| r.ask).collect();
        let reason = if asked.contains(&crate::record::Ask::Cancel) {
            Reason::Canceled
        } else if asked.contains(&crate::record::Ask::Restart) {
            Reason::Restarted
        } else {
            Reason::LeaseExpired
        };
        if dry_run {
            return Ok(Some(Reclaimed { id: id.clone(), token, attempt: a, state: State::Pending, reason, why, killed_group: false, worker_id: holder }));
        }
        let lease = self.read_lease(id, a).ok();
        let claimed_ms = lease.as_ref().and_then(|l| time::parse_time(&l.claimed_at).ok());
        // A runner killed between spawning the job and appending its run
        // line leaves no trace of the start either: a reclaimed attempt is
        // always counted as started, so an at-most-once job ends dead.
        let started_at_ms = run.as_ref().and_then(|r| time::parse_time(&r.started_at).ok()).or(claimed_ms).or(Some(now));
        let outcome = Outcome { started_at_ms, ..Outcome::default() };
        // Its owner may have died before its claim was durable (a worker
        // leaves that to the attempt's settle, whatever this process's
        // durability): the claim is made durable before the outcome.
        let opts = SettleOpts { worker_id: Some("reclaim".into()), ..SettleOpts::default() };
        match self.settle_token(id, &token, reason, &outcome, &opts, true) {
            Ok(rec) => Ok(Some(Reclaimed { id: id.clone(), token, attempt: a, state: rec.state, reason, why, killed_group: killed, worker_id: holder })),
            // Someone settled it first (the owner woke up, or another reclaimer).
            Err(e) if e.kind == crate::Kind::LeaseLost => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Move a record that is not whole (a power loss kept its name, not
    /// all of its data) to `corrupt/`, out of the way of a new one.
    pub(crate) fn quarantine_partial(&self, path: &std::path::Path, why: &str) {
        let whole = fsx::read_capped(path, 1 << 20).is_ok_and(|b| b.ends_with(b"\n") && b.split(|c| *c == b'\n').next().is_some_and(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok()));
        if fsx::exists(path) && !whole && self.quarantine(path, why).is_some() {
            // A repair is made durable, or the next power loss brings the
            // partial record back beside what replaces it.
            let _ = path.parent().map(fsx::fsync_dir);
            let _ = fsx::fsync_dir(&self.dir("corrupt"));
        }
    }

    /// Complete the move of an attempt whose result was published before a crash.
    fn finish_settled(&self, name: &LeasedName, rec: &ResultRecord) -> Result<()> {
        let leased = self.dir("leased").join(name.to_string());
        let Ok(job) = self.read_job(&leased) else { return Ok(()) };
        crate::failpoint!("reclaim.finish_settled");
        let c = Counters {
            attempt: name.c.attempt,
            failures: rec.failures,
            interrupts: if rec.reason.is_interruption() { name.c.interrupts + 1 } else { 0 },
        };
        let run_at = rec.next_run_at.as_deref().and_then(|t| time::parse_time(t).ok()).unwrap_or_else(time::now_ms);
        self.move_leased(name, &job, rec.state, run_at, c, true)?;
        if rec.state.is_terminal() {
            let mut dirty = Vec::new();
            self.on_terminal(&name.id, rec.state, &mut dirty);
            fsx::fsync_dirs(&dirty)?;
        }
        Ok(())
    }
}
