//! `q-supervise`: keep N `q-run` workers alive on one queue.
//!
//! One supervisor per queue: it holds `locks/supervise.lock` (flock, released
//! by the kernel when it dies) for its whole life. Each worker position has a
//! stable id (`<host>-w<k>`, in `Q_WORKER_ID`); a worker that exits is
//! restarted after base·1, 2, 4, 8, 16, then 30 (the backoff starts over
//! after 60·base of healthy running), and its leases are reclaimed in the
//! same pass (a free lease lock on this host proves its owner dead), which
//! kills what is left of its job and requeues it. Leases are also reclaimed
//! every second.
//!
//! SIGTERM/SIGINT drains: the workers get SIGTERM and the same `--grace`
//! (each stops claiming, lets its job finish within the grace, then
//! terminates it and requeues it `worker-shutdown`); past 2·grace + 2 s, or on
//! a second signal, the supervisor SIGKILLs the workers and reclaims their
//! jobs itself. No job process outlives it: workers die with it (they set
//! their parent-death signal when `Q_SUPERVISOR_PID` is set), it is a
//! subreaper (orphaned job processes become its children and are killed at
//! exit), and a watchdog process cleans up if it is killed outright.
//!
//! `--exit-on-idle`: see `idle`. The exit status is 0 when every job its
//! workers ran ended `done` (a job drained back to pending did not fail), 1
//! otherwise; it learns outcomes from the `result` lines its workers print.

mod idle;
mod pool;
mod report;
mod watchdog;

use crate::cli::{self, Common};
use crate::exit;
use anyhow::{Result, anyhow};
use clap::Parser;
use pool::{Slot, WorkerCmd};
use q_queue::lock::{Acquired, LockGuard};
use q_queue::names::LeasedName;
use q_queue::{Queue, State, fsx, time};
use report::Reporter;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};
use watchdog::Watchdog;

#[derive(Debug, Parser)]
#[command(
    name = "q-supervise",
    version,
    about = "Keep N q-run workers on a queue: restart them, drain on SIGTERM, exit when idle",
    long_about = "Run N q-run workers as child processes, each with a stable worker id across restarts (Q_WORKER_ID=<host>-w<k>). A worker that exits is restarted after 1, 2, 4, 8, 16, then 30 s (times --restart-base / 1s; the backoff starts over after 60 s of healthy running); the jobs it held are reclaimed at once and requeued. Expired leases are reclaimed as it goes.\n\nOne supervisor per queue: a second one exits 75 naming the live one (with --skip-if-running: 0, silently); a lock left by a dead supervisor is taken over.\n\nSIGTERM or SIGINT drains: workers stop claiming, running jobs get --grace to finish, then they are terminated (SIGTERM, --grace, SIGKILL) and requeued (worker-shutdown). A second signal stops at once. No process of any job outlives the supervisor, even when it is killed.\n\n--exit-on-idle: exit when nothing is ready, running or due (scheduled retries count; --idle-horizon bounds how far ahead). Held jobs and a paused queue do not keep it alive: it says how many jobs wait. Exit status: 0 when every job it ran ended done, 1 otherwise.\n\nOn a terminal it shows live progress; otherwise it prints nothing but errors, unless --events asks for JSON lines on stderr: {\"type\":\"event\",\"event\":...,\"worker_id\":...,\"pid\":...}, events supervisor-started, worker-started, worker-exited, worker-restarting, job-claimed, job-finished, lease-reclaimed, draining, stopping, idle, worker-stderr, supervisor-exited.",
    after_help = "Examples:\n  q-supervise -j 4 --exit-on-idle       # drain the queue with 4 workers, then exit (cron, make)\n  q-supervise -j 8                      # a service: keep 8 workers for ever (systemd, see README)\n  q-supervise -j 2 --events 2>events.jsonl -- ./handle.sh   # jobs are data for a handler"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Number of workers [default: the number of CPUs]
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Exit when nothing is ready, running or due (scheduled retries count as work)
    #[arg(long)]
    exit_on_idle: bool,
    /// With --exit-on-idle: jobs scheduled further ahead than this do not keep it alive [default: any]
    #[arg(long, value_name = "DUR", value_parser = cli::duration)]
    idle_horizon: Option<u64>,
    /// If another supervisor serves the queue, exit 0 silently instead of 75 (cron, q-push --start)
    #[arg(long)]
    skip_if_running: bool,
    /// First restart delay of a worker; doubles per restart up to 30 times it; starts over after 60 times it of healthy running
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = cli::duration)]
    restart_base: u64,
    /// On SIGTERM/SIGINT: time for running jobs to finish, then between their SIGTERM and SIGKILL
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = cli::duration)]
    grace: u64,
    /// Lease of the jobs the workers claim [default: q-run's, 60s]
    #[arg(long, value_name = "DUR", value_parser = cli::duration)]
    lease: Option<u64>,
    /// Write events as JSON lines on stderr
    #[arg(long)]
    events: bool,
    /// Internal: clean up after a supervisor that died
    #[arg(long, hide = true)]
    watchdog: bool,
    /// A handler the workers run instead of each job's command (see q-run)
    #[arg(last = true, value_name = "HANDLER")]
    handler: Vec<OsString>,
}

/// What the main loop hears about.
pub enum Ev {
    Signal(i32),
    Line {
        pid: i32,
        stderr: bool,
        line: String,
    },
    Eof {
        pid: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    /// Idle: workers were asked to stop; exit once they did (if still idle).
    Idle,
    /// Drained by a signal: exit when the workers are gone, or at `hard`.
    Draining {
        hard: Instant,
    },
    Stop,
}

/// A claim seen in `leased/`, for events and progress.
struct Seen {
    id: String,
    attempt: u32,
    worker_id: Option<String>,
    pid: Option<i32>,
    since_ms: i64,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-supervise", || run(args))
}

fn run(a: Args) -> Result<u8> {
    if a.watchdog {
        return watchdog::run(&a.common);
    }
    let (tx, rx) = channel();
    {
        use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGCHLD])?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for s in signals.forever() {
                if tx.send(Ev::Signal(s)).is_err() {
                    break;
                }
            }
        });
    }
    let mut rep = Reporter::new(a.events, a.common.quiet);
    let q = match a.common.open()? {
        Some(q) => q,
        None if a.exit_on_idle => return Ok(exit::OK),
        None => match wait_for_queue(&a, &rx, &mut rep)? {
            Some(q) => q,
            None => return Ok(exit::OK),
        },
    };
    let guard = match q.try_lock_named("supervise", Duration::from_millis(500))? {
        Acquired::Held(g) => g,
        Acquired::Busy(_) if a.skip_if_running => return Ok(exit::OK),
        Acquired::Busy(h) => {
            let who = h.map_or_else(
                || "another process".to_owned(),
                |h| format!("another q-supervise ({})", h.describe()),
            );
            return Err(q_queue::Error::new(
                q_queue::Kind::Busy,
                format!(
                    "{who} serves queue {}; stop it first, or use --skip-if-running",
                    q.root().display()
                ),
            )
            .into());
        }
    };
    q_queue::failpoint!("supervise.after_lock");
    // Job processes whose worker died become our children, not init's.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let wd = match Watchdog::start(&a.common) {
        Ok(w) => Some(w),
        Err(e) => {
            rep.error(&format!("cannot start the watchdog ({e}); if this supervisor is killed, its jobs are recovered by the next supervisor or q-gc"));
            None
        }
    };
    let n = a.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        usize::from,
    );
    let host = q_queue::ident::host().host.clone();
    let slots = (1..=n)
        .map(|k| Slot {
            worker_id: format!("{host}-w{k}"),
            pid: None,
            pid_start: 0,
            started: Instant::now(),
            restarts: 0,
            restart_at: None,
        })
        .collect();
    let sup = Sup {
        cmd: worker_cmd(&a)?,
        q,
        exit_on_idle: a.exit_on_idle,
        horizon: a.idle_horizon,
        base_ms: a.restart_base.max(1),
        grace_ms: a.grace,
        slots,
        tx,
        rx,
        rep,
        wd,
        guard: Some(guard),
        mode: Mode::Running,
        signals: 0,
        outcomes: HashMap::new(),
        open_pipes: 0,
        pid_worker: HashMap::new(),
        last_reclaim: Instant::now(),
        claims: HashMap::new(),
        ever_started: false,
        idle_seen: 0,
        last_idle_check: Instant::now(),
        left_behind: None,
        started: Instant::now(),
        finished: 0,
        last_draw: Instant::now(),
        labels: HashMap::new(),
    };
    Ok(sup.run())
}

/// No queue yet (and not --exit-on-idle): wait for the first push.
fn wait_for_queue(a: &Args, rx: &Receiver<Ev>, rep: &mut Reporter) -> Result<Option<Queue>> {
    rep.note(&format!(
        "no queue yet at {}; waiting for the first push",
        a.common.path().display()
    ));
    loop {
        if let Ok(Ev::Signal(s)) = rx.recv_timeout(Duration::from_millis(250))
            && s != signal_hook::consts::SIGCHLD
        {
            return Ok(None);
        }
        if let Some(q) = a.common.open()? {
            return Ok(Some(q));
        }
    }
}

fn worker_cmd(a: &Args) -> Result<WorkerCmd> {
    let exe = std::env::current_exe()?.with_file_name("q-run");
    let mut args: Vec<OsString> = vec![
        "--queue".into(),
        a.common.path().into(),
        "--durability".into(),
        a.common.durability.clone().into(),
    ];
    args.push("--grace".into());
    args.push(format!("{}ms", a.grace).into());
    if let Some(l) = a.lease {
        args.push("--lease".into());
        args.push(format!("{l}ms").into());
    }
    if a.common.quiet {
        args.push("--quiet".into());
    }
    if !a.handler.is_empty() {
        args.push("--".into());
        args.extend(a.handler.iter().cloned());
    }
    Ok(WorkerCmd { exe, args })
}

struct Sup {
    q: Queue,
    cmd: WorkerCmd,
    exit_on_idle: bool,
    horizon: Option<u64>,
    base_ms: u64,
    grace_ms: u64,
    slots: Vec<Slot>,
    tx: Sender<Ev>,
    rx: Receiver<Ev>,
    rep: Reporter,
    wd: Option<Watchdog>,
    guard: Option<LockGuard>,
    mode: Mode,
    signals: u32,
    /// Final state and reason per job id, from the workers' result lines.
    outcomes: HashMap<String, (State, String)>,
    open_pipes: usize,
    pid_worker: HashMap<i32, String>,
    last_reclaim: Instant,
    /// Leased file name → what we know of the claim.
    claims: HashMap<String, Seen>,
    ever_started: bool,
    idle_seen: u32,
    last_idle_check: Instant,
    left_behind: Option<idle::Idle>,
    started: Instant,
    /// Jobs that ended (terminal result lines) under this supervisor.
    finished: u64,
    last_draw: Instant,
    labels: HashMap<String, String>,
}

const TICK: Duration = Duration::from_millis(200);

impl Sup {
    fn me() -> Option<i32> {
        Some(std::process::id() as i32)
    }

    fn run(mut self) -> u8 {
        let n = self.slots.len();
        self.rep.event(
            "supervisor-started",
            None,
            Self::me(),
            json!({"workers": n, "queue": self.q.root().display().to_string()}),
        );
        let r = self.main_loop();
        let mut code = None;
        if let Err(e) = &r {
            self.rep.error(&format!("{e:#}"));
            code = Some(exit::code_of(e));
            self.stop_now();
        }
        let status = self.finish();
        code.unwrap_or(status)
    }

    fn main_loop(&mut self) -> Result<()> {
        self.reclaim();
        for k in 0..self.slots.len() {
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
            if self.last_reclaim.elapsed() >= Duration::from_secs(1) {
                self.reclaim();
            }
            match self.mode {
                Mode::Running => {
                    self.restart_due()?;
                    if self.exit_on_idle && self.last_idle_check.elapsed() >= TICK {
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
            self.watch_claims();
            if self.rep.progress && self.last_draw.elapsed() >= Duration::from_millis(500) {
                self.draw();
            }
        }
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        self.slots
            .iter()
            .filter_map(|s| s.restart_at)
            .map(|t| t.saturating_duration_since(now))
            .fold(TICK, Duration::min)
    }

    fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }

    fn worker_of(&self, pid: i32) -> Option<&str> {
        self.pid_worker.get(&pid).map(String::as_str)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Signal(s) if s == signal_hook::consts::SIGCHLD => {}
            Ev::Signal(_) => {
                self.signals += 1;
                if self.signals == 1 {
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
                let w = self.worker_of(pid).map(str::to_owned);
                self.rep.relay(w.as_deref(), pid, &line);
            }
            Ev::Line {
                pid,
                stderr: false,
                line,
            } => self.result_line(pid, &line),
            Ev::Eof { .. } => self.open_pipes = self.open_pipes.saturating_sub(1),
        }
    }

    /// A line on a worker's stdout: `result` lines tell how its jobs ended.
    fn result_line(&mut self, pid: i32, line: &str) {
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
        if reason != "lease-lost" {
            if state.is_terminal() {
                self.finished += 1;
            }
            self.outcomes.insert(id.to_owned(), (state, reason.clone()));
        }
        let w = self.worker_of(pid).map(str::to_owned);
        self.rep.event(
            "job-finished",
            w.as_deref(),
            Some(pid),
            json!({"id": id, "attempt": v["attempt"], "state": state.as_str(), "reason": reason,
                   "exit_code": v["exit_code"], "signal": v["signal"], "duration_ms": v["duration_ms"]}),
        );
    }

    /// Start (or restart) worker position `k`.
    fn start_worker(&mut self, k: usize) -> Result<()> {
        let worker_id = self.slots[k].worker_id.clone();
        match self.cmd.spawn(&worker_id, &self.tx) {
            Ok((pid, start)) => {
                let s = &mut self.slots[k];
                s.pid = Some(pid);
                s.pid_start = start;
                s.started = Instant::now();
                s.restart_at = None;
                let restarts = s.restarts;
                self.ever_started = true;
                self.open_pipes += 2;
                self.pid_worker.insert(pid, worker_id.clone());
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
            Err(e) if !self.ever_started => Err(anyhow!(
                "cannot start the worker {}: {e} (is q installed completely?)",
                self.cmd.exe.display()
            )),
            Err(e) => {
                self.rep
                    .error(&format!("cannot start worker {worker_id}: {e}"));
                self.schedule_restart(k, None);
                Ok(())
            }
        }
    }

    fn restart_due(&mut self) -> Result<()> {
        let now = Instant::now();
        for k in 0..self.slots.len() {
            if self.slots[k].pid.is_none() && self.slots[k].restart_at.is_some_and(|t| t <= now) {
                self.start_worker(k)?;
            }
        }
        Ok(())
    }

    fn schedule_restart(&mut self, k: usize, old_pid: Option<i32>) {
        let base = self.base_ms;
        let s = &mut self.slots[k];
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
    fn reap(&mut self) {
        for e in pool::reap() {
            if self.wd.as_ref().is_some_and(|w| w.pid == e.pid) {
                self.rep.error("the watchdog process ended; if this supervisor is killed, its jobs are recovered by the next supervisor or q-gc");
                self.wd = None;
                continue;
            }
            let Some(k) = self.slots.iter().position(|s| s.pid == Some(e.pid)) else {
                continue;
            };
            let (id, ran) = (
                self.slots[k].worker_id.clone(),
                self.slots[k].started.elapsed(),
            );
            self.slots[k].pid = None;
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
            if self.mode == Mode::Running {
                if e.code != Some(0) {
                    let how = match (e.code, e.signal) {
                        (Some(c), _) => format!("exited with status {c}"),
                        (_, Some(s)) => format!("was killed by signal {s}"),
                        _ => "ended".to_owned(),
                    };
                    let delay = pool::backoff_ms(
                        self.base_ms,
                        if ran.as_millis() as u64 >= self.base_ms * pool::HEALTHY_FACTOR {
                            0
                        } else {
                            self.slots[k].restarts
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

    /// Reclaim claims whose owner is gone (a worker that died, or an
    /// expired lease anywhere).
    fn reclaim(&mut self) {
        self.last_reclaim = Instant::now();
        q_queue::failpoint!("supervise.before_reclaim");
        let list = match self.q.reclaim(false) {
            Ok(l) => l,
            Err(e) => return self.rep.error(&format!("reclaiming leases: {e}")),
        };
        for r in list {
            let key = format!("{}.{}.json", r.id, r.token);
            let (w, pid) = self
                .claims
                .get(&key)
                .map_or((None, None), |s| (s.worker_id.clone(), s.pid));
            let ours = w
                .as_deref()
                .is_some_and(|w| self.slots.iter().any(|s| s.worker_id == w));
            if ours && r.state.is_terminal() {
                self.finished += 1;
                self.outcomes
                    .insert(r.id.clone(), (r.state, r.reason.as_str().to_owned()));
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
    fn watch_claims(&mut self) {
        let Ok(names) = fsx::list(&self.q.dir("leased")) else {
            return;
        };
        let names: HashSet<String> = names.into_iter().collect();
        self.claims.retain(|k, _| names.contains(k));
        for n in names {
            if self.claims.contains_key(&n) {
                continue;
            }
            let Some(l) = LeasedName::parse(&n) else {
                continue;
            };
            let Ok(lease) = self.q.read_lease(&l.id, l.c.attempt) else {
                continue;
            };
            let ours = lease
                .worker_id
                .as_deref()
                .is_some_and(|w| self.slots.iter().any(|s| s.worker_id == w));
            let local = lease.host == q_queue::ident::host().host;
            let seen = Seen {
                id: l.id.clone(),
                attempt: l.c.attempt,
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
            self.claims.insert(n, seen);
        }
    }

    /// First SIGTERM/SIGINT: the workers drain themselves.
    fn drain(&mut self) {
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
        for s in &mut self.slots {
            s.restart_at = None;
            if let Some(pid) = s.pid {
                pool::term_worker(pid, s.pid_start);
            }
        }
        self.mode = Mode::Draining { hard };
    }

    /// Second signal (or a drain past its deadline): kill the workers now,
    /// then reclaim their jobs (killing what is left of each) and requeue.
    fn stop_now(&mut self) {
        self.rep.event("stopping", None, Self::me(), json!({}));
        for s in &mut self.slots {
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

    fn kill_orphans(&mut self) {
        let keep: Vec<i32> = self.wd.as_ref().map(|w| w.pid).into_iter().collect();
        if pool::kill_orphans(&keep) > 0 {
            std::thread::sleep(Duration::from_millis(20));
            self.reap();
        }
    }

    /// `--exit-on-idle`: look whether there is work left.
    fn check_idle(&mut self) -> Result<()> {
        self.last_idle_check = Instant::now();
        let s = idle::check(&self.q, self.horizon)?;
        if s.busy {
            self.idle_seen = 0;
            return Ok(());
        }
        self.idle_seen += 1;
        if self.idle_seen >= 2 {
            // Idle twice in a row: let the workers go.
            self.rep.event(
                "idle",
                None,
                Self::me(),
                json!({"waiting": s.waiting, "held": s.held, "later": s.later, "paused": s.paused}),
            );
            for sl in &mut self.slots {
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
    fn final_idle(&mut self) -> Result<bool> {
        let s = idle::check(&self.q, self.horizon)?;
        if s.busy {
            self.resume();
            return Ok(false);
        }
        if let Some(g) = self.guard.take() {
            g.release();
        }
        let s = idle::check(&self.q, self.horizon)?;
        if s.busy {
            match self
                .q
                .try_lock_named("supervise", Duration::from_millis(200))?
            {
                Acquired::Held(g) => {
                    self.guard = Some(g);
                    self.resume();
                    return Ok(false);
                }
                Acquired::Busy(_) => return Ok(true), // another supervisor took over
            }
        }
        self.left_behind = Some(s);
        Ok(true)
    }

    fn resume(&mut self) {
        self.mode = Mode::Running;
        self.idle_seen = 0;
        let now = Instant::now();
        for s in &mut self.slots {
            if s.pid.is_none() {
                s.restart_at = Some(now);
            }
        }
    }

    /// Clean up and decide the exit status.
    fn finish(&mut self) -> u8 {
        // The workers' last lines (result lines of drained jobs).
        let until = Instant::now() + Duration::from_secs(3);
        while self.open_pipes > 0 && Instant::now() < until {
            if let Ok(ev) = self.rx.recv_timeout(Duration::from_millis(50)) {
                match ev {
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
        if let Some(s) = self.left_behind.take() {
            let msg = s.left_behind();
            if !msg.is_empty() {
                self.rep.note(&format!("idle; {msg}"));
            }
        }
        let failed: Vec<&String> = self
            .outcomes
            .iter()
            .filter(|(_, (st, r))| failed(*st, r))
            .map(|(id, _)| id)
            .collect();
        let code = if failed.is_empty() {
            exit::OK
        } else {
            exit::NOTHING
        };
        let done = self
            .outcomes
            .values()
            .filter(|(st, _)| *st == State::Done)
            .count();
        if self.rep.progress && !self.outcomes.is_empty() {
            let mut msg = format!(
                "{} job{} ran here: {done} done",
                self.outcomes.len(),
                if self.outcomes.len() == 1 { "" } else { "s" }
            );
            if !failed.is_empty() {
                msg.push_str(&format!(
                    ", {} did not end done (q-ls --state dead)",
                    failed.len()
                ));
            }
            let requeued = self.outcomes.len() - done - failed.len();
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
            g.release();
        }
        if let Some(w) = self.wd.take() {
            w.bye();
        }
        code
    }

    /// The live progress block (terminal only).
    fn draw(&mut self) {
        self.last_draw = Instant::now();
        let Ok(c) = self.q.counts() else { return };
        let paused = self.q.paused(time::now_ms()).is_some();
        let mut parts = vec![format!(
            "{}/{} workers{}",
            self.live(),
            self.slots.len(),
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
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        if self.finished > 0 {
            let rate = self.finished as f64 / secs;
            let left = c.ready + c.running;
            let eta = if rate > 0.0 && left > 0 {
                format!(
                    " · ETA {}",
                    report::elapsed((left as f64 / rate * 1000.0) as u64)
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "  {} finished here · {:.2} jobs/s{eta}",
                self.finished, rate
            ));
        }
        let now = time::now_ms();
        let mut running: Vec<(String, String, String, u64)> = Vec::new();
        for (name, s) in &self.claims {
            let Some(w) = s
                .worker_id
                .clone()
                .filter(|w| self.slots.iter().any(|sl| &sl.worker_id == w))
            else {
                continue;
            };
            let label = self
                .labels
                .entry(s.id.clone())
                .or_insert_with(|| label_of(&self.q, name))
                .clone();
            running.push((w, s.id.clone(), label, (now - s.since_ms).max(0) as u64));
        }
        running.sort();
        for (w, id, label, ms) in running {
            lines.push(format!("  {w}  {id}  {:>7}  {label}", report::elapsed(ms)));
        }
        self.rep.draw(&lines);
    }
}

/// Did a job whose last known state is this end badly (or leave a retry
/// that this supervisor did not wait for)?
fn failed(st: State, reason: &str) -> bool {
    match st {
        State::Dead | State::Canceled => true,
        State::Pending => matches!(
            reason,
            "exit" | "signal" | "timeout" | "output-limit" | "spawn-failed"
        ),
        _ => false,
    }
}

/// A short label for a running job: its name, else its command.
fn label_of(q: &Queue, leased_name: &str) -> String {
    let Some(job) = q.job_at(&q.dir("leased").join(leased_name)) else {
        return String::new();
    };
    if let Some(n) = job.name {
        return n;
    }
    if let Some(c) = job.cmd {
        return c.join(" ");
    }
    job.sh.unwrap_or_default()
}
