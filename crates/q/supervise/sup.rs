//! The supervisor's state and main loop: start the workers, then react to
//! signals, worker output and ended children; reclaim every second; drain on
//! the first signal, stop at once on the second; with `--exit-on-idle`,
//! stop the workers when the queue is idle and exit once they are gone (if
//! it is still idle after letting go of the lock); finally clean up and
//! decide the exit status.

use super::pool::{self, Slot, WorkerCmd};
use super::report::Reporter;
use super::track::{Seen, failed};
use super::watchdog::Watchdog;
use super::{Ev, idle};
use crate::exit;
use anyhow::Result;
use q_queue::lock::{Acquired, LockGuard};
use crate::cli::Queue;
use q_queue::{Reason, Singleton, State, time};
use serde_json::json;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Running,
    /// Idle: workers were asked to stop; exit once they did (if still idle).
    Idle,
    /// Drained by a signal: exit when the workers are gone, or at `hard`.
    Draining {
        hard: Instant,
    },
    Stop,
}

/// The supervisor: the queue it serves and its loop's own state; each
/// other piece of state has one owner below.
pub(super) struct Sup {
    pub(super) q: Queue,
    pub(super) grace_ms: u64,
    pub(super) rx: Receiver<Ev>,
    pub(super) rep: Reporter,
    pub(super) wd: Option<Watchdog>,
    pub(super) guard: Option<LockGuard>,
    pub(super) mode: Mode,
    pub(super) signals: u32,
    /// The first signal was SIGINT (Ctrl-C): exit 130 unless all work was done.
    pub(super) interrupted: bool,
    pub(super) workers: Workers,
    pub(super) track: Track,
    pub(super) idle: IdleWatch,
    pub(super) upkeep: Upkeep,
    /// The shared options, for the `q-log` command a failure line names.
    pub(super) common: crate::cli::Common,
    /// `--on-finish`, `--on-fail`.
    pub(super) hooks: Option<super::hooks::Hooks>,
    /// What it publishes of itself (q-ctl workers, slots, limit change it).
    pub(super) me: q_queue::supervisor::Supervisor,
}

/// The worker positions and their processes.
pub(super) struct Workers {
    pub(super) cmd: WorkerCmd,
    pub(super) slots: Vec<Slot>,
    /// The restart backoff's base.
    pub(super) base_ms: u64,
    /// Where worker processes send their output lines.
    pub(super) tx: Sender<Ev>,
    pub(super) pid_worker: HashMap<i32, String>,
    /// Output pipes of workers not closed yet.
    pub(super) open_pipes: usize,
    pub(super) ever_started: bool,
    /// How many workers it keeps (positions beyond are let go as their
    /// workers exit).
    pub(super) target: usize,
}

/// What the supervisor learned of jobs (track.rs).
pub(super) struct Track {
    /// Final state and reason per job id, from the workers' result lines.
    pub(super) outcomes: HashMap<String, (State, Option<Reason>)>,
    /// (id, attempt) of a running claim → what we know of it.
    pub(super) claims: HashMap<(String, u32), Seen>,
    /// Jobs that ended (terminal result lines) under this supervisor.
    pub(super) finished: u64,
    pub(super) labels: HashMap<String, String>,
    pub(super) started: Instant,
    pub(super) last_draw: Instant,
}

/// `--exit-on-idle`: is the queue drained?
pub(super) struct IdleWatch {
    pub(super) exit_on_idle: bool,
    pub(super) horizon: Option<u64>,
    /// Idle looks in a row.
    pub(super) idle_seen: u32,
    pub(super) last_idle_check: Instant,
    pub(super) left_behind: Option<q_queue::Idle>,
    /// The loop ended because the queue was idle.
    pub(super) idle_exit: bool,
    /// The workers' slots and limits (their totals): due jobs they can
    /// never fit are not work.
    pub(super) fit: Option<q_queue::slots::Fit>,
}

/// When the periodic passes last ran.
pub(super) struct Upkeep {
    pub(super) last_reclaim: Instant,
    /// When waiting jobs were last looked at for stranded ones.
    pub(super) last_promote: Option<Instant>,
    /// When the asks of q-ctl were last looked for.
    pub(super) last_asks: Instant,
}

pub(super) const TICK: Duration = Duration::from_millis(200);

/// How often a supervisor looks for waiting jobs that a lost dependency
/// marker left behind (it reads every waiting job: not on every tick).
pub(super) const PROMOTE_EVERY: Duration = Duration::from_secs(300);
/// How often `--exit-on-idle` looks whether the queue drained (two idle
/// looks in a row end the run).
pub(super) const IDLE_TICK: Duration = Duration::from_millis(10);

impl Sup {
    pub(super) fn me() -> Option<i32> {
        Some(std::process::id() as i32)
    }

    pub(super) fn run(mut self) -> u8 {
        loop {
            self.started_event();
            let r = self.main_loop();
            let mut code = None;
            if let Err(e) = &r {
                self.rep.error(&format!("{e:#}"));
                code = Some(exit::code_of(e));
                self.stop_now();
            }
            let status = self.finish();
            if code.is_none() && self.idle.idle_exit && self.signals == 0 && self.busy_again() {
                // Work arrived as we let go of the lock, and we have it again.
                self.mode = Mode::Running;
                self.idle.idle_seen = 0;
                self.idle.idle_exit = false;
                continue;
            }
            if let Some(h) = self.hooks.take() {
                h.finish(&mut self.rep, Duration::from_millis(self.grace_ms));
            }
            if let Some(w) = self.wd.take() {
                w.bye();
            }
            if code.is_none() && self.interrupted && !self.all_work_done() {
                return exit::INTERRUPTED;
            }
            return code.unwrap_or(status);
        }
    }

    fn started_event(&mut self) {
        self.publish();
        let n = self.workers.slots.len();
        self.rep.event(
            "supervisor-started",
            None,
            Self::me(),
            json!({"workers": n, "queue": self.q.location().display()}),
        );
    }

    /// After an interrupt: had the drain nothing left to do (no job it
    /// handed back, nothing ready, running or due)?
    fn all_work_done(&self) -> bool {
        let requeued = self.track.outcomes.values().any(|(st, r)| *st == State::Pending && *r == Some(Reason::WorkerShutdown));
        !requeued && self.q.idle_for(self.idle.horizon, self.idle.fit.as_ref()).is_ok_and(|s| !s.busy)
    }

    /// After an idle exit let go of the lock: did work arrive meanwhile (and
    /// did we get the lock back)? A job pushed meanwhile is then either seen
    /// here, or its pusher (`q-push --start`) found no supervisor and started
    /// one.
    fn busy_again(&mut self) -> bool {
        if !self.q.idle_for(self.idle.horizon, self.idle.fit.as_ref()).is_ok_and(|s| s.busy) {
            return false;
        }
        match self
            .q
            .lock(Singleton::Supervisor, Duration::from_millis(200))
        {
            Ok(Acquired::Held(g)) => {
                self.guard = Some(g);
                true
            }
            _ => false, // another supervisor took over
        }
    }

    pub(super) fn main_loop(&mut self) -> Result<()> {
        self.reclaim();
        for k in 0..self.workers.slots.len() {
            self.start_worker(k)?;
        }
        loop {
            let wait = self.next_wakeup();
            if let Ok(ev) = self.rx.recv_timeout(wait) {
                self.handle(ev);
                while let Ok(ev) = self.rx.try_recv() {
                    self.handle(ev);
                }
            }
            self.reap();
            if self.upkeep.last_reclaim.elapsed() >= Duration::from_secs(1) {
                self.reclaim();
            }
            if self.upkeep.last_asks.elapsed() >= Duration::from_secs(1) {
                self.take_asks();
            }
            if self.upkeep.last_promote.is_none_or(|t| t.elapsed() >= PROMOTE_EVERY) {
                self.promote_stranded();
            }
            match self.mode {
                Mode::Running => {
                    self.restart_due()?;
                    if self.idle.exit_on_idle && self.idle.last_idle_check.elapsed() >= IDLE_TICK {
                        self.check_idle()?;
                    }
                }
                Mode::Idle => {
                    if self.live() == 0 && self.final_idle()? {
                        return Ok(());
                    }
                }
                Mode::Draining { hard } => {
                    if self.live() == 0 {
                        return Ok(());
                    }
                    if Instant::now() >= hard {
                        self.rep.note("workers did not stop in time; killing them");
                        self.stop_now();
                        return Ok(());
                    }
                }
                Mode::Stop => return Ok(()),
            }
            // Claims are watched for the events and the progress view only
            // (a listing of leased/ per wake-up is a cost per job).
            if self.rep.events || self.rep.progress {
                self.watch_claims();
            }
            if self.rep.progress && self.track.last_draw.elapsed() >= Duration::from_millis(500) {
                self.draw();
            }
        }
    }

    pub(super) fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let tick = if self.idle.exit_on_idle && self.mode == Mode::Running {
            IDLE_TICK.saturating_sub(self.idle.last_idle_check.elapsed())
        } else {
            TICK
        };
        self.workers.slots
            .iter()
            .filter_map(|s| s.restart_at)
            .map(|t| t.saturating_duration_since(now))
            .fold(tick, Duration::min)
    }

    pub(super) fn live(&self) -> usize {
        self.workers.live()
    }

    pub(super) fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Signal(s) if s == signal_hook::consts::SIGCHLD => {}
            Ev::Signal(s) => {
                self.signals += 1;
                if self.signals == 1 {
                    self.interrupted = s == signal_hook::consts::SIGINT;
                    self.drain();
                } else if self.mode != Mode::Stop {
                    self.stop_now();
                }
            }
            Ev::Line {
                pid,
                stderr: true,
                line,
            } => {
                let w = self.workers.worker_of(pid).map(str::to_owned);
                self.rep.relay(w.as_deref(), pid, &line);
            }
            Ev::Line {
                pid,
                stderr: false,
                line,
            } => self.result_line(pid, &line),
            Ev::Eof { .. } => self.workers.open_pipes = self.workers.open_pipes.saturating_sub(1),
        }
    }

    /// First SIGTERM/SIGINT: the workers drain themselves.
    pub(super) fn drain(&mut self) {
        let hard = Instant::now()
            + Duration::from_millis(self.grace_ms.saturating_mul(2))
            + Duration::from_secs(2);
        self.rep.event(
            "draining",
            None,
            Self::me(),
            json!({"grace_ms": self.grace_ms}),
        );
        if !self.rep.events {
            self.rep.note(&format!(
                "draining: running jobs get {} to finish (a second signal stops at once)",
                time::human_duration(self.grace_ms)
            ));
        }
        for s in &mut self.workers.slots {
            s.restart_at = None;
            if let Some(pid) = s.pid {
                pool::term_worker(pid, s.pid_start);
            }
        }
        self.mode = Mode::Draining { hard };
    }

    /// Second signal (or a drain past its deadline): kill the workers now,
    /// then reclaim their jobs (killing what is left of each) and requeue.
    pub(super) fn stop_now(&mut self) {
        self.rep.event("stopping", None, Self::me(), json!({}));
        for s in &mut self.workers.slots {
            s.restart_at = None;
            if let Some(pid) = s.pid {
                pool::kill_worker(pid, s.pid_start);
            }
        }
        let until = Instant::now() + Duration::from_secs(3);
        while self.live() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            self.mode = Mode::Stop;
            self.reap();
        }
        self.mode = Mode::Stop;
        self.reclaim();
        self.kill_orphans();
    }

    /// `--exit-on-idle`: look whether there is work left.
    pub(super) fn check_idle(&mut self) -> Result<()> {
        self.idle.last_idle_check = Instant::now();
        // A passing error while looking (a directory vanishing under a
        // concurrent rename) must not end a drain: say so, look again later.
        let s = match self.q.idle_for(self.idle.horizon, self.idle.fit.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                self.rep.error(&format!("cannot read the queue's state ({e:#}); looking again"));
                self.idle.idle_seen = 0;
                return Ok(());
            }
        };
        if s.busy {
            self.idle.idle_seen = 0;
            return Ok(());
        }
        self.idle.idle_seen += 1;
        if self.idle.idle_seen >= 2 {
            // Idle twice in a row: let the workers go.
            self.rep.event(
                "idle",
                None,
                Self::me(),
                json!({"waiting": s.waiting, "held": s.held, "later": s.later, "paused": s.paused}),
            );
            for sl in &mut self.workers.slots {
                sl.restart_at = None;
                if let Some(pid) = sl.pid {
                    pool::term_worker(pid, sl.pid_start);
                }
            }
            self.mode = Mode::Idle;
        }
        Ok(())
    }

    /// The workers are gone: still idle? Then let go of the lock and look
    /// once more, so that a job pushed meanwhile is either seen here or its
    /// pusher (`q-push --start`) finds no supervisor and starts one.
    pub(super) fn final_idle(&mut self) -> Result<bool> {
        let s = self.q.idle_for(self.idle.horizon, self.idle.fit.as_ref())?;
        if s.busy {
            self.resume();
            return Ok(false);
        }
        self.idle.left_behind = Some(s);
        self.idle.idle_exit = true;
        Ok(true)
    }

    pub(super) fn resume(&mut self) {
        self.mode = Mode::Running;
        self.idle.idle_seen = 0;
        let now = Instant::now();
        for s in &mut self.workers.slots {
            if s.pid.is_none() {
                s.restart_at = Some(now);
            }
        }
    }

    /// Clean up, say so, let go of the lock, and decide the exit status.
    pub(super) fn finish(&mut self) -> u8 {
        // The workers' last lines (result lines of drained jobs).
        let until = Instant::now() + Duration::from_secs(3);
        while self.workers.open_pipes > 0 && Instant::now() < until {
            if let Ok(ev) = self.rx.recv_timeout(Duration::from_millis(50)) {
                match ev {
                    // Counted (no resuming after an idle exit), not acted on.
                    Ev::Signal(sig) if sig != signal_hook::consts::SIGCHLD => self.signals += 1,
                    Ev::Signal(_) => {}
                    other => self.handle(other),
                }
            }
            self.reap();
        }
        self.reap();
        self.reclaim();
        self.kill_orphans();
        self.rep.clear();
        if let Some(s) = self.idle.left_behind.take() {
            let msg = idle::left_behind(&s);
            if !msg.is_empty() {
                self.rep.note(&format!("idle; {msg}"));
            }
        }
        let failed: Vec<&String> = self
            .track.outcomes
            .iter()
            .filter(|(_, (st, r))| failed(*st, *r))
            .map(|(id, _)| id)
            .collect();
        let code = if failed.is_empty() {
            exit::OK
        } else {
            exit::NOTHING
        };
        let done = self
            .track.outcomes
            .values()
            .filter(|(st, _)| *st == State::Done)
            .count();
        if self.rep.progress && !self.track.outcomes.is_empty() {
            let mut msg = format!(
                "{} job{} ran here: {done} done",
                self.track.outcomes.len(),
                if self.track.outcomes.len() == 1 { "" } else { "s" }
            );
            if !failed.is_empty() {
                msg.push_str(&format!(
                    ", {} did not end done (q-ls --state dead)",
                    failed.len()
                ));
            }
            let requeued = self.track.outcomes.len() - done - failed.len();
            if requeued > 0 {
                msg.push_str(&format!(", {requeued} back in the queue"));
            }
            self.rep.note(&msg);
        }
        self.rep.event(
            "supervisor-exited",
            None,
            Self::me(),
            json!({"status": code, "jobs_done": done, "jobs_failed": failed.len()}),
        );
        if let Some(g) = self.guard.take() {
            // Its record goes with it (q-ctl finds no supervisor either way).
            if let Err(e) = self.q.unpublish_supervisor(&self.me.id) {
                self.rep.error(&format!("cannot remove this supervisor's record: {e}"));
            }
            g.release();
        }
        code
    }
}
