//! Spaced starts (`q-supervise --rate N/s`): the workers of a queue on one
//! host take turns through one lock file, `rate` in the host's slot
//! directory, which holds the time slot of the last start (Unix ms,
//! decimal). A worker locks it (blocking) and takes the next slot: one
//! interval after the last, or now when the last start is more than two
//! intervals ago (the starts keep to their grid through a start that came
//! late, and begin a new one after a pause). It waits for that time,
//! claims, records the slot if it claimed, and unlocks. A worker that dies
//! lets go of the lock with it; a lost or unreadable slot is "long ago".
//!
//! Per group (`--rate NAME=N/s`): one file per group, `rate.<NAME>`, with
//! the same content. A worker does not wait for a group's turn: before each
//! claim it tries each group's lock (non-blocking); a group whose next slot
//! is due now is free for this claim (the claim rule's [`Res::Rate`]),
//! others are unlocked at once and their jobs wait, holding back only later
//! jobs of their group. If the worker claims a job of a group it holds, it
//! records the slot; then it unlocks them all.

use crate::error::{IoContext, Result};
use crate::slots::Res;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

pub struct Rate {
    path: PathBuf,
    interval_ms: u64,
}

/// A worker's turn to claim, held until dropped.
pub struct Turn {
    file: File,
    path: PathBuf,
    slot: i64,
}

impl Rate {
    /// `dir`: the host's slot directory ([`crate::Backend::slot_dir`]).
    pub fn new(dir: PathBuf, interval_ms: u64) -> Rate {
        Rate { path: dir.join("rate"), interval_ms }
    }

    /// Wait for this worker's turn: `None` when `stop` said to stop first.
    pub fn turn(&self, stop: &dyn Fn() -> bool) -> Result<Option<Turn>> {
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).ctx("create", d)?;
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path).ctx("open", &self.path)?;
        file.lock().ctx("lock", &self.path)?;
        let due = due(&mut file, self.interval_ms, crate::time::now_ms());
        loop {
            if stop() {
                return Ok(None);
            }
            let now = crate::time::now_ms();
            if now >= due {
                return Ok(Some(Turn { file, path: self.path.clone(), slot: due }));
            }
            std::thread::sleep(Duration::from_millis(((due - now) as u64).min(50)));
        }
    }
}

impl Turn {
    /// A job was claimed in this turn: the next starts one interval later.
    pub fn started(mut self) -> Result<()> {
        let slot = self.slot.to_string();
        let w = self.file.set_len(0).and_then(|()| self.file.rewind()).and_then(|()| self.file.write_all(slot.as_bytes()));
        w.map_err(|e| crate::Error::io("write", &self.path, e))
    }
}

/// The slot of the next start: one interval after the last recorded in
/// `file`, or now when that is more than one interval past.
fn due(file: &mut File, interval_ms: u64, now: i64) -> i64 {
    let mut s = String::new();
    let _ = file.read_to_string(&mut s);
    let last: i64 = s.trim().parse().unwrap_or(0);
    let next = last.saturating_add(interval_ms as i64);
    if now - next < interval_ms as i64 { next } else { now }
}

/// The per-group rates of a worker (`--rate NAME=N/s`).
pub struct GroupRates {
    dir: PathBuf,
    /// Group → interval (ms).
    groups: BTreeMap<String, u64>,
}

/// The turns a worker holds for one claim, and when the next of the
/// others is due.
#[derive(Default)]
pub struct Turns {
    held: BTreeMap<String, Turn>,
    /// How long until a group not held now may be due (its lock busy, or
    /// its slot ahead).
    pub next_in: Option<Duration>,
}

impl GroupRates {
    /// `dir`: the host's slot directory; `groups`: group → starts per second.
    pub fn new(dir: PathBuf, groups: BTreeMap<String, f64>) -> GroupRates {
        GroupRates { dir, groups: groups.into_iter().map(|(g, r)| (g, ((1000.0 / r).round() as u64).max(1))).collect() }
    }

    /// What a claim's [`crate::slots::Fit`] adds: every group's turn in the
    /// totals (one).
    pub fn totals(&self) -> BTreeMap<Res, u32> {
        self.groups.keys().map(|g| (Res::Rate(g.clone()), 1)).collect()
    }

    /// Try every group's turn (never waits).
    pub fn try_turns(&self) -> Result<Turns> {
        std::fs::create_dir_all(&self.dir).ctx("create", &self.dir)?;
        let mut out = Turns::default();
        let mut later = |d: Duration| out.next_in = Some(out.next_in.map_or(d, |n| n.min(d)));
        let mut held = BTreeMap::new();
        for (g, interval) in &self.groups {
            let path = self.dir.join(format!("rate.{g}"));
            let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).ctx("open", &path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    later(Duration::from_millis((*interval).min(20)));
                    continue;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(crate::Error::io("lock", &path, e)),
            }
            let now = crate::time::now_ms();
            let slot = due(&mut file, *interval, now);
            if slot <= now {
                held.insert(g.clone(), Turn { file, path, slot });
            } else {
                later(Duration::from_millis((slot - now) as u64));
            }
        }
        out.held = held;
        Ok(out)
    }
}

impl Turns {
    /// The free part of a claim's fit: the groups whose turn is held.
    pub fn free(&self) -> BTreeMap<Res, u32> {
        self.held.keys().map(|g| (Res::Rate(g.clone()), 1)).collect()
    }

    /// A job of `group` was claimed: record its start (the others are let
    /// go unchanged when this is dropped).
    pub fn started(mut self, group: Option<&str>) -> Result<()> {
        match group.and_then(|g| self.held.remove(g)) {
            Some(t) => t.started(),
            None => Ok(()),
        }
    }
}
