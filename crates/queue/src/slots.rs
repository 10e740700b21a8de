//! Slots and group limits: what a job takes while it runs (`needs`,
//! `{"gpu": 1}`; `group`, limited by a supervisor's `--limit NAME=N`), and
//! the one rule that says which pending job a claimer with some slots free
//! takes ([`Filter`]), used by every backend's claim.
//!
//! The rule walks the candidates in claim order. A job that needs nothing
//! (no `needs`, no limited `group`) is taken as before. A job whose needs
//! touch a resource blocked earlier in the walk is skipped. A job whose
//! needs fit what is free is taken. A job that fits the totals but not what
//! is free now blocks its resources (so later jobs needing them do not
//! overtake it: a `gpu:2` job is not starved by a stream of `gpu:1` jobs)
//! and is skipped. A job that can never fit here (a slot the claimer does
//! not have, more than its total) is skipped and blocks nothing.
//!
//! Slots are host-local lock files, `<NAME>.<K>` (slot K, 0-based) and
//! `group.<NAME>.<K>`, in the queue's slot directory on this host
//! ([`crate::Backend::slot_dir`]). A worker takes every free one (a
//! non-blocking `flock`) before a claim, claims with what it holds, keeps
//! those its job takes and lets go of the rest ([`Grabbed::keep`]). A worker
//! that dies lets go with it: the kernel drops its locks.

use crate::error::{IoContext, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, TryLockError};
use std::path::PathBuf;

/// The most slots of one name a job may need, or a supervisor may have.
pub const MAX_SLOTS: u32 = 1024;

/// A slot or group name: `[a-z][a-z0-9_]*`, at most 32 characters (it
/// becomes part of a file name and of `Q_SLOT_<NAME>`).
pub fn check_name(s: &str) -> std::result::Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok { Ok(()) } else { Err(format!("{s:?} is not a name of lowercase letters, digits and _ (starting with a letter, at most 32)")) }
}

/// A resource a job may take: slots of a name, or a place in a limited group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Res {
    Slot(String),
    Group(String),
    /// The turn of group NAME under a per-group rate (`--rate NAME=N/s`):
    /// free when its next start is due ([`crate::rate::GroupRates`]).
    Rate(String),
}

/// A claimer's resources: the totals (`--slots`, `--limit`) and what is
/// free to it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fit {
    pub total: BTreeMap<Res, u32>,
    pub free: BTreeMap<Res, u32>,
}

impl Fit {
    /// What a job takes here: its needs, and a place in its group if the
    /// group is limited.
    pub fn demand(&self, needs: &BTreeMap<String, u32>, group: Option<&str>) -> Vec<(Res, u32)> {
        let limited = group.map(|g| Res::Group(g.to_owned())).filter(|g| self.total.contains_key(g));
        let rated = group.map(|g| Res::Rate(g.to_owned())).filter(|g| self.total.contains_key(g));
        needs.iter().map(|(k, n)| (Res::Slot(k.clone()), *n)).chain(limited.map(|g| (g, 1))).chain(rated.map(|g| (g, 1))).collect()
    }

    /// Can a job with this demand ever run here?
    pub fn can_fit(&self, demand: &[(Res, u32)]) -> bool {
        demand.iter().all(|(r, n)| self.total.get(r).is_some_and(|t| t >= n))
    }
}

/// What the rule says of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Not now: blocked, or waiting for its own slots.
    Skip,
    /// Never here.
    Never,
}

/// The claim rule over one walk of the candidates (module doc). Without a
/// [`Fit`] (a claimer without `--slots`), a job with needs never fits.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    fit: Fit,
    blocked: BTreeSet<Res>,
}

impl Filter {
    pub fn new(fit: Option<&Fit>) -> Filter {
        Filter { fit: fit.cloned().unwrap_or_default(), blocked: BTreeSet::new() }
    }

    pub fn judge(&mut self, needs: &BTreeMap<String, u32>, group: Option<&str>) -> Verdict {
        if needs.is_empty() && group.is_none() {
            return Verdict::Take;
        }
        let d = self.fit.demand(needs, group);
        if !self.fit.can_fit(&d) {
            return Verdict::Never;
        }
        if d.iter().any(|(r, _)| self.blocked.contains(r)) {
            return Verdict::Skip;
        }
        if d.iter().all(|(r, n)| self.fit.free.get(r).is_some_and(|f| f >= n)) {
            return Verdict::Take;
        }
        self.blocked.extend(d.into_iter().map(|(r, _)| r));
        Verdict::Skip
    }

    /// Can a job with these needs and group never run here (`Never`
    /// whatever the walk has seen)? Then a claimer passes over its whole
    /// class without reading it.
    pub fn never(&self, needs: &BTreeMap<String, u32>, group: Option<&str>) -> bool {
        let plain = needs.is_empty() && group.is_none();
        !plain && !self.fit.can_fit(&self.fit.demand(needs, group))
    }

    /// A job judged `Take` was claimed: what it takes is no longer free.
    pub fn taken(&mut self, needs: &BTreeMap<String, u32>, group: Option<&str>) {
        for (r, n) in self.fit.demand(needs, group) {
            if let Some(f) = self.fit.free.get_mut(&r) {
                *f = f.saturating_sub(n);
            }
        }
    }
}

/// A host's slots of one queue, as lock files in `dir`.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
    total: BTreeMap<Res, u32>,
}

/// The slots a worker took before a claim.
pub struct Grabbed {
    total: BTreeMap<Res, u32>,
    held: BTreeMap<Res, Vec<(u32, File)>>,
}

/// The slots a running job holds, until dropped; the environment that
/// tells the job which (`Q_SLOT_GPU=0,1`).
#[derive(Default)]
pub struct Kept {
    locks: Vec<File>,
    pub env: Vec<(String, String)>,
}

impl Kept {
    /// Does the job hold any slot or place of a group?
    pub fn holds_any(&self) -> bool {
        !self.locks.is_empty()
    }
}

impl Slots {
    pub fn new(dir: PathBuf, total: BTreeMap<Res, u32>) -> Slots {
        Slots { dir, total }
    }

    /// Take every free slot (non-blocking).
    pub fn grab(&self) -> Result<Grabbed> {
        std::fs::create_dir_all(&self.dir).ctx("create", &self.dir)?;
        let mut held: BTreeMap<Res, Vec<(u32, File)>> = BTreeMap::new();
        for (r, n) in &self.total {
            for k in 0..*n {
                let name = match r {
                    Res::Slot(s) => format!("{s}.{k}"),
                    Res::Group(g) => format!("group.{g}.{k}"),
                    Res::Rate(_) => break, // a turn, not a slot (crate::rate)
                };
                let path = self.dir.join(name);
                // A lock needs no write: read-only, so that the workers of
                // other users of a group-shared queue can share a slot file.
                let f = match File::open(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().create(true).truncate(false).write(true), 0o664).open(&path)
                    }
                    r => r,
                }
                .ctx("open", &path)?;
                match f.try_lock() {
                    Ok(()) => held.entry(r.clone()).or_default().push((k, f)),
                    Err(TryLockError::WouldBlock) => {}
                    Err(TryLockError::Error(e)) => return Err(crate::Error::io("lock", &path, e)),
                }
            }
        }
        Ok(Grabbed { total: self.total.clone(), held })
    }
}

impl Grabbed {
    /// What a claim may take with these slots.
    pub fn fit(&self) -> Fit {
        let free = self.held.iter().map(|(r, v)| (r.clone(), v.len() as u32)).collect();
        Fit { total: self.total.clone(), free }
    }

    /// Keep the lowest-numbered slots the job takes; let go of the rest.
    pub fn keep(mut self, needs: &BTreeMap<String, u32>, group: Option<&str>) -> Kept {
        let mut kept = Kept::default();
        for (r, n) in self.fit().demand(needs, group) {
            let Some(v) = self.held.get_mut(&r) else { continue };
            let take: Vec<(u32, File)> = v.drain(..(n as usize).min(v.len())).collect();
            if let Res::Slot(name) = &r {
                let ks: Vec<String> = take.iter().map(|(k, _)| k.to_string()).collect();
                kept.env.push((format!("Q_SLOT_{}", name.to_ascii_uppercase()), ks.join(",")));
            }
            kept.locks.extend(take.into_iter().map(|(_, f)| f));
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    fn fit(total: &[(&str, u32)], free: &[(&str, u32)]) -> Fit {
        let m = |v: &[(&str, u32)]| v.iter().map(|(k, n)| (Res::Slot(k.to_string()), *n)).collect();
        Fit { total: m(total), free: m(free) }
    }

    /// The rule: a job waiting for its slots blocks later jobs needing the
    /// same ones, not others; a job that can never fit blocks nothing.
    #[test]
    fn a_waiting_job_blocks_only_its_resources() {
        let f = fit(&[("gpu", 2), ("mem", 4)], &[("gpu", 1), ("mem", 4)]);
        let mut r = Filter::new(Some(&f));
        assert_eq!(r.judge(&needs(&[("tpu", 1)]), None), Verdict::Never);
        assert_eq!(r.judge(&needs(&[("gpu", 3)]), None), Verdict::Never);
        assert_eq!(r.judge(&needs(&[("gpu", 2)]), None), Verdict::Skip, "fits the totals, not what is free");
        assert_eq!(r.judge(&needs(&[("gpu", 1)]), None), Verdict::Skip, "blocked behind the gpu:2 job");
        assert_eq!(r.judge(&needs(&[("mem", 2)]), None), Verdict::Take);
        r.taken(&needs(&[("mem", 2)]), None);
        assert_eq!(r.judge(&needs(&[("mem", 3)]), None), Verdict::Skip, "2 of 4 left");
        assert_eq!(r.judge(&needs(&[("mem", 1)]), None), Verdict::Skip, "blocked behind the mem:3 job");
        assert_eq!(r.judge(&BTreeMap::new(), None), Verdict::Take, "jobs without needs are unaffected");
        assert_eq!(r.judge(&BTreeMap::new(), Some("render")), Verdict::Take, "an unlimited group");
        // Without slots, any need never fits.
        assert_eq!(Filter::new(None).judge(&needs(&[("gpu", 1)]), None), Verdict::Never);
    }

    #[test]
    fn groups_are_limited_like_slots() {
        let g = Res::Group("render".into());
        let f = Fit { total: [(g.clone(), 1)].into(), free: [(g, 0)].into() };
        let mut r = Filter::new(Some(&f));
        assert_eq!(r.judge(&BTreeMap::new(), Some("render")), Verdict::Skip);
        assert_eq!(r.judge(&BTreeMap::new(), Some("other")), Verdict::Take);
    }

    /// A group under a rate whose turn is not due waits, and holds back
    /// only later jobs of its group.
    #[test]
    fn a_rated_group_waits_for_its_turn() {
        let r = Res::Rate("mail".into());
        let mut f = Filter::new(Some(&Fit { total: [(r.clone(), 1)].into(), free: [(r.clone(), 0)].into() }));
        assert_eq!(f.judge(&BTreeMap::new(), Some("mail")), Verdict::Skip);
        assert_eq!(f.judge(&BTreeMap::new(), Some("other")), Verdict::Take);
        assert_eq!(f.judge(&BTreeMap::new(), None), Verdict::Take);
        let mut f = Filter::new(Some(&Fit { total: [(r.clone(), 1)].into(), free: [(r, 1)].into() }));
        assert_eq!(f.judge(&BTreeMap::new(), Some("mail")), Verdict::Take);
        f.taken(&BTreeMap::new(), Some("mail"));
        assert_eq!(f.judge(&BTreeMap::new(), Some("mail")), Verdict::Skip, "one start per turn");
    }

    #[test]
    fn names() {
        for ok in ["gpu", "a1", "big_mem"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "GPU", "1a", "a-b", "a.b", "a/b", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    /// Two holders of one slot directory share its slots; a holder's slots
    /// are free again once it lets go (drop, or death: the kernel).
    #[test]
    fn slots_are_shared_through_lock_files() {
        let d = tempfile::tempdir().unwrap();
        let s = Slots::new(d.path().join("slots"), [(Res::Slot("gpu".into()), 2)].into());
        let a = s.grab().unwrap();
        let kept = a.keep(&needs(&[("gpu", 1)]), None);
        assert_eq!(kept.env, [("Q_SLOT_GPU".to_string(), "0".to_string())]);
        let b = s.grab().unwrap();
        assert_eq!(b.fit().free[&Res::Slot("gpu".into())], 1);
        let kept_b = b.keep(&needs(&[("gpu", 1)]), None);
        assert_eq!(kept_b.env[0].1, "1");
        assert!(!s.grab().unwrap().fit().free.contains_key(&Res::Slot("gpu".into())), "none free");
        drop(kept);
        drop(kept_b);
        let c = s.grab().unwrap();
        assert_eq!(c.keep(&needs(&[("gpu", 2)]), None).env[0].1, "0,1");
    }
}
