//! `q-run`: run claimed jobs. As a worker it claims jobs itself (until idle
//! with `--exit-on-idle`, else waiting for new ones); with `--stdin` it runs
//! the claims `q-claim` printed; with `--once` it runs one job and exits
//! like GNU `timeout`. Every attempt ends in one fenced settle and one
//! `result` line on stdout.

mod attempt;
mod heartbeat;
mod spawn;

use crate::cli::{self, Common, Queue};
use crate::exit;
use crate::out;
use anyhow::Result;
use clap::Parser;
use heartbeat::{Heartbeat, Held};
use q_queue::rate::{GroupRates, Rate};
use q_queue::slots::{Fit, Grabbed, Slots};
use q_queue::{ClaimOpts, Liveness, Reason};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "q-run",
    version,
    about = "Run jobs of a q queue: as a worker, from q-claim's output, or one job like timeout(1)",
    long_about = "Run jobs, each in its own process group, in its recorded directory and environment plus Q_DIR, Q_JOB_ID, Q_ATTEMPT, Q_FENCE and Q_WORKSPACE, with its payload on stdin. Keeps the lease alive while the job runs, enforces --timeout and the output cap (SIGTERM to the whole group, --grace, then SIGKILL), keeps stdout and stderr in the queue (q-log), and settles the attempt: done, retry after backoff, or dead. Prints one {\"type\":\"result\",...} line per attempt.\n\nModes: by default a worker that claims jobs itself and waits for new ones (--exit-on-idle: stop when nothing is ready); --stdin runs the claim lines q-claim printed; --once runs one job and exits with its status: the job's own, 124 on timeout, 125 when q-run failed, 126/127 when the command cannot run or is not found, 128+N when killed by signal N, 75 when nothing was ready, 76 when its lease was taken over.\n\nSIGTERM or SIGINT: stop claiming, let the running job finish within --grace, then terminate it and requeue it (worker-shutdown); a second signal stops at once. A worker (and --stdin) then exits 0 after SIGTERM, 130 after SIGINT (Ctrl-C). When the job's leader exits, what is left of its process group is killed; a job that leaves its group on purpose (setsid) is outside q's reach.",
    after_help = "Examples:\n  q-run --exit-on-idle                 # drain the queue with one worker\n  q-claim | q-run --stdin --once       # take one job and run it here, with its status\n  q-run -- ./handle.sh                 # jobs are data: the handler gets each claim line on stdin\n  q-run --slots gpu=1                  # also jobs that need a GPU (Q_SLOT_GPU=0)"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Run the claim lines read from stdin (as printed by q-claim)
    #[arg(long)]
    stdin: bool,
    /// Run one job, then exit with its status (like GNU timeout)
    #[arg(long)]
    once: bool,
    /// Stop when no job is ready (worker mode)
    #[arg(long)]
    exit_on_idle: bool,
    /// Lease of the jobs this worker claims; extended every third of it
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = cli::duration)]
    lease: u64,
    /// Time between SIGTERM and SIGKILL, and to finish a job when asked to stop
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = cli::duration)]
    grace: u64,
    /// Cap on an attempt's stdout plus stderr, in bytes (K, M, G suffixes); beyond it the attempt ends with output-limit
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = q_queue::job::parse_size)]
    output_limit: u64,
    /// Settle the attempts that end within this time of the first one that is waiting as one group commit (two filesystem syncs for the group instead of two fsyncs each); 0: only those that end while a settle syncs. Full durability only; an idle worker settles at once
    #[arg(long, value_name = "DUR", env = "Q_GROUP_WINDOW", default_value = "10ms", value_parser = cli::duration)]
    group_window: u64,
    /// Slots this worker may take, shared with the other workers of this queue on this host, e.g. gpu=2 (repeatable, or gpu=2,mem=4); a job whose needs fit them learns its slots as Q_SLOT_GPU=0. Without --slots, only jobs without needs are taken
    #[arg(long, value_name = "NAME=N", value_delimiter = ',', value_parser = cli::slot)]
    pub slots: Vec<(String, u32)>,
    /// At most N jobs of group NAME run at once on this host (repeatable, or a=1,b=2)
    #[arg(long, value_name = "NAME=N", value_delimiter = ',', value_parser = cli::slot)]
    pub limit: Vec<(String, u32)>,
    /// Start at most N jobs per second (N/s, N/m, N/h), spaced evenly, together with the other workers of this queue on this host that are given --rate; NAME=N/s: at most N jobs of group NAME per second (repeatable, one per group), the other jobs unaffected
    #[arg(long, value_name = "[NAME=]N/s", value_parser = cli::rate_arg)]
    pub rate: Vec<(Option<String>, f64)>,
    /// A handler to run instead of each job's command; it gets the claim line on stdin
    #[arg(last = true, value_name = "HANDLER")]
    handler: Vec<OsString>,
}

/// Settings of one run loop, shared by the modes.
pub(crate) struct Ctx {
    pub q: Queue,
    /// The queue as the jobs' `Q_DIR` names it (a directory: its absolute path).
    pub for_jobs: OsString,
    pub handler: Vec<OsString>,
    pub grace: Duration,
    pub output_limit: u64,
    pub worker_id: String,
    /// SIGTERM/SIGINT received so far: 1 drains, 2 stops at once.
    pub signals: Arc<AtomicUsize>,
    /// The first signal was SIGINT (Ctrl-C).
    pub sigint: Arc<std::sync::atomic::AtomicBool>,
    /// SIGUSR1 came: take no more jobs, let the running one finish (no
    /// grace, no kill), then exit 0. A supervisor retires a worker so
    /// (`q-ctl workers N` lower, or new slots for its next worker).
    pub retire: Arc<std::sync::atomic::AtomicBool>,
    pub heartbeat: Heartbeat,
    /// Started by q-supervise (which reclaims for its workers).
    pub supervised: bool,
    /// Programs found in jobs' own PATHs.
    pub programs: spawn::Resolver,
    /// The attempts' workspaces.
    pub workspaces: q_queue::local::Workspaces,
    /// Readable once SIGTERM, SIGINT or SIGUSR1 arrived.
    pub signaled: std::io::PipeReader,
    /// Recorded environments read so far (they never change).
    pub envs: std::sync::Mutex<std::collections::HashMap<EnvKey, Arc<std::collections::BTreeMap<String, String>>>>,
}

/// A recorded environment as read for a job's owner (each read is checked
/// against the owner, so the same record is kept once per owner).
pub type EnvKey = (Option<u32>, String);

impl Ctx {
    pub fn draining(&self) -> bool {
        self.signals.load(Ordering::Relaxed) > 0
    }

    /// Asked to stop taking jobs: drained, or retired (SIGUSR1).
    pub fn stopping(&self) -> bool {
        self.draining() || self.retire.load(Ordering::Relaxed)
    }

    /// The status of a worker that stopped as asked: 130 after Ctrl-C
    /// (SIGINT), so `q-run ... && next` does not go on; 0 after SIGTERM.
    pub fn stopped(&self) -> u8 {
        if self.sigint.load(Ordering::Relaxed) { exit::INTERRUPTED } else { exit::OK }
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-run", || run(args))
}

fn run(a: Args) -> Result<u8> {
    if let Err(e) = cli::rates(&a.rate) {
        eprintln!("q-run: error: --rate: {e}");
        return Ok(exit::USAGE);
    }
    let signals = Arc::new(AtomicUsize::new(0));
    let sigint = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let retire = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readable once a signal came: wakes a worker waiting for jobs at once.
    let (signaled, mut signal_w) = std::io::pipe()?;
    {
        let s = Arc::clone(&signals);
        let int = Arc::clone(&sigint);
        let ret = Arc::clone(&retire);
        let mut it = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGUSR1])?;
        std::thread::spawn(move || {
            for sig in it.forever() {
                if sig == signal_hook::consts::SIGUSR1 {
                    ret.store(true, Ordering::Relaxed);
                } else if s.fetch_add(1, Ordering::Relaxed) == 0 && sig == signal_hook::consts::SIGINT {
                    int.store(true, Ordering::Relaxed);
                }
                let _ = std::io::Write::write_all(&mut signal_w, b"s");
            }
        });
    }
    let supervisor = std::env::var("Q_SUPERVISOR_PID").ok().and_then(|p| p.parse::<i32>().ok());
    if let Some(sup) = supervisor {
        // Die with the supervisor that started us (and if it died before
        // the signal was armed, stop now).
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        if nix::unistd::getppid().as_raw() != sup {
            return Ok(exit::OK);
        }
    }
    let q = match a.common.open()? {
        Some(q) => q,
        None if a.stdin => a.common.create(None)?,
        None => {
            if !a.common.quiet && !a.exit_on_idle && !a.once {
                eprintln!("q-run: no queue yet at {}; waiting for the first push", a.common.location().display());
            }
            if a.once {
                return Ok(exit::TEMP);
            }
            if a.exit_on_idle {
                return Ok(exit::OK);
            }
            loop {
                std::thread::sleep(Duration::from_millis(250));
                if signals.load(Ordering::Relaxed) > 0 {
                    return Ok(if sigint.load(Ordering::Relaxed) { exit::INTERRUPTED } else { exit::OK });
                }
                if let Some(q) = a.common.open()? {
                    break q;
                }
            }
        }
    };
    let ctx = Ctx {
        for_jobs: cli::for_jobs(&q.location()),
        q: q.clone(),
        handler: a.handler.clone(),
        grace: Duration::from_millis(a.grace),
        output_limit: a.output_limit,
        worker_id: cli::worker_id(),
        signals,
        sigint,
        retire,
        heartbeat: Heartbeat::start(&q),
        envs: Default::default(),
        workspaces: q.workspaces(),
        programs: Default::default(),
        supervised: supervisor.is_some(),
        signaled,
    };
    // Say that this queue is served (q-wait tells when nothing serves it).
    let presence = q.announce_worker().inspect_err(|e| eprintln!("q-run: warning: cannot announce this worker: {e}")).ok();
    let r = if a.stdin { run_stdin(&ctx, a.once) } else { run_worker(&ctx, &a) };
    drop(presence);
    ctx.workspaces.close();
    r
}

/// Worker mode: claim, run, repeat. The settles of finished attempts (their
/// syncs, their result lines) run on a second thread, in groups, while the
/// next jobs are claimed and run: result lines keep their order, and
/// nothing is printed before it is durable.
fn run_worker(ctx: &Ctx, a: &Args) -> Result<u8> {
    let mut opts = ClaimOpts { lease_ms: a.lease, worker_id: Some(ctx.worker_id.clone()), liveness: Liveness::Flock, fit: None };
    // Slots: the free ones are taken before each claim, the job keeps what
    // it needs until it ends (q_queue::slots).
    let totals = cli::slot_totals(&a.slots, &a.limit);
    let slots = totals.clone().map(|t| Slots::new(ctx.q.slot_dir(), t));
    let (global, groups) = cli::rates(&a.rate).map_err(|e| anyhow::anyhow!(e))?;
    let rate = global.map(|r| Rate::new(ctx.q.slot_dir(), (1000.0 / r).round() as u64));
    // --rate NAME=N/s: a group's turn is part of what a claim may take.
    let group_rates = (!groups.is_empty()).then(|| GroupRates::new(ctx.q.slot_dir(), groups));
    let rated = group_rates.as_ref().map(GroupRates::totals).unwrap_or_default();
    let all = match totals {
        None if rated.is_empty() => None,
        t => Some(Fit { total: t.unwrap_or_default().into_iter().chain(rated.clone()).collect(), free: Default::default() }),
    };
    // The claims' fsync is left to their settles (on the committer), so a
    // job starts without waiting for the disk.
    let mut claimer = ctx.q.claimer();
    // Claims whose runner died on this host (a q-run killed before us, say)
    // go back to the queue first, their leftover processes killed; while
    // idle, so do leases that expired anywhere. A supervisor's workers leave
    // that to their supervisor, which accounts for what it reclaims.
    let reclaims = !ctx.supervised;
    if reclaims {
        reclaim(ctx);
    }
    let mut last_reclaim = std::time::Instant::now();
    std::thread::scope(|scope| {
        // Waiting for more attempts to end is worth it only when settles sync.
        let window = if ctx.q.settles_sync() { Duration::from_millis(a.group_window) } else { Duration::ZERO };
        let committer = Committer::start(scope, ctx, window);
        loop {
            if ctx.stopping() {
                committer.flush();
                return Ok(ctx.stopped());
            }
            // --rate: this worker's turn to start a job, one interval after the last start.
            let turn = match &rate {
                None => None,
                Some(r) => match r.turn(&|| ctx.stopping())? {
                    Some(t) => Some(t),
                    None => continue,
                },
            };
            let grabbed = slots.as_ref().map(Slots::grab).transpose()?;
            let turns = group_rates.as_ref().map(GroupRates::try_turns).transpose()?;
            opts.fit = grabbed.as_ref().map(Grabbed::fit);
            if let Some(t) = &turns {
                let fit = opts.fit.get_or_insert_with(Fit::default);
                fit.total.extend(rated.clone());
                fit.free.extend(t.free());
            }
            let mut claims = claimer.claim(1, &opts)?;
            let Some(c) = claims.pop() else {
                drop(grabbed);
                drop(turn);
                // A group's turn comes sooner than the next look.
                let wait = turns.and_then(|t| t.next_in).map_or(Duration::from_secs(1), |d| d.min(Duration::from_secs(1)));
                // The settle in flight may requeue its job or free a
                // dependent: only once it is done is "nothing ready" true.
                if committer.flush() {
                    continue;
                }
                if a.once {
                    return Ok(exit::TEMP);
                }
                if a.exit_on_idle {
                    // With slots, nothing claimed may mean only that the
                    // slots are busy: the jobs that fit them are still work.
                    // Without, the look is only for what to say: none
                    // when quiet, or for root (it leaves no one's jobs).
                    let look = all.is_some() || !(a.common.quiet || q_queue::owner::is_root());
                    let idle = look.then(|| ctx.q.idle_for(Some(0), all.as_ref()).ok()).flatten();
                    if all.is_none() || idle.as_ref().is_some_and(|s| s.due == 0 || s.paused) {
                        left_behind(idle, a.common.quiet);
                        return Ok(exit::OK);
                    }
                }
                if reclaims && last_reclaim.elapsed() >= Duration::from_secs(1) {
                    last_reclaim = std::time::Instant::now();
                    if reclaim(ctx) {
                        continue;
                    }
                }
                claimer.wait_or(wait, Some(ctx.signaled.as_fd()));
                continue;
            };
            if let Some(t) = turn {
                t.started()?;
            }
            if let Some(t) = turns {
                t.started(c.job.group.as_deref())?;
            }
            let kept = grabbed.map(|g| g.keep(&c.job.needs, c.job.group.as_deref())).unwrap_or_default();
            let held = ctx.heartbeat.hold(c);
            let ended = attempt::run(ctx, &held, &kept.env)?;
            if kept.holds_any() {
                // Free again: workers waiting for these slots look now.
                drop(kept);
                ctx.q.wake();
            }
            if a.once {
                let code = attempt::commit(ctx, &held, ended);
                ctx.heartbeat.release(&held);
                return Ok(code);
            }
            committer.submit(held, ended);
        }
    })
}

/// Say how many due jobs this worker left: for other users (a shared
/// queue: they run as their owners, on their workers or root's), and those
/// its slots can never fit.
fn left_behind(s: Option<q_queue::Idle>, quiet: bool) {
    let Some(s) = s.filter(|_| !quiet) else { return };
    let mut parts = Vec::new();
    if s.others > 0 && !q_queue::owner::is_root() {
        parts.push(crate::supervise::idle::others(s.others));
    }
    if s.unfit > 0 {
        parts.push(crate::supervise::idle::unfit(s.unfit));
    }
    if !parts.is_empty() {
        eprintln!("q-run: idle; {}", parts.join(", "));
    }
}

/// Reclaim the claims whose owner is gone; true when any was.
fn reclaim(ctx: &Ctx) -> bool {
    match ctx.q.reclaim(false) {
        Ok(list) => !list.is_empty(),
        Err(e) => {
            eprintln!("q-run: warning: reclaiming dead claims: {e}");
            false
        }
    }
}

/// The thread that settles ended attempts. It takes whatever has ended
/// since it last looked, and whatever ends within the group window after
/// that (up to [`GROUP_MAX`]), as one group commit; while one group syncs,
/// the jobs that end meanwhile form the next. A flush (the worker found
/// nothing to claim, or is stopping) settles at once.
struct Committer<'s> {
    ctx: &'s Ctx,
    tx: std::sync::mpsc::SyncSender<Commit>,
    /// A settle was submitted since the last flush.
    submitted: std::cell::Cell<bool>,
}

/// At most this many ended attempts wait for their settle (their leases
/// kept alive by the heartbeat): the largest group, and what a crash of the
/// worker would run again.
const GROUP_MAX: usize = 32;

enum Commit {
    Settle(Arc<Held>, attempt::Ended),
    /// Answer once everything before it is settled.
    Flush(std::sync::mpsc::Sender<()>),
}

fn settle_ended(ctx: &Ctx, group: Vec<(Arc<Held>, attempt::Ended)>) {
    if group.is_empty() {
        return;
    }
    let refs: Vec<(&Held, &attempt::Ended)> = group.iter().map(|(h, e)| (h.as_ref(), e)).collect();
    attempt::commit_group(ctx, &refs);
    for (held, _) in &group {
        ctx.heartbeat.release(held);
    }
}

impl<'s> Committer<'s> {
    fn start(scope: &'s std::thread::Scope<'s, '_>, ctx: &'s Ctx, window: Duration) -> Committer<'s> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Commit>(GROUP_MAX);
        scope.spawn(move || {
            while let Ok(first) = rx.recv() {
                let until = std::time::Instant::now() + window;
                let mut group = Vec::new();
                let mut flushes = Vec::new();
                let mut next = Some(first);
                while let Some(c) = next.take() {
                    match c {
                        Commit::Settle(held, ended) => group.push((held, ended)),
                        Commit::Flush(done) => flushes.push(done),
                    }
                    if group.len() < GROUP_MAX {
                        next = rx.try_recv().ok();
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        if next.is_none() && flushes.is_empty() && !left.is_zero() {
                            next = rx.recv_timeout(left).ok();
                        }
                    }
                }
                settle_ended(ctx, group);
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        Committer { ctx, tx, submitted: std::cell::Cell::new(false) }
    }

    fn submit(&self, held: Arc<Held>, ended: attempt::Ended) {
        self.submitted.set(true);
        if let Err(std::sync::mpsc::SendError(Commit::Settle(held, ended))) = self.tx.send(Commit::Settle(held, ended)) {
            // The thread is gone: settle here.
            settle_ended(self.ctx, vec![(held, ended)]);
        }
    }

    /// Wait until every submitted settle is done. Returns whether any was
    /// submitted since the last flush (the queue may have changed since the
    /// last look).
    fn flush(&self) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Commit::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
        self.submitted.replace(false)
    }
}

/// `--stdin`: adopt every claim line as it arrives (so all their leases are
/// extended), run them one by one.
fn run_stdin(ctx: &Ctx, once: bool) -> Result<u8> {
    let (tx, rx) = std::sync::mpsc::channel::<Arc<Held>>();
    let q = Arc::clone(&ctx.q);
    let hb = ctx.heartbeat.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for (n, line) in stdin.lock().lines().enumerate() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match crate::ids::claim_line(&line).and_then(|(id, token)| Ok(hb.adopt(q.adopt(&id, &token)?))) {
                Ok(h) => {
                    if tx.send(h).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("q-run: stdin line {}: {e:#}", n + 1),
            }
        }
    });
    let mut code = exit::OK;
    let mut ran = false;
    while let Ok(held) = rx.recv() {
        if ctx.stopping() {
            // Not started: hand it back at once.
            let _ = ctx.q.settle(&held.id, &held.token, Reason::WorkerShutdown, &Default::default(), &Default::default());
            ctx.heartbeat.release(&held);
            continue;
        }
        let ended = attempt::run(ctx, &held, &[])?;
        code = attempt::commit(ctx, &held, ended);
        ctx.heartbeat.release(&held);
        ran = true;
        if once {
            break;
        }
    }
    if once {
        return Ok(if ran { code } else { exit::TEMP });
    }
    Ok(if ctx.draining() { ctx.stopped() } else { exit::OK })
}

/// Print a result line; a closed stdout is not an error for a reporter.
pub(crate) fn report(v: &q_queue::ResultRecord) {
    let _ = out::line(v);
}
