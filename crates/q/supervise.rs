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

mod hooks;
pub(crate) mod idle;
mod pool;
mod report;
mod settings;
mod sup;
mod track;
mod watchdog;
mod workers;

use crate::cli::{self, Common};
use crate::exit;
use anyhow::Result;
use clap::Parser;
use pool::{Slot, WorkerCmd};
use crate::cli::Queue;
use q_queue::Singleton;
use q_queue::lock::Acquired;
use report::Reporter;
use std::collections::HashMap;
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use sup::{IdleWatch, Mode, Sup, Track, Upkeep, Workers};
use watchdog::Watchdog;

#[derive(Debug, Parser)]
#[command(
    name = "q-supervise",
    version,
    about = "Keep N q-run workers on a queue: restart them, drain on SIGTERM, exit when idle",
    long_about = "Run N q-run workers as child processes, each with a stable worker id across restarts (Q_WORKER_ID=<host>-w<k>). A worker that exits is restarted after 1, 2, 4, 8, 16, then 30 s (times --restart-base / 1s; the backoff starts over after 60 s of healthy running); the jobs it held are reclaimed at once and requeued. Expired leases are reclaimed as it goes; waiting jobs whose dependencies ended unnoticed (after a crash) are moved on at start and every 5 minutes.\n\nOne supervisor per queue: a second one exits 75 naming the live one (with --skip-if-running: 0, silently); a lock left by a dead supervisor is taken over (PostgreSQL: one per host).\n\nWhile it runs, q-ctl workers N, q-ctl slots NAME=N and q-ctl limit NAME=N change it until it exits: more workers start at once; workers beyond N, or whose slots changed, take no more jobs and exit once their running job ends (then start again with the new slots); no job is stopped.\n\nSIGTERM or SIGINT drains: workers stop claiming, running jobs get --grace to finish, then they are terminated (SIGTERM, --grace, SIGKILL) and requeued (worker-shutdown). A second signal stops at once. After SIGINT (Ctrl-C) the exit status is 130 (so `q-supervise ... && deploy` does not deploy), unless the drain had already finished all work; after SIGTERM it is 0 or 1 as below (service managers). No process of any job outlives the supervisor, even when it is killed.\n\n--exit-on-idle: exit when nothing is ready, running or due (scheduled retries count; --idle-horizon bounds how far ahead). Held jobs and a paused queue do not keep it alive: it says how many jobs wait. Exit status: 0 when every job it ran ended done, 1 otherwise.\n\nOn a terminal it shows live progress; otherwise it prints nothing on success. Each job that ended other than done gets one line on stderr (id, name, how it ended, attempt, the q-log command that shows it); -q leaves those out. --events asks instead for JSON lines on stderr: {\"type\":\"event\",\"event\":...,\"worker_id\":...,\"pid\":...}, events supervisor-started, worker-started, worker-exited, worker-restarting, job-claimed, job-finished, lease-reclaimed, draining, stopping, idle, worker-stderr, supervisor-exited, settings-changed, worker-retiring.",
    after_help = "Examples:\n  q-supervise -j 4 --exit-on-idle       # drain the queue with 4 workers, then exit (cron, make)\n  q-supervise -j 8 --on-fail 'notify-send \"q: job failed\"'   # a service (systemd, see README); a notification per failed job\n  q-supervise -j 6 --slots gpu=2        # two GPUs: jobs pushed with --needs gpu=1 get Q_SLOT_GPU=0 or 1\n  q-supervise -j 4 --rate api=5/s      # at most 5 jobs of group api a second, the others as fast as they come"
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
    /// The workers' group window (see q-run) [default: q-run's, 10ms]
    #[arg(long, value_name = "DUR", value_parser = cli::duration)]
    group_window: Option<u64>,
    /// Write events as JSON lines on stderr
    #[arg(long)]
    events: bool,
    /// Cap on each attempt's stdout plus stderr, passed to the workers (see q-run) [default: q-run's, 64M]
    #[arg(long, value_name = "SIZE", value_parser = q_queue::job::parse_size)]
    output_limit: Option<u64>,
    /// After each job of its workers ends (done, dead or canceled), run CMD (with /bin/sh -c) with the job's result line on stdin
    #[arg(long, value_name = "CMD")]
    on_finish: Option<String>,
    /// Like --on-finish, only for jobs that did not end done
    #[arg(long, value_name = "CMD")]
    on_fail: Option<String>,
    /// A hook running longer is killed (its process group); the job's outcome stands
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = cli::duration)]
    hook_timeout: u64,
    /// Internal: clean up after a supervisor that died
    #[arg(long, hide = true)]
    watchdog: bool,
    /// Slots the workers share, e.g. gpu=2 (repeatable, or gpu=2,mem=4): a job with needs starts only when they fit what is free, and learns its slots (Q_SLOT_GPU=0); a job waiting for its slots holds back only later jobs needing the same ones
    #[arg(long, value_name = "NAME=N", value_delimiter = ',', value_parser = cli::slot)]
    slots: Vec<(String, u32)>,
    /// At most N jobs of group NAME run at once (repeatable, or a=1,b=2)
    #[arg(long, value_name = "NAME=N", value_delimiter = ',', value_parser = cli::slot)]
    limit: Vec<(String, u32)>,
    /// Start at most N jobs per second over all workers (N/s, N/m, N/h), spaced evenly; NAME=N/s: at most N jobs of group NAME (repeatable, one per group)
    #[arg(long, value_name = "[NAME=]N/s", value_parser = cli::rate_arg)]
    rate: Vec<(Option<String>, f64)>,
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

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-supervise", || run(args))
}

fn run(a: Args) -> Result<u8> {
    if a.watchdog {
        return watchdog::run(&a.common);
    }
    if let Err(e) = cli::rates(&a.rate) {
        eprintln!("q-supervise: error: --rate: {e}");
        return Ok(exit::USAGE);
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
            Ok(q) => q,
            // Nothing ran: an interrupt still says so (130).
            Err(sig) if sig == signal_hook::consts::SIGINT => return Ok(exit::INTERRUPTED),
            Err(_) => return Ok(exit::OK),
        },
    };
    let guard = match q.lock(Singleton::Supervisor, Duration::from_millis(500))? {
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
                    q.location().display()
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
    let slots = (1..=n).map(|k| Slot::new(format!("{host}-w{k}"), None)).collect();
    let settings = settings_of(&a, n);
    let now = Instant::now();
    let sup = Sup {
        q,
        grace_ms: a.grace,
        rx,
        rep,
        wd,
        guard: Some(guard),
        mode: Mode::Running,
        signals: 0,
        interrupted: false,
        workers: Workers {
            cmd: worker_cmd(&a, settings.clone())?,
            slots,
            base_ms: a.restart_base.max(1),
            tx,
            pid_worker: HashMap::new(),
            open_pipes: 0,
            ever_started: false,
            target: n,
        },
        me: q_queue::supervisor::Supervisor::me(settings),
        track: Track { outcomes: HashMap::new(), claims: HashMap::new(), finished: 0, labels: HashMap::new(), started: now, last_draw: now },
        idle: IdleWatch { exit_on_idle: a.exit_on_idle, horizon: a.idle_horizon, idle_seen: 0, last_idle_check: now, left_behind: None, idle_exit: false, fit: cli::slot_totals(&a.slots, &a.limit).map(|total| q_queue::slots::Fit { total, free: Default::default() }) },
        upkeep: Upkeep { last_reclaim: now, last_promote: None, last_asks: now },
        common: a.common.clone(),
        hooks: hooks::Hooks::start(hooks::HookCfg {
            on_finish: a.on_finish.clone(),
            on_fail: a.on_fail.clone(),
            timeout: Duration::from_millis(a.hook_timeout.max(1)),
            queue: a.common.location().to_arg(),
            events: a.events,
            quiet: a.common.quiet,
        }),
    };
    Ok(sup.run())
}

/// No queue yet (and not --exit-on-idle): wait for the first push, or a
/// signal (`Err` with its number).
fn wait_for_queue(a: &Args, rx: &Receiver<Ev>, rep: &mut Reporter) -> Result<Result<Queue, i32>> {
    rep.note(&format!(
        "no queue yet at {}; waiting for the first push",
        a.common.location().display()
    ));
    loop {
        if let Ok(Ev::Signal(s)) = rx.recv_timeout(Duration::from_millis(250))
            && s != signal_hook::consts::SIGCHLD
        {
            return Ok(Err(s));
        }
        if let Some(q) = a.common.open()? {
            return Ok(Ok(q));
        }
    }
}

/// What the supervisor starts with: `-j`, `--slots`, `--limit`, `--rate`.
fn settings_of(a: &Args, workers: usize) -> q_queue::supervisor::Settings {
    // Checked at the start (`cli::rates`): each given once.
    let (rate, rates) = cli::rates(&a.rate).unwrap_or_default();
    q_queue::supervisor::Settings {
        workers: u32::try_from(workers).unwrap_or(u32::MAX),
        slots: a.slots.iter().cloned().collect(),
        limits: a.limit.iter().cloned().collect(),
        rate: rate.map(cli::rate_text),
        rates: rates.into_iter().map(|(g, r)| (g, cli::rate_text(r))).collect(),
    }
}

fn worker_cmd(a: &Args, settings: q_queue::supervisor::Settings) -> Result<WorkerCmd> {
    let exe = std::env::current_exe()?.with_file_name("q-run");
    let mut args: Vec<OsString> = vec![
        "--queue".into(),
        a.common.location().to_arg(),
        "--durability".into(),
        a.common.durability.clone().into(),
    ];
    args.push("--grace".into());
    args.push(format!("{}ms", a.grace).into());
    if let Some(l) = a.lease {
        args.push("--lease".into());
        args.push(format!("{l}ms").into());
    }
    if let Some(n) = a.output_limit {
        args.push("--output-limit".into());
        args.push(n.to_string().into());
    }
    if let Some(w) = a.group_window {
        args.push("--group-window".into());
        args.push(format!("{w}ms").into());
    }
    if a.common.quiet {
        args.push("--quiet".into());
    }
    let mut tail = Vec::new();
    if !a.handler.is_empty() {
        tail.push("--".into());
        tail.extend(a.handler.iter().cloned());
    }
    Ok(WorkerCmd {
        exe,
        args,
        settings,
        tail,
        loc: a.common.location(),
    })
}
