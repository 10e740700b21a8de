//! Recorded environments (`env/<HASH>.json`) that no job names any more.
//!
//! A pusher touches (mtime) a record it reuses before it commits the jobs
//! that name it (once per push of up to 2,000 jobs). A record is removed
//! only if no job of the scan names it and it was not touched for
//! [`ENV_IDLE`] (or `--orphan-ttl`, if longer). The removal is a rename into `tmp/`, then a second look at the
//! mtime: a pusher that touched the record meanwhile gets it back; one that
//! finds it gone writes it again (it is content-addressed). A record left
//! set aside by a q-gc that died between the two steps is put back by the
//! next pass (its `tmp/` name says where it belongs).

use super::{Gc, age_ms, scan::Inventory};
use crate::fsx::{self, Renamed};
use crate::time;
use std::fs;

/// The least time a recorded environment stays after its last use.
pub(crate) const ENV_IDLE: u64 = 3_600_000;

impl Gc<'_> {
    pub(crate) fn envs(&mut self, inv: &Inventory) {
        if inv.newer_seen {
            return; // a newer record may name any of them
        }
        let dir = self.q.dir("env");
        let names = match fsx::list(&dir) {
            Ok(n) => n,
            Err(e) => return self.errors.push(e),
        };
        let idle = self.o.orphan_ttl_ms.max(ENV_IDLE);
        let candidates: Vec<String> = names
            .into_iter()
            .filter(|n| n.strip_suffix(".json").is_some_and(|r| !inv.env_refs.contains(r)))
            .filter(|n| fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.is_file() && age_ms(self.now, m.modified()) > idle))
            .collect();
        if candidates.is_empty() {
            return;
        }
        // The scan lists pending/ first and the finished jobs last, so a
        // job moving back towards pending/ meanwhile (a retry, a release, a
        // reclaim) may have been in neither place when it was looked at.
        // Look again in the other order, at the jobs the scan did not see.
        let refs = match self.env_refs_unseen(inv) {
            Ok(r) => r,
            Err(e) => return self.errors.push(e),
        };
        for n in candidates {
            let Some(r) = n.strip_suffix(".json") else { continue };
            if refs.contains(r) {
                continue;
            }
            let p = dir.join(&n);
            let reason = format!("no job names this environment and it was not used for {}", time::human_duration(idle));
            if self.o.dry_run {
                self.emit("remove-env", None, &p, reason);
                continue;
            }
            let aside = self.q.tmp().join(fsx::tmp_name(&format!("env-{r}")));
            if fs::rename(&p, &aside).is_err() {
                continue; // gone meanwhile
            }
            crate::failpoint!("gc.env_aside");
            let touched = fs::symlink_metadata(&aside).map_or(true, |m| age_ms(time::now_ms(), m.modified()) <= idle);
            if touched {
                // A pusher reused it while we looked: put it back (unless
                // one wrote it anew meanwhile, which is the same record).
                if !matches!(fsx::rename_noreplace(&aside, &p), Ok(Renamed::Done)) {
                    let _ = fs::remove_file(&aside);
                }
                continue;
            }
            let _ = fs::remove_file(&aside);
            self.emit("remove-env", None, &p, reason);
        }
    }
}

impl Gc<'_> {
    /// The environments named by jobs the scan did not see, listing the
    /// state directories in the reverse of the scan's order.
    fn env_refs_unseen(&self, inv: &Inventory) -> crate::error::Result<std::collections::HashSet<String>> {
        use crate::names::{LeasedName, QueuedName, parse_terminal};
        // (file, the id its name says)
        let mut files: Vec<(std::path::PathBuf, String)> = Vec::new();
        for d in ["canceled", "dead", "done"] {
            let dir = self.q.dir(d);
            for n in fsx::list(&dir)? {
                if let Some(id) = parse_terminal(&n).map(str::to_owned) {
                    files.push((dir.join(&n), id));
                }
            }
        }
        let leased = self.q.dir("leased");
        for n in fsx::list(&leased)? {
            if let Some(l) = LeasedName::parse(&n) {
                files.push((leased.join(&n), l.id));
            }
        }
        let mut queued_dirs = vec![self.q.dir("held"), self.q.dir("waiting")];
        queued_dirs.extend(self.q.segment_dirs()?);
        for dir in queued_dirs {
            for n in fsx::list(&dir)? {
                if let Some(q) = QueuedName::parse(&n) {
                    files.push((dir.join(&n), q.key.id));
                }
            }
        }
        let mut refs = std::collections::HashSet::new();
        for (f, id) in files {
            if inv.jobs.contains_key(&id) {
                continue;
            }
            if let Ok(job) = self.q.read_job(&f)
                && let Some(r) = job.env_ref
            {
                refs.insert(r);
            }
        }
        Ok(refs)
    }
}

/// The record name of an environment a q-gc set aside in `tmp/`
/// (`<ULID>.<pid>.env-<NAME>.tmp`), if `n` is one.
pub(crate) fn set_aside_env(n: &str) -> Option<&str> {
    let what = n.strip_suffix(".tmp")?.rsplit_once('.')?.1;
    let r = what.strip_prefix("env-")?;
    (!r.is_empty() && r.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(r)
}

impl Gc<'_> {
    /// Put back a record a q-gc set aside and did not finish with; if a
    /// pusher wrote it again meanwhile, the copy is dropped.
    pub(crate) fn restore_env(&mut self, aside: &std::path::Path, r: &str) {
        if self.o.dry_run {
            return;
        }
        let to = self.q.dir("env").join(format!("{r}.json"));
        match fsx::rename_noreplace(aside, &to) {
            Ok(Renamed::Done) => self.emit("restore-env", None, &to, "set aside by a q-gc that did not finish"),
            Ok(Renamed::Exists) => {
                let _ = fs::remove_file(aside);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::{Action, GcOpts};
    use crate::testkit;

    /// A job the scan did not see (it moved back towards pending/ while the
    /// scan looked) still keeps its environment: the second look finds it.
    #[test]
    fn a_record_named_by_a_job_the_scan_missed_is_kept() {
        let (_d, q) = testkit::queue();
        let env = std::collections::BTreeMap::from([("MARK".to_owned(), "x".to_owned())]);
        let id = testkit::push(&q, &[serde_json::json!({"cmd": ["true"]})], env).remove(0);
        let rec = fsx::list(&q.dir("env")).unwrap().pop().map(|n| q.dir("env").join(n)).unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::open(&rec).unwrap().set_modified(two_hours_ago).unwrap();
        let opts = GcOpts::default();
        let mut actions: Vec<Action> = Vec::new();
        let missed = Inventory::default(); // the scan saw no job at all
        {
            let mut out = |a: Action| actions.push(a);
            let mut g = Gc { q: &q, o: &opts, out: &mut out, errors: Vec::new(), now: time::now_ms() };
            g.envs(&missed);
            assert!(g.errors.is_empty());
        }
        assert!(rec.exists(), "named by a pending job the scan missed: kept");
        assert!(actions.is_empty(), "{actions:?}");
        // Once the job is gone, the record goes.
        let job = q.locate(&id).unwrap().unwrap().path;
        fs::remove_file(job).unwrap();
        {
            let mut out = |a: Action| actions.push(a);
            let mut g = Gc { q: &q, o: &opts, out: &mut out, errors: Vec::new(), now: time::now_ms() };
            g.envs(&missed);
        }
        assert!(!rec.exists());
        assert_eq!(actions.iter().map(|a| a.action).collect::<Vec<_>>(), ["remove-env"]);
    }
}
