//! Garbage collection and repair (`q-gc`, DESIGN §5.8 adapted to format v1).
//!
//! One pass, in this order: stale staging files in `tmp/` (R1); an inventory
//! of every state directory, quarantining what is not of the queue's form
//! (R5: bad names, symlinks, unparsable records, id/name mismatches,
//! foreign-writable files); the same id in two places (R4: the winner by
//! precedence done > dead > canceled > leased > pending/waiting/held stays,
//! the others are quarantined); dead or expired leases (R2/R3, through
//! `Queue::reclaim`), after finished jobs whose outcome a power loss did
//! not keep went back to be settled again (R8); waiting jobs whose dependencies finished; orphan
//! `var/<ID>` directories, abandoned workspaces and stale requests (cancel, signal, restart)
//! (R6, after `orphan_ttl`); retention of finished jobs (R7); empty pending
//! segments; dedupe-key records of finished jobs; recorded environments no
//! job names.
//!
//! Invariants: nothing is ever deleted from `corrupt/`, and what gc finds
//! malformed is moved there, never deleted. Every decision is re-checked
//! against the file system right before it is acted on, so a pass is safe
//! beside running workers, pushers and another gc. With `dry_run` nothing
//! is changed: the same actions are reported as they would be taken. Every
//! action is reported through the caller's callback; this module never
//! prints.

mod envs;
mod outcome;
mod prune;
mod scan;

use crate::error::{Error, Result};
use crate::fsx;
use crate::queue::Queue;
use crate::record::State;
use crate::time;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What gc may remove, and after how long.
#[derive(Debug, Clone)]
pub struct GcOpts {
    /// Staging files older than this are removed (unless flock'ed).
    pub tmp_ttl_ms: u64,
    /// Orphan var directories, abandoned workspaces and stale cancel
    /// requests older than this are removed.
    pub orphan_ttl_ms: u64,
    /// Retention of finished jobs; `None`: keep for ever.
    pub done_ttl_ms: Option<u64>,
    pub dead_ttl_ms: Option<u64>,
    pub canceled_ttl_ms: Option<u64>,
    /// Change nothing; report what would be done.
    pub dry_run: bool,
}

impl Default for GcOpts {
    fn default() -> GcOpts {
        const H: u64 = 3_600_000;
        GcOpts {
            tmp_ttl_ms: H,
            orphan_ttl_ms: H,
            done_ttl_ms: Some(7 * 24 * H),
            dead_ttl_ms: None,
            canceled_ttl_ms: Some(7 * 24 * H),
            dry_run: false,
        }
    }
}

/// One thing gc did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `remove-tmp`, `quarantine`, `remove-duplicate`, `lost-outcome`, `reclaim`, `promote`,
    /// `cancel`, `remove-orphan`, `remove-workspace`, `remove-record`,
    /// `expire`, `remove-segment`, `prune-key`, `remove-env`, `restore-env`.
    pub action: &'static str,
    pub id: Option<String>,
    /// What was acted on.
    pub path: PathBuf,
    pub reason: String,
    /// Where it went (quarantine).
    pub to: Option<PathBuf>,
    /// The job's state after the action, when that is what it changed.
    pub state: Option<State>,
}

/// A pass in progress.
pub(crate) struct Gc<'a> {
    pub q: &'a Queue,
    pub o: &'a GcOpts,
    pub out: &'a mut dyn FnMut(Action),
    pub errors: Vec<Error>,
    pub now: i64,
}

impl Queue {
    /// Run one gc pass. Actions are reported as they happen; errors about
    /// single items do not stop the pass and are returned at the end.
    pub fn gc(&self, o: &GcOpts, out: &mut dyn FnMut(Action)) -> Result<Vec<Error>> {
        let mut g = Gc {
            q: self,
            o,
            out,
            errors: Vec::new(),
            now: time::now_ms(),
        };
        g.tmp();
        let inv = g.scan()?;
        g.duplicates(&inv);
        g.lost_outcomes(&inv);
        g.reclaim();
        g.promote(&inv);
        g.var(&inv);
        g.retention(&inv);
        g.segments();
        g.keys();
        g.envs(&inv);
        Ok(g.errors)
    }
}

/// Milliseconds since a file time (0 if in the future or unknown).
pub(crate) fn age_ms(now: i64, t: std::io::Result<SystemTime>) -> u64 {
    let ms = t
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(now, |d| d.as_millis() as i64);
    (now - ms).max(0) as u64
}

impl Gc<'_> {
    pub(crate) fn emit(
        &mut self,
        action: &'static str,
        id: Option<&str>,
        path: &Path,
        reason: impl Into<String>,
    ) {
        self.emit_full(Action {
            action,
            id: id.map(str::to_owned),
            path: path.to_path_buf(),
            reason: reason.into(),
            to: None,
            state: None,
        });
    }

    pub(crate) fn emit_full(&mut self, a: Action) {
        (self.out)(a);
    }

    pub(crate) fn err(&mut self, r: Result<()>) {
        if let Err(e) = r {
            self.errors.push(e);
        }
    }

    /// Move a malformed entry to `corrupt/` (never deleted) and report it.
    pub(crate) fn quarantine(&mut self, path: &Path, id: Option<&str>, why: &str) {
        let to = if self.o.dry_run {
            if !fsx::exists(path) {
                return;
            }
            None
        } else {
            match self.q.quarantine(path, why) {
                Some(dest) => Some(dest),
                None => return, // moved away meanwhile
            }
        };
        self.emit_full(Action {
            action: "quarantine",
            id: id.map(str::to_owned),
            path: path.to_path_buf(),
            reason: why.to_owned(),
            to,
            state: None,
        });
    }

    /// R1: staging files left by interrupted writers. A file whose flock is
    /// held (a claim being staged) is never removed.
    fn tmp(&mut self) {
        let dir = self.q.tmp();
        let names = match fsx::list(&dir) {
            Ok(n) => n,
            Err(e) => return self.errors.push(e),
        };
        let ttl = self.o.tmp_ttl_ms;
        for n in names {
            let p = dir.join(&n);
            if let Some(r) = envs::set_aside_env(&n) {
                self.restore_env(&p, r);
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if age_ms(self.now, m.modified()) <= ttl {
                continue;
            }
            let reason = format!(
                "staging file older than {} (left by an interrupted writer)",
                time::human_duration(ttl)
            );
            if m.is_file() {
                // Hold its lock while removing it; a held lock means a live writer.
                let Ok(f) = fsx::open_rw(&p) else { continue };
                if f.try_lock().is_err() {
                    continue;
                }
                if !self.o.dry_run {
                    match fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            self.errors.push(Error::io("remove", &p, e));
                            continue;
                        }
                    }
                }
            } else if !self.o.dry_run {
                let r = if m.is_dir() {
                    crate::settle::remove_tree(&p)
                } else {
                    fsx::remove(&p)
                };
                if let Err(e) = r {
                    self.errors.push(e);
                    continue;
                }
            }
            self.emit("remove-tmp", None, &p, reason);
        }
    }

    /// R2/R3: claims whose owner is gone (dead on this host, rebooted, or
    /// past the lease deadline) are settled: requeued, or ended.
    fn reclaim(&mut self) {
        match self.q.reclaim(self.o.dry_run) {
            Ok(list) => {
                for r in list {
                    let path = self
                        .q
                        .dir("leased")
                        .join(format!("{}.{}.json", r.id, r.token));
                    let mut reason = format!("{}: {}", r.why, r.reason.as_str());
                    if r.killed_group {
                        reason.push_str("; killed what was left of its process group");
                    }
                    self.emit_full(Action {
                        action: "reclaim",
                        id: Some(r.id),
                        path,
                        reason,
                        to: None,
                        state: Some(r.state),
                    });
                }
            }
            Err(e) => self.errors.push(e),
        }
    }

    /// Empty pending segments (claimers remove them too; a pusher that finds
    /// its segment gone re-creates it), then empty class directories (a
    /// pusher that finds one gone makes it again).
    fn segments(&mut self) {
        let (_, classes) = match self.q.pending_dirs() {
            Ok(d) => d,
            Err(e) => return self.errors.push(e),
        };
        let mut trees = vec![self.q.dir("pending")];
        trees.extend(classes.iter().map(|c| self.q.tree(Some(c))));
        for tree in &trees {
            self.empty_segments(tree);
        }
        for tree in &trees[1..] {
            self.remove_empty(tree, "empty class directory");
        }
    }

    /// The empty segments of one class's directory (or of pending/).
    fn empty_segments(&mut self, tree: &Path) {
        let names = match fsx::list(tree) {
            Ok(n) => n,
            Err(e) => return self.errors.push(e),
        };
        for n in names {
            if crate::names::Key::parse(&n).is_none() {
                continue;
            }
            self.remove_empty(&tree.join(&n), "empty pending segment");
        }
    }

    /// Remove directory `p` if it is empty (one being filled meanwhile
    /// stays: its remove fails).
    fn remove_empty(&mut self, p: &Path, why: &str) {
        if !fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_none()) {
            return;
        }
        if !self.o.dry_run && fs::remove_dir(p).is_err() {
            return; // a job just arrived
        }
        self.emit("remove-segment", None, p, why);
    }

    /// Dedupe-key records naming jobs that finished (or never appeared), or
    /// whose key was changed since, are dropped, under the key's lock (a pusher holds it while it pushes). Key
    /// files themselves are never unlinked: pushers lock them by path.
    fn keys(&mut self) {
        let dir = self.q.dir("keys");
        let names = match fsx::list(&dir) {
            Ok(n) => n,
            Err(e) => return self.errors.push(e),
        };
        for n in names {
            let p = dir.join(&n);
            let r = self.prune_key_file(&p);
            self.err(r);
        }
    }

    fn prune_key_file(&mut self, p: &Path) -> Result<()> {
        let Ok(m) = fs::symlink_metadata(p) else {
            return Ok(());
        };
        if !m.is_file() || m.len() == 0 {
            return Ok(());
        }
        let Ok(f) = fsx::open_rw(p) else {
            return Ok(());
        };
        if f.try_lock().is_err() {
            return Ok(()); // a push is under way
        }
        let Ok(bytes) = fsx::read_capped(p, 16 << 20) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut keep = Vec::new();
        let mut dropped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let rec = serde_json::from_str::<serde_json::Value>(line).ok();
            let field = |k: &str| rec.as_ref().and_then(|v| v.get(k)).and_then(|i| i.as_str()).map(str::to_owned);
            let id = field("id").filter(|id| crate::id::is_valid_id(id));
            // A live job whose record no longer names the key (revised)
            // does not hold it.
            let live = match (&id, field("key")) {
                (Some(id), Some(key)) => self.q.holds_key(id, &key)?.is_some(),
                _ => false,
            };
            if live {
                keep.push(line.to_owned());
            } else {
                dropped += 1;
            }
        }
        if dropped == 0 {
            return Ok(());
        }
        if !self.o.dry_run {
            use std::os::unix::fs::FileExt;
            let mut body = keep.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            f.set_len(0).map_err(|e| Error::io("truncate", p, e))?;
            f.write_all_at(body.as_bytes(), 0)
                .map_err(|e| Error::io("write", p, e))?;
            f.sync_data().map_err(|e| Error::io("fsync", p, e))?;
        }
        self.emit(
            "prune-key",
            None,
            p,
            format!("{dropped} dedupe-key record(s) of finished or missing jobs, or of keys changed since"),
        );
        Ok(())
    }
}
