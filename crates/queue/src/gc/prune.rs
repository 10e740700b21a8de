//! What gc removes or moves on: waiting jobs whose dependencies finished,
//! orphan `var/<ID>` directories, abandoned workspaces and stale cancel
//! requests (R6), and finished jobs past their retention (R7).
//!
//! Every removal is re-checked right before it happens: an attempt is only
//! abandoned if the job is not leased at that attempt *now* (a workspace is
//! made after its claim, so one that exists while its claim does not belongs
//! to an attempt that is over); a finished job is first renamed out of its
//! state directory, so a concurrent `q-ctl retry` either wins (and gc keeps
//! its history) or finds nothing.

use crate::names::var;
use super::scan::Inventory;
use super::{Action, Gc, age_ms};
use crate::error::Result;
use crate::fsx::{self, Renamed};
use crate::id::is_valid_id;
use crate::names::LeasedName;
use crate::record::State;
use crate::settle::remove_tree;
use crate::time;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What kind of file in `var/<ID>/` an entry is.
enum VarEntry {
    Work(u32),
    /// A request to an attempt (a cancel, a signal, a restart).
    Request(u32),
    Other,
}

fn var_entry(n: &str) -> VarEntry {
    let Some((a, rest)) = n.split_once('.') else {
        return VarEntry::Other;
    };
    let Ok(a) = a.parse::<u32>() else {
        return VarEntry::Other;
    };
    match rest {
        "work" => VarEntry::Work(a),
        "cancel" => VarEntry::Request(a),
        _ if var::parse_request(n, a).is_some() => VarEntry::Request(a),
        _ => VarEntry::Other,
    }
}

impl Gc<'_> {
    /// Waiting jobs whose dependencies all finished: promoted when all are
    /// done, ended `canceled` (dependency-failed) when one is not.
    pub(crate) fn promote(&mut self, inv: &Inventory) {
        for (id, after) in &inv.waiting {
            let r = self.promote_one(id, after);
            self.err(r);
        }
    }

    fn promote_one(&mut self, id: &str, after: &[String]) -> Result<()> {
        let mut failed = None;
        for dep in after {
            match self.q.locate(dep)?.map(|l| l.state) {
                Some(State::Done) => {}
                Some(State::Dead | State::Canceled) | None => {
                    failed = Some(dep.clone());
                    break;
                }
                Some(_) => return Ok(()),
            }
        }
        let Some(l) = self.q.locate(id)? else {
            return Ok(());
        };
        if l.state != State::Waiting {
            return Ok(());
        }
        let (action, want, reason) = match &failed {
            None => (
                "promote",
                State::Pending,
                "its dependencies are done".to_owned(),
            ),
            Some(dep) => (
                "cancel",
                State::Canceled,
                format!("dependency-failed: {dep} did not end done"),
            ),
        };
        if !self.o.dry_run && self.q.promote_if_ready(id)? != Some(want) {
            return Ok(());
        }
        self.emit_full(Action {
            action,
            id: Some(id.to_owned()),
            path: l.path,
            reason,
            to: None,
            state: Some(want),
        });
        Ok(())
    }

    /// R6: `var/` holds one directory per job. Bad entries are quarantined;
    /// the directory of a job that exists nowhere is removed after the
    /// orphan TTL; so are the workspaces and live records of attempts that
    /// are over.
    pub(crate) fn var(&mut self, inv: &Inventory) {
        let var = self.q.dir("var");
        let names = match fsx::list(&var) {
            Ok(n) => n,
            Err(e) => return self.errors.push(e),
        };
        for n in names {
            let p = var.join(&n);
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if !is_valid_id(&n) || !m.is_dir() {
                self.quarantine(
                    &p,
                    None,
                    "not a job's var directory (bad name, symlink or not a directory)",
                );
                continue;
            }
            let r = if inv.jobs.contains_key(&n) {
                self.var_job(&n, &p)
            } else {
                self.var_orphan(&n, &p, &m)
            };
            self.err(r);
        }
    }

    fn var_orphan(&mut self, id: &str, p: &Path, m: &fs::Metadata) -> Result<()> {
        let ttl = self.o.orphan_ttl_ms;
        // The newest change inside counts (a heartbeat touches the lease).
        let mut age = age_ms(self.now, m.modified());
        for n in fsx::list(p)? {
            if let Ok(em) = fs::symlink_metadata(p.join(&n)) {
                age = age.min(age_ms(self.now, em.modified()));
            }
        }
        if age <= ttl || self.job_exists(id)? {
            return Ok(());
        }
        if !self.o.dry_run {
            remove_tree(p)?;
        }
        let why = format!(
            "no job {id} exists; untouched for over {}",
            time::human_duration(ttl)
        );
        self.emit("remove-orphan", Some(id), p, why);
        Ok(())
    }

    fn job_exists(&self, id: &str) -> Result<bool> {
        for _ in 0..2 {
            if self.q.locate(id)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The attempt job `id` is leased at right now, if any.
    fn leased_now(&self, id: &str) -> Result<Option<u32>> {
        let prefix = format!("{id}.");
        for n in fsx::list(&self.q.dir("leased"))? {
            if n.starts_with(&prefix)
                && let Some(l) = LeasedName::parse(&n).filter(|l| l.id == id)
            {
                return Ok(Some(l.c.attempt));
            }
        }
        Ok(None)
    }

    fn var_job(&mut self, id: &str, p: &Path) -> Result<()> {
        let ttl = self.o.orphan_ttl_ms;
        for n in fsx::list(p)? {
            let ep = p.join(&n);
            let Ok(em) = fs::symlink_metadata(&ep) else {
                continue;
            };
            if em.file_type().is_symlink() {
                self.quarantine(&ep, Some(id), "a symlink inside a job's var directory");
                continue;
            }
            let (attempt, what) = match var_entry(&n) {
                VarEntry::Work(a) if em.is_dir() => (a, "workspace"),
                VarEntry::Request(a) => (a, "request"),
                // Lease and run records stay as the attempt's history; they
                // go with the job (retention).
                _ => continue,
            };
            let mut age = age_ms(self.now, em.modified());
            if what == "workspace" {
                // Kept for inspection from the end of its attempt.
                if let Ok(rm) = fs::symlink_metadata(p.join(var::result(attempt))) {
                    age = age.min(age_ms(self.now, rm.modified()));
                }
            }
            if age <= ttl || self.leased_now(id)? == Some(attempt) {
                continue;
            }
            if !self.o.dry_run {
                if what == "workspace" {
                    remove_tree(&ep)?
                } else {
                    fsx::remove(&ep)?
                }
            }
            let (action, why) = if what == "workspace" {
                (
                    "remove-workspace",
                    format!(
                        "workspace of attempt {attempt}, which is not running; untouched for over {}",
                        time::human_duration(ttl)
                    ),
                )
            } else {
                (
                    "remove-record",
                    format!("request to attempt {attempt}, which is not running"),
                )
            };
            self.emit(action, Some(id), &ep, why);
        }
        Ok(())
    }

    /// R7: finished jobs past their retention are deleted with everything
    /// kept for them, except a job that a waiting or held job depends on.
    pub(crate) fn retention(&mut self, inv: &Inventory) {
        if self.o.done_ttl_ms.is_none()
            && self.o.dead_ttl_ms.is_none()
            && self.o.canceled_ttl_ms.is_none()
        {
            return;
        }
        // Fresh: a job pushed since the scan may depend on an old one.
        let needed = match self.needed_now() {
            Ok(n) => n,
            Err(e) => return self.errors.push(e),
        };
        let mut ids: Vec<&String> = inv.jobs.keys().collect();
        ids.sort();
        for id in ids {
            let founds = &inv.jobs[id];
            if founds.len() != 1 || founds[0].newer || needed.contains(id) {
                continue;
            }
            let f = &founds[0];
            let ttl = match f.state {
                State::Done => self.o.done_ttl_ms,
                State::Dead => self.o.dead_ttl_ms,
                State::Canceled => self.o.canceled_ttl_ms,
                _ => None,
            };
            let Some(ttl) = ttl else { continue };
            let r = self.expire(id, f.state, &f.path, ttl);
            self.err(r);
        }
    }

    fn needed_now(&self) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for st in [State::Waiting, State::Held] {
            let dir = self.q.dir(st.dir());
            for n in fsx::list(&dir)? {
                if let Ok(job) = self.q.read_job(&dir.join(&n)) {
                    out.extend(job.after);
                }
            }
        }
        Ok(out)
    }

    fn expire(&mut self, id: &str, st: State, path: &Path, ttl: u64) -> Result<()> {
        let finished = self
            .q
            .last_result(id)
            .and_then(|r| r.finished_at)
            .and_then(|t| time::parse_time(&t).ok())
            .or_else(|| {
                // No result: when the file last moved (a rename sets ctime).
                fs::symlink_metadata(path)
                    .ok()
                    .map(|m| m.ctime() * 1000 + m.ctime_nsec() / 1_000_000)
            });
        let Some(finished) = finished else {
            return Ok(());
        };
        if ((self.now - finished).max(0) as u64) <= ttl {
            return Ok(());
        }
        if !self.o.dry_run {
            // Out of its state directory first: a concurrent retry wins or loses whole.
            let tmp = self.q.tmp().join(fsx::tmp_name("expire"));
            if fsx::rename_noreplace(path, &tmp)? != Renamed::Done {
                return Ok(());
            }
            crate::failpoint!("gc.expire_after_rename");
            remove_tree(&self.q.var(id))?;
            fsx::remove(&tmp)?;
            fsx::fsync_dir(&self.q.dir(st.dir()))?;
        }
        let why = format!(
            "{} for over {} (retention)",
            st.as_str(),
            time::human_duration(ttl)
        );
        self.emit_full(Action {
            action: "expire",
            id: Some(id.to_owned()),
            path: path.to_path_buf(),
            reason: why,
            to: None,
            state: Some(st),
        });
        Ok(())
    }
}
