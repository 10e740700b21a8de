//! The worker positions of a supervisor: start a worker, restart one that
//! ended after its backoff (reclaiming its jobs first, in the same pass),
//! reap every ended child, and kill job processes left to us.

use super::pool;
use super::sup::{Mode, Sup, Workers};
use anyhow::{Result, anyhow};
use q_queue::time;
use serde_json::json;
use std::time::{Duration, Instant};

impl Workers {
    /// The worker id of a worker process of ours.
    pub(super) fn worker_of(&self, pid: i32) -> Option<&str> {
        self.pid_worker.get(&pid).map(String::as_str)
    }

    /// Is this worker id one of our positions?
    pub(super) fn owns(&self, worker_id: &str) -> bool {
        self.slots.iter().any(|s| s.worker_id == worker_id)
    }

    /// Workers running now.
    pub(super) fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }
}

impl Sup {
    /// Start (or restart) worker position `k`.
    pub(super) fn start_worker(&mut self, k: usize) -> Result<()> {
        let worker_id = self.workers.slots[k].worker_id.clone();
        match self.workers.cmd.spawn(&worker_id, &self.workers.tx) {
            Ok((pid, start)) => {
                let s = &mut self.workers.slots[k];
                s.pid = Some(pid);
                s.pid_start = start;
                s.started = Instant::now();
                s.restart_at = None;
                let restarts = s.restarts;
                self.workers.ever_started = true;
                self.workers.open_pipes += 2;
                self.workers.pid_worker.insert(pid, worker_id.clone());
                if let Some(w) = self.wd.as_mut() {
                    w.worker(pid, start);
                }
                self.rep.event(
                    "worker-started",
                    Some(&worker_id),
                    Some(pid),
                    json!({"restarts": restarts}),
                );
                Ok(())
            }
            Err(e) if !self.workers.ever_started => Err(anyhow!(
                "cannot start the worker {}: {e} (is q installed completely?)",
                self.workers.cmd.exe.display()
            )),
            Err(e) => {
                self.rep
                    .error(&format!("cannot start worker {worker_id}: {e}"));
                self.schedule_restart(k, None);
                Ok(())
            }
        }
    }

    pub(super) fn restart_due(&mut self) -> Result<()> {
        let now = Instant::now();
        for k in 0..self.workers.slots.len() {
            if self.workers.slots[k].pid.is_none() && self.workers.slots[k].restart_at.is_some_and(|t| t <= now) {
                self.start_worker(k)?;
            }
        }
        Ok(())
    }

    pub(super) fn schedule_restart(&mut self, k: usize, old_pid: Option<i32>) {
        let base = self.workers.base_ms;
        let s = &mut self.workers.slots[k];
        if s.started.elapsed() >= Duration::from_millis(base.saturating_mul(pool::HEALTHY_FACTOR)) {
            s.restarts = 0;
        }
        let delay = pool::backoff_ms(base, s.restarts);
        s.restarts += 1;
        s.restart_at = Some(Instant::now() + Duration::from_millis(delay));
        let (id, restarts) = (s.worker_id.clone(), s.restarts);
        self.rep.event(
            "worker-restarting",
            Some(&id),
            old_pid,
            json!({"delay_ms": delay, "restarts": restarts}),
        );
    }

    /// Reap ended children: workers (restart them, reclaim their jobs at
    /// once), the watchdog, and orphaned job processes.
    pub(super) fn reap(&mut self) {
        for e in pool::reap() {
            if self.hooks.as_ref().is_some_and(|h| h.reaped(e.pid, e.status)) {
                continue;
            }
            if self.wd.as_ref().is_some_and(|w| w.pid == e.pid) {
                self.rep.error("the watchdog process ended; if this supervisor is killed, its jobs are recovered by the next supervisor or q-gc");
                self.wd = None;
                continue;
            }
            let Some(k) = self.workers.slots.iter().position(|s| s.pid == Some(e.pid)) else {
                continue;
            };
            let (id, ran) = (
                self.workers.slots[k].worker_id.clone(),
                self.workers.slots[k].started.elapsed(),
            );
            self.workers.slots[k].pid = None;
            if let Some(w) = self.wd.as_mut() {
                w.gone(e.pid);
            }
            self.rep.event(
                "worker-exited",
                Some(&id),
                Some(e.pid),
                json!({"exit_code": e.code, "signal": e.signal, "ran_ms": ran.as_millis() as u64}),
            );
            // Its claims are provably dead now: requeue them in this pass.
            self.reclaim();
            if k >= self.workers.target {
                // Let go (q-ctl workers lowered the count).
                self.workers.slots.remove(k);
                continue;
            }
            if std::mem::take(&mut self.workers.slots[k].retiring) {
                // Retired to take new settings: again at once, with them.
                if self.mode == Mode::Running {
                    self.workers.slots[k].restart_at = Some(Instant::now());
                }
                continue;
            }
            if self.mode == Mode::Running {
                if e.code != Some(0) {
                    let how = match (e.code, e.signal) {
                        (Some(c), _) => format!("exited with status {c}"),
                        (_, Some(s)) => format!("was killed by signal {s}"),
                        _ => "ended".to_owned(),
                    };
                    let delay = pool::backoff_ms(
                        self.workers.base_ms,
                        if ran.as_millis() as u64 >= self.workers.base_ms.saturating_mul(pool::HEALTHY_FACTOR) {
                            0
                        } else {
                            self.workers.slots[k].restarts
                        },
                    );
                    if !self.rep.events {
                        self.rep.note(&format!(
                            "worker {id} (pid {}) {how}; restarting it in {}",
                            e.pid,
                            time::human_duration(delay)
                        ));
                    }
                }
                self.schedule_restart(k, Some(e.pid));
            }
        }
    }

    pub(super) fn kill_orphans(&mut self) {
        let keep: Vec<i32> = self.wd.as_ref().map(|w| w.pid).into_iter().collect();
        let killed = match &self.hooks {
            Some(h) => h.while_running(|hooks| pool::kill_orphans(&[&keep[..], hooks].concat())),
            None => pool::kill_orphans(&keep),
        };
        if killed > 0 {
            std::thread::sleep(Duration::from_millis(20));
            self.reap();
        }
    }
}
