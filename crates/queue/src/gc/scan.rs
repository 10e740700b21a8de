//! The inventory of a gc pass: every job file in every state directory,
//! checked for form (R5) as it is listed, and the repair of an id found in
//! more than one place (R4).
//!
//! A job file keeps its inode through every rename, so two names of one id
//! with different inodes are a true duplicate, and one inode seen at two
//! names one after the other is a job that moved while we looked.

use super::Gc;
use crate::error::{Error, Result};
use crate::fsx;
use crate::id::is_valid_id;
use crate::job::{Job, MAX_RECORD};
use crate::names::{Class, Key, LeasedName, QueuedName, parse_terminal};
use crate::record::State;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One name of a job.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub state: State,
    pub path: PathBuf,
    /// Claims so far (terminal names carry none: 0).
    pub attempt: u32,
    pub ino: (u64, u64),
    /// A record of a newer format: never touched.
    pub newer: bool,
}

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    pub jobs: HashMap<String, Vec<Found>>,
    /// Waiting jobs and what they wait on.
    pub waiting: Vec<(String, Vec<String>)>,
    /// The recorded environments the jobs found name (`env_ref`).
    pub env_refs: std::collections::HashSet<String>,
    /// A record of a newer format was found: what it names is unknown.
    pub newer_seen: bool,
}

/// Precedence of a name when an id is found twice: higher wins.
fn rank(f: &Found) -> (u8, u32) {
    let r = match f.state {
        State::Done => 6,
        State::Dead => 5,
        State::Canceled => 4,
        State::Running => 3,
        State::Pending | State::Waiting | State::Held => 2,
    };
    (r, f.attempt)
}

/// How a job file failed its check.
enum Check {
    Ok(Box<Job>, fs::Metadata),
    /// A newer format's record: leave it alone.
    Newer(fs::Metadata),
    /// Gone meanwhile, or quarantined.
    Skip,
}

impl Gc<'_> {
    /// List every state directory, quarantining what is not of the form.
    pub(crate) fn scan(&mut self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        // Pending: segment directories holding job files, in pending/
        // itself and in the directory of each class.
        let pending = self.q.dir("pending");
        for seg in fsx::list(&pending)? {
            let sp = pending.join(&seg);
            let Ok(m) = fs::symlink_metadata(&sp) else {
                continue;
            };
            if Class::parse(&seg).is_some() && m.is_dir() {
                for cseg in fsx::list(&sp)? {
                    self.segment(&mut inv, &sp.join(&cseg), &cseg)?;
                }
                continue;
            }
            self.segment(&mut inv, &sp, &seg)?;
        }
        for st in [State::Waiting, State::Held] {
            let dir = self.q.dir(st.dir());
            for n in fsx::list(&dir)? {
                self.queued(&mut inv, st, &dir.join(&n), &n);
            }
        }
        let leased = self.q.dir("leased");
        for n in fsx::list(&leased)? {
            let p = leased.join(&n);
            match LeasedName::parse(&n) {
                Some(l) => {
                    let c = l.c.attempt;
                    self.add(&mut inv, State::Running, &p, &l.id, c);
                }
                None => self.quarantine(&p, None, "leased file name is not of the queue's form"),
            }
        }
        for st in [State::Done, State::Dead, State::Canceled] {
            let dir = self.q.dir(st.dir());
            for n in fsx::list(&dir)? {
                let p = dir.join(&n);
                match parse_terminal(&n) {
                    Some(id) => {
                        let id = id.to_owned();
                        self.add(&mut inv, st, &p, &id, 0);
                    }
                    None => self.quarantine(
                        &p,
                        None,
                        &format!("{} file name is not of the queue's form", st.dir()),
                    ),
                }
            }
        }
        Ok(inv)
    }

    /// One pending segment `n` at `sp`: its job files, or the segment is
    /// quarantined if it is not one.
    fn segment(&mut self, inv: &mut Inventory, sp: &Path, n: &str) -> Result<()> {
        let Ok(m) = fs::symlink_metadata(sp) else {
            return Ok(());
        };
        if Key::parse(n).is_none() || !m.is_dir() {
            self.quarantine(sp, None, "not a pending segment (bad name, symlink or not a directory)");
            return Ok(());
        }
        for n in fsx::list(sp)? {
            self.queued(inv, State::Pending, &sp.join(&n), &n);
        }
        Ok(())
    }

    fn queued(&mut self, inv: &mut Inventory, st: State, p: &Path, n: &str) {
        match QueuedName::parse(n) {
            Some(q) => {
                if let Some(job) = self.add(inv, st, p, &q.key.id, q.c.attempt)
                    && st == State::Waiting
                {
                    inv.waiting.push((q.key.id.clone(), job.after.clone()));
                }
            }
            None => self.quarantine(
                p,
                None,
                &format!("{} file name is not of the queue's form", st.dir()),
            ),
        }
    }

    /// Check one job file and record it.
    fn add(
        &mut self,
        inv: &mut Inventory,
        st: State,
        p: &Path,
        id: &str,
        attempt: u32,
    ) -> Option<Box<Job>> {
        let (job, m, newer) = match self.check(p, id) {
            Check::Ok(j, m) => (Some(j), m, false),
            Check::Newer(m) => (None, m, true),
            Check::Skip => return None,
        };
        inv.newer_seen |= newer;
        if let Some(r) = job.as_ref().and_then(|j| j.env_ref.clone()) {
            inv.env_refs.insert(r);
        }
        inv.jobs.entry(id.to_owned()).or_default().push(Found {
            state: st,
            path: p.to_path_buf(),
            attempt,
            ino: (m.dev(), m.ino()),
            newer,
        });
        job
    }

    /// R5: a job file must be a regular file only we can write, holding a
    /// job record whose id is the one its name says.
    fn check(&mut self, p: &Path, id: &str) -> Check {
        let m = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(_) => return Check::Skip,
        };
        if m.file_type().is_symlink() {
            self.quarantine(p, Some(id), "a symlink where a job file belongs");
            return Check::Skip;
        }
        if !m.is_file() {
            self.quarantine(p, Some(id), "not a regular file");
            return Check::Skip;
        }
        if self.q.check_meta(p, &m).is_err() {
            let why = format!(
                "writable by another user (owner uid {}, mode {:o})",
                m.uid(),
                m.mode() & 0o7777
            );
            self.quarantine(p, Some(id), &why);
            return Check::Skip;
        }
        let bytes = match fsx::read_capped(p, MAX_RECORD + 4096) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Check::Skip,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.quarantine(p, Some(id), &format!("not a job record: {e}"));
                return Check::Skip;
            }
            Err(e) => {
                self.errors.push(Error::io("read", p, e));
                return Check::Skip;
            }
        };
        if crate::job::newer_format(&bytes) {
            return Check::Newer(m);
        }
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.quarantine(p, Some(id), &format!("not valid JSON: {e}"));
                return Check::Skip;
            }
        };
        let job: Job = match serde_json::from_value(v) {
            Ok(j) => j,
            Err(e) => {
                self.quarantine(p, Some(id), &format!("not a job record: {e}"));
                return Check::Skip;
            }
        };
        if job.id != id || !is_valid_id(&job.id) {
            self.quarantine(
                p,
                Some(id),
                &format!("the record says id {:?}, its file name says {id}", job.id),
            );
            return Check::Skip;
        }
        Check::Ok(Box::new(job), m)
    }

    /// R4: one id, several names. Keep the winner; a second name of the
    /// same file (a hard link) is unlinked, a second file is quarantined.
    pub(crate) fn duplicates(&mut self, inv: &Inventory) {
        let mut dups: Vec<(&String, &Vec<Found>)> =
            inv.jobs.iter().filter(|(_, v)| v.len() > 1).collect();
        dups.sort_by(|a, b| a.0.cmp(b.0));
        for (id, founds) in dups {
            let mut v = founds.clone();
            v.sort_by_key(|f| std::cmp::Reverse(rank(f)));
            let winner = v[0].clone();
            for loser in &v[1..] {
                if winner.newer || loser.newer {
                    continue;
                }
                // The loser first: a file that moved from it to the winner's
                // name shows one inode, once.
                let Ok(lm) = fs::symlink_metadata(&loser.path) else {
                    continue;
                };
                let Ok(wm) = fs::symlink_metadata(&winner.path) else {
                    continue;
                };
                let (l, w) = ((lm.dev(), lm.ino()), (wm.dev(), wm.ino()));
                if l != loser.ino {
                    continue; // replaced meanwhile
                }
                if l == w {
                    if lm.nlink() < 2 {
                        continue; // it moved while we looked
                    }
                    if !self.o.dry_run
                        && let Err(e) = fsx::remove(&loser.path)
                    {
                        self.errors.push(e);
                        continue;
                    }
                    let why = format!("a second name of {}", winner.path.display());
                    self.emit("remove-duplicate", Some(id), &loser.path, why);
                    continue;
                }
                let why = format!(
                    "job {id} is also {} at {} (that one is kept)",
                    winner.state.as_str(),
                    winner.path.display()
                );
                crate::failpoint!("gc.mid_dedupe");
                self.quarantine(&loser.path, Some(id), &why);
            }
        }
    }
}
