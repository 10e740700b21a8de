//! Reaching a live supervisor (`q-ctl workers N`, `q-ctl slots gpu=N`,
//! `q-ctl limit io=N`): what a supervisor publishes of itself, and the
//! changes asked of it, through the backend so that they work on every
//! backend and, on PostgreSQL, from any host.
//!
//! A supervisor publishes a [`Supervisor`] record when it starts and after
//! each change it applied: who it is (an id of its own, made at its start,
//! and its holder: host, pid), its [`Settings`] now, and the asks it
//! applied. A record counts only while its supervisor holds the supervisor
//! lock ([`crate::Singleton::Supervisor`]). `q-ctl` leaves a [`SupAsk`]
//! addressed to that id; the supervisor takes the asks addressed to it at
//! its reclaim cadence (every second), applies them in order, and publishes
//! again, naming them in `applied`. An ask addressed to an earlier
//! supervisor is dropped unapplied: a change lasts until the supervisor
//! restarts. Nothing here is a job's state: losing any of it loses only a
//! change not yet applied.
//!
//! The directory (docs/FORMAT.md, "Reaching a supervisor"):
//! `locks/supervise.json` the record (replaced by a rename), and
//! `locks/supervise.ask.<ULID>.json` one ask each (published with a
//! no-replace rename, removed by the supervisor once read).

use crate::error::{IoContext, Result};
use crate::lock::Holder;
use crate::queue::Queue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many applied asks a record names (the newest).
pub const APPLIED_KEPT: usize = 16;

/// What a supervisor runs with, and what `q-ctl` may change while it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Worker processes it keeps.
    pub workers: u32,
    /// `--slots`: NAME → N.
    #[serde(default)]
    pub slots: BTreeMap<String, u32>,
    /// `--limit`: group → N.
    #[serde(default)]
    pub limits: BTreeMap<String, u32>,
    /// `--rate N/s`: starts of all jobs, as `N/s` (none: not limited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// `--rate NAME=N/s`: group → starts of its jobs, as `N/s`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rates: BTreeMap<String, String>,
}

impl Settings {
    /// Do workers started with `self` take jobs otherwise than with
    /// `other` (slots, limits or rates)? Then they are started again.
    pub fn workers_differ(&self, other: &Settings) -> bool {
        self.slots != other.slots || self.limits != other.limits || self.rate != other.rate || self.rates != other.rates
    }

    /// The settings after an ask: its worker count if it has one; its
    /// slots, limits and rates replace those of the same names (0: none).
    pub fn apply(&mut self, a: &SupAsk) {
        if let Some(n) = a.workers {
            self.workers = n;
        }
        if let Some(r) = &a.rate {
            self.rate = (r != NO_RATE).then(|| r.clone());
        }
        for (k, r) in &a.rates {
            if r == NO_RATE {
                self.rates.remove(k);
            } else {
                self.rates.insert(k.clone(), r.clone());
            }
        }
        for (into, from) in [(&mut self.slots, &a.slots), (&mut self.limits, &a.limits)] {
            for (k, n) in from {
                if *n == 0 {
                    into.remove(k);
                } else {
                    into.insert(k.clone(), *n);
                }
            }
        }
    }
}

/// What a live supervisor published of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervisor {
    /// Made at its start (a ULID); asks are addressed to it.
    pub id: String,
    /// Who it is: host, boot, pid.
    pub holder: Holder,
    pub settings: Settings,
    /// The ids of the asks it applied, the newest last ([`APPLIED_KEPT`]).
    #[serde(default)]
    pub applied: Vec<String>,
}

impl Supervisor {
    /// This process, starting as a supervisor with `settings`.
    pub fn me(settings: Settings) -> Supervisor {
        Supervisor { id: crate::id::new_id(), holder: Holder::me(), settings, applied: Vec::new() }
    }

    /// Apply asks (taken with [`crate::Backend::take_supervisor_asks`]),
    /// in order, and remember them as applied.
    pub fn apply(&mut self, asks: &[SupAsk]) {
        for a in asks {
            self.settings.apply(a);
            self.applied.push(a.id.clone());
        }
        let extra = self.applied.len().saturating_sub(APPLIED_KEPT);
        self.applied.drain(..extra);
    }
}

/// A change asked of the live supervisor whose id is `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupAsk {
    /// A ULID of its own (asks apply in id order).
    pub id: String,
    /// The supervisor's id ([`Supervisor::id`]).
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, u32>,
    /// The rate of all jobs, as `N/s`; [`NO_RATE`]: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Group → its rate, as `N/s`; [`NO_RATE`]: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rates: BTreeMap<String, String>,
}

/// A rate in an ask that removes the rate (`q-ctl rate mail=0`).
pub const NO_RATE: &str = "0";

/// The answer when the supervisor asked is gone, or was replaced.
pub(crate) fn gone(to: &str) -> crate::Error {
    crate::Error::new(crate::Kind::Busy, format!("supervisor {to} no longer serves the queue (it stopped or restarted); look again"))
}

const RECORD: &str = "supervise.json";
const ASK_PREFIX: &str = "supervise.ask.";

impl Queue {
    /// The record of the live supervisor, if one holds the lock and its
    /// record is its own (not one left by a dead predecessor).
    pub(crate) fn supervisors(&self, locked: bool) -> Result<Vec<Supervisor>> {
        if !locked {
            return Ok(Vec::new());
        }
        let path = self.dir("locks").join(RECORD);
        let bytes = match crate::fsx::read_capped(&path, 64 * 1024) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(crate::Error::io("read", &path, e)),
        };
        let Ok(s) = serde_json::from_slice::<Supervisor>(&bytes) else { return Ok(Vec::new()) };
        if s.holder.alive() == Some(false) {
            return Ok(Vec::new());
        }
        Ok(vec![s])
    }

    /// Replace the record (a rename over it: readers see the old or the new).
    pub(crate) fn publish_supervisor(&self, s: &Supervisor) -> Result<()> {
        crate::fsx::mkdir(&self.dir("locks"))?;
        let mut bytes = serde_json::to_vec(s).unwrap_or_default();
        bytes.push(b'\n');
        let tmp = crate::fsx::stage(&self.tmp(), &bytes, false)?;
        let dest = self.dir("locks").join(RECORD);
        std::fs::rename(&tmp, &dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        }).ctx("rename", &tmp)
    }

    /// Remove the record of supervisor `id` (exiting, under the lock), if
    /// it is still its own; and the asks left for it, never to be applied.
    pub(crate) fn unpublish_supervisor(&self, id: &str) -> Result<()> {
        let path = self.dir("locks").join(RECORD);
        let mine = crate::fsx::read_capped(&path, 64 * 1024).ok().and_then(|b| serde_json::from_slice::<Supervisor>(&b).ok()).is_some_and(|s| s.id == id);
        if mine {
            crate::fsx::remove(&path)?;
        }
        self.take_supervisor_asks(id).map(drop)
    }

    /// Leave an ask for the live supervisor it is addressed to.
    pub(crate) fn ask_supervisor(&self, a: &SupAsk, live: &[Supervisor]) -> Result<()> {
        if !live.iter().any(|s| s.id == a.to) {
            return Err(gone(&a.to));
        }
        crate::id::check_id(&a.id)?;
        let bytes = serde_json::to_vec(a).unwrap_or_default();
        let dest = self.dir("locks").join(format!("{ASK_PREFIX}{}.json", a.id));
        crate::fsx::publish(&self.tmp(), &dest, &bytes, false)?;
        Ok(())
    }

    /// The asks addressed to supervisor `id`, oldest first; every ask file
    /// is removed once read (those addressed to another supervisor too: a
    /// change lasts until the supervisor restarts).
    pub(crate) fn take_supervisor_asks(&self, id: &str) -> Result<Vec<SupAsk>> {
        let dir = self.dir("locks");
        let mut names: Vec<String> = crate::fsx::list(&dir)?.into_iter().filter(|n| n.starts_with(ASK_PREFIX) && n.ends_with(".json")).collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let path = dir.join(&n);
            let read = crate::fsx::read_capped(&path, 64 * 1024).ok().and_then(|b| serde_json::from_slice::<SupAsk>(&b).ok());
            crate::fsx::remove(&path)?;
            if let Some(a) = read.filter(|a| a.to == id) {
                out.push(a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_apply_in_order_and_zero_removes() {
        let mut s = Supervisor::me(Settings { workers: 2, slots: [("gpu".into(), 2)].into(), ..Settings::default() });
        let to = s.id.clone();
        let ask = |id: &str, w: Option<u32>, slots: &[(&str, u32)]| SupAsk { id: id.into(), to: to.clone(), workers: w, slots: slots.iter().map(|(k, n)| (k.to_string(), *n)).collect(), limits: BTreeMap::new(), ..SupAsk::default() };
        let asks = [ask("a", Some(4), &[]), ask("b", None, &[("gpu", 0), ("mem", 8)]), ask("c", Some(3), &[])];
        s.apply(&asks);
        assert_eq!(s.settings.workers, 3);
        assert_eq!(s.settings.slots, [("mem".to_string(), 8)].into());
        assert_eq!(s.applied, ["a", "b", "c"]);
        // Rates: set, replaced, removed with "0"; the others kept.
        let rate = |id: &str, all: Option<&str>, groups: &[(&str, &str)]| SupAsk {
            id: id.into(),
            to: to.clone(),
            rate: all.map(str::to_owned),
            rates: groups.iter().map(|(k, r)| (k.to_string(), r.to_string())).collect(),
            ..SupAsk::default()
        };
        s.apply(&[rate("d", Some("2/s"), &[("mail", "5/s"), ("api", "1/s")])]);
        assert_eq!((s.settings.rate.as_deref(), s.settings.rates.len()), (Some("2/s"), 2));
        s.apply(&[rate("e", Some(NO_RATE), &[("mail", NO_RATE), ("api", "3/s")])]);
        assert_eq!(s.settings.rate, None);
        assert_eq!(s.settings.rates, [("api".to_string(), "3/s".to_string())].into());
        assert_eq!(s.settings.workers, 3, "a rate leaves the rest");
        for i in 0..40 {
            s.apply(&[ask(&format!("x{i:02}"), None, &[])]);
        }
        assert_eq!(s.applied.len(), APPLIED_KEPT);
        assert_eq!(s.applied.last().unwrap(), "x39");
    }
}
