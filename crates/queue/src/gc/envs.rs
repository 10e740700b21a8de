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
        for n in names {
            let Some(r) = n.strip_suffix(".json") else { continue };
            if inv.env_refs.contains(r) {
                continue;
            }
            let p = dir.join(&n);
            let Ok(m) = fs::symlink_metadata(&p) else { continue };
            if !m.is_file() || age_ms(self.now, m.modified()) <= idle {
                continue;
            }
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
