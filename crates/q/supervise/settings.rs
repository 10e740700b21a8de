//! Changes asked of a live supervisor (`q-ctl workers N`, `q-ctl slots
//! NAME=N`, `q-ctl limit NAME=N`, `q-ctl rate [NAME=]N/s`;
//! `q_queue::supervisor`). Every second it
//! takes the asks left for it, applies them, and publishes its record
//! again (which tells q-ctl they were applied). They last until it exits.
//!
//! More workers: new positions, started at once. Fewer: the workers beyond
//! the count are retired (SIGUSR1: no more claims, the running job runs to
//! its end, then the worker exits) and their positions let go as they exit;
//! no job is stopped. New slots, limits or rates: each worker is retired the same
//! way and started again at once with them. A worker of the old settings
//! and one of the new share the slot files, so a slot is never run twice.

use super::pool;
use super::sup::{Mode, Sup};
use q_queue::supervisor::Settings;
use serde_json::json;
use std::time::Instant;

impl Sup {
    /// Publish what we are now; a failure is said, not fatal.
    pub(super) fn publish(&mut self) {
        if let Err(e) = self.q.publish_supervisor(&self.me) {
            self.rep.error(&format!("cannot publish this supervisor's settings (q-ctl workers cannot reach it): {e}"));
        }
    }

    /// Take the asks left for us, apply them, publish.
    pub(super) fn take_asks(&mut self) {
        self.upkeep.last_asks = Instant::now();
        let asks = match self.q.take_supervisor_asks(&self.me.id) {
            Ok(a) => a,
            Err(e) => return self.rep.error(&format!("cannot read the changes asked of this supervisor: {e}")),
        };
        if asks.is_empty() {
            return;
        }
        let before = self.me.settings.clone();
        self.me.apply(&asks);
        let now = self.me.settings.clone();
        self.apply_settings(&before, &now);
        self.publish();
        self.rep.event("settings-changed", None, Self::me(), json!({"workers": now.workers, "slots": now.slots, "limits": now.limits, "rate": now.rate, "rates": now.rates}));
        if !self.rep.events {
            self.rep.note(&describe(&before, &now));
        }
    }

    fn apply_settings(&mut self, before: &Settings, now: &Settings) {
        if before.workers_differ(now) {
            self.workers.cmd.settings = now.clone();
            let pairs = |m: &std::collections::BTreeMap<String, u32>| m.iter().map(|(k, n)| (k.clone(), *n)).collect::<Vec<_>>();
            self.idle.fit = crate::cli::slot_totals(&pairs(&now.slots), &pairs(&now.limits)).map(|total| q_queue::slots::Fit { total, free: Default::default() });
            for s in &mut self.workers.slots {
                if let Some(pid) = s.pid
                    && !s.retiring
                {
                    s.retiring = true;
                    pool::retire_worker(pid, s.pid_start);
                    self.rep.event("worker-retiring", Some(&s.worker_id), Some(pid), json!({}));
                }
            }
        }
        self.set_workers(now.workers as usize);
    }

    /// Keep `n` workers from now on.
    fn set_workers(&mut self, n: usize) {
        let n = n.max(1);
        self.workers.target = n;
        let host = q_queue::ident::host().host.clone();
        let start = (self.mode == Mode::Running).then(Instant::now);
        while self.workers.slots.len() < n {
            let id = (1..).map(|k| format!("{host}-w{k}")).find(|id| !self.workers.owns(id)).expect("a free worker id");
            self.workers.slots.push(pool::Slot::new(id, start));
        }
        let mut k = n;
        while k < self.workers.slots.len() {
            let s = &mut self.workers.slots[k];
            match s.pid {
                None => {
                    self.workers.slots.remove(k);
                    continue;
                }
                Some(pid) if !s.retiring => {
                    s.retiring = true;
                    pool::retire_worker(pid, s.pid_start);
                    self.rep.event("worker-retiring", Some(&s.worker_id.clone()), Some(pid), json!({}));
                }
                Some(_) => {}
            }
            k += 1;
        }
    }
}

/// "workers 2 → 4, slots gpu=2 → gpu=1", for a note.
fn describe(before: &Settings, now: &Settings) -> String {
    let mut parts = Vec::new();
    if before.workers != now.workers {
        parts.push(format!("workers {} → {}", before.workers, now.workers));
    }
    if before.slots != now.slots {
        parts.push(format!("slots {} → {}", list(&before.slots), list(&now.slots)));
    }
    if before.limits != now.limits {
        parts.push(format!("limits {} → {}", list(&before.limits), list(&now.limits)));
    }
    if before.rate != now.rate {
        parts.push(format!("rate {} → {}", before.rate.as_deref().unwrap_or("none"), now.rate.as_deref().unwrap_or("none")));
    }
    if before.rates != now.rates {
        parts.push(format!("group rates {} → {}", list(&before.rates), list(&now.rates)));
    }
    if parts.is_empty() {
        return "settings asked by q-ctl: no change".to_owned();
    }
    // Only fewer workers, or workers started again, wait for running jobs.
    let waits = now.workers < before.workers || before.workers_differ(now);
    let then = if waits { "; running jobs finish first" } else { "" };
    format!("changed by q-ctl: {} (until this supervisor exits{then})", parts.join(", "))
}

/// `gpu=2,mem=4`, or `none`.
fn list<V: std::fmt::Display>(m: &std::collections::BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
