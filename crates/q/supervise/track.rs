//! What a supervisor learns about jobs: the `result` lines its workers
//! print (outcomes, `job-finished`), the running claims it sees
//! (`job-claimed`, the progress view), and the leases it reclaims
//! (`lease-reclaimed`). The progress view is drawn from the same.

use super::sup::Sup;
use q_queue::{Entry, Reason, State, time};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Instant;

/// A running claim seen, for events and progress.
pub(super) struct Seen {
    pub(super) entry: Entry,
    pub(super) id: String,
    pub(super) attempt: u32,
    pub(super) worker_id: Option<String>,
    pub(super) pid: Option<i32>,
    pub(super) since_ms: i64,
}

impl Sup {
    /// A line on a worker's stdout: `result` lines tell how its jobs ended.
    pub(super) fn result_line(&mut self, pid: i32, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if v["type"] != "result" {
            return;
        }
        let (Some(id), Some(state)) =
            (v["id"].as_str(), v["state"].as_str().and_then(State::parse))
        else {
            return;
        };
        let reason = v["reason"].as_str().unwrap_or("").to_owned();
        if reason != Reason::LeaseLost.as_str() {
            if state.is_terminal() {
                self.track.finished += 1;
            }
            self.track.outcomes.insert(id.to_owned(), (state, Reason::parse(&reason)));
            if state.is_terminal()
                && let Some(h) = self.hooks.as_mut()
            {
                h.ended(&mut self.rep, id, line, state != State::Done);
            }
            if state.is_terminal() && state != State::Done
                && let Ok(r) = serde_json::from_value::<q_queue::ResultRecord>(v.clone())
            {
                self.failure_line(&r);
            }
        }
        let w = self.workers.worker_of(pid).map(str::to_owned);
        self.rep.event(
            "job-finished",
            w.as_deref(),
            Some(pid),
            json!({"id": id, "attempt": v["attempt"], "state": state.as_str(), "reason": reason,
                   "exit_code": v["exit_code"], "signal": v["signal"], "duration_ms": v["duration_ms"]}),
        );
    }

    /// One line on stderr for a job of ours that ended other than done
    /// (not with `-q`; `--events` has `job-finished` instead), so that
    /// under make, cron or CI the failed job is named.
    fn failure_line(&mut self, r: &q_queue::ResultRecord) {
        let line = crate::ended::line(r, None, Some(&self.common));
        self.say_failure(&line);
    }

    fn say_failure(&mut self, line: &str) {
        if !self.rep.events {
            self.rep.note(line);
        }
    }

    /// Move on waiting jobs whose dependencies ended but whose marker was
    /// lost (a power loss) or never written (an older q): at start and
    /// every [`super::sup::PROMOTE_EVERY`].
    pub(super) fn promote_stranded(&mut self) {
        self.upkeep.last_promote = Some(Instant::now());
        if let Err(e) = self.q.promote_stranded() {
            self.rep.error(&format!("promoting waiting jobs: {e}"));
        }
    }

    /// Reclaim claims whose owner is gone (a worker that died, or an
    /// expired lease anywhere).
    pub(super) fn reclaim(&mut self) {
        self.upkeep.last_reclaim = Instant::now();
        q_queue::failpoint!("supervise.before_reclaim");
        let list = match self.q.reclaim(false) {
            Ok(l) => l,
            Err(e) => return self.rep.error(&format!("reclaiming leases: {e}")),
        };
        for r in list {
            let key = (r.id.clone(), r.attempt);
            let (seen_w, pid) = self
                .track.claims
                .get(&key)
                .map_or((None, None), |s| (s.worker_id.clone(), s.pid));
            let w = r.worker_id.clone().or(seen_w);
            let ours = w
                .as_deref()
                .is_some_and(|w| self.workers.owns(w));
            if ours && r.state.is_terminal() {
                self.track.finished += 1;
                self.track.outcomes.insert(r.id.clone(), (r.state, Some(r.reason)));
                if r.state != State::Done {
                    let line = crate::ended::of_job(&self.q, &r.id, r.state, Some(&self.common));
                    self.say_failure(&line);
                }
            }
            self.rep.event(
                "lease-reclaimed",
                w.as_deref(),
                pid,
                json!({"id": r.id, "token": r.token, "state": r.state.as_str(), "reason": r.reason.as_str(), "why": r.why, "killed_group": r.killed_group}),
            );
        }
    }

    /// Notice new claims (job-claimed events, progress).
    pub(super) fn watch_claims(&mut self) {
        let Ok(running) = self.q.entries(&[State::Running]) else {
            return;
        };
        let keys: HashSet<(String, u32)> = running.iter().map(|e| (e.id.clone(), e.c.unwrap_or_default().attempt)).collect();
        self.track.claims.retain(|k, _| keys.contains(k));
        for e in running {
            let attempt = e.c.unwrap_or_default().attempt;
            let key = (e.id.clone(), attempt);
            if self.track.claims.contains_key(&key) {
                continue;
            }
            let Some(lease) = self.q.live_records(&e.id, attempt).0 else {
                continue;
            };
            let ours = lease
                .worker_id
                .as_deref()
                .is_some_and(|w| self.workers.owns(w));
            let local = lease.host == q_queue::ident::host().host;
            let seen = Seen {
                id: e.id.clone(),
                attempt,
                entry: e,
                worker_id: lease.worker_id.clone(),
                pid: local.then_some(lease.pid),
                since_ms: time::parse_time(&lease.claimed_at).unwrap_or_else(|_| time::now_ms()),
            };
            if ours {
                self.rep.event(
                    "job-claimed",
                    seen.worker_id.as_deref(),
                    seen.pid,
                    json!({"id": seen.id, "attempt": seen.attempt}),
                );
            }
            self.track.claims.insert(key, seen);
        }
    }

    /// The live progress block (terminal only).
    pub(super) fn draw(&mut self) {
        self.track.last_draw = Instant::now();
        let Ok(c) = self.q.counts() else { return };
        let paused = self.q.paused(time::now_ms()).is_some();
        let mut parts = vec![format!(
            "{}/{} workers{}",
            self.live(),
            self.workers.slots.len(),
            if paused { " (queue paused)" } else { "" }
        )];
        for (n, what, always) in [
            (c.ready, "ready", true),
            (c.scheduled, "scheduled", false),
            (c.waiting, "waiting", false),
            (c.held, "held", false),
            (c.running, "running", true),
            (c.done, "done", true),
            (c.dead, "dead", false),
            (c.canceled, "canceled", false),
        ] {
            if always || n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let mut lines = vec![format!("q-supervise: {}", parts.join(" · "))];
        let secs = self.track.started.elapsed().as_secs_f64().max(0.001);
        if self.track.finished > 0 {
            let rate = self.track.finished as f64 / secs;
            let left = c.ready + c.running;
            let eta = if rate > 0.0 && left > 0 {
                format!(
                    " · ETA {}",
                    time::human_duration((left as f64 / rate * 1000.0) as u64)
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "  {} finished here · {:.2} jobs/s{eta}",
                self.track.finished, rate
            ));
        }
        let now = time::now_ms();
        let mut running: Vec<(String, String, String, u64)> = Vec::new();
        for s in self.track.claims.values() {
            let Some(w) = s
                .worker_id
                .clone()
                .filter(|w| self.workers.owns(w))
            else {
                continue;
            };
            let label = self
                .track.labels
                .entry(s.id.clone())
                .or_insert_with(|| crate::table::label(&self.q, &s.entry))
                .clone();
            running.push((w, s.id.clone(), label, (now - s.since_ms).max(0) as u64));
        }
        running.sort();
        for (w, id, label, ms) in running {
            lines.push(format!("  {w}  {id}  {:>7}  {label}", time::human_duration(ms)));
        }
        self.rep.draw(&lines);
    }
}

/// Did a job whose last known state is this end badly (or leave a retry
/// that this supervisor did not wait for)?
pub(super) fn failed(st: State, reason: Option<Reason>) -> bool {
    match st {
        State::Dead | State::Canceled => true,
        State::Pending => reason.is_some_and(Reason::is_failure),
        _ => false,
    }
}
