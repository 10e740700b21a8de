//! R8: a finished job whose outcome a power loss did not keep. Under
//! `--durability relaxed` a settle publishes its result without an fsync,
//! and the job's move into `done/`, `dead/` or `canceled/` can reach the
//! disk (another process's fsync of that directory carries it) while the
//! result's data, or its name, does not: after the power loss the job is
//! finished with a result of 0 bytes, cut short, or none at all. That
//! outcome is lost. The job goes back to `leased/` under its last
//! attempt's name and is settled again at once as interrupted, as a reclaim
//! would (its owner died with the host): the job runs again, as relaxed
//! durability allows after a power loss. A cut-short record is moved to
//! `corrupt/` first, out of the way of the new one.
//!
//! At full durability, and for at-most-once jobs, the outcome is synced
//! before the move, so this never finds anything.

use super::Gc;
use super::scan::Inventory;
use crate::fsx::{self, Renamed};
use crate::names::{Counters, LeasedName};
use crate::record::{Outcome, Reason, ResultRecord, State};
use crate::settle::SettleOpts;

/// What a finished job's records say of its end.
enum Verdict {
    /// A whole record of its last attempt (or its end record) decides it.
    Decided,
    /// Its last attempt (0: none was recorded) has no whole terminal record.
    Lost { attempt: u32, failures: u32 },
    /// An archived end record and nothing after it: a `q-ctl retry` that
    /// died before its move (FORMAT: retrying again finishes it). Left alone.
    Retrying,
}

impl Gc<'_> {
    /// R8: finished jobs whose outcome was lost go back to be reclaimed.
    pub(crate) fn lost_outcomes(&mut self, inv: &Inventory) {
        let mut ids: Vec<&String> = inv.jobs.keys().collect();
        ids.sort();
        for id in ids {
            let [f] = inv.jobs[id].as_slice() else { continue };
            if f.newer || f.state == State::Running {
                continue;
            }
            self.cut_short_records(id);
            if !f.state.is_terminal() {
                continue;
            }
            let Verdict::Lost { attempt, failures } = self.verdict(id, f.state) else { continue };
            // Still there? (a retry may have moved it since the scan)
            if !fsx::exists(&f.path) {
                continue;
            }
            let why = format!("{} without a whole outcome of attempt {attempt} (lost in a power loss)", f.state.dir());
            if self.o.dry_run {
                self.emit("lost-outcome", Some(id), &f.path, why);
                continue;
            }
            let c = Counters { attempt, failures, interrupts: 0 };
            let moved = if attempt == 0 {
                // Never claimed as far as the disk knows: back to pending.
                let (priority, class) = self.job_place(&f.path);
                let key = crate::names::Key::new(priority, self.now, id);
                let r = self.q.place(&[(class, key.clone())]).and_then(|mut segs| {
                    let mut dirty = Vec::new();
                    let name = crate::names::QueuedName { key, c }.to_string();
                    self.q.rename_into_segment(&f.path, &segs.remove(0), &name, &mut dirty)?;
                    fsx::fsync_dirs(&dirty)
                });
                r.map(|()| State::Pending)
            } else {
                let name = LeasedName { id: id.clone(), c };
                let to = self.q.dir("leased").join(name.to_string());
                fsx::rename_noreplace(&f.path, &to).and_then(|r| match r {
                    Renamed::Done => self.settle_lost(&name),
                    _ => Err(crate::Error::new(crate::Kind::Busy, format!("{}: moved meanwhile", f.path.display()))),
                })
            };
            match moved {
                Ok(state) => self.emit_full(super::Action {
                    action: "lost-outcome",
                    id: Some(id.clone()),
                    path: f.path.clone(),
                    reason: why,
                    to: None,
                    state: Some(state),
                }),
                Err(e) if fsx::exists(&f.path) => self.errors.push(e),
                Err(_) => {}
            }
        }
    }

    /// Records of a job that is not running that a power loss cut short
    /// (the outcome of an attempt that sent the job back to pending, a
    /// lease record: neither is synced under relaxed durability) go to
    /// `corrupt/`, so that no reader meets a partial file.
    fn cut_short_records(&mut self, id: &str) {
        let var = self.q.var(id);
        for n in fsx::list(&var).unwrap_or_default() {
            if (n.ends_with(".result.json") || n.ends_with(".lease.json")) && !self.o.dry_run {
                self.q.quarantine_partial(&var.join(&n), "a record cut short by a power loss");
            }
        }
    }

    /// Settle again, as interrupted, the attempt whose outcome was lost:
    /// its owner died with the host. What is left of its records, cut
    /// short, goes to `corrupt/` first (a new result takes its place).
    fn settle_lost(&self, name: &LeasedName) -> crate::Result<State> {
        let a = name.c.attempt;
        let var = self.q.var(&name.id);
        self.q.quarantine_partial(&var.join(format!("{a}.result.json")), "a result record cut short by a power loss");
        self.q.quarantine_partial(&var.join(format!("{a}.lease.json")), "a lease record cut short by a power loss");
        let opts = SettleOpts { worker_id: Some("reclaim".into()), ..SettleOpts::default() };
        // Counted as started, as every reclaimed attempt is.
        let outcome = Outcome { started_at_ms: Some(self.now), ..Outcome::default() };
        // Durable whatever the setting: a repair that a power loss could
        // undo brings the lost state back beside its replacement.
        let mut q = self.q.clone();
        q.durability = crate::Durability::Full;
        let st = q.settle_token(&name.id, &name.token(), Reason::LeaseExpired, &outcome, &opts, true)?.state;
        // Where the move went, synced too (a settle leaves that to recovery).
        if let Some(at) = self.q.locate(&name.id)?
            && let Some(dir) = at.path.parent()
        {
            let mut dirs = vec![dir.to_path_buf(), self.q.dir("pending"), self.q.dir("leased")];
            // A segment of a class: its class's directory too.
            if let Some(tree) = dir.parent().filter(|t| t.parent() == Some(self.q.dir("pending").as_path())) {
                dirs.push(tree.to_path_buf());
            }
            fsx::fsync_dirs(&dirs)?;
        }
        Ok(st)
    }

    fn verdict(&self, id: &str, state: State) -> Verdict {
        let var = self.q.var(id);
        let names = fsx::list(&var).unwrap_or_default();
        let attempt_of = |n: &str| n.strip_suffix(".result.json").or_else(|| n.strip_suffix(".lease.json")).and_then(|a| a.parse::<u32>().ok());
        let last = names.iter().filter_map(|n| attempt_of(n)).max().unwrap_or(0);
        let read = |name: &str| -> Option<ResultRecord> { serde_json::from_slice(&fsx::read_capped(&var.join(name), 1 << 20).ok()?).ok() };
        let decides = |r: &ResultRecord| r.state == state;
        if let Some(end) = self.q.read_end(id)
            && end.attempt >= last
        {
            return if decides(&end) { Verdict::Decided } else { Verdict::Lost { attempt: last, failures: end.failures } };
        }
        if last == 0 && names.iter().any(|n| n.starts_with("end.") && n != "end.json") {
            return Verdict::Retrying;
        }
        if last == 0 {
            // No record at all: every way into a terminal directory
            // publishes one first (a result, or `end.json`, each synced
            // before the move at full durability). Under relaxed durability
            // a power loss can keep the move and lose every record of the
            // job's attempts (the lease's and the result's names with
            // them): nothing decides it, so it runs again.
            return Verdict::Lost { attempt: 0, failures: 0 };
        }
        if read(&format!("{last}.result.json")).is_some_and(|r| decides(&r)) {
            return Verdict::Decided;
        }
        // The failures so far, from the latest whole record before it.
        let failures = (1..last).rev().find_map(|a| read(&format!("{a}.result.json"))).map_or(0, |r| r.failures);
        Verdict::Lost { attempt: last, failures }
    }

    /// The priority of a job (its file is whole: pushes are always synced).
    /// The priority and class of the job at `path` (a record that cannot
    /// be read: 0 and plain; its claim quarantines it).
    fn job_place(&self, path: &std::path::Path) -> (i32, Option<crate::names::Class>) {
        self.q.read_job(path).map_or((0, None), |j| (j.priority, j.class()))
    }
}
